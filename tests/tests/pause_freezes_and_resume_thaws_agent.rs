//! PAUSE freezes every process of an agent (a counter stops advancing, LIST says PAUSED, its
//! freezer cgroup says frozen), RESUME lets it go on, and KILL of a paused agent works.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use clove_abi::msg::{AgentState, PauseRequest, ResumeRequest};
use clove_tests::{
    agents_can_run, cgroup_dirs_of, children_of, client, kill_agent, last_count, list_agents,
    pid_exists, spawn_ok, spawn_request, wait_exit, Kernel,
};

/// The agent's freeze state as its cgroup reports it: v1 `freezer.state` (`FROZEN`,
/// `FREEZING`, `THAWED`), or v2 `cgroup.events` `frozen 1|0`. `None` when neither is found.
fn freezer_state(pid: i32) -> Option<String> {
    for dir in cgroup_dirs_of(pid) {
        if let Ok(s) = std::fs::read_to_string(dir.join("freezer.state")) {
            return Some(s.trim().to_owned());
        }
        if let Ok(events) = std::fs::read_to_string(dir.join("cgroup.events")) {
            if dir.join("cgroup.freeze").exists() {
                let frozen = events.lines().any(|l| l == "frozen 1");
                return Some(if frozen { "FROZEN" } else { "THAWED" }.to_owned());
            }
        }
    }
    None
}

fn state_of(c: &mut clove_sdk::Client, id: u32) -> AgentState {
    let rows = list_agents(c).unwrap();
    rows.iter()
        .find(|r| r.id == id)
        .unwrap_or_else(|| panic!("agent {id} not listed: {rows:?}"))
        .state
}

/// Waits until the counter has passed `beyond` (fails after 10 s).
fn wait_count_beyond(kernel: &Kernel, id: u32, beyond: u64) -> u64 {
    let start = Instant::now();
    loop {
        let n = last_count(kernel, id).unwrap();
        if n > beyond {
            return n;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "counter stuck at {n} (waiting for more than {beyond})"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn pause_freezes_and_resume_thaws_agent() {
    if !agents_can_run("pause_freezes_and_resume_thaws_agent") {
        return;
    }
    let kernel = Kernel::start().unwrap();
    let mut c = client(&kernel).unwrap();
    let spawned = spawn_ok(&mut c, &spawn_request("counter", "agent_counter.py")).unwrap();
    let id = spawned.id;
    wait_count_beyond(&kernel, id, 5);
    let script = children_of(spawned.pid);
    assert!(!script.is_empty(), "init {} has no child", spawned.pid);

    let paused = c
        .call(&PauseRequest {
            id: Some(id),
            name: None,
        })
        .unwrap();
    assert!(
        paused.success && paused.paused && paused.agent_id == id,
        "{paused:?}"
    );
    assert_eq!(state_of(&mut c, id), AgentState::Paused);
    // Every process of the agent is frozen, as its cgroup reports (PAUSE worked, so the
    // agent has a freezer)...
    for pid in std::iter::once(spawned.pid).chain(script.iter().copied()) {
        let state =
            freezer_state(pid).unwrap_or_else(|| panic!("no freezer state for process {pid}"));
        assert_eq!(state, "FROZEN", "process {pid}");
    }
    // ... and as its output shows: no progress over 500 ms.
    let before = last_count(&kernel, id).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let after = last_count(&kernel, id).unwrap();
    assert_eq!(before, after, "the counter advanced while paused");

    let resumed = c
        .call(&ResumeRequest {
            id: Some(id),
            name: None,
        })
        .unwrap();
    assert!(
        resumed.success && resumed.resumed && resumed.agent_id == id,
        "{resumed:?}"
    );
    assert_eq!(state_of(&mut c, id), AgentState::Running);
    assert_eq!(freezer_state(spawned.pid).as_deref(), Some("THAWED"));
    wait_count_beyond(&kernel, id, after + 5);

    // Paused again, then killed: a frozen agent must still die.
    let paused = c
        .call(&PauseRequest {
            id: None,
            name: Some("counter".into()),
        })
        .unwrap();
    assert!(paused.paused, "{paused:?}");
    assert_eq!(state_of(&mut c, id), AgentState::Paused);
    let start = Instant::now();
    kill_agent(&mut c, id).unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "KILL took {:?}",
        start.elapsed()
    );
    let done = wait_exit(&mut c, id, Duration::from_secs(1)).unwrap();
    assert!(done.signal.is_some(), "{done:?}");
    assert!(
        !pid_exists(spawned.pid),
        "init {} still exists",
        spawned.pid
    );
    for pid in script {
        assert!(!pid_exists(pid), "agent process {pid} still exists");
    }
    assert!(list_agents(&mut c).unwrap().iter().all(|r| r.id != id));
}
