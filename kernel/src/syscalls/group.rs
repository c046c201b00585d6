//! GROUP_CREATE, GROUP_LIST, GROUP_STOP: thin handlers over [`crate::supervisor::group`].

use clove_abi::msg::{
    GroupCreateReply, GroupCreateRequest, GroupListReply, GroupListRequest, GroupStopReply,
    GroupStopRequest,
};
use clove_abi::{ErrorCode, WireError};

use crate::kernel::{Caller, Kernel};

/// The operator uid a caller acts for: its own, or for an agent its owner's.
fn owner_of(kernel: &Kernel, caller: &Caller) -> Result<u32, WireError> {
    if !caller.agent {
        return Ok(caller.uid);
    }
    kernel
        .agents
        .get(caller.id)
        .map(|a| a.owner_uid)
        .ok_or_else(|| WireError::new(ErrorCode::NotFound, "the calling agent has exited"))
}

/// GROUP_CREATE: replies once the group's spec is durable.
pub async fn create(
    kernel: &Kernel,
    caller: &Caller,
    req: GroupCreateRequest,
) -> Result<GroupCreateReply, WireError> {
    let owner = owner_of(kernel, caller)?;
    let group = kernel.groups.create_saved(req, owner, owner == 0).await?;
    Ok(GroupCreateReply {
        success: true,
        group,
    })
}

/// GROUP_LIST.
pub fn list(
    kernel: &Kernel,
    _caller: &Caller,
    req: GroupListRequest,
) -> Result<GroupListReply, WireError> {
    Ok(GroupListReply {
        success: true,
        groups: kernel.groups.list(req.name.as_deref())?,
    })
}

/// GROUP_STOP: replies once the whole tree is down.
pub async fn stop(
    kernel: &Kernel,
    caller: &Caller,
    req: GroupStopRequest,
) -> Result<GroupStopReply, WireError> {
    let owner = owner_of(kernel, caller)?;
    let group = kernel.groups.get(&req.name).ok_or_else(|| {
        WireError::new(
            ErrorCode::NotFound,
            format!("no group named {:?}", req.name),
        )
    })?;
    if owner != 0 && group.owner_uid != owner {
        return Err(WireError::new(
            ErrorCode::PermissionDenied,
            format!("stop group {:?}: not yours", req.name),
        ));
    }
    let stopped = kernel.groups.stop(&group).await?;
    // The group forgot its saved spec as it went; asking again (harmless) answers once that is
    // durable, so a kernel that dies right after this reply does not bring the group back.
    kernel.state.forget_group(&req.name).await?;
    Ok(GroupStopReply {
        success: true,
        name: req.name,
        stopped,
    })
}
