//! The SDK's one error type: every way a call can fail, each naming what failed and why.
//!
//! Three families matter to a caller: the kernel could not be reached ([`Error::Connect`]), the
//! kernel answered with an error ([`Error::Kernel`], carrying the wire `code` and message), or
//! the conversation itself went wrong (I/O, timeouts, codec and [`ProtocolError`]s). After an
//! error of the last family the connection is out of step and the client refuses further use
//! ([`Error::Unusable`]); reconnect.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use clove_abi::codec::EncodeError;
use clove_abi::opcode::label;
use clove_abi::{DecodeError, ErrorCode, WireError};

/// Everything a client call can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The socket could not be connected to (no kernel, wrong path, no permission).
    #[error("cannot connect to {}: {source}", path.display())]
    Connect {
        /// The socket path tried.
        path: PathBuf,
        /// Why it failed.
        source: io::Error,
    },
    /// Reading from or writing to the socket failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// The socket path.
        path: PathBuf,
        /// What was being done: `write to`, `read from`, `configure`.
        action: &'static str,
        /// The I/O error.
        source: io::Error,
    },
    /// No reply arrived within the client's timeout.
    #[error("no reply to {} from {} within {:.1} s", label(*opcode), path.display(), after.as_secs_f64())]
    Timeout {
        /// The socket path.
        path: PathBuf,
        /// The opcode whose reply was awaited.
        opcode: u8,
        /// The timeout.
        after: Duration,
    },
    /// The kernel answered with an error.
    #[error("kernel: {0}")]
    Kernel(WireError),
    /// A request could not be encoded (a bug in the message type, never bad input).
    #[error("encode {} request: {source}", label(*opcode))]
    Encode {
        /// The request's opcode.
        opcode: u8,
        /// Why encoding failed.
        source: EncodeError,
    },
    /// A reply did not decode into the expected type.
    #[error("decode {} reply: {source}", label(*opcode))]
    Decode {
        /// The reply's opcode.
        opcode: u8,
        /// Why decoding failed.
        source: DecodeError,
    },
    /// The kernel's reply broke the framing rules.
    #[error("protocol error: {0}")]
    Protocol(#[from] ProtocolError),
    /// An earlier I/O or protocol error left the connection out of step; reconnect.
    #[error("connection to {} is unusable after an earlier error or an abandoned call; reconnect", path.display())]
    Unusable {
        /// The socket path.
        path: PathBuf,
    },
    /// A reply was asked for, but no request awaits one.
    #[error("no request awaits a reply")]
    NoRequestPending,
    /// `recv` was asked for the reply to one opcode while the next reply answers another.
    #[error("the next reply answers {}, not {}", label(*next), label(*asked))]
    NotAwaited {
        /// The opcode whose reply was asked for.
        asked: u8,
        /// The opcode of the oldest request awaiting its reply.
        next: u8,
    },
    /// `call` was used while pipelined requests still await their replies.
    #[error("{count} pipelined requests still await their replies; receive them before a call")]
    RepliesPending {
        /// How many replies are outstanding.
        count: usize,
    },
}

impl Error {
    /// The kernel's error, if the kernel answered with one.
    pub fn wire(&self) -> Option<&WireError> {
        match self {
            Error::Kernel(e) => Some(e),
            _ => None,
        }
    }

    /// The kernel's error code, if the kernel answered with an error.
    pub fn code(&self) -> Option<&ErrorCode> {
        self.wire().map(|e| &e.code)
    }

    /// `true` when the kernel could not be reached at all.
    pub fn is_connect(&self) -> bool {
        matches!(self, Error::Connect { .. })
    }

    /// `true` when the connection can no longer be used after this error.
    pub fn breaks_connection(&self) -> bool {
        matches!(
            self,
            Error::Io { .. } | Error::Timeout { .. } | Error::Protocol(_) | Error::Unusable { .. }
        )
    }
}

/// A reply that broke the framing rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The reply's opcode is not the one of the request it answers.
    #[error("reply opcode {} differs from the request's {}", label(*got), label(*sent))]
    OpcodeMismatch {
        /// The request's opcode.
        sent: u8,
        /// The reply's opcode.
        got: u8,
    },
    /// The reply header's magic is neither codec's.
    #[error("reply to {} has bad magic 0x{magic:08X}", label(*opcode))]
    BadMagic {
        /// The request's opcode.
        opcode: u8,
        /// The magic received.
        magic: u32,
    },
    /// The kernel closed the connection before the whole reply arrived.
    #[error("connection closed by the kernel before the reply to {} was complete", label(*opcode))]
    Closed {
        /// The request's opcode.
        opcode: u8,
    },
    /// The reply announces more bytes than the client accepts.
    #[error("reply to {} of {len} bytes exceeds the client limit of {max} bytes", label(*opcode))]
    ReplyTooLarge {
        /// The request's opcode.
        opcode: u8,
        /// The announced payload length.
        len: u64,
        /// The client's limit.
        max: u64,
    },
    /// A raw reply (NOOP's echo, EXIT's `goodbye`) is not what the opcode promises.
    #[error("unexpected reply to {}: {why}", label(*opcode))]
    UnexpectedReply {
        /// The request's opcode.
        opcode: u8,
        /// What was wrong with it.
        why: String,
    },
}
