//! A diagnostic second baseline: the same bare frame echo, but each connection thread waits in
//! `epoll_wait` on a non-blocking socket, as an event-loop server (tokio included) does, instead
//! of blocking in `read`. It separates what an epoll-driven design costs on the host (how the
//! scheduler places threads woken through epoll) from what the kernel's own code costs.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

use anyhow::Result;
use clove_abi::frame::{DEFAULT_MAX_PAYLOAD, HEADER_LEN};

use super::echo::EchoServer;

/// Starts the epoll echo server on its own temporary socket.
pub fn start() -> Result<EchoServer> {
    EchoServer::start_with("epoll", serve)
}

fn epoll_for(conn: &UnixStream) -> io::Result<OwnedFd> {
    // SAFETY: epoll_create1 takes a flag and returns a new descriptor or -1.
    let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor we own.
    let ep = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: 0,
    };
    // SAFETY: both descriptors are open; `ev` is a valid epoll_event the kernel only reads.
    let r = unsafe {
        libc::epoll_ctl(
            ep.as_raw_fd(),
            libc::EPOLL_CTL_ADD,
            conn.as_raw_fd(),
            &mut ev,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ep)
}

fn wait(ep: &OwnedFd) -> io::Result<()> {
    let mut ev = libc::epoll_event { events: 0, u64: 0 };
    loop {
        // SAFETY: `ev` has room for the one event asked for; the descriptor is open.
        let r = unsafe { libc::epoll_wait(ep.as_raw_fd(), &mut ev, 1, -1) };
        if r >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn serve(mut conn: UnixStream) {
    let Ok(ep) = conn.set_nonblocking(true).and_then(|()| epoll_for(&conn)) else {
        return;
    };
    let mut buf: Vec<u8> = Vec::with_capacity(HEADER_LEN + 4096);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        if wait(&ep).is_err() {
            return;
        }
        // Drain what is readable.
        loop {
            match conn.read(&mut chunk) {
                Ok(0) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
        // Echo every complete frame, each in one write.
        let mut done = 0;
        while buf.len() - done >= HEADER_LEN {
            let mut len = [0u8; 8];
            len.copy_from_slice(&buf[done + 9..done + HEADER_LEN]);
            let len = u64::from_le_bytes(len);
            if len > DEFAULT_MAX_PAYLOAD {
                return;
            }
            let total = HEADER_LEN + len as usize;
            if buf.len() - done < total {
                break;
            }
            if write_all(&mut conn, &buf[done..done + total]).is_err() {
                return;
            }
            done += total;
        }
        buf.drain(..done);
    }
}

/// `write_all` on a non-blocking socket: spins on a full socket buffer (replies are small).
fn write_all(conn: &mut UnixStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        match conn.write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                std::thread::yield_now()
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
