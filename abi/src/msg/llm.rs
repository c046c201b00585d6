//! THINK, LLM_REPORT: the shared LLM and its token quota.
//!
//! THINK asks the kernel's LLM provider; LLM_REPORT lets an agent that called an LLM itself
//! report the tokens it used, for quota accounting. Our extensions to THINK (`usage`, `model`,
//! `finish_reason`, `tool_calls` in the reply) are all optional.

use serde::{Deserialize, Serialize};

use crate::codec::Json;
use crate::msg::asyncs::ASYNC_ACCEPTED;
use crate::msg::syscall;

#[cfg(test)]
use crate::msg::lifecycle::finite_f64;

/// JSON values other than `null`, for optional [`Json`] fields: in JSON `Some(null)` reads
/// back as `None`.
#[cfg(test)]
fn non_null_json() -> impl proptest::strategy::Strategy<Value = Json> {
    use proptest::prelude::*;
    any::<Json>().prop_filter("null reads back as absent", |j| !j.0.is_null())
}

/// THINK `image`: an image sent along with the prompt.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct ThinkImage {
    /// The image bytes, base64-encoded (required).
    pub data: String,
    /// The image's MIME type, e.g. `image/png` (required).
    pub mime_type: String,
}

/// THINK `thinking_level`: how much the model may reason before answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[serde(rename_all = "lowercase")]
pub enum ThinkingLevel {
    /// `"low"`.
    Low,
    /// `"medium"`.
    Medium,
    /// `"high"`.
    High,
}

impl ThinkingLevel {
    /// Every level, lowest first.
    pub const ALL: [ThinkingLevel; 3] = [
        ThinkingLevel::Low,
        ThinkingLevel::Medium,
        ThinkingLevel::High,
    ];

    /// The wire spelling: `low`, `medium`, `high`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ThinkingLevel::Low => "low",
            ThinkingLevel::Medium => "medium",
            ThinkingLevel::High => "high",
        }
    }

    /// The level spelled `text` exactly as on the wire; `None` for anything else.
    pub fn parse(text: &str) -> Option<ThinkingLevel> {
        ThinkingLevel::ALL
            .into_iter()
            .find(|level| level.as_str() == text)
    }
}

/// THINK `{prompt, image?, system_instruction?, thinking_level?, temperature?, max_tokens?,
/// model?, tools?, async, request_id?}`: ask the LLM.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct ThinkRequest {
    /// The prompt (required).
    pub prompt: String,
    /// An image to send with the prompt; absent: text only.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub image: Option<ThinkImage>,
    /// The system instruction; absent: the provider's default.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub system_instruction: Option<String>,
    /// `low`, `medium` or `high`; absent: the provider's default.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub thinking_level: Option<ThinkingLevel>,
    /// Sampling temperature; absent: the provider's default.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    #[cfg_attr(test, proptest(strategy = "proptest::option::of(finite_f64())"))]
    pub temperature: Option<f64>,
    /// At most this many tokens in the answer; absent: the provider's default.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub max_tokens: Option<u32>,
    /// The model to use; absent: the kernel's configured model.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub model: Option<String>,
    /// Tools the model may call: a list of tool specs as the provider takes them; absent (or
    /// `null`, which JSON cannot tell apart): none.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    #[cfg_attr(test, proptest(strategy = "proptest::option::of(non_null_json())"))]
    pub tools: Option<Json>,
    /// Answer at once with an accept reply and queue the real one for ASYNC_POLL (default
    /// false).
    #[serde(default, rename = "async")]
    pub is_async: bool,
    /// The id for the async result; absent: the kernel picks one (only used with `async`).
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub request_id: Option<u64>,
}

impl ThinkRequest {
    /// A synchronous request for `prompt`, every other field absent.
    pub fn new(prompt: impl Into<String>) -> Self {
        ThinkRequest {
            prompt: prompt.into(),
            ..ThinkRequest::default()
        }
    }
}

/// THINK reply `usage` (extension): `{input, output}`, the tokens the call used as the
/// provider counted them; `tokens` is their sum.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct LlmUsage {
    /// Tokens in the prompt (and image, system instruction, tools).
    pub input: u64,
    /// Tokens in the answer (including reasoning tokens).
    pub output: u64,
}

/// THINK reply: `{success, content, tokens}`, or the async accept reply
/// `{success: true, async: true, request_id, status: "accepted"}` (with `content` empty and
/// `tokens` 0, see [`ThinkReply::accepted`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct ThinkReply {
    /// The model answered (or, async, the request was accepted).
    pub success: bool,
    /// The answer's text (empty in an accept reply; read as empty when absent, as in the
    /// original's accept reply).
    #[serde(default)]
    pub content: String,
    /// Tokens the call used, counted against the caller's quota (0 in an accept reply; read
    /// as 0 when absent).
    #[serde(default)]
    pub tokens: u64,
    /// Extension: the provider that answered: `openai`, `gemini`, `anthropic`, or
    /// `simulated` (a stand-in whose answers are made up, for demos and benchmarks).
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub provider: Option<String>,
    /// Extension: the model that answered.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub model: Option<String>,
    /// Extension: how long the request waited in the kernel's queue for its turn, in ms.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub queue_ms: Option<u64>,
    /// Extension: the token counts split by prompt and answer.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub usage: Option<LlmUsage>,
    /// Extension: why the model stopped, as the provider says it (`"stop"`, `"length"`, ...).
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub finish_reason: Option<String>,
    /// Extension: the tool calls the model asked for, as the provider gave them; absent: none
    /// (never `null`, which JSON cannot tell apart from absent).
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    #[cfg_attr(test, proptest(strategy = "proptest::option::of(non_null_json())"))]
    pub tool_calls: Option<Json>,
    /// `true` in an async accept reply; absent otherwise.
    #[serde(
        default,
        rename = "async",
        skip_serializing_if = "crate::codec::skip_none"
    )]
    pub is_async: Option<bool>,
    /// The id to find the result under in ASYNC_POLL; only in an accept reply.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub request_id: Option<u64>,
    /// `"accepted"` in an accept reply; absent otherwise.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub status: Option<String>,
}

impl ThinkReply {
    /// A successful answer: `content` and the `tokens` it cost, no extensions.
    pub fn answer(content: impl Into<String>, tokens: u64) -> Self {
        ThinkReply {
            success: true,
            content: content.into(),
            tokens,
            ..ThinkReply::default()
        }
    }

    /// The accept reply to an async THINK: `{success: true, content: "", tokens: 0,
    /// async: true, request_id, status: "accepted"}`.
    pub fn accepted(request_id: u64) -> Self {
        ThinkReply {
            success: true,
            is_async: Some(true),
            request_id: Some(request_id),
            status: Some(ASYNC_ACCEPTED.to_owned()),
            ..ThinkReply::default()
        }
    }

    /// This is an async accept reply (`async: true`), not the answer.
    pub fn is_accepted(&self) -> bool {
        self.is_async == Some(true)
    }
}

fn default_true() -> bool {
    true
}

/// LLM_REPORT `{tokens, success}`: report tokens an agent spent on an LLM it called itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct LlmReportRequest {
    /// Tokens used (required).
    pub tokens: u64,
    /// The call succeeded (default true); counted as a call either way.
    #[serde(default = "default_true")]
    pub success: bool,
}

impl Default for LlmReportRequest {
    /// 0 tokens, `success` true.
    fn default() -> Self {
        LlmReportRequest {
            tokens: 0,
            success: true,
        }
    }
}

/// LLM_REPORT reply: `{success, tokens, quota_exceeded, error?}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct LlmReportReply {
    /// The usage was recorded and the caller is within its quota.
    pub success: bool,
    /// The tokens recorded (the request's `tokens`).
    pub tokens: u64,
    /// The caller's token or call quota is now used up.
    pub quota_exceeded: bool,
    /// Why `success` is false (e.g. the quota), for humans; absent on success.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub error: Option<String>,
}

/// LLM_STATS `{agent_id?}` (ours): the LLM scheduler's state and per-agent LLM figures.
/// Without `agent_id`: every caller the kernel has figures for that the asker may see (an
/// agent sees itself; an operator sees its own agents, root sees all).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct LlmStatsRequest {
    /// Only this agent.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub agent_id: Option<u32>,
}

/// LLM_STATS reply: `{success, provider, model, scheduler, agents}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct LlmStatsReply {
    /// The figures were read.
    pub success: bool,
    /// The default provider's kind (`openai`, `gemini`, `anthropic`, `simulated`).
    pub provider: String,
    /// The default model.
    pub model: String,
    /// The scheduler as a whole.
    pub scheduler: LlmSchedulerStats,
    /// One row per caller, by id.
    pub agents: Vec<LlmAgentStats>,
}

/// LLM_STATS `scheduler`: `{policy, max_in_flight, in_flight, queued}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct LlmSchedulerStats {
    /// `vtc`, `fifo` or `round_robin`.
    pub policy: String,
    /// Most provider calls at once.
    pub max_in_flight: u32,
    /// Provider calls running now.
    pub in_flight: u32,
    /// Requests waiting for their turn now.
    pub queued: u32,
}

/// One caller's LLM figures since the kernel started (an agent's survive its restarts).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct LlmAgentStats {
    /// The agent's id (or an operator connection's).
    pub agent_id: u32,
    /// The agent's name; absent for an operator connection.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub name: Option<String>,
    /// THINK calls answered by the model.
    pub calls: u64,
    /// THINK calls that failed (provider error, timeout, quota, queue full).
    pub errors: u64,
    /// THINK calls cancelled (the caller went away while waiting or in flight).
    pub cancelled: u64,
    /// Prompt tokens of answered calls.
    pub input_tokens: u64,
    /// Answer tokens of answered calls.
    pub output_tokens: u64,
    /// Tokens reported with LLM_REPORT.
    pub reported_tokens: u64,
    /// Mean wait in the queue, ms.
    #[cfg_attr(test, proptest(strategy = "crate::msg::lifecycle::finite_f64()"))]
    pub queue_ms_avg: f64,
    /// Longest wait in the queue, ms.
    pub queue_ms_max: u64,
    /// Requests waiting now.
    pub queued: u32,
    /// Calls running now.
    pub in_flight: u32,
    /// The scheduler's service counter (weighted cost received: input + 2 × output tokens).
    #[cfg_attr(test, proptest(strategy = "crate::msg::lifecycle::finite_f64()"))]
    pub service: f64,
    /// The scheduling weight (`permissions.llm.weight`).
    #[cfg_attr(test, proptest(strategy = "crate::msg::lifecycle::finite_f64()"))]
    pub weight: f64,
}

/// LLM_CONFIG `{scheduler?, max_in_flight?}` (ours): changes the LLM scheduler's policy
/// (`vtc`, `fifo`, `round_robin`) or its in-flight limit at run time, for operators running
/// as root or as the kernel's user, while the scheduler is idle (nothing queued or in
/// flight; else `conflict`). Both absent: only reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct LlmConfigRequest {
    /// The new policy.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub scheduler: Option<String>,
    /// The new limit of provider calls at once (1 to 1024).
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub max_in_flight: Option<u32>,
}

/// LLM_CONFIG reply: `{success, scheduler}` as it is now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct LlmConfigReply {
    /// The change was made (or nothing was asked).
    pub success: bool,
    /// The scheduler after the change.
    pub scheduler: LlmSchedulerStats,
}

syscall! {
    ThinkRequest => Think, ThinkReply;
    LlmReportRequest => LlmReport, LlmReportReply;
    LlmStatsRequest => LlmStats, LlmStatsReply;
    LlmConfigRequest => LlmConfig, LlmConfigReply;
}
