//! The agent's root file system, built by init inside its fresh mount namespace.
//!
//! The caller decides what the agent sees ([`RootPlan`]: which host paths are bound where,
//! which small files are written); this module owns how: a tmpfs root that holds only mount
//! points and those files, read-only binds, private `/tmp` and `/dev/shm`, a fresh `/proc`, a
//! minimal `/dev`, then `pivot_root` and a read-only remount of the new root. Nothing here
//! ever writes to the host: mount points are created only in tmpfs the sandbox owns, never
//! through a bind (a plan that would need that is refused), and every mount lives in the
//! sandbox's own mount namespace, made private first so nothing propagates back.
//!
//! Every failure names the step and the path (`bind /data -> /mnt/data: no such file or
//! directory`), so the spawn error the caller sees is enough to act on.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use super::launch::os_text;

/// What the agent's root contains. Inside paths are absolute paths as the agent sees them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RootPlan {
    /// An empty host directory the caller created (e.g. `<state>/agents/<id>/root`); the
    /// sandbox mounts its tmpfs root over it in its own mount namespace, so the host copy
    /// stays empty.
    pub new_root: PathBuf,
    /// Host paths to bind, in order. A target nested in an earlier bind must already exist
    /// in that bind's source: mount points are never created through a bind.
    pub binds: Vec<BindMount>,
    /// Small files written into the root tmpfs (`/etc/passwd`, `/etc/hostname`, ...); they
    /// may not lie inside a bind.
    pub files: Vec<NewFile>,
    /// Size in bytes of each of the private `/tmp` and `/dev/shm` tmpfs (at least one page).
    pub tmp_size: u64,
}

/// One bind mount: a directory or a single file (a socket, a script).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BindMount {
    /// Host path (symlinks are followed).
    pub source: PathBuf,
    /// Inside path.
    pub target: PathBuf,
    /// Read-write; otherwise read-only, nosuid and nodev (recursively where the running
    /// kernel has `mount_setattr`).
    pub writable: bool,
    /// Skip the bind when the source does not exist instead of failing the spawn.
    pub optional: bool,
}

/// A file created in the root tmpfs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NewFile {
    /// Inside path.
    pub target: PathBuf,
    /// The whole content.
    pub contents: String,
    /// Permission bits (e.g. `0o644`).
    pub mode: u32,
}

/// A failure while building the root.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// A system call failed; `what` names the step and the path.
    #[error("{what}: {}", os_text(source))]
    Io {
        /// `bind /data -> /mnt/data`, `mount tmpfs on /tmp`, ...
        what: String,
        /// The cause.
        source: io::Error,
    },
    /// The plan itself cannot be carried out.
    #[error("{0}")]
    Plan(String),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> MountError {
    let what = what.into();
    move |source| MountError::Io { what, source }
}

fn nix_err(what: impl Into<String>) -> impl FnOnce(nix::errno::Errno) -> MountError {
    let what = what.into();
    move |e| MountError::Io {
        what,
        source: io::Error::from(e),
    }
}

/// The devices bound from the host's `/dev`; all harmless to share (`tty` only answers
/// ENXIO without a controlling terminal).
const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// The standard `/dev` symlinks into `/proc/self`.
const DEV_LINKS: [(&str, &str); 5] = [
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
    ("ptmx", "pts/ptmx"),
];

/// Builds the root described by `plan` and pivots into it; the caller's cwd is `/` after.
///
/// Must run in a fresh mount namespace (it mounts freely) as PID 1 of a fresh pid namespace
/// (the new `/proc` shows that namespace).
pub fn build_root(plan: &RootPlan) -> Result<(), MountError> {
    check_plan(plan)?;
    let root = &plan.new_root;

    // Hosts with shared propagation (systemd's default) would otherwise receive every mount
    // below, and pivot_root refuses a shared root.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(nix_err("make / private"))?;

    // The root itself: a tmpfs holding only mount points and the plan's files. It becomes
    // read-only once everything is in place.
    let files_size: u64 = plan.files.iter().map(|f| f.contents.len() as u64).sum();
    let root_opts = format!("mode=0755,size={}", (1 << 20) + files_size);
    mount(
        Some("tmpfs"),
        root,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(root_opts.as_str()),
    )
    .map_err(nix_err(format!("mount tmpfs on {}", root.display())))?;

    // A fresh /proc: this process is PID 1 of the new pid namespace, so it lists only the
    // sandbox's processes.
    let proc_dir = make_dir(root, Path::new("/proc"))?;
    mount(
        Some("proc"),
        &proc_dir,
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(nix_err("mount proc on /proc"))?;

    build_dev(root, plan.tmp_size)?;

    let tmp = make_dir(root, Path::new("/tmp"))?;
    mount_tmp(&tmp, "/tmp", plan.tmp_size)?;

    for (i, bind) in plan.binds.iter().enumerate() {
        bind_one(root, bind, &plan.binds[..i])?;
    }

    for file in &plan.files {
        write_file(root, file)?;
    }

    // /dev gets no new entries after this point.
    remount_readonly(&inside(root, Path::new("/dev")), false, "/dev")?;

    pivot(root)?;

    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID,
        None::<&str>,
    )
    .map_err(nix_err("remount / read-only"))?;
    Ok(())
}

/// Refuses plans that could not be built safely before touching anything.
fn check_plan(plan: &RootPlan) -> Result<(), MountError> {
    if !plan.new_root.is_absolute() {
        return Err(MountError::Plan(format!(
            "new root {} is not an absolute path",
            plan.new_root.display()
        )));
    }
    if plan.tmp_size < 4096 {
        // tmpfs reads size=0 as "no limit".
        return Err(MountError::Plan(format!(
            "tmp size {} is below one page",
            plan.tmp_size
        )));
    }
    let targets = plan
        .binds
        .iter()
        .map(|b| ("bind target", &b.target))
        .chain(plan.files.iter().map(|f| ("file", &f.target)));
    for (kind, target) in targets {
        check_inside_path(kind, target)?;
    }
    for file in &plan.files {
        if let Some(bind) = plan
            .binds
            .iter()
            .find(|b| file.target.starts_with(&b.target))
        {
            return Err(MountError::Plan(format!(
                "file {} lies inside the bind at {}: bind single files instead",
                file.target.display(),
                bind.target.display()
            )));
        }
    }
    Ok(())
}

/// Inside paths must be absolute, below `/`, without `..`, and not where the sandbox mounts
/// its own file systems.
fn check_inside_path(kind: &str, target: &Path) -> Result<(), MountError> {
    let bad = !target.is_absolute()
        || target.components().any(|c| c == Component::ParentDir)
        || target.components().count() < 2;
    if bad {
        return Err(MountError::Plan(format!(
            "{kind} {} must be an absolute path below / without ..",
            target.display()
        )));
    }
    for reserved in ["/proc", "/dev"] {
        if target.starts_with(reserved) {
            return Err(MountError::Plan(format!(
                "{kind} {} lies in {reserved}, which the sandbox builds itself",
                target.display()
            )));
        }
    }
    Ok(())
}

/// The host path of inside path `target` under `root` (before the pivot).
fn inside(root: &Path, target: &Path) -> PathBuf {
    let relative: PathBuf = target
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect();
    root.join(relative)
}

/// Creates inside directory `target` (and its parents) in the root tmpfs.
fn make_dir(root: &Path, target: &Path) -> Result<PathBuf, MountError> {
    let path = inside(root, target);
    std::fs::create_dir_all(&path).map_err(io_err(format!("create {}", target.display())))?;
    Ok(path)
}

fn mount_tmp(path: &Path, shown: &str, size: u64) -> Result<(), MountError> {
    let opts = format!("mode=1777,size={size}");
    mount(
        Some("tmpfs"),
        path,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(opts.as_str()),
    )
    .map_err(nix_err(format!("mount tmpfs on {shown}")))
}

/// A minimal /dev: a small tmpfs with the harmless host devices bound in, the usual
/// symlinks, a private devpts instance and a private /dev/shm.
fn build_dev(root: &Path, tmp_size: u64) -> Result<(), MountError> {
    let dev = make_dir(root, Path::new("/dev"))?;
    mount(
        Some("tmpfs"),
        &dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("mode=0755,size=65536"),
    )
    .map_err(nix_err("mount tmpfs on /dev"))?;
    for name in DEVICES {
        let source = Path::new("/dev").join(name);
        let target = dev.join(name);
        let what = format!("bind {} -> /dev/{name}", source.display());
        create_file(&target).map_err(io_err(what.clone()))?;
        mount(
            Some(&source),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(nix_err(what))?;
    }
    for (name, to) in DEV_LINKS {
        std::os::unix::fs::symlink(to, dev.join(name))
            .map_err(io_err(format!("symlink /dev/{name} -> {to}")))?;
    }
    let pts = dev.join("pts");
    std::fs::create_dir(&pts).map_err(io_err("create /dev/pts"))?;
    mount(
        Some("devpts"),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )
    .map_err(nix_err("mount devpts on /dev/pts"))?;
    let shm = dev.join("shm");
    std::fs::create_dir(&shm).map_err(io_err("create /dev/shm"))?;
    mount_tmp(&shm, "/dev/shm", tmp_size)
}

fn create_file(path: &Path) -> io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(path)
        .map(drop)
}

/// One bind: check the source, create the mount point (in tmpfs only), bind, and make it
/// read-only unless asked otherwise.
fn bind_one(root: &Path, bind: &BindMount, earlier: &[BindMount]) -> Result<(), MountError> {
    let what = format!(
        "bind {} -> {}",
        bind.source.display(),
        bind.target.display()
    );
    let meta = match std::fs::metadata(&bind.source) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound && bind.optional => return Ok(()),
        Err(e) => return Err(io_err(what)(e)),
    };
    let target = inside(root, &bind.target);
    // symlink_metadata: a dangling or foreign symlink at the mount point is not "present".
    if std::fs::symlink_metadata(&target).is_err() {
        // Creating it under an earlier bind would write into the host file system.
        if let Some(outer) = earlier
            .iter()
            .rev()
            .find(|b| bind.target.starts_with(&b.target))
        {
            return Err(MountError::Plan(format!(
                "{what}: the mount point does not exist inside the bind at {} and is never \
                 created there",
                outer.target.display()
            )));
        }
        let made = if meta.is_dir() {
            std::fs::create_dir_all(&target)
        } else {
            match target.parent() {
                Some(parent) => std::fs::create_dir_all(parent),
                None => Ok(()),
            }
            .and_then(|()| create_file(&target))
        };
        made.map_err(io_err(format!(
            "create mount point {}",
            bind.target.display()
        )))?;
    }
    mount(
        Some(&bind.source),
        &target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(nix_err(what.clone()))?;
    if !bind.writable {
        remount_readonly(&target, true, &format!("{}", bind.target.display()))?;
    }
    Ok(())
}

/// Makes the mount at `path` read-only, nosuid and nodev; with `recursive`, its submounts
/// too where `mount_setattr` exists (Linux 5.12+), else only the top mount.
fn remount_readonly(path: &Path, recursive: bool, shown: &str) -> Result<(), MountError> {
    let what = format!("remount {shown} read-only");
    if recursive {
        match mount_setattr_readonly(path) {
            Ok(()) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {}
            Err(e) => return Err(io_err(what)(e)),
        }
    }
    mount(
        None::<&str>,
        path,
        None::<&str>,
        MsFlags::MS_REMOUNT
            | MsFlags::MS_BIND
            | MsFlags::MS_RDONLY
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV,
        None::<&str>,
    )
    .map_err(nix_err(what))
}

/// `struct mount_attr` from linux/mount.h (version 0, 32 bytes).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;

fn mount_setattr_readonly(path: &Path) -> io::Result<()> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: mount_setattr(2) reads a NUL-terminated path and `size` bytes of `attr`, both
    // alive for the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            c_path.as_ptr(),
            (libc::AT_RECURSIVE | libc::AT_SYMLINK_NOFOLLOW) as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn write_file(root: &Path, file: &NewFile) -> Result<(), MountError> {
    let path = inside(root, &file.target);
    let what = format!("write {}", file.target.display());
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io_err(what.clone()))?;
    }
    std::fs::write(&path, &file.contents).map_err(io_err(what.clone()))?;
    // Explicitly, so the umask does not decide.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(file.mode))
        .map_err(io_err(what))
}

/// Swaps the root for `root`, then drops every host mount from this namespace.
fn pivot(root: &Path) -> Result<(), MountError> {
    let old = root.join(".old");
    std::fs::create_dir(&old).map_err(io_err("create /.old"))?;
    nix::unistd::pivot_root(root, &old)
        .map_err(nix_err(format!("pivot_root to {}", root.display())))?;
    nix::unistd::chdir("/").map_err(nix_err("chdir /"))?;
    umount2("/.old", MntFlags::MNT_DETACH).map_err(nix_err("detach the old root"))?;
    std::fs::remove_dir("/.old").map_err(io_err("remove /.old"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> RootPlan {
        RootPlan {
            new_root: "/var/lib/clove/agents/a-1/root".into(),
            binds: vec![BindMount {
                source: "/usr".into(),
                target: "/usr".into(),
                writable: false,
                optional: false,
            }],
            files: vec![],
            tmp_size: 1 << 20,
        }
    }

    fn refused(p: &RootPlan) -> String {
        match check_plan(p) {
            Err(MountError::Plan(msg)) => msg,
            other => panic!("expected a plan error, got {other:?}"),
        }
    }

    #[test]
    fn a_sound_plan_passes() {
        check_plan(&plan()).expect("valid");
    }

    #[test]
    fn files_inside_a_bind_are_refused() {
        let mut p = plan();
        p.files.push(NewFile {
            target: "/usr/passwd".into(),
            contents: String::new(),
            mode: 0o644,
        });
        assert_eq!(
            refused(&p),
            "file /usr/passwd lies inside the bind at /usr: bind single files instead"
        );
    }

    #[test]
    fn escaping_and_reserved_targets_are_refused() {
        for target in ["/", "etc", "/etc/../..", "/proc/sys", "/dev/sda"] {
            let mut p = plan();
            p.binds[0].target = target.into();
            let msg = refused(&p);
            assert!(msg.starts_with(&format!("bind target {target} ")), "{msg}");
        }
    }

    #[test]
    fn a_zero_tmp_size_is_refused_not_unlimited() {
        let mut p = plan();
        p.tmp_size = 0;
        assert_eq!(refused(&p), "tmp size 0 is below one page");
    }

    #[test]
    fn inside_paths_map_under_the_root() {
        assert_eq!(
            inside(Path::new("/r"), Path::new("/etc/passwd")),
            PathBuf::from("/r/etc/passwd")
        );
    }
}
