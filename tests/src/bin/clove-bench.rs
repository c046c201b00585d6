//! `clove-bench`: whole-system figures for the Clove kernel, with a baseline measured in the
//! same run (see DESIGN.md, "Tests and measurements").
//!
//! One run measures:
//! 1. NOOP round-trip latency, one connection doing sequential request → reply round trips,
//!    against the kernel (JSON frames, postcard frames) and against a bare frame echo server
//!    (blocking std `UnixListener`, a thread per connection) started in-process: the physical
//!    floor. The same minimal blocking client drives every target, so the server is the only
//!    variable. Targets alternate in blocks (kernel-json, echo, kernel-postcard, echo, rotated
//!    each round) and each figure is the median over the blocks, which cancels most machine
//!    noise. Each block runs under one or more CPU placements (`--placement`): `free` (the
//!    scheduler places the threads: what a client gets) and `same` (client and server threads
//!    pinned to one CPU: the code path alone, without cross-CPU wake-ups, which on a small VM
//!    cost tens of microseconds and depend on how the server waits for input).
//! 2. Throughput: `--conns` connections each doing NOOPs (sequential, or `--depth` per write)
//!    for `--duration` seconds; total requests per second; median over `--tp-rounds` rounds.
//! 3. The kernel's resident memory (VmRSS) idle right after start, and with `--rss-conns`
//!    connections open, each having been served one NOOP.
//!
//! Run it in release: `cargo run --release -p clove-tests --bin clove-bench -- [--quick] [--json]`.

mod bench {
    pub mod affinity;
    pub mod client;
    pub mod echo;
    pub mod epoll_echo;
    pub mod stats;
}

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use clove_abi::Codec;
use clove_tests::{Kernel, KernelOpts};
use serde_json::json;

use bench::affinity;
use bench::client::{Client, Pipelined};
use bench::echo::EchoServer;
use bench::epoll_echo;
use bench::stats::{median, summarize, Summary};

/// The project's goals, reported against.
const GOAL_P50_RATIO: f64 = 1.3;
const GOAL_IDLE_RSS_BYTES: f64 = 10_000_000.0;

/// Whole-system benchmark of clove-kernel against a bare Unix-socket frame echo server.
///
/// Measures NOOP round-trip latency (p50/p99/mean/min), multi-connection throughput and the
/// kernel's resident memory, and prints kernel/echo ratios. Build and run in release:
/// `cargo run --release -p clove-tests --bin clove-bench -- [options]`. Progress goes to stderr;
/// the results table (or, with --json, one JSON object) to stdout. Defaults take about 40 s.
#[derive(Parser, Debug)]
#[command(name = "clove-bench", version)]
struct Args {
    /// Timed round trips per latency block (one block = one target, one connection)
    /// [default: 20000; --quick: 2000].
    #[arg(long, value_name = "N")]
    iters: Option<usize>,
    /// Untimed round trips before each latency block [default: 2000; --quick: 200].
    #[arg(long, value_name = "N")]
    warmup: Option<usize>,
    /// Latency rounds: each round runs one block per target, in rotated order; figures are
    /// medians over the rounds [default: 5; --quick: 3].
    #[arg(long, value_name = "N")]
    rounds: Option<usize>,
    /// Latency placements to measure, comma-separated: `free` (the scheduler places threads),
    /// `same` (client and server threads pinned to one CPU), `split` (client and server on
    /// different CPUs).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "free,same")]
    placement: Vec<Placement>,
    /// Also measure latency against a second, diagnostic baseline: the same bare echo, but
    /// with each connection thread waiting in epoll_wait (as an event-loop server does)
    /// instead of blocking in read.
    #[arg(long)]
    epoll_echo: bool,
    /// NOOP payload size in bytes (same for every target and codec).
    #[arg(long, value_name = "BYTES", default_value_t = 16)]
    payload: usize,
    /// Client connections for the throughput runs.
    #[arg(long, value_name = "N", default_value_t = 8)]
    conns: usize,
    /// Throughput: NOOPs per write per connection. 1 = sequential request → reply; above 1,
    /// each connection writes DEPTH frames at once, then reads the DEPTH replies.
    #[arg(long, value_name = "N", default_value_t = 1)]
    depth: usize,
    /// Seconds per throughput run [default: 2; --quick: 0.5].
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// Throughput rounds (each runs every target once, rotated); the median is reported
    /// [default: 3; --quick: 1].
    #[arg(long, value_name = "N")]
    tp_rounds: Option<usize>,
    /// Client connections held open for the loaded RSS figure.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    rss_conns: usize,
    /// Smoke-check mode: far fewer iterations and shorter runs (explicit options still win).
    /// Its `free` latency figures are not comparable with a full run's: blocks of a few
    /// milliseconds end before the scheduler's load balancing has settled thread placement.
    #[arg(long)]
    quick: bool,
    /// Print the results as one JSON object on stdout instead of the table.
    #[arg(long)]
    json: bool,
    /// Extra flag passed to every kernel started (repeatable), e.g. `--kernel-arg=--foo`.
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    kernel_arg: Vec<String>,
    /// Extra environment variable for every kernel started (repeatable), as KEY=VALUE,
    /// e.g. `--kernel-env TOKIO_WORKER_THREADS=1`.
    #[arg(long, value_name = "KEY=VALUE")]
    kernel_env: Vec<String>,
}

/// Resolved settings.
#[derive(Debug, Clone)]
struct Config {
    iters: usize,
    warmup: usize,
    rounds: usize,
    placements: Vec<Placement>,
    epoll_echo: bool,
    payload: usize,
    conns: usize,
    depth: usize,
    duration: Duration,
    tp_rounds: usize,
    rss_conns: usize,
    kernel_args: Vec<String>,
    kernel_env: Vec<(String, String)>,
}

impl Config {
    fn from(a: &Args) -> Result<Config> {
        let q = a.quick;
        let pick =
            |v: Option<usize>, full: usize, quick: usize| v.unwrap_or(if q { quick } else { full });
        let secs = a.duration.unwrap_or(if q { 0.5 } else { 2.0 });
        if !(secs.is_finite() && secs > 0.0) {
            bail!("--duration must be a positive number of seconds");
        }
        let c = Config {
            iters: pick(a.iters, 20_000, 2_000),
            warmup: pick(a.warmup, 2_000, 200),
            rounds: pick(a.rounds, 5, 3),
            placements: dedup(&a.placement),
            epoll_echo: a.epoll_echo,
            payload: a.payload,
            conns: a.conns,
            depth: a.depth,
            duration: Duration::from_secs_f64(secs),
            tp_rounds: pick(a.tp_rounds, 3, 1),
            rss_conns: a.rss_conns,
            kernel_args: a.kernel_arg.clone(),
            kernel_env: a
                .kernel_env
                .iter()
                .map(|kv| {
                    kv.split_once('=')
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .with_context(|| format!("--kernel-env {kv:?}: expected KEY=VALUE"))
                })
                .collect::<Result<_>>()?,
        };
        if c.placements.is_empty() {
            bail!("--placement needs at least one of free, same, split");
        }
        if c.iters == 0 || c.rounds == 0 || c.conns == 0 || c.depth == 0 || c.tp_rounds == 0 {
            bail!("--iters, --rounds, --conns, --depth and --tp-rounds must be at least 1");
        }
        if c.payload as u64 > clove_abi::frame::DEFAULT_MAX_PAYLOAD {
            bail!(
                "--payload must be at most {} bytes",
                clove_abi::frame::DEFAULT_MAX_PAYLOAD
            );
        }
        Ok(c)
    }
}

fn dedup(list: &[Placement]) -> Vec<Placement> {
    let mut out = Vec::new();
    for &p in list {
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

fn main() -> Result<()> {
    let args = Args::parse();
    let cfg = Config::from(&args)?;
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    if profile == "debug" {
        eprintln!(
            "clove-bench: WARNING: debug build; figures are meaningless. \
             Run with `cargo run --release -p clove-tests --bin clove-bench`."
        );
    }
    let fd_limit = raise_fd_limit()?;
    let started = Instant::now();

    let kernel_bin = clove_tests::kernel_bin();
    progress(format_args!("kernel binary: {}", kernel_bin.display()));
    let payload: Vec<u8> = (0..cfg.payload).map(|i| b'a' + (i % 26) as u8).collect();

    let rss = measure_rss(&cfg, &payload, fd_limit).context("RSS measurement")?;

    let kernel = start_kernel(&cfg, None).context("start the kernel")?;
    let echo = EchoServer::start().context("start the echo server")?;
    let epoll_echo = if cfg.epoll_echo {
        Some(epoll_echo::start().context("start the epoll echo server")?)
    } else {
        None
    };
    let latency = measure_latency(
        &cfg,
        &payload,
        &kernel,
        &echo.path,
        epoll_echo.as_ref().map(|e| e.path.as_path()),
    )
    .context("latency measurement")?;
    let throughput = measure_throughput(&cfg, &payload, &kernel.socket, &echo.path)
        .context("throughput measurement")?;
    drop(epoll_echo);
    drop(echo);
    drop(kernel);

    let report = Report {
        profile,
        cfg,
        latency,
        throughput,
        rss,
        elapsed: started.elapsed(),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report.to_json())?);
    } else {
        report.print_table();
    }
    Ok(())
}

fn progress(args: std::fmt::Arguments<'_>) {
    eprintln!("clove-bench: {args}");
}

/// Raises the soft open-files limit to the hard one (kernels started later inherit it);
/// returns the new soft limit.
fn raise_fd_limit() -> Result<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).context("getrlimit(RLIMIT_NOFILE)")?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).context("setrlimit(RLIMIT_NOFILE)")?;
    }
    Ok(hard)
}

fn start_kernel(cfg: &Config, max_connections: Option<usize>) -> Result<Kernel> {
    let mut args = Vec::new();
    if let Some(n) = max_connections {
        args.push("--max-connections".to_owned());
        args.push(n.to_string());
    }
    args.extend(cfg.kernel_args.iter().cloned());
    Kernel::start_with(KernelOpts {
        args,
        env: cfg.kernel_env.clone(),
        ..KernelOpts::default()
    })
}

// ---------------------------------------------------------------------------------------------
// Latency

/// Where the latency client and the server's threads run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Placement {
    /// The scheduler places every thread (what a real client gets).
    Free,
    /// Client thread and every server thread pinned to one CPU: no cross-CPU wake-ups, so the
    /// figure is the cost of the code path.
    Same,
    /// Client pinned to one CPU, the server's threads to another: every wake-up crosses CPUs.
    Split,
}

impl Placement {
    fn name(self) -> &'static str {
        match self {
            Placement::Free => "free",
            Placement::Same => "same-cpu",
            Placement::Split => "split-cpu",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Placement::Free => "threads placed by the scheduler",
            Placement::Same => "client and server threads pinned to one CPU",
            Placement::Split => "client on one CPU, server threads on another",
        }
    }

    /// (client CPUs, server CPUs) for this placement.
    fn cpus(self, allowed: &[usize]) -> Result<(Vec<usize>, Vec<usize>)> {
        let first = *allowed.first().context("no CPU allowed")?;
        let last = *allowed.last().context("no CPU allowed")?;
        Ok(match self {
            Placement::Free => (allowed.to_vec(), allowed.to_vec()),
            Placement::Same => (vec![last], vec![last]),
            Placement::Split => {
                if first == last {
                    bail!("--placement split needs at least two CPUs");
                }
                (vec![first], vec![last])
            }
        })
    }
}

/// Which server a latency target talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Server {
    Kernel,
    Echo,
    EpollEcho,
}

/// The latency targets, in their base order (alternating kernel and echo); the epoll echo
/// targets only with `--epoll-echo`.
fn latency_targets(epoll: bool) -> Vec<(&'static str, Codec, Server)> {
    let mut t = vec![
        ("kernel-json", Codec::Json, Server::Kernel),
        ("echo-json", Codec::Json, Server::Echo),
        ("kernel-postcard", Codec::Postcard, Server::Kernel),
        ("echo-postcard", Codec::Postcard, Server::Echo),
    ];
    if epoll {
        t.push(("epoll-echo-json", Codec::Json, Server::EpollEcho));
        t.push(("epoll-echo-postcard", Codec::Postcard, Server::EpollEcho));
    }
    t
}

struct LatencyResult {
    placement: Placement,
    name: &'static str,
    /// Median over blocks of each block's figures.
    p50_ns: f64,
    p99_ns: f64,
    /// Over all samples of all blocks.
    pooled: Summary,
    block_p50_ns: Vec<f64>,
}

/// Pins the calling (client) thread and the server's threads for `placement`.
fn place(placement: Placement, allowed: &[usize], kernel_pid: u32, server: Server) -> Result<()> {
    let (client, server_cpus) = placement.cpus(allowed)?;
    affinity::set(0, &client).context("pin the client thread")?;
    let tids = match server {
        Server::Kernel => affinity::threads(kernel_pid, "")?,
        // Both echo servers' threads are named `echo-*`.
        Server::Echo | Server::EpollEcho => affinity::threads(std::process::id(), "echo-")?,
    };
    affinity::set_all(&tids, &server_cpus).context("pin the server threads")?;
    Ok(())
}

fn measure_latency(
    cfg: &Config,
    payload: &[u8],
    kernel: &Kernel,
    echo: &Path,
    epoll_echo: Option<&Path>,
) -> Result<Vec<LatencyResult>> {
    let targets = latency_targets(epoll_echo.is_some());
    progress(format_args!(
        "latency: {} rounds x {} placement(s) x {} targets x {} round trips (+{} warm-up), \
         payload {} B",
        cfg.rounds,
        cfg.placements.len(),
        targets.len(),
        cfg.iters,
        cfg.warmup,
        cfg.payload
    ));
    let allowed = affinity::get(0).context("sched_getaffinity")?;
    let mut clients = Vec::new();
    for &(name, codec, server) in &targets {
        let path = match (server, epoll_echo) {
            (Server::Kernel, _) => kernel.socket.as_path(),
            (Server::EpollEcho, Some(p)) => p,
            _ => echo,
        };
        let client =
            Client::connect(path, codec, payload).with_context(|| format!("connect {name}"))?;
        clients.push(client);
    }
    let n = targets.len();
    let m = cfg.placements.len();
    // Indexed [placement][target].
    let mut all: Vec<Vec<Vec<u64>>> = vec![vec![Vec::new(); n]; m];
    let mut block_p50: Vec<Vec<Vec<f64>>> = vec![vec![Vec::new(); n]; m];
    let mut block_p99: Vec<Vec<Vec<f64>>> = vec![vec![Vec::new(); n]; m];
    let mut block = Vec::with_capacity(cfg.iters);
    for round in 0..cfg.rounds {
        for (pi, &placement) in cfg.placements.iter().enumerate() {
            for k in 0..n {
                let t = (round + k) % n;
                let (name, _, server) = targets[t];
                place(placement, &allowed, kernel.pid(), server)?;
                let client = &mut clients[t];
                for _ in 0..cfg.warmup {
                    client
                        .round_trip()
                        .with_context(|| format!("{name} warm-up"))?;
                }
                block.clear();
                for _ in 0..cfg.iters {
                    let start = Instant::now();
                    client
                        .round_trip()
                        .with_context(|| format!("{name} round trip"))?;
                    block.push(start.elapsed().as_nanos() as u64);
                }
                all[pi][t].extend_from_slice(&block);
                let s = summarize(&mut block);
                block_p50[pi][t].push(s.p50_ns);
                block_p99[pi][t].push(s.p99_ns);
            }
            let line: Vec<String> = (0..n)
                .map(|t| {
                    format!(
                        "{} {:.2}",
                        targets[t].0,
                        block_p50[pi][t].last().copied().unwrap_or(f64::NAN) / 1e3
                    )
                })
                .collect();
            progress(format_args!(
                "  round {}/{} {}: p50 µs: {}",
                round + 1,
                cfg.rounds,
                placement.name(),
                line.join(", ")
            ));
        }
    }
    // Leave every thread free for what follows.
    place(Placement::Free, &allowed, kernel.pid(), Server::Kernel)?;
    place(Placement::Free, &allowed, kernel.pid(), Server::Echo)?;
    let mut out = Vec::new();
    for (pi, &placement) in cfg.placements.iter().enumerate() {
        for t in 0..n {
            out.push(LatencyResult {
                placement,
                name: targets[t].0,
                p50_ns: median(&block_p50[pi][t]),
                p99_ns: median(&block_p99[pi][t]),
                pooled: summarize(&mut all[pi][t]),
                block_p50_ns: block_p50[pi][t].clone(),
            });
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Throughput

/// Throughput targets, in their base order.
const THROUGHPUT_TARGETS: [(&str, Codec, bool); 3] = [
    ("kernel-json", Codec::Json, true),
    ("echo", Codec::Json, false),
    ("kernel-postcard", Codec::Postcard, true),
];

struct ThroughputResult {
    name: &'static str,
    /// Median over rounds, requests per second.
    rps: f64,
    rounds_rps: Vec<f64>,
}

enum Worker {
    Seq(Client),
    Pipe(Pipelined),
}

impl Worker {
    /// Runs one step; returns the number of NOOPs completed.
    fn step(&mut self, depth: usize) -> Result<u64> {
        match self {
            Worker::Seq(c) => c.round_trip().map(|()| 1),
            Worker::Pipe(p) => p.batch().map(|()| depth as u64),
        }
    }
}

fn throughput_run(
    cfg: &Config,
    payload: &[u8],
    path: &Path,
    codec: Codec,
    name: &str,
) -> Result<f64> {
    let mut workers = Vec::with_capacity(cfg.conns);
    for _ in 0..cfg.conns {
        let mut w = if cfg.depth == 1 {
            Worker::Seq(Client::connect(path, codec, payload)?)
        } else {
            Worker::Pipe(Pipelined::connect(path, codec, payload, cfg.depth)?)
        };
        w.step(cfg.depth)
            .with_context(|| format!("{name}: first NOOP"))?;
        workers.push(w);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let go = Arc::new(Barrier::new(cfg.conns + 1));
    let depth = cfg.depth;
    let threads: Vec<_> = workers
        .into_iter()
        .map(|mut w| {
            let (stop, go) = (Arc::clone(&stop), Arc::clone(&go));
            std::thread::spawn(move || -> Result<u64> {
                go.wait();
                let mut done = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    done += w.step(depth)?;
                }
                Ok(done)
            })
        })
        .collect();
    go.wait();
    let start = Instant::now();
    std::thread::sleep(cfg.duration);
    stop.store(true, Ordering::Relaxed);
    let mut total = 0u64;
    let mut failure = None;
    for t in threads {
        match t.join() {
            Ok(Ok(n)) => total += n,
            Ok(Err(e)) => failure = Some(e),
            Err(_) => failure = Some(anyhow::anyhow!("a client thread panicked")),
        }
    }
    let elapsed = start.elapsed();
    if let Some(e) = failure {
        return Err(e.context(format!("{name} throughput")));
    }
    Ok(total as f64 / elapsed.as_secs_f64())
}

fn measure_throughput(
    cfg: &Config,
    payload: &[u8],
    kernel: &Path,
    echo: &Path,
) -> Result<Vec<ThroughputResult>> {
    progress(format_args!(
        "throughput: {} rounds x {} targets x {:.1} s, {} connections, depth {}",
        cfg.tp_rounds,
        THROUGHPUT_TARGETS.len(),
        cfg.duration.as_secs_f64(),
        cfg.conns,
        cfg.depth
    ));
    let n = THROUGHPUT_TARGETS.len();
    let mut rounds: Vec<Vec<f64>> = vec![Vec::new(); n];
    for round in 0..cfg.tp_rounds {
        for k in 0..n {
            let t = (round + k) % n;
            let (name, codec, is_kernel) = THROUGHPUT_TARGETS[t];
            let path = if is_kernel { kernel } else { echo };
            rounds[t].push(throughput_run(cfg, payload, path, codec, name)?);
        }
        let line: Vec<String> = (0..n)
            .map(|t| {
                format!(
                    "{} {:.0}",
                    THROUGHPUT_TARGETS[t].0,
                    rounds[t].last().copied().unwrap_or(f64::NAN)
                )
            })
            .collect();
        progress(format_args!(
            "  round {}/{}: req/s: {}",
            round + 1,
            cfg.tp_rounds,
            line.join(", ")
        ));
    }
    Ok((0..n)
        .map(|t| ThroughputResult {
            name: THROUGHPUT_TARGETS[t].0,
            rps: median(&rounds[t]),
            rounds_rps: rounds[t].clone(),
        })
        .collect())
}

// ---------------------------------------------------------------------------------------------
// Memory

/// Figures from /proc/<pid>/status.
#[derive(Debug, Clone, Copy)]
struct ProcStatus {
    rss_kib: u64,
    hwm_kib: u64,
    threads: u64,
}

fn proc_status(pid: u32) -> Result<ProcStatus> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    let field = |key: &str| -> Result<u64> {
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .with_context(|| format!("{key} missing from {path}"))?;
        let num = line.trim().trim_end_matches("kB").trim();
        num.parse()
            .with_context(|| format!("{key} in {path}: {line:?}"))
    };
    Ok(ProcStatus {
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:")?,
        threads: field("Threads:")?,
    })
}

struct RssResult {
    idle: ProcStatus,
    loaded: ProcStatus,
    conns: usize,
}

fn measure_rss(cfg: &Config, payload: &[u8], fd_limit: u64) -> Result<RssResult> {
    let conns = cfg.rss_conns;
    if conns as u64 + 64 > fd_limit {
        bail!(
            "--rss-conns {conns} needs more file descriptors than RLIMIT_NOFILE allows ({fd_limit})"
        );
    }
    progress(format_args!(
        "memory: kernel RSS idle, then with {conns} connections"
    ));
    let kernel = start_kernel(cfg, Some(4096.max(conns + 64)))?;
    // Let start-up settle (worker threads park) before reading.
    std::thread::sleep(Duration::from_millis(300));
    let idle = proc_status(kernel.pid())?;
    let mut open = Vec::with_capacity(conns);
    for i in 0..conns {
        let mut c = Client::connect(&kernel.socket, Codec::Json, payload)
            .with_context(|| format!("connection {}", i + 1))?;
        c.round_trip()
            .with_context(|| format!("NOOP on connection {}", i + 1))?;
        open.push(c);
    }
    std::thread::sleep(Duration::from_millis(300));
    let loaded = proc_status(kernel.pid())?;
    drop(open);
    drop(kernel);
    Ok(RssResult {
        idle,
        loaded,
        conns,
    })
}

// ---------------------------------------------------------------------------------------------
// Report

struct Report {
    profile: &'static str,
    cfg: Config,
    latency: Vec<LatencyResult>,
    throughput: Vec<ThroughputResult>,
    rss: RssResult,
    elapsed: Duration,
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

impl Report {
    fn lat(&self, placement: Placement, name: &str) -> Option<&LatencyResult> {
        self.latency
            .iter()
            .find(|l| l.placement == placement && l.name == name)
    }

    fn tp(&self, name: &str) -> f64 {
        self.throughput
            .iter()
            .find(|t| t.name == name)
            .map_or(f64::NAN, |t| t.rps)
    }

    /// kernel / echo for `codec` under `placement`, of the figure `f`.
    fn ratio(&self, placement: Placement, codec: &str, f: fn(&LatencyResult) -> f64) -> f64 {
        self.ratio_to(placement, codec, "echo", f)
    }

    /// kernel / `base` (`echo` or `epoll-echo`) for `codec` under `placement`, of `f`.
    fn ratio_to(
        &self,
        placement: Placement,
        codec: &str,
        base: &str,
        f: fn(&LatencyResult) -> f64,
    ) -> f64 {
        match (
            self.lat(placement, &format!("kernel-{codec}")),
            self.lat(placement, &format!("{base}-{codec}")),
        ) {
            (Some(k), Some(e)) => f(k) / f(e),
            _ => f64::NAN,
        }
    }

    fn p50_ratio(&self, placement: Placement, codec: &str) -> f64 {
        self.ratio(placement, codec, |l| l.p50_ns)
    }

    fn p99_ratio(&self, placement: Placement, codec: &str) -> f64 {
        self.ratio(placement, codec, |l| l.p99_ns)
    }

    fn tp_ratio(&self, codec: &str) -> f64 {
        self.tp(&format!("kernel-{codec}")) / self.tp("echo")
    }

    fn idle_ok(&self) -> bool {
        (self.rss.idle.rss_kib as f64 * 1024.0) < GOAL_IDLE_RSS_BYTES
    }

    fn per_conn_kib(&self) -> f64 {
        (self.rss.loaded.rss_kib as f64 - self.rss.idle.rss_kib as f64)
            / self.rss.conns.max(1) as f64
    }

    fn print_table(&self) {
        let c = &self.cfg;
        println!();
        println!(
            "clove-bench ({} build, {} CPUs, Linux {}): NOOP, payload {} B",
            self.profile,
            cpus(),
            os_release(),
            c.payload
        );
        println!(
            "latency: 1 connection, sequential round trips; {} rounds x {} per target and \
             placement (p50/p99: median over rounds; mean/min: all samples)",
            c.rounds, c.iters
        );
        println!(
            "throughput: {} connections, depth {}, {:.1} s per run, median of {} run(s), \
             threads placed by the scheduler",
            c.conns,
            c.depth,
            c.duration.as_secs_f64(),
            c.tp_rounds
        );
        println!();
        println!(
            "{:<10} {:<20} {:>9} {:>9} {:>9} {:>9} {:>16}",
            "placement", "target", "p50 µs", "p99 µs", "mean µs", "min µs", "throughput req/s"
        );
        for l in &self.latency {
            let tp = match (l.placement, l.name) {
                (p, _) if p != c.placements[0] => String::new(),
                (_, "kernel-json") => format!("{:.0}", self.tp("kernel-json")),
                (_, "kernel-postcard") => format!("{:.0}", self.tp("kernel-postcard")),
                (_, "echo-json") => format!("{:.0}", self.tp("echo")),
                (_, "echo-postcard") => "(same echo)".to_owned(),
                _ => String::new(),
            };
            println!(
                "{:<10} {:<20} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>16}",
                l.placement.name(),
                l.name,
                l.p50_ns / 1e3,
                l.p99_ns / 1e3,
                l.pooled.mean_ns / 1e3,
                l.pooled.min_ns / 1e3,
                tp
            );
        }
        println!();
        println!("ratios kernel / echo (same run):");
        for &p in &c.placements {
            for codec in ["json", "postcard"] {
                let r = self.p50_ratio(p, codec);
                println!(
                    "  p50 {:<9} {:<8} {:>6.2}x   goal <= {GOAL_P50_RATIO:.2}x: {}   ({})",
                    p.name(),
                    codec,
                    r,
                    verdict(r <= GOAL_P50_RATIO),
                    p.describe()
                );
            }
        }
        if c.epoll_echo {
            for &p in &c.placements {
                for codec in ["json", "postcard"] {
                    println!(
                        "  p50 {:<9} {:<8} {:>6.2}x   (kernel / epoll echo: diagnostic)",
                        p.name(),
                        codec,
                        self.ratio_to(p, codec, "epoll-echo", |l| l.p50_ns)
                    );
                }
            }
        }
        for &p in &c.placements {
            for codec in ["json", "postcard"] {
                println!(
                    "  p99 {:<9} {:<8} {:>6.2}x",
                    p.name(),
                    codec,
                    self.p99_ratio(p, codec)
                );
            }
        }
        for codec in ["json", "postcard"] {
            println!(
                "  throughput    {:<8} {:>6.2}x   (higher is better)",
                codec,
                self.tp_ratio(codec)
            );
        }
        println!();
        let r = &self.rss;
        println!(
            "kernel RSS: idle {:.2} MiB ({:.2} MB; goal < 10 MB: {}), {} threads",
            mib(r.idle.rss_kib),
            r.idle.rss_kib as f64 * 1024.0 / 1e6,
            verdict(self.idle_ok()),
            r.idle.threads
        );
        println!(
            "            with {} connections {:.2} MiB (+{:.1} KiB per connection; \
             peak {:.2} MiB), {} threads",
            r.conns,
            mib(r.loaded.rss_kib),
            self.per_conn_kib(),
            mib(r.loaded.hwm_kib),
            r.loaded.threads
        );
        println!();
        println!("total bench time {:.1} s", self.elapsed.as_secs_f64());
    }

    fn to_json(&self) -> serde_json::Value {
        let c = &self.cfg;
        let us = |ns: f64| (ns / 10.0).round() / 100.0;
        let ratio = |r: f64| (r * 1000.0).round() / 1000.0;
        let mut latency = serde_json::Map::new();
        let mut ratios = serde_json::Map::new();
        let mut goals = serde_json::Map::new();
        for &p in &c.placements {
            let targets: serde_json::Map<String, serde_json::Value> = self
                .latency
                .iter()
                .filter(|l| l.placement == p)
                .map(|l| {
                    (
                        l.name.to_owned(),
                        json!({
                            "p50_us": us(l.p50_ns),
                            "p99_us": us(l.p99_ns),
                            "mean_us": us(l.pooled.mean_ns),
                            "min_us": us(l.pooled.min_ns),
                            "max_us": us(l.pooled.max_ns),
                            "pooled_p50_us": us(l.pooled.p50_ns),
                            "pooled_p99_us": us(l.pooled.p99_ns),
                            "block_p50_us":
                                l.block_p50_ns.iter().map(|&v| us(v)).collect::<Vec<_>>(),
                        }),
                    )
                })
                .collect();
            latency.insert(p.name().to_owned(), targets.into());
            ratios.insert(
                p.name().to_owned(),
                json!({
                    "p50_kernel_json_over_echo": ratio(self.p50_ratio(p, "json")),
                    "p50_kernel_postcard_over_echo": ratio(self.p50_ratio(p, "postcard")),
                    "p99_kernel_json_over_echo": ratio(self.p99_ratio(p, "json")),
                    "p99_kernel_postcard_over_echo": ratio(self.p99_ratio(p, "postcard")),
                }),
            );
            if c.epoll_echo {
                let base = "epoll-echo";
                let p50 = |l: &LatencyResult| l.p50_ns;
                ratios.insert(
                    format!("{}_epoll_echo", p.name()),
                    json!({
                        "p50_kernel_json_over_epoll_echo":
                            ratio(self.ratio_to(p, "json", base, p50)),
                        "p50_kernel_postcard_over_epoll_echo":
                            ratio(self.ratio_to(p, "postcard", base, p50)),
                    }),
                );
            }
            goals.insert(
                format!("p50_{}_ok", p.name().replace('-', "_")),
                json!({
                    "json": self.p50_ratio(p, "json") <= GOAL_P50_RATIO,
                    "postcard": self.p50_ratio(p, "postcard") <= GOAL_P50_RATIO,
                }),
            );
        }
        ratios.insert(
            "throughput".to_owned(),
            json!({
                "kernel_json_over_echo": ratio(self.tp_ratio("json")),
                "kernel_postcard_over_echo": ratio(self.tp_ratio("postcard")),
            }),
        );
        goals.insert("p50_ratio_max".to_owned(), json!(GOAL_P50_RATIO));
        goals.insert("idle_rss_max_bytes".to_owned(), json!(GOAL_IDLE_RSS_BYTES));
        goals.insert("idle_rss_ok".to_owned(), json!(self.idle_ok()));
        let throughput: serde_json::Map<String, serde_json::Value> = self
            .throughput
            .iter()
            .map(|t| {
                (
                    t.name.to_owned(),
                    json!({
                        "req_per_s": t.rps.round(),
                        "rounds_req_per_s":
                            t.rounds_rps.iter().map(|v| v.round()).collect::<Vec<_>>(),
                    }),
                )
            })
            .collect();
        let r = &self.rss;
        json!({
            "bench": "clove-bench",
            "profile": self.profile,
            "host": { "cpus": cpus(), "linux": os_release() },
            "config": {
                "payload_bytes": c.payload,
                "latency_rounds": c.rounds,
                "latency_iters_per_block": c.iters,
                "latency_warmup_per_block": c.warmup,
                "latency_placements": c.placements.iter().map(|p| p.name()).collect::<Vec<_>>(),
                "throughput_conns": c.conns,
                "throughput_depth": c.depth,
                "throughput_secs": c.duration.as_secs_f64(),
                "throughput_rounds": c.tp_rounds,
                "rss_conns": c.rss_conns,
                "kernel_args": c.kernel_args,
                "kernel_env":
                    c.kernel_env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
            },
            "latency": latency,
            "throughput": throughput,
            "ratios": ratios,
            "rss": {
                "idle_kib": r.idle.rss_kib,
                "idle_mib": ratio(mib(r.idle.rss_kib)),
                "idle_threads": r.idle.threads,
                "conns": r.conns,
                "with_conns_kib": r.loaded.rss_kib,
                "with_conns_mib": ratio(mib(r.loaded.rss_kib)),
                "with_conns_peak_kib": r.loaded.hwm_kib,
                "with_conns_threads": r.loaded.threads,
                "per_conn_kib": ratio(self.per_conn_kib()),
            },
            "goals": goals,
            "elapsed_secs": ratio(self.elapsed.as_secs_f64()),
        })
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT MET"
    }
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(0, |n| n.get())
}

fn os_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "?".to_owned())
}
