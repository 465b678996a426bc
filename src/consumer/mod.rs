//! checksite-consumer: read the topic, write the events into PostgreSQL exactly once.
//!
//! [`config`] turns settings into a consumer's configuration; `record` reads what a
//! topic holds; [`rollup`] sums events into hourly/daily rollups and each site's state,
//! which `folding` folds into their tables;
//! [`consume`] runs the loop (leases, fetch, write, commit); [`store`] is
//! everything PostgreSQL; [`metrics`] is what `CK_HTTP_ADDR` shows of it, and
//! [`status_page`] the page and JSON it serves there from the rollups; [`alert`] decides
//! notifications with the events that make them and delivers them to a webhook;
//! `retention` deletes raw events past `CK_RETENTION_DAYS`.

pub mod alert;
pub mod config;
pub mod consume;
pub(crate) mod folding;
pub(crate) mod labels;
pub(crate) mod listing;
pub mod maintenance;
pub mod metrics;
pub(crate) mod record;
pub(crate) mod retention;
pub mod rollup;
pub(crate) mod series_hash;
pub mod status_page;
pub mod store;
pub(crate) mod windows;
