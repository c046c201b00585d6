//! A saved agent whose script is gone when the kernel restarts is not restored: the kernel's
//! log and the agent's own log say why, its spec is forgotten (it does not come back even
//! once the script is back), and the other saved agents are restored as usual.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use clove_sdk::msg::RestartPolicy;
use clove_tests::{
    agent_output, agents_can_run, client, list_agents, python_script, restart_request, spawn_ok,
    wait_output_line, Kernel, KernelOpts,
};

const LONG: Duration = Duration::from_secs(30);

fn on_state_dir(first: &Kernel) -> Kernel {
    Kernel::start_with(KernelOpts {
        state_dir: Some(first.state_dir.clone()),
        capture_stderr: true,
        ..KernelOpts::default()
    })
    .unwrap()
}

fn live_names(kernel: &Kernel) -> Vec<(u32, String)> {
    let mut c = client(kernel).unwrap();
    list_agents(&mut c)
        .unwrap()
        .into_iter()
        .map(|a| (a.id, a.name))
        .collect()
}

#[test]
fn kernel_restart_forgets_an_agent_whose_script_is_gone() {
    if !agents_can_run("kernel_restart_forgets_an_agent_whose_script_is_gone") {
        return;
    }
    // The fragile agent's script is a copy that the test removes.
    let scripts = tempfile::Builder::new()
        .prefix("clove-fragile-")
        .tempdir()
        .unwrap();
    let copy = scripts.path().join("fragile.py");
    std::fs::copy(python_script("agent_restarts.py"), &copy).unwrap();

    let mut first = Kernel::start().unwrap();
    let mut c = client(&first).unwrap();
    let mut req = restart_request("fragile", "sleep", RestartPolicy::Always, 100);
    req.script = copy.to_string_lossy().into_owned();
    let fragile = spawn_ok(&mut c, &req).unwrap();
    let sturdy = spawn_ok(
        &mut c,
        &restart_request("sturdy", "sleep", RestartPolicy::OnFailure, 100),
    )
    .unwrap();
    for a in [&fragile, &sturdy] {
        wait_output_line(&first, a.id, &format!("RUN 1 id={}", a.id), LONG).unwrap();
    }
    drop(c);
    first.sigkill().unwrap();

    std::fs::remove_file(&copy).unwrap();
    let second = on_state_dir(&first);
    assert_eq!(live_names(&second), [(sturdy.id, "sturdy".to_owned())]);
    let out = agent_output(&second, fragile.id).unwrap();
    let gone = format!("script {}: No such file", copy.display());
    assert!(
        out.lines().any(
            |l| l.starts_with("--- clove: not restored after a kernel restart: ")
                && l.contains(&gone)
                && l.contains("its spec and agent-scoped keys are dropped")
        ),
        "the agent's log says why:\n{out}"
    );
    let (status, stderr) = second.stop_and_collect().unwrap();
    assert!(status.success(), "{status}: {stderr}");
    let said = format!("agent {} (fragile) not restored: ", fragile.id);
    assert!(
        stderr
            .lines()
            .any(|l| l.contains(&said) && l.contains(&gone)),
        "the kernel's log says why:\n{stderr}"
    );

    // Forgotten: the script's return does not bring it back.
    std::fs::copy(python_script("agent_restarts.py"), &copy).unwrap();
    let third = on_state_dir(&first);
    assert_eq!(live_names(&third), [(sturdy.id, "sturdy".to_owned())]);
    let (status, stderr) = third.stop_and_collect().unwrap();
    assert!(status.success(), "{status}: {stderr}");
    assert!(!stderr.contains("fragile"), "{stderr}");
}
