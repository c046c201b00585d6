//! The Prometheus endpoint: `GET /metrics` on `--metrics-addr` (off by default), in the
//! Prometheus text format 0.0.4, or OpenMetrics 1.0 for a scraper that asks for it in
//! `Accept`.
//!
//! What it shows (docs/metrics.md, "Prometheus", lists every series):
//! - syscalls by opcode and result, and a latency histogram by opcode, counted in
//!   [`crate::syscalls::handle`] from the kernel's start ([`crate::syscalls::stats`]);
//! - agents by state, and per live agent its restarts, mailbox depth, cgroup usage (memory,
//!   pids, CPU) and LLM figures; the LLM scheduler's queue;
//! - the kernel process: resident memory, threads, open descriptors, uptime; open client
//!   connections.
//!
//! Everything but the syscall counts is read at scrape time from the subsystems that own it,
//! so nothing here can drift from what LIST or LLM_STATS say, and per-agent series exist only
//! for live agents (the label sets stay bounded by `max_agents`).
//!
//! The server is hyper's HTTP/1 on the kernel's runtime: at most [`MAX_SCRAPERS`] connections
//! at once (more are closed at once), [`HEADER_TIMEOUT`] to send a request head, and it stops
//! with the kernel (`kernel.stopping`). There is no authentication: the address should be
//! loopback (anything else is logged as a warning at start).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clove_abi::msg::AgentState;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{HeaderValue, ACCEPT, ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use crate::kernel::Kernel;
use crate::syscalls::stats::SyscallStats;

/// The file in the state dir that holds the address the endpoint listens on (the bound port
/// when `--metrics-addr` asked for port 0), while it does.
pub const ADDR_FILE: &str = "metrics.addr";
/// Most scrape connections served at once; one more is closed as soon as it is accepted.
pub const MAX_SCRAPERS: usize = 16;
/// The longest a client may take to send a request head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open scrape connections get to finish at shutdown.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(2);
/// The OpenMetrics content type (served when `Accept` names it).
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The endpoint's listening socket, bound before the kernel is ready. Its address file goes
/// when it is dropped: after serving, or on a start that failed later.
#[derive(Debug)]
pub struct Endpoint {
    /// Taken when serving begins.
    listener: Option<std::net::TcpListener>,
    addr: SocketAddr,
    addr_file: PathBuf,
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.addr_file) {
            tracing::debug!("remove {}: {e}", self.addr_file.display());
        }
    }
}

impl Endpoint {
    /// Binds `addr` and writes the bound address to `<state_dir>/metrics.addr`. Bound before
    /// the kernel is ready so that a taken port stops the start (exit 1) rather than leaving
    /// a kernel without its metrics. Warns when `addr` is not loopback.
    pub fn bind(addr: SocketAddr, state_dir: &Path) -> anyhow::Result<Endpoint> {
        let listener = std::net::TcpListener::bind(addr)
            .with_context(|| format!("metrics_addr {addr}: cannot listen"))?;
        listener
            .set_nonblocking(true)
            .context("metrics endpoint: set non-blocking")?;
        let addr = listener
            .local_addr()
            .context("metrics endpoint: read the bound address")?;
        if !addr.ip().is_loopback() {
            tracing::warn!(
                "metrics endpoint on {addr}, not a loopback address: anyone who reaches it \
                 sees agents' names and activity (it has no authentication)"
            );
        }
        let addr_file = state_dir.join(ADDR_FILE);
        std::fs::write(&addr_file, format!("{addr}\n"))
            .with_context(|| format!("write {}", addr_file.display()))?;
        Ok(Endpoint {
            listener: Some(listener),
            addr,
            addr_file,
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves scrapes until the kernel stops, then lets open ones finish (briefly) and
    /// removes the address file.
    pub async fn serve(mut self, kernel: Arc<Kernel>) {
        let Some(listener) = self.listener.take() else {
            return;
        };
        match tokio::net::TcpListener::from_std(listener) {
            Ok(listener) => accept_loop(listener, &kernel).await,
            Err(e) => tracing::error!("metrics endpoint on {}: {e}", self.addr),
        }
    }
}

/// Accepts until `kernel.stopping`; each connection is one task.
async fn accept_loop(listener: tokio::net::TcpListener, kernel: &Arc<Kernel>) {
    let slots = Arc::new(Semaphore::new(MAX_SCRAPERS));
    let conns = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = kernel.stopping.cancelled() => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // EMFILE and the like: wait instead of spinning on the error.
                tracing::warn!("metrics endpoint: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Beyond the limit the connection is closed: a scraper retries at its next interval.
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::debug!("metrics endpoint: {MAX_SCRAPERS} connections open; closing one more");
            continue;
        };
        conns.spawn(serve_connection(stream, Arc::clone(kernel), permit));
    }
    conns.close();
    if tokio::time::timeout(SHUTDOWN_LIMIT, conns.wait())
        .await
        .is_err()
    {
        tracing::debug!("metrics endpoint: connections still open at shutdown; dropped");
    }
}

/// Serves one HTTP/1 connection (keep-alive included) until it closes or the kernel stops.
async fn serve_connection(
    stream: tokio::net::TcpStream,
    kernel: Arc<Kernel>,
    _permit: tokio::sync::OwnedSemaphorePermit,
) {
    let stopping = kernel.stopping.clone();
    let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
        let kernel = Arc::clone(&kernel);
        async move { Ok::<_, Infallible>(respond(&kernel, &req).await) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    tokio::pin!(conn);
    let done = tokio::select! {
        r = conn.as_mut() => Some(r),
        () = stopping.cancelled() => None,
    };
    match done {
        Some(Ok(())) => {}
        Some(Err(e)) => tracing::debug!("metrics endpoint: connection: {e}"),
        None => {
            // Finish the request in progress, if any, and close.
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(SHUTDOWN_LIMIT, conn).await;
        }
    }
}

/// What a request gets, from its method and path alone.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    /// `GET` or `HEAD /metrics`.
    Metrics,
    /// `/metrics` with another method: 405.
    WrongMethod,
    /// Any other path: 404.
    NotFound,
}

fn route(method: &Method, path: &str) -> Route {
    match (path, method) {
        ("/metrics", &Method::GET | &Method::HEAD) => Route::Metrics,
        ("/metrics", _) => Route::WrongMethod,
        _ => Route::NotFound,
    }
}

/// The response to one request.
async fn respond<B>(kernel: &Arc<Kernel>, req: &Request<B>) -> Response<Full<Bytes>> {
    match route(req.method(), req.uri().path()) {
        Route::NotFound => plain(
            StatusCode::NOT_FOUND,
            "not found: the metrics are at /metrics\n",
        ),
        Route::WrongMethod => {
            let mut r = plain(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed: use GET\n",
            );
            r.headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            r
        }
        Route::Metrics => {
            let format = Format::accepted(
                req.headers()
                    .get(ACCEPT)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or(""),
            );
            let snapshot = Snapshot::take(kernel).await;
            match snapshot.render(&kernel.syscall_stats, format) {
                Ok(text) => {
                    let mut r = Response::new(Full::new(Bytes::from(text)));
                    r.headers_mut().insert(
                        CONTENT_TYPE,
                        HeaderValue::from_static(format.content_type()),
                    );
                    r
                }
                Err(e) => {
                    tracing::error!("metrics endpoint: encode: {e}");
                    plain(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "cannot encode the metrics\n",
                    )
                }
            }
        }
    }
}

/// A short text response.
fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// The exposition format of a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text 0.0.4: the default, what `curl` gets.
    Text,
    /// OpenMetrics 1.0 text, when `Accept` names `application/openmetrics-text`.
    OpenMetrics,
}

impl Format {
    /// The format for an `Accept` header.
    fn accepted(accept: &str) -> Format {
        if accept.contains("application/openmetrics-text") {
            Format::OpenMetrics
        } else {
            Format::Text
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Format::Text => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            Format::OpenMetrics => OPENMETRICS,
        }
    }
}

/// One live agent's figures.
#[derive(Debug, Clone, Default)]
struct AgentFigures {
    id: u32,
    name: String,
    restarts: u32,
    mailbox: usize,
    /// From its cgroup, when it has one and the read worked.
    memory_bytes: Option<u64>,
    pids: Option<u64>,
    cpu_usec: Option<u64>,
}

/// An agent's cgroup memory (bytes), pids and CPU time (µs), where they could be read.
type CgroupUsage = (Option<u64>, Option<u64>, Option<u64>);

/// The kernel process's own figures, from /proc/self (`None` where a read failed).
#[derive(Debug, Clone, Default)]
struct ProcessFigures {
    rss_bytes: Option<u64>,
    threads: Option<u64>,
    open_fds: Option<u64>,
    uptime_secs: Option<f64>,
}

/// Everything a scrape shows but the syscall counts, read at one moment.
#[derive(Debug, Clone, Default)]
struct Snapshot {
    /// Agents LIST (detail) shows, by state.
    states: std::collections::HashMap<AgentState, u64>,
    /// The live agents, by id.
    agents: Vec<AgentFigures>,
    llm: clove_abi::msg::LlmSchedulerStats,
    /// The live agents' LLM figures.
    llm_agents: Vec<clove_abi::msg::LlmAgentStats>,
    process: ProcessFigures,
    connections: u64,
}

/// Every state, in the order they are shown; each is shown, 0 included, so that a state's
/// series does not vanish while no agent is in it.
const STATES: [AgentState; 7] = [
    AgentState::Created,
    AgentState::Starting,
    AgentState::Running,
    AgentState::Paused,
    AgentState::Stopping,
    AgentState::Stopped,
    AgentState::Failed,
];

impl Snapshot {
    /// Reads the kernel's figures now. The cgroupfs and procfs reads block (a few µs each):
    /// they run off the async workers.
    async fn take(kernel: &Arc<Kernel>) -> Snapshot {
        let live = kernel.agents.live();
        let mut states: std::collections::HashMap<AgentState, u64> = Default::default();
        for row in kernel.agents.list(true) {
            *states.entry(row.state).or_default() += 1;
        }
        let mut agents: Vec<AgentFigures> = live
            .iter()
            .map(|a| AgentFigures {
                id: a.id,
                name: a.name.clone(),
                restarts: a.restarts(),
                mailbox: kernel.ipc.depth(a.id),
                ..AgentFigures::default()
            })
            .collect();
        agents.sort_by_key(|a| a.id);
        let names: BTreeMap<u32, String> = agents.iter().map(|a| (a.id, a.name.clone())).collect();
        let llm_agents = kernel
            .llm
            .agent_stats(|id| names.contains_key(&id), |id| names.get(&id).cloned());
        let metrics = Arc::clone(&kernel.metrics);
        let blocking = tokio::task::spawn_blocking(move || {
            let usage: BTreeMap<u32, CgroupUsage> = live
                .iter()
                .filter_map(|a| {
                    let cg = a.cgroup()?;
                    let read = |c, r: Result<u64, _>| cg.has(c).then(|| r.ok()).flatten();
                    use crate::sandbox::cgroup::Controller;
                    Some((
                        a.id,
                        (
                            read(Controller::Memory, cg.memory_current()),
                            read(Controller::Pids, cg.pids_current()),
                            read(Controller::Cpuacct, cg.cpu_usage_usec()),
                        ),
                    ))
                })
                .collect();
            (usage, ProcessFigures::read(&metrics))
        });
        let (usage, process) = blocking.await.unwrap_or_default();
        for a in &mut agents {
            if let Some((memory, pids, cpu)) = usage.get(&a.id) {
                (a.memory_bytes, a.pids, a.cpu_usec) = (*memory, *pids, *cpu);
            }
        }
        Snapshot {
            states,
            agents,
            llm: kernel.llm.scheduler_stats(),
            llm_agents,
            process,
            connections: kernel
                .listeners
                .get()
                .map_or(0, |l| l.open_connections() as u64),
        }
    }

    /// The exposition text: these figures and the syscall counts.
    fn render(&self, syscalls: &SyscallStats, format: Format) -> Result<String, std::fmt::Error> {
        let registry = self.registry(syscalls);
        let mut text = String::new();
        match format {
            Format::Text => {
                prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)?
            }
            Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut text, &registry)?,
        }
        Ok(text)
    }

    /// A registry made for one scrape: fresh families filled from the snapshot, and the
    /// syscall families (clones sharing the live counts).
    fn registry(&self, syscalls: &SyscallStats) -> Registry {
        let mut r = Registry::default();
        syscalls.register(&mut r);

        let by_state: Family<[(&'static str, String); 1], Gauge> = Family::default();
        for state in STATES {
            by_state
                .get_or_create(&[("state", state.as_str().to_ascii_lowercase())])
                .set(gauge_value(self.states.get(&state).copied().unwrap_or(0)));
        }
        r.register(
            "clove_agents",
            "Agents by state: the live ones, and as stopped or failed the exited ones the \
             kernel remembers (its last 1024)",
            by_state,
        );
        r.register(
            "clove_agents_alive",
            "Agents alive (running, paused, starting or stopping)",
            unlabelled_gauge(self.agents.len() as u64),
        );

        let restarts = agent_family::<Counter>();
        let mailbox = agent_family::<Gauge>();
        let memory = agent_family::<Gauge>();
        let pids = agent_family::<Gauge>();
        let cpu = agent_family::<Counter<f64, AtomicU64>>();
        for a in &self.agents {
            let labels = agent_labels(a.id, &a.name);
            restarts
                .get_or_create(&labels)
                .inc_by(u64::from(a.restarts));
            mailbox
                .get_or_create(&labels)
                .set(gauge_value(a.mailbox as u64));
            if let Some(v) = a.memory_bytes {
                memory.get_or_create(&labels).set(gauge_value(v));
            }
            if let Some(v) = a.pids {
                pids.get_or_create(&labels).set(gauge_value(v));
            }
            if let Some(v) = a.cpu_usec {
                cpu.get_or_create(&labels).inc_by(v as f64 / 1e6);
            }
        }
        r.register(
            "clove_agent_restarts",
            "Restarts of a live agent by its policy or group",
            restarts,
        );
        r.register(
            "clove_agent_mailbox_messages",
            "Messages waiting in a live agent's mailbox",
            mailbox,
        );
        r.register_with_unit(
            "clove_agent_memory",
            "Memory a live agent's cgroup uses (page cache included on cgroup v1)",
            Unit::Bytes,
            memory,
        );
        r.register(
            "clove_agent_pids",
            "Processes and threads in a live agent's cgroup",
            pids,
        );
        r.register_with_unit(
            "clove_agent_cpu",
            "CPU time a live agent's cgroup used, in this run of its process",
            Unit::Seconds,
            cpu,
        );

        r.register(
            "clove_llm_queued",
            "THINK requests waiting for the LLM scheduler",
            unlabelled_gauge(u64::from(self.llm.queued)),
        );
        r.register(
            "clove_llm_in_flight",
            "LLM provider calls running",
            unlabelled_gauge(u64::from(self.llm.in_flight)),
        );
        r.register(
            "clove_llm_max_in_flight",
            "Most LLM provider calls at once (the scheduler's limit)",
            unlabelled_gauge(u64::from(self.llm.max_in_flight)),
        );
        let calls: Family<Vec<(&'static str, String)>, Counter> = Family::default();
        let tokens: Family<Vec<(&'static str, String)>, Counter> = Family::default();
        let queued = agent_family::<Gauge>();
        let in_flight = agent_family::<Gauge>();
        let wait_max = agent_family::<Gauge<f64, AtomicU64>>();
        let wait_mean = agent_family::<Gauge<f64, AtomicU64>>();
        for s in &self.llm_agents {
            let labels = agent_labels(s.agent_id, s.name.as_deref().unwrap_or(""));
            let with = |key: &'static str, value: &str| {
                let mut l = labels.to_vec();
                l.push((key, value.to_owned()));
                l
            };
            for (result, n) in [
                ("ok", s.calls),
                ("error", s.errors),
                ("cancelled", s.cancelled),
            ] {
                calls.get_or_create(&with("result", result)).inc_by(n);
            }
            for (kind, n) in [
                ("input", s.input_tokens),
                ("output", s.output_tokens),
                ("reported", s.reported_tokens),
            ] {
                tokens.get_or_create(&with("kind", kind)).inc_by(n);
            }
            queued
                .get_or_create(&labels)
                .set(gauge_value(u64::from(s.queued)));
            in_flight
                .get_or_create(&labels)
                .set(gauge_value(u64::from(s.in_flight)));
            wait_max
                .get_or_create(&labels)
                .set(s.queue_ms_max as f64 / 1e3);
            wait_mean.get_or_create(&labels).set(s.queue_ms_avg / 1e3);
        }
        r.register(
            "clove_llm_calls",
            "THINK calls of a live agent, by result: ok (answered), error, cancelled",
            calls,
        );
        r.register(
            "clove_llm_tokens",
            "Tokens of a live agent's THINK calls, by kind: input and output of answered \
             calls, reported with LLM_REPORT",
            tokens,
        );
        r.register(
            "clove_llm_agent_queued",
            "A live agent's THINK requests waiting for the scheduler",
            queued,
        );
        r.register(
            "clove_llm_agent_in_flight",
            "A live agent's LLM provider calls running",
            in_flight,
        );
        r.register_with_unit(
            "clove_llm_queue_wait_max",
            "Longest wait of a live agent's THINK in the scheduler's queue",
            Unit::Seconds,
            wait_max,
        );
        r.register_with_unit(
            "clove_llm_queue_wait_mean",
            "Mean wait of a live agent's THINK in the scheduler's queue",
            Unit::Seconds,
            wait_mean,
        );

        let p = &self.process;
        if let Some(v) = p.rss_bytes {
            r.register_with_unit(
                "clove_kernel_resident_memory",
                "Resident memory of the kernel process",
                Unit::Bytes,
                unlabelled_gauge(v),
            );
        }
        if let Some(v) = p.threads {
            r.register(
                "clove_kernel_threads",
                "Threads of the kernel process",
                unlabelled_gauge(v),
            );
        }
        if let Some(v) = p.open_fds {
            r.register(
                "clove_kernel_open_fds",
                "Open file descriptors of the kernel process",
                unlabelled_gauge(v),
            );
        }
        if let Some(v) = p.uptime_secs {
            let g: Gauge<f64, AtomicU64> = Gauge::default();
            g.set(v);
            r.register_with_unit(
                "clove_kernel_uptime",
                "Time since the kernel process started",
                Unit::Seconds,
                g,
            );
        }
        r.register(
            "clove_connections_open",
            "Client connections open on the kernel's sockets (agents' own included)",
            unlabelled_gauge(self.connections),
        );
        r
    }
}

/// The labels of a per-agent series.
type AgentLabels = [(&'static str, String); 2];

fn agent_labels(id: u32, name: &str) -> AgentLabels {
    [("agent_id", id.to_string()), ("agent", name.to_owned())]
}

fn agent_family<M: Default>() -> Family<AgentLabels, M> {
    Family::default()
}

/// A gauge's value from a count (saturating: no figure here comes near `i64::MAX`).
fn gauge_value(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn unlabelled_gauge(v: u64) -> Gauge {
    let g = Gauge::default();
    g.set(gauge_value(v));
    g
}

impl ProcessFigures {
    /// The kernel process's figures, through the metrics readers; a figure whose read
    /// fails is left out of the scrape.
    fn read(metrics: &crate::metrics::Metrics) -> ProcessFigures {
        let pid = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
        let p = metrics.process(pid);
        ProcessFigures {
            rss_bytes: p.as_ref().map(|p| p.memory.rss),
            threads: p.as_ref().map(|p| u64::from(p.threads)),
            open_fds: p.as_ref().map(|p| u64::from(p.fds)),
            // To the millisecond.
            uptime_secs: super::proc::age(pid).map(|d| (d.as_secs_f64() * 1e3).round() / 1e3),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn snapshot() -> Snapshot {
        Snapshot {
            states: [(AgentState::Running, 1), (AgentState::Stopped, 2)]
                .into_iter()
                .collect(),
            agents: vec![AgentFigures {
                id: 7,
                name: "we\"ird\\name\n".into(),
                restarts: 3,
                mailbox: 2,
                memory_bytes: Some(4096),
                pids: Some(1),
                cpu_usec: Some(1_500_000),
            }],
            llm: clove_abi::msg::LlmSchedulerStats {
                policy: "vtc".into(),
                max_in_flight: 4,
                in_flight: 1,
                queued: 2,
            },
            llm_agents: vec![clove_abi::msg::LlmAgentStats {
                agent_id: 7,
                name: Some("we\"ird\\name\n".into()),
                calls: 5,
                input_tokens: 10,
                output_tokens: 20,
                queue_ms_max: 1500,
                ..Default::default()
            }],
            process: ProcessFigures {
                rss_bytes: Some(1 << 20),
                threads: Some(3),
                open_fds: Some(9),
                uptime_secs: Some(1.5),
            },
            connections: 4,
        }
    }

    fn has(text: &str, line: &str) {
        assert!(text.lines().any(|l| l == line), "{line:?} not in\n{text}");
    }

    #[test]
    fn renders_every_figure_with_help_and_escaped_labels() {
        let stats = SyscallStats::default();
        stats.observe(0, None, Duration::from_micros(50));
        let text = snapshot().render(&stats, Format::Text).unwrap();
        let agent = r#"agent_id="7",agent="we\"ird\\name\n""#;
        for line in [
            "clove_syscalls_total{opcode=\"NOOP\",result=\"ok\"} 1".to_owned(),
            "clove_agents{state=\"running\"} 1".into(),
            "clove_agents{state=\"stopped\"} 2".into(),
            "clove_agents{state=\"paused\"} 0".into(),
            "clove_agents_alive 1".into(),
            format!("clove_agent_restarts_total{{{agent}}} 3"),
            format!("clove_agent_mailbox_messages{{{agent}}} 2"),
            format!("clove_agent_memory_bytes{{{agent}}} 4096"),
            format!("clove_agent_pids{{{agent}}} 1"),
            format!("clove_agent_cpu_seconds_total{{{agent}}} 1.5"),
            "clove_llm_queued 2".into(),
            "clove_llm_in_flight 1".into(),
            "clove_llm_max_in_flight 4".into(),
            format!("clove_llm_calls_total{{{agent},result=\"ok\"}} 5"),
            format!("clove_llm_calls_total{{{agent},result=\"error\"}} 0"),
            format!("clove_llm_tokens_total{{{agent},kind=\"output\"}} 20"),
            format!("clove_llm_queue_wait_max_seconds{{{agent}}} 1.5"),
            "clove_kernel_resident_memory_bytes 1048576".into(),
            "clove_kernel_threads 3".into(),
            "clove_kernel_open_fds 9".into(),
            "clove_kernel_uptime_seconds 1.5".into(),
            "clove_connections_open 4".into(),
        ] {
            has(&text, &line);
        }
        // Every series has its HELP and TYPE.
        let mut typed = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                typed.insert(rest.split(' ').next().unwrap().to_owned());
            }
        }
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let name = line.split(['{', ' ']).next().unwrap();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| typed.contains(*f)))
                .unwrap_or(name);
            assert!(typed.contains(family), "no TYPE for {line}");
            assert!(
                text.contains(&format!("# HELP {family} ")),
                "no HELP for {family}"
            );
        }
        assert!(!text.contains("# EOF"), "{text}");
    }

    #[test]
    fn openmetrics_when_asked_for() {
        let text = snapshot()
            .render(&SyscallStats::default(), Format::OpenMetrics)
            .unwrap();
        assert!(text.ends_with("# EOF\n"), "{text}");
        has(&text, "# TYPE clove_agent_restarts counter");
        assert_eq!(
            Format::accepted("application/openmetrics-text;version=1.0.0,text/plain;q=0.5"),
            Format::OpenMetrics
        );
        assert_eq!(Format::accepted("*/*"), Format::Text);
        assert_eq!(Format::accepted(""), Format::Text);
    }

    #[test]
    fn a_kernel_without_agents_still_shows_every_state_and_no_agent_series() {
        let text = Snapshot::default()
            .render(&SyscallStats::default(), Format::Text)
            .unwrap();
        for state in STATES {
            has(
                &text,
                &format!(
                    "clove_agents{{state=\"{}\"}} 0",
                    state.as_str().to_ascii_lowercase()
                ),
            );
        }
        assert!(!text.contains("agent_id="), "{text}");
    }

    #[test]
    fn routes_by_path_then_method() {
        assert_eq!(route(&Method::GET, "/metrics"), Route::Metrics);
        assert_eq!(route(&Method::HEAD, "/metrics"), Route::Metrics);
        assert_eq!(route(&Method::POST, "/metrics"), Route::WrongMethod);
        assert_eq!(route(&Method::GET, "/"), Route::NotFound);
        assert_eq!(route(&Method::GET, "/metrics/x"), Route::NotFound);
        assert_eq!(route(&Method::DELETE, "/other"), Route::NotFound);
    }

    #[test]
    fn the_kernel_process_figures_are_read() {
        let p = ProcessFigures::read(&crate::metrics::Metrics::new());
        assert!(p.rss_bytes.unwrap() > 0);
        assert!(p.threads.unwrap() >= 1);
        assert!(p.open_fds.unwrap() >= 3);
        assert!(p.uptime_secs.unwrap() >= 0.0);
    }
}
