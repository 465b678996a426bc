//! The connection to PostgreSQL: `CK_POSTGRESQL_URL` parsed as tokio-postgres reads it,
//! `sslmode`/`sslrootcert` handled here (tokio-postgres knows neither verify-* nor root
//! files), TLS through rustls, every wait bounded. The password never reaches a message.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio_postgres::config::SslMode;

use super::StoreError;

/// Connections of this process whose driver task still runs. A driver says goodbye
/// (Terminate, then TLS close_notify) once its client is dropped, but only if it is polled
/// again: a process that exits first leaves PostgreSQL a dropped socket, which it counts
/// as an abandoned session (`pg_stat_database.sessions_abandoned`) and logs as an error.
static OPEN_DRIVERS: AtomicUsize = AtomicUsize::new(0);

/// Held by a driver task: counts it open until the task ends or is dropped.
struct OpenDriver;

impl OpenDriver {
    fn count() -> OpenDriver {
        OPEN_DRIVERS.fetch_add(1, Ordering::SeqCst);
        OpenDriver
    }
}

impl Drop for OpenDriver {
    fn drop(&mut self) {
        OPEN_DRIVERS.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Longest wait at exit for the connections to say goodbye.
const CLOSE_WITHIN: Duration = Duration::from_secs(1);

/// Wait, at most [`CLOSE_WITHIN`], until every connection this process opened is closed:
/// called at exit, after the clients are dropped, so that each says goodbye to the server.
/// A server that does not answer costs that second, never a hang.
pub(crate) async fn connections_closed() {
    let deadline = tokio::time::Instant::now() + CLOSE_WITHIN;
    while OPEN_DRIVERS.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
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
    /// knows neither verify-* modes nor root files); the rest goes to tokio-postgres, whose
    /// parser refuses what it does not know. A URL that does not parse cleanly is an
    /// error, never a weaker TLS mode.
    pub fn parse(url: &str) -> Result<PostgresSettings, StoreError> {
        let (base, query) = split_query(url)?;
        let mut sslmode = "prefer".to_string();
        let mut sslrootcert = None;
        let mut rest = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let decoded = || {
                percent_encoding::percent_decode_str(v)
                    .decode_utf8()
                    .map(|d| d.into_owned())
                    .map_err(|_| {
                        StoreError::Url(format!(
                            "the value of {k} is not valid UTF-8 once percent-decoded"
                        ))
                    })
            };
            match k {
                "sslmode" => sslmode = decoded()?,
                "sslrootcert" => sslrootcert = Some(std::path::PathBuf::from(decoded()?)),
                _ if PASSED_ON.contains(&k) => rest.push(pair),
                _ => {
                    return Err(StoreError::Url(format!(
                        "unknown parameter {k:?} in the URL: the known ones are sslmode, sslrootcert, {}",
                        PASSED_ON.join(", ")
                    )));
                }
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

    /// host:port/dbname and user, for messages: never the password.
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
        let open = OpenDriver::count();
        tokio::spawn(async move {
            let _open = open;
            if let Err(e) = connection.await {
                log::debug!("PostgreSQL connection closed: {e}");
            }
        });
        Ok(client)
    }

    fn connect_error(&self, e: &tokio_postgres::Error) -> StoreError {
        let detail = match e.as_db_error() {
            Some(db) => db.message().to_string(),
            None => crate::error_chain(e),
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

/// URL parameters tokio-postgres understands, passed on to it as they are.
const PASSED_ON: &[&str] = &[
    "user",
    "password",
    "dbname",
    "options",
    "application_name",
    "host",
    "hostaddr",
    "port",
    "connect_timeout",
    "tcp_user_timeout",
    "keepalives",
    "keepalives_idle",
    "target_session_attrs",
    "channel_binding",
    "load_balance_hosts",
];

/// Split a `postgres://` URL into what tokio-postgres parses and the query string, as
/// tokio-postgres itself reads a URL: the user information runs to the first `@` (so a raw
/// `?` in a password stays in the password), and the query starts at the first `?` after it.
fn split_query(url: &str) -> Result<(String, &str), StoreError> {
    let Some(rest) = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
    else {
        return Err(StoreError::Url(
            "not a postgres:// URL: give postgres://user:password@host:port/dbname?sslmode=require"
                .into(),
        ));
    };
    let host_from = rest.find('@').map_or(0, |at| at + 1);
    let (host_part, query) = match rest[host_from..].find('?') {
        Some(q) => (&rest[host_from..host_from + q], &rest[host_from + q + 1..]),
        None => (&rest[host_from..], ""),
    };
    if host_part.contains('@') {
        return Err(StoreError::Url(
            "the URL has more than one '@': percent-encode an '@' in the user or password as %40"
                .into(),
        ));
    }
    let base = format!("{}{host_part}", &url[..url.len() - rest.len() + host_from]);
    Ok((base, query))
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
        assert_eq!(
            format!("{s:?}"),
            "PostgresSettings(pg-x.aivencloud.com:12359/defaultdb as avnadmin, sslmode=require)"
        );
    }

    #[test]
    fn parameters_tokio_postgres_knows_are_passed_on() {
        let s = PostgresSettings::parse(
            "postgres://u@h/db?sslmode=disable&application_name=checksite&connect_timeout=5",
        )
        .unwrap();
        assert_eq!(s.sslmode, "disable");
        assert!(PostgresSettings::parse("postgres://u@h/db?fallback=1").is_err());
    }

    #[test]
    fn unknown_sslmode_is_refused() {
        let e = PostgresSettings::parse("postgres://u@h/db?sslmode=sometimes")
            .unwrap_err()
            .to_string();
        assert!(e.contains("sslmode=sometimes is not known"), "{e}");
    }

    #[test]
    fn a_raw_question_mark_in_the_password_keeps_sslmode() {
        let s = PostgresSettings::parse("postgres://u:pa?ss@h:5432/db?sslmode=require").unwrap();
        assert_eq!(s.sslmode, "require");
        assert_eq!(s.config.get_password(), Some(&b"pa?ss"[..]));
        assert_eq!(s.config.get_ssl_mode(), SslMode::Require);
    }

    #[test]
    fn sslrootcert_is_percent_decoded_without_panicking() {
        for url in [
            "postgres://u@h/db?sslrootcert=/etc/%aé.pem",
            "postgres://u@h/db?sslrootcert=%e9%",
            "postgres://u@h/db?sslrootcert=%2Fnowhere%2Fca.pem",
        ] {
            let e = PostgresSettings::parse(url).unwrap_err().to_string();
            assert!(
                e.contains("sslrootcert") || e.contains("UTF-8"),
                "{url}: {e}"
            );
        }
    }

    #[test]
    fn urls_that_do_not_parse_cleanly_are_refused() {
        for (url, want) in [
            ("postgres://u:p@ss@h/db?sslmode=require", "%40"),
            ("mysql://u@h/db", "postgres://"),
            (
                "postgres://u@h/db?sslmode=require&sslmdoe=verify-full",
                "sslmdoe",
            ),
        ] {
            let e = PostgresSettings::parse(url).unwrap_err().to_string();
            assert!(e.contains(want), "{url}: {e}");
            assert!(!e.contains("ss@h"), "{e}");
        }
    }
}
