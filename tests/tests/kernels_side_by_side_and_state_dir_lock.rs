//! Kernels with their own state dirs and sockets run side by side; a kernel on a state dir
//! another kernel holds refuses to start (exit 1), naming the state dir, and leaves the first
//! one serving.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use clove_tests::{hello_on_new_connection, kernel_command, run_to_exit, Kernel};

#[test]
fn kernels_side_by_side_and_state_dir_lock() {
    let first = Kernel::start().unwrap();
    let second = Kernel::start().unwrap();
    assert_ne!(first.state_dir, second.state_dir);
    hello_on_new_connection(&first.socket).unwrap();
    hello_on_new_connection(&second.socket).unwrap();

    // A third kernel on the first one's state dir, with a socket of its own.
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("third.sock");
    let (status, _, err) = run_to_exit(
        kernel_command()
            .arg("--socket")
            .arg(&socket)
            .arg("--state-dir")
            .arg(&first.state_dir)
            .arg("--no-compat-socket"),
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(
        status.code(),
        Some(1),
        "third kernel: {status}, stderr: {err}"
    );
    let state_dir = first.state_dir.display().to_string();
    assert!(
        err.contains(&state_dir) && err.contains("in use"),
        "stderr should name the state dir {state_dir} and say it is in use: {err}"
    );
    assert!(
        !socket.exists(),
        "the refused kernel left its socket {} behind",
        socket.display()
    );

    // The refusal did not disturb the holders.
    hello_on_new_connection(&first.socket).unwrap();
    hello_on_new_connection(&second.socket).unwrap();
}
