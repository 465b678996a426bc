//! `series_windows`: each series' sliding windows (see `consumer::windows`), kept by the
//! fold, in the fold's transaction: what a fold adds goes into the windows that hold its
//! buckets; when the hour or the day turns, the rollup rows that left a window are taken
//! out of it and those that entered put in, so that a window always equals the sum of the
//! rollup rows in its range. The page reads only the rows changed
//! since its last read (`changed`, the writing transaction's id: see `status`).

use chrono::{DateTime, TimeDelta, Utc};
use futures_util::StreamExt;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Transaction};

use super::{StoreError, array_of, bounded, sql_error};
use crate::consumer::rollup::LATENCY_BUCKETS;
use crate::consumer::series_hash::SeriesMap;
use crate::consumer::windows::{Alignment, Figures, WindowDelta};

/// The windows' alignment, locked for this transaction (None before the first).
async fn alignment(tx: &Transaction<'_>) -> Result<Option<Alignment>, StoreError> {
    // Unnamed (typed): one message, no round trip to prepare it first, so that a fold's
    // window additions can follow its other statements in the pipeline (see `clock`).
    let rows = tx
        .query_typed(
            "SELECT hour_end, day_end FROM series_windows_at FOR UPDATE",
            &[],
        )
        .await
        .map_err(|e| sql_error("windows read", &e))?;
    let Some(r) = rows.first() else {
        return Ok(None);
    };
    let read = |i| r.try_get(i).map_err(|e| sql_error("windows read", &e));
    Ok(Some(Alignment {
        hour: read(0)?,
        day: read(1)?,
    }))
}

/// Where the windows should end now (by the database's clock) and where they end (locked
/// for this transaction; None before the first): both asked at once, each one message.
pub(crate) async fn clock(
    tx: &Transaction<'_>,
) -> Result<(Alignment, Option<Alignment>), StoreError> {
    let (now, before) = tokio::join!(now(tx), alignment(tx));
    Ok((Alignment::at(now?), before?))
}

/// One of the three windows: its columns' suffix and its rollup table.
#[derive(Debug, Clone, Copy)]
struct Window {
    suffix: &'static str,
    table: &'static str,
}

const HOURS_24: Window = Window {
    suffix: "24h",
    table: "rollups_hourly",
};
const DAYS_7: Window = Window {
    suffix: "7d",
    table: "rollups_daily",
};
const DAYS_30: Window = Window {
    suffix: "30d",
    table: "rollups_daily",
};

/// Move the windows from `before` (None: there were none) to end at `at`: the buckets
/// that left are taken out and those that entered put in, from the rollup tables; a
/// window that moved by its whole length or more is built again. Records `at`.
pub(crate) async fn move_to(
    tx: &Transaction<'_>,
    before: Option<Alignment>,
    at: Alignment,
) -> Result<(), StoreError> {
    let fail = |e: tokio_postgres::Error| sql_error("windows", &e);
    tx.execute_typed(
        "INSERT INTO series_windows_at (one, hour_end, day_end) VALUES (true, $1, $2) \
         ON CONFLICT (one) DO UPDATE SET hour_end = $1, day_end = $2",
        &[(&at.hour, Type::TIMESTAMPTZ), (&at.day, Type::TIMESTAMPTZ)],
    )
    .await
    .map_err(fail)?;
    let moves = [
        (
            HOURS_24,
            before.map(|b| b.hour),
            at.hour,
            TimeDelta::hours(24),
        ),
        (DAYS_7, before.map(|b| b.day), at.day, TimeDelta::days(7)),
        (DAYS_30, before.map(|b| b.day), at.day, TimeDelta::days(30)),
    ];
    let mut rebuilt = Vec::new();
    for (w, from, to, length) in moves {
        match from {
            Some(from) if from == to => {}
            Some(from) if to - from < length => {
                // Out: (from - length, to - length]; in: (from, to].
                shift(tx, w, (from - length, to - length), -1).await?;
                shift(tx, w, (from, to), 1).await?;
            }
            _ => rebuilt.push((w, to - length, to)),
        }
    }
    if rebuilt.is_empty() {
        return Ok(());
    }
    let windows: Vec<Window> = rebuilt.iter().map(|r| r.0).collect();
    tx.execute(&zero_sql(&windows), &[]).await.map_err(fail)?;
    let bounds: Vec<DateTime<Utc>> = rebuilt.iter().flat_map(|r| [r.1, r.2]).collect();
    let params: Vec<(&(dyn ToSql + Sync), Type)> = bounds
        .iter()
        .map(|b| (b as &(dyn ToSql + Sync), Type::TIMESTAMPTZ))
        .collect();
    tx.execute_typed(&rebuild_sql(&windows), &params)
        .await
        .map(|_| ())
        .map_err(fail)
}

/// The windows `rebuilt` (each with its bounds `$2i+1`, `$2i+2`), built again from the
/// rollup tables in one statement: a series' row is written once, not once per window
/// (a fresh database builds all three; that was 6 statements and 6 row versions a series).
fn rebuild_sql(rebuilt: &[Window]) -> String {
    let sources: Vec<String> = rebuilt
        .iter()
        .enumerate()
        .map(|(i, w)| {
            format!(
                "SELECT {i} AS k, url, producer, checks, up_checks, latency_hist FROM {table} \
                 WHERE bucket > ${a} AND bucket <= ${b}",
                table = w.table,
                a = 2 * i + 1,
                b = 2 * i + 2
            )
        })
        .collect();
    let z = zeros(LATENCY_BUCKETS);
    let mut columns = Vec::new();
    let mut sets = Vec::new();
    for w in [HOURS_24, DAYS_7, DAYS_30] {
        let s = w.suffix;
        match rebuilt.iter().position(|r| r.suffix == s) {
            Some(k) => {
                let sum = |col: &str| format!("coalesce(sum({col}) FILTER (WHERE k = {k}), 0)");
                let hist = array_of(LATENCY_BUCKETS, |i| sum(&format!("latency_hist[{i}]")));
                columns.push(format!("{}, {}, {hist}", sum("checks"), sum("up_checks")));
                sets.push(format!(
                    "checks_{s} = excluded.checks_{s}, up_{s} = excluded.up_{s}, \
                     hist_{s} = excluded.hist_{s}"
                ));
            }
            // A window not rebuilt starts empty in a series new here.
            None => columns.push(format!("0, 0, {z}")),
        }
    }
    format!(
        "INSERT INTO series_windows AS w (url, producer, checks_24h, up_24h, hist_24h, \
           checks_7d, up_7d, hist_7d, checks_30d, up_30d, hist_30d, changed) \
         SELECT url, producer, {columns}, txid_current() \
         FROM ({sources}) AS t GROUP BY url, producer \
         ON CONFLICT ((md5(url)), producer) DO UPDATE SET {sets}, changed = excluded.changed",
        columns = columns.join(", "),
        sources = sources.join(" UNION ALL "),
        sets = sets.join(", "),
    )
}

/// Add (`sign` 1) or take out (-1) the rollup rows of `w`'s table whose bucket is in
/// `(from, to]`, to or from window `w` of every series.
async fn shift(
    tx: &Transaction<'_>,
    w: Window,
    (from, to): (DateTime<Utc>, DateTime<Utc>),
    sign: i64,
) -> Result<u64, StoreError> {
    let params: [(&(dyn ToSql + Sync), Type); 3] = [
        (&from, Type::TIMESTAMPTZ),
        (&to, Type::TIMESTAMPTZ),
        (&sign, Type::INT8),
    ];
    tx.execute_typed(&shift_sql(w), &params)
        .await
        .map_err(|e| sql_error("windows", &e))
}

fn shift_sql(w: Window) -> String {
    let s = w.suffix;
    let sums = array_of(LATENCY_BUCKETS, |i| format!("$3 * sum(latency_hist[{i}])"));
    let add = array_of(LATENCY_BUCKETS, |i| {
        format!("w.hist_{s}[{i}] + excluded.hist_{s}[{i}]")
    });
    let z = zeros(LATENCY_BUCKETS);
    // The other windows of a series new here start empty.
    let others: Vec<&str> = [HOURS_24, DAYS_7, DAYS_30]
        .iter()
        .filter(|o| o.suffix != s)
        .map(|o| o.suffix)
        .collect();
    format!(
        "INSERT INTO series_windows AS w (url, producer, checks_{s}, up_{s}, hist_{s}, \
           checks_{o1}, up_{o1}, hist_{o1}, checks_{o2}, up_{o2}, hist_{o2}, changed) \
         SELECT url, producer, $3 * sum(checks), $3 * sum(up_checks), {sums}, 0, 0, {z}, 0, 0, {z}, \
           txid_current() \
         FROM {table} WHERE bucket > $1 AND bucket <= $2 GROUP BY url, producer \
         ON CONFLICT ((md5(url)), producer) DO UPDATE SET \
           checks_{s} = w.checks_{s} + excluded.checks_{s}, up_{s} = w.up_{s} + excluded.up_{s}, \
           hist_{s} = {add}, changed = excluded.changed",
        o1 = others[0],
        o2 = others[1],
        table = w.table,
    )
}

/// Windows `ws` of every series emptied, in one statement.
fn zero_sql(ws: &[Window]) -> String {
    let z = zeros(LATENCY_BUCKETS);
    let sets: Vec<String> = ws
        .iter()
        .map(|w| format!("checks_{s} = 0, up_{s} = 0, hist_{s} = {z}", s = w.suffix))
        .collect();
    format!(
        "UPDATE series_windows SET {}, changed = txid_current()",
        sets.join(", ")
    )
}

fn zeros(n: usize) -> String {
    format!("array_fill(0::bigint, ARRAY[{n}])")
}

/// Add what a fold brings to the windows (series without a row get one).
pub(crate) async fn apply(
    tx: &Transaction<'_>,
    deltas: &SeriesMap<(&str, &str), WindowDelta>,
) -> Result<(), StoreError> {
    if deltas.is_empty() {
        return Ok(());
    }
    let mut rows: Vec<_> = deltas.iter().collect();
    rows.sort_by(|a, b| a.0.cmp(b.0));
    let urls: Vec<&str> = rows.iter().map(|(k, _)| k.0).collect();
    let producers: Vec<&str> = rows.iter().map(|(k, _)| k.1).collect();
    let figures = |f: fn(&WindowDelta) -> &Figures| {
        let c: Vec<i64> = rows.iter().map(|(_, d)| f(d).checks).collect();
        let u: Vec<i64> = rows.iter().map(|(_, d)| f(d).up).collect();
        let h: Vec<String> = rows
            .iter()
            .map(|(_, d)| super::array_text(f(d).hist))
            .collect();
        (c, u, h)
    };
    let (c24, u24, h24) = figures(|d| &d.hours_24);
    let (c7, u7, h7) = figures(|d| &d.days_7);
    let (c30, u30, h30) = figures(|d| &d.days_30);
    let params: [(&(dyn ToSql + Sync), Type); 11] = [
        (&urls, Type::TEXT_ARRAY),
        (&producers, Type::TEXT_ARRAY),
        (&c24, Type::INT8_ARRAY),
        (&u24, Type::INT8_ARRAY),
        (&h24, Type::TEXT_ARRAY),
        (&c7, Type::INT8_ARRAY),
        (&u7, Type::INT8_ARRAY),
        (&h7, Type::TEXT_ARRAY),
        (&c30, Type::INT8_ARRAY),
        (&u30, Type::INT8_ARRAY),
        (&h30, Type::TEXT_ARRAY),
    ];
    tx.execute_typed(&apply_sql(), &params)
        .await
        .map(|_| ())
        .map_err(|e| sql_error("windows update", &e))
}

fn apply_sql() -> String {
    let add = |col: &str| {
        array_of(LATENCY_BUCKETS, |i| {
            format!("w.{col}[{i}] + excluded.{col}[{i}]")
        })
    };
    format!(
        "INSERT INTO series_windows AS w (url, producer, checks_24h, up_24h, hist_24h, checks_7d, \
           up_7d, hist_7d, checks_30d, up_30d, hist_30d, changed) \
         SELECT u, p, c24, u24, h24::bigint[], c7, u7, h7::bigint[], c30, u30, h30::bigint[], \
           txid_current() \
         FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::text[], $6::bigint[], \
           $7::bigint[], $8::text[], $9::bigint[], $10::bigint[], $11::text[]) \
           AS x(u, p, c24, u24, h24, c7, u7, h7, c30, u30, h30) \
         ON CONFLICT ((md5(url)), producer) DO UPDATE SET \
           checks_24h = w.checks_24h + excluded.checks_24h, up_24h = w.up_24h + excluded.up_24h, \
           hist_24h = {h24}, checks_7d = w.checks_7d + excluded.checks_7d, \
           up_7d = w.up_7d + excluded.up_7d, hist_7d = {h7}, \
           checks_30d = w.checks_30d + excluded.checks_30d, up_30d = w.up_30d + excluded.up_30d, \
           hist_30d = {h30}, changed = excluded.changed",
        h24 = add("hist_24h"),
        h7 = add("hist_7d"),
        h30 = add("hist_30d"),
    )
}

/// One series' windows as the page reads them.
#[derive(Debug, Clone)]
pub struct WindowRow {
    /// (url, producer) as in `site_status`.
    pub url: String,
    /// The vantage point.
    pub producer: String,
    pub(crate) hours_24: Figures,
    pub(crate) days_7: Figures,
    pub(crate) days_30: Figures,
}

/// The alignment, and each series' windows changed from `since` on (all of them from -1;
/// see `status`), handed to `take` as they arrive.
pub(crate) async fn read_changed(
    client: &Client,
    since: i64,
    mut take: impl FnMut(WindowRow),
) -> Result<Option<Alignment>, StoreError> {
    bounded("windows read", async {
        let fail = |e: tokio_postgres::Error| sql_error("windows read", &e);
        let at = client
            .query_opt("SELECT hour_end, day_end FROM series_windows_at", &[])
            .await
            .map_err(fail)?
            .map(|r| Alignment {
                hour: r.get(0),
                day: r.get(1),
            });
        let rows = client
            .query_raw(
                "SELECT url, producer, checks_24h, up_24h, hist_24h, checks_7d, up_7d, hist_7d, \
                 checks_30d, up_30d, hist_30d FROM series_windows WHERE changed >= $1",
                [&since],
            )
            .await
            .map_err(fail)?;
        let mut rows = std::pin::pin!(rows);
        while let Some(r) = rows.next().await {
            let r = r.map_err(fail)?;
            let figures = |c: usize| -> Result<Figures, tokio_postgres::Error> {
                let hist: Vec<i64> = r.try_get(c + 2)?;
                let mut f = Figures {
                    checks: r.try_get(c)?,
                    up: r.try_get(c + 1)?,
                    ..Figures::default()
                };
                for (slot, n) in f.hist.iter_mut().zip(hist) {
                    *slot = n;
                }
                Ok(f)
            };
            take(WindowRow {
                url: r.try_get(0).map_err(fail)?,
                producer: r.try_get(1).map_err(fail)?,
                hours_24: figures(2).map_err(fail)?,
                days_7: figures(5).map_err(fail)?,
                days_30: figures(8).map_err(fail)?,
            });
        }
        Ok(at)
    })
    .await
}

/// The time the windows should end at now, by the database's clock.
async fn now(tx: &Transaction<'_>) -> Result<DateTime<Utc>, StoreError> {
    let rows = tx
        .query_typed("SELECT now()", &[])
        .await
        .map_err(|e| sql_error("windows read", &e))?;
    match rows.first() {
        Some(r) => r.try_get(0).map_err(|e| sql_error("windows read", &e)),
        None => Err(StoreError::Sql {
            what: "windows read",
            detail: "SELECT now() returned no row".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn element_wise_sums_are_spelled_out() {
        assert_eq!(
            array_of(3, |i| format!("a[{i}]")),
            "ARRAY[a[1], a[2], a[3]]"
        );
        let sql = shift_sql(DAYS_7);
        assert!(sql.contains("$3 * sum(latency_hist[33])") && !sql.contains("[34]"));
        assert!(sql.contains("FROM rollups_daily") && sql.contains("checks_24h, up_24h, hist_24h"));
        assert!(apply_sql().contains("w.hist_30d[33] + excluded.hist_30d[33]"));
    }
}
