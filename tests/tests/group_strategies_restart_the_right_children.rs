//! Supervisor group strategies: when the middle one of three children fails,
//! * `one_for_all` stops the other two in reverse start order and starts all three again;
//! * `rest_for_one` restarts the failed child and the one started after it, not the first;
//! * `one_for_one` restarts the failed child alone.
//!
//! The failing child stays up 1.5 s first, so all three have joined; the others are `term`
//! agents that print when SIGTERM reaches them and take 0.3 s to exit, so the order of their
//! stops is in their output.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use clove_sdk::msg::{GroupCreateRequest, GroupStrategy, RestartPolicy};
use clove_tests::{
    agent_output, agents_can_run, client, group_member, row, spawn_ok, term_stamps, wait_agents,
    Kernel,
};

/// Runs children [a, b (fails once), c] under `strategy`; returns whether a and c were
/// restarted, and their SIGTERM times.
fn run(strategy: GroupStrategy) -> Option<[(bool, Vec<u64>); 2]> {
    let test = format!("group_{}", strategy.as_str());
    if !agents_can_run(&test) {
        return None;
    }
    let kernel = Kernel::start().unwrap();
    let mut c = client(&kernel).unwrap();
    let g = c
        .group_create(&GroupCreateRequest {
            strategy,
            intensity: 5,
            period: 60.0,
            ..GroupCreateRequest::new("g")
        })
        .unwrap();
    assert_eq!(
        (g.strategy, g.intensity, g.state.as_str()),
        (strategy, 5, "running")
    );
    let a = spawn_ok(
        &mut c,
        &group_member("a", "g", "term", RestartPolicy::Always),
    )
    .unwrap();
    let b = spawn_ok(
        &mut c,
        &group_member("b", "g", "up:1.5,sleep", RestartPolicy::OnFailure),
    )
    .unwrap();
    let cc = spawn_ok(
        &mut c,
        &group_member("c", "g", "term", RestartPolicy::Always),
    )
    .unwrap();
    let children: Vec<String> = c.group_list(Some("g")).unwrap()[0]
        .children
        .iter()
        .map(|ch| format!("{}:{}", ch.kind, ch.name))
        .collect();
    assert_eq!(children, ["agent:a", "agent:b", "agent:c"]);

    // b fails once, then runs: wait for its second run and a quiet group.
    let rows = wait_agents(&mut c, Duration::from_secs(30), |rows| {
        row(rows, b.id).is_some_and(|r| r.restarts == Some(1) && r.state.as_str() == "RUNNING")
            && [a.id, cc.id]
                .iter()
                .all(|id| row(rows, *id).is_some_and(|r| r.state.as_str() == "RUNNING"))
    })
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let g = &c.group_list(Some("g")).unwrap()[0];
    assert_eq!(g.restarts, 1, "{g:?}");
    assert!(g.children.iter().all(|ch| ch.state == "running"), "{g:?}");
    assert!(agent_output(&kernel, b.id).unwrap().contains("RUN 2"));
    let mut out = Vec::new();
    for id in [a.id, cc.id] {
        let restarted = row(&rows, id).unwrap().restarts == Some(1);
        let ran_twice = agent_output(&kernel, id).unwrap().contains("RUN 2");
        assert_eq!(
            restarted, ran_twice,
            "agent {id}: LIST and its output disagree"
        );
        out.push((restarted, term_stamps(&kernel, id).unwrap()));
    }
    Some([out.remove(0), out.remove(0)])
}

#[test]
fn one_for_all_restarts_every_child_stopping_them_in_reverse_order() {
    let Some([(a, a_term), (c, c_term)]) = run(GroupStrategy::OneForAll) else {
        return;
    };
    assert!(a && c, "one_for_all: both siblings restart");
    // c was started last, so it is stopped first; a only after c has exited.
    assert_eq!((a_term.len(), c_term.len()), (1, 1));
    assert!(
        c_term[0] + 250_000_000 <= a_term[0],
        "c must be stopped (and gone) before a: c {c_term:?}, a {a_term:?}"
    );
}

#[test]
fn rest_for_one_restarts_only_the_children_after_the_failed_one() {
    let Some([(a, a_term), (c, _)]) = run(GroupStrategy::RestForOne) else {
        return;
    };
    assert!(!a, "rest_for_one: a was started before b and keeps running");
    assert!(a_term.is_empty());
    assert!(c, "rest_for_one: c was started after b and restarts");
}

#[test]
fn one_for_one_restarts_the_failed_child_alone() {
    let Some([(a, _), (c, _)]) = run(GroupStrategy::OneForOne) else {
        return;
    };
    assert!(!a && !c, "one_for_one: the siblings keep running");
}
