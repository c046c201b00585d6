//! SPAWN, KILL, LIST, PAUSE, RESUME.

use std::collections::BTreeMap;

use clove_abi::codec::{decode_reply, encode};
use clove_abi::msg::{
    AgentEntry, AgentRef, AgentState, Bind, ByteSize, CgroupStatus, CgroupVersion, Isolation,
    KillReply, KillRequest, Limits, ListReply, ListRequest, Namespaces, PauseReply, PauseRequest,
    PermissionLevel, RestartPolicy, ResumeReply, ResumeRequest, SpawnReply, SpawnRequest,
    SpawnStatus,
};
use clove_abi::Codec;
use serde_json::json;

use crate::{golden, hex, parse, postcard, reject, sent};

// ---------------------------------------------------------------- SPAWN

#[test]
fn spawn_minimal_golden() {
    golden(
        &SpawnRequest::new("w", "a.py"),
        r#"{"name":"w","script":"a.py","sandboxed":true,"network":false,"restart_policy":"never","max_restarts":5,"restart_window":300.0,"args":[],"env":{},"binds":[]}"#,
        "01 77
         04 61 2e 70 79
         01
         00
         00
         00
         05
         00 00 00 00 00 c0 72 40
         00
         00
         00
         00
         00
         00
         00
         00
         00
         00                          ",
    );
}

#[test]
fn spawn_full_golden_with_every_extension() {
    let req = SpawnRequest {
        name: "w".into(),
        script: "a.py".into(),
        sandboxed: false,
        network: true,
        limits: Some(Limits {
            memory: ByteSize(1 << 20),
            cpu_quota: 50_000,
            cpu_period: 100_000,
            cpu_shares: 512,
            max_pids: 16,
            cpu: Some(0.5),
            disk: Some(ByteSize(4096)),
        }),
        restart_policy: RestartPolicy::OnFailure,
        max_restarts: 3,
        restart_window: 2.5,
        python: Some("py".into()),
        args: vec!["-v".into()],
        env: BTreeMap::from([("K".to_owned(), "V".to_owned())]),
        interpreter: Some(String::new()),
        binds: vec![Bind {
            source: "/d".into(),
            target: None,
            writable: true,
        }],
        grace_ms: Some(200),
        permissions: None,
        level: None,
        group: Some("g".into()),
        restart_backoff_ms: Some(100),
    };
    golden(
        &req,
        r#"{"name":"w","script":"a.py","sandboxed":false,"network":true,"limits":{"memory":1048576,"cpu_quota":50000,"cpu_period":100000,"cpu_shares":512,"max_pids":16,"cpu":0.5,"disk":4096},"restart_policy":"on-failure","max_restarts":3,"restart_window":2.5,"python":"py","args":["-v"],"env":{"K":"V"},"interpreter":"","binds":[{"source":"/d","writable":true}],"grace_ms":200,"group":"g","restart_backoff_ms":100}"#,
        "01 77
         04 61 2e 70 79
         00
         01
         01
           80 80 40
           d0 86 03
           a0 8d 06
           80 04
           10
           01 00 00 00 00 00 00 e0 3f
           01 80 20
         01
         03
         00 00 00 00 00 00 04 40
         01 02 70 79
         01 02 2d 76
         01 01 4b 01 56
         01 00
         01 02 2f 64 00 01
         01 c8 01
         00
         00
         01 01 67
         01 64                          ",
    );
    // An empty interpreter runs the script itself.
    assert_eq!(req.interpreter(), None);
    assert_eq!(req.binds[0].target(), "/d");
    assert_eq!(req.limits().cpu_quota_period(), (50_000, 100_000));
}

#[test]
fn spawn_as_the_original_sdk_sends_it_takes_the_original_defaults() {
    let r: SpawnRequest = parse(r#"{"name": "worker", "script": "/tmp/worker.py"}"#);
    assert_eq!(r, SpawnRequest::new("worker", "/tmp/worker.py"));
    assert!(r.sandboxed);
    assert!(!r.network);
    assert_eq!(r.limits, None);
    assert_eq!(r.restart_policy, RestartPolicy::Never);
    assert_eq!(r.max_restarts, 5);
    assert_eq!(r.restart_window, 300.0);
    assert_eq!(r.interpreter(), Some("python3"));
    let l = r.limits();
    assert_eq!(l.memory.bytes(), 256 * 1024 * 1024);
    assert_eq!(
        (l.cpu_quota, l.cpu_period, l.cpu_shares, l.max_pids),
        (100_000, 100_000, 1024, 64)
    );
    assert_eq!((l.cpu, l.disk), (None, None));

    // Everything the original SDK's spawn() can send; `limits` partly given, `python` set,
    // an integer window, and `None`s sent as null.
    let r: SpawnRequest = parse(
        r#"{"name": "w", "script": "w.py", "sandboxed": false, "network": true,
            "limits": {"memory": 536870912, "max_pids": 10},
            "restart_policy": "always", "max_restarts": 2, "restart_window": 60,
            "python": "/usr/bin/python3.11", "group": null, "grace_ms": null}"#,
    );
    assert!(!r.sandboxed && r.network);
    let l = r.limits();
    assert_eq!((l.memory.bytes(), l.max_pids), (512 << 20, 10));
    assert_eq!(
        (l.cpu_quota, l.cpu_period, l.cpu_shares),
        (100_000, 100_000, 1024)
    );
    assert_eq!(r.restart_policy, RestartPolicy::Always);
    assert_eq!((r.max_restarts, r.restart_window), (2, 60.0));
    assert_eq!(r.interpreter(), Some("/usr/bin/python3.11"));
    assert_eq!((r.group, r.grace_ms), (None, None));

    // `limits: null` (a Python `limits=None` passed through) means the defaults.
    let r: SpawnRequest = parse(r#"{"name": "w", "script": "w.py", "limits": null}"#);
    assert_eq!(r.limits(), Limits::default());
}

#[test]
fn spawn_restart_policy_spellings() {
    for (text, policy) in [
        ("never", RestartPolicy::Never),
        ("on-failure", RestartPolicy::OnFailure),
        ("on_failure", RestartPolicy::OnFailure),
        ("always", RestartPolicy::Always),
        // OTP's restart types.
        ("temporary", RestartPolicy::Never),
        ("transient", RestartPolicy::OnFailure),
        ("permanent", RestartPolicy::Always),
    ] {
        let r: SpawnRequest = parse(&format!(
            r#"{{"name": "w", "script": "w.py", "restart_policy": "{text}"}}"#
        ));
        assert_eq!(r.restart_policy, policy, "{text}");
    }
    // The aliases are read, never written.
    assert_eq!(RestartPolicy::OnFailure.as_str(), "on-failure");
    for (policy, text) in [
        (RestartPolicy::Never, r#""never""#),
        (RestartPolicy::OnFailure, r#""on-failure""#),
        (RestartPolicy::Always, r#""always""#),
    ] {
        assert_eq!(serde_json::to_string(&policy).unwrap(), text);
    }
    // Anything else is refused, naming the accepted spellings.
    let e = serde_json::from_str::<SpawnRequest>(
        r#"{"name": "w", "script": "w.py", "restart_policy": "sometimes"}"#,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("sometimes") && e.contains("on-failure"), "{e}");
}

#[test]
fn spawn_extensions_parse() {
    let r: SpawnRequest = parse(
        r#"{"name": "w", "script": "run.sh",
            "limits": {"memory": "1.5G", "disk": "512MiB", "cpu": 0.25},
            "args": ["--fast", "x"], "env": {"A": "1"}, "interpreter": "bash",
            "binds": [{"source": "/data", "target": "/mnt/data"}, {"source": "/out", "writable": true}],
            "grace_ms": 500, "level": "standard", "permissions": null, "group": "pool",
            "restart_backoff_ms": 250}"#,
    );
    let l = r.limits();
    assert_eq!(l.memory, ByteSize(1_610_612_736));
    assert_eq!(l.disk, Some(ByteSize(512 << 20)));
    assert_eq!(l.cpu, Some(0.25));
    assert_eq!(l.cpu_quota_period(), (25_000, 100_000));
    assert_eq!(r.args, ["--fast", "x"]);
    assert_eq!(r.env.get("A").map(String::as_str), Some("1"));
    assert_eq!(r.interpreter(), Some("bash"));
    assert_eq!(r.binds[0].target(), "/mnt/data");
    assert!(!r.binds[0].writable);
    assert_eq!(r.binds[1].target(), "/out");
    assert!(r.binds[1].writable);
    assert_eq!(r.grace_ms, Some(500));
    assert_eq!(r.level, Some(PermissionLevel::Standard));
    assert_eq!(r.permissions, None);
    assert_eq!(r.group.as_deref(), Some("pool"));
    assert_eq!(r.restart_backoff_ms, Some(250));

    // Size units: powers of 1024 for K/M/G/T and KiB..TiB, of 1000 for KB..TB.
    for (text, bytes) in [
        (r#""1048576""#, 1u64 << 20),
        (r#""256M""#, 256 << 20),
        (r#""512KiB""#, 512 << 10),
        (r#""1GB""#, 1_000_000_000),
        (r#""2 g""#, 2 << 30),
        ("1073741824", 1 << 30),
    ] {
        let r: SpawnRequest = parse(&format!(
            r#"{{"name": "w", "script": "w.py", "limits": {{"memory": {text}}}}}"#
        ));
        assert_eq!(r.limits().memory.bytes(), bytes, "{text}");
    }
    // Python's `python=""` style: an empty `python` also runs the script itself.
    let r: SpawnRequest = parse(r#"{"name": "w", "script": "w", "python": ""}"#);
    assert_eq!(r.interpreter(), None);
}

#[test]
fn spawn_rejections_name_the_field() {
    let e =
        reject::<SpawnRequest>(r#"{"name": "w", "script": "w.py", "limits": {"memory": "lots"}}"#);
    assert!(
        e.starts_with(r#"limits.memory: invalid size "lots": unknown unit"#),
        "{e}"
    );
    let e = reject::<SpawnRequest>(r#"{"name": "w", "script": "w.py", "limits": {"memory": -5}}"#);
    assert!(
        e.starts_with("limits.memory: invalid size -5: negative"),
        "{e}"
    );
    let e =
        reject::<SpawnRequest>(r#"{"name": "w", "script": "w.py", "limits": {"max_pids": "x"}}"#);
    assert!(
        e.starts_with(r#"limits.max_pids: invalid type: string "x", expected u64"#),
        "{e}"
    );
    let e = reject::<SpawnRequest>(r#"{"name": "w", "script": "w.py", "sandboxed": "yes"}"#);
    assert!(
        e.starts_with(r#"sandboxed: invalid type: string "yes", expected a boolean"#),
        "{e}"
    );
    let e =
        reject::<SpawnRequest>(r#"{"name": "w", "script": "w.py", "restart_policy": "sometimes"}"#);
    assert!(
        e.starts_with("restart_policy: unknown variant `sometimes`, expected one of"),
        "{e}"
    );
    let e =
        reject::<SpawnRequest>(r#"{"name": "w", "script": "w.py", "binds": [{"target": "/x"}]}"#);
    assert!(e.starts_with("binds[0]: missing field `source`"), "{e}");
    let e = reject::<SpawnRequest>(r#"{"name": "w", "script": "w.py", "env": {"A": 1}}"#);
    assert!(e.starts_with("env.A: invalid type: integer `1`"), "{e}");
    let e = reject::<SpawnRequest>(r#"{"script": "w.py"}"#);
    assert!(e.starts_with("missing field `name`"), "{e}");
    let e = reject::<SpawnRequest>(r#"{"name": "w"}"#);
    assert!(e.starts_with("missing field `script`"), "{e}");
}

fn isolated() -> Isolation {
    Isolation {
        fully_isolated: true,
        namespaces: Namespaces {
            pid: true,
            net: true,
            mnt: true,
            uts: true,
        },
        cgroups: CgroupStatus {
            available: true,
            memory_limit: true,
            cpu_quota: true,
            pids_limit: true,
            version: None,
        },
        degraded_reason: None,
        not_applied: vec![],
    }
}

#[test]
fn spawn_reply_has_the_original_keys_and_no_success() {
    let reply = SpawnReply {
        id: 3,
        name: "w".into(),
        pid: 4242,
        status: SpawnStatus::Running,
        restart_policy: RestartPolicy::OnFailure,
        isolation: isolated(),
    };
    assert_eq!(
        sent(&reply),
        json!({
            "id": 3, "name": "w", "pid": 4242, "status": "running",
            "restart_policy": "on-failure",
            "isolation": {
                "fully_isolated": true,
                "namespaces": {"pid": true, "net": true, "mnt": true, "uts": true},
                "cgroups": {"available": true, "memory_limit": true, "cpu_quota": true, "pids_limit": true},
                "not_applied": []
            }
        })
    );
    assert_eq!(
        postcard(&reply),
        hex("03 01 77 a4 42 00 01   01 01 01 01 01   01 01 01 01 00   00 00")
    );

    // Degraded: the reason and our extensions appear.
    let mut degraded = reply.clone();
    degraded.isolation.fully_isolated = false;
    degraded.isolation.cgroups.memory_limit = false;
    degraded.isolation.cgroups.version = Some(CgroupVersion::Hybrid);
    degraded.isolation.degraded_reason = Some("memory controller not mounted".into());
    degraded.isolation.not_applied = vec!["memory".into()];
    let v = sent(&degraded);
    assert_eq!(
        v["isolation"],
        json!({
            "fully_isolated": false,
            "namespaces": {"pid": true, "net": true, "mnt": true, "uts": true},
            "cgroups": {"available": true, "memory_limit": false, "cpu_quota": true,
                        "pids_limit": true, "version": "hybrid"},
            "degraded_reason": "memory controller not mounted",
            "not_applied": ["memory"]
        })
    );
    // What the original kernel sent (no extensions) is read too.
    let original = br#"{"id": 3, "name": "w", "pid": 4242, "status": "running", "restart_policy": "never",
        "isolation": {"fully_isolated": false, "namespaces": {"pid": true, "net": true, "mnt": true, "uts": true},
        "cgroups": {"available": false, "memory_limit": false, "cpu_quota": false, "pids_limit": false},
        "degraded_reason": "cgroups unavailable"}}"#;
    let back = decode_reply::<SpawnReply>(Codec::Json, original)
        .unwrap()
        .unwrap();
    assert_eq!(back.id, 3);
    assert!(back.isolation.not_applied.is_empty());
    assert_eq!(back.isolation.cgroups.version, None);
}

// ---------------------------------------------------------------- KILL, PAUSE, RESUME

#[test]
fn kill_pause_resume_golden() {
    golden(
        &KillRequest {
            id: Some(3),
            name: None,
        },
        r#"{"id":3}"#,
        "01 03 00",
    );
    golden(
        &KillRequest {
            id: None,
            name: Some("w".into()),
        },
        r#"{"name":"w"}"#,
        "00 01 01 77",
    );
    golden(
        &PauseRequest {
            id: Some(300),
            name: None,
        },
        r#"{"id":300}"#,
        "01 ac 02 00",
    );
    golden(
        &ResumeRequest {
            id: None,
            name: Some("w".into()),
        },
        r#"{"name":"w"}"#,
        "00 01 01 77",
    );
}

#[test]
fn kill_pause_resume_take_id_or_name() {
    let k: KillRequest = parse(r#"{"id": 3}"#);
    assert_eq!(k.target(), Some(AgentRef::Id(3)));
    let k: KillRequest = parse(r#"{"name": "w"}"#);
    assert_eq!(k.target(), Some(AgentRef::Name("w")));
    // Both: the id wins. A null id (Python None) is absent.
    let k: KillRequest = parse(r#"{"id": 3, "name": "w"}"#);
    assert_eq!(k.target(), Some(AgentRef::Id(3)));
    let k: KillRequest = parse(r#"{"id": null, "name": "w"}"#);
    assert_eq!(k.target(), Some(AgentRef::Name("w")));
    // Neither: decodes; the kernel answers "KILL needs id or name".
    let k: KillRequest = parse("{}");
    assert_eq!(k.target(), None);

    let p: PauseRequest = parse(r#"{"name": "w"}"#);
    assert_eq!(p.target(), Some(AgentRef::Name("w")));
    let p: PauseRequest = parse(r#"{"id": 0}"#);
    assert_eq!(p.target(), Some(AgentRef::Id(0)));
    let r: ResumeRequest = parse(r#"{"id": 9, "name": "w"}"#);
    assert_eq!(r.target(), Some(AgentRef::Id(9)));
    let r: ResumeRequest = parse("");
    assert_eq!(r.target(), None);
}

#[test]
fn kill_pause_resume_rejections_name_the_field() {
    let e = reject::<KillRequest>(r#"{"id": "3"}"#);
    assert!(
        e.starts_with(r#"id: invalid type: string "3", expected u32"#),
        "{e}"
    );
    let e = reject::<PauseRequest>(r#"{"id": -1}"#);
    assert!(
        e.starts_with("id: invalid value: integer `-1`, expected u32"),
        "{e}"
    );
    let e = reject::<ResumeRequest>(r#"{"name": 7}"#);
    assert!(
        e.starts_with("name: invalid type: integer `7`, expected a string"),
        "{e}"
    );
}

#[test]
fn kill_pause_resume_replies_have_the_original_keys() {
    let k = KillReply {
        success: true,
        killed: true,
        agent_id: 3,
    };
    assert_eq!(
        sent(&k),
        json!({"success": true, "killed": true, "agent_id": 3})
    );
    assert_eq!(postcard(&k), hex("01 01 03"));
    let p = PauseReply {
        success: true,
        paused: true,
        agent_id: 3,
    };
    assert_eq!(
        sent(&p),
        json!({"success": true, "paused": true, "agent_id": 3})
    );
    let r = ResumeReply {
        success: true,
        resumed: true,
        agent_id: 3,
    };
    assert_eq!(
        sent(&r),
        json!({"success": true, "resumed": true, "agent_id": 3})
    );
}

// ---------------------------------------------------------------- LIST

#[test]
fn list_request_is_empty() {
    golden(&ListRequest::default(), r#"{"detail":false}"#, "00");
    golden(&ListRequest { detail: true }, r#"{"detail":true}"#, "01");
    // The original SDK sends LIST with an empty payload.
    let l: ListRequest = parse("");
    assert!(!l.detail);
}

#[test]
fn list_reply_is_a_json_array() {
    let reply = ListReply(vec![
        AgentEntry {
            id: 1,
            name: "w".into(),
            pid: 1234,
            state: AgentState::Running,
            running: true,
            restarts: None,
            uptime_ms: None,
            group: None,
            isolation: None,
            exit: None,
        },
        AgentEntry {
            id: 2,
            name: "p".into(),
            pid: 99,
            state: AgentState::Paused,
            running: true,
            restarts: Some(1),
            uptime_ms: Some(1500),
            group: Some("g".into()),
            isolation: None,
            exit: Some("exited with code 0".into()),
        },
    ]);
    let text = encode(Codec::Json, &reply).unwrap();
    assert_eq!(
        std::str::from_utf8(&text).unwrap(),
        r#"[{"id":1,"name":"w","pid":1234,"state":"RUNNING","running":true},{"id":2,"name":"p","pid":99,"state":"PAUSED","running":true,"restarts":1,"uptime_ms":1500,"group":"g","exit":"exited with code 0"}]"#
    );
    // postcard: the Vec itself (transparent), i32 pids zigzag-encoded.
    assert_eq!(
        postcard(&reply),
        hex("02
             01 01 77 a4 13 02 01 00 00 00 00 00
             02 01 70 c6 01 03 01 01 01 01 dc 0b 01 01 67 00
             01 12 65 78 69 74 65 64 20 77 69 74 68 20 63 6f 64 65 20 30")
    );
    let back = decode_reply::<ListReply>(Codec::Json, &text)
        .unwrap()
        .unwrap();
    assert_eq!(back, reply);
    assert_eq!(sent(&ListReply::default()), json!([]));
}

#[test]
fn agent_states_are_upper_case() {
    for (state, text) in [
        (AgentState::Created, "CREATED"),
        (AgentState::Starting, "STARTING"),
        (AgentState::Running, "RUNNING"),
        (AgentState::Paused, "PAUSED"),
        (AgentState::Stopping, "STOPPING"),
        (AgentState::Stopped, "STOPPED"),
        (AgentState::Failed, "FAILED"),
    ] {
        assert_eq!(sent(&state), json!(text));
        assert_eq!(state.as_str(), text);
        assert_eq!(
            serde_json::from_value::<AgentState>(json!(text)).unwrap(),
            state
        );
    }
}

// ---------------------------------------------------------------- WAIT (ours, 0xD0)

#[test]
fn wait_golden() {
    use clove_abi::msg::WaitRequest;
    golden(&WaitRequest::default(), "{}", "00 00 00");
    // id 7, no name, timeout 1000 ms = varint e8 07.
    golden(
        &WaitRequest {
            id: Some(7),
            name: None,
            timeout_ms: Some(1000),
        },
        r#"{"id":7,"timeout_ms":1000}"#,
        "01 07  00  01 e8 07",
    );
    let w: WaitRequest = parse(r#"{"name": "w", "timeout_ms": null}"#);
    assert_eq!(w.target(), Some(clove_abi::msg::AgentRef::Name("w")));
    let e = reject::<WaitRequest>(r#"{"id": "seven"}"#);
    assert!(e.contains("id"), "{e}");
}

#[test]
fn wait_reply_shape() {
    use clove_abi::msg::WaitReply;
    let r = WaitReply {
        success: true,
        agent_id: 7,
        exited: true,
        exit_code: None,
        signal: Some(9),
        oom: true,
        reason: Some("killed by signal 9 (out of memory)".into()),
    };
    assert_eq!(
        sent(&r),
        json!({"success": true, "agent_id": 7, "exited": true, "signal": 9, "oom": true,
               "reason": "killed by signal 9 (out of memory)"})
    );
}

// ---------------------------------------------------------------- LOGS (ours, 0xD1)

#[test]
fn logs_golden() {
    use clove_abi::msg::LogsRequest;
    // lines 100 = varint 64.
    golden(
        &LogsRequest::default(),
        r#"{"lines":100}"#,
        "00 00 64 00 00",
    );
    // name "w", lines 5, offset 300 = varint ac 02, wait_ms 1000 = e8 07.
    golden(
        &LogsRequest {
            id: None,
            name: Some("w".into()),
            lines: 5,
            offset: Some(300),
            wait_ms: Some(1000),
        },
        r#"{"name":"w","lines":5,"offset":300,"wait_ms":1000}"#,
        "00 01 01 77 05 01 ac 02 01 e8 07",
    );
    let l: LogsRequest = parse(r#"{"id": 3}"#);
    assert_eq!((l.lines, l.offset), (100, None));
    let e = reject::<LogsRequest>(r#"{"id": 3, "lines": -1}"#);
    assert!(e.contains("lines"), "{e}");
}
