//! The kernel's cgroup subtree: `<the kernel's own cgroup>/<subtree>` in every hierarchy that
//! holds a controller we use, and the agent cgroups inside it.
//!
//! The subtree name comes from the state dir (the caller derives it), so several kernels on
//! one host each have their own and each cleans only its own.
//!
//! v2 setup, the no-internal-process rule: a non-root cgroup can enable controllers for its
//! children only while it has no processes, and the kernel starts inside its own cgroup. So
//! before enabling anything in `<own>/cgroup.subtree_control`, [`Cgroups::new`] creates the
//! leaf `<own>/<subtree>-kernel` and moves the kernel process into it, then every other
//! process still in `<own>` (the shell or test harness that started the kernel shares its
//! cgroup; they would block the rule just the same). That is the scheme container inits use
//! (podman, docker-in-docker); it is skipped when `<own>` already enables what we need or
//! is the real root (no `cgroup.type` there; the root is exempt from the rule). Then `+memory
//! +cpu +pids`, those `<own>` has, are enabled in `<own>` and in `<own>/<subtree>`. The leaf
//! outlives [`Cgroups::remove_all`] (the kernel is still in it) and is reused by the next
//! start with the same subtree name; it is empty once the kernel exits.
//!
//! A hierarchy we cannot set up (no root, read-only mount, controller not delegated to us) is
//! not an error: its controllers are simply not available, the reason is kept in
//! [`Cgroups::notes`], and every agent created reports them as not in force.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use nix::sys::signal::Signal;

use super::agent::{remove_tree, version_label, AgentDir, Timeouts, LEAF};
use super::limits::{note, write_limits};
use super::{
    check_name, errno_of, AgentCgroup, CgroupError, CgroupFs, CgroupLimits, Controller, Layout,
    Version,
};

/// One hierarchy the kernel uses.
#[derive(Debug, Clone)]
struct Hierarchy {
    version: Version,
    mount: PathBuf,
    /// `<own>/<subtree>`.
    base: PathBuf,
    /// The controllers usable for agents here.
    controllers: Vec<Controller>,
}

/// The kernel's cgroup subtree in every hierarchy.
#[derive(Debug)]
pub struct Cgroups {
    fs: Arc<dyn CgroupFs>,
    subtree: String,
    hierarchies: Vec<Hierarchy>,
    kernel_leaf: Option<PathBuf>,
    notes: Vec<String>,
    timeouts: Timeouts,
    /// The v1 hierarchy [`Cgroups::placement_warmer`] uses, if there is one.
    warm: Option<WarmTarget>,
}

/// Where a [`PlacementWarmer`] moves its thread: the kernel's own cgroup in one v1 hierarchy.
#[derive(Debug, Clone)]
struct WarmTarget {
    /// A controller of that hierarchy, to find its line in `/proc/thread-self/cgroup`.
    controller: Controller,
    /// The kernel's own cgroup as that line showed it at start.
    proc_path: String,
    /// `<own>/tasks`.
    tasks: PathBuf,
}

/// Starts cgroup v1's wait for an RCU grace period ahead of a placement, with no effect on
/// any process's cgroups ([`Cgroups::placement_warmer`]).
#[derive(Debug, Clone)]
pub struct PlacementWarmer {
    fs: Arc<dyn CgroupFs>,
    target: WarmTarget,
}

// Read by METRICS_* (issue 9), the demos and the tests; not by the kernel yet.
#[cfg_attr(not(test), allow(dead_code))]
impl Cgroups {
    /// Creates (or reuses) the kernel's subtree `<own>/<subtree>` in every hierarchy that has
    /// a controller we use, doing the v2 leaf move and `subtree_control` setup described in
    /// the module docs. Fails only for an invalid subtree name; hierarchies that cannot be
    /// set up leave their controllers unavailable (see [`Cgroups::available`] and
    /// [`Cgroups::notes`]).
    pub fn new(
        fs: Arc<dyn CgroupFs>,
        layout: Layout,
        subtree: &str,
    ) -> Result<Cgroups, CgroupError> {
        check_name(subtree)?;
        let mut cg = Cgroups {
            fs,
            subtree: subtree.to_string(),
            hierarchies: Vec::new(),
            kernel_leaf: None,
            notes: layout.notes().to_vec(),
            timeouts: Timeouts::default(),
            warm: None,
        };

        // Co-mounted controllers (cpu,cpuacct; everything on v2) share one hierarchy.
        let mut groups: BTreeMap<(Version, PathBuf, PathBuf), Vec<Controller>> = BTreeMap::new();
        for (c, p) in layout.placements() {
            groups
                .entry((p.version, p.mount.clone(), p.own.clone()))
                .or_default()
                .push(c);
        }
        for ((version, mount, own), placed) in groups {
            let base = own.join(subtree);
            let controllers = match version {
                Version::V1 => cg.setup_v1(&base, &placed),
                Version::V2 => cg.setup_v2(&own, &base, &placed),
            };
            if version == Version::V1 && cg.warm.is_none() {
                cg.warm = controllers.first().and_then(|&c| {
                    Some(WarmTarget {
                        controller: c,
                        proc_path: layout.placement(c)?.proc_path.clone(),
                        tasks: own.join("tasks"),
                    })
                });
            }
            if controllers.is_empty() {
                // Nothing usable here: do not leave an empty subtree behind.
                if cg.fs.exists(&base) && cg.fs.subdirs(&base).is_ok_and(|s| s.is_empty()) {
                    let _ = cg.fs.rmdir(&base);
                }
                continue;
            }
            cg.hierarchies.push(Hierarchy {
                version,
                mount,
                base,
                controllers,
            });
        }
        for n in &cg.notes {
            tracing::warn!("cgroups: {n}");
        }
        Ok(cg)
    }

    /// Replaces the bounded waits (tests use short ones).
    pub fn set_timeouts(&mut self, timeouts: Timeouts) {
        self.timeouts = timeouts;
    }

    fn mkdir_tolerant(&self, dir: &Path) -> Result<(), std::io::Error> {
        match self.fs.mkdir(dir) {
            Err(e) if errno_of(&e) == Some(libc::EEXIST) => Ok(()),
            other => other,
        }
    }

    fn setup_v1(&mut self, base: &Path, placed: &[Controller]) -> Vec<Controller> {
        if let Err(e) = self.mkdir_tolerant(base) {
            let e = CgroupError::io("create cgroup", base, e);
            self.notes.push(format!("{}: {e}", names(placed)));
            return Vec::new();
        }
        // A mounted controller may still lack a feature file; check what is there.
        placed
            .iter()
            .copied()
            .filter(|c| {
                let probe = match c {
                    Controller::Memory => "memory.limit_in_bytes",
                    Controller::Cpu => "cpu.shares",
                    Controller::Cpuacct => "cpuacct.usage",
                    Controller::Pids => "pids.max",
                    Controller::Freezer => "freezer.state",
                };
                let ok = self.fs.exists(&base.join(probe));
                if !ok {
                    self.notes
                        .push(format!("{c}: {} has no {probe}", base.display()));
                }
                ok
            })
            .collect()
    }

    fn setup_v2(&mut self, own: &Path, base: &Path, placed: &[Controller]) -> Vec<Controller> {
        let offered = match self.fs.read(&own.join("cgroup.controllers")) {
            Ok(s) => s,
            Err(e) => {
                let e = CgroupError::io("read", &own.join("cgroup.controllers"), e);
                self.notes.push(format!("{}: {e}", names(placed)));
                return Vec::new();
            }
        };
        let mut enable: Vec<Controller> = Vec::new();
        for c in placed.iter().copied().filter(|c| c.needs_enabling_on_v2()) {
            if offered.split_whitespace().any(|o| o == c.name()) {
                enable.push(c);
            } else {
                self.notes.push(format!(
                    "{c}: not offered by {} (cgroup.controllers: {})",
                    own.display(),
                    offered.trim()
                ));
            }
        }

        let own_control = own.join("cgroup.subtree_control");
        let enabled_in_own = self.fs.read(&own_control).unwrap_or_default();
        let missing: Vec<Controller> = enable
            .iter()
            .copied()
            .filter(|c| !enabled_in_own.split_whitespace().any(|o| o == c.name()))
            .collect();
        if !missing.is_empty() && self.fs.exists(&own.join("cgroup.type")) {
            self.move_into_leaf(own);
        }
        for c in missing {
            if let Err(e) = self.fs.write(&own_control, &format!("+{c}")) {
                let e = CgroupError::io(format!("enable +{c} in"), &own_control, e);
                self.notes.push(e.to_string());
                enable.retain(|x| *x != c);
            }
        }

        if let Err(e) = self.mkdir_tolerant(base) {
            let e = CgroupError::io("create cgroup", base, e);
            self.notes.push(format!("{}: {e}", names(placed)));
            return Vec::new();
        }
        if let Err(e) = enable_v2(self.fs.as_ref(), base, &mut enable) {
            self.notes.push(e.to_string());
        }

        // Core v2 features, present in every non-root cgroup of a recent enough kernel.
        let mut available = enable;
        for (c, file) in [
            (Controller::Cpuacct, "cpu.stat"),
            (Controller::Freezer, "cgroup.freeze"),
        ] {
            if placed.contains(&c) {
                if self.fs.exists(&base.join(file)) {
                    available.push(c);
                } else {
                    self.notes
                        .push(format!("{c}: {} has no {file}", base.display()));
                }
            }
        }
        available.sort();
        available
    }

    /// Moves the kernel, then every other process left in `own`, into `<own>/<subtree>-kernel`.
    fn move_into_leaf(&mut self, own: &Path) {
        let leaf = own.join(format!("{}-kernel", self.subtree));
        if let Err(e) = self.mkdir_tolerant(&leaf) {
            let e = CgroupError::io("create cgroup", &leaf, e);
            self.notes.push(e.to_string());
            return;
        }
        let procs = leaf.join("cgroup.procs");
        let me = std::process::id();
        if let Err(e) = self.fs.write(&procs, &me.to_string()) {
            let e = CgroupError::io(format!("add process {me} to"), &procs, e);
            self.notes.push(e.to_string());
            return;
        }
        self.kernel_leaf = Some(leaf.clone());
        // Processes may fork while we move them: a few rounds, then whatever remains makes
        // the enabling fail with EBUSY, which is noted.
        let mut refused = Vec::new();
        for _ in 0..5 {
            let left: Vec<u32> = match self.fs.read(&own.join("cgroup.procs")) {
                Ok(s) => super::fs::parse_pids(&s)
                    .into_iter()
                    .filter(|p| !refused.contains(p))
                    .collect(),
                Err(_) => break,
            };
            if left.is_empty() {
                break;
            }
            for pid in left {
                match self.fs.write(&procs, &pid.to_string()) {
                    Ok(()) => tracing::info!(
                        pid,
                        leaf = %leaf.display(),
                        "cgroups: moved a process sharing the kernel's cgroup into the kernel's leaf"
                    ),
                    // Exited meanwhile.
                    Err(e) if errno_of(&e) == Some(libc::ESRCH) => {}
                    Err(e) => {
                        let e = CgroupError::io(format!("add process {pid} to"), &procs, e);
                        self.notes.push(e.to_string());
                        refused.push(pid);
                    }
                }
            }
        }
    }

    /// The controllers usable for agents.
    pub fn available(&self) -> Vec<Controller> {
        let mut v: Vec<Controller> = self
            .hierarchies
            .iter()
            .flat_map(|h| h.controllers.iter().copied())
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// Whether `c` is usable for agents.
    pub fn has(&self, c: Controller) -> bool {
        self.hierarchies.iter().any(|h| h.controllers.contains(&c))
    }

    /// Why some controllers are unavailable (and anything else detection skipped).
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// The subtree directory in each hierarchy in use.
    pub fn subtree_dirs(&self) -> Vec<PathBuf> {
        self.hierarchies.iter().map(|h| h.base.clone()).collect()
    }

    /// A handle that starts cgroup v1's grace period ahead of a placement; `None` without a
    /// v1 hierarchy in use.
    pub fn placement_warmer(&self) -> Option<PlacementWarmer> {
        self.warm.clone().map(|target| PlacementWarmer {
            fs: self.fs.clone(),
            target,
        })
    }

    /// Each hierarchy in use: its version, its mount point and the kernel's subtree in it
    /// (METRICS_CGROUP resolves paths against them).
    pub fn hierarchies(&self) -> Vec<(Version, PathBuf, PathBuf)> {
        self.hierarchies
            .iter()
            .map(|h| (h.version, h.mount.clone(), h.base.clone()))
            .collect()
    }

    /// The file system access the layer goes through.
    pub fn fs(&self) -> &Arc<dyn CgroupFs> {
        &self.fs
    }

    /// The v2 leaf the kernel moved itself into, if it had to.
    pub fn kernel_leaf(&self) -> Option<&Path> {
        self.kernel_leaf.as_deref()
    }

    /// `"v1"`, `"v2"`, `"hybrid"` or `"none"`, over the hierarchies in use.
    pub fn version_label(&self) -> &'static str {
        version_label(self.hierarchies.iter().map(|h| h.version))
    }

    /// Creates an agent's cgroup `name` under `parent`'s (so the parent's limits cap it) or
    /// under the kernel's subtree, and writes `limits`. Returns the cgroup and the names of
    /// the limits not in force because this host lacks the controller or the feature:
    /// `"memory"`, `"swap"` (memory is limited but swap is not capped), `"cpu"`, `"pids"`,
    /// and `"freezer"` (the agent cannot be frozen). Anything created is removed again on
    /// failure.
    pub fn create(
        &self,
        parent: Option<&AgentCgroup>,
        name: &str,
        limits: &CgroupLimits,
    ) -> Result<(AgentCgroup, Vec<&'static str>), CgroupError> {
        check_name(name)?;
        limits.validate()?;
        let mut not_applied = Vec::new();
        for c in limits.wanted() {
            if !self.has(c) {
                note(&mut not_applied, c.name());
            }
        }
        if !self.has(Controller::Freezer) {
            note(&mut not_applied, "freezer");
        }

        let mut agent = AgentCgroup {
            fs: Arc::clone(&self.fs),
            name: name.to_string(),
            dirs: Vec::new(),
            timeouts: self.timeouts,
        };
        for h in &self.hierarchies {
            if let Err(e) = self.create_in(h, parent, &mut agent, limits, &mut not_applied) {
                // Best effort: the creation error is the one to report.
                let _ = agent.remove();
                return Err(e);
            }
        }
        Ok((agent, not_applied))
    }

    fn create_in(
        &self,
        h: &Hierarchy,
        parent: Option<&AgentCgroup>,
        agent: &mut AgentCgroup,
        limits: &CgroupLimits,
        not_applied: &mut Vec<&'static str>,
    ) -> Result<(), CgroupError> {
        let parent_dir = match parent {
            None => h.base.clone(),
            Some(p) => p.dir_in(&h.mount).map(Path::to_path_buf).ok_or_else(|| {
                CgroupError::InvalidName {
                    name: p.name().to_string(),
                    reason: "parent cgroup is not from this kernel's subtree",
                }
            })?,
        };
        let mut controllers = h.controllers.clone();
        if h.version == Version::V2 && parent.is_some() {
            // The parent agent's cgroup holds no processes (they are in its leaf), so it can
            // pass its controllers down; should the kernel refuse one anyway, the limits
            // that need it are reported as not in force.
            if let Err(e) = enable_v2(self.fs.as_ref(), &parent_dir, &mut controllers) {
                tracing::warn!("cgroups: {e}");
            }
            for c in limits.wanted() {
                if !controllers.contains(&c) {
                    note(not_applied, c.name());
                }
            }
        }
        let dir = parent_dir.join(&agent.name);
        self.fs
            .mkdir(&dir)
            .map_err(|e| CgroupError::io("create cgroup", &dir, e))?;
        agent.dirs.push(AgentDir {
            version: h.version,
            mount: h.mount.clone(),
            dir: dir.clone(),
            controllers: controllers.clone(),
        });
        if h.version == Version::V2 {
            let leaf = dir.join(LEAF);
            self.fs
                .mkdir(&leaf)
                .map_err(|e| CgroupError::io("create cgroup", &leaf, e))?;
        }
        write_limits(
            self.fs.as_ref(),
            h.version,
            &dir,
            &controllers,
            limits,
            parent.is_some(),
            not_applied,
        )
    }

    /// The agent cgroups found in the subtree: leftovers of a previous run that crashed (this
    /// kernel has created none yet when this is called at startup).
    fn stale(&self) -> Result<Vec<AgentCgroup>, CgroupError> {
        let mut by_name: BTreeMap<String, Vec<AgentDir>> = BTreeMap::new();
        for h in &self.hierarchies {
            let names = match self.fs.subdirs(&h.base) {
                Ok(n) => n,
                Err(e) if errno_of(&e) == Some(libc::ENOENT) => continue,
                Err(e) => return Err(CgroupError::io("list", &h.base, e)),
            };
            for n in names {
                by_name.entry(n.clone()).or_default().push(AgentDir {
                    version: h.version,
                    mount: h.mount.clone(),
                    dir: h.base.join(&n),
                    controllers: h.controllers.clone(),
                });
            }
        }
        Ok(by_name
            .into_iter()
            .map(|(name, dirs)| AgentCgroup {
                fs: Arc::clone(&self.fs),
                name,
                dirs,
                timeouts: self.timeouts,
            })
            .collect())
    }

    /// Kills whatever is left in the agent cgroups inside this kernel's own subtree and
    /// removes them (a previous run that crashed). Returns how many were removed. Keeps going
    /// past a failure and reports the first one.
    pub fn clean_stale(&self) -> Result<usize, CgroupError> {
        let mut removed = 0;
        let mut first_err = None;
        for agent in self.stale()? {
            let r = agent
                .kill_all(Signal::SIGKILL)
                .and_then(|()| agent.remove());
            match r {
                Ok(()) => {
                    tracing::info!(name = agent.name(), "cgroups: removed a stale agent cgroup");
                    removed += 1;
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        first_err.map_or(Ok(removed), Err)
    }

    /// Shutdown: kills and removes every agent cgroup, then the subtree itself. The v2 kernel
    /// leaf stays (the kernel is still in it; see the module docs).
    pub fn remove_all(&self) -> Result<(), CgroupError> {
        let mut first_err = self.clean_stale().err();
        let deadline = Instant::now() + self.timeouts.remove;
        for h in &self.hierarchies {
            if let Err(e) = remove_tree(self.fs.as_ref(), &h.base, deadline) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

/// Enables `controllers` in `dir/cgroup.subtree_control` (those not enabled yet), dropping
/// from the list any the kernel refuses; the first refusal is returned after trying all.
fn enable_v2(
    fs: &dyn CgroupFs,
    dir: &Path,
    controllers: &mut Vec<Controller>,
) -> Result<(), CgroupError> {
    let path = dir.join("cgroup.subtree_control");
    let current = fs
        .read(&path)
        .map_err(|e| CgroupError::io("read", &path, e))?;
    let mut first_err = None;
    controllers.retain(|c| {
        if !c.needs_enabling_on_v2() || current.split_whitespace().any(|o| o == c.name()) {
            return true;
        }
        match fs.write(&path, &format!("+{c}")) {
            Ok(()) => true,
            Err(e) => {
                first_err.get_or_insert(CgroupError::io(format!("enable +{c} in"), &path, e));
                false
            }
        }
    });
    first_err.map_or(Ok(()), Err)
}

fn names(cs: &[Controller]) -> String {
    cs.iter().map(|c| c.name()).collect::<Vec<_>>().join(",")
}

impl PlacementWarmer {
    /// Moves the calling thread into the cgroup it is already in (the kernel's own, in one v1
    /// hierarchy): nothing changes for any process, but the write takes the lock every
    /// placement takes. On cgroup v1 (without the host's `favordynmods`) taking it first
    /// waits for an RCU grace period, 1.4 ms on a quiet host and 10 ms on a busy one, and the
    /// lock's fast path comes back only a grace period after the last holder let go. So a
    /// placement that starts while this one waits shares its grace period, and one that starts
    /// soon after it waits for none: SPAWN calls this as it begins, and the grace period runs
    /// while the agent's directories are made and init is cloned. (The write holds
    /// `cgroup_mutex` meanwhile, so making the agent's cgroup waits for it too; the placement
    /// could not have been done sooner anyway.)
    ///
    /// Skipped (`false`) when the thread's line in `/proc/thread-self/cgroup` no longer shows
    /// the kernel's own cgroup (someone moved the kernel): the write would then move it back.
    /// The line is read right before the write; a move in between is undone for this one
    /// thread of the blocking pool, which is harmless.
    pub fn warm(&self) -> bool {
        let here = Path::new("/proc/thread-self/cgroup");
        let Ok(text) = self.fs.read(here) else {
            return false;
        };
        if !in_v1_cgroup(&text, self.target.controller, &self.target.proc_path) {
            return false;
        }
        let tid = nix::unistd::gettid();
        self.fs.write(&self.target.tasks, &tid.to_string()).is_ok()
    }
}

/// Whether `text`, a `/proc/<pid>/cgroup` file, shows its task in cgroup `path` of the v1
/// hierarchy that holds `controller`.
fn in_v1_cgroup(text: &str, controller: Controller, path: &str) -> bool {
    text.lines().any(|line| {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(ctrls), Some(p)) = (parts.next(), parts.next(), parts.next()) else {
            return false;
        };
        p == path && ctrls.split(',').any(|c| c == controller.name())
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::sandbox::cgroup::FakeFs;

    const CI_MOUNTINFO: &str = include_str!("testdata/hybrid-v1-controllers.mountinfo");
    const CI_CGROUP: &str = include_str!("testdata/hybrid-v1-controllers.cgroup");
    const CI_MEMORY_OWN: &str =
        "/sys/fs/cgroup/memory/process_api/8660aacce27104503dc574237160f47d";

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    fn read(fs: &FakeFs, path: impl AsRef<Path>) -> String {
        fs.read(path.as_ref())
            .unwrap_or_else(|e| panic!("{}: {e}", path.as_ref().display()))
            .trim()
            .to_string()
    }

    fn short(mut cg: Cgroups) -> Cgroups {
        cg.set_timeouts(Timeouts {
            freeze: Duration::from_millis(100),
            kill: Duration::from_millis(200),
            remove: Duration::from_millis(100),
        });
        cg
    }

    fn all_limits() -> CgroupLimits {
        CgroupLimits {
            memory: Some(64 << 20),
            cpu_quota_us: Some(50_000),
            cpu_period_us: 100_000,
            cpu_shares: Some(512),
            pids_max: Some(16),
        }
    }

    /// This CI machine: every controller on its own v1 mount, an unused cgroup2 mount, the
    /// kernel's memory cgroup not at the root.
    fn ci_host() -> Arc<FakeFs> {
        let fs = Arc::new(FakeFs::new());
        for c in ["cpu", "cpuacct", "cpuset", "memory", "freezer", "pids"] {
            fs.mount_v1(&format!("/sys/fs/cgroup/{c}"), &[c]);
        }
        fs.mount_v2("/sys/fs/cgroup/unified", &["hugetlb"]);
        fs.mkdir_all(CI_MEMORY_OWN).unwrap();
        fs
    }

    #[test]
    fn the_placement_warmer_targets_the_kernels_own_v1_cgroup_only_while_it_is_there() {
        let fs = ci_host();
        let layout = Layout::detect(CI_MOUNTINFO, CI_CGROUP).unwrap();
        let cg = Cgroups::new(fs, layout, "clove-t").unwrap();
        let warmer = cg.placement_warmer().expect("a v1 hierarchy is in use");
        // The first hierarchy (cpu), where the kernel sits at the root.
        assert_eq!(warmer.target.controller, Controller::Cpu);
        assert_eq!(warmer.target.proc_path, "/");
        assert_eq!(warmer.target.tasks, p("/sys/fs/cgroup/cpu/tasks"));
        assert!(in_v1_cgroup(CI_CGROUP, Controller::Cpu, "/"));
        assert!(in_v1_cgroup(
            CI_CGROUP,
            Controller::Memory,
            "/process_api/8660aacce27104503dc574237160f47d"
        ));
        // Moved elsewhere since, or another hierarchy's line: the write would move it.
        let moved = CI_CGROUP.replace("1:cpu:/", "1:cpu:/elsewhere");
        assert!(!in_v1_cgroup(&moved, Controller::Cpu, "/"));
        assert!(!in_v1_cgroup(CI_CGROUP, Controller::Memory, "/"));
        // No /proc/thread-self/cgroup in the fake: nothing is written.
        assert!(!warmer.warm());
    }

    #[test]
    fn v1_subtree_agent_limits_membership_and_nesting() {
        let fs = ci_host();
        let layout = Layout::detect(CI_MOUNTINFO, CI_CGROUP).unwrap();
        let cg = Cgroups::new(fs.clone(), layout, "clove-t").unwrap();
        assert_eq!(cg.available(), Controller::ALL.to_vec(), "{:?}", cg.notes());
        assert_eq!(cg.version_label(), "v1");
        assert!(cg.kernel_leaf().is_none());
        // Never cpuset, never the unused cgroup2 mount.
        assert!(!fs.exists(&p("/sys/fs/cgroup/cpuset/clove-t")));
        assert!(!fs.exists(&p("/sys/fs/cgroup/unified/clove-t")));
        let base_mem = format!("{CI_MEMORY_OWN}/clove-t");
        assert!(fs.exists(&p(&base_mem)));

        let (a, not_applied) = cg.create(None, "a-1", &all_limits()).unwrap();
        assert!(not_applied.is_empty(), "{not_applied:?}");
        assert_eq!(a.version_label(), "v1");
        assert_eq!(a.paths().len(), 5);
        let mem = format!("{base_mem}/a-1");
        assert_eq!(
            read(&fs, format!("{mem}/memory.limit_in_bytes")),
            "67108864"
        );
        assert_eq!(
            read(&fs, format!("{mem}/memory.memsw.limit_in_bytes")),
            "67108864"
        );
        let cpu = "/sys/fs/cgroup/cpu/clove-t/a-1";
        assert_eq!(read(&fs, format!("{cpu}/cpu.cfs_quota_us")), "50000");
        assert_eq!(read(&fs, format!("{cpu}/cpu.cfs_period_us")), "100000");
        assert_eq!(read(&fs, format!("{cpu}/cpu.shares")), "512");
        assert_eq!(read(&fs, "/sys/fs/cgroup/pids/clove-t/a-1/pids.max"), "16");

        fs.spawn_in(100, &[]).unwrap();
        a.add_pid(100).unwrap();
        for c in ["cpu", "cpuacct", "pids", "freezer"] {
            assert_eq!(
                fs.cgroup_of(100, &format!("/sys/fs/cgroup/{c}")),
                Some(p(&format!("/sys/fs/cgroup/{c}/clove-t/a-1")))
            );
        }
        assert_eq!(fs.cgroup_of(100, "/sys/fs/cgroup/memory"), Some(p(&mem)));
        // Untouched hierarchies keep it where it was.
        assert_eq!(
            fs.cgroup_of(100, "/sys/fs/cgroup/cpuset"),
            Some(p("/sys/fs/cgroup/cpuset"))
        );

        // A child agent nests under its parent: the parent's limits cap it, and the parent's
        // figures cover it.
        let (b, not_applied) = cg.create(Some(&a), "b-2", &all_limits()).unwrap();
        assert!(not_applied.is_empty());
        assert!(b.paths().iter().all(|d| d.ends_with("clove-t/a-1/b-2")));
        fs.spawn_in(101, &[]).unwrap();
        b.add_pid(101).unwrap();
        assert_eq!(a.procs().unwrap(), vec![100, 101]);
        assert_eq!(b.procs().unwrap(), vec![101]);
        assert_eq!(a.pids_current().unwrap(), 2);

        a.freeze().unwrap();
        assert!(a.is_frozen().unwrap());
        assert!(b.is_frozen().unwrap(), "v1 freezing is hierarchical");
        a.thaw().unwrap();
        assert!(!b.is_frozen().unwrap());

        fs.set(
            &format!("{mem}/memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
        )
        .unwrap();
        fs.set(&format!("{mem}/memory.max_usage_in_bytes"), "5000")
            .unwrap();
        fs.set(&format!("{mem}/memory.usage_in_bytes"), "4000")
            .unwrap();
        fs.set(
            "/sys/fs/cgroup/cpuacct/clove-t/a-1/cpuacct.usage",
            "2500000",
        )
        .unwrap();
        assert_eq!(a.oom_kills().unwrap(), 1);
        assert_eq!(a.memory_peak().unwrap(), Some(5000));
        assert_eq!(a.memory_current().unwrap(), 4000);
        assert_eq!(a.cpu_usage_usec().unwrap(), 2500);
        let stats = a.stats().unwrap();
        assert_eq!(stats.frozen, Some(false));
        assert_eq!(stats.pids_current, Some(2));

        a.kill_all(Signal::SIGKILL).unwrap();
        assert!(!fs.is_alive(100) && !fs.is_alive(101));
        a.remove().unwrap();
        for d in a.paths().iter().chain(b.paths().iter()) {
            assert!(!fs.exists(d), "{}", d.display());
        }
        cg.remove_all().unwrap();
        assert!(!fs.exists(&p(&base_mem)));
        assert!(
            fs.exists(&p(CI_MEMORY_OWN)),
            "the kernel's own cgroup stays"
        );
    }

    fn pure_v2_host(own: &str) -> (Arc<FakeFs>, Layout) {
        let fs = Arc::new(FakeFs::new());
        fs.mount_v2("/sys/fs/cgroup", &["cpuset", "cpu", "io", "memory", "pids"]);
        fs.mkdir_all(&format!("/sys/fs/cgroup{own}")).unwrap();
        let layout = Layout::detect(
            "30 24 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n",
            &format!("0::{own}\n"),
        )
        .unwrap();
        (fs, layout)
    }

    #[test]
    fn v2_moves_the_kernel_into_a_leaf_and_enables_controllers_down_to_agents() {
        let own = "/sys/fs/cgroup/system.slice/clove.service";
        let (fs, layout) = pure_v2_host("/system.slice/clove.service");
        let me = std::process::id();
        // The kernel and the shell that started it share the service's cgroup.
        fs.spawn_in(me, &[own]).unwrap();
        fs.spawn_in(4242, &[own]).unwrap();

        let cg = Cgroups::new(fs.clone(), layout, "clove-t").unwrap();
        let leaf = format!("{own}/clove-t-kernel");
        assert_eq!(cg.kernel_leaf(), Some(Path::new(&leaf)));
        assert_eq!(fs.cgroup_of(me, "/sys/fs/cgroup"), Some(p(&leaf)));
        assert_eq!(fs.cgroup_of(4242, "/sys/fs/cgroup"), Some(p(&leaf)));
        assert_eq!(read(&fs, format!("{own}/cgroup.procs")), "");
        // Ours, and never cpuset or io.
        assert_eq!(
            read(&fs, format!("{own}/cgroup.subtree_control")),
            "cpu memory pids"
        );
        let base = format!("{own}/clove-t");
        assert_eq!(
            read(&fs, format!("{base}/cgroup.subtree_control")),
            "cpu memory pids"
        );
        assert_eq!(cg.available(), Controller::ALL.to_vec(), "{:?}", cg.notes());
        assert_eq!(cg.version_label(), "v2");

        let (a, not_applied) = cg.create(None, "a-1", &all_limits()).unwrap();
        assert!(not_applied.is_empty(), "{not_applied:?}");
        let dir = format!("{base}/a-1");
        assert_eq!(read(&fs, format!("{dir}/memory.max")), "67108864");
        assert_eq!(read(&fs, format!("{dir}/memory.swap.max")), "0");
        assert_eq!(read(&fs, format!("{dir}/cpu.max")), "50000 100000");
        assert_eq!(read(&fs, format!("{dir}/cpu.weight")), "58");
        assert_eq!(read(&fs, format!("{dir}/pids.max")), "16");

        // Processes go to the agent's leaf, so the agent's cgroup can pass controllers down.
        fs.spawn_in(100, &[]).unwrap();
        a.add_pid(100).unwrap();
        assert_eq!(
            fs.cgroup_of(100, "/sys/fs/cgroup"),
            Some(p(&format!("{dir}/_procs")))
        );
        let (b, not_applied) = cg.create(Some(&a), "b-2", &all_limits()).unwrap();
        assert!(not_applied.is_empty(), "{not_applied:?}");
        assert_eq!(
            read(&fs, format!("{dir}/cgroup.subtree_control")),
            "cpu memory pids"
        );
        assert_eq!(read(&fs, format!("{dir}/b-2/memory.max")), "67108864");
        fs.spawn_in(101, &[]).unwrap();
        b.add_pid(101).unwrap();
        assert_eq!(a.procs().unwrap(), vec![100, 101]);

        a.freeze().unwrap();
        assert_eq!(read(&fs, format!("{dir}/cgroup.freeze")), "1");
        assert!(b.is_frozen().unwrap());
        a.thaw().unwrap();
        assert!(!a.is_frozen().unwrap());

        fs.set(
            &format!("{dir}/memory.events"),
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n",
        )
        .unwrap();
        fs.set(
            &format!("{dir}/cpu.stat"),
            "usage_usec 1234\nuser_usec 1000\n",
        )
        .unwrap();
        fs.set(&format!("{dir}/memory.peak"), "777").unwrap();
        assert_eq!(a.oom_kills().unwrap(), 1);
        assert_eq!(a.cpu_usage_usec().unwrap(), 1234);
        assert_eq!(a.memory_peak().unwrap(), Some(777));

        // cgroup.kill takes the whole subtree, frozen or not, without signalling pid by
        // pid; nothing is left frozen.
        b.freeze().unwrap();
        a.freeze().unwrap();
        a.kill_all(Signal::SIGKILL).unwrap();
        assert!(!fs.is_alive(100) && !fs.is_alive(101));
        assert!(fs.signals().iter().all(|(_, s)| *s == Signal::SIGKILL));
        assert_eq!(read(&fs, format!("{dir}/cgroup.freeze")), "0");
        assert_eq!(read(&fs, format!("{dir}/b-2/cgroup.freeze")), "0");
        a.remove().unwrap();
        assert!(!fs.exists(&p(&dir)));
        cg.remove_all().unwrap();
        assert!(!fs.exists(&p(&base)));
        assert!(fs.exists(&p(&leaf)), "the kernel is still in its leaf");
    }

    #[test]
    fn v2_a_process_that_cannot_leave_blocks_the_controllers_and_is_reported() {
        let own = "/sys/fs/cgroup/user.slice/s.scope";
        let (fs, layout) = pure_v2_host("/user.slice/s.scope");
        fs.spawn_in(std::process::id(), &[own]).unwrap();
        // Another user's process, which we may not move.
        fs.spawn_in(4242, &[own]).unwrap();
        fs.set_immovable(4242);
        let cg = Cgroups::new(fs.clone(), layout, "k").unwrap();
        assert_eq!(
            cg.available(),
            vec![Controller::Cpuacct, Controller::Freezer]
        );
        let notes = cg.notes().join("\n");
        assert!(
            notes.contains(&format!(
                "add process 4242 to {own}/k-kernel/cgroup.procs: operation not permitted"
            )),
            "{notes}"
        );
        assert!(
            notes.contains(&format!(
                "enable +memory in {own}/cgroup.subtree_control: device or resource busy"
            )),
            "{notes}"
        );
        let (_, not_applied) = cg.create(None, "a", &all_limits()).unwrap();
        assert_eq!(not_applied, vec!["memory", "cpu", "pids"]);
    }

    #[test]
    fn v2_root_cgroup_is_exempt_and_nothing_moves() {
        let (fs, layout) = pure_v2_host("/");
        let me = std::process::id();
        fs.spawn_in(me, &[]).unwrap();
        let cg = Cgroups::new(fs.clone(), layout, "clove-t").unwrap();
        assert!(cg.kernel_leaf().is_none());
        assert_eq!(
            fs.cgroup_of(me, "/sys/fs/cgroup"),
            Some(p("/sys/fs/cgroup"))
        );
        assert_eq!(cg.available(), Controller::ALL.to_vec(), "{:?}", cg.notes());
    }

    /// systemd's hybrid mode with memory and pids on cgroup2, cpu,cpuacct and freezer on v1.
    #[test]
    fn hybrid_with_controllers_on_both_versions() {
        let mountinfo = "\
26 25 0:22 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw,nsdelegate
28 25 0:24 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
29 25 0:25 / /sys/fs/cgroup/freezer rw - cgroup cgroup rw,freezer
";
        let cgroup = "4:freezer:/\n3:cpu,cpuacct:/user.slice\n0::/user.slice/k.scope\n";
        let fs = Arc::new(FakeFs::new());
        fs.mount_v2("/sys/fs/cgroup/unified", &["memory", "pids"]);
        fs.mount_v1("/sys/fs/cgroup/cpu,cpuacct", &["cpu", "cpuacct"]);
        fs.mount_v1("/sys/fs/cgroup/freezer", &["freezer"]);
        let own2 = "/sys/fs/cgroup/unified/user.slice/k.scope";
        fs.mkdir_all(own2).unwrap();
        fs.mkdir_all("/sys/fs/cgroup/cpu,cpuacct/user.slice")
            .unwrap();
        let me = std::process::id();
        fs.spawn_in(me, &[own2]).unwrap();

        let layout = Layout::detect(mountinfo, cgroup).unwrap();
        let cg = Cgroups::new(fs.clone(), layout, "clove-t").unwrap();
        assert_eq!(cg.version_label(), "hybrid");
        assert_eq!(cg.available(), Controller::ALL.to_vec(), "{:?}", cg.notes());
        assert_eq!(
            cg.kernel_leaf(),
            Some(Path::new(&format!("{own2}/clove-t-kernel")))
        );
        // v2 offers no cpu here: only what it has is enabled.
        assert_eq!(
            read(&fs, format!("{own2}/cgroup.subtree_control")),
            "memory pids"
        );

        let (a, not_applied) = cg.create(None, "a-1", &all_limits()).unwrap();
        assert!(not_applied.is_empty(), "{not_applied:?}");
        assert_eq!(a.version_label(), "hybrid");
        assert_eq!(a.paths().len(), 3);
        assert_eq!(
            read(
                &fs,
                "/sys/fs/cgroup/cpu,cpuacct/user.slice/clove-t/a-1/cpu.cfs_quota_us"
            ),
            "50000"
        );
        assert_eq!(
            read(&fs, format!("{own2}/clove-t/a-1/memory.max")),
            "67108864"
        );
        fs.spawn_in(100, &[]).unwrap();
        a.add_pid(100).unwrap();
        assert_eq!(
            fs.cgroup_of(100, "/sys/fs/cgroup/unified"),
            Some(p(&format!("{own2}/clove-t/a-1/_procs")))
        );
        assert_eq!(
            fs.cgroup_of(100, "/sys/fs/cgroup/freezer"),
            Some(p("/sys/fs/cgroup/freezer/clove-t/a-1"))
        );
        // Frozen on v1: the kill must thaw for SIGKILL to land.
        a.freeze().unwrap();
        assert_eq!(
            read(&fs, "/sys/fs/cgroup/freezer/clove-t/a-1/freezer.state"),
            "FROZEN"
        );
        a.kill_all(Signal::SIGKILL).unwrap();
        assert!(!fs.is_alive(100));
        a.remove().unwrap();
        cg.remove_all().unwrap();
        for d in cg.subtree_dirs() {
            assert!(!fs.exists(&d), "{}", d.display());
        }
    }

    #[test]
    fn missing_controllers_are_reported_not_applied() {
        // Only memory (without swap accounting) and pids are mounted.
        let fs = Arc::new(FakeFs::new());
        fs.set_swap_accounting(false);
        fs.mount_v1("/cg/memory", &["memory"]);
        fs.mount_v1("/cg/pids", &["pids"]);
        let layout = Layout::detect(
            "1 0 0:1 / /cg/memory rw - cgroup cgroup rw,memory\n\
             2 0 0:2 / /cg/pids rw - cgroup cgroup rw,pids\n",
            "2:pids:/\n1:memory:/\n",
        )
        .unwrap();
        let cg = Cgroups::new(fs.clone(), layout, "k").unwrap();
        assert_eq!(cg.available(), vec![Controller::Memory, Controller::Pids]);
        let (a, not_applied) = cg.create(None, "a", &all_limits()).unwrap();
        assert_eq!(not_applied, vec!["cpu", "freezer", "swap"]);
        assert_eq!(
            read(&fs, "/cg/memory/k/a/memory.limit_in_bytes"),
            "67108864"
        );
        // Only what was asked is reported.
        let (_, not_applied) = cg
            .create(
                None,
                "b",
                &CgroupLimits {
                    pids_max: Some(3),
                    ..CgroupLimits::default()
                },
            )
            .unwrap();
        assert_eq!(not_applied, vec!["freezer"]);
        let e = a.freeze().unwrap_err();
        assert_eq!(
            e.to_string(),
            "freeze /cg/memory/k/a: no freezer controller"
        );
        assert!(!a.is_frozen().unwrap());
        assert!(matches!(
            a.cpu_usage_usec(),
            Err(CgroupError::Unsupported {
                controller: Controller::Cpuacct,
                ..
            })
        ));
        assert_eq!(a.stats().unwrap().cpu_usage_usec, None);
        cg.remove_all().unwrap();
    }

    #[test]
    fn v2_controllers_the_parent_does_not_offer_are_not_applied() {
        // The kernel's cgroup was delegated memory only.
        let fs = Arc::new(FakeFs::new());
        fs.mount_v2("/sys/fs/cgroup", &["memory"]);
        fs.mkdir_all("/sys/fs/cgroup/svc").unwrap();
        let layout = Layout::detect(
            "1 0 0:1 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
            "0::/svc\n",
        )
        .unwrap();
        let cg = Cgroups::new(fs.clone(), layout, "k").unwrap();
        assert_eq!(
            cg.available(),
            vec![Controller::Memory, Controller::Cpuacct, Controller::Freezer]
        );
        assert!(
            cg.notes().iter().any(|n| n.starts_with("cpu: not offered")),
            "{:?}",
            cg.notes()
        );
        let (_, not_applied) = cg.create(None, "a", &all_limits()).unwrap();
        assert_eq!(not_applied, vec!["cpu", "pids"]);
    }

    #[test]
    fn no_cgroups_at_all_still_creates_a_handle_that_says_so() {
        let cg = Cgroups::new(Arc::new(FakeFs::new()), Layout::default(), "k").unwrap();
        assert!(cg.available().is_empty());
        assert_eq!(cg.version_label(), "none");
        let (a, not_applied) = cg.create(None, "a", &all_limits()).unwrap();
        assert_eq!(not_applied, vec!["memory", "cpu", "pids", "freezer"]);
        assert_eq!(a.version_label(), "none");
        a.add_pid(1).unwrap();
        assert!(a.procs().unwrap().is_empty());
        a.remove().unwrap();
    }

    #[test]
    fn failed_creation_removes_what_it_made_and_nothing_else() {
        let fs = ci_host();
        let layout = Layout::detect(CI_MOUNTINFO, CI_CGROUP).unwrap();
        let cg = Cgroups::new(fs.clone(), layout, "clove-t").unwrap();
        // Someone else's cgroup of the same name in one hierarchy only.
        fs.mkdir(&p("/sys/fs/cgroup/pids/clove-t/a-1")).unwrap();
        let e = cg.create(None, "a-1", &all_limits()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "create cgroup /sys/fs/cgroup/pids/clove-t/a-1: file exists"
        );
        assert!(!fs.exists(&p("/sys/fs/cgroup/cpu/clove-t/a-1")));
        assert!(fs.exists(&p("/sys/fs/cgroup/pids/clove-t/a-1")));
        assert!(matches!(
            cg.create(None, "../escape", &all_limits()),
            Err(CgroupError::InvalidName { .. })
        ));
        assert!(matches!(
            Cgroups::new(fs.clone(), Layout::default(), "a/b"),
            Err(CgroupError::InvalidName { .. })
        ));
    }

    #[test]
    fn clean_stale_removes_only_this_kernels_leftovers() {
        let fs = ci_host();
        let layout = Layout::detect(CI_MOUNTINFO, CI_CGROUP).unwrap();
        {
            // A previous run that crashed, leaving a frozen agent with a process and a child.
            let old = Cgroups::new(fs.clone(), layout.clone(), "clove-k1").unwrap();
            let (a, _) = old.create(None, "a-1", &all_limits()).unwrap();
            let (b, _) = old.create(Some(&a), "a-2", &all_limits()).unwrap();
            fs.spawn_in(300, &[]).unwrap();
            b.add_pid(300).unwrap();
            a.freeze().unwrap();
            old.create(None, "a-3", &CgroupLimits::default()).unwrap();
        }
        // Another kernel on the same host.
        let other = Cgroups::new(fs.clone(), layout.clone(), "clove-k2").unwrap();
        let (x, _) = other.create(None, "a-1", &all_limits()).unwrap();
        fs.spawn_in(400, &[]).unwrap();
        x.add_pid(400).unwrap();

        let cg = Cgroups::new(fs.clone(), layout, "clove-k1").unwrap();
        assert_eq!(cg.clean_stale().unwrap(), 2);
        assert!(!fs.is_alive(300));
        assert!(fs
            .subdirs(&p("/sys/fs/cgroup/pids/clove-k1"))
            .unwrap()
            .is_empty());
        assert!(fs.is_alive(400));
        assert!(fs.exists(&p("/sys/fs/cgroup/pids/clove-k2/a-1")));
        assert_eq!(cg.clean_stale().unwrap(), 0);
    }

    #[test]
    fn waits_are_bounded() {
        let fs = ci_host();
        let layout = Layout::detect(CI_MOUNTINFO, CI_CGROUP).unwrap();
        let cg = short(Cgroups::new(fs.clone(), layout, "clove-t").unwrap());
        let (a, _) = cg.create(None, "a-1", &CgroupLimits::default()).unwrap();
        fs.spawn_in(500, &[]).unwrap();
        a.add_pid(500).unwrap();

        // A freeze that never completes: error, and the cgroup is thawed again.
        fs.set_freeze_stuck(true);
        let e = a.freeze().unwrap_err();
        assert!(
            e.to_string().starts_with(
                "freeze /sys/fs/cgroup/freezer/clove-t/a-1/freezer.state: not frozen after"
            ),
            "{e}"
        );
        assert_eq!(
            read(&fs, "/sys/fs/cgroup/freezer/clove-t/a-1/freezer.state"),
            "THAWED"
        );
        fs.set_freeze_stuck(false);

        // A task that will not die: kill_all gives up, remove reports EBUSY.
        fs.set_unkillable(500);
        let e = a.kill_all(Signal::SIGKILL).unwrap_err();
        assert!(e.to_string().contains("1 still alive after"), "{e}");
        let e = a.remove().unwrap_err();
        assert_eq!(e.errno(), Some(libc::EBUSY), "{e}");
        assert!(
            e.to_string().starts_with("remove cgroup /sys/fs/cgroup/"),
            "{e}"
        );
    }

    #[test]
    fn non_fatal_signals_are_sent_once_to_every_member() {
        let fs = ci_host();
        let layout = Layout::detect(CI_MOUNTINFO, CI_CGROUP).unwrap();
        let cg = Cgroups::new(fs.clone(), layout, "clove-t").unwrap();
        let (a, _) = cg.create(None, "a-1", &CgroupLimits::default()).unwrap();
        fs.spawn_in(600, &[]).unwrap();
        fs.spawn_in(601, &[]).unwrap();
        a.add_pid(600).unwrap();
        a.add_pid(601).unwrap();
        a.kill_all(Signal::SIGTERM).unwrap();
        let mut got: Vec<u32> = fs
            .signals()
            .into_iter()
            .filter(|(_, s)| *s == Signal::SIGTERM)
            .map(|(p, _)| p)
            .collect();
        got.sort_unstable();
        got.dedup();
        assert_eq!(got, vec![600, 601]);
        assert!(fs.is_alive(600));
    }
}
