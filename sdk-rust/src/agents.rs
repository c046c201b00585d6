//! The agent lifecycle syscalls (SPAWN, KILL, LIST, PAUSE, RESUME, WAIT, LOGS) as typed
//! methods of both clients.
//!
//! Each method is written once, in [`agent_methods!`], and expanded into [`crate::Client`]
//! (plain `fn`s) and [`crate::AsyncClient`] (`async fn`s): the two cannot drift apart. What a
//! method sends is built by the request builders below, so the rules (an [`AgentRef`] becomes
//! `id` or `name`, a timeout becomes whole milliseconds) live in one place too.

use std::time::Duration;

use clove_abi::msg::{AgentRef, KillRequest, PauseRequest, ResumeRequest, WaitRequest};

/// `(id, name)` of a request that names an agent (or a recipient): exactly one of them is
/// set.
pub(crate) fn target(agent: AgentRef<'_>) -> (Option<u32>, Option<String>) {
    match agent {
        AgentRef::Id(id) => (Some(id), None),
        AgentRef::Name(name) => (None, Some(name.to_owned())),
    }
}

/// A duration in whole milliseconds, rounded up so that a non-zero duration never becomes
/// "answer at once", saturating at `u64::MAX`.
pub(crate) fn millis(d: Duration) -> u64 {
    let ms = d.as_nanos().div_ceil(1_000_000);
    u64::try_from(ms).unwrap_or(u64::MAX)
}

/// KILL of `agent`.
pub(crate) fn kill(agent: AgentRef<'_>) -> KillRequest {
    let (id, name) = target(agent);
    KillRequest { id, name }
}

/// PAUSE of `agent`.
pub(crate) fn pause(agent: AgentRef<'_>) -> PauseRequest {
    let (id, name) = target(agent);
    PauseRequest { id, name }
}

/// RESUME of `agent`.
pub(crate) fn resume(agent: AgentRef<'_>) -> ResumeRequest {
    let (id, name) = target(agent);
    ResumeRequest { id, name }
}

/// WAIT for `agent`, at most `timeout` (`None`: as long as it takes).
pub(crate) fn wait(agent: AgentRef<'_>, timeout: Option<Duration>) -> WaitRequest {
    let (id, name) = target(agent);
    WaitRequest {
        id,
        name,
        timeout_ms: timeout.map(millis),
    }
}

/// The lifecycle methods, for a client type with a `call` method. Invoked as
/// `agent_methods!(;)` for the blocking client and `agent_methods!(async; .await)` for the
/// async one: the optional keyword goes before `fn`, the tokens after every `call(..)`.
macro_rules! agent_methods {
    ($($async_kw:ident)?; $($await:tt)*) => {
        /// SPAWN: starts `req.script` as an agent. The reply carries its id, its host pid and
        /// which isolation layers and limits are really in force (`isolation.not_applied`
        /// names the ones that are not).
        pub $($async_kw)? fn spawn(
            &mut self,
            req: &$crate::msg::SpawnRequest,
        ) -> Result<$crate::msg::SpawnReply, $crate::Error> {
            self.call(req)$($await)*
        }

        /// KILL: stops `agent` (SIGTERM, its grace period, then SIGKILL); the reply comes
        /// once it has exited.
        pub $($async_kw)? fn kill(
            &mut self,
            agent: $crate::msg::AgentRef<'_>,
        ) -> Result<$crate::msg::KillReply, $crate::Error> {
            self.call(&$crate::agents::kill(agent))$($await)*
        }

        /// LIST: the live agents (the original's rows, plus uptime and restarts).
        pub $($async_kw)? fn list(
            &mut self,
        ) -> Result<Vec<$crate::msg::AgentEntry>, $crate::Error> {
            let req = $crate::msg::ListRequest { detail: false };
            self.call(&req)$($await)*.map(|rows| rows.0)
        }

        /// LIST with `detail`: the live agents with their isolation, then the exited agents
        /// the kernel still remembers, with how they ended.
        pub $($async_kw)? fn list_detail(
            &mut self,
        ) -> Result<Vec<$crate::msg::AgentEntry>, $crate::Error> {
            let req = $crate::msg::ListRequest { detail: true };
            self.call(&req)$($await)*.map(|rows| rows.0)
        }

        /// PAUSE: freezes `agent` (its cgroup's freezer).
        pub $($async_kw)? fn pause(
            &mut self,
            agent: $crate::msg::AgentRef<'_>,
        ) -> Result<$crate::msg::PauseReply, $crate::Error> {
            self.call(&$crate::agents::pause(agent))$($await)*
        }

        /// RESUME: thaws a paused `agent`.
        pub $($async_kw)? fn resume(
            &mut self,
            agent: $crate::msg::AgentRef<'_>,
        ) -> Result<$crate::msg::ResumeReply, $crate::Error> {
            self.call(&$crate::agents::resume(agent))$($await)*
        }

        /// WAIT: blocks until `agent` has exited, or until `timeout` (`None`: as long as it
        /// takes), and says how it ended; `exited` is false when the timeout ran out first.
        /// An exited agent is still found, by id or by name (the last agent of that name).
        ///
        /// A blocking client's own read timeout ([`Client::set_timeout`](crate::Client::set_timeout))
        /// still applies: make it longer than `timeout`, or the call fails first.
        pub $($async_kw)? fn wait(
            &mut self,
            agent: $crate::msg::AgentRef<'_>,
            timeout: Option<std::time::Duration>,
        ) -> Result<$crate::msg::WaitReply, $crate::Error> {
            self.call(&$crate::agents::wait(agent, timeout))$($await)*
        }

        /// LOGS: an agent's output. Without `offset`, the last `lines` lines; with it, the
        /// bytes from that offset on, waiting up to `wait_ms` for new output. To follow, ask
        /// again from `next_offset` until `running` is false and `text` is empty. An exited
        /// agent's output stays readable by id or name (the last agent of that name).
        pub $($async_kw)? fn logs(
            &mut self,
            req: &$crate::msg::LogsRequest,
        ) -> Result<$crate::msg::LogsReply, $crate::Error> {
            self.call(req)$($await)*
        }

        /// GROUP_CREATE: a supervisor group (strategy, intensity within a period, parent);
        /// agents join it with SPAWN's `group`.
        pub $($async_kw)? fn group_create(
            &mut self,
            req: &$crate::msg::GroupCreateRequest,
        ) -> Result<$crate::msg::GroupInfo, $crate::Error> {
            self.call(req)$($await)*.map(|r| r.group)
        }

        /// GROUP_LIST: every group in creation order (with its children in start order), or
        /// the one named.
        pub $($async_kw)? fn group_list(
            &mut self,
            name: Option<&str>,
        ) -> Result<Vec<$crate::msg::GroupInfo>, $crate::Error> {
            let req = $crate::msg::GroupListRequest {
                name: name.map(str::to_owned),
            };
            self.call(&req)$($await)*.map(|r| r.groups)
        }

        /// GROUP_STOP: stops the group's tree for good (reverse start order, each child with
        /// its grace) and removes it; the reply comes once everything is down.
        pub $($async_kw)? fn group_stop(
            &mut self,
            name: &str,
        ) -> Result<$crate::msg::GroupStopReply, $crate::Error> {
            let req = $crate::msg::GroupStopRequest {
                name: name.to_owned(),
            };
            self.call(&req)$($await)*
        }
    };
}
pub(crate) use agent_methods;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_is_an_id_or_a_name_never_both() {
        assert_eq!(kill(AgentRef::Id(7)).id, Some(7));
        assert_eq!(kill(AgentRef::Id(7)).name, None);
        let p = pause(AgentRef::Name("w"));
        assert_eq!((p.id, p.name.as_deref()), (None, Some("w")));
        let r = resume(AgentRef::Name("w"));
        assert_eq!(r.target(), Some(AgentRef::Name("w")));
    }

    #[test]
    fn wait_timeouts_are_whole_milliseconds_rounded_up() {
        assert_eq!(wait(AgentRef::Id(1), None).timeout_ms, None);
        let ms = |d| wait(AgentRef::Id(1), Some(d)).timeout_ms;
        assert_eq!(ms(Duration::from_secs(10)), Some(10_000));
        assert_eq!(ms(Duration::from_micros(1)), Some(1));
        assert_eq!(ms(Duration::ZERO), Some(0));
        assert_eq!(ms(Duration::MAX), Some(u64::MAX));
    }
}
