//! A client written with Python's standard library only (socket, struct, json) speaks the
//! original frame to our kernel: the wire contract holds for any language, not just our SDKs.
//! The checks live in tests/python/original_frame.py; this test starts the kernel and runs it.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use clove_tests::{run_to_exit, Kernel};

#[test]
fn original_frame_spoken_by_python_stdlib() {
    if Command::new("python3").arg("--version").output().is_err() {
        // Straight to the process's stderr: the test harness captures eprintln!, and a skip
        // must be seen, not pass silently.
        let _ = writeln!(std::io::stderr(), "SKIP: python3 not found");
        return;
    }
    let kernel = Kernel::start().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/original_frame.py");
    let (status, out, err) = run_to_exit(
        Command::new("python3").arg(&script).arg(&kernel.socket),
        Duration::from_secs(60),
    )
    .unwrap();
    assert!(
        status.success(),
        "{} failed ({status}):\n{err}{out}",
        script.display()
    );
    assert!(out.contains("checks passed"), "unexpected output: {out}");
}
