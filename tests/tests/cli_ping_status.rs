//! The `clove` command-line tool against a real kernel: `ping` and `status`, and a clear
//! failure (exit 3, naming the path) when no kernel answers on the socket.

#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::Duration;

use clove_tests::{cli_bin, run_to_exit, Kernel};

fn clove(args: &[&str]) -> (Option<i32>, String, String) {
    let mut cmd = Command::new(cli_bin());
    cmd.args(args).env_remove("CLOVE_SOCKET");
    let (status, out, err) = run_to_exit(&mut cmd, Duration::from_secs(30)).unwrap();
    (status.code(), out, err)
}

#[test]
fn ping_answers() {
    let kernel = Kernel::start().unwrap();
    let socket = kernel.socket.to_str().unwrap();
    for codec in [None, Some("json"), Some("postcard")] {
        let mut args = vec!["--socket", socket];
        if let Some(c) = codec {
            args.extend(["--codec", c]);
        }
        args.extend(["ping", "--count", "3"]);
        let (code, out, err) = clove(&args);
        assert_eq!(
            code,
            Some(0),
            "clove {args:?}: stdout: {out}\nstderr: {err}"
        );
        assert!(!out.trim().is_empty(), "clove {args:?} printed nothing");
    }
    let (code, out, err) = clove(&["--socket", socket, "ping", "--count", "2", "--size", "4096"]);
    assert_eq!(
        code,
        Some(0),
        "ping --size 4096: stdout: {out}\nstderr: {err}"
    );
}

#[test]
fn status_json_reports_the_protocol() {
    let kernel = Kernel::start().unwrap();
    let socket = kernel.socket.to_str().unwrap();
    let (code, out, err) = clove(&["--socket", socket, "status", "--json"]);
    assert_eq!(code, Some(0), "stdout: {out}\nstderr: {err}");
    let status: serde_json::Value = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("status --json is not JSON ({e}): {out}"));
    assert_eq!(status["protocol_version"], 1, "{status}");

    let (code, out, err) = clove(&["--socket", socket, "status"]);
    assert_eq!(code, Some(0), "stdout: {out}\nstderr: {err}");
    assert!(!out.trim().is_empty(), "clove status printed nothing");
}

#[test]
fn no_kernel_exits_3_naming_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nonexistent.sock");
    let missing = missing.to_str().unwrap();
    for sub in [&["status"][..], &["ping", "--count", "1"][..]] {
        let mut args = vec!["--socket", missing];
        args.extend_from_slice(sub);
        let (code, out, err) = clove(&args);
        assert_eq!(
            code,
            Some(3),
            "clove {args:?}: stdout: {out}\nstderr: {err}"
        );
        assert!(
            err.contains(missing),
            "clove {args:?}: stderr does not name {missing}: {err}"
        );
    }
}
