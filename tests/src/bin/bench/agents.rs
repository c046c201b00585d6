//! The agent lifecycle figures: what SPAWN, KILL and many idle agents cost, each next to a
//! baseline measured in the same run where there is one.
//!
//! * SPAWN: a sandboxed agent whose program is `/bin/true` (`interpreter: ""`), from the
//!   SPAWN request until a blocking WAIT reports its exit, against
//!   `unshare --fork --pid --mount --uts --ipc --net /bin/true SOCKET` run from the bench
//!   (fork, exec, namespaces, exit, reap) with the agent's argv and `LANG`: the floor for "a
//!   process in fresh namespaces that ran and ended".
//!   Kernel and baseline alternate within each round, first one then the other, so slow drift
//!   of the machine lands on both. The SPAWN reply alone (request → reply) is reported too.
//! * KILL: a sandboxed Python agent sleeping with no signal handler, killed once LIST shows it
//!   RUNNING and its interpreter has had time to start; KILL request → reply (the kernel
//!   replies after the exit). Baseline: SIGTERM and waitpid of the same interpreter running
//!   the same script as a plain child of the bench.
//! * Idle agents: many sleeping sandboxed agents at once: time to spawn them all, the kernel's
//!   resident memory before and with them (so its per-agent cost), the agents' own memory,
//!   then the time to kill them all, and proof from the host's side (LIST, /proc, the cgroup
//!   mounts) that nothing is left. The host is checked before each batch of spawns; when it
//!   runs short of memory or process ids the part stops there and says so.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clove_abi::msg::{
    AgentState, Isolation, KillRequest, ListRequest, SpawnReply, SpawnRequest, WaitRequest,
};
use clove_sdk::Client;
use clove_tests::Kernel;

use super::procfs::{self, ProcId, ProcStatus};
use super::progress;
use super::stats::{summarize, Summary};

/// The baseline of SPAWN: the namespaces a sandboxed agent gets (its cgroup namespace aside,
/// which `unshare` cannot give without a cgroup to start from).
pub const UNSHARE_ARGS: [&str; 7] = [
    "--fork",
    "--pid",
    "--mount",
    "--uts",
    "--ipc",
    "--net",
    "/bin/true",
];

/// The script of the sleeping agents: no signal handler, so SIGTERM ends it at once.
const SLEEP_SCRIPT: &str = "import time\ntime.sleep(600)\n";

/// The longest any one request may take before the bench gives up on the kernel (KILL waits
/// for the exit, up to the grace period and then some).
const CALL_LIMIT: Duration = Duration::from_secs(60);

/// WAIT's `timeout_ms` for an agent that runs `/bin/true`.
const WAIT_LIMIT_MS: u64 = 10_000;

/// How long the interpreter of a KILL target gets to start after LIST shows it RUNNING.
const INTERPRETER_START: Duration = Duration::from_millis(200);

/// Idle agents: stop spawning when the host's available memory falls below this, so the
/// bench never drives the machine into its OOM killer.
const MEM_FLOOR_KIB: u64 = 1 << 20;
/// Idle agents: stop spawning when fewer process ids than this are left.
const PID_HEADROOM: u64 = 512;
/// Idle agents: how many spawns between two checks of the host.
const CHECK_EVERY: usize = 10;
/// Idle agents: the longest wait for every interpreter to be asleep.
const SETTLE_LIMIT: Duration = Duration::from_secs(180);
/// Idle agents: the longest wait for processes and cgroups to be gone after the last KILL.
const GONE_LIMIT: Duration = Duration::from_secs(10);

/// Settings of the agent parts.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Timed SPAWN rounds (each: one kernel sample, one baseline sample).
    pub spawn_runs: usize,
    /// Untimed SPAWN rounds before them.
    pub spawn_warmup: usize,
    /// Timed KILL rounds (each: one kernel sample, one baseline sample), after one untimed.
    pub kill_runs: usize,
    /// Idle agents to hold at once.
    pub idle_agents: usize,
    /// The Python interpreter the kernel runs agents with; the KILL baseline runs it too.
    pub python: String,
}

/// The sleeping agents' script, in a temporary directory readable by everyone (0755 dir,
/// 0644 file), removed on drop.
pub struct SleepScript {
    _dir: tempfile::TempDir,
    /// The script's path.
    pub path: PathBuf,
}

impl SleepScript {
    pub fn create() -> Result<SleepScript> {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new()
            .prefix("clove-bench-agents-")
            .tempdir()
            .context("create a temporary directory for the agent script")?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("chmod 0755 {}", dir.path().display()))?;
        let path = dir.path().join("sleep.py");
        std::fs::write(&path, SLEEP_SCRIPT).with_context(|| format!("write {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
            .with_context(|| format!("chmod 0644 {}", path.display()))?;
        Ok(SleepScript { _dir: dir, path })
    }
}

/// A blocking SDK client (postcard) on the kernel's main socket, with a time limit per call.
fn connect(kernel: &Kernel) -> Result<Client> {
    let mut c = Client::connect(Some(&kernel.socket))
        .with_context(|| format!("connect {}", kernel.socket.display()))?;
    c.set_timeout(Some(CALL_LIMIT))?;
    Ok(c)
}

fn ns(d: Duration) -> u64 {
    d.as_nanos() as u64
}

/// Where `program` is: itself when it has a '/', else the first match on PATH.
fn which(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return Some(PathBuf::from(program));
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

// ---------------------------------------------------------------------------------------------
// SPAWN

pub struct SpawnResult {
    pub runs: usize,
    pub warmup: usize,
    /// SPAWN request → WAIT reply reporting the exit.
    pub exit: Summary,
    /// SPAWN request → SPAWN reply.
    pub reply: Summary,
    /// `unshare ... /bin/true`: fork → exit reaped.
    pub baseline: Summary,
    /// The isolation the first SPAWN reply reported.
    pub isolation: Isolation,
    /// SPAWN replies that were not fully isolated.
    pub degraded: usize,
}

/// One sandboxed `/bin/true`: (request → reply, request → exit seen by WAIT, the reply).
fn spawn_true(client: &mut Client, name: &str) -> Result<(Duration, Duration, SpawnReply)> {
    let req = SpawnRequest {
        interpreter: Some(String::new()),
        ..SpawnRequest::new(name, "/bin/true")
    };
    let start = Instant::now();
    let reply = client
        .call(&req)
        .with_context(|| format!("SPAWN {name} (/bin/true)"))?;
    let replied = start.elapsed();
    let wait = WaitRequest {
        id: Some(reply.id),
        name: None,
        timeout_ms: Some(WAIT_LIMIT_MS),
    };
    let w = client
        .call(&wait)
        .with_context(|| format!("WAIT for agent {} ({name})", reply.id))?;
    let exited = start.elapsed();
    if !w.exited {
        bail!(
            "agent {} ({name}, /bin/true) has not exited {WAIT_LIMIT_MS} ms after SPAWN",
            reply.id
        );
    }
    if w.exit_code != Some(0) || w.signal.is_some() {
        bail!(
            "agent {} ({name}, /bin/true): {}",
            reply.id,
            w.reason.as_deref().unwrap_or("did not exit with code 0")
        );
    }
    Ok((replied, exited, reply))
}

/// One `unshare ... /bin/true SOCKET` from fork to reaped exit, like for like with the
/// sandboxed `/bin/true`: the same one argument (an agent's program gets its socket path as
/// `argv[1]`, and coreutils' `true` with one argument sets up its locale, opening about a
/// dozen locale files, 0.2 ms more than with none) and the same `LANG` in a clean
/// environment.
fn unshare_true(unshare: &Path, socket: &Path) -> Result<Duration> {
    let start = Instant::now();
    let status = Command::new(unshare)
        .args(UNSHARE_ARGS)
        .arg(socket)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("LANG", "C.UTF-8")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .with_context(|| format!("run {}", unshare.display()))?;
    let took = start.elapsed();
    if !status.success() {
        bail!(
            "{} {}: {status} (it needs root and namespace support)",
            unshare.display(),
            UNSHARE_ARGS.join(" ")
        );
    }
    Ok(took)
}

pub fn measure_spawn(kernel: &Kernel, cfg: &AgentConfig) -> Result<SpawnResult> {
    let unshare =
        which("unshare").context("the SPAWN baseline needs `unshare` (util-linux) on PATH")?;
    progress(format_args!(
        "spawn: {} rounds (+{} warm-up) of sandboxed /bin/true via SPAWN + WAIT, interleaved \
         with `unshare {} SOCKET`",
        cfg.spawn_runs,
        cfg.spawn_warmup,
        UNSHARE_ARGS.join(" ")
    ));
    let mut client = connect(kernel)?;
    let (mut exit, mut reply, mut base) = (Vec::new(), Vec::new(), Vec::new());
    let mut isolation = None;
    let mut degraded = 0;
    let total = cfg.spawn_warmup + cfg.spawn_runs;
    for round in 0..total {
        let timed = round >= cfg.spawn_warmup;
        // Alternate which goes first, so neither always runs right after the other.
        for kernel_turn in [round % 2 == 0, round % 2 != 0] {
            if kernel_turn {
                let (r, e, rep) = spawn_true(&mut client, &format!("spawn-{round}"))?;
                if !rep.isolation.fully_isolated {
                    degraded += 1;
                }
                isolation.get_or_insert(rep.isolation);
                if timed {
                    reply.push(ns(r));
                    exit.push(ns(e));
                }
            } else {
                let t = unshare_true(&unshare, &kernel.socket)?;
                if timed {
                    base.push(ns(t));
                }
            }
        }
        if timed && (round + 1 - cfg.spawn_warmup).is_multiple_of(50) {
            progress(format_args!(
                "  {}/{} rounds; last: SPAWN→exit {:.2} ms, unshare {:.2} ms",
                round + 1 - cfg.spawn_warmup,
                cfg.spawn_runs,
                exit.last().copied().unwrap_or(0) as f64 / 1e6,
                base.last().copied().unwrap_or(0) as f64 / 1e6
            ));
        }
    }
    Ok(SpawnResult {
        runs: cfg.spawn_runs,
        warmup: cfg.spawn_warmup,
        exit: summarize(&mut exit),
        reply: summarize(&mut reply),
        baseline: summarize(&mut base),
        isolation: isolation.unwrap_or_default(),
        degraded,
    })
}

// ---------------------------------------------------------------------------------------------
// KILL

pub struct KillResult {
    pub runs: usize,
    /// KILL request → reply.
    pub kernel: Summary,
    /// SIGTERM → waitpid of the unsandboxed interpreter.
    pub baseline: Summary,
    /// How the killed agents ended (WAIT's reason) → how many.
    pub agent_exits: BTreeMap<String, usize>,
    /// How the baseline processes ended → how many.
    pub baseline_exits: BTreeMap<String, usize>,
}

/// SPAWN of a sleeping Python agent (the kernel's default interpreter).
fn sleeper(name: &str, script: &Path) -> SpawnRequest {
    SpawnRequest::new(name, script.to_string_lossy())
}

/// SPAWNs a sleeping Python agent; returns its reply.
fn spawn_sleeper(client: &mut Client, name: &str, script: &Path) -> Result<SpawnReply> {
    client
        .call(&sleeper(name, script))
        .with_context(|| format!("SPAWN {name} ({})", script.display()))
}

/// Polls LIST until agent `id` is RUNNING.
fn wait_running(client: &mut Client, id: u32) -> Result<()> {
    let start = Instant::now();
    loop {
        let rows = client.call(&ListRequest::default()).context("LIST")?;
        match rows.0.iter().find(|r| r.id == id) {
            Some(r) if r.state == AgentState::Running => return Ok(()),
            Some(_) => {}
            None => bail!("agent {id} is not in LIST: it exited on its own (see its log)"),
        }
        if start.elapsed() > Duration::from_secs(10) {
            bail!("agent {id} not RUNNING in LIST 10 s after SPAWN");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// One kernel KILL sample: (request → reply, how the agent ended).
fn kill_agent_once(client: &mut Client, name: &str, script: &Path) -> Result<(Duration, String)> {
    let r = spawn_sleeper(client, name, script)?;
    wait_running(client, r.id)?;
    std::thread::sleep(INTERPRETER_START);
    let start = Instant::now();
    let k = client
        .call(&KillRequest {
            id: Some(r.id),
            name: None,
        })
        .with_context(|| format!("KILL agent {} ({name})", r.id))?;
    let took = start.elapsed();
    if !k.killed {
        bail!("KILL agent {} ({name}): reply says not killed", r.id);
    }
    // The reply came after the exit, so WAIT answers at once from the table of exited agents.
    let w = client
        .call(&WaitRequest {
            id: Some(r.id),
            name: None,
            timeout_ms: Some(1_000),
        })
        .with_context(|| format!("WAIT for killed agent {}", r.id))?;
    if !w.exited {
        bail!("agent {} ({name}) still running after KILL replied", r.id);
    }
    Ok((took, w.reason.unwrap_or_else(|| "exited".to_owned())))
}

/// One baseline sample: the interpreter on the script as a plain child, SIGTERM → reaped.
fn kill_plain_once(python: &str, script: &Path) -> Result<(Duration, String)> {
    use std::os::unix::process::ExitStatusExt;
    let mut child = Command::new(python)
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("run {python} {}", script.display()))?;
    std::thread::sleep(INTERPRETER_START);
    if let Some(status) = child.try_wait()? {
        bail!(
            "{python} {} exited on its own before the kill: {status}",
            script.display()
        );
    }
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let start = Instant::now();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)
        .with_context(|| format!("SIGTERM to {python} (pid {pid})"))?;
    let status = child.wait().context("waitpid")?;
    let took = start.elapsed();
    let how = match (status.code(), status.signal()) {
        (_, Some(sig)) => format!("killed by signal {sig}"),
        (Some(code), None) => format!("exited with code {code}"),
        _ => "exited".to_owned(),
    };
    Ok((took, how))
}

pub fn measure_kill(kernel: &Kernel, cfg: &AgentConfig, script: &Path) -> Result<KillResult> {
    progress(format_args!(
        "kill: {} rounds (+1 warm-up) of KILL on a sandboxed sleeping {} agent, interleaved \
         with SIGTERM to a plain {} child",
        cfg.kill_runs, cfg.python, cfg.python
    ));
    let mut client = connect(kernel)?;
    let (mut kernel_ns, mut base_ns) = (Vec::new(), Vec::new());
    let mut agent_exits = BTreeMap::new();
    let mut baseline_exits = BTreeMap::new();
    for round in 0..=cfg.kill_runs {
        let timed = round > 0;
        for kernel_turn in [round % 2 == 0, round % 2 != 0] {
            if kernel_turn {
                let (t, how) = kill_agent_once(&mut client, &format!("kill-{round}"), script)?;
                if timed {
                    kernel_ns.push(ns(t));
                    *agent_exits.entry(how).or_insert(0) += 1;
                }
            } else {
                let (t, how) = kill_plain_once(&cfg.python, script)?;
                if timed {
                    base_ns.push(ns(t));
                    *baseline_exits.entry(how).or_insert(0) += 1;
                }
            }
        }
        if timed && round % 10 == 0 {
            progress(format_args!(
                "  {round}/{} rounds; last: KILL {:.2} ms, SIGTERM+waitpid {:.2} ms",
                cfg.kill_runs,
                kernel_ns.last().copied().unwrap_or(0) as f64 / 1e6,
                base_ns.last().copied().unwrap_or(0) as f64 / 1e6
            ));
        }
    }
    Ok(KillResult {
        runs: cfg.kill_runs,
        kernel: summarize(&mut kernel_ns),
        baseline: summarize(&mut base_ns),
        agent_exits,
        baseline_exits,
    })
}

// ---------------------------------------------------------------------------------------------
// Many idle agents

pub struct IdleResult {
    /// Agents asked for.
    pub asked: usize,
    /// Agents that were started.
    pub spawned: usize,
    /// Why spawning stopped before `asked`, when it did.
    pub stopped: Option<String>,
    /// First SPAWN request → last SPAWN reply.
    pub spawn_all: Duration,
    /// Each SPAWN request → reply.
    pub spawn_each: Summary,
    /// SPAWN request → reply p50 over consecutive blocks of spawns (1-based first agent,
    /// p50 ns): does a SPAWN get slower as agents pile up?
    pub spawn_blocks: Vec<(usize, f64)>,
    /// Last SPAWN reply → every interpreter asleep (`None`: not within the limit).
    pub settled: Option<Duration>,
    /// Interpreters seen asleep at the end of the wait.
    pub asleep: usize,
    /// Agents LIST showed RUNNING with all of them up.
    pub listed_running: usize,
    /// Kernel before the first SPAWN, with every agent up, after the last KILL.
    pub before: ProcStatus,
    pub with: ProcStatus,
    pub after: ProcStatus,
    /// The agents' own processes (init and interpreter), proportional set size summed.
    pub agents_pss_kib: u64,
    /// Host MemAvailable before the first SPAWN minus with every agent up.
    pub host_drop_kib: i64,
    /// First KILL request → last KILL reply.
    pub kill_all: Duration,
    /// Each KILL request → reply.
    pub kill_each: Summary,
    /// KILLs that failed, and the first failure.
    pub kill_failed: usize,
    pub kill_error: Option<String>,
    /// Live agents LIST showed after the last KILL.
    pub listed_after: usize,
    /// Agents' processes (init and interpreter) seen while up, and still there at the end.
    pub procs_seen: usize,
    pub procs_left: usize,
    /// Agents' cgroup directories seen while up, and still there at the end.
    pub cgroups_seen: usize,
    pub cgroups_left: usize,
    /// Last KILL reply → processes and cgroups gone (`None`: something is left).
    pub gone_after: Option<Duration>,
}

impl IdleResult {
    /// Kernel RSS growth per running agent, in KiB.
    pub fn per_agent_kib(&self) -> f64 {
        (self.with.rss_kib as f64 - self.before.rss_kib as f64) / self.spawned.max(1) as f64
    }
}

/// Why the host cannot take more agents, or `None` when it can.
fn host_short(kernel_pid: u32) -> Option<String> {
    if let Ok(avail) = procfs::mem_available_kib() {
        if avail < MEM_FLOOR_KIB {
            return Some(format!(
                "host memory: MemAvailable {} MiB is below the bench's floor of {} MiB",
                avail / 1024,
                MEM_FLOOR_KIB / 1024
            ));
        }
    }
    let procs = procfs::process_count() as u64;
    if let Some(max) = procfs::sysctl("/proc/sys/kernel/pid_max") {
        if procs + PID_HEADROOM > max {
            return Some(format!(
                "process ids: {procs} processes, pid_max {max} (the bench keeps \
                 {PID_HEADROOM} free)"
            ));
        }
    }
    if let (Some(open), Some(limit)) = procfs::fds(kernel_pid) {
        if open as u64 + 64 > limit {
            return Some(format!(
                "kernel file descriptors: {open} open, RLIMIT_NOFILE {limit}"
            ));
        }
    }
    None
}

/// The host's figures that bound how many agents fit, for a report of where spawning stopped.
fn host_figures(kernel_pid: u32) -> String {
    let mem = procfs::mem_available_kib()
        .map(|k| format!("{} MiB", k / 1024))
        .unwrap_or_else(|_| "?".to_owned());
    let opt = |v: Option<u64>| v.map_or("?".to_owned(), |v| v.to_string());
    let (open, limit) = procfs::fds(kernel_pid);
    format!(
        "host then: MemAvailable {mem}, {} processes (pid_max {}, threads-max {}), kernel fds {} \
         of {}",
        procfs::process_count(),
        opt(procfs::sysctl("/proc/sys/kernel/pid_max")),
        opt(procfs::sysctl("/proc/sys/kernel/threads-max")),
        open.map_or("?".to_owned(), |v| v.to_string()),
        opt(limit)
    )
}

/// A started idle agent, as the host sees it.
struct Up {
    id: u32,
    init: i32,
}

/// Interpreters (children of each agent's init) in state S, and the processes seen.
fn asleep(up: &[Up]) -> (usize, Vec<ProcId>) {
    let mut n = 0;
    let mut seen = Vec::new();
    for a in up {
        seen.extend(ProcId::of(a.init));
        for c in procfs::children(a.init) {
            seen.extend(ProcId::of(c));
            if procfs::state(c) == Some('S') {
                n += 1;
            }
        }
    }
    (n, seen)
}

pub fn measure_idle(kernel: &Kernel, cfg: &AgentConfig, script: &Path) -> Result<IdleResult> {
    let n = cfg.idle_agents;
    progress(format_args!(
        "idle agents: {n} sandboxed sleeping {} agents at once, then KILL them all",
        cfg.python
    ));
    let mut client = connect(kernel)?;
    let kpid = kernel.pid();
    // Let start-up settle (worker threads park) before reading.
    std::thread::sleep(Duration::from_millis(300));
    let before = procfs::proc_status(kpid)?;
    let host_before = procfs::mem_available_kib()?;

    let mut up: Vec<Up> = Vec::with_capacity(n);
    let mut each = Vec::with_capacity(n);
    let mut stopped = None;
    let start = Instant::now();
    for i in 0..n {
        if i % CHECK_EVERY == 0 {
            if let Some(why) = host_short(kpid) {
                stopped = Some(format!("stopped before agent {}: {why}", i + 1));
                break;
            }
        }
        let t = Instant::now();
        match client.call(&sleeper(&format!("idle-{i}"), script)) {
            Ok(r) => {
                each.push(ns(t.elapsed()));
                up.push(Up {
                    id: r.id,
                    init: r.pid,
                });
            }
            Err(e) => {
                stopped = Some(format!(
                    "SPAWN of agent {} failed: {e}; {}",
                    i + 1,
                    host_figures(kpid)
                ));
                if e.breaks_connection() {
                    client = connect(kernel)?;
                }
                break;
            }
        }
        if (i + 1) % 100 == 0 {
            progress(format_args!(
                "  {}/{n} spawned in {:.1} s",
                i + 1,
                start.elapsed().as_secs_f64()
            ));
        }
    }
    let spawn_all = start.elapsed();
    let block = (n / 5).max(1);
    let spawn_blocks = each
        .chunks(block)
        .enumerate()
        .map(|(b, chunk)| (b * block + 1, summarize(&mut chunk.to_vec()).p50_ns))
        .collect();
    if let Some(why) = &stopped {
        progress(format_args!("  {why}"));
    }

    // Wait until every interpreter has started and sleeps (two polls in a row), so the
    // figures below are those of idle agents, not of interpreters still importing.
    let settle_start = Instant::now();
    let mut settled = None;
    let mut streak = 0;
    let mut last = 0;
    while settle_start.elapsed() < SETTLE_LIMIT {
        let (n_asleep, _) = asleep(&up);
        last = n_asleep;
        streak = if n_asleep == up.len() { streak + 1 } else { 0 };
        if streak == 2 {
            settled = Some(settle_start.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if settled.is_none() {
        progress(format_args!(
            "  only {last} of {} interpreters asleep after {SETTLE_LIMIT:?}",
            up.len()
        ));
    }
    std::thread::sleep(Duration::from_millis(300));
    let with = procfs::proc_status(kpid)?;
    let host_with = procfs::mem_available_kib()?;
    let (_, procs) = asleep(&up);
    let agents_pss_kib = procs.iter().filter_map(|p| procfs::pss_kib(p.pid)).sum();
    let mounts = procfs::cgroup_mounts();
    let mut cgroups: Vec<PathBuf> = Vec::new();
    for a in &up {
        for dir in procfs::cgroup_dirs(a.init, &mounts, "agent-") {
            if !cgroups.contains(&dir) {
                cgroups.push(dir);
            }
        }
    }
    let rows = client.call(&ListRequest::default()).context("LIST")?;
    let listed_running = rows
        .0
        .iter()
        .filter(|r| r.state == AgentState::Running && up.iter().any(|a| a.id == r.id))
        .count();
    progress(format_args!(
        "  {} up, {listed_running} RUNNING in LIST, interpreters asleep: {last}; kernel RSS \
         {:.2} MiB; killing them",
        up.len(),
        with.rss_kib as f64 / 1024.0
    ));

    let mut kill_each = Vec::with_capacity(up.len());
    let mut kill_failed = 0;
    let mut kill_error = None;
    let start = Instant::now();
    for a in &up {
        let t = Instant::now();
        match client.call(&KillRequest {
            id: Some(a.id),
            name: None,
        }) {
            Ok(k) if k.killed => kill_each.push(ns(t.elapsed())),
            Ok(_) => {
                kill_failed += 1;
                kill_error.get_or_insert(format!("KILL agent {}: reply says not killed", a.id));
            }
            Err(e) => {
                kill_failed += 1;
                kill_error.get_or_insert(format!("KILL agent {}: {e}", a.id));
                if e.breaks_connection() {
                    client = connect(kernel)?;
                }
            }
        }
    }
    let kill_all = start.elapsed();

    // The host's view: wait (bounded) for every process and cgroup seen to be gone.
    let gone_start = Instant::now();
    let (mut procs_left, mut cgroups_left);
    loop {
        procs_left = procs.iter().filter(|p| p.alive()).count();
        cgroups_left = cgroups.iter().filter(|d| d.exists()).count();
        if procs_left + cgroups_left == 0 || gone_start.elapsed() > GONE_LIMIT {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let gone_after = (procs_left + cgroups_left == 0).then(|| gone_start.elapsed());
    let listed_after = client
        .call(&ListRequest::default())
        .context("LIST after the kills")?
        .0
        .len();
    std::thread::sleep(Duration::from_millis(300));
    let after = procfs::proc_status(kpid)?;

    Ok(IdleResult {
        asked: n,
        spawned: up.len(),
        stopped,
        spawn_all,
        spawn_each: summarize(&mut each),
        spawn_blocks,
        settled,
        asleep: last,
        listed_running,
        before,
        with,
        after,
        agents_pss_kib,
        host_drop_kib: host_before as i64 - host_with as i64,
        kill_all,
        kill_each: summarize(&mut kill_each),
        kill_failed,
        kill_error,
        listed_after,
        procs_seen: procs.len(),
        procs_left,
        cgroups_seen: cgroups.len(),
        cgroups_left,
        gone_after,
    })
}
