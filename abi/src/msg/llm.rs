//! THINK, LLM_REPORT.

use serde::{Deserialize, Serialize};

use crate::msg::syscall;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
/// STUB (to be written).
pub struct ThinkRequest {}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
/// STUB (to be written).
pub struct ThinkReply {}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
/// STUB (to be written).
pub struct LlmReportRequest {}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
/// STUB (to be written).
pub struct LlmReportReply {}

syscall! {
    ThinkRequest => Think, ThinkReply;
    LlmReportRequest => LlmReport, LlmReportReply;
}
