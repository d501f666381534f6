//! heapa-core: the HeaPA prompt-pool engine (pure Rust, no Python).
//!
//! See [`pool::Pool`] for the data model and [`snapshot`] for the file format.

#[cfg(target_endian = "big")]
compile_error!("heapa-core's snapshot format assumes a little-endian target");

mod cold;
pub mod config;
mod digest;
mod draw;
pub mod error;
mod evict;
mod groups;
pub mod inbox;
mod keys;
mod lineage;
mod partitions;
pub mod payload;
mod pool;
mod rng;
mod sample;
mod scored;
mod slots;
pub mod snapshot;

pub use config::{
    Boundary, Cold, Config, Direction, Eviction, RefreshMode, RefreshParams, Reinsert, Sampling,
    Scope, Stat,
};
pub use error::{CoreError, Result};
pub use inbox::{Inbox, InboxItem};
pub use lineage::Lineage;
pub use pool::{child_estimate, Counters, NewPrompt, Pool, Records, Stats};
pub use slots::{State, NO_PARENT};
