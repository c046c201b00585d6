//! SEND, RECV, BROADCAST, REGISTER.

use clove_abi::codec::encode;
use clove_abi::msg::{
    AgentRef, BroadcastReply, BroadcastRequest, IpcMessage, RecvReply, RecvRequest, RegisterReply,
    RegisterRequest, SendBatchReply, SendBatchRequest, SendReply, SendRequest,
};
use clove_abi::{Codec, Json};
use serde_json::{json, Value};

use crate::{golden, hex, parse, postcard, reject, sent};

// ---------------------------------------------------------------- SEND

#[test]
fn send_golden() {
    // The body travels as JSON text in postcard: `{"text":"hi"}` is 13 bytes.
    golden(
        &SendRequest {
            to: Some(2),
            to_name: None,
            message: Json(json!({"text": "hi"})),
            timeout_ms: None,
        },
        r#"{"to":2,"message":{"text":"hi"}}"#,
        "01 02  00  0d 7b 22 74 65 78 74 22 3a 22 68 69 22 7d  00",
    );
    golden(
        &SendRequest {
            to: None,
            to_name: Some("w".into()),
            message: Json(json!("hello")),
            timeout_ms: Some(500),
        },
        r#"{"to_name":"w","message":"hello","timeout_ms":500}"#,
        "00  01 01 77  07 22 68 65 6c 6c 6f 22  01 f4 03",
    );
}

#[test]
fn send_batch_golden() {
    golden(
        &SendBatchRequest {
            to: Some(2),
            to_name: None,
            messages: vec![Json(json!(1)), Json(json!("a"))],
            timeout_ms: None,
        },
        r#"{"to":2,"messages":[1,"a"]}"#,
        "01 02  00  02 01 31 03 22 61 22  00",
    );
    let r = SendBatchReply {
        success: true,
        delivered_to: 2,
        delivered: 2,
    };
    assert_eq!(
        sent(&r),
        json!({"success": true, "delivered_to": 2, "delivered": 2})
    );
    assert_eq!(postcard(&r), hex("01 02 02"));
    let b: SendBatchRequest = parse(r#"{"to_name": "sink", "messages": []}"#);
    assert_eq!(b.target(), Some(AgentRef::Name("sink")));
}

#[test]
fn send_takes_to_or_to_name() {
    let s: SendRequest = parse(r#"{"to": 2, "message": {"task": "add", "args": [1, 2]}}"#);
    assert_eq!(s.target(), Some(AgentRef::Id(2)));
    assert_eq!(s.message, Json(json!({"task": "add", "args": [1, 2]})));
    let s: SendRequest = parse(r#"{"to_name": "worker", "message": "hi"}"#);
    assert_eq!(s.target(), Some(AgentRef::Name("worker")));
    // Both: the id wins. Python None values arrive as null.
    let s: SendRequest = parse(r#"{"to": 2, "to_name": "worker", "message": 1}"#);
    assert_eq!(s.target(), Some(AgentRef::Id(2)));
    let s: SendRequest = parse(r#"{"to": null, "to_name": "worker", "message": null}"#);
    assert_eq!(s.target(), Some(AgentRef::Name("worker")));
    assert_eq!(s.message, Json(Value::Null));
    // Neither: decodes; the kernel answers "SEND needs to or to_name".
    let s: SendRequest = parse(r#"{"message": 1}"#);
    assert_eq!(s.target(), None);
}

#[test]
fn send_rejections_name_the_field() {
    let e = reject::<SendRequest>(r#"{"to": "worker", "message": 1}"#);
    assert!(
        e.starts_with(r#"to: invalid type: string "worker", expected u32"#),
        "{e}"
    );
    let e = reject::<SendRequest>(r#"{"to": 2}"#);
    assert!(e.starts_with("missing field `message`"), "{e}");
}

#[test]
fn send_reply_has_the_original_keys() {
    let r = SendReply {
        success: true,
        delivered_to: 2,
    };
    assert_eq!(sent(&r), json!({"success": true, "delivered_to": 2}));
}

// ---------------------------------------------------------------- RECV

#[test]
fn recv_golden() {
    golden(&RecvRequest::default(), r#"{"max":10}"#, "0a 00");
    golden(
        &RecvRequest {
            max: 5,
            wait_ms: Some(5000),
        },
        r#"{"max":5,"wait_ms":5000}"#,
        "05 01 88 27",
    );
}

#[test]
fn recv_as_the_original_sdk_sends_it() {
    let r: RecvRequest = parse(r#"{"max": 3}"#);
    assert_eq!((r.max, r.wait_ms), (3, None));
    let r: RecvRequest = parse("{}");
    assert_eq!(r, RecvRequest::default());
    assert_eq!(r.max, 10);
    let r: RecvRequest = parse("");
    assert_eq!(r.max, 10);
    let r: RecvRequest = parse(r#"{"wait_ms": 250}"#);
    assert_eq!((r.max, r.wait_ms), (10, Some(250)));
}

#[test]
fn recv_rejections_name_the_field() {
    let e = reject::<RecvRequest>(r#"{"max": "10"}"#);
    assert!(
        e.starts_with(r#"max: invalid type: string "10", expected u32"#),
        "{e}"
    );
    let e = reject::<RecvRequest>(r#"{"max": 1, "wait_ms": 2.5}"#);
    assert!(
        e.starts_with("wait_ms: invalid type: floating point `2.5`"),
        "{e}"
    );
}

#[test]
fn recv_reply_has_the_original_keys() {
    let r = RecvReply {
        success: true,
        messages: vec![IpcMessage {
            from: 4,
            from_name: "boss".into(),
            message: Json(json!({"task": 1})),
            age_ms: 12,
        }],
        count: 1,
    };
    assert_eq!(
        sent(&r),
        json!({
            "success": true,
            "messages": [{"from": 4, "from_name": "boss", "message": {"task": 1}, "age_ms": 12}],
            "count": 1
        })
    );
    // postcard: the body as JSON text, `{"task":1}` is 10 bytes.
    assert_eq!(
        encode(Codec::Postcard, &r).unwrap(),
        hex("01  01  04 04 62 6f 73 73 0a 7b 22 74 61 73 6b 22 3a 31 7d 0c  01")
    );
    let empty = RecvReply {
        success: true,
        messages: vec![],
        count: 0,
    };
    assert_eq!(
        sent(&empty),
        json!({"success": true, "messages": [], "count": 0})
    );
}

// ---------------------------------------------------------------- BROADCAST

#[test]
fn broadcast_golden() {
    golden(
        &BroadcastRequest {
            message: Json(json!({"k": [1, 2]})),
            include_self: true,
        },
        r#"{"message":{"k":[1,2]},"include_self":true}"#,
        "0b 7b 22 6b 22 3a 5b 31 2c 32 5d 7d  01",
    );
}

#[test]
fn broadcast_as_the_original_sdk_sends_it() {
    let b: BroadcastRequest = parse(r#"{"message": "shutdown"}"#);
    assert_eq!(b.message, Json(json!("shutdown")));
    assert!(!b.include_self);
    let b: BroadcastRequest = parse(r#"{"message": {"n": 1}, "include_self": true}"#);
    assert!(b.include_self);
}

#[test]
fn broadcast_rejections_name_the_field() {
    let e = reject::<BroadcastRequest>(r#"{"message": 1, "include_self": "yes"}"#);
    assert!(
        e.starts_with(r#"include_self: invalid type: string "yes", expected a boolean"#),
        "{e}"
    );
    let e = reject::<BroadcastRequest>("{}");
    assert!(e.starts_with("missing field `message`"), "{e}");
}

#[test]
fn broadcast_reply_has_the_original_keys() {
    let r = BroadcastReply {
        success: true,
        delivered_count: 3,
    };
    assert_eq!(sent(&r), json!({"success": true, "delivered_count": 3}));
}

// ---------------------------------------------------------------- REGISTER

#[test]
fn register_golden() {
    golden(
        &RegisterRequest { name: "w".into() },
        r#"{"name":"w"}"#,
        "01 77",
    );
}

#[test]
fn register_as_the_original_sdk_sends_it() {
    let r: RegisterRequest = parse(r#"{"name": "coordinator"}"#);
    assert_eq!(r.name, "coordinator");
}

#[test]
fn register_rejections_name_the_field() {
    let e = reject::<RegisterRequest>(r#"{"name": 5}"#);
    assert!(
        e.starts_with("name: invalid type: integer `5`, expected a string"),
        "{e}"
    );
    let e = reject::<RegisterRequest>("{}");
    assert!(e.starts_with("missing field `name`"), "{e}");
}

#[test]
fn register_reply_has_the_original_keys() {
    let r = RegisterReply {
        success: true,
        agent_id: 7,
        name: "w".into(),
    };
    assert_eq!(
        sent(&r),
        json!({"success": true, "agent_id": 7, "name": "w"})
    );
}
