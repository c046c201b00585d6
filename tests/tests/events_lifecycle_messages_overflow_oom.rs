//! Events: AGENT_SPAWNED, AGENT_PAUSED, AGENT_RESUMED and AGENT_EXITED (with the exit code)
//! arrive, in that order, for a sandboxed agent; MESSAGE_RECEIVED reaches the recipient only;
//! with `--event-queue 3` a full queue drops its oldest events and the next poll says how
//! many; an OOM kill publishes RESOURCE_WARNING.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use clove_tests::{
    agent_output, agents_can_run, client, heavy_test_lock, plan_request, spawn_ok, wait_exit,
    JsonConn, Kernel, KernelOpts,
};

const SEND: u8 = 0x20;
const RECV: u8 = 0x21;
const PAUSE: u8 = 0x14;
const RESUME: u8 = 0x15;
const SPAWN: u8 = 0x10;
const SUBSCRIBE: u8 = 0x60;
const POLL_EVENTS: u8 = 0x62;
const EMIT: u8 = 0x63;

/// Polls `conn` until `pred` holds for the events gathered so far, or `limit` runs out.
fn gather(conn: &mut JsonConn, limit: Duration, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let start = Instant::now();
    let mut all = Vec::new();
    while !pred(&all) {
        assert!(
            start.elapsed() < limit,
            "events after {limit:?}: {}",
            json!(all)
        );
        let r = conn
            .call(POLL_EVENTS, json!({"max": 100, "wait_ms": 500}))
            .unwrap();
        assert_eq!(r["success"], true, "{r}");
        all.extend(r["events"].as_array().unwrap().iter().cloned());
    }
    all
}

fn of_agent(events: &[Value], id: u32) -> Vec<&Value> {
    events
        .iter()
        .filter(|e| e["data"]["agent_id"].as_u64() == Some(u64::from(id)))
        .collect()
}

#[test]
fn lifecycle_events_of_a_sandboxed_agent() {
    if !agents_can_run("lifecycle_events_of_a_sandboxed_agent") {
        return;
    }
    let kernel = Kernel::start().unwrap();
    let mut listener = JsonConn::open(&kernel).unwrap();
    let types = [
        "AGENT_SPAWNED",
        "AGENT_PAUSED",
        "AGENT_RESUMED",
        "AGENT_EXITED",
    ];
    let r = listener
        .call(SUBSCRIBE, json!({"event_types": types}))
        .unwrap();
    assert_eq!(r["success"], true, "{r}");
    let mut op = JsonConn::open(&kernel).unwrap();
    let mut c = client(&kernel).unwrap();

    // The agent waits for a message, then exits with code 7.
    let plan = json!([{"op": RECV, "payload": {"max": 1, "wait_ms": 60000}}, {"exit": 7}]);
    let agent = spawn_ok(&mut c, &plan_request("lifecycle", &plan)).unwrap();
    let r = op.call(PAUSE, json!({"id": agent.id})).unwrap();
    assert_eq!(r["paused"], true, "{r}");
    let r = op.call(RESUME, json!({"name": "lifecycle"})).unwrap();
    assert_eq!(r["resumed"], true, "{r}");
    let r = op
        .call(SEND, json!({"to": agent.id, "message": "go"}))
        .unwrap();
    assert_eq!(r["success"], true, "{r}");
    let done = wait_exit(&mut c, agent.id, Duration::from_secs(30)).unwrap();
    let output = agent_output(&kernel, agent.id).unwrap();
    assert_eq!(done.exit_code, Some(7), "{done:?}\n{output}");

    let events = gather(&mut listener, Duration::from_secs(10), |evs| {
        of_agent(evs, agent.id)
            .iter()
            .any(|e| e["type"] == "AGENT_EXITED")
    });
    let mine = of_agent(&events, agent.id);
    let kinds: Vec<&str> = mine.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, types, "{}", json!(events));
    for e in &mine {
        assert_eq!(e["data"]["name"], "lifecycle", "{e}");
        assert_eq!(
            e["source_agent_id"].as_u64(),
            Some(u64::from(agent.id)),
            "{e}"
        );
        assert!(
            e["timestamp"].is_number() || e["timestamp"].is_string(),
            "{e}"
        );
    }
    assert_eq!(
        mine[0]["data"]["pid"].as_i64(),
        Some(i64::from(agent.pid)),
        "{}",
        mine[0]
    );
    let exited = &mine[3]["data"];
    assert_eq!(exited["exit_code"], 7, "{exited}");
    assert_eq!(exited["oom"], false, "{exited}");
    assert!(exited["signal"].is_null(), "{exited}");
}

#[test]
fn message_received_reaches_only_the_recipient() {
    let kernel = Kernel::start().unwrap();
    let mut conns: Vec<JsonConn> = (0..3).map(|_| JsonConn::open(&kernel).unwrap()).collect();
    for c in &mut conns {
        let r = c
            .call(SUBSCRIBE, json!({"event_types": ["MESSAGE_RECEIVED"]}))
            .unwrap();
        assert_eq!(r["success"], true, "{r}");
    }
    let (a, b) = (conns[0].id, conns[1].id);
    let r = conns[0]
        .call(SEND, json!({"to": b, "message": "psst"}))
        .unwrap();
    assert_eq!(r["success"], true, "{r}");

    let r = conns[1]
        .call(POLL_EVENTS, json!({"max": 10, "wait_ms": 5000}))
        .unwrap();
    assert_eq!(r["count"], 1, "{r}");
    let ev = &r["events"][0];
    assert_eq!(ev["type"], "MESSAGE_RECEIVED", "{r}");
    assert_eq!(ev["data"]["from"].as_u64(), Some(u64::from(a)), "{r}");
    // The event tells of the message; it does not carry it, nor take it from the mailbox.
    assert!(!ev.to_string().contains("psst"), "{ev}");
    let r = conns[1].call(RECV, json!({"max": 10})).unwrap();
    assert_eq!(r["messages"][0]["message"], "psst", "{r}");

    for i in [0, 2] {
        let r = conns[i]
            .call(POLL_EVENTS, json!({"max": 10, "wait_ms": 500}))
            .unwrap();
        assert_eq!(
            r["count"], 0,
            "connection {i} saw another's MESSAGE_RECEIVED: {r}"
        );
    }
}

#[test]
fn a_full_event_queue_drops_the_oldest_and_says_so() {
    let kernel = Kernel::start_with(KernelOpts {
        args: vec!["--event-queue".into(), "3".into()],
        ..KernelOpts::default()
    })
    .unwrap();
    let mut listener = JsonConn::open(&kernel).unwrap();
    let r = listener
        .call(SUBSCRIBE, json!({"event_types": ["tick"]}))
        .unwrap();
    assert_eq!(r["success"], true, "{r}");
    let mut emitter = JsonConn::open(&kernel).unwrap();
    for n in 1..=5 {
        let r = emitter
            .call(EMIT, json!({"event_type": "tick", "data": n}))
            .unwrap();
        assert_eq!(r["success"], true, "{r}");
    }
    let r = listener.call(POLL_EVENTS, json!({"max": 100})).unwrap();
    let data: Vec<&Value> = r["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["data"])
        .collect();
    assert_eq!(data, [&json!(3), &json!(4), &json!(5)], "{r}");
    assert_eq!(r["count"], 3, "{r}");
    assert_eq!(r["dropped"], 2, "{r}");

    // Reported once: the next poll has nothing dropped to tell.
    let r = emitter
        .call(EMIT, json!({"event_type": "tick", "data": 6}))
        .unwrap();
    assert_eq!(r["success"], true, "{r}");
    let r = listener.call(POLL_EVENTS, json!({"max": 100})).unwrap();
    assert_eq!(r["events"][0]["data"], 6, "{r}");
    assert!(r["dropped"].is_null() || r["dropped"] == 0, "{r}");

    // max smaller than the queue: the rest stays queued, and nothing is dropped by that.
    for n in 7..=9 {
        emitter
            .call(EMIT, json!({"event_type": "tick", "data": n}))
            .unwrap();
    }
    let r = listener.call(POLL_EVENTS, json!({"max": 1})).unwrap();
    assert_eq!(r["events"][0]["data"], 7, "{r}");
    let r = listener.call(POLL_EVENTS, json!({"max": 100})).unwrap();
    let data: Vec<&Value> = r["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["data"])
        .collect();
    assert_eq!(data, [&json!(8), &json!(9)], "{r}");
    assert!(r["dropped"].is_null() || r["dropped"] == 0, "{r}");
}

#[test]
fn oom_kill_publishes_resource_warning() {
    if !agents_can_run("oom_kill_publishes_resource_warning") {
        return;
    }
    let _lock = heavy_test_lock().unwrap();
    let kernel = Kernel::start().unwrap();
    let mut listener = JsonConn::open(&kernel).unwrap();
    let r = listener
        .call(
            SUBSCRIBE,
            json!({"event_types": ["RESOURCE_WARNING", "AGENT_EXITED"]}),
        )
        .unwrap();
    assert_eq!(r["success"], true, "{r}");
    let mut op = JsonConn::open(&kernel).unwrap();
    let hog = op
        .call(
            SPAWN,
            json!({
                "name": "hog",
                "script": clove_tests::python_script("agent_memory_hog.py"),
                "limits": {"memory": "48M"},
            }),
        )
        .unwrap();
    let hog_id = hog["id"]
        .as_u64()
        .unwrap_or_else(|| panic!("SPAWN hog failed: {hog}")) as u32;
    assert_eq!(hog["isolation"]["cgroups"]["memory_limit"], true, "{hog}");
    let mut c = client(&kernel).unwrap();
    let done = wait_exit(&mut c, hog_id, Duration::from_secs(60)).unwrap();
    assert!(done.oom, "{done:?}");

    let events = gather(&mut listener, Duration::from_secs(10), |evs| {
        of_agent(evs, hog_id)
            .iter()
            .any(|e| e["type"] == "AGENT_EXITED")
    });
    let mine = of_agent(&events, hog_id);
    let kinds: Vec<&str> = mine.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["RESOURCE_WARNING", "AGENT_EXITED"],
        "{}",
        json!(events)
    );
    let warning = &mine[0]["data"];
    assert_eq!(warning["resource"], "memory", "{warning}");
    assert_eq!(warning["name"], "hog", "{warning}");
    assert_eq!(mine[1]["data"]["oom"], true, "{}", mine[1]);
    assert_eq!(mine[1]["data"]["signal"], 9, "{}", mine[1]);
}
