//! `--max-connections N`: beyond N open connections, new clients wait (in the listen backlog)
//! and are served as soon as a slot frees; the kernel neither crashes nor refuses them.

#![allow(clippy::unwrap_used)]

use std::io::ErrorKind;
use std::time::Duration;

use clove_abi::Codec;
use clove_tests::{json_call, read_frame, send_frame, Kernel, KernelOpts};

#[test]
fn max_connections_limit() {
    let kernel = Kernel::start_with(KernelOpts {
        args: vec!["--max-connections".into(), "4".into()],
        ..KernelOpts::default()
    })
    .unwrap();
    // The harness's readiness probe connected and closed once; its slot may take a moment to
    // free, so each of the four is proven served by a round trip.
    let mut open: Vec<_> = (0..4)
        .map(|_| {
            let mut s = kernel.connect().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let (_, hello) = json_call(&mut s, 0xFE, b"{}").unwrap();
            assert_eq!(hello["success"], true);
            s
        })
        .collect();

    let mut fifth = kernel.connect().unwrap();
    send_frame(&mut fifth, Codec::Json, 0xFE, b"{}").unwrap();
    fifth
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    match read_frame(&mut fifth) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("a 5th connection was served beyond --max-connections 4: {other:?}"),
    }

    // Free a slot: the waiting client is served.
    drop(open.pop());
    fifth
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let (h, body) = read_frame(&mut fifth).unwrap();
    assert_eq!(h.opcode, 0xFE);
    let hello: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(hello["protocol_version"], 1, "{hello}");

    // The others are still served.
    for s in &mut open {
        send_frame(s, Codec::Json, 0x00, b"ok").unwrap();
        assert_eq!(read_frame(s).unwrap().1, b"ok");
    }
}
