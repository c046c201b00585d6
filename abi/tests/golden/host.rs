//! EXEC, READ, WRITE, HTTP.

use std::collections::BTreeMap;
use std::time::Duration;

use clove_abi::codec::encode;
use clove_abi::msg::{
    ExecCommand, ExecReply, ExecRequest, HttpReply, HttpRequest, ReadReply, ReadRequest, WriteMode,
    WriteReply, WriteRequest,
};
use clove_abi::Codec;
use serde_json::json;

use crate::{golden, hex, parse, read, reject, sent};

fn headers(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

// ---------------------------------------------------------------- EXEC

#[test]
fn exec_golden() {
    // command "ls", no argv, no cwd, timeout 30.0 = 0x403E000000000000 LE, async 0, no
    // request_id.
    golden(
        &ExecRequest::new("ls"),
        r#"{"command":"ls","timeout":30.0,"async":false}"#,
        "02 6c 73  00  00  00 00 00 00 00 00 3e 40  00  00  00",
    );
    // Every field: command "", argv ["ls", "-l"] (length 2), cwd "/tmp", timeout 2.5 =
    // 0x4004000000000000 LE, async 1, request_id 300 = varint ac 02.
    golden(
        &ExecRequest {
            command: String::new(),
            argv: Some(vec!["ls".into(), "-l".into()]),
            cwd: Some("/tmp".into()),
            timeout: 2.5,
            is_async: true,
            request_id: Some(300),
            env: Some([("A".to_owned(), "b".to_owned())].into()),
        },
        r#"{"command":"","argv":["ls","-l"],"cwd":"/tmp","timeout":2.5,"async":true,"request_id":300,"env":{"A":"b"}}"#,
        "00  01 02 02 6c 73 02 2d 6c  01 04 2f 74 6d 70  00 00 00 00 00 00 04 40  01  01 ac 02  01 01 01 41 01 62",
    );
}

#[test]
fn exec_as_the_original_sdk_sends_it() {
    // An int timeout.
    let e: ExecRequest = parse(r#"{"command": "ls -la", "timeout": 30}"#);
    assert_eq!(e, ExecRequest::new("ls -la"));
    assert_eq!(e.invocation(), ExecCommand::Shell("ls -la"));
    assert_eq!(e.timeout(), Some(Duration::from_secs(30)));
    let e: ExecRequest = parse(
        r#"{"command": "sleep 1", "cwd": null, "timeout": 5.5, "async": true, "request_id": null}"#,
    );
    assert_eq!(e.cwd, None);
    assert_eq!(e.timeout(), Some(Duration::from_millis(5500)));
    assert_eq!((e.is_async, e.request_id), (true, None));
    let e: ExecRequest =
        parse(r#"{"command": "make", "cwd": "/src", "async": true, "request_id": 12}"#);
    assert_eq!(e.cwd.as_deref(), Some("/src"));
    assert_eq!(e.timeout, 30.0);
    assert_eq!(e.request_id, Some(12));
    // Empty payload: every default.
    let e: ExecRequest = parse("");
    assert_eq!(e, ExecRequest::default());
    assert_eq!(e.invocation(), ExecCommand::Shell(""));
    // Our argv extension wins over command.
    let e: ExecRequest = parse(r#"{"command": "ignored", "argv": ["echo", "a b"]}"#);
    let argv = ["echo".to_string(), "a b".to_string()];
    assert_eq!(e.invocation(), ExecCommand::Argv(&argv));
    let e: ExecRequest = parse(r#"{"argv": []}"#);
    assert_eq!(e.invocation(), ExecCommand::Argv(&[]));
    // Timeouts the kernel must refuse have no Duration.
    let e: ExecRequest = parse(r#"{"command": "x", "timeout": -1}"#);
    assert_eq!(e.timeout(), None);
    let e: ExecRequest = parse(r#"{"command": "x", "timeout": 1e300}"#);
    assert_eq!(e.timeout(), None);
}

#[test]
fn exec_rejections_name_the_field() {
    let e = reject::<ExecRequest>(r#"{"command": ["ls"]}"#);
    assert!(
        e.starts_with("command: invalid type: sequence, expected a string"),
        "{e}"
    );
    let e = reject::<ExecRequest>(r#"{"argv": "ls -l"}"#);
    assert!(
        e.starts_with(r#"argv: invalid type: string "ls -l", expected a sequence"#),
        "{e}"
    );
    let e = reject::<ExecRequest>(r#"{"argv": ["ls", 1]}"#);
    assert!(
        e.starts_with("argv[1]: invalid type: integer `1`, expected a string"),
        "{e}"
    );
    let e = reject::<ExecRequest>(r#"{"command": "ls", "timeout": "30"}"#);
    assert!(
        e.starts_with(r#"timeout: invalid type: string "30", expected f64"#),
        "{e}"
    );
    let e = reject::<ExecRequest>(r#"{"command": "ls", "timeout": null}"#);
    assert!(
        e.starts_with("timeout: invalid type: null, expected f64"),
        "{e}"
    );
    let e = reject::<ExecRequest>(r#"{"command": "ls", "async": 1}"#);
    assert!(
        e.starts_with("async: invalid type: integer `1`, expected a boolean"),
        "{e}"
    );
    let e = reject::<ExecRequest>(r#"{"command": "ls", "request_id": "a"}"#);
    assert!(
        e.starts_with(r#"request_id: invalid type: string "a", expected u64"#),
        "{e}"
    );
}

#[test]
fn exec_reply_has_the_original_keys() {
    let r = ExecReply::completed("hi\n", "", 0);
    assert!(r.success && !r.is_accepted());
    assert_eq!(
        sent(&r),
        json!({"success": true, "stdout": "hi\n", "stderr": "", "exit_code": 0})
    );
    // stdout "hi\n", stderr "", exit_code 0 (zigzag 0), six absent extensions.
    assert_eq!(
        encode(Codec::Postcard, &r).unwrap(),
        hex("01  03 68 69 0a  00  00  00 00 00 00 00 00")
    );
    assert!(!ExecReply::completed("", "boom", 2).success);
    // Killed by SIGKILL at the timeout: exit_code -1 (zigzag 01), signal 9 (zigzag 0x12),
    // timed_out true.
    let killed = ExecReply {
        success: false,
        stdout: String::new(),
        stderr: String::new(),
        exit_code: -1,
        signal: Some(9),
        timed_out: Some(true),
        is_async: None,
        request_id: None,
        status: None,
        truncated: None,
    };
    assert_eq!(
        sent(&killed),
        json!({"success": false, "stdout": "", "stderr": "", "exit_code": -1, "signal": 9,
               "timed_out": true})
    );
    assert_eq!(
        encode(Codec::Postcard, &killed).unwrap(),
        hex("00  00  00  01  01 12  01 01  00 00 00 00")
    );
}

#[test]
fn exec_accept_reply_has_the_original_keys() {
    let r = ExecReply::accepted(7);
    assert!(r.is_accepted());
    assert_eq!(
        sent(&r),
        json!({"success": true, "stdout": "", "stderr": "", "exit_code": 0, "async": true,
               "request_id": 7, "status": "accepted"})
    );
    assert_eq!(
        encode(Codec::Postcard, &r).unwrap(),
        hex("01 00 00 00  00 00  01 01  01 07  01 08 61 63 63 65 70 74 65 64  00")
    );
    let back: ExecReply =
        read(r#"{"success": true, "async": true, "request_id": 7, "status": "accepted"}"#);
    assert_eq!(back, r);
}

#[test]
fn original_exec_replies_read() {
    let r: ExecReply =
        read(r#"{"success": false, "stdout": "", "stderr": "no such file", "exit_code": 1}"#);
    assert_eq!(r, ExecReply::completed("", "no such file", 1));
    // The original's error shape (no `code`): a failed reply with the empty extras.
    let r: ExecReply = read(
        r#"{"success": false, "error": "permission denied", "stdout": "", "stderr": "", "exit_code": -1}"#,
    );
    assert_eq!((r.success, r.exit_code), (false, -1));
}

// ---------------------------------------------------------------- READ

#[test]
fn read_golden() {
    // path "/etc/hostname" (13 bytes), no offset, no limit.
    golden(
        &ReadRequest::new("/etc/hostname"),
        r#"{"path":"/etc/hostname"}"#,
        "0d 2f 65 74 63 2f 68 6f 73 74 6e 61 6d 65  00  00",
    );
    // offset 1024 = varint 80 08, limit 16.
    golden(
        &ReadRequest {
            path: "a".into(),
            offset: Some(1024),
            limit: Some(16),
        },
        r#"{"path":"a","offset":1024,"limit":16}"#,
        "01 61  01 80 08  01 10",
    );
}

#[test]
fn read_as_the_original_sdk_sends_it() {
    let r: ReadRequest = parse(r#"{"path": "/tmp/data.txt"}"#);
    assert_eq!(r, ReadRequest::new("/tmp/data.txt"));
    let r: ReadRequest = parse(r#"{"path": "f", "offset": null, "limit": 10}"#);
    assert_eq!((r.offset, r.limit), (None, Some(10)));
}

#[test]
fn read_rejections_name_the_field() {
    let e = reject::<ReadRequest>("{}");
    assert!(e.starts_with("missing field `path`"), "{e}");
    let e = reject::<ReadRequest>(r#"{"path": 5}"#);
    assert!(
        e.starts_with("path: invalid type: integer `5`, expected a string"),
        "{e}"
    );
    let e = reject::<ReadRequest>(r#"{"path": "f", "offset": -1}"#);
    assert!(
        e.starts_with("offset: invalid value: integer `-1`, expected u64"),
        "{e}"
    );
}

#[test]
fn read_reply_has_the_original_keys() {
    let r = ReadReply {
        success: true,
        content: "abc".into(),
        size: 3,
    };
    assert_eq!(
        sent(&r),
        json!({"success": true, "content": "abc", "size": 3})
    );
    assert_eq!(
        encode(Codec::Postcard, &r).unwrap(),
        hex("01  03 61 62 63  03")
    );
    let back: ReadReply = read(r#"{"success": true, "content": "abc", "size": 3}"#);
    assert_eq!(back, r);
}

// ---------------------------------------------------------------- WRITE

#[test]
fn write_golden() {
    golden(
        &WriteRequest {
            path: "f".into(),
            content: "x".into(),
            mode: WriteMode::Write,
            create_dirs: None,
        },
        r#"{"path":"f","content":"x","mode":"write"}"#,
        "01 66  01 78  00  00",
    );
    golden(
        &WriteRequest {
            path: "f".into(),
            content: "line\n".into(),
            mode: WriteMode::Append,
            create_dirs: Some(true),
        },
        r#"{"path":"f","content":"line\n","mode":"append","create_dirs":true}"#,
        "01 66  05 6c 69 6e 65 0a  01  01 01",
    );
}

#[test]
fn write_as_the_original_sdk_sends_it() {
    let w: WriteRequest = parse(r#"{"path": "/tmp/out.txt", "content": "hello", "mode": "write"}"#);
    assert_eq!(
        (w.path.as_str(), w.content.as_str(), w.mode),
        ("/tmp/out.txt", "hello", WriteMode::Write)
    );
    let w: WriteRequest = parse(r#"{"path": "f", "content": "more", "mode": "append"}"#);
    assert_eq!(w.mode, WriteMode::Append);
    let w: WriteRequest = parse(r#"{"path": "f", "content": ""}"#);
    assert_eq!(w.mode, WriteMode::Write);
    for (mode, text) in [(WriteMode::Write, "write"), (WriteMode::Append, "append")] {
        assert_eq!(mode.as_str(), text);
        assert_eq!(WriteMode::parse(text), Some(mode));
    }
    assert_eq!(WriteMode::ALL, [WriteMode::Write, WriteMode::Append]);
    assert_eq!(WriteMode::parse("a"), None);
}

#[test]
fn write_rejections_name_the_field() {
    let e = reject::<WriteRequest>(r#"{"path": "f", "content": "x", "mode": "overwrite"}"#);
    assert!(
        e.starts_with("mode: unknown variant `overwrite`, expected `write` or `append`"),
        "{e}"
    );
    let e = reject::<WriteRequest>(r#"{"path": "f", "content": {"a": 1}}"#);
    assert!(
        e.starts_with("content: invalid type: map, expected a string"),
        "{e}"
    );
    let e = reject::<WriteRequest>(r#"{"path": "f"}"#);
    assert!(e.starts_with("missing field `content`"), "{e}");
}

#[test]
fn write_reply_has_the_original_keys() {
    let r = WriteReply {
        success: true,
        bytes_written: 300,
    };
    assert_eq!(sent(&r), json!({"success": true, "bytes_written": 300}));
    assert_eq!(encode(Codec::Postcard, &r).unwrap(), hex("01  ac 02"));
    let back: WriteReply = read(r#"{"success": true, "bytes_written": 300}"#);
    assert_eq!(back, r);
}

// ---------------------------------------------------------------- HTTP

#[test]
fn http_golden() {
    // url "http://x" (8), method "GET", headers {} (length 0), no body, timeout 30.0, async 0,
    // no request_id.
    golden(
        &HttpRequest::get("http://x"),
        r#"{"url":"http://x","method":"GET","headers":{},"timeout":30.0,"async":false}"#,
        "08 68 74 74 70 3a 2f 2f 78  03 47 45 54  00  00  00 00 00 00 00 00 3e 40  00  00",
    );
    // Every field: headers in key order ("B" < "a"), body "{}", timeout 0.25 =
    // 0x3FD0000000000000 LE, async 1, request_id 1.
    golden(
        &HttpRequest {
            url: "http://x".into(),
            method: "POST".into(),
            headers: headers(&[("a", "1"), ("B", "2")]),
            body: Some("{}".into()),
            timeout: 0.25,
            is_async: true,
            request_id: Some(1),
        },
        r#"{"url":"http://x","method":"POST","headers":{"B":"2","a":"1"},"body":"{}","timeout":0.25,"async":true,"request_id":1}"#,
        "08 68 74 74 70 3a 2f 2f 78  04 50 4f 53 54  02 01 42 01 32 01 61 01 31 \
         01 02 7b 7d  00 00 00 00 00 00 d0 3f  01  01 01",
    );
}

#[test]
fn http_as_the_original_sdk_sends_it() {
    let h: HttpRequest = parse(r#"{"url": "https://example.com"}"#);
    assert_eq!(h, HttpRequest::get("https://example.com"));
    assert_eq!(h.timeout(), Some(Duration::from_secs(30)));
    // An int timeout, a JSON body as text, Python None for headers.
    let h: HttpRequest = parse(
        r#"{"url": "https://api.example.com/v1", "method": "POST",
            "headers": {"Content-Type": "application/json"}, "body": "{\"a\": 1}",
            "timeout": 10, "async": true, "request_id": 4}"#,
    );
    assert_eq!(h.method, "POST");
    assert_eq!(h.headers, headers(&[("Content-Type", "application/json")]));
    assert_eq!(h.body.as_deref(), Some(r#"{"a": 1}"#));
    assert_eq!(h.timeout(), Some(Duration::from_secs(10)));
    assert_eq!((h.is_async, h.request_id), (true, Some(4)));
    let h: HttpRequest =
        parse(r#"{"url": "u", "method": "GET", "headers": null, "body": null, "timeout": 30}"#);
    assert_eq!(h, HttpRequest::get("u"));
    // The method stays as written; the kernel validates it.
    let h: HttpRequest = parse(r#"{"url": "u", "method": "post"}"#);
    assert_eq!(h.method, "post");
}

#[test]
fn http_rejections_name_the_field() {
    let e = reject::<HttpRequest>(r#"{"method": "GET"}"#);
    assert!(e.starts_with("missing field `url`"), "{e}");
    let e = reject::<HttpRequest>(r#"{"url": "u", "headers": {"X-N": 1}}"#);
    assert!(
        e.starts_with("headers.X-N: invalid type: integer `1`, expected a string"),
        "{e}"
    );
    let e = reject::<HttpRequest>(r#"{"url": "u", "headers": [["a", "b"]]}"#);
    assert!(
        e.starts_with("headers: invalid type: sequence, expected a map"),
        "{e}"
    );
    let e = reject::<HttpRequest>(r#"{"url": "u", "method": 1}"#);
    assert!(
        e.starts_with("method: invalid type: integer `1`, expected a string"),
        "{e}"
    );
    let e = reject::<HttpRequest>(r#"{"url": "u", "body": {"a": 1}}"#);
    assert!(
        e.starts_with("body: invalid type: map, expected a string"),
        "{e}"
    );
    let e = reject::<HttpRequest>(r#"{"url": "u", "timeout": "10"}"#);
    assert!(
        e.starts_with(r#"timeout: invalid type: string "10", expected f64"#),
        "{e}"
    );
}

#[test]
fn http_reply_has_the_original_keys() {
    let r = HttpReply {
        success: true,
        status_code: 404,
        body: "no".into(),
        headers: None,
        is_async: None,
        request_id: None,
        status: None,
    };
    assert_eq!(
        sent(&r),
        json!({"success": true, "status_code": 404, "body": "no"})
    );
    // status_code 404 = 0x194 = varint 94 03, four absent extensions.
    assert_eq!(
        encode(Codec::Postcard, &r).unwrap(),
        hex("01  94 03  02 6e 6f  00 00 00 00")
    );
    let with_headers = HttpReply {
        headers: Some(headers(&[("content-type", "text/plain")])),
        ..r.clone()
    };
    assert_eq!(
        sent(&with_headers),
        json!({"success": true, "status_code": 404, "body": "no",
               "headers": {"content-type": "text/plain"}})
    );
    let back: HttpReply = read(r#"{"success": true, "status_code": 404, "body": "no"}"#);
    assert_eq!(back, r);
}

#[test]
fn http_accept_reply_has_the_original_keys() {
    let r = HttpReply::accepted(3);
    assert!(r.is_accepted());
    assert_eq!(
        sent(&r),
        json!({"success": true, "status_code": 0, "body": "", "async": true, "request_id": 3,
               "status": "accepted"})
    );
    let back: HttpReply =
        read(r#"{"success": true, "async": true, "request_id": 3, "status": "accepted"}"#);
    assert_eq!(back, r);
}
