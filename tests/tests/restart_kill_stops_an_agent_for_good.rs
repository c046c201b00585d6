//! KILL stops an agent for good whatever its restart policy: a running `always` agent is not
//! restarted after KILL, and KILL during the backoff before a restart calls the restart off
//! and answers at once (not after the backoff). PAUSE of an agent waiting for its restart is
//! refused with a clear error. A kernel that shuts down restarts nothing: neither a running
//! `always` agent nor one waiting for its restart.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use clove_sdk::msg::{AgentState, RestartPolicy};
use clove_tests::{
    agent_output, agents_can_run, client, events_of, gather_events, kill_agent, list_agents,
    pid_exists, restart_request, spawn_ok, subscribe_events, wait_exit, wait_output_line, JsonConn,
    Kernel, KernelOpts,
};

const PAUSE: u8 = 0x14;

#[test]
fn a_killed_agent_is_not_restarted() {
    if !agents_can_run("a_killed_agent_is_not_restarted") {
        return;
    }
    let kernel = Kernel::start().unwrap();
    let mut events = subscribe_events(&kernel, &["AGENT_EXITED", "AGENT_RESTARTING"]).unwrap();
    let mut c = client(&kernel).unwrap();
    let agent = spawn_ok(
        &mut c,
        &restart_request("sleeper", "sleep", RestartPolicy::Always, 100),
    )
    .unwrap();
    wait_output_line(&kernel, agent.id, "RUN 1", Duration::from_secs(30)).unwrap();
    kill_agent(&mut c, agent.id).unwrap();
    let done = wait_exit(&mut c, agent.id, Duration::from_secs(5)).unwrap();
    assert!(
        done.reason
            .as_deref()
            .is_some_and(|r| r.ends_with("(KILL)")),
        "{done:?}"
    );
    // Well past the backoff: still one run, one final exit, no restart.
    std::thread::sleep(Duration::from_millis(1000));
    let out = agent_output(&kernel, agent.id).unwrap();
    assert!(!out.contains("RUN 2"), "{out}");
    let mut all = Vec::new();
    gather_events(&mut events, &mut all, Duration::from_secs(5), |evs| {
        !events_of(evs, agent.id, "AGENT_EXITED").is_empty()
    })
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let _ = gather_events(&mut events, &mut all, Duration::ZERO, |_| false);
    let exits = events_of(&all, agent.id, "AGENT_EXITED");
    assert_eq!(exits.len(), 1, "{all:?}");
    assert_eq!(exits[0]["data"]["restarting"], false, "{all:?}");
    assert_eq!(exits[0]["data"]["killed"], true, "{all:?}");
    assert!(
        events_of(&all, agent.id, "AGENT_RESTARTING").is_empty(),
        "{all:?}"
    );
}

#[test]
fn kill_during_the_backoff_calls_the_restart_off() {
    if !agents_can_run("kill_during_the_backoff_calls_the_restart_off") {
        return;
    }
    let kernel = Kernel::start().unwrap();
    let mut events = subscribe_events(&kernel, &["AGENT_RESTARTING"]).unwrap();
    let mut c = client(&kernel).unwrap();
    let backoff = Duration::from_secs(5);
    let agent = spawn_ok(
        &mut c,
        &restart_request(
            "crasher",
            "1",
            RestartPolicy::OnFailure,
            backoff.as_millis() as u64,
        ),
    )
    .unwrap();
    let mut all = Vec::new();
    gather_events(&mut events, &mut all, Duration::from_secs(30), |evs| {
        !events_of(evs, agent.id, "AGENT_RESTARTING").is_empty()
    })
    .unwrap();
    let waiting_since = Instant::now();

    // Waiting for its restart: listed as STARTING with its restart count, not running.
    let rows = list_agents(&mut c).unwrap();
    let row = rows.iter().find(|r| r.id == agent.id).unwrap();
    assert_eq!(
        (row.state, row.running, row.restarts),
        (AgentState::Starting, false, Some(1)),
        "{rows:?}"
    );
    let mut op = JsonConn::open(&kernel).unwrap();
    let r = op.call(PAUSE, serde_json::json!({"id": agent.id})).unwrap();
    assert_eq!(r["success"], false, "{r}");
    assert!(
        r["error"]
            .as_str()
            .is_some_and(|e| e.contains("waiting to be restarted")),
        "{r}"
    );

    kill_agent(&mut c, agent.id).unwrap();
    let answered = waiting_since.elapsed();
    assert!(
        answered < backoff - Duration::from_secs(1),
        "KILL answered {answered:?} into a {backoff:?} backoff: it waited for the restart"
    );
    let done = wait_exit(&mut c, agent.id, Duration::from_secs(1)).unwrap();
    assert_eq!(done.exit_code, Some(1), "{done:?}");
    assert!(
        done.reason
            .as_deref()
            .is_some_and(|r| r.ends_with("(KILL)")),
        "{done:?}"
    );
    assert!(list_agents(&mut c)
        .unwrap()
        .iter()
        .all(|r| r.id != agent.id));
    // Past the time the restart was due: it never happened.
    std::thread::sleep((backoff + Duration::from_secs(1)).saturating_sub(waiting_since.elapsed()));
    let out = agent_output(&kernel, agent.id).unwrap();
    assert!(
        !out.contains("RUN 2") && !out.contains("--- clove: restart"),
        "{out}"
    );
}

#[test]
fn a_kernel_shutting_down_restarts_nothing() {
    if !agents_can_run("a_kernel_shutting_down_restarts_nothing") {
        return;
    }
    let state = tempfile::tempdir().unwrap();
    let kernel = Kernel::start_with(KernelOpts {
        state_dir: Some(state.path().to_path_buf()),
        ..KernelOpts::default()
    })
    .unwrap();
    let mut events = subscribe_events(&kernel, &["AGENT_RESTARTING"]).unwrap();
    let mut c = client(&kernel).unwrap();
    let running = spawn_ok(
        &mut c,
        &restart_request("runner", "sleep", RestartPolicy::Always, 100),
    )
    .unwrap();
    let waiting = spawn_ok(
        &mut c,
        &restart_request("waiter", "1", RestartPolicy::Always, 3000),
    )
    .unwrap();
    wait_output_line(&kernel, running.id, "RUN 1", Duration::from_secs(30)).unwrap();
    let mut all = Vec::new();
    gather_events(&mut events, &mut all, Duration::from_secs(30), |evs| {
        !events_of(evs, waiting.id, "AGENT_RESTARTING").is_empty()
    })
    .unwrap();
    let out_of = |id: u32| {
        std::fs::read_to_string(state.path().join(format!("agents/{id}/output.log")))
            .unwrap_or_default()
    };
    drop(c);
    drop(events);
    let (status, _) = kernel.stop_and_collect().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(!pid_exists(running.pid), "the agent outlived its kernel");
    // Past the pending restart's due time: nothing ran again.
    std::thread::sleep(Duration::from_millis(3500));
    for id in [running.id, waiting.id] {
        let out = out_of(id);
        assert!(
            out.contains("RUN 1") && !out.contains("RUN 2"),
            "agent {id}:\n{out}"
        );
    }
}
