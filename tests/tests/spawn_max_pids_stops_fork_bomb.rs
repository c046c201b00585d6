//! `limits.max_pids` holds: a fork bomb under `max_pids: 8` gets fewer than 8 processes (fork
//! fails with EAGAIN), and a healthy agent beside it keeps running. Heavy: takes the heavy
//! test lock.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use clove_abi::msg::{AgentState, Limits};
use clove_tests::{
    agent_output, agents_can_run, client, heavy_test_lock, kill_agent, last_count, list_agents,
    spawn_ok, spawn_request, wait_output_line, Kernel,
};

const MAX_PIDS: u64 = 8;

#[test]
fn spawn_max_pids_stops_fork_bomb() {
    if !agents_can_run("spawn_max_pids_stops_fork_bomb") {
        return;
    }
    let _lock = heavy_test_lock().unwrap();
    let kernel = Kernel::start().unwrap();
    let mut c = client(&kernel).unwrap();
    let healthy = spawn_ok(&mut c, &spawn_request("healthy", "agent_counter.py")).unwrap();
    let mut bomb = spawn_request("bomb", "agent_fork_bomb.py");
    bomb.limits = Some(Limits {
        max_pids: MAX_PIDS,
        ..Limits::default()
    });
    let bomb = spawn_ok(&mut c, &bomb).unwrap();
    assert!(bomb.isolation.cgroups.pids_limit, "{:?}", bomb.isolation);

    let line = wait_output_line(&kernel, bomb.id, "FORKBOMB ", Duration::from_secs(30)).unwrap();
    let score: serde_json::Value = serde_json::from_str(&line).unwrap();
    let forked = score["forked"].as_u64().unwrap();
    eprintln!("fork bomb under max_pids {MAX_PIDS}: {score}");
    // The bomb itself and the sandbox's init count too, so even fewer forks succeed.
    assert!(
        forked < MAX_PIDS,
        "{forked} forks succeeded under max_pids {MAX_PIDS}: {score}"
    );
    assert!(forked >= 1, "fork never worked at all: {score}");
    assert_eq!(score["errors"], serde_json::json!(["EAGAIN"]), "{score}");

    // The bomb is still there, held at its limit, and the neighbour still makes progress.
    let rows = list_agents(&mut c).unwrap();
    for id in [bomb.id, healthy.id] {
        let row = rows
            .iter()
            .find(|r| r.id == id)
            .unwrap_or_else(|| panic!("{rows:?}"));
        assert_eq!(row.state, AgentState::Running, "{row:?}");
    }
    let before = last_count(&kernel, healthy.id).unwrap();
    let start = Instant::now();
    while last_count(&kernel, healthy.id).unwrap() < before + 5 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the healthy agent stopped counting at {before}; output:\n{}",
            agent_output(&kernel, healthy.id).unwrap()
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    kill_agent(&mut c, bomb.id).unwrap();
    kill_agent(&mut c, healthy.id).unwrap();
}
