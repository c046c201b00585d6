//! The limits an agent cgroup carries and how each is written on v1 and v2.
//!
//! A limit whose control file is missing (no swap accounting, no CFS bandwidth control) is
//! not an error: it is reported as not in force, like a missing controller, so the SPAWN
//! reply says exactly what holds.

use std::path::Path;

use super::{errno_of, CgroupError, CgroupFs, Controller, Version};

/// Resource limits for one agent's cgroup. `None`: no limit of that kind.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CgroupLimits {
    /// Memory limit in bytes. Swap is capped too (v1 `memory.memsw.limit_in_bytes` set to the
    /// same value when the host has swap accounting; v2 `memory.swap.max` = 0), so a hog is
    /// killed at the limit instead of swapping.
    pub memory: Option<u64>,
    /// CPU time allowed per period, in microseconds (at least 1000).
    pub cpu_quota_us: Option<u64>,
    /// The quota's period, in microseconds (1000 to 1000000; 100000 is the kernel default).
    pub cpu_period_us: u64,
    /// Relative CPU weight in v1 units (`cpu.shares`, default 1024). On v2 it is converted
    /// to `cpu.weight` with [`shares_to_weight`].
    pub cpu_shares: Option<u64>,
    /// Maximum number of tasks (processes and threads) in the cgroup's subtree.
    pub pids_max: Option<u64>,
}

impl Default for CgroupLimits {
    fn default() -> CgroupLimits {
        CgroupLimits {
            memory: None,
            cpu_quota_us: None,
            cpu_period_us: 100_000,
            cpu_shares: None,
            pids_max: None,
        }
    }
}

impl CgroupLimits {
    /// Which controllers these limits need.
    pub fn wanted(&self) -> Vec<Controller> {
        let mut out = Vec::new();
        if self.memory.is_some() {
            out.push(Controller::Memory);
        }
        if self.cpu_quota_us.is_some() || self.cpu_shares.is_some() {
            out.push(Controller::Cpu);
        }
        if self.pids_max.is_some() {
            out.push(Controller::Pids);
        }
        out
    }

    /// Refuses values the kernel would reject with a bare EINVAL, before anything is
    /// created.
    pub fn validate(&self) -> Result<(), CgroupError> {
        let bad = |what, reason: String| Err(CgroupError::InvalidLimit { what, reason });
        if let Some(q) = self.cpu_quota_us {
            if !(1_000..=1_000_000).contains(&self.cpu_period_us) {
                return bad(
                    "cpu_period_us",
                    format!("{} is outside 1000..=1000000", self.cpu_period_us),
                );
            }
            if q < 1_000 {
                return bad("cpu_quota_us", format!("{q} is below 1000"));
            }
        }
        if self.memory == Some(0) {
            return bad("memory", "0 bytes".into());
        }
        Ok(())
    }
}

/// Converts v1 `cpu.shares` to v2 `cpu.weight`.
///
/// The v1 range [2, 262144] maps onto [1, 10000] along the curve crun and runc use since
/// 2023: `weight = 10^((l² + 125·l) / 612 − 7/34)` with `l = log2(shares)`. It is the quadratic
/// in log space through the three points that matter: 2 → 1, 1024 (v1 default) → 100 (v2
/// default), 262144 → 10000. (The older linear `1 + (shares − 2)·9999/262142` sent the
/// default 1024 to 39, so an agent with default shares got less than a default v2 sibling.)
/// We round to the nearest integer where crun takes the ceiling, so that 1024 lands on 100
/// exactly despite floating point; values outside the range are clamped.
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares <= 2 {
        return 1;
    }
    if shares >= 262_144 {
        return 10_000;
    }
    let l = (shares as f64).log2();
    let exponent = (l * l + 125.0 * l) / 612.0 - 7.0 / 34.0;
    // In range by construction (1 < 10^e < 10000); the clamp guards rounding at the ends.
    (10f64.powf(exponent).round() as u64).clamp(1, 10_000)
}

/// Pushes `name` once.
pub(crate) fn note(not_applied: &mut Vec<&'static str>, name: &'static str) {
    if !not_applied.contains(&name) {
        not_applied.push(name);
    }
}

/// Writes the limits that belong to `controllers` (the ones available in this hierarchy)
/// into the new agent cgroup `dir`. `nested`: the cgroup sits under another agent's.
pub(crate) fn write_limits(
    fs: &dyn CgroupFs,
    version: Version,
    dir: &Path,
    controllers: &[Controller],
    limits: &CgroupLimits,
    nested: bool,
    not_applied: &mut Vec<&'static str>,
) -> Result<(), CgroupError> {
    let has = |c| controllers.contains(&c);

    if let (Some(bytes), true) = (limits.memory, has(Controller::Memory)) {
        let (limit, swap, swap_value) = match version {
            // memsw is memory+swap: equal to the memory limit means no swap. It must be
            // written after the memory limit (the kernel keeps memsw >= limit).
            Version::V1 => (
                "memory.limit_in_bytes",
                "memory.memsw.limit_in_bytes",
                bytes.to_string(),
            ),
            Version::V2 => ("memory.max", "memory.swap.max", "0".to_string()),
        };
        write_or_note(
            fs,
            &dir.join(limit),
            &bytes.to_string(),
            "memory",
            not_applied,
        )?;
        if !not_applied.contains(&"memory") {
            write_or_note(fs, &dir.join(swap), &swap_value, "swap", not_applied)?;
        }
    }

    if has(Controller::Cpu) {
        if let Some(quota) = limits.cpu_quota_us {
            let period = limits.cpu_period_us;
            match version {
                Version::V1 => {
                    write_or_note(
                        fs,
                        &dir.join("cpu.cfs_period_us"),
                        &period.to_string(),
                        "cpu",
                        not_applied,
                    )?;
                    let path = dir.join("cpu.cfs_quota_us");
                    match fs.write(&path, &quota.to_string()) {
                        Ok(()) => {}
                        Err(e) if errno_of(&e) == Some(libc::ENOENT) => note(not_applied, "cpu"),
                        // v1 refuses a child quota above its parent's; the parent's quota
                        // already caps this subtree, so the limit holds (at the lower value).
                        Err(e) if nested && errno_of(&e) == Some(libc::EINVAL) => {
                            tracing::debug!(
                                path = %path.display(),
                                "cpu quota above the parent agent's: the parent's applies"
                            );
                        }
                        Err(e) => return Err(CgroupError::io("write", &path, e)),
                    }
                }
                Version::V2 => write_or_note(
                    fs,
                    &dir.join("cpu.max"),
                    &format!("{quota} {period}"),
                    "cpu",
                    not_applied,
                )?,
            }
        }
        if let Some(shares) = limits.cpu_shares {
            let (file, value) = match version {
                Version::V1 => ("cpu.shares", shares),
                Version::V2 => ("cpu.weight", shares_to_weight(shares)),
            };
            write_or_note(fs, &dir.join(file), &value.to_string(), "cpu", not_applied)?;
        }
    }

    if let (Some(max), true) = (limits.pids_max, has(Controller::Pids)) {
        write_or_note(
            fs,
            &dir.join("pids.max"),
            &max.to_string(),
            "pids",
            not_applied,
        )?;
    }
    Ok(())
}

/// Writes a limit; a missing control file means the host lacks that feature: noted, not
/// fatal.
fn write_or_note(
    fs: &dyn CgroupFs,
    path: &Path,
    value: &str,
    name: &'static str,
    not_applied: &mut Vec<&'static str>,
) -> Result<(), CgroupError> {
    match fs.write(path, value) {
        Ok(()) => Ok(()),
        Err(e) if errno_of(&e) == Some(libc::ENOENT) => {
            note(not_applied, name);
            Ok(())
        }
        Err(e) => Err(CgroupError::io("write", path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_map_onto_weights_through_the_three_fixed_points() {
        assert_eq!(shares_to_weight(0), 1);
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 100);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(u64::MAX), 10_000);
        // Between them: what the formula gives (crun's table agrees within rounding).
        assert_eq!(shares_to_weight(512), 58);
        assert_eq!(shares_to_weight(2048), 173);
        assert_eq!(shares_to_weight(100), 17);
    }

    #[test]
    fn shares_to_weight_is_monotonic_and_in_range() {
        let mut last = 0;
        for s in (2..=262_144u64).step_by(97) {
            let w = shares_to_weight(s);
            assert!((1..=10_000).contains(&w), "{s} -> {w}");
            assert!(w >= last, "{s} -> {w} < {last}");
            last = w;
        }
    }

    #[test]
    fn validate_refuses_what_the_kernel_would() {
        let ok = CgroupLimits {
            memory: Some(64 << 20),
            cpu_quota_us: Some(50_000),
            cpu_shares: Some(512),
            pids_max: Some(32),
            ..CgroupLimits::default()
        };
        ok.validate().unwrap();
        assert_eq!(
            ok.wanted(),
            vec![Controller::Memory, Controller::Cpu, Controller::Pids]
        );
        let short_quota = CgroupLimits {
            cpu_quota_us: Some(999),
            ..CgroupLimits::default()
        };
        assert_eq!(
            short_quota.validate().unwrap_err().to_string(),
            "invalid cgroup limit cpu_quota_us: 999 is below 1000"
        );
        let long_period = CgroupLimits {
            cpu_quota_us: Some(10_000),
            cpu_period_us: 2_000_000,
            ..CgroupLimits::default()
        };
        assert!(long_period.validate().is_err());
        assert!(CgroupLimits::default().wanted().is_empty());
    }
}
