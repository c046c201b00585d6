//! Agents: the table of running and exited agents, their identities and the lifecycle
//! syscalls' logic (SPAWN, KILL, LIST, PAUSE, RESUME, WAIT).

// The manager that drives these lands with the launcher.
#![allow(dead_code)]

pub mod plan;
pub mod uids;
