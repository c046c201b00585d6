//! Supervisor groups are saved like restarting agents: after a kernel restart (SIGKILL or
//! SIGTERM) the groups come back first, with their spec and nesting, then their saved agents
//! rejoin them (same ids) and the group supervises them again. A stopped group is forgotten,
//! with its agents.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use clove_sdk::msg::{GroupCreateRequest, GroupStrategy, RestartPolicy};
use clove_tests::{
    agents_can_run, client, group_member, heavy_test_lock, row, spawn_ok, wait_agents,
    wait_output_line, Kernel,
};

#[test]
fn kernel_restart_restores_groups_and_their_agents() {
    if !agents_can_run("kernel_restart_restores_groups_and_their_agents") {
        return;
    }
    let _lock = heavy_test_lock().unwrap();
    let mut first = Kernel::start().unwrap();
    let mut c = client(&first).unwrap();
    c.group_create(&GroupCreateRequest {
        intensity: 4,
        period: 30.0,
        ..GroupCreateRequest::new("top")
    })
    .unwrap();
    c.group_create(&GroupCreateRequest {
        strategy: GroupStrategy::OneForAll,
        intensity: 3,
        period: 20.0,
        parent: Some("top".into()),
        shutdown_ms: Some(700),
        ..GroupCreateRequest::new("pool")
    })
    .unwrap();
    let a = spawn_ok(
        &mut c,
        &group_member("a", "pool", "term", RestartPolicy::Always),
    )
    .unwrap();
    // b: its first run sleeps; every later run (after the restarts) fails once, then sleeps.
    let b = spawn_ok(
        &mut c,
        &group_member("b", "pool", "sleep,up:1,sleep", RestartPolicy::Always),
    )
    .unwrap();
    // Both have counted their first run (in their work dirs, which outlive the kernel).
    for id in [a.id, b.id] {
        wait_output_line(&first, id, "RUN 1", Duration::from_secs(20)).unwrap();
    }
    let before = c.group_list(None).unwrap();
    drop(c);

    // SIGKILL: nothing is stopped, everything comes back.
    first.sigkill().unwrap();
    let second = first.restart_on_state_dir().unwrap();
    let mut c = client(&second).unwrap();
    let after = c.group_list(None).unwrap();
    assert_eq!(after.len(), 2, "{after:#?}");
    for (x, y) in before.iter().zip(&after) {
        assert_eq!(
            (
                &x.name,
                x.strategy,
                x.intensity,
                x.period,
                &x.parent,
                x.shutdown_ms
            ),
            (
                &y.name,
                y.strategy,
                y.intensity,
                y.period,
                &y.parent,
                y.shutdown_ms
            )
        );
    }
    let pool = &after[1];
    let members: Vec<Option<u32>> = pool.children.iter().map(|ch| ch.id).collect();
    assert_eq!(members, [Some(a.id), Some(b.id)], "{pool:#?}");
    let top_children: Vec<&str> = after[0]
        .children
        .iter()
        .map(|ch| ch.name.as_str())
        .collect();
    assert_eq!(top_children, ["pool"]);

    // The group supervises them again: b's second run fails, one_for_all restarts a too.
    let rows = wait_agents(&mut c, Duration::from_secs(30), |rows| {
        row(rows, a.id).is_some_and(|r| r.restarts == Some(1) && r.state.as_str() == "RUNNING")
            && row(rows, b.id)
                .is_some_and(|r| r.restarts == Some(1) && r.state.as_str() == "RUNNING")
    })
    .unwrap();
    assert_eq!(rows.len(), 2, "{rows:#?}");

    // SIGTERM: the shutdown stops everything, and everything comes back.
    drop(c);
    let mut second = second;
    assert!(second
        .signal_and_keep(libc::SIGTERM, Duration::from_secs(30))
        .unwrap()
        .success());
    let third = second.restart_on_state_dir().unwrap();
    let mut c = client(&third).unwrap();
    assert_eq!(c.group_list(None).unwrap().len(), 2);
    assert_eq!(c.list().unwrap().len(), 2);

    // A stopped group is forgotten, with the agents it stopped; its parent stays.
    let stopped = c.group_stop("pool").unwrap();
    assert_eq!(stopped.stopped, [b.id, a.id]);
    drop(c);
    let mut third = third;
    third.sigkill().unwrap();
    let fourth = third.restart_on_state_dir().unwrap();
    let mut c = client(&fourth).unwrap();
    let groups = c.group_list(None).unwrap();
    assert_eq!(groups.len(), 1, "{groups:#?}");
    assert_eq!(groups[0].name, "top");
    assert!(groups[0].children.is_empty(), "{groups:#?}");
    assert!(c.list().unwrap().is_empty());
}
