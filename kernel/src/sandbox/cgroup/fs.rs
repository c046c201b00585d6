//! The host boundary of the cgroup layer: every file system access and every signal to a
//! cgroup member goes through [`CgroupFs`], so the logic above it runs unchanged against
//! [`HostFs`] (the real `/sys/fs/cgroup`) and [`super::FakeFs`].
//!
//! Errors are plain `io::Error`s carrying the raw errno (EBUSY, ENOENT, EEXIST, ESRCH...),
//! because the callers decide by errno (retry on EBUSY, tolerate EEXIST) and the fake returns
//! the same ones.

use std::fmt::Debug;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;

use nix::sys::signal::Signal;

/// Access to cgroup file systems. Paths are absolute (mount point included).
pub trait CgroupFs: Send + Sync + Debug {
    /// Reads a control file whole.
    fn read(&self, path: &Path) -> io::Result<String>;
    /// Writes a control file with one `write(2)` (cgroupfs acts per write call).
    fn write(&self, path: &Path, data: &str) -> io::Result<()>;
    /// Creates a cgroup directory (EEXIST if present, ENOENT if the parent is missing).
    fn mkdir(&self, path: &Path) -> io::Result<()>;
    /// Removes an empty cgroup directory (EBUSY while it has processes or children).
    fn rmdir(&self, path: &Path) -> io::Result<()>;
    /// Whether a cgroup directory or control file exists.
    fn exists(&self, path: &Path) -> bool;
    /// Names of the child cgroups of a cgroup directory.
    fn subdirs(&self, path: &Path) -> io::Result<Vec<String>>;
    /// Sends `signal` to `pid` only if it is a member of the cgroup `cgroup` (its
    /// `cgroup.procs` lists it). Not being there (any more) is not an error.
    ///
    /// Process control sits on this trait because killing a cgroup's members is a cgroup
    /// operation to the logic above, and the fake must see the signals to emulate deaths.
    fn signal(&self, cgroup: &Path, pid: u32, signal: Signal) -> io::Result<()>;
}

/// The real cgroup file systems.
#[derive(Debug, Default, Clone, Copy)]
pub struct HostFs;

impl CgroupFs for HostFs {
    fn read(&self, path: &Path) -> io::Result<String> {
        std::fs::read_to_string(path)
    }

    fn write(&self, path: &Path, data: &str) -> io::Result<()> {
        use std::io::Write;
        // No O_CREAT and no truncation: control files exist or the write must fail.
        let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
        let n = f.write(data.as_bytes())?;
        if n != data.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("short write of {n} of {} bytes", data.len()),
            ));
        }
        Ok(())
    }

    fn mkdir(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir(path)
    }

    fn rmdir(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir(path)
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn subdirs(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(path)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                out.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        out.sort();
        Ok(out)
    }

    fn signal(&self, cgroup: &Path, pid: u32, signal: Signal) -> io::Result<()> {
        // A pid read from cgroup.procs may exit and be reused by an unrelated process before
        // we signal it. A pidfd pins the process (its pid cannot be recycled while the fd is
        // open), so: open it, then check the pid is still a member, then signal through it.
        let pidfd = match pidfd_open(pid) {
            Ok(fd) => Some(fd),
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(()),
            // Linux before 5.3: fall back to the racy check-then-kill.
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => None,
            Err(e) => return Err(e),
        };
        if !is_member(self, cgroup, pid)? {
            return Ok(());
        }
        let result = match &pidfd {
            Some(fd) => pidfd_send_signal(fd, signal),
            None => {
                let Ok(raw) = i32::try_from(pid) else {
                    return Ok(());
                };
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), signal)
                    .map_err(|e| io::Error::from_raw_os_error(e as i32))
            }
        };
        match result {
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
            other => other,
        }
    }
}

/// Whether `pid` is listed in `cgroup/cgroup.procs`. A vanished cgroup has no members.
pub(crate) fn is_member(fs: &dyn CgroupFs, cgroup: &Path, pid: u32) -> io::Result<bool> {
    match fs.read(&cgroup.join("cgroup.procs")) {
        Ok(s) => Ok(parse_pids(&s).contains(&pid)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The pids in a `cgroup.procs` listing.
pub(crate) fn parse_pids(s: &str) -> Vec<u32> {
    s.split_whitespace()
        .filter_map(|t| t.parse::<u32>().ok())
        .collect()
}

fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    let raw = libc::pid_t::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))?;
    // SAFETY: pidfd_open takes a pid and a flags word and returns a new fd or -1; no memory
    // is passed.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, raw, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: the syscall just returned this fd to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn pidfd_send_signal(fd: &OwnedFd, signal: Signal) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid pidfd, a signal number, a null siginfo (the kernel fills one in as for
    // kill(2)) and no flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            signal as libc::c_int,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_pids_ignores_blank_lines() {
        assert_eq!(parse_pids("12\n345\n\n"), vec![12, 345]);
        assert!(parse_pids("").is_empty());
    }

    #[test]
    fn host_write_does_not_create_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("memory.max");
        let e = HostFs.write(&p, "1").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
        assert!(!p.exists());
    }

    #[test]
    fn host_signal_spares_a_pid_outside_the_cgroup() {
        // A "cgroup" whose cgroup.procs does not list the child: the signal must not be sent.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cgroup.procs"), "1\n").unwrap();
        struct Reap(std::process::Child);
        impl Drop for Reap {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
        let mut child = Reap(
            std::process::Command::new("sleep")
                .arg("30")
                .spawn()
                .unwrap(),
        );
        let pid = child.0.id();
        HostFs.signal(dir.path(), pid, Signal::SIGKILL).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(
            child.0.try_wait().unwrap().is_none(),
            "signalled a non-member"
        );
        // Now list it: the signal goes through.
        std::fs::write(dir.path().join("cgroup.procs"), format!("{pid}\n")).unwrap();
        HostFs.signal(dir.path(), pid, Signal::SIGKILL).unwrap();
        let status = child.0.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL));
    }
}
