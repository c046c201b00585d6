//! What every LLM provider implements, and what they share: the prompt and answer in one
//! provider-neutral shape, the error kinds the retry loop tells apart, the API key that never
//! shows in a log line or an error, and the retry loop itself.
//!
//! A provider turns a [`Prompt`] into its own request JSON, sends it with the shared
//! `reqwest::Client`, and maps the response back to an [`Answer`]. Tools go in and come out
//! in one neutral form, so an agent's script does not change with the provider:
//!
//! * request `tools`: a list of `{name, description?, parameters? (JSON Schema)}`; OpenAI's
//!   wrapped form `{type: "function", function: {...}}` is accepted too;
//! * reply `tool_calls`: a list of `{id?, name, arguments (a JSON object)}`.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use clove_abi::msg::{ThinkImage, ThinkingLevel};
use tokio::time::Instant;

/// A boxed future, for the object-safe [`Provider`] trait.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An API key. Its `Debug` and `Display` never show it; [`Secret::expose`] is the one way
/// to the text, for the request header, and [`Secret::redact`] removes it from any text a
/// provider or transport produced before that text goes anywhere.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// A key (surrounding whitespace, as in a key file's trailing newline, removed).
    pub fn new(key: impl Into<String>) -> Secret {
        Secret(key.into().trim().to_owned())
    }

    /// The key's text, for the auth header only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `text` with every occurrence of the key replaced by `[redacted]`.
    pub fn redact(&self, text: &str) -> String {
        if self.0.is_empty() {
            text.to_owned()
        } else {
            text.replace(&self.0, "[redacted]")
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// One call, provider-neutral. The model is already resolved (aliases applied).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Prompt {
    /// The model to ask, as the provider names it.
    pub model: String,
    /// The user's prompt.
    pub prompt: String,
    /// The system instruction.
    pub system: Option<String>,
    /// An image sent with the prompt (base64 data and MIME type).
    pub image: Option<ThinkImage>,
    /// Sampling temperature.
    pub temperature: Option<f64>,
    /// Most tokens in the answer.
    pub max_tokens: Option<u32>,
    /// How much the model may reason first.
    pub thinking_level: Option<ThinkingLevel>,
    /// Tools in the neutral form (see the module docs); `None`: no tools.
    pub tools: Option<serde_json::Value>,
}

/// Tokens a call used, as the provider counted them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens (system instruction, image and tools included).
    pub input: u64,
    /// Answer tokens (reasoning included).
    pub output: u64,
}

/// A provider's answer, provider-neutral.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Answer {
    /// The answer's text (parts joined).
    pub content: String,
    /// The model that answered, as the provider reports it (else the one asked).
    pub model: String,
    /// Tokens used.
    pub usage: Usage,
    /// Why the model stopped, as the provider says it.
    pub finish_reason: Option<String>,
    /// Tool calls in the neutral form; `None`: none.
    pub tool_calls: Option<serde_json::Value>,
}

/// Why a call failed. Messages never contain the API key (run them through
/// [`Secret::redact`] when they quote the provider or the transport).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProviderError {
    /// The provider answered with an error status.
    #[error("{provider} answered HTTP {status}: {message}")]
    Status {
        /// The provider's name.
        provider: String,
        /// The HTTP status.
        status: u16,
        /// The provider's error message (from its error JSON when it has one).
        message: String,
        /// How long the provider asked us to wait (`Retry-After`), if it said.
        retry_after: Option<Duration>,
    },
    /// The deadline passed before an answer came.
    #[error("{provider} did not answer in time")]
    Timeout {
        /// The provider's name.
        provider: String,
    },
    /// Connecting, sending or reading failed.
    #[error("{provider} could not be reached: {message}")]
    Transport {
        /// The provider's name.
        provider: String,
        /// What failed.
        message: String,
    },
    /// The provider's answer could not be understood.
    #[error("{provider} sent an answer that cannot be read: {message}")]
    BadResponse {
        /// The provider's name.
        provider: String,
        /// What was wrong with it.
        message: String,
    },
    /// The request cannot be sent to this provider (e.g. no key configured).
    #[error("{0}")]
    Invalid(String),
}

impl ProviderError {
    /// Worth another try: 429, any 5xx, a transport failure.
    pub fn retryable(&self) -> bool {
        match self {
            ProviderError::Status { status, .. } => *status == 429 || *status >= 500,
            ProviderError::Transport { .. } => true,
            ProviderError::Timeout { .. }
            | ProviderError::BadResponse { .. }
            | ProviderError::Invalid(_) => false,
        }
    }
}

/// An LLM provider: OpenAI-compatible, Gemini, Anthropic, simulated.
pub trait Provider: Send + Sync + fmt::Debug {
    /// The provider's kind as replies name it: `openai`, `gemini`, `anthropic`, `simulated`.
    fn kind(&self) -> &'static str;

    /// The model used when neither the request nor the config names one.
    fn default_model(&self) -> &str;

    /// One attempt: send `prompt`, map the answer. Must give up at `deadline` with
    /// [`ProviderError::Timeout`]. Retries are not its business ([`call_with_retries`]).
    fn call<'a>(
        &'a self,
        prompt: &'a Prompt,
        deadline: Instant,
    ) -> BoxFuture<'a, Result<Answer, ProviderError>>;
}

/// What a configured provider is built from (the `[llm.providers.NAME]` table, resolved).
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderSettings {
    /// The name the config gives it (`openai`, `local`, ...), for messages and replies.
    pub name: String,
    /// The API's base URL; `None`: the provider's public endpoint
    /// (`https://api.openai.com/v1`, `https://generativelanguage.googleapis.com/v1beta`,
    /// `https://api.anthropic.com/v1`).
    pub base_url: Option<String>,
    /// The API key; `None`: send none (a local server such as Ollama needs none).
    pub api_key: Option<Secret>,
    /// The model used when the request names none; `None`: the provider's own default.
    pub model: Option<String>,
    /// Ask for a streamed answer and assemble it (OpenAI-compatible only).
    pub stream: bool,
}

/// TEMPORARY (replaced by the providers' work): one attempt, no retries.
pub async fn call_with_retries(
    provider: &dyn Provider,
    prompt: &Prompt,
    deadline: Instant,
    _retries: u32,
) -> Result<Answer, ProviderError> {
    provider.call(prompt, deadline).await
}
