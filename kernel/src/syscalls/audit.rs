//! GET_AUDIT_LOG, SET_AUDIT_CONFIG: thin handlers over [`crate::audit`].

use clove_abi::msg::{
    GetAuditLogReply, GetAuditLogRequest, SetAuditConfigReply, SetAuditConfigRequest,
};
use clove_abi::WireError;

use crate::kernel::{Caller, Kernel};

/// GET_AUDIT_LOG: what the caller may see (see [`crate::audit::Audit::get`]).
pub async fn get_log(
    kernel: &Kernel,
    caller: &Caller,
    req: GetAuditLogRequest,
) -> Result<GetAuditLogReply, WireError> {
    kernel
        .audit
        .get(caller, req, |id| kernel.agents.get(id).map(|a| a.owner_uid))
        .await
}

/// SET_AUDIT_CONFIG: root operators only; answers once the change is durable.
pub async fn set_config(
    kernel: &Kernel,
    caller: &Caller,
    req: SetAuditConfigRequest,
) -> Result<SetAuditConfigReply, WireError> {
    kernel.audit.set_config(caller, req).await
}
