//! LIST answers the original's JSON array `[{id, name, pid, state, running}]` with upper-case
//! states; an agent that has exited is no longer listed, and WAIT by id still answers for it
//! (from the table of exited agents).

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use clove_abi::msg::WaitRequest;
use clove_abi::ErrorCode;
use clove_tests::{
    agents_can_run, client, json_call, kill_agent, list_agents, spawn_ok, spawn_request, wait_exit,
    wait_output_line, Kernel,
};

#[test]
fn list_shows_live_agents_in_original_shape() {
    if !agents_can_run("list_shows_live_agents_in_original_shape") {
        return;
    }
    let kernel = Kernel::start().unwrap();
    let mut c = client(&kernel).unwrap();
    let sleeper = spawn_ok(&mut c, &spawn_request("lister-sleeper", "agent_sleep.py")).unwrap();
    let mut short = spawn_request("lister-short", "agent_exit.py");
    short.args = vec!["code".into(), "0".into()];
    let short = spawn_ok(&mut c, &short).unwrap();
    wait_output_line(&kernel, sleeper.id, "READY", Duration::from_secs(20)).unwrap();

    // The original frame, as the original SDK sends LIST: JSON, empty payload.
    let mut raw = kernel.connect().unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let (header, list) = json_call(&mut raw, 0x12, b"").unwrap();
    assert_eq!(header.opcode, 0x12);
    let rows = list
        .as_array()
        .unwrap_or_else(|| panic!("LIST is not an array: {list}"));
    let row = rows
        .iter()
        .find(|r| r["id"].as_u64() == Some(u64::from(sleeper.id)))
        .unwrap_or_else(|| panic!("sleeper not listed: {list}"));
    for key in ["id", "name", "pid", "state", "running"] {
        assert!(row.get(key).is_some(), "LIST row lacks {key}: {row}");
    }
    assert_eq!(row["name"], "lister-sleeper", "{row}");
    assert_eq!(row["pid"].as_i64(), Some(i64::from(sleeper.pid)), "{row}");
    assert_eq!(row["state"], "RUNNING", "{row}");
    assert_eq!(row["running"], true, "{row}");

    // The short one exits by itself and vanishes from LIST.
    let done = wait_exit(&mut c, short.id, Duration::from_secs(20)).unwrap();
    assert_eq!((done.exit_code, done.signal), (Some(0), None), "{done:?}");
    let rows = list_agents(&mut c).unwrap();
    assert!(
        rows.iter().all(|r| r.id != short.id),
        "exited agent still listed: {rows:?}"
    );
    assert!(rows.iter().any(|r| r.id == sleeper.id), "{rows:?}");

    // WAIT by id after the exit answers from the exited table, as often as asked.
    for _ in 0..2 {
        let again = wait_exit(&mut c, short.id, Duration::from_millis(100)).unwrap();
        assert_eq!(again.agent_id, short.id);
        assert_eq!(
            (again.exit_code, again.signal),
            (Some(0), None),
            "{again:?}"
        );
    }
    // By name too: the last agent of that name, although the name is free again (LIST no
    // longer shows it, and a new agent may take it).
    let by_name = c
        .call(&WaitRequest {
            id: None,
            name: Some("lister-short".into()),
            timeout_ms: Some(100),
        })
        .unwrap();
    assert_eq!((by_name.agent_id, by_name.exited), (short.id, true));
    let unknown = c
        .call(&WaitRequest {
            id: None,
            name: Some("never-was".into()),
            timeout_ms: Some(100),
        })
        .unwrap_err();
    assert_eq!(unknown.code(), Some(&ErrorCode::NotFound), "{unknown}");

    kill_agent(&mut c, sleeper.id).unwrap();
    assert!(list_agents(&mut c).unwrap().is_empty());
}
