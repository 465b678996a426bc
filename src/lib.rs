//! checksite watches web sites and keeps the results.
//!
//! ```text
//!  targets ──► checksite-producer ──► Kafka topic ──► checksite-consumer ──► PostgreSQL
//!              probe, schedule,        (key = url,     fetch, decode,         events,
//!              outbox                   JSON value)     batch, commit,         offsets, rejects,
//!                                                       status page,           rollups,
//!                                                       alerts ──► receivers   alert outbox
//! ```
//!
//! The map of the modules: the two programs, and the edges they share.
//!
//! - checksite-producer, [`producer`]:
//!   - [`producer::config`]: check settings, Kafka, the vantage point's name.
//!   - [`producer::targets`]: one target's entry, the targets in force (`CK_SITE_URL`,
//!     `CK_TARGETS`, the targets topic, SIGHUP, `CK_SHARD`), and `targets put|add|remove|list`.
//!   - [`producer::probe`]: one HTTP(S) check with phase timings and certificate expiry
//!     (async in the target's task: timed lookup, connect and TLS, then HTTP/1.1 by hyper).
//!   - [`producer::schedule`]: fixed-rate, spread, bounded-concurrency checking of a set
//!     of targets that may change at any time.
//!   - [`producer::outbox`]: the bounded buffer of events; `producer::publisher` the loop
//!     that publishes it; [`producer::spool`] keeps it on disk (`CK_SPOOL_DIR`) across
//!     restarts and Kafka outages.
//!   - [`producer::metrics`]: the blackbox exporter's `probe_*` per target, its own
//!     counters, and its readiness (Kafka answers).
//!   - [`producer::run`] wires these until shutdown; [`producer::check_once`] is `--once`.
//! - checksite-consumer, [`consumer`]:
//!   - [`consumer::config`]: Kafka, `CK_POSTGRESQL_URL`, batch sizes.
//!   - `consumer::record`: a Kafka record → a row (v1 events, scanned as our producer writes
//!     them or read through serde, and the Python checksite's records) or the reason it is
//!     not one.
//!   - [`consumer::consume`]: the loop, one file per step: `start` (services, tasks),
//!     `writer` (leases, receive, release), `write` (one transaction), `fetch` (a task per
//!     partition on the Kafka thread).
//!   - [`consumer::store`]: PostgreSQL: connect (URL rules, TLS), schema (migrations from
//!     the Python schema), rows (binary COPY tuples), write (exactly-once batches), leases,
//!     and the SQL of every other module (rollups, alerts, listing, labels, maintenance).
//!   - [`consumer::metrics`]: written, rejected, lag per partition, transactions, and its
//!     readiness (PostgreSQL answers, leases taken).
//!   - [`consumer::rollup`]: hourly/daily rollups and each site's state from a
//!     transaction's events, stored as a delta with them; `consumer::folding` folds the
//!     deltas into the rollup tables every second, on a thread of its own.
//!   - [`consumer::status_page`]: `GET /` and `GET /api/status` on `CK_HTTP_ADDR`, from
//!     the rollups (its own read-only connection; the rows kept, only changed buckets read);
//!     a page per site, badges; `status_page::shown` decides what of a URL it may show.
//!   - `consumer::retention`: `CK_RETENTION_DAYS`, old raw events deleted in steps.
//!   - `consumer::listing`: the targets topic on the consumer's side: listed targets not
//!     checked yet (waiting), removed ones cleaned once.
//!   - `consumer::labels`: the targets' names, groups and `public` flag, for the page.
//!   - `consumer::maintenance`: maintenance windows (`checksite-consumer maintenance`),
//!     the calendar the writer consults.
//!   - [`consumer::alert`]: down/up/certificate notifications, decided in the write
//!     transaction (`alert::decide`), routed to receivers (`alert::receivers`), rendered
//!     per format (`alert::format`) and delivered from the outbox at least once
//!     (`alert::sender` over `alert::webhook` or `alert::smtp`).
//!
//!   Layering on the consumer: the rules are pure and own their types (`alert::decide`:
//!   `UrlAlertState`, `Decisions`; `consumer::rollup`: `RollupInput`, `Rollups`); `store`
//!   persists them and runs them inside the write transaction (a decision commits with
//!   its rows, or not at all); the I/O around them (`consume`, `alert::sender`, the page)
//!   goes through `store`. So `store` imports the rules' types, never the other way.
//! - Shared edges:
//!   - [`event`]: the wire format ([`event::CheckEvent`], v1), and nothing else.
//!   - [`kafka`]: connecting (mutual TLS, SASL), topics, partitioning (Java's murmur2), and
//!     its settings ([`kafka::KafkaSettings`]); the consumer's fetch over its own connection
//!     to each partition's leader (`kafka::fetch`), its answer's record batches read
//!     without a copy per record (`kafka::record_batch`).
//!   - [`target_list`]: the targets topic (compacted): read to its end, followed, changes
//!     written; the list's metrics.
//!   - [`tls`]: PEM files (Aiven's `ca.pem`, `service.cert`, `service.key`) → rustls configs.
//!   - [`settings`]: where raw settings come from (`CK_*` variables, flags); [`settings::ConfigError`].
//!   - [`secret`]: passwords and URLs that print as `<hidden>` (never in a log).
//!   - [`shutdown`]: SIGINT/SIGTERM → one signal every task awaits.
//!   - [`subcommand`]: the admin subcommands' contract (parse, run once, print, exit
//!     0/1/2), for `targets …` and `maintenance …`.
//!   - [`logging`]: the log format and level (`CK_LOG_LEVEL`).
//!   - [`memory`]: the consumer's allocator (dlmalloc, with a cache of freed small blocks
//!     on its busy threads), and the memcpy/memset/memcmp of both programs' musl build.
//!   - [`observe`]: `CK_HTTP_ADDR`: the HTTP server (`/metrics`, `/healthz`, `/readyz`),
//!     the Prometheus text format, the liveness of the programs' loops, and
//!     `CK_HTTP_CONFIG` (TLS, basic auth: `observe::web_config`).
//!
//! The binaries in `src/bin` only wire these together and render errors for humans.

#![warn(missing_docs)]

pub mod consumer;
pub mod event;
pub mod kafka;
pub mod logging;
pub mod memory;
pub mod observe;
pub mod producer;
pub mod secret;
pub mod settings;
pub mod shutdown;
pub mod subcommand;
pub mod target_list;
pub mod tls;

/// "cannot use SERVICE at TARGET: DETAIL (HINT)": how both programs say that Kafka or
/// PostgreSQL cannot be used, the hint saying what to check when the cause is known.
pub(crate) fn write_cannot_use(
    f: &mut std::fmt::Formatter<'_>,
    service: &str,
    target: &str,
    detail: &str,
    hint: &str,
) -> std::fmt::Result {
    write!(f, "cannot use {service} at {target}: {detail}")?;
    if !hint.is_empty() {
        write!(f, " ({hint})")?;
    }
    Ok(())
}

/// An error and its causes on one line ("a: b: c"), each cause once: rskafka and
/// tokio-postgres nest the useful words several levels deep.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
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

/// Exit code for a usage or configuration error (both binaries).
pub const EXIT_CONFIG: u8 = 2;
