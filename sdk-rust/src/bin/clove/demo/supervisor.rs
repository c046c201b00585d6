//! `clove demo supervisor`: crash-prone workers in supervisor groups, judged from the kernel's
//! events. Not an attack on the sandbox (it is not part of `clove demo all`): it shows what the
//! kernel's supervision does.
//!
//! Four scenarios, each in groups of its own (names end in the CLI's pid):
//! 1. `one_for_one`: three workers, one of which crashes about 1 s into every run. It is
//!    restarted after a backoff that doubles (200, 400, 800 ms); its siblings keep running.
//! 2. `one_for_all`: three workers, the middle one crashes once. The other two are stopped in
//!    reverse start order, then all three start again in start order.
//! 3. `escalation`: a group allowing 2 restarts in 10 s whose worker keeps crashing: the
//!    group gives up (GROUP_ESCALATED `gave_up: true`), its agents exit for good with
//!    AGENT_ESCALATED, and the group is gone.
//! 4. `nested`: a child group allowing 1 restart escalates to its parent, which restarts the
//!    child group's workers and leaves its own other worker alone.
//!
//! The runner subscribes to the lifecycle events on a connection of its own and prints them
//! as a timeline while a scenario runs. At its end it takes LIST and GROUP_LIST, judges the
//! scenario from that evidence (the rules below are pure, and unit-tested with both
//! outcomes), then stops every group it made with GROUP_STOP, error or not, and checks that
//! no agent of the scenario is left.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clove_sdk::msg::{
    AgentEntry, AgentRef, Event, GroupCreateRequest, GroupInfo, GroupStrategy, RestartPolicy,
    SpawnRequest,
};
use clove_sdk::Client;
use serde::Serialize;
use serde_json::Value;

use super::targets::Script;
use crate::table::Table;
use crate::{as_json, Failure};

/// Its name on the command line.
pub const NAME: &str = "supervisor";
/// The worker's file name in `demos/`.
pub const WORKER_FILE: &str = "supervised_worker.py";
const WORKER: &str = include_str!("../../../../../demos/supervised_worker.py");
/// What `clove demo --list` says about it.
pub const SHOWS: &str =
    "crash-prone workers under one_for_one and one_for_all, backoff, escalation (nested too)";
/// ...and when it is judged `as expected`.
pub const EXPECTED_WHEN: &str = "events, LIST and GROUP_LIST show the strategy's restarts, \
     doubling backoffs, stop/start order and escalation";

/// The event types the runner follows.
const EVENT_TYPES: [&str; 5] = [
    "AGENT_SPAWNED",
    "AGENT_EXITED",
    "AGENT_RESTARTING",
    "AGENT_ESCALATED",
    "GROUP_ESCALATED",
];
/// The reply timeout of the runner's calls: GROUP_STOP replies once the tree is down, which
/// takes a stuck worker's whole grace.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a scenario waits after its last expected event, so LIST and GROUP_LIST settle.
const SETTLE: Duration = Duration::from_millis(300);
/// Tolerance of the "waited its backoff" check: event timestamps are whole ms, and the
/// restart is scheduled a moment before its events are published.
const BACKOFF_SLACK_MS: u64 = 25;

// ---------------------------------------------------------------------------------------
// The scenarios.

/// A group of a scenario.
#[derive(Debug, Clone, Copy)]
pub struct GroupSpec {
    /// Its short name (the real one adds the scenario and the pid).
    pub label: &'static str,
    /// Its strategy.
    pub strategy: GroupStrategy,
    /// Restarts allowed within `period`.
    pub intensity: u32,
    /// Seconds.
    pub period: f64,
    /// Its parent's label.
    pub parent: Option<&'static str>,
}

/// A worker of a scenario, in start order.
#[derive(Debug, Clone, Copy)]
pub struct WorkerSpec {
    /// Its short name.
    pub label: &'static str,
    /// The label of the group it joins.
    pub group: &'static str,
    /// The worker's plan (see demos/supervised_worker.py): `run`, `crash:1`, `crash:1,run`.
    pub plan: &'static str,
    /// Its restart type.
    pub policy: RestartPolicy,
    /// `restart_backoff_ms`.
    pub backoff_ms: u64,
}

/// One scenario: its groups (parents first), its workers, and how long it may take.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    /// `one_for_one`, ...
    pub name: &'static str,
    /// What it shows, in a line.
    pub title: &'static str,
    /// Its groups, parents before children.
    pub groups: &'static [GroupSpec],
    /// Its workers in start order.
    pub workers: &'static [WorkerSpec],
    /// The longest it may run before it is judged with what was seen.
    pub limit: Duration,
}

/// The crash-prone worker's backoff in `one_for_one`, and how many restarts to watch.
pub const ONE_FOR_ONE_BACKOFF: u64 = 200;
pub const ONE_FOR_ONE_RESTARTS: usize = 3;
/// The escalation scenario's intensity.
pub const ESCALATION_INTENSITY: u32 = 2;

const fn group(
    label: &'static str,
    strategy: GroupStrategy,
    intensity: u32,
    period: f64,
    parent: Option<&'static str>,
) -> GroupSpec {
    GroupSpec {
        label,
        strategy,
        intensity,
        period,
        parent,
    }
}

const fn worker(
    label: &'static str,
    group: &'static str,
    plan: &'static str,
    policy: RestartPolicy,
    backoff_ms: u64,
) -> WorkerSpec {
    WorkerSpec {
        label,
        group,
        plan,
        policy,
        backoff_ms,
    }
}

use GroupStrategy::{OneForAll, OneForOne};
use RestartPolicy::{Always as Permanent, OnFailure as Transient};

/// Every scenario, in the order they run.
pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "one_for_one",
        title: "one_for_one: a worker crashes ~1 s into every run; only it restarts, with a doubling backoff",
        groups: &[group("pool", OneForOne, 5, 30.0, None)],
        workers: &[
            worker("steady-a", "pool", "run", Permanent, 200),
            worker("crashy", "pool", "crash:1", Transient, ONE_FOR_ONE_BACKOFF),
            worker("steady-b", "pool", "run", Permanent, 200),
        ],
        limit: Duration::from_secs(15),
    },
    Scenario {
        name: "one_for_all",
        title: "one_for_all: the middle worker crashes once; all three restart",
        groups: &[group("team", OneForAll, 3, 30.0, None)],
        workers: &[
            worker("a", "team", "run", Permanent, 200),
            worker("b", "team", "crash:1,run", Transient, 200),
            worker("c", "team", "run", Permanent, 200),
        ],
        limit: Duration::from_secs(12),
    },
    Scenario {
        name: "escalation",
        title: "escalation: at most 2 restarts in 10 s, a worker that always crashes; the group gives up",
        groups: &[group("fragile", OneForOne, ESCALATION_INTENSITY, 10.0, None)],
        workers: &[
            worker("steady", "fragile", "run", Permanent, 100),
            worker("crashy", "fragile", "crash:0.5", Transient, 100),
        ],
        limit: Duration::from_secs(12),
    },
    Scenario {
        name: "nested",
        title: "nested: a child group (1 restart in 10 s) escalates to its parent, which restarts it",
        groups: &[
            group("parent", OneForOne, 2, 10.0, None),
            group("child", OneForOne, 1, 10.0, Some("parent")),
        ],
        workers: &[
            worker("keeper", "parent", "run", Permanent, 100),
            worker("crashy", "child", "crash:0.5,crash:0.5,run", Transient, 100),
            worker("steady", "child", "run", Permanent, 100),
        ],
        limit: Duration::from_secs(12),
    },
];

// ---------------------------------------------------------------------------------------
// What the runner records, and the judging (pure).

/// One event of a scenario, as recorded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ev {
    /// ms since the demo started (from the kernel's timestamp).
    pub t_ms: u64,
    /// `AGENT_SPAWNED`, ...
    pub event: String,
    /// The agent's id (0 for GROUP_ESCALATED).
    pub agent_id: u32,
    /// The agent's or the group's label.
    pub subject: String,
    /// What the event says, in a few words.
    pub details: String,
    /// The event's data, as the kernel published it.
    pub data: Value,
}

impl Ev {
    fn is(&self, event: &str, id: u32) -> bool {
        self.event == event && self.agent_id == id
    }

    fn u64(&self, key: &str) -> Option<u64> {
        self.data.get(key).and_then(Value::as_u64)
    }

    fn restarting(&self) -> Option<bool> {
        self.data.get("restarting").and_then(Value::as_bool)
    }

    fn group(&self) -> Option<&str> {
        self.data.get("group").and_then(Value::as_str)
    }
}

/// An agent of a scenario.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Member {
    /// Its short name.
    pub label: String,
    /// Its real name.
    pub name: String,
    /// Its id.
    pub id: u32,
    /// The pid SPAWN reported.
    pub pid: i32,
    /// Its group's real name.
    pub group: String,
}

/// What a scenario's judge looks at.
#[derive(Debug, Clone, Copy)]
pub struct Seen<'a> {
    /// The scenario's events, in the order they were published.
    pub events: &'a [Ev],
    /// Its agents, in start order.
    pub agents: &'a [Member],
    /// Its groups: label and real name.
    pub groups: &'a [(String, String)],
    /// LIST at the end of the scenario.
    pub list: &'a [AgentEntry],
    /// GROUP_LIST at the end of the scenario.
    pub group_list: &'a [GroupInfo],
}

impl Seen<'_> {
    fn agent(&self, label: &str) -> Option<&Member> {
        self.agents.iter().find(|m| m.label == label)
    }

    fn group_name(&self, label: &str) -> Option<&str> {
        self.groups
            .iter()
            .find(|(l, _)| l == label)
            .map(|(_, n)| n.as_str())
    }

    fn row(&self, id: u32) -> Option<&AgentEntry> {
        self.list.iter().find(|r| r.id == id)
    }

    fn listed_group(&self, name: &str) -> Option<&GroupInfo> {
        self.group_list.iter().find(|g| g.name == name)
    }

    /// Events of `event` about agent `id`.
    fn of(&self, event: &str, id: u32) -> Vec<&Ev> {
        self.events.iter().filter(|e| e.is(event, id)).collect()
    }

    /// Index of the first event matching `f`.
    fn position(&self, f: impl Fn(&Ev) -> bool) -> Option<usize> {
        self.events.iter().position(f)
    }
}

/// One check of a scenario, with its evidence.
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

/// Labels joined with ", " (`-` when none).
fn labels<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    let v: Vec<&str> = items.into_iter().collect();
    if v.is_empty() {
        "-".into()
    } else {
        v.join(", ")
    }
}

fn missing(what: &str) -> Vec<Check> {
    vec![Check::new(
        "the scenario ran",
        false,
        format!("{what} is unknown (setup failed?)"),
    )]
}

/// Whether the scenario has seen what it waits for (then the runner stops watching).
pub fn done(scenario: &str, seen: &Seen<'_>) -> bool {
    let spawned_again = |m: &Member, n: u64| {
        seen.of("AGENT_SPAWNED", m.id)
            .iter()
            .any(|e| e.u64("restarts") >= Some(n))
    };
    match scenario {
        "one_for_one" => seen
            .agent("crashy")
            .is_some_and(|m| spawned_again(m, ONE_FOR_ONE_RESTARTS as u64)),
        "one_for_all" => seen.agents.len() == 3 && seen.agents.iter().all(|m| spawned_again(m, 1)),
        "escalation" => {
            let gave_up = seen.events.iter().any(|e| e.event == "GROUP_ESCALATED");
            gave_up
                && seen.agents.iter().all(|m| {
                    seen.of("AGENT_EXITED", m.id)
                        .iter()
                        .any(|e| e.restarting() == Some(false))
                })
        }
        "nested" => {
            let Some(esc) = seen.position(|e| e.event == "GROUP_ESCALATED") else {
                return false;
            };
            ["crashy", "steady"].iter().all(|l| {
                seen.agent(l).is_some_and(|m| {
                    seen.events[esc..]
                        .iter()
                        .any(|e| e.is("AGENT_SPAWNED", m.id))
                })
            })
        }
        _ => true,
    }
}

/// Whether every agent of the scenario has exited for good (nothing more can happen).
pub fn all_gone(seen: &Seen<'_>) -> bool {
    !seen.agents.is_empty()
        && seen.agents.iter().all(|m| {
            seen.of("AGENT_EXITED", m.id)
                .iter()
                .any(|e| e.restarting() == Some(false))
        })
}

/// Judges a scenario from what was seen.
pub fn judge(scenario: &str, seen: &Seen<'_>) -> Vec<Check> {
    match scenario {
        "one_for_one" => judge_one_for_one(seen),
        "one_for_all" => judge_one_for_all(seen),
        "escalation" => judge_escalation(seen),
        "nested" => judge_nested(seen),
        other => vec![Check::new("a known scenario", false, other)],
    }
}

/// Checks that `m` was left alone: no exit, LIST shows it running with 0 restarts and the pid
/// SPAWN gave.
fn untouched(seen: &Seen<'_>, m: &Member) -> Result<String, String> {
    let exits = seen.of("AGENT_EXITED", m.id).len() + seen.of("AGENT_RESTARTING", m.id).len();
    if exits > 0 {
        return Err(format!("{}: {exits} exit/restart event(s)", m.label));
    }
    match seen.row(m.id) {
        None => Err(format!("{}: not in LIST", m.label)),
        Some(r) if r.restarts.unwrap_or(0) != 0 || r.state.as_str() != "RUNNING" => Err(format!(
            "{}: LIST says {} with {} restart(s)",
            m.label,
            r.state.as_str(),
            r.restarts.unwrap_or(0)
        )),
        Some(r) if r.pid != m.pid => Err(format!(
            "{}: pid {} is not its first pid {}",
            m.label, r.pid, m.pid
        )),
        Some(_) => Ok(format!("{} ({} pid {})", m.label, "RUNNING", m.pid)),
    }
}

fn untouched_check(seen: &Seen<'_>, who: &[&Member], check: &str) -> Check {
    let results: Vec<Result<String, String>> = who.iter().map(|m| untouched(seen, m)).collect();
    let bad: Vec<&str> = results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .map(String::as_str)
        .collect();
    if bad.is_empty() {
        let ok: Vec<&str> = results
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .map(String::as_str)
            .collect();
        Check::new(
            check,
            true,
            format!("no exit event; LIST: restarts 0, {}", labels(ok)),
        )
    } else {
        Check::new(check, false, bad.join("; "))
    }
}

fn judge_one_for_one(seen: &Seen<'_>) -> Vec<Check> {
    let (Some(crashy), Some(a), Some(b), Some(group)) = (
        seen.agent("crashy"),
        seen.agent("steady-a"),
        seen.agent("steady-b"),
        seen.group_name("pool"),
    ) else {
        return missing("a worker or the group");
    };
    let n = ONE_FOR_ONE_RESTARTS;
    let mut checks = Vec::new();

    // Every restart follows a crash (exit code 1), announced as restarting.
    let restarting = seen.of("AGENT_RESTARTING", crashy.id);
    let crashes: Vec<&Ev> = seen
        .of("AGENT_EXITED", crashy.id)
        .into_iter()
        .filter(|e| e.restarting() == Some(true) && e.u64("exit_code") == Some(1))
        .collect();
    let counts: Vec<String> = restarting
        .iter()
        .filter_map(|e| e.u64("restart_count"))
        .map(|c| c.to_string())
        .collect();
    checks.push(Check::new(
        &format!("crashy is restarted after each crash ({n} watched)"),
        restarting.len() >= n && crashes.len() >= restarting.len(),
        format!(
            "{} crash(es) with exit code 1 (AGENT_EXITED restarting), AGENT_RESTARTING #{}",
            crashes.len(),
            labels(counts.iter().map(String::as_str))
        ),
    ));

    // The backoff doubles from restart_backoff_ms.
    let backoffs: Vec<u64> = restarting
        .iter()
        .filter_map(|e| e.u64("backoff_ms"))
        .collect();
    let want: Vec<u64> = (0..n).map(|i| ONE_FOR_ONE_BACKOFF << i).collect();
    let shown: Vec<String> = backoffs.iter().map(u64::to_string).collect();
    checks.push(Check::new(
        &format!("the backoff doubles from {ONE_FOR_ONE_BACKOFF} ms"),
        backoffs.len() >= n && backoffs[..n] == want[..],
        format!(
            "AGENT_RESTARTING backoff_ms {} (expected {})",
            labels(shown.iter().map(String::as_str)),
            want.iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ));

    // Each restart waited its backoff: AGENT_SPAWNED (restarts k) comes backoff ms after
    // AGENT_RESTARTING (restart_count k).
    let mut waited = Vec::new();
    let mut waited_ok = restarting.len() >= n;
    for r in restarting.iter().take(n) {
        let (Some(k), Some(backoff)) = (r.u64("restart_count"), r.u64("backoff_ms")) else {
            waited_ok = false;
            continue;
        };
        match seen
            .of("AGENT_SPAWNED", crashy.id)
            .into_iter()
            .find(|s| s.u64("restarts") == Some(k))
        {
            Some(s) => {
                let gap = s.t_ms.saturating_sub(r.t_ms);
                waited_ok &= gap + BACKOFF_SLACK_MS >= backoff;
                waited.push(format!("{gap} ms (backoff {backoff})"));
            }
            None => {
                waited_ok = false;
                waited.push(format!("restart {k} never ran"));
            }
        }
    }
    checks.push(Check::new(
        "each restart waits its backoff",
        waited_ok,
        format!(
            "AGENT_RESTARTING to AGENT_SPAWNED: {}",
            labels(waited.iter().map(String::as_str))
        ),
    ));

    checks.push(untouched_check(seen, &[a, b], "its siblings keep running"));

    // LIST and GROUP_LIST count the restarts.
    let listed = seen.row(crashy.id).and_then(|r| r.restarts).unwrap_or(0);
    let group_restarts = seen.listed_group(group).map(|g| g.restarts);
    checks.push(Check::new(
        "LIST and GROUP_LIST count the restarts",
        listed as usize >= n && group_restarts.is_some_and(|g| g as usize >= n),
        format!(
            "LIST: crashy restarts {listed}; GROUP_LIST: [pool] restarts {}",
            group_restarts.map_or("(not listed)".into(), |g| g.to_string())
        ),
    ));
    checks
}

fn judge_one_for_all(seen: &Seen<'_>) -> Vec<Check> {
    let (Some(a), Some(b), Some(c), Some(group)) = (
        seen.agent("a"),
        seen.agent("b"),
        seen.agent("c"),
        seen.group_name("team"),
    ) else {
        return missing("a worker or the group");
    };
    let mut checks = Vec::new();
    let label = |id: u32| {
        seen.agents
            .iter()
            .find(|m| m.id == id)
            .map_or("?", |m| m.label.as_str())
    };

    // b crashed; that is the failure.
    let crash = seen.position(|e| {
        e.is("AGENT_EXITED", b.id) && e.restarting() == Some(true) && e.u64("exit_code") == Some(1)
    });
    checks.push(Check::new(
        "b's crash is the failure",
        crash.is_some(),
        match crash {
            Some(i) => format!("AGENT_EXITED b: {}", seen.events[i].details),
            None => "no AGENT_EXITED (exit code 1, restarting) for b".into(),
        },
    ));

    // The siblings were stopped (AGENT_EXITED, restarting) in reverse start order: c, a.
    let stops: Vec<u32> = seen
        .events
        .iter()
        .filter(|e| e.event == "AGENT_EXITED" && e.restarting() == Some(true))
        .map(|e| e.agent_id)
        .filter(|id| *id == a.id || *id == c.id)
        .collect();
    checks.push(Check::new(
        "its siblings are stopped in reverse start order",
        stops == [c.id, a.id],
        format!(
            "AGENT_EXITED order: {} (started a, b, c)",
            labels(stops.iter().map(|id| label(*id)))
        ),
    ));

    // All started again, in start order, after every stop.
    let starts: Vec<(usize, u32)> = seen
        .events
        .iter()
        .enumerate()
        .filter(|(_, e)| e.event == "AGENT_SPAWNED" && e.u64("restarts") == Some(1))
        .map(|(i, e)| (i, e.agent_id))
        .collect();
    let order: Vec<u32> = starts.iter().map(|(_, id)| *id).collect();
    let last_stop = seen
        .events
        .iter()
        .rposition(|e| e.event == "AGENT_EXITED" && e.restarting() == Some(true));
    let after_stops = match (last_stop, starts.first()) {
        (Some(s), Some((first, _))) => s < *first,
        _ => false,
    };
    checks.push(Check::new(
        "all three start again in start order, after the stops",
        order == [a.id, b.id, c.id] && after_stops,
        format!(
            "AGENT_SPAWNED (restarts 1) order: {}{}",
            labels(order.iter().map(|id| label(*id))),
            if after_stops {
                ", each after the last stop"
            } else {
                ", NOT all after the stops"
            }
        ),
    ));

    // The siblings restart with the set's backoff (b's).
    let backoff_of = |m: &Member| {
        seen.of("AGENT_RESTARTING", m.id)
            .first()
            .and_then(|e| e.u64("backoff_ms"))
    };
    let backoffs: Vec<Option<u64>> = [a, b, c].iter().map(|m| backoff_of(m)).collect();
    let shown: Vec<String> = [a, b, c]
        .iter()
        .zip(&backoffs)
        .map(|(m, bo)| {
            format!(
                "{} {}",
                m.label,
                bo.map_or("none".into(), |v| format!("{v} ms"))
            )
        })
        .collect();
    checks.push(Check::new(
        "each restarts once, with the set's backoff",
        backoffs.iter().all(|bo| bo.is_some() && *bo == backoffs[1]),
        format!("AGENT_RESTARTING: {}", shown.join(", ")),
    ));

    // LIST: each restarted once and runs; GROUP_LIST: one restart of the set.
    let rows: Vec<String> = [a, b, c]
        .iter()
        .map(|m| match seen.row(m.id) {
            Some(r) => format!(
                "{} {} restarts {}",
                m.label,
                r.state.as_str(),
                r.restarts.unwrap_or(0)
            ),
            None => format!("{} not listed", m.label),
        })
        .collect();
    let rows_ok = [a, b, c].iter().all(|m| {
        seen.row(m.id)
            .is_some_and(|r| r.restarts == Some(1) && r.state.as_str() == "RUNNING")
    });
    let group_restarts = seen.listed_group(group).map(|g| g.restarts);
    checks.push(Check::new(
        "LIST: 1 restart each; GROUP_LIST: 1 restart of the set",
        rows_ok && group_restarts == Some(1),
        format!(
            "{}; group restarts {}",
            rows.join(", "),
            group_restarts.map_or("(not listed)".into(), |g| g.to_string())
        ),
    ));
    checks
}

fn judge_escalation(seen: &Seen<'_>) -> Vec<Check> {
    let (Some(crashy), Some(steady), Some(group)) = (
        seen.agent("crashy"),
        seen.agent("steady"),
        seen.group_name("fragile"),
    ) else {
        return missing("a worker or the group");
    };
    let intensity = ESCALATION_INTENSITY;
    let mut checks = Vec::new();

    let esc = seen.position(|e| e.event == "GROUP_ESCALATED" && e.group() == Some(group));
    let restarts_before = seen
        .events
        .iter()
        .take(esc.unwrap_or(seen.events.len()))
        .filter(|e| e.is("AGENT_RESTARTING", crashy.id))
        .count();
    checks.push(Check::new(
        &format!("crashy is restarted {intensity} time(s), the intensity"),
        restarts_before == intensity as usize,
        format!("{restarts_before} AGENT_RESTARTING before the escalation"),
    ));

    let esc_ev = esc.map(|i| &seen.events[i]);
    let gave_up = esc_ev
        .and_then(|e| e.data.get("gave_up"))
        .and_then(Value::as_bool);
    let esc_intensity = esc_ev.and_then(|e| e.u64("intensity"));
    checks.push(Check::new(
        "one crash more and the group gives up",
        gave_up == Some(true) && esc_intensity == Some(u64::from(intensity)),
        match esc_ev {
            Some(e) => format!("GROUP_ESCALATED {}", e.details),
            None => format!("no GROUP_ESCALATED for {group}"),
        },
    ));

    // Each agent: AGENT_ESCALATED after the group's escalation, then its final exit; no
    // start after the escalation.
    let mut ends = Vec::new();
    let mut ends_ok = esc.is_some();
    for m in [steady, crashy] {
        let from = esc.unwrap_or(0);
        let tail = &seen.events[from.min(seen.events.len())..];
        let escalated = tail.iter().position(|e| e.is("AGENT_ESCALATED", m.id));
        let final_exit = tail
            .iter()
            .position(|e| e.is("AGENT_EXITED", m.id) && e.restarting() == Some(false));
        let restarted = tail.iter().any(|e| e.is("AGENT_SPAWNED", m.id));
        let ok = matches!((escalated, final_exit), (Some(x), Some(f)) if x < f) && !restarted;
        ends_ok &= ok;
        ends.push(format!(
            "{}: {}",
            m.label,
            match (escalated, final_exit) {
                (Some(_), Some(f)) => format!("AGENT_ESCALATED, then {}", tail[f].details),
                (None, Some(f)) => format!("no AGENT_ESCALATED; {}", tail[f].details),
                (Some(_), None) => "AGENT_ESCALATED, no final exit".into(),
                (None, None) => "neither AGENT_ESCALATED nor a final exit".into(),
            } + if restarted { "; started again!" } else { "" }
        ));
    }
    checks.push(Check::new(
        "its agents escalate and exit for good",
        ends_ok,
        ends.join("; "),
    ));

    let listed_group = seen.listed_group(group).is_some();
    let left: Vec<&str> = [steady, crashy]
        .iter()
        .filter(|m| seen.row(m.id).is_some())
        .map(|m| m.label.as_str())
        .collect();
    checks.push(Check::new(
        "the group is gone, and its agents",
        !listed_group && left.is_empty(),
        format!(
            "GROUP_LIST {}; LIST shows {}",
            if listed_group {
                format!("still lists {group}")
            } else {
                format!("has no {group}")
            },
            if left.is_empty() {
                "none of its agents".into()
            } else {
                labels(left)
            }
        ),
    ));
    checks
}

fn judge_nested(seen: &Seen<'_>) -> Vec<Check> {
    let (Some(keeper), Some(crashy), Some(steady), Some(parent), Some(child)) = (
        seen.agent("keeper"),
        seen.agent("crashy"),
        seen.agent("steady"),
        seen.group_name("parent"),
        seen.group_name("child"),
    ) else {
        return missing("a worker or a group");
    };
    let mut checks = Vec::new();

    let esc = seen.position(|e| e.event == "GROUP_ESCALATED" && e.group() == Some(child));
    let before = &seen.events[..esc.unwrap_or(seen.events.len())];
    let first: Vec<&Ev> = before
        .iter()
        .filter(|e| e.is("AGENT_RESTARTING", crashy.id))
        .collect();
    checks.push(Check::new(
        "the child group restarts crashy once (its intensity)",
        first.len() == 1,
        format!(
            "{} AGENT_RESTARTING of crashy before the escalation{}",
            first.len(),
            first
                .first()
                .map(|e| format!(" ({})", e.details))
                .unwrap_or_default()
        ),
    ));

    let esc_ev = esc.map(|i| &seen.events[i]);
    let ok = esc_ev.is_some_and(|e| {
        e.data.get("gave_up").and_then(Value::as_bool) == Some(false)
            && e.data.get("parent").and_then(Value::as_str) == Some(parent)
    });
    checks.push(Check::new(
        "its second crash escalates to the parent",
        ok,
        match esc_ev {
            Some(e) => format!("GROUP_ESCALATED {}", e.details),
            None => format!("no GROUP_ESCALATED for {child}"),
        },
    ));

    // The parent restarts the child group: both its workers start again, in start order.
    let after = &seen.events[esc.map_or(seen.events.len(), |i| i + 1)..];
    let order: Vec<&str> = after
        .iter()
        .filter(|e| {
            e.event == "AGENT_SPAWNED" && (e.agent_id == crashy.id || e.agent_id == steady.id)
        })
        .map(|e| e.subject.as_str())
        .collect();
    let parent_escalated = seen
        .events
        .iter()
        .any(|e| e.event == "GROUP_ESCALATED" && e.group() == Some(parent));
    checks.push(Check::new(
        "the parent restarts the child group's workers in start order",
        order == ["crashy", "steady"] && !parent_escalated,
        format!(
            "AGENT_SPAWNED after the escalation: {}{}",
            labels(order),
            if parent_escalated {
                "; the parent escalated too!"
            } else {
                "; the parent did not escalate"
            }
        ),
    ));

    checks.push(untouched_check(
        seen,
        &[keeper],
        "the parent's other worker keeps running",
    ));

    let p = seen.listed_group(parent);
    let c = seen.listed_group(child);
    let child_running = c
        .is_some_and(|g| g.state == "running" && g.children.iter().all(|ch| ch.state == "running"));
    checks.push(Check::new(
        "GROUP_LIST: the parent restarted once; the child group runs again",
        p.is_some_and(|g| g.restarts == 1) && child_running,
        format!(
            "{}; {}",
            p.map_or("parent not listed".into(), |g| format!(
                "parent restarts {}",
                g.restarts
            )),
            c.map_or("child not listed".into(), |g| {
                let kids: Vec<String> = g.children.iter().map(|ch| ch.state.clone()).collect();
                format!("child {} (children {})", g.state, kids.join(", "))
            })
        ),
    ));
    checks
}

// ---------------------------------------------------------------------------------------
// The report.

/// An agent's line in a scenario's summary.
#[derive(Debug, Clone, Serialize)]
pub struct AgentSummary {
    /// Its short name.
    pub label: String,
    /// Its real name.
    pub name: String,
    /// Its id.
    pub id: u32,
    /// Its group's real name.
    pub group: String,
    /// Its restart type.
    pub policy: &'static str,
    /// The worker's plan.
    pub plan: &'static str,
    /// Restarts: LIST's, or the AGENT_RESTARTING events seen once it is gone.
    pub restarts: u64,
    /// The backoffs of its restarts, from AGENT_RESTARTING.
    pub backoffs_ms: Vec<u64>,
    /// LIST's state at the end of the scenario, or `gone`.
    pub state: String,
}

/// A group's line in a scenario's report.
#[derive(Debug, Clone, Serialize)]
pub struct GroupSummary {
    /// Its short name.
    pub label: String,
    /// Its real name.
    pub name: String,
    /// Its strategy.
    pub strategy: &'static str,
    /// Restarts allowed within `period`.
    pub intensity: u32,
    /// Seconds.
    pub period: f64,
    /// Its parent's real name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
}

/// One scenario's report.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    /// `one_for_one`, ...
    pub scenario: &'static str,
    /// What it shows.
    pub title: &'static str,
    /// Its groups.
    pub groups: Vec<GroupSummary>,
    /// Its agents.
    pub agents: Vec<AgentSummary>,
    /// Its events.
    pub timeline: Vec<Ev>,
    /// The checks, with their evidence.
    pub checks: Vec<Check>,
    /// Every check held.
    pub as_expected: bool,
    /// `as expected` or `UNEXPECTED: why`.
    pub verdict: String,
    /// How long it took, cleanup included.
    pub duration_ms: u64,
}

/// The whole report (`--json`).
#[derive(Debug, Serialize)]
pub struct Report {
    /// The scenarios, in the order they ran.
    pub scenarios: Vec<ScenarioReport>,
    /// Every scenario was as expected.
    pub all_as_expected: bool,
    /// How long the demo took.
    pub duration_ms: u64,
}

/// A timeline line: `  +  1.234s  AGENT_RESTARTING  crashy#4     restart 1 in 200 ms`.
pub fn timeline_line(e: &Ev) -> String {
    let who = if e.agent_id == 0 {
        format!("[{}]", e.subject)
    } else {
        format!("{}#{}", e.subject, e.agent_id)
    };
    format!(
        "  +{:>3}.{:03}s  {:<16}  {:<12}  {}",
        e.t_ms / 1000,
        e.t_ms % 1000,
        e.event,
        who,
        e.details
    )
}

/// What an event says, in a few words (`labels` maps real group names to labels).
pub fn describe(event: &str, data: &Value, group_label: impl Fn(&str) -> String) -> String {
    let n = |k: &str| data.get(k).and_then(Value::as_u64).unwrap_or(0);
    let s = |k: &str| data.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    match event {
        "AGENT_SPAWNED" => match n("restarts") {
            0 => format!("started, pid {}", n("pid")),
            r => format!("running again (restart {r}), pid {}", n("pid")),
        },
        "AGENT_EXITED" => format!(
            "{}; {}",
            s("reason"),
            if data.get("restarting").and_then(Value::as_bool) == Some(true) {
                "will restart"
            } else {
                "for good"
            }
        ),
        "AGENT_RESTARTING" => format!("restart {} in {} ms", n("restart_count"), n("backoff_ms")),
        "AGENT_ESCALATED" => format!(
            "given up on after {} restart(s); last run {}",
            n("restart_count"),
            s("reason")
        ),
        "GROUP_ESCALATED" => {
            let limit = format!(
                "more than {} restart(s) in {}s",
                n("intensity"),
                data.get("period").and_then(Value::as_f64).unwrap_or(0.0)
            );
            if data.get("gave_up").and_then(Value::as_bool) == Some(true) {
                format!("{limit}: gave up (gave_up true)")
            } else {
                format!(
                    "{limit}: escalated to [{}] (gave_up false)",
                    group_label(&s("parent"))
                )
            }
        }
        _ => data.to_string(),
    }
}

/// The summary of one scenario: a verdict line, its agents and its checks.
pub fn summary(r: &ScenarioReport) -> String {
    let mut text = format!("{}: {}\n", r.scenario, r.verdict);
    let mut t = Table::new(&[
        "  AGENT", "ID", "GROUP", "POLICY", "PLAN", "RESTARTS", "BACKOFFS", "STATE",
    ]);
    for a in &r.agents {
        let group = r
            .groups
            .iter()
            .find(|g| g.name == a.group)
            .map_or(a.group.as_str(), |g| g.label.as_str());
        let backoffs: Vec<String> = a.backoffs_ms.iter().map(|b| format!("{b}ms")).collect();
        t.push(vec![
            format!("  {}", a.label),
            a.id.to_string(),
            group.to_owned(),
            a.policy.to_owned(),
            a.plan.to_owned(),
            a.restarts.to_string(),
            labels(backoffs.iter().map(String::as_str)),
            a.state.clone(),
        ]);
    }
    text.push_str(&t.render());
    let mut t = Table::new(&["  CHECK", "RESULT", "EVIDENCE"]);
    for c in &r.checks {
        t.push(vec![
            format!("  {}", c.check),
            if c.ok { "ok" } else { "UNEXPECTED" }.into(),
            c.evidence.clone(),
        ]);
    }
    text.push_str(&t.render());
    text
}

/// The closing table: one line per scenario.
pub fn verdicts_table(reports: &[ScenarioReport]) -> String {
    let mut t = Table::new(&["SCENARIO", "GROUPS", "TIME", "VERDICT"]);
    for r in reports {
        let groups: Vec<String> = r
            .groups
            .iter()
            .map(|g| format!("{} ({} {}/{}s)", g.label, g.strategy, g.intensity, g.period))
            .collect();
        t.push(vec![
            r.scenario.into(),
            groups.join(", "),
            format!("{:.1}s", r.duration_ms as f64 / 1000.0),
            r.verdict.clone(),
        ]);
    }
    t.render()
}

// ---------------------------------------------------------------------------------------
// The runner.

/// `clove demo supervisor`.
pub fn run(
    client: &mut Client,
    out: &mut impl Write,
    json: bool,
    demos_dir: Option<&Path>,
) -> Result<(), Failure> {
    let what = format!("demo {NAME}");
    let script = Script::prepare(demos_dir, WORKER_FILE, WORKER, "clove-supervisor-demo")
        .map_err(|why| Failure::other(&what, why))?;
    client
        .set_timeout(Some(CALL_TIMEOUT))
        .map_err(|e| Failure::call(&what, e))?;
    let mut events = Client::connect(Some(client.socket_path()))
        .map_err(|e| Failure::call(&what, e))?
        .with_codec(client.codec());
    events
        .set_timeout(Some(Duration::from_secs(15)))
        .map_err(|e| Failure::call(&what, e))?;
    events
        .subscribe(&EVENT_TYPES)
        .map_err(|e| Failure::call(format!("{what}: subscribe"), e))?;

    let started = Instant::now();
    let mut runner = Runner {
        client,
        events,
        script: script.path.clone(),
        tag: std::process::id().to_string(),
        t0_ms: epoch_ms(),
        json,
    };
    if !json {
        writeln!(
            out,
            "clove demo supervisor: crash-prone workers in supervisor groups \
             (not an attack: see `clove demo --list`)\n"
        )?;
    }
    let mut reports = Vec::new();
    for s in SCENARIOS {
        let r = runner.scenario(s, out)?;
        if !json {
            writeln!(out, "{}", summary(&r))?;
        }
        reports.push(r);
    }
    let bad = reports.iter().filter(|r| !r.as_expected).count();
    let report = Report {
        all_as_expected: bad == 0,
        duration_ms: started.elapsed().as_millis() as u64,
        scenarios: reports,
    };
    if json {
        writeln!(out, "{}", as_json(&report))?;
    } else {
        out.write_all(verdicts_table(&report.scenarios).as_bytes())?;
    }
    out.flush()?;
    if bad == 0 {
        return Ok(());
    }
    Err(Failure::other(
        what,
        format!("{bad} of {} scenarios UNEXPECTED", report.scenarios.len()),
    ))
}

fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

struct Runner<'c> {
    client: &'c mut Client,
    /// The connection that follows the events.
    events: Client,
    script: String,
    tag: String,
    t0_ms: u64,
    json: bool,
}

/// A scenario while it runs.
#[derive(Default)]
struct Cast {
    /// label, real name, in creation order (parents first).
    groups: Vec<(String, String)>,
    /// Groups GROUP_CREATE made, in creation order.
    created: Vec<String>,
    agents: Vec<Member>,
    /// Real agent name → label, known before SPAWN (AGENT_SPAWNED comes before its reply).
    names: BTreeMap<String, String>,
    events: Vec<Ev>,
}

impl Cast {
    fn group_label(&self, name: &str) -> String {
        self.groups
            .iter()
            .find(|(_, n)| n == name)
            .map_or_else(|| name.to_owned(), |(l, _)| l.clone())
    }
}

impl Runner<'_> {
    fn real_name(&self, s: &Scenario, label: &str) -> String {
        format!("demo-sup-{}-{label}-{}", s.name, self.tag)
    }

    fn scenario(&mut self, s: &Scenario, out: &mut impl Write) -> Result<ScenarioReport, Failure> {
        let began = Instant::now();
        // What an earlier scenario's cleanup published is not this scenario's.
        let _ = self.events.poll_events(1000, None);
        let mut cast = Cast::default();
        if !self.json {
            writeln!(out, "== {}", s.title)?;
        }
        let (checks, list) = match self.setup(s, &mut cast) {
            Err(why) => (
                vec![Check::new("set up the scenario", false, why)],
                Vec::new(),
            ),
            Ok(()) => self.watch_and_judge(s, &mut cast, out),
        };
        let agents = agent_summaries(s, &cast, &list);
        self.finish(s, cast, checks, agents, began, out)
    }

    /// Follows the events until the scenario has seen what it waits for (or its time is
    /// up), then judges it from them, LIST and GROUP_LIST; also returns LIST.
    fn watch_and_judge(
        &mut self,
        s: &Scenario,
        cast: &mut Cast,
        out: &mut impl Write,
    ) -> (Vec<Check>, Vec<AgentEntry>) {
        let deadline = Instant::now() + s.limit;
        let mut reached = false;
        let mut gone = false;
        let mut trouble = Vec::new();
        while Instant::now() < deadline {
            if let Err(e) = self.poll(cast, out, Duration::from_millis(200)) {
                trouble.push(Check::new("follow the events", false, e));
                break;
            }
            let seen = seen(cast, &[], &[]);
            reached = done(s.name, &seen);
            gone = all_gone(&seen);
            if reached || gone {
                break;
            }
        }
        if reached {
            std::thread::sleep(SETTLE);
            if let Err(e) = self.poll(cast, out, Duration::ZERO) {
                trouble.push(Check::new("follow the events", false, e));
            }
        } else if trouble.is_empty() {
            let why = if gone {
                "every agent exited for good before all the expected events (see the timeline)"
                    .to_owned()
            } else {
                format!(
                    "not all the expected events within {}s (see the timeline)",
                    s.limit.as_secs()
                )
            };
            trouble.push(Check::new("it happened in time", false, why));
        }
        let list = match self.client.list() {
            Ok(l) => l,
            Err(e) => return (vec![Check::new("LIST", false, e.to_string())], Vec::new()),
        };
        let groups = match self.client.group_list(None) {
            Ok(g) => g,
            Err(e) => return (vec![Check::new("GROUP_LIST", false, e.to_string())], list),
        };
        let mut checks = trouble;
        checks.extend(judge(s.name, &seen(cast, &list, &groups)));
        (checks, list)
    }

    /// Cleans up and puts the report together.
    fn finish(
        &mut self,
        s: &Scenario,
        cast: Cast,
        mut checks: Vec<Check>,
        agents: Vec<AgentSummary>,
        began: Instant,
        out: &mut impl Write,
    ) -> Result<ScenarioReport, Failure> {
        let cleanup = self.cleanup(&cast);
        if !self.json {
            writeln!(out, "  cleanup: {}", cleanup.evidence)?;
        }
        checks.push(cleanup);
        let groups = s
            .groups
            .iter()
            .map(|g| GroupSummary {
                label: g.label.into(),
                name: self.real_name(s, g.label),
                strategy: g.strategy.as_str(),
                intensity: g.intensity,
                period: g.period,
                parent: g.parent.map(|p| self.real_name(s, p)),
            })
            .collect();
        let verdict = verdict(&checks);
        Ok(ScenarioReport {
            scenario: s.name,
            title: s.title,
            groups,
            agents,
            timeline: cast.events,
            as_expected: verdict == "as expected",
            verdict,
            checks,
            duration_ms: began.elapsed().as_millis() as u64,
        })
    }

    /// Creates the groups (parents first) and spawns the workers in start order.
    fn setup(&mut self, s: &Scenario, cast: &mut Cast) -> Result<(), String> {
        for g in s.groups {
            let name = self.real_name(s, g.label);
            cast.groups.push((g.label.to_owned(), name.clone()));
        }
        for w in s.workers {
            cast.names
                .insert(self.real_name(s, w.label), w.label.to_owned());
        }
        for g in s.groups {
            let name = self.real_name(s, g.label);
            let req = GroupCreateRequest {
                strategy: g.strategy,
                intensity: g.intensity,
                period: g.period,
                parent: g.parent.map(|p| self.real_name(s, p)),
                // The workers finish up within 0.15 s of SIGTERM.
                shutdown_ms: Some(2000),
                ..GroupCreateRequest::new(name.clone())
            };
            self.client
                .group_create(&req)
                .map_err(|e| format!("create group {name}: {e}"))?;
            cast.created.push(name);
        }
        for w in s.workers {
            let name = self.real_name(s, w.label);
            let group = self.real_name(s, w.group);
            let mut req = SpawnRequest::new(name.clone(), self.script.clone());
            req.args = vec![w.plan.into()];
            req.restart_policy = w.policy;
            req.restart_backoff_ms = Some(w.backoff_ms);
            req.group = Some(group.clone());
            let r = self
                .client
                .spawn(&req)
                .map_err(|e| format!("spawn {name} into {group}: {e}"))?;
            cast.agents.push(Member {
                label: w.label.into(),
                name,
                id: r.id,
                pid: r.pid,
                group,
            });
        }
        Ok(())
    }

    /// Takes the queued events (waiting up to `wait` for the first), keeps this scenario's
    /// and prints them.
    fn poll(
        &mut self,
        cast: &mut Cast,
        out: &mut impl Write,
        wait: Duration,
    ) -> Result<(), String> {
        let wait = (!wait.is_zero()).then_some(wait);
        let r = self
            .events
            .poll_events(1000, wait)
            .map_err(|e| format!("poll events: {e}"))?;
        if let Some(n) = r.dropped {
            return Err(format!("{n} event(s) dropped: the queue was full"));
        }
        for e in r.events {
            if let Some(ev) = self.record(cast, &e) {
                if !self.json {
                    writeln!(out, "{}", timeline_line(&ev)).map_err(|e| e.to_string())?;
                }
                cast.events.push(ev);
            }
        }
        out.flush().map_err(|e| e.to_string())?;
        Ok(())
    }

    /// The event as this scenario records it, or `None` when it is about something else.
    fn record(&self, cast: &Cast, e: &Event) -> Option<Ev> {
        let data = &e.data.0;
        let subject = if e.event_type == "GROUP_ESCALATED" {
            let group = data.get("group").and_then(Value::as_str)?;
            cast.groups.iter().find(|(_, n)| n == group)?.0.clone()
        } else {
            let name = data.get("name").and_then(Value::as_str)?;
            cast.names.get(name)?.clone()
        };
        let agent_id = if e.event_type == "GROUP_ESCALATED" {
            0
        } else {
            data.get("agent_id")
                .and_then(Value::as_u64)
                .and_then(|v| u32::try_from(v).ok())
                .unwrap_or(e.source_agent_id)
        };
        Some(Ev {
            t_ms: e.timestamp.saturating_sub(self.t0_ms),
            event: e.event_type.clone(),
            agent_id,
            subject,
            details: describe(&e.event_type, data, |g| cast.group_label(g)),
            data: data.clone(),
        })
    }

    /// GROUP_STOP of every group the scenario made (children first; a group that gave up is
    /// already gone), then KILL of any of its agents still listed. The check says whether
    /// anything was left.
    fn cleanup(&mut self, cast: &Cast) -> Check {
        let mut notes = Vec::new();
        let mut ok = true;
        // A call that failed may have broken the connection: the cleanup needs a good one.
        if matches!(self.client.hello(), Err(e) if e.breaks_connection()) {
            let socket = self.client.socket_path().to_path_buf();
            let codec = self.client.codec();
            if let Ok(c) = Client::connect(Some(&socket)) {
                *self.client = c.with_codec(codec);
                let _ = self.client.set_timeout(Some(CALL_TIMEOUT));
            }
        }
        for name in cast.created.iter().rev() {
            let label = cast.group_label(name);
            match self.client.group_stop(name) {
                Ok(r) => {
                    let stopped: Vec<String> = r
                        .stopped
                        .iter()
                        .map(|id| {
                            cast.agents
                                .iter()
                                .find(|m| m.id == *id)
                                .map_or_else(|| id.to_string(), |m| m.label.clone())
                        })
                        .collect();
                    notes.push(format!(
                        "GROUP_STOP [{label}] stopped {}",
                        labels(stopped.iter().map(String::as_str))
                    ));
                }
                Err(e) if e.to_string().contains("no group named") => {
                    notes.push(format!("[{label}] already gone"));
                }
                Err(e) => {
                    ok = false;
                    notes.push(format!("GROUP_STOP [{label}]: {e}"));
                }
            }
        }
        match (self.client.list(), self.client.group_list(None)) {
            (Ok(list), Ok(groups)) => {
                let left: Vec<&Member> = cast
                    .agents
                    .iter()
                    .filter(|m| list.iter().any(|r| r.id == m.id))
                    .collect();
                let groups_left: Vec<&str> = groups
                    .iter()
                    .filter(|g| cast.created.contains(&g.name))
                    .map(|g| g.name.as_str())
                    .collect();
                if left.is_empty() && groups_left.is_empty() {
                    notes.push("LIST and GROUP_LIST show nothing of it".into());
                } else {
                    ok = false;
                    for m in &left {
                        let _ = self.client.kill(AgentRef::Id(m.id));
                    }
                    notes.push(format!(
                        "left behind: agents {}, groups {} (killed)",
                        labels(left.iter().map(|m| m.label.as_str())),
                        labels(groups_left)
                    ));
                }
            }
            (Err(e), _) | (_, Err(e)) => {
                ok = false;
                for m in &cast.agents {
                    let _ = self.client.kill(AgentRef::Id(m.id));
                }
                notes.push(format!("LIST/GROUP_LIST after the cleanup: {e}"));
            }
        }
        Check::new("cleanup leaves nothing behind", ok, notes.join("; "))
    }
}

fn seen<'a>(cast: &'a Cast, list: &'a [AgentEntry], groups: &'a [GroupInfo]) -> Seen<'a> {
    Seen {
        events: &cast.events,
        agents: &cast.agents,
        groups: &cast.groups,
        list,
        group_list: groups,
    }
}

fn agent_summaries(s: &Scenario, cast: &Cast, list: &[AgentEntry]) -> Vec<AgentSummary> {
    cast.agents
        .iter()
        .map(|m| {
            let w = s.workers.iter().find(|w| w.label == m.label);
            let backoffs: Vec<u64> = cast
                .events
                .iter()
                .filter(|e| e.is("AGENT_RESTARTING", m.id))
                .filter_map(|e| e.u64("backoff_ms"))
                .collect();
            let row = list.iter().find(|r| r.id == m.id);
            AgentSummary {
                label: m.label.clone(),
                name: m.name.clone(),
                id: m.id,
                group: m.group.clone(),
                policy: w.map_or("?", |w| w.policy.as_str()),
                plan: w.map_or("?", |w| w.plan),
                restarts: row
                    .and_then(|r| r.restarts)
                    .map_or(backoffs.len() as u64, u64::from),
                backoffs_ms: backoffs,
                state: row.map_or_else(|| "gone".into(), |r| r.state.as_str().to_owned()),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    //! The judging rules, fed with event sequences shaped as the kernel publishes them (the
    //! good ones as recorded from a real run), each rule with both outcomes.

    use super::*;
    use clove_sdk::msg::{AgentState, GroupChild};
    use serde_json::json;

    const T: &str = "1";

    fn member(label: &str, id: u32, group: &str) -> Member {
        Member {
            label: label.into(),
            name: format!("demo-sup-x-{label}-{T}"),
            id,
            pid: 1000 + id as i32,
            group: group.into(),
        }
    }

    fn ev(t_ms: u64, event: &str, id: u32, subject: &str, data: Value) -> Ev {
        Ev {
            t_ms,
            event: event.into(),
            agent_id: id,
            subject: subject.into(),
            details: describe(event, &data, |g| g.to_owned()),
            data,
        }
    }

    fn spawned(t: u64, m: &Member, restarts: u32) -> Ev {
        let pid = if restarts == 0 {
            m.pid
        } else {
            5000 + t as i32
        };
        let data = json!({"agent_id": m.id, "name": m.name, "pid": pid, "restarts": restarts});
        ev(t, "AGENT_SPAWNED", m.id, &m.label, data)
    }

    fn exited(t: u64, m: &Member, code: i32, restarting: bool) -> Ev {
        let data = json!({"agent_id": m.id, "name": m.name, "exit_code": code, "signal": null,
            "oom": false, "killed": false, "reason": format!("exited with code {code}"),
            "restarting": restarting});
        ev(t, "AGENT_EXITED", m.id, &m.label, data)
    }

    fn restarting(t: u64, m: &Member, count: u32, backoff_ms: u64) -> Ev {
        let data = json!({"agent_id": m.id, "agent_name": m.name, "name": m.name,
            "restart_count": count, "exit_code": 1, "signal": null, "oom": false,
            "reason": "exited with code 1", "backoff_ms": backoff_ms});
        ev(t, "AGENT_RESTARTING", m.id, &m.label, data)
    }

    fn agent_escalated(t: u64, m: &Member, count: u32, code: i32) -> Ev {
        let data = json!({"agent_id": m.id, "agent_name": m.name, "name": m.name,
            "restart_count": count, "exit_code": code, "signal": null, "oom": false,
            "reason": format!("exited with code {code}")});
        ev(t, "AGENT_ESCALATED", m.id, &m.label, data)
    }

    fn group_escalated(t: u64, group: &str, parent: Option<&str>, intensity: u32) -> Ev {
        let data = json!({"group": group, "parent": parent, "restarts": intensity,
            "intensity": intensity, "period": 10.0, "gave_up": parent.is_none(),
            "message": "..."});
        ev(t, "GROUP_ESCALATED", 0, group, data)
    }

    fn row(m: &Member, state: AgentState, restarts: u32, pid: i32) -> AgentEntry {
        AgentEntry {
            id: m.id,
            name: m.name.clone(),
            pid,
            state,
            running: state == AgentState::Running,
            restarts: Some(restarts),
            group: Some(m.group.clone()),
            ..AgentEntry::default()
        }
    }

    fn listed(name: &str, restarts: u32, children: &[&str]) -> GroupInfo {
        GroupInfo {
            name: name.into(),
            state: "running".into(),
            restarts,
            children: children
                .iter()
                .map(|s| GroupChild {
                    kind: "agent".into(),
                    id: None,
                    name: "x".into(),
                    state: (*s).into(),
                })
                .collect(),
            ..GroupInfo::default()
        }
    }

    fn groups(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(l, n)| ((*l).to_owned(), (*n).to_owned()))
            .collect()
    }

    /// The checks of `scenario` that failed, by name.
    fn failed(scenario: &str, seen: &Seen<'_>) -> Vec<String> {
        judge(scenario, seen)
            .into_iter()
            .filter(|c| !c.ok)
            .map(|c| c.check)
            .collect()
    }

    /// A scenario as the kernel played it: what the judge sees.
    struct Recorded {
        agents: Vec<Member>,
        events: Vec<Ev>,
        list: Vec<AgentEntry>,
        groups: Vec<GroupInfo>,
        names: Vec<(String, String)>,
    }

    impl Recorded {
        fn seen(&self) -> Seen<'_> {
            Seen {
                events: &self.events,
                agents: &self.agents,
                groups: &self.names,
                list: &self.list,
                group_list: &self.groups,
            }
        }
    }

    impl Recorded {
        /// As recorded: crashy crashes ~1 s into each run, restarts after 200, 400, 800 ms.
        fn one_for_one() -> Recorded {
            let agents = vec![
                member("steady-a", 10, "pool"),
                member("crashy", 11, "pool"),
                member("steady-b", 12, "pool"),
            ];
            let [a, c, b] = [&agents[0], &agents[1], &agents[2]];
            let events = vec![
                spawned(18, a, 0),
                spawned(33, c, 0),
                spawned(60, b, 0),
                exited(1098, c, 1, true),
                restarting(1098, c, 1, 200),
                spawned(1317, c, 1),
                exited(2359, c, 1, true),
                restarting(2359, c, 2, 400),
                spawned(2769, c, 2),
                exited(3814, c, 1, true),
                restarting(3814, c, 3, 800),
                spawned(4635, c, 3),
            ];
            let list = vec![
                row(a, AgentState::Running, 0, a.pid),
                row(c, AgentState::Running, 3, 4635),
                row(b, AgentState::Running, 0, b.pid),
            ];
            Recorded {
                agents,
                events,
                list,
                groups: vec![listed("pool", 3, &["running"; 3])],
                names: groups(&[("pool", "pool")]),
            }
        }
    }

    #[test]
    fn one_for_one_as_recorded_is_as_expected() {
        let s = Recorded::one_for_one();
        let checks = judge("one_for_one", &s.seen());
        assert_eq!(verdict(&checks), "as expected", "{checks:#?}");
        assert_eq!(checks.len(), 5);
        assert!(checks[1].evidence.contains("200, 400, 800"), "{checks:#?}");
        assert!(done("one_for_one", &s.seen()));
        // Two restarts in, it is not done yet.
        let mut early = Recorded::one_for_one();
        early.events.truncate(9);
        assert!(!done("one_for_one", &early.seen()));
        assert!(!all_gone(&early.seen()));
    }

    #[test]
    fn one_for_one_flags_a_flat_backoff_an_early_restart_and_a_touched_sibling() {
        // The backoff does not double.
        let mut s = Recorded::one_for_one();
        for e in &mut s.events {
            if e.event == "AGENT_RESTARTING" {
                e.data["backoff_ms"] = json!(200);
            }
        }
        assert_eq!(
            failed("one_for_one", &s.seen()),
            ["the backoff doubles from 200 ms"]
        );
        assert!(verdict(&judge("one_for_one", &s.seen())).starts_with(
            "UNEXPECTED: the backoff doubles from 200 ms: AGENT_RESTARTING backoff_ms 200, 200, 200"
        ));

        // The third restart came 100 ms after its announcement instead of 800.
        let mut s = Recorded::one_for_one();
        s.events[11].t_ms = 3914;
        assert_eq!(
            failed("one_for_one", &s.seen()),
            ["each restart waits its backoff"]
        );

        // A sibling was restarted along (as one_for_all would).
        let mut s = Recorded::one_for_one();
        let a = s.agents[0].clone();
        s.events.insert(4, exited(1100, &a, 0, true));
        s.events.insert(5, restarting(1100, &a, 1, 200));
        s.list[0] = row(&a, AgentState::Running, 1, 7777);
        assert_eq!(
            failed("one_for_one", &s.seen()),
            ["its siblings keep running"]
        );

        // Only two restarts seen, and LIST agrees.
        let mut s = Recorded::one_for_one();
        s.events.truncate(9);
        s.list[1].restarts = Some(2);
        s.groups[0].restarts = 2;
        let f = failed("one_for_one", &s.seen());
        assert!(
            f.contains(&"crashy is restarted after each crash (3 watched)".to_owned()),
            "{f:?}"
        );
        assert!(f.contains(&"LIST and GROUP_LIST count the restarts".to_owned()));
    }

    impl Recorded {
        /// As recorded: b crashes, c then a are stopped, a, b, c start again.
        fn one_for_all() -> Recorded {
            let agents = vec![
                member("a", 13, "team"),
                member("b", 14, "team"),
                member("c", 15, "team"),
            ];
            let [a, b, c] = [&agents[0], &agents[1], &agents[2]];
            let events = vec![
                spawned(5476, a, 0),
                spawned(5493, b, 0),
                spawned(5504, c, 0),
                exited(6656, b, 1, true),
                restarting(6656, b, 1, 200),
                exited(6818, c, 0, true),
                restarting(6818, c, 1, 200),
                exited(6983, a, 0, true),
                restarting(6983, a, 1, 200),
                spawned(7200, a, 1),
                spawned(7228, b, 1),
                spawned(7248, c, 1),
            ];
            let list = agents
                .iter()
                .map(|m| row(m, AgentState::Running, 1, 9000))
                .collect();
            Recorded {
                agents,
                events,
                list,
                groups: vec![listed("team", 1, &["running"; 3])],
                names: groups(&[("team", "team")]),
            }
        }
    }

    #[test]
    fn one_for_all_as_recorded_is_as_expected() {
        let s = Recorded::one_for_all();
        let checks = judge("one_for_all", &s.seen());
        assert_eq!(verdict(&checks), "as expected", "{checks:#?}");
        assert!(checks[1].evidence.contains("c, a (started a, b, c)"));
        assert!(checks[2].evidence.contains("a, b, c"));
        assert!(done("one_for_all", &s.seen()));
        let mut early = Recorded::one_for_all();
        early.events.truncate(11);
        assert!(!done("one_for_all", &early.seen()));
    }

    #[test]
    fn one_for_all_flags_the_wrong_stop_or_start_order_and_one_for_one_behaviour() {
        // Stopped in start order instead of reverse.
        let mut s = Recorded::one_for_all();
        s.events.swap(5, 7);
        s.events.swap(6, 8);
        assert_eq!(
            failed("one_for_all", &s.seen()),
            ["its siblings are stopped in reverse start order"]
        );

        // Started again out of order.
        let mut s = Recorded::one_for_all();
        s.events.swap(9, 11);
        assert_eq!(
            failed("one_for_all", &s.seen()),
            ["all three start again in start order, after the stops"]
        );

        // A start before the last stop.
        let mut s = Recorded::one_for_all();
        let a_start = s.events.remove(9);
        s.events.insert(7, a_start);
        assert!(failed("one_for_all", &s.seen())
            .contains(&"all three start again in start order, after the stops".to_owned()));

        // Only b restarted (what one_for_one would do).
        let mut s = Recorded::one_for_all();
        s.events
            .retain(|e| e.agent_id == 14 || e.event == "AGENT_SPAWNED");
        s.events
            .retain(|e| e.agent_id == 14 || e.u64("restarts") == Some(0));
        s.list[0].restarts = Some(0);
        s.list[2].restarts = Some(0);
        let f = failed("one_for_all", &s.seen());
        assert_eq!(f.len(), 4, "{f:?}");
        assert!(!done("one_for_all", &s.seen()));
    }

    impl Recorded {
        /// As recorded: 2 restarts, the third crash escalates, both agents exit for good.
        fn escalation() -> Recorded {
            let agents = vec![
                member("steady", 16, "fragile"),
                member("crashy", 17, "fragile"),
            ];
            let [s, c] = [&agents[0], &agents[1]];
            let events = vec![
                spawned(8070, s, 0),
                spawned(8084, c, 0),
                exited(8657, c, 1, true),
                restarting(8657, c, 1, 100),
                spawned(8786, c, 1),
                exited(9356, c, 1, true),
                restarting(9356, c, 2, 200),
                spawned(9584, c, 2),
                group_escalated(10169, "fragile", None, 2),
                agent_escalated(10335, s, 0, 0),
                agent_escalated(10335, c, 2, 1),
                exited(10335, s, 0, false),
                exited(10336, c, 1, false),
            ];
            Recorded {
                agents,
                events,
                list: Vec::new(),
                groups: vec![listed("other-group", 0, &[])],
                names: groups(&[("fragile", "fragile")]),
            }
        }
    }

    #[test]
    fn escalation_as_recorded_is_as_expected() {
        let s = Recorded::escalation();
        let checks = judge("escalation", &s.seen());
        assert_eq!(verdict(&checks), "as expected", "{checks:#?}");
        assert!(checks[1].evidence.contains("gave up (gave_up true)"));
        assert!(done("escalation", &s.seen()));
        assert!(all_gone(&s.seen()));
        let mut early = Recorded::escalation();
        early.events.truncate(11);
        assert!(!done("escalation", &early.seen()));
    }

    #[test]
    fn escalation_flags_a_group_that_stays_restarts_after_it_or_no_give_up() {
        // The group is still listed, an agent too.
        let mut s = Recorded::escalation();
        s.groups.push(listed("fragile", 2, &["waiting"]));
        s.list
            .push(row(&s.agents[0].clone(), AgentState::Running, 0, 1016));
        assert_eq!(
            failed("escalation", &s.seen()),
            ["the group is gone, and its agents"]
        );

        // It escalated to a parent instead of giving up.
        let mut s = Recorded::escalation();
        s.events[8] = group_escalated(10169, "fragile", Some("top"), 2);
        assert_eq!(
            failed("escalation", &s.seen()),
            ["one crash more and the group gives up"]
        );

        // An agent started again after the escalation, with no AGENT_ESCALATED.
        let mut s = Recorded::escalation();
        let steady = s.agents[0].clone();
        s.events.remove(9);
        s.events.insert(9, spawned(10400, &steady, 1));
        assert_eq!(
            failed("escalation", &s.seen()),
            ["its agents escalate and exit for good"]
        );

        // A third restart before the escalation: the intensity did not hold.
        let mut s = Recorded::escalation();
        let c = s.agents[1].clone();
        s.events.insert(8, restarting(9990, &c, 3, 400));
        assert_eq!(
            failed("escalation", &s.seen()),
            ["crashy is restarted 2 time(s), the intensity"]
        );

        // No escalation at all: the group and its agents are still there.
        let mut s = Recorded::escalation();
        s.events.truncate(8);
        s.groups.push(listed("fragile", 2, &["running", "running"]));
        let (st, c) = (s.agents[0].clone(), s.agents[1].clone());
        s.list.push(row(&st, AgentState::Running, 0, st.pid));
        s.list.push(row(&c, AgentState::Running, 2, 1));
        assert_eq!(failed("escalation", &s.seen()).len(), 3);
        assert!(!done("escalation", &s.seen()) && !all_gone(&s.seen()));
    }

    impl Recorded {
        /// As recorded: the child group restarts crashy once, escalates on its second crash,
        /// the parent restarts the child group.
        fn nested() -> Recorded {
            let agents = vec![
                member("keeper", 18, "parent"),
                member("crashy", 19, "child"),
                member("steady", 20, "child"),
            ];
            let [k, c, s] = [&agents[0], &agents[1], &agents[2]];
            let events = vec![
                spawned(10672, k, 0),
                spawned(10684, c, 0),
                spawned(10712, s, 0),
                exited(11257, c, 1, true),
                restarting(11257, c, 1, 100),
                spawned(11382, c, 1),
                group_escalated(11940, "child", Some("parent"), 1),
                exited(12105, c, 1, true),
                restarting(12105, c, 2, 0),
                spawned(12136, c, 2),
                exited(12136, s, 0, true),
                restarting(12136, s, 1, 0),
                spawned(12172, s, 1),
            ];
            let list = vec![
                row(k, AgentState::Running, 0, k.pid),
                row(c, AgentState::Running, 2, 1),
                row(s, AgentState::Running, 1, 2),
            ];
            let mut child = listed("child", 1, &["running", "running"]);
            child.parent = Some("parent".into());
            Recorded {
                agents,
                events,
                list,
                groups: vec![listed("parent", 1, &["running", "running"]), child],
                names: groups(&[("parent", "parent"), ("child", "child")]),
            }
        }
    }

    #[test]
    fn nested_as_recorded_is_as_expected() {
        let s = Recorded::nested();
        let checks = judge("nested", &s.seen());
        assert_eq!(verdict(&checks), "as expected", "{checks:#?}");
        assert!(checks[1]
            .evidence
            .contains("escalated to [parent] (gave_up false)"));
        assert!(done("nested", &s.seen()));
        let mut early = Recorded::nested();
        early.events.truncate(10);
        assert!(!done("nested", &early.seen()));
    }

    #[test]
    fn nested_flags_a_parent_that_escalates_or_touches_its_other_child() {
        // The parent escalated too (beyond its own intensity).
        let mut s = Recorded::nested();
        s.events.push(group_escalated(12500, "parent", None, 2));
        assert_eq!(
            failed("nested", &s.seen()),
            ["the parent restarts the child group's workers in start order"]
        );

        // The parent restarted its other worker as well (one_for_all-like).
        let mut s = Recorded::nested();
        let k = s.agents[0].clone();
        s.events.push(exited(12200, &k, 0, true));
        s.list[0] = row(&k, AgentState::Running, 1, 4242);
        assert_eq!(
            failed("nested", &s.seen()),
            ["the parent's other worker keeps running"]
        );

        // The child group handled the second crash itself (no escalation).
        let mut s = Recorded::nested();
        s.events.remove(6);
        let f = failed("nested", &s.seen());
        assert!(
            f.contains(&"its second crash escalates to the parent".to_owned()),
            "{f:?}"
        );
        assert!(f.contains(&"the child group restarts crashy once (its intensity)".to_owned()));
        assert!(!done("nested", &s.seen()));

        // The child group is still waiting for its parent.
        let mut s = Recorded::nested();
        s.groups[1].state = "waiting".into();
        assert_eq!(
            failed("nested", &s.seen()),
            ["GROUP_LIST: the parent restarted once; the child group runs again"]
        );
    }

    #[test]
    fn nothing_seen_is_unexpected_not_a_panic() {
        let empty = Seen {
            events: &[],
            agents: &[],
            groups: &[],
            list: &[],
            group_list: &[],
        };
        for s in SCENARIOS {
            let checks = judge(s.name, &empty);
            assert!(verdict(&checks).starts_with("UNEXPECTED: "), "{}", s.name);
            assert!(!all_gone(&empty));
        }
        assert_eq!(verdict(&[]), "UNEXPECTED: nothing was checked");
        let two = [
            Check::new("x", false, "seen x"),
            Check::new("y", true, "fine"),
            Check::new("z", false, "seen z"),
        ];
        assert_eq!(
            verdict(&two),
            "UNEXPECTED: x: seen x (and 1 more failed check(s))"
        );
    }

    #[test]
    fn scenarios_are_consistent() {
        let mut names: Vec<&str> = SCENARIOS.iter().map(|s| s.name).collect();
        names.dedup();
        assert_eq!(names.len(), SCENARIOS.len());
        for s in SCENARIOS {
            for (i, g) in s.groups.iter().enumerate() {
                if let Some(p) = g.parent {
                    assert!(
                        s.groups[..i].iter().any(|x| x.label == p),
                        "{}: parent {p} must come first",
                        s.name
                    );
                }
            }
            for w in s.workers {
                assert!(s.groups.iter().any(|g| g.label == w.group), "{}", s.name);
                assert_eq!(
                    s.workers.iter().filter(|x| x.label == w.label).count(),
                    1,
                    "{}",
                    s.name
                );
            }
            // Modest: the whole demo stays well under a minute even at its limits.
            assert!(s.limit <= Duration::from_secs(15));
        }
        assert!(WORKER.contains("crash:"));
    }

    #[test]
    fn events_read_as_a_timeline() {
        let m = member("crashy", 11, "pool");
        let e = restarting(1098, &m, 1, 200);
        assert_eq!(
            timeline_line(&e),
            "  +  1.098s  AGENT_RESTARTING  crashy#11     restart 1 in 200 ms"
        );
        let g = group_escalated(12_345, "child", Some("parent"), 1);
        assert_eq!(
            timeline_line(&g),
            "  + 12.345s  GROUP_ESCALATED   [child]       more than 1 restart(s) in 10s: escalated to [parent] (gave_up false)"
        );
        assert_eq!(
            exited(5, &m, 1, false).details,
            "exited with code 1; for good"
        );
        assert_eq!(
            spawned(5, &m, 2).details,
            "running again (restart 2), pid 5005"
        );
    }
}
