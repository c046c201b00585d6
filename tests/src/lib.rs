//! Shared harness for the end-to-end tests and the bench runner: start a real `clove-kernel`
//! binary on its own temporary socket and state dir, wait until it answers, stop it on drop.
//!
//! Every kernel started here has its own state dir and sockets and no compat socket, so tests
//! run in parallel and leftovers of an interrupted run cannot interfere.

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

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
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        if opts.capture_stderr {
            cmd.stderr(Stdio::piped());
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

    fn wait_ready(&mut self, limit: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            if UnixStream::connect(&self.socket).is_ok() {
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

/// Running `clove demo` against a test kernel.
pub mod demo;
