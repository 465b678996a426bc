//! Configuration: `CK_*` environment variables (compatible with the Python checksite),
//! command-line flags (which override them) and the targets file, turned into a
//! validated [`ProducerConfig`] or [`ConsumerConfig`].
//!
//! This module owns every rule about what a setting may be. Every error is one line
//! that names the setting and says what to fix. It reads files (PEM, targets) to
//! validate them, but never connects to anything.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use argh::FromArgs;
use regex::Regex;
use serde::Deserialize;

use crate::secret::Secret;
use crate::tls::ClientIdentity;

/// A setting that cannot be used: the message says which and what to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

fn err<T>(msg: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(msg.into()))
}

/// Where settings come from: flags first, then the environment. Empty values count as unset.
pub struct Settings {
    flags: HashMap<&'static str, String>,
    env: HashMap<String, String>,
}

impl Settings {
    pub fn new(env: impl IntoIterator<Item = (String, String)>) -> Settings {
        Settings {
            flags: HashMap::new(),
            env: env.into_iter().collect(),
        }
    }

    pub fn from_process_env() -> Settings {
        Settings::new(std::env::vars())
    }

    /// A flag's value, recorded under the name of the variable it overrides.
    pub fn flag(&mut self, var: &'static str, value: Option<impl ToString>) {
        if let Some(v) = value {
            self.flags.insert(var, v.to_string());
        }
    }

    pub fn get(&self, var: &str) -> Option<&str> {
        self.flags
            .get(var)
            .or_else(|| self.env.get(var))
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
    }

    fn parse<T: std::str::FromStr>(
        &self,
        var: &str,
        default: T,
        what: &str,
    ) -> Result<T, ConfigError> {
        match self.get(var) {
            None => Ok(default),
            Some(raw) => raw
                .parse()
                .or_else(|_| err(format!("{var}={raw:?} is not valid: expected {what}"))),
        }
    }
}

// ---------------------------------------------------------------- Kafka

/// SASL over TLS, the alternative to client certificates that Aiven offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    Plain,
    ScramSha256,
    ScramSha512,
}

/// SASL credentials; the password prints as `<hidden>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslSettings {
    pub mechanism: SaslMechanism,
    pub username: String,
    pub password: Secret,
}

/// How to reach the Kafka cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaSettings {
    pub servers: Vec<String>,
    pub topic: String,
    /// None: plaintext. Some: TLS, verified against `ca` (or the web PKI roots).
    pub tls: Option<KafkaTls>,
    pub sasl: Option<SaslSettings>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaTls {
    pub ca: Option<PathBuf>,
    pub identity: Option<ClientIdentity>,
}

pub const DEFAULT_TOPIC: &str = "checksite";

impl KafkaSettings {
    pub fn from_settings(s: &Settings) -> Result<KafkaSettings, ConfigError> {
        let servers: Vec<String> = s
            .get("CK_KAFKA_SERVERS")
            .unwrap_or("")
            .split([',', ' '])
            .filter(|x| !x.is_empty())
            .map(str::to_string)
            .collect();
        if servers.is_empty() {
            return err(
                "CK_KAFKA_SERVERS is not set: give the bootstrap server(s) as host:port[,host:port]",
            );
        }
        for server in &servers {
            let port_ok = server
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
            if !port_ok {
                return err(format!(
                    "CK_KAFKA_SERVERS: {server:?} is not host:port (Aiven shows it as the service URI)"
                ));
            }
        }
        let topic = s.get("CK_KAFKA_TOPIC").unwrap_or(DEFAULT_TOPIC).to_string();
        let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if topic.len() > 249 || !topic.chars().all(legal) || topic == "." || topic == ".." {
            return err(format!(
                "CK_KAFKA_TOPIC={topic:?} is not a legal Kafka topic name (letters, digits, '.', '_', '-'; at most 249)"
            ));
        }
        let files: Vec<PathBuf> = s
            .get("CK_KAFKA_SSL")
            .unwrap_or("")
            .split_whitespace()
            .map(PathBuf::from)
            .collect();
        let sasl = sasl_from_settings(s)?;
        let tls = match files.as_slice() {
            [] if sasl.is_some() => Some(KafkaTls {
                ca: None,
                identity: None,
            }),
            [] => None,
            [ca] => Some(KafkaTls {
                ca: Some(ca.clone()),
                identity: None,
            }),
            [ca, cert, key] => Some(KafkaTls {
                ca: Some(ca.clone()),
                identity: Some(ClientIdentity {
                    cert: cert.clone(),
                    key: key.clone(),
                }),
            }),
            _ => {
                return err(format!(
                    "CK_KAFKA_SSL has {} file names: give 'ca.pem service.cert service.key' (mutual TLS) or 'ca.pem' (with SASL)",
                    files.len()
                ));
            }
        };
        if let (
            Some(_),
            Some(KafkaTls {
                identity: Some(_), ..
            }),
        ) = (&sasl, &tls)
        {
            return err(
                "both SASL (CK_KAFKA_SASL_MECHANISM) and a client certificate (CK_KAFKA_SSL with 3 files) are set: choose one",
            );
        }
        let settings = KafkaSettings {
            servers,
            topic,
            tls,
            sasl,
        };
        // Read and check the PEM files now, so a wrong file stops us at start with a clear line.
        settings.tls_config()?;
        Ok(settings)
    }

    /// The rustls config for the brokers, or None for plaintext.
    pub fn tls_config(&self) -> Result<Option<rustls::ClientConfig>, ConfigError> {
        match &self.tls {
            None => Ok(None),
            Some(t) => crate::tls::client_config(t.ca.as_deref(), t.identity.as_ref())
                .map(Some)
                .map_err(|e| ConfigError(format!("CK_KAFKA_SSL: {e}"))),
        }
    }
}

fn sasl_from_settings(s: &Settings) -> Result<Option<SaslSettings>, ConfigError> {
    let Some(raw) = s.get("CK_KAFKA_SASL_MECHANISM") else {
        return Ok(None);
    };
    let mechanism = match raw.to_ascii_uppercase().as_str() {
        "PLAIN" => SaslMechanism::Plain,
        "SCRAM-SHA-256" => SaslMechanism::ScramSha256,
        "SCRAM-SHA-512" => SaslMechanism::ScramSha512,
        _ => {
            return err(format!(
                "CK_KAFKA_SASL_MECHANISM={raw:?} is not supported: use PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"
            ));
        }
    };
    let Some(username) = s.get("CK_KAFKA_SASL_USERNAME") else {
        return err("CK_KAFKA_SASL_MECHANISM is set but CK_KAFKA_SASL_USERNAME is not");
    };
    let Some(password) = s.get("CK_KAFKA_SASL_PASSWORD") else {
        return err("CK_KAFKA_SASL_MECHANISM is set but CK_KAFKA_SASL_PASSWORD is not");
    };
    Ok(Some(SaslSettings {
        mechanism,
        username: username.to_string(),
        password: Secret::new(password),
    }))
}

// ---------------------------------------------------------------- producer

/// One site to check.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: String,
    pub interval: Duration,
    pub regex: Option<Regex>,
    pub timeout: Duration,
    pub method: String,
    pub headers: Vec<(String, String)>,
    /// None: 2xx and 3xx count as up.
    pub expect_status: Option<Vec<u16>>,
}

/// How each check behaves, whatever the target.
#[derive(Debug, Clone)]
pub struct ProbeSettings {
    pub connect_timeout: Duration,
    pub max_redirects: u32,
    pub body_cap: u64,
    /// Extra CA for checked sites (e.g. an internal CA); the web PKI roots are always trusted.
    pub site_ca: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
}

#[derive(Debug, Clone)]
pub struct PublishSettings {
    pub kafka: KafkaSettings,
    pub partitions: i32,
    pub replication: i16,
    pub compression: Compression,
    pub buffer_events: usize,
    pub linger: Duration,
}

#[derive(Debug, Clone)]
pub struct ProducerConfig {
    pub targets: Vec<Target>,
    pub probe: ProbeSettings,
    pub concurrency: usize,
    pub producer_id: String,
    /// None with `--once`, which prints events instead of publishing them.
    pub publish: Option<PublishSettings>,
}

/// Command line of checksite-producer. Every flag overrides the variable it names.
#[derive(FromArgs, Debug)]
#[argh(
    description = "Check web sites on a schedule and publish one JSON event per check to Kafka.\n\
Settings come from CK_* environment variables (see config.env.in); flags override them."
)]
pub struct ProducerArgs {
    /// check each target once, print one JSON event per line, exit 0 if all are up, 1 if any is down
    #[argh(switch)]
    pub once: bool,
    /// JSON file of targets ([{"url": ..., "interval_s": ..., ...}]) (CK_TARGETS)
    #[argh(option)]
    pub targets: Option<String>,
    /// seconds between the starts of two checks of a site (CK_CHECK_DELAY, default 60)
    #[argh(option)]
    pub interval: Option<String>,
    /// regex searched in the body of a 2xx response, '.' matching newlines (CK_CONTENT_REGEX)
    #[argh(option)]
    pub regex: Option<String>,
    /// total time allowed for one check, ms (CK_TIMEOUT_MS, default 10000)
    #[argh(option)]
    pub timeout_ms: Option<String>,
    /// time allowed to connect, ms (CK_CONNECT_TIMEOUT_MS, default 5000)
    #[argh(option)]
    pub connect_timeout_ms: Option<String>,
    /// redirects followed, 0 = none (CK_MAX_REDIRECTS, default 5)
    #[argh(option)]
    pub max_redirects: Option<String>,
    /// most body bytes read per check (CK_BODY_CAP_BYTES, default 4194304)
    #[argh(option)]
    pub body_cap: Option<String>,
    /// most checks running at once (CK_CONCURRENCY, default 64)
    #[argh(option)]
    pub concurrency: Option<String>,
    /// extra CA file trusted for the checked sites (CK_SITE_CA)
    #[argh(option)]
    pub site_ca: Option<String>,
    /// bootstrap servers host:port[,host:port] (CK_KAFKA_SERVERS)
    #[argh(option)]
    pub kafka_servers: Option<String>,
    /// TLS files: 'ca.pem service.cert service.key', or 'ca.pem' with SASL (CK_KAFKA_SSL)
    #[argh(option)]
    pub kafka_ssl: Option<String>,
    /// topic (CK_KAFKA_TOPIC, default checksite)
    #[argh(option)]
    pub topic: Option<String>,
    /// partitions of a topic the producer creates (CK_KAFKA_PARTITIONS, default 3)
    #[argh(option)]
    pub partitions: Option<String>,
    /// none, gzip or snappy (CK_KAFKA_COMPRESSION, default snappy)
    #[argh(option)]
    pub compression: Option<String>,
    /// most events kept while Kafka is unreachable; the oldest go first (CK_BUFFER_EVENTS, default 100000)
    #[argh(option)]
    pub buffer_events: Option<String>,
    /// name of this vantage point in every event (CK_PRODUCER_ID, default the host name)
    #[argh(option)]
    pub producer_id: Option<String>,
    /// print the version and exit
    #[argh(switch)]
    pub version: bool,
    /// URLs to check (override CK_SITE_URL)
    #[argh(positional)]
    pub urls: Vec<String>,
}

impl ProducerArgs {
    pub fn into_settings(self, mut s: Settings) -> Settings {
        s.flag("CK_TARGETS", self.targets);
        s.flag("CK_CHECK_DELAY", self.interval);
        s.flag("CK_CONTENT_REGEX", self.regex);
        s.flag("CK_TIMEOUT_MS", self.timeout_ms);
        s.flag("CK_CONNECT_TIMEOUT_MS", self.connect_timeout_ms);
        s.flag("CK_MAX_REDIRECTS", self.max_redirects);
        s.flag("CK_BODY_CAP_BYTES", self.body_cap);
        s.flag("CK_CONCURRENCY", self.concurrency);
        s.flag("CK_SITE_CA", self.site_ca);
        s.flag("CK_KAFKA_SERVERS", self.kafka_servers);
        s.flag("CK_KAFKA_SSL", self.kafka_ssl);
        s.flag("CK_KAFKA_TOPIC", self.topic);
        s.flag("CK_KAFKA_PARTITIONS", self.partitions);
        s.flag("CK_KAFKA_COMPRESSION", self.compression);
        s.flag("CK_BUFFER_EVENTS", self.buffer_events);
        s.flag("CK_PRODUCER_ID", self.producer_id);
        if !self.urls.is_empty() {
            s.flag("CK_SITE_URL", Some(self.urls.join(" ")));
        }
        s
    }
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

fn check_url(origin: &str, url: &str) -> Result<(), ConfigError> {
    let parsed: Result<ureq::http::Uri, _> = url.parse();
    match parsed {
        Ok(u)
            if matches!(u.scheme_str(), Some("http") | Some("https"))
                && u.host().is_some_and(|h| !h.is_empty()) =>
        {
            Ok(())
        }
        _ => err(format!(
            "{origin}: {:?} is not an http:// or https:// URL with a host",
            crate::secret::redact_url(url)
        )),
    }
}

const METHODS: [&str; 4] = ["GET", "HEAD", "POST", "OPTIONS"];

impl ProducerConfig {
    pub fn from_settings(s: &Settings, once: bool) -> Result<ProducerConfig, ConfigError> {
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
        let timeout = Duration::from_millis(timeout_ms);
        let default_regex = match s.get("CK_CONTENT_REGEX") {
            Some(p) => Some(compile_regex("CK_CONTENT_REGEX", p)?),
            None => None,
        };
        let default_target = |url: &str| Target {
            url: url.to_string(),
            interval,
            regex: default_regex.clone(),
            timeout,
            method: "GET".into(),
            headers: Vec::new(),
            expect_status: None,
        };
        let mut targets = Vec::new();
        for url in s.get("CK_SITE_URL").unwrap_or("").split_whitespace() {
            check_url("CK_SITE_URL", url)?;
            targets.push(default_target(url));
        }
        if let Some(path) = s.get("CK_TARGETS") {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError(format!("CK_TARGETS: cannot read targets file {path}: {e}"))
            })?;
            let entries: Vec<TargetEntry> = serde_json::from_str(&text).map_err(|e| {
                ConfigError(format!(
                    "targets file {path}: {e} (expected [{{\"url\": \"https://...\"}}, ...])"
                ))
            })?;
            for (i, e) in entries.into_iter().enumerate() {
                let origin = format!("targets file {path}, entry {}", i + 1);
                check_url(&origin, &e.url)?;
                let mut t = default_target(&e.url);
                if let Some(secs) = e.interval_s {
                    t.interval = seconds(&format!("{origin}: interval_s"), secs)?;
                }
                if let Some(p) = &e.regex {
                    t.regex = Some(compile_regex(&origin, p)?);
                }
                if let Some(ms) = e.timeout_ms {
                    if !(100..=600_000).contains(&ms) {
                        return err(format!(
                            "{origin}: timeout_ms={ms} is out of range: give 100 to 600000"
                        ));
                    }
                    t.timeout = Duration::from_millis(ms);
                }
                if let Some(m) = e.method {
                    let m = m.to_ascii_uppercase();
                    if !METHODS.contains(&m.as_str()) {
                        return err(format!(
                            "{origin}: method {m:?} is not supported: use one of {METHODS:?}"
                        ));
                    }
                    t.method = m;
                }
                let mut headers: Vec<(String, String)> = e.headers.into_iter().collect();
                headers.sort();
                for (k, v) in &headers {
                    if ureq::http::HeaderName::from_bytes(k.as_bytes()).is_err()
                        || ureq::http::HeaderValue::from_str(v).is_err()
                    {
                        return err(format!("{origin}: header {k:?} is not a valid HTTP header"));
                    }
                }
                t.headers = headers;
                t.expect_status = match e.expect_status {
                    None => None,
                    Some(StatusList::One(c)) => Some(vec![c]),
                    Some(StatusList::Many(v)) => Some(v),
                };
                if let Some(codes) = &t.expect_status {
                    if codes.is_empty() || codes.iter().any(|c| !(100..=599).contains(c)) {
                        return err(format!(
                            "{origin}: expect_status must hold HTTP status codes (100-599)"
                        ));
                    }
                }
                targets.push(t);
            }
        }
        if targets.is_empty() {
            return err(
                "no site to check: set CK_SITE_URL, give --targets FILE, or give URLs on the command line",
            );
        }
        let probe = ProbeSettings {
            connect_timeout: Duration::from_millis(
                s.parse("CK_CONNECT_TIMEOUT_MS", 5_000u64, "milliseconds")?
                    .max(1),
            ),
            max_redirects: s.parse("CK_MAX_REDIRECTS", 5, "a count, 0 = do not follow")?,
            body_cap: s.parse("CK_BODY_CAP_BYTES", 4 << 20, "a byte count")?,
            site_ca: s.get("CK_SITE_CA").map(PathBuf::from),
        };
        if let Some(ca) = &probe.site_ca {
            crate::tls::load_certs(ca).map_err(|e| ConfigError(format!("CK_SITE_CA: {e}")))?;
        }
        let concurrency: usize = s.parse("CK_CONCURRENCY", 64, "a count")?;
        if !(1..=4096).contains(&concurrency) {
            return err(format!(
                "CK_CONCURRENCY={concurrency} is out of range: give 1 to 4096"
            ));
        }
        let producer_id = match s.get("CK_PRODUCER_ID") {
            Some(id) => id.to_string(),
            None => host_name(),
        };
        let publish = if once {
            None
        } else {
            Some(publish_settings(s)?)
        };
        Ok(ProducerConfig {
            targets,
            probe,
            concurrency,
            producer_id,
            publish,
        })
    }
}

fn publish_settings(s: &Settings) -> Result<PublishSettings, ConfigError> {
    let kafka = KafkaSettings::from_settings(s)?;
    let partitions: i32 = s.parse("CK_KAFKA_PARTITIONS", 3, "a partition count")?;
    if !(1..=10_000).contains(&partitions) {
        return err(format!(
            "CK_KAFKA_PARTITIONS={partitions} is out of range: give 1 to 10000"
        ));
    }
    let replication: i16 = s.parse(
        "CK_KAFKA_REPLICATION",
        -1,
        "a replica count, or -1 for the broker's default",
    )?;
    if replication == 0 || replication < -1 {
        return err(format!(
            "CK_KAFKA_REPLICATION={replication}: give -1 (broker default) or a count >= 1"
        ));
    }
    let compression = match s
        .get("CK_KAFKA_COMPRESSION")
        .unwrap_or("snappy")
        .to_ascii_lowercase()
        .as_str()
    {
        "none" => Compression::None,
        "gzip" => Compression::Gzip,
        "snappy" => Compression::Snappy,
        other => {
            return err(format!(
                "CK_KAFKA_COMPRESSION={other:?} is not supported: use none, gzip or snappy"
            ));
        }
    };
    let buffer_events: usize = s.parse("CK_BUFFER_EVENTS", 100_000, "an event count")?;
    if buffer_events == 0 {
        return err("CK_BUFFER_EVENTS=0: give at least 1");
    }
    let linger = Duration::from_millis(s.parse("CK_LINGER_MS", 50, "milliseconds")?);
    Ok(PublishSettings {
        kafka,
        partitions,
        replication,
        compression,
        buffer_events,
        linger,
    })
}

/// This machine's name, for the `producer` field.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".into())
}

// ---------------------------------------------------------------- consumer

#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    pub kafka: KafkaSettings,
    pub postgres: crate::store::PostgresSettings,
    pub batch_events: usize,
    pub batch_wait: Duration,
    pub drain: bool,
}

/// Command line of checksite-consumer. Every flag overrides the variable it names.
#[derive(FromArgs, Debug)]
#[argh(
    description = "Read check events from Kafka and write them into PostgreSQL, exactly once.\n\
Settings come from CK_* environment variables (see config.env.in); flags override them."
)]
pub struct ConsumerArgs {
    /// consume up to the end of every partition as it was at start, then exit
    #[argh(switch)]
    pub drain: bool,
    /// postgres:// URL, libpq style, sslmode/sslrootcert honoured (CK_POSTGRESQL_URL)
    #[argh(option)]
    pub postgresql_url: Option<Secret>,
    /// bootstrap servers host:port[,host:port] (CK_KAFKA_SERVERS)
    #[argh(option)]
    pub kafka_servers: Option<String>,
    /// TLS files: 'ca.pem service.cert service.key', or 'ca.pem' with SASL (CK_KAFKA_SSL)
    #[argh(option)]
    pub kafka_ssl: Option<String>,
    /// topic (CK_KAFKA_TOPIC, default checksite)
    #[argh(option)]
    pub topic: Option<String>,
    /// most events written per transaction (CK_BATCH_EVENTS, default 10000)
    #[argh(option)]
    pub batch_events: Option<String>,
    /// longest wait to fill a batch, ms (CK_BATCH_MS, default 200)
    #[argh(option)]
    pub batch_ms: Option<String>,
    /// print the version and exit
    #[argh(switch)]
    pub version: bool,
}

impl ConsumerArgs {
    pub fn into_settings(self, mut s: Settings) -> Settings {
        s.flag(
            "CK_POSTGRESQL_URL",
            self.postgresql_url.as_ref().map(Secret::expose),
        );
        s.flag("CK_KAFKA_SERVERS", self.kafka_servers);
        s.flag("CK_KAFKA_SSL", self.kafka_ssl);
        s.flag("CK_KAFKA_TOPIC", self.topic);
        s.flag("CK_BATCH_EVENTS", self.batch_events);
        s.flag("CK_BATCH_MS", self.batch_ms);
        s
    }
}

impl ConsumerConfig {
    pub fn from_settings(s: &Settings, drain: bool) -> Result<ConsumerConfig, ConfigError> {
        let kafka = KafkaSettings::from_settings(s)?;
        let Some(url) = s.get("CK_POSTGRESQL_URL") else {
            return err(
                "CK_POSTGRESQL_URL is not set: give postgres://user:password@host:port/dbname?sslmode=require",
            );
        };
        let postgres = crate::store::PostgresSettings::parse(url)
            .map_err(|e| ConfigError(format!("CK_POSTGRESQL_URL: {e}")))?;
        let batch_events: usize = s.parse("CK_BATCH_EVENTS", 10_000, "an event count")?;
        if !(1..=1_000_000).contains(&batch_events) {
            return err(format!(
                "CK_BATCH_EVENTS={batch_events} is out of range: give 1 to 1000000"
            ));
        }
        let batch_wait = Duration::from_millis(s.parse("CK_BATCH_MS", 200, "milliseconds")?);
        Ok(ConsumerConfig {
            kafka,
            postgres,
            batch_events,
            batch_wait,
            drain,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Settings {
        Settings::new(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn python_env_file_is_enough() {
        let s = settings(&[
            ("CK_SITE_URL", "https://example.com/"),
            ("CK_CHECK_DELAY", "5"),
            ("CK_CONTENT_REGEX", "Example.*Domain"),
            ("CK_KAFKA_TOPIC", "checksite"),
            ("CK_KAFKA_SERVERS", "kafka-1.example:12361"),
            ("CK_KAFKA_SSL", ""),
        ]);
        let c = ProducerConfig::from_settings(&s, false).unwrap();
        assert_eq!(c.targets.len(), 1);
        assert_eq!(c.targets[0].interval, Duration::from_secs(5));
        assert!(
            c.targets[0]
                .regex
                .as_ref()
                .unwrap()
                .is_match("Example\nDomain"),
            "'.' must match newlines"
        );
        let p = c.publish.unwrap();
        assert_eq!(p.kafka.servers, vec!["kafka-1.example:12361"]);
        assert_eq!(p.kafka.tls, None);
    }

    #[test]
    fn flags_override_env() {
        let mut s = settings(&[
            ("CK_CHECK_DELAY", "5"),
            ("CK_SITE_URL", "http://a.example/"),
        ]);
        s.flag("CK_CHECK_DELAY", Some("7"));
        let c = ProducerConfig::from_settings(&s, true).unwrap();
        assert_eq!(c.targets[0].interval, Duration::from_secs(7));
    }

    #[test]
    fn several_urls_in_ck_site_url() {
        let s = settings(&[("CK_SITE_URL", "http://a.example/ https://b.example/x")]);
        let c = ProducerConfig::from_settings(&s, true).unwrap();
        let urls: Vec<_> = c.targets.iter().map(|t| t.url.as_str()).collect();
        assert_eq!(urls, ["http://a.example/", "https://b.example/x"]);
    }

    #[test]
    fn bad_settings_name_what_to_fix() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[("CK_SITE_URL", "ftp://x.example")],
                "CK_SITE_URL: \"ftp://x.example\" is not an http",
            ),
            (
                &[
                    ("CK_SITE_URL", "http://a.example"),
                    ("CK_CONTENT_REGEX", "("),
                ],
                "CK_CONTENT_REGEX: \"(\" is not a valid regex",
            ),
            (
                &[
                    ("CK_SITE_URL", "http://a.example"),
                    ("CK_CHECK_DELAY", "soon"),
                ],
                "CK_CHECK_DELAY=\"soon\" is not valid",
            ),
            (
                &[("CK_SITE_URL", "http://a.example"), ("CK_CHECK_DELAY", "0")],
                "CK_CHECK_DELAY=0 is out of range",
            ),
            (&[], "no site to check"),
            (
                &[
                    ("CK_SITE_URL", "http://a.example"),
                    ("CK_KAFKA_SERVERS", "nohost"),
                ],
                "is not host:port",
            ),
            (
                &[
                    ("CK_SITE_URL", "http://a.example"),
                    ("CK_KAFKA_SERVERS", "k:1"),
                    ("CK_KAFKA_SSL", "a b"),
                ],
                "CK_KAFKA_SSL has 2 file names",
            ),
            (
                &[
                    ("CK_SITE_URL", "http://a.example"),
                    ("CK_KAFKA_SERVERS", "k:1"),
                    ("CK_KAFKA_SSL", "/no/ca.pem /no/c /no/k"),
                ],
                "CK_KAFKA_SSL: cannot read /no/ca.pem",
            ),
            (
                &[
                    ("CK_SITE_URL", "http://a.example"),
                    ("CK_KAFKA_SERVERS", "k:1"),
                    ("CK_KAFKA_SASL_MECHANISM", "GSSAPI"),
                ],
                "CK_KAFKA_SASL_MECHANISM=\"GSSAPI\" is not supported",
            ),
            (
                &[
                    ("CK_SITE_URL", "http://a.example"),
                    ("CK_KAFKA_SERVERS", "k:1"),
                    ("CK_KAFKA_COMPRESSION", "zstd"),
                ],
                "CK_KAFKA_COMPRESSION=\"zstd\" is not supported",
            ),
        ];
        for (pairs, want) in cases {
            let e = ProducerConfig::from_settings(&settings(pairs), false)
                .unwrap_err()
                .0;
            assert!(e.contains(want), "{pairs:?}: got {e:?}, want {want:?}");
            assert!(!e.contains('\n'), "one line: {e:?}");
        }
    }

    #[test]
    fn targets_file_entries() {
        let dir = std::env::temp_dir().join(format!("checksite-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("targets.json");
        std::fs::write(
            &path,
            r#"[{"url": "https://a.example/", "interval_s": 2.5, "regex": "ok", "timeout_ms": 3000,
                "method": "head", "headers": {"X-Probe": "1"}, "expect_status": [200, 204]},
               {"url": "http://b.example/"}]"#,
        )
        .unwrap();
        let s = settings(&[("CK_TARGETS", path.to_str().unwrap())]);
        let c = ProducerConfig::from_settings(&s, true).unwrap();
        assert_eq!(c.targets.len(), 2);
        let a = &c.targets[0];
        assert_eq!(a.interval, Duration::from_millis(2500));
        assert_eq!(a.method, "HEAD");
        assert_eq!(a.headers, vec![("X-Probe".to_string(), "1".to_string())]);
        assert_eq!(a.expect_status, Some(vec![200, 204]));
        assert_eq!(c.targets[1].interval, Duration::from_secs(60));

        std::fs::write(&path, r#"[{"url": "https://a.example/", "intervl_s": 2}]"#).unwrap();
        let e = ProducerConfig::from_settings(&s, true).unwrap_err().0;
        assert!(e.contains("unknown field `intervl_s`"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn sasl_password_is_not_printed() {
        let s = settings(&[
            ("CK_KAFKA_SERVERS", "k:1"),
            ("CK_KAFKA_SASL_MECHANISM", "scram-sha-512"),
            ("CK_KAFKA_SASL_USERNAME", "avnadmin"),
            ("CK_KAFKA_SASL_PASSWORD", "hunter2"),
        ]);
        let k = KafkaSettings::from_settings(&s).unwrap();
        assert_eq!(
            k.sasl.as_ref().unwrap().mechanism,
            SaslMechanism::ScramSha512
        );
        assert!(k.tls.is_some(), "SASL always goes over TLS");
        assert!(!format!("{k:?}").contains("hunter2"));
    }
}
