//! Metrics as typed methods of both clients (METRICS_SYSTEM, METRICS_AGENT,
//! METRICS_ALL_AGENTS, METRICS_CGROUP), written once in [`metrics_methods!`] like the
//! lifecycle ones in `agents.rs`.

/// The metrics methods, for a client type with a `call` method (see `agent_methods!` for
/// how the two clients expand it).
macro_rules! metrics_methods {
    ($($async_kw:ident)?; $($await:tt)*) => {
        /// METRICS_SYSTEM: the host's CPU (percent since the previous reading, per core,
        /// load), memory, disk and network figures.
        pub $($async_kw)? fn system_metrics(
            &mut self,
        ) -> Result<$crate::msg::SystemMetrics, $crate::Error> {
            Ok(self.call(&$crate::msg::MetricsSystemRequest {})$($await)*?.metrics)
        }

        /// METRICS_AGENT: one agent's figures, its main process and its cgroup (`None`: the
        /// calling agent itself; an operator must name one).
        pub $($async_kw)? fn agent_metrics(
            &mut self,
            agent_id: Option<u32>,
        ) -> Result<$crate::msg::AgentMetrics, $crate::Error> {
            Ok(self.call(&$crate::msg::MetricsAgentRequest { agent_id })$($await)*?.metrics)
        }

        /// METRICS_ALL_AGENTS: the figures of every live agent this client may see, by id.
        pub $($async_kw)? fn all_agent_metrics(
            &mut self,
        ) -> Result<Vec<$crate::msg::AgentMetrics>, $crate::Error> {
            Ok(self.call(&$crate::msg::MetricsAllAgentsRequest {})$($await)*?.agents)
        }

        /// METRICS_CGROUP: a cgroup's figures. `None`: the calling agent's own cgroup (for a
        /// root operator, the kernel's whole subtree); `agent-<id>` (or a path a reply gave):
        /// that agent's; an absolute host path: root operators only.
        pub $($async_kw)? fn cgroup_metrics(
            &mut self,
            cgroup_path: Option<&str>,
        ) -> Result<$crate::msg::CgroupMetrics, $crate::Error> {
            let req = $crate::msg::MetricsCgroupRequest {
                cgroup_path: cgroup_path.map(str::to_owned),
            };
            Ok(self.call(&req)$($await)*?.metrics)
        }
    };
}
pub(crate) use metrics_methods;
