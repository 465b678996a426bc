//! The wire format: [`CheckEvent`] (format v1) and its JSON, as the producer publishes it.
//!
//! This module owns the bytes that cross Kafka. It must never do I/O, and every
//! change to the JSON here is a change to the published format (bump [`WIRE_VERSION`]).
//! How the consumer reads what it finds in a topic (v1, and the Python checksite's
//! records) is `consumer::record`'s.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The `v` field of every event this program publishes.
pub const WIRE_VERSION: u32 = 1;

/// Longest URL the producer checks and the consumer keeps rollups and alert state for: a
/// URL past it (from another producer) is stored in `events`, and left out of those.
pub const MAX_URL_BYTES: usize = 8192;

/// Longest vantage point name the consumer keeps rollups and alert state for (an index
/// entry holds it as it is).
pub const MAX_PRODUCER_BYTES: usize = 256;

/// The v1 event's fields, in the order the README documents them: what a consumer of
/// the topic can rely on (the tests check the JSON against this list).
pub const FIELDS: [&str; 21] = [
    "v",
    "id",
    "url",
    "checked_at",
    "elapsed_ms",
    "status",
    "error",
    "error_kind",
    "content_match",
    "body_prefix",
    "dns_ms",
    "connect_ms",
    "tls_ms",
    "ttfb_ms",
    "bytes",
    "cert_expires_at",
    "ip",
    "body_sha256",
    "schedule_lag_ms",
    "producer",
    "up",
];

/// Fields of the v1 event present only when set (the target's `name`, `group`, and
/// `public: false`): consumers before them ignore them, as they ignore any field they do
/// not know.
pub const OPTIONAL_FIELDS: [&str; 3] = ["name", "group", "public"];

/// Why a check failed before (or while) getting a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorKind {
    /// The host name did not resolve.
    Dns,
    /// No TCP connection (refused, unreachable).
    Connect,
    /// The TLS handshake failed (untrusted or expired certificate, wrong name, ...).
    Tls,
    /// A phase, or the whole check, ran out of time.
    Timeout,
    /// The server's answer is not valid HTTP.
    Http,
    /// The body could not be read to its end.
    Body,
    /// Too many redirects, or a redirect that cannot be followed.
    Redirect,
    /// Anything else.
    Other,
}

impl ErrorKind {
    /// Every kind, in declaration order (`kind as usize` is its index here): the order of
    /// the per-kind counts in the metrics and the rollups.
    pub const ALL: [ErrorKind; 8] = [
        ErrorKind::Dns,
        ErrorKind::Connect,
        ErrorKind::Tls,
        ErrorKind::Timeout,
        ErrorKind::Http,
        ErrorKind::Body,
        ErrorKind::Redirect,
        ErrorKind::Other,
    ];

    /// The kind named `name` in the JSON.
    pub fn from_name(name: &str) -> Option<ErrorKind> {
        ErrorKind::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// The name in the JSON (`"dns"`, `"connect"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Dns => "dns",
            ErrorKind::Connect => "connect",
            ErrorKind::Tls => "tls",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Http => "http",
            ErrorKind::Body => "body",
            ErrorKind::Redirect => "redirect",
            ErrorKind::Other => "other",
        }
    }
}

/// One check of one site: the value of one Kafka record (the key is `url`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckEvent {
    /// The format version, [`WIRE_VERSION`].
    pub v: u32,
    /// This check's id (UUID v7, time-ordered): the consumer stores each id once.
    pub id: Uuid,
    /// The target as configured (also the record's key).
    pub url: String,
    #[serde(with = "rfc3339_millis")]
    /// When the request started (RFC 3339 UTC, milliseconds, in the JSON).
    pub checked_at: DateTime<Utc>,
    /// Start to the end of the body, or to the error.
    pub elapsed_ms: u64,
    /// The final response's HTTP status; None when there was no response.
    pub status: Option<u16>,
    /// What went wrong, when the check failed before a response.
    pub error: Option<String>,
    /// What kind of failure `error` is.
    pub error_kind: Option<ErrorKind>,
    /// The text the regex matched in a 2xx body (at most 1000 characters).
    pub content_match: Option<String>,
    /// The first 500 characters of the body when the status is not 2xx.
    pub body_prefix: Option<String>,
    /// Name lookup time, summed over redirects; None where there was none.
    pub dns_ms: Option<u64>,
    /// TCP connect time, summed over redirects.
    pub connect_ms: Option<u64>,
    /// TLS handshake time, summed over redirects (https only).
    pub tls_ms: Option<u64>,
    /// Start to the final response's headers.
    pub ttfb_ms: Option<u64>,
    /// Body bytes read (capped by `CK_BODY_CAP_BYTES`).
    pub bytes: Option<u64>,
    #[serde(with = "rfc3339_opt")]
    /// notAfter of the site's leaf certificate (https only).
    pub cert_expires_at: Option<DateTime<Utc>>,
    /// The address the check connected to.
    pub ip: Option<String>,
    /// Hex SHA-256 of the body read: content changes without storing bodies.
    pub body_sha256: Option<String>,
    /// Actual start minus planned start: shows an overloaded producer.
    pub schedule_lag_ms: i64,
    /// `CK_PRODUCER_ID` or the host name: the vantage point.
    pub producer: String,
    /// The producer's verdict, by the target's `expect_status` and regex (only the
    /// producer knows them). Absent in events of producers before it: the consumer then
    /// judges by the status alone (see `consumer::record`).
    #[serde(default)]
    pub up: Option<bool>,
    /// The target's display name (`"name"` in its entry); absent when it has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The target's group on the status page (`"group"`); absent when it has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// `Some(false)`: the target is never shown on the status page, its badges or
    /// `/api/status` (`"public": false`); absent: shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public: Option<bool>,
}

impl CheckEvent {
    /// A check of `url` starting now, nothing measured yet.
    pub fn starting(url: &str, producer: &str, schedule_lag_ms: i64) -> CheckEvent {
        CheckEvent {
            v: WIRE_VERSION,
            id: Uuid::now_v7(),
            url: url.to_string(),
            checked_at: Utc::now(),
            elapsed_ms: 0,
            status: None,
            error: None,
            error_kind: None,
            content_match: None,
            body_prefix: None,
            dns_ms: None,
            connect_ms: None,
            tls_ms: None,
            ttfb_ms: None,
            bytes: None,
            cert_expires_at: None,
            ip: None,
            body_sha256: None,
            schedule_lag_ms,
            producer: producer.to_string(),
            up: None,
            name: None,
            group: None,
            public: None,
        }
    }

    /// The JSON value published to Kafka.
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising a struct of plain fields cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// RFC 3339, UTC, milliseconds: `2026-11-28T06:31:33.123Z`.
pub fn format_time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// An RFC 3339 time, in UTC (what every reader of an event's times uses).
pub(crate) fn parse_rfc3339(s: &str) -> Result<DateTime<Utc>, chrono::ParseError> {
    match as_formatted(s.as_bytes()) {
        Some(t) => Ok(t),
        None => DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc)),
    }
}

/// A time exactly as [`format_time`] writes it (`2026-11-28T06:31:33.123Z`), read by
/// position; None for any other text, which chrono then decides (a leap second too:
/// `from_hms_milli_opt` takes none). chrono's general parser was 2.8 % of the
/// consumer's CPU (perf, 200,000-event drain: two times an event); by position, 200,000
/// times take ~4.7 ms instead of ~7 (release test build). A test holds the two to the
/// same answers.
fn as_formatted(b: &[u8]) -> Option<DateTime<Utc>> {
    let shape = b.len() == 24
        && (b[4], b[7], b[10], b[13], b[16], b[19], b[23])
            == (b'-', b'-', b'T', b':', b':', b'.', b'Z');
    if !shape {
        return None;
    }
    let number = |at: std::ops::Range<usize>| {
        b[at].iter().try_fold(0u32, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    let (year, month, day) = (number(0..4)? as i32, number(5..7)?, number(8..10)?);
    let (hour, minute) = (number(11..13)?, number(14..16)?);
    let (second, milli) = (number(17..19)?, number(20..23)?);
    let date = chrono::NaiveDate::from_ymd_opt(year, month, day)?;
    let time = chrono::NaiveTime::from_hms_milli_opt(hour, minute, second, milli)?;
    Some(date.and_time(time).and_utc())
}

/// Parses RFC 3339 straight from the JSON text, without an intermediate String: this runs
/// once or twice per event in the consumer's hot loop.
struct Rfc3339Visitor;

impl serde::de::Visitor<'_> for Rfc3339Visitor {
    type Value = DateTime<Utc>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an RFC 3339 time")
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<DateTime<Utc>, E> {
        parse_rfc3339(s).map_err(|e| E::custom(format!("bad RFC 3339 time {s:?}: {e}")))
    }
}

/// Serde's `with` for a time as [`format_time`] writes it.
pub(crate) mod rfc3339_millis {
    use chrono::{DateTime, Utc};
    use serde::{Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_time(t))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        d.deserialize_str(super::Rfc3339Visitor)
    }
}

/// Serde's `with` for an optional time as [`format_time`] writes it.
pub(crate) mod rfc3339_opt {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(
        t: &Option<DateTime<Utc>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => super::rfc3339_millis::serialize(t, s),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<DateTime<Utc>>, D::Error> {
        #[derive(Deserialize)]
        struct Wrapped(#[serde(with = "super::rfc3339_millis")] DateTime<Utc>);
        Ok(Option::<Wrapped>::deserialize(d)?.map(|Wrapped(t)| t))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn error_kinds_have_the_names_the_readme_gives() {
        // The README's wire format table, in its order (the metrics' and rollups' order).
        let readme = [
            "dns", "connect", "tls", "timeout", "http", "body", "redirect", "other",
        ];
        let names: Vec<&str> = ErrorKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(names, readme);
        for (kind, name) in ErrorKind::ALL.into_iter().zip(readme) {
            assert_eq!(ErrorKind::from_name(name), Some(kind));
        }
        assert_eq!(ErrorKind::from_name("refused"), None);
        assert_eq!(ErrorKind::from_name(""), None);
    }

    #[test]
    fn a_time_that_is_not_text_says_what_was_expected() {
        let mut v = serde_json::to_value(sample()).unwrap();
        v["checked_at"] = serde_json::json!(1764570693);
        let e = serde_json::from_value::<CheckEvent>(v)
            .unwrap_err()
            .to_string();
        assert!(e.contains("an RFC 3339 time"), "{e}");
    }

    #[test]
    fn an_optional_time_is_read_back() {
        let mut ev = sample();
        ev.cert_expires_at = Some(Utc.with_ymd_and_hms(2027, 1, 2, 3, 4, 5).unwrap());
        let json = String::from_utf8(ev.to_json()).unwrap();
        assert!(
            json.contains("\"cert_expires_at\":\"2027-01-02T03:04:05.000Z\""),
            "{json}"
        );
        let back: CheckEvent = serde_json::from_str(&json).unwrap();
        assert_eq!(back.cert_expires_at, ev.cert_expires_at);
    }

    /// A v1 event with every field filled, for the tests of the modules that read it.
    pub(crate) fn sample() -> CheckEvent {
        CheckEvent {
            v: WIRE_VERSION,
            id: Uuid::now_v7(),
            url: "https://example.com/".into(),
            checked_at: Utc.with_ymd_and_hms(2026, 11, 28, 6, 31, 33).unwrap()
                + chrono::Duration::milliseconds(123),
            elapsed_ms: 42,
            status: Some(200),
            error: None,
            error_kind: None,
            content_match: Some("Example".into()),
            body_prefix: None,
            dns_ms: Some(1),
            connect_ms: Some(2),
            tls_ms: Some(3),
            ttfb_ms: Some(10),
            bytes: Some(1256),
            cert_expires_at: None,
            ip: Some("127.0.0.1".into()),
            body_sha256: Some("ab".repeat(32)),
            schedule_lag_ms: 0,
            producer: "host1".into(),
            up: Some(true),
            name: None,
            group: None,
            public: None,
        }
    }

    #[test]
    fn v1_json_has_exactly_the_documented_fields() {
        let json: serde_json::Value = serde_json::from_slice(&sample().to_json()).unwrap();
        let mut keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        keys.sort();
        let mut want = FIELDS.to_vec();
        want.sort();
        assert_eq!(keys, want);
        assert_eq!(json["checked_at"], "2026-11-28T06:31:33.123Z");
        assert_eq!(json["cert_expires_at"], serde_json::Value::Null);
    }

    #[test]
    fn labels_are_there_only_when_set() {
        let mut ev = sample();
        ev.name = Some("Checkout".into());
        ev.group = Some("Shop".into());
        ev.public = Some(false);
        let json: serde_json::Value = serde_json::from_slice(&ev.to_json()).unwrap();
        let mut keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        keys.sort();
        let mut want: Vec<&str> = FIELDS.iter().chain(&OPTIONAL_FIELDS).copied().collect();
        want.sort();
        assert_eq!(keys, want);
        assert_eq!(
            (&json["name"], &json["group"], &json["public"]),
            (&"Checkout".into(), &"Shop".into(), &false.into())
        );
        let back: CheckEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back, ev);
    }

    /// The by-position reading of [`format_time`]'s texts gives chrono's answer: over
    /// times as written and texts one character or one field off them (a month 13, a
    /// 30 February, a leap second, an offset instead of `Z`), whatever it reads is what
    /// chrono reads, and what it leaves chrono reads the same as before.
    #[test]
    fn times_as_formatted_read_as_chrono_reads_them() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = |below: u64| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
            (seed >> 33) % below
        };
        let chrono_reads = |s: &str| DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc));
        let fields = [
            (0..4, &["0000", "1969", "2000", "2024", "2100", "9999"][..]),
            (5..7, &["00", "01", "02", "12", "13", "99"]),
            (8..10, &["00", "01", "28", "29", "30", "31", "32"]),
            (11..13, &["00", "23", "24"]),
            (14..16, &["00", "59", "60"]),
            (17..19, &["00", "59", "60", "61"]),
            (20..23, &["000", "999"]),
        ];
        let chars = b"0129-:.TtZz +";
        let (mut read, mut left) = (0, 0);
        for _ in 0..200_000 {
            let at = DateTime::from_timestamp_millis(
                next(400_000_000_000_000) as i64 - 62_000_000_000_000,
            );
            let mut text = format_time(&at.unwrap()).into_bytes();
            match next(4) {
                0 => {}
                1 => text[next(24) as usize] = chars[next(chars.len() as u64) as usize],
                2 => {
                    let (range, values) = &fields[next(fields.len() as u64) as usize];
                    let value = values[next(values.len() as u64) as usize].as_bytes();
                    text[range.clone()].copy_from_slice(value);
                }
                _ => text.truncate(next(25) as usize),
            }
            let Ok(text) = String::from_utf8(text) else {
                continue;
            };
            match as_formatted(text.as_bytes()) {
                Some(t) => {
                    read += 1;
                    assert_eq!(Ok(t), chrono_reads(&text), "{text}");
                }
                None => left += 1,
            }
            assert_eq!(parse_rfc3339(&text), chrono_reads(&text), "{text}");
        }
        // Both paths were taken, many times.
        assert!(
            read > 50_000 && left > 50_000,
            "{read} read, {left} left to chrono"
        );
    }
}
