//! PID 1 of an agent's sandbox (DESIGN.md, "Spawning an agent", steps 3 to 5).
//!
//! The launcher clones into fresh namespaces and execs the kernel binary with
//! `argv[1] == "__clove_init"`; `main.rs` sends that straight here, before flag parsing. After
//! that exec this is an ordinary single-threaded process, so unlike the clone child it may
//! allocate, fork and run the privileges code freely.
//!
//! It owns the inside of the launch: it reads its [`ProcessSpec`], sets the hostname, builds
//! the root ([`mounts`]) and brings loopback up ([`net`]) while the kernel places it into the
//! agent's cgroups (none of that runs agent code), then waits for the kernel's go byte (the
//! placement is done by then), enters a cgroup namespace rooted at that cgroup, and forks the
//! agent, which locks itself down and execs. It then stays PID 1: it forwards the usual
//! termination signals to the agent, reaps every zombie (orphans reparent to it), and when
//! the agent exits it relays the agent's wait status to the kernel and exits with the same
//! code (or 128 + signal). If the kernel's end of the lifeline closes, the kernel died: it
//! kills everything and exits.
//!
//! It also runs the agent's EXEC commands, on the kernel's word through the control channel
//! ([`control`](super::control)): each is forked by the same code as the agent
//! ([`start_child`]), so it has the agent's uid, lockdown and environment, inside the
//! agent's namespaces and cgroup. Init tells the kernel when one started and when it ended,
//! kills its process group on the kernel's word and when it ends, and never takes an EXEC
//! command's exit for the agent's.
//!
//! Descriptors, as the launcher lays them out: 0 `/dev/null`, 1 and 2 the agent's output,
//! then [`LIFELINE_FD`], [`STATUS_FD`], [`SPEC_FD`], [`REPORT_FD`], [`CONTROL_FD`].
//!
//! [`mounts`]: super::mounts
//! [`net`]: super::net

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{ForkResult, Pid};

use super::control::{self, ExecOrder, FromInit, ToInit};
use super::launch::{
    os_text, AgentExit, ProcessSpec, CONTROL_FD, LIFELINE_FD, REPORT_FD, SPEC_FD, STATUS_FD,
};
use super::privileges::{self, Applied, Lockdown};

/// `argv[1]` that turns the kernel binary into init; not a user-facing flag.
pub const ARG: &str = "__clove_init";

/// Init's one message to the kernel on the status pipe.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) enum InitStatus {
    /// The agent was exec'd.
    Started {
        /// What its lockdown put in force.
        applied: Option<Applied>,
    },
    /// Setup failed; the agent never ran.
    Failed {
        /// `bind /data -> /mnt/data: no such file or directory`, ...
        error: String,
    },
}

/// What a child's side (the agent's, an EXEC command's) tells init before exec, one JSON
/// line each.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
enum AgentNote {
    Applied(Applied),
    Failed(Failure),
}

/// Why a child never ran its program.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Failure {
    /// `exec /usr/bin/x: no such file or directory`, `lock down: setresuid 1: ...`.
    error: String,
    /// The errno behind it.
    errno: Option<i32>,
}

impl Failure {
    fn new(error: String, errno: Option<i32>) -> Self {
        Self { error, errno }
    }

    fn os(what: String, e: nix::errno::Errno) -> Self {
        Self::new(format!("{what}: {}", os_text(&e.into())), Some(e as i32))
    }
}

/// Signals the kernel (or a shell, `kill` on init's pid) sends to stop or poke the agent.
const FORWARDED: [Signal; 6] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// Init mode's entry point; never returns.
pub fn main() -> ! {
    let Some(fds) = Fds::take() else {
        eprintln!("clove-kernel: {ARG} is internal: only the kernel's launcher starts it");
        std::process::exit(2);
    };
    match setup(&fds) {
        Ok((agent, spec)) => {
            let Fds {
                lifeline,
                mut status,
                report,
                control,
                signals,
                ..
            } = fds;
            let _ = send(
                &mut status,
                &InitStatus::Started {
                    applied: agent.applied,
                },
            );
            // EOF tells the kernel the message is complete.
            drop(status);
            Supervisor {
                agent: agent.pid,
                spec,
                lifeline,
                signals,
                report,
                control: Some(control),
                execs: HashMap::new(),
            }
            .run()
        }
        Err(error) => {
            eprintln!("clove-init: {error}");
            let mut status = fds.status;
            let _ = send(&mut status, &InitStatus::Failed { error });
            std::process::exit(127)
        }
    }
}

/// Init's descriptors, owned.
struct Fds {
    lifeline: File,
    status: File,
    spec: File,
    report: File,
    control: OwnedFd,
    signals: SignalFd,
}

impl Fds {
    /// Takes over the launcher's descriptors; `None` when this is not the launcher's
    /// child (someone ran the binary in init mode by hand): then nothing is touched.
    fn take() -> Option<Self> {
        // The launcher always starts init as PID 1 of a new pid namespace, with three pipes,
        // the spec memfd and the control socket at fixed numbers.
        if std::process::id() != 1 {
            return None;
        }
        let is = |fd: RawFd, kind: libc::mode_t| {
            nix::sys::stat::fstat(fd).is_ok_and(|st| st.st_mode & libc::S_IFMT == kind)
        };
        let laid_out = is(LIFELINE_FD, libc::S_IFIFO)
            && is(STATUS_FD, libc::S_IFIFO)
            && is(SPEC_FD, libc::S_IFREG)
            && is(REPORT_FD, libc::S_IFIFO)
            && is(CONTROL_FD, libc::S_IFSOCK);
        if !laid_out {
            return None;
        }
        let fixed = [LIFELINE_FD, STATUS_FD, SPEC_FD, REPORT_FD, CONTROL_FD];
        for fd in fixed {
            // Nothing of these may leak into the agent.
            // SAFETY: F_SETFD on a descriptor checked open above.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
        // Anything else the kernel leaked has no business here.
        close_from(CONTROL_FD + 1);
        let own = |fd: RawFd| {
            // SAFETY: each fixed descriptor is open (checked) and owned by nothing else in
            // this freshly exec'd process.
            File::from(unsafe { OwnedFd::from_raw_fd(fd) })
        };
        // Blocked, the signals queue for the signalfd instead of running default actions;
        // a blocked signal is also never dropped by PID 1's "no handler, ignore" rule.
        let mut mask = SigSet::empty();
        for sig in FORWARDED {
            mask.add(sig);
        }
        mask.add(Signal::SIGCHLD);
        let signals = mask.thread_block().and_then(|()| {
            SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        });
        let signals = match signals {
            Ok(s) => s,
            Err(e) => {
                eprintln!("clove-init: signalfd: {e}");
                std::process::exit(127);
            }
        };
        Some(Self {
            lifeline: own(LIFELINE_FD),
            status: own(STATUS_FD),
            spec: own(SPEC_FD),
            report: own(REPORT_FD),
            control: own(CONTROL_FD).into(),
            signals,
        })
    }
}

/// Closes every descriptor from `first` up.
pub(crate) fn close_from(first: RawFd) {
    // SAFETY: close_range(2) on our own table.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            0 as libc::c_uint,
        )
    };
    if rc < 0 {
        // Before Linux 5.9: the launcher's descriptors are CLOEXEC, so this is hygiene only.
        for fd in first..1024 {
            // SAFETY: closing descriptors nothing in this process owns yet.
            unsafe { libc::close(fd) };
        }
    }
}

fn send(status: &mut File, message: &InitStatus) -> std::io::Result<()> {
    let json = serde_json::to_vec(message).map_err(std::io::Error::other)?;
    status.write_all(&json)
}

/// The agent, running.
struct Agent {
    pid: Pid,
    applied: Option<Applied>,
}

/// Everything up to the agent's exec; the error text goes to the kernel verbatim.
fn setup(fds: &Fds) -> Result<(Agent, ProcessSpec), String> {
    // SAFETY: umask(2) cannot fail. 022: the mount points and files made here must be
    // traversable and readable by the agent's uid; the agent inherits it too.
    unsafe { libc::umask(0o022) };
    // A vanished reader must be an error, not a silent death.
    // SAFETY: setting SIG_IGN installs no handler code.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };

    // Everything that needs no cgroup placement happens while the kernel places us: the
    // root, the hostname, loopback. None of it runs agent code, and the little memory it
    // takes (the root's mount points and small files) is the kernel's to account for.
    let prepared = prepare(fds);

    // The go byte: the kernel has placed us into the agent's cgroups. A failure above is
    // reported only now, so the kernel, which reads the status after the go byte, gets it
    // as the spawn error, exactly as if it had happened after placement.
    let mut byte = [0u8; 1];
    match (&fds.lifeline).read(&mut byte) {
        Ok(1) => {}
        // The kernel aborted the launch or died; nobody is listening.
        _ => std::process::exit(1),
    }
    let spec = prepared?;

    // Now the current cgroup is the agent's: make it the root of what the agent sees.
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWCGROUP)
        .map_err(|e| format!("unshare the cgroup namespace: {}", os_text(&e.into())))?;
    let agent = spawn_agent(&spec)?;
    Ok((agent, spec))
}

/// Reads the spec and builds the sandbox around init: hostname, root file system (pivoted
/// into), loopback. Runs before the go byte, so it must not start anything of the agent.
fn prepare(fds: &Fds) -> Result<ProcessSpec, String> {
    let mut json = Vec::new();
    (&fds.spec)
        .read_to_end(&mut json)
        .map_err(|e| format!("read the spec: {}", os_text(&e)))?;
    let spec: ProcessSpec =
        serde_json::from_slice(&json).map_err(|e| format!("parse the spec: {e}"))?;
    nix::unistd::sethostname(&spec.hostname)
        .map_err(|e| format!("sethostname {}: {}", spec.hostname, os_text(&e.into())))?;
    let plan = spec
        .root
        .as_ref()
        .ok_or_else(|| "the spec has no root plan".to_owned())?;
    super::mounts::build_root(plan).map_err(|e| e.to_string())?;
    if !spec.network {
        super::net::loopback_up()
            .map_err(|e| format!("bring loopback up: {}", os_text(&e.into())))?;
    }
    Ok(spec)
}

/// Forks the agent and waits until it exec'd or reported why it could not.
fn spawn_agent(spec: &ProcessSpec) -> Result<Agent, String> {
    let child = Child::new(
        &spec.argv,
        spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        &spec.cwd.to_string_lossy(),
        spec.lockdown.as_ref(),
        None,
    )
    .map_err(|f| f.error)?;
    let (pid, applied) = start_child(&child).map_err(|f| f.error)?;
    Ok(Agent { pid, applied })
}

/// What a child of init runs, prepared before the fork: the agent itself, or one of its EXEC
/// commands. Both go through [`start_child`], so an EXEC command gets exactly the agent's
/// identity and lockdown.
struct Child<'a> {
    /// Where to look for the program: `argv[0]` itself when it has a slash, else each
    /// directory of the environment's `PATH`.
    candidates: Vec<CString>,
    /// `argv[0]` as given, for messages.
    program: String,
    argv: Vec<CString>,
    env: Vec<CString>,
    cwd: CString,
    lockdown: Option<&'a Lockdown>,
    /// The child's stdout and stderr; `None`: init's own (the agent's output log).
    output: Option<(RawFd, RawFd)>,
}

impl<'a> Child<'a> {
    fn new<'e>(
        argv: &[String],
        env: impl IntoIterator<Item = (&'e str, &'e str)>,
        cwd: &str,
        lockdown: Option<&'a Lockdown>,
        output: Option<(RawFd, RawFd)>,
    ) -> Result<Self, Failure> {
        let invalid =
            |what: &str| Failure::new(format!("{what} contains a NUL byte"), Some(libc::EINVAL));
        let cstr = |s: &str, what: &str| CString::new(s).map_err(|_| invalid(what));
        let program = argv.first().cloned().unwrap_or_default();
        if program.is_empty() {
            return Err(Failure::new("argv is empty".into(), Some(libc::EINVAL)));
        }
        let mut path_var = None;
        let mut env_c = Vec::new();
        for (k, v) in env {
            if k == "PATH" {
                path_var = Some(v.to_owned());
            }
            env_c.push(cstr(&format!("{k}={v}"), "the environment")?);
        }
        let candidates = if program.contains('/') {
            vec![cstr(&program, "argv")?]
        } else {
            path_var
                .as_deref()
                .unwrap_or("/usr/bin:/bin")
                .split(':')
                .filter(|d| !d.is_empty())
                .map(|d| cstr(&format!("{}/{program}", d.trim_end_matches('/')), "PATH"))
                .collect::<Result<_, _>>()?
        };
        Ok(Self {
            candidates,
            argv: argv
                .iter()
                .map(|a| cstr(a, "argv"))
                .collect::<Result<_, _>>()?,
            program,
            env: env_c,
            cwd: cstr(cwd, "cwd")?,
            lockdown,
            output,
        })
    }
}

/// Forks `child` and waits until it exec'd (its pid, and what its lockdown put in force) or
/// reported why it could not (then it is reaped).
fn start_child(child: &Child<'_>) -> Result<(Pid, Option<Applied>), Failure> {
    let (notes_r, notes_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| Failure::os("create the note pipe".into(), e))?;
    // SAFETY: init is single-threaded, so the child may run ordinary code.
    match unsafe { nix::unistd::fork() } {
        Err(e) => Err(Failure::os(format!("fork {}", child.program), e)),
        Ok(ForkResult::Child) => {
            drop(notes_r);
            child_main(child, File::from(notes_w))
        }
        Ok(ForkResult::Parent { child: pid }) => {
            drop(notes_w);
            let mut text = String::new();
            // EOF: the child exec'd (the pipe is CLOEXEC) or exited.
            let _ = File::from(notes_r).read_to_string(&mut text);
            let mut applied = None;
            for line in text.lines() {
                match serde_json::from_str::<AgentNote>(line) {
                    Ok(AgentNote::Applied(a)) => applied = Some(a),
                    Ok(AgentNote::Failed(failure)) => {
                        let _ = waitpid(pid, None);
                        return Err(failure);
                    }
                    Err(e) => {
                        return Err(Failure::new(
                            format!("unreadable note from the child: {e}"),
                            None,
                        ))
                    }
                }
            }
            Ok((pid, applied))
        }
    }
}

/// The child's side of the fork: signal state, session, cwd, stdout and stderr, lockdown,
/// exec. The agent and every EXEC command go through here.
fn child_main(child: &Child<'_>, notes: File) -> ! {
    let fail = |failure: Failure| -> ! {
        note(&notes, &AgentNote::Failed(failure));
        // SAFETY: _exit(2): skip atexit handlers and stdio flushing that belong to init.
        unsafe { libc::_exit(127) }
    };
    // Default dispositions and an empty mask: init's blocked set and ignored SIGPIPE
    // would otherwise survive the exec.
    super::launch::reset_signals();
    // Its own session and process group: the kernel (through init) signals it as a group.
    if let Err(e) = nix::unistd::setsid() {
        fail(Failure::os("setsid".into(), e));
    }
    if let Err(e) = nix::unistd::chdir(child.cwd.as_c_str()) {
        fail(Failure::os(
            format!("chdir {}", child.cwd.to_string_lossy()),
            e,
        ));
    }
    if let Some((out, err)) = child.output {
        // stdin stays init's /dev/null.
        for (from, to) in [(out, 1), (err, 2)] {
            if let Err(e) = nix::unistd::dup2(from, to) {
                fail(Failure::os("set up stdout and stderr".into(), e));
            }
        }
    }
    // Only 0, 1 and 2 reach the program; the note pipe (already CLOEXEC) stays usable.
    // SAFETY: close_range(2) with CLOSE_RANGE_CLOEXEC only flags our own descriptors.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if rc < 0 {
        for fd in 3..1024 {
            // SAFETY: F_SETFD only flags the descriptor.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
    }
    if let Some(lockdown) = child.lockdown {
        match privileges::lock_down(lockdown) {
            Ok(applied) => note(&notes, &AgentNote::Applied(applied)),
            Err(e) => fail(Failure::new(
                format!("lock down: {}: {}", e.step, os_text(&e.source)),
                e.source.raw_os_error(),
            )),
        }
    }
    // As execvp(3) does: a missing candidate moves on to the next, a permission error is
    // remembered, any other error ends the search.
    let mut cause = nix::errno::Errno::ENOENT;
    let mut denied = false;
    for path in &child.candidates {
        let e = match nix::unistd::execve(path, &child.argv, &child.env) {
            Ok(never) => match never {},
            Err(e) => e,
        };
        match e {
            nix::errno::Errno::ENOENT | nix::errno::Errno::ENOTDIR => {}
            nix::errno::Errno::EACCES => denied = true,
            other => {
                cause = other;
                break;
            }
        }
    }
    if denied && cause == nix::errno::Errno::ENOENT {
        cause = nix::errno::Errno::EACCES;
    }
    fail(Failure::os(format!("exec {}", child.program), cause))
}

/// One JSON line to init.
fn note(mut notes: &File, note: &AgentNote) {
    if let Ok(line) = serde_json::to_string(note) {
        let _ = writeln!(notes, "{line}");
    }
}

/// PID 1 once the agent runs.
struct Supervisor {
    agent: Pid,
    spec: ProcessSpec,
    lifeline: File,
    signals: SignalFd,
    report: File,
    /// `None` once the kernel's end closed (the kernel let go of this run).
    control: Option<OwnedFd>,
    /// The running EXEC commands: pid (and process group) to the kernel's request id.
    execs: HashMap<Pid, u64>,
}

impl Supervisor {
    /// PID 1's loop; exits the process.
    fn run(mut self) -> ! {
        loop {
            // The agent may have exited before we got here: check before the first sleep.
            let (agent_exit, exec_exits) = reap_all(self.agent);
            for (pid, exit) in exec_exits {
                self.exec_ended(pid, exit);
            }
            if let Some(exit) = agent_exit {
                let _ = self
                    .report
                    .write_all(&serde_json::to_vec(&exit).unwrap_or_default());
                // Every EXEC command goes with the agent; the kernel learns it from the
                // control channel closing with this process.
                kill_everyone();
                std::process::exit(match exit {
                    AgentExit {
                        code: Some(code), ..
                    } => code,
                    AgentExit {
                        signal: Some(sig), ..
                    } => 128 + sig,
                    _ => 127,
                });
            }
            let control_fd = self.control.as_ref().map_or(-1, AsRawFd::as_raw_fd);
            let mut fds = [
                libc::pollfd {
                    fd: self.signals.as_fd().as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: self.lifeline.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                // A negative fd is skipped by poll(2).
                libc::pollfd {
                    fd: control_fd,
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // SAFETY: three pollfds we own.
            let rc = unsafe { libc::poll(fds.as_mut_ptr(), 3, -1) };
            if rc < 0 {
                continue;
            }
            if fds[1].revents != 0 {
                let mut buf = [0u8; 64];
                match (&self.lifeline).read(&mut buf) {
                    Ok(n) if n > 0 => {}
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    // EOF (or a broken pipe): the kernel is gone and must not leave orphans.
                    _ => {
                        kill_everyone();
                        std::process::exit(128 + libc::SIGKILL);
                    }
                }
            }
            if fds[0].revents != 0 {
                while let Ok(Some(info)) = self.signals.read_signal() {
                    let sig = info.ssi_signo as libc::c_int;
                    if sig != libc::SIGCHLD {
                        // SAFETY: kill(2) on the agent's pid; it is not reaped until
                        // reap_all sees it, so the pid cannot have been reused.
                        unsafe { libc::kill(self.agent.as_raw(), sig) };
                    }
                }
            }
            if fds[2].revents != 0 {
                self.serve_control();
            }
        }
    }

    /// One message from the kernel.
    fn serve_control(&mut self) {
        let Some(control) = &self.control else {
            return;
        };
        let (bytes, fds) = match control::recv(control.as_fd(), nix::sys::socket::MsgFlags::empty())
        {
            Ok(Some(got)) => got,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return,
            // The kernel let go of this run's channel; the lifeline still says whether it
            // lives.
            Ok(None) | Err(_) => {
                self.control = None;
                return;
            }
        };
        match serde_json::from_slice::<ToInit>(&bytes) {
            Ok(ToInit::Exec(order)) => {
                let id = order.id;
                let answer = match self.start_exec(&order, &fds) {
                    Ok(pid) => {
                        self.execs.insert(pid, id);
                        FromInit::Started {
                            id,
                            pid: pid.as_raw(),
                        }
                    }
                    Err(f) => FromInit::Failed {
                        id,
                        error: f.error,
                        errno: f.errno,
                    },
                };
                // The pipes are the child's now (or nobody's).
                drop(fds);
                self.answer(&answer);
            }
            Ok(ToInit::Kill { id }) => {
                if let Some((pid, _)) = self.execs.iter().find(|(_, i)| **i == id) {
                    // SAFETY: kill(2) of the group this unreaped command leads.
                    unsafe { libc::kill(-pid.as_raw(), libc::SIGKILL) };
                }
            }
            Err(e) => eprintln!("clove-init: unreadable control message: {e}"),
        }
    }

    /// Forks an EXEC command as the agent was forked: same identity, lockdown, environment.
    fn start_exec(&self, order: &ExecOrder, fds: &[OwnedFd]) -> Result<Pid, Failure> {
        let [out, err] = fds else {
            return Err(Failure::new(
                format!("expected stdout and stderr, got {} descriptors", fds.len()),
                Some(libc::EINVAL),
            ));
        };
        // Default: where the agent is now, else where it started.
        let cwd = match &order.cwd {
            Some(cwd) => cwd.clone(),
            None => std::fs::read_link(format!("/proc/{}/cwd", self.agent))
                .unwrap_or_else(|_| self.spec.cwd.clone())
                .to_string_lossy()
                .into_owned(),
        };
        // The agent's environment, then the request's, which cannot change the agent's
        // identity (`CLOVE_*`).
        let mut env: Vec<(&str, &str)> = self
            .spec
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        for (k, v) in &order.env {
            if k.starts_with("CLOVE_") && env.iter().any(|(ek, _)| ek == k) {
                continue;
            }
            match env.iter_mut().find(|(ek, _)| ek == k) {
                Some(slot) => slot.1 = v,
                None => env.push((k, v)),
            }
        }
        let child = Child::new(
            &order.argv,
            env,
            &cwd,
            self.spec.lockdown.as_ref(),
            Some((out.as_raw_fd(), err.as_raw_fd())),
        )?;
        start_child(&child).map(|(pid, _)| pid)
    }

    /// An EXEC command ended: what it left in its group goes too, and the kernel hears.
    fn exec_ended(&mut self, pid: Pid, exit: AgentExit) {
        let Some(id) = self.execs.remove(&pid) else {
            return;
        };
        // SAFETY: kill(2) of the group it led; the group id stays reserved while any member
        // lives, so it names no one else.
        unsafe { libc::kill(-pid.as_raw(), libc::SIGKILL) };
        self.answer(&FromInit::Exited { id, exit });
    }

    fn answer(&mut self, answer: &FromInit) {
        if let Some(control) = &self.control {
            if control::send(
                control.as_fd(),
                answer,
                &[],
                nix::sys::socket::MsgFlags::empty(),
            )
            .is_err()
            {
                self.control = None;
            }
        }
    }
}

/// Reaps every exited child: the agent's end if it was among them, and every other child's
/// (EXEC commands and orphans), by pid.
fn reap_all(agent: Pid) -> (Option<AgentExit>, Vec<(Pid, AgentExit)>) {
    let mut agent_exit = None;
    let mut others = Vec::new();
    loop {
        let (pid, exit) = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => (
                pid,
                AgentExit {
                    code: Some(code),
                    signal: None,
                },
            ),
            Ok(WaitStatus::Signaled(pid, sig, _)) => (
                pid,
                AgentExit {
                    code: None,
                    signal: Some(sig as i32),
                },
            ),
            Ok(WaitStatus::StillAlive) | Err(_) => return (agent_exit, others),
            Ok(_) => continue,
        };
        if pid == agent {
            agent_exit = Some(exit);
        } else {
            others.push((pid, exit));
        }
    }
}

/// SIGKILL to every other process in the pid namespace.
fn kill_everyone() {
    // SAFETY: kill(2); as PID 1 of the namespace, -1 means every process in it but us.
    unsafe { libc::kill(-1, libc::SIGKILL) };
}

/// Lets the unit-test binary serve as init: the launcher execs `/proc/self/exe`, which in
/// `cargo test` is the test harness, whose `main` is libtest's, not ours. This constructor
/// runs before that `main` and takes over when `argv[1]` says init mode, so the tests drive
/// exactly this module's code.
#[cfg(test)]
mod test_entry {
    // Reading /proc/self/cmdline rather than the (glibc-specific) constructor arguments.
    extern "C" fn enter_init_mode() {
        if let Ok(cmdline) = std::fs::read("/proc/self/cmdline") {
            let mode = cmdline.split(|&b| b == 0).nth(1);
            if mode == Some(super::ARG.as_bytes()) {
                super::main();
            }
            if mode == Some(crate::sandbox::forkserver::ARG.as_bytes()) {
                crate::sandbox::forkserver::main();
            }
        }
    }

    #[used]
    #[link_section = ".init_array"]
    static ENTER_INIT_MODE: extern "C" fn() = enter_init_mode;
}
