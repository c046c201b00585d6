//! Host access: what agents and operators reach outside the kernel through checked syscalls
//! (READ and WRITE in [`files`], EXEC in [`exec`]). See docs/host-access.md.

pub mod exec;
pub mod files;

use clove_abi::msg::AuditCategory;
use clove_abi::WireError;

use crate::audit::for_caller;
use crate::kernel::{Caller, Kernel};

/// Records a host access in the audit log (SECURITY): what was asked (`details`, metadata
/// only: paths, commands, sizes; never contents), by whom, and how it ended. Refusals are
/// also recorded by the dispatcher as `permission_denied`.
pub(crate) fn audit<T>(
    kernel: &Kernel,
    caller: &Caller,
    event: &str,
    mut details: serde_json::Value,
    result: &Result<T, WireError>,
) {
    if !kernel.audit.logs(AuditCategory::Security) {
        return;
    }
    if let Err(e) = result {
        details["error"] = serde_json::json!({"code": e.code.as_str(), "message": e.message});
    }
    kernel.audit.record(
        for_caller(kernel, caller, AuditCategory::Security, event)
            .success(result.is_ok())
            .details(details),
    );
}
