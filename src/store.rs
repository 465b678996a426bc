//! PostgreSQL: the TLS connection (libpq's `sslmode`/`sslrootcert` honoured, the server
//! always verified), the schema and its migrations, partition leases, and the
//! exactly-once write of a batch together with its partition's next offset.
//!
//! This module owns every SQL statement. SQL is always parameterised; the password
//! never reaches a log or an error message.

use std::time::Duration;

use tokio_postgres::config::SslMode;

#[derive(Debug)]
pub enum StoreError {
    Url(String),
    Connect {
        target: String,
        detail: String,
        hint: &'static str,
    },
    Sql {
        what: &'static str,
        detail: String,
    },
    /// Another consumer moved this partition's offset: we no longer own it.
    OffsetMoved {
        partition: i32,
    },
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Url(m) => f.write_str(m),
            StoreError::Connect {
                target,
                detail,
                hint,
            } => {
                write!(f, "cannot use PostgreSQL at {target}: {detail}")?;
                if !hint.is_empty() {
                    write!(f, " ({hint})")?;
                }
                Ok(())
            }
            StoreError::Sql { what, detail } => write!(f, "PostgreSQL {what} failed: {detail}"),
            StoreError::OffsetMoved { partition } => {
                write!(
                    f,
                    "partition {partition}'s offset was moved by another consumer; giving it up"
                )
            }
        }
    }
}

impl std::error::Error for StoreError {}

#[allow(dead_code)] // used by the consumer, next
pub(crate) fn sql_error(what: &'static str, e: &tokio_postgres::Error) -> StoreError {
    let detail = match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => flatten(e),
    };
    StoreError::Sql { what, detail }
}

fn flatten(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ").replace('\n', " ")
}

/// A parsed `CK_POSTGRESQL_URL`.
#[derive(Clone)]
pub struct PostgresSettings {
    config: tokio_postgres::Config,
    /// `sslmode` as the user wrote it (libpq's names).
    sslmode: String,
    sslrootcert: Option<std::path::PathBuf>,
    /// host:port/dbname, for messages: never the password.
    display: String,
}

impl std::fmt::Debug for PostgresSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PostgresSettings({}, sslmode={})",
            self.display, self.sslmode
        )
    }
}

impl PostgresSettings {
    /// Parse a libpq-style URL. `sslmode` and `sslrootcert` are handled here (tokio-postgres
    /// knows neither verify-* modes nor root files); the rest goes to tokio-postgres.
    pub fn parse(url: &str) -> Result<PostgresSettings, StoreError> {
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut sslmode = "prefer".to_string();
        let mut sslrootcert = None;
        let mut rest = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "sslmode" => sslmode = v.to_string(),
                "sslrootcert" => sslrootcert = Some(std::path::PathBuf::from(percent_decode(v))),
                _ => rest.push(pair),
            }
        }
        let ssl = match sslmode.as_str() {
            "disable" => SslMode::Disable,
            "allow" | "prefer" => SslMode::Prefer,
            "require" | "verify-ca" | "verify-full" => SslMode::Require,
            other => {
                return Err(StoreError::Url(format!(
                    "sslmode={other} is not known: use disable, prefer, require, verify-ca or verify-full"
                )));
            }
        };
        let rebuilt = if rest.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", rest.join("&"))
        };
        let mut config: tokio_postgres::Config =
            rebuilt.parse().map_err(|e: tokio_postgres::Error| {
                // tokio-postgres's message never includes the password.
                StoreError::Url(format!("not a valid postgres:// URL: {e}"))
            })?;
        config.ssl_mode(ssl);
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        if config.get_hosts().is_empty() {
            return Err(StoreError::Url(
                "the URL names no host: postgres://user:password@host:port/dbname".into(),
            ));
        }
        if let Some(root) = &sslrootcert {
            crate::tls::load_certs(root)
                .map_err(|e| StoreError::Url(format!("sslrootcert: {e}")))?;
        }
        let host = match config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            _ => "localhost".into(),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let display = format!(
            "{host}:{port}/{} as {}",
            config.get_dbname().unwrap_or("(default db)"),
            config.get_user().unwrap_or("(default user)")
        );
        Ok(PostgresSettings {
            config,
            sslmode,
            sslrootcert,
            display,
        })
    }

    pub fn display(&self) -> &str {
        &self.display
    }

    /// The same server and credentials, another database (tests, and `CREATE DATABASE` set-ups).
    pub fn with_dbname(&self, dbname: &str) -> PostgresSettings {
        let mut copy = self.clone();
        copy.config.dbname(dbname);
        copy.display = self.display.replacen(
            self.config.get_dbname().unwrap_or("(default db)"),
            dbname,
            1,
        );
        copy
    }

    /// Connect, bounded by `within`. The connection's driver task is spawned on the runtime.
    pub async fn connect(&self, within: Duration) -> Result<tokio_postgres::Client, StoreError> {
        let tls = crate::tls::client_config(self.sslrootcert.as_deref(), None).map_err(|e| {
            StoreError::Connect {
                target: self.display.clone(),
                detail: e.to_string(),
                hint: "",
            }
        })?;
        let connector = tokio_postgres_rustls::MakeRustlsConnect::new(tls);
        let attempt = tokio::time::timeout(within, self.config.connect(connector)).await;
        let (client, connection) = match attempt {
            Err(_) => {
                return Err(StoreError::Connect {
                    target: self.display.clone(),
                    detail: format!("no answer within {} s", within.as_secs()),
                    hint: "is the server running, and are host and port right?",
                });
            }
            Ok(Err(e)) => return Err(self.connect_error(&e)),
            Ok(Ok(pair)) => pair,
        };
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                log::debug!("PostgreSQL connection closed: {e}");
            }
        });
        Ok(client)
    }

    fn connect_error(&self, e: &tokio_postgres::Error) -> StoreError {
        let detail = match e.as_db_error() {
            Some(db) => db.message().to_string(),
            None => flatten(e),
        };
        let lower = detail.to_lowercase();
        let hint = if lower.contains("password authentication failed") || lower.contains("password")
        {
            "check the user and password in CK_POSTGRESQL_URL"
        } else if lower.contains("certificate") || lower.contains("unknownissuer") {
            "the server's certificate is not trusted: add sslrootcert=/path/to/ca.pem (the service's CA file) to CK_POSTGRESQL_URL"
        } else if lower.contains("refused") {
            "is the server running, and are host and port right?"
        } else if lower.contains("does not exist") {
            "create the database first (see README: least privilege)"
        } else {
            ""
        };
        StoreError::Connect {
            target: self.display.clone(),
            detail,
            hint,
        }
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aiven_uri_parses_and_hides_the_password() {
        let s = PostgresSettings::parse(
            "postgres://avnadmin:s3cret@pg-x.aivencloud.com:12359/defaultdb?sslmode=require",
        )
        .unwrap();
        assert_eq!(
            s.display(),
            "pg-x.aivencloud.com:12359/defaultdb as avnadmin"
        );
        assert!(!format!("{s:?}").contains("s3cret"));
    }

    #[test]
    fn unknown_sslmode_is_refused() {
        let e = PostgresSettings::parse("postgres://u@h/db?sslmode=sometimes")
            .unwrap_err()
            .to_string();
        assert!(e.contains("sslmode=sometimes is not known"), "{e}");
    }

    #[test]
    fn percent_decoding_of_paths() {
        assert_eq!(percent_decode("%2Fetc%2Fca.pem"), "/etc/ca.pem");
        assert_eq!(percent_decode("plain"), "plain");
        assert_eq!(percent_decode("bad%zz"), "bad%zz");
    }
}
