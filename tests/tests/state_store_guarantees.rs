//! The state store keeps its promises end to end: an expired key is never visible; 8
//! sandboxed agents racing FETCH + STORE `if_version` loops on one counter lose no update;
//! every STORE that replied survives a SIGKILL of the kernel; session keys do not survive a
//! restart while global ones do; ids are never reused across restarts; an agent's
//! agent-scoped keys are invisible to other agents, to operators, and to a later agent that
//! reuses its name.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use clove_tests::{
    agent_output, agents_can_run, client, heavy_test_lock, plan_request, plan_step, spawn_ok,
    wait_exit, JsonConn, Kernel, KernelOpts,
};

const SEND: u8 = 0x20;
const RECV: u8 = 0x21;
const STORE: u8 = 0x30;
const FETCH: u8 = 0x31;
const DELETE: u8 = 0x32;
const KEYS: u8 = 0x33;
const SUBSCRIBE: u8 = 0x60;
const POLL_EVENTS: u8 = 0x62;

#[test]
fn expired_keys_are_never_visible() {
    let kernel = Kernel::start().unwrap();
    let mut c = JsonConn::open(&kernel).unwrap();
    let ttl = Duration::from_millis(700);
    let sent = Instant::now();
    let r = c
        .call(
            STORE,
            json!({"key": "brief", "value": "soon gone", "ttl": ttl.as_secs_f64()}),
        )
        .unwrap();
    let replied = sent.elapsed();
    assert_eq!(
        (&r["success"], &r["version"]),
        (&json!(true), &json!(1)),
        "{r}"
    );
    let r = c.call(FETCH, json!({"key": "brief"})).unwrap();
    assert_eq!(
        (&r["exists"], &r["value"]),
        (&json!(true), &json!("soon gone")),
        "{r}"
    );

    // Read continuously: visible until its TTL, then absent, and never visible again (the
    // purge runs every few seconds; readers must not depend on it).
    let mut gone_at = None;
    while sent.elapsed() < ttl + Duration::from_millis(3000) {
        let before = sent.elapsed();
        let r = c.call(FETCH, json!({"key": "brief"})).unwrap();
        if r["exists"] == true {
            assert!(
                gone_at.is_none(),
                "visible again at {before:?} after it was gone at {gone_at:?}: {r}"
            );
            // The expiry was set between our send and the reply, plus 1 ms of rounding.
            assert!(
                before <= ttl + replied + Duration::from_millis(2),
                "still visible at {before:?} with a TTL of {ttl:?}: {r}"
            );
        } else {
            assert_eq!(r["value"], Value::Null, "{r}");
            gone_at.get_or_insert(before);
        }
        let k = c.call(KEYS, json!({"prefix": "br"})).unwrap();
        if gone_at.is_some() {
            assert_eq!(k["keys"], json!([]), "KEYS lists an expired key: {k}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let gone_at = gone_at.expect("the key never expired");
    assert!(
        gone_at + Duration::from_millis(50) >= ttl,
        "gone at {gone_at:?}, TTL {ttl:?}"
    );

    // Expired counts as absent everywhere: DELETE finds nothing, CAS on the old version
    // conflicts, a create-only write succeeds and starts again at version 1.
    let r = c.call(DELETE, json!({"key": "brief"})).unwrap();
    assert_eq!(
        (&r["success"], &r["deleted"]),
        (&json!(true), &json!(false)),
        "{r}"
    );
    let r = c
        .call(STORE, json!({"key": "brief", "value": 2, "if_version": 1}))
        .unwrap();
    assert_eq!(
        (&r["success"], &r["code"]),
        (&json!(false), &json!("conflict")),
        "{r}"
    );
    let r = c
        .call(STORE, json!({"key": "brief", "value": 3, "if_version": 0}))
        .unwrap();
    assert_eq!(
        (&r["success"], &r["version"]),
        (&json!(true), &json!(1)),
        "{r}"
    );
    let r = c.call(FETCH, json!({"key": "brief"})).unwrap();
    assert_eq!((&r["value"], &r["version"]), (&json!(3), &json!(1)), "{r}");
}

#[test]
fn concurrent_cas_increments_lose_nothing() {
    if !agents_can_run("concurrent_cas_increments_lose_nothing") {
        return;
    }
    let _lock = heavy_test_lock().unwrap();
    let kernel = Kernel::start().unwrap();
    let mut op = JsonConn::open(&kernel).unwrap();
    let r = op
        .call(
            STORE,
            json!({"key": "counter", "value": 0, "if_version": 0}),
        )
        .unwrap();
    assert_eq!(r["success"], true, "{r}");

    let mut c = client(&kernel).unwrap();
    let plan = json!([{"incr": "counter", "times": 25}]);
    let agents: Vec<_> = (0..8)
        .map(|i| spawn_ok(&mut c, &plan_request(&format!("incr-{i}"), &plan)).unwrap())
        .collect();
    let mut conflicts = 0;
    for a in &agents {
        let done = wait_exit(&mut c, a.id, Duration::from_secs(120)).unwrap();
        let output = agent_output(&kernel, a.id).unwrap();
        assert_eq!(
            (done.exit_code, done.signal),
            (Some(0), None),
            "{}: {done:?}\n{output}",
            a.name
        );
        let step = plan_step(&kernel, a.id, 0, Duration::from_secs(1)).unwrap();
        assert_eq!(step["incremented"], 25, "{step}");
        conflicts += step["conflicts"].as_u64().unwrap();
    }
    let r = op.call(FETCH, json!({"key": "counter"})).unwrap();
    assert_eq!(r["value"], 200, "{r}");
    // Every successful write made one version: the create, then 200 increments.
    assert_eq!(r["version"], 201, "{r}");
    eprintln!("8 agents x 25 CAS increments: {conflicts} conflicts retried");
}

#[test]
fn replied_stores_survive_sigkill_and_ids_are_not_reused() {
    let state = tempfile::Builder::new()
        .prefix("clove-state-")
        .tempdir()
        .unwrap();
    let opts = KernelOpts {
        state_dir: Some(state.path().join("state")),
        ..KernelOpts::default()
    };
    let kernel = Kernel::start_with(opts.clone()).unwrap();
    let mut max_id = 0;
    let mut c = JsonConn::open(&kernel).unwrap();
    max_id = max_id.max(c.id);
    let r = c
        .call(
            STORE,
            json!({"key": "plain-session", "value": "s", "scope": "session"}),
        )
        .unwrap();
    assert_eq!(r["success"], true, "{r}");
    let r = c
        .call(
            STORE,
            json!({"key": "plain-global", "value": "g", "scope": "global"}),
        )
        .unwrap();
    assert_eq!(r["success"], true, "{r}");
    // A global key overwritten by a session write is gone from disk too.
    let r = c
        .call(
            STORE,
            json!({"key": "was-global", "value": 1, "scope": "global"}),
        )
        .unwrap();
    assert_eq!(r["success"], true, "{r}");
    let r = c
        .call(
            STORE,
            json!({"key": "was-global", "value": 2, "scope": "session"}),
        )
        .unwrap();
    assert_eq!(
        (&r["success"], &r["version"]),
        (&json!(true), &json!(2)),
        "{r}"
    );
    // 200 keys, each stored after the previous one replied; every 10th written twice.
    for i in 0..200 {
        let r = c
            .call(STORE, json!({"key": format!("k{i:03}"), "value": {"i": i}}))
            .unwrap();
        assert_eq!(r["success"], true, "{r}");
        if i % 10 == 0 {
            let r = c
                .call(
                    STORE,
                    json!({"key": format!("k{i:03}"), "value": {"i": i, "again": true}}),
                )
                .unwrap();
            assert_eq!(r["version"], 2, "{r}");
        }
    }
    for _ in 0..20 {
        max_id = max_id.max(JsonConn::open(&kernel).unwrap().id);
    }
    let (status, _) = kernel.signal_and_wait(libc::SIGKILL).unwrap();
    assert!(!status.success(), "{status:?}");

    let kernel = Kernel::start_with(opts.clone()).unwrap();
    let mut c = JsonConn::open(&kernel).unwrap();
    assert!(
        c.id > max_id,
        "first id after the restart is {}, but {max_id} was issued before",
        c.id
    );
    for i in 0..200 {
        let key = format!("k{i:03}");
        let r = c.call(FETCH, json!({"key": key})).unwrap();
        let want = if i % 10 == 0 {
            (json!({"i": i, "again": true}), json!(2))
        } else {
            (json!({"i": i}), json!(1))
        };
        assert_eq!(r["exists"], true, "{key} lost in the SIGKILL: {r}");
        assert_eq!(
            (&r["value"], &r["version"]),
            (&want.0, &want.1),
            "{key}: {r}"
        );
    }
    let r = c.call(FETCH, json!({"key": "plain-global"})).unwrap();
    assert_eq!(
        (&r["exists"], &r["value"]),
        (&json!(true), &json!("g")),
        "{r}"
    );
    for key in ["plain-session", "was-global"] {
        let r = c.call(FETCH, json!({"key": key})).unwrap();
        assert_eq!(
            r["exists"], false,
            "session key {key} survived the restart: {r}"
        );
    }
    let r = c.call(KEYS, json!({})).unwrap();
    assert_eq!(r["count"], 201, "{r}");
    max_id = max_id.max(c.id);
    for _ in 0..5 {
        max_id = max_id.max(JsonConn::open(&kernel).unwrap().id);
    }

    // A clean stop and start again: the same, and still no id reused.
    let (status, _) = kernel.signal_and_wait(libc::SIGTERM).unwrap();
    assert!(status.success(), "{status:?}");
    let kernel = Kernel::start_with(opts).unwrap();
    let mut c = JsonConn::open(&kernel).unwrap();
    assert!(
        c.id > max_id,
        "first id after the second restart is {}, but {max_id} was issued before",
        c.id
    );
    let r = c.call(KEYS, json!({"prefix": "k"})).unwrap();
    assert_eq!(r["count"], 200, "{r}");
    drop(kernel);
}

#[test]
fn agent_scoped_keys_stay_private() {
    if !agents_can_run("agent_scoped_keys_stay_private") {
        return;
    }
    let kernel = Kernel::start().unwrap();
    let mut c = client(&kernel).unwrap();
    let mut op = JsonConn::open(&kernel).unwrap();

    // The keeper stores a secret, reads it back, waits to be told, reads it again, exits.
    // It also listens for STATE_CHANGED, as does an operator: agent-scoped changes reach
    // their owner only.
    let r = op
        .call(SUBSCRIBE, json!({"event_types": ["STATE_CHANGED"]}))
        .unwrap();
    assert_eq!(r["success"], true, "{r}");
    let keeper_plan = json!([
        {"op": SUBSCRIBE, "payload": {"event_types": ["STATE_CHANGED"]}},
        {"op": STORE, "payload": {"key": "secret", "value": "a-secret", "scope": "agent"}},
        {"op": FETCH, "payload": {"key": "secret"}},
        {"op": RECV, "payload": {"max": 1, "wait_ms": 60000}},
        {"op": FETCH, "payload": {"key": "secret"}},
        {"op": KEYS, "payload": {}},
        {"op": POLL_EVENTS, "payload": {"max": 100}},
    ]);
    let keeper = spawn_ok(&mut c, &plan_request("keeper", &keeper_plan)).unwrap();
    let stored = plan_step(&kernel, keeper.id, 1, Duration::from_secs(30)).unwrap();
    assert_eq!(stored["reply"]["success"], true, "{stored}");
    let own = plan_step(&kernel, keeper.id, 2, Duration::from_secs(5)).unwrap();
    assert_eq!(own["reply"]["value"], "a-secret", "{own}");
    assert_eq!(own["reply"]["scope"], "agent", "{own}");

    // Another agent can neither read, list, delete nor overwrite it; its own key of the same
    // name is a different key.
    let snoop_plan = json!([
        {"op": FETCH, "payload": {"key": "secret"}},
        {"op": KEYS, "payload": {}},
        {"op": DELETE, "payload": {"key": "secret"}},
        {"op": STORE, "payload": {"key": "secret", "value": "b-own", "scope": "agent", "if_version": 0}},
        {"op": FETCH, "payload": {"key": "secret"}},
    ]);
    let snoop = spawn_ok(&mut c, &plan_request("snoop", &snoop_plan)).unwrap();
    let done = wait_exit(&mut c, snoop.id, Duration::from_secs(30)).unwrap();
    let output = agent_output(&kernel, snoop.id).unwrap();
    assert_eq!(done.exit_code, Some(0), "{done:?}\n{output}");
    let step =
        |n| plan_step(&kernel, snoop.id, n, Duration::from_secs(1)).unwrap()["reply"].clone();
    let r = step(0);
    assert_eq!(
        (&r["success"], &r["exists"]),
        (&json!(true), &json!(false)),
        "{r}"
    );
    assert_eq!(step(1)["keys"], json!([]), "{output}");
    assert_eq!(step(2)["deleted"], false, "{output}");
    let r = step(3);
    assert_eq!(
        (&r["success"], &r["version"]),
        (&json!(true), &json!(1)),
        "{r}"
    );
    assert_eq!(step(4)["value"], "b-own", "{output}");

    // Nor can an operator.
    let r = op.call(FETCH, json!({"key": "secret"})).unwrap();
    assert_eq!(r["exists"], false, "{r}");
    let r = op.call(KEYS, json!({})).unwrap();
    assert_eq!(r["keys"], json!([]), "{r}");
    let r = op.call(DELETE, json!({"key": "secret"})).unwrap();
    assert_eq!(r["deleted"], false, "{r}");

    // The keeper still has its own.
    let r = op
        .call(SEND, json!({"to": keeper.id, "message": "go on"}))
        .unwrap();
    assert_eq!(r["success"], true, "{r}");
    let done = wait_exit(&mut c, keeper.id, Duration::from_secs(30)).unwrap();
    let output = agent_output(&kernel, keeper.id).unwrap();
    assert_eq!(done.exit_code, Some(0), "{done:?}\n{output}");
    let r = plan_step(&kernel, keeper.id, 4, Duration::from_secs(1)).unwrap();
    assert_eq!(r["reply"]["value"], "a-secret", "{r}");
    let r = plan_step(&kernel, keeper.id, 5, Duration::from_secs(1)).unwrap();
    assert_eq!(r["reply"]["keys"], json!(["secret"]), "{r}");
    // The keeper heard of its own change, and not of the snoop's key of the same name.
    let r = plan_step(&kernel, keeper.id, 6, Duration::from_secs(1)).unwrap();
    let changes: Vec<&Value> = r["reply"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "STATE_CHANGED" && e["data"]["key"] == "secret")
        .collect();
    assert_eq!(changes.len(), 1, "{r}");
    assert_eq!(
        changes[0]["data"]["by"].as_u64(),
        Some(u64::from(keeper.id)),
        "{r}"
    );
    assert_eq!(changes[0]["data"]["scope"], "agent", "{r}");
    // The operator heard of neither agent-scoped change.
    let r = op.call(POLL_EVENTS, json!({"max": 100})).unwrap();
    assert_eq!(r["count"], 0, "an operator saw agent-scoped changes: {r}");
    // A global change reaches it.
    let r = op
        .call(STORE, json!({"key": "public", "value": 1}))
        .unwrap();
    assert_eq!(r["success"], true, "{r}");
    let r = op
        .call(POLL_EVENTS, json!({"max": 100, "wait_ms": 5000}))
        .unwrap();
    assert_eq!(r["events"][0]["data"]["key"], "public", "{r}");

    // A new agent with the dead keeper's name is someone else.
    let heir_plan = json!([
        {"op": FETCH, "payload": {"key": "secret"}},
        {"op": KEYS, "payload": {"prefix": "sec"}},
    ]);
    let heir = spawn_ok(&mut c, &plan_request("keeper", &heir_plan)).unwrap();
    assert_ne!(heir.id, keeper.id);
    let done = wait_exit(&mut c, heir.id, Duration::from_secs(30)).unwrap();
    let output = agent_output(&kernel, heir.id).unwrap();
    assert_eq!(done.exit_code, Some(0), "{done:?}\n{output}");
    let r = plan_step(&kernel, heir.id, 0, Duration::from_secs(1)).unwrap();
    assert_eq!(r["reply"]["exists"], false, "{r}");
    let r = plan_step(&kernel, heir.id, 1, Duration::from_secs(1)).unwrap();
    assert_eq!(r["reply"]["keys"], json!([]), "{r}");
}
