//! THINK through the kernel against the simulated provider (no network): the reply's shape
//! and labels, model routing, request checks, async THINK through ASYNC_POLL, LLM_STATS;
//! agents' quotas (calls, tokens with `max_tokens` lowered to what is left, LLM_REPORT,
//! can_think); and cancellation: a queued request whose client goes leaves the queue, a
//! running one frees its slot at once, and an agent's calls end with its process.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use clove_abi::msg::{LlmPerms, Permissions};
use clove_abi::Codec;
use clove_tests::{
    agents_can_run, client, plan_request, plan_step, send_frame, spawn_ok, JsonConn, Kernel,
    KernelOpts,
};
use serde_json::{json, Value};

const THINK: u8 = 0x01;
const RECV: u8 = 0x21;
const GET_PERMS: u8 = 0x40;
const ASYNC_POLL: u8 = 0x80;
const LLM_STATS: u8 = 0xD6;
const LLM_REPORT: u8 = 0xF0;

/// A kernel whose default provider is a simulated one with `latency_ms` per call (and no
/// per-token latency), at most `in_flight` calls at once.
fn kernel(latency_ms: u64, in_flight: usize) -> Kernel {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("clove.toml");
    std::fs::write(
        &config,
        format!(
            "[llm]\nprovider = \"sim\"\nmax_in_flight = {in_flight}\n\
             [llm.providers.sim]\nkind = \"simulated\"\nlatency_ms = {latency_ms}\n\
             ms_per_input_token = 0\nms_per_output_token = 0\n"
        ),
    )
    .unwrap();
    let k = Kernel::start_with(KernelOpts {
        args: vec!["--config".into(), config.display().to_string()],
        ..KernelOpts::default()
    })
    .unwrap();
    // The kernel has read its config.
    drop(dir);
    k
}

fn refused(reply: &Value, code: &str, mentions: &str) {
    assert_eq!(reply["success"], false, "{reply}");
    assert_eq!(reply["code"], code, "{reply}");
    let error = reply["error"].as_str().unwrap();
    assert!(error.contains(mentions), "{mentions:?} not in {error:?}");
}

fn scheduler(kernel: &Kernel) -> Value {
    let mut c = JsonConn::open(kernel).unwrap();
    let r = c.call(LLM_STATS, json!({})).unwrap();
    assert_eq!(r["success"], true, "{r}");
    r["scheduler"].clone()
}

/// Polls LLM_STATS until `check` holds for the scheduler's figures, up to `limit`.
fn wait_scheduler(kernel: &Kernel, limit: Duration, check: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let s = scheduler(kernel);
        if check(&s) || start.elapsed() > limit {
            return s;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn think_answers_with_labels_routes_models_checks_requests_and_goes_async() {
    let kernel = kernel(1, 4);
    let mut c = JsonConn::open(&kernel).unwrap();

    let r = c
        .call(THINK, json!({"prompt": "x".repeat(40), "max_tokens": 7}))
        .unwrap();
    assert_eq!(r["success"], true, "{r}");
    assert_eq!(r["provider"], "simulated", "{r}");
    assert_eq!(r["model"], "simulated", "{r}");
    assert_eq!(r["usage"], json!({"input": 10, "output": 7}), "{r}");
    assert_eq!(r["tokens"], 17, "{r}");
    assert!(r["queue_ms"].is_u64(), "{r}");
    assert!(r["content"]
        .as_str()
        .unwrap()
        .starts_with("[simulated answer"));

    // PROVIDER:MODEL routes to that provider and model.
    let r = c
        .call(THINK, json!({"prompt": "hi", "model": "simulated:tiny-1"}))
        .unwrap();
    assert_eq!(r["model"], "tiny-1", "{r}");
    assert_eq!(r["provider"], "simulated", "{r}");

    refused(
        &c.call(THINK, json!({"prompt": "  "})).unwrap(),
        "invalid_request",
        "prompt",
    );
    refused(
        &c.call(THINK, json!({"prompt": "a", "temperature": 3.0}))
            .unwrap(),
        "invalid_request",
        "temperature",
    );
    refused(
        &c.call(THINK, json!({"prompt": "a", "tools": {"name": "f"}}))
            .unwrap(),
        "invalid_request",
        "tools",
    );
    refused(
        &c.call(
            THINK,
            json!({"prompt": "a", "tools": [{"description": "no name"}]}),
        )
        .unwrap(),
        "invalid_request",
        "tools[0]",
    );
    refused(
        &c.call(
            THINK,
            json!({"prompt": "a", "image": {"data": "AAAA", "mime_type": "text/plain"}}),
        )
        .unwrap(),
        "invalid_request",
        "mime_type",
    );

    // Async: the original's accept reply, then the answer through ASYNC_POLL.
    let r = c
        .call(
            THINK,
            json!({"prompt": "later", "async": true, "request_id": 42, "max_tokens": 3}),
        )
        .unwrap();
    assert_eq!(
        r,
        json!({"success": true, "content": "", "tokens": 0, "async": true,
               "request_id": 42, "status": "accepted"})
    );
    let polled = c
        .call(ASYNC_POLL, json!({"max": 10, "wait_ms": 5000}))
        .unwrap();
    assert_eq!(polled["count"], 1, "{polled}");
    let result = &polled["results"][0];
    assert_eq!(result["request_id"], 42, "{polled}");
    assert_eq!(result["opcode"], THINK, "{polled}");
    let answer: Value = serde_json::from_str(result["payload"].as_str().unwrap()).unwrap();
    assert_eq!(answer["success"], true, "{polled}");
    assert_eq!(answer["usage"]["output"], 3, "{polled}");

    // LLM_STATS: this connection's row counts the three answered calls and the failures
    // that reached the scheduler (none: the refusals above were checks before the queue).
    let stats = c.call(LLM_STATS, json!({})).unwrap();
    assert_eq!(stats["provider"], "simulated", "{stats}");
    assert_eq!(stats["scheduler"]["policy"], "vtc", "{stats}");
    assert_eq!(stats["scheduler"]["max_in_flight"], 4, "{stats}");
    let rows = stats["agents"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{stats}");
    assert_eq!(rows[0]["calls"], 3, "{stats}");
    assert_eq!(rows[0]["errors"], 0, "{stats}");
    assert_eq!(rows[0]["output_tokens"], 7 + 16 + 3, "{stats}");
    assert_eq!(rows[0]["queued"], 0, "{stats}");
    assert_eq!(rows[0]["in_flight"], 0, "{stats}");

    // LLM_REPORT from an operator: counted, no quota.
    let r = c
        .call(LLM_REPORT, json!({"tokens": 100, "success": true}))
        .unwrap();
    assert_eq!(
        r,
        json!({"success": true, "tokens": 100, "quota_exceeded": false})
    );
    let stats = c.call(LLM_STATS, json!({})).unwrap();
    assert_eq!(stats["agents"][0]["reported_tokens"], 100, "{stats}");
}

#[test]
fn a_queued_or_running_think_whose_client_goes_is_dropped_at_once() {
    // One call at a time, each taking 3 s: a second one waits in the queue.
    let kernel = kernel(3000, 1);
    let mut running = JsonConn::open(&kernel).unwrap();
    // Sent without waiting for the answer.
    let think = json!({"prompt": "slow"}).to_string();
    send_frame(&mut running.stream, Codec::Json, THINK, think.as_bytes()).unwrap();
    let s = wait_scheduler(&kernel, Duration::from_secs(5), |s| s["in_flight"] == 1);
    assert_eq!(s["in_flight"], 1, "{s}");

    let mut queued = JsonConn::open(&kernel).unwrap();
    send_frame(&mut queued.stream, Codec::Json, THINK, think.as_bytes()).unwrap();
    let s = wait_scheduler(&kernel, Duration::from_secs(5), |s| s["queued"] == 1);
    assert_eq!(s["queued"], 1, "{s}");

    // The waiting client goes: its request leaves the queue, well before the running call
    // (3 s) would have let it through.
    let gone = Instant::now();
    drop(queued);
    let s = wait_scheduler(&kernel, Duration::from_secs(2), |s| s["queued"] == 0);
    assert_eq!(s["queued"], 0, "{s}");
    assert_eq!(s["in_flight"], 1, "{s}");
    // The running client goes: its slot is free at once, not after the provider's 3 s.
    drop(running);
    let s = wait_scheduler(&kernel, Duration::from_secs(2), |s| s["in_flight"] == 0);
    assert_eq!(s["in_flight"], 0, "{s}");
    assert!(
        gone.elapsed() < Duration::from_millis(2500),
        "the slot was held {:?}",
        gone.elapsed()
    );

    // The slot serves the next caller.
    let mut next = JsonConn::open(&kernel).unwrap();
    let r = next.call(THINK, json!({"prompt": "next"})).unwrap();
    assert_eq!(r["success"], true, "{r}");
}

/// A plan step that keeps the agent alive (a RECV waiting 60 s), so that its LLM figures are
/// still there to read: they go with an agent that exits for good.
fn linger() -> Value {
    json!({"op": RECV, "payload": {"max": 1, "wait_ms": 60_000}})
}

/// The parsed reply of step `i` of a plan agent.
fn step(kernel: &Kernel, id: u32, i: usize) -> Value {
    plan_step(kernel, id, i, Duration::from_secs(30)).unwrap()["reply"].clone()
}

#[test]
fn agent_quotas_hold_and_are_reported() {
    if !agents_can_run("agent_quotas_hold_and_are_reported") {
        return;
    }
    let kernel = kernel(1, 4);
    let mut c = client(&kernel).unwrap();
    let think = |prompt: &str, max: u32| json!({"op": THINK, "payload": {"prompt": prompt, "max_tokens": max}});

    // Two calls allowed: the third is refused before it is queued.
    let mut req = plan_request(
        "two-calls",
        &json!([think("a", 5), think("b", 5), think("c", 5),
                {"op": GET_PERMS, "payload": {}}, linger()]),
    );
    req.permissions = Some(Permissions {
        llm: LlmPerms {
            max_calls: 2,
            ..LlmPerms::default()
        },
        ..Permissions::default()
    });
    let id = spawn_ok(&mut c, &req).unwrap().id;
    assert_eq!(step(&kernel, id, 0)["success"], true);
    assert_eq!(step(&kernel, id, 1)["success"], true);
    refused(&step(&kernel, id, 2), "limit_exceeded", "max_calls");
    let perms = step(&kernel, id, 3);
    assert_eq!(perms["permissions"]["llm"]["calls_made"], 2, "{perms}");
    // Two answers of 1 + 5 tokens.
    assert_eq!(perms["permissions"]["llm"]["tokens_used"], 12, "{perms}");

    // 40 tokens: the first call asks for 100 answer tokens and gets what is left after its
    // prompt (40 - 5 = 35); nothing is left for a second; LLM_REPORT says so too.
    let mut req = plan_request(
        "forty-tokens",
        &json!([think(&"p".repeat(20), 100), think("again", 1),
                {"op": LLM_REPORT, "payload": {"tokens": 3}}, linger()]),
    );
    req.permissions = Some(Permissions {
        llm: LlmPerms {
            max_tokens: 40,
            ..LlmPerms::default()
        },
        ..Permissions::default()
    });
    let id = spawn_ok(&mut c, &req).unwrap().id;
    let first = step(&kernel, id, 0);
    assert_eq!(first["success"], true, "{first}");
    assert_eq!(first["usage"], json!({"input": 5, "output": 35}), "{first}");
    refused(&step(&kernel, id, 1), "limit_exceeded", "max_tokens");
    let report = step(&kernel, id, 2);
    assert_eq!(report["success"], false, "{report}");
    assert_eq!(report["quota_exceeded"], true, "{report}");
    assert!(
        report["error"].as_str().unwrap().contains("quota"),
        "{report}"
    );

    // can_think off: refused as a permission.
    let mut req = plan_request("no-think", &json!([think("a", 5)]));
    req.permissions = Some(Permissions {
        can_think: false,
        ..Permissions::default()
    });
    let id = spawn_ok(&mut c, &req).unwrap().id;
    refused(&step(&kernel, id, 0), "permission_denied", "can_think");

    // The operator sees its agents' rows (root sees all).
    let mut op = JsonConn::open(&kernel).unwrap();
    let stats = op.call(LLM_STATS, json!({})).unwrap();
    let names: Vec<&str> = stats["agents"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert!(names.contains(&"two-calls"), "{stats}");
    assert!(names.contains(&"forty-tokens"), "{stats}");
}

#[test]
fn an_agents_running_think_ends_with_its_process() {
    if !agents_can_run("an_agents_running_think_ends_with_its_process") {
        return;
    }
    let kernel = kernel(60_000, 1);
    let mut c = client(&kernel).unwrap();
    let req = plan_request(
        "thinker",
        &json!([{"op": THINK, "payload": {"prompt": "forever"}}]),
    );
    let id = spawn_ok(&mut c, &req).unwrap().id;
    let s = wait_scheduler(&kernel, Duration::from_secs(20), |s| s["in_flight"] == 1);
    assert_eq!(s["in_flight"], 1, "{s}");
    c.kill(clove_abi::msg::AgentRef::Id(id)).unwrap();
    let s = wait_scheduler(&kernel, Duration::from_secs(2), |s| s["in_flight"] == 0);
    assert_eq!(s["in_flight"], 0, "the agent's call outlived it: {s}");
}
