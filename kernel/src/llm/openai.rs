//! TEMPORARY placeholder.
use super::provider::{Answer, BoxFuture, Prompt, Provider, ProviderError, ProviderSettings};
use tokio::time::Instant;

/// Placeholder.
#[derive(Debug)]
pub struct OpenAi(ProviderSettings);

impl OpenAi {
    /// Placeholder.
    pub fn new(settings: ProviderSettings, _client: reqwest::Client) -> Self {
        OpenAi(settings)
    }
}

impl Provider for OpenAi {
    fn kind(&self) -> &'static str {
        "openai"
    }
    fn default_model(&self) -> &str {
        "m"
    }
    fn call<'a>(
        &'a self,
        _p: &'a Prompt,
        _d: Instant,
    ) -> BoxFuture<'a, Result<Answer, ProviderError>> {
        Box::pin(async move { Err(ProviderError::Invalid(format!("{} not built", self.0.name))) })
    }
}
