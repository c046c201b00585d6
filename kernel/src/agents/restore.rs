//! Bringing back, at kernel start, the agents that an earlier kernel on this state dir saved:
//! those spawned by an operator whose policy restarts them (docs/supervision.md, "Kernel
//! restarts"). Each comes back through SPAWN's own path ([`spawn::start`]) with its id,
//! name, owner, spec, directory (its work dir and log go on, after a marker line) and uid,
//! in the order they were first spawned, and AGENT_SPAWNED is published for it.
//!
//! It runs once, after the accept machinery is installed (an agent's socket joins it) and
//! before the main sockets accept anything, so no SPAWN can take a saved agent's name first.
//!
//! A saved agent that cannot be started again is reported in the kernel's log and in its
//! own. When the spec itself no longer works (`invalid_request`: the script, a bind source or
//! the interpreter is gone), the agent is forgotten: its spec and agent-scoped keys are
//! dropped and its directory expires like an exited agent's. When the host is at fault
//! (`internal`, `unavailable`, `limit_exceeded`: cgroups, a clone, `max_agents`), the spec,
//! the keys and the directory stay, and the next kernel start tries again.

use std::sync::Arc;

use clove_abi::{ErrorCode, WireError};

use super::spawn::{self, Origin};
use crate::kernel::Kernel;
use crate::state::SavedAgent;

/// Restores every saved agent, in spawn order; stops early when the kernel is shutting down
/// (the agents not reached stay saved for the next start).
pub async fn restore(kernel: &Arc<Kernel>) {
    let saved = kernel.state.saved_agents();
    if saved.is_empty() {
        return;
    }
    tracing::info!("restoring {} agent(s) of the previous kernel", saved.len());
    for (i, agent) in saved.iter().enumerate() {
        if kernel.stopping.is_cancelled() {
            tracing::info!(
                "shutting down: {} saved agent(s) not restored, the next start restores them",
                saved.len() - i
            );
            return;
        }
        match restore_one(kernel, agent).await {
            Ok(reply) => tracing::info!(
                agent = agent.id,
                name = %agent.spec.name,
                pid = reply.pid,
                "restored agent {} ({})",
                agent.id,
                agent.spec.name
            ),
            Err(e) => not_restored(kernel, agent, &e).await,
        }
    }
}

async fn restore_one(
    kernel: &Kernel,
    agent: &SavedAgent,
) -> Result<clove_abi::msg::SpawnReply, WireError> {
    let resolved = spawn::resolve(
        &kernel.agents,
        agent.spec.clone(),
        None,
        None,
        agent.owner_uid,
    )
    .await?;
    spawn::start(
        kernel,
        resolved,
        Origin::Restored {
            id: agent.id,
            uid: agent.uid,
        },
    )
    .await
}

/// Whether a failed restore means the spec can never start again (rather than a host problem
/// that the next start may not have).
fn spec_is_broken(e: &WireError) -> bool {
    matches!(e.code, ErrorCode::InvalidRequest | ErrorCode::NotFound)
}

/// Reports a saved agent that could not be started again, and forgets it when its spec is
/// broken.
async fn not_restored(kernel: &Kernel, agent: &SavedAgent, e: &WireError) {
    let broken = spec_is_broken(e);
    let outcome = if broken {
        "its spec and agent-scoped keys are dropped"
    } else {
        "its spec stays, the next kernel start tries again"
    };
    tracing::error!(
        agent = agent.id,
        name = %agent.spec.name,
        "agent {} ({}) not restored: {}; {outcome}",
        agent.id,
        agent.spec.name,
        e.message
    );
    let dir = kernel.agents.host.dir.join(agent.id.to_string());
    if dir.is_dir() {
        let line = format!(
            "--- clove: not restored after a kernel restart: {}; {outcome} ---\n",
            e.message
        );
        let note = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(dir.join("output.log"))
            .and_then(|mut f| std::io::Write::write_all(&mut f, line.as_bytes()));
        if let Err(e) = note {
            tracing::warn!(agent = agent.id, "note the failed restore in its log: {e}");
        }
    }
    if broken {
        if let Err(e) = kernel.state.forget_agent(agent.id).await {
            tracing::warn!(agent = agent.id, "forget its spec: {}", e.message);
        }
        super::host::expire_later(dir, kernel.agents.host.retention);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_broken_spec_is_forgotten() {
        let e = |code| WireError::new(code, "x");
        assert!(spec_is_broken(&e(ErrorCode::InvalidRequest)));
        assert!(!spec_is_broken(&e(ErrorCode::Internal)));
        assert!(!spec_is_broken(&e(ErrorCode::Unavailable)));
        assert!(!spec_is_broken(&e(ErrorCode::LimitExceeded)));
        assert!(!spec_is_broken(&e(ErrorCode::AlreadyExists)));
    }
}
