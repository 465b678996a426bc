//! `CK_HTTP_CONFIG`: TLS and basic auth on the HTTP endpoint, from a web config file in
//! the Prometheus exporter-toolkit format (what `--web.config.file` takes, and `promtool
//! check web-config` checks):
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: server.crt
//!   key_file: server.key
//!   client_auth_type: RequireAndVerifyClientCert   # optional, with client_ca_file
//!   client_ca_file: ca.pem
//! basic_auth_users:
//!   prometheus: $2y$10$...                          # bcrypt, as `htpasswd -B` writes it
//! ```
//!
//! This module owns reading that file (the subset of YAML it needs: two levels of
//! `key: value`, comments, quotes) and checking a request's credentials. A password is
//! verified by bcrypt once; then its SHA-256 is kept and compared in constant time, so
//! that a scrape every second does not cost a bcrypt each time. It never logs a password
//! or a hash.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;

use crate::settings::{ConfigError, Settings, err};

/// Most bcrypt verifications running at once: a flood of wrong passwords costs at most
/// this many cores, never the program's work.
const VERIFYING_AT_ONCE: usize = 2;

/// Credentials verified and kept (their SHA-256): past this many, the oldest go.
const KEPT: usize = 64;

/// What the HTTP endpoint does besides serving: TLS, basic auth, and whether `/healthz`
/// stays open.
#[derive(Debug)]
pub struct WebConfig {
    /// Server-side TLS, when `tls_server_config` is given.
    pub(crate) tls: Option<Arc<ServerConfig>>,
    /// Basic auth, when `basic_auth_users` is given.
    pub(crate) auth: Option<BasicAuth>,
    /// `CK_HTTP_OPEN_HEALTH=on`: `/healthz` answers without credentials.
    pub(crate) open_health: bool,
}

impl Default for WebConfig {
    /// Plain HTTP, no authentication.
    fn default() -> WebConfig {
        WebConfig {
            tls: None,
            auth: None,
            open_health: false,
        }
    }
}

impl WebConfig {
    /// Whether `req` may be answered: no basic auth set, `/healthz` left open, or the
    /// right user and password.
    pub(crate) async fn lets_in<B>(&self, req: &hyper::Request<B>) -> bool {
        let Some(auth) = &self.auth else {
            return true;
        };
        if self.open_health && req.uri().path() == "/healthz" {
            return true;
        }
        let header = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        auth.allows(header).await
    }

    /// `CK_HTTP_CONFIG` (and `CK_HTTP_OPEN_HEALTH`), read and checked now; None when unset.
    pub fn from_settings(s: &Settings) -> Result<Option<Arc<WebConfig>>, ConfigError> {
        let open_health = match s.get("CK_HTTP_OPEN_HEALTH") {
            None | Some("off") => false,
            Some("on") => true,
            Some(other) => {
                return err(format!(
                    "CK_HTTP_OPEN_HEALTH={other:?}: give on (/healthz without credentials) or off"
                ));
            }
        };
        let Some(path) = s.get("CK_HTTP_CONFIG") else {
            return Ok(None);
        };
        let path = Path::new(path);
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError(format!(
                "CK_HTTP_CONFIG: cannot read {}: {e}",
                path.display()
            ))
        })?;
        let origin = format!("CK_HTTP_CONFIG {}", path.display());
        let doc = parse(&text).map_err(|e| ConfigError(format!("{origin}: {e}")))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut config = WebConfig {
            tls: None,
            auth: None,
            open_health,
        };
        for (key, section) in doc {
            match key.as_str() {
                "tls_server_config" => config.tls = Some(tls(&origin, base, &section)?),
                "basic_auth_users" => config.auth = Some(BasicAuth::new(&origin, section)?),
                other => {
                    return err(format!(
                        "{origin}: {other}: not supported (checksite reads tls_server_config and basic_auth_users)"
                    ));
                }
            }
        }
        Ok(Some(Arc::new(config)))
    }
}

/// A section: its `key: value` lines.
type Section = BTreeMap<String, String>;

/// The file as sections (`tls_server_config:` then indented `key: value` lines); each
/// error names its line.
fn parse(text: &str) -> Result<BTreeMap<String, Section>, String> {
    let mut doc: BTreeMap<String, Section> = BTreeMap::new();
    let mut current: Option<String> = None;
    for (n, raw) in text.lines().enumerate() {
        let line = strip_comment(raw);
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("line {}", n + 1);
        let Some((key, value)) = line.trim().split_once(':') else {
            return Err(format!("{}: expected `key: value`", at()));
        };
        let (key, value) = (key.trim().to_string(), unquote(value.trim()));
        let indented = line.starts_with([' ', '\t']);
        match (indented, &current) {
            (false, _) if value.is_empty() => {
                if doc.insert(key.clone(), Section::new()).is_some() {
                    return Err(format!("{}: {key} given twice", at()));
                }
                current = Some(key);
            }
            (false, _) => {
                return Err(format!(
                    "{}: {key}: expected a section of `key: value` lines",
                    at()
                ));
            }
            (true, Some(section)) => {
                if value.is_empty() || value.starts_with(['[', '{', '-']) {
                    return Err(format!("{}: {section}.{key}: expected one value", at()));
                }
                if let Some(s) = doc.get_mut(section)
                    && s.insert(key.clone(), value).is_some()
                {
                    return Err(format!("{}: {section}.{key} given twice", at()));
                }
            }
            (true, None) => return Err(format!("{}: indented, but under no section", at())),
        }
    }
    Ok(doc)
}

/// The line without a `#` comment (outside quotes).
fn strip_comment(line: &str) -> &str {
    let mut quote = None;
    for (i, c) in line.char_indices() {
        match (c, quote) {
            ('\'' | '"', None) => quote = Some(c),
            (q, Some(open)) if q == open => quote = None,
            ('#', None) if i == 0 || line[..i].ends_with([' ', '\t']) => return &line[..i],
            _ => {}
        }
    }
    line
}

fn unquote(v: &str) -> String {
    let quoted = v.len() >= 2
        && ((v.starts_with('"') && v.ends_with('"')) || (v.starts_with('\'') && v.ends_with('\'')));
    if quoted {
        v[1..v.len() - 1].to_string()
    } else {
        v.to_string()
    }
}

/// The server's TLS from `tls_server_config`; relative paths are the file's.
fn tls(origin: &str, base: &Path, section: &Section) -> Result<Arc<ServerConfig>, ConfigError> {
    let file = |key: &str| -> Result<Option<PathBuf>, ConfigError> {
        Ok(section.get(key).map(|p| base.join(p)))
    };
    for key in section.keys() {
        if ![
            "cert_file",
            "key_file",
            "client_ca_file",
            "client_auth_type",
            "min_version",
        ]
        .contains(&key.as_str())
        {
            return err(format!(
                "{origin}: tls_server_config.{key}: not supported (cert_file, key_file, client_ca_file, client_auth_type, min_version)"
            ));
        }
    }
    let (Some(cert), Some(key)) = (file("cert_file")?, file("key_file")?) else {
        return err(format!(
            "{origin}: tls_server_config needs cert_file and key_file"
        ));
    };
    let field = |name: &str, e: crate::tls::TlsError| {
        ConfigError(format!("{origin}: tls_server_config.{name}: {e}"))
    };
    let chain = crate::tls::load_certs(&cert).map_err(|e| field("cert_file", e))?;
    let private = crate::tls::load_key(&key).map_err(|e| field("key_file", e))?;
    let versions: &[&rustls::SupportedProtocolVersion] =
        match section.get("min_version").map(String::as_str) {
            None | Some("TLS12") => rustls::ALL_VERSIONS,
            Some("TLS13") => &[&rustls::version::TLS13],
            Some(other) => {
                return err(format!(
                    "{origin}: tls_server_config.min_version: {other:?}: give TLS12 or TLS13"
                ));
            }
        };
    let builder = ServerConfig::builder_with_provider(crate::tls::provider())
        .with_protocol_versions(versions)
        .map_err(|e| ConfigError(format!("{origin}: tls_server_config: {e}")))?;
    let builder = client_auth(origin, section, file("client_ca_file")?, builder)?;
    let config = builder.with_single_cert(chain, private).map_err(|e| {
        ConfigError(format!(
            "{origin}: tls_server_config: the key does not fit the certificate: {e}"
        ))
    })?;
    Ok(Arc::new(config))
}

/// `client_auth_type` and `client_ca_file`: whether clients must (or may) show a
/// certificate, and which CA it must come from.
fn client_auth(
    origin: &str,
    section: &Section,
    client_ca: Option<PathBuf>,
    builder: rustls::ConfigBuilder<ServerConfig, rustls::WantsVerifier>,
) -> Result<rustls::ConfigBuilder<ServerConfig, rustls::server::WantsServerCert>, ConfigError> {
    let auth_type = section
        .get("client_auth_type")
        .map_or("NoClientCert", String::as_str);
    let builder = match (auth_type, client_ca) {
        ("NoClientCert", None) => builder.with_no_client_auth(),
        (kind @ ("VerifyClientCertIfGiven" | "RequireAndVerifyClientCert"), Some(ca)) => {
            let roots = crate::tls::root_store(Some(&ca)).map_err(|e| {
                ConfigError(format!("{origin}: tls_server_config.client_ca_file: {e}"))
            })?;
            let verifier = WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                crate::tls::provider(),
            );
            let verifier = if kind == "VerifyClientCertIfGiven" {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier.build().map_err(|e| {
                ConfigError(format!("{origin}: tls_server_config.client_ca_file: {e}"))
            })?;
            builder.with_client_cert_verifier(verifier)
        }
        ("VerifyClientCertIfGiven" | "RequireAndVerifyClientCert", None) => {
            return err(format!(
                "{origin}: tls_server_config.client_auth_type {auth_type} needs client_ca_file"
            ));
        }
        ("NoClientCert", Some(_)) => {
            return err(format!(
                "{origin}: tls_server_config.client_ca_file needs client_auth_type RequireAndVerifyClientCert or VerifyClientCertIfGiven"
            ));
        }
        (other, _) => {
            return err(format!(
                "{origin}: tls_server_config.client_auth_type {other:?}: not supported (NoClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert)"
            ));
        }
    };
    Ok(builder)
}

/// `basic_auth_users`: user → bcrypt hash, and the credentials verified so far.
#[derive(Debug)]
pub(crate) struct BasicAuth {
    users: HashMap<String, String>,
    /// SHA-256 of `user:password` verified, newest last.
    verified: Mutex<Vec<[u8; 32]>>,
    verifying: tokio::sync::Semaphore,
}

/// The hash of a random password nobody knows (cost 10, htpasswd's default): verified
/// for an unknown user, so that it costs what a known one does.
const NOBODY: &str = "$2y$10$ZFOL4J24JIu9DZK4DRBWUe5rs3mD80cDoV6TBEXAypDENjLvfxjxm";

impl BasicAuth {
    fn new(origin: &str, users: Section) -> Result<BasicAuth, ConfigError> {
        if users.is_empty() {
            return err(format!(
                "{origin}: basic_auth_users: give at least one user"
            ));
        }
        for (user, hash) in &users {
            let bcrypt_like = hash.len() == 60
                && ["$2a$", "$2b$", "$2x$", "$2y$"]
                    .iter()
                    .any(|p| hash.starts_with(p));
            if !bcrypt_like {
                return err(format!(
                    "{origin}: basic_auth_users.{user}: not a bcrypt hash (make one with `htpasswd -nbB {user} PASSWORD`)"
                ));
            }
        }
        Ok(BasicAuth {
            users: users.into_iter().collect(),
            verified: Mutex::new(Vec::new()),
            verifying: tokio::sync::Semaphore::new(VERIFYING_AT_ONCE),
        })
    }

    /// Whether `authorization` (the header's value) names a user and its password.
    pub(crate) async fn allows(&self, authorization: Option<&[u8]>) -> bool {
        let Some((user, password)) = authorization.and_then(credentials) else {
            return false;
        };
        let digest = digest_of(&user, &password);
        if self.was_verified(&digest) {
            return true;
        }
        let hash = self.users.get(&user).cloned();
        let Ok(_turn) = self.verifying.acquire().await else {
            return false;
        };
        let verified = tokio::task::spawn_blocking(move || {
            let ok = bcrypt::verify(&password, hash.as_deref().unwrap_or(NOBODY)).unwrap_or(false);
            ok && hash.is_some()
        })
        .await
        .unwrap_or(false);
        if verified {
            let mut kept = self.verified.lock().unwrap_or_else(|e| e.into_inner());
            if kept.len() >= KEPT {
                kept.remove(0);
            }
            kept.push(digest);
        }
        verified
    }

    fn was_verified(&self, digest: &[u8; 32]) -> bool {
        let kept = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        // Every kept digest is compared, each in constant time (no early exit).
        kept.iter().fold(false, |found, k| {
            let diff = k.iter().zip(digest).fold(0u8, |d, (a, b)| d | (a ^ b));
            std::hint::black_box(diff) == 0 || found
        })
    }
}

/// SHA-256 of `user`, a NUL and `password`.
fn digest_of(user: &str, password: &str) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(user.as_bytes());
    ctx.update(&[0]);
    ctx.update(password.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// `Basic base64(user:password)` → (user, password).
fn credentials(header: &[u8]) -> Option<(String, String)> {
    let text = std::str::from_utf8(header).ok()?;
    let (scheme, encoded) = text.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let (user, password) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_subset_of_yaml_a_web_config_needs() {
        let doc = parse(
            "# comment\ntls_server_config:\n  cert_file: 'a b.crt'  # why\n  key_file: \"k#1.key\"\n\nbasic_auth_users:\n  alice: $2y$10$abc\n",
        )
        .unwrap();
        assert_eq!(doc["tls_server_config"]["cert_file"], "a b.crt");
        assert_eq!(doc["tls_server_config"]["key_file"], "k#1.key");
        assert_eq!(doc["basic_auth_users"]["alice"], "$2y$10$abc");
        for (bad, says) in [
            (
                "  indented: first",
                "line 1: indented, but under no section",
            ),
            ("a:\n  b: 1\n  b: 2", "line 3: a.b given twice"),
            (
                "a: 1",
                "line 1: a: expected a section of `key: value` lines",
            ),
            ("a:\n  list:\n", "line 2: a.list: expected one value"),
            ("nothing here", "line 1: expected `key: value`"),
        ] {
            assert_eq!(parse(bad).unwrap_err(), says, "{bad:?}");
        }
    }

    #[tokio::test]
    async fn a_password_is_checked_by_bcrypt_once_then_remembered() {
        // `htpasswd -nbB -C 10 alice s3cret`
        let alice = "$2y$10$ODcSLNjtqIDJf3dvjrO8H.ekjcqpcB4e9TVL2enkifUE1cGyYPfU6";
        let users = Section::from([("alice".to_string(), alice.to_string())]);
        let auth = BasicAuth::new("test", users).unwrap();
        let header = |u: &str, p: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        };
        assert!(
            auth.allows(Some(header("alice", "s3cret").as_bytes()))
                .await
        );
        assert!(auth.was_verified(&digest_of("alice", "s3cret")));
        assert!(
            auth.allows(Some(header("alice", "s3cret").as_bytes()))
                .await
        );
        assert!(!auth.allows(Some(header("alice", "wrong").as_bytes())).await);
        assert!(!auth.allows(Some(header("bob", "s3cret").as_bytes())).await);
        assert!(!auth.allows(Some(b"Bearer x")).await);
        assert!(!auth.allows(None).await);
    }
}
