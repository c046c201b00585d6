//! A SIGKILLed kernel leaves no agent process behind, and the next kernel on the same state
//! dir cleans up its stale cgroups and brings back the agents whose policy restarts them
//! (`always`, `on-failure`) with their ids, names, uids, directories and agent-scoped state;
//! a `never` agent, an agent spawned by another agent and a KILLed agent stay gone. A clean
//! SIGTERM shutdown followed by a start brings them back the same way. Heavy: takes the heavy
//! test lock.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;

use clove_sdk::msg::RestartPolicy;
use clove_tests::{
    agent_output, agents_can_run, cgroup_dirs_of, children_of, client, heavy_test_lock, kill_agent,
    list_agents, plan_request, processes_of_uid, python_script, restart_request,
    sandboxed_agent_uid, spawn_ok, wait_output_line, Kernel,
};

const SPAWN: u8 = 0x10;
const RECV: u8 = 0x21;
const LONG: Duration = Duration::from_secs(30);

/// The live agents as id → name.
fn live(kernel: &Kernel) -> BTreeMap<u32, String> {
    let mut c = client(kernel).unwrap();
    list_agents(&mut c)
        .unwrap()
        .into_iter()
        .map(|a| (a.id, a.name))
        .collect()
}

/// The cgroup directories of agent `id` whose pid is `pid` (its own `agent-<id>`, one per
/// hierarchy).
fn own_cgroups(id: u32, pid: i32) -> Vec<PathBuf> {
    let own = format!("agent-{id}");
    cgroup_dirs_of(pid)
        .into_iter()
        .filter(|d| d.components().any(|c| c.as_os_str() == own.as_str()))
        .collect()
}

/// The pid of the live agent `id` (its sandbox's init).
fn pid_of(kernel: &Kernel, id: u32) -> i32 {
    let mut c = client(kernel).unwrap();
    list_agents(&mut c)
        .unwrap()
        .into_iter()
        .find(|a| a.id == id)
        .unwrap_or_else(|| panic!("agent {id} is not live"))
        .pid
}

/// Waits until no process of any of `uids` is left, or fails with what is left.
fn wait_no_process_of(uids: &BTreeMap<String, u32>, limit: Duration) {
    let start = Instant::now();
    loop {
        let left: Vec<(&String, Vec<(i32, String)>)> = uids
            .iter()
            .map(|(name, uid)| (name, processes_of_uid(*uid)))
            .filter(|(_, procs)| !procs.is_empty())
            .collect();
        if left.is_empty() {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "agent processes outlived the kernel by {limit:?}: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn kernel_sigkill_leaves_no_orphans_and_restores_agents() {
    if !agents_can_run("kernel_sigkill_leaves_no_orphans_and_restores_agents") {
        return;
    }
    let _lock = heavy_test_lock().unwrap();
    // Holds the state dir for every kernel below.
    let mut first = Kernel::start().unwrap();
    let mut c = client(&first).unwrap();

    // `keep` stores the agent-scoped key `kept` on its first run and prints it on every run.
    let perm = spawn_ok(
        &mut c,
        &restart_request("perm", "keep", RestartPolicy::Always, 100),
    )
    .unwrap();
    let transient = spawn_ok(
        &mut c,
        &restart_request("transient", "sleep", RestartPolicy::OnFailure, 100),
    )
    .unwrap();
    let temp = spawn_ok(
        &mut c,
        &restart_request("temp", "sleep", RestartPolicy::Never, 100),
    )
    .unwrap();
    let doomed = spawn_ok(
        &mut c,
        &restart_request("doomed", "sleep", RestartPolicy::Always, 100),
    )
    .unwrap();
    // An agent that spawns an `always` child and then waits: the child is its to spawn
    // again, not the kernel's.
    let kid_script = python_script("agent_restarts.py");
    let parent = spawn_ok(
        &mut c,
        &plan_request(
            "parent",
            &json!([
                {"op": SPAWN, "payload": {"name": "kid", "script": kid_script,
                 "args": ["sleep"], "restart_policy": "always"}},
                {"op": RECV, "payload": {"max": 1, "wait_ms": 100_000}},
            ]),
        ),
    )
    .unwrap();
    let spawned = wait_output_line(&first, parent.id, "STEP 0 ", LONG).unwrap();
    let spawned: serde_json::Value = serde_json::from_str(&spawned).unwrap();
    assert_eq!(spawned["reply"]["status"], "running", "{spawned}");
    let kid = spawned["reply"]["id"].as_u64().unwrap() as u32;

    assert_eq!(
        wait_output_line(&first, perm.id, "KEPT 1 ", LONG).unwrap(),
        "1"
    );
    for a in [&transient, &temp, &doomed] {
        wait_output_line(&first, a.id, &format!("RUN 1 id={}", a.id), LONG).unwrap();
    }
    wait_output_line(&first, kid, &format!("RUN 1 id={kid}"), LONG).unwrap();
    kill_agent(&mut c, doomed.id).unwrap();

    let survivors = [
        ("perm", perm.id),
        ("transient", transient.id),
        ("temp", temp.id),
        ("parent", parent.id),
        ("kid", kid),
    ];
    let mut uids = BTreeMap::new();
    let mut cgroups = BTreeMap::new();
    for (name, id) in survivors {
        let pid = pid_of(&first, id);
        uids.insert(name.to_owned(), sandboxed_agent_uid(pid).unwrap());
        let dirs = own_cgroups(id, pid);
        assert!(!dirs.is_empty(), "agent {name} has no cgroup of its own");
        cgroups.insert(name.to_owned(), dirs);
    }

    // SIGKILL: no shutdown runs, yet every sandbox's init sees its lifeline close and takes
    // its agent along.
    drop(c);
    first.sigkill().unwrap();
    wait_no_process_of(&uids, Duration::from_secs(10));
    // The cgroups are left behind for the next kernel to clean.
    for dirs in cgroups.values() {
        for d in dirs {
            assert!(d.exists(), "{} vanished with the kernel?", d.display());
        }
    }

    // The next kernel on the same state dir: stale cgroups gone, the two saved agents back
    // (before it accepted any connection), nothing else.
    let second = first.restart_on_state_dir().unwrap();
    for name in ["temp", "parent", "kid"] {
        for d in &cgroups[name] {
            assert!(
                !d.exists(),
                "stale cgroup {} of {name} remains",
                d.display()
            );
        }
    }
    let expected: BTreeMap<u32, String> = [
        (perm.id, "perm".to_owned()),
        (transient.id, "transient".to_owned()),
    ]
    .into();
    assert_eq!(live(&second), expected, "after SIGKILL");
    for name in ["temp", "parent", "kid"] {
        assert!(
            processes_of_uid(uids[name]).is_empty(),
            "{name} was started again"
        );
    }
    // The same agent: id in its environment, uid, directory (its run counter in the work
    // dir and its log go on), agent-scoped key.
    assert_eq!(
        wait_output_line(&second, perm.id, "KEPT 2 ", LONG).unwrap(),
        "1",
        "the agent-scoped key came back"
    );
    wait_output_line(
        &second,
        transient.id,
        &format!("RUN 2 id={}", transient.id),
        LONG,
    )
    .unwrap();
    let out = agent_output(&second, perm.id).unwrap();
    let marker = "--- clove: restored after a kernel restart ---";
    assert!(out.contains("KEPT 1 1"), "the log went on:\n{out}");
    assert!(out.contains(marker), "{out}");
    assert!(
        out.contains(&format!("RUN 2 id={}", perm.id)),
        "the id came back:\n{out}"
    );
    for (a, name) in [(&perm, "perm"), (&transient, "transient")] {
        let pid = pid_of(&second, a.id);
        assert_eq!(
            sandboxed_agent_uid(pid).unwrap(),
            uids[name],
            "{name}'s uid"
        );
        assert!(!children_of(pid).is_empty());
        let dirs = cgroup_dirs_of(pid);
        assert!(
            dirs.iter().any(|d| d.ends_with(format!("agent-{}", a.id))),
            "{name} in its own cgroup again: {dirs:?}"
        );
    }

    // A clean shutdown keeps them saved, and their keys.
    let (status, stderr) = second.stop_and_collect().unwrap();
    assert!(status.success(), "{status}: {stderr}");
    wait_no_process_of(&uids, Duration::from_secs(10));
    let third = first.restart_on_state_dir().unwrap();
    assert_eq!(live(&third), expected, "after SIGTERM");
    assert_eq!(
        wait_output_line(&third, perm.id, "KEPT 3 ", LONG).unwrap(),
        "1",
        "the agent-scoped key stayed through the shutdown"
    );

    // KILL forgets an agent: it does not come back.
    let mut c = client(&third).unwrap();
    kill_agent(&mut c, perm.id).unwrap();
    drop(c);
    let (status, stderr) = third.stop_and_collect().unwrap();
    assert!(status.success(), "{status}: {stderr}");
    let fourth = first.restart_on_state_dir().unwrap();
    assert_eq!(
        live(&fourth),
        [(transient.id, "transient".to_owned())].into(),
        "after KILL and a restart"
    );
    let (status, stderr) = fourth.stop_and_collect().unwrap();
    assert!(status.success(), "{status}: {stderr}");
    wait_no_process_of(&uids, Duration::from_secs(10));
}
