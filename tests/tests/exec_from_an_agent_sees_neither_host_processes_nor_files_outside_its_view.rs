//! EXEC from an agent runs inside that agent's sandbox (its namespaces, cgroup and uid),
//! never on the host with the kernel's privileges (issue 7, item 3).
//!
//! Every check here fails if the command ran on the host: the canary file is world-readable
//! on the host (any uid could read it there), the kernel's processes are in the host's /proc,
//! and the host-side checks compare the command's namespaces, cgroup, parent and uid with the
//! agent's init.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clove_abi::msg::{Limits, Permissions, RestartPolicy};
use clove_tests::{
    agent_output, agents_can_run, cgroup_dirs_of, client, kill_agent, plan_request, plan_step,
    proc_status, proc_uid, sandboxed_agent_uid, spawn_ok, Kernel,
};
use serde_json::json;

const EXEC: u8 = 0x02;
const STEP: Duration = Duration::from_secs(60);

fn exec_perms(prefixes: &[&str]) -> Option<Permissions> {
    Some(Permissions {
        can_exec: true,
        exec: prefixes.iter().map(|p| (*p).to_owned()).collect(),
        ..Permissions::none()
    })
}

/// The namespaces of process `pid`, as `/proc/<pid>/ns/*` links.
fn namespaces(pid: i32) -> Vec<String> {
    ["pid", "mnt", "net", "uts", "ipc"]
        .iter()
        .map(|ns| {
            std::fs::read_link(format!("/proc/{pid}/ns/{ns}"))
                .map(|l| l.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .collect()
}

/// Host pids of the processes of `uid` whose command line is exactly `argv`.
fn find_process(uid: u32, argv: &[&str], limit: Duration) -> Option<i32> {
    let want: Vec<u8> = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    let start = Instant::now();
    while start.elapsed() < limit {
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            if proc_uid(pid) == Some(uid)
                && std::fs::read(format!("/proc/{pid}/cmdline")).ok() == Some(want.clone())
            {
                return Some(pid);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[test]
fn exec_from_an_agent_sees_neither_host_processes_nor_files_outside_its_view() {
    if !agents_can_run("exec_from_an_agent_sees_neither_host_processes_nor_files_outside_its_view")
    {
        return;
    }
    let (_canary_dir, canary) = clove_tests::canary_file("visible from the host only\n");
    let marker = tempfile::tempdir().unwrap();
    let touched = marker.path().join("touched");
    let kernel = Kernel::start().unwrap();
    let kernel_pid = kernel.pid() as i32;
    let mut c = client(&kernel).unwrap();
    let plan = json!([
        // 0: outside its exec prefixes: refused, never run.
        {"op": EXEC, "payload": {"command": format!("touch {}", touched.display())}},
        // 1: its own uid.
        {"op": EXEC, "payload": {"command": "id -u; id -g"}},
        // 2: its own pid namespace.
        {"op": EXEC, "payload": {"argv": ["ls", "/proc"]}},
        // 3: its own view of the file system.
        {"op": EXEC, "payload": {"argv": ["cat", canary.to_str().unwrap()]}},
        // 4: a background child and the timeout (the test looks at it from the host).
        {"op": EXEC, "payload": {"command": "sleep 300 & echo $!; wait", "timeout": 3}},
        // 5: its cgroup namespace, rooted at its own cgroup.
        {"op": EXEC, "payload": {"argv": ["cat", "/proc/self/cgroup"]}},
        // 6: the agent's environment and cwd, plus env (which cannot change its identity).
        {"op": EXEC, "payload": {"command": "echo $CLOVE_AGENT_ID $GREETING $HOME; pwd",
                                 "env": {"GREETING": "hi", "CLOVE_AGENT_ID": "999"}}},
        // 7: a program missing inside.
        {"op": EXEC, "payload": {"argv": ["/nonexistent/prog"]}},
        // 8: a cwd as the agent sees it.
        {"op": EXEC, "payload": {"argv": ["/bin/pwd"], "cwd": "/tmp"}},
    ]);
    let mut req = plan_request("execer", &plan);
    req.permissions = exec_perms(&[
        "id",
        "ls",
        "cat",
        "sleep",
        "echo",
        "/bin/pwd",
        "/nonexistent/prog",
    ]);
    let a = spawn_ok(&mut c, &req).unwrap();
    let agent_uid = sandboxed_agent_uid(a.pid).unwrap();
    assert_ne!(agent_uid, 0);
    let step = |i| plan_step(&kernel, a.id, i, STEP).unwrap()["reply"].clone();

    let r = step(0);
    assert_eq!(r["code"], "permission_denied", "{r}");
    assert!(!touched.exists(), "a refused command ran");

    let r = step(1);
    assert_eq!(
        r["stdout"],
        format!("{agent_uid}\n{agent_uid}\n"),
        "the agent's uid and gid, not the kernel's: {r}"
    );

    let r = step(2);
    assert_eq!(r["exit_code"], 0, "{r}");
    let pids: Vec<i32> = r["stdout"]
        .as_str()
        .unwrap()
        .lines()
        .filter_map(|l| l.parse().ok())
        .collect();
    assert!(
        pids.contains(&1) && pids.contains(&2) && pids.len() <= 4,
        "only init, the agent and the command: {pids:?}"
    );
    assert!(
        !pids.contains(&kernel_pid),
        "the kernel ({kernel_pid}) is visible: {pids:?}"
    );

    let r = step(3);
    assert_ne!(r["exit_code"], 0, "{r}");
    assert!(
        r["stderr"].as_str().unwrap().contains("No such file"),
        "{} is outside its view: {r}",
        canary.display()
    );
    assert_eq!(r["stdout"], "", "{r}");

    // Step 4 runs now: its background sleep, seen from the host, is in the agent's sandbox.
    let sleep = find_process(agent_uid, &["sleep", "300"], Duration::from_secs(20))
        .expect("the EXEC's sleep 300, with the agent's uid");
    assert_eq!(
        namespaces(sleep),
        namespaces(a.pid),
        "the command is in the namespaces of the agent's init"
    );
    assert_eq!(
        cgroup_dirs_of(sleep),
        cgroup_dirs_of(a.pid),
        "the agent's cgroup"
    );
    assert!(
        cgroup_dirs_of(sleep)
            .iter()
            .any(|d| d.to_string_lossy().contains(&format!("agent-{}", a.id))),
        "{:?}",
        cgroup_dirs_of(sleep)
    );
    let status = proc_status(sleep).unwrap();
    assert_eq!(
        status["NoNewPrivs"], "1",
        "the agent's lockdown: {status:?}"
    );
    assert_eq!(status["Seccomp"], "2", "{status:?}");
    assert_eq!(status["CapBnd"], "0000000000000000", "{status:?}");
    let t0 = Instant::now();
    let r = step(4);
    assert_eq!(r["timed_out"], true, "{r}");
    assert_eq!(
        (r["exit_code"].as_i64(), r["signal"].as_i64()),
        (Some(-1), Some(9)),
        "{r}"
    );
    let inner: i32 = r["stdout"].as_str().unwrap().trim().parse().unwrap();
    assert!(inner < 20, "a pid inside the sandbox: {r}");
    while clove_tests::pid_exists(sleep) && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !clove_tests::pid_exists(sleep),
        "the background sleep outlived its EXEC"
    );

    let r = step(5);
    let text = r["stdout"].as_str().unwrap();
    assert!(!text.is_empty(), "{r}");
    for line in text.lines() {
        assert!(
            line.ends_with(":/"),
            "rooted at the agent's own cgroup: {line:?} in {r}"
        );
    }

    let r = step(6);
    assert_eq!(
        r["stdout"],
        format!("{} hi /clove/work\n/clove/work\n", a.id),
        "{r}"
    );

    let r = step(7);
    assert_eq!(r["code"], "not_found", "{r}");

    let r = step(8);
    assert_eq!(r["stdout"], "/tmp\n", "{r}");
}

#[test]
fn exec_from_an_agent_counts_against_its_pids_limit() {
    if !agents_can_run("exec_from_an_agent_counts_against_its_pids_limit") {
        return;
    }
    let kernel = Kernel::start().unwrap();
    let mut c = client(&kernel).unwrap();
    let forks = "i=0; while [ $i -lt 16 ]; do sleep 1 & i=$((i+1)); done; wait; echo done";
    let plan = json!([{"op": EXEC, "payload": {"command": forks, "timeout": 30}}]);
    let mut req = plan_request("forker", &plan);
    req.permissions = exec_perms(&["*"]);
    req.limits = Some(Limits {
        max_pids: 8,
        ..Limits::default()
    });
    let a = spawn_ok(&mut c, &req).unwrap();
    let r = plan_step(&kernel, a.id, 0, STEP).unwrap()["reply"].clone();
    let stderr = r["stderr"].as_str().unwrap().to_lowercase();
    assert!(
        stderr.contains("fork"),
        "16 children under a limit of 8 pids: {r}"
    );
}

#[test]
fn exec_works_again_after_the_agent_restarted() {
    if !agents_can_run("exec_works_again_after_the_agent_restarted") {
        return;
    }
    let kernel = Kernel::start().unwrap();
    let mut c = client(&kernel).unwrap();
    let plan = json!([
        {"op": EXEC, "payload": {"argv": ["cat", "/proc/1/cmdline"]}},
        {"op": EXEC, "payload": {"command": "id -u"}},
        {"exit": 3},
    ]);
    let mut req = plan_request("restarted", &plan);
    req.permissions = exec_perms(&["*"]);
    req.restart_policy = RestartPolicy::OnFailure;
    req.restart_backoff_ms = Some(50);
    let a = spawn_ok(&mut c, &req).unwrap();
    let start = Instant::now();
    let replies = loop {
        let out = agent_output(&kernel, a.id).unwrap();
        let replies: Vec<serde_json::Value> = out
            .lines()
            .filter_map(|l| l.strip_prefix("STEP 1 "))
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["reply"].clone())
            .collect();
        if replies.len() >= 2 {
            break replies;
        }
        assert!(
            start.elapsed() < STEP,
            "no second run's EXEC within {STEP:?}:\n{out}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    kill_agent(&mut c, a.id).unwrap();
    for r in &replies[..2] {
        assert_eq!(r["exit_code"], 0, "{r}");
        let uid: u32 = r["stdout"].as_str().unwrap().trim().parse().unwrap();
        assert_ne!(uid, 0, "{r}");
    }
    assert_eq!(replies[0]["stdout"], replies[1]["stdout"], "the same uid");
}

#[test]
fn an_unsandboxed_agents_exec_runs_in_its_cgroup_and_network_namespace() {
    if !agents_can_run("an_unsandboxed_agents_exec_runs_in_its_cgroup_and_network_namespace") {
        return;
    }
    let kernel = Kernel::start().unwrap();
    let kernel_uid = proc_uid(kernel.pid() as i32).unwrap();
    let mut c = client(&kernel).unwrap();
    let plan = json!([
        {"op": EXEC, "payload": {"command": "id -u; readlink /proc/self/ns/net; cat /proc/self/cgroup"}},
    ]);
    let mut req = plan_request("plain", &plan);
    req.sandboxed = false;
    req.permissions = exec_perms(&["*"]);
    let a = spawn_ok(&mut c, &req).unwrap();
    let agent_net = std::fs::read_link(format!("/proc/{}/ns/net", a.pid)).unwrap();
    let r = plan_step(&kernel, a.id, 0, STEP).unwrap()["reply"].clone();
    let out = r["stdout"].as_str().unwrap();
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some(kernel_uid.to_string().as_str()), "{r}");
    assert_eq!(
        lines.next().map(PathBuf::from),
        Some(agent_net),
        "the agent's own network namespace: {r}"
    );
    let cgroup = lines.collect::<Vec<_>>().join("\n");
    assert!(
        cgroup.contains(&format!("/agent-{}", a.id)),
        "the agent's cgroup: {r}"
    );
}
