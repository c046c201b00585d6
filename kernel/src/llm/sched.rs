//! The LLM request scheduler: who among the waiting THINK requests is sent to the provider
//! next. Pure and `std`-only (the async layer holds it in a mutex; the criterion bench
//! includes this file by `#[path]`), generic over the queued item.
//!
//! Requests wait in per-client FIFO queues (at most `queue_cap` each). At most
//! `max_in_flight` are at the provider at once; [`Scheduler::pop`] hands out the next one
//! whenever a slot is free (work-conserving: with something queued and a slot free, `pop`
//! never returns `None`), and [`Scheduler::complete`] / [`Scheduler::abandon`] give the slot
//! back.
//!
//! # Policies
//!
//! * [`Policy::Vtc`] (default), the Virtual Token Counter of Sheng et al., "Fairness in
//!   Serving Large Language Models" (OSDI 2024). Each client has a counter of the service it
//!   received, divided by its weight; the backlogged client with the least counter is served
//!   (ties: the client whose head request arrived first). The cost of a request is
//!   `input tokens + 2 × output tokens`. Output tokens are known only when the call ends, so
//!   [`Scheduler::pop`] charges the estimated input tokens and [`Scheduler::complete`] charges
//!   the rest (`actual input − estimate + 2 × output`). **The lift** (the paper's Algorithm 2,
//!   lines 4–10): when a client becomes backlogged (its queue was empty), its counter is
//!   raised to `max(own, min over the other backlogged clients)`; if no other client is
//!   backlogged, to `max(own, counter of the client dispatched last)` (the paper's "last
//!   client to leave the queue"). A client idle for a while so banks no credit and cannot
//!   then starve the others; a counter is never lowered, so leaving and coming back does not
//!   reset it either.
//! * [`Policy::Fifo`]: the oldest queued request first, whoever sent it.
//! * [`Policy::RoundRobin`]: one request per backlogged client in turn, whatever its size.
//!
//! Counters are kept (and reported by [`Scheduler::stats`]) under every policy; the lift is
//! VTC's only.
//!
//! # Bound
//!
//! Under VTC, for two clients that stay backlogged, weights 1 and estimates exact, the
//! difference of their counters stays at most `max input + max_in_flight × 2 × max output`
//! (so at most `max_in_flight × max request cost`): when client `a` was last dispatched its
//! counter was not above `b`'s; since then it grew by that request's input and by the output
//! of at most `max_in_flight` requests then in flight, and `b`'s did not shrink. This is the
//! paper's `2·max(w·L_input, w·M)` shape with our per-slot (not per-batch) accounting.
//!
//! # Cost
//!
//! VTC and FIFO keep the backlogged clients in a `BTreeSet` ordered by (counter or 0, arrival
//! of the head request): `push`, `pop` and `complete` are O(log clients). Round-robin keeps a
//! ring of clients: `pop` is amortized O(1). `retain` is O(queued + clients · log clients),
//! `cancel_client` O(its queue + log clients).

use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::str::FromStr;

/// Who a request is for: one id per agent (or whatever the caller shares a budget by).
pub type ClientId = u32;

/// How the next request is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// Virtual Token Counter fairness (least weighted service first, with the lift).
    #[default]
    Vtc,
    /// First come, first served, across all clients.
    Fifo,
    /// One request per backlogged client in turn.
    RoundRobin,
}

impl Policy {
    /// The policy's name in configuration: `vtc`, `fifo`, `round_robin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Vtc => "vtc",
            Policy::Fifo => "fifo",
            Policy::RoundRobin => "round_robin",
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A policy name that is none of `vtc`, `fifo`, `round_robin`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownPolicy(pub String);

impl fmt::Display for UnknownPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown scheduling policy {:?} (expected vtc, fifo or round_robin)",
            self.0
        )
    }
}

impl std::error::Error for UnknownPolicy {}

impl FromStr for Policy {
    type Err = UnknownPolicy;

    fn from_str(s: &str) -> Result<Policy, UnknownPolicy> {
        match s {
            "vtc" => Ok(Policy::Vtc),
            "fifo" => Ok(Policy::Fifo),
            "round_robin" => Ok(Policy::RoundRobin),
            other => Err(UnknownPolicy(other.to_owned())),
        }
    }
}

/// A request handed out by [`Scheduler::pop`]: send it, then report its end with
/// [`Scheduler::complete`] or [`Scheduler::abandon`] and this `ticket`.
#[derive(Debug)]
pub struct Dispatch<T> {
    /// Whose request it is.
    pub client: ClientId,
    /// The queued item (for the async layer, the waiter's reply channel).
    pub item: T,
    /// The estimated input tokens given to [`Scheduler::push`] (already charged).
    pub est_input: u64,
    /// Names this in-flight request for `complete` / `abandon`.
    pub ticket: u64,
}

/// One client's state, as [`Scheduler::stats`] reports it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClientStats {
    /// Requests waiting in its queue.
    pub queued: usize,
    /// Its requests at the provider now.
    pub in_flight: usize,
    /// Its virtual counter: service received divided by weight, lifts included.
    pub counter: f64,
    /// The cost it was actually charged (`input + 2 × output`, estimates until completion),
    /// unweighted and without lifts.
    pub served: f64,
    /// Its weight (1.0 unless set).
    pub weight: f64,
}

/// The weight of a client nobody set one for.
const DEFAULT_WEIGHT: f64 = 1.0;

/// A waiting request.
#[derive(Debug)]
struct Queued<T> {
    /// The caller's item.
    item: T,
    /// Estimated input tokens.
    est_input: u64,
    /// Arrival order, over all clients (FIFO order and VTC tie-break).
    seq: u64,
}

/// A client's state.
#[derive(Debug)]
struct Client<T> {
    /// Its waiting requests, oldest first.
    queue: VecDeque<Queued<T>>,
    /// Virtual counter (service / weight, with lifts).
    counter: f64,
    /// Unweighted charged cost.
    served: f64,
    /// Share weight (> 0).
    weight: f64,
    /// Requests at the provider.
    in_flight: usize,
    /// Its key in [`Scheduler::backlog`], while it is there.
    key: Option<Key>,
    /// Whether it is in [`Scheduler::ring`] (round-robin).
    in_ring: bool,
    /// [`Scheduler::forget`] was called while requests were in flight: drop the state when
    /// the last one ends.
    gone: bool,
}

impl<T> Client<T> {
    /// A client with no history.
    fn new() -> Client<T> {
        Client {
            queue: VecDeque::new(),
            counter: 0.0,
            served: 0.0,
            weight: DEFAULT_WEIGHT,
            in_flight: 0,
            key: None,
            in_ring: false,
            gone: false,
        }
    }
}

/// A backlogged client's place in the VTC / FIFO order: least `vt` first (the counter under
/// VTC, 0 under FIFO), then the earliest head request.
#[derive(Debug, Clone, Copy)]
struct Key {
    /// Virtual time: the counter (VTC) or 0 (FIFO).
    vt: f64,
    /// Arrival order of the client's head request.
    seq: u64,
    /// The client.
    client: ClientId,
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Key {}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Key) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Key {
    fn cmp(&self, other: &Key) -> Ordering {
        self.vt
            .total_cmp(&other.vt)
            .then(self.seq.cmp(&other.seq))
            .then(self.client.cmp(&other.client))
    }
}

/// A request at the provider.
#[derive(Debug, Clone, Copy)]
struct Flight {
    /// Whose.
    client: ClientId,
    /// The input tokens charged at dispatch.
    est_input: u64,
}

/// Per-client queues, a global in-flight limit and a policy choosing who is served next.
#[derive(Debug)]
pub struct Scheduler<T> {
    /// The policy.
    policy: Policy,
    /// Most requests at the provider at once (≥ 1).
    max_in_flight: usize,
    /// Most requests waiting per client (≥ 1).
    queue_cap: usize,
    /// Every client with state (queued, in flight, a counter or a weight).
    clients: HashMap<ClientId, Client<T>>,
    /// Backlogged clients in service order (VTC, FIFO).
    backlog: BTreeSet<Key>,
    /// Backlogged clients in turn (round-robin); entries of clients no longer backlogged are
    /// skipped (and dropped) by `pop`.
    ring: VecDeque<ClientId>,
    /// Requests at the provider, by ticket.
    flights: HashMap<u64, Flight>,
    /// Requests waiting, over all clients.
    queued: usize,
    /// Next arrival number.
    next_seq: u64,
    /// Next ticket.
    next_ticket: u64,
    /// The client dispatched last, for the lift when nobody else is backlogged.
    last_served: Option<ClientId>,
    /// Its counter, kept up to date (also after it is forgotten).
    last_counter: f64,
}

impl<T> Scheduler<T> {
    /// A scheduler with `policy`, at most `max_in_flight` requests at the provider and at most
    /// `queue_cap` waiting per client (both at least 1).
    pub fn new(policy: Policy, max_in_flight: usize, queue_cap: usize) -> Scheduler<T> {
        Scheduler {
            policy,
            max_in_flight: max_in_flight.max(1),
            queue_cap: queue_cap.max(1),
            clients: HashMap::new(),
            backlog: BTreeSet::new(),
            ring: VecDeque::new(),
            flights: HashMap::new(),
            queued: 0,
            next_seq: 0,
            next_ticket: 0,
            last_served: None,
            last_counter: 0.0,
        }
    }

    /// Sets `client`'s share weight: weight 2 gets twice the service of weight 1 when both
    /// are backlogged. Applies to charges from now on. A weight that is not finite and
    /// positive is ignored.
    pub fn set_weight(&mut self, client: ClientId, weight: f64) {
        if weight.is_finite() && weight > 0.0 {
            self.clients
                .entry(client)
                .or_insert_with(Client::new)
                .weight = weight;
        }
    }

    /// Queues `item` for `client`, with its estimated input tokens. `Err(item)` when that
    /// client already has `queue_cap` requests waiting.
    pub fn push(&mut self, client: ClientId, est_input: u64, item: T) -> Result<(), T> {
        let was_idle = match self.clients.get(&client) {
            Some(c) if c.queue.len() >= self.queue_cap => return Err(item),
            Some(c) => c.queue.is_empty(),
            None => true,
        };
        if was_idle && self.policy == Policy::Vtc {
            // The lift: the other backlogged clients' least counter, or (nobody backlogged)
            // the counter of the client dispatched last. `client` is not in the backlog.
            let floor = match self.backlog.first() {
                Some(k) => k.vt,
                None if self.last_served.is_some() => self.last_counter,
                None => 0.0,
            };
            let c = self.clients.entry(client).or_insert_with(Client::new);
            if c.counter < floor {
                c.counter = floor;
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let c = self.clients.entry(client).or_insert_with(Client::new);
        c.gone = false;
        c.queue.push_back(Queued {
            item,
            est_input,
            seq,
        });
        self.queued += 1;
        if was_idle {
            self.reindex(client);
        }
        Ok(())
    }

    /// The next request to send, charging its estimate; `None` when `max_in_flight` are
    /// already out or nothing is queued.
    pub fn pop(&mut self) -> Option<Dispatch<T>> {
        if self.flights.len() >= self.max_in_flight || self.queued == 0 {
            return None;
        }
        let client = match self.policy {
            Policy::Vtc | Policy::Fifo => self.backlog.first().map(|k| k.client)?,
            Policy::RoundRobin => self.next_in_ring()?,
        };
        let c = self.clients.get_mut(&client)?;
        let q = c.queue.pop_front()?;
        self.queued -= 1;
        c.in_flight += 1;
        let est = q.est_input as f64;
        c.served += est;
        c.counter += est / c.weight;
        self.last_served = Some(client);
        self.last_counter = c.counter;
        if self.policy == Policy::RoundRobin && !c.queue.is_empty() {
            self.ring.push_back(client);
        } else if self.policy == Policy::RoundRobin {
            c.in_ring = false;
        }
        self.reindex(client);
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.flights.insert(
            ticket,
            Flight {
                client,
                est_input: q.est_input,
            },
        );
        Some(Dispatch {
            client,
            item: q.item,
            est_input: q.est_input,
            ticket,
        })
    }

    /// The call of `ticket` ended with `input` and `output` tokens: frees its slot and charges
    /// `input − estimate + 2 × output`. An unknown (or already ended) ticket is ignored.
    pub fn complete(&mut self, ticket: u64, input: u64, output: u64) {
        let Some(f) = self.flights.remove(&ticket) else {
            return;
        };
        let rest = input as f64 - f.est_input as f64 + 2.0 * output as f64;
        if let Some(c) = self.clients.get_mut(&f.client) {
            c.served += rest;
            c.counter += rest / c.weight;
            if self.last_served == Some(f.client) {
                self.last_counter = c.counter;
            }
        }
        self.end_flight(f.client);
    }

    /// The call of `ticket` was cancelled: frees its slot; the estimate stays charged. An
    /// unknown (or already ended) ticket is ignored.
    pub fn abandon(&mut self, ticket: u64) {
        if let Some(f) = self.flights.remove(&ticket) {
            self.end_flight(f.client);
        }
    }

    /// Keeps only the queued items `keep` accepts (the others' waiters are gone); the
    /// dropped items are dropped.
    pub fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        let mut changed = Vec::new();
        for (&id, c) in self.clients.iter_mut() {
            let before = c.queue.len();
            let head = c.queue.front().map(|q| q.seq);
            c.queue.retain(|q| keep(&q.item));
            self.queued -= before - c.queue.len();
            if c.queue.front().map(|q| q.seq) != head {
                changed.push(id);
            }
        }
        for id in changed {
            self.reindex(id);
        }
    }

    /// Removes `client`'s queued items and returns them, oldest first. Its in-flight requests
    /// stay (the caller abandons or completes them).
    pub fn cancel_client(&mut self, client: ClientId) -> Vec<T> {
        let Some(c) = self.clients.get_mut(&client) else {
            return Vec::new();
        };
        let items: Vec<T> = c.queue.drain(..).map(|q| q.item).collect();
        self.queued -= items.len();
        self.reindex(client);
        items
    }

    /// Drops `client`'s state (queued items, counter, weight) once it is gone. With requests
    /// still in flight the state goes when the last of them ends.
    pub fn forget(&mut self, client: ClientId) {
        drop(self.cancel_client(client));
        if let Some(c) = self.clients.get_mut(&client) {
            if c.in_flight == 0 {
                self.remove_client(client);
            } else {
                c.gone = true;
            }
        }
    }

    /// `client`'s queue, in-flight count, counter, served cost and weight (zeros and weight 1
    /// for a client without state).
    pub fn stats(&self, client: ClientId) -> ClientStats {
        match self.clients.get(&client) {
            Some(c) => ClientStats {
                queued: c.queue.len(),
                in_flight: c.in_flight,
                counter: c.counter,
                served: c.served,
                weight: c.weight,
            },
            None => ClientStats {
                queued: 0,
                in_flight: 0,
                counter: 0.0,
                served: 0.0,
                weight: DEFAULT_WEIGHT,
            },
        }
    }

    /// Requests at the provider now.
    pub fn in_flight(&self) -> usize {
        self.flights.len()
    }

    /// Requests waiting, over all clients.
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// The policy.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// The in-flight limit.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight
    }

    /// One of `client`'s requests left the provider.
    fn end_flight(&mut self, client: ClientId) {
        if let Some(c) = self.clients.get_mut(&client) {
            c.in_flight = c.in_flight.saturating_sub(1);
            if c.gone && c.in_flight == 0 && c.queue.is_empty() {
                self.remove_client(client);
                return;
            }
        }
        // Its counter may have changed: its place in the VTC order too.
        if self.policy == Policy::Vtc {
            self.reindex(client);
        }
    }

    /// Drops an idle client's state, and its stale round-robin entries (so that a new client
    /// with the same id gets one turn per round).
    fn remove_client(&mut self, client: ClientId) {
        if let Some(c) = self.clients.remove(&client) {
            if c.in_ring {
                self.ring.retain(|&id| id != client);
            }
        }
    }

    /// Puts `client` where it belongs in the service order after its queue or counter changed:
    /// out of it when its queue is empty.
    fn reindex(&mut self, client: ClientId) {
        let Some(c) = self.clients.get_mut(&client) else {
            return;
        };
        match self.policy {
            Policy::Vtc | Policy::Fifo => {
                let key = c.queue.front().map(|q| Key {
                    vt: if self.policy == Policy::Vtc {
                        c.counter
                    } else {
                        0.0
                    },
                    seq: q.seq,
                    client,
                });
                if c.key == key {
                    return;
                }
                if let Some(old) = c.key.take() {
                    self.backlog.remove(&old);
                }
                if let Some(new) = key {
                    self.backlog.insert(new);
                    c.key = Some(new);
                }
            }
            Policy::RoundRobin => {
                if !c.queue.is_empty() && !c.in_ring {
                    c.in_ring = true;
                    self.ring.push_back(client);
                }
            }
        }
    }

    /// The next backlogged client in the round-robin ring (taken off its front; `pop` puts it
    /// back at the end if it stays backlogged). Stale entries are dropped on the way.
    fn next_in_ring(&mut self) -> Option<ClientId> {
        while let Some(id) = self.ring.pop_front() {
            match self.clients.get_mut(&id) {
                Some(c) if !c.queue.is_empty() => return Some(id),
                Some(c) => c.in_ring = false,
                None => {}
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// splitmix64: a deterministic PRNG for the randomized tests.
    struct Rng(u64);

    impl Rng {
        /// The next 64 random bits.
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        /// Uniform in `0..n`.
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// Jain's fairness index of `xs`: 1 when all equal, 1/n when one has everything.
    fn jain(xs: &[f64]) -> f64 {
        let sum: f64 = xs.iter().sum();
        let squares: f64 = xs.iter().map(|x| x * x).sum();
        if squares == 0.0 {
            1.0
        } else {
            sum * sum / (xs.len() as f64 * squares)
        }
    }

    /// The `p` quantile (0..=1) of `xs` (nearest rank).
    fn quantile(xs: &[f64], p: f64) -> f64 {
        let mut v = xs.to_vec();
        v.sort_by(f64::total_cmp);
        let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
        v[rank - 1]
    }

    /// The cost of a request, as VTC counts it.
    fn cost(input: u64, output: u64) -> f64 {
        input as f64 + 2.0 * output as f64
    }

    /// A simulated request: who, when it arrived, its actual tokens (the estimate is exact).
    #[derive(Debug, Clone, Copy)]
    struct Req {
        /// Whose.
        client: ClientId,
        /// Virtual arrival time.
        arrival: f64,
        /// Input tokens.
        input: u64,
        /// Output tokens.
        output: u64,
    }

    /// A virtual-time simulation: each dispatched request completes `cost / speed` time units
    /// after its dispatch (every slot serves at `speed`).
    struct Sim {
        /// The scheduler under test.
        sched: Scheduler<Req>,
        /// Virtual time.
        now: f64,
        /// Cost units per time unit, per slot.
        speed: f64,
        /// At the provider: finish time, ticket, request.
        running: Vec<(f64, u64, Req)>,
        /// Completed cost per client.
        served: HashMap<ClientId, f64>,
        /// Queue delays (dispatch − arrival) per client.
        delays: HashMap<ClientId, Vec<f64>>,
    }

    impl Sim {
        /// A simulation of `policy` with `slots` in flight, speed 1, queues unbounded.
        fn new(policy: Policy, slots: usize) -> Sim {
            Sim {
                sched: Scheduler::new(policy, slots, usize::MAX),
                now: 0.0,
                speed: 1.0,
                running: Vec::new(),
                served: HashMap::new(),
                delays: HashMap::new(),
            }
        }

        /// A request for `client` arriving now.
        fn push(&mut self, client: ClientId, input: u64, output: u64) {
            let req = Req {
                client,
                arrival: self.now,
                input,
                output,
            };
            self.sched
                .push(client, input, req)
                .expect("queues are unbounded");
        }

        /// Dispatches while the scheduler hands out requests.
        fn dispatch(&mut self) {
            while let Some(d) = self.sched.pop() {
                let r = d.item;
                assert_eq!(d.client, r.client);
                self.delays
                    .entry(r.client)
                    .or_default()
                    .push(self.now - r.arrival);
                let finish = self.now + cost(r.input, r.output) / self.speed;
                self.running.push((finish, d.ticket, r));
            }
        }

        /// Runs to virtual time `until`: `arrivals` (sorted by arrival) are pushed when time
        /// reaches them; `check` sees the scheduler after every event.
        fn run(&mut self, arrivals: &[Req], until: f64, mut check: impl FnMut(&Scheduler<Req>)) {
            let mut next = 0;
            loop {
                self.dispatch();
                check(&self.sched);
                let t_arrival = arrivals.get(next).map(|r| r.arrival);
                let t_finish = self.running.iter().map(|r| r.0).min_by(f64::total_cmp);
                let t = match (t_arrival, t_finish) {
                    (Some(a), Some(f)) => a.min(f),
                    (Some(a), None) => a,
                    (None, Some(f)) => f,
                    (None, None) => break,
                };
                if t > until {
                    break;
                }
                self.now = t;
                while let Some(i) = self.running.iter().position(|r| r.0 <= t) {
                    let (_, ticket, r) = self.running.swap_remove(i);
                    self.sched.complete(ticket, r.input, r.output);
                    *self.served.entry(r.client).or_default() += cost(r.input, r.output);
                }
                while let Some(r) = arrivals.get(next).filter(|r| r.arrival <= t) {
                    self.push(r.client, r.input, r.output);
                    next += 1;
                }
            }
            self.now = until;
        }

        /// Completed cost of `client`.
        fn served(&self, client: ClientId) -> f64 {
            self.served.get(&client).copied().unwrap_or_default()
        }
    }

    /// Pops one request and completes it at once with `output` tokens (input = estimate).
    fn serve_one(s: &mut Scheduler<u64>, output: u64) -> ClientId {
        let d = s.pop().expect("something is queued");
        s.complete(d.ticket, d.est_input, output);
        d.client
    }

    #[test]
    fn policy_names_round_trip() {
        for p in [Policy::Vtc, Policy::Fifo, Policy::RoundRobin] {
            assert_eq!(p.as_str().parse::<Policy>(), Ok(p));
            assert_eq!(p.to_string(), p.as_str());
        }
        assert_eq!(Policy::default(), Policy::Vtc);
        assert!("lottery".parse::<Policy>().is_err());
    }

    #[test]
    fn work_conserving_under_random_operations() {
        const CLIENTS: u32 = 5;
        const SLOTS: usize = 3;
        for (seed, policy) in [Policy::Vtc, Policy::Fifo, Policy::RoundRobin]
            .into_iter()
            .enumerate()
        {
            let mut rng = Rng(seed as u64 + 1);
            let mut s: Scheduler<u64> = Scheduler::new(policy, SLOTS, 6);
            let mut tickets: Vec<u64> = Vec::new();
            let mut next_item = 0u64;
            let mut dispatched = 0;
            for _ in 0..20_000 {
                let client = rng.below(u64::from(CLIENTS)) as ClientId;
                match rng.below(100) {
                    0..=44 => {
                        let _ = s.push(client, 1 + rng.below(1000), next_item);
                        next_item += 1;
                    }
                    45..=74 if !tickets.is_empty() => {
                        let t = tickets.swap_remove(rng.below(tickets.len() as u64) as usize);
                        s.complete(t, rng.below(1000), rng.below(500));
                    }
                    75..=84 if !tickets.is_empty() => {
                        let t = tickets.swap_remove(rng.below(tickets.len() as u64) as usize);
                        s.abandon(t);
                        s.abandon(t); // twice: no effect
                    }
                    85..=88 => drop(s.cancel_client(client)),
                    89..=91 => s.retain(|item| item % 7 != 0),
                    92..=93 => s.forget(client),
                    94..=96 => s.set_weight(client, 0.5 + rng.below(4) as f64),
                    _ => {}
                }
                // The invariants: counts add up.
                let per_client: Vec<ClientStats> = (0..CLIENTS).map(|c| s.stats(c)).collect();
                assert_eq!(
                    s.queued(),
                    per_client.iter().map(|c| c.queued).sum::<usize>()
                );
                assert_eq!(s.in_flight(), tickets.len());
                assert_eq!(
                    s.in_flight(),
                    per_client.iter().map(|c| c.in_flight).sum::<usize>()
                );
                // Work conservation: with work queued and a slot free, pop hands something out.
                while s.queued() > 0 && s.in_flight() < SLOTS {
                    let d = s
                        .pop()
                        .expect("work-conserving: queued work and a free slot");
                    tickets.push(d.ticket);
                    dispatched += 1;
                }
                assert!(s.pop().is_none(), "all slots busy or nothing queued");
            }
            assert!(dispatched > 1000, "{policy}: the run exercised dispatching");
        }
    }

    /// How many pops after B's arrival (A has 1000 queued and every slot) until B's request
    /// is dispatched; each pop follows the completion of A's oldest request.
    fn pops_until_late_client_served(policy: Policy) -> usize {
        const SLOTS: usize = 4;
        let mut s: Scheduler<u64> = Scheduler::new(policy, SLOTS, 2000);
        for i in 0..1000 {
            s.push(1, 100, i).expect("under the cap");
        }
        let mut running: VecDeque<u64> = (0..SLOTS)
            .map(|_| s.pop().expect("A is queued").ticket)
            .collect();
        s.push(2, 100, 0).expect("B's first request");
        for pops in 1.. {
            let t = running.pop_front().expect("slots are busy");
            s.complete(t, 100, 50);
            let d = s.pop().expect("work is queued");
            if d.client == 2 {
                return pops;
            }
            running.push_back(d.ticket);
        }
        unreachable!()
    }

    #[test]
    fn late_client_is_not_starved_by_a_flooder() {
        let vtc = pops_until_late_client_served(Policy::Vtc);
        assert!(
            vtc <= 4,
            "VTC: B served within max_in_flight pops, took {vtc}"
        );
        let rr = pops_until_late_client_served(Policy::RoundRobin);
        assert!(
            rr <= 4,
            "round-robin: B served within max_in_flight pops, took {rr}"
        );
        let fifo = pops_until_late_client_served(Policy::Fifo);
        assert_eq!(
            fifo,
            1000 - 4 + 1,
            "FIFO: B waits behind the rest of A's 1000"
        );
    }

    #[test]
    fn weighted_shares_hold() {
        let mut sim = Sim::new(Policy::Vtc, 4);
        sim.sched.set_weight(1, 1.0);
        sim.sched.set_weight(2, 2.0);
        for _ in 0..5000 {
            sim.push(1, 100, 50);
            sim.push(2, 100, 50);
        }
        sim.run(&[], 200_000.0, |_| {});
        assert!(sim.sched.stats(1).queued > 0 && sim.sched.stats(2).queued > 0);
        let ratio = sim.served(2) / sim.served(1);
        assert!(
            (ratio - 2.0).abs() < 0.1,
            "weight 2 gets twice weight 1's service: ratio {ratio}"
        );
        // Equal weights: equal shares (the contrast).
        let mut sim = Sim::new(Policy::Vtc, 4);
        for _ in 0..5000 {
            sim.push(1, 100, 50);
            sim.push(2, 100, 50);
        }
        sim.run(&[], 200_000.0, |_| {});
        let ratio = sim.served(2) / sim.served(1);
        assert!((ratio - 1.0).abs() < 0.05, "equal weights: ratio {ratio}");
    }

    /// The largest counter difference between two always-backlogged clients, one sending
    /// requests of cost 200 (100 in, 50 out), the other of cost 2000 (1000 in, 500 out),
    /// with 4 slots, seen after any event.
    fn max_counter_gap(policy: Policy) -> f64 {
        let mut sim = Sim::new(policy, 4);
        for _ in 0..10_000 {
            sim.push(1, 100, 50);
            sim.push(2, 1000, 500);
        }
        let mut gap: f64 = 0.0;
        sim.run(&[], 300_000.0, |s| {
            gap = gap.max((s.stats(1).counter - s.stats(2).counter).abs());
        });
        assert!(sim.sched.stats(1).queued > 0 && sim.sched.stats(2).queued > 0);
        gap
    }

    #[test]
    fn service_difference_stays_bounded() {
        // The bound (module docs): max input + max_in_flight × 2 × max output.
        let bound = 1000.0 + 4.0 * 2.0 * 500.0;
        let vtc = max_counter_gap(Policy::Vtc);
        println!("counter gap: VTC {vtc}, bound {bound}");
        assert!(vtc <= bound, "VTC counter gap {vtc} over the bound {bound}");
        // Serving requests rather than tokens lets the gap grow without bound.
        let fifo = max_counter_gap(Policy::Fifo);
        assert!(fifo > 10.0 * bound, "FIFO gap {fifo}");
        let rr = max_counter_gap(Policy::RoundRobin);
        assert!(rr > 10.0 * bound, "round-robin gap {rr}");
    }

    #[test]
    fn idle_client_gets_no_burst_when_it_returns() {
        let mut s: Scheduler<u64> = Scheduler::new(Policy::Vtc, 1, 10_000);
        for i in 0..5 {
            s.push(3, 100, i).expect("under the cap");
        }
        for i in 0..2000 {
            s.push(1, 100, i).expect("under the cap");
            s.push(2, 100, i).expect("under the cap");
        }
        for _ in 0..600 {
            serve_one(&mut s, 50);
        }
        assert_eq!(s.stats(3).queued, 0, "C's 5 were served early on");
        let others = s.stats(1).counter.min(s.stats(2).counter);
        assert!(s.stats(3).counter < others / 10.0, "C has been idle");
        // C returns with a burst of its own.
        for i in 0..300 {
            s.push(3, 100, i).expect("under the cap");
        }
        assert!(
            s.stats(3).counter >= others,
            "lifted to the others' least counter"
        );
        let c = (0..60).filter(|_| serve_one(&mut s, 50) == 3).count();
        assert!(
            (18..=22).contains(&c),
            "C gets its third of the next 60, not all of them: {c}"
        );
    }

    #[test]
    fn lift_with_nobody_backlogged_is_to_the_last_served() {
        let mut s: Scheduler<u64> = Scheduler::new(Policy::Vtc, 1, 100);
        for i in 0..10 {
            s.push(1, 100, i).expect("under the cap");
        }
        for _ in 0..10 {
            serve_one(&mut s, 0);
        }
        assert_eq!(s.stats(1).counter, 1000.0);
        s.push(2, 100, 0).expect("under the cap");
        assert_eq!(s.stats(2).counter, 1000.0, "lifted to A's counter");
        // A counter is never lowered by the lift.
        s.push(1, 100, 0).expect("under the cap");
        assert_eq!(s.stats(1).counter, 1000.0);
        // Ties: the earlier arrival first.
        assert_eq!(serve_one(&mut s, 0), 2);
        assert_eq!(serve_one(&mut s, 0), 1);
    }

    #[test]
    fn completion_charges_the_rest_divided_by_weight() {
        let mut s: Scheduler<u64> = Scheduler::new(Policy::Vtc, 2, 10);
        s.set_weight(1, 2.0);
        s.set_weight(1, 0.0); // ignored
        s.set_weight(1, f64::NAN); // ignored
        s.push(1, 100, 0).expect("under the cap");
        let d = s.pop().expect("queued");
        assert_eq!(d.est_input, 100);
        assert_eq!(s.stats(1).counter, 50.0);
        assert_eq!(s.stats(1).served, 100.0);
        s.complete(d.ticket, 120, 30);
        let st = s.stats(1);
        assert_eq!(st.served, 120.0 + 60.0);
        assert_eq!(st.counter, 90.0);
        assert_eq!(st.weight, 2.0);
        s.complete(d.ticket, 1000, 1000); // already ended: ignored
        assert_eq!(s.stats(1).served, 180.0);
    }

    #[test]
    fn ties_go_to_the_earliest_arrival() {
        let mut s: Scheduler<u64> = Scheduler::new(Policy::Vtc, 1, 10);
        s.push(7, 100, 0).expect("under the cap");
        s.push(3, 100, 0).expect("under the cap");
        s.push(5, 100, 0).expect("under the cap");
        let order: Vec<ClientId> = (0..3).map(|_| serve_one(&mut s, 0)).collect();
        assert_eq!(order, [7, 3, 5]);
    }

    #[test]
    fn fifo_serves_in_arrival_order() {
        let mut s: Scheduler<u64> = Scheduler::new(Policy::Fifo, 1, 10);
        for (client, item) in [(1, 0), (2, 1), (1, 2), (1, 3), (3, 4), (2, 5)] {
            s.push(client, 1, item).expect("under the cap");
        }
        let items: Vec<u64> = (0..6)
            .map(|_| {
                let d = s.pop().expect("queued");
                s.complete(d.ticket, 1, 0);
                d.item
            })
            .collect();
        assert_eq!(items, [0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn round_robin_alternates() {
        let mut s: Scheduler<u64> = Scheduler::new(Policy::RoundRobin, 1, 10);
        for i in 0..5 {
            s.push(1, 10, i).expect("under the cap");
            s.push(2, 1000, i).expect("under the cap");
        }
        s.push(3, 1, 0).expect("under the cap");
        s.push(3, 1, 1).expect("under the cap");
        let order: Vec<ClientId> = (0..12).map(|_| serve_one(&mut s, 0)).collect();
        assert_eq!(order, [1, 2, 3, 1, 2, 3, 1, 2, 1, 2, 1, 2]);
        assert!(s.pop().is_none());
    }

    #[test]
    fn queue_cap_rejects_with_the_item() {
        let mut s: Scheduler<&str> = Scheduler::new(Policy::Vtc, 1, 2);
        assert_eq!(s.push(1, 1, "a"), Ok(()));
        assert_eq!(s.push(1, 1, "b"), Ok(()));
        assert_eq!(s.push(1, 1, "c"), Err("c"));
        assert_eq!(s.push(2, 1, "x"), Ok(()), "the cap is per client");
        assert_eq!(s.queued(), 3);
        let d = s.pop().expect("queued");
        assert_eq!(d.item, "a");
        assert_eq!(s.push(1, 1, "c"), Ok(()), "room again");
        assert_eq!(s.stats(1).queued, 2);
    }

    #[test]
    fn cancel_client_returns_queued_and_keeps_in_flight() {
        for policy in [Policy::Vtc, Policy::Fifo, Policy::RoundRobin] {
            let mut s: Scheduler<u64> = Scheduler::new(policy, 1, 10);
            for i in 0..4 {
                s.push(1, 10, i).expect("under the cap");
            }
            let d = s.pop().expect("queued");
            assert_eq!(s.cancel_client(1), [1, 2, 3]);
            assert_eq!((s.queued(), s.in_flight()), (0, 1));
            assert_eq!(s.stats(1).in_flight, 1);
            assert!(s.cancel_client(1).is_empty());
            assert!(s.cancel_client(9).is_empty());
            s.push(2, 10, 7).expect("under the cap");
            assert!(s.pop().is_none(), "the one slot is still A's");
            s.abandon(d.ticket);
            assert_eq!(s.in_flight(), 0);
            assert_eq!(s.pop().expect("B is queued").item, 7, "{policy}");
        }
    }

    #[test]
    fn retain_drops_abandoned_waiters() {
        for policy in [Policy::Vtc, Policy::Fifo, Policy::RoundRobin] {
            let mut s: Scheduler<u64> = Scheduler::new(policy, 8, 10);
            for i in 0..6 {
                s.push(1, 10, i).expect("under the cap");
                s.push(2, 10, 100 + i).expect("under the cap");
            }
            s.push(3, 10, 1).expect("under the cap");
            // Client 2's waiters are all gone, and the odd ones of client 1 and 3.
            s.retain(|&item| item < 100 && item % 2 == 0);
            assert_eq!(s.queued(), 3);
            assert_eq!(
                (s.stats(1).queued, s.stats(2).queued, s.stats(3).queued),
                (3, 0, 0)
            );
            let mut items: Vec<u64> = std::iter::from_fn(|| s.pop().map(|d| d.item)).collect();
            items.sort_unstable();
            assert_eq!(items, [0, 2, 4], "{policy}");
            assert_eq!((s.queued(), s.in_flight()), (0, 3));
        }
    }

    #[test]
    fn abandon_frees_the_slot_and_keeps_the_estimate() {
        let mut s: Scheduler<u64> = Scheduler::new(Policy::Vtc, 1, 10);
        s.push(1, 100, 0).expect("under the cap");
        s.push(1, 100, 1).expect("under the cap");
        let d = s.pop().expect("queued");
        assert!(s.pop().is_none(), "one slot");
        s.abandon(d.ticket);
        s.abandon(d.ticket);
        s.complete(d.ticket, 100, 100);
        assert_eq!(s.in_flight(), 0);
        assert_eq!(s.stats(1).counter, 100.0, "the estimate stays charged");
        assert_eq!(s.stats(1).in_flight, 0);
        assert_eq!(s.pop().expect("the second").item, 1);
    }

    #[test]
    fn forget_drops_state_when_the_last_flight_ends() {
        let mut s: Scheduler<u64> = Scheduler::new(Policy::Vtc, 2, 10);
        s.set_weight(1, 3.0);
        s.push(1, 300, 0).expect("under the cap");
        s.push(1, 300, 1).expect("under the cap");
        s.set_weight(2, 2.0);
        let d = s.pop().expect("queued");
        s.forget(2);
        assert_eq!(s.stats(2).weight, 1.0, "idle: gone at once");
        s.forget(1);
        assert_eq!(s.queued(), 0);
        assert_eq!(s.stats(1).in_flight, 1, "kept while in flight");
        s.complete(d.ticket, 300, 0);
        assert_eq!(s.in_flight(), 0);
        let st = s.stats(1);
        assert_eq!((st.counter, st.weight, st.in_flight), (0.0, 1.0, 0));
    }

    #[test]
    fn fairness_figures() {
        // 8 backlogged clients, request sizes 100..1000 input tokens (output a quarter of
        // that): Jain's index over served cost.
        let sizes: Vec<u64> = (0..8).map(|i| 100 + i * 900 / 7).collect();
        let mut jains = Vec::new();
        for policy in [Policy::Vtc, Policy::Fifo, Policy::RoundRobin] {
            let mut sim = Sim::new(policy, 4);
            for _ in 0..2000 {
                for (c, &size) in sizes.iter().enumerate() {
                    sim.push(c as ClientId, size, size / 4);
                }
            }
            sim.run(&[], 200_000.0, |_| {});
            let served: Vec<f64> = (0..8).map(|c| sim.served(c)).collect();
            assert!(
                (0..8).all(|c| sim.sched.stats(c).queued > 0),
                "all stayed backlogged"
            );
            let j = jain(&served);
            println!(
                "8 clients, sizes 100..1000: {policy:<11} Jain's index over served cost {j:.4}"
            );
            jains.push(j);
        }
        assert!(jains[0] > 0.99, "VTC is fair: {}", jains[0]);
        assert!(jains[1] < 0.9, "FIFO is not: {}", jains[1]);
        // A polite client (one request of cost 300 every 1000 time units) and a flooder
        // (5000 requests of cost 700 queued at once): the polite one's p99 queue delay.
        let polite: Vec<Req> = (0..200)
            .map(|i| Req {
                client: 2,
                arrival: 500.0 + 1000.0 * f64::from(i),
                input: 200,
                output: 50,
            })
            .collect();
        let mut p99s = Vec::new();
        for policy in [Policy::Vtc, Policy::Fifo, Policy::RoundRobin] {
            let mut sim = Sim::new(policy, 4);
            for _ in 0..5000 {
                sim.push(1, 500, 100);
            }
            sim.run(&polite, 1_000_000.0, |_| {});
            let delays = &sim.delays[&2];
            assert_eq!(
                delays.len(),
                200,
                "{policy}: every polite request was dispatched"
            );
            let p99 = quantile(delays, 0.99);
            let p50 = quantile(delays, 0.5);
            println!(
                "polite vs flooder: {policy:<11} polite queue delay p50 {p50:.0}, p99 {p99:.0} \
                 (time units; the flooder's request takes 700)"
            );
            p99s.push(p99);
        }
        assert!(
            p99s[0] <= 2.0 * 700.0,
            "VTC: the polite client waits at most ~a slot"
        );
        assert!(p99s[1] > 100.0 * p99s[0], "FIFO: behind the flood");
    }
}
