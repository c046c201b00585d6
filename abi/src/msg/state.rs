//! STORE, FETCH, DELETE, KEYS.

use serde::{Deserialize, Serialize};

use crate::msg::syscall;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
/// STUB (to be written).
pub struct StoreRequest {}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
/// STUB (to be written).
pub struct StoreReply {}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
/// STUB (to be written).
pub struct FetchRequest {}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
/// STUB (to be written).
pub struct FetchReply {}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
/// STUB (to be written).
pub struct DeleteRequest {}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
/// STUB (to be written).
pub struct DeleteReply {}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
/// STUB (to be written).
pub struct KeysRequest {}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
/// STUB (to be written).
pub struct KeysReply {}

syscall! {
    StoreRequest => Store, StoreReply;
    FetchRequest => Fetch, FetchReply;
    DeleteRequest => Delete, DeleteReply;
    KeysRequest => Keys, KeysReply;
}
