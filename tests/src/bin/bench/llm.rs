//! The `llm` part: the THINK scheduler under contention, through a real kernel whose
//! provider is the simulated one (no network, latency proportional to the answer's tokens),
//! each figure under our scheduler (`vtc`) and under FIFO, switched with LLM_CONFIG on the
//! same kernel in the same run:
//!
//! * fairness: 8 backlogged callers (operator connections; each keeps `OUTSTANDING` async
//!   THINKs queued and tops them up as answers arrive) whose requests differ 10× in size
//!   (100 to 1000 answer tokens). Served cost per caller (input + 2 × output tokens of the
//!   answers that arrived in the measuring window) and Jain's fairness index over it
//!   (1 = equal shares; 1/8 = one caller has everything);
//! * a polite caller's queue delay: one caller floods (`OUTSTANDING` small async THINKs),
//!   another sends one small sync THINK every `POLITE_EVERY`; the polite one's `queue_ms`
//!   (p50, p99, from the replies) under each policy;
//! * overhead: sequential sync THINKs on one connection against a simulated provider with no
//!   latency at all, next to NOOP round trips on the same connection: the difference is what
//!   the THINK path (checks, queue, grant, provider call, reply) adds per request.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clove_sdk::msg::{AsyncPollRequest, ThinkRequest};
use clove_sdk::Client;
use clove_tests::{Kernel, KernelOpts};

use super::progress;
use super::stats::{summarize, Summary};

/// Async THINKs each backlogged caller keeps queued.
const OUTSTANDING: usize = 16;
/// The polite caller's pace.
const POLITE_EVERY: Duration = Duration::from_millis(20);
/// Calls in flight at once in the kernel (the provider's capacity).
const IN_FLIGHT: u32 = 2;
/// Answer sizes of the 8 backlogged callers: 100 to 1000 tokens.
const SIZES: [u32; 8] = [100, 228, 357, 485, 614, 742, 871, 1000];
/// No call may block longer than this.
const CALL_LIMIT: Duration = Duration::from_secs(30);

/// Settings.
#[derive(Debug, Clone, Copy)]
pub struct LlmConfig {
    /// Measuring window of each fairness and polite run.
    pub window: Duration,
    /// Sequential THINKs (and NOOPs) for the overhead figure.
    pub overhead_iters: usize,
}

/// One policy's fairness run.
#[derive(Debug, Clone)]
pub struct Fairness {
    /// `vtc` or `fifo`.
    pub policy: &'static str,
    /// Served cost per caller, in the order of [`SIZES`].
    pub served: Vec<f64>,
    /// Answers per caller.
    pub calls: Vec<u64>,
    /// Jain's index over `served`.
    pub jain: f64,
}

/// One policy's polite-caller run.
#[derive(Debug, Clone)]
pub struct Polite {
    /// `vtc` or `fifo`.
    pub policy: &'static str,
    /// The polite caller's queue delay, ms (as ns in the summary, for the shared printer).
    pub queue: Summary,
    /// The polite caller's answers.
    pub calls: usize,
    /// The flooder's answers in the same window.
    pub flooder_calls: u64,
}

/// The `llm` part's results.
#[derive(Debug, Clone)]
pub struct LlmResult {
    /// Fairness, VTC then FIFO.
    pub fairness: Vec<Fairness>,
    /// Polite caller, VTC then FIFO.
    pub polite: Vec<Polite>,
    /// Sync THINK round trips with a zero-latency provider.
    pub think: Summary,
    /// NOOP round trips on the same connection.
    pub noop: Summary,
}

/// Jain's fairness index of `x`: (Σx)² / (n · Σx²).
pub fn jain(x: &[f64]) -> f64 {
    let sum: f64 = x.iter().sum();
    let squares: f64 = x.iter().map(|v| v * v).sum();
    if squares == 0.0 {
        return 0.0;
    }
    sum * sum / (x.len() as f64 * squares)
}

/// A kernel for this part: two simulated providers, `bench` (0.02 ms per answer token, so a
/// 1000-token answer takes 20 ms) as the default and `instant` (no latency) for the
/// overhead figure; `IN_FLIGHT` calls at once.
pub fn start_kernel(
    kernel_args: &[String],
    env: &[(String, String)],
) -> Result<(Kernel, tempfile::TempDir)> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("clove.toml");
    std::fs::write(
        &config,
        format!(
            "async_results = 1024\n\
             [llm]\nprovider = \"bench\"\nmax_in_flight = {IN_FLIGHT}\nagent_queue = 256\n\
             [llm.providers.bench]\nkind = \"simulated\"\nlatency_ms = 0\n\
             ms_per_input_token = 0\nms_per_output_token = 0.02\n\
             [llm.providers.instant]\nkind = \"simulated\"\nlatency_ms = 0\n\
             ms_per_input_token = 0\nms_per_output_token = 0\n"
        ),
    )?;
    let mut args = vec!["--config".to_owned(), config.display().to_string()];
    args.extend(kernel_args.iter().cloned());
    let kernel = Kernel::start_with(KernelOpts {
        args,
        env: env.to_vec(),
        ..KernelOpts::default()
    })?;
    Ok((kernel, dir))
}

fn connect(kernel: &Kernel) -> Result<Client> {
    let mut c = Client::connect(Some(&kernel.socket))?;
    c.set_timeout(Some(CALL_LIMIT))?;
    Ok(c)
}

fn request(tokens: u32, is_async: bool) -> ThinkRequest {
    ThinkRequest {
        max_tokens: Some(tokens),
        is_async,
        ..ThinkRequest::new("x".repeat(64))
    }
}

/// Switches the kernel's policy, waiting for the scheduler to be idle.
fn set_policy(kernel: &Kernel, policy: &str) -> Result<()> {
    let mut c = connect(kernel)?;
    let start = Instant::now();
    loop {
        match c.llm_config(Some(policy), None) {
            Ok(r) if r.scheduler.policy == policy => return Ok(()),
            Ok(r) => bail!("LLM_CONFIG answered {r:?}"),
            Err(e) if start.elapsed() < CALL_LIMIT => {
                if e.code().is_none_or(|c| c.as_str() != "conflict") {
                    return Err(e).context("LLM_CONFIG");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e).context("LLM_CONFIG: the scheduler never went idle"),
        }
    }
}

/// A caller keeping `OUTSTANDING` async THINKs of `tokens` queued until `end`; returns the
/// served cost and answers that arrived between `from` and `end`.
fn backlogged(
    kernel: &Kernel,
    tokens: u32,
    start: &Barrier,
    from: Instant,
    end: Instant,
) -> Result<(f64, u64)> {
    let mut c = connect(kernel)?;
    start.wait();
    let (mut cost, mut calls, mut outstanding) = (0.0, 0u64, 0usize);
    while Instant::now() < end {
        while outstanding < OUTSTANDING {
            let r = c.think_with(&request(tokens, true))?;
            if !r.is_accepted() {
                bail!("async THINK not accepted: {r:?}");
            }
            outstanding += 1;
        }
        let polled = c.call(&AsyncPollRequest {
            max: OUTSTANDING as u32,
            wait_ms: Some(200),
        })?;
        for result in polled.results {
            outstanding -= 1;
            let reply: clove_sdk::msg::ThinkReply = match result.reply() {
                Ok(Ok(r)) => r,
                other => bail!("THINK result: {other:?}"),
            };
            let now = Instant::now();
            if now >= from && now < end {
                let u = reply.usage.unwrap_or_default();
                cost += (u.input + 2 * u.output) as f64;
                calls += 1;
            }
        }
    }
    Ok((cost, calls))
}

/// The fairness run under `policy`.
fn fairness(kernel: &Kernel, policy: &'static str, window: Duration) -> Result<Fairness> {
    set_policy(kernel, policy)?;
    let barrier = Arc::new(Barrier::new(SIZES.len() + 1));
    // A warm-up second first: every caller backlogged before the window opens.
    let from = Instant::now() + Duration::from_secs(1);
    let end = from + window;
    let results: Vec<Result<(f64, u64)>> = std::thread::scope(|s| {
        let handles: Vec<_> = SIZES
            .iter()
            .map(|&tokens| {
                let b = Arc::clone(&barrier);
                s.spawn(move || backlogged(kernel, tokens, &b, from, end))
            })
            .collect();
        barrier.wait();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| bail!("caller thread panicked")))
            .collect()
    });
    let mut served = Vec::new();
    let mut calls = Vec::new();
    for r in results {
        let (cost, n) = r?;
        served.push(cost);
        calls.push(n);
    }
    Ok(Fairness {
        policy,
        jain: jain(&served),
        served,
        calls,
    })
}

/// The polite-caller run under `policy`.
fn polite(kernel: &Kernel, policy: &'static str, window: Duration) -> Result<Polite> {
    set_policy(kernel, policy)?;
    let barrier = Arc::new(Barrier::new(2));
    let from = Instant::now() + Duration::from_secs(1);
    let end = from + window;
    let (flood, waits) = std::thread::scope(|s| {
        let b = Arc::clone(&barrier);
        let flood = s.spawn(move || backlogged(kernel, 200, &b, from, end));
        let waits = (|| -> Result<Vec<u64>> {
            let mut c = connect(kernel)?;
            barrier.wait();
            std::thread::sleep(from.saturating_duration_since(Instant::now()));
            let mut waits = Vec::new();
            while Instant::now() < end {
                let r = c.think_with(&request(20, false))?;
                waits.push(r.queue_ms.unwrap_or(0) * 1_000_000);
                std::thread::sleep(POLITE_EVERY);
            }
            Ok(waits)
        })();
        (
            flood
                .join()
                .unwrap_or_else(|_| bail!("flooder thread panicked")),
            waits,
        )
    });
    let (_, flooder_calls) = flood?;
    let mut waits = waits?;
    Ok(Polite {
        policy,
        calls: waits.len(),
        queue: summarize(&mut waits),
        flooder_calls,
    })
}

/// Sequential THINKs to the zero-latency provider next to NOOPs, alternating in blocks.
fn overhead(kernel: &Kernel, iters: usize) -> Result<(Summary, Summary)> {
    let mut c = connect(kernel)?;
    let think = ThinkRequest {
        model: Some("instant:bench".into()),
        max_tokens: Some(1),
        ..ThinkRequest::new("hi")
    };
    let (mut t, mut n) = (Vec::with_capacity(iters), Vec::with_capacity(iters));
    for _ in 0..iters / 10 {
        c.think_with(&think)?;
        c.noop(b"0123456789abcdef")?;
    }
    for _ in 0..10 {
        for _ in 0..iters / 10 {
            let s = Instant::now();
            let r = c.think_with(&think)?;
            t.push(s.elapsed().as_nanos() as u64);
            if !r.success {
                bail!("THINK failed: {r:?}");
            }
        }
        for _ in 0..iters / 10 {
            let s = Instant::now();
            c.noop(b"0123456789abcdef")?;
            n.push(s.elapsed().as_nanos() as u64);
        }
    }
    Ok((summarize(&mut t), summarize(&mut n)))
}

/// Runs the part on `kernel` (from [`start_kernel`]).
pub fn measure(kernel: &Kernel, cfg: &LlmConfig) -> Result<LlmResult> {
    let mut fair = Vec::new();
    let mut pol = Vec::new();
    for policy in ["vtc", "fifo"] {
        progress(format_args!("llm: fairness under {policy}"));
        fair.push(fairness(kernel, policy, cfg.window)?);
        progress(format_args!(
            "llm: a polite caller beside a flooder under {policy}"
        ));
        pol.push(polite(kernel, policy, cfg.window)?);
    }
    set_policy(kernel, "vtc")?;
    progress(format_args!("llm: THINK overhead against NOOP"));
    let (think, noop) = overhead(kernel, cfg.overhead_iters)?;
    Ok(LlmResult {
        fairness: fair,
        polite: pol,
        think,
        noop,
    })
}

/// The served cost of one caller as a share of the total, in percent.
fn shares(served: &[f64]) -> Vec<f64> {
    let total: f64 = served.iter().sum();
    served
        .iter()
        .map(|s| if total > 0.0 { 100.0 * s / total } else { 0.0 })
        .collect()
}

/// The `llm` part as text.
pub fn print(r: &LlmResult) {
    println!();
    println!(
        "llm (THINK scheduler; simulated provider, {IN_FLIGHT} calls in flight, 0.02 ms per \
         answer token)"
    );
    println!(
        "  8 backlogged callers, answers of {}..{} tokens: share of served cost (input + 2 × \
         output), %",
        SIZES[0],
        SIZES[SIZES.len() - 1]
    );
    for f in &r.fairness {
        let s: Vec<String> = shares(&f.served)
            .iter()
            .map(|p| format!("{p:4.1}"))
            .collect();
        println!(
            "    {:5} Jain {:.4}  shares [{}]  answers {:?}",
            f.policy,
            f.jain,
            s.join(" "),
            f.calls
        );
    }
    println!("  a polite caller (one 20-token THINK every 20 ms) beside a flooder (16 queued):");
    for p in &r.polite {
        println!(
            "    {:5} polite queue delay p50 {:.0} ms, p99 {:.0} ms ({} answers; flooder {})",
            p.policy,
            p.queue.p50_ns / 1e6,
            p.queue.p99_ns / 1e6,
            p.calls,
            p.flooder_calls
        );
    }
    println!(
        "  THINK to a zero-latency provider, sequential: p50 {:.1} µs, p99 {:.1} µs; NOOP on \
         the same connection p50 {:.1} µs, p99 {:.1} µs: THINK path adds {:.1} µs at p50",
        r.think.p50_ns / 1e3,
        r.think.p99_ns / 1e3,
        r.noop.p50_ns / 1e3,
        r.noop.p99_ns / 1e3,
        (r.think.p50_ns - r.noop.p50_ns) / 1e3
    );
}

/// The `llm` part as JSON.
pub fn to_json(r: &LlmResult) -> serde_json::Value {
    let us = |s: &Summary| serde_json::json!({"p50_us": s.p50_ns / 1e3, "p99_us": s.p99_ns / 1e3});
    serde_json::json!({
        "in_flight": IN_FLIGHT,
        "sizes": SIZES,
        "fairness": r.fairness.iter().map(|f| serde_json::json!({
            "policy": f.policy, "jain": f.jain, "served": f.served, "answers": f.calls,
        })).collect::<Vec<_>>(),
        "polite": r.polite.iter().map(|p| serde_json::json!({
            "policy": p.policy, "queue_p50_ms": p.queue.p50_ns / 1e6,
            "queue_p99_ms": p.queue.p99_ns / 1e6, "answers": p.calls,
            "flooder_answers": p.flooder_calls,
        })).collect::<Vec<_>>(),
        "think_zero_latency": us(&r.think),
        "noop": us(&r.noop),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jain_is_one_for_equal_shares_and_one_over_n_for_a_monopoly() {
        assert!((jain(&[3.0, 3.0, 3.0, 3.0]) - 1.0).abs() < 1e-12);
        assert!((jain(&[5.0, 0.0, 0.0, 0.0]) - 0.25).abs() < 1e-12);
        assert!(jain(&[1.0, 2.0]) < 1.0);
    }
}
