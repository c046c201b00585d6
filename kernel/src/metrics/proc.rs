//! Readers of `/proc` (through the `procfs` crate): one process's usage, and the host's.
//!
//! Everything here is blocking file I/O (cheap, but `/proc/<pid>/fd` of a process with many
//! descriptors is a directory walk): async callers run it on a blocking thread.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clove_abi::msg::{
    IoBytes, ProcessCpu, ProcessMemory, ProcessMetrics, SystemCpu, SystemDisk, SystemMemory,
    SystemMetrics, SystemNetwork,
};
use procfs::process::Process;
use procfs::{Current, CurrentSI};

use super::cpu::{self, Key, Samples};
use crate::sync::lock;

/// A process or host figure that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("read {what}: {source}")]
pub struct ProcError {
    /// What was being read (`/proc/42/stat`, `/proc/meminfo`).
    pub what: String,
    /// The cause.
    #[source]
    pub source: procfs::ProcError,
}

impl ProcError {
    fn new(what: impl Into<String>, source: procfs::ProcError) -> ProcError {
        ProcError {
            what: what.into(),
            source,
        }
    }

    /// The process is gone (it exited between the lookup and the read).
    pub fn is_gone(&self) -> bool {
        matches!(self.source, procfs::ProcError::NotFound(_))
    }
}

/// The clock ticks per second of `/proc/<pid>/stat` and `/proc/stat`.
fn ticks_per_second() -> u64 {
    procfs::ticks_per_second().max(1)
}

fn ticks_to_usec(ticks: u64) -> u64 {
    ticks.saturating_mul(1_000_000) / ticks_per_second()
}

/// One process's usage. `percent` is over the time since the previous reading of the same
/// process (see [`super::cpu`]); on the first, the average since the process started. The
/// samples are locked only to update them, never across a file read.
pub fn process(pid: i32, samples: &Mutex<Samples>) -> Result<ProcessMetrics, ProcError> {
    let p = Process::new(pid).map_err(|e| ProcError::new(format!("/proc/{pid}"), e))?;
    let stat = p
        .stat()
        .map_err(|e| ProcError::new(format!("/proc/{pid}/stat"), e))?;
    let now = Instant::now();
    let time_usec = ticks_to_usec(stat.utime.saturating_add(stat.stime));
    let kept = lock(samples).usage_percent(Key::Process(pid, stat.starttime), time_usec, now);
    let percent = match kept {
        Some(p) => p,
        None => cpu::average_percent(time_usec, process_age(stat.starttime)),
    };
    // Both need the right to inspect the process (the kernel is root, or owns its agents);
    // without it the figure is left out rather than failing the whole reply.
    let fds = p
        .fd_count()
        .map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX));
    let io = p.io().ok().map(|io| IoBytes {
        read_bytes: io.read_bytes,
        write_bytes: io.write_bytes,
    });
    Ok(ProcessMetrics {
        pid,
        cpu: ProcessCpu {
            percent,
            time_usec: Some(time_usec),
        },
        memory: ProcessMemory {
            rss: stat.rss.saturating_mul(procfs::page_size()),
            vms: stat.vsize,
        },
        threads: u32::try_from(stat.num_threads).unwrap_or(0),
        fds,
        io,
    })
}

/// How long process `pid` has been running; `None` when it cannot be read.
pub fn age(pid: i32) -> Option<Duration> {
    let stat = Process::new(pid).ok()?.stat().ok()?;
    Some(process_age(stat.starttime))
}

/// How long ago a process started, from its start time in ticks after boot.
fn process_age(starttime_ticks: u64) -> Duration {
    let Ok(uptime) = procfs::Uptime::current() else {
        return Duration::ZERO;
    };
    let started = Duration::from_secs_f64(starttime_ticks as f64 / ticks_per_second() as f64);
    Duration::from_secs_f64(uptime.uptime.max(0.0)).saturating_sub(started)
}

/// The agent process of the sandbox whose init is `init`: init's child that is PID 2 in the
/// sandbox's pid namespace (init forks the agent first, before any EXEC command), else init's
/// oldest child (a kernel without `NSpid` in `/proc/<pid>/status`).
pub fn sandboxed_agent(init: i32) -> Option<i32> {
    let kids = children(init);
    let pid_in_sandbox = |pid: i32| {
        Process::new(pid)
            .and_then(|p| p.status())
            .ok()
            .and_then(|s| s.nspid)
            .and_then(|ns| ns.last().copied())
    };
    kids.iter()
        .copied()
        .find(|k| pid_in_sandbox(*k) == Some(2))
        .or_else(|| kids.first().copied())
}

/// The children of a process (`/proc/<pid>/task/<pid>/children`), oldest first.
pub fn children(pid: i32) -> Vec<i32> {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) else {
        return Vec::new();
    };
    let mut kids: Vec<(u64, i32)> = text
        .split_whitespace()
        .filter_map(|w| w.parse::<i32>().ok())
        .filter_map(|c| {
            let start = Process::new(c).and_then(|p| p.stat()).ok()?.starttime;
            Some((start, c))
        })
        .collect();
    kids.sort_unstable();
    kids.into_iter().map(|(_, c)| c).collect()
}

/// The host's usage. CPU percentages are over the time since the previous reading (see
/// [`super::cpu`]); on the first, since boot.
pub fn system(samples: &Mutex<Samples>) -> Result<SystemMetrics, ProcError> {
    let now = Instant::now();
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let stats = procfs::KernelStats::current().map_err(|e| ProcError::new("/proc/stat", e))?;
    let mut kept = lock(samples);
    let mut share = |key: Key, t: &procfs::CpuTime| {
        let (busy, total) = busy_total(t);
        kept.share_percent(key, busy, total, now)
            .unwrap_or_else(|| {
                if total == 0 {
                    0.0
                } else {
                    cpu::round2(busy as f64 / total as f64 * 100.0)
                }
            })
    };
    let percent = share(Key::HostCpu(None), &stats.total);
    let per_core: Vec<f64> = stats
        .cpu_time
        .iter()
        .enumerate()
        .map(|(i, t)| share(Key::HostCpu(Some(i)), t))
        .collect();
    drop(kept);
    let load = procfs::LoadAverage::current().map_err(|e| ProcError::new("/proc/loadavg", e))?;
    let mem = procfs::Meminfo::current().map_err(|e| ProcError::new("/proc/meminfo", e))?;
    // Kernels before 3.14 have no MemAvailable: free memory is the closest.
    let available = mem.mem_available.unwrap_or(mem.mem_free);
    let used = mem.mem_total.saturating_sub(available);
    Ok(SystemMetrics {
        timestamp,
        cpu: SystemCpu {
            percent,
            count: u32::try_from(per_core.len()).unwrap_or(u32::MAX),
            per_core,
            load_avg: [
                f64::from(load.one),
                f64::from(load.five),
                f64::from(load.fifteen),
            ],
        },
        memory: SystemMemory {
            total: mem.mem_total,
            available,
            used,
            percent: if mem.mem_total == 0 {
                0.0
            } else {
                cpu::round2(used as f64 / mem.mem_total as f64 * 100.0)
            },
        },
        disk: disk()?,
        network: network()?,
    })
}

/// Busy and total ticks of a CPU line: idle and iowait are not busy; guest time is already
/// counted in user and nice.
fn busy_total(t: &procfs::CpuTime) -> (u64, u64) {
    let idle = t.idle + t.iowait.unwrap_or(0);
    let busy = t.user
        + t.nice
        + t.system
        + t.irq.unwrap_or(0)
        + t.softirq.unwrap_or(0)
        + t.steal.unwrap_or(0);
    (busy, busy + idle)
}

/// Bytes read and written by whole disks since boot (partitions are left out, their I/O is
/// the disk's; a whole disk is one listed in `/sys/block`).
fn disk() -> Result<SystemDisk, ProcError> {
    let stats = procfs::diskstats().map_err(|e| ProcError::new("/proc/diskstats", e))?;
    let mut d = SystemDisk::default();
    for s in stats {
        if !std::path::Path::new("/sys/block").join(&s.name).exists() {
            continue;
        }
        // diskstats counts 512-byte sectors whatever the device's sector size.
        d.read_bytes = d
            .read_bytes
            .saturating_add(s.sectors_read.saturating_mul(512));
        d.write_bytes = d
            .write_bytes
            .saturating_add(s.sectors_written.saturating_mul(512));
    }
    Ok(d)
}

/// Bytes sent and received on every interface but loopback since boot (of the kernel's
/// network namespace).
fn network() -> Result<SystemNetwork, ProcError> {
    let devs = procfs::net::dev_status().map_err(|e| ProcError::new("/proc/net/dev", e))?;
    let mut n = SystemNetwork::default();
    for (name, d) in devs {
        if name == "lo" {
            continue;
        }
        n.bytes_sent = n.bytes_sent.saturating_add(d.sent_bytes);
        n.bytes_recv = n.bytes_recv.saturating_add(d.recv_bytes);
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_process_is_read() {
        let samples = Mutex::new(Samples::default());
        let pid = i32::try_from(std::process::id()).unwrap();
        let m = process(pid, &samples).unwrap();
        assert_eq!(m.pid, pid);
        assert!(m.memory.rss > 1 << 20, "{m:?}");
        assert!(m.memory.vms >= m.memory.rss, "{m:?}");
        assert!(m.threads >= 1 && m.fds >= 3, "{m:?}");
        assert!(m.cpu.time_usec.is_some(), "{m:?}");
        // A second reading measures against the first.
        let again = process(pid, &samples).unwrap();
        assert!(again.cpu.percent >= 0.0);
    }

    #[test]
    fn a_gone_process_says_so() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        child.wait().unwrap();
        let e = process(pid, &Mutex::new(Samples::default())).unwrap_err();
        assert!(e.is_gone(), "{e}");
        assert!(e.to_string().contains(&format!("/proc/{pid}")), "{e}");
    }

    #[test]
    fn host_figures_are_consistent() {
        let samples = Mutex::new(Samples::default());
        let m = system(&samples).unwrap();
        assert!(m.timestamp > 1_600_000_000_000);
        assert!(m.cpu.count >= 1);
        assert_eq!(m.cpu.per_core.len(), m.cpu.count as usize);
        assert!((0.0..=100.0).contains(&m.cpu.percent), "{m:?}");
        assert!(m.memory.total > 0 && m.memory.used <= m.memory.total);
        assert_eq!(m.memory.used + m.memory.available, m.memory.total);
        let again = system(&samples).unwrap();
        assert!((0.0..=100.0).contains(&again.cpu.percent), "{again:?}");
    }

    #[test]
    fn children_are_listed_oldest_first() {
        // A single-threaded parent (children hang off the thread that forked them).
        let mut sh = std::process::Command::new("sh")
            .args(["-c", "sleep 5 & sleep 5 & wait"])
            .spawn()
            .unwrap();
        let pid = i32::try_from(sh.id()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut kids = children(pid);
        while kids.len() < 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            kids = children(pid);
        }
        let starts: Vec<u64> = kids
            .iter()
            .map(|k| Process::new(*k).unwrap().stat().unwrap().starttime)
            .collect();
        // Not in a pid namespace of its own: no child is PID 2 there, the oldest is taken.
        let agent = sandboxed_agent(pid);
        // The sleeps were started by this test; end them by pid.
        for k in &kids {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*k),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = (sh.kill(), sh.wait());
        assert_eq!(kids.len(), 2, "{kids:?}");
        assert!(starts[0] <= starts[1], "{starts:?}");
        assert_eq!(agent, kids.first().copied());
    }
}
