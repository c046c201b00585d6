//! The one id space: connection ids and, later, agent ids are drawn from the same counter, so an
//! id names exactly one caller and `SEND {to: id}` can never reach the wrong one (the original
//! had two overlapping spaces). Id 0 is never issued: the original used it for "unknown".

use std::sync::atomic::{AtomicU32, Ordering};

/// Issues ids, never the same one twice in a kernel's life.
#[derive(Debug)]
pub struct IdSpace {
    next: AtomicU32,
}

impl IdSpace {
    /// A space whose first id is `first` (at least 1). Persisted agent ids will raise it.
    pub fn starting_at(first: u32) -> IdSpace {
        IdSpace {
            next: AtomicU32::new(first.max(1)),
        }
    }

    /// The next id.
    pub fn allocate(&self) -> u32 {
        // Wrapping after four billion ids would take decades at any real rate; skip 0 anyway.
        loop {
            let id = self.next.fetch_add(1, Ordering::Relaxed);
            if id != 0 {
                return id;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_never_zero() {
        let ids = IdSpace::starting_at(0);
        assert_eq!(ids.allocate(), 1);
        assert_eq!(ids.allocate(), 2);
        let ids = IdSpace::starting_at(u32::MAX);
        assert_eq!(ids.allocate(), u32::MAX);
        assert_eq!(ids.allocate(), 1);
    }
}
