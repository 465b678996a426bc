//! The cookies of one check: what its answers set (a sign-in or consent redirect often
//! sets one and sends to a page that needs it), sent back on its later requests as a
//! browser, curl's cookie engine and python-requests do (RFC 6265, section 5).
//!
//! This module owns one check's jar. A jar lives and dies with its check: it is never
//! shared between checks or targets, never written anywhere, and a cookie goes only to the
//! host it was set by (or the domain it names, when that domain covers the host). Left
//! out, on purpose: the public suffix list (a jar lives for one check of one configured
//! target, whose redirects the operator chose) and dates in `Expires` other than the
//! RFC 1123 form (an unreadable date is ignored, the cookie kept for the check).

use url::{Host, Url};

/// Most cookies a jar keeps (a hostile site could set thousands).
const MOST_COOKIES: usize = 50;
/// Longest name + value kept (RFC 6265 asks clients to keep 4096 bytes at least).
const MOST_COOKIE_BYTES: usize = 4096;

#[derive(Debug, Clone, PartialEq)]
struct Cookie {
    name: String,
    value: String,
    /// Lower case, without a leading dot.
    domain: String,
    /// Set without a `Domain` attribute: only for exactly this host.
    host_only: bool,
    path: String,
    secure: bool,
}

/// One check's cookies.
#[derive(Debug, Default)]
pub(super) struct CookieJar {
    cookies: Vec<Cookie>,
}

impl CookieJar {
    /// Take the `Set-Cookie` header values of an answer to a request for `url`.
    pub(super) fn take<'a>(&mut self, url: &Url, set_cookies: impl Iterator<Item = &'a [u8]>) {
        for header in set_cookies {
            let Some((cookie, expired)) = parse(&String::from_utf8_lossy(header), url) else {
                continue;
            };
            self.cookies.retain(|c| {
                (c.name.as_str(), c.domain.as_str(), c.path.as_str())
                    != (
                        cookie.name.as_str(),
                        cookie.domain.as_str(),
                        cookie.path.as_str(),
                    )
            });
            if !expired && self.cookies.len() < MOST_COOKIES {
                self.cookies.push(cookie);
            }
        }
    }

    /// The `Cookie` header for a request to `url` (None: no cookie applies): longer paths
    /// first, then in the order they were set (RFC 6265, 5.4).
    pub(super) fn header_for(&self, url: &Url) -> Option<String> {
        let host = host_of(url)?;
        let secure = url.scheme() == "https";
        let mut sent: Vec<&Cookie> = self
            .cookies
            .iter()
            .filter(|c| {
                let domain_ok = if c.host_only {
                    c.domain == host
                } else {
                    domain_match(&host, &c.domain)
                };
                domain_ok && path_match(url.path(), &c.path) && (secure || !c.secure)
            })
            .collect();
        if sent.is_empty() {
            return None;
        }
        sent.sort_by_key(|c| std::cmp::Reverse(c.path.len()));
        let pairs: Vec<String> = sent
            .iter()
            .map(|c| format!("{}={}", c.name, c.value))
            .collect();
        Some(pairs.join("; "))
    }
}

/// The host as cookies know it: a lower-case name, or an IP address's text.
fn host_of(url: &Url) -> Option<String> {
    match url.host()? {
        Host::Domain(d) => Some(d.to_ascii_lowercase()),
        Host::Ipv4(ip) => Some(ip.to_string()),
        Host::Ipv6(ip) => Some(ip.to_string()),
    }
}

/// RFC 6265 5.1.3: `host` is `domain`, or a name under it (never for an IP address).
fn domain_match(host: &str, domain: &str) -> bool {
    if host == domain {
        return true;
    }
    let is_ip = host.parse::<std::net::IpAddr>().is_ok();
    !is_ip && host.len() > domain.len() && host.ends_with(domain) && {
        let cut = host.len() - domain.len();
        host.as_bytes()[cut - 1] == b'.'
    }
}

/// RFC 6265 5.1.4.
fn path_match(request_path: &str, cookie_path: &str) -> bool {
    request_path == cookie_path
        || (request_path.starts_with(cookie_path)
            && (cookie_path.ends_with('/')
                || request_path.as_bytes().get(cookie_path.len()) == Some(&b'/')))
}

/// RFC 6265 5.1.4: the directory of the request's path.
fn default_path(url: &Url) -> String {
    let path = url.path();
    match path.rfind('/') {
        Some(0) | None => "/".to_string(),
        Some(i) => path[..i].to_string(),
    }
}

/// RFC 6265 5.2 and 5.3: a `Set-Cookie` value received from `url` as a cookie, and
/// whether it is already expired (a deletion); None when it must be ignored.
fn parse(header: &str, url: &Url) -> Option<(Cookie, bool)> {
    let mut parts = header.split(';');
    let (name, value) = parts.next()?.split_once('=')?;
    let (name, value) = (name.trim(), value.trim());
    if name.is_empty() || name.len() + value.len() > MOST_COOKIE_BYTES {
        return None;
    }
    let host = host_of(url)?;
    let mut cookie = Cookie {
        name: name.to_string(),
        value: value.to_string(),
        domain: host.clone(),
        host_only: true,
        path: default_path(url),
        secure: false,
    };
    let (mut max_age, mut expires) = (None::<i64>, None::<chrono::DateTime<chrono::Utc>>);
    for attribute in parts {
        let (key, val) = attribute.split_once('=').unwrap_or((attribute, ""));
        let (key, val) = (key.trim().to_ascii_lowercase(), val.trim());
        match key.as_str() {
            "domain" if !val.is_empty() => {
                let domain = val.trim_start_matches('.').to_ascii_lowercase();
                if !domain_match(&host, &domain) {
                    return None;
                }
                cookie.domain = domain;
                cookie.host_only = false;
            }
            "path" if val.starts_with('/') => cookie.path = val.to_string(),
            "secure" => cookie.secure = true,
            "max-age" => max_age = val.parse().ok().or(max_age),
            "expires" => {
                expires = chrono::DateTime::parse_from_rfc2822(val)
                    .ok()
                    .map(|d| d.to_utc())
                    .or(expires)
            }
            _ => {}
        }
    }
    // RFC 6265bis: a Secure cookie only from a secure origin.
    if cookie.secure && url.scheme() != "https" {
        return None;
    }
    let expired = match max_age {
        Some(seconds) => seconds <= 0,
        None => expires.is_some_and(|at| at <= chrono::Utc::now()),
    };
    Some((cookie, expired))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    fn jar_after(from: &str, headers: &[&str]) -> CookieJar {
        let mut jar = CookieJar::default();
        jar.take(&url(from), headers.iter().map(|h| h.as_bytes()));
        jar
    }

    #[test]
    fn a_cookie_goes_back_to_its_host_and_path_only() {
        let jar = jar_after(
            "http://shop.example/login/form",
            &["sid=abc; Path=/; HttpOnly", "lang=fr", "bad", "=nameless"],
        );
        // lang's default path is /login.
        assert_eq!(
            jar.header_for(&url("http://shop.example/login/x")),
            Some("lang=fr; sid=abc".into())
        );
        assert_eq!(
            jar.header_for(&url("http://shop.example/home")),
            Some("sid=abc".into())
        );
        assert_eq!(
            jar.header_for(&url("http://shop.example/loginx")),
            Some("sid=abc".into())
        );
        assert_eq!(jar.header_for(&url("http://www.shop.example/")), None);
        assert_eq!(jar.header_for(&url("http://other.example/")), None);
    }

    #[test]
    fn a_domain_cookie_covers_the_names_under_it_and_no_other_domain() {
        let jar = jar_after(
            "https://login.shop.example/",
            &["a=1; Domain=.shop.example", "b=2; Domain=other.example"],
        );
        assert_eq!(
            jar.header_for(&url("https://www.shop.example/")),
            Some("a=1".into())
        );
        assert_eq!(
            jar.header_for(&url("https://shop.example/")),
            Some("a=1".into())
        );
        assert_eq!(jar.header_for(&url("https://notshop.example/")), None);
        assert_eq!(jar.header_for(&url("https://other.example/")), None);
    }

    #[test]
    fn secure_cookies_need_https_and_expired_ones_are_deleted() {
        let jar = jar_after("http://h.example/", &["s=1; Secure", "gone=1; Max-Age=0"]);
        assert_eq!(jar.header_for(&url("https://h.example/")), None);
        let mut jar = jar_after("https://h.example/", &["s=1; Secure", "keep=1"]);
        assert_eq!(
            jar.header_for(&url("http://h.example/")),
            Some("keep=1".into())
        );
        assert_eq!(
            jar.header_for(&url("https://h.example/")),
            Some("s=1; keep=1".into())
        );
        jar.take(
            &url("https://h.example/"),
            ["keep=; Expires=Thu, 01 Jan 1970 00:00:00 GMT".as_bytes()].into_iter(),
        );
        assert_eq!(
            jar.header_for(&url("https://h.example/")),
            Some("s=1".into())
        );
    }

    #[test]
    fn an_ip_host_takes_no_domain_but_its_own() {
        let jar = jar_after("http://127.0.0.1:8080/", &["a=1; Domain=0.0.1", "b=2"]);
        assert_eq!(
            jar.header_for(&url("http://127.0.0.1:9090/")),
            Some("b=2".into())
        );
    }
}
