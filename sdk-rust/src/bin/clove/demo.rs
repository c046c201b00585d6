//! `clove demo`: adversarial agents against a running kernel, each judged by evidence.
//!
//! For every demo the runner:
//! 1. prepares what the attack aims at on the host, things the agent's uid could reach if the
//!    sandbox were missing: TCP and UDP listeners on 127.0.0.1, a world-readable canary file in
//!    a fresh 0755 directory, a world-writable 1777 directory;
//! 2. spawns a healthy neighbour (a heartbeat loop) and waits for its first heartbeat;
//! 3. spawns the attacker with the demo's limits and arguments, and WAITs for it;
//! 4. reads the attacker's verdict line (`DEMO {json}`) from LOGS, and observes from outside
//!    what only the host can see: connections and datagrams at the listeners, files in the
//!    writable directory, the neighbour's state and heartbeats, whether the kernel answers;
//! 5. kills both agents and judges each attack `contained`, `ESCAPED` or `ERROR` (the demo
//!    could not tell), with the evidence.
//!
//! The judging is pure (`judge.rs`), so every rule is unit-tested with both outcomes; the
//! host-side targets are in `targets.rs`. The scripts live in `demos/` and are compiled into the binary, so `clove demo`
//! works from any directory (`--demos-dir` runs a checkout's copies instead).
//!
//! `clove demo supervisor` is another kind of demo, not an attack and not part of `all`:
//! crash-prone workers in supervisor groups, judged `as expected` or not (`supervisor.rs`).
//! So is `clove demo llm`: agents contending for the shared LLM under the `fifo` and `vtc`
//! schedulers, with their served cost, queue delays and Jain's fairness index (`llm.rs`).

#[path = "demo/judge.rs"]
mod judge;
#[path = "demo/llm.rs"]
mod llm;
#[path = "demo/supervisor.rs"]
mod supervisor;
#[path = "demo/targets.rs"]
mod targets;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Args;
use clove_sdk::msg::{
    AgentRef, ByteSize, Limits, LogsReply, LogsRequest, SpawnReply, SpawnRequest,
};
use clove_sdk::Client;
use serde::Serialize;

use crate::table::Table;
use crate::{as_json, Failure};
use judge::{
    heartbeats, judge, parse_verdict, report_table, Evidence, FsSeen, NeighbourSeen, Outcome, Row,
    ATTACK_LIMIT, CPU_SECONDS, FORK_PIDS, HOG_CPUS, HOG_MEMORY,
};
use targets::{set_mode, FsCanary, NetCanary, TempDir};

/// `clove demo`'s arguments.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// The demo to run (see --list), `all` (every attack), `supervisor` or `llm`
    #[arg(value_name = "NAME", required_unless_present = "list")]
    pub name: Option<String>,
    /// List the demos: what each attacks (or shows) and when it is judged contained (or as
    /// expected)
    #[arg(long, conflicts_with = "name")]
    pub list: bool,
    /// The kernel's state dir, for the neighbour's work dir [default: found from the kernel's
    /// open files, which needs root or the kernel's uid]
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Run the scripts of this directory instead of the copies built into clove
    #[arg(long, value_name = "DIR")]
    pub demos_dir: Option<PathBuf>,
    /// Spawn the attacker with `sandboxed: false` and `network: true` (fs-escape and
    /// network-probe only), to show that the runner does see escapes
    #[arg(long, hide = true)]
    pub unsandboxed: bool,
}

/// One demo: a script and what it is about.
#[derive(Debug)]
pub struct Demo {
    /// Its name on the command line.
    pub name: &'static str,
    /// The script's file name in `demos/`.
    pub file: &'static str,
    source: &'static str,
    /// What it attacks, in a few words.
    pub attacks: &'static str,
    /// What proves containment, in a few words.
    pub proof: &'static str,
    /// Harmless to run without the sandbox (`--unsandboxed`).
    unsandboxed_ok: bool,
}

/// Every demo, in the order `all` runs them.
pub const DEMOS: &[Demo] = &[
    Demo {
        name: "fork-bomb",
        file: "fork_bomb.py",
        source: include_str!("../../../../demos/fork_bomb.py"),
        attacks: "fork until failure (--pids 16)",
        proof: "peak processes <= pids.max, forking fails, the demo ends",
        unsandboxed_ok: false,
    },
    Demo {
        name: "memory-hog",
        file: "memory_hog.py",
        source: include_str!("../../../../demos/memory_hog.py"),
        attacks: "allocate in 8 MiB steps (--memory 64M)",
        proof: "WAIT: killed by the OOM killer (oom, signal 9) below the limit",
        unsandboxed_ok: false,
    },
    Demo {
        name: "cpu-hog",
        file: "cpu_hog.py",
        source: include_str!("../../../../demos/cpu_hog.py"),
        attacks: "busy loop for 3 s (--cpus 0.2)",
        proof: "own CPU time / wall time <= 0.3",
        unsandboxed_ok: false,
    },
    Demo {
        name: "network-probe",
        file: "network_probe.py",
        source: include_str!("../../../../demos/network_probe.py"),
        attacks: "TCP and UDP to the runner's 127.0.0.1 listeners, packet and raw sockets",
        proof: "the listeners see nothing, raw sockets fail",
        unsandboxed_ok: true,
    },
    Demo {
        name: "fs-escape",
        file: "fs_escape.py",
        source: include_str!("../../../../demos/fs_escape.py"),
        attacks: "read a host canary, write a 1777 host dir, list /proc and a neighbour's work dir",
        proof: "paths not visible, host dir stays empty, /proc shows only its own",
        unsandboxed_ok: true,
    },
    Demo {
        name: "privilege",
        file: "privilege.py",
        source: include_str!("../../../../demos/privilege.py"),
        attacks: "user namespace, mount, setuid(0), ptrace and SIGKILL of the neighbour and kernel",
        proof: "Seccomp 2, NoNewPrivs 1, CapBnd 0; every call fails; kernel and neighbour live",
        unsandboxed_ok: false,
    },
];

/// The neighbour's script.
const HEALTHY: (&str, &str) = ("healthy.py", include_str!("../../../../demos/healthy.py"));

/// One demo as `clove demo --list --json` shows it: an attack (`kind: "adversarial"`, with
/// `attacks` and `contained_when`), or the supervision demo (`kind: "supervision"`) or the
/// LLM contention demo (`kind: "llm"`), both with `shows` and `expected_when`.
#[derive(Debug, Serialize)]
pub struct Listed {
    name: &'static str,
    kind: &'static str,
    script: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    attacks: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    contained_when: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    shows: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expected_when: Option<&'static str>,
}

/// `clove demo --list --json`: every attack (what `all` runs), then the supervision demo and
/// the LLM contention demo (`kind: "llm"`).
pub fn list() -> Vec<Listed> {
    DEMOS
        .iter()
        .map(|d| Listed {
            name: d.name,
            kind: "adversarial",
            script: d.file,
            attacks: Some(d.attacks),
            contained_when: Some(d.proof),
            shows: None,
            expected_when: None,
        })
        .chain([Listed {
            name: supervisor::NAME,
            kind: "supervision",
            script: supervisor::WORKER_FILE,
            attacks: None,
            contained_when: None,
            shows: Some(supervisor::SHOWS),
            expected_when: Some(supervisor::EXPECTED_WHEN),
        }])
        .chain([Listed {
            name: llm::NAME,
            kind: "llm",
            script: llm::AGENT_FILE,
            attacks: None,
            contained_when: None,
            shows: Some(llm::SHOWS),
            expected_when: Some(llm::EXPECTED_WHEN),
        }])
        .collect()
}

/// `clove demo --list`'s tables: the attacks, then the supervision and LLM demos.
pub fn list_table() -> String {
    let mut t = Table::new(&["DEMO", "ATTACKS", "CONTAINED WHEN"]);
    for d in DEMOS {
        t.push(vec![d.name.into(), d.attacks.into(), d.proof.into()]);
    }
    let mut text = t.render();
    text.push_str(
        "(`clove demo all` runs every attack above)\n\n\
         Not attacks, not part of `all`: supervision and LLM contention, judged `as expected` \
         or UNEXPECTED\n",
    );
    let mut t = Table::new(&["DEMO", "SHOWS", "AS EXPECTED WHEN"]);
    t.push(vec![
        supervisor::NAME.into(),
        supervisor::SHOWS.into(),
        supervisor::EXPECTED_WHEN.into(),
    ]);
    t.push(vec![
        llm::NAME.into(),
        llm::SHOWS.into(),
        llm::EXPECTED_WHEN.into(),
    ]);
    text.push_str(&t.render());
    text
}

/// The demos `name` selects: one by name (`fork_bomb` works too), or `all`.
pub fn select(name: &str) -> Result<Vec<&'static Demo>, String> {
    if name == "all" {
        return Ok(DEMOS.iter().collect());
    }
    let wanted = name.replace('_', "-");
    DEMOS
        .iter()
        .find(|d| d.name == wanted)
        .map(|d| vec![d])
        .ok_or_else(|| {
            let names: Vec<&str> = DEMOS.iter().map(|d| d.name).collect();
            format!(
                "no such demo; the demos are {} (or all), {} and {}",
                names.join(", "),
                supervisor::NAME,
                llm::NAME
            )
        })
}

/// The demos `args` ask for, checked before any kernel is contacted: an unknown name, or
/// `--unsandboxed` with a demo that would harm the host, is a usage error (exit 2).
pub fn check(args: &DemoArgs) -> Result<Vec<&'static Demo>, Failure> {
    let name = args.name.as_deref().unwrap_or("all");
    let what = format!("demo {name}");
    if name == supervisor::NAME || name == llm::NAME {
        if args.unsandboxed {
            let why = "--unsandboxed is for fs-escape and network-probe only";
            return Err(Failure::other(&what, why).with_status(2));
        }
        return Ok(Vec::new());
    }
    let demos = select(name).map_err(|why| Failure::other(&what, why).with_status(2))?;
    if args.unsandboxed {
        if let Some(d) = demos.iter().find(|d| !d.unsandboxed_ok) {
            return Err(Failure::other(
                &what,
                format!(
                    "--unsandboxed would let {} attack the host for real; it is allowed for \
                     fs-escape and network-probe only",
                    d.name
                ),
            )
            .with_status(2));
        }
    }
    Ok(demos)
}

/// `clove demo`.
pub fn run(
    client: &mut Client,
    out: &mut impl Write,
    json: bool,
    args: &DemoArgs,
) -> Result<(), Failure> {
    let demos = check(args)?;
    if args.name.as_deref() == Some(supervisor::NAME) {
        return supervisor::run(client, out, json, args.demos_dir.as_deref());
    }
    if args.name.as_deref() == Some(llm::NAME) {
        return llm::run(client, out, json, args.demos_dir.as_deref());
    }
    let what = format!("demo {}", args.name.as_deref().unwrap_or("all"));
    let scripts =
        Scripts::prepare(args.demos_dir.as_deref()).map_err(|why| Failure::other(&what, why))?;
    let kernel_pid = peer_pid(client.socket_path());
    let state_dir = args
        .state_dir
        .clone()
        .or_else(|| kernel_pid.and_then(find_state_dir));
    // WAIT replies come when an attacker exits: allow for the longest attack.
    client
        .set_timeout(Some(ATTACK_LIMIT + Duration::from_secs(15)))
        .map_err(|e| Failure::call(&what, e))?;
    let mut runner = Runner {
        client,
        scripts,
        kernel_pid,
        state_dir,
        unsandboxed: args.unsandboxed,
        tag: std::process::id().to_string(),
        live: Vec::new(),
    };
    let mut rows = Vec::new();
    for demo in demos {
        rows.extend(runner.run_demo(demo));
    }
    let bad = rows
        .iter()
        .filter(|r| r.result != Outcome::Contained)
        .count();
    if json {
        #[derive(Serialize)]
        struct Report<'a> {
            rows: &'a [Row],
            all_contained: bool,
        }
        writeln!(
            out,
            "{}",
            as_json(&Report {
                rows: &rows,
                all_contained: bad == 0
            })
        )?;
    } else {
        out.write_all(report_table(&rows).as_bytes())?;
    }
    out.flush()?;
    if bad == 0 {
        return Ok(());
    }
    let escaped = rows.iter().filter(|r| r.result == Outcome::Escaped).count();
    let errors = bad - escaped;
    Err(Failure::other(
        what,
        format!(
            "{escaped} of {} checks ESCAPED, {errors} could not be judged",
            rows.len()
        ),
    ))
}

/// The demo scripts on disk, readable by the agents' uids.
struct Scripts {
    dir: PathBuf,
    /// Holds the directory the built-in copies were written to.
    _temp: Option<TempDir>,
}

impl Scripts {
    fn prepare(from: Option<&Path>) -> Result<Scripts, String> {
        if let Some(dir) = from {
            let dir = dir
                .canonicalize()
                .map_err(|e| format!("demos dir {}: {e}", dir.display()))?;
            return Ok(Scripts { dir, _temp: None });
        }
        // Agents run as their own uids: the directory and the scripts must be readable by
        // everyone (they hold nothing secret).
        let temp = TempDir::new("clove-demos", 0o755)?;
        for (file, source) in DEMOS.iter().map(|d| (d.file, d.source)).chain([HEALTHY]) {
            let path = temp.path.join(file);
            fs::write(&path, source).map_err(|e| format!("write {}: {e}", path.display()))?;
            set_mode(&path, 0o644)?;
        }
        Ok(Scripts {
            dir: temp.path.clone(),
            _temp: Some(temp),
        })
    }

    fn path(&self, file: &str) -> String {
        self.dir.join(file).to_string_lossy().into_owned()
    }
}

struct Runner<'c> {
    client: &'c mut Client,
    scripts: Scripts,
    kernel_pid: Option<i32>,
    state_dir: Option<PathBuf>,
    unsandboxed: bool,
    tag: String,
    /// Agents this run spawned and has not killed yet.
    live: Vec<u32>,
}

/// What a demo aims at on the host, alive until the demo has been judged.
enum Targets {
    None,
    Net(NetCanary),
    Fs(FsCanary),
}

impl Runner<'_> {
    fn run_demo(&mut self, demo: &Demo) -> Vec<Row> {
        let rows = match self.attempt(demo) {
            Ok(rows) => rows,
            Err(why) => vec![Row::error(demo.name, "run the demo", why)],
        };
        self.cleanup();
        rows
    }

    fn attempt(&mut self, demo: &Demo) -> Result<Vec<Row>, String> {
        let targets = match demo.name {
            "network-probe" => Targets::Net(NetCanary::start()?),
            "fs-escape" => Targets::Fs(FsCanary::create()?),
            _ => Targets::None,
        };

        // The neighbour, and the log offset from which its heartbeats count as "during the
        // attack".
        let mut req = SpawnRequest::new(
            format!("demo-{}-neighbour-{}", demo.name, self.tag),
            self.scripts.path(HEALTHY.0),
        );
        req.args = vec!["0.1".into()];
        let neighbour = self.spawn(&req)?;
        let mark = self.first_heartbeat(neighbour.id)?;

        let req = self.attacker_request(demo, &neighbour, &targets);
        let attacker = self.spawn(&req)?;
        let wait = self
            .client
            .wait(AgentRef::Id(attacker.id), Some(ATTACK_LIMIT))
            .map_err(|e| format!("wait for agent {}: {e}", attacker.id))?;
        if !wait.exited {
            self.kill(attacker.id);
        }
        let log = self.read_log(attacker.id)?;

        let mut ev = Evidence {
            verdict: parse_verdict(&log),
            last_line: log.lines().last().unwrap_or("").to_owned(),
            log,
            wait,
            kernel_pid_known: self.kernel_pid.is_some(),
            ..Evidence::default()
        };
        match targets {
            Targets::Net(net) => ev.net = Some(net.finish()),
            Targets::Fs(fs) => {
                ev.fs = Some(FsSeen {
                    secret: fs.secret.clone(),
                    written: fs.written(),
                    workdir: self.workdir(neighbour.id),
                })
            }
            Targets::None => {}
        }
        ev.neighbour = self.neighbour_after(&neighbour, mark)?;
        ev.kernel_alive = kernel_answers(self.client.socket_path());
        Ok(judge(demo.name, &ev))
    }

    fn attacker_request(
        &self,
        demo: &Demo,
        neighbour: &SpawnReply,
        targets: &Targets,
    ) -> SpawnRequest {
        let mut req = SpawnRequest::new(
            format!("demo-{}-{}", demo.name, self.tag),
            self.scripts.path(demo.file),
        );
        // Without the sandbox means without any isolation: the net namespace is separate
        // from the sandbox switch, so it goes too.
        req.sandboxed = !self.unsandboxed;
        req.network = self.unsandboxed;
        let mut limits = Limits::default();
        match demo.name {
            "fork-bomb" => {
                limits.max_pids = FORK_PIDS;
                req.args = vec!["512".into()];
            }
            "memory-hog" => {
                limits.memory = ByteSize(HOG_MEMORY);
                // Four times the limit: reached only if the limit does not hold.
                req.args = vec![((4 * HOG_MEMORY) >> 20).to_string()];
            }
            "cpu-hog" => {
                limits.cpu = Some(HOG_CPUS);
                req.args = vec![CPU_SECONDS.into()];
            }
            "privilege" => {
                req.args = vec![
                    neighbour.pid.to_string(),
                    self.kernel_pid.unwrap_or(0).to_string(),
                ];
            }
            _ => {}
        }
        match targets {
            Targets::Net(net) => {
                req.args = vec![
                    net.tcp_port.to_string(),
                    net.udp_port.to_string(),
                    net.nonce.clone(),
                ];
            }
            Targets::Fs(fs) => {
                let workdir = self
                    .workdir(neighbour.id)
                    .unwrap_or_else(|| PathBuf::from("/nonexistent-state-dir-unknown"));
                req.args = vec![
                    fs.canary.to_string_lossy().into_owned(),
                    fs.writable.path.to_string_lossy().into_owned(),
                    workdir.to_string_lossy().into_owned(),
                ];
            }
            Targets::None => {}
        }
        req.limits = Some(limits);
        req
    }

    fn workdir(&self, id: u32) -> Option<PathBuf> {
        self.state_dir
            .as_ref()
            .map(|d| d.join("agents").join(id.to_string()).join("work"))
    }

    fn spawn(&mut self, req: &SpawnRequest) -> Result<SpawnReply, String> {
        let reply = self
            .client
            .spawn(req)
            .map_err(|e| format!("spawn {}: {e}", req.name))?;
        self.live.push(reply.id);
        Ok(reply)
    }

    fn kill(&mut self, id: u32) {
        // An agent that has already exited answers "has exited": nothing left to do.
        let _ = self.client.kill(AgentRef::Id(id));
        self.live.retain(|x| *x != id);
    }

    fn cleanup(&mut self) {
        if self.client_broken() {
            if let Ok(c) = Client::connect(Some(self.client.socket_path())) {
                *self.client = c;
                let _ = self.client.set_timeout(Some(ATTACK_LIMIT));
            }
        }
        for id in std::mem::take(&mut self.live) {
            self.kill(id);
        }
    }

    fn client_broken(&mut self) -> bool {
        matches!(self.client.hello(), Err(e) if e.breaks_connection())
    }

    /// Waits for the neighbour's first heartbeat; returns the log offset after it (at the
    /// end of a line: a line may arrive in pieces).
    fn first_heartbeat(&mut self, id: u32) -> Result<u64, String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let (mut text, mut offset) = (String::new(), 0);
        loop {
            let r = self.logs_from(id, offset, 1000)?;
            text.push_str(&r.text);
            offset = r.next_offset;
            if heartbeats(&text) > 0 && text.ends_with('\n') {
                return Ok(offset);
            }
            if !r.running || Instant::now() > deadline {
                return Err(format!(
                    "the neighbour (agent {id}) printed no heartbeat{}",
                    if r.running {
                        " within 20 s"
                    } else {
                        " and exited"
                    }
                ));
            }
        }
    }

    fn logs_from(&mut self, id: u32, offset: u64, wait_ms: u64) -> Result<LogsReply, String> {
        self.client
            .logs(&LogsRequest {
                id: Some(id),
                offset: Some(offset),
                wait_ms: Some(wait_ms),
                ..LogsRequest::default()
            })
            .map_err(|e| format!("logs of agent {id}: {e}"))
    }

    /// The whole output of an exited agent (follows until the kernel has drained it).
    fn read_log(&mut self, id: u32) -> Result<String, String> {
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut text = String::new();
        let mut offset = 0;
        loop {
            let r = self.logs_from(id, offset, 500)?;
            text.push_str(&r.text);
            offset = r.next_offset;
            if (!r.running && r.text.is_empty()) || Instant::now() > deadline {
                return Ok(text);
            }
        }
    }

    fn neighbour_after(&mut self, n: &SpawnReply, mark: u64) -> Result<NeighbourSeen, String> {
        let rows = self
            .client
            .list()
            .map_err(|e| format!("list agents: {e}"))?;
        let row = rows.iter().find(|r| r.id == n.id);
        // At least one whole heartbeat line after the mark, waiting a little for it.
        let deadline = Instant::now() + Duration::from_secs(3);
        let (mut text, mut offset) = (String::new(), mark);
        while heartbeats(&text) == 0 && Instant::now() < deadline {
            let r = self.logs_from(n.id, offset, 1000)?;
            text.push_str(&r.text);
            offset = r.next_offset;
            if !r.running {
                break;
            }
        }
        Ok(NeighbourSeen {
            id: n.id,
            state: row.map(|r| r.state),
            same_pid: row.is_some_and(|r| r.pid == n.pid),
            heartbeats: heartbeats(&text),
        })
    }
}

/// Whether a new connection to `socket` gets an answer to HELLO.
fn kernel_answers(socket: &Path) -> bool {
    let Ok(mut c) = Client::connect(Some(socket)) else {
        return false;
    };
    c.set_timeout(Some(Duration::from_secs(5))).is_ok() && c.hello().is_ok()
}

/// The pid of the process listening on `socket` (the kernel), from SO_PEERCRED.
fn peer_pid(socket: &Path) -> Option<i32> {
    use std::os::fd::AsRawFd;
    let stream = std::os::unix::net::UnixStream::connect(socket).ok()?;
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes and `len` holds the size of `cred`, as
    // getsockopt(SO_PEERCRED) requires; the descriptor is owned by `stream`, alive here.
    let r = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (r == 0 && cred.pid > 0).then_some(cred.pid)
}

/// The kernel's state dir: the directory of the `kernel.lock` it holds open.
fn find_state_dir(kernel_pid: i32) -> Option<PathBuf> {
    let fds = fs::read_dir(format!("/proc/{kernel_pid}/fd")).ok()?;
    fds.filter_map(|e| fs::read_link(e.ok()?.path()).ok())
        .find(|p| p.file_name().is_some_and(|n| n == "kernel.lock"))
        .and_then(|p| p.parent().map(Path::to_path_buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_demo_has_a_script_and_a_unique_name() {
        for d in DEMOS {
            assert!(d.source.contains("DEMO "), "{}", d.name);
            assert_eq!(DEMOS.iter().filter(|x| x.name == d.name).count(), 1);
        }
        assert_eq!(select("all").unwrap().len(), DEMOS.len());
        assert_eq!(select("fork_bomb").unwrap()[0].name, "fork-bomb");
        assert!(select("nope").unwrap_err().contains("fs-escape"));
    }
}
