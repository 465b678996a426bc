//! checksite watches web sites and keeps the results.
//!
//! ```text
//!  targets ──► checksite-producer ──► Kafka topic ──► checksite-consumer ──► PostgreSQL
//!              probe, schedule,        (key = url,     fetch, decode,         events,
//!              outbox                   JSON value)     batch, commit          offsets, rejects
//! ```
//!
//! The map of the modules:
//!
//! - [`config`]: `CK_*` variables, flags and the targets file → validated configs.
//! - [`event`]: the wire format ([`event::CheckEvent`], v1) and decoding of what is in the topic.
//! - [`probe`]: one HTTP(S) check with phase timings and certificate expiry (blocking, ureq).
//! - [`schedule`]: fixed-rate, spread, bounded-concurrency checking of many targets.
//! - [`outbox`]: the producer's bounded buffer and the loop that publishes it to Kafka.
//! - [`kafka`]: connecting (mTLS/SASL), topics, partitioning (Java's murmur2), partition clients.
//! - [`store`]: PostgreSQL: TLS connection, migrations, partition leases, events encoded as
//!   binary COPY rows, exactly-once batches.
//! - [`consume`]: the consumer's loop: fetch and decode (on a Kafka thread), write and commit
//!   (on the main thread), per leased partition.
//! - [`tls`]: PEM files → rustls configs; the certificate expiry reader.
//! - [`shutdown`]: SIGINT/SIGTERM → one signal every task awaits.
//! - [`secret`]: passwords and URLs that print as `<hidden>` (never in a log).
//! - [`logging`]: the log format and level (`CK_LOG_LEVEL`).
//!
//! The binaries in `src/bin` only wire these together and render errors for humans.

#![warn(missing_docs)]

pub mod consumer;
pub mod event;
pub mod kafka;
pub mod logging;
pub mod producer;
pub mod secret;
pub mod settings;
pub mod shutdown;
pub mod tls;

/// Exit code for a usage or configuration error (both binaries).
pub const EXIT_CONFIG: u8 = 2;
