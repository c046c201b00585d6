//! KILL of a sandboxed agent: the reply comes only once the agent is gone (not in LIST, no
//! process left), so the name can be SPAWNed again at once; an agent that ignores SIGTERM is
//! SIGKILLed once its `grace_ms` has run out.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use clove_tests::{
    agent_output, agents_can_run, children_of, client, kill_agent, list_agents, pid_exists,
    spawn_ok, spawn_request, wait_exit, wait_output_line, Kernel,
};

#[test]
fn kill_returns_after_the_agent_is_gone() {
    if !agents_can_run("kill_returns_after_the_agent_is_gone") {
        return;
    }
    let kernel = Kernel::start().unwrap();
    let mut c = client(&kernel).unwrap();
    let req = spawn_request("sleeper", "agent_sleep.py");
    let spawned = spawn_ok(&mut c, &req).unwrap();
    wait_output_line(&kernel, spawned.id, "READY", Duration::from_secs(20)).unwrap();
    // The SPAWN pid is the sandbox's init; the script runs as its child.
    let script_pids = children_of(spawned.pid);
    assert!(!script_pids.is_empty(), "init {} has no child", spawned.pid);

    let start = Instant::now();
    kill_agent(&mut c, spawned.id).unwrap();
    let took = start.elapsed();
    assert!(took < Duration::from_secs(10), "KILL took {took:?}");

    // Gone by the time the reply arrived.
    let rows = list_agents(&mut c).unwrap();
    assert!(
        rows.iter().all(|r| r.id != spawned.id),
        "killed agent still listed: {rows:?}"
    );
    assert!(
        !pid_exists(spawned.pid),
        "init {} still exists",
        spawned.pid
    );
    for pid in &script_pids {
        assert!(!pid_exists(*pid), "agent process {pid} still exists");
    }
    // It ended by the SIGTERM (Python's default handling), not by the SIGKILL.
    let done = wait_exit(&mut c, spawned.id, Duration::from_secs(1)).unwrap();
    assert_eq!((done.exit_code, done.signal), (None, Some(15)), "{done:?}");

    // The name is free again at once.
    let again = spawn_ok(&mut c, &req).unwrap();
    assert_ne!(again.id, spawned.id);
    kill_agent(&mut c, again.id).unwrap();
}

#[test]
fn kill_sigkills_an_agent_that_ignores_sigterm_after_grace() {
    if !agents_can_run("kill_sigkills_an_agent_that_ignores_sigterm_after_grace") {
        return;
    }
    const GRACE: Duration = Duration::from_millis(1500);
    let kernel = Kernel::start().unwrap();
    let mut c = client(&kernel).unwrap();
    let mut req = spawn_request("stubborn", "agent_ignore_sigterm.py");
    req.grace_ms = Some(GRACE.as_millis() as u64);
    let spawned = spawn_ok(&mut c, &req).unwrap();
    // Only once the handler is installed does SIGTERM mean anything.
    wait_output_line(&kernel, spawned.id, "READY", Duration::from_secs(20)).unwrap();

    let start = Instant::now();
    kill_agent(&mut c, spawned.id).unwrap();
    let took = start.elapsed();
    let output = agent_output(&kernel, spawned.id).unwrap();
    // SIGTERM came first and was survived; the grace was honoured; SIGKILL ended it.
    assert!(
        output.contains("SIGTERM ignored"),
        "the agent never saw SIGTERM; output:\n{output}"
    );
    assert!(
        took >= GRACE,
        "KILL returned after {took:?}, before the grace of {GRACE:?}"
    );
    assert!(took < Duration::from_secs(10), "KILL took {took:?}");
    let done = wait_exit(&mut c, spawned.id, Duration::from_secs(1)).unwrap();
    assert_eq!((done.exit_code, done.signal), (None, Some(9)), "{done:?}");
    assert!(!done.oom, "{done:?}");
    let reason = done.reason.unwrap_or_default();
    assert!(reason.contains("signal 9"), "reason: {reason}");
    assert!(
        !pid_exists(spawned.pid),
        "init {} still exists",
        spawned.pid
    );
}
