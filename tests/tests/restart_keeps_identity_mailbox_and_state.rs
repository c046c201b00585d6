//! A restarted agent is the same agent: the same id (in its environment and in reply
//! headers), its agent-scoped key, and its mailbox. While it waits for its restart its name
//! stays reserved (SPAWN and REGISTER of it are refused), LIST shows it STARTING, and a
//! message sent to it then is delivered to the restarted process.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use serde_json::json;

use clove_sdk::msg::{AgentState, RestartPolicy};
use clove_tests::{
    agent_output, agents_can_run, client, events_of, gather_events, list_agents, restart_request,
    spawn_ok, subscribe_events, wait_exit, JsonConn, Kernel,
};

const SPAWN: u8 = 0x10;
const SEND: u8 = 0x20;
const REGISTER: u8 = 0x23;

#[test]
fn a_restarted_agent_keeps_its_id_mailbox_and_state() {
    if !agents_can_run("a_restarted_agent_keeps_its_id_mailbox_and_state") {
        return;
    }
    let kernel = Kernel::start().unwrap();
    let mut events = subscribe_events(&kernel, &["AGENT_RESTARTING"]).unwrap();
    let mut c = client(&kernel).unwrap();
    // Run 1 stores its agent-scoped key and exits 1; run 2 finds the key, receives a message
    // and exits 0. The backoff leaves time to act while it waits.
    let agent = spawn_ok(
        &mut c,
        &restart_request("keeper", "state", RestartPolicy::OnFailure, 3000),
    )
    .unwrap();
    let id = agent.id;
    let mut all = Vec::new();
    gather_events(&mut events, &mut all, Duration::from_secs(30), |evs| {
        !events_of(evs, id, "AGENT_RESTARTING").is_empty()
    })
    .unwrap();

    let rows = list_agents(&mut c).unwrap();
    let row = rows.iter().find(|r| r.id == id).unwrap();
    assert_eq!(
        (row.name.as_str(), row.state, row.restarts),
        ("keeper", AgentState::Starting, Some(1)),
        "{rows:?}"
    );
    let mut op = JsonConn::open(&kernel).unwrap();
    let script = clove_tests::python_script("agent_restarts.py");
    let r = op
        .call(
            SPAWN,
            json!({"name": "keeper", "script": script, "args": ["0"]}),
        )
        .unwrap();
    assert_eq!(r["code"], "already_exists", "the name is reserved: {r}");
    let r = op.call(REGISTER, json!({"name": "keeper"})).unwrap();
    assert_eq!(r["success"], false, "the name is reserved: {r}");
    let r = op
        .call(SEND, json!({"to_name": "keeper", "message": {"n": 42}}))
        .unwrap();
    assert_eq!(r["success"], true, "{r}");

    let done = wait_exit(&mut c, id, Duration::from_secs(30)).unwrap();
    let out = agent_output(&kernel, id).unwrap();
    assert_eq!(done.exit_code, Some(0), "{done:?}\n{out}");
    assert!(out.contains(&format!("RUN 1 id={id}")), "{out}");
    assert!(out.contains("STORED"), "{out}");
    assert!(out.contains(&format!("RUN 2 id={id}")), "{out}");
    assert!(
        out.contains("STATE 1"),
        "the agent-scoped key survived:\n{out}"
    );
    let got = out
        .lines()
        .find_map(|l| l.strip_prefix("GOT "))
        .unwrap_or_else(|| panic!("no message received:\n{out}"));
    let (messages, header) = got.rsplit_once(" header_id=").unwrap();
    assert_eq!(
        header,
        id.to_string(),
        "reply headers carry the same id: {out}"
    );
    let messages: serde_json::Value = serde_json::from_str(messages).unwrap();
    assert_eq!(messages[0]["message"], json!({"n": 42}), "{out}");
    assert_eq!(
        messages[0]["from"].as_u64(),
        Some(u64::from(op.id)),
        "{out}"
    );
}
