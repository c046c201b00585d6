//! Host access: what agents and operators reach outside the kernel through checked syscalls
//! (READ and WRITE in [`files`], EXEC in [`exec`]). See docs/host-access.md.

pub mod exec;
pub mod files;
