//! The senders, one per receiver: each takes its receiver's oldest due notification from
//! the outbox under a row lock (`SKIP LOCKED`: consumers side by side never send the same
//! one at once), sends it, and records the outcome in the same transaction: delivered,
//! retried later with backoff, or given up past `CK_ALERT_GIVE_UP_HOURS`. A crash before
//! the record means a second delivery of the same `id` to that receiver: at least once.
//! A receiver that is down or slow delays only its own notifications.
//!
//! Each runs on a PostgreSQL connection of its own, woken by the writer when a transaction
//! decided something and every second otherwise (retries, other consumers' decisions).
//! It never touches the writer's connection.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;

use super::AlertConfig;
use super::format::{self, Format};
use super::receivers::{Receiver, Target};
use crate::consumer::metrics::ConsumerMetrics;
use crate::consumer::store::{self, Attempt, PostgresSettings, StoreError};

/// Time between two looks at the outbox when nothing woke the sender.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// Longest pause between two attempts at one notification.
const MOST_BACKOFF: Duration = Duration::from_secs(60);

/// An Alertmanager receiver is told of every open incident this often: it resolves an
/// alert nobody re-posts (its `resolve_timeout`, 5 minutes by default).
const REPOST_FIRING_EVERY: Duration = Duration::from_secs(60);

/// The running senders.
pub(crate) struct AlertSender {
    senders: Vec<(Arc<Notify>, oneshot::Sender<()>, JoinHandle<()>)>,
}

/// What one sender needs to deliver.
struct Delivery {
    receiver: Receiver,
    give_up_after: chrono::TimeDelta,
    metrics: Arc<ConsumerMetrics>,
}

impl AlertSender {
    /// Start delivering the outbox of `postgres`'s database, a task per receiver.
    pub(crate) fn start(
        postgres: PostgresSettings,
        config: &AlertConfig,
        metrics: Arc<ConsumerMetrics>,
    ) -> Result<AlertSender, String> {
        let give_up_after = chrono::TimeDelta::from_std(config.give_up_after)
            .unwrap_or(chrono::TimeDelta::hours(24));
        let mut senders = Vec::new();
        for receiver in &config.receivers {
            log::info!(
                "alerts: delivering to {} (receiver {:?}, {})",
                receiver.target,
                receiver.name,
                receiver.format.name()
            );
            let delivery = Delivery {
                receiver: receiver.clone(),
                give_up_after,
                metrics: metrics.clone(),
            };
            let wake = Arc::new(Notify::new());
            let (stop, stopped) = oneshot::channel();
            let task = tokio::spawn(run(postgres.clone(), delivery, wake.clone(), stopped));
            senders.push((wake, stop, task));
        }
        Ok(AlertSender { senders })
    }

    /// What the writer calls after committing a transaction that decided something.
    pub(crate) fn wake(&self) {
        for (wake, _, _) in &self.senders {
            wake.notify_one();
        }
    }

    /// Deliver what is due (what this consumer decided last, for `--drain`) for at most
    /// `within`, then stop; what is left is delivered by the next consumer to run.
    pub(crate) async fn finish(self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        let mut tasks = Vec::new();
        for (_, stop, task) in self.senders {
            let _ = stop.send(());
            tasks.push(task);
        }
        for mut task in tasks {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                task.abort();
            }
        }
    }
}

async fn run(
    postgres: PostgresSettings,
    delivery: Delivery,
    wake: Arc<Notify>,
    mut stopped: oneshot::Receiver<()>,
) {
    let mut client = None;
    // Asked to stop: what is due goes out first (bounded by `finish`, and only while the
    // receiver takes them), then the task ends.
    let mut stopping = false;
    let mut reposted = Instant::now();
    loop {
        if let Some(db) = client.as_mut() {
            if delivery.receiver.format == Format::Alertmanager
                && reposted.elapsed() >= REPOST_FIRING_EVERY
            {
                reposted = Instant::now();
                repost_firing(db, &delivery).await;
            }
            match deliver_next(db, &delivery).await {
                Ok(Some(true)) => continue,
                Ok(Some(false)) if !stopping => continue,
                Ok(_) => {}
                Err(e) => {
                    log::warn!("alerts, {}: {e}; the outbox waits", delivery.receiver.name);
                    client = None;
                }
            }
        } else {
            match postgres.connect(Duration::from_secs(10)).await {
                Ok(c) => {
                    client = Some(c);
                    continue;
                }
                Err(e) => log::warn!("alerts: {e}; retrying"),
            }
        }
        if stopping {
            return;
        }
        stopping = pause(&wake, &mut stopped, LOOK_EVERY).await;
    }
}

/// Wait until woken or `every` passed; true when asked to stop.
async fn pause(wake: &Notify, stopped: &mut oneshot::Receiver<()>, every: Duration) -> bool {
    tokio::select! {
        _ = wake.notified() => false,
        _ = tokio::time::sleep(every) => false,
        // Sent, or the sender dropped: either way, stop.
        _ = stopped => true,
    }
}

/// Send one rendered notification to the receiver.
async fn send(receiver: &Receiver, message: &format::Message) -> Result<(), String> {
    match &receiver.target {
        Target::Webhook(endpoint, tls) => endpoint.post(tls, message).await,
        Target::Email(mailer) => mailer.send(message).await,
    }
}

/// The open incidents this Alertmanager receiver wants, posted again as firing.
async fn repost_firing(db: &tokio_postgres::Client, delivery: &Delivery) {
    let receiver = &delivery.receiver;
    let firing = match store::firing_for(db, &receiver.name).await {
        Ok(f) => f,
        Err(e) => {
            log::warn!("alerts, {}: {e}", receiver.name);
            return;
        }
    };
    if firing.is_empty() {
        return;
    }
    let alerts: Vec<serde_json::Value> = firing
        .iter()
        .map(|(url, since)| {
            let n =
                serde_json::json!({"kind": "down", "url": url, "since": since, "producers": []});
            format::alertmanager_alert(&n, &format!("DOWN {url} since {since}"))
        })
        .collect();
    let message = format::Message {
        body: serde_json::to_vec(&alerts).unwrap_or_default(),
        content_type: "application/json",
        headers: Vec::new(),
        title: String::new(),
    };
    if let Err(e) = send(receiver, &message).await {
        log::debug!(
            "alerts, {}: re-posting the firing alerts failed: {e}",
            receiver.name
        );
    }
}

/// Try the oldest due notification: Some(true) delivered, Some(false) not (retried
/// later or given up), None when none is due. The whole transaction (the send's bound
/// included) is bounded like the writer's: a PostgreSQL that stops answering (a
/// fail-over) costs a reconnection, not the TCP timeout (~15 min). Cut off after the
/// send, the delivery is not recorded and goes out again: at least once.
async fn deliver_next(
    db: &mut tokio_postgres::Client,
    delivery: &Delivery,
) -> Result<Option<bool>, StoreError> {
    store::bounded("alert delivery", deliver_next_unbounded(db, delivery)).await
}

async fn deliver_next_unbounded(
    db: &mut tokio_postgres::Client,
    delivery: &Delivery,
) -> Result<Option<bool>, StoreError> {
    let receiver = &delivery.receiver;
    let tx = db
        .transaction()
        .await
        .map_err(|e| store::sql_error("begin", &e))?;
    let Some(pending) = store::claim_next(&tx, &receiver.name).await? else {
        tx.commit()
            .await
            .map_err(|e| store::sql_error("commit", &e))?;
        return Ok(None);
    };
    let key = receiver.routing_key.as_ref().map(|k| k.expose());
    let message = format::render(receiver.format, &pending.payload, key);
    let attempt = match send(receiver, &message).await {
        Ok(()) => {
            log::info!(
                "alerts, {}: delivered {}",
                receiver.name,
                summary(&pending.payload)
            );
            Attempt::Delivered
        }
        Err(error) if Utc::now() - pending.decided_at >= delivery.give_up_after => {
            log::error!(
                "alerts, {}: gave up on {} after {} attempts: {error}",
                receiver.name,
                summary(&pending.payload),
                pending.attempts + 1
            );
            Attempt::GaveUp { error }
        }
        Err(error) => {
            let retry_in = backoff(pending.attempts);
            // Each notification's first failure is a warning; its retries are in the debug
            // log (and in alert_outbox.last_error): an outage with many waiting does not
            // flood the log.
            let level = if pending.attempts == 0 {
                log::Level::Warn
            } else {
                log::Level::Debug
            };
            log::log!(
                level,
                "alerts, {}: {} not delivered ({error}); retrying in {} s",
                receiver.name,
                summary(&pending.payload),
                retry_in.as_secs()
            );
            Attempt::Failed { error, retry_in }
        }
    };
    delivery.metrics.alert_attempt(
        &receiver.name,
        match attempt {
            Attempt::Delivered => 0,
            Attempt::Failed { .. } => 1,
            Attempt::GaveUp { .. } => 2,
        },
    );
    store::record_attempt(&tx, pending.id, &receiver.name, &attempt).await?;
    tx.commit()
        .await
        .map_err(|e| store::sql_error("commit", &e))?;
    Ok(Some(matches!(attempt, Attempt::Delivered)))
}

/// 1, 2, 4, … seconds after the 1st, 2nd, 3rd failure, at most [`MOST_BACKOFF`].
fn backoff(attempts_before: i32) -> Duration {
    let exp = u32::try_from(attempts_before).unwrap_or(0).min(6);
    Duration::from_secs(1 << exp).min(MOST_BACKOFF)
}

/// "down https://… (id …)" for the log: the payload's URL is already redacted.
fn summary(payload: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(payload).unwrap_or_default();
    format!(
        "{} {} (id {})",
        v["kind"].as_str().unwrap_or("?"),
        v["url"].as_str().unwrap_or("?"),
        v["id"].as_str().unwrap_or("?")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_a_minute() {
        let secs: Vec<u64> = (0..9).map(|a| backoff(a).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }
}
