//! Unit tests of reading a record: the three formats, their limits, and the reason a refused record is kept with.

use super::*;
use crate::event::tests::sample;
use chrono::TimeZone;

#[test]
fn v1_round_trips_through_decode() {
    let ev = sample();
    let json = ev.to_json();
    let row = decode(Some(&json), Utc::now()).unwrap();
    assert_eq!(row.id, Some(ev.id));
    assert_eq!(row.ts, ev.checked_at);
    assert_eq!(row.elapsed, Some(42));
    assert_eq!(row.status, Some(200));
    assert_eq!(row.producer.as_deref(), Some("host1"));
}

#[test]
fn a_v1_event_with_fields_this_consumer_does_not_know_is_stored() {
    // What a consumer before `name`, `group` and `public` made of them, and what this
    // one will make of fields added later: stored, the unknown ones ignored.
    let mut json: serde_json::Value = serde_json::from_slice(&sample().to_json()).unwrap();
    json["name"] = "Checkout".into();
    json["added_later"] = serde_json::json!({"any": ["thing"]});
    let json = json.to_string();
    let row = decode(Some(json.as_bytes()), Utc::now()).unwrap();
    assert_eq!(row.labels.name.as_deref(), Some("Checkout"));
    assert!(row.labels.public);
    assert_eq!(row.status, Some(200));
}

#[test]
fn python_records_take_the_record_time_and_keep_integer_ms() {
    let t = Utc.timestamp_millis_opt(1_700_000_000_123).unwrap();
    // Exactly what the Python producer sends.
    let raw = br#"{"url": "https://example.com/", "elapsed": 123, "error": null, "status": 200, "body_prefix": null, "content_match": "Example Domain", "timestamp": null}"#;
    let row = decode(Some(raw), t).unwrap();
    assert_eq!(row.ts, t);
    assert_eq!(row.id, None);
    assert_eq!(row.elapsed, Some(123));
    assert_eq!(row.status, Some(200));
    assert_eq!(row.content_match.as_deref(), Some("Example Domain"));
}

#[test]
fn python_records_with_or_without_timestamp_or_extra_keys_are_stored() {
    let t = Utc::now();
    for raw in [
        &br#"{"url": "https://a.example/", "elapsed": 5, "error": null, "status": 500, "body_prefix": "oops", "content_match": null}"#[..],
        br#"{"url": "https://a.example/", "elapsed": 5, "error": null, "status": 500, "body_prefix": "oops", "content_match": null, "timestamp": 1700000000}"#,
        br#"{"url": "https://a.example/", "elapsed": 5, "error": null, "status": 500, "body_prefix": "oops", "content_match": null, "timestamp": null, "region": "eu"}"#,
    ] {
        let row = decode(Some(raw), t).unwrap_or_else(|e| panic!("{e}: {raw:?}"));
        assert_eq!(row.elapsed, Some(5));
        assert_eq!(row.body_prefix.as_deref(), Some("oops"));
        assert_eq!(row.ts, t);
    }
    let failed = br#"{"url": "https://b.example/", "elapsed": 10003, "error": "Connection refused", "status": null, "body_prefix": null, "content_match": null, "timestamp": null}"#;
    let row = decode(Some(failed), t).unwrap();
    assert_eq!(row.status, None);
    assert_eq!(row.error.as_deref(), Some("Connection refused"));
}

#[test]
fn the_verdict_is_the_producers_else_judged_by_the_format_s_own_rule() {
    let t = Utc::now();
    // The producer's verdict wins, whatever the status says (a regex that missed).
    let mut ev = sample();
    ev.up = Some(false);
    assert!(!decode(Some(&ev.to_json()), t).unwrap().up);
    // Without one: 2xx or 3xx and no error.
    for (status, error, want) in [
        (Some(200), None, true),
        (Some(302), None, true),
        (Some(404), None, false),
        (None, Some("refused"), false),
    ] {
        let mut ev = sample();
        (ev.up, ev.status, ev.error) = (None, status, error.map(String::from));
        let json = String::from_utf8(ev.to_json()).unwrap();
        let json = json.replace(r#","up":null"#, "");
        assert!(!json.contains("\"up\""), "{json}");
        let row = decode(Some(json.as_bytes()), t).unwrap();
        assert_eq!(row.up, want, "{status:?} {error:?}");
    }
    // The Python program's rule: 200 only.
    let python = |status: &str| {
        format!(
            r#"{{"url": "https://a.example/", "elapsed": 5, "error": null, "status": {status}, "body_prefix": null, "content_match": null}}"#
        )
    };
    assert!(decode(Some(python("200").as_bytes()), t).unwrap().up);
    assert!(!decode(Some(python("301").as_bytes()), t).unwrap().up);
    assert!(!decode(Some(python("null").as_bytes()), t).unwrap().up);
}

#[test]
fn a_reason_never_carries_a_nul() {
    for raw in [
        &br#"{"\u0000": 1}"#[..],
        br#"{"v": 1, "id": "\u0000"}"#,
        br#"{"v": "\u0000"}"#,
        br#"{"url": "x", "status": "\u0000"}"#,
    ] {
        let err = decode(Some(raw), Utc::now()).unwrap_err();
        assert!(!err.0.contains('\0'), "{err:?}");
    }
    assert_eq!(
        RejectReason::new(RejectKind::NotJson, "a\0b").0,
        "a\\u0000b"
    );
}

#[test]
fn malformed_values_are_rejected_with_a_reason() {
    let now = Utc::now();
    let cases: Vec<(Option<&[u8]>, &str)> = vec![
        (None, "no value"),
        (Some(b"\xff\xfe"), "not UTF-8"),
        (Some(b"{nope"), "not JSON"),
        (Some(b"[1,2]"), "not a JSON object"),
        (Some(br#"{"v": 1, "url": 5}"#), "invalid v1 event"),
        (
            Some(br#"{"v": 99, "url": "x"}"#),
            "unknown event format version 99",
        ),
        (
            Some(br#"{"hello": "world"}"#),
            "nor a Python checksite event",
        ),
    ];
    for (value, want) in cases {
        let err = decode(value, now).unwrap_err();
        assert!(
            err.0.contains(want),
            "{:?}: got {:?}, want {:?}",
            value,
            err.0,
            want
        );
    }
    let big = vec![b' '; MAX_EVENT_BYTES + 1];
    assert!(decode(Some(&big), now).unwrap_err().0.contains("limit"));
}

#[test]
fn each_reject_has_the_readme_s_label_and_says_its_reason() {
    // The labels of `checksite_consumer_events_rejected_total{kind}`, as the README
    // lists them.
    let labels: Vec<&str> = RejectKind::ALL.iter().map(|k| k.as_str()).collect();
    assert_eq!(
        labels,
        [
            "no_value",
            "too_large",
            "not_utf8",
            "not_json",
            "not_an_event",
            "unknown_version",
            "unstorable",
            "refused"
        ]
    );
    // Our producer's own shape with another version: the scanner reads it, and it is
    // still refused as a version this consumer does not read.
    let v2 = String::from_utf8(crate::event::tests::sample().to_json())
        .unwrap()
        .replacen("{\"v\":1,", "{\"v\":2,", 1);
    assert!(v2.starts_with("{\"v\":2,"), "{v2}");
    let big = vec![b' '; MAX_EVENT_BYTES + 1];
    let now = Utc::now();
    let cases: [(Option<&[u8]>, &str); 6] = [
        (None, "no_value"),
        (Some(&big), "too_large"),
        (Some(b"\xff"), "not_utf8"),
        (Some(b"{nope"), "not_json"),
        (Some(b"[1]"), "not_an_event"),
        (Some(v2.as_bytes()), "unknown_version"),
    ];
    for (value, label) in cases {
        let err = decode(value, now).unwrap_err();
        assert_eq!(err.1.as_str(), label, "{err:?}");
        assert_eq!(err.to_string(), err.0, "the reason is shown as it is");
        assert!(!err.to_string().is_empty());
    }
}

#[test]
fn the_size_limit_is_64_kib() {
    let now = chrono::Utc::now();
    // A valid event padded with blanks (JSON allows them) to the limit and one past it.
    let event = crate::event::tests::sample().to_json();
    let padded = |len: usize| {
        let mut v = event.clone();
        v.resize(len, b' ');
        v
    };
    assert!(decode(Some(&padded(65_536)), now).is_ok());
    let err = decode(Some(&padded(65_537)), now).unwrap_err();
    assert!(err.0.contains("over the 65536-byte limit"), "{}", err.0);
}
