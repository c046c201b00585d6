//! The simulated provider: no model, no network. It answers after a latency that follows
//! the token counts (a fixed part, a part per prompt token, a part per answer token), so
//! demos and benchmarks can load the scheduler as a real provider would, on any machine.
//! Every reply says `"provider": "simulated"`, and its text says it is made up.
//!
//! Token counts: the prompt (with the system instruction) is counted as one token per four
//! bytes, rounded up; the answer has `max_tokens` tokens when the request sets it, else as
//! many as the prompt, between 16 and 256.

use std::time::Duration;

use tokio::time::Instant;

use super::provider::{Answer, BoxFuture, Prompt, Provider, ProviderError, Usage};

/// The simulated model's name.
pub const MODEL: &str = "simulated";

/// The simulated provider's latency model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Simulated {
    /// Fixed latency of a call.
    pub latency: Duration,
    /// Latency per prompt token, ms.
    pub ms_per_input_token: f64,
    /// Latency per answer token, ms.
    pub ms_per_output_token: f64,
}

impl Default for Simulated {
    /// 5 ms, plus 0.01 ms per prompt token and 0.2 ms per answer token.
    fn default() -> Self {
        Simulated {
            latency: Duration::from_millis(5),
            ms_per_input_token: 0.01,
            ms_per_output_token: 0.2,
        }
    }
}

/// Tokens in `text` as the simulated provider (and the scheduler's estimates) count them:
/// one per four bytes, rounded up.
pub fn tokens_in(text: &str) -> u64 {
    (text.len() as u64).div_ceil(4)
}

impl Simulated {
    /// The tokens a call of `prompt` uses.
    pub fn usage(prompt: &Prompt) -> Usage {
        let input = tokens_in(&prompt.prompt) + prompt.system.as_deref().map_or(0, tokens_in);
        let output = match prompt.max_tokens {
            Some(n) => u64::from(n),
            None => input.clamp(16, 256),
        };
        Usage { input, output }
    }

    /// How long a call with `usage` takes.
    pub fn latency_of(&self, usage: Usage) -> Duration {
        let ms = usage.input as f64 * self.ms_per_input_token
            + usage.output as f64 * self.ms_per_output_token;
        self.latency + Duration::from_secs_f64((ms / 1000.0).max(0.0))
    }
}

impl Provider for Simulated {
    fn kind(&self) -> &'static str {
        "simulated"
    }

    fn default_model(&self) -> &str {
        MODEL
    }

    fn call<'a>(
        &'a self,
        prompt: &'a Prompt,
        deadline: Instant,
    ) -> BoxFuture<'a, Result<Answer, ProviderError>> {
        Box::pin(async move {
            let usage = Simulated::usage(prompt);
            let done = Instant::now() + self.latency_of(usage);
            if done > deadline {
                tokio::time::sleep_until(deadline).await;
                return Err(ProviderError::Timeout {
                    provider: "simulated".into(),
                });
            }
            // Tokio's timers tick in whole milliseconds: a zero latency must not wait for one.
            if done > Instant::now() {
                tokio::time::sleep_until(done).await;
            }
            let head: String = prompt.prompt.chars().take(60).collect();
            Ok(Answer {
                content: format!(
                    "[simulated answer: no model was asked] {} tokens for {head:?}",
                    usage.output
                ),
                model: prompt.model.clone(),
                usage,
                finish_reason: Some(
                    if prompt.max_tokens.is_some() {
                        "length"
                    } else {
                        "stop"
                    }
                    .into(),
                ),
                tool_calls: None,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_follows_the_tokens() {
        let sim = Simulated::default();
        let prompt = Prompt {
            prompt: "x".repeat(400),
            max_tokens: Some(50),
            ..Prompt::default()
        };
        let usage = Simulated::usage(&prompt);
        assert_eq!(
            usage,
            Usage {
                input: 100,
                output: 50
            }
        );
        // 5 + 100 × 0.01 + 50 × 0.2 = 16 ms.
        assert_eq!(sim.latency_of(usage), Duration::from_millis(16));
        let short = Prompt {
            prompt: "hi".into(),
            ..Prompt::default()
        };
        assert_eq!(Simulated::usage(&short).output, 16);
    }

    #[tokio::test(start_paused = true)]
    async fn answers_after_its_latency_or_times_out() {
        let sim = Simulated::default();
        let prompt = Prompt {
            model: MODEL.into(),
            prompt: "x".repeat(400),
            max_tokens: Some(50),
            ..Prompt::default()
        };
        let start = Instant::now();
        let a = sim
            .call(&prompt, start + Duration::from_secs(1))
            .await
            .expect("answer");
        assert_eq!(start.elapsed(), Duration::from_millis(16));
        assert_eq!(a.usage.output, 50);
        assert!(a.content.starts_with("[simulated answer"), "{}", a.content);
        let e = sim
            .call(&prompt, Instant::now() + Duration::from_millis(10))
            .await
            .expect_err("too slow");
        assert!(matches!(e, ProviderError::Timeout { .. }), "{e:?}");
    }
}
