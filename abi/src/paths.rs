//! Default socket paths, shared by the kernel and every client so that both agree.

use std::path::{Path, PathBuf};

/// The path the original kernel listened on and its scripts hard-code.
pub const COMPAT_SOCKET: &str = "/tmp/clove.sock";

/// The main socket root uses.
pub const ROOT_SOCKET: &str = "/run/clove/clove.sock";

/// The main socket's default: `/run/clove/clove.sock` for root, else
/// `$XDG_RUNTIME_DIR/clove/clove.sock`, else `/tmp/clove-<uid>/clove.sock`.
pub fn default_socket(uid: u32, xdg_runtime_dir: Option<&Path>) -> PathBuf {
    if uid == 0 {
        return PathBuf::from(ROOT_SOCKET);
    }
    match xdg_runtime_dir {
        Some(dir) if dir.is_absolute() => dir.join("clove").join("clove.sock"),
        _ => PathBuf::from(format!("/tmp/clove-{uid}/clove.sock")),
    }
}

/// The kernel's default state dir: `/var/lib/clove` for root, else
/// `$XDG_STATE_HOME/clove`, else `$HOME/.local/state/clove`, else `/tmp/clove-<uid>/state`.
pub fn default_state_dir(uid: u32, xdg_state_home: Option<&Path>, home: Option<&Path>) -> PathBuf {
    if uid == 0 {
        return PathBuf::from("/var/lib/clove");
    }
    match (xdg_state_home, home) {
        (Some(s), _) => s.join("clove"),
        (None, Some(h)) => h.join(".local/state/clove"),
        (None, None) => PathBuf::from(format!("/tmp/clove-{uid}/state")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_user() {
        assert_eq!(default_socket(0, None), PathBuf::from(ROOT_SOCKET));
        assert_eq!(
            default_socket(1000, Some(Path::new("/run/user/1000"))),
            PathBuf::from("/run/user/1000/clove/clove.sock")
        );
        assert_eq!(
            default_socket(1000, None),
            PathBuf::from("/tmp/clove-1000/clove.sock")
        );
    }
}
