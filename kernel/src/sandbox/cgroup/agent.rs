//! One agent's cgroup, in every hierarchy the kernel uses: membership, statistics, freezing,
//! killing and removal. Created by [`super::Cgroups::create`].
//!
//! On v2 an agent's processes do not sit in the agent's cgroup itself but in its leaf
//! `<agent>/_procs`: the agent's cgroup must stay free of processes so that it can enable
//! controllers for the cgroups of the agents it spawns (nested as `<agent>/<child>`), which is
//! how a parent's limits cap its whole subtree. On v1 there is no such rule and processes sit
//! in `<agent>` directly. Everything here (procs, kill, freeze, statistics) covers the whole
//! subtree: the agent and the agents it spawned.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::fs::parse_pids;
use super::{errno_of, CgroupError, CgroupFs, Controller, Version};

/// The v2 leaf holding an agent's own processes. Agent names cannot start with `_`.
pub(crate) const LEAF: &str = "_procs";

/// How long the bounded waits wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// For a freeze (or thaw) to complete.
    pub freeze: Duration,
    /// For a cgroup to be empty after SIGKILL.
    pub kill: Duration,
    /// For a cgroup to become removable (EBUSY while its last tasks exit).
    pub remove: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            freeze: Duration::from_secs(2),
            kill: Duration::from_secs(5),
            remove: Duration::from_secs(2),
        }
    }
}

const POLL: Duration = Duration::from_millis(10);

/// An agent's cgroup in one hierarchy.
#[derive(Debug, Clone)]
pub(crate) struct AgentDir {
    pub version: Version,
    pub mount: PathBuf,
    pub dir: PathBuf,
    /// The available controllers of this hierarchy.
    pub controllers: Vec<Controller>,
}

impl AgentDir {
    /// Where the agent's own processes go.
    fn procs_dir(&self) -> PathBuf {
        match self.version {
            Version::V1 => self.dir.clone(),
            Version::V2 => self.dir.join(LEAF),
        }
    }
}

// Read by METRICS_* (issue 9), the demos and the tests; not by the kernel yet.
#[cfg_attr(not(test), allow(dead_code))]
/// Usage figures for reporting; `None` where the controller is missing.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CgroupStats {
    /// Bytes in use.
    pub memory_current: Option<u64>,
    /// Highest bytes in use (v2 needs Linux 5.19 for `memory.peak`).
    pub memory_peak: Option<u64>,
    /// Processes killed by the OOM killer.
    pub oom_kills: Option<u64>,
    /// CPU time used, microseconds.
    pub cpu_usage_usec: Option<u64>,
    /// Tasks in the subtree.
    pub pids_current: Option<u64>,
    /// Frozen.
    pub frozen: Option<bool>,
}

/// One agent's cgroup in every hierarchy. Cloning shares the handle; the cgroup lives until
/// [`AgentCgroup::remove`].
#[derive(Debug, Clone)]
pub struct AgentCgroup {
    pub(crate) fs: Arc<dyn CgroupFs>,
    pub(crate) name: String,
    pub(crate) dirs: Vec<AgentDir>,
    pub(crate) timeouts: Timeouts,
}

// Read by METRICS_* (issue 9), the demos and the tests; not by the kernel yet.
#[cfg_attr(not(test), allow(dead_code))]
impl AgentCgroup {
    /// The name given at creation.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The agent's cgroup directory in each hierarchy, for reporting.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.dir.clone()).collect()
    }

    /// `"v1"`, `"v2"`, `"hybrid"` (both in use) or `"none"` (no hierarchy at all).
    pub fn version_label(&self) -> &'static str {
        version_label(self.dirs.iter().map(|d| d.version))
    }

    /// Whether `c` is in force for this cgroup.
    pub fn has(&self, c: Controller) -> bool {
        self.dir_for(c).is_some()
    }

    pub(crate) fn dir_in(&self, mount: &Path) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|d| d.mount == mount)
            .map(|d| d.dir.as_path())
    }

    fn dir_for(&self, c: Controller) -> Option<&AgentDir> {
        self.dirs.iter().find(|d| d.controllers.contains(&c))
    }

    fn need(&self, c: Controller, op: &'static str) -> Result<&AgentDir, CgroupError> {
        self.dir_for(c).ok_or_else(|| CgroupError::Unsupported {
            op,
            path: self.dirs.first().map(|d| d.dir.clone()).unwrap_or_default(),
            controller: c,
        })
    }

    fn read(&self, path: &Path) -> Result<String, CgroupError> {
        self.fs
            .read(path)
            .map_err(|e| CgroupError::io("read", path, e))
    }

    fn write(&self, path: &Path, data: &str) -> Result<(), CgroupError> {
        self.fs
            .write(path, data)
            .map_err(|e| CgroupError::io("write", path, e))
    }

    fn read_u64(&self, path: &Path) -> Result<u64, CgroupError> {
        let s = self.read(path)?;
        parse_u64(s.trim()).ok_or_else(|| bad_content(path, &s))
    }

    /// The value of `key` in a flat-keyed file (`key value` per line); `None` if absent.
    fn read_key(&self, path: &Path, key: &str) -> Result<Option<u64>, CgroupError> {
        let s = self.read(path)?;
        for line in s.lines() {
            if let Some((k, v)) = line.split_once(' ') {
                if k == key {
                    return parse_u64(v.trim())
                        .map(Some)
                        .ok_or_else(|| bad_content(path, line));
                }
            }
        }
        Ok(None)
    }

    /// The `cgroup.procs` files the agent's processes go into, one per hierarchy: a process
    /// writing `0` to each moves itself in (an unsandboxed agent's EXEC command does, before
    /// its exec).
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs
            .iter()
            .map(|d| d.procs_dir().join("cgroup.procs"))
            .collect()
    }

    /// Moves `pid` (with all its threads) into the agent's cgroup in every hierarchy.
    pub fn add_pid(&self, pid: u32) -> Result<(), CgroupError> {
        for d in &self.dirs {
            let path = d.procs_dir().join("cgroup.procs");
            self.fs
                .write(&path, &pid.to_string())
                .map_err(|e| CgroupError::io(format!("add process {pid} to"), &path, e))?;
        }
        Ok(())
    }

    /// Every process in the agent's subtree, in any hierarchy, sorted.
    pub fn procs(&self) -> Result<Vec<u32>, CgroupError> {
        let mut all: Vec<u32> = self
            .members()?
            .into_iter()
            .flat_map(|(_, pids)| pids)
            .collect();
        all.sort_unstable();
        all.dedup();
        Ok(all)
    }

    /// (cgroup directory, its pids) for every cgroup of the subtree in every hierarchy.
    fn members(&self) -> Result<Vec<(PathBuf, Vec<u32>)>, CgroupError> {
        let mut out = Vec::new();
        for d in &self.dirs {
            walk(self.fs.as_ref(), &d.dir, &mut |dir| {
                match self.fs.read(&dir.join("cgroup.procs")) {
                    Ok(s) => {
                        out.push((dir.to_path_buf(), parse_pids(&s)));
                        Ok(())
                    }
                    // Removed while we walked: it has no members.
                    Err(e) if errno_of(&e) == Some(libc::ENOENT) => Ok(()),
                    Err(e) => Err(CgroupError::io("read", &dir.join("cgroup.procs"), e)),
                }
            })?;
        }
        Ok(out)
    }

    /// Freezes the subtree and waits (bounded) until the kernel reports it frozen. On timeout
    /// the cgroup is thawed again, so no half-frozen agent is left behind.
    pub fn freeze(&self) -> Result<(), CgroupError> {
        let d = self.need(Controller::Freezer, "freeze")?;
        let (file, value) = freeze_file(d.version, true);
        let path = d.dir.join(file);
        self.write(&path, value)?;
        let deadline = Instant::now() + self.timeouts.freeze;
        let mut polls = 0u32;
        loop {
            if self.frozen_in(d)? {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let (file, value) = freeze_file(d.version, false);
                // Best effort: the timeout is the error to report.
                let _ = self.fs.write(&d.dir.join(file), value);
                return Err(CgroupError::io(
                    "freeze",
                    &path,
                    std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("not frozen after {:?}", self.timeouts.freeze),
                    ),
                ));
            }
            polls += 1;
            // v1 can leave a task unfrozen in FREEZING (it was busy in the kernel); writing
            // FROZEN again retries it.
            if d.version == Version::V1 && polls.is_multiple_of(10) {
                self.write(&path, value)?;
            }
            std::thread::sleep(POLL);
        }
    }

    /// Thaws the subtree and waits (bounded) until the kernel reports it thawed.
    pub fn thaw(&self) -> Result<(), CgroupError> {
        let d = self.need(Controller::Freezer, "thaw")?;
        let (file, value) = freeze_file(d.version, false);
        let path = d.dir.join(file);
        self.write(&path, value)?;
        let deadline = Instant::now() + self.timeouts.freeze;
        while self.frozen_in(d)? {
            if Instant::now() >= deadline {
                return Err(CgroupError::io(
                    "thaw",
                    &path,
                    std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("still frozen after {:?}", self.timeouts.freeze),
                    ),
                ));
            }
            std::thread::sleep(POLL);
        }
        Ok(())
    }

    /// Whether the subtree is (completely) frozen; `false` without a freezer.
    pub fn is_frozen(&self) -> Result<bool, CgroupError> {
        match self.dir_for(Controller::Freezer) {
            Some(d) => self.frozen_in(d),
            None => Ok(false),
        }
    }

    fn frozen_in(&self, d: &AgentDir) -> Result<bool, CgroupError> {
        Ok(match d.version {
            Version::V1 => self.read(&d.dir.join("freezer.state"))?.trim() == "FROZEN",
            Version::V2 => self.read_key(&d.dir.join("cgroup.events"), "frozen")? == Some(1),
        })
    }

    /// Processes of the subtree killed by the OOM killer (v1 `memory.oom_control`, v2
    /// `memory.events`, both `oom_kill`; 0 on kernels that do not count them).
    pub fn oom_kills(&self) -> Result<u64, CgroupError> {
        let d = self.need(Controller::Memory, "read oom kills of")?;
        let file = match d.version {
            Version::V1 => "memory.oom_control",
            Version::V2 => "memory.events",
        };
        Ok(self.read_key(&d.dir.join(file), "oom_kill")?.unwrap_or(0))
    }

    /// CPU time used by the subtree, microseconds.
    pub fn cpu_usage_usec(&self) -> Result<u64, CgroupError> {
        let d = self.need(Controller::Cpuacct, "read cpu usage of")?;
        match d.version {
            Version::V1 => Ok(self.read_u64(&d.dir.join("cpuacct.usage"))? / 1000),
            Version::V2 => {
                let path = d.dir.join("cpu.stat");
                self.read_key(&path, "usage_usec")?
                    .ok_or_else(|| bad_content(&path, "no usage_usec"))
            }
        }
    }

    /// Memory in use by the subtree, bytes.
    pub fn memory_current(&self) -> Result<u64, CgroupError> {
        let d = self.need(Controller::Memory, "read memory usage of")?;
        let file = match d.version {
            Version::V1 => "memory.usage_in_bytes",
            Version::V2 => "memory.current",
        };
        self.read_u64(&d.dir.join(file))
    }

    /// Highest memory use of the subtree, bytes; `None` on v2 kernels without
    /// `memory.peak` (before 5.19).
    pub fn memory_peak(&self) -> Result<Option<u64>, CgroupError> {
        let d = self.need(Controller::Memory, "read memory peak of")?;
        let file = match d.version {
            Version::V1 => "memory.max_usage_in_bytes",
            Version::V2 => "memory.peak",
        };
        let path = d.dir.join(file);
        if d.version == Version::V2 && !self.fs.exists(&path) {
            return Ok(None);
        }
        self.read_u64(&path).map(Some)
    }

    /// Tasks in the subtree.
    pub fn pids_current(&self) -> Result<u64, CgroupError> {
        let d = self.need(Controller::Pids, "read pids of")?;
        self.read_u64(&d.dir.join("pids.current"))
    }

    /// Every figure at once, `None` for the missing controllers.
    pub fn stats(&self) -> Result<CgroupStats, CgroupError> {
        let mem = self.has(Controller::Memory);
        Ok(CgroupStats {
            memory_current: mem.then(|| self.memory_current()).transpose()?,
            memory_peak: if mem { self.memory_peak()? } else { None },
            oom_kills: mem.then(|| self.oom_kills()).transpose()?,
            cpu_usage_usec: self
                .has(Controller::Cpuacct)
                .then(|| self.cpu_usage_usec())
                .transpose()?,
            pids_current: self
                .has(Controller::Pids)
                .then(|| self.pids_current())
                .transpose()?,
            frozen: self
                .has(Controller::Freezer)
                .then(|| self.is_frozen())
                .transpose()?,
        })
    }

    /// Sends `signal` to every process of the subtree.
    ///
    /// For SIGKILL it then makes sure they are gone: v2's `cgroup.kill` where present (the
    /// kernel kills the whole subtree, forks included, atomically); then rounds of signalling
    /// whatever `cgroup.procs` still lists until nothing is left, bounded by the kill timeout.
    /// On v1 a frozen task does not act on SIGKILL until thawed, so after the first round the
    /// subtree is thawed: the queued SIGKILL is the first thing the tasks see when they run
    /// again, so they never get to run their own code. (v2 lets fatal signals through a
    /// freeze; it is thawed too, so no frozen cgroup is left behind.)
    pub fn kill_all(&self, signal: Signal) -> Result<(), CgroupError> {
        if signal != Signal::SIGKILL {
            for (dir, pids) in self.members()? {
                for pid in pids {
                    self.send(&dir, pid, signal)?;
                }
            }
            return Ok(());
        }

        for d in self.dirs.iter().filter(|d| d.version == Version::V2) {
            let path = d.dir.join("cgroup.kill");
            if self.fs.exists(&path) {
                self.write(&path, "1")?;
            }
        }
        let deadline = Instant::now() + self.timeouts.kill;
        let mut thawed = false;
        loop {
            let members = self.members()?;
            let mut pids: Vec<u32> = members
                .iter()
                .flat_map(|(_, p)| p.iter().copied())
                .collect();
            pids.sort_unstable();
            pids.dedup();
            let left = pids.len();
            if left == 0 {
                if !thawed {
                    self.thaw_tree()?;
                }
                return Ok(());
            }
            if Instant::now() >= deadline {
                let path = self.dirs.first().map(|d| d.dir.clone()).unwrap_or_default();
                return Err(CgroupError::io(
                    "kill processes in",
                    &path,
                    std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("{left} still alive after {:?}", self.timeouts.kill),
                    ),
                ));
            }
            for (dir, pids) in &members {
                for pid in pids {
                    self.send(dir, *pid, Signal::SIGKILL)?;
                }
            }
            if !thawed {
                self.thaw_tree()?;
                thawed = true;
            }
            std::thread::sleep(POLL);
        }
    }

    fn send(&self, dir: &Path, pid: u32, signal: Signal) -> Result<(), CgroupError> {
        self.fs
            .signal(dir, pid, signal)
            .map_err(|e| CgroupError::io(format!("signal process {pid} in"), dir, e))
    }

    /// Thaws every cgroup of the subtree: freezing is per cgroup on both versions (a child
    /// frozen by itself stays frozen when its parent thaws).
    fn thaw_tree(&self) -> Result<(), CgroupError> {
        let Some(d) = self.dir_for(Controller::Freezer) else {
            return Ok(());
        };
        let (file, frozen_value) = freeze_file(d.version, true);
        let (_, thawed_value) = freeze_file(d.version, false);
        walk(self.fs.as_ref(), &d.dir, &mut |dir| {
            let path = dir.join(file);
            match self.fs.read(&path) {
                // v1 reads FROZEN or FREEZING while frozen; v2 reads back what was written.
                Ok(s)
                    if s.trim() != thawed_value
                        && (d.version == Version::V1 || s.trim() == frozen_value) =>
                {
                    self.write(&path, thawed_value)
                }
                Ok(_) => Ok(()),
                Err(e) if errno_of(&e) == Some(libc::ENOENT) => Ok(()),
                Err(e) => Err(CgroupError::io("read", &path, e)),
            }
        })
    }

    /// Removes the agent's cgroup in every hierarchy if nothing is left in it, the usual
    /// case once the agent exited: one `rmdir` per hierarchy, which the kernel refuses (EBUSY)
    /// while the cgroup holds a process or a child cgroup. `Ok(true)`: all gone. `Ok(false)`:
    /// something is left (or was still exiting); then call [`AgentCgroup::kill_all`] and
    /// [`AgentCgroup::remove`], which cope with whatever this already removed.
    pub fn remove_if_empty(&self) -> Result<bool, CgroupError> {
        for d in &self.dirs {
            match self.fs.rmdir(&d.dir) {
                Ok(()) => {}
                Err(e) if errno_of(&e) == Some(libc::ENOENT) => {}
                Err(e) if errno_of(&e) == Some(libc::EBUSY) => return Ok(false),
                Err(e) => return Err(CgroupError::io("remove cgroup", &d.dir, e)),
            }
        }
        Ok(true)
    }

    /// Removes the agent's cgroup in every hierarchy, children first, retrying briefly while
    /// the kernel still counts exiting tasks (EBUSY). Already removed is fine. The subtree must
    /// be empty: call [`AgentCgroup::kill_all`] first.
    pub fn remove(&self) -> Result<(), CgroupError> {
        let deadline = Instant::now() + self.timeouts.remove;
        let mut first_err = None;
        for d in &self.dirs {
            if let Err(e) = remove_tree(self.fs.as_ref(), &d.dir, deadline) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

/// Calls `f` on `dir` and then on every descendant cgroup, parents before children.
fn walk(
    fs: &dyn CgroupFs,
    dir: &Path,
    f: &mut dyn FnMut(&Path) -> Result<(), CgroupError>,
) -> Result<(), CgroupError> {
    f(dir)?;
    let children = match fs.subdirs(dir) {
        Ok(c) => c,
        Err(e) if errno_of(&e) == Some(libc::ENOENT) => return Ok(()),
        Err(e) => return Err(CgroupError::io("list", dir, e)),
    };
    for c in children {
        walk(fs, &dir.join(c), f)?;
    }
    Ok(())
}

/// Removes `dir` and its descendant cgroups, deepest first.
pub(crate) fn remove_tree(
    fs: &dyn CgroupFs,
    dir: &Path,
    deadline: Instant,
) -> Result<(), CgroupError> {
    let children = match fs.subdirs(dir) {
        Ok(c) => c,
        Err(e) if errno_of(&e) == Some(libc::ENOENT) => return Ok(()),
        Err(e) => return Err(CgroupError::io("list", dir, e)),
    };
    for c in children {
        remove_tree(fs, &dir.join(c), deadline)?;
    }
    loop {
        match fs.rmdir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if errno_of(&e) == Some(libc::ENOENT) => return Ok(()),
            Err(e) if errno_of(&e) == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(POLL);
            }
            Err(e) => return Err(CgroupError::io("remove cgroup", dir, e)),
        }
    }
}

/// The file and value that freeze (`true`) or thaw a cgroup.
fn freeze_file(version: Version, freeze: bool) -> (&'static str, &'static str) {
    match (version, freeze) {
        (Version::V1, true) => ("freezer.state", "FROZEN"),
        (Version::V1, false) => ("freezer.state", "THAWED"),
        (Version::V2, true) => ("cgroup.freeze", "1"),
        (Version::V2, false) => ("cgroup.freeze", "0"),
    }
}

pub(crate) fn version_label(versions: impl Iterator<Item = Version>) -> &'static str {
    let (mut v1, mut v2) = (false, false);
    for v in versions {
        match v {
            Version::V1 => v1 = true,
            Version::V2 => v2 = true,
        }
    }
    match (v1, v2) {
        (true, true) => "hybrid",
        (true, false) => "v1",
        (false, true) => "v2",
        (false, false) => "none",
    }
}

/// A counter or limit; `max` (v2 unlimited) reads as `u64::MAX`.
fn parse_u64(s: &str) -> Option<u64> {
    if s == "max" {
        return Some(u64::MAX);
    }
    s.parse().ok()
}

fn bad_content(path: &Path, content: &str) -> CgroupError {
    CgroupError::io(
        "parse",
        path,
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("unexpected content {:?}", content.trim()),
        ),
    )
}
