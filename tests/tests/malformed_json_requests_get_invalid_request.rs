//! Malformed or wrongly typed JSON requests get `invalid request: …` replies naming the cause
//! (the original sometimes aborted the whole kernel), and the connection stays usable.
//! Validation comes before `not_implemented`, so a client learns about its mistake first.

#![allow(clippy::unwrap_used)]

use std::os::unix::net::UnixStream;
use std::time::Duration;

use clove_abi::Codec;
use clove_tests::{hello_on_new_connection, json_call, read_frame, send_frame, Kernel};
use serde_json::{json, Value};

/// Sends `payload` under `opcode` on a fresh connection of a fresh kernel; asserts an
/// `invalid_request` reply under the same opcode, that the connection then still echoes a
/// NOOP and that the kernel serves a new connection. Returns the reply.
fn invalid(opcode: u8, payload: &[u8]) -> Value {
    let k = Kernel::start().unwrap();
    let mut s = k.connect().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let what = format!("0x{opcode:02X} {}", String::from_utf8_lossy(payload));
    let (h, reply) = json_call(&mut s, opcode, payload).unwrap();
    assert_eq!(h.opcode, opcode, "{what}");
    assert_eq!(reply["success"], false, "{what}: {reply}");
    assert_eq!(reply["code"], "invalid_request", "{what}: {reply}");
    let error = reply["error"].as_str().unwrap_or_default();
    assert!(error.starts_with("invalid request: "), "{what}: {error}");
    still_usable(&mut s);
    hello_on_new_connection(&k.socket).unwrap();
    reply
}

fn still_usable(s: &mut UnixStream) {
    send_frame(s, Codec::Json, 0x00, b"after").unwrap();
    assert_eq!(read_frame(s).unwrap().1, b"after");
}

fn error(reply: &Value) -> &str {
    reply["error"].as_str().unwrap_or_default()
}

#[test]
fn hello_cut_off_mid_object() {
    invalid(0xFE, br#"{"x": "#);
}

#[test]
fn hello_not_utf8() {
    invalid(0xFE, b"\xff\xfe");
}

#[test]
fn hello_trailing_bytes_after_the_object() {
    invalid(0xFE, b"{} {}");
}

#[test]
fn hello_array_where_an_object_belongs() {
    let reply = invalid(0xFE, b"[]");
    assert_eq!(
        error(&reply),
        "invalid request: expected a JSON object, found an array"
    );
    let reply = invalid(0xFE, b"\"hello\"");
    assert_eq!(
        error(&reply),
        "invalid request: expected a JSON object, found a string"
    );
}

#[test]
fn store_cut_off_mid_object() {
    invalid(0x30, br#"{"key": "#);
}

#[test]
fn store_key_of_the_wrong_type() {
    let reply = invalid(0x30, br#"{"key": 5}"#);
    assert!(
        error(&reply).starts_with("invalid request: key: invalid type"),
        "{reply}"
    );
}

#[test]
fn spawn_name_of_the_wrong_type() {
    let reply = invalid(0x10, br#"{"name": 1, "script": "x"}"#);
    assert!(
        error(&reply).starts_with("invalid request: name: invalid type"),
        "{reply}"
    );
}

#[test]
fn read_path_of_the_wrong_type_keeps_the_original_error_fields() {
    let reply = invalid(0x03, br#"{"path": 7}"#);
    assert!(
        error(&reply).starts_with("invalid request: path: invalid type"),
        "{reply}"
    );
    assert_eq!(
        (&reply["content"], &reply["size"]),
        (&json!(""), &json!(0)),
        "{reply}"
    );
}
