//! The LLM commands: `clove think` (THINK) and `clove llm` (LLM_STATS).

use std::io::Write;
use std::time::Duration;

use clap::Args;
use clove_sdk::msg::{LlmStatsReply, LlmStatsRequest, ThinkReply, ThinkRequest};
use clove_sdk::Client;

use crate::table::Table;
use crate::{as_json, Failure, ResultExt};

/// How long `clove think` waits for the answer unless --timeout says otherwise: a model's
/// answer can take minutes (the kernel's own limit is `llm.timeout_secs`, 300 by default).
pub const THINK_TIMEOUT: Duration = Duration::from_secs(310);

/// `clove think`'s arguments.
#[derive(Debug, Args)]
pub struct ThinkArgs {
    /// The prompt
    #[arg(value_name = "PROMPT")]
    pub prompt: String,
    /// The model: a model of the default provider, PROVIDER:MODEL, or an alias of the
    /// kernel's config [default: the kernel's]
    #[arg(short, long)]
    pub model: Option<String>,
    /// The system instruction
    #[arg(short, long)]
    pub system: Option<String>,
    /// Most tokens in the answer
    #[arg(long, value_name = "N")]
    pub max_tokens: Option<u32>,
    /// Sampling temperature, 0 to 2
    #[arg(long, value_name = "T")]
    pub temperature: Option<f64>,
}

/// `clove think`: the answer on stdout; who answered, the tokens and the queue time on
/// stderr (so `clove think ... > answer.txt` keeps only the answer).
pub fn think(
    client: &mut Client,
    out: &mut impl Write,
    json: bool,
    args: &ThinkArgs,
) -> Result<(), Failure> {
    let req = ThinkRequest {
        model: args.model.clone(),
        system_instruction: args.system.clone(),
        max_tokens: args.max_tokens,
        temperature: args.temperature,
        ..ThinkRequest::new(args.prompt.clone())
    };
    let r: ThinkReply = client.call(&req).ctx("think")?;
    if json {
        writeln!(out, "{}", as_json(&r))?;
        return Ok(());
    }
    writeln!(out, "{}", r.content)?;
    if let Some(calls) = &r.tool_calls {
        writeln!(out, "tool calls: {}", calls.0)?;
    }
    let usage = r.usage.map_or_else(
        || format!("{} tokens", r.tokens),
        |u| format!("{} tokens ({} in, {} out)", r.tokens, u.input, u.output),
    );
    eprintln!(
        "-- {} · {} · {usage} · queued {} ms",
        r.provider.as_deref().unwrap_or("?"),
        r.model.as_deref().unwrap_or("?"),
        r.queue_ms.unwrap_or(0)
    );
    Ok(())
}

/// `clove llm`: the scheduler and one row per caller with LLM figures.
pub fn stats(client: &mut Client, out: &mut impl Write, json: bool) -> Result<(), Failure> {
    let r: LlmStatsReply = client
        .call(&LlmStatsRequest::default())
        .ctx("read LLM figures")?;
    if json {
        writeln!(out, "{}", as_json(&r))?;
    } else {
        out.write_all(stats_text(&r).as_bytes())?;
    }
    Ok(())
}

/// `clove llm`'s text: a summary line and a table.
pub fn stats_text(r: &LlmStatsReply) -> String {
    let s = &r.scheduler;
    let mut text = format!(
        "provider {} · model {} · scheduler {} · in flight {}/{} · queued {}\n",
        r.provider, r.model, s.policy, s.in_flight, s.max_in_flight, s.queued
    );
    if r.agents.is_empty() {
        text.push_str("no THINK calls yet\n");
        return text;
    }
    let mut t = Table::new(&[
        "ID",
        "NAME",
        "CALLS",
        "ERRORS",
        "TOKENS IN",
        "TOKENS OUT",
        "QUEUE AVG",
        "QUEUE MAX",
        "WAITING",
        "WEIGHT",
    ]);
    for a in &r.agents {
        t.push(vec![
            a.agent_id.to_string(),
            a.name.clone().unwrap_or_else(|| "(operator)".into()),
            a.calls.to_string(),
            (a.errors + a.cancelled).to_string(),
            a.input_tokens.to_string(),
            a.output_tokens.to_string(),
            format!("{:.1} ms", a.queue_ms_avg),
            format!("{} ms", a.queue_ms_max),
            format!("{}+{}", a.queued, a.in_flight),
            format!("{}", a.weight),
        ]);
    }
    text.push_str(&t.render());
    text
}
