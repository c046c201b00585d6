//! `clove demo` against a real kernel: every adversarial demo (fork bomb, memory hog, CPU hog,
//! network probe, filesystem escape, privilege) is contained and its neighbour keeps running;
//! and the runner is not blind: an attacker spawned without the sandbox is reported ESCAPED.
//!
//! Root only (namespaces, cgroups and agent uids need it); elsewhere each test prints `SKIP`.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use clove_tests::demo::run_demo;
use clove_tests::Kernel;

/// The demos must not share the machine with each other: the CPU hog measures its share and
/// the neighbours must keep their heartbeat.
static SERIAL: Mutex<()> = Mutex::new(());

const DEMOS: [&str; 6] = [
    "fork-bomb",
    "memory-hog",
    "cpu-hog",
    "network-probe",
    "fs-escape",
    "privilege",
];

fn root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("SKIP: the demos need root (namespaces, cgroups, agent uids)");
    false
}

#[test]
fn every_demo_is_contained() {
    if !root() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let kernel = Kernel::start().unwrap();
    let run = run_demo(&kernel, &["all"], true, Duration::from_secs(300)).unwrap();
    let table = run.table();
    assert_eq!(
        run.code,
        Some(0),
        "clove demo all failed:\n{table}\nstdout: {}\nstderr: {}",
        run.stdout,
        run.stderr
    );
    let bad: Vec<_> = run
        .rows
        .iter()
        .filter(|r| r.result != "contained")
        .collect();
    assert!(bad.is_empty(), "not contained: {bad:#?}\n{table}");
    // Every demo reported, each with its attacks and its neighbour's row.
    let demos: BTreeSet<&str> = run.rows.iter().map(|r| r.demo.as_str()).collect();
    assert_eq!(demos, DEMOS.into_iter().collect(), "{table}");
    for demo in DEMOS {
        let rows: Vec<_> = run.rows.iter().filter(|r| r.demo == demo).collect();
        assert!(rows.len() >= 2, "{demo}: {table}");
        assert!(
            rows.iter().any(|r| r.attack == "neighbour keeps running"),
            "{demo}: {table}"
        );
    }
    // The checks the design names, each present (so none can silently drop out).
    for attack in [
        "fork until failure",
        "allocate in 8 MiB steps",
        "busy loop",
        "TCP connect to host 127.0.0.1",
        "UDP datagram to host 127.0.0.1",
        "packet socket",
        "raw socket",
        "read a host canary file",
        "write into a host dir",
        "list /proc",
        "list the neighbour's work dir",
        "layers in /proc/self/status",
        "unshare(CLONE_NEWUSER)",
        "mount",
        "setuid(0)",
        "ptrace(PTRACE_ATTACH)",
        "SIGKILL the neighbour",
        "SIGKILL the kernel",
    ] {
        assert!(run.row(attack).is_some(), "no row for {attack:?}:\n{table}");
    }
    eprintln!("{table}");
    // And the kernel survived all of it.
    clove_tests::hello_on_new_connection(&kernel.socket).unwrap();
}

#[test]
fn an_unsandboxed_attacker_is_reported_escaped() {
    if !root() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let kernel = Kernel::start().unwrap();

    // The human table: the canary row says ESCAPED, and the exit status is non-zero.
    let run = run_demo(
        &kernel,
        &["fs-escape", "--unsandboxed"],
        false,
        Duration::from_secs(120),
    )
    .unwrap();
    assert_eq!(
        run.code,
        Some(1),
        "stdout: {}\nstderr: {}",
        run.stdout,
        run.stderr
    );
    let canary = run
        .stdout
        .lines()
        .find(|l| l.contains("read a host canary file"))
        .unwrap_or_else(|| panic!("no canary row in:\n{}", run.stdout));
    assert!(canary.contains("ESCAPED"), "{}", run.stdout);
    assert!(canary.contains("the canary's secret"), "{}", run.stdout);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(
        run.stderr.starts_with("clove: demo fs-escape: ") && run.stderr.contains("ESCAPED"),
        "{}",
        run.stderr
    );

    // The JSON report agrees, attack by attack: without the sandbox the agent (here the
    // kernel's uid, root) reads, writes and sees everything.
    let run = run_demo(
        &kernel,
        &["fs-escape", "--unsandboxed"],
        true,
        Duration::from_secs(120),
    )
    .unwrap();
    assert_eq!(run.code, Some(1), "{}", run.table());
    for attack in [
        "read a host canary file",
        "write into a host dir",
        "list /proc",
        "list the neighbour's work dir",
    ] {
        let row = run
            .row(attack)
            .unwrap_or_else(|| panic!("no {attack:?}: {}", run.table()));
        assert_eq!(row.result, "escaped", "{}", run.table());
    }
    // The neighbour was sandboxed all along and is fine.
    assert_eq!(
        run.row("neighbour keeps running").unwrap().result,
        "contained",
        "{}",
        run.table()
    );
}
