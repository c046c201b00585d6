//! SPAWN, KILL, LIST, PAUSE, RESUME.

use serde::{Deserialize, Serialize};

use crate::msg::syscall;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
/// STUB (to be written): an agent's state as LIST reports it.
pub struct AgentState {}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
/// STUB (to be written).
pub struct SpawnRequest {}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
/// STUB (to be written).
pub struct SpawnReply {}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
/// STUB (to be written).
pub struct KillRequest {}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
/// STUB (to be written).
pub struct KillReply {}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
/// STUB (to be written).
pub struct ListRequest {}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
/// STUB (to be written).
pub struct ListReply {}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
/// STUB (to be written).
pub struct PauseRequest {}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
/// STUB (to be written).
pub struct PauseReply {}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
/// STUB (to be written).
pub struct ResumeRequest {}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
/// STUB (to be written).
pub struct ResumeReply {}

syscall! {
    SpawnRequest => Spawn, SpawnReply;
    KillRequest => Kill, KillReply;
    ListRequest => List, ListReply;
    PauseRequest => Pause, PauseReply;
    ResumeRequest => Resume, ResumeReply;
}
