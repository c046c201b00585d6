//! The kernel's shared state, handed to every connection and handler.

use std::sync::{Arc, OnceLock};

use crate::agents::{Agents, Host};
use crate::config::Config;
use crate::ids::IdSpace;
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
    /// The server's shared accept machinery, set once serving starts (agents' sockets join
    /// it).
    pub listeners: OnceLock<Listeners>,
}

impl Kernel {
    /// A kernel with `config` whose agents use `host`.
    pub fn new(config: Config, host: Host) -> Kernel {
        Kernel {
            config,
            agents: Arc::new(Agents::new(host)),
            ids: IdSpace::starting_at(1),
            listeners: OnceLock::new(),
        }
    }
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
