//! GET_AUDIT_LOG, SET_AUDIT_CONFIG: the kernel's audit log.
//!
//! The log is append-only; each entry has a category ([`AuditCategory`]) and, as our
//! extension, its link in a hash chain (`hash`), so a removed or altered entry shows.
//! [`AuditConfig`] says which categories are logged.

use serde::{Deserialize, Serialize};

use crate::codec::Json;
use crate::msg::syscall;

/// What an audit entry is about (SCREAMING_SNAKE_CASE on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AuditCategory {
    /// `SECURITY`: permission checks, denied syscalls, permission changes.
    Security,
    /// `AGENT_LIFECYCLE`: spawns, exits, kills, pauses, resumes, restarts.
    AgentLifecycle,
    /// `IPC`: messages between agents.
    Ipc,
    /// `STATE_STORE`: writes to the shared key-value store.
    StateStore,
    /// `RESOURCE`: limits reached, resource warnings.
    Resource,
    /// `SYSCALL`: every syscall (off by default: it is noisy).
    Syscall,
    /// `NETWORK`: HTTP requests and network access.
    Network,
    /// `WORLD`: simulated worlds.
    World,
}

impl AuditCategory {
    /// Every category, in wire order.
    pub const ALL: [AuditCategory; 8] = [
        AuditCategory::Security,
        AuditCategory::AgentLifecycle,
        AuditCategory::Ipc,
        AuditCategory::StateStore,
        AuditCategory::Resource,
        AuditCategory::Syscall,
        AuditCategory::Network,
        AuditCategory::World,
    ];

    /// The wire spelling: `SECURITY`, `AGENT_LIFECYCLE`, `IPC`, `STATE_STORE`, `RESOURCE`,
    /// `SYSCALL`, `NETWORK`, `WORLD`.
    pub const fn as_str(self) -> &'static str {
        match self {
            AuditCategory::Security => "SECURITY",
            AuditCategory::AgentLifecycle => "AGENT_LIFECYCLE",
            AuditCategory::Ipc => "IPC",
            AuditCategory::StateStore => "STATE_STORE",
            AuditCategory::Resource => "RESOURCE",
            AuditCategory::Syscall => "SYSCALL",
            AuditCategory::Network => "NETWORK",
            AuditCategory::World => "WORLD",
        }
    }

    /// The category a name denotes, ignoring ASCII case (`"ipc"` is `IPC`); `None` for an
    /// unknown name.
    pub fn parse(s: &str) -> Option<AuditCategory> {
        AuditCategory::ALL
            .into_iter()
            .find(|c| c.as_str().eq_ignore_ascii_case(s))
    }
}

/// A GET_AUDIT_LOG `category` that names no [`AuditCategory`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown audit category {0:?} (expected one of SECURITY, AGENT_LIFECYCLE, IPC, STATE_STORE, \
     RESOURCE, SYSCALL, NETWORK, WORLD)"
)]
pub struct UnknownAuditCategory(pub String);

/// GET_AUDIT_LOG `limit` default: 100 entries.
pub const DEFAULT_AUDIT_LIMIT: u32 = 100;

fn default_audit_limit() -> u32 {
    DEFAULT_AUDIT_LIMIT
}

/// GET_AUDIT_LOG `{category?, agent_id?, since_id?, limit}`: read audit entries, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct GetAuditLogRequest {
    /// Only entries of this category (a name as [`AuditCategory::parse`] reads it; see
    /// [`GetAuditLogRequest::category_filter`]); absent: all categories.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub category: Option<String>,
    /// Only entries about this agent; absent: every agent's.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub agent_id: Option<u32>,
    /// Only entries with an id greater than this (for polling); absent: from the oldest kept.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub since_id: Option<u64>,
    /// At most this many entries (default 100).
    #[serde(default = "default_audit_limit")]
    pub limit: u32,
}

impl Default for GetAuditLogRequest {
    /// No filters, `limit` 100.
    fn default() -> Self {
        GetAuditLogRequest {
            category: None,
            agent_id: None,
            since_id: None,
            limit: DEFAULT_AUDIT_LIMIT,
        }
    }
}

impl GetAuditLogRequest {
    /// The category filter: `Ok(None)` when `category` is absent or empty, the parsed
    /// category, or an error naming the unknown name and the valid ones.
    pub fn category_filter(&self) -> Result<Option<AuditCategory>, UnknownAuditCategory> {
        match self.category.as_deref() {
            None | Some("") => Ok(None),
            Some(name) => AuditCategory::parse(name)
                .map(Some)
                .ok_or_else(|| UnknownAuditCategory(name.to_owned())),
        }
    }
}

/// GET_AUDIT_LOG reply: `{success, count, entries}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct GetAuditLogReply {
    /// The request was carried out.
    pub success: bool,
    /// `entries.len()`.
    pub count: u64,
    /// The matching entries, oldest first.
    pub entries: Vec<AuditEntry>,
}

/// One audit log entry:
/// `{id, timestamp, category, event_type, agent_id, agent_name?, success, details}`, plus our
/// `hash` and `decided_by` (the stored form is [`crate::auditlog::LogEntry`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct AuditEntry {
    /// The entry's id; ids grow by one per entry, from 1.
    pub id: u64,
    /// When it was logged, ISO-8601 in UTC (`2025-01-31T12:00:00.123Z`).
    pub timestamp: String,
    /// What it is about.
    pub category: AuditCategory,
    /// The event, upper-case by convention (`AGENT_SPAWNED`, `PERMISSION_DENIED`, ...).
    pub event_type: String,
    /// The agent it is about (0: the kernel itself).
    pub agent_id: u32,
    /// That agent's name, when it has one.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub agent_name: Option<String>,
    /// The audited action succeeded (false: it was denied or failed).
    pub success: bool,
    /// Event-specific details, any JSON value (usually an object).
    pub details: Json,
    /// Extension: the entry's link in the hash chain, lower-case hex; it covers the previous
    /// entry's hash and this entry's fields, so altering or removing an entry breaks the chain.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub hash: Option<String>,
    /// Extension: who decided the audited action: `kernel` (an automatic decision),
    /// `operator:<uid>` or `agent:<id>`.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub decided_by: Option<String>,
}

/// SET_AUDIT_CONFIG `{max_entries?, log_syscalls?, ...}`: change what is logged. Absent fields
/// keep their current value (see [`AuditConfig::apply`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct SetAuditConfigRequest {
    /// Entries kept in memory; the oldest are dropped beyond it.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub max_entries: Option<u64>,
    /// Log every syscall (`SYSCALL`).
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub log_syscalls: Option<bool>,
    /// Log `SECURITY` events.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub log_security: Option<bool>,
    /// Log `AGENT_LIFECYCLE` events.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub log_lifecycle: Option<bool>,
    /// Log `IPC` events.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub log_ipc: Option<bool>,
    /// Log `STATE_STORE` events.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub log_state: Option<bool>,
    /// Log `RESOURCE` events.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub log_resource: Option<bool>,
    /// Log `NETWORK` events.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub log_network: Option<bool>,
    /// Log `WORLD` events.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub log_world: Option<bool>,
}

/// SET_AUDIT_CONFIG reply: `{success, config}` (the configuration now in force).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct SetAuditConfigReply {
    /// The configuration was changed.
    pub success: bool,
    /// The whole configuration after the change.
    pub config: AuditConfig,
}

/// `max_entries` default: 10000 entries kept.
pub const DEFAULT_AUDIT_MAX_ENTRIES: u64 = 10_000;

/// The audit configuration. Missing fields of a received one take the defaults: 10000
/// entries, every category logged except `SYSCALL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[serde(default)]
pub struct AuditConfig {
    /// Entries kept in memory; the oldest are dropped beyond it (default 10000).
    pub max_entries: u64,
    /// Log every syscall, `SYSCALL` (default false: it is noisy).
    pub log_syscalls: bool,
    /// Log `SECURITY` events (default true).
    pub log_security: bool,
    /// Log `AGENT_LIFECYCLE` events (default true).
    pub log_lifecycle: bool,
    /// Log `IPC` events (default true).
    pub log_ipc: bool,
    /// Log `STATE_STORE` events (default true).
    pub log_state: bool,
    /// Log `RESOURCE` events (default true).
    pub log_resource: bool,
    /// Log `NETWORK` events (default true).
    pub log_network: bool,
    /// Log `WORLD` events (default true).
    pub log_world: bool,
}

impl Default for AuditConfig {
    /// 10000 entries, every category logged except `SYSCALL`.
    fn default() -> Self {
        AuditConfig {
            max_entries: DEFAULT_AUDIT_MAX_ENTRIES,
            log_syscalls: false,
            log_security: true,
            log_lifecycle: true,
            log_ipc: true,
            log_state: true,
            log_resource: true,
            log_network: true,
            log_world: true,
        }
    }
}

impl AuditConfig {
    /// Sets every field the request gives; the others keep their value.
    pub fn apply(&mut self, req: &SetAuditConfigRequest) {
        fn set<T: Copy>(field: &mut T, value: Option<T>) {
            if let Some(v) = value {
                *field = v;
            }
        }
        set(&mut self.max_entries, req.max_entries);
        set(&mut self.log_syscalls, req.log_syscalls);
        set(&mut self.log_security, req.log_security);
        set(&mut self.log_lifecycle, req.log_lifecycle);
        set(&mut self.log_ipc, req.log_ipc);
        set(&mut self.log_state, req.log_state);
        set(&mut self.log_resource, req.log_resource);
        set(&mut self.log_network, req.log_network);
        set(&mut self.log_world, req.log_world);
    }

    /// Whether entries of `category` are logged.
    pub const fn logs(&self, category: AuditCategory) -> bool {
        match category {
            AuditCategory::Security => self.log_security,
            AuditCategory::AgentLifecycle => self.log_lifecycle,
            AuditCategory::Ipc => self.log_ipc,
            AuditCategory::StateStore => self.log_state,
            AuditCategory::Resource => self.log_resource,
            AuditCategory::Syscall => self.log_syscalls,
            AuditCategory::Network => self.log_network,
            AuditCategory::World => self.log_world,
        }
    }
}

syscall! {
    GetAuditLogRequest => GetAuditLog, GetAuditLogReply;
    SetAuditConfigRequest => SetAuditConfig, SetAuditConfigReply;
}
