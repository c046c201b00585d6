//! The shared LLM as typed methods of both clients (THINK, LLM_REPORT, LLM_STATS), written
//! once in [`llm_methods!`] like the lifecycle ones in `agents.rs`.

/// The LLM methods, for a client type with a `call` method (see `agent_methods!` for how
/// the two clients expand it).
macro_rules! llm_methods {
    ($($async_kw:ident)?; $($await:tt)*) => {
        /// THINK with only a prompt: the kernel's default provider and model answer. The
        /// reply has the answer (`content`), `tokens`, and who answered (`provider`, `model`,
        /// `usage`, `queue_ms`).
        pub $($async_kw)? fn think(
            &mut self,
            prompt: &str,
        ) -> Result<$crate::msg::ThinkReply, $crate::Error> {
            self.call(&$crate::msg::ThinkRequest::new(prompt))$($await)*
        }

        /// THINK with every option (system instruction, model, max_tokens, tools, image;
        /// `async` answers with an accept reply and the answer comes through ASYNC_POLL).
        pub $($async_kw)? fn think_with(
            &mut self,
            req: &$crate::msg::ThinkRequest,
        ) -> Result<$crate::msg::ThinkReply, $crate::Error> {
            self.call(req)$($await)*
        }

        /// LLM_REPORT: charges `tokens` this agent spent on a model it called itself to its
        /// quota (`quota_exceeded` in the reply says the quota is used up).
        pub $($async_kw)? fn llm_report(
            &mut self,
            tokens: u64,
            success: bool,
        ) -> Result<$crate::msg::LlmReportReply, $crate::Error> {
            self.call(&$crate::msg::LlmReportRequest { tokens, success })$($await)*
        }

        /// LLM_STATS: the scheduler and the LLM figures of the callers this client may see
        /// (`agent_id`: only that one).
        pub $($async_kw)? fn llm_stats(
            &mut self,
            agent_id: Option<u32>,
        ) -> Result<$crate::msg::LlmStatsReply, $crate::Error> {
            self.call(&$crate::msg::LlmStatsRequest { agent_id })$($await)*
        }

        /// LLM_CONFIG: switches the LLM scheduler's policy (`vtc`, `fifo`, `round_robin`)
        /// and/or its in-flight limit while it is idle (root or the kernel's user only); both
        /// `None` only reads them.
        pub $($async_kw)? fn llm_config(
            &mut self,
            scheduler: Option<&str>,
            max_in_flight: Option<u32>,
        ) -> Result<$crate::msg::LlmConfigReply, $crate::Error> {
            let req = $crate::msg::LlmConfigRequest {
                scheduler: scheduler.map(str::to_owned),
                max_in_flight,
            };
            self.call(&req)$($await)*
        }
    };
}
pub(crate) use llm_methods;
