//! One HTTP/1.1 request over a fresh connection, and its answer: the status, and the body
//! read into a [`BodyReading`] (hashed, capped, gunzipped, kept only when it is needed).
//!
//! This module owns the request and the response. It never connects (that is
//! `super::connect`), never reuses a connection, and never waits past the deadline.

use std::future::Future;
use std::io::Write;
use std::pin::{Pin, pin};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, timeout_at};

use super::Failure;
use crate::event::ErrorKind;

/// The largest response head read (as ureq and most clients allow).
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// The most response headers read (as ureq allowed; hyper's default is 100).
const MAX_HEADERS: usize = 128;

/// A request made: its answer's head, and the connection still open for its body.
pub(super) struct Answer<IO: AsyncRead + AsyncWrite + Unpin + Send + 'static> {
    pub(super) response: Response<Incoming>,
    connection: Driven<IO>,
}

/// hyper's connection future, polled alongside what waits on it, in the check's own
/// task: no task spawned per check and no wake-up of another thread.
struct Driven<IO: AsyncRead + AsyncWrite + Unpin + Send + 'static> {
    connection: Pin<Box<http1::Connection<TokioIo<IO>, Empty<Bytes>>>>,
    done: bool,
}

impl<IO: AsyncRead + AsyncWrite + Unpin + Send + 'static> Driven<IO> {
    async fn run<F: Future>(&mut self, work: F) -> F::Output {
        let mut work = pin!(work);
        if !self.done {
            tokio::select! {
                biased;
                out = &mut work => return out,
                // Ended (or failed): what waits on it gets its data or its error now.
                _ = self.connection.as_mut() => self.done = true,
            }
        }
        work.await
    }
}

/// Send `request` over `io` and wait for the answer's head, until `deadline`.
pub(super) async fn send<IO: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    io: IO,
    request: Request<Empty<Bytes>>,
    deadline: Instant,
) -> Result<Answer<IO>, Failure> {
    let handshake = http1::Builder::new()
        .max_buf_size(MAX_HEAD_BYTES)
        // Strict: the buffer alone may take in more than its size in one read.
        .max_header_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS)
        .handshake(TokioIo::new(io))
        .await;
    let (mut sender, connection) = handshake.map_err(http_failure)?;
    let mut connection = Driven {
        connection: Box::pin(connection),
        done: false,
    };
    let sent = connection
        .run(timeout_at(deadline, sender.send_request(request)))
        .await;
    match sent {
        Ok(Ok(response)) => Ok(Answer {
            response,
            connection,
        }),
        Ok(Err(e)) => Err(http_failure(e)),
        Err(_) => Err(Failure::timeout("waiting for the response")),
    }
}

fn http_failure(e: hyper::Error) -> Failure {
    Failure::new(ErrorKind::Http, format!("invalid or missing response: {e}"))
}

/// The `Location` of a redirect response, as sent (None for any other response).
pub(super) fn redirect_location(response: &Response<Incoming>) -> Option<&[u8]> {
    let redirect = matches!(
        response.status(),
        StatusCode::MOVED_PERMANENTLY
            | StatusCode::FOUND
            | StatusCode::SEE_OTHER
            | StatusCode::TEMPORARY_REDIRECT
            | StatusCode::PERMANENT_REDIRECT
    );
    response
        .headers()
        .get(header::LOCATION)
        .filter(|_| redirect)
        .map(HeaderValue::as_bytes)
}

/// What is read from a body: its size, its SHA-256, and (when asked) its first bytes.
pub(super) struct BodyReading {
    /// Bytes read (after gunzipping), at most the cap.
    pub(super) total: u64,
    /// Kept bytes, when `keep`.
    pub(super) kept: Vec<u8>,
    keep: bool,
    cap: u64,
    hasher: ring::digest::Context,
}

impl BodyReading {
    /// Read up to `cap` bytes; keep them when `keep`, otherwise only hash them.
    pub(super) fn new(cap: u64, keep: bool) -> BodyReading {
        BodyReading {
            total: 0,
            kept: Vec::new(),
            keep,
            cap,
            hasher: ring::digest::Context::new(&ring::digest::SHA256),
        }
    }

    fn full(&self) -> bool {
        self.total >= self.cap
    }

    /// The SHA-256 of what was read, in hex.
    pub(super) fn sha256_hex(self) -> String {
        hex(self.hasher.finish().as_ref())
    }
}

impl Write for BodyReading {
    /// Takes what fits under the cap; the rest is ignored (and the reading stops).
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let room = usize::try_from(self.cap - self.total.min(self.cap)).unwrap_or(usize::MAX);
        let taken = &data[..data.len().min(room)];
        self.hasher.update(taken);
        if self.keep {
            self.kept.extend_from_slice(taken);
        }
        self.total += taken.len() as u64;
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin + Send + 'static> Answer<IO> {
    /// Read the body into `reading` until its end, the cap or `deadline`. An error leaves
    /// in `reading` what was read before it.
    pub(super) async fn read_body(
        self,
        reading: &mut BodyReading,
        deadline: Instant,
    ) -> Result<(), Failure> {
        let Answer {
            response,
            mut connection,
        } = self;
        let encoding = response.headers().get(header::CONTENT_ENCODING).map(|e| {
            String::from_utf8_lossy(e.as_bytes())
                .trim()
                .to_ascii_lowercase()
        });
        let mut body = response.into_body();
        let mut decoder = Decoder::new(encoding.as_deref(), reading);
        while !decoder.full() {
            let frame = match connection.run(timeout_at(deadline, body.frame())).await {
                Err(_) => return Err(Failure::timeout("reading the body")),
                Ok(None) => break,
                Ok(Some(Err(e))) => {
                    return Err(Failure::new(
                        ErrorKind::Body,
                        format!("body cut short: {e}"),
                    ));
                }
                Ok(Some(Ok(frame))) => frame,
            };
            if let Ok(data) = frame.into_data() {
                decoder.take(&data)?;
            }
        }
        decoder.finish()
    }
}

/// The body's bytes on their way into the reading: as they come, or through the decoder
/// its `Content-Encoding` names (gzip; deflate, zlib-wrapped as RFC 9110 says or raw as
/// some servers send it, told apart by its first two bytes as curl and urllib3 do). The
/// decoders write into the reading, so that the cap applies to what they inflate. Any
/// other encoding is read as it comes (the status decides; a regex sees the raw bytes).
struct Decoder<'a> {
    sink: Sink<'a>,
    /// Bytes received before decoding: none means an empty body, whatever the encoding
    /// (the answer to a HEAD, a 204 or a 304 carries GET's headers and no body).
    received: u64,
}

enum Sink<'a> {
    Plain(&'a mut BodyReading),
    Gzip(Box<flate2::write::GzDecoder<&'a mut BodyReading>>),
    Zlib(Box<flate2::write::ZlibDecoder<&'a mut BodyReading>>),
    RawDeflate(Box<flate2::write::DeflateDecoder<&'a mut BodyReading>>),
    /// `deflate` before its first two bytes are in.
    Deflate(Option<&'a mut BodyReading>, Vec<u8>),
}

impl<'a> Decoder<'a> {
    fn new(encoding: Option<&str>, reading: &'a mut BodyReading) -> Decoder<'a> {
        let sink = match encoding {
            Some("gzip" | "x-gzip") => Sink::Gzip(Box::new(flate2::write::GzDecoder::new(reading))),
            Some("deflate") => Sink::Deflate(Some(reading), Vec::new()),
            _ => Sink::Plain(reading),
        };
        Decoder { sink, received: 0 }
    }

    fn full(&self) -> bool {
        match &self.sink {
            Sink::Plain(reading) => reading.full(),
            Sink::Gzip(d) => d.get_ref().full(),
            Sink::Zlib(d) => d.get_ref().full(),
            Sink::RawDeflate(d) => d.get_ref().full(),
            Sink::Deflate(reading, _) => reading.as_ref().is_some_and(|r| r.full()),
        }
    }

    fn take(&mut self, data: &[u8]) -> Result<(), Failure> {
        self.received += data.len() as u64;
        match &mut self.sink {
            Sink::Plain(reading) => {
                let _ = reading.write(data);
                Ok(())
            }
            Sink::Gzip(d) => d.write_all(data).map_err(decode_failure),
            Sink::Zlib(d) => d.write_all(data).map_err(decode_failure),
            Sink::RawDeflate(d) => d.write_all(data).map_err(decode_failure),
            Sink::Deflate(reading, head) => {
                head.extend_from_slice(data);
                if head.len() < 2 {
                    return Ok(());
                }
                let (Some(reading), head) = (reading.take(), std::mem::take(head)) else {
                    return Ok(());
                };
                // RFC 1950: CM 8 and a header check that is a multiple of 31.
                let zlib =
                    head[0] & 0x0f == 8 && (u16::from(head[0]) << 8 | u16::from(head[1])) % 31 == 0;
                self.sink = if zlib {
                    Sink::Zlib(Box::new(flate2::write::ZlibDecoder::new(reading)))
                } else {
                    Sink::RawDeflate(Box::new(flate2::write::DeflateDecoder::new(reading)))
                };
                self.received -= head.len() as u64;
                self.take(&head)
            }
        }
    }

    /// A whole compressed stream (not cut by the cap) must end as its format says.
    fn finish(self) -> Result<(), Failure> {
        if self.received == 0 || self.full() {
            return Ok(());
        }
        match self.sink {
            Sink::Plain(_) => Ok(()),
            Sink::Gzip(mut d) => d.try_finish().map_err(decode_failure),
            Sink::Zlib(mut d) => d.try_finish().map_err(decode_failure),
            Sink::RawDeflate(mut d) => d.try_finish().map_err(decode_failure),
            Sink::Deflate(..) => Err(Failure::new(
                ErrorKind::Body,
                "deflate body cannot be decoded: cut short",
            )),
        }
    }
}

fn decode_failure(e: std::io::Error) -> Failure {
    Failure::new(
        ErrorKind::Body,
        format!("compressed body cannot be decoded: {e}"),
    )
}

/// What a request of a check may carry besides the target's headers.
pub(super) struct Credentials<'a> {
    /// The request goes to the configured URL's origin: the target's `Authorization`,
    /// `Cookie` and `Proxy-Authorization` headers go with it; elsewhere they stay behind.
    pub(super) same_origin: bool,
    /// `Authorization: Basic` from the URL's user information (same origin only).
    pub(super) basic: Option<&'a HeaderValue>,
    /// The check's cookies that apply to this URL.
    pub(super) cookie: Option<String>,
}

/// `Authorization: Basic` for the user information of `url` (`http://user:pass@host/`,
/// percent-decoded as curl and python-requests do); None when it has none.
pub(super) fn basic_auth(url: &url::Url) -> Option<HeaderValue> {
    use base64::Engine;
    if url.username().is_empty() && url.password().is_none() {
        return None;
    }
    let decode = |s: &str| percent_encoding::percent_decode_str(s).collect::<Vec<u8>>();
    let mut pair = decode(url.username());
    pair.push(b':');
    pair.extend(decode(url.password().unwrap_or("")));
    let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
    HeaderValue::from_str(&format!("Basic {encoded}")).ok()
}

/// Bytes sent as they are in a request target; every other byte is percent-encoded (the
/// URL parser leaves a few, such as `{` or `|`, that the request line must not carry).
fn request_target(url: &url::Url) -> String {
    let raw = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    };
    let mut target = String::with_capacity(raw.len());
    for b in raw.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%".contains(&b) {
            target.push(char::from(b));
        } else {
            target.push_str(&format!("%{b:02X}"));
        }
    }
    target
}

/// The request for `url` with the headers every check sends (unless the target's own
/// headers replace them) and the `credentials` that apply to it.
pub(super) fn request(
    method: &hyper::Method,
    url: &url::Url,
    extra: &[(String, String)],
    credentials: &Credentials<'_>,
) -> Result<Request<Empty<Bytes>>, Failure> {
    let bad = |what: String| Failure::new(ErrorKind::Http, what);
    let shown = || crate::secret::redact_url(url.as_str()).into_owned();
    let host = match (url.host_str(), url.port()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_string(),
        (None, _) => return Err(bad(format!("no host in {}", shown()))),
    };
    let mut request = Request::builder()
        .method(method.clone())
        .uri(request_target(url))
        .body(Empty::new())
        .map_err(|e| bad(format!("cannot request {}: {e}", shown())))?;
    let headers = request.headers_mut();
    let secret = [
        header::AUTHORIZATION,
        header::COOKIE,
        header::PROXY_AUTHORIZATION,
    ];
    for (name, value) in extra {
        let name = header::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| bad(format!("invalid header name {name:?}")))?;
        let value = HeaderValue::from_str(value)
            .map_err(|_| bad(format!("invalid value for header {name}")))?;
        if credentials.same_origin || !secret.contains(&name) {
            headers.append(name, value);
        }
    }
    if let Some(basic) = credentials.basic
        && !headers.contains_key(header::AUTHORIZATION)
    {
        headers.insert(header::AUTHORIZATION, basic.clone());
    }
    if let Some(jar) = &credentials.cookie {
        // One Cookie header (RFC 6265): the target's own first, then the check's.
        let value = match headers.get(header::COOKIE).map(HeaderValue::to_str) {
            Some(Ok(own)) => format!("{own}; {jar}"),
            _ => jar.clone(),
        };
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(header::COOKIE, value);
        }
    }
    let defaults = [
        (
            header::HOST,
            HeaderValue::from_str(&host)
                .map_err(|_| bad(format!("invalid host in {}", shown())))?,
        ),
        (
            header::USER_AGENT,
            HeaderValue::from_static(concat!("checksite/", env!("CARGO_PKG_VERSION"))),
        ),
        (header::ACCEPT, HeaderValue::from_static("*/*")),
        (
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("gzip, deflate"),
        ),
        // Never reused: a new connection per check proves the site accepts them.
        (header::CONNECTION, HeaderValue::from_static("close")),
    ];
    for (name, value) in defaults {
        if !headers.contains_key(&name) {
            headers.insert(name, value);
        }
    }
    Ok(request)
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

#[cfg(test)]
mod tests;
