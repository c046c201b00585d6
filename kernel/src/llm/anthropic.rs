//! TEMPORARY placeholder.
use super::provider::{Answer, BoxFuture, Prompt, Provider, ProviderError, ProviderSettings};
use tokio::time::Instant;

/// Placeholder.
#[derive(Debug)]
pub struct Anthropic(ProviderSettings);

impl Anthropic {
    /// Placeholder.
    pub fn new(settings: ProviderSettings, _client: reqwest::Client) -> Self {
        Anthropic(settings)
    }
}

impl Provider for Anthropic {
    fn kind(&self) -> &'static str {
        "anthropic"
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
