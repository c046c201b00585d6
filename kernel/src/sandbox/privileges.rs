//! STUB (helper B writes this file; the types and the signature of `lock_down` are fixed,
//! other modules build against them).
//!
//! What the agent process does to itself right before `execve`, in the init process's forked
//! child (single-threaded, so ordinary allocating code is fine here).

use std::path::PathBuf;

/// Resource limits set with setrlimit.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rlimits {
    /// RLIMIT_NOFILE (soft and hard).
    pub nofile: u64,
    /// RLIMIT_CORE (0: no core dumps).
    pub core: u64,
}

/// Paths Landlock allows; everything else is denied where Landlock is present.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LandlockPaths {
    /// Readable (and executable) trees.
    pub read: Vec<PathBuf>,
    /// Readable and writable trees.
    pub write: Vec<PathBuf>,
}

/// Everything the agent drops before exec.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Lockdown {
    /// The unprivileged uid to run as.
    pub uid: u32,
    /// Its gid (also the only supplementary group).
    pub gid: u32,
    /// rlimits.
    pub rlimits: Rlimits,
    /// Landlock rules; `None`: do not use Landlock.
    pub landlock: Option<LandlockPaths>,
    /// Install the agent seccomp filter.
    pub seccomp: bool,
}

/// How far Landlock got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum LandlockStatus {
    /// Not requested.
    Off,
    /// Fully enforced.
    Full,
    /// Enforced with a subset of the access rights (older kernel ABI).
    Partial,
    /// The running kernel has no Landlock.
    Unsupported,
}

/// What [`lock_down`] put in force.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Applied {
    /// Landlock's state.
    pub landlock: LandlockStatus,
}

/// A failure while dropping privileges; the agent must not be exec'd.
#[derive(Debug, thiserror::Error)]
#[error("{step}: {source}")]
pub struct PrivilegeError {
    /// The step that failed (`setresuid 600123`, `seccomp filter`, ...).
    pub step: String,
    /// The cause.
    #[source]
    pub source: std::io::Error,
}

/// Drops everything in order and returns what is in force. Called in the agent process
/// right before `execve`.
pub fn lock_down(l: &Lockdown) -> Result<Applied, PrivilegeError> {
    let _ = l;
    Err(PrivilegeError {
        step: "lock_down".into(),
        source: std::io::Error::other("not written yet"),
    })
}
