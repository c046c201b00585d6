//! An invalid configuration — from a file, a flag or the environment — stops the kernel before
//! it does anything: exactly one error line on stderr, naming the setting, and exit code 2.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use clove_tests::{kernel_command, run_to_exit};

/// A kernel command with valid paths in `dir`, so only the setting under test is wrong.
fn command(dir: &Path) -> Command {
    let mut cmd = kernel_command();
    cmd.arg("--socket")
        .arg(dir.join("k.sock"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--no-compat-socket");
    cmd
}

/// Runs `cmd`; asserts exit code 2 and a single stderr line that contains each of `names`.
fn assert_invalid(what: &str, cmd: &mut Command, names: &[&str]) {
    let (status, out, err) = run_to_exit(cmd, Duration::from_secs(10)).unwrap();
    assert_eq!(status.code(), Some(2), "{what}: {status}\nstderr: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "{what}: expected one stderr line, got:\n{err}"
    );
    for name in names {
        assert!(
            lines[0].contains(name),
            "{what}: {name:?} not in {:?}",
            lines[0]
        );
    }
    assert!(out.is_empty(), "{what}: stdout: {out}");
}

fn with_file(dir: &Path, text: &str) -> Command {
    let file = dir.join("clove.toml");
    std::fs::write(&file, text).unwrap();
    let mut cmd = command(dir);
    cmd.arg("--config").arg(&file);
    cmd
}

#[test]
fn bad_toml() {
    let dir = tempfile::tempdir().unwrap();
    assert_invalid(
        "bad TOML",
        &mut with_file(dir.path(), "max_frame = \n[[["),
        &["clove.toml"],
    );
}

#[test]
fn unknown_key() {
    let dir = tempfile::tempdir().unwrap();
    assert_invalid(
        "unknown key",
        &mut with_file(dir.path(), "max_frame = 10\nmax_frmae = 3\n"),
        &["clove.toml", "max_frmae"],
    );
}

#[test]
fn wrongly_typed_value() {
    let dir = tempfile::tempdir().unwrap();
    assert_invalid(
        "wrong type",
        &mut with_file(dir.path(), "max_frame = \"big\"\n"),
        &["clove.toml", "invalid type"],
    );
}

#[test]
fn max_frame_zero() {
    let dir = tempfile::tempdir().unwrap();
    assert_invalid(
        "max_frame = 0 in the file",
        &mut with_file(dir.path(), "max_frame = 0\n"),
        &["max_frame"],
    );
    assert_invalid(
        "--max-frame 0",
        command(dir.path()).args(["--max-frame", "0"]),
        &["max_frame"],
    );
    assert_invalid(
        "CLOVE_MAX_FRAME=0",
        command(dir.path()).env("CLOVE_MAX_FRAME", "0"),
        &["max_frame"],
    );
}

#[test]
fn nonexistent_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.toml");
    assert_invalid(
        "missing --config",
        command(dir.path()).arg("--config").arg(&missing),
        &[&missing.display().to_string()],
    );
    assert_invalid(
        "missing CLOVE_CONFIG",
        command(dir.path()).env("CLOVE_CONFIG", &missing),
        &[&missing.display().to_string()],
    );
}

#[test]
fn unparsable_flag_and_environment_values() {
    let dir = tempfile::tempdir().unwrap();
    assert_invalid(
        "--max-connections many",
        command(dir.path()).args(["--max-connections", "many"]),
        &["many"],
    );
    assert_invalid(
        "CLOVE_FRAME_TIMEOUT_MS=soon",
        command(dir.path()).env("CLOVE_FRAME_TIMEOUT_MS", "soon"),
        &["soon"],
    );
    assert_invalid(
        "--log-format xml",
        command(dir.path()).args(["--log-format", "xml"]),
        &["xml"],
    );
    assert_invalid(
        "unknown flag",
        command(dir.path()).arg("--no-such-flag"),
        &["--no-such-flag"],
    );
}

#[test]
fn help_exits_0() {
    let (status, out, err) =
        run_to_exit(kernel_command().arg("--help"), Duration::from_secs(10)).unwrap();
    assert_eq!(status.code(), Some(0), "{status}: {err}");
    assert!(
        out.contains("--socket") && out.contains("--state-dir"),
        "--help does not mention --socket and --state-dir:\n{out}"
    );
}
