//! The cooperation parts: messages between callers (`msgs`), the state store (`state`) and
//! the event bus (`events`), each on its own kernel and each next to a baseline measured in
//! the same run:
//!
//! * `msgs`: a sender thread and a receiver thread, each on its own operator connection; the
//!   receiver REGISTERs a name and the sender SENDs to that name. Throughput is `count`
//!   messages from the first SEND to the last RECV reply, in three modes: one message per SEND
//!   and per RECV, one per SEND with RECV draining up to 256, and SEND_BATCH with RECV up to
//!   256. Then the latency of one message in flight (SEND → RECV reply seen by the receiver,
//!   unloaded). Baseline: NOOP round trips per second through the same SDK client, on one
//!   connection and on two at once (the two callers' request capacity).
//! * `state`: STORE per second from one client and from `clients` at once (group commit:
//!   concurrent writes share an fsync), FETCH per second likewise, and the kernel's CPU time
//!   per request (from /proc). Baselines: a 4 KiB `pwrite` in place + `fdatasync` per second
//!   on the same file system, and NOOP per second.
//! * `events`: `subscribers` connections SUBSCRIBE to one custom type and POLL_EVENTS with a
//!   wait; one emitter EMITs `events` events as fast as it can, then a tenth as many 5 ms
//!   apart. Events delivered per second and the delay from just before EMIT to the
//!   POLL_EVENTS reply, taken from a timestamp in the event's data (one clock: every thread is
//!   in this process), per delivery and until the last subscriber has the event.
//!
//! Every client is the blocking Rust SDK client (`clove_sdk::Client`), postcard unless said.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clove_abi::Codec;
use clove_sdk::msg::{AgentRef, StoreRequest};
use clove_sdk::{Client, Json};
use clove_tests::Kernel;
use serde_json::json;

use super::progress;
use super::stats::{summarize, Summary};

/// What the original Clove managed in the same task (one sender, one receiver), msg/s.
pub const ORIGINAL_MSGS_PER_SEC: f64 = 9_600.0;

/// No call may block longer than this: a hung kernel fails the bench instead of hanging it.
const CALL_LIMIT: Duration = Duration::from_secs(30);
/// How long RECV and POLL_EVENTS wait for a first item before answering empty.
const POLL_WAIT: Duration = Duration::from_millis(1000);
/// How long a SEND waits for room in a full mailbox (the receiver drains it meanwhile).
const SEND_WAIT: Duration = Duration::from_secs(10);
/// RECV's `max` when draining.
const RECV_MAX: u32 = 256;
/// The NOOP payload of the baselines, as in the `noop` part's default.
const NOOP_PAYLOAD: &[u8] = b"0123456789abcdef";

/// Settings of the three parts.
#[derive(Debug, Clone)]
pub struct CoopConfig {
    /// Messages per `msgs` throughput run.
    pub msgs: usize,
    /// SEND_BATCH sizes to measure.
    pub batches: Vec<usize>,
    /// Messages timed in the one-in-flight latency run (after a tenth as many untimed).
    pub latency_msgs: usize,
    /// NOOP round trips per connection for the `msgs` baseline.
    pub noop_iters: usize,
    /// Seconds per `state` run.
    pub duration: Duration,
    /// Concurrent clients of the `state` multi-client runs.
    pub clients: usize,
    /// Subscriber connections of the `events` part.
    pub subscribers: usize,
    /// Events emitted.
    pub events: usize,
}

/// A blocking SDK client on `kernel` speaking `codec`, with a bound on every call.
fn connect(kernel: &Kernel, codec: Codec) -> Result<Client> {
    let mut c = Client::connect(Some(&kernel.socket)).context("connect")?;
    c.set_timeout(Some(CALL_LIMIT))?;
    c.set_codec(codec);
    Ok(c)
}

fn codec_name(codec: Codec) -> &'static str {
    match codec {
        Codec::Json => "json",
        Codec::Postcard => "postcard",
    }
}

/// Nanoseconds since `origin`, the clock every thread of a run shares.
fn ns_since(origin: Instant) -> u64 {
    u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Joins a scoped thread, turning a panic into an error.
fn join<T>(h: std::thread::ScopedJoinHandle<'_, Result<T>>, who: &str) -> Result<T> {
    h.join().map_err(|_| anyhow!("{who} thread panicked"))?
}

// ---------------------------------------------------------------------------------------------
// Rates: N clients doing one operation in a loop

/// Operations per second over all clients of one run, and each operation's round trip.
#[derive(Debug, Clone, Copy)]
pub struct Rate {
    pub clients: usize,
    pub per_sec: f64,
    pub latency: Summary,
    /// The kernel's CPU time (user + system) per operation, µs; NaN when not measured.
    pub kernel_cpu_us: f64,
}

/// CPU time process `pid` has used (user + system, all threads), in µs, from /proc.
fn cpu_us(pid: u32) -> Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    // After the command name: utime and stime are fields 14 and 15, so indexes 11 and 12.
    let rest = text.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<f64> {
        f.get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .map(|v| v as f64)
            .with_context(|| format!("{path}: field {} unreadable", i + 3))
    };
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as f64 } else { 100.0 };
    Ok((ticks(11)? + ticks(12)?) * 1e6 / hz)
}

/// Runs `op(client, client index, iteration)` in a loop on `clients` connections at once,
/// each in its own thread, for `duration` (after one untimed call each); returns the total
/// rate and every call's round trip.
fn rate<F>(kernel: &Kernel, codec: Codec, clients: usize, duration: Duration, op: F) -> Result<Rate>
where
    F: Fn(&mut Client, usize, u64) -> Result<()> + Sync,
{
    let mut conns = Vec::with_capacity(clients);
    for c in 0..clients {
        let mut conn = connect(kernel, codec)?;
        op(&mut conn, c, 0).context("first, untimed call")?;
        conns.push(conn);
    }
    let stop = AtomicBool::new(false);
    let go = Barrier::new(clients + 1);
    let (op, stop_ref, go_ref) = (&op, &stop, &go);
    std::thread::scope(|s| {
        let threads: Vec<_> = conns
            .into_iter()
            .enumerate()
            .map(|(c, mut conn)| {
                s.spawn(move || -> Result<Vec<u64>> {
                    go_ref.wait();
                    let mut took = Vec::with_capacity(64 * 1024);
                    let mut i = 1;
                    while !stop_ref.load(Ordering::Relaxed) {
                        let t = Instant::now();
                        op(&mut conn, c, i)?;
                        took.push(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX));
                        i += 1;
                    }
                    Ok(took)
                })
            })
            .collect();
        let cpu_before = cpu_us(kernel.pid());
        go_ref.wait();
        let start = Instant::now();
        std::thread::sleep(duration);
        stop_ref.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for t in threads {
            all.extend(join(t, "client")?);
        }
        let elapsed = start.elapsed().as_secs_f64();
        let kernel_cpu_us = match (cpu_before, cpu_us(kernel.pid())) {
            (Ok(a), Ok(b)) => (b - a) / all.len().max(1) as f64,
            _ => f64::NAN,
        };
        Ok(Rate {
            clients,
            per_sec: all.len() as f64 / elapsed,
            latency: summarize(&mut all),
            kernel_cpu_us,
        })
    })
}

// ---------------------------------------------------------------------------------------------
// msgs

/// How the sender sends and the receiver receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MsgMode {
    /// SEND of one message, RECV `max: 1`: two requests per message.
    Single,
    /// SEND of one message, RECV `max: 256`: the receiver drains what has piled up.
    SingleDrain,
    /// SEND_BATCH of this many, RECV `max: 256`.
    Batch(usize),
}

impl MsgMode {
    fn describe(self) -> String {
        match self {
            MsgMode::Single => "SEND x1, RECV max 1".to_owned(),
            MsgMode::SingleDrain => format!("SEND x1, RECV max {RECV_MAX}"),
            MsgMode::Batch(n) => format!("SEND_BATCH x{n}, RECV max {RECV_MAX}"),
        }
    }

    fn key(self) -> String {
        match self {
            MsgMode::Single => "send1_recv1".to_owned(),
            MsgMode::SingleDrain => format!("send1_recv{RECV_MAX}"),
            MsgMode::Batch(n) => format!("batch{n}_recv{RECV_MAX}"),
        }
    }
}

/// One throughput run.
#[derive(Debug, Clone)]
pub struct MsgsRun {
    pub codec: Codec,
    pub mode: MsgMode,
    pub count: usize,
    /// First SEND written → last message's RECV reply read.
    pub elapsed: Duration,
    /// RECV calls the receiver made (messages per RECV shows how much it drained).
    pub recvs: u64,
}

impl MsgsRun {
    pub fn per_sec(&self) -> f64 {
        self.count as f64 / self.elapsed.as_secs_f64()
    }
}

/// NOOP round trips per second through the SDK client, on one connection and on two at once.
#[derive(Debug, Clone, Copy)]
pub struct NoopBaseline {
    pub codec: Codec,
    pub one: f64,
    pub two: f64,
}

/// Results of the `msgs` part.
#[derive(Debug, Clone)]
pub struct MsgsResult {
    pub baselines: Vec<NoopBaseline>,
    pub runs: Vec<MsgsRun>,
    /// One message in flight, SEND called → RECV reply read by the receiver, per codec.
    pub latency: Vec<(Codec, Summary)>,
    pub latency_msgs: usize,
}

impl MsgsResult {
    fn noop(&self, codec: Codec) -> Option<&NoopBaseline> {
        self.baselines.iter().find(|b| b.codec == codec)
    }
}

/// The `msgs` part.
pub fn measure_msgs(kernel: &Kernel, cfg: &CoopConfig) -> Result<MsgsResult> {
    let codecs = [Codec::Postcard, Codec::Json];
    let mut modes = vec![MsgMode::Single, MsgMode::SingleDrain];
    modes.extend(cfg.batches.iter().map(|&n| MsgMode::Batch(n)));
    progress(format_args!(
        "msgs: NOOP baseline ({} round trips per connection), then {} messages per run x {} \
         modes x {} codecs, then {} messages one at a time for latency",
        cfg.noop_iters,
        cfg.msgs,
        modes.len(),
        codecs.len(),
        cfg.latency_msgs
    ));
    let mut baselines = Vec::new();
    for codec in codecs {
        let b = noop_baseline(kernel, codec, cfg.noop_iters)
            .with_context(|| format!("NOOP baseline, {}", codec_name(codec)))?;
        progress(format_args!(
            "  NOOP {}: {:.0}/s on 1 connection, {:.0}/s on 2",
            codec_name(codec),
            b.one,
            b.two
        ));
        baselines.push(b);
    }
    let mut runs = Vec::new();
    let mut name = 0;
    for codec in codecs {
        for &mode in &modes {
            name += 1;
            let run = msgs_run(kernel, codec, mode, cfg.msgs, &format!("bench-sink-{name}"))
                .with_context(|| format!("msgs {} {}", codec_name(codec), mode.describe()))?;
            progress(format_args!(
                "  {} {}: {:.0} msg/s ({:.1} messages per RECV)",
                codec_name(codec),
                mode.describe(),
                run.per_sec(),
                run.count as f64 / run.recvs.max(1) as f64
            ));
            runs.push(run);
        }
    }
    let mut latency = Vec::new();
    for codec in codecs {
        name += 1;
        let s = one_in_flight(
            kernel,
            codec,
            cfg.latency_msgs,
            &format!("bench-sink-{name}"),
        )
        .with_context(|| format!("msgs latency, {}", codec_name(codec)))?;
        progress(format_args!(
            "  latency {}: p50 {:.1} µs, p99 {:.1} µs",
            codec_name(codec),
            s.p50_ns / 1e3,
            s.p99_ns / 1e3
        ));
        latency.push((codec, s));
    }
    Ok(MsgsResult {
        baselines,
        runs,
        latency,
        latency_msgs: cfg.latency_msgs,
    })
}

/// `iters` NOOPs on one connection, then `iters` on each of two connections at once.
fn noop_baseline(kernel: &Kernel, codec: Codec, iters: usize) -> Result<NoopBaseline> {
    let noops = |c: &mut Client| -> Result<()> {
        for _ in 0..iters {
            c.noop(NOOP_PAYLOAD)?;
        }
        Ok(())
    };
    let mut a = connect(kernel, codec)?;
    let mut b = connect(kernel, codec)?;
    // Warm both connections up.
    a.noop(NOOP_PAYLOAD)?;
    b.noop(NOOP_PAYLOAD)?;
    let t = Instant::now();
    noops(&mut a)?;
    let one = iters as f64 / t.elapsed().as_secs_f64();
    let go = Barrier::new(2);
    let two = std::thread::scope(|s| -> Result<f64> {
        let other = s.spawn(|| {
            go.wait();
            noops(&mut b)
        });
        go.wait();
        let t = Instant::now();
        noops(&mut a)?;
        join(other, "NOOP")?;
        Ok(2.0 * iters as f64 / t.elapsed().as_secs_f64())
    })?;
    Ok(NoopBaseline { codec, one, two })
}

/// A small JSON body: its sequence number and a few bytes of text.
fn body(seq: usize) -> serde_json::Value {
    json!({ "seq": seq, "text": "hello" })
}

/// The `seq` of a received body.
fn seq_of(message: &Json) -> Option<u64> {
    message.0.get("seq").and_then(serde_json::Value::as_u64)
}

/// A receiver connection that has REGISTERed `name`.
fn receiver(kernel: &Kernel, codec: Codec, name: &str) -> Result<Client> {
    let mut c = connect(kernel, codec)?;
    c.register(name)
        .with_context(|| format!("REGISTER {name:?}"))?;
    Ok(c)
}

/// One throughput run: `count` messages from a sender thread to a receiver thread.
fn msgs_run(
    kernel: &Kernel,
    codec: Codec,
    mode: MsgMode,
    count: usize,
    name: &str,
) -> Result<MsgsRun> {
    let mut rx = receiver(kernel, codec, name)?;
    let mut tx = connect(kernel, codec)?;
    let to = AgentRef::Name(name);
    let recv_max = if mode == MsgMode::Single { 1 } else { RECV_MAX };
    let sent_all = AtomicBool::new(false);
    let go = Barrier::new(2);
    std::thread::scope(|s| -> Result<MsgsRun> {
        // The receiver: takes messages until it has `count`, checking that they come in order.
        let receiving = s.spawn(|| -> Result<(Instant, u64)> {
            go.wait();
            let (mut next, mut recvs) = (0u64, 0u64);
            let mut last = Instant::now();
            while next < count as u64 {
                let reply = rx.recv_messages(recv_max, Some(POLL_WAIT))?;
                recvs += 1;
                last = Instant::now();
                if reply.messages.is_empty() && sent_all.load(Ordering::Acquire) {
                    bail!("{next} of {count} messages received, then none");
                }
                for m in &reply.messages {
                    if seq_of(&m.message) != Some(next) {
                        bail!("expected message {next}, got {:?}", m.message.0);
                    }
                    next += 1;
                }
            }
            Ok((last, recvs))
        });
        go.wait();
        let start = Instant::now();
        let sending = (|| -> Result<()> {
            match mode {
                MsgMode::Single | MsgMode::SingleDrain => {
                    for seq in 0..count {
                        tx.send_message(to, body(seq), Some(SEND_WAIT))?;
                    }
                }
                MsgMode::Batch(n) => {
                    for first in (0..count).step_by(n.max(1)) {
                        let batch = (first..count.min(first + n)).map(body).collect();
                        tx.send_batch(to, batch, Some(SEND_WAIT))?;
                    }
                }
            }
            Ok(())
        })();
        sent_all.store(true, Ordering::Release);
        let received = join(receiving, "receiver");
        sending.context("sender")?;
        let (last, recvs) = received?;
        Ok(MsgsRun {
            codec,
            mode,
            count,
            elapsed: last.duration_since(start),
            recvs,
        })
    })
}

/// `n` messages one at a time: the sender SENDs, the receiver (waiting in RECV) takes it and
/// tells the sender when its reply arrived; the next goes only then. `n / 10` untimed first.
fn one_in_flight(kernel: &Kernel, codec: Codec, n: usize, name: &str) -> Result<Summary> {
    let mut rx = receiver(kernel, codec, name)?;
    let mut tx = connect(kernel, codec)?;
    let to = AgentRef::Name(name);
    let warmup = n / 10;
    let total = warmup + n;
    let (ack, acked) = mpsc::channel::<Instant>();
    let done = AtomicBool::new(false);
    let done_ref = &done;
    std::thread::scope(|s| -> Result<Summary> {
        let receiving = s.spawn(move || -> Result<()> {
            let mut got = 0;
            while got < total {
                let reply = rx.recv_messages(1, Some(POLL_WAIT))?;
                let at = Instant::now();
                if reply.messages.is_empty() && done_ref.load(Ordering::Acquire) {
                    // The sender stopped early (it says why).
                    return Ok(());
                }
                if let Some(m) = reply.messages.first() {
                    if seq_of(&m.message) != Some(got as u64) {
                        bail!("expected message {got}, got {:?}", m.message.0);
                    }
                    got += 1;
                    // The sender is gone only if it failed; it says why.
                    if ack.send(at).is_err() {
                        return Ok(());
                    }
                }
            }
            Ok(())
        });
        let mut took = Vec::with_capacity(n);
        let sending = (|| -> Result<()> {
            for seq in 0..total {
                let t = Instant::now();
                tx.send_message(to, body(seq), Some(SEND_WAIT))?;
                let at = acked
                    .recv_timeout(CALL_LIMIT)
                    .with_context(|| format!("message {seq} not received"))?;
                if seq >= warmup {
                    took.push(u64::try_from(at.duration_since(t).as_nanos()).unwrap_or(u64::MAX));
                }
            }
            Ok(())
        })();
        // A receiver still going ends at its next empty RECV, or at its next acknowledgement
        // (the channel's receiving end is gone).
        done.store(true, Ordering::Release);
        drop(acked);
        let received = join(receiving, "receiver");
        sending.context("sender")?;
        received?;
        Ok(summarize(&mut took))
    })
}

/// Prints the `msgs` part's table.
pub fn print_msgs(r: &MsgsResult) {
    println!();
    println!(
        "MESSAGES: one sender thread, one receiver thread, each its own operator connection; \
         the receiver REGISTERs a name, the sender SENDs to it; bodies {{\"seq\": n, \"text\": \
         \"hello\"}}"
    );
    println!(
        "  same-run baseline, NOOP 16 B through the same SDK client (sequential round trips):"
    );
    for b in &r.baselines {
        println!(
            "    {:<9} {:>8.0}/s on 1 connection, {:>8.0}/s on 2 connections at once",
            codec_name(b.codec),
            b.one,
            b.two
        );
    }
    println!(
        "  {:<9} {:<28} {:>9} {:>10} {:>12} {:>12} {:>10}",
        "codec", "mode", "messages", "msg/s", "msgs/RECV", "÷ NOOP/s 1c", "× original"
    );
    for run in &r.runs {
        let noop = r.noop(run.codec).map_or(f64::NAN, |b| b.one);
        println!(
            "  {:<9} {:<28} {:>9} {:>10.0} {:>12.1} {:>12.2} {:>10.1}",
            codec_name(run.codec),
            run.mode.describe(),
            run.count,
            run.per_sec(),
            run.count as f64 / run.recvs.max(1) as f64,
            run.per_sec() / noop,
            run.per_sec() / ORIGINAL_MSGS_PER_SEC
        );
    }
    println!(
        "  (the original Clove: about {ORIGINAL_MSGS_PER_SEC:.0} msg/s in the same task, not \
         measured here)"
    );
    println!(
        "  latency, one message in flight ({} messages): SEND called → the receiver's RECV \
         reply read",
        r.latency_msgs
    );
    for (codec, s) in &r.latency {
        println!(
            "    {:<9} p50 {:>7.1} µs, p99 {:>7.1} µs, mean {:>7.1} µs, max {:>8.1} µs",
            codec_name(*codec),
            s.p50_ns / 1e3,
            s.p99_ns / 1e3,
            s.mean_ns / 1e3,
            s.max_ns / 1e3
        );
    }
}

fn us(ns: f64) -> f64 {
    (ns / 10.0).round() / 100.0
}

/// The `msgs` part as JSON.
pub fn msgs_json(r: &MsgsResult) -> serde_json::Value {
    let mut runs = serde_json::Map::new();
    for run in &r.runs {
        let noop = r.noop(run.codec).map_or(f64::NAN, |b| b.one);
        runs.insert(
            format!("{}_{}", codec_name(run.codec), run.mode.key()),
            json!({
                "messages": run.count,
                "secs": run.elapsed.as_secs_f64(),
                "msg_per_s": run.per_sec().round(),
                "msgs_per_recv": (run.count as f64 / run.recvs.max(1) as f64 * 10.0).round() / 10.0,
                "over_noop_1conn": (run.per_sec() / noop * 1000.0).round() / 1000.0,
                "over_original": (run.per_sec() / ORIGINAL_MSGS_PER_SEC * 100.0).round() / 100.0,
            }),
        );
    }
    json!({
        "noop_baseline_per_s": r.baselines.iter().map(|b| (codec_name(b.codec).to_owned(), json!({
            "one_conn": b.one.round(),
            "two_conns": b.two.round(),
        }))).collect::<serde_json::Map<_, _>>(),
        "runs": runs,
        "latency_one_in_flight": r.latency.iter().map(|(c, s)| (codec_name(*c).to_owned(), json!({
            "p50_us": us(s.p50_ns),
            "p99_us": us(s.p99_ns),
            "mean_us": us(s.mean_ns),
            "max_us": us(s.max_ns),
        }))).collect::<serde_json::Map<_, _>>(),
        "latency_messages": r.latency_msgs,
        "original_msg_per_s": ORIGINAL_MSGS_PER_SEC,
    })
}

// ---------------------------------------------------------------------------------------------
// state

/// Results of the `state` part.
#[derive(Debug, Clone)]
pub struct StateResult {
    /// 4 KiB `pwrite` in place + `fdatasync` per second, one thread, beside the state dir.
    pub fsync: Rate,
    pub noop: Vec<Rate>,
    pub store: Vec<Rate>,
    pub fetch: Vec<Rate>,
    /// The file system the state dir is on (`ext4 /dev/vda on /`).
    pub filesystem: String,
    pub duration: Duration,
}

/// Keys each client cycles through (its own, so clients never contend on one key).
const KEYS_PER_CLIENT: u64 = 64;

fn key(client: usize, i: u64) -> String {
    format!("bench.c{client}.k{}", i % KEYS_PER_CLIENT)
}

/// The `state` part.
pub fn measure_state(kernel: &Kernel, cfg: &CoopConfig) -> Result<StateResult> {
    let filesystem = filesystem_of(&kernel.state_dir);
    progress(format_args!(
        "state: {:.1} s per run; fdatasync baseline, NOOP, STORE and FETCH on 1 and {} clients; \
         state dir on {filesystem}",
        cfg.duration.as_secs_f64(),
        cfg.clients
    ));
    let fsync = fsync_rate(kernel.dir.path(), cfg.duration).context("fdatasync baseline")?;
    progress(format_args!(
        "  pwrite 4 KiB in place + fdatasync: {:.0}/s (p50 {:.3} ms)",
        fsync.per_sec,
        fsync.latency.p50_ns / 1e6
    ));
    let counts = [1, cfg.clients];
    let codec = Codec::Postcard;
    let mut noop = Vec::new();
    let mut store = Vec::new();
    let mut fetch = Vec::new();
    for &n in &counts {
        let r = rate(kernel, codec, n, cfg.duration, |c, _, _| {
            c.noop(NOOP_PAYLOAD)?;
            Ok(())
        })
        .with_context(|| format!("NOOP, {n} clients"))?;
        report("NOOP", &r);
        noop.push(r);
    }
    for &n in &counts {
        let r = rate(kernel, codec, n, cfg.duration, |c, client, i| {
            let req = StoreRequest {
                key: key(client, i),
                value: Json(json!({ "n": i, "text": "hello" })),
                ..StoreRequest::default()
            };
            c.store(&req)?;
            Ok(())
        })
        .with_context(|| format!("STORE, {n} clients"))?;
        report("STORE", &r);
        store.push(r);
    }
    for &n in &counts {
        // Every key read was written by the STORE runs (client 0..n, all 64 keys).
        let r = rate(kernel, codec, n, cfg.duration, |c, client, i| {
            let k = key(client, i);
            if !c.fetch(&k)?.exists {
                bail!("FETCH {k:?}: missing");
            }
            Ok(())
        })
        .with_context(|| format!("FETCH, {n} clients"))?;
        report("FETCH", &r);
        fetch.push(r);
    }
    Ok(StateResult {
        fsync,
        noop,
        store,
        fetch,
        filesystem,
        duration: cfg.duration,
    })
}

fn report(what: &str, r: &Rate) {
    progress(format_args!(
        "  {what} x{} clients: {:.0}/s (p50 {:.3} ms, p99 {:.3} ms; kernel CPU {:.1} µs each)",
        r.clients,
        r.per_sec,
        r.latency.p50_ns / 1e6,
        r.latency.p99_ns / 1e6,
        r.kernel_cpu_us
    ));
}

/// Pages of the `fdatasync` baseline's file (4 MiB, about SQLite's default WAL size).
const FSYNC_PAGES: u64 = 1024;

/// What one durable commit costs this file system, the way SQLite's WAL is written once it has
/// reached its size: a 4 KiB page written in place in a preallocated file, then `fdatasync`
/// (no size change, so no metadata to journal), cycling through the file, in `dir`, for
/// `duration`.
fn fsync_rate(dir: &Path, duration: Duration) -> Result<Rate> {
    use std::os::unix::fs::FileExt;
    let path = dir.join("fsync-baseline.bin");
    let mut f = File::create(&path).with_context(|| format!("create {}", path.display()))?;
    let page = [b'x'; 4096];
    for _ in 0..FSYNC_PAGES {
        f.write_all(&page)?;
    }
    f.sync_all()?;
    let mut took = Vec::new();
    let start = Instant::now();
    let mut i = 0;
    while start.elapsed() < duration {
        let t = Instant::now();
        f.write_all_at(&page, (i % FSYNC_PAGES) * 4096)?;
        f.sync_data()?;
        took.push(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX));
        i += 1;
    }
    let elapsed = start.elapsed().as_secs_f64();
    drop(f);
    std::fs::remove_file(&path).with_context(|| format!("remove {}", path.display()))?;
    Ok(Rate {
        clients: 1,
        per_sec: took.len() as f64 / elapsed,
        latency: summarize(&mut took),
        kernel_cpu_us: f64::NAN,
    })
}

/// The file system type, device and mount point `path` is on, from /proc/self/mountinfo (the
/// longest mount point that is a prefix of the path).
fn filesystem_of(path: &Path) -> String {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let (pre, post) = line.split_once(" - ")?;
            let point = pre.split_whitespace().nth(4)?;
            let mut post = post.split_whitespace();
            let (fstype, source) = (post.next()?, post.next()?);
            path.starts_with(point)
                .then(|| (point.len(), format!("{fstype} ({source} on {point})")))
        })
        .max_by_key(|(len, _)| *len)
        .map_or_else(|| "an unknown file system".to_owned(), |(_, fs)| fs)
}

/// Prints the `state` part's table.
pub fn print_state(r: &StateResult) {
    println!();
    println!(
        "STATE: postcard, one connection per client, {:.1} s per run; STORE cycles through 64 \
         keys per client (small JSON values), FETCH reads them back; state dir on {}",
        r.duration.as_secs_f64(),
        r.filesystem
    );
    println!(
        "  {:<44} {:>10} {:>9} {:>9} {:>13} {:>14}",
        "", "ops/s", "p50 ms", "p99 ms", "kernel CPU µs", "÷ baseline"
    );
    let row = |label: String, x: &Rate, base: f64, base_name: &str| {
        println!(
            "  {:<44} {:>10.0} {:>9.3} {:>9.3} {:>13.1} {:>14}",
            label,
            x.per_sec,
            x.latency.p50_ns / 1e6,
            x.latency.p99_ns / 1e6,
            x.kernel_cpu_us,
            if base.is_nan() {
                String::new()
            } else {
                format!("{:.2}x {base_name}", x.per_sec / base)
            }
        );
    };
    row(
        "baseline: 4 KiB pwrite + fdatasync, 1 thread".to_owned(),
        &r.fsync,
        f64::NAN,
        "",
    );
    for x in &r.noop {
        row(
            format!("baseline: NOOP, {} clients", x.clients),
            x,
            f64::NAN,
            "",
        );
    }
    for x in &r.store {
        row(
            format!("STORE, {} clients", x.clients),
            x,
            r.fsync.per_sec,
            "fsync",
        );
    }
    for (x, n) in r.fetch.iter().zip(&r.noop) {
        row(
            format!("FETCH, {} clients", x.clients),
            x,
            n.per_sec,
            "NOOP",
        );
    }
}

fn rate_json(r: &Rate) -> serde_json::Value {
    json!({
        "clients": r.clients,
        "per_s": r.per_sec.round(),
        "p50_ms": (r.latency.p50_ns / 1e3).round() / 1e3,
        "p99_ms": (r.latency.p99_ns / 1e3).round() / 1e3,
        "kernel_cpu_us_per_op": (!r.kernel_cpu_us.is_nan())
            .then(|| (r.kernel_cpu_us * 100.0).round() / 100.0),
    })
}

/// The `state` part as JSON.
pub fn state_json(r: &StateResult) -> serde_json::Value {
    json!({
        "filesystem": r.filesystem,
        "secs_per_run": r.duration.as_secs_f64(),
        "baseline_fdatasync": rate_json(&r.fsync),
        "baseline_noop": r.noop.iter().map(rate_json).collect::<Vec<_>>(),
        "store": r.store.iter().map(rate_json).collect::<Vec<_>>(),
        "fetch": r.fetch.iter().map(rate_json).collect::<Vec<_>>(),
    })
}

// ---------------------------------------------------------------------------------------------
// events

/// One fan-out run: every subscriber receives every event.
#[derive(Debug, Clone)]
pub struct EventsRun {
    pub subscribers: usize,
    pub emitted: usize,
    /// The emitter's pause between EMITs (`None`: back to back).
    pub pace: Option<Duration>,
    /// Events received, over all subscribers.
    pub received: u64,
    /// Events the subscribers' queues dropped (reported by POLL_EVENTS).
    pub dropped: u64,
    /// First EMIT → last event received by any subscriber.
    pub elapsed: Duration,
    /// First EMIT → last EMIT reply.
    pub emit_elapsed: Duration,
    /// EMIT round trips.
    pub emit: Summary,
    /// Just before EMIT → POLL_EVENTS reply read, every delivery.
    pub delay: Summary,
    /// Just before EMIT → the last subscriber's POLL_EVENTS reply read, each event.
    pub all_reached: Summary,
    /// POLL_EVENTS calls over all subscribers.
    pub polls: u64,
}

impl EventsRun {
    /// Events delivered per second, over all subscribers.
    pub fn delivered_per_sec(&self) -> f64 {
        self.received as f64 / self.elapsed.as_secs_f64()
    }
}

/// Results of the `events` part: back to back, then paced.
#[derive(Debug, Clone)]
pub struct EventsResult {
    pub full: EventsRun,
    pub paced: EventsRun,
}

/// The paced run's pause between EMITs: long enough for every subscriber to have polled.
const EVENT_PACE: Duration = Duration::from_millis(5);

/// What one subscriber saw: (event seq, delay in ns) per event, in order.
struct Seen {
    delays: Vec<(usize, u64)>,
    dropped: u64,
    polls: u64,
    last: Instant,
}

/// The `events` part: `events` EMITs back to back (throughput, delay under load), then a
/// tenth as many (at least 20) paced [`EVENT_PACE`] apart (the delay of one event alone).
pub fn measure_events(kernel: &Kernel, cfg: &CoopConfig) -> Result<EventsResult> {
    let (subs, n) = (cfg.subscribers, cfg.events);
    let paced_n = (n / 10).max(20);
    progress(format_args!(
        "events: {subs} subscribers; {n} events emitted back to back, then {paced_n} paced {}          ms apart",
        EVENT_PACE.as_millis()
    ));
    let full = events_run(kernel, subs, n, "bench.full", None).context("back to back")?;
    progress(format_args!(
        "  back to back: {:.0} events/s delivered, delay p50 {:.2} ms, p99 {:.2} ms",
        full.delivered_per_sec(),
        full.delay.p50_ns / 1e6,
        full.delay.p99_ns / 1e6
    ));
    let paced =
        events_run(kernel, subs, paced_n, "bench.paced", Some(EVENT_PACE)).context("paced")?;
    progress(format_args!(
        "  paced: delay p50 {:.2} ms, p99 {:.2} ms; all {subs} reached p50 {:.2} ms",
        paced.delay.p50_ns / 1e6,
        paced.delay.p99_ns / 1e6,
        paced.all_reached.p50_ns / 1e6
    ));
    Ok(EventsResult { full, paced })
}

/// `subs` fresh connections SUBSCRIBE to `event_type`, each polling in its own thread; the
/// emitter EMITs `n` events carrying their send time, `pace` apart.
fn events_run(
    kernel: &Kernel,
    subs: usize,
    n: usize,
    event_type: &str,
    pace: Option<Duration>,
) -> Result<EventsRun> {
    let mut conns = Vec::with_capacity(subs);
    for i in 0..subs {
        let mut c = connect(kernel, Codec::Postcard)?;
        c.subscribe(&[event_type])
            .with_context(|| format!("SUBSCRIBE, subscriber {i}"))?;
        conns.push(c);
    }
    let mut emitter = connect(kernel, Codec::Postcard)?;
    let origin = Instant::now();
    let emitted_all = AtomicBool::new(false);
    let go = Barrier::new(subs + 1);
    let (emitted_ref, go_ref) = (&emitted_all, &go);
    std::thread::scope(|s| -> Result<EventsRun> {
        let threads: Vec<_> = conns
            .into_iter()
            .map(|mut c| {
                s.spawn(move || -> Result<Seen> {
                    go_ref.wait();
                    let mut seen = Seen {
                        delays: Vec::with_capacity(n),
                        dropped: 0,
                        polls: 0,
                        last: Instant::now(),
                    };
                    while (seen.delays.len() as u64 + seen.dropped) < n as u64 {
                        let reply = c.poll_events(RECV_MAX, Some(POLL_WAIT))?;
                        let now = ns_since(origin);
                        seen.last = Instant::now();
                        seen.polls += 1;
                        seen.dropped += reply.dropped.unwrap_or(0);
                        if reply.events.is_empty() && emitted_ref.load(Ordering::Acquire) {
                            bail!(
                                "{} of {n} events received ({} dropped), then none",
                                seen.delays.len(),
                                seen.dropped
                            );
                        }
                        for e in &reply.events {
                            let field = |k: &str| e.data.0.get(k).and_then(|v| v.as_u64());
                            let (Some(seq), Some(t)) = (field("seq"), field("t_ns")) else {
                                bail!("event without seq or t_ns: {e:?}");
                            };
                            let seq = usize::try_from(seq).unwrap_or(usize::MAX).min(n - 1);
                            seen.delays.push((seq, now.saturating_sub(t)));
                        }
                    }
                    Ok(seen)
                })
            })
            .collect();
        go_ref.wait();
        let start = Instant::now();
        let mut emit_took = Vec::with_capacity(n);
        let emitting = (|| -> Result<()> {
            for seq in 0..n {
                if let (Some(p), true) = (pace, seq > 0) {
                    std::thread::sleep(p);
                }
                let t = Instant::now();
                emitter.emit(event_type, json!({ "seq": seq, "t_ns": ns_since(origin) }))?;
                emit_took.push(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX));
            }
            Ok(())
        })();
        let emit_elapsed = start.elapsed();
        emitted_ref.store(true, Ordering::Release);
        let mut delays = Vec::with_capacity(subs * n);
        // Per event, the delay until the last subscriber had it.
        let mut all_reached = vec![0u64; n];
        let (mut dropped, mut polls, mut last, mut failure) = (0, 0, start, None);
        for t in threads {
            match join(t, "subscriber") {
                Ok(seen) => {
                    for &(seq, d) in &seen.delays {
                        delays.push(d);
                        all_reached[seq] = all_reached[seq].max(d);
                    }
                    dropped += seen.dropped;
                    polls += seen.polls;
                    last = last.max(seen.last);
                }
                Err(e) => failure = Some(e),
            }
        }
        emitting.context("emitter")?;
        if let Some(e) = failure {
            return Err(e);
        }
        Ok(EventsRun {
            subscribers: subs,
            emitted: n,
            pace,
            received: delays.len() as u64,
            dropped,
            elapsed: last.duration_since(start),
            emit_elapsed,
            emit: summarize(&mut emit_took),
            delay: summarize(&mut delays),
            all_reached: summarize(&mut all_reached),
            polls,
        })
    })
}

/// Prints the `events` part's table.
pub fn print_events(r: &EventsResult) {
    let f = &r.full;
    println!();
    println!(
        "EVENTS: {} subscriber connections (a thread each) SUBSCRIBEd to one custom type, \
         POLL_EVENTS max {RECV_MAX} waiting up to {} ms; one emitter EMITs (postcard); delays \
         from just before EMIT to the POLL_EVENTS reply read",
        f.subscribers,
        POLL_WAIT.as_millis(),
    );
    for run in [&r.full, &r.paced] {
        let how = match run.pace {
            None => "back to back".to_owned(),
            Some(p) => format!("{} ms apart", p.as_millis()),
        };
        println!("  {} events {how}:", run.emitted);
        println!(
            "    delivered {} of {} ({} dropped by full queues) in {:.2} s: {:.0} events/s \
             ({:.1} events per POLL_EVENTS)",
            run.received,
            run.emitted * run.subscribers,
            run.dropped,
            run.elapsed.as_secs_f64(),
            run.delivered_per_sec(),
            run.received as f64 / run.polls.max(1) as f64
        );
        println!(
            "    EMIT: {:.0}/s, round trip p50 {:.1} µs, p99 {:.1} µs",
            run.emitted as f64 / run.emit_elapsed.as_secs_f64(),
            run.emit.p50_ns / 1e3,
            run.emit.p99_ns / 1e3
        );
        println!(
            "    delay, each delivery: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; until all {} \
             subscribers had it: p50 {:.2} ms, p99 {:.2} ms",
            run.delay.p50_ns / 1e6,
            run.delay.p99_ns / 1e6,
            run.delay.max_ns / 1e6,
            run.subscribers,
            run.all_reached.p50_ns / 1e6,
            run.all_reached.p99_ns / 1e6
        );
    }
}

fn ms3(ns: f64) -> f64 {
    (ns / 1e3).round() / 1e3
}

fn events_run_json(r: &EventsRun) -> serde_json::Value {
    json!({
        "subscribers": r.subscribers,
        "emitted": r.emitted,
        "pace_ms": r.pace.map(|p| p.as_secs_f64() * 1e3),
        "received": r.received,
        "dropped": r.dropped,
        "secs": r.elapsed.as_secs_f64(),
        "delivered_per_s": r.delivered_per_sec().round(),
        "events_per_poll": (r.received as f64 / r.polls.max(1) as f64 * 10.0).round() / 10.0,
        "emit_per_s": (r.emitted as f64 / r.emit_elapsed.as_secs_f64()).round(),
        "emit_p50_us": us(r.emit.p50_ns),
        "emit_p99_us": us(r.emit.p99_ns),
        "delay_p50_ms": ms3(r.delay.p50_ns),
        "delay_p99_ms": ms3(r.delay.p99_ns),
        "delay_max_ms": ms3(r.delay.max_ns),
        "all_reached_p50_ms": ms3(r.all_reached.p50_ns),
        "all_reached_p99_ms": ms3(r.all_reached.p99_ns),
    })
}

/// The `events` part as JSON.
pub fn events_json(r: &EventsResult) -> serde_json::Value {
    json!({
        "back_to_back": events_run_json(&r.full),
        "paced": events_run_json(&r.paced),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_carry_their_sequence_number() {
        assert_eq!(seq_of(&Json(body(7))), Some(7));
        assert_eq!(seq_of(&Json(json!({ "text": "x" }))), None);
        assert_eq!(key(3, 64 + 5), "bench.c3.k5");
    }

    #[test]
    fn the_root_file_system_is_found() {
        let fs = filesystem_of(Path::new("/"));
        assert!(fs.contains(" on /)"), "{fs}");
    }
}
