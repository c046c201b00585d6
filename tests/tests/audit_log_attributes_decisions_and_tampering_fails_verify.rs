//! The audit log end to end: an operator's SPAWN and KILL are audited as the operator's
//! decisions, an agent's refused requests as the kernel's (SECURITY, PERMISSION_DENIED, with
//! the agent as the caller), an agent reads only its own entries, SET_AUDIT_CONFIG is audited;
//! `clove audit verify` passes on the live log and on the stopped kernel's, and fails (exit 1,
//! naming the problem) once a line is edited, lines are cut off the end, or the last line is
//! cut mid-way.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use clove_sdk::msg::{AuditCategory, AuditEntry, GetAuditLogRequest, SetAuditConfigRequest};
use clove_tests::{
    agents_can_run, cli_bin, client, kill_agent, plan_request, plan_step, run_to_exit, spawn_ok,
    spawn_request, wait_exit, wait_output_line, Kernel,
};
use serde_json::json;

const KILL: u8 = 0x11;
const GET_AUDIT_LOG: u8 = 0x76;
const SET_AUDIT_CONFIG: u8 = 0x77;

fn verify(dir: &Path, json: bool) -> (Option<i32>, String) {
    let mut cmd = Command::new(cli_bin());
    cmd.args(["audit", "verify", "--dir"]).arg(dir);
    if json {
        cmd.arg("--json");
    }
    let (status, out, err) = run_to_exit(&mut cmd, Duration::from_secs(30)).unwrap();
    (status.code(), format!("{out}{err}"))
}

fn find<'a>(entries: &'a [AuditEntry], event: &str, agent: u32) -> Vec<&'a AuditEntry> {
    entries
        .iter()
        .filter(|e| e.event_type == event && e.agent_id == agent)
        .collect()
}

/// A copy of the audit dir to damage.
fn copy_of(dir: &Path, into: &Path) -> std::path::PathBuf {
    let to = into.join(format!("audit-{}", std::process::id()));
    std::fs::create_dir_all(&to).unwrap();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
    to
}

#[test]
fn audit_log_attributes_decisions_and_tampering_fails_verify() {
    if !agents_can_run("audit_log_attributes_decisions_and_tampering_fails_verify") {
        return;
    }
    let mut kernel = Kernel::start().unwrap();
    let audit_dir = kernel.state_dir.join("audit");
    let mut c = client(&kernel).unwrap();

    let sleeper = spawn_ok(&mut c, &spawn_request("audited-sleeper", "agent_sleep.py")).unwrap();
    wait_output_line(&kernel, sleeper.id, "READY", Duration::from_secs(30)).unwrap();
    // An agent that tries what it may not, then reads the log.
    let plan = json!([
        {"op": SET_AUDIT_CONFIG, "payload": {"log_syscalls": true}},
        {"op": KILL, "payload": {"id": sleeper.id}},
        {"op": GET_AUDIT_LOG, "payload": {"agent_id": sleeper.id}},
        {"op": GET_AUDIT_LOG, "payload": {"limit": 1000}},
    ]);
    let planner = spawn_ok(&mut c, &plan_request("audited-planner", &plan)).unwrap();
    let limit = Duration::from_secs(30);
    for (step, code) in [
        (0, "permission_denied"),
        (1, "permission_denied"),
        (2, "permission_denied"),
    ] {
        let s = plan_step(&kernel, planner.id, step, limit).unwrap();
        assert_eq!(s["reply"]["code"], code, "step {step}: {s}");
    }
    let own = plan_step(&kernel, planner.id, 3, limit).unwrap();
    assert_eq!(own["reply"]["success"], true, "{own}");
    let seen = own["reply"]["entries"].as_array().unwrap();
    assert!(!seen.is_empty(), "{own}");
    assert!(
        seen.iter().all(|e| e["agent_id"] == planner.id),
        "an agent sees only its own entries: {own}"
    );
    wait_exit(&mut c, planner.id, limit).unwrap();
    kill_agent(&mut c, sleeper.id).unwrap();

    // The root operator turns syscall logging on: audited, and it takes effect.
    let r = c
        .set_audit_config(&SetAuditConfigRequest {
            log_syscalls: Some(true),
            ..SetAuditConfigRequest::default()
        })
        .unwrap();
    assert!(r.success && r.config.log_syscalls && r.config.log_lifecycle);
    c.noop(b"x").unwrap();

    let log = c
        .get_audit_log(&GetAuditLogRequest {
            limit: 10_000,
            ..GetAuditLogRequest::default()
        })
        .unwrap();
    let entries = &log.entries;
    assert_eq!(log.count as usize, entries.len());
    assert!(
        entries.windows(2).all(|w| w[1].id == w[0].id + 1),
        "{entries:#?}"
    );
    assert!(entries
        .iter()
        .all(|e| e.hash.as_ref().is_some_and(|h| h.len() == 64)));
    let me = "operator:0";

    let spawned = find(entries, "AGENT_SPAWNED", sleeper.id);
    assert_eq!(spawned.len(), 1, "{entries:#?}");
    assert_eq!(spawned[0].category, AuditCategory::AgentLifecycle);
    assert_eq!(spawned[0].decided_by.as_deref(), Some(me));
    assert_eq!(spawned[0].agent_name.as_deref(), Some("audited-sleeper"));

    let exited = find(entries, "AGENT_EXITED", sleeper.id);
    assert_eq!(exited.len(), 1, "{entries:#?}");
    assert_eq!(
        exited[0].decided_by.as_deref(),
        Some(me),
        "KILL is the operator's decision"
    );
    assert_eq!(exited[0].details.0["killed"], true);

    // The planner exited by itself: observed by the kernel.
    let done = find(entries, "AGENT_EXITED", planner.id);
    assert_eq!(done.len(), 1, "{entries:#?}");
    assert_eq!(done[0].decided_by.as_deref(), Some("kernel"));
    assert!(done[0].success);

    // Three refusals of the agent: the kernel's decisions, the agent the caller.
    let denied = find(entries, "PERMISSION_DENIED", planner.id);
    let opcodes: Vec<&str> = denied
        .iter()
        .map(|e| e.details.0["opcode"].as_str().unwrap())
        .collect();
    assert_eq!(
        opcodes,
        ["SET_AUDIT_CONFIG", "KILL", "GET_AUDIT_LOG"],
        "{denied:#?}"
    );
    for e in &denied {
        assert_eq!(e.category, AuditCategory::Security);
        assert!(!e.success);
        assert_eq!(e.decided_by.as_deref(), Some("kernel"));
        assert_eq!(e.details.0["caller"], format!("agent:{}", planner.id));
        assert_eq!(e.agent_name.as_deref(), Some("audited-planner"));
    }

    let changed: Vec<_> = entries
        .iter()
        .filter(|e| e.event_type == "AUDIT_CONFIG_CHANGED")
        .collect();
    assert_eq!(changed.len(), 1, "{entries:#?}");
    assert_eq!(changed[0].decided_by.as_deref(), Some(me));
    assert_eq!(changed[0].details.0["after"]["log_syscalls"], true);
    assert!(
        entries.iter().any(|e| e.category == AuditCategory::Syscall
            && e.details.0["opcode"] == "NOOP"
            && e.decided_by.as_deref() == Some(me)),
        "{entries:#?}"
    );
    // Filters.
    let security = c
        .get_audit_log(&GetAuditLogRequest {
            category: Some("security".into()),
            agent_id: Some(planner.id),
            ..GetAuditLogRequest::default()
        })
        .unwrap();
    assert_eq!(security.count, 3, "{security:#?}");

    // Verification with the kernel up, then down.
    let (code, out) = verify(&audit_dir, false);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(": intact:"), "{out}");
    drop(c);
    let status = kernel
        .signal_and_keep(libc::SIGTERM, Duration::from_secs(20))
        .unwrap();
    assert!(status.success(), "{status}");
    let (code, out) = verify(&audit_dir, true);
    assert_eq!(code, Some(0), "{out}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["intact"], true, "{report}");
    assert_eq!(report["unanchored"], 0, "{report}");
    let text = std::fs::read_to_string(audit_dir.join("audit.log")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() > 10);

    // A hand-edited line: found at its line.
    let edited = copy_of(&audit_dir, kernel.dir.path());
    let mut changed = lines.clone();
    let line3 = changed[2].replacen("\"success\":true", "\"success\":false", 1);
    assert_ne!(line3, changed[2]);
    changed[2] = &line3;
    std::fs::write(edited.join("audit.log"), changed.join("\n") + "\n").unwrap();
    let (code, out) = verify(&edited, false);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("edited: audit.log line 3 (id 3)"), "{out}");
    std::fs::remove_dir_all(&edited).unwrap();

    // Lines cut off the end: the anchor says what is missing.
    let cut = copy_of(&audit_dir, kernel.dir.path());
    let n = lines.len();
    std::fs::write(cut.join("audit.log"), lines[..n - 2].join("\n") + "\n").unwrap();
    let (code, out) = verify(&cut, false);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("truncated:") && out.contains("cut off the end"),
        "{out}"
    );

    // The last line cut mid-way.
    let bytes = text.as_bytes();
    std::fs::write(cut.join("audit.log"), &bytes[..bytes.len() - 30]).unwrap();
    let (code, out) = verify(&cut, false);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains(&format!("audit.log line {n}")), "{out}");
    // A line deleted in the middle.
    let mut fewer = lines.clone();
    fewer.remove(4);
    std::fs::write(cut.join("audit.log"), fewer.join("\n") + "\n").unwrap();
    let (code, out) = verify(&cut, false);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("missing: entry 5 missing"), "{out}");
}
