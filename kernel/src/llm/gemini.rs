//! Google Gemini `generateContent` (`POST {base}/models/{model}:generateContent`).
//!
//! The key goes in the `x-goog-api-key` header, never in the URL's `?key=` (URLs end up in
//! transport errors and logs). Request mapping:
//!
//! * `contents: [{role: "user", parts: [{text}, {inline_data: {mime_type, data}}?]}]`;
//! * `systemInstruction: {parts: [{text}]}`;
//! * `generationConfig: {temperature, maxOutputTokens, thinkingConfig: {thinkingBudget}}`,
//!   the budget from [`thinking_budget`] (low 1024, medium 8192, high 24576 tokens);
//! * `tools: [{functionDeclarations: [{name, description, parameters}]}]`.
//!
//! The answer's text parts are joined (thought parts left out), `functionCall` parts become
//! neutral tool calls (`args` → `arguments`), and the thought tokens count as output.

use serde_json::{json, Value};
use tokio::time::Instant;

use super::provider::{
    neutral_tools, thinking_budget, tool_call, tool_calls, Answer, Prompt, ProviderError,
    ProviderSettings, Remote, RemoteApi, Tool, Usage,
};

/// Gemini's public endpoint.
pub const DEFAULT_BASE: &str = "https://generativelanguage.googleapis.com/v1beta";

/// The model used when neither the request nor the config names one.
pub const DEFAULT_MODEL: &str = "gemini-2.5-flash";

/// The environment variables that hold a Gemini key, for the "no key" message.
pub const KEY_VARIABLES: &str = "GEMINI_API_KEY or GOOGLE_API_KEY";

/// The Gemini API.
#[derive(Debug, Clone)]
pub struct Gemini {
    /// Settings, client and the shared HTTP plumbing.
    remote: Remote,
}

impl Gemini {
    /// The provider for `settings`, sending with `client`. A missing key is reported by
    /// [`Provider::call`].
    pub fn new(settings: ProviderSettings, client: reqwest::Client) -> Self {
        Gemini {
            remote: Remote::new(settings, client, DEFAULT_BASE),
        }
    }

    /// Maps the answer.
    fn answer(&self, json: &Value, model: &str) -> Result<Answer, ProviderError> {
        let model = json
            .get("modelVersion")
            .and_then(|m| m.as_str())
            .unwrap_or(model)
            .to_owned();
        let meta = json.get("usageMetadata").unwrap_or(&Value::Null);
        let count = |field: &str| meta.get(field).and_then(Value::as_u64).unwrap_or(0);
        let usage = Usage {
            input: count("promptTokenCount"),
            output: count("candidatesTokenCount") + count("thoughtsTokenCount"),
        };
        let Some(candidate) = json.get("candidates").and_then(|c| c.get(0)) else {
            // No candidate: the prompt itself was blocked; say why as the finish reason.
            let blocked = json
                .get("promptFeedback")
                .and_then(|f| f.get("blockReason"))
                .and_then(|r| r.as_str())
                .ok_or_else(|| self.remote.bad(&format!("no candidates in {json}")))?;
            return Ok(Answer {
                content: String::new(),
                model,
                usage,
                finish_reason: Some(blocked.to_owned()),
                tool_calls: None,
            });
        };
        let parts = candidate
            .get("content")
            .and_then(|c| c.get("parts"))
            .and_then(|p| p.as_array())
            .map(Vec::as_slice)
            .unwrap_or_default();
        let mut content = String::new();
        let mut calls = Vec::new();
        for part in parts {
            if part.get("thought").and_then(Value::as_bool) == Some(true) {
                continue;
            }
            if let Some(text) = part.get("text").and_then(|t| t.as_str()) {
                content.push_str(text);
            }
            if let Some(call) = part.get("functionCall") {
                calls.push(tool_call(
                    call.get("id").and_then(|i| i.as_str()),
                    call.get("name").and_then(|n| n.as_str()).unwrap_or(""),
                    call.get("args").cloned().unwrap_or_else(|| json!({})),
                ));
            }
        }
        Ok(Answer {
            content,
            model,
            usage,
            finish_reason: candidate
                .get("finishReason")
                .and_then(|f| f.as_str())
                .map(str::to_owned),
            tool_calls: tool_calls(calls),
        })
    }
}

impl RemoteApi for Gemini {
    const KIND: &'static str = "gemini";
    const DEFAULT_MODEL: &'static str = DEFAULT_MODEL;

    fn remote(&self) -> &Remote {
        &self.remote
    }

    /// One call.
    async fn ask(&self, prompt: &Prompt, deadline: Instant) -> Result<Answer, ProviderError> {
        let key = self.remote.require_key(KEY_VARIABLES)?;
        let model = self.remote.model(prompt, DEFAULT_MODEL);
        let model = model.strip_prefix("models/").unwrap_or(model);
        if model.is_empty()
            || !model
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        {
            return Err(ProviderError::Invalid(format!(
                "{model:?} is not a Gemini model name (letters, digits, '.', '-', '_')"
            )));
        }
        let body = request_body(prompt)?;
        let headers = [("x-goog-api-key", key.expose().to_owned())];
        let url = self.remote.url(&format!("/models/{model}:generateContent"));
        let response = self.remote.post(&url, &headers, &body, deadline).await?;
        let json = self.remote.read_json(response, deadline).await?;
        self.answer(&json, model)
    }
}

/// The `generateContent` request for `prompt`.
fn request_body(prompt: &Prompt) -> Result<Value, ProviderError> {
    let mut parts = vec![json!({"text": prompt.prompt})];
    if let Some(image) = &prompt.image {
        parts.push(json!({"inline_data": {"mime_type": image.mime_type, "data": image.data}}));
    }
    let mut body = json!({"contents": [{"role": "user", "parts": parts}]});
    if let Some(system) = &prompt.system {
        body["systemInstruction"] = json!({"parts": [{"text": system}]});
    }
    let mut config = serde_json::Map::new();
    if let Some(temperature) = prompt.temperature {
        config.insert("temperature".to_owned(), json!(temperature));
    }
    if let Some(max_tokens) = prompt.max_tokens {
        config.insert("maxOutputTokens".to_owned(), json!(max_tokens));
    }
    if let Some(level) = prompt.thinking_level {
        config.insert(
            "thinkingConfig".to_owned(),
            json!({"thinkingBudget": thinking_budget(level)}),
        );
    }
    if !config.is_empty() {
        body["generationConfig"] = Value::Object(config);
    }
    let tools = neutral_tools(prompt.tools.as_ref())?;
    if !tools.is_empty() {
        let declarations: Vec<Value> = tools.into_iter().map(Tool::declaration).collect();
        body["tools"] = json!([{"functionDeclarations": declarations}]);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::provider::Provider;
    use crate::llm::standin::{self, client, deadline_in, settings, Case, Reply, StandIn, KEY};
    use clove_abi::msg::{ThinkImage, ThinkingLevel};

    /// Builds the provider under test.
    fn make(settings: ProviderSettings, client: reqwest::Client) -> Box<dyn Provider> {
        Box::new(Gemini::new(settings, client))
    }

    /// A full answer: a thought, two text parts, a function call.
    fn ok_body() -> Value {
        json!({
            "candidates": [{
                "content": {"role": "model", "parts": [
                    {"text": "Let me think...", "thought": true},
                    {"text": "Looking "},
                    {"text": "it up."},
                    {"functionCall": {"name": "weather", "args": {"city": "Oslo"}}},
                ]},
                "finishReason": "STOP",
                "index": 0,
            }],
            "usageMetadata": {"promptTokenCount": 40, "candidatesTokenCount": 6,
                              "thoughtsTokenCount": 20, "totalTokenCount": 66},
            "modelVersion": "gemini-test-001",
        })
    }

    /// The scenarios every provider passes.
    fn case() -> Case {
        Case {
            make,
            ok_body: ok_body(),
            ok_content: "Looking it up.",
            auth_header: "x-goog-api-key",
        }
    }

    #[tokio::test]
    async fn sends_the_request_and_maps_the_answer() {
        let standin = StandIn::start(vec![Reply::json(200, ok_body())]).await;
        let provider = Gemini::new(settings(&standin, Some(KEY)), client());
        let prompt = Prompt {
            model: "models/gemini-test".to_owned(),
            prompt: "What is the weather?".to_owned(),
            system: Some("Be brief.".to_owned()),
            image: Some(ThinkImage {
                data: "iVBORw0K".to_owned(),
                mime_type: "image/png".to_owned(),
            }),
            temperature: Some(0.25),
            max_tokens: Some(300),
            thinking_level: Some(ThinkingLevel::Medium),
            tools: Some(json!([
                {"type": "function", "function": {"name": "weather",
                 "description": "Weather in a city",
                 "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
                {"name": "time"},
            ])),
        };
        let answer = provider
            .call(&prompt, deadline_in(10_000))
            .await
            .expect("answer");
        let sent = standin.requests();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].method, "POST");
        assert_eq!(sent[0].path, "/models/gemini-test:generateContent");
        assert_eq!(sent[0].headers["x-goog-api-key"], KEY);
        assert!(!sent[0].headers.contains_key("authorization"));
        assert_eq!(
            sent[0].body,
            json!({
                "contents": [{"role": "user", "parts": [
                    {"text": "What is the weather?"},
                    {"inline_data": {"mime_type": "image/png", "data": "iVBORw0K"}},
                ]}],
                "systemInstruction": {"parts": [{"text": "Be brief."}]},
                "generationConfig": {
                    "temperature": 0.25,
                    "maxOutputTokens": 300,
                    "thinkingConfig": {"thinkingBudget": 8192},
                },
                "tools": [{"functionDeclarations": [
                    {"name": "weather", "description": "Weather in a city",
                     "parameters": {"type": "object",
                                    "properties": {"city": {"type": "string"}}}},
                    {"name": "time"},
                ]}],
            })
        );
        assert_eq!(
            answer,
            Answer {
                content: "Looking it up.".to_owned(),
                model: "gemini-test-001".to_owned(),
                usage: Usage {
                    input: 40,
                    output: 26
                },
                finish_reason: Some("STOP".to_owned()),
                tool_calls: Some(json!([
                    {"name": "weather", "arguments": {"city": "Oslo"}},
                ])),
            }
        );
    }

    #[tokio::test]
    async fn a_minimal_prompt_and_a_blocked_prompt() {
        let standin = StandIn::start(vec![Reply::json(
            200,
            json!({"promptFeedback": {"blockReason": "SAFETY"},
                   "usageMetadata": {"promptTokenCount": 3}}),
        )])
        .await;
        let provider = Gemini::new(settings(&standin, Some(KEY)), client());
        let prompt = Prompt {
            prompt: "hi".to_owned(),
            ..Prompt::default()
        };
        let answer = provider
            .call(&prompt, deadline_in(10_000))
            .await
            .expect("answer");
        let sent = standin.requests();
        assert_eq!(
            sent[0].path,
            format!("/models/{DEFAULT_MODEL}:generateContent")
        );
        assert_eq!(
            sent[0].body,
            json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]})
        );
        assert_eq!(answer.content, "");
        assert_eq!(answer.finish_reason.as_deref(), Some("SAFETY"));
        assert_eq!(
            answer.usage,
            Usage {
                input: 3,
                output: 0
            }
        );
    }

    #[tokio::test]
    async fn no_key_or_a_bad_model_name_fails_before_sending() {
        let standin = StandIn::start(vec![]).await;
        let error = Gemini::new(settings(&standin, None), client())
            .call(&standin::prompt(), deadline_in(10_000))
            .await
            .expect_err("no key");
        assert!(
            matches!(&error, ProviderError::Invalid(m)
                if m.contains("GEMINI_API_KEY or GOOGLE_API_KEY")),
            "{error:?}"
        );
        let prompt = Prompt {
            model: "../files?x=1".to_owned(),
            ..standin::prompt()
        };
        let error = Gemini::new(settings(&standin, Some(KEY)), client())
            .call(&prompt, deadline_in(10_000))
            .await
            .expect_err("bad model");
        assert!(matches!(error, ProviderError::Invalid(_)), "{error:?}");
        assert!(standin.requests().is_empty());
    }

    #[tokio::test]
    async fn an_error_status_carries_the_providers_message() {
        let standin = StandIn::start(vec![Reply::json(
            400,
            json!({"error": {"code": 400, "message": "Invalid JSON payload received.",
                             "status": "INVALID_ARGUMENT"}}),
        )])
        .await;
        let error = Gemini::new(settings(&standin, Some(KEY)), client())
            .call(&standin::prompt(), deadline_in(10_000))
            .await
            .expect_err("400");
        assert_eq!(
            error.to_string(),
            "test answered HTTP 400: INVALID_ARGUMENT: Invalid JSON payload received."
        );
    }

    standin::shared_scenarios!(case());
}
