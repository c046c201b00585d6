//! The kernel side of starting an agent process (DESIGN.md, "Spawning an agent", steps 2 and 5).
//!
//! This module owns the mechanism, the caller owns the policy: the caller says which paths
//! to bind, which environment, which uid ([`LaunchSpec`]); this module clones the process
//! into its namespaces, hands the sandboxed part over to [`init`](super::init), and reports
//! how the agent ended.
//!
//! The sequence:
//!
//! 1. [`Launcher::spawn`] sends the spec to the one launcher thread, which prepares every
//!    buffer, then calls `clone` with `CLONE_PIDFD` and the namespace flags. All clones
//!    happen on that thread because `PR_SET_PDEATHSIG` fires when the *thread* that forked
//!    exits, so it must outlive every agent: it never exits. A sandboxed child shares our
//!    memory until its exec (`CLONE_VM | CLONE_VFORK`, see [`clone_vfork`]), and joins a
//!    network namespace made ahead of time ([`NetnsPool`](super::net::NetnsPool)) rather
//!    than creating one in the clone. When the thread's [fork server](super::forkserver)
//!    runs (as root, the normal case), a sandboxed child is cloned by it instead and runs
//!    init without an exec; the clone and exec below remain the fallback.
//! 2. The child does only async-signal-safe work (the kernel is multi-threaded and another
//!    thread may hold the allocator's lock): it moves its descriptors to fixed numbers, sets
//!    `PR_SET_PDEATHSIG`, resets its signal state, then either execs the kernel binary in
//!    init mode (sandboxed) or waits for the go byte and execs the program (not sandboxed).
//! 3. The caller puts [`Pending::pid`] into the agent's cgroups, then
//!    [`Pending::release`] sends the go byte: nothing of the agent runs before it is
//!    inside its limits (init builds the sandbox meanwhile, but forks the agent only after
//!    the go byte). Release waits (bounded) for init to report that the agent was
//!    exec'd, or for the setup error, which becomes the spawn error.
//! 4. The caller watches [`Started::pidfd`]; once readable, [`reap`] collects the exit.
//!    Init relays the agent's own wait status through the report pipe, so `exit(137)` and
//!    a SIGKILL are told apart although init is the process the kernel waits for.
//!
//! Raw `clone` rather than `clone3`: container runtimes' default seccomp profiles answer
//! `clone3` with ENOSYS, and `clone` with `CLONE_PIDFD` (Linux 5.2) gives the same pidfd.
//! Its argument order (flags, stack, parent_tid, ...) holds on x86_64, aarch64 and the
//! other `CLONE_BACKWARDS` architectures we build for; s390 would need the first two swapped.

use std::ffi::CString;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::forkserver::{Failure, ForkServer, INIT_FDS};
use super::init::InitStatus;
use super::mounts::RootPlan;
use super::privileges::{Applied, Lockdown};

// The descriptor layout every launched child gets: 0 /dev/null, 1 and 2 the agent's output,
// then the numbers below, the same in init (sandboxed) and in the pre-exec child (not
// sandboxed, which has none from 5 up).

/// The lifeline, kernel to child: the go byte, then EOF when the kernel's end closes.
pub(crate) const LIFELINE_FD: RawFd = 3;
/// Setup status, child to kernel; CLOEXEC once in place, so a successful exec closes it.
pub(crate) const STATUS_FD: RawFd = 4;
/// The JSON [`ProcessSpec`] (a memfd: any size, no writer to wait for).
pub(crate) const SPEC_FD: RawFd = 5;
/// The agent's wait status, init to kernel, written right before init exits.
pub(crate) const REPORT_FD: RawFd = 6;
/// The control channel, kernel to init and back: a `SOCK_SEQPACKET` socket on which the
/// kernel asks init to run an agent's EXEC inside the sandbox ([`control`](super::control)).
pub(crate) const CONTROL_FD: RawFd = 7;
/// The kernel executable, for `execveat` (closed on exec).
pub(crate) const EXE_FD: RawFd = 8;

/// How long [`Pending::release`] waits for init's report.
pub const RELEASE_TIMEOUT: Duration = Duration::from_secs(10);

/// What to run and how to isolate it; serializable (init receives it as JSON).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProcessSpec {
    /// New pid, mount, uts, ipc (and cgroup) namespaces with init as PID 1 and a fresh root;
    /// otherwise the program runs directly as a child of the kernel with its uid.
    pub sandboxed: bool,
    /// Share the host's network namespace; otherwise a private one with only loopback.
    pub network: bool,
    /// The sandbox's hostname (sandboxed only).
    pub hostname: String,
    /// `argv[0]` is the program's path as seen inside (no PATH search).
    pub argv: Vec<String>,
    /// The complete environment.
    pub env: Vec<(String, String)>,
    /// The working directory, inside.
    pub cwd: PathBuf,
    /// The root file system; required when sandboxed, refused otherwise.
    pub root: Option<RootPlan>,
    /// Privileges the agent drops before exec; sandboxed only.
    pub lockdown: Option<Lockdown>,
}

/// A [`ProcessSpec`] with the descriptors the agent writes to (stdin is /dev/null).
#[derive(Debug)]
pub struct LaunchSpec {
    /// What to run.
    pub process: ProcessSpec,
    /// The agent's stdout (e.g. its log file).
    pub stdout: OwnedFd,
    /// The agent's stderr; init's own error lines land here too.
    pub stderr: OwnedFd,
}

/// How the agent ended: exactly one of the two is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AgentExit {
    /// The exit code when it exited.
    pub code: Option<i32>,
    /// The signal number when a signal killed it.
    pub signal: Option<i32>,
}

impl AgentExit {
    fn code(code: i32) -> Self {
        Self {
            code: Some(code),
            signal: None,
        }
    }

    fn signal(signal: i32) -> Self {
        Self {
            code: None,
            signal: Some(signal),
        }
    }
}

/// A failure to start or to collect an agent process.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The kernel's own executable could not be opened.
    #[error("open the kernel executable {}: {}", .path.display(), os_text(.source))]
    OpenProgram {
        /// The path opened.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The launcher thread could not be started.
    #[error("start the launcher thread: {}", os_text(.0))]
    Thread(io::Error),
    /// The launcher thread no longer takes requests (it panicked).
    #[error("the launcher thread is gone")]
    LauncherGone,
    /// The spec cannot be launched as given.
    #[error("invalid launch spec: {0}")]
    InvalidSpec(String),
    /// A system call on the kernel side failed.
    #[error("{what}: {}", os_text(.source))]
    Io {
        /// The step (`clone into new namespaces`, `send the go byte`, ...).
        what: String,
        /// The cause.
        source: io::Error,
    },
    /// Setting up the sandbox or exec'ing the agent failed; the text comes from the child
    /// (`bind /data -> /mnt/data: no such file or directory`).
    #[error("{0}")]
    Setup(String),
    /// The child ended without saying why.
    #[error("the sandbox exited before reporting: {0}")]
    Died(String),
    /// No report within the bound; the child was killed.
    #[error("the sandbox did not report within {} s", .0.as_secs())]
    Timeout(Duration),
    /// [`reap`] was called before the process exited.
    #[error("the process has not exited yet")]
    StillRunning,
}

fn io_error(what: impl Into<String>) -> impl FnOnce(io::Error) -> LaunchError {
    let what = what.into();
    move |source| LaunchError::Io { what, source }
}

/// The text of an OS error the way our messages spell it: lower case, no "(os error N)".
pub(crate) fn os_text(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => {
            let desc = nix::errno::Errno::from_raw(n).desc();
            let mut chars = desc.chars();
            match chars.next() {
                Some(first) => first.to_lowercase().chain(chars).collect(),
                None => desc.to_owned(),
            }
        }
        None => e.to_string(),
    }
}

/// The handle through which the kernel starts agent processes. Cheap to clone; every clone
/// talks to the same launcher thread.
#[derive(Clone, Debug)]
pub struct Launcher {
    requests: mpsc::Sender<Request>,
}

struct Request {
    spec: LaunchSpec,
    reply: Reply,
}

/// Where the launcher thread sends a launch's outcome.
enum Reply {
    /// A blocked thread ([`Launcher::spawn`]).
    Blocking(mpsc::SyncSender<Result<Pending, LaunchError>>),
    /// An async task ([`Launcher::start_spawn`]), woken straight from the launcher thread.
    Task(tokio::sync::oneshot::Sender<Result<Pending, LaunchError>>),
}

impl Reply {
    /// Hands the outcome over; when the caller gave up, the `Pending` is dropped here, which
    /// kills and reaps the child.
    fn send(self, outcome: Result<Pending, LaunchError>) {
        match self {
            Reply::Blocking(tx) => drop(tx.send(outcome)),
            Reply::Task(tx) => drop(tx.send(outcome)),
        }
    }
}

/// A launch requested with [`Launcher::start_spawn`]; [`SpawnAnswer::wait`] for the child.
#[derive(Debug)]
pub struct SpawnAnswer(Result<tokio::sync::oneshot::Receiver<Result<Pending, LaunchError>>, ()>);

impl SpawnAnswer {
    /// The cloned child, once the launcher thread has it.
    pub async fn wait(self) -> Result<Pending, LaunchError> {
        match self.0 {
            Ok(rx) => rx.await.map_err(|_| LaunchError::LauncherGone)?,
            Err(()) => Err(LaunchError::LauncherGone),
        }
    }
}

impl Launcher {
    /// Opens the running kernel executable (so an upgrade on disk does not change what
    /// init runs) and starts the launcher thread.
    pub fn start() -> Result<Self, LaunchError> {
        Self::with_program(Path::new("/proc/self/exe"))
    }

    /// As [`Launcher::start`], with another build of the kernel binary as init (tests).
    pub fn with_program(path: &Path) -> Result<Self, LaunchError> {
        let exe = std::fs::File::open(path).map_err(|source| LaunchError::OpenProgram {
            path: path.to_owned(),
            source,
        })?;
        let exe = OwnedFd::from(exe);
        // Without it (the thread could not start) every clone makes its own namespace.
        let netns = super::net::NetnsPool::start().ok();
        let (requests, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("clove-launcher".into())
            .spawn(move || {
                // Only root launches sandboxes, the server's one job. Started here: it is
                // this thread's child, like every init it clones.
                let mut server = nix::unistd::geteuid()
                    .is_root()
                    .then(|| ForkServer::start(&exe))
                    .and_then(|started| {
                        started
                            .map_err(|e| tracing::warn!("no fork server, init execs: {e}"))
                            .ok()
                    });
                while let Ok(Request { spec, reply }) = rx.recv() {
                    reply.send(launch(&exe, netns.as_deref(), &mut server, spec));
                }
                // Every child's PR_SET_PDEATHSIG is tied to this thread: it lives as long
                // as the process, even with no Launcher handle left.
                loop {
                    std::thread::park();
                }
            })
            .map_err(LaunchError::Thread)?;
        Ok(Self { requests })
    }

    /// Clones the agent's process (blocking: async callers use `spawn_blocking`). Nothing
    /// of the agent runs until [`Pending::release`].
    #[cfg_attr(not(test), allow(dead_code))] // the kernel uses start_spawn
    pub fn spawn(&self, spec: LaunchSpec) -> Result<Pending, LaunchError> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.requests
            .send(Request {
                spec,
                reply: Reply::Blocking(reply),
            })
            .map_err(|_| LaunchError::LauncherGone)?;
        answer.recv().map_err(|_| LaunchError::LauncherGone)?
    }

    /// As [`Launcher::spawn`] for async callers, without a blocking thread in between: the
    /// request goes to the launcher thread right away (the caller can do other work while the
    /// child is cloned), and the launcher thread wakes the waiting task itself.
    pub fn start_spawn(&self, spec: LaunchSpec) -> SpawnAnswer {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let sent = self.requests.send(Request {
            spec,
            reply: Reply::Task(reply),
        });
        SpawnAnswer(sent.map(|()| answer).map_err(drop))
    }
}

/// A cloned child waiting for its go byte.
#[derive(Debug)]
pub struct Pending {
    /// The child's pid in the kernel's pid namespace: put it into the agent's cgroups
    /// before [`Pending::release`].
    pub pid: i32,
    /// `None` once released or aborted.
    fds: Option<PendingFds>,
}

#[derive(Debug)]
struct PendingFds {
    pidfd: OwnedFd,
    lifeline: OwnedFd,
    status: OwnedFd,
    report: Option<OwnedFd>,
    control: Option<OwnedFd>,
    sandboxed: bool,
    mount_ns: Option<OwnedFd>,
    program: String,
    cwd: PathBuf,
}

/// A running agent.
#[derive(Debug)]
pub struct Started {
    /// The pid the kernel sees: init's when sandboxed (the agent is PID 2 inside), else
    /// the program's.
    pub pid: i32,
    /// Readable once that process exited; then call [`reap`].
    pub pidfd: OwnedFd,
    /// Init's report of the agent's wait status (sandboxed only); pass it to [`reap`].
    pub report: Option<OwnedFd>,
    /// What the lockdown put in force (`None` without a lockdown).
    pub applied: Option<Applied>,
    /// Init's link to the kernel (sandboxed only): when this closes, because it is
    /// dropped or the kernel died, init kills the whole sandbox and exits. Keep it for the
    /// agent's lifetime.
    pub lifeline: Option<OwnedFd>,
    /// The kernel's end of the control channel to init (sandboxed only): see
    /// [`control`](super::control).
    pub control: Option<OwnedFd>,
    /// The sandbox's mount namespace (sandboxed only; `None` if it could not be opened).
    /// Holding it keeps the namespace's teardown (unmounting its ~35 mounts, an RCU grace
    /// period) out of init's exit, which the caller waits for: drop it after the exit has
    /// been reported. Nothing enters the namespace through it.
    pub mount_ns: Option<OwnedFd>,
}

impl Pending {
    /// The child's pidfd.
    #[cfg_attr(not(test), allow(dead_code))] // tests and diagnostics
    pub fn pidfd(&self) -> Option<BorrowedFd<'_>> {
        self.fds.as_ref().map(|f| f.pidfd.as_fd())
    }

    /// Lets the child go and waits up to [`RELEASE_TIMEOUT`] until the agent was exec'd.
    /// On any failure the child is killed and reaped and the error carries the reason.
    pub fn release(mut self) -> Result<Started, LaunchError> {
        let Some(fds) = self.fds.take() else {
            return Err(LaunchError::Died("already released".into()));
        };
        match fds.go() {
            Ok(applied) => Ok(Started {
                pid: self.pid,
                pidfd: fds.pidfd,
                report: fds.report,
                applied,
                lifeline: fds.sandboxed.then_some(fds.lifeline),
                control: fds.control,
                mount_ns: fds.mount_ns,
            }),
            Err(e) => {
                kill_and_reap(&fds.pidfd);
                Err(e)
            }
        }
    }

    /// Kills and reaps the child without letting it run (e.g. the cgroup setup failed).
    pub fn abort(mut self) {
        if let Some(fds) = self.fds.take() {
            kill_and_reap(&fds.pidfd);
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(fds) = self.fds.take() {
            kill_and_reap(&fds.pidfd);
        }
    }
}

impl PendingFds {
    /// Sends the go byte and reads the child's one status message.
    fn go(&self) -> Result<Option<Applied>, LaunchError> {
        // EPIPE means the child is already gone; the status read below says why.
        let _ = nix::unistd::write(&self.lifeline, b"g");
        let message = read_to_eof(&self.status, RELEASE_TIMEOUT)?;
        if let Some(failure) = decode_child_failure(&message) {
            return Err(LaunchError::Setup(self.describe(failure)));
        }
        if !self.sandboxed && message.is_empty() {
            // The status pipe closed on exec: the program runs.
            return Ok(None);
        }
        if message.is_empty() {
            return Err(LaunchError::Died(exit_text(&self.pidfd)));
        }
        match serde_json::from_slice::<InitStatus>(&message) {
            Ok(InitStatus::Started { applied }) => Ok(applied),
            Ok(InitStatus::Failed { error }) => Err(LaunchError::Setup(error)),
            Err(e) => Err(LaunchError::Died(format!(
                "unreadable status from init: {e}"
            ))),
        }
    }

    fn describe(&self, (step, errno): (u8, i32)) -> String {
        let cause = os_text(&io::Error::from_raw_os_error(errno));
        match step {
            STEP_LOOPBACK => format!("bring loopback up: {cause}"),
            STEP_CHDIR => format!("chdir {}: {cause}", self.cwd.display()),
            STEP_NETNS => format!("join the network namespace: {cause}"),
            STEP_EXEC if self.sandboxed => format!("exec the kernel binary as init: {cause}"),
            STEP_EXEC => format!("exec {}: {cause}", self.program),
            _ => format!("setup step {step}: {cause}"),
        }
    }
}

/// Reads until EOF or `limit`, whichever comes first.
fn read_to_eof(fd: &OwnedFd, limit: Duration) -> Result<Vec<u8>, LaunchError> {
    let deadline = Instant::now() + limit;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero()
            || !poll_readable(fd.as_fd(), left).map_err(io_error("wait for the sandbox"))?
        {
            return Err(LaunchError::Timeout(limit));
        }
        match nix::unistd::read(fd.as_raw_fd(), &mut buf) {
            Ok(0) => return Ok(out),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => {}
            Err(e) => return Err(io_error("read the sandbox status")(e.into())),
        }
        if out.len() > 1 << 20 {
            return Err(LaunchError::Died("status message over 1 MiB".into()));
        }
    }
}

/// Waits until `fd` is readable (or hung up); `false` on timeout.
pub(crate) fn poll_readable(fd: BorrowedFd<'_>, timeout: Duration) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
    loop {
        // SAFETY: one pollfd we own, count 1.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        if rc >= 0 {
            return Ok(rc > 0);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Sends `sig` to the process behind `pidfd` (no pid-reuse race).
pub fn signal(pidfd: &OwnedFd, sig: Signal) -> io::Result<()> {
    // SAFETY: pidfd_send_signal(2) with a pidfd we borrow, no siginfo, no flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig as libc::c_int,
            std::ptr::null::<libc::siginfo_t>(),
            0 as libc::c_uint,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Collects an exited agent; call once `pidfd` is readable. With init's `report`, returns
/// the agent's own status; if init left none (it was SIGKILLed, the kill path), init's.
pub fn reap(pidfd: &OwnedFd, report: Option<&OwnedFd>) -> Result<AgentExit, LaunchError> {
    let own = wait_pidfd(pidfd.as_fd(), libc::WNOHANG)
        .map_err(io_error("reap the agent process"))?
        .ok_or(LaunchError::StillRunning)?;
    if let Some(report) = report {
        let mut text = Vec::new();
        // Non-blocking and every writer is gone with init: this never waits.
        let mut file = std::fs::File::from(
            report
                .try_clone()
                .map_err(io_error("read the exit report"))?,
        );
        let _ = file.read_to_end(&mut text);
        if let Ok(agent) = serde_json::from_slice::<AgentExit>(&text) {
            return Ok(agent);
        }
    }
    Ok(own)
}

/// `waitid(P_PIDFD)`; `None` when `WNOHANG` found nothing.
fn wait_pidfd(pidfd: BorrowedFd<'_>, flags: libc::c_int) -> io::Result<Option<AgentExit>> {
    loop {
        // SAFETY: siginfo_t is plain old data; zeroed means "nobody" (si_pid 0).
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid(2) writes into `info`, which we own.
        let rc = unsafe {
            libc::waitid(
                libc::P_PIDFD,
                pidfd.as_raw_fd() as libc::id_t,
                &mut info,
                libc::WEXITED | flags,
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        // SAFETY: waitid filled a SIGCHLD siginfo (or left it zeroed).
        let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
        if pid == 0 {
            return Ok(None);
        }
        return Ok(Some(match info.si_code {
            libc::CLD_EXITED => AgentExit::code(status),
            _ => AgentExit::signal(status),
        }));
    }
}

/// SIGKILL and a blocking reap; the end of every failed or abandoned launch.
pub(crate) fn kill_and_reap(pidfd: &OwnedFd) {
    let _ = signal(pidfd, Signal::SIGKILL);
    let _ = wait_pidfd(pidfd.as_fd(), 0);
}

/// How a process that has exited (or is about to) ended, for error messages.
fn exit_text(pidfd: &OwnedFd) -> String {
    // EOF on the status pipe comes a moment before the process is a zombie.
    let _ = poll_readable(pidfd.as_fd(), Duration::from_secs(1));
    match wait_pidfd(pidfd.as_fd(), libc::WNOHANG) {
        Ok(Some(AgentExit {
            code: Some(code), ..
        })) => format!("exit code {code}"),
        Ok(Some(AgentExit {
            signal: Some(sig), ..
        })) => format!("killed by signal {sig}"),
        _ => "still running without a word".into(),
    }
}

// The pre-exec child's failure message: `!`, a step byte, the errno (native endian). JSON
// from init always starts with `{`, so the two never mix.
const STEP_LOOPBACK: u8 = b'l';
const STEP_CHDIR: u8 = b'c';
const STEP_EXEC: u8 = b'e';
const STEP_NETNS: u8 = b'n';

fn decode_child_failure(message: &[u8]) -> Option<(u8, i32)> {
    match message {
        [b'!', step, a, b, c, d] => Some((*step, i32::from_ne_bytes([*a, *b, *c, *d]))),
        _ => None,
    }
}

/// Everything the child needs, prepared before the clone so the child allocates nothing.
pub(crate) struct ChildPlan {
    /// (source, fixed number) pairs; every source is at least 10, so no move clobbers a
    /// later source.
    pub(crate) moves: [(RawFd, RawFd); 9],
    pub(crate) n_moves: usize,
    /// Fixed descriptors that must not survive the final exec.
    pub(crate) cloexec: [RawFd; 3],
    pub(crate) n_cloexec: usize,
    /// Everything from here up is closed right away.
    pub(crate) first_free: RawFd,
    /// The program (direct) or unused (init: EXE_FD).
    pub(crate) path: *const libc::c_char,
    pub(crate) argv: *const *const libc::c_char,
    pub(crate) envp: *const *const libc::c_char,
    pub(crate) cwd: *const libc::c_char,
    pub(crate) sandboxed: bool,
    /// Run init right here instead of exec'ing EXE_FD: only in a child of the
    /// single-threaded [fork server](super::forkserver), which may run ordinary code.
    pub(crate) run_init: bool,
    pub(crate) loopback: bool,
    /// A network namespace to join (`setns`) rather than one from the clone; -1 for none.
    pub(crate) netns: RawFd,
}

/// NUL-terminated strings and the pointer array over them; the strings must stay alive as
/// long as the array is used.
pub(crate) struct CArray {
    _strings: Vec<CString>,
    pub(crate) ptrs: Vec<*const libc::c_char>,
}

impl CArray {
    pub(crate) fn new(
        items: impl IntoIterator<Item = String>,
        what: &str,
    ) -> Result<Self, LaunchError> {
        let strings = items
            .into_iter()
            .map(|s| {
                CString::new(s)
                    .map_err(|_| LaunchError::InvalidSpec(format!("{what} contains a NUL byte")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut ptrs: Vec<_> = strings.iter().map(|s| s.as_ptr()).collect();
        ptrs.push(std::ptr::null());
        Ok(Self {
            _strings: strings,
            ptrs,
        })
    }
}

fn check(spec: &ProcessSpec) -> Result<(), LaunchError> {
    let bad = |msg: &str| Err(LaunchError::InvalidSpec(msg.into()));
    if spec.argv.is_empty() || spec.argv[0].is_empty() {
        return bad("argv is empty");
    }
    if spec
        .env
        .iter()
        .any(|(k, _)| k.is_empty() || k.contains('='))
    {
        return bad("an environment name is empty or contains '='");
    }
    if spec.sandboxed {
        if spec.root.is_none() {
            return bad("a sandboxed launch needs a root plan");
        }
        if spec.hostname.is_empty() {
            return bad("a sandboxed launch needs a hostname");
        }
    } else {
        if spec.root.is_some() {
            return bad("a root plan needs the sandboxed mode");
        }
        if spec.lockdown.is_some() {
            return bad("a lockdown needs the sandboxed mode");
        }
    }
    Ok(())
}

/// A CLOEXEC duplicate numbered 10 or above, so the child's moves to 0..=8 are safe.
pub(crate) fn high_dup(fd: BorrowedFd<'_>, what: &str) -> Result<OwnedFd, LaunchError> {
    // SAFETY: F_DUPFD_CLOEXEC on a borrowed, open descriptor; the result is owned below.
    let new = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 10) };
    if new < 0 {
        return Err(io_error(format!("duplicate the {what} descriptor"))(
            io::Error::last_os_error(),
        ));
    }
    // SAFETY: `new` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

fn pipe(what: &str) -> Result<(OwnedFd, OwnedFd), LaunchError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| io_error(format!("create the {what} pipe"))(e.into()))
}

/// The spec as a memfd positioned at 0.
fn spec_memfd(spec: &ProcessSpec) -> Result<OwnedFd, LaunchError> {
    let json = serde_json::to_vec(spec)
        .map_err(|e| LaunchError::InvalidSpec(format!("serialize: {e}")))?;
    // SAFETY: memfd_create(2) with a static NUL-terminated name.
    let fd = unsafe { libc::memfd_create(c"clove-spec".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io_error("create the spec memfd")(io::Error::last_os_error()));
    }
    // SAFETY: a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut file = std::fs::File::from(fd);
    use std::io::{Seek, Write};
    file.write_all(&json)
        .and_then(|()| file.seek(io::SeekFrom::Start(0)).map(drop))
        .map_err(io_error("write the spec memfd"))?;
    Ok(OwnedFd::from(file))
}

/// The launcher thread's part: prepare, clone, hand back the pending child.
fn launch(
    exe: &OwnedFd,
    netns_pool: Option<&super::net::NetnsPool>,
    server: &mut Option<ForkServer>,
    spec: LaunchSpec,
) -> Result<Pending, LaunchError> {
    let LaunchSpec {
        process,
        stdout,
        stderr,
    } = spec;
    check(&process)?;

    // Every buffer the child touches exists before the clone.
    let null = std::fs::File::open("/dev/null").map_err(io_error("open /dev/null"))?;
    let stdin = high_dup(null.as_fd(), "stdin")?;
    let stdout = high_dup(stdout.as_fd(), "stdout")?;
    let stderr = high_dup(stderr.as_fd(), "stderr")?;
    let (life_r, life_w) = pipe("lifeline")?;
    let (status_r, status_w) = pipe("status")?;
    let life_r = high_dup(life_r.as_fd(), "lifeline")?;
    let status_w = high_dup(status_w.as_fd(), "status")?;

    let program = process.argv[0].clone();
    let cwd_path = process.cwd.clone();
    let cwd = CString::new(process.cwd.as_os_str().as_bytes())
        .map_err(|_| LaunchError::InvalidSpec("cwd contains a NUL byte".into()))?;
    let path = CString::new(program.clone())
        .map_err(|_| LaunchError::InvalidSpec("argv contains a NUL byte".into()))?;
    let argv = CArray::new(process.argv.iter().cloned(), "argv")?;
    let envp = CArray::new(
        process.env.iter().map(|(k, v)| format!("{k}={v}")),
        "the environment",
    )?;
    let init_argv = CArray::new(
        ["clove-init".to_owned(), super::init::ARG.to_owned()],
        "init argv",
    )?;
    let init_envp = CArray::new(Vec::new(), "init env")?;

    let mut moves = [(-1, -1); 9];
    moves[..5].copy_from_slice(&[
        (stdin.as_raw_fd(), 0),
        (stdout.as_raw_fd(), 1),
        (stderr.as_raw_fd(), 2),
        (life_r.as_raw_fd(), LIFELINE_FD),
        (status_w.as_raw_fd(), STATUS_FD),
    ]);
    let mut flags = 0;
    let mut report_r = None;
    let mut control = None;
    // Held until after the clone.
    let mut child_side = Vec::new();
    let plan = if process.sandboxed {
        let spec_fd = high_dup(spec_memfd(&process)?.as_fd(), "spec")?;
        let (rep_r, rep_w) = pipe("report")?;
        let rep_w = high_dup(rep_w.as_fd(), "report")?;
        let exe_fd = high_dup(exe.as_fd(), "kernel executable")?;
        nix::fcntl::fcntl(
            rep_r.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .map_err(|e| io_error("make the report pipe non-blocking")(e.into()))?;
        let (ours, theirs) =
            super::control::pair().map_err(|e| io_error("create the control channel")(e.into()))?;
        let theirs = high_dup(theirs.as_fd(), "control channel")?;
        moves[5] = (spec_fd.as_raw_fd(), SPEC_FD);
        moves[6] = (rep_w.as_raw_fd(), REPORT_FD);
        moves[7] = (theirs.as_raw_fd(), CONTROL_FD);
        moves[8] = (exe_fd.as_raw_fd(), EXE_FD);
        child_side.extend([spec_fd, rep_w, theirs, exe_fd]);
        report_r = Some(rep_r);
        control = Some(ours);
        flags |= libc::CLONE_NEWPID | libc::CLONE_NEWNS | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC;
        ChildPlan {
            moves,
            n_moves: 9,
            cloexec: [EXE_FD, -1, -1],
            n_cloexec: 1,
            first_free: EXE_FD + 1,
            path: std::ptr::null(),
            argv: init_argv.ptrs.as_ptr(),
            envp: init_envp.ptrs.as_ptr(),
            cwd: std::ptr::null(),
            sandboxed: true,
            run_init: false,
            loopback: false,
            netns: -1,
        }
    } else {
        ChildPlan {
            moves,
            n_moves: 5,
            cloexec: [LIFELINE_FD, STATUS_FD, -1],
            n_cloexec: 2,
            first_free: STATUS_FD + 1,
            path: path.as_ptr(),
            argv: argv.ptrs.as_ptr(),
            envp: envp.ptrs.as_ptr(),
            cwd: cwd.as_ptr(),
            sandboxed: false,
            run_init: false,
            loopback: !process.network,
            netns: -1,
        }
    };
    // A private network namespace: for a sandboxed child the one made ahead of time if
    // ready (it joins it before `clone_vfork` returns, so the child is never seen in ours),
    // else a new one from the clone.
    let mut netns = None;
    if !process.network {
        let pool = netns_pool.filter(|_| process.sandboxed);
        match pool.and_then(super::net::NetnsPool::take) {
            Some(fd) => netns = Some(high_dup(fd.as_fd(), "network namespace")?),
            None => flags |= libc::CLONE_NEWNET,
        }
    }
    let plan = ChildPlan {
        netns: netns.as_ref().map_or(-1, AsRawFd::as_raw_fd),
        ..plan
    };

    let mut pidfd: libc::c_int = -1;
    let rc = if process.sandboxed {
        let mut cloned = None;
        if let Some(s) = server.as_ref() {
            let mut fds = [-1; INIT_FDS];
            for (fd, (src, _)) in fds.iter_mut().zip(plan.moves.iter()) {
                *fd = *src;
            }
            let netns = (plan.netns >= 0).then_some(plan.netns);
            match s.fork_init(flags, &fds, netns) {
                Ok((pid, fd)) => {
                    pidfd = fd.into_raw_fd();
                    cloned = Some(libc::c_long::from(pid));
                }
                Err(Failure::Clone(e)) => {
                    let what = "clone into new namespaces";
                    return Err(io_error(what)(e));
                }
                Err(Failure::Gone(why)) => {
                    tracing::warn!("{why}; init execs from now on");
                    if let Some(s) = server.take() {
                        s.stop();
                    }
                }
            }
        }
        match cloned {
            Some(pid) => pid,
            // Init execs right away: share our memory until then instead of copying it.
            None => clone_vfork(flags, &plan, &mut pidfd),
        }
    } else {
        // This child waits for its go byte before it execs, so it cannot borrow our memory
        // the way `clone_vfork` does.
        clone_fork(flags | libc::SIGCHLD, &plan, &mut pidfd)
    };
    if rc < 0 {
        let what = if process.sandboxed || !process.network {
            "clone into new namespaces"
        } else {
            "clone"
        };
        return Err(io_error(what)(io::Error::last_os_error()));
    }
    // SAFETY: CLONE_PIDFD stored a fresh pidfd that nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    drop((stdin, stdout, stderr, life_r, status_w, child_side, netns));
    // Init has exec'd (CLONE_VFORK) and cannot be reaped before we say so: its pid is its.
    let mount_ns = process
        .sandboxed
        .then(|| std::fs::File::open(format!("/proc/{rc}/ns/mnt")).ok())
        .flatten()
        .map(OwnedFd::from);
    Ok(Pending {
        pid: rc as i32,
        fds: Some(PendingFds {
            pidfd,
            lifeline: life_w,
            status: status_r,
            report: report_r,
            control,
            sandboxed: process.sandboxed,
            mount_ns,
            program,
            cwd: cwd_path,
        }),
    })
}

/// Stack of the [`clone_vfork`] child: `child_main` and the system calls it makes need a
/// few KiB; the rest is margin (untouched pages cost nothing).
const VFORK_STACK: usize = 256 << 10;

/// Clones with `CLONE_VM | CLONE_VFORK`, the way `posix_spawn` does: the child runs on its
/// own stack in our address space until its exec, and this thread waits until then. It
/// saves copying the kernel's page tables at the clone and tearing the copy down at the
/// exec; for a child that execs right away that copy is pure overhead. Returns the child's
/// pid, or -1 with `errno` set.
///
/// Every signal is blocked around the clone: a handler of the kernel's (tokio's signal
/// driver) must never run in the child, where it would write into our memory. The child
/// A fork-like clone (no `CLONE_VM`, stack 0: a copy-on-write copy of this process) with
/// `flags | CLONE_PIDFD`, whose child runs only [`child_main`] on `plan`. Returns the clone's
/// result (the child's pid, or -1 with errno set); `pidfd` receives its CLOEXEC pidfd.
pub(crate) fn clone_fork(
    flags: libc::c_int,
    plan: &ChildPlan,
    pidfd: &mut libc::c_int,
) -> libc::c_long {
    // SAFETY: the child of a fork-like clone runs only `child_main`, which makes
    // async-signal-safe calls on memory prepared before the clone and never returns; the
    // parent's memory is not shared.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::CLONE_PIDFD) as libc::c_ulong,
            0 as libc::c_ulong,
            pidfd as *mut libc::c_int,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    if rc == 0 {
        // SAFETY: we are the child of the clone above; see `child_main`.
        unsafe { child_main(plan) }
    }
    rc
}

/// resets every disposition to the default before it unblocks (`reset_signals`).
pub(crate) fn clone_vfork(
    flags: libc::c_int,
    plan: &ChildPlan,
    pidfd: &mut libc::c_int,
) -> libc::c_long {
    let mut stack = vec![0u8; VFORK_STACK];
    // SAFETY: an offset of exactly the allocation's length: one past its end, allowed.
    let top = unsafe { stack.as_mut_ptr().add(VFORK_STACK) };
    // x86_64 and aarch64 want a 16-byte aligned stack pointer.
    let top = ((top as usize) & !15) as *mut libc::c_void;
    // SAFETY: sigset_t is plain old data; sigfillset and pthread_sigmask only write into
    // the sets we own, and change only this thread's mask.
    let old = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        old
    };
    // SAFETY: glibc's clone(3) runs `vfork_child_entry` on `top`, inside the allocation
    // above, which outlives the child's use of it: with CLONE_VFORK this call returns only
    // once the child exec'd or exited. The child reads `plan` (alive for this whole call)
    // and makes only async-signal-safe calls (see `child_main`); it writes nothing of ours
    // but its stack and `errno`. CLONE_PIDFD stores the pidfd through `pidfd`.
    let rc = unsafe {
        libc::clone(
            vfork_child_entry,
            top,
            flags | libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | libc::SIGCHLD,
            (plan as *const ChildPlan).cast_mut().cast(),
            pidfd as *mut libc::c_int,
        )
    };
    let err = io::Error::last_os_error();
    // SAFETY: restores this thread's own mask from a set we own.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    drop(stack);
    if rc < 0 {
        // Restore the clone's errno, which the mask call may have changed.
        // SAFETY: errno is this thread's.
        unsafe { *libc::__errno_location() = err.raw_os_error().unwrap_or(libc::EINVAL) };
    }
    libc::c_long::from(rc)
}

/// The entry point glibc's `clone` calls in the [`clone_vfork`] child.
extern "C" fn vfork_child_entry(plan: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `plan` is the `&ChildPlan` that `clone_vfork` passed, alive until the child
    // exec'd (CLONE_VFORK); we are that clone's child.
    unsafe { child_main(&*plan.cast_const().cast::<ChildPlan>()) }
}

/// The clone child. Async-signal-safe calls only: the parent is multi-threaded and its
/// other threads' locks are frozen in whatever state the clone caught them. The one
/// exception is a plan with `run_init`, which only the single-threaded fork server makes:
/// that child goes on into init's ordinary code.
///
/// # Safety
///
/// Call only in the child of a fork-like clone, with a plan whose pointers are valid.
pub(crate) unsafe fn child_main(plan: &ChildPlan) -> ! {
    // SAFETY: raw system calls on descriptors and memory the plan owns; no allocation, no
    // locks, no return (the whole function).
    unsafe {
        // Iterators rather than slicing: no panic path (which would allocate) in here.
        for &(src, dst) in plan.moves.iter().take(plan.n_moves) {
            if libc::dup2(src, dst) < 0 {
                libc::_exit(126);
            }
        }
        for &fd in plan.cloexec.iter().take(plan.n_cloexec) {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        }
        // The private network namespace made ahead of time; its descriptor (10 or above)
        // goes with the others right below.
        if plan.netns >= 0 && libc::setns(plan.netns, libc::CLONE_NEWNET) < 0 {
            fail(STEP_NETNS, *libc::__errno_location());
        }
        // Every other kernel descriptor (all CLOEXEC anyway) goes now rather than at exec,
        // so a child waiting for its go byte holds nothing of other agents.
        libc::syscall(
            libc::SYS_close_range,
            plan.first_free as libc::c_uint,
            libc::c_uint::MAX,
            0 as libc::c_uint,
        );
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        );
        reset_signals();
        // Its own session: the kernel's terminal signals reach the kernel, not its agents.
        libc::setsid();

        if plan.run_init {
            super::init::main();
        }
        if plan.sandboxed {
            libc::syscall(
                libc::SYS_execveat,
                EXE_FD,
                c"".as_ptr(),
                plan.argv,
                plan.envp,
                libc::AT_EMPTY_PATH,
            );
            fail(STEP_EXEC, *libc::__errno_location());
        }

        // Not sandboxed: wait until the caller placed us in the cgroups.
        let mut byte = 0u8;
        loop {
            let n = libc::read(LIFELINE_FD, (&mut byte as *mut u8).cast(), 1);
            if n == 1 {
                break;
            }
            if n < 0 && *libc::__errno_location() == libc::EINTR {
                continue;
            }
            // The kernel aborted the launch or died.
            libc::_exit(1);
        }
        if plan.loopback {
            if let Err(e) = super::net::loopback_up() {
                fail(STEP_LOOPBACK, e as i32);
            }
        }
        if libc::chdir(plan.cwd) < 0 {
            fail(STEP_CHDIR, *libc::__errno_location());
        }
        libc::execve(plan.path, plan.argv, plan.envp);
        fail(STEP_EXEC, *libc::__errno_location());
    }
}

/// Unblocks every signal and sets every disposition to the default: the mask and ignored
/// dispositions survive exec (Rust ignores SIGPIPE in the kernel, and whoever started the
/// kernel may have ignored more), and an agent must start clean. Raw `rt_sigaction`, because
/// glibc's wrapper refuses its internal signals 32 and 33. Async-signal-safe.
pub(crate) fn reset_signals() {
    // The kernel's `struct sigaction` all zero: SIG_DFL, no flags, empty mask. 32 bytes
    // cover every layout (with or without sa_restorer).
    let dfl = [0u64; 4];
    let empty = 0u64;
    // SAFETY: rt_sigaction(2) and rt_sigprocmask(2) read the buffers above (8-byte sigset).
    // Dispositions first, mask second: a child that starts with every signal blocked (see
    // `clone_vfork`) never runs an inherited handler.
    unsafe {
        for sig in 1..65 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    dfl.as_ptr(),
                    std::ptr::null_mut::<u64>(),
                    8usize,
                );
            }
        }
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &empty as *const u64,
            std::ptr::null_mut::<u64>(),
            8usize,
        );
    }
}

/// Reports a pre-exec failure on the status pipe and exits; async-signal-safe.
fn fail(step: u8, errno: i32) -> ! {
    let e = errno.to_ne_bytes();
    let msg = [b'!', step, e[0], e[1], e[2], e[3]];
    // SAFETY: write(2) of a stack buffer, then _exit(2).
    unsafe {
        libc::write(STATUS_FD, msg.as_ptr().cast(), msg.len());
        libc::_exit(127)
    }
}

#[cfg(test)]
mod tests {
    //! These drive the real launcher on this test binary: init mode re-enters it through
    //! the constructor in `init::test_entry`. A Python probe asserts from inside.

    use super::*;
    use crate::sandbox::mounts::{BindMount, NewFile};
    use std::sync::OnceLock;

    const PY: &str = "/usr/bin/python3.11";
    const WAIT: Duration = Duration::from_secs(30);

    const PROBE: &str = r#"
import errno, json, os, signal, socket, sys, time
mode = sys.argv[1]
if mode == "inspect":
    r = {}
    r["fds"] = sorted(int(f) for f in os.listdir("/proc/self/fd"))
    r["pid"], r["ppid"], r["uid"] = os.getpid(), os.getppid(), os.getuid()
    r["hostname"] = socket.gethostname()
    # An orphan: its parent exits first, so it is reparented to init, which must reap it
    # or it stays in /proc as a zombie.
    child = os.fork()
    if child == 0:
        if os.fork() == 0:
            time.sleep(0.2)
        os._exit(0)
    os.waitpid(child, 0)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        r["procs"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
        if r["procs"] == [1, 2]:
            break
        time.sleep(0.05)
    r["canary_visible"] = os.path.exists(sys.argv[2])
    r["shadow_visible"] = os.path.exists("/etc/shadow")
    def attempt(path):
        try:
            with open(path, "w") as f:
                f.write("written")
            return "ok"
        except OSError as e:
            return errno.errorcode[e.errno]
    for name, path in [("root", "/new-file"), ("tmp", "/tmp/t"), ("shm", "/dev/shm/s"),
                       ("work", "/work/out.txt"), ("data", "/data/new.txt"),
                       ("usr", "/usr/clove-probe"), ("etc", "/etc/new"), ("null", "/dev/null")]:
        r["write_" + name] = attempt(path)
    r["read_data"] = open("/data/hello.txt").read()
    r["dev"] = sorted(os.listdir("/dev"))
    r["root_entries"] = sorted(os.listdir("/"))
    r["passwd"] = open("/etc/passwd").read()
    r["passwd_mode"] = os.stat("/etc/passwd").st_mode & 0o7777
    r["tmp_mode"] = os.stat("/tmp").st_mode & 0o7777
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    c = socket.create_connection(s.getsockname(), timeout=5)
    a, _ = s.accept()
    c.sendall(b"hi")
    r["loopback"] = a.recv(2).decode()
    r["interfaces"] = sorted(n for _, n in socket.if_nameindex())
    r["env"] = dict(os.environ)
    r["cmdline"] = [a.decode() for a in open("/proc/self/cmdline", "rb").read().split(b"\0")[:-1]]
    r["cwd"] = os.getcwd()
    r["cgroup"] = open("/proc/self/cgroup").read().splitlines()
    r["sig"] = {l.split(":")[0]: l.split()[1] for l in open("/proc/self/status") if l.startswith(("SigBlk", "SigIgn"))}
    print(json.dumps(r))
elif mode == "trap":
    signal.signal(signal.SIGTERM, lambda *_: os._exit(3))
    print("ready", flush=True)
    while True:
        time.sleep(1)
elif mode == "sleep":
    print("ready", flush=True)
    while True:
        time.sleep(1)
elif mode == "exit":
    os._exit(int(sys.argv[2]))
elif mode == "selfkill":
    os.kill(os.getpid(), signal.SIGKILL)
elif mode == "host":
    r = {"uid": os.getuid(), "cwd": os.getcwd(), "env": dict(os.environ),
         "interfaces": sorted(n for _, n in socket.if_nameindex()),
         "netns": os.readlink("/proc/self/ns/net"), "pidns": os.readlink("/proc/self/ns/pid")}
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    socket.create_connection(s.getsockname(), timeout=5).close()
    r["loopback"] = True
    print(json.dumps(r))
"#;

    /// `None` (after printing why) when these tests cannot run here.
    fn launcher() -> Option<&'static Launcher> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIP: launching into namespaces needs root");
            return None;
        }
        if !Path::new(PY).exists() {
            eprintln!("SKIP: {PY} is missing (the probe runs on it)");
            return None;
        }
        static LAUNCHER: OnceLock<Launcher> = OnceLock::new();
        Some(LAUNCHER.get_or_init(|| Launcher::start().expect("start the launcher")))
    }

    /// A host directory with everything one launch needs.
    struct Fixture {
        dir: tempfile::TempDir,
    }

    impl Fixture {
        fn new() -> Self {
            Self::in_dir(tempfile::tempdir().expect("tempdir"))
        }

        fn in_dir(dir: tempfile::TempDir) -> Self {
            for sub in ["root", "work", "data"] {
                std::fs::create_dir(dir.path().join(sub)).expect("mkdir");
            }
            std::fs::write(dir.path().join("data/hello.txt"), "hello").expect("write");
            std::fs::write(dir.path().join("probe.py"), PROBE).expect("write");
            std::fs::write(dir.path().join("canary"), "secret").expect("write");
            Self { dir }
        }

        fn path(&self, rel: &str) -> PathBuf {
            self.dir.path().join(rel)
        }

        fn output(&self) -> String {
            std::fs::read_to_string(self.path("stdout")).expect("read stdout")
        }

        fn stderr(&self) -> String {
            std::fs::read_to_string(self.path("stderr")).unwrap_or_default()
        }

        fn bind(
            &self,
            source: impl Into<PathBuf>,
            target: &str,
            writable: bool,
            optional: bool,
        ) -> BindMount {
            BindMount {
                source: source.into(),
                target: target.into(),
                writable,
                optional,
            }
        }

        fn process(&self, args: &[&str]) -> ProcessSpec {
            let mut binds = vec![self.bind("/usr", "/usr", false, false)];
            for system in [
                "/lib",
                "/lib64",
                "/bin",
                "/sbin",
                "/etc/ld.so.cache",
                "/etc/alternatives",
            ] {
                binds.push(self.bind(system, system, false, true));
            }
            binds.extend([
                self.bind(self.path("probe.py"), "/probe/probe.py", false, false),
                self.bind(self.path("work"), "/work", true, false),
                self.bind(self.path("data"), "/data", false, false),
                self.bind("/nonexistent/clove-optional", "/mnt/optional", false, true),
            ]);
            let mut argv = vec![PY.to_owned(), "/probe/probe.py".to_owned()];
            argv.extend(args.iter().map(|a| a.to_string()));
            ProcessSpec {
                sandboxed: true,
                network: false,
                hostname: "probe-host".into(),
                argv,
                env: vec![
                    ("PATH".into(), "/usr/bin:/bin".into()),
                    ("HOME".into(), "/work".into()),
                    ("PYTHONCOERCECLOCALE".into(), "0".into()),
                    ("CLOVE_PROBE".into(), "a value with spaces".into()),
                ],
                cwd: "/work".into(),
                root: Some(RootPlan {
                    new_root: self.path("root"),
                    binds,
                    files: vec![NewFile {
                        target: "/etc/passwd".into(),
                        contents: "root:x:0:0:root:/root:/bin/sh\n".into(),
                        mode: 0o640,
                    }],
                    tmp_size: 8 << 20,
                }),
                lockdown: None,
            }
        }

        fn spec(&self, process: ProcessSpec) -> LaunchSpec {
            let out = std::fs::File::create(self.path("stdout")).expect("stdout");
            let err = std::fs::File::create(self.path("stderr")).expect("stderr");
            LaunchSpec {
                process,
                stdout: out.into(),
                stderr: err.into(),
            }
        }

        /// Nothing of the sandbox is left on the host.
        fn assert_clean(&self, ns: &Namespace) {
            ns.assert_empty();
            let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
            let dir = self.dir.path().to_string_lossy().into_owned();
            assert!(!mounts.contains(&dir), "host mounts under {dir}:\n{mounts}");
            let left: Vec<_> = std::fs::read_dir(self.path("root"))
                .expect("root")
                .collect();
            assert!(
                left.is_empty(),
                "the host's new_root is not empty: {left:?}"
            );
        }

        fn wait_for_ready(&self) {
            let deadline = Instant::now() + WAIT;
            while !self.output().contains("ready") {
                assert!(
                    Instant::now() < deadline,
                    "probe never got ready: {}",
                    self.stderr()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// A namespace of a launched process, to prove nothing is left in it afterwards.
    struct Namespace {
        kind: &'static str,
        link: PathBuf,
    }

    impl Namespace {
        fn of(pid: i32, kind: &'static str) -> Self {
            let link = std::fs::read_link(format!("/proc/{pid}/ns/{kind}")).expect("ns link");
            Self { kind, link }
        }

        fn members(&self) -> Vec<i32> {
            let mut found = Vec::new();
            for entry in std::fs::read_dir("/proc").expect("proc").flatten() {
                let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                    continue;
                };
                if std::fs::read_link(format!("/proc/{pid}/ns/{}", self.kind))
                    .ok()
                    .as_ref()
                    == Some(&self.link)
                {
                    found.push(pid);
                }
            }
            found
        }

        fn assert_empty(&self) {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let left = self.members();
                if left.is_empty() {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "processes left in {:?}: {left:?}",
                    self.link
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// A started launch that is killed and reaped however the test ends.
    struct Run {
        started: Started,
        reaped: bool,
    }

    impl Run {
        fn exit(&mut self) -> AgentExit {
            assert!(
                poll_readable(self.started.pidfd.as_fd(), WAIT).expect("poll"),
                "the agent did not exit within {WAIT:?}"
            );
            let exit = reap(&self.started.pidfd, self.started.report.as_ref()).expect("reap");
            self.reaped = true;
            exit
        }
    }

    impl Drop for Run {
        fn drop(&mut self) {
            if !self.reaped {
                kill_and_reap(&self.started.pidfd);
            }
        }
    }

    /// Spawns and releases; returns the run and the namespace to check afterwards.
    fn start(fx: &Fixture, process: ProcessSpec) -> (Run, Namespace) {
        let launcher = launcher().expect("checked by the caller");
        let kind = if process.sandboxed { "pid" } else { "net" };
        let pending = launcher.spawn(fx.spec(process)).expect("spawn");
        let ns = Namespace::of(pending.pid, kind);
        let started = pending
            .release()
            .unwrap_or_else(|e| panic!("release: {e}; stderr: {}", fx.stderr()));
        (
            Run {
                started,
                reaped: false,
            },
            ns,
        )
    }

    fn json(text: &str) -> serde_json::Value {
        serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text:?}"))
    }

    #[test]
    fn the_launcher_handle_is_shareable() {
        fn shareable<T: Clone + Send + Sync>() {}
        shareable::<Launcher>();
    }

    #[test]
    fn os_errors_read_in_lower_case() {
        assert_eq!(
            os_text(&io::Error::from_raw_os_error(libc::ENOENT)),
            "no such file or directory"
        );
        assert_eq!(os_text(&io::Error::other("custom")), "custom");
    }

    #[test]
    fn specs_that_cannot_run_are_refused_before_cloning() {
        let fx = Fixture::new();
        let base = fx.process(&["inspect"]);
        type Change = fn(&mut ProcessSpec);
        let cases: [(&str, Change); 5] = [
            ("argv is empty", |p| p.argv.clear()),
            ("a sandboxed launch needs a root plan", |p| p.root = None),
            ("an environment name is empty or contains '='", |p| {
                p.env.push(("A=B".into(), "c".into()))
            }),
            ("a root plan needs the sandboxed mode", |p| {
                p.sandboxed = false
            }),
            ("a sandboxed launch needs a hostname", |p| {
                p.hostname.clear()
            }),
        ];
        for (want, change) in cases {
            let mut p = base.clone();
            change(&mut p);
            match check(&p) {
                Err(LaunchError::InvalidSpec(msg)) => assert_eq!(msg, want),
                other => panic!("{want}: got {other:?}"),
            }
        }
        check(&base).expect("the base spec is valid");
    }

    #[test]
    fn the_probe_sees_only_its_sandbox() {
        let Some(_) = launcher() else { return };
        let fx = Fixture::new();
        let canary = fx.path("canary").to_string_lossy().into_owned();
        let (mut run, ns) = start(&fx, fx.process(&["inspect", &canary, "two words"]));
        assert_eq!(run.exit(), AgentExit::code(0), "stderr: {}", fx.stderr());
        let r = json(&fx.output());

        // PID 2 under our init, alone in its pid namespace, with the hostname we set.
        assert_eq!(r["pid"], 2);
        assert_eq!(r["ppid"], 1);
        // Only init and the agent: the orphan it made was reaped by init.
        assert_eq!(r["procs"], serde_json::json!([1, 2]));
        assert_eq!(r["hostname"], "probe-host");
        assert_eq!(r["uid"], 0, "no lockdown in this test");
        // The host is out of sight (the canary exists on the host: checked here).
        assert!(fx.path("canary").exists());
        assert_eq!(r["canary_visible"], false);
        assert_eq!(r["shadow_visible"], false);
        assert_eq!(
            r["root_entries"],
            serde_json::json!([
                "bin", "data", "dev", "etc", "lib", "lib64", "probe", "proc", "sbin", "tmp", "usr",
                "work"
            ])
        );
        // The optional bind whose source is missing was skipped, mount point and all.
        // Read-only where it should be, writable where it should be.
        assert_eq!(r["write_root"], "EROFS");
        assert_eq!(r["write_etc"], "EROFS");
        assert_eq!(r["write_usr"], "EROFS");
        assert_eq!(r["write_data"], "EROFS");
        assert_eq!(r["write_tmp"], "ok");
        assert_eq!(r["write_shm"], "ok");
        assert_eq!(r["write_null"], "ok");
        assert_eq!(r["write_work"], "ok");
        assert_eq!(r["read_data"], "hello");
        assert_eq!(
            std::fs::read_to_string(fx.path("work/out.txt")).expect("rw bind"),
            "written"
        );
        assert!(!fx.path("data/new.txt").exists());
        assert_eq!(r["tmp_mode"], 0o1777);
        assert_eq!(r["passwd"], "root:x:0:0:root:/root:/bin/sh\n");
        assert_eq!(r["passwd_mode"], 0o640);
        assert_eq!(
            r["dev"],
            serde_json::json!([
                "fd", "full", "null", "ptmx", "pts", "random", "shm", "stderr", "stdin", "stdout",
                "tty", "urandom", "zero"
            ])
        );
        // Its own network namespace: loopback works and is all there is.
        assert_eq!(r["loopback"], "hi");
        assert_eq!(r["interfaces"], serde_json::json!(["lo"]));
        // Exactly the argv, environment and cwd given; nothing but stdio inherited (the
        // fourth descriptor is the probe's own listing of /proc/self/fd).
        assert_eq!(
            r["cmdline"],
            serde_json::json!([PY, "/probe/probe.py", "inspect", canary, "two words"])
        );
        assert_eq!(
            r["env"],
            serde_json::json!({
                "PATH": "/usr/bin:/bin",
                "HOME": "/work",
                "PYTHONCOERCECLOCALE": "0",
                "CLOVE_PROBE": "a value with spaces",
            })
        );
        assert_eq!(r["cwd"], "/work");
        assert_eq!(r["fds"], serde_json::json!([0, 1, 2, 3]));
        // Nothing blocked, nothing ignored but what Python ignores itself (SIGPIPE and
        // SIGXFSZ): neither init's mask nor the kernel's ignored SIGPIPE leaked.
        assert_eq!(
            r["sig"],
            serde_json::json!({"SigBlk": "0000000000000000", "SigIgn": "0000000001001000"})
        );
        // Its cgroup namespace is rooted at the cgroups it was started in.
        let cgroups = r["cgroup"].as_array().expect("cgroup lines");
        assert!(!cgroups.is_empty());
        for line in cgroups {
            assert!(line.as_str().is_some_and(|l| l.ends_with(":/")), "{line}");
        }
        fx.assert_clean(&ns);
    }

    #[test]
    fn sigterm_reaches_the_agent_through_init() {
        let Some(_) = launcher() else { return };
        let fx = Fixture::new();
        let (mut run, ns) = start(&fx, fx.process(&["trap"]));
        fx.wait_for_ready();
        signal(&run.started.pidfd, Signal::SIGTERM).expect("signal");
        assert_eq!(run.exit(), AgentExit::code(3), "stderr: {}", fx.stderr());
        fx.assert_clean(&ns);
    }

    #[test]
    fn sigkill_to_init_reports_signal_9() {
        let Some(_) = launcher() else { return };
        let fx = Fixture::new();
        let (mut run, ns) = start(&fx, fx.process(&["sleep"]));
        fx.wait_for_ready();
        signal(&run.started.pidfd, Signal::SIGKILL).expect("signal");
        assert_eq!(run.exit(), AgentExit::signal(9));
        fx.assert_clean(&ns);
    }

    #[test]
    fn exit_137_is_a_code_and_a_self_kill_is_a_signal() {
        let Some(_) = launcher() else { return };
        let fx = Fixture::new();
        let (mut run, ns) = start(&fx, fx.process(&["exit", "137"]));
        assert_eq!(run.exit(), AgentExit::code(137));
        fx.assert_clean(&ns);

        let (mut run, ns) = start(&fx, fx.process(&["selfkill"]));
        assert_eq!(run.exit(), AgentExit::signal(9));
        fx.assert_clean(&ns);
    }

    fn release_error(fx: &Fixture, process: ProcessSpec) -> String {
        let launcher = launcher().expect("checked by the caller");
        let pending = launcher.spawn(fx.spec(process)).expect("spawn");
        let ns = Namespace::of(pending.pid, "pid");
        let err = pending.release().expect_err("release must fail");
        fx.assert_clean(&ns);
        err.to_string()
    }

    #[test]
    fn a_missing_bind_source_fails_the_release_with_its_path() {
        let Some(_) = launcher() else { return };
        let fx = Fixture::new();
        let mut process = fx.process(&["inspect"]);
        if let Some(root) = process.root.as_mut() {
            root.binds
                .push(fx.bind("/nonexistent/clove-data", "/mnt/data", false, false));
        }
        assert_eq!(
            release_error(&fx, process),
            "bind /nonexistent/clove-data -> /mnt/data: no such file or directory"
        );
        // Init said so on the agent's stderr too.
        assert!(fx
            .stderr()
            .contains("clove-init: bind /nonexistent/clove-data"));
    }

    #[test]
    fn a_missing_program_fails_the_release_with_the_exec_error() {
        let Some(_) = launcher() else { return };
        let fx = Fixture::new();
        let mut process = fx.process(&[]);
        process.argv[0] = "/usr/bin/clove-no-such-program".into();
        assert_eq!(
            release_error(&fx, process),
            "exec /usr/bin/clove-no-such-program: no such file or directory"
        );
    }

    /// The unit tests' init is this test binary (see `init::test_entry`); this one runs the
    /// real kernel binary, entering init mode through `main.rs`. Cargo builds it for the
    /// integration tests in kernel/tests.
    #[test]
    fn the_kernel_binary_serves_as_init() {
        let Some(_) = launcher() else { return };
        let test_exe = std::env::current_exe().expect("exe");
        let Some(kernel) = test_exe
            .parent()
            .and_then(Path::parent)
            .map(|d| d.join("clove-kernel"))
        else {
            return;
        };
        // Stale if any source of the launch protocol changed after it was linked.
        let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        let sources = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/sandbox");
        let newest_source = std::fs::read_dir(&sources)
            .expect("sources")
            .flatten()
            .filter_map(|e| modified(&e.path()))
            .max();
        match (modified(&kernel), newest_source) {
            (Some(k), Some(s)) if k >= s => {}
            _ => {
                eprintln!(
                    "SKIP: {} is missing or older than its sources",
                    kernel.display()
                );
                return;
            }
        }
        let launcher = Launcher::with_program(&kernel).expect("launcher");
        let fx = Fixture::new();
        let pending = launcher
            .spawn(fx.spec(fx.process(&["exit", "7"])))
            .expect("spawn");
        let ns = Namespace::of(pending.pid, "pid");
        let mut run = Run {
            started: pending.release().expect("release"),
            reaped: false,
        };
        assert_eq!(run.exit(), AgentExit::code(7), "stderr: {}", fx.stderr());
        fx.assert_clean(&ns);
    }

    #[test]
    fn dropping_the_lifeline_kills_the_sandbox() {
        let Some(_) = launcher() else { return };
        let fx = Fixture::new();
        let (mut run, ns) = start(&fx, fx.process(&["sleep"]));
        fx.wait_for_ready();
        assert_eq!(ns.members().len(), 2, "init and the agent");
        drop(run.started.lifeline.take());
        assert_eq!(run.exit(), AgentExit::code(128 + 9));
        fx.assert_clean(&ns);
    }

    #[test]
    fn abort_kills_the_pending_child() {
        let Some(launcher) = launcher() else { return };
        let fx = Fixture::new();
        let pending = launcher
            .spawn(fx.spec(fx.process(&["sleep"])))
            .expect("spawn");
        let ns = Namespace::of(pending.pid, "pid");
        assert_eq!(ns.members(), vec![pending.pid]);
        pending.abort();
        fx.assert_clean(&ns);
        assert_eq!(fx.output(), "", "the agent never ran");
    }

    #[test]
    fn unsandboxed_runs_as_the_kernel_in_its_own_net_namespace() {
        let Some(_) = launcher() else { return };
        let fx = Fixture::new();
        let process = ProcessSpec {
            sandboxed: false,
            network: false,
            hostname: String::new(),
            argv: vec![
                PY.into(),
                fx.path("probe.py").to_string_lossy().into(),
                "host".into(),
            ],
            env: vec![
                ("PYTHONCOERCECLOCALE".into(), "0".into()),
                ("ONLY".into(), "this".into()),
            ],
            cwd: fx.path("work"),
            root: None,
            lockdown: None,
        };
        let (mut run, ns) = start(&fx, process);
        assert!(run.started.report.is_none() && run.started.lifeline.is_none());
        assert_eq!(run.exit(), AgentExit::code(0), "stderr: {}", fx.stderr());
        let r = json(&fx.output());
        assert_eq!(r["uid"], 0);
        assert_eq!(r["cwd"], fx.path("work").to_string_lossy().as_ref());
        assert_eq!(
            r["env"],
            serde_json::json!({"PYTHONCOERCECLOCALE": "0", "ONLY": "this"})
        );
        assert_eq!(r["interfaces"], serde_json::json!(["lo"]));
        assert_eq!(r["loopback"], true);
        let host_net = std::fs::read_link("/proc/self/ns/net").expect("ns");
        let host_pid = std::fs::read_link("/proc/self/ns/pid").expect("ns");
        assert_ne!(r["netns"], host_net.to_string_lossy().as_ref());
        assert_eq!(r["pidns"], host_pid.to_string_lossy().as_ref());
        ns.assert_empty();
    }

    #[test]
    fn unsandboxed_exec_failure_names_the_program() {
        let Some(launcher) = launcher() else { return };
        let fx = Fixture::new();
        let process = ProcessSpec {
            sandboxed: false,
            network: true,
            hostname: String::new(),
            argv: vec!["/nonexistent/clove-program".into()],
            env: vec![],
            cwd: "/".into(),
            root: None,
            lockdown: None,
        };
        let pending = launcher.spawn(fx.spec(process)).expect("spawn");
        let pidfd = pending
            .pidfd()
            .expect("pidfd")
            .try_clone_to_owned()
            .expect("dup");
        let err = pending.release().expect_err("must fail");
        assert_eq!(
            err.to_string(),
            "exec /nonexistent/clove-program: no such file or directory"
        );
        // Reaped by release: nothing left to wait for.
        assert!(wait_pidfd(pidfd.as_fd(), libc::WNOHANG).is_err());
    }

    /// Makes this process the reaper of its orphaned descendants while alive.
    struct Subreaper;

    impl Subreaper {
        fn set() -> Self {
            // SAFETY: prctl(2) on our own process.
            let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
            assert_eq!(
                rc,
                0,
                "PR_SET_CHILD_SUBREAPER: {}",
                io::Error::last_os_error()
            );
            Self
        }
    }

    impl Drop for Subreaper {
        fn drop(&mut self) {
            // SAFETY: as above.
            unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) };
        }
    }

    /// The kernel process itself dies (no destructors): PR_SET_PDEATHSIG and the lifeline
    /// take the sandbox down. A re-exec of this test plays the kernel.
    #[test]
    fn the_kernel_dying_kills_the_sandbox() {
        const ROLE: &str = "CLOVE_LAUNCH_TEST_DYING_KERNEL";
        if let Some(dir) = std::env::var_os(ROLE) {
            // The dying kernel: start a sandbox, say its pid, exit once told to.
            let fx = Fixture::in_dir(tempfile::TempDir::new_in(dir).expect("dir"));
            let launcher = launcher().expect("root");
            let started = launcher
                .spawn(fx.spec(fx.process(&["sleep"])))
                .and_then(Pending::release)
                .expect("start");
            fx.wait_for_ready();
            println!("INIT {}", started.pid);
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
            std::process::exit(0);
        }
        let Some(_) = launcher() else { return };
        // The orphaned init is reparented to us rather than to a host PID 1 that may never
        // reap it, so the test leaves no zombie.
        let _subreaper = Subreaper::set();
        let dir = tempfile::tempdir().expect("dir");
        let mut kernel = std::process::Command::new(std::env::current_exe().expect("exe"))
            .args([
                "--exact",
                "sandbox::launch::tests::the_kernel_dying_kills_the_sandbox",
            ])
            .args(["--nocapture", "--test-threads=1"])
            .env(ROLE, dir.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("re-exec");
        let mut out = std::io::BufReader::new(kernel.stdout.take().expect("stdout"));
        let mut line = String::new();
        let init_pid = loop {
            line.clear();
            let n = std::io::BufRead::read_line(&mut out, &mut line).expect("read");
            if n == 0 {
                drop(kernel.stdin.take());
                let _ = kernel.wait();
                panic!("the dying kernel never reported its sandbox");
            }
            // libtest's "test ... " prefix shares the line.
            if let Some(pid) = line.split("INIT ").nth(1) {
                break pid.trim().parse::<i32>().expect("pid");
            }
        };
        // SAFETY: pidfd_open(2) of a live process; the fd is owned below.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, init_pid, 0) };
        assert!(fd >= 0, "pidfd_open: {}", io::Error::last_os_error());
        // SAFETY: a fresh descriptor.
        let init = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
        let ns = Namespace::of(init_pid, "pid");
        assert_eq!(ns.members().len(), 2, "init and the agent");
        drop(kernel.stdin.take());
        assert!(kernel.wait().expect("wait").success());
        assert!(
            poll_readable(init.as_fd(), WAIT).expect("poll"),
            "init outlived the kernel"
        );
        // Killed by PR_SET_PDEATHSIG or, if the lifeline's EOF came first, by itself.
        let exit = wait_pidfd(init.as_fd(), 0).expect("reap the orphaned init");
        assert!(
            exit == Some(AgentExit::signal(9)) || exit == Some(AgentExit::code(128 + 9)),
            "{exit:?}"
        );
        ns.assert_empty();
    }
}
