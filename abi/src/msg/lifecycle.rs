//! SPAWN, KILL, LIST, PAUSE, RESUME: starting agents, stopping them and seeing them.
//!
//! Field names and defaults are the original's. Our extensions to SPAWN (`args`, `env`,
//! `interpreter`, `binds`, `limits.cpu`, `limits.disk`, size strings in `limits.memory`,
//! `grace_ms`, `permissions`, `level`, `group`, `restart_backoff_ms`) are all optional, so the
//! original SDK's requests mean exactly what they meant there.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::msg::perms::{PermissionLevel, Permissions};
use crate::msg::syscall;

/// The agent a request names: by id or by registered name.
///
/// KILL, PAUSE and RESUME accept `{id}` or `{name}`, SEND accepts `{to}` or `{to_name}`; each
/// request's `target()` picks with [`AgentRef::pick`], so the rule is written once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AgentRef<'a> {
    /// The agent with this id.
    Id(u32),
    /// The agent with this name.
    Name(&'a str),
}

impl<'a> AgentRef<'a> {
    /// Picks the target: the id when given (it wins over a name given as well), else the name,
    /// else `None` (the kernel answers "KILL needs id or name").
    pub fn pick(id: Option<u32>, name: Option<&'a str>) -> Option<AgentRef<'a>> {
        match (id, name) {
            (Some(id), _) => Some(AgentRef::Id(id)),
            (None, Some(name)) => Some(AgentRef::Name(name)),
            (None, None) => None,
        }
    }
}

impl fmt::Display for AgentRef<'_> {
    /// `agent 7` or `agent "worker"`, for error messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AgentRef::Id(id) => write!(f, "agent {id}"),
            AgentRef::Name(name) => write!(f, "agent {name:?}"),
        }
    }
}

/// A number of bytes (`limits.memory`, `limits.disk`).
///
/// Always an integer on the wire we send (JSON) and a plain `u64` in postcard. In JSON a
/// request may also write it as a string (our extension): a number followed by an optional
/// unit, case-insensitive, spaces allowed between:
/// * none or `B`: bytes;
/// * `K`, `M`, `G`, `T`, `KiB`, `MiB`, `GiB`, `TiB` (and `Ki`, `Mi`, `Gi`, `Ti`): powers of 1024;
/// * `KB`, `MB`, `GB`, `TB`: powers of 1000.
///
/// So `"256M"` = `"256MiB"` = 268435456, `"1.5G"` = 1610612736 (fractions are rounded to the
/// nearest byte), `"1GB"` = 1000000000.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// The number of bytes.
    pub const fn bytes(self) -> u64 {
        self.0
    }
}

impl From<u64> for ByteSize {
    fn from(bytes: u64) -> Self {
        ByteSize(bytes)
    }
}

impl From<ByteSize> for u64 {
    fn from(size: ByteSize) -> Self {
        size.0
    }
}

impl fmt::Display for ByteSize {
    /// The plain byte count.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A size string that is not a byte count (see [`ByteSize`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid size {text:?}: {reason} (expected bytes, or a string like \"256M\", \"1.5G\", \"512KiB\", \"1GB\")")]
pub struct ByteSizeError {
    /// The text that was given.
    pub text: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl FromStr for ByteSize {
    type Err = ByteSizeError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let fail = |reason| ByteSizeError {
            text: text.to_owned(),
            reason,
        };
        let trimmed = text.trim();
        let end = trimmed
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(trimmed.len());
        let (number, unit) = trimmed.split_at(end);
        let multiplier: u64 = match unit.trim_start().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "ki" | "kib" => 1 << 10,
            "m" | "mi" | "mib" => 1 << 20,
            "g" | "gi" | "gib" => 1 << 30,
            "t" | "ti" | "tib" => 1 << 40,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            "tb" => 1_000_000_000_000,
            _ => return Err(fail("unknown unit")),
        };
        if number.is_empty() {
            return Err(fail("no number"));
        }
        if !number.contains('.') {
            let n: u64 = number.parse().map_err(|_| fail("number too large"))?;
            return n
                .checked_mul(multiplier)
                .map(ByteSize)
                .ok_or_else(|| fail("too large"));
        }
        let n: f64 = number.parse().map_err(|_| fail("not a number"))?;
        let bytes = (n * multiplier as f64).round();
        // 2^64 is the first value that does not fit; `u64::MAX as f64` rounds up to it.
        if bytes >= u64::MAX as f64 {
            return Err(fail("too large"));
        }
        // Finite, non-negative (no sign was accepted) and below 2^64: the cast is exact.
        Ok(ByteSize(bytes as u64))
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            d.deserialize_any(ByteSizeVisitor)
        } else {
            u64::deserialize(d).map(ByteSize)
        }
    }
}

struct ByteSizeVisitor;

impl serde::de::Visitor<'_> for ByteSizeVisitor {
    type Value = ByteSize;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a byte count: an integer, or a string like \"256M\", \"1.5G\", \"1GB\"")
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<ByteSize, E> {
        Ok(ByteSize(v))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<ByteSize, E> {
        u64::try_from(v)
            .map(ByteSize)
            .map_err(|_| E::custom(format_args!("invalid size {v}: negative")))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<ByteSize, E> {
        // Python computes sizes like `0.5 * 1024**3` as floats; whole ones are fine.
        if v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v < u64::MAX as f64 {
            Ok(ByteSize(v as u64))
        } else {
            Err(E::custom(format_args!(
                "invalid size {v}: not a whole, non-negative number of bytes"
            )))
        }
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ByteSize, E> {
        v.parse().map_err(E::custom)
    }
}

/// Finite floats for the property tests (NaN is not equal to itself; JSON has no infinity).
#[cfg(test)]
pub(crate) fn finite_f64() -> impl proptest::strategy::Strategy<Value = f64> {
    proptest::num::f64::NORMAL | proptest::num::f64::ZERO
}

/// Whether and how a dead agent is restarted.
///
/// OTP's restart types are accepted as synonyms (read, never written): `temporary` =
/// `never`, `transient` = `on-failure`, `permanent` = `always`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub enum RestartPolicy {
    /// `"never"` (the default; also accepted: OTP's `"temporary"`): a dead agent stays dead.
    #[default]
    #[serde(rename = "never", alias = "temporary")]
    Never,
    /// `"on-failure"` (also accepted: `"on_failure"`, OTP's `"transient"`): restart after a
    /// non-zero exit or a death by signal.
    #[serde(rename = "on-failure", alias = "on_failure", alias = "transient")]
    OnFailure,
    /// `"always"` (also accepted: OTP's `"permanent"`): restart after any exit.
    #[serde(rename = "always", alias = "permanent")]
    Always,
}

impl RestartPolicy {
    /// The wire spelling: `never`, `on-failure`, `always`.
    pub const fn as_str(self) -> &'static str {
        match self {
            RestartPolicy::Never => "never",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::Always => "always",
        }
    }
}

/// `limits.memory` default: 256 MiB.
pub const DEFAULT_MEMORY: u64 = 256 << 20;
/// `limits.cpu_quota` default: 100000 µs per period (one full CPU).
pub const DEFAULT_CPU_QUOTA: u64 = 100_000;
/// `limits.cpu_period` default: 100000 µs.
pub const DEFAULT_CPU_PERIOD: u64 = 100_000;
/// `limits.cpu_shares` default: 1024.
pub const DEFAULT_CPU_SHARES: u64 = 1024;
/// `limits.max_pids` default: 64.
pub const DEFAULT_MAX_PIDS: u64 = 64;

/// SPAWN's `limits`: the resource limits of the agent's cgroup. Missing fields take the
/// original's defaults (the `DEFAULT_*` constants).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[serde(default)]
pub struct Limits {
    /// Memory limit in bytes (default 256 MiB). Our extension: a size string (`"512M"`).
    pub memory: ByteSize,
    /// CPU time in µs the agent may use per `cpu_period` (default 100000).
    pub cpu_quota: u64,
    /// The CPU accounting period in µs (default 100000).
    pub cpu_period: u64,
    /// Relative CPU weight, cgroup v1 `cpu.shares` scale (default 1024).
    pub cpu_shares: u64,
    /// Maximum number of processes and threads (default 64).
    pub max_pids: u64,
    /// Extension: CPUs the agent may use (`0.5` = half a CPU); wins over `cpu_quota` /
    /// `cpu_period` when given.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    #[cfg_attr(test, proptest(strategy = "proptest::option::of(finite_f64())"))]
    pub cpu: Option<f64>,
    /// Extension: size cap of the agent's writable work dir, in bytes (or a size string).
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub disk: Option<ByteSize>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory: ByteSize(DEFAULT_MEMORY),
            cpu_quota: DEFAULT_CPU_QUOTA,
            cpu_period: DEFAULT_CPU_PERIOD,
            cpu_shares: DEFAULT_CPU_SHARES,
            max_pids: DEFAULT_MAX_PIDS,
            cpu: None,
            disk: None,
        }
    }
}

impl Limits {
    /// The CPU limit as (quota µs, period µs): from `cpu` when given (CPUs × period, at least
    /// 1000 µs as cgroups require), else `cpu_quota` / `cpu_period`.
    pub fn cpu_quota_period(&self) -> (u64, u64) {
        match self.cpu {
            Some(cpus) if cpus.is_finite() && cpus > 0.0 => {
                let quota = (cpus * self.cpu_period as f64).round();
                let quota = if quota >= u64::MAX as f64 {
                    u64::MAX
                } else {
                    quota as u64
                };
                (quota.max(1000), self.cpu_period)
            }
            _ => (self.cpu_quota, self.cpu_period),
        }
    }
}

/// A host path made visible inside the agent's sandbox (SPAWN `binds`, our extension).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct Bind {
    /// The host path.
    pub source: String,
    /// Where it appears inside the sandbox; default: the same path as `source`.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub target: Option<String>,
    /// Writable by the agent (default false: read-only).
    #[serde(default)]
    pub writable: bool,
}

impl Bind {
    /// The path inside the sandbox: `target`, else `source`.
    pub fn target(&self) -> &str {
        self.target.as_deref().unwrap_or(&self.source)
    }
}

fn default_true() -> bool {
    true
}

/// `max_restarts` default: 5 restarts within `restart_window`.
pub const DEFAULT_MAX_RESTARTS: u32 = 5;

fn default_max_restarts() -> u32 {
    DEFAULT_MAX_RESTARTS
}

/// `restart_window` default: 300 seconds.
pub const DEFAULT_RESTART_WINDOW: f64 = 300.0;

fn default_restart_window() -> f64 {
    DEFAULT_RESTART_WINDOW
}

/// The interpreter when neither `interpreter` nor `python` is given.
pub const DEFAULT_PYTHON: &str = "python3";

/// SPAWN `{name, script, ...}`: start a script as an isolated agent.
///
/// The child runs `[interpreter, script, <socket path>, args...]` (see
/// [`SpawnRequest::interpreter`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct SpawnRequest {
    /// The agent's name (required; unique among live agents).
    pub name: String,
    /// Path of the script to run (required).
    pub script: String,
    /// Run in namespaces and cgroups (default true).
    #[serde(default = "default_true")]
    pub sandboxed: bool,
    /// Give the agent the host's network (default false: its own empty net namespace).
    #[serde(default)]
    pub network: bool,
    /// Resource limits; absent means the defaults of [`Limits`] (see [`SpawnRequest::limits`]).
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub limits: Option<Limits>,
    /// `never` (default), `on-failure` (or `on_failure`), `always`; OTP's `temporary`,
    /// `transient`, `permanent` mean the same three.
    #[serde(default)]
    pub restart_policy: RestartPolicy,
    /// Restarts allowed within `restart_window` before giving up (default 5).
    #[serde(default = "default_max_restarts")]
    pub max_restarts: u32,
    /// The window of `max_restarts`, in seconds (default 300).
    #[serde(default = "default_restart_window")]
    #[cfg_attr(test, proptest(strategy = "finite_f64()"))]
    pub restart_window: f64,
    /// The Python interpreter (default `python3`).
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub python: Option<String>,
    /// Extension: extra arguments after the socket path.
    #[serde(default)]
    pub args: Vec<String>,
    /// Extension: extra environment variables for the agent.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Extension: the interpreter for non-Python scripts; wins over `python`. An empty string
    /// runs the script itself as an executable.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub interpreter: Option<String>,
    /// Extension: host paths made visible in the sandbox.
    #[serde(default)]
    pub binds: Vec<Bind>,
    /// Extension: ms between SIGTERM and SIGKILL when the agent is killed (kernel default when
    /// absent).
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub grace_ms: Option<u64>,
    /// Extension: the agent's permissions (default: the `standard` level); wins over `level`.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub permissions: Option<Permissions>,
    /// Extension: the agent's permission level (default `standard`).
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub level: Option<PermissionLevel>,
    /// Extension: the supervisor group the agent joins.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub group: Option<String>,
    /// Extension: initial delay in ms before a restart (doubles per restart; kernel default
    /// when absent).
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub restart_backoff_ms: Option<u64>,
}

impl Default for SpawnRequest {
    /// Empty `name` and `script`, every other field at its wire default.
    fn default() -> Self {
        SpawnRequest {
            name: String::new(),
            script: String::new(),
            sandboxed: true,
            network: false,
            limits: None,
            restart_policy: RestartPolicy::Never,
            max_restarts: DEFAULT_MAX_RESTARTS,
            restart_window: DEFAULT_RESTART_WINDOW,
            python: None,
            args: Vec::new(),
            env: BTreeMap::new(),
            interpreter: None,
            binds: Vec::new(),
            grace_ms: None,
            permissions: None,
            level: None,
            group: None,
            restart_backoff_ms: None,
        }
    }
}

impl SpawnRequest {
    /// A request for `script` named `name`, every other field at its default.
    pub fn new(name: impl Into<String>, script: impl Into<String>) -> Self {
        SpawnRequest {
            name: name.into(),
            script: script.into(),
            ..SpawnRequest::default()
        }
    }

    /// The interpreter to run the script with: `interpreter`, else `python`, else `python3`.
    /// `None` when the chosen one is empty: the script is executed itself.
    pub fn interpreter(&self) -> Option<&str> {
        let chosen = self
            .interpreter
            .as_deref()
            .or(self.python.as_deref())
            .unwrap_or(DEFAULT_PYTHON);
        (!chosen.is_empty()).then_some(chosen)
    }

    /// The limits in force: `limits`, or the defaults when absent.
    pub fn limits(&self) -> Limits {
        self.limits.unwrap_or_default()
    }
}

/// SPAWN reply `status`: always `"running"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub enum SpawnStatus {
    /// `"running"`: the agent's process was started.
    #[default]
    #[serde(rename = "running")]
    Running,
}

/// SPAWN reply: `{id, name, pid, status, restart_policy, isolation}`. No `success` key, as in
/// the original (callers test `id`); errors are the usual error object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct SpawnReply {
    /// The new agent's id.
    pub id: u32,
    /// Its name.
    pub name: String,
    /// Its pid as the host sees it.
    pub pid: i32,
    /// Always `"running"`.
    pub status: SpawnStatus,
    /// The restart policy in force.
    pub restart_policy: RestartPolicy,
    /// Which isolation layers and limits are really in force.
    pub isolation: Isolation,
}

/// SPAWN reply `isolation`: what really holds, so nothing is silently skipped.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct Isolation {
    /// Every namespace and every requested limit is in force.
    pub fully_isolated: bool,
    /// The namespaces the agent runs in.
    pub namespaces: Namespaces,
    /// The cgroup limits in force.
    pub cgroups: CgroupStatus,
    /// Why isolation is weaker than asked, for humans; absent when fully isolated.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub degraded_reason: Option<String>,
    /// Extension: the requested limits or layers that are NOT in force, by name: `memory`,
    /// `cpu`, `pids`, `swap`, `freezer`, `disk`, `pid_namespace`, `net_namespace`,
    /// `mnt_namespace`, `uts_namespace`, `uid`, `seccomp`, `landlock`, `landlock_partial`.
    /// Empty when everything applied.
    #[serde(default)]
    pub not_applied: Vec<String>,
}

/// SPAWN reply `isolation.namespaces`: true for each namespace the agent has of its own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct Namespaces {
    /// Own pid namespace.
    pub pid: bool,
    /// Own network namespace (false when `network: true` was asked).
    pub net: bool,
    /// Own mount namespace.
    pub mnt: bool,
    /// Own hostname (uts) namespace.
    pub uts: bool,
}

/// SPAWN reply `isolation.cgroups`: true for each limit that is enforced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct CgroupStatus {
    /// The agent has a cgroup of its own.
    pub available: bool,
    /// `limits.memory` is enforced.
    pub memory_limit: bool,
    /// The CPU limit (`cpu_quota`/`cpu_period` or `cpu`) is enforced.
    pub cpu_quota: bool,
    /// `limits.max_pids` is enforced.
    pub pids_limit: bool,
    /// Extension: the cgroup hierarchy used: `v1`, `v2`, or `hybrid` (controllers on both);
    /// absent when no cgroup is available.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub version: Option<CgroupVersion>,
}

/// Which cgroup hierarchy holds an agent's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[serde(rename_all = "lowercase")]
pub enum CgroupVersion {
    /// `"v1"`: every controller on cgroup v1.
    V1,
    /// `"v2"`: the unified hierarchy.
    V2,
    /// `"hybrid"`: some controllers on v1, some on v2.
    Hybrid,
}

impl CgroupVersion {
    /// The wire spelling: `v1`, `v2`, `hybrid`.
    pub const fn as_str(self) -> &'static str {
        match self {
            CgroupVersion::V1 => "v1",
            CgroupVersion::V2 => "v2",
            CgroupVersion::Hybrid => "hybrid",
        }
    }
}

/// KILL `{id}` or `{name}`: stop an agent (SIGTERM, a grace period, then SIGKILL).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct KillRequest {
    /// The agent's id; wins over `name`.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub id: Option<u32>,
    /// The agent's name.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub name: Option<String>,
}

impl KillRequest {
    /// The agent to kill: `id`, else `name`; `None` when neither is given.
    pub fn target(&self) -> Option<AgentRef<'_>> {
        AgentRef::pick(self.id, self.name.as_deref())
    }
}

/// KILL reply: `{success, killed, agent_id}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct KillReply {
    /// The request was carried out.
    pub success: bool,
    /// The agent was stopped.
    pub killed: bool,
    /// The id of the agent.
    pub agent_id: u32,
}

/// LIST `{}` (the original SDK sends an empty payload).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct ListRequest {
    /// Extension: the rich form: each row adds its isolation, and exited agents the kernel
    /// still remembers are listed too, with how they exited (default false: the original's
    /// rows, live agents only).
    #[serde(default)]
    pub detail: bool,
}

/// LIST reply: a JSON array (not an object) of the live agents.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[serde(transparent)]
pub struct ListReply(pub Vec<AgentEntry>);

/// One row of LIST: `{id, name, pid, state, running}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct AgentEntry {
    /// The agent's id.
    pub id: u32,
    /// Its name.
    pub name: String,
    /// Its pid as the host sees it.
    pub pid: i32,
    /// Its state, upper-case.
    pub state: AgentState,
    /// Its process is alive.
    pub running: bool,
    /// Extension: how often it was restarted.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub restarts: Option<u32>,
    /// Extension: ms since its current process started.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub uptime_ms: Option<u64>,
    /// Extension: its supervisor group.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub group: Option<String>,
    /// Extension (LIST `detail`): the isolation in force, as SPAWN reported it.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub isolation: Option<Isolation>,
    /// Extension (LIST `detail`): how an exited agent ended (`exited with code 0`, ...).
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub exit: Option<String>,
}

/// An agent's state as LIST reports it (upper-case on the wire).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[serde(rename_all = "UPPERCASE")]
pub enum AgentState {
    /// `CREATED`: known, not started yet.
    #[default]
    Created,
    /// `STARTING`: its process is being set up.
    Starting,
    /// `RUNNING`.
    Running,
    /// `PAUSED`: frozen by PAUSE.
    Paused,
    /// `STOPPING`: being killed.
    Stopping,
    /// `STOPPED`: exited or killed.
    Stopped,
    /// `FAILED`: could not start, or gave up restarting.
    Failed,
}

impl AgentState {
    /// The wire spelling (`RUNNING`, ...).
    pub const fn as_str(self) -> &'static str {
        match self {
            AgentState::Created => "CREATED",
            AgentState::Starting => "STARTING",
            AgentState::Running => "RUNNING",
            AgentState::Paused => "PAUSED",
            AgentState::Stopping => "STOPPING",
            AgentState::Stopped => "STOPPED",
            AgentState::Failed => "FAILED",
        }
    }
}

/// PAUSE `{id}` or `{name}`: freeze an agent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct PauseRequest {
    /// The agent's id; wins over `name`.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub id: Option<u32>,
    /// The agent's name.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub name: Option<String>,
}

impl PauseRequest {
    /// The agent to pause: `id`, else `name`; `None` when neither is given.
    pub fn target(&self) -> Option<AgentRef<'_>> {
        AgentRef::pick(self.id, self.name.as_deref())
    }
}

/// PAUSE reply: `{success, paused, agent_id}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct PauseReply {
    /// The request was carried out.
    pub success: bool,
    /// The agent is paused.
    pub paused: bool,
    /// The id of the agent.
    pub agent_id: u32,
}

/// RESUME `{id}` or `{name}`: thaw a paused agent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct ResumeRequest {
    /// The agent's id; wins over `name`.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub id: Option<u32>,
    /// The agent's name.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub name: Option<String>,
}

impl ResumeRequest {
    /// The agent to resume: `id`, else `name`; `None` when neither is given.
    pub fn target(&self) -> Option<AgentRef<'_>> {
        AgentRef::pick(self.id, self.name.as_deref())
    }
}

/// RESUME reply: `{success, resumed, agent_id}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct ResumeReply {
    /// The request was carried out.
    pub success: bool,
    /// The agent runs again.
    pub resumed: bool,
    /// The id of the agent.
    pub agent_id: u32,
}

/// WAIT `{id}` or `{name}`, `timeout_ms?` (extension, opcode 0xD0): block until the agent has
/// exited, or until the timeout, and say how it exited. An agent that has already exited is
/// answered at once from the kernel's table of exited agents (by id; a name is free again once
/// its agent has exited, so waiting by name only finds live agents).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct WaitRequest {
    /// The agent's id.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub id: Option<u32>,
    /// The agent's name (when `id` is absent).
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub name: Option<String>,
    /// The longest wait in ms; absent: wait as long as it takes.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub timeout_ms: Option<u64>,
}

impl WaitRequest {
    /// The agent to wait for: `id` wins over `name`.
    pub fn target(&self) -> Option<AgentRef<'_>> {
        AgentRef::pick(self.id, self.name.as_deref())
    }
}

/// WAIT reply: `{success, agent_id, exited, exit_code?, signal?, oom, reason?}`. `exited` is
/// false when the timeout ran out first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct WaitReply {
    /// The wait was carried out (a timeout is not an error).
    pub success: bool,
    /// The agent's id.
    pub agent_id: u32,
    /// The agent has exited.
    pub exited: bool,
    /// Its exit code, when it exited normally.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub exit_code: Option<i32>,
    /// The signal that ended it, when one did.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub signal: Option<i32>,
    /// The memory cgroup's OOM killer ended it.
    #[serde(default)]
    pub oom: bool,
    /// How it ended, for humans: `exited with code 0`, `killed by signal 9 (out of memory)`.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub reason: Option<String>,
}

/// LOGS `{id}` or `{name}` (extension, opcode 0xD1): an agent's output (stdout and stderr,
/// interleaved as written), live or exited (by id).
///
/// Without `offset`: the last `lines` lines. With `offset`: the bytes from that offset on
/// (what a follower asks for next), waiting up to `wait_ms` for new output when there is none
/// yet. `clove logs -f` is a loop of such requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct LogsRequest {
    /// The agent's id.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub id: Option<u32>,
    /// The agent's name (live agents only).
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub name: Option<String>,
    /// How many lines from the end (default 100), when `offset` is absent.
    #[serde(default = "default_log_lines")]
    pub lines: u32,
    /// Read from this byte offset of the log instead (the `next_offset` of a previous reply).
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub offset: Option<u64>,
    /// With `offset`: wait up to this many ms (at most 60000) for output past it (absent:
    /// answer at once).
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub wait_ms: Option<u64>,
}

/// `lines` default of LOGS.
pub const DEFAULT_LOG_LINES: u32 = 100;

fn default_log_lines() -> u32 {
    DEFAULT_LOG_LINES
}

impl Default for LogsRequest {
    fn default() -> Self {
        LogsRequest {
            id: None,
            name: None,
            lines: DEFAULT_LOG_LINES,
            offset: None,
            wait_ms: None,
        }
    }
}

impl LogsRequest {
    /// The agent: `id` wins over `name`.
    pub fn target(&self) -> Option<AgentRef<'_>> {
        AgentRef::pick(self.id, self.name.as_deref())
    }
}

/// LOGS reply: `{success, agent_id, text, next_offset, running}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct LogsReply {
    /// The log was read.
    pub success: bool,
    /// The agent's id.
    pub agent_id: u32,
    /// The output (invalid UTF-8 replaced).
    pub text: String,
    /// The offset to ask for next to follow the log.
    pub next_offset: u64,
    /// The agent is still running (a follower stops once it is not and `text` is empty).
    pub running: bool,
    /// Output older than this offset was rotated away.
    #[serde(default)]
    pub first_offset: u64,
}

syscall! {
    LogsRequest => Logs, LogsReply;
    WaitRequest => Wait, WaitReply;
    SpawnRequest => Spawn, SpawnReply;
    KillRequest => Kill, KillReply;
    ListRequest => List, ListReply;
    PauseRequest => Pause, PauseReply;
    ResumeRequest => Resume, ResumeReply;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn otp_restart_types_are_synonyms() {
        for (text, policy) in [
            ("temporary", RestartPolicy::Never),
            ("transient", RestartPolicy::OnFailure),
            ("permanent", RestartPolicy::Always),
        ] {
            let got: RestartPolicy = serde_json::from_str(&format!("\"{text}\"")).unwrap();
            assert_eq!(got, policy, "{text}");
            // Written back in the original's spelling.
            assert_eq!(got.as_str(), policy.as_str());
        }
    }

    fn size(text: &str) -> Result<u64, ByteSizeError> {
        text.parse::<ByteSize>().map(ByteSize::bytes)
    }

    #[test]
    fn size_strings_follow_the_documented_units() {
        assert_eq!(size("0").unwrap(), 0);
        assert_eq!(size("512").unwrap(), 512);
        assert_eq!(size("512B").unwrap(), 512);
        assert_eq!(size("1K").unwrap(), 1024);
        assert_eq!(size("512KiB").unwrap(), 512 * 1024);
        assert_eq!(size("256M").unwrap(), 256 << 20);
        assert_eq!(size("256Mi").unwrap(), 256 << 20);
        assert_eq!(size(" 256 mib ").unwrap(), 256 << 20);
        assert_eq!(size("1.5G").unwrap(), 1_610_612_736);
        assert_eq!(size("2T").unwrap(), 2 << 40);
        assert_eq!(size("1KB").unwrap(), 1_000);
        assert_eq!(size("1MB").unwrap(), 1_000_000);
        assert_eq!(size("1GB").unwrap(), 1_000_000_000);
        assert_eq!(size("1.5TB").unwrap(), 1_500_000_000_000);
        assert_eq!(size("0.5K").unwrap(), 512);
        assert_eq!(size("18446744073709551615").unwrap(), u64::MAX);
    }

    #[test]
    fn bad_size_strings_say_why() {
        for (text, reason) in [
            ("", "no number"),
            ("M", "no number"),
            ("-1M", "unknown unit"),
            ("12 apples", "unknown unit"),
            ("1.2.3M", "not a number"),
            ("18446744073709551616", "number too large"),
            ("17179869184G", "too large"),
            ("1e30", "unknown unit"),
            ("99999999999T", "too large"),
            ("16777216.5T", "too large"),
        ] {
            let e = size(text).unwrap_err();
            assert_eq!(e.reason, reason, "{text:?}: {e}");
        }
        let e = size("lots").unwrap_err().to_string();
        assert_eq!(
            e,
            "invalid size \"lots\": unknown unit (expected bytes, or a string like \"256M\", \
             \"1.5G\", \"512KiB\", \"1GB\")"
        );
    }

    #[test]
    fn json_sizes_accept_integers_whole_floats_and_strings() {
        let de = |j: &str| serde_json::from_str::<ByteSize>(j).map(ByteSize::bytes);
        assert_eq!(de("1048576").unwrap(), 1 << 20);
        assert_eq!(de("536870912.0").unwrap(), 512 << 20);
        assert_eq!(de("\"64M\"").unwrap(), 64 << 20);
        assert!(de("-1").unwrap_err().to_string().contains("negative"));
        assert!(de("1.5").unwrap_err().to_string().contains("whole"));
        assert!(de("true").unwrap_err().to_string().contains("a byte count"));
        assert_eq!(serde_json::to_string(&ByteSize(5)).unwrap(), "5");
    }

    #[test]
    fn agent_ref_prefers_the_id() {
        assert_eq!(AgentRef::pick(Some(3), Some("a")), Some(AgentRef::Id(3)));
        assert_eq!(AgentRef::pick(None, Some("a")), Some(AgentRef::Name("a")));
        assert_eq!(AgentRef::pick(None, None), None);
        assert_eq!(AgentRef::Id(3).to_string(), "agent 3");
        assert_eq!(AgentRef::Name("a").to_string(), "agent \"a\"");
    }

    #[test]
    fn interpreter_and_limits_pick_as_documented() {
        let mut r = SpawnRequest::new("a", "a.py");
        assert_eq!(r.interpreter(), Some("python3"));
        r.python = Some("/usr/bin/python3.12".into());
        assert_eq!(r.interpreter(), Some("/usr/bin/python3.12"));
        r.interpreter = Some("bash".into());
        assert_eq!(r.interpreter(), Some("bash"));
        r.interpreter = Some(String::new());
        assert_eq!(r.interpreter(), None);
        assert_eq!(r.limits(), Limits::default());
        let l = Limits {
            cpu: Some(0.5),
            ..Limits::default()
        };
        assert_eq!(l.cpu_quota_period(), (50_000, 100_000));
        let l = Limits {
            cpu: Some(0.000_001),
            ..Limits::default()
        };
        assert_eq!(l.cpu_quota_period(), (1000, 100_000));
        assert_eq!(Limits::default().cpu_quota_period(), (100_000, 100_000));
    }
}
