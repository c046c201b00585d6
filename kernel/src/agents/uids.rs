//! Unprivileged uids for agents.
//!
//! Each kernel draws agent uids from its own block, derived from its state dir, so several
//! kernels on one host (tests run many) never hand two agents the same uid, and a kernel
//! restarted on the same state dir hands an agent id the same uid as before (its work dir and
//! agent-scope files stay its own). Blocks lie in 2^30..2^31, far above any real user or
//! system account and below the 2^31 limit some tools still have; uid = block + id mod 2^16.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Where the blocks start.
const BASE: u32 = 1 << 30;
/// Uids per block.
const BLOCK: u32 = 1 << 16;
/// Number of blocks between 2^30 and 2^31.
const BLOCKS: u32 = (1 << 30) / BLOCK;

/// A kernel's block of agent uids (gid = uid).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UidBlock {
    first: u32,
}

impl UidBlock {
    /// The block of the kernel whose state dir is `state_dir` (pass the canonical path).
    pub fn for_state_dir(state_dir: &Path) -> UidBlock {
        let block = (state_dir_hash(state_dir) % u64::from(BLOCKS)) as u32;
        UidBlock {
            first: BASE + block * BLOCK,
        }
    }

    /// The uid (and gid) of agent `id`. Id 0 is never an agent; the block's first uid stays
    /// unused.
    pub fn uid(&self, id: u32) -> u32 {
        self.first + (id % BLOCK).max(1)
    }

    /// Whether `uid` belongs to this block.
    #[cfg(test)]
    pub fn contains(&self, uid: u32) -> bool {
        (self.first..self.first + BLOCK).contains(&uid)
    }
}

/// A hash of a state dir's path that never changes: FNV-1a over its bytes (`DefaultHasher`
/// promises stability neither across Rust versions nor across builds). Everything a kernel
/// derives from its state dir (uid block, cgroup subtree) goes through it.
pub fn state_dir_hash(state_dir: &Path) -> u64 {
    state_dir
        .as_os_str()
        .as_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325, |h: u64, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_stable_distinct_and_in_range() {
        let a = UidBlock::for_state_dir(Path::new("/var/lib/clove"));
        let b = UidBlock::for_state_dir(Path::new("/tmp/clove-test-1"));
        assert_eq!(a, UidBlock::for_state_dir(Path::new("/var/lib/clove")));
        assert_ne!(a, b);
        for block in [a, b] {
            for id in [1, 2, 65_535, 65_536, u32::MAX] {
                let uid = block.uid(id);
                assert!((BASE..1u32 << 31).contains(&uid), "{uid}");
                assert!(block.contains(uid));
                assert_ne!(uid, block.first);
            }
        }
        assert_ne!(a.uid(1), a.uid(2));
        // FNV-1a's published values: the derivation never changes between builds.
        assert_eq!(state_dir_hash(Path::new("")), 0xcbf2_9ce4_8422_2325);
        assert_eq!(state_dir_hash(Path::new("a")), 0xaf63_dc4c_8601_ec8c);
    }
}
