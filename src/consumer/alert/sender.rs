//! The sender: takes the oldest due notification from the outbox under a row lock
//! (`SKIP LOCKED`: consumers side by side never send the same one at once), POSTs it,
//! and records the outcome in the same transaction: delivered, retried later with
//! backoff, or given up past `CK_ALERT_GIVE_UP_HOURS`. A crash before the record means a
//! second delivery of the same `id`: at least once.
//!
//! It runs on a PostgreSQL connection of its own, woken by the writer when a transaction
//! decided something and every second otherwise (retries, other consumers' decisions).
//! It never touches the writer's connection.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use rustls::ClientConfig;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;

use super::webhook::Endpoint;
use super::{AlertConfig, PayloadFormat};
use crate::consumer::metrics::ConsumerMetrics;
use crate::consumer::store::{self, Attempt, PostgresSettings, StoreError};

/// Time between two looks at the outbox when nothing woke the sender.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// Longest pause between two attempts at one notification.
const MOST_BACKOFF: Duration = Duration::from_secs(60);

/// The running sender.
pub(crate) struct AlertSender {
    wake: Arc<Notify>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// What the sender needs to deliver.
struct Delivery {
    endpoint: Endpoint,
    tls: Arc<ClientConfig>,
    format: PayloadFormat,
    give_up_after: chrono::TimeDelta,
    metrics: Arc<ConsumerMetrics>,
}

impl AlertSender {
    /// Start delivering the outbox of `postgres`'s database.
    pub(crate) fn start(
        postgres: PostgresSettings,
        config: &AlertConfig,
        metrics: Arc<ConsumerMetrics>,
    ) -> Result<AlertSender, String> {
        let delivery = Delivery {
            endpoint: Endpoint::parse(config.webhook_url.expose()).map_err(|e| e.0)?,
            tls: super::webhook::tls_config(config.ca.as_deref())?,
            format: config.format,
            give_up_after: chrono::TimeDelta::from_std(config.give_up_after)
                .unwrap_or(chrono::TimeDelta::hours(24)),
            metrics,
        };
        log::info!("alerts: delivering to {}", delivery.endpoint);
        let wake = Arc::new(Notify::new());
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(run(postgres, delivery, wake.clone(), stopped));
        Ok(AlertSender { wake, stop, task })
    }

    /// What the writer calls after committing a transaction that decided something.
    pub(crate) fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Deliver what is due (what this consumer decided last, for `--drain`) for at most
    /// `within`, then stop; what is left is delivered by the next consumer to run.
    pub(crate) async fn finish(self, within: Duration) {
        let _ = self.stop.send(());
        let mut task = self.task;
        if tokio::time::timeout(within, &mut task).await.is_err() {
            task.abort();
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
    loop {
        if let Some(db) = client.as_mut() {
            match deliver_next(db, &delivery).await {
                Ok(Some(true)) => continue,
                Ok(Some(false)) if !stopping => continue,
                Ok(_) => {}
                Err(e) => {
                    log::warn!("alerts: {e}; the outbox waits");
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

/// Try the oldest due notification: Some(true) delivered, Some(false) not (retried
/// later or given up), None when none is due. The whole transaction (the POST's 10 s
/// included) is bounded like the writer's: a PostgreSQL that stops answering (a
/// fail-over) costs a reconnection, not the TCP timeout (~15 min). Cut off after the
/// POST, the delivery is not recorded and goes out again: at least once.
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
    let tx = db
        .transaction()
        .await
        .map_err(|e| store::sql_error("begin", &e))?;
    let Some(pending) = store::claim_next(&tx).await? else {
        tx.commit()
            .await
            .map_err(|e| store::sql_error("commit", &e))?;
        return Ok(None);
    };
    let body = match delivery.format {
        PayloadFormat::Json => pending.payload.clone().into_bytes(),
        PayloadFormat::Slack => slack_body(&pending.payload),
    };
    let attempt = match delivery.endpoint.post(&delivery.tls, body).await {
        Ok(()) => {
            log::info!("alerts: delivered {}", summary(&pending.payload));
            Attempt::Delivered
        }
        Err(error) if Utc::now() - pending.decided_at >= delivery.give_up_after => {
            log::error!(
                "alerts: gave up on {} after {} attempts: {error}",
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
                "alerts: {} not delivered ({error}); retrying in {} s",
                summary(&pending.payload),
                retry_in.as_secs()
            );
            Attempt::Failed { error, retry_in }
        }
    };
    delivery.metrics.alert_attempt(match attempt {
        Attempt::Delivered => 0,
        Attempt::Failed { .. } => 1,
        Attempt::GaveUp { .. } => 2,
    });
    store::record_attempt(&tx, pending.id, &attempt).await?;
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

/// Slack's and Mattermost's `{"text": ...}`, from the notification's JSON.
fn slack_body(payload: &str) -> Vec<u8> {
    let v: serde_json::Value = serde_json::from_str(payload).unwrap_or_default();
    let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
    let producers = v["producers"]
        .as_array()
        .map(|p| {
            p.iter()
                .filter_map(|p| p.as_str())
                .map(|p| if p.is_empty() { "(unnamed)" } else { p })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    let detail = match (v["status"].as_i64(), s("error")) {
        (_, e) if !e.is_empty() => format!("{}: {e}", s("error_kind")),
        (Some(status), _) => format!("HTTP {status}"),
        (None, _) => String::new(),
    };
    let text = match s("kind").as_str() {
        "down" => format!(
            ":red_circle: DOWN {} since {} (seen by {producers}; {detail})",
            s("url"),
            s("since")
        ),
        "up" => format!(
            ":large_green_circle: UP again {} since {} (seen by {producers})",
            s("url"),
            s("since")
        ),
        "stale" => format!(
            ":grey_question: NO DATA for {}: no check since {} (from {producers}); the incident is closed",
            s("url"),
            s("since")
        ),
        _ => format!(
            ":warning: CERTIFICATE of {} expires at {}",
            s("url"),
            s("cert_expires_at")
        ),
    };
    serde_json::to_vec(&serde_json::json!({ "text": text })).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_a_minute() {
        let secs: Vec<u64> = (0..9).map(|a| backoff(a).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }

    #[test]
    fn slack_text_says_what_and_where() {
        let payload = r#"{"id":"x","kind":"down","url":"https://a.example/","since":"2026-11-30T01:00:00.000Z","producers":["eu","us"],"status":null,"error":"connection refused","error_kind":"refused","checked_at":"2026-11-30T01:00:02.000Z","cert_expires_at":null}"#;
        let body: serde_json::Value = serde_json::from_slice(&slack_body(payload)).unwrap();
        assert_eq!(
            body["text"],
            ":red_circle: DOWN https://a.example/ since 2026-11-30T01:00:00.000Z (seen by eu, us; refused: connection refused)"
        );
    }
}
