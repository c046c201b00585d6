//! An agent's children (the agents it spawned) live inside its cgroup. When it exits or
//! restarts they are stopped first, so its restart never trips over its old cgroup, and a
//! restarted parent can spawn them again under the same names.
//!
//! The parent (tests/python/agent_plan.py, restart_policy always, one restart allowed)
//! spawns a sleeping child named `kid`, then exits 1: twice, since it is restarted once.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use clove_sdk::msg::{AgentRef, RestartPolicy};
use clove_tests::{
    agent_output, agents_can_run, client, list_detail, plan_request, python_script, spawn_ok,
    Kernel,
};
use serde_json::json;

#[test]
fn restart_parent_stops_its_children_first() {
    if !agents_can_run("restart_parent_stops_its_children_first") {
        return;
    }
    let kernel = Kernel::start().unwrap();
    let mut c = client(&kernel).unwrap();
    let kid = python_script("agent_sleep.py");
    let plan = json!([
        {"op": 0x10, "payload": {"name": "kid", "script": kid.to_str().unwrap()}},
        {"exit": 1}
    ]);
    let mut req = plan_request("parent", &plan);
    req.restart_policy = RestartPolicy::Always;
    req.max_restarts = 1;
    req.restart_backoff_ms = Some(100);
    let parent = spawn_ok(&mut c, &req).unwrap();
    let w = c
        .wait(AgentRef::Id(parent.id), Some(Duration::from_secs(30)))
        .unwrap();
    assert!(w.exited, "{w:?}");
    assert_eq!(w.exit_code, Some(1), "{w:?}");

    // Both runs spawned a kid under the same name: the first kid was gone by then.
    let out = agent_output(&kernel, parent.id).unwrap();
    let kids: Vec<u64> = out
        .lines()
        .filter_map(|l| l.strip_prefix("STEP 0 "))
        .map(|l| {
            let step: serde_json::Value = serde_json::from_str(l).unwrap();
            step["reply"]["id"]
                .as_u64()
                .unwrap_or_else(|| panic!("SPAWN kid failed: {step}"))
        })
        .collect();
    assert_eq!(kids.len(), 2, "{out}");
    assert_ne!(kids[0], kids[1]);
    // Neither kid outlived its parent's run.
    let rows = list_detail(&mut c).unwrap();
    for id in &kids {
        let row = rows.iter().find(|r| u64::from(r.id) == *id).unwrap();
        assert!(!row.running, "{row:?}");
        assert!(
            row.exit.as_deref().unwrap_or_default().contains("KILL"),
            "{row:?}"
        );
    }
    let parent_row = rows.iter().find(|r| r.id == parent.id).unwrap();
    assert_eq!(parent_row.restarts, Some(1), "{parent_row:?}");
    assert!(c.list().unwrap().is_empty());
}
