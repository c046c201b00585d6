//! Messages between callers: REGISTER, SEND (and our batch SEND), RECV, BROADCAST.
//!
//! * A mailbox belongs to an id: an agent's (shared by all its connections, kept for as long
//!   as the agent is, and by the supervision issue across its restarts) or an operator
//!   connection's (released when the connection closes, with its registered names).
//! * Who can be sent to: a live agent, or an open operator connection. The handler resolves a
//!   name (registered here first, then an agent's spawn name) to an id before calling
//!   [`Ipc::send`]; an unknown id or name is `not_found`.
//! * Mailboxes are bounded in messages and in bytes (a message is charged its request's
//!   payload size). SEND to a full mailbox fails with `limit_exceeded`, or waits up to its
//!   `timeout_ms` for room. A batch is delivered whole or not at all, in order.
//! * Every message carries the sender's id as the kernel established it, and its name.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clove_abi::codec::Json;
use clove_abi::msg::IpcMessage;
use clove_abi::{ErrorCode, WireError};
use tokio::sync::Notify;

use crate::sync::lock;

/// Mailbox bounds.
#[derive(Debug, Clone, Copy)]
pub struct MailboxLimits {
    /// Most messages waiting in one mailbox.
    pub messages: usize,
    /// Most bytes waiting in one mailbox.
    pub bytes: usize,
}

/// The longest registered name.
pub const MAX_NAME: usize = 128;

#[derive(Debug)]
struct Queued {
    from: u32,
    from_name: Arc<str>,
    message: Json,
    bytes: usize,
    at: Instant,
}

#[derive(Debug, Default)]
struct Mailbox {
    queue: VecDeque<Queued>,
    bytes: usize,
    /// Woken when a message arrives.
    arrived: Arc<Notify>,
    /// Woken when messages are taken (room for blocked senders).
    room: Arc<Notify>,
}

#[derive(Debug, Default)]
struct Inner {
    boxes: HashMap<u32, Mailbox>,
    /// Registered names → owner id.
    names: HashMap<String, u32>,
    /// Owner id → its registered names, in registration order.
    names_of: HashMap<u32, Vec<String>>,
    /// Open operator connections (they can receive).
    operators: HashSet<u32>,
}

/// The kernel's mailboxes and registered names.
#[derive(Debug)]
pub struct Ipc {
    inner: Mutex<Inner>,
    limits: MailboxLimits,
}

/// What one try at delivery did.
enum Delivery {
    /// The messages are in the mailbox.
    Done,
    /// No room: the error to give, and the signal that room was made.
    Full(WireError, Arc<Notify>),
}

/// A message's sender.
#[derive(Debug, Clone)]
pub struct Sender {
    /// Its id, as the kernel established it.
    pub id: u32,
    /// Its name: the first one it registered, else its agent name, else empty.
    pub name: Arc<str>,
}

/// Checks a name given to REGISTER.
pub fn check_name(name: &str) -> Result<(), WireError> {
    if name.is_empty() || name.len() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(WireError::invalid_request(format!(
            "name {name:?}: 1 to {MAX_NAME} bytes, no control characters"
        )));
    }
    Ok(())
}

impl Ipc {
    /// Mailboxes bounded by `limits`.
    pub fn new(limits: MailboxLimits) -> Ipc {
        Ipc {
            inner: Mutex::new(Inner::default()),
            limits: MailboxLimits {
                messages: limits.messages.max(1),
                bytes: limits.bytes.max(1),
            },
        }
    }

    /// An operator connection opened: it can be sent to.
    pub fn operator_opened(&self, id: u32) {
        lock(&self.inner).operators.insert(id);
    }

    /// An operator connection closed, or an agent is gone for good: its mailbox and names go.
    pub fn release(&self, id: u32) {
        let mut inner = lock(&self.inner);
        inner.operators.remove(&id);
        if let Some(b) = inner.boxes.remove(&id) {
            // Senders blocked on a full mailbox learn at once that it is gone.
            b.room.notify_waiters();
        }
        for name in inner.names_of.remove(&id).unwrap_or_default() {
            inner.names.remove(&name);
        }
    }

    /// Whether `id` is an open operator connection.
    pub fn is_operator(&self, id: u32) -> bool {
        lock(&self.inner).operators.contains(&id)
    }

    /// The id a registered name belongs to.
    pub fn registered(&self, name: &str) -> Option<u32> {
        lock(&self.inner).names.get(name).copied()
    }

    /// The first name `id` registered.
    pub fn first_name(&self, id: u32) -> Option<String> {
        lock(&self.inner)
            .names_of
            .get(&id)
            .and_then(|n| n.first().cloned())
    }

    /// REGISTER: `name` becomes `id`'s. A name held by another id is `already_exists`;
    /// registering a name one already holds is fine.
    pub fn register(&self, id: u32, name: &str) -> Result<(), WireError> {
        check_name(name)?;
        let mut inner = lock(&self.inner);
        match inner.names.get(name) {
            Some(owner) if *owner == id => Ok(()),
            Some(owner) => Err(WireError::new(
                ErrorCode::AlreadyExists,
                format!("name {name:?} is registered by {owner}"),
            )),
            None => {
                inner.names.insert(name.to_owned(), id);
                inner.names_of.entry(id).or_default().push(name.to_owned());
                Ok(())
            }
        }
    }

    /// SEND: puts `messages` (one, or a batch) in `to`'s mailbox, all or none, in order.
    /// `bytes` is what the batch is charged. When the mailbox has no room, waits up to `wait`
    /// for it (none: fail at once).
    ///
    /// `to` must be an open operator connection or an agent for which `live_agent` says yes.
    /// That is checked under the mailboxes' lock, right before delivery, so a message can
    /// never land in the mailbox of an agent that has just exited (its mailbox is released
    /// after it leaves the live table, under the same lock).
    pub async fn send(
        &self,
        from: &Sender,
        to: u32,
        messages: Vec<Json>,
        bytes: usize,
        wait: Option<Duration>,
        live_agent: &(dyn Fn(u32) -> bool + Send + Sync),
    ) -> Result<usize, WireError> {
        let n = messages.len();
        if n > self.limits.messages || bytes > self.limits.bytes {
            return Err(WireError::new(
                ErrorCode::LimitExceeded,
                format!(
                    "{n} messages of {bytes} bytes exceed the mailbox size ({} messages, {} bytes)",
                    self.limits.messages, self.limits.bytes
                ),
            ));
        }
        let deadline = wait.map(|w| tokio::time::Instant::now() + w);
        let mut messages = Some(messages);
        // The common case: one lock, room, delivered.
        let (mut full, room) = match self.deliver(from, to, &mut messages, bytes, live_agent)? {
            Delivery::Done => return Ok(n),
            Delivery::Full(full, room) => (full, room),
        };
        let Some(deadline) = deadline else {
            return Err(full);
        };
        loop {
            // Registered for a wake-up before trying again, so room made between that try and
            // the wait is not missed (`notify_waiters` only wakes registered waiters).
            let notified = room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.deliver(from, to, &mut messages, bytes, live_agent)? {
                Delivery::Done => return Ok(n),
                Delivery::Full(again, _) => full = again,
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(full);
            }
        }
    }

    /// One try at putting `messages` in `to`'s mailbox, under one lock: delivered (and
    /// `messages` taken), or full (with the error to give and the mailbox's "room" signal).
    fn deliver(
        &self,
        from: &Sender,
        to: u32,
        messages: &mut Option<Vec<Json>>,
        bytes: usize,
        live_agent: &(dyn Fn(u32) -> bool + Send + Sync),
    ) -> Result<Delivery, WireError> {
        let n = messages.as_ref().map_or(0, Vec::len);
        let mut inner = lock(&self.inner);
        if !inner.operators.contains(&to) && !live_agent(to) {
            inner.boxes.remove(&to);
            return Err(WireError::new(
                ErrorCode::NotFound,
                format!("{to} is gone: no live agent or open connection has that id"),
            ));
        }
        let b = inner.boxes.entry(to).or_default();
        if b.queue.len() + n > self.limits.messages || b.bytes + bytes > self.limits.bytes {
            let full = WireError::new(
                ErrorCode::LimitExceeded,
                format!(
                    "mailbox of {to} is full ({} messages, {} bytes waiting)",
                    b.queue.len(),
                    b.bytes
                ),
            );
            return Ok(Delivery::Full(full, Arc::clone(&b.room)));
        }
        let now = Instant::now();
        let each = bytes / n.max(1);
        for message in messages.take().into_iter().flatten() {
            b.queue.push_back(Queued {
                from: from.id,
                from_name: Arc::clone(&from.name),
                message,
                bytes: each,
                at: now,
            });
        }
        b.bytes += each * n;
        b.arrived.notify_one();
        Ok(Delivery::Done)
    }

    /// RECV: takes up to `max` messages from `id`'s mailbox, oldest first; when it is empty,
    /// waits up to `wait` for one.
    pub async fn recv(&self, id: u32, max: usize, wait: Option<Duration>) -> Vec<IpcMessage> {
        let deadline = wait.map(|w| tokio::time::Instant::now() + w);
        loop {
            let arrived = {
                let mut inner = lock(&self.inner);
                let b = inner.boxes.entry(id).or_default();
                if !b.queue.is_empty() || deadline.is_none() {
                    let n = max.min(b.queue.len());
                    let now = Instant::now();
                    let taken: Vec<IpcMessage> = b
                        .queue
                        .drain(..n)
                        .map(|q| {
                            b.bytes -= q.bytes;
                            IpcMessage {
                                from: q.from,
                                from_name: q.from_name.to_string(),
                                message: q.message,
                                age_ms: u64::try_from(now.duration_since(q.at).as_millis())
                                    .unwrap_or(u64::MAX),
                            }
                        })
                        .collect();
                    if n > 0 {
                        b.room.notify_waiters();
                    }
                    return taken;
                }
                Arc::clone(&b.arrived)
            };
            let Some(deadline) = deadline else {
                return Vec::new();
            };
            if tokio::time::timeout_at(deadline, arrived.notified())
                .await
                .is_err()
            {
                return Vec::new();
            }
        }
    }

    /// The open operator connections, for BROADCAST (which adds the live agents): as in the
    /// original, where every connection was an agent, a broadcast reaches every connection.
    pub fn operators(&self) -> Vec<u32> {
        lock(&self.inner).operators.iter().copied().collect()
    }

    /// Messages waiting in `id`'s mailbox (0 when it has none): the metrics endpoint's
    /// mailbox depth, and the tests'.
    pub fn depth(&self, id: u32) -> usize {
        lock(&self.inner)
            .boxes
            .get(&id)
            .map_or(0, |b| b.queue.len())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn ipc(messages: usize) -> Arc<Ipc> {
        Arc::new(Ipc::new(MailboxLimits {
            messages,
            bytes: 1 << 20,
        }))
    }

    /// Every id is a live agent.
    const ALIVE: fn(u32) -> bool = |_| true;

    fn sender(id: u32, name: &str) -> Sender {
        Sender {
            id,
            name: name.into(),
        }
    }

    #[tokio::test]
    async fn messages_arrive_in_order_with_the_sender() {
        let ipc = ipc(8);
        let a = sender(1, "a");
        ipc.send(&a, 2, vec![Json(json!(1))], 10, None, &ALIVE)
            .await
            .unwrap();
        ipc.send(
            &a,
            2,
            vec![Json(json!(2)), Json(json!(3))],
            20,
            None,
            &ALIVE,
        )
        .await
        .unwrap();
        let got = ipc.recv(2, 2, None).await;
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].from, got[0].from_name.as_str()), (1, "a"));
        assert_eq!(got[0].message.0, json!(1));
        assert_eq!(got[1].message.0, json!(2));
        assert_eq!(ipc.recv(2, 10, None).await[0].message.0, json!(3));
        assert_eq!(ipc.depth(2), 0);
    }

    #[tokio::test]
    async fn full_mailbox_fails_or_waits() {
        let ipc = ipc(2);
        let a = sender(1, "");
        for i in 0..2 {
            ipc.send(&a, 2, vec![Json(json!(i))], 1, None, &ALIVE)
                .await
                .unwrap();
        }
        let e = ipc
            .send(&a, 2, vec![Json(json!(9))], 1, None, &ALIVE)
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::LimitExceeded);
        assert!(e.message.contains("full"), "{}", e.message);
        // Waiting: room appears when the receiver takes a message.
        let blocked = {
            let ipc = Arc::clone(&ipc);
            tokio::spawn(async move {
                ipc.send(
                    &sender(1, ""),
                    2,
                    vec![Json(json!(9))],
                    1,
                    Some(Duration::from_secs(10)),
                    &ALIVE,
                )
                .await
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!blocked.is_finished(), "send did not wait for room");
        assert_eq!(ipc.recv(2, 1, None).await.len(), 1);
        tokio::time::timeout(Duration::from_secs(5), blocked)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(ipc.depth(2), 2);
        // A wait that runs out fails.
        let e = ipc
            .send(
                &a,
                2,
                vec![Json(json!(9))],
                1,
                Some(Duration::from_millis(20)),
                &ALIVE,
            )
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::LimitExceeded);
        // A batch larger than a mailbox can never fit.
        let e = ipc
            .send(
                &a,
                3,
                vec![Json(json!(0)); 3],
                3,
                Some(Duration::from_secs(10)),
                &ALIVE,
            )
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::LimitExceeded);
    }

    #[tokio::test]
    async fn recv_waits_and_wakes() {
        let ipc = ipc(8);
        let waiter = {
            let ipc = Arc::clone(&ipc);
            tokio::spawn(async move { ipc.recv(5, 10, Some(Duration::from_secs(10))).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "recv returned from an empty mailbox");
        ipc.send(&sender(1, ""), 5, vec![Json(json!("hi"))], 4, None, &ALIVE)
            .await
            .unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got[0].message.0, json!("hi"));
        assert!(ipc
            .recv(5, 10, Some(Duration::from_millis(20)))
            .await
            .is_empty());
    }

    #[tokio::test]
    async fn names_are_owned_and_released() {
        let ipc = ipc(8);
        ipc.operator_opened(1);
        ipc.register(1, "driver").unwrap();
        ipc.register(1, "driver").unwrap();
        ipc.register(1, "second").unwrap();
        assert_eq!(
            ipc.register(2, "driver").unwrap_err().code,
            ErrorCode::AlreadyExists
        );
        assert_eq!(ipc.registered("driver"), Some(1));
        assert_eq!(ipc.first_name(1).as_deref(), Some("driver"));
        assert!(ipc.is_operator(1));
        ipc.send(&sender(2, ""), 1, vec![Json(json!(1))], 1, None, &|_| false)
            .await
            .unwrap();
        ipc.release(1);
        assert_eq!(ipc.registered("driver"), None);
        // Gone: not an operator any more, and not a live agent.
        let e = ipc
            .send(&sender(2, ""), 1, vec![Json(json!(1))], 1, None, &|_| false)
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::NotFound);
        assert!(!ipc.is_operator(1));
        assert_eq!(ipc.depth(1), 0);
        // The name is free for the next script run.
        ipc.register(2, "driver").unwrap();
        assert!(check_name("").is_err());
        assert!(check_name("a\nb").is_err());
    }
}
