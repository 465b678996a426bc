//! `checksite-producer targets put|add|remove|list`: the targets topic managed with the
//! same `CK_*` settings as the producer (Kafka, mutual TLS, SASL).
//!
//! All or nothing: every entry is checked before anything is written. Only differences
//! are written. This module never checks a site.

use std::collections::BTreeMap;

use argh::FromArgs;

use super::entry::{self, Target};
use crate::kafka::{KafkaError, KafkaSettings};
use crate::settings::{ConfigError, Settings};
use crate::target_list::{Entries, ListTopic};

crate::kafka::settings::args_with_kafka_flags! {
/// `checksite-producer targets`.
#[derive(FromArgs, Debug)]
#[argh(description = "Manage the list of targets every vantage point follows (CK_TARGETS_TOPIC).\n\
Kafka settings come from the CK_* variables, as for checking; the flags below override them.")]
pub struct TargetsArgs {
    /// the compacted topic that holds the list (CK_TARGETS_TOPIC)
    #[argh(option)]
    pub targets_topic: Option<String>,
    /// what to do
    #[argh(subcommand)]
    pub command: TargetsCommand,
}
}

/// What `targets` does.
#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum TargetsCommand {
    /// Make the list equal to a file.
    Put(PutArgs),
    /// Add or change one target.
    Add(AddArgs),
    /// Remove one target.
    Remove(RemoveArgs),
    /// Print the list.
    List(ListArgs),
}

/// `targets put FILE`.
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "put",
    description = "make the list equal to FILE (the CK_TARGETS format): write the differences, remove what is gone"
)]
pub struct PutArgs {
    /// the JSON file of targets ([{"url": ..., ...}])
    #[argh(positional)]
    pub file: String,
}

/// `targets add URL`.
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "add",
    description = "add a target to the list, or replace its entry"
)]
pub struct AddArgs {
    /// the URL to check
    #[argh(positional)]
    pub url: String,
    /// seconds between two checks
    #[argh(option)]
    pub interval: Option<f64>,
    /// regex searched in a 2xx body
    #[argh(option)]
    pub regex: Option<String>,
    /// time allowed for a check, ms
    #[argh(option)]
    pub timeout_ms: Option<u64>,
    /// GET, HEAD, POST or OPTIONS
    #[argh(option)]
    pub method: Option<String>,
    /// the status codes that count as up, comma-separated
    #[argh(option)]
    pub expect_status: Option<String>,
    /// a request header 'Name: value' (may repeat)
    #[argh(option)]
    pub header: Vec<String>,
    /// the vantage points (CK_PRODUCER_ID) that check it, comma-separated; default: all
    #[argh(option)]
    pub producers: Option<String>,
}

/// `targets remove URL`.
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "remove",
    description = "remove a target from the list"
)]
pub struct RemoveArgs {
    /// the URL, as listed
    #[argh(positional)]
    pub url: String,
}

/// `targets list`.
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "list",
    description = "print the list as CK_TARGETS JSON, sorted by URL"
)]
pub struct ListArgs {}

/// Why a `targets` command failed: bad input (exit 2) or Kafka (exit 1).
#[derive(Debug)]
pub enum TargetsError {
    /// A setting or an entry is invalid; nothing was written.
    Invalid(ConfigError),
    /// Kafka could not be used.
    Kafka(KafkaError),
}

impl std::fmt::Display for TargetsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TargetsError::Invalid(e) => e.fmt(f),
            TargetsError::Kafka(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for TargetsError {}

impl From<ConfigError> for TargetsError {
    fn from(e: ConfigError) -> TargetsError {
        TargetsError::Invalid(e)
    }
}

impl From<KafkaError> for TargetsError {
    fn from(e: KafkaError) -> TargetsError {
        TargetsError::Kafka(e)
    }
}

impl TargetsArgs {
    /// Run the command with the flags over `settings`; what to print on success.
    pub async fn run(self, mut settings: Settings) -> Result<String, TargetsError> {
        crate::kafka::settings::flags(
            &mut settings,
            self.kafka_servers,
            self.kafka_ssl,
            self.topic,
        );
        settings.flag("CK_TARGETS_TOPIC", self.targets_topic);
        let Some(topic) = crate::kafka::settings::targets_topic(&settings)? else {
            return Err(ConfigError(
                "CK_TARGETS_TOPIC is not set: give the targets topic (or --targets-topic NAME)"
                    .into(),
            )
            .into());
        };
        let kafka = KafkaSettings::from_settings(&settings)?;
        let defaults = entry::target_defaults(&settings)?;
        let replication: i16 = settings.parse("CK_KAFKA_REPLICATION", -1, "a replica count")?;
        // Checked before Kafka is asked anything: bad input writes nothing.
        let wanted = match &self.command {
            TargetsCommand::Put(put) => Some(read_file(&put.file, &defaults)?),
            TargetsCommand::Add(add) => Some(added_entry(add, &defaults)?),
            TargetsCommand::Remove(_) | TargetsCommand::List(_) => None,
        };
        let create = matches!(
            self.command,
            TargetsCommand::Put(_) | TargetsCommand::Add(_)
        );
        let mut list_topic =
            match ListTopic::open(&kafka, &topic, create.then_some(replication)).await {
                Ok(t) => t,
                // Nothing was ever put: an empty list.
                Err(KafkaError::NoTopic { .. }) if !create => {
                    return Ok(match self.command {
                        TargetsCommand::List(_) => "[]\n".into(),
                        _ => Changes::default().summary(),
                    });
                }
                Err(e) => return Err(e.into()),
            };
        let mut current = Entries::new();
        list_topic.read_to_end(&mut current).await?;
        let listed = listed_json(&current);
        let changes = match (&self.command, wanted) {
            (TargetsCommand::Put(_), Some(wanted)) => diff(&listed, &wanted, true),
            (TargetsCommand::Add(_), Some(wanted)) => diff(&listed, &wanted, false),
            (TargetsCommand::Remove(r), _) => Changes::removing(&listed, &r.url),
            _ => return Ok(print_list(&listed)),
        };
        list_topic.write(&changes.records).await?;
        Ok(changes.summary())
    }
}

/// The listed entries (tombstones left out) as JSON; one that is not JSON is said and left out.
fn listed_json(current: &Entries) -> BTreeMap<String, serde_json::Value> {
    let mut listed = BTreeMap::new();
    for (url, l) in current {
        let Some(bytes) = &l.entry else { continue };
        match serde_json::from_slice(bytes) {
            Ok(v) => {
                listed.insert(url.clone(), v);
            }
            Err(e) => eprintln!(
                "warning: the listed entry of {} is not JSON ({e}): `targets put` replaces it",
                crate::secret::redact_url(url)
            ),
        }
    }
    listed
}

/// The targets file at `path`, every entry checked.
fn read_file(
    path: &str,
    defaults: &Target,
) -> Result<BTreeMap<String, serde_json::Value>, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("cannot read targets file {path}: {e}")))?;
    let list = entry::parse_list(&text, &format!("targets file {path}"), defaults)?;
    Ok(list.into_iter().map(|e| (e.target.url, e.json)).collect())
}

/// `targets add`'s entry, checked as a file's would be.
fn added_entry(
    add: &AddArgs,
    defaults: &Target,
) -> Result<BTreeMap<String, serde_json::Value>, ConfigError> {
    let mut e = serde_json::Map::new();
    e.insert("url".into(), add.url.clone().into());
    if let Some(s) = add.interval {
        e.insert("interval_s".into(), s.into());
    }
    if let Some(r) = &add.regex {
        e.insert("regex".into(), r.clone().into());
    }
    if let Some(ms) = add.timeout_ms {
        e.insert("timeout_ms".into(), ms.into());
    }
    if let Some(m) = &add.method {
        e.insert("method".into(), m.clone().into());
    }
    if let Some(codes) = &add.expect_status {
        let codes: Result<Vec<u16>, _> = codes.split(',').map(|c| c.trim().parse()).collect();
        let codes = codes.map_err(|_| {
            ConfigError("--expect-status: give status codes, comma-separated, e.g. 200,204".into())
        })?;
        e.insert("expect_status".into(), codes.into());
    }
    if !add.header.is_empty() {
        let mut headers = serde_json::Map::new();
        for h in &add.header {
            let Some((k, v)) = h.split_once(':') else {
                return Err(ConfigError(format!("--header {h:?}: give 'Name: value'")));
            };
            headers.insert(k.trim().to_string(), v.trim().into());
        }
        e.insert("headers".into(), headers.into());
    }
    if let Some(p) = &add.producers {
        let ids: Vec<serde_json::Value> = p.split(',').map(|id| id.trim().into()).collect();
        e.insert("producers".into(), ids.into());
    }
    let parsed = entry::parse_entry(e.into(), "targets add", defaults)?;
    Ok(BTreeMap::from([(parsed.target.url, parsed.json)]))
}

/// What a command writes, and what it found.
#[derive(Debug, Default, PartialEq)]
struct Changes {
    records: Vec<(String, Option<Vec<u8>>)>,
    added: usize,
    changed: usize,
    removed: usize,
    unchanged: usize,
}

impl Changes {
    fn removing(listed: &BTreeMap<String, serde_json::Value>, url: &str) -> Changes {
        let mut c = Changes::default();
        if listed.contains_key(url) {
            c.records.push((url.to_string(), None));
            c.removed = 1;
        }
        c
    }

    fn summary(&self) -> String {
        format!(
            "{} added, {} changed, {} removed, {} unchanged\n",
            self.added, self.changed, self.removed, self.unchanged
        )
    }
}

/// The records that turn `listed` into `wanted`; with `whole`, what `wanted` lacks is removed.
fn diff(
    listed: &BTreeMap<String, serde_json::Value>,
    wanted: &BTreeMap<String, serde_json::Value>,
    whole: bool,
) -> Changes {
    let mut c = Changes::default();
    for (url, entry) in wanted {
        match listed.get(url) {
            Some(old) if old == entry => {
                c.unchanged += 1;
                continue;
            }
            Some(_) => c.changed += 1,
            None => c.added += 1,
        }
        c.records
            .push((url.clone(), Some(entry.to_string().into_bytes())));
    }
    if whole {
        for url in listed.keys().filter(|u| !wanted.contains_key(*u)) {
            c.records.push((url.clone(), None));
            c.removed += 1;
        }
    }
    c
}

/// The list as a `CK_TARGETS` file: sorted by URL, so that `list > f; put f` changes nothing.
fn print_list(listed: &BTreeMap<String, serde_json::Value>) -> String {
    let entries: Vec<&serde_json::Value> = listed.values().collect();
    let mut out = serde_json::to_string_pretty(&entries).unwrap_or_else(|_| "[]".into());
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(pairs: &[(&str, serde_json::Value)]) -> BTreeMap<String, serde_json::Value> {
        pairs
            .iter()
            .map(|(u, v)| (u.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn put_writes_only_the_differences() {
        let listed = list(&[
            ("https://a/", serde_json::json!({"url": "https://a/"})),
            (
                "https://b/",
                serde_json::json!({"url": "https://b/", "interval_s": 5}),
            ),
            ("https://gone/", serde_json::json!({"url": "https://gone/"})),
        ]);
        let wanted = list(&[
            ("https://a/", serde_json::json!({"url": "https://a/"})),
            (
                "https://b/",
                serde_json::json!({"url": "https://b/", "interval_s": 6}),
            ),
            ("https://new/", serde_json::json!({"url": "https://new/"})),
        ]);
        let c = diff(&listed, &wanted, true);
        assert_eq!(c.summary(), "1 added, 1 changed, 1 removed, 1 unchanged\n");
        let urls: Vec<(&str, bool)> = c
            .records
            .iter()
            .map(|(u, e)| (u.as_str(), e.is_some()))
            .collect();
        assert_eq!(
            urls,
            [
                ("https://b/", true),
                ("https://new/", true),
                ("https://gone/", false)
            ]
        );
        // add: what it does not name stays.
        let c = diff(&listed, &wanted, false);
        assert_eq!(c.removed, 0);
        assert_eq!(diff(&wanted, &wanted, true).records, vec![]);
    }
}
