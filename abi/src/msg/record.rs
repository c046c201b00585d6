//! RECORD_START, RECORD_STOP, RECORD_STATUS, REPLAY_START, REPLAY_STATUS: recording the
//! syscalls agents make and replaying a recording.
//!
//! A recording is exported by RECORD_STATUS `{export: true}` as JSON text (`recording_data`)
//! and handed back, unchanged, to REPLAY_START. The original reported no `state` and never
//! recorded anything; we record for real.

use serde::{Deserialize, Serialize};

use crate::msg::syscall;

#[cfg(test)]
use crate::msg::lifecycle::finite_f64;

fn default_true() -> bool {
    true
}

/// RECORD_START `max_entries` default: 10000 entries.
pub const DEFAULT_RECORD_MAX_ENTRIES: u64 = 10_000;

fn default_record_max_entries() -> u64 {
    DEFAULT_RECORD_MAX_ENTRIES
}

/// RECORD_START `{include_think, include_http, include_exec, filter_agents?, max_entries}`:
/// start recording syscalls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct RecordStartRequest {
    /// Record THINK calls (default true).
    #[serde(default = "default_true")]
    pub include_think: bool,
    /// Record HTTP calls (default true).
    #[serde(default = "default_true")]
    pub include_http: bool,
    /// Record EXEC calls (default true).
    #[serde(default = "default_true")]
    pub include_exec: bool,
    /// Record only these agents' calls; absent (or empty): every agent's.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub filter_agents: Option<Vec<u32>>,
    /// Stop adding entries once the recording holds this many (default 10000).
    #[serde(default = "default_record_max_entries")]
    pub max_entries: u64,
}

impl Default for RecordStartRequest {
    /// Everything included, every agent, at most 10000 entries.
    fn default() -> Self {
        RecordStartRequest {
            include_think: true,
            include_http: true,
            include_exec: true,
            filter_agents: None,
            max_entries: DEFAULT_RECORD_MAX_ENTRIES,
        }
    }
}

impl RecordStartRequest {
    /// Whether calls of `agent_id` are recorded: `filter_agents` is absent or empty, or
    /// lists it.
    pub fn records_agent(&self, agent_id: u32) -> bool {
        match &self.filter_agents {
            Some(ids) if !ids.is_empty() => ids.contains(&agent_id),
            _ => true,
        }
    }
}

/// RECORD_START reply: `{success, recording}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct RecordStartReply {
    /// The request was carried out.
    pub success: bool,
    /// Recording is now on.
    pub recording: bool,
}

/// RECORD_STOP `{}` (the original SDK sends an empty object).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct RecordStopRequest {}

/// RECORD_STOP reply: `{success, recording: false, entries_recorded}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct RecordStopReply {
    /// The request was carried out (stopping while idle is not an error).
    pub success: bool,
    /// Recording is on; always false after a stop.
    pub recording: bool,
    /// How many entries the recording holds.
    pub entries_recorded: u64,
}

/// The recorder's state, upper-case on the wire.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[serde(rename_all = "UPPERCASE")]
pub enum RecordingState {
    /// `IDLE` (the default): not recording; a finished recording may be held for export.
    #[default]
    Idle,
    /// `RECORDING`: syscalls are being recorded.
    Recording,
    /// `PAUSED`: recording is suspended; the entries so far are kept.
    Paused,
}

impl RecordingState {
    /// Every state, in wire order.
    pub const ALL: [RecordingState; 3] = [
        RecordingState::Idle,
        RecordingState::Recording,
        RecordingState::Paused,
    ];

    /// The wire spelling: `IDLE`, `RECORDING`, `PAUSED`.
    pub const fn as_str(self) -> &'static str {
        match self {
            RecordingState::Idle => "IDLE",
            RecordingState::Recording => "RECORDING",
            RecordingState::Paused => "PAUSED",
        }
    }

    /// The state a wire spelling names (exact, upper-case); `None` for anything else.
    pub fn parse(s: &str) -> Option<RecordingState> {
        RecordingState::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// RECORD_STATUS `{export}`: the recorder's state, and optionally the recording itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct RecordStatusRequest {
    /// Also return the recording as `recording_data` (default false).
    #[serde(default)]
    pub export: bool,
}

/// RECORD_STATUS reply: `{success, state, recording, entry_count, recording_data?}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct RecordStatusReply {
    /// The request was carried out.
    pub success: bool,
    /// `IDLE`, `RECORDING` or `PAUSED` (the original never sent it; see the module docs).
    pub state: RecordingState,
    /// `state` is `RECORDING`.
    pub recording: bool,
    /// How many entries the current (or last) recording holds.
    pub entry_count: u64,
    /// The recording as JSON text, for REPLAY_START `recording`; present only when `export`
    /// was asked for.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub recording_data: Option<String>,
}

/// REPLAY_START `{recording}`: replay a recording exported by RECORD_STATUS.
///
/// The original SDK sends `recording`, the original kernel read `recording_data`; both are
/// accepted, and [`ReplayStartRequest::recording`] picks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct ReplayStartRequest {
    /// The recording as JSON text (the SDK's name); wins over `recording_data`.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub recording: Option<String>,
    /// The recording as JSON text (the name the original kernel read).
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub recording_data: Option<String>,
}

impl ReplayStartRequest {
    /// A request carrying `recording` under the SDK's name.
    pub fn new(recording: impl Into<String>) -> Self {
        ReplayStartRequest {
            recording: Some(recording.into()),
            recording_data: None,
        }
    }

    /// The recording to replay: `recording`, else `recording_data`. An empty string counts
    /// as absent (it is never a valid export), so `None` means "no recording given".
    pub fn recording(&self) -> Option<&str> {
        [self.recording.as_deref(), self.recording_data.as_deref()]
            .into_iter()
            .flatten()
            .find(|s| !s.is_empty())
    }
}

/// REPLAY_START reply: `{success, total_entries}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct ReplayStartReply {
    /// The replay was started.
    pub success: bool,
    /// How many entries the recording holds.
    pub total_entries: u64,
}

/// REPLAY_STATUS `{}` (the original SDK sends an empty object).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct ReplayStatusRequest {}

/// The replayer's state, upper-case on the wire.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[serde(rename_all = "UPPERCASE")]
pub enum ReplayState {
    /// `IDLE` (the default): no replay was started.
    #[default]
    Idle,
    /// `RUNNING`: entries are being replayed.
    Running,
    /// `PAUSED`: the replay is suspended where it is.
    Paused,
    /// `COMPLETED`: every entry was replayed or skipped.
    Completed,
    /// `ERROR`: the replay stopped on an error (see `last_error`).
    Error,
}

impl ReplayState {
    /// Every state, in wire order.
    pub const ALL: [ReplayState; 5] = [
        ReplayState::Idle,
        ReplayState::Running,
        ReplayState::Paused,
        ReplayState::Completed,
        ReplayState::Error,
    ];

    /// The wire spelling: `IDLE`, `RUNNING`, `PAUSED`, `COMPLETED`, `ERROR`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ReplayState::Idle => "IDLE",
            ReplayState::Running => "RUNNING",
            ReplayState::Paused => "PAUSED",
            ReplayState::Completed => "COMPLETED",
            ReplayState::Error => "ERROR",
        }
    }

    /// The state a wire spelling names (exact, upper-case); `None` for anything else.
    pub fn parse(s: &str) -> Option<ReplayState> {
        ReplayState::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// REPLAY_STATUS reply:
/// `{success, state, progress_percent, entries_replayed, entries_skipped, last_error?}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct ReplayStatusReply {
    /// The request was carried out.
    pub success: bool,
    /// `IDLE`, `RUNNING`, `PAUSED`, `COMPLETED` or `ERROR`.
    pub state: ReplayState,
    /// Entries handled (replayed or skipped) as a percentage of the total, 0 to 100.
    #[cfg_attr(test, proptest(strategy = "finite_f64()"))]
    pub progress_percent: f64,
    /// Entries replayed so far.
    pub entries_replayed: u64,
    /// Entries skipped so far (filtered out, or not replayable).
    pub entries_skipped: u64,
    /// The error that stopped the replay; absent when there was none.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub last_error: Option<String>,
}

syscall! {
    RecordStartRequest => RecordStart, RecordStartReply;
    RecordStopRequest => RecordStop, RecordStopReply;
    RecordStatusRequest => RecordStatus, RecordStatusReply;
    ReplayStartRequest => ReplayStart, ReplayStartReply;
    ReplayStatusRequest => ReplayStatus, ReplayStatusReply;
}
