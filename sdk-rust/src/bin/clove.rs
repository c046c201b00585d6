//! `clove`: the command-line tool for a running Clove kernel.
//!
//! Exit status: 0 ok; 1 the kernel answered an error (or the conversation with it failed);
//! 2 usage error (clap's); 3 the kernel's socket cannot be connected to. Errors go to stderr
//! as one line, `clove: <message>`.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use clove_sdk::msg::HelloReply;
use clove_sdk::{Client, Codec, Error};
use serde::Serialize;
use serde_json::Value;

const AFTER_HELP: &str = "\
Examples:
  clove status                         kernel and protocol version, features, your id
  clove status --json                  the HELLO reply as JSON (plus socket and agent_id)
  clove ping --count 5                 five NOOP round trips, timed
  clove --codec json ping --size 4096  the same over the original's JSON framing
  clove --socket /tmp/clove.sock status

Socket: --socket, else $CLOVE_SOCKET, else /run/clove/clove.sock (root) or
$XDG_RUNTIME_DIR/clove/clove.sock (others); /tmp/clove.sock if only that one exists.
Start a kernel with `clove-kernel`.

Exit status: 0 ok, 1 the kernel answered an error, 2 usage error, 3 cannot connect.";

/// Talk to a running Clove kernel over its Unix socket.
#[derive(Debug, Parser)]
#[command(name = "clove", version, after_help = AFTER_HELP)]
struct Cli {
    /// The kernel's socket [default: $CLOVE_SOCKET, else the kernel's default socket]
    #[arg(long, global = true, value_name = "PATH")]
    socket: Option<PathBuf>,

    /// Machine-readable output: one JSON object on stdout
    #[arg(long, global = true)]
    json: bool,

    /// Payload codec of the requests (replies use the request's)
    #[arg(long, global = true, value_enum, default_value_t = CodecArg::Postcard)]
    codec: CodecArg,

    /// Give up when a reply takes longer than this many seconds
    #[arg(long, global = true, value_name = "SECS", default_value = "10", value_parser = parse_secs)]
    timeout: Duration,

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
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    let secs: f64 = s.parse().map_err(|e| format!("{s}: {e}"))?;
    match Duration::try_from_secs_f64(secs) {
        Ok(d) if !d.is_zero() => Ok(d),
        _ => Err(format!("{s}: expected a positive number of seconds")),
    }
}

/// Why a command failed.
enum Failure {
    Sdk(Error),
    Stdout(io::Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        Failure::Sdk(e)
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Failure {
        Failure::Stdout(e)
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
        Err(Failure::Sdk(e @ Error::Connect { .. })) => {
            eprintln!(
                "clove: {e}; is the kernel running? start it with `clove-kernel`, \
                 or name its socket with --socket (or CLOVE_SOCKET)"
            );
            ExitCode::from(3)
        }
        Err(Failure::Sdk(e)) => {
            eprintln!("clove: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: &Cli) -> Result<(), Failure> {
    let mut client = Client::connect(cli.socket.as_deref())?.with_codec(cli.codec.into());
    client.set_timeout(Some(cli.timeout))?;
    let mut out = io::stdout().lock();
    match cli.command {
        Command::Ping { count, size } => ping(cli, &mut client, &mut out, count, size),
        Command::Status => status(cli, &mut client, &mut out),
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
fn as_json<T: Serialize>(value: &T) -> String {
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
    fn timeouts_must_be_positive() {
        assert_eq!(parse_secs("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_secs("0").is_err());
        assert!(parse_secs("-1").is_err());
        assert!(parse_secs("x").is_err());
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
