//! A kernel that is not root still runs agents, with what the host allows, and the SPAWN reply
//! names every layer that is not in force. Runs the kernel as `nobody` (the test itself must be
//! root to switch to it).

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clove_tests::{json_call, kernel_bin, wait_timeout};
use serde_json::{json, Value};

const NOBODY: u32 = 65534;

#[test]
fn spawn_without_root_reports_every_missing_layer() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP: switching the kernel to nobody needs root");
        return;
    }
    if !Path::new("/usr/bin/python3.11").exists() {
        eprintln!("SKIP: /usr/bin/python3.11 (an interpreter nobody can run) is missing");
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("clove-nonroot-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    // The kernel binary may sit under a directory nobody cannot enter: run a copy.
    let bin = dir.path().join("clove-kernel");
    std::fs::copy(kernel_bin(), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let script = dir.path().join("agent.py");
    std::fs::write(
        &script,
        "import os, sys\nprint('uid', os.getuid(), 'socket', sys.argv[1])\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
    let socket = dir.path().join("k.sock");

    let mut kernel = Command::new(&bin)
        .arg("--socket")
        .arg(&socket)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .args(["--no-compat-socket", "--python", "/usr/bin/python3.11"])
        .env("CLOVE_LOG", "warn")
        .env_remove("CLOVE_SOCKET")
        .uid(NOBODY)
        .gid(NOBODY)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let mut stream = loop {
        if let Ok(s) = std::os::unix::net::UnixStream::connect(&socket) {
            break s;
        }
        if let Ok(Some(status)) = kernel.try_wait() {
            let mut err = String::new();
            kernel
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            panic!("kernel as nobody exited {status}: {err}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "kernel not ready"
        );
        std::thread::sleep(Duration::from_millis(20));
    };

    let spawn = json!({"name": "plain", "script": script.to_str().unwrap()});
    let (_, reply) = json_call(&mut stream, 0x10, spawn.to_string().as_bytes()).unwrap();
    let id = reply["id"]
        .as_u64()
        .unwrap_or_else(|| panic!("SPAWN failed: {reply}"));
    let iso = &reply["isolation"];
    assert_eq!(iso["fully_isolated"], json!(false), "{reply}");
    let not_applied: Vec<&str> = iso["not_applied"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for layer in [
        "memory",
        "cpu",
        "pids",
        "net_namespace",
        "pid_namespace",
        "mnt_namespace",
        "uid",
        "seccomp",
    ] {
        assert!(
            not_applied.contains(&layer),
            "{layer} missing from {not_applied:?}"
        );
    }
    assert_eq!(iso["cgroups"]["available"], json!(false));
    assert!(iso["degraded_reason"]
        .as_str()
        .unwrap()
        .contains("not running as root"));

    // It ran, as the kernel's user, and said so in its log.
    let wait = json!({"id": id, "timeout_ms": 20000});
    let (_, reply) = json_call(&mut stream, 0xD0, wait.to_string().as_bytes()).unwrap();
    assert_eq!(reply["exit_code"], json!(0), "{reply}");
    let logs = json!({"id": id});
    let (_, reply) = json_call(&mut stream, 0xD1, logs.to_string().as_bytes()).unwrap();
    let text = reply["text"].as_str().unwrap();
    assert!(
        text.starts_with(&format!("uid {NOBODY} socket /")),
        "{reply}"
    );

    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(kernel.id() as libc::pid_t, libc::SIGTERM);
    }
    let status = wait_timeout(&mut kernel, Duration::from_secs(10)).unwrap();
    assert!(status.success(), "{status}");
}
