//! The opcode table: every opcode of the original kernel, at the original's values, and the
//! range our own extensions live in.
//!
//! `0x13` is unassigned for good: tests use it as the canonical unknown opcode. The original
//! planned, but never built, 0x51 DOWNLOAD, 0x80–0x84 TASK_* (clashing with ASYNC_POLL) and
//! 0x92 SET_QUOTA; none of them is assigned here. Our extensions use 0xD0–0xEF only.

use std::fmt;

macro_rules! opcodes {
    ($( $(#[$doc:meta])* $variant:ident = $value:literal => $name:literal, )*) => {
        /// A known opcode. Frames carry the raw byte; [`Opcode::from_u8`] maps it here.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum Opcode {
            $( $(#[$doc])* $variant = $value, )*
        }

        impl Opcode {
            /// Every known opcode, in numeric order.
            pub const ALL: &'static [Opcode] = &[ $( Opcode::$variant, )* ];

            /// The opcode for a raw byte, if it is assigned.
            pub const fn from_u8(value: u8) -> Option<Opcode> {
                match value {
                    $( $value => Some(Opcode::$variant), )*
                    _ => None,
                }
            }

            /// The original's upper-case name, for logs and error messages (`"HELLO"`).
            pub const fn name(self) -> &'static str {
                match self {
                    $( Opcode::$variant => $name, )*
                }
            }
        }
    };
}

opcodes! {
    /// Echo the payload bytes.
    Noop = 0x00 => "NOOP",
    /// Ask the shared LLM.
    Think = 0x01 => "THINK",
    /// Run a command.
    Exec = 0x02 => "EXEC",
    /// Read a host file.
    Read = 0x03 => "READ",
    /// Write a host file.
    Write = 0x04 => "WRITE",
    /// Start an agent.
    Spawn = 0x10 => "SPAWN",
    /// Stop an agent.
    Kill = 0x11 => "KILL",
    /// List live agents.
    List = 0x12 => "LIST",
    /// Freeze an agent.
    Pause = 0x14 => "PAUSE",
    /// Thaw an agent.
    Resume = 0x15 => "RESUME",
    /// Send a message to one agent.
    Send = 0x20 => "SEND",
    /// Receive messages from the caller's mailbox.
    Recv = 0x21 => "RECV",
    /// Send a message to every agent.
    Broadcast = 0x22 => "BROADCAST",
    /// Register a name for the caller.
    Register = 0x23 => "REGISTER",
    /// Store a value.
    Store = 0x30 => "STORE",
    /// Fetch a value.
    Fetch = 0x31 => "FETCH",
    /// Delete a key.
    Delete = 0x32 => "DELETE",
    /// List keys.
    Keys = 0x33 => "KEYS",
    /// Read the caller's permissions.
    GetPerms = 0x40 => "GET_PERMS",
    /// Change permissions.
    SetPerms = 0x41 => "SET_PERMS",
    /// Make an HTTP request.
    Http = 0x50 => "HTTP",
    /// Subscribe to event types.
    Subscribe = 0x60 => "SUBSCRIBE",
    /// Unsubscribe from event types.
    Unsubscribe = 0x61 => "UNSUBSCRIBE",
    /// Pull pending events.
    PollEvents = 0x62 => "POLL_EVENTS",
    /// Emit an event.
    Emit = 0x63 => "EMIT",
    /// Start recording syscalls.
    RecordStart = 0x70 => "RECORD_START",
    /// Stop recording.
    RecordStop = 0x71 => "RECORD_STOP",
    /// Recording state.
    RecordStatus = 0x72 => "RECORD_STATUS",
    /// Replay a recording.
    ReplayStart = 0x73 => "REPLAY_START",
    /// Replay state.
    ReplayStatus = 0x74 => "REPLAY_STATUS",
    /// Read the audit log.
    GetAuditLog = 0x76 => "GET_AUDIT_LOG",
    /// Configure the audit log.
    SetAuditConfig = 0x77 => "SET_AUDIT_CONFIG",
    /// Pull results of async requests.
    AsyncPoll = 0x80 => "ASYNC_POLL",
    /// Create a world (not in scope).
    WorldCreate = 0xA0 => "WORLD_CREATE",
    /// Destroy a world (not in scope).
    WorldDestroy = 0xA1 => "WORLD_DESTROY",
    /// List worlds (not in scope).
    WorldList = 0xA2 => "WORLD_LIST",
    /// Join a world (not in scope).
    WorldJoin = 0xA3 => "WORLD_JOIN",
    /// Leave a world (not in scope).
    WorldLeave = 0xA4 => "WORLD_LEAVE",
    /// World event (not in scope).
    WorldEvent = 0xA5 => "WORLD_EVENT",
    /// World state (not in scope).
    WorldState = 0xA6 => "WORLD_STATE",
    /// World snapshot (not in scope).
    WorldSnapshot = 0xA7 => "WORLD_SNAPSHOT",
    /// World restore (not in scope).
    WorldRestore = 0xA8 => "WORLD_RESTORE",
    /// Connect a tunnel (not in scope).
    TunnelConnect = 0xB0 => "TUNNEL_CONNECT",
    /// Disconnect a tunnel (not in scope).
    TunnelDisconnect = 0xB1 => "TUNNEL_DISCONNECT",
    /// Tunnel state (not in scope).
    TunnelStatus = 0xB2 => "TUNNEL_STATUS",
    /// List tunnel remotes (not in scope).
    TunnelListRemotes = 0xB3 => "TUNNEL_LIST_REMOTES",
    /// Configure the tunnel (not in scope).
    TunnelConfig = 0xB4 => "TUNNEL_CONFIG",
    /// Host metrics.
    MetricsSystem = 0xC0 => "METRICS_SYSTEM",
    /// One agent's metrics.
    MetricsAgent = 0xC1 => "METRICS_AGENT",
    /// Every agent's metrics.
    MetricsAllAgents = 0xC2 => "METRICS_ALL_AGENTS",
    /// A cgroup's metrics.
    MetricsCgroup = 0xC3 => "METRICS_CGROUP",
    /// Ours: block until an agent exits (or a timeout) and return why it exited.
    Wait = 0xD0 => "WAIT",
    /// Ours: read an agent's output log (stdout and stderr), optionally waiting for more.
    Logs = 0xD1 => "LOGS",
    /// Ours: several messages to one mailbox in one request.
    SendBatch = 0xD2 => "SEND_BATCH",
    /// Ours: create a supervisor group.
    GroupCreate = 0xD3 => "GROUP_CREATE",
    /// Ours: list supervisor groups with their children.
    GroupList = 0xD4 => "GROUP_LIST",
    /// Ours: stop a supervisor group's tree for good.
    GroupStop = 0xD5 => "GROUP_STOP",
    /// Ours: the LLM scheduler's state and per-agent LLM figures.
    LlmStats = 0xD6 => "LLM_STATS",
    /// Ours: change the LLM scheduler's policy or in-flight limit.
    LlmConfig = 0xD7 => "LLM_CONFIG",
    /// Report LLM usage an SDK incurred itself.
    LlmReport = 0xF0 => "LLM_REPORT",
    /// Handshake: protocol version and features.
    Hello = 0xFE => "HELLO",
    /// End the session.
    Exit = 0xFF => "EXIT",
}

/// First opcode of the range reserved for our own extensions.
pub const EXTENSION_FIRST: u8 = 0xD0;
/// Last opcode of the range reserved for our own extensions.
pub const EXTENSION_LAST: u8 = 0xEF;

impl Opcode {
    /// The raw byte.
    pub const fn as_u8(self) -> u8 {
        self as u8
    }

    /// WORLD_* and TUNNEL_*: the original's distributed features, out of scope here.
    pub const fn is_world_or_tunnel(self) -> bool {
        matches!(self.as_u8(), 0xA0..=0xB4)
    }

    /// NOOP and EXIT carry raw bytes, not codec payloads: NOOP echoes its payload, EXIT
    /// answers the text `goodbye`.
    pub const fn is_raw(self) -> bool {
        matches!(self, Opcode::Noop | Opcode::Exit)
    }
}

impl fmt::Display for Opcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (0x{:02X})", self.name(), self.as_u8())
    }
}

/// A label for a raw opcode byte in logs: `HELLO (0xFE)`, or `0x13` for an unknown one.
pub fn label(raw: u8) -> String {
    match Opcode::from_u8(raw) {
        Some(op) => op.to_string(),
        None => format!("0x{raw:02X}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_round_trips_and_leaves_gaps_unassigned() {
        for op in Opcode::ALL {
            assert_eq!(Opcode::from_u8(op.as_u8()), Some(*op));
        }
        assert_eq!(Opcode::from_u8(0x13), None);
        // Ours are assigned from the start of our range, nothing outside it.
        let ours: Vec<u8> = Opcode::ALL
            .iter()
            .map(|o| o.as_u8())
            .filter(|b| (EXTENSION_FIRST..=EXTENSION_LAST).contains(b))
            .collect();
        assert_eq!(ours, [0xD0, 0xD1, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7]);
        assert_eq!(Opcode::ALL.len(), 62);
    }

    #[test]
    fn names_match_the_original() {
        assert_eq!(Opcode::GetAuditLog.name(), "GET_AUDIT_LOG");
        assert_eq!(Opcode::Hello.to_string(), "HELLO (0xFE)");
        assert_eq!(label(0x13), "0x13");
    }
}
