//! EXEC: run a command, for an operator on the host, for an agent inside its sandbox.
//!
//! * The command is an argument vector (`argv`, run directly) or a shell line (`command`, run
//!   as `/bin/sh -c`, the original's way).
//! * Its own process group: the timeout kills the whole group (SIGKILL), so a command that
//!   started children leaves none behind; so does a client that goes away (the request is
//!   dropped and the group with it).
//! * stdout and stderr are read concurrently, each kept up to [`OUTPUT_CAP`] (the rest is
//!   read and dropped, and the reply says `truncated`), as text (bytes that are not UTF-8
//!   are replaced); stdin is `/dev/null`.
//!
//! One path (validation, timeout, output capture, the reply) with two back ends:
//!
//! * **the host**, for operators: with the operator's identity (root as root; another
//!   operator with its own uid, gid and supplementary groups, from SO_PEERCRED and its
//!   process, set in the child before the exec), a clean environment (`PATH`, `HOME`,
//!   `USER`, `LOGNAME`, `LANG`) plus the request's `env`, `cwd` absolute (default: the
//!   caller's working directory when it can be read, else `/`). An unsandboxed agent
//!   (`sandboxed: false`, which runs on the host with the kernel's uid anyway) gets this back
//!   end too, with its own uid and gid, moved into its cgroup and its network namespace
//!   before the exec;
//! * **the sandbox**, for a sandboxed agent, after its exec permissions allowed the command:
//!   the agent's init runs it inside the agent's namespaces and cgroup, with the agent's uid,
//!   lockdown and environment ([`crate::sandbox::control`]), never on the host with the
//!   kernel's privileges. `cwd` is a path as the agent sees it (default: the agent's own
//!   working directory).

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use clove_abi::msg::{ExecCommand, ExecReply, ExecRequest};
use clove_abi::{ErrorCode, WireError};
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

use crate::agents::Agent;
use crate::kernel::{Caller, Kernel};
use crate::sandbox::control::{ControlError, ExecOrder, Running};
use crate::sandbox::launch::AgentExit;

/// The most bytes kept of stdout, and of stderr.
pub const OUTPUT_CAP: usize = 1 << 20;
/// The longest `timeout` accepted.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// The `PATH` of a command.
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// How long output is still read once the command ended (and its group was killed): only a
/// process that left the group (its own session) can hold the pipes open longer.
const DRAIN: Duration = Duration::from_secs(2);
/// How long a killed sandboxed command may take to be reported gone.
const KILL_WAIT: Duration = Duration::from_secs(10);

fn invalid(why: impl std::fmt::Display) -> WireError {
    WireError::invalid_request(why)
}

/// What to run, validated.
struct Validated {
    program: String,
    args: Vec<String>,
    cwd: Option<String>,
    timeout: Duration,
}

impl Validated {
    fn of(req: &ExecRequest) -> Result<Self, WireError> {
        let timeout = req
            .timeout()
            .filter(|t| !t.is_zero() && *t <= MAX_TIMEOUT)
            .ok_or_else(|| {
                invalid(format!(
                    "timeout {}: between 0 and {} seconds",
                    req.timeout,
                    MAX_TIMEOUT.as_secs()
                ))
            })?;
        let (program, args): (String, Vec<String>) = match req.invocation() {
            ExecCommand::Shell(c) if c.trim().is_empty() => {
                return Err(invalid("command: must not be empty (or give argv)"))
            }
            ExecCommand::Shell(c) => ("/bin/sh".into(), vec!["-c".into(), c.to_owned()]),
            ExecCommand::Argv([]) => return Err(invalid("argv: must not be empty")),
            ExecCommand::Argv([p, rest @ ..]) => (p.clone(), rest.to_vec()),
        };
        if let Some(c) = req.cwd.as_ref().filter(|c| !c.starts_with('/')) {
            return Err(invalid(format!("cwd {c:?}: must be an absolute path")));
        }
        Ok(Self {
            program,
            args,
            cwd: req.cwd.clone(),
            timeout,
        })
    }
}

/// EXEC.
pub async fn exec(
    kernel: &Kernel,
    caller: &Caller,
    req: ExecRequest,
) -> Result<ExecReply, WireError> {
    let agent = if caller.agent {
        let agent = kernel
            .agents
            .get(caller.id)
            .ok_or_else(|| WireError::new(ErrorCode::NotFound, "the calling agent has exited"))?;
        let line = match req.invocation() {
            ExecCommand::Shell(c) => c.to_owned(),
            ExecCommand::Argv(a) => a.join(" "),
        };
        if !agent.permissions().allows_command(&line) {
            return Err(WireError::new(
                ErrorCode::PermissionDenied,
                format!(
                    "agent {} may not run {line:?}: not within its exec permissions",
                    agent.id
                ),
            ));
        }
        Some(agent)
    } else {
        None
    };
    let cmd = Validated::of(&req)?;
    // Everything the command needs, owned, so it can also run after the reply (`async`).
    let env = req.env.clone();
    let caller_owned = caller.clone();
    let confine = match &agent {
        Some(a) if a.view.is_none() => Some(Confine::of(kernel, a)?),
        _ => None,
    };
    let work = async move {
        match (agent, confine) {
            (None, _) => on_host(&caller_owned, &cmd, env.as_ref(), None).await,
            // A sandboxed agent has a view; an unsandboxed one sees the host.
            (Some(agent), None) => in_sandbox(&agent, &cmd, env).await,
            (Some(agent), Some(confine)) => {
                on_host(
                    &caller_owned,
                    &cmd,
                    env.as_ref(),
                    Some((agent.uid, confine)),
                )
                .await
            }
        }
    };
    if req.is_async {
        let id = crate::syscalls::asyncs::spawn(
            kernel,
            caller,
            clove_abi::opcode::Opcode::Exec,
            req.request_id,
            work,
        )?;
        return Ok(ExecReply::accepted(id));
    }
    work.await
}

/// The host back end: an operator's command, or (with `agent`: its uid and confinement) an
/// unsandboxed agent's.
async fn on_host(
    caller: &Caller,
    cmd: &Validated,
    env: Option<&BTreeMap<String, String>>,
    agent: Option<(u32, Confine)>,
) -> Result<ExecReply, WireError> {
    let cwd = match &cmd.cwd {
        Some(c) => std::path::PathBuf::from(c),
        None => caller
            .pid
            .and_then(|pid| std::fs::read_link(format!("/proc/{pid}/cwd")).ok())
            .unwrap_or_else(|| "/".into()),
    };
    let mut identity = Identity::of(caller);
    let confine = agent.map(|(uid, confine)| {
        identity.uid = uid;
        confine
    });
    let mut command = tokio::process::Command::new(&cmd.program);
    command
        .args(&cmd.args)
        .current_dir(&cwd)
        .env_clear()
        .envs(identity.env(env))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    // The kernel's own identity needs no switch (a kernel that is not root could not make
    // one anyway).
    let switch = identity.uid != nix::unistd::geteuid().as_raw();
    let (uid, gid, groups) = (identity.uid, identity.gid, identity.groups.clone());
    let (cgroup_fds, netns): (Vec<i32>, Option<i32>) = match &confine {
        Some(c) => (
            c.cgroup_procs.iter().map(AsRawFd::as_raw_fd).collect(),
            c.netns.as_ref().map(AsRawFd::as_raw_fd),
        ),
        None => (Vec::new(), None),
    };
    if switch || confine.is_some() {
        // SAFETY: runs in the child between fork and exec; only async-signal-safe syscalls
        // (write, setns, setgroups, setgid, setuid) on data prepared before the fork. The
        // descriptors stay open in the parent (`confine`) until the spawn returned.
        unsafe {
            command.pre_exec(move || {
                // Into the agent's cgroup first (moving needs the kernel's privileges): `0`
                // is the writing process.
                for &fd in &cgroup_fds {
                    if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                if let Some(ns) = netns {
                    if libc::setns(ns, libc::CLONE_NEWNET) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                if switch
                    && (libc::setgroups(groups.len(), groups.as_ptr()) != 0
                        || libc::setgid(gid) != 0
                        || libc::setuid(uid) != 0)
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut child = command.spawn().map_err(|e| {
        WireError::new(
            errno_code(e.raw_os_error()),
            format!("exec {:?} in {}: {e}", cmd.program, cwd.display()),
        )
    })?;
    drop(confine);
    let pgid = child.id().map(|p| p as i32);
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    collect(Proc::Host { child, pgid }, stdout, stderr, cmd.timeout).await
}

/// The sandbox back end: the agent's init runs the command inside its sandbox.
async fn in_sandbox(
    agent: &Arc<Agent>,
    cmd: &Validated,
    env: Option<BTreeMap<String, String>>,
) -> Result<ExecReply, WireError> {
    let gone = || {
        WireError::new(
            ErrorCode::Unavailable,
            format!("agent {}: its sandbox is not running", agent.id),
        )
    };
    let control = agent.run().control.clone().ok_or_else(gone)?;
    let pipe = || {
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| WireError::new(ErrorCode::Internal, format!("create an output pipe: {e}")))
    };
    let ((out_r, out_w), (err_r, err_w)) = (pipe()?, pipe()?);
    let reader = |fd: OwnedFd| {
        tokio::net::unix::pipe::Receiver::from_owned_fd(fd)
            .map_err(|e| WireError::new(ErrorCode::Internal, format!("read the output: {e}")))
    };
    let (stdout, stderr) = (reader(out_r)?, reader(err_r)?);
    let mut argv = vec![cmd.program.clone()];
    argv.extend(cmd.args.iter().cloned());
    let order = ExecOrder {
        id: 0,
        argv,
        env: env.unwrap_or_default().into_iter().collect(),
        cwd: cmd.cwd.clone(),
    };
    let running = control
        .exec(order, out_w, err_w)
        .await
        .map_err(|e| control_error(agent.id, e))?;
    tracing::debug!(
        agent = agent.id,
        pid = running.pid(),
        "EXEC runs in the sandbox"
    );
    collect(
        Proc::Sandbox(running, agent.id),
        Some(stdout),
        Some(stderr),
        cmd.timeout,
    )
    .await
}

fn control_error(agent: u32, e: ControlError) -> WireError {
    match e {
        ControlError::Unavailable(why) => {
            WireError::new(ErrorCode::Unavailable, format!("agent {agent}: {why}"))
        }
        ControlError::Failed { error, errno } => WireError::new(
            errno_code(errno),
            format!("{error} (in agent {agent}'s sandbox)"),
        ),
        e @ ControlError::TooLarge(_) => invalid(e),
    }
}

/// The reply code for a command that could not be started.
fn errno_code(errno: Option<i32>) -> ErrorCode {
    match errno {
        Some(libc::ENOENT | libc::ENOTDIR) => ErrorCode::NotFound,
        Some(libc::EACCES | libc::EPERM) => ErrorCode::PermissionDenied,
        Some(libc::EAGAIN) => ErrorCode::LimitExceeded,
        _ => ErrorCode::InvalidRequest,
    }
}

/// A running command, on either back end.
enum Proc {
    Host {
        child: tokio::process::Child,
        pgid: Option<i32>,
    },
    /// Run by the agent's init (with the agent's id, for messages).
    Sandbox(Running, u32),
}

impl Proc {
    async fn wait(&mut self) -> Result<AgentExit, WireError> {
        match self {
            Proc::Host { child, .. } => {
                use std::os::unix::process::ExitStatusExt;
                let status = child
                    .wait()
                    .await
                    .map_err(|e| WireError::new(ErrorCode::Internal, format!("wait: {e}")))?;
                Ok(AgentExit {
                    code: status.code(),
                    signal: status.signal(),
                })
            }
            Proc::Sandbox(running, agent) => {
                running.wait().await.map_err(|e| control_error(*agent, e))
            }
        }
    }

    /// SIGKILL to the command's whole process group.
    fn kill_group(&self) {
        match self {
            Proc::Host {
                pgid: Some(pgid), ..
            } => {
                // SAFETY: kill(2) of the process group this command leads; ESRCH when it is
                // empty already.
                unsafe { libc::kill(-pgid, libc::SIGKILL) };
            }
            Proc::Host { pgid: None, .. } => {}
            Proc::Sandbox(running, _) => running.kill(),
        }
    }
}

/// Waits for the command within `timeout` (killing its group at the timeout), reads its
/// output, and builds the reply.
async fn collect<O, E>(
    mut proc: Proc,
    stdout: Option<O>,
    stderr: Option<E>,
    timeout: Duration,
) -> Result<ExecReply, WireError>
where
    O: tokio::io::AsyncRead + Unpin + Send + 'static,
    E: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    // The readers run on their own, so output read before a timeout is kept.
    let stop = CancellationToken::new();
    // However this ends (a client that went away drops it), the readers end with it.
    let _stop_readers = stop.clone().drop_guard();
    let out = tokio::spawn(read_capped(stdout, stop.clone()));
    let err = tokio::spawn(read_capped(stderr, stop.clone()));
    let (timed_out, status) = match tokio::time::timeout(timeout, proc.wait()).await {
        Ok(status) => (false, status),
        Err(_) => {
            proc.kill_group();
            let status = match tokio::time::timeout(KILL_WAIT, proc.wait()).await {
                Ok(status) => status,
                Err(_) => Ok(AgentExit {
                    code: None,
                    signal: Some(libc::SIGKILL),
                }),
            };
            (true, status)
        }
    };
    // Whatever the command left running in its group goes with it (and so the pipes close);
    // init does this itself for a sandboxed command.
    if let Proc::Host { .. } = proc {
        proc.kill_group();
    }
    let timer = {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(DRAIN).await;
            stop.cancel();
        })
    };
    let (out, err) = (out.await.unwrap_or_default(), err.await.unwrap_or_default());
    timer.abort();
    let status = status?;
    let ((stdout, out_cut), (stderr, err_cut)) = (out, err);
    let mut reply = ExecReply::completed(stdout, stderr, status.code.unwrap_or(-1));
    reply.signal = status.signal;
    reply.timed_out = timed_out.then_some(true);
    reply.truncated = (out_cut || err_cut).then_some(true);
    Ok(reply)
}

/// What keeps an unsandboxed agent's command with the agent: its cgroup's `cgroup.procs`
/// files (open for writing) and its network namespace.
struct Confine {
    cgroup_procs: Vec<std::fs::File>,
    netns: Option<std::fs::File>,
}

impl Confine {
    fn of(kernel: &Kernel, agent: &Agent) -> Result<Self, WireError> {
        let run = agent.run();
        let mut cgroup_procs = Vec::new();
        for path in run
            .cgroup
            .as_ref()
            .map(|cg| cg.procs_files())
            .unwrap_or_default()
        {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| {
                    WireError::new(ErrorCode::Internal, format!("open {}: {e}", path.display()))
                })?;
            cgroup_procs.push(file);
        }
        let netns = if kernel.agents.host.root && !agent.spec.network {
            let path = format!("/proc/{}/ns/net", run.pid);
            Some(std::fs::File::open(&path).map_err(|e| {
                WireError::new(
                    ErrorCode::Unavailable,
                    format!("agent {}: its network namespace ({path}): {e}", agent.id),
                )
            })?)
        } else {
            None
        };
        Ok(Self {
            cgroup_procs,
            netns,
        })
    }
}

/// Reads a pipe to its end, keeping [`OUTPUT_CAP`] bytes; the text and whether some was
/// dropped.
/// `stop` ends the reading early with what was read.
async fn read_capped<R: tokio::io::AsyncRead + Unpin>(
    pipe: Option<R>,
    stop: CancellationToken,
) -> (String, bool) {
    let Some(mut pipe) = pipe else {
        return (String::new(), false);
    };
    let mut kept = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut cut = false;
    loop {
        let read = tokio::select! {
            r = pipe.read(&mut buf) => r,
            () = stop.cancelled() => break,
        };
        match read {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = OUTPUT_CAP.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
                cut |= n > room;
            }
        }
    }
    (String::from_utf8_lossy(&kept).into_owned(), cut)
}

/// Who a command runs as.
struct Identity {
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
    user: Option<nix::unistd::User>,
}

impl Identity {
    fn of(caller: &Caller) -> Identity {
        Identity {
            uid: caller.uid,
            gid: caller.gid,
            groups: super::files::groups_of(caller.pid),
            user: nix::unistd::User::from_uid(caller.uid.into())
                .ok()
                .flatten(),
        }
    }

    /// The clean environment, then `extra`.
    fn env(&self, extra: Option<&BTreeMap<String, String>>) -> BTreeMap<String, String> {
        let name = self
            .user
            .as_ref()
            .map_or_else(|| self.uid.to_string(), |u| u.name.clone());
        let home = self
            .user
            .as_ref()
            .map_or_else(|| "/".to_owned(), |u| u.dir.to_string_lossy().into_owned());
        let mut env: BTreeMap<String, String> = [
            ("PATH", PATH.to_owned()),
            ("HOME", home),
            ("USER", name.clone()),
            ("LOGNAME", name),
            ("LANG", "C.UTF-8".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        if let Some(extra) = extra {
            env.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        env
    }
}
