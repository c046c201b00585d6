//! The agent_id a client writes in a request header is ignored: REGISTER and SEND sent with a
//! forged header id (777, or another live caller's id) are answered with the caller's real id
//! in the reply header, and the recipient sees the real sender in `from`. A sandboxed agent
//! that forges its header still sends as its spawn id and spawn name.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use serde_json::json;

use clove_tests::{
    agent_output, agents_can_run, client, plan_request, plan_step, spawn_ok, wait_exit, JsonConn,
    Kernel,
};

const REGISTER: u8 = 0x23;
const SEND: u8 = 0x20;
const RECV: u8 = 0x21;
const SEND_BATCH: u8 = 0xD2;

#[test]
fn operator_header_ids_are_ignored() {
    let kernel = Kernel::start().unwrap();
    let mut a = JsonConn::open(&kernel).unwrap();
    let mut b = JsonConn::open(&kernel).unwrap();
    assert!(a.id != 0 && b.id != 0 && a.id != b.id, "{} {}", a.id, b.id);
    assert!(a.id != 777 && b.id != 777);

    // REGISTER with a made-up id, and with the other caller's id, in the header.
    let (h, r) = a.call_as(777, REGISTER, &json!({"name": "alice"})).unwrap();
    assert_eq!(r["success"], true, "{r}");
    assert_eq!(h.agent_id, a.id, "reply header of a forged REGISTER");
    assert_eq!(r["agent_id"].as_u64(), Some(u64::from(a.id)), "{r}");
    let (h, r) = b.call_as(a.id, REGISTER, &json!({"name": "bob"})).unwrap();
    assert_eq!(r["success"], true, "{r}");
    assert_eq!(
        h.agent_id, b.id,
        "reply header of REGISTER sent as {}",
        a.id
    );
    assert_eq!(r["agent_id"].as_u64(), Some(u64::from(b.id)), "{r}");

    // SEND to bob by name claiming to be 777, by id claiming to be bob himself, and a
    // SEND_BATCH claiming to be bob: bob sees alice's id and name each time.
    let (h, r) = a
        .call_as(777, SEND, &json!({"to_name": "bob", "message": "one"}))
        .unwrap();
    assert_eq!((h.agent_id, &r["success"]), (a.id, &json!(true)), "{r}");
    assert_eq!(r["delivered_to"].as_u64(), Some(u64::from(b.id)), "{r}");
    let (h, r) = a
        .call_as(b.id, SEND, &json!({"to": b.id, "message": "two"}))
        .unwrap();
    assert_eq!((h.agent_id, &r["success"]), (a.id, &json!(true)), "{r}");
    let (h, r) = a
        .call_as(
            b.id,
            SEND_BATCH,
            &json!({"to": b.id, "messages": ["three", "four"]}),
        )
        .unwrap();
    assert_eq!((h.agent_id, &r["success"]), (a.id, &json!(true)), "{r}");
    assert_eq!(r["delivered"], 2, "{r}");

    // bob reads, himself claiming to be alice: he gets his own mailbox, not hers.
    let (h, r) = b
        .call_as(a.id, RECV, &json!({"max": 10, "wait_ms": 2000}))
        .unwrap();
    assert_eq!(h.agent_id, b.id);
    let msgs = r["messages"].as_array().unwrap();
    let bodies: Vec<&str> = msgs
        .iter()
        .map(|m| m["message"].as_str().unwrap())
        .collect();
    assert_eq!(bodies, ["one", "two", "three", "four"], "{r}");
    for m in msgs {
        assert_eq!(m["from"].as_u64(), Some(u64::from(a.id)), "{m}");
        assert_eq!(m["from_name"], "alice", "{m}");
    }
    // alice's mailbox is still empty: nothing above was delivered to her by the header ids.
    let r = a.call(RECV, json!({"max": 10})).unwrap();
    assert_eq!(r["count"], 0, "{r}");

    // A reply to a forged header on a fresh connection carries that connection's own id.
    let mut c = JsonConn::open(&kernel).unwrap();
    let (h, r) = c
        .call_as(a.id, REGISTER, &json!({"name": "carol"}))
        .unwrap();
    assert_eq!(h.agent_id, c.id, "{r}");
    assert_ne!(c.id, a.id);
}

#[test]
fn sandboxed_agent_sends_as_its_spawn_id_and_name() {
    if !agents_can_run("sandboxed_agent_sends_as_its_spawn_id_and_name") {
        return;
    }
    let kernel = Kernel::start().unwrap();
    let mut op = JsonConn::open(&kernel).unwrap();
    let r = op.call(REGISTER, json!({"name": "op-sink"})).unwrap();
    assert_eq!(r["success"], true, "{r}");

    let mut c = client(&kernel).unwrap();
    let plan = json!([
        {"op": SEND, "header_id": 777, "payload": {"to_name": "op-sink", "message": "forged 777"}},
        {"op": SEND, "header_id": op.id, "payload": {"to_name": "op-sink", "message": "forged op"}},
    ]);
    let agent = spawn_ok(&mut c, &plan_request("forger", &plan)).unwrap();
    let done = wait_exit(&mut c, agent.id, Duration::from_secs(30)).unwrap();
    let output = agent_output(&kernel, agent.id).unwrap();
    assert_eq!(done.exit_code, Some(0), "{done:?}\n{output}");
    for step in 0..2 {
        let s = plan_step(&kernel, agent.id, step, Duration::from_secs(1)).unwrap();
        assert_eq!(s["reply"]["success"], true, "{s}");
        assert_eq!(
            s["agent_id"].as_u64(),
            Some(u64::from(agent.id)),
            "the agent's reply header: {s}"
        );
        assert_eq!(
            s["reply"]["delivered_to"].as_u64(),
            Some(u64::from(op.id)),
            "{s}"
        );
    }

    let r = op.call(RECV, json!({"max": 10, "wait_ms": 2000})).unwrap();
    let msgs = r["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 2, "{r}");
    for (m, body) in msgs.iter().zip(["forged 777", "forged op"]) {
        assert_eq!(m["message"], body, "{m}");
        assert_eq!(m["from"].as_u64(), Some(u64::from(agent.id)), "{m}");
        assert_eq!(m["from_name"], "forger", "{m}");
    }
}
