//! The async client against the fake kernel, in both codecs: the same behaviour as the
//! blocking client, plus a call abandoned halfway leaving the connection unusable.

#![cfg(feature = "async")]
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use clove_sdk::msg::{ExitRequest, HelloRequest};
use clove_sdk::{AsyncClient, Codec, Error, ErrorCode, ProtocolError};
use common::{FakeKernel, Think, AGENT_ID, CODECS};

async fn client(kernel: &FakeKernel, codec: Codec) -> AsyncClient {
    AsyncClient::connect(Some(&kernel.socket))
        .await
        .unwrap()
        .with_codec(codec)
}

#[tokio::test]
async fn hello_and_noop_in_both_codecs() {
    let kernel = FakeKernel::start();
    for codec in CODECS {
        let mut c = client(&kernel, codec).await;
        assert_eq!(c.codec(), codec);
        assert_eq!(c.agent_id(), None);
        assert_eq!(c.hello().await.unwrap(), common::hello_reply());
        assert_eq!(c.agent_id(), Some(AGENT_ID));
        for size in [0usize, 5, 100_000] {
            let payload = vec![0xA5u8; size];
            assert_eq!(c.noop(&payload).await.unwrap(), payload, "{codec:?} {size}");
        }
        let r = c.call_raw(codec, 0x00, b"raw").await.unwrap();
        assert_eq!((r.header.codec, r.payload.as_slice()), (codec, &b"raw"[..]));
    }
}

#[tokio::test]
async fn kernel_errors_become_the_kernel_variant() {
    let kernel = FakeKernel::start();
    for codec in CODECS {
        let mut c = client(&kernel, codec).await;
        let e = c
            .call(&Think {
                prompt: "hi".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Some(&ErrorCode::NotImplemented), "{codec:?}: {e}");
        let r = c.call_raw(codec, 0x13, b"").await.unwrap();
        assert_eq!(r.kernel_error().unwrap().code, ErrorCode::UnknownOpcode);
        assert_eq!(c.noop(b"still fine").await.unwrap(), b"still fine");
    }
}

#[tokio::test]
async fn exit_says_goodbye_and_the_kernel_closes() {
    let kernel = FakeKernel::start();
    for codec in CODECS {
        client(&kernel, codec).await.exit().await.unwrap();
        let mut c = client(&kernel, codec).await;
        c.call(&ExitRequest {}).await.unwrap();
        assert!(c.noop(b"late").await.unwrap_err().breaks_connection());
    }
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let kernel = FakeKernel::start();
    for codec in CODECS {
        let mut c = client(&kernel, codec).await;
        for i in 0..20u8 {
            c.send_frame(codec, 0x00, &[i; 3]).unwrap();
        }
        c.send(&HelloRequest {}).unwrap();
        c.flush().await.unwrap();
        assert!(matches!(
            c.hello().await,
            Err(Error::RepliesPending { count: 21 })
        ));
        for i in 0..20u8 {
            assert_eq!(c.recv_frame().await.unwrap().payload, [i; 3]);
        }
        assert_eq!(c.recv::<HelloRequest>().await.unwrap().protocol_version, 1);
        assert!(matches!(c.recv_frame().await, Err(Error::NoRequestPending)));
    }
}

#[tokio::test]
async fn protocol_errors_are_named() {
    let kernel = FakeKernel::start();
    let mut c = client(&kernel, Codec::Json).await;
    let e = c.call_raw(Codec::Json, 0x12, b"").await.unwrap_err();
    assert!(
        matches!(e, Error::Protocol(ProtocolError::OpcodeMismatch { .. })),
        "{e:?}"
    );
    assert!(matches!(c.noop(b"").await, Err(Error::Unusable { .. })));

    let mut c = client(&kernel, Codec::Json).await;
    let e = c.call_raw(Codec::Json, 0x11, b"").await.unwrap_err();
    assert!(
        matches!(e, Error::Protocol(ProtocolError::BadMagic { .. })),
        "{e:?}"
    );

    let mut c = client(&kernel, Codec::Postcard).await;
    let e = c.call_raw(Codec::Postcard, 0x10, b"").await.unwrap_err();
    assert!(
        matches!(e, Error::Protocol(ProtocolError::Closed { opcode: 0x10 })),
        "{e:?}"
    );

    let mut c = client(&kernel, Codec::Postcard).await;
    c.set_max_reply(10);
    let e = c.call_raw(Codec::Postcard, 0x14, b"").await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::Protocol(ProtocolError::ReplyTooLarge { len: 1000, .. })
        ),
        "{e:?}"
    );
}

#[tokio::test]
async fn an_abandoned_call_leaves_the_connection_unusable() {
    let kernel = FakeKernel::start();
    let mut c = client(&kernel, Codec::Postcard).await;
    let abandoned = tokio::time::timeout(
        Duration::from_millis(50),
        c.call_raw(Codec::Postcard, 0x15, b""),
    )
    .await;
    assert!(abandoned.is_err(), "RESUME must not be answered");
    assert!(matches!(c.noop(b"").await, Err(Error::Unusable { .. })));
}

#[tokio::test]
async fn an_oversize_request_reports_the_kernel_refusal_not_a_broken_pipe() {
    let kernel = FakeKernel::start();
    for codec in CODECS {
        let mut c = client(&kernel, codec).await;
        let e = c.noop(&vec![1u8; 8 << 20]).await.unwrap_err();
        assert_eq!(e.code(), Some(&ErrorCode::FrameTooLarge), "{codec:?}: {e}");
    }
}

#[tokio::test]
async fn connect_failure_names_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.sock");
    let e = AsyncClient::connect(Some(&missing)).await.unwrap_err();
    assert!(e.is_connect());
    assert!(e.to_string().contains(&*missing.to_string_lossy()), "{e}");
}
