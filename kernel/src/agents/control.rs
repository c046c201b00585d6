//! KILL, PAUSE, RESUME: acting on a live agent.
//!
//! * KILL: thaw (on cgroup v1 a frozen task ignores even SIGKILL), SIGTERM to the agent's top
//!   process (init forwards it to the agent), wait up to the grace period, then SIGKILL to
//!   init (which takes the whole pid namespace down) and to whatever is left in the cgroup.
//!   The reply is sent once the agent has exited, so a script that KILLs and then SPAWNs
//!   the same name never races.
//! * PAUSE/RESUME freeze and thaw the agent's whole cgroup (every process of the agent).
//!
//! Who may act on an agent: root operators on every agent; other operators on the agents
//! they own; an agent on itself and on its descendants.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use clove_abi::msg::AgentState;
use clove_abi::{ErrorCode, WireError};
use nix::sys::signal::Signal;

use super::{Agent, Agents, ExitReason, LifecycleEvent, Run};
use crate::kernel::Caller;
use crate::sandbox::launch;

/// How long KILL waits after SIGKILL before it reports a failure.
pub(crate) const AFTER_SIGKILL: Duration = Duration::from_secs(10);

/// Fails unless `caller` may act on `agent`.
pub fn authorize(
    agents: &Agents,
    caller: &Caller,
    agent: &Agent,
    verb: &str,
) -> Result<(), WireError> {
    let allowed = if caller.agent {
        agents.is_self_or_ancestor(caller.id, agent)
    } else {
        caller.uid == 0 || caller.uid == agent.owner_uid
    };
    if allowed {
        Ok(())
    } else {
        Err(WireError::new(
            ErrorCode::PermissionDenied,
            format!("{verb} agent {} ({}): not yours", agent.id, agent.name),
        ))
    }
}

/// Stops `agent` for good (no restart) and waits until it has exited. An agent waiting for
/// its restart ends at once; one being launched again is stopped by its restarter, which
/// checks `killing` after it installed the new process (see `exit::relaunch`).
pub async fn kill(agent: &Arc<Agent>, grace: Duration) -> Result<ExitReason, WireError> {
    begin_kill(agent).await;
    if let Ok(reason) = tokio::time::timeout(grace, agent.exited()).await {
        return Ok(reason);
    }
    tracing::info!(
        agent = agent.id,
        "no exit within {grace:?} of SIGTERM; SIGKILL"
    );
    force(agent).await;
    tokio::time::timeout(AFTER_SIGKILL, agent.exited())
        .await
        .map_err(|_| {
            WireError::new(
                ErrorCode::Internal,
                format!(
                    "kill agent {} ({}): still not gone {AFTER_SIGKILL:?} after SIGKILL",
                    agent.id, agent.name
                ),
            )
        })
}

/// The first step of KILL: marks the agent as stopped for good (its exit will be final, a
/// pending restart is called off) and asks its process to end ([`terminate`]).
pub async fn begin_kill(agent: &Arc<Agent>) {
    agent.killing.store(true, Ordering::SeqCst);
    agent.stop.cancel();
    agent.set_state(AgentState::Stopping);
    terminate(agent).await;
}

/// Asks the agent's current process to end: thaw (a frozen process cannot act on SIGTERM),
/// then SIGTERM to its top process (a sandbox's init forwards it). Its exit is handled as any
/// other; a supervisor group uses this alone to stop a child it will restart.
pub async fn terminate(agent: &Agent) {
    let run = agent.run();
    thaw_for_kill(&run).await;
    if let Err(e) = launch::signal(&run.pidfd, Signal::SIGTERM) {
        // ESRCH: it is exiting already.
        tracing::debug!(agent = agent.id, "SIGTERM: {e}");
    }
}

/// SIGKILL to the agent's current process (a restart may have replaced the one signalled
/// before) and to whatever is left in its cgroup.
pub async fn force(agent: &Agent) {
    let run = agent.run();
    let _ = launch::signal(&run.pidfd, Signal::SIGKILL);
    if let Some(cg) = run.cgroup.clone() {
        let _ = tokio::task::spawn_blocking(move || cg.kill_all(Signal::SIGKILL)).await;
    }
}

/// The grace between SIGTERM and SIGKILL for `agent`: its own `grace_ms`, else `default`.
pub fn grace_of(agent: &Agent, default: Duration) -> Duration {
    agent
        .spec
        .grace_ms
        .map(Duration::from_millis)
        .unwrap_or(default)
}

/// A frozen agent cannot act on SIGTERM, and on cgroup v1 not even on SIGKILL: thaw first.
async fn thaw_for_kill(run: &Run) {
    if let Some(cg) = run.cgroup.clone() {
        let pid = run.pid;
        let _ = tokio::task::spawn_blocking(move || {
            if cg.is_frozen().unwrap_or(false) {
                if let Err(e) = cg.thaw() {
                    tracing::warn!(pid, "thaw before kill: {e}");
                }
            }
        })
        .await;
    }
}

/// Freezes (`pause`) or thaws the agent's cgroup.
pub async fn set_paused(agents: &Agents, agent: &Arc<Agent>, pause: bool) -> Result<(), WireError> {
    let verb = if pause { "pause" } else { "resume" };
    if agent.state() == AgentState::Starting {
        return Err(WireError::new(
            ErrorCode::Unavailable,
            format!(
                "{verb} agent {} ({}): it is waiting to be restarted (restarts so far: {}); try again once it runs",
                agent.id,
                agent.name,
                agent.restarts()
            ),
        ));
    }
    let Some(cg) = agent.cgroup() else {
        return Err(WireError::new(
            ErrorCode::Unavailable,
            format!(
                "{verb} agent {}: needs the freezer cgroup controller, and this agent has no cgroup{}",
                agent.id,
                agents
                    .host
                    .cgroups_missing
                    .as_deref()
                    .map(|m| format!(" ({m})"))
                    .unwrap_or_default()
            ),
        ));
    };
    match agent.state() {
        AgentState::Stopping | AgentState::Stopped | AgentState::Failed => {
            return Err(WireError::new(
                ErrorCode::NotFound,
                format!("{verb} agent {}: it is stopping", agent.id),
            ))
        }
        _ => {}
    }
    tokio::task::spawn_blocking(move || if pause { cg.freeze() } else { cg.thaw() })
        .await
        .map_err(|e| WireError::new(ErrorCode::Internal, e.to_string()))?
        .map_err(|e| {
            WireError::new(
                ErrorCode::Unavailable,
                format!("{verb} agent {}: {e}", agent.id),
            )
        })?;
    agent.set_state(if pause {
        AgentState::Paused
    } else {
        AgentState::Running
    });
    agents.notify(if pause {
        LifecycleEvent::Paused {
            id: agent.id,
            name: agent.name.clone(),
        }
    } else {
        LifecycleEvent::Resumed {
            id: agent.id,
            name: agent.name.clone(),
        }
    });
    Ok(())
}
