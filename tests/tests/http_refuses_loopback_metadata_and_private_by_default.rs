//! With the default configuration, HTTP to loopback (127.0.0.1, ::1), to the cloud metadata
//! address 169.254.169.254 (and a metadata host name), and to a name that resolves to a
//! private address (10.0.0.1) is refused with `permission_denied`, before any connection.
//!
//! Built so that nothing can leave the machine even if the refusal were broken: the kernel
//! under test runs in a network namespace of its own whose only interface is `lo` (asserted:
//! no IPv4 route, IPv6 routes through `lo` only), names are answered by the kernel's injected
//! resolver (`--http-resolve`, never /etc/hosts or DNS), and the loopback targets are
//! listeners this test opens inside that namespace, which must see no connection at all. A
//! broken refusal would show as a connection to those listeners or as a connect error
//! (`unavailable`: no route), never as `permission_denied`.

#![allow(clippy::unwrap_used)]

use std::net::TcpListener;

use clove_tests::http_server::TestServer;
use clove_tests::{netns_only_loopback, JsonConn, Kernel, KernelOpts};
use serde_json::json;

const HTTP: u8 = 0x50;

/// A listener bound to `addr` inside the network namespace of process `pid` (only the
/// helper thread enters it; the socket stays in that namespace).
fn listener_in_netns_of(pid: u32, addr: &'static str) -> std::io::Result<TcpListener> {
    std::thread::spawn(move || {
        let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)?;
        TcpListener::bind(addr)
    })
    .join()
    .unwrap()
}

#[test]
fn http_refuses_loopback_metadata_and_private_addresses_by_default() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "SKIP: http_refuses_loopback_metadata_and_private_addresses_by_default: \
             needs root (a network namespace for the kernel under test)"
        );
        return;
    }
    let kernel = Kernel::start_with(KernelOpts {
        args: vec![
            "--http-resolve".into(),
            "name.test=10.0.0.1,meta.test=169.254.169.254,both.test=10.0.0.1,both.test=127.0.0.1"
                .into(),
        ],
        own_netns: true,
        ..KernelOpts::default()
    })
    .unwrap();
    // Nothing the kernel sends can leave: its namespace has lo and no route beyond it.
    let isolation = netns_only_loopback(kernel.pid()).unwrap();

    let v4 =
        TestServer::start_on(listener_in_netns_of(kernel.pid(), "127.0.0.1:0").unwrap()).unwrap();
    // IPv6 may be off on a host; then ::1 is tried on port 80, where nothing listens.
    let v6 = listener_in_netns_of(kernel.pid(), "[::1]:0")
        .ok()
        .map(|l| TestServer::start_on(l).unwrap());
    let v6_url = v6
        .as_ref()
        .map_or("http://[::1]/".to_owned(), |s| s.url("/"));

    let mut c = JsonConn::open(&kernel).unwrap();
    let cases = [
        (v4.url("/"), "127.0.0.1 is a loopback address"),
        (
            v4.url("/echo").replace("127.0.0.1", "127.1"),
            "127.0.0.1 is a loopback address",
        ),
        (
            format!("http://[::ffff:127.0.0.1]:{}/", v4.port()),
            "loopback address",
        ),
        (v6_url, "::1 is a loopback address"),
        (
            "http://169.254.169.254/latest/meta-data/".to_owned(),
            "169.254.169.254 is a cloud metadata (link-local) address",
        ),
        (
            "http://metadata.google.internal/computeMetadata/v1/".to_owned(),
            "cloud metadata host name",
        ),
        (
            "http://name.test/".to_owned(),
            "name.test resolves only to refused addresses: 10.0.0.1 is a private address",
        ),
        (
            "http://meta.test/latest/".to_owned(),
            "169.254.169.254 is a cloud metadata",
        ),
        (
            format!("http://both.test:{}/", v4.port()),
            "both.test resolves only to refused addresses",
        ),
    ];
    for (url, says) in &cases {
        for is_async in [false, true] {
            let r = c
                .call(HTTP, json!({"url": url, "async": is_async, "timeout": 5}))
                .unwrap();
            if is_async && r["status"] == "accepted" {
                // Names are refused by the resolver, inside the work: the result says so.
                let poll = c.call(0x80, json!({"wait_ms": 10000})).unwrap();
                let payload: serde_json::Value =
                    serde_json::from_str(poll["results"][0]["payload"].as_str().unwrap()).unwrap();
                assert_eq!(payload["code"], "permission_denied", "{url}: {payload}");
                assert!(
                    payload["error"].as_str().unwrap().contains(says),
                    "{url}: {payload}"
                );
                continue;
            }
            assert_eq!(r["success"], false, "{url}: {r}\n{isolation}");
            assert_eq!(r["code"], "permission_denied", "{url}: {r}\n{isolation}");
            let error = r["error"].as_str().unwrap();
            assert!(error.contains(says), "{url}: {says:?} not in {error:?}");
        }
    }
    assert_eq!(v4.connections(), 0, "a refused request reached 127.0.0.1");
    assert_eq!(
        v6.map_or(0, |s| s.connections()),
        0,
        "a refused request reached ::1"
    );
}
