//! THINK, LLM_REPORT.

use clove_abi::codec::encode;
use clove_abi::msg::{
    LlmReportReply, LlmReportRequest, LlmUsage, ThinkImage, ThinkReply, ThinkRequest, ThinkingLevel,
};
use clove_abi::{Codec, Json};
use serde_json::json;

use crate::{golden, hex, parse, read, reject, sent};

// ---------------------------------------------------------------- THINK

#[test]
fn think_golden() {
    // Minimal: the prompt, then seven absent options (tag 0 each), `async` false, no
    // request_id.
    golden(
        &ThinkRequest::new("hi"),
        r#"{"prompt":"hi","async":false}"#,
        "02 68 69  00  00  00  00  00  00  00  00  00",
    );
    // Every field: image {data "AA==" (4), mime_type "image/png" (9)}, system_instruction
    // "be", thinking_level index 2 (high), temperature 0.5 = 0x3FE0000000000000 LE,
    // max_tokens 300 = varint ac 02, model "m", tools as JSON text `[{"name":"f"}]` (14),
    // async 1, request_id 7.
    golden(
        &ThinkRequest {
            prompt: "hi".into(),
            image: Some(ThinkImage {
                data: "AA==".into(),
                mime_type: "image/png".into(),
            }),
            system_instruction: Some("be".into()),
            thinking_level: Some(ThinkingLevel::High),
            temperature: Some(0.5),
            max_tokens: Some(300),
            model: Some("m".into()),
            tools: Some(Json(json!([{"name": "f"}]))),
            is_async: true,
            request_id: Some(7),
        },
        concat!(
            r#"{"prompt":"hi","image":{"data":"AA==","mime_type":"image/png"},"#,
            r#""system_instruction":"be","thinking_level":"high","temperature":0.5,"#,
            r#""max_tokens":300,"model":"m","tools":[{"name":"f"}],"async":true,"request_id":7}"#
        ),
        "02 68 69 \
         01  04 41 41 3d 3d  09 69 6d 61 67 65 2f 70 6e 67 \
         01 02 62 65 \
         01 02 \
         01 00 00 00 00 00 00 e0 3f \
         01 ac 02 \
         01 01 6d \
         01 0e 5b 7b 22 6e 61 6d 65 22 3a 22 66 22 7d 5d \
         01 \
         01 07",
    );
}

#[test]
fn think_as_the_original_sdk_sends_it() {
    let t: ThinkRequest = parse(r#"{"prompt": "Hello"}"#);
    assert_eq!(t, ThinkRequest::new("Hello"));
    // Python None values arrive as null; an int where a float goes.
    let t: ThinkRequest = parse(
        r#"{"prompt": "x", "image": null, "system_instruction": null, "thinking_level": null,
            "temperature": 1, "max_tokens": null, "model": null, "tools": null,
            "async": false, "request_id": null}"#,
    );
    assert_eq!(
        t,
        ThinkRequest {
            temperature: Some(1.0),
            ..ThinkRequest::new("x")
        }
    );
    let t: ThinkRequest = parse(
        r#"{"prompt": "What is this?", "image": {"data": "iVBORw0K", "mime_type": "image/png"},
            "system_instruction": "Be brief.", "thinking_level": "medium", "temperature": 0.2,
            "max_tokens": 1024, "model": "gemini-2.0-flash",
            "tools": [{"name": "get_time", "parameters": {"type": "object"}}],
            "async": true, "request_id": 42, "stream": false}"#,
    );
    assert_eq!(
        t.image,
        Some(ThinkImage {
            data: "iVBORw0K".into(),
            mime_type: "image/png".into()
        })
    );
    assert_eq!(t.system_instruction.as_deref(), Some("Be brief."));
    assert_eq!(t.thinking_level, Some(ThinkingLevel::Medium));
    assert_eq!((t.temperature, t.max_tokens), (Some(0.2), Some(1024)));
    assert_eq!(t.model.as_deref(), Some("gemini-2.0-flash"));
    assert_eq!(
        t.tools,
        Some(Json(
            json!([{"name": "get_time", "parameters": {"type": "object"}}])
        ))
    );
    assert_eq!((t.is_async, t.request_id), (true, Some(42)));
    for (level, text) in [
        (ThinkingLevel::Low, "low"),
        (ThinkingLevel::Medium, "medium"),
        (ThinkingLevel::High, "high"),
    ] {
        assert_eq!(level.as_str(), text);
        assert_eq!(ThinkingLevel::parse(text), Some(level));
        let t: ThinkRequest = parse(&format!(r#"{{"prompt": "p", "thinking_level": "{text}"}}"#));
        assert_eq!(t.thinking_level, Some(level));
    }
    assert_eq!(ThinkingLevel::ALL.len(), 3);
    assert_eq!(ThinkingLevel::parse("HIGH"), None);
}

#[test]
fn think_rejections_name_the_field() {
    let e = reject::<ThinkRequest>(r#"{"prompt": "p", "thinking_level": "extreme"}"#);
    assert!(
        e.starts_with(
            "thinking_level: unknown variant `extreme`, expected one of `low`, `medium`, `high`"
        ),
        "{e}"
    );
    let e = reject::<ThinkRequest>(r#"{"prompt": "p", "max_tokens": -5}"#);
    assert!(
        e.starts_with("max_tokens: invalid value: integer `-5`, expected u32"),
        "{e}"
    );
    let e = reject::<ThinkRequest>(r#"{"prompt": "p", "temperature": "hot"}"#);
    assert!(
        e.starts_with(r#"temperature: invalid type: string "hot", expected f64"#),
        "{e}"
    );
    let e = reject::<ThinkRequest>(r#"{"prompt": "p", "async": "yes"}"#);
    assert!(
        e.starts_with(r#"async: invalid type: string "yes", expected a boolean"#),
        "{e}"
    );
    let e = reject::<ThinkRequest>(r#"{"prompt": "p", "image": {"data": "AA=="}}"#);
    assert!(e.starts_with("image: missing field `mime_type`"), "{e}");
    let e = reject::<ThinkRequest>(r#"{"prompt": "p", "image": "cat.png"}"#);
    assert!(
        e.starts_with(r#"image: invalid type: string "cat.png""#),
        "{e}"
    );
    let e = reject::<ThinkRequest>(r#"{"prompt": 1}"#);
    assert!(
        e.starts_with("prompt: invalid type: integer `1`, expected a string"),
        "{e}"
    );
    let e = reject::<ThinkRequest>("{}");
    assert!(e.starts_with("missing field `prompt`"), "{e}");
}

#[test]
fn think_reply_has_the_original_keys() {
    let r = ThinkReply::answer("hello", 12);
    assert_eq!(
        sent(&r),
        json!({"success": true, "content": "hello", "tokens": 12})
    );
    // content "hello", tokens 12, then nine absent extensions.
    assert_eq!(
        encode(Codec::Postcard, &r).unwrap(),
        hex("01  05 68 65 6c 6c 6f  0c  00 00 00 00 00 00 00 00 00")
    );
    let full = ThinkReply {
        provider: Some("simulated".into()),
        model: Some("m".into()),
        queue_ms: Some(3),
        usage: Some(LlmUsage {
            input: 5,
            output: 7,
        }),
        finish_reason: Some("stop".into()),
        tool_calls: Some(Json(json!([{"name": "f", "args": {}}]))),
        ..r
    };
    assert_eq!(
        sent(&full),
        json!({
            "success": true, "content": "hello", "tokens": 12, "provider": "simulated",
            "model": "m", "queue_ms": 3, "usage": {"input": 5, "output": 7},
            "finish_reason": "stop", "tool_calls": [{"name": "f", "args": {}}]
        })
    );
    assert!(!full.is_accepted());
}

#[test]
fn think_accept_reply_has_the_original_keys() {
    let r = ThinkReply::accepted(5);
    assert!(r.is_accepted());
    assert_eq!(
        sent(&r),
        json!({"success": true, "content": "", "tokens": 0, "async": true, "request_id": 5,
               "status": "accepted"})
    );
    // content "", tokens 0, six absent extensions, async Some(true), request_id Some(5),
    // status Some("accepted") (8 bytes).
    assert_eq!(
        encode(Codec::Postcard, &r).unwrap(),
        hex("01 00 00  00 00 00 00 00 00  01 01  01 05  01 08 61 63 63 65 70 74 65 64")
    );
    // The original's accept reply has no content and no tokens.
    let back: ThinkReply =
        read(r#"{"success": true, "async": true, "request_id": 5, "status": "accepted"}"#);
    assert_eq!(back, r);
}

#[test]
fn original_think_replies_read() {
    let r: ThinkReply = read(r#"{"success": true, "content": "Paris", "tokens": 31}"#);
    assert_eq!(r, ThinkReply::answer("Paris", 31));
    // The original's error shape (no `code`) reads as a failed reply.
    let r: ThinkReply = read(r#"{"success": false, "error": "no API key", "content": ""}"#);
    assert!(!r.success);
    assert_eq!((r.content.as_str(), r.tokens), ("", 0));
}

// ---------------------------------------------------------------- LLM_REPORT

#[test]
fn llm_report_golden() {
    // 150 = varint 96 01, success 1.
    golden(
        &LlmReportRequest {
            tokens: 150,
            success: true,
        },
        r#"{"tokens":150,"success":true}"#,
        "96 01  01",
    );
    // 1000000 = 0x0F4240: 7-bit groups 0x40, 0x04, 0x3d -> c0 84 3d.
    golden(
        &LlmReportRequest {
            tokens: 1_000_000,
            success: false,
        },
        r#"{"tokens":1000000,"success":false}"#,
        "c0 84 3d  00",
    );
}

#[test]
fn llm_report_as_the_original_sdk_sends_it() {
    let r: LlmReportRequest = parse(r#"{"tokens": 100}"#);
    assert_eq!(
        r,
        LlmReportRequest {
            tokens: 100,
            success: true
        }
    );
    let r: LlmReportRequest = parse(r#"{"tokens": 0, "success": false, "model": "gpt"}"#);
    assert_eq!((r.tokens, r.success), (0, false));
    assert!(LlmReportRequest::default().success);
}

#[test]
fn llm_report_rejections_name_the_field() {
    let e = reject::<LlmReportRequest>(r#"{"tokens": -1}"#);
    assert!(
        e.starts_with("tokens: invalid value: integer `-1`, expected u64"),
        "{e}"
    );
    let e = reject::<LlmReportRequest>(r#"{"tokens": 1.5}"#);
    assert!(
        e.starts_with("tokens: invalid type: floating point `1.5`, expected u64"),
        "{e}"
    );
    let e = reject::<LlmReportRequest>(r#"{"tokens": 1, "success": 1}"#);
    assert!(
        e.starts_with("success: invalid type: integer `1`, expected a boolean"),
        "{e}"
    );
    let e = reject::<LlmReportRequest>("{}");
    assert!(e.starts_with("missing field `tokens`"), "{e}");
}

#[test]
fn llm_report_reply_has_the_original_keys() {
    let ok = LlmReportReply {
        success: true,
        tokens: 150,
        quota_exceeded: false,
        error: None,
    };
    assert_eq!(
        sent(&ok),
        json!({"success": true, "tokens": 150, "quota_exceeded": false})
    );
    let over = LlmReportReply {
        success: false,
        tokens: 200,
        quota_exceeded: true,
        error: Some("quota".into()),
    };
    assert_eq!(
        sent(&over),
        json!({"success": false, "tokens": 200, "quota_exceeded": true, "error": "quota"})
    );
    // 200 = varint c8 01; error Some("quota").
    assert_eq!(
        encode(Codec::Postcard, &over).unwrap(),
        hex("00  c8 01  01  01 05 71 75 6f 74 61")
    );
    // A failed reply without `code` is a reply, not a kernel error.
    let back: LlmReportReply =
        read(r#"{"success": false, "tokens": 200, "quota_exceeded": true, "error": "quota"}"#);
    assert_eq!(back, over);
}
