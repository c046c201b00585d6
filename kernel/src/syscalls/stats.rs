//! Counters of the syscalls answered, for the Prometheus endpoint
//! (`kernel/src/metrics/prometheus.rs`): how many by opcode and result, and how long they took.
//!
//! Updated by [`super::handle`] for every request, whether or not the endpoint is on: the cost
//! is a hash lookup under a read lock and two atomic adds, and counting from the start means
//! a scrape sees everything since the kernel started.

use std::borrow::Cow;
use std::time::Duration;

use clove_abi::{ErrorCode, Opcode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// Upper bounds of the latency buckets, in seconds: 1, 2.5 and 5 per decade from 10 µs to 10 s
/// (a NOOP takes tens of µs; a THINK or a blocking RECV seconds).
pub const LATENCY_BUCKETS: [f64; 19] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The labels of a syscall count.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct CallLabels {
    /// The opcode's name (`NOOP`), or `0x13` for an unassigned byte.
    pub opcode: Cow<'static, str>,
    /// `ok`, or the error code of the reply (`permission_denied`, `not_found`, ...).
    pub result: Cow<'static, str>,
}

/// The label of a latency histogram.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct OpcodeLabel {
    /// As in [`CallLabels::opcode`].
    pub opcode: Cow<'static, str>,
}

/// A histogram with [`LATENCY_BUCKETS`] (a plain `fn` so that the family's type is nameable).
fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// Syscalls answered since the kernel started. Cheap to clone: the clones share the counts.
#[derive(Debug, Clone)]
pub struct SyscallStats {
    /// Replies by opcode and result.
    calls: Family<CallLabels, Counter>,
    /// Time from a decoded frame to its reply payload, by opcode.
    latency: Family<OpcodeLabel, Histogram, fn() -> Histogram>,
}

impl Default for SyscallStats {
    fn default() -> Self {
        SyscallStats {
            calls: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
        }
    }
}

impl SyscallStats {
    /// Counts one reply to `opcode`: `error` is its error code, `None` for a success.
    ///
    /// The label sets stay bounded: 256 opcode bytes at most, and the error codes the kernel
    /// itself produces (a code it does not know, which only a newer peer could send, is
    /// counted as `other`).
    pub fn observe(&self, opcode: u8, error: Option<&ErrorCode>, took: Duration) {
        let opcode = opcode_label(opcode);
        let result = match error {
            None => Cow::Borrowed("ok"),
            Some(ErrorCode::Other(_)) => Cow::Borrowed("other"),
            Some(code) => Cow::Owned(code.as_str().to_owned()),
        };
        self.latency
            .get_or_create(&OpcodeLabel {
                opcode: opcode.clone(),
            })
            .observe(took.as_secs_f64());
        self.calls
            .get_or_create(&CallLabels { opcode, result })
            .inc();
    }

    /// Adds the two families to `registry` (they keep counting: the registry holds clones).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "clove_syscalls",
            "Syscalls answered, by opcode and result (ok or the error code)",
            self.calls.clone(),
        );
        registry.register_with_unit(
            "clove_syscall_duration",
            "Time from a decoded request to its reply, by opcode",
            Unit::Seconds,
            self.latency.clone(),
        );
    }
}

/// An opcode's label: its name, or `0x13` for an unassigned byte (the same as the audit's).
fn opcode_label(opcode: u8) -> Cow<'static, str> {
    match Opcode::from_u8(opcode) {
        Some(op) => Cow::Borrowed(op.name()),
        None => Cow::Owned(format!("0x{opcode:02X}")),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn counts_by_opcode_and_result_and_times_by_opcode() {
        let stats = SyscallStats::default();
        stats.observe(Opcode::Noop as u8, None, Duration::from_micros(20));
        stats.observe(Opcode::Noop as u8, None, Duration::from_millis(3));
        stats.observe(
            Opcode::Kill as u8,
            Some(&ErrorCode::NotFound),
            Duration::from_secs(20),
        );
        stats.observe(0x13, Some(&ErrorCode::Other("new".into())), Duration::ZERO);
        let mut registry = Registry::default();
        stats.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "clove_syscalls_total{opcode=\"NOOP\",result=\"ok\"} 2",
            "clove_syscalls_total{opcode=\"KILL\",result=\"not_found\"} 1",
            "clove_syscalls_total{opcode=\"0x13\",result=\"other\"} 1",
            "clove_syscall_duration_seconds_count{opcode=\"NOOP\"} 2",
            "clove_syscall_duration_seconds_bucket{le=\"0.00001\",opcode=\"NOOP\"} 0",
            "clove_syscall_duration_seconds_bucket{le=\"0.000025\",opcode=\"NOOP\"} 1",
            "clove_syscall_duration_seconds_bucket{le=\"0.005\",opcode=\"NOOP\"} 2",
            "clove_syscall_duration_seconds_bucket{le=\"10.0\",opcode=\"KILL\"} 0",
            "clove_syscall_duration_seconds_bucket{le=\"+Inf\",opcode=\"KILL\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} not in\n{text}");
        }
    }
}
