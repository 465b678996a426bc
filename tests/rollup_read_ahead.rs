//! The rollup folder's read-ahead cut short: while a drain is behind, its folder reads the
//! committed deltas ahead of its folds and merges them as they arrive. When PostgreSQL
//! ends that read halfway (a restart, a dropped connection), the deltas merged so far were
//! not recorded as read: the folder must drop them, or its next fold, reading them from
//! the table again, counts their checks twice.

mod common;

use std::time::{Duration, Instant};

use checksite::consumer::store::FOLD_LOCK;
use common::{open, query_i64};

/// How long a read of the deltas must have been under way before it is ended: past its
/// sort of 50 rows (a few ms), while it sends their ~10 MB, the first ones merged.
const UNDER_WAY: &str = "10 milliseconds";

#[tokio::test]
async fn a_read_ahead_ended_halfway_counts_no_check_twice() {
    let tb = testbed_or_skip!();
    let (first, second) = (common::unique("ahead-cut-a"), common::unique("ahead-cut-b"));
    // 50 deltas of 1,000 series each (transactions of 2,000 checks): a read of them is
    // megabytes, under way for a while.
    let n_first = common::produce_events(&tb, &first, 1, 100_000, 1000).await as i64;
    let n_second = common::produce_events(&tb, &second, 1, 20_000, 1000).await as i64;
    let (pg, url) = tb.fresh_database("aheadcut").await;
    let lock = open(&pg).await;
    lock.execute("SELECT pg_advisory_lock($1)", &[&FOLD_LOCK])
        .await
        .unwrap();
    common::drain_with(&tb, &first, &url, &[("CK_BATCH_EVENTS", "2000")]).await;
    // Held here, the lock made the drain's folds leave every delta.
    let waiting = query_i64(&lock, "SELECT count(*) FROM rollup_deltas").await;
    assert!(waiting >= 50, "{waiting} deltas left unfolded");
    // The second drain's folder reads those 50 ahead within its first 50 ms: that read
    // is ended once under way, and the folds are let go.
    let killer = tokio::spawn(end_first_read_ahead(open(&pg).await));
    let second_drain = common::drain_with(&tb, &second, &url, &[("CK_BATCH_EVENTS", "200")]);
    let (ended, _) = tokio::join!(
        async {
            let ended = killer.await.unwrap();
            lock.execute("SELECT pg_advisory_unlock($1)", &[&FOLD_LOCK])
                .await
                .unwrap();
            ended
        },
        second_drain
    );
    assert!(
        ended,
        "no read of the deltas was seen under way to be ended"
    );
    let db = open(&pg).await;
    common::wait_stored_and_folded(&db, n_first + n_second).await;
    for table in ["rollups_hourly", "rollups_daily"] {
        let sql = format!("SELECT sum(checks)::bigint FROM {table}");
        assert_eq!(query_i64(&db, &sql).await, n_first + n_second, "{table}");
    }
    assert_eq!(common::rollup_mismatches(&db).await, 0);
}

/// End the first read of the deltas seen under way for [`UNDER_WAY`] (within 20 s);
/// true when one was ended.
async fn end_first_read_ahead(admin: tokio_postgres::Client) -> bool {
    let sql = format!(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid() AND state = 'active' \
         AND query LIKE 'SELECT id, body FROM rollup_deltas%' \
         AND query_start < clock_timestamp() - interval '{UNDER_WAY}'"
    );
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        if query_i64(&admin, &sql).await > 0 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    false
}
