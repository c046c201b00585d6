//! ASYNC_POLL: results of async EXEC, HTTP and THINK requests.
//!
//! A request sent with `async: true` is answered at once with an "accepted" reply
//! (`{success: true, async: true, request_id, status: "accepted"}`); the real reply is queued
//! and pulled later with ASYNC_POLL, as JSON text in [`AsyncResult::payload`].

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::codec::{decode_reply, Codec};
use crate::error::{DecodeError, WireError};
use crate::msg::syscall;
use crate::opcode::Opcode;

/// The `status` of an async-accept reply: `"accepted"`.
pub const ASYNC_ACCEPTED: &str = "accepted";

/// ASYNC_POLL `max` default: 10 results.
pub const DEFAULT_ASYNC_POLL_MAX: u32 = 10;

fn default_async_poll_max() -> u32 {
    DEFAULT_ASYNC_POLL_MAX
}

/// ASYNC_POLL `{max, wait_ms?}`: take finished async results, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct AsyncPollRequest {
    /// At most this many results (default 10).
    #[serde(default = "default_async_poll_max")]
    pub max: u32,
    /// Extension: when no result is ready, wait up to this many ms for one (absent or 0:
    /// answer at once, as the original).
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub wait_ms: Option<u64>,
}

impl Default for AsyncPollRequest {
    /// `max` 10, no wait.
    fn default() -> Self {
        AsyncPollRequest {
            max: DEFAULT_ASYNC_POLL_MAX,
            wait_ms: None,
        }
    }
}

/// ASYNC_POLL reply: `{success, results, count}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct AsyncPollReply {
    /// Always true (no finished result is not an error).
    pub success: bool,
    /// The results taken, oldest first.
    pub results: Vec<AsyncResult>,
    /// `results.len()`.
    pub count: u64,
}

/// One finished async request: `{request_id, opcode, opcode_name, payload}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct AsyncResult {
    /// The id the accept reply carried (the caller's `request_id`, or one the kernel chose).
    pub request_id: u64,
    /// The opcode of the request (`0x02` EXEC, `0x50` HTTP, `0x01` THINK).
    pub opcode: u8,
    /// The opcode's upper-case name (`"EXEC"`).
    pub opcode_name: String,
    /// The reply the request would have had synchronously, as JSON text (a success reply or an
    /// error object); read it with [`AsyncResult::reply`].
    pub payload: String,
}

impl AsyncResult {
    /// A result for `opcode` whose sync reply is the JSON text `payload`; `opcode_name` is
    /// filled from the opcode.
    pub fn new(request_id: u64, opcode: Opcode, payload: impl Into<String>) -> Self {
        AsyncResult {
            request_id,
            opcode: opcode.as_u8(),
            opcode_name: opcode.name().to_owned(),
            payload: payload.into(),
        }
    }

    /// The opcode, when `opcode` is an assigned one.
    pub fn opcode(&self) -> Option<Opcode> {
        Opcode::from_u8(self.opcode)
    }

    /// Decodes `payload` as the typed reply `T` (e.g. [`crate::msg::ExecReply`]):
    /// `Ok(Ok(reply))`, `Ok(Err(kernel error))`, or a decode failure.
    pub fn reply<T: DeserializeOwned>(&self) -> Result<Result<T, WireError>, DecodeError> {
        decode_reply(Codec::Json, self.payload.as_bytes())
    }
}

syscall! {
    AsyncPollRequest => AsyncPoll, AsyncPollReply;
}
