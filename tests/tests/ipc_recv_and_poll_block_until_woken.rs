//! RECV and POLL_EVENTS with `wait_ms` block: they do not answer before a message (an event)
//! arrives, wake as soon as a SEND (an EMIT) delivers one, and answer empty when the wait
//! runs out. A kernel SIGTERM while a RECV waits ends that RECV and the kernel promptly.

#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use clove_tests::{JsonConn, Kernel};

const SEND: u8 = 0x20;
const RECV: u8 = 0x21;
const SUBSCRIBE: u8 = 0x60;
const POLL_EVENTS: u8 = 0x62;
const EMIT: u8 = 0x63;

/// Runs `f` on `conn` in a thread, timing it.
fn in_thread(
    mut conn: JsonConn,
    opcode: u8,
    payload: Value,
) -> std::thread::JoinHandle<(Value, Duration, JsonConn)> {
    std::thread::spawn(move || {
        let start = Instant::now();
        let r = conn.call(opcode, payload).unwrap();
        (r, start.elapsed(), conn)
    })
}

#[test]
fn recv_blocks_until_a_send_wakes_it() {
    let kernel = Kernel::start().unwrap();
    let rx = JsonConn::open(&kernel).unwrap();
    let rx_id = rx.id;
    let mut tx = JsonConn::open(&kernel).unwrap();

    let waiting = in_thread(rx, RECV, json!({"max": 10, "wait_ms": 10000}));
    std::thread::sleep(Duration::from_millis(600));
    assert!(!waiting.is_finished(), "RECV answered before any message");
    let sent = Instant::now();
    let r = tx
        .call(SEND, json!({"to": rx_id, "message": "wake"}))
        .unwrap();
    assert_eq!(r["success"], true, "{r}");
    let (r, took, mut rx) = waiting.join().unwrap();
    let woke_after = sent.elapsed();
    assert_eq!(r["count"], 1, "{r}");
    assert_eq!(r["messages"][0]["message"], "wake", "{r}");
    assert!(took >= Duration::from_millis(590), "{took:?}");
    // It woke on the SEND, not at the end of its 10 s.
    assert!(
        woke_after < Duration::from_secs(2),
        "woke {woke_after:?} after the SEND"
    );

    // Nothing comes: an empty answer after about the wait.
    let start = Instant::now();
    let r = rx.call(RECV, json!({"max": 10, "wait_ms": 500})).unwrap();
    let took = start.elapsed();
    assert_eq!(
        (&r["success"], &r["count"]),
        (&json!(true), &json!(0)),
        "{r}"
    );
    assert_eq!(r["messages"], json!([]), "{r}");
    assert!(
        took >= Duration::from_millis(490) && took < Duration::from_secs(3),
        "a 500 ms wait took {took:?}"
    );
    // Without a wait, RECV answers at once, as the original.
    let start = Instant::now();
    let r = rx.call(RECV, json!({"max": 10})).unwrap();
    assert_eq!(r["count"], 0, "{r}");
    assert!(
        start.elapsed() < Duration::from_millis(300),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn poll_events_blocks_until_an_emit_wakes_it() {
    let kernel = Kernel::start().unwrap();
    let mut listener = JsonConn::open(&kernel).unwrap();
    let r = listener
        .call(SUBSCRIBE, json!({"event_types": ["test.wake"]}))
        .unwrap();
    assert_eq!(r["success"], true, "{r}");
    let mut emitter = JsonConn::open(&kernel).unwrap();

    let waiting = in_thread(listener, POLL_EVENTS, json!({"max": 10, "wait_ms": 10000}));
    std::thread::sleep(Duration::from_millis(600));
    assert!(
        !waiting.is_finished(),
        "POLL_EVENTS answered before any event"
    );
    // An event of a type nobody waits for does not wake it.
    let r = emitter
        .call(EMIT, json!({"event_type": "test.other", "data": 0}))
        .unwrap();
    assert_eq!(r["success"], true, "{r}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !waiting.is_finished(),
        "an unsubscribed event type woke POLL_EVENTS"
    );
    let sent = Instant::now();
    let r = emitter
        .call(EMIT, json!({"event_type": "test.wake", "data": {"n": 1}}))
        .unwrap();
    assert_eq!(r["success"], true, "{r}");
    let (r, took, mut listener) = waiting.join().unwrap();
    let woke_after = sent.elapsed();
    assert_eq!(r["count"], 1, "{r}");
    let ev = &r["events"][0];
    assert_eq!(ev["type"], "test.wake", "{r}");
    assert_eq!(ev["data"], json!({"n": 1}), "{r}");
    assert_eq!(
        ev["source_agent_id"].as_u64(),
        Some(u64::from(emitter.id)),
        "{r}"
    );
    assert!(took >= Duration::from_millis(890), "{took:?}");
    assert!(
        woke_after < Duration::from_secs(2),
        "woke {woke_after:?} after the EMIT"
    );

    let start = Instant::now();
    let r = listener
        .call(POLL_EVENTS, json!({"max": 10, "wait_ms": 500}))
        .unwrap();
    let took = start.elapsed();
    assert_eq!(
        (&r["success"], &r["count"]),
        (&json!(true), &json!(0)),
        "{r}"
    );
    assert_eq!(r["events"], json!([]), "{r}");
    assert!(
        took >= Duration::from_millis(490) && took < Duration::from_secs(3),
        "a 500 ms wait took {took:?}"
    );

    // Kernel event types cannot be forged with EMIT.
    let r = emitter
        .call(
            EMIT,
            json!({"event_type": "AGENT_EXITED", "data": {"agent_id": 1}}),
        )
        .unwrap();
    assert_eq!(
        (&r["success"], &r["code"]),
        (&json!(false), &json!("permission_denied")),
        "{r}"
    );
}

#[test]
fn sigterm_ends_a_waiting_recv_and_the_kernel_promptly() {
    let kernel = Kernel::start().unwrap();
    let mut rx = JsonConn::open(&kernel).unwrap();
    // The request goes out; its answer (if any) is read in a thread.
    rx.stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let body = json!({"max": 10, "wait_ms": 60000}).to_string();
    clove_tests::send_frame(
        &mut rx.stream,
        clove_abi::Codec::Json,
        RECV,
        body.as_bytes(),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let reader = std::thread::spawn(move || {
        // Either an (empty) reply then EOF, or EOF at once; never the full 60 s.
        let mut all = Vec::new();
        let res = rx.stream.read_to_end(&mut all);
        (res.map_err(|e| e.kind()), all, Instant::now())
    });
    std::thread::sleep(Duration::from_millis(200));
    assert!(!reader.is_finished(), "RECV answered before the SIGTERM");

    let start = Instant::now();
    let (status, _) = kernel.signal_and_wait(libc::SIGTERM).unwrap();
    let stopped = start.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(
        stopped < Duration::from_secs(3),
        "the kernel took {stopped:?} to stop with a RECV waiting"
    );
    let (res, bytes, ended) = reader.join().unwrap();
    assert!(
        ended.duration_since(start) < Duration::from_secs(3),
        "the RECV connection stayed open {:?} after the SIGTERM",
        ended.duration_since(start)
    );
    let reset = res == Err(std::io::ErrorKind::ConnectionReset);
    assert!(res.is_ok() || reset, "{res:?}");
    if !bytes.is_empty() {
        // A reply before the close must be a whole RECV reply (empty, or an error).
        let (h, body) = clove_tests::read_frame(&mut bytes.as_slice()).unwrap();
        assert_eq!(h.opcode, RECV);
        let r: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(r["messages"], json!([]), "{r}");
    }
    eprintln!(
        "kernel stopped {stopped:?} after SIGTERM; the waiting RECV got {} bytes",
        bytes.len()
    );
}

/// A client that closes its connection while its RECV waits is gone: its name and mailbox
/// are released at once, not when the wait would have ended.
#[test]
fn closing_during_a_recv_wait_releases_the_connection() {
    const REGISTER: u8 = 0x23;
    let kernel = Kernel::start().unwrap();
    let mut ghost = JsonConn::open(&kernel).unwrap();
    let r = ghost.call(REGISTER, json!({"name": "ghost"})).unwrap();
    assert_eq!(r["success"], true, "{r}");
    let ghost_id = ghost.id;
    let body = json!({"max": 1, "wait_ms": 30000}).to_string();
    clove_tests::send_frame(
        &mut ghost.stream,
        clove_abi::Codec::Json,
        RECV,
        body.as_bytes(),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    drop(ghost);

    let mut other = JsonConn::open(&kernel).unwrap();
    let start = Instant::now();
    loop {
        let r = other.call(REGISTER, json!({"name": "ghost"})).unwrap();
        if r["success"] == true {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "the name of a connection closed during a RECV wait is still taken: {r}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = other
        .call(SEND, json!({"to": ghost_id, "message": "anyone?"}))
        .unwrap();
    assert_eq!(r["code"], "not_found", "{r}");
}
