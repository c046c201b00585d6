//! Async requests: work a caller asked for with `async: true` (EXEC, HTTP, THINK) runs in its
//! own task, and its reply waits here until ASYNC_POLL takes it.
//!
//! * Results belong to the caller's id: an operator connection's are released when it closes,
//!   an agent's when it exits for good (a restarted agent keeps them, like its mailbox). The
//!   release cancels the caller's work still in flight and drops its results.
//! * Each caller holds at most `async_results` requests, in flight and finished-but-not-taken
//!   together. A request beyond that is refused at once (`limit_exceeded`), so a result that
//!   was accepted is never dropped to make room.
//! * `request_id` is the caller's, or one the kernel picks (unique within this kernel run).
//! * The kernel's shutdown cancels everything in flight.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use clove_abi::msg::AsyncResult;
use clove_abi::{ErrorCode, Opcode, WireError};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// One caller's async requests.
#[derive(Debug)]
struct Slot {
    /// Finished, oldest first.
    done: VecDeque<AsyncResult>,
    /// Still running.
    running: usize,
    /// Woken when a result lands.
    notify: Arc<Notify>,
    /// Cancels the caller's work in flight (a child of the kernel's shutdown token).
    cancel: CancellationToken,
    /// Tells this slot from a later one of the same id (after a release).
    generation: u64,
}

/// Every caller's async requests and results.
#[derive(Debug)]
pub struct Asyncs {
    limit: usize,
    stopping: CancellationToken,
    next_id: AtomicU64,
    next_generation: AtomicU64,
    slots: Mutex<HashMap<u32, Slot>>,
}

impl Asyncs {
    /// At most `limit` requests per caller; `stopping` (the kernel's shutdown) cancels all
    /// work.
    pub fn new(limit: usize, stopping: CancellationToken) -> Arc<Asyncs> {
        Arc::new(Asyncs {
            limit,
            stopping,
            next_id: AtomicU64::new(1),
            next_generation: AtomicU64::new(1),
            slots: Mutex::new(HashMap::new()),
        })
    }

    fn slots(&self) -> MutexGuard<'_, HashMap<u32, Slot>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn slot<'a>(&self, slots: &'a mut HashMap<u32, Slot>, caller: u32) -> &'a mut Slot {
        slots.entry(caller).or_insert_with(|| Slot {
            done: VecDeque::new(),
            running: 0,
            notify: Arc::new(Notify::new()),
            cancel: self.stopping.child_token(),
            generation: self.next_generation.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// Runs `work` for `caller` in its own task and queues what it returns (the sync reply
    /// as JSON text) under `request_id` (or a new id) and `opcode`. Returns the id for the
    /// accept reply, or `limit_exceeded` when the caller already holds `limit` requests.
    pub fn spawn<F>(
        self: &Arc<Self>,
        caller: u32,
        opcode: Opcode,
        request_id: Option<u64>,
        work: F,
    ) -> Result<u64, WireError>
    where
        F: Future<Output = String> + Send + 'static,
    {
        let (cancel, generation, id) = {
            let mut slots = self.slots();
            let slot = self.slot(&mut slots, caller);
            let held = slot.running + slot.done.len();
            if held >= self.limit {
                return Err(WireError::new(
                    ErrorCode::LimitExceeded,
                    format!(
                        "{held} async requests are in flight or waiting for ASYNC_POLL \
                         (async_results = {}); take results with ASYNC_POLL first",
                        self.limit
                    ),
                ));
            }
            slot.running += 1;
            let id = request_id.unwrap_or_else(|| self.next_id.fetch_add(1, Ordering::Relaxed));
            (slot.cancel.clone(), slot.generation, id)
        };
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let payload = tokio::select! {
                biased;
                () = cancel.cancelled() => return,
                payload = work => payload,
            };
            let mut slots = this.slots();
            if let Some(slot) = slots
                .get_mut(&caller)
                .filter(|s| s.generation == generation)
            {
                slot.running -= 1;
                slot.done.push_back(AsyncResult::new(id, opcode, payload));
                slot.notify.notify_waiters();
            }
        });
        Ok(id)
    }

    /// Takes up to `max` of `caller`'s results, oldest first. With `wait`, waits that long
    /// for a first result when none is ready.
    pub async fn poll(&self, caller: u32, max: usize, wait: Option<Duration>) -> Vec<AsyncResult> {
        let deadline = wait.map(|w| tokio::time::Instant::now() + w);
        loop {
            let notify = {
                let mut slots = self.slots();
                let slot = self.slot(&mut slots, caller);
                if !slot.done.is_empty() || deadline.is_none() {
                    return take(slot, max);
                }
                Arc::clone(&slot.notify)
            };
            // Registered before the second look, so a result landing in between wakes it.
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut slots = self.slots();
                let slot = self.slot(&mut slots, caller);
                if !slot.done.is_empty() {
                    return take(slot, max);
                }
            }
            let Some(deadline) = deadline else {
                return Vec::new();
            };
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let mut slots = self.slots();
                return take(self.slot(&mut slots, caller), max);
            }
        }
    }

    /// Forgets `caller`: its work in flight is cancelled and its results are dropped.
    pub fn release(&self, caller: u32) {
        if let Some(slot) = self.slots().remove(&caller) {
            slot.cancel.cancel();
        }
    }

    /// `(in flight, results waiting)` for `caller`.
    #[cfg(test)]
    pub fn held(&self, caller: u32) -> (usize, usize) {
        self.slots()
            .get(&caller)
            .map_or((0, 0), |s| (s.running, s.done.len()))
    }
}

fn take(slot: &mut Slot, max: usize) -> Vec<AsyncResult> {
    let n = max.min(slot.done.len());
    slot.done.drain(..n).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn ready(text: &str) -> impl Future<Output = String> + Send + 'static {
        std::future::ready(text.to_owned())
    }

    #[tokio::test]
    async fn results_queue_per_caller_oldest_first() {
        let a = Asyncs::new(8, CancellationToken::new());
        let first = a.spawn(1, Opcode::Http, None, ready("{\"n\":1}")).unwrap();
        let second = a
            .spawn(1, Opcode::Exec, Some(77), ready("{\"n\":2}"))
            .unwrap();
        assert_eq!(second, 77);
        a.spawn(2, Opcode::Http, Some(5), ready("{}")).unwrap();
        let got = a.poll(1, 10, Some(Duration::from_secs(5))).await;
        let got = if got.len() < 2 {
            let mut more = got;
            more.extend(a.poll(1, 10, Some(Duration::from_secs(5))).await);
            more
        } else {
            got
        };
        assert_eq!(got.len(), 2);
        assert_eq!(
            (got[0].request_id, got[0].opcode_name.as_str()),
            (first, "HTTP")
        );
        assert_eq!(
            (got[1].request_id, got[1].payload.as_str()),
            (77, "{\"n\":2}")
        );
        assert_eq!(a.held(1), (0, 0));
        let other = a.poll(2, 10, Some(Duration::from_secs(5))).await;
        assert_eq!(other.len(), 1);
        assert_eq!(other[0].request_id, 5);
    }

    #[tokio::test]
    async fn a_wait_ends_with_the_first_result_or_the_time() {
        let a = Asyncs::new(8, CancellationToken::new());
        let start = tokio::time::Instant::now();
        assert!(a
            .poll(1, 10, Some(Duration::from_millis(50)))
            .await
            .is_empty());
        assert!(start.elapsed() >= Duration::from_millis(50));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        a.spawn(1, Opcode::Http, Some(9), async move {
            let _ = rx.await;
            "{}".to_owned()
        })
        .unwrap();
        let waiter = {
            let a = Arc::clone(&a);
            tokio::spawn(async move { a.poll(1, 10, Some(Duration::from_secs(30))).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        tx.send(()).unwrap();
        let got = waiter.await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].request_id, 9);
    }

    #[tokio::test]
    async fn a_full_caller_is_refused_and_nothing_is_dropped() {
        let a = Asyncs::new(2, CancellationToken::new());
        a.spawn(1, Opcode::Http, Some(1), ready("{}")).unwrap();
        a.spawn(1, Opcode::Http, Some(2), std::future::pending())
            .unwrap();
        let e = a.spawn(1, Opcode::Http, Some(3), ready("{}")).unwrap_err();
        assert_eq!(e.code, ErrorCode::LimitExceeded);
        assert!(e.message.contains("async_results = 2"), "{e:?}");
        // Another caller has its own room.
        a.spawn(2, Opcode::Http, None, ready("{}")).unwrap();
        let got = a.poll(1, 10, Some(Duration::from_secs(5))).await;
        assert_eq!(got.len(), 1);
        assert_eq!(a.held(1), (1, 0));
        a.spawn(1, Opcode::Http, Some(3), ready("{}")).unwrap();
    }

    #[tokio::test]
    async fn release_cancels_work_in_flight_and_drops_results() {
        let a = Asyncs::new(8, CancellationToken::new());
        struct Flag(Arc<std::sync::atomic::AtomicBool>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Flag(Arc::clone(&dropped));
        a.spawn(1, Opcode::Http, Some(1), async move {
            let _flag = flag;
            std::future::pending::<()>().await;
            String::new()
        })
        .unwrap();
        a.spawn(1, Opcode::Http, Some(2), ready("{}")).unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        a.release(1);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            dropped.load(Ordering::SeqCst),
            "the work in flight was dropped"
        );
        assert_eq!(a.held(1), (0, 0));
        assert!(a.poll(1, 10, None).await.is_empty());
    }

    #[tokio::test]
    async fn shutdown_cancels_everything() {
        let stopping = CancellationToken::new();
        let a = Asyncs::new(8, stopping.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        a.spawn(1, Opcode::Http, Some(1), async move {
            let _tx = tx;
            std::future::pending::<()>().await;
            String::new()
        })
        .unwrap();
        stopping.cancel();
        // The sender is dropped with the cancelled work.
        assert!(tokio::time::timeout(Duration::from_secs(5), rx)
            .await
            .unwrap()
            .is_err());
    }
}
