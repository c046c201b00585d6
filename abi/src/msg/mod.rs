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

pub mod asyncs;
pub mod audit;
pub mod events;
pub mod group;
pub mod host;
pub mod ipc;
pub mod lifecycle;
pub mod llm;
pub mod metrics;
pub mod perms;
pub mod record;
pub mod session;
pub mod state;

pub use asyncs::*;
pub use audit::*;
pub use events::*;
pub use group::*;
pub use host::*;
pub use ipc::*;
pub use lifecycle::*;
pub use llm::*;
pub use metrics::*;
pub use perms::*;
pub use record::*;
pub use session::*;
pub use state::*;

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
            Think => $crate::msg::ThinkRequest, $crate::msg::ThinkReply;
            Exec => $crate::msg::ExecRequest, $crate::msg::ExecReply;
            Read => $crate::msg::ReadRequest, $crate::msg::ReadReply;
            Write => $crate::msg::WriteRequest, $crate::msg::WriteReply;
            Spawn => $crate::msg::SpawnRequest, $crate::msg::SpawnReply;
            Kill => $crate::msg::KillRequest, $crate::msg::KillReply;
            List => $crate::msg::ListRequest, $crate::msg::ListReply;
            Pause => $crate::msg::PauseRequest, $crate::msg::PauseReply;
            Resume => $crate::msg::ResumeRequest, $crate::msg::ResumeReply;
            Send => $crate::msg::SendRequest, $crate::msg::SendReply;
            SendBatch => $crate::msg::SendBatchRequest, $crate::msg::SendBatchReply;
            Recv => $crate::msg::RecvRequest, $crate::msg::RecvReply;
            Broadcast => $crate::msg::BroadcastRequest, $crate::msg::BroadcastReply;
            Register => $crate::msg::RegisterRequest, $crate::msg::RegisterReply;
            Store => $crate::msg::StoreRequest, $crate::msg::StoreReply;
            Fetch => $crate::msg::FetchRequest, $crate::msg::FetchReply;
            Delete => $crate::msg::DeleteRequest, $crate::msg::DeleteReply;
            Keys => $crate::msg::KeysRequest, $crate::msg::KeysReply;
            GetPerms => $crate::msg::GetPermsRequest, $crate::msg::GetPermsReply;
            SetPerms => $crate::msg::SetPermsRequest, $crate::msg::SetPermsReply;
            Http => $crate::msg::HttpRequest, $crate::msg::HttpReply;
            Subscribe => $crate::msg::SubscribeRequest, $crate::msg::SubscribeReply;
            Unsubscribe => $crate::msg::UnsubscribeRequest, $crate::msg::UnsubscribeReply;
            PollEvents => $crate::msg::PollEventsRequest, $crate::msg::PollEventsReply;
            Emit => $crate::msg::EmitRequest, $crate::msg::EmitReply;
            RecordStart => $crate::msg::RecordStartRequest, $crate::msg::RecordStartReply;
            RecordStop => $crate::msg::RecordStopRequest, $crate::msg::RecordStopReply;
            RecordStatus => $crate::msg::RecordStatusRequest, $crate::msg::RecordStatusReply;
            ReplayStart => $crate::msg::ReplayStartRequest, $crate::msg::ReplayStartReply;
            ReplayStatus => $crate::msg::ReplayStatusRequest, $crate::msg::ReplayStatusReply;
            GetAuditLog => $crate::msg::GetAuditLogRequest, $crate::msg::GetAuditLogReply;
            SetAuditConfig => $crate::msg::SetAuditConfigRequest, $crate::msg::SetAuditConfigReply;
            AsyncPoll => $crate::msg::AsyncPollRequest, $crate::msg::AsyncPollReply;
            MetricsSystem => $crate::msg::MetricsSystemRequest, $crate::msg::MetricsSystemReply;
            MetricsAgent => $crate::msg::MetricsAgentRequest, $crate::msg::MetricsAgentReply;
            MetricsAllAgents => $crate::msg::MetricsAllAgentsRequest, $crate::msg::MetricsAllAgentsReply;
            MetricsCgroup => $crate::msg::MetricsCgroupRequest, $crate::msg::MetricsCgroupReply;
            LlmReport => $crate::msg::LlmReportRequest, $crate::msg::LlmReportReply;
            Wait => $crate::msg::WaitRequest, $crate::msg::WaitReply;
            Logs => $crate::msg::LogsRequest, $crate::msg::LogsReply;
            GroupCreate => $crate::msg::GroupCreateRequest, $crate::msg::GroupCreateReply;
            GroupList => $crate::msg::GroupListRequest, $crate::msg::GroupListReply;
            GroupStop => $crate::msg::GroupStopRequest, $crate::msg::GroupStopReply;
            LlmStats => $crate::msg::LlmStatsRequest, $crate::msg::LlmStatsReply;
            LlmConfig => $crate::msg::LlmConfigRequest, $crate::msg::LlmConfigReply;
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

/// Property tests: every typed request and reply survives encode → decode in both codecs.
/// The list comes from [`for_each_syscall!`], so a new syscall is covered the moment it is
/// registered.
#[cfg(test)]
mod roundtrip {
    use std::fmt::Debug;

    use proptest::prelude::*;
    use serde::de::DeserializeOwned;
    use serde::Serialize;

    use crate::codec::{decode_reply, decode_request, encode, encode_reply, Codec};

    const CODECS: [Codec; 2] = [Codec::Json, Codec::Postcard];

    fn request<T: Serialize + DeserializeOwned + PartialEq + Debug>(
        value: &T,
    ) -> Result<(), TestCaseError> {
        for codec in CODECS {
            let bytes = encode(codec, value).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let back: T = decode_request(codec, &bytes).map_err(|e| {
                TestCaseError::fail(format!("{}: {e}: {}", codec.name(), show(&bytes)))
            })?;
            prop_assert_eq!(&back, value, "{}", codec.name());
        }
        Ok(())
    }

    fn reply<T: Serialize + DeserializeOwned + PartialEq + Debug>(
        op: crate::Opcode,
        value: &T,
    ) -> Result<(), TestCaseError> {
        for codec in CODECS {
            let bytes = encode_reply(codec, op.as_u8(), Ok(value))
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let back = decode_reply::<T>(codec, &bytes).map_err(|e| {
                TestCaseError::fail(format!("{}: {e}: {}", codec.name(), show(&bytes)))
            })?;
            match back {
                Ok(back) => prop_assert_eq!(&back, value, "{}", codec.name()),
                Err(e) => {
                    return Err(TestCaseError::fail(format!(
                        "{}: a success reply decoded as the error {e:?}",
                        codec.name()
                    )))
                }
            }
        }
        Ok(())
    }

    fn show(bytes: &[u8]) -> String {
        String::from_utf8_lossy(bytes).into_owned()
    }

    macro_rules! roundtrips {
        ($( $op:ident => $req:ty, $reply:ty; )*) => {
            proptest! {
                #![proptest_config(ProptestConfig::with_cases(64))]
                $(
                    #[test]
                    #[allow(non_snake_case)]
                    fn $op(req in any::<$req>(), rep in any::<$reply>()) {
                        request(&req)?;
                        reply(crate::Opcode::$op, &rep)?;
                    }
                )*
            }
        };
    }

    crate::for_each_syscall!(roundtrips);
}
