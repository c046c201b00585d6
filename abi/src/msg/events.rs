//! SUBSCRIBE, UNSUBSCRIBE, POLL_EVENTS, EMIT.

use serde::{Deserialize, Serialize};

use crate::msg::syscall;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
/// STUB (to be written).
pub struct SubscribeRequest {}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
/// STUB (to be written).
pub struct SubscribeReply {}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
/// STUB (to be written).
pub struct UnsubscribeRequest {}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
/// STUB (to be written).
pub struct UnsubscribeReply {}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
/// STUB (to be written).
pub struct PollEventsRequest {}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
/// STUB (to be written).
pub struct PollEventsReply {}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
/// STUB (to be written).
pub struct EmitRequest {}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
/// STUB (to be written).
pub struct EmitReply {}

syscall! {
    SubscribeRequest => Subscribe, SubscribeReply;
    UnsubscribeRequest => Unsubscribe, UnsubscribeReply;
    PollEventsRequest => PollEvents, PollEventsReply;
    EmitRequest => Emit, EmitReply;
}
