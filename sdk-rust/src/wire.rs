//! The conversation without the I/O: what both clients share.
//!
//! [`Conn`] holds everything but the socket: the codec, the write buffer that frames queue in,
//! the opcodes of the requests still awaiting replies (to check each reply against its
//! request), the last reply's agent id, the reply size limit, and whether an earlier error
//! left the stream out of step. The blocking and async clients only move bytes: they write
//! [`Conn::outgoing`] in one write, read 17 header bytes for [`Conn::begin_reply`], then the
//! payload it announces. Turning replies into values ([`typed_reply`], [`noop_reply`],
//! [`RawReply::decode`]) is here too, so both clients behave the same to the byte.

use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clove_abi::codec::{self, Codec};
use clove_abi::frame::{write_frame, FrameError, FrameHeader, HEADER_LEN};
use clove_abi::msg::GOODBYE;
use clove_abi::{Opcode, Syscall, WireError};
use serde::de::{DeserializeOwned, IgnoredAny};

use crate::error::{Error, ProtocolError};

/// The default limit on a reply's payload: 64 MiB.
pub const DEFAULT_MAX_REPLY: u64 = 64 * 1024 * 1024;

/// Capacity of each client's read buffer.
pub(crate) const READ_BUF: usize = 16 * 1024;

/// One reply frame as it arrived: the header and the payload, uninterpreted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawReply {
    /// The reply header: codec, the caller's id as the kernel sees it, opcode, length.
    pub header: FrameHeader,
    /// The payload bytes.
    pub payload: Vec<u8>,
}

impl RawReply {
    /// Decodes the payload as a typed reply `T` in the reply's codec; a kernel error becomes
    /// [`Error::Kernel`].
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, Error> {
        match codec::decode_reply::<T>(self.header.codec, &self.payload) {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(Error::Kernel(err)),
            Err(source) => Err(Error::Decode {
                opcode: self.header.opcode,
                source,
            }),
        }
    }

    /// The kernel's error, if the payload is an error reply in the reply's codec.
    pub fn kernel_error(&self) -> Option<WireError> {
        match codec::decode_reply::<IgnoredAny>(self.header.codec, &self.payload) {
            Ok(Err(err)) => Some(err),
            _ => None,
        }
    }
}

/// The client state shared by [`crate::Client`] and [`crate::AsyncClient`].
#[derive(Debug)]
pub(crate) struct Conn {
    pub path: PathBuf,
    pub codec: Codec,
    pub agent_id: Option<u32>,
    pub max_reply: u64,
    /// The blocking client's read timeout, for error messages.
    pub timeout: Option<Duration>,
    /// Frames queued and not yet written.
    wbuf: Vec<u8>,
    /// Opcodes of the requests written or queued whose replies have not been read, oldest first.
    pending: VecDeque<u8>,
    /// An I/O or protocol error, or an abandoned call, left the stream out of step.
    broken: bool,
}

impl Conn {
    pub fn new(path: PathBuf) -> Conn {
        Conn {
            path,
            codec: Codec::Postcard,
            agent_id: None,
            max_reply: DEFAULT_MAX_REPLY,
            timeout: None,
            wbuf: Vec::with_capacity(256),
            pending: VecDeque::new(),
            broken: false,
        }
    }

    /// Fails if an earlier error left the connection out of step.
    pub fn usable(&self) -> Result<(), Error> {
        if self.broken {
            return Err(Error::Unusable {
                path: self.path.clone(),
            });
        }
        Ok(())
    }

    /// Fails unless the connection is usable and no pipelined reply is outstanding: a `call`
    /// reads the next reply, which must be its own.
    pub fn idle(&self) -> Result<(), Error> {
        self.usable()?;
        if !self.pending.is_empty() {
            return Err(Error::RepliesPending {
                count: self.pending.len(),
            });
        }
        Ok(())
    }

    /// Starts reading or writing: until [`Conn::leave`], the connection counts as out of step,
    /// so that an async call abandoned halfway (its future dropped) leaves it unusable rather
    /// than silently misaligned.
    pub fn enter(&mut self) -> Result<(), Error> {
        self.usable()?;
        self.broken = true;
        Ok(())
    }

    /// The read or write begun with [`Conn::enter`] completed.
    pub fn leave(&mut self) {
        self.broken = false;
    }

    /// Queues one raw frame.
    pub fn queue_frame(&mut self, codec: Codec, opcode: u8, payload: &[u8]) -> Result<(), Error> {
        self.usable()?;
        write_frame(&mut self.wbuf, codec, 0, opcode, payload);
        self.pending.push_back(opcode);
        Ok(())
    }

    /// Encodes `req` in the client's codec and queues it.
    pub fn queue<R: Syscall>(&mut self, req: &R) -> Result<(), Error> {
        let opcode = R::OPCODE.as_u8();
        let payload =
            codec::encode(self.codec, req).map_err(|source| Error::Encode { opcode, source })?;
        self.queue_frame(self.codec, opcode, &payload)
    }

    /// The queued bytes, to be written in one write; then call [`Conn::written`].
    pub fn outgoing(&self) -> &[u8] {
        &self.wbuf
    }

    /// The queued bytes were written.
    pub fn written(&mut self) {
        self.wbuf.clear();
    }

    /// Writing failed: the stream is out of step.
    pub fn write_failed(&mut self, source: io::Error) -> Error {
        self.broken = true;
        Error::Io {
            path: self.path.clone(),
            action: "write to",
            source,
        }
    }

    /// Whether a failed write may have been refused by the kernel with an error reply: the
    /// kernel answers a frame it will not take (too large) with an error, then closes, so the
    /// write fails with a broken pipe while the reason waits in the receive buffer.
    pub fn may_have_refusal(source: &io::Error) -> bool {
        matches!(
            source.kind(),
            io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
        )
    }

    /// The opcode of the oldest request awaiting its reply.
    pub fn awaited(&self) -> Result<u8, Error> {
        self.usable()?;
        self.pending.front().copied().ok_or(Error::NoRequestPending)
    }

    /// The number of requests queued or written whose replies have not been read.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Fails unless the next reply answers a request of type `R`.
    pub fn expect<R: Syscall>(&self) -> Result<(), Error> {
        let next = self.awaited()?;
        let asked = R::OPCODE.as_u8();
        if next != asked {
            return Err(Error::NotAwaited { asked, next });
        }
        Ok(())
    }

    /// Reading the reply to `opcode` failed: the stream is out of step.
    pub fn read_failed(&mut self, source: io::Error, opcode: u8) -> Error {
        self.broken = true;
        match source.kind() {
            io::ErrorKind::UnexpectedEof => ProtocolError::Closed { opcode }.into(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Error::Timeout {
                path: self.path.clone(),
                opcode,
                after: self.timeout.unwrap_or_default(),
            },
            _ => Error::Io {
                path: self.path.clone(),
                action: "read from",
                source,
            },
        }
    }

    /// Checks the header of the reply to the oldest pending request and takes that request
    /// off the queue. Returns the header and the payload length to read.
    pub fn begin_reply(&mut self, head: &[u8; HEADER_LEN]) -> Result<(FrameHeader, usize), Error> {
        let sent = self
            .pending
            .front()
            .copied()
            .ok_or(Error::NoRequestPending)?;
        let fail = |conn: &mut Conn, e: ProtocolError| {
            conn.broken = true;
            Err(Error::Protocol(e))
        };
        let header = match FrameHeader::decode(head) {
            Ok(h) => h,
            Err(FrameError::BadMagic(magic)) => {
                return fail(
                    self,
                    ProtocolError::BadMagic {
                        opcode: sent,
                        magic,
                    },
                )
            }
            Err(FrameError::TooLarge { len, max }) => {
                return fail(
                    self,
                    ProtocolError::ReplyTooLarge {
                        opcode: sent,
                        len,
                        max,
                    },
                )
            }
        };
        if header.opcode != sent {
            return fail(
                self,
                ProtocolError::OpcodeMismatch {
                    sent,
                    got: header.opcode,
                },
            );
        }
        let len = match header.check_len(self.max_reply) {
            Ok(()) => usize::try_from(header.payload_len).ok(),
            Err(_) => None,
        };
        let Some(len) = len else {
            return fail(
                self,
                ProtocolError::ReplyTooLarge {
                    opcode: sent,
                    len: header.payload_len,
                    max: self.max_reply,
                },
            );
        };
        self.pending.pop_front();
        self.agent_id = Some(header.agent_id);
        Ok((header, len))
    }
}

/// The largest refusal read after a failed write: an error reply is small.
const MAX_REFUSAL: u64 = 64 * 1024;

/// The payload length of a refusal whose header is `head`, if it can be one.
pub(crate) fn refusal_len(head: &[u8; HEADER_LEN]) -> Option<usize> {
    let header = FrameHeader::decode(head).ok()?;
    header.check_len(MAX_REFUSAL).ok()?;
    usize::try_from(header.payload_len).ok()
}

/// The kernel's error in a reply read after a failed write, if it is one.
pub(crate) fn refusal(head: &[u8; HEADER_LEN], payload: Vec<u8>) -> Option<Error> {
    let header = FrameHeader::decode(head).ok()?;
    RawReply { header, payload }
        .kernel_error()
        .map(Error::Kernel)
}

/// The typed reply to a request of type `R`.
///
/// NOOP and EXIT are raw: their replies are not codec payloads. EXIT's reply must be
/// `goodbye`, and its typed reply is the empty one (`{}`).
pub(crate) fn typed_reply<R: Syscall>(reply: &RawReply) -> Result<R::Reply, Error> {
    if !R::OPCODE.is_raw() {
        return reply.decode();
    }
    if R::OPCODE == Opcode::Exit {
        exit_reply(reply)?;
    }
    codec::decode_request::<R::Reply>(Codec::Json, b"").map_err(|source| Error::Decode {
        opcode: reply.header.opcode,
        source,
    })
}

/// Checks EXIT's reply: the raw text `goodbye`.
pub(crate) fn exit_reply(reply: &RawReply) -> Result<(), Error> {
    if reply.payload == GOODBYE {
        return Ok(());
    }
    Err(unexpected(reply, || {
        format!(
            "expected `goodbye`, got {}",
            String::from_utf8_lossy(&reply.payload)
        )
    }))
}

/// Checks NOOP's reply: the bytes sent, echoed.
pub(crate) fn noop_reply(sent: &[u8], reply: RawReply) -> Result<Vec<u8>, Error> {
    if reply.payload == sent {
        return Ok(reply.payload);
    }
    Err(unexpected(&reply, || {
        format!(
            "echo of {} bytes differs from the {} bytes sent",
            reply.payload.len(),
            sent.len()
        )
    }))
}

/// A raw reply that is not what its opcode promises: the kernel's error if it is one (an
/// oversize request is refused with an error), else a protocol error.
fn unexpected(reply: &RawReply, why: impl FnOnce() -> String) -> Error {
    match reply.kernel_error() {
        Some(err) => Error::Kernel(err),
        None => ProtocolError::UnexpectedReply {
            opcode: reply.header.opcode,
            why: why(),
        }
        .into(),
    }
}

/// The socket path a connected stream reports, for error messages.
pub(crate) fn peer_path(addr: Option<&Path>) -> PathBuf {
    addr.map_or_else(|| PathBuf::from("<unnamed socket>"), Path::to_path_buf)
}

/// The accessors both clients share, over their `conn: Conn` field (one definition, so the
/// blocking and async clients cannot drift apart).
macro_rules! conn_accessors {
    ($client:ident) => {
        /// This client with `codec` for the requests it sends from now on.
        pub fn with_codec(mut self, codec: Codec) -> $client {
            self.set_codec(codec);
            self
        }

        /// Uses `codec` for the requests sent from now on (replies come in the request's codec).
        pub fn set_codec(&mut self, codec: Codec) {
            self.conn.codec = codec;
        }

        /// The codec requests are sent in.
        pub fn codec(&self) -> Codec {
            self.conn.codec
        }

        /// The caller's id as the kernel sees it, from the last reply's header; `None` before the
        /// first reply.
        pub fn agent_id(&self) -> Option<u32> {
            self.conn.agent_id
        }

        /// The socket this client is connected to.
        pub fn socket_path(&self) -> &Path {
            &self.conn.path
        }

        /// The largest reply payload accepted, in bytes.
        pub fn max_reply(&self) -> u64 {
            self.conn.max_reply
        }

        /// Refuses replies whose payload exceeds `max` bytes (default 64 MiB).
        pub fn set_max_reply(&mut self, max: u64) {
            self.conn.max_reply = max;
        }
    };
}
pub(crate) use conn_accessors;

#[cfg(test)]
mod tests {
    use super::*;
    use clove_abi::msg::{ExitRequest, HelloReply, HelloRequest};

    fn header(codec: Codec, opcode: u8, len: usize) -> [u8; HEADER_LEN] {
        FrameHeader::new(codec, 9, opcode, len).encode()
    }

    #[test]
    fn replies_are_matched_to_requests_in_order() {
        let mut c = Conn::new(PathBuf::from("/s"));
        c.queue(&HelloRequest {}).unwrap();
        c.queue_frame(Codec::Json, 0, b"x").unwrap();
        assert!(matches!(c.idle(), Err(Error::RepliesPending { count: 2 })));
        let (h, len) = c.begin_reply(&header(Codec::Postcard, 0xFE, 3)).unwrap();
        assert_eq!((h.opcode, len, c.agent_id), (0xFE, 3, Some(9)));
        let e = c.begin_reply(&header(Codec::Json, 0xFE, 1)).unwrap_err();
        assert!(matches!(
            e,
            Error::Protocol(ProtocolError::OpcodeMismatch { sent: 0, got: 0xFE })
        ));
        // Out of step now: everything refuses.
        assert!(matches!(c.awaited(), Err(Error::Unusable { .. })));
        assert!(matches!(
            c.queue(&HelloRequest {}),
            Err(Error::Unusable { .. })
        ));
    }

    #[test]
    fn queued_frames_are_one_buffer() {
        let mut c = Conn::new(PathBuf::from("/s"));
        c.queue_frame(Codec::Postcard, 0, b"ab").unwrap();
        c.queue(&ExitRequest {}).unwrap();
        assert_eq!(c.outgoing().len(), 2 * HEADER_LEN + 2);
        c.written();
        assert!(c.outgoing().is_empty());
        assert_eq!(c.awaited().unwrap(), 0);
    }

    #[test]
    fn oversize_and_bad_magic_replies_are_refused() {
        let mut c = Conn::new(PathBuf::from("/s"));
        c.max_reply = 10;
        c.queue_frame(Codec::Json, 0, b"").unwrap();
        assert!(matches!(
            c.begin_reply(&header(Codec::Json, 0, 11)),
            Err(Error::Protocol(ProtocolError::ReplyTooLarge {
                len: 11,
                max: 10,
                ..
            }))
        ));
        let mut c = Conn::new(PathBuf::from("/s"));
        c.queue_frame(Codec::Json, 0, b"").unwrap();
        let mut h = header(Codec::Json, 0, 0);
        h[0] = b'X';
        assert!(matches!(
            c.begin_reply(&h),
            Err(Error::Protocol(ProtocolError::BadMagic { .. }))
        ));
        let mut c = Conn::new(PathBuf::from("/s"));
        assert!(matches!(c.awaited(), Err(Error::NoRequestPending)));
        assert!(matches!(
            c.begin_reply(&header(Codec::Json, 0, 0)),
            Err(Error::NoRequestPending)
        ));
    }

    #[test]
    fn exit_needs_goodbye_and_noop_needs_the_echo() {
        let raw = |codec, opcode, payload: &[u8]| RawReply {
            header: FrameHeader::new(codec, 1, opcode, payload.len()),
            payload: payload.to_vec(),
        };
        typed_reply::<ExitRequest>(&raw(Codec::Postcard, 0xFF, b"goodbye")).unwrap();
        let e = typed_reply::<ExitRequest>(&raw(Codec::Json, 0xFF, b"bye")).unwrap_err();
        assert!(e.to_string().contains("expected `goodbye`"), "{e}");
        assert_eq!(
            noop_reply(b"hi", raw(Codec::Json, 0, b"hi")).unwrap(),
            b"hi"
        );
        assert!(matches!(
            noop_reply(b"hi", raw(Codec::Json, 0, b"ho")),
            Err(Error::Protocol(ProtocolError::UnexpectedReply { .. }))
        ));
        // An error in place of the echo is the kernel's error, in either codec.
        let err = WireError::new(clove_abi::ErrorCode::FrameTooLarge, "too big");
        for codec in [Codec::Json, Codec::Postcard] {
            let bytes = codec::encode_reply::<()>(codec, 0, Err(&err)).unwrap();
            match noop_reply(b"hi", raw(codec, 0, &bytes)) {
                Err(Error::Kernel(e)) => assert_eq!(e, err),
                other => panic!("{other:?}"),
            }
            let e = raw(codec, 0xFE, &bytes).decode::<HelloReply>().unwrap_err();
            assert_eq!(e.wire(), Some(&err));
        }
    }
}
