//! One client connection: read frames, answer each in order, close on EOF, EXIT or a frame
//! that cannot be trusted.
//!
//! * Requests are handled one after another, so pipelined requests are answered in order.
//!   Replies are buffered and flushed when no further request is already buffered, so a
//!   pipelined burst costs one write per burst rather than one per reply.
//! * Waiting for a frame's first byte has no timeout (idle connections stay open); once it has
//!   arrived, the whole frame must arrive within `frame_timeout`, else the connection is closed.
//! * A bad magic or an oversize length gets an error reply, then the connection is closed: the
//!   stream can no longer be parsed (and the oversize payload is never read).
//! * Memory per connection is bounded: a payload buffer grows with the bytes that arrive, up
//!   to `max_frame`; a client that does not read its replies stalls only itself.
//! * On shutdown, requests already sent are still answered: what arrives within [`DRAIN_WINDOW`]
//!   of the shutdown (and whatever is buffered by then), then the connection closes. A client
//!   that keeps asking (`clove events -f` polls in a loop) cannot hold the shutdown up.

use std::sync::Arc;
use std::time::Duration;

use clove_abi::codec::Codec;
use clove_abi::frame::{FrameError, FrameHeader, HEADER_LEN};
use clove_abi::{ErrorCode, WireError};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::UnixStream;
use tokio_util::sync::CancellationToken;

use crate::kernel::{Caller, Kernel};
use crate::syscalls::{self, Request, Response};

/// During shutdown, how long a connection still takes new requests.
pub const DRAIN_WINDOW: Duration = Duration::from_millis(200);

/// Read and write buffer per connection. The read buffer is zero-filled (resident) at accept,
/// so it stays small: 1000 idle connections cost about 4 MiB of it. Payloads larger than the
/// buffer are read straight into their own allocation.
const BUF: usize = 4 * 1024;

/// Why a frame could not be read.
enum FrameFail {
    /// The peer went away or the socket failed mid-frame.
    Io(std::io::Error),
    /// The header is unusable: answer with this error (in this codec, under this opcode),
    /// then close.
    Refused(Codec, u8, WireError),
}

/// Serves one connection until it ends.
pub async fn serve(
    mut stream: UnixStream,
    kernel: Arc<Kernel>,
    caller: Caller,
    shutdown: CancellationToken,
) {
    if !caller.agent {
        // An operator connection can be sent messages while it is open.
        kernel.ipc.operator_opened(caller.id);
    }
    let (rd, wr) = stream.split();
    let mut reader = BufReader::with_capacity(BUF, rd);
    let mut writer = BufWriter::with_capacity(BUF, wr);
    let frame_timeout = kernel.config.frame_timeout;
    let max_frame = kernel.config.max_frame;
    // Set at shutdown: new requests are read until then.
    let mut draining: Option<tokio::time::Instant> = None;

    let end: &str = loop {
        // Wait for the first byte of the next frame: forever, unless shutting down.
        let ready = if let Some(until) = draining {
            match tokio::time::timeout_at(until, reader.fill_buf()).await {
                Ok(r) => r.map(|b| !b.is_empty()),
                Err(_) => break "kernel shutting down",
            }
        } else {
            tokio::select! {
                biased;
                r = reader.fill_buf() => r.map(|b| !b.is_empty()),
                () = shutdown.cancelled() => {
                    draining = Some(tokio::time::Instant::now() + DRAIN_WINDOW);
                    continue;
                }
            }
        };
        match ready {
            Ok(true) => {}
            Ok(false) => break "closed by peer",
            Err(_) => break "read failed",
        }

        let frame = match tokio::time::timeout(frame_timeout, read_frame(&mut reader, max_frame))
            .await
        {
            Ok(Ok(frame)) => frame,
            Ok(Err(FrameFail::Io(e))) => {
                tracing::debug!(conn = caller.id, "reading a frame: {e}");
                break "closed mid-frame";
            }
            Ok(Err(FrameFail::Refused(codec, opcode, err))) => {
                tracing::info!(conn = caller.id, code = %err.code, "refusing frame: {}", err.message);
                let resp = syscalls::error(codec, opcode, &err);
                let _ = write_reply(&mut writer, &caller, codec, opcode, &resp).await;
                let _ = writer.flush().await;
                break "bad frame";
            }
            Err(_) => {
                tracing::info!(
                    conn = caller.id,
                    "frame did not arrive within {} ms; closing",
                    frame_timeout.as_millis()
                );
                break "frame timeout";
            }
        };

        let (codec, opcode) = (frame.codec, frame.opcode);
        let handling = syscalls::handle(&kernel, &caller, frame);
        let resp = if syscalls::cancel_safe(opcode) {
            // A request that only waits (RECV, POLL_EVENTS, WAIT, ...) is given up when the
            // client goes away, so its names, mailbox and connection slot are released now,
            // not when the wait runs out.
            tokio::select! {
                biased;
                resp = handling => resp,
                () = peer_gone(reader.get_ref()) => break "closed by peer during a wait",
            }
        } else {
            // Anything else runs to its end: a KILL or SPAWN cut off halfway would leave an
            // agent half-stopped or half-started.
            handling.await
        };
        if write_reply(&mut writer, &caller, codec, opcode, &resp)
            .await
            .is_err()
        {
            break "write failed";
        }
        if resp.close {
            let _ = writer.flush().await;
            break "EXIT";
        }
        if reader.buffer().is_empty() && writer.flush().await.is_err() {
            break "write failed";
        }
    };
    let _ = writer.flush().await;
    if !caller.agent {
        // What belonged to an operator connection goes with it, so the next run of a script
        // finds its names free (the original kept them forever).
        kernel.ipc.release(caller.id);
        kernel.events.forget(caller.id);
        kernel.asyncs.release(caller.id);
        kernel.llm.forget(caller.id);
    }
    tracing::debug!(conn = caller.id, "connection closed: {end}");
}

/// Resolves when the peer has closed its end (EOF or hang-up). If the peer sends more data
/// instead (pipelined requests), that cannot be told apart from a close without reading it,
/// so it never resolves: the request runs to its end as usual.
async fn peer_gone(half: &tokio::net::unix::ReadHalf<'_>) {
    match half.ready(tokio::io::Interest::READABLE).await {
        Ok(ready) if ready.is_read_closed() => {}
        Ok(_) => std::future::pending().await,
        Err(_) => {}
    }
}

async fn read_frame<R: tokio::io::AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
    max_frame: u64,
) -> Result<Request, FrameFail> {
    let mut head = [0u8; HEADER_LEN];
    reader.read_exact(&mut head).await.map_err(FrameFail::Io)?;
    let header = match FrameHeader::decode(&head) {
        Ok(h) => h,
        Err(e @ FrameError::BadMagic(_)) => {
            // The codec is unknown: answer in JSON, which any client can read.
            return Err(FrameFail::Refused(
                Codec::Json,
                head[8],
                WireError::new(ErrorCode::BadMagic, e.to_string()),
            ));
        }
        Err(e) => {
            return Err(FrameFail::Refused(
                Codec::Json,
                head[8],
                WireError::invalid_request(e),
            ))
        }
    };
    if let Err(e) = header.check_len(max_frame) {
        return Err(FrameFail::Refused(
            header.codec,
            header.opcode,
            WireError::new(ErrorCode::FrameTooLarge, e.to_string()),
        ));
    }
    // Grow with what arrives rather than trusting the declared length up front.
    let len = header.payload_len as usize;
    let mut payload = Vec::with_capacity(len.min(64 * 1024));
    let got = (&mut *reader)
        .take(header.payload_len)
        .read_to_end(&mut payload)
        .await
        .map_err(FrameFail::Io)?;
    if got != len {
        return Err(FrameFail::Io(std::io::ErrorKind::UnexpectedEof.into()));
    }
    Ok(Request {
        codec: header.codec,
        opcode: header.opcode,
        payload,
    })
}

async fn write_reply<W: tokio::io::AsyncWrite + Unpin>(
    writer: &mut BufWriter<W>,
    caller: &Caller,
    codec: Codec,
    opcode: u8,
    resp: &Response,
) -> std::io::Result<()> {
    let header = FrameHeader::new(codec, caller.id, opcode, resp.payload.len());
    writer.write_all(&header.encode()).await?;
    writer.write_all(&resp.payload).await
}
