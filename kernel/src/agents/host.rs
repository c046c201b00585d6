//! Setting up (once, at start) and tearing down (at shutdown) what agents need from the host:
//! the interpreter, the launcher thread, the cgroup subtree, the uid block and the agents'
//! directory. Leftovers of a previous run on the same state dir (a crash, a SIGKILL) are
//! removed first: stale work-dir mounts, agent directories, agent cgroups of our own subtree.

use std::fs;
use std::hash::Hasher;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use super::uids::UidBlock;
use super::{control, Agents, Host};
use crate::config::Config;
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

        let dir = state_dir.join("agents");
        remove_stale_agents(&dir);
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
            dir,
            root,
        })
    }
}

/// The cgroup subtree of the kernel on `state_dir`: unique per state dir, stable across runs.
pub fn subtree_name(state_dir: &Path) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    // Only needs to be stable within one build: a stale subtree of another build is just
    // not cleaned. FNV would be stable forever; the uid block uses it for that reason.
    h.write(state_dir.as_os_str().as_encoded_bytes());
    format!("clove-{:08x}", h.finish() as u32)
}

/// Sets aside the agent directories of the previous run as `agents.prev` (their logs and work
/// dirs stay readable until the run after; ids restart, so they cannot stay where new agents
/// go), unmounting work-dir tmpfs first (their contents lived in memory and are gone anyway).
fn remove_stale_agents(dir: &Path) {
    let Ok(mountinfo) = fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut mounts: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape)
        .filter(|p| p.starts_with(dir))
        .collect();
    // Deepest first.
    mounts.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for m in mounts {
        if let Err(e) = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH) {
            tracing::warn!("unmount stale {}: {e}", m.display());
        }
    }
    if !dir.exists() {
        return;
    }
    let prev = dir.with_extension("prev");
    if prev.exists() {
        if let Err(e) = fs::remove_dir_all(&prev) {
            tracing::warn!("remove {}: {e}", prev.display());
        }
    }
    if let Err(e) = fs::rename(dir, &prev) {
        tracing::warn!("set aside {}: {e}; removing it", dir.display());
        if let Err(e) = fs::remove_dir_all(dir) {
            tracing::warn!("remove stale agent dirs {}: {e}", dir.display());
        }
    } else {
        tracing::info!(
            "the previous run's agent logs and work dirs are in {}",
            prev.display()
        );
    }
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(field: &str) -> PathBuf {
    let mut out = String::new();
    let mut chars = field.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let code: String = chars.by_ref().take(3).collect();
            if let Ok(b) = u8::from_str_radix(&code, 8) {
                out.push(b as char);
                continue;
            }
            out.push('\\');
            out.push_str(&code);
        } else {
            out.push(c);
        }
    }
    PathBuf::from(out)
}

impl Agents {
    /// Kernel shutdown: stop every agent (SIGTERM, grace, SIGKILL), then remove the cgroup
    /// subtree.
    pub async fn shutdown(&self, grace: Duration) {
        let live = self.live();
        if !live.is_empty() {
            tracing::info!("stopping {} agent(s)", live.len());
        }
        let stops = live
            .into_iter()
            .map(|a| async move { control::kill(&a, grace).await });
        for r in futures_join(stops).await {
            if let Err(e) = r {
                tracing::warn!("{}", e.message);
            }
        }
        if let Some(cg) = &self.host.cgroups {
            if let Err(e) = cg.remove_all() {
                tracing::warn!("remove the agents' cgroup subtree: {e}");
            }
        }
    }
}

/// Runs the futures concurrently and collects their outputs.
async fn futures_join<F>(futs: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let mut set = tokio::task::JoinSet::new();
    for f in futs {
        set.spawn(f);
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        if let Ok(v) = r {
            out.push(v);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_paths_are_unescaped() {
        assert_eq!(unescape(r"/a\040b"), PathBuf::from("/a b"));
        assert_eq!(unescape("/plain"), PathBuf::from("/plain"));
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
