//! HTTP: a request the kernel makes for the caller (see `host::http` for the address policy,
//! redirects and caps). Sync, or with `async: true` through ASYNC_POLL.

use std::sync::Arc;

use clove_abi::msg::{HttpReply, HttpRequest};
use clove_abi::{ErrorCode, Opcode, WireError};

use crate::host::http::Gate;
use crate::kernel::{Caller, Kernel};

/// What the caller may reach: an agent's permission lists as they are now; an operator is
/// not limited by lists (the address policy applies to everyone).
fn gate(kernel: &Kernel, caller: &Caller) -> Result<Gate, WireError> {
    if !caller.agent {
        return Ok(Gate {
            who: format!("operator connection {} (uid {})", caller.id, caller.uid),
            perms: None,
        });
    }
    let agent = kernel.agents.get(caller.id).ok_or_else(|| {
        WireError::new(
            ErrorCode::NotFound,
            format!("agent {} is no longer running", caller.id),
        )
    })?;
    Ok(Gate {
        who: format!("agent {} ({})", agent.id, agent.name),
        perms: Some(agent.permissions()),
    })
}

/// HTTP: checks the request and its first URL now (a refusal is answered at once, async or
/// not), then runs it, or queues it for ASYNC_POLL and answers the accept reply.
pub async fn http(
    kernel: &Kernel,
    caller: &Caller,
    req: HttpRequest,
) -> Result<HttpReply, WireError> {
    let (is_async, request_id) = (req.is_async, req.request_id);
    let prepared = kernel.http.prepare(gate(kernel, caller)?, req)?;
    if !is_async {
        return kernel.http.run(prepared).await;
    }
    let http = Arc::clone(&kernel.http);
    let id = super::asyncs::spawn(kernel, caller, Opcode::Http, request_id, async move {
        http.run(prepared).await
    })?;
    Ok(HttpReply::accepted(id))
}
