//! Bringing loopback up inside a fresh network namespace.
//!
//! A new network namespace starts with only `lo`, and `lo` starts down: without this,
//! `127.0.0.1` is unreachable and agents that talk to a local helper over TCP fail. The
//! sandbox has no `ip` binary to call and the launcher's non-sandboxed child runs this
//! between `clone` and `exec`, where only async-signal-safe calls are allowed, so it is two
//! ioctls on a datagram socket: no allocation, no netlink parsing, no libc locks.

use nix::errno::Errno;

/// Sets `IFF_UP` on `lo` in the calling thread's network namespace.
///
/// Async-signal-safe: only `socket`, `ioctl` and `close`, with the request on the stack. The
/// error is the bare errno so a post-clone child can report it without allocating.
pub fn loopback_up() -> Result<(), Errno> {
    with_lo(|fd, req| {
        // SAFETY: `with_lo` filled the flags member through SIOCGIFFLAGS.
        let flags = unsafe { req.ifr_ifru.ifru_flags };
        if flags & libc::IFF_UP as libc::c_short != 0 {
            return Ok(());
        }
        req.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
        // SAFETY: SIOCSIFFLAGS reads the name and flags from a request we own.
        if unsafe { libc::ioctl(fd, libc::SIOCSIFFLAGS, &*req) } < 0 {
            return Err(Errno::last());
        }
        Ok(())
    })
}

/// Whether `lo` is up in the calling thread's network namespace (tests and diagnostics).
#[cfg_attr(not(test), allow(dead_code))]
pub fn loopback_is_up() -> Result<bool, Errno> {
    with_lo(|_, req| {
        // SAFETY: `with_lo` filled the flags member through SIOCGIFFLAGS.
        let flags = unsafe { req.ifr_ifru.ifru_flags };
        Ok(flags & libc::IFF_UP as libc::c_short != 0)
    })
}

/// Opens a datagram socket, reads `lo`'s flags into a request and hands both to `f`; the
/// socket is closed on every path.
fn with_lo<T>(
    f: impl FnOnce(libc::c_int, &mut libc::ifreq) -> Result<T, Errno>,
) -> Result<T, Errno> {
    // SAFETY: plain socket(2); the result is checked and closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: `ifreq` is plain old data; all zeroes is a valid (empty) request.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the name and writes `ifru_flags` of a request we own.
    let result = if unsafe { libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) } < 0 {
        Err(Errno::last())
    } else {
        f(fd, &mut req)
    };
    // SAFETY: `fd` is the socket opened above; nothing else owns it.
    unsafe { libc::close(fd) };
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// In a thread that has its own network namespace, `lo` starts down, comes up, and then
    /// carries TCP on 127.0.0.1. The namespace dies with the thread.
    #[test]
    fn loopback_comes_up_in_a_new_net_namespace() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIP: needs root to create a network namespace");
            return;
        }
        let outcome = std::thread::spawn(|| -> Result<(), String> {
            // Only this thread moves: namespaces are per task.
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| format!("unshare: {e}"))?;
            if loopback_is_up().map_err(|e| format!("flags: {e}"))? {
                return Err("lo is up in a brand-new namespace".into());
            }
            // 127.0.0.1 is configured but unreachable while lo is down.
            let early =
                std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
            let early = early.local_addr().map_err(|e| e.to_string())?;
            if std::net::TcpStream::connect(early).is_ok() {
                return Err("127.0.0.1 reachable while lo is down".into());
            }
            loopback_up().map_err(|e| format!("up: {e}"))?;
            loopback_up().map_err(|e| format!("second up: {e}"))?;
            if !loopback_is_up().map_err(|e| format!("flags: {e}"))? {
                return Err("lo still down".into());
            }
            let listener =
                std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
            let addr = listener.local_addr().map_err(|e| e.to_string())?;
            std::net::TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
            Ok(())
        })
        .join()
        .expect("thread");
        assert_eq!(outcome, Ok(()));
    }
}

/// One fresh, unused network namespace made ahead of time, so the clone of the next
/// sandboxed agent that needs one joins it (`setns`, before the launcher's clone returns)
/// instead of creating it (`CLONE_NEWNET`). Creating a
/// network namespace is the costliest part of that clone (about 0.45 ms here: the loopback
/// device, the per-namespace sysctls and proc entries); this takes it off the SPAWN path.
///
/// Each namespace is used by exactly one agent and is exactly what `CLONE_NEWNET` would
/// have made: a new namespace of the kernel's user namespace holding only `lo`, still down
/// (the agent's side brings it up as before). Nothing else ever enters it: the making
/// thread leaves it at once for the next one, and the descriptor is handed over once.
///
/// The namespace is made on a thread of its own, because `unshare(CLONE_NEWNET)` moves the
/// calling thread into it: the launcher thread must stay in the kernel's namespace, since
/// agents with `network` share that one.
#[derive(Debug)]
pub(crate) struct NetnsPool {
    ready: std::sync::Mutex<Option<std::os::fd::OwnedFd>>,
    refill: std::sync::Mutex<std::sync::mpsc::Sender<()>>,
}

impl NetnsPool {
    /// Starts the maker thread, which makes the first namespace right away. Without the
    /// privilege to make one (not root), [`NetnsPool::take`] always says `None` and the
    /// launcher creates namespaces in the clone, as it does without a pool.
    pub(crate) fn start() -> std::io::Result<std::sync::Arc<Self>> {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let pool = std::sync::Arc::new(Self {
            ready: std::sync::Mutex::new(None),
            refill: std::sync::Mutex::new(tx),
        });
        let weak = std::sync::Arc::downgrade(&pool);
        std::thread::Builder::new()
            .name("clove-netns".into())
            .spawn(move || {
                // One namespace at start, then one after each take; ends with the pool.
                let mut wanted = true;
                while wanted {
                    let Some(pool) = weak.upgrade() else { return };
                    match make_netns() {
                        Ok(fd) => {
                            if let Ok(mut ready) = pool.ready.lock() {
                                *ready = Some(fd);
                            }
                        }
                        // No privilege (or no namespaces): the clone makes them instead.
                        Err(_) => return,
                    }
                    drop(pool);
                    wanted = rx.recv().is_ok();
                }
            })?;
        Ok(pool)
    }

    /// The ready namespace, if there is one; asks for the next.
    pub(crate) fn take(&self) -> Option<std::os::fd::OwnedFd> {
        let fd = self.ready.lock().ok()?.take()?;
        if let Ok(refill) = self.refill.lock() {
            let _ = refill.send(());
        }
        Some(fd)
    }
}

/// Moves the calling thread into a new network namespace and returns a descriptor of it.
fn make_netns() -> std::io::Result<std::os::fd::OwnedFd> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)?;
    let file = std::fs::File::open("/proc/thread-self/ns/net")?;
    Ok(std::os::fd::OwnedFd::from(file))
}
