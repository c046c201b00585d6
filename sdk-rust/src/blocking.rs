//! The blocking client over a std [`UnixStream`].
//!
//! Each request is framed into one buffer and written with one `write`; replies are read
//! through a buffered reader. Latency is the point: a NOOP round trip costs one write and
//! (usually) one read on each side.

use std::io::{BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use clove_abi::frame::HEADER_LEN;
use clove_abi::msg::{ExitRequest, HelloReply, HelloRequest};
use clove_abi::{Codec, Opcode, Syscall};

use crate::error::Error;
use crate::socket::resolve_socket;
use crate::wire::{self, Conn, RawReply, READ_BUF};

/// A blocking connection to the kernel.
///
/// Calls are answered in order. [`Client::call`] sends one request and reads its reply; for
/// pipelining, [`Client::send`] queues requests, [`Client::flush`] writes every queued one in
/// a single write, and [`Client::recv`] reads replies in the order the requests were queued.
#[derive(Debug)]
pub struct Client {
    reader: BufReader<UnixStream>,
    conn: Conn,
}

impl Client {
    /// Connects to the kernel's socket: `path` if given, else the socket
    /// [`resolve_socket`](crate::resolve_socket) picks. The codec is postcard.
    pub fn connect(path: Option<&Path>) -> Result<Client, Error> {
        let path = resolve_socket(path);
        match UnixStream::connect(&path) {
            Ok(stream) => Ok(Client::new(stream, Conn::new(path))),
            Err(source) => Err(Error::Connect { path, source }),
        }
    }

    /// Wraps a stream that is already connected to the kernel (an inherited descriptor, or
    /// one end of a socket pair in tests).
    pub fn from_stream(stream: UnixStream) -> Client {
        let path = stream.peer_addr().ok();
        let path = wire::peer_path(path.as_ref().and_then(|a| a.as_pathname()));
        Client::new(stream, Conn::new(path))
    }

    fn new(stream: UnixStream, conn: Conn) -> Client {
        Client {
            reader: BufReader::with_capacity(READ_BUF, stream),
            conn,
        }
    }

    crate::wire::conn_accessors!(Client);

    /// Fails reads and writes that block longer than `timeout` (`None`: wait forever, the
    /// default). A timed-out call leaves the connection unusable.
    pub fn set_timeout(&mut self, timeout: Option<Duration>) -> Result<(), Error> {
        let stream = self.reader.get_ref();
        stream
            .set_read_timeout(timeout)
            .and_then(|()| stream.set_write_timeout(timeout))
            .map_err(|source| Error::Io {
                path: self.conn.path.clone(),
                action: "set the timeout of",
                source,
            })?;
        self.conn.timeout = timeout;
        Ok(())
    }

    /// Sends a typed request and returns its typed reply; a kernel error is
    /// [`Error::Kernel`].
    pub fn call<R: Syscall>(&mut self, req: &R) -> Result<R::Reply, Error> {
        self.conn.idle()?;
        self.conn.queue(req)?;
        let reply = self.recv_frame()?;
        wire::typed_reply::<R>(&reply)
    }

    /// Sends one raw frame and returns the reply frame as it came, without interpreting the
    /// payload (see [`RawReply::decode`] and [`RawReply::kernel_error`]).
    pub fn call_raw(
        &mut self,
        codec: Codec,
        opcode: u8,
        payload: &[u8],
    ) -> Result<RawReply, Error> {
        self.conn.idle()?;
        self.conn.queue_frame(codec, opcode, payload)?;
        self.recv_frame()
    }

    /// HELLO: the kernel's version, protocol version and features.
    pub fn hello(&mut self) -> Result<HelloReply, Error> {
        self.call(&HelloRequest {})
    }

    /// NOOP: sends `payload` and returns the kernel's echo, checked to be identical.
    pub fn noop(&mut self, payload: &[u8]) -> Result<Vec<u8>, Error> {
        let reply = self.call_raw(self.conn.codec, Opcode::Noop.as_u8(), payload)?;
        wire::noop_reply(payload, reply)
    }

    /// EXIT: ends the session; the kernel answers `goodbye` and closes the connection.
    pub fn exit(mut self) -> Result<(), Error> {
        self.call(&ExitRequest {}).map(drop)
    }

    crate::agents::agent_methods!(;);

    crate::coop::coop_methods!(;);

    crate::llm::llm_methods!(;);
    crate::metrics::metrics_methods!(;);

    crate::audit::audit_methods!(;);

    /// Queues a typed request without writing it (see [`Client::flush`]).
    pub fn send<R: Syscall>(&mut self, req: &R) -> Result<(), Error> {
        self.conn.queue(req)
    }

    /// Queues one raw frame without writing it (see [`Client::flush`]).
    pub fn send_frame(&mut self, codec: Codec, opcode: u8, payload: &[u8]) -> Result<(), Error> {
        self.conn.queue_frame(codec, opcode, payload)
    }

    /// Writes every queued frame in one write. Receiving flushes first, so this is needed only
    /// to get requests going before their replies are wanted.
    ///
    /// Keep the number of unanswered requests bounded (hundreds, not millions): the kernel
    /// stops reading while its replies are not being read, so an unbounded burst deadlocks.
    pub fn flush(&mut self) -> Result<(), Error> {
        if self.conn.outgoing().is_empty() {
            return self.conn.usable();
        }
        self.conn.enter()?;
        match self.reader.get_mut().write_all(self.conn.outgoing()) {
            Ok(()) => {
                self.conn.written();
                self.conn.leave();
                Ok(())
            }
            Err(e) => {
                let refused = Conn::may_have_refusal(&e);
                let err = self.conn.write_failed(e);
                if refused {
                    Err(self.refusal().unwrap_or(err))
                } else {
                    Err(err)
                }
            }
        }
    }

    /// After a broken pipe: the error reply that explains it, if the kernel sent one.
    fn refusal(&mut self) -> Option<Error> {
        let mut head = [0u8; HEADER_LEN];
        self.reader.read_exact(&mut head).ok()?;
        let mut payload = vec![0u8; wire::refusal_len(&head)?];
        self.reader.read_exact(&mut payload).ok()?;
        wire::refusal(&head, payload)
    }

    /// The number of requests sent or queued whose replies have not been received.
    pub fn pending(&self) -> usize {
        self.conn.pending()
    }

    /// Receives the reply to the oldest request awaiting one, as it came.
    pub fn recv_frame(&mut self) -> Result<RawReply, Error> {
        let opcode = self.conn.awaited()?;
        self.flush()?;
        self.conn.enter()?;
        let mut head = [0u8; HEADER_LEN];
        if let Err(e) = self.reader.read_exact(&mut head) {
            return Err(self.conn.read_failed(e, opcode));
        }
        let (header, len) = self.conn.begin_reply(&head)?;
        let mut payload = vec![0u8; len];
        if let Err(e) = self.reader.read_exact(&mut payload) {
            return Err(self.conn.read_failed(e, opcode));
        }
        self.conn.leave();
        Ok(RawReply { header, payload })
    }

    /// Receives the typed reply to the oldest request awaiting one, which must be an `R`.
    pub fn recv<R: Syscall>(&mut self) -> Result<R::Reply, Error> {
        self.conn.expect::<R>()?;
        let reply = self.recv_frame()?;
        wire::typed_reply::<R>(&reply)
    }
}
