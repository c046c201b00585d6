#![allow(clippy::unwrap_used)]

use serde_json::json;

use super::*;

fn who(id: u32, agent: bool, uid: u32, owner_uid: Option<u32>) -> Who {
    Who {
        id,
        agent,
        uid,
        owner_uid,
        name: agent.then(|| format!("agent-{id}")),
    }
}

fn outcome(key: &str) -> Outcome {
    Outcome {
        request: json!({"key": key, "value": 1}),
        reply: json!({"success": true, "key": key, "version": 1}),
        ok: true,
        error_code: None,
    }
}

fn caller(id: u32, agent: bool, uid: u32) -> Caller {
    Caller {
        id,
        agent,
        uid,
        gid: uid,
        pid: None,
    }
}

const ROOT_OP: Owner = Owner {
    id: 1,
    agent: false,
    uid: 0,
};

fn entries(r: &Recorder) -> Vec<Entry> {
    lock(&r.rec)
        .session
        .as_ref()
        .map(|s| s.recording.entries.clone())
        .unwrap_or_default()
}

#[test]
fn nothing_is_recorded_while_idle() {
    let r = Recorder::new();
    assert!(!r.wants(Opcode::Store.as_u8()));
    assert!(!r.offer(&who(5, true, 0, Some(0)), Opcode::Store, outcome("k")));
    assert_eq!(lock(&r.rec).state, RecordingState::Idle);
}

#[test]
fn recorded_opcodes_and_include_flags() {
    let r = Recorder::new();
    r.start(
        ROOT_OP,
        RecordStartRequest {
            include_think: false,
            include_http: true,
            include_exec: false,
            ..RecordStartRequest::default()
        },
    )
    .unwrap();
    assert!(r.wants(Opcode::Store.as_u8()));
    assert!(r.wants(Opcode::Spawn.as_u8()));
    assert!(!r.wants(Opcode::Fetch.as_u8()), "reads are not recorded");
    assert!(!r.wants(Opcode::RecordStatus.as_u8()));
    let w = who(7, false, 0, None);
    assert!(r.offer(&w, Opcode::Store, outcome("a")));
    assert!(r.offer(&w, Opcode::Kill, outcome("b")));
    assert!(r.offer(&w, Opcode::Http, outcome("c")));
    assert!(
        !r.offer(&w, Opcode::Think, outcome("d")),
        "include_think off"
    );
    assert!(!r.offer(&w, Opcode::Exec, outcome("e")), "include_exec off");
    assert!(
        !r.offer(&w, Opcode::Keys, outcome("f")),
        "KEYS is never recorded"
    );
    let got = entries(&r);
    assert_eq!(
        got.iter()
            .map(|e| (e.seq, e.op.as_str()))
            .collect::<Vec<_>>(),
        vec![(1, "STORE"), (2, "KILL"), (3, "HTTP")]
    );
    assert_eq!(got[0].caller.id, 7);
}

#[test]
fn filter_agents_limits_the_callers() {
    let r = Recorder::new();
    r.start(
        ROOT_OP,
        RecordStartRequest {
            filter_agents: Some(vec![5]),
            ..RecordStartRequest::default()
        },
    )
    .unwrap();
    assert!(r.offer(&who(5, true, 0, Some(0)), Opcode::Store, outcome("a")));
    assert!(!r.offer(&who(6, true, 0, Some(0)), Opcode::Store, outcome("b")));
    assert!(!r.offer(&who(9, false, 0, None), Opcode::Store, outcome("c")));
    assert_eq!(entries(&r).len(), 1);
}

#[test]
fn a_non_root_operator_records_only_its_own_uid_and_agents() {
    let r = Recorder::new();
    let owner = Owner {
        id: 3,
        agent: false,
        uid: 1000,
    };
    r.start(owner, RecordStartRequest::default()).unwrap();
    assert!(r.offer(&who(3, false, 1000, None), Opcode::Store, outcome("own")));
    assert!(r.offer(
        &who(4, true, 60000, Some(1000)),
        Opcode::Store,
        outcome("its agent")
    ));
    assert!(!r.offer(&who(8, false, 0, None), Opcode::Store, outcome("root's")));
    assert!(!r.offer(
        &who(9, true, 60001, Some(1001)),
        Opcode::Store,
        outcome("another's")
    ));
    assert_eq!(entries(&r).len(), 2);
    // Another uid may neither stop nor export it; root may.
    let other = caller(11, false, 1001);
    assert_eq!(
        r.stop(&other).unwrap_err().code,
        ErrorCode::PermissionDenied
    );
    assert_eq!(
        r.status(&other, true).unwrap_err().code,
        ErrorCode::PermissionDenied
    );
    assert!(r.status(&other, false).is_ok(), "the state is no secret");
    assert!(r.status(&caller(12, false, 0), true).is_ok());
    assert_eq!(r.stop(&caller(13, false, 1000)).unwrap(), 2);
}

#[test]
fn an_agent_records_only_itself() {
    let r = Recorder::new();
    let owner = Owner {
        id: 5,
        agent: true,
        uid: 60000,
    };
    r.start(
        owner,
        RecordStartRequest {
            filter_agents: Some(vec![5]),
            ..RecordStartRequest::default()
        },
    )
    .unwrap();
    assert!(r.offer(&who(5, true, 60000, Some(0)), Opcode::Store, outcome("a")));
    assert!(!r.offer(&who(1, false, 0, None), Opcode::Store, outcome("b")));
    // Another agent, and an operator, cannot stop it; root operators can.
    assert!(r.stop(&caller(6, true, 60000)).is_err());
    assert!(r.stop(&caller(2, false, 1000)).is_err());
    assert_eq!(r.stop(&caller(5, true, 60000)).unwrap(), 1);
}

#[test]
fn max_entries_pauses_and_marks_the_recording_truncated() {
    let r = Recorder::new();
    r.start(
        ROOT_OP,
        RecordStartRequest {
            max_entries: 2,
            ..RecordStartRequest::default()
        },
    )
    .unwrap();
    let w = who(7, false, 0, None);
    assert!(r.offer(&w, Opcode::Store, outcome("a")));
    assert!(r.offer(&w, Opcode::Store, outcome("b")));
    assert!(!r.offer(&w, Opcode::Store, outcome("c")), "full");
    assert!(!r.wants(Opcode::Store.as_u8()));
    let status = r.status(&caller(1, false, 0), true).unwrap();
    assert_eq!(status.state, RecordingState::Paused);
    assert!(!status.recording);
    assert_eq!(status.entry_count, 2);
    let rec = Recording::parse(status.recording_data.as_deref().unwrap()).unwrap();
    assert!(rec.truncated);
    // A new start is refused until it is stopped.
    assert_eq!(
        r.start(ROOT_OP, RecordStartRequest::default())
            .unwrap_err()
            .code,
        ErrorCode::Conflict
    );
    assert_eq!(r.stop(&caller(1, false, 0)).unwrap(), 2);
    assert_eq!(lock(&r.rec).state, RecordingState::Idle);
    r.start(ROOT_OP, RecordStartRequest::default()).unwrap();
    assert_eq!(entries(&r).len(), 0, "a new start begins a new recording");
}

#[test]
fn max_entries_out_of_range_is_refused() {
    let r = Recorder::new();
    for max in [0, MAX_ENTRIES_LIMIT + 1] {
        let e = r
            .start(
                ROOT_OP,
                RecordStartRequest {
                    max_entries: max,
                    ..RecordStartRequest::default()
                },
            )
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRequest, "{max}");
        assert!(e.message.contains("max_entries"), "{}", e.message);
    }
}

#[test]
fn export_round_trips_with_its_format_version() {
    let r = Recorder::new();
    r.start(ROOT_OP, RecordStartRequest::default()).unwrap();
    r.offer(&who(5, true, 0, Some(0)), Opcode::Store, outcome("a"));
    r.offer(
        &who(9, false, 0, None),
        Opcode::Delete,
        Outcome {
            request: json!({"key": "a"}),
            reply: json!({"success": false, "error": "x", "code": "not_found"}),
            ok: false,
            error_code: Some("not_found".into()),
        },
    );
    let text = r
        .status(&caller(1, false, 0), true)
        .unwrap()
        .recording_data
        .unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["format"], FORMAT);
    assert_eq!(v["version"], FORMAT_VERSION);
    assert_eq!(v["entries"][0]["caller"]["name"], "agent-5");
    assert_eq!(v["entries"][1]["error_code"], "not_found");
    let back = Recording::parse(&text).unwrap();
    assert_eq!(back.entries, entries(&r));
    assert_eq!(back.export(), text);
}

#[test]
fn parse_refuses_other_formats_versions_and_disorder() {
    let good = Recording::new(RecordStartRequest::default());
    let mut v = serde_json::to_value(&good).unwrap();
    v["version"] = json!(2);
    let e = Recording::parse(&v.to_string()).unwrap_err();
    assert!(e.message.contains("version Some(2)"), "{}", e.message);
    v["version"] = json!(1);
    v["format"] = json!("other");
    assert!(Recording::parse(&v.to_string()).is_err());
    assert!(Recording::parse("{}").is_err());
    assert!(Recording::parse("not json").is_err());
    let entry = |seq: u64| {
        json!({"seq": seq, "t_ms": 0, "caller": {"id": 1, "agent": false, "uid": 0},
               "opcode": 0x30, "op": "STORE", "request": {}, "ok": true, "reply": {}})
    };
    v["format"] = json!(FORMAT);
    v["entries"] = json!([entry(2), entry(1)]);
    let e = Recording::parse(&v.to_string()).unwrap_err();
    assert!(e.message.contains("increasing seq"), "{}", e.message);
    v["entries"] = json!([entry(1), entry(3)]);
    assert_eq!(Recording::parse(&v.to_string()).unwrap().entries.len(), 2);
}

#[test]
fn postcard_requests_are_recorded_as_json() {
    let req = clove_abi::msg::StoreRequest {
        key: "k".into(),
        value: clove_abi::Json(json!({"n": 1})),
        scope: clove_abi::msg::StateScope::Agent,
        ttl: Some(5.0),
        if_version: Some(0),
    };
    let bytes = codec::encode(Codec::Postcard, &req).unwrap();
    let from_postcard = request_json(Opcode::Store, Codec::Postcard, &bytes).unwrap();
    let json_bytes = codec::encode(Codec::Json, &req).unwrap();
    let from_json = request_json(Opcode::Store, Codec::Json, &json_bytes).unwrap();
    assert_eq!(from_postcard, from_json);
    assert_eq!(from_json["value"], json!({"n": 1}));
    assert_eq!(from_json["if_version"], 0);
    // A reply too, and an error reply as its JSON error object.
    let reply = codec::encode_reply(
        Codec::Postcard,
        0x30,
        Ok::<_, &WireError>(&clove_abi::msg::StoreReply {
            success: true,
            key: "k".into(),
            version: Some(1),
        }),
    )
    .unwrap();
    assert_eq!(
        reply_json(Opcode::Store, Codec::Postcard, &reply).unwrap()["version"],
        1
    );
    let err = WireError::new(ErrorCode::Conflict, "no");
    let reply = codec::encode_reply::<clove_abi::msg::StoreReply>(Codec::Postcard, 0x30, Err(&err))
        .unwrap();
    assert_eq!(
        reply_json(Opcode::Store, Codec::Postcard, &reply).unwrap()["code"],
        "conflict"
    );
}

#[test]
fn http_header_values_are_redacted() {
    let req = json!({"url": "http://127.0.0.1/", "headers": {"Authorization": "Bearer s3cret"}});
    let v = request_json(Opcode::Http, Codec::Json, req.to_string().as_bytes()).unwrap();
    assert_eq!(v["headers"]["Authorization"], "<redacted>");
    assert!(!v.to_string().contains("s3cret"));
}

#[test]
fn divergence_compares_outcome_and_id_free_fields() {
    let e = Entry {
        seq: 4,
        t_ms: 0,
        caller: RecordedCaller {
            id: 9,
            agent: false,
            name: None,
            uid: 0,
        },
        opcode: 0x30,
        op: "STORE".into(),
        request: json!({}),
        ok: true,
        error_code: None,
        reply: json!({"success": true, "key": "k", "version": 2}),
    };
    assert_eq!(
        diverges(
            &e,
            true,
            &json!({"success": true, "key": "k", "version": 2})
        ),
        None
    );
    let d = diverges(
        &e,
        true,
        &json!({"success": true, "key": "k", "version": 3}),
    )
    .unwrap();
    assert!(d.contains("entry 4 (STORE") && d.contains("version"), "{d}");
    let d = diverges(
        &e,
        false,
        &json!({"success": false, "code": "conflict", "error": "x"}),
    )
    .unwrap();
    assert!(d.contains("conflict"), "{d}");
    // Ids are expected to differ.
    let send = Entry {
        opcode: 0x20,
        op: "SEND".into(),
        reply: json!({"success": true, "delivered_to": 5}),
        ..e
    };
    assert_eq!(
        diverges(&send, true, &json!({"success": true, "delivered_to": 77})),
        None
    );
}

#[test]
fn replay_progress_percent() {
    let mut p = Progress {
        state: ReplayState::Running,
        total: 4,
        replayed: 1,
        skipped: 1,
        ..Progress::default()
    };
    assert_eq!(p.reply().progress_percent, 50.0);
    p.replayed = 3;
    assert_eq!(p.reply().progress_percent, 100.0);
    let empty = Progress {
        state: ReplayState::Completed,
        ..Progress::default()
    };
    assert_eq!(empty.reply().progress_percent, 100.0);
}

#[test]
fn a_second_replay_waits_for_the_first() {
    let r = Recorder::new();
    let rec = Recording::new(RecordStartRequest::default());
    assert_eq!(
        r.replay_start(&caller(1, false, 0), rec.clone()).unwrap(),
        0
    );
    assert_eq!(
        r.replay_start(&caller(1, false, 0), rec).unwrap_err().code,
        ErrorCode::Conflict
    );
}
