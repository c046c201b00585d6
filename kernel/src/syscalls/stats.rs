//! Counters of the syscalls answered, for the Prometheus endpoint
//! (`kernel/src/metrics/prometheus.rs`): how many by opcode and result, and how long they took.
//!
//! Updated by [`super::handle`] for every request, whether or not the endpoint is on, so a
//! scrape sees everything since the kernel started. The hot path takes no lock and hashes
//! nothing: a slot per opcode byte of relaxed atomic counters (a success and a latency bucket);
//! only an error reply takes a mutex, to count its code. A scrape turns the slots into
//! exposition families.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clove_abi::{ErrorCode, Opcode};
use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::sync::lock;

/// Upper bounds of the latency buckets, in seconds: 1, 2.5 and 5 per decade from 10 µs to 10 s
/// (a NOOP takes tens of µs; a THINK or a blocking RECV seconds). `+Inf` follows.
pub const LATENCY_BUCKETS: [f64; 19] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// [`LATENCY_BUCKETS`] in nanoseconds, what requests are timed in.
const BOUNDS_NS: [u64; 19] = [
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
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

/// One opcode byte's counts.
#[derive(Debug, Default)]
struct Slot {
    /// Successful replies.
    ok: AtomicU64,
    /// Replies per latency bucket (not cumulative), the last one beyond 10 s.
    buckets: [AtomicU64; 20],
    /// Their total latency, ns.
    sum_ns: AtomicU64,
}

/// Syscalls answered since the kernel started. Cheap to clone: the clones share the counts.
#[derive(Debug, Clone)]
pub struct SyscallStats {
    /// Indexed by the opcode byte.
    slots: Arc<[Slot]>,
    /// Error replies by opcode byte and code.
    errors: Arc<Mutex<HashMap<(u8, ErrorCode), u64>>>,
}

impl Default for SyscallStats {
    fn default() -> Self {
        SyscallStats {
            slots: (0..=u8::MAX).map(|_| Slot::default()).collect(),
            errors: Arc::default(),
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
        let slot = &self.slots[usize::from(opcode)];
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let bucket = BOUNDS_NS
            .iter()
            .position(|bound| ns <= *bound)
            .unwrap_or(BOUNDS_NS.len());
        slot.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        slot.sum_ns.fetch_add(ns, Ordering::Relaxed);
        match error {
            None => {
                slot.ok.fetch_add(1, Ordering::Relaxed);
            }
            Some(code) => {
                let code = match code {
                    ErrorCode::Other(_) => ErrorCode::Other("other".into()),
                    code => code.clone(),
                };
                *lock(&self.errors).entry((opcode, code)).or_default() += 1;
            }
        }
    }

    /// Adds the counts as they are now to `registry`: `clove_syscalls_total` and
    /// `clove_syscall_duration_seconds`, with a series for each opcode and result seen.
    pub fn register(&self, registry: &mut Registry) {
        let calls: Family<CallLabels, Counter> = Family::default();
        let mut latency = Vec::new();
        for (byte, slot) in (0..=u8::MAX).zip(self.slots.iter()) {
            let buckets: Vec<(f64, u64)> = LATENCY_BUCKETS
                .iter()
                .copied()
                .chain(std::iter::once(f64::INFINITY))
                .zip(slot.buckets.iter().map(|b| b.load(Ordering::Relaxed)))
                .collect();
            if buckets.iter().all(|(_, n)| *n == 0) {
                continue;
            }
            let ok = slot.ok.load(Ordering::Relaxed);
            if ok > 0 {
                calls
                    .get_or_create(&CallLabels {
                        opcode: opcode_label(byte),
                        result: Cow::Borrowed("ok"),
                    })
                    .inc_by(ok);
            }
            latency.push(Latency {
                label: OpcodeLabel {
                    opcode: opcode_label(byte),
                },
                sum_secs: slot.sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
                buckets,
            });
        }
        for ((byte, code), n) in lock(&self.errors).iter() {
            calls
                .get_or_create(&CallLabels {
                    opcode: opcode_label(*byte),
                    result: Cow::Owned(code.as_str().to_owned()),
                })
                .inc_by(*n);
        }
        registry.register(
            "clove_syscalls",
            "Syscalls answered, by opcode and result (ok or the error code)",
            calls,
        );
        registry.register_with_unit(
            "clove_syscall_duration",
            "Time from a decoded request to its reply, by opcode",
            Unit::Seconds,
            LatencyFamily(latency),
        );
    }
}

/// One opcode's latency histogram as read at a scrape.
#[derive(Debug)]
struct Latency {
    label: OpcodeLabel,
    sum_secs: f64,
    /// (upper bound, replies in this bucket only), ending with `+Inf`.
    buckets: Vec<(f64, u64)>,
}

/// The latency histograms of every opcode seen.
#[derive(Debug)]
struct LatencyFamily(Vec<Latency>);

impl EncodeMetric for LatencyFamily {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for h in &self.0 {
            // The count is the buckets' total, read once: `+Inf` and `_count` always agree,
            // even while requests are being counted.
            let count = h.buckets.iter().map(|(_, n)| n).sum();
            encoder
                .encode_family(&h.label)?
                .encode_histogram::<NoLabelSet>(h.sum_secs, count, &h.buckets, None)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
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
            "clove_syscall_duration_seconds_sum{opcode=\"NOOP\"} 0.00302",
            "clove_syscall_duration_seconds_count{opcode=\"KILL\"} 1",
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
