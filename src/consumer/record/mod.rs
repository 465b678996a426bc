//! What the consumer makes of a Kafka record: a row of the `events` table
//! ([`StoredEvent`]) from a v1 event or a record of the Python checksite, or the reason it is
//! not one ([`RejectReason`]).
//!
//! This module owns the reading of every format a topic may hold: a v1 event as our
//! producer writes it is `scan`'s, any other v1 event `v1`'s (serde), the Python
//! checksite's records `legacy`'s. It never does I/O.

mod legacy;
mod scan;
mod v1;

use std::borrow::Cow;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use legacy::{LegacyEvent, from_legacy};
use uuid::Uuid;

use super::labels::Labels;
use super::rollup::RollupInput;
use super::series_hash::SeriesSet;
use crate::event::{CheckEvent, ErrorKind, WIRE_VERSION};

/// Events larger than this are rejected by the consumer (a check event is < 2 KiB).
pub(crate) const MAX_EVENT_BYTES: usize = 64 * 1024;

/// A row for the `events` table: what the consumer stores, whichever format it came in.
/// Its texts borrow from the record's bytes where they can.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StoredEvent<'a> {
    /// The check's id (`events.check_id`); None for the Python program's records, which
    /// had none (their Kafka position is their identity).
    pub(crate) id: Option<Uuid>,
    pub(crate) ts: DateTime<Utc>,
    pub(crate) url: Cow<'a, str>,
    /// Whole milliseconds, as the Python program stored it (`events.elapsed integer`).
    pub(crate) elapsed: Option<i32>,
    pub(crate) status: Option<i32>,
    pub(crate) error: Option<Cow<'a, str>>,
    pub(crate) error_kind: Option<&'static str>,
    pub(crate) content_match: Option<Cow<'a, str>>,
    pub(crate) body_prefix: Option<Cow<'a, str>>,
    pub(crate) dns_ms: Option<i32>,
    pub(crate) connect_ms: Option<i32>,
    pub(crate) tls_ms: Option<i32>,
    pub(crate) ttfb_ms: Option<i32>,
    pub(crate) bytes: Option<i64>,
    pub(crate) cert_expires_at: Option<DateTime<Utc>>,
    pub(crate) ip: Option<Cow<'a, str>>,
    pub(crate) body_sha256: Option<Cow<'a, str>>,
    pub(crate) schedule_lag_ms: Option<i64>,
    pub(crate) producer: Option<Cow<'a, str>>,
    /// The verdict (`events.up`): the producer's, or judged here for records without one.
    pub(crate) up: bool,
    /// The target's name, group and visibility (not stored in `events`).
    pub(crate) labels: Labels,
}

/// The URLs and vantage point names of a chunk of records, one shared copy of each: its
/// events' rollup inputs hold these instead of a String each (a chunk holds ~1,000
/// events of a few hundred URLs; two allocations an event were a tenth of the fetch
/// thread's allocator calls, and their frees the writer's).
#[derive(Default)]
pub(crate) struct SharedNames(SeriesSet<Arc<str>>);

impl SharedNames {
    fn get(&mut self, name: &str) -> Arc<str> {
        if let Some(shared) = self.0.get(name) {
            return shared.clone();
        }
        let shared: Arc<str> = name.into();
        self.0.insert(shared.clone());
        shared
    }
}

impl StoredEvent<'_> {
    /// What the rollups need of it, once its row is encoded.
    pub(crate) fn into_rollup_input(
        self,
        (partition, offset): (i32, i64),
        names: &mut SharedNames,
    ) -> RollupInput {
        RollupInput {
            partition,
            offset,
            url: names.get(&self.url),
            producer: names.get(self.producer.as_deref().unwrap_or_default()),
            ts: self.ts,
            up: self.up,
            elapsed: self.elapsed,
            status: self.status,
            error: self.error.map(Cow::into_owned),
            error_kind: self.error_kind,
            cert_expires_at: self.cert_expires_at,
            phases: [self.dns_ms, self.connect_ms, self.tls_ms, self.ttfb_ms],
            removed: false,
            labels: self.labels,
            maintenance: false,
        }
    }
}

/// Why a record is not a valid event: the text is stored in `rejected_events.reason`,
/// the kind is counted in the metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RejectReason(pub String, pub RejectKind);

/// What kind of record was rejected: a metric label, so a short fixed set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectKind {
    /// The record has no value.
    NoValue,
    /// The value is over [`MAX_EVENT_BYTES`].
    TooLarge,
    /// The value is not UTF-8 text.
    NotUtf8,
    /// The value is not JSON.
    NotJson,
    /// JSON, but neither a v1 event nor a Python checksite record.
    NotAnEvent,
    /// A format version this consumer does not read.
    UnknownVersion,
    /// An event PostgreSQL cannot hold (a NUL in a text, a field too large).
    Unstorable,
    /// PostgreSQL refused the row (a constraint, a limit).
    Refused,
}

impl RejectKind {
    /// Every kind, in label order.
    pub const ALL: [RejectKind; 8] = [
        RejectKind::NoValue,
        RejectKind::TooLarge,
        RejectKind::NotUtf8,
        RejectKind::NotJson,
        RejectKind::NotAnEvent,
        RejectKind::UnknownVersion,
        RejectKind::Unstorable,
        RejectKind::Refused,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectKind::NoValue => "no_value",
            RejectKind::TooLarge => "too_large",
            RejectKind::NotUtf8 => "not_utf8",
            RejectKind::NotJson => "not_json",
            RejectKind::NotAnEvent => "not_an_event",
            RejectKind::UnknownVersion => "unknown_version",
            RejectKind::Unstorable => "unstorable",
            RejectKind::Refused => "refused",
        }
    }
}

impl RejectReason {
    /// A reason as PostgreSQL can store it: serde quotes field names and values into its
    /// messages, and a NUL there would make the reject's own INSERT fail for ever.
    pub(crate) fn new(kind: RejectKind, text: impl Into<String>) -> RejectReason {
        let text = text.into();
        if text.contains('\0') {
            RejectReason(text.replace('\0', "\\u0000"), kind)
        } else {
            RejectReason(text, kind)
        }
    }
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A Kafka record's timestamp (ms) as a time; one out of any calendar's range is the
/// record's fault, and rejects it alone.
pub(crate) fn record_time(ms: i64) -> Result<DateTime<Utc>, RejectReason> {
    DateTime::from_timestamp_millis(ms).ok_or_else(|| {
        let why = format!("the record's timestamp ({ms} ms) is out of range");
        RejectReason(why, RejectKind::Unstorable)
    })
}

/// Decode a record value. `record_time` is the Kafka record's timestamp, used for
/// the Python program's events, which carried no time of their own.
pub(crate) fn decode(
    value: Option<&[u8]>,
    record_time: DateTime<Utc>,
) -> Result<StoredEvent<'_>, RejectReason> {
    use RejectKind as K;
    let reject = |kind, s: String| Err(RejectReason::new(kind, s));
    let Some(bytes) = value else {
        return reject(K::NoValue, "record has no value".into());
    };
    if bytes.len() > MAX_EVENT_BYTES {
        return reject(
            K::TooLarge,
            format!(
                "value is {} bytes, over the {MAX_EVENT_BYTES}-byte limit",
                bytes.len()
            ),
        );
    }
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => return reject(K::NotUtf8, format!("value is not UTF-8: {e}")),
    };
    // The fast paths: a v1 event as our producer writes it, scanned; any v1 event, parsed
    // once straight into its row.
    if let Some(ev) = scan::scan(text)
        && ev.v == WIRE_VERSION
    {
        return Ok(from_borrowed(ev));
    }
    if let Ok(ev) = serde_json::from_str::<v1::V1Event>(text)
        && ev.v == WIRE_VERSION
    {
        return Ok(from_borrowed(ev));
    }
    // Anything else is parsed again, generically, to say what it is.
    let json: serde_json::Value = match serde_json::from_str(text) {
        Ok(j) => j,
        Err(e) => return reject(K::NotJson, format!("value is not JSON: {e}")),
    };
    let Some(obj) = json.as_object() else {
        return reject(K::NotAnEvent, "value is not a JSON object".into());
    };
    match obj.get("v") {
        None => match serde_json::from_value::<LegacyEvent>(json) {
            Ok(old) => Ok(from_legacy(old, record_time)),
            Err(e) => reject(
                K::NotAnEvent,
                format!("not a v1 event (no \"v\") nor a Python checksite event: {e}"),
            ),
        },
        Some(v) if v.as_u64() == Some(WIRE_VERSION as u64) => {
            match serde_json::from_value::<CheckEvent>(json) {
                Ok(ev) => Ok(from_v1(ev)),
                Err(e) => reject(K::NotAnEvent, format!("invalid v1 event: {e}")),
            }
        }
        Some(v) => reject(
            K::UnknownVersion,
            format!("unknown event format version {v} (this consumer reads v{WIRE_VERSION})"),
        ),
    }
}

fn ms_i32(ms: Option<u64>) -> Option<i32> {
    ms.map(|m| i32::try_from(m).unwrap_or(i32::MAX))
}

/// The verdict of an event that carries none (a v1 producer before `up`, with no target
/// settings to go by): a 2xx or 3xx answer and no error, as the producer's default.
fn judged_up(status: Option<u16>, error: Option<&str>) -> bool {
    status.is_some_and(|s| (200..400).contains(&s)) && error.is_none()
}

/// A v1 event read generically (the slow path, to say what is wrong with one): its row,
/// through the fast path's, as owned texts.
fn from_v1(ev: CheckEvent) -> StoredEvent<'static> {
    let owned = |t: Option<String>| t.map(Cow::Owned);
    from_borrowed(v1::V1Event {
        v: ev.v,
        id: ev.id,
        url: Cow::Owned(ev.url),
        checked_at: ev.checked_at,
        elapsed_ms: ev.elapsed_ms,
        status: ev.status,
        error: owned(ev.error),
        error_kind: ev.error_kind,
        content_match: owned(ev.content_match),
        body_prefix: owned(ev.body_prefix),
        dns_ms: ev.dns_ms,
        connect_ms: ev.connect_ms,
        tls_ms: ev.tls_ms,
        ttfb_ms: ev.ttfb_ms,
        bytes: ev.bytes,
        cert_expires_at: ev.cert_expires_at,
        ip: owned(ev.ip),
        body_sha256: owned(ev.body_sha256),
        schedule_lag_ms: ev.schedule_lag_ms,
        producer: Cow::Owned(ev.producer),
        up: ev.up,
        name: owned(ev.name),
        group: owned(ev.group),
        public: ev.public,
    })
}

fn from_borrowed(ev: v1::V1Event<'_>) -> StoredEvent<'_> {
    let up = ev
        .up
        .unwrap_or_else(|| judged_up(ev.status, ev.error.as_deref()));
    StoredEvent {
        up,
        id: Some(ev.id),
        ts: ev.checked_at,
        url: ev.url,
        elapsed: ms_i32(Some(ev.elapsed_ms)),
        status: ev.status.map(i32::from),
        error: ev.error,
        error_kind: ev.error_kind.map(ErrorKind::as_str),
        content_match: ev.content_match,
        body_prefix: ev.body_prefix,
        dns_ms: ms_i32(ev.dns_ms),
        connect_ms: ms_i32(ev.connect_ms),
        tls_ms: ms_i32(ev.tls_ms),
        ttfb_ms: ms_i32(ev.ttfb_ms),
        bytes: ev.bytes.map(|b| i64::try_from(b).unwrap_or(i64::MAX)),
        cert_expires_at: ev.cert_expires_at,
        ip: ev.ip,
        body_sha256: ev.body_sha256,
        schedule_lag_ms: Some(ev.schedule_lag_ms),
        producer: Some(ev.producer),
        labels: Labels {
            name: ev.name.map(Cow::into_owned),
            group: ev.group.map(Cow::into_owned),
            public: ev.public != Some(false),
        },
    }
}

#[cfg(test)]
mod tests;
