//! The syscalls agents cooperate through (messages, events, shared state) as typed methods of
//! both clients, written once in [`coop_methods!`] like the lifecycle ones in `agents.rs`.

use std::time::Duration;

use clove_abi::msg::{AgentRef, RecvRequest, SendBatchRequest, SendRequest};
use clove_abi::Json;

use crate::agents::{millis, target as recipient};

/// A wait as whole milliseconds for the wire (`None`: answer at once).
pub(crate) fn wait_ms(wait: Option<Duration>) -> Option<u64> {
    wait.map(millis)
}

/// SEND of `message` to `to`, waiting up to `wait` for room in a full mailbox.
pub(crate) fn send(
    to: AgentRef<'_>,
    message: serde_json::Value,
    wait: Option<Duration>,
) -> SendRequest {
    let (to, to_name) = recipient(to);
    SendRequest {
        to,
        to_name,
        message: Json(message),
        timeout_ms: wait_ms(wait),
    }
}

/// SEND_BATCH of `messages` to `to`.
pub(crate) fn send_batch(
    to: AgentRef<'_>,
    messages: Vec<serde_json::Value>,
    wait: Option<Duration>,
) -> SendBatchRequest {
    let (to, to_name) = recipient(to);
    SendBatchRequest {
        to,
        to_name,
        messages: messages.into_iter().map(Json).collect(),
        timeout_ms: wait_ms(wait),
    }
}

/// RECV of up to `max` messages, waiting up to `wait` for the first.
pub(crate) fn recv(max: u32, wait: Option<Duration>) -> RecvRequest {
    RecvRequest {
        max,
        wait_ms: wait_ms(wait),
    }
}

/// The messages, events and state methods, for a client type with a `call` method (see
/// `agent_methods!` for how it is invoked).
macro_rules! coop_methods {
    ($($async_kw:ident)?; $($await:tt)*) => {
        /// REGISTER: others can SEND to this connection (or agent) by `name` from now on.
        pub $($async_kw)? fn register(
            &mut self,
            name: &str,
        ) -> Result<$crate::msg::RegisterReply, $crate::Error> {
            self.call(&$crate::msg::RegisterRequest { name: name.to_owned() })$($await)*
        }

        /// SEND: puts `message` in `to`'s mailbox (an agent by id, spawn name or registered
        /// name). A full mailbox fails with `limit_exceeded`, or is waited on up to `wait`.
        pub $($async_kw)? fn send_message(
            &mut self,
            to: $crate::msg::AgentRef<'_>,
            message: serde_json::Value,
            wait: Option<std::time::Duration>,
        ) -> Result<$crate::msg::SendReply, $crate::Error> {
            self.call(&$crate::coop::send(to, message, wait))$($await)*
        }

        /// SEND_BATCH: puts all of `messages` in `to`'s mailbox, in order, in one round trip
        /// (all or none).
        pub $($async_kw)? fn send_batch(
            &mut self,
            to: $crate::msg::AgentRef<'_>,
            messages: Vec<serde_json::Value>,
            wait: Option<std::time::Duration>,
        ) -> Result<$crate::msg::SendBatchReply, $crate::Error> {
            self.call(&$crate::coop::send_batch(to, messages, wait))$($await)*
        }

        /// RECV: up to `max` messages from this caller's mailbox, oldest first; when it is
        /// empty, waits up to `wait` for one. A blocking client's read timeout must outlast
        /// `wait`.
        pub $($async_kw)? fn recv_messages(
            &mut self,
            max: u32,
            wait: Option<std::time::Duration>,
        ) -> Result<$crate::msg::RecvReply, $crate::Error> {
            self.call(&$crate::coop::recv(max, wait))$($await)*
        }

        /// BROADCAST: `message` to every live agent and listening connection.
        pub $($async_kw)? fn broadcast(
            &mut self,
            message: serde_json::Value,
            include_self: bool,
        ) -> Result<$crate::msg::BroadcastReply, $crate::Error> {
            let req = $crate::msg::BroadcastRequest {
                message: $crate::Json(message),
                include_self,
            };
            self.call(&req)$($await)*
        }

        /// SUBSCRIBE: to event types (`AGENT_EXITED`, ..., `CUSTOM`, or custom names).
        pub $($async_kw)? fn subscribe(
            &mut self,
            event_types: &[&str],
        ) -> Result<$crate::msg::SubscribeReply, $crate::Error> {
            let req = $crate::msg::SubscribeRequest {
                event_types: Some(event_types.iter().map(|s| (*s).to_owned()).collect()),
                ..Default::default()
            };
            self.call(&req)$($await)*
        }

        /// UNSUBSCRIBE: from `event_types`, or from everything when it is empty.
        pub $($async_kw)? fn unsubscribe(
            &mut self,
            event_types: &[&str],
        ) -> Result<$crate::msg::UnsubscribeReply, $crate::Error> {
            let req = $crate::msg::UnsubscribeRequest {
                event_types: (!event_types.is_empty())
                    .then(|| event_types.iter().map(|s| (*s).to_owned()).collect()),
                all: event_types.is_empty(),
                ..Default::default()
            };
            self.call(&req)$($await)*
        }

        /// POLL_EVENTS: up to `max` of this caller's events; when none is queued, waits up to
        /// `wait` for one. `dropped` counts events lost to a full queue since the last poll.
        pub $($async_kw)? fn poll_events(
            &mut self,
            max: u32,
            wait: Option<std::time::Duration>,
        ) -> Result<$crate::msg::PollEventsReply, $crate::Error> {
            let req = $crate::msg::PollEventsRequest {
                max,
                wait_ms: $crate::coop::wait_ms(wait),
            };
            self.call(&req)$($await)*
        }

        /// EMIT: publishes an event of a custom type (or `CUSTOM`) with `data`.
        pub $($async_kw)? fn emit(
            &mut self,
            event_type: &str,
            data: serde_json::Value,
        ) -> Result<$crate::msg::EmitReply, $crate::Error> {
            let req = $crate::msg::EmitRequest {
                event_type: Some(event_type.to_owned()),
                event: None,
                data: $crate::Json(data),
            };
            self.call(&req)$($await)*
        }

        /// STORE: sets a key (scope, TTL and compare-and-set `if_version` in `req`). The write
        /// is durable when this returns.
        pub $($async_kw)? fn store(
            &mut self,
            req: &$crate::msg::StoreRequest,
        ) -> Result<$crate::msg::StoreReply, $crate::Error> {
            self.call(req)$($await)*
        }

        /// FETCH: a key's value and version (the plain key, then this caller's agent-scoped
        /// one); `exists` is false when there is none.
        pub $($async_kw)? fn fetch(
            &mut self,
            key: &str,
        ) -> Result<$crate::msg::FetchReply, $crate::Error> {
            self.call(&$crate::msg::FetchRequest { key: key.to_owned() })$($await)*
        }

        /// DELETE: removes a key; `deleted` says whether it existed.
        pub $($async_kw)? fn delete(
            &mut self,
            key: &str,
        ) -> Result<$crate::msg::DeleteReply, $crate::Error> {
            self.call(&$crate::msg::DeleteRequest { key: key.to_owned() })$($await)*
        }

        /// KEYS: the keys this caller can see starting with `prefix`, sorted.
        pub $($async_kw)? fn keys(
            &mut self,
            prefix: Option<&str>,
        ) -> Result<$crate::msg::KeysReply, $crate::Error> {
            let req = $crate::msg::KeysRequest { prefix: prefix.map(str::to_owned) };
            self.call(&req)$($await)*
        }
    };
}
pub(crate) use coop_methods;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn requests_name_the_recipient_once_and_waits_in_ms() {
        let s = send(
            AgentRef::Name("sink"),
            json!(1),
            Some(Duration::from_millis(1500)),
        );
        assert_eq!(
            (s.to, s.to_name.as_deref(), s.timeout_ms),
            (None, Some("sink"), Some(1500))
        );
        let b = send_batch(AgentRef::Id(4), vec![json!(1), json!(2)], None);
        assert_eq!(
            (b.to, b.to_name, b.messages.len(), b.timeout_ms),
            (Some(4), None, 2, None)
        );
        assert_eq!(recv(10, Some(Duration::from_micros(1))).wait_ms, Some(1));
    }
}
