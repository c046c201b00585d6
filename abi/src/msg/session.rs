//! Session opcodes: HELLO, EXIT (NOOP carries raw bytes and has no types).

use serde::{Deserialize, Serialize};

use crate::msg::syscall;

/// HELLO `{}`: the handshake.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct HelloRequest {}

/// HELLO reply: `{success, protocol_version, kernel_version, features}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct HelloReply {
    /// Always true.
    pub success: bool,
    /// The protocol version; 1, as the original.
    pub protocol_version: u32,
    /// The kernel's own version (`clove-kernel 0.1.0`).
    pub kernel_version: String,
    /// What this kernel really implements.
    pub features: Features,
}

/// The features a kernel really implements: a client checks here before relying on one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct Features {
    /// Payload codecs the kernel accepts: `["json", "postcard"]`.
    #[serde(default)]
    pub codecs: Vec<String>,
    /// Names of the opcodes that do their job (others answer `not_implemented`).
    #[serde(default)]
    pub opcodes: Vec<String>,
    /// Agents run as isolated processes (SPAWN).
    #[serde(default)]
    pub agents: bool,
    /// Namespaces and cgroup limits are applied to agents.
    #[serde(default)]
    pub sandbox: bool,
    /// Shared LLM access (THINK).
    #[serde(default)]
    pub llm: bool,
    /// Messages between agents.
    #[serde(default)]
    pub ipc: bool,
    /// The durable key-value store.
    #[serde(default)]
    pub state: bool,
    /// Events.
    #[serde(default)]
    pub events: bool,
    /// Restart policies and supervisor groups.
    #[serde(default)]
    pub supervision: bool,
    /// The hash-chained audit log.
    #[serde(default)]
    pub audit: bool,
    /// Metrics opcodes.
    #[serde(default)]
    pub metrics: bool,
}

/// EXIT `{}`: end the session. The original SDK sends it with an empty payload.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct ExitRequest {}

/// EXIT's reply is the raw text `goodbye`, not a codec payload (in both codecs); the kernel
/// closes the connection after sending it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct ExitReply {}

/// The raw payload of EXIT's reply.
pub const GOODBYE: &[u8] = b"goodbye";

syscall! {
    HelloRequest => Hello, HelloReply;
    ExitRequest => Exit, ExitReply;
}
