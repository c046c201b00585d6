//! STORE, FETCH, DELETE, KEYS: thin handlers over [`crate::state`].

use clove_abi::msg::{
    DeleteReply, DeleteRequest, FetchReply, FetchRequest, KeysReply, KeysRequest, StoreReply,
    StoreRequest,
};
use clove_abi::WireError;

use crate::kernel::{Caller, Kernel};

/// STORE: replies once the write is durable.
pub async fn store(
    kernel: &Kernel,
    caller: &Caller,
    req: StoreRequest,
) -> Result<StoreReply, WireError> {
    kernel.state.store(caller.id, req).await
}

/// FETCH.
pub async fn fetch(
    kernel: &Kernel,
    caller: &Caller,
    req: FetchRequest,
) -> Result<FetchReply, WireError> {
    kernel.state.fetch(caller.id, req).await
}

/// DELETE.
pub async fn delete(
    kernel: &Kernel,
    caller: &Caller,
    req: DeleteRequest,
) -> Result<DeleteReply, WireError> {
    kernel.state.delete(caller.id, req).await
}

/// KEYS.
pub async fn keys(
    kernel: &Kernel,
    caller: &Caller,
    req: KeysRequest,
) -> Result<KeysReply, WireError> {
    kernel.state.keys(caller.id, req).await
}
