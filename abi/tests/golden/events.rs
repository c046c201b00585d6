//! SUBSCRIBE, UNSUBSCRIBE, POLL_EVENTS, EMIT.

use clove_abi::codec::{decode_reply, encode};
use clove_abi::msg::{
    EmitReply, EmitRequest, Event, EventType, PollEventsReply, PollEventsRequest, SubscribeReply,
    SubscribeRequest, UnsubscribeReply, UnsubscribeRequest,
};
use clove_abi::{Codec, Json};
use serde_json::{json, Value};

use crate::{golden, hex, parse, reject, sent, strings};

// Names as postcard strings: length, then UTF-8.
const AGENT_SPAWNED: &str = "0d 41 47 45 4e 54 5f 53 50 41 57 4e 45 44";
const AGENT_EXITED: &str = "0c 41 47 45 4e 54 5f 45 58 49 54 45 44";
const CUSTOM: &str = "06 43 55 53 54 4f 4d";
const STATE_CHANGED: &str = "0d 53 54 41 54 45 5f 43 48 41 4e 47 45 44";

// ---------------------------------------------------------------- event types

#[test]
fn event_types_have_the_original_spellings() {
    let names: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
    assert_eq!(
        names,
        [
            "AGENT_SPAWNED",
            "AGENT_EXITED",
            "AGENT_PAUSED",
            "AGENT_RESUMED",
            "AGENT_RESTARTING",
            "AGENT_ESCALATED",
            "MESSAGE_RECEIVED",
            "STATE_CHANGED",
            "SYSCALL_BLOCKED",
            "RESOURCE_WARNING",
            "CUSTOM",
            "GROUP_ESCALATED"
        ]
    );
    for t in EventType::ALL {
        assert_eq!(EventType::parse(t.as_str()), Some(t));
        assert_eq!(serde_json::to_value(t).unwrap(), json!(t.as_str()));
    }
    assert_eq!(EventType::parse("agent_spawned"), None);
    assert_eq!(EventType::parse(""), None);
    // postcard: the variant index.
    assert_eq!(
        encode(Codec::Postcard, &EventType::Custom).unwrap(),
        hex("0a")
    );
}

// ---------------------------------------------------------------- SUBSCRIBE

#[test]
fn subscribe_golden() {
    golden(&SubscribeRequest::default(), "{}", "00 00 00");
    // What the SDK sends.
    golden(
        &SubscribeRequest {
            event_types: Some(strings(&["AGENT_SPAWNED"])),
            events: None,
            event: None,
        },
        r#"{"event_types":["AGENT_SPAWNED"]}"#,
        &format!("01 01 {AGENT_SPAWNED}  00  00"),
    );
    // All three spellings at once.
    golden(
        &SubscribeRequest {
            event_types: Some(strings(&["CUSTOM"])),
            events: Some(strings(&["AGENT_EXITED"])),
            event: Some("CUSTOM".into()),
        },
        r#"{"event_types":["CUSTOM"],"events":["AGENT_EXITED"],"event":"CUSTOM"}"#,
        &format!("01 01 {CUSTOM}  01 01 {AGENT_EXITED}  01 {CUSTOM}"),
    );
}

#[test]
fn subscribe_as_the_original_sdk_sends_it() {
    let s: SubscribeRequest = parse(r#"{"event_types": ["AGENT_SPAWNED", "AGENT_EXITED"]}"#);
    assert_eq!(s.event_types(), ["AGENT_SPAWNED", "AGENT_EXITED"]);
    // The original kernel's alternatives.
    let s: SubscribeRequest = parse(r#"{"events": ["STATE_CHANGED"]}"#);
    assert_eq!(s.event_types(), ["STATE_CHANGED"]);
    let s: SubscribeRequest = parse(r#"{"event": "CUSTOM"}"#);
    assert_eq!(s.event_types(), ["CUSTOM"]);
    // Merged in order, each once; nulls are absent.
    let s: SubscribeRequest = parse(
        r#"{"event_types": ["CUSTOM", "AGENT_PAUSED"], "events": ["AGENT_PAUSED", "AGENT_RESUMED"],
            "event": "CUSTOM"}"#,
    );
    assert_eq!(s.event_types(), ["CUSTOM", "AGENT_PAUSED", "AGENT_RESUMED"]);
    let s: SubscribeRequest = parse(r#"{"event_types": null, "events": null, "event": null}"#);
    assert!(s.event_types().is_empty());
    // An unknown name decodes: the kernel, not the decoder, reports it.
    let s: SubscribeRequest = parse(r#"{"event_types": ["AGENT_SPAWNED", "NOT_A_TYPE"]}"#);
    let unknown: Vec<&str> = s
        .event_types()
        .into_iter()
        .filter(|n| EventType::parse(n).is_none())
        .collect();
    assert_eq!(unknown, ["NOT_A_TYPE"]);
}

#[test]
fn subscribe_rejections_name_the_field() {
    let e = reject::<SubscribeRequest>(r#"{"event_types": "AGENT_SPAWNED"}"#);
    assert!(
        e.starts_with(r#"event_types: invalid type: string "AGENT_SPAWNED", expected a sequence"#),
        "{e}"
    );
    let e = reject::<SubscribeRequest>(r#"{"events": [1]}"#);
    assert!(
        e.starts_with("events[0]: invalid type: integer `1`, expected a string"),
        "{e}"
    );
    let e = reject::<SubscribeRequest>(r#"{"event": ["CUSTOM"]}"#);
    assert!(
        e.starts_with("event: invalid type: sequence, expected a string"),
        "{e}"
    );
}

#[test]
fn subscribe_reply_has_the_original_keys() {
    let r = SubscribeReply {
        success: true,
        subscribed: strings(&["CUSTOM"]),
    };
    assert_eq!(sent(&r), json!({"success": true, "subscribed": ["CUSTOM"]}));
    assert_eq!(
        encode(Codec::Postcard, &r).unwrap(),
        hex(&format!("01 01 {CUSTOM}"))
    );
}

// ---------------------------------------------------------------- UNSUBSCRIBE

#[test]
fn unsubscribe_golden() {
    // `all` is not optional, so it is always written.
    golden(
        &UnsubscribeRequest::default(),
        r#"{"all":false}"#,
        "00 00 00 00",
    );
    golden(
        &UnsubscribeRequest {
            event_types: Some(Vec::new()),
            events: Some(strings(&["CUSTOM"])),
            event: Some("STATE_CHANGED".into()),
            all: true,
        },
        r#"{"event_types":[],"events":["CUSTOM"],"event":"STATE_CHANGED","all":true}"#,
        &format!("01 00  01 01 {CUSTOM}  01 {STATE_CHANGED}  01"),
    );
}

#[test]
fn unsubscribe_as_the_original_sdk_sends_it() {
    let u: UnsubscribeRequest = parse(r#"{"event_types": ["CUSTOM"]}"#);
    assert_eq!((u.event_types(), u.all), (vec!["CUSTOM"], false));
    let u: UnsubscribeRequest = parse(r#"{"all": true}"#);
    assert!(u.all && u.event_types().is_empty());
    let u: UnsubscribeRequest =
        parse(r#"{"event": "CUSTOM", "events": ["CUSTOM", "AGENT_EXITED"]}"#);
    assert_eq!(u.event_types(), ["CUSTOM", "AGENT_EXITED"]);
    let u: UnsubscribeRequest = parse("");
    assert_eq!(u, UnsubscribeRequest::default());
}

#[test]
fn unsubscribe_rejections_name_the_field() {
    let e = reject::<UnsubscribeRequest>(r#"{"all": "yes"}"#);
    assert!(
        e.starts_with(r#"all: invalid type: string "yes", expected a boolean"#),
        "{e}"
    );
    let e = reject::<UnsubscribeRequest>(r#"{"event_types": {"CUSTOM": true}}"#);
    assert!(
        e.starts_with("event_types: invalid type: map, expected a sequence"),
        "{e}"
    );
}

#[test]
fn unsubscribe_reply_has_the_original_keys() {
    let r = UnsubscribeReply {
        success: true,
        unsubscribed: None,
    };
    assert_eq!(sent(&r), json!({"success": true}));
    assert_eq!(encode(Codec::Postcard, &r).unwrap(), hex("01 00"));
    let r = UnsubscribeReply {
        unsubscribed: Some(strings(&["CUSTOM"])),
        ..r
    };
    assert_eq!(
        sent(&r),
        json!({"success": true, "unsubscribed": ["CUSTOM"]})
    );
    let back = decode_reply::<UnsubscribeReply>(Codec::Json, br#"{"success": true}"#)
        .unwrap()
        .unwrap();
    assert_eq!(back.unsubscribed, None);
}

// ---------------------------------------------------------------- POLL_EVENTS

#[test]
fn poll_events_golden() {
    // max 100 = 0x64.
    golden(&PollEventsRequest::default(), r#"{"max":100}"#, "64 00");
    // max 300 = ac 02, wait_ms 1500 = dc 0b.
    golden(
        &PollEventsRequest {
            max: 300,
            wait_ms: Some(1500),
        },
        r#"{"max":300,"wait_ms":1500}"#,
        "ac 02  01 dc 0b",
    );
}

#[test]
fn poll_events_as_the_original_sdk_sends_it() {
    let p: PollEventsRequest = parse(r#"{"max": 10}"#);
    assert_eq!((p.max, p.wait_ms), (10, None));
    for text in ["{}", ""] {
        let p: PollEventsRequest = parse(text);
        assert_eq!((p.max, p.wait_ms), (100, None), "{text:?}");
    }
    let p: PollEventsRequest = parse(r#"{"max": 5, "wait_ms": 250}"#);
    assert_eq!((p.max, p.wait_ms), (5, Some(250)));
    let p: PollEventsRequest = parse(r#"{"wait_ms": null}"#);
    assert_eq!((p.max, p.wait_ms), (100, None));
}

#[test]
fn poll_events_rejections_name_the_field() {
    let e = reject::<PollEventsRequest>(r#"{"max": -1}"#);
    assert!(
        e.starts_with("max: invalid value: integer `-1`, expected u32"),
        "{e}"
    );
    let e = reject::<PollEventsRequest>(r#"{"max": "10"}"#);
    assert!(
        e.starts_with(r#"max: invalid type: string "10", expected u32"#),
        "{e}"
    );
    let e = reject::<PollEventsRequest>(r#"{"wait_ms": 0.5}"#);
    assert!(
        e.starts_with("wait_ms: invalid type: floating point `0.5`, expected u64"),
        "{e}"
    );
}

#[test]
fn poll_events_reply_has_the_original_keys() {
    let r = PollEventsReply {
        success: true,
        events: vec![Event {
            event_type: "AGENT_SPAWNED".into(),
            data: Json(json!({"agent_id": 2})),
            source_agent_id: 0,
            timestamp: 1_700_000_000_123,
        }],
        count: 1,
        dropped: None,
    };
    assert_eq!(
        sent(&r),
        json!({"success": true, "count": 1, "events": [{
            "type": "AGENT_SPAWNED", "data": {"agent_id": 2}, "source_agent_id": 0,
            "timestamp": 1_700_000_000_123_u64
        }]})
    );
    // The type as a string, data as JSON text (`{"agent_id":2}`, 14 bytes), the timestamp as
    // a varint.
    assert_eq!(
        encode(Codec::Postcard, &r).unwrap(),
        hex(&format!(
            "01  01  {AGENT_SPAWNED}
                     0e 7b 22 61 67 65 6e 74 5f 69 64 22 3a 32 7d
                     00
                     fb d0 95 ff bc 31
                 01  00"
        ))
    );
    let empty = PollEventsReply {
        success: true,
        events: Vec::new(),
        count: 0,
        dropped: Some(3),
    };
    assert_eq!(
        sent(&empty),
        json!({"success": true, "events": [], "count": 0, "dropped": 3})
    );

    // What the original kernel sent, restart event data included.
    let original = br#"{"success": true, "count": 2, "events": [
        {"type": "AGENT_RESTARTING", "data": {"agent_name": "w", "restart_count": 1, "exit_code": 3},
         "source_agent_id": 4, "timestamp": 1700000000000},
        {"type": "CUSTOM", "data": null, "source_agent_id": 2, "timestamp": 1700000000001}]}"#;
    let back = decode_reply::<PollEventsReply>(Codec::Json, original)
        .unwrap()
        .unwrap();
    assert_eq!(back.count, 2);
    assert_eq!(
        EventType::parse(&back.events[0].event_type),
        Some(EventType::AgentRestarting)
    );
    assert_eq!(back.events[0].data.0["restart_count"], 1);
    assert_eq!(back.events[1].data, Json(Value::Null));
    assert_eq!(back.events[1].timestamp, 1_700_000_000_001);
}

// ---------------------------------------------------------------- EMIT

#[test]
fn emit_golden() {
    // `data` defaults to null and is always written: "null" is 4 bytes of JSON text.
    golden(
        &EmitRequest::default(),
        r#"{"data":null}"#,
        "00  00  04 6e 75 6c 6c",
    );
    // What the SDK sends: `{"k":1}` is 7 bytes of JSON text.
    golden(
        &EmitRequest {
            event_type: Some("CUSTOM".into()),
            event: None,
            data: Json(json!({"k": 1})),
        },
        r#"{"event_type":"CUSTOM","data":{"k":1}}"#,
        &format!("01 {CUSTOM}  00  07 7b 22 6b 22 3a 31 7d"),
    );
    golden(
        &EmitRequest {
            event_type: Some("CUSTOM".into()),
            event: Some("OLD".into()),
            data: Json(json!([1])),
        },
        r#"{"event_type":"CUSTOM","event":"OLD","data":[1]}"#,
        &format!("01 {CUSTOM}  01 03 4f 4c 44  03 5b 31 5d"),
    );
}

#[test]
fn emit_as_the_original_sdk_sends_it() {
    let e: EmitRequest = parse(r#"{"event_type": "CUSTOM", "data": {"progress": 0.5}}"#);
    assert_eq!(e.event_type(), Some("CUSTOM"));
    assert_eq!(e.data, Json(json!({"progress": 0.5})));
    // The field the original kernel read.
    let e: EmitRequest = parse(r#"{"event": "CUSTOM", "data": {}}"#);
    assert_eq!(e.event_type(), Some("CUSTOM"));
    // Both: event_type wins. No data: null.
    let e: EmitRequest = parse(r#"{"event": "OLD", "event_type": "NEW"}"#);
    assert_eq!(e.event_type(), Some("NEW"));
    assert_eq!(e.data, Json(Value::Null));
    let e: EmitRequest = parse(r#"{"event_type": null, "event": null, "data": 3}"#);
    assert_eq!(e.event_type(), None);
    assert_eq!(e.data, Json(json!(3)));
}

#[test]
fn emit_rejections_name_the_field() {
    let e = reject::<EmitRequest>(r#"{"event_type": 3}"#);
    assert!(
        e.starts_with("event_type: invalid type: integer `3`, expected a string"),
        "{e}"
    );
    let e = reject::<EmitRequest>(r#"{"event": {"name": "CUSTOM"}}"#);
    assert!(
        e.starts_with("event: invalid type: map, expected a string"),
        "{e}"
    );
}

#[test]
fn emit_reply_has_the_original_keys() {
    let r = EmitReply {
        success: true,
        event: "CUSTOM".into(),
    };
    assert_eq!(sent(&r), json!({"success": true, "event": "CUSTOM"}));
    assert_eq!(
        encode(Codec::Postcard, &r).unwrap(),
        hex(&format!("01 {CUSTOM}"))
    );
    let back = decode_reply::<EmitReply>(Codec::Json, br#"{"success": true, "event": "CUSTOM"}"#)
        .unwrap()
        .unwrap();
    assert_eq!(back, r);
}
