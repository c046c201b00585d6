//! The in-memory mirror of every key: what readers consult, what the writer updates once a
//! batch has committed.
//!
//! Keys live in one map per owner. Owner [`PLAIN`] (0, never an issued id) holds the plain
//! namespace shared by `global` and `session` keys; every other owner holds that agent's
//! `agent` keys. Durable entries mirror the `kv` table row for row; session entries exist
//! only here.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::Arc;

use clove_abi::msg::state::StateScope;

/// The owner slot of the plain namespace (`global` and `session` keys). Ids are never 0.
pub const PLAIN: u32 = 0;

/// One key's current value.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// `Global` or `Session` under [`PLAIN`], `Agent` under an owner id.
    pub scope: StateScope,
    /// The value's JSON text, as stored in SQLite.
    pub value: Arc<str>,
    /// 1 for a new key, +1 with every write.
    pub version: u64,
    /// Wall-clock expiry in milliseconds since the Unix epoch; `None`: never.
    pub expires_at: Option<i64>,
}

impl Entry {
    /// The entry is past its expiry at `now` (epoch ms): readers must not see it.
    pub fn expired(&self, now: i64) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// The entry is a row of the `kv` table (not `session`).
    pub fn durable(&self) -> bool {
        self.scope != StateScope::Session
    }

    /// What the entry counts against `max_total_bytes`.
    pub fn size(&self, key: &str) -> u64 {
        (key.len() + self.value.len()) as u64
    }
}

/// Every key, expired ones included until purged.
#[derive(Debug, Default)]
pub struct Index {
    /// owner → key → entry. Sorted, so KEYS and prefix scans need no sort of their own.
    owners: BTreeMap<u32, BTreeMap<String, Entry>>,
    /// (expiry, owner, key) of every entry with a TTL: the purge finds due keys without a scan.
    expiries: BTreeSet<(i64, u32, String)>,
    /// Number of entries.
    count: u64,
    /// Sum of [`Entry::size`].
    bytes: u64,
}

impl Index {
    /// The entry at (owner, key), expired or not.
    pub fn get(&self, owner: u32, key: &str) -> Option<&Entry> {
        self.owners.get(&owner)?.get(key)
    }

    /// The entry at (owner, key) unless it has expired at `now`.
    pub fn live(&self, owner: u32, key: &str, now: i64) -> Option<&Entry> {
        self.get(owner, key).filter(|e| !e.expired(now))
    }

    /// Number of entries (expired ones included until purged).
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Bytes held (keys plus values).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Sets or removes (owner, key), keeping the counters and the expiry index right.
    pub fn put(&mut self, owner: u32, key: &str, entry: Option<Entry>) {
        let map = self.owners.entry(owner).or_default();
        let old = match &entry {
            Some(e) => map.insert(key.to_owned(), e.clone()),
            None => map.remove(key),
        };
        if map.is_empty() {
            self.owners.remove(&owner);
        }
        if let Some(old) = old {
            self.count -= 1;
            self.bytes -= old.size(key);
            if let Some(at) = old.expires_at {
                self.expiries.remove(&(at, owner, key.to_owned()));
            }
        }
        if let Some(new) = entry {
            self.count += 1;
            self.bytes += new.size(key);
            if let Some(at) = new.expires_at {
                self.expiries.insert((at, owner, key.to_owned()));
            }
        }
    }

    /// Every key of `owner`, expired ones included.
    pub fn keys_of(&self, owner: u32) -> Vec<String> {
        self.owners
            .get(&owner)
            .map(|map| map.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Every owner id holding agent keys (not [`PLAIN`]).
    pub fn agent_owners(&self) -> Vec<u32> {
        self.owners
            .keys()
            .copied()
            .filter(|&o| o != PLAIN)
            .collect()
    }

    /// Up to `max` (owner, key) pairs whose expiry is at or before `now`, earliest first.
    pub fn due(&self, now: i64, max: usize) -> Vec<(u32, String)> {
        self.expiries
            .range(..(now.saturating_add(1), PLAIN, String::new()))
            .take(max)
            .map(|(_, owner, key)| (*owner, key.clone()))
            .collect()
    }

    /// The live keys of `owner` that start with `prefix`, in order.
    pub fn keys_with_prefix<'a>(
        &'a self,
        owner: u32,
        prefix: &'a str,
        now: i64,
    ) -> impl Iterator<Item = &'a str> + 'a {
        self.owners
            .get(&owner)
            .into_iter()
            .flat_map(move |map| {
                map.range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
                    .take_while(move |(k, _)| k.starts_with(prefix))
            })
            .filter(move |(_, e)| !e.expired(now))
            .map(|(k, _)| k.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(v: &str, expires_at: Option<i64>) -> Entry {
        Entry {
            scope: StateScope::Global,
            value: Arc::from(v),
            version: 1,
            expires_at,
        }
    }

    #[test]
    fn counters_and_expiries_follow_puts() {
        let mut ix = Index::default();
        ix.put(PLAIN, "a", Some(entry("1", Some(10))));
        ix.put(7, "b", Some(entry("22", None)));
        assert_eq!((ix.count(), ix.bytes()), (2, 2 + 3));
        assert_eq!(ix.due(10, 10), vec![(PLAIN, "a".to_owned())]);
        assert!(ix.due(9, 10).is_empty());
        ix.put(PLAIN, "a", Some(entry("333", None)));
        assert_eq!(ix.keys_of(PLAIN), ["a"]);
        assert!(ix.due(i64::MAX, 10).is_empty());
        assert_eq!((ix.count(), ix.bytes()), (2, 4 + 3));
        assert_eq!(ix.agent_owners(), vec![7]);
        ix.put(7, "b", None);
        ix.put(PLAIN, "a", None);
        assert_eq!((ix.count(), ix.bytes()), (0, 0));
    }

    #[test]
    fn prefix_scan_skips_expired_and_stops_at_prefix_end() {
        let mut ix = Index::default();
        for k in ["a", "ab", "abc", "abd", "b"] {
            ix.put(PLAIN, k, Some(entry("1", None)));
        }
        ix.put(PLAIN, "abe", Some(entry("1", Some(5))));
        let keys: Vec<_> = ix.keys_with_prefix(PLAIN, "ab", 5).collect();
        assert_eq!(keys, ["ab", "abc", "abd"]);
        let keys: Vec<_> = ix.keys_with_prefix(PLAIN, "ab", 4).collect();
        assert_eq!(keys, ["ab", "abc", "abd", "abe"]);
        assert_eq!(ix.keys_with_prefix(3, "", 0).count(), 0);
    }
}
