//! TEMPORARY stand-in with the agreed API (FIFO only), replaced by the real scheduler.
#![allow(missing_docs, clippy::missing_docs_in_private_items)]

use std::collections::{HashMap, VecDeque};

pub type ClientId = u32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Vtc,
    Fifo,
    RoundRobin,
}

impl Policy {
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Vtc => "vtc",
            Policy::Fifo => "fifo",
            Policy::RoundRobin => "round_robin",
        }
    }
}

impl std::str::FromStr for Policy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "vtc" => Ok(Policy::Vtc),
            "fifo" => Ok(Policy::Fifo),
            "round_robin" => Ok(Policy::RoundRobin),
            o => Err(format!("unknown policy {o}")),
        }
    }
}

pub struct Dispatch<T> {
    pub client: ClientId,
    pub item: T,
    pub est_input: u64,
    pub ticket: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ClientStats {
    pub queued: usize,
    pub in_flight: usize,
    pub counter: f64,
    pub weight: f64,
}

#[derive(Debug)]
pub struct Scheduler<T> {
    policy: Policy,
    max: usize,
    cap: usize,
    q: VecDeque<(ClientId, u64, T)>,
    flying: HashMap<u64, ClientId>,
    next: u64,
}

impl<T> Scheduler<T> {
    pub fn new(policy: Policy, max_in_flight: usize, queue_cap: usize) -> Self {
        Scheduler {
            policy,
            max: max_in_flight,
            cap: queue_cap,
            q: VecDeque::new(),
            flying: HashMap::new(),
            next: 0,
        }
    }
    pub fn set_weight(&mut self, _client: ClientId, _weight: f64) {}
    pub fn push(&mut self, client: ClientId, est_input: u64, item: T) -> Result<(), T> {
        if self.q.iter().filter(|e| e.0 == client).count() >= self.cap {
            return Err(item);
        }
        self.q.push_back((client, est_input, item));
        Ok(())
    }
    pub fn pop(&mut self) -> Option<Dispatch<T>> {
        if self.flying.len() >= self.max {
            return None;
        }
        let (client, est_input, item) = self.q.pop_front()?;
        self.next += 1;
        self.flying.insert(self.next, client);
        Some(Dispatch {
            client,
            item,
            est_input,
            ticket: self.next,
        })
    }
    pub fn complete(&mut self, ticket: u64, _input: u64, _output: u64) {
        self.flying.remove(&ticket);
    }
    pub fn abandon(&mut self, ticket: u64) {
        self.flying.remove(&ticket);
    }
    pub fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        self.q.retain(|e| keep(&e.2));
    }
    pub fn cancel_client(&mut self, client: ClientId) -> Vec<T> {
        let (gone, kept): (Vec<_>, Vec<_>) = self.q.drain(..).partition(|e| e.0 == client);
        self.q = kept.into();
        gone.into_iter().map(|e| e.2).collect()
    }
    pub fn forget(&mut self, _client: ClientId) {}
    pub fn stats(&self, client: ClientId) -> ClientStats {
        ClientStats {
            queued: self.q.iter().filter(|e| e.0 == client).count(),
            in_flight: self.flying.values().filter(|c| **c == client).count(),
            counter: 0.0,
            weight: 1.0,
        }
    }
    pub fn in_flight(&self) -> usize {
        self.flying.len()
    }
    pub fn queued(&self) -> usize {
        self.q.len()
    }
    pub fn policy(&self) -> Policy {
        self.policy
    }
}
