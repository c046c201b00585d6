//! Shared harness for the end-to-end tests and the bench runner: start a real `clove-kernel`
//! binary on its own temporary socket and state dir, wait until it answers, stop it on drop.
//!
//! Every kernel started here has its own state dir and sockets and no compat socket, so tests
//! run in parallel and leftovers of an interrupted run cannot interfere.
//!
//! The agent tests (SPAWN and friends) run as root only ([`agents_can_run`] prints `SKIP`
//! otherwise). The heavy ones (fork bomb, memory hog, shutdown with many agents) take
//! [`heavy_test_lock`], a `flock` on [`HEAVY_TEST_LOCK`], so they never overlap, within one
//! test binary or across concurrent `cargo test` runs; the light ones run in parallel. Agent
//! output is read through [`agent_output`] only, so its location can change in one place.

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

pub mod http_server;

/// Path of the `clove-kernel` binary of this workspace, built once per process if needed.
///
/// The binary lives in the same target dir as the running test or bench executable
/// (`target/<profile>/deps/x` → `target/<profile>/clove-kernel`). `cargo test` does not build
/// other packages' binaries, so the first call runs `cargo build` for it in the same profile.
pub fn kernel_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| build_bin("clove-kernel", "clove-kernel"))
}

/// Path of the `clove` command-line binary, built once per process if needed.
pub fn cli_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| build_bin("clove-sdk", "clove"))
}

fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

fn build_bin(package: &str, bin: &str) -> PathBuf {
    let dir = profile_dir();
    let release = dir.file_name().is_some_and(|n| n == "release");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "-p", package, "--bin", bin]);
    if release {
        cmd.arg("--release");
    }
    let status = cmd.status().expect("run cargo build");
    assert!(
        status.success(),
        "cargo build -p {package} --bin {bin} failed"
    );
    let path = dir.join(bin);
    assert!(
        path.exists(),
        "{} missing after cargo build",
        path.display()
    );
    path
}

/// A running kernel on a temporary socket and state dir. Stopped (SIGTERM, then SIGKILL) and
/// cleaned up on drop.
pub struct Kernel {
    child: Option<Child>,
    /// The temporary directory holding the socket and state dir.
    pub dir: tempfile::TempDir,
    /// The main socket.
    pub socket: PathBuf,
    /// The state dir.
    pub state_dir: PathBuf,
}

/// How to start a kernel: extra flags, environment.
#[derive(Default, Clone)]
pub struct KernelOpts {
    /// Extra command-line arguments.
    pub args: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Use this state dir instead of a fresh one.
    pub state_dir: Option<PathBuf>,
    /// Capture stderr (readable with [`Kernel::stop_and_collect`]) instead of inheriting it.
    pub capture_stderr: bool,
    /// Run the kernel in a network namespace of its own with only `lo`, up (root only): then
    /// nothing the kernel sends can leave the machine, whatever it tries. The socket and
    /// state dir stay on the shared filesystem, so the test talks to it as usual.
    pub own_netns: bool,
}

impl Kernel {
    /// Starts a kernel with default options and waits until it accepts connections.
    pub fn start() -> Result<Kernel> {
        Kernel::start_with(KernelOpts::default())
    }

    /// Starts a kernel with `opts` and waits until it accepts connections.
    pub fn start_with(opts: KernelOpts) -> Result<Kernel> {
        let dir = tempfile::Builder::new().prefix("clove-test-").tempdir()?;
        let socket = dir.path().join("clove.sock");
        let state_dir = opts
            .state_dir
            .clone()
            .unwrap_or_else(|| dir.path().join("state"));
        let mut cmd = Command::new(kernel_bin());
        cmd.arg("--socket")
            .arg(&socket)
            .arg("--state-dir")
            .arg(&state_dir)
            .arg("--no-compat-socket")
            .args(&opts.args)
            .env_remove("CLOVE_SOCKET")
            .env_remove("CLOVE_CONFIG")
            .env(
                "CLOVE_LOG",
                std::env::var("CLOVE_TEST_LOG").unwrap_or("warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        // The tests' kernels use the simulated LLM unless a test configures one: quietly
        // (no "no key found" warning), and whatever keys this machine's environment holds.
        if !opts
            .args
            .iter()
            .any(|a| a == "--config" || a.starts_with("--llm-provider"))
        {
            cmd.env("CLOVE_LLM_PROVIDER", "simulated");
        }
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        if opts.capture_stderr {
            cmd.stderr(Stdio::piped());
        }
        if opts.own_netns {
            use std::os::unix::process::CommandExt;
            // SAFETY: between fork and exec the closure makes only async-signal-safe system
            // calls (unshare, socket, ioctl, close) on stack memory.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::unshare(libc::CLONE_NEWNET) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    loopback_up()
                });
            }
        }
        let child = cmd.spawn().context("spawn clove-kernel")?;
        let mut k = Kernel {
            child: Some(child),
            dir,
            socket,
            state_dir,
        };
        k.wait_ready(Duration::from_secs(20))?;
        Ok(k)
    }

    /// Ready means answering HELLO and catching SIGTERM, not merely accepting connections:
    /// the kernel listens before its start-up (interpreter, cgroup subtree) is done and
    /// installs its SIGTERM handler from a task that may run after it first answers, and a
    /// SIGTERM before that kills it without cleaning up: its cgroup subtree stays on the host
    /// (see tests/tests/kernel_sigterm_during_startup_cleans_up.rs).
    fn wait_ready(&mut self, limit: Duration) -> Result<()> {
        let start = Instant::now();
        let pid = self.pid() as i32;
        loop {
            if hello_on_new_connection(&self.socket).is_ok() && catches_signal(pid, libc::SIGTERM) {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    let mut err = String::new();
                    if let Some(mut e) = child.stderr.take() {
                        let _ = e.read_to_string(&mut err);
                    }
                    bail!("clove-kernel exited before it was ready: {status}: {err}");
                }
            }
            if start.elapsed() > limit {
                bail!(
                    "clove-kernel not ready on {} after {limit:?}",
                    self.socket.display()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The kernel's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Connects a raw stream to the main socket.
    pub fn connect(&self) -> Result<UnixStream> {
        UnixStream::connect(&self.socket)
            .with_context(|| format!("connect {}", self.socket.display()))
    }

    /// Sends SIGTERM and waits (up to 10 s) for the exit; returns the status and the captured
    /// stderr (empty unless `capture_stderr`).
    pub fn stop_and_collect(mut self) -> Result<(ExitStatus, String)> {
        let mut child = self.child.take().context("kernel already stopped")?;
        signal(&child, libc::SIGTERM);
        let status = wait_timeout(&mut child, Duration::from_secs(10))?;
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        Ok((status, err))
    }
}

impl Kernel {
    /// SIGKILLs the kernel (no shutdown of any kind: what a crash or the OOM killer does) and
    /// reaps it. The temporary directory and the state dir stay, for a next kernel on the same
    /// state dir ([`KernelOpts::state_dir`]); they go when this value is dropped.
    pub fn sigkill(&mut self) -> Result<ExitStatus> {
        self.signal_and_keep(libc::SIGKILL, Duration::from_secs(10))
    }

    /// Starts another kernel on this one's state dir (this one must have stopped), with
    /// default options otherwise.
    pub fn restart_on_state_dir(&self) -> Result<Kernel> {
        Kernel::start_with(KernelOpts {
            state_dir: Some(self.state_dir.clone()),
            ..KernelOpts::default()
        })
    }
}

/// Sets `lo` up in the calling thread's network namespace: two ioctls on a datagram socket
/// (async-signal-safe, for a `pre_exec`).
fn loopback_up() -> std::io::Result<()> {
    // SAFETY: socket(2); checked, and closed on every path below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: an all-zero ifreq is valid; the name is copied in below, NUL-terminated.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS fills the flags of the request we own; then SIOCSIFFLAGS reads it.
    let result = unsafe {
        if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            if libc::ioctl(fd, libc::SIOCSIFFLAGS, &req) < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(())
            }
        }
    };
    // SAFETY: closing the socket opened above.
    unsafe { libc::close(fd) };
    result
}

/// Checks that process `pid` lives in a network namespace other than ours whose only
/// interface is `lo` and which has no route off the machine: no IPv4 route in the main
/// table, and IPv6 routes through `lo` only. Returns what was read, for messages.
pub fn netns_only_loopback(pid: u32) -> Result<String> {
    let ours = std::fs::read_link("/proc/self/ns/net")?;
    let theirs = std::fs::read_link(format!("/proc/{pid}/ns/net"))?;
    if ours == theirs {
        bail!(
            "process {pid} shares our network namespace {}",
            ours.display()
        );
    }
    let dev = std::fs::read_to_string(format!("/proc/{pid}/net/dev"))?;
    let ifaces: Vec<&str> = dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    if ifaces != ["lo"] {
        bail!("interfaces in the namespace of {pid}: {ifaces:?}");
    }
    let route = std::fs::read_to_string(format!("/proc/{pid}/net/route"))?;
    if route.lines().skip(1).any(|l| !l.trim().is_empty()) {
        bail!("IPv4 routes in the namespace of {pid}:\n{route}");
    }
    // No IPv6 at all is fine too.
    let route6 = std::fs::read_to_string(format!("/proc/{pid}/net/ipv6_route")).unwrap_or_default();
    if let Some(l) = route6
        .lines()
        .find(|l| l.split_whitespace().last().is_some_and(|dev| dev != "lo"))
    {
        bail!("an IPv6 route not through lo in the namespace of {pid}: {l}");
    }
    Ok(format!(
        "interfaces {ifaces:?}; IPv4 routes: none; IPv6 routes:\n{route6}"
    ))
}

/// Whether process `pid` has a handler installed for `sig` (its `SigCgt` mask in
/// /proc/`pid`/status).
pub fn catches_signal(pid: i32, sig: libc::c_int) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| sig >= 1 && mask & (1u64 << (sig - 1)) != 0)
}

fn signal(child: &Child, sig: libc::c_int) {
    // SAFETY: kill(2) on our own child's pid; no memory is touched.
    unsafe {
        libc::kill(child.id() as libc::pid_t, sig);
    }
}

/// Waits for `child` up to `limit`, then SIGKILLs it and fails.
pub fn wait_timeout(child: &mut Child, limit: Duration) -> Result<ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            bail!("process {} did not exit within {limit:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Drop for Kernel {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&child, libc::SIGTERM);
            if wait_timeout(&mut child, Duration::from_secs(5)).is_err() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

// Helpers for the raw-frame and process tests in tests/tests/.

use std::io::Write;

use clove_abi::{Codec, FrameHeader, HEADER_LEN};

/// Writes one frame (header and payload) in one write.
pub fn send_frame(
    stream: &mut impl Write,
    codec: Codec,
    opcode: u8,
    payload: &[u8],
) -> std::io::Result<()> {
    stream.write_all(&clove_abi::frame::encode_frame(codec, 0, opcode, payload))
}

/// Reads one frame. A header with a bad magic is an `InvalidData` error.
pub fn read_frame(stream: &mut impl Read) -> std::io::Result<(FrameHeader, Vec<u8>)> {
    let mut head = [0u8; HEADER_LEN];
    stream.read_exact(&mut head)?;
    let header = FrameHeader::decode(&head)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    let mut payload = vec![0u8; header.payload_len as usize];
    stream.read_exact(&mut payload)?;
    Ok((header, payload))
}

/// Sends a JSON frame and reads its reply, parsed as JSON.
pub fn json_call(
    stream: &mut UnixStream,
    opcode: u8,
    payload: &[u8],
) -> Result<(FrameHeader, serde_json::Value)> {
    send_frame(stream, Codec::Json, opcode, payload)?;
    let (header, body) = read_frame(stream)?;
    let value = serde_json::from_slice(&body).with_context(|| {
        format!(
            "reply to 0x{opcode:02X} is not JSON: {:?}",
            String::from_utf8_lossy(&body)
        )
    })?;
    Ok((header, value))
}

/// Opens a new connection to `socket` and asks HELLO: proves the kernel still serves.
pub fn hello_on_new_connection(socket: &Path) -> Result<serde_json::Value> {
    let mut s = UnixStream::connect(socket)
        .with_context(|| format!("connect {} for HELLO", socket.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let (header, reply) = json_call(&mut s, 0xFE, b"{}")?;
    if header.opcode != 0xFE || reply["success"] != true || reply["protocol_version"] != 1 {
        bail!("bad HELLO reply: opcode 0x{:02X}, {reply}", header.opcode);
    }
    Ok(reply)
}

/// Waits until the peer closes `stream` (EOF, or ECONNRESET when it closed with our bytes
/// unread) and returns how long that took. Fails if bytes arrive or it is still open at `limit`.
pub fn wait_closed(stream: &mut UnixStream, limit: Duration) -> Result<Duration> {
    let start = Instant::now();
    stream.set_read_timeout(Some(limit))?;
    let mut buf = [0u8; 4096];
    match stream.read(&mut buf) {
        Ok(0) => Ok(start.elapsed()),
        Ok(n) => bail!(
            "expected the connection to close, got {n} bytes: {:?}",
            String::from_utf8_lossy(&buf[..n])
        ),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(start.elapsed()),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            bail!("connection still open after {limit:?}")
        }
        Err(e) => Err(e.into()),
    }
}

/// A `clove-kernel` command with none of the harness defaults and no `CLOVE_*` variable
/// inherited from the test's environment; stdin is null.
pub fn kernel_command() -> Command {
    let mut cmd = Command::new(kernel_bin());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("CLOVE_") {
            cmd.env_remove(key);
        }
    }
    cmd.stdin(Stdio::null());
    cmd
}

/// Runs `cmd` until it exits (killed and failed after `limit`); returns status, stdout, stderr.
pub fn run_to_exit(cmd: &mut Command, limit: Duration) -> Result<(ExitStatus, String, String)> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawn")?;
    let collect = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_string(&mut text);
            }
            text
        })
    };
    let out = collect(child.stdout.take().map(|p| Box::new(p) as _));
    let err = collect(child.stderr.take().map(|p| Box::new(p) as _));
    let status = wait_timeout(&mut child, limit)?;
    let out = out.join().unwrap_or_default();
    let err = err.join().unwrap_or_default();
    Ok((status, out, err))
}

impl Kernel {
    /// Sends `sig` (once) and waits up to `limit` for the exit, keeping the state dir for a
    /// look afterwards.
    pub fn signal_and_keep(&mut self, sig: libc::c_int, limit: Duration) -> Result<ExitStatus> {
        let mut child = self.child.take().context("kernel already stopped")?;
        signal(&child, sig);
        wait_timeout(&mut child, limit)
    }

    /// Sends `sig` (once) and waits up to 10 s for the exit; returns the status and the
    /// captured stderr (empty unless `capture_stderr`).
    pub fn signal_and_wait(mut self, sig: libc::c_int) -> Result<(ExitStatus, String)> {
        let mut child = self.child.take().context("kernel already stopped")?;
        signal(&child, sig);
        let status = wait_timeout(&mut child, Duration::from_secs(10))?;
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        Ok((status, err))
    }
}

// Helpers for the agent (sandbox) tests in tests/tests/: gating, serialisation, scripts,
// agent output and host-side observations (processes, cgroups, mounts).

use std::collections::BTreeMap;

use clove_abi::msg::{
    AgentEntry, KillRequest, ListRequest, SpawnReply, SpawnRequest, WaitReply, WaitRequest,
};
use clove_sdk::Client;

/// Whether an agent test can run here: root (namespaces, uid switch, cgroups) and a
/// `python3` to run the agent scripts. Otherwise prints `SKIP: <test>: <reason>` straight to
/// the process's stderr (the harness captures `eprintln!`, and a skip must be seen) and
/// returns false; the test then returns without asserting anything.
pub fn agents_can_run(test: &str) -> bool {
    let reason = if !nix::unistd::geteuid().is_root() {
        Some("needs root (namespaces, agent uids, cgroups)")
    } else if Command::new("python3")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_or(true, |s| !s.success())
    {
        Some("python3 not found")
    } else {
        None
    };
    match reason {
        Some(reason) => {
            let _ = writeln!(std::io::stderr(), "SKIP: {test}: {reason}");
            false
        }
        None => true,
    }
}

/// An exclusive lock that serialises the heavy agent tests (fork bomb, memory hog, kernel
/// shutdown with many agents): held from [`heavy_test_lock`] until dropped.
///
/// cargo runs test binaries one after the other but the tests of one binary in parallel, and
/// several `cargo test` runs (other clones, CI jobs) may share the machine. A `flock` on one
/// well-known file covers both cases, and the kernel releases it when the process dies, so an
/// interrupted run never leaves it held.
pub struct HeavyTestLock {
    _file: std::fs::File,
}

/// The lock file of [`heavy_test_lock`].
pub const HEAVY_TEST_LOCK: &str = "/tmp/clove-e2e.lock";

/// Waits for and takes the heavy-test lock (see [`HeavyTestLock`]).
pub fn heavy_test_lock() -> Result<HeavyTestLock> {
    use std::os::fd::AsRawFd;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(HEAVY_TEST_LOCK)
        .with_context(|| format!("open {HEAVY_TEST_LOCK}"))?;
    loop {
        // SAFETY: flock(2) on a descriptor we own for the duration of the call.
        let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if r == 0 {
            return Ok(HeavyTestLock { _file: file });
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e).with_context(|| format!("flock {HEAVY_TEST_LOCK}"));
        }
    }
}

/// The absolute path of a script in tests/python/.
pub fn python_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join(name)
}

/// A blocking SDK client on the kernel's main socket that gives up on a reply after 60 s
/// (no test call should come near that; it turns a hang into a failure).
pub fn client(kernel: &Kernel) -> Result<Client> {
    let mut c = Client::connect(Some(&kernel.socket))?;
    c.set_timeout(Some(Duration::from_secs(60)))?;
    Ok(c)
}

/// A SPAWN request for tests/python/`script` named `name`, every other field at its default
/// (sandboxed, default limits).
pub fn spawn_request(name: &str, script: &str) -> SpawnRequest {
    SpawnRequest::new(name, python_script(script).to_string_lossy())
}

/// SPAWN that must succeed.
pub fn spawn_ok(client: &mut Client, req: &SpawnRequest) -> Result<SpawnReply> {
    client
        .call(req)
        .with_context(|| format!("SPAWN {} ({})", req.name, req.script))
}

/// WAIT for agent `id`, up to `timeout`; fails unless the agent has exited by then.
pub fn wait_exit(client: &mut Client, id: u32, timeout: Duration) -> Result<WaitReply> {
    let reply = client
        .call(&WaitRequest {
            id: Some(id),
            name: None,
            timeout_ms: Some(timeout.as_millis() as u64),
        })
        .with_context(|| format!("WAIT agent {id}"))?;
    if !reply.success || !reply.exited {
        bail!("agent {id} has not exited within {timeout:?}: {reply:?}");
    }
    Ok(reply)
}

/// KILL agent `id`.
pub fn kill_agent(client: &mut Client, id: u32) -> Result<()> {
    let reply = client
        .call(&KillRequest {
            id: Some(id),
            name: None,
        })
        .with_context(|| format!("KILL agent {id}"))?;
    if !reply.success || !reply.killed || reply.agent_id != id {
        bail!("KILL agent {id}: {reply:?}");
    }
    Ok(())
}

/// LIST: the live agents.
pub fn list_agents(client: &mut Client) -> Result<Vec<AgentEntry>> {
    Ok(client.call(&ListRequest::default()).context("LIST")?.0)
}

/// Everything agent `id` wrote to stdout and stderr so far.
///
/// The one place that knows where agent output lives (today the kernel writes it to
/// `<state dir>/agents/<id>/output.log`); when the LOGS opcode takes over, only this changes.
pub fn agent_output(kernel: &Kernel, id: u32) -> Result<String> {
    let path = kernel
        .state_dir
        .join("agents")
        .join(id.to_string())
        .join("output.log");
    match std::fs::read(&path) {
        Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
        // Not created yet: no output yet.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
    }
}

/// Polls agent `id`'s output until a complete line starts with `prefix`; returns the rest of
/// the first such line. Fails with the whole output after `limit`.
pub fn wait_output_line(kernel: &Kernel, id: u32, prefix: &str, limit: Duration) -> Result<String> {
    let start = Instant::now();
    loop {
        let out = agent_output(kernel, id)?;
        // Only whole lines: the agent may be halfway through writing the last one.
        let whole = out.rsplit_once('\n').map_or("", |(done, _)| done);
        if let Some(line) = whole.lines().find_map(|l| l.strip_prefix(prefix)) {
            return Ok(line.to_owned());
        }
        if start.elapsed() > limit {
            bail!("agent {id} printed no line starting with {prefix:?} within {limit:?}; its output:\n{out}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The last `COUNT <n>` that agent `id` (running tests/python/agent_counter.py) printed.
pub fn last_count(kernel: &Kernel, id: u32) -> Result<u64> {
    let out = agent_output(kernel, id)?;
    // Only whole lines: the counter may be halfway through writing the last one.
    let whole = out.rsplit_once('\n').map_or("", |(done, _)| done);
    Ok(whole
        .lines()
        .rev()
        .filter_map(|l| l.strip_prefix("COUNT "))
        .find_map(|n| n.trim().parse().ok())
        .unwrap_or(0))
}

/// Whether a process with host pid `pid` exists (zombies count: they are not gone yet).
pub fn pid_exists(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The fields of /proc/`pid`/status; `None` when the process is gone.
pub fn proc_status(pid: i32) -> Option<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(
        text.lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
            .collect(),
    )
}

/// The real uid of process `pid` (first field of its `Uid:` line).
pub fn proc_uid(pid: i32) -> Option<u32> {
    proc_status(pid)?
        .get("Uid")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Host pids of every process on the host, with their status fields.
fn all_processes() -> Vec<(i32, BTreeMap<String, String>)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| Some((pid, proc_status(pid)?)))
        .collect()
}

/// Host pids of the children of `pid` (from every process's `PPid`).
pub fn children_of(pid: i32) -> Vec<i32> {
    let ppid = pid.to_string();
    let mut kids: Vec<i32> = all_processes()
        .into_iter()
        .filter(|(_, st)| st.get("PPid") == Some(&ppid))
        .map(|(p, _)| p)
        .collect();
    kids.sort_unstable();
    kids
}

/// Host pids of every process whose real uid is `uid`, with their `State` line.
pub fn processes_of_uid(uid: u32) -> Vec<(i32, String)> {
    all_processes()
        .into_iter()
        .filter(|(_, st)| {
            st.get("Uid")
                .and_then(|u| u.split_whitespace().next())
                .and_then(|u| u.parse::<u32>().ok())
                == Some(uid)
        })
        .map(|(p, st)| (p, st.get("State").cloned().unwrap_or_default()))
        .collect()
}

/// The uid a sandboxed agent's script runs as: that of the first child of its init (the
/// SPAWN pid), which is the agent process. Waits up to 10 s for the child to appear.
pub fn sandboxed_agent_uid(init_pid: i32) -> Result<u32> {
    let start = Instant::now();
    loop {
        if let Some(uid) = children_of(init_pid).into_iter().find_map(proc_uid) {
            return Ok(uid);
        }
        if start.elapsed() > Duration::from_secs(10) {
            bail!("init {init_pid} has no child process after 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A cgroup mount: its mount point, the root of the hierarchy it shows, and its super options
/// (the controllers of a v1 hierarchy, `name=...`), or `None` options for cgroup2.
struct CgroupMount {
    point: PathBuf,
    root: PathBuf,
    v1_options: Option<Vec<String>>,
}

fn cgroup_mounts() -> Vec<CgroupMount> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    info.lines()
        .filter_map(|line| {
            // `id parent maj:min root point opts [optional...] - fstype source superopts`
            let (head, tail) = line.split_once(" - ")?;
            let head: Vec<&str> = head.split(' ').collect();
            let tail: Vec<&str> = tail.split(' ').collect();
            let (root, point) = (head.get(3)?, head.get(4)?);
            let v1_options = match *tail.first()? {
                "cgroup" => Some(tail.get(2)?.split(',').map(str::to_owned).collect()),
                "cgroup2" => None,
                _ => return None,
            };
            Some(CgroupMount {
                point: PathBuf::from(point),
                root: PathBuf::from(root),
                v1_options,
            })
        })
        .collect()
}

/// The host directories of the cgroups process `pid` is in, one per hierarchy (v1
/// controllers, named v1 hierarchies and cgroup2), as seen through this process's mounts.
/// Empty when the process is gone.
pub fn cgroup_dirs_of(pid: i32) -> Vec<PathBuf> {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
        return Vec::new();
    };
    let mounts = cgroup_mounts();
    let mut dirs = Vec::new();
    for line in text.lines() {
        // `hierarchy-id:controller-list:path`; the list is empty for cgroup2.
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let mount = mounts.iter().find(|m| match &m.v1_options {
            None => controllers.is_empty(),
            Some(opts) => {
                !controllers.is_empty()
                    && controllers.split(',').all(|c| opts.iter().any(|o| o == c))
            }
        });
        let Some(mount) = mount else { continue };
        let Ok(rel) = Path::new(path).strip_prefix(&mount.root) else {
            continue;
        };
        dirs.push(mount.point.join(rel));
    }
    dirs
}

/// Mount points (from /proc/self/mountinfo) at or below `dir`.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(dir))
        .collect()
}

/// A world-readable canary file with `text` in a fresh 0755 directory under /var/tmp: outside
/// any script's project, so an agent that sees it has escaped its view. Keep the directory
/// guard alive while the file is needed.
pub fn canary_file(text: &str) -> (tempfile::TempDir, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("clove-canary-")
        .tempdir_in("/var/tmp")
        .expect("canary dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod canary dir");
    let canary = dir.path().join("canary.txt");
    std::fs::write(&canary, text).expect("write canary");
    std::fs::set_permissions(&canary, std::fs::Permissions::from_mode(0o644))
        .expect("chmod canary");
    (dir, canary)
}

/// Running `clove demo` against a test kernel.
pub mod demo;

// Helpers for the messaging, events and state tests (raw JSON frames, planned agents).

/// A raw connection speaking JSON on the original frame, for tests that check exact error
/// codes and reply headers. Every read gives up after 60 s.
pub struct JsonConn {
    /// The stream.
    pub stream: UnixStream,
    /// The caller's id, from the reply header of the HELLO sent on connect.
    pub id: u32,
}

impl JsonConn {
    /// Connects to `kernel` and says HELLO (which tells the connection's id).
    pub fn open(kernel: &Kernel) -> Result<JsonConn> {
        let stream = kernel.connect()?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        let mut conn = JsonConn { stream, id: 0 };
        let (header, reply) = conn.call_as(0, 0xFE, &serde_json::json!({}))?;
        if reply["success"] != true {
            bail!("HELLO: {reply}");
        }
        conn.id = header.agent_id;
        Ok(conn)
    }

    /// One request with `header_id` written in the request header; the reply header and the
    /// reply parsed as JSON.
    pub fn call_as(
        &mut self,
        header_id: u32,
        opcode: u8,
        payload: &serde_json::Value,
    ) -> Result<(FrameHeader, serde_json::Value)> {
        let body = payload.to_string();
        self.stream.write_all(&clove_abi::frame::encode_frame(
            Codec::Json,
            header_id,
            opcode,
            body.as_bytes(),
        ))?;
        let (header, reply) = read_frame(&mut self.stream)?;
        if header.opcode != opcode {
            bail!("reply opcode 0x{:02X} to 0x{opcode:02X}", header.opcode);
        }
        let value = serde_json::from_slice(&reply).with_context(|| {
            format!(
                "reply to 0x{opcode:02X} is not JSON: {:?}",
                String::from_utf8_lossy(&reply)
            )
        })?;
        Ok((header, value))
    }

    /// One request (header id 0); the reply as JSON.
    pub fn call(&mut self, opcode: u8, payload: serde_json::Value) -> Result<serde_json::Value> {
        Ok(self.call_as(0, opcode, &payload)?.1)
    }
}

/// A SPAWN request for tests/python/agent_plan.py named `name` carrying out `plan` (see the
/// script for the steps).
pub fn plan_request(name: &str, plan: &serde_json::Value) -> SpawnRequest {
    let mut req = spawn_request(name, "agent_plan.py");
    req.args = vec![plan.to_string()];
    req
}

/// The parsed `STEP <step> {...}` line of agent `id` (running agent_plan.py), waiting up to
/// `limit` for it.
pub fn plan_step(
    kernel: &Kernel,
    id: u32,
    step: usize,
    limit: Duration,
) -> Result<serde_json::Value> {
    let line = wait_output_line(kernel, id, &format!("STEP {step} "), limit)?;
    serde_json::from_str(&line).with_context(|| format!("STEP {step} of agent {id}: {line}"))
}

// Helpers for the restart tests.

/// A SPAWN request for tests/python/agent_restarts.py named `name` following `plan` (see the
/// script: one step per run, e.g. `"1,kill,0"`), under `policy`, with `restart_backoff_ms`.
pub fn restart_request(
    name: &str,
    plan: &str,
    policy: clove_abi::msg::RestartPolicy,
    backoff_ms: u64,
) -> SpawnRequest {
    let mut req = spawn_request(name, "agent_restarts.py");
    req.args = vec![plan.to_owned()];
    req.restart_policy = policy;
    req.restart_backoff_ms = Some(backoff_ms);
    req
}

/// A JSON connection subscribed to the event types `types` (SUBSCRIBE, 0x60).
pub fn subscribe_events(kernel: &Kernel, types: &[&str]) -> Result<JsonConn> {
    let mut conn = JsonConn::open(kernel)?;
    let r = conn.call(0x60, serde_json::json!({ "event_types": types }))?;
    if r["success"] != true {
        bail!("SUBSCRIBE {types:?}: {r}");
    }
    Ok(conn)
}

/// Polls `conn` for events (POLL_EVENTS, 0x62) and adds them to `all` until `pred` holds for
/// them, or fails after `limit` with every event seen.
pub fn gather_events(
    conn: &mut JsonConn,
    all: &mut Vec<serde_json::Value>,
    limit: Duration,
    pred: impl Fn(&[serde_json::Value]) -> bool,
) -> Result<()> {
    let start = Instant::now();
    while !pred(all) {
        if start.elapsed() > limit {
            bail!(
                "the events wanted did not come within {limit:?}; events: {}",
                serde_json::Value::Array(all.clone())
            );
        }
        let r = conn.call(0x62, serde_json::json!({"max": 100, "wait_ms": 300}))?;
        if r["success"] != true {
            bail!("POLL_EVENTS: {r}");
        }
        if let Some(events) = r["events"].as_array() {
            all.extend(events.iter().cloned());
        }
    }
    Ok(())
}

/// The events of agent `id` (by `data.agent_id`) of type `kind`, in order.
pub fn events_of<'a>(
    events: &'a [serde_json::Value],
    id: u32,
    kind: &str,
) -> Vec<&'a serde_json::Value> {
    events
        .iter()
        .filter(|e| e["type"] == kind && e["data"]["agent_id"].as_u64() == Some(u64::from(id)))
        .collect()
}

/// LIST with `detail`: live and exited agents.
pub fn list_detail(client: &mut Client) -> Result<Vec<AgentEntry>> {
    Ok(client
        .call(&ListRequest { detail: true })
        .context("LIST detail")?
        .0)
}

/// A supervisor-group member running tests/python/agent_restarts.py with `plan`, under
/// `policy`, in `group` (backoff 100 ms).
pub fn group_member(
    name: &str,
    group: &str,
    plan: &str,
    policy: clove_abi::msg::RestartPolicy,
) -> SpawnRequest {
    let mut req = restart_request(name, plan, policy, 100);
    req.group = Some(group.to_owned());
    req
}

/// Polls LIST until `pred` holds for the live rows, or fails after `limit` with the rows.
pub fn wait_agents(
    client: &mut Client,
    limit: Duration,
    pred: impl Fn(&[AgentEntry]) -> bool,
) -> Result<Vec<AgentEntry>> {
    let start = Instant::now();
    loop {
        let rows = list_agents(client)?;
        if pred(&rows) {
            return Ok(rows);
        }
        if start.elapsed() > limit {
            bail!("LIST did not get there within {limit:?}: {rows:#?}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// The live row of agent `id` in `rows`, if any.
pub fn row(rows: &[AgentEntry], id: u32) -> Option<&AgentEntry> {
    rows.iter().find(|r| r.id == id)
}

/// The times (unix ns) at which agent `id` (plan step `term`) received SIGTERM, in order.
pub fn term_stamps(kernel: &Kernel, id: u32) -> Result<Vec<u64>> {
    Ok(agent_output(kernel, id)?
        .lines()
        .filter_map(|l| l.strip_prefix("TERM "))
        .filter_map(|n| n.trim().parse().ok())
        .collect())
}

/// Sends `requests` (`[[opcode, payload], ...]`) on `kernel`'s main socket from a client
/// running as uid and gid 65534 (an operator that is not root), through
/// tests/python/requests_as.py; the replies, in order. `None` (a SKIP line printed) when the
/// test is not root or /usr/bin/python3.11 is missing. The kernel's socket and its temporary
/// directory are opened to other users for it (this test kernel's own, nothing else).
pub fn requests_as_nobody(
    kernel: &Kernel,
    requests: &serde_json::Value,
) -> Result<Option<Vec<serde_json::Value>>> {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let python = Path::new("/usr/bin/python3.11");
    if !nix::unistd::geteuid().is_root() || !python.exists() {
        eprintln!("SKIP: needs root (to run a client as another uid) and /usr/bin/python3.11");
        return Ok(None);
    }
    let sock = &kernel.socket;
    std::fs::set_permissions(sock, std::fs::Permissions::from_mode(0o666))?;
    let dir = sock.parent().context("the socket has no directory")?;
    let mode = std::fs::metadata(dir)?.permissions().mode();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o001))?;
    let out = Command::new(python)
        .arg(python_script("requests_as.py"))
        .arg(sock)
        .arg(requests.to_string())
        .uid(65534)
        .gid(65534)
        .output()?;
    if !out.status.success() {
        bail!("requests_as.py: {}", String::from_utf8_lossy(&out.stderr));
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).with_context(|| format!("reply {l:?}")))
        .collect::<Result<Vec<_>>>()
        .map(Some)
}
