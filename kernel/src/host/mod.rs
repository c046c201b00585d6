//! Host access: what agents and operators reach outside the kernel through checked syscalls:
//! files (READ and WRITE in [`files`]), commands (EXEC in [`exec`]) and the network (HTTP in
//! [`http`]). The handlers check who may, call in here and shape the reply. See
//! docs/host-access.md.

pub mod exec;
pub mod files;
pub mod http;

use clove_abi::msg::AuditCategory;
use clove_abi::WireError;

use crate::audit::for_caller;
use crate::kernel::{Caller, Kernel};

/// Runs `work` (a host access) and records it in the audit log (`category`): what was asked
/// (`details`: metadata only, paths, commands, URLs, sizes; never contents), by whom, and how
/// it ended (`outcome` adds what the reply tells). Refusals are also recorded by the
/// dispatcher as `permission_denied`.
pub(crate) async fn audited<T>(
    kernel: &Kernel,
    caller: &Caller,
    (category, event): (AuditCategory, &str),
    mut details: serde_json::Value,
    work: impl std::future::Future<Output = Result<T, WireError>>,
    outcome: impl FnOnce(&T, &mut serde_json::Value),
) -> Result<T, WireError> {
    let result = work.await;
    if kernel.audit.logs(category) {
        match &result {
            Ok(reply) => outcome(reply, &mut details),
            Err(e) => {
                details["error"] =
                    serde_json::json!({"code": e.code.as_str(), "message": e.message});
            }
        }
        kernel.audit.record(
            for_caller(kernel, caller, category, event)
                .success(result.is_ok())
                .details(details),
        );
    }
    result
}
