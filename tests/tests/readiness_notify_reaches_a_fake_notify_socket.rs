//! The kernel speaks systemd's `sd_notify` protocol to whatever listens on `NOTIFY_SOCKET`:
//! here a fake manager, a `SOCK_DGRAM` socket the test binds (a path, then an abstract
//! name). `READY=1` comes only once the kernel answers HELLO, from the kernel's own pid (as
//! systemd checks with `NotifyAccess=main`) and with `MAINPID=` that pid; `WATCHDOG=1` pings
//! come when `WATCHDOG_USEC` asks; `STOPPING=1` comes on SIGTERM, before the exit. No agent,
//! sandboxed or not, sees `NOTIFY_SOCKET` or the watchdog variables.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::IoSliceMut;
use std::os::fd::AsRawFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use nix::sys::socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags, UnixAddr};
use serde_json::Value;

use clove_tests::{
    agents_can_run, client, hello_on_new_connection, kernel_command, spawn_ok, spawn_request,
    wait_exit, wait_output_line, wait_timeout, Kernel, KernelOpts,
};

/// A fake service manager: a datagram socket that reports each message's sender pid.
struct Manager {
    sock: UnixDatagram,
}

/// One notification: its `KEY=VALUE` lines and the pid the socket layer vouches for.
#[derive(Debug)]
struct Note {
    fields: BTreeMap<String, String>,
    sender: i32,
}

impl Manager {
    fn new(sock: UnixDatagram) -> Manager {
        // As systemd does: the kernel attaches the sender's credentials to each datagram.
        setsockopt(&sock, sockopt::PassCred, &true).unwrap();
        Manager { sock }
    }

    /// The next notification, failing after `limit`.
    fn next(&self, limit: Duration) -> Note {
        self.sock.set_read_timeout(Some(limit)).unwrap();
        let mut buf = [0u8; 4096];
        let mut cmsg = nix::cmsg_space!(libc::ucred);
        let (len, sender) = {
            let mut iov = [IoSliceMut::new(&mut buf)];
            let msg = recvmsg::<UnixAddr>(
                self.sock.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::empty(),
            )
            .unwrap_or_else(|e| panic!("no notification within {limit:?}: {e}"));
            let sender = msg
                .cmsgs()
                .unwrap()
                .find_map(|c| match c {
                    ControlMessageOwned::ScmCredentials(cred) => Some(cred.pid()),
                    _ => None,
                })
                .expect("no sender credentials");
            (msg.bytes, sender)
        };
        let text = std::str::from_utf8(&buf[..len]).unwrap();
        assert!(text.ends_with('\n'), "{text:?}");
        let fields = text
            .lines()
            .map(|l| {
                let (k, v) = l.split_once('=').unwrap_or_else(|| panic!("{l:?}"));
                (k.to_owned(), v.to_owned())
            })
            .collect();
        Note { fields, sender }
    }

    /// Notifications until one has `key`, skipping others (watchdog pings); returns it.
    fn until(&self, key: &str, limit: Duration) -> Note {
        let start = Instant::now();
        loop {
            let left = limit.saturating_sub(start.elapsed());
            assert!(!left.is_zero(), "no {key} within {limit:?}");
            let note = self.next(left);
            if note.fields.contains_key(key) {
                return note;
            }
        }
    }
}

/// Checks a READY=1 notification from the kernel `pid`.
fn check_ready(note: &Note, pid: u32) {
    assert_eq!(note.fields["READY"], "1", "{note:?}");
    assert_eq!(note.fields["MAINPID"], pid.to_string(), "{note:?}");
    assert_eq!(
        note.sender, pid as i32,
        "READY=1 not sent by the kernel's own pid"
    );
    assert!(
        note.fields
            .get("STATUS")
            .is_some_and(|s| s.starts_with("serving on ")),
        "{note:?}"
    );
}

/// Kills the kernel if the test fails half-way.
struct Reap(Option<Child>);

impl Drop for Reap {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A path socket: READY=1 only when HELLO already works (one try, no retry), watchdog pings,
/// STOPPING=1 on SIGTERM from the kernel itself, then a clean exit. The interpreter probe,
/// a child that inherits the kernel's environment as it is, does not see the variables.
#[test]
fn ready_watchdog_and_stopping_reach_a_path_socket() {
    let dir = tempfile::Builder::new()
        .prefix("clove-notify-")
        .tempdir()
        .unwrap();
    // The "interpreter": records its environment, then is python3.
    let env_dump = dir.path().join("probe-env");
    let python = dir.path().join("python-wrapper");
    std::fs::write(
        &python,
        format!(
            "#!/bin/sh\nenv > '{}'\nexec python3 \"$@\"\n",
            env_dump.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&python, std::fs::Permissions::from_mode(0o755)).unwrap();
    let notify = dir.path().join("notify.sock");
    let manager = Manager::new(UnixDatagram::bind(&notify).unwrap());
    let socket = dir.path().join("clove.sock");
    let child = kernel_command()
        .arg("--socket")
        .arg(&socket)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--no-compat-socket")
        .arg("--python")
        .arg(&python)
        .env("CLOVE_LLM_PROVIDER", "simulated")
        .env("CLOVE_LOG", "warn")
        .env("NOTIFY_SOCKET", &notify)
        .env("WATCHDOG_USEC", "400000")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut kernel = Reap(Some(child));

    let ready = manager.until("READY", Duration::from_secs(30));
    check_ready(&ready, pid);
    // Ready means serving: the first HELLO after READY=1 is answered.
    let hello = hello_on_new_connection(&socket).expect("HELLO right after READY=1");
    assert_eq!(hello["success"], true);
    let probe_env = std::fs::read_to_string(&env_dump).expect("the interpreter probe ran");
    assert!(probe_env.contains("PATH="), "{probe_env}");
    for var in ["NOTIFY_SOCKET=", "WATCHDOG_USEC="] {
        assert!(
            !probe_env.contains(var),
            "the probe inherited {var}: {probe_env}"
        );
    }

    // 400 ms asked for: a ping every 200 ms.
    let ping = manager.until("WATCHDOG", Duration::from_secs(2));
    assert_eq!(ping.fields["WATCHDOG"], "1");
    assert_eq!(ping.sender, pid as i32);

    // SAFETY: kill(2) on the kernel we started; no memory is touched.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGTERM) }, 0);
    let stopping = manager.until("STOPPING", Duration::from_secs(10));
    assert_eq!(stopping.fields["STOPPING"], "1");
    // Credentials are attached when the datagram is sent: it came from the live kernel.
    assert_eq!(stopping.sender, pid as i32);
    let mut child = kernel.0.take().unwrap();
    let status = wait_timeout(&mut child, Duration::from_secs(20)).unwrap();
    assert_eq!(status.code(), Some(0), "{status}");
}

/// An abstract socket (`@name`), through the test harness's usual start; then agents, with
/// and without a sandbox, print their environment: no NOTIFY_SOCKET, no WATCHDOG_*.
#[test]
fn ready_reaches_an_abstract_socket_and_agents_never_see_it() {
    let name = format!("clove-test-notify-{}", std::process::id());
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let manager = Manager::new(UnixDatagram::bind_addr(&addr).unwrap());
    let kernel = Kernel::start_with(KernelOpts {
        env: vec![
            ("NOTIFY_SOCKET".into(), format!("@{name}")),
            ("WATCHDOG_USEC".into(), "60000000".into()),
        ],
        ..KernelOpts::default()
    })
    .unwrap();
    // Every datagram has arrived once start_with has seen HELLO answered: READY=1 is first
    // or follows watchdog pings.
    let ready = manager.until("READY", Duration::from_secs(30));
    check_ready(&ready, kernel.pid());

    if !agents_can_run("ready_reaches_an_abstract_socket_and_agents_never_see_it") {
        return;
    }
    let mut c = client(&kernel).unwrap();
    for sandboxed in [true, false] {
        let mut req = spawn_request(&format!("env-{sandboxed}"), "agent_print_env.py");
        req.sandboxed = sandboxed;
        let spawned = spawn_ok(&mut c, &req).unwrap();
        let line = wait_output_line(&kernel, spawned.id, "ENV ", Duration::from_secs(20)).unwrap();
        let done = wait_exit(&mut c, spawned.id, Duration::from_secs(20)).unwrap();
        assert_eq!(done.exit_code, Some(0), "{done:?}");
        let env: BTreeMap<String, Value> = serde_json::from_str(&line).unwrap();
        assert!(env.contains_key("PATH"), "sandboxed {sandboxed}: {env:?}");
        for var in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
            assert!(
                !env.contains_key(var),
                "sandboxed {sandboxed}: the agent sees {var}: {env:?}"
            );
        }
    }
}
