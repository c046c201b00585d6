//! Reads a cgroup's usage from its control files, on v1 and v2, through the cgroup layer's
//! [`CgroupFs`] (so the same code runs on the host and against the fake tree).
//!
//! A cgroup is given as its directory in each hierarchy ([`CgroupDir`]): one directory on v2,
//! one per mounted hierarchy on v1 (memory, cpu,cpuacct, pids, blkio...). Each figure is read
//! from the first directory that has its file, so the reader does not need to know which
//! controller is mounted where: a missing file is a missing figure (`None`), never an error.
//! Every figure covers the cgroup's whole subtree (the kernel accounts hierarchically).
//!
//! | figure | v2 | v1 |
//! |---|---|---|
//! | CPU usage, user, system | `cpu.stat` `usage_usec`, `user_usec`, `system_usec` | `cpuacct.usage` (ns), `cpuacct.stat` (`USER_HZ` ticks) |
//! | throttling | `cpu.stat` `nr_periods`, `nr_throttled`, `throttled_usec` | `cpu.stat` `nr_periods`, `nr_throttled`, `throttled_time` (ns) |
//! | memory, limit, peak | `memory.current`, `memory.max`, `memory.peak` | `memory.usage_in_bytes`, `memory.limit_in_bytes`, `memory.max_usage_in_bytes` |
//! | swap, its limit | `memory.swap.current`, `memory.swap.max` | `memory.memsw.usage_in_bytes` − usage, `memory.memsw.limit_in_bytes` |
//! | OOM kills | `memory.events` `oom_kill` | `memory.oom_control` `oom_kill` |
//! | pids, limit | `pids.current`, `pids.max` | the same |
//! | I/O bytes | `io.stat` `rbytes`, `wbytes` (summed over devices) | `blkio.throttle.io_service_bytes_recursive` `Read`, `Write` |
//!
//! v1 reports "unlimited" as a huge page-rounded number (`9223372036854771712`); anything at
//! or above 2^62 is read as unlimited (`None`), as v2's `max` is.

use std::io;
use std::path::{Path, PathBuf};

use clove_abi::msg::{CgroupCpu, CgroupMemory, CgroupMetrics, CgroupPids, IoBytes};

use crate::sandbox::cgroup::{CgroupError, CgroupFs, Version};

/// A cgroup's directory in one hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupDir {
    /// The hierarchy's version.
    pub version: Version,
    /// The directory, mount point included.
    pub dir: PathBuf,
}

/// v1 limits at or above this are "unlimited" (the kernel writes `PAGE_COUNTER_MAX` pages).
const V1_UNLIMITED: u64 = 1 << 62;

/// The clock ticks per second of v1's `cpuacct.stat` (`USER_HZ`, 100 on every Linux ABI).
const USER_HZ: u64 = 100;

/// Reads the usage of the cgroup whose directories are `dirs`. The reply's `percent` is left
/// `None` (the caller keeps the samples it needs, see `super::cpu`); `version` and `path`
/// are filled in from `dirs`.
pub fn read(fs: &dyn CgroupFs, dirs: &[CgroupDir]) -> Result<CgroupMetrics, CgroupError> {
    let r = Reader { fs, dirs };
    let mut m = CgroupMetrics {
        version: Some(
            crate::sandbox::cgroup::agent::version_label(dirs.iter().map(|d| d.version)).into(),
        ),
        path: dirs.first().map(|d| d.dir.display().to_string()),
        ..CgroupMetrics::default()
    };
    r.cpu(&mut m.cpu)?;
    r.memory(&mut m.memory)?;
    r.pids(&mut m.pids)?;
    m.io = r.io()?;
    Ok(m)
}

struct Reader<'a> {
    fs: &'a dyn CgroupFs,
    dirs: &'a [CgroupDir],
}

impl Reader<'_> {
    /// The content of `file` in the first directory of `version` that has it.
    fn file(&self, version: Version, file: &str) -> Result<Option<(PathBuf, String)>, CgroupError> {
        for d in self.dirs.iter().filter(|d| d.version == version) {
            let path = d.dir.join(file);
            match self.fs.read(&path) {
                Ok(s) => return Ok(Some((path, s))),
                // Not this hierarchy's controller (or not enabled here): try the next one.
                Err(e) if missing(&e) => {}
                Err(e) => return Err(CgroupError::io("read", &path, e)),
            }
        }
        Ok(None)
    }

    /// A single-number file (`max` is `u64::MAX`).
    fn number(&self, version: Version, file: &str) -> Result<Option<u64>, CgroupError> {
        match self.file(version, file)? {
            None => Ok(None),
            Some((path, s)) => parse_number(s.trim())
                .map(Some)
                .ok_or_else(|| bad_content(&path, &s)),
        }
    }

    /// A flat-keyed file (`key value` per line) as its pairs.
    fn keyed(&self, version: Version, file: &str) -> Result<Option<Keyed>, CgroupError> {
        match self.file(version, file)? {
            None => Ok(None),
            Some((path, s)) => Keyed::parse(&s)
                .map(Some)
                .ok_or_else(|| bad_content(&path, &s)),
        }
    }

    fn cpu(&self, cpu: &mut CgroupCpu) -> Result<(), CgroupError> {
        if let Some(stat) = self.keyed(Version::V2, "cpu.stat")? {
            cpu.usage_usec = stat.get("usage_usec").unwrap_or(0);
            cpu.user_usec = stat.get("user_usec").unwrap_or(0);
            cpu.system_usec = stat.get("system_usec").unwrap_or(0);
            cpu.nr_periods = stat.get("nr_periods");
            cpu.nr_throttled = stat.get("nr_throttled");
            cpu.throttled_usec = stat.get("throttled_usec");
            return Ok(());
        }
        if let Some(ns) = self.number(Version::V1, "cpuacct.usage")? {
            cpu.usage_usec = ns / 1000;
        }
        if let Some(stat) = self.keyed(Version::V1, "cpuacct.stat")? {
            let usec = |ticks: u64| ticks.saturating_mul(1_000_000 / USER_HZ);
            cpu.user_usec = stat.get("user").map_or(0, usec);
            cpu.system_usec = stat.get("system").map_or(0, usec);
        }
        if let Some(stat) = self.keyed(Version::V1, "cpu.stat")? {
            cpu.nr_periods = stat.get("nr_periods");
            cpu.nr_throttled = stat.get("nr_throttled");
            cpu.throttled_usec = stat.get("throttled_time").map(|ns| ns / 1000);
        }
        Ok(())
    }

    fn memory(&self, mem: &mut CgroupMemory) -> Result<(), CgroupError> {
        if let Some(current) = self.number(Version::V2, "memory.current")? {
            mem.current = current;
            mem.max = self.number(Version::V2, "memory.max")?.and_then(limit);
            mem.peak = self.number(Version::V2, "memory.peak")?;
            mem.swap = self.number(Version::V2, "memory.swap.current")?;
            mem.swap_max = self.number(Version::V2, "memory.swap.max")?.and_then(limit);
            mem.oom_kills = Some(
                self.keyed(Version::V2, "memory.events")?
                    .and_then(|k| k.get("oom_kill"))
                    .unwrap_or(0),
            );
            return Ok(());
        }
        if let Some(current) = self.number(Version::V1, "memory.usage_in_bytes")? {
            mem.current = current;
            mem.max = self
                .number(Version::V1, "memory.limit_in_bytes")?
                .and_then(limit);
            mem.peak = self.number(Version::V1, "memory.max_usage_in_bytes")?;
            // v1 counts memory and swap together.
            mem.swap = self
                .number(Version::V1, "memory.memsw.usage_in_bytes")?
                .map(|both| both.saturating_sub(current));
            mem.swap_max = self
                .number(Version::V1, "memory.memsw.limit_in_bytes")?
                .and_then(limit);
            mem.oom_kills = Some(
                self.keyed(Version::V1, "memory.oom_control")?
                    .and_then(|k| k.get("oom_kill"))
                    .unwrap_or(0),
            );
        }
        Ok(())
    }

    fn pids(&self, pids: &mut CgroupPids) -> Result<(), CgroupError> {
        for version in [Version::V2, Version::V1] {
            if let Some(current) = self.number(version, "pids.current")? {
                pids.current = current;
                pids.max = self.number(version, "pids.max")?.and_then(limit);
                return Ok(());
            }
        }
        Ok(())
    }

    fn io(&self) -> Result<Option<IoBytes>, CgroupError> {
        if let Some((_, s)) = self.file(Version::V2, "io.stat")? {
            // `MAJ:MIN rbytes=N wbytes=N rios=N ...` per device.
            let mut io = IoBytes::default();
            for (key, value) in s
                .split_whitespace()
                .filter_map(|w| w.split_once('='))
                .filter_map(|(k, v)| Some((k, v.parse::<u64>().ok()?)))
            {
                match key {
                    "rbytes" => io.read_bytes = io.read_bytes.saturating_add(value),
                    "wbytes" => io.write_bytes = io.write_bytes.saturating_add(value),
                    _ => {}
                }
            }
            return Ok(Some(io));
        }
        // The recursive file covers the subtree; the plain one only the cgroup's own tasks.
        for file in [
            "blkio.throttle.io_service_bytes_recursive",
            "blkio.throttle.io_service_bytes",
        ] {
            if let Some((_, s)) = self.file(Version::V1, file)? {
                // `MAJ:MIN Read N` per device and operation, then `Total N`.
                let mut io = IoBytes::default();
                for line in s.lines() {
                    let mut w = line.split_whitespace();
                    let (Some(_dev), Some(op), Some(n)) = (w.next(), w.next(), w.next()) else {
                        continue;
                    };
                    let Ok(n) = n.parse::<u64>() else { continue };
                    match op {
                        "Read" => io.read_bytes = io.read_bytes.saturating_add(n),
                        "Write" => io.write_bytes = io.write_bytes.saturating_add(n),
                        _ => {}
                    }
                }
                return Ok(Some(io));
            }
        }
        Ok(None)
    }
}

/// The pairs of a flat-keyed file.
struct Keyed(Vec<(String, u64)>);

impl Keyed {
    /// `None` when a line is not `key number`.
    fn parse(s: &str) -> Option<Keyed> {
        let mut pairs = Vec::new();
        for line in s.lines().filter(|l| !l.trim().is_empty()) {
            let (k, v) = line.trim().split_once(char::is_whitespace)?;
            pairs.push((k.to_owned(), parse_number(v.trim())?));
        }
        Some(Keyed(pairs))
    }

    fn get(&self, key: &str) -> Option<u64> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }
}

/// A limit as the reply wants it: `None` for unlimited (v2 `max`, v1's huge number, v1's
/// `-1` in some files).
fn limit(v: u64) -> Option<u64> {
    (v < V1_UNLIMITED).then_some(v)
}

/// A counter or limit; `max` (v2 unlimited) and `-1` read as `u64::MAX`.
fn parse_number(s: &str) -> Option<u64> {
    match s {
        "max" | "-1" => Some(u64::MAX),
        _ => s.parse().ok(),
    }
}

/// The file (or the whole cgroup) is not there: the figure is missing, not an error. On
/// cgroupfs a controller's file is absent when the controller is not in force (ENOENT); a
/// removed cgroup's files vanish too (ENODEV while it is being torn down).
fn missing(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENODEV))
        || e.kind() == io::ErrorKind::NotFound
}

fn bad_content(path: &Path, content: &str) -> CgroupError {
    CgroupError::io(
        "parse",
        path,
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected content {:?}", content.trim()),
        ),
    )
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use super::*;
    use crate::sandbox::cgroup::{CgroupLimits, Cgroups, FakeFs, Layout};

    fn v1_dirs(agent: &str) -> Vec<CgroupDir> {
        ["memory", "cpu,cpuacct", "pids"]
            .iter()
            .map(|h| CgroupDir {
                version: Version::V1,
                dir: Path::new("/sys/fs/cgroup").join(h).join(agent),
            })
            .collect()
    }

    /// This host's shape: v1 memory, cpu,cpuacct and pids hierarchies.
    fn v1_tree() -> FakeFs {
        let fs = FakeFs::new();
        fs.mount_v1("/sys/fs/cgroup/memory", &["memory"]);
        fs.mount_v1("/sys/fs/cgroup/cpu,cpuacct", &["cpu", "cpuacct"]);
        fs.mount_v1("/sys/fs/cgroup/pids", &["pids"]);
        for h in ["memory", "cpu,cpuacct", "pids"] {
            fs.mkdir_all(&format!("/sys/fs/cgroup/{h}/clove/agent-3"))
                .unwrap();
        }
        fs
    }

    #[test]
    fn v1_files_give_every_figure() {
        let fs = v1_tree();
        let mem = "/sys/fs/cgroup/memory/clove/agent-3";
        let cpu = "/sys/fs/cgroup/cpu,cpuacct/clove/agent-3";
        fs.set(&format!("{mem}/memory.usage_in_bytes"), "104857600\n")
            .unwrap();
        fs.set(&format!("{mem}/memory.limit_in_bytes"), "268435456\n")
            .unwrap();
        fs.set(&format!("{mem}/memory.max_usage_in_bytes"), "209715200\n")
            .unwrap();
        fs.set(&format!("{mem}/memory.memsw.usage_in_bytes"), "105857600\n")
            .unwrap();
        fs.set(&format!("{mem}/memory.memsw.limit_in_bytes"), "536870912\n")
            .unwrap();
        fs.set(
            &format!("{mem}/memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        )
        .unwrap();
        fs.set(&format!("{cpu}/cpuacct.usage"), "1500000000\n")
            .unwrap();
        fs.set(&format!("{cpu}/cpuacct.stat"), "user 100\nsystem 50\n")
            .unwrap();
        fs.set(
            &format!("{cpu}/cpu.stat"),
            "nr_periods 40\nnr_throttled 7\nthrottled_time 3500000\n",
        )
        .unwrap();
        fs.spawn_in(41, &["/sys/fs/cgroup/pids/clove/agent-3"])
            .unwrap();
        fs.spawn_in(42, &["/sys/fs/cgroup/pids/clove/agent-3"])
            .unwrap();
        fs.write(
            Path::new("/sys/fs/cgroup/pids/clove/agent-3/pids.max"),
            "64",
        )
        .unwrap();

        let m = read(&fs, &v1_dirs("clove/agent-3")).unwrap();
        assert_eq!(m.version.as_deref(), Some("v1"));
        assert_eq!(m.path.as_deref(), Some(mem));
        assert_eq!(
            m.cpu,
            CgroupCpu {
                usage_usec: 1_500_000,
                user_usec: 1_000_000,
                system_usec: 500_000,
                throttled_usec: Some(3500),
                nr_throttled: Some(7),
                percent: None,
                nr_periods: Some(40),
            }
        );
        assert_eq!(
            m.memory,
            CgroupMemory {
                current: 100 << 20,
                max: Some(256 << 20),
                peak: Some(200 << 20),
                swap: Some(1_000_000),
                swap_max: Some(512 << 20),
                oom_kills: Some(2),
            }
        );
        assert_eq!(
            m.pids,
            CgroupPids {
                current: 2,
                max: Some(64)
            }
        );
        // No blkio hierarchy: no I/O figures.
        assert_eq!(m.io, None);
    }

    #[test]
    fn v1_unlimited_and_missing_controllers_read_as_none() {
        let fs = FakeFs::new();
        fs.set_swap_accounting(false);
        fs.mount_v1("/sys/fs/cgroup/memory", &["memory"]);
        fs.mkdir_all("/sys/fs/cgroup/memory/clove/agent-4").unwrap();
        let m = read(
            &fs,
            &[CgroupDir {
                version: Version::V1,
                dir: "/sys/fs/cgroup/memory/clove/agent-4".into(),
            }],
        )
        .unwrap();
        // The fake's fresh cgroup: the page-rounded "unlimited", no swap accounting.
        assert_eq!(m.memory.max, None);
        assert_eq!((m.memory.swap, m.memory.swap_max), (None, None));
        assert_eq!(m.memory.oom_kills, Some(0));
        // No cpuacct, no pids: zeros and no limits, no throttling figures.
        assert_eq!(m.cpu, CgroupCpu::default());
        assert_eq!(m.pids, CgroupPids::default());
    }

    #[test]
    fn v1_blkio_bytes_are_summed_over_devices() {
        let fs = FakeFs::new();
        fs.mount_v1("/sys/fs/cgroup/blkio", &["blkio"]);
        fs.mkdir_all("/sys/fs/cgroup/blkio/x").unwrap();
        fs.set(
            "/sys/fs/cgroup/blkio/x/blkio.throttle.io_service_bytes_recursive",
            "8:0 Read 4096\n8:0 Write 100\n8:0 Sync 1\n8:16 Read 4096\n8:16 Write 0\nTotal 8292\n",
        )
        .unwrap();
        let m = read(
            &fs,
            &[CgroupDir {
                version: Version::V1,
                dir: "/sys/fs/cgroup/blkio/x".into(),
            }],
        )
        .unwrap();
        assert_eq!(
            m.io,
            Some(IoBytes {
                read_bytes: 8192,
                write_bytes: 100
            })
        );
    }

    /// A delegated v2 tree as systemd gives a service, with the kernel's subtree set up by
    /// the cgroup layer itself and one agent cgroup created through it.
    fn v2_agent() -> (Arc<FakeFs>, crate::sandbox::cgroup::AgentCgroup) {
        let fs = Arc::new(FakeFs::new());
        fs.mount_v2("/sys/fs/cgroup", &["cpu", "io", "memory", "pids"]);
        fs.mkdir_all("/sys/fs/cgroup/system.slice/clove.service")
            .unwrap();
        fs.spawn_in(1, &[]).unwrap();
        fs.spawn_in(
            std::process::id(),
            &["/sys/fs/cgroup/system.slice/clove.service"],
        )
        .unwrap();
        let layout = Layout::detect(
            "30 1 0:26 / /sys/fs/cgroup rw shared:4 - cgroup2 cgroup2 rw\n",
            "0::/system.slice/clove.service\n",
        )
        .unwrap();
        let cgroups = Cgroups::new(Arc::clone(&fs) as Arc<dyn CgroupFs>, layout, "clove").unwrap();
        let limits = CgroupLimits {
            memory: Some(256 << 20),
            pids_max: Some(64),
            ..CgroupLimits::default()
        };
        let (agent, _) = cgroups.create(None, "agent-3", &limits).unwrap();
        (fs, agent)
    }

    #[test]
    fn v2_files_give_every_figure() {
        let (fs, agent) = v2_agent();
        let dir = "/sys/fs/cgroup/system.slice/clove.service/clove/agent-3";
        fs.spawn_in(50, &[&format!("{dir}/_procs")]).unwrap();
        fs.set(&format!("{dir}/memory.current"), "104857600\n")
            .unwrap();
        fs.set(&format!("{dir}/memory.peak"), "110000000\n")
            .unwrap();
        fs.set(&format!("{dir}/memory.swap.current"), "4096\n")
            .unwrap();
        fs.set(
            &format!("{dir}/memory.events"),
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n",
        )
        .unwrap();
        fs.set(
            &format!("{dir}/cpu.stat"),
            "usage_usec 2000\nuser_usec 1500\nsystem_usec 500\nnr_periods 10\n\
             nr_throttled 4\nthrottled_usec 800\nnr_bursts 0\nburst_usec 0\n",
        )
        .unwrap();
        // Set, but hidden: the layer does not enable io for agents.
        fs.set(&format!("{dir}/io.stat"), "8:0 rbytes=1 wbytes=2\n")
            .unwrap();

        let dirs: Vec<CgroupDir> = agent
            .paths()
            .into_iter()
            .map(|dir| CgroupDir {
                version: Version::V2,
                dir,
            })
            .collect();
        let m = read(fs.as_ref(), &dirs).unwrap();
        assert_eq!(m.version.as_deref(), Some("v2"));
        assert_eq!(m.path.as_deref(), Some(dir));
        assert_eq!(
            m.cpu,
            CgroupCpu {
                usage_usec: 2000,
                user_usec: 1500,
                system_usec: 500,
                throttled_usec: Some(800),
                nr_throttled: Some(4),
                percent: None,
                nr_periods: Some(10),
            }
        );
        assert_eq!(
            m.memory,
            CgroupMemory {
                current: 100 << 20,
                max: Some(256 << 20),
                peak: Some(110_000_000),
                swap: Some(4096),
                // The layer caps swap at zero beside a memory limit by default.
                swap_max: m.memory.swap_max,
                oom_kills: Some(1),
            }
        );
        // pids.current counts the subtree (the process sits in the `_procs` leaf).
        assert_eq!(
            m.pids,
            CgroupPids {
                current: 1,
                max: Some(64)
            }
        );
        // io.stat is there only where the io controller is enabled: not for agents.
        assert_eq!(m.io, None);
    }

    #[test]
    fn v2_io_stat_is_summed_over_devices() {
        let fs = FakeFs::new();
        fs.mount_v2("/sys/fs/cgroup", &["io", "memory"]);
        // mkdir_all enables every controller on the way, as a delegating manager does.
        fs.mkdir_all("/sys/fs/cgroup/system.slice/db.service")
            .unwrap();
        fs.set(
            "/sys/fs/cgroup/system.slice/db.service/io.stat",
            "8:0 rbytes=1000 wbytes=2000 rios=1 wios=2 dbytes=0 dios=0\n\
             8:16 rbytes=24 wbytes=48 rios=1 wios=1 dbytes=0 dios=0\n",
        )
        .unwrap();
        let m = read(
            &fs,
            &[CgroupDir {
                version: Version::V2,
                dir: "/sys/fs/cgroup/system.slice/db.service".into(),
            }],
        )
        .unwrap();
        assert_eq!(
            m.io,
            Some(IoBytes {
                read_bytes: 1024,
                write_bytes: 2048
            })
        );
    }

    #[test]
    fn v2_without_controllers_reads_core_cpu_only() {
        // This host's empty cgroup2 mount: only the core files.
        let fs = FakeFs::new();
        fs.mount_v2("/sys/fs/cgroup/unified", &[]);
        fs.mkdir_all("/sys/fs/cgroup/unified/x").unwrap();
        fs.set(
            "/sys/fs/cgroup/unified/x/cpu.stat",
            "usage_usec 7\nuser_usec 4\nsystem_usec 3\n",
        )
        .unwrap();
        let m = read(
            &fs,
            &[CgroupDir {
                version: Version::V2,
                dir: "/sys/fs/cgroup/unified/x".into(),
            }],
        )
        .unwrap();
        assert_eq!((m.cpu.usage_usec, m.cpu.nr_throttled), (7, None));
        assert_eq!(m.memory, CgroupMemory::default());
        assert_eq!(m.io, None);
    }

    #[test]
    fn garbage_in_a_file_is_an_error_naming_it() {
        let fs = v1_tree();
        fs.set(
            "/sys/fs/cgroup/memory/clove/agent-3/memory.usage_in_bytes",
            "lots\n",
        )
        .unwrap();
        let e = read(&fs, &v1_dirs("clove/agent-3"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/sys/fs/cgroup/memory/clove/agent-3/memory.usage_in_bytes")
                && e.contains("lots"),
            "{e}"
        );
    }

    #[test]
    fn a_removed_cgroup_has_no_figures() {
        let fs = v1_tree();
        let m = read(&fs, &v1_dirs("clove/agent-9")).unwrap();
        assert_eq!(m.memory, CgroupMemory::default());
    }
}
