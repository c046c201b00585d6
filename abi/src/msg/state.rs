//! STORE, FETCH, DELETE, KEYS: the shared key-value store.
//!
//! Values are any JSON value ([`Json`]). Every key has a version that grows with each write;
//! `if_version` on STORE (our extension) makes a write compare-and-set.

use serde::{Deserialize, Serialize};

use crate::codec::Json;
use crate::msg::syscall;

#[cfg(test)]
use crate::msg::lifecycle::finite_f64;

/// Where a stored key lives and how long.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[serde(rename_all = "lowercase")]
pub enum StateScope {
    /// `"global"` (the default): one key for everyone, durable.
    #[default]
    Global,
    /// `"agent"`: private to the storing agent, survives its restarts and kernel restarts.
    Agent,
    /// `"session"`: kept in memory only, gone when the kernel restarts.
    Session,
}

impl StateScope {
    /// The wire spelling: `global`, `agent`, `session`.
    pub const fn as_str(self) -> &'static str {
        match self {
            StateScope::Global => "global",
            StateScope::Agent => "agent",
            StateScope::Session => "session",
        }
    }
}

/// STORE `{key, value, scope, ttl?}`: set a key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct StoreRequest {
    /// The key (required).
    pub key: String,
    /// The value, any JSON value (required; `null` is a value).
    pub value: Json,
    /// `global` (default), `agent` or `session`.
    #[serde(default)]
    pub scope: StateScope,
    /// Seconds until the key expires (`2.5` allowed); absent: never.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    #[cfg_attr(test, proptest(strategy = "proptest::option::of(finite_f64())"))]
    pub ttl: Option<f64>,
    /// Extension, compare-and-set: write only if the key's current version is this one
    /// (`0`: only if the key does not exist); otherwise the kernel answers `conflict`.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub if_version: Option<u64>,
}

/// STORE reply: `{success, key}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct StoreReply {
    /// The value was stored.
    pub success: bool,
    /// The key as given.
    pub key: String,
    /// Extension: the key's version after this write (1 for a new key).
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub version: Option<u64>,
}

/// FETCH `{key}`: read a key (the plain key first, then the caller's agent-scoped one).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct FetchRequest {
    /// The key (required).
    pub key: String,
}

/// FETCH reply: `{success, exists, value, scope?}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct FetchReply {
    /// The lookup was carried out (a missing key is not an error).
    pub success: bool,
    /// The key exists.
    pub exists: bool,
    /// The value; `null` when the key does not exist.
    pub value: Json,
    /// The scope the key was found in; absent when it does not exist.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub scope: Option<StateScope>,
    /// Extension: the key's version (for STORE `if_version`); absent when it does not exist.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub version: Option<u64>,
}

/// DELETE `{key}`: remove a key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct DeleteRequest {
    /// The key (required).
    pub key: String,
}

/// DELETE reply: `{success, deleted}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct DeleteReply {
    /// The request was carried out.
    pub success: bool,
    /// The key existed and is gone.
    pub deleted: bool,
}

/// KEYS `{prefix?}`: list the keys the caller can see.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct KeysRequest {
    /// Only keys starting with this; absent: all.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub prefix: Option<String>,
}

/// KEYS reply: `{success, keys, count}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct KeysReply {
    /// The request was carried out.
    pub success: bool,
    /// The keys, sorted.
    pub keys: Vec<String>,
    /// `keys.len()`.
    pub count: u64,
}

syscall! {
    StoreRequest => Store, StoreReply;
    FetchRequest => Fetch, FetchReply;
    DeleteRequest => Delete, DeleteReply;
    KeysRequest => Keys, KeysReply;
}
