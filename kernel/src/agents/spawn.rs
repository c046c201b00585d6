//! SPAWN: resolve the request against its caller ([`resolve`]), prepare the agent's id,
//! directory, socket and plan once ([`start`], which also brings back the agents an earlier
//! kernel saved, see [`super::restore`]), then launch its process ([`launch`]: cgroup, clone,
//! placement, release; a restart repeats only this step, with the same id), and register it.
//!
//! The order matters. The name is reserved first (two concurrent SPAWNs of one name: one
//! wins). The spec of an agent that a restarted kernel brings back is durable before its
//! process is launched. The cgroup is made while the launcher clones the process, and the
//! process is placed in it before it runs anything of the agent (init sets up the sandbox
//! meanwhile, but forks the agent only after `release`), so no agent code ever runs outside
//! its limits. Every failure undoes what was done, so a failed SPAWN leaves nothing behind.

use std::fs;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use clove_abi::msg::{
    AgentState, CgroupStatus, CgroupVersion, Isolation, Limits, Namespaces, RestartPolicy,
    SpawnReply, SpawnRequest, SpawnStatus,
};
use clove_abi::{ErrorCode, WireError};
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;

use super::logs::{AgentLog, LOG_MAX_BYTES};
use super::plan::{self, Plan, PlanBind, PlanInput, Program};
use super::{control, exit, Agent, Agents, LifecycleEvent, Run};
use crate::kernel::{Caller, Kernel};
use crate::sandbox::cgroup::{AgentCgroup, CgroupLimits};
use crate::sandbox::interpreter::Interpreter;
use crate::sandbox::launch::{LaunchSpec, ProcessSpec};
use crate::sandbox::mounts::{BindMount, NewFile, RootPlan};
use crate::sandbox::privileges::{LandlockStatus, Lockdown, Rlimits};
use crate::server::Identity;
use crate::state::{SavedAgent, StateStore};
use crate::supervisor::group::{GroupHandle, Msg};
use crate::supervisor::restart::Supervision;

/// Bytes of the private /tmp and /dev/shm of a sandbox.
const TMP_SIZE: u64 = 64 << 20;
/// RLIMIT_NOFILE of an agent.
const AGENT_NOFILE: u64 = 1024;
/// Longest agent name.
const NAME_MAX: usize = 128;
/// The line a restored agent's log gets before the output of its first run under the new
/// kernel (like the restart markers of `exit`).
pub const RESTORED_MARKER: &str = "--- clove: restored after a kernel restart ---";
/// The sandboxes' shared root mount point in the agents directory (a name no agent id has).
pub(crate) const SANDBOX_ROOT: &str = "sandbox-root";
/// The next agent's directory, made ahead of time in the agents directory (a name no agent id
/// has; see [`make_spare`]).
const SPARE: &str = ".spare";

fn invalid(why: impl std::fmt::Display) -> WireError {
    WireError::invalid_request(why)
}

fn internal(why: impl std::fmt::Display) -> WireError {
    WireError::new(ErrorCode::Internal, why.to_string())
}

/// What a restart needs to start an agent's process again: what SPAWN validated and prepared
/// once (program, script copy, plan, limits). Kept only for agents whose policy restarts them.
#[derive(Debug)]
pub struct Launchable {
    sandboxed: bool,
    gid: u32,
    plan: Plan,
    limits: Limits,
    new_root: PathBuf,
}

/// One started process, and the pipe its sandbox's init reports its exit on.
pub(crate) struct Launched {
    pub run: Run,
    pub report: Option<OwnedFd>,
}

/// A SPAWN request resolved against its caller: nothing in it depends on the caller any
/// more (its cwd, its view), so the same agent can be started again from it by a later
/// kernel ([`super::restore`]).
pub(crate) struct Resolved {
    /// The request, with `script` the absolute host path of the script.
    pub req: SpawnRequest,
    script: PathBuf,
    limits: Limits,
    binds: Vec<(PathBuf, PathBuf, bool)>,
    program: Option<ResolvedProgram>,
    parent: Option<Arc<Agent>>,
    owner_uid: u32,
}

/// Where an agent comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// SPAWN: a new id.
    Spawn,
    /// An agent of an earlier kernel on this state dir, brought back with its id, and with
    /// its uid unless another live agent has that one.
    Restored {
        /// Its id.
        id: u32,
        /// The uid it had.
        uid: u32,
    },
}

/// Starts an agent for `caller`: the request is resolved against the caller ([`resolve`]),
/// then started ([`start`]: preparation once per agent, then the launch of its first
/// process, [`launch`], which every restart repeats).
pub async fn spawn(
    kernel: &Kernel,
    caller: &Caller,
    req: SpawnRequest,
) -> Result<SpawnReply, WireError> {
    let agents = &kernel.agents;
    let parent = if caller.agent {
        Some(agents.get(caller.id).ok_or_else(|| {
            WireError::new(
                ErrorCode::NotFound,
                format!("spawning agent {} has exited", caller.id),
            )
        })?)
    } else {
        None
    };
    let owner_uid = match &parent {
        Some(p) => p.owner_uid,
        None => caller.uid,
    };
    let resolved = resolve(agents, req, parent, caller.pid, owner_uid).await?;
    start(kernel, resolved, Origin::Spawn).await
}

/// Validates `req` and resolves it: the script as an absolute host path (a relative one
/// against the working directory of process `caller_pid`, a sandboxed parent's through its
/// view), the binds, the limits and the program.
pub(crate) async fn resolve(
    agents: &Agents,
    mut req: SpawnRequest,
    parent: Option<Arc<Agent>>,
    caller_pid: Option<i32>,
    owner_uid: u32,
) -> Result<Resolved, WireError> {
    validate_name(&req.name)?;
    // What it may do, fixed now: the saved spec carries the grant, not the request.
    req.permissions = Some(crate::perms::grant(parent.as_deref(), &req)?);
    req.level = None;
    // A sandboxed parent names paths as it sees them; the child gets only what it can see.
    let view = parent.as_ref().and_then(|p| p.view.as_deref());
    let script = resolve_script(&req.script, caller_pid, view)?;
    let limits = req.limits();
    validate_limits(&limits)?;
    let binds = validate_binds(&req, view)?;
    let program = resolve_program(agents, &req).await?;
    req.script = script.to_string_lossy().into_owned();
    Ok(Resolved {
        req,
        script,
        limits,
        binds,
        program,
        parent,
        owner_uid,
    })
}

/// Starts a resolved agent: SPAWN's and the restore's shared path. Reserves the name, takes
/// the id (a new one, or the restored agent's), the uid, the directory (a restored agent's
/// is there already: its work dir and log go on), the socket and the plan; saves the spec of
/// an operator's agent whose policy restarts it, durably, before its process is launched;
/// then launches the first process and registers the agent.
pub(crate) async fn start(
    kernel: &Kernel,
    resolved: Resolved,
    origin: Origin,
) -> Result<SpawnReply, WireError> {
    let agents = &kernel.agents;
    let Resolved {
        req,
        script,
        limits,
        binds,
        program,
        parent,
        owner_uid,
    } = resolved;
    let group = match &req.group {
        Some(name) => Some(join_check(kernel, name, owner_uid)?),
        None => None,
    };
    let t0 = Instant::now();
    // Meanwhile the directories are made and init is cloned.
    warm_placement(agents);
    let (id, earlier_uid) = match origin {
        Origin::Spawn => (kernel.ids.allocate(), None),
        Origin::Restored { id, uid } => (id, Some(uid)),
    };
    agents.reserve(&req.name, id)?;
    let name = req.name.clone();
    let mut undo = Undo::new(agents, &name, id);

    // Identity: sandboxed agents get their own uid, others keep the kernel's. A restart keeps
    // the uid (the agent stays in the live table, so nobody else takes it meanwhile).
    let sandboxed = req.sandboxed && agents.host.root;
    let (uid, gid) = if sandboxed {
        let mut uid = earlier_uid.unwrap_or_else(|| agents.host.uids.uid(id));
        while agents.uid_in_use(uid) {
            uid = agents.host.uids.uid(uid.wrapping_add(1));
        }
        (uid, uid)
    } else {
        (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        )
    };

    // What a restarted kernel needs to bring the agent back, saved for an operator's agent
    // whose policy restarts it (a child agent is spawned again by its parent when that comes
    // back). The write goes to the store now and is awaited before the launch, so its fsync
    // overlaps the preparation below; a failed SPAWN forgets it again.
    let saving = (parent.is_none()
        && req.restart_policy != RestartPolicy::Never
        && earlier_uid != Some(uid))
    .then(|| {
        undo.saved = Some(kernel.state.as_ref());
        kernel.state.save_agent(&SavedAgent {
            id,
            owner_uid,
            uid,
            spec: req.clone(),
        })
    });
    if origin != Origin::Spawn {
        // A restored agent's spec is kept when it cannot start (see `restore`).
        undo.saved = None;
    }

    // The agent's directory: work dir, socket, log. All of it outlives restarts, and a
    // restored agent's outlived the kernel: a failed restore leaves it for `restore` to deal
    // with.
    let dir = agents.host.dir.join(id.to_string());
    if origin == Origin::Spawn {
        undo.dir = Some(dir.clone());
    }
    let work = dir.join("work");
    // The host directory init mounts the sandbox's root tmpfs over, in its own mount
    // namespace (so the host copy stays empty): one for every sandbox, made by the first.
    let new_root = agents.host.dir.join(SANDBOX_ROOT);
    let socket_path = dir.join("clove.sock");
    let script_copy = dir
        .join("script")
        .join(script.file_name().unwrap_or_default());
    // A fresh agent takes the directory made ahead of time, if there is one: one rename
    // instead of three new inodes.
    let took_spare = origin == Origin::Spawn && take_spare(&agents.host.dir, &dir);
    if !took_spare {
        make_dir(&dir, 0o711)?;
        make_private_dir(&work)?;
    }
    make_private_dir(&new_root)?;
    chown(&work, uid, gid)?;
    if let (Some(disk), true) = (limits.disk, agents.host.root) {
        mount_work_tmpfs(&work, disk.bytes(), uid, gid)?;
        undo.work_mount = Some(work.clone());
    }
    let listener = bind_agent_socket(&socket_path, uid, gid)?;
    let log = AgentLog::create(&dir, LOG_MAX_BYTES)
        .map_err(|e| internal(format!("create the log in {}: {e}", dir.display())))?;
    if origin != Origin::Spawn {
        if let Err(e) = log.note(RESTORED_MARKER) {
            tracing::warn!(agent = id, "write the restore marker: {e}");
        }
    }

    let pythonpath = std::env::var("PYTHONPATH").ok();
    let plan = plan::plan(&PlanInput {
        id,
        name: &req.name,
        script: &script,
        sandboxed,
        program: program.as_ref().map(ResolvedProgram::as_program),
        args: &req.args,
        env: &req.env,
        binds: &binds,
        kernel_socket: &kernel.config.socket,
        agent_socket: &socket_path,
        work_dir: &work,
        script_copy: &script_copy,
        uid,
        gid,
        pythonpath: pythonpath.as_deref(),
    });
    if let Some(copy) = &plan.script_copy {
        copy_script(&script, copy, uid, gid)?;
    }
    if let Some(saving) = saving {
        saving.await?;
    }
    let t_prepared = t0.elapsed();
    let launchable = Launchable {
        sandboxed,
        gid,
        plan,
        limits,
        new_root,
    };
    let parent_cg = parent.as_ref().and_then(|p| p.cgroup());
    let Launched { run, report } = launch(
        agents,
        id,
        &req,
        &launchable,
        uid,
        parent_cg,
        &log,
        undo.work_mount.is_some(),
        t0,
        t_prepared,
    )
    .await?;

    let isolation = run.isolation.clone();
    let pid = run.pid;
    let socket_stop = CancellationToken::new();
    let view = sandboxed.then(|| {
        launchable
            .plan
            .binds
            .iter()
            .filter(|b| b.source != socket_path)
            .cloned()
            .collect()
    });
    let agent = Arc::new(Agent {
        id,
        name: req.name.clone(),
        uid,
        owner_uid,
        parent: parent.as_ref().map(|p| p.id),
        supervision: std::sync::Mutex::new(Supervision::new(&req)),
        // Only what a restart needs is kept, and only when one can happen.
        relaunch: (req.restart_policy != RestartPolicy::Never).then_some(launchable),
        group: group.clone(),
        perms: std::sync::Mutex::new(req.permissions.clone().unwrap_or_default()),
        spec: req.clone(),
        dir: dir.clone(),
        work_mount: undo.work_mount.take(),
        view,
        log,
        socket_stop: socket_stop.clone(),
        run: std::sync::Mutex::new(Arc::new(run)),
        state: std::sync::Mutex::new(AgentState::Running),
        exit: tokio::sync::watch::channel(None).0,
        killing: std::sync::atomic::AtomicBool::new(false),
        stop: CancellationToken::new(),
    });
    undo.disarm();
    agents.insert(Arc::clone(&agent));
    if let Some(listeners) = kernel.listeners.get() {
        listeners.listen(listener, Identity::Agent(id), socket_stop);
    }
    // The group hears of its new child before the child can exit.
    let cmds = match &group {
        Some(g) => {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            if !g.send(Msg::JoinAgent {
                agent: Arc::clone(&agent),
                cmds: tx,
            }) {
                // The group was stopped while the agent was launched: it goes with it.
                exit::watch(Arc::clone(&kernel.agents), Arc::clone(&agent), report, None);
                let _ = control::kill(&agent, std::time::Duration::ZERO).await;
                return Err(WireError::new(
                    ErrorCode::NotFound,
                    format!(
                        "group {:?} was stopped while {:?} started",
                        g.name, req.name
                    ),
                ));
            }
            Some(rx)
        }
        None => None,
    };
    exit::watch(Arc::clone(&kernel.agents), Arc::clone(&agent), report, cmds);
    agents.notify(LifecycleEvent::Spawned {
        id,
        name: req.name.clone(),
        pid,
        restarts: 0,
    });
    tracing::info!(
        agent = id,
        name = %req.name,
        pid,
        uid,
        sandboxed,
        not_applied = ?isolation.not_applied,
        "agent started"
    );
    if origin == Origin::Spawn {
        // Off SPAWN's path: the next one takes it.
        let agents_dir = agents.host.dir.clone();
        drop(tokio::task::spawn_blocking(move || make_spare(&agents_dir)));
    }
    Ok(SpawnReply {
        id,
        name: req.name,
        pid,
        status: SpawnStatus::Running,
        restart_policy: req.restart_policy,
        isolation,
    })
}

/// The group a SPAWN names, if the caller (owning `owner_uid`'s agents) may add to it.
fn join_check(kernel: &Kernel, name: &str, owner_uid: u32) -> Result<Arc<GroupHandle>, WireError> {
    let group = kernel.groups.get(name).ok_or_else(|| {
        invalid(format!(
            "group {name:?}: no such group (create it first with GROUP_CREATE)"
        ))
    })?;
    if owner_uid != 0 && group.owner_uid != owner_uid {
        return Err(WireError::new(
            ErrorCode::PermissionDenied,
            format!("group {name:?}: not yours"),
        ));
    }
    Ok(group)
}

/// Moves the spare agent directory (see [`make_spare`]) to `dir`; `false` when there was
/// none (or `dir` is taken), and then nothing changed.
fn take_spare(agents_dir: &Path, dir: &Path) -> bool {
    fs::rename(agents_dir.join(SPARE), dir).is_ok()
}

/// Makes the next agent's directory ahead of time, as SPAWN would make it (the directory,
/// 0711; its `work`, 0700; an empty log), in the agents directory as [`SPARE`]. On a file
/// system slow to allocate inodes this takes the allocations off SPAWN's path: ext4 without
/// a journal skips every inode deleted in the last half minute, one buffer lookup each, and
/// after many deletions (expired agents, other users) each new inode cost 0.75 ms of CPU.
/// Built under a temporary name and renamed into place, so a SPAWN only ever takes a
/// complete one; a spare left by an earlier kernel is set aside with its other leftovers.
fn make_spare(agents_dir: &Path) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let spare = agents_dir.join(SPARE);
    if spare.exists() {
        return;
    }
    let building = agents_dir.join(format!(
        "{SPARE}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let made = make_dir(&building, 0o711)
        .and_then(|()| make_private_dir(&building.join("work")))
        .and_then(|()| {
            AgentLog::prepare(&building)
                .map_err(|e| internal(format!("create the log in {}: {e}", building.display())))
        })
        .and_then(|()| {
            // Fails when another spare got there first; this one is then not needed.
            fs::rename(&building, &spare)
                .map_err(|e| internal(format!("rename {}: {e}", building.display())))
        });
    if let Err(e) = made {
        tracing::debug!("make the spare agent directory: {}", e.message);
        let _ = fs::remove_dir_all(&building);
    }
}

/// The placement in [`launch`] first waits for an RCU grace period (cgroup v1): this starts
/// one on a blocking thread ([`PlacementWarmer::warm`]) and returns at once, so that the
/// placement finds it under way or passed. SPAWN and a restart call it as they begin.
///
/// [`PlacementWarmer::warm`]: crate::sandbox::cgroup::PlacementWarmer::warm
pub(crate) fn warm_placement(agents: &Agents) {
    if let Some(warmer) = agents
        .host
        .cgroups
        .as_ref()
        .and_then(|c| c.placement_warmer())
    {
        drop(tokio::task::spawn_blocking(move || warmer.warm()));
    }
}

/// Starts one process of agent `id` from what SPAWN prepared: its log pipe, its cgroup (made
/// while the process is cloned), the clone, the placement in the cgroup, the release. SPAWN
/// calls it once, each restart again, with the same id, directory, uid and plan. A failure
/// leaves no process and no cgroup behind.
#[allow(clippy::too_many_arguments)] // SPAWN and the restarter; each argument is its own thing
pub(crate) async fn launch(
    agents: &Agents,
    id: u32,
    req: &SpawnRequest,
    l: &Launchable,
    uid: u32,
    parent_cg: Option<AgentCgroup>,
    log: &Arc<AgentLog>,
    work_mounted: bool,
    t0: Instant,
    t_prepared: std::time::Duration,
) -> Result<Launched, WireError> {
    let (log_read, log_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| internal(format!("log pipe: {e}")))?;
    let root = agents.host.root;
    let sandboxed = l.sandboxed;
    let spec = launch_spec(
        req,
        sandboxed,
        root,
        &l.plan,
        &l.new_root,
        uid,
        l.gid,
        log_write,
    )?;
    // The clone starts now and the cgroup is made meanwhile: nothing of the agent runs
    // before `release`, which comes after the placement below, and init's own setup (the
    // root file system) takes longer than making the cgroup.
    let cloning = agents.host.launcher.start_spawn(spec);

    // The cgroup, nested under the spawning agent's.
    let made = match &agents.host.cgroups {
        Some(cgroups) => cgroups
            .create(
                parent_cg.as_ref(),
                &format!("agent-{id}"),
                &cgroup_limits(&l.limits),
            )
            .map(|(cg, missing)| {
                let missing: Vec<String> = missing.into_iter().map(String::from).collect();
                (Some(cg), missing)
            })
            .map_err(|e| internal(format!("spawn {}: {e}", req.name))),
        None => Ok((None, vec!["memory".into(), "cpu".into(), "pids".into()])),
    };
    let mut undo_cg = CgroupUndo {
        id,
        cgroup: made.as_ref().ok().and_then(|(cg, _)| cg.clone()),
    };
    let t_cgroup = t0.elapsed();
    let pending = cloning
        .wait()
        .await
        .map_err(|e| internal(format!("spawn {}: {e}", req.name)))?;
    let (cgroup, mut not_applied) = match made {
        Ok(made) => made,
        Err(e) => {
            let _ = tokio::task::spawn_blocking(move || pending.abort()).await;
            return Err(e);
        }
    };
    if l.limits.disk.is_some() && !work_mounted {
        not_applied.push("disk".into());
    }
    if !root && !req.network {
        not_applied.push("net_namespace".into());
    }
    // The write ends now live in the child (and in the launcher until it is done).
    log.pump(log_read);
    let t_cloned = t0.elapsed();
    // Placement, then release, on one blocking thread: both block (cgroupfs writes, then the
    // wait for init's report), and one hop there and back is cheaper than two.
    let place = cgroup.clone();
    let (started, t_placed) = tokio::task::spawn_blocking(move || {
        if let Some(cg) = &place {
            if let Err(e) = cg.add_pid(pending.pid as u32) {
                pending.abort();
                return Err(e.to_string());
            }
        }
        let t_placed = t0.elapsed();
        pending
            .release()
            .map(|started| (started, t_placed))
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(internal)?
    .map_err(|e| internal(format!("spawn {}: {e}", req.name)))?;
    undo_cg.cgroup = None;
    tracing::debug!(
        agent = id,
        "spawn timing: prepared {t_prepared:?}, cgroup made {t_cgroup:?} (while cloning), \
         cloned {t_cloned:?}, placed {t_placed:?}, agent exec'd {:?}",
        t0.elapsed()
    );

    if sandboxed {
        match started.applied.as_ref().map(|a| a.landlock) {
            Some(LandlockStatus::Full) => {}
            Some(LandlockStatus::Partial) => not_applied.push("landlock_partial".into()),
            _ => not_applied.push("landlock".into()),
        }
    } else {
        not_applied.extend(
            [
                "pid_namespace",
                "mnt_namespace",
                "uts_namespace",
                "uid",
                "seccomp",
                "landlock",
            ]
            .map(String::from),
        );
    }
    let isolation = isolation(req, sandboxed, cgroup.as_ref(), &not_applied, agents);
    // Without it (it could not be registered, which does not happen in practice) the agent
    // runs, and its EXEC answers `unavailable`.
    let control = started.control.and_then(|fd| {
        crate::sandbox::control::Control::start(fd)
            .map_err(|e| tracing::warn!(agent = id, "the control channel: {e}"))
            .ok()
    });
    Ok(Launched {
        run: Run {
            pid: started.pid,
            pidfd: Arc::new(started.pidfd),
            cgroup,
            isolation,
            started: Instant::now(),
            lifeline: std::sync::Mutex::new(started.lifeline),
            mount_ns: std::sync::Mutex::new(started.mount_ns),
            control,
        },
        report: started.report,
    })
}

/// Removes the cgroup of a launch that failed, unless taken out first.
struct CgroupUndo {
    id: u32,
    cgroup: Option<AgentCgroup>,
}

impl Drop for CgroupUndo {
    fn drop(&mut self) {
        if let Some(cg) = self.cgroup.take() {
            if let Err(e) = cg.remove() {
                tracing::warn!(agent = self.id, "undo launch: {e}");
            }
        }
    }
}

pub(crate) fn validate_name(name: &str) -> Result<(), WireError> {
    if name.is_empty() {
        return Err(invalid("name: must not be empty"));
    }
    if name.len() > NAME_MAX {
        return Err(invalid(format!("name: longer than {NAME_MAX} bytes")));
    }
    if name.chars().any(|c| c.is_control() || c == '/') {
        return Err(invalid(format!(
            "name {name:?}: control characters and '/' are not allowed"
        )));
    }
    Ok(())
}

/// The script as an absolute, existing host file. A relative path is taken relative to the
/// caller's working directory, as a shell user would expect (for a sandboxed agent: its work
/// dir). A sandboxed agent's path is translated through its view.
fn resolve_script(
    script: &str,
    caller_pid: Option<i32>,
    view: Option<&[PlanBind]>,
) -> Result<PathBuf, WireError> {
    if script.is_empty() {
        return Err(invalid("script: must not be empty"));
    }
    let path = Path::new(script);
    if let Some(view) = view {
        let inside = Path::new(plan::WORK_DIR).join(path);
        let (host, _) = to_host(view, &inside, "script")?;
        return if host.is_file() {
            Ok(host)
        } else {
            Err(invalid(format!("script {script}: not a file")))
        };
    }
    let path = if path.is_absolute() {
        path.to_path_buf()
    } else {
        let cwd = caller_pid
            .and_then(|pid| fs::read_link(format!("/proc/{pid}/cwd")).ok())
            .ok_or_else(|| {
                invalid(format!(
                    "script {script}: a relative path needs the caller's working directory, which the kernel cannot see; give an absolute path"
                ))
            })?;
        cwd.join(path)
    };
    let path = path
        .canonicalize()
        .map_err(|e| invalid(format!("script {}: {e}", path.display())))?;
    if !path.is_file() {
        return Err(invalid(format!("script {}: not a file", path.display())));
    }
    Ok(path)
}

fn validate_limits(l: &Limits) -> Result<(), WireError> {
    if l.memory.bytes() < 4 << 20 {
        return Err(invalid(format!(
            "limits.memory {}: at least 4 MiB",
            l.memory.bytes()
        )));
    }
    if l.max_pids == 0 {
        return Err(invalid("limits.max_pids: at least 1"));
    }
    if let Some(cpu) = l.cpu {
        if !(cpu.is_finite() && cpu > 0.0 && cpu <= 1024.0) {
            return Err(invalid(format!(
                "limits.cpu {cpu}: between 0 and 1024 CPUs"
            )));
        }
    }
    // The cgroup layer's own check of what it will write (cpu period and quota ranges),
    // reported under the request's field names.
    if let Err(e) = cgroup_limits(l).validate() {
        let (quota, period) = l.cpu_quota_period();
        return Err(invalid(format!(
            "limits.cpu_quota/cpu_period {quota}/{period}: {e}"
        )));
    }
    if let Some(disk) = l.disk {
        if disk.bytes() < 1 << 20 {
            return Err(invalid("limits.disk: at least 1 MiB"));
        }
    }
    Ok(())
}

/// `inside` (a path as a sandboxed agent sees it) as a host path, and whether the agent may
/// write there. The longest bind wins; the canonical host path must stay inside the bind's
/// source, so a symlink in the agent's view cannot hand a child a host path the agent itself
/// cannot see.
fn to_host(view: &[PlanBind], inside: &Path, what: &str) -> Result<(PathBuf, bool), WireError> {
    let hidden = || {
        invalid(format!(
            "{what} {}: not visible to the spawning agent",
            inside.display()
        ))
    };
    if inside.components().any(|c| c.as_os_str() == "..") {
        return Err(hidden());
    }
    let bind = view
        .iter()
        .filter(|b| inside.starts_with(&b.target))
        .max_by_key(|b| b.target.components().count())
        .ok_or_else(hidden)?;
    let rest = inside.strip_prefix(&bind.target).map_err(|_| hidden())?;
    let host = bind.source.join(rest);
    let canonical = host
        .canonicalize()
        .map_err(|e| invalid(format!("{what} {}: {e}", inside.display())))?;
    let root = bind.source.canonicalize().map_err(|_| hidden())?;
    if !canonical.starts_with(&root) {
        return Err(hidden());
    }
    Ok((canonical, bind.writable))
}

/// The request's binds as (host source, target, writable), checked. A sandboxed parent's
/// sources are paths in its own view, and it may only pass on write access it has.
fn validate_binds(
    req: &SpawnRequest,
    view: Option<&[PlanBind]>,
) -> Result<Vec<(PathBuf, PathBuf, bool)>, WireError> {
    let mut out = Vec::new();
    for (i, b) in req.binds.iter().enumerate() {
        let translated;
        let source = match view {
            Some(view) if Path::new(&b.source).is_absolute() => {
                let (host, writable) =
                    to_host(view, Path::new(&b.source), &format!("binds[{i}].source"))?;
                if b.writable && !writable {
                    return Err(invalid(format!(
                        "binds[{i}].source {}: the spawning agent cannot write there",
                        b.source
                    )));
                }
                translated = host;
                translated.as_path()
            }
            _ => Path::new(&b.source),
        };
        let target = Path::new(b.target());
        if !source.is_absolute() || !target.is_absolute() {
            return Err(invalid(format!(
                "binds[{i}]: source and target must be absolute paths"
            )));
        }
        if !source.exists() {
            return Err(invalid(format!(
                "binds[{i}].source {}: no such file or directory",
                source.display()
            )));
        }
        if target == Path::new("/")
            || ["/proc", "/dev", "/sys"]
                .iter()
                .any(|p| target.starts_with(p))
            || target.components().any(|c| c.as_os_str() == "..")
        {
            return Err(invalid(format!(
                "binds[{i}].target {}: not allowed",
                target.display()
            )));
        }
        out.push((source.to_path_buf(), target.to_path_buf(), b.writable));
    }
    Ok(out)
}

/// The program that runs the script, resolved on the host.
enum ResolvedProgram {
    Python(Interpreter),
    Other(PathBuf),
}

impl ResolvedProgram {
    fn as_program(&self) -> Program<'_> {
        match self {
            ResolvedProgram::Python(i) => Program::Python(i),
            ResolvedProgram::Other(p) => Program::Other(p),
        }
    }
}

async fn resolve_program(
    agents: &Agents,
    req: &SpawnRequest,
) -> Result<Option<ResolvedProgram>, WireError> {
    let Some(name) = req.interpreter() else {
        return Ok(None);
    };
    if let Ok(default) = &agents.host.python {
        if name == clove_abi::msg::DEFAULT_PYTHON || name == default.configured {
            return Ok(Some(ResolvedProgram::Python(default.clone())));
        }
    }
    let base = Path::new(name)
        .file_name()
        .map(|b| b.to_string_lossy().into_owned())
        .unwrap_or_default();
    if base.starts_with("python") {
        let owned = name.to_owned();
        let i = tokio::task::spawn_blocking(move || Interpreter::resolve(&owned))
            .await
            .map_err(internal)?
            .map_err(|e| invalid(format!("interpreter: {e}")))?;
        return Ok(Some(ResolvedProgram::Python(i)));
    }
    let path = which(name).ok_or_else(|| {
        invalid(format!(
            "interpreter {name}: not found (give a path or a program on PATH)"
        ))
    })?;
    Ok(Some(ResolvedProgram::Other(path)))
}

/// `name` as an absolute path: itself when it has a slash, else found on the kernel's PATH.
fn which(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return (p.is_absolute() && p.is_file()).then_some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A directory of mode 0700 in one `mkdir` (none when it exists): the kernel's umask is 077
/// (main.rs), which leaves exactly 0700 of the mode asked for.
fn make_private_dir(path: &Path) -> Result<(), WireError> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|e| internal(format!("create {}: {e}", path.display())))
}

fn make_dir(path: &Path, mode: u32) -> Result<(), WireError> {
    fs::create_dir_all(path)
        .and_then(|()| fs::set_permissions(path, fs::Permissions::from_mode(mode)))
        .map_err(|e| internal(format!("create {}: {e}", path.display())))
}

fn chown(path: &Path, uid: u32, gid: u32) -> Result<(), WireError> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .map_err(|e| internal(format!("chown {} to {uid}: {e}", path.display())))
}

/// A size-capped tmpfs on the host work dir (`limits.disk`), owned by the agent.
fn mount_work_tmpfs(work: &Path, bytes: u64, uid: u32, gid: u32) -> Result<(), WireError> {
    use nix::mount::{mount, MsFlags};
    let opts = format!("size={bytes},mode=0700,uid={uid},gid={gid}");
    mount(
        Some("clove-work"),
        work,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(opts.as_str()),
    )
    .map_err(|e| internal(format!("mount the work dir {}: {e}", work.display())))
}

/// The agent's own socket: only its uid may connect.
fn bind_agent_socket(path: &Path, uid: u32, gid: u32) -> Result<UnixListener, WireError> {
    let _ = fs::remove_file(path);
    let listener = UnixListener::bind(path)
        .map_err(|e| internal(format!("bind agent socket {}: {e}", path.display())))?;
    chown(path, uid, gid)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .map_err(|e| internal(format!("chmod {}: {e}", path.display())))?;
    Ok(listener)
}

fn copy_script(script: &Path, copy: &Path, uid: u32, gid: u32) -> Result<(), WireError> {
    if let Some(dir) = copy.parent() {
        make_dir(dir, 0o755)?;
    }
    fs::copy(script, copy).map_err(|e| {
        internal(format!(
            "copy {} to {}: {e}",
            script.display(),
            copy.display()
        ))
    })?;
    chown(copy, uid, gid)?;
    fs::set_permissions(copy, fs::Permissions::from_mode(0o500))
        .map_err(|e| internal(format!("chmod {}: {e}", copy.display())))
}

fn cgroup_limits(l: &Limits) -> CgroupLimits {
    let (quota, period) = l.cpu_quota_period();
    CgroupLimits {
        memory: Some(l.memory.bytes()),
        cpu_quota_us: Some(quota),
        cpu_period_us: period,
        cpu_shares: Some(l.cpu_shares),
        pids_max: Some(l.max_pids),
    }
}

#[allow(clippy::too_many_arguments)] // one call site; each argument is a separate decision
fn launch_spec(
    req: &SpawnRequest,
    sandboxed: bool,
    as_root: bool,
    plan: &Plan,
    new_root: &Path,
    uid: u32,
    gid: u32,
    log: OwnedFd,
) -> Result<LaunchSpec, WireError> {
    let stderr = log
        .try_clone()
        .map_err(|e| internal(format!("dup log fd: {e}")))?;
    let root = sandboxed.then(|| RootPlan {
        new_root: new_root.to_path_buf(),
        binds: plan
            .binds
            .iter()
            .map(|b| BindMount {
                source: b.source.clone(),
                target: b.target.clone(),
                writable: b.writable,
                optional: b.optional,
            })
            .collect(),
        files: plan
            .files
            .iter()
            .map(|f| NewFile {
                target: f.target.clone(),
                contents: f.contents.clone(),
                mode: f.mode,
            })
            .collect(),
        tmp_size: TMP_SIZE,
    });
    let lockdown = sandboxed.then(|| Lockdown {
        uid,
        gid,
        rlimits: Rlimits {
            nofile: AGENT_NOFILE,
            core: 0,
        },
        landlock: Some(landlock_paths(plan)),
        seccomp: true,
    });
    Ok(LaunchSpec {
        process: ProcessSpec {
            sandboxed,
            // Without root no namespace can be made: the agent shares the host's network,
            // and `not_applied` says so.
            network: req.network || !as_root,
            hostname: plan::hostname(&req.name),
            argv: plan.argv.clone(),
            env: plan.env.clone(),
            cwd: plan.cwd.clone(),
            root,
            lockdown,
        },
        stdout: log,
        stderr,
    })
}

/// Landlock inside the sandbox: read anywhere (the root holds only what the plan bound),
/// write only the writable binds (the work dir, the sockets, the request's writable binds),
/// /tmp, /dev/shm and the character devices. A second fence behind the read-only mounts.
fn landlock_paths(plan: &Plan) -> crate::sandbox::privileges::LandlockPaths {
    let read: Vec<PathBuf> = vec!["/".into()];
    let mut write: Vec<PathBuf> = plan
        .binds
        .iter()
        .filter(|b| b.writable)
        .map(|b| b.target.clone())
        .collect();
    write.extend(
        [
            "/tmp",
            "/dev/shm",
            "/dev/null",
            "/dev/zero",
            "/dev/full",
            "/dev/tty",
        ]
        .map(PathBuf::from),
    );
    crate::sandbox::privileges::LandlockPaths { read, write }
}

fn isolation(
    req: &SpawnRequest,
    sandboxed: bool,
    cgroup: Option<&AgentCgroup>,
    not_applied: &[String],
    agents: &Agents,
) -> Isolation {
    let has = |c: &str| cgroup.is_some() && !not_applied.iter().any(|n| n == c);
    let version = cgroup.map(|cg| match cg.version_label() {
        "v2" => CgroupVersion::V2,
        "hybrid" => CgroupVersion::Hybrid,
        _ => CgroupVersion::V1,
    });
    let namespaces = Namespaces {
        pid: sandboxed,
        net: !req.network && agents.host.root,
        mnt: sandboxed,
        uts: sandboxed,
    };
    let degraded_reason = (!not_applied.is_empty()).then(|| {
        let mut why = format!("not in force: {}", not_applied.join(", "));
        if req.sandboxed && !sandboxed {
            why.push_str("; no sandbox: the kernel is not running as root");
        }
        if let Some(missing) = &agents.host.cgroups_missing {
            why.push_str(&format!("; cgroups: {missing}"));
        }
        why
    });
    Isolation {
        fully_isolated: sandboxed && not_applied.is_empty(),
        namespaces,
        cgroups: CgroupStatus {
            available: cgroup.is_some(),
            memory_limit: has("memory"),
            cpu_quota: has("cpu"),
            pids_limit: has("pids"),
            version,
        },
        degraded_reason,
        not_applied: not_applied.to_vec(),
    }
}

/// Undoes a half-done SPAWN when dropped before [`Undo::disarm`].
struct Undo<'a> {
    agents: &'a Agents,
    name: &'a str,
    id: u32,
    dir: Option<PathBuf>,
    work_mount: Option<PathBuf>,
    /// The store the agent's spec was saved to.
    saved: Option<&'a StateStore>,
    armed: bool,
}

impl<'a> Undo<'a> {
    fn new(agents: &'a Agents, name: &'a str, id: u32) -> Undo<'a> {
        Undo {
            agents,
            name,
            id,
            dir: None,
            work_mount: None,
            saved: None,
            armed: true,
        }
    }

    fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(work) = self.work_mount.take() {
            let _ = nix::mount::umount2(&work, nix::mount::MntFlags::MNT_DETACH);
        }
        if let Some(dir) = self.dir.take() {
            if let Err(e) = fs::remove_dir_all(&dir) {
                tracing::warn!(agent = self.id, "undo spawn: remove {}: {e}", dir.display());
            }
        }
        if let Some(store) = self.saved.take() {
            // Queued behind the save; nothing waits for it.
            drop(store.forget_agent(self.id));
        }
        self.agents.release(self.name, self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spare_agent_directory_is_complete_and_taken_once() {
        let agents = tempfile::tempdir().unwrap();
        make_spare(agents.path());
        let spare = agents.path().join(SPARE);
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&spare), 0o711);
        assert_eq!(mode(&spare.join("work")) & 0o077, 0, "work is private");
        assert_eq!(fs::read(spare.join("output.log")).unwrap(), b"");
        // Only the spare: the directory it was built in is gone.
        assert_eq!(fs::read_dir(agents.path()).unwrap().count(), 1);
        make_spare(agents.path());
        assert_eq!(fs::read_dir(agents.path()).unwrap().count(), 1);

        let dir = agents.path().join("7");
        assert!(take_spare(agents.path(), &dir));
        assert!(dir.join("work").is_dir() && !spare.exists());
        assert!(!take_spare(agents.path(), &agents.path().join("8")));
        assert!(!agents.path().join("8").exists());
    }

    #[test]
    fn limits_out_of_range_name_the_field() {
        assert!(validate_limits(&Limits::default()).is_ok());
        let small_quota = Limits {
            cpu_quota: 500,
            ..Limits::default()
        };
        let e = validate_limits(&small_quota).unwrap_err();
        assert!(
            e.message.contains("limits.cpu_quota/cpu_period 500/100000"),
            "{e}"
        );
        let tiny = Limits {
            memory: clove_abi::msg::ByteSize(1 << 20),
            ..Limits::default()
        };
        assert!(validate_limits(&tiny)
            .unwrap_err()
            .message
            .contains("limits.memory"));
        let no_pids = Limits {
            max_pids: 0,
            ..Limits::default()
        };
        assert!(validate_limits(&no_pids)
            .unwrap_err()
            .message
            .contains("limits.max_pids"));
    }

    #[test]
    fn a_sandboxed_parent_names_only_what_it_sees() {
        let host = tempfile::tempdir().unwrap();
        let proj = host.path().join("proj");
        fs::create_dir_all(&proj).unwrap();
        fs::write(proj.join("child.py"), "").unwrap();
        fs::write(host.path().join("secret"), "").unwrap();
        std::os::unix::fs::symlink(host.path().join("secret"), proj.join("link")).unwrap();
        let view = vec![PlanBind {
            source: proj.clone(),
            target: PathBuf::from("/srv/app"),
            writable: false,
            optional: false,
        }];
        let (p, writable) = to_host(&view, Path::new("/srv/app/child.py"), "script").unwrap();
        assert_eq!(p, proj.join("child.py").canonicalize().unwrap());
        assert!(!writable);
        // Outside the view, through `..`, or through a symlink out of the bind: refused.
        for inside in ["/etc/passwd", "/srv/app/../x", "/srv/app/link"] {
            let e = to_host(&view, Path::new(inside), "script").unwrap_err();
            assert!(
                e.message.contains("not visible to the spawning agent"),
                "{inside}: {e}"
            );
        }
        // A read-only view cannot be passed on writable.
        let mut req = SpawnRequest::new("c", "x");
        req.binds.push(clove_abi::msg::Bind {
            source: "/srv/app".into(),
            target: Some("/data".into()),
            writable: true,
        });
        let e = validate_binds(&req, Some(&view)).unwrap_err();
        assert!(e.message.contains("cannot write there"), "{e}");
        req.binds[0].writable = false;
        let binds = validate_binds(&req, Some(&view)).unwrap();
        assert_eq!(binds[0].0, proj.canonicalize().unwrap());
    }
}
