//! THINK through an OpenAI-compatible provider configured in the kernel, against a stand-in
//! on loopback started by the test (tests/src/http_server.rs): the kernel sends the key the
//! operator configured (from the environment variable named in the config), maps the answer,
//! and the key appears in no reply and no log line, not even when the provider's error
//! quotes it back (as OpenAI's "Incorrect API key provided: ..." does).

#![allow(clippy::unwrap_used)]

use clove_tests::http_server::TestServer;
use clove_tests::{JsonConn, Kernel, KernelOpts};
use serde_json::json;

const THINK: u8 = 0x01;
const KEY: &str = "sk-test-5ecret-DO-NOT-SHOW-4f2b";

#[test]
fn the_key_is_sent_to_the_provider_and_never_shown() {
    let server = TestServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("clove.toml");
    std::fs::write(
        &config,
        format!(
            "[llm]\nprovider = \"ok\"\nretries = 0\n\
             [llm.providers.ok]\nkind = \"openai\"\nbase_url = \"{}\"\n\
             api_key_env = \"CLOVE_TEST_LLM_KEY\"\nmodel = \"gpt-test\"\n\
             [llm.providers.bad]\nkind = \"openai\"\nbase_url = \"{}\"\n\
             api_key_env = \"CLOVE_TEST_LLM_KEY\"\n",
            server.url("/openai/ok"),
            server.url("/openai/badkey"),
        ),
    )
    .unwrap();
    let kernel = Kernel::start_with(KernelOpts {
        args: vec!["--config".into(), config.display().to_string()],
        env: vec![
            ("CLOVE_TEST_LLM_KEY".into(), KEY.into()),
            // Everything the kernel logs, to search it for the key.
            ("CLOVE_LOG".into(), "debug".into()),
        ],
        capture_stderr: true,
        ..KernelOpts::default()
    })
    .unwrap();
    let mut c = JsonConn::open(&kernel).unwrap();

    let r = c.call(THINK, json!({"prompt": "ping"})).unwrap();
    assert_eq!(r["success"], true, "{r}");
    assert_eq!(r["content"], "you said: ping", "{r}");
    assert_eq!(r["provider"], "openai", "{r}");
    assert_eq!(r["model"], "stand-in-1", "{r}");
    assert_eq!(r["usage"], json!({"input": 11, "output": 5}), "{r}");
    assert_eq!(r["tokens"], 16, "{r}");
    let seen = server.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].target, "/openai/ok/chat/completions");
    assert_eq!(
        seen[0].authorization.as_deref(),
        Some(format!("Bearer {KEY}").as_str())
    );

    // The provider rejects the key and quotes it: the caller learns why, not the key.
    let r = c
        .call(THINK, json!({"prompt": "ping", "model": "bad:gpt-test"}))
        .unwrap();
    assert_eq!(r["success"], false, "{r}");
    let text = r.to_string();
    assert!(text.contains("Incorrect API key provided"), "{text}");
    assert!(text.contains("HTTP 401"), "{text}");
    assert!(!text.contains(KEY), "the key leaked into the reply: {text}");
    assert!(!text.contains("5ecret"), "part of the key leaked: {text}");

    drop(c);
    let (_, log) = kernel.stop_and_collect().unwrap();
    assert!(log.contains("LLM"), "the log was not captured: {log}");
    assert!(!log.contains(KEY), "the key leaked into the log");
    assert!(
        !log.contains("5ecret"),
        "part of the key leaked into the log"
    );
}
