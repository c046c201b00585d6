//! What the agent process does to itself right before `execve`: the privilege drop.
//!
//! This runs in the init process's forked child (single-threaded, so ordinary allocating code
//! is fine here), as root of the parent user namespace with every capability. [`lock_down`]
//! is one linear recipe; the order matters and each step says why it sits where it does.
//! Everything here acts on the calling thread (capabilities, securebits, no_new_privs,
//! Landlock, seccomp are per-thread), which is the whole process at the intended call site
//! and the only thread that survives `execve` anywhere else.
//!
//! Not done, on purpose: `PR_SET_DUMPABLE 0`. `execve` resets the flag to 1 for any readable,
//! non-setuid program (`begin_new_exec`), so it would never reach the agent; what it would
//! guard (ptrace and /proc/<pid>/mem by the same uid) is covered by the seccomp filter
//! (`ptrace`, `process_vm_*` denied), the per-agent uid and the pid namespace, and core dumps by
//! `RLIMIT_CORE`. The tests check that the agent sees itself dumpable and can list its own
//! /proc/self/fd.

use std::io;
use std::os::fd::RawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use landlock::{
    Access, AccessFs, PathBeneath, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetError,
    RulesetStatus, ABI,
};
use libc::{c_int, c_uint, c_ulong};
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::resource::{setrlimit, Resource};
use nix::unistd::{setgroups, setresgid, setresuid, Gid, Uid};

use super::seccomp;

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
///
/// The order: rlimits (raising the hard limit needs `CAP_SYS_RESOURCE`); `setgroups`,
/// the bounding set and securebits (need `CAP_SETGID` / `CAP_SETPCAP`, so before the uid
/// switch); `setresgid` then `setresuid` (the gid first: after the uid switch we could no
/// longer change it); clear the remaining capability sets; no_new_privs (Landlock and seccomp
/// require it from an unprivileged caller); Landlock (opens its paths as the agent uid, so a
/// listed path the agent cannot even reach is an error here, not a silent gap; a missing path
/// is skipped);
/// the seccomp filter (late, so that none of our own setup calls has to get past it); last,
/// every fd above 2 close-on-exec, not closed, because the caller still holds a CLOEXEC pipe
/// to report an exec failure.
///
/// On error the process is half-dropped and must not exec the agent: report and exit.
pub fn lock_down(l: &Lockdown) -> Result<Applied, PrivilegeError> {
    // An agent running as root would make every other layer moot; refuse before changing
    // anything.
    if l.uid == 0 || l.gid == 0 {
        return Err(step(
            format!("check agent ids (uid {}, gid {})", l.uid, l.gid),
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "refusing to run an agent as uid 0 or gid 0",
            ),
        ));
    }

    // 1. rlimits, while we may still raise hard limits.
    for (resource, name, value) in [
        (Resource::RLIMIT_NOFILE, "RLIMIT_NOFILE", l.rlimits.nofile),
        (Resource::RLIMIT_CORE, "RLIMIT_CORE", l.rlimits.core),
    ] {
        setrlimit(resource, value, value)
            .map_err(|e| step(format!("setrlimit {name} {value}"), e.into()))?;
    }

    // 2. Supplementary groups: only the agent's own gid (root's groups would otherwise stay).
    let gid = Gid::from_raw(l.gid);
    setgroups(&[gid]).map_err(|e| step(format!("setgroups [{}]", l.gid), e.into()))?;

    // 3. The bounding set, so that nothing exec'd later can gain a capability back.
    drop_bounding_set()?;

    // 4. Securebits, locked: no capabilities for uid 0 on exec, no keeping them across the uid
    //    switch, no raising ambient ones. Needs CAP_SETPCAP, still effective here.
    lock_securebits()?;

    // 5. The uid switch. With SECBIT_NO_SETUID_FIXUP and SECBIT_KEEP_CAPS locked off, leaving
    //    uid 0 clears the permitted, effective and ambient sets.
    setresgid(gid, gid, gid).map_err(|e| step(format!("setresgid {}", l.gid), e.into()))?;
    let uid = Uid::from_raw(l.uid);
    setresuid(uid, uid, uid).map_err(|e| step(format!("setresuid {}", l.uid), e.into()))?;

    // 6. Whatever the uid switch left (the inheritable set), then check all are empty.
    clear_capabilities()?;

    // 7. no_new_privs: setuid binaries and file capabilities grant nothing from here on.
    prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0).map_err(|e| step("set no_new_privs", e))?;

    // 8. Landlock, where the kernel has it.
    let landlock = match &l.landlock {
        None => LandlockStatus::Off,
        Some(paths) => apply_landlock(paths)?,
    };

    // 9. The seccomp filter.
    if l.seccomp {
        let prog = seccomp::agent_filter().map_err(|e| step("seccomp filter", seccomp_io(e)))?;
        seccomp::install(&prog).map_err(|e| step("seccomp filter", seccomp_io(e)))?;
    }

    // 10. Nothing but stdin, stdout and stderr reaches the agent.
    mark_fds_cloexec().map_err(|e| step("mark fds above 2 close-on-exec", e))?;

    Ok(Applied { landlock })
}

/// `prctl(option, arg2, arg3, 0, 0)` for the options used here, which take integers only.
/// Every argument goes through as an unsigned long: prctl is variadic and several options
/// fail with EINVAL when the unused ones are not zero.
fn prctl(option: c_int, arg2: c_ulong, arg3: c_ulong) -> io::Result<c_int> {
    // SAFETY: the options passed here (PR_SET_NO_NEW_PRIVS, PR_CAPBSET_*, PR_*_SECUREBITS,
    // PR_CAP_AMBIENT) take integer arguments only and touch no memory of ours.
    let rc = unsafe { libc::prctl(option, arg2, arg3, 0 as c_ulong, 0 as c_ulong) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc)
}

fn step(step: impl Into<String>, source: io::Error) -> PrivilegeError {
    PrivilegeError {
        step: step.into(),
        source,
    }
}

/// Keeps the errno of an install failure; the rest becomes a message.
fn seccomp_io(e: seccomp::SeccompError) -> io::Error {
    match e {
        seccomp::SeccompError::Install(io) => io,
        other => io::Error::other(other.to_string()),
    }
}

/// Drops every capability the kernel knows from the bounding set. Probing with
/// `PR_CAPBSET_READ` until `EINVAL` covers capabilities newer than libc and the caps crate.
fn drop_bounding_set() -> Result<(), PrivilegeError> {
    for cap in 0..64 as c_ulong {
        let has = match prctl(libc::PR_CAPBSET_READ, cap, 0) {
            Ok(has) => has,
            // Past CAP_LAST_CAP.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(()),
            Err(e) => {
                return Err(step(
                    format!("read capability {cap} in the bounding set"),
                    e,
                ))
            }
        };
        if has == 1 {
            prctl(libc::PR_CAPBSET_DROP, cap, 0)
                .map_err(|e| step(format!("drop capability {cap} from the bounding set"), e))?;
        }
    }
    Ok(())
}

/// The securebits the agent runs with: `NOROOT` (uid 0 gains no capabilities on exec; with an
/// empty bounding set this is belt and braces), `NO_CAP_AMBIENT_RAISE`, and the locks that
/// keep `NO_SETUID_FIXUP` and `KEEP_CAPS` off, so the uid switch does clear the capability
/// sets and nothing can change that later. All locked: the agent cannot unset them (it lacks
/// `CAP_SETPCAP` anyway); they are inherited across fork and exec.
pub(crate) const AGENT_SECUREBITS: c_int = libc::SECBIT_NOROOT
    | libc::SECBIT_NOROOT_LOCKED
    | libc::SECBIT_NO_SETUID_FIXUP_LOCKED
    | libc::SECBIT_KEEP_CAPS_LOCKED
    | libc::SECBIT_NO_CAP_AMBIENT_RAISE
    | libc::SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED;

fn lock_securebits() -> Result<(), PrivilegeError> {
    let current = prctl(libc::PR_GET_SECUREBITS, 0, 0).map_err(|e| step("read securebits", e))?;
    // Keep bits someone above us set (they can only be stricter), but the two that would
    // keep capabilities across the uid switch must be off.
    let bits =
        (current & !(libc::SECBIT_NO_SETUID_FIXUP | libc::SECBIT_KEEP_CAPS)) | AGENT_SECUREBITS;
    prctl(libc::PR_SET_SECUREBITS, bits as c_ulong, 0)
        .map_err(|e| step(format!("set securebits {bits:#x}"), e))?;
    Ok(())
}

/// `struct __user_cap_header_struct` (linux/capability.h).
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: c_int,
}

/// `struct __user_cap_data_struct`; version 3 takes two of them (capabilities 0-31, 32-63).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Empties the effective, permitted, inheritable and ambient sets and reads them back. Raw
/// capset/capget rather than the caps crate: its sets only hold the capabilities it knows and
/// its errors are strings without the errno.
fn clear_capabilities() -> Result<(), PrivilegeError> {
    // Ambient capabilities are a subset of permitted and inheritable, so clearing those
    // clears them too; clearing them first just keeps the order obvious. EINVAL: a kernel
    // without ambient capabilities (before 4.3), nothing to clear.
    match prctl(
        libc::PR_CAP_AMBIENT,
        libc::PR_CAP_AMBIENT_CLEAR_ALL as c_ulong,
        0,
    ) {
        Ok(_) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
        Err(e) => return Err(step("clear ambient capabilities", e)),
    }

    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let empty = [CapData::default(); 2];
    // SAFETY: a version-3 header and two data structs, as capset(2) requires; the kernel
    // reads both and writes at most the header's version field.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_capset,
            &mut header as *mut CapHeader,
            empty.as_ptr(),
        )
    };
    if rc != 0 {
        return Err(step("clear capabilities", io::Error::last_os_error()));
    }

    let mut now = [CapData {
        effective: u32::MAX,
        permitted: u32::MAX,
        inheritable: u32::MAX,
    }; 2];
    // SAFETY: as above; capget(2) writes two data structs, which `now` has room for.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut header as *mut CapHeader,
            now.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(step("read capabilities back", io::Error::last_os_error()));
    }
    if now != empty {
        return Err(step(
            "clear capabilities",
            io::Error::other(format!("capabilities still set: {now:?}")),
        ));
    }
    Ok(())
}

/// The Landlock ABI whose file-system rights we ask for. V5 (Linux 6.10) is the newest that
/// changed them before V9, and the one tested (on a V7 kernel). Not V9 yet: it adds
/// `ResolveUnix` (connecting to pathname sockets), which would cut the agent off the kernel's
/// socket unless the caller lists it as a write path; raise this after deciding that and
/// testing on such a kernel. Older kernels get what they support (best effort, `Partial`).
const LANDLOCK_ABI: ABI = ABI::V5;

/// Denies every file-system access Landlock handles except read (and execute) beneath `read`
/// and everything beneath `write`.
fn apply_landlock(paths: &LandlockPaths) -> Result<LandlockStatus, PrivilegeError> {
    let all = AccessFs::from_all(LANDLOCK_ABI);
    let read = AccessFs::from_read(LANDLOCK_ABI);
    let file_only = AccessFs::from_file(LANDLOCK_ABI);
    let landlock_err = |what: String| move |e: RulesetError| step(what, io::Error::other(e));

    let mut ruleset = Ruleset::default()
        .handle_access(all)
        .map_err(landlock_err("landlock ruleset".into()))?
        .create()
        .map_err(landlock_err("landlock ruleset".into()))?;

    let rules = paths
        .read
        .iter()
        .map(|p| (p, read))
        .chain(paths.write.iter().map(|p| (p, all)));
    for (path, access) in rules {
        // O_PATH: a handle on the tree, no read permission on it needed.
        let fd = match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
            .open(path)
        {
            Ok(fd) => fd,
            // Absent (e.g. /lib64 on aarch64): nothing to allow there. Denying more than asked
            // is safe; widening is not possible this way.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(step(format!("landlock rule {}", path.display()), e)),
        };
        let is_dir = fd
            .metadata()
            .map_err(|e| step(format!("landlock rule {}", path.display()), e))?
            .is_dir();
        // Directory-only rights (read dir, make entries, ...) on a file are an error.
        let access = if is_dir { access } else { access & file_only };
        ruleset = ruleset
            .add_rule(PathBeneath::new(fd, access))
            .map_err(landlock_err(format!("landlock rule {}", path.display())))?;
    }

    let status = ruleset
        .restrict_self()
        .map_err(landlock_err("landlock restrict_self".into()))?;
    Ok(match status.ruleset {
        RulesetStatus::FullyEnforced => LandlockStatus::Full,
        RulesetStatus::PartiallyEnforced => LandlockStatus::Partial,
        RulesetStatus::NotEnforced => LandlockStatus::Unsupported,
    })
}

/// Marks every fd above 2 close-on-exec: `close_range(CLOSE_RANGE_CLOEXEC)` (Linux 5.11),
/// else one by one from /proc/self/fd.
fn mark_fds_cloexec() -> io::Result<()> {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets descriptor flags and touches no
    // memory of ours.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3 as c_uint,
            c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        // No close_range (before 5.9) or no CLOSE_RANGE_CLOEXEC flag (5.9, 5.10).
        Some(libc::ENOSYS) | Some(libc::EINVAL) => mark_fds_cloexec_via_proc(),
        _ => Err(err),
    }
}

fn mark_fds_cloexec_via_proc() -> io::Result<()> {
    // Collect first: the directory's own fd is in the listing and closes with the iterator.
    let mut fds = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let name = entry?.file_name();
        if let Some(fd) = name.to_str().and_then(|n| n.parse::<RawFd>().ok()) {
            if fd > 2 {
                fds.push(fd);
            }
        }
    }
    for fd in fds {
        match fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)) {
            // EBADF: the listing's own fd, gone by now.
            Ok(_) | Err(Errno::EBADF) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
pub(super) mod tests {
    //! The layers are asserted from inside: the test binary re-executes itself into a child
    //! role that calls [`lock_down`] and execs a Python probe (`PROBE_PY`) as the test uid;
    //! the probe reports /proc/self/status, ids, limits and the outcome of each escape
    //! attempt, and the test asserts the specific answer (EPERM, ENOSYS, EACCES), which the
    //! control test shows differs when the layer is missing.

    use super::*;
    use nix::sys::signal::{kill, Signal};
    use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
    use nix::unistd::Pid;
    use std::collections::BTreeMap;
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Output, Stdio};
    use std::time::{Duration, Instant};

    /// The test uid and gid: non-zero, far from any real account.
    const TEST_ID: u32 = 4_000_123;
    const PYTHON: &str = "/usr/bin/python3.11";

    /// The Python probe. Reads `CLOVE_PROBE_CONFIG` (syscall numbers, paths), prints one line
    /// `CLOVE_PROBE <json>` mapping each probe to "ok", an errno name, "killed:<signal>" or a
    /// value. Calls that could change the probe's own state run in a forked child.
    pub(in crate::sandbox) const PROBE_PY: &str = r#"
import asyncio, ctypes, errno, json, os, resource, subprocess, threading

cfg = json.loads(os.environ["CLOVE_PROBE_CONFIG"])
NR = cfg["nr"]
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
out = {}

def ename(e):
    return errno.errorcode.get(e, str(e))

def arg(a):
    if a is None:
        return ctypes.c_void_p(None)
    if isinstance(a, bytes):
        return ctypes.c_char_p(a)
    return ctypes.c_long(a)

def sc(nr, *a):
    nr = NR[nr] if isinstance(nr, str) else nr
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *[arg(x) for x in a])
    return ename(ctypes.get_errno()) if r == -1 else "ok"

def forked(fn):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            res = str(fn())
        except BaseException as e:
            res = "exception:%r" % (e,)
        os.write(w, res.encode())
        os._exit(0)
    os.close(w)
    data = b""
    while True:
        chunk = os.read(r, 65536)
        if not chunk:
            break
        data += chunk
    os.close(r)
    _, st = os.waitpid(pid, 0)
    if os.WIFSIGNALED(st):
        return "killed:%d" % os.WTERMSIG(st)
    return data.decode()

def probe(name, fn):
    try:
        out[name] = str(fn())
    except OSError as e:
        out[name] = ename(e.errno)
    except BaseException as e:
        out[name] = "exception:%r" % (e,)

def clone_with(flag):
    def f():
        ctypes.set_errno(0)
        r = libc.syscall(ctypes.c_long(NR["clone"]), ctypes.c_long(flag | 17),
                         ctypes.c_long(0), ctypes.c_long(0), ctypes.c_long(0), ctypes.c_long(0))
        if r == 0:
            os._exit(0)
        if r == -1:
            return ename(ctypes.get_errno())
        os.waitpid(r, 0)
        return "ok"
    return f

def setuid0():
    return "ok" if libc.setuid(0) == 0 else ename(ctypes.get_errno())

def write_file(path):
    with open(path, "w") as f:
        f.write("x")
    return "ok"

def read_file(path):
    with open(path) as f:
        f.read()
    return "ok"

def status():
    with open("/proc/self/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("Seccomp", "NoNewPrivs", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb",
                     "Uid", "Gid", "Groups"):
                out["status." + k] = " ".join(v.split())
    return "ok"

def threads():
    done = []
    ts = [threading.Thread(target=lambda i=i: done.append(i)) for i in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return "ok" if sorted(done) == list(range(8)) else "only %d" % len(done)

async def echo():
    async def handle(r, w):
        w.write(await r.read(100))
        await w.drain()
        w.close()
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"ping")
    await w.drain()
    data = await r.read(100)
    w.close()
    server.close()
    await server.wait_closed()
    return data.decode()

probe("status", status)
probe("securebits", lambda: libc.prctl(27, 0, 0, 0, 0))
probe("dumpable", lambda: libc.prctl(3, 0, 0, 0, 0))
probe("rlimit_nofile", lambda: "%d,%d" % resource.getrlimit(resource.RLIMIT_NOFILE))
probe("rlimit_core", lambda: "%d,%d" % resource.getrlimit(resource.RLIMIT_CORE))
probe("proc_self_fd", lambda: os.listdir("/proc/self/fd") and "ok")
if cfg.get("leak_fd") is not None:
    probe("leaked_fd", lambda: os.fstat(cfg["leak_fd"]) and "open")

# Escapes, each in its own process.
probe("unshare_newuser", lambda: forked(lambda: sc("unshare", 0x10000000)))
probe("unshare_newns", lambda: forked(lambda: sc("unshare", 0x00020000)))
probe("clone_newuser", lambda: forked(clone_with(0x10000000)))
probe("clone_newnet", lambda: forked(clone_with(0x40000000)))
probe("clone3", lambda: forked(lambda: sc("clone3", None, 0)))
probe("setns", lambda: forked(lambda: sc("setns", -1, 0)))
probe("mount", lambda: forked(lambda: sc("mount", b"none", b"/nonexistent-clove-probe", b"tmpfs", 0, None)))
probe("umount2", lambda: forked(lambda: sc("umount2", b"/nonexistent-clove-probe", 0)))
probe("ptrace_traceme", lambda: forked(lambda: sc("ptrace", 0, 0, 0, 0)))
probe("process_vm_readv", lambda: forked(lambda: sc("process_vm_readv", os.getpid(), None, 0, None, 0, 0)))
probe("bpf", lambda: forked(lambda: sc("bpf", 0x7fff, None, 0)))
probe("perf_event_open", lambda: forked(lambda: sc("perf_event_open", None, 0, -1, -1, 0)))
probe("keyctl", lambda: forked(lambda: sc("keyctl", 0x7fff, 0, 0, 0, 0)))
probe("personality_no_aslr", lambda: forked(lambda: sc("personality", 0x0040000)))
probe("personality_query", lambda: sc("personality", 0xffffffff))
probe("x32_getpid", lambda: forked(lambda: sc(0x40000000 | 39)))
probe("setuid0", lambda: forked(setuid0))

# What an agent needs.
probe("fork", lambda: forked(lambda: "ok"))
probe("threads", threads)
probe("subprocess_true", lambda: "ok" if subprocess.run(["/bin/true"]).returncode == 0 else "failed")
probe("subprocess_sh", lambda: subprocess.run(["/bin/sh", "-c", "echo hi"], capture_output=True).stdout.decode().strip())
probe("asyncio_echo", lambda: asyncio.run(asyncio.wait_for(echo(), 20)))

# The file system.
if cfg.get("write_dir"):
    probe("write_inside", lambda: write_file(os.path.join(cfg["write_dir"], "inside.txt")))
    probe("write_outside", lambda: write_file(os.path.join(cfg["outside_dir"], "escape.txt")))
    probe("read_canary", lambda: read_file(cfg["canary"]))
    probe("read_etc_passwd", lambda: read_file("/etc/passwd"))

print("CLOVE_PROBE " + json.dumps(out), flush=True)
"#;

    /// The probe's input.
    #[derive(Debug, Default, Clone, serde::Serialize)]
    pub(in crate::sandbox) struct ProbeConfig {
        /// Syscall numbers on this architecture, by name.
        pub(in crate::sandbox) nr: BTreeMap<&'static str, libc::c_long>,
        /// Landlock write tree, a sibling the agent uid owns but Landlock denies, and a
        /// world-readable file in that sibling.
        pub(in crate::sandbox) write_dir: Option<PathBuf>,
        pub(in crate::sandbox) outside_dir: Option<PathBuf>,
        pub(in crate::sandbox) canary: Option<PathBuf>,
        /// An fd opened without CLOEXEC before lock_down; set by the child role.
        pub(in crate::sandbox) leak_fd: Option<i32>,
    }

    impl ProbeConfig {
        pub(in crate::sandbox) fn new() -> Self {
            let nr = [
                ("unshare", libc::SYS_unshare),
                ("clone", libc::SYS_clone),
                ("clone3", libc::SYS_clone3),
                ("setns", libc::SYS_setns),
                ("mount", libc::SYS_mount),
                ("umount2", libc::SYS_umount2),
                ("ptrace", libc::SYS_ptrace),
                ("process_vm_readv", libc::SYS_process_vm_readv),
                ("bpf", libc::SYS_bpf),
                ("perf_event_open", libc::SYS_perf_event_open),
                ("keyctl", libc::SYS_keyctl),
                ("personality", libc::SYS_personality),
            ]
            .into_iter()
            .collect();
            Self {
                nr,
                ..Self::default()
            }
        }

        pub(in crate::sandbox) fn to_json(&self) -> String {
            serde_json::to_string(self).expect("probe config serializes")
        }
    }

    /// What the probe printed.
    #[derive(Debug)]
    pub(in crate::sandbox) struct ProbeReport(BTreeMap<String, String>);

    impl ProbeReport {
        /// Finds the `CLOVE_PROBE` line in a child's output; panics with the whole output if
        /// there is none.
        pub(in crate::sandbox) fn parse(out: &Output) -> Self {
            let stdout = String::from_utf8_lossy(&out.stdout);
            let line = marked_line(&stdout, "CLOVE_PROBE ").unwrap_or_else(|| {
                panic!(
                    "no probe output; status {:?}\nstdout:\n{stdout}\nstderr:\n{}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                )
            });
            Self(serde_json::from_str(line).expect("probe output is JSON"))
        }

        pub(in crate::sandbox) fn get(&self, key: &str) -> &str {
            self.0.get(key).map(String::as_str).unwrap_or("<missing>")
        }
    }

    /// The rest of the line after `marker`. The marker may follow the harness's own
    /// unterminated "test name ... " on the same line.
    pub(in crate::sandbox) fn marked_line<'a>(stdout: &'a str, marker: &str) -> Option<&'a str> {
        stdout
            .lines()
            .find_map(|l| l.find(marker).map(|i| &l[i + marker.len()..]))
    }

    /// The child role this process was re-executed for, if any.
    pub(in crate::sandbox) fn child_role(var: &str) -> Option<String> {
        std::env::var(var).ok()
    }

    /// Re-executes this test binary with only `test` selected and `env` added, so that the
    /// test takes its child role in a fresh process, and returns its output. The child leads
    /// its own process group; whatever is left of the group when it exits (a probe's
    /// grandchildren) is killed, and so is all of it after a timeout or a panic here.
    pub(in crate::sandbox) fn rerun_as_child(test: &str, env: &[(&str, String)]) -> Output {
        let exe = std::env::current_exe().expect("current_exe");
        let mut child = Command::new(exe)
            .args(["--exact", test, "--nocapture", "--test-threads=1"])
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("spawn the test binary");
        let pid = Pid::from_raw(child.id() as i32);
        let guard = GroupGuard(pid);

        let mut stdout = child.stdout.take().expect("stdout piped");
        let mut stderr = child.stderr.take().expect("stderr piped");
        let out_reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = stdout.read_to_end(&mut buf);
            buf
        });
        let err_reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = stderr.read_to_end(&mut buf);
            buf
        });

        // Wait for the exit without reaping: the zombie keeps the pid, and with it the
        // process group id, ours while we kill the rest of the group.
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut timed_out = false;
        loop {
            let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT | WaitPidFlag::WNOHANG;
            match waitid(Id::Pid(pid), flags).expect("waitid") {
                WaitStatus::StillAlive if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                WaitStatus::StillAlive => {
                    timed_out = true;
                    break;
                }
                _ => break,
            }
        }
        let _ = kill(Pid::from_raw(-pid.as_raw()), Signal::SIGKILL);
        let status = child.wait().expect("reap the child");
        std::mem::forget(guard);
        let stdout = out_reader.join().expect("stdout reader");
        let stderr = err_reader.join().expect("stderr reader");
        let out = Output {
            status,
            stdout,
            stderr,
        };
        assert!(!timed_out, "child {test} timed out: {out:?}");
        out
    }

    /// Kills a child's process group and reaps the child if the parent panics before it
    /// could.
    struct GroupGuard(Pid);

    impl Drop for GroupGuard {
        fn drop(&mut self) {
            let _ = kill(Pid::from_raw(-self.0.as_raw()), Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(self.0, None);
        }
    }

    /// What the lock_down child role does before exec'ing the probe.
    #[derive(Debug, serde::Serialize, serde::Deserialize)]
    enum Plan {
        /// The whole recipe.
        LockDown(Lockdown),
        /// Only the /proc fallback of the fd step.
        CloexecViaProc,
        /// Nothing: the control for the fd step.
        Nothing,
    }

    #[derive(Debug, serde::Serialize, serde::Deserialize)]
    struct ChildPlan {
        plan: Plan,
        probe: serde_json::Value,
    }

    const CHILD_VAR: &str = "CLOVE_LOCKDOWN_CHILD";

    /// The child role: leak an fd, lock down (printing `CLOVE_APPLIED` or
    /// `CLOVE_LOCKDOWN_ERROR`), exec the probe. Returns false in the parent.
    fn lockdown_child() -> bool {
        let Some(plan) = child_role(CHILD_VAR) else {
            return false;
        };
        let plan: ChildPlan = serde_json::from_str(&plan).expect("child plan is JSON");
        let mut probe = plan.probe;
        // An fd without CLOEXEC, as a careless parent would leave one.
        // SAFETY: a NUL-terminated path and plain flags.
        let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY) };
        assert!(fd > 2, "open /dev/null: {}", io::Error::last_os_error());
        probe["leak_fd"] = fd.into();
        let cwd = probe["write_dir"].as_str().unwrap_or("/").to_string();
        // An inheritable and an ambient capability, as a careless parent would leave them:
        // the uid switch keeps the inheritable set, so only the explicit clear removes it.
        if nix::unistd::geteuid().is_root() {
            use caps::{CapSet, Capability};
            caps::raise(None, CapSet::Inheritable, Capability::CAP_NET_BIND_SERVICE)
                .expect("raise inheritable");
            caps::raise(None, CapSet::Ambient, Capability::CAP_NET_BIND_SERVICE)
                .expect("raise ambient");
        }

        match &plan.plan {
            Plan::LockDown(l) => match lock_down(l) {
                Ok(applied) => println!(
                    "CLOVE_APPLIED {}",
                    serde_json::to_string(&applied).expect("applied serializes")
                ),
                Err(e) => {
                    println!("CLOVE_LOCKDOWN_ERROR {e}");
                    std::process::exit(97);
                }
            },
            Plan::CloexecViaProc => mark_fds_cloexec_via_proc().expect("mark fds via /proc"),
            Plan::Nothing => {}
        }
        let err = Command::new(PYTHON)
            .args(["-I", "-c", PROBE_PY])
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("LANG", "C.UTF-8")
            .env("HOME", &cwd)
            .env("CLOVE_PROBE_CONFIG", probe.to_string())
            .current_dir(&cwd)
            .exec();
        println!("CLOVE_EXEC_ERROR {err}");
        std::process::exit(98);
    }

    /// Temp dirs for the Landlock probes, owned by the test uid so that only Landlock stands
    /// between the agent and them. Removed on drop.
    struct Dirs {
        _base: tempfile::TempDir,
        write: PathBuf,
        outside: PathBuf,
        canary: PathBuf,
    }

    fn dirs() -> Dirs {
        dirs_for_uid(Some(TEST_ID))
    }

    /// `owner`: who gets the write and outside dirs (`None`: left to us, for tests that need
    /// no root).
    fn dirs_for_uid(owner: Option<u32>) -> Dirs {
        let base = tempfile::Builder::new()
            .prefix("clove-lockdown-")
            .tempdir_in("/tmp")
            .expect("tempdir");
        std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod base");
        let write = base.path().join("write");
        let outside = base.path().join("outside");
        let canary = outside.join("canary");
        for d in [&write, &outside] {
            std::fs::create_dir(d).expect("mkdir");
            if let Some(id) = owner {
                std::os::unix::fs::chown(d, Some(id), Some(id)).expect("chown");
            }
        }
        std::fs::write(&canary, "canary").expect("write canary");
        std::fs::set_permissions(&canary, std::fs::Permissions::from_mode(0o644))
            .expect("chmod canary");
        Dirs {
            _base: base,
            write,
            outside,
            canary,
        }
    }

    fn lockdown(d: &Dirs, seccomp: bool, landlock: bool) -> Lockdown {
        // A missing path (skipped) and a file (file rights only) among the trees.
        let read = [
            "/usr",
            "/lib",
            "/lib64",
            "/bin",
            "/etc",
            "/proc",
            "/dev",
            "/nonexistent-clove-path",
            "/etc/passwd",
        ];
        Lockdown {
            uid: TEST_ID,
            gid: TEST_ID,
            rlimits: Rlimits {
                nofile: 512,
                core: 0,
            },
            landlock: landlock.then(|| LandlockPaths {
                read: read.iter().map(PathBuf::from).collect(),
                write: vec![d.write.clone()],
            }),
            seccomp,
        }
    }

    struct Run {
        applied: Option<Applied>,
        error: Option<String>,
        report: Option<ProbeReport>,
    }

    fn run_child(test: &str, d: &Dirs, plan: Plan) -> Run {
        let mut probe = ProbeConfig::new();
        probe.write_dir = Some(d.write.clone());
        probe.outside_dir = Some(d.outside.clone());
        probe.canary = Some(d.canary.clone());
        let plan = ChildPlan {
            plan,
            probe: serde_json::from_str(&probe.to_json()).expect("config is JSON"),
        };
        let out = rerun_as_child(
            test,
            &[(CHILD_VAR, serde_json::to_string(&plan).expect("plan"))],
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let applied = marked_line(&stdout, "CLOVE_APPLIED ")
            .map(|j| serde_json::from_str(j).expect("applied is JSON"));
        let error = marked_line(&stdout, "CLOVE_LOCKDOWN_ERROR ").map(str::to_string);
        let report = error.is_none().then(|| ProbeReport::parse(&out));
        Run {
            applied,
            error,
            report,
        }
    }

    fn skip_unless_root(test: &str) -> bool {
        if nix::unistd::geteuid().is_root() {
            return false;
        }
        eprintln!("SKIP: {test}: needs root (lock_down switches uid and drops capabilities)");
        true
    }

    fn locked_down_report(test: &str) -> ProbeReport {
        let d = dirs();
        let run = run_child(test, &d, Plan::LockDown(lockdown(&d, true, true)));
        assert_eq!(run.error, None);
        run.report.expect("probe ran")
    }

    #[test]
    fn lock_down_layers_show_in_proc_status() {
        const TEST: &str = "sandbox::privileges::tests::lock_down_layers_show_in_proc_status";
        if lockdown_child() || skip_unless_root(TEST) {
            return;
        }
        let r = locked_down_report(TEST);
        assert_eq!(r.get("status.Seccomp"), "2");
        assert_eq!(r.get("status.NoNewPrivs"), "1");
        for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
            assert_eq!(r.get(&format!("status.{set}")), "0000000000000000", "{set}");
        }
        let id = TEST_ID.to_string();
        let ids = [id.as_str(); 4].join(" ");
        assert_eq!(r.get("status.Uid"), ids);
        assert_eq!(r.get("status.Gid"), ids);
        assert_eq!(r.get("status.Groups"), id);
        assert_eq!(r.get("securebits"), AGENT_SECUREBITS.to_string());
        assert_eq!(r.get("rlimit_nofile"), "512,512");
        assert_eq!(r.get("rlimit_core"), "0,0");
        assert_eq!(
            r.get("leaked_fd"),
            "EBADF",
            "an fd above 2 reached the agent"
        );
        // Not made non-dumpable (see the module docs): /proc/self stays the agent's own.
        assert_eq!(r.get("dumpable"), "1");
        assert_eq!(r.get("proc_self_fd"), "ok");
    }

    #[test]
    fn lock_down_keeps_threads_subprocess_and_asyncio_working() {
        const TEST: &str =
            "sandbox::privileges::tests::lock_down_keeps_threads_subprocess_and_asyncio_working";
        if lockdown_child() || skip_unless_root(TEST) {
            return;
        }
        let r = locked_down_report(TEST);
        assert_eq!(r.get("threads"), "ok");
        assert_eq!(r.get("fork"), "ok");
        assert_eq!(r.get("subprocess_true"), "ok");
        assert_eq!(r.get("subprocess_sh"), "hi");
        assert_eq!(r.get("asyncio_echo"), "ping");
        assert_eq!(r.get("personality_query"), "ok");
    }

    #[test]
    fn lock_down_denies_namespaces_mount_ptrace_and_setuid() {
        const TEST: &str =
            "sandbox::privileges::tests::lock_down_denies_namespaces_mount_ptrace_and_setuid";
        if lockdown_child() || skip_unless_root(TEST) {
            return;
        }
        let r = locked_down_report(TEST);
        for probe in [
            "unshare_newuser",
            "unshare_newns",
            "clone_newuser",
            "mount",
            "ptrace_traceme",
            "setuid0",
        ] {
            assert_eq!(r.get(probe), "EPERM", "{probe}");
        }
        assert_eq!(r.get("clone3"), "ENOSYS");
    }

    #[test]
    fn lock_down_landlock_confines_writes_to_write_dirs() {
        const TEST: &str =
            "sandbox::privileges::tests::lock_down_landlock_confines_writes_to_write_dirs";
        if lockdown_child() || skip_unless_root(TEST) {
            return;
        }
        let d = dirs();
        let run = run_child(TEST, &d, Plan::LockDown(lockdown(&d, true, true)));
        assert_eq!(run.error, None);
        let applied = run.applied.expect("lock_down reported what it applied");
        if applied.landlock == LandlockStatus::Unsupported {
            eprintln!("SKIP: {TEST}: the running kernel has no Landlock");
            return;
        }
        assert_eq!(applied.landlock, LandlockStatus::Full);
        let r = run.report.expect("probe ran");
        assert_eq!(r.get("write_inside"), "ok");
        assert!(d.write.join("inside.txt").exists());
        assert_eq!(r.get("write_outside"), "EACCES");
        assert!(!d.outside.join("escape.txt").exists());
        assert_eq!(r.get("read_canary"), "EACCES");
        assert_eq!(r.get("read_etc_passwd"), "ok");
    }

    /// The control for the tests above: with seccomp and Landlock off, the same probes get
    /// through or fail differently, so those tests do test the layers.
    #[test]
    fn lock_down_without_seccomp_and_landlock_leaves_those_doors_open() {
        const TEST: &str = "sandbox::privileges::tests::\
                            lock_down_without_seccomp_and_landlock_leaves_those_doors_open";
        if lockdown_child() || skip_unless_root(TEST) {
            return;
        }
        let d = dirs();
        let run = run_child(TEST, &d, Plan::LockDown(lockdown(&d, false, false)));
        assert_eq!(run.error, None);
        assert_eq!(run.applied.expect("applied").landlock, LandlockStatus::Off);
        let r = run.report.expect("probe ran");
        assert_eq!(r.get("status.Seccomp"), "0");
        assert_eq!(r.get("mount"), "ENOENT");
        assert_eq!(r.get("ptrace_traceme"), "ok");
        assert_eq!(r.get("clone3"), "EINVAL");
        assert_eq!(r.get("write_outside"), "ok");
        assert_eq!(r.get("read_canary"), "ok");
        // The layers that do not depend on either flag stay.
        assert_eq!(r.get("status.NoNewPrivs"), "1");
        assert_eq!(r.get("status.CapBnd"), "0000000000000000");
        assert_eq!(r.get("setuid0"), "EPERM");
    }

    #[test]
    fn lock_down_names_the_failing_step() {
        const TEST: &str = "sandbox::privileges::tests::lock_down_names_the_failing_step";
        if lockdown_child() || skip_unless_root(TEST) {
            return;
        }
        let d = dirs();
        let mut root = lockdown(&d, true, true);
        root.uid = 0;
        let run = run_child(TEST, &d, Plan::LockDown(root));
        let err = run.error.expect("uid 0 refused");
        assert!(err.starts_with("check agent ids (uid 0"), "{err}");

        // Above fs.nr_open: the very first step fails, and says so.
        let mut huge = lockdown(&d, true, true);
        huge.rlimits.nofile = u64::MAX - 1;
        let run = run_child(TEST, &d, Plan::LockDown(huge));
        let err = run.error.expect("setrlimit refused");
        assert!(err.starts_with("setrlimit RLIMIT_NOFILE"), "{err}");
    }

    #[test]
    fn cloexec_fallback_via_proc_keeps_fds_from_the_exec() {
        const TEST: &str =
            "sandbox::privileges::tests::cloexec_fallback_via_proc_keeps_fds_from_the_exec";
        if lockdown_child() {
            return;
        }
        let d = dirs_for_uid(None);
        let r = run_child(TEST, &d, Plan::CloexecViaProc)
            .report
            .expect("probe ran");
        assert_eq!(r.get("leaked_fd"), "EBADF");
    }

    /// The control for the fd assertions: with no fd step the leaked fd does reach the
    /// exec'd probe (so the probe's EBADF above is not a given).
    #[test]
    fn without_the_fd_step_a_leaked_fd_reaches_the_exec() {
        const TEST: &str =
            "sandbox::privileges::tests::without_the_fd_step_a_leaked_fd_reaches_the_exec";
        if lockdown_child() {
            return;
        }
        let d = dirs_for_uid(None);
        let r = run_child(TEST, &d, Plan::Nothing)
            .report
            .expect("probe ran");
        assert_eq!(r.get("leaked_fd"), "open");
    }
}
