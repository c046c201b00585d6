//! Where each controller we use lives on this host, and where the kernel itself sits in it.
//!
//! A host can mount controllers on v1 hierarchies (one mount per controller or per
//! co-mounted group such as `cpu,cpuacct`), on the unified cgroup2 mount, or both (systemd's
//! hybrid mode; this CI machine has every controller on v1 and an empty cgroup2 mount). A
//! controller can be bound to one hierarchy only, so: a controller named in the super options
//! of a v1 mount lives there; any other controller we use belongs to the cgroup2 mount if
//! there is one. Whether the kernel actually offers it there (`cgroup.controllers`) is checked
//! later by [`super::Cgroups::new`]; detection is a pure function of two text files.
//!
//! The kernel's own cgroup in a hierarchy is its `/proc/self/cgroup` path taken relative to
//! the mount's root (field 4 of mountinfo: not `/` for a bind-mounted sub-hierarchy, as in
//! containers without a cgroup namespace). A path outside the mount's root cannot be reached
//! through that mount, which is then skipped with a note.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{CgroupError, Controller, Version};

/// Where one controller lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The hierarchy's version.
    pub version: Version,
    /// Its mount point (`/sys/fs/cgroup/memory`, `/sys/fs/cgroup`).
    pub mount: PathBuf,
    /// The kernel's own cgroup there, as a directory under the mount point.
    pub own: PathBuf,
    /// That cgroup as `/proc/self/cgroup` showed it at detection (`/`, `/system.slice/x`):
    /// while a thread's line still shows it, the thread is in `own`.
    pub proc_path: String,
}

/// Per controller we use, where it lives. Controllers the host does not mount are absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layout {
    placements: BTreeMap<Controller, Placement>,
    notes: Vec<String>,
}

// Read by METRICS_* (issue 9), the demos and the tests; not by the kernel yet.
#[cfg_attr(not(test), allow(dead_code))]
impl Layout {
    /// Detects the layout of the running process from `/proc/self/mountinfo` and
    /// `/proc/self/cgroup`.
    pub fn host() -> Result<Layout, CgroupError> {
        let read = |p: &str| {
            std::fs::read_to_string(p).map_err(|e| CgroupError::io("read", Path::new(p), e))
        };
        Layout::detect(&read("/proc/self/mountinfo")?, &read("/proc/self/cgroup")?)
    }

    /// Detects the layout from the text of a mountinfo file and a `/proc/<pid>/cgroup` file.
    pub fn detect(mountinfo: &str, proc_self_cgroup: &str) -> Result<Layout, CgroupError> {
        let memberships = parse_proc_cgroup(proc_self_cgroup)?;
        let mut layout = Layout::default();
        let mut v2: Option<(PathBuf, PathBuf, String)> = None;
        let mut v1_mounted: Vec<Controller> = Vec::new();

        for (n, line) in mountinfo.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let m = parse_mountinfo_line(line).map_err(|detail| CgroupError::Parse {
                what: "mountinfo",
                detail: format!("line {}: {detail}: {line:?}", n + 1),
            })?;
            match m.fstype {
                "cgroup" => {
                    // Super options hold the controllers (`rw,cpu,cpuacct`), plus flags and
                    // `name=systemd` for named hierarchies, which have none of ours.
                    v1_mounted.extend(m.super_options.split(',').filter_map(Controller::from_name));
                    let ours: Vec<Controller> = m
                        .super_options
                        .split(',')
                        .filter_map(Controller::from_name)
                        .filter(|c| !layout.placements.contains_key(c))
                        .collect();
                    let Some(first) = ours.first() else {
                        continue;
                    };
                    // The /proc/self/cgroup line of this hierarchy lists its controllers.
                    let Some(path) = memberships
                        .v1
                        .iter()
                        .find(|(ctrls, _)| ctrls.iter().any(|c| c == first.name()))
                        .map(|(_, p)| p.as_str())
                    else {
                        layout.notes.push(format!(
                            "{first}: mounted at {} but absent from /proc/self/cgroup",
                            m.mount_point.display()
                        ));
                        continue;
                    };
                    let Some(own) = own_dir(&m.mount_point, m.root, path) else {
                        layout.notes.push(format!(
                            "{first}: own cgroup {path} is outside the mount {} (root {})",
                            m.mount_point.display(),
                            m.root
                        ));
                        continue;
                    };
                    for c in ours {
                        layout.placements.insert(
                            c,
                            Placement {
                                version: Version::V1,
                                mount: m.mount_point.clone(),
                                own: own.clone(),
                                proc_path: path.to_string(),
                            },
                        );
                    }
                }
                "cgroup2" if v2.is_none() => {
                    let Some(path) = memberships.v2.as_deref() else {
                        layout.notes.push(format!(
                            "cgroup2 mounted at {} but /proc/self/cgroup has no 0:: line",
                            m.mount_point.display()
                        ));
                        continue;
                    };
                    match own_dir(&m.mount_point, m.root, path) {
                        Some(own) => v2 = Some((m.mount_point, own, path.to_string())),
                        None => layout.notes.push(format!(
                            "cgroup2: own cgroup {path} is outside the mount {} (root {})",
                            m.mount_point.display(),
                            m.root
                        )),
                    }
                }
                _ => {}
            }
        }

        // Whatever is not bound to a v1 hierarchy is the unified hierarchy's (if the kernel
        // has it at all). Bound means named by a v1 mount or a v1 line of /proc/self/cgroup:
        // a v1 controller we could not reach is unusable, not a v2 one.
        let on_v1 = |c: Controller| {
            v1_mounted.contains(&c)
                || memberships
                    .v1
                    .iter()
                    .any(|(ctrls, _)| ctrls.iter().any(|x| x == c.name()))
        };
        if let Some((mount, own, proc_path)) = v2 {
            for c in Controller::ALL.into_iter().filter(|c| !on_v1(*c)) {
                layout.placements.entry(c).or_insert_with(|| Placement {
                    version: Version::V2,
                    mount: mount.clone(),
                    own: own.clone(),
                    proc_path: proc_path.clone(),
                });
            }
        }
        Ok(layout)
    }

    /// Where `c` lives, if the host mounts it.
    pub fn placement(&self, c: Controller) -> Option<&Placement> {
        self.placements.get(&c)
    }

    /// Every placed controller.
    pub fn placements(&self) -> impl Iterator<Item = (Controller, &Placement)> {
        self.placements.iter().map(|(c, p)| (*c, p))
    }

    /// Mounts skipped during detection and why, for the startup log.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }
}

struct MountLine<'a> {
    root: &'a str,
    mount_point: PathBuf,
    fstype: &'a str,
    super_options: &'a str,
}

/// `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue`
/// (proc(5)): six fixed fields, optional fields up to a lone `-`, then fstype, source and
/// super options.
fn parse_mountinfo_line(line: &str) -> Result<MountLine<'_>, &'static str> {
    let fields: Vec<&str> = line.split(' ').collect();
    if fields.len() < 10 {
        return Err("too few fields");
    }
    let sep = fields
        .iter()
        .skip(6)
        .position(|f| *f == "-")
        .map(|i| i + 6)
        .ok_or("no ' - ' separator")?;
    if fields.len() < sep + 4 {
        return Err("too few fields after the separator");
    }
    Ok(MountLine {
        root: fields[3],
        mount_point: PathBuf::from(unescape(fields[4])),
        fstype: fields[sep + 1],
        super_options: fields[sep + 3],
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
pub(crate) fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|d| (b'0'..=b'7').contains(d))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

struct Memberships {
    /// (controllers of the hierarchy, path) per v1 line.
    v1: Vec<(Vec<String>, String)>,
    /// The `0::` line's path.
    v2: Option<String>,
}

/// `hierarchy-id:controller-list:path` per line (cgroups(7)); `0::path` is the v2 line.
fn parse_proc_cgroup(s: &str) -> Result<Memberships, CgroupError> {
    let mut m = Memberships {
        v1: Vec::new(),
        v2: None,
    };
    for line in s.lines().filter(|l| !l.trim().is_empty()) {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(CgroupError::Parse {
                what: "/proc/self/cgroup",
                detail: format!("not id:controllers:path: {line:?}"),
            });
        };
        if id == "0" && ctrls.is_empty() {
            m.v2 = Some(path.to_string());
        } else {
            m.v1.push((
                ctrls.split(',').map(str::to_string).collect(),
                path.to_string(),
            ));
        }
    }
    Ok(m)
}

/// The directory of cgroup `path` (as `/proc/self/cgroup` shows it) under a mount whose root
/// within the hierarchy is `root`; `None` when the mount cannot reach it.
fn own_dir(mount_point: &Path, root: &str, path: &str) -> Option<PathBuf> {
    if !path.starts_with('/') || path.split('/').any(|c| c == "..") {
        // `/..` prefixes appear for cgroups outside our cgroup namespace.
        return None;
    }
    let rel = if root == "/" {
        path
    } else if path == root {
        ""
    } else {
        let rest = path.strip_prefix(root)?;
        if !rest.starts_with('/') {
            // `/docker/abcd` is not under `/docker/abc`.
            return None;
        }
        rest
    };
    let rel = rel.trim_start_matches('/');
    Some(if rel.is_empty() {
        mount_point.to_path_buf()
    } else {
        mount_point.join(rel)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placement(l: &Layout, c: Controller) -> (Version, String, String) {
        let p = l.placement(c).unwrap_or_else(|| panic!("{c} not placed"));
        (
            p.version,
            p.mount.display().to_string(),
            p.own.display().to_string(),
        )
    }

    /// This CI machine, verbatim (one unrelated bind mount line dropped).
    #[test]
    fn hybrid_with_every_controller_on_v1() {
        let l = Layout::detect(
            include_str!("testdata/hybrid-v1-controllers.mountinfo"),
            include_str!("testdata/hybrid-v1-controllers.cgroup"),
        )
        .unwrap();
        let mem = "/sys/fs/cgroup/memory";
        assert_eq!(
            placement(&l, Controller::Memory),
            (
                Version::V1,
                mem.into(),
                format!("{mem}/process_api/8660aacce27104503dc574237160f47d")
            )
        );
        for (c, m) in [
            (Controller::Cpu, "/sys/fs/cgroup/cpu"),
            (Controller::Cpuacct, "/sys/fs/cgroup/cpuacct"),
            (Controller::Pids, "/sys/fs/cgroup/pids"),
            (Controller::Freezer, "/sys/fs/cgroup/freezer"),
        ] {
            assert_eq!(placement(&l, c), (Version::V1, m.into(), m.into()), "{c}");
        }
        assert!(l.notes().is_empty(), "{:?}", l.notes());
    }

    const PURE_V2_MOUNTINFO: &str = "\
24 29 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
29 1 252:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
30 24 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    #[test]
    fn pure_v2_puts_everything_on_the_unified_mount() {
        let l = Layout::detect(PURE_V2_MOUNTINFO, "0::/system.slice/clove.service\n").unwrap();
        for c in Controller::ALL {
            assert_eq!(
                placement(&l, c),
                (
                    Version::V2,
                    "/sys/fs/cgroup".into(),
                    "/sys/fs/cgroup/system.slice/clove.service".into()
                ),
                "{c}"
            );
        }
    }

    /// CentOS 7 style: cpu and cpuacct co-mounted, optional fields present, no cgroup2.
    #[test]
    fn pure_v1_with_comounted_cpu_cpuacct() {
        let mountinfo = "\
25 18 0:21 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:8 - tmpfs tmpfs ro,mode=755
26 25 0:22 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:9 - cgroup cgroup rw,xattr,release_agent=/usr/lib/systemd/systemd-cgroups-agent,name=systemd
29 25 0:25 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:12 - cgroup cgroup rw,cpuacct,cpu
30 25 0:26 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,memory
31 25 0:27 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,pids
32 25 0:28 / /sys/fs/cgroup/freezer rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,freezer
33 25 0:29 / /sys/fs/cgroup/cpuset rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,cpuset
";
        let cgroup = "\
11:cpuset:/
10:freezer:/
9:pids:/system.slice/clove.service
8:memory:/system.slice/clove.service
7:cpuacct,cpu:/system.slice/clove.service
1:name=systemd:/system.slice/clove.service
";
        let l = Layout::detect(mountinfo, cgroup).unwrap();
        let svc = "system.slice/clove.service";
        for c in [Controller::Cpu, Controller::Cpuacct] {
            let m = "/sys/fs/cgroup/cpu,cpuacct";
            assert_eq!(
                placement(&l, c),
                (Version::V1, m.into(), format!("{m}/{svc}"))
            );
        }
        assert_eq!(
            placement(&l, Controller::Memory).2,
            format!("/sys/fs/cgroup/memory/{svc}")
        );
        assert_eq!(
            placement(&l, Controller::Pids).2,
            format!("/sys/fs/cgroup/pids/{svc}")
        );
        assert_eq!(
            placement(&l, Controller::Freezer),
            (
                Version::V1,
                "/sys/fs/cgroup/freezer".into(),
                "/sys/fs/cgroup/freezer".into()
            )
        );
    }

    /// A hybrid host where memory and pids are not on v1 mounts: they are cgroup2's.
    #[test]
    fn hybrid_with_controllers_on_v2() {
        let mountinfo = "\
25 18 0:21 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:8 - tmpfs tmpfs ro,mode=755
26 25 0:22 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate
27 25 0:23 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:10 - cgroup cgroup rw,xattr,name=systemd
28 25 0:24 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,cpu,cpuacct
29 25 0:25 / /sys/fs/cgroup/freezer rw,nosuid,nodev,noexec,relatime shared:12 - cgroup cgroup rw,freezer
";
        let cgroup = "\
4:freezer:/
3:cpu,cpuacct:/user.slice
1:name=systemd:/user.slice/session-2.scope
0::/user.slice/session-2.scope
";
        let l = Layout::detect(mountinfo, cgroup).unwrap();
        for c in [Controller::Memory, Controller::Pids] {
            assert_eq!(
                placement(&l, c),
                (
                    Version::V2,
                    "/sys/fs/cgroup/unified".into(),
                    "/sys/fs/cgroup/unified/user.slice/session-2.scope".into()
                ),
                "{c}"
            );
        }
        assert_eq!(
            placement(&l, Controller::Cpu),
            (
                Version::V1,
                "/sys/fs/cgroup/cpu,cpuacct".into(),
                "/sys/fs/cgroup/cpu,cpuacct/user.slice".into()
            )
        );
        assert_eq!(placement(&l, Controller::Freezer).0, Version::V1);
    }

    /// A container without a cgroup namespace: the hierarchy is bind-mounted from
    /// `/docker/<id>`, and /proc/self/cgroup shows the full path.
    #[test]
    fn bind_mounted_sub_hierarchy_strips_the_mount_root() {
        let mountinfo = "\
700 690 0:31 /docker/abc /sys/fs/cgroup/memory ro,nosuid - cgroup cgroup rw,memory
701 690 0:32 /docker/abc /sys/fs/cgroup/pids ro,nosuid - cgroup cgroup rw,pids
702 690 0:33 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
";
        let cgroup = "5:memory:/docker/abc\n4:pids:/docker/other\n3:cpu:/\n0::/\n";
        let l = Layout::detect(mountinfo, cgroup).unwrap();
        assert_eq!(placement(&l, Controller::Memory).2, "/sys/fs/cgroup/memory");
        // Unreachable on its v1 mount: unusable, and not mistaken for a v2 controller.
        assert!(l.placement(Controller::Pids).is_none());
        assert_eq!(l.notes().len(), 1, "{:?}", l.notes());
        // Bound to v1 (per /proc/self/cgroup) but not mounted here: unusable too.
        assert!(l.placement(Controller::Cpu).is_none());
        // Bound nowhere: the unified hierarchy's.
        assert_eq!(placement(&l, Controller::Freezer).0, Version::V2);
    }

    #[test]
    fn cgroup_namespace_outside_paths_are_not_reachable() {
        let l = Layout::detect(PURE_V2_MOUNTINFO, "0::/../../init.scope\n").unwrap();
        assert!(l.placement(Controller::Memory).is_none());
        assert_eq!(l.notes().len(), 1);
    }

    #[test]
    fn no_cgroup_mounts_gives_an_empty_layout() {
        let l =
            Layout::detect("27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n", "0::/\n").unwrap();
        assert_eq!(l.placements().count(), 0);
    }

    #[test]
    fn malformed_input_is_an_error_naming_the_line() {
        let e = Layout::detect("31 23 0:28 / /sys/fs/cgroup rw\n", "0::/\n").unwrap_err();
        assert!(e.to_string().starts_with("parse mountinfo: line 1"), "{e}");
        let e = Layout::detect(PURE_V2_MOUNTINFO, "garbage\n").unwrap_err();
        assert!(e.to_string().starts_with("parse /proc/self/cgroup"), "{e}");
    }

    #[test]
    fn escaped_mount_points_are_decoded() {
        assert_eq!(unescape(r"/mnt/a\040b\134c"), r"/mnt/a b\c");
        assert_eq!(unescape(r"/trailing\04"), r"/trailing\04");
    }

    #[test]
    fn host_layout_matches_proc() {
        // Whatever this machine is, detection must succeed and place memory somewhere that
        // exists when the host has cgroups mounted at all.
        let l = Layout::host().unwrap();
        for (c, p) in l.placements() {
            assert!(p.own.starts_with(&p.mount), "{c}: {p:?}");
            assert!(p.own.is_dir(), "{c}: {} missing", p.own.display());
        }
    }
}
