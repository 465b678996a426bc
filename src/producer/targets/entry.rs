//! One target: what a `CK_TARGETS` entry (or a targets topic entry) may say, checked
//! into a [`Target`] over the defaults (`CK_CHECK_DELAY`, `CK_TIMEOUT_MS`,
//! `CK_CONTENT_REGEX`); and whole lists of entries, all or nothing.
//!
//! Every error is one line that names the entry and the field, and says what to fix.
//! This module never reads a file or talks to Kafka.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use regex::Regex;
use serde::Deserialize;

use crate::settings::{ConfigError, Settings, err};

/// One site to check.
#[derive(Debug, Clone)]
pub struct Target {
    /// The URL as configured (the events' key).
    pub url: String,
    /// Time between two checks' starts.
    pub interval: Duration,
    /// Searched in a 2xx body, `.` matching newlines.
    pub regex: Option<Regex>,
    /// Time allowed for the whole check.
    pub timeout: Duration,
    /// HTTP method (GET unless the targets file says otherwise).
    pub method: String,
    /// Extra request headers.
    pub headers: Vec<(String, String)>,
    /// None: 2xx and 3xx count as up.
    pub expect_status: Option<Vec<u16>>,
    /// Its name on the status page (`"name"`), instead of its URL.
    pub name: Option<String>,
    /// Its section of the status page (`"group"`).
    pub group: Option<String>,
    /// False: checked, stored and alerted, never shown on the page (`"public": false`).
    pub public: bool,
}

/// One entry of the targets file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetEntry {
    url: String,
    interval_s: Option<f64>,
    regex: Option<String>,
    timeout_ms: Option<u64>,
    method: Option<String>,
    #[serde(default)]
    headers: HashMap<String, String>,
    expect_status: Option<StatusList>,
    /// The vantage points that check it (the targets topic); None: every one.
    producers: Option<Vec<String>>,
    name: Option<String>,
    group: Option<String>,
    public: Option<bool>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum StatusList {
    One(u16),
    Many(Vec<u16>),
}

fn seconds(var: &str, raw: f64) -> Result<Duration, ConfigError> {
    if !(raw.is_finite() && (0.1..=86_400.0).contains(&raw)) {
        return err(format!(
            "{var}={raw} is out of range: give seconds between 0.1 and 86400"
        ));
    }
    Ok(Duration::from_secs_f64(raw))
}

fn compile_regex(origin: &str, pattern: &str) -> Result<Regex, ConfigError> {
    regex::RegexBuilder::new(pattern)
        .dot_matches_new_line(true) // as the Python program's re.DOTALL
        .size_limit(1 << 22)
        .build()
        .map_err(|e| {
            let first = e
                .to_string()
                .lines()
                .last()
                .unwrap_or("")
                .trim()
                .to_string();
            ConfigError(format!(
                "{origin}: {pattern:?} is not a valid regex: {first}"
            ))
        })
}

pub(crate) fn check_url(origin: &str, url: &str) -> Result<(), ConfigError> {
    use crate::event::MAX_URL_BYTES;
    let shown = || crate::secret::redact_url(url);
    if url.len() > MAX_URL_BYTES {
        let start: String = shown().chars().take(60).collect();
        return err(format!(
            "{origin}: the URL {start:?}... is {} bytes long: give one of {MAX_URL_BYTES} bytes at most",
            url.len()
        ));
    }
    match url::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        _ => err(format!(
            "{origin}: {:?} is not an http:// or https:// URL with a host",
            shown()
        )),
    }
}

const METHODS: [&str; 4] = ["GET", "HEAD", "POST", "OPTIONS"];
/// What every target gets unless its entry in the targets file says otherwise
/// (`CK_CHECK_DELAY`, `CK_TIMEOUT_MS`, `CK_CONTENT_REGEX`); the URL is left empty.
pub(crate) fn target_defaults(s: &Settings) -> Result<Target, ConfigError> {
    let interval = seconds(
        "CK_CHECK_DELAY",
        s.parse("CK_CHECK_DELAY", 60.0, "seconds, e.g. 30 or 0.5")?,
    )?;
    let timeout_ms: u64 = s.parse("CK_TIMEOUT_MS", 10_000, "milliseconds, e.g. 10000")?;
    if !(100..=600_000).contains(&timeout_ms) {
        return err(format!(
            "CK_TIMEOUT_MS={timeout_ms} is out of range: give 100 to 600000"
        ));
    }
    let regex = match s.get("CK_CONTENT_REGEX") {
        Some(p) => Some(compile_regex("CK_CONTENT_REGEX", p)?),
        None => None,
    };
    Ok(Target {
        url: String::new(),
        interval,
        regex,
        timeout: Duration::from_millis(timeout_ms),
        method: "GET".into(),
        headers: Vec::new(),
        expect_status: None,
        name: None,
        group: None,
        public: true,
    })
}

/// One entry checked: the target, the vantage points it is meant for, and the entry as
/// canonical JSON (what the targets topic stores and compares).
#[derive(Debug, Clone)]
pub struct ParsedEntry {
    /// The target, over the defaults.
    pub target: Target,
    /// `"producers"`: the vantage points (`CK_PRODUCER_ID`) that check it; None: all.
    pub producers: Option<Vec<String>>,
    /// The entry as given, keys sorted.
    pub json: serde_json::Value,
}

/// A list of entries (a JSON array, as a `CK_TARGETS` file holds), all or nothing: the
/// first invalid entry (bad URL, bad regex, unknown field, a URL given twice) is the
/// error, naming `origin`, the entry's number and its field.
pub fn parse_list(
    text: &str,
    origin: &str,
    defaults: &Target,
) -> Result<Vec<ParsedEntry>, ConfigError> {
    let values: Vec<serde_json::Value> = serde_json::from_str(text).map_err(|e| {
        ConfigError(format!(
            "{origin}: {e} (expected [{{\"url\": \"https://...\"}}, ...])"
        ))
    })?;
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut list = Vec::with_capacity(values.len());
    for (i, value) in values.into_iter().enumerate() {
        let at = format!("{origin}, entry {}", i + 1);
        let parsed = parse_entry(value, &at, defaults)?;
        if let Some(first) = seen.insert(parsed.target.url.clone(), i + 1) {
            return err(format!(
                "{at}: url {:?} is also entry {first}: give each URL once",
                crate::secret::redact_url(&parsed.target.url)
            ));
        }
        list.push(parsed);
    }
    Ok(list)
}

/// One entry (a JSON object) over `defaults`; `origin` names it in errors.
pub fn parse_entry(
    value: serde_json::Value,
    origin: &str,
    defaults: &Target,
) -> Result<ParsedEntry, ConfigError> {
    // Through a map with sorted keys: the same entry is the same JSON, whatever its order.
    let json: serde_json::Value = match value {
        serde_json::Value::Object(map) => {
            let sorted: BTreeMap<String, serde_json::Value> = map.into_iter().collect();
            serde_json::Value::Object(sorted.into_iter().collect())
        }
        other => {
            return err(format!(
                "{origin}: {other} is not an object: give {{\"url\": \"https://...\", ...}}"
            ));
        }
    };
    let entry: TargetEntry = serde_json::from_value(json.clone())
        .map_err(|e| ConfigError(format!("{origin}: {}", name_the_field(&json, &e))))?;
    let producers = entry.producers.clone();
    if producers
        .as_ref()
        .is_some_and(|p| p.iter().any(|id| id.trim().is_empty()))
    {
        return err(format!(
            "{origin}: producers must name vantage points (CK_PRODUCER_ID), not be empty"
        ));
    }
    Ok(ParsedEntry {
        target: entry.into_target(origin, defaults)?,
        producers,
        json,
    })
}

/// A `name` or `group`: trimmed, not empty, at most `most` characters, one line.
fn label(
    origin: &str,
    field: &str,
    value: Option<String>,
    most: usize,
) -> Result<Option<String>, ConfigError> {
    let Some(v) = value else { return Ok(None) };
    let v = v.trim().to_string();
    if v.is_empty() || v.chars().count() > most || v.chars().any(char::is_control) {
        return err(format!(
            "{origin}: {field} must be 1 to {most} characters on one line"
        ));
    }
    Ok(Some(v))
}

/// serde names the field of an unknown or missing one, not of one of the wrong type
/// ("invalid type: string, expected f64"): find it by trying the fields one at a time.
fn name_the_field(json: &serde_json::Value, e: &serde_json::Error) -> String {
    let said = e.to_string();
    if let serde_json::Value::Object(map) = json {
        for (k, v) in map.iter().filter(|(k, _)| k.as_str() != "url") {
            let one = serde_json::json!({"url": "http://x.example/", k.as_str(): v});
            if serde_json::from_value::<TargetEntry>(one).is_err() {
                return format!("{k}: {said}");
            }
        }
    }
    said
}

impl Target {
    /// Whether `other` checks the same way (the regex compared by its pattern).
    pub fn same_as(&self, other: &Target) -> bool {
        self.url == other.url
            && self.interval == other.interval
            && self.regex.as_ref().map(Regex::as_str) == other.regex.as_ref().map(Regex::as_str)
            && self.timeout == other.timeout
            && self.method == other.method
            && self.headers == other.headers
            && self.expect_status == other.expect_status
            && self.name == other.name
            && self.group == other.group
            && self.public == other.public
    }
}

impl TargetEntry {
    /// This entry as a target; `origin` names it in errors.
    fn into_target(self, origin: &str, defaults: &Target) -> Result<Target, ConfigError> {
        check_url(origin, &self.url)?;
        let mut t = Target {
            url: self.url,
            ..defaults.clone()
        };
        if let Some(secs) = self.interval_s {
            t.interval = seconds(&format!("{origin}: interval_s"), secs)?;
        }
        if let Some(p) = &self.regex {
            t.regex = Some(compile_regex(origin, p)?);
        }
        if let Some(ms) = self.timeout_ms {
            if !(100..=600_000).contains(&ms) {
                return err(format!(
                    "{origin}: timeout_ms={ms} is out of range: give 100 to 600000"
                ));
            }
            t.timeout = Duration::from_millis(ms);
        }
        if let Some(m) = self.method {
            let m = m.to_ascii_uppercase();
            if !METHODS.contains(&m.as_str()) {
                return err(format!(
                    "{origin}: method {m:?} is not supported: use one of {METHODS:?}"
                ));
            }
            t.method = m;
        }
        let mut headers: Vec<(String, String)> = self.headers.into_iter().collect();
        headers.sort();
        for (k, v) in &headers {
            if hyper::header::HeaderName::from_bytes(k.as_bytes()).is_err()
                || hyper::header::HeaderValue::from_str(v).is_err()
            {
                return err(format!("{origin}: header {k:?} is not a valid HTTP header"));
            }
        }
        t.headers = headers;
        t.expect_status = match self.expect_status {
            None => None,
            Some(StatusList::One(c)) => Some(vec![c]),
            Some(StatusList::Many(v)) => Some(v),
        };
        t.name = label(origin, "name", self.name, 200)?;
        t.group = label(origin, "group", self.group, 100)?;
        t.public = self.public.unwrap_or(true);
        if let Some(codes) = &t.expect_status
            && (codes.is_empty() || codes.iter().any(|c| !(100..=599).contains(c)))
        {
            return err(format!(
                "{origin}: expect_status must hold HTTP status codes (100-599)"
            ));
        }
        Ok(t)
    }
}
