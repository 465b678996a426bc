//! The producer's metrics and health, for `CK_HTTP_ADDR`.
//!
//! Per target, the Prometheus blackbox exporter's `probe_*` gauges with its names and
//! meanings (labels `url`, redacted, and `producer`), so that dashboards and alert rules
//! written for it keep working; and the producer's own `checksite_producer_*`: checks by
//! result, schedule lateness, the buffer, publishing. Readiness: Kafka took events (or a
//! connection) within the last interval.
//!
//! Updating a metric is an atomic store or add, on the check's own path; rendering
//! happens only when scraped. This module never measures or publishes anything itself.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use super::outbox::Outbox;
use super::targets::Target;
use crate::event::{CheckEvent, ErrorKind};
use crate::observe::exposition::{Counter, Exposition, Gauge, Histogram, Kind, labels};
use crate::observe::{Endpoints, Liveness, unix_ms};

/// Seconds: schedule lateness and publish latency, 1 ms to 10 s.
static SECONDS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// `probe_http_duration_seconds`' phase labels, in the blackbox exporter's order.
const PHASES: [&str; 5] = [
    "phase=\"resolve\"",
    "phase=\"connect\"",
    "phase=\"tls\"",
    "phase=\"processing\"",
    "phase=\"transfer\"",
];

/// One target's latest check, as the blackbox exporter's gauges.
#[derive(Debug)]
pub struct TargetGauges {
    /// `url="...",producer="..."`, rendered once.
    labels: String,
    /// No series before the first check ends: a 0 would be a false "down".
    checked: AtomicBool,
    success: Gauge,
    duration: Gauge,
    status: Gauge,
    phases: [Gauge; 5],
    /// NaN when the latest check saw no certificate (then no series, as the exporter).
    cert_expiry: Gauge,
    content_length: Gauge,
    redirects: Gauge,
}

/// Kafka's latest answers to the publisher: what `/readyz` judges.
#[derive(Debug, Default)]
struct KafkaContact {
    last_ok_ms: AtomicU64,
    last_error: Mutex<Option<(u64, String)>>,
}

/// Everything the producer counts, and its health.
#[derive(Debug)]
pub struct ProducerMetrics {
    /// By URL: the targets in force (a removed one's series go with it).
    targets: Mutex<BTreeMap<String, Arc<TargetGauges>>>,
    producer: String,
    /// Per result: up, down, then one per error kind ([`ErrorKind::ALL`]).
    checks: [Counter; 2 + ErrorKind::ALL.len()],
    lateness: Histogram,
    publish_errors: Counter,
    publish_latency: Histogram,
    kafka: KafkaContact,
    /// Kafka must have answered within this long for the producer to be ready (ms).
    ready_within_ms: AtomicU64,
    outbox: Arc<Outbox>,
    /// The targets list's figures (`CK_TARGETS_TOPIC`).
    pub list: Arc<crate::target_list::ListMetrics>,
    /// The producer's loops, for `/healthz`.
    pub liveness: Liveness,
}

impl ProducerMetrics {
    /// Metrics for the targets checked as `producer`, whose events wait in `outbox`.
    pub fn new(producer: &str, outbox: Arc<Outbox>) -> ProducerMetrics {
        ProducerMetrics {
            targets: Mutex::new(BTreeMap::new()),
            producer: producer.to_string(),
            checks: Default::default(),
            lateness: Histogram::new(&SECONDS),
            publish_errors: Counter::default(),
            publish_latency: Histogram::new(&SECONDS),
            kafka: KafkaContact::default(),
            ready_within_ms: AtomicU64::new(70_000),
            outbox,
            list: Default::default(),
            liveness: Liveness::default(),
        }
    }

    /// The targets in force are `targets`: Kafka must answer within their shortest
    /// interval and longest check (and the linger) for the producer to be ready.
    pub fn targets_in_force<'a>(&self, targets: impl Iterator<Item = &'a Target>) {
        let (mut shortest, mut longest) = (None::<Duration>, Duration::ZERO);
        for t in targets {
            shortest = Some(shortest.map_or(t.interval, |s| s.min(t.interval)));
            longest = longest.max(t.timeout);
        }
        // Without a target nothing is published: the list's follower speaks for Kafka.
        let within =
            shortest.unwrap_or(Duration::from_secs(60)) + longest + Duration::from_secs(10);
        self.ready_within_ms
            .store(within.as_millis() as u64, Ordering::Relaxed);
    }

    /// The gauges of the target `url`, made on its first use.
    pub fn target_gauges(&self, url: &str) -> Arc<TargetGauges> {
        let mut targets = self.targets.lock().unwrap_or_else(|e| e.into_inner());
        targets
            .entry(url.to_string())
            .or_insert_with(|| {
                Arc::new(TargetGauges {
                    labels: labels(&[
                        ("url", &crate::secret::redact_url(url)),
                        ("producer", &self.producer),
                    ]),
                    checked: AtomicBool::new(false),
                    success: Gauge::default(),
                    duration: Gauge::default(),
                    status: Gauge::default(),
                    phases: Default::default(),
                    cert_expiry: Gauge::new(f64::NAN),
                    content_length: Gauge::default(),
                    redirects: Gauge::default(),
                })
            })
            .clone()
    }

    /// A target left: its series go (unless the URL is back with new gauges meanwhile).
    pub fn forget_target(&self, url: &str, gauges: &Arc<TargetGauges>) {
        let mut targets = self.targets.lock().unwrap_or_else(|e| e.into_inner());
        if targets.get(url).is_some_and(|g| Arc::ptr_eq(g, gauges)) {
            targets.remove(url);
        }
    }

    /// The target of `t` was checked: `event`, judged `up`, after `redirects` redirects.
    pub fn checked(&self, t: &TargetGauges, event: &CheckEvent, up: bool, redirects: u32) {
        let result = match event.error_kind {
            Some(kind) => 2 + kind as usize,
            None if up => 0,
            None => 1,
        };
        self.checks[result].add(1);
        self.lateness
            .observe(event.schedule_lag_ms.max(0) as f64 / 1000.0);
        // In whole ms, as the event has them (no float noise like 0.036000000000000004).
        let ms = |v: Option<u64>| v.unwrap_or(0);
        let (dns, connect, tls) = (ms(event.dns_ms), ms(event.connect_ms), ms(event.tls_ms));
        let (processing, transfer) = match event.ttfb_ms {
            Some(ttfb) => (
                ttfb.saturating_sub(dns + connect + tls),
                event.elapsed_ms.saturating_sub(ttfb),
            ),
            None => (0, 0),
        };
        for (gauge, v) in t
            .phases
            .iter()
            .zip([dns, connect, tls, processing, transfer])
        {
            gauge.set(v as f64 / 1000.0);
        }
        let elapsed = event.elapsed_ms as f64 / 1000.0;
        t.success.set(if up { 1.0 } else { 0.0 });
        t.duration.set(elapsed);
        t.status.set(f64::from(event.status.unwrap_or(0)));
        t.content_length.set(event.bytes.unwrap_or(0) as f64);
        t.redirects.set(f64::from(redirects));
        t.cert_expiry.set(
            event
                .cert_expires_at
                .map_or(f64::NAN, |at| at.timestamp() as f64),
        );
        t.checked.store(true, Ordering::Release);
    }

    /// Checks that ended (each made an event), since the start.
    pub fn checks_made(&self) -> u64 {
        self.checks.iter().map(Counter::get).sum()
    }

    /// Kafka took a produce request (or a connection) after `took`.
    pub(crate) fn kafka_ok(&self, took: Option<Duration>) {
        self.kafka.last_ok_ms.store(unix_ms(), Ordering::Relaxed);
        if let Some(took) = took {
            self.publish_latency.observe(took.as_secs_f64());
        }
    }

    /// Time since Kafka last took a produce request (or a connection).
    pub(crate) fn kafka_quiet_for(&self) -> Duration {
        let last = self.kafka.last_ok_ms.load(Ordering::Relaxed);
        Duration::from_millis(unix_ms().saturating_sub(last))
    }

    /// Kafka could not be used, or refused a produce request.
    pub(crate) fn kafka_failed(&self, why: &str) {
        self.publish_errors.add(1);
        let mut last = self
            .kafka
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *last = Some((unix_ms(), why.to_string()));
    }

    /// The text of a scrape.
    pub fn render(&self) -> String {
        let targets: Vec<Arc<TargetGauges>> = self
            .targets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        let mut e = Exposition::with_capacity(2048 + targets.len() * 1_600);
        render_probes(&targets, &mut e);
        self.render_own(&mut e);
        self.list.render(&mut e, "producer");
        e.finish()
    }
}

fn render_probes(targets: &[Arc<TargetGauges>], e: &mut Exposition) {
    let checked = || {
        targets
            .iter()
            .map(|t| &**t)
            .filter(|t| t.checked.load(Ordering::Acquire))
    };
    type Pick = fn(&TargetGauges) -> &Gauge;
    let gauges: [(&str, &str, Pick); 5] = [
        (
            "probe_success",
            "Whether the latest check found the site up (1) or not (0).",
            |t| &t.success,
        ),
        (
            "probe_duration_seconds",
            "How long the latest check took, seconds.",
            |t| &t.duration,
        ),
        (
            "probe_http_status_code",
            "The latest check's final HTTP status; 0 without a response.",
            |t| &t.status,
        ),
        (
            "probe_http_content_length",
            "Body bytes the latest check read (capped by CK_BODY_CAP_BYTES).",
            |t| &t.content_length,
        ),
        (
            "probe_http_redirects",
            "Redirects the latest check followed.",
            |t| &t.redirects,
        ),
    ];
    for (name, help, gauge) in gauges {
        e.family(name, Kind::Gauge, help);
        for t in checked() {
            e.sample(name, &t.labels, gauge(t).get());
        }
    }
    let name = "probe_http_duration_seconds";
    e.family(
        name,
        Kind::Gauge,
        "The latest check's time in each phase, seconds (summed over redirects).",
    );
    for t in checked() {
        for (phase, gauge) in PHASES.iter().zip(&t.phases) {
            e.sample_with(name, &t.labels, phase, gauge.get());
        }
    }
    let name = "probe_ssl_earliest_cert_expiry";
    e.family(
        name,
        Kind::Gauge,
        "notAfter of the site's certificate, Unix seconds (https only).",
    );
    for t in checked() {
        let at = t.cert_expiry.get();
        if !at.is_nan() {
            e.sample(name, &t.labels, at);
        }
    }
}

/// The spool's gauges and counter (with `CK_SPOOL_DIR`).
fn render_spool(e: &mut Exposition, spool: &crate::producer::spool::Spool) {
    let spooled: [(&str, Kind, &str, f64); 3] = [
        (
            "checksite_producer_spool_bytes",
            Kind::Gauge,
            "Bytes of the spool's segments (CK_SPOOL_DIR).",
            spool.bytes() as f64,
        ),
        (
            "checksite_producer_spool_dropped_total",
            Kind::Counter,
            "Events the spool dropped when full (CK_SPOOL_BYTES).",
            spool.dropped() as f64,
        ),
        (
            "checksite_producer_spool_up",
            Kind::Gauge,
            "1 while the spool writes, 0 once a disk error turned it off.",
            if spool.broken().is_none() { 1.0 } else { 0.0 },
        ),
    ];
    render_plain(e, &spooled);
}

/// Families of one unlabelled sample each: (name, kind, help, value).
fn render_plain(e: &mut Exposition, families: &[(&str, Kind, &str, f64)]) {
    for &(name, kind, help, v) in families {
        e.family(name, kind, help);
        e.sample(name, "", v);
    }
}

impl ProducerMetrics {
    fn render_own(&self, e: &mut Exposition) {
        let name = "checksite_producer_checks_total";
        e.family(name, Kind::Counter, "Checks ended, by result (up, down: a response judged down, error: none) and error kind.");
        e.sample(name, "result=\"up\"", self.checks[0].get() as f64);
        e.sample(name, "result=\"down\"", self.checks[1].get() as f64);
        for (kind, count) in ErrorKind::ALL.iter().zip(&self.checks[2..]) {
            let l = labels(&[("result", "error"), ("error_kind", kind.as_str())]);
            e.sample(name, &l, count.get() as f64);
        }
        let name = "checksite_producer_schedule_lateness_seconds";
        e.family(
            name,
            Kind::Histogram,
            "How late checks started against their schedule, seconds.",
        );
        e.histogram(name, "", &self.lateness);
        let outbox = &self.outbox;
        let counts: [(&str, Kind, &str, f64); 4] = [
            (
                "checksite_producer_events_buffered",
                Kind::Gauge,
                "Events waiting to be published.",
                outbox.len() as f64,
            ),
            (
                "checksite_producer_events_published_total",
                Kind::Counter,
                "Events Kafka took.",
                outbox.published() as f64,
            ),
            (
                "checksite_producer_events_dropped_total",
                Kind::Counter,
                "Events dropped: buffer full, or not delivered before exit.",
                outbox.dropped() as f64,
            ),
            (
                "checksite_producer_publish_errors_total",
                Kind::Counter,
                "Failed attempts to connect to Kafka or to publish.",
                self.publish_errors.get() as f64,
            ),
        ];
        render_plain(e, &counts);
        if let Some(spool) = outbox.spool() {
            render_spool(e, spool);
        }
        let name = "checksite_producer_publish_duration_seconds";
        e.family(
            name,
            Kind::Histogram,
            "Time of produce requests Kafka took, seconds.",
        );
        e.histogram(name, "", &self.publish_latency);
    }

    /// Ok when Kafka took something within the last interval and did not fail since.
    pub fn ready(&self) -> Result<(), String> {
        if let Some(why) = self.outbox.spool().and_then(|s| s.broken()) {
            return Err(why);
        }
        let ok = self
            .kafka
            .last_ok_ms
            .load(Ordering::Relaxed)
            .max(self.list.last_read_ms());
        let last_error = self
            .kafka
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match last_error {
            Some((at, why)) if at >= ok => {
                return Err(format!(
                    "Kafka failed {} s ago: {why}",
                    unix_ms().saturating_sub(at) / 1000
                ));
            }
            _ => {}
        }
        if ok == 0 {
            return Err("Kafka has not been reached yet".into());
        }
        let quiet = unix_ms().saturating_sub(ok);
        if quiet > self.ready_within_ms.load(Ordering::Relaxed) {
            return Err(format!("Kafka has not answered for {} s", quiet / 1000));
        }
        Ok(())
    }
}

impl Endpoints for ProducerMetrics {
    fn metrics(&self) -> String {
        self.render()
    }
    fn live(&self) -> Result<(), String> {
        self.liveness.check()
    }
    fn ready(&self) -> Result<(), String> {
        ProducerMetrics::ready(self)
    }
}
