//! METRICS_SYSTEM, METRICS_AGENT, METRICS_ALL_AGENTS, METRICS_CGROUP: resource usage of the
//! host, of agents' processes and of cgroups.
//!
//! Byte counts are bytes, CPU times µs, percentages 0 to 100 (`cpu.percent` of a process may
//! exceed 100 when it uses several CPUs).

use serde::{Deserialize, Serialize};

use crate::msg::syscall;

#[cfg(test)]
use crate::msg::lifecycle::finite_f64;

/// METRICS_SYSTEM `{}`: the host's metrics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct MetricsSystemRequest {}

/// METRICS_SYSTEM reply: `{success, metrics}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct MetricsSystemReply {
    /// The metrics were read.
    pub success: bool,
    /// The host's metrics.
    pub metrics: SystemMetrics,
}

/// The host's metrics: `{timestamp, cpu, memory, disk, network}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct SystemMetrics {
    /// When they were read, ms since the Unix epoch.
    pub timestamp: u64,
    /// CPU usage.
    pub cpu: SystemCpu,
    /// Memory usage.
    pub memory: SystemMemory,
    /// Disk I/O.
    pub disk: SystemDisk,
    /// Network I/O.
    pub network: SystemNetwork,
}

/// The host's CPU usage: `{percent, per_core, count, load_avg}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct SystemCpu {
    /// Busy time of all CPUs together since the previous reading, 0 to 100.
    #[cfg_attr(test, proptest(strategy = "finite_f64()"))]
    pub percent: f64,
    /// The same per CPU, in CPU order.
    #[cfg_attr(
        test,
        proptest(strategy = "proptest::collection::vec(finite_f64(), 0..4)")
    )]
    pub per_core: Vec<f64>,
    /// Number of CPUs.
    pub count: u32,
    /// Load averages over 1, 5 and 15 minutes.
    #[cfg_attr(test, proptest(strategy = "proptest::array::uniform3(finite_f64())"))]
    pub load_avg: [f64; 3],
}

/// The host's memory: `{total, available, used, percent}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct SystemMemory {
    /// Physical memory, bytes.
    pub total: u64,
    /// Memory available to new work without swapping (`MemAvailable`), bytes.
    pub available: u64,
    /// `total - available`, bytes.
    pub used: u64,
    /// `used` as a percentage of `total`.
    #[cfg_attr(test, proptest(strategy = "finite_f64()"))]
    pub percent: f64,
}

/// The host's disk I/O since boot: `{read_bytes, write_bytes}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct SystemDisk {
    /// Bytes read from all disks.
    pub read_bytes: u64,
    /// Bytes written to all disks.
    pub write_bytes: u64,
}

/// The host's network I/O since boot: `{bytes_sent, bytes_recv}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct SystemNetwork {
    /// Bytes sent on all interfaces except loopback.
    pub bytes_sent: u64,
    /// Bytes received on all interfaces except loopback.
    pub bytes_recv: u64,
}

/// METRICS_AGENT `{agent_id?}`: one agent's metrics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct MetricsAgentRequest {
    /// The agent; absent: the caller.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub agent_id: Option<u32>,
}

impl MetricsAgentRequest {
    /// The agent asked about: `agent_id`, else `caller` (the caller's own id).
    pub fn agent(&self, caller: u32) -> u32 {
        self.agent_id.unwrap_or(caller)
    }
}

/// METRICS_AGENT reply: `{success, metrics}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct MetricsAgentReply {
    /// The metrics were read.
    pub success: bool,
    /// The agent's metrics.
    pub metrics: AgentMetrics,
}

/// One agent's metrics: `{agent_id, name, pid, status, uptime_ms, process, cgroup?}`, plus
/// our `restarts?` and `init_pid?`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct AgentMetrics {
    /// The agent's id.
    pub agent_id: u32,
    /// Its name (empty when it has none).
    pub name: String,
    /// Its pid as the host sees it: the agent's own process (the script), not the sandbox's
    /// init (see `init_pid`). 0 between a crash and its restart, when it has no process.
    pub pid: i32,
    /// Its state as text; our kernel sends LIST's upper-case spelling (`RUNNING`).
    pub status: String,
    /// ms since its current process started.
    pub uptime_ms: u64,
    /// Its process's usage.
    pub process: ProcessMetrics,
    /// Its cgroup's usage; absent when it has no cgroup (not sandboxed, or cgroups
    /// unavailable).
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub cgroup: Option<CgroupMetrics>,
    /// Extension: how often its restart policy restarted it so far.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub restarts: Option<u32>,
    /// Extension: the host pid of its sandbox's init (PID 1 of the sandbox, the agent's
    /// parent); absent when not sandboxed.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub init_pid: Option<i32>,
}

/// A process's usage: `{pid, cpu, memory, threads, fds}`, plus our `io?`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct ProcessMetrics {
    /// The pid as the host sees it.
    pub pid: i32,
    /// CPU usage.
    pub cpu: ProcessCpu,
    /// Memory usage.
    pub memory: ProcessMemory,
    /// Number of threads.
    pub threads: u32,
    /// Number of open file descriptors.
    pub fds: u32,
    /// Extension: the process's storage I/O since it started (`/proc/<pid>/io`); absent when
    /// the host does not report it.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub io: Option<IoBytes>,
}

/// Bytes read from and written to storage: `{read_bytes, write_bytes}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct IoBytes {
    /// Bytes read from storage (page cache hits not counted).
    pub read_bytes: u64,
    /// Bytes written to storage (or to the page cache, to be written).
    pub write_bytes: u64,
}

/// A process's CPU usage: `{percent}`, plus our `time_usec?`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct ProcessCpu {
    /// CPU time used since the previous reading as a percentage of one CPU (above 100 when
    /// it uses several).
    #[cfg_attr(test, proptest(strategy = "finite_f64()"))]
    pub percent: f64,
    /// Extension: CPU time used since it started (user and system), µs.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub time_usec: Option<u64>,
}

/// A process's memory: `{rss, vms}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct ProcessMemory {
    /// Resident set size, bytes.
    pub rss: u64,
    /// Virtual memory size, bytes.
    pub vms: u64,
}

/// METRICS_ALL_AGENTS `{}`: every live agent's metrics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct MetricsAllAgentsRequest {}

/// METRICS_ALL_AGENTS reply: `{success, agents, count}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct MetricsAllAgentsReply {
    /// The metrics were read.
    pub success: bool,
    /// One entry per live agent, by id.
    pub agents: Vec<AgentMetrics>,
    /// `agents.len()`.
    pub count: u64,
}

/// METRICS_CGROUP `{cgroup_path?}`: a cgroup's usage.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct MetricsCgroupRequest {
    /// The cgroup to read; absent: the caller's own cgroup.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub cgroup_path: Option<String>,
}

/// METRICS_CGROUP reply: `{success, metrics}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct MetricsCgroupReply {
    /// The metrics were read.
    pub success: bool,
    /// The cgroup's usage.
    pub metrics: CgroupMetrics,
}

/// A cgroup's usage: `{cpu, memory, pids, version?, path?, io?}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct CgroupMetrics {
    /// CPU time.
    pub cpu: CgroupCpu,
    /// Memory.
    pub memory: CgroupMemory,
    /// Processes and threads.
    pub pids: CgroupPids,
    /// Extension: the cgroup version the numbers were read from, `"v1"` or `"v2"` (`"hybrid"`
    /// when they come from hierarchies of both).
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub version: Option<String>,
    /// Extension: the cgroup's path.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub path: Option<String>,
    /// Extension: storage I/O of the cgroup (v2 `io.stat`, v1 `blkio`); absent when the I/O
    /// controller is not in force for it.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub io: Option<IoBytes>,
}

/// A cgroup's CPU time: `{usage_usec, user_usec, system_usec, throttled_usec?, nr_throttled?}`,
/// plus our `percent?` and `nr_periods?`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct CgroupCpu {
    /// CPU time used in total, µs.
    pub usage_usec: u64,
    /// Of which in user mode, µs.
    pub user_usec: u64,
    /// Of which in kernel mode, µs.
    pub system_usec: u64,
    /// Time throttled by the CPU limit, µs; absent when the host does not report it.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub throttled_usec: Option<u64>,
    /// Number of periods throttled; absent when the host does not report it.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub nr_throttled: Option<u64>,
    /// Extension: CPU time used since the previous reading as a percentage of one CPU
    /// (above 100 when it uses several); absent on the first reading of a cgroup whose age
    /// the kernel does not know.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    #[cfg_attr(test, proptest(strategy = "proptest::option::of(finite_f64())"))]
    pub percent: Option<f64>,
    /// Extension: number of CPU quota periods elapsed while it had runnable tasks; absent
    /// when the host does not report it.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub nr_periods: Option<u64>,
}

/// A cgroup's memory: `{current, max?, peak?}`, plus our `swap?`, `swap_max?` and
/// `oom_kills?`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct CgroupMemory {
    /// Memory in use, bytes.
    pub current: u64,
    /// The limit, bytes; absent (or `null`): unlimited.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub max: Option<u64>,
    /// The highest usage seen, bytes; absent when the host does not report it.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub peak: Option<u64>,
    /// Extension: swap in use, bytes; absent without swap accounting.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub swap: Option<u64>,
    /// Extension: the swap limit, bytes (v1: of memory and swap together,
    /// `memory.memsw.limit_in_bytes`); absent when unlimited or not accounted.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub swap_max: Option<u64>,
    /// Extension: processes killed by the OOM killer in it; absent without the memory
    /// controller.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub oom_kills: Option<u64>,
}

/// A cgroup's processes: `{current, max?}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct CgroupPids {
    /// Processes and threads in the cgroup.
    pub current: u64,
    /// The limit; absent (or `null`): unlimited.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub max: Option<u64>,
}

syscall! {
    MetricsSystemRequest => MetricsSystem, MetricsSystemReply;
    MetricsAgentRequest => MetricsAgent, MetricsAgentReply;
    MetricsAllAgentsRequest => MetricsAllAgents, MetricsAllAgentsReply;
    MetricsCgroupRequest => MetricsCgroup, MetricsCgroupReply;
}
