//! A fake kernel that answers the lifecycle syscalls with canned agents and records every
//! request it decoded, so tests can check what a client or the `clove` binary sent, and how
//! it shows the replies, without a real kernel.
//!
//! | request                         | answer                                                 |
//! |---------------------------------|--------------------------------------------------------|
//! | SPAWN                           | agent 7 with the request's name, pid 4242, cgroup v1,  |
//! |                                 | every namespace, `not_applied: ["landlock"]`           |
//! | KILL/PAUSE/RESUME `ghost`       | `not_found`: `no live agent named "ghost"`             |
//! | KILL/PAUSE/RESUME anything else | success, `agent_id` = the id asked for, else 7         |
//! | LIST                            | [`rows`] (live only, or with `detail` the exited too)  |
//! | WAIT id 7 / `worker`            | exited with code 3 / code 0                            |
//! | WAIT id 8                       | killed by signal 9, oom                                |
//! | WAIT id 9                       | still running (`exited: false`)                        |
//! | LOGS without offset             | the last `lines` of `line 1`..`line 5`, next 35        |
//! | LOGS offset 35 / 40             | `more\n` (running) / nothing, not running              |
//! | anything else                   | `unknown_opcode`                                       |
//!
//! Every reply header carries agent id 42 and the request's codec.

#![allow(clippy::unwrap_used, dead_code)]

use std::io::{BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread;

use clove_abi::codec::{self, Codec};
use clove_abi::frame::{FrameHeader, HEADER_LEN};
use clove_abi::msg::{
    AgentEntry, AgentState, CgroupStatus, CgroupVersion, Isolation, KillReply, KillRequest,
    ListReply, ListRequest, LogsReply, LogsRequest, Namespaces, PauseReply, PauseRequest,
    ResumeReply, ResumeRequest, SpawnReply, SpawnRequest, WaitReply, WaitRequest,
};
use clove_abi::{ErrorCode, Opcode, Syscall, WireError};
use serde::Serialize;
use serde_json::Value;

/// One request as the fake kernel decoded it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Its opcode.
    pub opcode: Opcode,
    /// The codec it came in.
    pub codec: Codec,
    /// The typed request, as JSON (so tests can compare field by field).
    pub request: Value,
}

/// A fake kernel listening until the test process ends.
pub struct FakeAgents {
    /// Holds the socket.
    pub dir: tempfile::TempDir,
    /// The socket.
    pub socket: PathBuf,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl FakeAgents {
    pub fn start() -> FakeAgents {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("fake.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let log = Arc::clone(&log);
                thread::spawn(move || serve(stream, &log));
            }
        });
        FakeAgents { dir, socket, seen }
    }

    /// Every request received so far, oldest first.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The requests received so far with `opcode`, as JSON.
    pub fn requests(&self, opcode: Opcode) -> Vec<Value> {
        self.seen()
            .into_iter()
            .filter(|s| s.opcode == opcode)
            .map(|s| s.request)
            .collect()
    }
}

/// The agents LIST reports: live ones, then (with `detail`) one that has exited.
pub fn rows(detail: bool) -> Vec<AgentEntry> {
    let live = |id, name: &str, pid, state, uptime_ms| AgentEntry {
        id,
        name: name.into(),
        pid,
        state,
        running: true,
        restarts: Some(0),
        uptime_ms: Some(uptime_ms),
        ..AgentEntry::default()
    };
    // Out of id order on purpose: `clove ps` sorts.
    let mut rows = vec![
        live(12, "database-writer", 4300, AgentState::Paused, 7_500_000),
        live(7, "worker", 4242, AgentState::Running, 187_000),
    ];
    if detail {
        rows.push(AgentEntry {
            id: 3,
            name: "old".into(),
            pid: 4100,
            state: AgentState::Stopped,
            running: false,
            exit: Some("exited with code 0".into()),
            ..AgentEntry::default()
        });
    }
    rows
}

const LOG: &str = "line 1\nline 2\nline 3\nline 4\nline 5\n";

fn serve(stream: UnixStream, seen: &Mutex<Vec<Seen>>) {
    let mut out = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let mut head = [0u8; HEADER_LEN];
        if reader.read_exact(&mut head).is_err() {
            return;
        }
        let Ok(header) = FrameHeader::decode(&head) else {
            return;
        };
        let mut payload = vec![0u8; header.payload_len as usize];
        if reader.read_exact(&mut payload).is_err() {
            return;
        }
        let (c, op) = (header.codec, header.opcode);
        let reply = match Opcode::from_u8(op) {
            Some(Opcode::Spawn) => answer::<SpawnRequest>(c, &payload, seen, spawn),
            Some(Opcode::Kill) => answer::<KillRequest>(c, &payload, seen, |r| {
                control(r.id, r.name.as_deref()).map(|agent_id| KillReply {
                    success: true,
                    killed: true,
                    agent_id,
                })
            }),
            Some(Opcode::Pause) => answer::<PauseRequest>(c, &payload, seen, |r| {
                control(r.id, r.name.as_deref()).map(|agent_id| PauseReply {
                    success: true,
                    paused: true,
                    agent_id,
                })
            }),
            Some(Opcode::Resume) => answer::<ResumeRequest>(c, &payload, seen, |r| {
                control(r.id, r.name.as_deref()).map(|agent_id| ResumeReply {
                    success: true,
                    resumed: true,
                    agent_id,
                })
            }),
            Some(Opcode::List) => {
                answer::<ListRequest>(c, &payload, seen, |r| Ok(ListReply(rows(r.detail))))
            }
            Some(Opcode::Wait) => answer::<WaitRequest>(c, &payload, seen, wait),
            Some(Opcode::Logs) => answer::<LogsRequest>(c, &payload, seen, logs),
            _ => codec::encode_reply::<()>(c, op, Err(&WireError::unknown_opcode(op))).unwrap(),
        };
        let frame = clove_abi::frame::encode_frame(c, 42, op, &reply);
        if out.write_all(&frame).is_err() {
            return;
        }
    }
}

/// Decodes a request of type `R`, records it, and encodes `handle`'s answer.
fn answer<R: Syscall + Serialize>(
    c: Codec,
    payload: &[u8],
    seen: &Mutex<Vec<Seen>>,
    handle: impl FnOnce(R) -> Result<R::Reply, WireError>,
) -> Vec<u8> {
    let op = R::OPCODE.as_u8();
    match codec::decode_request::<R>(c, payload) {
        Err(e) => codec::encode_reply::<R::Reply>(c, op, Err(&e.into())).unwrap(),
        Ok(req) => {
            seen.lock().unwrap().push(Seen {
                opcode: R::OPCODE,
                codec: c,
                // As the JSON codec writes it: absent optional fields left out.
                request: serde_json::from_slice(&codec::encode(Codec::Json, &req).unwrap())
                    .unwrap(),
            });
            match handle(req) {
                Ok(reply) => codec::encode_reply(c, op, Ok(&reply)).unwrap(),
                Err(e) => codec::encode_reply::<R::Reply>(c, op, Err(&e)).unwrap(),
            }
        }
    }
}

fn spawn(req: SpawnRequest) -> Result<SpawnReply, WireError> {
    Ok(SpawnReply {
        id: 7,
        name: req.name,
        pid: 4242,
        restart_policy: req.restart_policy,
        isolation: Isolation {
            fully_isolated: false,
            namespaces: Namespaces {
                pid: true,
                net: !req.network,
                mnt: true,
                uts: true,
            },
            cgroups: CgroupStatus {
                available: true,
                memory_limit: true,
                cpu_quota: true,
                pids_limit: true,
                version: Some(CgroupVersion::V1),
            },
            degraded_reason: Some("not in force: landlock".into()),
            not_applied: vec!["landlock".into()],
        },
        ..SpawnReply::default()
    })
}

fn control(id: Option<u32>, name: Option<&str>) -> Result<u32, WireError> {
    match (id, name) {
        (Some(id), _) => Ok(id),
        (None, Some("ghost")) => Err(WireError::new(
            ErrorCode::NotFound,
            "no live agent named \"ghost\"",
        )),
        (None, Some(_)) => Ok(7),
        (None, None) => Err(WireError::invalid_request("give the agent's id or name")),
    }
}

fn wait(req: WaitRequest) -> Result<WaitReply, WireError> {
    let done = |agent_id, exit_code, signal, oom, reason: &str| WaitReply {
        success: true,
        agent_id,
        exited: true,
        exit_code,
        signal,
        oom,
        reason: Some(reason.into()),
    };
    match (req.id, req.name.as_deref()) {
        (Some(7), _) => Ok(done(7, Some(3), None, false, "exited with code 3")),
        (Some(8), _) => Ok(done(
            8,
            None,
            Some(9),
            true,
            "killed by signal 9 (out of memory)",
        )),
        (Some(9), _) => Ok(WaitReply {
            success: true,
            agent_id: 9,
            exited: false,
            ..WaitReply::default()
        }),
        (None, Some("worker")) => Ok(done(7, Some(0), None, false, "exited with code 0")),
        _ => Err(WireError::new(ErrorCode::NotFound, "no such agent")),
    }
}

fn logs(req: LogsRequest) -> Result<LogsReply, WireError> {
    let reply = |text: &str, next_offset, running| LogsReply {
        success: true,
        agent_id: req.id.unwrap_or(7),
        text: text.into(),
        next_offset,
        running,
        first_offset: 0,
    };
    Ok(match req.offset {
        None => {
            let lines: Vec<&str> = LOG.lines().collect();
            let from = lines.len().saturating_sub(req.lines as usize);
            let text: String = lines[from..].iter().map(|l| format!("{l}\n")).collect();
            reply(&text, LOG.len() as u64, true)
        }
        Some(35) => reply("more\n", 40, true),
        Some(_) => reply("", 40, false),
    })
}
