//! Exit watching: one task per agent waits on its pidfd (no polling), reaps it, labels the
//! exit (an OOM kill is read from the memory controller's own counter, never guessed from
//! exit code 137), cleans up what the agent held, and moves it to the exited table.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::{Agent, Agents, ExitReason, LifecycleEvent};
use crate::sandbox::launch;

/// Watches `agent` until it exits. `report` is the init's report pipe (sandboxed agents).
pub fn watch(agents: Arc<Agents>, agent: Arc<Agent>, report: Option<OwnedFd>) {
    tokio::spawn(async move {
        let exit = wait(&agent, report.as_ref()).await;
        let killed = agent.killing.load(std::sync::atomic::Ordering::SeqCst);
        let oom = match &agent.cgroup {
            Some(cg) => cg.oom_kills().map(|n| n > 0).unwrap_or(false),
            None => false,
        };
        let reason = ExitReason {
            code: exit.code,
            signal: exit.signal,
            oom,
            killed,
        };
        cleanup(&agent).await;
        tracing::info!(agent = agent.id, name = %agent.name, "agent {}", reason.describe());
        agent.set_state(if reason.clean() || killed {
            clove_abi::msg::AgentState::Stopped
        } else {
            clove_abi::msg::AgentState::Failed
        });
        agents.retire(&agent, reason.clone());
        // Its log and work dir stay readable for the retention time.
        super::host::expire_later(agent.dir.clone(), agents.host.retention);
        // send_replace: the value must stick even when nobody is waiting yet (WAIT later).
        agent.exit.send_replace(Some(reason.clone()));
        agents.notify(LifecycleEvent::Exited {
            id: agent.id,
            name: agent.name.clone(),
            reason,
        });
        tidy(&agent).await;
    });
}

/// Waits for the agent's exit without polling (its pidfd becomes readable), falling back to
/// polling when the pidfd cannot be watched.
async fn wait(agent: &Agent, report: Option<&OwnedFd>) -> launch::AgentExit {
    match watch_pidfd(agent, report).await {
        Ok(exit) => exit,
        Err(e) => {
            tracing::error!(agent = agent.id, "watch pidfd: {e}; polling instead");
            loop {
                if let Some(exit) = try_reap(agent, report) {
                    return exit;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

async fn watch_pidfd(
    agent: &Agent,
    report: Option<&OwnedFd>,
) -> std::io::Result<launch::AgentExit> {
    let fd = agent.pidfd.try_clone()?;
    // SAFETY: `fd` is an open pidfd that the AsyncFd owns until it is dropped; nothing
    // else closes or replaces it.
    let afd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    loop {
        let mut guard = afd.readable().await?;
        match try_reap(agent, report) {
            Some(exit) => return Ok(exit),
            None => guard.clear_ready(),
        }
    }
}

/// The exit once it happened; `None` while the agent runs. A failed reap is logged and
/// counts as an exit without code or signal, so the agent is never stuck as live.
fn try_reap(agent: &Agent, report: Option<&OwnedFd>) -> Option<launch::AgentExit> {
    match launch::reap(&agent.pidfd, report) {
        Ok(exit) => Some(exit),
        Err(launch::LaunchError::StillRunning) => None,
        Err(e) => {
            tracing::error!(agent = agent.id, "reap: {e}");
            Some(launch::AgentExit {
                code: None,
                signal: None,
            })
        }
    }
}

/// What may wait until the exit has been reported, since nobody can tell: the socket file
/// (its listener is closed already), the empty mount point of the sandbox's root, and the
/// sandbox's mount namespace, whose closing unmounts its mounts (and waits for an RCU grace
/// period) on the thread that drops it.
async fn tidy(agent: &Arc<Agent>) {
    let mount_ns = super::lock(&agent.mount_ns).take();
    let dir = agent.dir.clone();
    let _ = tokio::task::spawn_blocking(move || {
        drop(mount_ns);
        let _ = std::fs::remove_file(dir.join("clove.sock"));
        let _ = std::fs::remove_dir(dir.join("root"));
    })
    .await;
}

/// Releases what the agent held, before its exit is reported: whatever is left in its cgroup
/// (daemonized children), the cgroup itself, its socket's listener and its work dir's tmpfs.
async fn cleanup(agent: &Arc<Agent>) {
    agent.socket_stop.cancel();
    // The lifeline keeps a sandbox's init alive; it has exited, so let go of it.
    drop(super::lock(&agent.lifeline).take());
    let a = Arc::clone(agent);
    let _ = tokio::task::spawn_blocking(move || {
        if let Some(cg) = &a.cgroup {
            // Usually nothing is left (init's exit took its pid namespace along): then
            // removing the directories is all there is to do. Otherwise, kill and remove.
            let removed = cg.remove_if_empty().unwrap_or_else(|e| {
                tracing::warn!(agent = a.id, "remove the agent's cgroup: {e}");
                false
            });
            if !removed {
                if let Err(e) = cg.kill_all(nix::sys::signal::Signal::SIGKILL) {
                    tracing::warn!(agent = a.id, "kill what is left of the agent: {e}");
                }
                if let Err(e) = cg.remove() {
                    tracing::warn!(agent = a.id, "remove the agent's cgroup: {e}");
                }
            }
        }
        if let Some(work) = &a.work_mount {
            // The work dir's tmpfs lives in memory; its contents go with the agent.
            if let Err(e) = nix::mount::umount2(work, nix::mount::MntFlags::MNT_DETACH) {
                tracing::warn!(agent = a.id, "unmount {}: {e}", work.display());
            }
        }
    })
    .await;
}
