//! The one client used against every target, so that the server is the only variable.
//!
//! * [`Client::round_trip`]: the whole request frame (header and payload) prebuilt in one
//!   buffer and sent with one write; the reply read with `read_exact` of the header, then of
//!   the payload, and checked.
//! * [`Pipelined::batch`]: `depth` request frames in one write, then `depth` replies read
//!   through a buffered reader (throughput runs with `--depth` above 1).

use std::io::{BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clove_abi::frame::{encode_frame, HEADER_LEN};
use clove_abi::Codec;

/// NOOP: echoes its payload bytes.
pub const NOOP: u8 = 0x00;

/// No reply may take longer than this: a hung server fails the bench instead of hanging it.
const REPLY_LIMIT: Duration = Duration::from_secs(10);

fn connect(path: &Path) -> Result<UnixStream> {
    let stream =
        UnixStream::connect(path).with_context(|| format!("connect {}", path.display()))?;
    stream.set_read_timeout(Some(REPLY_LIMIT))?;
    Ok(stream)
}

/// Checks one reply header against what was sent; returns the payload length.
fn check_header(head: &[u8; HEADER_LEN], codec: Codec, payload_len: usize) -> Result<usize> {
    let magic = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    let mut len = [0u8; 8];
    len.copy_from_slice(&head[9..HEADER_LEN]);
    let len = u64::from_le_bytes(len);
    if magic != codec.magic() || head[8] != NOOP || len != payload_len as u64 {
        bail!(
            "unexpected reply header: magic 0x{magic:08X} opcode 0x{:02X} len {len} \
             (sent magic 0x{:08X} opcode 0x00 len {payload_len})",
            head[8],
            codec.magic()
        );
    }
    Ok(payload_len)
}

/// A blocking, sequential NOOP client.
pub struct Client {
    stream: UnixStream,
    codec: Codec,
    request: Vec<u8>,
    payload: Vec<u8>,
    reply: Vec<u8>,
}

impl Client {
    pub fn connect(path: &Path, codec: Codec, payload: &[u8]) -> Result<Client> {
        Ok(Client {
            stream: connect(path)?,
            codec,
            request: encode_frame(codec, 0, NOOP, payload),
            payload: payload.to_vec(),
            reply: vec![0u8; payload.len()],
        })
    }

    /// One NOOP request → reply.
    #[inline]
    pub fn round_trip(&mut self) -> Result<()> {
        self.stream
            .write_all(&self.request)
            .context("write request")?;
        let mut head = [0u8; HEADER_LEN];
        self.stream
            .read_exact(&mut head)
            .context("read reply header")?;
        let len = check_header(&head, self.codec, self.payload.len())?;
        self.stream
            .read_exact(&mut self.reply[..len])
            .context("read reply payload")?;
        if self.reply != self.payload {
            bail!("NOOP reply payload differs from the request's");
        }
        Ok(())
    }
}

/// A blocking client that sends `depth` NOOPs per write and then reads their replies.
pub struct Pipelined {
    writer: UnixStream,
    reader: BufReader<UnixStream>,
    codec: Codec,
    depth: usize,
    requests: Vec<u8>,
    payload: Vec<u8>,
    reply: Vec<u8>,
}

impl Pipelined {
    pub fn connect(path: &Path, codec: Codec, payload: &[u8], depth: usize) -> Result<Pipelined> {
        let writer = connect(path)?;
        let reader = BufReader::with_capacity(64 * 1024, writer.try_clone()?);
        let one = encode_frame(codec, 0, NOOP, payload);
        Ok(Pipelined {
            writer,
            reader,
            codec,
            depth,
            requests: one.repeat(depth),
            payload: payload.to_vec(),
            reply: vec![0u8; payload.len()],
        })
    }

    /// `depth` NOOPs in one write, then their `depth` replies.
    pub fn batch(&mut self) -> Result<()> {
        self.writer
            .write_all(&self.requests)
            .context("write requests")?;
        for _ in 0..self.depth {
            let mut head = [0u8; HEADER_LEN];
            self.reader
                .read_exact(&mut head)
                .context("read reply header")?;
            let len = check_header(&head, self.codec, self.payload.len())?;
            self.reader
                .read_exact(&mut self.reply[..len])
                .context("read reply payload")?;
            if self.reply != self.payload {
                bail!("NOOP reply payload differs from the request's");
            }
        }
        Ok(())
    }
}
