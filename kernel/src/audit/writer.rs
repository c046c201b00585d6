//! The audit writer thread: the only code that writes the log files and the anchor.
//!
//! Each round it takes everything queued (up to [`MAX_BATCH`]), assigns ids in arrival
//! order, links and seals each entry, appends the lines with one write, fsyncs once (group
//! commit), rewrites the anchor atomically (temp file, fsync, rename, fsync of the directory),
//! then publishes the round to the in-memory index and answers the waiters. So the anchor
//! never names an entry that is not on disk, and a reader never sees an entry that is not.
//!
//! Rotation: before a line would take `audit.log` past `max_file_bytes`, the file is fsync'd
//! and renamed `audit.log.<its first id>`, and a new `audit.log` continues the chain. Beyond
//! `keep_files` the oldest file is removed, after the anchor has moved its `first_id` and
//! `first_prev` to the next file's first entry: a crash in between leaves an extra old file
//! (reported as a note), never a hole.
//!
//! At start ([`Writer::open`]) the chain continues where the log ends, unless the log ends
//! before its anchor: then it continues from the anchor (ids are never reused, and the gap
//! stays visible to verification) and the damage is reported (an `AUDIT_LOG_DAMAGED` entry).
//! An incomplete last line past the anchor (a crash mid-append) is cut off.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use clove_abi::auditlog::{
    check_line, file_name, file_number, iso8601_ms, log_files_oldest_first, Anchor, LogEntry,
    CONFIG_FILE, GENESIS, HEAD_FILE, LOG_FILE,
};
use clove_abi::msg::AuditConfig;
use tokio::sync::oneshot;

use super::{now_ms, AuditLimits, AuditRecord, Shared};

/// Most entries sealed and committed in one round.
pub const MAX_BATCH: usize = 4096;

/// One request to the writer.
#[derive(Debug)]
pub enum Op {
    /// Append this record, which happened at this time (ms since the epoch).
    Append(AuditRecord, i64),
    /// Answer once everything sent before is durable and in the index.
    Sync(oneshot::Sender<()>),
    /// Persist the configuration (`config.json`).
    SaveConfig(AuditConfig, oneshot::Sender<Result<(), String>>),
    /// Finish this round, then stop and answer.
    Shutdown(oneshot::Sender<()>),
    /// Tests: stall the writer until released, so that entries pile up into one round.
    #[cfg(test)]
    Hold(std::sync::mpsc::Receiver<()>),
}

/// A kept log file.
#[derive(Debug, Clone)]
struct Kept {
    name: String,
    /// Its first entry's id and `prev`, once it has one.
    first: Option<(u64, String)>,
}

/// The writer's state.
pub struct Writer {
    dir: PathBuf,
    limits: AuditLimits,
    shared: Arc<Shared>,
    file: File,
    file_len: u64,
    /// Kept files, oldest first; the last is `audit.log`.
    files: VecDeque<Kept>,
    next_id: u64,
    prev: String,
    /// The last entry written and fsync'd: the anchor's end.
    durable: (u64, String),
    /// The anchor's `first_id`, `first_prev`.
    first: (u64, String),
    /// The file ends in an incomplete line that must stay (it is evidence): start the next
    /// write on a new line.
    need_newline: bool,
}

fn open_log(dir: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(dir.join(LOG_FILE))
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Replaces `dir/name` with `bytes` atomically and durably.
fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(name))?;
    sync_dir(dir)
}

/// The configuration saved in `dir`, else the defaults.
pub fn load_config(dir: &Path) -> AuditConfig {
    let path = dir.join(CONFIG_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::warn!("audit config {}: {e}; using the defaults", path.display());
            AuditConfig::default()
        }),
        Err(e) if e.kind() == ErrorKind::NotFound => AuditConfig::default(),
        Err(e) => {
            tracing::warn!(
                "read audit config {}: {e}; using the defaults",
                path.display()
            );
            AuditConfig::default()
        }
    }
}

/// The first entry (id, prev) of a log file; `None` when it has none (or is gone).
fn first_entry(path: &Path) -> std::io::Result<Option<(u64, String)>> {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut r = BufReader::new(f);
    let mut line = Vec::new();
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line)? == 0 {
            return Ok(None);
        }
        if line.last() != Some(&b'\n') {
            return Ok(None);
        }
        line.pop();
        if let Ok(c) = check_line(&line) {
            return Ok(Some((c.entry.id, c.entry.prev)));
        }
    }
}

/// The complete lines of `bytes` that parse as entries.
fn entries_of(bytes: &[u8]) -> Vec<LogEntry> {
    let complete = match bytes.iter().rposition(|b| *b == b'\n') {
        Some(i) => &bytes[..i],
        None => return Vec::new(),
    };
    complete
        .split(|b| *b == b'\n')
        .filter_map(|l| check_line(l).ok().map(|c| c.entry))
        .collect()
}

/// The names in `dir`.
fn names_in(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut names = Vec::new();
    for e in std::fs::read_dir(dir)? {
        if let Ok(name) = e?.file_name().into_string() {
            names.push(name);
        }
    }
    Ok(names)
}

/// Entries with `since < id < until` that `admits`, oldest first, at most `limit`, read from
/// the files (for GET_AUDIT_LOG reaching past the index). Best effort while a rotation runs:
/// a file renamed under the scan may be missed.
pub fn scan_files(
    dir: &Path,
    since: u64,
    until: u64,
    limit: usize,
    admits: impl Fn(&LogEntry) -> bool,
) -> Vec<LogEntry> {
    let Ok(names) = names_in(dir) else {
        return Vec::new();
    };
    let files = log_files_oldest_first(names.iter().map(String::as_str));
    let firsts: Vec<Option<u64>> = files.iter().map(|n| file_number(n).flatten()).collect();
    let mut out = Vec::new();
    for (i, name) in files.iter().enumerate() {
        // A rotated file holds the ids up to the next file's first.
        if let Some(Some(next)) = firsts.get(i + 1) {
            if *next <= since + 1 {
                continue;
            }
        }
        let Ok(bytes) = std::fs::read(dir.join(name)) else {
            continue;
        };
        for e in entries_of(&bytes) {
            if e.id >= until {
                return out;
            }
            if e.id > since && out.last().is_none_or(|l: &LogEntry| e.id > l.id) && admits(&e) {
                out.push(e);
                if out.len() >= limit {
                    return out;
                }
            }
        }
    }
    out
}

impl Writer {
    /// Opens the log in `dir` (see the module docs) and loads the most recent entries into
    /// the index. Returns the writer and the damage found (for `AUDIT_LOG_DAMAGED` entries).
    pub fn open(
        dir: &Path,
        limits: AuditLimits,
        shared: Arc<Shared>,
    ) -> std::io::Result<(Writer, Vec<String>)> {
        let mut damage = Vec::new();
        let names = names_in(dir)?;
        let anchor = match std::fs::read(dir.join(HEAD_FILE)) {
            Ok(bytes) => match serde_json::from_slice::<Anchor>(&bytes) {
                Ok(a) => Some(a),
                Err(e) => {
                    damage.push(format!("{HEAD_FILE} is not an anchor: {e}"));
                    None
                }
            },
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let mut files = VecDeque::new();
        for name in log_files_oldest_first(names.iter().map(String::as_str)) {
            let first = first_entry(&dir.join(&name))?;
            files.push_back(Kept { name, first });
        }
        if files.back().is_none_or(|f| f.name != LOG_FILE) {
            files.push_back(Kept {
                name: LOG_FILE.to_owned(),
                first: None,
            });
        }

        // Newest first: the chain's end, and the index.
        let max = usize::try_from(shared.config().max_entries).unwrap_or(usize::MAX);
        let mut index = VecDeque::new();
        let mut last: Option<(u64, String)> = None;
        let mut torn = false;
        for (i, f) in files.iter().enumerate().rev() {
            let bytes = match std::fs::read(dir.join(&f.name)) {
                Ok(b) => b,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if i + 1 == files.len() && !bytes.is_empty() && !bytes.ends_with(b"\n") {
                torn = true;
            }
            let mut entries = entries_of(&bytes);
            if last.is_none() {
                last = entries.last().map(|e| (e.id, e.hash.clone()));
            }
            while index.len() < max {
                let Some(e) = entries.pop() else { break };
                index.push_front(Arc::new(e));
            }
            if index.len() >= max && last.is_some() {
                break;
            }
        }
        *shared.index.write().unwrap_or_else(PoisonError::into_inner) = index;

        let log_end = last.clone().unwrap_or((0, GENESIS.to_owned()));
        let anchored = anchor.as_ref().map_or(0, |a| a.last_id);
        let (next_id, prev) = match &anchor {
            Some(a) if log_end.0 < a.last_id => {
                damage.push(format!(
                    "the log ends at id {} but its anchor records id {}: entries were cut off the end; the chain continues from the anchor, so the gap stays visible",
                    log_end.0, a.last_id
                ));
                (a.last_id + 1, a.last_hash.clone())
            }
            Some(a) if a.last_id > 0 && log_end.0 == a.last_id && log_end.1 != a.last_hash => {
                damage.push(format!(
                    "entry {} does not have the hash its anchor records: the log or the anchor was rewritten",
                    a.last_id
                ));
                (log_end.0 + 1, log_end.1.clone())
            }
            None if last.is_some() && damage.is_empty() => {
                damage.push(format!(
                    "{HEAD_FILE} is missing while the log has entries: entries cut off the end before now cannot be detected"
                ));
                (log_end.0 + 1, log_end.1.clone())
            }
            _ => (log_end.0 + 1, log_end.1.clone()),
        };
        let mut need_newline = false;
        if torn {
            let path = dir.join(LOG_FILE);
            if log_end.0 >= anchored {
                // A write cut short by a crash, never anchored: drop the partial line.
                let bytes = std::fs::read(&path)?;
                let keep = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
                OpenOptions::new()
                    .write(true)
                    .open(&path)?
                    .set_len(keep as u64)?;
                tracing::warn!(
                    "audit log: removed the incomplete last line of {} (a write cut short by a crash)",
                    path.display()
                );
            } else {
                need_newline = true;
            }
        }
        let first = match &anchor {
            Some(a) => (a.first_id, a.first_prev.clone()),
            None => files
                .iter()
                .find_map(|f| f.first.clone())
                .unwrap_or((next_id, prev.clone())),
        };
        let file = open_log(dir)?;
        let file_len = file.metadata()?.len();
        let writer = Writer {
            dir: dir.to_path_buf(),
            limits,
            shared,
            file,
            file_len,
            files,
            durable: (next_id - 1, prev.clone()),
            next_id,
            prev,
            first,
            need_newline,
        };
        // An anchor from the start: a crash after the first append then shows unanchored
        // entries, not a missing anchor.
        writer.write_anchor()?;
        Ok((writer, damage))
    }

    /// The id the next entry gets.
    pub fn next_id(&self) -> u64 {
        self.next_id
    }

    /// The thread's body: rounds until shut down or every sender is gone.
    pub fn run(mut self, rx: Receiver<Op>) {
        loop {
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
            let shutdown = self.round(batch);
            if !shutdown.is_empty() {
                drop(self);
                for done in shutdown {
                    let _ = done.send(());
                }
                return;
            }
        }
    }

    /// Seals, writes, commits, anchors, publishes and answers one batch; returns the
    /// shutdown requests in it.
    pub(super) fn round(&mut self, batch: Vec<Op>) -> Vec<oneshot::Sender<()>> {
        let mut buf: Vec<u8> = Vec::new();
        let mut fresh = Vec::new();
        let mut syncs = Vec::new();
        let mut saves = Vec::new();
        let mut shutdown = Vec::new();
        for op in batch {
            match op {
                Op::Append(r, at) => {
                    let mut e = LogEntry {
                        id: self.next_id,
                        timestamp: iso8601_ms(at),
                        category: r.category,
                        event_type: r.event_type,
                        agent_id: r.agent_id,
                        agent_name: r.agent_name,
                        owner_uid: r.owner_uid,
                        success: r.success,
                        details: r.details,
                        decided_by: r.decided_by.to_string(),
                        prev: self.prev.clone(),
                        hash: String::new(),
                    };
                    let line = e.seal();
                    let used = self.file_len + buf.len() as u64;
                    if used > 0 && used + line.len() as u64 + 1 > self.limits.max_file_bytes {
                        self.flush(&mut buf);
                        self.rotate();
                    }
                    if let Some(live) = self.files.back_mut() {
                        if live.first.is_none() {
                            live.first = Some((e.id, e.prev.clone()));
                        }
                    }
                    buf.extend_from_slice(line.as_bytes());
                    buf.push(b'\n');
                    self.next_id += 1;
                    self.prev.clone_from(&e.hash);
                    fresh.push(Arc::new(e));
                }
                Op::Sync(tx) => syncs.push(tx),
                Op::SaveConfig(config, tx) => {
                    let saved = serde_json::to_vec_pretty(&config)
                        .map_err(|e| e.to_string())
                        .and_then(|bytes| {
                            write_atomic(&self.dir, CONFIG_FILE, &bytes).map_err(|e| e.to_string())
                        });
                    saves.push((tx, saved));
                }
                Op::Shutdown(tx) => shutdown.push(tx),
                #[cfg(test)]
                Op::Hold(_) => {}
            }
        }
        if !buf.is_empty() {
            self.flush(&mut buf);
            if let Err(e) = self.write_anchor() {
                tracing::error!(
                    "audit log: write the anchor {}: {e} (the next round tries again)",
                    self.dir.join(HEAD_FILE).display()
                );
            }
            self.shared
                .commits
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        {
            let max = usize::try_from(self.shared.config().max_entries).unwrap_or(usize::MAX);
            let mut index = self
                .shared
                .index
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            index.extend(fresh);
            while index.len() > max {
                index.pop_front();
            }
        }
        for (tx, saved) in saves {
            let _ = tx.send(saved);
        }
        for tx in syncs {
            let _ = tx.send(());
        }
        shutdown
    }

    /// Appends `buf` to `audit.log` and fsyncs it, retrying until it succeeds: an entry is
    /// never dropped, so a full or failing disk stalls the writer (entries queue in memory)
    /// rather than losing the record.
    fn flush(&mut self, buf: &mut Vec<u8>) {
        if buf.is_empty() {
            return;
        }
        if self.need_newline {
            buf.insert(0, b'\n');
            self.need_newline = false;
        }
        let mut delay = Duration::from_millis(100);
        loop {
            let r = self
                .file
                .write_all(buf)
                .and_then(|()| self.file.sync_data());
            match r {
                Ok(()) => break,
                Err(e) => {
                    tracing::error!(
                        "audit log: append to {}: {e}; retrying in {delay:?} (entries wait in memory)",
                        self.dir.join(LOG_FILE).display()
                    );
                    // Take back a partial append, so the retry does not leave a broken line.
                    let _ = self.file.set_len(self.file_len);
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
        self.file_len += buf.len() as u64;
        buf.clear();
        self.durable = (self.next_id - 1, self.prev.clone());
    }

    /// Renames the full `audit.log` after its first entry, starts a new one, and removes the
    /// oldest files beyond `keep_files`. On failure the current file simply grows on.
    fn rotate(&mut self) {
        let Some((first_id, _)) = self.files.back().and_then(|f| f.first.clone()) else {
            tracing::warn!("audit log: audit.log has no readable first entry; not rotating it");
            return;
        };
        let to = file_name(Some(first_id));
        if let Err(e) = self.try_rotate(&to) {
            tracing::error!("audit log: rotate audit.log to {to}: {e}; it grows on");
        }
    }

    fn try_rotate(&mut self, to: &str) -> std::io::Result<()> {
        if self.dir.join(to).exists() {
            return Err(std::io::Error::new(
                ErrorKind::AlreadyExists,
                format!("{to} exists"),
            ));
        }
        std::fs::rename(self.dir.join(LOG_FILE), self.dir.join(to))?;
        let file = open_log(&self.dir)?;
        sync_dir(&self.dir)?;
        self.file = file;
        self.file_len = 0;
        if let Some(live) = self.files.back_mut() {
            live.name = to.to_owned();
        }
        self.files.push_back(Kept {
            name: LOG_FILE.to_owned(),
            first: None,
        });
        let keep = self.limits.keep_files.max(2) as usize;
        while self.files.len() > keep {
            // The anchor moves first: a crash before the removal leaves an extra file.
            self.first = self.files[1]
                .first
                .clone()
                .unwrap_or_else(|| (self.durable.0 + 1, self.durable.1.clone()));
            let Some(oldest) = self.files.pop_front() else {
                break;
            };
            self.write_anchor()?;
            match std::fs::remove_file(self.dir.join(&oldest.name)) {
                Err(e) if e.kind() != ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// The anchor for what is durable now.
    fn anchor(&self) -> Anchor {
        let (last_id, last_hash) = self.durable.clone();
        Anchor {
            last_id,
            last_hash,
            entries: (last_id + 1).saturating_sub(self.first.0),
            files: u32::try_from(self.files.len()).unwrap_or(u32::MAX),
            first_id: self.first.0,
            first_prev: self.first.1.clone(),
            updated: iso8601_ms(now_ms()),
        }
    }

    fn write_anchor(&self) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(&self.anchor()).map_err(std::io::Error::other)?;
        write_atomic(&self.dir, HEAD_FILE, &bytes)
    }
}

/// Verifies the log in `dir` (for tests; `clove audit verify` does the same from the CLI).
#[cfg(test)]
pub fn verify_dir(dir: &Path) -> clove_abi::auditlog::Report {
    let names = names_in(dir).unwrap_or_default();
    let anchor = std::fs::read(dir.join(HEAD_FILE)).ok();
    let mut v = clove_abi::auditlog::Verifier::new(anchor.as_deref());
    for name in log_files_oldest_first(names.iter().map(String::as_str)) {
        v.begin_file(&name);
        clove_abi::auditlog::feed(&mut v, &std::fs::read(dir.join(&name)).unwrap_or_default());
    }
    v.finish()
}
