//! SEND, RECV, BROADCAST, REGISTER: messages between agents.
//!
//! A message body is any JSON value ([`Json`]). Mailboxes belong to agent ids; a name is
//! registered with REGISTER (or given at SPAWN) so others can SEND `{to_name}`.

use serde::{Deserialize, Serialize};

use crate::codec::Json;
use crate::msg::lifecycle::AgentRef;
use crate::msg::syscall;

/// SEND `{to?, to_name?, message}`: put a message in one agent's mailbox.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct SendRequest {
    /// The recipient's id; wins over `to_name`.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub to: Option<u32>,
    /// The recipient's registered name.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub to_name: Option<String>,
    /// The message body, any JSON value (required).
    pub message: Json,
    /// Extension: when the recipient's mailbox is full, wait up to this many ms for room
    /// (absent or 0: fail at once with `limit_exceeded`).
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub timeout_ms: Option<u64>,
}

impl SendRequest {
    /// The recipient: `to`, else `to_name`; `None` when neither is given.
    pub fn target(&self) -> Option<AgentRef<'_>> {
        AgentRef::pick(self.to, self.to_name.as_deref())
    }
}

/// SEND reply: `{success, delivered_to}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct SendReply {
    /// The message is in the recipient's mailbox.
    pub success: bool,
    /// The recipient's id.
    pub delivered_to: u32,
}

/// SEND_BATCH (ours) `{to?, to_name?, messages, timeout_ms?}`: put several messages in one
/// agent's mailbox, in order, all or none. One round trip instead of one per message, for
/// high-rate pipelines.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct SendBatchRequest {
    /// The recipient's id; wins over `to_name`.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub to: Option<u32>,
    /// The recipient's registered or spawn name.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub to_name: Option<String>,
    /// The message bodies, any JSON values, delivered in this order (required).
    pub messages: Vec<Json>,
    /// When the mailbox lacks room for the whole batch, wait up to this many ms for it.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub timeout_ms: Option<u64>,
}

impl SendBatchRequest {
    /// The recipient: `to`, else `to_name`; `None` when neither is given.
    pub fn target(&self) -> Option<AgentRef<'_>> {
        AgentRef::pick(self.to, self.to_name.as_deref())
    }
}

/// SEND_BATCH reply: `{success, delivered_to, delivered}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct SendBatchReply {
    /// The messages are in the recipient's mailbox.
    pub success: bool,
    /// The recipient's id.
    pub delivered_to: u32,
    /// How many messages were delivered (all of them).
    pub delivered: u32,
}

/// RECV `max` default: 10 messages.
pub const DEFAULT_RECV_MAX: u32 = 10;

fn default_recv_max() -> u32 {
    DEFAULT_RECV_MAX
}

/// RECV `{max}`: take messages from the caller's mailbox, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct RecvRequest {
    /// At most this many messages (default 10).
    #[serde(default = "default_recv_max")]
    pub max: u32,
    /// Extension: when the mailbox is empty, wait up to this many ms for a message (absent or
    /// 0: answer at once, as the original).
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub wait_ms: Option<u64>,
}

impl Default for RecvRequest {
    /// `max` 10, no wait.
    fn default() -> Self {
        RecvRequest {
            max: DEFAULT_RECV_MAX,
            wait_ms: None,
        }
    }
}

/// RECV reply: `{success, messages, count}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct RecvReply {
    /// Always true (an empty mailbox is not an error).
    pub success: bool,
    /// The messages taken, oldest first.
    pub messages: Vec<IpcMessage>,
    /// `messages.len()`.
    pub count: u32,
}

/// A received message: `{from, from_name, message, age_ms}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct IpcMessage {
    /// The sender's id.
    pub from: u32,
    /// The sender's name (empty when it has none).
    pub from_name: String,
    /// The body as sent.
    pub message: Json,
    /// ms the message waited in the mailbox.
    pub age_ms: u64,
}

/// BROADCAST `{message, include_self}`: send to every other agent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct BroadcastRequest {
    /// The message body, any JSON value (required).
    pub message: Json,
    /// Deliver to the sender too (default false).
    #[serde(default)]
    pub include_self: bool,
}

/// BROADCAST reply: `{success, delivered_count}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct BroadcastReply {
    /// The broadcast was carried out (even to nobody).
    pub success: bool,
    /// How many mailboxes received it.
    pub delivered_count: u32,
}

/// REGISTER `{name}`: give the caller a name others can SEND to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct RegisterRequest {
    /// The name (required).
    pub name: String,
}

/// REGISTER reply: `{success, agent_id, name}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct RegisterReply {
    /// The name is now the caller's.
    pub success: bool,
    /// The caller's id.
    pub agent_id: u32,
    /// The registered name.
    pub name: String,
}

syscall! {
    SendRequest => Send, SendReply;
    SendBatchRequest => SendBatch, SendBatchReply;
    RecvRequest => Recv, RecvReply;
    BroadcastRequest => Broadcast, BroadcastReply;
    RegisterRequest => Register, RegisterReply;
}
