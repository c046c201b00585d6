//! Exit watching and restarts: one task per agent, for its whole life, waits on its current
//! process's pidfd (no polling), reaps it, labels the exit (an OOM kill is read from the
//! memory controller's own counter, never guessed from exit code 137), and asks the agent's
//! restart policy ([`crate::supervisor::restart`]) what comes next:
//!
//! * a final exit (policy `never`, a clean exit under `on-failure`, KILL, kernel shutdown):
//!   cleans up what the agent held and moves it to the exited table;
//! * a restart: publishes AGENT_EXITED (`restarting: true`) and AGENT_RESTARTING, waits the
//!   backoff (KILL calls it off), and launches the process again through
//!   [`spawn::launch`] with the same id, directory, uid and socket. The agent stays in the
//!   live table throughout, so its name stays reserved and its mailbox, registered names,
//!   subscriptions and agent-scoped keys stay;
//! * an escalation (the budget is spent): AGENT_ESCALATED, then a final exit.
//!
//! An agent in a supervisor group leaves the decision to its group
//! ([`crate::supervisor::group`]): after an exit that was not KILL's or the shutdown's, it
//! tells the group and waits for its word: hold (the exit is reported as restarting), restart
//! now, or finish (for good; an escalation when the group gave up). KILL still ends it at
//! once, and the group hears that it is gone.
//!
//! The task holds the agents (for the host's launcher and cgroups and the observers), never
//! the kernel: nothing here keeps a stopped kernel alive.

use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clove_abi::msg::AgentState;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::mpsc;

use super::{spawn, Agent, Agents, ExitReason, LifecycleEvent, Run};
use crate::sandbox::launch;
use crate::supervisor::group::{AgentCmd, Child, Msg};
use crate::supervisor::restart::Decision;

/// Watches `agent` until it has exited for good, restarting it as its policy (or its group,
/// through `cmds`) says. `report` is the init's report pipe of its first process (sandboxed
/// agents).
pub fn watch(
    agents: Arc<Agents>,
    agent: Arc<Agent>,
    report: Option<OwnedFd>,
    cmds: Option<mpsc::UnboundedReceiver<AgentCmd>>,
) {
    tokio::spawn(async move {
        let mut report = report;
        let mut cmds = cmds;
        loop {
            let run = agent.run();
            let exit = wait(&agent, &run, report.as_ref()).await;
            let killed = agent.killing.load(Ordering::SeqCst);
            let oom = match &run.cgroup {
                Some(cg) => cg.oom_kills().map(|n| n > 0).unwrap_or(false),
                None => false,
            };
            let reason = ExitReason {
                code: exit.code,
                signal: exit.signal,
                oom,
                killed,
            };
            stop_children(&agents, &agent).await;
            if let (Some(group), Some(rx)) = (agent.group.clone(), cmds.as_mut()) {
                let stopped = killed || agents.shutting_down.load(Ordering::SeqCst);
                let uptime = run.started.elapsed();
                cleanup(&agent, &run, stopped).await;
                if !stopped {
                    agent.set_state_unless_killed(AgentState::Starting);
                    let asked = group.send(Msg::Exited {
                        id: agent.id,
                        reason: reason.clone(),
                        uptime,
                    });
                    if asked {
                        match grouped(&agents, &agent, &run, reason.clone(), rx).await {
                            Ok(next) => {
                                report = next;
                                continue;
                            }
                            Err((reason, escalated)) => {
                                if escalated {
                                    agents.notify(LifecycleEvent::Escalated {
                                        id: agent.id,
                                        name: agent.name.clone(),
                                        restart_count: agent.restarts(),
                                        reason: reason.clone(),
                                    });
                                }
                                finish(&agents, &agent, &run, reason, true).await;
                                group.send(Msg::Gone {
                                    child: Child::Agent(agent.id),
                                    stopped: Vec::new(),
                                });
                                return;
                            }
                        }
                    }
                }
                finish(&agents, &agent, &run, reason, !stopped).await;
                group.send(Msg::Gone {
                    child: Child::Agent(agent.id),
                    stopped: Vec::new(),
                });
                return;
            }
            let decision = match agent.relaunch {
                None => Decision::Final,
                Some(_) => {
                    let stopped = killed || agents.shutting_down.load(Ordering::SeqCst);
                    super::lock(&agent.supervision).decide(
                        &agent.spec,
                        &reason,
                        run.started.elapsed(),
                        stopped,
                        Instant::now(),
                    )
                }
            };
            let restarting = matches!(decision, Decision::Restart { .. });
            cleanup(&agent, &run, !restarting).await;
            let reason = match decision {
                Decision::Restart {
                    restart_count,
                    backoff,
                } => match restart(&agents, &agent, run, reason, restart_count, backoff).await {
                    Ok(next) => {
                        report = next;
                        continue;
                    }
                    Err((run, reason)) => {
                        finish(&agents, &agent, &run, reason, true).await;
                        return;
                    }
                },
                Decision::Escalate { restart_count } => {
                    tracing::warn!(
                        agent = agent.id,
                        name = %agent.name,
                        "agent {}: {restart_count} restart(s) within {}s, the most its policy allows; giving up",
                        reason.describe(),
                        agent.spec.restart_window
                    );
                    agents.notify(LifecycleEvent::Escalated {
                        id: agent.id,
                        name: agent.name.clone(),
                        restart_count,
                        reason: reason.clone(),
                    });
                    reason
                }
                Decision::Final => reason,
            };
            finish(&agents, &agent, &run, reason, false).await;
            return;
        }
    });
}

/// The final exit: the agent leaves the live table (its name is free again), WAIT and KILL
/// get their answer, observers release what it held.
/// `kept_for_restart`: the run's cleanup kept the socket and the work dir for a restart that
/// was then called off.
async fn finish(
    agents: &Agents,
    agent: &Arc<Agent>,
    run: &Arc<Run>,
    reason: ExitReason,
    kept_for_restart: bool,
) {
    if kept_for_restart {
        release_agent(agent).await;
    }
    tracing::info!(agent = agent.id, name = %agent.name, "agent {}", reason.describe());
    agent.set_state(if reason.clean() || reason.killed {
        AgentState::Stopped
    } else {
        AgentState::Failed
    });
    agents.retire(agent, reason.clone());
    // Its log and work dir stay readable for the retention time.
    super::host::expire_later(agent.dir.clone(), agents.host.retention);
    // send_replace: the value must stick even when nobody is waiting yet (WAIT later).
    agent.exit.send_replace(Some(reason.clone()));
    agents.notify(LifecycleEvent::Exited {
        id: agent.id,
        name: agent.name.clone(),
        reason,
        restarting: false,
        shutdown: agents.shutting_down.load(Ordering::SeqCst),
    });
    tidy(agent, run, true).await;
}

/// Between two runs: reports the exit and the coming restart, waits the backoff and launches
/// the process again. `Err` (with the run and the reason to report) when the agent ends for
/// good instead: KILL or the kernel's shutdown during the backoff, or a launch that failed.
async fn restart(
    agents: &Arc<Agents>,
    agent: &Arc<Agent>,
    run: Arc<Run>,
    reason: ExitReason,
    restart_count: u32,
    backoff: Duration,
) -> Result<Option<OwnedFd>, (Arc<Run>, ExitReason)> {
    announce(agents, agent, &run, &reason, restart_count, backoff).await;
    tokio::select! {
        () = tokio::time::sleep(backoff) => {}
        () = agent.stop.cancelled() => {}
    }
    if agent.killing.load(Ordering::SeqCst) || agents.shutting_down.load(Ordering::SeqCst) {
        return Err((run, stopped(reason)));
    }
    match relaunch(agents, agent, &reason, restart_count).await {
        Ok(report) => Ok(report),
        Err(()) => Err((run, reason)),
    }
}

/// KILL (or the shutdown's KILL) ended it; it did not fail again.
fn stopped(mut reason: ExitReason) -> ExitReason {
    reason.killed = true;
    reason
}

/// A grouped agent after an exit its group was told of: carries out the group's word. `Ok`
/// with the new process's report pipe once restarted; `Err` with the reason to report (and
/// whether the group gave up on it) when it ends for good.
async fn grouped(
    agents: &Arc<Agents>,
    agent: &Arc<Agent>,
    run: &Arc<Run>,
    reason: ExitReason,
    rx: &mut mpsc::UnboundedReceiver<AgentCmd>,
) -> Result<Option<OwnedFd>, (ExitReason, bool)> {
    let mut restart_count = None;
    loop {
        let cmd = tokio::select! {
            c = rx.recv() => c,
            () = agent.stop.cancelled() => None,
        };
        let stopping =
            agent.killing.load(Ordering::SeqCst) || agents.shutting_down.load(Ordering::SeqCst);
        match cmd {
            Some(AgentCmd::Hold { backoff }) if !stopping => {
                if restart_count.is_none() {
                    let n = super::lock(&agent.supervision).record(&reason);
                    announce(agents, agent, run, &reason, n, backoff).await;
                    restart_count = Some(n);
                }
            }
            Some(AgentCmd::Restart) if !stopping => {
                let n = match restart_count {
                    Some(n) => n,
                    None => {
                        let n = super::lock(&agent.supervision).record(&reason);
                        announce(agents, agent, run, &reason, n, Duration::ZERO).await;
                        n
                    }
                };
                let launched = relaunch(agents, agent, &reason, n).await;
                if let Some(group) = &agent.group {
                    group.send(Msg::Relaunched {
                        child: Child::Agent(agent.id),
                        ok: launched.is_ok(),
                    });
                }
                return launched.map_err(|()| (reason, false));
            }
            Some(AgentCmd::Finish { escalated }) => return Err((reason, escalated)),
            // KILL, the shutdown, or the group is gone.
            _ => return Err((stopped(reason), false)),
        }
    }
}

/// Reports an exit that will be restarted: AGENT_EXITED (`restarting`) and AGENT_RESTARTING
/// with the delay, then tidies the ended run.
async fn announce(
    agents: &Agents,
    agent: &Arc<Agent>,
    run: &Arc<Run>,
    reason: &ExitReason,
    restart_count: u32,
    backoff: Duration,
) {
    agent.set_state_unless_killed(AgentState::Starting);
    tracing::info!(
        agent = agent.id,
        name = %agent.name,
        "agent {}; restart {restart_count} in {backoff:?}",
        reason.describe()
    );
    agents.notify(LifecycleEvent::Exited {
        id: agent.id,
        name: agent.name.clone(),
        reason: reason.clone(),
        restarting: true,
        shutdown: false,
    });
    agents.notify(LifecycleEvent::Restarting {
        id: agent.id,
        name: agent.name.clone(),
        restart_count,
        reason: reason.clone(),
        backoff_ms: backoff.as_millis() as u64,
    });
    tidy(agent, run, false).await;
}

/// Launches the agent's process again (same id, directory, uid, socket) and installs it as
/// the current run. `Err` when the launch failed (logged; the agent stays down).
async fn relaunch(
    agents: &Arc<Agents>,
    agent: &Arc<Agent>,
    reason: &ExitReason,
    restart_count: u32,
) -> Result<Option<OwnedFd>, ()> {
    let Some(launchable) = &agent.relaunch else {
        return Err(());
    };
    spawn::warm_placement(agents);
    if let Err(e) = agent.log.note(&format!(
        "--- clove: restart {restart_count} after {} ---",
        reason.short()
    )) {
        tracing::warn!(agent = agent.id, "write the restart marker: {e}");
    }
    let parent_cg = agent
        .parent
        .and_then(|p| agents.get(p))
        .and_then(|p| p.cgroup());
    let t0 = Instant::now();
    let launched = spawn::launch(
        agents,
        agent.id,
        &agent.spec,
        launchable,
        agent.uid,
        parent_cg,
        &agent.log,
        agent.work_mount.is_some(),
        t0,
        Duration::ZERO,
    )
    .await;
    let launched = match launched {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(
                agent = agent.id,
                name = %agent.name,
                "restart {restart_count}: {}; the agent stays down",
                e.message
            );
            let _ = agent.log.note(&format!(
                "--- clove: restart {restart_count} failed: {} ---",
                e.message
            ));
            return Err(());
        }
    };
    let pid = launched.run.pid;
    let new = Arc::new(launched.run);
    *super::lock(&agent.run) = Arc::clone(&new);
    agent.set_state_unless_killed(AgentState::Running);
    if agent.killing.load(Ordering::SeqCst) {
        // KILL came while the process was being launched: it signalled the old one. This
        // one goes at once; its exit is then final.
        let _ = launch::signal(&new.pidfd, nix::sys::signal::Signal::SIGKILL);
        if let Some(cg) = new.cgroup.clone() {
            let _ =
                tokio::task::spawn_blocking(move || cg.kill_all(nix::sys::signal::Signal::SIGKILL))
                    .await;
        }
    }
    agents.notify(LifecycleEvent::Spawned {
        id: agent.id,
        name: agent.name.clone(),
        pid,
        restarts: restart_count,
    });
    tracing::info!(agent = agent.id, name = %agent.name, pid, "agent restarted ({restart_count})");
    Ok(launched.report)
}

/// Waits for the agent's exit without polling (its pidfd becomes readable), falling back to
/// polling when the pidfd cannot be watched.
async fn wait(agent: &Agent, run: &Run, report: Option<&OwnedFd>) -> launch::AgentExit {
    match watch_pidfd(agent, run, report).await {
        Ok(exit) => exit,
        Err(e) => {
            tracing::error!(agent = agent.id, "watch pidfd: {e}; polling instead");
            loop {
                if let Some(exit) = try_reap(agent, run, report) {
                    return exit;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

async fn watch_pidfd(
    agent: &Agent,
    run: &Run,
    report: Option<&OwnedFd>,
) -> std::io::Result<launch::AgentExit> {
    let fd = run.pidfd.try_clone()?;
    // SAFETY: `fd` is an open pidfd that the AsyncFd owns until it is dropped; nothing
    // else closes or replaces it.
    let afd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    loop {
        let mut guard = afd.readable().await?;
        match try_reap(agent, run, report) {
            Some(exit) => return Ok(exit),
            None => guard.clear_ready(),
        }
    }
}

/// The exit once it happened; `None` while the agent runs. A failed reap is logged and
/// counts as an exit without code or signal, so the agent is never stuck as live.
fn try_reap(agent: &Agent, run: &Run, report: Option<&OwnedFd>) -> Option<launch::AgentExit> {
    match launch::reap(&run.pidfd, report) {
        Ok(exit) => Some(exit),
        Err(launch::LaunchError::StillRunning) => None,
        Err(e) => {
            tracing::error!(agent = agent.id, "reap: {e}");
            Some(launch::AgentExit {
                code: None,
                signal: None,
            })
        }
    }
}

/// The agents `agent` spawned live inside its cgroup (so its limits cap them): they are
/// stopped for good, each with its grace, before its run is cleaned up, whether it ends or
/// restarts (its restarted process spawns what it needs again). Their own children go first.
async fn stop_children(agents: &Agents, agent: &Agent) {
    let children: Vec<Arc<Agent>> = agents
        .live()
        .into_iter()
        .filter(|a| a.parent == Some(agent.id))
        .collect();
    if children.is_empty() {
        return;
    }
    tracing::info!(
        agent = agent.id,
        "stopping {} agent(s) it spawned",
        children.len()
    );
    let mut stops = tokio::task::JoinSet::new();
    for child in children {
        let grace = super::control::grace_of(&child, agents.host.kill_grace);
        stops.spawn(async move { super::control::kill(&child, grace).await });
    }
    while let Some(done) = stops.join_next().await {
        if let Ok(Err(e)) = done {
            tracing::warn!(agent = agent.id, "{}", e.message);
        }
    }
}

/// What may wait until the exit has been reported, since nobody can tell: the sandbox's
/// mount namespace, whose closing unmounts its mounts (and waits for an RCU grace period) on
/// the thread that drops it; after a final exit also the socket file (its listener is closed
/// already).
async fn tidy(agent: &Arc<Agent>, run: &Arc<Run>, last: bool) {
    let mount_ns = super::lock(&run.mount_ns).take();
    let dir = agent.dir.clone();
    let _ = tokio::task::spawn_blocking(move || {
        drop(mount_ns);
        if last {
            let _ = std::fs::remove_file(dir.join("clove.sock"));
        }
    })
    .await;
}

/// Releases what the run held, before its exit is reported: whatever is left in its cgroup
/// (daemonized children) and the cgroup itself; after a final exit (`last`) also the agent's
/// socket listener and its work dir's tmpfs, which a restart keeps.
async fn cleanup(agent: &Arc<Agent>, run: &Arc<Run>, last: bool) {
    if last {
        agent.socket_stop.cancel();
    }
    // The lifeline keeps a sandbox's init alive; it has exited, so let go of it.
    drop(super::lock(&run.lifeline).take());
    let (a, r) = (Arc::clone(agent), Arc::clone(run));
    let _ = tokio::task::spawn_blocking(move || {
        if let Some(cg) = &r.cgroup {
            // Usually nothing is left (init's exit took its pid namespace along): then
            // removing the directories is all there is to do. Otherwise, kill and remove.
            let removed = cg.remove_if_empty().unwrap_or_else(|e| {
                tracing::warn!(agent = a.id, "remove the agent's cgroup: {e}");
                false
            });
            if !removed {
                if let Err(e) = cg.kill_all(nix::sys::signal::Signal::SIGKILL) {
                    tracing::warn!(agent = a.id, "kill what is left of the agent: {e}");
                }
                if let Err(e) = cg.remove() {
                    tracing::warn!(agent = a.id, "remove the agent's cgroup: {e}");
                }
            }
        }
        if last {
            unmount_work(&a);
        }
    })
    .await;
}

/// After a restart was called off: what [`cleanup`] leaves for a next run.
async fn release_agent(agent: &Arc<Agent>) {
    agent.socket_stop.cancel();
    let a = Arc::clone(agent);
    let _ = tokio::task::spawn_blocking(move || unmount_work(&a)).await;
}

fn unmount_work(agent: &Agent) {
    if let Some(work) = &agent.work_mount {
        // The work dir's tmpfs lives in memory; its contents go with the agent.
        if let Err(e) = nix::mount::umount2(work, nix::mount::MntFlags::MNT_DETACH) {
            tracing::warn!(agent = agent.id, "unmount {}: {e}", work.display());
        }
    }
}
