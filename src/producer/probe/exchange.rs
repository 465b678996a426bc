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

/// The `Location` of a redirect response (None for any other).
pub(super) fn redirect_location(response: &Response<Incoming>) -> Option<Result<&str, Failure>> {
    let redirect = matches!(
        response.status(),
        StatusCode::MOVED_PERMANENTLY
            | StatusCode::FOUND
            | StatusCode::SEE_OTHER
            | StatusCode::TEMPORARY_REDIRECT
            | StatusCode::PERMANENT_REDIRECT
    );
    let location = response
        .headers()
        .get(header::LOCATION)
        .filter(|_| redirect)?;
    Some(location.to_str().map_err(|_| {
        Failure::new(
            ErrorKind::Redirect,
            "redirect to a Location that is not ASCII",
        )
    }))
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
        let gzip = response
            .headers()
            .get(header::CONTENT_ENCODING)
            .is_some_and(|e| e.as_bytes().eq_ignore_ascii_case(b"gzip"));
        let mut body = response.into_body();
        let mut sink = if gzip {
            Sink::Gzip(Box::new(flate2::write::GzDecoder::new(reading)))
        } else {
            Sink::Plain(reading)
        };
        while !sink.full() {
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
                sink.take(&data)?;
            }
        }
        sink.finish()
    }
}

/// Where the body's bytes go: straight into the reading, or through a gzip decoder
/// (which writes into the reading, so that the cap applies to what it inflates).
enum Sink<'a> {
    Plain(&'a mut BodyReading),
    Gzip(Box<flate2::write::GzDecoder<&'a mut BodyReading>>),
}

impl Sink<'_> {
    fn full(&self) -> bool {
        match self {
            Sink::Plain(reading) => reading.full(),
            Sink::Gzip(decoder) => decoder.get_ref().full(),
        }
    }

    fn take(&mut self, data: &[u8]) -> Result<(), Failure> {
        match self {
            Sink::Plain(reading) => {
                let _ = reading.write(data);
                Ok(())
            }
            Sink::Gzip(decoder) => decoder.write_all(data).map_err(gzip_failure),
        }
    }

    /// A whole gzip stream (not cut by the cap) must end as gzip says.
    fn finish(self) -> Result<(), Failure> {
        match self {
            Sink::Gzip(mut decoder) if !decoder.get_ref().full() => {
                decoder.try_finish().map_err(gzip_failure)
            }
            _ => Ok(()),
        }
    }
}

fn gzip_failure(e: std::io::Error) -> Failure {
    Failure::new(ErrorKind::Body, format!("gzip body cannot be decoded: {e}"))
}

/// The request line's target and the headers every check sends (unless the target's own
/// headers replace them). `elsewhere`: a redirect left the configured site, so the
/// target's credentials (Authorization, Cookie) stay behind.
pub(super) fn request(
    method: &hyper::Method,
    uri: &hyper::Uri,
    extra: &[(String, String)],
    elsewhere: bool,
) -> Result<Request<Empty<Bytes>>, Failure> {
    let bad = |what: String| Failure::new(ErrorKind::Http, what);
    let target = uri.path_and_query().map_or("/", |p| p.as_str());
    let host = match (uri.host(), uri.port()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_string(),
        (None, _) => return Err(bad(format!("no host in {uri}"))),
    };
    let mut request = Request::builder()
        .method(method.clone())
        .uri(target)
        .body(Empty::new())
        .map_err(|e| bad(format!("cannot request {uri}: {e}")))?;
    let headers = request.headers_mut();
    for (name, value) in extra {
        let name = header::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| bad(format!("invalid header name {name:?}")))?;
        let value = HeaderValue::from_str(value)
            .map_err(|_| bad(format!("invalid value for header {name}")))?;
        let credential = [
            header::AUTHORIZATION,
            header::COOKIE,
            header::PROXY_AUTHORIZATION,
        ];
        if !(elsewhere && credential.contains(&name)) {
            headers.append(name, value);
        }
    }
    let defaults = [
        (
            header::HOST,
            HeaderValue::from_str(&host).map_err(|_| bad(format!("invalid host in {uri}")))?,
        ),
        (
            header::USER_AGENT,
            HeaderValue::from_static(concat!("checksite/", env!("CARGO_PKG_VERSION"))),
        ),
        (header::ACCEPT, HeaderValue::from_static("*/*")),
        (header::ACCEPT_ENCODING, HeaderValue::from_static("gzip")),
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
mod tests {
    use super::*;

    #[test]
    fn the_reading_stops_at_the_cap_and_hashes_what_it_took() {
        let mut reading = BodyReading::new(5, true);
        let _ = reading.write(b"abc");
        let _ = reading.write(b"defgh");
        assert!(reading.full());
        assert_eq!((reading.total, reading.kept.as_slice()), (5, &b"abcde"[..]));
        let expected = hex(ring::digest::digest(&ring::digest::SHA256, b"abcde").as_ref());
        assert_eq!(reading.sha256_hex(), expected);
    }

    #[test]
    fn the_target_headers_replace_the_defaults_and_the_host_keeps_its_port() {
        let uri: hyper::Uri = "http://user:pw@example.com:8080/a?b=1".parse().unwrap();
        let extra = [
            ("User-Agent".to_string(), "mine".to_string()),
            ("Authorization".to_string(), "Bearer t".to_string()),
        ];
        let request = request(&hyper::Method::GET, &uri, &extra, false).unwrap();
        assert_eq!(request.uri(), "/a?b=1");
        assert_eq!(request.headers()[header::HOST], "example.com:8080");
        assert_eq!(request.headers()[header::USER_AGENT], "mine");
        assert_eq!(
            request.headers().get_all(header::USER_AGENT).iter().count(),
            1
        );
        assert_eq!(request.headers()[header::AUTHORIZATION], "Bearer t");
        let redirected = super::request(&hyper::Method::GET, &uri, &extra, true).unwrap();
        assert!(!redirected.headers().contains_key(header::AUTHORIZATION));
        assert_eq!(redirected.headers()[header::USER_AGENT], "mine");
        let bad = [("bad name".to_string(), "x".to_string())];
        assert_eq!(request_err(&uri, &bad), ErrorKind::Http);
    }

    fn request_err(uri: &hyper::Uri, extra: &[(String, String)]) -> ErrorKind {
        request(&hyper::Method::GET, uri, extra, false)
            .unwrap_err()
            .kind
    }
}
