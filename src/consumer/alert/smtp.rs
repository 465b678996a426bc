//! E-mail receivers: one message per notification over SMTP (RFC 5321), always over
//! verified TLS: `smtps://host:465` (TLS from the start) or `smtp://host:587` (STARTTLS,
//! required: a server that does not offer it is an error, never a plain-text fallback),
//! with `AUTH PLAIN` when a user is given. A new connection per message, the whole
//! exchange bounded.
//!
//! It never logs the password, and errors name only the server.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::format::Message;
use crate::secret::Secret;
use crate::settings::{ConfigError, err};

/// Longest whole exchange with the server.
const SEND_WITHIN: Duration = Duration::from_secs(30);

/// An SMTP server and what to send through it.
pub(crate) struct Mailer {
    /// TLS from the start (`smtps://`), or after STARTTLS (`smtp://`).
    implicit_tls: bool,
    host: String,
    port: u16,
    from: String,
    to: Vec<String>,
    login: Option<(String, Secret)>,
    tls: Arc<ClientConfig>,
}

impl std::fmt::Display for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.implicit_tls { "smtps" } else { "smtp" };
        write!(f, "{scheme}://{}:{}", self.host, self.port)
    }
}

impl Mailer {
    /// The mailer of an `email` receiver; `at` names it in errors.
    pub(crate) fn new(
        at: &str,
        url: &str,
        from: Option<String>,
        to: Option<Vec<String>>,
        username: Option<String>,
        password: Option<Secret>,
        ca: Option<&std::path::Path>,
    ) -> Result<Mailer, ConfigError> {
        let (implicit_tls, rest, default_port) = if let Some(r) = url.strip_prefix("smtps://") {
            (true, r, 465)
        } else if let Some(r) = url.strip_prefix("smtp://") {
            (false, r, 587)
        } else {
            return err(format!(
                "{at}: url: an email receiver's url is smtps://host[:465] or smtp://host[:587] (STARTTLS)"
            ));
        };
        let authority = rest.trim_end_matches('/');
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse()
                    .map_err(|_| ConfigError(format!("{at}: url: the port is not a number")))?,
            ),
            None => (authority, default_port),
        };
        if host.is_empty() || authority.contains(['@', '/', '?']) {
            return err(format!(
                "{at}: url: give smtps://host:port (credentials go in username and password_file)"
            ));
        }
        let address = |a: &str| a.contains('@') && !a.contains(['<', '>', '\r', '\n', ' ']);
        let Some(from) = from.filter(|f| address(f)) else {
            return err(format!("{at}: from: give the sender's address"));
        };
        let to = to.unwrap_or_default();
        if to.is_empty() || !to.iter().all(|t| address(t)) {
            return err(format!("{at}: to: give one or more recipients' addresses"));
        }
        let login = match (username, password) {
            (Some(u), Some(p)) => Some((u, p)),
            (None, None) => None,
            _ => {
                return err(format!(
                    "{at}: give both username and password_file, or neither"
                ));
            }
        };
        let tls =
            super::webhook::tls_config(ca).map_err(|e| ConfigError(format!("{at}: ca: {e}")))?;
        Ok(Mailer {
            implicit_tls,
            host: host.to_string(),
            port,
            from,
            to,
            login,
            tls,
        })
    }

    /// Send `message` as an e-mail; Ok once the server accepted it.
    pub(crate) async fn send(&self, message: &Message) -> Result<(), String> {
        match tokio::time::timeout(SEND_WITHIN, self.send_unbounded(message)).await {
            Ok(done) => done.map_err(|e| format!("{self}: {e}")),
            Err(_) => Err(format!("{self}: no end within {} s", SEND_WITHIN.as_secs())),
        }
    }

    async fn send_unbounded(&self, message: &Message) -> Result<(), String> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        let name = ServerName::try_from(self.host.clone()).map_err(|e| e.to_string())?;
        let connector = tokio_rustls::TlsConnector::from(self.tls.clone());
        if self.implicit_tls {
            let tls = connector
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            let mut s = BufReader::new(tls);
            expect(&mut s, 220).await?;
            self.after_greeting(&mut s, message).await
        } else {
            let mut s = BufReader::new(tcp);
            expect(&mut s, 220).await?;
            let offered = command(&mut s, "EHLO checksite", 250).await?;
            if !offered.iter().any(|l| l.eq_ignore_ascii_case("STARTTLS")) {
                return Err("the server does not offer STARTTLS: not sending in plain text".into());
            }
            command(&mut s, "STARTTLS", 220).await?;
            let tls = connector
                .connect(name, s.into_inner())
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            self.after_greeting(&mut BufReader::new(tls), message).await
        }
    }

    /// EHLO over TLS, AUTH, the envelope, the message, QUIT.
    async fn after_greeting<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        s: &mut BufReader<S>,
        message: &Message,
    ) -> Result<(), String> {
        command(s, "EHLO checksite", 250).await?;
        if let Some((user, password)) = &self.login {
            let token = base64::engine::general_purpose::STANDARD
                .encode(format!("\0{user}\0{}", password.expose()));
            command(s, &format!("AUTH PLAIN {token}"), 235)
                .await
                .map_err(|_| "the server refused the user and password".to_string())?;
        }
        command(s, &format!("MAIL FROM:<{}>", self.from), 250).await?;
        for to in &self.to {
            command(s, &format!("RCPT TO:<{to}>"), 250).await?;
        }
        command(s, "DATA", 354).await?;
        s.get_mut()
            .write_all(&self.data(message))
            .await
            .map_err(|e| e.to_string())?;
        expect(s, 250).await?;
        let _ = command(s, "QUIT", 221).await;
        Ok(())
    }

    /// The message, headers and dot-stuffed body, ending with `<CRLF>.<CRLF>`.
    fn data(&self, message: &Message) -> Vec<u8> {
        let subject = if message.title.is_ascii() {
            message.title.clone()
        } else {
            format!(
                "=?utf-8?B?{}?=",
                base64::engine::general_purpose::STANDARD.encode(&message.title)
            )
        };
        let mut out = format!(
            "From: {}\r\nTo: {}\r\nSubject: {subject}\r\nDate: {}\r\nMessage-ID: <{}@checksite>\r\n\
             MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n",
            self.from,
            self.to.join(", "),
            chrono::Utc::now().to_rfc2822(),
            uuid::Uuid::now_v7().simple(),
        );
        let body = String::from_utf8_lossy(&message.body);
        for line in body.lines() {
            if line.starts_with('.') {
                out.push('.');
            }
            out.push_str(line);
            out.push_str("\r\n");
        }
        out.push_str(".\r\n");
        out.into_bytes()
    }
}

/// Send `line` and expect `code`; the reply's lines after the code (EHLO's extensions).
async fn command<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut BufReader<S>,
    line: &str,
    code: u16,
) -> Result<Vec<String>, String> {
    s.get_mut()
        .write_all(format!("{line}\r\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let verb = line.split(' ').next().unwrap_or(line);
    expect(s, code).await.map_err(|e| format!("{verb}: {e}"))
}

/// Read one reply (its continuation lines too) and check its code.
async fn expect<S: AsyncRead + Unpin>(
    s: &mut BufReader<S>,
    code: u16,
) -> Result<Vec<String>, String> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if s.read_line(&mut line).await.map_err(|e| e.to_string())? == 0 {
            return Err("the server closed the connection".into());
        }
        let line = line.trim_end();
        let got: u16 = line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
        if got != code && !(code == 250 && got == 251) {
            return Err(format!("the server answered {:?}", truncate(line)));
        }
        lines.push(line.get(4..).unwrap_or("").to_string());
        if line.as_bytes().get(3) != Some(&b'-') {
            return Ok(lines);
        }
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(120).collect()
}
