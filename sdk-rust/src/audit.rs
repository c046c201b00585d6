//! The audit log: GET_AUDIT_LOG and SET_AUDIT_CONFIG as typed methods of both clients
//! (written once in [`audit_methods!`]), and offline verification of a log directory
//! ([`verify_dir`]), which needs no kernel: the format and the verifier are
//! [`clove_abi::auditlog`]'s, the kernel's own.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use clove_abi::auditlog::{self, Anchor, Report, HEAD_FILE};

/// The audit directory of the kernel's default state dir for this user (root:
/// `/var/lib/clove/audit`), or of `$CLOVE_STATE_DIR` when set.
pub fn default_audit_dir() -> PathBuf {
    let path = |k: &str| {
        std::env::var_os(k)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    let state = path("CLOVE_STATE_DIR").unwrap_or_else(|| {
        // SAFETY: geteuid has no preconditions, touches no memory and cannot fail.
        let uid = unsafe { libc::geteuid() };
        clove_abi::paths::default_state_dir(
            uid,
            path("XDG_STATE_HOME").as_deref(),
            path("HOME").as_deref(),
        )
    });
    state.join("audit")
}

/// Verifies the audit log in `dir` (a state dir's `audit/`): every kept file, oldest first,
/// against `audit.head`. Works whether the kernel runs or not. Fails only when the directory
/// cannot be read or holds no audit log at all; problems in the log are the report's
/// findings.
pub fn verify_dir(dir: &Path) -> std::io::Result<Report> {
    let mut names = Vec::new();
    for e in std::fs::read_dir(dir)? {
        if let Ok(name) = e?.file_name().into_string() {
            names.push(name);
        }
    }
    let files = auditlog::log_files_oldest_first(names.iter().map(String::as_str));
    let anchor = match std::fs::read(dir.join(HEAD_FILE)) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    if files.is_empty() && anchor.is_none() {
        return Err(std::io::Error::new(
            ErrorKind::NotFound,
            format!(
                "no audit log in {} (no audit.log, no {HEAD_FILE})",
                dir.display()
            ),
        ));
    }
    let mut v = auditlog::Verifier::new(anchor.as_deref());
    for name in &files {
        v.begin_file(name);
        // A file is read whole: the kernel rotates at 16 MiB by default.
        let bytes = std::fs::read(dir.join(name))?;
        auditlog::feed(&mut v, &bytes);
    }
    Ok(v.finish())
}

/// The anchor in `dir` (`audit.head`): the chain's head as of the kernel's last commit, to
/// export elsewhere (notarization).
pub fn read_head(dir: &Path) -> std::io::Result<Anchor> {
    let bytes = std::fs::read(dir.join(HEAD_FILE))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        std::io::Error::new(
            ErrorKind::InvalidData,
            format!("{}: not an anchor: {e}", dir.join(HEAD_FILE).display()),
        )
    })
}

/// The audit methods, for a client type with a `call` method (see `agent_methods!` for how
/// it is invoked).
macro_rules! audit_methods {
    ($($async_kw:ident)?; $($await:tt)*) => {
        /// GET_AUDIT_LOG: audit entries, oldest first, after `req.since_id`, filtered by
        /// category and agent, at most `req.limit`. Root operators see every entry, other
        /// operators their agents' and their own, an agent its own.
        pub $($async_kw)? fn get_audit_log(
            &mut self,
            req: &$crate::msg::GetAuditLogRequest,
        ) -> Result<$crate::msg::GetAuditLogReply, $crate::Error> {
            self.call(req)$($await)*
        }

        /// SET_AUDIT_CONFIG: changes what is audited (absent fields keep their value); root
        /// operators only. The reply carries the whole configuration in force.
        pub $($async_kw)? fn set_audit_config(
            &mut self,
            req: &$crate::msg::SetAuditConfigRequest,
        ) -> Result<$crate::msg::SetAuditConfigReply, $crate::Error> {
            self.call(req)$($await)*
        }
    };
}
pub(crate) use audit_methods;
