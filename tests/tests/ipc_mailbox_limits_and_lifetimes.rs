//! Mailboxes are bounded (`--mailbox-messages 4`): a SEND to a full one fails with
//! `limit_exceeded`, or with `timeout_ms` waits for room, succeeding once the receiver takes
//! a message and failing when the wait runs out. An unknown recipient is `not_found`. An
//! operator's name is released when its connection closes. A sandboxed agent is reachable by
//! its spawn name without REGISTER, and its mailbox goes when it exits.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use clove_tests::{
    agent_output, agents_can_run, client, plan_request, plan_step, spawn_ok, wait_exit, JsonConn,
    Kernel, KernelOpts,
};

const SEND: u8 = 0x20;
const RECV: u8 = 0x21;
const REGISTER: u8 = 0x23;
const SEND_BATCH: u8 = 0xD2;

fn small_mailboxes() -> Kernel {
    Kernel::start_with(KernelOpts {
        args: vec!["--mailbox-messages".into(), "4".into()],
        ..KernelOpts::default()
    })
    .unwrap()
}

fn assert_error(r: &Value, code: &str) {
    assert_eq!(r["success"], false, "{r}");
    assert_eq!(r["code"], code, "{r}");
    assert!(r["error"].as_str().is_some_and(|e| !e.is_empty()), "{r}");
}

#[test]
fn full_mailbox_refuses_or_waits_for_room() {
    let kernel = small_mailboxes();
    let mut rx = JsonConn::open(&kernel).unwrap();
    assert_eq!(
        rx.call(REGISTER, json!({"name": "rx"})).unwrap()["success"],
        true
    );
    let mut tx = JsonConn::open(&kernel).unwrap();

    for n in 0..4 {
        let r = tx
            .call(SEND, json!({"to_name": "rx", "message": n}))
            .unwrap();
        assert_eq!(r["success"], true, "message {n}: {r}");
    }
    let r = tx
        .call(SEND, json!({"to_name": "rx", "message": 4}))
        .unwrap();
    assert_error(&r, "limit_exceeded");
    // A batch that does not fit is refused whole, even when it fits the limit by itself.
    let r = tx
        .call(SEND_BATCH, json!({"to": rx.id, "messages": [5, 6]}))
        .unwrap();
    assert_error(&r, "limit_exceeded");
    // A batch bigger than the mailbox can never fit: refused at once even with a wait.
    let start = Instant::now();
    let r = tx
        .call(
            SEND_BATCH,
            json!({"to": rx.id, "messages": [1, 2, 3, 4, 5], "timeout_ms": 5000}),
        )
        .unwrap();
    assert_error(&r, "limit_exceeded");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );

    // A wait that runs out fails, after about the wait and not much later.
    let start = Instant::now();
    let r = tx
        .call(
            SEND,
            json!({"to": rx.id, "message": "late", "timeout_ms": 400}),
        )
        .unwrap();
    let waited = start.elapsed();
    assert_error(&r, "limit_exceeded");
    assert!(
        waited >= Duration::from_millis(390) && waited < Duration::from_secs(3),
        "a 400 ms wait took {waited:?}"
    );

    // A waiting SEND succeeds once the receiver takes one message.
    let socket_tx = std::thread::spawn(move || {
        let start = Instant::now();
        let r = tx
            .call(
                SEND,
                json!({"to_name": "rx", "message": "waited", "timeout_ms": 10000}),
            )
            .unwrap();
        (r, start.elapsed(), tx)
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(!socket_tx.is_finished(), "the SEND did not wait for room");
    let r = rx.call(RECV, json!({"max": 1})).unwrap();
    assert_eq!(r["count"], 1, "{r}");
    assert_eq!(r["messages"][0]["message"], 0, "{r}");
    let (r, waited, mut tx) = socket_tx.join().unwrap();
    assert_eq!(r["success"], true, "{r}");
    assert_eq!(r["delivered_to"].as_u64(), Some(u64::from(rx.id)), "{r}");
    assert!(
        waited >= Duration::from_millis(450) && waited < Duration::from_secs(5),
        "{waited:?}"
    );

    // Nothing refused got in: the mailbox holds 1, 2, 3 and "waited", in order.
    let r = rx.call(RECV, json!({"max": 10})).unwrap();
    let bodies: Vec<&Value> = r["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["message"])
        .collect();
    assert_eq!(
        bodies,
        [&json!(1), &json!(2), &json!(3), &json!("waited")],
        "{r}"
    );

    // Room again: a batch that fits goes in whole.
    let r = tx
        .call(
            SEND_BATCH,
            json!({"to_name": "rx", "messages": ["a", "b", "c", "d"]}),
        )
        .unwrap();
    assert_eq!(
        (&r["success"], &r["delivered"]),
        (&json!(true), &json!(4)),
        "{r}"
    );
}

#[test]
fn unknown_recipients_are_not_found() {
    let kernel = small_mailboxes();
    let mut tx = JsonConn::open(&kernel).unwrap();
    let r = tx.call(SEND, json!({"to": 999_999, "message": 1})).unwrap();
    assert_error(&r, "not_found");
    let r = tx
        .call(SEND, json!({"to_name": "nobody", "message": 1}))
        .unwrap();
    assert_error(&r, "not_found");
    let r = tx
        .call(
            SEND,
            json!({"to_name": "nobody", "message": 1, "timeout_ms": 2000}),
        )
        .unwrap();
    assert_error(&r, "not_found");
    let r = tx
        .call(SEND_BATCH, json!({"to_name": "nobody", "messages": [1]}))
        .unwrap();
    assert_error(&r, "not_found");
}

#[test]
fn operator_names_and_mailboxes_are_released_on_close() {
    let kernel = small_mailboxes();
    let mut first = JsonConn::open(&kernel).unwrap();
    let r = first.call(REGISTER, json!({"name": "shared"})).unwrap();
    assert_eq!(r["success"], true, "{r}");
    let first_id = first.id;
    let mut second = JsonConn::open(&kernel).unwrap();
    let r = second.call(REGISTER, json!({"name": "shared"})).unwrap();
    assert_error(&r, "already_exists");
    let r = second
        .call(
            SEND,
            json!({"to_name": "shared", "message": "for the first"}),
        )
        .unwrap();
    assert_eq!(r["delivered_to"].as_u64(), Some(u64::from(first_id)), "{r}");
    drop(first);

    // The kernel notices the close asynchronously; it must not take long.
    let start = Instant::now();
    loop {
        let r = second.call(REGISTER, json!({"name": "shared"})).unwrap();
        if r["success"] == true {
            assert_eq!(r["agent_id"].as_u64(), Some(u64::from(second.id)), "{r}");
            break;
        }
        assert_error(&r, "already_exists");
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "the name is still taken 2 s after its connection closed: {r}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    eprintln!("name released {:?} after the close", start.elapsed());
    // The closed connection's mailbox went with it.
    let r = second
        .call(SEND, json!({"to": first_id, "message": "too late"}))
        .unwrap();
    assert_error(&r, "not_found");
    // The name now reaches the second connection, which does not see the first's message.
    let mut third = JsonConn::open(&kernel).unwrap();
    let r = third
        .call(
            SEND,
            json!({"to_name": "shared", "message": "for the second"}),
        )
        .unwrap();
    assert_eq!(
        r["delivered_to"].as_u64(),
        Some(u64::from(second.id)),
        "{r}"
    );
    let r = second.call(RECV, json!({"max": 10})).unwrap();
    assert_eq!(r["count"], 1, "{r}");
    assert_eq!(r["messages"][0]["message"], "for the second", "{r}");
    assert_eq!(
        r["messages"][0]["from"].as_u64(),
        Some(u64::from(third.id)),
        "{r}"
    );
}

#[test]
fn agent_reachable_by_spawn_name_until_it_exits() {
    if !agents_can_run("agent_reachable_by_spawn_name_until_it_exits") {
        return;
    }
    let kernel = small_mailboxes();
    let mut c = client(&kernel).unwrap();
    let mut op = JsonConn::open(&kernel).unwrap();
    // The agent waits for one message, and says what it got.
    let plan = json!([{"op": RECV, "payload": {"max": 10, "wait_ms": 60000}}]);
    let agent = spawn_ok(&mut c, &plan_request("mbox-agent", &plan)).unwrap();

    // Nobody else may take a live agent's spawn name.
    let r = op.call(REGISTER, json!({"name": "mbox-agent"})).unwrap();
    assert_error(&r, "already_exists");

    let r = op
        .call(
            SEND,
            json!({"to_name": "mbox-agent", "message": {"hello": "agent"}}),
        )
        .unwrap();
    assert_eq!(r["success"], true, "{r}");
    assert_eq!(r["delivered_to"].as_u64(), Some(u64::from(agent.id)), "{r}");

    let done = wait_exit(&mut c, agent.id, Duration::from_secs(30)).unwrap();
    let output = agent_output(&kernel, agent.id).unwrap();
    assert_eq!(done.exit_code, Some(0), "{done:?}\n{output}");
    let step = plan_step(&kernel, agent.id, 0, Duration::from_secs(1)).unwrap();
    assert_eq!(
        step["agent_id"].as_u64(),
        Some(u64::from(agent.id)),
        "{step}"
    );
    let msgs = step["reply"]["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 1, "{step}");
    assert_eq!(msgs[0]["message"], json!({"hello": "agent"}), "{step}");
    assert_eq!(msgs[0]["from"].as_u64(), Some(u64::from(op.id)), "{step}");

    // Gone with the agent: by name and by id.
    let r = op
        .call(SEND, json!({"to_name": "mbox-agent", "message": "after"}))
        .unwrap();
    assert_error(&r, "not_found");
    let r = op
        .call(SEND, json!({"to": agent.id, "message": "after"}))
        .unwrap();
    assert_error(&r, "not_found");
    // And the name is free for others now.
    let r = op.call(REGISTER, json!({"name": "mbox-agent"})).unwrap();
    assert_eq!(r["success"], true, "{r}");
}

/// A name an operator registered cannot shadow an agent spawned later under that name:
/// spawn names and registered names are one namespace, so SPAWN refuses a registered name
/// (as REGISTER refuses a live agent's). Once the name is released, the agent gets it, and
/// SEND by that name reaches the agent.
#[test]
fn registered_name_does_not_shadow_a_later_agent() {
    if !agents_can_run("registered_name_does_not_shadow_a_later_agent") {
        return;
    }
    let kernel = small_mailboxes();
    let mut c = client(&kernel).unwrap();
    let mut squatter = JsonConn::open(&kernel).unwrap();
    let r = squatter.call(REGISTER, json!({"name": "worker"})).unwrap();
    assert_eq!(r["success"], true, "{r}");
    let plan = json!([{"op": RECV, "payload": {"max": 10, "wait_ms": 60000}}]);
    let refused = c.call(&plan_request("worker", &plan)).unwrap_err();
    assert_eq!(
        refused.code(),
        Some(&clove_abi::ErrorCode::AlreadyExists),
        "{refused}"
    );
    assert!(refused.to_string().contains("registered"), "{refused}");

    // The squatter leaves: its name goes with it, and the agent can have it.
    let squatter_id = squatter.id;
    drop(squatter);
    let deadline = Instant::now() + Duration::from_secs(5);
    let agent = loop {
        match c.call(&plan_request("worker", &plan)) {
            Ok(agent) => break agent,
            Err(e) if Instant::now() < deadline => {
                assert_eq!(e.code(), Some(&clove_abi::ErrorCode::AlreadyExists), "{e}");
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("the name was not released after its owner closed: {e}"),
        }
    };
    let mut op = JsonConn::open(&kernel).unwrap();
    let r = op
        .call(SEND, json!({"to_name": "worker", "message": "job"}))
        .unwrap();
    clove_tests::kill_agent(&mut c, agent.id).unwrap();
    assert_eq!(
        r["delivered_to"].as_u64(),
        Some(u64::from(agent.id)),
        "SEND to the agent's spawn name did not reach the agent (the old owner was {squatter_id}): {r}"
    );
}
