#![allow(clippy::unwrap_used)]

use std::sync::atomic::Ordering;

use clove_abi::auditlog::{FindingKind, HEAD_FILE, LOG_FILE};
use clove_abi::msg::{AuditCategory, GetAuditLogRequest, SetAuditConfigRequest};
use serde_json::json;

use super::writer::verify_dir;
use super::*;

fn caller(id: u32, uid: u32, agent: bool) -> Caller {
    Caller {
        id,
        agent,
        uid,
        gid: uid,
        pid: None,
    }
}

fn rec(n: u64) -> AuditRecord {
    AuditRecord::new(AuditCategory::AgentLifecycle, "AGENT_SPAWNED", 7)
        .details(json!({"n": n}))
        .decided_by(DecidedBy::Operator(1000))
}

fn small() -> AuditLimits {
    AuditLimits {
        max_file_bytes: 2000,
        keep_files: 3,
    }
}

fn log_names(dir: &Path) -> Vec<String> {
    let names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    clove_abi::auditlog::log_files_oldest_first(names.iter().map(String::as_str))
}

async fn all(audit: &Audit) -> Vec<clove_abi::msg::AuditEntry> {
    let req = GetAuditLogRequest {
        limit: MAX_LIMIT,
        ..GetAuditLogRequest::default()
    };
    audit
        .get(&caller(1, 0, false), req, |_| None)
        .await
        .unwrap()
        .entries
}

#[tokio::test]
async fn entries_queued_together_share_one_commit() {
    let state = tempfile::tempdir().unwrap();
    let audit = Audit::open(state.path(), AuditLimits::default()).unwrap();
    audit.sync().await.unwrap();
    let before = audit.shared.commits.load(Ordering::Relaxed);
    let (release, hold) = std::sync::mpsc::channel();
    audit.ops.send(Op::Hold(hold)).unwrap();
    for n in 0..200 {
        audit.record(rec(n));
    }
    release.send(()).unwrap();
    audit.sync().await.unwrap();
    assert_eq!(audit.shared.commits.load(Ordering::Relaxed), before + 1);
    let entries = all(&audit).await;
    // AUDIT_STARTED, then the 200, ids in order.
    assert_eq!(entries.len(), 201);
    assert_eq!(entries[0].event_type, "AUDIT_STARTED");
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(e.id, i as u64 + 1);
    }
    assert_eq!(entries[200].decided_by.as_deref(), Some("operator:1000"));
    let r = verify_dir(&audit.dir);
    assert!(r.intact, "{r:#?}");
    assert_eq!(r.anchor.as_ref().unwrap().last_id, 201);
}

#[tokio::test]
async fn files_rotate_keep_n_and_the_chain_runs_across_them() {
    let state = tempfile::tempdir().unwrap();
    let audit = Audit::open(state.path(), small()).unwrap();
    for n in 0..60 {
        audit.record(rec(n));
        if n % 7 == 0 {
            audit.sync().await.unwrap();
        }
    }
    audit.sync().await.unwrap();
    let names = log_names(&audit.dir);
    assert_eq!(names.len(), 3, "{names:?}");
    assert_eq!(names.last().map(String::as_str), Some(LOG_FILE));
    for name in &names {
        let len = std::fs::metadata(audit.dir.join(name)).unwrap().len();
        assert!(len <= 2000, "{name}: {len} bytes");
    }
    let r = verify_dir(&audit.dir);
    assert!(r.intact, "{r:#?}");
    let anchor = r.anchor.unwrap();
    assert!(anchor.first_id > 1, "{anchor:?}");
    assert_eq!(anchor.last_id, 61);
    assert_eq!(anchor.files, 3);
    // A rotated file is named after its first entry.
    let first = r.first_id.unwrap();
    assert_eq!(names[0], format!("audit.log.{first}"));
    assert_eq!(first, anchor.first_id);
    // Removing the oldest kept file is found.
    std::fs::remove_file(audit.dir.join(&names[0])).unwrap();
    let r = verify_dir(&audit.dir);
    assert_eq!(
        r.findings.iter().map(|f| f.kind).collect::<Vec<_>>(),
        vec![FindingKind::StartMissing],
        "{r:#?}"
    );
}

#[tokio::test]
async fn a_restarted_log_continues_ids_and_chain() {
    let state = tempfile::tempdir().unwrap();
    {
        let audit = Audit::open(state.path(), small()).unwrap();
        for n in 0..30 {
            audit.record(rec(n));
        }
        audit.shutdown().await;
    }
    let audit = Audit::open(state.path(), small()).unwrap();
    audit.record(rec(99));
    audit.sync().await.unwrap();
    let entries = all(&audit).await;
    let last = entries.last().unwrap();
    // 1 AUDIT_STARTED + 30 + AUDIT_STOPPED, AUDIT_STARTED, then ours.
    assert_eq!(last.id, 34);
    assert_eq!(last.details, clove_abi::Json(json!({"n": 99})));
    let started: Vec<u64> = entries
        .iter()
        .filter(|e| e.event_type == "AUDIT_STARTED")
        .map(|e| e.id)
        .collect();
    assert_eq!(started.last(), Some(&33));
    let r = verify_dir(&audit.dir);
    assert!(r.intact, "{r:#?}");
    assert_eq!(r.last_id, Some(34));
}

#[tokio::test]
async fn a_truncated_log_is_reported_at_start_and_ids_are_not_reused() {
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().join("audit");
    {
        let audit = Audit::open(state.path(), AuditLimits::default()).unwrap();
        for n in 0..10 {
            audit.record(rec(n));
        }
        audit.shutdown().await;
    }
    // Cut the last three entries off.
    let text = std::fs::read_to_string(dir.join(LOG_FILE)).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let kept: String = lines[..lines.len() - 3]
        .iter()
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(dir.join(LOG_FILE), kept).unwrap();
    let audit = Audit::open(state.path(), AuditLimits::default()).unwrap();
    audit.sync().await.unwrap();
    let entries = all(&audit).await;
    let damaged = entries
        .iter()
        .find(|e| e.event_type == "AUDIT_LOG_DAMAGED")
        .unwrap();
    // The anchor recorded 12 (STARTED, 10, STOPPED): the chain goes on at 13.
    assert_eq!(damaged.id, 13);
    assert!(!damaged.success);
    // The gap stays visible.
    let r = verify_dir(&dir);
    assert_eq!(
        r.findings.iter().map(|f| f.kind).collect::<Vec<_>>(),
        vec![FindingKind::Missing],
        "{r:#?}"
    );
    assert!(r.findings[0].message.contains("entries 10..12"), "{r:#?}");
}

#[tokio::test]
async fn a_torn_last_line_past_the_anchor_is_cut_at_start() {
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().join("audit");
    {
        let audit = Audit::open(state.path(), AuditLimits::default()).unwrap();
        audit.record(rec(1));
        audit.shutdown().await;
    }
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join(LOG_FILE))
        .unwrap();
    std::io::Write::write_all(&mut f, br#"{"agent_id":7,"agent_na"#).unwrap();
    drop(f);
    assert!(verify_dir(&dir).intact);
    let audit = Audit::open(state.path(), AuditLimits::default()).unwrap();
    audit.record(rec(2));
    audit.sync().await.unwrap();
    let r = verify_dir(&dir);
    assert!(r.intact, "{r:#?}");
    assert!(r.notes.is_empty(), "{r:#?}");
    assert!(!all(&audit)
        .await
        .iter()
        .any(|e| e.event_type == "AUDIT_LOG_DAMAGED"));
}

#[tokio::test]
async fn a_removed_anchor_is_reported_at_start() {
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().join("audit");
    {
        let audit = Audit::open(state.path(), AuditLimits::default()).unwrap();
        audit.record(rec(1));
        audit.shutdown().await;
    }
    std::fs::remove_file(dir.join(HEAD_FILE)).unwrap();
    assert!(!verify_dir(&dir).intact);
    let audit = Audit::open(state.path(), AuditLimits::default()).unwrap();
    audit.sync().await.unwrap();
    let e = all(&audit).await;
    assert!(
        e.iter().any(|e| e.event_type == "AUDIT_LOG_DAMAGED"),
        "{e:#?}"
    );
}

#[tokio::test]
async fn readers_see_only_what_is_theirs() {
    let state = tempfile::tempdir().unwrap();
    let audit = Audit::open(state.path(), AuditLimits::default()).unwrap();
    audit.record(AuditRecord {
        owner_uid: Some(1000),
        ..AuditRecord::new(AuditCategory::AgentLifecycle, "AGENT_SPAWNED", 7)
    });
    audit.record(AuditRecord {
        owner_uid: Some(2000),
        ..AuditRecord::new(AuditCategory::Security, "PERMISSION_DENIED", 8)
    });
    let get = |c: Caller, req: GetAuditLogRequest| {
        let audit = &audit;
        async move {
            audit
                .get(&c, req, |id| match id {
                    7 => Some(1000),
                    8 => Some(2000),
                    _ => None,
                })
                .await
        }
    };
    let ids = |r: Result<GetAuditLogReply, WireError>| -> Vec<u32> {
        r.unwrap().entries.iter().map(|e| e.agent_id).collect()
    };
    let any = GetAuditLogRequest::default();
    assert_eq!(
        ids(get(caller(1, 0, false), any.clone()).await),
        vec![0, 7, 8]
    );
    assert_eq!(ids(get(caller(2, 1000, false), any.clone()).await), vec![7]);
    assert_eq!(ids(get(caller(8, 0, true), any.clone()).await), vec![8]);
    // Asking for someone else's agent is refused.
    let other = GetAuditLogRequest {
        agent_id: Some(8),
        ..GetAuditLogRequest::default()
    };
    let e = get(caller(2, 1000, false), other.clone())
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::PermissionDenied);
    let e = get(caller(7, 0, true), other).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::PermissionDenied);
    // Filters.
    let sec = GetAuditLogRequest {
        category: Some("security".into()),
        ..GetAuditLogRequest::default()
    };
    let r = get(caller(1, 0, false), sec).await.unwrap();
    assert!(r
        .entries
        .iter()
        .all(|e| e.category == AuditCategory::Security));
    assert_eq!(r.count, 2);
    let bad = GetAuditLogRequest {
        category: Some("nope".into()),
        ..GetAuditLogRequest::default()
    };
    let e = get(caller(1, 0, false), bad).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidRequest);
}

#[tokio::test]
async fn old_entries_come_from_the_files_once_memory_has_dropped_them() {
    let state = tempfile::tempdir().unwrap();
    // Rotated (the entries take some 5 KB), none removed.
    let limits = AuditLimits {
        max_file_bytes: 4000,
        keep_files: 3,
    };
    let audit = Audit::open(state.path(), limits).unwrap();
    let root = caller(1, 0, false);
    audit
        .set_config(
            &root,
            SetAuditConfigRequest {
                max_entries: Some(5),
                ..SetAuditConfigRequest::default()
            },
        )
        .await
        .unwrap();
    for n in 0..20 {
        audit.record(rec(n));
    }
    let req = GetAuditLogRequest {
        since_id: Some(3),
        limit: 4,
        ..GetAuditLogRequest::default()
    };
    let r = audit.get(&root, req, |_| None).await.unwrap();
    let ids: Vec<u64> = r.entries.iter().map(|e| e.id).collect();
    assert_eq!(ids, vec![4, 5, 6, 7]);
    assert!(log_names(&audit.dir).len() > 1);
    // Without since_id: the oldest in memory.
    let r = audit
        .get(&root, GetAuditLogRequest::default(), |_| None)
        .await
        .unwrap();
    assert_eq!(r.count, 5);
    assert_eq!(r.entries[0].id, 18);
}

#[tokio::test]
async fn the_config_is_root_only_audited_and_persists() {
    let state = tempfile::tempdir().unwrap();
    {
        let audit = Audit::open(state.path(), AuditLimits::default()).unwrap();
        let change = SetAuditConfigRequest {
            log_syscalls: Some(true),
            log_lifecycle: Some(false),
            log_security: Some(false),
            ..SetAuditConfigRequest::default()
        };
        for refused in [caller(2, 1000, false), caller(3, 0, true)] {
            let e = audit
                .set_config(&refused, change.clone())
                .await
                .unwrap_err();
            assert_eq!(e.code, ErrorCode::PermissionDenied);
        }
        let r = audit
            .set_config(&caller(1, 0, false), change)
            .await
            .unwrap();
        assert!(r.success && r.config.log_syscalls && !r.config.log_lifecycle);
        // Off now: not recorded.
        audit.record(rec(1));
        let e = all(&audit).await;
        let changed = e.last().unwrap();
        // Recorded although SECURITY is now off: a change of the audit is always audited.
        assert_eq!(changed.event_type, "AUDIT_CONFIG_CHANGED");
        assert_eq!(changed.decided_by.as_deref(), Some("operator:0"));
        assert_eq!(changed.details.0["after"]["log_syscalls"], true);
        audit.shutdown().await;
    }
    let audit = Audit::open(state.path(), AuditLimits::default()).unwrap();
    assert!(audit.logs(AuditCategory::Syscall));
    assert!(!audit.logs(AuditCategory::AgentLifecycle));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attribution_follows_the_task_and_the_kill() {
    let state = tempfile::tempdir().unwrap();
    let audit = Arc::new(Audit::open(state.path(), AuditLimits::default()).unwrap());
    let obs = observer(Arc::clone(&audit), Arc::new(OnceLock::new()));
    let spawned = |restarts| LifecycleEvent::Spawned {
        id: 5,
        name: "w".into(),
        pid: 42,
        restarts,
    };
    acting_for(DecidedBy::Operator(1000), async { obs(&spawned(0)) }).await;
    obs(&spawned(1));
    {
        let _k = audit.killing(5, DecidedBy::Agent(3));
        obs(&LifecycleEvent::Exited {
            id: 5,
            name: "w".into(),
            reason: crate::agents::ExitReason {
                code: None,
                signal: Some(15),
                oom: false,
                killed: true,
            },
            restarting: false,
            shutdown: false,
        });
    }
    assert!(lock(&audit.kills).is_empty());
    let e = all(&audit).await;
    let by: Vec<(&str, Option<&str>)> = e
        .iter()
        .skip(1)
        .map(|e| (e.event_type.as_str(), e.decided_by.as_deref()))
        .collect();
    assert_eq!(
        by,
        vec![
            ("AGENT_SPAWNED", Some("operator:1000")),
            ("AGENT_SPAWNED", Some("kernel")),
            ("AGENT_EXITED", Some("agent:3")),
        ]
    );
}
