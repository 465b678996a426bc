//! One HTTP(S) check of one target: status, timings of each phase, the regex over the
//! body, a hash and (for errors) a prefix of the body, the certificate's expiry, and a
//! clear error kind when it fails.
//!
//! This module owns the measurement. It is blocking (ureq) and must be run on a
//! blocking thread. It never waits without a bound (total and connect timeouts), never
//! reads more than the body cap, and never reuses a connection: availability includes
//! connecting.

use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::{DateTime, Utc};
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use rustls_pki_types::ServerName;
use ureq::Agent;
use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, Either, LazyBuffers, NextTimeout, TcpConnector,
    Transport, TransportAdapter,
};

use super::config::{ProbeSettings, Target};
use super::lookup::{LookupError, LookupPool};
use crate::event::{CheckEvent, ErrorKind};

/// Per connection: room for the largest response head ureq reads (64 KiB), and for a
/// request (a line and a few headers).
const INPUT_BUFFER_BYTES: usize = 64 * 1024;
const OUTPUT_BUFFER_BYTES: usize = 16 * 1024;

/// Characters of a non-2xx body kept in `body_prefix`.
pub(crate) const BODY_PREFIX_CHARS: usize = 500;
/// Longest `content_match` kept (a greedy regex could match the whole body).
pub(crate) const CONTENT_MATCH_CHARS: usize = 1000;

/// Checks sites. Cheap to share between threads; each check builds its own connection.
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

/// What the connection phases of one check took (summed over redirects).
#[derive(Debug, Default)]
struct Phases {
    dns_ms: Option<u64>,
    connect_ms: Option<u64>,
    tls_ms: Option<u64>,
    ip: Option<SocketAddr>,
    cert_expires_at: Option<DateTime<Utc>>,
    /// The phase under way when a failure happened.
    current: Option<ErrorKind>,
    /// Connections made: one per request, so redirects followed + 1.
    connections: u32,
}

type SharedPhases = Arc<Mutex<Phases>>;

fn add_ms(slot: &mut Option<u64>, since: Instant) {
    *slot = Some(slot.unwrap_or(0) + since.elapsed().as_millis() as u64);
}

fn with_phases(p: &SharedPhases, f: impl FnOnce(&mut Phases)) {
    // A poisoned lock only means another part of this same check panicked; keep measuring.
    let mut guard = p.lock().unwrap_or_else(|e| e.into_inner());
    f(&mut guard)
}

/// The name lookup, timed, on the [`LookupPool`] (not ureq's thread per lookup). The
/// system's resolver decides the addresses and their order; every address family is kept.
#[derive(Debug)]
struct TimedResolver {
    phases: SharedPhases,
    lookups: Arc<LookupPool>,
}

impl Resolver for TimedResolver {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        _: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let start = Instant::now();
        with_phases(&self.phases, |p| p.current = Some(ErrorKind::Dns));
        let result = self.lookup(uri, timeout);
        with_phases(&self.phases, |p| add_ms(&mut p.dns_ms, start));
        result
    }
}

impl TimedResolver {
    fn lookup(
        &self,
        uri: &ureq::http::Uri,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let bad = || ureq::Error::BadUri(format!("cannot connect to {uri}"));
        let host = uri.host().ok_or_else(bad)?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = match (uri.port_u16(), uri.scheme_str()) {
            (Some(port), _) => port,
            (None, Some("http")) => 80,
            (None, Some("https")) => 443,
            (None, _) => return Err(bad()),
        };
        let wait = (!timeout.after.is_not_happening()).then(|| *timeout.after);
        let addrs = match self.lookups.lookup(host, port, wait) {
            Ok(addrs) => addrs,
            Err(LookupError::Timeout) => return Err(ureq::Error::Timeout(timeout.reason)),
            Err(LookupError::Failed(e)) => return Err(ureq::Error::Io(e)),
        };
        let mut resolved = self.empty();
        // ureq keeps 16 addresses at most; the rest are dropped, as its own resolver does.
        for addr in addrs {
            if resolved.try_push(addr).is_err() {
                break;
            }
        }
        if resolved.is_empty() {
            return Err(ureq::Error::HostNotFound);
        }
        Ok(resolved)
    }
}

/// TCP, one address at a time, so that we know which address answered. The connect
/// budget is shared as ureq shares it (halving per address: 53 %, 27 %, 13 %, 7 % of
/// it for four), so that a black-holed first address (an IPv6 route that drops packets)
/// leaves time for the next one instead of reporting a working site down.
#[derive(Debug)]
struct TimedTcp {
    phases: SharedPhases,
}

impl Connector<()> for TimedTcp {
    type Out = <TcpConnector as Connector<()>>::Out;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<()>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        let start = Instant::now();
        with_phases(&self.phases, |p| p.current = Some(ErrorKind::Connect));
        let mut last_err = ureq::Error::ConnectionFailed;
        let count = details.addrs.len();
        for (i, addr) in details.addrs.iter().enumerate() {
            let mut one = details.resolver.empty();
            one.push(*addr);
            let single = ConnectionDetails {
                uri: details.uri,
                addrs: one,
                config: details.config,
                request_level: details.request_level,
                resolver: details.resolver,
                now: details.now,
                timeout: address_share(details.timeout, i, count),
                current_time: details.current_time.clone(),
                run_connector: details.run_connector.clone(),
                register_shutdown: details.register_shutdown.clone(),
            };
            match TcpConnector::default().connect(&single, chained) {
                Ok(t) => {
                    with_phases(&self.phases, |p| {
                        add_ms(&mut p.connect_ms, start);
                        p.ip = Some(*addr);
                    });
                    return Ok(t);
                }
                Err(e) => last_err = e,
            }
        }
        Err(last_err)
    }
}

/// Address `i` of `count`'s part of the connect budget: 1/2, 1/4, ... of it, scaled so
/// that the parts sum to the whole (the last address gets what the series leaves), and
/// never under 10 ms.
fn address_share(budget: NextTimeout, i: usize, count: usize) -> NextTimeout {
    let Some(total) = budget.not_zero() else {
        return budget;
    };
    let exponent = i32::try_from(count).unwrap_or(i32::MAX);
    let weights = 2.0 * (1.0 - 0.5_f64.powi(exponent));
    let weight = 0.5_f64.powi(i32::try_from(i).unwrap_or(i32::MAX));
    let share = total.as_secs_f64() * weight / weights;
    NextTimeout {
        after: std::time::Duration::from_secs_f64(share)
            .max(std::time::Duration::from_millis(10))
            .into(),
        ..budget
    }
}

/// TLS that completes the handshake while connecting, so that it can be timed and the
/// site's certificate read.
#[derive(Debug)]
struct TimedTls {
    config: Arc<ClientConfig>,
    phases: SharedPhases,
}

impl<In: Transport> Connector<In> for TimedTls {
    type Out = Either<In, TlsTransport>;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        let Some(transport) = chained else {
            return Ok(None);
        };
        if !details.needs_tls() || transport.is_tls() {
            return Ok(Some(Either::A(transport)));
        }
        let start = Instant::now();
        with_phases(&self.phases, |p| p.current = Some(ErrorKind::Tls));
        let host = details
            .uri
            .host()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let name = ServerName::try_from(host.to_string())
            .map_err(|_| ureq::Error::Tls("invalid server name"))?;
        let mut conn =
            ClientConnection::new(self.config.clone(), name).map_err(ureq::Error::Rustls)?;
        let mut sock = TransportAdapter::new(transport.boxed(), details.current_time.clone());
        sock.set_timeout(details.timeout);
        while conn.is_handshaking() {
            conn.complete_io(&mut sock).map_err(|e| {
                // Prefer rustls's own error (e.g. "invalid peer certificate: UnknownIssuer").
                match e
                    .get_ref()
                    .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                {
                    Some(tls) => ureq::Error::Rustls(tls.clone()),
                    None => ureq::Error::Io(e),
                }
            })?;
        }
        let not_after = conn
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|leaf| super::cert_expiry::certificate_not_after(leaf));
        with_phases(&self.phases, |p| {
            add_ms(&mut p.tls_ms, start);
            p.cert_expires_at = not_after;
            p.current = Some(ErrorKind::Http);
        });
        let buffers = LazyBuffers::new(
            details.config.input_buffer_size(),
            details.config.output_buffer_size(),
        );
        Ok(Some(Either::B(TlsTransport {
            buffers,
            stream: StreamOwned::new(conn, sock),
        })))
    }
}

struct TlsTransport {
    buffers: LazyBuffers,
    stream: StreamOwned<ClientConnection, TransportAdapter>,
}

impl std::fmt::Debug for TlsTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsTransport")
    }
}

impl Transport for TlsTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        use std::io::Write;
        self.stream.get_mut().set_timeout(timeout);
        let output = &self.buffers.output()[..amount];
        self.stream.write_all(output)?;
        Ok(())
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let input = self.buffers.input_append_buf();
        let amount = self.stream.read(input)?;
        self.buffers.input_appended(amount);
        Ok(amount > 0)
    }

    fn is_open(&mut self) -> bool {
        self.stream.get_mut().get_mut().is_open()
    }

    fn is_tls(&self) -> bool {
        true
    }
}

/// Marks the connection as established: from here on a failure is an HTTP failure.
#[derive(Debug)]
struct Connected {
    phases: SharedPhases,
}

impl<In: Transport> Connector<In> for Connected {
    type Out = In;
    fn connect(
        &self,
        _: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<In>, ureq::Error> {
        with_phases(&self.phases, |p| {
            p.current = Some(ErrorKind::Http);
            p.connections += 1;
        });
        Ok(chained)
    }
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

    /// Check `target` now. `schedule_lag_ms` is how late this check starts.
    pub fn check(&self, target: &Target, schedule_lag_ms: i64) -> CheckEvent {
        self.check_counting_redirects(target, schedule_lag_ms).0
    }

    /// [`Probe::check`], and how many redirects it followed (what the event does not say).
    pub fn check_counting_redirects(
        &self,
        target: &Target,
        schedule_lag_ms: i64,
    ) -> (CheckEvent, u32) {
        let mut event = CheckEvent::starting(&target.url, &self.producer, schedule_lag_ms);
        let start = Instant::now();
        let phases: SharedPhases = Arc::default();
        let agent = self.agent(target, &phases);
        let outcome = self.run(&agent, target, start, &mut event);
        event.elapsed_ms = start.elapsed().as_millis() as u64;
        let mut redirects = 0;
        with_phases(&phases, |p| {
            if event.status.is_some() {
                redirects = p.connections.saturating_sub(1);
            }
            event.dns_ms = p.dns_ms;
            event.connect_ms = p.connect_ms;
            event.tls_ms = p.tls_ms;
            event.ip = p.ip.map(|a| a.ip().to_string());
            event.cert_expires_at = p.cert_expires_at;
            if let Err(e) = &outcome {
                let (kind, message) = classify(e, p.current);
                event.error_kind = Some(kind);
                event.error = Some(message);
            }
        });
        event.up = Some(is_up(target, &event));
        (event, redirects)
    }

    fn agent(&self, target: &Target, phases: &SharedPhases) -> Agent {
        let config = Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(target.timeout))
            .timeout_connect(Some(self.settings.connect_timeout))
            .max_redirects(self.settings.max_redirects)
            // With 0 the 3xx itself is the answer; otherwise a chain longer than allowed is an error.
            .max_redirects_will_error(self.settings.max_redirects > 0)
            .max_idle_connections(0)
            // A response head may be as large as ureq allows (64 KiB), but the buffers need
            // not be ureq's 128 KiB: below the C allocator's mmap threshold, they come from
            // the heap, instead of an mmap and munmap (and their page faults) per check.
            .input_buffer_size(INPUT_BUFFER_BYTES)
            .output_buffer_size(OUTPUT_BUFFER_BYTES)
            .user_agent(concat!("checksite/", env!("CARGO_PKG_VERSION")))
            .build();
        let connector = ()
            .chain(TimedTcp {
                phases: phases.clone(),
            })
            .chain(TimedTls {
                config: self.tls.clone(),
                phases: phases.clone(),
            })
            .chain(Connected {
                phases: phases.clone(),
            });
        Agent::with_parts(
            config,
            connector,
            TimedResolver {
                phases: phases.clone(),
                lookups: self.lookups.clone(),
            },
        )
    }

    fn run(
        &self,
        agent: &Agent,
        target: &Target,
        start: Instant,
        event: &mut CheckEvent,
    ) -> Result<(), ureq::Error> {
        let mut request = ureq::http::Request::builder()
            .method(target.method.as_str())
            .uri(&target.url);
        for (k, v) in &target.headers {
            request = request.header(k, v);
        }
        let request = request.body(()).map_err(ureq::Error::Http)?;
        let mut response = agent.run(request)?;
        event.ttfb_ms = Some(start.elapsed().as_millis() as u64);
        let status = response.status().as_u16();
        event.status = Some(status);
        let ok = (200..300).contains(&status);
        // Keep the body only when something will be read from it; otherwise just hash it.
        let keep = !ok || target.regex.is_some();
        let mut body = Vec::new();
        let mut hasher = ring::digest::Context::new(&ring::digest::SHA256);
        let mut reader = response.body_mut().as_reader().take(self.settings.body_cap);
        let mut chunk = [0u8; 16 * 1024];
        let mut total: u64 = 0;
        let read_result = loop {
            match reader.read(&mut chunk) {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    total += n as u64;
                    hasher.update(&chunk[..n]);
                    if keep {
                        body.extend_from_slice(&chunk[..n]);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => break Err(e),
            }
        };
        event.bytes = Some(total);
        let text = String::from_utf8_lossy(&body);
        if ok {
            if let Some(re) = &target.regex {
                event.content_match = re
                    .find(&text)
                    .map(|m| m.as_str().chars().take(CONTENT_MATCH_CHARS).collect());
            }
        } else {
            event.body_prefix = Some(text.chars().take(BODY_PREFIX_CHARS).collect());
        }
        match read_result {
            Ok(()) => {
                event.body_sha256 = Some(hex(hasher.finish().as_ref()));
                Ok(())
            }
            // The body is incomplete: no hash, and the error says why.
            Err(e) => Err(ureq::Error::from(e)),
        }
    }
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

fn classify(e: &ureq::Error, phase: Option<ErrorKind>) -> (ErrorKind, String) {
    use ureq::Error as E;
    let kind = match e {
        E::Timeout(_) => ErrorKind::Timeout,
        E::HostNotFound => ErrorKind::Dns,
        E::TooManyRedirects | E::RedirectFailed => ErrorKind::Redirect,
        E::Rustls(_) | E::Tls(_) => ErrorKind::Tls,
        E::ConnectionFailed => ErrorKind::Connect,
        E::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => ErrorKind::Timeout,
        E::Io(_) | E::BodyStalled | E::Decompress(..) => match phase {
            Some(ErrorKind::Http) => ErrorKind::Body,
            Some(p) => p,
            None => ErrorKind::Other,
        },
        E::Protocol(_) | E::LargeResponseHeader(..) | E::Http(_) | E::BadUri(_) => ErrorKind::Http,
        _ => phase.unwrap_or(ErrorKind::Other),
    };
    let message = match e {
        E::Timeout(t) => format!("timed out ({t})"),
        E::HostNotFound => "host not found (DNS)".to_string(),
        E::TooManyRedirects => "too many redirects".to_string(),
        other => other.to_string(),
    };
    (kind, message)
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
    use ureq::Timeout;

    fn budget(ms: u64) -> NextTimeout {
        NextTimeout {
            after: std::time::Duration::from_millis(ms).into(),
            reason: Timeout::Connect,
            per_read: None,
            per_write: None,
        }
    }

    fn ms(t: NextTimeout) -> u128 {
        t.after.as_millis()
    }

    #[test]
    fn one_address_gets_the_whole_connect_budget() {
        assert_eq!(ms(address_share(budget(5_000), 0, 1)), 5_000);
    }

    #[test]
    fn several_addresses_share_the_budget_first_ones_more() {
        // An IPv6 address that drops packets must leave the IPv4 one time to answer.
        let shares: Vec<u128> = (0..4)
            .map(|i| ms(address_share(budget(10_000), i, 4)))
            .collect();
        assert_eq!(shares, [5_333, 2_666, 1_333, 666]);
        assert!(shares.iter().sum::<u128>() <= 10_000);
        let two: Vec<u128> = (0..2)
            .map(|i| ms(address_share(budget(5_000), i, 2)))
            .collect();
        assert_eq!(two, [3_333, 1_666]);
    }

    #[test]
    fn the_share_never_drops_under_10_ms_and_no_budget_stays_none() {
        assert_eq!(ms(address_share(budget(100), 11, 12)), 10);
        let unbounded = NextTimeout::default();
        assert_eq!(address_share(unbounded, 1, 2), unbounded);
    }
}
