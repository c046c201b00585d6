//! The delay before each restart starts at `restart_backoff_ms` and doubles per consecutive
//! restart: measured between an AGENT_EXITED that announces a restart and the AGENT_SPAWNED
//! of the restarted process (the kernel's own timestamps), each gap is at least its backoff
//! and grows by more than half each time.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use clove_sdk::msg::RestartPolicy;
use clove_tests::{
    agent_output, agents_can_run, client, events_of, gather_events, heavy_test_lock,
    restart_request, spawn_ok, subscribe_events, wait_exit, Kernel,
};

#[test]
fn backoff_doubles_per_restart() {
    if !agents_can_run("backoff_doubles_per_restart") {
        return;
    }
    // Gaps are measured: keep the heavy tests off the machine meanwhile.
    let _lock = heavy_test_lock().unwrap();
    let kernel = Kernel::start().unwrap();
    let mut events = subscribe_events(
        &kernel,
        &[
            "AGENT_SPAWNED",
            "AGENT_EXITED",
            "AGENT_RESTARTING",
            "AGENT_ESCALATED",
        ],
    )
    .unwrap();
    let mut c = client(&kernel).unwrap();
    let mut req = restart_request("backoff", "1", RestartPolicy::OnFailure, 300);
    req.max_restarts = 3;
    req.restart_window = 600.0;
    let agent = spawn_ok(&mut c, &req).unwrap();
    let mut all = Vec::new();
    gather_events(&mut events, &mut all, Duration::from_secs(60), |evs| {
        !events_of(evs, agent.id, "AGENT_ESCALATED").is_empty()
    })
    .unwrap();
    wait_exit(&mut c, agent.id, Duration::from_secs(10)).unwrap();

    let backoffs: Vec<u64> = events_of(&all, agent.id, "AGENT_RESTARTING")
        .iter()
        .map(|e| e["data"]["backoff_ms"].as_u64().unwrap())
        .collect();
    assert_eq!(backoffs, [300, 600, 1200], "{all:?}");
    let at = |e: &&serde_json::Value| e["timestamp"].as_u64().unwrap();
    let exits: Vec<u64> = events_of(&all, agent.id, "AGENT_EXITED")
        .iter()
        .filter(|e| e["data"]["restarting"] == true)
        .map(at)
        .collect();
    let starts: Vec<u64> = events_of(&all, agent.id, "AGENT_SPAWNED")
        .iter()
        .skip(1)
        .map(at)
        .collect();
    assert_eq!((exits.len(), starts.len()), (3, 3), "{all:?}");
    let gaps: Vec<u64> = exits.iter().zip(&starts).map(|(e, s)| s - e).collect();
    for (gap, backoff) in gaps.iter().zip(&backoffs) {
        assert!(gap >= backoff, "gaps {gaps:?} ms, backoffs {backoffs:?} ms");
    }
    assert!(
        gaps[1] * 2 > gaps[0] * 3 && gaps[2] * 2 > gaps[1] * 3,
        "the backoff did not grow: gaps {gaps:?} ms"
    );
    let out = agent_output(&kernel, agent.id).unwrap();
    for n in 1..=3 {
        assert!(
            out.contains(&format!("--- clove: restart {n} after exit code 1 ---")),
            "{out}"
        );
    }
}
