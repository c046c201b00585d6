//! The audit log on disk: its entry format, the hash chain, the anchor, and verification.
//!
//! The kernel writes the log and `clove audit verify` checks it, with the kernel up or down;
//! both use this module, so a verifier can never disagree with the writer about the format.
//! It does no I/O: callers hand it lines and the anchor's bytes (docs/audit.md describes the
//! files for people and third-party verifiers).
//!
//! # Files (in `<state dir>/audit/`)
//!
//! * `audit.log` and the rotated files `audit.log.<id of their first entry>`: one entry per
//!   line, oldest first; the chain runs across files (rotated ones by id, `audit.log` last).
//! * `audit.head`: the [`Anchor`], the chain's last entry as of the last group commit, plus
//!   the first kept entry's id and `prev` (so a removed oldest file shows too).
//! * `config.json`: the [`AuditConfig`](crate::msg::AuditConfig) in force.
//!
//! # Canonical form and hash
//!
//! An entry's body `B` is its JSON object without `hash`, written canonically: no whitespace,
//! object members (at every depth) sorted by the UTF-8 bytes of their keys, strings as
//! serde_json writes them (UTF-8, only `"`, `\` and control characters escaped), integers in
//! decimal. `hash` = lower-case hex of SHA-256(`B`). The line on disk is `B` with
//! `,"hash":"<hex>"` inserted before its final `}`. So a verifier does not need to re-serialize
//! anything: it cuts the fixed-size `hash` member off the line, puts the `}` back and hashes
//! those bytes ([`check_line`]). Each entry's `prev` is the previous entry's `hash` (the very
//! first entry's is [`GENESIS`]), so changing, removing, inserting or reordering an entry
//! breaks the chain at that point; cutting entries off the end is caught by the anchor.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::msg::{AuditCategory, AuditEntry};
use crate::Json;

/// The live log file's name.
pub const LOG_FILE: &str = "audit.log";
/// The anchor's file name.
pub const HEAD_FILE: &str = "audit.head";
/// The persisted configuration's file name.
pub const CONFIG_FILE: &str = "config.json";
/// The `prev` of the first entry ever written: 64 zeros.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// `,"hash":"` + 64 hex digits + `"}`: what sealing appends to a body minus its `}`.
const HASH_SUFFIX_LEN: usize = 9 + 64 + 2;

/// One audit entry as stored: the wire entry's fields plus `owner_uid`, `decided_by` and the
/// chain links.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogEntry {
    /// Grows by one per entry, from 1, across kernel restarts and rotations.
    pub id: u64,
    /// When the event happened, ISO-8601 UTC with milliseconds (`2025-01-31T12:00:00.123Z`).
    pub timestamp: String,
    /// What it is about.
    pub category: AuditCategory,
    /// The event (`AGENT_SPAWNED`, `PERMISSION_DENIED`, ...).
    pub event_type: String,
    /// The agent (or, for an operator's request, the connection id) it is about; 0: the
    /// kernel.
    pub agent_id: u32,
    /// That agent's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_name: Option<String>,
    /// The operator uid the entry belongs to (the agent's owner, or the operator who acted):
    /// non-root operators read the entries with their uid here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_uid: Option<u32>,
    /// The audited action succeeded (false: denied or failed).
    pub success: bool,
    /// Event-specific details (metadata only: never message contents or stored values).
    pub details: Value,
    /// Who decided: `kernel` (automatic), `operator:<uid>`, `agent:<id>`.
    pub decided_by: String,
    /// The previous entry's `hash` ([`GENESIS`] for the first entry ever).
    pub prev: String,
    /// Lower-case hex SHA-256 of the canonical body (everything above).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hash: String,
}

impl LogEntry {
    /// The canonical body `B`: this entry without `hash`.
    pub fn body(&self) -> String {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Value::Object(map) = &mut v {
            map.remove("hash");
        }
        canonical_json(&v)
    }

    /// Computes `hash` from the body and returns the line to write (without its newline).
    pub fn seal(&mut self) -> String {
        let body = self.body();
        self.hash = sha256_hex(body.as_bytes());
        let mut line = String::with_capacity(body.len() + HASH_SUFFIX_LEN);
        line.push_str(&body[..body.len() - 1]);
        line.push_str(",\"hash\":\"");
        line.push_str(&self.hash);
        line.push_str("\"}");
        line
    }

    /// The GET_AUDIT_LOG form: the original's fields plus `hash` and `decided_by`.
    pub fn to_wire(&self) -> AuditEntry {
        AuditEntry {
            id: self.id,
            timestamp: self.timestamp.clone(),
            category: self.category,
            event_type: self.event_type.clone(),
            agent_id: self.agent_id,
            agent_name: self.agent_name.clone(),
            success: self.success,
            details: Json(self.details.clone()),
            hash: Some(self.hash.clone()),
            decided_by: Some(self.decided_by.clone()),
        }
    }
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

fn is_hash(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `v` as canonical JSON: compact, object members sorted by the UTF-8 bytes of their keys at
/// every depth. Independent of serde_json's `preserve_order` feature.
pub fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            members.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (k, v)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(v, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// What is wrong with a line that is not a sealed entry at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// Not UTF-8.
    #[error("not UTF-8 text")]
    NotUtf8,
    /// No `hash` member where sealing puts it (at the end).
    #[error("no hash at the end of the line")]
    NoHash,
    /// Not an entry's JSON.
    #[error("not an audit entry: {0}")]
    NotAnEntry(String),
}

/// A line that parsed as an entry.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedLine {
    /// The entry as the line states it (`hash` as written).
    pub entry: LogEntry,
    /// Its `hash` matches its body: the line is as the kernel sealed it (or was resealed).
    pub hash_ok: bool,
}

/// Parses one line (without its newline) and checks its hash against its body.
pub fn check_line(line: &[u8]) -> Result<CheckedLine, LineError> {
    let text = std::str::from_utf8(line).map_err(|_| LineError::NotUtf8)?;
    let n = text.len();
    if n < HASH_SUFFIX_LEN + 2 || !text.is_char_boundary(n - HASH_SUFFIX_LEN) {
        return Err(LineError::NoHash);
    }
    let (head, suffix) = text.split_at(n - HASH_SUFFIX_LEN);
    let stored = suffix
        .strip_prefix(",\"hash\":\"")
        .and_then(|s| s.strip_suffix("\"}"))
        .filter(|h| is_hash(h))
        .ok_or(LineError::NoHash)?;
    let entry: LogEntry =
        serde_json::from_str(text).map_err(|e| LineError::NotAnEntry(e.to_string()))?;
    let mut body = String::with_capacity(head.len() + 1);
    body.push_str(head);
    body.push('}');
    Ok(CheckedLine {
        hash_ok: sha256_hex(body.as_bytes()) == stored && entry.hash == stored,
        entry,
    })
}

/// `audit.head`: where the chain ended at the last group commit, written atomically by the
/// kernel after every batch. Export it (`clove audit head`) to detect a rewrite of the whole
/// log directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchor {
    /// The last entry written and fsync'd (0: none yet).
    pub last_id: u64,
    /// Its hash ([`GENESIS`] when none).
    pub last_hash: String,
    /// Entries in the kept files up to `last_id` (`last_id - first_id + 1`).
    pub entries: u64,
    /// Log files kept (informational: rotation changes it; verification relies on ids).
    pub files: u32,
    /// The oldest kept entry's id (the first entry of the oldest kept file; `last_id + 1`
    /// while there is none).
    pub first_id: u64,
    /// That entry's `prev`: the link into the entries rotated away.
    pub first_prev: String,
    /// When the anchor was written (ISO-8601 UTC).
    #[serde(default)]
    pub updated: String,
}

impl Anchor {
    /// The anchor of an empty log.
    pub fn empty() -> Anchor {
        Anchor {
            last_id: 0,
            last_hash: GENESIS.to_owned(),
            entries: 0,
            files: 0,
            first_id: 1,
            first_prev: GENESIS.to_owned(),
            updated: String::new(),
        }
    }
}

/// The name of a log file: `audit.log` for the live one (`None`), `audit.log.<first id>`
/// for a rotated one, named after the id of its first entry. A rotated file is renamed once
/// and never again (no logrotate-style shifting), so a crash mid-rotation leaves nothing to
/// repair.
pub fn file_name(first_id: Option<u64>) -> String {
    match first_id {
        None => LOG_FILE.to_owned(),
        Some(id) => format!("{LOG_FILE}.{id}"),
    }
}

/// Which log file a name is: `Some(None)` for `audit.log`, `Some(Some(id))` for a rotated
/// `audit.log.<id>`; `None` for any other name.
pub fn file_number(name: &str) -> Option<Option<u64>> {
    if name == LOG_FILE {
        return Some(None);
    }
    let n = name.strip_prefix(LOG_FILE)?.strip_prefix('.')?;
    if n.is_empty() || n.starts_with('0') || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse().ok().map(Some)
}

/// The log files among `names`, oldest first: rotated ones by their first id, `audit.log`
/// last.
pub fn log_files_oldest_first<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut files: Vec<(u64, String)> = names
        .into_iter()
        .filter_map(|n| file_number(n).map(|k| (k.unwrap_or(u64::MAX), n.to_owned())))
        .collect();
    files.sort();
    files.into_iter().map(|(_, n)| n).collect()
}

/// ISO-8601 UTC with milliseconds for a time in ms since the Unix epoch.
pub fn iso8601_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let milli = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{milli:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

// ------------------------------------------------------------------------- verification

/// What a finding is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// A line that is not a sealed entry (garbage, a cut line in the middle of the log).
    Malformed,
    /// An entry whose content does not match its own hash.
    Edited,
    /// Entries missing between two entries (deleted lines).
    Missing,
    /// Entries out of order or duplicated.
    Reordered,
    /// Consecutive ids whose link does not hold: an entry was altered and resealed, or replaced.
    ChainBroken,
    /// Entries missing at the start of the kept files (an oldest file removed).
    StartMissing,
    /// The log ends before the anchor's last entry (cut off at the end).
    Truncated,
    /// `audit.head` is missing while there are entries.
    AnchorMissing,
    /// `audit.head` cannot be read as an anchor.
    AnchorInvalid,
    /// The anchor and the log disagree about an anchored entry.
    AnchorMismatch,
}

/// One problem verification found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// What kind of problem.
    pub kind: FindingKind,
    /// The file it is in, when it is in one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// The line (from 1) in that file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    /// The entry id concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    /// What is wrong, in words.
    pub message: String,
}

/// The outcome of a verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// No findings: every kept entry is as written and nothing was cut off.
    pub intact: bool,
    /// The files read, oldest first.
    pub files: Vec<String>,
    /// Entries read.
    pub entries: u64,
    /// The first entry's id.
    pub first_id: Option<u64>,
    /// The last entry's id.
    pub last_id: Option<u64>,
    /// The last entry's hash: the chain's head.
    pub last_hash: Option<String>,
    /// The anchor as read.
    pub anchor: Option<Anchor>,
    /// Entries after the anchor's last one (written just before a crash): not tampering.
    pub unanchored: u64,
    /// Problems: any makes `intact` false.
    pub findings: Vec<Finding>,
    /// Observations that are not problems (unanchored entries, an interrupted rotation).
    pub notes: Vec<String>,
}

/// Where a line is.
#[derive(Debug, Clone)]
struct Loc {
    file: String,
    line: u64,
}

impl std::fmt::Display for Loc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} line {}", self.file, self.line)
    }
}

/// The last entry that was linked.
#[derive(Debug, Clone)]
struct Last {
    id: u64,
    hash: String,
    loc: Loc,
}

/// A streaming verifier: [`Verifier::begin_file`] for each log file, oldest first, then
/// [`Verifier::line`] for each of its lines, then [`Verifier::finish`]. Memory: a map from
/// each entry's hash to its id (to tell reordering from deletion).
#[derive(Debug)]
pub struct Verifier {
    anchor: Option<Anchor>,
    report: Report,
    file: String,
    line_no: u64,
    last: Option<Last>,
    /// The previous line was not an entry: the next link cannot be checked.
    unlinked: bool,
    /// A line without its newline, not yet known to be the very last.
    torn: Option<(Loc, u64)>,
    seen: HashMap<String, u64>,
    anchored_hash: Option<String>,
    anchored_entries: u64,
}

impl Verifier {
    /// A verifier given the anchor file's bytes (`None`: there is no anchor file).
    pub fn new(anchor: Option<&[u8]>) -> Verifier {
        let mut findings = Vec::new();
        let anchor = match anchor {
            None => None,
            Some(bytes) => match serde_json::from_slice::<Anchor>(bytes) {
                Ok(a) if is_hash(&a.last_hash) && is_hash(&a.first_prev) => Some(a),
                Ok(_) => {
                    findings.push(finding(
                        FindingKind::AnchorInvalid,
                        None,
                        None,
                        format!("{HEAD_FILE}: a hash in it is not 64 lower-case hex digits"),
                    ));
                    None
                }
                Err(e) => {
                    findings.push(finding(
                        FindingKind::AnchorInvalid,
                        None,
                        None,
                        format!("{HEAD_FILE}: not an anchor: {e}"),
                    ));
                    None
                }
            },
        };
        Verifier {
            report: Report {
                intact: false,
                files: Vec::new(),
                entries: 0,
                first_id: None,
                last_id: None,
                last_hash: None,
                anchor: anchor.clone(),
                unanchored: 0,
                findings,
                notes: Vec::new(),
            },
            anchor,
            file: String::new(),
            line_no: 0,
            last: None,
            unlinked: false,
            torn: None,
            seen: HashMap::new(),
            anchored_hash: None,
            anchored_entries: 0,
        }
    }

    /// The next file's lines follow.
    pub fn begin_file(&mut self, name: &str) {
        self.flush_torn_as_finding();
        self.file = name.to_owned();
        self.line_no = 0;
        self.report.files.push(name.to_owned());
    }

    fn loc(&self) -> Loc {
        Loc {
            file: self.file.clone(),
            line: self.line_no,
        }
    }

    fn push(&mut self, kind: FindingKind, loc: Option<&Loc>, id: Option<u64>, message: String) {
        self.report.findings.push(finding(kind, loc, id, message));
    }

    /// A line without its newline turned out not to be the last one.
    fn flush_torn_as_finding(&mut self) {
        if let Some((loc, _)) = self.torn.take() {
            self.push(
                FindingKind::Malformed,
                Some(&loc),
                None,
                format!("{loc}: an incomplete entry (cut mid-line) followed by more of the log"),
            );
            self.unlinked = true;
        }
    }

    /// One line of the current file, without its newline; `complete` is false for a last
    /// line that had no newline.
    pub fn line(&mut self, bytes: &[u8], complete: bool) {
        self.flush_torn_as_finding();
        self.line_no += 1;
        let loc = self.loc();
        match check_line(bytes) {
            Err(e) => {
                if !complete {
                    let after = self.last.as_ref().map_or(0, |l| l.id);
                    self.torn = Some((loc, after));
                    return;
                }
                let what = if bytes.is_empty() {
                    "an empty line".to_owned()
                } else {
                    e.to_string()
                };
                self.push(
                    FindingKind::Malformed,
                    Some(&loc),
                    None,
                    format!("{loc}: not an audit entry ({what})"),
                );
                self.unlinked = true;
            }
            Ok(c) => {
                if !c.hash_ok {
                    self.push(
                        FindingKind::Edited,
                        Some(&loc),
                        Some(c.entry.id),
                        format!(
                            "{loc} (id {}): the entry does not match its hash: it was edited",
                            c.entry.id
                        ),
                    );
                }
                if !complete {
                    self.report.notes.push(format!(
                        "{loc}: the last entry lacks its newline (a write cut short)"
                    ));
                }
                self.link(c.entry, loc);
            }
        }
    }

    fn link(&mut self, e: LogEntry, loc: Loc) {
        match self.last.clone() {
            None => {
                self.report.first_id = Some(e.id);
                if let Some(a) = &self.anchor {
                    let (first_id, first_prev) = (a.first_id, a.first_prev.clone());
                    if e.id > first_id {
                        self.push(
                            FindingKind::StartMissing,
                            Some(&loc),
                            Some(e.id),
                            format!(
                                "the log starts at id {} ({loc}) but the anchor's oldest kept entry is id {first_id}: {} missing at the start (a rotated file removed?)",
                                e.id,
                                span(first_id, e.id - 1)
                            ),
                        );
                    } else if e.id == first_id && e.prev != first_prev {
                        self.push(
                            FindingKind::ChainBroken,
                            Some(&loc),
                            Some(e.id),
                            format!(
                                "{loc} (id {}): its prev is not the one the anchor records for the oldest kept entry: the oldest file was replaced",
                                e.id
                            ),
                        );
                    } else if e.id < first_id {
                        self.report.notes.push(format!(
                            "entries {} precede the anchor's oldest kept entry {first_id}: a rotation was interrupted before it removed its oldest file",
                            span(e.id, first_id - 1)
                        ));
                    }
                }
            }
            // The previous line was no entry: this link cannot be checked (already reported).
            Some(_) if self.unlinked => {}
            Some(last) => {
                if e.prev != last.hash {
                    match self.seen.get(&e.prev) {
                        Some(&linked) if linked != last.id => self.push(
                            FindingKind::Reordered,
                            Some(&loc),
                            Some(e.id),
                            format!(
                                "{loc} (id {}) belongs after id {linked} but follows id {} ({}): entries out of order",
                                e.id, last.id, last.loc
                            ),
                        ),
                        _ if e.id <= last.id => self.push(
                            FindingKind::Reordered,
                            Some(&loc),
                            Some(e.id),
                            format!(
                                "{loc} (id {}) follows id {} ({}): entries out of order or duplicated",
                                e.id, last.id, last.loc
                            ),
                        ),
                        _ if e.id > last.id + 1 => self.push(
                            FindingKind::Missing,
                            Some(&loc),
                            Some(e.id),
                            format!(
                                "{} missing between {} (id {}) and {loc} (id {}): deleted",
                                span(last.id + 1, e.id - 1),
                                last.loc,
                                last.id,
                                e.id
                            ),
                        ),
                        _ => self.push(
                            FindingKind::ChainBroken,
                            Some(&loc),
                            Some(e.id),
                            format!(
                                "{loc} (id {}): its prev is not the hash of id {} ({}): one of the two was altered and resealed, or replaced",
                                e.id, last.id, last.loc
                            ),
                        ),
                    }
                } else if e.id != last.id + 1 {
                    self.push(
                        FindingKind::ChainBroken,
                        Some(&loc),
                        Some(e.id),
                        format!(
                            "{loc}: id {} follows id {} although it links to it: ids were rewritten",
                            e.id, last.id
                        ),
                    );
                } else if self.seen.contains_key(&e.hash) {
                    self.push(
                        FindingKind::Reordered,
                        Some(&loc),
                        Some(e.id),
                        format!("{loc} (id {}): a duplicate of an earlier entry", e.id),
                    );
                }
            }
        }
        self.unlinked = false;
        if let Some(a) = &self.anchor {
            if e.id == a.last_id {
                self.anchored_hash = Some(e.hash.clone());
            }
            if e.id > a.last_id {
                self.report.unanchored += 1;
            } else if e.id >= a.first_id {
                self.anchored_entries += 1;
            }
        }
        self.report.entries += 1;
        self.report.last_id = Some(e.id);
        self.report.last_hash = Some(e.hash.clone());
        self.seen.insert(e.hash.clone(), e.id);
        self.last = Some(Last {
            id: e.id,
            hash: e.hash,
            loc,
        });
    }

    /// Compares the chain's end with the anchor and returns the report.
    pub fn finish(mut self) -> Report {
        let end = self.last.as_ref().map_or(0, |l| l.id);
        if let Some((loc, after)) = self.torn.take() {
            let anchored_end = self.anchor.as_ref().map_or(0, |a| a.last_id);
            if after >= anchored_end {
                self.report.notes.push(format!(
                    "{loc}: an incomplete last entry after id {after}, past the anchor: a write cut short by a crash (the kernel removes it at its next start)"
                ));
            } else {
                self.push(
                    FindingKind::Truncated,
                    Some(&loc),
                    None,
                    format!("{loc}: the log is cut mid-line after id {after}"),
                );
            }
        }
        match self.anchor.clone() {
            None => {
                let invalid = self
                    .report
                    .findings
                    .iter()
                    .any(|f| f.kind == FindingKind::AnchorInvalid);
                if !invalid && self.report.entries > 0 {
                    self.push(
                        FindingKind::AnchorMissing,
                        None,
                        None,
                        format!(
                            "{HEAD_FILE} is missing: entries cut off the end could not be detected"
                        ),
                    );
                }
            }
            Some(a) => {
                if end < a.last_id {
                    let at = self
                        .last
                        .as_ref()
                        .map(|l| format!(" ({})", l.loc))
                        .unwrap_or_default();
                    self.push(
                        FindingKind::Truncated,
                        self.last.as_ref().map(|l| l.loc.clone()).as_ref(),
                        Some(a.last_id),
                        format!(
                            "the log ends at id {end}{at} but the anchor records id {}: {} cut off the end",
                            a.last_id,
                            span(end + 1, a.last_id)
                        ),
                    );
                } else if a.last_id > 0 {
                    match self.anchored_hash.clone() {
                        Some(h) if h == a.last_hash => {}
                        Some(h) => self.push(
                            FindingKind::AnchorMismatch,
                            None,
                            Some(a.last_id),
                            format!(
                                "entry {} has hash {h} but the anchor records {}: the log or the anchor was rewritten",
                                a.last_id, a.last_hash
                            ),
                        ),
                        None => self.push(
                            FindingKind::AnchorMismatch,
                            None,
                            Some(a.last_id),
                            format!("entry {}, which the anchor records, is not in the log", a.last_id),
                        ),
                    }
                }
                if self.report.findings.is_empty()
                    && end >= a.last_id
                    && self.anchored_entries != a.entries
                {
                    self.push(
                        FindingKind::AnchorMismatch,
                        None,
                        None,
                        format!(
                            "the anchor counts {} entries up to id {}, the log has {}",
                            a.entries, a.last_id, self.anchored_entries
                        ),
                    );
                }
                if self.report.unanchored > 0 {
                    self.report.notes.push(format!(
                        "{} entr{} after the anchor (ids {}..{end}): written just before the kernel stopped or crashed, before the anchor caught up; their chain is checked like the rest",
                        self.report.unanchored,
                        if self.report.unanchored == 1 { "y" } else { "ies" },
                        a.last_id + 1
                    ));
                }
            }
        }
        self.report.intact = self.report.findings.is_empty();
        self.report
    }
}

fn finding(kind: FindingKind, loc: Option<&Loc>, id: Option<u64>, message: String) -> Finding {
    Finding {
        kind,
        file: loc.map(|l| l.file.clone()),
        line: loc.map(|l| l.line),
        id,
        message,
    }
}

/// `entry 5` or `entries 5..9`.
fn span(from: u64, to: u64) -> String {
    if from == to {
        format!("entry {from}")
    } else {
        format!("entries {from}..{to}")
    }
}

/// Verifies a log held in memory: the anchor's bytes (`None`: no anchor file) and the files
/// `(name, contents)` oldest first.
pub fn verify(anchor: Option<&[u8]>, files: &[(&str, &[u8])]) -> Report {
    let mut v = Verifier::new(anchor);
    for (name, bytes) in files {
        v.begin_file(name);
        feed(&mut v, bytes);
    }
    v.finish()
}

/// Feeds a file's contents to `v`, line by line.
pub fn feed(v: &mut Verifier, bytes: &[u8]) {
    let mut rest = bytes;
    while !rest.is_empty() {
        match rest.iter().position(|b| *b == b'\n') {
            Some(i) => {
                v.line(&rest[..i], true);
                rest = &rest[i + 1..];
            }
            None => {
                v.line(rest, false);
                rest = &[];
            }
        }
    }
}

#[cfg(test)]
mod tests;
