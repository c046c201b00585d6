//! Which socket to talk to: the one rule shared by both clients and the `clove` tool.
//!
//! In order: the path the caller names; else `$CLOVE_SOCKET` (an agent finds its own socket
//! there); else the kernel's default main socket ([`clove_abi::paths::default_socket`]); and if
//! that does not exist but the original's `/tmp/clove.sock` does, that one, so a kernel started
//! the original's way is still found.
//!
//! The rule is [`resolve_socket_in`], a pure function of a [`SocketEnv`], so it can be tested
//! without touching the process environment; [`resolve_socket`] feeds it the real one.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clove_abi::paths::{default_socket, COMPAT_SOCKET};

/// The environment variable naming the socket.
pub const SOCKET_ENV: &str = "CLOVE_SOCKET";

/// The inputs of socket resolution besides the explicit path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketEnv {
    /// The value of `$CLOVE_SOCKET`; empty counts as unset.
    pub clove_socket: Option<OsString>,
    /// The value of `$XDG_RUNTIME_DIR`.
    pub xdg_runtime_dir: Option<PathBuf>,
    /// The effective uid (root gets `/run/clove/clove.sock`).
    pub euid: u32,
    /// The compatibility socket to fall back to: [`COMPAT_SOCKET`] outside tests.
    pub compat: PathBuf,
}

impl SocketEnv {
    /// The current process's environment and effective uid.
    pub fn from_process() -> SocketEnv {
        // SAFETY: geteuid has no preconditions, touches no memory and cannot fail.
        let euid = unsafe { libc::geteuid() };
        SocketEnv {
            clove_socket: std::env::var_os(SOCKET_ENV),
            xdg_runtime_dir: std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from),
            euid,
            compat: PathBuf::from(COMPAT_SOCKET),
        }
    }
}

/// The socket to use given an explicit choice, resolved against the process environment.
///
/// In order: `explicit`; else `$CLOVE_SOCKET`; else the kernel's default main socket
/// (`/run/clove/clove.sock` for root, `$XDG_RUNTIME_DIR/clove/clove.sock` for others); but if
/// that does not exist and `/tmp/clove.sock` (the original's) does, that one. Empty values
/// count as unset.
pub fn resolve_socket(explicit: Option<&Path>) -> PathBuf {
    resolve_socket_in(explicit, &SocketEnv::from_process())
}

/// The socket to use given an explicit choice and the environment `env`.
///
/// Explicit wins, then `env.clove_socket` (if not empty), then the default main socket for
/// `env.euid` and `env.xdg_runtime_dir`, unless that does not exist and `env.compat` does.
pub fn resolve_socket_in(explicit: Option<&Path>, env: &SocketEnv) -> PathBuf {
    if let Some(path) = explicit.filter(|p| !p.as_os_str().is_empty()) {
        return path.to_path_buf();
    }
    if let Some(path) = env.clove_socket.as_ref().filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    let default = default_socket(env.euid, env.xdg_runtime_dir.as_deref());
    if !default.exists() && env.compat.exists() {
        return env.compat.clone();
    }
    default
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(dir: &Path, clove_socket: Option<&str>) -> SocketEnv {
        SocketEnv {
            clove_socket: clove_socket.map(OsString::from),
            xdg_runtime_dir: Some(dir.join("xdg")),
            euid: 1000,
            compat: dir.join("compat.sock"),
        }
    }

    #[test]
    fn explicit_beats_env_beats_default() {
        let dir = tempfile::tempdir().unwrap();
        let e = env(dir.path(), Some("/from/env.sock"));
        assert_eq!(
            resolve_socket_in(Some(Path::new("/explicit.sock")), &e),
            PathBuf::from("/explicit.sock")
        );
        assert_eq!(resolve_socket_in(None, &e), PathBuf::from("/from/env.sock"));
        let e = env(dir.path(), None);
        assert_eq!(
            resolve_socket_in(None, &e),
            dir.path().join("xdg/clove/clove.sock")
        );
    }

    #[test]
    fn empty_values_count_as_unset() {
        let dir = tempfile::tempdir().unwrap();
        let e = env(dir.path(), Some(""));
        assert_eq!(
            resolve_socket_in(Some(Path::new("")), &e),
            dir.path().join("xdg/clove/clove.sock")
        );
    }

    #[test]
    fn compat_socket_only_when_the_default_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let e = env(dir.path(), None);
        // Neither exists: the default, so that an error names the main socket.
        let default = dir.path().join("xdg/clove/clove.sock");
        assert_eq!(resolve_socket_in(None, &e), default);
        // Only the compat one exists: use it.
        std::fs::write(&e.compat, b"").unwrap();
        assert_eq!(resolve_socket_in(None, &e), e.compat);
        // Both exist: the default wins.
        std::fs::create_dir_all(default.parent().unwrap()).unwrap();
        std::fs::write(&default, b"").unwrap();
        assert_eq!(resolve_socket_in(None, &e), default);
        // An explicit or env choice is never replaced by the compat socket.
        std::fs::remove_file(&default).unwrap();
        let e = env(dir.path(), Some("/nowhere.sock"));
        assert_eq!(resolve_socket_in(None, &e), PathBuf::from("/nowhere.sock"));
    }

    #[test]
    fn root_uses_the_run_socket() {
        let dir = tempfile::tempdir().unwrap();
        let mut e = env(dir.path(), None);
        e.euid = 0;
        assert_eq!(
            resolve_socket_in(None, &e),
            PathBuf::from(clove_abi::paths::ROOT_SOCKET)
        );
    }
}
