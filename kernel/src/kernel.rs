//! The kernel's shared state, handed to every connection and handler.

use std::sync::{Arc, OnceLock};

use clove_abi::msg::EventType;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::agents::{Agents, Host, LifecycleEvent, Observer};
use crate::config::Config;
use crate::events::{Audience, Events};
use crate::ids::IdSpace;
use crate::ipc::{Ipc, MailboxLimits};
use crate::server::Listeners;

/// Everything handlers share. Subsystems (agents, state, events, ...) join here as they land.
#[derive(Debug)]
pub struct Kernel {
    /// The effective configuration.
    pub config: Config,
    /// The one id space for connections and agents.
    pub ids: IdSpace,
    /// The agents.
    pub agents: Arc<Agents>,
    /// The event bus.
    pub events: Arc<Events>,
    /// Mailboxes and registered names.
    pub ipc: Arc<Ipc>,
    /// Cancelled when the kernel starts shutting down: requests that wait (RECV, POLL_EVENTS)
    /// end early.
    pub stopping: CancellationToken,
    /// The server's shared accept machinery, set once serving starts (agents' sockets join
    /// it).
    pub listeners: OnceLock<Listeners>,
}

impl Kernel {
    /// A kernel with `config` whose agents use `host`.
    pub fn new(config: Config, host: Host) -> Kernel {
        let events = Arc::new(Events::new(config.event_queue));
        let ipc = Arc::new(Ipc::new(MailboxLimits {
            messages: config.mailbox_messages,
            bytes: config.mailbox_bytes,
        }));
        let observers: Vec<Observer> = vec![
            publish_lifecycle(Arc::clone(&events)),
            release_on_exit(Arc::clone(&ipc), Arc::clone(&events)),
        ];
        Kernel {
            config,
            agents: Arc::new(Agents::new(host, observers)),
            events,
            ipc,
            ids: IdSpace::starting_at(1),
            stopping: CancellationToken::new(),
            listeners: OnceLock::new(),
        }
    }
}

/// Publishes AGENT_SPAWNED, AGENT_EXITED (and RESOURCE_WARNING for an OOM kill),
/// AGENT_PAUSED and AGENT_RESUMED.
fn publish_lifecycle(events: Arc<Events>) -> Observer {
    Box::new(move |event| match event {
        LifecycleEvent::Spawned { id, name, pid } => events.kernel(
            EventType::AgentSpawned,
            json!({"agent_id": id, "name": name, "pid": pid}),
            *id,
            Audience::Everyone,
        ),
        LifecycleEvent::Exited { id, name, reason } => {
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
                       "reason": reason.describe()}),
                *id,
                Audience::Everyone,
            );
        }
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

/// An exited agent's mailbox, names and subscriptions go with it.
fn release_on_exit(ipc: Arc<Ipc>, events: Arc<Events>) -> Observer {
    Box::new(move |event| {
        if let LifecycleEvent::Exited { id, .. } = event {
            ipc.release(*id);
            events.forget(*id);
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
