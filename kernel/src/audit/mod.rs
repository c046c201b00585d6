//! The audit log: an append-only, hash-chained record of what happened and who decided it.
//!
//! What it owns: `<state dir>/audit/` (the log files, the anchor `audit.head`, the persisted
//! `config.json`), the in-memory index of the most recent entries that GET_AUDIT_LOG reads,
//! and the writer thread that is the only code touching the files. The format, the chain and
//! verification live in [`clove_abi::auditlog`], shared with `clove audit verify`;
//! docs/audit.md describes them for users.
//!
//! Recording never blocks and never drops: [`Audit::record`] stamps the time, checks the
//! configuration and sends the entry down an unbounded channel to the writer, from any thread
//! or task. The writer assigns ids, links and seals the entries, appends them, and once per
//! round (group commit) fsyncs the file, rewrites the anchor atomically, publishes the round
//! to the index and answers whoever waits ([`Audit::sync`]). A writer that cannot write (disk
//! full) retries the same bytes until it can; meanwhile entries queue in memory.
//!
//! Hooks for subsystems: build an [`AuditRecord`] (or [`for_caller`] for a request's caller)
//! and call [`Audit::record`]. Who decided is explicit ([`DecidedBy`]): `kernel` for
//! automatic decisions (restarts, escalations, permission checks), `operator:<uid>` or
//! `agent:<id>` for what a caller asked for. Lifecycle events come from the agents' observer
//! ([`observer`]); the caller behind them is carried by [`acting_for`] (a task-local around
//! SPAWN, PAUSE and RESUME) and [`Audit::killing`] (KILL, whose exit is seen by another task).

mod writer;

#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clove_abi::auditlog::LogEntry;
use clove_abi::msg::{
    AuditCategory, AuditConfig, GetAuditLogReply, GetAuditLogRequest, SetAuditConfigReply,
    SetAuditConfigRequest,
};
use clove_abi::{ErrorCode, WireError};
use serde_json::{json, Value};
use tokio::sync::oneshot;

use crate::agents::{Agents, LifecycleEvent, Observer};
use crate::kernel::{Caller, Kernel};
use crate::sync::lock;

use writer::{Op, Writer};

/// Who decided an audited action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecidedBy {
    /// The kernel, automatically (a restart, an escalation, a permission check, an exit it
    /// observed).
    Kernel,
    /// An operator, by uid (a client on the main socket).
    Operator(u32),
    /// An agent, by id (a client on an agent's socket).
    Agent(u32),
}

impl DecidedBy {
    /// The caller of a request.
    pub fn of(caller: &Caller) -> DecidedBy {
        if caller.agent {
            DecidedBy::Agent(caller.id)
        } else {
            DecidedBy::Operator(caller.uid)
        }
    }
}

impl std::fmt::Display for DecidedBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecidedBy::Kernel => f.write_str("kernel"),
            DecidedBy::Operator(uid) => write!(f, "operator:{uid}"),
            DecidedBy::Agent(id) => write!(f, "agent:{id}"),
        }
    }
}

/// One event to audit: what [`Audit::record`] takes. The writer adds id, timestamp (taken
/// when recorded), `prev` and `hash`.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    /// Its category (the configuration decides whether it is logged).
    pub category: AuditCategory,
    /// The event, upper case (`AGENT_SPAWNED`, `PERMISSION_DENIED`, `HTTP_REQUEST`, ...).
    pub event_type: String,
    /// The agent it is about (for an operator's request: its connection id; 0: the kernel).
    pub agent_id: u32,
    /// That agent's name.
    pub agent_name: Option<String>,
    /// The operator uid the entry belongs to: the agent's owner, or the operator who acted.
    /// Non-root operators can read the entries with their uid here; `None`: root only.
    pub owner_uid: Option<u32>,
    /// The action succeeded (false: denied or failed).
    pub success: bool,
    /// Metadata only (never message contents, stored values or secrets).
    pub details: Value,
    /// Who decided.
    pub decided_by: DecidedBy,
}

impl AuditRecord {
    /// A successful event about `agent_id`, decided by the kernel, without details.
    pub fn new(category: AuditCategory, event_type: impl Into<String>, agent_id: u32) -> Self {
        AuditRecord {
            category,
            event_type: event_type.into(),
            agent_id,
            agent_name: None,
            owner_uid: None,
            success: true,
            details: json!({}),
            decided_by: DecidedBy::Kernel,
        }
    }

    /// With these details.
    pub fn details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    /// With this outcome.
    pub fn success(mut self, success: bool) -> Self {
        self.success = success;
        self
    }

    /// Decided by `who`.
    pub fn decided_by(mut self, who: DecidedBy) -> Self {
        self.decided_by = who;
        self
    }
}

/// A record about a request's caller: its id, its agent's name and owner (an agent) or its
/// uid (an operator), decided by the caller.
pub fn for_caller(
    kernel: &Kernel,
    caller: &Caller,
    category: AuditCategory,
    event_type: impl Into<String>,
) -> AuditRecord {
    let mut r = AuditRecord::new(category, event_type, caller.id).decided_by(DecidedBy::of(caller));
    if caller.agent {
        if let Some(a) = kernel.agents.get(caller.id) {
            r.agent_name = Some(a.name.clone());
            r.owner_uid = Some(a.owner_uid);
        }
    } else {
        r.owner_uid = Some(caller.uid);
    }
    r
}

/// Where the log goes and how big it may grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditLimits {
    /// A file is rotated before it would grow past this many bytes.
    pub max_file_bytes: u64,
    /// Files kept, the live one included; the oldest is removed beyond it.
    pub keep_files: u32,
}

impl Default for AuditLimits {
    /// 16 MiB per file, 8 files.
    fn default() -> Self {
        AuditLimits {
            max_file_bytes: 16 << 20,
            keep_files: 8,
        }
    }
}

/// Most entries GET_AUDIT_LOG returns at once, whatever `limit` asks.
pub const MAX_LIMIT: u32 = 10_000;
/// The largest `max_entries` (entries kept in memory) SET_AUDIT_CONFIG accepts.
pub const MAX_MAX_ENTRIES: u64 = 1_000_000;

/// What the handle and the writer share.
#[derive(Debug)]
struct Shared {
    config: RwLock<AuditConfig>,
    /// The most recent entries, oldest first, at most `config.max_entries`.
    index: RwLock<VecDeque<Arc<LogEntry>>>,
    /// Rounds committed (one fsync and one anchor each).
    commits: std::sync::atomic::AtomicU64,
}

impl Shared {
    fn config(&self) -> AuditConfig {
        *self.config.read().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The audit log. `Send + Sync`; every method takes `&self`.
#[derive(Debug)]
pub struct Audit {
    dir: PathBuf,
    shared: Arc<Shared>,
    ops: mpsc::Sender<Op>,
    /// Agents being KILLed, and by whom: their exit is attributed to that caller.
    kills: Mutex<HashMap<u32, DecidedBy>>,
    /// Owners of live agents, for the entries about their exits (gone from the table then).
    owners: Mutex<HashMap<u32, u32>>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn stopped() -> WireError {
    WireError::new(
        ErrorCode::Unavailable,
        "audit log is shut down: its writer has stopped",
    )
}

impl Audit {
    /// Opens (creating) `<state_dir>/audit/`, continues the chain where the files and the
    /// anchor end (ids are never reused, see `writer`), loads the most recent entries and
    /// starts the writer thread.
    pub fn open(state_dir: &Path, limits: AuditLimits) -> anyhow::Result<Audit> {
        let dir = state_dir.join("audit");
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .with_context(|| format!("create audit dir {}", dir.display()))?;
        }
        let config = writer::load_config(&dir);
        let shared = Arc::new(Shared {
            config: RwLock::new(config),
            index: RwLock::new(VecDeque::new()),
            commits: std::sync::atomic::AtomicU64::new(0),
        });
        let (writer, damage) = Writer::open(&dir, limits, Arc::clone(&shared))
            .with_context(|| format!("open the audit log in {}", dir.display()))?;
        let next_id = writer.next_id();
        let (ops, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("clove-audit-writer".into())
            .spawn(move || writer.run(rx))
            .context("start the audit writer thread")?;
        let audit = Audit {
            dir,
            shared,
            ops,
            kills: Mutex::new(HashMap::new()),
            owners: Mutex::new(HashMap::new()),
        };
        for problem in damage {
            tracing::error!("audit log: {problem}");
            audit.record_always(
                AuditRecord::new(AuditCategory::Security, "AUDIT_LOG_DAMAGED", 0)
                    .success(false)
                    .details(json!({ "problem": problem })),
            );
        }
        audit.record(
            AuditRecord::new(AuditCategory::Security, "AUDIT_STARTED", 0).details(json!({
                "pid": std::process::id(),
                "version": env!("CARGO_PKG_VERSION"),
                "next_id": next_id,
            })),
        );
        Ok(audit)
    }

    /// Whether entries of `category` are logged now (to skip building a costly record).
    pub fn logs(&self, category: AuditCategory) -> bool {
        self.shared.config().logs(category)
    }

    /// Records `r` if its category is logged. Never blocks, never fails: the entry is queued
    /// for the writer (only a kernel that has shut its writer down loses it, and says so).
    pub fn record(&self, r: AuditRecord) {
        if self.logs(r.category) {
            self.record_always(r);
        }
    }

    /// Records `r` whatever the configuration (changes of the audit itself).
    fn record_always(&self, r: AuditRecord) {
        let event = r.event_type.clone();
        if self.ops.send(Op::Append(r, now_ms())).is_err() {
            tracing::error!("audit entry {event} lost: the audit writer has stopped");
        }
    }

    /// Waits until everything recorded before this call is durable and readable.
    pub async fn sync(&self) -> Result<(), WireError> {
        let (tx, rx) = oneshot::channel();
        self.ops.send(Op::Sync(tx)).map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())
    }

    /// Marks agent `id` as being KILLed by `who` until the guard is dropped: its exit entry
    /// is attributed to `who`.
    pub fn killing(&self, id: u32, who: DecidedBy) -> KillGuard<'_> {
        lock(&self.kills).insert(id, who);
        KillGuard { audit: self, id }
    }

    /// GET_AUDIT_LOG for `caller`: oldest first, after `since_id`, filtered, at most `limit`
    /// (capped at [`MAX_LIMIT`]). Root operators see everything; other operators the entries
    /// whose `owner_uid` is theirs (their agents, their own requests); an agent the entries
    /// about itself. Asking for another agent's entries is `permission_denied`. Served from
    /// the in-memory index; a `since_id` older than the index reaches into the files.
    /// `owner_of` tells a live agent's owner uid.
    pub async fn get(
        &self,
        caller: &Caller,
        req: GetAuditLogRequest,
        owner_of: impl Fn(u32) -> Option<u32>,
    ) -> Result<GetAuditLogReply, WireError> {
        let category = req
            .category_filter()
            .map_err(|e| WireError::invalid_request(e.to_string()))?;
        if let Some(asked) = req.agent_id {
            let denied = if caller.agent {
                asked != caller.id
            } else {
                caller.uid != 0 && owner_of(asked).is_some_and(|uid| uid != caller.uid)
            };
            if denied {
                return Err(WireError::new(
                    ErrorCode::PermissionDenied,
                    format!("read the audit entries of agent {asked}: not yours"),
                ));
            }
        }
        let filter = Filter {
            category,
            agent_id: req.agent_id,
            viewer: Viewer::of(caller),
        };
        let limit = req.limit.min(MAX_LIMIT) as usize;
        let since = req.since_id.unwrap_or(0);
        self.sync().await?;
        let (mut entries, oldest) = {
            let index = self
                .shared
                .index
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            let oldest = index.front().map(|e| e.id);
            let picked: Vec<_> = index
                .iter()
                .filter(|e| e.id > since && filter.admits(e))
                .take(limit)
                .map(|e| e.to_wire())
                .collect();
            (picked, oldest)
        };
        // Entries older than the index are only in the files: read them there (since_id 0,
        // like an absent one, means "from the oldest in memory").
        if since > 0 && oldest.is_some_and(|o| since + 1 < o) {
            let dir = self.dir.clone();
            let until = oldest.unwrap_or(u64::MAX);
            let from_files = tokio::task::spawn_blocking(move || {
                writer::scan_files(&dir, since, until, limit, |e| filter.admits(e))
            })
            .await
            .map_err(|e| WireError::new(ErrorCode::Internal, e.to_string()))?;
            let mut merged: Vec<_> = from_files.iter().map(LogEntry::to_wire).collect();
            merged.extend(entries);
            merged.truncate(limit);
            entries = merged;
        }
        Ok(GetAuditLogReply {
            success: true,
            count: entries.len() as u64,
            entries,
        })
    }

    /// SET_AUDIT_CONFIG: root operators only. The change is audited whatever it turns off,
    /// and answered once both the new configuration and its entry are durable.
    pub async fn set_config(
        &self,
        caller: &Caller,
        req: SetAuditConfigRequest,
    ) -> Result<SetAuditConfigReply, WireError> {
        if caller.agent || caller.uid != 0 {
            return Err(WireError::new(
                ErrorCode::PermissionDenied,
                "change the audit configuration: root operators only",
            ));
        }
        if let Some(n) = req.max_entries {
            if n == 0 || n > MAX_MAX_ENTRIES {
                return Err(WireError::invalid_request(format!(
                    "max_entries {n}: between 1 and {MAX_MAX_ENTRIES}"
                )));
            }
        }
        let (before, after) = {
            let mut config = self
                .shared
                .config
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            let before = *config;
            config.apply(&req);
            (before, *config)
        };
        let (tx, rx) = oneshot::channel();
        self.ops
            .send(Op::SaveConfig(after, tx))
            .map_err(|_| stopped())?;
        self.record_always(AuditRecord {
            owner_uid: Some(caller.uid),
            ..AuditRecord::new(AuditCategory::Security, "AUDIT_CONFIG_CHANGED", caller.id)
                .decided_by(DecidedBy::of(caller))
                .details(json!({"before": before, "after": after}))
        });
        rx.await.map_err(|_| stopped())?.map_err(|e| {
            WireError::new(
                ErrorCode::Internal,
                format!("save the audit configuration: {e}"),
            )
        })?;
        self.sync().await?;
        Ok(SetAuditConfigReply {
            success: true,
            config: after,
        })
    }

    /// Stops the writer cleanly: everything recorded before is written, fsync'd and anchored.
    pub async fn shutdown(&self) {
        self.record(AuditRecord::new(
            AuditCategory::Security,
            "AUDIT_STOPPED",
            0,
        ));
        let (tx, rx) = oneshot::channel();
        if self.ops.send(Op::Shutdown(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

/// Ends a KILL's attribution ([`Audit::killing`]).
#[derive(Debug)]
pub struct KillGuard<'a> {
    audit: &'a Audit,
    id: u32,
}

impl Drop for KillGuard<'_> {
    fn drop(&mut self) {
        lock(&self.audit.kills).remove(&self.id);
    }
}

/// Whose entries a reader may see.
#[derive(Debug, Clone, Copy)]
enum Viewer {
    Root,
    Operator(u32),
    Agent(u32),
}

impl Viewer {
    fn of(caller: &Caller) -> Viewer {
        match (caller.agent, caller.uid) {
            (true, _) => Viewer::Agent(caller.id),
            (false, 0) => Viewer::Root,
            (false, uid) => Viewer::Operator(uid),
        }
    }
}

/// A GET_AUDIT_LOG's filters plus what the reader may see.
#[derive(Debug, Clone, Copy)]
struct Filter {
    category: Option<AuditCategory>,
    agent_id: Option<u32>,
    viewer: Viewer,
}

impl Filter {
    fn admits(&self, e: &LogEntry) -> bool {
        let visible = match self.viewer {
            Viewer::Root => true,
            Viewer::Operator(uid) => e.owner_uid == Some(uid),
            Viewer::Agent(id) => e.agent_id == id,
        };
        visible
            && self.category.is_none_or(|c| c == e.category)
            && self.agent_id.is_none_or(|a| a == e.agent_id)
    }
}

tokio::task_local! {
    /// The caller a lifecycle request runs for, seen by the observer it triggers.
    static DECIDER: DecidedBy;
}

/// Runs `f` (a SPAWN, PAUSE or RESUME) on behalf of `who`: the lifecycle entries it causes
/// in this task are attributed to `who`.
pub async fn acting_for<F: Future>(who: DecidedBy, f: F) -> F::Output {
    DECIDER.scope(who, f).await
}

fn current_decider() -> DecidedBy {
    DECIDER.try_with(Clone::clone).unwrap_or(DecidedBy::Kernel)
}

/// The agents' observer that audits lifecycle events (AGENT_LIFECYCLE): spawns (by the
/// caller, or the kernel for restarts and restores), exits with their reason (the KILLing
/// caller, else the kernel), restarts and escalations (the kernel), pauses and resumes (the
/// caller). `agents` is set once the table exists (the observer is made before it).
pub fn observer(audit: Arc<Audit>, agents: Arc<OnceLock<Weak<Agents>>>) -> Observer {
    Box::new(move |event| {
        let owner_of = |id: u32| -> Option<u32> {
            if let Some(uid) = lock(&audit.owners).get(&id) {
                return Some(*uid);
            }
            let uid = agents.get()?.upgrade()?.get(id)?.owner_uid;
            lock(&audit.owners).insert(id, uid);
            Some(uid)
        };
        let about = |category, event_type: &str, id: u32, name: &str| AuditRecord {
            agent_name: Some(name.to_owned()),
            owner_uid: owner_of(id),
            ..AuditRecord::new(category, event_type, id)
        };
        let lifecycle = AuditCategory::AgentLifecycle;
        let record = match event {
            LifecycleEvent::Spawned {
                id,
                name,
                pid,
                restarts,
            } => about(lifecycle, "AGENT_SPAWNED", *id, name)
                .details(json!({"pid": pid, "restarts": restarts}))
                .decided_by(if *restarts > 0 {
                    DecidedBy::Kernel
                } else {
                    current_decider()
                }),
            LifecycleEvent::Exited {
                id,
                name,
                reason,
                restarting,
                shutdown,
            } => {
                let by = if reason.killed {
                    lock(&audit.kills).get(id).cloned()
                } else {
                    None
                };
                let r = about(lifecycle, "AGENT_EXITED", *id, name)
                    .success(reason.clean() || reason.killed || *shutdown)
                    .details(json!({"exit_code": reason.code, "signal": reason.signal,
                                    "oom": reason.oom, "killed": reason.killed,
                                    "reason": reason.describe(), "restarting": restarting,
                                    "shutdown": shutdown}))
                    .decided_by(by.unwrap_or(DecidedBy::Kernel));
                if !restarting {
                    lock(&audit.owners).remove(id);
                }
                r
            }
            LifecycleEvent::Restarting {
                id,
                name,
                restart_count,
                reason,
                backoff_ms,
            } => about(lifecycle, "AGENT_RESTARTING", *id, name).details(
                json!({"restart_count": restart_count, "reason": reason.describe(),
                       "exit_code": reason.code, "signal": reason.signal,
                       "backoff_ms": backoff_ms}),
            ),
            LifecycleEvent::Escalated {
                id,
                name,
                restart_count,
                reason,
            } => about(lifecycle, "AGENT_ESCALATED", *id, name)
                .success(false)
                .details(
                    json!({"restart_count": restart_count, "reason": reason.describe(),
                                "exit_code": reason.code, "signal": reason.signal}),
                ),
            LifecycleEvent::GroupEscalated {
                group,
                parent,
                restarts,
                intensity,
                period,
                gave_up,
            } => AuditRecord::new(lifecycle, "GROUP_ESCALATED", 0)
                .success(false)
                .details(
                    json!({"group": group, "parent": parent, "restarts": restarts,
                                "intensity": intensity, "period": period, "gave_up": gave_up}),
                ),
            LifecycleEvent::Paused { id, name } => {
                about(lifecycle, "AGENT_PAUSED", *id, name).decided_by(current_decider())
            }
            LifecycleEvent::Resumed { id, name } => {
                about(lifecycle, "AGENT_RESUMED", *id, name).decided_by(current_decider())
            }
        };
        audit.record(record);
    })
}

/// Audits a lifecycle request that failed past its permission check (a refusal by a check
/// is audited as SECURITY by the dispatcher): `<WHAT>_FAILED` with the error.
pub fn failed_request(kernel: &Kernel, caller: &Caller, what: &str, target: Value, e: &WireError) {
    if e.code == ErrorCode::PermissionDenied {
        return;
    }
    kernel.audit.record(
        for_caller(
            kernel,
            caller,
            AuditCategory::AgentLifecycle,
            format!("{what}_FAILED"),
        )
        .success(false)
        .details(json!({"target": target, "code": e.code, "error": e.message})),
    );
}

/// The `limits` of the kernel's configuration.
pub fn limits_of(config: &crate::config::Config) -> AuditLimits {
    AuditLimits {
        max_file_bytes: config.audit_max_file_bytes,
        keep_files: config.audit_keep_files,
    }
}
