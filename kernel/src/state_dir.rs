//! The state directory and the lock that gives one kernel exclusive use of it.
//!
//! Everything a kernel persists lives under its state dir, and the cgroups and uids it will
//! use are derived from it, so two kernels on one state dir would fight over the same agents.
//! The lock is an `flock` on `<state_dir>/kernel.lock`, held for the kernel's lifetime: the
//! operating system drops it when the process dies, so a crashed kernel never leaves a stale
//! lock behind. The file holds the owner's pid, for the refusal message only.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

/// Why the state dir cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateDirError {
    /// Creating or opening failed.
    #[error("state dir {path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Another kernel holds the lock.
    #[error("state dir {path} is in use by another kernel{}; give this one its own --state-dir", .pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    Locked {
        /// The state dir.
        path: PathBuf,
        /// The holder's pid, when it wrote one.
        pid: Option<u32>,
    },
}

/// An exclusively held state dir. The lock is released when this is dropped or the process
/// exits.
#[derive(Debug)]
pub struct StateDir {
    path: PathBuf,
    _lock: Flock<File>,
}

impl StateDir {
    /// Creates the state dir (mode 0700) if needed and takes its lock, or says who holds it.
    pub fn lock(path: &Path) -> Result<StateDir, StateDirError> {
        let io = |source| StateDirError::Io {
            path: path.to_path_buf(),
            source,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(io)?;
        let lock_path = path.join("kernel.lock");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io)?;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(StateDirError::Locked {
                    path: path.to_path_buf(),
                    pid: text.trim().parse().ok(),
                });
            }
            Err((_, errno)) => return Err(io(std::io::Error::from(errno))),
        };
        // Record our pid for the next kernel's refusal message.
        let pid = std::process::id();
        lock.set_len(0).map_err(io)?;
        lock.rewind().map_err(io)?;
        writeln!(lock, "{pid}").map_err(io)?;
        Ok(StateDir {
            path: path.to_path_buf(),
            _lock: lock,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_dir_is_refused_with_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let held = StateDir::lock(&state).unwrap();
        match StateDir::lock(&state) {
            Err(StateDirError::Locked { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("expected Locked, got {other:?}"),
        }
        drop(held);
        StateDir::lock(&state).unwrap();
    }
}
