//! A stand-in HTTP server for the providers' tests: it listens on 127.0.0.1 (port 0, never
//! any other address), records every request (method, path, headers, JSON body) and answers
//! each with the next scripted [`Reply`] — a JSON body, a server-sent event stream written in
//! several TCP writes, an echo of the request's headers (to prove keys get redacted), or no
//! answer at all. Raw HTTP/1.1, one request per connection (`connection: close`).

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A request the stand-in received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// `POST`, ...
    pub method: String,
    /// The request target (path and query).
    pub path: String,
    /// Headers, names lowercased.
    pub headers: BTreeMap<String, String>,
    /// The body as JSON (`Null` when empty or not JSON).
    pub body: serde_json::Value,
}

/// What the stand-in answers to one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A status, extra headers and a JSON body.
    Json {
        /// The HTTP status.
        status: u16,
        /// Extra headers.
        headers: Vec<(String, String)>,
        /// The body.
        body: serde_json::Value,
    },
    /// 200 `text/event-stream`: each piece written (and flushed) separately, a little apart.
    Stream(Vec<String>),
    /// The given status with `{"error": {"message": ...}}` quoting every request header.
    EchoHeaders(u16),
    /// Read the request, answer nothing, keep the connection open.
    Hang,
}

impl Reply {
    /// A JSON answer.
    pub fn json(status: u16, body: serde_json::Value) -> Reply {
        Reply::Json {
            status,
            headers: Vec::new(),
            body,
        }
    }

    /// This answer with one more header (JSON answers only).
    pub fn with_header(self, name: &str, value: &str) -> Reply {
        match self {
            Reply::Json {
                status,
                mut headers,
                body,
            } => {
                headers.push((name.to_owned(), value.to_owned()));
                Reply::Json {
                    status,
                    headers,
                    body,
                }
            }
            other => other,
        }
    }
}

/// A running stand-in server; stops accepting when dropped.
pub struct StandIn {
    /// Where it listens.
    addr: SocketAddr,
    /// Requests so far, in order.
    requests: Arc<Mutex<Vec<Recorded>>>,
    /// The accept loop.
    task: tokio::task::JoinHandle<()>,
}

impl StandIn {
    /// Starts a stand-in on 127.0.0.1 that answers requests with `replies` in order (and
    /// 500 once they run out).
    pub async fn start(replies: Vec<Reply>) -> StandIn {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind the stand-in on loopback");
        let addr = listener.local_addr().expect("stand-in address");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let replies = Arc::new(Mutex::new(VecDeque::from(replies)));
        let recorded = Arc::clone(&requests);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let recorded = Arc::clone(&recorded);
                let replies = Arc::clone(&replies);
                tokio::spawn(serve(stream, recorded, replies));
            }
        });
        StandIn {
            addr,
            requests,
            task,
        }
    }

    /// The base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The requests received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().expect("requests lock").clone()
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one request, records it, writes the next reply.
async fn serve(
    mut stream: TcpStream,
    recorded: Arc<Mutex<Vec<Recorded>>>,
    replies: Arc<Mutex<VecDeque<Reply>>>,
) {
    stream.set_nodelay(true).expect("nodelay");
    let Some(request) = read_request(&mut stream).await else {
        return;
    };
    let reply = replies.lock().expect("replies lock").pop_front();
    let headers = request.headers.clone();
    recorded.lock().expect("requests lock").push(request);
    let reply = reply.unwrap_or_else(|| {
        Reply::json(
            500,
            serde_json::json!({"error": {"message": "the stand-in has no reply scripted"}}),
        )
    });
    match reply {
        Reply::Json {
            status,
            headers,
            body,
        } => write_json(&mut stream, status, &headers, &body).await,
        Reply::EchoHeaders(status) => {
            let message = format!("rejected request with headers {headers:?}");
            let body = serde_json::json!({"error": {"message": message}});
            write_json(&mut stream, status, &[], &body).await;
        }
        Reply::Stream(pieces) => {
            let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                        cache-control: no-cache\r\nconnection: close\r\n\r\n";
            if stream.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            for piece in pieces {
                tokio::time::sleep(Duration::from_millis(15)).await;
                if stream.write_all(piece.as_bytes()).await.is_err()
                    || stream.flush().await.is_err()
                {
                    return;
                }
            }
            let _ = stream.shutdown().await;
        }
        Reply::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
    }
}

/// Writes a complete JSON response.
async fn write_json(
    stream: &mut TcpStream,
    status: u16,
    headers: &[(String, String)],
    body: &serde_json::Value,
) {
    let body = body.to_string();
    let mut head = format!(
        "HTTP/1.1 {status} Scripted\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Reads the request line, headers and a `content-length` body; `None` if the client left.
async fn read_request(stream: &mut TcpStream) -> Option<Recorded> {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let method = request_line.next()?.to_owned();
    let path = request_line.next()?.to_owned();
    let headers: BTreeMap<String, String> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let length: usize = headers
        .get("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let mut body = data[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&buf[..n]);
    }
    Some(Recorded {
        method,
        path,
        headers,
        body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    })
}

/// A client for tests: no proxy from the environment.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("test HTTP client")
}

/// Settings for a provider under test, pointed at `standin`.
pub fn settings(standin: &StandIn, key: Option<&str>) -> super::provider::ProviderSettings {
    settings_at(&standin.url(), key)
}

/// Settings for a provider under test, pointed at `base_url`.
pub fn settings_at(base_url: &str, key: Option<&str>) -> super::provider::ProviderSettings {
    super::provider::ProviderSettings {
        name: "test".to_owned(),
        base_url: Some(base_url.to_owned()),
        api_key: key.map(super::provider::Secret::new),
        model: None,
        stream: false,
    }
}

/// A deadline `ms` milliseconds from now.
pub fn deadline_in(ms: u64) -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_millis(ms)
}

/// A distinctive key whose text must never show in an error.
pub const KEY: &str = "sk-STANDIN-7f3a9c-SECRET";

/// Asserts that `error`'s Display and Debug do not contain [`KEY`].
pub fn assert_no_key(error: &super::provider::ProviderError) {
    assert!(!format!("{error}").contains(KEY), "key in Display: {error}");
    assert!(
        !format!("{error:?}").contains(KEY),
        "key in Debug: {error:?}"
    );
}

/// Builds a provider under test.
pub type Make = fn(super::provider::ProviderSettings, reqwest::Client) -> Box<dyn Provider>;

/// What the scenarios every HTTP provider must pass need to know about one.
pub struct Case {
    /// Builds the provider.
    pub make: Make,
    /// A successful answer in the provider's JSON.
    pub ok_body: serde_json::Value,
    /// The content that answer maps to.
    pub ok_content: &'static str,
    /// The request header that carries the key.
    pub auth_header: &'static str,
}

use super::provider::{call_with_retries, Prompt, Provider, ProviderError};

/// A plain prompt.
pub fn prompt() -> Prompt {
    Prompt {
        model: "m-1".to_owned(),
        prompt: "hi".to_owned(),
        ..Prompt::default()
    }
}

/// A 429 with `Retry-After: 0`, then a 200: retried once, succeeds.
pub async fn retries_429_then_succeeds(case: &Case) {
    let standin = StandIn::start(vec![
        Reply::json(429, serde_json::json!({"error": {"message": "slow down"}}))
            .with_header("retry-after", "0"),
        Reply::json(200, case.ok_body.clone()),
    ])
    .await;
    let provider = (case.make)(settings(&standin, Some(KEY)), client());
    let answer = call_with_retries(provider.as_ref(), &prompt(), deadline_in(10_000), 3)
        .await
        .expect("the retry succeeds");
    assert_eq!(answer.content, case.ok_content);
    assert_eq!(standin.requests().len(), 2);
}

/// A 400 is not retried, and its message is the provider's.
pub async fn does_not_retry_400(case: &Case) {
    let standin = StandIn::start(vec![
        Reply::json(400, serde_json::json!({"error": {"message": "bad field"}})),
        Reply::json(200, case.ok_body.clone()),
    ])
    .await;
    let provider = (case.make)(settings(&standin, Some(KEY)), client());
    let error = call_with_retries(provider.as_ref(), &prompt(), deadline_in(10_000), 3)
        .await
        .expect_err("a 400 fails");
    assert!(
        matches!(&error, ProviderError::Status { status: 400, message, .. } if message == "bad field"),
        "{error:?}"
    );
    assert!(!error.retryable());
    assert_eq!(standin.requests().len(), 1);
}

/// A server that never answers runs into the deadline: Timeout, on time.
pub async fn hang_times_out(case: &Case) {
    let standin = StandIn::start(vec![Reply::Hang]).await;
    let provider = (case.make)(settings(&standin, Some(KEY)), client());
    let started = std::time::Instant::now();
    let error = call_with_retries(provider.as_ref(), &prompt(), deadline_in(300), 3)
        .await
        .expect_err("a hang fails");
    assert!(matches!(error, ProviderError::Timeout { .. }), "{error:?}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert_eq!(standin.requests().len(), 1);
}

/// The key is sent in the auth header, and an error body quoting it (the stand-in echoes
/// the request's headers) shows no trace of it, nor does a transport error.
pub async fn key_never_shows(case: &Case) {
    let standin = StandIn::start(vec![Reply::EchoHeaders(401), Reply::EchoHeaders(503)]).await;
    let provider = (case.make)(settings(&standin, Some(KEY)), client());
    for status in [401, 503] {
        let error = provider
            .call(&prompt(), deadline_in(10_000))
            .await
            .expect_err("rejected");
        assert!(
            matches!(&error, ProviderError::Status { status: s, message, .. }
                if *s == status && message.contains("[redacted]")),
            "{error:?}"
        );
        assert_no_key(&error);
    }
    let sent = standin.requests();
    assert!(sent[0].headers[case.auth_header].contains(KEY));
    // A port nothing listens on, the key in the URL: a transport error, still keyless.
    let closed = std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .expect("a free loopback port");
    let gone = settings_at(&format!("http://{closed}/v1?key={KEY}"), Some(KEY));
    let error = (case.make)(gone, client())
        .call(&prompt(), deadline_in(10_000))
        .await
        .expect_err("nothing listens");
    assert!(error.retryable(), "{error:?}");
    assert_no_key(&error);
}

/// The four scenarios every HTTP provider passes ([`retries_429_then_succeeds`],
/// [`does_not_retry_400`], [`hang_times_out`], [`key_never_shows`]) as `#[tokio::test]`s of
/// the module it is used in, for the [`Case`] that `$case` builds.
macro_rules! shared_scenarios {
    ($case:expr) => {
        #[tokio::test]
        async fn a_429_is_retried() {
            $crate::llm::standin::retries_429_then_succeeds(&$case).await;
        }

        #[tokio::test]
        async fn a_400_is_not_retried() {
            $crate::llm::standin::does_not_retry_400(&$case).await;
        }

        #[tokio::test]
        async fn a_hang_times_out() {
            $crate::llm::standin::hang_times_out(&$case).await;
        }

        #[tokio::test]
        async fn the_key_never_shows() {
            $crate::llm::standin::key_never_shows(&$case).await;
        }
    };
}
pub(crate) use shared_scenarios;
