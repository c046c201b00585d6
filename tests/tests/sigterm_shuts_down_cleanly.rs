//! SIGTERM and SIGINT shut the kernel down cleanly: requests already sent are answered, the
//! socket file is removed, and the exit code is 0.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use clove_abi::frame::write_frame;
use clove_abi::Codec;
use clove_tests::{json_call, read_frame, wait_closed, Kernel, KernelOpts};

const BATCH: usize = 100;

fn shuts_down_cleanly(sig: libc::c_int) {
    let kernel = Kernel::start_with(KernelOpts {
        capture_stderr: true,
        ..KernelOpts::default()
    })
    .unwrap();
    let socket = kernel.socket.clone();
    let pid = kernel.pid() as libc::pid_t;
    let mut s = kernel.connect().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // A round trip first, so the connection is accepted before the signal.
    let (_, hello) = json_call(&mut s, 0xFE, b"{}").unwrap();
    assert_eq!(hello["success"], true);

    let mut batch = Vec::new();
    for seq in 0..BATCH {
        write_frame(
            &mut batch,
            Codec::Json,
            0,
            0x00,
            format!("in flight {seq}").as_bytes(),
        );
    }
    s.write_all(&batch).unwrap();
    // SAFETY: kill(2) on the kernel we started; no memory is touched.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0);

    for seq in 0..BATCH {
        let (h, body) = read_frame(&mut s)
            .unwrap_or_else(|e| panic!("reply {seq} of {BATCH} after the signal: {e}"));
        assert_eq!(h.opcode, 0x00);
        assert_eq!(body, format!("in flight {seq}").as_bytes());
    }
    // Then the kernel closes the connection and exits.
    wait_closed(&mut s, Duration::from_secs(10)).unwrap();
    // Signal 0 sends nothing: this only waits for the exit.
    let (status, err) = kernel.signal_and_wait(0).unwrap();
    assert_eq!(status.code(), Some(0), "{status}, stderr: {err}");
    assert!(
        !socket.exists(),
        "socket {} left behind after a clean shutdown",
        socket.display()
    );
    assert!(
        UnixStream::connect(&socket).is_err(),
        "something still answers on {}",
        socket.display()
    );
}

#[test]
fn sigterm_shuts_down_cleanly() {
    shuts_down_cleanly(libc::SIGTERM);
}

#[test]
fn sigint_shuts_down_cleanly() {
    shuts_down_cleanly(libc::SIGINT);
}

/// A client that keeps asking (a POLL_EVENTS loop, as `clove events -f` is) does not hold the
/// shutdown up: its connection is closed once the requests it had sent are answered, instead
/// of the kernel waiting out its connection-drain limit.
#[test]
fn a_polling_client_does_not_hold_the_shutdown_up() {
    let kernel = Kernel::start_with(KernelOpts {
        capture_stderr: true,
        ..KernelOpts::default()
    })
    .unwrap();
    let mut s = kernel.connect().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let (_, sub) = json_call(&mut s, 0x60, br#"{"event_types": ["CUSTOM"]}"#).unwrap();
    assert_eq!(sub["success"], true);
    let poller = std::thread::spawn(move || {
        let mut polls = 0u32;
        // Until the kernel closes the connection.
        while json_call(&mut s, 0x62, br#"{"wait_ms": 1000}"#).is_ok() {
            polls += 1;
        }
        polls
    });
    std::thread::sleep(Duration::from_millis(300));
    let (status, err) = kernel.signal_and_wait(libc::SIGTERM).unwrap();
    assert_eq!(status.code(), Some(0), "{status}, stderr: {err}");
    assert!(!err.contains("still busy"), "stderr: {err}");
    let polls = poller.join().unwrap();
    assert!(polls >= 1, "the poll in flight was answered");
}
