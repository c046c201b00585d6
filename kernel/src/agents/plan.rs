//! What an agent's sandbox contains: the policy half of the spawn recipe.
//!
//! [`plan`] turns a SPAWN request (already validated) into the argv, environment, working
//! directory, bind mounts and generated files of one agent. It decides *what* the agent sees;
//! `sandbox::launch` and `sandbox::init` decide *how* it is built. Keeping the two apart makes
//! the policy a pure function, tested without root.
//!
//! What a sandboxed agent sees, all read-only unless said otherwise:
//! * the system directories (/usr, /bin, /sbin, /lib*, a few files of /etc; never all of /etc,
//!   which holds the host's users and secrets);
//! * the interpreter's install (see `sandbox::interpreter`) at its real paths;
//! * the script's project: the nearest ancestor holding `.git`, `pyproject.toml`, `setup.py` or
//!   `requirements.txt`, else the script's directory; for a script lying directly in `/tmp`
//!   (a shared, world-writable place) only the script itself. The original's example agents
//!   import their SDK from `<script dir>/../python_sdk`, which the project rule covers;
//! * the kernel's `PYTHONPATH` entries (the original's tests import their SDK that way);
//! * the request's `binds`;
//! * the work dir, read-write, at [`WORK_DIR`] (also `HOME` and the cwd);
//! * the agent's own socket at the kernel's socket path and at `/tmp/clove.sock`;
//! * `/etc/passwd` and `/etc/group` naming the agent's uid, and `/etc/hostname`.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::sandbox::interpreter::{outermost, Interpreter};

/// The agent's work dir inside the sandbox: its cwd and `HOME`. A path no host is likely to
/// have, so the binds of a project (which keep their host paths) never collide with it.
pub const WORK_DIR: &str = "/clove/work";

/// The path the original's scripts hard-code.
pub const COMPAT_SOCKET: &str = "/tmp/clove.sock";

/// System directories every sandbox gets (skipped when the host lacks them).
const SYSTEM_DIRS: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32",
];

/// Files and directories of /etc that programs need and that reveal nothing about the host's
/// users (skipped when missing).
const ETC_ENTRIES: &[&str] = &[
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/alternatives",
    "/etc/localtime",
    "/etc/nsswitch.conf",
    "/etc/hosts",
    "/etc/resolv.conf",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/mime.types",
    "/etc/protocols",
    "/etc/services",
];

/// Files whose presence marks a project root.
const PROJECT_MARKERS: &[&str] = &[".git", "pyproject.toml", "setup.py", "requirements.txt"];

/// One path made visible in the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanBind {
    /// Host path.
    pub source: PathBuf,
    /// Path inside the sandbox.
    pub target: PathBuf,
    /// Mounted read-write.
    pub writable: bool,
    /// Skipped when the source does not exist (system paths that vary between hosts).
    pub optional: bool,
}

impl PlanBind {
    fn ro(path: impl Into<PathBuf>, optional: bool) -> PlanBind {
        let path = path.into();
        PlanBind {
            source: path.clone(),
            target: path,
            writable: false,
            optional,
        }
    }
}

/// A file generated for the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanFile {
    /// Path inside the sandbox.
    pub target: PathBuf,
    /// Its contents.
    pub contents: String,
    /// Its mode.
    pub mode: u32,
}

/// What the agent runs and sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// `[program, script, socket, args...]`, paths as seen by the agent.
    pub argv: Vec<String>,
    /// The whole environment.
    pub env: Vec<(String, String)>,
    /// The working directory as seen by the agent.
    pub cwd: PathBuf,
    /// Bind mounts in mount order (sandboxed only; empty otherwise).
    pub binds: Vec<PlanBind>,
    /// Generated files (sandboxed only).
    pub files: Vec<PlanFile>,
    /// The script must be copied here first (host path, readable by the agent's uid), because
    /// the agent's uid cannot read the original; `binds` already maps the copy over the
    /// script's path.
    pub script_copy: Option<PathBuf>,
}

/// Everything [`plan`] needs to know about one agent.
#[derive(Debug, Clone)]
pub struct PlanInput<'a> {
    /// Agent id.
    pub id: u32,
    /// Agent name.
    pub name: &'a str,
    /// Absolute, existing script path on the host.
    pub script: &'a Path,
    /// Namespaces, root switch and uid drop.
    pub sandboxed: bool,
    /// The program that runs the script, `None` to execute the script itself.
    pub program: Option<Program<'a>>,
    /// Extra arguments after the socket path.
    pub args: &'a [String],
    /// Extra environment from the request.
    pub env: &'a BTreeMap<String, String>,
    /// The request's binds: (host source, target inside, writable).
    pub binds: &'a [(PathBuf, PathBuf, bool)],
    /// The kernel's main socket path (where the agent's socket appears inside).
    pub kernel_socket: &'a Path,
    /// The agent's own socket on the host.
    pub agent_socket: &'a Path,
    /// The agent's work dir on the host.
    pub work_dir: &'a Path,
    /// Where a copy of an unreadable script goes (host path).
    pub script_copy: &'a Path,
    /// The agent's uid and gid (sandboxed).
    pub uid: u32,
    /// The agent's gid.
    pub gid: u32,
    /// The kernel's `PYTHONPATH`, if any.
    pub pythonpath: Option<&'a str>,
}

/// The program that runs the script.
#[derive(Debug, Clone, Copy)]
pub enum Program<'a> {
    /// A resolved Python interpreter.
    Python(&'a Interpreter),
    /// Any other program (absolute host path, e.g. `/usr/bin/bash`).
    Other(&'a Path),
}

/// Builds the plan for one agent.
pub fn plan(input: &PlanInput<'_>) -> Plan {
    let script = input.script;
    let (program, program_tree): (Option<String>, Vec<PathBuf>) = match input.program {
        Some(Program::Python(i)) => (Some(path_str(&i.executable)), i.tree()),
        Some(Program::Other(p)) => (
            Some(path_str(p)),
            p.parent().map(Path::to_path_buf).into_iter().collect(),
        ),
        None => (None, Vec::new()),
    };
    let bin_dirs: Vec<String> = match input.program {
        Some(Program::Python(i)) => vec![path_str(i.bin_dir())],
        _ => Vec::new(),
    };

    // argv: as the original, `[python, script, <socket path>, args...]`. Inside the sandbox
    // the agent's socket sits at the kernel's socket path; outside it has its own path.
    let socket_seen = if input.sandboxed {
        input.kernel_socket
    } else {
        input.agent_socket
    };
    let mut argv: Vec<String> = program.into_iter().collect();
    argv.push(path_str(script));
    argv.push(path_str(socket_seen));
    argv.extend(input.args.iter().cloned());

    let home = if input.sandboxed {
        PathBuf::from(WORK_DIR)
    } else {
        input.work_dir.to_path_buf()
    };
    let env = environment(input, &bin_dirs, &home, socket_seen);
    if !input.sandboxed {
        return Plan {
            argv,
            env,
            cwd: home,
            binds: Vec::new(),
            files: Vec::new(),
            script_copy: None,
        };
    }

    let mut binds: Vec<PlanBind> = Vec::new();
    binds.extend(SYSTEM_DIRS.iter().map(|d| PlanBind::ro(*d, true)));
    binds.extend(ETC_ENTRIES.iter().map(|e| PlanBind::ro(*e, true)));
    // The program's tree, minus what the system dirs already hold.
    for dir in outermost(program_tree) {
        if !SYSTEM_DIRS.iter().any(|s| dir.starts_with(s)) {
            binds.push(PlanBind::ro(dir, false));
        }
    }
    // The script's project (or the script alone).
    // The script's project, when the agent's uid can reach the script through it; otherwise
    // only a readable copy of the script (below), since the project's directories would
    // refuse the agent anyway.
    let project = project_view(script);
    let reachable = reachable_inside(script, &project);
    let readable = reachable && world_readable(script);
    if reachable {
        binds.push(PlanBind::ro(project, false));
    }
    // The kernel's PYTHONPATH entries.
    if let Some(pp) = input.pythonpath {
        for entry in pp.split(':').filter(|e| e.starts_with('/')) {
            binds.push(PlanBind::ro(entry, true));
        }
    }
    // The request's binds.
    for (source, target, writable) in input.binds {
        binds.push(PlanBind {
            source: source.clone(),
            target: target.clone(),
            writable: *writable,
            optional: false,
        });
    }
    // A script the agent's uid cannot read is replaced by a readable copy at the same path.
    let script_copy = (!readable).then(|| input.script_copy.to_path_buf());
    if let Some(copy) = &script_copy {
        binds.push(PlanBind {
            source: copy.clone(),
            target: script.to_path_buf(),
            writable: false,
            optional: false,
        });
    }
    // The work dir, then the agent's socket at both paths scripts look for it.
    binds.push(PlanBind {
        source: input.work_dir.to_path_buf(),
        target: PathBuf::from(WORK_DIR),
        writable: true,
        optional: false,
    });
    for target in [input.kernel_socket, Path::new(COMPAT_SOCKET)] {
        let bind = PlanBind {
            source: input.agent_socket.to_path_buf(),
            target: target.to_path_buf(),
            // Connecting to a socket needs write permission on it.
            writable: true,
            optional: false,
        };
        if !binds.contains(&bind) {
            binds.push(bind);
        }
    }

    let user = "agent";
    let files = vec![
        PlanFile {
            target: "/etc/passwd".into(),
            contents: format!(
                "root:x:0:0:root:/root:/usr/sbin/nologin\n\
                 {user}:x:{uid}:{gid}:clove agent {name}:{WORK_DIR}:/bin/sh\n\
                 nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
                uid = input.uid,
                gid = input.gid,
                name = sanitize(input.name),
            ),
            mode: 0o644,
        },
        PlanFile {
            target: "/etc/group".into(),
            contents: format!(
                "root:x:0:\n{user}:x:{gid}:\nnogroup:x:65534:\n",
                gid = input.gid
            ),
            mode: 0o644,
        },
        PlanFile {
            target: "/etc/hostname".into(),
            contents: format!("{}\n", hostname(input.name)),
            mode: 0o644,
        },
    ];
    Plan {
        argv,
        env,
        cwd: home,
        binds,
        files,
        script_copy,
    }
}

/// The agent's environment: clean, plus what agents and the original SDK expect; the
/// request's `env` last (it may override anything but the `CLOVE_*` identity).
fn environment(
    input: &PlanInput<'_>,
    bin_dirs: &[String],
    home: &Path,
    socket: &Path,
) -> Vec<(String, String)> {
    let mut path: Vec<String> = bin_dirs.to_vec();
    for p in [
        "/usr/local/bin",
        "/usr/bin",
        "/bin",
        "/usr/local/sbin",
        "/usr/sbin",
        "/sbin",
    ] {
        if !path.iter().any(|x| x == p) {
            path.push(p.to_owned());
        }
    }
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    env.insert("PATH".into(), path.join(":"));
    env.insert("HOME".into(), path_str(home));
    env.insert("USER".into(), "agent".into());
    env.insert("LOGNAME".into(), "agent".into());
    env.insert("LANG".into(), "C.UTF-8".into());
    env.insert("PYTHONUNBUFFERED".into(), "1".into());
    if let Some(pp) = input.pythonpath {
        env.insert("PYTHONPATH".into(), pp.to_owned());
    }
    for (k, v) in input.env {
        env.insert(k.clone(), v.clone());
    }
    env.insert("CLOVE_SOCKET".into(), path_str(socket));
    env.insert("CLOVE_AGENT_ID".into(), input.id.to_string());
    env.insert("CLOVE_AGENT_NAME".into(), input.name.to_owned());
    env.into_iter().collect()
}

/// What of the script's surroundings the sandbox shows: its project root, its directory, or
/// (directly in /tmp) the script alone.
pub fn project_view(script: &Path) -> PathBuf {
    let Some(dir) = script.parent() else {
        return script.to_path_buf();
    };
    if dir == Path::new("/tmp") || dir == Path::new("/") || dir == Path::new("/dev/shm") {
        return script.to_path_buf();
    }
    let mut cur = Some(dir);
    while let Some(d) = cur {
        // Never the whole file system or a top-level system directory.
        if d.parent().is_none() || d.parent() == Some(Path::new("/")) {
            break;
        }
        if PROJECT_MARKERS.iter().any(|m| d.join(m).exists()) {
            return d.to_path_buf();
        }
        cur = d.parent();
    }
    dir.to_path_buf()
}

/// Whether a uid that is neither the owner nor in the group can read `path`.
fn world_readable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o004 != 0)
}

/// Whether every directory from the project root down to `script` is world-searchable, so
/// another uid reaches the script inside the sandbox. (Inside, the directories above the bound
/// project are created fresh, mode 0755, so their host modes do not matter.)
fn reachable_inside(script: &Path, project: &Path) -> bool {
    if project == script {
        return true;
    }
    script
        .ancestors()
        .skip(1)
        .take_while(|d| d.starts_with(project))
        .all(|d| {
            std::fs::metadata(d)
                .map(|m| m.permissions().mode() & 0o001 != 0)
                .unwrap_or(false)
        })
}

/// A host name from an agent name: `[a-z0-9-]`, at most 63 characters.
pub fn hostname(name: &str) -> String {
    let mut h: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    h = h.trim_matches('-').to_owned();
    if h.is_empty() {
        "agent".into()
    } else {
        h
    }
}

/// A name safe for a passwd GECOS field.
fn sanitize(name: &str) -> String {
    name.chars()
        .filter(|c| !matches!(c, ':' | '\n' | '\r'))
        .take(64)
        .collect()
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interp() -> Interpreter {
        Interpreter {
            configured: "python3".into(),
            executable: "/opt/py/bin/python3".into(),
            prefixes: vec!["/opt/py".into()],
            site_packages: vec!["/opt/py/lib/python3.11/site-packages".into()],
            version: "3.11.7".into(),
        }
    }

    fn input<'a>(
        script: &'a Path,
        interp: &'a Interpreter,
        env: &'a BTreeMap<String, String>,
        sandboxed: bool,
    ) -> PlanInput<'a> {
        PlanInput {
            id: 7,
            name: "Worker 1",
            script,
            sandboxed,
            program: Some(Program::Python(interp)),
            args: &[],
            env,
            binds: &[],
            kernel_socket: Path::new("/run/clove/clove.sock"),
            agent_socket: Path::new("/var/lib/clove/agents/7/clove.sock"),
            work_dir: Path::new("/var/lib/clove/agents/7/work"),
            script_copy: Path::new("/var/lib/clove/agents/7/script/a.py"),
            uid: 1_073_741_831,
            gid: 1_073_741_831,
            pythonpath: Some("/srv/sdk:relative"),
        }
    }

    #[test]
    fn sandboxed_plan_has_the_original_argv_and_the_identity_env() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let script = dir.path().join("a.py");
        std::fs::write(&script, "print(1)").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
        let i = interp();
        let mut env = BTreeMap::new();
        env.insert("FOO".to_owned(), "bar".to_owned());
        env.insert("CLOVE_AGENT_ID".to_owned(), "999".to_owned());
        let p = plan(&input(&script, &i, &env, true));
        assert_eq!(
            p.argv,
            vec![
                "/opt/py/bin/python3".to_owned(),
                path_str(&script),
                "/run/clove/clove.sock".to_owned()
            ]
        );
        let env: BTreeMap<_, _> = p.env.iter().cloned().collect();
        assert_eq!(env["CLOVE_AGENT_ID"], "7", "identity cannot be overridden");
        assert_eq!(env["CLOVE_AGENT_NAME"], "Worker 1");
        assert_eq!(env["CLOVE_SOCKET"], "/run/clove/clove.sock");
        assert_eq!(env["FOO"], "bar");
        assert_eq!(env["HOME"], WORK_DIR);
        assert_eq!(env["PYTHONUNBUFFERED"], "1");
        assert_eq!(env["PYTHONPATH"], "/srv/sdk:relative");
        assert!(env["PATH"].starts_with("/opt/py/bin:"), "{}", env["PATH"]);
        assert_eq!(p.cwd, PathBuf::from(WORK_DIR));
        // The interpreter's install, the project (the temp dir), the work dir and both
        // socket paths are bound; only the work dir and the sockets are writable.
        let targets: Vec<_> = p.binds.iter().map(|b| b.target.clone()).collect();
        assert!(targets.contains(&PathBuf::from("/opt/py")));
        assert!(targets.contains(&dir.path().to_path_buf()));
        assert!(targets.contains(&PathBuf::from("/srv/sdk")));
        assert!(!targets.iter().any(|t| t == Path::new("relative")));
        assert!(targets.contains(&PathBuf::from(COMPAT_SOCKET)));
        let writable: Vec<_> = p.binds.iter().filter(|b| b.writable).collect();
        assert_eq!(writable.len(), 3, "{writable:?}");
        assert!(
            !targets.contains(&PathBuf::from("/etc")),
            "never all of /etc"
        );
        assert!(p.script_copy.is_none());
        let passwd = &p.files[0];
        assert!(passwd
            .contents
            .contains("agent:x:1073741831:1073741831:clove agent Worker 1:/clove/work:"));
        assert_eq!(p.files[2].contents, "worker-1\n");
    }

    #[test]
    fn an_unreadable_script_is_replaced_by_a_copy() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let script = dir.path().join("a.py");
        std::fs::write(&script, "print(1)").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o600)).unwrap();
        let i = interp();
        let env = BTreeMap::new();
        let p = plan(&input(&script, &i, &env, true));
        assert_eq!(
            p.script_copy.as_deref(),
            Some(Path::new("/var/lib/clove/agents/7/script/a.py"))
        );
        let copy_bind = p.binds.iter().find(|b| b.target == script).unwrap();
        assert_eq!(
            copy_bind.source,
            PathBuf::from("/var/lib/clove/agents/7/script/a.py")
        );
        // Mounted after the project, so it wins.
        let project_at = p.binds.iter().position(|b| b.target == dir.path()).unwrap();
        let copy_at = p.binds.iter().position(|b| b.target == script).unwrap();
        assert!(copy_at > project_at);
    }

    #[test]
    fn unsandboxed_plan_uses_host_paths_and_no_binds() {
        let i = interp();
        let env = BTreeMap::new();
        let p = plan(&input(Path::new("/srv/a.py"), &i, &env, false));
        assert_eq!(p.argv[2], "/var/lib/clove/agents/7/clove.sock");
        assert!(p.binds.is_empty() && p.files.is_empty());
        let env: BTreeMap<_, _> = p.env.iter().cloned().collect();
        assert_eq!(env["HOME"], "/var/lib/clove/agents/7/work");
    }

    #[test]
    fn scripts_run_themselves_without_a_program() {
        let i = interp();
        let env = BTreeMap::new();
        let mut inp = input(Path::new("/srv/run.sh"), &i, &env, true);
        inp.program = None;
        let p = plan(&inp);
        assert_eq!(p.argv[0], "/srv/run.sh");
    }

    #[test]
    fn project_roots_are_found_by_their_markers() {
        let root = tempfile::tempdir().unwrap();
        let proj = root.path().join("proj");
        std::fs::create_dir_all(proj.join("agents/sub")).unwrap();
        std::fs::write(proj.join("pyproject.toml"), "").unwrap();
        assert_eq!(project_view(&proj.join("agents/sub/a.py")), proj);
        // No marker: the script's directory.
        let plain = root.path().join("plain");
        std::fs::create_dir_all(&plain).unwrap();
        assert_eq!(project_view(&plain.join("a.py")), plain);
        // Directly in /tmp: the script alone, never all of /tmp.
        assert_eq!(
            project_view(Path::new("/tmp/x.py")),
            PathBuf::from("/tmp/x.py")
        );
    }

    #[test]
    fn hostnames_are_clean() {
        assert_eq!(hostname("My Agent!"), "my-agent");
        assert_eq!(hostname("***"), "agent");
        assert_eq!(hostname(&"a".repeat(100)).len(), 63);
    }
}
