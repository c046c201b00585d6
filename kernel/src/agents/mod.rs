//! Agents: the table of running and exited agents, their identities, and the logic of the
//! lifecycle syscalls (SPAWN in [`spawn`], KILL/PAUSE/RESUME in [`control`], exit handling
//! and restarts in [`exit`]; the restart policy itself is [`crate::supervisor::restart`]),
//! and the agents an earlier kernel saved, brought back at start ([`restore`]).
//!
//! An agent is known by its id (from the kernel's one id space) for its whole life, restarts
//! included; its name is unique among live agents and free again once it has exited for
//! good. Each start of its process is a [`Run`]: a restart replaces the run and keeps the
//! agent. Exited agents stay in a bounded table, so LIST and WAIT can still answer about them.

pub mod control;
pub mod exit;
pub mod host;
pub mod logs;
pub mod plan;
pub mod restore;
pub mod spawn;
pub mod uids;

use std::collections::{HashMap, VecDeque};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use clove_abi::msg::{AgentEntry, AgentRef, AgentState, Isolation, SpawnRequest};
use clove_abi::{ErrorCode, WireError};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::sandbox::cgroup::{AgentCgroup, Cgroups};
use crate::sandbox::interpreter::Interpreter;
use crate::sandbox::launch::Launcher;
pub(crate) use crate::sync::lock;
use uids::UidBlock;

/// How many exited agents the table remembers.
pub const EXITED_KEPT: usize = 1024;

/// Why an agent's process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitReason {
    /// The exit code, when it exited.
    pub code: Option<i32>,
    /// The signal that ended it, when one did.
    pub signal: Option<i32>,
    /// The memory controller's OOM killer ended it (read from the cgroup's own counter).
    pub oom: bool,
    /// KILL asked for it.
    pub killed: bool,
}

impl ExitReason {
    /// A clean exit: code 0 and no signal.
    pub fn clean(&self) -> bool {
        self.code == Some(0) && self.signal.is_none()
    }

    /// A few words for the restart marker in the log: `exit code 1`, `signal 9`.
    pub fn short(&self) -> String {
        match (self.code, self.signal) {
            (_, Some(sig)) => format!("signal {sig}"),
            (Some(code), None) => format!("exit code {code}"),
            (None, None) => "an exit".to_owned(),
        }
    }

    /// One phrase for logs and replies: `exited with code 3`, `killed by signal 9 (OOM)`.
    pub fn describe(&self) -> String {
        let mut s = match (self.code, self.signal) {
            (_, Some(sig)) => format!("killed by signal {sig}"),
            (Some(code), None) => format!("exited with code {code}"),
            (None, None) => "exited".to_owned(),
        };
        if self.oom {
            s.push_str(" (out of memory)");
        } else if self.killed {
            s.push_str(" (KILL)");
        }
        s
    }
}

/// A lifecycle event for the event bus (the events issue exposes it to agents).
#[derive(Debug, Clone)]
pub enum LifecycleEvent {
    /// An agent started (by SPAWN, or again by its restart policy).
    Spawned {
        /// Its id.
        id: u32,
        /// Its name.
        name: String,
        /// Its host pid.
        pid: i32,
        /// Restarts so far (0 for the SPAWN).
        restarts: u32,
    },
    /// An agent's process ended (every exit, natural or not, restarted or not).
    Exited {
        /// Its id.
        id: u32,
        /// Its name.
        name: String,
        /// Why.
        reason: ExitReason,
        /// Its policy restarts it: the agent lives on (same id, name, mailbox, names,
        /// subscriptions and agent-scoped keys). False for a final exit.
        restarting: bool,
        /// The kernel's shutdown ended it: a saved agent comes back with the next kernel, so
        /// its spec and agent-scoped keys stay.
        shutdown: bool,
    },
    /// An agent will be restarted by its policy after `backoff_ms` (published before each
    /// restart).
    Restarting {
        /// Its id.
        id: u32,
        /// Its name.
        name: String,
        /// This restart's number (1 for the first).
        restart_count: u32,
        /// How its process ended.
        reason: ExitReason,
        /// The delay before the restart.
        backoff_ms: u64,
    },
    /// An agent spent its restart budget (`max_restarts` within `restart_window`) and was
    /// given up on; its final [`LifecycleEvent::Exited`] follows.
    Escalated {
        /// Its id.
        id: u32,
        /// Its name.
        name: String,
        /// The restarts it had.
        restart_count: u32,
        /// How its process ended the last time.
        reason: ExitReason,
    },
    /// A supervisor group exceeded its intensity and stopped its children; it escalated to
    /// its parent group, or (`gave_up`, at the top) its agents exit for good.
    GroupEscalated {
        /// The group.
        group: String,
        /// Its parent group.
        parent: Option<String>,
        /// Restarts it had carried out.
        restarts: u32,
        /// Its intensity...
        intensity: u32,
        /// ...within this many seconds.
        period: f64,
        /// No parent to escalate to: the group is gone.
        gave_up: bool,
    },
    /// An agent was frozen.
    Paused {
        /// Its id.
        id: u32,
        /// Its name.
        name: String,
    },
    /// An agent was thawed.
    Resumed {
        /// Its id.
        id: u32,
        /// Its name.
        name: String,
    },
}

/// One start of an agent's process: what a restart replaces.
#[derive(Debug)]
pub struct Run {
    /// The host pid of its top process (init when sandboxed).
    pub pid: i32,
    /// A pidfd of its top process.
    pub pidfd: Arc<OwnedFd>,
    /// Its cgroups, when cgroups are available (made anew per run: the OOM counter of a
    /// cgroup never goes down).
    pub cgroup: Option<AgentCgroup>,
    /// What isolation is in force (for LIST's rich form).
    pub isolation: Isolation,
    /// When its process started.
    pub started: Instant,
    /// Held while the agent should live: dropping it makes a sandbox's init kill everything.
    pub lifeline: Mutex<Option<OwnedFd>>,
    /// Its sandbox's mount namespace, held so that its teardown happens after its exit was
    /// reported rather than in init's exit (see `launch::Started::mount_ns`).
    pub mount_ns: Mutex<Option<OwnedFd>>,
    /// The control channel to its sandbox's init, on which its EXEC commands run inside the
    /// sandbox (sandboxed only; each run has its own).
    pub control: Option<Arc<crate::sandbox::control::Control>>,
}

/// One live agent: its identity and what outlives a restart.
#[derive(Debug)]
pub struct Agent {
    /// Its id.
    pub id: u32,
    /// Its name.
    pub name: String,
    /// The uid it runs as (the kernel's own for unsandboxed agents).
    pub uid: u32,
    /// The operator uid it belongs to (its spawner's, or its parent agent's owner).
    pub owner_uid: u32,
    /// The agent that spawned it, if any.
    pub parent: Option<u32>,
    /// The request it was started with.
    pub spec: SpawnRequest,
    /// Its directory under the state dir.
    pub dir: PathBuf,
    /// The size-capped tmpfs on its work dir, when `limits.disk` made one.
    pub work_mount: Option<PathBuf>,
    /// What a sandboxed agent sees: its binds (target inside, host source), without its
    /// socket; `None` when not sandboxed (it sees the host).
    pub view: Option<Vec<plan::PlanBind>>,
    /// Its output log (continued across restarts).
    pub log: Arc<logs::AgentLog>,
    /// Stops the accept loop of its socket (which stays open across restarts).
    pub socket_stop: CancellationToken,
    /// What a restart needs to start its process again; `None` under `restart_policy: never`.
    pub(crate) relaunch: Option<spawn::Launchable>,
    /// The supervisor group it belongs to, which decides its restarts.
    pub group: Option<Arc<crate::supervisor::group::GroupHandle>>,
    /// What it may do (SPAWN's grant, changed by SET_PERMS; see [`crate::perms`]).
    pub(crate) perms: Mutex<clove_abi::msg::Permissions>,
    /// Its current (or, between a crash and its restart, its last) process.
    run: Mutex<Arc<Run>>,
    /// Its state (RUNNING, PAUSED, STOPPING; STARTING while a restart is pending).
    state: Mutex<AgentState>,
    /// Restart bookkeeping.
    supervision: Mutex<crate::supervisor::restart::Supervision>,
    /// Set once, when it has exited for good.
    exit: watch::Sender<Option<ExitReason>>,
    /// KILL is in progress: no restart.
    killing: std::sync::atomic::AtomicBool,
    /// Cancelled by KILL: a pending restart is called off.
    stop: CancellationToken,
}

impl Agent {
    /// Its state now.
    pub fn state(&self) -> AgentState {
        *lock(&self.state)
    }

    fn set_state(&self, s: AgentState) {
        *lock(&self.state) = s;
    }

    /// Sets the state unless KILL has begun (its STOPPING stays).
    fn set_state_unless_killed(&self, s: AgentState) {
        let mut state = lock(&self.state);
        if !self.killing.load(std::sync::atomic::Ordering::SeqCst) {
            *state = s;
        }
    }

    /// Its current process (between a crash and its restart: the last one).
    pub fn run(&self) -> Arc<Run> {
        Arc::clone(&lock(&self.run))
    }

    /// Its host pid (of the current or last process).
    pub fn pid(&self) -> i32 {
        lock(&self.run).pid
    }

    /// Its cgroup now, if any.
    pub fn cgroup(&self) -> Option<AgentCgroup> {
        lock(&self.run).cgroup.clone()
    }

    /// How often its policy restarted it so far.
    pub fn restarts(&self) -> u32 {
        lock(&self.supervision).restarts
    }

    /// How its last process ended, once one has (it was restarted since).
    pub fn last_exit(&self) -> Option<ExitReason> {
        lock(&self.supervision).last_exit.clone()
    }

    /// What it may do now.
    pub fn permissions(&self) -> clove_abi::msg::Permissions {
        lock(&self.perms).clone()
    }

    /// Inside a group: the delay before its next restart (see
    /// [`crate::supervisor::restart::Supervision::next_backoff`]).
    pub fn group_backoff(&self, period: std::time::Duration) -> std::time::Duration {
        let uptime = self.run().started.elapsed();
        lock(&self.supervision).next_backoff(&self.spec, uptime, period)
    }

    /// Waits until it has exited for good (a restart is not an exit here) and returns why.
    pub async fn exited(&self) -> ExitReason {
        let mut rx = self.exit.subscribe();
        loop {
            if let Some(r) = rx.borrow_and_update().clone() {
                return r;
            }
            if rx.changed().await.is_err() {
                // The sender lives in `self`; it cannot be dropped while we hold `self`.
                return ExitReason {
                    code: None,
                    signal: None,
                    oom: false,
                    killed: false,
                };
            }
        }
    }

    /// A LIST row.
    pub fn entry(&self) -> AgentEntry {
        let state = self.state();
        let run = self.run();
        let sup = lock(&self.supervision);
        AgentEntry {
            id: self.id,
            name: self.name.clone(),
            pid: run.pid,
            state,
            running: matches!(state, AgentState::Running | AgentState::Paused),
            restarts: Some(sup.restarts),
            uptime_ms: Some(run.started.elapsed().as_millis() as u64),
            group: self.spec.group.clone(),
            isolation: None,
            exit: None,
        }
    }
}

/// An exited agent, as remembered.
#[derive(Debug, Clone)]
pub struct Exited {
    /// Its id.
    pub id: u32,
    /// Its name.
    pub name: String,
    /// Its last pid.
    pub pid: i32,
    /// Why it ended.
    pub reason: ExitReason,
    /// How often its policy had restarted it.
    pub restarts: u32,
    /// Its output log (readable until the agent's directory is removed).
    pub log: Arc<logs::AgentLog>,
}

#[derive(Debug, Default)]
struct Table {
    live: HashMap<u32, Arc<Agent>>,
    names: HashMap<String, u32>,
    exited: VecDeque<Exited>,
}

/// Everything agents need from the host, set up once at start.
#[derive(Debug)]
pub struct Host {
    /// The resolved default interpreter, or why it could not be resolved.
    pub python: Result<Interpreter, String>,
    /// Clones agents.
    pub launcher: Launcher,
    /// The cgroup subtree, when cgroups can be used.
    pub cgroups: Option<Cgroups>,
    /// Why cgroups cannot be used, when they cannot.
    pub cgroups_missing: Option<String>,
    /// The agent uid block.
    pub uids: UidBlock,
    /// The name of this kernel's cgroup subtree (finds the agent a process belongs to).
    pub subtree: String,
    /// `<state dir>/agents`.
    pub dir: PathBuf,
    /// Running as root (namespaces, uid switch, cgroups possible).
    pub root: bool,
    /// How long an exited agent's directory is kept.
    pub retention: std::time::Duration,
    /// Most agents alive at once (every live agent holds a uid of the block).
    pub max_agents: usize,
    /// SIGTERM → SIGKILL time of an agent with no `grace_ms` (the config's `kill_grace_ms`).
    pub kill_grace: std::time::Duration,
}

/// The agents of one kernel.
#[derive(Debug)]
pub struct Agents {
    table: Mutex<Table>,
    /// The host side.
    pub host: Host,
    /// Set when the kernel starts shutting down: no agent is restarted after that.
    shutting_down: std::sync::atomic::AtomicBool,
    /// Told of every lifecycle event, synchronously, in order.
    observers: Observers,
}

/// The observers, shown by count in debug output.
struct Observers(Vec<Observer>);

impl std::fmt::Debug for Observers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} observer(s)", self.0.len())
    }
}

/// Something told of lifecycle events (the event bus, the mailboxes). Called synchronously
/// from the agent's task, so what it does must be quick and must not block.
pub type Observer = Box<dyn Fn(&LifecycleEvent) + Send + Sync>;

impl Agents {
    /// The agents of a kernel whose host side is `host`; `observers` are told of every
    /// lifecycle event.
    pub fn new(host: Host, observers: Vec<Observer>) -> Agents {
        Agents {
            table: Mutex::new(Table::default()),
            host,
            shutting_down: std::sync::atomic::AtomicBool::new(false),
            observers: Observers(observers),
        }
    }

    /// Tells every observer of `event`. The event is in effect when this runs: an exited
    /// agent is already out of the live table, a paused one frozen.
    pub fn notify(&self, event: LifecycleEvent) {
        for observer in &self.observers.0 {
            observer(&event);
        }
    }

    /// The kernel's shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// A live agent by id or name.
    pub fn find(&self, r: AgentRef<'_>) -> Result<Arc<Agent>, WireError> {
        let t = lock(&self.table);
        let id = match r {
            AgentRef::Id(id) => id,
            AgentRef::Name(name) => match t.names.get(name) {
                Some(id) => *id,
                None => {
                    return Err(WireError::new(
                        ErrorCode::NotFound,
                        format!("no live agent named {name:?}"),
                    ))
                }
            },
        };
        match t.live.get(&id) {
            Some(a) => Ok(Arc::clone(a)),
            None if t.exited.iter().any(|e| e.id == id) => Err(WireError::new(
                ErrorCode::NotFound,
                format!("agent {id} has exited"),
            )),
            None => Err(WireError::new(
                ErrorCode::NotFound,
                format!("no agent with id {id}"),
            )),
        }
    }

    /// Whether agent `caller` is `agent` itself or one of its (live) ancestors: what an agent
    /// may act on.
    pub fn is_self_or_ancestor(&self, caller: u32, agent: &Agent) -> bool {
        let mut cur = Some(agent.id);
        // Parents form a tree; the bound only guards against a cycle that cannot happen.
        for _ in 0..64 {
            let Some(id) = cur else { return false };
            if id == caller {
                return true;
            }
            cur = self.get(id).and_then(|a| a.parent);
        }
        false
    }

    /// A live agent by id.
    pub fn get(&self, id: u32) -> Option<Arc<Agent>> {
        lock(&self.table).live.get(&id).cloned()
    }

    /// An exited agent by id, or the latest exited agent of a name: what WAIT and LOGS report
    /// once an agent is gone (a name is free for reuse, so it means the most recent holder).
    pub fn exited(&self, r: AgentRef<'_>) -> Option<Exited> {
        lock(&self.table)
            .exited
            .iter()
            .rev()
            .find(|e| match r {
                AgentRef::Id(id) => e.id == id,
                AgentRef::Name(name) => e.name == name,
            })
            .cloned()
    }

    /// LIST: live agents by id; with `detail`, their isolation, and the exited agents the
    /// table remembers, with how they ended.
    pub fn list(&self, detail: bool) -> Vec<AgentEntry> {
        let t = lock(&self.table);
        let mut rows: Vec<AgentEntry> = t
            .live
            .values()
            .map(|a| {
                let mut row = a.entry();
                if detail {
                    row.isolation = Some(a.run().isolation.clone());
                    row.exit = a
                        .last_exit()
                        .map(|r| format!("last exit: {}", r.describe()));
                }
                row
            })
            .collect();
        if detail {
            rows.extend(t.exited.iter().map(|e| AgentEntry {
                id: e.id,
                name: e.name.clone(),
                pid: e.pid,
                state: if e.reason.clean() || e.reason.killed {
                    AgentState::Stopped
                } else {
                    AgentState::Failed
                },
                running: false,
                restarts: Some(e.restarts),
                uptime_ms: None,
                group: None,
                isolation: None,
                exit: Some(e.reason.describe()),
            }));
        }
        rows.sort_by_key(|r| r.id);
        rows
    }

    /// Live agents.
    pub fn live(&self) -> Vec<Arc<Agent>> {
        lock(&self.table).live.values().cloned().collect()
    }

    /// Reserves `name` for agent `id`; fails when a live agent has it.
    fn reserve(&self, name: &str, id: u32) -> Result<(), WireError> {
        let mut t = lock(&self.table);
        // Names reserved include the live agents and the SPAWNs in progress.
        if t.names.len() >= self.host.max_agents {
            return Err(WireError::new(
                ErrorCode::LimitExceeded,
                format!(
                    "spawn {name:?}: {} agents are alive, the configured max_agents",
                    t.names.len()
                ),
            ));
        }
        if let Some(other) = t.names.get(name) {
            return Err(WireError::new(
                ErrorCode::AlreadyExists,
                format!("an agent named {name:?} is running (id {other})"),
            ));
        }
        t.names.insert(name.to_owned(), id);
        Ok(())
    }

    /// Frees a reservation whose spawn failed.
    fn release(&self, name: &str, id: u32) {
        let mut t = lock(&self.table);
        if t.names.get(name) == Some(&id) {
            t.names.remove(name);
        }
    }

    fn insert(&self, agent: Arc<Agent>) {
        lock(&self.table).live.insert(agent.id, agent);
    }

    /// Moves an agent from live to exited and frees its name.
    fn retire(&self, agent: &Agent, reason: ExitReason) {
        let mut t = lock(&self.table);
        t.live.remove(&agent.id);
        if t.names.get(&agent.name) == Some(&agent.id) {
            t.names.remove(&agent.name);
        }
        if t.exited.len() >= EXITED_KEPT {
            t.exited.pop_front();
        }
        t.exited.push_back(Exited {
            id: agent.id,
            name: agent.name.clone(),
            pid: agent.pid(),
            reason,
            restarts: agent.restarts(),
            log: Arc::clone(&agent.log),
        });
    }

    /// The live agent whose cgroup holds `pid`, if any: a connection on the main socket from
    /// inside an agent (an unsandboxed one can reach it) is that agent, not a new caller.
    pub fn agent_of_pid(&self, pid: i32) -> Option<u32> {
        self.host.cgroups.as_ref()?;
        // Sandboxed agents cannot see the main socket: with no unsandboxed agent alive, no
        // peer can be one, and the accept path skips the /proc read.
        if !lock(&self.table).live.values().any(|a| a.view.is_none()) {
            return None;
        }
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        let id = agent_in_cgroup_file(&text, &self.host.subtree)?;
        self.get(id).map(|a| a.id)
    }

    /// Whether `uid` is in use by a live agent.
    fn uid_in_use(&self, uid: u32) -> bool {
        lock(&self.table).live.values().any(|a| a.uid == uid)
    }
}

/// The deepest `agent-<id>` below `subtree` in a `/proc/<pid>/cgroup` text.
fn agent_in_cgroup_file(text: &str, subtree: &str) -> Option<u32> {
    text.lines()
        .filter_map(|line| line.splitn(3, ':').nth(2))
        .filter_map(|path| {
            let mut parts = path.split('/').skip_while(|c| *c != subtree);
            parts.next()?;
            parts
                .filter_map(|c| c.strip_prefix("agent-"))
                .filter_map(|n| n.parse::<u32>().ok())
                .last()
        })
        .next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agents_are_found_by_their_cgroup() {
        let text = "12:pids:/user/clove-ab/agent-3/agent-9\n\
                    3:memory:/user/clove-ab/agent-3/agent-9\n\
                    0::/\n";
        assert_eq!(agent_in_cgroup_file(text, "clove-ab"), Some(9));
        // v2: processes sit in a leaf below the agent's cgroup.
        assert_eq!(
            agent_in_cgroup_file("0::/s/clove-ab/agent-4/_procs\n", "clove-ab"),
            Some(4)
        );
        // Another kernel's subtree, or none.
        assert_eq!(agent_in_cgroup_file(text, "clove-cd"), None);
        assert_eq!(agent_in_cgroup_file("0::/user.slice\n", "clove-ab"), None);
    }

    #[test]
    fn exit_reasons_read_well() {
        let r = ExitReason {
            code: Some(3),
            signal: None,
            oom: false,
            killed: false,
        };
        assert_eq!(r.describe(), "exited with code 3");
        assert!(!r.clean());
        let r = ExitReason {
            code: None,
            signal: Some(9),
            oom: true,
            killed: false,
        };
        assert_eq!(r.describe(), "killed by signal 9 (out of memory)");
    }
}
