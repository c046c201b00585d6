//! The restart policy's arithmetic, apart from any process: whether an exit is restarted,
//! the budget (`max_restarts` within a sliding `restart_window`) and the backoff (from
//! `restart_backoff_ms`, doubling per consecutive restart, capped at [`BACKOFF_CAP`], back to
//! the initial delay once a run stayed up for a whole window).
//!
//! `agents::exit` asks [`Supervision::decide`] after every exit of an agent whose policy is
//! not `never`, and carries the decision out.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use clove_abi::msg::{RestartPolicy, SpawnRequest};

use crate::agents::ExitReason;

/// `restart_backoff_ms` default: 1 s before the first restart, as the original.
pub const DEFAULT_BACKOFF: Duration = Duration::from_millis(1000);
/// The longest delay before a restart.
pub const BACKOFF_CAP: Duration = Duration::from_secs(60);

/// What happens after an exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The policy does not restart this exit (or KILL or shutdown stopped the agent).
    Final,
    /// The budget is spent: the agent is given up on.
    Escalate {
        /// The restarts it had.
        restart_count: u32,
    },
    /// Restart after `backoff`.
    Restart {
        /// This restart's number (1 for the first).
        restart_count: u32,
        /// The delay before it.
        backoff: Duration,
    },
}

/// An agent's restart bookkeeping.
#[derive(Debug, Clone)]
pub struct Supervision {
    /// Restarts so far, over the agent's whole life (what LIST shows).
    pub restarts: u32,
    /// How its last process ended, once one has and it was restarted.
    pub last_exit: Option<ExitReason>,
    /// When the restarts within the window happened (oldest first).
    window: VecDeque<Instant>,
    /// The delay before the next restart.
    next_backoff: Duration,
}

impl Supervision {
    /// Bookkeeping for an agent started with `req`.
    pub fn new(req: &SpawnRequest) -> Supervision {
        Supervision {
            restarts: 0,
            last_exit: None,
            window: VecDeque::new(),
            next_backoff: initial_backoff(req),
        }
    }

    /// What to do about an exit for `reason` of a process of `req` that ran `uptime`, at
    /// `now`. `stopped`: KILL or the kernel's shutdown ended it, so it stays down. Records a
    /// restart when it decides one.
    pub fn decide(
        &mut self,
        req: &SpawnRequest,
        reason: &ExitReason,
        uptime: Duration,
        stopped: bool,
        now: Instant,
    ) -> Decision {
        if stopped || !wants_restart(req.restart_policy, reason) {
            return Decision::Final;
        }
        let window = window(req);
        // A run that stayed up through a whole window starts the backoff afresh (and every
        // earlier restart is out of the sliding window by then anyway).
        if uptime >= window {
            self.next_backoff = initial_backoff(req);
            self.window.clear();
        }
        while self
            .window
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= window)
        {
            self.window.pop_front();
        }
        if self.window.len() >= req.max_restarts as usize {
            return Decision::Escalate {
                restart_count: self.restarts,
            };
        }
        self.window.push_back(now);
        self.restarts += 1;
        self.last_exit = Some(reason.clone());
        let backoff = self.next_backoff;
        self.next_backoff = (backoff * 2).min(BACKOFF_CAP);
        Decision::Restart {
            restart_count: self.restarts,
            backoff,
        }
    }
}

impl Supervision {
    /// Inside a supervisor group, which keeps the budget itself: the delay before this
    /// agent's next restart (doubling, capped; back to the initial delay after a run that
    /// stayed up `reset_after`).
    pub fn next_backoff(
        &mut self,
        req: &SpawnRequest,
        uptime: Duration,
        reset_after: Duration,
    ) -> Duration {
        if uptime >= reset_after {
            self.next_backoff = initial_backoff(req);
        }
        let backoff = self.next_backoff;
        self.next_backoff = (backoff * 2).min(BACKOFF_CAP);
        backoff
    }

    /// Counts a restart its group decided; this restart's number.
    pub fn record(&mut self, reason: &ExitReason) -> u32 {
        self.restarts += 1;
        self.last_exit = Some(reason.clone());
        self.restarts
    }
}

/// Whether `policy` restarts an exit for `reason`: `on-failure` after a non-zero exit code or
/// a death by signal, `always` after any exit, `never` never.
pub fn wants_restart(policy: RestartPolicy, reason: &ExitReason) -> bool {
    match policy {
        RestartPolicy::Never => false,
        RestartPolicy::OnFailure => !reason.clean(),
        RestartPolicy::Always => true,
    }
}

fn initial_backoff(req: &SpawnRequest) -> Duration {
    req.restart_backoff_ms
        .map(Duration::from_millis)
        .unwrap_or(DEFAULT_BACKOFF)
        .min(BACKOFF_CAP)
}

/// `restart_window` as a duration (a nonsense value counts as the default).
pub fn window(req: &SpawnRequest) -> Duration {
    Duration::try_from_secs_f64(req.restart_window).unwrap_or(Duration::from_secs_f64(
        clove_abi::msg::DEFAULT_RESTART_WINDOW,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(n: i32) -> ExitReason {
        ExitReason {
            code: Some(n),
            signal: None,
            oom: false,
            killed: false,
        }
    }

    fn req(policy: RestartPolicy, max: u32, window_s: f64, backoff_ms: u64) -> SpawnRequest {
        SpawnRequest {
            restart_policy: policy,
            max_restarts: max,
            restart_window: window_s,
            restart_backoff_ms: Some(backoff_ms),
            ..SpawnRequest::new("w", "w.py")
        }
    }

    #[test]
    fn policies_pick_the_exits_they_restart() {
        let signal = ExitReason {
            code: None,
            signal: Some(9),
            oom: false,
            killed: false,
        };
        assert!(!wants_restart(RestartPolicy::Never, &code(1)));
        assert!(!wants_restart(RestartPolicy::OnFailure, &code(0)));
        assert!(wants_restart(RestartPolicy::OnFailure, &code(1)));
        assert!(wants_restart(RestartPolicy::OnFailure, &signal));
        assert!(wants_restart(RestartPolicy::Always, &code(0)));
        assert!(wants_restart(RestartPolicy::Always, &signal));
    }

    #[test]
    fn backoff_doubles_to_the_cap_and_the_budget_escalates() {
        let r = req(RestartPolicy::Always, 12, 3600.0, 10_000);
        let mut s = Supervision::new(&r);
        let t0 = Instant::now();
        let short = Duration::from_millis(1);
        let mut delays = Vec::new();
        for i in 0..12 {
            match s.decide(&r, &code(1), short, false, t0 + short * i) {
                Decision::Restart {
                    restart_count,
                    backoff,
                } => {
                    assert_eq!(restart_count, i + 1);
                    delays.push(backoff.as_secs());
                }
                d => panic!("restart {i}: {d:?}"),
            }
        }
        assert_eq!(delays, [10, 20, 40, 60, 60, 60, 60, 60, 60, 60, 60, 60]);
        assert_eq!(
            s.decide(&r, &code(1), short, false, t0 + short * 20),
            Decision::Escalate { restart_count: 12 }
        );
    }

    #[test]
    fn kill_and_clean_exits_stay_down() {
        let r = req(RestartPolicy::OnFailure, 5, 300.0, 100);
        let mut s = Supervision::new(&r);
        let now = Instant::now();
        assert_eq!(
            s.decide(&r, &code(0), Duration::ZERO, false, now),
            Decision::Final
        );
        assert_eq!(
            s.decide(&r, &code(1), Duration::ZERO, true, now),
            Decision::Final
        );
        assert_eq!(s.restarts, 0);
    }

    #[test]
    fn the_window_slides_and_a_long_run_resets_the_backoff() {
        let r = req(RestartPolicy::OnFailure, 2, 10.0, 100);
        let mut s = Supervision::new(&r);
        let t0 = Instant::now();
        let quick = Duration::from_millis(5);
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        assert!(matches!(
            s.decide(&r, &code(1), quick, false, at(0)),
            Decision::Restart { backoff, .. } if backoff == Duration::from_millis(100)
        ));
        assert!(matches!(
            s.decide(&r, &code(1), quick, false, at(1)),
            Decision::Restart { backoff, .. } if backoff == Duration::from_millis(200)
        ));
        // Two restarts within 10 s: the third is over budget.
        assert!(matches!(
            s.decide(&r, &code(1), quick, false, at(2)),
            Decision::Escalate { restart_count: 2 }
        ));
        // The first restart slid out of the window: one more fits, the backoff still grows.
        assert!(matches!(
            s.decide(&r, &code(1), quick, false, at(10)),
            Decision::Restart { restart_count: 3, backoff } if backoff == Duration::from_millis(400)
        ));
        // A run that stayed up a whole window: budget and backoff start afresh.
        assert!(matches!(
            s.decide(&r, &code(1), Duration::from_secs(10), false, at(25)),
            Decision::Restart { restart_count: 4, backoff } if backoff == Duration::from_millis(100)
        ));
        assert!(matches!(
            s.decide(&r, &code(1), quick, false, at(26)),
            Decision::Restart {
                restart_count: 5,
                ..
            }
        ));
    }

    #[test]
    fn no_restarts_allowed_gives_up_at_once() {
        let r = req(RestartPolicy::Always, 0, 300.0, 100);
        let mut s = Supervision::new(&r);
        assert_eq!(
            s.decide(&r, &code(0), Duration::ZERO, false, Instant::now()),
            Decision::Escalate { restart_count: 0 }
        );
    }
}
