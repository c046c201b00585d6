//! The cooperation commands: `send`, `recv`, `kv get|set|del|ls`, `events`. Each is one or a
//! few syscalls through the SDK's typed methods, shaped for a terminal (or `--json`).

use std::io::Write;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use clove_sdk::msg::{StateScope, StoreRequest};
use clove_sdk::{Client, Json};
use serde_json::Value;

use crate::agents::Target;
use crate::{as_json, Failure, ResultExt};

/// How long one follow request of `clove events -f` waits for an event.
const FOLLOW_WAIT: Duration = Duration::from_secs(30);

/// A message or value from the command line: JSON when it parses as JSON, else the text as a
/// string (`clove send w hello` sends "hello"; `clove send w '{"n": 1}'` an object).
pub fn value_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

/// A value for a terminal: strings bare, anything else as compact JSON.
fn show(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `clove send`.
pub fn send(
    client: &mut Client,
    out: &mut impl Write,
    json: bool,
    to: &Target,
    messages: &[String],
    wait: Option<Duration>,
) -> Result<(), Failure> {
    let what = format!("send to {}", to.agent());
    let values: Vec<Value> = messages.iter().map(|m| value_of(m)).collect();
    let (delivered_to, n) = if let [one] = values.as_slice() {
        let r = client
            .send_message(to.agent(), one.clone(), wait)
            .ctx(&what)?;
        (r.delivered_to, 1)
    } else {
        let r = client.send_batch(to.agent(), values, wait).ctx(&what)?;
        (r.delivered_to, r.delivered)
    };
    if json {
        writeln!(
            out,
            "{}",
            serde_json::json!({"delivered_to": delivered_to, "delivered": n})
        )?;
    } else {
        writeln!(out, "delivered {n} message(s) to {delivered_to}")?;
    }
    Ok(())
}

/// `clove recv`: registers `name` (so others can send to this command while it waits), then
/// prints the messages that arrive: at most `max`, waiting up to `wait` for the first.
pub fn recv(
    client: &mut Client,
    out: &mut impl Write,
    json: bool,
    name: &str,
    max: u32,
    wait: Option<Duration>,
) -> Result<(), Failure> {
    client.register(name).ctx(&format!("register {name:?}"))?;
    if let Some(w) = wait {
        client
            .set_timeout(Some(w + Duration::from_secs(10)))
            .ctx("recv")?;
    }
    let got = client.recv_messages(max, wait).ctx("recv")?;
    if json {
        writeln!(out, "{}", as_json(&got))?;
        return Ok(());
    }
    for m in &got.messages {
        let from = if m.from_name.is_empty() {
            m.from.to_string()
        } else {
            format!("{} ({})", m.from_name, m.from)
        };
        writeln!(out, "{from}: {}", show(&m.message.0))?;
    }
    if got.messages.is_empty() {
        return Err(Failure::other("recv", "no message arrived").with_status(124));
    }
    Ok(())
}

/// `clove kv`.
#[derive(Debug, Subcommand)]
pub enum Kv {
    /// Print a key's value (FETCH); exit 1 when it does not exist
    Get {
        /// The key
        key: String,
    },
    /// Set a key (STORE); the value is JSON when it parses as JSON, else a string
    Set(SetArgs),
    /// Delete a key (DELETE)
    Del {
        /// The key
        key: String,
    },
    /// List the keys you can see (KEYS)
    Ls {
        /// Only keys starting with this
        prefix: Option<String>,
    },
}

/// `clove kv set`.
#[derive(Debug, Args)]
pub struct SetArgs {
    /// The key
    key: String,
    /// The value (JSON, or text stored as a string)
    value: String,
    /// Where the key lives: global (durable, everyone), session (memory only) or agent
    #[arg(long, value_enum, default_value_t = ScopeArg::Global)]
    scope: ScopeArg,
    /// Seconds until the key expires
    #[arg(long, value_name = "SECS")]
    ttl: Option<f64>,
    /// Compare-and-set: write only if the key's version is this one (0: only if absent)
    #[arg(long, value_name = "VERSION")]
    if_version: Option<u64>,
}

/// A scope on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ScopeArg {
    /// One key for everyone, durable
    Global,
    /// Private to the caller (an agent)
    Agent,
    /// Memory only, gone when the kernel restarts
    Session,
}

impl From<ScopeArg> for StateScope {
    fn from(s: ScopeArg) -> StateScope {
        match s {
            ScopeArg::Global => StateScope::Global,
            ScopeArg::Agent => StateScope::Agent,
            ScopeArg::Session => StateScope::Session,
        }
    }
}

/// `clove kv ...`.
pub fn kv(client: &mut Client, out: &mut impl Write, json: bool, cmd: &Kv) -> Result<(), Failure> {
    match cmd {
        Kv::Get { key } => {
            let r = client.fetch(key).ctx(&format!("get {key:?}"))?;
            if json {
                writeln!(out, "{}", as_json(&r))?;
            } else if r.exists {
                writeln!(out, "{}", show(&r.value.0))?;
            }
            if !r.exists {
                return Err(Failure::other(format!("get {key:?}"), "no such key"));
            }
        }
        Kv::Set(a) => {
            let req = StoreRequest {
                key: a.key.clone(),
                value: Json(value_of(&a.value)),
                scope: a.scope.into(),
                ttl: a.ttl,
                if_version: a.if_version,
            };
            let r = client.store(&req).ctx(&format!("set {:?}", a.key))?;
            if json {
                writeln!(out, "{}", as_json(&r))?;
            } else if let Some(v) = r.version {
                writeln!(out, "{} = version {v}", r.key)?;
            }
        }
        Kv::Del { key } => {
            let r = client.delete(key).ctx(&format!("delete {key:?}"))?;
            if json {
                writeln!(out, "{}", as_json(&r))?;
            }
            if !r.deleted {
                return Err(Failure::other(format!("delete {key:?}"), "no such key"));
            }
        }
        Kv::Ls { prefix } => {
            let r = client.keys(prefix.as_deref()).ctx("list keys")?;
            if json {
                writeln!(out, "{}", as_json(&r))?;
            } else {
                for k in &r.keys {
                    writeln!(out, "{k}")?;
                }
            }
        }
    }
    Ok(())
}

/// `clove events`: subscribes, then prints events as they come, one line each. Without
/// `follow`, it prints what arrives within `wait` (default 1 s) and stops.
pub fn events(
    client: &mut Client,
    out: &mut impl Write,
    json: bool,
    types: &[String],
    follow: bool,
    wait: Option<Duration>,
) -> Result<(), Failure> {
    // None named: every kernel type (CUSTOM brings every custom one).
    let names: Vec<&str> = if types.is_empty() {
        clove_sdk::msg::EventType::ALL
            .iter()
            .map(|t| t.as_str())
            .collect()
    } else {
        types.iter().map(String::as_str).collect()
    };
    client.subscribe(&names).ctx("subscribe")?;
    let wait = if follow {
        FOLLOW_WAIT
    } else {
        wait.unwrap_or(Duration::from_secs(1))
    };
    client
        .set_timeout(Some(wait + Duration::from_secs(10)))
        .ctx("events")?;
    loop {
        let r = client.poll_events(1000, Some(wait)).ctx("poll events")?;
        if let Some(n) = r.dropped {
            eprintln!("clove: {n} event(s) dropped: the queue was full");
        }
        for e in &r.events {
            if json {
                writeln!(out, "{}", as_json(e))?;
            } else {
                writeln!(
                    out,
                    "{} {:<18} from {:>5}  {}",
                    e.timestamp,
                    e.event_type,
                    e.source_agent_id,
                    show(&e.data.0)
                )?;
            }
        }
        out.flush()?;
        if !follow && r.events.is_empty() {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_values_are_json_or_text() {
        assert_eq!(value_of("42"), Value::from(42));
        assert_eq!(value_of(r#"{"a": 1}"#), serde_json::json!({"a": 1}));
        assert_eq!(value_of("hello world"), Value::from("hello world"));
        assert_eq!(value_of("\"quoted\""), Value::from("quoted"));
        assert_eq!(show(&Value::from("x")), "x");
        assert_eq!(show(&serde_json::json!([1])), "[1]");
    }
}
