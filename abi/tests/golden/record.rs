//! RECORD_START, RECORD_STOP, RECORD_STATUS, REPLAY_START, REPLAY_STATUS.

use clove_abi::codec::encode;
use clove_abi::msg::{
    RecordStartReply, RecordStartRequest, RecordStatusReply, RecordStatusRequest, RecordStopReply,
    RecordStopRequest, RecordingState, ReplayStartReply, ReplayStartRequest, ReplayState,
    ReplayStatusReply, ReplayStatusRequest, DEFAULT_RECORD_MAX_ENTRIES,
};
use clove_abi::Codec;
use serde_json::json;

use crate::{golden, hex, parse, read, reject, sent};

// ---------------------------------------------------------------- RECORD_START

#[test]
fn record_start_golden() {
    // Defaults: three `true`s, filter_agents None (tag 00), max_entries 10000 = varint 90 4e.
    golden(
        &RecordStartRequest::default(),
        r#"{"include_think":true,"include_http":true,"include_exec":true,"max_entries":10000}"#,
        "01 01 01  00  90 4e",
    );
    // filter_agents Some([3, 300]): tag 01, length 02, 03, 300 = varint ac 02; 500 = f4 03.
    golden(
        &RecordStartRequest {
            include_think: false,
            include_http: true,
            include_exec: false,
            filter_agents: Some(vec![3, 300]),
            max_entries: 500,
        },
        r#"{"include_think":false,"include_http":true,"include_exec":false,"filter_agents":[3,300],"max_entries":500}"#,
        "00 01 00  01 02 03 ac 02  f4 03",
    );
}

#[test]
fn record_start_as_the_original_sdk_sends_it() {
    let r: RecordStartRequest = parse(
        r#"{"include_think": true, "include_http": true, "include_exec": true,
            "filter_agents": null, "max_entries": 10000}"#,
    );
    assert_eq!(r, RecordStartRequest::default());
    let r: RecordStartRequest = parse("");
    assert_eq!(r, RecordStartRequest::default());
    assert_eq!(r.max_entries, DEFAULT_RECORD_MAX_ENTRIES);
    assert!(r.records_agent(1) && r.records_agent(99));
    let r: RecordStartRequest = parse(
        r#"{"include_think": false, "include_exec": false, "filter_agents": [2, 5], "max_entries": 50}"#,
    );
    assert!(!r.include_think && r.include_http && !r.include_exec);
    assert_eq!(r.filter_agents, Some(vec![2, 5]));
    assert_eq!(r.max_entries, 50);
    assert!(r.records_agent(2) && r.records_agent(5) && !r.records_agent(3));
    // An empty filter records everyone, as an absent one.
    let r: RecordStartRequest = parse(r#"{"filter_agents": []}"#);
    assert!(r.records_agent(3));
}

#[test]
fn record_start_rejections_name_the_field() {
    let e = reject::<RecordStartRequest>(r#"{"max_entries": "many"}"#);
    assert!(
        e.starts_with(r#"max_entries: invalid type: string "many", expected u64"#),
        "{e}"
    );
    let e = reject::<RecordStartRequest>(r#"{"include_think": "yes"}"#);
    assert!(
        e.starts_with(r#"include_think: invalid type: string "yes", expected a boolean"#),
        "{e}"
    );
    let e = reject::<RecordStartRequest>(r#"{"filter_agents": [1, -2]}"#);
    assert!(
        e.starts_with("filter_agents[1]: invalid value: integer `-2`, expected u32"),
        "{e}"
    );
    let e = reject::<RecordStartRequest>(r#"{"filter_agents": 3}"#);
    assert!(
        e.starts_with("filter_agents: invalid type: integer `3`, expected a sequence"),
        "{e}"
    );
}

#[test]
fn record_start_reply_has_the_original_keys() {
    let r = RecordStartReply {
        success: true,
        recording: true,
    };
    assert_eq!(sent(&r), json!({"success": true, "recording": true}));
    assert_eq!(encode(Codec::Postcard, &r).unwrap(), hex("01 01"));
    let back: RecordStartReply = read(r#"{"success": true, "recording": true}"#);
    assert_eq!(back, r);
}

// ---------------------------------------------------------------- RECORD_STOP

#[test]
fn record_stop_golden() {
    golden(&RecordStopRequest {}, "{}", "");
    let _: RecordStopRequest = parse("");
    let _: RecordStopRequest = parse("{}");
}

#[test]
fn record_stop_reply_has_the_original_keys() {
    let r = RecordStopReply {
        success: true,
        recording: false,
        entries_recorded: 42,
    };
    assert_eq!(
        sent(&r),
        json!({"success": true, "recording": false, "entries_recorded": 42})
    );
    assert_eq!(encode(Codec::Postcard, &r).unwrap(), hex("01 00 2a"));
    let back: RecordStopReply =
        read(r#"{"success": true, "recording": false, "entries_recorded": 42}"#);
    assert_eq!(back, r);
}

// ---------------------------------------------------------------- RECORD_STATUS

#[test]
fn record_status_golden() {
    golden(
        &RecordStatusRequest { export: false },
        r#"{"export":false}"#,
        "00",
    );
    golden(
        &RecordStatusRequest { export: true },
        r#"{"export":true}"#,
        "01",
    );
}

#[test]
fn record_status_as_the_original_sdk_sends_it() {
    let r: RecordStatusRequest = parse("{}");
    assert!(!r.export);
    let r: RecordStatusRequest = parse("");
    assert!(!r.export);
    let r: RecordStatusRequest = parse(r#"{"export": true}"#);
    assert!(r.export);
}

#[test]
fn record_status_rejections_name_the_field() {
    let e = reject::<RecordStatusRequest>(r#"{"export": 1}"#);
    assert!(
        e.starts_with("export: invalid type: integer `1`, expected a boolean"),
        "{e}"
    );
}

#[test]
fn recording_states_are_upper_case() {
    for (state, text) in [
        (RecordingState::Idle, "IDLE"),
        (RecordingState::Recording, "RECORDING"),
        (RecordingState::Paused, "PAUSED"),
    ] {
        assert_eq!(state.as_str(), text);
        assert_eq!(RecordingState::parse(text), Some(state));
        assert_eq!(serde_json::to_value(state).unwrap(), json!(text));
    }
    assert_eq!(RecordingState::ALL.len(), 3);
    assert_eq!(RecordingState::parse("idle"), None);
    assert_eq!(RecordingState::default(), RecordingState::Idle);
}

#[test]
fn record_status_reply_has_the_original_keys() {
    // Without export: no `recording_data`; state RECORDING is variant index 1.
    let r = RecordStatusReply {
        success: true,
        state: RecordingState::Recording,
        recording: true,
        entry_count: 3,
        recording_data: None,
    };
    assert_eq!(
        sent(&r),
        json!({"success": true, "state": "RECORDING", "recording": true, "entry_count": 3})
    );
    assert_eq!(encode(Codec::Postcard, &r).unwrap(), hex("01 01 01 03 00"));
    // With export: IDLE (index 0), the data as a string `[]` (tag 01, length 02, 5b 5d).
    let r = RecordStatusReply {
        success: true,
        state: RecordingState::Idle,
        recording: false,
        entry_count: 2,
        recording_data: Some("[]".into()),
    };
    assert_eq!(
        sent(&r),
        json!({"success": true, "state": "IDLE", "recording": false, "entry_count": 2,
               "recording_data": "[]"})
    );
    assert_eq!(
        encode(Codec::Postcard, &r).unwrap(),
        hex("01 00 00 02 01 02 5b 5d")
    );
    let back: RecordStatusReply = read(
        r#"{"success": true, "state": "PAUSED", "recording": false, "entry_count": 5,
            "recording_data": "{\"entries\": []}"}"#,
    );
    assert_eq!(back.state, RecordingState::Paused);
    assert_eq!(back.entry_count, 5);
    assert_eq!(back.recording_data.as_deref(), Some(r#"{"entries": []}"#));
}

// ---------------------------------------------------------------- REPLAY_START

#[test]
fn replay_start_golden() {
    golden(&ReplayStartRequest::default(), "{}", "00 00");
    // The SDK's shape: recording "{}" (tag 01, length 02, 7b 7d), recording_data None.
    golden(
        &ReplayStartRequest::new("{}"),
        r#"{"recording":"{}"}"#,
        "01 02 7b 7d  00",
    );
    golden(
        &ReplayStartRequest {
            recording: Some("[1]".into()),
            recording_data: Some("x".into()),
        },
        r#"{"recording":"[1]","recording_data":"x"}"#,
        "01 03 5b 31 5d  01 01 78",
    );
}

#[test]
fn replay_start_accepts_both_names() {
    // The SDK's name.
    let r: ReplayStartRequest = parse(r#"{"recording": "{\"entries\": []}"}"#);
    assert_eq!(r.recording(), Some(r#"{"entries": []}"#));
    // The name the original kernel read.
    let r: ReplayStartRequest = parse(r#"{"recording_data": "[1]"}"#);
    assert_eq!(r.recording(), Some("[1]"));
    // Both: `recording` wins.
    let r: ReplayStartRequest = parse(r#"{"recording": "a", "recording_data": "b"}"#);
    assert_eq!(r.recording(), Some("a"));
    // An empty string counts as absent.
    let r: ReplayStartRequest = parse(r#"{"recording": "", "recording_data": "b"}"#);
    assert_eq!(r.recording(), Some("b"));
    let r: ReplayStartRequest = parse(r#"{"recording": ""}"#);
    assert_eq!(r.recording(), None);
    let r: ReplayStartRequest = parse(r#"{"recording": null}"#);
    assert_eq!(r.recording(), None);
    let r: ReplayStartRequest = parse("{}");
    assert_eq!(r.recording(), None);
}

#[test]
fn replay_start_rejections_name_the_field() {
    let e = reject::<ReplayStartRequest>(r#"{"recording": {"entries": []}}"#);
    assert!(
        e.starts_with("recording: invalid type: map, expected a string"),
        "{e}"
    );
    let e = reject::<ReplayStartRequest>(r#"{"recording_data": 5}"#);
    assert!(
        e.starts_with("recording_data: invalid type: integer `5`, expected a string"),
        "{e}"
    );
}

#[test]
fn replay_start_reply_has_the_original_keys() {
    let r = ReplayStartReply {
        success: true,
        total_entries: 12,
    };
    assert_eq!(sent(&r), json!({"success": true, "total_entries": 12}));
    assert_eq!(encode(Codec::Postcard, &r).unwrap(), hex("01 0c"));
    let back: ReplayStartReply = read(r#"{"success": true, "total_entries": 12}"#);
    assert_eq!(back, r);
}

// ---------------------------------------------------------------- REPLAY_STATUS

#[test]
fn replay_status_golden() {
    golden(&ReplayStatusRequest {}, "{}", "");
    let _: ReplayStatusRequest = parse("");
}

#[test]
fn replay_states_are_upper_case() {
    for (state, text) in [
        (ReplayState::Idle, "IDLE"),
        (ReplayState::Running, "RUNNING"),
        (ReplayState::Paused, "PAUSED"),
        (ReplayState::Completed, "COMPLETED"),
        (ReplayState::Error, "ERROR"),
    ] {
        assert_eq!(state.as_str(), text);
        assert_eq!(ReplayState::parse(text), Some(state));
        assert_eq!(serde_json::to_value(state).unwrap(), json!(text));
    }
    assert_eq!(ReplayState::ALL.len(), 5);
    assert_eq!(ReplayState::parse("DONE"), None);
}

#[test]
fn replay_status_reply_has_the_original_keys() {
    // RUNNING is index 1; 50.0 is f64 0x4049000000000000, little-endian; no last_error.
    let r = ReplayStatusReply {
        success: true,
        state: ReplayState::Running,
        progress_percent: 50.0,
        entries_replayed: 5,
        entries_skipped: 1,
        last_error: None,
    };
    assert_eq!(
        sent(&r),
        json!({"success": true, "state": "RUNNING", "progress_percent": 50.0,
               "entries_replayed": 5, "entries_skipped": 1})
    );
    assert_eq!(
        encode(Codec::Postcard, &r).unwrap(),
        hex("01 01  00 00 00 00 00 00 49 40  05 01  00")
    );
    // ERROR is index 4; last_error "boom".
    let r = ReplayStatusReply {
        state: ReplayState::Error,
        last_error: Some("boom".into()),
        ..r
    };
    assert_eq!(
        sent(&r),
        json!({"success": true, "state": "ERROR", "progress_percent": 50.0,
               "entries_replayed": 5, "entries_skipped": 1, "last_error": "boom"})
    );
    assert_eq!(
        encode(Codec::Postcard, &r).unwrap(),
        hex("01 04  00 00 00 00 00 00 49 40  05 01  01 04 62 6f 6f 6d")
    );
    // An integer percentage, as a Python kernel would write it.
    let back: ReplayStatusReply = read(
        r#"{"success": true, "state": "COMPLETED", "progress_percent": 100,
            "entries_replayed": 10, "entries_skipped": 0}"#,
    );
    assert_eq!(back.state, ReplayState::Completed);
    assert_eq!(back.progress_percent, 100.0);
    assert_eq!((back.entries_replayed, back.last_error), (10, None));
}
