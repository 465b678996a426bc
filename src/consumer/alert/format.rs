//! How a notification is written for each kind of receiver, from its JSON (the outbox's
//! payload): the notification itself (`json`), Slack's and Mattermost's `{"text"}`,
//! Discord's `{"content"}`, a Microsoft Teams Adaptive Card, PagerDuty's Events API v2,
//! Alertmanager's `/api/v2/alerts`, ntfy's message with its headers, and an e-mail.
//!
//! Pure: it never sends anything.

use serde_json::{Value, json};

/// A receiver's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The notification's JSON, field for field.
    Json,
    /// `{"text": ...}`: Slack and Mattermost incoming webhooks.
    Slack,
    /// `{"content": ...}`: a Discord webhook.
    Discord,
    /// An Adaptive Card in a `message`: a Teams incoming webhook or workflow.
    MsTeams,
    /// PagerDuty Events API v2: `down` triggers, `up` resolves (one `dedup_key` per URL).
    PagerDuty,
    /// Alertmanager's `POST /api/v2/alerts`: firing while down, resolved on `up`.
    Alertmanager,
    /// An ntfy topic: the text, with `Title`, `Priority` and `Tags`.
    Ntfy,
    /// An e-mail over SMTP.
    Email,
}

/// The formats, by name.
const FORMATS: [(&str, Format); 8] = [
    ("json", Format::Json),
    ("slack", Format::Slack),
    ("discord", Format::Discord),
    ("msteams", Format::MsTeams),
    ("pagerduty", Format::PagerDuty),
    ("alertmanager", Format::Alertmanager),
    ("ntfy", Format::Ntfy),
    ("email", Format::Email),
];

impl Format {
    /// The format named `name`.
    pub fn parse(name: &str) -> Result<Format, String> {
        FORMATS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, f)| *f)
            .ok_or_else(|| {
                let names: Vec<&str> = FORMATS.iter().map(|(n, _)| *n).collect();
                format!("{name:?} is not a format: give one of {}", names.join(", "))
            })
    }

    /// Its name.
    pub fn name(self) -> &'static str {
        FORMATS
            .iter()
            .find(|(_, f)| *f == self)
            .map_or("json", |(n, _)| *n)
    }
}

/// What is sent: a body, its type, extra headers, and a title (an e-mail's subject).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Message {
    pub(crate) body: Vec<u8>,
    pub(crate) content_type: &'static str,
    pub(crate) headers: Vec<(&'static str, String)>,
    pub(crate) title: String,
}

/// The notification of `payload` as `format` writes it; `routing_key` for PagerDuty.
pub(crate) fn render(format: Format, payload: &str, routing_key: Option<&str>) -> Message {
    let n: Value = serde_json::from_str(payload).unwrap_or_default();
    let (title, text) = words(&n);
    let json_body = |v: Value| serde_json::to_vec(&v).unwrap_or_default();
    let message = |body: Vec<u8>, content_type| Message {
        body,
        content_type,
        headers: Vec::new(),
        title: title.clone(),
    };
    match format {
        Format::Json => message(payload.as_bytes().to_vec(), "application/json"),
        Format::Slack => message(
            json_body(json!({ "text": slack_text(&n, &text) })),
            "application/json",
        ),
        Format::Discord => message(
            json_body(json!({ "content": truncate(&text, 2000), "username": "checksite" })),
            "application/json",
        ),
        Format::MsTeams => message(json_body(teams_card(&title, &text)), "application/json"),
        Format::PagerDuty => message(
            json_body(pagerduty_event(&n, &text, routing_key.unwrap_or(""))),
            "application/json",
        ),
        Format::Alertmanager => message(
            json_body(json!([alertmanager_alert(&n, &text)])),
            "application/json",
        ),
        Format::Ntfy => {
            let (priority, tags) = match kind(&n) {
                "down" => ("5", "rotating_light"),
                "cert_expiring" => ("4", "warning"),
                "up" => ("3", "white_check_mark"),
                _ => ("3", "grey_question"),
            };
            let mut m = message(text.clone().into_bytes(), "text/plain; charset=utf-8");
            m.headers = vec![
                ("Title", title.clone()),
                ("Priority", priority.into()),
                ("Tags", tags.into()),
            ];
            m
        }
        Format::Email => message(
            email_text(&n, &text).into_bytes(),
            "text/plain; charset=utf-8",
        ),
    }
}

fn kind(n: &Value) -> &str {
    n["kind"].as_str().unwrap_or("")
}

fn field(n: &Value, k: &str) -> String {
    n[k].as_str().unwrap_or("").to_string()
}

/// The vantage points, comma-separated.
fn producers(n: &Value) -> String {
    n["producers"]
        .as_array()
        .map(|p| {
            p.iter()
                .filter_map(Value::as_str)
                .map(|p| if p.is_empty() { "(unnamed)" } else { p })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

/// A title ("DOWN https://…") and one line saying what, since when and from where.
fn words(n: &Value) -> (String, String) {
    let (url, since) = (field(n, "url"), field(n, "since"));
    let detail = match (n["status"].as_i64(), field(n, "error")) {
        (_, e) if !e.is_empty() => format!("{}: {e}", field(n, "error_kind")),
        (Some(status), _) => format!("HTTP {status}"),
        (None, _) => String::new(),
    };
    let who = producers(n);
    match kind(n) {
        "down" => (
            format!("DOWN {url}"),
            format!("DOWN {url} since {since} (seen by {who}; {detail})"),
        ),
        "up" => (
            format!("UP {url}"),
            format!("UP again {url} since {since} (seen by {who})"),
        ),
        "stale" => (
            format!("NO DATA {url}"),
            format!(
                "NO DATA for {url}: no check since {since} (from {who}); the incident is closed"
            ),
        ),
        "removed" => (
            format!("REMOVED {url}"),
            format!("REMOVED {url} from the targets list at {since}; its incident is closed"),
        ),
        _ => (
            format!("CERTIFICATE {url}"),
            format!(
                "CERTIFICATE of {url} expires at {}",
                field(n, "cert_expires_at")
            ),
        ),
    }
}

/// Slack's text, with its emoji.
fn slack_text(n: &Value, text: &str) -> String {
    let icon = match kind(n) {
        "down" => ":red_circle:",
        "up" => ":large_green_circle:",
        "stale" | "removed" => ":grey_question:",
        _ => ":warning:",
    };
    format!("{icon} {text}")
}

fn truncate(s: &str, chars: usize) -> String {
    s.chars().take(chars).collect()
}

/// An Adaptive Card in the envelope a Teams incoming webhook (and a workflow's "when a
/// Teams webhook request is received") takes.
fn teams_card(title: &str, text: &str) -> Value {
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": [
                    {"type": "TextBlock", "text": title, "weight": "Bolder", "size": "Medium", "wrap": true},
                    {"type": "TextBlock", "text": text, "wrap": true}
                ]
            }
        }]
    })
}

/// The key that ties a URL's `up` to its `down`: one incident open per URL at a time.
fn dedup_key(n: &Value) -> String {
    let url = field(n, "url");
    let digest = ring::digest::digest(&ring::digest::SHA256, url.as_bytes());
    let hex: String = digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    match kind(n) {
        // A certificate warning is an incident of its own, per certificate.
        "cert_expiring" => format!("checksite-cert-{hex}-{}", field(n, "cert_expires_at")),
        _ => format!("checksite-{hex}"),
    }
}

/// PagerDuty Events API v2: `down` and `cert_expiring` trigger, the others resolve.
fn pagerduty_event(n: &Value, text: &str, routing_key: &str) -> Value {
    let key = dedup_key(n);
    match kind(n) {
        "down" | "cert_expiring" => json!({
            "routing_key": routing_key,
            "event_action": "trigger",
            "dedup_key": key,
            "payload": {
                "summary": truncate(text, 1024),
                "source": field(n, "url"),
                "severity": if kind(n) == "down" { "critical" } else { "warning" },
                "timestamp": field(n, "checked_at"),
                "component": field(n, "url"),
                "custom_details": n,
            }
        }),
        _ => json!({
            "routing_key": routing_key,
            "event_action": "resolve",
            "dedup_key": key,
        }),
    }
}

/// One alert as Alertmanager's API takes it: firing from `since` while down; `endsAt`
/// set when the incident ends.
pub(crate) fn alertmanager_alert(n: &Value, text: &str) -> Value {
    let cert = kind(n) == "cert_expiring";
    let mut alert = json!({
        "labels": {
            "alertname": if cert { "CertificateExpiring" } else { "SiteDown" },
            "url": field(n, "url"),
            "severity": if cert { "warning" } else { "critical" },
            "source": "checksite",
        },
        "annotations": {"summary": text, "producers": producers(n)},
        "startsAt": field(n, "since"),
    });
    match kind(n) {
        "down" => {}
        "cert_expiring" => {
            alert["annotations"]["cert_expires_at"] = n["cert_expires_at"].clone();
        }
        // up, stale, removed: the incident ended then.
        _ => alert["endsAt"] = n["since"].clone(),
    }
    alert
}

/// The e-mail's text: the line, then every field of the notification.
fn email_text(n: &Value, text: &str) -> String {
    let mut out = format!("{text}\r\n\r\n");
    if let Some(fields) = n.as_object() {
        for (k, v) in fields {
            let v = match v {
                Value::String(s) => s.clone(),
                Value::Null => continue,
                other => other.to_string(),
            };
            out.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOWN: &str = r#"{"id":"x","kind":"down","url":"https://a.example/","since":"2026-11-30T01:00:00.000Z","producers":["eu","us"],"status":null,"error":"connection refused","error_kind":"connect","checked_at":"2026-11-30T01:00:02.000Z","cert_expires_at":null}"#;

    fn body(format: Format, payload: &str) -> Value {
        serde_json::from_slice(&render(format, payload, Some("KEY")).body).unwrap()
    }

    #[test]
    fn slack_text_says_what_and_where() {
        assert_eq!(
            body(Format::Slack, DOWN)["text"],
            ":red_circle: DOWN https://a.example/ since 2026-11-30T01:00:00.000Z (seen by eu, us; connect: connection refused)"
        );
    }

    #[test]
    fn pagerduty_resolves_what_it_triggered() {
        let down = body(Format::PagerDuty, DOWN);
        let up = body(Format::PagerDuty, &DOWN.replace("\"down\"", "\"up\""));
        assert_eq!(
            (&down["event_action"], &up["event_action"]),
            (&"trigger".into(), &"resolve".into())
        );
        assert_eq!(down["dedup_key"], up["dedup_key"]);
        assert_eq!(down["routing_key"], "KEY");
        assert_eq!(down["payload"]["severity"], "critical");
    }

    #[test]
    fn every_format_has_a_name_and_back() {
        for (name, format) in FORMATS {
            assert_eq!(Format::parse(name), Ok(format));
            assert_eq!(format.name(), name);
        }
        assert!(Format::parse("teams").unwrap_err().contains("msteams"));
    }
}
