//! An agent written for the original Clove (tests/python/original_agent.py: standard library
//! only, the original frame, the socket from sys.argv[1]) runs unchanged in our sandbox: it
//! says HELLO, asks LIST, and exits 0.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use clove_tests::{
    agent_output, agents_can_run, client, spawn_ok, spawn_request, wait_exit, wait_output_line,
    Kernel,
};

const TEST: &str = "original_style_agent_runs_sandboxed";

#[test]
fn original_style_agent_runs_sandboxed() {
    if !agents_can_run(TEST) {
        return;
    }
    let kernel = Kernel::start().unwrap();
    let mut c = client(&kernel).unwrap();
    let spawned = spawn_ok(&mut c, &spawn_request("original", "original_agent.py")).unwrap();
    assert!(spawned.isolation.fully_isolated, "{:?}", spawned.isolation);

    let done = wait_exit(&mut c, spawned.id, Duration::from_secs(20)).unwrap();
    let output = agent_output(&kernel, spawned.id).unwrap();
    assert_eq!(
        (done.exit_code, done.signal, done.oom),
        (Some(0), None, false),
        "{done:?}, output:\n{output}"
    );

    let line = wait_output_line(&kernel, spawned.id, "ORIGINAL ", Duration::from_secs(1)).unwrap();
    let r: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(r["socket"], kernel.socket.to_string_lossy().as_ref(), "{r}");
    let hello = &r["hello"];
    assert_eq!(hello["reply"]["success"], true, "{r}");
    assert_eq!(hello["reply"]["protocol_version"], 1, "{r}");
    assert_eq!(
        hello["agent_id"].as_u64(),
        Some(u64::from(spawned.id)),
        "{r}"
    );

    // LIST answers the original's array, and the agent finds itself in it, running.
    let list = &r["list"];
    assert_eq!(
        list["agent_id"].as_u64(),
        Some(u64::from(spawned.id)),
        "{r}"
    );
    let rows = list["reply"].as_array().unwrap();
    let me = rows
        .iter()
        .find(|row| row["id"].as_u64() == Some(u64::from(spawned.id)))
        .unwrap_or_else(|| panic!("the agent is not in its own LIST: {r}"));
    assert_eq!(me["name"], "original", "{me}");
    assert_eq!(me["pid"].as_i64(), Some(i64::from(spawned.pid)), "{me}");
    assert_eq!(me["state"], "RUNNING", "{me}");
    assert_eq!(me["running"], true, "{me}");
}
