//! heapa-core: the HeaPA prompt-pool engine (pure Rust, no Python).
//!
//! See [`pool::Pool`] for the data model and [`snapshot`] for the file format.

#[cfg(target_endian = "big")]
compile_error!("heapa-core's snapshot format assumes a little-endian target");

pub mod config;
pub mod error;
pub mod fenwick;
pub mod inbox;
pub mod lineage;
pub mod payload;
pub mod pool;
pub mod rng;
pub mod snapshot;

pub use config::{
    Boundary, Config, Direction, Eviction, RefreshMode, RefreshParams, Reinsert, Sampling, Scope,
    Stat,
};
pub use error::{CoreError, Result};
pub use inbox::{Inbox, InboxItem};
pub use lineage::Lineage;
pub use pool::{NewPrompt, Pool, Records, State, Stats, NO_PARENT};
