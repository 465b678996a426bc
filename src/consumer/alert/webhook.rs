//! One POST of a notification to the webhook: HTTP/1.1 over TCP or rustls (verified
//! against the web PKI and `CK_ALERT_CA`), bounded in time, a new connection each time
//! (a notification is rare; a kept connection would only be one more thing to go stale).
//!
//! It never logs or returns the webhook URL's path or query: Slack's and others' hold
//! the token. Errors name only scheme://host:port.

use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::format::Message;
use crate::settings::ConfigError;

/// Longest wait to connect (and shake hands) with the receiver.
const CONNECT_WITHIN: Duration = Duration::from_secs(5);

/// Longest wait for one whole delivery: a slow receiver is a failed attempt, retried.
const DELIVER_WITHIN: Duration = Duration::from_secs(10);

/// Most bytes read looking for the status line.
const STATUS_LINE_MOST: usize = 8 * 1024;

/// Where notifications go, parsed once.
#[derive(Clone)]
pub(crate) struct Endpoint {
    tls: bool,
    host: String,
    port: u16,
    /// The request target: path and query (origin form).
    target: String,
}

impl std::fmt::Display for Endpoint {
    /// scheme://host:port/… — never the path, which may hold a token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        write!(f, "{scheme}://{}:{}/…", self.host, self.port)
    }
}

impl Endpoint {
    /// `CK_ALERT_WEBHOOK_URL`, checked; the message never quotes the URL (it may hold a token).
    pub(crate) fn parse(url: &str) -> Result<Endpoint, ConfigError> {
        let bad = |why: &str| {
            ConfigError(format!(
                "CK_ALERT_WEBHOOK_URL is not a webhook URL: {why}; give http:// or https://host[:port]/path"
            ))
        };
        let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(bad("the scheme is not http:// or https://"));
        };
        let rest = rest.split('#').next().unwrap_or("");
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, target) = rest.split_at(authority_end);
        if authority.contains('@') {
            return Err(bad(
                "user:password@ is not supported (put a token in the path)",
            ));
        }
        let (host, port) = match authority.strip_prefix('[') {
            Some(v6) => {
                let (host, after) = v6.split_once(']').ok_or_else(|| bad("an unclosed ["))?;
                (host, after.strip_prefix(':'))
            }
            None => match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            },
        };
        if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c.is_control()) {
            return Err(bad("there is no host"));
        }
        let port = match port {
            None => {
                if tls {
                    443
                } else {
                    80
                }
            }
            Some(p) => p.parse().map_err(|_| bad("the port is not a number"))?,
        };
        if target.contains(|c: char| c.is_whitespace() || c.is_control()) {
            return Err(bad("the path holds spaces or control characters"));
        }
        let target = match target {
            "" => "/".to_string(),
            t if t.starts_with('?') => format!("/{t}"),
            t => t.to_string(),
        };
        Ok(Endpoint {
            tls,
            host: host.to_string(),
            port,
            target,
        })
    }

    /// The same endpoint with `path` when it was given none (`/`).
    pub(crate) fn or_path(mut self, path: &str) -> Endpoint {
        if self.target == "/" {
            self.target = path.to_string();
        }
        self
    }

    /// POST `message`; Ok once the receiver answered 2xx.
    pub(crate) async fn post(
        &self,
        tls: &Arc<ClientConfig>,
        message: &Message,
    ) -> Result<(), String> {
        match tokio::time::timeout(DELIVER_WITHIN, self.post_unbounded(tls, message)).await {
            Ok(done) => done,
            Err(_) => Err(format!(
                "{self}: no answer within {} s",
                DELIVER_WITHIN.as_secs()
            )),
        }
    }

    async fn post_unbounded(
        &self,
        tls: &Arc<ClientConfig>,
        message: &Message,
    ) -> Result<(), String> {
        let fail = |what: &str, e: &dyn std::fmt::Display| format!("{self}: {what}: {e}");
        let tcp = tokio::time::timeout(
            CONNECT_WITHIN,
            TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        .map_err(|_| {
            format!(
                "{self}: cannot connect within {} s",
                CONNECT_WITHIN.as_secs()
            )
        })?
        .map_err(|e| fail("cannot connect", &e))?;
        let _ = tcp.set_nodelay(true);
        let request = self.request(message);
        let status = if self.tls {
            let name = ServerName::try_from(self.host.clone())
                .map_err(|e| fail("not a TLS server name", &e))?;
            let stream = tokio::time::timeout(
                CONNECT_WITHIN,
                tokio_rustls::TlsConnector::from(tls.clone()).connect(name, tcp),
            )
            .await
            .map_err(|_| {
                format!(
                    "{self}: no TLS handshake within {} s",
                    CONNECT_WITHIN.as_secs()
                )
            })?
            .map_err(|e| fail("TLS", &e))?;
            exchange(stream, &request).await
        } else {
            exchange(tcp, &request).await
        }
        .map_err(|e| fail("HTTP", &e))?;
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(format!("{self}: the receiver answered HTTP {status}"))
        }
    }

    /// The whole HTTP/1.1 request: origin form, the host in its header, one request per
    /// connection.
    fn request(&self, message: &Message) -> Vec<u8> {
        let mut head = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: {}\r\n\
             User-Agent: checksite/{}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.target,
            self.host_header(),
            message.content_type,
            env!("CARGO_PKG_VERSION"),
            message.body.len()
        );
        for (name, value) in &message.headers {
            // A value is one line: no header can be smuggled in.
            let value: String = value.chars().filter(|c| !c.is_control()).collect();
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        let mut request = head.into_bytes();
        request.extend_from_slice(&message.body);
        request
    }

    fn host_header(&self) -> String {
        let default_port = if self.tls { 443 } else { 80 };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == default_port {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// Send `request` and read the answer's status code; the rest of the answer is not
/// needed (the connection closes with it).
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    request: &[u8],
) -> Result<u16, String> {
    stream.write_all(request).await.map_err(|e| e.to_string())?;
    stream.flush().await.map_err(|e| e.to_string())?;
    let mut answer = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    loop {
        if let Some(end) = answer.windows(2).position(|w| w == b"\r\n") {
            return status_code(&answer[..end]);
        }
        if answer.len() >= STATUS_LINE_MOST {
            return Err("no HTTP status line in the answer".into());
        }
        let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("the receiver closed the connection without answering".into());
        }
        answer.extend_from_slice(&chunk[..n]);
    }
}

/// `HTTP/1.1 204 No Content` → 204.
fn status_code(line: &[u8]) -> Result<u16, String> {
    let line = String::from_utf8_lossy(line);
    let mut words = line.split(' ');
    match (words.next(), words.next().and_then(|c| c.parse().ok())) {
        (Some(v), Some(code)) if v.starts_with("HTTP/1.") => Ok(code),
        _ => Err(format!(
            "not an HTTP answer: {:?}",
            line.chars().take(40).collect::<String>()
        )),
    }
}

/// The rustls configuration for the webhook: the web PKI roots and `ca`.
pub(crate) fn tls_config(ca: Option<&std::path::Path>) -> Result<Arc<ClientConfig>, String> {
    let roots = crate::tls::web_roots_and(ca).map_err(|e| format!("CK_ALERT_CA: {e}"))?;
    let config = ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_in_the_path_is_never_shown() {
        let e = Endpoint::parse("https://hooks.slack.com/services/T0/B0/sEcReT").unwrap();
        assert_eq!(e.to_string(), "https://hooks.slack.com:443/…");
        assert_eq!(e.host_header(), "hooks.slack.com");
        assert_eq!(e.target, "/services/T0/B0/sEcReT");
        let e = Endpoint::parse("http://[::1]:8080?token=sEcReT#frag").unwrap();
        assert_eq!(e.to_string(), "http://::1:8080/…");
        assert_eq!(e.host_header(), "[::1]:8080");
        assert_eq!(e.target, "/?token=sEcReT");
        for bad in [
            "hooks.example/x",
            "ftp://h/x",
            "https://u:sEcReT@h/x",
            "http://h:99999/sEcReT",
            "http:///sEcReT",
            "http://h/a b?sEcReT",
        ] {
            let msg = Endpoint::parse(bad).err().unwrap().0;
            assert!(!msg.contains("sEcReT"), "{msg}");
        }
    }

    #[test]
    fn the_request_is_origin_form_and_the_status_is_read() {
        let e = Endpoint::parse("http://127.0.0.1:9/hook?t=1").unwrap();
        let message = Message {
            body: b"{}".to_vec(),
            content_type: "application/json",
            headers: vec![("Title", "a\r\nX-Evil: 1".into())],
            title: String::new(),
        };
        let request = String::from_utf8(e.request(&message)).unwrap();
        assert!(request.contains("\r\nTitle: aX-Evil: 1\r\n"), "{request}");
        assert!(request.starts_with("POST /hook?t=1 HTTP/1.1\r\nHost: 127.0.0.1:9\r\n"));
        assert!(request.contains("Content-Length: 2\r\nConnection: close\r\n"));
        assert!(request.ends_with("\r\n\r\n{}"));
        assert_eq!(status_code(b"HTTP/1.1 204 No Content"), Ok(204));
        assert_eq!(status_code(b"HTTP/1.0 500"), Ok(500));
        assert!(status_code(b"SSH-2.0-OpenSSH").is_err());
    }
}
