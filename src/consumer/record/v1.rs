//! The fast path of a v1 event: read straight into a row whose texts borrow from the
//! record's bytes, where [`CheckEvent`](crate::event::CheckEvent) would allocate a String
//! for each (the URL, the match, the address, the body's hash, the vantage point: 5-7 an
//! event, a tenth of the fetch thread's CPU with its allocator lock). A text with escapes
//! is copied, as it must be. What it accepts and refuses is exactly `CheckEvent`'s: a test
//! holds them to the same answer over every field missing, null and of the wrong type.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer};
use uuid::Uuid;

use crate::event::{ErrorKind, rfc3339_millis, rfc3339_opt};

/// A v1 event as it is read; the fields and their rules are `CheckEvent`'s.
#[derive(Deserialize)]
pub(super) struct V1Event<'a> {
    pub(super) v: u32,
    pub(super) id: Uuid,
    #[serde(borrow)]
    pub(super) url: Cow<'a, str>,
    #[serde(deserialize_with = "rfc3339_millis::deserialize")]
    pub(super) checked_at: DateTime<Utc>,
    pub(super) elapsed_ms: u64,
    pub(super) status: Option<u16>,
    #[serde(borrow, default, deserialize_with = "text")]
    pub(super) error: Option<Cow<'a, str>>,
    pub(super) error_kind: Option<ErrorKind>,
    #[serde(borrow, default, deserialize_with = "text")]
    pub(super) content_match: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "text")]
    pub(super) body_prefix: Option<Cow<'a, str>>,
    pub(super) dns_ms: Option<u64>,
    pub(super) connect_ms: Option<u64>,
    pub(super) tls_ms: Option<u64>,
    pub(super) ttfb_ms: Option<u64>,
    pub(super) bytes: Option<u64>,
    #[serde(deserialize_with = "rfc3339_opt::deserialize")]
    pub(super) cert_expires_at: Option<DateTime<Utc>>,
    #[serde(borrow, default, deserialize_with = "text")]
    pub(super) ip: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "text")]
    pub(super) body_sha256: Option<Cow<'a, str>>,
    pub(super) schedule_lag_ms: i64,
    #[serde(borrow)]
    pub(super) producer: Cow<'a, str>,
    #[serde(default)]
    pub(super) up: Option<bool>,
    #[serde(borrow, default, deserialize_with = "text")]
    pub(super) name: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "text")]
    pub(super) group: Option<Cow<'a, str>>,
    #[serde(default)]
    pub(super) public: Option<bool>,
}

/// An optional text, borrowed when it has no escapes. (`Option<Cow<str>>` alone would
/// always copy: serde borrows only a bare `Cow<str>`.)
fn text<'de: 'a, 'a, D: Deserializer<'de>>(d: D) -> Result<Option<Cow<'a, str>>, D::Error> {
    #[derive(Deserialize)]
    struct Text<'a>(#[serde(borrow)] Cow<'a, str>);
    Ok(Option::<Text<'a>>::deserialize(d)?.map(|Text(t)| t))
}

#[cfg(test)]
mod tests {
    use super::super::{decode, from_v1};
    use super::*;
    use crate::event::CheckEvent;

    /// Every field of a full event missing, null, of the wrong type, and with escapes.
    fn variants() -> Vec<String> {
        let mut full = crate::event::tests::sample();
        full.error = Some("refused".into());
        full.body_prefix = Some("<p>".into());
        full.name = Some("Shop".into());
        full.group = Some("EU".into());
        full.public = Some(false);
        full.up = Some(false);
        let full: serde_json::Value = serde_json::from_slice(&full.to_json()).unwrap();
        let serde_json::Value::Object(fields) = &full else {
            unreachable!()
        };
        let mut out = vec![full.to_string()];
        for key in fields.keys() {
            for change in [
                None,
                Some(serde_json::Value::Null),
                Some(7.into()),
                Some("x\"\\u00e9\n".into()),
                Some(true.into()),
            ] {
                let mut v = full.clone();
                match change {
                    None => drop(v.as_object_mut().unwrap().remove(key)),
                    Some(value) => v[key] = value,
                }
                out.push(v.to_string());
            }
        }
        out
    }

    #[test]
    fn reads_exactly_what_check_event_reads() {
        let variants = variants();
        assert!(variants.len() > 100, "{}", variants.len());
        let (mut read, mut refused) = (0, 0);
        for text in &variants {
            let reference = serde_json::from_str::<CheckEvent>(text);
            let fast = serde_json::from_str::<V1Event>(text);
            match (reference, fast) {
                (Ok(r), Ok(f)) => {
                    read += 1;
                    assert_eq!(super::super::from_borrowed(f), from_v1(r), "{text}");
                }
                (Err(_), Err(_)) => refused += 1,
                (r, f) => panic!(
                    "{text}: CheckEvent {:?}, borrowed {:?}",
                    r.is_ok(),
                    f.is_ok()
                ),
            }
        }
        // Both ways taken often: the list is not all one answer.
        assert!(read > 20 && refused > 20, "{read} read, {refused} refused");
    }

    #[test]
    fn texts_without_escapes_are_borrowed_and_with_them_copied() {
        let mut ev = crate::event::tests::sample();
        ev.error = Some("said \"no\"".into());
        let json = ev.to_json();
        let row = decode(Some(&json), Utc::now()).unwrap();
        assert!(matches!(row.url, Cow::Borrowed(_)));
        assert!(matches!(row.producer, Some(Cow::Borrowed(_))));
        assert_eq!(row.error.as_deref(), Some("said \"no\""));
        assert!(matches!(row.error, Some(Cow::Owned(_))));
    }
}
