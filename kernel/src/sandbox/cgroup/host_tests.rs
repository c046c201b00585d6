//! Real-host tests: real cgroups on this machine with real processes in them.
//!
//! They need root (else `SKIP:`), and they run one at a time (the `HOST` lock): a memory hog
//! or a fork loop next to a timing-sensitive freeze check would make it flaky. Each test
//! works in its own subtree `clove-test-<pid>-<n>` under the test process's own cgroups, and a
//! [`Fixture`] removes it again (killing whatever is left) even when the test panics; on a v2
//! host that needed the leaf move, it also moves the test process back and disables the
//! controllers it enabled. Children are [`Proc`]s, killed and reaped on drop.

use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::{CgroupFs, CgroupLimits, Cgroups, Controller, HostFs, Layout, Version};

static HOST: Mutex<()> = Mutex::new(());
static SEQ: AtomicU32 = AtomicU32::new(0);

const PYTHON: &str = "/usr/bin/python3.11";

fn serial() -> MutexGuard<'static, ()> {
    HOST.lock().unwrap_or_else(|e| e.into_inner())
}

fn skip(reason: &str) {
    eprintln!("SKIP: {reason}");
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A child process, killed and reaped when dropped.
struct Proc(Child);

impl Proc {
    fn spawn(cmd: &mut Command) -> Proc {
        Proc(cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}")))
    }

    /// A program that waits for a line on stdin before it does anything, so it can be put in
    /// its cgroup first.
    fn gated(program: &str, args: &[&str]) -> Proc {
        Proc::spawn(
            Command::new(program)
                .args(args)
                .stdin(Stdio::piped())
                .stderr(Stdio::piped()),
        )
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    fn release(&mut self) {
        let stdin = self.0.stdin.as_mut().expect("gated process has a stdin");
        stdin.write_all(b"go\n").unwrap();
        stdin.flush().unwrap();
    }

    fn wait_timeout(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.0.try_wait().unwrap() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stderr(&mut self) -> String {
        let mut s = String::new();
        if let Some(e) = self.0.stderr.as_mut() {
            let _ = e.read_to_string(&mut s);
        }
        s
    }

    /// Field 3 of /proc/<pid>/stat.
    fn state(&self) -> char {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        // The command name (field 2) may contain spaces: the state follows its ')'.
        stat.rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next())
            .unwrap_or('?')
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What a v2 leaf move changed in the test process's own cgroup, to undo it.
struct V2Restore {
    own: PathBuf,
    subtree_control_before: String,
}

/// A test-owned subtree, removed on drop.
struct Fixture {
    layout: Layout,
    subtree: String,
    cgroups: Option<Cgroups>,
    restore: Vec<V2Restore>,
}

impl Fixture {
    fn new(layout: Layout) -> Fixture {
        let subtree = format!(
            "clove-test-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        );
        let mut restore: Vec<V2Restore> = Vec::new();
        for (_, p) in layout.placements() {
            if p.version == Version::V2 && !restore.iter().any(|r| r.own == p.own) {
                restore.push(V2Restore {
                    own: p.own.clone(),
                    subtree_control_before: std::fs::read_to_string(
                        p.own.join("cgroup.subtree_control"),
                    )
                    .unwrap_or_default(),
                });
            }
        }
        let mut fx = Fixture {
            layout,
            subtree,
            cgroups: None,
            restore,
        };
        fx.cgroups = Some(fx.open());
        fx
    }

    /// Another `Cgroups` on the same subtree (a kernel restarted on the same state dir).
    fn open(&self) -> Cgroups {
        Cgroups::new(Arc::new(HostFs), self.layout.clone(), &self.subtree).unwrap()
    }

    fn cg(&self) -> &Cgroups {
        self.cgroups.as_ref().expect("fixture is open")
    }

    /// Removes everything now and asserts it is gone.
    fn finish(mut self) {
        let dirs = self.cg().subtree_dirs();
        self.teardown();
        for d in dirs {
            assert!(!d.exists(), "{} left behind", d.display());
        }
    }

    fn teardown(&mut self) {
        let Some(cg) = self.cgroups.take() else {
            return;
        };
        if let Err(e) = cg.remove_all() {
            eprintln!("cleanup: {e}");
        }
        let Some(leaf) = cg.kernel_leaf().map(Path::to_path_buf) else {
            return;
        };
        // Undo the leaf move: controllers we enabled off, processes back, leaf gone.
        let fs = HostFs;
        for r in &self.restore {
            if leaf.parent() != Some(r.own.as_path()) {
                continue;
            }
            let control = r.own.join("cgroup.subtree_control");
            let now = fs.read(&control).unwrap_or_default();
            for c in now.split_whitespace() {
                if !r.subtree_control_before.split_whitespace().any(|b| b == c) {
                    if let Err(e) = fs.write(&control, &format!("-{c}")) {
                        eprintln!("cleanup: disable {c} in {}: {e}", control.display());
                    }
                }
            }
            let pids = fs.read(&leaf.join("cgroup.procs")).unwrap_or_default();
            for pid in pids.split_whitespace() {
                if let Err(e) = fs.write(&r.own.join("cgroup.procs"), pid) {
                    eprintln!("cleanup: move {pid} back to {}: {e}", r.own.display());
                }
            }
            if let Err(e) = fs.rmdir(&leaf) {
                eprintln!("cleanup: remove {}: {e}", leaf.display());
            }
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// The host layout, or `None` (after a SKIP line) when the test cannot run here.
fn host_layout(test: &str) -> Option<Layout> {
    if !is_root() {
        skip(&format!("{test}: needs root to create cgroups"));
        return None;
    }
    Some(Layout::host().unwrap())
}

/// Only the unified hierarchy: the cgroup2 line of this process's mountinfo and its `0::`
/// line. `None` (after a SKIP line) when there is no cgroup2 mount or no root.
fn v2_layout(test: &str) -> Option<Layout> {
    if !is_root() {
        skip(&format!("{test}: needs root to create cgroups"));
        return None;
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let Some(line) = mountinfo.lines().find(|l| l.contains(" - cgroup2 ")) else {
        skip(&format!("{test}: no cgroup2 mount on this host"));
        return None;
    };
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let own = cgroup
        .lines()
        .find(|l| l.starts_with("0::"))
        .unwrap_or("0::/");
    let layout = Layout::detect(line, own).unwrap();
    assert!(
        layout.placements().all(|(_, p)| p.version == Version::V2),
        "{layout:?}"
    );
    Some(layout)
}

/// The agent's directory that has `file` (the hierarchy of one controller).
fn dir_with(paths: &[PathBuf], file: &str) -> PathBuf {
    paths
        .iter()
        .find(|p| p.join(file).exists())
        .unwrap_or_else(|| panic!("no {file} in {paths:?}"))
        .clone()
}

fn assert_killed(p: &mut Proc, what: &str) {
    let status = p
        .wait_timeout(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("{what} still running"));
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{what}: {status:?}");
}

#[test]
fn host_agent_cgroup_holds_a_real_child_until_killed_and_removed() {
    let _serial = serial();
    let Some(layout) = host_layout("host_agent_cgroup_holds_a_real_child") else {
        return;
    };
    let fx = Fixture::new(layout);
    let cg = fx.cg();
    if cg.available().is_empty() {
        skip(&format!("no usable cgroup controller: {:?}", cg.notes()));
        return;
    }
    let limits = CgroupLimits {
        cpu_quota_us: Some(50_000),
        cpu_shares: Some(512),
        ..CgroupLimits::default()
    };
    let (a, not_applied) = cg.create(None, "a-1", &limits).unwrap();
    assert_eq!(
        not_applied.contains(&"cpu"),
        !cg.has(Controller::Cpu),
        "{not_applied:?}"
    );
    assert_eq!(
        not_applied.contains(&"freezer"),
        !cg.has(Controller::Freezer)
    );
    let paths = a.paths();
    for p in &paths {
        assert!(p.is_dir(), "{}", p.display());
    }

    let mut sleeper = Proc::spawn(Command::new("sleep").arg("30"));
    a.add_pid(sleeper.pid()).unwrap();
    // The kernel's own view: one line per hierarchy names the agent's cgroup (its leaf on v2).
    let proc_cgroup = std::fs::read_to_string(format!("/proc/{}/cgroup", sleeper.pid())).unwrap();
    let tail = format!("/{}/a-1", fx.subtree);
    let tail_v2 = format!("{tail}/_procs");
    let matching = proc_cgroup
        .lines()
        .filter(|l| l.ends_with(&tail) || l.ends_with(&tail_v2))
        .count();
    assert_eq!(matching, paths.len(), "{proc_cgroup}");
    assert_eq!(a.procs().unwrap(), vec![sleeper.pid()]);

    if cg.has(Controller::Cpu) {
        let read = |p: PathBuf| std::fs::read_to_string(p).unwrap().trim().to_string();
        match paths.iter().find(|p| p.join("cpu.cfs_quota_us").exists()) {
            Some(dir) => {
                assert_eq!(read(dir.join("cpu.cfs_quota_us")), "50000");
                assert_eq!(read(dir.join("cpu.shares")), "512");
            }
            None => {
                let dir = dir_with(&paths, "cpu.max");
                assert_eq!(read(dir.join("cpu.max")), "50000 100000");
                assert_eq!(read(dir.join("cpu.weight")), "58");
            }
        }
    }

    a.kill_all(Signal::SIGKILL).unwrap();
    assert_killed(&mut sleeper, "sleep");
    assert!(a.procs().unwrap().is_empty());
    a.remove().unwrap();
    for p in &paths {
        assert!(!p.exists(), "{} still there", p.display());
    }
    fx.finish();
}

/// A shell forking 12 sleeps in a cgroup with pids.max 4 gets EAGAIN at the fourth task.
fn pids_cap_holds(cg: &Cgroups, subtree: &str) {
    let (a, not_applied) = cg
        .create(
            None,
            "forks",
            &CgroupLimits {
                pids_max: Some(4),
                ..CgroupLimits::default()
            },
        )
        .unwrap();
    assert!(!not_applied.contains(&"pids"), "{not_applied:?}");
    let mut sh = Proc::gated(
        "/bin/sh",
        &[
            "-c",
            // The sleeps must not hold the stderr pipe open: it is read to its end.
            "read go; i=0; while [ $i -lt 12 ]; do sleep 30 </dev/null >/dev/null 2>&1 & \
             i=$((i+1)); done; echo all forked; wait",
        ],
    );
    a.add_pid(sh.pid()).unwrap();
    sh.release();
    // dash gives up on the first failed fork; bash would retry for a while.
    let status = sh.wait_timeout(Duration::from_secs(10));
    assert!(
        status.is_some(),
        "the shell neither failed to fork nor finished"
    );
    let stderr = sh.stderr();
    assert!(
        stderr.to_lowercase().contains("fork"),
        "{subtree}: no fork failure (status {status:?}): {stderr:?}"
    );
    let current = a.pids_current().unwrap();
    let procs = a.procs().unwrap();
    assert!(current <= 4, "pids.current {current}");
    assert!(procs.len() <= 4 && procs.len() >= 3, "{procs:?}");
    let events = dir_with(&a.paths(), "pids.max").join("pids.events");
    if events.exists() {
        let s = std::fs::read_to_string(&events).unwrap();
        assert!(!s.contains("max 0"), "the limit never refused a fork: {s}");
    }
    a.kill_all(Signal::SIGKILL).unwrap();
    a.remove().unwrap();
}

/// A Python memory hog in a 64 MiB cgroup is OOM-killed and counted.
fn memory_limit_oom_kills_hog(cg: &Cgroups) {
    let limit: u64 = 64 << 20;
    let (a, not_applied) = cg
        .create(
            None,
            "hog",
            &CgroupLimits {
                memory: Some(limit),
                ..CgroupLimits::default()
            },
        )
        .unwrap();
    assert!(!not_applied.contains(&"memory"), "{not_applied:?}");
    assert_eq!(a.oom_kills().unwrap(), 0);
    let mut hog = Proc::gated(
        PYTHON,
        &[
            "-c",
            "import sys\nsys.stdin.readline()\nb = []\nwhile True:\n    b.append(b'x' * (4 << 20))\n",
        ],
    );
    a.add_pid(hog.pid()).unwrap();
    hog.release();
    assert_killed(&mut hog, "memory hog");
    assert_eq!(a.oom_kills().unwrap(), 1);
    if let Some(peak) = a.memory_peak().unwrap() {
        assert!(peak <= limit, "peak {peak} above the limit");
        assert!(peak > limit / 2, "peak {peak}: the hog never grew");
    }
    a.kill_all(Signal::SIGKILL).unwrap();
    a.remove().unwrap();
}

#[test]
fn host_pids_limit_caps_a_fork_loop() {
    let _serial = serial();
    let Some(layout) = host_layout("host_pids_limit_caps_a_fork_loop") else {
        return;
    };
    let fx = Fixture::new(layout);
    if !fx.cg().has(Controller::Pids) {
        skip(&format!(
            "host_pids_limit_caps_a_fork_loop: no pids controller: {:?}",
            fx.cg().notes()
        ));
        return;
    }
    pids_cap_holds(fx.cg(), &fx.subtree);
    fx.finish();
}

#[test]
fn host_memory_limit_oom_kills_a_python_hog() {
    let _serial = serial();
    let Some(layout) = host_layout("host_memory_limit_oom_kills_a_python_hog") else {
        return;
    };
    if !Path::new(PYTHON).exists() {
        skip(&format!(
            "host_memory_limit_oom_kills_a_python_hog: no {PYTHON}"
        ));
        return;
    }
    let fx = Fixture::new(layout);
    if !fx.cg().has(Controller::Memory) {
        skip(&format!(
            "host_memory_limit_oom_kills_a_python_hog: no memory controller: {:?}",
            fx.cg().notes()
        ));
        return;
    }
    memory_limit_oom_kills_hog(fx.cg());
    fx.finish();
}

/// Freezes a busy loop: the kernel reports it frozen, it stops using CPU, and thawing lets it
/// run again.
fn freeze_stops_a_busy_loop(cg: &Cgroups) {
    let (a, _) = cg.create(None, "busy", &CgroupLimits::default()).unwrap();
    let mut busy = Proc::spawn(Command::new("/bin/sh").args(["-c", "while :; do :; done"]));
    a.add_pid(busy.pid()).unwrap();
    std::thread::sleep(Duration::from_millis(100));

    a.freeze().unwrap();
    assert!(a.is_frozen().unwrap());
    let v1 = a.paths().iter().any(|p| p.join("freezer.state").exists());
    if v1 {
        // The v1 freezer parks tasks in an uninterruptible sleep.
        assert_eq!(busy.state(), 'D');
    }
    if cg.has(Controller::Cpuacct) {
        let u1 = a.cpu_usage_usec().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let u2 = a.cpu_usage_usec().unwrap();
        assert!(u2 - u1 < 2_000, "frozen but used {} us", u2 - u1);
        a.thaw().unwrap();
        assert!(!a.is_frozen().unwrap());
        std::thread::sleep(Duration::from_millis(300));
        let u3 = a.cpu_usage_usec().unwrap();
        assert!(u3 - u2 > 50_000, "thawed but used only {} us", u3 - u2);
    } else {
        a.thaw().unwrap();
        assert!(!a.is_frozen().unwrap());
    }
    assert_ne!(busy.state(), 'D');
    a.kill_all(Signal::SIGKILL).unwrap();
    assert_killed(&mut busy, "busy loop");
    a.remove().unwrap();
}

#[test]
fn host_freeze_stops_a_busy_loop_and_thaw_resumes_it() {
    let _serial = serial();
    let Some(layout) = host_layout("host_freeze_stops_a_busy_loop") else {
        return;
    };
    let fx = Fixture::new(layout);
    if !fx.cg().has(Controller::Freezer) {
        skip(&format!(
            "host_freeze_stops_a_busy_loop: no freezer: {:?}",
            fx.cg().notes()
        ));
        return;
    }
    freeze_stops_a_busy_loop(fx.cg());
    fx.finish();
}

#[test]
fn host_kill_all_kills_a_frozen_subtree_with_a_nested_agent() {
    let _serial = serial();
    let Some(layout) = host_layout("host_kill_all_kills_a_frozen_subtree") else {
        return;
    };
    let fx = Fixture::new(layout);
    let cg = fx.cg();
    if !cg.has(Controller::Freezer) {
        skip(&format!(
            "host_kill_all_kills_a_frozen_subtree: no freezer: {:?}",
            cg.notes()
        ));
        return;
    }
    let (parent, _) = cg.create(None, "p-1", &CgroupLimits::default()).unwrap();
    let (child, _) = cg
        .create(Some(&parent), "c-1", &CgroupLimits::default())
        .unwrap();
    for (p, c) in parent.paths().iter().zip(child.paths()) {
        assert_eq!(c.parent(), Some(p.as_path()));
    }
    let mut s1 = Proc::spawn(Command::new("sleep").arg("30"));
    let mut s2 = Proc::spawn(Command::new("sleep").arg("30"));
    parent.add_pid(s1.pid()).unwrap();
    child.add_pid(s2.pid()).unwrap();
    let mut want = vec![s1.pid(), s2.pid()];
    want.sort_unstable();
    assert_eq!(parent.procs().unwrap(), want);

    parent.freeze().unwrap();
    assert!(
        child.is_frozen().unwrap(),
        "freezing the parent freezes the child"
    );
    parent.kill_all(Signal::SIGKILL).unwrap();
    assert_killed(&mut s1, "parent's sleep");
    assert_killed(&mut s2, "child's sleep");
    parent.remove().unwrap();
    for p in parent.paths().iter().chain(child.paths().iter()) {
        assert!(!p.exists(), "{}", p.display());
    }
    fx.finish();
}

#[test]
fn host_clean_stale_kills_and_removes_a_crashed_runs_agents() {
    let _serial = serial();
    let Some(layout) = host_layout("host_clean_stale") else {
        return;
    };
    let fx = Fixture::new(layout);
    if fx.cg().available().is_empty() {
        skip("host_clean_stale: no usable cgroup controller");
        return;
    }
    let (old, _) = fx
        .cg()
        .create(None, "s-1", &CgroupLimits::default())
        .unwrap();
    let mut sleeper = Proc::spawn(Command::new("sleep").arg("30"));
    old.add_pid(sleeper.pid()).unwrap();
    if fx.cg().has(Controller::Freezer) {
        old.freeze().unwrap();
    }
    // A restarted kernel on the same state dir finds the leftover.
    let restarted = fx.open();
    assert_eq!(restarted.clean_stale().unwrap(), 1);
    assert_killed(&mut sleeper, "stale agent's sleep");
    for p in old.paths() {
        assert!(!p.exists(), "{}", p.display());
    }
    for d in restarted.subtree_dirs() {
        assert!(d.is_dir(), "the subtree itself stays: {}", d.display());
    }
    fx.finish();
}

/// The unified hierarchy on its own. On this CI machine it holds no controllers, but freezing,
/// `cgroup.kill` and `cpu.stat` are core v2 features and run for real; the limits must come
/// back as not applied.
#[test]
fn host_v2_unified_freeze_kill_and_not_applied_limits() {
    let _serial = serial();
    let Some(layout) = v2_layout("host_v2_unified") else {
        return;
    };
    let fx = Fixture::new(layout);
    let cg = fx.cg();
    if cg.available().is_empty() {
        skip(&format!(
            "host_v2_unified: nothing usable on cgroup2: {:?}",
            cg.notes()
        ));
        return;
    }
    assert_eq!(cg.version_label(), "v2");
    let limits = CgroupLimits {
        memory: Some(64 << 20),
        cpu_quota_us: Some(50_000),
        pids_max: Some(8),
        ..CgroupLimits::default()
    };
    let (a, not_applied) = cg.create(None, "u-1", &limits).unwrap();
    for (c, name) in [
        (Controller::Memory, "memory"),
        (Controller::Cpu, "cpu"),
        (Controller::Pids, "pids"),
        (Controller::Freezer, "freezer"),
    ] {
        assert_eq!(
            not_applied.contains(&name),
            !cg.has(c),
            "{name}: {not_applied:?}"
        );
    }
    let mut sleeper = Proc::spawn(Command::new("sleep").arg("30"));
    a.add_pid(sleeper.pid()).unwrap();
    let proc_cgroup = std::fs::read_to_string(format!("/proc/{}/cgroup", sleeper.pid())).unwrap();
    let want = format!("/{}/u-1/_procs", fx.subtree);
    assert!(
        proc_cgroup
            .lines()
            .any(|l| l.starts_with("0::") && l.ends_with(&want)),
        "{proc_cgroup}"
    );
    if cg.has(Controller::Freezer) {
        a.freeze().unwrap();
        assert!(a.is_frozen().unwrap());
        a.thaw().unwrap();
        assert!(!a.is_frozen().unwrap());
    }
    let kill_file = a.paths()[0].join("cgroup.kill");
    a.kill_all(Signal::SIGKILL).unwrap();
    assert_killed(&mut sleeper, "sleep");
    eprintln!(
        "host_v2_unified: killed via {}",
        if kill_file.exists() {
            "cgroup.kill"
        } else {
            "signals"
        }
    );
    a.remove().unwrap();
    if cg.has(Controller::Freezer) {
        freeze_stops_a_busy_loop(cg);
    }
    fx.finish();
}

/// Limits enforced by v2 controllers, where the host's unified hierarchy offers them.
#[test]
fn host_v2_limits_hold_where_the_host_has_v2_controllers() {
    let _serial = serial();
    let Some(layout) = v2_layout("host_v2_limits") else {
        return;
    };
    let fx = Fixture::new(layout);
    let cg = fx.cg();
    if !(cg.has(Controller::Memory) && cg.has(Controller::Pids)) {
        let offered = layout_offered(&fx);
        skip(&format!(
            "host_v2_limits: the cgroup2 mount offers this process no memory/pids controller \
             (cgroup.controllers: {offered:?}); on this host they are v1 mounts"
        ));
        return;
    }
    pids_cap_holds(cg, &fx.subtree);
    if Path::new(PYTHON).exists() {
        memory_limit_oom_kills_hog(cg);
    } else {
        skip(&format!("host_v2_limits: memory part: no {PYTHON}"));
    }
    fx.finish();
}

fn layout_offered(fx: &Fixture) -> String {
    fx.layout
        .placements()
        .next()
        .and_then(|(_, p)| std::fs::read_to_string(p.own.join("cgroup.controllers")).ok())
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[test]
fn host_placement_warmer_leaves_every_cgroup_as_it_was() {
    let _serial = serial();
    let Some(layout) = host_layout("host_placement_warmer_leaves_every_cgroup_as_it_was") else {
        return;
    };
    let fx = Fixture::new(layout);
    let Some(warmer) = fx.cg().placement_warmer() else {
        skip("host_placement_warmer_leaves_every_cgroup_as_it_was: no v1 hierarchy in use");
        return;
    };
    let before = std::fs::read_to_string("/proc/thread-self/cgroup").unwrap();
    let process_before = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    // It writes: the thread is where the kernel's own cgroup was found at start.
    assert!(warmer.warm(), "{before}");
    assert_eq!(
        std::fs::read_to_string("/proc/thread-self/cgroup").unwrap(),
        before
    );
    assert_eq!(
        std::fs::read_to_string("/proc/self/cgroup").unwrap(),
        process_before
    );
    fx.finish();
}
