//! [`FakeFs`]: an in-memory cgroup tree for tests without root, emulating the kernel rules
//! the layer relies on, so a test fails when the logic breaks one:
//!
//! * `mkdir` creates the version's control files (v1: per the mount's controllers; v2: the
//!   core files, and controller files that appear only once the parent enables the
//!   controller in `cgroup.subtree_control`); the v2 root has no `cgroup.freeze`,
//!   `cgroup.events`, `cgroup.type` or limits, as on a real host;
//! * a pid written to `cgroup.procs` leaves its previous cgroup in that hierarchy; an unknown
//!   pid is ESRCH;
//! * `rmdir` is EBUSY while the cgroup has processes or children;
//! * v2's no-internal-process rule: enabling a controller in `cgroup.subtree_control` of a
//!   non-root cgroup with processes is EBUSY, and so is adding a process to a non-root cgroup
//!   with controllers enabled in its `cgroup.subtree_control`; enabling a controller the
//!   cgroup does not have (`cgroup.controllers`, i.e. its parent's `subtree_control`) is
//!   ENOENT; disabling one a child still enables is EBUSY;
//! * freezing: v1 `freezer.state` and v2 `cgroup.freeze`/`cgroup.events` (hierarchical);
//!   a v1-frozen process does not die of SIGKILL until thawed, a v2-frozen one does;
//! * `cgroup.kill` kills the subtree; `memory.memsw.limit_in_bytes` must stay at least
//!   `memory.limit_in_bytes` (EINVAL), as on v1.
//!
//! Usage statistics are plain stored files that tests set with [`FakeFs::set`].

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use nix::sys::signal::Signal;

use super::{os_err, CgroupFs, Version};

/// An in-memory cgroup tree. See the module docs for what it emulates.
#[derive(Debug, Default)]
pub struct FakeFs {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    mounts: Vec<Mount>,
    alive: BTreeSet<u32>,
    swap_accounting: bool,
    signals: Vec<(u32, Signal)>,
    unkillable: BTreeSet<u32>,
    immovable: BTreeSet<u32>,
    freeze_stuck: bool,
    pending_kill: BTreeSet<u32>,
}

impl Default for State {
    fn default() -> State {
        State {
            mounts: Vec::new(),
            alive: BTreeSet::new(),
            swap_accounting: true,
            signals: Vec::new(),
            unkillable: BTreeSet::new(),
            immovable: BTreeSet::new(),
            freeze_stuck: false,
            pending_kill: BTreeSet::new(),
        }
    }
}

#[derive(Debug)]
struct Mount {
    point: PathBuf,
    version: Version,
    /// v1: the hierarchy's controllers; v2: the root's `cgroup.controllers`.
    controllers: Vec<String>,
    /// Keyed by the path relative to the mount, `""` for the root.
    cgroups: BTreeMap<String, Cg>,
    /// Where each pid sits in this hierarchy; absent: the root.
    members: BTreeMap<u32, String>,
}

#[derive(Debug, Default)]
struct Cg {
    files: BTreeMap<String, String>,
    subtree_control: BTreeSet<String>,
    freeze: bool,
}

enum Node {
    Dir(usize, String),
    File(usize, String, String),
}

fn parent_key(key: &str) -> Option<&str> {
    if key.is_empty() {
        return None;
    }
    Some(key.rsplit_once('/').map(|(p, _)| p).unwrap_or(""))
}

fn is_under(key: &str, ancestor: &str) -> bool {
    ancestor.is_empty() || key == ancestor || key.starts_with(&format!("{ancestor}/"))
}

/// The controller a v2 interface file belongs to, `None` for core files.
fn v2_controller_of(file: &str) -> Option<&str> {
    if file == "cpu.stat" {
        return None;
    }
    match file.split_once('.') {
        Some(("cgroup", _)) | None => None,
        Some((c, _)) => Some(c),
    }
}

/// Parses a limit value, `-1` and `max` being unlimited.
fn limit_value(s: &str) -> io::Result<u64> {
    match s.trim() {
        "-1" | "max" => Ok(u64::MAX),
        v => v.parse().map_err(|_| os_err(libc::EINVAL)),
    }
}

impl Mount {
    fn new_cgroup(&self, root: bool, swap: bool) -> Cg {
        let mut files = BTreeMap::new();
        let mut put = |k: &str, v: &str| {
            files.insert(k.to_string(), v.to_string());
        };
        match self.version {
            Version::V1 => {
                for c in &self.controllers {
                    match c.as_str() {
                        "memory" => {
                            put("memory.limit_in_bytes", "9223372036854771712");
                            if swap {
                                put("memory.memsw.limit_in_bytes", "9223372036854771712");
                            }
                            put("memory.usage_in_bytes", "0");
                            put("memory.max_usage_in_bytes", "0");
                            put(
                                "memory.oom_control",
                                "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
                            );
                        }
                        "cpu" => {
                            put("cpu.cfs_quota_us", "-1");
                            put("cpu.cfs_period_us", "100000");
                            put("cpu.shares", "1024");
                        }
                        "cpuacct" => put("cpuacct.usage", "0"),
                        "pids" if !root => put("pids.max", "max"),
                        _ => {}
                    }
                }
                put("notify_on_release", "0");
            }
            Version::V2 => {
                put("cpu.stat", "usage_usec 0\nuser_usec 0\nsystem_usec 0\n");
                if !root {
                    for c in &self.controllers {
                        match c.as_str() {
                            "memory" => {
                                put("memory.max", "max");
                                if swap {
                                    put("memory.swap.max", "max");
                                }
                                put("memory.current", "0");
                                put("memory.peak", "0");
                                put(
                                    "memory.events",
                                    "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n",
                                );
                            }
                            "cpu" => {
                                put("cpu.max", "max 100000");
                                put("cpu.weight", "100");
                            }
                            "pids" => put("pids.max", "max"),
                            _ => {}
                        }
                    }
                }
            }
        }
        Cg {
            files,
            ..Cg::default()
        }
    }

    fn has(&self, c: &str) -> bool {
        self.controllers.iter().any(|x| x == c)
    }

    fn procs(&self, key: &str, alive: &BTreeSet<u32>) -> Vec<u32> {
        alive
            .iter()
            .copied()
            .filter(|p| self.members.get(p).map(String::as_str).unwrap_or("") == key)
            .collect()
    }

    fn subtree_procs(&self, key: &str, alive: &BTreeSet<u32>) -> Vec<u32> {
        alive
            .iter()
            .copied()
            .filter(|p| is_under(self.members.get(p).map(String::as_str).unwrap_or(""), key))
            .collect()
    }

    fn children(&self, key: &str) -> Vec<String> {
        self.cgroups
            .keys()
            .filter(|k| parent_key(k) == Some(key))
            .map(|k| k.rsplit('/').next().unwrap_or(k).to_string())
            .collect()
    }

    /// `cgroup.controllers` of a v2 cgroup.
    fn available(&self, key: &str) -> Vec<String> {
        match parent_key(key) {
            None => self.controllers.clone(),
            Some(p) => self
                .cgroups
                .get(p)
                .map(|c| c.subtree_control.iter().cloned().collect())
                .unwrap_or_default(),
        }
    }

    /// Frozen by itself or an ancestor.
    fn frozen(&self, key: &str) -> bool {
        let mut k = Some(key);
        while let Some(cur) = k {
            if self.cgroups.get(cur).is_some_and(|c| c.freeze) {
                return true;
            }
            k = parent_key(cur);
        }
        false
    }

    /// Whether a file is present in a cgroup, dynamic or stored.
    fn visible(&self, key: &str, file: &str) -> bool {
        let root = key.is_empty();
        let Some(cg) = self.cgroups.get(key) else {
            return false;
        };
        match self.version {
            Version::V1 => match file {
                "cgroup.procs" | "tasks" => true,
                "pids.current" => self.has("pids") && !root,
                "freezer.state" => self.has("freezer") && !root,
                _ => cg.files.contains_key(file),
            },
            Version::V2 => match file {
                "cgroup.procs" | "cgroup.controllers" | "cgroup.subtree_control" => true,
                "cgroup.events" | "cgroup.freeze" | "cgroup.kill" | "cgroup.type" => !root,
                "pids.current" => !root && self.available(key).iter().any(|c| c == "pids"),
                _ => {
                    cg.files.contains_key(file)
                        && match v2_controller_of(file) {
                            None => true,
                            Some(c) => !root && self.available(key).iter().any(|x| x == c),
                        }
                }
            },
        }
    }
}

impl FakeFs {
    /// An empty tree with swap accounting on; add mounts with [`FakeFs::mount_v1`] and
    /// [`FakeFs::mount_v2`].
    pub fn new() -> FakeFs {
        FakeFs::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock leaves a usable tree behind.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether later mounts get swap accounting files (`memory.memsw.*`, `memory.swap.max`).
    pub fn set_swap_accounting(&self, on: bool) {
        self.lock().swap_accounting = on;
    }

    /// Mounts a v1 hierarchy with these controllers.
    pub fn mount_v1(&self, point: &str, controllers: &[&str]) {
        self.mount(point, Version::V1, controllers);
    }

    /// Mounts the unified hierarchy; `controllers` is its root's `cgroup.controllers`.
    pub fn mount_v2(&self, point: &str, controllers: &[&str]) {
        self.mount(point, Version::V2, controllers);
    }

    fn mount(&self, point: &str, version: Version, controllers: &[&str]) {
        let mut st = self.lock();
        let swap = st.swap_accounting;
        let mut m = Mount {
            point: PathBuf::from(point),
            version,
            controllers: controllers.iter().map(|c| c.to_string()).collect(),
            cgroups: BTreeMap::new(),
            members: BTreeMap::new(),
        };
        let root = m.new_cgroup(true, swap);
        m.cgroups.insert(String::new(), root);
        st.mounts.push(m);
    }

    /// Creates `path` and its missing ancestors; on v2 also enables every root controller in
    /// each ancestor's `subtree_control` on the way, as a delegating service manager does.
    pub fn mkdir_all(&self, path: &str) -> io::Result<()> {
        let mut st = self.lock();
        let Some((mi, parts)) = st.split(Path::new(path)) else {
            return Err(os_err(libc::ENOENT));
        };
        let swap = st.swap_accounting;
        let m = &mut st.mounts[mi];
        let mut cur = String::new();
        for comp in parts {
            if m.version == Version::V2 {
                let enable: Vec<String> = m.available(&cur);
                if let Some(cg) = m.cgroups.get_mut(&cur) {
                    cg.subtree_control.extend(enable);
                }
            }
            cur = if cur.is_empty() {
                comp.to_string()
            } else {
                format!("{cur}/{comp}")
            };
            if !m.cgroups.contains_key(&cur) {
                let cg = m.new_cgroup(false, swap);
                m.cgroups.insert(cur.clone(), cg);
            }
        }
        Ok(())
    }

    /// Starts a fake process (in the root of every hierarchy) and moves it into each of
    /// `cgroups` (paths, one per hierarchy at most).
    pub fn spawn_in(&self, pid: u32, cgroups: &[&str]) -> io::Result<()> {
        self.lock().alive.insert(pid);
        for cg in cgroups {
            self.write(&Path::new(cg).join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// Whether a fake process is alive.
    pub fn is_alive(&self, pid: u32) -> bool {
        self.lock().alive.contains(&pid)
    }

    /// Makes a process ignore SIGKILL (a stuck task), to test bounded waits.
    pub fn set_unkillable(&self, pid: u32) {
        self.lock().unkillable.insert(pid);
    }

    /// Makes a process refuse to move between cgroups (EPERM), like another user's process
    /// without delegation.
    pub fn set_immovable(&self, pid: u32) {
        self.lock().immovable.insert(pid);
    }

    /// Makes freezing never complete (v1 stays `FREEZING`, v2 `frozen 0`).
    pub fn set_freeze_stuck(&self, stuck: bool) {
        self.lock().freeze_stuck = stuck;
    }

    /// Every signal delivered so far, in order.
    pub fn signals(&self) -> Vec<(u32, Signal)> {
        self.lock().signals.clone()
    }

    /// Sets a stored control file (a statistic such as `memory.events`), even one that is
    /// hidden because its controller is not enabled. The cgroup must exist.
    pub fn set(&self, path: &str, content: &str) -> io::Result<()> {
        let mut st = self.lock();
        match st.locate_any(Path::new(path)) {
            Some(Node::File(mi, key, name)) => {
                if let Some(cg) = st.mounts[mi].cgroups.get_mut(&key) {
                    cg.files.insert(name, content.to_string());
                }
                Ok(())
            }
            _ => Err(os_err(libc::ENOENT)),
        }
    }

    /// The cgroup directory `pid` sits in within the hierarchy mounted at `mount`.
    pub fn cgroup_of(&self, pid: u32, mount: &str) -> Option<PathBuf> {
        let st = self.lock();
        if !st.alive.contains(&pid) {
            return None;
        }
        let m = st.mounts.iter().find(|m| m.point == Path::new(mount))?;
        let key = m.members.get(&pid).cloned().unwrap_or_default();
        Some(if key.is_empty() {
            m.point.clone()
        } else {
            m.point.join(key)
        })
    }
}

impl State {
    /// Resolves a path to a cgroup directory or to a file name in an existing cgroup
    /// (visible or not).
    fn locate_any(&self, path: &Path) -> Option<Node> {
        let (mi, mut parts) = self.split(path)?;
        let m = &self.mounts[mi];
        let key = parts.join("/");
        if m.cgroups.contains_key(&key) {
            return Some(Node::Dir(mi, key));
        }
        let name = parts.pop()?;
        let parent = parts.join("/");
        m.cgroups
            .contains_key(&parent)
            .then_some(Node::File(mi, parent, name))
    }

    /// The mount holding `path` and the path's components below the mount point.
    fn split(&self, path: &Path) -> Option<(usize, Vec<String>)> {
        let (mi, m) = self
            .mounts
            .iter()
            .enumerate()
            .filter(|(_, m)| path.starts_with(&m.point))
            .max_by_key(|(_, m)| m.point.components().count())?;
        let rel = path.strip_prefix(&m.point).ok()?;
        let mut parts = Vec::new();
        for c in rel.components() {
            match c {
                Component::Normal(s) => parts.push(s.to_str()?.to_string()),
                _ => return None,
            }
        }
        Some((mi, parts))
    }

    fn kill(&mut self, pid: u32) {
        self.alive.remove(&pid);
        self.pending_kill.remove(&pid);
        for m in &mut self.mounts {
            m.members.remove(&pid);
        }
    }

    /// Frozen in a v1 freezer hierarchy: SIGKILL stays pending until thawed.
    fn v1_frozen(&self, pid: u32) -> bool {
        self.mounts.iter().any(|m| {
            m.version == Version::V1
                && m.has("freezer")
                && m.frozen(m.members.get(&pid).map(String::as_str).unwrap_or(""))
        })
    }

    fn sigkill(&mut self, pid: u32) {
        if self.unkillable.contains(&pid) {
            return;
        }
        if self.v1_frozen(pid) {
            self.pending_kill.insert(pid);
        } else {
            self.kill(pid);
        }
    }

    fn read_file(&self, mi: usize, key: &str, name: &str) -> io::Result<String> {
        let m = &self.mounts[mi];
        if !m.visible(key, name) {
            return Err(os_err(libc::ENOENT));
        }
        let lines = |v: Vec<u32>| v.iter().map(|p| format!("{p}\n")).collect::<String>();
        let words = |v: Vec<String>| {
            let s = v.join(" ");
            format!("{s}\n")
        };
        let cg = m.cgroups.get(key).ok_or_else(|| os_err(libc::ENOENT))?;
        Ok(match name {
            "cgroup.procs" | "tasks" => lines(m.procs(key, &self.alive)),
            "cgroup.controllers" => words(m.available(key)),
            "cgroup.subtree_control" => words(cg.subtree_control.iter().cloned().collect()),
            "cgroup.type" => "domain\n".into(),
            "cgroup.kill" => return Err(os_err(libc::EINVAL)),
            "cgroup.freeze" => format!("{}\n", u8::from(cg.freeze)),
            "cgroup.events" => format!(
                "populated {}\nfrozen {}\n",
                u8::from(!m.subtree_procs(key, &self.alive).is_empty()),
                u8::from(m.frozen(key) && !self.freeze_stuck)
            ),
            "pids.current" => format!("{}\n", m.subtree_procs(key, &self.alive).len()),
            "freezer.state" => match (m.frozen(key), self.freeze_stuck) {
                (false, _) => "THAWED\n".into(),
                (true, true) => "FREEZING\n".into(),
                (true, false) => "FROZEN\n".into(),
            },
            _ => cg.files.get(name).cloned().unwrap_or_default(),
        })
    }

    fn write_file(&mut self, mi: usize, key: &str, name: &str, data: &str) -> io::Result<()> {
        if !self.mounts[mi].visible(key, name) {
            return Err(os_err(libc::ENOENT));
        }
        let root = key.is_empty();
        let version = self.mounts[mi].version;
        let value = data.trim();
        match name {
            "cgroup.procs" | "tasks" => {
                let pid: u32 = value.parse().map_err(|_| os_err(libc::EINVAL))?;
                if !self.alive.contains(&pid) {
                    return Err(os_err(libc::ESRCH));
                }
                if self.immovable.contains(&pid) {
                    return Err(os_err(libc::EPERM));
                }
                let m = &mut self.mounts[mi];
                if version == Version::V2
                    && !root
                    && m.cgroups
                        .get(key)
                        .is_some_and(|c| !c.subtree_control.is_empty())
                {
                    return Err(os_err(libc::EBUSY));
                }
                if root {
                    m.members.remove(&pid);
                } else {
                    m.members.insert(pid, key.to_string());
                }
                Ok(())
            }
            "cgroup.subtree_control" => {
                let m = &mut self.mounts[mi];
                for tok in value.split_whitespace() {
                    let (on, c) = match tok.split_at(1) {
                        ("+", c) => (true, c),
                        ("-", c) => (false, c),
                        _ => return Err(os_err(libc::EINVAL)),
                    };
                    if on {
                        if !m.available(key).iter().any(|x| x == c) {
                            return Err(os_err(libc::ENOENT));
                        }
                        if !root && !m.procs(key, &self.alive).is_empty() {
                            return Err(os_err(libc::EBUSY));
                        }
                        if let Some(cg) = m.cgroups.get_mut(key) {
                            cg.subtree_control.insert(c.to_string());
                        }
                    } else {
                        let prefix = if root {
                            String::new()
                        } else {
                            format!("{key}/")
                        };
                        let busy = m.cgroups.iter().any(|(k, cg)| {
                            parent_key(k) == Some(key)
                                && k.starts_with(&prefix)
                                && cg.subtree_control.contains(c)
                        });
                        if busy {
                            return Err(os_err(libc::EBUSY));
                        }
                        if let Some(cg) = m.cgroups.get_mut(key) {
                            cg.subtree_control.remove(c);
                        }
                    }
                }
                Ok(())
            }
            "cgroup.freeze" => {
                let on = match value {
                    "1" => true,
                    "0" => false,
                    _ => return Err(os_err(libc::EINVAL)),
                };
                if let Some(cg) = self.mounts[mi].cgroups.get_mut(key) {
                    cg.freeze = on;
                }
                Ok(())
            }
            "cgroup.kill" => {
                if value != "1" {
                    return Err(os_err(libc::EINVAL));
                }
                for pid in self.mounts[mi].subtree_procs(key, &self.alive) {
                    self.signals.push((pid, Signal::SIGKILL));
                    if !self.unkillable.contains(&pid) {
                        self.kill(pid);
                    }
                }
                Ok(())
            }
            "freezer.state" => {
                let on = match value {
                    "FROZEN" => true,
                    "THAWED" => false,
                    _ => return Err(os_err(libc::EINVAL)),
                };
                if let Some(cg) = self.mounts[mi].cgroups.get_mut(key) {
                    cg.freeze = on;
                }
                if !on {
                    // Pending SIGKILLs land once the task runs again.
                    let pending: Vec<u32> = self.pending_kill.iter().copied().collect();
                    for pid in pending {
                        if !self.v1_frozen(pid) {
                            self.kill(pid);
                        }
                    }
                }
                Ok(())
            }
            "cgroup.controllers"
            | "cgroup.events"
            | "cgroup.type"
            | "pids.current"
            | "memory.current"
            | "memory.events"
            | "memory.usage_in_bytes"
            | "cpu.stat" => Err(os_err(libc::EINVAL)),
            _ => {
                let m = &mut self.mounts[mi];
                let cg = m.cgroups.get_mut(key).ok_or_else(|| os_err(libc::ENOENT))?;
                // v1 keeps memory+swap >= memory.
                if name == "memory.limit_in_bytes" {
                    if let Some(memsw) = cg.files.get("memory.memsw.limit_in_bytes") {
                        if limit_value(value)? > limit_value(memsw)? {
                            return Err(os_err(libc::EINVAL));
                        }
                    }
                }
                if name == "memory.memsw.limit_in_bytes" {
                    let mem = cg
                        .files
                        .get("memory.limit_in_bytes")
                        .map(|v| limit_value(v))
                        .transpose()?
                        .unwrap_or(u64::MAX);
                    if limit_value(value)? < mem {
                        return Err(os_err(libc::EINVAL));
                    }
                }
                cg.files.insert(name.to_string(), value.to_string());
                Ok(())
            }
        }
    }
}

impl CgroupFs for FakeFs {
    fn read(&self, path: &Path) -> io::Result<String> {
        let st = self.lock();
        match st.locate_any(path) {
            Some(Node::File(mi, key, name)) => st.read_file(mi, &key, &name),
            Some(Node::Dir(..)) => Err(os_err(libc::EISDIR)),
            None => Err(os_err(libc::ENOENT)),
        }
    }

    fn write(&self, path: &Path, data: &str) -> io::Result<()> {
        let mut st = self.lock();
        match st.locate_any(path) {
            Some(Node::File(mi, key, name)) => st.write_file(mi, &key, &name, data),
            Some(Node::Dir(..)) => Err(os_err(libc::EISDIR)),
            None => Err(os_err(libc::ENOENT)),
        }
    }

    fn mkdir(&self, path: &Path) -> io::Result<()> {
        let mut st = self.lock();
        let swap = st.swap_accounting;
        match st.locate_any(path) {
            Some(Node::Dir(..)) => Err(os_err(libc::EEXIST)),
            Some(Node::File(mi, parent, name)) => {
                let m = &mut st.mounts[mi];
                if m.visible(&parent, &name) {
                    return Err(os_err(libc::EEXIST));
                }
                let key = if parent.is_empty() {
                    name
                } else {
                    format!("{parent}/{name}")
                };
                let cg = m.new_cgroup(false, swap);
                m.cgroups.insert(key, cg);
                Ok(())
            }
            None => Err(os_err(libc::ENOENT)),
        }
    }

    fn rmdir(&self, path: &Path) -> io::Result<()> {
        let mut st = self.lock();
        let Some(Node::Dir(mi, key)) = st.locate_any(path) else {
            return Err(os_err(libc::ENOENT));
        };
        let alive = st.alive.clone();
        let m = &mut st.mounts[mi];
        if key.is_empty() {
            return Err(os_err(libc::EBUSY));
        }
        if !m.children(&key).is_empty() || !m.procs(&key, &alive).is_empty() {
            return Err(os_err(libc::EBUSY));
        }
        m.cgroups.remove(&key);
        Ok(())
    }

    fn exists(&self, path: &Path) -> bool {
        let st = self.lock();
        match st.locate_any(path) {
            Some(Node::Dir(..)) => true,
            Some(Node::File(mi, key, name)) => st.mounts[mi].visible(&key, &name),
            None => false,
        }
    }

    fn subdirs(&self, path: &Path) -> io::Result<Vec<String>> {
        let st = self.lock();
        match st.locate_any(path) {
            Some(Node::Dir(mi, key)) => Ok(st.mounts[mi].children(&key)),
            Some(Node::File(..)) => Err(os_err(libc::ENOTDIR)),
            None => Err(os_err(libc::ENOENT)),
        }
    }

    fn signal(&self, cgroup: &Path, pid: u32, signal: Signal) -> io::Result<()> {
        let mut st = self.lock();
        let member = match st.locate_any(cgroup) {
            Some(Node::Dir(mi, key)) => {
                st.alive.contains(&pid) && st.mounts[mi].procs(&key, &st.alive).contains(&pid)
            }
            _ => false,
        };
        if !member {
            return Ok(());
        }
        st.signals.push((pid, signal));
        if signal == Signal::SIGKILL {
            st.sigkill(pid);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> &Path {
        Path::new(s)
    }

    #[test]
    fn v2_enforces_the_no_internal_process_rule() {
        let fs = FakeFs::new();
        fs.mount_v2("/cg", &["memory", "pids"]);
        fs.mkdir_all("/cg/a/b").unwrap();
        fs.spawn_in(10, &["/cg/a/b"]).unwrap();
        // b has a process: it may not enable controllers for children.
        let e = fs
            .write(p("/cg/a/b/cgroup.subtree_control"), "+memory")
            .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EBUSY));
        // a enables memory: a child cannot take processes... a itself can't either.
        let e = fs.write(p("/cg/a/cgroup.procs"), "10").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EBUSY));
        // Controllers not offered by the parent are ENOENT.
        let e = fs
            .write(p("/cg/a/b/cgroup.subtree_control"), "+cpu")
            .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
        // Controller files appear only where the parent enabled the controller.
        assert!(fs.exists(p("/cg/a/b/memory.max")));
        assert!(!fs.exists(p("/cg/memory.max")));
        assert!(!fs.exists(p("/cg/cgroup.freeze")));
        fs.mkdir(p("/cg/a/b/c")).unwrap();
        assert!(!fs.exists(p("/cg/a/b/c/memory.max")));
        assert!(fs.exists(p("/cg/a/b/c/cgroup.freeze")));
        // Disabling what a child still enables is EBUSY.
        let e = fs
            .write(p("/cg/cgroup.subtree_control"), "-memory")
            .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EBUSY));
    }

    #[test]
    fn procs_move_between_cgroups_and_rmdir_waits_for_empty() {
        let fs = FakeFs::new();
        fs.mount_v1("/cg/pids", &["pids"]);
        fs.mkdir_all("/cg/pids/a").unwrap();
        fs.mkdir_all("/cg/pids/b").unwrap();
        fs.spawn_in(7, &["/cg/pids/a"]).unwrap();
        fs.write(p("/cg/pids/b/cgroup.procs"), "7").unwrap();
        assert_eq!(fs.read(p("/cg/pids/a/cgroup.procs")).unwrap(), "");
        assert_eq!(fs.read(p("/cg/pids/b/cgroup.procs")).unwrap(), "7\n");
        assert_eq!(
            fs.read(p("/cg/pids/pids.current"))
                .unwrap_err()
                .raw_os_error(),
            Some(libc::ENOENT)
        );
        assert_eq!(fs.read(p("/cg/pids/b/pids.current")).unwrap(), "1\n");
        assert_eq!(
            fs.rmdir(p("/cg/pids/b")).unwrap_err().raw_os_error(),
            Some(libc::EBUSY)
        );
        let e = fs.write(p("/cg/pids/a/cgroup.procs"), "99").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ESRCH));
        fs.signal(p("/cg/pids/b"), 7, Signal::SIGKILL).unwrap();
        assert!(!fs.is_alive(7));
        fs.rmdir(p("/cg/pids/b")).unwrap();
        assert!(!fs.exists(p("/cg/pids/b")));
        // A control file's name cannot be taken by a cgroup.
        assert_eq!(
            fs.mkdir(p("/cg/pids/a/tasks")).unwrap_err().raw_os_error(),
            Some(libc::EEXIST)
        );
    }

    #[test]
    fn v1_frozen_tasks_die_only_when_thawed() {
        let fs = FakeFs::new();
        fs.mount_v1("/cg/freezer", &["freezer"]);
        fs.mkdir_all("/cg/freezer/a/b").unwrap();
        fs.spawn_in(5, &["/cg/freezer/a/b"]).unwrap();
        fs.write(p("/cg/freezer/a/freezer.state"), "FROZEN")
            .unwrap();
        assert_eq!(
            fs.read(p("/cg/freezer/a/b/freezer.state")).unwrap(),
            "FROZEN\n"
        );
        fs.signal(p("/cg/freezer/a/b"), 5, Signal::SIGKILL).unwrap();
        assert!(fs.is_alive(5));
        fs.write(p("/cg/freezer/a/freezer.state"), "THAWED")
            .unwrap();
        assert!(!fs.is_alive(5));
    }

    #[test]
    fn signals_to_non_members_are_dropped() {
        let fs = FakeFs::new();
        fs.mount_v1("/cg/pids", &["pids"]);
        fs.mkdir_all("/cg/pids/a").unwrap();
        fs.spawn_in(5, &[]).unwrap();
        fs.signal(p("/cg/pids/a"), 5, Signal::SIGKILL).unwrap();
        assert!(fs.is_alive(5));
        assert!(fs.signals().is_empty());
    }

    #[test]
    fn v1_memsw_must_stay_above_the_memory_limit() {
        let fs = FakeFs::new();
        fs.mount_v1("/cg/memory", &["memory"]);
        fs.mkdir_all("/cg/memory/a").unwrap();
        fs.write(p("/cg/memory/a/memory.limit_in_bytes"), "1000")
            .unwrap();
        let e = fs
            .write(p("/cg/memory/a/memory.memsw.limit_in_bytes"), "999")
            .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
        fs.write(p("/cg/memory/a/memory.memsw.limit_in_bytes"), "1000")
            .unwrap();
        let e = fs
            .write(p("/cg/memory/a/memory.limit_in_bytes"), "2000")
            .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
    }
}
