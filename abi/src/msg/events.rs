//! SUBSCRIBE, UNSUBSCRIBE, POLL_EVENTS, EMIT: the event bus.
//!
//! An agent subscribes to event types, then pulls the events published since with POLL_EVENTS
//! (the server never pushes). The kernel publishes the [`EventType`]s about agents; EMIT
//! publishes one from an agent.
//!
//! Requests carry event types as plain strings, so an unknown name reaches the kernel, which
//! answers with an error naming it (via [`EventType::parse`]) instead of a decode failure.

use serde::{Deserialize, Serialize};

use crate::codec::Json;
use crate::msg::syscall;

/// An event's type, SCREAMING_SNAKE on the wire (`AGENT_SPAWNED`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventType {
    /// `AGENT_SPAWNED`: an agent was started.
    AgentSpawned,
    /// `AGENT_EXITED`: an agent's process ended (any exit, with the reason).
    AgentExited,
    /// `AGENT_PAUSED`: an agent was frozen.
    AgentPaused,
    /// `AGENT_RESUMED`: an agent was thawed.
    AgentResumed,
    /// `AGENT_RESTARTING`: an agent is being restarted by its policy; data
    /// `{agent_name, restart_count, exit_code}`.
    AgentRestarting,
    /// `AGENT_ESCALATED`: an agent exceeded its restarts and was given up on.
    AgentEscalated,
    /// `MESSAGE_RECEIVED`: a message reached a mailbox.
    MessageReceived,
    /// `STATE_CHANGED`: a stored key changed.
    StateChanged,
    /// `SYSCALL_BLOCKED`: a request was refused by permissions.
    SyscallBlocked,
    /// `RESOURCE_WARNING`: an agent is close to a resource limit.
    ResourceWarning,
    /// `CUSTOM`: published by an agent with EMIT.
    Custom,
    /// Extension `GROUP_ESCALATED`: a supervisor group exceeded its intensity, stopped its
    /// children and escalated to its parent (or, at the top, gave up); data `{group, parent,
    /// restarts, intensity, period, gave_up}`.
    GroupEscalated,
}

impl EventType {
    /// Every event type: the original's, in its order, then ours.
    pub const ALL: [EventType; 12] = [
        EventType::AgentSpawned,
        EventType::AgentExited,
        EventType::AgentPaused,
        EventType::AgentResumed,
        EventType::AgentRestarting,
        EventType::AgentEscalated,
        EventType::MessageReceived,
        EventType::StateChanged,
        EventType::SyscallBlocked,
        EventType::ResourceWarning,
        EventType::Custom,
        EventType::GroupEscalated,
    ];

    /// The wire spelling: `AGENT_SPAWNED`, ..., `CUSTOM`.
    pub const fn as_str(self) -> &'static str {
        match self {
            EventType::AgentSpawned => "AGENT_SPAWNED",
            EventType::AgentExited => "AGENT_EXITED",
            EventType::AgentPaused => "AGENT_PAUSED",
            EventType::AgentResumed => "AGENT_RESUMED",
            EventType::AgentRestarting => "AGENT_RESTARTING",
            EventType::AgentEscalated => "AGENT_ESCALATED",
            EventType::MessageReceived => "MESSAGE_RECEIVED",
            EventType::StateChanged => "STATE_CHANGED",
            EventType::SyscallBlocked => "SYSCALL_BLOCKED",
            EventType::ResourceWarning => "RESOURCE_WARNING",
            EventType::Custom => "CUSTOM",
            EventType::GroupEscalated => "GROUP_ESCALATED",
        }
    }

    /// The event type with this wire spelling (exact, upper-case); `None` for anything else.
    pub fn parse(text: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == text)
    }
}

/// The names in `event_types`, then `events`, then `event`, each once, in that order.
fn merge<'a>(
    event_types: &'a Option<Vec<String>>,
    events: &'a Option<Vec<String>>,
    event: &'a Option<String>,
) -> Vec<&'a str> {
    let all = event_types
        .iter()
        .flatten()
        .chain(events.iter().flatten())
        .chain(event.iter());
    let mut merged: Vec<&str> = Vec::new();
    for name in all {
        if !merged.contains(&name.as_str()) {
            merged.push(name);
        }
    }
    merged
}

/// SUBSCRIBE `{event_types}`: receive events of these types from now on. The original also
/// accepted an `events` array or an `event` string; all three may be given and are merged.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct SubscribeRequest {
    /// Event type names (what the SDK sends).
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub event_types: Option<Vec<String>>,
    /// Event type names, the original's alternative spelling.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub events: Option<Vec<String>>,
    /// One event type name, the original's other alternative.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub event: Option<String>,
}

impl SubscribeRequest {
    /// The names asked for: `event_types`, then `events`, then `event`, without repeats
    /// (unchecked: [`EventType::parse`] each).
    pub fn event_types(&self) -> Vec<&str> {
        merge(&self.event_types, &self.events, &self.event)
    }
}

/// SUBSCRIBE reply: `{success, subscribed}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct SubscribeReply {
    /// The subscription is in place.
    pub success: bool,
    /// The event types now subscribed to by this request.
    pub subscribed: Vec<String>,
}

/// UNSUBSCRIBE `{event_types}` or `{all: true}`: stop receiving events of these types.
/// `events` and `event` are accepted as in SUBSCRIBE.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct UnsubscribeRequest {
    /// Event type names (what the SDK sends).
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub event_types: Option<Vec<String>>,
    /// Event type names, alternative spelling.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub events: Option<Vec<String>>,
    /// One event type name, alternative spelling.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub event: Option<String>,
    /// Drop every subscription (default false); the names are then not needed.
    #[serde(default)]
    pub all: bool,
}

impl UnsubscribeRequest {
    /// The names given: `event_types`, then `events`, then `event`, without repeats
    /// (unchecked: [`EventType::parse`] each).
    pub fn event_types(&self) -> Vec<&str> {
        merge(&self.event_types, &self.events, &self.event)
    }
}

/// UNSUBSCRIBE reply: `{success}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct UnsubscribeReply {
    /// The subscriptions are gone.
    pub success: bool,
    /// Extension: the event types the caller was subscribed to and no longer is.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub unsubscribed: Option<Vec<String>>,
}

/// POLL_EVENTS `max` default: 100 events.
pub const DEFAULT_POLL_MAX: u32 = 100;

fn default_poll_max() -> u32 {
    DEFAULT_POLL_MAX
}

/// POLL_EVENTS `{max}`: take the caller's pending events, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct PollEventsRequest {
    /// At most this many events (default 100).
    #[serde(default = "default_poll_max")]
    pub max: u32,
    /// Extension: when no event is pending, wait up to this many ms for one (absent or 0:
    /// answer at once, as the original).
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub wait_ms: Option<u64>,
}

impl Default for PollEventsRequest {
    /// `max` 100, no wait.
    fn default() -> Self {
        PollEventsRequest {
            max: DEFAULT_POLL_MAX,
            wait_ms: None,
        }
    }
}

/// POLL_EVENTS reply: `{success, events, count}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct PollEventsReply {
    /// Always true (no pending event is not an error).
    pub success: bool,
    /// The events taken, oldest first.
    pub events: Vec<Event>,
    /// `events.len()`.
    pub count: u64,
    /// Extension: events dropped since the previous poll because the caller's queue was full
    /// (the oldest go first); absent when none was.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub dropped: Option<u64>,
}

/// One event: `{type, data, source_agent_id, timestamp}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct Event {
    /// Its type's name (`AGENT_SPAWNED`, ..., `CUSTOM`; see [`EventType`]).
    #[serde(rename = "type")]
    pub event_type: String,
    /// Its data, any JSON value (`null` when it has none).
    pub data: Json,
    /// The agent it is about or that emitted it (0: the kernel itself).
    pub source_agent_id: u32,
    /// When it was published, in ms since the Unix epoch (UTC).
    pub timestamp: u64,
}

/// EMIT `{event_type, data}`: publish an event to its subscribers. The SDK sends
/// `event_type`, the original kernel read `event`; both are accepted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct EmitRequest {
    /// The event type's name (what the SDK sends); wins over `event`.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub event_type: Option<String>,
    /// The event type's name, as the original kernel read it.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub event: Option<String>,
    /// The event's data, any JSON value (default `null`).
    #[serde(default)]
    pub data: Json,
}

impl EmitRequest {
    /// The event type's name: `event_type`, else `event`; `None` when neither is given
    /// (unchecked: [`EventType::parse`] it).
    pub fn event_type(&self) -> Option<&str> {
        self.event_type.as_deref().or(self.event.as_deref())
    }
}

/// EMIT reply: `{success, event}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct EmitReply {
    /// The event was published.
    pub success: bool,
    /// The event type's name.
    pub event: String,
}

syscall! {
    SubscribeRequest => Subscribe, SubscribeReply;
    UnsubscribeRequest => Unsubscribe, UnsubscribeReply;
    PollEventsRequest => PollEvents, PollEventsReply;
    EmitRequest => Emit, EmitReply;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_type_names_round_trip() {
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(t));
            assert_eq!(serde_json::to_value(t).unwrap(), t.as_str());
        }
        assert_eq!(EventType::parse("agent_spawned"), None);
        assert_eq!(EventType::parse("NOPE"), None);
    }

    #[test]
    fn names_merge_in_order_without_repeats() {
        let s = SubscribeRequest {
            event_types: Some(vec!["A".into(), "B".into(), "A".into()]),
            events: Some(vec!["C".into(), "B".into()]),
            event: Some("D".into()),
        };
        assert_eq!(s.event_types(), ["A", "B", "C", "D"]);
        assert!(SubscribeRequest::default().event_types().is_empty());
        let u = UnsubscribeRequest {
            event: Some("X".into()),
            events: Some(vec!["X".into(), "Y".into()]),
            ..UnsubscribeRequest::default()
        };
        assert_eq!(u.event_types(), ["X", "Y"]);
    }

    #[test]
    fn emit_prefers_event_type() {
        let mut e = EmitRequest::default();
        assert_eq!(e.event_type(), None);
        e.event = Some("OLD".into());
        assert_eq!(e.event_type(), Some("OLD"));
        e.event_type = Some("NEW".into());
        assert_eq!(e.event_type(), Some("NEW"));
    }
}
