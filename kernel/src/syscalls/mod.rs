//! Syscall dispatch: one request frame in, one reply payload out.
//!
//! Every opcode is answered, never echoed and never left hanging: implemented opcodes by their
//! handler; original opcodes not implemented yet with `not_implemented` (after their payload
//! has been validated against the typed request, so a client learns about a malformed request
//! first); WORLD_* and TUNNEL_* with `not_supported`; unassigned bytes with `unknown_opcode`.
//! Handlers are thin: decode, call the subsystem, shape the reply. Errors become wire errors in
//! one place ([`reply`]).

pub(crate) mod asyncs;
mod audit;
mod events;
mod group;
mod http;
mod ipc;
mod lifecycle;
mod llm;
mod metrics;
mod session;
mod state;
pub mod stats;

use clove_abi::codec::{self, Codec};
use clove_abi::msg::{AuditCategory, Syscall};
use clove_abi::{Opcode, WireError};
use serde::Serialize;
use serde_json::json;

use crate::host;
use crate::kernel::{Caller, Kernel};

/// A decoded frame.
#[derive(Debug)]
pub struct Request {
    /// The payload codec (and the reply's).
    pub codec: Codec,
    /// The raw opcode byte.
    pub opcode: u8,
    /// The payload.
    pub payload: Vec<u8>,
}

/// What to send back.
#[derive(Debug)]
pub struct Response {
    /// The reply payload.
    pub payload: Vec<u8>,
    /// Close the connection after sending (EXIT).
    pub close: bool,
    /// The request was refused by a check (`permission_denied`): why, for SYSCALL_BLOCKED.
    pub blocked: Option<String>,
    /// The reply is an error (for the SYSCALL audit entry).
    pub failed: bool,
    /// The error's code when the reply is one (for the metrics' `result` label); `None`
    /// for a success.
    pub code: Option<clove_abi::ErrorCode>,
}

impl Response {
    fn keep(payload: Vec<u8>) -> Response {
        Response {
            payload,
            close: false,
            blocked: None,
            failed: false,
            code: None,
        }
    }
}

/// Like [`typed`] for async handlers.
macro_rules! typed_async {
    ($req:expr, $f:expr) => {
        match decode(&$req) {
            Ok(r) => reply_owned(&$req, $f(r).await),
            Err(e) => error($req.codec, $req.opcode, &e),
        }
    };
}

/// Answers one request. A refusal by a check is published as SYSCALL_BLOCKED and audited
/// (SECURITY); with `log_syscalls` on, every request is audited (SYSCALL).
pub async fn handle(kernel: &Kernel, caller: &Caller, req: Request) -> Response {
    let opcode = req.opcode;
    let started = std::time::Instant::now();
    // Recording: the payload is kept only while recording, for recorded opcodes.
    let recorded = kernel
        .recorder
        .wants(opcode)
        .then(|| (req.codec, req.payload.clone()));
    let resp = dispatch(kernel, caller, req).await;
    kernel
        .syscall_stats
        .observe(opcode, resp.code.as_ref(), started.elapsed());
    if let Some((codec, payload)) = recorded {
        crate::record::observe(
            kernel,
            caller,
            opcode,
            codec,
            &payload,
            &resp.payload,
            resp.failed,
        );
    }
    if let Some(why) = &resp.blocked {
        kernel.events.kernel(
            clove_abi::msg::EventType::SyscallBlocked,
            serde_json::json!({"agent_id": caller.id, "opcode": clove_abi::opcode::label(opcode),
                               "reason": why}),
            caller.id,
            crate::events::Audience::Everyone,
        );
        // The refusal is the kernel's own decision; who asked is in the details.
        kernel.audit.record(
            crate::audit::for_caller(kernel, caller, AuditCategory::Security, "PERMISSION_DENIED")
                .success(false)
                .decided_by(crate::audit::DecidedBy::Kernel)
                .details(serde_json::json!({
                    "opcode": opcode_name(opcode), "reason": why,
                    "caller": crate::audit::DecidedBy::of(caller).to_string(),
                    "uid": caller.uid, "pid": caller.pid})),
        );
    }
    if kernel.audit.logs(AuditCategory::Syscall) {
        kernel.audit.record(
            crate::audit::for_caller(kernel, caller, AuditCategory::Syscall, "SYSCALL")
                .success(!resp.failed)
                .details(serde_json::json!({
                    "opcode": opcode_name(opcode),
                    "latency_us": u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX)})),
        );
    }
    resp
}

/// An opcode's name for the audit (`KILL`; an unassigned byte as `0x13`).
fn opcode_name(opcode: u8) -> String {
    Opcode::from_u8(opcode).map_or_else(|| format!("0x{opcode:02X}"), |o| o.name().to_owned())
}

/// Whether a request of this opcode may be dropped halfway when its client goes away: it
/// only reads or waits, and whatever it changes, it changes in one step (a message is taken
/// or delivered under one lock).
pub fn cancel_safe(opcode: u8) -> bool {
    matches!(
        Opcode::from_u8(opcode),
        Some(
            Opcode::Recv
                | Opcode::PollEvents
                | Opcode::Wait
                | Opcode::Logs
                | Opcode::Send
                | Opcode::SendBatch
                | Opcode::Hello
                | Opcode::List
                | Opcode::GroupList
                | Opcode::Fetch
                | Opcode::Keys
                | Opcode::GetAuditLog
                | Opcode::AsyncPoll
                // Changes nothing in the kernel; a request to a slow server is not worth
                // finishing for a client that has gone (async ones are queued before any
                // await, and cancelled with their caller's release).
                | Opcode::Http
                // A dropped THINK leaves the queue, or frees its slot, and its agent's call
                // stays counted; the answer would have nobody to go to.
                | Opcode::Think
                | Opcode::LlmStats
                // Read only.
                | Opcode::MetricsSystem
                | Opcode::MetricsAgent
                | Opcode::MetricsAllAgents
                | Opcode::MetricsCgroup
        )
    )
}

/// Runs the handler of one request.
async fn dispatch(kernel: &Kernel, caller: &Caller, req: Request) -> Response {
    let Some(op) = Opcode::from_u8(req.opcode) else {
        return error(
            req.codec,
            req.opcode,
            &WireError::unknown_opcode(req.opcode),
        );
    };
    match op {
        // Raw opcodes: NOOP echoes its bytes whatever they are; EXIT ignores its payload (the
        // original SDK sends it empty) and answers the raw text `goodbye`.
        Opcode::Noop => Response::keep(req.payload),
        Opcode::Exit => Response {
            payload: clove_abi::msg::GOODBYE.to_vec(),
            close: true,
            ..Response::keep(Vec::new())
        },
        Opcode::Hello => typed(&req, |r| session::hello(kernel, caller, r)),
        Opcode::List => typed(&req, |r| lifecycle::list(kernel, caller, r)),
        Opcode::Spawn => typed_async!(req, |r| lifecycle::spawn(kernel, caller, r)),
        Opcode::Kill => typed_async!(req, |r| lifecycle::kill(kernel, caller, r)),
        Opcode::Pause => typed_async!(req, |r| lifecycle::pause(kernel, caller, r)),
        Opcode::Resume => typed_async!(req, |r| lifecycle::resume(kernel, caller, r)),
        Opcode::Wait => typed_async!(req, |r| lifecycle::wait(kernel, caller, r)),
        Opcode::Logs => typed_async!(req, |r| lifecycle::logs(kernel, caller, r)),
        Opcode::Exec => typed_async!(req, |r: clove_abi::msg::ExecRequest| host::audited(
            kernel,
            caller,
            (AuditCategory::Security, "EXEC"),
            json!({"command": r.command, "argv": r.argv, "cwd": r.cwd}),
            host::exec::exec(kernel, caller, r),
            |reply, details| {
                if reply.is_accepted() {
                    // Accepted now, run later: the outcome is in ASYNC_POLL.
                    details["async"] = true.into();
                } else {
                    details["exit_code"] = reply.exit_code.into();
                    details["timed_out"] = reply.timed_out.unwrap_or(false).into();
                }
            },
        )),
        Opcode::Read => typed_async!(req, |r: clove_abi::msg::ReadRequest| host::audited(
            kernel,
            caller,
            (AuditCategory::Security, "FILE_READ"),
            json!({"path": r.path, "offset": r.offset, "limit": r.limit}),
            host::files::read(kernel, caller, r),
            |_, _| {},
        )),
        Opcode::Write => typed_async!(req, |r: clove_abi::msg::WriteRequest| host::audited(
            kernel,
            caller,
            (AuditCategory::Security, "FILE_WRITE"),
            json!({"path": r.path, "mode": r.mode.as_str(), "bytes": r.content.len(),
                   "create_dirs": r.create_dirs}),
            host::files::write(kernel, caller, r),
            |_, _| {},
        )),
        Opcode::GetPerms => typed(&req, |r| crate::perms::get(kernel, caller, r)),
        Opcode::SetPerms => typed_async!(req, |r| crate::perms::set(kernel, caller, r)),
        Opcode::GroupCreate => typed_async!(req, |r| group::create(kernel, caller, r)),
        Opcode::GroupList => typed(&req, |r| group::list(kernel, caller, r)),
        Opcode::GroupStop => typed_async!(req, |r| group::stop(kernel, caller, r)),
        Opcode::Register => typed(&req, |r| ipc::register(kernel, caller, r)),
        Opcode::Send => {
            let len = req.payload.len();
            typed_async!(req, |r| ipc::send(kernel, caller, r, len))
        }
        Opcode::SendBatch => {
            let len = req.payload.len();
            typed_async!(req, |r| ipc::send_batch(kernel, caller, r, len))
        }
        Opcode::Recv => typed_async!(req, |r| ipc::recv(kernel, caller, r)),
        Opcode::Broadcast => {
            let len = req.payload.len();
            typed_async!(req, |r| ipc::broadcast(kernel, caller, r, len))
        }
        Opcode::Subscribe => typed(&req, |r| events::subscribe(kernel, caller, r)),
        Opcode::Unsubscribe => typed(&req, |r| events::unsubscribe(kernel, caller, r)),
        Opcode::PollEvents => typed_async!(req, |r| events::poll(kernel, caller, r)),
        Opcode::Emit => typed(&req, |r| events::emit(kernel, caller, r)),
        Opcode::Store => typed_async!(req, |r| state::store(kernel, caller, r)),
        Opcode::Fetch => typed_async!(req, |r| state::fetch(kernel, caller, r)),
        Opcode::Delete => typed_async!(req, |r| state::delete(kernel, caller, r)),
        Opcode::Keys => typed_async!(req, |r| state::keys(kernel, caller, r)),
        Opcode::GetAuditLog => typed_async!(req, |r| audit::get_log(kernel, caller, r)),
        Opcode::SetAuditConfig => typed_async!(req, |r| audit::set_config(kernel, caller, r)),
        // The URL and method, never headers (they may carry credentials) or bodies.
        Opcode::Http => typed_async!(req, |r: clove_abi::msg::HttpRequest| host::audited(
            kernel,
            caller,
            (AuditCategory::Network, "HTTP_REQUEST"),
            json!({"url": r.url, "method": r.method, "async": r.is_async}),
            http::http(kernel, caller, r),
            |reply, details| details["status_code"] = reply.status_code.into(),
        )),
        Opcode::AsyncPoll => typed_async!(req, |r| asyncs::poll(kernel, caller, r)),
        // Metadata only: never the prompt or the answer.
        Opcode::Think => typed_async!(req, |r: clove_abi::msg::ThinkRequest| host::audited(
            kernel,
            caller,
            (AuditCategory::Resource, "LLM_THINK"),
            json!({"model": r.model, "async": r.is_async, "prompt_bytes": r.prompt.len(),
                   "image": r.image.is_some(), "tools": r.tools.is_some()}),
            llm::think(kernel, caller, r),
            |reply, details| {
                if !reply.is_accepted() {
                    details["provider"] = reply.provider.clone().into();
                    details["model"] = reply.model.clone().into();
                    details["tokens"] = reply.tokens.into();
                    details["queue_ms"] = reply.queue_ms.into();
                }
            },
        )),
        Opcode::LlmReport => typed(&req, |r| llm::report(kernel, caller, r)),
        Opcode::LlmStats => typed(&req, |r| llm::stats(kernel, caller, r)),
        Opcode::LlmConfig => typed(&req, |r| llm::config(kernel, caller, r)),
        Opcode::MetricsSystem => typed_async!(req, |r| metrics::system(kernel, caller, r)),
        Opcode::MetricsAgent => typed_async!(req, |r| metrics::agent(kernel, caller, r)),
        Opcode::MetricsAllAgents => typed_async!(req, |r| metrics::all_agents(kernel, caller, r)),
        Opcode::MetricsCgroup => typed_async!(req, |r| metrics::cgroup(kernel, caller, r)),
        Opcode::RecordStart => typed(&req, |r| crate::record::start(kernel, caller, r)),
        Opcode::RecordStop => typed(&req, |r| crate::record::stop(kernel, caller, r)),
        Opcode::RecordStatus => typed(&req, |r| crate::record::status(kernel, caller, r)),
        Opcode::ReplayStart => typed(&req, |r| crate::record::replay_start(kernel, caller, r)),
        Opcode::ReplayStatus => typed(&req, |r| crate::record::replay_status(kernel, caller, r)),
        op if op.is_world_or_tunnel() => {
            error(req.codec, req.opcode, &WireError::not_supported(op))
        }
        op => match validate(op, req.codec, &req.payload) {
            Ok(()) => error(req.codec, req.opcode, &WireError::not_implemented(op)),
            Err(e) => error(req.codec, req.opcode, &e),
        },
    }
}

/// Decodes `req` as `R`, runs `f`, encodes its reply or error.
fn typed<R: Syscall>(req: &Request, f: impl FnOnce(R) -> Result<R::Reply, WireError>) -> Response {
    let result = decode::<R>(req).and_then(f);
    reply(req.codec, req.opcode, result.as_ref())
}

/// Decodes the request payload as `R`.
fn decode<R: Syscall>(req: &Request) -> Result<R, WireError> {
    codec::decode_request::<R>(req.codec, &req.payload).map_err(WireError::from)
}

/// Encodes an async handler's result.
fn reply_owned<T: Serialize>(req: &Request, result: Result<T, WireError>) -> Response {
    reply(req.codec, req.opcode, result.as_ref())
}

/// The one place a handler's result becomes reply bytes.
fn reply<T: Serialize>(codec: Codec, opcode: u8, result: Result<&T, &WireError>) -> Response {
    if let Err(e) = result {
        tracing::debug!(opcode = %clove_abi::opcode::label(opcode), code = %e.code, "{}", e.message);
    }
    let blocked = match result {
        Err(e) if e.code == clove_abi::ErrorCode::PermissionDenied => Some(e.message.clone()),
        _ => None,
    };
    match codec::encode_reply(codec, opcode, result) {
        Ok(bytes) => Response {
            blocked,
            failed: result.is_err(),
            code: result.err().map(|e| e.code.clone()),
            ..Response::keep(bytes)
        },
        Err(e) => {
            tracing::error!(opcode = %clove_abi::opcode::label(opcode), "{e}");
            error(codec, opcode, &WireError::from(e))
        }
    }
}

/// An error reply. Encoding an error cannot fail; if it ever did, send a fixed JSON error.
pub fn error(codec: Codec, opcode: u8, err: &WireError) -> Response {
    let bytes = codec::encode_reply::<()>(codec, opcode, Err(err)).unwrap_or_else(|_| {
        br#"{"success":false,"error":"internal: cannot encode error","code":"internal"}"#.to_vec()
    });
    Response {
        failed: true,
        code: Some(err.code.clone()),
        ..Response::keep(bytes)
    }
}

macro_rules! validators {
    ($( $op:ident => $req:ty, $reply:ty; )*) => {
        /// Decodes the payload as the opcode's typed request, to report a malformed request
        /// before anything else.
        fn validate(op: Opcode, codec: Codec, payload: &[u8]) -> Result<(), WireError> {
            match op {
                $( Opcode::$op => codec::decode_request::<$req>(codec, payload)
                    .map(drop)
                    .map_err(WireError::from), )*
                _ => Ok(()),
            }
        }
    };
}
clove_abi::for_each_syscall!(validators);

/// Names of the opcodes this kernel implements, for HELLO.
pub const IMPLEMENTED: &[Opcode] = &[
    Opcode::Noop,
    Opcode::Spawn,
    Opcode::Kill,
    Opcode::List,
    Opcode::Pause,
    Opcode::Resume,
    Opcode::Wait,
    Opcode::Logs,
    Opcode::Register,
    Opcode::Send,
    Opcode::SendBatch,
    Opcode::GroupCreate,
    Opcode::GroupList,
    Opcode::GetPerms,
    Opcode::SetPerms,
    Opcode::Read,
    Opcode::Write,
    Opcode::Exec,
    Opcode::GroupStop,
    Opcode::Recv,
    Opcode::Broadcast,
    Opcode::Subscribe,
    Opcode::Unsubscribe,
    Opcode::PollEvents,
    Opcode::Emit,
    Opcode::Store,
    Opcode::Fetch,
    Opcode::Delete,
    Opcode::Keys,
    Opcode::GetAuditLog,
    Opcode::SetAuditConfig,
    Opcode::Http,
    Opcode::AsyncPoll,
    Opcode::Think,
    Opcode::LlmReport,
    Opcode::LlmStats,
    Opcode::LlmConfig,
    Opcode::RecordStart,
    Opcode::RecordStop,
    Opcode::RecordStatus,
    Opcode::ReplayStart,
    Opcode::ReplayStatus,
    Opcode::MetricsSystem,
    Opcode::MetricsAgent,
    Opcode::MetricsAllAgents,
    Opcode::MetricsCgroup,
    Opcode::Hello,
    Opcode::Exit,
];
