//! checksite-consumer: read the topic, write the events into PostgreSQL exactly once.
//!
//! [`config`] turns settings into a consumer's configuration; `record` reads what a
//! topic holds; [`consume`] runs the loop (leases, fetch, write, commit); [`store`] is
//! everything PostgreSQL; [`metrics`] is what `CK_HTTP_ADDR` shows of it.

pub mod config;
pub mod consume;
pub mod metrics;
pub(crate) mod record;
pub mod store;
