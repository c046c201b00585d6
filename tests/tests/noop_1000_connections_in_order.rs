//! 1000 connections at once, each sending 100 NOOPs one at a time and then 100 pipelined:
//! every request is answered, on its own connection, in order, with its own bytes. Replies
//! carry the caller's connection id: nonzero, the same on every reply of a connection, and
//! different between connections open at the same time.

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use clove_abi::frame::{write_frame, FrameHeader, HEADER_LEN};
use clove_abi::Codec;
use clove_tests::Kernel;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::Barrier;

const CONNS: usize = 1000;
const PER_CONN: usize = 100;

/// A payload unique to (phase, connection, sequence), of varying length and with every byte
/// value, so that a reply swapped between connections or reordered cannot go unnoticed.
fn payload(phase: u8, conn: usize, seq: usize) -> Vec<u8> {
    let mut p = format!("{phase}:{conn}:{seq}:").into_bytes();
    let extra = (conn * 7 + seq * 13) % 97;
    p.extend((0..extra).map(|i| (i + conn + seq) as u8));
    p
}

fn codec_for(conn: usize) -> Codec {
    if conn.is_multiple_of(2) {
        Codec::Json
    } else {
        Codec::Postcard
    }
}

async fn read_reply(stream: &mut UnixStream) -> Result<(FrameHeader, Vec<u8>)> {
    let mut head = [0u8; HEADER_LEN];
    stream.read_exact(&mut head).await?;
    let header = FrameHeader::decode(&head)?;
    let mut body = vec![0u8; header.payload_len as usize];
    stream.read_exact(&mut body).await?;
    Ok((header, body))
}

fn check_reply(
    conn: usize,
    seq: usize,
    header: &FrameHeader,
    body: &[u8],
    expected: &[u8],
    id: &mut Option<u32>,
) -> Result<()> {
    ensure!(header.opcode == 0, "reply opcode 0x{:02X}", header.opcode);
    ensure!(
        header.codec == codec_for(conn),
        "reply codec {:?}",
        header.codec
    );
    ensure!(
        body == expected,
        "reply {seq} out of order or corrupted: got {:?}, expected {:?}",
        String::from_utf8_lossy(body),
        String::from_utf8_lossy(expected)
    );
    ensure!(header.agent_id != 0, "reply agent_id is 0");
    match id {
        None => *id = Some(header.agent_id),
        Some(prev) if *prev != header.agent_id => {
            bail!("agent_id changed from {prev} to {}", header.agent_id)
        }
        Some(_) => {}
    }
    Ok(())
}

async fn client(
    socket: std::path::PathBuf,
    conn: usize,
    all_connected: Arc<Barrier>,
    all_done: Arc<Barrier>,
) -> Result<u32> {
    let mut stream = UnixStream::connect(&socket).await?;
    all_connected.wait().await;
    let codec = codec_for(conn);
    let mut id = None;

    // One request at a time.
    for seq in 0..PER_CONN {
        let p = payload(1, conn, seq);
        let mut frame = Vec::new();
        write_frame(&mut frame, codec, 0, 0, &p);
        stream.write_all(&frame).await?;
        let (header, body) = read_reply(&mut stream).await?;
        check_reply(conn, seq, &header, &body, &p, &mut id).context("one at a time")?;
    }

    // Pipelined: all 100 frames in four writes cut mid-frame, then all 100 replies.
    let mut batch = Vec::new();
    for seq in 0..PER_CONN {
        write_frame(&mut batch, codec, 0, 0, &payload(2, conn, seq));
    }
    let quarter = batch.len() / 4 + 1;
    for chunk in batch.chunks(quarter) {
        stream.write_all(chunk).await?;
    }
    for seq in 0..PER_CONN {
        let (header, body) = read_reply(&mut stream).await?;
        check_reply(conn, seq, &header, &body, &payload(2, conn, seq), &mut id)
            .context("pipelined")?;
    }

    // Stay open until every connection is done, so that all ids are of concurrent connections.
    all_done.wait().await;
    id.context("no reply")
}

fn raise_nofile() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    }
    let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    assert!(
        soft >= CONNS as u64 + 100,
        "RLIMIT_NOFILE {soft} is too low for {CONNS} connections"
    );
}

#[test]
fn noop_1000_connections_in_order() {
    raise_nofile();
    let kernel = Kernel::start().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let ids = rt.block_on(async {
        let all_connected = Arc::new(Barrier::new(CONNS));
        let all_done = Arc::new(Barrier::new(CONNS));
        let tasks: Vec<_> = (0..CONNS)
            .map(|conn| {
                tokio::spawn(client(
                    kernel.socket.clone(),
                    conn,
                    Arc::clone(&all_connected),
                    Arc::clone(&all_done),
                ))
            })
            .collect();
        let mut ids = Vec::with_capacity(CONNS);
        let mut failures = Vec::new();
        for (conn, task) in tasks.into_iter().enumerate() {
            match tokio::time::timeout(Duration::from_secs(120), task).await {
                Ok(Ok(Ok(id))) => ids.push(id),
                Ok(Ok(Err(e))) => failures.push(format!("connection {conn}: {e:#}")),
                Ok(Err(e)) => failures.push(format!("connection {conn}: task failed: {e}")),
                Err(_) => failures.push(format!("connection {conn}: no answer within 120 s")),
            }
        }
        assert!(
            failures.is_empty(),
            "{} of {CONNS} connections failed; first: {}",
            failures.len(),
            failures[..failures.len().min(5)].join("; ")
        );
        ids
    });
    let distinct: HashSet<u32> = ids.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        CONNS,
        "concurrent connections shared reply agent_ids"
    );
    clove_tests::hello_on_new_connection(&kernel.socket).unwrap();
}
