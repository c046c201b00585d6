//! Group intensity and escalation:
//! * a nested group that exceeds its intensity stops its children and escalates
//!   (GROUP_ESCALATED, `gave_up: false`); its parent counts that as one failed child and, under
//!   one_for_one, restarts the nested group's children without touching its own other child;
//! * a top-level group that exceeds its intensity gives up (`gave_up: true`): its agents exit
//!   for good, with AGENT_ESCALATED, and the group is gone.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use clove_sdk::msg::{AgentRef, GroupCreateRequest, RestartPolicy};
use clove_tests::{
    agents_can_run, client, gather_events, group_member, row, spawn_ok, subscribe_events,
    wait_agents, Kernel,
};

#[test]
fn nested_group_escalates_to_its_parent_which_restarts_it() {
    if !agents_can_run("nested_group_escalates_to_its_parent_which_restarts_it") {
        return;
    }
    let kernel = Kernel::start().unwrap();
    let mut events = subscribe_events(&kernel, &["GROUP_ESCALATED"]).unwrap();
    let mut c = client(&kernel).unwrap();
    c.group_create(&GroupCreateRequest {
        intensity: 3,
        period: 60.0,
        ..GroupCreateRequest::new("top")
    })
    .unwrap();
    c.group_create(&GroupCreateRequest {
        intensity: 1,
        period: 60.0,
        parent: Some("top".into()),
        ..GroupCreateRequest::new("sub")
    })
    .unwrap();
    let x = spawn_ok(
        &mut c,
        &group_member("x", "top", "term", RestartPolicy::Always),
    )
    .unwrap();
    // y fails twice in a row: one restart is within sub's intensity, the second is not.
    let y = spawn_ok(
        &mut c,
        &group_member("y", "sub", "up:1,1,sleep", RestartPolicy::Always),
    )
    .unwrap();
    let z = spawn_ok(
        &mut c,
        &group_member("z", "sub", "term", RestartPolicy::Always),
    )
    .unwrap();
    let top = &c.group_list(Some("top")).unwrap()[0];
    let kinds: Vec<String> = top
        .children
        .iter()
        .map(|ch| format!("{}:{}", ch.kind, ch.name))
        .collect();
    assert_eq!(kinds, ["group:sub", "agent:x"]);

    let mut all = Vec::new();
    gather_events(&mut events, &mut all, Duration::from_secs(30), |evs| {
        evs.iter().any(|e| e["data"]["group"] == "sub")
    })
    .unwrap();
    let esc = all.iter().find(|e| e["data"]["group"] == "sub").unwrap();
    assert_eq!(esc["data"]["parent"], "top", "{esc}");
    assert_eq!(esc["data"]["gave_up"], false, "{esc}");
    assert_eq!(esc["data"]["intensity"], 1, "{esc}");

    // top restarted sub: y (third run: sleeps) and z run again; x was never touched.
    let rows = wait_agents(&mut c, Duration::from_secs(30), |rows| {
        row(rows, y.id).is_some_and(|r| r.restarts == Some(2) && r.state.as_str() == "RUNNING")
            && row(rows, z.id).is_some_and(|r| r.state.as_str() == "RUNNING")
    })
    .unwrap();
    assert_eq!(row(&rows, z.id).unwrap().restarts, Some(1), "{rows:#?}");
    assert_eq!(row(&rows, x.id).unwrap().restarts, Some(0), "{rows:#?}");
    std::thread::sleep(Duration::from_millis(300));
    let groups = c.group_list(None).unwrap();
    let (top, sub) = (&groups[0], &groups[1]);
    assert_eq!((top.name.as_str(), top.restarts), ("top", 1), "{groups:#?}");
    assert_eq!(sub.name, "sub");
    assert_eq!(sub.state, "running", "{groups:#?}");
    assert!(
        sub.children.iter().all(|ch| ch.state == "running"),
        "{groups:#?}"
    );
    // Nothing reached the top: no second GROUP_ESCALATED.
    gather_events(&mut events, &mut all, Duration::from_millis(500), |_| false).ok();
    assert_eq!(all.len(), 1, "{all:#?}");
}

#[test]
fn top_group_beyond_its_intensity_gives_up_and_its_agents_exit() {
    if !agents_can_run("top_group_beyond_its_intensity_gives_up_and_its_agents_exit") {
        return;
    }
    let kernel = Kernel::start().unwrap();
    let mut events = subscribe_events(&kernel, &["GROUP_ESCALATED", "AGENT_ESCALATED"]).unwrap();
    let mut c = client(&kernel).unwrap();
    c.group_create(&GroupCreateRequest {
        intensity: 1,
        period: 60.0,
        ..GroupCreateRequest::new("solo")
    })
    .unwrap();
    let calm = spawn_ok(
        &mut c,
        &group_member("calm", "solo", "term", RestartPolicy::Always),
    )
    .unwrap();
    let bad = spawn_ok(
        &mut c,
        &group_member("bad", "solo", "up:1,3", RestartPolicy::OnFailure),
    )
    .unwrap();
    // bad fails twice: the second failure is beyond the intensity.
    let w = c
        .wait(AgentRef::Id(bad.id), Some(Duration::from_secs(30)))
        .unwrap();
    assert!(w.exited, "{w:?}");
    assert_eq!(w.exit_code, Some(3), "{w:?}");
    let w = c
        .wait(AgentRef::Id(calm.id), Some(Duration::from_secs(30)))
        .unwrap();
    assert!(w.exited, "the group's other agent goes too: {w:?}");
    let mut all = Vec::new();
    gather_events(&mut events, &mut all, Duration::from_secs(10), |evs| {
        evs.iter()
            .filter(|e| e["type"] == "AGENT_ESCALATED")
            .count()
            == 2
            && evs.iter().any(|e| e["type"] == "GROUP_ESCALATED")
    })
    .unwrap();
    let esc = all.iter().find(|e| e["type"] == "GROUP_ESCALATED").unwrap();
    assert_eq!(esc["data"]["gave_up"], true, "{esc}");
    assert_eq!(esc["data"]["group"], "solo", "{esc}");
    let err = c.group_list(Some("solo")).unwrap_err();
    assert!(err.to_string().contains("no group named"), "{err}");
    assert!(c.list().unwrap().is_empty());
}
