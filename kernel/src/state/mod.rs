//! The durable key-value store behind STORE, FETCH, DELETE and KEYS.
//!
//! What it owns: the SQLite file `<state_dir>/state.db` (WAL, `synchronous=FULL`), an
//! in-memory mirror of every key, and the writer thread that is the only code changing either.
//! docs/state.md describes the semantics for users; in short:
//!
//! * Scopes. `global` keys are durable and shared. `session` keys are memory only and vanish
//!   with the kernel. Both live in one *plain* namespace: a plain key is global or session,
//!   never both; storing it in the other scope replaces it and continues its versions. `agent`
//!   keys are durable and belong to the caller's id (never a name), invisible to any other id.
//! * Lookup. FETCH and DELETE try the plain key, then the caller's agent key; KEYS lists both,
//!   deduplicated and sorted.
//! * Versions start at 1 and grow by 1 with each write. A deleted or expired key is absent, so
//!   its next write starts at 1 again. `if_version` makes a STORE compare-and-set (`0`: only
//!   if absent); a mismatch is a `conflict` naming the current state.
//! * TTL: seconds, turned into a wall-clock expiry (epoch ms) stored with the row. Every read,
//!   list and compare-and-set treats an expired key as absent; [`StateStore::purge_expired`]
//!   removes them for good and reports each as an `expired` change.
//! * Durability: STORE and DELETE answer after their transaction has committed; concurrent
//!   writes share one transaction and one fsync (group commit, see `writer`).
//!
//! Reads never touch SQLite: they consult the in-memory index under a read lock, which the
//! writer takes for writing only to publish a committed round. The price is memory: every
//! live value is held in memory, bounded by [`StateLimits::max_total_bytes`].

mod db;
mod index;
mod limits;
mod writer;

#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashSet};
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clove_abi::error::{ErrorCode, WireError};
use clove_abi::msg::state::{
    DeleteReply, DeleteRequest, FetchReply, FetchRequest, KeysReply, KeysRequest, StateScope,
    StoreReply, StoreRequest,
};
use clove_abi::msg::{GroupCreateRequest, SpawnRequest};
use clove_abi::Json;
use serde::Serialize;
use tokio::sync::{broadcast, oneshot};

pub use limits::StateLimits;

use index::{Index, PLAIN};
use writer::{Op, Owners, Writer};

/// How many change events a slow subscriber may fall behind before it sees `Lagged`.
pub const CHANGE_CAPACITY: usize = 1024;

/// Keys removed per purge round, so that STOREs queued meanwhile wait for one small round,
/// not for the whole purge.
const PURGE_CHUNK: usize = 512;

/// What happened to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    /// Stored (created or overwritten).
    Set,
    /// Removed by DELETE.
    Deleted,
    /// Removed because its TTL ran out (reported when purged or overwritten).
    Expired,
}

/// One change to a key, for STATE_CHANGED events. Sent only after the change committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StateChange {
    /// The key.
    pub key: String,
    /// The key's scope (for `deleted`/`expired`: the scope it had).
    pub scope: StateScope,
    /// For `agent` scope, the owning id: deliver the event to that agent only. `None` for
    /// plain (global or session) keys, which everyone may see.
    pub owner: Option<u32>,
    /// What happened.
    pub kind: ChangeKind,
    /// The version after a `set`; the last version for `deleted` and `expired`.
    pub version: u64,
    /// Who did it: the caller's id; 0 for the kernel itself (expiry).
    pub by: u32,
}

/// Current size of the store, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(not(test), allow(dead_code))] // tests read it now; METRICS (issue 9) will
pub struct StateUsage {
    /// Keys held (all scopes; expired ones until purged).
    pub keys: u64,
    /// Bytes held: keys plus JSON text of values.
    pub bytes: u64,
    /// Transactions committed since open (one per group-committed round).
    pub commits: u64,
}

/// What the store's handle and its writer thread share.
#[derive(Debug)]
struct Shared {
    index: RwLock<Index>,
    changes: broadcast::Sender<StateChange>,
    commits: AtomicU64,
    limits: StateLimits,
}

impl Shared {
    // The index is only changed by whole `Index::put` calls, so a panic elsewhere while
    // holding the lock cannot leave it half-updated: poisoning is ignored.
    fn read_index(&self) -> RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_index(&self) -> RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The spec of an agent that a restarted kernel brings back: one whose policy restarts it,
/// spawned by an operator (docs/supervision.md, "Kernel restarts").
#[derive(Debug, Clone, PartialEq)]
pub struct SavedAgent {
    /// Its id (it keeps it).
    pub id: u32,
    /// The operator uid it belongs to.
    pub owner_uid: u32,
    /// The uid it runs as.
    pub uid: u32,
    /// The request as resolved: an absolute script path, nothing relative to a caller.
    pub spec: SpawnRequest,
}

/// The spec of a supervisor group that a restarted kernel creates again (before it restores
/// the agents saved in it).
#[derive(Debug, Clone, PartialEq)]
pub struct SavedGroup {
    /// The operator uid it belongs to.
    pub owner_uid: u32,
    /// What GROUP_CREATE asked for.
    pub spec: GroupCreateRequest,
}

/// The state store. `Send + Sync`: share it through an `Arc`; every method takes `&self`.
#[derive(Debug)]
pub struct StateStore {
    shared: Arc<Shared>,
    ops: mpsc::Sender<Op>,
    /// The saved agents as found at open, in spawn order.
    saved: Vec<SavedAgent>,
    /// The saved groups as found at open, in creation order.
    saved_groups: Vec<SavedGroup>,
}

/// Wall-clock milliseconds since the Unix epoch (0 if the clock is before 1970).
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The error for a request the writer can no longer take or answer.
fn stopped() -> WireError {
    WireError::new(
        ErrorCode::Unavailable,
        "state store is shut down: its writer has stopped",
    )
}

impl StateStore {
    /// Opens (creating if needed) `<dir>/state.db`, drops the rows that expired while the
    /// kernel was down, loads the rest into memory and starts the writer thread.
    pub fn open(dir: &Path, limits: StateLimits) -> anyhow::Result<StateStore> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("create state dir {}", dir.display()))?;
        let conn = db::open(dir)?;
        let index = db::load(&conn, now_ms())
            .with_context(|| format!("load state database in {}", dir.display()))?;
        let saved = db::load_agents(&conn)
            .with_context(|| format!("load state database in {}", dir.display()))?;
        let saved_groups = db::load_groups(&conn)
            .with_context(|| format!("load state database in {}", dir.display()))?;
        let (changes, _) = broadcast::channel(CHANGE_CAPACITY);
        let shared = Arc::new(Shared {
            index: RwLock::new(index),
            changes,
            commits: AtomicU64::new(0),
            limits,
        });
        let (ops, rx) = mpsc::channel();
        let writer = Writer::new(conn, Arc::clone(&shared));
        std::thread::Builder::new()
            .name("clove-state-writer".into())
            .spawn(move || writer.run(rx))
            .context("start the state writer thread")?;
        Ok(StateStore {
            shared,
            ops,
            saved,
            saved_groups,
        })
    }

    /// Sends `op` to the writer and waits for its answer.
    async fn ask<T>(
        &self,
        op: impl FnOnce(oneshot::Sender<Result<T, WireError>>) -> Op,
    ) -> Result<T, WireError> {
        self.send(op)?.await.map_err(|_| stopped())?
    }

    /// STORE: sets `req.key` in `req.scope` for `caller` (the owner of an `agent` key).
    /// Answers once the write is durable (session: once it is visible) with the new version.
    /// Errors: `invalid_request` (empty key, bad `ttl`, agent scope without a caller id),
    /// `limit_exceeded` (key, value, key count or total size), `conflict` (`if_version`),
    /// `unavailable`/`internal` (the database failed; nothing was written).
    pub async fn store(&self, caller: u32, req: StoreRequest) -> Result<StoreReply, WireError> {
        let limits = &self.shared.limits;
        limits.check_key(&req.key)?;
        if req.scope == StateScope::Agent && caller == PLAIN {
            return Err(WireError::invalid_request(
                "agent scope needs a caller id, and this caller has none",
            ));
        }
        let expires_at = match req.ttl {
            Some(ttl) => Some(now_ms().saturating_add(limits::ttl_millis(ttl)?)),
            None => None,
        };
        let text = serde_json::to_string(&req.value.0).map_err(|e| {
            WireError::new(
                ErrorCode::Internal,
                format!("state key {:?}: cannot encode value as json: {e}", req.key),
            )
        })?;
        limits.check_value(&req.key, &text)?;
        let store = writer::Store {
            caller,
            key: req.key,
            value: Arc::from(text),
            scope: req.scope,
            expires_at,
            if_version: req.if_version,
        };
        self.ask(|tx| Op::Store(store, tx)).await
    }

    /// FETCH: the plain key (global or session) if live, else the caller's agent key.
    /// A missing key is `exists: false`, not an error.
    pub async fn fetch(&self, caller: u32, req: FetchRequest) -> Result<FetchReply, WireError> {
        if req.key.is_empty() {
            return Err(WireError::invalid_request("state key is empty"));
        }
        let now = now_ms();
        let found = {
            let index = self.shared.read_index();
            index
                .live(PLAIN, &req.key, now)
                .or_else(|| {
                    (caller != PLAIN)
                        .then(|| index.live(caller, &req.key, now))
                        .flatten()
                })
                .cloned()
        };
        let Some(entry) = found else {
            return Ok(FetchReply {
                success: true,
                exists: false,
                value: Json(serde_json::Value::Null),
                scope: None,
                version: None,
            });
        };
        // Parsed outside the lock; the text was produced by serde_json, so this only fails
        // if the file was edited by hand.
        let value = serde_json::from_str(&entry.value).map_err(|e| {
            WireError::new(
                ErrorCode::Internal,
                format!(
                    "state key {:?}: stored value is not valid json: {e}",
                    req.key
                ),
            )
        })?;
        Ok(FetchReply {
            success: true,
            exists: true,
            value: Json(value),
            scope: Some(entry.scope),
            version: Some(entry.version),
        })
    }

    /// DELETE: removes the first of the plain key and the caller's agent key that is live.
    /// Answers once the removal is durable.
    pub async fn delete(&self, caller: u32, req: DeleteRequest) -> Result<DeleteReply, WireError> {
        if req.key.is_empty() {
            return Err(WireError::invalid_request("state key is empty"));
        }
        self.ask(|reply| Op::Delete {
            caller,
            key: req.key,
            reply,
        })
        .await
    }

    /// KEYS: the live plain keys and the caller's live agent keys starting with `prefix`,
    /// deduplicated and sorted.
    pub async fn keys(&self, caller: u32, req: KeysRequest) -> Result<KeysReply, WireError> {
        let prefix = req.prefix.unwrap_or_default();
        let now = now_ms();
        let keys: BTreeSet<String> = {
            let index = self.shared.read_index();
            let mut keys: BTreeSet<String> = index
                .keys_with_prefix(PLAIN, &prefix, now)
                .map(str::to_owned)
                .collect();
            if caller != PLAIN {
                keys.extend(
                    index
                        .keys_with_prefix(caller, &prefix, now)
                        .map(str::to_owned),
                );
            }
            keys
        };
        let keys: Vec<String> = keys.into_iter().collect();
        Ok(KeysReply {
            success: true,
            count: keys.len() as u64,
            keys,
        })
    }

    /// The agents saved when the store was opened (by an earlier kernel on this state dir), in
    /// the order they were spawned: what this kernel restores at start.
    pub fn saved_agents(&self) -> &[SavedAgent] {
        &self.saved
    }

    /// Saves `agent`'s spec so that a restarted kernel brings it back (replacing an earlier
    /// save of its id, which keeps its place in the order). The request reaches the writer at
    /// once, so a later [`StateStore::forget_agent`] of the id comes after it; the future
    /// answers once the row is durable.
    pub fn save_agent(
        &self,
        agent: &SavedAgent,
    ) -> impl std::future::Future<Output = Result<(), WireError>> + Send + 'static {
        let spec = serde_json::to_string(&agent.spec).map_err(|e| {
            WireError::new(
                ErrorCode::Internal,
                format!("save the spec of agent {}: {e}", agent.id),
            )
        });
        let sent = spec.and_then(|spec| {
            self.send(|reply| Op::SaveAgent {
                id: agent.id,
                owner_uid: agent.owner_uid,
                uid: agent.uid,
                spec,
                reply,
            })
        });
        async move { sent?.await.map_err(|_| stopped())?.map(drop) }
    }

    /// Forgets agent `id`, gone for good: its saved spec, if any, and its agent keys, in one
    /// transaction, without change events (their only recipient is gone). The request reaches the writer at once (dropping the future does not
    /// call it off); the future answers the number of keys removed once that is durable.
    pub fn forget_agent(
        &self,
        id: u32,
    ) -> impl std::future::Future<Output = Result<usize, WireError>> + Send + 'static {
        let sent = self.send(|reply| Op::ForgetAgent(id, reply));
        async move { sent?.await.map_err(|_| stopped())? }
    }

    /// The supervisor groups saved when the store was opened, in creation order.
    pub fn saved_groups(&self) -> &[SavedGroup] {
        &self.saved_groups
    }

    /// Saves a group's spec so that a restarted kernel creates it again; answers once the row
    /// is durable.
    pub fn save_group(
        &self,
        group: &SavedGroup,
    ) -> impl std::future::Future<Output = Result<(), WireError>> + Send + 'static {
        let name = group.spec.name.clone();
        let spec = serde_json::to_string(&group.spec).map_err(|e| {
            WireError::new(
                ErrorCode::Internal,
                format!("save the spec of group {name:?}: {e}"),
            )
        });
        let sent = spec.and_then(|spec| {
            self.send(|reply| Op::SaveGroup {
                name,
                owner_uid: group.owner_uid,
                spec,
                reply,
            })
        });
        async move { sent?.await.map_err(|_| stopped())?.map(drop) }
    }

    /// Forgets a group's saved spec (if any). The request reaches the writer at once; the
    /// future answers once that is durable.
    pub fn forget_group(
        &self,
        name: &str,
    ) -> impl std::future::Future<Output = Result<(), WireError>> + Send + 'static {
        let sent = self.send(|reply| Op::ForgetGroup(name.to_owned(), reply));
        async move { sent?.await.map_err(|_| stopped())?.map(drop) }
    }

    /// Sends `op` to the writer now; its answer comes on the receiver.
    fn send<T>(
        &self,
        op: impl FnOnce(oneshot::Sender<Result<T, WireError>>) -> Op,
    ) -> Result<oneshot::Receiver<Result<T, WireError>>, WireError> {
        let (tx, rx) = oneshot::channel();
        self.ops.send(op(tx)).map_err(|_| stopped())?;
        Ok(rx)
    }

    /// At kernel start: removes the agent keys of every owner not in `ids` (the agents whose
    /// specs persist). Answers the number of keys removed.
    pub async fn retain_owners(&self, ids: &[u32]) -> Result<usize, WireError> {
        let keep: HashSet<u32> = ids.iter().copied().collect();
        self.ask(|tx| Op::DropOwners(Owners::AllBut(keep), tx))
            .await
    }

    /// Removes every key whose TTL has run out, in small rounds so that writes interleave,
    /// and reports each as an `expired` change. Call it from a timer (every few seconds);
    /// correctness does not depend on it, memory and disk use do. Answers the number removed.
    pub async fn purge_expired(&self) -> Result<usize, WireError> {
        let mut total = 0;
        loop {
            let n = self
                .ask(|reply| Op::Purge {
                    max: PURGE_CHUNK,
                    reply,
                })
                .await?;
            total += n;
            if n < PURGE_CHUNK {
                return Ok(total);
            }
        }
    }

    /// Reserves `size` ids that no earlier call (in this or any earlier kernel on this state
    /// dir) returned: reads the stored floor (1 at first), durably stores floor + size and
    /// returns floor..floor + size. Never includes 0; after the last u32 it starts again at 1.
    /// Blocks the calling thread until the floor is on disk (a few ms): call it at start and
    /// rarely after, not on a hot path.
    pub fn id_block(&self, size: u32) -> anyhow::Result<Range<u32>> {
        let (reply, rx) = mpsc::sync_channel(1);
        self.ops
            .send(Op::IdBlock { size, reply })
            .map_err(|_| stopped())?;
        let block = rx.recv().map_err(|_| stopped())??;
        Ok(block)
    }

    /// A receiver of every committed change from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<StateChange> {
        self.shared.changes.subscribe()
    }

    /// Keys, bytes and commits, for metrics.
    #[cfg_attr(not(test), allow(dead_code))] // tests read it now; METRICS (issue 9) will
    pub fn usage(&self) -> StateUsage {
        let index = self.shared.read_index();
        StateUsage {
            keys: index.count(),
            bytes: index.bytes(),
            commits: self.shared.commits.load(Ordering::Relaxed),
        }
    }

    /// Stops the writer cleanly: every request sent before this one is committed and
    /// answered, the database is closed (checkpointing the WAL), and later requests get
    /// `unavailable`. Idempotent. Dropping the last handle without this also stops the
    /// writer once it has drained its queue, but nobody waits for it.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.ops.send(Op::Shutdown(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}
