//! Where notifications go: the receivers of `CK_ALERT_RECEIVERS` (a JSON file), or the
//! one of `CK_ALERT_WEBHOOK_URL` and `CK_ALERT_FORMAT` (named `default`). Each receiver
//! has a format, and says which notifications it wants: `match`, a regular expression on
//! the URL (PostgreSQL's: the outbox rows are routed in SQL, in the writer's transaction),
//! and `kinds`.
//!
//! This module owns reading and checking that file. It never logs a receiver's URL or
//! key (Slack's and PagerDuty's are secrets): a receiver is named by its `name`.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::ClientConfig;
use serde::Deserialize;

use super::format::Format;
use super::smtp::Mailer;
use super::webhook::Endpoint;
use crate::secret::Secret;
use crate::settings::{ConfigError, Settings, err};

/// The kinds of notification a receiver may ask for.
const KINDS: [&str; 5] = ["down", "up", "cert_expiring", "stale", "removed"];

/// One receiver, checked.
#[derive(Clone)]
pub struct Receiver {
    /// Its name: in the outbox, the log and the metrics (never its URL).
    pub name: String,
    /// How notifications are written for it.
    pub format: Format,
    /// Where they go.
    pub(crate) target: Target,
    /// A regular expression (PostgreSQL's) the URL must match; None: every URL.
    pub matches: Option<String>,
    /// The kinds it wants; None: every kind.
    pub kinds: Option<Vec<String>>,
    /// PagerDuty's `routing_key` (Events API v2).
    pub(crate) routing_key: Option<Secret>,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "receiver {:?} ({:?})", self.name, self.format)
    }
}

/// How a receiver is reached.
#[derive(Clone)]
pub(crate) enum Target {
    /// An HTTP(S) POST.
    Webhook(Endpoint, Arc<ClientConfig>),
    /// An e-mail over SMTP.
    Email(Arc<Mailer>),
}

impl std::fmt::Display for Target {
    /// scheme://host:port only: a path may hold a token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Webhook(endpoint, _) => endpoint.fmt(f),
            Target::Email(mailer) => mailer.fmt(f),
        }
    }
}

/// An entry of `CK_ALERT_RECEIVERS`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    url: String,
    #[serde(default)]
    format: Option<String>,
    #[serde(default, rename = "match")]
    matches: Option<String>,
    #[serde(default)]
    kinds: Option<Vec<String>>,
    #[serde(default)]
    ca: Option<PathBuf>,
    /// PagerDuty: the integration's routing key, or `routing_key_file`.
    #[serde(default)]
    routing_key: Option<String>,
    #[serde(default)]
    routing_key_file: Option<PathBuf>,
    /// E-mail: the sender and the recipients, and the SMTP password's file.
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    to: Option<Vec<String>>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password_file: Option<PathBuf>,
}

/// The receivers the settings give: `CK_ALERT_RECEIVERS`, or `CK_ALERT_WEBHOOK_URL`
/// (with `CK_ALERT_FORMAT` and `CK_ALERT_CA`) as one receiver named `default`; none when
/// neither is set (alerting off).
pub fn from_settings(s: &Settings) -> Result<Vec<Receiver>, ConfigError> {
    match (s.get("CK_ALERT_RECEIVERS"), s.get("CK_ALERT_WEBHOOK_URL")) {
        (Some(_), Some(_)) => err(
            "CK_ALERT_RECEIVERS and CK_ALERT_WEBHOOK_URL are both set: put the webhook in the receivers file",
        ),
        (None, None) => Ok(Vec::new()),
        (None, Some(url)) => {
            let format = Format::parse(s.get("CK_ALERT_FORMAT").unwrap_or("json"))
                .map_err(|e| ConfigError(format!("CK_ALERT_FORMAT: {e}")))?;
            if !matches!(format, Format::Json | Format::Slack) {
                // The other formats need fields only a receivers file has.
                return err(format!(
                    "CK_ALERT_FORMAT={}: give json or slack, or use CK_ALERT_RECEIVERS for the others",
                    format.name()
                ));
            }
            let ca = s.get("CK_ALERT_CA").map(PathBuf::from);
            let tls = super::webhook::tls_config(ca.as_deref())
                .map_err(|e| ConfigError(format!("CK_ALERT_CA: {e}")))?;
            Ok(vec![Receiver {
                name: "default".into(),
                format,
                target: Target::Webhook(Endpoint::parse(url)?, tls),
                matches: None,
                kinds: None,
                routing_key: None,
            }])
        }
        (Some(path), None) => read_file(path),
    }
}

fn read_file(path: &str) -> Result<Vec<Receiver>, ConfigError> {
    let origin = format!("CK_ALERT_RECEIVERS {path}");
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("{origin}: cannot read it: {e}")))?;
    let values: Vec<serde_json::Value> = serde_json::from_str(&text).map_err(|e| {
        ConfigError(format!(
            "{origin}: {e} (expected [{{\"name\": ..., \"url\": ..., \"format\": ...}}, ...])"
        ))
    })?;
    if values.is_empty() {
        return err(format!("{origin}: no receiver: give at least one"));
    }
    let mut names = HashSet::new();
    let mut receivers = Vec::new();
    for (i, value) in values.into_iter().enumerate() {
        let at = format!("{origin}, receiver {}", i + 1);
        let entry: Entry =
            serde_json::from_value(value).map_err(|e| ConfigError(format!("{at}: {e}")))?;
        let receiver = receiver(&at, entry)?;
        if !names.insert(receiver.name.clone()) {
            return err(format!(
                "{at}: the name {:?} is taken: give each receiver its own",
                receiver.name
            ));
        }
        receivers.push(receiver);
    }
    Ok(receivers)
}

/// A secret kept in a file (its surrounding blanks trimmed).
fn secret_file(at: &str, field: &str, path: &PathBuf) -> Result<Secret, ConfigError> {
    std::fs::read_to_string(path)
        .map(|s| Secret::new(s.trim()))
        .map_err(|why| {
            ConfigError(format!(
                "{at}: {field}: cannot read {}: {why}",
                path.display()
            ))
        })
}

/// The routing key (PagerDuty's integration key), given or read from its file.
fn routing_key(at: &str, e: &Entry, format: Format) -> Result<Option<Secret>, ConfigError> {
    match (&e.routing_key, &e.routing_key_file) {
        (Some(k), None) => Ok(Some(Secret::new(k))),
        (None, Some(f)) => Ok(Some(secret_file(at, "routing_key_file", f)?)),
        (None, None) if format == Format::PagerDuty => err(format!(
            "{at}: a pagerduty receiver needs routing_key or routing_key_file"
        )),
        (None, None) => Ok(None),
        (Some(_), Some(_)) => err(format!(
            "{at}: give routing_key or routing_key_file, not both"
        )),
    }
}

/// One entry, checked; `at` names it in errors (never with its URL).
fn receiver(at: &str, e: Entry) -> Result<Receiver, ConfigError> {
    let name_ok = !e.name.is_empty()
        && e.name.len() <= 64
        && e.name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !name_ok {
        return err(format!(
            "{at}: name: give 1 to 64 letters, digits, '-', '_' or '.'"
        ));
    }
    let format = Format::parse(e.format.as_deref().unwrap_or("json"))
        .map_err(|why| ConfigError(format!("{at}: format: {why}")))?;
    if let Some(kinds) = &e.kinds
        && let Some(bad) = kinds.iter().find(|k| !KINDS.contains(&k.as_str()))
    {
        return err(format!("{at}: kinds: {bad:?} is not one of {KINDS:?}"));
    }
    let routing_key = routing_key(at, &e, format)?;
    let target = if format == Format::Email {
        let password = e
            .password_file
            .as_ref()
            .map(|f| secret_file(at, "password_file", f))
            .transpose()?;
        let mailer = Mailer::new(
            at,
            &e.url,
            e.from,
            e.to,
            e.username,
            password,
            e.ca.as_deref(),
        )?;
        Target::Email(Arc::new(mailer))
    } else {
        let tls = super::webhook::tls_config(e.ca.as_deref())
            .map_err(|why| ConfigError(format!("{at}: ca: {why}")))?;
        let endpoint = Endpoint::parse(&e.url).map_err(|why| {
            ConfigError(format!(
                "{at}: url: {}",
                why.0.replace("CK_ALERT_WEBHOOK_URL ", "")
            ))
        })?;
        let endpoint = match format {
            Format::Alertmanager => endpoint.or_path("/api/v2/alerts"),
            _ => endpoint,
        };
        Target::Webhook(endpoint, tls)
    };
    Ok(Receiver {
        name: e.name,
        format,
        target,
        matches: e.matches.filter(|m| !m.is_empty()),
        kinds: e.kinds,
        routing_key,
    })
}
