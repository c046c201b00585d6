//! The configured Python interpreter, resolved once at start by running it.
//!
//! `python3` on PATH may be a shim (pyenv, asdf) that lives under a directory other uids cannot
//! enter (`/root` is 0700 here), and a venv's `bin/python` is a symlink into a base install
//! somewhere else. Asking the interpreter itself is the only reliable way to learn what a
//! sandbox must contain for it to start: its real executable, `sys.prefix` (the venv),
//! `sys.base_prefix` (the install it was made from) and the site-packages directories.
//! Every sandbox binds these read-only at the same paths, so a venv with `clove_sdk`
//! installed works inside unchanged.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::Deserialize;

/// The probe run by the interpreter: one JSON line with what the sandbox needs.
const PROBE: &str = "import json, site, sys\n\
paths = []\n\
try:\n    paths += site.getsitepackages()\nexcept Exception:\n    pass\n\
try:\n    paths.append(site.getusersitepackages())\nexcept Exception:\n    pass\n\
print(json.dumps({'executable': sys.executable, 'prefix': sys.prefix, \
'base_prefix': sys.base_prefix, 'exec_prefix': sys.exec_prefix, \
'base_exec_prefix': sys.base_exec_prefix, 'site_packages': paths, \
'version': '%d.%d.%d' % sys.version_info[:3]}))\n";

/// How long the probe may take (a cold pyenv shim can be slow).
const PROBE_LIMIT: Duration = Duration::from_secs(20);

/// A resolved interpreter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interpreter {
    /// What the configuration named (`python3`, `/opt/venv/bin/python`).
    pub configured: String,
    /// `sys.executable`: the program the sandbox runs.
    pub executable: PathBuf,
    /// `sys.prefix`, `sys.exec_prefix`, `sys.base_prefix`, `sys.base_exec_prefix`, deduplicated.
    pub prefixes: Vec<PathBuf>,
    /// The site-packages directories that exist.
    pub site_packages: Vec<PathBuf>,
    /// `major.minor.micro`.
    pub version: String,
}

/// Why the interpreter could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum InterpreterError {
    /// It could not be started.
    #[error("run interpreter {name}: {source}")]
    Start {
        /// The configured name.
        name: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// It ran but the probe failed.
    #[error("interpreter {name} failed its probe ({status}): {stderr}")]
    Probe {
        /// The configured name.
        name: String,
        /// Its exit status.
        status: String,
        /// The end of its stderr.
        stderr: String,
    },
    /// It did not answer in time.
    #[error(
        "interpreter {name} did not answer its probe within {0:?}",
        PROBE_LIMIT
    )]
    Timeout {
        /// The configured name.
        name: String,
    },
    /// Its answer made no sense.
    #[error("interpreter {name}: unreadable probe output: {detail}")]
    Output {
        /// The configured name.
        name: String,
        /// What was wrong.
        detail: String,
    },
}

#[derive(Deserialize)]
struct Probe {
    executable: String,
    prefix: String,
    base_prefix: String,
    exec_prefix: String,
    base_exec_prefix: String,
    site_packages: Vec<String>,
    version: String,
}

impl Interpreter {
    /// Runs `name` (a path or a program on PATH) and reads what it reports.
    pub fn resolve(name: &str) -> Result<Interpreter, InterpreterError> {
        let mut child = Command::new(name)
            .args(["-I", "-c", PROBE])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|source| InterpreterError::Start {
                name: name.to_owned(),
                source,
            })?;
        let deadline = std::time::Instant::now() + PROBE_LIMIT;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(InterpreterError::Timeout {
                        name: name.to_owned(),
                    });
                }
                Err(source) => {
                    return Err(InterpreterError::Start {
                        name: name.to_owned(),
                        source,
                    })
                }
            }
        }
        let out = child
            .wait_with_output()
            .map_err(|source| InterpreterError::Start {
                name: name.to_owned(),
                source,
            })?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let tail: String = stderr
                .lines()
                .last()
                .unwrap_or("")
                .chars()
                .take(300)
                .collect();
            return Err(InterpreterError::Probe {
                name: name.to_owned(),
                status: out.status.to_string(),
                stderr: tail,
            });
        }
        Self::from_probe(name, &String::from_utf8_lossy(&out.stdout))
    }

    /// Builds the interpreter from the probe's JSON line.
    fn from_probe(name: &str, stdout: &str) -> Result<Interpreter, InterpreterError> {
        let bad = |detail: String| InterpreterError::Output {
            name: name.to_owned(),
            detail,
        };
        let line = stdout.lines().last().unwrap_or("");
        let p: Probe = serde_json::from_str(line).map_err(|e| bad(format!("{e}: {line:?}")))?;
        let executable = PathBuf::from(&p.executable);
        if !executable.is_absolute() {
            return Err(bad(format!(
                "sys.executable {:?} is not absolute",
                p.executable
            )));
        }
        let mut prefixes: Vec<PathBuf> = Vec::new();
        for prefix in [p.prefix, p.exec_prefix, p.base_prefix, p.base_exec_prefix] {
            let prefix = PathBuf::from(prefix);
            if prefix.is_absolute() && !prefixes.contains(&prefix) {
                prefixes.push(prefix);
            }
        }
        let site_packages = p
            .site_packages
            .into_iter()
            .map(PathBuf::from)
            .filter(|s| s.is_absolute() && s.is_dir())
            .collect();
        Ok(Interpreter {
            configured: name.to_owned(),
            executable,
            prefixes,
            site_packages,
            version: p.version,
        })
    }

    /// The directories the sandbox binds read-only so the interpreter runs: the prefixes
    /// and any site-packages outside them, without entries nested in another.
    pub fn tree(&self) -> Vec<PathBuf> {
        let mut all: Vec<PathBuf> = self.prefixes.clone();
        all.extend(self.site_packages.iter().cloned());
        if let Some(dir) = self.executable.parent() {
            all.push(dir.to_path_buf());
        }
        outermost(all)
    }

    /// The directory of the executable (first on the agent's PATH).
    pub fn bin_dir(&self) -> &Path {
        self.executable.parent().unwrap_or(Path::new("/usr/bin"))
    }
}

/// `paths` without duplicates and without any path lying inside another one of them.
pub fn outermost(mut paths: Vec<PathBuf>) -> Vec<PathBuf> {
    paths.sort();
    paths.dedup();
    let mut kept: Vec<PathBuf> = Vec::new();
    for p in paths {
        if !kept.iter().any(|k| p.starts_with(k)) {
            kept.push(p);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_output_is_read_and_nested_paths_collapse() {
        let json = r#"{"executable": "/opt/venv/bin/python3", "prefix": "/opt/venv", "base_prefix": "/usr", "exec_prefix": "/opt/venv", "base_exec_prefix": "/usr", "site_packages": ["/opt/venv/lib/python3.11/site-packages", "/nonexistent/site"], "version": "3.11.7"}"#;
        let i = Interpreter::from_probe("python3", &format!("noise\n{json}\n")).unwrap();
        assert_eq!(i.executable, PathBuf::from("/opt/venv/bin/python3"));
        assert_eq!(
            i.prefixes,
            vec![PathBuf::from("/opt/venv"), PathBuf::from("/usr")]
        );
        // The missing site dir is dropped; the tree is the two prefixes.
        assert!(i.site_packages.is_empty());
        assert_eq!(
            i.tree(),
            vec![PathBuf::from("/opt/venv"), PathBuf::from("/usr")]
        );
        assert_eq!(i.bin_dir(), Path::new("/opt/venv/bin"));
    }

    #[test]
    fn a_relative_executable_is_refused() {
        let json = r#"{"executable": "python3", "prefix": "/usr", "base_prefix": "/usr", "exec_prefix": "/usr", "base_exec_prefix": "/usr", "site_packages": [], "version": "3.11.7"}"#;
        let e = Interpreter::from_probe("python3", json).unwrap_err();
        assert!(e.to_string().contains("not absolute"), "{e}");
    }

    #[test]
    fn the_real_interpreter_resolves_to_its_install() {
        let Ok(i) = Interpreter::resolve("python3") else {
            eprintln!("SKIP: python3 cannot be run here");
            return;
        };
        assert!(i.executable.is_absolute() && i.executable.exists(), "{i:?}");
        // A shim resolves to the interpreter it forwards to, never to itself.
        assert!(!i.executable.to_string_lossy().contains("/shims/"), "{i:?}");
        assert!(i.prefixes.iter().all(|p| p.is_dir()), "{i:?}");
        assert!(
            i.tree().iter().any(|t| i.executable.starts_with(t)),
            "{i:?}"
        );
    }

    #[test]
    fn a_missing_interpreter_is_a_clear_error() {
        let e = Interpreter::resolve("/nonexistent/python9").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with("run interpreter /nonexistent/python9:"),
            "{msg}"
        );
    }
}
