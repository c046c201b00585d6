//! The physical baseline: a bare frame echo server. Blocking std `UnixListener`, one OS thread
//! per connection, no framework, no parsing beyond the length: read a 17-byte header and its
//! payload, write the same frame back (header and payload in one write).

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{Context, Result};
use clove_abi::frame::{DEFAULT_MAX_PAYLOAD, HEADER_LEN};

/// A running echo server on its own temporary socket. Stops accepting on drop; connection
/// threads end when their client closes.
pub struct EchoServer {
    /// The socket path.
    pub path: PathBuf,
    _dir: tempfile::TempDir,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl EchoServer {
    /// The blocking echo: each connection thread blocks in `read`.
    pub fn start() -> Result<EchoServer> {
        EchoServer::start_with("blocking", serve)
    }

    /// An echo server whose connection threads run `serve`; `kind` names it in thread names
    /// and errors.
    pub fn start_with(kind: &str, serve: fn(UnixStream)) -> Result<EchoServer> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("clove-echo-{kind}-"))
            .tempdir()?;
        let path = dir.path().join("echo.sock");
        let listener =
            UnixListener::bind(&path).with_context(|| format!("bind {}", path.display()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let accept = std::thread::Builder::new()
            .name(format!("echo-{kind}"))
            .spawn(move || {
                for conn in listener.incoming() {
                    if flag.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let _ = std::thread::Builder::new()
                        .name("echo-conn".into())
                        .spawn(move || serve(conn));
                }
            })
            .with_context(|| format!("spawn the {kind} echo accept thread"))?;
        Ok(EchoServer {
            path,
            _dir: dir,
            stop,
            accept: Some(accept),
        })
    }
}

/// Serves one connection of the blocking echo.
fn serve(mut conn: UnixStream) {
    let mut buf = vec![0u8; HEADER_LEN + 4096];
    loop {
        if conn.read_exact(&mut buf[..HEADER_LEN]).is_err() {
            return;
        }
        let mut len = [0u8; 8];
        len.copy_from_slice(&buf[9..HEADER_LEN]);
        let len = u64::from_le_bytes(len);
        if len > DEFAULT_MAX_PAYLOAD {
            return;
        }
        let total = HEADER_LEN + len as usize;
        if buf.len() < total {
            buf.resize(total, 0);
        }
        if conn.read_exact(&mut buf[HEADER_LEN..total]).is_err() {
            return;
        }
        if conn.write_all(&buf[..total]).is_err() {
            return;
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = UnixStream::connect(&self.path);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}
