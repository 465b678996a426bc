//! The rollups, exactly once, in two steps. A transaction that stores events also stores
//! their rollups as one `rollup_deltas` row (`deltas::add_delta`): one cheap INSERT, rolled
//! back with the rows if the transaction fails. A fold ([`fold`]) then takes committed deltas,
//! merges them, adds them to `rollups_hourly`, `rollups_daily` and `site_status` and
//! deletes them, in one transaction of its own: each delta is counted once, and a series'
//! rows are updated once per fold rather than once per transaction.

use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Transaction};

use super::deltas::{ReadAhead, read_deltas};
use super::windows;
use super::{StoreError, array_of, bounded, sql_error};
use crate::consumer::rollup::{Bucket, BucketKey, Delta, Folded, LATENCY_BUCKETS};
use crate::consumer::windows::{Alignment, window_deltas};
use crate::event::ErrorKind;

/// The PostgreSQL advisory lock held (for its transaction) by the consumer folding: folds
/// happen one at a time, in the order the deltas were committed, whichever consumer runs
/// them. A session holding it keeps every consumer's folds waiting (the tests do).
pub const FOLD_LOCK: i64 = 0x636b_7369_7465_0002;

/// Fold up to `most` committed deltas into the rollup tables, those read ahead first;
/// returns how many were folded (0 also when another consumer is folding now, `ahead`
/// then kept). Bounded like every transaction.
pub(crate) async fn fold_rollups(
    client: &mut Client,
    most: i64,
    ahead: &mut ReadAhead,
) -> Result<usize, StoreError> {
    bounded("rollup fold", async {
        match fold(client, most, ahead).await? {
            Folding::Done(n) => Ok(n),
            Folding::ReadAgain => {
                log::debug!(
                    "rollups: deltas read ahead were folded meanwhile by another consumer: reading the table again"
                );
                match fold(client, most, &mut ReadAhead::default()).await? {
                    Folding::Done(n) => Ok(n),
                    Folding::ReadAgain => Ok(0),
                }
            }
        }
    })
    .await
}

enum Folding {
    Done(usize),
    ReadAgain,
}

async fn fold(
    client: &mut Client,
    most: i64,
    ahead: &mut ReadAhead,
) -> Result<Folding, StoreError> {
    let fail = |e: tokio_postgres::Error| sql_error("rollup fold", &e);
    let tx = client.transaction().await.map_err(fail)?;
    if !fold_lock(&tx).await? {
        return Ok(Folding::Done(0));
    }
    let ReadAhead {
        mut ids,
        mut folded,
    } = std::mem::take(ahead);
    let room = most - ids.len() as i64;
    if room > 0 {
        let more = read_deltas(&tx, (&ids, room), true, |d| folded.add(d)).await?;
        ids.extend(more);
    }
    if ids.is_empty() {
        return Ok(Folding::Done(0));
    }
    let params: [&(dyn ToSql + Sync); 1] = [&ids];
    // The window additions go out while PostgreSQL runs the others: the clock is asked
    // first (answered before them), the additions computed meanwhile.
    let (windowed, deleted, added) = tokio::join!(
        add_to_windows(&tx, &folded),
        tx.execute("DELETE FROM rollup_deltas WHERE id = ANY($1)", &params),
        add(&tx, &folded)
    );
    // The additions' error first: the DELETE may have gone out after them (its statement
    // is prepared first), and then fails only because they did.
    match added {
        Ok(()) => {}
        // The data of some series: fold these deltas again, finding it.
        Err(StoreError::RowRefused { detail }) => {
            drop(tx);
            log::warn!(
                "rollups: PostgreSQL refused a fold ({detail}): finding the series at fault"
            );
            return fold_isolating(client, most).await.map(Folding::Done);
        }
        Err(e) => return Err(e),
    }
    if deleted.map_err(fail)? != ids.len() as u64 {
        return Ok(Folding::ReadAgain);
    }
    if let Some((before, at)) = windowed? {
        move_windows(&tx, before, at, Some(&folded)).await?;
    }
    tx.commit().await.map_err(fail)?;
    Ok(Folding::Done(ids.len()))
}

/// This fold's additions to the windows when they are where they should be (the common
/// case: pipelined with the fold's other statements). Otherwise where they are and where
/// they should be: they move once the rollup tables hold this fold's rows.
async fn add_to_windows(
    tx: &Transaction<'_>,
    folded: &Folded,
) -> Result<Option<(Option<Alignment>, Alignment)>, StoreError> {
    let (at, before) = windows::clock(tx).await?;
    if before != Some(at) {
        return Ok(Some((before, at)));
    }
    windows::apply(tx, &window_deltas(folded, at)).await?;
    Ok(None)
}

/// The windows moved from `before` to `at` (in the fold's transaction, the rollup tables
/// already updated), with this fold's additions where nothing moved: what moved was read
/// from the tables, this fold's rows included. `folded` None (a fold done in parts): moved,
/// and built again from the tables.
async fn move_windows(
    tx: &Transaction<'_>,
    before: Option<Alignment>,
    at: Alignment,
    folded: Option<&Folded>,
) -> Result<(), StoreError> {
    let Some(folded) = folded else {
        return windows::move_to(tx, None, at).await;
    };
    windows::move_to(tx, before, at).await?;
    let hour_moved = before.is_none_or(|b| b.hour != at.hour);
    let day_moved = before.is_none_or(|b| b.day != at.day);
    if hour_moved && day_moved {
        return Ok(());
    }
    let mut deltas = window_deltas(folded, at);
    for d in deltas.values_mut() {
        if hour_moved {
            d.hours_24 = Default::default();
        }
        if day_moved {
            d.days_7 = Default::default();
            d.days_30 = Default::default();
        }
    }
    windows::apply(tx, &deltas).await
}

/// Move the windows to the current hour and day when they turned with nothing to fold
/// (no events came in): returns whether they moved. One consumer at a time (the fold's
/// lock), bounded like every transaction.
pub(crate) async fn align_windows(client: &mut Client) -> Result<bool, StoreError> {
    bounded("windows", async {
        let fail = |e: tokio_postgres::Error| sql_error("windows", &e);
        let tx = client.transaction().await.map_err(fail)?;
        let locked: bool = tx
            .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&FOLD_LOCK])
            .await
            .map_err(fail)?
            .get(0);
        if !locked {
            return Ok(false);
        }
        let (at, before) = windows::clock(&tx).await?;
        if before == Some(at) {
            return Ok(false);
        }
        windows::move_to(&tx, before, at).await?;
        tx.commit().await.map_err(fail)?;
        Ok(true)
    })
    .await
}

/// The fold lock, for this transaction; false when another consumer folds now.
async fn fold_lock(tx: &Transaction<'_>) -> Result<bool, StoreError> {
    tx.query_one("SELECT pg_try_advisory_xact_lock($1)", &[&FOLD_LOCK])
        .await
        .map(|row| row.get(0))
        .map_err(|e| sql_error("rollup fold", &e))
}

/// The fold PostgreSQL refused, again: each delta in order, halving its series under a
/// savepoint until the refused ones are alone. They go to `rollup_rejects` with the
/// reason (logged); every other series is folded. No data can stop the folding.
async fn fold_isolating(client: &mut Client, most: i64) -> Result<usize, StoreError> {
    let fail = |e: tokio_postgres::Error| sql_error("rollup fold", &e);
    let mut tx = client.transaction().await.map_err(fail)?;
    if !fold_lock(&tx).await? {
        return Ok(0);
    }
    let mut deltas = Vec::new();
    let ids = read_deltas(&tx, (&[], most), true, |d| deltas.push(d)).await?;
    if ids.is_empty() {
        return Ok(0);
    }
    let mut refused = Vec::new();
    for delta in deltas {
        refused.extend(isolate(&mut tx, delta.into_parts()).await?);
    }
    for (series, reason) in &refused {
        log::error!("rollups: a series was refused ({reason}): kept in rollup_rejects");
        let json = serde_json::to_string(series).unwrap_or_default();
        tx.execute(
            "INSERT INTO rollup_rejects (series, reason) VALUES ($1::text::jsonb, $2)",
            &[&json, reason],
        )
        .await
        .map_err(fail)?;
    }
    tx.execute("DELETE FROM rollup_deltas WHERE id = ANY($1)", &[&ids])
        .await
        .map_err(fail)?;
    let (at, before) = windows::clock(&tx).await?;
    move_windows(&tx, before, at, None).await?;
    tx.commit().await.map_err(fail)?;
    Ok(ids.len())
}

/// Fold `parts` (one series each) under a savepoint; where PostgreSQL refuses them, each
/// half again, down to single series: those are returned with the reason.
/// Series refused, each with PostgreSQL's reason.
type Refused = Vec<(Delta, String)>;

fn isolate<'a>(
    tx: &'a mut Transaction<'_>,
    parts: Vec<Delta>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Refused, StoreError>> + Send + 'a>> {
    Box::pin(async move {
        let fail = |e: tokio_postgres::Error| sql_error("rollup fold", &e);
        let mut folded = Folded::default();
        for part in &parts {
            folded.add(part.clone());
        }
        let savepoint = tx.savepoint("fold_part").await.map_err(fail)?;
        match add(&savepoint, &folded).await {
            Ok(()) => {
                savepoint.commit().await.map_err(fail)?;
                Ok(Vec::new())
            }
            Err(StoreError::RowRefused { detail }) => {
                savepoint.rollback().await.map_err(fail)?;
                if parts.len() <= 1 {
                    return Ok(parts.into_iter().map(|p| (p, detail.clone())).collect());
                }
                let mut parts = parts;
                let right = parts.split_off(parts.len() / 2);
                let mut refused = isolate(tx, parts).await?;
                refused.extend(isolate(tx, right).await?);
                Ok(refused)
            }
            Err(e) => Err(e),
        }
    })
}

/// Forget the series (url, vantage point) whose newest check is more than 30 days old:
/// their card leaves the page (their rollups stay, as history). Returns how many.
pub(crate) async fn forget_quiet_series(client: &Client) -> Result<u64, StoreError> {
    bounded("forgetting quiet series", async {
        client
            .execute(
                "DELETE FROM site_status WHERE last_checked_at < now() - interval '30 days'",
                &[],
            )
            .await
            .map_err(|e| sql_error("forgetting quiet series", &e))
    })
    .await
}

/// Add `rollups` to the tables. The statements go out together (pipelined). Rows are sent
/// in key order, so two transactions touching the same rows lock them in the same order.
async fn add(tx: &Transaction<'_>, rollups: &Folded) -> Result<(), StoreError> {
    if rollups.is_empty() {
        return Ok(());
    }
    let (hourly, daily, states) = tokio::join!(
        add_buckets(tx, "rollups_hourly", rollups.hourly().collect()),
        add_buckets(tx, "rollups_daily", rollups.daily().collect()),
        set_states(tx, rollups)
    );
    hourly.and(daily).and(states)
}

async fn add_buckets(
    tx: &Transaction<'_>,
    table: &'static str,
    mut rows: Vec<(BucketKey<'_>, &Bucket)>,
) -> Result<(), StoreError> {
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    let urls: Vec<&str> = rows.iter().map(|(k, _)| k.0).collect();
    let producers: Vec<&str> = rows.iter().map(|(k, _)| k.1).collect();
    let starts: Vec<_> = rows.iter().map(|(k, _)| k.2).collect();
    let checks: Vec<i64> = rows.iter().map(|(_, b)| b.checks).collect();
    let up: Vec<i64> = rows.iter().map(|(_, b)| b.up_checks).collect();
    let kinds: Vec<String> = rows
        .iter()
        .map(|(_, b)| super::array_text(b.error_kinds))
        .collect();
    let hists: Vec<String> = rows
        .iter()
        .map(|(_, b)| super::array_text(b.latency_hist))
        .collect();
    let mins: Vec<Option<i32>> = rows.iter().map(|(_, b)| b.latency_min_ms).collect();
    let maxs: Vec<Option<i32>> = rows.iter().map(|(_, b)| b.latency_max_ms).collect();
    let sums: Vec<i64> = rows.iter().map(|(_, b)| b.latency_sum_ms).collect();
    let lasts: Vec<_> = rows.iter().map(|(_, b)| b.last_checked_at).collect();
    let statuses: Vec<Option<i32>> = rows.iter().map(|(_, b)| b.last_status).collect();
    let maint: Vec<i64> = rows.iter().map(|(_, b)| b.maint_checks).collect();
    let params: [(&(dyn ToSql + Sync), Type); 13] = [
        (&urls, Type::TEXT_ARRAY),
        (&producers, Type::TEXT_ARRAY),
        (&starts, Type::TIMESTAMPTZ_ARRAY),
        (&checks, Type::INT8_ARRAY),
        (&up, Type::INT8_ARRAY),
        (&kinds, Type::TEXT_ARRAY),
        (&hists, Type::TEXT_ARRAY),
        (&mins, Type::INT4_ARRAY),
        (&maxs, Type::INT4_ARRAY),
        (&sums, Type::INT8_ARRAY),
        (&lasts, Type::TIMESTAMPTZ_ARRAY),
        (&statuses, Type::INT4_ARRAY),
        (&maint, Type::INT8_ARRAY),
    ];
    // Arrays add element by element, spelled out (see `array_of`).
    let add = |col: &str, n: usize| array_of(n, |i| format!("r.{col}[{i}] + excluded.{col}[{i}]"));
    let sql = format!(
        "INSERT INTO {table} AS r (url, producer, bucket, checks, up_checks, error_kinds, \
           latency_hist, latency_min_ms, latency_max_ms, latency_sum_ms, last_checked_at, last_status, \
           maint_checks) \
         SELECT u, p, b, c, uc, e::bigint[], h::bigint[], mn, mx, sm, lc, ls, m \
         FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::bigint[], $5::bigint[], $6::text[], \
           $7::text[], $8::int[], $9::int[], $10::bigint[], $11::timestamptz[], $12::int[], $13::bigint[]) \
           AS x(u, p, b, c, uc, e, h, mn, mx, sm, lc, ls, m) \
         ON CONFLICT ((md5(url)), producer, bucket) DO UPDATE SET \
           checks = r.checks + excluded.checks, \
           maint_checks = r.maint_checks + excluded.maint_checks, \
           up_checks = r.up_checks + excluded.up_checks, \
           error_kinds = {kinds}, latency_hist = {hist}, \
           latency_min_ms = least(r.latency_min_ms, excluded.latency_min_ms), \
           latency_max_ms = greatest(r.latency_max_ms, excluded.latency_max_ms), \
           latency_sum_ms = r.latency_sum_ms + excluded.latency_sum_ms, \
           last_status = CASE WHEN excluded.last_checked_at >= r.last_checked_at \
             THEN excluded.last_status ELSE r.last_status END, \
           last_checked_at = greatest(r.last_checked_at, excluded.last_checked_at)",
        kinds = add("error_kinds", ErrorKind::ALL.len()),
        hist = add("latency_hist", LATENCY_BUCKETS),
    );
    tx.execute_typed(&sql, &params)
        .await
        .map(|_| ())
        .map_err(|e| sql_error("rollup update", &e))
}

// `set_states`' statement spells out five recent checks.
const _: () = assert!(crate::consumer::rollup::RECENT_CHECKS == 5);

/// `set_states`' statement. One statement: the INSERT's NOT EXISTS sees the table as it was
/// before the UPDATE. The recent checks are merged whether or not the state moves (a late
/// check is one). New ones all newer than the stored newest go in front, cut to five, as the
/// merge would give: sorting every row's was 19 ms of a 46 ms fold of 1,000 series. Five new
/// ones are the five (a backlog's fold); fewer are cut by one jsonpath slice: cutting with
/// `- 9 - 8 - 7 - 6 - 5`, each a copy of the array, took 41 ms per 1,000 rows, the slice 15.
const SET_STATES: &str = "WITH x AS (SELECT *, rct::jsonb AS rc FROM unnest($1::text[], $2::text[], $3::bool[], $4::timestamptz[], \
       $5::bool[], $6::timestamptz[], $7::int[], $8::text[], $9::text[], $10::int[], \
       $11::timestamptz[], $12::text[]) \
       AS x(u, p, up, since, changed, lc, ls, le, lk, el, ce, rct)), \
     updated AS (UPDATE site_status AS s SET \
       since = CASE WHEN x.lc < s.last_checked_at THEN s.since \
         WHEN s.up = x.up AND NOT x.changed THEN s.since ELSE x.since END, \
       up = CASE WHEN x.lc < s.last_checked_at THEN s.up ELSE x.up END, \
       last_checked_at = greatest(x.lc, s.last_checked_at), \
       last_status = CASE WHEN x.lc < s.last_checked_at THEN s.last_status ELSE x.ls END, \
       last_error = CASE WHEN x.lc < s.last_checked_at THEN s.last_error ELSE x.le END, \
       last_error_kind = CASE WHEN x.lc < s.last_checked_at THEN s.last_error_kind ELSE x.lk END, \
       last_elapsed_ms = CASE WHEN x.lc < s.last_checked_at THEN s.last_elapsed_ms ELSE x.el END, \
       cert_expires_at = CASE WHEN x.lc < s.last_checked_at THEN s.cert_expires_at \
         ELSE coalesce(x.ce, s.cert_expires_at) END, \
       recent = CASE WHEN (x.rc->-1->>'t')::bigint > coalesce((s.recent->0->>'t')::bigint, -1) \
         THEN CASE WHEN jsonb_array_length(x.rc) >= 5 THEN x.rc \
           ELSE jsonb_path_query_array(x.rc || coalesce(s.recent, '[]'::jsonb), '$[0 to 4]') END \
         ELSE (SELECT jsonb_agg(e ORDER BY (e->>'t')::bigint DESC) FROM (SELECT e \
         FROM jsonb_array_elements(x.rc || coalesce(s.recent, '[]'::jsonb)) AS e \
         ORDER BY (e->>'t')::bigint DESC LIMIT 5) AS newest) END, \
       changed = txid_current() \
       FROM x WHERE md5(s.url) = md5(x.u) AND s.url = x.u AND s.producer = x.p \
       RETURNING s.url) \
     INSERT INTO site_status (url, producer, up, since, last_checked_at, last_status, \
       last_error, last_error_kind, last_elapsed_ms, cert_expires_at, recent, changed) \
     SELECT u, p, up, since, lc, ls, le, lk, el, ce, rc, txid_current() FROM x \
     WHERE NOT EXISTS (SELECT 1 FROM site_status AS s \
       WHERE md5(s.url) = md5(x.u) AND s.url = x.u AND s.producer = x.p) \
     AND NOT EXISTS (SELECT 1 FROM listed_targets AS l \
       WHERE md5(l.url) = md5(x.u) AND l.url = x.u \
       AND x.lc < l.removed_at + make_interval(secs => $13)) \
     ON CONFLICT DO NOTHING";

/// Each series' state: updated where this transaction's news is newer, created where the
/// series is new. `since` stays unless the verdict changed (stored → here, or within).
async fn set_states(tx: &Transaction<'_>, rollups: &Folded) -> Result<(), StoreError> {
    let mut rows: Vec<_> = rollups.states().collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    let urls: Vec<&str> = rows.iter().map(|(k, _)| k.0).collect();
    let producers: Vec<&str> = rows.iter().map(|(k, _)| k.1).collect();
    let up: Vec<bool> = rows.iter().map(|(_, s)| s.up).collect();
    let since: Vec<_> = rows.iter().map(|(_, s)| s.since).collect();
    let changed: Vec<bool> = rows.iter().map(|(_, s)| s.changed).collect();
    let lasts: Vec<_> = rows.iter().map(|(_, s)| s.last_checked_at).collect();
    let statuses: Vec<Option<i32>> = rows.iter().map(|(_, s)| s.last_status).collect();
    let errors: Vec<Option<&str>> = rows.iter().map(|(_, s)| s.last_error.as_deref()).collect();
    let kinds: Vec<Option<&str>> = rows.iter().map(|(_, s)| s.last_error_kind).collect();
    let elapsed: Vec<Option<i32>> = rows.iter().map(|(_, s)| s.last_elapsed_ms).collect();
    let certs: Vec<_> = rows.iter().map(|(_, s)| s.cert_expires_at).collect();
    // Plain data: serialising it cannot fail.
    let recent: Vec<String> = rows
        .iter()
        .map(|(_, s)| serde_json::to_string(&s.recent).unwrap_or_else(|_| "[]".into()))
        .collect();
    // A series of a removed target is not made again by checks from before its removal
    // (or in the minute after) folded after it was forgotten: they were written before the
    // writer knew of the removal.
    let settles_s: f64 = crate::consumer::listing::REMOVAL_SETTLES.as_seconds_f64();
    let params: [(&(dyn ToSql + Sync), Type); 13] = [
        (&urls, Type::TEXT_ARRAY),
        (&producers, Type::TEXT_ARRAY),
        (&up, Type::BOOL_ARRAY),
        (&since, Type::TIMESTAMPTZ_ARRAY),
        (&changed, Type::BOOL_ARRAY),
        (&lasts, Type::TIMESTAMPTZ_ARRAY),
        (&statuses, Type::INT4_ARRAY),
        (&errors, Type::TEXT_ARRAY),
        (&kinds, Type::TEXT_ARRAY),
        (&elapsed, Type::INT4_ARRAY),
        (&certs, Type::TIMESTAMPTZ_ARRAY),
        (&recent, Type::TEXT_ARRAY),
        (&settles_s, Type::FLOAT8),
    ];
    tx.execute_typed(SET_STATES, &params)
        .await
        .map(|_| ())
        .map_err(|e| sql_error("site status update", &e))
}
