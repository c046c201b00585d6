//! SPAWN refuses what it cannot run with a stable code and a message naming the culprit: a
//! missing script (`invalid_request`, the path), a name a live agent has (`already_exists`),
//! a limit that is not a size (`invalid_request`, `limits.memory`). A refused SPAWN leaves
//! nothing behind: the live agent is untouched and LIST shows nothing new.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use clove_abi::msg::SpawnRequest;
use clove_abi::ErrorCode;
use clove_tests::{
    agents_can_run, client, json_call, kill_agent, list_agents, python_script, spawn_ok,
    spawn_request, Kernel,
};

#[test]
fn spawn_rejects_bad_requests() {
    if !agents_can_run("spawn_rejects_bad_requests") {
        return;
    }
    let kernel = Kernel::start().unwrap();
    let mut c = client(&kernel).unwrap();

    // A script that does not exist.
    let missing = python_script("no_such_agent_script.py");
    let e = c
        .call(&SpawnRequest::new("ghost", missing.to_string_lossy()))
        .unwrap_err();
    let w = e
        .wire()
        .unwrap_or_else(|| panic!("not a kernel error: {e}"));
    assert_eq!(w.code, ErrorCode::InvalidRequest, "{w:?}");
    assert!(
        w.message.contains(missing.to_string_lossy().as_ref()),
        "the message does not name the script: {w:?}"
    );

    // A second live agent of the same name.
    let first = spawn_ok(&mut c, &spawn_request("twin", "agent_sleep.py")).unwrap();
    let e = c
        .call(&spawn_request("twin", "agent_sleep.py"))
        .unwrap_err();
    let w = e
        .wire()
        .unwrap_or_else(|| panic!("not a kernel error: {e}"));
    assert_eq!(w.code, ErrorCode::AlreadyExists, "{w:?}");
    assert!(w.message.contains("twin"), "{w:?}");

    // A memory limit that is no size, on the original frame (the only way to send one).
    let mut raw = kernel.connect().unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let req = serde_json::json!({
        "name": "greedy",
        "script": python_script("agent_sleep.py"),
        "limits": {"memory": "lots"},
    });
    let (header, reply) = json_call(&mut raw, 0x10, req.to_string().as_bytes()).unwrap();
    assert_eq!(header.opcode, 0x10);
    assert_eq!(reply["success"], false, "{reply}");
    assert_eq!(reply["code"], "invalid_request", "{reply}");
    let message = reply["error"].as_str().unwrap_or_default();
    assert!(message.contains("limits.memory"), "{reply}");
    assert!(reply.get("id").is_none(), "{reply}");

    // Only the first twin runs.
    let rows = list_agents(&mut c).unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].id, first.id, "{rows:?}");
    kill_agent(&mut c, first.id).unwrap();
}
