//! READ and WRITE stay inside what the caller may touch: the path is judged by what it really
//! names (after `..` and every symlink), blocked globs win, the kernel's own blocked paths
//! (credentials, its state dir) hold whatever an agent's permissions say, and only regular
//! files are touched. An operator reads and writes as itself, with append, offsets and
//! parent directories on request.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::Duration;

use clove_abi::msg::Permissions;
use clove_tests::{agents_can_run, client, plan_request, plan_step, spawn_ok, JsonConn, Kernel};
use serde_json::{json, Value};

const READ: u8 = 0x03;
const WRITE: u8 = 0x04;
const RECV: u8 = 0x21;

fn refused(reply: &Value, mentions: &str) {
    assert_eq!(reply["success"], false, "{reply}");
    assert_eq!(reply["code"], "permission_denied", "{reply}");
    let error = reply["error"].as_str().unwrap();
    assert!(error.contains(mentions), "{mentions:?} not in {error:?}");
}

fn p(path: &Path) -> String {
    path.to_str().unwrap().to_owned()
}

#[test]
fn an_operator_reads_and_writes_as_itself() {
    let kernel = Kernel::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().canonicalize().unwrap();
    let mut op = JsonConn::open(&kernel).unwrap();
    let f = dir.join("a/b/c.txt");
    let r = op
        .call(WRITE, json!({"path": p(&f), "content": "one\n"}))
        .unwrap();
    assert_eq!(
        r["code"], "not_found",
        "no parent dirs without create_dirs: {r}"
    );
    let r = op
        .call(
            WRITE,
            json!({"path": p(&f), "content": "one\n", "create_dirs": true}),
        )
        .unwrap();
    assert_eq!(r, json!({"success": true, "bytes_written": 4}));
    let r = op
        .call(
            WRITE,
            json!({"path": p(&f), "content": "two\n", "mode": "append"}),
        )
        .unwrap();
    assert_eq!(r["bytes_written"], 4, "{r}");
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "one\ntwo\n");
    let r = op.call(READ, json!({"path": p(&f)})).unwrap();
    assert_eq!(
        r,
        json!({"success": true, "content": "one\ntwo\n", "size": 8})
    );
    let r = op
        .call(READ, json!({"path": p(&f), "offset": 4, "limit": 2}))
        .unwrap();
    assert_eq!(r["content"], "tw", "{r}");
    let r = op
        .call(WRITE, json!({"path": p(&f), "content": "new"}))
        .unwrap();
    assert_eq!(r["success"], true, "{r}");
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "new");
    // Only regular files, only absolute paths; the original's empty fields on errors.
    let r = op.call(READ, json!({"path": "/dev/null"})).unwrap();
    assert!(
        r["error"].as_str().unwrap().contains("not a regular file"),
        "{r}"
    );
    assert_eq!(
        (r["content"].as_str(), r["size"].as_u64()),
        (Some(""), Some(0))
    );
    let r = op.call(READ, json!({"path": "relative.txt"})).unwrap();
    assert_eq!(r["code"], "invalid_request", "{r}");
    let r = op
        .call(WRITE, json!({"path": p(&dir), "content": "x"}))
        .unwrap();
    assert_eq!(r["success"], false, "{r}");
    assert_eq!(r["bytes_written"], 0, "{r}");
    // Root operators are unrestricted (the original's own tests need it).
    let r = op.call(READ, json!({"path": "/etc/hostname"})).unwrap();
    assert_eq!(r["success"], true, "{r}");
}

#[test]
fn an_agent_stays_inside_its_tree_through_dotdot_symlinks_and_globs() {
    if !agents_can_run("an_agent_stays_inside_its_tree_through_dotdot_symlinks_and_globs") {
        return;
    }
    let kernel = Kernel::start().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().canonicalize().unwrap();
    let allowed = d.join("allowed");
    std::fs::create_dir_all(&allowed).unwrap();
    std::fs::create_dir_all(d.join("allowedX")).unwrap();
    std::fs::create_dir_all(d.join("outside_dir")).unwrap();
    std::fs::write(allowed.join("ok.txt"), "fine").unwrap();
    std::fs::write(allowed.join("secret.txt"), "no").unwrap();
    std::fs::write(d.join("outside.txt"), "outside").unwrap();
    std::fs::write(d.join("allowedX/f"), "sibling").unwrap();
    std::fs::write(d.join("outside_dir/f"), "via dir link").unwrap();
    symlink(d.join("outside.txt"), allowed.join("link")).unwrap();
    symlink(d.join("outside_dir"), allowed.join("dirlink")).unwrap();
    symlink(
        d.join("outside_dir/created-by-dangle"),
        allowed.join("dangle"),
    )
    .unwrap();
    symlink(allowed.join("ok.txt"), d.join("outside_link_in")).unwrap();

    let tree = format!("{}/**", p(&allowed));
    let perms = Permissions {
        can_read: true,
        can_write: true,
        filesystem: clove_abi::msg::FilesystemPerms {
            read: vec![tree.clone()],
            write: vec![tree],
            blocked: vec![format!("{}/secret*", p(&allowed))],
        },
        ..Permissions::none()
    };
    let state_db = kernel.state_dir.canonicalize().unwrap().join("state.db");
    let read = |path: String| json!({"op": READ, "payload": {"path": path}});
    let write = |path: String, extra: Value| {
        let mut payload = json!({"path": path, "content": "x"});
        for (k, v) in extra.as_object().unwrap() {
            payload[k] = v.clone();
        }
        json!({"op": WRITE, "payload": payload})
    };
    let plan = json!([
        read(p(&allowed.join("ok.txt"))),                                  // 0
        read(format!("{}/../outside.txt", p(&allowed))),                    // 1
        read(p(&allowed.join("link"))),                                    // 2
        read(p(&allowed.join("dirlink/f"))),                               // 3
        read(p(&allowed.join("secret.txt"))),                              // 4
        read(p(&d.join("allowedX/f"))),                                    // 5
        read(p(&d.join("outside_link_in"))),                               // 6: a link into the tree
        write(p(&allowed.join("new.txt")), json!({})),                     // 7
        write(p(&allowed.join("link")), json!({})),                        // 8
        write(p(&allowed.join("dangle")), json!({})),                      // 9
        write(p(&allowed.join("x/y/z.txt")), json!({"create_dirs": true})), // 10
        write(p(&allowed.join("dirlink/made/f")), json!({"create_dirs": true})), // 11
        read("/etc/shadow".to_owned()),                                    // 12
        read(p(&state_db)),                                                // 13
        {"op": RECV, "payload": {"max": 1, "wait_ms": 100}},
    ]);
    // The same plan twice: once bounded by `perms`, once with read and write everywhere,
    // where the kernel's own blocked paths must still hold.
    let mut c = client(&kernel).unwrap();
    let mut req = plan_request("bounded", &plan);
    req.permissions = Some(perms);
    let bounded = spawn_ok(&mut c, &req).unwrap();
    let s = |id: u32, i: usize| {
        plan_step(&kernel, id, i, Duration::from_secs(30)).unwrap()["reply"].clone()
    };
    let b = |i| s(bounded.id, i);
    assert_eq!(b(0)["content"], "fine");
    refused(&b(1), "outside.txt");
    refused(&b(2), "which is");
    refused(&b(3), "which is");
    refused(&b(4), "secret.txt");
    refused(&b(5), "allowedX");
    assert_eq!(
        b(6)["content"],
        "fine",
        "a link from outside to a file inside reads the inside file"
    );
    assert_eq!(b(7)["success"], true, "{}", b(7));
    refused(&b(8), "which is");
    assert_eq!(b(9)["success"], false, "{}", b(9));
    assert!(!d.join("outside_dir/created-by-dangle").exists());
    assert_eq!(b(10)["success"], true, "{}", b(10));
    assert_eq!(
        std::fs::read_to_string(allowed.join("x/y/z.txt")).unwrap(),
        "x"
    );
    refused(&b(11), "outside_dir");
    assert!(!d.join("outside_dir/made").exists());
    assert_eq!(
        std::fs::read_to_string(d.join("outside.txt")).unwrap(),
        "outside"
    );

    let mut req = plan_request("everywhere", &plan);
    req.level = Some(clove_abi::msg::PermissionLevel::Standard);
    // Only now: it writes through the link to outside.txt.
    let everywhere = spawn_ok(&mut c, &req).unwrap();

    let e = |i| s(everywhere.id, i);
    assert_eq!(e(1)["content"], "outside");
    assert_eq!(e(8)["success"], true, "{}", e(8));
    refused(&e(12), "blocked by the kernel");
    refused(&e(13), "blocked by the kernel");
}

/// An operator that is not root reads and writes with its own uid and gid: the host's file
/// permissions bound it, not the kernel's root.
#[test]
fn a_non_root_operator_acts_with_its_own_uid() {
    use std::os::unix::fs::PermissionsExt;
    let kernel = Kernel::start().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().canonicalize().unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    let root_only = d.join("root-only.txt");
    std::fs::write(&root_only, "secret").unwrap();
    std::fs::set_permissions(&root_only, std::fs::Permissions::from_mode(0o600)).unwrap();
    let theirs = d.join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();

    let requests = json!([
        [READ, {"path": p(&root_only)}],
        [WRITE, {"path": p(&d.join("new.txt")), "content": "x"}],
        [WRITE, {"path": p(&theirs.join("mine.txt")), "content": "mine"}],
        [READ, {"path": p(&theirs.join("mine.txt"))}],
    ]);
    let Some(replies) = clove_tests::requests_as_nobody(&kernel, &requests).unwrap() else {
        return;
    };
    assert_eq!(replies[0]["code"], "permission_denied", "{}", replies[0]);
    assert_eq!(replies[1]["code"], "permission_denied", "{}", replies[1]);
    assert!(!d.join("new.txt").exists());
    assert_eq!(replies[2]["success"], true, "{}", replies[2]);
    assert_eq!(replies[3]["content"], "mine", "{}", replies[3]);
    let meta = std::fs::metadata(theirs.join("mine.txt")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        (meta.uid(), meta.gid()),
        (65534, 65534),
        "the file is the operator's"
    );
}
