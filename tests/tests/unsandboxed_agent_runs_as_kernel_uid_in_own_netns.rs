//! `sandboxed: false` runs the script as the kernel's own uid (root) with the host's view,
//! and the reply says so: not fully isolated, with what is off listed in `not_applied`. It
//! still gets a network namespace of its own unless `network: true`.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use clove_tests::{
    agents_can_run, client, kill_agent, proc_uid, spawn_ok, spawn_request, wait_exit,
    wait_output_line, Kernel,
};

fn net_ns(pid: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/net"))
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

#[test]
fn unsandboxed_agent_runs_as_kernel_uid_in_own_netns() {
    if !agents_can_run("unsandboxed_agent_runs_as_kernel_uid_in_own_netns") {
        return;
    }
    let kernel = Kernel::start().unwrap();
    let kernel_uid = proc_uid(kernel.pid() as i32).unwrap();
    let mut c = client(&kernel).unwrap();

    let mut req = spawn_request("bare", "agent_sleep.py");
    req.sandboxed = false;
    let bare = spawn_ok(&mut c, &req).unwrap();
    wait_output_line(&kernel, bare.id, "READY", Duration::from_secs(20)).unwrap();
    // No init in between: the SPAWN pid is the script, running as the kernel's uid.
    assert_eq!(proc_uid(bare.pid), Some(kernel_uid));
    let iso = &bare.isolation;
    assert!(!iso.fully_isolated, "{iso:?}");
    assert!(iso.degraded_reason.is_some(), "{iso:?}");
    let ns = iso.namespaces;
    assert!(!ns.pid && !ns.mnt && !ns.uts, "{ns:?}");
    assert!(ns.net, "{ns:?}");
    // Every layer that is off is named, by the names the ABI documents.
    let off = &iso.not_applied;
    for layer in ["pid_namespace", "mnt_namespace", "uts_namespace", "seccomp"] {
        assert!(
            off.iter().any(|l| l == layer),
            "{layer} missing from not_applied: {iso:?}"
        );
    }
    assert!(!off.iter().any(|l| l == "net_namespace"), "{iso:?}");
    assert_ne!(
        net_ns(&bare.pid.to_string()),
        net_ns("self"),
        "unsandboxed agent shares the host's network namespace without network: true"
    );

    let mut req = spawn_request("bare-net", "agent_sleep.py");
    req.sandboxed = false;
    req.network = true;
    let net = spawn_ok(&mut c, &req).unwrap();
    wait_output_line(&kernel, net.id, "READY", Duration::from_secs(20)).unwrap();
    assert!(!net.isolation.namespaces.net, "{:?}", net.isolation);
    assert_eq!(
        net_ns(&net.pid.to_string()),
        net_ns("self"),
        "network: true did not give the host's network namespace"
    );

    kill_agent(&mut c, bare.id).unwrap();
    kill_agent(&mut c, net.id).unwrap();
}

/// The probe, unsandboxed, sees what the sandboxed test hides: the canary and the host's
/// pids. This shows that the sandboxed test's canary is a real target.
#[test]
fn unsandboxed_probe_sees_the_host() {
    if !agents_can_run("unsandboxed_probe_sees_the_host") {
        return;
    }
    let (_canary_dir, canary) = clove_tests::canary_file("visible without a sandbox\n");

    let kernel = Kernel::start().unwrap();
    let mut c = client(&kernel).unwrap();
    let mut req = spawn_request("bare-probe", "sandbox_probe.py");
    req.sandboxed = false;
    req.args = vec![canary.to_string_lossy().into_owned()];
    let spawned = spawn_ok(&mut c, &req).unwrap();
    let line = wait_output_line(&kernel, spawned.id, "PROBE ", Duration::from_secs(20)).unwrap();
    let p: serde_json::Value = serde_json::from_str(&line).unwrap();
    let done = wait_exit(&mut c, spawned.id, Duration::from_secs(20)).unwrap();
    assert_eq!(done.exit_code, Some(0), "{done:?}");

    assert_eq!(p["uid"], 0, "{p}");
    assert_eq!(p["canary_visible"], true, "{p}");
    assert_eq!(p["pid"].as_i64(), Some(i64::from(spawned.pid)), "{p}");
    assert!(p["procs"].as_array().unwrap().len() > 2, "{p}");
    assert_eq!(p["seccomp"], "0", "{p}");
    // Its own socket (argv[1]) still identifies it.
    assert_eq!(
        p["hello"]["agent_id"].as_u64(),
        Some(u64::from(spawned.id)),
        "{p}"
    );
}

/// `not_applied` is for machines: its names are the ones `clove_abi::msg::Isolation`
/// documents (`pid_namespace`, `mnt_namespace`, `uts_namespace`, ...), so a client can match
/// them exactly.
#[test]
fn unsandboxed_not_applied_uses_the_documented_names() {
    if !agents_can_run("unsandboxed_not_applied_uses_the_documented_names") {
        return;
    }
    let kernel = Kernel::start().unwrap();
    let mut c = client(&kernel).unwrap();
    let mut req = spawn_request("bare-names", "agent_exit.py");
    req.sandboxed = false;
    req.args = vec!["code".into(), "0".into()];
    let spawned = spawn_ok(&mut c, &req).unwrap();
    let not_applied = &spawned.isolation.not_applied;
    for name in ["pid_namespace", "mnt_namespace", "uts_namespace"] {
        assert!(
            not_applied.iter().any(|n| n == name),
            "{name} missing from not_applied: {not_applied:?}"
        );
    }
    wait_exit(&mut c, spawned.id, Duration::from_secs(20)).unwrap();
}
