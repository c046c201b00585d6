//! GET_PERMS, SET_PERMS.

use clove_abi::codec::{decode_reply, encode};
use clove_abi::msg::{
    FilesystemPerms, GetPermsReply, GetPermsRequest, LlmPerms, PermissionLevel, Permissions,
    SetPermsReply, SetPermsRequest,
};
use clove_abi::Codec;
use serde_json::{json, Value};

use crate::{golden, hex, parse, reject, sent, strings};

/// A permission set with something in every list and every kind of value.
fn custom() -> Permissions {
    Permissions {
        can_exec: true,
        can_read: true,
        can_write: false,
        can_think: true,
        can_spawn: false,
        can_http: true,
        filesystem: FilesystemPerms {
            read: strings(&["/d/**"]),
            write: Vec::new(),
            blocked: strings(&["/d/k"]),
        },
        exec: strings(&["ls"]),
        blocked_commands: Vec::new(),
        network: strings(&["*.x.io"]),
        http_methods: strings(&["GET"]),
        llm: LlmPerms {
            max_tokens: 1000,
            max_calls: 0,
            tokens_used: 0,
            calls_made: 0,
            weight: 2,
        },
        max_exec_time_ms: 5000,
    }
}

/// `custom()` as JSON text, in field order.
const CUSTOM_JSON: &str = concat!(
    r#"{"can_exec":true,"can_read":true,"can_write":false,"can_think":true,"can_spawn":false,"#,
    r#""can_http":true,"filesystem":{"read":["/d/**"],"write":[],"blocked":["/d/k"]},"#,
    r#""exec":["ls"],"blocked_commands":[],"network":["*.x.io"],"http_methods":["GET"],"#,
    r#""llm":{"max_tokens":1000,"max_calls":0,"tokens_used":0,"calls_made":0,"weight":2},"#,
    r#""max_exec_time_ms":5000}"#
);

/// `custom()` in postcard: six bools, then each list as a length and length-prefixed
/// strings, then the varints (1000 = e8 07, 5000 = 88 27).
const CUSTOM_POSTCARD: &str = "
    01 01 00 01 00 01
    01 05 2f 64 2f 2a 2a   00   01 04 2f 64 2f 6b
    01 02 6c 73
    00
    01 06 2a 2e 78 2e 69 6f
    01 03 47 45 54
    e8 07  00  00  00  02
    88 27";

/// The standard level as the original's GET_PERMS reply spells it.
fn standard_json() -> Value {
    json!({
        "can_exec": false, "can_read": true, "can_write": true, "can_think": true,
        "can_spawn": true, "can_http": false,
        "filesystem": {"read": ["**"], "write": ["**"], "blocked": []},
        "exec": [], "blocked_commands": [], "network": [], "http_methods": [],
        "llm": {"max_tokens": 0, "max_calls": 0, "tokens_used": 0, "calls_made": 0,
                "weight": 1},
        "max_exec_time_ms": 0
    })
}

// ---------------------------------------------------------------- GET_PERMS

#[test]
fn get_perms_golden() {
    golden(&GetPermsRequest { agent_id: None }, "{}", "00");
    // agent_id 300 as a varint: ac 02.
    golden(
        &GetPermsRequest {
            agent_id: Some(300),
        },
        r#"{"agent_id":300}"#,
        "01 ac 02",
    );
}

#[test]
fn get_perms_as_the_original_sdk_sends_it() {
    // The SDK sends `{}`; an empty payload is `{}` too.
    for text in ["{}", "", r#"{"agent_id": null}"#] {
        let r: GetPermsRequest = parse(text);
        assert_eq!(r.agent_id, None, "{text:?}");
    }
    let r: GetPermsRequest = parse(r#"{"agent_id": 4}"#);
    assert_eq!(r.agent_id, Some(4));
}

#[test]
fn get_perms_rejections_name_the_field() {
    let e = reject::<GetPermsRequest>(r#"{"agent_id": "4"}"#);
    assert!(
        e.starts_with(r#"agent_id: invalid type: string "4", expected u32"#),
        "{e}"
    );
    let e = reject::<GetPermsRequest>(r#"{"agent_id": -1}"#);
    assert!(
        e.starts_with("agent_id: invalid value: integer `-1`, expected u32"),
        "{e}"
    );
}

#[test]
fn get_perms_reply_has_the_original_keys() {
    let r = GetPermsReply {
        success: true,
        permissions: Permissions::default(),
        agent_id: None,
        level: None,
    };
    assert_eq!(
        sent(&r),
        json!({"success": true, "permissions": standard_json()})
    );
    // postcard: success, the standard level (read/write/think/spawn, `**` twice), two Nones.
    assert_eq!(
        encode(Codec::Postcard, &r).unwrap(),
        hex("01  00 01 01 01 01 00  01 02 2a 2a  01 02 2a 2a  00  00 00 00 00  00 00 00 00 01  00  00 00")
    );
    let r = GetPermsReply {
        permissions: custom(),
        agent_id: Some(3),
        level: Some(PermissionLevel::Sandboxed),
        ..r
    };
    let mut expected: Value = serde_json::from_str(CUSTOM_JSON).unwrap();
    expected =
        json!({"success": true, "permissions": expected, "agent_id": 3, "level": "sandboxed"});
    assert_eq!(sent(&r), expected);
    assert_eq!(
        encode(Codec::Postcard, &r).unwrap(),
        hex(&format!("01 {CUSTOM_POSTCARD} 01 03 01 02"))
    );

    // What the original kernel sent is read, with its usage counters.
    let mut original = standard_json();
    original["llm"] =
        json!({"max_tokens": 5000, "max_calls": 10, "tokens_used": 1234, "calls_made": 2});
    let text = json!({"success": true, "permissions": original}).to_string();
    let back = decode_reply::<GetPermsReply>(Codec::Json, text.as_bytes())
        .unwrap()
        .unwrap();
    assert_eq!(back.permissions.llm.tokens_used, 1234);
    assert_eq!(back.permissions.llm.max_calls, 10);
    assert_eq!((back.agent_id, back.level), (None, None));
}

// ---------------------------------------------------------------- SET_PERMS

#[test]
fn set_perms_golden() {
    golden(&SetPermsRequest::default(), "{}", "00 00 00");
    // level sandboxed is variant 2.
    golden(
        &SetPermsRequest {
            agent_id: None,
            level: Some(PermissionLevel::Sandboxed),
            permissions: None,
        },
        r#"{"level":"sandboxed"}"#,
        "00  01 02  00",
    );
    // Every field: agent_id 300 (ac 02), level readonly (variant 3), the custom set.
    golden(
        &SetPermsRequest {
            agent_id: Some(300),
            level: Some(PermissionLevel::Readonly),
            permissions: Some(custom()),
        },
        &format!(r#"{{"agent_id":300,"level":"readonly","permissions":{CUSTOM_JSON}}}"#),
        &format!("01 ac 02  01 03  01 {CUSTOM_POSTCARD}"),
    );
}

#[test]
fn set_perms_as_the_original_sdk_sends_it() {
    // set_permissions(level=...), every level spelling.
    for level in PermissionLevel::ALL {
        let r: SetPermsRequest = parse(&format!(r#"{{"level": "{}"}}"#, level.as_str()));
        assert_eq!(r.level, Some(level));
        assert_eq!(r.effective(), Some(level.permissions()));
    }
    // set_permissions(permissions=..., agent_id=...): a whole set as GET_PERMS returned it,
    // integers where the original wrote them.
    let mut whole = standard_json();
    whole["can_write"] = json!(false);
    whole["llm"]["max_tokens"] = json!(100);
    let text = json!({"agent_id": 9, "permissions": whole, "level": null}).to_string();
    let r: SetPermsRequest = parse(&text);
    assert_eq!(r.agent_id, Some(9));
    assert_eq!(r.level, None);
    let p = r.effective().unwrap();
    assert!(!p.can_write && p.can_read && p.can_think);
    assert_eq!(p.llm.max_tokens, 100);
    // A partial set: the missing fields are the standard level's, nested ones too.
    let r: SetPermsRequest = parse(
        r#"{"permissions": {"can_exec": true, "exec": ["git"], "filesystem": {"write": ["/tmp/**"]},
            "llm": {"max_calls": 5}}}"#,
    );
    let p = r.permissions.clone().unwrap();
    let expected = Permissions {
        can_exec: true,
        exec: strings(&["git"]),
        filesystem: FilesystemPerms {
            write: strings(&["/tmp/**"]),
            ..FilesystemPerms::default()
        },
        llm: LlmPerms {
            max_calls: 5,
            ..LlmPerms::default()
        },
        ..Permissions::default()
    };
    assert_eq!(p, expected);
    assert_eq!(p.filesystem.read, ["**"]);
    // `{}` is the standard level; permissions win over level.
    let r: SetPermsRequest = parse(r#"{"permissions": {}, "level": "minimal"}"#);
    assert_eq!(r.effective(), Some(PermissionLevel::Standard.permissions()));
    let r: SetPermsRequest = parse("{}");
    assert_eq!(r.effective(), None);
}

#[test]
fn set_perms_rejections_name_the_field() {
    let e = reject::<SetPermsRequest>(r#"{"level": "root"}"#);
    assert!(
        e.starts_with(
            "level: unknown variant `root`, expected one of `unrestricted`, `standard`, \
             `sandboxed`, `readonly`, `minimal`"
        ),
        "{e}"
    );
    let e = reject::<SetPermsRequest>(r#"{"level": "Standard"}"#);
    assert!(e.starts_with("level: unknown variant `Standard`"), "{e}");
    let e = reject::<SetPermsRequest>(r#"{"permissions": {"can_exec": "yes"}}"#);
    assert!(
        e.starts_with(r#"permissions.can_exec: invalid type: string "yes", expected a boolean"#),
        "{e}"
    );
    let e = reject::<SetPermsRequest>(r#"{"permissions": {"filesystem": {"read": "/tmp"}}}"#);
    assert!(
        e.starts_with(
            r#"permissions.filesystem.read: invalid type: string "/tmp", expected a sequence"#
        ),
        "{e}"
    );
    let e = reject::<SetPermsRequest>(r#"{"permissions": {"llm": {"max_tokens": -1}}}"#);
    assert!(
        e.starts_with("permissions.llm.max_tokens: invalid value: integer `-1`, expected u64"),
        "{e}"
    );
    let e = reject::<SetPermsRequest>(r#"{"permissions": "readonly"}"#);
    assert!(
        e.starts_with(
            r#"permissions: invalid type: string "readonly", expected struct Permissions"#
        ),
        "{e}"
    );
    let e = reject::<SetPermsRequest>(r#"{"agent_id": 1.5}"#);
    assert!(
        e.starts_with("agent_id: invalid type: floating point `1.5`, expected u32"),
        "{e}"
    );
}

#[test]
fn set_perms_reply_has_the_original_keys() {
    let r = SetPermsReply {
        success: true,
        agent_id: 300,
    };
    assert_eq!(sent(&r), json!({"success": true, "agent_id": 300}));
    assert_eq!(encode(Codec::Postcard, &r).unwrap(), hex("01 ac 02"));
    let back = decode_reply::<SetPermsReply>(Codec::Json, br#"{"success": true, "agent_id": 2}"#)
        .unwrap()
        .unwrap();
    assert_eq!(back.agent_id, 2);
}

#[test]
fn levels_have_the_original_spellings() {
    let names: Vec<&str> = PermissionLevel::ALL.iter().map(|l| l.as_str()).collect();
    assert_eq!(
        names,
        [
            "unrestricted",
            "standard",
            "sandboxed",
            "readonly",
            "minimal"
        ]
    );
    for level in PermissionLevel::ALL {
        assert_eq!(serde_json::to_value(level).unwrap(), json!(level.as_str()));
    }
    assert_eq!(PermissionLevel::default(), PermissionLevel::Standard);
}
