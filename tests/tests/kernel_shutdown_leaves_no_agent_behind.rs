//! A kernel that receives SIGTERM stops every agent and leaves nothing of them behind: no
//! process of any agent uid (a paused agent and a daemon that double-forked with setsid
//! included), no cgroup of its subtree, no mount under its state dir. Heavy: takes the heavy
//! test lock.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use clove_abi::msg::{ByteSize, Limits, PauseRequest};
use clove_tests::{
    agents_can_run, cgroup_dirs_of, client, heavy_test_lock, last_count, mounts_under,
    processes_of_uid, sandboxed_agent_uid, spawn_ok, spawn_request, wait_output_line, Kernel,
};

#[test]
fn kernel_shutdown_leaves_no_agent_behind() {
    if !agents_can_run("kernel_shutdown_leaves_no_agent_behind") {
        return;
    }
    let _lock = heavy_test_lock().unwrap();
    let kernel = Kernel::start().unwrap();
    let state_dir = kernel.state_dir.canonicalize().unwrap();
    let mut c = client(&kernel).unwrap();

    // A sleeper whose work dir is a size-capped tmpfs: a mount on the host under the state dir.
    let mut sleeper = spawn_request("sleeper", "agent_sleep.py");
    sleeper.limits = Some(Limits {
        disk: Some(ByteSize(8 << 20)),
        ..Limits::default()
    });
    let sleeper = spawn_ok(&mut c, &sleeper).unwrap();
    assert!(
        !sleeper.isolation.not_applied.iter().any(|n| n == "disk"),
        "{:?}",
        sleeper.isolation
    );
    // A counter, paused at shutdown.
    let paused = spawn_ok(&mut c, &spawn_request("paused", "agent_counter.py")).unwrap();
    // An agent that leaves a daemon (double fork + setsid) behind.
    let daemon = spawn_ok(&mut c, &spawn_request("daemonizer", "agent_daemonize.py")).unwrap();
    wait_output_line(&kernel, sleeper.id, "READY", Duration::from_secs(20)).unwrap();
    wait_output_line(&kernel, daemon.id, "DAEMON ", Duration::from_secs(20)).unwrap();
    while last_count(&kernel, paused.id).unwrap() == 0 {
        std::thread::sleep(Duration::from_millis(20));
    }
    let p = c
        .call(&PauseRequest {
            id: Some(paused.id),
            name: None,
        })
        .unwrap();
    assert!(p.paused, "{p:?}");

    // What exists now and must be gone after the shutdown.
    let agents = [&sleeper, &paused, &daemon];
    let mut uids = BTreeSet::new();
    for a in agents {
        let uid = sandboxed_agent_uid(a.pid).unwrap();
        assert!(
            !processes_of_uid(uid).is_empty(),
            "agent {} uid {uid}",
            a.name
        );
        uids.insert(uid);
    }
    assert_eq!(uids.len(), 3, "agents share uids: {uids:?}");
    let daemon_uid = sandboxed_agent_uid(daemon.pid).unwrap();
    let daemon_procs = processes_of_uid(daemon_uid);
    assert!(
        daemon_procs.len() >= 2,
        "the daemonizer and its daemon should both run: {daemon_procs:?}"
    );
    let mut cgroups: BTreeSet<PathBuf> = BTreeSet::new();
    let mut subtrees: BTreeSet<PathBuf> = BTreeSet::new();
    for a in agents {
        let mine: Vec<PathBuf> = cgroup_dirs_of(a.pid)
            .into_iter()
            .filter(|d| {
                d.components()
                    .any(|c| c.as_os_str() == format!("agent-{}", a.id).as_str())
            })
            .collect();
        assert!(
            !mine.is_empty(),
            "agent {} is in no cgroup of its own",
            a.name
        );
        for dir in mine {
            assert!(dir.is_dir(), "{}", dir.display());
            // The kernel's subtree: the `clove-<hex>` ancestor of the agent's cgroup.
            let subtree = dir
                .ancestors()
                .find(|d| {
                    d.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("clove-"))
                })
                .unwrap_or_else(|| panic!("no clove-* subtree above {}", dir.display()))
                .to_path_buf();
            subtrees.insert(subtree);
            cgroups.insert(dir);
        }
    }
    let mounts = mounts_under(&state_dir);
    assert!(
        !mounts.is_empty(),
        "no work-dir mount under {}",
        state_dir.display()
    );

    let (status, stderr) = kernel.stop_and_collect().unwrap();
    assert!(status.success(), "kernel exit {status}: {stderr}");

    for uid in &uids {
        let left = processes_of_uid(*uid);
        assert!(
            left.is_empty(),
            "processes of agent uid {uid} remain: {left:?}"
        );
    }
    for dir in cgroups.iter().chain(&subtrees) {
        assert!(!dir.exists(), "cgroup {} remains", dir.display());
    }
    let left = mounts_under(&state_dir);
    assert!(
        left.is_empty(),
        "mounts remain under {}: {left:?}",
        state_dir.display()
    );
}
