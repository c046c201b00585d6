//! OpenAI-compatible chat completions (`POST {base}/chat/completions`): OpenAI itself and the
//! local servers that speak its API (Ollama, vLLM, llama.cpp, LM Studio).
//!
//! Request mapping:
//!
//! * `Authorization: Bearer KEY` only when a key is configured (local servers need none; when
//!   OpenAI answers 401 and no key is configured, the error says to set `OPENAI_API_KEY`);
//! * `messages`: the system instruction, then the user's prompt — a plain string, or with an
//!   image the content parts `[{type: "text"}, {type: "image_url", image_url: {url:
//!   "data:MIME;base64,DATA"}}]`;
//! * `max_tokens`, not the newer `max_completion_tokens`: it is what every compatible local
//!   server understands (OpenAI's reasoning models want the newer name; point those at a
//!   config without `max_tokens`);
//! * `thinking_level` → `reasoning_effort` (`low`, `medium`, `high`);
//! * `tools` → `[{type: "function", function: {name, description, parameters}}]`.
//!
//! With `stream` set in the settings the answer is asked for as server-sent events
//! (`stream: true, stream_options: {include_usage: true}`) and assembled here: content
//! deltas, tool-call deltas (by index, arguments concatenated), the finish reason and the
//! final usage chunk.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use tokio::time::Instant;

use super::provider::{
    error_message, estimate_tokens, neutral_tools, tool_call, tool_calls, Answer, Prompt,
    ProviderError, ProviderSettings, Remote, RemoteApi, Usage,
};

/// OpenAI's public endpoint.
pub const DEFAULT_BASE: &str = "https://api.openai.com/v1";

/// The model used when neither the request nor the config names one.
pub const DEFAULT_MODEL: &str = "gpt-4o-mini";

/// An OpenAI-compatible chat completions API.
#[derive(Debug, Clone)]
pub struct OpenAi {
    /// Settings, client and the shared HTTP plumbing.
    remote: Remote,
}

impl OpenAi {
    /// The provider for `settings`, sending with `client`.
    pub fn new(settings: ProviderSettings, client: reqwest::Client) -> Self {
        OpenAi {
            remote: Remote::new(settings, client, DEFAULT_BASE),
        }
    }

    /// A 401 when no key is configured says which variable sets one.
    fn hint_key(&self, error: ProviderError) -> ProviderError {
        match error {
            ProviderError::Status {
                provider,
                status: 401,
                message,
                retry_after,
            } if self.remote.key().is_none() => ProviderError::Status {
                provider,
                status: 401,
                message: format!(
                    "{message} (no API key is configured: set OPENAI_API_KEY or api_key)"
                ),
                retry_after,
            },
            other => other,
        }
    }

    /// Maps a whole (not streamed) answer.
    fn answer(&self, json: &Value, prompt: &Prompt, model: &str) -> Result<Answer, ProviderError> {
        let choice = json
            .get("choices")
            .and_then(|c| c.get(0))
            .ok_or_else(|| self.remote.bad(&format!("no choices in {json}")))?;
        let message = choice.get("message").unwrap_or(&Value::Null);
        let content = match message.get("content") {
            Some(Value::String(text)) => text.clone(),
            // Some servers send content parts; their text is the answer.
            Some(Value::Array(parts)) => parts
                .iter()
                .filter_map(|p| p.get("text").and_then(|t| t.as_str()))
                .collect(),
            _ => String::new(),
        };
        let calls: Vec<Value> = message
            .get("tool_calls")
            .and_then(|c| c.as_array())
            .map(|calls| {
                calls
                    .iter()
                    .map(|call| {
                        let function = call.get("function").unwrap_or(&Value::Null);
                        neutral_call(
                            call.get("id").and_then(|i| i.as_str()),
                            str_field(function, "name"),
                            str_field(function, "arguments"),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let usage = match json.get("usage").filter(|u| !u.is_null()) {
            Some(usage) => usage_of(usage),
            None => estimate_usage(prompt, &content, &calls),
        };
        Ok(Answer {
            content,
            model: json
                .get("model")
                .and_then(|m| m.as_str())
                .unwrap_or(model)
                .to_owned(),
            usage,
            finish_reason: choice
                .get("finish_reason")
                .and_then(|f| f.as_str())
                .map(str::to_owned),
            tool_calls: tool_calls(calls),
        })
    }

    /// Reads a server-sent event stream line by line (lines may span chunks) into the
    /// answer, until `[DONE]` or the end of the body.
    async fn read_stream(
        &self,
        mut response: reqwest::Response,
        prompt: &Prompt,
        model: &str,
        deadline: Instant,
    ) -> Result<Answer, ProviderError> {
        let mut assembler = Assembler::default();
        let mut buf = Vec::new();
        // How much of `buf` is known to hold no line end.
        let mut scanned = 0;
        while !assembler.done {
            let more = self
                .remote
                .read_chunk(&mut response, &mut buf, deadline)
                .await?;
            while let Some(at) = buf[scanned..].iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=scanned + at).collect();
                scanned = 0;
                assembler.line(&line).map_err(|m| self.remote.bad(&m))?;
            }
            scanned = buf.len();
            if !more {
                assembler.line(&buf).map_err(|m| self.remote.bad(&m))?;
                break;
            }
        }
        assembler
            .finish(prompt, model)
            .map_err(|m| self.remote.bad(&m))
    }
}

impl RemoteApi for OpenAi {
    const KIND: &'static str = "openai";
    const DEFAULT_MODEL: &'static str = DEFAULT_MODEL;

    fn remote(&self) -> &Remote {
        &self.remote
    }

    /// One call: send, then read the answer whole or as a stream.
    async fn ask(&self, prompt: &Prompt, deadline: Instant) -> Result<Answer, ProviderError> {
        let model = self.remote.model(prompt, DEFAULT_MODEL);
        let stream = self.remote.settings.stream;
        let body = request_body(prompt, model, stream)?;
        let headers: Vec<(&'static str, String)> = match self.remote.key() {
            Some(key) => vec![("authorization", format!("Bearer {}", key.expose()))],
            None => Vec::new(),
        };
        let url = self.remote.url("/chat/completions");
        let response = match self.remote.post(&url, &headers, &body, deadline).await {
            Ok(response) => response,
            Err(error) => return Err(self.hint_key(error)),
        };
        let streamed = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|t| t.to_str().ok())
            .is_some_and(|t| t.starts_with("text/event-stream"));
        if !streamed {
            // Asked for a stream or not, a JSON answer is read as one.
            let json = self.remote.read_json(response, deadline).await?;
            return self.answer(&json, prompt, model);
        }
        self.read_stream(response, prompt, model, deadline).await
    }
}

/// The chat completions request for `prompt`.
fn request_body(prompt: &Prompt, model: &str, stream: bool) -> Result<Value, ProviderError> {
    let mut messages = Vec::new();
    if let Some(system) = &prompt.system {
        messages.push(json!({"role": "system", "content": system}));
    }
    let content = match &prompt.image {
        None => json!(prompt.prompt),
        Some(image) => json!([
            {"type": "text", "text": prompt.prompt},
            {"type": "image_url", "image_url": {
                "url": format!("data:{};base64,{}", image.mime_type, image.data),
            }},
        ]),
    };
    messages.push(json!({"role": "user", "content": content}));
    let mut body = json!({"model": model, "messages": messages});
    if let Some(temperature) = prompt.temperature {
        body["temperature"] = json!(temperature);
    }
    if let Some(max_tokens) = prompt.max_tokens {
        body["max_tokens"] = json!(max_tokens);
    }
    if let Some(level) = prompt.thinking_level {
        body["reasoning_effort"] = json!(level.as_str());
    }
    let tools = neutral_tools(prompt.tools.as_ref())?;
    if !tools.is_empty() {
        let tools: Vec<Value> = tools
            .into_iter()
            .map(|tool| json!({"type": "function", "function": tool.declaration()}))
            .collect();
        body["tools"] = Value::Array(tools);
    }
    if stream {
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
    }
    Ok(body)
}

/// OpenAI's `usage` object as [`Usage`].
fn usage_of(usage: &Value) -> Usage {
    let count = |field: &str| usage.get(field).and_then(Value::as_u64).unwrap_or(0);
    Usage {
        input: count("prompt_tokens"),
        output: count("completion_tokens"),
    }
}

/// `value[field]` as a string, else empty.
fn str_field<'a>(value: &'a Value, field: &str) -> &'a str {
    value.get(field).and_then(|v| v.as_str()).unwrap_or("")
}

/// A neutral tool call from OpenAI's: `arguments` is a JSON string, parsed into its object
/// (empty: `{}`; not a JSON object: kept as the string it was).
fn neutral_call(id: Option<&str>, name: &str, arguments: &str) -> Value {
    let arguments = if arguments.trim().is_empty() {
        json!({})
    } else {
        match serde_json::from_str::<Value>(arguments) {
            Ok(object @ Value::Object(_)) => object,
            _ => Value::String(arguments.to_owned()),
        }
    };
    tool_call(id, name, arguments)
}

/// Usage estimated from text length when the server reports none ([`estimate_tokens`]):
/// input counts the system instruction and prompt (not an image or tools), output the
/// answer's text and tool-call arguments.
fn estimate_usage(prompt: &Prompt, content: &str, calls: &[Value]) -> Usage {
    let input =
        prompt.system.as_deref().unwrap_or("").chars().count() + prompt.prompt.chars().count();
    let output = content.chars().count()
        + calls
            .iter()
            .map(|c| c["arguments"].to_string().chars().count())
            .sum::<usize>();
    Usage {
        input: estimate_tokens(input),
        output: estimate_tokens(output),
    }
}

/// A tool call being assembled from stream deltas.
#[derive(Debug, Default)]
struct PartialCall {
    /// The call's id (from its first delta).
    id: String,
    /// The function's name.
    name: String,
    /// The arguments' JSON text, concatenated from the deltas.
    arguments: String,
}

/// A streamed answer being assembled from its `data:` lines.
#[derive(Debug, Default)]
struct Assembler {
    /// The content so far.
    content: String,
    /// Tool calls by their index.
    calls: BTreeMap<u64, PartialCall>,
    /// The finish reason, once sent.
    finish_reason: Option<String>,
    /// The usage chunk, once sent.
    usage: Option<Usage>,
    /// The model, as the chunks name it.
    model: Option<String>,
    /// `[DONE]` was seen.
    done: bool,
    /// Some chunk was seen.
    any: bool,
}

impl Assembler {
    /// Takes one line of the event stream (with or without its line end).
    fn line(&mut self, line: &[u8]) -> Result<(), String> {
        let line = String::from_utf8_lossy(line);
        let line = line.trim_end_matches(['\r', '\n']);
        // Other fields (`event:`, `id:`, `retry:`) and `:` comments carry nothing for us.
        let Some(data) = line.strip_prefix("data:") else {
            return Ok(());
        };
        let data = data.trim();
        if data.is_empty() || self.done {
            return Ok(());
        }
        if data == "[DONE]" {
            self.done = true;
            return Ok(());
        }
        let chunk: Value = serde_json::from_str(data)
            .map_err(|e| format!("a stream event is not JSON ({e}): {data}"))?;
        if chunk.get("error").is_some() {
            return Err(format!(
                "the stream reported an error: {}",
                error_message(data.as_bytes())
            ));
        }
        self.chunk(&chunk);
        Ok(())
    }

    /// Takes one chunk's deltas, finish reason, usage and model.
    fn chunk(&mut self, chunk: &Value) {
        self.any = true;
        if let Some(model) = chunk.get("model").and_then(|m| m.as_str()) {
            self.model = Some(model.to_owned());
        }
        if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()) {
            self.usage = Some(usage_of(usage));
        }
        let Some(choice) = chunk.get("choices").and_then(|c| c.get(0)) else {
            return;
        };
        if let Some(reason) = choice.get("finish_reason").and_then(|f| f.as_str()) {
            self.finish_reason = Some(reason.to_owned());
        }
        let delta = choice.get("delta").unwrap_or(&Value::Null);
        if let Some(text) = delta.get("content").and_then(|c| c.as_str()) {
            self.content.push_str(text);
        }
        let deltas = delta.get("tool_calls").and_then(|c| c.as_array());
        for (position, call) in deltas.into_iter().flatten().enumerate() {
            let index = call
                .get("index")
                .and_then(Value::as_u64)
                .unwrap_or(position as u64);
            let partial = self.calls.entry(index).or_default();
            if let Some(id) = call.get("id").and_then(|i| i.as_str()) {
                partial.id = id.to_owned();
            }
            let function = call.get("function").unwrap_or(&Value::Null);
            if let Some(name) = function.get("name").and_then(|n| n.as_str()) {
                partial.name.push_str(name);
            }
            if let Some(arguments) = function.get("arguments").and_then(|a| a.as_str()) {
                partial.arguments.push_str(arguments);
            }
        }
    }

    /// The assembled answer; an error if the stream ended before saying it was complete
    /// (`[DONE]` or a finish reason).
    fn finish(self, prompt: &Prompt, model: &str) -> Result<Answer, String> {
        if !self.done && self.finish_reason.is_none() {
            return Err(if self.any {
                "the stream ended before the answer was complete".to_owned()
            } else {
                "the stream ended without any event".to_owned()
            });
        }
        let calls: Vec<Value> = self
            .calls
            .values()
            .map(|c| neutral_call(Some(&c.id), &c.name, &c.arguments))
            .collect();
        let usage = self
            .usage
            .unwrap_or_else(|| estimate_usage(prompt, &self.content, &calls));
        Ok(Answer {
            content: self.content,
            model: self.model.unwrap_or_else(|| model.to_owned()),
            usage,
            finish_reason: self.finish_reason,
            tool_calls: tool_calls(calls),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::provider::Provider;
    use crate::llm::standin::{self, client, deadline_in, settings, Case, Reply, StandIn, KEY};
    use clove_abi::msg::{ThinkImage, ThinkingLevel};

    /// Builds the provider under test.
    fn make(settings: ProviderSettings, client: reqwest::Client) -> Box<dyn Provider> {
        Box::new(OpenAi::new(settings, client))
    }

    /// A full answer: text, two tool calls (one with arguments that are not JSON).
    fn ok_body() -> Value {
        json!({
            "id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-test-0613",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": "Looking it up.",
                "tool_calls": [
                    {"id": "call_1", "type": "function",
                     "function": {"name": "weather", "arguments": "{\"city\":\"Oslo\"}"}},
                    {"id": "call_2", "type": "function",
                     "function": {"name": "echo", "arguments": "not json"}},
                ],
            }}],
            "usage": {"prompt_tokens": 31, "completion_tokens": 7, "total_tokens": 38},
        })
    }

    /// The scenarios every provider passes.
    fn case() -> Case {
        Case {
            make,
            ok_body: ok_body(),
            ok_content: "Looking it up.",
            auth_header: "authorization",
        }
    }

    /// A prompt using every field.
    fn full_prompt() -> Prompt {
        Prompt {
            model: "gpt-test".to_owned(),
            prompt: "What is the weather?".to_owned(),
            system: Some("Be brief.".to_owned()),
            image: Some(ThinkImage {
                data: "iVBORw0K".to_owned(),
                mime_type: "image/png".to_owned(),
            }),
            temperature: Some(0.5),
            max_tokens: Some(200),
            thinking_level: Some(ThinkingLevel::High),
            tools: Some(json!([
                {"name": "weather", "description": "Weather in a city",
                 "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
                {"type": "function", "function": {"name": "echo"}},
            ])),
        }
    }

    #[tokio::test]
    async fn sends_the_request_and_maps_the_answer() {
        let standin = StandIn::start(vec![Reply::json(200, ok_body())]).await;
        let provider = OpenAi::new(settings(&standin, Some(KEY)), client());
        let answer = provider
            .call(&full_prompt(), deadline_in(10_000))
            .await
            .expect("answer");
        let sent = standin.requests();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].method, "POST");
        assert_eq!(sent[0].path, "/chat/completions");
        assert_eq!(sent[0].headers["authorization"], format!("Bearer {KEY}"));
        assert_eq!(sent[0].headers["content-type"], "application/json");
        assert_eq!(
            sent[0].body,
            json!({
                "model": "gpt-test",
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": [
                        {"type": "text", "text": "What is the weather?"},
                        {"type": "image_url",
                         "image_url": {"url": "data:image/png;base64,iVBORw0K"}},
                    ]},
                ],
                "temperature": 0.5,
                "max_tokens": 200,
                "reasoning_effort": "high",
                "tools": [
                    {"type": "function", "function": {
                        "name": "weather", "description": "Weather in a city",
                        "parameters": {"type": "object",
                                       "properties": {"city": {"type": "string"}}}}},
                    {"type": "function", "function": {"name": "echo"}},
                ],
            })
        );
        assert_eq!(
            answer,
            Answer {
                content: "Looking it up.".to_owned(),
                model: "gpt-test-0613".to_owned(),
                usage: Usage {
                    input: 31,
                    output: 7
                },
                finish_reason: Some("tool_calls".to_owned()),
                tool_calls: Some(json!([
                    {"id": "call_1", "name": "weather", "arguments": {"city": "Oslo"}},
                    {"id": "call_2", "name": "echo", "arguments": "not json"},
                ])),
            }
        );
    }

    #[tokio::test]
    async fn a_local_server_gets_no_auth_and_usage_is_estimated_when_missing() {
        let standin = StandIn::start(vec![Reply::json(
            200,
            json!({"choices": [{"message": {"content": "12345678"}, "finish_reason": "stop"}]}),
        )])
        .await;
        let provider = OpenAi::new(settings(&standin, None), client());
        let prompt = Prompt {
            model: String::new(),
            prompt: "hello".to_owned(),
            ..Prompt::default()
        };
        let answer = provider
            .call(&prompt, deadline_in(10_000))
            .await
            .expect("answer");
        let sent = standin.requests();
        assert!(!sent[0].headers.contains_key("authorization"));
        assert_eq!(
            sent[0].body,
            json!({"model": DEFAULT_MODEL,
                   "messages": [{"role": "user", "content": "hello"}]})
        );
        assert_eq!(answer.content, "12345678");
        assert_eq!(answer.model, DEFAULT_MODEL);
        assert_eq!(
            answer.usage,
            Usage {
                input: 2,
                output: 2
            }
        );
        assert_eq!(answer.tool_calls, None);
    }

    /// The SSE events of a streamed answer, cut at awkward places (inside `data:`, inside
    /// the JSON, between `\r` and `\n`) so that lines span TCP writes.
    fn stream_pieces(with_usage: bool) -> Vec<String> {
        let events = [
            json!({"model": "gpt-stream", "choices": [{"index": 0,
                   "delta": {"role": "assistant", "content": "Hel"}}]}),
            json!({"model": "gpt-stream", "choices": [{"index": 0,
                   "delta": {"content": "lo, "}}]}),
            json!({"model": "gpt-stream", "choices": [{"index": 0, "delta": {"tool_calls": [
                {"index": 0, "id": "call_a", "type": "function",
                 "function": {"name": "weather", "arguments": ""}}]}}]}),
            json!({"model": "gpt-stream", "choices": [{"index": 0, "delta": {"tool_calls": [
                {"index": 0, "function": {"arguments": "{\"ci"}},
                {"index": 1, "id": "call_b", "function": {"name": "time", "arguments": "{}"}}
            ]}}]}),
            json!({"model": "gpt-stream", "choices": [{"index": 0, "delta": {"tool_calls": [
                {"index": 0, "function": {"arguments": "ty\":\"Oslo\"}"}}]}}]}),
            json!({"model": "gpt-stream", "choices": [{"index": 0,
                   "delta": {"content": "world"}, "finish_reason": "tool_calls"}]}),
        ];
        let mut text = String::from(": keep-alive\r\n\r\n");
        for event in events {
            text.push_str(&format!("data: {event}\r\n\r\n"));
        }
        if with_usage {
            text.push_str(&format!(
                "data: {}\r\n\r\n",
                json!({"model": "gpt-stream", "choices": [],
                       "usage": {"prompt_tokens": 12, "completion_tokens": 9}})
            ));
        }
        text.push_str("data: [DONE]\r\n\r\n");
        // Cut into pieces of 7, 13, 7, 13, ... bytes (all ASCII).
        let mut pieces = Vec::new();
        let mut rest = text.as_str();
        let mut sizes = [7usize, 13].into_iter().cycle();
        while !rest.is_empty() {
            let at = sizes.next().unwrap_or(7).min(rest.len());
            let (piece, tail) = rest.split_at(at);
            pieces.push(piece.to_owned());
            rest = tail;
        }
        pieces
    }

    #[tokio::test]
    async fn a_streamed_answer_is_assembled() {
        let standin = StandIn::start(vec![Reply::Stream(stream_pieces(true))]).await;
        let mut settings = settings(&standin, Some(KEY));
        settings.stream = true;
        let provider = OpenAi::new(settings, client());
        let prompt = Prompt {
            model: "gpt-test".to_owned(),
            prompt: "hi".to_owned(),
            ..Prompt::default()
        };
        let answer = provider
            .call(&prompt, deadline_in(10_000))
            .await
            .expect("answer");
        assert_eq!(
            standin.requests()[0].body,
            json!({"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}],
                   "stream": true, "stream_options": {"include_usage": true}})
        );
        assert_eq!(
            answer,
            Answer {
                content: "Hello, world".to_owned(),
                model: "gpt-stream".to_owned(),
                usage: Usage {
                    input: 12,
                    output: 9
                },
                finish_reason: Some("tool_calls".to_owned()),
                tool_calls: Some(json!([
                    {"id": "call_a", "name": "weather", "arguments": {"city": "Oslo"}},
                    {"id": "call_b", "name": "time", "arguments": {}},
                ])),
            }
        );
    }

    #[tokio::test]
    async fn a_stream_without_usage_is_estimated_and_a_cut_stream_is_an_error() {
        let standin = StandIn::start(vec![
            Reply::json(200, ok_body()),
            Reply::Stream(stream_pieces(false)),
            Reply::Stream(vec![
                "data: {\"choices\": [{\"delta\": {\"content\": \"Hi\"}}]}\n\n".to_owned(),
            ]),
        ])
        .await;
        let mut settings = settings(&standin, None);
        settings.stream = true;
        let provider = OpenAi::new(settings, client());
        let prompt = Prompt {
            model: "gpt-test".to_owned(),
            prompt: "hi there".to_owned(),
            ..Prompt::default()
        };
        // A server that answers a stream request with plain JSON is understood too.
        let answer = provider
            .call(&prompt, deadline_in(10_000))
            .await
            .expect("answer");
        assert_eq!(answer.content, "Looking it up.");
        let answer = provider
            .call(&prompt, deadline_in(10_000))
            .await
            .expect("answer");
        // "Hello, world" (12 chars) + {"city":"Oslo"} (15) + {} (2) = 29 chars: 8 tokens.
        assert_eq!(
            answer.usage,
            Usage {
                input: 2,
                output: 8
            }
        );
        let error = provider
            .call(&prompt, deadline_in(10_000))
            .await
            .expect_err("cut stream");
        assert!(
            matches!(&error, ProviderError::BadResponse { message, .. }
                if message.contains("ended before")),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn an_error_status_carries_the_providers_message() {
        let body = json!({"error": {"message": "Incorrect API key provided",
                                    "type": "invalid_request_error", "code": "invalid_api_key"}});
        let standin =
            StandIn::start(vec![Reply::json(401, body.clone()), Reply::json(401, body)]).await;
        let error = OpenAi::new(settings(&standin, Some(KEY)), client())
            .call(&standin::prompt(), deadline_in(10_000))
            .await
            .expect_err("401");
        assert_eq!(
            error.to_string(),
            "test answered HTTP 401: invalid_request_error: Incorrect API key provided"
        );
        let error = OpenAi::new(settings(&standin, None), client())
            .call(&standin::prompt(), deadline_in(10_000))
            .await
            .expect_err("401");
        assert!(error.to_string().contains("set OPENAI_API_KEY"), "{error}");
    }

    standin::shared_scenarios!(case());
}
