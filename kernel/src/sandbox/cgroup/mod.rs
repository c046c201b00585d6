//! The kernel's own thin cgroupfs layer: where each controller lives, the kernel's subtree, and
//! one cgroup per agent with its limits, statistics, freezing and killing.
//!
//! We do not use a cgroup crate: the hosts we run on mix versions (this CI machine has its
//! controllers on v1 mounts and an empty cgroup2 mount; production is mostly pure v2; systemd's
//! hybrid mode puts some controllers on each), v2 needs the kernel to move itself into a leaf
//! before it may enable controllers (the no-internal-process rule), and the logic must be
//! testable without root against a fake tree. So the layer is split as:
//!
//! * [`fs`]: the [`CgroupFs`] trait (read/write a control file, mkdir/rmdir, list, signal a
//!   member) and [`HostFs`], the real `/sys/fs/cgroup`;
//! * [`fake`]: [`FakeFs`], an in-memory tree that enforces the kernel rules we depend on;
//! * [`layout`]: [`Layout::detect`], per controller, v1 or v2, mount point and the kernel's
//!   own cgroup, from mountinfo and `/proc/self/cgroup`;
//! * [`tree`]: [`Cgroups`], the kernel's subtree `<own cgroup>/<subtree>` in every hierarchy,
//!   its setup (leaf move, `subtree_control`), stale cleanup and creation of agent cgroups;
//! * [`agent`]: [`AgentCgroup`], one agent's cgroup in every hierarchy;
//! * [`limits`]: [`CgroupLimits`] and how each limit is written on v1 and v2.
//!
//! Every call here is blocking file I/O and may sleep for a bounded time (freeze, kill,
//! remove wait for the kernel to catch up): async callers run it on a blocking thread.
//!
//! cpuset is never used: on v1 a new cpuset cgroup starts with empty `cpus`/`mems` and refuses
//! tasks until they are copied in, and we have no use for pinning.

pub mod agent;
#[cfg(test)]
pub mod fake;
pub mod fs;
pub mod layout;
pub mod limits;
pub mod tree;

#[cfg(test)]
mod host_tests;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

#[cfg(test)]
pub use fake::FakeFs;
// Part of the layer's API; the kernel does not name all of them yet.
#[allow(unused_imports)]
pub use {
    agent::{AgentCgroup, CgroupStats, Timeouts},
    fs::{CgroupFs, HostFs},
    layout::{Layout, Placement},
    limits::{shares_to_weight, CgroupLimits},
    tree::{Cgroups, PlacementWarmer},
};

/// The version of a cgroup hierarchy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Version {
    /// A legacy hierarchy: one mount per controller (or per group of co-mounted controllers).
    V1,
    /// The unified hierarchy (cgroup2).
    V2,
}

/// The controllers the kernel uses. cpuset is deliberately absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Controller {
    /// Memory limit (and swap cap), usage, peak, OOM kills.
    Memory,
    /// CPU quota and shares/weight.
    Cpu,
    /// CPU usage accounting. On v2 this is the core `cpu.stat`, present in every cgroup.
    Cpuacct,
    /// Process count limit.
    Pids,
    /// Freezing. On v2 this is the core `cgroup.freeze` (Linux 5.2 and later).
    Freezer,
}

impl Controller {
    /// Every controller the kernel uses, in a fixed order.
    pub const ALL: [Controller; 5] = [
        Controller::Memory,
        Controller::Cpu,
        Controller::Cpuacct,
        Controller::Pids,
        Controller::Freezer,
    ];

    /// The kernel's name for the controller (as in mount options and `/proc/self/cgroup`).
    pub fn name(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Cpu => "cpu",
            Controller::Cpuacct => "cpuacct",
            Controller::Pids => "pids",
            Controller::Freezer => "freezer",
        }
    }

    /// The controller with this kernel name, if we use it.
    pub fn from_name(name: &str) -> Option<Controller> {
        Controller::ALL.into_iter().find(|c| c.name() == name)
    }

    /// On v2, whether the controller must be enabled in the parent's `cgroup.subtree_control`
    /// before a child can use it (cpuacct and freezer are core v2 features instead).
    pub fn needs_enabling_on_v2(self) -> bool {
        matches!(
            self,
            Controller::Memory | Controller::Cpu | Controller::Pids
        )
    }
}

impl fmt::Display for Controller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A cgroup operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// A file system operation on a cgroup path failed.
    #[error("{op} {}: {}", .path.display(), describe(.source))]
    Io {
        /// What was being done (`create cgroup`, `write`, `add process 42 to`, ...).
        op: String,
        /// The cgroup directory or control file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// mountinfo or `/proc/self/cgroup` could not be understood.
    #[error("parse {what}: {detail}")]
    Parse {
        /// Which input.
        what: &'static str,
        /// What was wrong, with the offending line.
        detail: String,
    },
    /// A cgroup name we refuse (it could escape the subtree or clash with a control file).
    #[error("invalid cgroup name {name:?}: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A limit the kernel would refuse anyway, caught before anything is created.
    #[error("invalid cgroup limit {what}: {reason}")]
    InvalidLimit {
        /// The limit.
        what: &'static str,
        /// Why it is refused.
        reason: String,
    },
    /// The operation needs a controller this host does not give us.
    #[error("{op} {}: no {controller} controller", .path.display())]
    Unsupported {
        /// What was being done.
        op: &'static str,
        /// The agent cgroup (first hierarchy) it was asked for.
        path: PathBuf,
        /// The missing controller.
        controller: Controller,
    },
}

impl CgroupError {
    pub(crate) fn io(op: impl Into<String>, path: &Path, source: io::Error) -> CgroupError {
        CgroupError::Io {
            op: op.into(),
            path: path.to_path_buf(),
            source,
        }
    }

    // Read by METRICS_* (issue 9), the demos and the tests; not by the kernel yet.
    #[cfg_attr(not(test), allow(dead_code))]
    /// The errno of an [`CgroupError::Io`], for callers that map errors to wire codes.
    pub fn errno(&self) -> Option<i32> {
        match self {
            CgroupError::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// An io error as a log line wants it: the errno's description in lower case, without the
/// `(os error N)` suffix std adds.
fn describe(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => {
            let desc = nix::errno::Errno::from_raw(code).desc();
            let mut chars = desc.chars();
            match chars.next() {
                Some(first) => first.to_lowercase().chain(chars).collect(),
                None => e.to_string(),
            }
        }
        None => e.to_string(),
    }
}

/// The raw errno of an io error (the fake produces raw errnos too, so both compare alike).
pub(crate) fn errno_of(e: &io::Error) -> Option<i32> {
    e.raw_os_error()
}

/// An io error carrying `code`, as the host would return it.
#[cfg(test)]
pub(crate) fn os_err(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

/// Checks a name that becomes one path component under a cgroup we own.
///
/// Only `[A-Za-z0-9_-]`, 1 to 64 characters, not starting with `_` (reserved for our own
/// leaves, see [`tree`]): no `/` or `..` to escape, no `.` so it can never clash with a control
/// file (they all contain one), and not one of the three dotless v1 control files.
pub(crate) fn check_name(name: &str) -> Result<(), CgroupError> {
    let bad = |reason| {
        Err(CgroupError::InvalidName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() || name.len() > 64 {
        return bad("must be 1 to 64 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return bad("only letters, digits, '-' and '_' are allowed");
    }
    if name.starts_with('_') {
        return bad("names starting with '_' are reserved");
    }
    if matches!(name, "tasks" | "notify_on_release" | "release_agent") {
        return bad("clashes with a v1 control file");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_message_names_path_and_cause_in_lower_case() {
        let e = CgroupError::io(
            "create cgroup",
            Path::new("/sys/fs/cgroup/pids/clove/a-7"),
            os_err(libc::EACCES),
        );
        assert_eq!(
            e.to_string(),
            "create cgroup /sys/fs/cgroup/pids/clove/a-7: permission denied"
        );
        assert_eq!(e.errno(), Some(libc::EACCES));
    }

    #[test]
    fn names_that_could_escape_or_clash_are_refused() {
        for ok in ["a-7", "clove-test-12-3", "A_b"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "..",
            "a/b",
            "cgroup.procs",
            "tasks",
            "release_agent",
            "_procs",
            "a b",
            &"x".repeat(65),
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
