//! Frames the kernel cannot serve: every one is answered or the connection is closed, never
//! left hanging, and the kernel goes on serving everyone else.
//!
//! * bad magic, oversize length: an error reply, then close (the payload is never waited for);
//! * a frame that stops arriving halfway: closed after the frame timeout;
//! * an idle connection (no byte of a new frame) is not a stalled frame: it stays open;
//! * unassigned opcodes: `unknown_opcode`; original opcodes not implemented yet:
//!   `not_implemented` (after payload validation); WORLD_*/TUNNEL_*: `not_supported`; the
//!   connection stays usable after each, in both codecs.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use clove_abi::codec::{decode_reply, encode};
use clove_abi::frame::MAGIC_JSON;
use clove_abi::msg::{HelloReply, HelloRequest};
use clove_abi::{Codec, ErrorCode, Opcode, WireError};
use clove_tests::{
    hello_on_new_connection, json_call, read_frame, send_frame, wait_closed, Kernel, KernelOpts,
};
use serde_json::{json, Value};

const FRAME_TIMEOUT_MS: u64 = 300;

fn kernel() -> Kernel {
    Kernel::start_with(KernelOpts {
        args: vec!["--frame-timeout-ms".into(), FRAME_TIMEOUT_MS.to_string()],
        ..KernelOpts::default()
    })
    .unwrap()
}

fn connect(k: &Kernel) -> UnixStream {
    let s = k.connect().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

fn header(magic: u32, opcode: u8, len: u64) -> [u8; 17] {
    let mut h = [0u8; 17];
    h[0..4].copy_from_slice(&magic.to_le_bytes());
    h[8] = opcode;
    h[9..17].copy_from_slice(&len.to_le_bytes());
    h
}

/// Asserts a JSON error reply with `code`, and returns its `error` text.
fn assert_json_error(reply: &Value, code: &str, what: &str) -> String {
    assert_eq!(reply["success"], false, "{what}: {reply}");
    assert_eq!(reply["code"], code, "{what}: {reply}");
    let error = reply["error"].as_str().unwrap_or_default();
    assert!(!error.is_empty(), "{what}: no error text: {reply}");
    error.to_owned()
}

fn noop_still_echoes(s: &mut UnixStream) {
    send_frame(s, Codec::Json, 0x00, b"still usable").unwrap();
    let (h, body) = read_frame(s).unwrap();
    assert_eq!((h.opcode, body.as_slice()), (0x00, &b"still usable"[..]));
}

#[test]
fn bad_magic_is_answered_then_closed() {
    let k = kernel();
    let mut s = connect(&k);
    let mut frame = header(0xDEAD_BEEF, 0xFE, 2).to_vec();
    frame.extend_from_slice(b"{}");
    s.write_all(&frame).unwrap();
    let (h, body) = read_frame(&mut s).unwrap();
    assert_eq!(h.codec, Codec::Json, "a bad magic is answered in JSON");
    assert_eq!(h.opcode, 0xFE);
    assert_ne!(h.agent_id, 0);
    let reply: Value = serde_json::from_slice(&body).unwrap();
    let error = assert_json_error(&reply, "bad_magic", "bad magic");
    assert!(error.contains("magic"), "{error}");
    wait_closed(&mut s, Duration::from_secs(2)).unwrap();
    hello_on_new_connection(&k.socket).unwrap();
}

#[test]
fn oversize_length_is_answered_then_closed_without_reading_the_payload() {
    let k = kernel();
    // Only the header is sent: a kernel that waited for the 2 MiB would time out and close
    // without a reply.
    let mut s = connect(&k);
    s.write_all(&header(MAGIC_JSON, 0x00, 2 << 20)).unwrap();
    let (h, body) = read_frame(&mut s).unwrap();
    assert_eq!((h.codec, h.opcode), (Codec::Json, 0x00));
    let reply: Value = serde_json::from_slice(&body).unwrap();
    assert_json_error(&reply, "frame_too_large", "2 MiB length");
    wait_closed(&mut s, Duration::from_secs(2)).unwrap();
    hello_on_new_connection(&k.socket).unwrap();

    // In postcard, the refusal is a postcard error.
    let mut s = connect(&k);
    s.write_all(&header(Codec::Postcard.magic(), 0xFE, (1 << 20) + 1))
        .unwrap();
    let (h, body) = read_frame(&mut s).unwrap();
    assert_eq!((h.codec, h.opcode), (Codec::Postcard, 0xFE));
    let err = decode_reply::<HelloReply>(Codec::Postcard, &body)
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::FrameTooLarge, "{err}");
    wait_closed(&mut s, Duration::from_secs(2)).unwrap();
    hello_on_new_connection(&k.socket).unwrap();
}

#[test]
fn exactly_the_limit_is_accepted() {
    let k = kernel();
    let mut s = connect(&k);
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let big: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
    send_frame(&mut s, Codec::Json, 0x00, &big).unwrap();
    let (h, body) = read_frame(&mut s).unwrap();
    assert_eq!(h.opcode, 0x00);
    assert!(body == big, "1 MiB NOOP echo differs");
    noop_still_echoes(&mut s);

    // --max-frame sets the limit, inclusive.
    let k = Kernel::start_with(KernelOpts {
        args: vec!["--max-frame".into(), "1000".into()],
        ..KernelOpts::default()
    })
    .unwrap();
    let mut s = connect(&k);
    send_frame(&mut s, Codec::Json, 0x00, &[7u8; 1000]).unwrap();
    assert_eq!(read_frame(&mut s).unwrap().1, vec![7u8; 1000]);
    send_frame(&mut s, Codec::Json, 0x00, &[7u8; 1001]).unwrap();
    let (_, body) = read_frame(&mut s).unwrap();
    let reply: Value = serde_json::from_slice(&body).unwrap();
    assert_json_error(
        &reply,
        "frame_too_large",
        "1001 bytes with --max-frame 1000",
    );
    wait_closed(&mut s, Duration::from_secs(2)).unwrap();
}

#[test]
fn partial_frames_are_closed_after_the_frame_timeout() {
    let k = kernel();
    let mut partial_payload = header(MAGIC_JSON, 0x00, 100).to_vec();
    partial_payload.extend_from_slice(&[1u8; 40]);
    let cases = [
        ("partial header", header(MAGIC_JSON, 0xFE, 2)[..10].to_vec()),
        ("partial payload", partial_payload),
    ];
    for (what, bytes) in cases {
        let mut s = connect(&k);
        s.write_all(&bytes).unwrap();
        let took = wait_closed(&mut s, Duration::from_secs(5)).unwrap();
        assert!(
            took >= Duration::from_millis(FRAME_TIMEOUT_MS * 2 / 3),
            "{what}: closed after {took:?}, before the {FRAME_TIMEOUT_MS} ms frame timeout"
        );
        hello_on_new_connection(&k.socket).unwrap();
    }
}

#[test]
fn idle_connections_outlive_the_frame_timeout() {
    let k = kernel();
    let mut fresh = connect(&k);
    let mut used = connect(&k);
    noop_still_echoes(&mut used);
    std::thread::sleep(Duration::from_millis(FRAME_TIMEOUT_MS * 3));
    for s in [&mut fresh, &mut used] {
        let (h, reply) = json_call(s, 0xFE, b"{}").unwrap();
        assert_eq!(h.opcode, 0xFE);
        assert_eq!(reply["protocol_version"], 1, "{reply}");
    }
}

#[test]
fn unassigned_opcodes_are_unknown_and_the_connection_stays_usable() {
    let k = kernel();
    let mut s = connect(&k);
    let (h, reply) = json_call(&mut s, 0x13, b"{}").unwrap();
    assert_eq!(h.opcode, 0x13);
    assert_eq!(
        reply,
        json!({"success": false, "error": "unknown opcode 0x13", "code": "unknown_opcode"})
    );
    noop_still_echoes(&mut s);

    // Every unassigned byte, our unused extension range (0xD0-0xEF) included.
    for raw in 0..=255u8 {
        if Opcode::from_u8(raw).is_some() {
            continue;
        }
        let (h, reply) = json_call(&mut s, raw, b"{}").unwrap();
        assert_eq!(h.opcode, raw);
        let error = assert_json_error(&reply, "unknown_opcode", &format!("0x{raw:02X}"));
        assert!(
            error.eq_ignore_ascii_case(&format!("unknown opcode 0x{raw:02x}")),
            "0x{raw:02X}: {error}"
        );
    }
    noop_still_echoes(&mut s);
    assert!(Opcode::from_u8(0xD8).is_none());
}

/// A request that is valid for the opcode's type, per UPSTREAM-ABI.md.
fn valid_payload(op: Opcode) -> Value {
    match op {
        Opcode::Think => json!({"prompt": "hello"}),
        Opcode::Exec => json!({"command": "true"}),
        Opcode::Read => json!({"path": "/nonexistent/clove-test"}),
        Opcode::Write => {
            json!({"path": "/nonexistent/clove-test", "content": "x", "mode": "write"})
        }
        Opcode::Spawn => json!({"name": "probe", "script": "/nonexistent/probe.py"}),
        Opcode::Kill | Opcode::Pause | Opcode::Resume => json!({"name": "probe"}),
        Opcode::List
        | Opcode::GetPerms
        | Opcode::RecordStop
        | Opcode::ReplayStatus
        | Opcode::MetricsSystem
        | Opcode::MetricsAllAgents
        | Opcode::MetricsCgroup => json!({}),
        Opcode::Send => json!({"to_name": "probe", "message": {"hi": 1}}),
        Opcode::Recv | Opcode::PollEvents | Opcode::AsyncPoll => json!({"max": 1}),
        Opcode::Broadcast => json!({"message": "hi"}),
        Opcode::Register => json!({"name": "probe"}),
        Opcode::Store => json!({"key": "k", "value": {"v": 1}, "scope": "global"}),
        Opcode::Fetch | Opcode::Delete => json!({"key": "k"}),
        Opcode::Keys => json!({"prefix": "k"}),
        Opcode::SetPerms => json!({"level": "readonly"}),
        Opcode::Http => json!({"url": "http://127.0.0.1:9/", "method": "GET"}),
        Opcode::Subscribe | Opcode::Unsubscribe => json!({"event_types": ["CUSTOM"]}),
        Opcode::Emit => json!({"event_type": "CUSTOM", "data": {"x": 1}}),
        Opcode::RecordStart => json!({"include_think": true, "include_http": true,
            "include_exec": true, "max_entries": 10}),
        Opcode::RecordStatus => json!({"export": false}),
        Opcode::ReplayStart => json!({"recording": "[]"}),
        Opcode::GetAuditLog => json!({"limit": 10}),
        Opcode::SetAuditConfig => json!({"max_entries": 100, "log_ipc": true}),
        Opcode::MetricsAgent => json!({"agent_id": 1}),
        Opcode::LlmReport => json!({"tokens": 10, "success": true}),
        Opcode::Wait | Opcode::Logs => json!({"name": "probe"}),
        other => panic!("no valid payload known for {other}"),
    }
}

/// The empty fields the original added to an opcode's errors.
fn error_extras(op: Opcode) -> Value {
    match op {
        Opcode::Read => json!({"content": "", "size": 0}),
        Opcode::Write => json!({"bytes_written": 0}),
        Opcode::Exec => json!({"stdout": "", "stderr": "", "exit_code": -1}),
        Opcode::Recv => json!({"messages": [], "count": 0}),
        Opcode::Broadcast => json!({"delivered_count": 0}),
        Opcode::Think => json!({"content": ""}),
        _ => json!({}),
    }
}

#[test]
fn unimplemented_opcodes_are_validated_then_not_implemented() {
    let k = kernel();
    let mut s = connect(&k);
    let (_, hello) = json_call(&mut s, 0xFE, b"{}").unwrap();
    let implemented: Vec<String> =
        serde_json::from_value(hello["features"]["opcodes"].clone()).unwrap();
    for &op in Opcode::ALL {
        if op.is_raw() || op == Opcode::Hello || op.is_world_or_tunnel() {
            continue;
        }
        if implemented.iter().any(|n| n == op.name()) {
            continue;
        }
        let expected = format!("{op} is not implemented by this kernel yet");
        // `{}` may lack required fields: either answer is right.
        let (h, reply) = json_call(&mut s, op.as_u8(), b"{}").unwrap();
        assert_eq!(h.opcode, op.as_u8());
        let code = reply["code"].as_str().unwrap_or_default();
        assert!(
            code == "not_implemented" || code == "invalid_request",
            "{op} with {{}}: {reply}"
        );
        // A request valid for the type must get through validation.
        let payload = valid_payload(op).to_string();
        let (h, reply) = json_call(&mut s, op.as_u8(), payload.as_bytes()).unwrap();
        assert_eq!(h.opcode, op.as_u8());
        let mut want = json!({"success": false, "error": expected, "code": "not_implemented"});
        for (k, v) in error_extras(op).as_object().unwrap() {
            want[k] = v.clone();
        }
        assert_eq!(reply, want, "{op} with {payload}");
    }
    noop_still_echoes(&mut s);
}

#[test]
fn worlds_and_tunnels_are_not_supported() {
    let k = kernel();
    let mut s = connect(&k);
    for &op in Opcode::ALL.iter().filter(|op| op.is_world_or_tunnel()) {
        let (h, reply) = json_call(&mut s, op.as_u8(), b"{}").unwrap();
        assert_eq!(h.opcode, op.as_u8());
        let error = assert_json_error(&reply, "not_supported", op.name());
        assert!(
            error.contains(op.name()) && error.contains("not supported"),
            "{error}"
        );
    }
    let count = Opcode::ALL
        .iter()
        .filter(|op| op.is_world_or_tunnel())
        .count();
    assert_eq!(count, 9 + 5);
    noop_still_echoes(&mut s);
}

#[test]
fn postcard_frames_get_postcard_replies() {
    let k = kernel();
    let mut s = connect(&k);

    let hello = encode(Codec::Postcard, &HelloRequest {}).unwrap();
    send_frame(&mut s, Codec::Postcard, 0xFE, &hello).unwrap();
    let (h, body) = read_frame(&mut s).unwrap();
    assert_eq!((h.codec, h.opcode), (Codec::Postcard, 0xFE));
    assert_ne!(h.agent_id, 0);
    let reply = decode_reply::<HelloReply>(Codec::Postcard, &body)
        .unwrap()
        .unwrap();
    assert!(reply.success);
    assert_eq!(reply.protocol_version, 1);
    assert!(reply.features.codecs.iter().any(|c| c == "json"));
    assert!(reply.features.codecs.iter().any(|c| c == "postcard"));
    let id = h.agent_id;

    send_frame(&mut s, Codec::Postcard, 0x13, &[]).unwrap();
    let (h, body) = read_frame(&mut s).unwrap();
    assert_eq!((h.codec, h.opcode, h.agent_id), (Codec::Postcard, 0x13, id));
    let err = decode_reply::<HelloReply>(Codec::Postcard, &body)
        .unwrap()
        .unwrap_err();
    assert_eq!(
        err,
        WireError::new(ErrorCode::UnknownOpcode, "unknown opcode 0x13")
    );

    send_frame(&mut s, Codec::Postcard, Opcode::WorldCreate.as_u8(), &[]).unwrap();
    let (h, body) = read_frame(&mut s).unwrap();
    assert_eq!((h.codec, h.opcode), (Codec::Postcard, 0xA0));
    let err = decode_reply::<HelloReply>(Codec::Postcard, &body)
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::NotSupported, "{err}");

    send_frame(&mut s, Codec::Postcard, 0x00, b"\x00\xffraw").unwrap();
    let (h, body) = read_frame(&mut s).unwrap();
    assert_eq!((h.codec, h.opcode), (Codec::Postcard, 0x00));
    assert_eq!(body, b"\x00\xffraw");

    // EXIT answers the raw text `goodbye` in either codec, then closes.
    send_frame(&mut s, Codec::Postcard, 0xFF, &[]).unwrap();
    let (h, body) = read_frame(&mut s).unwrap();
    assert_eq!((h.codec, h.opcode), (Codec::Postcard, 0xFF));
    assert_eq!(body, b"goodbye");
    wait_closed(&mut s, Duration::from_secs(2)).unwrap();
}
