//! Anthropic Messages (`POST {base}/messages`, `x-api-key`, `anthropic-version: 2023-06-01`).
//!
//! Request mapping:
//!
//! * `max_tokens` is required by the API: [`DEFAULT_MAX_TOKENS`] when the prompt sets none;
//! * `system`; `messages: [{role: "user", content: [{type: "image", source: {type: "base64",
//!   media_type, data}}?, {type: "text", text}]}]` (the image first, as Anthropic advises);
//! * `thinking_level` → `thinking: {type: "enabled", budget_tokens}` with the budget from
//!   [`thinking_budget`]. `temperature` is sent as given (with thinking the API accepts only
//!   1 and says so in its 400). The API wants `budget_tokens < max_tokens`, and thinking tokens
//!   count against `max_tokens`, so `max_tokens` is sent as budget + the answer's own room
//!   (the prompt's `max_tokens`, else [`DEFAULT_MAX_TOKENS`]);
//! * `tools: [{name, description, input_schema}]` (a tool without parameters gets the empty
//!   object schema, which the API requires).
//!
//! The answer's text blocks are joined, `tool_use` blocks become neutral tool calls
//! (`input` → `arguments`), and `thinking` blocks are left out of the content.

use serde_json::{json, Value};
use tokio::time::Instant;

use super::provider::{
    neutral_tools, thinking_budget, tool_call, tool_calls, Answer, Prompt, ProviderError,
    ProviderSettings, Remote, RemoteApi, Usage,
};

/// Anthropic's public endpoint.
pub const DEFAULT_BASE: &str = "https://api.anthropic.com/v1";

/// The model used when neither the request nor the config names one.
pub const DEFAULT_MODEL: &str = "claude-sonnet-4-5";

/// The API version sent in `anthropic-version`.
pub const API_VERSION: &str = "2023-06-01";

/// `max_tokens` when the prompt sets none (the API requires one).
pub const DEFAULT_MAX_TOKENS: u32 = 1024;

/// The environment variable that holds an Anthropic key, for the "no key" message.
pub const KEY_VARIABLES: &str = "ANTHROPIC_API_KEY";

/// The Anthropic Messages API.
#[derive(Debug, Clone)]
pub struct Anthropic {
    /// Settings, client and the shared HTTP plumbing.
    remote: Remote,
}

impl Anthropic {
    /// The provider for `settings`, sending with `client`. A missing key is reported by
    /// [`Provider::call`].
    pub fn new(settings: ProviderSettings, client: reqwest::Client) -> Self {
        Anthropic {
            remote: Remote::new(settings, client, DEFAULT_BASE),
        }
    }

    /// Maps the answer.
    fn answer(&self, json: &Value, model: &str) -> Result<Answer, ProviderError> {
        let blocks = json
            .get("content")
            .and_then(|c| c.as_array())
            .ok_or_else(|| self.remote.bad(&format!("no content in {json}")))?;
        let mut content = String::new();
        let mut calls = Vec::new();
        for block in blocks {
            match block.get("type").and_then(|t| t.as_str()) {
                Some("text") => {
                    content.push_str(block.get("text").and_then(|t| t.as_str()).unwrap_or(""));
                }
                Some("tool_use") => calls.push(tool_call(
                    block.get("id").and_then(|i| i.as_str()),
                    block.get("name").and_then(|n| n.as_str()).unwrap_or(""),
                    block.get("input").cloned().unwrap_or_else(|| json!({})),
                )),
                // `thinking`, `redacted_thinking` and blocks of later API versions.
                _ => {}
            }
        }
        let usage = json.get("usage").unwrap_or(&Value::Null);
        let count = |field: &str| usage.get(field).and_then(Value::as_u64).unwrap_or(0);
        Ok(Answer {
            content,
            model: json
                .get("model")
                .and_then(|m| m.as_str())
                .unwrap_or(model)
                .to_owned(),
            usage: Usage {
                input: count("input_tokens"),
                output: count("output_tokens"),
            },
            finish_reason: json
                .get("stop_reason")
                .and_then(|s| s.as_str())
                .map(str::to_owned),
            tool_calls: tool_calls(calls),
        })
    }
}

impl RemoteApi for Anthropic {
    const KIND: &'static str = "anthropic";
    const DEFAULT_MODEL: &'static str = DEFAULT_MODEL;

    fn remote(&self) -> &Remote {
        &self.remote
    }

    /// One call.
    async fn ask(&self, prompt: &Prompt, deadline: Instant) -> Result<Answer, ProviderError> {
        let key = self.remote.require_key(KEY_VARIABLES)?;
        let model = self.remote.model(prompt, DEFAULT_MODEL);
        let body = request_body(prompt, model)?;
        let headers = [
            ("x-api-key", key.expose().to_owned()),
            ("anthropic-version", API_VERSION.to_owned()),
        ];
        let url = self.remote.url("/messages");
        let response = self.remote.post(&url, &headers, &body, deadline).await?;
        let json = self.remote.read_json(response, deadline).await?;
        self.answer(&json, model)
    }
}

/// The Messages request for `prompt`.
fn request_body(prompt: &Prompt, model: &str) -> Result<Value, ProviderError> {
    let mut content = Vec::new();
    if let Some(image) = &prompt.image {
        content.push(json!({"type": "image", "source": {
            "type": "base64", "media_type": image.mime_type, "data": image.data,
        }}));
    }
    content.push(json!({"type": "text", "text": prompt.prompt}));
    let answer_room = prompt.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
    let mut body = json!({
        "model": model,
        "max_tokens": answer_room,
        "messages": [{"role": "user", "content": content}],
    });
    if let Some(system) = &prompt.system {
        body["system"] = json!(system);
    }
    if let Some(temperature) = prompt.temperature {
        body["temperature"] = json!(temperature);
    }
    if let Some(level) = prompt.thinking_level {
        let budget = thinking_budget(level);
        body["thinking"] = json!({"type": "enabled", "budget_tokens": budget});
        body["max_tokens"] = json!(budget.saturating_add(answer_room));
    }
    let tools = neutral_tools(prompt.tools.as_ref())?;
    if !tools.is_empty() {
        let tools: Vec<Value> = tools
            .into_iter()
            .map(|tool| {
                let mut out = json!({
                    "name": tool.name,
                    "input_schema": tool
                        .parameters
                        .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
                });
                if let Some(description) = tool.description {
                    out["description"] = json!(description);
                }
                out
            })
            .collect();
        body["tools"] = Value::Array(tools);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::provider::{call_with_retries, Provider};
    use crate::llm::standin::{self, client, deadline_in, settings, Case, Reply, StandIn, KEY};
    use clove_abi::msg::{ThinkImage, ThinkingLevel};

    /// Builds the provider under test.
    fn make(settings: ProviderSettings, client: reqwest::Client) -> Box<dyn Provider> {
        Box::new(Anthropic::new(settings, client))
    }

    /// A full answer: thinking, two text blocks, a tool use.
    fn ok_body() -> Value {
        json!({
            "id": "msg_1", "type": "message", "role": "assistant",
            "model": "claude-test-20250101",
            "content": [
                {"type": "thinking", "thinking": "Hmm.", "signature": "sig"},
                {"type": "text", "text": "Looking "},
                {"type": "text", "text": "it up."},
                {"type": "tool_use", "id": "toolu_1", "name": "weather",
                 "input": {"city": "Oslo"}},
            ],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 50, "output_tokens": 30},
        })
    }

    /// The scenarios every provider passes.
    fn case() -> Case {
        Case {
            make,
            ok_body: ok_body(),
            ok_content: "Looking it up.",
            auth_header: "x-api-key",
        }
    }

    #[tokio::test]
    async fn sends_the_request_and_maps_the_answer() {
        let standin = StandIn::start(vec![Reply::json(200, ok_body())]).await;
        let provider = Anthropic::new(settings(&standin, Some(KEY)), client());
        let prompt = Prompt {
            model: "claude-test".to_owned(),
            prompt: "What is the weather?".to_owned(),
            system: Some("Be brief.".to_owned()),
            image: Some(ThinkImage {
                data: "iVBORw0K".to_owned(),
                mime_type: "image/png".to_owned(),
            }),
            temperature: Some(1.0),
            max_tokens: Some(500),
            thinking_level: Some(ThinkingLevel::Low),
            tools: Some(json!([
                {"name": "weather", "description": "Weather in a city",
                 "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
                {"type": "function", "function": {"name": "time"}},
            ])),
        };
        let answer = provider
            .call(&prompt, deadline_in(10_000))
            .await
            .expect("answer");
        let sent = standin.requests();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].method, "POST");
        assert_eq!(sent[0].path, "/messages");
        assert_eq!(sent[0].headers["x-api-key"], KEY);
        assert_eq!(sent[0].headers["anthropic-version"], "2023-06-01");
        assert_eq!(sent[0].headers["content-type"], "application/json");
        assert!(!sent[0].headers.contains_key("authorization"));
        assert_eq!(
            sent[0].body,
            json!({
                "model": "claude-test",
                // The thinking budget (1024) plus the answer's 500.
                "max_tokens": 1524,
                "system": "Be brief.",
                "messages": [{"role": "user", "content": [
                    {"type": "image", "source": {"type": "base64",
                                                 "media_type": "image/png",
                                                 "data": "iVBORw0K"}},
                    {"type": "text", "text": "What is the weather?"},
                ]}],
                "temperature": 1.0,
                "thinking": {"type": "enabled", "budget_tokens": 1024},
                "tools": [
                    {"name": "weather", "description": "Weather in a city",
                     "input_schema": {"type": "object",
                                      "properties": {"city": {"type": "string"}}}},
                    {"name": "time", "input_schema": {"type": "object", "properties": {}}},
                ],
            })
        );
        assert_eq!(
            answer,
            Answer {
                content: "Looking it up.".to_owned(),
                model: "claude-test-20250101".to_owned(),
                usage: Usage {
                    input: 50,
                    output: 30
                },
                finish_reason: Some("tool_use".to_owned()),
                tool_calls: Some(json!([
                    {"id": "toolu_1", "name": "weather", "arguments": {"city": "Oslo"}},
                ])),
            }
        );
    }

    #[tokio::test]
    async fn max_tokens_defaults_and_no_key_fails_before_sending() {
        let standin = StandIn::start(vec![Reply::json(200, ok_body())]).await;
        let prompt = Prompt {
            prompt: "hi".to_owned(),
            ..Prompt::default()
        };
        Anthropic::new(settings(&standin, Some(KEY)), client())
            .call(&prompt, deadline_in(10_000))
            .await
            .expect("answer");
        assert_eq!(
            standin.requests()[0].body,
            json!({"model": DEFAULT_MODEL, "max_tokens": 1024,
                   "messages": [{"role": "user",
                                 "content": [{"type": "text", "text": "hi"}]}]})
        );
        let error = Anthropic::new(settings(&standin, None), client())
            .call(&prompt, deadline_in(10_000))
            .await
            .expect_err("no key");
        assert!(
            matches!(&error, ProviderError::Invalid(m) if m.contains("ANTHROPIC_API_KEY")),
            "{error:?}"
        );
        assert_eq!(standin.requests().len(), 1);
    }

    #[tokio::test]
    async fn an_overloaded_error_is_mapped_and_retry_after_honoured() {
        let overloaded = json!({"type": "error",
                                "error": {"type": "overloaded_error", "message": "Overloaded"}});
        let standin = StandIn::start(vec![
            Reply::json(529, overloaded.clone()),
            Reply::json(429, overloaded).with_header("retry-after", "1"),
            Reply::json(200, ok_body()),
        ])
        .await;
        let provider = Anthropic::new(settings(&standin, Some(KEY)), client());
        let error = provider
            .call(&standin::prompt(), deadline_in(10_000))
            .await
            .expect_err("529");
        assert_eq!(
            error.to_string(),
            "test answered HTTP 529: overloaded_error: Overloaded"
        );
        assert!(error.retryable());
        let started = std::time::Instant::now();
        let answer = call_with_retries(&provider, &standin::prompt(), deadline_in(10_000), 1)
            .await
            .expect("answer after waiting");
        assert!(started.elapsed() >= std::time::Duration::from_secs(1));
        assert_eq!(answer.content, "Looking it up.");
    }

    standin::shared_scenarios!(case());
}
