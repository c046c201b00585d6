//! Metrics follow a real sandboxed agent: when it allocates and writes 100 MiB, METRICS_AGENT
//! shows its RSS and its cgroup's memory grow by that much (within 10 %); METRICS_ALL_AGENTS
//! lists it, METRICS_CGROUP reads its cgroup by the path a reply gave, the agent reads its
//! own figures without an id, and another operator is refused.
//!
//! The agent (tests/python/agent_metrics_alloc.py) waits on RECV until the test sends it a
//! message, allocates, and waits again until it is killed.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use clove_abi::msg::{AgentMetrics, SendRequest};
use clove_tests::{
    agents_can_run, client, kill_agent, requests_as_nobody, spawn_ok, spawn_request,
    wait_output_line, Kernel,
};
use serde_json::{json, Value};

const MIB: f64 = (1u64 << 20) as f64;
const METRICS_SYSTEM: u8 = 0xC0;
const METRICS_AGENT: u8 = 0xC1;
const METRICS_ALL_AGENTS: u8 = 0xC2;
const METRICS_CGROUP: u8 = 0xC3;

/// `after - before` is 100 MiB within 10 %.
fn grew_by_100_mib(what: &str, before: u64, after: u64) {
    let grown = (after as f64 - before as f64) / MIB;
    assert!(
        (90.0..=110.0).contains(&grown),
        "{what} grew by {grown:.1} MiB ({before} -> {after}), not 100 MiB ± 10 %"
    );
}

fn line(kernel: &Kernel, id: u32, prefix: &str) -> Value {
    let text = wait_output_line(kernel, id, prefix, Duration::from_secs(60)).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{prefix}{text}: {e}"))
}

fn refused(reply: &Value) {
    assert_eq!(reply["success"], false, "{reply}");
    assert_eq!(reply["code"], "permission_denied", "{reply}");
}

#[test]
fn metrics_follow_an_agent_that_allocates() {
    if !agents_can_run("metrics_follow_an_agent_that_allocates") {
        return;
    }
    let kernel = Kernel::start().unwrap();
    let mut c = client(&kernel).unwrap();
    let agent = spawn_ok(&mut c, &spawn_request("alloc", "agent_metrics_alloc.py")).unwrap();
    let id = agent.id;

    // The agent's own view, without an id, on its own socket.
    let own = line(&kernel, id, "SELF ");
    assert_eq!(own["agent_id"], json!(id), "{own}");
    assert_eq!(own["reply"]["success"], true, "{own}");
    assert_eq!(own["reply"]["metrics"]["agent_id"], json!(id), "{own}");
    wait_output_line(&kernel, id, "READY", Duration::from_secs(60)).unwrap();

    let before: AgentMetrics = c.agent_metrics(Some(id)).unwrap();
    assert_eq!((before.agent_id, before.name.as_str()), (id, "alloc"));
    assert_eq!(before.status, "RUNNING");
    // The agent's own process, not the sandbox's init.
    assert_eq!(before.init_pid, Some(agent.pid), "{before:?}");
    assert!(before.pid > 0 && before.pid != agent.pid, "{before:?}");
    assert_eq!(before.process.pid, before.pid);
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", before.pid)).unwrap();
    assert!(
        String::from_utf8_lossy(&cmdline).contains("agent_metrics_alloc.py"),
        "pid {} is not the agent: {:?}",
        before.pid,
        String::from_utf8_lossy(&cmdline)
    );
    assert!(
        before.process.threads >= 1 && before.process.fds >= 3,
        "{before:?}"
    );
    assert_eq!(before.restarts, Some(0));
    let cg_before = before
        .cgroup
        .clone()
        .expect("a sandboxed agent has a cgroup");
    // The default limits: 256 MiB and 64 pids.
    assert_eq!(cg_before.memory.max, Some(256 << 20), "{cg_before:?}");
    assert_eq!(cg_before.pids.max, Some(64), "{cg_before:?}");
    assert!(
        cg_before.pids.current >= 2,
        "init and the agent: {cg_before:?}"
    );
    assert!(cg_before.memory.oom_kills == Some(0), "{cg_before:?}");

    // Allocate, then read again once the agent says it is done.
    let sent = c
        .call(&SendRequest {
            to: Some(id),
            to_name: None,
            message: clove_abi::codec::Json(json!("allocate")),
            timeout_ms: None,
        })
        .unwrap();
    assert!(sent.success, "{sent:?}");
    wait_output_line(&kernel, id, "ALLOCATED", Duration::from_secs(60)).unwrap();
    let after = c.agent_metrics(Some(id)).unwrap();
    assert_eq!(after.pid, before.pid);
    grew_by_100_mib(
        "the agent's RSS",
        before.process.memory.rss,
        after.process.memory.rss,
    );
    let cg_after = after.cgroup.clone().unwrap();
    grew_by_100_mib(
        "the agent's cgroup memory",
        cg_before.memory.current,
        cg_after.memory.current,
    );
    assert!(
        cg_after.memory.peak.unwrap_or(0) >= cg_after.memory.current,
        "{cg_after:?}"
    );
    // The agent saw the same growth from inside.
    let own2 = line(&kernel, id, "SELF2 ");
    let rss2 = own2["reply"]["metrics"]["process"]["memory"]["rss"]
        .as_u64()
        .unwrap();
    grew_by_100_mib(
        "the agent's RSS as it saw it",
        before.process.memory.rss,
        rss2,
    );

    // Every agent, and this one among them.
    let all = c.all_agent_metrics().unwrap();
    let row = all.iter().find(|a| a.agent_id == id).expect("listed");
    assert_eq!(row.pid, before.pid);

    // Its cgroup by the path the reply gave, and by agent-<id>.
    let path = cg_after.path.clone().unwrap();
    for p in [path.as_str(), &format!("agent-{id}")] {
        let cg = c.cgroup_metrics(Some(p)).unwrap();
        assert_eq!(cg.path.as_deref(), Some(path.as_str()));
        grew_by_100_mib(
            "the cgroup memory by path",
            cg_before.memory.current,
            cg.memory.current,
        );
    }
    // The whole subtree, for root: at least this agent's memory.
    let subtree = c.cgroup_metrics(None).unwrap();
    assert!(
        subtree.memory.current >= cg_after.memory.current * 9 / 10,
        "{subtree:?}"
    );
    // Escapes are refused before anything is read.
    let e = c
        .cgroup_metrics(Some(&format!("agent-{id}/../..")))
        .unwrap_err();
    assert!(e.to_string().contains("'..'"), "{e}");

    let host = c.system_metrics().unwrap();
    assert!(host.memory.total > 0 && host.cpu.count >= 1, "{host:?}");

    // Another operator sees the host, and none of this agent.
    if let Some(replies) = requests_as_nobody(
        &kernel,
        &json!([
            [METRICS_SYSTEM, {}],
            [METRICS_AGENT, {"agent_id": id}],
            [METRICS_ALL_AGENTS, {}],
            [METRICS_CGROUP, {"cgroup_path": format!("agent-{id}")}],
            [METRICS_CGROUP, {}],
            [METRICS_CGROUP, {"cgroup_path": "/system.slice"}],
        ]),
    )
    .unwrap()
    {
        assert_eq!(replies[0]["success"], true, "{}", replies[0]);
        refused(&replies[1]);
        assert_eq!(replies[2]["success"], true, "{}", replies[2]);
        assert_eq!(replies[2]["count"], 0, "{}", replies[2]);
        refused(&replies[3]);
        refused(&replies[4]);
        refused(&replies[5]);
    }

    // `clove top --once` shows the same agent with its memory against its 256 MiB limit.
    let out = std::process::Command::new(clove_tests::cli_bin())
        .args(["--socket", kernel.socket.to_str().unwrap(), "top", "--once"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let row = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some(id.to_string().as_str()))
        .unwrap_or_else(|| panic!("no row for agent {id}:\n{text}"));
    assert!(row.contains("RUNNING"), "{row}");
    assert!(
        row.contains("/256 MiB ("),
        "the memory limit is not shown: {row}"
    );

    kill_agent(&mut c, id).unwrap();
    let (status, _) = kernel.stop_and_collect().unwrap();
    assert!(status.success(), "{status:?}");
}
