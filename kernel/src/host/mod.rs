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

/// Records a host access in the audit log (`category`): what was asked (`details`, metadata
/// only: paths, commands, URLs, sizes; never contents), by whom, and how it ended. Refusals
/// are also recorded by the dispatcher as `permission_denied`.
pub(crate) fn audit<T>(
    kernel: &Kernel,
    caller: &Caller,
    category: AuditCategory,
    event: &str,
    mut details: serde_json::Value,
    result: &Result<T, WireError>,
) {
    if !kernel.audit.logs(category) {
        return;
    }
    if let Err(e) = result {
        details["error"] = serde_json::json!({"code": e.code.as_str(), "message": e.message});
    }
    kernel.audit.record(
        for_caller(kernel, caller, category, event)
            .success(result.is_ok())
            .details(details),
    );
}
