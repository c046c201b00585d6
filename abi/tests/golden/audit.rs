//! GET_AUDIT_LOG, SET_AUDIT_CONFIG.

use clove_abi::codec::encode;
use clove_abi::msg::{
    AuditCategory, AuditConfig, AuditEntry, GetAuditLogReply, GetAuditLogRequest,
    SetAuditConfigReply, SetAuditConfigRequest, UnknownAuditCategory, DEFAULT_AUDIT_LIMIT,
    DEFAULT_AUDIT_MAX_ENTRIES,
};
use clove_abi::{Codec, Json};
use serde_json::json;

use crate::{golden, hex, parse, read, reject, sent};

// ---------------------------------------------------------------- categories

#[test]
fn audit_categories_are_screaming_snake_case() {
    let expected = [
        (AuditCategory::Security, "SECURITY"),
        (AuditCategory::AgentLifecycle, "AGENT_LIFECYCLE"),
        (AuditCategory::Ipc, "IPC"),
        (AuditCategory::StateStore, "STATE_STORE"),
        (AuditCategory::Resource, "RESOURCE"),
        (AuditCategory::Syscall, "SYSCALL"),
        (AuditCategory::Network, "NETWORK"),
        (AuditCategory::World, "WORLD"),
    ];
    assert_eq!(AuditCategory::ALL.len(), expected.len());
    for ((category, text), listed) in expected.into_iter().zip(AuditCategory::ALL) {
        assert_eq!(category, listed);
        assert_eq!(category.as_str(), text);
        assert_eq!(serde_json::to_value(category).unwrap(), json!(text));
        assert_eq!(AuditCategory::parse(text), Some(category));
        assert_eq!(
            AuditCategory::parse(&text.to_ascii_lowercase()),
            Some(category)
        );
    }
    assert_eq!(
        AuditCategory::parse("Agent_Lifecycle"),
        Some(AuditCategory::AgentLifecycle)
    );
    assert_eq!(AuditCategory::parse("LIFECYCLE"), None);
    assert_eq!(AuditCategory::parse(""), None);
}

// ---------------------------------------------------------------- GET_AUDIT_LOG

#[test]
fn get_audit_log_golden() {
    // Three absent filters (tags 00), limit 100 = 64.
    golden(
        &GetAuditLogRequest::default(),
        r#"{"limit":100}"#,
        "00 00 00  64",
    );
    // "IPC" (length 03), agent 7, since_id 1000 = varint e8 07, limit 500 = f4 03.
    golden(
        &GetAuditLogRequest {
            category: Some("IPC".into()),
            agent_id: Some(7),
            since_id: Some(1000),
            limit: 500,
        },
        r#"{"category":"IPC","agent_id":7,"since_id":1000,"limit":500}"#,
        "01 03 49 50 43  01 07  01 e8 07  f4 03",
    );
}

#[test]
fn get_audit_log_as_the_original_sdk_sends_it() {
    let r: GetAuditLogRequest = parse(r#"{"limit": 100}"#);
    assert_eq!(r, GetAuditLogRequest::default());
    let r: GetAuditLogRequest = parse("");
    assert_eq!(r.limit, DEFAULT_AUDIT_LIMIT);
    assert_eq!(r.category_filter(), Ok(None));
    let r: GetAuditLogRequest =
        parse(r#"{"category": null, "agent_id": null, "since_id": null, "limit": 20}"#);
    assert_eq!(
        (r.category, r.agent_id, r.since_id, r.limit),
        (None, None, None, 20)
    );
    let r: GetAuditLogRequest =
        parse(r#"{"category": "SECURITY", "agent_id": 3, "since_id": 41, "limit": 100}"#);
    assert_eq!(r.category_filter(), Ok(Some(AuditCategory::Security)));
    assert_eq!((r.agent_id, r.since_id), (Some(3), Some(41)));
    let r: GetAuditLogRequest = parse(r#"{"category": "agent_lifecycle"}"#);
    assert_eq!(r.category_filter(), Ok(Some(AuditCategory::AgentLifecycle)));
    let r: GetAuditLogRequest = parse(r#"{"category": ""}"#);
    assert_eq!(r.category_filter(), Ok(None));
}

#[test]
fn get_audit_log_unknown_category_is_a_clear_error() {
    let r: GetAuditLogRequest = parse(r#"{"category": "BOGUS"}"#);
    let e = r.category_filter().unwrap_err();
    assert_eq!(e, UnknownAuditCategory("BOGUS".into()));
    assert_eq!(
        e.to_string(),
        "unknown audit category \"BOGUS\" (expected one of SECURITY, AGENT_LIFECYCLE, IPC, \
         STATE_STORE, RESOURCE, SYSCALL, NETWORK, WORLD)"
    );
}

#[test]
fn get_audit_log_rejections_name_the_field() {
    let e = reject::<GetAuditLogRequest>(r#"{"limit": -1}"#);
    assert!(
        e.starts_with("limit: invalid value: integer `-1`, expected u32"),
        "{e}"
    );
    let e = reject::<GetAuditLogRequest>(r#"{"agent_id": "7"}"#);
    assert!(
        e.starts_with(r#"agent_id: invalid type: string "7", expected u32"#),
        "{e}"
    );
    let e = reject::<GetAuditLogRequest>(r#"{"category": 3}"#);
    assert!(
        e.starts_with("category: invalid type: integer `3`, expected a string"),
        "{e}"
    );
    let e = reject::<GetAuditLogRequest>(r#"{"since_id": 1.5}"#);
    assert!(
        e.starts_with("since_id: invalid type: floating point `1.5`, expected u64"),
        "{e}"
    );
}

#[test]
fn get_audit_log_reply_has_the_original_keys() {
    let entry = AuditEntry {
        id: 1,
        timestamp: "T".into(),
        category: AuditCategory::Ipc,
        event_type: "E".into(),
        agent_id: 7,
        agent_name: None,
        success: true,
        details: Json(json!({})),
        hash: None,
        decided_by: None,
    };
    let r = GetAuditLogReply {
        success: true,
        count: 1,
        entries: vec![entry.clone()],
    };
    assert_eq!(
        sent(&r),
        json!({"success": true, "count": 1, "entries": [{
            "id": 1, "timestamp": "T", "category": "IPC", "event_type": "E", "agent_id": 7,
            "success": true, "details": {}
        }]})
    );
    // success, count 1, one entry: id 1, "T", IPC = index 2, "E", agent 7, agent_name None,
    // success, details as the JSON text `{}`, hash None, decided_by None.
    assert_eq!(
        encode(Codec::Postcard, &r).unwrap(),
        hex("01 01 01  01  01 54  02  01 45  07  00  01  02 7b 7d  00  00")
    );
    let full = AuditEntry {
        agent_name: Some("w".into()),
        success: false,
        details: Json(json!({"syscall": "EXEC"})),
        hash: Some("ab01".into()),
        decided_by: Some("operator:0".into()),
        ..entry
    };
    assert_eq!(
        sent(&full),
        json!({"id": 1, "timestamp": "T", "category": "IPC", "event_type": "E", "agent_id": 7,
               "agent_name": "w", "success": false, "details": {"syscall": "EXEC"},
               "hash": "ab01", "decided_by": "operator:0"})
    );
    // The original's shape: no hash.
    let back: GetAuditLogReply = read(
        r#"{"success": true, "count": 1, "entries": [{"id": 12,
            "timestamp": "2025-01-31T12:00:00.123Z", "category": "AGENT_LIFECYCLE",
            "event_type": "AGENT_SPAWNED", "agent_id": 3, "agent_name": "worker",
            "success": true, "details": {"pid": 4242}}]}"#,
    );
    assert_eq!(back.count, 1);
    let e = &back.entries[0];
    assert_eq!(e.category, AuditCategory::AgentLifecycle);
    assert_eq!(e.timestamp, "2025-01-31T12:00:00.123Z");
    assert_eq!(e.agent_name.as_deref(), Some("worker"));
    assert_eq!(e.details, Json(json!({"pid": 4242})));
    assert_eq!(e.hash, None);
    assert_eq!(e.decided_by, None);
}

// ---------------------------------------------------------------- SET_AUDIT_CONFIG

#[test]
fn set_audit_config_golden() {
    // Nine absent fields: nine None tags.
    golden(
        &SetAuditConfigRequest::default(),
        "{}",
        "00 00 00 00 00 00 00 00 00",
    );
    // max_entries 5000 = varint 88 27, then eight (tag 01, bool) pairs.
    golden(
        &SetAuditConfigRequest {
            max_entries: Some(5000),
            log_syscalls: Some(true),
            log_security: Some(false),
            log_lifecycle: Some(true),
            log_ipc: Some(false),
            log_state: Some(true),
            log_resource: Some(false),
            log_network: Some(true),
            log_world: Some(false),
        },
        r#"{"max_entries":5000,"log_syscalls":true,"log_security":false,"log_lifecycle":true,"log_ipc":false,"log_state":true,"log_resource":false,"log_network":true,"log_world":false}"#,
        "01 88 27  01 01  01 00  01 01  01 00  01 01  01 00  01 01  01 00",
    );
}

#[test]
fn set_audit_config_as_the_original_sdk_sends_it() {
    let r: SetAuditConfigRequest = parse(r#"{"log_syscalls": true}"#);
    assert_eq!(r.log_syscalls, Some(true));
    assert_eq!(r.max_entries, None);
    let r: SetAuditConfigRequest =
        parse(r#"{"max_entries": 500, "log_syscalls": null, "log_ipc": false}"#);
    assert_eq!(
        (r.max_entries, r.log_syscalls, r.log_ipc),
        (Some(500), None, Some(false))
    );
    let r: SetAuditConfigRequest = parse("");
    assert_eq!(r, SetAuditConfigRequest::default());
}

#[test]
fn set_audit_config_rejections_name_the_field() {
    let e = reject::<SetAuditConfigRequest>(r#"{"max_entries": 1.5}"#);
    assert!(
        e.starts_with("max_entries: invalid type: floating point `1.5`, expected u64"),
        "{e}"
    );
    let e = reject::<SetAuditConfigRequest>(r#"{"log_ipc": "yes"}"#);
    assert!(
        e.starts_with(r#"log_ipc: invalid type: string "yes", expected a boolean"#),
        "{e}"
    );
}

#[test]
fn audit_config_defaults_and_apply() {
    let mut c = AuditConfig::default();
    assert_eq!(c.max_entries, DEFAULT_AUDIT_MAX_ENTRIES);
    assert_eq!(c.max_entries, 10_000);
    for category in AuditCategory::ALL {
        assert_eq!(
            c.logs(category),
            category != AuditCategory::Syscall,
            "{category:?}"
        );
    }
    c.apply(&SetAuditConfigRequest {
        max_entries: Some(50),
        log_syscalls: Some(true),
        log_world: Some(false),
        ..SetAuditConfigRequest::default()
    });
    assert_eq!(c.max_entries, 50);
    assert!(c.logs(AuditCategory::Syscall));
    assert!(!c.logs(AuditCategory::World));
    assert!(c.logs(AuditCategory::Security) && c.logs(AuditCategory::Ipc));
    // An empty request changes nothing.
    let before = c;
    c.apply(&SetAuditConfigRequest::default());
    assert_eq!(c, before);
    // Each flag reaches its own category.
    for (category, req) in [
        (
            AuditCategory::Security,
            SetAuditConfigRequest {
                log_security: Some(false),
                ..Default::default()
            },
        ),
        (
            AuditCategory::AgentLifecycle,
            SetAuditConfigRequest {
                log_lifecycle: Some(false),
                ..Default::default()
            },
        ),
        (
            AuditCategory::Ipc,
            SetAuditConfigRequest {
                log_ipc: Some(false),
                ..Default::default()
            },
        ),
        (
            AuditCategory::StateStore,
            SetAuditConfigRequest {
                log_state: Some(false),
                ..Default::default()
            },
        ),
        (
            AuditCategory::Resource,
            SetAuditConfigRequest {
                log_resource: Some(false),
                ..Default::default()
            },
        ),
        (
            AuditCategory::Network,
            SetAuditConfigRequest {
                log_network: Some(false),
                ..Default::default()
            },
        ),
        (
            AuditCategory::World,
            SetAuditConfigRequest {
                log_world: Some(false),
                ..Default::default()
            },
        ),
    ] {
        let mut c = AuditConfig::default();
        c.apply(&req);
        for other in AuditCategory::ALL {
            let expected = other != category && other != AuditCategory::Syscall;
            assert_eq!(c.logs(other), expected, "{category:?} / {other:?}");
        }
    }
}

#[test]
fn set_audit_config_reply_has_the_original_keys() {
    let r = SetAuditConfigReply {
        success: true,
        config: AuditConfig::default(),
    };
    assert_eq!(
        sent(&r),
        json!({"success": true, "config": {
            "max_entries": 10000, "log_syscalls": false, "log_security": true,
            "log_lifecycle": true, "log_ipc": true, "log_state": true, "log_resource": true,
            "log_network": true, "log_world": true
        }})
    );
    // success, max_entries 10000 = varint 90 4e, log_syscalls false, seven trues.
    assert_eq!(
        encode(Codec::Postcard, &r).unwrap(),
        hex("01  90 4e  00 01 01 01 01 01 01 01")
    );
    // A config with fields left out takes the defaults for them.
    let back: SetAuditConfigReply =
        read(r#"{"success": true, "config": {"max_entries": 500, "log_syscalls": true}}"#);
    assert_eq!(
        back.config,
        AuditConfig {
            max_entries: 500,
            log_syscalls: true,
            ..AuditConfig::default()
        }
    );
}
