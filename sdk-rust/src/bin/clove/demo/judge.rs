//! Judging the demos: the evidence the runner gathers, and the rule that turns it into one
//! row per attack, `contained`, `ESCAPED` or `ERROR`.
//!
//! Everything here is pure, so each rule is tested with both outcomes (a judge that can only
//! say "contained" proves nothing). What the attacker reports is trusted only for what the host
//! cannot see itself; host-side observations (listeners, the writable dir, LIST, HELLO) win.

use std::path::PathBuf;
use std::time::Duration;

use clove_sdk::msg::{AgentState, WaitReply};
use serde::Serialize;
use serde_json::Value;

use crate::table::Table;

/// Limits of the attacks, and the figures they are judged against.
pub const FORK_PIDS: u64 = 16;
pub const HOG_MEMORY: u64 = 64 << 20;
pub const HOG_CPUS: f64 = 0.2;
/// CPU time / wall time above this is an escape of the 0.2 CPU quota.
pub const CPU_RATIO_MAX: f64 = 0.3;
pub const CPU_SECONDS: &str = "3";

/// The longest an attacker may run before the runner gives up on it.
pub const ATTACK_LIMIT: Duration = Duration::from_secs(60);

/// How one attack ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The sandbox held.
    Contained,
    /// The attack reached what it aimed at.
    Escaped,
    /// The demo could not tell (no verdict, a failed call).
    Error,
}

impl Outcome {
    /// The RESULT column: `contained`, `ESCAPED`, `ERROR`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Contained => "contained",
            Outcome::Escaped => "ESCAPED",
            Outcome::Error => "ERROR",
        }
    }

    fn from_contained(contained: bool) -> Outcome {
        if contained {
            Outcome::Contained
        } else {
            Outcome::Escaped
        }
    }
}

/// One row of the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// The demo.
    pub demo: String,
    /// The attack.
    pub attack: String,
    /// How it ended.
    pub result: Outcome,
    /// Why the runner says so.
    pub evidence: String,
}

impl Row {
    /// A judged row: `contained` when the evidence says the sandbox held, else `ESCAPED`.
    pub fn new(
        demo: &str,
        attack: impl Into<String>,
        contained: bool,
        evidence: impl Into<String>,
    ) -> Row {
        Row {
            demo: demo.to_owned(),
            attack: attack.into(),
            result: Outcome::from_contained(contained),
            evidence: evidence.into(),
        }
    }

    /// A row the runner could not judge.
    pub fn error(demo: &str, attack: impl Into<String>, evidence: impl Into<String>) -> Row {
        Row {
            demo: demo.to_owned(),
            attack: attack.into(),
            result: Outcome::Error,
            evidence: evidence.into(),
        }
    }
}

/// The report's table: DEMO ATTACK RESULT EVIDENCE.
pub fn report_table(rows: &[Row]) -> String {
    let mut t = Table::new(&["DEMO", "ATTACK", "RESULT", "EVIDENCE"]);
    for r in rows {
        t.push(vec![
            r.demo.clone(),
            r.attack.clone(),
            r.result.as_str().to_owned(),
            r.evidence.clone(),
        ]);
    }
    t.render()
}

/// What the runner saw of one demo, from the agent and from outside.
#[derive(Debug, Clone, Default)]
pub struct Evidence {
    /// The attacker's `DEMO {json}` line, parsed.
    pub verdict: Option<Value>,
    /// The attacker's last output line (for errors).
    pub last_line: String,
    /// The attacker's whole output.
    pub log: String,
    /// WAIT's reply for the attacker.
    pub wait: WaitReply,
    /// network-probe: what the host's listeners received.
    pub net: Option<NetSeen>,
    /// fs-escape: what the host side looked like afterwards.
    pub fs: Option<FsSeen>,
    /// The neighbour after the attack.
    pub neighbour: NeighbourSeen,
    /// The kernel answered HELLO on a new connection after the attack.
    pub kernel_alive: bool,
    /// The kernel's pid was known (privilege aims SIGKILL at it).
    pub kernel_pid_known: bool,
}

/// What the runner's listeners received.
#[derive(Debug, Clone, Default)]
pub struct NetSeen {
    /// The TCP listener's port.
    pub tcp_port: u16,
    /// The UDP listener's port.
    pub udp_port: u16,
    /// Connections accepted.
    pub tcp_connections: usize,
    /// Datagrams received.
    pub udp_datagrams: usize,
    /// Something that arrived carried the probe's nonce (so it came from the attacker).
    pub nonce_seen: bool,
}

/// The host side of fs-escape afterwards.
#[derive(Debug, Clone, Default)]
pub struct FsSeen {
    /// The canary's contents.
    pub secret: String,
    /// What is in the world-writable directory now (should be nothing).
    pub written: Vec<String>,
    /// The neighbour's work dir on the host, when the state dir is known.
    pub workdir: Option<PathBuf>,
}

/// The neighbour after the attack.
#[derive(Debug, Clone, Default)]
pub struct NeighbourSeen {
    /// Its id.
    pub id: u32,
    /// Its LIST state (`None`: not listed any more).
    pub state: Option<AgentState>,
    /// Its pid is the one it started with.
    pub same_pid: bool,
    /// Heartbeats it printed from the start of the attack on.
    pub heartbeats: usize,
}

/// A string field of the verdict, `?` when missing.
fn text<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("?")
}

/// The rows of one demo.
pub fn judge(demo: &str, ev: &Evidence) -> Vec<Row> {
    let mut rows = match demo {
        "fork-bomb" => judge_fork_bomb(ev),
        "memory-hog" => judge_memory_hog(ev),
        "cpu-hog" => judge_cpu_hog(ev),
        "network-probe" => judge_network(ev),
        "fs-escape" => judge_fs(ev),
        "privilege" => judge_privilege(ev),
        other => vec![Row::error(other, "?", "unknown demo")],
    };
    rows.push(judge_neighbour(demo, ev));
    rows
}

/// The rows when the attacker printed no verdict.
fn no_verdict(demo: &str, attack: &str, ev: &Evidence) -> Vec<Row> {
    let how = ev
        .wait
        .reason
        .clone()
        .unwrap_or_else(|| "did not exit".into());
    vec![Row::error(
        demo,
        attack,
        format!(
            "no DEMO line in the attacker's output ({how}; last line: {:?})",
            ev.last_line
        ),
    )]
}

fn judge_fork_bomb(ev: &Evidence) -> Vec<Row> {
    const ATTACK: &str = "fork until failure";
    let demo = "fork-bomb";
    if !ev.wait.exited {
        return vec![Row::new(
            demo,
            ATTACK,
            false,
            format!("still running after {} s", ATTACK_LIMIT.as_secs()),
        )];
    }
    let Some(v) = &ev.verdict else {
        return no_verdict(demo, ATTACK, ev);
    };
    let peak = v
        .get("processes")
        .and_then(Value::as_u64)
        .unwrap_or(u64::MAX);
    let error = v.get("error").and_then(Value::as_str);
    let contained = peak <= FORK_PIDS && error.is_some();
    let evidence = match error {
        Some(e) => format!(
            "peak {peak} processes (pids.max {FORK_PIDS}); fork failed with {e}; the demo ended ({})",
            ev.wait.reason.as_deref().unwrap_or("exited")
        ),
        None => format!("{peak} processes without a single failed fork (stopped at its safety cap)"),
    };
    vec![Row::new(demo, ATTACK, contained, evidence)]
}

/// The highest `allocated N MiB` the memory hog printed.
pub fn allocated_mib(log: &str) -> Option<u64> {
    log.lines()
        .filter_map(|l| {
            l.strip_prefix("allocated ")?
                .strip_suffix(" MiB")?
                .parse()
                .ok()
        })
        .max()
}

fn judge_memory_hog(ev: &Evidence) -> Vec<Row> {
    const ATTACK: &str = "allocate in 8 MiB steps";
    let demo = "memory-hog";
    let limit_mib = HOG_MEMORY >> 20;
    let got = allocated_mib(&ev.log)
        .map(|m| format!("{m} MiB"))
        .unwrap_or_else(|| "nothing".into());
    if !ev.wait.exited {
        return vec![Row::error(
            demo,
            ATTACK,
            format!(
                "still running after {} s, {got} allocated",
                ATTACK_LIMIT.as_secs()
            ),
        )];
    }
    let reason = ev.wait.reason.as_deref().unwrap_or("exited");
    let killed = ev.wait.oom || ev.wait.signal == Some(9);
    let capped = ev.verdict.is_some();
    let contained = killed && !capped && allocated_mib(&ev.log).unwrap_or(0) < limit_mib;
    let evidence = format!(
        "WAIT: {reason}, oom {}, after {got} allocated (limit {limit_mib} MiB)",
        ev.wait.oom
    );
    vec![Row::new(demo, ATTACK, contained, evidence)]
}

fn judge_cpu_hog(ev: &Evidence) -> Vec<Row> {
    const ATTACK: &str = "busy loop for 3 s";
    let demo = "cpu-hog";
    let Some(v) = &ev.verdict else {
        return no_verdict(demo, ATTACK, ev);
    };
    let num = |k: &str| v.get(k).and_then(Value::as_f64);
    let (Some(cpu), Some(wall)) = (num("cpu_s"), num("wall_s")) else {
        return vec![Row::error(
            demo,
            ATTACK,
            format!("verdict without cpu_s/wall_s: {v}"),
        )];
    };
    let ratio = if wall > 0.0 {
        cpu / wall
    } else {
        f64::INFINITY
    };
    let contained = ratio <= CPU_RATIO_MAX;
    let evidence = format!(
        "{cpu:.2} s CPU in {wall:.2} s wall = {ratio:.2} CPUs (quota {HOG_CPUS}, escape above {CPU_RATIO_MAX})"
    );
    vec![Row::new(demo, ATTACK, contained, evidence)]
}

fn judge_network(ev: &Evidence) -> Vec<Row> {
    let demo = "network-probe";
    let (Some(v), Some(net)) = (&ev.verdict, &ev.net) else {
        return no_verdict(demo, "reach the host's network", ev);
    };
    let from = if net.nonce_seen {
        " (carrying the attacker's nonce)"
    } else {
        ""
    };
    let nothing = |n: usize, what: &str| {
        if n == 0 {
            format!("0 {what}")
        } else {
            format!("{n} {what}{from}")
        }
    };
    vec![
        Row::new(
            demo,
            format!("TCP connect to host 127.0.0.1:{}", net.tcp_port),
            net.tcp_connections == 0,
            format!(
                "agent: {}; host listener: {}",
                text(v, "/tcp"),
                nothing(net.tcp_connections, "connections")
            ),
        ),
        Row::new(
            demo,
            format!("UDP datagram to host 127.0.0.1:{}", net.udp_port),
            net.udp_datagrams == 0,
            format!(
                "agent: {}; host listener: {}",
                text(v, "/udp"),
                nothing(net.udp_datagrams, "datagrams")
            ),
        ),
        Row::new(
            demo,
            "packet socket (AF_PACKET)",
            text(v, "/packet_socket") != "opened",
            format!("socket(): {}", text(v, "/packet_socket")),
        ),
        Row::new(
            demo,
            "raw socket (AF_INET, SOCK_RAW)",
            text(v, "/raw_socket") != "opened",
            format!(
                "socket(): {}; interfaces seen: {}",
                text(v, "/raw_socket"),
                v.get("interfaces")
                    .map(Value::to_string)
                    .unwrap_or_default()
            ),
        ),
    ]
}

fn judge_fs(ev: &Evidence) -> Vec<Row> {
    let demo = "fs-escape";
    let (Some(v), Some(fs)) = (&ev.verdict, &ev.fs) else {
        return no_verdict(demo, "reach host files", ev);
    };
    let mut rows = Vec::new();

    let canary = text(v, "/canary/result");
    let content = text(v, "/canary/content");
    let evidence = if canary == "read" {
        let same = if content == fs.secret {
            "the canary's secret"
        } else {
            "not the secret"
        };
        format!("read {:?} ({same})", content)
    } else {
        format!("{}: {canary}", text(v, "/canary/path"))
    };
    rows.push(Row::new(
        demo,
        "read a host canary file (0644)",
        canary != "read",
        evidence,
    ));

    let write = text(v, "/write/result");
    let contained = write != "written" && fs.written.is_empty();
    let evidence = format!(
        "agent: {write}; the host dir holds {}",
        if fs.written.is_empty() {
            "nothing".to_owned()
        } else {
            fs.written.join(", ")
        }
    );
    rows.push(Row::new(
        demo,
        "write into a host dir (1777)",
        contained,
        evidence,
    ));

    let foreign = v.pointer("/proc/foreign").and_then(Value::as_u64);
    let visible = v
        .pointer("/proc/visible")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let row = match foreign {
        Some(0) => Row::new(
            demo,
            "list /proc for host processes",
            true,
            format!("{visible} processes visible, all its own (its init and itself)"),
        ),
        Some(n) => Row::new(
            demo,
            "list /proc for host processes",
            false,
            format!(
                "{visible} processes visible, {n} not its own, e.g. {}",
                v.pointer("/proc/foreign_sample")
                    .map(Value::to_string)
                    .unwrap_or_default()
            ),
        ),
        None => Row::error(
            demo,
            "list /proc for host processes",
            format!("no /proc result: {v}"),
        ),
    };
    rows.push(row);

    let attack = "list the neighbour's work dir";
    let row = match &fs.workdir {
        None => Row::error(
            demo,
            attack,
            "the kernel's state dir is unknown (run as root or the kernel's uid, or give --state-dir)",
        ),
        Some(dir) => {
            let result = text(v, "/neighbour_workdir/result");
            let shown = if result == "listed" {
                format!(
                    "listed {}",
                    v.pointer("/neighbour_workdir/entries").map(Value::to_string).unwrap_or_default()
                )
            } else {
                result.to_owned()
            };
            // Only "not there at all" counts: EACCES would mean the path is visible.
            Row::new(demo, attack, result == "ENOENT", format!("{}: {shown}", dir.display()))
        }
    };
    rows.push(row);
    rows
}

fn judge_privilege(ev: &Evidence) -> Vec<Row> {
    let demo = "privilege";
    let Some(v) = &ev.verdict else {
        return no_verdict(demo, "gain or use privileges", ev);
    };
    let mut rows = Vec::new();
    let seccomp = text(v, "/status/Seccomp");
    let nnp = text(v, "/status/NoNewPrivs");
    let bnd = text(v, "/status/CapBnd");
    let eff = text(v, "/status/CapEff");
    let zero = |s: &str| !s.is_empty() && s.bytes().all(|b| b == b'0');
    rows.push(Row::new(
        demo,
        "layers in /proc/self/status",
        seccomp == "2" && nnp == "1" && zero(bnd) && zero(eff),
        format!("Seccomp {seccomp}, NoNewPrivs {nnp}, CapBnd {bnd}, CapEff {eff}"),
    ));
    for (key, attack) in [
        ("unshare_user", "unshare(CLONE_NEWUSER)"),
        ("mount", "mount a tmpfs"),
        ("setuid0", "setuid(0)"),
        ("ptrace_neighbour", "ptrace(PTRACE_ATTACH) the neighbour"),
    ] {
        let r = text(v, &format!("/{key}"));
        let row = if r.starts_with("skipped") {
            Row::error(demo, attack, r)
        } else {
            Row::new(demo, attack, r != "ok" && r != "?", format!("agent: {r}"))
        };
        rows.push(row);
    }
    let r = text(v, "/kill_neighbour");
    let alive = ev.neighbour.state == Some(AgentState::Running) && ev.neighbour.same_pid;
    rows.push(if r.starts_with("skipped") {
        Row::error(demo, "SIGKILL the neighbour", r)
    } else {
        Row::new(
            demo,
            "SIGKILL the neighbour",
            r != "ok" && r != "?" && alive,
            format!(
                "agent: {r}; neighbour {}",
                if alive { "still running" } else { "GONE" }
            ),
        )
    });
    let r = text(v, "/kill_kernel");
    rows.push(if !ev.kernel_pid_known || r.starts_with("skipped") {
        Row::error(
            demo,
            "SIGKILL the kernel",
            format!("kernel pid unknown: {r}"),
        )
    } else {
        Row::new(
            demo,
            "SIGKILL the kernel",
            r != "ok" && r != "?" && ev.kernel_alive,
            format!(
                "agent: {r}; kernel {}",
                if ev.kernel_alive {
                    "still answers"
                } else {
                    "DOES NOT ANSWER"
                }
            ),
        )
    });
    rows
}

fn judge_neighbour(demo: &str, ev: &Evidence) -> Row {
    let n = &ev.neighbour;
    let state = n.state.map(|s| s.as_str()).unwrap_or("gone");
    let ok = n.state == Some(AgentState::Running) && n.same_pid && n.heartbeats > 0;
    Row::new(
        demo,
        "neighbour keeps running",
        ok,
        format!(
            "agent {} {state}{}, {} heartbeat{} since the attack began",
            n.id,
            if n.same_pid { "" } else { " (new pid)" },
            n.heartbeats,
            if n.heartbeats == 1 { "" } else { "s" }
        ),
    )
}

/// The attacker's verdict: the last `DEMO {json}` line of its output.
pub fn parse_verdict(log: &str) -> Option<Value> {
    log.lines()
        .rev()
        .filter_map(|l| l.strip_prefix("DEMO "))
        .find_map(|j| serde_json::from_str(j).ok())
}

/// The number of whole heartbeat lines in `text`.
pub fn heartbeats(text: &str) -> usize {
    text.split_inclusive('\n')
        .filter(|l| l.starts_with("heartbeat ") && l.ends_with('\n'))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn exited(code: Option<i32>, signal: Option<i32>, oom: bool, reason: &str) -> WaitReply {
        WaitReply {
            success: true,
            agent_id: 9,
            exited: true,
            exit_code: code,
            signal,
            oom,
            reason: Some(reason.into()),
        }
    }

    fn healthy() -> NeighbourSeen {
        NeighbourSeen {
            id: 8,
            state: Some(AgentState::Running),
            same_pid: true,
            heartbeats: 5,
        }
    }

    fn ev(verdict: Option<Value>, wait: WaitReply) -> Evidence {
        Evidence {
            verdict,
            wait,
            neighbour: healthy(),
            kernel_alive: true,
            kernel_pid_known: true,
            ..Evidence::default()
        }
    }

    fn results(rows: &[Row]) -> Vec<(String, Outcome)> {
        rows.iter().map(|r| (r.attack.clone(), r.result)).collect()
    }

    fn only(rows: &[Row], attack: &str) -> Outcome {
        rows.iter()
            .find(|r| r.attack.starts_with(attack))
            .map(|r| r.result)
            .unwrap_or_else(|| panic!("no row {attack:?} in {rows:#?}"))
    }

    #[test]
    fn the_verdict_is_the_last_demo_line() {
        let log = "noise\nDEMO {\"a\": 1}\nDEMO not json\nDEMO {\"a\": 2}\ntrailer\n";
        assert_eq!(parse_verdict(log), Some(json!({"a": 2})));
        assert_eq!(parse_verdict("nothing"), None);
    }

    #[test]
    fn fork_bomb_is_contained_only_under_the_pids_limit() {
        let w = exited(Some(0), None, false, "exited with code 0");
        let ok = judge(
            "fork-bomb",
            &ev(Some(json!({"processes": 15, "error": "EAGAIN"})), w.clone()),
        );
        assert_eq!(only(&ok, "fork"), Outcome::Contained);
        assert!(ok[0].evidence.contains("peak 15 processes"), "{ok:?}");
        let over = judge(
            "fork-bomb",
            &ev(Some(json!({"processes": 40, "error": "EAGAIN"})), w.clone()),
        );
        assert_eq!(only(&over, "fork"), Outcome::Escaped);
        let capped = judge(
            "fork-bomb",
            &ev(Some(json!({"processes": 512, "error": null})), w),
        );
        assert_eq!(only(&capped, "fork"), Outcome::Escaped);
        let endless = judge("fork-bomb", &ev(None, WaitReply::default()));
        assert_eq!(only(&endless, "fork"), Outcome::Escaped);
    }

    #[test]
    fn memory_hog_is_contained_when_the_oom_killer_ends_it() {
        let mut e = ev(
            None,
            exited(None, Some(9), true, "killed by signal 9 (out of memory)"),
        );
        e.log = "allocated 8 MiB\nallocated 48 MiB\n".into();
        let rows = judge("memory-hog", &e);
        assert_eq!(only(&rows, "allocate"), Outcome::Contained);
        assert!(rows[0].evidence.contains("48 MiB allocated"), "{rows:?}");
        // Reaching the safety cap, or exiting on its own, is an escape.
        let mut e = ev(
            Some(json!({"allocated_mib": 256})),
            exited(Some(0), None, false, "exited with code 0"),
        );
        e.log = "allocated 256 MiB\n".into();
        assert_eq!(only(&judge("memory-hog", &e), "allocate"), Outcome::Escaped);
    }

    #[test]
    fn cpu_hog_is_judged_by_its_cpu_share() {
        let w = exited(Some(0), None, false, "exited with code 0");
        let rows = judge(
            "cpu-hog",
            &ev(Some(json!({"cpu_s": 0.6, "wall_s": 3.0})), w.clone()),
        );
        assert_eq!(only(&rows, "busy"), Outcome::Contained);
        assert!(rows[0].evidence.contains("0.20 CPUs"), "{rows:?}");
        let rows = judge(
            "cpu-hog",
            &ev(Some(json!({"cpu_s": 2.9, "wall_s": 3.0})), w.clone()),
        );
        assert_eq!(only(&rows, "busy"), Outcome::Escaped);
        let rows = judge("cpu-hog", &ev(None, w));
        assert_eq!(only(&rows, "busy"), Outcome::Error);
    }

    #[test]
    fn network_probe_trusts_the_listeners_not_the_agent() {
        let v = json!({"tcp": "ECONNREFUSED", "udp": "sent", "packet_socket": "EPERM",
                       "raw_socket": "EPERM", "interfaces": ["lo"]});
        let w = exited(Some(0), None, false, "exited with code 0");
        let mut e = ev(Some(v.clone()), w.clone());
        e.net = Some(NetSeen {
            tcp_port: 1,
            udp_port: 2,
            ..NetSeen::default()
        });
        let rows = judge("network-probe", &e);
        assert!(
            rows.iter().all(|r| r.result == Outcome::Contained),
            "{rows:#?}"
        );
        // "sent" is fine as long as nothing arrived; an arrival is an escape.
        e.net = Some(NetSeen {
            tcp_port: 1,
            udp_port: 2,
            tcp_connections: 1,
            udp_datagrams: 1,
            nonce_seen: true,
        });
        let rows = judge("network-probe", &e);
        assert_eq!(only(&rows, "TCP"), Outcome::Escaped);
        assert!(
            rows[0]
                .evidence
                .ends_with("1 connections (carrying the attacker's nonce)"),
            "{rows:?}"
        );
        assert_eq!(only(&rows, "UDP"), Outcome::Escaped);
        let mut v2 = v;
        v2["raw_socket"] = json!("opened");
        let mut e = ev(Some(v2), w);
        e.net = Some(NetSeen::default());
        assert_eq!(only(&judge("network-probe", &e), "raw"), Outcome::Escaped);
    }

    #[test]
    fn fs_escape_rows_follow_the_evidence() {
        let w = exited(Some(0), None, false, "exited with code 0");
        let contained = json!({
            "canary": {"path": "/tmp/c/canary.txt", "result": "ENOENT"},
            "write": {"result": "ENOENT"},
            "proc": {"visible": 2, "foreign": 0},
            "neighbour_workdir": {"result": "ENOENT"},
        });
        let mut e = ev(Some(contained), w.clone());
        e.fs = Some(FsSeen {
            secret: "s3cret".into(),
            written: vec![],
            workdir: Some("/state/agents/8/work".into()),
        });
        let rows = judge("fs-escape", &e);
        assert_eq!(rows.len(), 5, "{rows:#?}");
        assert!(
            rows.iter().all(|r| r.result == Outcome::Contained),
            "{rows:#?}"
        );

        let escaped = json!({
            "canary": {"result": "read", "content": "s3cret"},
            "write": {"result": "written"},
            "proc": {"visible": 150, "foreign": 148, "foreign_sample": ["1:systemd"]},
            "neighbour_workdir": {"result": "EACCES"},
        });
        let mut e = ev(Some(escaped), w);
        e.fs = Some(FsSeen {
            secret: "s3cret".into(),
            written: vec!["escaped-by-agent-9".into()],
            workdir: Some("/state/agents/8/work".into()),
        });
        let rows = judge("fs-escape", &e);
        for attack in [
            "read a host canary",
            "write into",
            "list /proc",
            "list the neighbour",
        ] {
            assert_eq!(only(&rows, attack), Outcome::Escaped, "{attack}");
        }
        assert!(rows[0].evidence.contains("the canary's secret"), "{rows:?}");
    }

    #[test]
    fn privilege_needs_every_layer_and_every_call_to_fail() {
        let v = json!({
            "status": {"Seccomp": "2", "NoNewPrivs": "1", "CapBnd": "0000000000000000", "CapEff": "0000000000000000"},
            "unshare_user": "EPERM", "mount": "EPERM", "setuid0": "EPERM",
            "ptrace_neighbour": "EPERM", "kill_neighbour": "ESRCH", "kill_kernel": "ESRCH",
        });
        let w = exited(Some(0), None, false, "exited with code 0");
        let rows = judge("privilege", &ev(Some(v.clone()), w.clone()));
        assert_eq!(rows.len(), 8, "{rows:#?}");
        assert!(
            rows.iter().all(|r| r.result == Outcome::Contained),
            "{rows:#?}"
        );

        let mut bad = v.clone();
        bad["status"]["Seccomp"] = json!("0");
        bad["setuid0"] = json!("ok");
        let rows = judge("privilege", &ev(Some(bad), w.clone()));
        assert_eq!(only(&rows, "layers"), Outcome::Escaped);
        assert_eq!(only(&rows, "setuid"), Outcome::Escaped);
        // The call "failed" but the kernel is gone: escaped all the same.
        let mut e = ev(Some(v), w);
        e.kernel_alive = false;
        assert_eq!(
            only(&judge("privilege", &e), "SIGKILL the kernel"),
            Outcome::Escaped
        );
    }

    #[test]
    fn a_dead_or_silent_neighbour_is_an_escape() {
        let w = exited(Some(0), None, false, "exited with code 0");
        let mut e = ev(Some(json!({"cpu_s": 0.6, "wall_s": 3.0})), w);
        assert_eq!(only(&judge("cpu-hog", &e), "neighbour"), Outcome::Contained);
        e.neighbour.heartbeats = 0;
        assert_eq!(only(&judge("cpu-hog", &e), "neighbour"), Outcome::Escaped);
        e.neighbour = NeighbourSeen {
            id: 8,
            ..NeighbourSeen::default()
        };
        let rows = judge("cpu-hog", &e);
        assert_eq!(only(&rows, "neighbour"), Outcome::Escaped);
        assert_eq!(results(&rows).len(), 2);
    }

    #[test]
    fn the_report_is_a_four_column_table() {
        let rows = vec![
            Row::new("fork-bomb", "fork until failure", true, "peak 15"),
            Row::new("cpu-hog", "busy loop", false, "0.98 CPUs"),
            Row::error("privilege", "run the demo", "spawn failed"),
        ];
        assert_eq!(
            report_table(&rows),
            "DEMO       ATTACK              RESULT     EVIDENCE\n\
             fork-bomb  fork until failure  contained  peak 15\n\
             cpu-hog    busy loop           ESCAPED    0.98 CPUs\n\
             privilege  run the demo        ERROR      spawn failed\n"
        );
    }
}
