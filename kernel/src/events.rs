//! The event bus: SUBSCRIBE, UNSUBSCRIBE, POLL_EVENTS, EMIT.
//!
//! Every caller (an agent's id, or an operator connection's id) has at most one subscriber
//! entry: the event types it subscribed to and a bounded queue of events waiting to be polled.
//! Publishing is synchronous and cheap: under one lock, the event is appended to the queue of
//! each subscriber that wants it, and waiters are woken. The server never pushes; POLL_EVENTS
//! takes what is queued, optionally waiting for the first event.
//!
//! * Types: the kernel's own ([`EventType`], published by the kernel only) and custom names,
//!   kept as given (`"build.done"`). Subscribing to `CUSTOM` receives every custom event;
//!   subscribing to a custom name receives that name only.
//! * A queue holds at most `capacity` events; when full, the oldest is dropped and counted,
//!   and the next poll reports how many were dropped (`dropped`).
//! * Some events are private: [`Audience::Only`] delivers to one caller (its own agent-scoped
//!   state changes, messages reaching its mailbox).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clove_abi::codec::Json;
use clove_abi::msg::{Event, EventType};
use clove_abi::{ErrorCode, WireError};
use tokio::sync::Notify;

use crate::sync::lock;

/// The longest custom event type name.
pub const MAX_NAME: usize = 128;

/// Who receives an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// Every subscriber of its type.
    Everyone,
    /// Only this caller, if subscribed.
    Only(u32),
}

/// One caller's subscriptions and pending events.
#[derive(Debug, Default)]
struct Subscriber {
    types: BTreeSet<String>,
    queue: VecDeque<Event>,
    /// Events dropped since the last poll because the queue was full.
    dropped: u64,
    /// Woken when an event is queued.
    arrived: Arc<Notify>,
}

impl Subscriber {
    fn wants(&self, event_type: &str, custom: bool) -> bool {
        self.types.contains(event_type) || (custom && self.types.contains("CUSTOM"))
    }
}

/// The kernel's event bus.
#[derive(Debug)]
pub struct Events {
    subscribers: Mutex<HashMap<u32, Subscriber>>,
    /// Most events queued per subscriber.
    capacity: usize,
}

/// What a poll took.
#[derive(Debug, Default)]
pub struct Polled {
    /// The events, oldest first.
    pub events: Vec<Event>,
    /// Events dropped since the previous poll (the queue was full).
    pub dropped: u64,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Checks an event type name from a request: a kernel type, `CUSTOM`, or a custom name of 1 to
/// [`MAX_NAME`] characters from `A-Z a-z 0-9 _ . : -`. Returns whether it is custom.
pub fn check_name(name: &str) -> Result<bool, WireError> {
    if EventType::parse(name).is_some() {
        return Ok(false);
    }
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'));
    if !valid {
        return Err(WireError::invalid_request(format!(
            "event type {name:?}: a kernel event type (AGENT_SPAWNED, ...) or a custom name of 1 to {MAX_NAME} letters, digits, '_', '.', ':' or '-'"
        )));
    }
    // A kernel type in the wrong case is almost certainly a typo, not a custom name.
    if let Some(t) = EventType::parse(&name.to_ascii_uppercase()) {
        return Err(WireError::invalid_request(format!(
            "event type {name:?}: did you mean {}?",
            t.as_str()
        )));
    }
    Ok(true)
}

impl Events {
    /// A bus whose subscribers queue at most `capacity` events each.
    pub fn new(capacity: usize) -> Events {
        Events {
            subscribers: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    /// SUBSCRIBE: adds `names` to `who`'s subscriptions; returns them as subscribed.
    pub fn subscribe(&self, who: u32, names: &[&str]) -> Result<Vec<String>, WireError> {
        if names.is_empty() {
            return Err(WireError::invalid_request(
                "event_types: name at least one event type",
            ));
        }
        for name in names {
            check_name(name)?;
        }
        let mut subs = lock(&self.subscribers);
        let sub = subs.entry(who).or_default();
        sub.types.extend(names.iter().map(|n| (*n).to_owned()));
        Ok(names.iter().map(|n| (*n).to_owned()).collect())
    }

    /// UNSUBSCRIBE: removes `names` (or everything, with `all`) from `who`'s subscriptions;
    /// returns the types it was subscribed to and no longer is.
    pub fn unsubscribe(&self, who: u32, names: &[&str], all: bool) -> Vec<String> {
        let mut subs = lock(&self.subscribers);
        let Some(sub) = subs.get_mut(&who) else {
            return Vec::new();
        };
        let removed: Vec<String> = if all {
            std::mem::take(&mut sub.types).into_iter().collect()
        } else {
            names
                .iter()
                .filter(|n| sub.types.remove(**n))
                .map(|n| (*n).to_owned())
                .collect()
        };
        if sub.types.is_empty() {
            // Nothing subscribed: what is queued would never be wanted.
            sub.queue.clear();
        }
        removed
    }

    /// Publishes an event of type `event_type` about or from `source` (0: the kernel).
    pub fn publish(&self, event_type: &str, data: Json, source: u32, audience: Audience) {
        let custom = EventType::parse(event_type).is_none();
        let mut subs = lock(&self.subscribers);
        let mut event = None;
        let mut deliver = |sub: &mut Subscriber| {
            if !sub.wants(event_type, custom) {
                return;
            }
            let ev = event
                .get_or_insert_with(|| Event {
                    event_type: event_type.to_owned(),
                    data: data.clone(),
                    source_agent_id: source,
                    timestamp: now_ms(),
                })
                .clone();
            if sub.queue.len() >= self.capacity {
                sub.queue.pop_front();
                sub.dropped += 1;
            }
            sub.queue.push_back(ev);
            sub.arrived.notify_one();
        };
        match audience {
            Audience::Everyone => subs.values_mut().for_each(&mut deliver),
            Audience::Only(id) => {
                if let Some(sub) = subs.get_mut(&id) {
                    deliver(sub);
                }
            }
        }
    }

    /// Publishes one of the kernel's own event types.
    pub fn kernel(&self, t: EventType, data: serde_json::Value, source: u32, audience: Audience) {
        self.publish(t.as_str(), Json(data), source, audience);
    }

    /// Whether anyone would receive an event of type `t` sent to `audience` (to skip building
    /// event data nobody reads, on hot paths).
    pub fn wanted(&self, t: EventType, audience: Audience) -> bool {
        let subs = lock(&self.subscribers);
        match audience {
            Audience::Everyone => subs.values().any(|s| s.wants(t.as_str(), false)),
            Audience::Only(id) => subs.get(&id).is_some_and(|s| s.wants(t.as_str(), false)),
        }
    }

    /// POLL_EVENTS: takes up to `max` of `who`'s events; when none is queued, waits up to
    /// `wait` for one.
    pub async fn poll(&self, who: u32, max: usize, wait: Option<Duration>) -> Polled {
        let deadline = wait.map(|w| tokio::time::Instant::now() + w);
        loop {
            let arrived = {
                let mut subs = lock(&self.subscribers);
                let Some(sub) = subs.get_mut(&who) else {
                    // Not subscribed to anything: nothing will ever arrive.
                    return Polled::default();
                };
                if !sub.queue.is_empty() || deadline.is_none() {
                    let n = max.min(sub.queue.len());
                    return Polled {
                        events: sub.queue.drain(..n).collect(),
                        dropped: std::mem::take(&mut sub.dropped),
                    };
                }
                Arc::clone(&sub.arrived)
            };
            let Some(deadline) = deadline else {
                return Polled::default();
            };
            // A notify_one stored while nobody waited is consumed here, so an event queued
            // between the check above and this wait is not missed.
            if tokio::time::timeout_at(deadline, arrived.notified())
                .await
                .is_err()
            {
                let mut subs = lock(&self.subscribers);
                let dropped = subs
                    .get_mut(&who)
                    .map(|s| std::mem::take(&mut s.dropped))
                    .unwrap_or(0);
                return Polled {
                    events: Vec::new(),
                    dropped,
                };
            }
        }
    }

    /// Forgets `who` (its connection closed, or its agent is gone for good).
    pub fn forget(&self, who: u32) {
        lock(&self.subscribers).remove(&who);
    }

    /// The number of subscribers (tests; metrics will read it too).
    #[cfg(test)]
    pub fn subscriber_count(&self) -> usize {
        lock(&self.subscribers).len()
    }
}

/// Refuses an EMIT of a kernel event type other than `CUSTOM`: agents cannot forge the
/// kernel's events.
pub fn check_emit(name: &str) -> Result<(), WireError> {
    match EventType::parse(name) {
        Some(EventType::Custom) | None => check_name(name).map(drop),
        Some(t) => Err(WireError::new(
            ErrorCode::PermissionDenied,
            format!(
                "emit {}: kernel events are published by the kernel only; use CUSTOM or a custom name",
                t.as_str()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn types(p: &Polled) -> Vec<&str> {
        p.events.iter().map(|e| e.event_type.as_str()).collect()
    }

    #[tokio::test]
    async fn subscribers_get_only_what_they_asked_for() {
        let bus = Events::new(16);
        bus.subscribe(1, &["AGENT_EXITED"]).unwrap();
        bus.subscribe(2, &["CUSTOM"]).unwrap();
        bus.subscribe(3, &["build.done"]).unwrap();
        bus.kernel(
            EventType::AgentExited,
            json!({"x": 1}),
            7,
            Audience::Everyone,
        );
        bus.publish("build.done", Json(json!(1)), 9, Audience::Everyone);
        bus.publish("other", Json(json!(2)), 9, Audience::Everyone);
        let p1 = bus.poll(1, 100, None).await;
        assert_eq!(types(&p1), ["AGENT_EXITED"]);
        assert_eq!(p1.events[0].source_agent_id, 7);
        assert!(p1.events[0].timestamp > 1_600_000_000_000);
        assert_eq!(
            types(&bus.poll(2, 100, None).await),
            ["build.done", "other"]
        );
        assert_eq!(types(&bus.poll(3, 100, None).await), ["build.done"]);
        assert!(bus.poll(4, 100, None).await.events.is_empty());
    }

    #[tokio::test]
    async fn private_events_reach_one_caller() {
        let bus = Events::new(16);
        bus.subscribe(1, &["STATE_CHANGED"]).unwrap();
        bus.subscribe(2, &["STATE_CHANGED"]).unwrap();
        bus.kernel(EventType::StateChanged, json!({}), 1, Audience::Only(2));
        assert!(bus.poll(1, 10, None).await.events.is_empty());
        assert_eq!(bus.poll(2, 10, None).await.events.len(), 1);
        assert!(bus.wanted(EventType::StateChanged, Audience::Only(2)));
        assert!(!bus.wanted(EventType::StateChanged, Audience::Only(3)));
    }

    #[tokio::test]
    async fn overflow_drops_the_oldest_and_says_how_many() {
        let bus = Events::new(3);
        bus.subscribe(1, &["CUSTOM"]).unwrap();
        for i in 0..5 {
            bus.publish("CUSTOM", Json(json!(i)), 0, Audience::Everyone);
        }
        let p = bus.poll(1, 100, None).await;
        let data: Vec<_> = p.events.iter().map(|e| e.data.0.clone()).collect();
        assert_eq!(data, [json!(2), json!(3), json!(4)]);
        assert_eq!(p.dropped, 2);
        assert_eq!(bus.poll(1, 100, None).await.dropped, 0);
    }

    #[tokio::test]
    async fn poll_waits_and_wakes() {
        let bus = Arc::new(Events::new(8));
        bus.subscribe(1, &["CUSTOM"]).unwrap();
        let waiter = {
            let bus = Arc::clone(&bus);
            tokio::spawn(async move { bus.poll(1, 10, Some(Duration::from_secs(10))).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "poll returned without an event");
        bus.publish("CUSTOM", Json(json!("hi")), 0, Audience::Everyone);
        let p = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(p.events.len(), 1);
        // And a wait with nothing coming ends empty.
        let p = bus.poll(1, 10, Some(Duration::from_millis(20))).await;
        assert!(p.events.is_empty());
    }

    #[tokio::test]
    async fn unsubscribe_and_forget() {
        let bus = Events::new(8);
        bus.subscribe(1, &["CUSTOM", "AGENT_SPAWNED"]).unwrap();
        assert_eq!(bus.unsubscribe(1, &["CUSTOM", "NOPE"], false), ["CUSTOM"]);
        bus.publish("CUSTOM", Json(json!(1)), 0, Audience::Everyone);
        assert!(bus.poll(1, 10, None).await.events.is_empty());
        assert_eq!(bus.unsubscribe(1, &[], true), ["AGENT_SPAWNED"]);
        bus.forget(1);
        assert_eq!(bus.subscriber_count(), 0);
    }

    #[test]
    fn names_are_checked() {
        assert!(!check_name("AGENT_EXITED").unwrap());
        assert!(check_name("build.done").unwrap());
        assert!(check_name("").is_err());
        assert!(check_name("has space").is_err());
        let e = check_name("agent_exited").unwrap_err();
        assert!(e.message.contains("AGENT_EXITED"), "{}", e.message);
        assert!(check_emit("CUSTOM").is_ok());
        assert!(check_emit("mine").is_ok());
        assert_eq!(
            check_emit("AGENT_EXITED").unwrap_err().code,
            ErrorCode::PermissionDenied
        );
    }
}
