//! A SIGTERM that reaches the kernel while it is still starting (its socket already accepts
//! connections) is a graceful shutdown like any other: exit code 0 and no cgroup subtree left
//! on the host.
//!
//! The subtree's name is derived from the state dir, so a first kernel on the same state dir
//! shows (through an agent's cgroups) which directories the second one creates.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clove_tests::{
    agents_can_run, cgroup_dirs_of, client, kernel_command, spawn_ok, spawn_request,
    wait_output_line, wait_timeout, Kernel, KernelOpts,
};

/// Removes the given cgroup directories if a failed run left them (empty) behind; they
/// belong to this test's state dir.
struct RemoveLeftovers(Vec<PathBuf>);

impl Drop for RemoveLeftovers {
    fn drop(&mut self) {
        for dir in &self.0 {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

#[test]
fn kernel_sigterm_during_startup_cleans_up() {
    if !agents_can_run("kernel_sigterm_during_startup_cleans_up") {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("clove-startup-")
        .tempdir()
        .unwrap();
    let state_dir = dir.path().join("state");

    // First kernel: learn the subtree's directories from an agent's cgroups.
    let kernel = Kernel::start_with(KernelOpts {
        state_dir: Some(state_dir.clone()),
        ..KernelOpts::default()
    })
    .unwrap();
    let mut c = client(&kernel).unwrap();
    let a = spawn_ok(&mut c, &spawn_request("sleeper", "agent_sleep.py")).unwrap();
    wait_output_line(&kernel, a.id, "READY", Duration::from_secs(20)).unwrap();
    let subtrees: Vec<PathBuf> = cgroup_dirs_of(a.pid)
        .into_iter()
        .filter_map(|d| {
            d.ancestors()
                .find(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("clove-"))
                })
                .map(PathBuf::from)
        })
        .collect();
    assert!(!subtrees.is_empty(), "the agent is in no clove-* cgroup");
    drop(c);
    let (status, err) = kernel.stop_and_collect().unwrap();
    assert!(status.success(), "{status}: {err}");
    let _cleanup = RemoveLeftovers(subtrees.clone());

    // Second kernel on the same state dir: SIGTERM as soon as its socket exists.
    let socket = dir.path().join("k.sock");
    let mut child = kernel_command()
        .arg("--socket")
        .arg(&socket)
        .arg("--state-dir")
        .arg(&state_dir)
        .arg("--no-compat-socket")
        .env("CLOVE_LOG", "warn")
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !socket.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no socket after 20 s"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    // SAFETY: kill(2) on the kernel this test started; no memory is touched.
    let sent = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(sent, 0);
    let status = wait_timeout(&mut child, Duration::from_secs(10)).unwrap();

    let left: Vec<&PathBuf> = subtrees.iter().filter(|d| d.exists()).collect();
    assert!(
        left.is_empty(),
        "cgroup subtree left behind ({status}): {left:?}"
    );
    assert_eq!(status.code(), Some(0), "not a graceful shutdown: {status}");
}
