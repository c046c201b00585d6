//! The one id space: connection ids and agent ids are drawn from the same counter, so an id
//! names exactly one caller and `SEND {to: id}` can never reach the wrong one (the original
//! had two overlapping spaces). Id 0 is never issued: the original used it for "unknown".
//!
//! Ids are never reused across kernel restarts either, because agent-scoped state belongs to
//! an id: the counter takes blocks of ids from a durable source (the state store's
//! [`id_block`](crate::state::StateStore::id_block)), and a new kernel starts after the last
//! block any earlier kernel took.

use std::ops::Range;
use std::sync::Mutex;

use crate::sync::lock;

/// Where blocks of ids come from (durably reserved before they are handed out).
pub type IdSource = Box<dyn Fn(u32) -> anyhow::Result<Range<u32>> + Send + Sync>;

/// Ids taken from the source at a time.
pub const BLOCK: u32 = 1 << 16;

/// Issues ids, never the same one twice.
pub struct IdSpace {
    /// The ids left in the current block.
    left: Mutex<Range<u32>>,
    source: Option<IdSource>,
}

impl std::fmt::Debug for IdSpace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdSpace")
            .field("left", &*lock(&self.left))
            .field("durable", &self.source.is_some())
            .finish()
    }
}

impl IdSpace {
    /// A space whose first id is `first` (at least 1), with no durable source (tests).
    #[cfg(test)]
    pub fn starting_at(first: u32) -> IdSpace {
        IdSpace {
            left: Mutex::new(first.max(1)..u32::MAX),
            source: None,
        }
    }

    /// A space fed with blocks from `source`; takes the first block now.
    pub fn durable(source: IdSource) -> anyhow::Result<IdSpace> {
        let first = source(BLOCK)?;
        Ok(IdSpace {
            left: Mutex::new(first),
            source: Some(source),
        })
    }

    /// The next id.
    pub fn allocate(&self) -> u32 {
        let mut left = lock(&self.left);
        loop {
            if let Some(id) = left.next() {
                if id != 0 {
                    return id;
                }
                continue;
            }
            // The block is used up: reserve the next one (rare: once per BLOCK ids).
            let next = match &self.source {
                Some(source) => source(BLOCK),
                None => Ok(1..u32::MAX),
            };
            *left = match next {
                Ok(block) => block,
                Err(e) => {
                    // Keep serving: ids stay unique in this kernel's life, only the promise
                    // across restarts is at risk, and the log says so.
                    tracing::error!("reserve the next block of ids: {e:#}; continuing past the last block without a durable reservation");
                    let from = left.end.max(1);
                    from..from.saturating_add(BLOCK)
                }
            };
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    #[test]
    fn ids_are_unique_and_never_zero() {
        let ids = IdSpace::starting_at(0);
        assert_eq!(ids.allocate(), 1);
        assert_eq!(ids.allocate(), 2);
    }

    #[test]
    fn blocks_are_taken_from_the_source_as_they_run_out() {
        let floor = Arc::new(AtomicU32::new(10));
        let calls = Arc::new(AtomicU32::new(0));
        let (f, c) = (Arc::clone(&floor), Arc::clone(&calls));
        let ids = IdSpace::durable(Box::new(move |_size| {
            c.fetch_add(1, Ordering::SeqCst);
            // Blocks of two, to run out fast.
            let start = f.fetch_add(2, Ordering::SeqCst);
            Ok(start..start + 2)
        }))
        .unwrap();
        let got: Vec<u32> = (0..5).map(|_| ids.allocate()).collect();
        assert_eq!(got, [10, 11, 12, 13, 14]);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn a_failing_source_does_not_stop_ids() {
        let ids = IdSpace::durable(Box::new(|_| Ok(5..6))).unwrap();
        assert_eq!(ids.allocate(), 5);
        let ids = IdSpace {
            left: Mutex::new(7..7),
            source: Some(Box::new(|_| Err(anyhow::anyhow!("disk full")))),
        };
        assert_eq!(ids.allocate(), 7);
        assert_eq!(ids.allocate(), 8);
    }
}
