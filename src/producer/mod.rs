//! checksite-producer: check each target on its schedule and publish one event per check.
//!
//! [`config`] turns settings into targets; [`schedule`] runs the checks ([`probe`]) on a
//! fixed rate; [`outbox`] buffers the events and publishes them to Kafka; [`run`] wires
//! these together until shutdown, and [`check_once`] is `--once`.

pub(crate) mod cert_expiry;
pub mod config;
pub(crate) mod lookup;
pub mod metrics;
pub mod outbox;
pub mod probe;
pub(crate) mod publisher;
pub mod schedule;
pub mod spool;
pub mod targets;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::event::CheckEvent;
use crate::observe::HttpListener;
use crate::shutdown::Shutdown;
use config::{ProducerConfig, PublishSettings};
use metrics::ProducerMetrics;
use outbox::Outbox;
use probe::Probe;

/// How long running checks may take after SIGINT/SIGTERM, and then the final flush.
pub const GRACE: Duration = Duration::from_secs(10);

/// What a run published.
#[derive(Debug, Clone, Copy)]
pub struct Delivered {
    /// Events Kafka took.
    pub published: u64,
    /// Events dropped: buffer full, Kafka away at exit, or checks still running at exit.
    pub dropped: u64,
}

/// Check every target on its schedule and publish the events until `shutdown`; then let
/// the running checks finish (up to [`GRACE`]), and publish what they bring (up to
/// [`GRACE`] more). A check that started is published or counted as dropped. With `http`,
/// serves the metrics and health there meanwhile.
pub async fn run(
    config: ProducerConfig,
    publish: PublishSettings,
    probe: Probe,
    shutdown: Shutdown,
    http: Option<HttpListener>,
    spool: Option<(spool::Spool, spool::Replay)>,
) -> Delivered {
    let outbox = open_outbox(publish.buffer_events, spool);
    let metrics = Arc::new(ProducerMetrics::new(&config.producer_id, outbox.clone()));
    let server = http.map(|h| h.serve(metrics.clone()));
    let targets = follow_targets(&config, &publish, &metrics, &shutdown);
    log::info!(
        "checking {} target(s){}, publishing to topic {:?} at {}",
        targets.borrow().len(),
        match &config.targets_topic {
            Some(t) => format!(" and those of targets topic {t:?}"),
            None => String::new(),
        },
        publish.kafka.topic,
        publish.kafka.servers.join(",")
    );
    let publisher = spawn_publisher(&outbox, publish, &metrics);
    let running = Arc::new(AtomicU64::new(0));
    let mut stop = shutdown.clone();
    let checking = schedule::Checking {
        probe,
        concurrency: config.concurrency,
        outbox: outbox.clone(),
        running: running.clone(),
        metrics: metrics.clone(),
    };
    let alive = metrics.liveness.start("schedule", None);
    let mut checking = Box::pin(async move {
        schedule::run(targets, checking, shutdown).await;
        drop(alive);
    });
    tokio::select! {
        _ = &mut checking => {}
        _ = stop.requested() => {
            // Running checks may finish (each is bounded by its own timeout), up to GRACE.
            if tokio::time::timeout(GRACE, &mut checking).await.is_err() {
                log::warn!("checks still running after {} s: not waiting for them", GRACE.as_secs());
            }
        }
    }
    // Ends the target loops still waiting on a check.
    drop(checking);
    outbox.abandoned(running.load(Ordering::SeqCst));
    outbox.close();
    let _ = publisher.await;
    if let Some(server) = server {
        server.abort();
    }
    let delivered = Delivered {
        published: outbox.published(),
        dropped: outbox.dropped(),
    };
    log::info!(
        "stopped: {} check(s) made, {} event(s) published, {} dropped",
        metrics.checks_made(),
        delivered.published,
        delivered.dropped
    );
    delivered
}

/// The outbox, on the spool if there is one: the events it kept from before the start
/// first, and (unless it syncs every write) synced every second.
fn open_outbox(capacity: usize, spool: Option<(spool::Spool, spool::Replay)>) -> Arc<Outbox> {
    let (spool, replayed) = match spool {
        Some((s, r)) => (Some(Arc::new(s)), r.events),
        None => (None, 0),
    };
    let outbox = Outbox::with_spool(capacity, spool.clone());
    if replayed > 0 {
        log::info!("spool: {replayed} event(s) from before the start, published first");
    }
    if let Some(spool) = spool.filter(|s| !s.syncs_always()) {
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                // An fsync may take long: not on a thread that runs checks.
                let spool = spool.clone();
                let _ = tokio::task::spawn_blocking(move || spool.sync()).await;
            }
        });
    }
    outbox
}

/// The targets in force, kept up to date on their own tasks: the targets topic followed
/// (`CK_TARGETS_TOPIC`), `CK_TARGETS` read again on SIGHUP.
fn follow_targets(
    config: &ProducerConfig,
    publish: &PublishSettings,
    metrics: &Arc<ProducerMetrics>,
    shutdown: &Shutdown,
) -> tokio::sync::watch::Receiver<targets::TargetSet> {
    use tokio::signal::unix::{SignalKind, signal};
    let hangup = match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            log::warn!("cannot catch SIGHUP ({e}): CK_TARGETS is read at the start only");
            None
        }
    };
    let listed = config.targets_topic.as_ref().map(|topic| {
        let (tx, rx) = tokio::sync::watch::channel(crate::target_list::ListSnapshot::default());
        tokio::spawn(crate::target_list::follow(
            publish.kafka.clone(),
            topic.clone(),
            tx,
            metrics.list.clone(),
            shutdown.clone(),
        ));
        rx
    });
    let mut follower = targets::TargetFollower {
        configured: config.targets.clone(),
        sources: config.sources.clone(),
        resolver: targets::TargetResolver::new(
            &config.producer_id,
            config.shard,
            config.sources.defaults(),
        ),
        listed,
        hangup,
    };
    let first = follower.resolve(&Default::default());
    metrics.targets_in_force(first.values().map(|t| &**t));
    metrics.list.applied(first.len(), 0);
    let (tx, rx) = tokio::sync::watch::channel(Arc::new(first));
    tokio::spawn(follower.run(tx, metrics.clone(), shutdown.clone()));
    rx
}

/// The publishing loop on its own task, counted alive (`/healthz`) while it runs.
fn spawn_publisher(
    outbox: &Arc<Outbox>,
    publish: PublishSettings,
    metrics: &Arc<ProducerMetrics>,
) -> tokio::task::JoinHandle<()> {
    let alive = metrics.liveness.start("publish", None);
    let publishing = publisher::publish(outbox.clone(), publish, metrics.clone(), GRACE);
    tokio::spawn(async move {
        publishing.await;
        drop(alive);
    })
}

/// `--once`: every target checked once, concurrently (at most `concurrency` at a time);
/// each event with whether its site is up, in target order. A check whose task failed is
/// None.
pub async fn check_once(config: ProducerConfig, probe: Probe) -> Vec<Option<(CheckEvent, bool)>> {
    let permits = Arc::new(tokio::sync::Semaphore::new(config.concurrency));
    let mut checks = Vec::new();
    for target in config.targets {
        let (probe, permits) = (probe.clone(), permits.clone());
        checks.push(tokio::spawn(async move {
            let _permit = permits.acquire_owned().await;
            let ev = probe.check(&target, None).await;
            let up = ev.up == Some(true);
            (ev, up)
        }));
    }
    let mut results = Vec::with_capacity(checks.len());
    for check in checks {
        results.push(check.await.ok());
    }
    results
}
