//! The kernel's shared state, handed to every connection and handler.

use crate::config::Config;
use crate::ids::IdSpace;

/// Everything handlers share. Subsystems (agents, state, events, ...) join here as they land.
#[derive(Debug)]
pub struct Kernel {
    /// The effective configuration.
    pub config: Config,
    /// The one id space for connections and agents.
    pub ids: IdSpace,
}

impl Kernel {
    /// A kernel with `config`.
    pub fn new(config: Config) -> Kernel {
        Kernel {
            config,
            ids: IdSpace::starting_at(1),
        }
    }
}

/// Who is calling, as the kernel established it (never from the payload or the header).
#[derive(Debug, Clone)]
pub struct Caller {
    /// The caller's id in the one id space; written into every reply header.
    pub id: u32,
    /// Peer uid from SO_PEERCRED.
    pub uid: u32,
    /// Peer gid from SO_PEERCRED.
    pub gid: u32,
    /// Peer pid from SO_PEERCRED, when the kernel reported one.
    pub pid: Option<i32>,
}
