//! Permissions: what each caller may do, and who may change it (GET_PERMS, SET_PERMS, and
//! what SPAWN grants). The permission set itself and its list conventions live with the wire
//! types (`clove_abi::msg::perms`); this module holds the kernel's authority rules:
//!
//! * a **root operator** (a connection on the main socket from uid 0) is unrestricted;
//! * **another operator** is unrestricted too as far as the kernel is concerned, but its host
//!   operations run with its own uid and gid (from SO_PEERCRED), so the host's own permissions
//!   bound it; it controls only the agents it started;
//! * an **agent** has what SPAWN granted it (`permissions`, else `level`, else `standard`; an
//!   agent spawning a child grants at most what it holds itself, and without a request the
//!   child gets `standard` when that is within its parent's, else its parent's own set);
//! * an agent may lower its own permissions, never raise them, and may set its descendants'
//!   within its own; an operator may set those of the agents it owns (root: of every agent).
//!
//! Every refusal is a `permission_denied` error, which the dispatcher turns into a
//! SYSCALL_BLOCKED event.

use std::sync::Arc;

use clove_abi::msg::{
    GetPermsReply, GetPermsRequest, PermissionLevel, Permissions, SetPermsReply, SetPermsRequest,
    SpawnRequest,
};
use clove_abi::{ErrorCode, WireError};

use crate::agents::{lock, Agent};
use crate::kernel::{Caller, Kernel};
use crate::state::SavedAgent;

fn denied(why: impl std::fmt::Display) -> WireError {
    WireError::new(ErrorCode::PermissionDenied, why.to_string())
}

/// What SPAWN grants a new agent whose spawner is `parent` (`None`: an operator).
pub fn grant(parent: Option<&Agent>, req: &SpawnRequest) -> Result<Permissions, WireError> {
    let asked = match (&req.permissions, req.level) {
        (Some(p), _) => Some(p.clone()),
        (None, Some(level)) => Some(level.permissions()),
        (None, None) => None,
    };
    let Some(parent) = parent else {
        return Ok(asked.unwrap_or_default());
    };
    let held = parent.permissions();
    if !held.can_spawn {
        return Err(denied(format!(
            "spawn {:?}: agent {} ({}) may not spawn agents (can_spawn is off)",
            req.name, parent.id, parent.name
        )));
    }
    match asked {
        Some(p) => {
            let beyond = p.beyond(&held);
            if beyond.is_empty() {
                Ok(p)
            } else {
                Err(denied(format!(
                    "spawn {:?}: a child may not get more than agent {} holds; beyond it: {}",
                    req.name,
                    parent.id,
                    beyond.join(", ")
                )))
            }
        }
        None => {
            let standard = Permissions::default();
            Ok(if standard.is_within(&held) {
                standard
            } else {
                held
            })
        }
    }
}

/// The agent a GET_PERMS or SET_PERMS is about, after checking that the caller may see or
/// change it: the named one, or the calling agent itself.
fn target(
    kernel: &Kernel,
    caller: &Caller,
    agent_id: Option<u32>,
    verb: &str,
) -> Result<Option<Arc<Agent>>, WireError> {
    let id = match (agent_id, caller.agent) {
        (Some(id), _) => id,
        (None, true) => caller.id,
        (None, false) => return Ok(None),
    };
    let agent = kernel.agents.get(id).ok_or_else(|| {
        WireError::new(ErrorCode::NotFound, format!("{verb}: no live agent {id}"))
    })?;
    let allowed = if caller.agent {
        kernel.agents.is_self_or_ancestor(caller.id, &agent)
    } else {
        caller.uid == 0 || caller.uid == agent.owner_uid
    };
    if allowed {
        Ok(Some(agent))
    } else {
        Err(denied(format!(
            "{verb} of agent {id} ({}): not yours",
            agent.name
        )))
    }
}

/// GET_PERMS: an agent's permissions (its own without `agent_id`); for an operator without
/// `agent_id`, the operator's own, which the kernel does not restrict (`unrestricted`).
pub fn get(
    kernel: &Kernel,
    caller: &Caller,
    req: GetPermsRequest,
) -> Result<GetPermsReply, WireError> {
    let (permissions, agent_id) = match target(kernel, caller, req.agent_id, "get permissions")? {
        Some(agent) => (agent.permissions(), Some(agent.id)),
        None => (PermissionLevel::Unrestricted.permissions(), None),
    };
    Ok(GetPermsReply {
        success: true,
        level: permissions.level(),
        permissions,
        agent_id,
    })
}

/// SET_PERMS: replaces an agent's permissions. An agent may only lower its own and may give a
/// descendant at most what it holds; an operator sets those of its agents (root: any agent's).
/// A saved agent's spec is saved again, so a restarted kernel brings it back with the new set.
pub async fn set(
    kernel: &Kernel,
    caller: &Caller,
    req: SetPermsRequest,
) -> Result<SetPermsReply, WireError> {
    let Some(new) = req.effective() else {
        return Err(WireError::invalid_request(
            "SET_PERMS needs level or permissions",
        ));
    };
    let Some(agent) = target(kernel, caller, req.agent_id, "set permissions")? else {
        return Err(WireError::invalid_request(
            "agent_id: an operator's own permissions are not the kernel's to set; name the agent",
        ));
    };
    if caller.agent {
        let held = kernel
            .agents
            .get(caller.id)
            .map(|a| a.permissions())
            .ok_or_else(|| WireError::new(ErrorCode::NotFound, "the calling agent has exited"))?;
        let beyond = new.beyond(&held);
        if !beyond.is_empty() {
            let whose = if agent.id == caller.id {
                "an agent may lower its own permissions, never raise them".to_owned()
            } else {
                format!("agent {} may not give more than it holds", caller.id)
            };
            return Err(denied(format!(
                "set permissions of agent {}: {whose}; beyond: {}",
                agent.id,
                beyond.join(", ")
            )));
        }
    }
    let mut new = new;
    {
        let mut perms = lock(&agent.perms);
        // The usage counters are the kernel's, never the caller's.
        new.llm.tokens_used = perms.llm.tokens_used;
        new.llm.calls_made = perms.llm.calls_made;
        *perms = new.clone();
    }
    tracing::info!(
        agent = agent.id,
        by = caller.id,
        level = ?new.level(),
        "permissions of agent {} ({}) set",
        agent.id,
        agent.name
    );
    kernel.audit.record(
        crate::audit::for_caller(
            kernel,
            caller,
            clove_abi::msg::AuditCategory::Security,
            "PERMISSIONS_SET",
        )
        .details(
            serde_json::json!({"agent_id": agent.id, "agent_name": agent.name,
            "level": new.level().map(|l| l.as_str()), "permissions": new}),
        ),
    );
    if let Some(saved) = saved_spec(&agent, &new) {
        kernel.state.save_agent(&saved).await?;
        if kernel.agents.get(agent.id).is_none() {
            // It ended for good meanwhile and its spec was forgotten: not again.
            kernel.state.forget_agent(agent.id).await?;
        }
    }
    Ok(SetPermsReply {
        success: true,
        agent_id: agent.id,
    })
}

/// The saved spec of `agent` with `perms`, when it is one a restarted kernel brings back.
fn saved_spec(agent: &Agent, perms: &Permissions) -> Option<SavedAgent> {
    if agent.parent.is_some() || agent.spec.restart_policy == clove_abi::msg::RestartPolicy::Never {
        return None;
    }
    let mut spec = agent.spec.clone();
    spec.permissions = Some(perms.clone());
    spec.level = None;
    Some(SavedAgent {
        id: agent.id,
        owner_uid: agent.owner_uid,
        uid: agent.uid,
        spec,
    })
}
