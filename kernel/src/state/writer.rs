//! The writer thread: the only code that changes the store.
//!
//! It owns the read-write SQLite connection. Requests arrive on a channel; each round it takes
//! everything pending (up to [`MAX_BATCH`]), decides every request against the index plus the
//! changes made earlier in the same round, runs the resulting statements in ONE transaction
//! and commits it (group commit: one fsync for the whole round). Only then does it publish
//! the round's changes to the in-memory index (one short write lock), send the change events
//! and answer each request. So a reply means "durable and visible", and readers never wait
//! for an fsync: they only ever wait for the index update.
//!
//! Because one thread decides every write in order, compare-and-set needs no further locking.
//! If a statement or the commit fails, the round is rolled back and every request in it that
//! would have succeeded gets the error: nothing of a failed round is visible or durable.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;

use clove_abi::error::{ErrorCode, WireError};
use clove_abi::msg::state::{DeleteReply, StateScope, StoreReply};
use rusqlite::Connection;
use tokio::sync::oneshot;

use super::db;
use super::index::{Entry, PLAIN};
use super::{now_ms, ChangeKind, Shared, StateChange};

/// Most requests decided and committed in one round: bounds the latency a round adds to the
/// requests queued behind it.
pub const MAX_BATCH: usize = 1024;

/// A STORE, checked and ready to decide.
#[derive(Debug)]
pub struct Store {
    /// The caller (the owner for `agent` scope).
    pub caller: u32,
    /// The key, checked against the limits.
    pub key: String,
    /// The value's JSON text, checked against the limits.
    pub value: Arc<str>,
    /// The requested scope.
    pub scope: StateScope,
    /// Expiry in epoch ms, computed when the request arrived.
    pub expires_at: Option<i64>,
    /// Compare-and-set condition.
    pub if_version: Option<u64>,
}

/// Whose agent keys a drop removes.
#[derive(Debug)]
pub enum Owners {
    /// Exactly this owner's.
    One(u32),
    /// Every owner's except these.
    AllBut(HashSet<u32>),
}

/// One request to the writer, with where to send its answer.
#[derive(Debug)]
pub enum Op {
    /// STORE.
    Store(Store, oneshot::Sender<Result<StoreReply, WireError>>),
    /// DELETE by `caller` of `key`.
    Delete {
        caller: u32,
        key: String,
        reply: oneshot::Sender<Result<DeleteReply, WireError>>,
    },
    /// Remove agent keys by owner; answers the number of keys removed.
    DropOwners(Owners, oneshot::Sender<Result<usize, WireError>>),
    /// Save the spec of an agent that a restarted kernel brings back; answers 1.
    SaveAgent {
        id: u32,
        owner_uid: u32,
        uid: u32,
        /// The resolved SpawnRequest as JSON text.
        spec: String,
        reply: oneshot::Sender<Result<usize, WireError>>,
    },
    /// Forget an agent gone for good: its saved spec (if any) and its agent keys, in one
    /// transaction; answers the number of keys removed.
    ForgetAgent(u32, oneshot::Sender<Result<usize, WireError>>),
    /// Save (insert or replace) a supervisor group's spec.
    SaveGroup {
        name: String,
        owner_uid: u32,
        /// The GroupCreateRequest as JSON text.
        spec: String,
        reply: oneshot::Sender<Result<usize, WireError>>,
    },
    /// Forget a group's saved spec (if any).
    ForgetGroup(String, oneshot::Sender<Result<usize, WireError>>),
    /// Remove up to `max` expired keys; answers the number removed.
    Purge {
        max: usize,
        reply: oneshot::Sender<Result<usize, WireError>>,
    },
    /// Reserve `size` ids; a blocking caller waits on a std channel.
    IdBlock {
        size: u32,
        reply: SyncSender<Result<Range<u32>, WireError>>,
    },
    /// Finish this round, close the database, then answer.
    Shutdown(oneshot::Sender<()>),
    /// Tests: stall the writer until the sender side is dropped or sends, so that requests
    /// pile up and must be committed together.
    #[cfg(test)]
    Hold(Receiver<()>),
}

/// A decided request waiting for the round's commit before it is answered.
enum Answer {
    Store(
        oneshot::Sender<Result<StoreReply, WireError>>,
        Result<StoreReply, WireError>,
    ),
    Delete(
        oneshot::Sender<Result<DeleteReply, WireError>>,
        Result<DeleteReply, WireError>,
    ),
    Count(
        oneshot::Sender<Result<usize, WireError>>,
        Result<usize, WireError>,
    ),
    IdBlock(
        SyncSender<Result<Range<u32>, WireError>>,
        Result<Range<u32>, WireError>,
    ),
}

impl Answer {
    /// The round failed: a request that would have succeeded gets `e` instead.
    fn fail(&mut self, e: &WireError) {
        match self {
            Answer::Store(_, r @ Ok(_)) => *r = Err(e.clone()),
            Answer::Delete(_, r @ Ok(_)) => *r = Err(e.clone()),
            Answer::Count(_, r @ Ok(_)) => *r = Err(e.clone()),
            Answer::IdBlock(_, r @ Ok(_)) => *r = Err(e.clone()),
            _ => {}
        }
    }

    fn send(self) {
        // A caller that went away (connection closed) no longer needs its answer.
        match self {
            Answer::Store(tx, r) => drop(tx.send(r)),
            Answer::Delete(tx, r) => drop(tx.send(r)),
            Answer::Count(tx, r) => drop(tx.send(r)),
            Answer::IdBlock(tx, r) => drop(tx.send(r)),
        }
    }
}

/// A request's outcome inside a round: the outer error is a failed SQLite call, which fails
/// the whole round; the inner one is this request's own refusal (conflict, limit, ...).
type Step<T> = Result<Result<T, WireError>, WireError>;

/// The writer's state for its life.
pub struct Writer {
    conn: Connection,
    shared: Arc<Shared>,
}

/// One round's decisions, not yet committed or visible.
#[derive(Default)]
struct Round {
    /// (owner, key) → the entry after this round (`None`: removed). Overrides the index.
    overlay: HashMap<(u32, String), Option<Entry>>,
    /// Change in the index's entry count and bytes once the overlay is applied.
    count_delta: i64,
    bytes_delta: i64,
    /// A transaction is open (some request changed a durable row).
    in_tx: bool,
    /// Events to send once committed.
    events: Vec<StateChange>,
    answers: Vec<Answer>,
}

impl Writer {
    /// A writer over an open connection.
    pub fn new(conn: Connection, shared: Arc<Shared>) -> Writer {
        Writer { conn, shared }
    }

    /// The thread's body: rounds until shut down or every sender is gone.
    pub fn run(self, rx: Receiver<Op>) {
        let mut shutdown = Vec::new();
        let mut this = self;
        while shutdown.is_empty() {
            let Ok(first) = rx.recv() else { break };
            #[cfg(test)]
            if let Op::Hold(release) = first {
                let _ = release.recv();
                continue;
            }
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
            this.round(batch, &mut shutdown);
        }
        // Closing the last connection checkpoints the WAL into the main file.
        drop(this);
        for done in shutdown {
            let _ = done.send(());
        }
    }

    /// Decides, commits, publishes and answers one batch.
    fn round(&mut self, batch: Vec<Op>, shutdown: &mut Vec<oneshot::Sender<()>>) {
        let now = now_ms();
        let mut r = Round::default();
        let mut failed: Option<WireError> = None;
        for op in batch {
            // After a failed statement the transaction is doomed: refuse the rest unseen.
            let answer = match op {
                Op::Store(s, tx) => Answer::Store(
                    tx,
                    self.step(&mut r, &mut failed, |w, r| w.store(r, s, now)),
                ),
                Op::Delete { caller, key, reply } => Answer::Delete(
                    reply,
                    self.step(&mut r, &mut failed, |w, r| w.delete(r, caller, &key, now)),
                ),
                Op::DropOwners(owners, tx) => Answer::Count(
                    tx,
                    self.step(&mut r, &mut failed, |w, r| w.drop_owners(r, &owners)),
                ),
                Op::SaveAgent {
                    id,
                    owner_uid,
                    uid,
                    spec,
                    reply,
                } => Answer::Count(
                    reply,
                    self.step(&mut r, &mut failed, |w, r| {
                        w.save_agent(r, id, owner_uid, uid, &spec)
                    }),
                ),
                Op::ForgetAgent(id, reply) => Answer::Count(
                    reply,
                    self.step(&mut r, &mut failed, |w, r| w.forget_agent(r, id)),
                ),
                Op::SaveGroup {
                    name,
                    owner_uid,
                    spec,
                    reply,
                } => Answer::Count(
                    reply,
                    self.step(&mut r, &mut failed, |w, r| {
                        w.begin(r)?;
                        db::save_group(&w.conn, &name, owner_uid, &spec).map_err(|e| {
                            db::wire_error(&format!("save the spec of group {name:?}"), &e)
                        })?;
                        Ok(Ok(1))
                    }),
                ),
                Op::ForgetGroup(name, reply) => Answer::Count(
                    reply,
                    self.step(&mut r, &mut failed, |w, r| {
                        w.begin(r)?;
                        db::delete_group(&w.conn, &name).map_err(|e| {
                            db::wire_error(&format!("forget the spec of group {name:?}"), &e)
                        })?;
                        Ok(Ok(1))
                    }),
                ),
                Op::Purge { max, reply } => Answer::Count(
                    reply,
                    self.step(&mut r, &mut failed, |w, r| w.purge(r, max, now)),
                ),
                Op::IdBlock { size, reply } => Answer::IdBlock(
                    reply,
                    self.step(&mut r, &mut failed, |w, r| w.id_block(r, size)),
                ),
                Op::Shutdown(done) => {
                    shutdown.push(done);
                    continue;
                }
                #[cfg(test)]
                Op::Hold(_) => continue,
            };
            r.answers.push(answer);
        }
        if failed.is_none() && r.in_tx {
            match self.conn.execute_batch("COMMIT") {
                Ok(()) => {
                    self.shared.commits.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => failed = Some(db::wire_error("commit", &e)),
            }
        }
        if let Some(e) = failed {
            tracing::error!("{}", e.message);
            if r.in_tx {
                // Undo whatever part of the round reached the database. If even this fails
                // the connection is unusable and the next round reports it.
                let _ = self.conn.execute_batch("ROLLBACK");
            }
            for mut a in r.answers {
                a.fail(&e);
                a.send();
            }
            return;
        }
        // Committed: publish, then tell subscribers, then answer.
        {
            let mut index = self.shared.write_index();
            for ((owner, key), entry) in r.overlay {
                index.put(owner, &key, entry);
            }
        }
        for ev in r.events {
            // No subscriber is fine.
            let _ = self.shared.changes.send(ev);
        }
        for a in r.answers {
            a.send();
        }
    }

    /// Runs one request's decision unless the round has already failed, and records a
    /// failure of its statements for the rest of the round.
    fn step<T>(
        &mut self,
        r: &mut Round,
        failed: &mut Option<WireError>,
        f: impl FnOnce(&mut Writer, &mut Round) -> Step<T>,
    ) -> Result<T, WireError> {
        if let Some(e) = failed {
            return Err(e.clone());
        }
        match f(self, r) {
            Ok(result) => result,
            Err(e) => {
                *failed = Some(e.clone());
                Err(e)
            }
        }
    }

    /// The entry at (owner, key) as this round sees it, expired or not.
    fn raw(&self, r: &Round, owner: u32, key: &str) -> Option<Entry> {
        match r.overlay.get(&(owner, key.to_owned())) {
            Some(e) => e.clone(),
            None => self.shared.read_index().get(owner, key).cloned(),
        }
    }

    /// Records the round's new state for (owner, key), keeping the count and bytes deltas.
    fn set(&self, r: &mut Round, owner: u32, key: &str, entry: Option<Entry>) {
        if let Some(old) = self.raw(r, owner, key) {
            r.count_delta -= 1;
            r.bytes_delta -= old.size(key) as i64;
        }
        if let Some(new) = &entry {
            r.count_delta += 1;
            r.bytes_delta += new.size(key) as i64;
        }
        r.overlay.insert((owner, key.to_owned()), entry);
    }

    /// Opens the round's transaction on its first durable change.
    fn begin(&mut self, r: &mut Round) -> Result<(), WireError> {
        if !r.in_tx {
            self.conn
                .execute_batch("BEGIN IMMEDIATE")
                .map_err(|e| db::wire_error("begin transaction", &e))?;
            r.in_tx = true;
        }
        Ok(())
    }

    /// A change event for (owner, key).
    fn event(owner: u32, key: &str, e: &Entry, kind: ChangeKind, by: u32) -> StateChange {
        StateChange {
            key: key.to_owned(),
            scope: e.scope,
            owner: (owner != PLAIN).then_some(owner),
            kind,
            version: e.version,
            by,
        }
    }

    fn store(&mut self, r: &mut Round, s: Store, now: i64) -> Step<StoreReply> {
        let owner = match s.scope {
            StateScope::Agent => s.caller,
            StateScope::Global | StateScope::Session => PLAIN,
        };
        let key = s.key.as_str();
        let raw = self.raw(r, owner, key);
        let live = raw.as_ref().filter(|e| !e.expired(now));

        // Compare-and-set against the live entry: an expired key is absent.
        if let Some(want) = s.if_version {
            let refusal = match (want, live) {
                (0, Some(e)) => Some(format!(
                    "state key {key:?} exists (version {}), if_version 0 needs it absent",
                    e.version
                )),
                (0, None) => None,
                (want, None) => Some(format!(
                    "state key {key:?} does not exist, if_version {want} needs version {want}"
                )),
                (want, Some(e)) if e.version != want => Some(format!(
                    "state key {key:?} is at version {}, not {want}",
                    e.version
                )),
                _ => None,
            };
            if let Some(msg) = refusal {
                return Ok(Err(WireError::new(ErrorCode::Conflict, msg)));
            }
        }

        // A write continues the live key's versions (across a global/session switch too);
        // a new, deleted or expired key starts again at 1.
        let entry = Entry {
            scope: s.scope,
            value: s.value,
            version: live.map_or(1, |e| e.version + 1),
            expires_at: s.expires_at,
        };

        // Limits on the whole store, counted as if this round were already applied.
        let (count, bytes) = {
            let index = self.shared.read_index();
            (
                index.count() as i64 + r.count_delta,
                index.bytes() as i64 + r.bytes_delta,
            )
        };
        let limits = &self.shared.limits;
        if raw.is_none() && count + 1 > limits.max_keys as i64 {
            return Ok(Err(WireError::new(
                ErrorCode::LimitExceeded,
                format!(
                    "state store holds {count} keys, the limit is {}",
                    limits.max_keys
                ),
            )));
        }
        let old_size = raw.as_ref().map_or(0, |e| e.size(key)) as i64;
        let new_bytes = bytes - old_size + entry.size(key) as i64;
        if new_bytes > bytes && new_bytes > limits.max_total_bytes as i64 {
            return Ok(Err(WireError::new(
                ErrorCode::LimitExceeded,
                format!(
                    "state store would hold {new_bytes} bytes with key {key:?}, the limit is {} bytes",
                    limits.max_total_bytes
                ),
            )));
        }

        // The database: a durable entry is (re)written; a session entry replacing a global
        // one removes its row.
        let sql = |e| db::wire_error(&format!("write state key {key:?}"), &e);
        if entry.durable() {
            self.begin(r)?;
            db::put(&self.conn, owner, key, &entry).map_err(sql)?;
        } else if raw.as_ref().is_some_and(Entry::durable) {
            self.begin(r)?;
            db::delete(&self.conn, owner, key).map_err(sql)?;
        }

        if let Some(old) = raw.as_ref().filter(|e| e.expired(now)) {
            r.events
                .push(Self::event(owner, key, old, ChangeKind::Expired, PLAIN));
        }
        r.events
            .push(Self::event(owner, key, &entry, ChangeKind::Set, s.caller));
        let version = entry.version;
        self.set(r, owner, key, Some(entry));
        Ok(Ok(StoreReply {
            success: true,
            key: s.key,
            version: Some(version),
        }))
    }

    fn delete(&mut self, r: &mut Round, caller: u32, key: &str, now: i64) -> Step<DeleteReply> {
        // The same order as FETCH: the plain key, then the caller's agent key.
        let live = |e: &Entry| !e.expired(now);
        let mut found = self.raw(r, PLAIN, key).filter(live).map(|e| (PLAIN, e));
        if found.is_none() && caller != PLAIN {
            found = self.raw(r, caller, key).filter(live).map(|e| (caller, e));
        }
        let Some((owner, entry)) = found else {
            return Ok(Ok(DeleteReply {
                success: true,
                deleted: false,
            }));
        };
        if entry.durable() {
            self.begin(r)?;
            db::delete(&self.conn, owner, key)
                .map_err(|e| db::wire_error(&format!("delete state key {key:?}"), &e))?;
        }
        r.events
            .push(Self::event(owner, key, &entry, ChangeKind::Deleted, caller));
        self.set(r, owner, key, None);
        Ok(Ok(DeleteReply {
            success: true,
            deleted: true,
        }))
    }

    /// Removes owners' agent keys without events: their owner is gone, nobody could receive them.
    fn drop_owners(&mut self, r: &mut Round, owners: &Owners) -> Step<usize> {
        let mut all: BTreeSet<u32> = self
            .shared
            .read_index()
            .agent_owners()
            .into_iter()
            .collect();
        all.extend(r.overlay.keys().map(|(o, _)| *o).filter(|&o| o != PLAIN));
        let doomed: Vec<u32> = match owners {
            Owners::One(id) => all.into_iter().filter(|o| o == id).collect(),
            Owners::AllBut(keep) => all.into_iter().filter(|o| !keep.contains(o)).collect(),
        };
        let mut removed = 0;
        for owner in doomed {
            let mut keys: BTreeSet<String> = self
                .shared
                .read_index()
                .keys_of(owner)
                .into_iter()
                .collect();
            keys.extend(
                r.overlay
                    .keys()
                    .filter(|(o, _)| *o == owner)
                    .map(|(_, k)| k.clone()),
            );
            self.begin(r)?;
            db::delete_owner(&self.conn, owner)
                .map_err(|e| db::wire_error(&format!("drop state of owner {owner}"), &e))?;
            for key in keys {
                if self.raw(r, owner, &key).is_some() {
                    removed += 1;
                    self.set(r, owner, &key, None);
                }
            }
        }
        Ok(Ok(removed))
    }

    /// Saves an agent's row in this round's transaction.
    fn save_agent(
        &mut self,
        r: &mut Round,
        id: u32,
        owner_uid: u32,
        uid: u32,
        spec: &str,
    ) -> Step<usize> {
        self.begin(r)?;
        db::save_agent(&self.conn, id, owner_uid, uid, spec)
            .map_err(|e| db::wire_error(&format!("save the spec of agent {id}"), &e))?;
        Ok(Ok(1))
    }

    /// Deletes an agent's row and its agent keys in this round's transaction.
    fn forget_agent(&mut self, r: &mut Round, id: u32) -> Step<usize> {
        self.begin(r)?;
        db::delete_agent(&self.conn, id)
            .map_err(|e| db::wire_error(&format!("forget the spec of agent {id}"), &e))?;
        if id == PLAIN {
            return Ok(Ok(0));
        }
        self.drop_owners(r, &Owners::One(id))
    }

    /// Removes up to `max` keys that expired by `now`, with an `expired` event each.
    fn purge(&mut self, r: &mut Round, max: usize, now: i64) -> Step<usize> {
        let due = self.shared.read_index().due(now, max);
        let mut removed = 0;
        for (owner, key) in due {
            // This round may have rewritten the key already.
            let Some(entry) = self.raw(r, owner, &key).filter(|e| e.expired(now)) else {
                continue;
            };
            if entry.durable() {
                self.begin(r)?;
                db::delete(&self.conn, owner, &key)
                    .map_err(|e| db::wire_error(&format!("purge state key {key:?}"), &e))?;
            }
            r.events
                .push(Self::event(owner, &key, &entry, ChangeKind::Expired, PLAIN));
            self.set(r, owner, &key, None);
            removed += 1;
        }
        Ok(Ok(removed))
    }

    /// Reserves `size` ids above the stored floor and stores the new floor in this round.
    fn id_block(&mut self, r: &mut Round, size: u32) -> Step<Range<u32>> {
        if size == 0 || size == u32::MAX {
            return Ok(Err(WireError::invalid_request(format!(
                "id block size {size} is out of range (1 to {})",
                u32::MAX - 1
            ))));
        }
        let sql = |e| db::wire_error("reserve ids", &e);
        self.begin(r)?;
        let floor = db::next_id(&self.conn).map_err(sql)?;
        let block = match floor.checked_add(size) {
            Some(end) => floor..end,
            None => {
                // Four billion ids later: start over above 0. Ids this old belong to agents
                // long gone (retain_owners dropped their keys at some kernel start).
                tracing::warn!("agent id space wrapped around; issuing ids from 1 again");
                1..1 + size
            }
        };
        db::set_next_id(&self.conn, block.end).map_err(sql)?;
        Ok(Ok(block))
    }
}
