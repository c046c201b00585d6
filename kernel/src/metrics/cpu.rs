//! CPU percentages from cumulative counters: the previous reading of each process, cgroup
//! and the host is kept, and a percentage is the counter's growth over the wall time since.
//!
//! Why kept samples rather than sampling over an interval: a request never sleeps (a caller
//! asking for every agent would otherwise wait the interval, or hold a blocking thread for
//! it), and a caller polling every second gets exactly the usage of the last second, as `top`
//! does. The previous reading is replaced only once it is [`MIN_WINDOW`] old, so two
//! requests in quick succession still measure over a useful window instead of over a few
//! microseconds. The first reading of a key has no previous one: the caller falls back to the
//! average since the start (of the process or agent run), or reports no percentage.
//!
//! The table is bounded ([`MAX_KEYS`]): when full, the oldest readings are dropped, so pids
//! of long-gone processes cannot grow it without end. A process is keyed by its pid and its
//! start time, so a reused pid never inherits another process's reading.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The most readings kept.
pub const MAX_KEYS: usize = 4096;

/// A reading is replaced only once it is this old.
pub const MIN_WINDOW: Duration = Duration::from_millis(250);

/// What a reading is of.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    /// A process: its pid and its start time (clock ticks after boot).
    Process(i32, u64),
    /// A cgroup, by its (first) directory.
    Cgroup(String),
    /// One of the host's CPUs (`None`: all together).
    HostCpu(Option<usize>),
}

/// A cumulative counter read at a moment.
#[derive(Debug, Clone, Copy)]
struct Reading {
    at: Instant,
    /// The counter: busy µs for processes and cgroups, busy ticks for the host.
    busy: u64,
    /// For the host: total ticks (busy and idle), the denominator; unused otherwise.
    total: u64,
}

/// The previous readings.
#[derive(Debug, Default)]
pub struct Samples {
    readings: HashMap<Key, Reading>,
}

impl Samples {
    /// A counter of busy CPU time in µs read now: the percentage of one CPU it grew by since
    /// the previous reading of `key`, or `None` on the first reading (or when the counter
    /// went backwards: a cgroup made anew under the same path).
    pub fn usage_percent(&mut self, key: Key, busy_usec: u64, now: Instant) -> Option<f64> {
        let prev = self.record(key, busy_usec, 0, now)?;
        let wall = now.checked_duration_since(prev.at)?.as_secs_f64();
        if wall <= 0.0 || busy_usec < prev.busy {
            return None;
        }
        Some(round2((busy_usec - prev.busy) as f64 / 1e6 / wall * 100.0))
    }

    /// A host CPU counter pair read now (busy and total ticks): the busy share since the
    /// previous reading, 0 to 100; `None` on the first reading.
    pub fn share_percent(&mut self, key: Key, busy: u64, total: u64, now: Instant) -> Option<f64> {
        let prev = self.record(key, busy, total, now)?;
        let dt = total.checked_sub(prev.total)?;
        let db = busy.checked_sub(prev.busy)?;
        if dt == 0 {
            return Some(0.0);
        }
        Some(round2((db as f64 / dt as f64 * 100.0).min(100.0)))
    }

    /// Keeps the reading (unless the kept one is younger than [`MIN_WINDOW`]) and returns
    /// the previous one.
    fn record(&mut self, key: Key, busy: u64, total: u64, now: Instant) -> Option<Reading> {
        let new = Reading {
            at: now,
            busy,
            total,
        };
        match self.readings.get_mut(&key) {
            Some(prev) => {
                let old = *prev;
                let counter_reset = busy < old.busy;
                if counter_reset || now.saturating_duration_since(old.at) >= MIN_WINDOW {
                    *prev = new;
                }
                (!counter_reset).then_some(old)
            }
            None => {
                if self.readings.len() >= MAX_KEYS {
                    self.evict_oldest();
                }
                self.readings.insert(key, new);
                None
            }
        }
    }

    /// Drops the oldest quarter, so eviction runs rarely.
    fn evict_oldest(&mut self) {
        let mut ages: Vec<Instant> = self.readings.values().map(|r| r.at).collect();
        ages.sort_unstable();
        if let Some(cut) = ages.get(ages.len() / 4) {
            let cut = *cut;
            self.readings.retain(|_, r| r.at > cut);
        }
    }

    /// How many readings are kept (for tests).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.readings.len()
    }
}

/// A percentage to two decimals: finer digits are noise at these sampling windows.
pub fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// The average use of one CPU since a start: `busy` µs over `elapsed`.
pub fn average_percent(busy_usec: u64, elapsed: Duration) -> f64 {
    let wall = elapsed.as_secs_f64();
    if wall <= 0.0 {
        return 0.0;
    }
    round2(busy_usec as f64 / 1e6 / wall * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_is_growth_over_wall_time_since_the_kept_reading() {
        let mut s = Samples::default();
        let t0 = Instant::now();
        let k = || Key::Cgroup("/a".into());
        assert_eq!(s.usage_percent(k(), 1_000_000, t0), None);
        // Half a CPU over one second.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(s.usage_percent(k(), 1_500_000, t1), Some(50.0));
        // 100 ms later: still measured from t1 (the t1 reading is kept, it is too young to
        // be replaced), two CPUs busy.
        let t2 = t1 + Duration::from_millis(100);
        assert_eq!(s.usage_percent(k(), 1_700_000, t2), Some(200.0));
        // 400 ms after t1: from t1 still; and now t3 replaces it.
        let t3 = t1 + Duration::from_millis(400);
        assert_eq!(s.usage_percent(k(), 1_900_000, t3), Some(100.0));
        let t4 = t3 + Duration::from_secs(1);
        assert_eq!(s.usage_percent(k(), 1_900_000, t4), Some(0.0));
    }

    #[test]
    fn a_counter_that_goes_back_starts_afresh() {
        let mut s = Samples::default();
        let t0 = Instant::now();
        let k = || Key::Cgroup("/a".into());
        s.usage_percent(k(), 5_000_000, t0);
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(s.usage_percent(k(), 100, t1), None);
        let t2 = t1 + Duration::from_secs(1);
        assert_eq!(s.usage_percent(k(), 100_100, t2), Some(10.0));
    }

    #[test]
    fn host_shares_are_busy_over_total_ticks() {
        let mut s = Samples::default();
        let t0 = Instant::now();
        assert_eq!(s.share_percent(Key::HostCpu(None), 100, 400, t0), None);
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(
            s.share_percent(Key::HostCpu(None), 150, 600, t1),
            Some(25.0)
        );
    }

    #[test]
    fn the_table_stays_bounded() {
        let mut s = Samples::default();
        let t0 = Instant::now();
        for pid in 0..(MAX_KEYS as i32 * 3) {
            let at = t0 + Duration::from_millis(pid as u64);
            s.usage_percent(Key::Process(pid, 1), 0, at);
        }
        assert!(s.len() <= MAX_KEYS, "{}", s.len());
        // The newest are kept.
        let last = MAX_KEYS as i32 * 3 - 1;
        let later = t0 + Duration::from_secs(100);
        assert!(s.usage_percent(Key::Process(last, 1), 0, later).is_some());
    }

    #[test]
    fn averages_since_start() {
        assert_eq!(average_percent(500_000, Duration::from_secs(2)), 25.0);
        assert_eq!(average_percent(5, Duration::ZERO), 0.0);
    }
}
