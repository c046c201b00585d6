//! The agent's seccomp filter: the last gate between an agent and the kernel's syscall surface.
//!
//! This module owns the syscall policy (one table, [`table`]) and its compilation to classic BPF.
//! The policy is a deny list on top of "allow": the uid switch, the empty capability sets and
//! Landlock already do the access control; the filter removes the kernel interfaces an
//! unprivileged process can still reach and that a sandboxed agent never needs (above all
//! namespaces: without the filter an unprivileged agent can create a user namespace, become
//! root in it and mount), plus defence in depth for interfaces that only capabilities guard.
//!
//! Three kinds of verdict:
//! * `EPERM` for the denied calls, so well-behaved programs get an ordinary error;
//! * `ENOSYS` for `clone3`: its flags sit in a struct behind a pointer that BPF cannot read, and
//!   glibc (2.34+) falls back to `clone`, whose flags are in a register we can check, only on
//!   `ENOSYS`; with `EPERM` `pthread_create` fails and Python cannot start threads;
//! * kill the process for a foreign syscall ABI. The host runs 32-bit programs (`int $0x80`,
//!   `AUDIT_ARCH_I386`) and may run x32 (`AUDIT_ARCH_X86_64` with bit 30 set in the syscall
//!   number); both have their own syscall numbers, so a table keyed on x86_64 numbers says
//!   nothing about them. The program starts with a prelude that kills both (the architecture
//!   check, then the x32 bit), before it looks at the syscall number.
//!
//! The program is generated here (a binary search over the table's numbers, see
//! [`agent_filter`]); seccompiler only supplies the types and installs it.
//!
//! Syscalls deliberately left allowed: `adjtimex` (reading the clock state is harmless and
//! setting it needs `CAP_SYS_TIME`; note that glibc implements it with `clock_adjtime`, which is
//! denied, so the agent effectively cannot use either), `kcmp` and `process_madvise` (both
//! gated by ptrace access checks, which other agents' distinct uids and pid namespaces fail),
//! `name_to_handle_at` (only `open_by_handle_at` opens anything), `personality` without the
//! flags listed in the table.

use std::collections::BTreeMap;

use seccompiler::{sock_filter, BpfProgram, TargetArch};

/// A failure to build or install the agent filter.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// There is no syscall table for the running architecture.
    #[error("seccomp filter: no syscall table for architecture {0}")]
    UnsupportedArch(&'static str),
    /// A syscall number of the table is negative or listed twice (a bug in the table).
    #[error("compile seccomp filter: syscall {0} is listed twice or has no valid number")]
    Table(&'static str),
    /// The compiled program is longer than the kernel accepts.
    #[error("compile seccomp filter: {0} instructions, the kernel takes at most {BPF_MAX_LEN}")]
    TooLong(usize),
    /// `prctl(PR_SET_NO_NEW_PRIVS)` or `seccomp(SECCOMP_SET_MODE_FILTER)` failed.
    #[error("install seccomp filter: {0}")]
    Install(#[source] std::io::Error),
}

/// What a table row answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    /// `ENOSYS`, as if the kernel did not have the call.
    Enosys,
    /// `EPERM`.
    Eperm,
}

/// When a table row applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum When {
    /// Every call.
    Always,
    /// Calls whose first argument (low 32 bits) has any of these bits set.
    Arg0AnyOf(u64),
    /// As `Arg0AnyOf`, except when the first argument (low 32 bits) equals `except`.
    Arg0AnyOfExcept {
        /// The bits.
        bits: u64,
        /// The value that is let through although it has bits in `bits`.
        except: u64,
    },
}

/// One row of the policy.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Row {
    /// The syscall name, for tests and messages.
    pub(crate) name: &'static str,
    /// Its number on the running architecture.
    pub(crate) nr: i64,
    /// The answer.
    pub(crate) answer: Answer,
    /// The condition.
    pub(crate) when: When,
}

// c_long is i64 on the architectures with a table; the conversion is for the others.
#[allow(clippy::useless_conversion)]
fn row(name: &'static str, nr: libc::c_long, answer: Answer, when: When) -> Row {
    Row {
        name,
        nr: i64::from(nr),
        answer,
        when,
    }
}

/// Every `CLONE_NEW*` flag. `CLONE_NEWTIME` (0x80) lies inside `CSIGNAL`, the exit-signal
/// byte of `clone`'s flags, so `clone` cannot actually request a time namespace (only
/// `clone3` and `unshare` can, and both are answered without looking at flags); it is in
/// the mask anyway because no valid exit signal (1..=64) has bit 7 set, so it costs nothing.
pub(crate) const CLONE_NEW_ANY: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWTIME) as u64;

/// `personality(2)` flags that weaken the agent's own memory protections: no ASLR
/// (`ADDR_NO_RANDOMIZE`, also the classic way to make an exploit reliable), the legacy mmap
/// layout with less entropy (`ADDR_COMPAT_LAYOUT`), a mapping at address 0
/// (`MMAP_PAGE_ZERO`, turns kernel NULL dereferences into exploits) and executable data
/// (`READ_IMPLIES_EXEC`). Other personalities (`PER_LINUX32`, `UNAME26`, ...) stay allowed.
pub(crate) const PERSONALITY_UNSAFE: u64 = (libc::ADDR_NO_RANDOMIZE
    | libc::ADDR_COMPAT_LAYOUT
    | libc::MMAP_PAGE_ZERO
    | libc::READ_IMPLIES_EXEC) as u64;

/// `personality(0xffffffff)` only queries the current personality (all bits set, so it
/// must be let through explicitly).
pub(crate) const PERSONALITY_QUERY: u64 = 0xffff_ffff;

/// `open_tree_attr` (Linux 6.15) is not in libc yet; new syscalls share one number on every
/// architecture.
const SYS_OPEN_TREE_ATTR: libc::c_long = 467;

/// The policy. Everything not listed is allowed.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub(crate) fn table() -> Vec<Row> {
    use Answer::{Enosys, Eperm};
    use When::Always;
    #[allow(unused_mut)] // x86_64 adds rows below
    let mut rows = vec![
        // --- Namespaces: the way out of every other layer. ---
        // Flags behind a pointer; glibc falls back to `clone` on ENOSYS only.
        row("clone3", libc::SYS_clone3, Enosys, Always),
        // fork, vfork and threads stay; new namespaces do not.
        row(
            "clone",
            libc::SYS_clone,
            Eperm,
            When::Arg0AnyOf(CLONE_NEW_ANY),
        ),
        // unshare(CLONE_FILES|CLONE_FS) is harmless but nothing we run needs it.
        row("unshare", libc::SYS_unshare, Eperm, Always),
        row("setns", libc::SYS_setns, Eperm, Always),
        // --- Mounts (old and new API): the mount tree is built by init. ---
        row("mount", libc::SYS_mount, Eperm, Always),
        row("umount2", libc::SYS_umount2, Eperm, Always),
        row("pivot_root", libc::SYS_pivot_root, Eperm, Always),
        row("fsopen", libc::SYS_fsopen, Eperm, Always),
        row("fsconfig", libc::SYS_fsconfig, Eperm, Always),
        row("fsmount", libc::SYS_fsmount, Eperm, Always),
        row("fspick", libc::SYS_fspick, Eperm, Always),
        row("move_mount", libc::SYS_move_mount, Eperm, Always),
        row("open_tree", libc::SYS_open_tree, Eperm, Always),
        row("open_tree_attr", SYS_OPEN_TREE_ATTR, Eperm, Always),
        row("mount_setattr", libc::SYS_mount_setattr, Eperm, Always),
        // --- Reaching into other processes (memory, fds). ---
        row("ptrace", libc::SYS_ptrace, Eperm, Always),
        row(
            "process_vm_readv",
            libc::SYS_process_vm_readv,
            Eperm,
            Always,
        ),
        row(
            "process_vm_writev",
            libc::SYS_process_vm_writev,
            Eperm,
            Always,
        ),
        row("pidfd_getfd", libc::SYS_pidfd_getfd, Eperm, Always),
        // --- Kernel attack surface an agent has no use for. ---
        row("bpf", libc::SYS_bpf, Eperm, Always),
        row("perf_event_open", libc::SYS_perf_event_open, Eperm, Always),
        row("userfaultfd", libc::SYS_userfaultfd, Eperm, Always),
        // io_uring performs I/O without passing through this filter; callers (libuv) fall
        // back to ordinary syscalls when setup fails.
        row("io_uring_setup", libc::SYS_io_uring_setup, Eperm, Always),
        row("io_uring_enter", libc::SYS_io_uring_enter, Eperm, Always),
        row(
            "io_uring_register",
            libc::SYS_io_uring_register,
            Eperm,
            Always,
        ),
        // Keyrings are not namespaced: keys would be shared with the host's uid.
        row("add_key", libc::SYS_add_key, Eperm, Always),
        row("request_key", libc::SYS_request_key, Eperm, Always),
        row("keyctl", libc::SYS_keyctl, Eperm, Always),
        // --- The machine itself (all need capabilities; denied twice on purpose). ---
        row("kexec_load", libc::SYS_kexec_load, Eperm, Always),
        row("kexec_file_load", libc::SYS_kexec_file_load, Eperm, Always),
        row("init_module", libc::SYS_init_module, Eperm, Always),
        row("finit_module", libc::SYS_finit_module, Eperm, Always),
        row("delete_module", libc::SYS_delete_module, Eperm, Always),
        row("reboot", libc::SYS_reboot, Eperm, Always),
        row("swapon", libc::SYS_swapon, Eperm, Always),
        row("swapoff", libc::SYS_swapoff, Eperm, Always),
        row("acct", libc::SYS_acct, Eperm, Always),
        row("settimeofday", libc::SYS_settimeofday, Eperm, Always),
        row("clock_settime", libc::SYS_clock_settime, Eperm, Always),
        row("clock_adjtime", libc::SYS_clock_adjtime, Eperm, Always),
        // The kernel log leaks addresses when dmesg_restrict is off.
        row("syslog", libc::SYS_syslog, Eperm, Always),
        // --- Files by handle: bypasses path-based checks ("shocker"). ---
        row(
            "open_by_handle_at",
            libc::SYS_open_by_handle_at,
            Eperm,
            Always,
        ),
        // --- Weakening the agent's own exploit mitigations; queries stay allowed. ---
        row(
            "personality",
            libc::SYS_personality,
            Eperm,
            When::Arg0AnyOfExcept {
                bits: PERSONALITY_UNSAFE,
                except: PERSONALITY_QUERY,
            },
        ),
    ];
    // --- x86 port I/O: direct hardware access. ---
    #[cfg(target_arch = "x86_64")]
    rows.extend([
        row("iopl", libc::SYS_iopl, Eperm, Always),
        row("ioperm", libc::SYS_ioperm, Eperm, Always),
    ]);
    rows
}

/// The policy on an architecture we have no table for: none.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub(crate) fn table() -> Vec<Row> {
    Vec::new()
}

// struct seccomp_data offsets (linux/seccomp.h).
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;
/// The low 32 bits of the first argument (both supported architectures are little-endian).
const DATA_ARG0_LOW: u32 = 16;

// Classic BPF opcodes (linux/bpf_common.h): class | size/op | mode/source.
/// BPF_LD | BPF_W (0) | BPF_ABS.
const BPF_LD_W_ABS: u16 = 0x20;
/// BPF_JMP | BPF_JEQ | BPF_K (0).
const BPF_JMP_JEQ_K: u16 = 0x05 | 0x10;
/// BPF_JMP | BPF_JGE | BPF_K (0).
const BPF_JMP_JGE_K: u16 = 0x05 | 0x30;
/// BPF_RET | BPF_K (0).
const BPF_RET_K: u16 = 0x06;
/// BPF_JMP | BPF_JA (0).
const BPF_JA: u16 = 0x05;
/// BPF_ALU | BPF_AND | BPF_K (0).
const BPF_ALU_AND_K: u16 = 0x04 | 0x50;

/// The kernel's limit on a filter's length (BPF_MAXINSNS).
const BPF_MAX_LEN: usize = 4096;

/// `AUDIT_ARCH_*` values (linux/audit.h): `EM_*` | 64-bit | little-endian.
pub(crate) const AUDIT_ARCH_X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000;
#[cfg_attr(not(test), allow(dead_code))] // the tests build foreign-arch programs
pub(crate) const AUDIT_ARCH_I386: u32 = 3 | 0x4000_0000;
pub(crate) const AUDIT_ARCH_AARCH64: u32 = 183 | 0x8000_0000 | 0x4000_0000;
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) const AUDIT_ARCH_ARM: u32 = 40 | 0x4000_0000;

/// x32 syscalls enter as `AUDIT_ARCH_X86_64` with this bit set in the number.
pub(crate) const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// The running architecture: seccompiler's name for it and its audit value.
fn native_arch() -> Result<(TargetArch, u32), SeccompError> {
    match std::env::consts::ARCH {
        "x86_64" => Ok((TargetArch::x86_64, AUDIT_ARCH_X86_64)),
        "aarch64" => Ok((TargetArch::aarch64, AUDIT_ARCH_AARCH64)),
        other => Err(SeccompError::UnsupportedArch(other)),
    }
}

fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// The filter for the running architecture (x86_64 and aarch64).
///
/// Layout: the prelude (architecture check, and on x86_64 the x32 check), then a binary
/// search over the table's syscall numbers. Each number that the table lists leads to its
/// answer: a return, or a short check of the first argument's low 32 bits followed by the
/// return; every other number ends in "allow".
///
/// Why a search rather than a chain of comparisons: when the filter is installed the kernel
/// runs it once for every syscall number, to find the calls whose answer does not depend on
/// their arguments (those then skip the filter), and each agent pays for that at its start. A
/// linear program costs a comparison per row for every number; the search costs a handful.
/// The agent's own syscalls that do run the filter (`clone`, `personality`) are quicker too.
pub fn agent_filter() -> Result<BpfProgram, SeccompError> {
    let (target, audit_arch) = native_arch()?;
    let rows = table();

    // The prelude. Jump offsets count from the next instruction.
    let mut prog = vec![
        stmt(BPF_LD_W_ABS, DATA_ARCH),
        jump(BPF_JMP_JEQ_K, audit_arch, 1, 0),
        stmt(BPF_RET_K, libc::SECCOMP_RET_KILL_PROCESS),
        stmt(BPF_LD_W_ABS, DATA_NR),
    ];
    if target == TargetArch::x86_64 {
        // nr >= X32 bit and nr != -1: kill. -1 is what a tracer or an earlier filter leaves
        // when it skips a call (libseccomp lets it through for the same reason); the kernel
        // answers it with ENOSYS.
        prog.extend([
            jump(BPF_JMP_JGE_K, X32_SYSCALL_BIT, 0, 2),
            jump(BPF_JMP_JEQ_K, u32::MAX, 1, 0),
            stmt(BPF_RET_K, libc::SECCOMP_RET_KILL_PROCESS),
        ]);
    }

    // One row per number, in ascending order (the search needs it).
    let mut by_nr: BTreeMap<u32, Row> = BTreeMap::new();
    for r in &rows {
        let nr = u32::try_from(r.nr).map_err(|_| SeccompError::Table(r.name))?;
        // Two rows for one number would make the answer depend on the layout.
        if by_nr.insert(nr, *r).is_some() {
            return Err(SeccompError::Table(r.name));
        }
    }
    let sorted: Vec<(u32, Row)> = by_nr.into_iter().collect();
    search(&sorted, &mut prog);

    if prog.len() > BPF_MAX_LEN {
        return Err(SeccompError::TooLong(prog.len()));
    }
    Ok(prog)
}

/// Numbers per leaf of the search: compared one by one.
const LEAF: usize = 4;

/// Emits the search over `rows` (sorted by number, the number in the accumulator); every
/// path ends in a return.
fn search(rows: &[(u32, Row)], prog: &mut Vec<sock_filter>) {
    if rows.len() <= LEAF {
        for (nr, row) in rows {
            let answer = answer(row);
            // Not this number: skip its answer.
            prog.push(jump(BPF_JMP_JEQ_K, *nr, 0, answer.len() as u8));
            prog.extend(answer);
        }
        prog.push(stmt(BPF_RET_K, libc::SECCOMP_RET_ALLOW));
        return;
    }
    let (low, high) = rows.split_at(rows.len() / 2);
    // nr >= the first high number: over the low half (an unconditional jump, whose offset is
    // not limited to 255 like a conditional one's).
    prog.push(jump(BPF_JMP_JGE_K, high[0].0, 0, 1));
    let over = prog.len();
    prog.push(stmt(BPF_JA, 0));
    search(low, prog);
    prog[over].k = (prog.len() - over - 1) as u32;
    search(high, prog);
}

/// The instructions that answer a call of `row`'s number (each path ends in a return). Short:
/// they sit inside a conditional jump's reach.
fn answer(row: &Row) -> Vec<sock_filter> {
    let verdict = match row.answer {
        Answer::Enosys => libc::SECCOMP_RET_ERRNO | (libc::ENOSYS as u32 & libc::SECCOMP_RET_DATA),
        Answer::Eperm => libc::SECCOMP_RET_ERRNO | (libc::EPERM as u32 & libc::SECCOMP_RET_DATA),
    };
    let allow = || stmt(BPF_RET_K, libc::SECCOMP_RET_ALLOW);
    let deny = || stmt(BPF_RET_K, verdict);
    // The kernel truncates both `clone`'s flags and `personality`'s persona to 32 bits, so
    // only the low half is compared: the high half can neither smuggle a flag in nor dodge
    // the match.
    let any_of = |bits: u64| {
        [
            stmt(BPF_ALU_AND_K, bits as u32),
            jump(BPF_JMP_JEQ_K, 0, 0, 1),
            allow(),
            deny(),
        ]
    };
    match row.when {
        When::Always => vec![deny()],
        When::Arg0AnyOf(bits) => {
            let mut out = vec![stmt(BPF_LD_W_ABS, DATA_ARG0_LOW)];
            out.extend(any_of(bits));
            out
        }
        When::Arg0AnyOfExcept { bits, except } => {
            let mut out = vec![
                stmt(BPF_LD_W_ABS, DATA_ARG0_LOW),
                // The exception: on to the "allow" of the check below.
                jump(BPF_JMP_JEQ_K, except as u32, 2, 0),
            ];
            out.extend(any_of(bits));
            out
        }
    }
}

/// Installs `prog` on the calling thread (sets no_new_privs first, as the kernel requires
/// for an unprivileged caller). Irreversible; inherited by children and kept across execve.
pub fn install(prog: &BpfProgram) -> Result<(), SeccompError> {
    seccompiler::apply_filter(prog).map_err(|e| {
        SeccompError::Install(match e {
            seccompiler::Error::Prctl(io) | seccompiler::Error::Seccomp(io) => io,
            other => std::io::Error::other(other.to_string()),
        })
    })
}

#[cfg(test)]
mod tests {
    //! Two kinds of tests: the compiled program is run through a small classic-BPF interpreter
    //! against every table row and against calls that must stay allowed (no privileges
    //! needed, covers calls we would never fire for real, like `reboot`); and the installed
    //! filter is exercised on the live kernel by a Python probe, next to an unfiltered control
    //! run that shows each probe would give a different answer without the filter.

    use super::*;
    use crate::sandbox::privileges::tests::{
        child_role, rerun_as_child, ProbeConfig, ProbeReport, PROBE_PY,
    };
    use std::os::unix::process::{CommandExt, ExitStatusExt};

    const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
    const KILL: u32 = libc::SECCOMP_RET_KILL_PROCESS;
    const EPERM: u32 = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
    const ENOSYS: u32 = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;

    /// Runs a seccomp program on one `struct seccomp_data` (instruction pointer 0); panics on
    /// anything the kernel's checker would reject (unknown opcode, jump out of the program,
    /// falling off the end).
    fn run(prog: &[sock_filter], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        run_counted(prog, arch, nr, args).0
    }

    /// As [`run`], also counting the instructions executed.
    fn run_counted(prog: &[sock_filter], arch: u32, nr: u32, args: [u64; 6]) -> (u32, usize) {
        let mut steps = 0;
        let mut words = [0u32; 16];
        words[0] = nr;
        words[1] = arch;
        for (i, a) in args.iter().enumerate() {
            // Little-endian: the low half comes first (both supported arches are LE).
            words[4 + 2 * i] = *a as u32;
            words[5 + 2 * i] = (*a >> 32) as u32;
        }
        let mut acc = 0u32;
        let mut pc = 0usize;
        loop {
            let ins = prog.get(pc).expect("program falls off its end");
            steps += 1;
            let next = pc + 1;
            pc = match ins.code {
                0x20 => {
                    assert_eq!(ins.k % 4, 0);
                    acc = words[(ins.k / 4) as usize];
                    next
                }
                0x54 => {
                    acc &= ins.k;
                    next
                }
                0x05 => next + ins.k as usize,
                0x15 | 0x25 | 0x35 => {
                    let taken = match ins.code {
                        0x15 => acc == ins.k,
                        0x25 => acc > ins.k,
                        _ => acc >= ins.k,
                    };
                    next + usize::from(if taken { ins.jt } else { ins.jf })
                }
                0x06 => return (ins.k, steps),
                other => panic!("opcode {other:#x} not expected in a filter of ours"),
            };
        }
    }

    fn native() -> u32 {
        native_arch().expect("supported arch").1
    }

    fn verdict(nr: libc::c_long, arg0: u64) -> u32 {
        let prog = agent_filter().expect("filter builds");
        run(&prog, native(), nr as u32, [arg0, 0, 0, 0, 0, 0])
    }

    #[test]
    fn every_table_row_gets_its_answer() {
        let prog = agent_filter().expect("filter builds");
        assert!(prog.len() < BPF_MAX_LEN, "{} instructions", prog.len());
        let rows = table();
        assert!(rows.len() > 40, "the table lost rows: {}", rows.len());
        for r in &rows {
            let want = match r.answer {
                Answer::Enosys => ENOSYS,
                Answer::Eperm => EPERM,
            };
            let triggers: Vec<u64> = match r.when {
                When::Always => vec![0, 1, u64::MAX],
                When::Arg0AnyOf(bits) | When::Arg0AnyOfExcept { bits, .. } => (0..64)
                    .map(|i| 1u64 << i)
                    .filter(|b| bits & b != 0)
                    // Alone, with other harmless bits, and with garbage in the high half.
                    .flat_map(|b| [b, b | libc::SIGCHLD as u64, b | 0xdead_0000_0000_0000])
                    .collect(),
            };
            for arg0 in triggers {
                let got = run(&prog, native(), r.nr as u32, [arg0, 0, 0, 0, 0, 0]);
                assert_eq!(got, want, "{} with arg0 {arg0:#x}: {got:#x}", r.name);
            }
        }
    }

    /// The search against the table itself, for every number up to well past the last
    /// syscall: listed numbers get their row's answer, all others are allowed. Also bounds
    /// the work per call, which is what the search is for.
    #[test]
    fn every_number_gets_the_tables_answer() {
        let prog = agent_filter().expect("filter builds");
        let rows = table();
        let args = [
            0,
            1,
            u64::MAX,
            CLONE_NEW_ANY,
            PERSONALITY_QUERY,
            0xdead_0000_0000_0000,
        ];
        for nr in (0..2048u32).chain([u32::MAX - 1, u32::MAX]) {
            let row = rows.iter().find(|r| r.nr == i64::from(nr));
            for arg0 in args {
                let want = match row {
                    None => ALLOW,
                    Some(r) => {
                        let low = arg0 & 0xffff_ffff;
                        let hit = match r.when {
                            When::Always => true,
                            When::Arg0AnyOf(bits) => low & bits != 0,
                            When::Arg0AnyOfExcept { bits, except } => {
                                low != except && low & bits != 0
                            }
                        };
                        match (hit, r.answer) {
                            (false, _) => ALLOW,
                            (true, Answer::Eperm) => EPERM,
                            (true, Answer::Enosys) => ENOSYS,
                        }
                    }
                };
                let got = run(&prog, native(), nr, [arg0, 0, 0, 0, 0, 0]);
                // -1 and the x32 range are the prelude's (see foreign_architectures_are_killed).
                if cfg!(target_arch = "x86_64") && nr >= X32_SYSCALL_BIT {
                    continue;
                }
                assert_eq!(got, want, "nr {nr} arg0 {arg0:#x}");
            }
        }
        assert!(prog.len() < 200, "{} instructions", prog.len());
        let steps = (0..2048u32)
            .map(|nr| run_counted(&prog, native(), nr, [0; 6]).1)
            .max()
            .unwrap_or(0);
        assert!(steps <= 30, "{steps} instructions on the longest path");
    }

    #[test]
    fn clone_without_namespace_flags_is_allowed() {
        // What glibc passes for pthread_create, fork and vfork (posix_spawn).
        let thread = libc::CLONE_VM
            | libc::CLONE_FS
            | libc::CLONE_FILES
            | libc::CLONE_SIGHAND
            | libc::CLONE_THREAD
            | libc::CLONE_SYSVSEM
            | libc::CLONE_SETTLS
            | libc::CLONE_PARENT_SETTID
            | libc::CLONE_CHILD_CLEARTID;
        let fork = libc::CLONE_CHILD_SETTID | libc::CLONE_CHILD_CLEARTID | libc::SIGCHLD;
        let vfork = libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD;
        for flags in [thread, fork, vfork] {
            assert_eq!(verdict(libc::SYS_clone, flags as u64), ALLOW, "{flags:#x}");
        }
        for ns in [libc::CLONE_NEWUSER, libc::CLONE_NEWNS, libc::CLONE_NEWNET] {
            let flags = (fork | ns) as u64;
            assert_eq!(verdict(libc::SYS_clone, flags), EPERM, "{flags:#x}");
        }
    }

    #[test]
    fn personality_queries_and_safe_personas_are_allowed() {
        // PER_LINUX, PER_LINUX32, UNAME26.
        for persona in [PERSONALITY_QUERY, 0, 0x0008, 0x0020000] {
            assert_eq!(
                verdict(libc::SYS_personality, persona),
                ALLOW,
                "{persona:#x}"
            );
        }
        assert_eq!(
            verdict(libc::SYS_personality, libc::ADDR_NO_RANDOMIZE as u64),
            EPERM
        );
    }

    #[test]
    fn ordinary_syscalls_are_allowed() {
        for nr in [
            libc::SYS_read,
            libc::SYS_write,
            libc::SYS_openat,
            libc::SYS_close,
            libc::SYS_mmap,
            libc::SYS_execve,
            libc::SYS_wait4,
            libc::SYS_socket,
            libc::SYS_connect,
            libc::SYS_epoll_pwait,
            libc::SYS_futex,
            libc::SYS_getpid,
            libc::SYS_close_range,
            libc::SYS_prctl,
            libc::SYS_seccomp,
            libc::SYS_adjtimex,
        ] {
            assert_eq!(verdict(nr, 0), ALLOW, "syscall {nr}");
        }
    }

    #[test]
    fn foreign_architectures_are_killed() {
        let prog = agent_filter().expect("filter builds");
        for p in [&prog] {
            let arches = [
                AUDIT_ARCH_I386,
                AUDIT_ARCH_ARM,
                AUDIT_ARCH_X86_64,
                AUDIT_ARCH_AARCH64,
            ];
            for foreign in arches.into_iter().filter(|a| *a != native()) {
                // getpid on i386 is 20; any number must die.
                for nr in [20, 0, 435] {
                    assert_eq!(
                        run(p, foreign, nr, [0; 6]),
                        KILL,
                        "arch {foreign:#x} nr {nr}"
                    );
                }
            }
        }
        if cfg!(target_arch = "x86_64") {
            // x32: getpid (39), clone3 and an allowed call, all with the x32 bit.
            for nr in [39, 435, 0] {
                let got = run(&prog, native(), X32_SYSCALL_BIT | nr, [0; 6]);
                assert_eq!(got, KILL, "x32 nr {nr}");
            }
            // -1 (a skipped call) is not x32.
            assert_eq!(run(&prog, native(), u32::MAX, [0; 6]), ALLOW);
        }
    }

    /// The child role: install the filter (or not, for the control run) and exec the program
    /// in `CLOVE_SECCOMP_EXEC` (a JSON argv).
    fn seccomp_child() -> bool {
        let Some(role) = child_role("CLOVE_SECCOMP_CHILD") else {
            return false;
        };
        let argv: Vec<String> = serde_json::from_str(
            &std::env::var("CLOVE_SECCOMP_EXEC").expect("CLOVE_SECCOMP_EXEC is set"),
        )
        .expect("argv is JSON");
        // A killed child must not leave a core file behind.
        nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0)
            .expect("RLIMIT_CORE");
        if role == "filter" {
            let prog = agent_filter().expect("filter builds");
            install(&prog).expect("filter installs");
        }
        let err = std::process::Command::new(&argv[0]).args(&argv[1..]).exec();
        println!("CLOVE_EXEC_ERROR {err}");
        std::process::exit(98);
    }

    fn run_under(
        test: &str,
        role: &str,
        argv: &[&str],
        env: &[(&str, String)],
    ) -> std::process::Output {
        let mut all = vec![
            ("CLOVE_SECCOMP_CHILD", role.to_string()),
            (
                "CLOVE_SECCOMP_EXEC",
                serde_json::to_string(argv).expect("argv serializes"),
            ),
        ];
        all.extend(env.iter().cloned());
        rerun_as_child(test, &all)
    }

    #[test]
    fn live_filter_denies_and_allows_like_the_table() {
        const TEST: &str = "sandbox::seccomp::tests::live_filter_denies_and_allows_like_the_table";
        if seccomp_child() {
            return;
        }
        if !nix::unistd::geteuid().is_root() {
            // As root every probe below would succeed or fail differently without the filter;
            // unprivileged, several would fail with EPERM anyway and prove nothing.
            eprintln!("SKIP: {TEST}: needs root for a discriminating control run");
            return;
        }
        let config = ProbeConfig::new().to_json();
        let env = [("CLOVE_PROBE_CONFIG", config)];
        let argv = ["/usr/bin/python3.11", "-I", "-c", PROBE_PY];
        let filtered = ProbeReport::parse(&run_under(TEST, "filter", &argv, &env));
        let control = ProbeReport::parse(&run_under(TEST, "control", &argv, &env));

        let denied = [
            ("unshare_newuser", "EPERM"),
            ("unshare_newns", "EPERM"),
            ("clone_newuser", "EPERM"),
            ("clone_newnet", "EPERM"),
            ("setns", "EPERM"),
            ("mount", "EPERM"),
            ("umount2", "EPERM"),
            ("ptrace_traceme", "EPERM"),
            ("process_vm_readv", "EPERM"),
            ("bpf", "EPERM"),
            ("perf_event_open", "EPERM"),
            ("keyctl", "EPERM"),
            ("personality_no_aslr", "EPERM"),
            ("clone3", "ENOSYS"),
        ];
        // x32 exists only on x86_64; elsewhere the number is just unknown.
        let x32 = cfg!(target_arch = "x86_64").then_some(("x32_getpid", "killed:31"));
        for (probe, want) in denied.into_iter().chain(x32) {
            assert_eq!(filtered.get(probe), want, "filtered {probe}");
            assert_ne!(
                control.get(probe),
                want,
                "control {probe}: the probe cannot tell"
            );
        }
        // What must keep working under the filter.
        assert_eq!(filtered.get("status.Seccomp"), "2");
        assert_eq!(control.get("status.Seccomp"), "0");
        for probe in ["personality_query", "fork", "threads", "subprocess_true"] {
            assert_eq!(filtered.get(probe), "ok", "filtered {probe}");
        }
    }

    #[test]
    fn i386_syscall_kills_the_process() {
        const TEST: &str = "sandbox::seccomp::tests::i386_syscall_kills_the_process";
        if seccomp_child() {
            return;
        }
        if !cfg!(target_arch = "x86_64") {
            eprintln!("SKIP: {TEST}: int $0x80 is x86 only");
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("int80.c");
        let bin = dir.path().join("int80");
        // getpid through the 32-bit entry (i386 number 20) from a 64-bit program: no 32-bit
        // libraries needed, and the kernel reports AUDIT_ARCH_I386 for it.
        std::fs::write(
            &src,
            "#include <stdio.h>\n\
             int main(void) {\n\
                 long r;\n\
                 __asm__ volatile (\"int $0x80\" : \"=a\"(r) : \"a\"(20L) : \"memory\");\n\
                 printf(\"survived %ld\\n\", r);\n\
                 return 0;\n\
             }\n",
        )
        .expect("write source");
        let gcc = std::process::Command::new("gcc")
            .arg("-o")
            .arg(&bin)
            .arg(&src)
            .output();
        match gcc {
            Err(e) => {
                eprintln!("SKIP: {TEST}: cannot run gcc: {e}");
                return;
            }
            Ok(out) if !out.status.success() => {
                panic!("gcc failed: {}", String::from_utf8_lossy(&out.stderr))
            }
            Ok(_) => {}
        }
        let bin = bin.to_str().expect("utf-8 path");

        // Control: the host really runs 32-bit syscalls (otherwise the test proves nothing).
        let control = run_under(TEST, "control", &[bin], &[]);
        let stdout = String::from_utf8_lossy(&control.stdout);
        if control.status.signal() == Some(libc::SIGSEGV) {
            eprintln!("SKIP: {TEST}: the host has no 32-bit syscall emulation");
            return;
        }
        assert!(
            control.status.success() && stdout.contains("survived "),
            "control run: {control:?}"
        );
        assert!(
            !stdout.contains("survived -"),
            "control: the 32-bit getpid failed: {stdout}"
        );

        let filtered = run_under(TEST, "filter", &[bin], &[]);
        assert_eq!(filtered.status.signal(), Some(libc::SIGSYS), "{filtered:?}");
        assert!(!String::from_utf8_lossy(&filtered.stdout).contains("survived"));
    }
}
