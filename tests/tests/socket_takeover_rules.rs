//! Claiming the socket path: a kernel never takes over a live socket or a path that is not a
//! socket, replaces a stale socket file of its own, and creates the socket with mode 0660.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use clove_tests::{hello_on_new_connection, kernel_command, run_to_exit, wait_timeout, Kernel};

/// Runs a kernel on `socket` with a fresh state dir until it exits (it is expected to refuse).
fn run_refused(socket: &Path) -> (ExitStatus, String) {
    let dir = tempfile::tempdir().unwrap();
    let (status, _, err) = run_to_exit(
        kernel_command()
            .arg("--socket")
            .arg(socket)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .arg("--no-compat-socket"),
        Duration::from_secs(10),
    )
    .unwrap();
    (status, err)
}

#[test]
fn live_socket_is_refused() {
    let kernel = Kernel::start().unwrap();
    let (status, err) = run_refused(&kernel.socket);
    assert_eq!(status.code(), Some(1), "{status}, stderr: {err}");
    let path = kernel.socket.display().to_string();
    assert!(
        err.contains(&path) && err.contains("in use"),
        "stderr should name {path} and say it is in use: {err}"
    );
    // The live kernel keeps its socket and still serves on it.
    hello_on_new_connection(&kernel.socket).unwrap();
}

#[test]
fn stale_socket_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("stale.sock");
    // A listener that is gone leaves its socket file behind: nobody answers there.
    drop(UnixListener::bind(&socket).unwrap());
    assert!(std::fs::symlink_metadata(&socket)
        .unwrap()
        .file_type()
        .is_socket());
    assert!(UnixStream::connect(&socket).is_err());

    let mut child = kernel_command()
        .arg("--socket")
        .arg(&socket)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--no-compat-socket")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let served = loop {
        if let Ok(reply) = hello_on_new_connection(&socket) {
            break Some(reply);
        }
        if child.try_wait().unwrap().is_some() || start.elapsed() > Duration::from_secs(20) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let status = wait_timeout(&mut child, Duration::from_secs(10)).unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(
        served.is_some(),
        "kernel did not serve on the stale socket path ({status}): {err}"
    );
    assert_eq!(status.code(), Some(0), "{status}: {err}");
}

#[test]
fn non_socket_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("not-a-socket");
    std::fs::write(&path, b"precious").unwrap();
    let (status, err) = run_refused(&path);
    assert_eq!(status.code(), Some(1), "{status}, stderr: {err}");
    assert!(
        err.contains(&path.display().to_string()),
        "stderr should name {}: {err}",
        path.display()
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        b"precious",
        "the file was touched"
    );
}

#[test]
fn socket_mode_is_0660() {
    let kernel = Kernel::start().unwrap();
    let meta = std::fs::symlink_metadata(&kernel.socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(
        meta.permissions().mode() & 0o7777,
        0o660,
        "socket mode {:o}",
        meta.permissions().mode() & 0o7777
    );
}
