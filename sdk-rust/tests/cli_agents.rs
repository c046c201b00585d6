//! The agent commands of `clove` (`run`, `ps`, `kill`, `pause`, `resume`, `wait`, `logs`) and
//! the parts of `clove demo` that need no kernel: argument parsing into requests (checked by
//! the fake kernel, which records them), the output for humans and for `--json`, the exit
//! statuses, and one-line errors.

#![allow(clippy::unwrap_used)]

mod fake_agents;

use std::path::Path;
use std::process::Command;

use clove_sdk::Opcode;
use fake_agents::FakeAgents;
use serde_json::{json, Value};

/// Runs `clove` with `args` in `cwd`, without the caller's CLOVE_SOCKET; returns (code,
/// stdout, stderr).
fn clove_in(cwd: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_clove"))
        .args(args)
        .current_dir(cwd)
        .env_remove("CLOVE_SOCKET")
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// `clove --socket <fake> args...`.
fn clove(kernel: &FakeAgents, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["--socket", kernel.socket.to_str().unwrap()];
    all.extend_from_slice(args);
    clove_in(kernel.dir.path(), &all)
}

fn one_line(err: &str) {
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("clove: "), "{err}");
}

#[test]
fn run_turns_flags_into_the_spawn_request() {
    let kernel = FakeAgents::start();
    let (code, out, err) = clove(
        &kernel,
        &[
            "run",
            "/srv/agents/worker.py",
            "--memory",
            "64M",
            "--cpus",
            "0.5",
            "--pids",
            "16",
            "--network",
            "--interpreter",
            "/bin/sh",
            "-e",
            "MODE=fast",
            "--",
            "--task",
            "x y",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let sent = &kernel.requests(Opcode::Spawn)[0];
    assert_eq!(sent["name"], "worker", "the name defaults to the stem");
    assert_eq!(sent["script"], "/srv/agents/worker.py");
    assert_eq!(sent["sandboxed"], true);
    assert_eq!(sent["network"], true);
    assert_eq!(sent["interpreter"], "/bin/sh");
    assert_eq!(sent["args"], json!(["--task", "x y"]));
    assert_eq!(sent["env"], json!({"MODE": "fast"}));
    assert_eq!(sent["limits"]["memory"], 64 << 20);
    assert_eq!(sent["limits"]["cpu"], 0.5);
    assert_eq!(sent["limits"]["max_pids"], 16);
    // Untouched limits keep the defaults.
    assert_eq!(sent["limits"]["cpu_shares"], 1024);

    assert!(
        out.starts_with("started agent 7 \"worker\", pid 4242\n"),
        "{out}"
    );
    for needle in [
        "isolation    partial",
        "namespaces   pid, mnt, uts",
        "limits       memory 64 MiB, cpu 0.50, pids 16 (cgroup v1)",
        "not applied  landlock",
        "why          not in force: landlock",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
}

#[test]
fn run_defaults_send_no_limits_and_resolve_relative_scripts() {
    let kernel = FakeAgents::start();
    let (code, _, err) = clove(
        &kernel,
        &["run", "sub/job.v2.py", "--name", "j", "--no-sandbox"],
    );
    assert_eq!(code, 0, "{err}");
    let sent = &kernel.requests(Opcode::Spawn)[0];
    assert_eq!(sent["name"], "j");
    let cwd = kernel.dir.path().canonicalize().unwrap();
    assert_eq!(sent["script"], cwd.join("sub/job.v2.py").to_str().unwrap());
    assert_eq!(sent["sandboxed"], false);
    assert_eq!(sent["network"], false);
    assert!(sent.get("limits").is_none(), "{sent}");
    assert!(sent.get("interpreter").is_none(), "{sent}");

    let (code, _, _) = clove(&kernel, &["run", "x/job.py"]);
    assert_eq!(code, 0);
    assert_eq!(kernel.requests(Opcode::Spawn)[1]["name"], "job");
}

#[test]
fn run_json_prints_the_spawn_reply() {
    let kernel = FakeAgents::start();
    let (code, out, err) = clove(&kernel, &["run", "/a/b.py", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["id"], 7);
    assert_eq!(v["isolation"]["not_applied"], json!(["landlock"]));
}

#[test]
fn bad_run_flags_are_usage_errors_before_any_request() {
    let kernel = FakeAgents::start();
    for (args, needle) in [
        (
            &["run", "a.py", "--memory", "lots"][..],
            "invalid size \"lots\"",
        ),
        (&["run", "a.py", "--cpus", "0"], "positive number of CPUs"),
        (&["run", "a.py", "--cpus", "abc"], "positive number of CPUs"),
        (&["run", "a.py", "--pids", "0"], "--pids"),
        (&["run", "a.py", "-e", "NOVALUE"], "KEY=VALUE"),
        (&["run", "a.py", "extra"], "unexpected argument"),
        (&["run"], "SCRIPT"),
    ] {
        let (code, _, err) = clove(&kernel, args);
        assert_eq!(code, 2, "clove {args:?}: {err}");
        assert!(err.contains(needle), "clove {args:?}: {err}");
    }
    assert!(kernel.seen().is_empty());
}

#[test]
fn ps_prints_a_table_sorted_by_id() {
    let kernel = FakeAgents::start();
    let (code, out, err) = clove(&kernel, &["ps"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "ID  NAME             PID   STATE    UPTIME  RESTARTS\n\
         7   worker           4242  RUNNING  3m07s   0\n\
         12  database-writer  4300  PAUSED   2h05m   0\n"
    );
    let (code, out, _) = clove(&kernel, &["ps", "--all"]);
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "ID  NAME             PID   STATE    UPTIME  RESTARTS  EXIT\n\
         3   old              4100  STOPPED  -       0         exited with code 0\n\
         7   worker           4242  RUNNING  3m07s   0         -\n\
         12  database-writer  4300  PAUSED   2h05m   0         -\n"
    );
    let (code, out, _) = clove(&kernel, &["ps", "--json"]);
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);
    assert_eq!(v[1]["name"], "worker");
    assert_eq!(
        kernel.requests(Opcode::List),
        [
            json!({"detail": false}),
            json!({"detail": true}),
            json!({"detail": false})
        ]
    );
}

#[test]
fn kill_pause_resume_take_a_name_or_an_id() {
    let kernel = FakeAgents::start();
    let (code, out, err) = clove(&kernel, &["kill", "12"]);
    assert_eq!((code, out.as_str()), (0, "killed agent 12\n"), "{err}");
    let (code, out, _) = clove(&kernel, &["pause", "worker"]);
    assert_eq!((code, out.as_str()), (0, "paused agent 7\n"));
    let (code, out, _) = clove(&kernel, &["resume", "w-12"]);
    assert_eq!((code, out.as_str()), (0, "resumed agent 7\n"));
    assert_eq!(kernel.requests(Opcode::Kill), [json!({"id": 12})]);
    assert_eq!(kernel.requests(Opcode::Pause), [json!({"name": "worker"})]);
    assert_eq!(kernel.requests(Opcode::Resume), [json!({"name": "w-12"})]);

    let (code, out, _) = clove(&kernel, &["kill", "3", "--json"]);
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        (v["killed"].clone(), v["agent_id"].clone()),
        (json!(true), json!(3))
    );
}

#[test]
fn kernel_errors_are_one_line_naming_the_action() {
    let kernel = FakeAgents::start();
    let (code, out, err) = clove(&kernel, &["kill", "ghost"]);
    assert_eq!(code, 1);
    assert!(out.is_empty(), "{out}");
    one_line(&err);
    assert_eq!(
        err.trim_end(),
        "clove: kill agent \"ghost\": kernel: no live agent named \"ghost\" (not_found)"
    );
    let (code, _, err) = clove(&kernel, &["kill", "99999999999"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("an agent id is at most"), "{err}");
}

#[test]
fn wait_exits_with_the_agents_status() {
    let kernel = FakeAgents::start();
    let (code, out, _) = clove(&kernel, &["wait", "7"]);
    assert_eq!((code, out.as_str()), (3, "agent 7 exited with code 3\n"));
    let (code, out, _) = clove(&kernel, &["wait", "8"]);
    assert_eq!(code, 128 + 9);
    assert_eq!(out, "agent 8 killed by signal 9 (out of memory)\n");
    let (code, out, err) = clove(&kernel, &["wait", "worker", "--timeout", "10s"]);
    assert_eq!(
        (code, out.as_str()),
        (0, "agent 7 exited with code 0\n"),
        "{err}"
    );

    let (code, out, err) = clove(&kernel, &["wait", "9", "--timeout", "1.5"]);
    assert_eq!(code, 124);
    assert!(out.is_empty(), "{out}");
    one_line(&err);
    assert!(
        err.starts_with("clove: wait for agent 9: agent 9 still running after 1.5 s"),
        "{err}"
    );
    let (code, out, _) = clove(&kernel, &["wait", "8", "--json"]);
    assert_eq!(code, 137);
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["oom"], true);

    assert_eq!(
        kernel.requests(Opcode::Wait),
        [
            json!({"id": 7}),
            json!({"id": 8}),
            json!({"name": "worker", "timeout_ms": 10000}),
            json!({"id": 9, "timeout_ms": 1500}),
            json!({"id": 8}),
        ]
    );
}

#[test]
fn logs_prints_the_tail_and_follows_by_id() {
    let kernel = FakeAgents::start();
    let (code, out, err) = clove(&kernel, &["logs", "-n", "2", "worker"]);
    assert_eq!((code, out.as_str()), (0, "line 4\nline 5\n"), "{err}");
    assert_eq!(
        kernel.requests(Opcode::Logs),
        [json!({"name": "worker", "lines": 2})]
    );

    let kernel = FakeAgents::start();
    let (code, out, err) = clove(&kernel, &["logs", "--follow", "worker"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "line 1\nline 2\nline 3\nline 4\nline 5\nmore\n");
    // After the first reply, by id (an exited agent's name is free again), from each
    // reply's next_offset, until nothing more comes and the agent is not running.
    assert_eq!(
        kernel.requests(Opcode::Logs),
        [
            json!({"name": "worker", "lines": 100}),
            json!({"id": 7, "lines": 100, "offset": 35, "wait_ms": 5000}),
            json!({"id": 7, "lines": 100, "offset": 40, "wait_ms": 5000}),
        ]
    );
}

#[test]
fn help_explains_each_agent_command() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, _) = clove_in(dir.path(), &["--help"]);
    assert_eq!(code, 0);
    for cmd in [
        "run", "ps", "kill", "pause", "resume", "wait", "logs", "demo",
    ] {
        assert!(
            out.lines().any(|l| l.trim_start().starts_with(cmd)),
            "{cmd} missing in:\n{out}"
        );
    }
    assert!(out.contains("digits mean an id"), "{out}");
    let (code, out, _) = clove_in(dir.path(), &["run", "--help"]);
    assert_eq!(code, 0);
    for needle in [
        "--memory <SIZE>",
        "--cpus <CPUS>",
        "--pids <N>",
        "--no-sandbox",
        "[ARGS]...",
        "Examples:",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
    let (_, out, _) = clove_in(dir.path(), &["demo", "--help"]);
    assert!(
        !out.contains("--unsandboxed"),
        "a test-only flag stays hidden:\n{out}"
    );
}

#[test]
fn demo_list_and_usage_errors_need_no_kernel() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("none.sock");
    let socket = missing.to_str().unwrap();
    let (code, out, err) = clove_in(dir.path(), &["--socket", socket, "demo", "--list"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("DEMO"), "{out}");
    assert!(out.contains("not part of `all`"), "{out}");
    for name in [
        "fork-bomb",
        "memory-hog",
        "cpu-hog",
        "network-probe",
        "fs-escape",
        "privilege",
        "supervisor",
        "llm",
    ] {
        assert!(out.contains(name), "{name} missing in:\n{out}");
    }

    let (code, out, _) = clove_in(dir.path(), &["demo", "--list", "--json"]);
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 8, "{v}");
    assert_eq!(v[0]["name"], "fork-bomb");
    assert_eq!(v[0]["kind"], "adversarial");
    assert_eq!(v[0]["script"], "fork_bomb.py");
    // The supervision and LLM demos are listed last, as other kinds (not part of `all`).
    assert_eq!(v[6]["name"], "supervisor");
    assert_eq!(v[6]["kind"], "supervision");
    assert_eq!(v[6]["script"], "supervised_worker.py");
    assert!(v[6].get("attacks").is_none(), "{v}");
    assert_eq!(v[7]["name"], "llm");
    assert_eq!(v[7]["kind"], "llm");
    assert_eq!(v[7]["script"], "llm_agent.py");
    assert!(v[7].get("attacks").is_none(), "{v}");

    let (code, _, err) = clove_in(dir.path(), &["--socket", socket, "demo", "nope"]);
    assert_eq!(code, 2);
    one_line(&err);
    assert!(err.contains("no such demo"), "{err}");

    // --unsandboxed would turn the fork bomb (and the others) loose on the host.
    for name in ["all", "fork-bomb", "privilege"] {
        let (code, _, err) = clove_in(
            dir.path(),
            &["--socket", socket, "demo", name, "--unsandboxed"],
        );
        assert_eq!(code, 2, "{name}: {err}");
        assert!(err.contains("fs-escape and network-probe only"), "{err}");
    }
    // Valid requests do need the kernel.
    let (code, _, err) = clove_in(dir.path(), &["--socket", socket, "demo", "fs-escape"]);
    assert_eq!(code, 3, "{err}");
    let (code, _, err) = clove_in(dir.path(), &["--socket", socket, "demo", "supervisor"]);
    assert_eq!(code, 3, "{err}");
    let (code, _, err) = clove_in(
        dir.path(),
        &["--socket", socket, "demo", "supervisor", "--unsandboxed"],
    );
    assert_eq!(code, 2, "{err}");
    let (code, _, _) = clove_in(dir.path(), &["--socket", socket, "demo"]);
    assert_eq!(code, 2, "a demo name or --list is required");
}
