//! The `clove` binary against the fake kernel: output, `--json`, codecs, the socket from
//! `CLOVE_SOCKET`, and the exit codes (0 ok, 1 kernel error, 2 usage, 3 cannot connect).

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::{FakeKernel, Opts};

/// Runs `clove` with `args`, without the caller's CLOVE_SOCKET; returns (code, stdout, stderr).
fn clove(args: &[&str], env_socket: Option<&Path>) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_clove"));
    cmd.args(args).env_remove("CLOVE_SOCKET");
    if let Some(s) = env_socket {
        cmd.env("CLOVE_SOCKET", s);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn ping_times_round_trips_in_both_codecs() {
    let kernel = FakeKernel::start();
    let socket = kernel.socket.to_str().unwrap();
    for codec in ["postcard", "json"] {
        let (code, out, err) = clove(
            &[
                "--socket", socket, "--codec", codec, "ping", "--count", "3", "--size", "64",
            ],
            None,
        );
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains(&format!("({codec}, 64 bytes)")), "{out}");
        assert_eq!(out.matches("seq=").count(), 3, "{out}");
        assert!(out.contains("3 pings, min/p50/max "), "{out}");
        assert!(out.trim_end().ends_with("µs"), "{out}");
    }
}

#[test]
fn ping_json_is_one_object() {
    let kernel = FakeKernel::start();
    let (code, out, err) = clove(&["ping", "-c", "4", "--json"], Some(&kernel.socket));
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["count"], 4);
    assert_eq!(v["times_us"].as_array().unwrap().len(), 4);
    assert_eq!(v["agent_id"], common::AGENT_ID);
    assert_eq!(v["codec"], "postcard");
    assert!(v["min_us"].as_f64().unwrap() <= v["max_us"].as_f64().unwrap());
}

#[test]
fn status_prints_the_hello_reply() {
    let kernel = FakeKernel::start();
    let socket = kernel.socket.to_str().unwrap();
    let (code, out, err) = clove(&["--socket", socket, "status"], None);
    assert_eq!(code, 0, "{out}{err}");
    for needle in [
        socket,
        "fake 0.0.1",
        "protocol   1",
        "json, postcard",
        "NOOP, HELLO, EXIT",
        "your id    42",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }

    let (code, out, err) = clove(
        &["status", "--json", "--codec", "json"],
        Some(&kernel.socket),
    );
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["protocol_version"], 1);
    assert_eq!(v["kernel_version"], "fake 0.0.1");
    assert_eq!(v["features"]["opcodes"][1], "HELLO");
    assert_eq!(v["agent_id"], 42);
    assert_eq!(v["socket"], socket);
}

#[test]
fn kernel_error_exits_1_with_one_line() {
    let kernel = FakeKernel::start_with(Opts { hello_fails: true });
    let (code, out, err) = clove(&["status"], Some(&kernel.socket));
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.is_empty(), "{out}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("clove: kernel: hello from uid 1000: permission denied"),
        "{err}"
    );
}

#[test]
fn no_kernel_exits_3_naming_the_socket_and_the_remedy() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("none.sock");
    for sub in [&["status"][..], &["ping"][..]] {
        let mut args = vec!["--socket", missing.to_str().unwrap()];
        args.extend_from_slice(sub);
        let (code, _, err) = clove(&args, None);
        assert_eq!(code, 3, "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("clove: cannot connect to "), "{err}");
        assert!(err.contains(missing.to_str().unwrap()), "{err}");
        assert!(
            err.contains("clove-kernel") && err.contains("--socket"),
            "{err}"
        );
    }
    // The same through CLOVE_SOCKET.
    let (code, _, err) = clove(&["status"], Some(&missing));
    assert_eq!(code, 3, "{err}");
    assert!(err.contains(missing.to_str().unwrap()), "{err}");
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["ping", "--count", "0"][..],
        &["--codec", "xml", "status"],
        &["frobnicate"],
        &[],
    ] {
        let (code, _, err) = clove(args, None);
        assert_eq!(code, 2, "clove {args:?}: {err}");
    }
}

#[test]
fn help_has_examples() {
    let (code, out, _) = clove(&["--help"], None);
    assert_eq!(code, 0);
    assert!(
        out.contains("Examples:") && out.contains("clove ping --count 5"),
        "{out}"
    );
    assert!(out.contains("CLOVE_SOCKET"), "{out}");
}
