//! The async client over a tokio [`UnixStream`]: the blocking [`Client`](crate::Client)'s
//! methods as `async fn`s, sharing its framing and decoding ([`crate::wire`]).
//!
//! Each request is framed into one buffer and written with one `write`; replies are read
//! through a buffered reader. There is no built-in timeout: wrap a call in
//! `tokio::time::timeout` (a call abandoned halfway leaves the connection unusable, so drop it).

use std::path::Path;

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use clove_abi::frame::HEADER_LEN;
use clove_abi::msg::{ExitRequest, HelloReply, HelloRequest};
use clove_abi::{Codec, Opcode, Syscall};

use crate::error::Error;
use crate::socket::resolve_socket;
use crate::wire::{self, Conn, RawReply, READ_BUF};

/// An async connection to the kernel.
///
/// Calls are answered in order. [`AsyncClient::call`] sends one request and reads its reply;
/// for pipelining, [`AsyncClient::send`] queues requests, [`AsyncClient::flush`] writes every
/// queued one in a single write, and [`AsyncClient::recv`] reads replies in the order the
/// requests were queued.
#[derive(Debug)]
pub struct AsyncClient {
    reader: BufReader<UnixStream>,
    conn: Conn,
}

impl AsyncClient {
    /// Connects to the kernel's socket: `path` if given, else the socket
    /// [`resolve_socket`](crate::resolve_socket) picks. The codec is postcard.
    pub async fn connect(path: Option<&Path>) -> Result<AsyncClient, Error> {
        let path = resolve_socket(path);
        match UnixStream::connect(&path).await {
            Ok(stream) => Ok(AsyncClient::new(stream, Conn::new(path))),
            Err(source) => Err(Error::Connect { path, source }),
        }
    }

    /// Wraps a stream that is already connected to the kernel (an inherited descriptor, or
    /// one end of a socket pair in tests).
    pub fn from_stream(stream: UnixStream) -> AsyncClient {
        let path = stream.peer_addr().ok();
        let path = wire::peer_path(path.as_ref().and_then(|a| a.as_pathname()));
        AsyncClient::new(stream, Conn::new(path))
    }

    fn new(stream: UnixStream, conn: Conn) -> AsyncClient {
        AsyncClient {
            reader: BufReader::with_capacity(READ_BUF, stream),
            conn,
        }
    }

    crate::wire::conn_accessors!(AsyncClient);

    /// Sends a typed request and returns its typed reply; a kernel error is
    /// [`Error::Kernel`].
    pub async fn call<R: Syscall>(&mut self, req: &R) -> Result<R::Reply, Error> {
        self.conn.idle()?;
        self.conn.queue(req)?;
        let reply = self.recv_frame().await?;
        wire::typed_reply::<R>(&reply)
    }

    /// Sends one raw frame and returns the reply frame as it came, without interpreting the
    /// payload (see [`RawReply::decode`] and [`RawReply::kernel_error`]).
    pub async fn call_raw(
        &mut self,
        codec: Codec,
        opcode: u8,
        payload: &[u8],
    ) -> Result<RawReply, Error> {
        self.conn.idle()?;
        self.conn.queue_frame(codec, opcode, payload)?;
        self.recv_frame().await
    }

    /// HELLO: the kernel's version, protocol version and features.
    pub async fn hello(&mut self) -> Result<HelloReply, Error> {
        self.call(&HelloRequest {}).await
    }

    /// NOOP: sends `payload` and returns the kernel's echo, checked to be identical.
    pub async fn noop(&mut self, payload: &[u8]) -> Result<Vec<u8>, Error> {
        let reply = self
            .call_raw(self.conn.codec, Opcode::Noop.as_u8(), payload)
            .await?;
        wire::noop_reply(payload, reply)
    }

    /// EXIT: ends the session; the kernel answers `goodbye` and closes the connection.
    pub async fn exit(mut self) -> Result<(), Error> {
        self.call(&ExitRequest {}).await.map(drop)
    }

    crate::agents::agent_methods!(async; .await);

    crate::coop::coop_methods!(async; .await);

    crate::llm::llm_methods!(async; .await);
    crate::metrics::metrics_methods!(async; .await);

    crate::audit::audit_methods!(async; .await);

    /// Queues a typed request without writing it (see [`AsyncClient::flush`]).
    pub fn send<R: Syscall>(&mut self, req: &R) -> Result<(), Error> {
        self.conn.queue(req)
    }

    /// Queues one raw frame without writing it (see [`AsyncClient::flush`]).
    pub fn send_frame(&mut self, codec: Codec, opcode: u8, payload: &[u8]) -> Result<(), Error> {
        self.conn.queue_frame(codec, opcode, payload)
    }

    /// Writes every queued frame in one write. Receiving flushes first, so this is needed only
    /// to get requests going before their replies are wanted.
    ///
    /// Keep the number of unanswered requests bounded (hundreds, not millions): the kernel
    /// stops reading while its replies are not being read, so an unbounded burst deadlocks.
    pub async fn flush(&mut self) -> Result<(), Error> {
        if self.conn.outgoing().is_empty() {
            return self.conn.usable();
        }
        self.conn.enter()?;
        match self.reader.get_mut().write_all(self.conn.outgoing()).await {
            Ok(()) => {
                self.conn.written();
                self.conn.leave();
                Ok(())
            }
            Err(e) => {
                let refused = Conn::may_have_refusal(&e);
                let err = self.conn.write_failed(e);
                if refused {
                    Err(self.refusal().await.unwrap_or(err))
                } else {
                    Err(err)
                }
            }
        }
    }

    /// After a broken pipe: the error reply that explains it, if the kernel sent one.
    async fn refusal(&mut self) -> Option<Error> {
        let mut head = [0u8; HEADER_LEN];
        self.reader.read_exact(&mut head).await.ok()?;
        let mut payload = vec![0u8; wire::refusal_len(&head)?];
        self.reader.read_exact(&mut payload).await.ok()?;
        wire::refusal(&head, payload)
    }

    /// The number of requests sent or queued whose replies have not been received.
    pub fn pending(&self) -> usize {
        self.conn.pending()
    }

    /// Receives the reply to the oldest request awaiting one, as it came.
    pub async fn recv_frame(&mut self) -> Result<RawReply, Error> {
        let opcode = self.conn.awaited()?;
        self.flush().await?;
        self.conn.enter()?;
        let mut head = [0u8; HEADER_LEN];
        if let Err(e) = self.reader.read_exact(&mut head).await {
            return Err(self.conn.read_failed(e, opcode));
        }
        let (header, len) = self.conn.begin_reply(&head)?;
        let mut payload = vec![0u8; len];
        if let Err(e) = self.reader.read_exact(&mut payload).await {
            return Err(self.conn.read_failed(e, opcode));
        }
        self.conn.leave();
        Ok(RawReply { header, payload })
    }

    /// Receives the typed reply to the oldest request awaiting one, which must be an `R`.
    pub async fn recv<R: Syscall>(&mut self) -> Result<R::Reply, Error> {
        self.conn.expect::<R>()?;
        let reply = self.recv_frame().await?;
        wire::typed_reply::<R>(&reply)
    }
}
