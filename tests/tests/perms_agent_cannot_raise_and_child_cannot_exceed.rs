//! Permissions: an agent may lower its own permissions, never raise them; it spawns children
//! with at most what it holds (and not at all without `can_spawn`); an operator sets those of
//! its agents. Every refusal is `permission_denied` and publishes SYSCALL_BLOCKED.
//!
//! The parent (standard) and its child (readonly) run tests/python/agent_plan.py; each ends
//! with a RECV that keeps it alive while the test looks at it from outside.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use clove_tests::{
    agents_can_run, client, gather_events, plan_request, plan_step, python_script, spawn_ok,
    subscribe_events, JsonConn, Kernel,
};
use serde_json::{json, Value};

const GET_PERMS: u8 = 0x40;
const SET_PERMS: u8 = 0x41;
const SPAWN: u8 = 0x10;
const RECV: u8 = 0x21;

fn step(kernel: &Kernel, id: u32, i: usize) -> Value {
    plan_step(kernel, id, i, Duration::from_secs(30)).unwrap()["reply"].clone()
}

fn refused(reply: &Value, mentions: &str) {
    assert_eq!(reply["success"], false, "{reply}");
    assert_eq!(reply["code"], "permission_denied", "{reply}");
    let error = reply["error"].as_str().unwrap();
    assert!(error.contains(mentions), "{mentions:?} not in {error:?}");
}

#[test]
fn an_agent_cannot_raise_itself_and_a_child_cannot_exceed_its_parent() {
    if !agents_can_run("an_agent_cannot_raise_itself_and_a_child_cannot_exceed_its_parent") {
        return;
    }
    let kernel = Kernel::start().unwrap();
    let mut blocked = subscribe_events(&kernel, &["SYSCALL_BLOCKED"]).unwrap();
    let mut c = client(&kernel).unwrap();
    let script = python_script("agent_plan.py");
    let stay = json!({"op": RECV, "payload": {"max": 1, "wait_ms": 60000}});
    let kid_plan = json!([
        {"op": GET_PERMS},
        {"op": SET_PERMS, "payload": {"level": "standard"}},
        {"op": SET_PERMS, "payload": {"permissions": {"can_read": true, "can_write": false,
            "can_exec": true, "exec": ["ls"], "can_spawn": false}}},
        {"op": SET_PERMS, "payload": {"level": "minimal"}},
        stay,
    ]);
    let spawn = |name: &str, level: &str| {
        json!({"op": SPAWN, "payload": {"name": name, "script": script.to_str().unwrap(),
            "args": [kid_plan.to_string()], "level": level}})
    };
    let plan = json!([
        {"op": GET_PERMS},
        {"op": SET_PERMS, "payload": {"level": "unrestricted"}},
        spawn("kid-over", "unrestricted"),
        spawn("kid", "readonly"),
        {"op": SET_PERMS, "payload": {"level": "readonly"}},
        {"op": SET_PERMS, "payload": {"level": "standard"}},
        spawn("kid-2", "minimal"),
        {"op": GET_PERMS},
        stay,
    ]);
    let parent = spawn_ok(&mut c, &plan_request("parent", &plan)).unwrap();
    let p = |i| step(&kernel, parent.id, i);

    let own = p(0);
    assert_eq!(own["success"], true, "{own}");
    assert_eq!(
        (own["level"].as_str(), own["agent_id"].as_u64()),
        (Some("standard"), Some(u64::from(parent.id)))
    );
    assert_eq!(own["permissions"]["can_spawn"], true);
    refused(&p(1), "never raise");
    refused(&p(2), "beyond it: exec, http");
    let kid = p(3);
    let kid_id = kid["id"].as_u64().unwrap_or_else(|| panic!("{kid}")) as u32;
    assert_eq!(p(4)["success"], true, "lowering itself");
    refused(&p(5), "never raise");
    refused(&p(6), "can_spawn is off");
    assert_eq!(p(7)["level"], "readonly");

    let k = |i| step(&kernel, kid_id, i);
    assert_eq!(k(0)["level"], "readonly");
    refused(&k(1), "beyond: write, spawn");
    refused(&k(2), "beyond: exec");
    assert_eq!(k(3)["success"], true);

    // The operator (root) sees and sets its agents' permissions.
    let mut op = JsonConn::open(&kernel).unwrap();
    let got = op.call(GET_PERMS, json!({"agent_id": kid_id})).unwrap();
    assert_eq!(got["level"], "minimal", "{got}");
    let set = op
        .call(
            SET_PERMS,
            json!({"agent_id": parent.id, "level": "standard"}),
        )
        .unwrap();
    assert_eq!(set, json!({"success": true, "agent_id": parent.id}));
    let got = op.call(GET_PERMS, json!({"agent_id": parent.id})).unwrap();
    assert_eq!(got["level"], "standard", "{got}");
    // An operator's own permissions are not the kernel's to set.
    let set = op.call(SET_PERMS, json!({"level": "minimal"})).unwrap();
    assert_eq!(set["code"], "invalid_request", "{set}");
    let own = op.call(GET_PERMS, json!({})).unwrap();
    assert_eq!(own["level"], "unrestricted", "{own}");

    // Permission changes are audited, with who decided.
    let log = op
        .call(0x76, json!({"category": "SECURITY", "limit": 1000}))
        .unwrap();
    let sets: Vec<&Value> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event_type"] == "PERMISSIONS_SET")
        .collect();
    assert!(
        sets.iter().any(|e| e["decided_by"] == "operator:0"
            && e["details"]["agent_id"] == parent.id
            && e["details"]["level"] == "standard"),
        "{sets:#?}"
    );
    assert!(
        sets.iter()
            .any(|e| e["decided_by"] == format!("agent:{kid_id}")
                && e["details"]["level"] == "minimal"),
        "{sets:#?}"
    );

    // Six refusals, six SYSCALL_BLOCKED events.
    let mut all = Vec::new();
    gather_events(&mut blocked, &mut all, Duration::from_secs(10), |evs| {
        evs.len() >= 6
    })
    .unwrap();
    assert!(
        all.iter().all(|e| e["type"] == "SYSCALL_BLOCKED"),
        "{all:#?}"
    );
}
