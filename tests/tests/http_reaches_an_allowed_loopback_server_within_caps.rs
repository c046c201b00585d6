//! HTTP against a loopback server the test starts (tests/src/http_server.rs), which the kernel
//! may reach because `--http-allow-private 127.0.0.1/32` opens exactly that address: method,
//! headers and body arrive; the real status code and the response headers come back; the
//! size cap, the timeout and the redirect checks hold; async requests come back through
//! ASYNC_POLL, and a full queue refuses more. Agents need `can_http`, the host in `network`
//! and the method in `http_methods`.
//!
//! Every URL here is on 127.0.0.0/8 or ::1: even a broken check sends nothing off the machine.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use clove_abi::msg::Permissions;
use clove_tests::http_server::TestServer;
use clove_tests::{
    agents_can_run, client, gather_events, plan_request, plan_step, spawn_ok, subscribe_events,
    JsonConn, Kernel, KernelOpts,
};
use serde_json::{json, Value};

const HTTP: u8 = 0x50;
const ASYNC_POLL: u8 = 0x80;
const RECV: u8 = 0x21;

fn kernel(extra: &[&str]) -> Kernel {
    let mut args = vec!["--http-allow-private".to_owned(), "127.0.0.1/32".to_owned()];
    args.extend(extra.iter().map(|s| s.to_string()));
    Kernel::start_with(KernelOpts {
        args,
        ..KernelOpts::default()
    })
    .unwrap()
}

fn refused(reply: &Value, code: &str, mentions: &str) {
    assert_eq!(reply["success"], false, "{reply}");
    assert_eq!(reply["code"], code, "{reply}");
    let error = reply["error"].as_str().unwrap();
    assert!(error.contains(mentions), "{mentions:?} not in {error:?}");
}

#[test]
fn http_round_trips_method_headers_body_status_and_response_headers() {
    let server = TestServer::start().unwrap();
    let kernel = kernel(&[]);
    let mut c = JsonConn::open(&kernel).unwrap();

    let r = c
        .call(
            HTTP,
            json!({"url": server.url("/echo?x=1"), "method": "post",
                   "headers": {"X-Test": "hello", "Content-Type": "text/plain",
                               "Host": "evil.test", "Connection": "keep-alive"},
                   "body": "the body ✓"}),
        )
        .unwrap();
    assert_eq!(r["success"], true, "{r}");
    assert_eq!(r["status_code"], 200, "{r}");
    assert_eq!(r["headers"]["x-echo"], "yes", "{r}");
    assert_eq!(r["headers"]["x-multi"], "a, b", "{r}");
    assert!(r["headers"]
        .as_object()
        .unwrap()
        .keys()
        .all(|k| *k == k.to_lowercase()));
    let echo: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/echo?x=1");
    assert_eq!(echo["body"], "the body ✓");
    assert_eq!(echo["headers"]["x-test"], "hello");
    assert_eq!(echo["headers"]["content-type"], "text/plain");
    // The kernel sets Host itself; the caller's is dropped.
    assert_eq!(
        echo["headers"]["host"],
        format!("127.0.0.1:{}", server.port()),
        "{echo}"
    );

    // GET by default, with the original's reply shape plus headers.
    let r = c.call(HTTP, json!({"url": server.url("/echo")})).unwrap();
    let echo: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
    assert_eq!(echo["method"], "GET");
    let keys: Vec<&String> = r.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["body", "headers", "status_code", "success"], "{r}");

    // Real status codes: an error status is still a response (success: true).
    for code in [404, 500, 201] {
        let r = c
            .call(HTTP, json!({"url": server.url(&format!("/status/{code}"))}))
            .unwrap();
        assert_eq!(
            (r["success"].clone(), r["status_code"].clone()),
            (json!(true), json!(code)),
            "{r}"
        );
        assert_eq!(r["body"], format!("status {code}"));
    }
    // A body that is not UTF-8 comes back lossily converted.
    let r = c.call(HTTP, json!({"url": server.url("/binary")})).unwrap();
    assert_eq!(r["body"], "\u{FFFD}\u{FFFD}A", "{r}");

    // A redirect to an allowed place is followed; a 302 after a POST becomes a GET.
    let to = server.url("/echo");
    let r = c
        .call(
            HTTP,
            json!({"url": server.url(&format!("/redirect/302?to={to}")), "method": "POST", "body": "x"}),
        )
        .unwrap();
    assert_eq!(r["status_code"], 200, "{r}");
    let echo: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        (echo["method"].as_str(), echo["body"].as_str()),
        (Some("GET"), Some(""))
    );
    // 307 keeps the method and body.
    let r = c
        .call(
            HTTP,
            json!({"url": server.url(&format!("/redirect/307?to={to}")), "method": "PUT", "body": "kept"}),
        )
        .unwrap();
    let echo: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        (echo["method"].as_str(), echo["body"].as_str()),
        (Some("PUT"), Some("kept"))
    );

    // Bad requests name the problem.
    let r = c.call(HTTP, json!({"url": "ftp://127.0.0.1/"})).unwrap();
    refused(&r, "invalid_request", "only http and https");
    let r = c
        .call(
            HTTP,
            json!({"url": server.url("/"), "method": "BAD METHOD"}),
        )
        .unwrap();
    refused(&r, "invalid_request", "not an HTTP method");

    // Every request is audited (NETWORK): URL, method, status; never headers or bodies.
    let log = c
        .call(0x76, json!({"category": "NETWORK", "limit": 1000}))
        .unwrap();
    let entries = log["entries"].as_array().unwrap();
    assert!(
        entries.iter().any(|e| e["event_type"] == "HTTP_REQUEST"
            && e["success"] == true
            && e["details"]["status_code"] == 404),
        "{log}"
    );
    assert!(entries
        .iter()
        .any(|e| e["success"] == false && e["details"]["error"]["code"] == "invalid_request"));
}

#[test]
fn http_caps_size_and_time_and_checks_every_redirect() {
    let server = TestServer::start().unwrap();
    let kernel = kernel(&["--http-max-response", "10000"]);
    let mut c = JsonConn::open(&kernel).unwrap();

    // Exactly the cap is fine; one byte more is refused, known length or streamed.
    let r = c
        .call(HTTP, json!({"url": server.url("/big/10000")}))
        .unwrap();
    assert_eq!(
        r["body"].as_str().map(str::len),
        Some(10000),
        "status {}",
        r["status_code"]
    );
    for path in ["/big/10001", "/stream/10001", "/stream/1000000"] {
        let r = c.call(HTTP, json!({"url": server.url(path)})).unwrap();
        refused(&r, "limit_exceeded", "http_max_response (10000 bytes)");
    }
    let r = c
        .call(HTTP, json!({"url": server.url("/stream/9000")}))
        .unwrap();
    assert_eq!(r["body"].as_str().map(str::len), Some(9000));

    // A server that never answers: the request ends at its timeout.
    let start = Instant::now();
    let r = c
        .call(HTTP, json!({"url": server.url("/hang"), "timeout": 0.5}))
        .unwrap();
    refused(&r, "timeout", "no complete response within 0.5 s");
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "{:?}",
        start.elapsed()
    );

    // A redirect to a loopback address outside the allow-list is refused before it is
    // followed; so is one to a metadata host name, and to another scheme.
    let before = server.connections();
    for (to, says) in [
        (
            format!("http://127.0.0.2:{}/echo", server.port()),
            "127.0.0.2 is a loopback address",
        ),
        (
            format!("http://[::1]:{}/echo", server.port()),
            "::1 is a loopback address",
        ),
        (
            "http://metadata.google.internal/".to_owned(),
            "cloud metadata host name",
        ),
    ] {
        let r = c
            .call(
                HTTP,
                json!({"url": server.url(&format!("/redirect/302?to={to}"))}),
            )
            .unwrap();
        refused(&r, "permission_denied", says);
        assert!(
            r["error"].as_str().unwrap().contains("redirect from"),
            "{r}"
        );
    }
    let r = c
        .call(
            HTTP,
            json!({"url": server.url("/redirect/302?to=file:///etc/passwd")}),
        )
        .unwrap();
    refused(&r, "invalid_request", "only http and https");
    // Only the redirecting requests reached the server.
    assert_eq!(server.connections(), before + 4);

    // A redirect loop ends.
    let own = server.url("/redirect/302?to=/redirect/302");
    let r = c.call(HTTP, json!({"url": own})).unwrap();
    refused(&r, "limit_exceeded", "more than 10 redirects");
}

#[test]
fn async_http_comes_back_through_async_poll_and_a_full_queue_refuses_more() {
    let server = TestServer::start().unwrap();
    let kernel = kernel(&["--async-results", "3"]);
    let mut c = JsonConn::open(&kernel).unwrap();

    let r = c
        .call(
            HTTP,
            json!({"url": server.url("/slow/300"), "async": true, "request_id": 41}),
        )
        .unwrap();
    assert_eq!(
        r,
        json!({"success": true, "status_code": 0, "body": "", "async": true,
               "request_id": 41, "status": "accepted"})
    );
    let r = c
        .call(
            HTTP,
            json!({"url": server.url("/status/404"), "async": true}),
        )
        .unwrap();
    let picked = r["request_id"].as_u64().unwrap();
    assert_ne!(picked, 41);
    // A refusal is answered at once, not queued.
    let r = c
        .call(HTTP, json!({"url": "http://127.0.0.9/", "async": true}))
        .unwrap();
    refused(&r, "permission_denied", "127.0.0.9 is a loopback address");

    // With a wait, ASYNC_POLL returns as soon as a result is ready.
    let mut got: Vec<Value> = Vec::new();
    let start = Instant::now();
    while got.len() < 2 && start.elapsed() < Duration::from_secs(30) {
        let r = c
            .call(ASYNC_POLL, json!({"max": 10, "wait_ms": 10000}))
            .unwrap();
        assert_eq!(r["success"], true, "{r}");
        assert_eq!(
            r["count"].as_u64().unwrap() as usize,
            r["results"].as_array().unwrap().len()
        );
        got.extend(r["results"].as_array().unwrap().iter().cloned());
    }
    assert_eq!(got.len(), 2, "{got:?}");
    // The fast one first: results come in the order they finish.
    assert_eq!(got[0]["request_id"], picked);
    assert_eq!(got[1]["request_id"], 41);
    for g in &got {
        assert_eq!(
            (g["opcode"].as_u64(), g["opcode_name"].as_str()),
            (Some(0x50), Some("HTTP"))
        );
    }
    let first: Value = serde_json::from_str(got[0]["payload"].as_str().unwrap()).unwrap();
    assert_eq!(
        (first["success"].as_bool(), first["status_code"].as_u64()),
        (Some(true), Some(404))
    );
    let second: Value = serde_json::from_str(got[1]["payload"].as_str().unwrap()).unwrap();
    assert_eq!(second["body"], "slow");
    // Taken results are gone; without a wait the answer is immediate.
    let r = c.call(ASYNC_POLL, json!({})).unwrap();
    assert_eq!(r, json!({"success": true, "results": [], "count": 0}));

    // A wait with nothing in flight ends at its time.
    let start = Instant::now();
    let r = c.call(ASYNC_POLL, json!({"wait_ms": 200})).unwrap();
    assert_eq!(r["count"], 0);
    assert!(start.elapsed() >= Duration::from_millis(200));

    // Three in flight fill this caller's queue (async_results = 3): the fourth is refused,
    // and nothing accepted is lost. Another connection has its own queue.
    for i in 0..3 {
        let r = c
            .call(
                HTTP,
                json!({"url": server.url("/slow/500"), "async": true, "request_id": 100 + i}),
            )
            .unwrap();
        assert_eq!(r["status"], "accepted", "{r}");
    }
    let r = c
        .call(HTTP, json!({"url": server.url("/echo"), "async": true}))
        .unwrap();
    refused(&r, "limit_exceeded", "async_results = 3");
    let mut other = JsonConn::open(&kernel).unwrap();
    let r = other
        .call(
            HTTP,
            json!({"url": server.url("/echo"), "async": true, "request_id": 7}),
        )
        .unwrap();
    assert_eq!(r["status"], "accepted", "{r}");
    let r = other.call(ASYNC_POLL, json!({"wait_ms": 10000})).unwrap();
    assert_eq!(r["results"][0]["request_id"], 7, "{r}");

    let mut ids = Vec::new();
    let start = Instant::now();
    while ids.len() < 3 && start.elapsed() < Duration::from_secs(30) {
        let r = c
            .call(ASYNC_POLL, json!({"max": 1, "wait_ms": 10000}))
            .unwrap();
        assert!(r["count"].as_u64().unwrap() <= 1, "{r}");
        ids.extend(
            r["results"]
                .as_array()
                .unwrap()
                .iter()
                .map(|g| g["request_id"].as_u64().unwrap()),
        );
    }
    ids.sort_unstable();
    assert_eq!(ids, [100, 101, 102]);
    // Room again.
    let r = c
        .call(HTTP, json!({"url": server.url("/echo"), "async": true}))
        .unwrap();
    assert_eq!(r["status"], "accepted", "{r}");
}

#[test]
fn agents_need_can_http_their_host_and_their_method() {
    if !agents_can_run("agents_need_can_http_their_host_and_their_method") {
        return;
    }
    let server = TestServer::start().unwrap();
    let kernel = kernel(&[]);
    let mut blocked = subscribe_events(&kernel, &["SYSCALL_BLOCKED"]).unwrap();
    let mut c = client(&kernel).unwrap();
    let stay = json!({"op": RECV, "payload": {"max": 1, "wait_ms": 60000}});
    let get = json!({"op": HTTP, "payload": {"url": server.url("/echo")}});
    let post = json!({"op": HTTP, "payload": {"url": server.url("/echo"), "method": "POST"}});
    let plan = json!([get, post, stay]);

    let mut with = |name: &str, network: &[&str], can_http: bool| {
        let mut req = plan_request(name, &plan);
        req.permissions = Some(Permissions {
            can_http,
            network: network.iter().map(|s| s.to_string()).collect(),
            http_methods: vec!["GET".into()],
            ..Permissions::default()
        });
        spawn_ok(&mut c, &req).unwrap().id
    };
    let allowed = with("fetcher", &["127.0.0.1"], true);
    let other_host = with("elsewhere", &["*.example.com"], true);
    let no_http = with("no-http", &["127.0.0.1"], false);
    let standard = spawn_ok(&mut c, &plan_request("standard", &plan))
        .unwrap()
        .id;
    let step = |id: u32, i: usize| {
        plan_step(&kernel, id, i, Duration::from_secs(30)).unwrap()["reply"].clone()
    };

    let ok = step(allowed, 0);
    assert_eq!(
        (ok["success"].as_bool(), ok["status_code"].as_u64()),
        (Some(true), Some(200)),
        "{ok}"
    );
    refused(
        &step(allowed, 1),
        "permission_denied",
        "method POST is not in its http_methods",
    );
    refused(
        &step(other_host, 0),
        "permission_denied",
        "host 127.0.0.1 is not in its network list",
    );
    refused(&step(no_http, 0), "permission_denied", "can_http is off");
    refused(&step(standard, 0), "permission_denied", "can_http is off");
    // Only the one allowed request reached the server.
    let seen = server.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].method, "GET");

    let mut all = Vec::new();
    gather_events(&mut blocked, &mut all, Duration::from_secs(10), |evs| {
        evs.len() >= 7
    })
    .unwrap();
    assert!(
        all.iter().all(|e| e["data"]["opcode"]
            .as_str()
            .is_some_and(|o| o.contains("HTTP"))),
        "{all:#?}"
    );
}
