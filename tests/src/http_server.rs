//! A tiny HTTP/1.1 server on loopback for the HTTP tests: one thread accepting, one thread per
//! connection, `Connection: close` on every answer. It only ever listens on the address it is
//! given (127.0.0.1 or ::1), so the tests' traffic stays on this machine. Stopped on drop.
//!
//! Routes (the path decides; the query string is ignored unless said):
//!
//! * `/echo`: 200 with a JSON body `{method, path, headers (lower-case names), body}`, and
//!   the response headers `X-Echo: yes` and two `X-Multi` lines (`a`, `b`).
//! * `/status/<code>`: that status, body `status <code>`.
//! * `/big/<n>`: `n` bytes of `x` with a Content-Length; `/stream/<n>`: the same, chunked
//!   (no length known up front).
//! * `/binary`: the bytes `ff fe 41`, not UTF-8.
//! * `/hang`: reads the request and never answers (until the server stops).
//! * `/slow/<ms>`: answers 200 `slow` after `ms` milliseconds.
//! * `/openai/ok/chat/completions`: an OpenAI chat completion answering `you said: <the last
//!   message>` (model `stand-in-1`, 11 + 5 tokens); `/openai/badkey/chat/completions`: 401
//!   with OpenAI's error JSON quoting the key it was sent, as OpenAI does.
//! * `/redirect/<code>?to=<url>`: that status with `Location: <url>` (percent-decoding is not
//!   done: pass a plain URL); without `to`, to itself (a loop).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};

/// A request the server received.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The method.
    pub method: String,
    /// The request target (path and query).
    pub target: String,
    /// The `Authorization` header, if the request had one.
    pub authorization: Option<String>,
}

/// A running test server. Dropping it stops it.
pub struct TestServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    connections: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
    accept: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Listens on `127.0.0.1`, on a free port.
    pub fn start() -> Result<TestServer> {
        TestServer::start_on(TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?)
    }

    /// Serves on `listener` (which must be bound to a loopback address).
    pub fn start_on(listener: TcpListener) -> Result<TestServer> {
        let addr = listener.local_addr()?;
        assert!(
            addr.ip().is_loopback(),
            "test servers listen on loopback only"
        );
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let accept = {
            let (stop, connections, seen) = (
                Arc::clone(&stop),
                Arc::clone(&connections),
                Arc::clone(&seen),
            );
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            connections.fetch_add(1, Ordering::SeqCst);
                            let (stop, seen) = (Arc::clone(&stop), Arc::clone(&seen));
                            std::thread::spawn(move || {
                                let _ = serve(stream, &stop, &seen);
                            });
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        Ok(TestServer {
            addr,
            stop,
            connections,
            seen,
            accept: Some(accept),
        })
    }

    /// `http://<addr><path>`.
    pub fn url(&self, path: &str) -> String {
        match self.addr {
            SocketAddr::V4(a) => format!("http://{a}{path}"),
            SocketAddr::V6(a) => format!("http://[{}]:{}{path}", a.ip(), a.port()),
        }
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Requests received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn serve(stream: TcpStream, stop: &AtomicBool, seen: &Mutex<Vec<Seen>>) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_owned();
    let target = parts.next().unwrap_or("/").to_owned();
    let mut headers: Vec<(String, String)> = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len.min(16 << 20)];
    reader.read_exact(&mut body)?;
    if let Ok(mut s) = seen.lock() {
        s.push(Seen {
            method: method.clone(),
            target: target.clone(),
            authorization: headers
                .iter()
                .find(|(k, _)| k == "authorization")
                .map(|(_, v)| v.clone()),
        });
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let mut out = stream;
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["echo"] => {
            let map: serde_json::Map<String, serde_json::Value> = headers
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect();
            let reply = serde_json::json!({
                "method": method, "path": target, "headers": map,
                "body": String::from_utf8_lossy(&body),
            })
            .to_string();
            respond(
                &mut out,
                200,
                &[("X-Echo", "yes"), ("X-Multi", "a"), ("X-Multi", "b")],
                reply.as_bytes(),
            )
        }
        ["status", code] => {
            let code: u16 = code.parse().unwrap_or(500);
            respond(&mut out, code, &[], format!("status {code}").as_bytes())
        }
        ["big", n] => {
            let n: usize = n.parse().unwrap_or(0);
            respond(&mut out, 200, &[], &vec![b'x'; n])
        }
        ["stream", n] => {
            let n: usize = n.parse().unwrap_or(0);
            write!(
                out,
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            )?;
            let chunk = vec![b'x'; 4096];
            let mut left = n;
            while left > 0 {
                let k = left.min(chunk.len());
                write!(out, "{k:x}\r\n")?;
                out.write_all(&chunk[..k])?;
                out.write_all(b"\r\n")?;
                left -= k;
            }
            out.write_all(b"0\r\n\r\n")?;
            out.flush()
        }
        ["openai", mode, "chat", "completions"] => {
            let request: serde_json::Value =
                serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
            let said = request["messages"]
                .as_array()
                .and_then(|m| m.last())
                .and_then(|m| m["content"].as_str())
                .unwrap_or("")
                .to_owned();
            if *mode == "badkey" {
                // As OpenAI does: the error quotes the key it was given.
                let key = headers
                    .iter()
                    .find(|(k, _)| k == "authorization")
                    .map_or("", |(_, v)| v.trim_start_matches("Bearer "));
                let reply = serde_json::json!({"error": {
                    "message": format!("Incorrect API key provided: {key}"),
                    "type": "invalid_request_error", "code": "invalid_api_key"}});
                return respond(&mut out, 401, &[], reply.to_string().as_bytes());
            }
            let reply = serde_json::json!({
                "id": "chatcmpl-1", "object": "chat.completion", "created": 0,
                "model": "stand-in-1",
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": format!("you said: {said}")}}],
                "usage": {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16},
            });
            respond(&mut out, 200, &[], reply.to_string().as_bytes())
        }
        ["binary"] => respond(&mut out, 200, &[], &[0xff, 0xfe, b'A']),
        ["hang"] => {
            for _ in 0..6000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(())
        }
        ["slow", ms] => {
            std::thread::sleep(Duration::from_millis(ms.parse().unwrap_or(0)));
            respond(&mut out, 200, &[], b"slow")
        }
        ["redirect", code] => {
            let to = query.strip_prefix("to=").unwrap_or(path);
            let code: u16 = code.parse().unwrap_or(302);
            respond(&mut out, code, &[("Location", to)], b"")
        }
        _ => respond(&mut out, 404, &[], b"no such route"),
    }
}

fn respond(
    out: &mut TcpStream,
    code: u16,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {code} X\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())?;
    out.write_all(body)?;
    out.flush()
}
