//! Metrics: what the host, agents' processes and cgroups use (METRICS_SYSTEM, METRICS_AGENT,
//! METRICS_ALL_AGENTS, METRICS_CGROUP; see docs/metrics.md).
//!
//! * [`proc`]: `/proc` readers (the `procfs` crate) for one process and for the host;
//! * [`cgroup`]: a cgroup's usage from its control files, v1 and v2, through the cgroup
//!   layer's [`CgroupFs`] (the fake tree in tests);
//! * [`cpu`]: the kept previous readings that CPU percentages are measured against.
//!
//! [`Metrics`] ties them together and is what other code calls: the syscall handlers, and
//! anything that wants per-agent figures (an exporter, `clove top`): [`Metrics::agent`] for
//! one agent, [`all_agents`] for every live one, [`Metrics::system`] for the host. Every read
//! is blocking file I/O: the `async` helpers here run it on a blocking thread, never on the
//! runtime.
//!
//! An agent's figures are of two kinds. `process` is its main process: the agent itself (the
//! script), not the sandbox's init that is its parent (`init_pid`). `cgroup` is the whole
//! sandbox: init, the agent, everything it forked and the agents it spawned (nested cgroups),
//! which is what its limits apply to.

pub mod cgroup;
pub mod cpu;
pub mod proc;
pub mod prometheus;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use clove_abi::msg::{AgentMetrics, CgroupMetrics, ProcessMetrics, SystemMetrics};
use clove_abi::{ErrorCode, WireError};

use crate::agents::{Agent, Agents};
use crate::sandbox::cgroup::{AgentCgroup, CgroupError, CgroupFs};
use crate::sync::lock;
use cgroup::CgroupDir;
use cpu::{Key, Samples};

/// The kernel's metrics readers and the CPU readings they keep. One per kernel; cheap to
/// share (`Arc`).
#[derive(Debug, Default)]
pub struct Metrics {
    samples: Mutex<Samples>,
}

impl Metrics {
    /// Readers with no previous readings.
    pub fn new() -> Metrics {
        Metrics::default()
    }

    /// The host's metrics (blocking).
    pub fn system(&self) -> Result<SystemMetrics, WireError> {
        proc::system(&self.samples).map_err(|e| internal(e.to_string()))
    }

    /// One process's metrics (blocking); `None` when it is gone.
    pub fn process(&self, pid: i32) -> Option<ProcessMetrics> {
        match proc::process(pid, &self.samples) {
            Ok(m) => Some(m),
            Err(e) if e.is_gone() => None,
            Err(e) => {
                tracing::warn!("metrics: {e}");
                None
            }
        }
    }

    /// The usage of the cgroup whose directories are `dirs` (blocking). Its CPU percent is
    /// over the time since the previous reading of the same cgroup; on the first reading it
    /// is the average since `started` when given, else absent.
    pub fn cgroup(
        &self,
        fs: &dyn CgroupFs,
        dirs: &[CgroupDir],
        started: Option<Instant>,
    ) -> Result<CgroupMetrics, CgroupError> {
        let mut m = cgroup::read(fs, dirs)?;
        let now = Instant::now();
        let key = Key::Cgroup(m.path.clone().unwrap_or_default());
        m.cpu.percent = lock(&self.samples)
            .usage_percent(key, m.cpu.usage_usec, now)
            .or_else(|| {
                started.map(|s| cpu::average_percent(m.cpu.usage_usec, now.duration_since(s)))
            });
        Ok(m)
    }

    /// An agent cgroup's usage (blocking); see [`Metrics::cgroup`].
    pub fn agent_cgroup(
        &self,
        cg: &AgentCgroup,
        started: Option<Instant>,
    ) -> Result<CgroupMetrics, CgroupError> {
        self.cgroup(cg.fs.as_ref(), &dirs_of(cg), started)
    }

    /// One agent's metrics (blocking): its main process and its cgroup. Best effort: a
    /// figure that cannot be read is left out (and logged), the agent is still reported.
    pub fn agent(&self, agent: &Agent) -> AgentMetrics {
        let run = agent.run();
        let sandboxed = agent.view.is_some();
        let main = if sandboxed {
            proc::sandboxed_agent(run.pid)
        } else {
            Some(run.pid)
        };
        let process = main.and_then(|pid| self.process(pid));
        let cgroup =
            run.cgroup
                .as_ref()
                .and_then(|cg| match self.agent_cgroup(cg, Some(run.started)) {
                    Ok(m) => Some(m),
                    Err(e) => {
                        tracing::warn!(agent = agent.id, "metrics: {e}");
                        None
                    }
                });
        AgentMetrics {
            agent_id: agent.id,
            name: agent.name.clone(),
            pid: process.as_ref().map_or(0, |p| p.pid),
            status: agent.state().as_str().to_owned(),
            uptime_ms: u64::try_from(run.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            process: process.unwrap_or_default(),
            cgroup,
            restarts: Some(agent.restarts()),
            init_pid: sandboxed.then_some(run.pid),
        }
    }
}

/// An agent cgroup's directories, for [`cgroup::read`].
pub fn dirs_of(cg: &AgentCgroup) -> Vec<CgroupDir> {
    cg.dirs
        .iter()
        .map(|d| CgroupDir {
            version: d.version,
            dir: d.dir.clone(),
        })
        .collect()
}

/// The metrics of one agent, read on a blocking thread.
pub async fn agent(metrics: &Arc<Metrics>, agent: Arc<Agent>) -> Result<AgentMetrics, WireError> {
    let metrics = Arc::clone(metrics);
    blocking(move || Ok(metrics.agent(&agent))).await
}

/// The metrics of every live agent that `visible` lets through, by id, read on one blocking
/// thread: what METRICS_ALL_AGENTS answers, and what an exporter or `clove top` can call
/// with `|_| true`.
pub async fn all_agents(
    metrics: &Arc<Metrics>,
    agents: &Agents,
    visible: impl Fn(&Agent) -> bool,
) -> Result<Vec<AgentMetrics>, WireError> {
    let mut live: Vec<Arc<Agent>> = agents.live().into_iter().filter(|a| visible(a)).collect();
    live.sort_by_key(|a| a.id);
    let metrics = Arc::clone(metrics);
    blocking(move || Ok(live.iter().map(|a| metrics.agent(a)).collect())).await
}

/// Runs blocking reads off the runtime.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, WireError> + Send + 'static,
) -> Result<T, WireError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| internal(format!("metrics: the reading thread failed: {e}")))?
}

fn internal(message: String) -> WireError {
    WireError::new(ErrorCode::Internal, message)
}
