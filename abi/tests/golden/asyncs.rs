//! ASYNC_POLL.

use clove_abi::codec::{decode_reply, encode};
use clove_abi::msg::{AsyncPollReply, AsyncPollRequest, AsyncResult, ExecReply, ASYNC_ACCEPTED};
use clove_abi::{Codec, ErrorCode, Opcode};
use serde_json::json;

use crate::{golden, hex, parse, reject, sent};

#[test]
fn async_poll_golden() {
    golden(&AsyncPollRequest::default(), r#"{"max":10}"#, "0a  00");
    // max 300 = varint ac 02; wait_ms 1000 = 0x3e8 = varint e8 07.
    golden(
        &AsyncPollRequest {
            max: 300,
            wait_ms: Some(1000),
        },
        r#"{"max":300,"wait_ms":1000}"#,
        "ac 02  01 e8 07",
    );
}

#[test]
fn async_poll_as_the_original_sdk_sends_it() {
    let p: AsyncPollRequest = parse(r#"{"max": 5}"#);
    assert_eq!((p.max, p.wait_ms), (5, None));
    let p: AsyncPollRequest = parse("{}");
    assert_eq!(p, AsyncPollRequest::default());
    let p: AsyncPollRequest = parse("");
    assert_eq!(p.max, 10);
    let p: AsyncPollRequest = parse(r#"{"max": 10, "wait_ms": null}"#);
    assert_eq!(p.wait_ms, None);
    let p: AsyncPollRequest = parse(r#"{"wait_ms": 250}"#);
    assert_eq!((p.max, p.wait_ms), (10, Some(250)));
}

#[test]
fn async_poll_rejections_name_the_field() {
    let e = reject::<AsyncPollRequest>(r#"{"max": -1}"#);
    assert!(
        e.starts_with("max: invalid value: integer `-1`, expected u32"),
        "{e}"
    );
    let e = reject::<AsyncPollRequest>(r#"{"max": "5"}"#);
    assert!(
        e.starts_with(r#"max: invalid type: string "5", expected u32"#),
        "{e}"
    );
    let e = reject::<AsyncPollRequest>(r#"{"wait_ms": 1.5}"#);
    assert!(
        e.starts_with("wait_ms: invalid type: floating point `1.5`, expected u64"),
        "{e}"
    );
}

#[test]
fn async_poll_reply_has_the_original_keys() {
    let r = AsyncPollReply {
        success: true,
        results: vec![AsyncResult::new(5, Opcode::Exec, r#"{"success":true}"#)],
        count: 1,
    };
    assert_eq!(
        sent(&r),
        json!({"success": true, "count": 1, "results": [
            {"request_id": 5, "opcode": 2, "opcode_name": "EXEC", "payload": "{\"success\":true}"}
        ]})
    );
    // success, one result {request_id 5, opcode 2, "EXEC", payload (16 bytes of JSON text)},
    // count 1.
    assert_eq!(
        encode(Codec::Postcard, &r).unwrap(),
        hex("01  01  05 02 04 45 58 45 43 \
             10 7b 22 73 75 63 63 65 73 73 22 3a 74 72 75 65 7d  01")
    );
    let empty = AsyncPollReply {
        success: true,
        results: Vec::new(),
        count: 0,
    };
    assert_eq!(
        sent(&empty),
        json!({"success": true, "results": [], "count": 0})
    );
    assert_eq!(encode(Codec::Postcard, &empty).unwrap(), hex("01 00 00"));
}

#[test]
fn original_async_poll_reply_reads() {
    let text = r#"{"success": true, "count": 2, "results": [
        {"request_id": 1, "opcode": 2, "opcode_name": "EXEC",
         "payload": "{\"success\": true, \"stdout\": \"hi\\n\", \"stderr\": \"\", \"exit_code\": 0}"},
        {"request_id": 2, "opcode": 80, "opcode_name": "HTTP",
         "payload": "{\"success\": true, \"status_code\": 200, \"body\": \"ok\"}"}
    ]}"#;
    let r = match decode_reply::<AsyncPollReply>(Codec::Json, text.as_bytes()) {
        Ok(Ok(r)) => r,
        other => panic!("{other:?}"),
    };
    assert_eq!((r.success, r.count, r.results.len()), (true, 2, 2));
    let exec = &r.results[0];
    assert_eq!(exec.opcode(), Some(Opcode::Exec));
    assert_eq!(
        exec.reply::<ExecReply>().unwrap().unwrap(),
        ExecReply::completed("hi\n", "", 0)
    );
    assert_eq!(r.results[1].opcode(), Some(Opcode::Http));
    assert_eq!(r.results[1].opcode_name, "HTTP");
}

#[test]
fn async_result_helpers() {
    let r = AsyncResult::new(9, Opcode::Think, "{}");
    assert_eq!((r.opcode, r.opcode_name.as_str()), (0x01, "THINK"));
    // An error reply in the payload is the kernel's error.
    let err = AsyncResult::new(
        3,
        Opcode::Exec,
        r#"{"success":false,"error":"timed out","code":"timeout"}"#,
    );
    let e = err.reply::<ExecReply>().unwrap().unwrap_err();
    assert_eq!(e.code, ErrorCode::Timeout);
    // A payload that is not a reply is a decode failure.
    let bad = AsyncResult::new(3, Opcode::Exec, "not json");
    assert!(bad.reply::<ExecReply>().is_err());
    // An unassigned opcode byte.
    let odd = AsyncResult {
        opcode: 0x13,
        ..AsyncResult::default()
    };
    assert_eq!(odd.opcode(), None);
    assert_eq!(ASYNC_ACCEPTED, "accepted");
}
