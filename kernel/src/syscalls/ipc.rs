//! REGISTER, SEND, SEND_BATCH, RECV, BROADCAST: thin handlers over [`crate::ipc`].
//!
//! Recipients are resolved here, where both the mailboxes and the agents table are in reach:
//! an id must be a live agent or an open operator connection; a name is a live agent's spawn
//! name (agents are reachable by name without registering), else a registered one. The two
//! kinds of names share one namespace: REGISTER refuses a live agent's name, SPAWN a
//! registered one.

use std::sync::Arc;
use std::time::Duration;

use clove_abi::codec::Json;
use clove_abi::msg::{
    AgentRef, BroadcastReply, BroadcastRequest, EventType, RecvReply, RecvRequest, RegisterReply,
    RegisterRequest, SendBatchReply, SendBatchRequest, SendReply, SendRequest,
};
use clove_abi::{ErrorCode, WireError};

use crate::events::Audience;
use crate::ipc::Sender;
use crate::kernel::{Caller, Kernel};

/// The longest a request may ask to wait (RECV, a SEND to a full mailbox).
pub const MAX_WAIT: Duration = Duration::from_secs(24 * 3600);

/// A wait in ms from a request: absent or 0 is no wait.
pub fn wait_of(ms: Option<u64>) -> Option<Duration> {
    ms.filter(|ms| *ms > 0)
        .map(|ms| Duration::from_millis(ms).min(MAX_WAIT))
}

/// The id a SEND goes to.
fn recipient(kernel: &Kernel, to: Option<AgentRef<'_>>) -> Result<u32, WireError> {
    match to {
        None => Err(WireError::invalid_request(
            "give the recipient: to or to_name",
        )),
        Some(AgentRef::Id(id)) => {
            if kernel.agents.get(id).is_some() || kernel.ipc.is_operator(id) {
                Ok(id)
            } else {
                Err(WireError::new(
                    ErrorCode::NotFound,
                    format!("no live agent or open connection has id {id}"),
                ))
            }
        }
        // A live agent's spawn name first: SPAWN refuses a registered name and REGISTER an
        // agent's, but should both ever race, the agent keeps its name.
        Some(AgentRef::Name(name)) => kernel
            .agents
            .find(AgentRef::Name(name))
            .ok()
            .map(|a| a.id)
            .or_else(|| kernel.ipc.registered(name))
            .ok_or_else(|| {
                WireError::new(
                    ErrorCode::NotFound,
                    format!("nobody is named {name:?}: no registered name, no live agent"),
                )
            }),
    }
}

/// Whether an id is a live agent, for [`crate::ipc::Ipc::send`]'s check at delivery.
fn live_agent(kernel: &Kernel) -> impl Fn(u32) -> bool + Send + Sync + '_ {
    |id| kernel.agents.get(id).is_some()
}

/// The caller as a message sender: its first registered name, else its agent name.
fn sender(kernel: &Kernel, caller: &Caller) -> Sender {
    let name = kernel
        .ipc
        .first_name(caller.id)
        .or_else(|| {
            caller
                .agent
                .then(|| kernel.agents.get(caller.id).map(|a| a.name.clone()))
                .flatten()
        })
        .unwrap_or_default();
    Sender {
        id: caller.id,
        name: Arc::from(name),
    }
}

/// Tells the recipient, if it subscribed to MESSAGE_RECEIVED.
fn announce(kernel: &Kernel, from: &Sender, to: u32, count: usize) {
    let audience = Audience::Only(to);
    if kernel.events.wanted(EventType::MessageReceived, audience) {
        kernel.events.kernel(
            EventType::MessageReceived,
            serde_json::json!({"from": from.id, "from_name": &*from.name, "count": count}),
            from.id,
            audience,
        );
    }
}

/// REGISTER.
pub fn register(
    kernel: &Kernel,
    caller: &Caller,
    req: RegisterRequest,
) -> Result<RegisterReply, WireError> {
    // An agent's spawn name already reaches it; someone else may not take it.
    if let Ok(agent) = kernel.agents.find(AgentRef::Name(&req.name)) {
        if agent.id != caller.id {
            return Err(WireError::new(
                ErrorCode::AlreadyExists,
                format!("name {:?} belongs to live agent {}", req.name, agent.id),
            ));
        }
    }
    kernel.ipc.register(caller.id, &req.name)?;
    Ok(RegisterReply {
        success: true,
        agent_id: caller.id,
        name: req.name,
    })
}

/// Audits a message (IPC): who to whom, how many and how big; never the contents.
fn audit_sent(
    kernel: &Kernel,
    caller: &Caller,
    event_type: &str,
    to: serde_json::Value,
    count: usize,
    bytes: usize,
    r: Result<(), &WireError>,
) {
    if !kernel.audit.logs(clove_abi::msg::AuditCategory::Ipc) {
        return;
    }
    let mut details = serde_json::json!({"to": to, "count": count, "bytes": bytes});
    if let Err(e) = r {
        details["code"] = serde_json::json!(e.code);
    }
    kernel.audit.record(
        crate::audit::for_caller(
            kernel,
            caller,
            clove_abi::msg::AuditCategory::Ipc,
            event_type,
        )
        .success(r.is_ok())
        .details(details),
    );
}

/// The recipient a request names, for the audit.
fn named(to: Option<AgentRef<'_>>) -> serde_json::Value {
    match to {
        Some(AgentRef::Id(id)) => serde_json::json!(id),
        Some(AgentRef::Name(name)) => serde_json::json!(name),
        None => serde_json::Value::Null,
    }
}

/// SEND: one message; `payload_len` is what it is charged against the mailbox's byte bound.
/// Audited (IPC, `MESSAGE_SENT`).
pub async fn send(
    kernel: &Kernel,
    caller: &Caller,
    req: SendRequest,
    payload_len: usize,
) -> Result<SendReply, WireError> {
    let to = named(req.target());
    let r = send_unaudited(kernel, caller, req, payload_len).await;
    let to = r
        .as_ref()
        .map_or(to, |ok| serde_json::json!(ok.delivered_to));
    audit_sent(
        kernel,
        caller,
        "MESSAGE_SENT",
        to,
        1,
        payload_len,
        r.as_ref().map(drop),
    );
    r
}

async fn send_unaudited(
    kernel: &Kernel,
    caller: &Caller,
    req: SendRequest,
    payload_len: usize,
) -> Result<SendReply, WireError> {
    let to = recipient(kernel, req.target())?;
    let from = sender(kernel, caller);
    kernel
        .ipc
        .send(
            &from,
            to,
            vec![req.message],
            payload_len,
            wait_of(req.timeout_ms),
            &live_agent(kernel),
        )
        .await?;
    announce(kernel, &from, to, 1);
    Ok(SendReply {
        success: true,
        delivered_to: to,
    })
}

/// SEND_BATCH: several messages, all or none, in order. Audited (IPC, `MESSAGE_SENT`).
pub async fn send_batch(
    kernel: &Kernel,
    caller: &Caller,
    req: SendBatchRequest,
    payload_len: usize,
) -> Result<SendBatchReply, WireError> {
    let (to, count) = (named(req.target()), req.messages.len());
    let r = send_batch_unaudited(kernel, caller, req, payload_len).await;
    let to = r
        .as_ref()
        .map_or(to, |ok| serde_json::json!(ok.delivered_to));
    audit_sent(
        kernel,
        caller,
        "MESSAGE_SENT",
        to,
        count,
        payload_len,
        r.as_ref().map(drop),
    );
    r
}

async fn send_batch_unaudited(
    kernel: &Kernel,
    caller: &Caller,
    req: SendBatchRequest,
    payload_len: usize,
) -> Result<SendBatchReply, WireError> {
    let to = recipient(kernel, req.target())?;
    if req.messages.is_empty() {
        return Err(WireError::invalid_request("messages: give at least one"));
    }
    let from = sender(kernel, caller);
    let n = kernel
        .ipc
        .send(
            &from,
            to,
            req.messages,
            payload_len,
            wait_of(req.timeout_ms),
            &live_agent(kernel),
        )
        .await?;
    announce(kernel, &from, to, n);
    Ok(SendBatchReply {
        success: true,
        delivered_to: to,
        delivered: u32::try_from(n).unwrap_or(u32::MAX),
    })
}

/// RECV: the caller's messages, waiting up to `wait_ms` for the first (ends early when the
/// kernel shuts down).
pub async fn recv(
    kernel: &Kernel,
    caller: &Caller,
    req: RecvRequest,
) -> Result<RecvReply, WireError> {
    let max = usize::try_from(req.max).unwrap_or(usize::MAX);
    let messages = tokio::select! {
        biased;
        m = kernel.ipc.recv(caller.id, max, wait_of(req.wait_ms)) => m,
        () = kernel.stopping.cancelled() => Vec::new(),
    };
    Ok(RecvReply {
        success: true,
        count: u32::try_from(messages.len()).unwrap_or(u32::MAX),
        messages,
    })
}

/// BROADCAST: to every live agent and every open operator connection.
pub async fn broadcast(
    kernel: &Kernel,
    caller: &Caller,
    req: BroadcastRequest,
    payload_len: usize,
) -> Result<BroadcastReply, WireError> {
    let from = sender(kernel, caller);
    let mut targets: Vec<u32> = kernel.agents.live().iter().map(|a| a.id).collect();
    targets.extend(kernel.ipc.operators());
    targets.sort_unstable();
    targets.dedup();
    let mut delivered = 0u32;
    for to in targets {
        if to == caller.id && !req.include_self {
            continue;
        }
        // A full mailbox misses the broadcast rather than stalling it for everyone.
        let message = vec![Json(req.message.0.clone())];
        if kernel
            .ipc
            .send(&from, to, message, payload_len, None, &live_agent(kernel))
            .await
            .is_ok()
        {
            announce(kernel, &from, to, 1);
            delivered += 1;
        }
    }
    audit_sent(
        kernel,
        caller,
        "MESSAGE_BROADCAST",
        serde_json::json!({"delivered": delivered}),
        1,
        payload_len,
        Ok(()),
    );
    Ok(BroadcastReply {
        success: true,
        delivered_count: delivered,
    })
}
