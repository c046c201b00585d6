//! `clove`: the command-line tool for a running Clove kernel.
//!
//! Exit status: 0 ok; 1 the kernel answered an error (or the conversation with it failed);
//! 2 usage error (clap's); 3 the kernel's socket cannot be connected to. `clove wait` exits
//! with the agent's status instead (its exit code, 128 + the signal that killed it, 124 when
//! the timeout ran out). Errors go to stderr as one line, `clove: <what>: <why>`.

// A binary's root looks for its modules next to itself; these live in `clove/`, apart from
// other binaries.
#[path = "clove/agents.rs"]
mod agents;
#[path = "clove/audit.rs"]
mod audit;
#[path = "clove/coop.rs"]
mod coop;
#[path = "clove/demo.rs"]
mod demo;
#[path = "clove/group.rs"]
mod group;
#[path = "clove/llm.rs"]
mod llm;
#[path = "clove/table.rs"]
mod table;
#[path = "clove/top.rs"]
mod top;

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use clove_sdk::msg::HelloReply;
use clove_sdk::{Client, Codec, Error};
use serde::Serialize;
use serde_json::Value;

use agents::{Control, RunArgs, Target};
use coop::Kv;
use demo::DemoArgs;

const AFTER_HELP: &str = "\
Examples:
  clove status                         kernel and protocol version, features, your id
  clove status --json                  the HELLO reply as JSON (plus socket and agent_id)
  clove ping --count 5                 five NOOP round trips, timed
  clove --codec json ping --size 4096  the same over the original's JSON framing
  clove --socket /tmp/clove.sock status
  clove run agent.py --memory 512M --cpus 0.5 -- --task demo
  clove ps                             the live agents
  clove logs -f agent                  follow an agent's output until it exits
  clove wait agent --timeout 30s       wait for it; exit with its exit status
  clove kill agent                     SIGTERM, a grace period, then SIGKILL
  clove send worker '{\"task\": 1}'    a message to an agent, by name
  clove recv inbox --timeout 30s       receive as inbox (agents SEND to_name inbox)
  clove kv set config.mode fast        the key-value store: get, set, del, ls
  clove events -f                      print kernel and agent events as they happen
  clove demo all                       attack the sandbox, print what held
  clove demo supervisor                crash-prone workers in supervisor groups, judged
  clove demo llm                       agents contending for the LLM: fifo vs vtc fairness
  clove audit log --category security  the audit log (GET_AUDIT_LOG)
  clove audit verify                   check the audit log's hash chain offline

Agents are named by name or id (digits mean an id).

Socket: --socket, else $CLOVE_SOCKET, else /run/clove/clove.sock (root) or
$XDG_RUNTIME_DIR/clove/clove.sock (others); /tmp/clove.sock if only that one exists.
Start a kernel with `clove-kernel`.

Exit status: 0 ok, 1 the kernel answered an error, 2 usage error, 3 cannot connect;
`clove wait`: the agent's exit code, 128+signal when killed, 124 on timeout;
`clove demo`: 1 when an attack escaped or could not be judged, or (supervisor, llm)
the demo was UNEXPECTED; `clove audit verify`: 1 when the log is not intact.";

/// The reply timeout when --timeout is not given.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Talk to a running Clove kernel over its Unix socket.
#[derive(Debug, Parser)]
#[command(name = "clove", version, after_help = AFTER_HELP)]
struct Cli {
    /// The kernel's socket [default: $CLOVE_SOCKET, else the kernel's default socket]
    #[arg(long, global = true, value_name = "PATH", display_order = 900)]
    socket: Option<PathBuf>,

    /// Machine-readable output: JSON on stdout
    #[arg(long, global = true, display_order = 901)]
    json: bool,

    /// Payload codec of the requests (replies use the request's)
    #[arg(long, global = true, value_enum, default_value_t = CodecArg::Postcard, display_order = 902)]
    codec: CodecArg,

    /// Give up when a reply takes longer than this (10, 2.5s, 500ms, 1m) [default: 10s];
    /// for `wait`: how long to wait for the agent [default: as long as it takes]
    #[arg(long, global = true, value_name = "DURATION", value_parser = parse_duration, display_order = 903)]
    timeout: Option<Duration>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum CodecArg {
    /// UTF-8 JSON, the original kernel's framing
    Json,
    /// postcard, compact binary
    Postcard,
}

impl From<CodecArg> for Codec {
    fn from(c: CodecArg) -> Codec {
        match c {
            CodecArg::Json => Codec::Json,
            CodecArg::Postcard => Codec::Postcard,
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Time NOOP round trips; each echo is checked against what was sent
    Ping {
        /// Number of round trips
        #[arg(short = 'c', long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
        count: u64,
        /// Payload bytes per NOOP
        #[arg(short = 's', long, value_name = "BYTES", default_value_t = 0)]
        size: usize,
    },
    /// Show the kernel's version, protocol, codecs, implemented opcodes and your id (HELLO)
    Status,
    /// Start a script as a sandboxed agent (SPAWN)
    ///
    /// Prints the agent's id and host pid, and the isolation in force: namespaces, cgroup
    /// limits, and by name every requested layer or limit that is NOT applied.
    #[command(
        after_help = "Examples:\n  clove run worker.py\n  clove run worker.py --name w1 --memory 128M --cpus 0.25 --pids 32\n  clove run tool.sh --interpreter /bin/sh -- --verbose input.txt"
    )]
    Run(RunArgs),
    /// List the live agents (LIST): ID NAME PID STATE UPTIME RESTARTS
    Ps {
        /// Also the exited agents the kernel remembers, with how they ended
        #[arg(short, long)]
        all: bool,
    },
    /// Stop an agent: SIGTERM, its grace period, then SIGKILL (KILL)
    Kill {
        /// The agent's name or id (digits mean an id)
        #[arg(value_name = "NAME|ID")]
        agent: Target,
    },
    /// Freeze an agent (PAUSE)
    Pause {
        /// The agent's name or id (digits mean an id)
        #[arg(value_name = "NAME|ID")]
        agent: Target,
    },
    /// Thaw a paused agent (RESUME)
    Resume {
        /// The agent's name or id (digits mean an id)
        #[arg(value_name = "NAME|ID")]
        agent: Target,
    },
    /// Wait until an agent exits (WAIT), and exit with its status
    ///
    /// The exit status is the agent's exit code, 128 + the signal when it was killed, 124
    /// when --timeout ran out first.
    Wait {
        /// The agent's name or id (digits mean an id; an exited agent is found too)
        #[arg(value_name = "NAME|ID")]
        agent: Target,
    },
    /// Print an agent's output, stdout and stderr as written (LOGS)
    Logs {
        /// Keep printing new output until the agent exits
        #[arg(short, long)]
        follow: bool,
        /// How many lines from the end to start with
        #[arg(short = 'n', long, value_name = "LINES", default_value_t = 100)]
        lines: u32,
        /// The agent's name or id (digits mean an id; an exited agent is found too)
        #[arg(value_name = "NAME|ID")]
        agent: Target,
    },
    /// Send a message to an agent or a registered name (SEND; several: SEND_BATCH)
    ///
    /// A message that parses as JSON is sent as that value, anything else as a string.
    /// With --timeout, a full mailbox is waited on up to that long instead of failing.
    Send {
        /// The recipient: an agent's name or id, or a registered name
        #[arg(value_name = "NAME|ID")]
        to: Target,
        /// The message(s), delivered in order
        #[arg(value_name = "MESSAGE", required = true)]
        messages: Vec<String>,
    },
    /// Wait for messages sent to a name (REGISTER, then RECV), print them, and exit
    ///
    /// Registers NAME for as long as the command runs, so agents can SEND to it; prints
    /// what arrives (at most --max), waiting up to --timeout (default 10s) for the first.
    /// Exits 124 when nothing arrived.
    Recv {
        /// The name to receive as
        #[arg(value_name = "NAME")]
        name: String,
        /// At most this many messages
        #[arg(long, default_value_t = 10)]
        max: u32,
    },
    /// Read and write the kernel's key-value store (FETCH, STORE, DELETE, KEYS)
    #[command(subcommand)]
    Kv(Kv),
    /// Print kernel and agent events as they happen (SUBSCRIBE, POLL_EVENTS)
    ///
    /// Without types: every kernel event type and every custom one. Without --follow, prints
    /// what arrives within --timeout (default 1s) of the last event and stops.
    Events {
        /// Keep printing until interrupted
        #[arg(short, long)]
        follow: bool,
        /// Event types: AGENT_SPAWNED, AGENT_EXITED, ..., CUSTOM, or custom names
        #[arg(value_name = "TYPE")]
        types: Vec<String>,
    },
    /// Ask the kernel's shared LLM (THINK) and print the answer
    ///
    /// The answer goes to stdout; the provider, model, tokens and queue time to stderr. The
    /// kernel picks the provider (see clove-kernel --llm-provider); without a configured
    /// one, answers are simulated and say so.
    #[command(after_help = "Examples:
  clove think \"Summarise RFC 9110 in one line\"
  clove think --model anthropic:claude-sonnet-4-5 --max-tokens 200 \"...\"
  clove think --json \"hello\"")]
    Think(llm::ThinkArgs),
    /// Show the LLM scheduler and each agent's LLM use: calls, tokens, queue wait
    /// (LLM_STATS)
    Llm,
    /// A live view of the agents: state, CPU, memory and processes against their limits,
    /// restarts, uptime, LLM tokens (LIST, METRICS_ALL_AGENTS, LLM_STATS); Ctrl-C ends it
    #[command(
        after_help = "Examples:\n  clove top\n  clove top -n 5\n  clove top --once | grep worker"
    )]
    Top(top::TopArgs),
    /// Supervisor groups: create, list, stop (GROUP_CREATE, GROUP_LIST, GROUP_STOP)
    #[command(subcommand)]
    Group(group::GroupCmd),
    /// The audit log: verify it offline, print its head, read it, configure it
    #[command(subcommand)]
    Audit(audit::AuditCmd),
    /// Attack the sandbox with adversarial agents and report what held; or watch supervisor
    /// groups restart crash-prone workers (`supervisor`) (see --list)
    #[command(
        after_help = "Examples:\n  clove demo --list\n  clove demo fork-bomb\n  clove demo all --json\n  clove demo supervisor\n  clove demo llm\n\nAdversarial demos (what `all` runs): each starts its own targets on this host\n(loopback listeners, a canary file, a world-writable dir), a healthy neighbour agent and\nthe attacker, then judges every attack from evidence: contained, ESCAPED or ERROR.\nExit status 1 unless all contained.\n\nThe supervision demo (`supervisor`, not part of `all`): crash-prone workers under\none_for_one and one_for_all, a group that gives up, a nested group escalating to its\nparent; a live timeline of the events (restarts, backoffs, escalations), then a verdict\nper scenario from events, LIST and GROUP_LIST: as expected or UNEXPECTED (exit status 1).\nEvery group it made is stopped at the end. About 15 s.\n\nThe LLM demo (`llm`, not part of `all`): four backlogged agents of 10x different request\nsizes, a flooder and a polite agent THINK against the simulated provider, 10 s under fifo,\nthen 10 s under vtc (switched with LLM_CONFIG, so root or the kernel's user); per agent the\nserved cost, calls and queue delay p50/p99, and Jain's index of the backlogged agents.\nAs expected when vtc's index is >= 0.9 and above fifo's and the polite agent waits less\nunder vtc; else UNEXPECTED (exit status 1). The scheduler is restored at the end. About 25 s.\n\nThe scripts are in the repository's demos/ (see demos/README.md)."
    )]
    Demo(DemoArgs),
}

/// A duration: seconds (`10`, `2.5`), or a number with a unit (`500ms`, `10s`, `2m`, `1h`).
fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let scale = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 0.001,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(format!("{s}: unknown unit (use ms, s, m or h)")),
    };
    let n: f64 = number.parse().map_err(|_| format!("{s}: not a number"))?;
    match Duration::try_from_secs_f64(n * scale) {
        Ok(d) if !d.is_zero() => Ok(d),
        _ => Err(format!("{s}: expected a positive duration")),
    }
}

/// Why a command failed, and how `clove` exits for it.
pub enum Failure {
    /// An SDK call failed while doing `what` (empty: the error says it all).
    Call { what: String, err: Error },
    /// Something else failed: `clove: {what}: {why}`, exit `status`.
    Other {
        what: String,
        why: String,
        status: u8,
    },
    /// Writing to stdout failed.
    Stdout(io::Error),
    /// Nothing to report: exit with this status (`clove wait`).
    Exit(u8),
}

impl Failure {
    /// `clove: {what}: {why}`, exit 1.
    pub fn other(what: impl Into<String>, why: impl Into<String>) -> Failure {
        Failure::Other {
            what: what.into(),
            why: why.into(),
            status: 1,
        }
    }

    /// An SDK error while doing `what`.
    pub fn call(what: impl Into<String>, err: Error) -> Failure {
        Failure::Call {
            what: what.into(),
            err,
        }
    }

    /// The same failure with another exit status.
    pub fn with_status(self, status: u8) -> Failure {
        match self {
            Failure::Other { what, why, .. } => Failure::Other { what, why, status },
            other => other,
        }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        Failure::call(String::new(), e)
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Failure {
        Failure::Stdout(e)
    }
}

/// `.ctx("kill agent 7")?`: an SDK error, said to have happened while doing that.
pub trait ResultExt<T> {
    fn ctx(self, what: &str) -> Result<T, Failure>;
}

impl<T> ResultExt<T> for Result<T, Error> {
    fn ctx(self, what: &str) -> Result<T, Failure> {
        self.map_err(|e| Failure::call(what, e))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        // A reader that went away (`clove ping -c 1000 | head`) is not an error.
        Err(Failure::Stdout(e)) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(Failure::Stdout(e)) => {
            eprintln!("clove: write to stdout: {e}");
            ExitCode::from(1)
        }
        Err(Failure::Call {
            err: e @ Error::Connect { .. },
            ..
        }) => {
            eprintln!(
                "clove: {e}; is the kernel running? start it with `clove-kernel`, \
                 or name its socket with --socket (or CLOVE_SOCKET)"
            );
            ExitCode::from(3)
        }
        Err(Failure::Call { what, err }) => {
            if what.is_empty() {
                eprintln!("clove: {err}");
            } else {
                eprintln!("clove: {what}: {err}");
            }
            ExitCode::from(1)
        }
        Err(Failure::Other { what, why, status }) => {
            eprintln!("clove: {what}: {why}");
            ExitCode::from(status)
        }
        Err(Failure::Exit(status)) => ExitCode::from(status),
    }
}

fn run(cli: &Cli) -> Result<(), Failure> {
    let mut out = io::stdout().lock();
    // The one command that needs no kernel.
    if let Command::Demo(args) = &cli.command {
        if args.list {
            if cli.json {
                writeln!(out, "{}", as_json(&demo::list()))?;
            } else {
                out.write_all(demo::list_table().as_bytes())?;
            }
            return Ok(());
        }
        // Usage errors before "cannot connect".
        demo::check(args)?;
    }
    // `audit verify` and `audit head` read the files: no kernel needed.
    if let Command::Audit(cmd) = &cli.command {
        if cmd.offline() {
            return audit::run_offline(&mut out, cli.json, cmd);
        }
    }
    let mut client = Client::connect(cli.socket.as_deref())?.with_codec(cli.codec.into());
    let default_timeout = match &cli.command {
        Command::Think(_) => llm::THINK_TIMEOUT,
        _ => DEFAULT_TIMEOUT,
    };
    client.set_timeout(Some(cli.timeout.unwrap_or(default_timeout)))?;
    let json = cli.json;
    let c = &mut client;
    match &cli.command {
        Command::Ping { count, size } => ping(cli, c, &mut out, *count, *size),
        Command::Status => status(cli, c, &mut out),
        Command::Think(args) => llm::think(c, &mut out, json, args),
        Command::Llm => llm::stats(c, &mut out, json),
        Command::Top(args) => top::top(c, &mut out, json, args),
        Command::Run(args) => agents::run(c, &mut out, json, args),
        Command::Ps { all } => agents::ps(c, &mut out, json, *all),
        Command::Kill { agent } => agents::control(c, &mut out, json, Control::Kill, agent),
        Command::Pause { agent } => agents::control(c, &mut out, json, Control::Pause, agent),
        Command::Resume { agent } => agents::control(c, &mut out, json, Control::Resume, agent),
        Command::Wait { agent } => agents::wait(c, &mut out, json, agent, cli.timeout),
        Command::Logs {
            follow,
            lines,
            agent,
        } => agents::logs(c, &mut out, json, agent, *lines, *follow),
        Command::Send { to, messages } => coop::send(c, &mut out, json, to, messages, cli.timeout),
        Command::Recv { name, max } => coop::recv(
            c,
            &mut out,
            json,
            name,
            *max,
            Some(cli.timeout.unwrap_or(DEFAULT_TIMEOUT)),
        ),
        Command::Kv(cmd) => coop::kv(c, &mut out, json, cmd),
        Command::Events { follow, types } => {
            coop::events(c, &mut out, json, types, *follow, cli.timeout)
        }
        Command::Group(cmd) => group::run(c, &mut out, json, cmd),
        Command::Demo(args) => demo::run(c, &mut out, json, args),
        Command::Audit(cmd) => audit::run(c, &mut out, json, cmd),
    }
}

fn ping(
    cli: &Cli,
    client: &mut Client,
    out: &mut impl Write,
    count: u64,
    size: usize,
) -> Result<(), Failure> {
    // A pattern rather than zeros, so that a reply from the wrong offset cannot match.
    let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let socket = client.socket_path().display().to_string();
    let codec = client.codec().name();
    if !cli.json {
        writeln!(out, "PING {socket} ({codec}, {size} bytes)")?;
    }
    let mut times = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    for seq in 1..=count {
        let start = Instant::now();
        client.noop(&payload)?;
        let us = start.elapsed().as_nanos() as f64 / 1000.0;
        times.push(us);
        if !cli.json {
            writeln!(out, "seq={seq} time={us:.1} µs")?;
        }
    }
    let (min, p50, max) = summary(&times);
    if cli.json {
        let report = PingReport {
            socket: &socket,
            codec,
            size,
            count,
            agent_id: client.agent_id(),
            min_us: min,
            p50_us: p50,
            max_us: max,
            times_us: &times,
        };
        let report = as_json(&report);
        writeln!(out, "{report}")?;
    } else {
        writeln!(
            out,
            "{count} pings, min/p50/max {min:.1}/{p50:.1}/{max:.1} µs"
        )?;
    }
    Ok(())
}

/// Minimum, median (nearest rank) and maximum of non-empty `times`.
fn summary(times: &[f64]) -> (f64, f64, f64) {
    let mut sorted = times.to_vec();
    sorted.sort_by(f64::total_cmp);
    let at = |i: usize| sorted.get(i).copied().unwrap_or(0.0);
    let median = sorted.len().div_ceil(2).saturating_sub(1);
    (at(0), at(median), at(sorted.len().saturating_sub(1)))
}

fn status(cli: &Cli, client: &mut Client, out: &mut impl Write) -> Result<(), Failure> {
    let hello = client.hello()?;
    let socket = client.socket_path().display().to_string();
    let agent_id = client.agent_id();
    if cli.json {
        let report = StatusReport {
            hello: &hello,
            socket: &socket,
            agent_id,
        };
        writeln!(out, "{}", as_json(&report))?;
        return Ok(());
    }
    // Feature flags by name, so that flags added to the ABI later show up here unchanged.
    let features: Value = serde_json::from_str(&as_json(&hello.features)).unwrap_or(Value::Null);
    let enabled: Vec<&str> = features
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, v)| v.as_bool() == Some(true))
        .map(|(k, _)| k.as_str())
        .collect();
    let list = |items: &[&str]| {
        if items.is_empty() {
            "none".to_owned()
        } else {
            items.join(", ")
        }
    };
    let names = |v: &[String]| list(&v.iter().map(String::as_str).collect::<Vec<_>>());
    writeln!(out, "socket     {socket}")?;
    writeln!(out, "kernel     {}", hello.kernel_version)?;
    writeln!(out, "protocol   {}", hello.protocol_version)?;
    writeln!(out, "codecs     {}", names(&hello.features.codecs))?;
    writeln!(out, "opcodes    {}", names(&hello.features.opcodes))?;
    writeln!(out, "features   {}", list(&enabled))?;
    match agent_id {
        Some(id) => writeln!(out, "your id    {id}")?,
        None => writeln!(out, "your id    unknown")?,
    }
    Ok(())
}

/// `ping --json`: one object for the whole run.
#[derive(Serialize)]
struct PingReport<'a> {
    socket: &'a str,
    codec: &'a str,
    size: usize,
    count: u64,
    agent_id: Option<u32>,
    min_us: f64,
    p50_us: f64,
    max_us: f64,
    times_us: &'a [f64],
}

/// `status --json`: the HELLO reply's fields, then the socket and the caller's id.
#[derive(Serialize)]
struct StatusReport<'a> {
    #[serde(flatten)]
    hello: &'a HelloReply,
    socket: &'a str,
    agent_id: Option<u32>,
}

/// `value` as the JSON codec writes it (optional fields left out, not `null`), in field
/// order.
pub fn as_json<T: Serialize>(value: &T) -> String {
    clove_abi::codec::encode(Codec::Json, value)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .unwrap_or_else(|| "null".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_uses_the_nearest_rank_median() {
        assert_eq!(summary(&[5.0]), (5.0, 5.0, 5.0));
        assert_eq!(summary(&[3.0, 1.0, 2.0]), (1.0, 2.0, 3.0));
        assert_eq!(summary(&[4.0, 1.0, 3.0, 2.0]), (1.0, 2.0, 4.0));
    }

    #[test]
    fn timeouts_are_positive_durations_with_optional_units() {
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("10 parsecs").is_err());
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
