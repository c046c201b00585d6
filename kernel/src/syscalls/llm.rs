//! THINK, LLM_REPORT, LLM_STATS: the shared LLM (`crate::llm`) and the agents' LLM quotas
//! (`permissions.llm`).
//!
//! Quotas are checked before a THINK is queued: `can_think`, the call quota (a call counts
//! when it is admitted, so concurrent calls cannot pass the quota together) and the token
//! quota (what is left must cover the prompt's estimated tokens; the answer's `max_tokens`
//! is lowered to what remains, so one call cannot run far past the quota). The tokens the
//! provider reports are charged when the call ends. Operators have no quotas.

use std::sync::Arc;

use clove_abi::msg::{
    LlmConfigReply, LlmConfigRequest, LlmReportReply, LlmReportRequest, LlmStatsReply,
    LlmStatsRequest, ThinkReply, ThinkRequest,
};
use clove_abi::{ErrorCode, Opcode, WireError};

use crate::agents::Agent;
use crate::kernel::{Caller, Kernel};
use crate::llm::{Call, Outcome, Who};
use crate::sync::lock;

/// The calling agent, or `None` for an operator.
fn calling_agent(kernel: &Kernel, caller: &Caller) -> Result<Option<Arc<Agent>>, WireError> {
    if !caller.agent {
        return Ok(None);
    }
    kernel.agents.get(caller.id).map(Some).ok_or_else(|| {
        WireError::new(
            ErrorCode::NotFound,
            format!("agent {} is no longer running", caller.id),
        )
    })
}

/// Admits `call` against the agent's LLM permissions (see the module docs) and counts the
/// call; the scheduling identity of the caller.
fn admit(caller: &Caller, agent: Option<&Agent>, call: &mut Call) -> Result<Who, WireError> {
    let Some(agent) = agent else {
        return Ok(Who {
            id: caller.id,
            weight: 1,
        });
    };
    let mut perms = lock(&agent.perms);
    if !perms.can_think {
        return Err(WireError::new(
            ErrorCode::PermissionDenied,
            format!(
                "agent {} ({}) may not THINK: its permissions have can_think off",
                agent.id, agent.name
            ),
        ));
    }
    let llm = &mut perms.llm;
    if llm.max_calls > 0 && llm.calls_made >= llm.max_calls {
        return Err(WireError::new(
            ErrorCode::LimitExceeded,
            format!(
                "LLM quota exceeded: agent {} has made all {} of its THINK calls \
                 (permissions.llm.max_calls)",
                agent.id, llm.max_calls
            ),
        ));
    }
    if llm.max_tokens > 0 {
        let left = llm.max_tokens.saturating_sub(llm.tokens_used);
        if left <= call.est_input {
            return Err(WireError::new(
                ErrorCode::LimitExceeded,
                format!(
                    "LLM quota exceeded: agent {} has {left} of its {} tokens left and the \
                     prompt alone needs about {} (permissions.llm.max_tokens)",
                    agent.id, llm.max_tokens, call.est_input
                ),
            ));
        }
        let room = u32::try_from(left - call.est_input).unwrap_or(u32::MAX);
        call.prompt.max_tokens = Some(call.prompt.max_tokens.map_or(room, |m| m.min(room)));
    }
    llm.calls_made += 1;
    Ok(Who {
        id: caller.id,
        weight: llm.effective_weight(),
    })
}

/// Charges the tokens of a finished call to the agent's usage.
fn charge(agent: Option<&Agent>, tokens: u64) {
    if let Some(agent) = agent {
        let mut perms = lock(&agent.perms);
        perms.llm.tokens_used = perms.llm.tokens_used.saturating_add(tokens);
    }
}

/// THINK: checks and admits the request now (a refusal is answered at once, async or not),
/// then waits for the answer, or queues it for ASYNC_POLL and answers the accept reply.
pub async fn think(
    kernel: &Kernel,
    caller: &Caller,
    req: ThinkRequest,
) -> Result<ThinkReply, WireError> {
    let mut call = kernel.llm.prepare(&req)?;
    let agent = calling_agent(kernel, caller)?;
    let who = admit(caller, agent.as_deref(), &mut call)?;
    let llm = Arc::clone(&kernel.llm);
    let charged = agent.clone();
    let work = async move {
        let outcome: Result<Outcome, WireError> = llm.run(who, call).await;
        if let Ok(o) = &outcome {
            charge(
                charged.as_deref(),
                o.answer.usage.input + o.answer.usage.output,
            );
        }
        outcome.map(Outcome::reply)
    };
    if !req.is_async {
        return work.await;
    }
    match super::asyncs::spawn(kernel, caller, Opcode::Think, req.request_id, work) {
        Ok(id) => Ok(ThinkReply::accepted(id)),
        Err(e) => {
            // Refused before anything ran: the call admitted for it is given back.
            if let Some(agent) = &agent {
                let mut perms = lock(&agent.perms);
                perms.llm.calls_made = perms.llm.calls_made.saturating_sub(1);
            }
            Err(e)
        }
    }
}

/// LLM_REPORT: charges tokens an agent spent on a model it called itself, as one call.
/// `success` is false (with `error`) once the agent is past its quota; `quota_exceeded`
/// says the quota is used up (its next THINK would be refused). An operator's report is
/// counted in LLM_STATS only.
pub fn report(
    kernel: &Kernel,
    caller: &Caller,
    req: LlmReportRequest,
) -> Result<LlmReportReply, WireError> {
    kernel.llm.reported(caller.id, req.tokens);
    let Some(agent) = calling_agent(kernel, caller)? else {
        return Ok(LlmReportReply {
            success: true,
            tokens: req.tokens,
            quota_exceeded: false,
            error: None,
        });
    };
    let mut perms = lock(&agent.perms);
    let llm = &mut perms.llm;
    llm.tokens_used = llm.tokens_used.saturating_add(req.tokens);
    llm.calls_made = llm.calls_made.saturating_add(1);
    let over_tokens = llm.max_tokens > 0 && llm.tokens_used > llm.max_tokens;
    let over_calls = llm.max_calls > 0 && llm.calls_made > llm.max_calls;
    let used_up = (llm.max_tokens > 0 && llm.tokens_used >= llm.max_tokens)
        || (llm.max_calls > 0 && llm.calls_made >= llm.max_calls);
    let error = (over_tokens || over_calls).then(|| {
        format!(
            "LLM quota exceeded: agent {} has used {} of {} tokens and made {} of {} calls \
             (0: unlimited)",
            agent.id, llm.tokens_used, llm.max_tokens, llm.calls_made, llm.max_calls
        )
    });
    Ok(LlmReportReply {
        success: error.is_none(),
        tokens: req.tokens,
        quota_exceeded: used_up,
        error,
    })
}

/// LLM_STATS: an agent sees its own row; an operator its own connection's and its agents'
/// (root: everyone's).
pub fn stats(
    kernel: &Kernel,
    caller: &Caller,
    req: LlmStatsRequest,
) -> Result<LlmStatsReply, WireError> {
    let agents = &kernel.agents;
    let may_see = |id: u32| {
        id == caller.id
            || (!caller.agent
                && (caller.uid == 0 || agents.get(id).is_some_and(|a| a.owner_uid == caller.uid)))
    };
    if let Some(id) = req.agent_id {
        if !may_see(id) {
            return Err(WireError::new(
                ErrorCode::PermissionDenied,
                format!("LLM figures of agent {id}: not the caller's"),
            ));
        }
    }
    let (provider, model) = kernel.llm.default_target();
    Ok(LlmStatsReply {
        success: true,
        provider: provider.to_owned(),
        model,
        scheduler: kernel.llm.scheduler_stats(),
        agents: kernel.llm.agent_stats(
            |id| may_see(id) && req.agent_id.is_none_or(|want| want == id),
            |id| agents.get(id).map(|a| a.name.clone()),
        ),
    })
}

/// LLM_CONFIG: operators running as root or as the kernel's own user may change the
/// scheduler (while it is idle); anyone may read it.
pub fn config(
    kernel: &Kernel,
    caller: &Caller,
    req: LlmConfigRequest,
) -> Result<LlmConfigReply, WireError> {
    let changes = req.scheduler.is_some() || req.max_in_flight.is_some();
    let kernel_uid = nix::unistd::geteuid().as_raw();
    if changes && (caller.agent || (caller.uid != 0 && caller.uid != kernel_uid)) {
        return Err(WireError::new(
            ErrorCode::PermissionDenied,
            "LLM_CONFIG: only an operator running as root or as the kernel's user may change \
             the LLM scheduler",
        ));
    }
    let scheduler = kernel
        .llm
        .reconfigure(req.scheduler.as_deref(), req.max_in_flight)?;
    if changes {
        kernel.audit.record(
            crate::audit::for_caller(
                kernel,
                caller,
                clove_abi::msg::AuditCategory::Security,
                "LLM_CONFIG_CHANGED",
            )
            .details(serde_json::json!({
                "policy": scheduler.policy, "max_in_flight": scheduler.max_in_flight})),
        );
    }
    Ok(LlmConfigReply {
        success: true,
        scheduler,
    })
}
