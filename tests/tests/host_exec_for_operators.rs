//! EXEC for operators, on the host: argv and shell forms, cwd, env, stdout and stderr apart,
//! exit codes and signals, a real timeout that kills the whole process group, an output
//! cap; a non-root operator's command runs with its own uid. An agent's EXEC runs inside its
//! sandbox: see exec_from_an_agent_sees_neither_host_processes_nor_files_outside_its_view.rs.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use clove_tests::{pid_exists, JsonConn, Kernel};
use serde_json::json;

const EXEC: u8 = 0x02;

#[test]
fn exec_runs_commands_for_an_operator() {
    let kernel = Kernel::start().unwrap();
    let mut op = JsonConn::open(&kernel).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path().canonicalize().unwrap();

    // Shell form, the original's reply shape.
    let r = op
        .call(
            EXEC,
            json!({"command": "echo out; echo err >&2; exit 3", "timeout": 20}),
        )
        .unwrap();
    assert_eq!(
        r,
        json!({"success": false, "stdout": "out\n", "stderr": "err\n", "exit_code": 3})
    );
    // argv form (no shell: `$X` stays literal), cwd, env on a clean environment.
    let r = op
        .call(
            EXEC,
            json!({"argv": ["/bin/sh", "-c", "pwd; echo $GREETING; echo $X; env | grep -c . ", "$X"],
                   "cwd": cwd.to_str().unwrap(), "env": {"GREETING": "hi"}}),
        )
        .unwrap();
    assert_eq!(r["success"], true, "{r}");
    let lines: Vec<&str> = r["stdout"].as_str().unwrap().lines().collect();
    assert_eq!(&lines[..3], [cwd.to_str().unwrap(), "hi", ""], "{r}");
    let vars: u32 = lines[3].trim().parse().unwrap();
    assert!(
        vars <= 8,
        "a clean environment, not the kernel's: {vars} variables"
    );
    let r = op
        .call(EXEC, json!({"argv": ["/bin/echo", "$HOME", "a b"]}))
        .unwrap();
    assert_eq!(r["stdout"], "$HOME a b\n", "{r}");
    // Killed by a signal: exit_code -1 and the signal.
    let r = op.call(EXEC, json!({"command": "kill -TERM $$"})).unwrap();
    assert_eq!(
        (r["exit_code"].as_i64(), r["signal"].as_i64()),
        (Some(-1), Some(15)),
        "{r}"
    );
    // The timeout kills the whole group, background children included.
    let pidfile = cwd.join("bg.pid");
    let t0 = Instant::now();
    let r = op
        .call(
            EXEC,
            json!({"command": format!("sleep 300 & echo $! > {}; echo started; wait", pidfile.display()),
                   "timeout": 1}),
        )
        .unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(20),
        "the timeout did not end it"
    );
    assert_eq!(r["timed_out"], true, "{r}");
    assert_eq!(
        r["stdout"], "started\n",
        "output before the timeout is kept: {r}"
    );
    let bg: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while pid_exists(bg) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !pid_exists(bg),
        "the background sleep {bg} outlived its EXEC"
    );
    // Output beyond the cap is read and dropped.
    let r = op
        .call(
            EXEC,
            json!({"command": "head -c 3000000 /dev/zero | tr '\\0' a"}),
        )
        .unwrap();
    assert_eq!(r["truncated"], true);
    assert_eq!(r["stdout"].as_str().unwrap().len(), 1 << 20);
    // Refusals name the field.
    for (req, mentions) in [
        (json!({"command": ""}), "command"),
        (json!({"argv": []}), "argv"),
        (json!({"command": "true", "cwd": "rel"}), "cwd"),
        (json!({"command": "true", "timeout": -1}), "timeout"),
    ] {
        let r = op.call(EXEC, req.clone()).unwrap();
        assert_eq!(r["code"], "invalid_request", "{req}: {r}");
        assert!(r["error"].as_str().unwrap().contains(mentions), "{r}");
        assert_eq!(r["exit_code"], -1, "the original's extra fields: {r}");
    }
    let r = op
        .call(EXEC, json!({"argv": ["/nonexistent/prog"]}))
        .unwrap();
    assert_eq!(r["code"], "not_found", "{r}");

    // async: the original's accept reply now, the real reply through ASYNC_POLL.
    let r = op
        .call(
            EXEC,
            json!({"command": "sleep 0.2; echo later", "async": true, "request_id": 41}),
        )
        .unwrap();
    assert_eq!(
        r,
        json!({"success": true, "stdout": "", "stderr": "", "exit_code": 0, "async": true,
               "request_id": 41, "status": "accepted"})
    );
    let polled = op.call(0x80, json!({"max": 10, "wait_ms": 20000})).unwrap();
    assert_eq!(polled["count"], 1, "{polled}");
    let result = &polled["results"][0];
    assert_eq!(
        (
            result["request_id"].as_u64(),
            result["opcode_name"].as_str()
        ),
        (Some(41), Some("EXEC"))
    );
    let payload: serde_json::Value =
        serde_json::from_str(result["payload"].as_str().unwrap()).unwrap();
    assert_eq!(payload["stdout"], "later\n", "{payload}");

    // Every EXEC is audited: the command, who ran it, how it ended (never the output).
    let log = op
        .call(0x76, json!({"category": "SECURITY", "limit": 1000}))
        .unwrap();
    let execs: Vec<&serde_json::Value> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event_type"] == "EXEC")
        .collect();
    let first = execs
        .iter()
        .find(|e| e["details"]["command"] == "echo out; echo err >&2; exit 3")
        .unwrap_or_else(|| panic!("{execs:#?}"));
    assert_eq!(first["decided_by"], "operator:0");
    assert_eq!(first["details"]["exit_code"], 3);
    assert!(
        !first.to_string().contains("out\\n"),
        "no output in the log"
    );
    assert!(execs
        .iter()
        .any(|e| e["success"] == false && e["details"]["error"]["code"] == "not_found"));
    assert!(execs.iter().any(|e| e["details"]["async"] == true));
}

#[test]
fn a_non_root_operator_runs_commands_as_itself() {
    let kernel = Kernel::start().unwrap();
    let requests = json!([[EXEC, {"command": "id -u; id -g; cat /etc/shadow", "cwd": "/"}]]);
    let Some(replies) = clove_tests::requests_as_nobody(&kernel, &requests).unwrap() else {
        return;
    };
    let r = &replies[0];
    assert_eq!(r["stdout"], "65534\n65534\n", "{r}");
    assert!(
        r["stderr"].as_str().unwrap().contains("Permission denied"),
        "{r}"
    );
    assert_ne!(r["exit_code"], 0, "{r}");
}
