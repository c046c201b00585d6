//! Setting up (once, at start) and tearing down (at shutdown) what agents need from the host:
//! the interpreter, the launcher thread, the cgroup subtree, the uid block and the agents'
//! directory. Leftovers of a previous run on the same state dir (a crash, a SIGKILL) are
//! removed first: stale work-dir mounts, agent cgroups of our own subtree, and the agent
//! directories, which are set aside, but for those of the agents the previous kernel saved
//! (they are restored with their directory, see `agents::restore`).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use super::uids::{state_dir_hash, UidBlock};
use super::{control, Agents, Host};
use crate::config::Config;
use crate::sandbox::cgroup::layout::unescape;
use crate::sandbox::cgroup::{Cgroups, HostFs, Layout};
use crate::sandbox::interpreter::Interpreter;
use crate::sandbox::launch::Launcher;

impl Host {
    /// Prepares the host side for the kernel whose state dir is `state_dir`.
    pub fn setup(config: &Config, state_dir: &Path) -> anyhow::Result<Host> {
        let root = nix::unistd::geteuid().is_root();
        let state_dir = state_dir
            .canonicalize()
            .with_context(|| format!("resolve state dir {}", state_dir.display()))?;
        let python = match Interpreter::resolve(&config.python) {
            Ok(i) => {
                tracing::info!(
                    python = %config.python,
                    executable = %i.executable.display(),
                    version = %i.version,
                    "agent interpreter"
                );
                Ok(i)
            }
            Err(e) => {
                tracing::warn!("{e}; agents that need Python cannot be spawned");
                Err(e.to_string())
            }
        };
        let launcher = Launcher::start().context("start the agent launcher")?;

        // What an earlier kernel left in it is sorted out once the saved agents are known
        // (`Host::set_aside_previous_run`).
        let dir = state_dir.join("agents");
        fs::create_dir_all(&dir)
            .and_then(|()| fs::set_permissions(&dir, fs::Permissions::from_mode(0o711)))
            .with_context(|| format!("create {}", dir.display()))?;

        let subtree = subtree_name(&state_dir);
        let (cgroups, cgroups_missing) = if !root {
            (None, Some("the kernel is not running as root".to_owned()))
        } else {
            match Layout::host().and_then(|layout| Cgroups::new(Arc::new(HostFs), layout, &subtree))
            {
                Ok(cg) => {
                    if let Err(e) = cg.clean_stale() {
                        tracing::warn!("remove stale agent cgroups: {e}");
                    }
                    (Some(cg), None)
                }
                Err(e) => {
                    tracing::warn!("cgroups unavailable, agents run without limits: {e}");
                    (None, Some(e.to_string()))
                }
            }
        };
        if !root {
            tracing::warn!(
                "not running as root: agents run without namespaces, uid switch or cgroups; SPAWN replies say so"
            );
        }
        Ok(Host {
            python,
            launcher,
            cgroups,
            cgroups_missing,
            uids: UidBlock::for_state_dir(&state_dir),
            subtree,
            retention: config.agent_retention,
            max_agents: config.max_agents,
            kill_grace: config.kill_grace,
            dir,
            root,
        })
    }
}

/// The cgroup subtree of the kernel on `state_dir`: unique per state dir, stable across runs
/// and builds (so a later build still cleans an earlier one's leftovers).
pub fn subtree_name(state_dir: &Path) -> String {
    format!("clove-{:08x}", state_dir_hash(state_dir) as u32)
}

impl Host {
    /// Sorts out what the previous kernel on this state dir left in the agents' directory:
    /// the directories of the agents in `keep` (those it saved, which this kernel restores)
    /// stay where they are, so their logs and work dirs go on; the others are set aside (see
    /// [`set_aside_previous_run`]).
    pub fn set_aside_previous_run(&self, keep: &[u32]) {
        set_aside_previous_run(&self.dir, self.retention, keep);
    }
}

/// Sets aside the agent directories of the previous run, but those of the agents in `keep`,
/// into `agents.prev-<unix time>`: their ids never come back, and their logs and work dirs
/// stay readable until the retention runs out. Every work-dir tmpfs is unmounted first (its
/// contents lived in memory and are gone with the kernel anyway; a restored agent gets a
/// fresh one), and earlier runs' directories past the retention are removed.
fn set_aside_previous_run(dir: &Path, retention: Duration, keep: &[u32]) {
    unmount_below(dir);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let leftovers: Vec<PathBuf> = fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| {
                    // The sandboxes' shared (empty) root mount point stays for the next ones.
                    if e.file_name() == super::spawn::SANDBOX_ROOT {
                        return false;
                    }
                    let id = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok());
                    !id.is_some_and(|id| keep.contains(&id))
                })
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    if !leftovers.is_empty() {
        let prev = dir.with_file_name(format!("agents.prev-{now}"));
        let moved = fs::create_dir_all(&prev).and_then(|()| {
            leftovers
                .iter()
                .try_for_each(|path| match path.file_name() {
                    Some(name) => fs::rename(path, prev.join(name)),
                    None => Ok(()),
                })
        });
        match moved {
            Ok(()) => tracing::info!(
                "the previous run's agent logs and work dirs are in {} for {}s",
                prev.display(),
                retention.as_secs()
            ),
            Err(e) => {
                tracing::warn!(
                    "set aside the previous run's agents in {}: {e}; removing them",
                    prev.display()
                );
                for path in &leftovers {
                    if path.exists() {
                        remove_dir(path);
                    }
                }
            }
        }
    }
    let Some(parent) = dir.parent() else {
        return;
    };
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(stamp) = name
            .to_str()
            .and_then(|n| n.strip_prefix("agents.prev-"))
            .and_then(|t| t.parse::<u64>().ok())
        else {
            continue;
        };
        let age = Duration::from_secs(now.saturating_sub(stamp));
        let path = entry.path();
        if age >= retention {
            remove_dir(&path);
        } else {
            expire_later(path, retention - age);
        }
    }
}

/// Removes `path` after `after` (an exited agent's directory, a previous run's agents).
pub fn expire_later(path: PathBuf, after: Duration) {
    // Before the runtime exists (start-up), a plain thread does the waiting.
    let remove = move || remove_dir(&path);
    match tokio::runtime::Handle::try_current() {
        Ok(h) => {
            h.spawn(async move {
                tokio::time::sleep(after).await;
                let _ = tokio::task::spawn_blocking(remove).await;
            });
        }
        Err(_) => {
            let _ = std::thread::Builder::new()
                .name("clove-expire".into())
                .spawn(move || {
                    std::thread::sleep(after);
                    remove();
                });
        }
    }
}

fn remove_dir(path: &Path) {
    unmount_below(path);
    if let Err(e) = fs::remove_dir_all(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!("remove {}: {e}", path.display());
        }
    }
}

/// Unmounts every mount at or below `dir`, deepest first.
fn unmount_below(dir: &Path) {
    let Ok(mountinfo) = fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut mounts: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape(field)))
        .filter(|p| p.starts_with(dir))
        .collect();
    mounts.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for m in mounts {
        if let Err(e) = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH) {
            tracing::warn!("unmount stale {}: {e}", m.display());
        }
    }
}

impl Agents {
    /// From now on no agent is restarted (KILL calls off pending restarts), and exits are
    /// final: the first step of the kernel's shutdown.
    pub fn begin_shutdown(&self) {
        self.shutting_down
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Stops the live agents that `which` picks, all at once, each with its own grace
    /// (`grace_ms`, else `grace`): SIGTERM, grace, SIGKILL.
    pub async fn stop_all(&self, grace: Duration, which: impl Fn(&super::Agent) -> bool) {
        let live: Vec<_> = self.live().into_iter().filter(|a| which(a)).collect();
        if !live.is_empty() {
            tracing::info!("stopping {} agent(s)", live.len());
        }
        let mut stops = tokio::task::JoinSet::new();
        for agent in live {
            let grace = control::grace_of(&agent, grace);
            stops.spawn(async move { control::kill(&agent, grace).await });
        }
        while let Some(done) = stops.join_next().await {
            if let Ok(Err(e)) = done {
                tracing::warn!("{}", e.message);
            }
        }
    }

    /// The end of the kernel's shutdown: stops whatever agent is left (`grace` each), then
    /// removes the cgroup subtree.
    pub async fn shutdown(&self, grace: Duration) {
        self.begin_shutdown();
        self.stop_all(grace, |_| true).await;
        if let Some(cg) = &self.host.cgroups {
            if let Err(e) = cg.remove_all() {
                tracing::warn!("remove the agents' cgroup subtree: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn previous_runs_are_set_aside_and_old_ones_removed() {
        let state = tempfile::tempdir().unwrap();
        let agents = state.path().join("agents");
        fs::create_dir_all(agents.join("2/work")).unwrap();
        fs::write(agents.join("2/output.log"), "hello\n").unwrap();
        // A saved agent's directory stays.
        fs::create_dir_all(agents.join("3/work")).unwrap();
        fs::write(agents.join("3/output.log"), "again\n").unwrap();
        let ancient = state.path().join("agents.prev-1");
        fs::create_dir_all(ancient.join("5")).unwrap();
        set_aside_previous_run(&agents, Duration::from_secs(3600), &[3, 9]);
        assert!(!agents.join("2").exists());
        assert_eq!(
            fs::read_to_string(agents.join("3/output.log")).unwrap(),
            "again\n"
        );
        assert!(!ancient.exists(), "past the retention: removed");
        let prev: Vec<_> = fs::read_dir(state.path())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p != &agents)
            .collect();
        assert_eq!(prev.len(), 1, "{prev:?}");
        assert_eq!(
            fs::read_to_string(prev[0].join("2/output.log")).unwrap(),
            "hello\n"
        );
        assert!(!prev[0].join("3").exists());
    }

    #[test]
    fn subtrees_differ_per_state_dir() {
        assert_ne!(
            subtree_name(Path::new("/var/lib/clove")),
            subtree_name(Path::new("/tmp/x"))
        );
        assert!(subtree_name(Path::new("/x")).starts_with("clove-"));
    }
}
