//! `restart_policy: on-failure` restarts an agent that exits with a non-zero code or dies by
//! a signal, and not one that exits cleanly: the crash-prone agent runs three times (exit 1,
//! SIGKILL, exit 0) under one id, its log carries a marker per restart, and the events say
//! which exits were restarted. A clean exit ends the other agent at once.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use clove_sdk::msg::RestartPolicy;
use clove_tests::{
    agent_output, agents_can_run, client, events_of, gather_events, list_detail, restart_request,
    spawn_ok, subscribe_events, wait_exit, Kernel,
};

#[test]
fn on_failure_restarts_a_crash_not_a_clean_exit() {
    if !agents_can_run("on_failure_restarts_a_crash_not_a_clean_exit") {
        return;
    }
    let kernel = Kernel::start().unwrap();
    let mut events = subscribe_events(
        &kernel,
        &["AGENT_SPAWNED", "AGENT_EXITED", "AGENT_RESTARTING"],
    )
    .unwrap();
    let mut c = client(&kernel).unwrap();
    let crashy = spawn_ok(
        &mut c,
        &restart_request("crashy", "1,kill,0", RestartPolicy::OnFailure, 100),
    )
    .unwrap();
    let clean = spawn_ok(
        &mut c,
        &restart_request("clean", "0", RestartPolicy::OnFailure, 100),
    )
    .unwrap();
    assert_eq!(crashy.restart_policy, RestartPolicy::OnFailure);

    // WAIT waits for the final exit: the third run's clean one.
    let done = wait_exit(&mut c, crashy.id, Duration::from_secs(60)).unwrap();
    let out = agent_output(&kernel, crashy.id).unwrap();
    assert_eq!(
        (done.exit_code, done.signal),
        (Some(0), None),
        "{done:?}\n{out}"
    );
    let id = crashy.id;
    let runs: Vec<&str> = out.lines().filter(|l| l.starts_with("RUN ")).collect();
    assert_eq!(
        runs,
        [
            format!("RUN 1 id={id}"),
            format!("RUN 2 id={id}"),
            format!("RUN 3 id={id}")
        ],
        "{out}"
    );
    assert!(
        out.contains("--- clove: restart 1 after exit code 1 ---")
            && out.contains("--- clove: restart 2 after signal 9 ---"),
        "{out}"
    );

    let done = wait_exit(&mut c, clean.id, Duration::from_secs(30)).unwrap();
    assert_eq!(done.exit_code, Some(0), "{done:?}");
    // Wait past a backoff: a clean exit is not restarted.
    std::thread::sleep(Duration::from_millis(500));
    let out = agent_output(&kernel, clean.id).unwrap();
    assert_eq!(
        out.lines().filter(|l| l.starts_with("RUN ")).count(),
        1,
        "{out}"
    );
    assert!(!out.contains("--- clove: restart"), "{out}");

    let mut all = Vec::new();
    gather_events(&mut events, &mut all, Duration::from_secs(10), |evs| {
        events_of(evs, crashy.id, "AGENT_EXITED").len() == 3
            && !events_of(evs, clean.id, "AGENT_EXITED").is_empty()
    })
    .unwrap();
    let mine: Vec<(String, serde_json::Value)> = all
        .iter()
        .filter(|e| e["data"]["agent_id"].as_u64() == Some(u64::from(crashy.id)))
        .map(|e| (e["type"].as_str().unwrap().to_owned(), e["data"].clone()))
        .collect();
    let kinds: Vec<&str> = mine.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "AGENT_SPAWNED",
            "AGENT_EXITED",
            "AGENT_RESTARTING",
            "AGENT_SPAWNED",
            "AGENT_EXITED",
            "AGENT_RESTARTING",
            "AGENT_SPAWNED",
            "AGENT_EXITED"
        ],
        "{all:?}"
    );
    let exited: Vec<&serde_json::Value> = mine
        .iter()
        .filter(|(k, _)| k == "AGENT_EXITED")
        .map(|(_, d)| d)
        .collect();
    assert_eq!(
        (&exited[0]["exit_code"], &exited[0]["restarting"]),
        (&serde_json::json!(1), &serde_json::json!(true)),
        "{}",
        exited[0]
    );
    assert_eq!(
        (&exited[1]["signal"], &exited[1]["restarting"]),
        (&serde_json::json!(9), &serde_json::json!(true)),
        "{}",
        exited[1]
    );
    assert_eq!(
        (&exited[2]["exit_code"], &exited[2]["restarting"]),
        (&serde_json::json!(0), &serde_json::json!(false)),
        "{}",
        exited[2]
    );
    let restarting = events_of(&all, crashy.id, "AGENT_RESTARTING");
    let first = &restarting[0]["data"];
    assert_eq!(first["agent_name"], "crashy", "{first}");
    assert_eq!(first["restart_count"], 1, "{first}");
    assert_eq!(first["exit_code"], 1, "{first}");
    assert_eq!(first["backoff_ms"], 100, "{first}");
    let second = &restarting[1]["data"];
    assert_eq!(second["restart_count"], 2, "{second}");
    assert!(second["exit_code"].is_null(), "{second}");
    assert_eq!(second["signal"], 9, "{second}");
    let kinds: Vec<&str> = all
        .iter()
        .filter(|e| e["data"]["agent_id"].as_u64() == Some(u64::from(clean.id)))
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["AGENT_SPAWNED", "AGENT_EXITED"], "{all:?}");

    // LIST's rich form remembers both, with their restart counts.
    let rows = list_detail(&mut c).unwrap();
    let row = |id: u32| rows.iter().find(|r| r.id == id).unwrap();
    assert_eq!(row(crashy.id).restarts, Some(2), "{rows:?}");
    assert_eq!(row(clean.id).restarts, Some(0), "{rows:?}");
}
