//! The LLM request scheduler's cost per request: one `complete` + `pop` + `push` in the
//! steady state of 64 requests in flight and 8, 64 or 1024 backlogged clients, for VTC, FIFO
//! and round-robin. (The virtual-time fairness figures, Jain's index and the polite client's
//! queue delay, are printed by the unit test `llm::sched::tests::fairness_figures`; run it
//! with `--nocapture`.)

use std::collections::VecDeque;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

/// The scheduler, as the kernel builds it.
#[path = "../src/llm/sched.rs"]
#[allow(dead_code)]
mod sched;

use sched::{ClientId, Policy, Scheduler};

/// Requests at the provider at once.
const SLOTS: usize = 64;

/// Requests each client keeps queued.
const DEPTH: usize = 4;

/// A scheduler with `clients` backlogged clients (request sizes 100..1000 by client), every
/// slot busy, and the in-flight tickets oldest first.
fn steady(policy: Policy, clients: u32) -> (Scheduler<u64>, VecDeque<u64>) {
    let mut s = Scheduler::new(policy, SLOTS, 64);
    for round in 0..DEPTH {
        for c in 0..clients {
            if s.push(c, size(c), round as u64).is_err() {
                unreachable!("under the cap");
            }
        }
    }
    let mut tickets = VecDeque::new();
    while let Some(d) = s.pop() {
        tickets.push_back(d.ticket);
        // Keep every client at DEPTH queued.
        if s.push(d.client, d.est_input, d.item).is_err() {
            unreachable!("under the cap");
        }
    }
    (s, tickets)
}

/// The input tokens of `client`'s requests: 100..1000.
fn size(client: ClientId) -> u64 {
    100 + u64::from(client % 10) * 100
}

/// The benchmark: per iteration, the oldest call completes, the next request is dispatched
/// and its client queues a new one.
fn push_pop_complete(c: &mut Criterion) {
    let mut group = c.benchmark_group("push_pop_complete");
    group.throughput(Throughput::Elements(1));
    for clients in [8u32, 64, 1024] {
        for policy in [Policy::Vtc, Policy::Fifo, Policy::RoundRobin] {
            let (mut s, mut tickets) = steady(policy, clients);
            group.bench_function(BenchmarkId::new(policy.as_str(), clients), |b| {
                b.iter(|| {
                    if let Some(t) = tickets.pop_front() {
                        s.complete(t, 500, 100);
                    }
                    if let Some(d) = s.pop() {
                        tickets.push_back(d.ticket);
                        let pushed = s.push(d.client, d.est_input, black_box(d.item));
                        black_box(pushed.is_ok());
                    }
                });
            });
        }
    }
    group.finish();
}

criterion_group!(benches, push_pop_complete);
criterion_main!(benches);
