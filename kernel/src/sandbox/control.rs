//! The control channel between the kernel and a sandbox's init: how an agent's EXEC runs
//! inside that agent's sandbox (its namespaces, cgroup and uid), never on the host.
//!
//! At launch the kernel makes a `SOCK_SEQPACKET` socketpair per sandbox; init gets one end as
//! [`CONTROL_FD`](super::launch::CONTROL_FD) with its other descriptors, the kernel keeps the
//! other in the agent's run (a restart makes a new sandbox and a new channel). Every message
//! is one packet of JSON:
//!
//! * kernel → init: [`ToInit::Exec`] with the command (argv, the environment to add, the
//!   working directory or none for the agent's own) and, as `SCM_RIGHTS`, the write ends of
//!   the command's stdout and stderr pipes; [`ToInit::Kill`] to SIGKILL a command's process
//!   group (the kernel's timeout, or a caller that went away);
//! * init → kernel: [`FromInit::Started`] with the command's pid in the sandbox, or
//!   [`FromInit::Failed`] (it never ran: the program is missing, the lockdown failed, ...),
//!   then, once init has reaped it, [`FromInit::Exited`] with its exit code or signal.
//!
//! Init forks the command exactly as it forks the agent (the same function: same uid, gid and
//! groups, capabilities and bounding set dropped, no_new_privs, Landlock, seccomp, rlimits,
//! descriptors closed, the agent's environment), in a session and process group of its own,
//! and kills that group when the command ends (so nothing it started lingers) or when told
//! to. When the agent exits, init kills everything and exits, its end closes, and every EXEC
//! still waiting here gets [`ControlError::Unavailable`] at once.
//!
//! One channel carries any number of concurrent EXECs: each request has an id, and a reader
//! task routes init's answers to the waiting EXEC by that id.

use std::collections::HashMap;
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use nix::sys::socket::RecvMsg;
use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::mpsc;

use super::launch::AgentExit;

/// The largest request the kernel sends (the argv and environment of one command).
pub const MAX_REQUEST: usize = 4 << 20;

/// Kernel to init.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum ToInit {
    /// Run a command; stdout and stderr (write ends) ride along as `SCM_RIGHTS`.
    Exec(ExecOrder),
    /// SIGKILL the process group of command `id` (ignored once it has exited).
    Kill {
        /// The request's id.
        id: u64,
    },
}

/// One command for init to run inside the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExecOrder {
    /// Chosen by the kernel; init's answers carry it.
    pub id: u64,
    /// The program and its arguments; a program without a slash is looked up on the
    /// command's `PATH`.
    pub argv: Vec<String>,
    /// Added to the agent's own environment (which they cannot change the `CLOVE_*`
    /// identity of).
    pub env: Vec<(String, String)>,
    /// The working directory as the agent sees it; `None`: the agent's current one.
    pub cwd: Option<String>,
}

/// Init to kernel.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum FromInit {
    /// Command `id` runs (it exec'd) as `pid` in the sandbox's pid namespace.
    Started {
        /// The request's id.
        id: u64,
        /// Its pid inside the sandbox.
        pid: i32,
    },
    /// Command `id` never ran.
    Failed {
        /// The request's id.
        id: u64,
        /// Why (`exec nosuch: no such file or directory`).
        error: String,
        /// The errno behind it, when there is one.
        errno: Option<i32>,
    },
    /// Command `id` ended (init reaped it and killed what was left of its group).
    Exited {
        /// The request's id.
        id: u64,
        /// How.
        exit: AgentExit,
    },
}

/// Why an EXEC through the channel did not run to its end.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// The sandbox is gone (the agent exited), or its init no longer answers.
    #[error("{0}")]
    Unavailable(String),
    /// Init could not start the command; it never ran.
    #[error("{error}")]
    Failed {
        /// Init's reason.
        error: String,
        /// The errno behind it, when there is one.
        errno: Option<i32>,
    },
    /// The request is larger than [`MAX_REQUEST`].
    #[error("the command and its environment take {0} bytes, more than {MAX_REQUEST}")]
    TooLarge(usize),
}

/// A `SOCK_SEQPACKET` socketpair, both ends close-on-exec: (the kernel's, init's).
pub(crate) fn pair() -> nix::Result<(OwnedFd, OwnedFd)> {
    socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
}

/// Sends one message with `fds` attached.
pub(crate) fn send(
    fd: BorrowedFd<'_>,
    msg: &impl serde::Serialize,
    fds: &[RawFd],
    flags: MsgFlags,
) -> io::Result<()> {
    let bytes = serde_json::to_vec(msg).map_err(io::Error::other)?;
    let cmsg = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &cmsg };
    loop {
        match sendmsg::<()>(
            fd.as_raw_fd(),
            &[IoSlice::new(&bytes)],
            cmsgs,
            flags | MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Receives one message and the descriptors attached to it (close-on-exec); `None` at EOF.
/// The message's size is peeked first, so a message of any size is read whole.
pub(crate) fn recv(
    fd: BorrowedFd<'_>,
    flags: MsgFlags,
) -> io::Result<Option<(Vec<u8>, Vec<OwnedFd>)>> {
    let len = loop {
        // SAFETY: recv(2) with a null buffer of length 0: MSG_TRUNC makes it return the
        // packet's real length without copying anything.
        let n = unsafe {
            libc::recv(
                fd.as_raw_fd(),
                std::ptr::null_mut(),
                0,
                libc::MSG_PEEK | libc::MSG_TRUNC | flags.bits(),
            )
        };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    // Every message has a body: zero bytes is the peer's EOF.
    if len == 0 {
        return Ok(None);
    }
    let mut buf = vec![0u8; len];
    let mut space = nix::cmsg_space!([RawFd; 4]);
    loop {
        let mut iov = [IoSliceMut::new(&mut buf)];
        match recvmsg::<()>(
            fd.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            flags | MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(msg) => {
                let fds = received_fds(&msg);
                if msg.bytes == 0 {
                    return Ok(None);
                }
                let n = msg.bytes;
                buf.truncate(n);
                return Ok(Some((buf, fds)));
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// The kernel's end of one sandbox's control channel.
#[derive(Debug)]
pub struct Control {
    fd: AsyncFd<OwnedFd>,
    /// The EXECs waiting for init's answers, by request id.
    pending: Mutex<HashMap<u64, mpsc::UnboundedSender<FromInit>>>,
    next: AtomicU64,
    /// Init's end closed: the sandbox is gone.
    closed: AtomicBool,
}

impl Control {
    /// Takes over the kernel's end and starts the task that reads init's answers (it ends
    /// when init's end closes). Must be called within the tokio runtime.
    pub fn start(fd: OwnedFd) -> io::Result<Arc<Control>> {
        nix::fcntl::fcntl(
            fd.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )?;
        // A packet must fit in the send buffer whole: room for the largest request. Root
        // only (SO_SNDBUFFORCE); otherwise large requests fail with EMSGSIZE.
        let size = (2 * MAX_REQUEST) as libc::c_int;
        // SAFETY: setsockopt(2) with a c_int option value we own.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDBUFFORCE,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        // SAFETY: `fd` is an open socket that the AsyncFd owns until it is dropped; nothing
        // else closes or replaces it.
        let fd =
            unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE | Interest::WRITABLE) }
                .map_err(|e| io::Error::other(e.to_string()))?;
        let control = Arc::new(Control {
            fd,
            pending: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
            closed: AtomicBool::new(false),
        });
        let reader = Arc::clone(&control);
        tokio::spawn(async move { reader.read_answers().await });
        Ok(control)
    }

    /// Routes init's answers until its end closes; then every waiting EXEC learns that the
    /// sandbox is gone.
    async fn read_answers(&self) {
        loop {
            let got = self
                .fd
                .async_io(Interest::READABLE, |fd| {
                    recv(fd.as_fd(), MsgFlags::MSG_DONTWAIT)
                })
                .await;
            let bytes = match got {
                Ok(Some((bytes, _fds))) => bytes,
                // EOF or a broken socket: init is gone.
                Ok(None) | Err(_) => break,
            };
            let Ok(answer) = serde_json::from_slice::<FromInit>(&bytes) else {
                tracing::warn!("unreadable answer from a sandbox's init");
                continue;
            };
            let id = match &answer {
                FromInit::Started { id, .. }
                | FromInit::Failed { id, .. }
                | FromInit::Exited { id, .. } => *id,
            };
            let to = crate::sync::lock(&self.pending).get(&id).cloned();
            if let Some(to) = to {
                let _ = to.send(answer);
            }
        }
        self.closed.store(true, Ordering::SeqCst);
        // Dropping the senders wakes every waiting EXEC with "gone".
        crate::sync::lock(&self.pending).clear();
    }

    /// Has init run `order` (its id is set here) with `stdout` and `stderr`; returns once it
    /// runs, or with why it never did.
    pub async fn exec(
        self: &Arc<Self>,
        mut order: ExecOrder,
        stdout: OwnedFd,
        stderr: OwnedFd,
    ) -> Result<Running, ControlError> {
        let id = self.next.fetch_add(1, Ordering::SeqCst);
        order.id = id;
        let (tx, rx) = mpsc::unbounded_channel();
        crate::sync::lock(&self.pending).insert(id, tx);
        // From here on the guard sends a kill if this future is dropped (the caller went
        // away) and forgets the id.
        let mut running = Running {
            control: Arc::clone(self),
            id,
            pid: 0,
            rx,
            ended: false,
        };
        if self.closed.load(Ordering::SeqCst) {
            running.ended = true;
            return Err(gone());
        }
        let message = ToInit::Exec(order);
        let size = serde_json::to_vec(&message).map(|b| b.len()).unwrap_or(0);
        if size > MAX_REQUEST {
            running.ended = true;
            return Err(ControlError::TooLarge(size));
        }
        let fds = [stdout.as_raw_fd(), stderr.as_raw_fd()];
        let sent = self
            .fd
            .async_io(Interest::WRITABLE, |fd| {
                send(fd.as_fd(), &message, &fds, MsgFlags::MSG_DONTWAIT)
            })
            .await;
        // Init holds its own copies now; ours must go, or the pipes never reach EOF.
        drop((stdout, stderr));
        if let Err(e) = sent {
            running.ended = true;
            return Err(match e.raw_os_error() {
                Some(libc::EMSGSIZE) => ControlError::TooLarge(size),
                _ => gone(),
            });
        }
        match running.rx.recv().await {
            Some(FromInit::Started { pid, .. }) => {
                running.pid = pid;
                Ok(running)
            }
            Some(FromInit::Failed { error, errno, .. }) => {
                running.ended = true;
                Err(ControlError::Failed { error, errno })
            }
            Some(FromInit::Exited { .. }) | None => {
                running.ended = true;
                Err(gone())
            }
        }
    }

    /// Best effort, never blocks: the channel's buffer is large and init reads it at once.
    fn kill(&self, id: u64) {
        let _ = send(
            self.fd.get_ref().as_fd(),
            &ToInit::Kill { id },
            &[],
            MsgFlags::MSG_DONTWAIT,
        );
    }
}

fn gone() -> ControlError {
    ControlError::Unavailable("the agent exited: its sandbox is gone".into())
}

/// A command init runs for an EXEC. Dropped before it ended, it has init kill its group.
#[derive(Debug)]
pub struct Running {
    control: Arc<Control>,
    id: u64,
    pid: i32,
    rx: mpsc::UnboundedReceiver<FromInit>,
    ended: bool,
}

impl Running {
    /// Its pid inside the sandbox.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Waits until it ended.
    pub async fn wait(&mut self) -> Result<AgentExit, ControlError> {
        loop {
            match self.rx.recv().await {
                Some(FromInit::Exited { exit, .. }) => {
                    self.ended = true;
                    return Ok(exit);
                }
                Some(_) => {}
                None => {
                    self.ended = true;
                    return Err(gone());
                }
            }
        }
    }

    /// Has init SIGKILL its whole process group.
    pub fn kill(&self) {
        self.control.kill(self.id);
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.ended {
            self.control.kill(self.id);
        }
        crate::sync::lock(&self.control.pending).remove(&self.id);
    }
}

/// The descriptors a message carried (SCM_RIGHTS), now owned by the receiver.
pub(crate) fn received_fds(msg: &RecvMsg<'_, '_, ()>) -> Vec<OwnedFd> {
    let mut fds = Vec::new();
    for c in msg.cmsgs().into_iter().flatten() {
        if let ControlMessageOwned::ScmRights(received) = c {
            // SAFETY: descriptors just received, owned by nobody else.
            fds.extend(
                received
                    .into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    fds
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipe() -> (OwnedFd, OwnedFd) {
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap()
    }

    /// Plays init on `theirs`: answers the first Exec with `answer(id)`.
    fn fake_init(theirs: &OwnedFd) -> (ToInit, Vec<OwnedFd>) {
        let (bytes, fds) = recv(theirs.as_fd(), MsgFlags::empty()).unwrap().unwrap();
        (serde_json::from_slice(&bytes).unwrap(), fds)
    }

    #[tokio::test]
    async fn an_exec_runs_and_ends_through_the_channel() {
        let (ours, theirs) = pair().unwrap();
        let control = Control::start(ours).unwrap();
        let (_out_r, out_w) = pipe();
        let (_err_r, err_w) = pipe();
        let order = ExecOrder {
            id: 0,
            argv: vec!["x".repeat(300_000)],
            env: vec![("A".into(), "b".into())],
            cwd: None,
        };
        let init = std::thread::spawn(move || {
            let (msg, fds) = fake_init(&theirs);
            let ToInit::Exec(order) = msg else {
                panic!("{msg:?}")
            };
            assert_eq!(
                order.argv[0].len(),
                300_000,
                "a large request arrives whole"
            );
            assert_eq!(fds.len(), 2, "stdout and stderr ride along");
            let id = order.id;
            let started = FromInit::Started { id, pid: 7 };
            send(theirs.as_fd(), &started, &[], MsgFlags::empty()).unwrap();
            let (msg, _) = fake_init(&theirs);
            assert_eq!(msg, ToInit::Kill { id });
            let exit = AgentExit {
                code: None,
                signal: Some(9),
            };
            send(
                theirs.as_fd(),
                &FromInit::Exited { id, exit },
                &[],
                MsgFlags::empty(),
            )
            .unwrap();
            theirs
        });
        let mut running = control.exec(order, out_w, err_w).await.unwrap();
        assert_eq!(running.pid(), 7);
        running.kill();
        let exit = running.wait().await.unwrap();
        assert_eq!(exit.signal, Some(9));
        drop(init.join().unwrap());
    }

    #[tokio::test]
    async fn an_exec_in_flight_learns_at_once_that_the_sandbox_is_gone() {
        let (ours, theirs) = pair().unwrap();
        let control = Control::start(ours).unwrap();
        let (_out_r, out_w) = pipe();
        let (_err_r, err_w) = pipe();
        let order = ExecOrder {
            id: 0,
            argv: vec!["sleep".into()],
            env: Vec::new(),
            cwd: None,
        };
        let init = std::thread::spawn(move || {
            let (msg, _) = fake_init(&theirs);
            let ToInit::Exec(order) = msg else {
                panic!("{msg:?}")
            };
            let started = FromInit::Started {
                id: order.id,
                pid: 3,
            };
            send(theirs.as_fd(), &started, &[], MsgFlags::empty()).unwrap();
            // Init exits (the agent did): its end closes.
            drop(theirs);
        });
        let mut running = control.exec(order.clone(), out_w, err_w).await.unwrap();
        let t0 = std::time::Instant::now();
        let e = running.wait().await.unwrap_err();
        assert!(matches!(e, ControlError::Unavailable(_)), "{e:?}");
        assert!(t0.elapsed() < std::time::Duration::from_secs(5));
        init.join().unwrap();
        // Later requests are refused at once.
        let (_out_r, out_w) = pipe();
        let (_err_r, err_w) = pipe();
        let e = control.exec(order, out_w, err_w).await.unwrap_err();
        assert!(matches!(e, ControlError::Unavailable(_)), "{e:?}");
    }
}
