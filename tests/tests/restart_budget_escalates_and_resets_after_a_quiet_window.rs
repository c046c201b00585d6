//! The restart budget: `max_restarts` restarts within `restart_window` seconds. An agent that
//! crashes once more is given up on: AGENT_ESCALATED `{agent_name, restart_count, exit_code}`,
//! then its final exit (WAIT reports it, LIST shows it FAILED, its name is free again). An
//! agent whose runs each stay up through the window never spends its budget, and its backoff
//! starts afresh each time.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use clove_sdk::msg::{AgentState, RestartPolicy};
use clove_tests::{
    agent_output, agents_can_run, client, events_of, gather_events, kill_agent, list_detail,
    restart_request, spawn_ok, subscribe_events, wait_exit, Kernel,
};

#[test]
fn escalation_after_max_restarts_within_the_window() {
    if !agents_can_run("escalation_after_max_restarts_within_the_window") {
        return;
    }
    let kernel = Kernel::start().unwrap();
    let mut events = subscribe_events(
        &kernel,
        &["AGENT_EXITED", "AGENT_RESTARTING", "AGENT_ESCALATED"],
    )
    .unwrap();
    let mut c = client(&kernel).unwrap();
    let mut req = restart_request("doomed", "1", RestartPolicy::OnFailure, 50);
    req.max_restarts = 2;
    req.restart_window = 60.0;
    let agent = spawn_ok(&mut c, &req).unwrap();
    let done = wait_exit(&mut c, agent.id, Duration::from_secs(60)).unwrap();
    assert_eq!(done.exit_code, Some(1), "{done:?}");
    let out = agent_output(&kernel, agent.id).unwrap();
    assert_eq!(
        out.lines().filter(|l| l.starts_with("RUN ")).count(),
        3,
        "the first run and two restarts:\n{out}"
    );

    let mut all = Vec::new();
    gather_events(&mut events, &mut all, Duration::from_secs(10), |evs| {
        events_of(evs, agent.id, "AGENT_EXITED")
            .iter()
            .any(|e| e["data"]["restarting"] == false)
    })
    .unwrap();
    let escalated = events_of(&all, agent.id, "AGENT_ESCALATED");
    assert_eq!(escalated.len(), 1, "{all:?}");
    let data = &escalated[0]["data"];
    assert_eq!(data["agent_name"], "doomed", "{data}");
    assert_eq!(data["restart_count"], 2, "{data}");
    assert_eq!(data["exit_code"], 1, "{data}");
    assert_eq!(
        events_of(&all, agent.id, "AGENT_RESTARTING").len(),
        2,
        "{all:?}"
    );
    let kinds: Vec<&str> = all
        .iter()
        .filter(|e| e["data"]["agent_id"].as_u64() == Some(u64::from(agent.id)))
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        &kinds[kinds.len() - 2..],
        ["AGENT_ESCALATED", "AGENT_EXITED"],
        "{all:?}"
    );

    let rows = list_detail(&mut c).unwrap();
    let row = rows.iter().find(|r| r.id == agent.id).unwrap();
    assert_eq!(
        (row.state, row.restarts, row.exit.as_deref()),
        (AgentState::Failed, Some(2), Some("exited with code 1")),
        "{rows:?}"
    );
    // Given up on: its name is free for a new agent.
    let again = spawn_ok(
        &mut c,
        &restart_request("doomed", "0", RestartPolicy::Never, 50),
    )
    .unwrap();
    assert_ne!(again.id, agent.id);
    wait_exit(&mut c, again.id, Duration::from_secs(30)).unwrap();
}

#[test]
fn the_budget_resets_after_a_quiet_window() {
    if !agents_can_run("the_budget_resets_after_a_quiet_window") {
        return;
    }
    let kernel = Kernel::start().unwrap();
    let mut events = subscribe_events(&kernel, &["AGENT_RESTARTING", "AGENT_ESCALATED"]).unwrap();
    let mut c = client(&kernel).unwrap();
    // One restart per second allowed; each run stays up 1.3 s, then fails.
    let mut req = restart_request("steady", "up:1.3", RestartPolicy::OnFailure, 50);
    req.max_restarts = 1;
    req.restart_window = 1.0;
    let agent = spawn_ok(&mut c, &req).unwrap();
    let mut all = Vec::new();
    gather_events(&mut events, &mut all, Duration::from_secs(60), |evs| {
        events_of(evs, agent.id, "AGENT_RESTARTING").len() >= 3
    })
    .unwrap();
    assert!(
        events_of(&all, agent.id, "AGENT_ESCALATED").is_empty(),
        "{all:?}"
    );
    let restarting = events_of(&all, agent.id, "AGENT_RESTARTING");
    for (i, e) in restarting.iter().enumerate() {
        assert_eq!(e["data"]["restart_count"], i + 1, "{all:?}");
        // The backoff starts afresh after every run that stayed up a whole window.
        assert_eq!(e["data"]["backoff_ms"], 50, "{all:?}");
    }
    kill_agent(&mut c, agent.id).unwrap();
    wait_exit(&mut c, agent.id, Duration::from_secs(5)).unwrap();
}
