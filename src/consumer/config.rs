//! The consumer's configuration: Kafka, `CK_POSTGRESQL_URL` and the batch sizes, validated
//! into a [`ConsumerConfig`]; and its command line ([`ConsumerArgs`]).

use std::time::Duration;

use argh::FromArgs;

use crate::kafka::KafkaSettings;
use crate::observe::{HttpListener, Scope};
use crate::secret::Secret;
use crate::settings::{ConfigError, Settings, err};

#[derive(Debug, Clone)]
/// Everything the consumer needs, validated.
pub struct ConsumerConfig {
    /// Where to read events.
    pub kafka: KafkaSettings,
    /// Where to write them (`CK_POSTGRESQL_URL`).
    pub postgres: crate::consumer::store::PostgresSettings,
    /// Most events in one transaction (`CK_BATCH_EVENTS`).
    pub batch_events: usize,
    /// Longest wait to fill a transaction (`CK_BATCH_MS`).
    pub batch_wait: Duration,
    /// `--drain`: stop once every partition is consumed to where it ended at start.
    pub drain: bool,
    /// Where to serve /metrics, /healthz and /readyz (`CK_HTTP_ADDR`); None: nowhere.
    pub http_addr: Option<std::net::SocketAddr>,
    /// Where to serve the status page apart from the metrics and health
    /// (`CK_STATUS_ADDR`); None: with them, on `CK_HTTP_ADDR`.
    pub status_addr: Option<std::net::SocketAddr>,
    /// Keep the hourly and daily rollups and each site's state (`CK_ROLLUPS`, default on):
    /// what the status page shows.
    pub rollups: bool,
    /// Raw events (and rejected records) older than this many days are deleted
    /// (`CK_RETENTION_DAYS`); None: kept.
    pub retention_days: Option<u32>,
    /// Alerting, when `CK_ALERT_WEBHOOK_URL` is set.
    pub alerts: Option<crate::consumer::alert::AlertConfig>,
    /// `CK_ALERT_STALE_AFTER`, in seconds: when a vantage point's series counts as stale
    /// (the alert rules and the status page).
    pub stale_after_s: i64,
    /// The targets list to follow (`CK_TARGETS_TOPIC`): listed targets not checked yet
    /// show as waiting, removed ones leave the page and close their incidents.
    pub targets_topic: Option<String>,
    /// How much of a URL the status page shows (`CK_STATUS_URLS`).
    pub status_urls: crate::consumer::status_page::shown::UrlShowing,
    /// TLS and basic auth on the HTTP listeners (`CK_HTTP_CONFIG`).
    pub http_config: Option<std::sync::Arc<crate::observe::web_config::WebConfig>>,
}

/// `CK_RETENTION_DAYS`: unset keeps every event (as the Python program did).
fn retention_days(s: &Settings) -> Result<Option<u32>, ConfigError> {
    let Some(raw) = s.get("CK_RETENTION_DAYS") else {
        return Ok(None);
    };
    match raw.parse::<u32>() {
        Ok(days @ 1..=36_500) => Ok(Some(days)),
        _ => err(format!(
            "CK_RETENTION_DAYS={raw:?}: give a number of days from 1 to 36500, or leave it unset to keep every event"
        )),
    }
}

crate::kafka::settings::args_with_kafka_flags! {
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
    /// most events written per transaction (CK_BATCH_EVENTS, default 10000)
    #[argh(option)]
    pub batch_events: Option<String>,
    /// longest wait to fill a batch, ms (CK_BATCH_MS, default 200)
    #[argh(option)]
    pub batch_ms: Option<String>,
    /// serve /metrics, /healthz, /readyz on IP:PORT, e.g. 127.0.0.1:9465 (CK_HTTP_ADDR)
    #[argh(option)]
    pub http_addr: Option<String>,
    /// serve the status page on IP:PORT of its own, apart from /metrics and health (CK_STATUS_ADDR)
    #[argh(option)]
    pub status_addr: Option<String>,
    /// the compacted topic of the targets list the producers follow (CK_TARGETS_TOPIC)
    #[argh(option)]
    pub targets_topic: Option<String>,
    /// print the version and exit
    #[argh(switch)]
    pub version: bool,
}
}

impl ConsumerArgs {
    /// The flags given, over the environment's `settings`.
    pub fn into_settings(self, mut s: Settings) -> Settings {
        s.flag(
            "CK_POSTGRESQL_URL",
            self.postgresql_url.as_ref().map(Secret::expose),
        );
        crate::kafka::settings::flags(&mut s, self.kafka_servers, self.kafka_ssl, self.topic);
        s.flag("CK_BATCH_EVENTS", self.batch_events);
        s.flag("CK_BATCH_MS", self.batch_ms);
        s.flag("CK_HTTP_ADDR", self.http_addr);
        s.flag("CK_STATUS_ADDR", self.status_addr);
        s.flag("CK_TARGETS_TOPIC", self.targets_topic);
        s
    }
}

impl ConsumerConfig {
    /// Read and check the consumer's settings; `drain` is `--drain`.
    pub fn from_settings(s: &Settings, drain: bool) -> Result<ConsumerConfig, ConfigError> {
        let kafka = KafkaSettings::from_settings(s)?;
        let Some(url) = s.get("CK_POSTGRESQL_URL") else {
            return err(
                "CK_POSTGRESQL_URL is not set: give postgres://user:password@host:port/dbname?sslmode=require",
            );
        };
        let postgres = crate::consumer::store::PostgresSettings::parse(url)
            .map_err(|e| ConfigError(format!("CK_POSTGRESQL_URL: {e}")))?;
        let batch_events: usize = s.parse("CK_BATCH_EVENTS", 10_000, "an event count")?;
        if !(1..=1_000_000).contains(&batch_events) {
            return err(format!(
                "CK_BATCH_EVENTS={batch_events} is out of range: give 1 to 1000000"
            ));
        }
        let batch_wait = Duration::from_millis(s.parse("CK_BATCH_MS", 200, "milliseconds")?);
        let rollups = match s.get("CK_ROLLUPS") {
            None | Some("on") => true,
            Some("off") => false,
            Some(other) => {
                return err(format!(
                    "CK_ROLLUPS={other:?}: give on (the default: rollups for the status page) or off"
                ));
            }
        };
        Ok(ConsumerConfig {
            kafka,
            postgres,
            batch_events,
            batch_wait,
            drain,
            http_addr: crate::observe::server::http_addr(s)?,
            status_addr: crate::observe::server::listen_addr(s, "CK_STATUS_ADDR")?,
            rollups,
            retention_days: retention_days(s)?,
            alerts: crate::consumer::alert::AlertConfig::from_settings(s)?,
            stale_after_s: crate::consumer::alert::stale_after_s(s)?,
            targets_topic: crate::kafka::settings::targets_topic(s)?,
            status_urls: crate::consumer::status_page::shown::UrlShowing::from_settings(s)?,
            http_config: crate::observe::web_config::WebConfig::from_settings(s)?,
        })
    }
}

impl ConsumerConfig {
    /// The listeners to serve on, bound now (a busy address is a configuration error):
    /// `CK_HTTP_ADDR` for everything, or, with `CK_STATUS_ADDR`, the metrics and health
    /// on the one and the status page on the other.
    pub fn listeners(&self) -> Result<Vec<HttpListener>, ConfigError> {
        let mut listeners = Vec::new();
        let health_scope = if self.status_addr.is_some() {
            Scope::Health
        } else {
            Scope::All
        };
        let web = || self.http_config.clone();
        if let Some(addr) = self.http_addr {
            listeners.push(HttpListener::bind_for(addr, health_scope, "CK_HTTP_ADDR")?.with(web()));
        }
        if let Some(addr) = self.status_addr {
            listeners
                .push(HttpListener::bind_for(addr, Scope::Pages, "CK_STATUS_ADDR")?.with(web()));
        }
        Ok(listeners)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_is_off_unless_set_and_says_what_to_give() {
        let with = |v: &str| Settings::new([("CK_RETENTION_DAYS".to_string(), v.to_string())]);
        assert_eq!(retention_days(&Settings::new([])), Ok(None));
        assert_eq!(retention_days(&with("30")), Ok(Some(30)));
        for bad in ["0", "-1", "thirty", "99999"] {
            let e = retention_days(&with(bad)).unwrap_err();
            assert!(e.0.contains("give a number of days from 1 to 36500"), "{e}");
        }
    }
}
