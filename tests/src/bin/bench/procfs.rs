//! What the bench reads from /proc and from the cgroup mounts: a process's resident memory,
//! state and children, host memory and process counts, and where a cgroup lives on disk. The
//! memory figures and the "nothing left behind" checks are taken from the host's view, not
//! from what the kernel under test says about itself.

use std::path::PathBuf;

use anyhow::{Context, Result};

/// Figures from /proc/<pid>/status.
#[derive(Debug, Clone, Copy)]
pub struct ProcStatus {
    pub rss_kib: u64,
    pub hwm_kib: u64,
    pub threads: u64,
}

/// The number in a `Key:   123 kB` line of a /proc text.
fn kib_field(text: &str, key: &str, path: &str) -> Result<u64> {
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .with_context(|| format!("{key} missing from {path}"))?;
    let num = line.trim().trim_end_matches("kB").trim();
    num.parse()
        .with_context(|| format!("{key} in {path}: {line:?}"))
}

/// VmRSS, VmHWM and Threads of process `pid`.
pub fn proc_status(pid: u32) -> Result<ProcStatus> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    Ok(ProcStatus {
        rss_kib: kib_field(&text, "VmRSS:", &path)?,
        hwm_kib: kib_field(&text, "VmHWM:", &path)?,
        threads: kib_field(&text, "Threads:", &path)?,
    })
}

/// Proportional set size of `pid` in KiB (shared pages split between their users), the fair
/// share of memory a process costs; `None` when it is gone.
pub fn pss_kib(pid: i32) -> Option<u64> {
    let path = format!("/proc/{pid}/smaps_rollup");
    let text = std::fs::read_to_string(&path).ok()?;
    kib_field(&text, "Pss:", &path).ok()
}

/// MemAvailable of the host, in KiB.
pub fn mem_available_kib() -> Result<u64> {
    let path = "/proc/meminfo";
    let text = std::fs::read_to_string(path).with_context(|| format!("read {path}"))?;
    kib_field(&text, "MemAvailable:", path)
}

/// Identity of a live process: its pid and its start time (clock ticks after boot), so a
/// reused pid is not mistaken for the process seen before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcId {
    pub pid: i32,
    pub start: u64,
}

/// The fields of /proc/<pid>/stat after the command name (which may contain spaces and
/// parentheses, so the split is at the last ')').
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

impl ProcId {
    /// The process `pid` as it is now; `None` when there is none.
    pub fn of(pid: i32) -> Option<ProcId> {
        // After the name: state is field 3 of stat, starttime field 22, so index 19 here.
        let start = stat_fields(pid)?.get(19)?.parse().ok()?;
        Some(ProcId { pid, start })
    }

    /// The same process is still there (a zombie counts: it has not been reaped).
    pub fn alive(&self) -> bool {
        ProcId::of(self.pid) == Some(*self)
    }
}

/// The one-letter state of `pid` (`R`, `S`, `D`, `Z`, ...); `None` when it is gone.
pub fn state(pid: i32) -> Option<char> {
    stat_fields(pid)?.first()?.chars().next()
}

/// The children of `pid` (its main thread's).
pub fn children(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// Processes on the host (numeric entries of /proc).
pub fn process_count() -> usize {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
                .count()
        })
        .unwrap_or(0)
}

/// A one-line integer from a /proc/sys file.
pub fn sysctl(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Open descriptors of `pid` and its soft RLIMIT_NOFILE.
pub fn fds(pid: u32) -> (Option<usize>, Option<u64>) {
    let open = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(|d| d.count());
    let limit = std::fs::read_to_string(format!("/proc/{pid}/limits"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|v| v.parse().ok())
        });
    (open, limit)
}

/// Mount points of every cgroup (v1) and cgroup2 file system whose root is the hierarchy's
/// root, from /proc/self/mountinfo.
pub fn cgroup_mounts() -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let (pre, post) = line.split_once(" - ")?;
            let fstype = post.split_whitespace().next()?;
            let mut f = pre.split_whitespace();
            let root = f.nth(3)?;
            let point = f.next()?;
            (matches!(fstype, "cgroup" | "cgroup2") && root == "/").then(|| PathBuf::from(point))
        })
        .collect()
}

/// For each cgroup process `pid` is in whose path has a component starting with `marker`:
/// the directory of that component (a leaf below it, such as cgroup v2's process leaf, is cut
/// off), in every cgroup mount where it exists.
pub fn cgroup_dirs(pid: i32, mounts: &[PathBuf], marker: &str) -> Vec<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    let mut out = Vec::new();
    for rel in text.lines().filter_map(|l| marked_prefix(l, marker)) {
        for m in mounts {
            let dir = m.join(&rel);
            if dir.is_dir() && !out.contains(&dir) {
                out.push(dir);
            }
        }
    }
    out
}

/// From a /proc/<pid>/cgroup line (`12:pids:/a/agent-3/_procs`), the cgroup path relative to
/// its hierarchy's root up to its last component starting with `marker` (`a/agent-3`).
fn marked_prefix(line: &str, marker: &str) -> Option<String> {
    let path = line.splitn(3, ':').nth(2)?;
    let parts: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let last = parts.iter().rposition(|c| c.starts_with(marker))?;
    Some(parts[..=last].join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_paths_are_cut_after_the_marked_component() {
        assert_eq!(
            marked_prefix("12:pids:/clove-ab/agent-3", "agent-").as_deref(),
            Some("clove-ab/agent-3")
        );
        // cgroup v2: the processes sit in a leaf below the agent's cgroup.
        assert_eq!(
            marked_prefix("0::/s/clove-ab/agent-4/_procs", "agent-").as_deref(),
            Some("s/clove-ab/agent-4")
        );
        assert_eq!(marked_prefix("3:cpu,cpuacct:/user.slice", "agent-"), None);
        assert_eq!(marked_prefix("garbage", "agent-"), None);
    }

    #[test]
    fn kib_fields_parse_and_name_what_is_missing() {
        let text = "Name:\tx\nVmRSS:\t  1234 kB\nThreads:\t4\n";
        assert_eq!(kib_field(text, "VmRSS:", "t").unwrap(), 1234);
        assert_eq!(kib_field(text, "Threads:", "t").unwrap(), 4);
        let e = kib_field(text, "VmHWM:", "t").unwrap_err().to_string();
        assert_eq!(e, "VmHWM: missing from t");
    }

    #[test]
    fn a_process_is_seen_alive_asleep_and_then_gone() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let id = ProcId::of(child.id() as i32).unwrap();
        assert!(id.alive());
        let other = ProcId {
            pid: id.pid,
            start: id.start + 1,
        };
        assert!(!other.alive(), "a different start time is another process");
        let start = std::time::Instant::now();
        while state(id.pid) != Some('S') && start.elapsed().as_secs() < 3 {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let asleep = state(id.pid);
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(asleep, Some('S'));
        assert!(!id.alive(), "reaped");
        assert_eq!(state(id.pid), None);
    }
}
