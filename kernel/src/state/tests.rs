//! The store's rules, one test each, against real SQLite files in temporary dirs.
//!
//! TTL tests use short TTLs and sleep past them; nothing here asserts on speed.

use std::future::Future;
use std::io::BufRead;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use clove_abi::msg::state::StateScope::{Agent, Global, Session};
use serde_json::json;

use super::*;

const A: u32 = 7;
const B: u32 = 8;

fn open(dir: &Path) -> StateStore {
    StateStore::open(dir, StateLimits::default()).unwrap()
}

fn req(key: &str, value: serde_json::Value, scope: StateScope) -> StoreRequest {
    StoreRequest {
        key: key.to_owned(),
        value: Json(value),
        scope,
        ttl: None,
        if_version: None,
    }
}

fn ttl(mut r: StoreRequest, secs: f64) -> StoreRequest {
    r.ttl = Some(secs);
    r
}

fn cas(mut r: StoreRequest, v: u64) -> StoreRequest {
    r.if_version = Some(v);
    r
}

async fn fetch(s: &StateStore, caller: u32, key: &str) -> FetchReply {
    s.fetch(caller, FetchRequest { key: key.into() })
        .await
        .unwrap()
}

/// (value, scope, version) of a key as `caller` sees it, or `None`.
async fn get(
    s: &StateStore,
    caller: u32,
    key: &str,
) -> Option<(serde_json::Value, StateScope, u64)> {
    let r = fetch(s, caller, key).await;
    assert!(r.success);
    if !r.exists {
        assert_eq!((r.value.0, r.scope, r.version), (json!(null), None, None));
        return None;
    }
    Some((r.value.0, r.scope.unwrap(), r.version.unwrap()))
}

async fn delete(s: &StateStore, caller: u32, key: &str) -> bool {
    s.delete(caller, DeleteRequest { key: key.into() })
        .await
        .unwrap()
        .deleted
}

async fn keys(s: &StateStore, caller: u32, prefix: Option<&str>) -> Vec<String> {
    let r = s
        .keys(
            caller,
            KeysRequest {
                prefix: prefix.map(str::to_owned),
            },
        )
        .await
        .unwrap();
    assert_eq!(r.count, r.keys.len() as u64);
    r.keys
}

async fn sleep_ms(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

#[test]
fn the_store_is_send_and_sync() {
    fn shared<T: Send + Sync + 'static>() {}
    shared::<StateStore>();
    shared::<Arc<StateStore>>();
}

#[tokio::test]
async fn global_keys_are_shared_and_fetch_reports_scope_and_version() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let r = s
        .store(A, req("k", json!({"a": [1, 2.5]}), Global))
        .await
        .unwrap();
    assert_eq!(
        r,
        StoreReply {
            success: true,
            key: "k".into(),
            version: Some(1)
        }
    );
    assert_eq!(
        get(&s, B, "k").await,
        Some((json!({"a": [1, 2.5]}), Global, 1))
    );
    assert_eq!(get(&s, A, "missing").await, None);
    let r = s.store(B, req("k", json!(null), Global)).await.unwrap();
    assert_eq!(r.version, Some(2));
    assert_eq!(get(&s, A, "k").await, Some((json!(null), Global, 2)));
    s.shutdown().await;
}

#[tokio::test]
async fn agent_keys_are_invisible_and_unreachable_to_other_ids() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    s.store(A, req("secret", json!("a's"), Agent))
        .await
        .unwrap();
    assert_eq!(get(&s, A, "secret").await, Some((json!("a's"), Agent, 1)));
    // Another id sees nothing, lists nothing and cannot delete it.
    assert_eq!(get(&s, B, "secret").await, None);
    assert!(keys(&s, B, None).await.is_empty());
    assert!(!delete(&s, B, "secret").await);
    // Its own agent key of the same name is a different key.
    let r = s
        .store(B, req("secret", json!("b's"), Agent))
        .await
        .unwrap();
    assert_eq!(r.version, Some(1));
    assert_eq!(get(&s, B, "secret").await, Some((json!("b's"), Agent, 1)));
    assert_eq!(get(&s, A, "secret").await, Some((json!("a's"), Agent, 1)));
    // CAS on it only sees its own key.
    let e = s
        .store(B, cas(req("secret", json!(1), Agent), 0))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::Conflict);
    // Neither the kernel's own id 0 nor any other id reaches it.
    assert_eq!(get(&s, PLAIN, "secret").await, None);
    assert_eq!(keys(&s, A, None).await, ["secret"]);
    s.shutdown().await;
}

#[tokio::test]
async fn agent_scope_needs_a_caller_id() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let e = s.store(PLAIN, req("k", json!(1), Agent)).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidRequest);
    assert!(e.message.contains("agent scope"), "{}", e.message);
    s.shutdown().await;
}

#[tokio::test]
async fn the_plain_key_is_found_before_the_callers_agent_key() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    s.store(A, req("k", json!("mine"), Agent)).await.unwrap();
    s.store(B, req("k", json!("everyone's"), Global))
        .await
        .unwrap();
    assert_eq!(
        get(&s, A, "k").await,
        Some((json!("everyone's"), Global, 1))
    );
    // Listed once.
    assert_eq!(keys(&s, A, None).await, ["k"]);
    // DELETE takes the plain key first, then the agent key.
    assert!(delete(&s, A, "k").await);
    assert_eq!(get(&s, A, "k").await, Some((json!("mine"), Agent, 1)));
    assert_eq!(get(&s, B, "k").await, None);
    assert!(delete(&s, A, "k").await);
    assert_eq!(get(&s, A, "k").await, None);
    assert!(!delete(&s, A, "k").await);
    // A session key shadows the agent key the same way.
    s.store(A, req("k", json!("mine"), Agent)).await.unwrap();
    s.store(B, req("k", json!("now"), Session)).await.unwrap();
    assert_eq!(get(&s, A, "k").await, Some((json!("now"), Session, 1)));
    s.shutdown().await;
}

#[tokio::test]
async fn session_and_global_share_one_plain_name_and_its_versions() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    s.store(A, req("k", json!(1), Global)).await.unwrap();
    let r = s.store(A, req("k", json!(2), Session)).await.unwrap();
    assert_eq!(r.version, Some(2));
    assert_eq!(get(&s, B, "k").await, Some((json!(2), Session, 2)));
    assert_eq!(keys(&s, B, None).await, ["k"]);
    let r = s.store(B, req("k", json!(3), Global)).await.unwrap();
    assert_eq!(r.version, Some(3));
    assert_eq!(get(&s, A, "k").await, Some((json!(3), Global, 3)));
    // Replaced by a session key again: the global row is gone from the file.
    s.store(B, req("k", json!(4), Session)).await.unwrap();
    assert_eq!(s.usage().keys, 1);
    s.shutdown().await;
    let s = open(dir.path());
    assert_eq!(get(&s, A, "k").await, None);
    s.shutdown().await;
}

#[tokio::test]
async fn session_keys_are_not_persisted_but_global_and_agent_keys_are() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    s.store(A, req("g", json!("global"), Global)).await.unwrap();
    s.store(A, req("s", json!("session"), Session))
        .await
        .unwrap();
    s.store(A, req("a", json!("agent"), Agent)).await.unwrap();
    s.store(A, req("g", json!("global 2"), Global))
        .await
        .unwrap();
    s.store(A, req("gone", json!(0), Global)).await.unwrap();
    assert!(delete(&s, B, "gone").await);
    s.shutdown().await;
    let s = open(dir.path());
    assert_eq!(get(&s, B, "g").await, Some((json!("global 2"), Global, 2)));
    assert_eq!(get(&s, A, "s").await, None);
    assert_eq!(get(&s, A, "a").await, Some((json!("agent"), Agent, 1)));
    assert_eq!(get(&s, B, "a").await, None);
    assert_eq!(get(&s, A, "gone").await, None);
    assert_eq!(keys(&s, A, None).await, ["a", "g"]);
    s.shutdown().await;
}

#[tokio::test]
async fn keys_lists_plain_and_own_agent_keys_by_prefix_sorted() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    for (k, scope, by) in [
        ("task:3", Global, A),
        ("task:1", Session, B),
        ("task:2", Agent, A),
        ("task:9", Agent, B),
        ("tas", Global, A),
        ("other", Global, A),
        ("task:1", Agent, A),
    ] {
        s.store(by, req(k, json!(k), scope)).await.unwrap();
    }
    assert_eq!(
        keys(&s, A, Some("task:")).await,
        ["task:1", "task:2", "task:3"]
    );
    assert_eq!(
        keys(&s, B, Some("task:")).await,
        ["task:1", "task:3", "task:9"]
    );
    assert_eq!(
        keys(&s, A, None).await,
        ["other", "tas", "task:1", "task:2", "task:3"]
    );
    assert_eq!(keys(&s, A, Some("")).await.len(), 5);
    assert!(keys(&s, A, Some("zzz")).await.is_empty());
    s.shutdown().await;
}

#[tokio::test]
async fn expired_keys_are_never_seen() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let r = s
        .store(A, ttl(req("g", json!(1), Global), 0.05))
        .await
        .unwrap();
    assert_eq!(r.version, Some(1));
    s.store(A, ttl(req("s", json!(1), Session), 0.05))
        .await
        .unwrap();
    s.store(A, ttl(req("a", json!(1), Agent), 0.05))
        .await
        .unwrap();
    s.store(A, ttl(req("long", json!(1), Global), 3600.0))
        .await
        .unwrap();
    // Once the global key expires, the caller's agent key of that name shows again.
    s.store(A, req("shadow", json!("agent"), Agent))
        .await
        .unwrap();
    s.store(A, ttl(req("shadow", json!("global"), Global), 0.05))
        .await
        .unwrap();
    assert_eq!(get(&s, A, "g").await, Some((json!(1), Global, 1)));
    assert_eq!(keys(&s, A, None).await, ["a", "g", "long", "s", "shadow"]);
    sleep_ms(150).await;
    for k in ["g", "s", "a"] {
        assert_eq!(get(&s, A, k).await, None, "{k}");
        assert!(!delete(&s, A, k).await, "{k}");
    }
    assert_eq!(get(&s, A, "shadow").await, Some((json!("agent"), Agent, 1)));
    assert_eq!(keys(&s, A, None).await, ["long", "shadow"]);
    // Compare-and-set treats an expired key as absent...
    let e = s
        .store(A, cas(req("g", json!(2), Global), 1))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::Conflict);
    assert!(e.message.contains("does not exist"), "{}", e.message);
    // ...and a new write starts its versions again at 1.
    let r = s
        .store(A, cas(req("g", json!(2), Global), 0))
        .await
        .unwrap();
    assert_eq!(r.version, Some(1));
    assert_eq!(get(&s, B, "g").await, Some((json!(2), Global, 1)));
    s.shutdown().await;
}

#[tokio::test]
async fn a_store_without_ttl_clears_the_previous_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    s.store(A, ttl(req("k", json!(1), Global), 0.05))
        .await
        .unwrap();
    s.store(A, req("k", json!(2), Global)).await.unwrap();
    sleep_ms(150).await;
    assert_eq!(get(&s, A, "k").await, Some((json!(2), Global, 2)));
    s.shutdown().await;
}

#[tokio::test]
async fn bad_ttls_are_refused_naming_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e300] {
        let e = s
            .store(A, ttl(req("k", json!(1), Global), bad))
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRequest, "{bad}");
        assert!(e.message.contains("ttl"), "{}", e.message);
    }
    assert_eq!(get(&s, A, "k").await, None);
    s.shutdown().await;
}

#[tokio::test]
async fn purge_removes_expired_keys_for_good_and_reports_them() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let mut changes = s.subscribe();
    s.store(A, ttl(req("g", json!(1), Global), 0.05))
        .await
        .unwrap();
    s.store(A, ttl(req("s", json!(1), Session), 0.05))
        .await
        .unwrap();
    s.store(A, ttl(req("a", json!(1), Agent), 0.05))
        .await
        .unwrap();
    s.store(A, ttl(req("long", json!(1), Global), 3600.0))
        .await
        .unwrap();
    for _ in 0..4 {
        assert_eq!(changes.recv().await.unwrap().kind, ChangeKind::Set);
    }
    assert_eq!(s.purge_expired().await.unwrap(), 0);
    sleep_ms(150).await;
    assert_eq!(s.purge_expired().await.unwrap(), 3);
    assert_eq!(s.usage().keys, 1);
    let mut expired = Vec::new();
    for _ in 0..3 {
        let c = changes.recv().await.unwrap();
        assert_eq!((c.kind, c.version, c.by), (ChangeKind::Expired, 1, PLAIN));
        expired.push((c.key, c.scope, c.owner));
    }
    expired.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        expired,
        [
            ("a".to_owned(), Agent, Some(A)),
            ("g".to_owned(), Global, None),
            ("s".to_owned(), Session, None)
        ]
    );
    // Gone from the file too: a fresh load has only the long-lived key.
    s.shutdown().await;
    let conn = db::open(dir.path()).unwrap();
    let rows: i64 = conn
        .query_row("SELECT count(*) FROM kv", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 1);
}

#[tokio::test]
async fn purge_works_in_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let n = PURGE_CHUNK * 2 + 3;
    for i in 0..n {
        s.store(A, ttl(req(&format!("k{i}"), json!(i), Global), 0.05))
            .await
            .unwrap();
    }
    sleep_ms(150).await;
    let before = s.usage().commits;
    assert_eq!(s.purge_expired().await.unwrap(), n);
    assert_eq!(s.usage().commits - before, 3);
    assert_eq!(s.usage().keys, 0);
    s.shutdown().await;
}

#[tokio::test]
async fn rows_that_expired_while_down_are_dropped_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    s.store(A, ttl(req("k", json!(1), Global), 0.05))
        .await
        .unwrap();
    s.store(A, ttl(req("k2", json!(1), Global), 3600.0))
        .await
        .unwrap();
    s.shutdown().await;
    sleep_ms(150).await;
    let s = open(dir.path());
    assert_eq!(s.usage().keys, 1);
    assert_eq!(get(&s, A, "k").await, None);
    assert_eq!(get(&s, A, "k2").await, Some((json!(1), Global, 1)));
    s.shutdown().await;
}

#[tokio::test]
async fn versions_grow_by_one_and_compare_and_set_checks_them() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let v = |r: StoreReply| r.version.unwrap();
    assert_eq!(
        v(s.store(A, cas(req("k", json!(1), Global), 0))
            .await
            .unwrap()),
        1
    );
    assert_eq!(v(s.store(A, req("k", json!(2), Global)).await.unwrap()), 2);
    assert_eq!(
        v(s.store(A, cas(req("k", json!(3), Global), 2))
            .await
            .unwrap()),
        3
    );
    // A stale version loses and says what the current one is.
    let e = s
        .store(B, cas(req("k", json!("lost"), Global), 2))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::Conflict);
    assert!(e.message.contains("version 3"), "{}", e.message);
    // `0` means "only if absent".
    let e = s
        .store(B, cas(req("k", json!("lost"), Global), 0))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::Conflict);
    assert!(e.message.contains("exists (version 3)"), "{}", e.message);
    let e = s
        .store(B, cas(req("nope", json!(1), Global), 4))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::Conflict);
    assert!(e.message.contains("does not exist"), "{}", e.message);
    assert_eq!(get(&s, A, "k").await, Some((json!(3), Global, 3)));
    assert_eq!(get(&s, A, "nope").await, None);
    // Versions survive a restart; a deleted key starts again at 1.
    s.shutdown().await;
    let s = open(dir.path());
    assert_eq!(
        v(s.store(A, cas(req("k", json!(4), Global), 3))
            .await
            .unwrap()),
        4
    );
    assert!(delete(&s, A, "k").await);
    assert_eq!(v(s.store(A, req("k", json!(5), Global)).await.unwrap()), 1);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_cas_increments_lose_nothing() {
    const TASKS: u64 = 8;
    const EACH: u64 = 25;
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(open(dir.path()));
    s.store(A, req("counter", json!(0), Global)).await.unwrap();
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let s = Arc::clone(&s);
        tasks.push(tokio::spawn(async move {
            let mut conflicts = 0u64;
            for _ in 0..EACH {
                loop {
                    let cur = fetch(&s, A + t as u32, "counter").await;
                    let n = cur.value.0.as_u64().unwrap();
                    let write = cas(req("counter", json!(n + 1), Global), cur.version.unwrap());
                    match s.store(A + t as u32, write).await {
                        Ok(_) => break,
                        Err(e) if e.code == ErrorCode::Conflict => conflicts += 1,
                        Err(e) => panic!("{e}"),
                    }
                }
            }
            conflicts
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let total = TASKS * EACH;
    assert_eq!(
        get(&s, A, "counter").await,
        Some((json!(total), Global, total + 1))
    );
    s.shutdown().await;
}

#[tokio::test]
async fn key_and_value_limits_are_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let limits = StateLimits {
        max_key_bytes: 8,
        max_value_bytes: 10,
        ..StateLimits::default()
    };
    let s = StateStore::open(dir.path(), limits).unwrap();
    let e = s.store(A, req("", json!(1), Global)).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidRequest);
    assert!(e.message.contains("key is empty"), "{}", e.message);
    let e = s
        .fetch(A, FetchRequest { key: "".into() })
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidRequest);
    let e = s
        .delete(A, DeleteRequest { key: "".into() })
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidRequest);

    let e = s
        .store(A, req("123456789", json!(1), Global))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::LimitExceeded);
    assert!(
        e.message.contains("9 bytes") && e.message.contains("limit is 8"),
        "{}",
        e.message
    );
    s.store(A, req("12345678", json!(1), Global)).await.unwrap();

    // `"123456789"` is 11 bytes of JSON text.
    let e = s
        .store(A, req("k", json!("123456789"), Global))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::LimitExceeded);
    assert!(
        e.message.contains("11 bytes") && e.message.contains("limit is 10"),
        "{}",
        e.message
    );
    s.store(A, req("k", json!("12345678"), Global))
        .await
        .unwrap();
    s.shutdown().await;
}

#[tokio::test]
async fn key_count_and_total_size_limits_are_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let limits = StateLimits {
        max_keys: 2,
        max_total_bytes: 20,
        ..StateLimits::default()
    };
    let s = StateStore::open(dir.path(), limits).unwrap();
    s.store(A, req("a", json!(1), Global)).await.unwrap();
    s.store(A, req("b", json!(2), Session)).await.unwrap();
    let e = s.store(A, req("c", json!(3), Agent)).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::LimitExceeded);
    assert!(e.message.contains("2 keys"), "{}", e.message);
    // Overwriting needs no new key; a too large value does not fit the byte limit.
    s.store(A, req("a", json!(10), Global)).await.unwrap();
    let e = s
        .store(A, req("a", json!("0123456789abcdef"), Global))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::LimitExceeded);
    assert!(e.message.contains("limit is 20 bytes"), "{}", e.message);
    assert_eq!(get(&s, A, "a").await, Some((json!(10), Global, 2)));
    // Deleting makes room.
    assert!(delete(&s, A, "b").await);
    s.store(A, req("c", json!(3), Agent)).await.unwrap();
    s.shutdown().await;
}

#[tokio::test]
async fn forget_agent_and_retain_owners_remove_agent_keys_only() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    for owner in [A, B, 9, 10] {
        s.store(owner, req("x", json!(owner), Agent)).await.unwrap();
        s.store(owner, req("y", json!(owner), Agent)).await.unwrap();
    }
    s.store(A, req("plain", json!(1), Global)).await.unwrap();
    s.store(A, req("sess", json!(1), Session)).await.unwrap();
    assert_eq!(s.forget_agent(A).await.unwrap(), 2);
    assert_eq!(s.forget_agent(A).await.unwrap(), 0);
    assert_eq!(s.forget_agent(PLAIN).await.unwrap(), 0);
    assert_eq!(keys(&s, A, None).await, ["plain", "sess"]);
    assert_eq!(s.retain_owners(&[B, 42]).await.unwrap(), 4);
    assert_eq!(get(&s, B, "x").await, Some((json!(B), Agent, 1)));
    assert_eq!(get(&s, 9, "x").await, None);
    assert_eq!(get(&s, 10, "y").await, None);
    assert_eq!(keys(&s, 9, None).await, ["plain", "sess"]);
    s.shutdown().await;
    // For good.
    let s = open(dir.path());
    assert_eq!(keys(&s, A, None).await, ["plain"]);
    assert_eq!(keys(&s, B, None).await, ["plain", "x", "y"]);
    assert_eq!(keys(&s, 10, None).await, ["plain"]);
    s.shutdown().await;
}

fn saved(id: u32, name: &str) -> SavedAgent {
    let mut spec = SpawnRequest::new(name, format!("/srv/{name}.py"));
    spec.restart_policy = clove_abi::msg::RestartPolicy::Always;
    spec.args = vec!["--x".into()];
    SavedAgent {
        id,
        owner_uid: 1000,
        uid: 5000 + id,
        spec,
    }
}

#[tokio::test]
async fn saved_agents_come_back_in_spawn_order_until_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    assert!(s.saved_agents().is_empty());
    // Spawn order, not id order: 12 was saved before 11.
    for a in [saved(12, "b"), saved(11, "a"), saved(13, "c")] {
        s.save_agent(&a).await.unwrap();
    }
    s.store(11, req("k", json!(1), Agent)).await.unwrap();
    s.store(13, req("k", json!(3), Agent)).await.unwrap();
    // Saving again (a new uid) keeps the place in the order.
    let mut again = saved(12, "b");
    again.uid = 7;
    s.save_agent(&again).await.unwrap();
    s.shutdown().await;

    let s = open(dir.path());
    let ids: Vec<u32> = s.saved_agents().iter().map(|a| a.id).collect();
    assert_eq!(ids, [12, 11, 13]);
    assert_eq!(s.saved_agents()[0], again);
    assert_eq!(s.saved_agents()[1], saved(11, "a"));
    // Forgetting drops the spec and the agent keys in one go; a second time is harmless.
    assert_eq!(s.forget_agent(13).await.unwrap(), 1);
    assert_eq!(s.forget_agent(13).await.unwrap(), 0);
    // Dropped before it is awaited: still carried out, in order.
    drop(s.forget_agent(12));
    s.shutdown().await;

    let s = open(dir.path());
    let ids: Vec<u32> = s.saved_agents().iter().map(|a| a.id).collect();
    assert_eq!(ids, [11]);
    assert_eq!(get(&s, 11, "k").await, Some((json!(1), Agent, 1)));
    assert_eq!(get(&s, 13, "k").await, None);
    s.shutdown().await;
}

#[test]
fn a_saved_spec_that_no_longer_parses_is_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    {
        let conn = db::open(dir.path()).unwrap();
        db::save_agent(&conn, 3, 0, 0, "{not json").unwrap();
        db::save_agent(
            &conn,
            4,
            0,
            0,
            &serde_json::to_string(&saved(4, "d").spec).unwrap(),
        )
        .unwrap();
    }
    let s = open(dir.path());
    let ids: Vec<u32> = s.saved_agents().iter().map(|a| a.id).collect();
    assert_eq!(ids, [4]);
    drop(s);
    let conn = db::open(dir.path()).unwrap();
    assert_eq!(db::load_agents(&conn).unwrap().len(), 1);
}

#[tokio::test]
async fn id_blocks_never_repeat_across_reopen_and_skip_zero() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    assert_eq!(s.id_block(10).unwrap(), 1..11);
    assert_eq!(s.id_block(10).unwrap(), 11..21);
    assert!(s.id_block(0).is_err());
    s.shutdown().await;
    let s = open(dir.path());
    assert_eq!(s.id_block(5).unwrap(), 21..26);
    // Near the top of the space the next block starts again at 1, never at 0.
    assert_eq!(s.id_block(u32::MAX - 30).unwrap(), 26..u32::MAX - 4);
    assert_eq!(s.id_block(100).unwrap(), 1..101);
    assert_eq!(s.id_block(1).unwrap(), 101..102);
    s.shutdown().await;
    let s = open(dir.path());
    assert_eq!(s.id_block(1).unwrap(), 102..103);
    s.shutdown().await;
}

#[tokio::test]
async fn change_events_say_what_changed_and_whose_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let mut rx = s.subscribe();
    s.store(A, req("k", json!(1), Global)).await.unwrap();
    s.store(B, req("k", json!(2), Session)).await.unwrap();
    s.store(A, req("mine", json!(3), Agent)).await.unwrap();
    let _ = s
        .store(B, cas(req("k", json!(9), Global), 7))
        .await
        .unwrap_err();
    assert!(delete(&s, A, "mine").await);
    assert!(delete(&s, A, "k").await);
    let ev = |key: &str, scope, owner, kind, version, by| StateChange {
        key: key.to_owned(),
        scope,
        owner,
        kind,
        version,
        by,
    };
    let want = [
        ev("k", Global, None, ChangeKind::Set, 1, A),
        ev("k", Session, None, ChangeKind::Set, 2, B),
        ev("mine", Agent, Some(A), ChangeKind::Set, 1, A),
        ev("mine", Agent, Some(A), ChangeKind::Deleted, 1, A),
        ev("k", Session, None, ChangeKind::Deleted, 2, A),
    ];
    for w in want {
        assert_eq!(rx.recv().await.unwrap(), w);
    }
    assert!(rx.try_recv().is_err(), "a refused write sends no event");
    s.shutdown().await;
}

#[tokio::test]
async fn a_store_that_replied_is_there_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    for i in 0..50 {
        s.store(A, req(&format!("k{i}"), json!({"i": i}), Global))
            .await
            .unwrap();
        // Visible to the next FETCH as soon as STORE replied.
        assert_eq!(
            get(&s, B, &format!("k{i}")).await.unwrap().0,
            json!({"i": i})
        );
    }
    s.shutdown().await;
    let s = open(dir.path());
    for i in 0..50 {
        assert_eq!(
            get(&s, B, &format!("k{i}")).await.unwrap().0,
            json!({"i": i})
        );
    }
    s.shutdown().await;
}

#[tokio::test]
async fn concurrent_stores_share_one_commit() {
    const N: usize = 100;
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    // Stall the writer so that all N requests are queued before it takes any.
    let (release, held) = std::sync::mpsc::channel();
    s.ops.send(Op::Hold(held)).unwrap();
    let before = s.usage().commits;
    let mut pending: Vec<_> = (0..N)
        .map(|i| Box::pin(s.store(A, req(&format!("k{i}"), json!(i), Global))))
        .collect();
    // One poll each sends the request to the writer.
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    for f in &mut pending {
        assert!(f.as_mut().poll(&mut cx).is_pending());
    }
    release.send(()).unwrap();
    for f in pending {
        f.await.unwrap();
    }
    assert_eq!(s.usage().commits - before, 1, "{N} stores, one commit");
    assert_eq!(keys(&s, A, None).await.len(), N);
    s.shutdown().await;
}

#[tokio::test]
async fn a_failed_round_writes_nothing_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    s.store(A, req("k", json!(1), Global)).await.unwrap();
    // Make the database refuse writes from the outside: a second connection holds the
    // write lock, so BEGIN IMMEDIATE times out as "database is locked".
    let other = db::open(dir.path()).unwrap();
    other
        .execute_batch("PRAGMA busy_timeout = 0; BEGIN IMMEDIATE")
        .unwrap();
    let (release, held) = std::sync::mpsc::channel();
    s.ops.send(Op::Hold(held)).unwrap();
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let mut global = Box::pin(s.store(A, req("k", json!(2), Global)));
    let mut session = Box::pin(s.store(A, req("s", json!(2), Session)));
    assert!(global.as_mut().poll(&mut cx).is_pending());
    assert!(session.as_mut().poll(&mut cx).is_pending());
    release.send(()).unwrap();
    // The writer waits its busy_timeout (5 s) for the lock, then gives up.
    let e = global.await.unwrap_err();
    assert_eq!(e.code, ErrorCode::Unavailable);
    assert!(
        e.message.contains("state store: begin transaction"),
        "{}",
        e.message
    );
    // The session write was in the same round: refused too, nothing visible.
    assert_eq!(session.await.unwrap_err().code, ErrorCode::Unavailable);
    assert_eq!(get(&s, A, "k").await, Some((json!(1), Global, 1)));
    assert_eq!(get(&s, A, "s").await, None);
    other.execute_batch("ROLLBACK").unwrap();
    // The store works again once the lock is gone.
    assert_eq!(
        s.store(A, req("k", json!(3), Global))
            .await
            .unwrap()
            .version,
        Some(2)
    );
    s.shutdown().await;
}

#[tokio::test]
async fn requests_after_shutdown_are_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    s.store(A, req("k", json!(1), Global)).await.unwrap();
    s.shutdown().await;
    s.shutdown().await;
    let e = s.store(A, req("k", json!(2), Global)).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::Unavailable);
    assert!(s.id_block(1).is_err());
    // Reads still answer from memory.
    assert_eq!(get(&s, A, "k").await, Some((json!(1), Global, 1)));
}

/// The crash test's child runs only when this names its state dir.
const CRASH_DIR_ENV: &str = "CLOVE_STATE_CRASH_TEST_DIR";
const CRASH_CALLER: u32 = 3;

/// The child half of `acknowledged_stores_survive_sigkill`: stores forever, printing
/// `acked <i>` after the STOREs of round i replied. A no-op in a normal test run.
#[test]
fn crash_child_stores_until_killed() {
    let Some(dir) = std::env::var_os(CRASH_DIR_ENV) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let s = open(Path::new(&dir));
        for i in 0u64.. {
            s.store(CRASH_CALLER, req(&format!("g{i}"), json!(i), Global))
                .await
                .unwrap();
            s.store(CRASH_CALLER, req(&format!("a{i}"), json!(i), Agent))
                .await
                .unwrap();
            // Stdout is line-buffered: the parent sees this line as soon as it is printed.
            println!("acked {i}");
        }
    });
}

#[tokio::test]
async fn acknowledged_stores_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "state::tests::crash_child_stores_until_killed",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_DIR_ENV, dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut last = None;
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(i) = line.strip_prefix("acked ") {
            let i: u64 = i.parse().unwrap();
            last = Some(i);
            if i >= 30 {
                break;
            }
        }
    }
    let last = last.expect("the child acknowledged no store (did it run?)");
    assert!(last >= 30, "the child stopped after {last}");
    // SIGKILL right after reading the acknowledgement: no shutdown, no checkpoint.
    child.kill().unwrap();
    child.wait().unwrap();
    let s = open(dir.path());
    for i in 0..=last {
        assert_eq!(
            get(&s, B, &format!("g{i}")).await,
            Some((json!(i), Global, 1)),
            "g{i}"
        );
        assert_eq!(
            get(&s, CRASH_CALLER, &format!("a{i}")).await,
            Some((json!(i), Agent, 1)),
            "a{i}"
        );
    }
    s.shutdown().await;
}

#[tokio::test]
async fn saved_groups_come_back_in_creation_order_until_forgotten() {
    use crate::state::SavedGroup;
    use clove_abi::msg::{GroupCreateRequest, GroupStrategy};
    let group = |name: &str, parent: Option<&str>| SavedGroup {
        owner_uid: 1000,
        spec: GroupCreateRequest {
            strategy: GroupStrategy::RestForOne,
            intensity: 4,
            parent: parent.map(str::to_owned),
            ..GroupCreateRequest::new(name)
        },
    };
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    assert!(s.saved_groups().is_empty());
    for g in [
        group("top", None),
        group("b", Some("top")),
        group("a", Some("top")),
    ] {
        s.save_group(&g).await.unwrap();
    }
    s.shutdown().await;

    let s = open(dir.path());
    let names: Vec<&str> = s
        .saved_groups()
        .iter()
        .map(|g| g.spec.name.as_str())
        .collect();
    assert_eq!(names, ["top", "b", "a"]);
    assert_eq!(s.saved_groups()[1], group("b", Some("top")));
    s.forget_group("b").await.unwrap();
    s.forget_group("b").await.unwrap();
    s.shutdown().await;

    let s = open(dir.path());
    let names: Vec<&str> = s
        .saved_groups()
        .iter()
        .map(|g| g.spec.name.as_str())
        .collect();
    assert_eq!(names, ["top", "a"]);
    s.shutdown().await;
}
