//! The kernel's shared state, handed to every connection and handler.

use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use clove_abi::msg::EventType;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::agents::{Agents, Host, LifecycleEvent, Observer};
use crate::asyncs::Asyncs;
use crate::audit::Audit;
use crate::config::Config;
use crate::events::{Audience, Events};
use crate::host::http::{Http, HttpSettings};
use crate::ids::IdSpace;
use crate::ipc::{Ipc, MailboxLimits};
use crate::server::Listeners;
use crate::state::{StateChange, StateLimits, StateStore};
use crate::supervisor::group::Groups;

/// Everything handlers share. Subsystems (agents, state, events, ...) join here as they land.
#[derive(Debug)]
pub struct Kernel {
    /// The effective configuration.
    pub config: Config,
    /// The one id space for connections and agents.
    pub ids: IdSpace,
    /// The agents.
    pub agents: Arc<Agents>,
    /// Supervisor groups.
    pub groups: Arc<Groups>,
    /// The event bus.
    pub events: Arc<Events>,
    /// Mailboxes and registered names.
    pub ipc: Arc<Ipc>,
    /// The durable key-value store.
    pub state: Arc<StateStore>,
    /// The hash-chained audit log: `kernel.audit.record(AuditRecord { .. })` from any hook.
    pub audit: Arc<Audit>,
    /// Cancelled when the kernel starts shutting down: requests that wait (RECV, POLL_EVENTS)
    /// end early.
    pub stopping: CancellationToken,
    /// The server's shared accept machinery, set once serving starts (agents' sockets join
    /// it).
    pub listeners: OnceLock<Listeners>,
    /// HTTP for callers, behind the address policy.
    pub http: Arc<Http>,
    /// Async requests and their results, per caller (ASYNC_POLL).
    pub asyncs: Arc<Asyncs>,
    /// Recording and replay (RECORD_*, REPLAY_*).
    pub recorder: crate::record::Recorder,
    /// THINK: the LLM providers and the fair scheduler in front of them.
    pub llm: Arc<crate::llm::Llm>,
    /// The metrics readers and their kept CPU readings (METRICS_*).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Syscalls answered, by opcode and result, and their latency (the metrics endpoint's).
    pub syscall_stats: crate::syscalls::stats::SyscallStats,
}

impl Kernel {
    /// A kernel with `config` whose agents use `host`, opening its state store in
    /// `state_dir`. Ids continue after the last block any earlier kernel on this state dir
    /// reserved.
    pub fn new(config: Config, host: Host, state_dir: &std::path::Path) -> anyhow::Result<Kernel> {
        let state = Arc::new(StateStore::open(
            state_dir,
            StateLimits {
                max_value_bytes: config.state_max_value,
                max_total_bytes: config.state_max_bytes,
                ..StateLimits::default()
            },
        )?);
        // The directories of the agents an earlier kernel saved stay for their restore; the
        // rest of what it left is set aside.
        let saved: Vec<u32> = state.saved_agents().iter().map(|a| a.id).collect();
        host.set_aside_previous_run(&saved);
        let ids = {
            let state = Arc::clone(&state);
            IdSpace::durable(Box::new(move |size| state.id_block(size)))?
        };
        let events = Arc::new(Events::new(config.event_queue));
        let ipc = Arc::new(Ipc::new(MailboxLimits {
            messages: config.mailbox_messages,
            bytes: config.mailbox_bytes,
        }));
        let audit = Arc::new(Audit::open(state_dir, crate::audit::limits_of(&config))?);
        // The audit observer looks owners up in the table it observes: set once it exists.
        let table: Arc<OnceLock<Weak<Agents>>> = Arc::new(OnceLock::new());
        let stopping = CancellationToken::new();
        let http = Arc::new(Http::new(&HttpSettings {
            allow_private: config.http_allow_private.clone(),
            resolve: config.http_resolve.clone(),
            max_response: config.http_max_response,
            max_timeout: config.http_max_timeout,
        })?);
        let asyncs = Asyncs::new(config.async_results, stopping.clone());
        let llm = crate::llm::Llm::new(&config.llm)?;
        let observers: Vec<Observer> = vec![
            publish_lifecycle(Arc::clone(&events)),
            crate::audit::observer(Arc::clone(&audit), Arc::clone(&table)),
            release_on_exit(Arc::clone(&ipc), Arc::clone(&events), Arc::clone(&state)),
            release_asyncs_on_exit(Arc::clone(&asyncs)),
            cancel_llm_on_exit(Arc::clone(&llm)),
        ];
        let agents = Arc::new(Agents::new(host, observers));
        let _ = table.set(Arc::downgrade(&agents));
        Ok(Kernel {
            groups: Groups::new(Arc::clone(&agents), Arc::clone(&state), config.kill_grace),
            config,
            agents,
            events,
            ipc,
            state,
            audit,
            ids,
            stopping,
            listeners: OnceLock::new(),
            http,
            asyncs,
            recorder: crate::record::Recorder::new(),
            llm,
            metrics: Arc::new(crate::metrics::Metrics::new()),
            syscall_stats: Default::default(),
        })
    }

    /// Starts the kernel's background work (inside the runtime): agent-scoped keys of agents
    /// that will not come back are dropped, state changes become STATE_CHANGED events, and
    /// expired keys are purged now and then.
    pub async fn start_background(self: &Arc<Kernel>) {
        // Only the agents an earlier kernel saved come back (`agents::restore`): the keys of
        // any other would be unreachable forever.
        let saved: Vec<u32> = self.state.saved_agents().iter().map(|a| a.id).collect();
        match self.state.retain_owners(&saved).await {
            Ok(0) => {}
            Ok(n) => tracing::info!("dropped {n} agent-scoped key(s) of agents that are gone"),
            Err(e) => tracing::warn!("drop the keys of agents that are gone: {}", e.message),
        }
        let mut changes = self.state.subscribe();
        let events = Arc::clone(&self.events);
        let stopping = self.stopping.clone();
        tokio::spawn(async move {
            loop {
                let change = tokio::select! {
                    c = changes.recv() => c,
                    () = stopping.cancelled() => return,
                };
                match change {
                    Ok(c) => publish_change(&events, &c),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!("{n} state change event(s) lost: the bus fell behind");
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        tokio::spawn(watch_resources(Arc::clone(self)));
        tokio::spawn(crate::record::replayer(Arc::clone(self)));
        let state = Arc::clone(&self.state);
        let stopping = self.stopping.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(PURGE_EVERY);
            loop {
                tokio::select! {
                    _ = every.tick() => {}
                    () = stopping.cancelled() => return,
                }
                if let Err(e) = state.purge_expired().await {
                    tracing::warn!("purge expired keys: {}", e.message);
                }
            }
        });
    }
}

impl Kernel {
    /// Stops every agent at shutdown: supervisor groups stop their trees (children in
    /// reverse start order, each with its grace; independent groups in parallel) while the
    /// agents outside groups stop all at once. Whatever a group has not stopped within
    /// [`Kernel::group_shutdown_limit`] is then killed at once: the shutdown never hangs.
    pub async fn stop_agents(&self) {
        self.agents.begin_shutdown();
        let grace = self.config.kill_grace;
        let limit = self.group_shutdown_limit();
        let groups = tokio::time::timeout(limit, self.groups.shutdown());
        let ungrouped = self.agents.stop_all(grace, |a| a.group.is_none());
        let (groups, ()) = tokio::join!(groups, ungrouped);
        if groups.is_err() {
            tracing::warn!("groups still stopping after {limit:?}; killing what is left");
        }
        self.agents.shutdown(Duration::ZERO).await;
    }

    /// The longest the ordered stop of the groups may take at shutdown.
    pub fn group_shutdown_limit(&self) -> Duration {
        (self.config.kill_grace * 4).max(Duration::from_secs(30))
    }
}

/// How often agents' memory and pids are compared with their limits.
const WATCH_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// RESOURCE_WARNING when usage reaches this share of the limit...
const NEAR_LIMIT: f64 = 0.9;
/// ...and again only after it has fallen below this share (no warning storm at the edge).
const REARM_BELOW: f64 = 0.8;

/// Publishes RESOURCE_WARNING when an agent's memory (the cgroup's usage, page cache included
/// on cgroup v1) or its number of processes and threads comes near its limit. OOM kills are
/// published when the agent exits (see [`publish_lifecycle`]).
async fn watch_resources(kernel: Arc<Kernel>) {
    let mut every = tokio::time::interval(WATCH_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // (agent, resource) pairs warned about and not yet back under REARM_BELOW.
    let mut warned: std::collections::HashSet<(u32, &'static str)> = Default::default();
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = kernel.stopping.cancelled() => return,
        }
        let live = kernel.agents.live();
        warned.retain(|(id, _)| live.iter().any(|a| a.id == *id));
        if live.is_empty() {
            continue;
        }
        // The cgroupfs reads block (a few µs each, two per agent): off the async workers.
        let Ok(usage) = tokio::task::spawn_blocking(move || read_usage(&live)).await else {
            continue;
        };
        for (agent, readings) in usage {
            for (resource, current, limit) in readings {
                let share = current as f64 / limit as f64;
                let key = (agent.id, resource);
                if share >= NEAR_LIMIT && warned.insert(key) {
                    kernel.events.kernel(
                        EventType::ResourceWarning,
                        json!({"agent_id": agent.id, "name": agent.name, "resource": resource,
                               "kind": "near_limit", "current": current, "limit": limit,
                               "percent": (share * 100.0).round(),
                               "message": format!("agent {} ({}) uses {current} of its {resource} limit {limit}", agent.id, agent.name)}),
                        agent.id,
                        Audience::Everyone,
                    );
                } else if share < REARM_BELOW {
                    warned.remove(&key);
                }
            }
        }
    }
}

/// One agent's memory and pids in use against its limits: `(resource, current, limit)`.
type Usage = (Arc<crate::agents::Agent>, Vec<(&'static str, u64, u64)>);

/// The usage of every agent with cgroups, with the readings that succeeded.
fn read_usage(live: &[Arc<crate::agents::Agent>]) -> Vec<Usage> {
    live.iter()
        .filter_map(|agent| {
            let cg = agent.cgroup()?;
            let limits = agent.spec.limits();
            let readings = [
                ("memory", cg.memory_current().ok(), limits.memory.bytes()),
                ("pids", cg.pids_current().ok(), limits.max_pids),
            ]
            .into_iter()
            .filter_map(|(resource, current, limit)| {
                current.filter(|_| limit > 0).map(|c| (resource, c, limit))
            })
            .collect();
            Some((Arc::clone(agent), readings))
        })
        .collect()
}

/// How often expired keys are removed for good (readers never see them either way).
const PURGE_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// A state change as a STATE_CHANGED event: agent-scoped changes reach their owner only.
fn publish_change(events: &Events, c: &StateChange) {
    let audience = c.owner.map_or(Audience::Everyone, Audience::Only);
    if events.wanted(EventType::StateChanged, audience) {
        events.kernel(
            EventType::StateChanged,
            json!({"key": c.key, "scope": c.scope, "kind": c.kind, "version": c.version, "by": c.by}),
            c.by,
            audience,
        );
    }
}

/// Publishes AGENT_SPAWNED, AGENT_EXITED (and RESOURCE_WARNING for an OOM kill),
/// AGENT_RESTARTING, AGENT_ESCALATED, GROUP_ESCALATED, AGENT_PAUSED and AGENT_RESUMED.
fn publish_lifecycle(events: Arc<Events>) -> Observer {
    Box::new(move |event| match event {
        LifecycleEvent::Spawned {
            id,
            name,
            pid,
            restarts,
        } => events.kernel(
            EventType::AgentSpawned,
            json!({"agent_id": id, "name": name, "pid": pid, "restarts": restarts}),
            *id,
            Audience::Everyone,
        ),
        LifecycleEvent::Restarting {
            id,
            name,
            restart_count,
            reason,
            backoff_ms,
        } => events.kernel(
            EventType::AgentRestarting,
            json!({"agent_id": id, "agent_name": name, "name": name,
                   "restart_count": restart_count, "exit_code": reason.code,
                   "signal": reason.signal, "oom": reason.oom, "reason": reason.describe(),
                   "backoff_ms": backoff_ms}),
            *id,
            Audience::Everyone,
        ),
        LifecycleEvent::Escalated {
            id,
            name,
            restart_count,
            reason,
        } => events.kernel(
            EventType::AgentEscalated,
            json!({"agent_id": id, "agent_name": name, "name": name,
                   "restart_count": restart_count, "exit_code": reason.code,
                   "signal": reason.signal, "oom": reason.oom, "reason": reason.describe()}),
            *id,
            Audience::Everyone,
        ),
        LifecycleEvent::Exited {
            id,
            name,
            reason,
            restarting,
            ..
        } => {
            if reason.oom {
                events.kernel(
                    EventType::ResourceWarning,
                    json!({"agent_id": id, "name": name, "resource": "memory", "kind": "oom_kill",
                           "message": format!("agent {id} ({name}) was killed for running out of memory")}),
                    *id,
                    Audience::Everyone,
                );
            }
            events.kernel(
                EventType::AgentExited,
                json!({"agent_id": id, "name": name, "exit_code": reason.code,
                       "signal": reason.signal, "oom": reason.oom, "killed": reason.killed,
                       "reason": reason.describe(), "restarting": restarting}),
                *id,
                Audience::Everyone,
            );
        }
        LifecycleEvent::GroupEscalated {
            group,
            parent,
            restarts,
            intensity,
            period,
            gave_up,
        } => events.kernel(
            EventType::GroupEscalated,
            crate::supervisor::group::escalated_event(
                group,
                parent.as_deref(),
                *restarts,
                *intensity,
                *period,
                *gave_up,
            ),
            0,
            Audience::Everyone,
        ),
        LifecycleEvent::Paused { id, name } => events.kernel(
            EventType::AgentPaused,
            json!({"agent_id": id, "name": name}),
            *id,
            Audience::Everyone,
        ),
        LifecycleEvent::Resumed { id, name } => events.kernel(
            EventType::AgentResumed,
            json!({"agent_id": id, "name": name}),
            *id,
            Audience::Everyone,
        ),
    })
}

/// An exited agent's mailbox, names, subscriptions and agent-scoped keys go with it, once it
/// has exited for good: a restarted agent keeps them. So does its saved spec (this is the one
/// place that forgets it): KILL, an escalation, a final exit its policy does not restart. An
/// exit caused by the kernel's shutdown keeps the spec and the keys: the next kernel brings
/// the agent back, and drops at its start the keys of every agent it does not bring back.
fn release_on_exit(ipc: Arc<Ipc>, events: Arc<Events>, state: Arc<StateStore>) -> Observer {
    Box::new(move |event| {
        if let LifecycleEvent::Exited {
            id,
            restarting: false,
            shutdown,
            ..
        } = event
        {
            ipc.release(*id);
            events.forget(*id);
            if *shutdown {
                return;
            }
            // Sent to the store now, in order behind the agent's own writes.
            let (forget, id) = (state.forget_agent(*id), *id);
            tokio::spawn(async move {
                if let Err(e) = forget.await {
                    tracing::warn!(
                        agent = id,
                        "forget its spec and agent-scoped keys: {}",
                        e.message
                    );
                }
            });
        }
    })
}

/// An agent's THINK calls, queued or running, end with its process (a restarted agent is a
/// new process: nobody waits for the old one's answers); what is counted of it goes when it
/// exits for good.
fn cancel_llm_on_exit(llm: Arc<crate::llm::Llm>) -> Observer {
    Box::new(move |event| {
        if let LifecycleEvent::Exited { id, restarting, .. } = event {
            if *restarting {
                llm.cancel(*id);
            } else {
                llm.forget(*id);
            }
        }
    })
}

/// An agent's async requests and results go when it exits for good (a restarted agent keeps
/// them, like its mailbox); its work still in flight is cancelled.
fn release_asyncs_on_exit(asyncs: Arc<Asyncs>) -> Observer {
    Box::new(move |event| {
        if let LifecycleEvent::Exited {
            id,
            restarting: false,
            ..
        } = event
        {
            asyncs.release(*id);
        }
    })
}

/// Who is calling, as the kernel established it (never from the payload or the header).
#[derive(Debug, Clone)]
pub struct Caller {
    /// The caller's id in the one id space; written into every reply header.
    pub id: u32,
    /// The connection came in on an agent's own socket: `id` is that agent's id.
    pub agent: bool,
    /// Peer uid from SO_PEERCRED.
    pub uid: u32,
    /// Peer gid from SO_PEERCRED.
    pub gid: u32,
    /// Peer pid from SO_PEERCRED, when the kernel reported one.
    pub pid: Option<i32>,
}
