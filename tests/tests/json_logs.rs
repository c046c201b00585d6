//! `--log-format json`: every line the kernel writes to stderr is one JSON object, from the
//! start-up line to the shutdown line, including lines about refused frames.

#![allow(clippy::unwrap_used)]

use std::io::Write;

use clove_tests::{hello_on_new_connection, read_frame, Kernel, KernelOpts};
use serde_json::Value;

#[test]
fn json_logs() {
    let kernel = Kernel::start_with(KernelOpts {
        args: vec!["--log-format".into(), "json".into()],
        env: vec![("CLOVE_LOG".into(), "info".into())],
        capture_stderr: true,
        ..KernelOpts::default()
    })
    .unwrap();
    hello_on_new_connection(&kernel.socket).unwrap();
    // A refused frame is logged at info.
    let mut s = kernel.connect().unwrap();
    s.write_all(&[0x58; 17]).unwrap();
    read_frame(&mut s).unwrap();

    let (status, err) = kernel.stop_and_collect().unwrap();
    assert_eq!(status.code(), Some(0), "{status}: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        lines.len() >= 2,
        "expected at least the start-up and shutdown lines at info, got:\n{err}"
    );
    for line in &lines {
        let value: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("stderr line is not JSON ({e}): {line}"));
        assert!(
            value.is_object(),
            "stderr line is not a JSON object: {line}"
        );
    }
    assert!(
        lines.iter().any(|l| l.contains("bad magic")),
        "the refused frame was not logged:\n{err}"
    );
}
