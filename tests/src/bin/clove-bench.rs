//! `clove-bench`: whole-system figures for the Clove kernel, with a baseline measured in the
//! same run (see DESIGN.md, "Tests and measurements").
//!
//! A run measures these parts (by default `noop`, `spawn`, `kill` and `idle`; `clove-bench
//! spawn kill` or `--only noop,msgs` picks any of them):
//! 1. `noop`: NOOP round-trip latency, one connection doing sequential request → reply round trips,
//!    against the kernel (JSON frames, postcard frames) and against a bare frame echo server
//!    (blocking std `UnixListener`, a thread per connection) started in-process: the physical
//!    floor. The same minimal blocking client drives every target, so the server is the only
//!    variable. Targets alternate in blocks (kernel-json, echo, kernel-postcard, echo, rotated each
//!    round) and each figure is the median over the blocks, which cancels most machine noise. Each
//!    block runs under one or more CPU placements (`--placement`): `free` (the scheduler places the
//!    threads: what a client gets) and `same` (client and server threads pinned to one CPU: the
//!    code path alone, without cross-CPU wake-ups, which on a small VM cost tens of microseconds
//!    and depend on how the server waits for input).
//! 2. `noop`, throughput: `--conns` connections each doing NOOPs (sequential, or `--depth` per
//!    write) for `--duration` seconds; total requests per second; median over `--tp-rounds`
//!    rounds.
//! 3. `noop`, memory: the kernel's resident memory (VmRSS) idle right after start, and with
//!    `--rss-conns` connections open, each having been served one NOOP.
//! 4. `spawn`: SPAWN of a sandboxed `/bin/true` until WAIT reports its exit, and the SPAWN reply
//!    alone, against `unshare --fork --pid --mount --uts --ipc --net /bin/true` run from the
//!    bench, interleaved per round.
//! 5. `kill`: KILL of a sleeping sandboxed Python agent (no signal handler), request → reply,
//!    against SIGTERM and waitpid of the same interpreter as a plain child.
//! 6. `idle`: `--idle-agents` sleeping sandboxed agents at once: time to spawn them all, the
//!    kernel's RSS before and with them (per-agent cost), time to kill them all, and a check
//!    that nothing is left.
//! 7. `msgs`: messages per second between two callers (SEND one at a time, SEND_BATCH), and one
//!    message's latency, against NOOP round trips per second (bench/coop.rs).
//! 8. `state`: STORE and FETCH per second from one client and from `--conns` clients, against
//!    `fdatasync` per second on the same file system and NOOP per second.
//! 9. `events`: EMIT fan-out to `--subscribers` subscribers: events delivered per second and
//!    the delay from EMIT to POLL_EVENTS.
//!
//! 10. `llm`: the THINK scheduler under contention (simulated provider): Jain's fairness
//!     index of 8 backlogged callers whose requests differ 10× in size, a polite caller's
//!     queue delay beside a flooder, each under `vtc` and under FIFO in the same run; and the
//!     THINK path's overhead against NOOP (bench/llm.rs).
//!
//! Parts 7 to 10 are not in the default set (together they take about 100 s); name them. The
//! agent parts need root (sandboxed agents); without it they are skipped and say why. Each
//! part starts its own kernel on a temporary socket and state dir (see [`clove_tests::Kernel`]).
//!
//! Run it in release:
//! `cargo run --release -p clove-tests --bin clove-bench -- [PART...] [--quick] [--json]`.

mod bench {
    pub mod affinity;
    pub mod agents;
    pub mod client;
    pub mod coop;
    pub mod echo;
    pub mod epoll_echo;
    pub mod llm;
    pub mod procfs;
    pub mod restart;
    pub mod stats;

    /// One progress line on stderr.
    pub fn progress(args: std::fmt::Arguments<'_>) {
        eprintln!("clove-bench: {args}");
    }
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
use bench::agents::{self, AgentConfig, IdleResult, KillResult, SleepScript, SpawnResult};
use bench::client::{Client, Pipelined};
use bench::coop::{self, CoopConfig, EventsResult, MsgsResult, StateResult};
use bench::echo::EchoServer;
use bench::epoll_echo;
use bench::procfs::{proc_status, ProcStatus};
use bench::progress;
use bench::restart::{self, RestartResult};
use bench::stats::{median, summarize, Summary};

/// The project's goals, reported against.
const GOAL_P50_RATIO: f64 = 1.3;
const GOAL_IDLE_RSS_BYTES: f64 = 10_000_000.0;
/// SPAWN → exit no slower than the `unshare` baseline.
const GOAL_SPAWN_RATIO: f64 = 1.0;
/// KILL request → reply, p99.
const GOAL_KILL_P99_MS: f64 = 100.0;
/// What the original C++ kernel took, for reference.
const ORIGINAL_SPAWN_MS: f64 = 5.0;
const ORIGINAL_KILL_MS: f64 = 5_000.0;

/// Whole-system benchmark of clove-kernel, each figure next to a baseline from the same run.
///
/// Parts: `noop` (NOOP round-trip latency and multi-connection throughput against a bare
/// Unix-socket frame echo server, and the kernel's resident memory), `spawn` (SPAWN of a
/// sandboxed /bin/true until its exit, against `unshare ... /bin/true`), `kill` (KILL of a
/// sleeping sandboxed Python agent, against SIGTERM to a plain child) and `idle` (many idle
/// sandboxed agents: spawn time, kernel memory per agent, kill time, nothing left). The agent
/// parts need root. `msgs` (messages between two callers), `state` (STORE and FETCH per
/// second) and `events` (EMIT fan-out to many subscribers) run only when named. Build and run
/// in release:
/// `cargo run --release -p clove-tests --bin clove-bench -- [PART...] [options]`. Progress goes
/// to stderr; the results table (or, with --json, one JSON object) to stdout. Defaults take
/// about 40 s for `noop` and about a minute for the agent parts.
#[derive(Parser, Debug)]
#[command(name = "clove-bench", version)]
struct Args {
    /// Parts to run [default: noop spawn kill idle]. `--only` does the same.
    #[arg(value_enum, value_name = "PART")]
    parts: Vec<Part>,
    /// Parts to run, comma-separated [default: noop,spawn,kill,idle].
    #[arg(long, value_enum, value_delimiter = ',', value_name = "PART,...")]
    only: Vec<Part>,
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
    /// Client connections for the throughput runs (NOOP, and the `state` part's
    /// multi-client runs).
    #[arg(long, value_name = "N", default_value_t = 8)]
    conns: usize,
    /// Throughput: NOOPs per write per connection. 1 = sequential request → reply; above 1,
    /// each connection writes DEPTH frames at once, then reads the DEPTH replies.
    #[arg(long, value_name = "N", default_value_t = 1)]
    depth: usize,
    /// Seconds per throughput run, NOOP and `state` [default: 2; --quick: 0.5].
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// Throughput rounds (each runs every target once, rotated); the median is reported
    /// [default: 3; --quick: 1].
    #[arg(long, value_name = "N")]
    tp_rounds: Option<usize>,
    /// Client connections held open for the loaded RSS figure.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    rss_conns: usize,
    /// spawn: timed rounds, each one SPAWN → exit and one `unshare` run
    /// [default: 150; --quick: 20].
    #[arg(long, value_name = "N")]
    spawn_runs: Option<usize>,
    /// spawn: untimed rounds first [default: 10; --quick: 3].
    #[arg(long, value_name = "N")]
    spawn_warmup: Option<usize>,
    /// kill: timed rounds, each one KILL and one SIGTERM baseline, after one untimed round
    /// [default: 30; --quick: 5].
    #[arg(long, value_name = "N")]
    kill_runs: Option<usize>,
    /// idle: sleeping agents held at once [default: 500; --quick: 50].
    #[arg(long, value_name = "N")]
    idle_agents: Option<usize>,
    /// msgs: messages per throughput run [default: 200000; --quick: 20000].
    #[arg(long, value_name = "N")]
    msgs: Option<usize>,
    /// msgs: SEND_BATCH sizes to measure, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "N,...",
        default_value = "64,256"
    )]
    msg_batch: Vec<usize>,
    /// msgs: messages sent one at a time for the latency figure [default: 5000; --quick: 500].
    #[arg(long, value_name = "N")]
    latency_msgs: Option<usize>,
    /// events: subscriber connections.
    #[arg(long, value_name = "N", default_value_t = 100)]
    subscribers: usize,
    /// events: events emitted [default: 2000; --quick: 200].
    #[arg(long, value_name = "N")]
    events: Option<usize>,
    /// The Python interpreter the agent parts' kernels run agents with (their `--python`),
    /// also run by the KILL baseline [default: the kernel's default, python3].
    #[arg(long, value_name = "PROGRAM")]
    agent_python: Option<String>,
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

/// The parts of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Part {
    /// NOOP latency and throughput against the bare echo; kernel RSS with connections.
    Noop,
    /// SPAWN of a sandboxed /bin/true until its exit, against `unshare ... /bin/true`.
    Spawn,
    /// KILL of a sleeping sandboxed Python agent, against SIGTERM to a plain child.
    Kill,
    /// Many idle sandboxed agents at once (`--idle-agents`).
    Idle,
    /// Messages per second between two callers, and one message's latency.
    Msgs,
    /// STORE and FETCH per second, one client and `--conns` clients.
    State,
    /// EMIT fan-out to `--subscribers` subscribers.
    Events,
    /// A crashing agent restarted by its policy with zero backoff, against a fresh SPAWN.
    Restart,
    /// The THINK scheduler: fairness and a polite caller's delay, VTC against FIFO.
    Llm,
}

impl Part {
    /// Every part, in the order they run: NOOP first, then the parts that start no agent,
    /// then the agent parts.
    const ALL: [Part; 9] = [
        Part::Noop,
        Part::Msgs,
        Part::State,
        Part::Events,
        Part::Llm,
        Part::Spawn,
        Part::Kill,
        Part::Idle,
        Part::Restart,
    ];
    /// What a run without part arguments measures.
    const DEFAULT: [Part; 5] = [
        Part::Noop,
        Part::Spawn,
        Part::Kill,
        Part::Idle,
        Part::Restart,
    ];

    /// Whether the part starts sandboxed agents (and so needs root).
    fn needs_root(self) -> bool {
        matches!(self, Part::Spawn | Part::Kill | Part::Idle | Part::Restart)
    }

    fn name(self) -> &'static str {
        match self {
            Part::Noop => "noop",
            Part::Msgs => "msgs",
            Part::State => "state",
            Part::Events => "events",
            Part::Spawn => "spawn",
            Part::Kill => "kill",
            Part::Idle => "idle",
            Part::Restart => "restart",
            Part::Llm => "llm",
        }
    }
}

/// Resolved settings.
#[derive(Debug, Clone)]
struct Config {
    /// The parts to run, in the order they run.
    parts: Vec<Part>,
    agents: AgentConfig,
    coop: CoopConfig,
    /// Set by --agent-python: passed to the agent parts' kernels as `--python`.
    agent_python: Option<String>,
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
        let asked: Vec<Part> = a.parts.iter().chain(&a.only).copied().collect();
        let c = Config {
            // Always in the canonical order: NOOP first, on a machine with no agents yet.
            parts: Part::ALL
                .into_iter()
                .filter(|p| {
                    if asked.is_empty() {
                        Part::DEFAULT.contains(p)
                    } else {
                        asked.contains(p)
                    }
                })
                .collect(),
            agents: AgentConfig {
                spawn_runs: pick(a.spawn_runs, 150, 20),
                spawn_warmup: pick(a.spawn_warmup, 10, 3),
                kill_runs: pick(a.kill_runs, 30, 5),
                idle_agents: pick(a.idle_agents, 500, 50),
                python: a
                    .agent_python
                    .clone()
                    .unwrap_or_else(|| clove_abi::msg::DEFAULT_PYTHON.to_owned()),
            },
            coop: CoopConfig {
                msgs: pick(a.msgs, 200_000, 20_000),
                batches: a.msg_batch.clone(),
                latency_msgs: pick(a.latency_msgs, 5_000, 500),
                noop_iters: pick(a.iters, 20_000, 2_000),
                duration: Duration::from_secs_f64(secs),
                clients: a.conns,
                subscribers: a.subscribers,
                events: pick(a.events, 2_000, 200),
            },
            agent_python: a.agent_python.clone(),
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
        let k = &c.coop;
        if k.msgs == 0 || k.latency_msgs == 0 || k.subscribers == 0 || k.events == 0 {
            bail!("--msgs, --latency-msgs, --subscribers and --events must be at least 1");
        }
        if k.batches.iter().any(|&b| b == 0 || b > 1024) {
            bail!("--msg-batch sizes must be 1 to 1024 (the default mailbox holds 1024)");
        }
        let g = &c.agents;
        if g.spawn_runs == 0 || g.kill_runs == 0 || g.idle_agents == 0 {
            bail!("--spawn-runs, --kill-runs and --idle-agents must be at least 1");
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
    let load_at_start = load_average();

    // Decided before anything is built or started, so a run without root that asks only for
    // agent parts says why and ends.
    let skipped = skipped_parts(&cfg);
    let run: Vec<Part> = cfg
        .parts
        .iter()
        .copied()
        .filter(|p| !skipped.iter().any(|(s, _)| s == p))
        .collect();
    if !run.is_empty() {
        let kernel_bin = clove_tests::kernel_bin();
        progress(format_args!("kernel binary: {}", kernel_bin.display()));
        progress(format_args!(
            "parts: {}",
            run.iter().map(|p| p.name()).collect::<Vec<_>>().join(", ")
        ));
    }

    let noop = if run.contains(&Part::Noop) {
        Some(run_noop(&cfg, fd_limit)?)
    } else {
        None
    };
    let coop = run_coop_parts(&cfg, &run)?;
    let mut agents = run_agent_parts(&cfg, &run)?;
    agents.skipped = skipped;

    let report = Report {
        profile,
        cfg,
        noop,
        coop,
        agents,
        elapsed: started.elapsed(),
        load_at_start,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report.to_json())?);
    } else {
        report.print_table();
    }
    Ok(())
}

/// The `noop` part: latency, throughput, memory.
fn run_noop(cfg: &Config, fd_limit: u64) -> Result<NoopResults> {
    let payload: Vec<u8> = (0..cfg.payload).map(|i| b'a' + (i % 26) as u8).collect();

    let rss = measure_rss(cfg, &payload, fd_limit).context("RSS measurement")?;

    let kernel = start_kernel(cfg, None).context("start the kernel")?;
    let echo = EchoServer::start().context("start the echo server")?;
    let epoll_echo = if cfg.epoll_echo {
        Some(epoll_echo::start().context("start the epoll echo server")?)
    } else {
        None
    };
    let latency = measure_latency(
        cfg,
        &payload,
        &kernel,
        &echo.path,
        epoll_echo.as_ref().map(|e| e.path.as_path()),
    )
    .context("latency measurement")?;
    let throughput = measure_throughput(cfg, &payload, &kernel.socket, &echo.path)
        .context("throughput measurement")?;
    Ok(NoopResults {
        latency,
        throughput,
        rss,
    })
}

/// Results of the parts that start no agent besides `noop`; a part not asked for is `None`.
#[derive(Default)]
struct CoopResults {
    msgs: Option<MsgsResult>,
    state: Option<StateResult>,
    events: Option<EventsResult>,
    llm: Option<bench::llm::LlmResult>,
}

/// `msgs`, `state` and `events` among `run`, each on a fresh kernel.
fn run_coop_parts(cfg: &Config, run: &[Part]) -> Result<CoopResults> {
    let mut out = CoopResults::default();
    for &part in run {
        if part == Part::Llm {
            let (kernel, _config) = bench::llm::start_kernel(&cfg.kernel_args, &cfg.kernel_env)
                .context("llm: start")?;
            let settings = bench::llm::LlmConfig {
                window: (cfg.coop.duration * 2).max(Duration::from_secs(2)),
                overhead_iters: cfg.coop.noop_iters.min(5_000),
            };
            out.llm = Some(bench::llm::measure(&kernel, &settings).context("llm measurement")?);
            continue;
        }
        if !matches!(part, Part::Msgs | Part::State | Part::Events) {
            continue;
        }
        let kernel = start_kernel(cfg, None).with_context(|| format!("{}: start", part.name()))?;
        let k = &cfg.coop;
        match part {
            Part::Msgs => {
                out.msgs = Some(coop::measure_msgs(&kernel, k).context("msgs measurement")?);
            }
            Part::State => {
                out.state = Some(coop::measure_state(&kernel, k).context("state measurement")?);
            }
            Part::Events => {
                out.events = Some(coop::measure_events(&kernel, k).context("events measurement")?);
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Results of the agent parts; a part not asked for is `None` and not in `skipped`.
#[derive(Default)]
struct AgentResults {
    spawn: Option<SpawnResult>,
    kill: Option<KillResult>,
    idle: Option<IdleResult>,
    restart: Option<RestartResult>,
    /// Parts asked for but not run, and why.
    skipped: Vec<(Part, String)>,
}

/// The parts asked for that cannot run here, and why: the agent parts without root.
fn skipped_parts(cfg: &Config) -> Vec<(Part, String)> {
    let agent_parts: Vec<Part> = cfg
        .parts
        .iter()
        .copied()
        .filter(|p| p.needs_root())
        .collect();
    let euid = nix::unistd::geteuid();
    if agent_parts.is_empty() || euid.is_root() {
        return Vec::new();
    }
    let why = format!(
        "sandboxed agents need root (namespaces, cgroups, a uid per agent) and this bench runs \
         as uid {euid}; run it as root"
    );
    progress(format_args!(
        "skipping {}: {why}",
        agent_parts
            .iter()
            .map(|p| p.name())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    agent_parts.into_iter().map(|p| (p, why.clone())).collect()
}

/// The agent parts among `run`, each on a fresh kernel.
fn run_agent_parts(cfg: &Config, run: &[Part]) -> Result<AgentResults> {
    let mut out = AgentResults::default();
    let parts: Vec<Part> = run.iter().copied().filter(|p| p.needs_root()).collect();
    if parts.is_empty() {
        return Ok(out);
    }
    let script = SleepScript::create()?;
    let g = &cfg.agents;
    for part in parts {
        let kernel = start_agent_kernel(cfg).with_context(|| format!("{}: start", part.name()))?;
        match part {
            Part::Spawn => {
                out.spawn = Some(agents::measure_spawn(&kernel, g).context("SPAWN measurement")?);
            }
            Part::Kill => {
                out.kill = Some(
                    agents::measure_kill(&kernel, g, &script.path).context("KILL measurement")?,
                );
            }
            Part::Restart => {
                out.restart = Some(
                    restart::measure_restart(&kernel, g.spawn_runs)
                        .context("restart measurement")?,
                );
            }
            Part::Idle => {
                out.idle = Some(
                    agents::measure_idle(&kernel, g, &script.path)
                        .context("idle agents measurement")?,
                );
            }
            _ => {}
        }
    }
    Ok(out)
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

/// A kernel for the agent parts: `--python` from `--agent-python`, then the extra flags.
fn start_agent_kernel(cfg: &Config) -> Result<Kernel> {
    let mut args = Vec::new();
    if let Some(p) = &cfg.agent_python {
        args.push("--python".to_owned());
        args.push(p.clone());
    }
    args.extend(cfg.kernel_args.iter().cloned());
    Kernel::start_with(KernelOpts {
        args,
        env: cfg.kernel_env.clone(),
        ..KernelOpts::default()
    })
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

/// Results of the `noop` part.
struct NoopResults {
    latency: Vec<LatencyResult>,
    throughput: Vec<ThroughputResult>,
    rss: RssResult,
}

/// The whole run.
struct Report {
    profile: &'static str,
    cfg: Config,
    noop: Option<NoopResults>,
    coop: CoopResults,
    agents: AgentResults,
    elapsed: Duration,
    /// /proc/loadavg's 1, 5 and 15 minute figures when the run started: other work on the
    /// machine shows here (the baselines absorb it, the absolute figures do not).
    load_at_start: String,
}

/// The `noop` part's results with the settings they were measured with.
struct NoopReport<'a> {
    cfg: &'a Config,
    latency: &'a [LatencyResult],
    throughput: &'a [ThroughputResult],
    rss: &'a RssResult,
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

impl NoopReport<'_> {
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
        let c = self.cfg;
        println!();
        println!("NOOP, payload {} B", c.payload);
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
        for l in self.latency {
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
    }

    /// The `noop` part's keys of the JSON report.
    fn to_json(&self) -> serde_json::Value {
        let c = self.cfg;
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
        })
    }
}

/// Milliseconds from nanoseconds.
fn ms(ns: f64) -> f64 {
    ns / 1e6
}

/// A ratio rounded to three decimals, for JSON.
fn round3(r: f64) -> f64 {
    (r * 1000.0).round() / 1000.0
}

/// A latency summary in ms, for JSON.
fn summary_ms(s: &Summary) -> serde_json::Value {
    let r = |ns: f64| (ns / 1e3).round() / 1e3;
    json!({
        "p50_ms": r(s.p50_ns),
        "p99_ms": r(s.p99_ns),
        "mean_ms": r(s.mean_ns),
        "min_ms": r(s.min_ns),
        "max_ms": r(s.max_ns),
    })
}

/// One row of an agent table: label, then p50/p99/mean/min/max in ms.
fn summary_row(label: &str, s: &Summary) {
    println!(
        "  {:<58} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
        label,
        ms(s.p50_ns),
        ms(s.p99_ns),
        ms(s.mean_ns),
        ms(s.min_ns),
        ms(s.max_ns)
    );
}

fn summary_header() {
    println!(
        "  {:<58} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "", "p50 ms", "p99 ms", "mean ms", "min ms", "max ms"
    );
}

/// `killed by signal 15 (KILL) x30, ...`
fn counts(m: &std::collections::BTreeMap<String, usize>) -> String {
    m.iter()
        .map(|(k, n)| format!("{k} x{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Report {
    fn noop(&self) -> Option<NoopReport<'_>> {
        self.noop.as_ref().map(|n| NoopReport {
            cfg: &self.cfg,
            latency: &n.latency,
            throughput: &n.throughput,
            rss: &n.rss,
        })
    }

    fn print_table(&self) {
        let c = &self.cfg;
        println!();
        println!(
            "clove-bench ({} build, {} CPUs, Linux {}, load average at start {}): {}",
            self.profile,
            cpus(),
            os_release(),
            self.load_at_start,
            c.parts
                .iter()
                .map(|p| p.name())
                .collect::<Vec<_>>()
                .join(", ")
        );
        if let Some(n) = self.noop() {
            n.print_table();
        }
        if let Some(m) = &self.coop.msgs {
            coop::print_msgs(m);
        }
        if let Some(s) = &self.coop.state {
            coop::print_state(s);
        }
        if let Some(e) = &self.coop.events {
            coop::print_events(e);
        }
        if let Some(l) = &self.coop.llm {
            bench::llm::print(l);
        }
        let a = &self.agents;
        if let Some(s) = &a.spawn {
            print_spawn(s);
        }
        if let Some(k) = &a.kill {
            print_kill(k, &c.agents.python);
        }
        if let Some(i) = &a.idle {
            print_idle(i, &c.agents.python);
        }
        if let Some(r) = &a.restart {
            print_restart(r);
        }
        if !a.skipped.is_empty() {
            println!();
        }
        for (part, why) in &a.skipped {
            println!("{}: SKIPPED: {why}", part.name());
        }
        println!();
        println!("total bench time {:.1} s", self.elapsed.as_secs_f64());
    }

    fn to_json(&self) -> serde_json::Value {
        let c = &self.cfg;
        let g = &c.agents;
        let mut out = serde_json::Map::new();
        out.insert("bench".into(), json!("clove-bench"));
        out.insert("profile".into(), json!(self.profile));
        out.insert(
            "host".into(),
            json!({
                "cpus": cpus(),
                "linux": os_release(),
                "loadavg_at_start": self.load_at_start,
            }),
        );
        out.insert(
            "parts".into(),
            json!(c.parts.iter().map(|p| p.name()).collect::<Vec<_>>()),
        );
        out.insert(
            "config".into(),
            json!({
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
                "spawn_runs": g.spawn_runs,
                "spawn_warmup": g.spawn_warmup,
                "kill_runs": g.kill_runs,
                "idle_agents": g.idle_agents,
                "agent_python": g.python,
                "msgs": c.coop.msgs,
                "msg_batches": c.coop.batches,
                "latency_msgs": c.coop.latency_msgs,
                "noop_iters_msgs_baseline": c.coop.noop_iters,
                "subscribers": c.coop.subscribers,
                "events": c.coop.events,
                "kernel_args": c.kernel_args,
                "kernel_env":
                    c.kernel_env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
            }),
        );
        if let Some(serde_json::Value::Object(noop)) = self.noop().map(|n| n.to_json()) {
            out.extend(noop);
        }
        if let Some(m) = &self.coop.msgs {
            out.insert("msgs".into(), coop::msgs_json(m));
        }
        if let Some(s) = &self.coop.state {
            out.insert("state".into(), coop::state_json(s));
        }
        if let Some(e) = &self.coop.events {
            out.insert("events".into(), coop::events_json(e));
        }
        if let Some(l) = &self.coop.llm {
            out.insert("llm".into(), bench::llm::to_json(l));
        }
        let a = &self.agents;
        if let Some(s) = &a.spawn {
            out.insert("spawn".into(), spawn_json(s));
        }
        if let Some(k) = &a.kill {
            out.insert("kill".into(), kill_json(k));
        }
        if let Some(i) = &a.idle {
            out.insert("idle_agents".into(), idle_json(i));
        }
        if let Some(r) = &a.restart {
            out.insert(
                "restart".into(),
                json!({
                    "runs": r.runs,
                    "crash_to_running": summary_ms(&r.restart),
                    "fresh_spawn_reply": summary_ms(&r.spawn),
                    "p50_restart_over_spawn": round3(r.restart.p50_ns / r.spawn.p50_ns),
                    "untimed_pairs": r.untimed,
                }),
            );
        }
        if !a.skipped.is_empty() {
            out.insert(
                "skipped".into(),
                a.skipped
                    .iter()
                    .map(|(p, why)| (p.name().to_owned(), json!(why)))
                    .collect::<serde_json::Map<_, _>>()
                    .into(),
            );
        }
        out.insert(
            "elapsed_secs".into(),
            json!(round3(self.elapsed.as_secs_f64())),
        );
        out.into()
    }
}

// ---------------------------------------------------------------------------------------------
// Agent parts' report

fn spawn_ratio(s: &SpawnResult) -> f64 {
    s.exit.p50_ns / s.baseline.p50_ns
}

/// `pid, net, mnt, uts namespaces; cgroup v1: memory, cpu, pids`, or what is missing.
fn describe_isolation(i: &clove_abi::msg::Isolation) -> String {
    let n = &i.namespaces;
    let ns: Vec<&str> = [
        (n.pid, "pid"),
        (n.net, "net"),
        (n.mnt, "mnt"),
        (n.uts, "uts"),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .map(|(_, name)| *name)
    .collect();
    let cg = &i.cgroups;
    let limits: Vec<&str> = [
        (cg.memory_limit, "memory"),
        (cg.cpu_quota, "cpu"),
        (cg.pids_limit, "pids"),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .map(|(_, name)| *name)
    .collect();
    let mut text = format!(
        "{} ({} namespaces; cgroup {}: {})",
        if i.fully_isolated {
            "fully isolated"
        } else {
            "NOT fully isolated"
        },
        ns.join(", "),
        cg.version.map_or("none", |v| v.as_str()),
        limits.join(", ")
    );
    if !i.not_applied.is_empty() {
        text.push_str(&format!("; not applied: {}", i.not_applied.join(", ")));
    }
    text
}

fn print_restart(r: &RestartResult) {
    println!();
    println!(
        "RESTART: a sandboxed agent that exits 1 at once, restarted by on-failure with zero \
         backoff; {} restarts timed from its exit event to its next AGENT_SPAWNED ({} pairs in \
         one poll not timed)",
        r.runs, r.untimed
    );
    summary_header();
    summary_row("kernel: crash → running again", &r.restart);
    summary_row("baseline: SPAWN of the same script → reply", &r.spawn);
    println!(
        "  ratio restart / fresh SPAWN (same run): p50 {:.2}x",
        r.restart.p50_ns / r.spawn.p50_ns
    );
}

fn print_spawn(s: &SpawnResult) {
    println!();
    println!(
        "SPAWN: sandboxed agent running /bin/true, {} rounds after {} warm-up; each round one \
         SPAWN and one baseline run, alternating which goes first",
        s.runs, s.warmup
    );
    summary_header();
    summary_row("kernel: SPAWN request → exit seen by WAIT", &s.exit);
    summary_row("kernel: SPAWN request → reply", &s.reply);
    summary_row(
        &format!("baseline: unshare {}", agents::UNSHARE_ARGS[..6].join(" ")),
        &s.baseline,
    );
    let r = spawn_ratio(s);
    println!("  ratios kernel / unshare (same run):");
    println!(
        "    SPAWN → exit  p50 {:>6.2}x   goal <= {GOAL_SPAWN_RATIO:.2}x: {}   (original C++ \
         kernel: about {ORIGINAL_SPAWN_MS:.0} ms)",
        r,
        verdict(r <= GOAL_SPAWN_RATIO)
    );
    println!(
        "    SPAWN → exit  p99 {:>6.2}x",
        s.exit.p99_ns / s.baseline.p99_ns
    );
    println!(
        "    SPAWN → reply p50 {:>6.2}x",
        s.reply.p50_ns / s.baseline.p50_ns
    );
    println!("  isolation: {}", describe_isolation(&s.isolation));
    if s.degraded > 0 {
        println!(
            "  WARNING: {} SPAWN replies were not fully isolated",
            s.degraded
        );
    }
}

fn spawn_json(s: &SpawnResult) -> serde_json::Value {
    json!({
        "runs": s.runs,
        "warmup": s.warmup,
        "kernel_spawn_to_exit": summary_ms(&s.exit),
        "kernel_spawn_reply": summary_ms(&s.reply),
        "baseline_unshare": summary_ms(&s.baseline),
        "baseline_command": format!("unshare {}", agents::UNSHARE_ARGS.join(" ")),
        "ratios": {
            "p50_exit_over_unshare": round3(spawn_ratio(s)),
            "p99_exit_over_unshare": round3(s.exit.p99_ns / s.baseline.p99_ns),
            "p50_reply_over_unshare": round3(s.reply.p50_ns / s.baseline.p50_ns),
        },
        "fully_isolated": s.isolation.fully_isolated,
        "not_applied": s.isolation.not_applied,
        "degraded_replies": s.degraded,
        "goals": {
            "p50_ratio_max": GOAL_SPAWN_RATIO,
            "p50_ratio_ok": spawn_ratio(s) <= GOAL_SPAWN_RATIO,
            "original_ms": ORIGINAL_SPAWN_MS,
        },
    })
}

fn print_kill(k: &KillResult, python: &str) {
    println!();
    println!(
        "KILL: sandboxed {python} agent sleeping with no signal handler, killed once LIST shows \
         it RUNNING + 200 ms; {} rounds after 1 warm-up, alternating with the baseline",
        k.runs
    );
    summary_header();
    summary_row("kernel: KILL request → reply (after the exit)", &k.kernel);
    summary_row(
        &format!("baseline: SIGTERM → waitpid, plain {python} child"),
        &k.baseline,
    );
    let p99 = ms(k.kernel.p99_ns);
    println!(
        "  p99 {:.2} ms   goal < {GOAL_KILL_P99_MS:.0} ms: {}   (original C++ kernel: about \
         {:.0} s)",
        p99,
        verdict(p99 < GOAL_KILL_P99_MS),
        ORIGINAL_KILL_MS / 1e3
    );
    println!(
        "  ratio kernel / baseline: p50 {:.2}x, p99 {:.2}x",
        k.kernel.p50_ns / k.baseline.p50_ns,
        k.kernel.p99_ns / k.baseline.p99_ns
    );
    println!("  agents ended: {}", counts(&k.agent_exits));
    println!("  baseline ended: {}", counts(&k.baseline_exits));
}

fn kill_json(k: &KillResult) -> serde_json::Value {
    json!({
        "runs": k.runs,
        "kernel_kill": summary_ms(&k.kernel),
        "baseline_sigterm_waitpid": summary_ms(&k.baseline),
        "ratios": {
            "p50_kill_over_baseline": round3(k.kernel.p50_ns / k.baseline.p50_ns),
            "p99_kill_over_baseline": round3(k.kernel.p99_ns / k.baseline.p99_ns),
        },
        "agent_exits": k.agent_exits,
        "baseline_exits": k.baseline_exits,
        "goals": {
            "p99_max_ms": GOAL_KILL_P99_MS,
            "p99_ok": ms(k.kernel.p99_ns) < GOAL_KILL_P99_MS,
            "original_ms": ORIGINAL_KILL_MS,
        },
    })
}

fn print_idle(i: &IdleResult, python: &str) {
    println!();
    println!(
        "IDLE AGENTS: {} sandboxed {python} agents sleeping at once (default limits), one \
         connection, requests one after another",
        i.asked
    );
    let secs = i.spawn_all.as_secs_f64();
    println!(
        "  spawned {}/{} in {:.2} s ({:.0} agents/s; SPAWN reply p50 {:.2} ms, p99 {:.2} ms, \
         max {:.2} ms)",
        i.spawned,
        i.asked,
        secs,
        i.spawned as f64 / secs,
        ms(i.spawn_each.p50_ns),
        ms(i.spawn_each.p99_ns),
        ms(i.spawn_each.max_ns)
    );
    if let Some(why) = &i.stopped {
        println!("  STOPPED EARLY: {why}");
    }
    if i.spawned == 0 {
        return;
    }
    // Each block ends where the next begins (the last at the last agent spawned).
    let ends = i
        .spawn_blocks
        .iter()
        .skip(1)
        .map(|(first, _)| first - 1)
        .chain([i.spawned]);
    println!(
        "  SPAWN reply p50 as agents pile up: {}",
        i.spawn_blocks
            .iter()
            .zip(ends)
            .map(|((first, p50), last)| format!("#{first}-{last} {:.2} ms", ms(*p50)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    match i.settled {
        Some(d) => println!(
            "  every interpreter asleep {:.2} s after the last SPAWN reply; LIST: {} RUNNING",
            d.as_secs_f64(),
            i.listed_running
        ),
        None => println!(
            "  NOT SETTLED: {} of {} interpreters asleep at the limit; LIST: {} RUNNING",
            i.asleep, i.spawned, i.listed_running
        ),
    }
    println!(
        "  kernel RSS: before {:.2} MiB, with {} agents {:.2} MiB (+{:.1} KiB per agent; peak \
         {:.2} MiB), {} threads; after the kills {:.2} MiB",
        mib(i.before.rss_kib),
        i.spawned,
        mib(i.with.rss_kib),
        i.per_agent_kib(),
        mib(i.with.hwm_kib),
        i.with.threads,
        mib(i.after.rss_kib)
    );
    println!(
        "  the agents' own processes (init + interpreter): PSS {:.0} MiB total, {:.2} MiB per \
         agent; host MemAvailable fell by {:.0} MiB ({:.2} MiB per agent)",
        mib(i.agents_pss_kib),
        mib(i.agents_pss_kib) / i.spawned.max(1) as f64,
        i.host_drop_kib as f64 / 1024.0,
        i.host_drop_kib as f64 / 1024.0 / i.spawned.max(1) as f64
    );
    let secs = i.kill_all.as_secs_f64();
    println!(
        "  killed {} in {:.2} s ({:.0} agents/s; KILL p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms); \
         {} KILL failures{}",
        i.spawned - i.kill_failed,
        secs,
        (i.spawned - i.kill_failed) as f64 / secs,
        ms(i.kill_each.p50_ns),
        ms(i.kill_each.p99_ns),
        ms(i.kill_each.max_ns),
        i.kill_failed,
        i.kill_error
            .as_deref()
            .map(|e| format!(" (first: {e})"))
            .unwrap_or_default()
    );
    let clean = i.listed_after == 0 && i.procs_left == 0 && i.cgroups_left == 0;
    println!(
        "  left behind: {}: LIST {} live agents; {} of {} agent processes; {} of {} agent \
         cgroup directories{}",
        if clean { "nothing" } else { "SOMETHING" },
        i.listed_after,
        i.procs_left,
        i.procs_seen,
        i.cgroups_left,
        i.cgroups_seen,
        i.gone_after
            .map(|d| format!(
                " (all gone {:.0} ms after the last KILL reply)",
                d.as_secs_f64() * 1e3
            ))
            .unwrap_or_default()
    );
}

fn idle_json(i: &IdleResult) -> serde_json::Value {
    json!({
        "asked": i.asked,
        "spawned": i.spawned,
        "stopped_early": i.stopped,
        "spawn_all_secs": round3(i.spawn_all.as_secs_f64()),
        "spawn_each": summary_ms(&i.spawn_each),
        "spawn_p50_ms_by_block": i
            .spawn_blocks
            .iter()
            .map(|(first, p50)| json!({ "from": first, "p50_ms": round3(ms(*p50)) }))
            .collect::<Vec<_>>(),
        "settled_secs": i.settled.map(|d| round3(d.as_secs_f64())),
        "interpreters_asleep": i.asleep,
        "listed_running": i.listed_running,
        "kernel_rss": {
            "before_kib": i.before.rss_kib,
            "with_agents_kib": i.with.rss_kib,
            "with_agents_peak_kib": i.with.hwm_kib,
            "with_agents_threads": i.with.threads,
            "after_kill_kib": i.after.rss_kib,
            "per_agent_kib": round3(i.per_agent_kib()),
        },
        "agents_pss_kib": i.agents_pss_kib,
        "host_mem_available_drop_kib": i.host_drop_kib,
        "kill_all_secs": round3(i.kill_all.as_secs_f64()),
        "kill_each": summary_ms(&i.kill_each),
        "kill_failed": i.kill_failed,
        "kill_error": i.kill_error,
        "left": {
            "listed_live": i.listed_after,
            "processes": i.procs_left,
            "processes_seen": i.procs_seen,
            "cgroup_dirs": i.cgroups_left,
            "cgroup_dirs_seen": i.cgroups_seen,
            "gone_after_ms": i.gone_after.map(|d| round3(d.as_secs_f64() * 1e3)),
        },
    })
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

/// The 1, 5 and 15 minute load averages.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_owned())
}

fn os_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "?".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(argv: &[&str]) -> Vec<Part> {
        let args = Args::parse_from(std::iter::once("clove-bench").chain(argv.iter().copied()));
        Config::from(&args).unwrap().parts
    }

    #[test]
    fn the_default_run_is_unchanged_and_named_parts_run_in_canonical_order() {
        assert_eq!(parts(&[]), Part::DEFAULT.to_vec());
        assert_eq!(parts(&["events", "noop"]), vec![Part::Noop, Part::Events]);
        assert_eq!(
            parts(&["--only", "idle,state,msgs"]),
            vec![Part::Msgs, Part::State, Part::Idle]
        );
        assert!(Part::ALL
            .iter()
            .all(|p| p.needs_root() == Part::DEFAULT[1..].contains(p)));
    }
}
