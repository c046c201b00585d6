//! STORE, FETCH, DELETE, KEYS.

use clove_abi::codec::encode;
use clove_abi::msg::{
    DeleteReply, DeleteRequest, FetchReply, FetchRequest, KeysReply, KeysRequest, StateScope,
    StoreReply, StoreRequest,
};
use clove_abi::{Codec, Json};
use serde_json::{json, Value};

use crate::{golden, hex, parse, reject, sent};

// ---------------------------------------------------------------- STORE

#[test]
fn store_golden() {
    golden(
        &StoreRequest {
            key: "k".into(),
            value: Json(json!(42)),
            scope: StateScope::Global,
            ttl: None,
            if_version: None,
        },
        r#"{"key":"k","value":42,"scope":"global"}"#,
        "01 6b  02 34 32  00  00  00",
    );
    // Every field: the value as JSON text (`{"a":true}`, 10 bytes), scope index 2, ttl 2.5 as
    // f64 little-endian, if_version 0 ("only if absent").
    golden(
        &StoreRequest {
            key: "k".into(),
            value: Json(json!({"a": true})),
            scope: StateScope::Session,
            ttl: Some(2.5),
            if_version: Some(0),
        },
        r#"{"key":"k","value":{"a":true},"scope":"session","ttl":2.5,"if_version":0}"#,
        "01 6b  0a 7b 22 61 22 3a 74 72 75 65 7d  02  01 00 00 00 00 00 00 04 40  01 00",
    );
}

#[test]
fn store_as_the_original_sdk_sends_it() {
    let s: StoreRequest = parse(r#"{"key": "counter", "value": [1, 2]}"#);
    assert_eq!(s.key, "counter");
    assert_eq!(s.value, Json(json!([1, 2])));
    assert_eq!(s.scope, StateScope::Global);
    assert_eq!((s.ttl, s.if_version), (None, None));
    // Integer ttl, null value, every scope spelling.
    let s: StoreRequest = parse(r#"{"key": "k", "value": null, "scope": "agent", "ttl": 30}"#);
    assert_eq!(s.value, Json(Value::Null));
    assert_eq!((s.scope, s.ttl), (StateScope::Agent, Some(30.0)));
    let s: StoreRequest = parse(r#"{"key": "k", "value": 1, "scope": "session", "ttl": 0.5}"#);
    assert_eq!((s.scope, s.ttl), (StateScope::Session, Some(0.5)));
    let s: StoreRequest = parse(r#"{"key": "k", "value": 1, "scope": "global", "ttl": null}"#);
    assert_eq!((s.scope, s.ttl), (StateScope::Global, None));
    // Our compare-and-set extension.
    let s: StoreRequest = parse(r#"{"key": "k", "value": 1, "if_version": 7}"#);
    assert_eq!(s.if_version, Some(7));
    for (scope, text) in [
        (StateScope::Global, "global"),
        (StateScope::Agent, "agent"),
        (StateScope::Session, "session"),
    ] {
        assert_eq!(scope.as_str(), text);
    }
}

#[test]
fn store_rejections_name_the_field() {
    let e = reject::<StoreRequest>(r#"{"key": "k", "value": 1, "scope": "forever"}"#);
    assert!(
        e.starts_with(
            "scope: unknown variant `forever`, expected one of `global`, `agent`, `session`"
        ),
        "{e}"
    );
    let e = reject::<StoreRequest>(r#"{"key": "k", "value": 1, "ttl": "30"}"#);
    assert!(
        e.starts_with(r#"ttl: invalid type: string "30", expected f64"#),
        "{e}"
    );
    let e = reject::<StoreRequest>(r#"{"key": 1, "value": 1}"#);
    assert!(
        e.starts_with("key: invalid type: integer `1`, expected a string"),
        "{e}"
    );
    let e = reject::<StoreRequest>(r#"{"key": "k"}"#);
    assert!(e.starts_with("missing field `value`"), "{e}");
}

#[test]
fn store_reply_has_the_original_keys() {
    let r = StoreReply {
        success: true,
        key: "k".into(),
        version: None,
    };
    assert_eq!(sent(&r), json!({"success": true, "key": "k"}));
    assert_eq!(encode(Codec::Postcard, &r).unwrap(), hex("01 01 6b 00"));
    let r = StoreReply {
        version: Some(3),
        ..r
    };
    assert_eq!(sent(&r), json!({"success": true, "key": "k", "version": 3}));
}

// ---------------------------------------------------------------- FETCH, DELETE

#[test]
fn fetch_and_delete_golden() {
    golden(&FetchRequest { key: "k".into() }, r#"{"key":"k"}"#, "01 6b");
    golden(
        &DeleteRequest { key: "a/b".into() },
        r#"{"key":"a/b"}"#,
        "03 61 2f 62",
    );
}

#[test]
fn fetch_and_delete_as_the_original_sdk_sends_them() {
    let f: FetchRequest = parse(r#"{"key": "config"}"#);
    assert_eq!(f.key, "config");
    let d: DeleteRequest = parse(r#"{"key": "config"}"#);
    assert_eq!(d.key, "config");
}

#[test]
fn fetch_and_delete_rejections_name_the_field() {
    let e = reject::<FetchRequest>(r#"{"key": ["k"]}"#);
    assert!(
        e.starts_with("key: invalid type: sequence, expected a string"),
        "{e}"
    );
    let e = reject::<DeleteRequest>(r#"{"key": null}"#);
    assert!(
        e.starts_with("key: invalid type: null, expected a string"),
        "{e}"
    );
    let e = reject::<FetchRequest>("{}");
    assert!(e.starts_with("missing field `key`"), "{e}");
}

#[test]
fn fetch_reply_has_the_original_keys() {
    // Missing: `value` is null and present, `scope` and `version` are left out.
    let missing = FetchReply {
        success: true,
        exists: false,
        value: Json(Value::Null),
        scope: None,
        version: None,
    };
    assert_eq!(
        std::str::from_utf8(&encode(Codec::Json, &missing).unwrap()).unwrap(),
        r#"{"success":true,"exists":false,"value":null}"#
    );
    assert_eq!(
        encode(Codec::Postcard, &missing).unwrap(),
        hex("01 00 04 6e 75 6c 6c 00 00")
    );
    let found = FetchReply {
        success: true,
        exists: true,
        value: Json(json!({"n": 1})),
        scope: Some(StateScope::Agent),
        version: Some(2),
    };
    assert_eq!(
        sent(&found),
        json!({"success": true, "exists": true, "value": {"n": 1}, "scope": "agent", "version": 2})
    );
}

#[test]
fn delete_reply_has_the_original_keys() {
    let r = DeleteReply {
        success: true,
        deleted: false,
    };
    assert_eq!(sent(&r), json!({"success": true, "deleted": false}));
}

// ---------------------------------------------------------------- KEYS

#[test]
fn keys_golden() {
    golden(&KeysRequest { prefix: None }, "{}", "00");
    golden(
        &KeysRequest {
            prefix: Some("a/".into()),
        },
        r#"{"prefix":"a/"}"#,
        "01 02 61 2f",
    );
}

#[test]
fn keys_as_the_original_sdk_sends_it() {
    let k: KeysRequest = parse("{}");
    assert_eq!(k.prefix, None);
    let k: KeysRequest = parse("");
    assert_eq!(k.prefix, None);
    let k: KeysRequest = parse(r#"{"prefix": "task:"}"#);
    assert_eq!(k.prefix.as_deref(), Some("task:"));
    let k: KeysRequest = parse(r#"{"prefix": null}"#);
    assert_eq!(k.prefix, None);
}

#[test]
fn keys_rejections_name_the_field() {
    let e = reject::<KeysRequest>(r#"{"prefix": 3}"#);
    assert!(
        e.starts_with("prefix: invalid type: integer `3`, expected a string"),
        "{e}"
    );
}

#[test]
fn keys_reply_has_the_original_keys() {
    let r = KeysReply {
        success: true,
        keys: vec!["a".into(), "b".into()],
        count: 2,
    };
    assert_eq!(
        sent(&r),
        json!({"success": true, "keys": ["a", "b"], "count": 2})
    );
    assert_eq!(
        encode(Codec::Postcard, &r).unwrap(),
        hex("01 02 01 61 01 62 02")
    );
}
