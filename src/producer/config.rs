//! The producer's configuration: the targets (`CK_SITE_URL` or a targets file), how to
//! check them and where to publish, validated into a [`ProducerConfig`]; and its command line
//! ([`ProducerArgs`]).
//!
//! Every error is one line that names the setting and says what to fix. It reads files
//! (PEM, targets) to validate them, but never connects to anything.

use std::path::PathBuf;
use std::time::Duration;

use argh::FromArgs;

pub use super::targets::Target;
use super::targets::{Shard, TargetSources};
use crate::kafka::KafkaSettings;
use crate::settings::{ConfigError, Settings, err};

/// How each check behaves, whatever the target.
#[derive(Debug, Clone)]
pub struct ProbeSettings {
    /// Time allowed to connect (`CK_CONNECT_TIMEOUT_MS`), shared by a host's addresses.
    pub connect_timeout: Duration,
    /// Redirects followed (`CK_MAX_REDIRECTS`).
    pub max_redirects: u32,
    /// Most body bytes read (`CK_BODY_CAP_BYTES`).
    pub body_cap: u64,
    /// Extra CA for checked sites (e.g. an internal CA); the web PKI roots are always trusted.
    pub site_ca: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// Compression of published record batches (`CK_KAFKA_COMPRESSION`).
pub enum Compression {
    /// None.
    None,
    /// gzip.
    Gzip,
    /// snappy (the default).
    Snappy,
}

#[derive(Debug, Clone)]
/// Where and how events are published.
pub struct PublishSettings {
    /// The Kafka cluster and topic.
    pub kafka: KafkaSettings,
    /// Partitions of a topic the producer creates.
    pub partitions: i32,
    /// Replication factor of a topic the producer creates (-1: the broker's default).
    pub replication: i16,
    /// Record batch compression.
    pub compression: Compression,
    /// Most events kept while Kafka is away (`CK_BUFFER_EVENTS`).
    pub buffer_events: usize,
    /// How long to wait for more events before a produce request.
    pub linger: Duration,
    /// The disk spool (`CK_SPOOL_DIR`), when set.
    pub spool: Option<super::spool::SpoolSettings>,
}

#[derive(Debug, Clone)]
/// Everything the producer needs, validated.
pub struct ProducerConfig {
    /// The sites to check (`CK_SITE_URL`, `CK_TARGETS`), as read at the start.
    pub targets: Vec<Target>,
    /// Where they come from, to read them again (SIGHUP).
    pub sources: TargetSources,
    /// The targets topic to follow (`CK_TARGETS_TOPIC`), when set.
    pub targets_topic: Option<String>,
    /// This producer's share of the targets (`CK_SHARD`), when set.
    pub shard: Option<Shard>,
    /// How every check is made.
    pub probe: ProbeSettings,
    /// Most checks running at once (`CK_CONCURRENCY`).
    pub concurrency: usize,
    /// The vantage point's name in every event.
    pub producer_id: String,
    /// None with `--once`, which prints events instead of publishing them.
    pub publish: Option<PublishSettings>,
    /// Where to serve /metrics, /healthz and /readyz (`CK_HTTP_ADDR`); None: nowhere.
    pub http_addr: Option<std::net::SocketAddr>,
    /// TLS and basic auth there (`CK_HTTP_CONFIG`).
    pub http_config: Option<std::sync::Arc<crate::observe::web_config::WebConfig>>,
}

crate::kafka::settings::args_with_kafka_flags! {
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
    /// the compacted topic of the targets list every vantage point follows (CK_TARGETS_TOPIC)
    #[argh(option)]
    pub targets_topic: Option<String>,
    /// check only share i of n of the targets, e.g. 1/2 (CK_SHARD)
    #[argh(option)]
    pub shard: Option<String>,
    /// keep the event buffer on disk there too, to survive a restart (CK_SPOOL_DIR)
    #[argh(option)]
    pub spool_dir: Option<String>,
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
    /// most checks running at once (CK_CONCURRENCY, default 512)
    #[argh(option)]
    pub concurrency: Option<String>,
    /// extra CA file trusted for the checked sites (CK_SITE_CA)
    #[argh(option)]
    pub site_ca: Option<String>,
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
    /// serve /metrics, /healthz, /readyz on IP:PORT, e.g. 127.0.0.1:9464 (CK_HTTP_ADDR)
    #[argh(option)]
    pub http_addr: Option<String>,
    /// print the version and exit
    #[argh(switch)]
    pub version: bool,
    /// URLs to check (override CK_SITE_URL)
    #[argh(positional)]
    pub urls: Vec<String>,
}
}

impl ProducerArgs {
    /// The flags given, over the environment's `settings`.
    pub fn into_settings(self, mut s: Settings) -> Settings {
        s.flag("CK_TARGETS", self.targets);
        s.flag("CK_TARGETS_TOPIC", self.targets_topic);
        s.flag("CK_SHARD", self.shard);
        s.flag("CK_SPOOL_DIR", self.spool_dir);
        s.flag("CK_CHECK_DELAY", self.interval);
        s.flag("CK_CONTENT_REGEX", self.regex);
        s.flag("CK_TIMEOUT_MS", self.timeout_ms);
        s.flag("CK_CONNECT_TIMEOUT_MS", self.connect_timeout_ms);
        s.flag("CK_MAX_REDIRECTS", self.max_redirects);
        s.flag("CK_BODY_CAP_BYTES", self.body_cap);
        s.flag("CK_CONCURRENCY", self.concurrency);
        s.flag("CK_SITE_CA", self.site_ca);
        crate::kafka::settings::flags(&mut s, self.kafka_servers, self.kafka_ssl, self.topic);
        s.flag("CK_KAFKA_PARTITIONS", self.partitions);
        s.flag("CK_KAFKA_COMPRESSION", self.compression);
        s.flag("CK_BUFFER_EVENTS", self.buffer_events);
        s.flag("CK_PRODUCER_ID", self.producer_id);
        s.flag("CK_HTTP_ADDR", self.http_addr);
        if !self.urls.is_empty() {
            s.flag("CK_SITE_URL", Some(self.urls.join(" ")));
        }
        s
    }
}

impl ProducerConfig {
    /// Read and check the producer's settings; `once` is `--once` (no Kafka needed).
    pub fn from_settings(s: &Settings, once: bool) -> Result<ProducerConfig, ConfigError> {
        let sources = TargetSources::from_settings(s)?;
        let targets = sources.read()?;
        let targets_topic = crate::kafka::settings::targets_topic(s)?;
        if targets.is_empty() && (targets_topic.is_none() || once) {
            return err(
                "no site to check: set CK_SITE_URL, give --targets FILE, give URLs on the command line, or follow a list with CK_TARGETS_TOPIC",
            );
        }
        let concurrency: usize = s.parse("CK_CONCURRENCY", 512, "a count")?;
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
            sources,
            targets_topic,
            shard: Shard::from_settings(s)?,
            probe: probe_settings(s)?,
            concurrency,
            producer_id,
            publish,
            http_addr: if once {
                None
            } else {
                crate::observe::server::http_addr(s)?
            },
            http_config: if once {
                None
            } else {
                crate::observe::web_config::WebConfig::from_settings(s)?
            },
        })
    }
}

/// How every check is made: connect timeout, redirects, body cap, an extra CA.
fn probe_settings(s: &Settings) -> Result<ProbeSettings, ConfigError> {
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
    Ok(probe)
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
    let spool = spool_settings(s)?;
    Ok(PublishSettings {
        kafka,
        partitions,
        replication,
        compression,
        buffer_events,
        linger,
        spool,
    })
}

/// `CK_SPOOL_DIR`, `CK_SPOOL_SYNC` and `CK_SPOOL_BYTES`.
fn spool_settings(s: &Settings) -> Result<Option<super::spool::SpoolSettings>, ConfigError> {
    let Some(dir) = s.get("CK_SPOOL_DIR") else {
        return Ok(None);
    };
    let sync_always = match s.get("CK_SPOOL_SYNC") {
        None | Some("interval") => false,
        Some("always") => true,
        Some(other) => {
            return err(format!(
                "CK_SPOOL_SYNC={other:?}: give interval (fsync at most every second, the default) or always (fsync after each event)"
            ));
        }
    };
    let max_bytes: u64 = s.parse("CK_SPOOL_BYTES", 1 << 30, "a byte count")?;
    if max_bytes < 1 << 20 {
        return err(format!(
            "CK_SPOOL_BYTES={max_bytes}: give 1048576 (1 MiB) or more"
        ));
    }
    Ok(Some(super::spool::SpoolSettings {
        dir: PathBuf::from(dir),
        sync_always,
        max_bytes,
        segment_bytes: super::spool::SEGMENT_BYTES.min(max_bytes / 4),
    }))
}

/// This machine's name, for the `producer` field.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".into())
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
}
