//! THINK: the kernel's shared LLM access. Providers behind one trait ([`provider`]), a fair
//! scheduler in front of them ([`sched`]).

// Until the THINK syscall is wired (this session), parts are not used yet.
#![allow(dead_code)]

pub mod anthropic;
pub mod gemini;
pub mod openai;
pub mod provider;
pub mod sched;
pub mod simulated;
