//! checksite-consumer: read the topic, write the events into PostgreSQL exactly once.
//!
//! [`config`] turns settings into a consumer's configuration; `record` reads what a
//! topic holds; [`consume`] runs the loop (leases, fetch, write, commit); [`store`] is
//! everything PostgreSQL.

pub mod config;
pub mod consume;
pub(crate) mod record;
pub mod store;
