//! Readiness, stopping and watchdog notifications to a service manager: the `sd_notify`
//! protocol (systemd's `Type=notify`), without libsystemd.
//!
//! The protocol: the manager puts the address of a `SOCK_DGRAM` Unix socket in
//! `NOTIFY_SOCKET`, a path (`/run/systemd/notify`) or an abstract name (`@...`); the service
//! sends it newline-separated `KEY=VALUE` lines in one datagram. We send `READY=1` (with
//! `STATUS=` and `MAINPID=`) once the kernel serves, `STOPPING=1` when its shutdown begins,
//! and `WATCHDOG=1` every half of `WATCHDOG_USEC` when the manager asks for a watchdog
//! (`WatchdogSec=` in the unit). Without `NOTIFY_SOCKET` every call here does nothing.
//!
//! Why not the `sd-notify` crate: it reads `NOTIFY_SOCKET` at every call, so the variable
//! must stay in the environment for the kernel's whole life, or be removed after the first
//! notification, when the runtime's threads already run (`remove_var` then races their
//! `getenv`). We read the three variables once, before any thread exists, and remove them
//! there: nothing the kernel starts (the fork server, the interpreter probe, host EXEC,
//! agents) can inherit them, whatever environment it is given, and a stray child could never
//! claim to be the kernel. (Agents and the fork server get an environment built from scratch
//! anyway; this covers the rest.)

use std::ffi::OsStr;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// The variable that names the manager's socket.
const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";
/// The watchdog period in microseconds, when the manager wants pings.
const WATCHDOG_USEC: &str = "WATCHDOG_USEC";
/// The process the watchdog period is meant for (absent: the one that reads it).
const WATCHDOG_PID: &str = "WATCHDOG_PID";

/// The longest one notification may block: a manager that stopped reading must not hold up
/// the kernel (systemd drains its socket at once; this is only a bound).
const SEND_LIMIT: Duration = Duration::from_secs(1);

/// Where and how to notify the service manager; inert when no manager asked for it.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    /// The manager's socket, `None` when `NOTIFY_SOCKET` was unset or unusable.
    target: Option<SocketAddr>,
    /// The watchdog period, when the manager wants pings.
    watchdog: Option<Duration>,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID`, then removes them from the
    /// environment so that no child inherits them.
    ///
    /// Call it before the kernel starts any thread: changing the environment while other
    /// threads may read it is a data race in libc.
    pub fn from_env() -> Notifier {
        let socket = std::env::var_os(NOTIFY_SOCKET);
        let usec = std::env::var_os(WATCHDOG_USEC);
        let pid = std::env::var_os(WATCHDOG_PID);
        for name in [NOTIFY_SOCKET, WATCHDOG_USEC, WATCHDOG_PID] {
            std::env::remove_var(name);
        }
        Notifier::from_vars(
            socket.as_deref(),
            usec.as_deref(),
            pid.as_deref(),
            std::process::id(),
        )
    }

    /// The notifier for these variable values, in process `own_pid`. A value that cannot be
    /// used is logged and ignored (the kernel runs as well without a manager).
    fn from_vars(
        socket: Option<&OsStr>,
        usec: Option<&OsStr>,
        pid: Option<&OsStr>,
        own_pid: u32,
    ) -> Notifier {
        let target = socket.filter(|s| !s.is_empty()).and_then(|s| {
            parse_address(s)
                .map_err(|e| {
                    tracing::warn!(
                        "{NOTIFY_SOCKET}={}: {e}; the service manager is not notified",
                        s.to_string_lossy()
                    )
                })
                .ok()
        });
        let for_us = match pid.and_then(|p| p.to_str()).map(str::parse::<u32>) {
            None => true,
            Some(Ok(p)) => p == own_pid,
            Some(Err(_)) => false,
        };
        let watchdog = usec
            .and_then(|u| u.to_str())
            .and_then(|u| u.parse::<u64>().ok())
            .filter(|&u| u > 0 && for_us && target.is_some())
            .map(Duration::from_micros);
        Notifier { target, watchdog }
    }

    /// Whether a service manager listens.
    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Tells the manager the kernel serves: `READY=1`, `STATUS=status`, `MAINPID=` our pid.
    pub fn ready(&self, status: &str) {
        self.send(&format!(
            "READY=1\nSTATUS={}\nMAINPID={}\n",
            one_line(status),
            std::process::id()
        ));
    }

    /// Tells the manager the shutdown has begun: `STOPPING=1`.
    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=shutting down: stopping agents\n");
    }

    /// Spawns (on the current runtime) what runs for the kernel's whole life: `STOPPING=1`
    /// as soon as `shutdown` is cancelled, and the watchdog pings if the manager wants them.
    /// The pings go on through the shutdown, which may take longer than the period.
    pub fn watch(&self, shutdown: CancellationToken) {
        if !self.enabled() {
            return;
        }
        let stopping = self.clone();
        tokio::spawn(async move {
            shutdown.cancelled().await;
            stopping.stopping();
        });
        if let Some(period) = self.watchdog {
            let pinger = self.clone();
            tokio::spawn(async move {
                // Half the period, as sd_watchdog_enabled(3) advises: one late tick is not a
                // missed deadline.
                let mut tick = tokio::time::interval(period / 2);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    pinger.send("WATCHDOG=1\n");
                }
            });
            tracing::info!(
                "watchdog: pinging the service manager every {:?}",
                period / 2
            );
        }
    }

    /// Sends one datagram to the manager; a failure is logged, never fatal.
    fn send(&self, message: &str) {
        let Some(target) = &self.target else {
            return;
        };
        let sent = UnixDatagram::unbound().and_then(|sock| {
            sock.set_write_timeout(Some(SEND_LIMIT))?;
            sock.send_to_addr(message.as_bytes(), target)
        });
        match sent {
            Ok(n) if n == message.len() => {}
            Ok(n) => tracing::warn!(
                "notify the service manager: sent {n} of {} bytes",
                message.len()
            ),
            Err(e) => tracing::warn!(
                "notify the service manager ({}): {e}",
                message.lines().next().unwrap_or_default()
            ),
        }
    }
}

/// The socket address in a `NOTIFY_SOCKET` value: an absolute path, or `@name` for the
/// abstract name `name`. (systemd also knows `vsock:`, for virtual machines: not ours.)
fn parse_address(value: &OsStr) -> std::io::Result<SocketAddr> {
    let bytes = value.as_bytes();
    match bytes.first() {
        Some(b'@') => SocketAddr::from_abstract_name(&bytes[1..]),
        Some(b'/') => SocketAddr::from_pathname(Path::new(value)),
        _ => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "neither an absolute path nor an abstract name (@...)",
        )),
    }
}

/// `text` on one line: a newline would start another `KEY=VALUE` in the datagram.
fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn os(s: &str) -> &OsStr {
        OsStr::new(s)
    }

    fn receive(sock: &UnixDatagram) -> String {
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 4096];
        let n = sock.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn no_socket_means_inert() {
        let n = Notifier::from_vars(None, Some(os("1000000")), None, 1);
        assert!(!n.enabled());
        assert_eq!(n.watchdog, None, "no watchdog without a socket to ping");
        assert!(!Notifier::from_vars(Some(os("")), None, None, 1).enabled());
        // Sending is then a no-op, not an error.
        n.ready("x");
        n.stopping();
    }

    #[test]
    fn relative_and_unknown_addresses_are_ignored() {
        for bad in ["notify.sock", "vsock:2:1234"] {
            assert!(
                !Notifier::from_vars(Some(os(bad)), None, None, 1).enabled(),
                "{bad}"
            );
        }
    }

    #[test]
    fn watchdog_only_for_our_pid() {
        let sock = Some(os("/run/systemd/notify"));
        let n = Notifier::from_vars(sock, Some(os("30000000")), None, 7);
        assert_eq!(n.watchdog, Some(Duration::from_secs(30)));
        let n = Notifier::from_vars(sock, Some(os("30000000")), Some(os("7")), 7);
        assert_eq!(n.watchdog, Some(Duration::from_secs(30)));
        let n = Notifier::from_vars(sock, Some(os("30000000")), Some(os("8")), 7);
        assert_eq!(n.watchdog, None, "meant for another process");
        let n = Notifier::from_vars(sock, Some(os("0")), None, 7);
        assert_eq!(n.watchdog, None);
        let n = Notifier::from_vars(sock, Some(os("soon")), None, 7);
        assert_eq!(n.watchdog, None);
    }

    #[test]
    fn ready_and_stopping_reach_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let manager = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::from_vars(Some(path.as_os_str()), None, None, 1);
        n.ready("serving\non /x");
        let got = receive(&manager);
        let pid = std::process::id();
        assert_eq!(
            got,
            format!("READY=1\nSTATUS=serving on /x\nMAINPID={pid}\n")
        );
        n.stopping();
        assert!(receive(&manager).starts_with("STOPPING=1\n"));
    }

    #[test]
    fn ready_reaches_an_abstract_socket() {
        let name = format!("clove-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let manager = UnixDatagram::bind_addr(&addr).unwrap();
        let n = Notifier::from_vars(Some(os(&format!("@{name}"))), None, None, 1);
        assert!(n.enabled());
        n.ready("up");
        assert!(receive(&manager).starts_with("READY=1\nSTATUS=up\n"));
    }

    #[test]
    fn a_missing_manager_is_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let n = Notifier::from_vars(Some(dir.path().join("gone").as_os_str()), None, None, 1);
        n.ready("up");
    }

    #[tokio::test(start_paused = true)]
    async fn watch_pings_and_says_stopping() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let manager = UnixDatagram::bind(&path).unwrap();
        manager.set_nonblocking(true).unwrap();
        let n = Notifier::from_vars(Some(path.as_os_str()), Some(os("2000000")), None, 1);
        let shutdown = CancellationToken::new();
        n.watch(shutdown.clone());
        // Paused time: each sleep lets the interval fire at 0 s, 1 s, 2 s.
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(1000)).await;
        }
        let mut buf = [0u8; 256];
        let mut pings = 0;
        while let Ok(len) = manager.recv(&mut buf) {
            assert_eq!(&buf[..len], b"WATCHDOG=1\n");
            pings += 1;
        }
        assert!(pings >= 3, "{pings} pings");
        shutdown.cancel();
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(1)).await;
        let mut stopping = false;
        while let Ok(len) = manager.recv(&mut buf) {
            stopping |= buf[..len].starts_with(b"STOPPING=1\n");
        }
        assert!(stopping);
    }
}
