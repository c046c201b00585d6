//! The blocking client against the fake kernel, in both codecs: typed calls, raw frames,
//! kernel errors, EXIT, pipelining and every protocol failure the client must name.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use clove_sdk::msg::{ExitRequest, HelloReply, HelloRequest};
use clove_sdk::{Client, Codec, Error, ErrorCode, ProtocolError};
use common::{FakeKernel, Opts, Think, AGENT_ID, CODECS};

fn client(kernel: &FakeKernel, codec: Codec) -> Client {
    let mut c = Client::connect(Some(&kernel.socket))
        .unwrap()
        .with_codec(codec);
    c.set_timeout(Some(Duration::from_secs(10))).unwrap();
    c
}

#[test]
fn default_codec_is_postcard() {
    let kernel = FakeKernel::start();
    let c = Client::connect(Some(&kernel.socket)).unwrap();
    assert_eq!(c.codec(), Codec::Postcard);
    assert_eq!(c.socket_path(), kernel.socket);
    assert_eq!(c.max_reply(), clove_sdk::DEFAULT_MAX_REPLY);
}

#[test]
fn hello_decodes_and_sets_the_agent_id() {
    let kernel = FakeKernel::start();
    for codec in CODECS {
        let mut c = client(&kernel, codec);
        assert_eq!(c.agent_id(), None);
        assert_eq!(c.hello().unwrap(), common::hello_reply(), "{codec:?}");
        assert_eq!(c.agent_id(), Some(AGENT_ID));
        // The generic call is the same thing.
        assert_eq!(c.call(&HelloRequest {}).unwrap().protocol_version, 1);
    }
}

#[test]
fn noop_echoes_any_size_in_both_codecs() {
    let kernel = FakeKernel::start();
    for codec in CODECS {
        let mut c = client(&kernel, codec);
        for size in [0usize, 1, 17, 4096, 100_000] {
            let payload: Vec<u8> = (0..size).map(|i| (i * 7) as u8).collect();
            assert_eq!(c.noop(&payload).unwrap(), payload, "{codec:?} {size}");
        }
        assert_eq!(c.agent_id(), Some(AGENT_ID));
    }
}

#[test]
fn raw_replies_come_in_the_request_codec() {
    let kernel = FakeKernel::start();
    let mut c = client(&kernel, Codec::Postcard);
    for codec in CODECS {
        let r = c.call_raw(codec, 0x00, b"raw").unwrap();
        assert_eq!(r.header.codec, codec);
        assert_eq!(r.header.opcode, 0x00);
        assert_eq!(r.header.agent_id, AGENT_ID);
        assert_eq!(r.payload, b"raw");
        assert_eq!(r.kernel_error(), None);
    }
}

#[test]
fn kernel_errors_become_the_kernel_variant_and_keep_the_connection() {
    let kernel = FakeKernel::start();
    for codec in CODECS {
        let mut c = client(&kernel, codec);
        let e = c
            .call(&Think {
                prompt: "hi".into(),
            })
            .unwrap_err();
        assert_eq!(e.code(), Some(&ErrorCode::NotImplemented), "{codec:?}: {e}");
        assert!(
            e.to_string()
                .starts_with("kernel: THINK (0x01) is not implemented"),
            "{e}"
        );
        assert!(!e.breaks_connection());

        let r = c.call_raw(codec, 0x13, b"{}").unwrap();
        let err = r.kernel_error().unwrap();
        assert_eq!(err.code, ErrorCode::UnknownOpcode);
        assert_eq!(err.message, "unknown opcode 0x13");
        let e = r.decode::<HelloReply>().unwrap_err();
        assert!(matches!(e, Error::Kernel(ref w) if *w == err), "{e:?}");

        // Still in step.
        assert_eq!(c.noop(b"after").unwrap(), b"after");
    }
}

#[test]
fn exit_says_goodbye_and_the_kernel_closes() {
    let kernel = FakeKernel::start();
    for codec in CODECS {
        client(&kernel, codec).exit().unwrap();

        let mut c = client(&kernel, codec);
        c.call(&ExitRequest {}).unwrap();
        let e = c.noop(b"too late").unwrap_err();
        assert!(e.breaks_connection(), "{codec:?}: {e}");
    }
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let kernel = FakeKernel::start();
    for codec in CODECS {
        let mut c = client(&kernel, codec);
        assert!(matches!(c.recv_frame(), Err(Error::NoRequestPending)));
        for i in 0..50u32 {
            c.send_frame(codec, 0x00, &i.to_le_bytes()).unwrap();
            if i == 25 {
                c.send(&HelloRequest {}).unwrap();
            }
        }
        c.flush().unwrap();
        assert_eq!(c.pending(), 51);
        assert!(matches!(
            c.noop(b"x"),
            Err(Error::RepliesPending { count: 51 })
        ));
        assert!(matches!(
            c.recv::<HelloRequest>(),
            Err(Error::NotAwaited {
                asked: 0xFE,
                next: 0x00
            })
        ));
        for i in 0..50u32 {
            let r = c.recv_frame().unwrap();
            assert_eq!(r.payload, i.to_le_bytes());
            if i == 25 {
                assert_eq!(c.recv::<HelloRequest>().unwrap(), common::hello_reply());
            }
        }
        assert_eq!(c.pending(), 0);
        assert_eq!(c.noop(b"x").unwrap(), b"x");
    }
}

#[test]
fn receiving_sends_what_is_queued() {
    let kernel = FakeKernel::start();
    let mut c = client(&kernel, Codec::Json);
    c.send(&HelloRequest {}).unwrap();
    // No explicit flush: recv writes the queued frame first.
    assert_eq!(c.recv::<HelloRequest>().unwrap().protocol_version, 1);
}

#[test]
fn opcode_mismatch_is_a_protocol_error_and_breaks_the_connection() {
    let kernel = FakeKernel::start();
    let mut c = client(&kernel, Codec::Postcard);
    let e = c.call_raw(Codec::Postcard, 0x12, b"").unwrap_err();
    assert!(
        matches!(
            e,
            Error::Protocol(ProtocolError::OpcodeMismatch {
                sent: 0x12,
                got: 0x11
            })
        ),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "protocol error: reply opcode KILL (0x11) differs from the request's LIST (0x12)"
    );
    assert!(matches!(c.noop(b""), Err(Error::Unusable { .. })));
}

#[test]
fn bad_magic_in_a_reply_is_refused() {
    let kernel = FakeKernel::start();
    let mut c = client(&kernel, Codec::Json);
    let e = c.call_raw(Codec::Json, 0x11, b"{}").unwrap_err();
    assert!(
        matches!(
            e,
            Error::Protocol(ProtocolError::BadMagic {
                opcode: 0x11,
                magic: 0x5858_5858
            })
        ),
        "{e:?}"
    );
}

#[test]
fn closing_mid_reply_is_named() {
    let kernel = FakeKernel::start();
    let mut c = client(&kernel, Codec::Postcard);
    let e = c.call_raw(Codec::Postcard, 0x10, b"").unwrap_err();
    assert!(
        matches!(e, Error::Protocol(ProtocolError::Closed { opcode: 0x10 })),
        "{e:?}"
    );
    assert!(
        e.to_string().contains("connection closed by the kernel"),
        "{e}"
    );
}

#[test]
fn replies_over_the_client_limit_are_refused() {
    let kernel = FakeKernel::start();
    let mut c = client(&kernel, Codec::Postcard);
    c.set_max_reply(1000);
    assert_eq!(
        c.call_raw(Codec::Postcard, 0x14, b"")
            .unwrap()
            .payload
            .len(),
        1000
    );
    c.set_max_reply(999);
    let e = c.call_raw(Codec::Postcard, 0x14, b"").unwrap_err();
    assert!(
        matches!(
            e,
            Error::Protocol(ProtocolError::ReplyTooLarge {
                len: 1000,
                max: 999,
                ..
            })
        ),
        "{e:?}"
    );
}

#[test]
fn a_reply_that_never_comes_times_out() {
    let kernel = FakeKernel::start();
    let mut c = client(&kernel, Codec::Postcard);
    c.set_timeout(Some(Duration::from_millis(50))).unwrap();
    let e = c.call_raw(Codec::Postcard, 0x15, b"").unwrap_err();
    assert!(matches!(e, Error::Timeout { opcode: 0x15, .. }), "{e:?}");
    assert!(
        e.to_string().starts_with("no reply to RESUME (0x15) from "),
        "{e}"
    );
    assert!(matches!(c.noop(b""), Err(Error::Unusable { .. })));
}

#[test]
fn an_oversize_request_reports_the_kernel_refusal_not_a_broken_pipe() {
    let kernel = FakeKernel::start();
    for codec in CODECS {
        let mut c = client(&kernel, codec);
        let e = c.noop(&vec![1u8; 8 << 20]).unwrap_err();
        assert_eq!(e.code(), Some(&ErrorCode::FrameTooLarge), "{codec:?}: {e}");
        assert!(matches!(c.noop(b""), Err(Error::Unusable { .. })));
    }
}

#[test]
fn connect_failure_names_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.sock");
    let e = Client::connect(Some(&missing)).unwrap_err();
    assert!(e.is_connect());
    let text = e.to_string();
    assert!(
        text.starts_with(&format!("cannot connect to {}: ", missing.display())),
        "{text}"
    );
}

#[test]
fn from_stream_wraps_a_connected_socket() {
    let kernel = FakeKernel::start();
    let stream = std::os::unix::net::UnixStream::connect(&kernel.socket).unwrap();
    let mut c = Client::from_stream(stream);
    assert_eq!(c.hello().unwrap().kernel_version, "fake 0.0.1");
}

#[test]
fn kernel_error_in_place_of_hello() {
    let kernel = FakeKernel::start_with(Opts { hello_fails: true });
    for codec in CODECS {
        let e = client(&kernel, codec).hello().unwrap_err();
        assert_eq!(e.code(), Some(&ErrorCode::PermissionDenied), "{e}");
    }
}
