//! What the producer checks: one target's entry ([`entry`]), the targets in force from
//! `CK_SITE_URL`, `CK_TARGETS` and the targets topic ([`live`]), and the `targets`
//! command that manages the topic ([`cli`]).

pub mod cli;
pub mod entry;
pub mod live;

pub use entry::{ParsedEntry, Target};
pub use live::{Shard, TargetFollower, TargetResolver, TargetSet, TargetSources};
