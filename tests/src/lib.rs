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
    assert!(status.success(), "cargo build -p {package} --bin {bin} failed");
    let path = dir.join(bin);
    assert!(path.exists(), "{} missing after cargo build", path.display());
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
            .env("CLOVE_LOG", std::env::var("CLOVE_TEST_LOG").unwrap_or("warn".into()))
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
                bail!("clove-kernel not ready on {} after {limit:?}", self.socket.display());
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
