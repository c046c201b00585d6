//! `clove demo llm`: agents of different sizes and rates contend for the kernel's shared LLM,
//! once under the `fifo` scheduler and once under `vtc`; the demo prints what each was served
//! and how long it waited, and judges whether VTC shared the LLM fairly. Not an attack on the
//! sandbox (it is not part of `clove demo all`).
//!
//! Six sandboxed agents (`demos/llm_agent.py`) ask the built-in simulated provider (`model:
//! "simulated:demo"`, whatever the kernel's default provider is, so no real tokens are spent):
//! * four backlogged agents, each keeping 4 async THINKs outstanding, whose answers are 100,
//!   300, 600 and 1000 tokens long (a 7× spread in cost per request);
//! * a flooder keeping 64 small async THINKs outstanding;
//! * a polite agent sending one small synchronous THINK every 200 ms.
//!
//! For each policy the runner waits until the scheduler is idle, switches it with LLM_CONFIG
//! (2 calls in flight), spawns the agents with a common start time, lets them run, and reads
//! each agent's summary line (`LLM {json}`) from LOGS. From the answers (pure code below,
//! unit-tested) it computes, over a window that leaves out the start and the end:
//! * each agent's served cost (input + 2 × output tokens, the cost VTC counts), spread over the
//!   time each call was being served, and its number of calls;
//! * the queue delay each call reported (`queue_ms`): p50 and p99;
//! * Jain's fairness index, (Σx)² / (n Σx²), of the backlogged agents' served cost (the
//!   flooder included: it is backlogged too); 1 is a perfectly even share.
//!
//! Judged `as expected` when VTC's index is at least [`JAIN_MIN`] and above FIFO's, and the
//! polite agent's p99 queue delay is lower under VTC than under FIFO. The kernel's original
//! policy and in-flight limit are restored at the end, also when something failed, and on
//! SIGINT or SIGTERM (Ctrl-C), which end the demo early.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clove_sdk::msg::{
    AgentEntry, AgentRef, LlmAgentStats, LlmSchedulerStats, LogsRequest, SpawnRequest, WaitReply,
};
use clove_sdk::Client;
use serde::Serialize;
use serde_json::{json, Value};

use super::targets::Script;
use crate::table::Table;
use crate::{as_json, Failure};

/// Its name on the command line.
pub const NAME: &str = "llm";
/// The agent's file name in `demos/`.
pub const AGENT_FILE: &str = "llm_agent.py";
const AGENT: &str = include_str!("../../../../../demos/llm_agent.py");
/// What `clove demo --list` says about it.
pub const SHOWS: &str = "agents of 10x different request sizes, a flooder and a polite agent \
     share the LLM (simulated) under fifo, then vtc";
/// ...and when it is judged `as expected`.
pub const EXPECTED_WHEN: &str = "vtc: Jain's index of the backlogged agents' served cost >= 0.9 \
     and above fifo's; the polite agent's p99 queue delay below fifo's";

/// The model every agent asks: the built-in simulated provider.
pub const MODEL: &str = "simulated:demo";
/// The scheduler's in-flight limit during the demo: small, so that the agents contend.
pub const MAX_IN_FLIGHT: u32 = 2;
/// The policies compared, in the order they run.
pub const POLICIES: [&str; 2] = ["fifo", "vtc"];
/// The lowest Jain's index VTC must reach among the backlogged agents.
pub const JAIN_MIN: f64 = 0.9;
/// How long the agents send, per policy.
const RUN: Duration = Duration::from_secs(10);
/// Left out at the start of a run (the queues fill up) ...
const WARMUP_MS: u64 = 1500;
/// ... and at its end (the agents stop; calls still being served are not reported).
const TAIL_MS: u64 = 500;
/// From the first SPAWN to the agents' common start: time for every agent to be up.
const START_DELAY: Duration = Duration::from_millis(2000);
/// How long the polite agent may wait for its last answer after the run.
const POLITE_GRACE_S: u64 = 3;
/// The reply timeout of the runner's calls.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the runner waits for the scheduler to be idle before switching its policy.
const IDLE_LIMIT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------
// The agents.

/// What an agent does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Keeps a few requests outstanding all the time.
    Backlogged,
    /// Keeps many small requests outstanding.
    Flooder,
    /// One synchronous request at a time, at a fixed period.
    Polite,
}

impl Kind {
    /// Counted among the backlogged agents for Jain's index (the flooder is backlogged too).
    pub fn backlogged(self) -> bool {
        matches!(self, Kind::Backlogged | Kind::Flooder)
    }
}

/// One agent of the demo.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Role {
    /// Its short name.
    pub label: &'static str,
    /// What it does.
    pub kind: Kind,
    /// Its prompt's size in tokens.
    pub prompt_tokens: u32,
    /// Its answers' size in tokens (THINK `max_tokens`).
    pub max_tokens: u32,
    /// Async THINKs it keeps outstanding (0: synchronous, one every `interval_ms`).
    pub outstanding: u32,
    /// The polite agent's period, ms.
    pub interval_ms: u32,
}

impl Role {
    /// What it does, in a few words: `4 outstanding × 1000 tokens`.
    pub fn describe(&self) -> String {
        match self.kind {
            Kind::Polite => format!("1 every {} ms × {}", self.interval_ms, self.max_tokens),
            _ => format!("{} outstanding × {}", self.outstanding, self.max_tokens),
        }
    }
}

const fn backlogged(label: &'static str, max_tokens: u32) -> Role {
    Role {
        label,
        kind: Kind::Backlogged,
        prompt_tokens: 100,
        max_tokens,
        outstanding: 4,
        interval_ms: 0,
    }
}

/// Every agent of a run.
pub const ROLES: &[Role] = &[
    backlogged("small", 100),
    backlogged("medium", 300),
    backlogged("large", 600),
    backlogged("huge", 1000),
    Role {
        label: "flooder",
        kind: Kind::Flooder,
        prompt_tokens: 25,
        max_tokens: 50,
        outstanding: 64,
        interval_ms: 0,
    },
    Role {
        label: "polite",
        kind: Kind::Polite,
        prompt_tokens: 25,
        max_tokens: 20,
        outstanding: 0,
        interval_ms: 200,
    },
];

/// The label of the agent whose queue delay is judged.
pub const POLITE: &str = "polite";

// ---------------------------------------------------------------------------------------
// The figures (pure).

/// One answer an agent got, times in ms since the run's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Answer {
    /// When the agent sent the request.
    pub sent_ms: i64,
    /// When the agent had the answer.
    pub done_ms: i64,
    /// How long the request waited for its turn, as the kernel reported it.
    pub queue_ms: u64,
    /// Prompt tokens.
    pub input: u64,
    /// Answer tokens.
    pub output: u64,
}

impl Answer {
    /// Its cost as VTC counts it: input + 2 × output tokens.
    pub fn cost(&self) -> u64 {
        self.input + 2 * self.output
    }

    /// The part of its cost served within `[from, to)` ms: the cost is spread evenly over the
    /// time the call was being served (after its queue wait, until the answer).
    pub fn served_within(&self, from: i64, to: i64) -> f64 {
        let done = self.done_ms;
        let start = (self.sent_ms + i64::try_from(self.queue_ms).unwrap_or(i64::MAX)).min(done);
        if done == start {
            return if (from..to).contains(&done) {
                self.cost() as f64
            } else {
                0.0
            };
        }
        let overlap = (done.min(to) - start.max(from)).max(0);
        self.cost() as f64 * overlap as f64 / (done - start) as f64
    }
}

/// What an agent reported: its `LLM {json}` line.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AgentRun {
    /// Requests sent.
    pub sent: u64,
    /// Replies that were errors.
    pub errors: u64,
    /// The first few error replies.
    pub error_samples: Vec<Value>,
    /// Its answers.
    pub answers: Vec<Answer>,
}

/// The agent's report: the last `LLM {json}` line of its output.
pub fn parse_run(log: &str) -> Result<AgentRun, String> {
    let line = log
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("LLM "))
        .ok_or_else(|| {
            let last = log.lines().last().unwrap_or("");
            format!("no `LLM {{json}}` line in its output (last line: {last:?})")
        })?;
    let v: Value = serde_json::from_str(line).map_err(|e| format!("its LLM line: {e}"))?;
    let n = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    let mut answers = Vec::new();
    for a in v
        .get("answers")
        .and_then(Value::as_array)
        .ok_or("its LLM line has no answers")?
    {
        let f = |i: usize| a.get(i).and_then(Value::as_i64);
        match (f(0), f(1), f(2), f(3), f(4)) {
            (Some(sent_ms), Some(done_ms), Some(q), Some(input), Some(output))
                if q >= 0 && input >= 0 && output >= 0 =>
            {
                answers.push(Answer {
                    sent_ms,
                    done_ms,
                    queue_ms: q as u64,
                    input: input as u64,
                    output: output as u64,
                });
            }
            _ => return Err(format!("its LLM line has a bad answer: {a}")),
        }
    }
    Ok(AgentRun {
        sent: n("sent"),
        errors: n("errors"),
        error_samples: v
            .get("error_samples")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default(),
        answers,
    })
}

/// The `p`th percentile (0 to 100) of `values` by the nearest-rank method: the smallest
/// value with at least p% of the values at or below it. `None` for no values.
pub fn percentile(values: &[u64], p: f64) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_unstable();
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    Some(v[rank.clamp(1, v.len()) - 1])
}

/// Jain's fairness index of `xs`: (Σx)² / (n Σx²), from 1/n (one gets everything) to 1
/// (all equal). `None` when there is nothing to share (no values, or all zero).
pub fn jain(xs: &[f64]) -> Option<f64> {
    let sum: f64 = xs.iter().sum();
    let squares: f64 = xs.iter().map(|x| x * x).sum();
    if xs.is_empty() || squares <= 0.0 {
        return None;
    }
    Some(sum * sum / (xs.len() as f64 * squares))
}

/// The window the figures are measured over, ms since the run's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Window {
    /// Start (inclusive).
    pub from_ms: i64,
    /// End (exclusive).
    pub to_ms: i64,
}

/// What the kernel's LLM_STATS said about an agent at the end of the window.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct KernelFigures {
    /// Calls answered so far.
    pub calls: u64,
    /// The scheduler's service counter.
    pub service: f64,
    /// Its scheduling weight.
    pub weight: f64,
    /// Requests waiting then.
    pub queued: u32,
}

impl From<&LlmAgentStats> for KernelFigures {
    fn from(s: &LlmAgentStats) -> Self {
        KernelFigures {
            calls: s.calls,
            service: s.service,
            weight: s.weight,
            queued: s.queued,
        }
    }
}

/// One agent's figures in one run.
#[derive(Debug, Clone, Serialize)]
pub struct AgentFigures {
    /// Its short name.
    pub label: &'static str,
    /// What it does.
    pub kind: Kind,
    /// What it does, in a few words.
    pub role: String,
    /// Its agent id (0: not spawned).
    pub agent_id: u32,
    /// Calls it was answered within the window (by answer time).
    pub calls: usize,
    /// Cost served within the window, tokens (input + 2 × output).
    pub served: f64,
    /// Its part of everything served within the window, 0 to 1.
    pub share: f64,
    /// Queue delay of the requests it sent within the window, ms: median ...
    pub queue_p50_ms: Option<u64>,
    /// ... 99th percentile ...
    pub queue_p99_ms: Option<u64>,
    /// ... and longest.
    pub queue_max_ms: Option<u64>,
    /// Requests it sent over the whole run.
    pub sent: u64,
    /// Error replies it got.
    pub errors: u64,
    /// What the kernel said about it (LLM_STATS), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel: Option<KernelFigures>,
    /// Why its figures are missing or doubtful; absent when all is well.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// The figures of `role` from its run (or why there is none) within `window`; `share` is
/// filled in by [`phase_figures`].
pub fn agent_figures(role: &Role, run: &Result<AgentRun, String>, window: Window) -> AgentFigures {
    let mut f = AgentFigures {
        label: role.label,
        kind: role.kind,
        role: role.describe(),
        agent_id: 0,
        calls: 0,
        served: 0.0,
        share: 0.0,
        queue_p50_ms: None,
        queue_p99_ms: None,
        queue_max_ms: None,
        sent: 0,
        errors: 0,
        kernel: None,
        problem: None,
    };
    let run = match run {
        Ok(run) => run,
        Err(why) => {
            f.problem = Some(why.clone());
            return f;
        }
    };
    let (from, to) = (window.from_ms, window.to_ms);
    f.sent = run.sent;
    f.errors = run.errors;
    f.calls = run
        .answers
        .iter()
        .filter(|a| (from..to).contains(&a.done_ms))
        .count();
    f.served = run.answers.iter().map(|a| a.served_within(from, to)).sum();
    let waits: Vec<u64> = run
        .answers
        .iter()
        .filter(|a| (from..to).contains(&a.sent_ms))
        .map(|a| a.queue_ms)
        .collect();
    f.queue_p50_ms = percentile(&waits, 50.0);
    f.queue_p99_ms = percentile(&waits, 99.0);
    f.queue_max_ms = waits.iter().copied().max();
    if f.calls == 0 && f.served == 0.0 {
        f.problem = Some("no answer within the measured window".into());
    } else if run.errors > 0 {
        let sample = run
            .error_samples
            .first()
            .map(Value::to_string)
            .unwrap_or_default();
        f.problem = Some(format!("{} error repl(ies), e.g. {sample}", run.errors));
    }
    f
}

/// Jain's index of the backlogged agents' served cost, and the shares of every agent.
pub fn phase_figures(agents: &mut [AgentFigures]) -> Option<f64> {
    let total: f64 = agents.iter().map(|a| a.served).sum();
    for a in agents.iter_mut() {
        a.share = if total > 0.0 { a.served / total } else { 0.0 };
    }
    let served: Vec<f64> = agents
        .iter()
        .filter(|a| a.kind.backlogged())
        .map(|a| a.served)
        .collect();
    jain(&served)
}

/// One policy's run.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseReport {
    /// `fifo` or `vtc`.
    pub policy: &'static str,
    /// The in-flight limit it ran with.
    pub max_in_flight: u32,
    /// What LLM_STATS said of the scheduler at the end of the window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduler: Option<LlmSchedulerStats>,
    /// The window the figures cover.
    pub window: Window,
    /// Every agent's figures.
    pub agents: Vec<AgentFigures>,
    /// Jain's index of the backlogged agents' served cost (`None`: nothing was served).
    pub jain_backlogged: Option<f64>,
    /// The polite agent's p99 queue delay, ms.
    pub polite_p99_ms: Option<u64>,
    /// Cost served within the window, all agents.
    pub total_served: f64,
    /// Why the run went wrong, when it did (spawn failed, an agent reported nothing, ...).
    pub problems: Vec<String>,
    /// How long spawning the agents took (they start together [`START_DELAY`] after the
    /// first SPAWN).
    pub spawn_ms: u64,
    /// How long it took, setup and cleanup included.
    pub duration_ms: u64,
}

impl PhaseReport {
    /// A run of `policy` from its agents' figures (and the problems met on the way).
    pub fn new(
        policy: &'static str,
        window: Window,
        mut agents: Vec<AgentFigures>,
        mut problems: Vec<String>,
    ) -> PhaseReport {
        let jain_backlogged = phase_figures(&mut agents);
        for a in &agents {
            if let Some(p) = &a.problem {
                problems.push(format!("{}: {p}", a.label));
            }
        }
        PhaseReport {
            policy,
            max_in_flight: MAX_IN_FLIGHT,
            scheduler: None,
            window,
            polite_p99_ms: agents
                .iter()
                .find(|a| a.label == POLITE)
                .and_then(|a| a.queue_p99_ms),
            total_served: agents.iter().map(|a| a.served).sum(),
            agents,
            jain_backlogged,
            problems,
            spawn_ms: 0,
            duration_ms: 0,
        }
    }
}

/// One check of the verdict, with its evidence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    /// What is checked.
    pub check: String,
    /// It held.
    pub ok: bool,
    /// What was seen.
    pub evidence: String,
}

impl Check {
    fn new(check: &str, ok: bool, evidence: impl Into<String>) -> Check {
        Check {
            check: check.to_owned(),
            ok,
            evidence: evidence.into(),
        }
    }
}

/// `0.987`, or `-` when unknown.
fn index(j: Option<f64>) -> String {
    j.map_or_else(|| "-".into(), |j| format!("{j:.3}"))
}

/// `123 ms`, or `-` when unknown.
fn ms(v: Option<u64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v} ms"))
}

/// The checks of the verdict: both runs clean, VTC's index at least [`JAIN_MIN`] and above
/// FIFO's, the polite agent's p99 queue delay lower under VTC.
pub fn judge(fifo: &PhaseReport, vtc: &PhaseReport) -> Vec<Check> {
    let mut checks = Vec::new();
    for p in [fifo, vtc] {
        checks.push(Check::new(
            &format!("{}: every agent ran and reported", p.policy),
            p.problems.is_empty(),
            if p.problems.is_empty() {
                format!(
                    "{} agents, {:.0} tokens served in the window",
                    p.agents.len(),
                    p.total_served
                )
            } else {
                // The first is enough here: every problem is listed under its run's table.
                let more = match p.problems.len() {
                    1 => String::new(),
                    n => format!(" (and {} more problem(s))", n - 1),
                };
                format!("{}{more}", p.problems[0])
            },
        ));
    }
    let (jf, jv) = (fifo.jain_backlogged, vtc.jain_backlogged);
    checks.push(Check::new(
        &format!("vtc: Jain's index of the backlogged >= {JAIN_MIN}"),
        jv.is_some_and(|j| j >= JAIN_MIN),
        format!("vtc {}", index(jv)),
    ));
    checks.push(Check::new(
        "vtc shares more fairly than fifo",
        matches!((jv, jf), (Some(v), Some(f)) if v > f),
        format!("Jain's index: vtc {} vs fifo {}", index(jv), index(jf)),
    ));
    let (pf, pv) = (fifo.polite_p99_ms, vtc.polite_p99_ms);
    checks.push(Check::new(
        "the polite agent waits less under vtc",
        matches!((pv, pf), (Some(v), Some(f)) if v < f),
        format!(
            "{POLITE}'s p99 queue delay: vtc {} vs fifo {}",
            ms(pv),
            ms(pf)
        ),
    ));
    checks
}

/// `as expected`, or `UNEXPECTED: <first failed check>: <its evidence>`.
pub fn verdict(checks: &[Check]) -> String {
    let failed: Vec<&Check> = checks.iter().filter(|c| !c.ok).collect();
    match failed.first() {
        None if checks.is_empty() => "UNEXPECTED: nothing was checked".into(),
        None => "as expected".into(),
        Some(c) => {
            let more = match failed.len() {
                1 => String::new(),
                n => format!(" (and {} more failed check(s))", n - 1),
            };
            format!("UNEXPECTED: {}: {}{more}", c.check, c.evidence)
        }
    }
}

// ---------------------------------------------------------------------------------------
// The report.

/// The whole report (`--json`).
#[derive(Debug, Serialize)]
pub struct Report {
    /// The model the agents asked.
    pub model: &'static str,
    /// The policies' runs, in the order they ran.
    pub phases: Vec<PhaseReport>,
    /// The checks, with their evidence.
    pub checks: Vec<Check>,
    /// Every check held.
    pub as_expected: bool,
    /// `as expected` or `UNEXPECTED: why`.
    pub verdict: String,
    /// The scheduler as the demo found it ...
    pub original: LlmSchedulerStats,
    /// ... and as it left it (`None`: restoring it failed, see `restore_error`).
    pub restored: Option<LlmSchedulerStats>,
    /// Why restoring the scheduler failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restore_error: Option<String>,
    /// How long the demo took.
    pub duration_ms: u64,
}

/// One run's table: a row per agent, then Jain's index.
pub fn phase_table(p: &PhaseReport) -> String {
    let mut text = format!(
        "== {} ({} in flight): figures over {:.1}-{:.1} s of the run\n",
        p.policy,
        p.max_in_flight,
        p.window.from_ms as f64 / 1000.0,
        p.window.to_ms as f64 / 1000.0
    );
    let mut t = Table::new(&[
        "  AGENT",
        "KIND",
        "REQUESTS (TOKENS)",
        "CALLS",
        "SERVED",
        "SHARE",
        "QUEUE P50",
        "QUEUE P99",
        "ERRORS",
    ]);
    for a in &p.agents {
        t.push(vec![
            format!("  {}", a.label),
            match a.kind {
                Kind::Backlogged => "backlogged",
                Kind::Flooder => "flooder",
                Kind::Polite => "polite",
            }
            .into(),
            a.role.clone(),
            a.calls.to_string(),
            format!("{:.0}", a.served),
            format!("{:.1}%", a.share * 100.0),
            ms(a.queue_p50_ms),
            ms(a.queue_p99_ms),
            a.errors.to_string(),
        ]);
    }
    text.push_str(&t.render());
    let backlogged: Vec<&str> = p
        .agents
        .iter()
        .filter(|a| a.kind.backlogged())
        .map(|a| a.label)
        .collect();
    text.push_str(&format!(
        "  Jain's index of served cost among the backlogged ({}): {}\n",
        backlogged.join(", "),
        index(p.jain_backlogged)
    ));
    if let Some(s) = &p.scheduler {
        text.push_str(&format!(
            "  kernel (LLM_STATS at the window's end): policy {}, {} in flight, {} queued\n",
            s.policy, s.in_flight, s.queued
        ));
    }
    for problem in &p.problems {
        text.push_str(&format!("  problem: {problem}\n"));
    }
    text
}

/// The closing part: the checks, the scheduler restored, the verdict.
pub fn closing(r: &Report) -> String {
    let mut t = Table::new(&["CHECK", "RESULT", "EVIDENCE"]);
    for c in &r.checks {
        t.push(vec![
            c.check.clone(),
            if c.ok { "ok" } else { "UNEXPECTED" }.into(),
            c.evidence.clone(),
        ]);
    }
    let mut text = t.render();
    match (&r.restored, &r.restore_error) {
        (Some(s), _) => text.push_str(&format!(
            "scheduler restored: {}, {} in flight\n",
            s.policy, s.max_in_flight
        )),
        (None, why) => text.push_str(&format!(
            "scheduler NOT restored (was {}, {} in flight): {}\n",
            r.original.policy,
            r.original.max_in_flight,
            why.as_deref().unwrap_or("unknown")
        )),
    }
    text.push_str(&format!("{NAME}: {}\n", r.verdict));
    text
}

// ---------------------------------------------------------------------------------------
// The runner.

/// Set by SIGINT or SIGTERM while the demo runs: it then stops early, but still kills its
/// agents and restores the scheduler.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// SIGINT and SIGTERM set [`INTERRUPTED`] instead of ending the process while this lives;
/// the previous handlers come back when it is dropped.
struct Interruptible {
    previous: Vec<(libc::c_int, libc::sigaction)>,
}

impl Interruptible {
    fn install() -> Interruptible {
        let mut previous = Vec::new();
        for sig in [libc::SIGINT, libc::SIGTERM] {
            // SAFETY: `act` is fully initialised (zeroed, then the handler and an empty mask
            // set) and `old` is valid for writes; the handler only stores to an atomic, which
            // is async-signal-safe.
            unsafe {
                let mut act: libc::sigaction = std::mem::zeroed();
                act.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
                libc::sigemptyset(&mut act.sa_mask);
                let mut old: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(sig, &act, &mut old) == 0 {
                    previous.push((sig, old));
                }
            }
        }
        Interruptible { previous }
    }
}

impl Drop for Interruptible {
    fn drop(&mut self) {
        for (sig, old) in &self.previous {
            // SAFETY: `old` is the action sigaction returned for `sig`, unchanged.
            unsafe {
                libc::sigaction(*sig, old, std::ptr::null_mut());
            }
        }
    }
}

/// Why a run stopped early on a signal.
const INTERRUPTED_WHY: &str = "interrupted (SIGINT or SIGTERM)";

fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// `clove demo llm`.
pub fn run(
    client: &mut Client,
    out: &mut impl Write,
    json: bool,
    demos_dir: Option<&Path>,
) -> Result<(), Failure> {
    let what = format!("demo {NAME}");
    let script = Script::prepare(demos_dir, AGENT_FILE, AGENT, "clove-llm-demo")
        .map_err(|why| Failure::other(&what, why))?;
    client
        .set_timeout(Some(CALL_TIMEOUT))
        .map_err(|e| Failure::call(&what, e))?;
    let original = client
        .llm_config(None, None)
        .map_err(|e| Failure::call(format!("{what}: read the LLM scheduler"), e))?
        .scheduler;
    let started = Instant::now();
    let _signals = Interruptible::install();
    if !json {
        writeln!(
            out,
            "clove demo llm: {} agents share the kernel's LLM ({MODEL}, {MAX_IN_FLIGHT} calls in \
             flight), {} s under each of {} (not an attack: see `clove demo --list`)\n\
             the scheduler was {}, {} in flight; it is restored at the end\n",
            ROLES.len(),
            RUN.as_secs(),
            POLICIES.join(", then "),
            original.policy,
            original.max_in_flight
        )?;
        out.flush()?;
    }
    let mut runner = Runner {
        client,
        script: script.path.clone(),
        tag: std::process::id().to_string(),
        live: Vec::new(),
    };
    let mut phases = Vec::new();
    let mut failure = None;
    for policy in POLICIES {
        if interrupted() {
            failure = Some(INTERRUPTED_WHY.to_owned());
            break;
        }
        let p = runner.phase(policy);
        if !json {
            writeln!(out, "{}", phase_table(&p))?;
            out.flush()?;
        }
        phases.push(p);
        if let Some(why) = phases.last().and_then(|p| p.problems.first()) {
            if why.starts_with("switch the scheduler") {
                // The kernel would not let the demo switch: the next run cannot go either.
                failure = Some(why.clone());
                break;
            }
        }
    }
    let (restored, restore_error) = match runner.restore(&original) {
        Ok(s) => (Some(s), None),
        Err(e) => (None, Some(e)),
    };
    let checks = match (phases.first(), phases.get(1)) {
        (Some(f), Some(v)) => judge(f, v),
        _ => vec![Check::new(
            "both policies ran",
            false,
            failure.unwrap_or_else(|| "a run is missing".into()),
        )],
    };
    let mut checks = checks;
    checks.push(Check::new(
        "the scheduler is restored",
        restored.is_some(),
        match (&restored, &restore_error) {
            (Some(s), _) => format!("{}, {} in flight", s.policy, s.max_in_flight),
            (None, e) => e.clone().unwrap_or_default(),
        },
    ));
    let verdict = verdict(&checks);
    let report = Report {
        model: MODEL,
        phases,
        as_expected: verdict == "as expected",
        verdict,
        checks,
        original,
        restored,
        restore_error,
        duration_ms: started.elapsed().as_millis() as u64,
    };
    if json {
        writeln!(out, "{}", as_json(&report))?;
    } else {
        out.write_all(closing(&report).as_bytes())?;
    }
    out.flush()?;
    if report.as_expected {
        return Ok(());
    }
    Err(Failure::other(what, report.verdict))
}

fn epoch_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

struct Runner<'c> {
    client: &'c mut Client,
    script: String,
    tag: String,
    /// Agents spawned and not yet known to be gone.
    live: Vec<u32>,
}

/// One agent of a run, after it.
struct Ran {
    role: &'static Role,
    id: u32,
    /// Its report, or why there is none.
    run: Result<AgentRun, String>,
    /// LLM_STATS's row for it at the window's end.
    kernel: Option<KernelFigures>,
}

/// The window the figures cover.
fn window() -> Window {
    Window {
        from_ms: WARMUP_MS as i64,
        to_ms: RUN.as_millis() as i64 - TAIL_MS as i64,
    }
}

impl Runner<'_> {
    /// One run under `policy`; whatever goes wrong is in the report's `problems`. Every agent
    /// it spawned is gone when it returns.
    fn phase(&mut self, policy: &'static str) -> PhaseReport {
        let began = Instant::now();
        let mut problems = Vec::new();
        let mut scheduler = None;
        let mut spawn_ms = 0;
        let mut agents = Vec::new();
        match self.attempt(policy, &mut scheduler, &mut spawn_ms) {
            Ok(runs) => {
                for r in runs {
                    let mut f = agent_figures(r.role, &r.run, window());
                    f.agent_id = r.id;
                    f.kernel = r.kernel;
                    agents.push(f);
                }
            }
            Err(why) => problems.push(why),
        }
        self.cleanup(&mut problems);
        let mut p = PhaseReport::new(policy, window(), agents, problems);
        p.scheduler = scheduler;
        p.spawn_ms = spawn_ms;
        p.duration_ms = began.elapsed().as_millis() as u64;
        p
    }

    /// Switches the scheduler, spawns the agents, lets them run and reads what they report.
    fn attempt(
        &mut self,
        policy: &'static str,
        scheduler: &mut Option<LlmSchedulerStats>,
        spawn_ms: &mut u64,
    ) -> Result<Vec<Ran>, String> {
        self.switch(policy, MAX_IN_FLIGHT)
            .map_err(|e| format!("switch the scheduler to {policy}: {e}"))?;
        if interrupted() {
            return Err(INTERRUPTED_WHY.into());
        }
        let start_at = epoch_secs() + START_DELAY.as_secs_f64();
        let spawning = Instant::now();
        let start = spawning + START_DELAY;
        let mut ids = Vec::new();
        for role in ROLES {
            let name = format!("demo-llm-{policy}-{}-{}", role.label, self.tag);
            let arg = json!({
                "label": role.label,
                "model": MODEL,
                "prompt_tokens": role.prompt_tokens,
                "max_tokens": role.max_tokens,
                "outstanding": role.outstanding,
                "interval_ms": role.interval_ms,
                "start_at": start_at,
                "duration_s": RUN.as_secs_f64(),
                "grace_s": POLITE_GRACE_S,
            });
            let mut req = SpawnRequest::new(name.clone(), self.script.clone());
            req.args = vec![arg.to_string()];
            let r = self
                .client
                .spawn(&req)
                .map_err(|e| format!("spawn {name}: {e}"))?;
            self.live.push(r.id);
            ids.push((role, r.id));
        }
        *spawn_ms = spawning.elapsed().as_millis() as u64;
        if Instant::now() > start {
            return Err(format!(
                "spawning the agents took longer than the {} ms allowed before they start",
                START_DELAY.as_millis()
            ));
        }
        // LLM_STATS at the window's end: the scheduler's and the kernel's view of each agent.
        // Agents that are all gone before then (a broken script) need no waiting for.
        let window_end = start + Duration::from_millis(window().to_ms as u64);
        while Instant::now() < window_end {
            if interrupted() {
                return Err(INTERRUPTED_WHY.into());
            }
            std::thread::sleep(
                window_end
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(250)),
            );
            let ours = |l: &[AgentEntry]| l.iter().any(|r| ids.iter().any(|(_, id)| *id == r.id));
            if self.client.list().is_ok_and(|l| !ours(&l)) {
                break;
            }
        }
        let stats = self.client.llm_stats(None).ok();
        *scheduler = stats.as_ref().map(|s| s.scheduler.clone());
        let end = start + RUN + Duration::from_secs(POLITE_GRACE_S + 5);
        let mut runs = Vec::new();
        for (role, id) in ids {
            let run = self.wait_and_read(id, end);
            let kernel = stats.as_ref().and_then(|s| {
                s.agents
                    .iter()
                    .find(|a| a.agent_id == id)
                    .map(KernelFigures::from)
            });
            runs.push(Ran {
                role,
                id,
                run,
                kernel,
            });
        }
        Ok(runs)
    }

    /// Waits (until `end` at most) for agent `id` to finish, then reads its report.
    fn wait_and_read(&mut self, id: u32, end: Instant) -> Result<AgentRun, String> {
        let left = end
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(100));
        let wait: WaitReply = self
            .client
            .wait(AgentRef::Id(id), Some(left))
            .map_err(|e| format!("wait for agent {id}: {e}"))?;
        if !wait.exited {
            return Err(format!(
                "agent {id} was still running {} s after the run",
                POLITE_GRACE_S + 5
            ));
        }
        self.live.retain(|x| *x != id);
        let log = self.read_log(id)?;
        let run = parse_run(&log);
        match (&run, wait.exit_code) {
            (Err(why), _) => Err(format!(
                "{why}; it {}",
                wait.reason.as_deref().unwrap_or("exited")
            )),
            (Ok(_), Some(0)) => run,
            (Ok(_), _) => Err(format!(
                "it {}",
                wait.reason.as_deref().unwrap_or("exited abnormally")
            )),
        }
    }

    /// The whole output of an exited agent.
    fn read_log(&mut self, id: u32) -> Result<String, String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut text = String::new();
        let mut offset = 0;
        loop {
            let r = self
                .client
                .logs(&LogsRequest {
                    id: Some(id),
                    offset: Some(offset),
                    wait_ms: Some(200),
                    ..LogsRequest::default()
                })
                .map_err(|e| format!("logs of agent {id}: {e}"))?;
            text.push_str(&r.text);
            offset = r.next_offset;
            if (!r.running && r.text.is_empty()) || Instant::now() > deadline {
                return Ok(text);
            }
        }
    }

    /// Kills whatever this run left running (the agents end on their own).
    fn cleanup(&mut self, problems: &mut Vec<String>) {
        // A call that failed may have broken the connection: the cleanup needs a good one.
        if matches!(self.client.hello(), Err(e) if e.breaks_connection()) {
            let socket = self.client.socket_path().to_path_buf();
            let codec = self.client.codec();
            if let Ok(c) = Client::connect(Some(&socket)) {
                *self.client = c.with_codec(codec);
                let _ = self.client.set_timeout(Some(CALL_TIMEOUT));
            }
        }
        for id in std::mem::take(&mut self.live) {
            // An agent that has already exited answers "has exited": nothing left to do.
            if self.client.kill(AgentRef::Id(id)).is_ok() {
                problems.push(format!("agent {id} had to be killed"));
            }
        }
    }

    /// Waits until the scheduler has nothing queued or in flight, then switches it; a
    /// `conflict` (someone's THINK came in between) is tried again until [`IDLE_LIMIT`].
    fn switch(&mut self, policy: &str, max_in_flight: u32) -> Result<LlmSchedulerStats, String> {
        let deadline = Instant::now() + IDLE_LIMIT;
        loop {
            let s = self
                .client
                .llm_stats(None)
                .map_err(|e| format!("LLM_STATS: {e}"))?
                .scheduler;
            if s.in_flight == 0 && s.queued == 0 {
                match self.client.llm_config(Some(policy), Some(max_in_flight)) {
                    Ok(r) => return Ok(r.scheduler),
                    Err(e) if e.to_string().contains("conflict") => {}
                    Err(e) => return Err(format!("LLM_CONFIG: {e}")),
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the scheduler was not idle within {} s ({} in flight, {} queued)",
                    IDLE_LIMIT.as_secs(),
                    s.in_flight,
                    s.queued
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Puts the scheduler back as the demo found it.
    fn restore(&mut self, original: &LlmSchedulerStats) -> Result<LlmSchedulerStats, String> {
        let mut problems = Vec::new();
        self.cleanup(&mut problems);
        self.switch(&original.policy, original.max_in_flight)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(sent_ms: i64, done_ms: i64, queue_ms: u64, input: u64, output: u64) -> Answer {
        Answer {
            sent_ms,
            done_ms,
            queue_ms,
            input,
            output,
        }
    }

    #[test]
    fn the_cost_is_spread_over_the_time_served() {
        // Waited 100 ms, served from 200 to 400 ms: cost 100 + 2 × 450 = 1000.
        let a = answer(100, 400, 100, 100, 450);
        assert_eq!(a.cost(), 1000);
        assert_eq!(a.served_within(0, 1000), 1000.0);
        assert_eq!(a.served_within(300, 1000), 500.0);
        assert_eq!(a.served_within(0, 250), 250.0);
        assert_eq!(a.served_within(400, 1000), 0.0);
        // An answer served in no time counts where it lands.
        let b = answer(10, 10, 0, 1, 1);
        assert_eq!(b.served_within(0, 11), 3.0);
        assert_eq!(b.served_within(11, 20), 0.0);
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<u64> = (1..=100).rev().collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&v, 100.0), Some(100));
        assert_eq!(percentile(&[7], 99.0), Some(7));
        assert_eq!(percentile(&[3, 1000], 50.0), Some(3));
        assert_eq!(percentile(&[3, 1000], 99.0), Some(1000));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn jains_index_is_one_when_even_and_one_over_n_when_one_takes_all() {
        assert_eq!(jain(&[5.0, 5.0, 5.0, 5.0]), Some(1.0));
        assert_eq!(jain(&[8.0, 0.0, 0.0, 0.0]), Some(0.25));
        let j = jain(&[1.0, 3.0]).unwrap();
        assert!((j - 0.8).abs() < 1e-9, "{j}");
        assert_eq!(jain(&[]), None);
        assert_eq!(jain(&[0.0, 0.0]), None);
    }

    #[test]
    fn the_agents_line_is_parsed_and_bad_lines_are_refused() {
        let log = "noise\nLLM {\"label\":\"x\",\"sent\":3,\"errors\":1,\
                   \"error_samples\":[{\"success\":false}],\"answers\":[[0,20,5,25,50]]}\n";
        let run = parse_run(log).unwrap();
        assert_eq!((run.sent, run.errors), (3, 1));
        assert_eq!(run.answers, vec![answer(0, 20, 5, 25, 50)]);
        assert!(parse_run("Traceback ...\nValueError\n")
            .unwrap_err()
            .contains("last line: \"ValueError\""));
        assert!(parse_run("LLM {\"answers\":[[1,2]]}")
            .unwrap_err()
            .contains("bad answer"));
        assert!(parse_run("LLM {not json").is_err());
    }

    /// A run where each backlogged agent got `served` tokens evenly over 0..10 s, in answers
    /// of 100 tokens each, and the polite agent waited `polite_wait` ms per request.
    fn phase(policy: &'static str, served: [u64; 5], polite_wait: u64) -> PhaseReport {
        let w = Window {
            from_ms: 0,
            to_ms: 10_000,
        };
        let mut agents = Vec::new();
        for (role, total) in ROLES.iter().zip(served.iter().copied().chain([1000])) {
            let n = (total / 100).max(1) as i64;
            let step = 10_000 / n;
            let wait = if role.label == POLITE {
                polite_wait
            } else {
                10
            };
            let answers = (0..n)
                .map(|i| answer(i * step, (i + 1) * step, wait, 0, 50))
                .collect();
            let run = Ok(AgentRun {
                sent: n as u64,
                answers,
                ..AgentRun::default()
            });
            agents.push(agent_figures(role, &run, w));
        }
        PhaseReport::new(policy, w, agents, Vec::new())
    }

    #[test]
    fn figures_per_agent_and_for_the_run() {
        let p = phase("fifo", [1000, 1000, 1000, 1000, 6000], 700);
        let flooder = p.agents.iter().find(|a| a.label == "flooder").unwrap();
        assert_eq!(flooder.calls, 60);
        assert!((flooder.served - 6000.0).abs() < 1e-6, "{flooder:?}");
        // 6000 of the 11 000 served, the polite agent's 1000 included.
        assert!((flooder.share - 6.0 / 11.0).abs() < 1e-9, "{flooder:?}");
        assert_eq!(flooder.queue_p99_ms, Some(10));
        assert_eq!(p.polite_p99_ms, Some(700));
        // (10000)² / (5 × (4 × 1000² + 6000²)) = 0.5
        let j = p.jain_backlogged.unwrap();
        assert!((j - 0.5).abs() < 1e-9, "{j}");
        assert!(p.problems.is_empty(), "{:?}", p.problems);
        let table = phase_table(&p);
        assert!(table.starts_with("== fifo (2 in flight)"), "{table}");
        assert!(table.contains("  flooder  flooder"), "{table}");
        assert!(table.contains("among the backlogged (small, medium, large, huge, flooder): 0.500"));
    }

    #[test]
    fn vtc_fair_and_kind_to_the_polite_agent_is_as_expected() {
        let fifo = phase("fifo", [1000, 1000, 1000, 1000, 6000], 700);
        let vtc = phase("vtc", [2000, 2000, 2000, 2000, 2100], 40);
        let checks = judge(&fifo, &vtc);
        assert_eq!(verdict(&checks), "as expected", "{checks:#?}");
    }

    #[test]
    fn an_unfair_vtc_or_a_waiting_polite_agent_is_unexpected() {
        let fifo = phase("fifo", [1000, 1000, 1000, 1000, 6000], 700);
        // What the FIFO stand-in gives under either name: the same unfair shares.
        let same = phase("vtc", [1000, 1000, 1000, 1000, 6000], 650);
        let v = verdict(&judge(&fifo, &same));
        assert!(
            v.starts_with("UNEXPECTED: vtc: Jain's index of the backlogged >= 0.9: vtc 0.500"),
            "{v}"
        );
        assert!(v.ends_with("(and 1 more failed check(s))"), "{v}");
        // Fair, but the polite agent waits as long as under FIFO.
        let slow = phase("vtc", [2000, 2000, 2000, 2000, 2000], 700);
        let v = verdict(&judge(&fifo, &slow));
        assert_eq!(
            v,
            "UNEXPECTED: the polite agent waits less under vtc: \
             polite's p99 queue delay: vtc 700 ms vs fifo 700 ms"
        );
        // Fair enough, but no fairer than FIFO.
        let even = phase("fifo", [2000, 2000, 2000, 2000, 2000], 700);
        let v = verdict(&judge(&even, &slow));
        assert!(v.contains("vtc shares more fairly than fifo"), "{v}");
    }

    #[test]
    fn a_missing_agent_report_is_unexpected() {
        let fifo = phase("fifo", [1000, 1000, 1000, 1000, 6000], 700);
        let w = fifo.window;
        let mut agents: Vec<AgentFigures> = ROLES
            .iter()
            .map(|r| agent_figures(r, &Err("no `LLM {json}` line".into()), w))
            .collect();
        agents[0] = fifo.agents[0].clone();
        let broken = PhaseReport::new("vtc", w, agents, Vec::new());
        assert_eq!(broken.problems.len(), ROLES.len() - 1);
        let checks = judge(&fifo, &broken);
        assert!(!checks[1].ok, "{checks:#?}");
        assert!(
            verdict(&checks).starts_with(
                "UNEXPECTED: vtc: every agent ran and reported: medium: no `LLM {json}` line"
            ),
            "{checks:#?}"
        );
        assert_eq!(verdict(&[]), "UNEXPECTED: nothing was checked");
    }
}
