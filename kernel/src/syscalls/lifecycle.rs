//! SPAWN, KILL, LIST, PAUSE, RESUME, WAIT: thin handlers over [`crate::agents`].

use std::time::Duration;

use clove_abi::msg::{
    AgentRef, KillReply, KillRequest, ListReply, ListRequest, LogsReply, LogsRequest, PauseReply,
    PauseRequest, RestartPolicy, ResumeReply, ResumeRequest, SpawnReply, SpawnRequest, WaitReply,
    WaitRequest,
};
use clove_abi::WireError;

use crate::agents::{control, spawn, ExitReason};
use crate::audit::{acting_for, failed_request, DecidedBy};
use crate::kernel::{Caller, Kernel};

fn target<'a>(r: Option<AgentRef<'a>>) -> Result<AgentRef<'a>, WireError> {
    r.ok_or_else(|| WireError::invalid_request("give the agent's id or name"))
}

/// The target of a request, for an audit entry.
fn named(r: Option<AgentRef<'_>>) -> serde_json::Value {
    match r {
        Some(AgentRef::Id(id)) => serde_json::json!({ "id": id }),
        Some(AgentRef::Name(name)) => serde_json::json!({ "name": name }),
        None => serde_json::Value::Null,
    }
}

/// SPAWN. Audited as the caller's decision (AGENT_SPAWNED by the lifecycle observer, or
/// SPAWN_FAILED).
pub async fn spawn(
    kernel: &Kernel,
    caller: &Caller,
    req: SpawnRequest,
) -> Result<SpawnReply, WireError> {
    let name = serde_json::json!({ "name": req.name });
    let r = acting_for(DecidedBy::of(caller), spawn_unaudited(kernel, caller, req)).await;
    if let Err(e) = &r {
        failed_request(kernel, caller, "SPAWN", name, e);
    }
    r
}

async fn spawn_unaudited(
    kernel: &Kernel,
    caller: &Caller,
    req: SpawnRequest,
) -> Result<SpawnReply, WireError> {
    // Spawn names and registered names are one namespace: SEND {to_name} must reach one
    // caller, never the wrong one.
    if let Some(owner) = kernel.ipc.registered(&req.name) {
        return Err(WireError::new(
            clove_abi::ErrorCode::AlreadyExists,
            format!("name {:?} is registered by {owner}", req.name),
        ));
    }
    spawn::spawn(kernel, caller, req).await
}

/// KILL: the reply comes once the agent has exited. Its exit is audited as the caller's
/// decision (or KILL_FAILED).
pub async fn kill(
    kernel: &Kernel,
    caller: &Caller,
    req: KillRequest,
) -> Result<KillReply, WireError> {
    let r = kill_unaudited(kernel, caller, &req).await;
    if let Err(e) = &r {
        failed_request(kernel, caller, "KILL", named(req.target()), e);
    }
    r
}

async fn kill_unaudited(
    kernel: &Kernel,
    caller: &Caller,
    req: &KillRequest,
) -> Result<KillReply, WireError> {
    let agent = kernel.agents.find(target(req.target())?)?;
    control::authorize(&kernel.agents, caller, &agent, "kill")?;
    let _attributed = kernel.audit.killing(agent.id, DecidedBy::of(caller));
    control::kill(&agent, control::grace_of(&agent, kernel.config.kill_grace)).await?;
    if agent.parent.is_none() && agent.spec.restart_policy != RestartPolicy::Never {
        // The agent's final exit has its saved spec forgotten (kernel.rs, `release_on_exit`);
        // asking again, which is harmless, answers once that is durable, so a kernel that dies
        // right after this reply does not bring a KILLed agent back.
        kernel.state.forget_agent(agent.id).await?;
    }
    Ok(KillReply {
        success: true,
        killed: true,
        agent_id: agent.id,
    })
}

/// LIST: live agents, the original's array.
pub fn list(kernel: &Kernel, _caller: &Caller, req: ListRequest) -> Result<ListReply, WireError> {
    Ok(ListReply(kernel.agents.list(req.detail)))
}

/// PAUSE.
pub async fn pause(
    kernel: &Kernel,
    caller: &Caller,
    req: PauseRequest,
) -> Result<PauseReply, WireError> {
    let agent = kernel.agents.find(target(req.target())?)?;
    control::authorize(&kernel.agents, caller, &agent, "pause")?;
    let done = acting_for(
        DecidedBy::of(caller),
        control::set_paused(&kernel.agents, &agent, true),
    )
    .await;
    if let Err(e) = &done {
        failed_request(kernel, caller, "PAUSE", named(req.target()), e);
    }
    done?;
    Ok(PauseReply {
        success: true,
        paused: true,
        agent_id: agent.id,
    })
}

/// RESUME.
pub async fn resume(
    kernel: &Kernel,
    caller: &Caller,
    req: ResumeRequest,
) -> Result<ResumeReply, WireError> {
    let agent = kernel.agents.find(target(req.target())?)?;
    control::authorize(&kernel.agents, caller, &agent, "resume")?;
    let done = acting_for(
        DecidedBy::of(caller),
        control::set_paused(&kernel.agents, &agent, false),
    )
    .await;
    if let Err(e) = &done {
        failed_request(kernel, caller, "RESUME", named(req.target()), e);
    }
    done?;
    Ok(ResumeReply {
        success: true,
        resumed: true,
        agent_id: agent.id,
    })
}

/// WAIT: until the agent exits or the timeout runs out.
pub async fn wait(
    kernel: &Kernel,
    _caller: &Caller,
    req: WaitRequest,
) -> Result<WaitReply, WireError> {
    let r = target(req.target())?;
    // A live agent of that name or id is the one waited for; else the one that exited last.
    let agent = match kernel.agents.find(r) {
        Ok(agent) => agent,
        Err(e) => match kernel.agents.exited(r) {
            Some(done) => return Ok(reply(done.id, Some(&done.reason))),
            None => return Err(e),
        },
    };
    // A restarting agent has not exited: WAIT waits for its final exit.
    let reason = match req.timeout_ms {
        Some(ms) => tokio::time::timeout(Duration::from_millis(ms), agent.exited())
            .await
            .ok(),
        None => Some(agent.exited().await),
    };
    let mut reply = reply(agent.id, reason.as_ref());
    if reason.is_none() {
        // Still alive: say how its last run ended when its policy restarted it.
        if let Some(last) = agent.last_exit() {
            reply.reason = Some(format!(
                "not exited; restarted {} time(s), last exit: {}",
                agent.restarts(),
                last.describe()
            ));
        }
    }
    Ok(reply)
}

fn reply(id: u32, reason: Option<&ExitReason>) -> WaitReply {
    match reason {
        Some(r) => WaitReply {
            success: true,
            agent_id: id,
            exited: true,
            exit_code: r.code,
            signal: r.signal,
            oom: r.oom,
            reason: Some(r.describe()),
        },
        None => WaitReply {
            success: true,
            agent_id: id,
            exited: false,
            ..WaitReply::default()
        },
    }
}

/// LOGS: the tail, or the bytes from an offset (waiting up to `wait_ms` for more).
pub async fn logs(
    kernel: &Kernel,
    caller: &Caller,
    req: LogsRequest,
) -> Result<LogsReply, WireError> {
    let r = target(req.target())?;
    let (id, log, running) = match kernel.agents.find(r) {
        Ok(agent) => {
            control::authorize(&kernel.agents, caller, &agent, "read the logs of")?;
            (agent.id, std::sync::Arc::clone(&agent.log), true)
        }
        Err(e) => match kernel.agents.exited(r) {
            Some(done) => (done.id, done.log, false),
            None => return Err(e),
        },
    };
    let failed = |e: std::io::Error| {
        WireError::new(
            clove_abi::ErrorCode::Unavailable,
            format!("read the log of agent {id}: {e}"),
        )
    };
    let chunk = match req.offset {
        None => log.tail(req.lines).map_err(failed)?,
        Some(offset) => {
            if let Some(ms) = req.wait_ms {
                log.wait_past(offset, Duration::from_millis(ms.min(60_000)))
                    .await;
            }
            log.read_from(offset).map_err(failed)?
        }
    };
    Ok(LogsReply {
        success: true,
        agent_id: id,
        text: chunk.text,
        next_offset: chunk.next,
        // Until the pump has drained the pipe, a follower must keep asking.
        running: (running && kernel.agents.get(id).is_some()) || !log.closed(),
        first_offset: chunk.first,
    })
}
