//! METRICS_SYSTEM, METRICS_AGENT, METRICS_ALL_AGENTS, METRICS_CGROUP: who may see what, then
//! the readers of [`crate::metrics`] on a blocking thread.
//!
//! * The host's figures are for everyone (the same as `/proc` shows any local user).
//! * An agent sees itself and the agents it spawned (its descendants); an operator the agents
//!   it owns; a root operator every agent.
//! * METRICS_CGROUP reads the kernel's own cgroups only, by a path relative to the kernel's
//!   subtree (`agent-3`, `agent-3/agent-9`) or as absolute paths the replies give: an agent's
//!   cgroup follows the agent rule above, and the whole subtree (no path, for an operator) is
//!   root's. A root operator may also read any host cgroup, by its path under a cgroup mount
//!   (`/sys/fs/cgroup/memory/system.slice`) or as `/proc/<pid>/cgroup` writes it
//!   (`/system.slice`, looked up in every hierarchy the kernel uses). `..` is refused
//!   everywhere.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use clove_abi::msg::{
    MetricsAgentReply, MetricsAgentRequest, MetricsAllAgentsReply, MetricsAllAgentsRequest,
    MetricsCgroupReply, MetricsCgroupRequest, MetricsSystemReply, MetricsSystemRequest,
};
use clove_abi::{ErrorCode, WireError};

use crate::agents::control::authorize;
use crate::kernel::{Caller, Kernel};
use crate::metrics::cgroup::CgroupDir;
use crate::metrics::{self, blocking};
use crate::sandbox::cgroup::Version;

/// METRICS_SYSTEM: the host's figures.
pub async fn system(
    kernel: &Kernel,
    _caller: &Caller,
    _req: MetricsSystemRequest,
) -> Result<MetricsSystemReply, WireError> {
    let m = Arc::clone(&kernel.metrics);
    let metrics = blocking(move || m.system()).await?;
    Ok(MetricsSystemReply {
        success: true,
        metrics,
    })
}

/// METRICS_AGENT: one agent's figures; without `agent_id`, the calling agent's.
pub async fn agent(
    kernel: &Kernel,
    caller: &Caller,
    req: MetricsAgentRequest,
) -> Result<MetricsAgentReply, WireError> {
    let id =
        match (req.agent_id, caller.agent) {
            (Some(id), _) => id,
            (None, true) => caller.id,
            (None, false) => return Err(WireError::invalid_request(
                "agent_id: required from an operator (only an agent's own connection may leave \
                 it out)",
            )),
        };
    let agent = kernel.agents.find(clove_abi::msg::AgentRef::Id(id))?;
    authorize(&kernel.agents, caller, &agent, "read the metrics of")?;
    Ok(MetricsAgentReply {
        success: true,
        metrics: metrics::agent(&kernel.metrics, agent).await?,
    })
}

/// METRICS_ALL_AGENTS: every live agent the caller may see, by id.
pub async fn all_agents(
    kernel: &Kernel,
    caller: &Caller,
    _req: MetricsAllAgentsRequest,
) -> Result<MetricsAllAgentsReply, WireError> {
    let agents = &kernel.agents;
    let agents = metrics::all_agents(&kernel.metrics, agents, |a| {
        authorize(agents, caller, a, "").is_ok()
    })
    .await?;
    Ok(MetricsAllAgentsReply {
        success: true,
        count: agents.len() as u64,
        agents,
    })
}

/// METRICS_CGROUP: a cgroup's figures; see the module docs for the paths allowed.
pub async fn cgroup(
    kernel: &Kernel,
    caller: &Caller,
    req: MetricsCgroupRequest,
) -> Result<MetricsCgroupReply, WireError> {
    let Some(cgroups) = kernel.agents.host.cgroups.as_ref() else {
        return Err(WireError::new(
            ErrorCode::Unavailable,
            format!(
                "cgroups are not available to this kernel: {}",
                kernel
                    .agents
                    .host
                    .cgroups_missing
                    .as_deref()
                    .unwrap_or("not set up")
            ),
        ));
    };
    let hierarchies = cgroups.hierarchies();
    let root = caller.uid == 0 && !caller.agent;
    let target = match parse_path(req.cgroup_path.as_deref(), &hierarchies)? {
        Target::Own if caller.agent => Target::Agent(caller.id),
        t => t,
    };
    let (dirs, started) = match target {
        Target::Agent(id) => {
            let agent = kernel.agents.find(clove_abi::msg::AgentRef::Id(id))?;
            authorize(&kernel.agents, caller, &agent, "read the cgroup of")?;
            let run = agent.run();
            let cg = run.cgroup.as_ref().ok_or_else(|| {
                WireError::new(
                    ErrorCode::Unavailable,
                    format!("agent {id} ({}) has no cgroup", agent.name),
                )
            })?;
            (metrics::dirs_of(cg), Some(run.started))
        }
        Target::Own | Target::Subtree if root => (
            hierarchies
                .iter()
                .map(|(version, _, base)| CgroupDir {
                    version: *version,
                    dir: base.clone(),
                })
                .collect(),
            None,
        ),
        Target::Own | Target::Subtree => {
            return Err(WireError::new(
                ErrorCode::PermissionDenied,
                "the kernel's whole cgroup subtree: root operators only; name an agent's \
                 cgroup (agent-<id>)",
            ))
        }
        Target::Host(path) if root => {
            let dirs = host_dirs(&path, &hierarchies);
            let dirs: Vec<CgroupDir> = dirs
                .into_iter()
                .filter(|d| cgroups.fs().exists(&d.dir))
                .collect();
            if dirs.is_empty() {
                return Err(WireError::new(
                    ErrorCode::NotFound,
                    format!(
                        "cgroup {}: not found in any hierarchy this kernel uses",
                        path.display()
                    ),
                ));
            }
            (dirs, None)
        }
        Target::Host(path) => {
            return Err(WireError::new(
                ErrorCode::PermissionDenied,
                format!(
                    "cgroup {}: outside the kernel's subtree; only root operators may read host \
                     cgroups",
                    path.display()
                ),
            ))
        }
    };
    let fs = Arc::clone(cgroups.fs());
    let m = Arc::clone(&kernel.metrics);
    let metrics = blocking(move || {
        m.cgroup(fs.as_ref(), &dirs, started)
            .map_err(|e| WireError::new(ErrorCode::Internal, e.to_string()))
    })
    .await?;
    Ok(MetricsCgroupReply {
        success: true,
        metrics,
    })
}

/// What a METRICS_CGROUP path names.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    /// No path: the caller's own cgroup (an agent's), or the whole subtree (an operator's).
    Own,
    /// The kernel's subtree itself.
    Subtree,
    /// An agent's cgroup, by the agent's id (the deepest `agent-<id>` of the path).
    Agent(u32),
    /// A host cgroup outside the kernel's subtree (absolute).
    Host(PathBuf),
}

/// Reads a METRICS_CGROUP path against the hierarchies `(version, mount, subtree)`.
fn parse_path(
    path: Option<&str>,
    hierarchies: &[(Version, PathBuf, PathBuf)],
) -> Result<Target, WireError> {
    let Some(raw) = path.filter(|p| !p.is_empty()) else {
        return Ok(Target::Own);
    };
    let bad = |why: &str| WireError::invalid_request(format!("cgroup_path {raw:?}: {why}"));
    let p = Path::new(raw);
    if p.components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err(bad("'.' and '..' are not allowed"));
    }
    let rel: PathBuf = if p.is_absolute() {
        match hierarchies
            .iter()
            .find_map(|(_, _, base)| p.strip_prefix(base).ok())
        {
            Some(rel) => rel.to_path_buf(),
            None => return Ok(Target::Host(p.to_path_buf())),
        }
    } else {
        p.to_path_buf()
    };
    let mut last = None;
    for c in rel.components() {
        let id = c
            .as_os_str()
            .to_str()
            .and_then(|s| s.strip_prefix("agent-"))
            .and_then(|n| n.parse::<u32>().ok());
        match id {
            Some(id) => last = Some(id),
            // The v2 leaf of an agent's own processes: the same agent.
            None if c.as_os_str() == crate::sandbox::cgroup::agent::LEAF && last.is_some() => {}
            None => {
                return Err(bad(
                    "expected agent-<id> (or agent-<id>/agent-<id>...) relative to the kernel's \
                     cgroup subtree, or an absolute path",
                ))
            }
        }
    }
    Ok(last.map_or(Target::Subtree, Target::Agent))
}

/// Where a host cgroup path is: itself when it is under a mount the kernel uses, else
/// the path as `/proc/<pid>/cgroup` writes it, in every hierarchy.
fn host_dirs(path: &Path, hierarchies: &[(Version, PathBuf, PathBuf)]) -> Vec<CgroupDir> {
    let under_mount = hierarchies
        .iter()
        .filter(|(_, mount, _)| path.starts_with(mount))
        .max_by_key(|(_, mount, _)| mount.as_os_str().len());
    if let Some((version, _, _)) = under_mount {
        return vec![CgroupDir {
            version: *version,
            dir: path.to_path_buf(),
        }];
    }
    let rel = path.strip_prefix("/").unwrap_or(path);
    let mut dirs: Vec<CgroupDir> = hierarchies
        .iter()
        .map(|(version, mount, _)| CgroupDir {
            version: *version,
            dir: mount.join(rel),
        })
        .collect();
    dirs.dedup();
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v1() -> Vec<(Version, PathBuf, PathBuf)> {
        ["memory", "cpu,cpuacct", "pids"]
            .iter()
            .map(|h| {
                let mount = Path::new("/sys/fs/cgroup").join(h);
                let base = mount.join("user.slice/clove-ab");
                (Version::V1, mount, base)
            })
            .collect()
    }

    #[test]
    fn agent_paths_relative_or_as_replies_give_them() {
        let h = v1();
        assert_eq!(parse_path(None, &h).unwrap(), Target::Own);
        assert_eq!(parse_path(Some(""), &h).unwrap(), Target::Own);
        assert_eq!(parse_path(Some("agent-3"), &h).unwrap(), Target::Agent(3));
        assert_eq!(
            parse_path(Some("agent-3/agent-9"), &h).unwrap(),
            Target::Agent(9)
        );
        assert_eq!(
            parse_path(Some("/sys/fs/cgroup/pids/user.slice/clove-ab/agent-4"), &h).unwrap(),
            Target::Agent(4)
        );
        assert_eq!(
            parse_path(Some("agent-4/_procs"), &h).unwrap(),
            Target::Agent(4)
        );
        assert_eq!(
            parse_path(Some("/sys/fs/cgroup/memory/user.slice/clove-ab"), &h).unwrap(),
            Target::Subtree
        );
    }

    #[test]
    fn escapes_and_strangers_are_refused_or_host_paths() {
        let h = v1();
        for bad in [
            "agent-3/..",
            "../x",
            "agent-3/./x",
            "x",
            "agent-x",
            "_procs",
        ] {
            let e = parse_path(Some(bad), &h).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidRequest, "{bad}");
            assert!(e.message.contains(bad), "{e:?}");
        }
        assert_eq!(
            parse_path(Some("/system.slice"), &h).unwrap(),
            Target::Host("/system.slice".into())
        );
        let e = parse_path(Some("/sys/fs/cgroup/memory/../../etc"), &h).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRequest);
    }

    #[test]
    fn host_paths_resolve_per_hierarchy() {
        let h = v1();
        assert_eq!(
            host_dirs(Path::new("/sys/fs/cgroup/memory/system.slice"), &h),
            vec![CgroupDir {
                version: Version::V1,
                dir: "/sys/fs/cgroup/memory/system.slice".into()
            }]
        );
        let dirs = host_dirs(Path::new("/system.slice"), &h);
        assert_eq!(dirs.len(), 3);
        assert_eq!(dirs[2].dir, Path::new("/sys/fs/cgroup/pids/system.slice"));
    }
}
