//! EXEC: run a command, for an operator on the host.
//!
//! * The command is an argument vector (`argv`, run directly) or a shell line (`command`, run
//!   as `/bin/sh -c`, the original's way).
//! * It runs with the operator's identity: root as root; another operator with its own uid,
//!   gid and supplementary groups (SO_PEERCRED and its process), set in the child before the
//!   exec, so it can do nothing the operator could not do in a shell.
//! * A clean environment (`PATH`, `HOME`, `USER`, `LOGNAME`, `LANG`) plus the request's
//!   `env`; `cwd` absolute (default: the caller's working directory when it can be read, else
//!   `/`); stdin is `/dev/null`.
//! * Its own process group: the timeout kills the whole group (SIGKILL), so a command that
//!   started children leaves none behind; so does a client that goes away (the request is
//!   dropped and the group with it).
//! * stdout and stderr are read concurrently, each kept up to [`OUTPUT_CAP`] (the rest is
//!   read and dropped, and the reply says `truncated`), as text (bytes that are not UTF-8
//!   are replaced).
//!
//! EXEC from an agent runs inside the agent's own sandbox, never on the host with the
//! kernel's privileges; that path is not built yet and is refused (see STATUS.md).

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use clove_abi::msg::{ExecCommand, ExecReply, ExecRequest};
use clove_abi::{ErrorCode, WireError};
use tokio::io::AsyncReadExt;

use crate::kernel::{Caller, Kernel};

/// The most bytes kept of stdout, and of stderr.
pub const OUTPUT_CAP: usize = 1 << 20;
/// The longest `timeout` accepted.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// The `PATH` of a command.
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn invalid(why: impl std::fmt::Display) -> WireError {
    WireError::invalid_request(why)
}

/// EXEC.
pub async fn exec(
    kernel: &Kernel,
    caller: &Caller,
    req: ExecRequest,
) -> Result<ExecReply, WireError> {
    if caller.agent {
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
        return Err(WireError::new(
            ErrorCode::NotImplemented,
            "EXEC from an agent runs inside its own sandbox, which this kernel does not do yet",
        ));
    }
    if req.is_async {
        return Err(WireError::new(
            ErrorCode::NotImplemented,
            "EXEC with async: true is not implemented by this kernel yet; omit async",
        ));
    }
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
    let cwd = match &req.cwd {
        Some(c) if !c.starts_with('/') => {
            return Err(invalid(format!("cwd {c:?}: must be an absolute path")))
        }
        Some(c) => std::path::PathBuf::from(c),
        None => caller
            .pid
            .and_then(|pid| std::fs::read_link(format!("/proc/{pid}/cwd")).ok())
            .unwrap_or_else(|| "/".into()),
    };
    let identity = Identity::of(caller);
    let mut cmd = tokio::process::Command::new(&program);
    cmd.args(&args)
        .current_dir(&cwd)
        .env_clear()
        .envs(identity.env(req.env.as_ref()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if identity.uid != 0 {
        let (uid, gid, groups) = (identity.uid, identity.gid, identity.groups.clone());
        // SAFETY: runs in the child between fork and exec; only async-signal-safe syscalls
        // (setgroups, setgid, setuid) on data prepared before the fork.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(uid) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut child = cmd.spawn().map_err(|e| {
        let code = match e.kind() {
            std::io::ErrorKind::NotFound => ErrorCode::NotFound,
            std::io::ErrorKind::PermissionDenied => ErrorCode::PermissionDenied,
            _ => ErrorCode::InvalidRequest,
        };
        WireError::new(code, format!("exec {program:?} in {}: {e}", cwd.display()))
    })?;
    let pgid = child.id().map(|p| p as i32);
    // The readers run on their own, so output read before a timeout is kept.
    let out = tokio::spawn(read_capped(child.stdout.take()));
    let err = tokio::spawn(read_capped(child.stderr.take()));
    let kill_group = || {
        if let Some(pgid) = pgid {
            // SAFETY: kill(2) of the process group this command leads; ESRCH when it is
            // empty already.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
    };
    let (timed_out, status) = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(status) => (false, status),
        Err(_) => {
            kill_group();
            (true, child.wait().await)
        }
    };
    // Whatever the command left running in its group goes with it (and so the pipes close).
    kill_group();
    let (out, err) = (out.await.unwrap_or_default(), err.await.unwrap_or_default());
    let status = status.map_err(|e| WireError::new(ErrorCode::Internal, format!("wait: {e}")))?;
    use std::os::unix::process::ExitStatusExt;
    let ((stdout, out_cut), (stderr, err_cut)) = (out, err);
    let mut reply = ExecReply::completed(stdout, stderr, status.code().unwrap_or(-1));
    reply.signal = status.signal();
    reply.timed_out = timed_out.then_some(true);
    reply.truncated = (out_cut || err_cut).then_some(true);
    Ok(reply)
}

/// Reads a pipe to its end, keeping [`OUTPUT_CAP`] bytes; the text and whether some was
/// dropped.
async fn read_capped<R: tokio::io::AsyncRead + Unpin>(pipe: Option<R>) -> (String, bool) {
    let Some(mut pipe) = pipe else {
        return (String::new(), false);
    };
    let mut kept = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut cut = false;
    loop {
        match pipe.read(&mut buf).await {
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
        let groups = caller
            .pid
            .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
            .and_then(|s| {
                s.lines().find_map(|l| l.strip_prefix("Groups:")).map(|g| {
                    g.split_whitespace()
                        .filter_map(|n| n.parse().ok())
                        .collect()
                })
            })
            .unwrap_or_default();
        Identity {
            uid: caller.uid,
            gid: caller.gid,
            groups,
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
