//! Supervisor groups (extensions, opcodes 0xD3–0xD5): GROUP_CREATE, GROUP_LIST, GROUP_STOP.
//!
//! A group supervises its children (agents that SPAWN into it with `group`, and child groups)
//! the way an Erlang/OTP supervisor does: a `strategy` says which children restart when one
//! fails, an `intensity` within a `period` bounds the restarts, and a group that exceeds it
//! stops its children in reverse start order and escalates to its parent group. The original
//! had no groups; see docs/supervision.md.

use serde::{Deserialize, Serialize};

use crate::msg::syscall;

/// Which children restart when one of them has to (OTP's restart strategies).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub enum GroupStrategy {
    /// `"one_for_one"` (the default): only the child that failed.
    #[default]
    #[serde(rename = "one_for_one", alias = "one-for-one")]
    OneForOne,
    /// `"one_for_all"`: every child (the others are stopped in reverse start order first).
    #[serde(rename = "one_for_all", alias = "one-for-all")]
    OneForAll,
    /// `"rest_for_one"`: the failed child and the children started after it.
    #[serde(rename = "rest_for_one", alias = "rest-for-one")]
    RestForOne,
}

impl GroupStrategy {
    /// The wire spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            GroupStrategy::OneForOne => "one_for_one",
            GroupStrategy::OneForAll => "one_for_all",
            GroupStrategy::RestForOne => "rest_for_one",
        }
    }
}

/// `intensity` default: one restart...
pub const DEFAULT_INTENSITY: u32 = 1;
/// ...within `period` seconds (OTP's defaults).
pub const DEFAULT_PERIOD: f64 = 5.0;

fn default_intensity() -> u32 {
    DEFAULT_INTENSITY
}

fn default_period() -> f64 {
    DEFAULT_PERIOD
}

/// GROUP_CREATE `{name, strategy?, intensity?, period?, parent?, shutdown_ms?}` (0xD3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct GroupCreateRequest {
    /// The group's name (unique among groups).
    pub name: String,
    /// Default `one_for_one`.
    #[serde(default)]
    pub strategy: GroupStrategy,
    /// Most restarts within `period` (default 1); one more makes the group give up and
    /// escalate.
    #[serde(default = "default_intensity")]
    pub intensity: u32,
    /// Seconds (default 5).
    #[serde(default = "default_period")]
    pub period: f64,
    /// The group it nests in: it is one of that group's children, started after the
    /// children the parent has so far.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub parent: Option<String>,
    /// How long a child gets between SIGTERM and SIGKILL when the group stops it (a child's
    /// own `grace_ms` wins); absent: the kernel's `kill_grace`.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub shutdown_ms: Option<u64>,
}

impl GroupCreateRequest {
    /// A request with every default.
    pub fn new(name: impl Into<String>) -> GroupCreateRequest {
        GroupCreateRequest {
            name: name.into(),
            strategy: GroupStrategy::OneForOne,
            intensity: DEFAULT_INTENSITY,
            period: DEFAULT_PERIOD,
            parent: None,
            shutdown_ms: None,
        }
    }
}

/// One child of a group, in start order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct GroupChild {
    /// `"agent"` or `"group"`.
    pub kind: String,
    /// The agent's id (agents only).
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub id: Option<u32>,
    /// The agent's or the group's name.
    pub name: String,
    /// `running`, `stopping` (the group stops it), `waiting` (stopped, to be restarted),
    /// `starting` (being restarted).
    pub state: String,
}

/// A group as GROUP_CREATE and GROUP_LIST report it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct GroupInfo {
    /// Its name.
    pub name: String,
    /// Its strategy.
    pub strategy: GroupStrategy,
    /// Most restarts within `period`.
    pub intensity: u32,
    /// Seconds.
    pub period: f64,
    /// Its parent group.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub parent: Option<String>,
    /// SIGTERM → SIGKILL time for its children, in ms.
    pub shutdown_ms: u64,
    /// `running`, `restarting` (carrying out a restart), `waiting` (it escalated, or its
    /// parent stopped it, and waits for its parent's decision), `stopping`.
    pub state: String,
    /// Restarts it carried out so far (each restart of a set of children counts once).
    pub restarts: u32,
    /// Its children in start order.
    pub children: Vec<GroupChild>,
}

/// GROUP_CREATE reply: `{success, group}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct GroupCreateReply {
    /// The group exists now.
    pub success: bool,
    /// The new group.
    pub group: GroupInfo,
}

/// GROUP_LIST `{name?}` (0xD4): every group, or the one named.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct GroupListRequest {
    /// Only this group.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub name: Option<String>,
}

/// GROUP_LIST reply: `{success, groups}`, in creation order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct GroupListReply {
    /// Always true (an unknown `name` is a `not_found` error).
    pub success: bool,
    /// The groups.
    pub groups: Vec<GroupInfo>,
}

/// GROUP_STOP `{name}` (0xD5): stops the group's tree for good (children in reverse start
/// order, each with its shutdown time; child groups likewise) and removes the group.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct GroupStopRequest {
    /// The group.
    pub name: String,
}

/// GROUP_STOP reply: `{success, name, stopped}` once the whole tree is down.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct GroupStopReply {
    /// The tree is down.
    pub success: bool,
    /// The group.
    pub name: String,
    /// Ids of the agents stopped, in the order they were stopped.
    pub stopped: Vec<u32>,
}

syscall! {
    GroupCreateRequest => GroupCreate, GroupCreateReply;
    GroupListRequest => GroupList, GroupListReply;
    GroupStopRequest => GroupStop, GroupStopReply;
}
