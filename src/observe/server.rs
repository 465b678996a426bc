//! The HTTP endpoint on `CK_HTTP_ADDR`: `GET /metrics`, `/healthz`, `/readyz`, served by
//! hyper's HTTP/1 server on the program's own tokio runtime.
//!
//! It must never stall the program's work: connections are capped ([`MAX_CONNECTIONS`];
//! more are closed at once), a request's head is bounded in size and time, and a
//! connection's whole life is bounded ([`CONNECTION_LIFETIME`]), so a slow or malformed
//! client costs a slot for a while, never a check or a write.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Semaphore;

use super::web_config::WebConfig;
use crate::settings::{ConfigError, Settings, err};

/// Most connections served at once; past it a new connection is closed at once. Room for
/// many slow visitors of the status page beside the scrapers and probes (a page takes a
/// permit of its own while it is made, and a connection lives 60 s at most).
pub const MAX_CONNECTIONS: usize = 512;

/// Longest time to receive a request's head (its line and headers).
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest request head, bytes (hyper's smallest allowed read buffer).
const MAX_HEAD_BYTES: usize = 8 * 1024;

/// Longest life of one connection, keep-alive included: a scraper reconnects.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

/// A response a program makes itself, beyond the metrics and health (the consumer's
/// status page).
#[derive(Debug, Clone)]
pub struct Page {
    /// HTTP status code.
    pub status: u16,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// The body.
    pub body: Bytes,
    /// `Cache-Control: max-age=N` (None: no header).
    pub max_age: Option<u32>,
}

/// A [`Page`] being made.
pub type PageFuture = Pin<Box<dyn Future<Output = Page> + Send>>;

/// What a program serves on its endpoint.
pub trait Endpoints: Send + Sync + 'static {
    /// The metrics, in the text format ([`super::exposition`]).
    fn metrics(&self) -> String;
    /// Ok while the program's loops run; otherwise which one stopped.
    fn live(&self) -> Result<(), String>;
    /// Ok when the program can do its job now; otherwise why not, in one line.
    fn ready(&self) -> Result<(), String>;
    /// A page of the program's own at `path` (with the request's `query`, if any), if it
    /// has one there (otherwise 404).
    fn page(self: Arc<Self>, path: &str, query: Option<&str>) -> Option<PageFuture> {
        let _ = (path, query);
        None
    }
}

/// `CK_HTTP_ADDR` (or `--http-addr`): where to serve, if anywhere.
pub fn http_addr(s: &Settings) -> Result<Option<SocketAddr>, ConfigError> {
    listen_addr(s, "CK_HTTP_ADDR")
}

/// The address to listen on that `var` gives, if any.
pub fn listen_addr(s: &Settings, var: &str) -> Result<Option<SocketAddr>, ConfigError> {
    match s.get(var) {
        None => Ok(None),
        Some(raw) => match raw.parse() {
            Ok(addr) => Ok(Some(addr)),
            Err(_) => err(format!(
                "{var}={raw:?} is not an address to listen on: give IP:PORT, e.g. 127.0.0.1:9464 or [::]:9464"
            )),
        },
    }
}

/// What a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Everything: metrics, health and the program's pages (`CK_HTTP_ADDR` alone).
    All,
    /// `/metrics`, `/healthz`, `/readyz` (`CK_HTTP_ADDR` beside `CK_STATUS_ADDR`).
    Health,
    /// The program's pages only (`CK_STATUS_ADDR`): however many visitors hold its
    /// connections, the health endpoints are on another listener.
    Pages,
}

/// The listening socket, bound at start so that a busy or unusable address is a
/// configuration error, not a surprise later.
#[derive(Debug)]
pub struct HttpListener {
    listener: std::net::TcpListener,
    scope: Scope,
    /// The setting it comes from, for messages.
    setting: &'static str,
    /// TLS and basic auth (`CK_HTTP_CONFIG`).
    web: Option<Arc<WebConfig>>,
}

impl HttpListener {
    /// Listen on `addr` (`CK_HTTP_ADDR`) for everything.
    pub fn bind(addr: SocketAddr) -> Result<HttpListener, ConfigError> {
        HttpListener::bind_for(addr, Scope::All, "CK_HTTP_ADDR")
    }

    /// The same listener with TLS and basic auth as `web` says (`CK_HTTP_CONFIG`).
    pub fn with(mut self, web: Option<Arc<WebConfig>>) -> HttpListener {
        self.web = web;
        self
    }

    /// Listen on `addr`, the value of `setting`, for `scope`.
    pub fn bind_for(
        addr: SocketAddr,
        scope: Scope,
        setting: &'static str,
    ) -> Result<HttpListener, ConfigError> {
        let listener = std::net::TcpListener::bind(addr)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .or_else(|e| {
                let hint = match e.kind() {
                    std::io::ErrorKind::AddrInUse => {
                        ": another program listens there; pick a free port"
                    }
                    std::io::ErrorKind::PermissionDenied => {
                        ": ports under 1024 need privileges; pick a port above 1024"
                    }
                    std::io::ErrorKind::AddrNotAvailable => {
                        ": this host has no such address; give one of its own, or 0.0.0.0"
                    }
                    _ => "",
                };
                err(format!("{setting}={addr}: cannot listen: {e}{hint}"))
            })?;
        Ok(HttpListener {
            listener,
            scope,
            setting,
            web: None,
        })
    }

    /// Serve `endpoints` on the current tokio runtime until the task is aborted.
    pub fn serve(self, endpoints: Arc<dyn Endpoints>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(accept_loop(self, endpoints))
    }
}

async fn accept_loop(http: HttpListener, endpoints: Arc<dyn Endpoints>) {
    let HttpListener {
        listener,
        scope,
        setting,
        web,
    } = http;
    let addr = listener.local_addr().map(|a| a.to_string());
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            log::error!("HTTP endpoint: cannot listen: {e}");
            return;
        }
    };
    let what = match scope {
        Scope::All => "/metrics, /healthz, /readyz and the pages",
        Scope::Health => "/metrics, /healthz and /readyz",
        Scope::Pages => "the pages",
    };
    let web = web.unwrap_or_default();
    log::info!(
        "serving {what} on {}://{} ({setting}{})",
        if web.tls.is_some() { "https" } else { "http" },
        addr.unwrap_or_default(),
        if web.auth.is_some() {
            ", basic auth"
        } else {
            ""
        }
    );
    let tls = web.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, typically: wait rather than spin.
                log::warn!("HTTP endpoint: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            log::debug!("HTTP endpoint: {MAX_CONNECTIONS} connections open; closing a new one");
            continue;
        };
        let (endpoints, web, tls) = (endpoints.clone(), web.clone(), tls.clone());
        tokio::spawn(async move {
            let served = serve_connection(stream, endpoints, web, tls, scope);
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, served).await;
            drop(slot);
        });
    }
}

/// One connection: TLS if configured (its handshake bounded like a request's head), then
/// HTTP/1.1 requests, each let in by basic auth if configured.
async fn serve_connection(
    stream: tokio::net::TcpStream,
    endpoints: Arc<dyn Endpoints>,
    web: Arc<WebConfig>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    scope: Scope,
) {
    let service = hyper::service::service_fn(move |req| {
        let (endpoints, web) = (endpoints.clone(), web.clone());
        async move {
            if !web.lets_in(&req).await {
                return Ok::<_, Infallible>(unauthorized());
            }
            let reply = match respond(endpoints, &req, scope) {
                Ok(reply) => reply,
                Err(page) => {
                    let page = page.await;
                    let status = StatusCode::from_u16(page.status)
                        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                    let mut r = reply(status, page.content_type, page.body);
                    if let Some(age) = page.max_age
                        && let Ok(v) = HeaderValue::from_str(&format!("max-age={age}"))
                    {
                        r.headers_mut().insert(hyper::header::CACHE_CONTROL, v);
                    }
                    r
                }
            };
            Ok::<_, Infallible>(reply)
        }
    });
    let builder = {
        let mut b = hyper::server::conn::http1::Builder::new();
        b.timer(TokioTimer::new())
            .header_read_timeout(HEAD_TIMEOUT)
            .max_buf_size(MAX_HEAD_BYTES);
        b
    };
    let served = async {
        match tls {
            None => {
                let _ = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            }
            // The handshake is bounded like a request's head.
            Some(tls) => match tokio::time::timeout(HEAD_TIMEOUT, tls.accept(stream)).await {
                Ok(Ok(stream)) => {
                    let _ = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                }
                Ok(Err(e)) => log::debug!("HTTP endpoint: TLS handshake failed: {e}"),
                Err(_) => log::debug!("HTTP endpoint: TLS handshake timed out"),
            },
        }
    };
    served.await
}

/// The response at once, or the program's page to wait for.
fn respond(
    endpoints: Arc<dyn Endpoints>,
    req: &Request<Incoming>,
    scope: Scope,
) -> Result<Response<Full<Bytes>>, PageFuture> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n",
        ));
    }
    let not_found = || reply(StatusCode::NOT_FOUND, "text/plain", "not found\n");
    Ok(match req.uri().path() {
        "/metrics" | "/healthz" | "/readyz" if scope == Scope::Pages => not_found(),
        "/metrics" => reply(
            StatusCode::OK,
            super::exposition::CONTENT_TYPE,
            endpoints.metrics(),
        ),
        "/healthz" => verdict(endpoints.live()),
        "/readyz" => verdict(endpoints.ready()),
        _ if scope == Scope::Health => not_found(),
        path => match endpoints.page(path, req.uri().query()) {
            Some(page) => return Err(page),
            None => reply(
                StatusCode::NOT_FOUND,
                "text/plain",
                "not found: try /metrics, /healthz or /readyz\n",
            ),
        },
    })
}

/// 401, asking for basic auth.
fn unauthorized() -> Response<Full<Bytes>> {
    let mut r = reply(
        StatusCode::UNAUTHORIZED,
        "text/plain",
        "401 Unauthorized: give the user and password of CK_HTTP_CONFIG's basic_auth_users\n",
    );
    r.headers_mut().insert(
        hyper::header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"checksite\", charset=\"UTF-8\""),
    );
    r
}

fn verdict(state: Result<(), String>) -> Response<Full<Bytes>> {
    match state {
        Ok(()) => reply(StatusCode::OK, "text/plain", "ok\n"),
        Err(why) => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            format!("{}\n", why.replace('\n', " ")),
        ),
    }
}

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(content_type) {
        response.headers_mut().insert(CONTENT_TYPE, v);
    }
    response
}
