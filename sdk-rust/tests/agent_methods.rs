//! The typed lifecycle methods of both clients against a fake kernel, in both codecs: what
//! each sends (the kernel records it) and what each returns.

#![allow(clippy::unwrap_used)]

mod fake_agents;

use std::time::Duration;

use clove_sdk::msg::{AgentRef, AgentState, LogsRequest, SpawnRequest};
use clove_sdk::{Client, Codec, ErrorCode, Opcode};
use fake_agents::FakeAgents;
use serde_json::json;

const CODECS: [Codec; 2] = [Codec::Postcard, Codec::Json];

fn client(kernel: &FakeAgents, codec: Codec) -> Client {
    let mut c = Client::connect(Some(&kernel.socket))
        .unwrap()
        .with_codec(codec);
    c.set_timeout(Some(Duration::from_secs(10))).unwrap();
    c
}

#[test]
fn blocking_methods_send_the_typed_requests() {
    for codec in CODECS {
        let kernel = FakeAgents::start();
        let mut c = client(&kernel, codec);

        let mut req = SpawnRequest::new("w", "/srv/w.py");
        req.args = vec!["--x".into()];
        let reply = c.spawn(&req).unwrap();
        assert_eq!((reply.id, reply.pid, reply.name.as_str()), (7, 4242, "w"));
        assert_eq!(reply.isolation.not_applied, ["landlock"]);
        let sent = &kernel.requests(Opcode::Spawn)[0];
        assert_eq!(sent["name"], "w");
        assert_eq!(sent["args"], json!(["--x"]));

        assert_eq!(c.kill(AgentRef::Id(5)).unwrap().agent_id, 5);
        assert!(c.pause(AgentRef::Name("w")).unwrap().paused);
        assert!(c.resume(AgentRef::Id(5)).unwrap().resumed);
        assert_eq!(kernel.requests(Opcode::Kill), [json!({"id": 5})]);
        assert_eq!(kernel.requests(Opcode::Pause), [json!({"name": "w"})]);
        assert_eq!(kernel.requests(Opcode::Resume), [json!({"id": 5})]);

        let rows = c.list().unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].state, AgentState::Running);
        assert_eq!(c.list_detail().unwrap().len(), 3);
        assert_eq!(
            kernel.requests(Opcode::List),
            [json!({"detail": false}), json!({"detail": true})]
        );

        let w = c
            .wait(AgentRef::Id(8), Some(Duration::from_millis(1500)))
            .unwrap();
        assert!(w.exited && w.oom);
        assert_eq!(w.signal, Some(9));
        assert!(!c.wait(AgentRef::Id(9), None).unwrap().exited);
        assert_eq!(
            kernel.requests(Opcode::Wait),
            [json!({"id": 8, "timeout_ms": 1500}), json!({"id": 9})]
        );

        let logs = c
            .logs(&LogsRequest {
                id: Some(7),
                lines: 2,
                ..LogsRequest::default()
            })
            .unwrap();
        assert_eq!(logs.text, "line 4\nline 5\n");
        assert_eq!(logs.next_offset, 35);

        assert!(kernel.seen().iter().all(|s| s.codec == codec), "{codec:?}");
    }
}

#[test]
fn kernel_errors_come_back_typed() {
    let kernel = FakeAgents::start();
    let mut c = client(&kernel, Codec::Postcard);
    let e = c.kill(AgentRef::Name("ghost")).unwrap_err();
    assert_eq!(e.code(), Some(&ErrorCode::NotFound));
    assert!(
        e.to_string().contains("no live agent named \"ghost\""),
        "{e}"
    );
    // The connection stays usable after a kernel error.
    assert_eq!(c.list().unwrap().len(), 2);
}

#[cfg(feature = "async")]
#[tokio::test]
async fn async_methods_match_the_blocking_ones() {
    for codec in CODECS {
        let kernel = FakeAgents::start();
        let mut c = clove_sdk::AsyncClient::connect(Some(&kernel.socket))
            .await
            .unwrap()
            .with_codec(codec);
        let reply = c.spawn(&SpawnRequest::new("a", "/a.py")).await.unwrap();
        assert_eq!(reply.id, 7);
        assert_eq!(c.kill(AgentRef::Name("a")).await.unwrap().agent_id, 7);
        assert!(c.pause(AgentRef::Id(3)).await.unwrap().paused);
        assert!(c.resume(AgentRef::Id(3)).await.unwrap().resumed);
        assert_eq!(c.list().await.unwrap().len(), 2);
        assert_eq!(c.list_detail().await.unwrap().len(), 3);
        let w = c
            .wait(AgentRef::Name("worker"), Some(Duration::from_secs(2)))
            .await
            .unwrap();
        assert_eq!(w.exit_code, Some(0));
        let logs = c
            .logs(&LogsRequest {
                id: Some(7),
                offset: Some(35),
                wait_ms: Some(100),
                ..LogsRequest::default()
            })
            .await
            .unwrap();
        assert_eq!((logs.text.as_str(), logs.running), ("more\n", true));
        assert_eq!(
            kernel.requests(Opcode::Wait),
            [json!({"name": "worker", "timeout_ms": 2000})]
        );
        assert_eq!(
            kernel.requests(Opcode::Logs),
            [json!({"id": 7, "lines": 100, "offset": 35, "wait_ms": 100})]
        );
    }
}
