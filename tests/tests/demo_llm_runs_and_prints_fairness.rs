//! `clove demo llm` against a real kernel started with a scheduler other than the default
//! (`round_robin`, 3 in flight), so that restoring it is seen:
//! * `--json`: both policies ran, fifo then vtc, with a row for each of the six agents
//!   (served cost, calls, queue delays), Jain's index of the backlogged agents, and LLM_STATS
//!   shows the kernel's scheduler back as it was, with no agent left; and VTC is judged `as
//!   expected` (fairer than FIFO, kinder to the polite agent);
//! * the judge is not blind, and the scheduler is restored on failure too: with an agent
//!   script that reports nothing (`--demos-dir`), the demo prints both runs' tables with
//!   their problems, says UNEXPECTED, exits 1, and leaves the scheduler as it was.
//!
//! Root only (namespaces, cgroups and agent uids need it); elsewhere each test prints `SKIP`.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clove_tests::{agents_can_run, cli_bin, client, run_to_exit, Kernel, KernelOpts};
use serde_json::Value;

/// The demo measures queue delays: its runs do not share the machine with each other.
static SERIAL: Mutex<()> = Mutex::new(());

const AGENTS: [&str; 6] = ["small", "medium", "large", "huge", "flooder", "polite"];

/// A kernel whose scheduler is not the default one.
fn kernel() -> Kernel {
    Kernel::start_with(KernelOpts {
        args: vec![
            "--llm-scheduler".into(),
            "round_robin".into(),
            "--llm-max-in-flight".into(),
            "3".into(),
        ],
        ..KernelOpts::default()
    })
    .unwrap()
}

fn demo(kernel: &Kernel, extra: &[&str]) -> (Option<i32>, String, String, Duration) {
    let mut cmd = Command::new(cli_bin());
    cmd.arg("--socket")
        .arg(&kernel.socket)
        .args(["demo", "llm"])
        .args(extra)
        .env_remove("CLOVE_SOCKET");
    let t = Instant::now();
    let (status, out, err) = run_to_exit(&mut cmd, Duration::from_secs(120)).unwrap();
    (status.code(), out, err, t.elapsed())
}

/// The kernel's scheduler is as it was started, and no agent is left.
fn scheduler_restored(kernel: &Kernel) {
    let mut c = client(kernel).unwrap();
    let s = c.llm_stats(None).unwrap().scheduler;
    assert_eq!(
        (s.policy.as_str(), s.max_in_flight, s.in_flight, s.queued),
        ("round_robin", 3, 0, 0),
        "{s:?}"
    );
    assert_eq!(c.list().unwrap(), Vec::new(), "agents left behind");
}

#[test]
fn both_policies_are_measured_and_the_scheduler_is_restored() {
    if !agents_can_run("both_policies_are_measured_and_the_scheduler_is_restored") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let kernel = kernel();
    let (code, out, err, took) = demo(&kernel, &["--json"]);
    let report: Value = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("{e}: stdout:\n{out}\nstderr:\n{err}"));
    assert!(took < Duration::from_secs(45), "took {took:?}");

    // Both policies, in order, each with every agent's figures.
    let phases = report["phases"].as_array().unwrap();
    let policies: Vec<&str> = phases
        .iter()
        .map(|p| p["policy"].as_str().unwrap())
        .collect();
    assert_eq!(policies, ["fifo", "vtc"], "{report:#}");
    for p in phases {
        let policy = p["policy"].as_str().unwrap();
        assert_eq!(p["problems"], Value::Array(vec![]), "{p:#}");
        assert_eq!(p["max_in_flight"], 2, "{p:#}");
        // The kernel ran the policy the demo asked for.
        assert_eq!(p["scheduler"]["policy"], policy, "{p:#}");
        let agents = p["agents"].as_array().unwrap();
        let labels: Vec<&str> = agents
            .iter()
            .map(|a| a["label"].as_str().unwrap())
            .collect();
        assert_eq!(labels, AGENTS, "{p:#}");
        for a in agents {
            assert!(a["calls"].as_u64().unwrap() > 0, "{a:#}");
            assert!(a["served"].as_f64().unwrap() > 0.0, "{a:#}");
            assert!(a["queue_p99_ms"].as_u64().is_some(), "{a:#}");
            assert!(
                a["queue_p50_ms"].as_u64() <= a["queue_p99_ms"].as_u64(),
                "{a:#}"
            );
            assert_eq!(a["errors"], 0, "{a:#}");
            assert!(a["agent_id"].as_u64().unwrap() > 0, "{a:#}");
        }
        let shares: f64 = agents.iter().map(|a| a["share"].as_f64().unwrap()).sum();
        assert!((shares - 1.0).abs() < 1e-6, "{p:#}");
        let jain = p["jain_backlogged"].as_f64().unwrap();
        assert!(jain > 0.2 && jain <= 1.0 + 1e-9, "{p:#}");
        assert!(p["polite_p99_ms"].as_u64().is_some(), "{p:#}");
    }
    assert_eq!(report["original"]["policy"], "round_robin");
    assert_eq!(report["restored"]["policy"], "round_robin", "{report:#}");
    assert_eq!(report["restored"]["max_in_flight"], 3, "{report:#}");
    scheduler_restored(&kernel);

    // The verdict: VTC shares fairly and serves the polite agent quickly, FIFO does not.
    let checks = report["checks"].as_array().unwrap();
    assert_eq!(
        report["as_expected"], true,
        "verdict: {}\n{checks:#?}\nstderr:\n{err}",
        report["verdict"]
    );
    assert_eq!(code, Some(0), "stderr:\n{err}");
    let jain = |i: usize| phases[i]["jain_backlogged"].as_f64().unwrap();
    assert!(jain(1) >= 0.9 && jain(1) > jain(0), "{report:#}");
}

#[test]
fn agents_that_report_nothing_are_unexpected_and_the_scheduler_is_still_restored() {
    if !agents_can_run(
        "agents_that_report_nothing_are_unexpected_and_the_scheduler_is_still_restored",
    ) {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let kernel = kernel();
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let agent = dir.path().join("llm_agent.py");
    std::fs::write(&agent, "print('no report today', flush=True)\n").unwrap();
    std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o644)).unwrap();

    let (code, out, err, _) = demo(&kernel, &["--demos-dir", dir.path().to_str().unwrap()]);
    assert_eq!(code, Some(1), "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        err.starts_with("clove: demo llm: UNEXPECTED: fifo: every agent ran and reported: "),
        "{err}"
    );
    for needle in [
        "== fifo (2 in flight)",
        "== vtc (2 in flight)",
        "  huge     backlogged",
        "problem: flooder: no `LLM {json}` line in its output (last line: \"no report today\")",
        "Jain's index of served cost among the backlogged (small, medium, large, huge, flooder): -",
        "scheduler restored: round_robin, 3 in flight",
        "\nllm: UNEXPECTED: ",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
    scheduler_restored(&kernel);
}
