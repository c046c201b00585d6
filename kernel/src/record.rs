//! Recording and replay: RECORD_START, RECORD_STOP, RECORD_STATUS, REPLAY_START,
//! REPLAY_STATUS. docs/record-replay.md is the user's page; in short:
//!
//! * One [`Recorder`] per kernel. While it records, [`crate::syscalls::handle`] hands it every
//!   finished request of a recorded opcode ([`kind`]); the recorder keeps those its scope and
//!   filter admit, as [`Entry`]s: sequence number, time offset, caller (id, kind, name, uid),
//!   opcode, the request as JSON (a postcard request is decoded and re-encoded as JSON), the
//!   outcome and the reply as JSON.
//! * The export ([`Recording`], `format: "clove-recording"`, `version: 1`) is JSON text.
//! * A replay runs in the background ([`replayer`]), in recording order, one entry at a time:
//!   the deterministic entries ([`Kind::Replayed`]) go through `syscalls::handle` as real
//!   requests of a synthetic caller; the rest (lifecycle, THINK, HTTP, EXEC) are skipped: the
//!   kernel never starts agents or calls out on a recording's say-so.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use clove_abi::codec::{self, Codec};
use clove_abi::msg::{
    AgentRef, RecordStartReply, RecordStartRequest, RecordStatusReply, RecordStatusRequest,
    RecordStopReply, RecordStopRequest, RecordingState, ReplayStartReply, ReplayStartRequest,
    ReplayState, ReplayStatusReply, ReplayStatusRequest,
};
use clove_abi::{ErrorCode, Opcode, WireError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::kernel::{Caller, Kernel};
use crate::sync::lock;

/// The export's `format`.
pub const FORMAT: &str = "clove-recording";
/// The export's `version`; REPLAY_START refuses any other.
pub const FORMAT_VERSION: u32 = 1;
/// The largest `max_entries` RECORD_START accepts.
pub const MAX_ENTRIES_LIMIT: u64 = 1_000_000;

/// What a recorded opcode is, for recording and for replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// State and IPC: always recorded, replayed.
    Replayed,
    /// Agent lifecycle and permissions: always recorded, never replayed (skipped).
    Lifecycle,
    /// THINK: recorded with `include_think`; skipped on replay (its reply is in the entry).
    Think,
    /// HTTP: recorded with `include_http`; skipped on replay.
    Http,
    /// EXEC: recorded with `include_exec`; skipped on replay.
    Exec,
}

/// The kind of a recorded opcode; `None` for opcodes never recorded (reads, waits, status,
/// host files, recording and replay themselves).
pub fn kind(op: Opcode) -> Option<Kind> {
    Some(match op {
        Opcode::Store
        | Opcode::Delete
        | Opcode::Register
        | Opcode::Send
        | Opcode::SendBatch
        | Opcode::Broadcast
        | Opcode::Emit
        | Opcode::Subscribe
        | Opcode::Unsubscribe => Kind::Replayed,
        Opcode::Spawn
        | Opcode::Kill
        | Opcode::Pause
        | Opcode::Resume
        | Opcode::SetPerms
        | Opcode::GroupCreate
        | Opcode::GroupStop => Kind::Lifecycle,
        Opcode::Think => Kind::Think,
        Opcode::Http => Kind::Http,
        Opcode::Exec => Kind::Exec,
        _ => return None,
    })
}

/// Who made a recorded request, as the recording kernel knew it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedCaller {
    /// Its id in the recording kernel.
    pub id: u32,
    /// It was an agent (else an operator connection).
    pub agent: bool,
    /// An agent's name (spawn name), else the connection's first registered name, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its uid.
    pub uid: u32,
}

/// One recorded request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// 1, 2, 3... in the order the requests finished.
    pub seq: u64,
    /// Milliseconds since the recording started, when the request finished.
    pub t_ms: u64,
    /// Who made it.
    pub caller: RecordedCaller,
    /// The opcode byte.
    pub opcode: u8,
    /// The opcode's name (for readers; `opcode` is what counts).
    pub op: String,
    /// The request, as JSON (HTTP header values redacted).
    pub request: Value,
    /// The request succeeded.
    pub ok: bool,
    /// The error code, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// The reply, as JSON (an error reply as its error object).
    pub reply: Value,
}

/// A recording as exported by RECORD_STATUS `{export: true}` and read by REPLAY_START.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recording {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`FORMAT_VERSION`].
    pub version: u32,
    /// The version of the kernel that recorded it.
    pub kernel_version: String,
    /// When recording started, epoch milliseconds.
    pub started_at_ms: u64,
    /// RECORD_START's request.
    pub options: RecordStartRequest,
    /// Recording stopped because `max_entries` was reached: later requests are missing.
    #[serde(default)]
    pub truncated: bool,
    /// The entries, in `seq` order.
    pub entries: Vec<Entry>,
}

impl Recording {
    fn new(options: RecordStartRequest) -> Recording {
        Recording {
            format: FORMAT.to_owned(),
            version: FORMAT_VERSION,
            kernel_version: env!("CARGO_PKG_VERSION").to_owned(),
            started_at_ms: crate::events::now_ms(),
            options,
            truncated: false,
            entries: Vec::new(),
        }
    }

    /// The export: JSON text.
    pub fn export(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads an export; `invalid_request` naming what is wrong (not JSON, another format or
    /// version, entries out of order, an opcode byte that is no opcode).
    pub fn parse(text: &str) -> Result<Recording, WireError> {
        #[derive(Deserialize)]
        struct Head {
            format: Option<String>,
            version: Option<u64>,
        }
        let bad = |why: String| WireError::invalid_request(format!("recording: {why}"));
        let head: Head = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        if head.format.as_deref() != Some(FORMAT) {
            return Err(bad(format!(
                "format is {:?}, expected {FORMAT:?} (export one with RECORD_STATUS {{export: true}})",
                head.format
            )));
        }
        if head.version != Some(u64::from(FORMAT_VERSION)) {
            return Err(bad(format!(
                "version {:?} is not supported: this kernel reads version {FORMAT_VERSION}",
                head.version
            )));
        }
        let rec: Recording = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        let mut last = 0;
        for e in &rec.entries {
            if e.seq <= last {
                return Err(bad(format!(
                    "entry seq {} follows seq {last}: entries must be in increasing seq order",
                    e.seq
                )));
            }
            last = e.seq;
            if Opcode::from_u8(e.opcode).is_none() {
                return Err(bad(format!(
                    "entry {}: 0x{:02X} is no opcode",
                    e.seq, e.opcode
                )));
            }
        }
        Ok(rec)
    }
}

/// Who started a recording, and so whose requests it may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Owner {
    id: u32,
    agent: bool,
    uid: u32,
}

impl Owner {
    fn of(caller: &Caller) -> Owner {
        Owner {
            id: caller.id,
            agent: caller.agent,
            uid: caller.uid,
        }
    }

    /// Root operators see everyone; an agent only itself; another operator its own uid's
    /// connections and the agents it owns.
    fn sees(&self, who: &Who) -> bool {
        if self.agent {
            return who.id == self.id;
        }
        if self.uid == 0 {
            return true;
        }
        if who.agent {
            who.owner_uid == Some(self.uid)
        } else {
            who.uid == self.uid
        }
    }

    /// May stop the recording or export it: the same agent, or an operator of the same uid,
    /// or root.
    fn controls(&self, caller: &Caller) -> bool {
        if caller.agent || self.agent {
            return caller.agent && self.agent && caller.id == self.id;
        }
        caller.uid == 0 || caller.uid == self.uid
    }
}

/// A request's maker, for the recorder's admission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Who {
    /// Its id.
    pub id: u32,
    /// It is an agent.
    pub agent: bool,
    /// Its uid.
    pub uid: u32,
    /// An agent's owner uid.
    pub owner_uid: Option<u32>,
    /// Its name, if any.
    pub name: Option<String>,
}

/// What a finished request came to.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The request as JSON.
    pub request: Value,
    /// The reply as JSON.
    pub reply: Value,
    /// It succeeded.
    pub ok: bool,
    /// The error code, when it failed.
    pub error_code: Option<String>,
}

#[derive(Debug)]
struct Session {
    owner: Owner,
    started: Instant,
    recording: Recording,
}

#[derive(Debug, Default)]
struct Rec {
    state: RecordingState,
    /// The current recording, or the last one (kept for export until the next start).
    session: Option<Session>,
}

#[derive(Debug, Default)]
struct Progress {
    state: ReplayState,
    total: u64,
    replayed: u64,
    skipped: u64,
    divergences: u64,
    last_error: Option<String>,
}

impl Progress {
    fn reply(&self) -> ReplayStatusReply {
        let done = self.replayed + self.skipped;
        let progress_percent = if self.total == 0 {
            if self.state == ReplayState::Completed {
                100.0
            } else {
                0.0
            }
        } else {
            (done as f64 * 100.0 / self.total as f64).min(100.0)
        };
        ReplayStatusReply {
            success: true,
            state: self.state,
            progress_percent,
            entries_replayed: self.replayed,
            entries_skipped: self.skipped,
            last_error: self.last_error.clone(),
        }
    }
}

#[derive(Debug)]
struct Job {
    recording: Recording,
    by: Caller,
}

/// The kernel's recorder and replayer.
#[derive(Debug, Default)]
pub struct Recorder {
    /// Recording now: the one check every request pays.
    on: AtomicBool,
    rec: Mutex<Rec>,
    replay: Mutex<Progress>,
    job: Mutex<Option<Job>>,
    wake: tokio::sync::Notify,
}

impl Recorder {
    /// A recorder, idle.
    pub fn new() -> Recorder {
        Recorder::default()
    }

    /// Whether requests of `op` should be kept for [`observe`] (cheap: an atomic load).
    pub fn wants(&self, op: u8) -> bool {
        self.on.load(Ordering::Relaxed) && Opcode::from_u8(op).and_then(kind).is_some()
    }

    fn start(&self, owner: Owner, opts: RecordStartRequest) -> Result<(), WireError> {
        if opts.max_entries == 0 || opts.max_entries > MAX_ENTRIES_LIMIT {
            return Err(WireError::invalid_request(format!(
                "max_entries: {} is out of range 1..={MAX_ENTRIES_LIMIT}",
                opts.max_entries
            )));
        }
        let mut rec = lock(&self.rec);
        if rec.state != RecordingState::Idle {
            let n = rec
                .session
                .as_ref()
                .map_or(0, |s| s.recording.entries.len());
            return Err(WireError::new(
                ErrorCode::Conflict,
                format!(
                    "a recording is in progress ({} with {n} entries): RECORD_STOP it first",
                    rec.state.as_str()
                ),
            ));
        }
        rec.session = Some(Session {
            owner,
            started: Instant::now(),
            recording: Recording::new(opts),
        });
        rec.state = RecordingState::Recording;
        self.on.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Adds an entry if recording and the recording admits `who` and `op`; answers whether
    /// it did. At `max_entries` recording pauses (state PAUSED, `truncated` in the export).
    pub fn offer(&self, who: &Who, op: Opcode, outcome: Outcome) -> bool {
        let Some(k) = kind(op) else {
            return false;
        };
        let mut rec = lock(&self.rec);
        if rec.state != RecordingState::Recording {
            return false;
        }
        let Some(s) = rec.session.as_mut() else {
            return false;
        };
        let opts = &s.recording.options;
        let included = match k {
            Kind::Replayed | Kind::Lifecycle => true,
            Kind::Think => opts.include_think,
            Kind::Http => opts.include_http,
            Kind::Exec => opts.include_exec,
        };
        if !included || !opts.records_agent(who.id) || !s.owner.sees(who) {
            return false;
        }
        let max = opts.max_entries;
        let seq = s.recording.entries.len() as u64 + 1;
        s.recording.entries.push(Entry {
            seq,
            t_ms: u64::try_from(s.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            caller: RecordedCaller {
                id: who.id,
                agent: who.agent,
                name: who.name.clone(),
                uid: who.uid,
            },
            opcode: op.as_u8(),
            op: op.name().to_owned(),
            request: outcome.request,
            ok: outcome.ok,
            error_code: outcome.error_code,
            reply: outcome.reply,
        });
        if seq >= max {
            s.recording.truncated = true;
            rec.state = RecordingState::Paused;
            self.on.store(false, Ordering::Relaxed);
            tracing::warn!(
                "recording holds max_entries ({max}) entries: recording paused until RECORD_STOP"
            );
        }
        true
    }

    fn stop(&self, caller: &Caller) -> Result<u64, WireError> {
        let mut rec = lock(&self.rec);
        let n = rec
            .session
            .as_ref()
            .map_or(0, |s| s.recording.entries.len() as u64);
        if rec.state == RecordingState::Idle {
            return Ok(n);
        }
        if let Some(s) = &rec.session {
            if !s.owner.controls(caller) {
                return Err(WireError::new(
                    ErrorCode::PermissionDenied,
                    "the recording belongs to another caller: only it (an operator of its uid) or root may stop it",
                ));
            }
        }
        rec.state = RecordingState::Idle;
        self.on.store(false, Ordering::Relaxed);
        Ok(n)
    }

    fn status(&self, caller: &Caller, export: bool) -> Result<RecordStatusReply, WireError> {
        let rec = lock(&self.rec);
        let entry_count = rec
            .session
            .as_ref()
            .map_or(0, |s| s.recording.entries.len() as u64);
        let recording_data = if export {
            match &rec.session {
                Some(s) if !s.owner.controls(caller) => {
                    return Err(WireError::new(
                        ErrorCode::PermissionDenied,
                        "the recording belongs to another caller: only it (an operator of its uid) or root may export it",
                    ))
                }
                Some(s) => Some(s.recording.export()),
                None => Some(Recording::new(RecordStartRequest::default()).export()),
            }
        } else {
            None
        };
        Ok(RecordStatusReply {
            success: true,
            state: rec.state,
            recording: rec.state == RecordingState::Recording,
            entry_count,
            recording_data,
        })
    }

    fn replay_start(&self, caller: &Caller, recording: Recording) -> Result<u64, WireError> {
        let total = recording.entries.len() as u64;
        let mut progress = lock(&self.replay);
        if progress.state == ReplayState::Running {
            return Err(WireError::new(
                ErrorCode::Conflict,
                format!(
                    "a replay is running ({} of {} entries done): wait for it to complete",
                    progress.replayed + progress.skipped,
                    progress.total
                ),
            ));
        }
        *progress = Progress {
            state: ReplayState::Running,
            total,
            ..Progress::default()
        };
        *lock(&self.job) = Some(Job {
            recording,
            by: caller.clone(),
        });
        self.wake.notify_one();
        Ok(total)
    }

    fn progress(&self, f: impl FnOnce(&mut Progress)) {
        f(&mut lock(&self.replay));
    }
}

// ---------------------------------------------------------------- the hook in `handle`

/// Records a finished request (called by `syscalls::handle` with the request's payload when
/// [`Recorder::wants`] said so before dispatch).
pub fn observe(
    kernel: &Kernel,
    caller: &Caller,
    opcode: u8,
    codec: Codec,
    payload: &[u8],
    reply: &[u8],
    failed: bool,
) {
    let Some(op) = Opcode::from_u8(opcode) else {
        return;
    };
    // A request that does not decode was refused as invalid: nothing worth replaying.
    let Some(request) = request_json(op, codec, payload) else {
        return;
    };
    let Some(reply) = reply_json(op, codec, reply) else {
        return;
    };
    let agent = caller.agent.then(|| kernel.agents.get(caller.id)).flatten();
    let who = Who {
        id: caller.id,
        agent: caller.agent,
        uid: caller.uid,
        owner_uid: agent.as_ref().map(|a| a.owner_uid),
        name: agent
            .map(|a| a.name.clone())
            .or_else(|| kernel.ipc.first_name(caller.id)),
    };
    let error_code = failed
        .then(|| reply.get("code").and_then(Value::as_str).map(str::to_owned))
        .flatten();
    kernel.recorder.offer(
        &who,
        op,
        Outcome {
            request,
            reply,
            ok: !failed,
            error_code,
        },
    );
}

macro_rules! recorded_json {
    ($( $op:ident => $req:ty, $reply:ty; )*) => {
        /// The request as JSON: decoded as the opcode's typed request (either codec) and
        /// encoded again, so a postcard request reads like a JSON one.
        fn request_json(op: Opcode, codec: Codec, payload: &[u8]) -> Option<Value> {
            let mut v = match op {
                $( Opcode::$op => serde_json::to_value(
                    codec::decode_request::<$req>(codec, payload).ok()?).ok()?, )*
                _ => return None,
            };
            // Header values may carry credentials; the replay never sends them.
            if op == Opcode::Http {
                if let Some(h) = v.get_mut("headers").and_then(Value::as_object_mut) {
                    for value in h.values_mut() {
                        *value = Value::String("<redacted>".into());
                    }
                }
            }
            Some(v)
        }

        /// The reply as JSON (an error as its JSON error object).
        fn reply_json(op: Opcode, codec: Codec, payload: &[u8]) -> Option<Value> {
            if codec == Codec::Json {
                return serde_json::from_slice(payload).ok();
            }
            match op {
                $( Opcode::$op => match codec::decode_reply::<$reply>(codec, payload).ok()? {
                    Ok(r) => serde_json::to_value(r).ok(),
                    Err(e) => serde_json::to_value(e.to_json(op.as_u8())).ok(),
                }, )*
                _ => None,
            }
        }
    };
}

recorded_json! {
    Store => clove_abi::msg::StoreRequest, clove_abi::msg::StoreReply;
    Delete => clove_abi::msg::DeleteRequest, clove_abi::msg::DeleteReply;
    Register => clove_abi::msg::RegisterRequest, clove_abi::msg::RegisterReply;
    Send => clove_abi::msg::SendRequest, clove_abi::msg::SendReply;
    SendBatch => clove_abi::msg::SendBatchRequest, clove_abi::msg::SendBatchReply;
    Broadcast => clove_abi::msg::BroadcastRequest, clove_abi::msg::BroadcastReply;
    Emit => clove_abi::msg::EmitRequest, clove_abi::msg::EmitReply;
    Subscribe => clove_abi::msg::SubscribeRequest, clove_abi::msg::SubscribeReply;
    Unsubscribe => clove_abi::msg::UnsubscribeRequest, clove_abi::msg::UnsubscribeReply;
    Spawn => clove_abi::msg::SpawnRequest, clove_abi::msg::SpawnReply;
    Kill => clove_abi::msg::KillRequest, clove_abi::msg::KillReply;
    Pause => clove_abi::msg::PauseRequest, clove_abi::msg::PauseReply;
    Resume => clove_abi::msg::ResumeRequest, clove_abi::msg::ResumeReply;
    SetPerms => clove_abi::msg::SetPermsRequest, clove_abi::msg::SetPermsReply;
    GroupCreate => clove_abi::msg::GroupCreateRequest, clove_abi::msg::GroupCreateReply;
    GroupStop => clove_abi::msg::GroupStopRequest, clove_abi::msg::GroupStopReply;
    Think => clove_abi::msg::ThinkRequest, clove_abi::msg::ThinkReply;
    Http => clove_abi::msg::HttpRequest, clove_abi::msg::HttpReply;
    Exec => clove_abi::msg::ExecRequest, clove_abi::msg::ExecReply;
}

// ---------------------------------------------------------------- the syscalls

/// RECORD_START. Operators may record; an agent may record only itself (its `filter_agents`
/// must be absent, empty or exactly its own id).
pub fn start(
    kernel: &Kernel,
    caller: &Caller,
    mut req: RecordStartRequest,
) -> Result<RecordStartReply, WireError> {
    if caller.agent {
        match req.filter_agents.as_deref() {
            None | Some([]) => {}
            Some([id]) if *id == caller.id => {}
            Some(_) => {
                return Err(WireError::new(
                    ErrorCode::PermissionDenied,
                    "an agent may record only itself: filter_agents must be absent or its own id",
                ))
            }
        }
        req.filter_agents = Some(vec![caller.id]);
    }
    kernel.recorder.start(Owner::of(caller), req)?;
    Ok(RecordStartReply {
        success: true,
        recording: true,
    })
}

/// RECORD_STOP: stopping while idle is not an error.
pub fn stop(
    kernel: &Kernel,
    caller: &Caller,
    _req: RecordStopRequest,
) -> Result<RecordStopReply, WireError> {
    let entries_recorded = kernel.recorder.stop(caller)?;
    Ok(RecordStopReply {
        success: true,
        recording: false,
        entries_recorded,
    })
}

/// RECORD_STATUS: anyone may ask; only the recording's owner (or root) may export it.
pub fn status(
    kernel: &Kernel,
    caller: &Caller,
    req: RecordStatusRequest,
) -> Result<RecordStatusReply, WireError> {
    kernel.recorder.status(caller, req.export)
}

/// REPLAY_START: operators only.
pub fn replay_start(
    kernel: &Kernel,
    caller: &Caller,
    req: ReplayStartRequest,
) -> Result<ReplayStartReply, WireError> {
    if caller.agent {
        return Err(WireError::new(
            ErrorCode::PermissionDenied,
            "only operators may replay a recording",
        ));
    }
    let Some(text) = req.recording() else {
        return Err(WireError::invalid_request(
            "recording: required (the text RECORD_STATUS {export: true} gave as recording_data)",
        ));
    };
    let recording = Recording::parse(text)?;
    let total_entries = kernel.recorder.replay_start(caller, recording)?;
    Ok(ReplayStartReply {
        success: true,
        total_entries,
    })
}

/// REPLAY_STATUS: operators only (`last_error` names keys and callers).
pub fn replay_status(
    kernel: &Kernel,
    caller: &Caller,
    _req: ReplayStatusRequest,
) -> Result<ReplayStatusReply, WireError> {
    if caller.agent {
        return Err(WireError::new(
            ErrorCode::PermissionDenied,
            "only operators may see the replay's status",
        ));
    }
    Ok(lock(&kernel.recorder.replay).reply())
}

// ---------------------------------------------------------------- the replayer

/// The replay worker: runs each REPLAY_START's recording, one at a time, until the kernel
/// stops. Started once with the kernel's background work.
pub async fn replayer(kernel: Arc<Kernel>) {
    loop {
        tokio::select! {
            () = kernel.recorder.wake.notified() => {}
            () = kernel.stopping.cancelled() => return,
        }
        let job = lock(&kernel.recorder.job).take();
        if let Some(job) = job {
            replay(&kernel, job).await;
        }
    }
}

/// The callers a replay acts as: recorded id → synthetic caller.
struct Identities {
    map: HashMap<u32, Caller>,
    /// Ids allocated for the replay (released like closed connections at its end).
    fresh: Vec<u32>,
}

impl Identities {
    /// A recorded agent becomes the live agent of the same name, when the replaying operator
    /// is root or owns it; every other recorded caller becomes a fresh id (never issued to
    /// anyone else) with the replaying operator's credentials.
    fn resolve(kernel: &Kernel, by: &Caller, entries: &[Entry]) -> Identities {
        let mut ids = Identities {
            map: HashMap::new(),
            fresh: Vec::new(),
        };
        for e in entries {
            if ids.map.contains_key(&e.caller.id) || kind_of(e) != Some(Kind::Replayed) {
                continue;
            }
            let live = e
                .caller
                .agent
                .then_some(e.caller.name.as_deref())
                .flatten()
                .and_then(|name| kernel.agents.find(AgentRef::Name(name)).ok())
                .filter(|a| by.uid == 0 || a.owner_uid == by.uid);
            let caller = match live {
                Some(a) => Caller {
                    id: a.id,
                    agent: true,
                    uid: a.uid,
                    gid: a.uid,
                    pid: None,
                },
                None => {
                    let id = kernel.ids.allocate();
                    kernel.ipc.operator_opened(id);
                    ids.fresh.push(id);
                    Caller {
                        id,
                        agent: false,
                        uid: by.uid,
                        gid: by.gid,
                        pid: by.pid,
                    }
                }
            };
            ids.map.insert(e.caller.id, caller);
        }
        ids
    }

    /// The request with recorded ids that name callers of the recording (`to` of SEND and
    /// SEND_BATCH) turned into their replay ids.
    fn rewrite(&self, op: Opcode, mut request: Value) -> Value {
        if matches!(op, Opcode::Send | Opcode::SendBatch) {
            if let Some(to) = request.get_mut("to") {
                let mapped = to
                    .as_u64()
                    .and_then(|id| u32::try_from(id).ok())
                    .and_then(|id| self.map.get(&id));
                if let Some(c) = mapped {
                    *to = Value::from(c.id);
                }
            }
        }
        request
    }

    /// Releases the fresh ids as a closing connection is released: mailbox, names,
    /// subscriptions, async results. Their agent-scope keys stay (like a closed operator
    /// connection's) and are dropped at the next kernel start.
    fn release(&self, kernel: &Kernel) {
        for &id in &self.fresh {
            kernel.ipc.release(id);
            kernel.events.forget(id);
            kernel.asyncs.release(id);
        }
    }
}

fn kind_of(e: &Entry) -> Option<Kind> {
    Opcode::from_u8(e.opcode).and_then(kind)
}

async fn replay(kernel: &Kernel, job: Job) {
    let ids = Identities::resolve(kernel, &job.by, &job.recording.entries);
    for e in &job.recording.entries {
        if kernel.stopping.is_cancelled() {
            kernel.recorder.progress(|p| {
                p.state = ReplayState::Error;
                p.last_error = Some(format!(
                    "the kernel is shutting down: stopped before entry {}",
                    e.seq
                ));
            });
            ids.release(kernel);
            return;
        }
        let (Some(op), Some(Kind::Replayed)) = (Opcode::from_u8(e.opcode), kind_of(e)) else {
            kernel.recorder.progress(|p| p.skipped += 1);
            continue;
        };
        let Some(caller) = ids.map.get(&e.caller.id) else {
            kernel.recorder.progress(|p| p.skipped += 1);
            continue;
        };
        let payload = serde_json::to_vec(&ids.rewrite(op, e.request.clone())).unwrap_or_default();
        let resp = crate::syscalls::handle(
            kernel,
            caller,
            crate::syscalls::Request {
                codec: Codec::Json,
                opcode: e.opcode,
                payload,
            },
        )
        .await;
        let reply: Value = serde_json::from_slice(&resp.payload).unwrap_or(Value::Null);
        let divergence = diverges(e, !resp.failed, &reply);
        kernel.recorder.progress(|p| {
            p.replayed += 1;
            if let Some(d) = divergence {
                p.divergences += 1;
                p.last_error = Some(format!("{} divergence(s); last: {d}", p.divergences));
            }
        });
    }
    ids.release(kernel);
    kernel
        .recorder
        .progress(|p| p.state = ReplayState::Completed);
}

/// How a replayed request's outcome differs from the recorded one, if it does: success,
/// error code, and the reply fields that do not name ids (STORE `version`, DELETE `deleted`,
/// SEND_BATCH `delivered`, REGISTER `name`). Ids differ by design (see [`Identities`]).
pub fn diverges(e: &Entry, ok: bool, reply: &Value) -> Option<String> {
    let what = format!(
        "entry {} ({} by {} {})",
        e.seq,
        e.op,
        if e.caller.agent { "agent" } else { "operator" },
        e.caller.id
    );
    if ok != e.ok {
        let said = |ok: bool, r: &Value| {
            if ok {
                "success".to_owned()
            } else {
                format!(
                    "{}: {}",
                    r.get("code").and_then(Value::as_str).unwrap_or("error"),
                    r.get("error").and_then(Value::as_str).unwrap_or("")
                )
            }
        };
        return Some(format!(
            "{what}: recorded {}, replay {}",
            said(e.ok, &e.reply),
            said(ok, reply)
        ));
    }
    if !ok {
        let (a, b) = (e.reply.get("code"), reply.get("code"));
        return (a != b).then(|| format!("{what}: recorded error {a:?}, replay error {b:?}"));
    }
    for field in ["version", "deleted", "delivered", "name"] {
        let (a, b) = (e.reply.get(field), reply.get(field));
        if a != b {
            return Some(format!("{what}: recorded {field} {a:?}, replay {b:?}"));
        }
    }
    None
}

#[cfg(test)]
mod tests;
