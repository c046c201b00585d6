//! The `[llm]` settings: providers, the default provider and model, model aliases, the
//! scheduler. Keys are never part of the configuration: a provider names the environment
//! variable or the file its key is read from, at start, by `crate::llm`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// The provider kinds, as `kind` in a provider table and as built-in provider names.
pub const KINDS: &[&str] = &["openai", "gemini", "anthropic", "simulated"];

/// The scheduler policies: `vtc` (Virtual Token Counter fairness, the default), `fifo`,
/// `round_robin`.
pub const POLICIES: &[&str] = &["vtc", "fifo", "round_robin"];

/// Where the built-in providers read their keys, in order: the first set one is used.
pub fn key_vars(kind: &str) -> &'static [&'static str] {
    match kind {
        "openai" => &["OPENAI_API_KEY"],
        "gemini" => &["GEMINI_API_KEY", "GOOGLE_API_KEY"],
        "anthropic" => &["ANTHROPIC_API_KEY"],
        _ => &[],
    }
}

/// `[llm]` in the file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileLlm {
    provider: Option<String>,
    model: Option<String>,
    scheduler: Option<String>,
    max_in_flight: Option<usize>,
    agent_queue: Option<usize>,
    timeout_secs: Option<u64>,
    retries: Option<u32>,
    #[serde(default)]
    aliases: BTreeMap<String, String>,
    #[serde(default)]
    providers: BTreeMap<String, ProviderConfig>,
}

/// The LLM flags (they override the file's `[llm]` keys of the same name).
#[derive(Debug, Default, Clone)]
pub(super) struct LlmFlags {
    pub provider: Option<String>,
    pub model: Option<String>,
    pub base_url: Option<String>,
    pub scheduler: Option<String>,
    pub max_in_flight: Option<usize>,
}

/// One provider (`[llm.providers.NAME]`; the built-in ones need no table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// `openai` (any OpenAI-compatible server), `gemini`, `anthropic` or `simulated`;
    /// default: the table's name.
    #[serde(default)]
    pub kind: String,
    /// The API's base URL; absent: the provider's public endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// The environment variable holding the key; absent: the kind's usual one
    /// (`OPENAI_API_KEY`, `GEMINI_API_KEY` or `GOOGLE_API_KEY`, `ANTHROPIC_API_KEY`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// A file holding the key (read at start; it should be readable by the kernel only).
    /// Wins over the environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_file: Option<PathBuf>,
    /// This provider's default model; absent: the kind's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Ask for streamed answers and assemble them (OpenAI-compatible only).
    #[serde(default)]
    pub stream: bool,
    /// Simulated only: fixed latency of a call, ms (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    /// Simulated only: latency per prompt token, ms (default 0.01).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ms_per_input_token: Option<f64>,
    /// Simulated only: latency per answer token, ms (default 0.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ms_per_output_token: Option<f64>,
}

impl ProviderConfig {
    /// A built-in provider of `kind` with every setting at its default.
    pub fn builtin(kind: &str) -> ProviderConfig {
        ProviderConfig {
            kind: kind.to_owned(),
            base_url: None,
            api_key_env: None,
            api_key_file: None,
            model: None,
            stream: false,
            latency_ms: None,
            ms_per_input_token: None,
            ms_per_output_token: None,
        }
    }
}

/// A model reference: a provider name and the model it serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelRef {
    /// The provider's name (a key of [`LlmConfig::providers`]).
    pub provider: String,
    /// The model; `None`: the provider's default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// The effective `[llm]` settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LlmConfig {
    /// The provider THINK uses when the request names none.
    pub provider: String,
    /// `provider` was chosen by the kernel (no flag, variable or file named one).
    #[serde(skip)]
    pub provider_auto: bool,
    /// The model used when the request names none; `None`: the provider's default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// `vtc`, `fifo` or `round_robin`.
    pub scheduler: String,
    /// Most provider calls at once, all agents together.
    pub max_in_flight: usize,
    /// Most THINK requests one caller may have waiting.
    pub agent_queue: usize,
    /// Longest a THINK may take, queue and retries included.
    #[serde(rename = "timeout_secs", serialize_with = "super::ser_secs")]
    pub timeout: Duration,
    /// Retries of a call the provider answered 429 or 5xx, or that could not connect.
    pub retries: u32,
    /// Model aliases: a request's `model` that names one is sent as its target.
    pub aliases: BTreeMap<String, ModelRef>,
    /// Every provider by name: the configured ones and the built-in `openai`, `gemini`,
    /// `anthropic` and `simulated`.
    pub providers: BTreeMap<String, ProviderConfig>,
}

impl LlmConfig {
    /// Where a request's `model` goes: an alias's target; `PROVIDER:MODEL` for a known
    /// provider name; any other text is a model of the default provider; absent: the default
    /// provider with the default model.
    pub fn route(&self, model: Option<&str>) -> ModelRef {
        let Some(model) = model.map(str::trim).filter(|m| !m.is_empty()) else {
            return ModelRef {
                provider: self.provider.clone(),
                model: self.model.clone(),
            };
        };
        if let Some(target) = self.aliases.get(model) {
            return target.clone();
        }
        if let Some((provider, rest)) = model.split_once(':') {
            if self.providers.contains_key(provider) && !rest.is_empty() {
                return ModelRef {
                    provider: provider.to_owned(),
                    model: Some(rest.to_owned()),
                };
            }
        }
        ModelRef {
            provider: self.provider.clone(),
            model: Some(model.to_owned()),
        }
    }
}

/// Builds the effective `[llm]` settings. `env` reads an environment variable (the real one,
/// or a test's map): with no provider named anywhere, the default is the first built-in
/// provider whose key is set (Gemini, as the original, then Anthropic, then OpenAI), else
/// `simulated`.
pub(super) fn load(
    file: FileLlm,
    flags: &LlmFlags,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<LlmConfig, ConfigError> {
    let bad = |m: String| Err(ConfigError(m));
    let mut providers: BTreeMap<String, ProviderConfig> = KINDS
        .iter()
        .map(|k| ((*k).to_owned(), ProviderConfig::builtin(k)))
        .collect();
    for (name, mut p) in file.providers {
        if name.is_empty() || name.contains(':') {
            return bad(format!(
                "llm.providers.{name:?}: a provider name must be non-empty and without ':'"
            ));
        }
        if p.kind.is_empty() {
            p.kind.clone_from(&name);
        }
        if !KINDS.contains(&p.kind.as_str()) {
            return bad(format!(
                "llm.providers.{name}.kind {:?}: must be one of {}",
                p.kind,
                KINDS.join(", ")
            ));
        }
        if let Some(url) = &p.base_url {
            if let Err(e) = url::Url::parse(url) {
                return bad(format!("llm.providers.{name}.base_url {url:?}: {e}"));
            }
        }
        for (key, v) in [
            ("latency_ms", p.latency_ms),
            ("ms_per_input_token", p.ms_per_input_token),
            ("ms_per_output_token", p.ms_per_output_token),
        ] {
            if let Some(v) = v {
                if !(0.0..=60_000.0).contains(&v) {
                    return bad(format!(
                        "llm.providers.{name}.{key} {v}: must be between 0 and 60000"
                    ));
                }
            }
        }
        providers.insert(name, p);
    }
    let (provider, provider_auto) = match flags.provider.clone().or(file.provider) {
        Some(p) if p != "auto" => (p, false),
        _ => (auto_provider(env), true),
    };
    if !providers.contains_key(&provider) {
        return bad(format!(
            "llm provider {provider:?}: not a provider: configure [llm.providers.{provider}] or use \
             one of {}",
            providers.keys().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    if let Some(url) = &flags.base_url {
        if let Err(e) = url::Url::parse(url) {
            return bad(format!("llm base url {url:?}: {e}"));
        }
        if let Some(p) = providers.get_mut(&provider) {
            p.base_url = Some(url.clone());
        }
    }
    let scheduler = flags
        .scheduler
        .clone()
        .or(file.scheduler)
        .unwrap_or_else(|| "vtc".into());
    if !POLICIES.contains(&scheduler.as_str()) {
        return bad(format!(
            "llm scheduler {scheduler:?}: must be one of {}",
            POLICIES.join(", ")
        ));
    }
    let mut config = LlmConfig {
        provider,
        provider_auto,
        model: flags.model.clone().or(file.model),
        scheduler,
        max_in_flight: flags.max_in_flight.or(file.max_in_flight).unwrap_or(4),
        agent_queue: file.agent_queue.unwrap_or(64),
        timeout: Duration::from_secs(file.timeout_secs.unwrap_or(300)),
        retries: file.retries.unwrap_or(3),
        aliases: BTreeMap::new(),
        providers,
    };
    if !(1..=1024).contains(&config.max_in_flight) {
        return bad(format!(
            "llm max_in_flight {}: must be between 1 and 1024",
            config.max_in_flight
        ));
    }
    if !(1..=65_536).contains(&config.agent_queue) {
        return bad(format!(
            "llm.agent_queue {}: must be between 1 and 65536",
            config.agent_queue
        ));
    }
    if config.timeout.is_zero() {
        return bad("llm.timeout_secs: must be at least 1".into());
    }
    if config.retries > 10 {
        return bad(format!("llm.retries {}: at most 10", config.retries));
    }
    for (alias, target) in file.aliases {
        let to = config.route(Some(&target));
        if to.model.is_none() {
            return bad(format!("llm.aliases.{alias} {target:?}: names no model"));
        }
        config.aliases.insert(alias, to);
    }
    Ok(config)
}

/// The default provider when none is named: the first built-in one whose key is set.
fn auto_provider(env: &dyn Fn(&str) -> Option<String>) -> String {
    ["gemini", "anthropic", "openai"]
        .into_iter()
        .find(|kind| {
            key_vars(kind)
                .iter()
                .any(|v| env(v).is_some_and(|k| !k.trim().is_empty()))
        })
        .unwrap_or("simulated")
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn the_default_follows_the_keys_that_are_set() {
        let c = load(FileLlm::default(), &LlmFlags::default(), &no_env).expect("load");
        assert_eq!(c.provider, "simulated");
        assert_eq!(c.scheduler, "vtc");
        let env = |k: &str| (k == "GOOGLE_API_KEY").then(|| "g".to_owned());
        assert_eq!(
            load(FileLlm::default(), &LlmFlags::default(), &env)
                .expect("load")
                .provider,
            "gemini"
        );
        let env = |k: &str| (k == "OPENAI_API_KEY" || k == "ANTHROPIC_API_KEY").then(String::new);
        // Empty keys do not count.
        assert_eq!(
            load(FileLlm::default(), &LlmFlags::default(), &env)
                .expect("load")
                .provider,
            "simulated"
        );
    }

    #[test]
    fn models_route_through_aliases_and_provider_prefixes() {
        let file: FileLlm = toml::from_str(
            r#"
            provider = "local"
            model = "llama3"
            [aliases]
            fast = "gemini:gemini-2.0-flash-lite"
            big = "llama3:70b"
            [providers.local]
            kind = "openai"
            base_url = "http://127.0.0.1:11434/v1"
            "#,
        )
        .expect("toml");
        let c = load(file, &LlmFlags::default(), &no_env).expect("load");
        let r = |m: Option<&str>| {
            let r = c.route(m);
            (r.provider, r.model)
        };
        assert_eq!(r(None), ("local".into(), Some("llama3".into())));
        assert_eq!(
            r(Some("fast")),
            ("gemini".into(), Some("gemini-2.0-flash-lite".into()))
        );
        // `llama3` is not a provider: the whole text is a model of the default provider.
        assert_eq!(r(Some("big")), ("local".into(), Some("llama3:70b".into())));
        assert_eq!(
            r(Some("anthropic:claude-sonnet-4-5")),
            ("anthropic".into(), Some("claude-sonnet-4-5".into()))
        );
        assert_eq!(r(Some("gpt-4o")), ("local".into(), Some("gpt-4o".into())));
    }

    #[test]
    fn bad_settings_name_the_key() {
        let err = |text: &str, flags: LlmFlags| {
            let file: FileLlm = toml::from_str(text).expect("toml");
            load(file, &flags, &no_env).expect_err("must fail").0
        };
        let e = err("provider = \"nope\"", LlmFlags::default());
        assert!(
            e.starts_with("llm provider \"nope\": not a provider"),
            "{e}"
        );
        let e = err("[providers.x]\nkind = \"grok\"", LlmFlags::default());
        assert!(e.starts_with("llm.providers.x.kind \"grok\""), "{e}");
        let e = err(
            "",
            LlmFlags {
                scheduler: Some("lottery".into()),
                ..LlmFlags::default()
            },
        );
        assert!(e.starts_with("llm scheduler \"lottery\""), "{e}");
        let e = err("max_in_flight = 0", LlmFlags::default());
        assert!(e.starts_with("llm max_in_flight 0"), "{e}");
        let e = err("[providers.local]\nbase_url = \"::\"", LlmFlags::default());
        assert!(e.contains("kind \"local\""), "{e}");
    }
}
