//! The agent commands: `run`, `ps`, `kill`, `pause`, `resume`, `wait`, `logs`, each one
//! lifecycle syscall through the SDK's typed methods, shaped for a terminal (or `--json`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use clap::Args;
use clove_sdk::msg::{
    AgentEntry, AgentRef, ByteSize, Isolation, Limits, LogsReply, LogsRequest, RestartPolicy,
    SpawnReply, SpawnRequest, WaitReply,
};
use clove_sdk::Client;

use crate::table::{uptime, Table};
use crate::{as_json, Failure, ResultExt};

/// An agent named on the command line: digits mean an id, anything else a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `7`.
    Id(u32),
    /// `worker`.
    Name(String),
}

impl Target {
    /// The SDK's view of it.
    pub fn agent(&self) -> AgentRef<'_> {
        match self {
            Target::Id(id) => AgentRef::Id(*id),
            Target::Name(name) => AgentRef::Name(name),
        }
    }
}

impl FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Target, String> {
        if s.is_empty() {
            return Err("an agent name or id must not be empty".into());
        }
        if s.bytes().all(|b| b.is_ascii_digit()) {
            return s
                .parse()
                .map(Target::Id)
                .map_err(|_| format!("{s}: an agent id is at most {}", u32::MAX));
        }
        Ok(Target::Name(s.to_owned()))
    }
}

/// `clove run`'s arguments.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// The script to run; a relative path is taken from the current directory
    #[arg(value_name = "SCRIPT")]
    pub script: PathBuf,
    /// The agent's name, unique among live agents [default: the script's file name without
    /// its extension]
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Memory limit: bytes, or a size like 256M, 1.5G, 512KiB [default: 256M]
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub memory: Option<ByteSize>,
    /// CPU limit in CPUs, e.g. 0.5 for half of one [default: 1]
    #[arg(long, value_name = "CPUS", value_parser = parse_cpus)]
    pub cpus: Option<f64>,
    /// Most processes and threads the agent may have [default: 64]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub pids: Option<u64>,
    /// Give the agent the host's network (default: an empty network namespace of its own)
    #[arg(long)]
    pub network: bool,
    /// Run without namespaces, uid switch and seccomp (the cgroup limits still apply)
    #[arg(long)]
    pub no_sandbox: bool,
    /// The program that runs the script [default: the kernel's python3]; "" executes the
    /// script itself
    #[arg(long, value_name = "PROGRAM")]
    pub interpreter: Option<String>,
    /// Restart the agent when it ends: never, on-failure (a non-zero exit or a signal) or
    /// always; OTP's temporary, transient, permanent also work [default: never]
    #[arg(long, value_name = "POLICY", value_parser = parse_restart)]
    pub restart: Option<RestartPolicy>,
    /// Restarts allowed within --restart-window before the agent is given up on [default: 5]
    #[arg(long, value_name = "N")]
    pub max_restarts: Option<u32>,
    /// The window of --max-restarts, in seconds [default: 300]
    #[arg(long, value_name = "SECS", value_parser = parse_window)]
    pub restart_window: Option<f64>,
    /// Delay before the first restart in ms; it doubles per restart, up to 60 s [default: 1000]
    #[arg(long, value_name = "MS")]
    pub restart_backoff_ms: Option<u64>,
    /// Join this supervisor group (`clove group create`); the group then decides restarts
    #[arg(long, value_name = "GROUP")]
    pub group: Option<String>,
    /// An environment variable for the agent (repeatable)
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// Arguments for the script (after `--`); it gets `[socket, ARGS...]` as its argv[1..]
    #[arg(last = true, value_name = "ARGS")]
    pub args: Vec<String>,
}

pub fn parse_size(s: &str) -> Result<ByteSize, String> {
    s.parse::<ByteSize>().map_err(|e| e.to_string())
}

pub fn parse_cpus(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(c) if c.is_finite() && c > 0.0 => Ok(c),
        _ => Err(format!("{s}: expected a positive number of CPUs, e.g. 0.5")),
    }
}

fn parse_restart(s: &str) -> Result<RestartPolicy, String> {
    serde_json::from_value(serde_json::Value::String(s.to_owned())).map_err(|_| {
        format!("{s}: expected never, on-failure or always (or temporary, transient, permanent)")
    })
}

fn parse_window(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(w) if w.is_finite() && w > 0.0 => Ok(w),
        _ => Err(format!("{s}: expected a positive number of seconds")),
    }
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{s}: expected KEY=VALUE")),
    }
}

/// The SPAWN request `clove run` sends. The script is made absolute against `cwd`, so the
/// kernel finds it whatever its own working directory.
pub fn spawn_request(args: &RunArgs, cwd: &Path) -> Result<SpawnRequest, String> {
    let script = cwd.join(&args.script);
    let name = match &args.name {
        Some(n) => n.clone(),
        None => script
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                format!(
                    "{}: no file name to name the agent after; give --name",
                    script.display()
                )
            })?,
    };
    let mut req = SpawnRequest::new(name, script.to_string_lossy());
    req.sandboxed = !args.no_sandbox;
    req.network = args.network;
    req.interpreter = args.interpreter.clone();
    req.args = args.args.clone();
    req.env = args.env.iter().cloned().collect::<BTreeMap<_, _>>();
    if let Some(policy) = args.restart {
        req.restart_policy = policy;
    }
    if let Some(n) = args.max_restarts {
        req.max_restarts = n;
    }
    if let Some(w) = args.restart_window {
        req.restart_window = w;
    }
    req.restart_backoff_ms = args.restart_backoff_ms;
    req.group = args.group.clone();
    if args.memory.is_some() || args.cpus.is_some() || args.pids.is_some() {
        let mut limits = Limits::default();
        if let Some(m) = args.memory {
            limits.memory = m;
        }
        limits.cpu = args.cpus;
        if let Some(p) = args.pids {
            limits.max_pids = p;
        }
        req.limits = Some(limits);
    }
    Ok(req)
}

pub fn run(
    client: &mut Client,
    out: &mut impl Write,
    json: bool,
    args: &RunArgs,
) -> Result<(), Failure> {
    let cwd = std::env::current_dir()
        .map_err(|e| Failure::other("run", format!("current directory: {e}")))?;
    let req = spawn_request(args, &cwd).map_err(|why| Failure::other("run", why))?;
    let what = format!("run {}", req.script);
    let reply = client.spawn(&req).ctx(&what)?;
    if json {
        writeln!(out, "{}", as_json(&reply))?;
    } else {
        out.write_all(spawn_summary(&reply, &req).as_bytes())?;
    }
    Ok(())
}

/// What `clove run` prints: the agent, then which isolation is in force and which is not.
pub fn spawn_summary(reply: &SpawnReply, req: &SpawnRequest) -> String {
    let iso = &reply.isolation;
    let mut s = format!(
        "started agent {} {:?}, pid {}\n",
        reply.id, reply.name, reply.pid
    );
    let state = if iso.fully_isolated {
        "full"
    } else {
        "partial"
    };
    s.push_str(&format!("isolation    {state}\n"));
    s.push_str(&format!("namespaces   {}\n", namespaces(iso)));
    s.push_str(&format!("limits       {}\n", limits(iso, &req.limits())));
    let missing = if iso.not_applied.is_empty() {
        "none".to_owned()
    } else {
        iso.not_applied.join(", ")
    };
    s.push_str(&format!("not applied  {missing}\n"));
    if let Some(why) = &iso.degraded_reason {
        s.push_str(&format!("why          {why}\n"));
    }
    s
}

fn namespaces(iso: &Isolation) -> String {
    let ns = &iso.namespaces;
    let own: Vec<&str> = [
        (ns.pid, "pid"),
        (ns.net, "net"),
        (ns.mnt, "mnt"),
        (ns.uts, "uts"),
    ]
    .into_iter()
    .filter_map(|(on, name)| on.then_some(name))
    .collect();
    if own.is_empty() {
        "none (the host's)".into()
    } else {
        own.join(", ")
    }
}

fn limits(iso: &Isolation, limits: &Limits) -> String {
    let cg = &iso.cgroups;
    if !cg.available {
        return "none (no cgroup)".into();
    }
    let (quota, period) = limits.cpu_quota_period();
    let mark = |on: bool, text: String| {
        if on {
            text
        } else {
            format!("{text} (NOT enforced)")
        }
    };
    let parts = [
        mark(
            cg.memory_limit,
            format!("memory {}", human_bytes(limits.memory.bytes())),
        ),
        mark(
            cg.cpu_quota,
            format!("cpu {:.2}", quota as f64 / period as f64),
        ),
        mark(cg.pids_limit, format!("pids {}", limits.max_pids)),
    ];
    let version = cg
        .version
        .map(|v| format!(" (cgroup {})", v.as_str()))
        .unwrap_or_default();
    format!("{}{version}", parts.join(", "))
}

/// `256 MiB`, `1.5 GiB`, `512 B`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if v.fract() == 0.0 {
        format!("{v:.0} {}", UNITS[unit])
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

pub fn ps(client: &mut Client, out: &mut impl Write, json: bool, all: bool) -> Result<(), Failure> {
    let rows = if all {
        client.list_detail()
    } else {
        client.list()
    }
    .ctx("list agents")?;
    if json {
        writeln!(out, "{}", as_json(&rows))?;
    } else {
        out.write_all(ps_table(&rows, all).as_bytes())?;
    }
    Ok(())
}

/// `clove ps`'s table, by id: RESTARTS counts the restarts by the agent's policy; with
/// `all`, an EXIT column says how an exited agent ended (or a restarted one's last run).
pub fn ps_table(rows: &[AgentEntry], all: bool) -> String {
    let mut rows: Vec<&AgentEntry> = rows.iter().collect();
    rows.sort_by_key(|r| r.id);
    let mut headers = vec!["ID", "NAME", "PID", "STATE", "UPTIME", "RESTARTS"];
    if all {
        headers.push("EXIT");
    }
    let mut t = Table::new(&headers);
    for r in rows {
        let mut cells = vec![
            r.id.to_string(),
            r.name.clone(),
            r.pid.to_string(),
            r.state.as_str().to_owned(),
            match (r.running, r.uptime_ms) {
                (true, Some(ms)) => uptime(ms),
                _ => "-".to_owned(),
            },
            r.restarts.unwrap_or(0).to_string(),
        ];
        if all {
            cells.push(r.exit.clone().unwrap_or_else(|| "-".into()));
        }
        t.push(cells);
    }
    t.render()
}

/// KILL, PAUSE or RESUME.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Kill,
    Pause,
    Resume,
}

pub fn control(
    client: &mut Client,
    out: &mut impl Write,
    json: bool,
    action: Control,
    target: &Target,
) -> Result<(), Failure> {
    let agent = target.agent();
    let (verb, done) = match action {
        Control::Kill => ("kill", "killed"),
        Control::Pause => ("pause", "paused"),
        Control::Resume => ("resume", "resumed"),
    };
    let what = format!("{verb} {agent}");
    let (id, reply) = match action {
        Control::Kill => client.kill(agent).map(|r| (r.agent_id, as_json(&r))),
        Control::Pause => client.pause(agent).map(|r| (r.agent_id, as_json(&r))),
        Control::Resume => client.resume(agent).map(|r| (r.agent_id, as_json(&r))),
    }
    .ctx(&what)?;
    if json {
        writeln!(out, "{reply}")?;
    } else {
        writeln!(out, "{done} agent {id}")?;
    }
    Ok(())
}

/// Exit status when WAIT's timeout ran out first (as timeout(1)).
pub const WAIT_TIMED_OUT: u8 = 124;

/// `clove wait`'s exit status: the agent's exit code, 128 + the signal that killed it.
pub fn exit_status(reply: &WaitReply) -> u8 {
    match (reply.exit_code, reply.signal) {
        (_, Some(sig)) => u8::try_from(128 + sig.clamp(0, 127)).unwrap_or(255),
        (Some(code), None) => u8::try_from(code.clamp(0, 255)).unwrap_or(255),
        // Exited, but how is unknown: not a success.
        (None, None) => 1,
    }
}

pub fn wait(
    client: &mut Client,
    out: &mut impl Write,
    json: bool,
    target: &Target,
    timeout: Option<Duration>,
) -> Result<(), Failure> {
    let agent = target.agent();
    let what = format!("wait for {agent}");
    // The reply comes when the agent exits: the client must not give up before the kernel.
    let read_limit = timeout.map(|t| t + Duration::from_secs(10));
    client.set_timeout(read_limit).ctx(&what)?;
    let reply = client.wait(agent, timeout).ctx(&what)?;
    if json {
        writeln!(out, "{}", as_json(&reply))?;
    }
    if !reply.exited {
        let after = timeout
            .map(|t| format!("{:.1} s", t.as_secs_f64()))
            .unwrap_or_default();
        if !json {
            return Err(Failure::other(
                what,
                format!("agent {} still running after {after}", reply.agent_id),
            )
            .with_status(WAIT_TIMED_OUT));
        }
        return Err(Failure::Exit(WAIT_TIMED_OUT));
    }
    if !json {
        let how = reply.reason.clone().unwrap_or_else(|| "exited".into());
        writeln!(out, "agent {} {how}", reply.agent_id)?;
    }
    match exit_status(&reply) {
        0 => Ok(()),
        status => Err(Failure::Exit(status)),
    }
}

/// How long one LOGS request of a follower waits for new output.
const FOLLOW_WAIT: Duration = Duration::from_secs(5);

pub fn logs(
    client: &mut Client,
    out: &mut impl Write,
    json: bool,
    target: &Target,
    lines: u32,
    follow: bool,
) -> Result<(), Failure> {
    let agent = target.agent();
    let what = format!("logs of {agent}");
    let (id, name) = match agent {
        AgentRef::Id(id) => (Some(id), None),
        AgentRef::Name(n) => (None, Some(n.to_owned())),
    };
    let first = client
        .logs(&LogsRequest {
            id,
            name,
            lines,
            ..LogsRequest::default()
        })
        .ctx(&what)?;
    show_logs(out, json, &first)?;
    if !follow {
        return Ok(());
    }
    // A follow request waits up to FOLLOW_WAIT for output: the client must wait longer.
    client
        .set_timeout(Some(FOLLOW_WAIT + Duration::from_secs(10)))
        .ctx(&what)?;
    let mut last = first;
    // By id from now on: once the agent exits its name is free, and may be taken again.
    while last.running || !last.text.is_empty() {
        let next = LogsRequest {
            id: Some(last.agent_id),
            offset: Some(last.next_offset),
            wait_ms: Some(FOLLOW_WAIT.as_secs() * 1000),
            ..LogsRequest::default()
        };
        last = client.logs(&next).ctx(&what)?;
        show_logs(out, json, &last)?;
    }
    Ok(())
}

fn show_logs(out: &mut impl Write, json: bool, reply: &LogsReply) -> Result<(), Failure> {
    if json {
        writeln!(out, "{}", as_json(reply))?;
    } else {
        out.write_all(reply.text.as_bytes())?;
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_mean_an_id() {
        assert_eq!("7".parse::<Target>(), Ok(Target::Id(7)));
        assert_eq!("w7".parse::<Target>(), Ok(Target::Name("w7".into())));
        assert_eq!("-7".parse::<Target>(), Ok(Target::Name("-7".into())));
        assert!("99999999999".parse::<Target>().is_err());
        assert!("".parse::<Target>().is_err());
    }

    #[test]
    fn exit_status_is_the_code_or_128_plus_the_signal() {
        let w = |code, signal| WaitReply {
            exited: true,
            exit_code: code,
            signal,
            ..WaitReply::default()
        };
        assert_eq!(exit_status(&w(Some(0), None)), 0);
        assert_eq!(exit_status(&w(Some(3), None)), 3);
        assert_eq!(exit_status(&w(None, Some(9))), 137);
        assert_eq!(exit_status(&w(None, Some(15))), 143);
        assert_eq!(exit_status(&w(None, None)), 1);
    }

    #[test]
    fn restart_flags_reach_the_request() {
        assert_eq!(parse_restart("on-failure"), Ok(RestartPolicy::OnFailure));
        assert_eq!(parse_restart("permanent"), Ok(RestartPolicy::Always));
        assert!(parse_restart("sometimes").is_err());
        assert!(parse_window("0").is_err());
        let args = RunArgs {
            script: "w.py".into(),
            name: None,
            memory: None,
            cpus: None,
            pids: None,
            network: false,
            no_sandbox: false,
            interpreter: None,
            restart: Some(RestartPolicy::OnFailure),
            max_restarts: Some(2),
            restart_window: Some(10.0),
            restart_backoff_ms: Some(200),
            group: Some("pool".into()),
            env: Vec::new(),
            args: Vec::new(),
        };
        let req = spawn_request(&args, Path::new("/srv")).unwrap();
        assert_eq!(req.restart_policy, RestartPolicy::OnFailure);
        assert_eq!((req.max_restarts, req.restart_window), (2, 10.0));
        assert_eq!(req.restart_backoff_ms, Some(200));
        assert_eq!(req.group.as_deref(), Some("pool"));
        let plain = spawn_request(
            &RunArgs {
                restart: None,
                max_restarts: None,
                restart_window: None,
                restart_backoff_ms: None,
                ..args
            },
            Path::new("/srv"),
        )
        .unwrap();
        assert_eq!(plain.restart_policy, RestartPolicy::Never);
        assert_eq!(plain.max_restarts, 5);
    }

    #[test]
    fn ps_shows_restarts_and_with_all_the_exit() {
        let row = |id, name: &str, restarts, exit: Option<&str>| AgentEntry {
            id,
            name: name.into(),
            pid: 100 + id as i32,
            running: exit.is_none(),
            restarts,
            exit: exit.map(String::from),
            ..AgentEntry::default()
        };
        let rows = [
            row(9, "worker", Some(3), None),
            row(2, "done", None, Some("exited with code 0")),
        ];
        let table = ps_table(&rows, true);
        let lines: Vec<&str> = table.lines().collect();
        assert!(
            lines[0].contains("RESTARTS") && lines[0].ends_with("EXIT"),
            "{table}"
        );
        // Sorted by id; a row without a count shows 0.
        assert!(
            lines[1].starts_with('2') && lines[1].contains("exited with code 0"),
            "{table}"
        );
        let cells: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(
            (cells[0], cells[1], cells[cells.len() - 2]),
            ("9", "worker", "3"),
            "{table}"
        );
        assert!(!ps_table(&rows, false).contains("EXIT"));
    }

    #[test]
    fn sizes_print_in_binary_units() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(256 << 20), "256 MiB");
        assert_eq!(human_bytes(1536 << 20), "1.5 GiB");
    }
}
