//! THINK: the kernel's shared LLM access.
//!
//! One [`Llm`] per kernel holds the providers (built once at start from `[llm]`, keys read
//! then and never shown again) and the scheduler in front of them. A call goes:
//!
//! 1. [`Llm::prepare`]: the request's `model` is routed (alias, `PROVIDER:MODEL`, or the
//!    default provider) and the request checked, before anything is queued;
//! 2. [`Llm::run`]: queued for the caller in the [`sched::Scheduler`] (bounded per caller);
//!    when the scheduler grants it a slot (at most `max_in_flight` calls at once, the
//!    backlogged caller with the least weighted service first under `vtc`), the provider is
//!    called, with retries on 429, 5xx and connection failures, all within the request's
//!    deadline (`llm.timeout_secs`, queue time included);
//! 3. the answer's tokens are charged to the caller's service counter.
//!
//! A call ends early when its caller goes: a dropped request (the connection closed) leaves
//! the queue, or frees its slot, through [`Grant`]'s `Drop`; [`Llm::cancel`] (an agent's
//! process exited) ends every queued and running call of that caller at once.
//!
//! Quotas (`permissions.llm`) are the syscall's business (`syscalls::llm`), checked before a
//! call is queued.

pub mod anthropic;
pub mod gemini;
pub mod openai;
pub mod provider;
pub mod sched;
pub mod simulated;
#[cfg(test)]
pub mod standin;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use clove_abi::msg::{LlmAgentStats, LlmSchedulerStats, LlmUsage, ThinkReply, ThinkRequest};
use clove_abi::{ErrorCode, WireError};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::llm::{key_vars, ProviderConfig};
use crate::config::LlmConfig;
use crate::sync::lock;
use provider::{Answer, Prompt, Provider, ProviderError, ProviderSettings, Secret};
use sched::{Policy, Scheduler};

/// Who is calling, for the scheduler: an id (an agent's or an operator connection's) and
/// its weight.
#[derive(Debug, Clone, Copy)]
pub struct Who {
    /// The caller's id.
    pub id: u32,
    /// Its scheduling weight (1 to 1000).
    pub weight: u32,
}

/// A checked THINK, ready to be queued.
#[derive(Debug)]
pub struct Call {
    /// The provider's name (as configured).
    pub provider_name: String,
    provider: Arc<dyn Provider>,
    /// The prompt, model resolved.
    pub prompt: Prompt,
    /// The prompt's tokens as estimated before the call (one per four bytes).
    pub est_input: u64,
}

/// A finished call.
#[derive(Debug)]
pub struct Outcome {
    /// The provider's answer.
    pub answer: Answer,
    /// The provider's kind (`openai`, `gemini`, `anthropic`, `simulated`).
    pub kind: &'static str,
    /// Time spent waiting for a slot.
    pub queue: Duration,
}

impl Outcome {
    /// THINK's reply: the original's `{success, content, tokens}` plus our extensions.
    pub fn reply(self) -> ThinkReply {
        let Answer {
            content,
            model,
            usage,
            finish_reason,
            tool_calls,
        } = self.answer;
        ThinkReply {
            success: true,
            content,
            tokens: usage.input + usage.output,
            provider: Some(self.kind.to_owned()),
            model: Some(model),
            queue_ms: Some(u64::try_from(self.queue.as_millis()).unwrap_or(u64::MAX)),
            usage: Some(LlmUsage {
                input: usage.input,
                output: usage.output,
            }),
            finish_reason,
            tool_calls: tool_calls.map(clove_abi::codec::Json),
            ..ThinkReply::default()
        }
    }
}

/// One caller's figures and its cancellation.
#[derive(Debug, Default)]
struct Client {
    calls: u64,
    errors: u64,
    cancelled: u64,
    input_tokens: u64,
    output_tokens: u64,
    reported_tokens: u64,
    waits: u64,
    queue_ms_total: u64,
    queue_ms_max: u64,
    /// Cancelled by [`Llm::cancel`]; replaced by a fresh one right after.
    cancel: CancellationToken,
}

/// What waits in the scheduler: where to send the grant.
#[derive(Debug)]
struct Waiter {
    grant: oneshot::Sender<Grant>,
}

/// A slot granted to a call. Until [`Grant::complete`] is called, dropping it frees the
/// slot with the estimate charged (a call cancelled while running); a grant that never
/// reached its caller is refunded by the scheduler pump.
#[derive(Debug)]
struct Grant {
    llm: Weak<Llm>,
    ticket: u64,
    done: bool,
}

impl Grant {
    /// Frees the slot, charging what the call used.
    fn complete(mut self, input: u64, output: u64) {
        self.done = true;
        if let Some(llm) = self.llm.upgrade() {
            lock(&llm.sched).complete(self.ticket, input, output);
            llm.pump();
        }
    }
}

impl Drop for Grant {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if let Some(llm) = self.llm.upgrade() {
            lock(&llm.sched).abandon(self.ticket);
            llm.pump();
        }
    }
}

/// A request in the queue, from the waiting side. Dropped before its grant came (the
/// caller went away, the deadline passed, the agent exited), it takes the request out of
/// the queue at once; a grant that raced in is given back.
struct Waiting<'a> {
    llm: &'a Llm,
    rx: oneshot::Receiver<Grant>,
    granted: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.granted {
            return;
        }
        self.rx.close();
        // Given back outside the scheduler's lock (the grant's drop takes it).
        drop(self.rx.try_recv());
        lock(&self.llm.sched).retain(|w| !w.grant.is_closed());
    }
}

/// The kernel's LLM access: providers and the scheduler.
#[derive(Debug)]
pub struct Llm {
    config: LlmConfig,
    providers: BTreeMap<String, Arc<dyn Provider>>,
    sched: Mutex<Scheduler<Waiter>>,
    clients: Mutex<HashMap<u32, Client>>,
    this: Weak<Llm>,
}

impl Llm {
    /// Builds every provider of `config` (reading their keys now) and the scheduler.
    pub fn new(config: &LlmConfig) -> anyhow::Result<Arc<Llm>> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("clove-kernel/", env!("CARGO_PKG_VERSION")))
            .pool_idle_timeout(Duration::from_secs(90))
            .build()?;
        let mut providers = BTreeMap::new();
        for (name, p) in &config.providers {
            providers.insert(name.clone(), build_provider(name, p, &client)?);
        }
        let policy: Policy = config
            .scheduler
            .parse()
            .map_err(|e| anyhow::anyhow!("llm scheduler: {e}"))?;
        Ok(Arc::new_cyclic(|this| Llm {
            config: config.clone(),
            providers,
            sched: Mutex::new(Scheduler::new(
                policy,
                config.max_in_flight,
                config.agent_queue,
            )),
            clients: Mutex::new(HashMap::new()),
            this: this.clone(),
        }))
    }

    /// The default provider's kind and model, for logs and LLM_STATS.
    pub fn default_target(&self) -> (&'static str, String) {
        let route = self.config.route(None);
        match self.providers.get(&route.provider) {
            Some(p) => (
                p.kind(),
                route.model.unwrap_or_else(|| p.default_model().to_owned()),
            ),
            None => ("none", String::new()),
        }
    }

    /// One line for the start log: provider, model, scheduler.
    pub fn describe(&self) -> String {
        let (kind, model) = self.default_target();
        format!(
            "provider {} ({kind}), model {model}, scheduler {}, {} call(s) in flight at most",
            self.config.provider, self.config.scheduler, self.config.max_in_flight
        )
    }

    /// The kernel fell back to the simulated provider: no provider was named and no key
    /// was found (worth a warning at start).
    pub fn fell_back_to_simulated(&self) -> bool {
        self.config.provider_auto && self.default_target().0 == "simulated"
    }

    /// Checks `req` and resolves its model; nothing is queued yet.
    pub fn prepare(&self, req: &ThinkRequest) -> Result<Call, WireError> {
        let invalid = |m: String| Err(WireError::new(ErrorCode::InvalidRequest, m));
        if req.prompt.trim().is_empty() && req.image.is_none() {
            return invalid("prompt: must not be empty".into());
        }
        if let Some(t) = req.temperature {
            if !(0.0..=2.0).contains(&t) {
                return invalid(format!("temperature {t}: must be between 0 and 2"));
            }
        }
        if req.max_tokens == Some(0) {
            return invalid("max_tokens: must be at least 1".into());
        }
        if let Some(image) = &req.image {
            if image.data.is_empty() {
                return invalid("image.data: must not be empty".into());
            }
            if !image.mime_type.starts_with("image/") {
                return invalid(format!(
                    "image.mime_type {:?}: must be an image type such as image/png",
                    image.mime_type
                ));
            }
        }
        if let Some(tools) = &req.tools {
            let Some(list) = tools.0.as_array() else {
                return invalid("tools: must be a list of tools".into());
            };
            for (i, tool) in list.iter().enumerate() {
                let named = tool
                    .get("name")
                    .or_else(|| tool.get("function").and_then(|f| f.get("name")))
                    .and_then(|n| n.as_str())
                    .is_some_and(|n| !n.is_empty());
                if !named {
                    return invalid(format!(
                        "tools[{i}]: a tool needs a name ({{name, description, parameters}})"
                    ));
                }
            }
        }
        let route = self.config.route(req.model.as_deref());
        let provider = self.providers.get(&route.provider).ok_or_else(|| {
            WireError::new(
                ErrorCode::NotFound,
                format!("LLM provider {:?} is not configured", route.provider),
            )
        })?;
        let prompt = Prompt {
            model: route
                .model
                .unwrap_or_else(|| provider.default_model().to_owned()),
            prompt: req.prompt.clone(),
            system: req.system_instruction.clone(),
            image: req.image.clone(),
            temperature: req.temperature,
            max_tokens: req.max_tokens,
            thinking_level: req.thinking_level,
            tools: req.tools.as_ref().map(|t| t.0.clone()),
        };
        let est_input = simulated::tokens_in(&prompt.prompt)
            + prompt.system.as_deref().map_or(0, simulated::tokens_in);
        Ok(Call {
            provider_name: route.provider,
            provider: Arc::clone(provider),
            prompt,
            est_input,
        })
    }

    /// Queues `call` for `who`, waits for its turn, calls the provider.
    pub async fn run(&self, who: Who, call: Call) -> Result<Outcome, WireError> {
        let result = self.run_inner(who, call).await;
        let mut clients = lock(&self.clients);
        // A caller forgotten meanwhile (gone for good) is not brought back by its last call.
        let Some(c) = clients.get_mut(&who.id) else {
            return result;
        };
        match &result {
            Ok(o) => {
                c.calls += 1;
                c.input_tokens += o.answer.usage.input;
                c.output_tokens += o.answer.usage.output;
            }
            Err(e) if e.message.starts_with(CANCELLED) => c.cancelled += 1,
            Err(_) => c.errors += 1,
        }
        result
    }

    async fn run_inner(&self, who: Who, call: Call) -> Result<Outcome, WireError> {
        let enqueued = Instant::now();
        let deadline = enqueued + self.config.timeout;
        let cancel = lock(&self.clients)
            .entry(who.id)
            .or_default()
            .cancel
            .clone();
        let (tx, rx) = oneshot::channel();
        {
            let mut sched = lock(&self.sched);
            sched.set_weight(who.id, f64::from(who.weight.max(1)));
            if sched
                .push(who.id, call.est_input, Waiter { grant: tx })
                .is_err()
            {
                return Err(WireError::new(
                    ErrorCode::LimitExceeded,
                    format!(
                        "LLM queue full: {} THINK request(s) of this caller are waiting already \
                         (llm.agent_queue)",
                        self.config.agent_queue
                    ),
                ));
            }
        }
        let mut waiting = Waiting {
            llm: self,
            rx,
            granted: false,
        };
        self.pump();
        let grant = tokio::select! {
            g = &mut waiting.rx => g.map_err(|_| cancelled("its caller went away"))?,
            () = tokio::time::sleep_until(deadline) => {
                return Err(WireError::new(ErrorCode::Timeout, format!(
                    "THINK waited {}s in the LLM queue without a turn (llm.timeout_secs)",
                    self.config.timeout.as_secs())));
            }
            () = cancel.cancelled() => return Err(cancelled("its agent exited")),
        };
        waiting.granted = true;
        drop(waiting);
        let queue = enqueued.elapsed();
        self.record_wait(who.id, queue);
        let answer = tokio::select! {
            r = provider::call_with_retries(
                call.provider.as_ref(), &call.prompt, deadline, self.config.retries) => r,
            () = cancel.cancelled() => return Err(cancelled("its agent exited")),
        };
        match answer {
            Ok(answer) => {
                grant.complete(answer.usage.input, answer.usage.output);
                Ok(Outcome {
                    answer,
                    kind: call.provider.kind(),
                    queue,
                })
            }
            // The slot is freed by the grant's drop, the estimate charged.
            Err(e) => Err(provider_error(&call.provider_name, &e)),
        }
    }

    fn record_wait(&self, id: u32, queue: Duration) {
        let ms = u64::try_from(queue.as_millis()).unwrap_or(u64::MAX);
        let mut clients = lock(&self.clients);
        let Some(c) = clients.get_mut(&id) else {
            return;
        };
        c.waits += 1;
        c.queue_ms_total += ms;
        c.queue_ms_max = c.queue_ms_max.max(ms);
    }

    /// Hands free slots to the next waiters. A waiter whose caller has gone is refunded its
    /// estimate (it was never served) and the next one tried.
    fn pump(&self) {
        let mut sched = lock(&self.sched);
        while let Some(d) = sched.pop() {
            tracing::trace!(
                caller = d.client,
                est_input = d.est_input,
                ticket = d.ticket,
                "LLM slot granted"
            );
            let grant = Grant {
                llm: self.this.clone(),
                ticket: d.ticket,
                done: false,
            };
            if let Err(mut g) = d.item.grant.send(grant) {
                g.done = true;
                sched.complete(d.ticket, 0, 0);
            }
        }
    }

    /// Ends every queued and running call of `id` (its agent's process exited): they answer
    /// "cancelled".
    pub fn cancel(&self, id: u32) {
        let token = {
            let mut clients = lock(&self.clients);
            let Some(c) = clients.get_mut(&id) else {
                return;
            };
            std::mem::take(&mut c.cancel)
        };
        token.cancel();
    }

    /// Drops what is kept about `id` (an agent gone for good, an operator connection
    /// closed), after cancelling its calls.
    pub fn forget(&self, id: u32) {
        self.cancel(id);
        lock(&self.clients).remove(&id);
        lock(&self.sched).forget(id);
    }

    /// Counts tokens reported with LLM_REPORT.
    pub fn reported(&self, id: u32, tokens: u64) {
        lock(&self.clients).entry(id).or_default().reported_tokens += tokens;
    }

    /// Switches the scheduler to `policy` and `max_in_flight` (absent: unchanged), only while
    /// nothing is queued or in flight: a fresh scheduler then replaces the old one (service
    /// counters start again at 0).
    pub fn reconfigure(
        &self,
        policy: Option<&str>,
        max_in_flight: Option<u32>,
    ) -> Result<LlmSchedulerStats, WireError> {
        let invalid = |m: String| WireError::new(ErrorCode::InvalidRequest, m);
        let policy: Option<Policy> = policy
            .map(|p| {
                p.parse().map_err(|_| {
                    invalid(format!(
                        "scheduler {p:?}: must be one of {}",
                        crate::config::llm::POLICIES.join(", ")
                    ))
                })
            })
            .transpose()?;
        if let Some(n) = max_in_flight {
            if !(1..=1024).contains(&n) {
                return Err(invalid(format!(
                    "max_in_flight {n}: must be between 1 and 1024"
                )));
            }
        }
        if policy.is_some() || max_in_flight.is_some() {
            let mut sched = lock(&self.sched);
            if sched.queued() > 0 || sched.in_flight() > 0 {
                return Err(WireError::new(
                    ErrorCode::Conflict,
                    format!(
                        "the LLM scheduler is busy ({} queued, {} in flight): change it when \
                         idle",
                        sched.queued(),
                        sched.in_flight()
                    ),
                ));
            }
            let max = max_in_flight.map_or(sched.max_in_flight(), |n| n as usize);
            *sched = Scheduler::new(
                policy.unwrap_or(sched.policy()),
                max,
                self.config.agent_queue,
            );
            tracing::info!(
                policy = sched.policy().as_str(),
                max_in_flight = max,
                "LLM scheduler changed"
            );
        }
        Ok(self.scheduler_stats())
    }

    /// The scheduler's figures.
    pub fn scheduler_stats(&self) -> LlmSchedulerStats {
        let sched = lock(&self.sched);
        LlmSchedulerStats {
            policy: sched.policy().as_str().to_owned(),
            max_in_flight: u32::try_from(sched.max_in_flight()).unwrap_or(u32::MAX),
            in_flight: u32::try_from(sched.in_flight()).unwrap_or(u32::MAX),
            queued: u32::try_from(sched.queued()).unwrap_or(u32::MAX),
        }
    }

    /// Every caller with figures, by id, for which `shown` holds; `name` gives an agent's
    /// name.
    pub fn agent_stats(
        &self,
        shown: impl Fn(u32) -> bool,
        name: impl Fn(u32) -> Option<String>,
    ) -> Vec<LlmAgentStats> {
        let rows: Vec<(u32, LlmAgentStats)> = {
            let clients = lock(&self.clients);
            let mut ids: Vec<u32> = clients.keys().copied().filter(|id| shown(*id)).collect();
            ids.sort_unstable();
            let sched = lock(&self.sched);
            ids.into_iter()
                .filter_map(|id| {
                    let c = clients.get(&id)?;
                    let s = sched.stats(id);
                    Some((
                        id,
                        LlmAgentStats {
                            agent_id: id,
                            name: None,
                            calls: c.calls,
                            errors: c.errors,
                            cancelled: c.cancelled,
                            input_tokens: c.input_tokens,
                            output_tokens: c.output_tokens,
                            reported_tokens: c.reported_tokens,
                            queue_ms_avg: if c.waits == 0 {
                                0.0
                            } else {
                                c.queue_ms_total as f64 / c.waits as f64
                            },
                            queue_ms_max: c.queue_ms_max,
                            queued: u32::try_from(s.queued).unwrap_or(u32::MAX),
                            in_flight: u32::try_from(s.in_flight).unwrap_or(u32::MAX),
                            service: s.counter,
                            weight: s.weight,
                        },
                    ))
                })
                .collect()
        };
        rows.into_iter()
            .map(|(id, mut row)| {
                row.name = name(id);
                row
            })
            .collect()
    }
}

/// The start of every "cancelled" message (how [`Llm::run`] counts cancellations).
const CANCELLED: &str = "THINK cancelled";

fn cancelled(why: &str) -> WireError {
    WireError::new(ErrorCode::Unavailable, format!("{CANCELLED}: {why}"))
}

/// A provider's failure as the caller sees it. Messages are already free of keys.
fn provider_error(name: &str, e: &ProviderError) -> WireError {
    let code = match e {
        ProviderError::Status { status: 429, .. } => ErrorCode::LimitExceeded,
        ProviderError::Status { status: 404, .. } => ErrorCode::NotFound,
        ProviderError::Status {
            status: 401 | 403, ..
        } => ErrorCode::Unavailable,
        ProviderError::Status { status, .. } if *status < 500 => ErrorCode::InvalidRequest,
        ProviderError::Timeout { .. } => ErrorCode::Timeout,
        _ => ErrorCode::Unavailable,
    };
    WireError::new(code, format!("LLM provider {name}: {e}"))
}

/// Builds the provider `name` of `config`, reading its key.
fn build_provider(
    name: &str,
    config: &ProviderConfig,
    client: &reqwest::Client,
) -> anyhow::Result<Arc<dyn Provider>> {
    if config.kind == "simulated" {
        let d = simulated::Simulated::default();
        return Ok(Arc::new(simulated::Simulated {
            latency: config
                .latency_ms
                .map_or(d.latency, |ms| Duration::from_secs_f64(ms / 1000.0)),
            ms_per_input_token: config.ms_per_input_token.unwrap_or(d.ms_per_input_token),
            ms_per_output_token: config.ms_per_output_token.unwrap_or(d.ms_per_output_token),
        }));
    }
    let settings = ProviderSettings {
        name: name.to_owned(),
        base_url: config.base_url.clone(),
        api_key: read_key(name, config)?,
        model: config.model.clone(),
        stream: config.stream,
    };
    let client = client.clone();
    Ok(match config.kind.as_str() {
        "openai" => Arc::new(openai::OpenAi::new(settings, client)),
        "gemini" => Arc::new(gemini::Gemini::new(settings, client)),
        "anthropic" => Arc::new(anthropic::Anthropic::new(settings, client)),
        other => anyhow::bail!("llm.providers.{name}: unknown kind {other:?}"),
    })
}

/// A provider's key: from `api_key_file`, else `api_key_env`, else the kind's usual
/// variables; `None` when none is set.
fn read_key(name: &str, config: &ProviderConfig) -> anyhow::Result<Option<Secret>> {
    if let Some(path) = &config.api_key_file {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path).map_err(|e| {
            anyhow::anyhow!("llm.providers.{name}.api_key_file {}: {e}", path.display())
        })?;
        if meta.mode() & 0o077 != 0 {
            tracing::warn!(
                "llm.providers.{name}.api_key_file {}: readable by others (mode {:o}); \
                 chmod 600 it",
                path.display(),
                meta.mode() & 0o777
            );
        }
        let key = std::fs::read_to_string(path).map_err(|e| {
            anyhow::anyhow!("llm.providers.{name}.api_key_file {}: {e}", path.display())
        })?;
        let key = Secret::new(key);
        if key.expose().is_empty() {
            anyhow::bail!(
                "llm.providers.{name}.api_key_file {}: the file is empty",
                path.display()
            );
        }
        return Ok(Some(key));
    }
    let vars: Vec<&str> = match &config.api_key_env {
        Some(var) => vec![var.as_str()],
        None => key_vars(&config.kind).to_vec(),
    };
    Ok(vars
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .map(Secret::new)
        .find(|k| !k.expose().is_empty()))
}
