//! PostgreSQL, everything of it: the connection (`connect`: libpq's `sslmode` and
//! `sslrootcert` honoured, the server always verified), what the server must be
//! (`server`: PostgreSQL 12 or later), the schema and its migrations (`schema`), the
//! exactly-once write of batches with their partitions' offsets (`write`) with their
//! rollups (`rollups`) and alert decisions (`alerts`, also the outbox the sender empties),
//! the partition leases (`leases`), old events' deletion (`retention`), and the status
//! page's reads (`status`).
//!
//! This module owns every SQL statement. SQL is always parameterised; the password
//! never reaches a log or an error message.

use std::time::Duration;

/// `ARRAY[f(1), f(2), ..., f(n)]`: element-wise work on arrays as plain expressions
/// (an `unnest ... WITH ORDINALITY` per row costs several times more).
pub(crate) fn array_of(n: usize, f: impl Fn(usize) -> String) -> String {
    let mut out = String::from("ARRAY[");
    for i in 1..=n {
        if i > 1 {
            out.push_str(", ");
        }
        out.push_str(&f(i));
    }
    out.push(']');
    out
}

/// `{1,2,3}`: an array as PostgreSQL reads it in text, cast in the statement (an array
/// of arrays cannot be unnested row by row). One string, no string per number: the fold
/// writes ~70 numbers per series, most of them 0.
pub(crate) fn array_text(values: impl IntoIterator<Item = i64>) -> String {
    use std::fmt::Write;
    let mut text = String::with_capacity(80);
    text.push('{');
    for (i, v) in values.into_iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        match v {
            0 => text.push('0'),
            // Writing into a String cannot fail.
            v => drop(write!(text, "{v}")),
        }
    }
    text.push('}');
    text
}

mod alerts;
mod connect;
mod deltas;
mod labels;
mod leases;
mod listing;
mod maintenance;
mod retention;
mod rollups;
mod row_fields;
mod rows;
mod schema;
mod server;
mod site;
mod status;
mod windows;
mod write;

pub use alerts::OpenIncident;
pub(crate) use alerts::{
    Attempt, claim_next, close_stale_incidents, firing_for, record_attempt, set_receivers,
};
pub use connect::PostgresSettings;
pub(crate) use connect::connections_closed;
pub(crate) use deltas::{ReadAhead, read_ahead};
pub(crate) use labels::save_labels;
pub(crate) use leases::PartitionLeases;
pub(crate) use listing::{
    ListChange, clean_removed, keep_changes, not_cleaned, prune as prune_listing, removals,
};
pub use maintenance::{MaintenanceWindow, add_window, end_window, windows_after};
pub(crate) use maintenance::{in_maintenance_now, matching};
pub(crate) use retention::{
    prune_events, prune_oldest, prune_rejects, retention_lock, retention_unlock, vacuum_events,
};
pub use rollups::FOLD_LOCK;
pub(crate) use rollups::{align_windows, fold_rollups, forget_quiet_series};
pub(crate) use rows::{Batch, Derived, Rejected, RowEncoder};
pub(crate) use schema::python_rows_until;
pub use schema::{SCHEMA_VERSION, migrate};
pub(crate) use server::non_utc_timezone;
pub use site::{SITE_DAYS, SITE_HOURS, SiteRows};
pub(crate) use site::{read_site, read_strips};
pub use status::{RollupRow, SiteState, StatusRows};
pub(crate) use status::{read_only, read_status};
pub use windows::WindowRow;
pub(crate) use windows::read_changed as read_windows;
pub(crate) use write::{Written, committed_offsets, write_batches};

#[derive(Debug)]
/// Why PostgreSQL work failed; rendered as one line, never with the password.
pub enum StoreError {
    /// `CK_POSTGRESQL_URL` cannot be used.
    Url(String),
    /// The server cannot be reached or refuses us.
    Connect {
        /// host:port/dbname as user (never the password).
        target: String,
        /// What went wrong.
        detail: String,
        /// What to check, when we know it.
        hint: &'static str,
    },
    /// A statement failed.
    Sql {
        /// What we were doing.
        what: &'static str,
        /// PostgreSQL's message and SQLSTATE.
        detail: String,
    },
    /// A row with an event id already stored: a producer retry put one event in the topic
    /// twice. Handled inside this module; it never reaches a caller of `write_batches`.
    DuplicateEvent {
        /// PostgreSQL's message.
        detail: String,
    },
    /// Another consumer moved this partition's offset: we no longer own it.
    OffsetMoved {
        /// The partition.
        partition: i32,
    },
    /// PostgreSQL refused the data of some row (a data exception, a constraint, a limit):
    /// retrying the same rows fails the same way. The consumer isolates the row.
    RowRefused {
        /// PostgreSQL's message and SQLSTATE.
        detail: String,
    },
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Url(m) => f.write_str(m),
            StoreError::Connect {
                target,
                detail,
                hint,
            } => crate::write_cannot_use(f, "PostgreSQL", target, detail, hint),
            StoreError::Sql { what, detail } => write!(f, "PostgreSQL {what} failed: {detail}"),
            StoreError::DuplicateEvent { detail } => {
                write!(f, "an event id is already stored: {detail}")
            }
            StoreError::RowRefused { detail } => {
                write!(f, "PostgreSQL refused a row: {detail}")
            }
            StoreError::OffsetMoved { partition } => {
                write!(
                    f,
                    "partition {partition}'s offset was moved by another consumer; giving it up"
                )
            }
        }
    }
}

impl std::error::Error for StoreError {}

/// Longest wait for one piece of PostgreSQL work (a transaction, a lease round): past it,
/// the server counts as unreachable. tokio-postgres has no timeout of its own.
pub(crate) const DB_TIMEOUT: Duration = Duration::from_secs(60);

pub(crate) async fn bounded<T>(
    what: &'static str,
    work: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(DB_TIMEOUT, work)
        .await
        .unwrap_or_else(|_| {
            Err(StoreError::Sql {
                what,
                detail: format!("no answer within {} s", DB_TIMEOUT.as_secs()),
            })
        })
}

pub(crate) fn sql_error(what: &'static str, e: &tokio_postgres::Error) -> StoreError {
    if let Some(db) = e.as_db_error()
        && *db.code() == tokio_postgres::error::SqlState::UNIQUE_VIOLATION
        && db.constraint() == Some("events_check_id_key")
    {
        return StoreError::DuplicateEvent {
            detail: db.message().to_string(),
        };
    }
    let detail = match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => crate::error_chain(e),
    };
    // Class 22 (data exception), 23 (integrity constraint: a CHECK or trigger a DBA added)
    // and 54 (program limit, e.g. an index row too large) belong to the rows themselves.
    let refused = e
        .as_db_error()
        .is_some_and(|db| matches!(&db.code().code()[..2], "22" | "23" | "54"));
    if refused {
        return StoreError::RowRefused { detail };
    }
    StoreError::Sql { what, detail }
}
