//! Supervisor groups, as Erlang/OTP supervisors: a group has children (agents that SPAWN into
//! it with `group`, and child groups), in start order, and a strategy that says which of them
//! restart when one has to:
//!
//! * `one_for_one`: the child alone;
//! * `one_for_all`: every child: the others are stopped in reverse start order, then all
//!   start again in start order;
//! * `rest_for_one`: the child and the children started after it, likewise.
//!
//! Whether a child's exit calls for a restart is its own `restart_policy` (OTP's restart
//! types: `never` = temporary, `on-failure` = transient, `always` = permanent); a temporary
//! child that a sibling's restart stops is not started again. The budget is the group's:
//! more than `intensity` restarts within `period` seconds and the group gives up: it stops
//! every child in reverse start order and escalates. A nested group's parent treats that as
//! the failure of one permanent child and applies its own strategy and intensity (restarting
//! the child group restarts its children, in start order); at the top, the group's agents
//! exit for good and the group is removed. GROUP_ESCALATED is published at each level.
//!
//! One task per group carries all of this out, one message at a time, like an OTP
//! supervisor process: children report their exits to it and wait for its word
//! ([`AgentCmd`]); the group never blocks on a child, it only waits for messages (with
//! deadlines for SIGKILL), so KILL, GROUP_STOP and the kernel's shutdown always get through.
//! The agent side lives in `agents::exit`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use clove_abi::msg::{GroupChild, GroupCreateRequest, GroupInfo, GroupStrategy, RestartPolicy};
use clove_abi::{ErrorCode, WireError};
use tokio::sync::{mpsc, oneshot};

use crate::agents::{control, Agent, Agents, ExitReason, LifecycleEvent};
use crate::state::{SavedGroup, StateStore};
use crate::sync::lock;

/// The longest a group waits for a child group to stop or start before it goes on without
/// it (each level has its own SIGKILL deadlines, so this is only a backstop).
const CHILD_GROUP_BACKSTOP: Duration = Duration::from_secs(300);

/// What a group tells an agent child of it that has exited (not by KILL) and waits.
#[derive(Debug)]
pub enum AgentCmd {
    /// It will be restarted (after `backoff`): report the exit as restarting now.
    Hold {
        /// The delay before the restart.
        backoff: Duration,
    },
    /// Start its process again now, then report [`Msg::Relaunched`].
    Restart,
    /// It exits for good (its policy does not restart this exit, or the group gave up).
    Finish {
        /// The group gave up on it (its final exit is an escalation).
        escalated: bool,
    },
}

/// A child's key: an agent id or a group name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Child {
    /// An agent.
    Agent(u32),
    /// A child group.
    Group(String),
}

/// A group's mailbox.
#[derive(Debug)]
pub enum Msg {
    /// An agent joins (SPAWN with `group`), after the children the group has.
    JoinAgent {
        /// The agent.
        agent: Arc<Agent>,
        /// Where the group tells it what to do after an exit.
        cmds: mpsc::UnboundedSender<AgentCmd>,
    },
    /// A child group joins.
    JoinGroup(Arc<GroupHandle>),
    /// An agent child's process ended (not by KILL, not at shutdown); it waits for an
    /// [`AgentCmd`].
    Exited {
        /// Its id.
        id: u32,
        /// Why.
        reason: ExitReason,
        /// How long the process ran.
        uptime: Duration,
    },
    /// A child group exceeded its intensity, stopped its children and waits for a
    /// [`Msg::ParentRestart`] or [`Msg::ParentGiveUp`].
    Escalated(String),
    /// A child group stopped its children as asked ([`Msg::ParentStop`]) and waits likewise.
    Parked(String),
    /// A child started again (`ok`), or failed to and is gone.
    Relaunched {
        /// The child.
        child: Child,
        /// It runs.
        ok: bool,
    },
    /// A child is gone for good; `stopped`: the agents that ended with it.
    Gone {
        /// The child.
        child: Child,
        /// Agent ids that ended, in order.
        stopped: Vec<u32>,
    },
    /// From the parent: stop the children, keep them for a restart, report [`Msg::Parked`].
    ParentStop,
    /// From the parent: start the stopped children again, report [`Msg::Relaunched`].
    ParentRestart,
    /// From the parent: the children end for good (the parent gave up).
    ParentGiveUp,
    /// Stop the tree for good and remove the group (GROUP_STOP, the parent's stop, the
    /// kernel's shutdown); `done` gets the agents stopped.
    Shutdown(Option<oneshot::Sender<Vec<u32>>>),
}

/// A group as the rest of the kernel sees it: its name, spec and mailbox.
#[derive(Debug)]
pub struct GroupHandle {
    /// Its name.
    pub name: String,
    /// What GROUP_CREATE asked for.
    pub spec: GroupCreateRequest,
    /// The operator uid it belongs to.
    pub owner_uid: u32,
    /// Its parent, if nested.
    parent: Option<Arc<GroupHandle>>,
    tx: mpsc::UnboundedSender<Msg>,
    /// What GROUP_LIST shows, kept current by the group's task.
    view: Mutex<GroupInfo>,
}

impl GroupHandle {
    /// Sends `msg` to the group; false when its task has ended.
    pub fn send(&self, msg: Msg) -> bool {
        self.tx.send(msg).is_ok()
    }

    /// What GROUP_LIST shows.
    pub fn info(&self) -> GroupInfo {
        lock(&self.view).clone()
    }
}

/// The groups of one kernel.
#[derive(Debug)]
pub struct Groups {
    table: Mutex<Table>,
    agents: Arc<Agents>,
    /// Where group specs are saved, so a restarted kernel creates them again.
    state: Arc<StateStore>,
    /// SIGTERM → SIGKILL time of a child with no `grace_ms` in a group with no
    /// `shutdown_ms`: the kernel's `kill_grace`.
    default_grace: Duration,
    me: Weak<Groups>,
}

#[derive(Debug, Default)]
struct Table {
    by_name: HashMap<String, Arc<GroupHandle>>,
    /// Names in creation order.
    order: Vec<String>,
}

impl Groups {
    /// The groups of a kernel whose agents are `agents`.
    pub fn new(
        agents: Arc<Agents>,
        state: Arc<StateStore>,
        default_grace: Duration,
    ) -> Arc<Groups> {
        Arc::new_cyclic(|me| Groups {
            table: Mutex::new(Table::default()),
            agents,
            state,
            default_grace,
            me: me.clone(),
        })
    }

    /// GROUP_CREATE: creates the group and saves its spec (durably, before it answers), so a
    /// restarted kernel creates it again.
    pub async fn create_saved(
        &self,
        req: GroupCreateRequest,
        owner_uid: u32,
        root: bool,
    ) -> Result<GroupInfo, WireError> {
        let spec = req.clone();
        let info = self.create(req, owner_uid, root)?;
        let saved = self.state.save_group(&SavedGroup { owner_uid, spec });
        if let Err(e) = saved.await {
            if let Some(g) = self.get(&info.name) {
                let _ = self.stop(&g).await;
            }
            return Err(e);
        }
        Ok(info)
    }

    /// At start, before the saved agents come back: creates the groups an earlier kernel on
    /// this state dir saved, in creation order (parents first). A group that cannot be
    /// created again is logged and forgotten.
    pub fn restore(&self) {
        let saved = self.state.saved_groups();
        if !saved.is_empty() {
            tracing::info!("restoring {} group(s) of the previous kernel", saved.len());
        }
        for g in saved {
            match self.create(g.spec.clone(), g.owner_uid, true) {
                Ok(_) => tracing::info!(group = %g.spec.name, "restored group {:?}", g.spec.name),
                Err(e) => {
                    tracing::error!(group = %g.spec.name, "group {:?} not restored: {}; forgetting it", g.spec.name, e.message);
                    drop(self.state.forget_group(&g.spec.name));
                }
            }
        }
    }

    /// GROUP_CREATE for an operator of uid `owner_uid` (an agent's owner for agents).
    /// `root`: the caller may use any parent group.
    pub fn create(
        &self,
        req: GroupCreateRequest,
        owner_uid: u32,
        root: bool,
    ) -> Result<GroupInfo, WireError> {
        crate::agents::spawn::validate_name(&req.name)?;
        if !(req.period.is_finite() && req.period > 0.0 && req.period <= 86_400.0) {
            return Err(WireError::invalid_request(format!(
                "period {}: between 0 and 86400 seconds",
                req.period
            )));
        }
        if req.shutdown_ms.is_some_and(|ms| ms > 600_000) {
            return Err(WireError::invalid_request(
                "shutdown_ms: at most 600000 (10 minutes)",
            ));
        }
        let mut t = lock(&self.table);
        // Each group is a task and a saved row: bounded like the agents it supervises.
        if t.by_name.len() >= self.agents.host.max_agents {
            return Err(WireError::new(
                ErrorCode::LimitExceeded,
                format!(
                    "create group {:?}: {} groups exist, the configured max_agents",
                    req.name,
                    t.by_name.len()
                ),
            ));
        }
        if t.by_name.contains_key(&req.name) {
            return Err(WireError::new(
                ErrorCode::AlreadyExists,
                format!("a group named {:?} exists", req.name),
            ));
        }
        let parent = match &req.parent {
            None => None,
            Some(p) => {
                let parent = t.by_name.get(p).cloned().ok_or_else(|| {
                    WireError::new(ErrorCode::NotFound, format!("parent: no group named {p:?}"))
                })?;
                if !root && parent.owner_uid != owner_uid {
                    return Err(WireError::new(
                        ErrorCode::PermissionDenied,
                        format!("parent {p:?}: not yours"),
                    ));
                }
                Some(parent)
            }
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let shutdown_ms = req
            .shutdown_ms
            .unwrap_or(self.default_grace.as_millis() as u64);
        let handle = Arc::new(GroupHandle {
            name: req.name.clone(),
            owner_uid,
            parent: parent.clone(),
            tx,
            view: Mutex::new(GroupInfo {
                name: req.name.clone(),
                strategy: req.strategy,
                intensity: req.intensity,
                period: req.period,
                parent: req.parent.clone(),
                shutdown_ms,
                state: "running".into(),
                restarts: 0,
                children: Vec::new(),
            }),
            spec: req,
        });
        if let Some(parent) = &parent {
            if !parent.send(Msg::JoinGroup(Arc::clone(&handle))) {
                return Err(WireError::new(
                    ErrorCode::NotFound,
                    format!("parent {:?} is stopping", parent.name),
                ));
            }
        }
        t.by_name.insert(handle.name.clone(), Arc::clone(&handle));
        t.order.push(handle.name.clone());
        drop(t);
        let runner = Runner {
            handle: Arc::clone(&handle),
            groups: self
                .me
                .upgrade()
                .expect("groups outlive their handles' creation"),
            rx,
            children: Vec::new(),
            window: VecDeque::new(),
            restarts: 0,
            failures: VecDeque::new(),
            pending: Vec::new(),
            from_parent: None,
            shutdown: Vec::new(),
            stopped: Vec::new(),
            state: "running",
            shutdown_grace: Duration::from_millis(shutdown_ms),
        };
        tokio::spawn(runner.run());
        tracing::info!(
            group = %handle.name,
            strategy = handle.spec.strategy.as_str(),
            intensity = handle.spec.intensity,
            period = handle.spec.period,
            parent = ?handle.spec.parent,
            "group created"
        );
        Ok(handle.info())
    }

    /// A group by name.
    pub fn get(&self, name: &str) -> Option<Arc<GroupHandle>> {
        lock(&self.table).by_name.get(name).cloned()
    }

    /// GROUP_LIST: every group in creation order, or the one named.
    pub fn list(&self, name: Option<&str>) -> Result<Vec<GroupInfo>, WireError> {
        let t = lock(&self.table);
        match name {
            Some(n) => t
                .by_name
                .get(n)
                .map(|g| vec![g.info()])
                .ok_or_else(|| no_group(n)),
            None => Ok(t
                .order
                .iter()
                .filter_map(|n| t.by_name.get(n))
                .map(|g| g.info())
                .collect()),
        }
    }

    /// GROUP_STOP: stops the group's tree for good; the agents stopped, in order.
    pub async fn stop(&self, group: &GroupHandle) -> Result<Vec<u32>, WireError> {
        let (done, stopped) = oneshot::channel();
        if !group.send(Msg::Shutdown(Some(done))) {
            return Err(no_group(&group.name));
        }
        stopped.await.map_err(|_| no_group(&group.name))
    }

    /// The kernel's shutdown: every top-level group stops its tree (children in reverse start
    /// order, each with its grace), independent groups in parallel. Returns when all are down.
    pub async fn shutdown(&self) {
        let tops: Vec<Arc<GroupHandle>> = {
            let t = lock(&self.table);
            t.order
                .iter()
                .filter_map(|n| t.by_name.get(n))
                .filter(|g| g.parent.is_none())
                .cloned()
                .collect()
        };
        if tops.is_empty() {
            return;
        }
        tracing::info!("stopping {} group(s)", tops.len());
        let mut stops = tokio::task::JoinSet::new();
        for g in tops {
            let (done, stopped) = oneshot::channel();
            if g.send(Msg::Shutdown(Some(done))) {
                stops.spawn(async move {
                    let _ = stopped.await;
                });
            }
        }
        while stops.join_next().await.is_some() {}
    }

    /// The group is gone: out of the table, and (unless the kernel is shutting down, when
    /// it is to come back) its saved spec forgotten.
    fn remove(&self, name: &str) {
        {
            let mut t = lock(&self.table);
            t.by_name.remove(name);
            t.order.retain(|n| n != name);
        }
        if !self.agents.is_shutting_down() {
            // The request reaches the writer now; GROUP_STOP awaits its own forget.
            drop(self.state.forget_group(name));
        }
    }
}

fn no_group(name: &str) -> WireError {
    WireError::new(ErrorCode::NotFound, format!("no group named {name:?}"))
}

/// Where a child stands, as its group sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    /// Running.
    Running,
    /// The group asked it to stop (for a restart).
    Stopping,
    /// Stopped (by its own exit or the group), waiting for the group's word.
    Waiting,
    /// Being started again.
    Starting,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Stopping => "stopping",
            Status::Waiting => "waiting",
            Status::Starting => "starting",
        }
    }
}

#[derive(Debug, Clone)]
enum Kind {
    Agent {
        agent: Arc<Agent>,
        cmds: mpsc::UnboundedSender<AgentCmd>,
    },
    Group(Arc<GroupHandle>),
}

#[derive(Debug)]
struct Slot {
    child: Child,
    kind: Kind,
    status: Status,
}

/// A restart decided and not carried out yet: `set` starts again (in start order) at `due`.
#[derive(Debug)]
struct Pending {
    set: Vec<Child>,
    due: Instant,
}

/// What the parent said last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FromParent {
    Stop,
    Restart,
    GiveUp,
}

/// One group's task.
struct Runner {
    handle: Arc<GroupHandle>,
    groups: Arc<Groups>,
    rx: mpsc::UnboundedReceiver<Msg>,
    /// In start order.
    children: Vec<Slot>,
    /// When the restarts within the period happened.
    window: VecDeque<Instant>,
    restarts: u32,
    /// Children that failed and wait for a decision, in order.
    failures: VecDeque<Child>,
    pending: Vec<Pending>,
    from_parent: Option<FromParent>,
    /// Pending GROUP_STOP / shutdown requests (`None`: from the parent).
    shutdown: Vec<Option<oneshot::Sender<Vec<u32>>>>,
    /// Agents that ended for good while stopping, in order.
    stopped: Vec<u32>,
    state: &'static str,
    shutdown_grace: Duration,
}

impl Runner {
    async fn run(mut self) {
        loop {
            if self.stopping() {
                self.stop_for_good().await;
                return;
            }
            if self.from_parent == Some(FromParent::Stop) {
                self.from_parent = None;
                self.park_all().await;
                self.tell_parent(Msg::Parked(self.handle.name.clone()));
                if !self.await_parent().await {
                    return;
                }
                continue;
            }
            // A restart or give-up from the parent only means something while parked.
            self.from_parent = None;
            if let Some(child) = self.failures.pop_front() {
                if !self.handle_failure(child).await {
                    return;
                }
                continue;
            }
            if let Some(i) = self.due_now() {
                let p = self.pending.remove(i);
                self.start_set(&p.set).await;
                continue;
            }
            let until = self.pending.iter().map(|p| p.due).min();
            self.recv(until).await;
        }
    }

    /// A GROUP_STOP, the parent's give-up, or the kernel's shutdown is in.
    fn stopping(&self) -> bool {
        !self.shutdown.is_empty() || self.from_parent == Some(FromParent::GiveUp)
    }

    /// Something that ends the current restart early came in.
    fn interrupted(&self) -> bool {
        self.stopping() || self.from_parent == Some(FromParent::Stop)
    }

    fn due_now(&self) -> Option<usize> {
        let now = Instant::now();
        self.pending.iter().position(|p| p.due <= now)
    }

    fn index(&self, child: &Child) -> Option<usize> {
        self.children.iter().position(|s| &s.child == child)
    }

    fn status(&self, child: &Child) -> Option<Status> {
        self.index(child).map(|i| self.children[i].status)
    }

    fn set_status(&mut self, child: &Child, status: Status) {
        if let Some(i) = self.index(child) {
            self.children[i].status = status;
        }
    }

    fn remove_child(&mut self, child: &Child) {
        self.children.retain(|s| &s.child != child);
        self.failures.retain(|c| c != child);
        for p in &mut self.pending {
            p.set.retain(|c| c != child);
        }
        self.pending.retain(|p| !p.set.is_empty());
    }

    /// Receives and applies one message; false when `until` passed first. The mailbox never
    /// closes while the handle (in the table, or held by the caller) lives; when it does,
    /// the group behaves as stopped.
    async fn recv(&mut self, until: Option<Instant>) -> bool {
        let msg = match until {
            None => self.rx.recv().await,
            Some(t) => {
                match tokio::time::timeout_at(tokio::time::Instant::from_std(t), self.rx.recv())
                    .await
                {
                    Ok(m) => m,
                    Err(_) => return false,
                }
            }
        };
        match msg {
            Some(m) => self.apply(m),
            None => self.shutdown.push(None),
        }
        self.publish();
        true
    }

    /// Receives messages until `done` holds for this group or `until` passes; whether `done`
    /// holds.
    async fn pump(&mut self, until: Instant, done: impl Fn(&Runner) -> bool) -> bool {
        while !done(self) {
            if !self.recv(Some(until)).await {
                return done(self);
            }
        }
        true
    }

    fn apply(&mut self, msg: Msg) {
        match msg {
            Msg::JoinAgent { agent, cmds } => self.children.push(Slot {
                child: Child::Agent(agent.id),
                kind: Kind::Agent { agent, cmds },
                status: Status::Running,
            }),
            Msg::JoinGroup(g) => self.children.push(Slot {
                child: Child::Group(g.name.clone()),
                kind: Kind::Group(g),
                status: Status::Running,
            }),
            Msg::Exited { id, reason, uptime } => {
                let child = Child::Agent(id);
                let Some(i) = self.index(&child) else {
                    return;
                };
                let slot = &mut self.children[i];
                let was = slot.status;
                slot.status = Status::Waiting;
                let Kind::Agent { agent, cmds } = &slot.kind else {
                    return;
                };
                if was == Status::Stopping {
                    // Stopped by the group for a restart it is carrying out.
                    return;
                }
                if !super::restart::wants_restart(agent.spec.restart_policy, &reason)
                    || agent.relaunch.is_none()
                {
                    let _ = cmds.send(AgentCmd::Finish { escalated: false });
                    self.remove_child(&child);
                    return;
                }
                tracing::debug!(group = %self.handle.name, agent = id, ?uptime, "child failed: {}", reason.describe());
                self.failures.push_back(child);
            }
            Msg::Escalated(name) => {
                let child = Child::Group(name);
                if self.index(&child).is_some() {
                    self.set_status(&child, Status::Waiting);
                    self.failures.push_back(child);
                }
            }
            Msg::Parked(name) => self.set_status(&Child::Group(name), Status::Waiting),
            Msg::Relaunched { child, ok } => {
                if ok {
                    self.set_status(&child, Status::Running);
                } else {
                    self.remove_child(&child);
                }
            }
            Msg::Gone { child, stopped } => {
                // What a stop of the tree ended (a KILL before it is not part of it).
                if self.state == "stopping" {
                    if let Child::Agent(id) = child {
                        if self.index(&child).is_some() {
                            self.stopped.push(id);
                        }
                    }
                    self.stopped.extend(stopped);
                }
                self.remove_child(&child);
            }
            Msg::ParentStop => self.from_parent = Some(FromParent::Stop),
            Msg::ParentRestart => {
                if self.from_parent != Some(FromParent::GiveUp) {
                    self.from_parent = Some(FromParent::Restart);
                }
            }
            Msg::ParentGiveUp => self.from_parent = Some(FromParent::GiveUp),
            Msg::Shutdown(done) => self.shutdown.push(done),
        }
    }

    /// Keeps GROUP_LIST's view current.
    fn publish(&self) {
        let children = self
            .children
            .iter()
            .map(|s| match &s.kind {
                Kind::Agent { agent, .. } => GroupChild {
                    kind: "agent".into(),
                    id: Some(agent.id),
                    name: agent.name.clone(),
                    state: s.status.as_str().into(),
                },
                Kind::Group(g) => GroupChild {
                    kind: "group".into(),
                    id: None,
                    name: g.name.clone(),
                    state: s.status.as_str().into(),
                },
            })
            .collect();
        let mut view = lock(&self.handle.view);
        view.children = children;
        view.state = self.state.into();
        view.restarts = self.restarts;
    }

    fn tell_parent(&self, msg: Msg) {
        if let Some(p) = &self.handle.parent {
            p.send(msg);
        }
    }

    /// A child that failed: within the intensity, the strategy's set of children is stopped
    /// and its restart scheduled after the failed agent's backoff; beyond it, the group
    /// escalates. False when the group's task ends.
    async fn handle_failure(&mut self, child: Child) -> bool {
        let Some(i) = self.index(&child) else {
            return true;
        };
        if self.children[i].status != Status::Waiting {
            // Started again meanwhile (as part of an earlier set).
            return true;
        }
        let now = Instant::now();
        let period = Duration::from_secs_f64(self.handle.spec.period);
        while self
            .window
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= period)
        {
            self.window.pop_front();
        }
        if self.window.len() >= self.handle.spec.intensity as usize {
            return self.escalate().await;
        }
        self.window.push_back(now);
        self.restarts += 1;
        let set: Vec<Child> = match self.handle.spec.strategy {
            GroupStrategy::OneForOne => vec![child.clone()],
            GroupStrategy::OneForAll => self.children.iter().map(|s| s.child.clone()).collect(),
            GroupStrategy::RestForOne => {
                self.children[i..].iter().map(|s| s.child.clone()).collect()
            }
        };
        let backoff = match &self.children[i].kind {
            Kind::Agent { agent, cmds } => {
                let backoff = agent.group_backoff(period);
                let _ = cmds.send(AgentCmd::Hold { backoff });
                backoff
            }
            Kind::Group(_) => Duration::ZERO,
        };
        tracing::info!(
            group = %self.handle.name,
            strategy = self.handle.spec.strategy.as_str(),
            "restart {} ({} child(ren)) in {backoff:?}",
            self.restarts,
            set.len()
        );
        // A later restart that covers children of an earlier one takes them over (they start
        // in this one's order).
        for p in &mut self.pending {
            p.set.retain(|c| !set.contains(c));
        }
        self.pending.retain(|p| !p.set.is_empty());
        self.state = "restarting";
        self.publish();
        for c in set.iter().rev() {
            if self.interrupted() {
                break;
            }
            if c != &child {
                self.stop_child(c, Some(backoff)).await;
            }
        }
        self.pending.push(Pending {
            set,
            due: Instant::now() + backoff,
        });
        true
    }

    /// Stops a running child of a restart set (in reverse start order); it waits for the
    /// group's word. `hold`: the restart is decided, in that long (the agent reports its exit
    /// as restarting); `None` when nothing is decided yet (an escalation). A temporary agent
    /// (`never`) is stopped for good instead, as in OTP.
    async fn stop_child(&mut self, child: &Child, hold: Option<Duration>) {
        let Some(i) = self.index(child) else { return };
        if self.children[i].status != Status::Running {
            return;
        }
        match &self.children[i].kind {
            Kind::Agent { agent, .. } if agent.spec.restart_policy == RestartPolicy::Never => {
                let agent = Arc::clone(agent);
                self.kill_agent(&agent).await;
            }
            Kind::Agent { agent, cmds } => {
                let (agent, cmds) = (Arc::clone(agent), cmds.clone());
                self.children[i].status = Status::Stopping;
                self.publish();
                let grace = control::grace_of(&agent, self.shutdown_grace);
                control::terminate(&agent).await;
                let gone = |r: &Runner| r.status(child) != Some(Status::Stopping);
                if !self.pump(Instant::now() + grace, gone).await {
                    tracing::info!(group = %self.handle.name, agent = agent.id, "no exit within {grace:?} of SIGTERM; SIGKILL");
                    control::force(&agent).await;
                    if !self
                        .pump(Instant::now() + control::AFTER_SIGKILL, gone)
                        .await
                    {
                        tracing::error!(group = %self.handle.name, agent = agent.id, "still running {:?} after SIGKILL; leaving it out of the restart", control::AFTER_SIGKILL);
                        self.set_status(child, Status::Running);
                        return;
                    }
                }
                if let (Some(backoff), Some(Status::Waiting)) = (hold, self.status(child)) {
                    let _ = cmds.send(AgentCmd::Hold { backoff });
                }
            }
            Kind::Group(g) => {
                let g = Arc::clone(g);
                self.children[i].status = Status::Stopping;
                self.publish();
                g.send(Msg::ParentStop);
                let parked = |r: &Runner| r.status(child) != Some(Status::Stopping);
                if !self
                    .pump(Instant::now() + CHILD_GROUP_BACKSTOP, parked)
                    .await
                {
                    tracing::error!(group = %self.handle.name, child = %g.name, "child group did not stop within {CHILD_GROUP_BACKSTOP:?}");
                }
            }
        }
    }

    /// Stops `agent` for good (KILL's path) and waits for it to leave.
    async fn kill_agent(&mut self, agent: &Arc<Agent>) {
        let child = Child::Agent(agent.id);
        let grace = control::grace_of(agent, self.shutdown_grace);
        control::begin_kill(agent).await;
        let gone = |r: &Runner| r.index(&child).is_none();
        if !self.pump(Instant::now() + grace, gone).await {
            control::force(agent).await;
            if !self
                .pump(Instant::now() + control::AFTER_SIGKILL, gone)
                .await
            {
                tracing::error!(group = %self.handle.name, agent = agent.id, "still running {:?} after SIGKILL", control::AFTER_SIGKILL);
                self.remove_child(&child);
            }
        }
    }

    /// Starts the waiting children of `set` again, in start order, one after the other.
    async fn start_set(&mut self, set: &[Child]) {
        self.state = "restarting";
        self.publish();
        for c in set {
            if self.interrupted() {
                break;
            }
            self.start_child(c).await;
        }
        self.state = "running";
        self.publish();
    }

    async fn start_child(&mut self, child: &Child) {
        let Some(i) = self.index(child) else { return };
        if self.children[i].status != Status::Waiting {
            return;
        }
        let sent = match &self.children[i].kind {
            Kind::Agent { cmds, .. } => cmds.send(AgentCmd::Restart).is_ok(),
            Kind::Group(g) => g.send(Msg::ParentRestart),
        };
        if !sent {
            self.remove_child(child);
            return;
        }
        self.children[i].status = Status::Starting;
        self.publish();
        let started = |r: &Runner| r.status(child) != Some(Status::Starting);
        if !self
            .pump(Instant::now() + CHILD_GROUP_BACKSTOP, started)
            .await
        {
            tracing::error!(group = %self.handle.name, ?child, "child did not start within {CHILD_GROUP_BACKSTOP:?}");
        }
    }

    /// Stops every running child for a restart, in reverse start order.
    async fn park_all(&mut self) {
        self.state = "waiting";
        self.pending.clear();
        self.publish();
        let all: Vec<Child> = self.children.iter().map(|s| s.child.clone()).collect();
        for c in all.iter().rev() {
            if self.stopping() {
                break;
            }
            self.stop_child(c, None).await;
        }
    }

    /// More restarts than the intensity allows: stop everything and escalate to the parent;
    /// at the top, give up. False when the task ends.
    async fn escalate(&mut self) -> bool {
        let spec = &self.handle.spec;
        let gave_up = self.handle.parent.is_none();
        tracing::warn!(
            group = %self.handle.name,
            "more than {} restart(s) within {}s; stopping its children and {}",
            spec.intensity,
            spec.period,
            if gave_up { "giving up" } else { "escalating to its parent" }
        );
        self.groups.agents.notify(LifecycleEvent::GroupEscalated {
            group: self.handle.name.clone(),
            parent: spec.parent.clone(),
            restarts: self.restarts,
            intensity: spec.intensity,
            period: spec.period,
            gave_up,
        });
        self.failures.clear();
        self.park_all().await;
        if gave_up {
            self.give_up().await;
            return false;
        }
        self.tell_parent(Msg::Escalated(self.handle.name.clone()));
        self.await_parent().await
    }

    /// Parked: waits for the parent's restart or give-up (or a stop). False when the task
    /// ends.
    async fn await_parent(&mut self) -> bool {
        loop {
            if self.stopping() {
                if self.from_parent == Some(FromParent::GiveUp) && self.shutdown.is_empty() {
                    self.give_up().await;
                    return false;
                }
                // The run loop stops the tree.
                return true;
            }
            match self.from_parent.take() {
                Some(FromParent::Restart) => {
                    self.window.clear();
                    self.failures.clear();
                    let all: Vec<Child> = self.children.iter().map(|s| s.child.clone()).collect();
                    self.start_set(&all).await;
                    self.tell_parent(Msg::Relaunched {
                        child: Child::Group(self.handle.name.clone()),
                        ok: true,
                    });
                    return true;
                }
                Some(FromParent::Stop) => {
                    self.park_all().await;
                    self.tell_parent(Msg::Parked(self.handle.name.clone()));
                }
                _ => {}
            }
            self.recv(None).await;
        }
    }

    /// The group gave up (or its parent did): the waiting agents exit for good (escalated),
    /// child groups give up likewise, and the group is removed.
    async fn give_up(&mut self) {
        self.state = "stopping";
        self.publish();
        while let Some((child, kind, status)) = self
            .children
            .last()
            .map(|s| (s.child.clone(), s.kind.clone(), s.status))
        {
            match kind {
                Kind::Agent { cmds, .. } if status == Status::Waiting => {
                    let _ = cmds.send(AgentCmd::Finish { escalated: true });
                }
                // Not stopped (it did not die within the SIGKILL deadline): KILL's path.
                Kind::Agent { agent, .. } => self.kill_agent(&agent).await,
                Kind::Group(g) => {
                    g.send(Msg::ParentGiveUp);
                }
            }
            self.remove_child(&child);
        }
        self.groups.remove(&self.handle.name);
        tracing::warn!(group = %self.handle.name, "group gave up; its agents have exited");
        for done in self.shutdown.drain(..).flatten() {
            let _ = done.send(std::mem::take(&mut self.stopped));
        }
    }

    /// GROUP_STOP / the parent's stop / the kernel's shutdown: every child ends for good, in
    /// reverse start order (agents with their grace, child groups their whole tree), then the
    /// group is removed.
    async fn stop_for_good(&mut self) {
        if self.from_parent == Some(FromParent::GiveUp) && self.shutdown.is_empty() {
            self.give_up().await;
            return;
        }
        self.state = "stopping";
        self.pending.clear();
        self.failures.clear();
        self.publish();
        tracing::info!(group = %self.handle.name, "stopping the group's tree");
        while let Some((child, kind)) = self
            .children
            .last()
            .map(|s| (s.child.clone(), s.kind.clone()))
        {
            match kind {
                Kind::Agent { agent, .. } => self.kill_agent(&agent).await,
                Kind::Group(g) => {
                    g.send(Msg::Shutdown(None));
                    let gone = |r: &Runner| r.index(&child).is_none();
                    if !self.pump(Instant::now() + CHILD_GROUP_BACKSTOP, gone).await {
                        tracing::error!(group = %self.handle.name, child = %g.name, "child group not down within {CHILD_GROUP_BACKSTOP:?}");
                    }
                }
            }
            // Whatever happened, this child is done with.
            self.remove_child(&child);
        }
        self.groups.remove(&self.handle.name);
        let stopped = std::mem::take(&mut self.stopped);
        self.tell_parent(Msg::Gone {
            child: Child::Group(self.handle.name.clone()),
            stopped: stopped.clone(),
        });
        for done in self.shutdown.drain(..).flatten() {
            let _ = done.send(stopped.clone());
        }
        tracing::info!(group = %self.handle.name, "group stopped");
    }
}

/// What GROUP_ESCALATED carries (see [`LifecycleEvent::GroupEscalated`]).
pub fn escalated_event(
    group: &str,
    parent: Option<&str>,
    restarts: u32,
    intensity: u32,
    period: f64,
    gave_up: bool,
) -> serde_json::Value {
    serde_json::json!({
        "group": group, "parent": parent, "restarts": restarts, "intensity": intensity,
        "period": period, "gave_up": gave_up,
        "message": if gave_up {
            format!("group {group} exceeded {intensity} restart(s) in {period}s and gave up; its agents have exited")
        } else {
            format!("group {group} exceeded {intensity} restart(s) in {period}s; escalated to {}", parent.unwrap_or("-"))
        },
    })
}
