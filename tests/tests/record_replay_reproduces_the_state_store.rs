//! A recording of operators and an agent doing STOREs (global, session and agent scope, with
//! TTL and if_version, one refused by its if_version), DELETEs, SENDs, a SPAWN and an EXEC,
//! exported and replayed into a fresh kernel, reproduces the state store: the same keys, with
//! the same values, scopes and versions, for operators and for the agent of the same name.
//! Lifecycle and EXEC entries are skipped (the EXEC does not run again), RECORD_STATUS
//! reports IDLE, RECORDING and IDLE in turn, and REPLAY_STATUS ends COMPLETED at 100%.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use clove_tests::{agents_can_run, client, plan_request, plan_step, spawn_ok, JsonConn, Kernel};

const EXEC: u8 = 0x02;
const SEND: u8 = 0x20;
const REGISTER: u8 = 0x23;
const STORE: u8 = 0x30;
const FETCH: u8 = 0x31;
const DELETE: u8 = 0x32;
const KEYS: u8 = 0x33;
const RECORD_START: u8 = 0x70;
const RECORD_STOP: u8 = 0x71;
const RECORD_STATUS: u8 = 0x72;
const REPLAY_START: u8 = 0x73;
const REPLAY_STATUS: u8 = 0x74;

const LONG: Duration = Duration::from_secs(60);

/// Every key an operator sees, with its FETCH reply (value, scope, version).
fn snapshot(conn: &mut JsonConn) -> Vec<(String, Value)> {
    let keys = conn.call(KEYS, json!({})).unwrap();
    assert_eq!(keys["success"], true, "{keys}");
    keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            let k = k.as_str().unwrap().to_owned();
            let got = conn.call(FETCH, json!({"key": k})).unwrap();
            (k, got)
        })
        .collect()
}

fn ok(r: &Value) {
    assert_eq!(r["success"], true, "{r}");
}

/// The worker's plan: the recorded part (when `record`), then it waits for a message and
/// lists and fetches its keys.
fn worker_plan(record: bool) -> Value {
    let mut steps = Vec::new();
    if record {
        steps.extend([
            json!({"op": STORE, "payload": {"key": "w/own", "value": {"n": 1}, "scope": "agent"}}),
            json!({"op": STORE, "payload": {"key": "w/own", "value": {"n": 2}, "scope": "agent",
                                            "if_version": 1}}),
            json!({"op": STORE, "payload": {"key": "shared", "value": "from the worker",
                                            "scope": "global", "ttl": 3600}}),
            json!({"op": SEND, "payload": {"to_name": "op-one", "message": {"hi": 1}}}),
        ]);
    }
    steps.extend([
        json!({"op": 0x21, "payload": {"max": 1, "wait_ms": 120000}}),
        json!({"op": KEYS, "payload": {}}),
        json!({"op": FETCH, "payload": {"key": "w/own"}}),
    ]);
    Value::Array(steps)
}

fn record_status(conn: &mut JsonConn, export: bool) -> Value {
    let r = conn.call(RECORD_STATUS, json!({"export": export})).unwrap();
    ok(&r);
    r
}

#[test]
fn a_replayed_recording_reproduces_the_state_store() {
    if !agents_can_run("a_replayed_recording_reproduces_the_state_store") {
        return;
    }
    let marker = std::env::temp_dir().join(format!("clove-replay-exec-{}", std::process::id()));
    let _ = std::fs::remove_file(&marker);

    // ---------------------------------------------------------------- kernel A: record
    let a = Kernel::start().unwrap();
    let mut c = client(&a).unwrap();
    let mut op1 = JsonConn::open(&a).unwrap();
    let mut op2 = JsonConn::open(&a).unwrap();
    let r = record_status(&mut op1, false);
    assert_eq!(
        (r["state"].clone(), r["recording"].clone()),
        (json!("IDLE"), json!(false))
    );
    ok(&op1
        .call(RECORD_START, json!({"include_exec": true}))
        .unwrap());
    let r = record_status(&mut op2, false);
    assert_eq!(
        (r["state"].clone(), r["recording"].clone()),
        (json!("RECORDING"), json!(true)),
        "{r}"
    );
    let r = op2.call(RECORD_START, json!({})).unwrap();
    assert_eq!(r["code"], "conflict", "one recording at a time: {r}");

    ok(&op1.call(REGISTER, json!({"name": "op-one"})).unwrap());
    let worker = spawn_ok(&mut c, &plan_request("worker", &worker_plan(true))).unwrap();
    let sent = plan_step(&a, worker.id, 3, LONG).unwrap();
    ok(&sent["reply"]);
    assert_eq!(sent["reply"]["delivered_to"], op1.id);

    ok(&op1.call(STORE, json!({"key": "g1", "value": 1})).unwrap());
    let r = op1
        .call(
            STORE,
            json!({"key": "g1", "value": [1, 2], "if_version": 1}),
        )
        .unwrap();
    assert_eq!(r["version"], 2, "{r}");
    let r = op2
        .call(
            STORE,
            json!({"key": "g1", "value": "late", "if_version": 1}),
        )
        .unwrap();
    assert_eq!(r["code"], "conflict", "{r}");
    ok(&op2
        .call(
            STORE,
            json!({"key": "g2", "value": {"deep": [true, null]}, "if_version": 0}),
        )
        .unwrap());
    ok(&op2
        .call(STORE, json!({"key": "temp", "value": "ttl", "ttl": 3600}))
        .unwrap());
    ok(&op1
        .call(
            STORE,
            json!({"key": "sess", "value": 7, "scope": "session"}),
        )
        .unwrap());
    ok(&op1
        .call(
            STORE,
            json!({"key": "sess", "value": 8, "scope": "session"}),
        )
        .unwrap());
    ok(&op1.call(STORE, json!({"key": "gone", "value": 0})).unwrap());
    let r = op2.call(DELETE, json!({"key": "gone"})).unwrap();
    assert_eq!(r["deleted"], true, "{r}");
    ok(&op1
        .call(
            STORE,
            json!({"key": "op/own", "value": "mine", "scope": "agent"}),
        )
        .unwrap());
    ok(&op2
        .call(SEND, json!({"to": op1.id, "message": "hello op1"}))
        .unwrap());
    let touch = format!("touch {}", marker.display());
    ok(&op1.call(EXEC, json!({"command": touch})).unwrap());
    assert!(marker.exists(), "the recorded EXEC ran");

    let r = op1.call(RECORD_STOP, json!({})).unwrap();
    ok(&r);
    assert_eq!(r["recording"], false);
    let recorded = r["entries_recorded"].as_u64().unwrap();
    let r = record_status(&mut op2, true);
    assert_eq!(
        (r["state"].clone(), r["recording"].clone()),
        (json!("IDLE"), json!(false)),
        "{r}"
    );
    assert_eq!(r["entry_count"].as_u64(), Some(recorded));
    let data = r["recording_data"].as_str().unwrap().to_owned();
    let export: Value = serde_json::from_str(&data).unwrap();
    assert_eq!(
        (export["format"].clone(), export["version"].clone()),
        (json!("clove-recording"), json!(1))
    );
    let entries = export["entries"].as_array().unwrap();
    let ops: Vec<&str> = entries.iter().map(|e| e["op"].as_str().unwrap()).collect();
    // REGISTER, SPAWN, the worker's 4, the operators' 10 STOREs and DELETEs, SEND, EXEC: no reads.
    assert_eq!(ops.len() as u64, recorded);
    assert_eq!(recorded, 18, "{ops:?}");
    assert!(
        !ops.contains(&"FETCH") && !ops.contains(&"KEYS") && !ops.contains(&"RECORD_STATUS"),
        "{ops:?}"
    );
    let skippable = ops
        .iter()
        .filter(|o| matches!(**o, "SPAWN" | "EXEC"))
        .count() as u64;
    assert_eq!(skippable, 2, "{ops:?}");
    let refused = entries.iter().find(|e| e["ok"] == false).unwrap();
    assert_eq!(
        (refused["op"].clone(), refused["error_code"].clone()),
        (json!("STORE"), json!("conflict"))
    );
    let by_worker = entries
        .iter()
        .filter(|e| e["caller"]["name"] == "worker")
        .count();
    assert_eq!(by_worker, 4, "the worker's entries carry its name");

    // What A holds, seen by a fresh operator (plain keys), and by the worker.
    let mut op3 = JsonConn::open(&a).unwrap();
    let state_a = snapshot(&mut op3);
    let names: Vec<&str> = state_a.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, ["g1", "g2", "sess", "shared", "temp"]);
    ok(&op3
        .call(SEND, json!({"to": worker.id, "message": "go"}))
        .unwrap());
    let worker_keys_a = plan_step(&a, worker.id, 5, LONG).unwrap()["reply"].clone();
    let worker_own_a = plan_step(&a, worker.id, 6, LONG).unwrap()["reply"].clone();
    assert_eq!(
        worker_keys_a["keys"],
        json!(["g1", "g2", "sess", "shared", "temp", "w/own"])
    );
    assert_eq!(
        (
            worker_own_a["value"].clone(),
            worker_own_a["version"].clone()
        ),
        (json!({"n": 2}), json!(2))
    );
    std::fs::remove_file(&marker).unwrap();

    // ---------------------------------------------------------------- kernel B: replay
    let b = Kernel::start().unwrap();
    let mut cb = client(&b).unwrap();
    // The agent of the same name, owned by the replaying operator: the worker's entries are
    // replayed as it.
    let worker_b = spawn_ok(&mut cb, &plan_request("worker", &worker_plan(false))).unwrap();
    let mut opb = JsonConn::open(&b).unwrap();
    let r = opb.call(REPLAY_STATUS, json!({})).unwrap();
    assert_eq!(r["state"], "IDLE", "{r}");
    let r = opb
        .call(REPLAY_START, json!({"recording_data": data}))
        .unwrap();
    ok(&r);
    assert_eq!(r["total_entries"].as_u64(), Some(recorded));
    let started = Instant::now();
    let status = loop {
        let r = opb.call(REPLAY_STATUS, json!({})).unwrap();
        ok(&r);
        if r["state"] != "RUNNING" {
            break r;
        }
        assert!(started.elapsed() < LONG, "replay still running: {r}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status["state"], "COMPLETED", "{status}");
    assert_eq!(status["progress_percent"], 100.0, "{status}");
    assert_eq!(
        status["entries_skipped"].as_u64(),
        Some(skippable),
        "{status}"
    );
    assert_eq!(
        status["entries_replayed"].as_u64(),
        Some(recorded - skippable),
        "{status}"
    );
    assert!(
        status.get("last_error").is_none(),
        "no divergence: {status}"
    );
    assert!(!marker.exists(), "the EXEC was not run again");
    let r = record_status(&mut opb, false);
    assert_eq!(
        (r["state"].clone(), r["entry_count"].clone()),
        (json!("IDLE"), json!(0))
    );

    let mut opb2 = JsonConn::open(&b).unwrap();
    let state_b = snapshot(&mut opb2);
    assert_eq!(
        state_b, state_a,
        "the plain keys, values, scopes and versions"
    );
    // Agent scope: the worker of B has the worker of A's keys, at the same versions; the
    // operator's agent-scope key belongs to a replay identity nobody else can read.
    ok(&opb2
        .call(SEND, json!({"to": worker_b.id, "message": "go"}))
        .unwrap());
    let worker_keys_b = plan_step(&b, worker_b.id, 1, LONG).unwrap()["reply"].clone();
    let worker_own_b = plan_step(&b, worker_b.id, 2, LONG).unwrap()["reply"].clone();
    assert_eq!(worker_keys_b, worker_keys_a);
    assert_eq!(worker_own_b, worker_own_a);
    let r = opb2.call(FETCH, json!({"key": "op/own"})).unwrap();
    assert_eq!(r["exists"], false, "{r}");

    // A replay is for operators; a second one may start once the first has completed.
    let r = opb
        .call(
            REPLAY_START,
            json!({"recording": "{\"format\": \"other\"}"}),
        )
        .unwrap();
    assert_eq!(r["code"], "invalid_request", "{r}");
    let r = opb.call(REPLAY_START, json!({})).unwrap();
    assert_eq!(r["code"], "invalid_request", "{r}");
}
