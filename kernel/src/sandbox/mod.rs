//! The spawn recipe (shared/DESIGN.md, "Spawning an agent"): everything that turns an agent
//! spec into an isolated, limited process.
//!
//! * [`cgroup`]: the cgroupfs layer (v1, v2, hybrid) behind a trait with a fake tree;
//! * [`privileges`] and [`seccomp`]: what the agent process does to itself right before exec
//!   (uid/gid switch, capabilities, no_new_privs, Landlock, rlimits, the seccomp filter);
//! * [`launch`]: the kernel side: one long-lived thread clones into new namespaces and execs
//!   the kernel binary in init mode;
//! * [`init`], [`mounts`], [`net`]: PID 1 inside the sandbox: builds the root file system,
//!   brings loopback up, forks the agent, forwards signals, reaps, exits with its status;
//! * [`control`]: the channel on which the kernel has init run an agent's EXEC commands
//!   inside the sandbox.

pub mod cgroup;
pub mod control;
pub mod forkserver;
pub mod init;
pub mod interpreter;
pub mod launch;
pub mod mounts;
pub mod net;
pub mod privileges;
pub mod seccomp;
