//! The kernel binary's init mode (`clove-kernel __clove_init`, sandbox::init) is reached
//! before flag parsing, stays out of --help, and refuses to run unless the launcher started
//! it. The launch itself is covered by the unit tests in sandbox::launch, which exec the
//! test binary through the same init code.

use std::process::Command;

const KERNEL: &str = env!("CARGO_BIN_EXE_clove-kernel");

#[test]
fn init_mode_by_hand_is_refused_without_touching_anything() {
    let out = Command::new(KERNEL)
        .arg("__clove_init")
        .output()
        .expect("run clove-kernel");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.trim(),
        "clove-kernel: __clove_init is internal: only the kernel's launcher starts it"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn fork_server_mode_by_hand_is_refused() {
    // No socket at fd 3: not the launcher's child.
    let out = Command::new(KERNEL)
        .arg("__clove_forkserver")
        .output()
        .expect("run clove-kernel");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.trim(),
        "clove-kernel: __clove_forkserver is internal: only the kernel's launcher starts it"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn init_mode_is_not_in_help() {
    let out = Command::new(KERNEL)
        .arg("--help")
        .output()
        .expect("run clove-kernel");
    assert!(out.status.success(), "{out:?}");
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("Usage"), "{help}");
    assert!(!help.contains("clove_init"), "{help}");
    assert!(!help.contains("forkserver"), "{help}");
}
