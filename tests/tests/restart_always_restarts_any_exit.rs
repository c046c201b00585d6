//! `restart_policy: always` restarts an agent after a clean exit and after a crash alike; the
//! restarted agent keeps its id; LIST shows its restart count and (in the rich form) how its
//! last run ended; WAIT does not take a restart for an exit; KILL stops it for good.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use clove_sdk::msg::{AgentRef, AgentState, RestartPolicy};
use clove_tests::{
    agent_output, agents_can_run, client, kill_agent, list_agents, list_detail, restart_request,
    spawn_ok, wait_exit, wait_output_line, Kernel,
};

#[test]
fn always_restarts_clean_exits_and_crashes() {
    if !agents_can_run("always_restarts_clean_exits_and_crashes") {
        return;
    }
    let kernel = Kernel::start().unwrap();
    let mut c = client(&kernel).unwrap();
    // Run 1 exits 0, run 2 exits 1, run 3 stays up.
    let agent = spawn_ok(
        &mut c,
        &restart_request("always", "0,1,sleep", RestartPolicy::Always, 100),
    )
    .unwrap();
    let id = agent.id;
    wait_output_line(
        &kernel,
        id,
        &format!("RUN 3 id={id}"),
        Duration::from_secs(30),
    )
    .unwrap();
    let out = agent_output(&kernel, id).unwrap();
    assert!(
        out.contains("--- clove: restart 1 after exit code 0 ---")
            && out.contains("--- clove: restart 2 after exit code 1 ---"),
        "{out}"
    );

    let rows = list_agents(&mut c).unwrap();
    let row = rows.iter().find(|r| r.id == id).unwrap();
    assert_eq!(
        (row.name.as_str(), row.state, row.running, row.restarts),
        ("always", AgentState::Running, true, Some(2)),
        "{rows:?}"
    );
    assert_ne!(row.pid, agent.pid, "a restart is a new process: {rows:?}");
    let rows = list_detail(&mut c).unwrap();
    let row = rows.iter().find(|r| r.id == id).unwrap();
    assert_eq!(
        row.exit.as_deref(),
        Some("last exit: exited with code 1"),
        "{rows:?}"
    );

    // WAIT: the agent has restarted, not exited.
    let w = c
        .wait(AgentRef::Id(id), Some(Duration::from_millis(300)))
        .unwrap();
    assert!(!w.exited, "{w:?}");
    assert!(
        w.reason
            .as_deref()
            .is_some_and(|r| r.contains("restarted 2 time(s)") && r.contains("exited with code 1")),
        "{w:?}"
    );

    // KILL stops it for good: no restart follows.
    kill_agent(&mut c, id).unwrap();
    let done = wait_exit(&mut c, id, Duration::from_secs(5)).unwrap();
    assert!(
        done.reason
            .as_deref()
            .is_some_and(|r| r.ends_with("(KILL)")),
        "{done:?}"
    );
    std::thread::sleep(Duration::from_millis(800));
    let out = agent_output(&kernel, id).unwrap();
    assert!(!out.contains("RUN 4"), "{out}");
    assert!(list_agents(&mut c).unwrap().iter().all(|r| r.id != id));
    let rows = list_detail(&mut c).unwrap();
    let row = rows.iter().find(|r| r.id == id).unwrap();
    assert_eq!(
        (row.state, row.restarts),
        (AgentState::Stopped, Some(2)),
        "{rows:?}"
    );
}
