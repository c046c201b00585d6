//! `limits.memory` holds: a memory hog under `"64M"` is killed by the OOM killer (WAIT says
//! `oom: true`, signal 9) long before it gets its 1 GiB, and a healthy agent beside it keeps
//! running. Heavy: takes the heavy test lock.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use clove_abi::msg::AgentState;
use clove_tests::{
    agent_output, agents_can_run, client, heavy_test_lock, kill_agent, last_count, list_agents,
    spawn_ok, spawn_request, wait_exit, Kernel,
};

#[test]
fn spawn_memory_limit_kills_hog() {
    if !agents_can_run("spawn_memory_limit_kills_hog") {
        return;
    }
    let _lock = heavy_test_lock().unwrap();
    let kernel = Kernel::start().unwrap();
    let mut c = client(&kernel).unwrap();
    let healthy = spawn_ok(&mut c, &spawn_request("healthy", "agent_counter.py")).unwrap();

    // Sent as JSON on the original frame, so the limit can be the size string "64M".
    let mut raw = kernel.connect().unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let req = serde_json::json!({
        "name": "hog",
        "script": clove_tests::python_script("agent_memory_hog.py"),
        "limits": {"memory": "64M"},
    });
    let (_, hog) = clove_tests::json_call(&mut raw, 0x10, req.to_string().as_bytes()).unwrap();
    let hog_id = hog["id"]
        .as_u64()
        .unwrap_or_else(|| panic!("SPAWN hog failed: {hog}")) as u32;
    assert_eq!(hog["isolation"]["cgroups"]["memory_limit"], true, "{hog}");

    let done = wait_exit(&mut c, hog_id, Duration::from_secs(60)).unwrap();
    let output = agent_output(&kernel, hog_id).unwrap();
    assert!(
        !output.contains("HOG survived"),
        "the hog got 1 GiB under 64M:\n{output}"
    );
    assert_eq!(
        (done.exit_code, done.signal),
        (None, Some(9)),
        "{done:?}\n{output}"
    );
    assert!(done.oom, "not reported as OOM: {done:?}");
    let reason = done.reason.unwrap_or_default();
    assert!(reason.contains("out of memory"), "reason: {reason}");
    // It did allocate for a while (the limit, not a crash at start, ended it), but not much
    // more than its 64 MiB.
    let reached = output
        .lines()
        .filter_map(|l| l.strip_prefix("HOG "))
        .filter_map(|n| n.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    eprintln!("memory hog under 64M: reached {reached} MiB");
    assert!(
        (16..=64).contains(&reached),
        "hog reached {reached} MiB:\n{output}"
    );

    let rows = list_agents(&mut c).unwrap();
    assert!(rows.iter().all(|r| r.id != hog_id), "{rows:?}");
    let row = rows
        .iter()
        .find(|r| r.id == healthy.id)
        .unwrap_or_else(|| panic!("{rows:?}"));
    assert_eq!(row.state, AgentState::Running, "{row:?}");
    let before = last_count(&kernel, healthy.id).unwrap();
    let start = Instant::now();
    while last_count(&kernel, healthy.id).unwrap() < before + 5 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the healthy agent stopped counting at {before}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    kill_agent(&mut c, healthy.id).unwrap();
}
