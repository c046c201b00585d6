//! The fork server: a small process that clones each sandbox's init, so that init need not
//! exec the kernel binary.
//!
//! Exec'ing the 50 MB kernel binary as init (the loader, its relocations and page faults, the
//! Rust runtime's start) took about 1.3 ms of every SPAWN, plus the clone of the
//! multi-threaded kernel. Instead, the launcher thread starts this server once: the kernel
//! binary exec'd with `argv[1] == `[`ARG`], a fresh, single-threaded process that holds
//! nothing of the kernel's memory or descriptors. For each sandboxed launch the launcher
//! thread sends it the spec's flags and init's descriptors (`SCM_RIGHTS` on a
//! `SOCK_SEQPACKET` pair); the server clones with the namespace flags plus `CLONE_PARENT`, so
//! init is the launcher thread's child exactly as before (the kernel waits for it with its
//! pidfd, and `PR_SET_PDEATHSIG` fires when that thread goes), and the child runs
//! [`init::main`](super::init::main) directly: the same code, in the same namespaces, with the
//! same descriptors, as after the exec. The server answers with init's pid and its pidfd.
//!
//! Init is a copy of this server, not of the kernel: the server never sees an agent's data
//! beyond the descriptors it passes on and closes right away.
//!
//! If the server cannot be started or stops answering, the launcher falls back to cloning
//! and exec'ing init itself ([`launch`](super::launch)).

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};

use super::launch::{self, ChildPlan, LaunchError, CONTROL_FD, EXE_FD};

/// `argv[1]` that turns the kernel binary into the fork server; not a user-facing flag.
pub const ARG: &str = "__clove_forkserver";

/// The server's end of its socket, in the server.
const SERVER_FD: RawFd = 3;

/// Descriptors init gets, in the order of its fixed numbers 0 to [`CONTROL_FD`].
pub(crate) const INIT_FDS: usize = CONTROL_FD as usize + 1;

/// A request: the clone flags; the descriptors ride along, init's [`INIT_FDS`] and, when
/// `has_netns` is set, the network namespace to join.
#[repr(C)]
#[derive(Clone, Copy)]
struct Request {
    flags: i32,
    has_netns: i32,
}

/// How a launch through the server failed.
pub(crate) enum Failure {
    /// The server's clone failed with this error (as a direct clone would have).
    Clone(io::Error),
    /// The server is gone or answered nonsense: launch without it from now on.
    Gone(String),
}

/// The kernel's handle on the running server; used only by the launcher thread.
#[derive(Debug)]
pub(crate) struct ForkServer {
    sock: OwnedFd,
    pidfd: OwnedFd,
}

impl ForkServer {
    /// Execs the kernel binary `exe` as the server, a child of the calling (launcher) thread.
    pub(crate) fn start(exe: &OwnedFd) -> Result<Self, LaunchError> {
        let io = |what: &str| {
            let what = what.to_owned();
            move |e: nix::errno::Errno| LaunchError::Io {
                what,
                source: e.into(),
            }
        };
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(io("create the fork server's socket"))?;
        let null = std::fs::File::open("/dev/null").map_err(|source| LaunchError::Io {
            what: "open /dev/null".into(),
            source,
        })?;
        let stdin = launch::high_dup(null.as_fd(), "stdin")?;
        let stdout = launch::high_dup(null.as_fd(), "stdout")?;
        // Its rare complaints go where the kernel's do.
        // SAFETY: fd 2 is borrowed only for the duplicate below.
        let stderr = launch::high_dup(unsafe { BorrowedFd::borrow_raw(2) }, "stderr")
            .or_else(|_| launch::high_dup(null.as_fd(), "stderr"))?;
        let sock = launch::high_dup(theirs.as_fd(), "fork server socket")?;
        let exe_fd = launch::high_dup(exe.as_fd(), "kernel executable")?;
        let argv = launch::CArray::new(["clove-init".to_owned(), ARG.to_owned()], "argv")?;
        let envp = launch::CArray::new(Vec::new(), "env")?;
        let mut moves = [(-1, -1); 9];
        moves[..5].copy_from_slice(&[
            (stdin.as_raw_fd(), 0),
            (stdout.as_raw_fd(), 1),
            (stderr.as_raw_fd(), 2),
            (sock.as_raw_fd(), SERVER_FD),
            (exe_fd.as_raw_fd(), EXE_FD),
        ]);
        let plan = ChildPlan {
            moves,
            n_moves: 5,
            cloexec: [EXE_FD, -1, -1],
            n_cloexec: 1,
            first_free: EXE_FD + 1,
            path: std::ptr::null(),
            argv: argv.ptrs.as_ptr(),
            envp: envp.ptrs.as_ptr(),
            cwd: std::ptr::null(),
            sandboxed: true,
            run_init: false,
            loopback: false,
            netns: -1,
        };
        let mut pidfd: libc::c_int = -1;
        let rc = launch::clone_vfork(0, &plan, &mut pidfd);
        if rc < 0 {
            return Err(LaunchError::Io {
                what: "start the fork server".into(),
                source: io::Error::last_os_error(),
            });
        }
        drop((stdin, stdout, stderr, sock, exe_fd, theirs));
        Ok(Self {
            sock: ours,
            // SAFETY: CLONE_PIDFD stored a fresh pidfd that nothing else owns.
            pidfd: unsafe { OwnedFd::from_raw_fd(pidfd) },
        })
    }

    /// Has the server clone init with `flags`: `fds` become init's descriptors 0 to
    /// [`CONTROL_FD`]; `netns` is joined. Returns init's pid and pidfd.
    pub(crate) fn fork_init(
        &self,
        flags: libc::c_int,
        fds: &[RawFd; INIT_FDS],
        netns: Option<RawFd>,
    ) -> Result<(i32, OwnedFd), Failure> {
        let gone = |what: &str, e: &dyn std::fmt::Display| Failure::Gone(format!("{what}: {e}"));
        let request = Request {
            flags,
            has_netns: i32::from(netns.is_some()),
        };
        let mut all = [-1; INIT_FDS + 1];
        all[..INIT_FDS].copy_from_slice(fds);
        let n = match netns {
            Some(fd) => {
                all[INIT_FDS] = fd;
                INIT_FDS + 1
            }
            None => INIT_FDS,
        };
        let bytes = as_bytes(&request);
        let cmsg = [ControlMessage::ScmRights(&all[..n])];
        loop {
            match sendmsg::<()>(
                self.sock.as_raw_fd(),
                &[IoSlice::new(&bytes)],
                &cmsg,
                MsgFlags::MSG_NOSIGNAL,
                None,
            ) {
                Ok(_) => break,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(gone("send to the fork server", &e)),
            }
        }
        match launch::poll_readable(self.sock.as_fd(), launch::RELEASE_TIMEOUT) {
            Ok(true) => {}
            Ok(false) => return Err(gone("the fork server", &"no answer")),
            Err(e) => return Err(gone("wait for the fork server", &e)),
        }
        let mut answer = [0u8; 8];
        let mut space = nix::cmsg_space!([RawFd; 1]);
        let (len, pidfd) = loop {
            let mut iov = [IoSliceMut::new(&mut answer)];
            match recvmsg::<()>(
                self.sock.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(msg) => {
                    let mut pidfd = None;
                    for c in msg.cmsgs().into_iter().flatten() {
                        if let ControlMessageOwned::ScmRights(fds) = c {
                            for fd in fds {
                                // SAFETY: a descriptor just received, owned by nobody else.
                                let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                                pidfd.get_or_insert(fd);
                            }
                        }
                    }
                    break (msg.bytes, pidfd);
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(gone("read from the fork server", &e)),
            }
        };
        if len != answer.len() {
            return Err(gone("the fork server", &"closed its socket"));
        }
        let rc = i64::from_ne_bytes(answer);
        match (rc, pidfd) {
            (pid, Some(pidfd)) if pid > 0 => Ok((pid as i32, pidfd)),
            (errno, None) if errno < 0 => Err(Failure::Clone(io::Error::from_raw_os_error(
                (-errno) as i32,
            ))),
            _ => Err(gone("the fork server", &"answered nonsense")),
        }
    }

    /// Kills and reaps the server (it stopped answering).
    pub(crate) fn stop(self) {
        launch::kill_and_reap(&self.pidfd);
    }
}

fn as_bytes(r: &Request) -> [u8; std::mem::size_of::<Request>()] {
    let mut out = [0u8; std::mem::size_of::<Request>()];
    out[..4].copy_from_slice(&r.flags.to_ne_bytes());
    out[4..].copy_from_slice(&r.has_netns.to_ne_bytes());
    out
}

/// The server's entry point; never returns. Serves requests until the kernel's end closes.
pub fn main() -> ! {
    // SAFETY: fstat(2) into a buffer we own.
    let is_socket = unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        libc::fstat(SERVER_FD, &mut st) == 0 && st.st_mode & libc::S_IFMT == libc::S_IFSOCK
    };
    if !is_socket || std::process::id() == 1 {
        eprintln!("clove-kernel: {ARG} is internal: only the kernel's launcher starts it");
        std::process::exit(2);
    }
    super::init::close_from(SERVER_FD + 1);
    loop {
        let mut request = [0u8; std::mem::size_of::<Request>()];
        let mut space = nix::cmsg_space!([RawFd; INIT_FDS + 1]);
        let (len, fds) = {
            let mut iov = [IoSliceMut::new(&mut request)];
            match recvmsg::<()>(
                SERVER_FD,
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(msg) => (msg.bytes, super::control::received_fds(&msg)),
                Err(nix::errno::Errno::EINTR) => continue,
                // The kernel is gone.
                Err(_) => std::process::exit(0),
            }
        };
        if len == 0 {
            // EOF: the kernel closed its end.
            std::process::exit(0);
        }
        let flags = i32::from_ne_bytes([request[0], request[1], request[2], request[3]]);
        let has_netns = request[4..8] != [0, 0, 0, 0];
        let answer = if len != request.len() || fds.len() != INIT_FDS + usize::from(has_netns) {
            (-i64::from(libc::EINVAL), None)
        } else {
            match clone_init(flags, &fds, has_netns) {
                Ok((pid, pidfd)) => (pid, Some(pidfd)),
                Err(e) => (-i64::from(e.raw_os_error().unwrap_or(libc::EINVAL)), None),
            }
        };
        // Init holds its own copies now.
        drop(fds);
        let bytes = answer.0.to_ne_bytes();
        let owned = answer.1;
        let raw = owned.as_ref().map(AsRawFd::as_raw_fd);
        let rights = raw.map(|fd| [fd]);
        let cmsg: Vec<ControlMessage<'_>> = rights
            .iter()
            .map(|r| ControlMessage::ScmRights(r))
            .collect();
        loop {
            match sendmsg::<()>(
                SERVER_FD,
                &[IoSlice::new(&bytes)],
                &cmsg,
                MsgFlags::MSG_NOSIGNAL,
                None,
            ) {
                Ok(_) => break,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => std::process::exit(0),
            }
        }
    }
}

/// Clones init with `flags` into the launcher thread's family (`CLONE_PARENT`); the child
/// lays out `fds` as init's descriptors and runs init.
fn clone_init(flags: i32, fds: &[OwnedFd], has_netns: bool) -> io::Result<(i64, OwnedFd)> {
    // Sources at 10 or above, so the child's moves to 0..=7 never clobber a later source.
    let mut high = Vec::with_capacity(fds.len());
    for fd in fds {
        high.push(launch::high_dup(fd.as_fd(), "init").map_err(|e| match e {
            LaunchError::Io { source, .. } => source,
            other => io::Error::other(other.to_string()),
        })?);
    }
    let mut moves = [(-1, -1); 9];
    for (i, fd) in high.iter().take(INIT_FDS).enumerate() {
        moves[i] = (fd.as_raw_fd(), i as RawFd);
    }
    let plan = ChildPlan {
        moves,
        n_moves: INIT_FDS,
        cloexec: [-1, -1, -1],
        n_cloexec: 0,
        first_free: CONTROL_FD + 1,
        path: std::ptr::null(),
        argv: std::ptr::null(),
        envp: std::ptr::null(),
        cwd: std::ptr::null(),
        sandboxed: true,
        run_init: true,
        loopback: false,
        netns: if has_netns {
            high.get(INIT_FDS).map_or(-1, AsRawFd::as_raw_fd)
        } else {
            -1
        },
    };
    let mut pidfd: libc::c_int = -1;
    // This process is single-threaded, so the child may run ordinary code. CLONE_PARENT
    // makes init the kernel's child, not ours.
    let rc = launch::clone_fork(flags | libc::CLONE_PARENT, &plan, &mut pidfd);
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: CLONE_PIDFD stored a fresh pidfd that nothing else owns.
    Ok((rc, unsafe { OwnedFd::from_raw_fd(pidfd) }))
}
