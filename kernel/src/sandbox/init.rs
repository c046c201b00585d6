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
//! Descriptors, as the launcher lays them out: 0 `/dev/null`, 1 and 2 the agent's output,
//! then [`LIFELINE_FD`], [`STATUS_FD`], [`SPEC_FD`], [`REPORT_FD`].
//!
//! [`mounts`]: super::mounts
//! [`net`]: super::net

use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{ForkResult, Pid};

use super::launch::{os_text, AgentExit, ProcessSpec, LIFELINE_FD, REPORT_FD, SPEC_FD, STATUS_FD};
use super::privileges::{self, Applied};

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

/// What the agent's child side tells init before exec, one JSON line each.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
enum AgentNote {
    Applied(Applied),
    Failed(String),
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
        Ok(agent) => {
            let mut status = fds.status;
            let _ = send(
                &mut status,
                &InitStatus::Started {
                    applied: agent.applied,
                },
            );
            // EOF tells the kernel the message is complete.
            drop(status);
            supervise(agent.pid, fds.lifeline, fds.signals, fds.report)
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
    signals: SignalFd,
}

impl Fds {
    /// Takes over the launcher's descriptors; `None` when this is not the launcher's
    /// child (someone ran the binary in init mode by hand): then nothing is touched.
    fn take() -> Option<Self> {
        // The launcher always starts init as PID 1 of a new pid namespace, with three pipes
        // and the spec memfd at fixed numbers.
        if std::process::id() != 1 {
            return None;
        }
        let is = |fd: RawFd, kind: libc::mode_t| {
            nix::sys::stat::fstat(fd).is_ok_and(|st| st.st_mode & libc::S_IFMT == kind)
        };
        let laid_out = is(LIFELINE_FD, libc::S_IFIFO)
            && is(STATUS_FD, libc::S_IFIFO)
            && is(SPEC_FD, libc::S_IFREG)
            && is(REPORT_FD, libc::S_IFIFO);
        if !laid_out {
            return None;
        }
        let fixed = [LIFELINE_FD, STATUS_FD, SPEC_FD, REPORT_FD];
        for fd in fixed {
            // Nothing of these may leak into the agent.
            // SAFETY: F_SETFD on a descriptor checked open above.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
        // Anything else the kernel leaked has no business here.
        close_from(REPORT_FD + 1);
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
fn setup(fds: &Fds) -> Result<Agent, String> {
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
    spawn_agent(&spec)
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
    let cstr =
        |s: &[u8], what: &str| CString::new(s).map_err(|_| format!("{what} contains a NUL byte"));
    let path = cstr(spec.argv.first().map_or(&b""[..], |a| a.as_bytes()), "argv")?;
    let argv = spec
        .argv
        .iter()
        .map(|a| cstr(a.as_bytes(), "argv"))
        .collect::<Result<Vec<_>, _>>()?;
    let env = spec
        .env
        .iter()
        .map(|(k, v)| cstr(format!("{k}={v}").as_bytes(), "the environment"))
        .collect::<Result<Vec<_>, _>>()?;
    let cwd = cstr(spec.cwd.as_os_str().as_bytes(), "cwd")?;

    let (notes_r, notes_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| format!("create the agent's note pipe: {}", os_text(&e.into())))?;
    // SAFETY: init is single-threaded, so the child may run ordinary code.
    match unsafe { nix::unistd::fork() } {
        Err(e) => Err(format!("fork the agent: {}", os_text(&e.into()))),
        Ok(ForkResult::Child) => {
            drop(notes_r);
            agent_child(spec, File::from(notes_w), &path, &argv, &env, &cwd)
        }
        Ok(ForkResult::Parent { child }) => {
            drop(notes_w);
            let mut text = String::new();
            // EOF: the agent exec'd (the pipe is CLOEXEC) or exited.
            let _ = File::from(notes_r).read_to_string(&mut text);
            let mut applied = None;
            for line in text.lines() {
                match serde_json::from_str::<AgentNote>(line) {
                    Ok(AgentNote::Applied(a)) => applied = Some(a),
                    Ok(AgentNote::Failed(error)) => {
                        let _ = waitpid(child, None);
                        return Err(error);
                    }
                    Err(e) => return Err(format!("unreadable note from the agent: {e}")),
                }
            }
            Ok(Agent {
                pid: child,
                applied,
            })
        }
    }
}

/// The agent's side of the fork: signal state, session, cwd, lockdown, exec.
fn agent_child(
    spec: &ProcessSpec,
    notes: File,
    path: &CString,
    argv: &[CString],
    env: &[CString],
    cwd: &CString,
) -> ! {
    let fail = |error: String| -> ! {
        note(&notes, &AgentNote::Failed(error));
        // SAFETY: _exit(2): skip atexit handlers and stdio flushing that belong to init.
        unsafe { libc::_exit(127) }
    };
    // Default dispositions and an empty mask: init's blocked set and ignored SIGPIPE
    // would otherwise survive the exec.
    super::launch::reset_signals();
    if let Err(e) = nix::unistd::setsid() {
        fail(format!("setsid: {}", os_text(&e.into())));
    }
    if let Err(e) = nix::unistd::chdir(cwd.as_c_str()) {
        fail(format!(
            "chdir {}: {}",
            spec.cwd.display(),
            os_text(&e.into())
        ));
    }
    // Only 0, 1 and 2 reach the agent; the note pipe (already CLOEXEC) stays usable.
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
    if let Some(lockdown) = &spec.lockdown {
        match privileges::lock_down(lockdown) {
            Ok(applied) => note(&notes, &AgentNote::Applied(applied)),
            Err(e) => fail(format!("lock down: {}: {}", e.step, os_text(&e.source))),
        }
    }
    let e = nix::unistd::execve(path, argv, env).err();
    let cause = e.map_or_else(|| "returned".to_owned(), |e| os_text(&e.into()));
    fail(format!("exec {}: {cause}", path.to_string_lossy()))
}

/// One JSON line to init.
fn note(mut notes: &File, note: &AgentNote) {
    if let Ok(line) = serde_json::to_string(note) {
        let _ = writeln!(notes, "{line}");
    }
}

/// PID 1's loop; exits the process.
fn supervise(agent: Pid, lifeline: File, signals: SignalFd, mut report: File) -> ! {
    let mut fds = [
        libc::pollfd {
            fd: signals.as_fd().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: lifeline.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    loop {
        // The agent may have exited before we got here: check before the first sleep.
        if let Some(exit) = reap_all(agent) {
            let _ = report.write_all(&serde_json::to_vec(&exit).unwrap_or_default());
            drop(report);
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
        // SAFETY: two pollfds we own.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if rc < 0 {
            continue;
        }
        if fds[1].revents != 0 {
            let mut buf = [0u8; 64];
            match (&lifeline).read(&mut buf) {
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
            while let Ok(Some(info)) = signals.read_signal() {
                let sig = info.ssi_signo as libc::c_int;
                if sig != libc::SIGCHLD {
                    // SAFETY: kill(2) on the agent's pid; it is not reaped until reap_all
                    // sees it, so the pid cannot have been reused.
                    unsafe { libc::kill(agent.as_raw(), sig) };
                }
            }
        }
    }
}

/// Reaps every exited child; returns the agent's end if it was among them.
fn reap_all(agent: Pid) -> Option<AgentExit> {
    let mut agent_exit = None;
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) if pid == agent => {
                agent_exit = Some(AgentExit {
                    code: Some(code),
                    signal: None,
                })
            }
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == agent => {
                agent_exit = Some(AgentExit {
                    code: None,
                    signal: Some(sig as i32),
                })
            }
            Ok(WaitStatus::StillAlive) | Err(_) => return agent_exit,
            Ok(_) => {}
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
