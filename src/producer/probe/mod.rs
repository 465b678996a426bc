//! One HTTP(S) check of one target: status, timings of each phase, the regex over the
//! body, a hash and (for errors) a prefix of the body, the certificate's expiry, and a
//! clear error kind when it fails.
//!
//! This module owns the measurement: `connect` reaches the site, `exchange` makes the
//! request and reads the answer, and here the redirects are followed and the event filled
//! in. A check is async and runs in its target's task (no thread per check). It never
//! waits past its deadline (the target's timeout; connecting also within the connect
//! timeout), never reads more than the body cap, and never reuses a connection:
//! availability includes connecting.

mod connect;
mod cookies;
mod exchange;

use std::sync::Arc;

use hyper::Method;
use hyper::header::{HeaderValue, SET_COOKIE};
use rustls::ClientConfig;
use tokio::time::Instant;
use url::Url;

use super::config::ProbeSettings;
use super::lookup::LookupPool;
use super::targets::Target;
use crate::event::{CheckEvent, ErrorKind};
use connect::{Connecting, Phases, Site, SiteStream};
use cookies::CookieJar;
use exchange::{Answer, BodyReading, Credentials};

/// Characters of a non-2xx body kept in `body_prefix`.
pub(crate) const BODY_PREFIX_CHARS: usize = 500;
/// Longest `content_match` kept (a greedy regex could match the whole body).
pub(crate) const CONTENT_MATCH_CHARS: usize = 1000;

/// Checks sites. Cheap to clone and share; each check makes its own connections.
#[derive(Clone)]
pub struct Probe {
    settings: ProbeSettings,
    tls: Arc<ClientConfig>,
    producer: String,
    lookups: Arc<LookupPool>,
}

#[derive(Debug)]
/// The probe cannot be set up (a CA file, ...): one line for the user.
pub struct ProbeError(pub String);

impl std::fmt::Display for ProbeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ProbeError {}

/// Why a check failed: the event's `error_kind` and `error`.
#[derive(Debug)]
pub(crate) struct Failure {
    kind: ErrorKind,
    message: String,
}

impl Failure {
    fn new(kind: ErrorKind, message: impl Into<String>) -> Failure {
        Failure {
            kind,
            message: message.into(),
        }
    }

    /// The check's time (or the connect timeout) ran out during `phase`.
    fn timeout(phase: &str) -> Failure {
        Failure::new(ErrorKind::Timeout, format!("timed out ({phase})"))
    }
}

/// The request one hop of a check makes.
struct Hop {
    method: Method,
    url: Url,
    /// Hops made before this one.
    redirects: u32,
}

/// What a check carries from one hop to the next: the configured site's origin and the
/// Basic credentials of its URL (sent to that origin only), and the check's cookies.
struct Session {
    origin: url::Origin,
    basic: Option<HeaderValue>,
    cookies: CookieJar,
}

impl Probe {
    /// A probe with its TLS configuration and root store, built once.
    pub fn new(settings: ProbeSettings, producer: String) -> Result<Probe, ProbeError> {
        let roots = crate::tls::web_roots_and(settings.site_ca.as_deref())
            .map_err(|e| ProbeError(format!("CK_SITE_CA: {e}")))?;
        let tls = ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| ProbeError(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Probe {
            settings,
            tls: Arc::new(tls),
            producer,
            lookups: Arc::default(),
        })
    }

    /// Check `target` now; `planned` is when it was due (None: not scheduled, `--once`).
    pub async fn check(&self, target: &Target, planned: Option<Instant>) -> CheckEvent {
        self.check_counting_redirects(target, planned).await.0
    }

    /// [`Probe::check`], and how many redirects it followed (what the event does not say).
    pub async fn check_counting_redirects(
        &self,
        target: &Target,
        planned: Option<Instant>,
    ) -> (CheckEvent, u32) {
        // The start's wall time and its lateness read together: `checked_at` less
        // `schedule_lag_ms` is the planned slot to the millisecond (a busy machine may
        // stall the thread for milliseconds between any two other steps).
        let (checked_at, now) = (chrono::Utc::now(), Instant::now());
        let lag_ms = planned.map_or(0, |p| now.saturating_duration_since(p).as_millis() as i64);
        let mut event = CheckEvent::starting(&target.url, &self.producer, lag_ms);
        event.checked_at = checked_at;
        event.name = target.name.clone();
        event.group = target.group.clone();
        event.public = (!target.public).then_some(false);
        let start = Instant::now();
        let mut phases = Phases::default();
        let outcome = self.follow(target, start, &mut phases, &mut event).await;
        event.elapsed_ms = start.elapsed().as_millis() as u64;
        let redirects = match event.status {
            Some(_) => phases.connections.saturating_sub(1),
            None => 0,
        };
        event.dns_ms = phases.dns_ms;
        event.connect_ms = phases.connect_ms;
        event.tls_ms = phases.tls_ms;
        event.ip = phases.ip.map(|a| a.ip().to_string());
        event.cert_expires_at = phases.cert_expires_at;
        if let Err(failure) = outcome {
            event.error_kind = Some(failure.kind);
            event.error = Some(failure.message);
        }
        event.up = Some(is_up(target, &event));
        (event, redirects)
    }

    /// Request the target, following redirects, and read the final answer into `event`.
    async fn follow(
        &self,
        target: &Target,
        start: Instant,
        phases: &mut Phases,
        event: &mut CheckEvent,
    ) -> Result<(), Failure> {
        let connecting = Connecting {
            lookups: &self.lookups,
            tls: &self.tls,
            connect_timeout: self.settings.connect_timeout,
            deadline: start + target.timeout,
        };
        let url = Url::parse(&target.url)
            .map_err(|e| Failure::new(ErrorKind::Http, format!("invalid URL: {e}")))?;
        let mut session = Session {
            origin: url.origin(),
            basic: exchange::basic_auth(&url),
            cookies: CookieJar::default(),
        };
        let mut hop = Hop {
            method: Method::from_bytes(target.method.as_bytes())
                .map_err(|_| Failure::new(ErrorKind::Http, "invalid method"))?,
            url,
            redirects: 0,
        };
        loop {
            let site = Site::of(&hop.url)?;
            // Credentials (the URL's, the target's headers) are for the configured site only.
            let same_origin = hop.url.origin() == session.origin;
            let credentials = Credentials {
                same_origin,
                basic: session.basic.as_ref().filter(|_| same_origin),
                cookie: session.cookies.header_for(&hop.url),
            };
            let request = exchange::request(&hop.method, &hop.url, &target.headers, &credentials)?;
            let bounds = (start, connecting.deadline);
            let next = match connecting.open(&site, phases).await? {
                SiteStream::Plain(s) => {
                    let answer = exchange::send(s, request, connecting.deadline).await?;
                    self.answer(answer, hop, (target, &mut session), bounds, event)
                        .await?
                }
                SiteStream::Tls(s) => {
                    let answer = exchange::send(s, request, connecting.deadline).await?;
                    self.answer(answer, hop, (target, &mut session), bounds, event)
                        .await?
                }
            };
            match next {
                Some(next) => hop = next,
                None => return Ok(()),
            }
        }
    }

    /// The next hop when `answer` is a redirect to follow; otherwise read it into `event`.
    async fn answer<IO>(
        &self,
        answer: Answer<IO>,
        hop: Hop,
        (target, session): (&Target, &mut Session),
        (start, deadline): (Instant, Instant),
        event: &mut CheckEvent,
    ) -> Result<Option<Hop>, Failure>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let set_cookies = answer.response.headers().get_all(SET_COOKIE).iter();
        session
            .cookies
            .take(&hop.url, set_cookies.map(HeaderValue::as_bytes));
        let max = self.settings.max_redirects;
        // With 0 the 3xx itself is the answer; otherwise a longer chain is an error.
        if let Some(location) = exchange::redirect_location(&answer.response).filter(|_| max > 0) {
            if hop.redirects >= max {
                return Err(Failure::new(
                    ErrorKind::Redirect,
                    format!("too many redirects (more than {max})"),
                ));
            }
            let url = redirect_target(&hop.url, location)?;
            let see_other = answer.response.status() == hyper::StatusCode::SEE_OTHER;
            let method = match hop.method {
                Method::HEAD => Method::HEAD,
                _ if see_other || hop.method == Method::POST => Method::GET,
                m => m,
            };
            return Ok(Some(Hop {
                method,
                url,
                redirects: hop.redirects + 1,
            }));
        }
        event.ttfb_ms = Some(start.elapsed().as_millis() as u64);
        let status = answer.response.status().as_u16();
        event.status = Some(status);
        let ok = (200..300).contains(&status);
        // Keep the body only when something will be read from it; otherwise just hash it.
        let mut reading = BodyReading::new(self.settings.body_cap, !ok || target.regex.is_some());
        let read = answer.read_body(&mut reading, deadline).await;
        event.bytes = Some(reading.total);
        let text = String::from_utf8_lossy(&reading.kept);
        if ok {
            if let Some(re) = &target.regex {
                event.content_match = re
                    .find(&text)
                    .map(|m| m.as_str().chars().take(CONTENT_MATCH_CHARS).collect());
            }
        } else {
            event.body_prefix = Some(text.chars().take(BODY_PREFIX_CHARS).collect());
        }
        // An incomplete body gets no hash, and the error says why.
        read?;
        event.body_sha256 = Some(reading.sha256_hex());
        Ok(None)
    }
}

/// Where a redirect from `base` to `location` (the header's bytes) goes, resolved as
/// browsers, curl and python-requests do (the WHATWG URL standard, RFC 3986's rules for
/// `..` and `//host`), without its fragment. Bytes past ASCII are percent-encoded, as
/// those clients send them.
fn redirect_target(base: &Url, location: &[u8]) -> Result<Url, Failure> {
    let mut text = String::with_capacity(location.len());
    for &b in location {
        if b.is_ascii() {
            text.push(char::from(b));
        } else {
            text.push_str(&format!("%{b:02X}"));
        }
    }
    let mut url = base.join(&text).map_err(|e| {
        let shown = crate::secret::redact_url(&text).into_owned();
        Failure::new(
            ErrorKind::Redirect,
            format!("redirect to an invalid URL {shown:?}: {e}"),
        )
    })?;
    url.set_fragment(None);
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Failure::new(
            ErrorKind::Redirect,
            format!("redirect to a {} URL, not http(s)", url.scheme()),
        ));
    }
    Ok(url)
}

/// Is the site up by this event? Status expected (2xx/3xx by default) and the regex matched.
pub(crate) fn is_up(target: &Target, event: &CheckEvent) -> bool {
    let Some(status) = event.status else {
        return false;
    };
    if event.error.is_some() {
        return false;
    }
    let status_ok = match &target.expect_status {
        Some(codes) => codes.contains(&status),
        None => (200..400).contains(&status),
    };
    status_ok && (target.regex.is_none() || event.content_match.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolved(base: &str, location: &str) -> String {
        redirect_target(&Url::parse(base).unwrap(), location.as_bytes())
            .map(|u| u.to_string())
            .unwrap_or_else(|f| format!("{:?}: {}", f.kind, f.message))
    }

    #[test]
    fn a_redirect_is_resolved_as_rfc_3986_and_whatwg_say() {
        let base = "https://example.com:8443/a/b?q=1";
        assert_eq!(resolved(base, "http://other.org/x"), "http://other.org/x");
        assert_eq!(resolved(base, "//cdn.org/y"), "https://cdn.org/y");
        assert_eq!(
            resolved(base, "/root?z=2#top"),
            "https://example.com:8443/root?z=2"
        );
        assert_eq!(resolved(base, "c"), "https://example.com:8443/a/c");
        assert_eq!(resolved("http://h", "c"), "http://h/c");
        assert_eq!(resolved("http://h/a/b/x", "../../ok"), "http://h/ok");
        assert_eq!(resolved("http://h/a/b/x", "./../y/./z"), "http://h/a/y/z");
        assert_eq!(resolved("http://h/a?x", "?y"), "http://h/a?y");
        // A full URL in the query is just a query.
        assert_eq!(
            resolved("http://h/", "/login?next=https://app.example/"),
            "http://h/login?next=https://app.example/"
        );
        assert_eq!(resolved("http://h/", "/caf\u{e9}"), "http://h/caf%C3%A9");
        assert_eq!(resolved("http://h/", "/a b"), "http://h/a%20b");
    }

    #[test]
    fn a_redirect_elsewhere_than_http_is_a_redirect_error() {
        assert!(resolved("http://h/", "ftp://h/file").starts_with("Redirect"));
        assert!(resolved("http://h/", "http://bad host/").starts_with("Redirect"));
        assert!(resolved("http://h/", "javascript:alert(1)").starts_with("Redirect"));
    }
}
