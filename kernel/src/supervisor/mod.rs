//! Supervision: what happens when an agent's process ends. Today the per-agent restart policy
//! ([`restart`]); supervisor groups join here. The exit watcher (`agents::exit`) carries the
//! decisions out.

pub mod restart;
