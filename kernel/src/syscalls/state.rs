//! STORE, FETCH, DELETE, KEYS: thin handlers over [`crate::state`].

use clove_abi::msg::{
    AuditCategory, DeleteReply, DeleteRequest, FetchReply, FetchRequest, KeysReply, KeysRequest,
    StoreReply, StoreRequest,
};
use clove_abi::WireError;

use crate::kernel::{Caller, Kernel};

/// Audits a write (STATE_STORE): the key, its scope and version; never the value.
fn audit_write(
    kernel: &Kernel,
    caller: &Caller,
    event_type: &str,
    mut details: serde_json::Value,
    r: Result<(), &WireError>,
) {
    if let Err(e) = r {
        details["code"] = serde_json::json!(e.code);
    }
    kernel.audit.record(
        crate::audit::for_caller(kernel, caller, AuditCategory::StateStore, event_type)
            .success(r.is_ok())
            .details(details),
    );
}

/// STORE: replies once the write is durable. Audited (STATE_STORE, `KEY_STORED`).
pub async fn store(
    kernel: &Kernel,
    caller: &Caller,
    req: StoreRequest,
) -> Result<StoreReply, WireError> {
    if !kernel.audit.logs(AuditCategory::StateStore) {
        return kernel.state.store(caller.id, req).await;
    }
    let mut details = serde_json::json!({"key": req.key, "scope": req.scope, "ttl": req.ttl});
    let r = kernel.state.store(caller.id, req).await;
    if let Ok(ok) = &r {
        details["version"] = serde_json::json!(ok.version);
    }
    audit_write(kernel, caller, "KEY_STORED", details, r.as_ref().map(drop));
    r
}

/// FETCH.
pub async fn fetch(
    kernel: &Kernel,
    caller: &Caller,
    req: FetchRequest,
) -> Result<FetchReply, WireError> {
    kernel.state.fetch(caller.id, req).await
}

/// DELETE. Audited (STATE_STORE, `KEY_DELETED`).
pub async fn delete(
    kernel: &Kernel,
    caller: &Caller,
    req: DeleteRequest,
) -> Result<DeleteReply, WireError> {
    if !kernel.audit.logs(AuditCategory::StateStore) {
        return kernel.state.delete(caller.id, req).await;
    }
    let mut details = serde_json::json!({"key": req.key});
    let r = kernel.state.delete(caller.id, req).await;
    if let Ok(ok) = &r {
        details["deleted"] = serde_json::json!(ok.deleted);
    }
    audit_write(kernel, caller, "KEY_DELETED", details, r.as_ref().map(drop));
    r
}

/// KEYS.
pub async fn keys(
    kernel: &Kernel,
    caller: &Caller,
    req: KeysRequest,
) -> Result<KeysReply, WireError> {
    kernel.state.keys(caller.id, req).await
}
