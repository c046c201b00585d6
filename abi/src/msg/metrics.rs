//! METRICS_SYSTEM, METRICS_AGENT, METRICS_ALL_AGENTS, METRICS_CGROUP.

use serde::{Deserialize, Serialize};

use crate::msg::syscall;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
/// STUB (to be written).
pub struct MetricsSystemRequest {}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
/// STUB (to be written).
pub struct MetricsSystemReply {}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
/// STUB (to be written).
pub struct MetricsAgentRequest {}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
/// STUB (to be written).
pub struct MetricsAgentReply {}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
/// STUB (to be written).
pub struct MetricsAllAgentsRequest {}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
/// STUB (to be written).
pub struct MetricsAllAgentsReply {}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
/// STUB (to be written).
pub struct MetricsCgroupRequest {}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
/// STUB (to be written).
pub struct MetricsCgroupReply {}

syscall! {
    MetricsSystemRequest => MetricsSystem, MetricsSystemReply;
    MetricsAgentRequest => MetricsAgent, MetricsAgentReply;
    MetricsAllAgentsRequest => MetricsAllAgents, MetricsAllAgentsReply;
    MetricsCgroupRequest => MetricsCgroup, MetricsCgroupReply;
}
