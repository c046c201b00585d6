//! Rust SDK for the Clove kernel: a blocking [`Client`], an async [`AsyncClient`] (feature
//! `async`, on by default) and the socket rule both share ([`resolve_socket`]).
//!
//! A client speaks the frame protocol of [`clove_abi`]: each request is one frame (17-byte
//! header and payload) written in one write, each reply is checked against its request
//! (opcode, magic, size) and decoded into the request's typed reply. Requests use postcard by
//! default; JSON, the original kernel's codec, is one [`Client::set_codec`] away. Replies are
//! answered strictly in order, so requests can be pipelined ([`Client::send`],
//! [`Client::recv`]).
//!
//! ```no_run
//! use clove_sdk::{Client, Codec, Error};
//!
//! fn main() -> Result<(), Error> {
//!     // `None`: the socket from $CLOVE_SOCKET, else the kernel's default.
//!     let mut client = Client::connect(None)?;
//!     let hello = client.hello()?;
//!     println!("kernel {} speaks protocol {}", hello.kernel_version, hello.protocol_version);
//!     println!("the kernel knows us as {:?}", client.agent_id());
//!
//!     assert_eq!(client.noop(b"ping")?, b"ping");
//!
//!     // Any typed request: `call` returns its typed reply, or the kernel's error.
//!     client.set_codec(Codec::Json);
//!     match client.call(&clove_sdk::msg::HelloRequest {}) {
//!         Ok(reply) => println!("{:?}", reply.features.opcodes),
//!         Err(Error::Kernel(e)) => eprintln!("kernel refused: {} ({})", e.message, e.code),
//!         Err(e) => return Err(e),
//!     }
//!     client.exit()
//! }
//! ```
//!
//! Agents have typed methods on both clients: [`Client::spawn`], [`Client::kill`],
//! [`Client::list`], [`Client::pause`], [`Client::resume`], [`Client::wait`] and
//! [`Client::logs`]:
//!
//! ```no_run
//! use std::time::Duration;
//! use clove_sdk::msg::{AgentRef, LogsRequest, SpawnRequest};
//!
//! # fn main() -> Result<(), clove_sdk::Error> {
//! let mut client = clove_sdk::Client::connect(None)?;
//! let agent = client.spawn(&SpawnRequest::new("worker", "/srv/agents/worker.py"))?;
//! println!("agent {} (pid {}), not applied: {:?}", agent.id, agent.pid, agent.isolation.not_applied);
//! // The client's own timeout must outlast the wait.
//! client.set_timeout(Some(Duration::from_secs(40)))?;
//! let done = client.wait(AgentRef::Id(agent.id), Some(Duration::from_secs(30)))?;
//! if !done.exited {
//!     client.kill(AgentRef::Id(agent.id))?;
//! }
//! let logs = client.logs(&LogsRequest { id: Some(agent.id), ..LogsRequest::default() })?;
//! print!("{}", logs.text);
//! # Ok(())
//! # }
//! ```
//!
//! Agents cooperate through typed methods too: messages ([`Client::register`],
//! [`Client::send_message`], [`Client::send_batch`], [`Client::recv_messages`],
//! [`Client::broadcast`]), events ([`Client::subscribe`], [`Client::poll_events`],
//! [`Client::emit`]) and the key-value store ([`Client::store`], [`Client::fetch`],
//! [`Client::delete`], [`Client::keys`]).
//!
//! The audit log: [`Client::get_audit_log`], [`Client::set_audit_config`], and
//! [`audit::verify_dir`], which checks a log directory offline (no kernel needed).
//!
//! The async client has the same methods as `async fn`s:
//!
//! ```no_run
//! # #[cfg(feature = "async")]
//! # async fn demo() -> Result<(), clove_sdk::Error> {
//! let mut client = clove_sdk::AsyncClient::connect(None).await?;
//! let hello = client.hello().await?;
//! println!("protocol {}", hello.protocol_version);
//! client.exit().await
//! # }
//! ```

#![warn(missing_docs)]

mod agents;
#[cfg(feature = "async")]
mod asynchronous;
pub mod audit;
mod blocking;
mod coop;
mod error;
mod llm;
mod metrics;
mod socket;
mod wire;

#[cfg(feature = "async")]
pub use asynchronous::AsyncClient;
pub use blocking::Client;
pub use error::{Error, ProtocolError};
pub use socket::{resolve_socket, resolve_socket_in, SocketEnv, SOCKET_ENV};
pub use wire::{RawReply, DEFAULT_MAX_REPLY};

pub use clove_abi::{
    auditlog, msg, paths, Codec, ErrorCode, FrameHeader, Json, Opcode, Syscall, WireError,
};
