//! Kafka's settings: `CK_KAFKA_SERVERS`, `CK_KAFKA_TOPIC`, `CK_KAFKA_SSL` (Aiven's
//! `ca.pem service.cert service.key`) and SASL, validated into [`KafkaSettings`] for both
//! programs. It reads the PEM files to check them, and never connects.

use std::path::PathBuf;

use crate::secret::Secret;
use crate::settings::{ConfigError, Settings, err};
use crate::tls::ClientIdentity;

/// SASL over TLS, the alternative to client certificates that Aiven offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    /// SASL/PLAIN.
    Plain,
    /// SASL/SCRAM-SHA-256.
    ScramSha256,
    /// SASL/SCRAM-SHA-512.
    ScramSha512,
}

/// SASL credentials; the password prints as `<hidden>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslSettings {
    /// `CK_KAFKA_SASL_MECHANISM`.
    pub mechanism: SaslMechanism,
    /// `CK_KAFKA_SASL_USERNAME`.
    pub username: String,
    /// `CK_KAFKA_SASL_PASSWORD` (prints as `<hidden>`).
    pub password: Secret,
}

/// How to reach the Kafka cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaSettings {
    /// Bootstrap servers, `host:port` each (`CK_KAFKA_SERVERS`).
    pub servers: Vec<String>,
    /// The topic (`CK_KAFKA_TOPIC`).
    pub topic: String,
    /// None: plaintext. Some: TLS, verified against `ca` (or the web PKI roots).
    pub tls: Option<KafkaTls>,
    /// SASL credentials, if any (always over TLS).
    pub sasl: Option<SaslSettings>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
/// TLS to the brokers: the CA to verify them with, and a client certificate for mutual TLS.
pub struct KafkaTls {
    /// The CA file (Aiven's `ca.pem`); None: the web PKI roots.
    pub ca: Option<PathBuf>,
    /// `service.cert` and `service.key`, for mutual TLS.
    pub identity: Option<ClientIdentity>,
}

/// The topic when `CK_KAFKA_TOPIC` is not set (the Python checksite's default).
pub const DEFAULT_TOPIC: &str = "checksite";

impl KafkaSettings {
    /// Read and check the Kafka settings (the PEM files included).
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
        let topic = topic_name(
            "CK_KAFKA_TOPIC",
            s.get("CK_KAFKA_TOPIC").unwrap_or(DEFAULT_TOPIC),
        )?;
        let sasl = sasl_from_settings(s)?;
        let tls = tls_from_settings(s, sasl.is_some())?;
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
    pub(crate) fn tls_config(&self) -> Result<Option<rustls::ClientConfig>, ConfigError> {
        match &self.tls {
            None => Ok(None),
            Some(t) => crate::tls::client_config(t.ca.as_deref(), t.identity.as_ref())
                .map(Some)
                .map_err(|e| ConfigError(format!("CK_KAFKA_SSL: {e}"))),
        }
    }
}

/// `CK_KAFKA_SSL`: the CA alone (with SASL) or the CA, certificate and key (mutual TLS);
/// TLS without files when SASL is set (the web PKI roots then).
fn tls_from_settings(s: &Settings, sasl: bool) -> Result<Option<KafkaTls>, ConfigError> {
    let files: Vec<PathBuf> = s
        .get("CK_KAFKA_SSL")
        .unwrap_or("")
        .split_whitespace()
        .map(PathBuf::from)
        .collect();
    let tls = match files.as_slice() {
        [] if sasl => Some(KafkaTls {
            ca: None,
            identity: None,
        }),
        [] => None,
        [ca] => Some(KafkaTls {
            ca: Some(ca.clone()),
            identity: None,
        }),
        [ca, cert, key] if !sasl => Some(KafkaTls {
            ca: Some(ca.clone()),
            identity: Some(ClientIdentity {
                cert: cert.clone(),
                key: key.clone(),
            }),
        }),
        [_, _, _] => {
            return err(
                "both SASL (CK_KAFKA_SASL_MECHANISM) and a client certificate (CK_KAFKA_SSL with 3 files) are set: choose one",
            );
        }
        _ => {
            return err(format!(
                "CK_KAFKA_SSL has {} file names: give 'ca.pem service.cert service.key' (mutual TLS) or 'ca.pem' (with SASL)",
                files.len()
            ));
        }
    };
    Ok(tls)
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

/// `raw` as a topic name, or the error naming `var`.
fn topic_name(var: &str, raw: &str) -> Result<String, ConfigError> {
    let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if raw.is_empty() || raw.len() > 249 || !raw.chars().all(legal) || raw == "." || raw == ".." {
        return err(format!(
            "{var}={raw:?} is not a legal Kafka topic name (letters, digits, '.', '_', '-'; at most 249)"
        ));
    }
    Ok(raw.to_string())
}

/// The targets topic every vantage point follows (`CK_TARGETS_TOPIC`), when set.
pub fn targets_topic(s: &Settings) -> Result<Option<String>, ConfigError> {
    s.get("CK_TARGETS_TOPIC")
        .map(|t| topic_name("CK_TARGETS_TOPIC", t))
        .transpose()
}

/// Declares a program's command line (an `argh` struct) with the Kafka flags both programs
/// take appended to its own: written once here, as `argh` cannot embed one struct in another.
macro_rules! args_with_kafka_flags {
    ($(#[$meta:meta])* pub struct $name:ident { $($fields:tt)* }) => {
        $(#[$meta])*
        pub struct $name {
            $($fields)*
            /// bootstrap servers host:port, comma-separated (CK_KAFKA_SERVERS)
            #[argh(option)]
            pub kafka_servers: Option<String>,
            /// TLS files: 'ca.pem service.cert service.key', or 'ca.pem' with SASL (CK_KAFKA_SSL)
            #[argh(option)]
            pub kafka_ssl: Option<String>,
            /// topic (CK_KAFKA_TOPIC, default checksite)
            #[argh(option)]
            pub topic: Option<String>,
        }
    };
}
pub(crate) use args_with_kafka_flags;

/// The Kafka flags given, recorded over the variables they override.
pub(crate) fn flags(
    s: &mut Settings,
    servers: Option<String>,
    ssl: Option<String>,
    topic: Option<String>,
) {
    s.flag("CK_KAFKA_SERVERS", servers);
    s.flag("CK_KAFKA_SSL", ssl);
    s.flag("CK_KAFKA_TOPIC", topic);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Settings {
        Settings::new(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
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
