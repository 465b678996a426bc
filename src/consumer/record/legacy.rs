//! The Python checksite's records: read as they are, so that its topic can be consumed
//! as it is. Pure: it never does I/O.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::StoredEvent;
use crate::consumer::labels::Labels;

/// The Python checksite's record: `{"url", "elapsed", "error", "status", "body_prefix",
/// "content_match", "timestamp"}`, `elapsed` in integer milliseconds and `timestamp`
/// always null. Its consumer took the time from the Kafka record, and so do we: `timestamp`
/// (null, a number, or absent) and any key we do not know are ignored, not a reason to
/// lose the check.
#[derive(Deserialize)]
pub(super) struct LegacyEvent {
    url: String,
    #[serde(default)]
    elapsed: Option<f64>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    status: Option<i32>,
    #[serde(default)]
    body_prefix: Option<String>,
    #[serde(default)]
    content_match: Option<String>,
}

/// The Python program sent integers; a float from some other writer is rounded, and a
/// value outside `integer` saturates rather than losing the record.
fn legacy_ms(elapsed: Option<f64>) -> Option<i32> {
    elapsed
        .filter(|e| e.is_finite())
        .map(|e| e.round().clamp(i32::MIN as f64, i32::MAX as f64) as i32)
}

/// Its row: no id (its Kafka position is its identity), the record's time.
pub(super) fn from_legacy(old: LegacyEvent, record_time: DateTime<Utc>) -> StoredEvent<'static> {
    StoredEvent {
        // The Python program's own rule: 200 and no error.
        up: old.status == Some(200) && old.error.is_none(),
        id: None,
        ts: record_time,
        url: Cow::Owned(old.url),
        elapsed: legacy_ms(old.elapsed),
        status: old.status,
        error: old.error.map(Cow::Owned),
        error_kind: None,
        content_match: old.content_match.map(Cow::Owned),
        body_prefix: old.body_prefix.map(Cow::Owned),
        dns_ms: None,
        connect_ms: None,
        tls_ms: None,
        ttfb_ms: None,
        bytes: None,
        cert_expires_at: None,
        ip: None,
        body_sha256: None,
        schedule_lag_ms: None,
        producer: None,
        labels: Labels::default(),
    }
}
