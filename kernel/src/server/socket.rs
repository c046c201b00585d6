//! Claiming a socket path: bind it only when it is free or holds a stale socket of ours.
//!
//! A kernel never steals a path: a live socket (some process answers on it) makes it refuse to
//! start; so does a path that is not a socket, or a stale socket owned by another user. Only a
//! socket file we own that nobody answers on is replaced. The socket gets mode 0660 and the
//! group `clove` when that group exists, so members of the group can be operators.
//! On shutdown the file is removed only if it is still the one we bound.

use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use nix::sys::socket::{self, AddressFamily, Backlog, SockFlag, SockType, UnixAddr};

/// Listen backlog: room for bursts of connects (1000 clients at once in the tests), capped by
/// the host's `net.core.somaxconn`.
const BACKLOG: i32 = 4096;

/// Why a socket path could not be claimed.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// A process answers on the path.
    #[error("socket {0} is in use: a kernel answers there (stop it, or pass another --socket / --no-compat-socket)")]
    Live(PathBuf),
    /// The path exists and is not a socket.
    #[error("socket {0}: the path exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    /// A stale socket of another user.
    #[error("socket {path}: a stale socket owned by uid {owner}; refusing to replace another user's socket")]
    Foreign {
        /// The path.
        path: PathBuf,
        /// Its owner.
        owner: u32,
    },
    /// A system call failed.
    #[error("socket {path}: {what}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The cause.
        source: io::Error,
    },
}

/// A bound listening socket and the identity of its file, to remove only our own on exit.
#[derive(Debug)]
pub struct BoundSocket {
    /// The path.
    pub path: PathBuf,
    /// The listener (non-blocking, ready for tokio).
    pub listener: UnixListener,
    dev_ino: (u64, u64),
}

impl BoundSocket {
    /// Removes the socket file if it is still the one we bound.
    pub fn remove(&self) {
        match std::fs::symlink_metadata(&self.path) {
            Ok(meta) if (meta.dev(), meta.ino()) == self.dev_ino => {
                if let Err(e) = std::fs::remove_file(&self.path) {
                    tracing::warn!(path = %self.path.display(), "remove socket: {e}");
                }
            }
            Ok(_) => tracing::warn!(
                path = %self.path.display(),
                "socket file was replaced by someone else; leaving it"
            ),
            Err(_) => {}
        }
    }
}

/// Claims `path` and listens on it, following the rules in the module doc.
pub fn bind(path: &Path, group: Option<u32>) -> Result<BoundSocket, BindError> {
    let io_err = |what, source| BindError::Io {
        path: path.to_path_buf(),
        what,
        source,
    };
    if let Some(parent) = path.parent() {
        if !parent.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(parent)
                .map_err(|e| io_err("create parent directory", e))?;
        }
    }
    claim_existing(path)?;

    let fd = socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .map_err(|e| io_err("create socket", e.into()))?;
    let addr = UnixAddr::new(path).map_err(|e| io_err("socket address", e.into()))?;
    socket::bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr)
        .map_err(|e| io_err("bind", e.into()))?;
    let backlog = Backlog::new(BACKLOG).unwrap_or(Backlog::MAXCONN);
    socket::listen(&fd, backlog).map_err(|e| io_err("listen", e.into()))?;

    // The process umask (0077) created the file 0600; widen to exactly 0660.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(|e| io_err("chmod 0660", e))?;
    if let Some(gid) = group {
        nix::unistd::chown(path, None, Some(nix::unistd::Gid::from_raw(gid)))
            .map_err(|e| io_err("chown to group clove", e.into()))?;
    }
    let meta = std::fs::symlink_metadata(path).map_err(|e| io_err("stat", e))?;
    Ok(BoundSocket {
        path: path.to_path_buf(),
        listener: UnixListener::from(fd),
        dev_ino: (meta.dev(), meta.ino()),
    })
}

/// Makes `path` free: nothing there, or a stale socket of ours, which is removed.
fn claim_existing(path: &Path) -> Result<(), BindError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(BindError::Io {
                path: path.to_path_buf(),
                what: "stat",
                source: e,
            })
        }
    };
    if !meta.file_type().is_socket() {
        return Err(BindError::NotASocket(path.to_path_buf()));
    }
    match UnixStream::connect(path) {
        Ok(_) => return Err(BindError::Live(path.to_path_buf())),
        // ECONNREFUSED: nobody listens. Anything else (EACCES, EAGAIN for a full backlog of a
        // live listener) is not proof of staleness.
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
        Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
            return Err(BindError::Live(path.to_path_buf()))
        }
        Err(e) => {
            return Err(BindError::Io {
                path: path.to_path_buf(),
                what: "probe existing socket",
                source: e,
            })
        }
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(BindError::Foreign {
            path: path.to_path_buf(),
            owner: meta.uid(),
        });
    }
    tracing::info!(path = %path.display(), "replacing stale socket");
    std::fs::remove_file(path).map_err(|e| BindError::Io {
        path: path.to_path_buf(),
        what: "remove stale socket",
        source: e,
    })
}

/// The gid of the group `clove`, when it exists.
pub fn clove_group() -> Option<u32> {
    nix::unistd::Group::from_name("clove")
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_sockets_are_replaced_live_ones_and_files_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.sock");
        let first = bind(&path, None).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        assert!(matches!(bind(&path, None), Err(BindError::Live(_))));
        drop(first); // the file stays behind: stale
        assert!(path.exists());
        let second = bind(&path, None).unwrap();
        second.remove();
        assert!(!path.exists());
        std::fs::write(&path, b"x").unwrap();
        assert!(matches!(bind(&path, None), Err(BindError::NotASocket(_))));
    }
}
