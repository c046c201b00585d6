//! Stopping groups:
//! * KILL of a group's child stops it for good and is not a failure: under one_for_all its
//!   siblings keep running;
//! * GROUP_STOP stops the tree for good, children in reverse start order (each gone before the
//!   next is signalled), and removes the group;
//! * on SIGTERM the kernel stops each group's children in reverse start order, independent
//!   groups in parallel, and exits.
//!
//! The agents are `term` agents: they print when SIGTERM reaches them and take 0.3 s to exit.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use clove_sdk::msg::{AgentRef, GroupCreateRequest, GroupStrategy, RestartPolicy};
use clove_tests::{
    agents_can_run, client, group_member, kill_agent, list_agents, row, spawn_ok, term_stamps,
    Kernel,
};

fn one_for_all(name: &str) -> GroupCreateRequest {
    GroupCreateRequest {
        strategy: GroupStrategy::OneForAll,
        intensity: 5,
        period: 60.0,
        ..GroupCreateRequest::new(name)
    }
}

#[test]
fn kill_leaves_siblings_alone_and_group_stop_goes_in_reverse_start_order() {
    if !agents_can_run("kill_leaves_siblings_alone_and_group_stop_goes_in_reverse_start_order") {
        return;
    }
    let kernel = Kernel::start().unwrap();
    let mut c = client(&kernel).unwrap();
    c.group_create(&one_for_all("g")).unwrap();
    let ids: Vec<u32> = ["a", "b", "c", "d"]
        .iter()
        .map(|n| {
            spawn_ok(&mut c, &group_member(n, "g", "term", RestartPolicy::Always))
                .unwrap()
                .id
        })
        .collect();
    // Each child's handler is in place once it printed its first line.
    for id in &ids {
        clove_tests::wait_output_line(&kernel, *id, "RUN 1", Duration::from_secs(20)).unwrap();
    }
    std::thread::sleep(Duration::from_millis(200));

    kill_agent(&mut c, ids[1]).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let rows = list_agents(&mut c).unwrap();
    assert!(row(&rows, ids[1]).is_none(), "{rows:#?}");
    for id in [ids[0], ids[2], ids[3]] {
        assert_eq!(row(&rows, id).unwrap().restarts, Some(0), "{rows:#?}");
        assert!(term_stamps(&kernel, id).unwrap().is_empty());
    }
    let g = &c.group_list(Some("g")).unwrap()[0];
    assert_eq!(g.children.len(), 3, "{g:?}");
    assert_eq!(g.restarts, 0, "{g:?}");

    let stopped = c.group_stop("g").unwrap();
    assert_eq!(stopped.stopped, [ids[3], ids[2], ids[0]]);
    let stamps: Vec<u64> = [ids[3], ids[2], ids[0]]
        .iter()
        .map(|id| {
            let t = term_stamps(&kernel, *id).unwrap();
            assert_eq!(t.len(), 1, "agent {id}: {t:?}");
            t[0]
        })
        .collect();
    // Each one is signalled only after the one before has exited (0.3 s after its SIGTERM).
    assert!(
        stamps.windows(2).all(|w| w[0] + 250_000_000 <= w[1]),
        "{stamps:?}"
    );
    assert!(list_agents(&mut c).unwrap().is_empty());
    assert!(c.group_list(None).unwrap().is_empty());
    let w = c
        .wait(AgentRef::Id(ids[0]), Some(Duration::from_secs(1)))
        .unwrap();
    assert!(w.exited, "{w:?}");
}

#[test]
fn sigterm_stops_groups_in_reverse_start_order_independent_groups_in_parallel() {
    if !agents_can_run("sigterm_stops_groups_in_reverse_start_order_independent_groups_in_parallel")
    {
        return;
    }
    let mut kernel = Kernel::start().unwrap();
    let mut c = client(&kernel).unwrap();
    let mut ids = Vec::new();
    for g in ["p", "q"] {
        c.group_create(&one_for_all(g)).unwrap();
        for n in ["1", "2", "3"] {
            let name = format!("{g}{n}");
            ids.push(
                spawn_ok(
                    &mut c,
                    &group_member(&name, g, "term", RestartPolicy::Always),
                )
                .unwrap()
                .id,
            );
        }
    }
    for id in &ids {
        clove_tests::wait_output_line(&kernel, *id, "RUN 1", Duration::from_secs(20)).unwrap();
    }
    std::thread::sleep(Duration::from_millis(200));
    drop(c);
    let status = kernel
        .signal_and_keep(libc::SIGTERM, Duration::from_secs(30))
        .unwrap();
    assert!(status.success(), "{status:?}");
    let stamp = |i: usize| {
        let t = term_stamps(&kernel, ids[i]).unwrap();
        assert_eq!(t.len(), 1, "agent {}: {t:?}", ids[i]);
        t[0]
    };
    let (p, q) = (
        [stamp(0), stamp(1), stamp(2)],
        [stamp(3), stamp(4), stamp(5)],
    );
    for g in [p, q] {
        // Reverse start order, one after the other.
        assert!(g[2] + 250_000_000 <= g[1], "{g:?}");
        assert!(g[1] + 250_000_000 <= g[0], "{g:?}");
    }
    // In parallel: each group's first stop comes before the other's second.
    assert!(p[2] < q[1] && q[2] < p[1], "p {p:?}, q {q:?}");
}
