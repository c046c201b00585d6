//! SUBSCRIBE, UNSUBSCRIBE, POLL_EVENTS, EMIT: thin handlers over [`crate::events`].

use clove_abi::msg::{
    EmitReply, EmitRequest, PollEventsReply, PollEventsRequest, SubscribeReply, SubscribeRequest,
    UnsubscribeReply, UnsubscribeRequest,
};
use clove_abi::WireError;

use super::ipc::wait_of;
use crate::events::{check_emit, Audience};
use crate::kernel::{Caller, Kernel};

/// SUBSCRIBE.
pub fn subscribe(
    kernel: &Kernel,
    caller: &Caller,
    req: SubscribeRequest,
) -> Result<SubscribeReply, WireError> {
    let subscribed = kernel.events.subscribe(caller.id, &req.event_types())?;
    Ok(SubscribeReply {
        success: true,
        subscribed,
    })
}

/// UNSUBSCRIBE.
pub fn unsubscribe(
    kernel: &Kernel,
    caller: &Caller,
    req: UnsubscribeRequest,
) -> Result<UnsubscribeReply, WireError> {
    let names = req.event_types();
    if names.is_empty() && !req.all {
        return Err(WireError::invalid_request(
            "event_types: name the event types, or give all: true",
        ));
    }
    let removed = kernel.events.unsubscribe(caller.id, &names, req.all);
    Ok(UnsubscribeReply {
        success: true,
        unsubscribed: Some(removed),
    })
}

/// POLL_EVENTS: the caller's events, waiting up to `wait_ms` for the first (ends early when
/// the kernel shuts down).
pub async fn poll(
    kernel: &Kernel,
    caller: &Caller,
    req: PollEventsRequest,
) -> Result<PollEventsReply, WireError> {
    let max = usize::try_from(req.max).unwrap_or(usize::MAX);
    let polled = tokio::select! {
        biased;
        p = kernel.events.poll(caller.id, max, wait_of(req.wait_ms)) => p,
        () = kernel.stopping.cancelled() => crate::events::Polled::default(),
    };
    Ok(PollEventsReply {
        success: true,
        count: polled.events.len() as u64,
        events: polled.events,
        dropped: (polled.dropped > 0).then_some(polled.dropped),
    })
}

/// EMIT: a custom event (or `CUSTOM`) from the caller to its subscribers.
pub fn emit(kernel: &Kernel, caller: &Caller, req: EmitRequest) -> Result<EmitReply, WireError> {
    let Some(name) = req.event_type() else {
        return Err(WireError::invalid_request("event_type: required"));
    };
    check_emit(name)?;
    let name = name.to_owned();
    kernel
        .events
        .publish(&name, req.data, caller.id, Audience::Everyone);
    Ok(EmitReply {
        success: true,
        event: name,
    })
}
