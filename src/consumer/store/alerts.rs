//! Alerting's tables: each URL's alert state (`alert_sites`), read and written inside the
//! writer's transaction, and the outbox of notifications (`alert_outbox`), filled there
//! and emptied by the sender one row at a time under a row lock (`SKIP LOCKED`), so that
//! two consumers never send the same notification at the same time.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Transaction};

use super::{StoreError, bounded, sql_error};
use crate::consumer::alert::decide::{Decisions, UrlAlertState, vantage_from_json, vantage_json};

/// The stored states of `urls` (those never seen have none).
pub(crate) async fn load_states(
    tx: &Transaction<'_>,
    urls: &[&str],
) -> Result<BTreeMap<String, UrlAlertState>, StoreError> {
    if urls.is_empty() {
        return Ok(BTreeMap::new());
    }
    let rows = tx
        .query_typed(
            "SELECT url, down, since, cert_warned_not_after, vantage::text, kafka_partition \
             FROM alert_sites \
             WHERE md5(url) IN (SELECT md5(u) FROM unnest($1::text[]) AS u) AND url = ANY($1)",
            &[(&urls, Type::TEXT_ARRAY)],
        )
        .await
        .map_err(|e| sql_error("alert state read", &e))?;
    let read = |r: &tokio_postgres::Row| -> Result<(String, UrlAlertState), tokio_postgres::Error> {
        let vantage: String = r.try_get(4)?;
        Ok((
            r.try_get(0)?,
            UrlAlertState {
                down: r.try_get(1)?,
                since: r.try_get(2)?,
                cert_warned: r.try_get(3)?,
                vantage: vantage_from_json(&vantage),
                partition: r.try_get(5)?,
            },
        ))
    };
    rows.iter()
        .map(read)
        .collect::<Result<_, _>>()
        .map_err(|e| sql_error("alert state read", &e))
}

/// Store the changed states and the decided notifications (in the order decided).
pub(crate) async fn save_decisions(
    tx: &Transaction<'_>,
    decisions: &Decisions,
) -> Result<(), StoreError> {
    let (states, outbox) = tokio::join!(save_states(tx, decisions), save_outbox(tx, decisions));
    states.and(outbox)
}

async fn save_states(tx: &Transaction<'_>, decisions: &Decisions) -> Result<(), StoreError> {
    if decisions.changed.is_empty() {
        return Ok(());
    }
    let urls: Vec<&str> = decisions.changed.keys().map(String::as_str).collect();
    let down: Vec<bool> = decisions.changed.values().map(|s| s.down).collect();
    let since: Vec<Option<DateTime<Utc>>> = decisions.changed.values().map(|s| s.since).collect();
    let warned: Vec<Option<DateTime<Utc>>> =
        decisions.changed.values().map(|s| s.cert_warned).collect();
    let vantage: Vec<String> = decisions
        .changed
        .values()
        .map(|s| vantage_json(&s.vantage))
        .collect();
    let partitions: Vec<Option<i32>> = decisions.changed.values().map(|s| s.partition).collect();
    let params: [(&(dyn ToSql + Sync), Type); 6] = [
        (&urls, Type::TEXT_ARRAY),
        (&down, Type::BOOL_ARRAY),
        (&since, Type::TIMESTAMPTZ_ARRAY),
        (&warned, Type::TIMESTAMPTZ_ARRAY),
        (&vantage, Type::TEXT_ARRAY),
        (&partitions, Type::INT4_ARRAY),
    ];
    tx.execute_typed(
        "INSERT INTO alert_sites (url, down, since, cert_warned_not_after, vantage, kafka_partition) \
         SELECT u, d, s, w, v::jsonb, p FROM unnest($1::text[], $2::bool[], $3::timestamptz[], \
           $4::timestamptz[], $5::text[], $6::int[]) AS n(u, d, s, w, v, p) \
         ON CONFLICT ((md5(url))) DO UPDATE SET down = EXCLUDED.down, since = EXCLUDED.since, \
           cert_warned_not_after = EXCLUDED.cert_warned_not_after, \
           vantage = EXCLUDED.vantage, updated_at = now(), \
           kafka_partition = coalesce(EXCLUDED.kafka_partition, alert_sites.kafka_partition)",
        &params,
    )
    .await
    .map(|_| ())
    .map_err(|e| sql_error("alert state write", &e))
}

async fn save_outbox(tx: &Transaction<'_>, decisions: &Decisions) -> Result<(), StoreError> {
    let n = &decisions.notifications;
    if n.is_empty() {
        return Ok(());
    }
    let ids: Vec<uuid::Uuid> = n.iter().map(|n| n.id).collect();
    // The URL as in the payload (redacted): one URL's notifications go out in order.
    let urls: Vec<&str> = n.iter().map(|n| n.url.as_str()).collect();
    let kinds: Vec<&str> = n.iter().map(|n| n.kind.name()).collect();
    let payloads: Vec<String> = n
        .iter()
        .map(|n| serde_json::to_string(n).unwrap_or_default())
        .collect();
    let params: [(&(dyn ToSql + Sync), Type); 4] = [
        (&ids, Type::UUID_ARRAY),
        (&urls, Type::TEXT_ARRAY),
        (&kinds, Type::TEXT_ARRAY),
        (&payloads, Type::TEXT_ARRAY),
    ];
    // One row per receiver that wants it (`alert_receivers`, kept from the consumers'
    // configuration): each is delivered, retried and acknowledged on its own.
    tx.execute_typed(
        "INSERT INTO alert_outbox (id, url, kind, payload, receiver) \
         SELECT i, u, k, p::json, r.name FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[]) \
           WITH ORDINALITY AS n(i, u, k, p, o) \
         JOIN alert_receivers AS r ON (r.pattern IS NULL OR n.u ~ r.pattern) \
           AND (r.kinds IS NULL OR n.k = ANY(r.kinds)) \
         ORDER BY o, r.name",
        &params,
    )
    .await
    .map(|_| ())
    .map_err(|e| sql_error("alert outbox write", &e))
}

/// Close the open incidents of `partitions` whose every vantage point has been quiet
/// for `stale_after_s` of wall-clock time: each gets one `stale` notification, in one
/// transaction with its state. Returns the states changed (the writer's known states
/// take them). Bounded like every transaction.
pub(crate) async fn close_stale_incidents(
    client: &mut Client,
    partitions: &[i32],
    stale_after_s: i64,
) -> Result<BTreeMap<String, UrlAlertState>, StoreError> {
    if partitions.is_empty() {
        return Ok(BTreeMap::new());
    }
    bounded("stale incidents", async {
        let fail = |e: tokio_postgres::Error| sql_error("stale incidents", &e);
        let tx = client.transaction().await.map_err(fail)?;
        let rows = tx
            .query_typed(
                "SELECT url, down, since, cert_warned_not_after, vantage::text, kafka_partition \
                 FROM alert_sites WHERE down AND kafka_partition = ANY($1) FOR UPDATE",
                &[(&partitions, Type::INT4_ARRAY)],
            )
            .await
            .map_err(fail)?;
        let quiet_since = Utc::now().timestamp() - stale_after_s;
        let mut decisions = Decisions::default();
        for r in &rows {
            let vantage: String = r.try_get(4).map_err(fail)?;
            let mut state = UrlAlertState {
                down: r.try_get(1).map_err(fail)?,
                since: r.try_get(2).map_err(fail)?,
                cert_warned: r.try_get(3).map_err(fail)?,
                vantage: vantage_from_json(&vantage),
                partition: r.try_get(5).map_err(fail)?,
            };
            // A state from before the newest check was kept has none: not judged.
            if state
                .newest_check()
                .is_none_or(|newest| newest > quiet_since)
            {
                continue;
            }
            let url: String = r.try_get(0).map_err(fail)?;
            if let Some(n) = state.close_stale(&url) {
                decisions.notifications.push(n);
                decisions.changed.insert(url, state);
            }
        }
        if decisions.changed.is_empty() {
            tx.rollback().await.map_err(fail)?;
            return Ok(BTreeMap::new());
        }
        save_decisions(&tx, &decisions).await?;
        tx.commit().await.map_err(fail)?;
        Ok(decisions.changed)
    })
    .await
}

/// A receiver's routing: its name, the pattern its URLs match, the kinds it wants.
pub(crate) type Route = (String, Option<String>, Option<Vec<String>>);

/// Keep `receivers`' routing for every consumer's writer (the outbox rows are routed in
/// SQL); each pattern is checked by PostgreSQL here: an invalid one is the error, naming
/// its receiver. Receivers no longer configured keep their rows, which wait.
pub(crate) async fn set_receivers(client: &mut Client, receivers: &[Route]) -> Result<(), String> {
    let fail = |e: tokio_postgres::Error| sql_error("alert receivers", &e).to_string();
    let tx = client.transaction().await.map_err(fail)?;
    for (name, pattern, kinds) in receivers {
        if let Some(p) = pattern {
            tx.query_one("SELECT '' ~ $1", &[p]).await.map_err(|e| {
                let why = e.as_db_error().map_or(e.to_string(), |d| d.message().to_string());
                format!("receiver {name:?}: match {p:?} is not a regular expression PostgreSQL reads: {why}")
            })?;
        }
        tx.execute(
            "INSERT INTO alert_receivers (name, pattern, kinds) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET pattern = EXCLUDED.pattern, kinds = EXCLUDED.kinds, \
               updated_at = now()",
            &[name, pattern, kinds],
        )
        .await
        .map_err(fail)?;
    }
    tx.commit().await.map_err(fail)
}

/// The open incidents the receiver `name` wants (its routing): (URL, since).
pub(crate) async fn firing_for(
    client: &Client,
    name: &str,
) -> Result<Vec<(String, String)>, StoreError> {
    bounded("firing alerts", async {
        let fail = |e: tokio_postgres::Error| sql_error("firing alerts", &e);
        let rows = client
            .query(
                "SELECT s.url, coalesce(to_char(s.since AT TIME ZONE 'UTC', \
                   'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), '') \
                 FROM alert_sites AS s JOIN alert_receivers AS r ON r.name = $1 \
                 WHERE s.down AND (r.pattern IS NULL OR s.url ~ r.pattern) \
                   AND (r.kinds IS NULL OR 'down' = ANY(r.kinds))",
                &[&name],
            )
            .await
            .map_err(fail)?;
        rows.iter()
            .map(|r| Ok((r.try_get::<_, String>(0)?, r.try_get(1)?)))
            .collect::<Result<Vec<_>, tokio_postgres::Error>>()
            .map_err(fail)
            .map(|v| {
                v.into_iter()
                    .map(|(u, s)| (crate::secret::redact_url(&u).into_owned(), s))
                    .collect()
            })
    })
    .await
}

/// A notification waiting in the outbox, locked by the transaction that claimed it.
#[derive(Debug, Clone)]
pub(crate) struct PendingNotification {
    pub(crate) id: uuid::Uuid,
    pub(crate) payload: String,
    pub(crate) attempts: i32,
    pub(crate) decided_at: DateTime<Utc>,
}

/// The oldest notification due (its URL's earlier ones delivered or given up), locked
/// for this transaction; one another sender holds is skipped.
pub(crate) async fn claim_next(
    tx: &Transaction<'_>,
    receiver: &str,
) -> Result<Option<PendingNotification>, StoreError> {
    let row = tx
        .query_opt(
            "SELECT id, payload::text, attempts, decided_at FROM alert_outbox AS o \
             WHERE receiver = $1 AND delivered_at IS NULL AND gave_up_at IS NULL \
               AND next_attempt_at <= now() \
               AND NOT EXISTS (SELECT 1 FROM alert_outbox AS p \
                 WHERE p.receiver = $1 AND md5(p.url) = md5(o.url) AND p.url = o.url \
                 AND p.seq < o.seq AND p.delivered_at IS NULL AND p.gave_up_at IS NULL) \
             ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED",
            &[&receiver],
        )
        .await
        .map_err(|e| sql_error("alert outbox read", &e))?;
    let Some(r) = row else { return Ok(None) };
    let read = || -> Result<PendingNotification, tokio_postgres::Error> {
        Ok(PendingNotification {
            id: r.try_get(0)?,
            payload: r.try_get(1)?,
            attempts: r.try_get(2)?,
            decided_at: r.try_get(3)?,
        })
    };
    read()
        .map(Some)
        .map_err(|e| sql_error("alert outbox read", &e))
}

/// How one delivery attempt ended.
#[derive(Debug)]
pub(crate) enum Attempt {
    Delivered,
    /// Failed: try again after `retry_in`.
    Failed {
        error: String,
        retry_in: std::time::Duration,
    },
    /// Failed, and the notification is older than `CK_ALERT_GIVE_UP_HOURS`.
    GaveUp {
        error: String,
    },
}

/// Record an attempt on a claimed notification.
pub(crate) async fn record_attempt(
    tx: &Transaction<'_>,
    id: uuid::Uuid,
    receiver: &str,
    attempt: &Attempt,
) -> Result<(), StoreError> {
    // One statement for the three outcomes: which columns it sets follows from the values.
    let (delivered, gave_up, error, retry_ms): (bool, bool, Option<&str>, i64) = match attempt {
        Attempt::Delivered => (true, false, None, 0),
        Attempt::Failed { error, retry_in } => (
            false,
            false,
            Some(error),
            i64::try_from(retry_in.as_millis()).unwrap_or(i64::MAX),
        ),
        Attempt::GaveUp { error } => (false, true, Some(error), 0),
    };
    let params: [(&(dyn ToSql + Sync), Type); 6] = [
        (&id, Type::UUID),
        (&error, Type::TEXT),
        (&delivered, Type::BOOL),
        (&gave_up, Type::BOOL),
        (&retry_ms, Type::INT8),
        (&receiver, Type::TEXT),
    ];
    let sql = "UPDATE alert_outbox SET attempts = attempts + 1, last_error = $2, \
               delivered_at = CASE WHEN $3 THEN now() END, \
               gave_up_at = CASE WHEN $4 THEN now() END, \
               next_attempt_at = now() + make_interval(secs => $5::bigint / 1000.0) \
               WHERE id = $1 AND receiver = $6";
    tx.execute_typed(sql, &params)
        .await
        .map(|_| ())
        .map_err(|e| sql_error("alert outbox update", &e))
}

/// An open incident, for the status page.
#[derive(Debug, Clone)]
pub struct OpenIncident {
    /// The URL (not yet redacted).
    pub url: String,
    /// When it went down.
    pub since: Option<DateTime<Utc>>,
    /// The vantage points that see it down.
    pub producers: Vec<String>,
}

/// The open incidents, and the notifications not yet delivered (nor given up).
pub(crate) async fn open_incidents(
    client: &Client,
) -> Result<(Vec<OpenIncident>, i64), StoreError> {
    bounded("alert read", async {
        let fail = |e: tokio_postgres::Error| sql_error("alert read", &e);
        let (sites, pending) = tokio::join!(
            client.query(
                "SELECT url, since, vantage::text FROM alert_sites WHERE down ORDER BY since, url",
                &[],
            ),
            client.query_one(
                "SELECT count(*) FROM alert_outbox WHERE delivered_at IS NULL AND gave_up_at IS NULL",
                &[],
            )
        );
        let mut incidents = Vec::new();
        for r in sites.map_err(fail)? {
            let vantage: String = r.try_get(2).map_err(fail)?;
            incidents.push(OpenIncident {
                url: r.try_get(0).map_err(fail)?,
                since: r.try_get(1).map_err(fail)?,
                producers: vantage_from_json(&vantage)
                    .into_iter()
                    .filter(|(_, s)| s.is_down())
                    .map(|(p, _)| p)
                    .collect(),
            });
        }
        let pending = pending.map_err(fail)?.try_get(0).map_err(fail)?;
        Ok((incidents, pending))
    })
    .await
}
