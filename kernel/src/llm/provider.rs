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

/// An HTTP API (OpenAI-compatible, Gemini, Anthropic). Implementing it implements
/// [`Provider`]: the kind, the default model (the configured one, else [`Self::DEFAULT_MODEL`])
/// and `call` come from here.
pub trait RemoteApi: Send + Sync + fmt::Debug {
    /// The kind, as [`Provider::kind`] reports it.
    const KIND: &'static str;
    /// The model used when neither the request nor the config names one.
    const DEFAULT_MODEL: &'static str;

    /// The settings, client and shared plumbing.
    fn remote(&self) -> &Remote;

    /// One attempt, as [`Provider::call`].
    fn ask<'a>(
        &'a self,
        prompt: &'a Prompt,
        deadline: Instant,
    ) -> impl Future<Output = Result<Answer, ProviderError>> + Send + 'a;
}

impl<T: RemoteApi> Provider for T {
    fn kind(&self) -> &'static str {
        T::KIND
    }

    fn default_model(&self) -> &str {
        self.remote()
            .settings
            .model
            .as_deref()
            .unwrap_or(T::DEFAULT_MODEL)
    }

    fn call<'a>(
        &'a self,
        prompt: &'a Prompt,
        deadline: Instant,
    ) -> BoxFuture<'a, Result<Answer, ProviderError>> {
        Box::pin(self.ask(prompt, deadline))
    }
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

/// How long the first retry waits; each further one waits twice as long (plus jitter).
pub const RETRY_BASE: Duration = Duration::from_millis(250);

/// The longest backoff between two attempts (before jitter), however many came before.
pub const RETRY_MAX_WAIT: Duration = Duration::from_secs(8);

/// `provider.call` with up to `retries` more attempts for [`ProviderError::retryable`]
/// errors. Between attempts it waits what the provider asked for (`Retry-After`), else an
/// exponential backoff ([`RETRY_BASE`], doubling, capped at [`RETRY_MAX_WAIT`], with jitter).
///
/// It never sleeps past `deadline`: when the next wait would end after it, the last error is
/// returned as it is (a 429's message says more than a bare timeout would); an attempt that
/// runs into the deadline fails with [`ProviderError::Timeout`] by itself.
pub async fn call_with_retries(
    provider: &dyn Provider,
    prompt: &Prompt,
    deadline: Instant,
    retries: u32,
) -> Result<Answer, ProviderError> {
    let mut attempt: u32 = 0;
    loop {
        let error = match provider.call(prompt, deadline).await {
            Ok(answer) => return Ok(answer),
            Err(error) => error,
        };
        if !error.retryable() || attempt >= retries {
            return Err(error);
        }
        let wait = match &error {
            ProviderError::Status {
                retry_after: Some(wait),
                ..
            } => *wait,
            _ => backoff(attempt),
        };
        if Instant::now() + wait >= deadline {
            return Err(error);
        }
        tracing::debug!(
            provider = provider.kind(),
            attempt,
            wait_ms = wait.as_millis() as u64,
            %error,
            "retrying the LLM call"
        );
        tokio::time::sleep(wait).await;
        attempt += 1;
    }
}

/// The wait before retry number `attempt + 1`: [`RETRY_BASE`] doubled `attempt` times, capped
/// at [`RETRY_MAX_WAIT`], then between half of that and all of it ("equal jitter"), so that
/// callers who failed together do not all come back at the same instant.
fn backoff(attempt: u32) -> Duration {
    let full = RETRY_BASE
        .saturating_mul(1u32 << attempt.min(16))
        .min(RETRY_MAX_WAIT);
    let half = full / 2;
    let spread = u64::try_from(half.as_micros()).unwrap_or(u64::MAX).max(1);
    half + Duration::from_micros(random() % (spread + 1))
}

/// A random number for jitter (std's randomly keyed hasher; no RNG crate needed for this).
fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish()
}

/// The most of a provider's error body an error message quotes (characters).
pub const QUOTE_MAX_CHARS: usize = 500;

/// The largest answer body read (bytes); a bigger one is a [`ProviderError::BadResponse`].
pub const MAX_BODY_BYTES: usize = 32 << 20;

/// Thinking budgets (tokens) for Gemini's `thinkingBudget` and Anthropic's `budget_tokens`:
/// low 1024 (Anthropic's minimum), medium 8192, high 24576 (Gemini 2.5 Flash's maximum).
pub fn thinking_budget(level: ThinkingLevel) -> u32 {
    match level {
        ThinkingLevel::Low => 1024,
        ThinkingLevel::Medium => 8192,
        ThinkingLevel::High => 24576,
    }
}

/// Tokens estimated from text length, for servers that report no usage: one token per four
/// characters, rounded up (the usual rule of thumb for English text).
pub fn estimate_tokens(chars: usize) -> u64 {
    u64::try_from(chars.div_ceil(4)).unwrap_or(u64::MAX)
}

/// One tool in the neutral form, read from the prompt's `tools`.
#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    /// The function's name.
    pub name: String,
    /// What it does, for the model.
    pub description: Option<String>,
    /// Its arguments as a JSON Schema.
    pub parameters: Option<serde_json::Value>,
}

impl Tool {
    /// The function declaration `{name, description?, parameters?}` that OpenAI (inside
    /// `{type: "function", function: ...}`) and Gemini (in `functionDeclarations`) take.
    pub fn declaration(self) -> serde_json::Value {
        let mut declaration = serde_json::json!({"name": self.name});
        if let Some(description) = self.description {
            declaration["description"] = description.into();
        }
        if let Some(parameters) = self.parameters {
            declaration["parameters"] = parameters;
        }
        declaration
    }
}

/// The prompt's tools, each `{name, description?, parameters?}` or OpenAI's
/// `{type: "function", function: {...}}`. `None` (or an empty list): no tools.
pub fn neutral_tools(tools: Option<&serde_json::Value>) -> Result<Vec<Tool>, ProviderError> {
    let Some(tools) = tools.filter(|t| !t.is_null()) else {
        return Ok(Vec::new());
    };
    let list = tools
        .as_array()
        .ok_or_else(|| ProviderError::Invalid("tools must be a list".to_owned()))?;
    list.iter()
        .enumerate()
        .map(|(i, tool)| {
            let tool = match tool.get("function") {
                Some(inner) if tool.get("type").and_then(|t| t.as_str()) == Some("function") => {
                    inner
                }
                _ => tool,
            };
            let name = tool
                .get("name")
                .and_then(|n| n.as_str())
                .filter(|n| !n.is_empty())
                .ok_or_else(|| {
                    ProviderError::Invalid(format!("tools[{i}] has no name (a non-empty string)"))
                })?;
            let description = match tool.get("description") {
                None | Some(serde_json::Value::Null) => None,
                Some(serde_json::Value::String(d)) => Some(d.clone()),
                Some(_) => {
                    return Err(ProviderError::Invalid(format!(
                        "tools[{i}].description must be a string"
                    )))
                }
            };
            let parameters = match tool.get("parameters") {
                None | Some(serde_json::Value::Null) => None,
                Some(p @ serde_json::Value::Object(_)) => Some(p.clone()),
                Some(_) => {
                    return Err(ProviderError::Invalid(format!(
                        "tools[{i}].parameters must be a JSON Schema object"
                    )))
                }
            };
            Ok(Tool {
                name: name.to_owned(),
                description,
                parameters,
            })
        })
        .collect()
}

/// A neutral tool call `{id?, name, arguments}`.
pub fn tool_call(id: Option<&str>, name: &str, arguments: serde_json::Value) -> serde_json::Value {
    let mut call = serde_json::Map::new();
    if let Some(id) = id.filter(|id| !id.is_empty()) {
        call.insert("id".to_owned(), id.into());
    }
    call.insert("name".to_owned(), name.into());
    call.insert("arguments".to_owned(), arguments);
    serde_json::Value::Object(call)
}

/// An answer's `tool_calls`: `None` when there are none.
pub fn tool_calls(calls: Vec<serde_json::Value>) -> Option<serde_json::Value> {
    (!calls.is_empty()).then_some(serde_json::Value::Array(calls))
}

/// `text` cut to [`QUOTE_MAX_CHARS`] characters (with `…` when cut).
fn cut(text: &str) -> String {
    match text.char_indices().nth(QUOTE_MAX_CHARS) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// The message in a provider's error body. Understands the shapes of all three APIs —
/// OpenAI `{error: {message, type, code}}`, Gemini `{error: {code, message, status}}`,
/// Anthropic `{type: "error", error: {type, message}}` — and the `{error: "text"}` of some
/// local servers; anything else is quoted as text. Not yet redacted nor cut.
pub fn error_message(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) else {
        return text.trim().to_owned();
    };
    let error = json.get("error").unwrap_or(&json);
    if let Some(message) = error.as_str() {
        return message.to_owned();
    }
    let Some(message) = error.get("message").and_then(|m| m.as_str()) else {
        return text.trim().to_owned();
    };
    let kind = ["status", "type", "code"]
        .iter()
        .find_map(|field| error.get(*field).and_then(|k| k.as_str()));
    match kind {
        Some(kind) if !kind.is_empty() => format!("{kind}: {message}"),
        _ => message.to_owned(),
    }
}

/// A `Retry-After` header in seconds (the HTTP-date form is not used by these APIs).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    let seconds: f64 = value.trim().parse().ok()?;
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds.min(3600.0)))
}

/// What the three HTTP providers share: their settings, the kernel's client, and the
/// plumbing of one call (sending under the deadline, reading the body, mapping errors with
/// the key redacted). Each provider only builds its JSON and reads the answer's.
#[derive(Debug, Clone)]
pub struct Remote {
    /// The provider's settings.
    pub settings: ProviderSettings,
    /// The shared HTTP client.
    client: reqwest::Client,
    /// The base URL when the settings name none.
    default_base: &'static str,
}

impl Remote {
    /// A remote API at `settings.base_url`, else `default_base`.
    pub fn new(
        settings: ProviderSettings,
        client: reqwest::Client,
        default_base: &'static str,
    ) -> Remote {
        Remote {
            settings,
            client,
            default_base,
        }
    }

    /// The configured name, for messages.
    pub fn name(&self) -> &str {
        &self.settings.name
    }

    /// `{base}{path}` (`path` starts with `/`; a trailing `/` of the base is dropped).
    pub fn url(&self, path: &str) -> String {
        let base = self
            .settings
            .base_url
            .as_deref()
            .unwrap_or(self.default_base);
        format!("{}{path}", base.trim_end_matches('/'))
    }

    /// The configured key, if any (an empty one counts as none).
    pub fn key(&self) -> Option<&Secret> {
        self.settings
            .api_key
            .as_ref()
            .filter(|k| !k.expose().is_empty())
    }

    /// The key, or [`ProviderError::Invalid`] telling which environment variables set it.
    pub fn require_key(&self, env_vars: &str) -> Result<&Secret, ProviderError> {
        self.key().ok_or_else(|| {
            ProviderError::Invalid(format!(
                "LLM provider {:?} has no API key: set {env_vars} (or api_key in its config)",
                self.name()
            ))
        })
    }

    /// The prompt's model, else the configured one, else `fallback`.
    pub fn model<'a>(&'a self, prompt: &'a Prompt, fallback: &'a str) -> &'a str {
        if !prompt.model.is_empty() {
            &prompt.model
        } else {
            self.settings.model.as_deref().unwrap_or(fallback)
        }
    }

    /// `text` without the key.
    fn redact(&self, text: &str) -> String {
        match &self.settings.api_key {
            Some(key) => key.redact(text),
            None => text.to_owned(),
        }
    }

    /// A [`ProviderError::BadResponse`] (message redacted and cut).
    pub fn bad(&self, message: &str) -> ProviderError {
        ProviderError::BadResponse {
            provider: self.name().to_owned(),
            message: cut(&self.redact(message)),
        }
    }

    /// A [`ProviderError::Timeout`].
    pub fn timeout(&self) -> ProviderError {
        ProviderError::Timeout {
            provider: self.name().to_owned(),
        }
    }

    /// A transport error, without the URL and with the key redacted; reqwest's own timeout
    /// is a [`ProviderError::Timeout`].
    fn transport(&self, error: reqwest::Error) -> ProviderError {
        if error.is_timeout() {
            return self.timeout();
        }
        let error = error.without_url();
        let mut message = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(inner) = source {
            message.push_str(": ");
            message.push_str(&inner.to_string());
            source = inner.source();
        }
        ProviderError::Transport {
            provider: self.name().to_owned(),
            message: cut(&self.redact(&message)),
        }
    }

    /// POST `body` as JSON to `url` with `headers` (values marked sensitive: they hold the
    /// key), giving up at `deadline`. A non-2xx answer is read and returned as
    /// [`ProviderError::Status`] with the provider's message and `Retry-After`.
    pub async fn post(
        &self,
        url: &str,
        headers: &[(&'static str, String)],
        body: &serde_json::Value,
        deadline: Instant,
    ) -> Result<reqwest::Response, ProviderError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(self.timeout());
        }
        let body = serde_json::to_vec(body)
            .map_err(|e| ProviderError::Invalid(format!("the request cannot be encoded: {e}")))?;
        let mut request = self
            .client
            .post(url)
            .timeout(left)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        for (name, value) in headers {
            let mut value = reqwest::header::HeaderValue::from_str(value).map_err(|_| {
                ProviderError::Invalid(format!(
                    "the {name} header for LLM provider {:?} has characters a header cannot \
                     carry (check the API key)",
                    self.name()
                ))
            })?;
            value.set_sensitive(true);
            request = request.header(*name, value);
        }
        let response = tokio::time::timeout_at(deadline, request.send())
            .await
            .map_err(|_| self.timeout())?
            .map_err(|e| self.transport(e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let retry_after = retry_after(response.headers());
        let body = self.read_all(response, deadline).await?;
        let mut message = error_message(&body);
        if message.is_empty() {
            message = status.canonical_reason().unwrap_or("no message").to_owned();
        }
        Err(ProviderError::Status {
            provider: self.name().to_owned(),
            status: status.as_u16(),
            message: cut(&self.redact(&message)),
            retry_after,
        })
    }

    /// Reads the next piece of the body onto `buf`; `false` at its end.
    pub async fn read_chunk(
        &self,
        response: &mut reqwest::Response,
        buf: &mut Vec<u8>,
        deadline: Instant,
    ) -> Result<bool, ProviderError> {
        let chunk = tokio::time::timeout_at(deadline, response.chunk())
            .await
            .map_err(|_| self.timeout())?
            .map_err(|e| self.transport(e))?;
        let Some(chunk) = chunk else {
            return Ok(false);
        };
        if buf.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(self.bad(&format!("the answer is over {MAX_BODY_BYTES} bytes")));
        }
        buf.extend_from_slice(&chunk);
        Ok(true)
    }

    /// The whole body (at most [`MAX_BODY_BYTES`]).
    async fn read_all(
        &self,
        mut response: reqwest::Response,
        deadline: Instant,
    ) -> Result<Vec<u8>, ProviderError> {
        let mut body = Vec::new();
        while self.read_chunk(&mut response, &mut body, deadline).await? {}
        Ok(body)
    }

    /// The whole body as JSON.
    pub async fn read_json(
        &self,
        response: reqwest::Response,
        deadline: Instant,
    ) -> Result<serde_json::Value, ProviderError> {
        let body = self.read_all(response, deadline).await?;
        serde_json::from_slice(&body).map_err(|e| {
            self.bad(&format!(
                "not JSON ({e}): {}",
                String::from_utf8_lossy(&body)
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::sync::Mutex;

    /// A provider answering from a script, counting its calls.
    #[derive(Debug)]
    struct Scripted(Mutex<VecDeque<Result<Answer, ProviderError>>>);

    impl Scripted {
        /// A provider giving `results` in order.
        fn new(results: Vec<Result<Answer, ProviderError>>) -> Scripted {
            Scripted(Mutex::new(results.into()))
        }

        /// Results not yet given.
        fn left(&self) -> usize {
            self.0.lock().expect("script lock").len()
        }
    }

    impl Provider for Scripted {
        fn kind(&self) -> &'static str {
            "simulated"
        }

        fn default_model(&self) -> &str {
            "scripted"
        }

        fn call<'a>(
            &'a self,
            _prompt: &'a Prompt,
            _deadline: Instant,
        ) -> BoxFuture<'a, Result<Answer, ProviderError>> {
            let next = self.0.lock().expect("script lock").pop_front();
            Box::pin(async move { next.expect("a scripted result") })
        }
    }

    /// An HTTP status error.
    fn status(status: u16, retry_after: Option<Duration>) -> ProviderError {
        ProviderError::Status {
            provider: "p".to_owned(),
            status,
            message: "m".to_owned(),
            retry_after,
        }
    }

    #[tokio::test]
    async fn retries_only_retryable_errors_and_at_most_retries_times() {
        let deadline = Instant::now() + Duration::from_secs(30);
        let p = Scripted::new(vec![
            Err(status(503, Some(Duration::ZERO))),
            Err(ProviderError::Transport {
                provider: "p".to_owned(),
                message: "reset".to_owned(),
            }),
            Ok(Answer::default()),
        ]);
        call_with_retries(&p, &Prompt::default(), deadline, 2)
            .await
            .expect("third try answers");
        assert_eq!(p.left(), 0);

        let p = Scripted::new(vec![
            Err(status(500, Some(Duration::ZERO))),
            Ok(Answer::default()),
        ]);
        let error = call_with_retries(&p, &Prompt::default(), deadline, 0)
            .await
            .expect_err("no retries allowed");
        assert_eq!(error, status(500, Some(Duration::ZERO)));

        let p = Scripted::new(vec![Err(status(404, None)), Ok(Answer::default())]);
        let error = call_with_retries(&p, &Prompt::default(), deadline, 5)
            .await
            .expect_err("404 is final");
        assert_eq!(error, status(404, None));
        assert_eq!(p.left(), 1);
    }

    #[tokio::test]
    async fn never_sleeps_past_the_deadline() {
        let deadline = Instant::now() + Duration::from_millis(500);
        let p = Scripted::new(vec![
            Err(status(429, Some(Duration::from_secs(60)))),
            Ok(Answer::default()),
        ]);
        let started = std::time::Instant::now();
        let error = call_with_retries(&p, &Prompt::default(), deadline, 3)
            .await
            .expect_err("the wait would pass the deadline");
        assert!(started.elapsed() < Duration::from_millis(100));
        assert_eq!(error, status(429, Some(Duration::from_secs(60))));
    }

    #[tokio::test]
    async fn backs_off_exponentially_without_retry_after() {
        let deadline = Instant::now() + Duration::from_secs(60);
        let p = Scripted::new(vec![
            Err(status(502, None)),
            Err(status(502, None)),
            Err(status(502, None)),
            Ok(Answer::default()),
        ]);
        let started = Instant::now();
        call_with_retries(&p, &Prompt::default(), deadline, 3)
            .await
            .expect("fourth try answers");
        // Waits of 250, 500 and 1000 ms, each at least half that with jitter.
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(875), "{waited:?}");
        assert!(waited <= Duration::from_secs(5), "{waited:?}");
    }

    #[test]
    fn backoff_doubles_within_jitter_and_is_capped() {
        for attempt in 0..40 {
            let full = RETRY_BASE
                .saturating_mul(1 << attempt.min(16))
                .min(RETRY_MAX_WAIT);
            let wait = backoff(attempt);
            assert!(wait >= full / 2 && wait <= full, "{attempt}: {wait:?}");
        }
    }

    #[test]
    fn error_bodies_of_every_api_are_read() {
        let cases = [
            (
                r#"{"error": {"message": "Bad key", "type": "invalid_request_error"}}"#,
                "invalid_request_error: Bad key",
            ),
            (
                r#"{"error": {"code": 429, "message": "Quota", "status": "RESOURCE_EXHAUSTED"}}"#,
                "RESOURCE_EXHAUSTED: Quota",
            ),
            (
                r#"{"type": "error", "error": {"type": "overloaded_error", "message": "Busy"}}"#,
                "overloaded_error: Busy",
            ),
            (r#"{"error": "model not found"}"#, "model not found"),
            ("  <html>Bad gateway</html>\n", "<html>Bad gateway</html>"),
            (r#"{"detail": "x"}"#, r#"{"detail": "x"}"#),
        ];
        for (body, message) in cases {
            assert_eq!(error_message(body.as_bytes()), message, "{body}");
        }
    }

    #[test]
    fn quotes_are_cut_and_retry_after_read() {
        let long = "é".repeat(QUOTE_MAX_CHARS + 10);
        assert_eq!(cut(&long).chars().count(), QUOTE_MAX_CHARS + 1);
        assert_eq!(cut("short"), "short");
        let mut headers = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert("retry-after", "2".parse().expect("header"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(2)));
        headers.insert("retry-after", "0.5".parse().expect("header"));
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(500)));
        headers.insert(
            "retry-after",
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().expect("header"),
        );
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn tools_are_read_in_both_forms_and_checked() {
        let tools = serde_json::json!([
            {"name": "a", "description": "A", "parameters": {"type": "object"}},
            {"type": "function", "function": {"name": "b"}},
        ]);
        assert_eq!(
            neutral_tools(Some(&tools)).expect("valid"),
            vec![
                Tool {
                    name: "a".to_owned(),
                    description: Some("A".to_owned()),
                    parameters: Some(serde_json::json!({"type": "object"})),
                },
                Tool {
                    name: "b".to_owned(),
                    description: None,
                    parameters: None,
                },
            ]
        );
        assert_eq!(neutral_tools(None).expect("none"), vec![]);
        assert_eq!(
            neutral_tools(Some(&serde_json::json!([]))).expect("empty"),
            vec![]
        );
        for bad in [
            serde_json::json!({"name": "a"}),
            serde_json::json!([{"description": "no name"}]),
            serde_json::json!([{"name": ""}]),
            serde_json::json!([{"name": "a", "parameters": "string"}]),
            serde_json::json!([{"name": "a", "description": 5}]),
        ] {
            assert!(
                matches!(neutral_tools(Some(&bad)), Err(ProviderError::Invalid(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn budgets_and_estimates() {
        assert_eq!(thinking_budget(ThinkingLevel::Low), 1024);
        assert_eq!(thinking_budget(ThinkingLevel::High), 24576);
        assert_eq!(estimate_tokens(0), 0);
        assert_eq!(estimate_tokens(1), 1);
        assert_eq!(estimate_tokens(8), 2);
        assert_eq!(estimate_tokens(9), 3);
    }
}
