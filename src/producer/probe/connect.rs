//! Reaching a site: the name lookup, TCP to one address after the other, and the TLS
//! handshake, each timed into [`Phases`].
//!
//! This module owns the connection phases. It never sends a request (that is
//! `super::exchange`) and never waits past the check's deadline or the connect timeout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use url::{Host, Url};

use super::Failure;
use crate::event::ErrorKind;
use crate::producer::lookup::{LookupError, LookupPool};

/// Addresses tried per connection at most (as many as ureq and curl try).
const MAX_ADDRESSES: usize = 16;

/// What the connection phases of one check took, summed over its redirects.
#[derive(Debug, Default)]
pub(super) struct Phases {
    pub(super) dns_ms: Option<u64>,
    pub(super) connect_ms: Option<u64>,
    pub(super) tls_ms: Option<u64>,
    /// The address of the last connection.
    pub(super) ip: Option<SocketAddr>,
    /// The last TLS connection's leaf certificate's notAfter.
    pub(super) cert_expires_at: Option<DateTime<Utc>>,
    /// Connections made: one per request, so redirects followed + 1.
    pub(super) connections: u32,
}

fn add_ms(slot: &mut Option<u64>, since: Instant) {
    *slot = Some(slot.unwrap_or(0) + since.elapsed().as_millis() as u64);
}

/// Where one request goes: taken apart from its URL once.
#[derive(Debug)]
pub(super) struct Site {
    /// Without IPv6 brackets: what the resolver and the TLS server name want.
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) tls: bool,
}

impl Site {
    /// The site of an absolute `http://` or `https://` URL.
    pub(super) fn of(url: &Url) -> Result<Site, Failure> {
        let tls = match url.scheme() {
            "http" => false,
            "https" => true,
            other => {
                return Err(Failure::new(
                    ErrorKind::Http,
                    format!("not an http(s) URL: {other}:"),
                ));
            }
        };
        let host = match url.host() {
            Some(Host::Domain(d)) if !d.is_empty() => d.to_string(),
            Some(Host::Ipv4(ip)) => ip.to_string(),
            Some(Host::Ipv6(ip)) => ip.to_string(),
            _ => return Err(Failure::new(ErrorKind::Http, "no host in the URL")),
        };
        Ok(Site {
            host,
            port: url
                .port_or_known_default()
                .unwrap_or(if tls { 443 } else { 80 }),
            tls,
        })
    }
}

/// How a check connects: bounds and shared state, the same for every request it makes.
pub(super) struct Connecting<'a> {
    pub(super) lookups: &'a LookupPool,
    pub(super) tls: &'a Arc<ClientConfig>,
    /// For the TCP connection (all addresses together), and again for the TLS handshake.
    pub(super) connect_timeout: Duration,
    /// The check's end.
    pub(super) deadline: Instant,
}

/// A connection to a site, plain or TLS.
pub(super) enum SiteStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Connecting<'_> {
    /// Look `site` up, connect, and (for https) complete the TLS handshake.
    pub(super) async fn open(
        &self,
        site: &Site,
        phases: &mut Phases,
    ) -> Result<SiteStream, Failure> {
        let addrs = self.lookup(site, phases).await?;
        let tcp = self.tcp(&addrs, phases).await?;
        let stream = if site.tls {
            SiteStream::Tls(Box::new(self.handshake(tcp, site, phases).await?))
        } else {
            SiteStream::Plain(tcp)
        };
        phases.connections += 1;
        Ok(stream)
    }

    async fn lookup(&self, site: &Site, phases: &mut Phases) -> Result<Vec<SocketAddr>, Failure> {
        let start = Instant::now();
        let found = self
            .lookups
            .lookup(&site.host, site.port, Some(self.deadline.into_std()))
            .await;
        add_ms(&mut phases.dns_ms, start);
        match found {
            Ok(addrs) if !addrs.is_empty() => Ok(addrs),
            Ok(_) => Err(Failure::new(ErrorKind::Dns, "host not found (DNS)")),
            Err(LookupError::Timeout) => Err(Failure::timeout("DNS lookup")),
            Err(LookupError::Failed(e)) => Err(Failure::new(
                ErrorKind::Dns,
                format!("cannot resolve {}: {e}", site.host),
            )),
        }
    }

    /// TCP, one address at a time, so that we know which address answered. The connect
    /// budget is shared (halving per address: 53 %, 27 %, 13 %, 7 % of it for four), so
    /// that a black-holed first address (an IPv6 route that drops packets) leaves time for
    /// the next one instead of reporting a working site down.
    async fn tcp(&self, addrs: &[SocketAddr], phases: &mut Phases) -> Result<TcpStream, Failure> {
        let start = Instant::now();
        let budget_end = self.deadline.min(start + self.connect_timeout);
        let count = addrs.len().min(MAX_ADDRESSES);
        let mut last = Failure::timeout("connect");
        for (i, addr) in addrs.iter().take(count).enumerate() {
            let share = address_share(self.connect_timeout, i, count);
            let until = budget_end.min(Instant::now() + share);
            match timeout_at(until, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => {
                    add_ms(&mut phases.connect_ms, start);
                    phases.ip = Some(*addr);
                    // A request is one write: no reason to wait for more.
                    let _ = stream.set_nodelay(true);
                    return Ok(stream);
                }
                Ok(Err(e)) => {
                    last = Failure::new(ErrorKind::Connect, format!("connect to {addr}: {e}"))
                }
                Err(_) => last = Failure::timeout("connect"),
            }
            if Instant::now() >= budget_end {
                break;
            }
        }
        add_ms(&mut phases.connect_ms, start);
        Err(last)
    }

    async fn handshake(
        &self,
        tcp: TcpStream,
        site: &Site,
        phases: &mut Phases,
    ) -> Result<TlsStream<TcpStream>, Failure> {
        let start = Instant::now();
        let name = ServerName::try_from(site.host.clone()).map_err(|_| {
            Failure::new(
                ErrorKind::Tls,
                format!("invalid server name {:?}", site.host),
            )
        })?;
        let connector = TlsConnector::from(self.tls.clone());
        let until = self.deadline.min(start + self.connect_timeout);
        let done = timeout_at(until, connector.connect(name, tcp)).await;
        add_ms(&mut phases.tls_ms, start);
        let stream = match done {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                // Prefer rustls's own words (e.g. "invalid peer certificate: UnknownIssuer").
                let message = match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                    Some(tls) => tls.to_string(),
                    None => e.to_string(),
                };
                return Err(Failure::new(ErrorKind::Tls, message));
            }
            Err(_) => return Err(Failure::timeout("TLS handshake")),
        };
        phases.cert_expires_at = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|leaf| crate::producer::cert_expiry::certificate_not_after(leaf));
        Ok(stream)
    }
}

/// Address `i` of `count`'s part of the connect budget: 1/2, 1/4, ... of it, scaled so
/// that the parts sum to the whole (the last address gets what the series leaves), and
/// never under 10 ms.
fn address_share(budget: Duration, i: usize, count: usize) -> Duration {
    let exponent = i32::try_from(count).unwrap_or(i32::MAX);
    let weights = 2.0 * (1.0 - 0.5_f64.powi(exponent));
    let weight = 0.5_f64.powi(i32::try_from(i).unwrap_or(i32::MAX));
    let share = budget.as_secs_f64() * weight / weights;
    Duration::from_secs_f64(share).max(Duration::from_millis(10))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(d: Duration) -> u128 {
        d.as_millis()
    }

    #[test]
    fn one_address_gets_the_whole_connect_budget() {
        assert_eq!(ms(address_share(Duration::from_millis(5_000), 0, 1)), 5_000);
    }

    #[test]
    fn several_addresses_share_the_budget_first_ones_more() {
        // An IPv6 address that drops packets must leave the IPv4 one time to answer.
        let budget = Duration::from_millis(10_000);
        let shares: Vec<u128> = (0..4).map(|i| ms(address_share(budget, i, 4))).collect();
        assert_eq!(shares, [5_333, 2_666, 1_333, 666]);
        assert!(shares.iter().sum::<u128>() <= 10_000);
        let budget = Duration::from_millis(5_000);
        let two: Vec<u128> = (0..2).map(|i| ms(address_share(budget, i, 2))).collect();
        assert_eq!(two, [3_333, 1_666]);
    }

    #[test]
    fn the_share_never_drops_under_10_ms() {
        assert_eq!(ms(address_share(Duration::from_millis(100), 11, 12)), 10);
    }

    #[test]
    fn a_site_is_its_scheme_host_and_port() {
        let site = Site::of(&Url::parse("https://[::1]/x").unwrap()).unwrap();
        assert_eq!(
            (site.host.as_str(), site.port, site.tls),
            ("::1", 443, true)
        );
        let site = Site::of(&Url::parse("http://Example.COM:8080").unwrap()).unwrap();
        assert_eq!(
            (site.host.as_str(), site.port, site.tls),
            ("example.com", 8080, false)
        );
        let ftp = Site::of(&Url::parse("ftp://example.com/").unwrap()).unwrap_err();
        assert_eq!(ftp.kind, ErrorKind::Http);
    }
}
