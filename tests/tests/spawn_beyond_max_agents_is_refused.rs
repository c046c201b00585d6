//! `max_agents` holds: with `--max-agents 1`, a second SPAWN while one agent lives answers
//! `limit_exceeded`, and once that agent is gone SPAWN works again.

#![allow(clippy::unwrap_used)]

use clove_abi::ErrorCode;
use clove_tests::{
    agents_can_run, client, kill_agent, spawn_ok, spawn_request, Kernel, KernelOpts,
};

#[test]
fn spawn_beyond_max_agents_is_refused() {
    if !agents_can_run("spawn_beyond_max_agents_is_refused") {
        return;
    }
    let kernel = Kernel::start_with(KernelOpts {
        args: vec!["--max-agents".into(), "1".into()],
        ..KernelOpts::default()
    })
    .unwrap();
    let mut c = client(&kernel).unwrap();
    let first = spawn_ok(&mut c, &spawn_request("one", "agent_sleep.py")).unwrap();
    let e = c.call(&spawn_request("two", "agent_sleep.py")).unwrap_err();
    let w = e
        .wire()
        .unwrap_or_else(|| panic!("not a kernel error: {e}"));
    assert_eq!(w.code, ErrorCode::LimitExceeded, "{w:?}");
    assert!(w.message.contains("max_agents"), "{w:?}");
    kill_agent(&mut c, first.id).unwrap();
    let again = spawn_ok(&mut c, &spawn_request("two", "agent_sleep.py")).unwrap();
    kill_agent(&mut c, again.id).unwrap();
}

/// Groups are bounded the same way: with `--max-agents 1`, a second group is refused, and once
/// the first is stopped a new one can be made.
#[test]
fn group_beyond_max_agents_is_refused() {
    let kernel = Kernel::start_with(KernelOpts {
        args: vec!["--max-agents".into(), "1".into()],
        ..KernelOpts::default()
    })
    .unwrap();
    let mut c = client(&kernel).unwrap();
    let req = |name: &str| clove_abi::msg::GroupCreateRequest::new(name);
    c.group_create(&req("a")).unwrap();
    let e = c.group_create(&req("b")).unwrap_err();
    let w = e
        .wire()
        .unwrap_or_else(|| panic!("not a kernel error: {e}"));
    assert_eq!(w.code, ErrorCode::LimitExceeded, "{w:?}");
    assert!(w.message.contains("max_agents"), "{w:?}");
    c.group_stop("a").unwrap();
    c.group_create(&req("b")).unwrap();
}
