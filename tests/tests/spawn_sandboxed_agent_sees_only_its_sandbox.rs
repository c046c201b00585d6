//! A sandboxed agent with default limits is contained, proven from inside: the probe
//! (tests/python/sandbox_probe.py) reports what it sees and this test checks every layer.
//! The canary is a world-readable file in a world-searchable directory outside the script's
//! project, so the agent's uid could read it if the sandbox were missing (the unsandboxed
//! test shows the same probe seeing it).

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use clove_tests::{
    agent_output, agents_can_run, client, proc_uid, spawn_ok, spawn_request, wait_exit,
    wait_output_line, Kernel,
};

const TEST: &str = "spawn_sandboxed_agent_sees_only_its_sandbox";

#[test]
fn spawn_sandboxed_agent_sees_only_its_sandbox() {
    if !agents_can_run(TEST) {
        return;
    }
    let (_canary_dir, canary) = clove_tests::canary_file("the sandbox leaks\n");

    let kernel = Kernel::start().unwrap();
    let kernel_uid = proc_uid(kernel.pid() as i32).unwrap();
    let mut c = client(&kernel).unwrap();
    let mut req = spawn_request("Probe-Sandbox", "sandbox_probe.py");
    req.args = vec![canary.to_string_lossy().into_owned()];
    let spawned = spawn_ok(&mut c, &req).unwrap();

    // The reply says every layer is in force.
    let iso = &spawned.isolation;
    assert!(iso.fully_isolated, "not fully isolated: {iso:?}");
    assert!(iso.not_applied.is_empty(), "not applied: {iso:?}");
    assert!(iso.degraded_reason.is_none(), "{iso:?}");
    let ns = iso.namespaces;
    assert!(ns.pid && ns.net && ns.mnt && ns.uts, "namespaces: {ns:?}");
    let cg = iso.cgroups;
    assert!(
        cg.available && cg.memory_limit && cg.cpu_quota && cg.pids_limit,
        "cgroups: {cg:?}"
    );

    let line = wait_output_line(&kernel, spawned.id, "PROBE ", Duration::from_secs(20)).unwrap();
    let p: serde_json::Value = serde_json::from_str(&line).unwrap();
    let done = wait_exit(&mut c, spawned.id, Duration::from_secs(20)).unwrap();
    let output = agent_output(&kernel, spawned.id).unwrap();
    assert_eq!(
        (done.exit_code, done.signal),
        (Some(0), None),
        "probe failed: {done:?}\n{output}"
    );

    // Identity: an unprivileged uid of its own.
    let uid = p["uid"].as_u64().unwrap();
    assert_ne!(uid, 0, "runs as root: {p}");
    assert_ne!(uid, u64::from(kernel_uid), "runs as the kernel's uid: {p}");
    // Privileges: seccomp filter, no_new_privs, empty bounding and effective sets.
    assert_eq!(p["seccomp"], "2", "{p}");
    assert_eq!(p["no_new_privs"], "1", "{p}");
    assert_eq!(p["cap_bnd"], "0000000000000000", "{p}");
    assert_eq!(p["cap_eff"], "0000000000000000", "{p}");
    // Its own pid namespace: it is PID 2 under init (PID 1), and /proc shows nothing else.
    assert_eq!(
        (p["pid"].as_u64(), p["ppid"].as_u64()),
        (Some(2), Some(1)),
        "{p}"
    );
    assert_eq!(p["procs"], serde_json::json!([1, 2]), "{p}");
    // Its own uts namespace, named after the agent.
    assert_eq!(p["hostname"], "probe-sandbox", "{p}");
    // Its own file system view: no canary, read-only root, writable work dir and /tmp.
    assert_eq!(
        p["canary_visible"],
        false,
        "canary {} visible: {p}",
        canary.display()
    );
    assert_eq!(p["write_root"], "EROFS", "{p}");
    assert_eq!(p["write_work"], "ok", "{p}");
    assert_eq!(p["write_tmp"], "ok", "{p}");
    // No way out: no user namespace, no setuid(0); threads still work.
    assert_eq!(p["unshare_user"], "EPERM", "{p}");
    assert_eq!(p["setuid_root"], "EPERM", "{p}");
    assert_eq!(p["threads"], 4, "{p}");
    // The socket in argv[1] and the original's hard-coded /tmp/clove.sock both reach the
    // kernel, and the kernel knows the caller as the agent SPAWN created.
    assert_eq!(
        p["argv"][1],
        kernel.socket.to_string_lossy().as_ref(),
        "{p}"
    );
    for which in ["hello", "compat_hello"] {
        let h = &p[which];
        assert_eq!(h["opcode"], 0xFE, "{which}: {h}");
        assert_eq!(h["reply"]["success"], true, "{which}: {h}");
        assert_eq!(
            h["agent_id"].as_u64(),
            Some(u64::from(spawned.id)),
            "{which}: the reply header names another caller: {h}"
        );
    }
}
