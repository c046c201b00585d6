//! `clove demo supervisor` against a real kernel:
//! * every scenario (one_for_one, one_for_all, escalation, nested) is judged `as expected`,
//!   in the human output and in `--json`, with the evidence the scenarios are about (the
//!   doubling backoffs, the stop and start orders, GROUP_ESCALATED), and the run leaves no
//!   agent and no group behind;
//! * the judge is not blind: with a worker that crashes at once, every run (`--demos-dir`),
//!   the demo reports UNEXPECTED, exits 1, and still leaves nothing behind.
//!
//! Root only (namespaces, cgroups and agent uids need it); elsewhere each test prints `SKIP`.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clove_tests::{agents_can_run, cli_bin, client, run_to_exit, Kernel};
use serde_json::Value;

/// The scenarios time restarts: they do not share the machine with each other.
static SERIAL: Mutex<()> = Mutex::new(());

const SCENARIOS: [&str; 4] = ["one_for_one", "one_for_all", "escalation", "nested"];

fn demo(kernel: &Kernel, extra: &[&str]) -> (Option<i32>, String, String, Duration) {
    let mut cmd = Command::new(cli_bin());
    cmd.arg("--socket")
        .arg(&kernel.socket)
        .args(["demo", "supervisor"])
        .args(extra)
        .env_remove("CLOVE_SOCKET");
    let t = Instant::now();
    let (status, out, err) = run_to_exit(&mut cmd, Duration::from_secs(120)).unwrap();
    (status.code(), out, err, t.elapsed())
}

/// Nothing of the demo is left: no agent, no group.
fn nothing_left(kernel: &Kernel) {
    let mut c = client(kernel).unwrap();
    assert_eq!(c.list().unwrap(), Vec::new(), "agents left behind");
    assert_eq!(
        c.group_list(None).unwrap(),
        Vec::new(),
        "groups left behind"
    );
}

fn scenario<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["scenarios"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["scenario"] == name)
        .unwrap_or_else(|| panic!("no scenario {name} in {report:#}"))
}

/// The agent ids of a scenario's timeline events of `event`, in order, as labels.
fn order(s: &Value, event: &str, filter: impl Fn(&Value) -> bool) -> Vec<String> {
    s["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == event && filter(e))
        .map(|e| e["subject"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn every_scenario_is_as_expected_and_nothing_is_left() {
    if !agents_can_run("every_scenario_is_as_expected_and_nothing_is_left") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let kernel = Kernel::start().unwrap();

    // The human output: a live timeline, a summary per scenario, the verdicts.
    let (code, out, err, took) = demo(&kernel, &[]);
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    assert!(!out.contains("UNEXPECTED"), "{out}");
    for name in SCENARIOS {
        assert!(
            out.contains(&format!("\n{name}: as expected\n")),
            "{name}:\n{out}"
        );
        assert!(
            out.lines()
                .any(|l| l.starts_with(name) && l.ends_with("  as expected")),
            "no verdict row for {name}:\n{out}"
        );
    }
    for needle in [
        "AGENT_RESTARTING  crashy#",
        "restart 1 in 200 ms",
        "restart 2 in 400 ms",
        "restart 3 in 800 ms",
        "gave up (gave_up true)",
        "escalated to [parent] (gave_up false)",
        "AGENT_ESCALATED",
        "cleanup: GROUP_STOP [pool] stopped steady-b, crashy, steady-a",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
    assert!(took < Duration::from_secs(60), "took {took:?}");
    nothing_left(&kernel);

    // --json: one object, the same verdicts, with the evidence.
    let (code, out, err, _) = demo(&kernel, &["--json"]);
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    let report: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["all_as_expected"], true, "{report:#}");
    assert_eq!(report["scenarios"].as_array().unwrap().len(), 4);
    for name in SCENARIOS {
        let s = scenario(&report, name);
        assert_eq!(s["verdict"], "as expected", "{s:#}");
        let checks = s["checks"].as_array().unwrap();
        assert!(checks.len() >= 5, "{s:#}");
        assert!(checks.iter().all(|c| c["ok"] == true), "{s:#}");
        assert_eq!(
            checks.last().unwrap()["check"],
            "cleanup leaves nothing behind"
        );
    }

    // one_for_one: the crash-prone worker's backoffs double, its siblings never restart.
    let s = scenario(&report, "one_for_one");
    let agents = s["agents"].as_array().unwrap();
    let crashy = agents.iter().find(|a| a["label"] == "crashy").unwrap();
    assert_eq!(
        crashy["backoffs_ms"].as_array().unwrap()[..3],
        [200, 400, 800]
    );
    for sibling in agents.iter().filter(|a| a["label"] != "crashy") {
        assert_eq!(sibling["restarts"], 0, "{sibling}");
        assert_eq!(sibling["state"], "RUNNING", "{sibling}");
    }

    // one_for_all: b fails, c then a are stopped, a, b, c start again.
    let s = scenario(&report, "one_for_all");
    let restarting = |e: &Value| e["data"]["restarting"] == true;
    assert_eq!(order(s, "AGENT_EXITED", restarting), ["b", "c", "a"]);
    let again = |e: &Value| e["data"]["restarts"] == 1;
    assert_eq!(order(s, "AGENT_SPAWNED", again), ["a", "b", "c"]);

    // escalation: the group gave up; both agents escalated and exited for good.
    let s = scenario(&report, "escalation");
    let esc: Vec<&Value> = s["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "GROUP_ESCALATED")
        .collect();
    assert_eq!(esc.len(), 1, "{s:#}");
    assert_eq!(esc[0]["data"]["gave_up"], true);
    assert_eq!(esc[0]["data"]["intensity"], 2);
    let mut escalated = order(s, "AGENT_ESCALATED", |_| true);
    escalated.sort();
    assert_eq!(escalated, ["crashy", "steady"]);
    assert!(s["agents"]
        .as_array()
        .unwrap()
        .iter()
        .all(|a| a["state"] == "gone"));

    // nested: the child group escalated to the parent, which did not escalate itself.
    let s = scenario(&report, "nested");
    let esc: Vec<&Value> = s["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "GROUP_ESCALATED")
        .collect();
    assert_eq!(esc.len(), 1, "{s:#}");
    assert_eq!(esc[0]["data"]["gave_up"], false);
    assert_eq!(esc[0]["subject"], "child");
    let keeper = s["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["label"] == "keeper")
        .unwrap();
    assert_eq!(keeper["restarts"], 0);

    nothing_left(&kernel);
}

#[test]
fn a_worker_that_always_crashes_is_judged_unexpected_and_still_cleaned_up() {
    if !agents_can_run("a_worker_that_always_crashes_is_judged_unexpected_and_still_cleaned_up") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let kernel = Kernel::start().unwrap();
    // A worker that ignores its plan and crashes at once, every run: the strategies then
    // act on every worker, and the groups give up early.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let worker = dir.path().join("supervised_worker.py");
    std::fs::write(
        &worker,
        "import sys\nprint('crashing at once', flush=True)\nsys.exit(1)\n",
    )
    .unwrap();
    std::fs::set_permissions(&worker, std::fs::Permissions::from_mode(0o644)).unwrap();

    let (code, out, err, took) = demo(
        &kernel,
        &["--json", "--demos-dir", dir.path().to_str().unwrap()],
    );
    assert_eq!(code, Some(1), "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        err.starts_with("clove: demo supervisor: ") && err.contains("UNEXPECTED"),
        "{err}"
    );
    let report: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["all_as_expected"], false);
    for name in ["one_for_one", "one_for_all", "nested"] {
        let s = scenario(&report, name);
        assert_eq!(s["as_expected"], false, "{s:#}");
        assert!(
            s["verdict"].as_str().unwrap().starts_with("UNEXPECTED: "),
            "{s:#}"
        );
        // Even so, the cleanup held.
        let cleanup = s["checks"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(cleanup["check"], "cleanup leaves nothing behind");
        assert_eq!(cleanup["ok"], true, "{cleanup}");
    }
    // The runner stops watching once every agent is gone, rather than waiting out its limit.
    assert!(took < Duration::from_secs(45), "took {took:?}");
    nothing_left(&kernel);
}
