//! READ and WRITE: host files, checked against the caller's permissions.
//!
//! How a path is judged, so that neither `..` nor a symlink can leave the allowed tree:
//!
//! 1. it must be absolute;
//! 2. the file (for WRITE of a new file: its directory) is opened with `O_PATH`, which lets
//!    the kernel resolve `..` and every symlink on the real tree, as the caller's identity;
//! 3. the path of what was opened is read back from `/proc/self/fd` — the canonical path of
//!    the very inode — and that path is checked against the permission globs, the blocked
//!    globs and the kernel's own blocked paths;
//! 4. the I/O goes through that same descriptor (reopened through `/proc/self/fd`, or with
//!    `openat` below the checked directory, never following a final symlink), so nothing can
//!    be swapped in between the check and the use.
//!
//! Only regular files are read or written (a FIFO or a device could block or do worse).
//!
//! Whose identity: a root operator acts as root; another operator with its own uid and gid;
//! an agent with its owner's (an agent of a non-root operator can reach no more than that
//! operator). A non-root identity is taken with `setfsuid`/`setfsgid` and the thread-level
//! `setgroups` on a thread of its own, so no other work ever runs with it.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use clove_abi::msg::{
    glob_match, Permissions, ReadReply, ReadRequest, WriteMode, WriteReply, WriteRequest,
};
use clove_abi::{ErrorCode, WireError};

use crate::kernel::{Caller, Kernel};

/// The most bytes READ returns or WRITE takes in one request.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// Paths no agent may read or write, whatever its permissions say (the kernel's state dir is
/// added to them): credentials, other users' keys, kernel interfaces and devices.
pub const BLOCKED_FOR_AGENTS: &[&str] = &[
    "/etc/shadow",
    "/etc/shadow-",
    "/etc/gshadow",
    "/etc/gshadow-",
    "/etc/sudoers",
    "/etc/sudoers.d/**",
    "/root/**",
    "/home/*/.ssh/**",
    "/proc/**",
    "/sys/**",
    "/dev/**",
    "/boot/**",
];

/// Who a file operation acts as, and what bounds it.
#[derive(Debug, Clone)]
struct Actor {
    /// The identity the file system sees.
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
    /// The caller's permissions and the kernel's blocked paths, for agents; `None` for
    /// operators, whom only the host's own file permissions bound.
    rules: Option<(Permissions, Vec<String>)>,
    /// Who, for messages: `agent 7`, `operator 1000`.
    who: String,
}

fn denied(why: impl std::fmt::Display) -> WireError {
    WireError::new(ErrorCode::PermissionDenied, why.to_string())
}

fn invalid(why: impl std::fmt::Display) -> WireError {
    WireError::invalid_request(why)
}

/// The supplementary groups of process `pid` (empty when it cannot be read).
pub(crate) fn groups_of(pid: Option<i32>) -> Vec<u32> {
    let Some(pid) = pid else { return Vec::new() };
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("Groups:")).map(|g| {
                g.split_whitespace()
                    .filter_map(|n| n.parse().ok())
                    .collect()
            })
        })
        .unwrap_or_default()
}

fn actor(kernel: &Kernel, caller: &Caller) -> Result<Actor, WireError> {
    if !caller.agent {
        return Ok(Actor {
            uid: caller.uid,
            gid: caller.gid,
            groups: groups_of(caller.pid),
            rules: None,
            who: format!("operator {}", caller.id),
        });
    }
    let agent = kernel
        .agents
        .get(caller.id)
        .ok_or_else(|| WireError::new(ErrorCode::NotFound, "the calling agent has exited"))?;
    let mut blocked: Vec<String> = BLOCKED_FOR_AGENTS.iter().map(|s| (*s).to_owned()).collect();
    // The state dir, canonical already (the agents' directory lies in it); `dir/**` matches
    // the directory itself too.
    if let Some(state_dir) = kernel.agents.host.dir.parent() {
        blocked.push(format!("{}/**", state_dir.to_string_lossy()));
    }
    // An agent acts with its owner's identity: root's agents as root, another operator's
    // with that operator's uid (and primary gid: its groups are not known any more).
    let gid = if agent.owner_uid == 0 {
        0
    } else {
        nix::unistd::User::from_uid(agent.owner_uid.into())
            .ok()
            .flatten()
            .map(|u| u.gid.as_raw())
            .unwrap_or(agent.owner_uid)
    };
    Ok(Actor {
        uid: agent.owner_uid,
        gid,
        groups: Vec::new(),
        rules: Some((agent.permissions(), blocked)),
        who: format!("agent {}", agent.id),
    })
}

/// Runs `f` with `actor`'s file-system identity: on the calling blocking thread for root,
/// on a thread of its own otherwise (the identity never outlives `f`).
async fn as_actor<T: Send + 'static>(
    actor: Actor,
    f: impl FnOnce(&Actor) -> Result<T, WireError> + Send + 'static,
) -> Result<T, WireError> {
    let internal = |e: &dyn std::fmt::Display| WireError::new(ErrorCode::Internal, e.to_string());
    if actor.uid == 0 && actor.gid == 0 {
        return tokio::task::spawn_blocking(move || f(&actor))
            .await
            .map_err(|e| internal(&e))?;
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("clove-fs-as".into())
        .spawn(move || {
            // SAFETY: setgroups(2), setfsgid(2), setfsuid(2) as raw syscalls change the
            // credentials of this thread only; the thread ends right after `f`.
            let switched = unsafe {
                libc::syscall(
                    libc::SYS_setgroups,
                    actor.groups.len(),
                    actor.groups.as_ptr(),
                ) == 0
                    && {
                        libc::syscall(libc::SYS_setfsgid, actor.gid);
                        libc::syscall(libc::SYS_setfsgid, u32::MAX) as u32 == actor.gid
                    }
                    && {
                        libc::syscall(libc::SYS_setfsuid, actor.uid);
                        libc::syscall(libc::SYS_setfsuid, u32::MAX) as u32 == actor.uid
                    }
            };
            let result = if switched {
                f(&actor)
            } else {
                Err(WireError::new(
                    ErrorCode::Internal,
                    format!("cannot act as uid {} gid {}", actor.uid, actor.gid),
                ))
            };
            let _ = tx.send(result);
        })
        .map_err(|e| internal(&e))?;
    rx.await
        .map_err(|_| WireError::new(ErrorCode::Internal, "file operation thread died"))?
}

/// The absolute, `..`-free spelling of `path` for messages and lexical checks; refuses
/// relative paths and NUL bytes.
fn absolute(path: &str) -> Result<PathBuf, WireError> {
    if path.as_bytes().contains(&0) {
        return Err(invalid("path: contains a NUL byte"));
    }
    let p = Path::new(path);
    if !p.is_absolute() {
        return Err(invalid(format!("path {path:?}: must be absolute")));
    }
    Ok(p.to_path_buf())
}

fn cstr(p: &OsStr) -> Result<CString, WireError> {
    CString::new(p.as_bytes()).map_err(|_| invalid("path: contains a NUL byte"))
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> WireError {
    let code = match e.kind() {
        std::io::ErrorKind::NotFound => ErrorCode::NotFound,
        std::io::ErrorKind::PermissionDenied => ErrorCode::PermissionDenied,
        std::io::ErrorKind::AlreadyExists => ErrorCode::AlreadyExists,
        _ => ErrorCode::InvalidRequest,
    };
    WireError::new(code, format!("{what} {}: {e}", path.display()))
}

/// `open(2)` (or `openat` below `dir`) with `flags`, as an owned descriptor.
fn open_at(dir: Option<&OwnedFd>, path: &OsStr, flags: i32, mode: u32) -> std::io::Result<OwnedFd> {
    let c = CString::new(path.as_bytes()).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    let dirfd = dir.map_or(libc::AT_FDCWD, |d| d.as_raw_fd());
    // SAFETY: a valid NUL-terminated path and flags; the returned descriptor is owned here.
    let fd = unsafe { libc::openat(dirfd, c.as_ptr(), flags | libc::O_CLOEXEC, mode) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by openat and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The canonical path of what `fd` refers to.
fn path_of(fd: &OwnedFd) -> std::io::Result<PathBuf> {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Reopens an `O_PATH` descriptor for I/O (the same inode, whatever the path now names).
fn reopen(fd: &OwnedFd, flags: i32) -> std::io::Result<File> {
    let proc = format!("/proc/self/fd/{}", fd.as_raw_fd());
    open_at(None, OsStr::new(&proc), flags, 0).map(File::from)
}

/// Fails unless `actor` may touch `canonical` (`write`: for writing).
fn check(actor: &Actor, canonical: &Path, write: bool, asked: &Path) -> Result<(), WireError> {
    let Some((perms, blocked)) = &actor.rules else {
        return Ok(());
    };
    let text = canonical.to_string_lossy();
    let shown = if canonical == asked {
        format!("{}", asked.display())
    } else {
        format!("{} (which is {text})", asked.display())
    };
    if let Some(g) = blocked.iter().find(|g| glob_match(g, &text)) {
        return Err(denied(format!(
            "{} may not {} {shown}: blocked by the kernel ({g})",
            actor.who,
            if write { "write" } else { "read" }
        )));
    }
    let allowed = if write {
        perms.allows_write(&text)
    } else {
        perms.allows_read(&text)
    };
    if !allowed {
        let why = match (write, perms.can_write, perms.can_read) {
            (true, false, _) => "can_write is off".to_owned(),
            (false, _, false) => "can_read is off".to_owned(),
            _ => "outside its filesystem permissions".to_owned(),
        };
        return Err(denied(format!(
            "{} may not {} {shown}: {why}",
            actor.who,
            if write { "write" } else { "read" }
        )));
    }
    Ok(())
}

/// Fails unless `fd` (an `O_PATH` descriptor is fine) is a regular file; its size.
fn regular(fd: &impl AsRawFd, path: &Path) -> Result<u64, WireError> {
    // SAFETY: `stat` is plain old data; all zeroes is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat(2) on a valid descriptor into a stat buffer we own.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(io_error("stat", path, std::io::Error::last_os_error()));
    }
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(invalid(format!("{}: not a regular file", path.display())));
    }
    Ok(st.st_size as u64)
}

/// READ: the file's bytes from `offset`, at most `limit` (and at most [`MAX_FILE_BYTES`]).
pub async fn read(
    kernel: &Kernel,
    caller: &Caller,
    req: ReadRequest,
) -> Result<ReadReply, WireError> {
    let actor = actor(kernel, caller)?;
    let path = absolute(&req.path)?;
    as_actor(actor, move |actor| {
        let fd = open_at(None, path.as_os_str(), libc::O_PATH, 0)
            .map_err(|e| io_error("read", &path, e))?;
        let canonical = path_of(&fd).map_err(|e| io_error("resolve", &path, e))?;
        check(actor, &canonical, false, &path)?;
        let len = regular(&fd, &path)?;
        let mut file = reopen(&fd, libc::O_RDONLY).map_err(|e| io_error("read", &path, e))?;
        let offset = req.offset.unwrap_or(0);
        let available = len.saturating_sub(offset);
        let want = req.limit.map_or(available, |l| l.min(available));
        if want > MAX_FILE_BYTES {
            return Err(WireError::new(
                ErrorCode::LimitExceeded,
                format!(
                    "read {}: {want} bytes, more than the {MAX_FILE_BYTES} one READ returns; read it in parts with offset and limit",
                    path.display()
                ),
            ));
        }
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| io_error("read", &path, e))?;
        let mut buf = Vec::with_capacity(want as usize);
        file.take(want)
            .read_to_end(&mut buf)
            .map_err(|e| io_error("read", &path, e))?;
        let content = String::from_utf8_lossy(&buf).into_owned();
        Ok(ReadReply {
            success: true,
            size: content.len() as u64,
            content,
        })
    })
    .await
}

/// WRITE: replaces the file's content, or appends to it (`mode: append`); creates the file,
/// and with `create_dirs` its missing parent directories. Durable (fsync) when it answers.
pub async fn write(
    kernel: &Kernel,
    caller: &Caller,
    req: WriteRequest,
) -> Result<WriteReply, WireError> {
    let actor = actor(kernel, caller)?;
    let path = absolute(&req.path)?;
    if req.content.len() as u64 > MAX_FILE_BYTES {
        return Err(WireError::new(
            ErrorCode::LimitExceeded,
            format!(
                "write {}: {} bytes, more than the {MAX_FILE_BYTES} one WRITE takes",
                path.display(),
                req.content.len()
            ),
        ));
    }
    as_actor(actor, move |actor| write_as(actor, &path, &req)).await
}

fn write_as(actor: &Actor, path: &Path, req: &WriteRequest) -> Result<WriteReply, WireError> {
    let name = match path.components().next_back() {
        Some(Component::Normal(n)) => n.to_owned(),
        _ => return Err(invalid(format!("path {}: names no file", path.display()))),
    };
    let parent = path.parent().unwrap_or(Path::new("/"));
    let dir = open_dir(actor, parent, req.create_dirs.unwrap_or(false), path)?;
    let dir_path = path_of(&dir).map_err(|e| io_error("resolve", parent, e))?;
    let mode_flags = match req.mode {
        WriteMode::Write => libc::O_WRONLY | libc::O_TRUNC,
        WriteMode::Append => libc::O_WRONLY | libc::O_APPEND,
    };
    // An existing file (or a symlink to one): judged by what it really is.
    let mut file = match open_at(Some(&dir), &name, libc::O_PATH, 0) {
        Ok(fd) => {
            let canonical = path_of(&fd).map_err(|e| io_error("resolve", path, e))?;
            check(actor, &canonical, true, path)?;
            regular(&fd, path)?;
            reopen(&fd, mode_flags).map_err(|e| io_error("write", path, e))?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // A dangling symlink is refused by O_NOFOLLOW | O_EXCL below.
            check(actor, &dir_path.join(&name), true, path)?;
            let fd = open_at(
                Some(&dir),
                &name,
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
                0o644,
            )
            .map_err(|e| io_error("create", path, e))?;
            File::from(fd)
        }
        Err(e) => return Err(io_error("write", path, e)),
    };
    file.write_all(req.content.as_bytes())
        .and_then(|()| file.sync_data())
        .map_err(|e| io_error("write", path, e))?;
    // SAFETY: fsync(2) on a valid directory descriptor: the new entry is durable too.
    unsafe { libc::fsync(dir.as_raw_fd()) };
    Ok(WriteReply {
        success: true,
        bytes_written: req.content.len() as u64,
    })
}

/// Opens directory `dir` (`O_PATH`), creating what is missing of it when `create` is set;
/// every directory created is checked as a write below the deepest existing one first.
fn open_dir(actor: &Actor, dir: &Path, create: bool, target: &Path) -> Result<OwnedFd, WireError> {
    let flags = libc::O_PATH | libc::O_DIRECTORY;
    match open_at(None, dir.as_os_str(), flags, 0) {
        Ok(fd) => return Ok(fd),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {}
        Err(e) => return Err(io_error("open directory", dir, e)),
    }
    // The deepest ancestor that exists, and the names to create below it.
    let mut missing: Vec<&OsStr> = Vec::new();
    let mut base = dir;
    let fd = loop {
        match base.components().next_back() {
            Some(Component::Normal(n)) => missing.push(n),
            _ => {
                return Err(invalid(format!(
                    "path {}: `.` and `..` cannot be created",
                    target.display()
                )))
            }
        }
        base = base.parent().unwrap_or(Path::new("/"));
        match open_at(None, base.as_os_str(), flags, 0) {
            Ok(fd) => break fd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_error("open directory", base, e)),
        }
    };
    missing.reverse();
    let mut canonical = path_of(&fd).map_err(|e| io_error("resolve", base, e))?;
    for n in &missing {
        canonical.push(n);
    }
    check(actor, &canonical, true, dir)?;
    let mut cur = fd;
    for n in missing {
        let c = cstr(n)?;
        // SAFETY: mkdirat(2) below a directory descriptor we own, with a valid name.
        if unsafe { libc::mkdirat(cur.as_raw_fd(), c.as_ptr(), 0o755) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::AlreadyExists {
                return Err(io_error("create directory", dir, e));
            }
        }
        // Never through a symlink someone put there meanwhile.
        cur = open_at(Some(&cur), n, flags | libc::O_NOFOLLOW, 0)
            .map_err(|e| io_error("open directory", dir, e))?;
    }
    Ok(cur)
}
