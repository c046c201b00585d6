//! Supervision: what happens when an agent's process ends. The per-agent restart policy
//! ([`restart`]) and supervisor groups ([`group`]), which take the decision over for their
//! children. The exit watcher (`agents::exit`) carries the decisions out.

pub mod group;
pub mod restart;
