//! The Clove wire contract, shared by the kernel and every SDK.
//!
//! This crate owns everything two parties must agree on to talk: the 17-byte frame header
//! ([`frame`]), the opcode table ([`opcode`]), the two payload codecs ([`codec`]), one typed
//! request and reply per opcode ([`msg`]) and the error shape ([`error`]). It does no I/O, so
//! the same code frames bytes in the tokio kernel, the blocking SDK and the Python SDK.
//!
//! Compatibility with the original C++ Clove and its Python SDK is the first rule: the JSON
//! field names, defaults and reply shapes here are the original's (see `UPSTREAM-ABI.md`),
//! so a script written for the original works unchanged.

#![warn(missing_docs)]

pub mod auditlog;
pub mod codec;
pub mod error;
pub mod frame;
pub mod msg;
pub mod opcode;
pub mod paths;

pub use codec::{Codec, Json};
pub use error::{DecodeError, ErrorCode, WireError};
pub use frame::{FrameError, FrameHeader, DEFAULT_MAX_PAYLOAD, HEADER_LEN};
pub use msg::Syscall;
pub use opcode::Opcode;

/// The protocol version HELLO reports. The original reports 1; we speak the same protocol.
pub const PROTOCOL_VERSION: u32 = 1;
