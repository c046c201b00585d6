//! One typed request and reply per opcode, with the original's field names and defaults.
//!
//! Rules every message follows (see [`crate::codec`] for why):
//! * field names are the original's exactly; `#[serde(default = ...)]` gives the original's
//!   defaults; unknown fields are ignored (no `deny_unknown_fields`);
//! * optional fields a reply may leave out use `skip_serializing_if = "crate::codec::skip_none"`;
//! * arbitrary JSON values are [`crate::Json`]; no `flatten`, no `untagged` enums (postcard
//!   cannot carry them); alternatives the original accepted (`event` / `event_type`) are
//!   separate optional fields with a method that picks;
//! * every request is a JSON object, so an empty payload decodes as `{}`.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::opcode::Opcode;

pub mod session;

pub use session::*;

/// A typed request: its opcode and the type of its reply.
pub trait Syscall: Serialize + DeserializeOwned {
    /// The opcode this request travels under.
    const OPCODE: Opcode;
    /// The reply's type.
    type Reply: Serialize + DeserializeOwned;
}

/// Implements [`Syscall`] for request types.
macro_rules! syscall {
    ($( $req:ty => $op:ident, $reply:ty; )*) => {
        $(
            impl $crate::msg::Syscall for $req {
                const OPCODE: $crate::opcode::Opcode = $crate::opcode::Opcode::$op;
                type Reply = $reply;
            }
        )*
    };
}
pub(crate) use syscall;

/// Calls `$m! { Opcode => Request, Reply; ... }` with every typed syscall, so that code that
/// must cover all of them (the kernel's request validation, the round-trip tests) cannot miss
/// one. NOOP is absent: its payload is raw bytes, echoed.
#[macro_export]
macro_rules! for_each_syscall {
    ($m:ident) => {
        $m! {
            Hello => $crate::msg::HelloRequest, $crate::msg::HelloReply;
            Exit => $crate::msg::ExitRequest, $crate::msg::ExitReply;
        }
    };
}

/// `true` when the reply of `op` is a JSON object with the original's shape, as opposed to raw
/// bytes (NOOP, EXIT).
pub fn reply_is_typed(op: Opcode) -> bool {
    !op.is_raw()
}
