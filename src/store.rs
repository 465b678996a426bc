//! PostgreSQL: the TLS connection (libpq's `sslmode`/`sslrootcert` honoured, the server
//! always verified), the schema and its migrations, partition leases, and the
//! exactly-once write of a batch together with its partition's next offset.
//!
//! This module owns every SQL statement. SQL is always parameterised; the password
//! never reaches a log or an error message.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::SinkExt;
use tokio_postgres::Client;
use tokio_postgres::config::SslMode;
use tokio_postgres::types::{IsNull, ToSql, Type};

use crate::event::StoredEvent;

#[derive(Debug)]
pub enum StoreError {
    Url(String),
    Connect {
        target: String,
        detail: String,
        hint: &'static str,
    },
    Sql {
        what: &'static str,
        detail: String,
    },
    /// A row with an event id already stored: a producer retry put one event in the topic
    /// twice. Handled inside this module; it never reaches a caller of `write_batches`.
    DuplicateEvent {
        detail: String,
    },
    /// Another consumer moved this partition's offset: we no longer own it.
    OffsetMoved {
        partition: i32,
    },
    /// PostgreSQL refused the data of some row (a data exception, a constraint, a limit):
    /// retrying the same rows fails the same way. The consumer isolates the row.
    RowRefused {
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
            } => {
                write!(f, "cannot use PostgreSQL at {target}: {detail}")?;
                if !hint.is_empty() {
                    write!(f, " ({hint})")?;
                }
                Ok(())
            }
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
pub const DB_TIMEOUT: Duration = Duration::from_secs(60);

async fn bounded<T>(
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
    if let Some(db) = e.as_db_error() {
        if *db.code() == tokio_postgres::error::SqlState::UNIQUE_VIOLATION
            && db.constraint() == Some("events_check_id_key")
        {
            return StoreError::DuplicateEvent {
                detail: db.message().to_string(),
            };
        }
    }
    let detail = match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => flatten(e),
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

fn flatten(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ").replace('\n', " ")
}

/// A parsed `CK_POSTGRESQL_URL`.
#[derive(Clone)]
pub struct PostgresSettings {
    config: tokio_postgres::Config,
    /// `sslmode` as the user wrote it (libpq's names).
    sslmode: String,
    sslrootcert: Option<std::path::PathBuf>,
    /// host:port/dbname, for messages: never the password.
    display: String,
}

impl std::fmt::Debug for PostgresSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PostgresSettings({}, sslmode={})",
            self.display, self.sslmode
        )
    }
}

impl PostgresSettings {
    /// Parse a libpq-style URL. `sslmode` and `sslrootcert` are handled here (tokio-postgres
    /// knows neither verify-* modes nor root files); the rest goes to tokio-postgres, whose
    /// parser refuses what it does not know. A URL that does not parse cleanly is an
    /// error, never a weaker TLS mode.
    pub fn parse(url: &str) -> Result<PostgresSettings, StoreError> {
        let (base, query) = split_query(url)?;
        let mut sslmode = "prefer".to_string();
        let mut sslrootcert = None;
        let mut rest = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let decoded = || {
                percent_encoding::percent_decode_str(v)
                    .decode_utf8()
                    .map(|d| d.into_owned())
                    .map_err(|_| {
                        StoreError::Url(format!(
                            "the value of {k} is not valid UTF-8 once percent-decoded"
                        ))
                    })
            };
            match k {
                "sslmode" => sslmode = decoded()?,
                "sslrootcert" => sslrootcert = Some(std::path::PathBuf::from(decoded()?)),
                _ if PASSED_ON.contains(&k) => rest.push(pair),
                _ => {
                    return Err(StoreError::Url(format!(
                        "unknown parameter {k:?} in the URL: the known ones are sslmode, sslrootcert, {}",
                        PASSED_ON.join(", ")
                    )));
                }
            }
        }
        let ssl = match sslmode.as_str() {
            "disable" => SslMode::Disable,
            "allow" | "prefer" => SslMode::Prefer,
            "require" | "verify-ca" | "verify-full" => SslMode::Require,
            other => {
                return Err(StoreError::Url(format!(
                    "sslmode={other} is not known: use disable, prefer, require, verify-ca or verify-full"
                )));
            }
        };
        let rebuilt = if rest.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", rest.join("&"))
        };
        let mut config: tokio_postgres::Config =
            rebuilt.parse().map_err(|e: tokio_postgres::Error| {
                // tokio-postgres's message never includes the password.
                StoreError::Url(format!("not a valid postgres:// URL: {e}"))
            })?;
        config.ssl_mode(ssl);
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        if config.get_hosts().is_empty() {
            return Err(StoreError::Url(
                "the URL names no host: postgres://user:password@host:port/dbname".into(),
            ));
        }
        if let Some(root) = &sslrootcert {
            crate::tls::load_certs(root)
                .map_err(|e| StoreError::Url(format!("sslrootcert: {e}")))?;
        }
        let host = match config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            _ => "localhost".into(),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let display = format!(
            "{host}:{port}/{} as {}",
            config.get_dbname().unwrap_or("(default db)"),
            config.get_user().unwrap_or("(default user)")
        );
        Ok(PostgresSettings {
            config,
            sslmode,
            sslrootcert,
            display,
        })
    }

    pub fn display(&self) -> &str {
        &self.display
    }

    /// The same server and credentials, another database (tests, and `CREATE DATABASE` set-ups).
    pub fn with_dbname(&self, dbname: &str) -> PostgresSettings {
        let mut copy = self.clone();
        copy.config.dbname(dbname);
        copy.display = self.display.replacen(
            self.config.get_dbname().unwrap_or("(default db)"),
            dbname,
            1,
        );
        copy
    }

    /// Connect, bounded by `within`. The connection's driver task is spawned on the runtime.
    pub async fn connect(&self, within: Duration) -> Result<tokio_postgres::Client, StoreError> {
        let tls = crate::tls::client_config(self.sslrootcert.as_deref(), None).map_err(|e| {
            StoreError::Connect {
                target: self.display.clone(),
                detail: e.to_string(),
                hint: "",
            }
        })?;
        let connector = tokio_postgres_rustls::MakeRustlsConnect::new(tls);
        let attempt = tokio::time::timeout(within, self.config.connect(connector)).await;
        let (client, connection) = match attempt {
            Err(_) => {
                return Err(StoreError::Connect {
                    target: self.display.clone(),
                    detail: format!("no answer within {} s", within.as_secs()),
                    hint: "is the server running, and are host and port right?",
                });
            }
            Ok(Err(e)) => return Err(self.connect_error(&e)),
            Ok(Ok(pair)) => pair,
        };
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                log::debug!("PostgreSQL connection closed: {e}");
            }
        });
        Ok(client)
    }

    fn connect_error(&self, e: &tokio_postgres::Error) -> StoreError {
        let detail = match e.as_db_error() {
            Some(db) => db.message().to_string(),
            None => flatten(e),
        };
        let lower = detail.to_lowercase();
        let hint = if lower.contains("password authentication failed") || lower.contains("password")
        {
            "check the user and password in CK_POSTGRESQL_URL"
        } else if lower.contains("certificate") || lower.contains("unknownissuer") {
            "the server's certificate is not trusted: add sslrootcert=/path/to/ca.pem (the service's CA file) to CK_POSTGRESQL_URL"
        } else if lower.contains("refused") {
            "is the server running, and are host and port right?"
        } else if lower.contains("does not exist") {
            "create the database first (see README: least privilege)"
        } else {
            ""
        };
        StoreError::Connect {
            target: self.display.clone(),
            detail,
            hint,
        }
    }
}

// ---------------------------------------------------------------- schema

/// Numbered migrations, applied in order under [`MIGRATION_LOCK`]; `metadata`'s
/// `schema_version` row records the last one. Version 1 is the Python checksite's schema,
/// to the letter, so that its databases start from there and a fresh database has the
/// same layout: one set of queries works on both. Each entry says what it does, for the log.
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "the Python checksite's tables",
        "CREATE TABLE IF NOT EXISTS events (
            event_id integer PRIMARY KEY GENERATED BY DEFAULT AS IDENTITY,
            ts timestamp NOT NULL,
            url varchar NOT NULL,
            elapsed integer,
            error varchar,
            status integer,
            body_prefix varchar,
            content_match varchar
        )",
    ),
    (
        2,
        "columns for the v1 event's fields (instant), the consumer's offsets and rejects, \
         and two indexes built once over the existing rows (minutes on a table of tens of \
         millions)",
        // Only nullable columns without defaults are added: PostgreSQL records them without
        // rewriting the table, and every Python-era row and column keeps its meaning.
        // `events_python_rows` covers only rows the Python consumer wrote (no Kafka
        // position): it lets the overlap at switch-over be recognised, and costs nothing
        // for the rows written after it.
        "ALTER TABLE events
            ADD COLUMN IF NOT EXISTS check_id uuid,
            ADD COLUMN IF NOT EXISTS error_kind text,
            ADD COLUMN IF NOT EXISTS dns_ms integer,
            ADD COLUMN IF NOT EXISTS connect_ms integer,
            ADD COLUMN IF NOT EXISTS tls_ms integer,
            ADD COLUMN IF NOT EXISTS ttfb_ms integer,
            ADD COLUMN IF NOT EXISTS bytes bigint,
            ADD COLUMN IF NOT EXISTS cert_expires_at timestamptz,
            ADD COLUMN IF NOT EXISTS ip text,
            ADD COLUMN IF NOT EXISTS body_sha256 text,
            ADD COLUMN IF NOT EXISTS schedule_lag_ms bigint,
            ADD COLUMN IF NOT EXISTS producer text,
            ADD COLUMN IF NOT EXISTS kafka_partition integer,
            ADD COLUMN IF NOT EXISTS kafka_offset bigint;
        CREATE UNIQUE INDEX IF NOT EXISTS events_check_id_key ON events (check_id);
        CREATE INDEX IF NOT EXISTS events_python_rows ON events (ts, url) WHERE kafka_offset IS NULL;
        CREATE TABLE IF NOT EXISTS kafka_offsets (
            topic text NOT NULL,
            partition integer NOT NULL,
            next_offset bigint NOT NULL,
            updated_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (topic, partition)
        );
        CREATE TABLE IF NOT EXISTS rejected_events (
            topic text NOT NULL,
            partition integer NOT NULL,
            \"offset\" bigint NOT NULL,
            key bytea,
            value bytea,
            reason text NOT NULL,
            received_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (topic, partition, \"offset\")
        )",
    ),
];

/// The schema version this build creates.
pub const SCHEMA_VERSION: i32 = 2;

/// Held while migrating, so that consumers starting together migrate once.
const MIGRATION_LOCK: i64 = 0x636b_7369_7465_0001;

/// Longest wait for the migrations, the lock included. Far above [`DB_TIMEOUT`]: building
/// an index over a Python-era table of tens of millions of rows takes minutes, and a
/// migration cut short by a timeout would start again, and be cut short again, for ever.
pub const MIGRATION_TIMEOUT: Duration = Duration::from_secs(6 * 3600);

/// Create or upgrade the schema; returns the version it was at before.
pub async fn migrate(client: &mut Client) -> Result<i32, StoreError> {
    let work = migrate_unbounded(client);
    tokio::time::timeout(MIGRATION_TIMEOUT, work)
        .await
        .unwrap_or_else(|_| {
            Err(StoreError::Sql {
                what: "migration",
                detail: format!(
                    "not finished within {} h: is another session holding a lock on events?",
                    MIGRATION_TIMEOUT.as_secs() / 3600
                ),
            })
        })
}

async fn migrate_unbounded(client: &mut Client) -> Result<i32, StoreError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(|e| sql_error("migration lock", &e))?;
    let result = migrate_locked(client).await;
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    result
}

async fn migrate_locked(client: &mut Client) -> Result<i32, StoreError> {
    let tx = client
        .transaction()
        .await
        .map_err(|e| sql_error("migration", &e))?;
    let fail = |e: tokio_postgres::Error| sql_error("migration", &e);
    // The Python program's key/value table, made the same way.
    tx.batch_execute("CREATE TABLE IF NOT EXISTS metadata (key varchar, value varchar)")
        .await
        .map_err(fail)?;
    let found = tx
        .query_opt(
            "SELECT value FROM metadata WHERE key = 'schema_version' LIMIT 1",
            &[],
        )
        .await
        .map_err(|e| schema_error(&e))?;
    let before = match found.map(|row| row.get::<_, Option<String>>(0)) {
        None => 0,
        Some(value) => parse_schema_version(value.as_deref())?,
    };
    if before > SCHEMA_VERSION {
        return Err(StoreError::Sql {
            what: "migration",
            detail: format!(
                "the database is at schema version {before}, newer than this consumer's {SCHEMA_VERSION}: upgrade checksite"
            ),
        });
    }
    for (version, what, sql) in MIGRATIONS.iter().filter(|(v, _, _)| *v > before) {
        log::info!("schema: migrating to version {version}: {what}");
        let started = std::time::Instant::now();
        tx.batch_execute(sql).await.map_err(fail)?;
        log::info!(
            "schema: version {version} done in {} ms",
            started.elapsed().as_millis()
        );
    }
    let version = SCHEMA_VERSION.to_string();
    let updated = tx
        .execute(
            "UPDATE metadata SET value = $1 WHERE key = 'schema_version'",
            &[&version],
        )
        .await
        .map_err(fail)?;
    if updated == 0 {
        tx.execute(
            "INSERT INTO metadata (key, value) VALUES ('schema_version', $1)",
            &[&version],
        )
        .await
        .map_err(fail)?;
    }
    tx.commit().await.map_err(fail)?;
    Ok(before)
}

fn parse_schema_version(value: Option<&str>) -> Result<i32, StoreError> {
    value
        .and_then(|v| v.trim().parse::<i32>().ok())
        .ok_or_else(|| StoreError::Sql {
            what: "migration",
            detail: format!(
                "metadata's schema_version is {value:?}, not a number: is this a checksite database?"
            ),
        })
}

/// A `metadata` table of another shape: say what it is rather than a bare SQL error.
fn schema_error(e: &tokio_postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(db) if *db.code() == tokio_postgres::error::SqlState::UNDEFINED_COLUMN => {
            StoreError::Sql {
                what: "migration",
                detail: format!(
                    "{}: this database has a metadata table that is not checksite's (key, value): point CK_POSTGRESQL_URL at the checksite database",
                    db.message()
                ),
            }
        }
        _ => sql_error("migration", e),
    }
}

/// The latest `ts` of the rows the Python consumer wrote, as a point in time; None when
/// there are none. Records of the Python format up to then may already be stored: those
/// batches go through [`write_batches`]' overlap check (cheap: an index covers exactly
/// these rows). The Python consumer wrote `ts` in the server's TimeZone.
pub async fn python_rows_until(
    client: &Client,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, StoreError> {
    bounded("reading the Python-era rows", async {
        let row = client
            .query_one(
                "SELECT max(ts) AT TIME ZONE current_setting('TimeZone') FROM events WHERE kafka_offset IS NULL",
                &[],
            )
            .await
            .map_err(|e| sql_error("reading the Python-era rows", &e))?;
        Ok(row.get(0))
    })
    .await
}

/// The server's `TimeZone`, when it is not UTC: `events.ts` is a `timestamp` (the Python
/// program's type) that checksite fills in UTC, and the Python program filled in this zone.
pub async fn non_utc_timezone(client: &Client) -> Result<Option<String>, StoreError> {
    bounded("reading TimeZone", async {
        let row = client
            .query_one(
                // Winter and summer both: a zone can equal UTC half of the year.
                "SELECT current_setting('TimeZone'), \
                 '2000-01-15 12:00+00'::timestamptz::timestamp = '2000-01-15 12:00' \
                 AND '2000-07-15 12:00+00'::timestamptz::timestamp = '2000-07-15 12:00'",
                &[],
            )
            .await
            .map_err(|e| sql_error("reading TimeZone", &e))?;
        let zone: String = row.get(0);
        let utc: bool = row.get(1);
        Ok((!utc).then_some(zone))
    })
    .await
}

// ---------------------------------------------------------------- offsets and batches

/// A record that is not a valid event, kept with its position and the reason.
#[derive(Debug, Clone)]
pub struct Rejected {
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub reason: String,
}

/// The records of one partition from `start_offset` (inclusive) to `next_offset` (exclusive).
#[derive(Debug)]
pub struct Batch {
    pub partition: i32,
    pub start_offset: i64,
    pub next_offset: i64,
    /// The partition has no row in kafka_offsets yet: create it at `start_offset`.
    pub new_partition: bool,
    pub rows: EventRows,
    pub rejected: Vec<Rejected>,
    /// The earliest record time of the Python-format records among `rows`, if any: the
    /// Python consumer may have stored those already (see [`python_rows_until`]).
    pub python_from: Option<chrono::DateTime<chrono::Utc>>,
}

impl Batch {
    /// Records in the batch: events and rejects.
    pub fn records(&self) -> usize {
        self.rows.len() + self.rejected.len()
    }

    /// Split into the records before `offset` and those from it on: two batches that
    /// cover the same range, each contiguous, so each can commit its own offset move.
    pub fn split_at(self, offset: i64) -> (Batch, Batch) {
        let offset = offset.clamp(self.start_offset, self.next_offset);
        let (left_rows, right_rows) = self.rows.split_at_offset(offset);
        let (left_rejects, right_rejects) =
            self.rejected.into_iter().partition(|r| r.offset < offset);
        let left = Batch {
            partition: self.partition,
            start_offset: self.start_offset,
            next_offset: offset,
            new_partition: self.new_partition,
            rows: left_rows,
            rejected: left_rejects,
            python_from: self.python_from,
        };
        let right = Batch {
            partition: self.partition,
            start_offset: offset,
            next_offset: self.next_offset,
            new_partition: false,
            rows: right_rows,
            rejected: right_rejects,
            python_from: self.python_from,
        };
        (left, right)
    }

    /// The offset of the one event row, when the batch holds exactly one.
    pub fn single_row(&self) -> Option<i64> {
        match self.rows.ends.as_slice() {
            [(offset, _)] => Some(*offset),
            _ => None,
        }
    }

    /// The offset in the middle of the event rows, to split a batch in two halves of rows.
    pub fn middle_row(&self) -> Option<i64> {
        let ends = &self.rows.ends;
        (ends.len() >= 2).then(|| ends[ends.len() / 2].0)
    }

    /// Turn the batch's one event row ([`Batch::single_row`]) into a reject, kept with the
    /// record's raw bytes.
    pub fn reject_single_row(&mut self, rejected: Rejected) {
        self.rows = EventRows {
            bytes: Bytes::new(),
            ends: Vec::new(),
        };
        self.rejected.push(rejected);
        self.rejected.sort_by_key(|r| r.offset);
    }
}

/// Events as rows of PostgreSQL's binary COPY format, ready to stream. They are encoded
/// where records are decoded ([`RowEncoder`]), off the writer's path: a transaction then
/// only streams bytes, and PostgreSQL is not kept waiting while the consumer encodes.
#[derive(Debug)]
pub struct EventRows {
    bytes: Bytes,
    /// Per row: its record's offset and where its bytes end, so that a chunk can be split
    /// at any row when PostgreSQL refuses one of them.
    ends: Vec<(i64, usize)>,
}

impl EventRows {
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The rows of records before `offset`, and those from it on.
    fn split_at_offset(self, offset: i64) -> (EventRows, EventRows) {
        let n = self.ends.partition_point(|(o, _)| *o < offset);
        let cut = if n == 0 { 0 } else { self.ends[n - 1].1 };
        let mut bytes = self.bytes;
        let right_bytes = bytes.split_off(cut);
        let mut ends = self.ends;
        let right_ends = ends
            .split_off(n)
            .into_iter()
            .map(|(o, e)| (o, e - cut))
            .collect();
        (
            EventRows { bytes, ends },
            EventRows {
                bytes: right_bytes,
                ends: right_ends,
            },
        )
    }
}

/// Builds [`EventRows`] one event at a time.
#[derive(Debug)]
pub struct RowEncoder {
    bytes: BytesMut,
    ends: Vec<(i64, usize)>,
}

impl RowEncoder {
    pub fn with_capacity(events: usize) -> RowEncoder {
        RowEncoder {
            // Check events average ~300 bytes as rows.
            bytes: BytesMut::with_capacity(events * 320),
            ends: Vec::with_capacity(events),
        }
    }

    pub fn finish(self) -> EventRows {
        EventRows {
            bytes: self.bytes.freeze(),
            ends: self.ends,
        }
    }

    /// Append one event as the row it becomes, or say why it cannot be stored (then
    /// nothing is appended): a record PostgreSQL would refuse must become a reject,
    /// never a COPY that fails again on every retry.
    pub fn push(&mut self, partition: i32, offset: i64, e: &StoredEvent) -> Result<(), String> {
        // `events.ts` is the Python program's `timestamp` (no zone): UTC wall time.
        let ts = e.ts.naive_utc();
        let fields: [&(dyn ToSql + Sync); 21] = [
            &ts,
            &e.url,
            &e.elapsed,
            &e.error,
            &e.status,
            &e.body_prefix,
            &e.content_match,
            &e.id,
            &e.error_kind,
            &e.dns_ms,
            &e.connect_ms,
            &e.tls_ms,
            &e.ttfb_ms,
            &e.bytes,
            &e.cert_expires_at,
            &e.ip,
            &e.body_sha256,
            &e.schedule_lag_ms,
            &e.producer,
            &partition,
            &offset,
        ];
        let texts = [
            ("url", Some(e.url.as_str())),
            ("error", e.error.as_deref()),
            ("body_prefix", e.body_prefix.as_deref()),
            ("content_match", e.content_match.as_deref()),
            ("ip", e.ip.as_deref()),
            ("body_sha256", e.body_sha256.as_deref()),
            ("producer", e.producer.as_deref()),
        ];
        for (column, text) in texts {
            if text.is_some_and(|t| t.contains('\0')) {
                return Err(format!(
                    "{column} contains a NUL character (\\u0000), which PostgreSQL text cannot hold"
                ));
            }
        }
        let start = self.bytes.len();
        self.bytes.put_i16(fields.len() as i16);
        for (value, ty) in fields.iter().zip(EVENT_TYPES.iter()) {
            let at = self.bytes.len();
            self.bytes.put_i32(-1);
            let encoded = value.to_sql_checked(ty, &mut self.bytes);
            let len = self.bytes.len() - at - 4;
            match (encoded, i32::try_from(len)) {
                (Ok(IsNull::Yes), _) => {}
                (Ok(IsNull::No), Ok(len)) => {
                    self.bytes[at..at + 4].copy_from_slice(&len.to_be_bytes());
                }
                (Ok(IsNull::No), Err(_)) => {
                    self.bytes.truncate(start);
                    return Err(format!("a field of {len} bytes is too large to store"));
                }
                (Err(err), _) => {
                    self.bytes.truncate(start);
                    return Err(format!("cannot be stored as a {ty} column: {err}"));
                }
            }
        }
        self.ends.push((offset, self.bytes.len()));
        Ok(())
    }
}

/// The committed position of each of `partitions` that has one (a partition never
/// consumed has no row yet: its first batch creates it).
pub async fn committed_offsets(
    client: &Client,
    topic: &str,
    partitions: &[i32],
) -> Result<HashMap<i32, i64>, StoreError> {
    let rows = bounded("offset read", async {
        client
            .query(
                "SELECT partition, next_offset FROM kafka_offsets WHERE topic = $1 AND partition = ANY($2)",
                &[&topic, &partitions],
            )
            .await
            .map_err(|e| sql_error("offset read", &e))
    })
    .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

const EVENT_COLUMNS: &str = "ts, url, elapsed, error, status, body_prefix, content_match, check_id, error_kind, \
    dns_ms, connect_ms, tls_ms, ttfb_ms, bytes, cert_expires_at, ip, body_sha256, schedule_lag_ms, producer, \
    kafka_partition, kafka_offset";

/// The binary COPY stream's header (signature, flags, no extension) and trailer.
const COPY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
const COPY_TRAILER: &[u8] = &[0xff, 0xff];

/// The columns' types: the Python program's first (varchar and integer milliseconds).
const EVENT_TYPES: [Type; 21] = [
    Type::TIMESTAMP,
    Type::VARCHAR,
    Type::INT4,
    Type::VARCHAR,
    Type::INT4,
    Type::VARCHAR,
    Type::VARCHAR,
    Type::UUID,
    Type::TEXT,
    Type::INT4,
    Type::INT4,
    Type::INT4,
    Type::INT4,
    Type::INT8,
    Type::TIMESTAMPTZ,
    Type::TEXT,
    Type::TEXT,
    Type::INT8,
    Type::TEXT,
    Type::INT4,
    Type::INT8,
];

/// What one transaction stored.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// Rows added to `events`.
    pub rows: u64,
    /// Events in the batches that were already stored, and were not stored again: a
    /// producer retry (same `check_id` at a new offset), or a record the Python consumer
    /// had stored before the switch.
    pub already_stored: u64,
}

/// Write `batches` (from one or several partitions, each partition's in offset order) and
/// move each partition's offset from its first batch's `start_offset` to its last batch's
/// `next_offset`, all in one transaction. Each offset move is a compare-and-set: if another
/// consumer moved an offset, nothing is written and [`StoreError::OffsetMoved`] is returned.
///
/// Rows go in with binary COPY. Two kinds of event may already be stored, and those
/// transactions take the checked path (a temporary table, then an INSERT that skips them):
/// a producer retry puts one event in the topic twice, at two offsets (the unique
/// `check_id` refuses the fast COPY, and the transaction is written again); and a
/// Python-format record the Python consumer stored before the switch (known in advance:
/// its time is not after `python_until`, the last of the Python consumer's rows).
pub async fn write_batches(
    client: &mut Client,
    topic: &str,
    batches: &[Batch],
    python_until: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<Written, StoreError> {
    let overlap = python_until.is_some_and(|until| {
        batches
            .iter()
            .any(|b| b.python_from.is_some_and(|from| from <= until))
    });
    // Each attempt is bounded: a server that stops answering mid-transaction is a
    // failure to retry from the committed offsets, never a hang.
    if overlap {
        return bounded("transaction", write_once(client, topic, batches, true)).await;
    }
    match bounded("transaction", write_once(client, topic, batches, false)).await {
        Err(StoreError::DuplicateEvent { .. }) => {
            bounded("transaction", write_once(client, topic, batches, true)).await
        }
        other => other,
    }
}

/// Per partition: (start offset, next offset, whether its row must be created).
fn offset_moves(batches: &[Batch]) -> BTreeMap<i32, (i64, i64, bool)> {
    let mut moves: BTreeMap<i32, (i64, i64, bool)> = BTreeMap::new();
    for b in batches {
        let m =
            moves
                .entry(b.partition)
                .or_insert((b.start_offset, b.start_offset, b.new_partition));
        m.1 = b.next_offset;
    }
    moves
}

async fn write_once(
    client: &mut Client,
    topic: &str,
    batches: &[Batch],
    checked: bool,
) -> Result<Written, StoreError> {
    let tx = client
        .transaction()
        .await
        .map_err(|e| sql_error("begin", &e))?;
    let moves = offset_moves(batches);
    let partitions: Vec<i32> = moves.keys().copied().collect();
    let starts: Vec<i64> = moves.values().map(|m| m.0).collect();
    let nexts: Vec<i64> = moves.values().map(|m| m.1).collect();
    let created: Vec<i32> = moves.iter().filter(|(_, m)| m.2).map(|(p, _)| *p).collect();
    if !created.is_empty() {
        // Another consumer may have created one meanwhile: then the compare-and-set below
        // decides, as for any other batch.
        tx.execute_typed(
            "INSERT INTO kafka_offsets (topic, partition, next_offset) \
             SELECT $1, p, s FROM unnest($2::int[], $3::bigint[]) AS m(p, s) \
             WHERE p = ANY($4::int[]) ON CONFLICT DO NOTHING",
            &[
                (&topic, Type::TEXT),
                (&partitions, Type::INT4_ARRAY),
                (&starts, Type::INT8_ARRAY),
                (&created, Type::INT4_ARRAY),
            ],
        )
        .await
        .map_err(|e| sql_error("offset set-up", &e))?;
    }
    let table = if checked {
        // Only the columns, none of the constraints: `LIKE events` would copy the NOT NULL
        // of `event_id`, which the COPY leaves to its identity default.
        tx.batch_execute(&format!(
            "CREATE TEMP TABLE IF NOT EXISTS events_incoming ON COMMIT DELETE ROWS AS \
             SELECT {EVENT_COLUMNS} FROM events WITH NO DATA"
        ))
        .await
        .map_err(|e| sql_error("dedupe table", &e))?;
        "events_incoming"
    } else {
        "events"
    };
    let rejected: Vec<(i32, &Rejected)> = batches
        .iter()
        .flat_map(|b| b.rejected.iter().map(move |r| (b.partition, r)))
        .collect();
    let has_events = batches.iter().any(|b| !b.rows.is_empty());

    // The offsets' compare-and-set, the rejected records and the start of the COPY go out
    // together (tokio-postgres pipelines concurrent requests on one connection): every
    // round trip waited for here is time PostgreSQL sits idle. A failure in any of them
    // aborts the transaction, so nothing of it can be committed.
    //
    // Rows are locked in partition order (ORDER BY in the sub-select), as every consumer
    // does, so two consumers racing for the same partitions cannot deadlock.
    let cas_params: [(&(dyn ToSql + Sync), Type); 4] = [
        (&topic, Type::TEXT),
        (&partitions, Type::INT4_ARRAY),
        (&starts, Type::INT8_ARRAY),
        (&nexts, Type::INT8_ARRAY),
    ];
    let offsets = tx.query_typed(
        "UPDATE kafka_offsets AS o SET next_offset = m.n, updated_at = now() \
         FROM (SELECT * FROM unnest($2::int[], $3::bigint[], $4::bigint[]) AS u(p, s, n) ORDER BY p) AS m \
         WHERE o.topic = $1 AND o.partition = m.p AND o.next_offset = m.s \
         RETURNING o.partition",
        &cas_params,
    );
    let rejects = async {
        if rejected.is_empty() {
            return Ok(0);
        }
        let partitions: Vec<i32> = rejected.iter().map(|(p, _)| *p).collect();
        let offsets: Vec<i64> = rejected.iter().map(|(_, r)| r.offset).collect();
        let keys: Vec<Option<&[u8]>> = rejected.iter().map(|(_, r)| r.key.as_deref()).collect();
        let values: Vec<Option<&[u8]>> = rejected.iter().map(|(_, r)| r.value.as_deref()).collect();
        let reasons: Vec<&str> = rejected.iter().map(|(_, r)| r.reason.as_str()).collect();
        tx.execute_typed(
            "INSERT INTO rejected_events (topic, partition, \"offset\", key, value, reason) \
             SELECT $1, p, o, k, v, r \
             FROM unnest($2::int[], $3::bigint[], $4::bytea[], $5::bytea[], $6::text[]) AS u(p, o, k, v, r) \
             ON CONFLICT DO NOTHING",
            &[
                (&topic, Type::TEXT),
                (&partitions, Type::INT4_ARRAY),
                (&offsets, Type::INT8_ARRAY),
                (&keys, Type::BYTEA_ARRAY),
                (&values, Type::BYTEA_ARRAY),
                (&reasons, Type::TEXT_ARRAY),
            ],
        )
        .await
    };
    let copy = async {
        if !has_events {
            return Ok(None);
        }
        let statement = format!("COPY {table} ({EVENT_COLUMNS}) FROM STDIN (FORMAT binary)");
        tx.copy_in(&statement).await.map(Some)
    };
    let (moved, rejects, sink) = tokio::join!(offsets, rejects, copy);
    let moved = moved.map_err(|e| sql_error("offset update", &e))?;
    rejects.map_err(|e| sql_error("rejected_events insert", &e))?;
    let sink = sink.map_err(|e| sql_error("copy", &e))?;
    let done: Vec<i32> = moved.iter().filter_map(|r| r.try_get(0).ok()).collect();
    if let Some(&partition) = partitions.iter().find(|p| !done.contains(p)) {
        // Dropping the unfinished COPY aborts it, and the transaction rolls back.
        return Err(StoreError::OffsetMoved { partition });
    }
    let Some(sink) = sink else {
        tx.commit().await.map_err(|e| sql_error("commit", &e))?;
        return Ok(Written::default());
    };
    let mut sink = std::pin::pin!(sink);
    let streamed = async {
        sink.feed(Bytes::from_static(COPY_HEADER)).await?;
        for b in batches.iter().filter(|b| !b.rows.is_empty()) {
            sink.feed(b.rows.bytes.clone()).await?;
        }
        sink.feed(Bytes::from_static(COPY_TRAILER)).await?;
        Ok(())
    };
    let streamed: Result<(), tokio_postgres::Error> = streamed.await;
    streamed.map_err(|e| sql_error("copy", &e))?;
    if checked {
        let copied = sink
            .as_mut()
            .finish()
            .await
            .map_err(|e| sql_error("copy", &e))?;
        // The Python consumer wrote `ts` in the server's TimeZone: the record's time (here
        // UTC wall time) is converted the same way before it is compared.
        let inserted = tx
            .execute(
                &format!(
                    "INSERT INTO events ({EVENT_COLUMNS}) SELECT {EVENT_COLUMNS} FROM events_incoming AS i \
                     WHERE i.check_id IS NOT NULL OR NOT EXISTS ( \
                       SELECT 1 FROM events AS e WHERE e.kafka_offset IS NULL \
                       AND e.ts = (i.ts AT TIME ZONE 'UTC')::timestamp AND e.url = i.url) \
                     ON CONFLICT (check_id) DO NOTHING"
                ),
                &[],
            )
            .await
            .map_err(|e| sql_error("dedupe insert", &e))?;
        tx.commit().await.map_err(|e| sql_error("commit", &e))?;
        Ok(Written {
            rows: inserted,
            already_stored: copied.saturating_sub(inserted),
        })
    } else {
        // COMMIT follows the end of the COPY without waiting for its answer: the
        // connection sends requests in order, and if the COPY failed the transaction is
        // aborted, so the COMMIT only rolls back (and the COPY's error is returned).
        let (copied, committed) = tokio::join!(sink.as_mut().finish(), tx.commit());
        let copied = copied.map_err(|e| sql_error("copy", &e))?;
        committed.map_err(|e| sql_error("commit", &e))?;
        Ok(Written {
            rows: copied,
            already_stored: 0,
        })
    }
}

// ---------------------------------------------------------------- leases

/// This consumer's share of a topic's partitions, held as PostgreSQL advisory locks on its
/// session: a consumer that dies (or loses its connection) releases them with its session.
///
/// Each consumer also holds one "member" lock, so that every consumer can count the
/// live members in `pg_locks` and take its fair share: ceil(partitions / members).
pub struct PartitionLeases {
    topic: String,
    member_key: i32,
    partition_key: i32,
    member_slot: Option<i32>,
    held: BTreeSet<i32>,
}

impl PartitionLeases {
    pub fn new(topic: &str) -> PartitionLeases {
        // FNV-1a of the topic: a stable lock space per topic, positive so that pg_locks'
        // unsigned classid compares equal.
        let mut h: u32 = 0x811c_9dc5;
        for b in topic.bytes() {
            h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
        }
        let base = (h & 0x3fff_ffff) as i32;
        PartitionLeases {
            topic: topic.to_string(),
            member_key: base,
            partition_key: base | 0x4000_0000,
            member_slot: None,
            held: BTreeSet::new(),
        }
    }

    pub fn held(&self) -> &BTreeSet<i32> {
        &self.held
    }

    /// Forget every lease (the session that held them is gone).
    pub fn lost(&mut self) {
        self.member_slot = None;
        self.held.clear();
    }

    /// Give one partition back.
    pub async fn release(&mut self, client: &Client, partition: i32) -> Result<(), StoreError> {
        if self.held.remove(&partition) {
            let key = self.partition_key;
            bounded("lease release", async {
                client
                    .execute("SELECT pg_advisory_unlock($1, $2)", &[&key, &partition])
                    .await
                    .map_err(|e| sql_error("lease release", &e))
            })
            .await?;
        }
        Ok(())
    }

    /// Take free partitions up to the fair share (all free ones when `greedy`), give back
    /// those above it. Returns the partitions gained and lost.
    pub async fn rebalance(
        &mut self,
        client: &Client,
        partitions: &[i32],
        greedy: bool,
    ) -> Result<(Vec<i32>, Vec<i32>), StoreError> {
        bounded(
            "lease round",
            self.rebalance_unbounded(client, partitions, greedy),
        )
        .await
    }

    async fn rebalance_unbounded(
        &mut self,
        client: &Client,
        partitions: &[i32],
        greedy: bool,
    ) -> Result<(Vec<i32>, Vec<i32>), StoreError> {
        if self.member_slot.is_none() {
            for slot in 0..4096 {
                if try_lock(client, self.member_key, slot).await? {
                    self.member_slot = Some(slot);
                    break;
                }
            }
        }
        let members: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 2 \
                 AND classid::bigint = $1 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                &[&i64::from(self.member_key)],
            )
            .await
            .map_err(|e| sql_error("lease count", &e))?
            .get(0);
        let members = members.max(1) as usize;
        let share = if greedy {
            partitions.len()
        } else {
            partitions.len().div_ceil(members)
        };
        let mut lost = Vec::new();
        while self.held.len() > share {
            let Some(&p) = self.held.last() else { break };
            self.release(client, p).await?;
            lost.push(p);
        }
        let mut gained = Vec::new();
        for &p in partitions {
            if self.held.len() >= share {
                break;
            }
            if !self.held.contains(&p) && try_lock(client, self.partition_key, p).await? {
                self.held.insert(p);
                gained.push(p);
            }
        }
        if !gained.is_empty() || !lost.is_empty() {
            log::info!(
                "topic {:?}: {members} consumer(s); this one now holds partitions {:?}",
                self.topic,
                self.held
            );
        }
        Ok((gained, lost))
    }
}

async fn try_lock(client: &Client, key: i32, sub: i32) -> Result<bool, StoreError> {
    let row = client
        .query_one("SELECT pg_try_advisory_lock($1, $2)", &[&key, &sub])
        .await
        .map_err(|e| sql_error("lease", &e))?;
    Ok(row.get(0))
}

/// URL parameters tokio-postgres understands, passed on to it as they are.
const PASSED_ON: &[&str] = &[
    "user",
    "password",
    "dbname",
    "options",
    "application_name",
    "host",
    "hostaddr",
    "port",
    "connect_timeout",
    "tcp_user_timeout",
    "keepalives",
    "keepalives_idle",
    "target_session_attrs",
    "channel_binding",
    "load_balance_hosts",
];

/// Split a `postgres://` URL into what tokio-postgres parses and the query string, as
/// tokio-postgres itself reads a URL: the user information runs to the first `@` (so a raw
/// `?` in a password stays in the password), and the query starts at the first `?` after it.
fn split_query(url: &str) -> Result<(String, &str), StoreError> {
    let Some(rest) = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
    else {
        return Err(StoreError::Url(
            "not a postgres:// URL: give postgres://user:password@host:port/dbname?sslmode=require"
                .into(),
        ));
    };
    let host_from = rest.find('@').map_or(0, |at| at + 1);
    let (host_part, query) = match rest[host_from..].find('?') {
        Some(q) => (&rest[host_from..host_from + q], &rest[host_from + q + 1..]),
        None => (&rest[host_from..], ""),
    };
    if host_part.contains('@') {
        return Err(StoreError::Url(
            "the URL has more than one '@': percent-encode an '@' in the user or password as %40"
                .into(),
        ));
    }
    let base = format!("{}{host_part}", &url[..url.len() - rest.len() + host_from]);
    Ok((base, query))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aiven_uri_parses_and_hides_the_password() {
        let s = PostgresSettings::parse(
            "postgres://avnadmin:s3cret@pg-x.aivencloud.com:12359/defaultdb?sslmode=require",
        )
        .unwrap();
        assert_eq!(
            s.display(),
            "pg-x.aivencloud.com:12359/defaultdb as avnadmin"
        );
        assert!(!format!("{s:?}").contains("s3cret"));
    }

    #[test]
    fn unknown_sslmode_is_refused() {
        let e = PostgresSettings::parse("postgres://u@h/db?sslmode=sometimes")
            .unwrap_err()
            .to_string();
        assert!(e.contains("sslmode=sometimes is not known"), "{e}");
    }

    #[test]
    fn a_raw_question_mark_in_the_password_keeps_sslmode() {
        let s = PostgresSettings::parse("postgres://u:pa?ss@h:5432/db?sslmode=require").unwrap();
        assert_eq!(s.sslmode, "require");
        assert_eq!(s.config.get_password(), Some(&b"pa?ss"[..]));
        assert_eq!(s.config.get_ssl_mode(), SslMode::Require);
    }

    #[test]
    fn sslrootcert_is_percent_decoded_without_panicking() {
        for url in [
            "postgres://u@h/db?sslrootcert=/etc/%aé.pem",
            "postgres://u@h/db?sslrootcert=%e9%",
            "postgres://u@h/db?sslrootcert=%2Fnowhere%2Fca.pem",
        ] {
            let e = PostgresSettings::parse(url).unwrap_err().to_string();
            assert!(
                e.contains("sslrootcert") || e.contains("UTF-8"),
                "{url}: {e}"
            );
        }
    }

    #[test]
    fn urls_that_do_not_parse_cleanly_are_refused() {
        for (url, want) in [
            ("postgres://u:p@ss@h/db?sslmode=require", "%40"),
            ("mysql://u@h/db", "postgres://"),
            (
                "postgres://u@h/db?sslmode=require&sslmdoe=verify-full",
                "sslmdoe",
            ),
        ] {
            let e = PostgresSettings::parse(url).unwrap_err().to_string();
            assert!(e.contains(want), "{url}: {e}");
            assert!(!e.contains("ss@h"), "{e}");
        }
    }

    fn stored(url: &str) -> StoredEvent {
        let json = crate::event::CheckEvent::starting(url, "test", 0).to_json();
        crate::event::decode(Some(&json), chrono::Utc::now()).unwrap()
    }

    #[test]
    fn rows_are_binary_copy_tuples() {
        let mut rows = RowEncoder::with_capacity(2);
        rows.push(3, 41, &stored("https://a.example/")).unwrap();
        rows.push(3, 42, &stored("https://b.example/")).unwrap();
        let rows = rows.finish();
        assert_eq!(rows.len(), 2);
        // Each tuple starts with its field count; the first field is the 8-byte timestamp.
        assert_eq!(&rows.bytes[..2], &21i16.to_be_bytes());
        assert_eq!(&rows.bytes[2..6], &8i32.to_be_bytes());
        // The last two fields are the partition (4 bytes) and the offset (8 bytes).
        let end = rows.bytes.len();
        assert_eq!(&rows.bytes[end - 8..], &42i64.to_be_bytes());
        assert_eq!(&rows.bytes[end - 12..end - 8], &8i32.to_be_bytes());
        assert_eq!(&rows.bytes[end - 16..end - 12], &3i32.to_be_bytes());
    }

    #[test]
    fn an_event_postgres_cannot_hold_is_refused_and_leaves_no_trace() {
        let mut rows = RowEncoder::with_capacity(2);
        rows.push(0, 1, &stored("https://a.example/")).unwrap();
        let before = rows.bytes.len();
        let reason = rows
            .push(0, 2, &stored("https://a.example/\u{0}"))
            .unwrap_err();
        assert!(reason.contains("url contains a NUL character"), "{reason}");
        assert_eq!(rows.bytes.len(), before);
        assert_eq!(rows.finish().len(), 1);
    }
}
