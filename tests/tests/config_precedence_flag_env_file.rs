//! Where each setting comes from: flag > `CLOVE_*` environment > config file > default, as
//! `--print-config` shows (it prints the configuration the kernel would run with, and exits).

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use clove_tests::{kernel_command, run_to_exit};

fn print_config(cmd: &mut Command) -> toml::Table {
    let (status, out, err) =
        run_to_exit(cmd.arg("--print-config"), Duration::from_secs(10)).unwrap();
    assert_eq!(status.code(), Some(0), "{status}: {err}");
    out.parse()
        .unwrap_or_else(|e| panic!("--print-config is not TOML ({e}):\n{out}"))
}

fn with_file(dir: &Path, text: &str) -> Command {
    let file = dir.join("clove.toml");
    std::fs::write(&file, text).unwrap();
    let mut cmd = kernel_command();
    cmd.arg("--config").arg(&file);
    cmd
}

#[test]
fn defaults() {
    let dir = tempfile::tempdir().unwrap();
    let c = print_config(&mut with_file(dir.path(), ""));
    assert_eq!(c["max_connections"].as_integer(), Some(4096), "{c}");
    assert_eq!(c["max_frame"].as_integer(), Some(1_048_576), "{c}");
    assert_eq!(c["frame_timeout_ms"].as_integer(), Some(10_000), "{c}");
    assert_eq!(c["log_format"].as_str(), Some("human"), "{c}");
}

#[test]
fn file_beats_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let c = print_config(&mut with_file(
        dir.path(),
        "socket = \"/tmp/from-file.sock\"\nstate_dir = \"/tmp/from-file-state\"\n\
         max_connections = 7\nmax_frame = 1000\nframe_timeout_ms = 250\n\
         log_format = \"json\"\nlog_level = \"debug\"\ncompat_socket = false\n",
    ));
    assert_eq!(c["socket"].as_str(), Some("/tmp/from-file.sock"), "{c}");
    assert_eq!(c["state_dir"].as_str(), Some("/tmp/from-file-state"), "{c}");
    assert_eq!(c["max_connections"].as_integer(), Some(7), "{c}");
    assert_eq!(c["max_frame"].as_integer(), Some(1000), "{c}");
    assert_eq!(c["frame_timeout_ms"].as_integer(), Some(250), "{c}");
    assert_eq!(c["log_format"].as_str(), Some("json"), "{c}");
    assert_eq!(c["log_level"].as_str(), Some("debug"), "{c}");
    assert_eq!(c["compat_socket"].as_bool(), Some(false), "{c}");
}

#[test]
fn environment_beats_the_file_and_flags_beat_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let file = "socket = \"/tmp/from-file.sock\"\nmax_frame = 1000\nmax_connections = 7\n\
                frame_timeout_ms = 250\nlog_format = \"human\"\n";
    let c = print_config(
        with_file(dir.path(), file)
            .env("CLOVE_SOCKET", "/tmp/from-env.sock")
            .env("CLOVE_MAX_FRAME", "2000")
            .env("CLOVE_MAX_CONNECTIONS", "8")
            .env("CLOVE_FRAME_TIMEOUT_MS", "350")
            .env("CLOVE_LOG_FORMAT", "json")
            .env("CLOVE_LOG", "warn")
            .env("CLOVE_STATE_DIR", "/tmp/from-env-state"),
    );
    assert_eq!(c["socket"].as_str(), Some("/tmp/from-env.sock"), "{c}");
    assert_eq!(c["max_frame"].as_integer(), Some(2000), "{c}");
    assert_eq!(c["max_connections"].as_integer(), Some(8), "{c}");
    assert_eq!(c["frame_timeout_ms"].as_integer(), Some(350), "{c}");
    assert_eq!(c["log_format"].as_str(), Some("json"), "{c}");
    assert_eq!(c["log_level"].as_str(), Some("warn"), "{c}");
    assert_eq!(c["state_dir"].as_str(), Some("/tmp/from-env-state"), "{c}");

    let c = print_config(
        with_file(dir.path(), file)
            .env("CLOVE_SOCKET", "/tmp/from-env.sock")
            .env("CLOVE_MAX_FRAME", "2000")
            .env("CLOVE_LOG_FORMAT", "json")
            .args(["--socket", "/tmp/from-flag.sock", "--max-frame", "3000"])
            .args(["--log-format", "human", "--no-compat-socket"]),
    );
    assert_eq!(c["socket"].as_str(), Some("/tmp/from-flag.sock"), "{c}");
    assert_eq!(c["max_frame"].as_integer(), Some(3000), "{c}");
    assert_eq!(c["log_format"].as_str(), Some("human"), "{c}");
    assert_eq!(c["max_connections"].as_integer(), Some(7), "{c}");
    assert_eq!(c["compat_socket"].as_bool(), Some(false), "{c}");
}

#[test]
fn config_file_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("env.toml");
    std::fs::write(&file, "max_frame = 4242\n").unwrap();
    let c = print_config(kernel_command().env("CLOVE_CONFIG", &file));
    assert_eq!(c["max_frame"].as_integer(), Some(4242), "{c}");
}
