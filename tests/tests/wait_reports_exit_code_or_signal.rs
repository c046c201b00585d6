//! WAIT tells how an agent ended: `sys.exit(3)` is exit code 3 and no signal; a process that
//! SIGKILLs itself is signal 9 and no exit code (not 137, and not an OOM). Once an agent is
//! gone, WAIT and LOGS by its name still answer, for the last agent that had the name.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use clove_sdk::msg::{AgentRef, LogsRequest};
use clove_tests::{
    agent_output, agents_can_run, client, spawn_ok, spawn_request, wait_exit, Kernel,
};

#[test]
fn wait_reports_exit_code_or_signal() {
    if !agents_can_run("wait_reports_exit_code_or_signal") {
        return;
    }
    let kernel = Kernel::start().unwrap();
    let mut c = client(&kernel).unwrap();
    let spawn = |c: &mut clove_sdk::Client, name: &str, how: &str, n: &str| {
        let mut req = spawn_request(name, "agent_exit.py");
        req.args = vec![how.into(), n.into()];
        spawn_ok(c, &req).unwrap()
    };
    let code = spawn(&mut c, "exit-3", "code", "3");
    let signal = spawn(&mut c, "kill-9", "signal", "9");

    let done = wait_exit(&mut c, code.id, Duration::from_secs(20)).unwrap();
    let output = agent_output(&kernel, code.id).unwrap();
    assert!(
        output.contains("EXITING code 3"),
        "the script did not run:\n{output}"
    );
    assert_eq!(
        (done.exit_code, done.signal, done.oom),
        (Some(3), None, false),
        "{done:?}"
    );
    assert_eq!(
        done.reason.as_deref(),
        Some("exited with code 3"),
        "{done:?}"
    );

    // By name, after the exit: the same answer, and the same output.
    let by_name = c
        .wait(AgentRef::Name("exit-3"), Some(Duration::from_secs(5)))
        .unwrap();
    assert_eq!(
        (by_name.agent_id, by_name.exited, by_name.exit_code),
        (code.id, true, Some(3)),
        "{by_name:?}"
    );
    let logs = c
        .logs(&LogsRequest {
            name: Some("exit-3".into()),
            ..LogsRequest::default()
        })
        .unwrap();
    assert_eq!(logs.agent_id, code.id);
    assert!(logs.text.contains("EXITING code 3"), "{logs:?}");
    assert!(!logs.running, "{logs:?}");

    let done = wait_exit(&mut c, signal.id, Duration::from_secs(20)).unwrap();
    let output = agent_output(&kernel, signal.id).unwrap();
    assert!(
        output.contains("EXITING signal 9"),
        "the script did not run:\n{output}"
    );
    assert_eq!(
        (done.exit_code, done.signal, done.oom),
        (None, Some(9), false),
        "{done:?}"
    );
    assert_eq!(
        done.reason.as_deref(),
        Some("killed by signal 9"),
        "{done:?}"
    );
}
