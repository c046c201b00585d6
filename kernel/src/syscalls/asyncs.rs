//! ASYNC_POLL, and [`spawn`]: how any syscall with `async: true` (HTTP now; EXEC and THINK
//! next) hands its work to `crate::asyncs`.

use std::future::Future;

use clove_abi::codec::{self, Codec};
use clove_abi::msg::{AsyncPollReply, AsyncPollRequest, EventType};
use clove_abi::{ErrorCode, Opcode, WireError};
use serde::Serialize;

use super::ipc::wait_of;
use crate::events::Audience;
use crate::kernel::{Caller, Kernel};

/// Runs `work` (the syscall's sync handler, after its checks) for `caller` in the
/// background and queues its reply, as the JSON the sync request would have been answered
/// with, for ASYNC_POLL. A `permission_denied` found while running (a redirect, a DNS
/// answer) publishes SYSCALL_BLOCKED as a sync refusal does. Returns the request id for the
/// accept reply; `limit_exceeded` when the caller's queue is full.
pub fn spawn<T, F>(
    kernel: &Kernel,
    caller: &Caller,
    opcode: Opcode,
    request_id: Option<u64>,
    work: F,
) -> Result<u64, WireError>
where
    T: Serialize,
    F: Future<Output = Result<T, WireError>> + Send + 'static,
{
    let events = std::sync::Arc::clone(&kernel.events);
    let caller_id = caller.id;
    kernel
        .asyncs
        .spawn(caller.id, opcode, request_id, async move {
            let result = work.await;
            if let Err(e) = &result {
                if e.code == ErrorCode::PermissionDenied {
                    events.kernel(
                        EventType::SyscallBlocked,
                        serde_json::json!({"agent_id": caller_id, "opcode": clove_abi::opcode::label(opcode.as_u8()),
                                           "reason": e.message, "async": true}),
                        caller_id,
                        Audience::Everyone,
                    );
                }
            }
            let bytes = codec::encode_reply(Codec::Json, opcode.as_u8(), result.as_ref())
                .unwrap_or_else(|e| {
                    let e = WireError::from(e);
                    codec::encode_reply::<()>(Codec::Json, opcode.as_u8(), Err(&e))
                        .unwrap_or_default()
                });
            String::from_utf8_lossy(&bytes).into_owned()
        })
}

/// ASYNC_POLL: up to `max` finished results, oldest first; with `wait_ms`, waits for a first
/// one when none is ready.
pub async fn poll(
    kernel: &Kernel,
    caller: &Caller,
    req: AsyncPollRequest,
) -> Result<AsyncPollReply, WireError> {
    let max = usize::try_from(req.max).unwrap_or(usize::MAX);
    let results = tokio::select! {
        biased;
        r = kernel.asyncs.poll(caller.id, max, wait_of(req.wait_ms)) => r,
        () = kernel.stopping.cancelled() => Vec::new(),
    };
    Ok(AsyncPollReply {
        success: true,
        count: results.len() as u64,
        results,
    })
}
