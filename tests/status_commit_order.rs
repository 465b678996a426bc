//! The status page reads only what changed since its last read. Its writers commit on
//! different connections (the fold on the folder's, the labels on the writer's, another
//! consumer's on its own), so a change can commit after a later one was read: the page
//! must still show it. Here the real fold is held mid-transaction by a row lock while a
//! new target's labels commit and the page reads them; once the fold commits, the page
//! must show the verdict it wrote.

mod common;

use std::time::{Duration, Instant};

use common::sample_event;

/// The site's entry in `/api/status` as of now (the page reads at most every 2 s).
async fn site_on_page(port: u16, url: &str) -> serde_json::Value {
    let body = common::api_status_as_of(port, chrono::Utc::now()).await;
    let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let id = common::target_id(url);
    json["sites"]
        .as_array()
        .expect("sites")
        .iter()
        .find(|s| s["id"] == id.as_str())
        .cloned()
        .unwrap_or_default()
}

async fn produce(tb: &common::Testbed, topic: &str, url: &str, up: bool, name: Option<&str>) {
    let mut ev = sample_event(url, 1);
    ev.checked_at = chrono::Utc::now();
    ev.up = Some(up);
    if !up {
        ev.status = Some(500);
        ev.content_match = None;
    }
    ev.name = name.map(String::from);
    common::produce_raw(tb, topic, 1, vec![(url.as_bytes().to_vec(), ev.to_json())]).await;
}

/// Until `sql` (one boolean, `url` as `$1` if it uses it) is true; panics after 30 s
/// with `what`.
async fn until(db: &tokio_postgres::Client, sql: &str, url: Option<&str>, what: &str) {
    let start = Instant::now();
    let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = match &url {
        Some(url) => vec![url],
        None => Vec::new(),
    };
    while !db
        .query_one(sql, &params)
        .await
        .map(|r| r.get::<_, bool>(0))
        .unwrap_or(false)
    {
        assert!(start.elapsed() < Duration::from_secs(30), "{what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_fold_committed_after_a_later_change_still_reaches_the_page() {
    let tb = testbed_or_skip!();
    let topic = common::unique("commit-order");
    let (pg, db_url) = tb.fresh_database("commit_order").await;
    let port = common::free_port();
    let mut consumer = common::consumer(&tb, &topic, &db_url, &[]);
    consumer.env("CK_HTTP_ADDR", format!("127.0.0.1:{port}"));
    let site = "https://commit-order.example/";
    produce(&tb, &topic, site, true, None).await;
    let child = consumer.spawn().expect("consumer");
    let db = common::open(&pg).await;
    common::wait_stored_and_folded(&db, 1).await;
    assert_eq!(site_on_page(port, site).await["up"], true);

    // Hold the site's windows row: the next fold draws its states' change numbers, then
    // waits on this lock before it can commit.
    let mut holder = common::open(&pg).await;
    let lock = holder.transaction().await.unwrap();
    lock.execute(
        "SELECT 1 FROM series_windows WHERE url = $1 FOR UPDATE",
        &[&site],
    )
    .await
    .unwrap();
    produce(&tb, &topic, site, false, None).await;
    until(
        &db,
        "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = current_database() \
         AND wait_event_type = 'Lock' AND query LIKE 'INSERT INTO series_windows%')",
        None,
        "the fold never waited on the held row",
    )
    .await;

    // Meanwhile a new target's name commits (on the writer's connection), and the page
    // reads it.
    let named = "https://commit-order-named.example/";
    produce(&tb, &topic, named, true, Some("Named")).await;
    until(
        &db,
        "SELECT EXISTS (SELECT 1 FROM target_labels WHERE url = $1)",
        Some(named),
        "the new target's name was not stored",
    )
    .await;
    let during = site_on_page(port, site).await;
    assert_eq!(
        during["up"], true,
        "the fold is not committed yet: {during}"
    );

    lock.commit().await.unwrap();
    common::wait_stored_and_folded(&db, 3).await;
    until(
        &db,
        "SELECT NOT up FROM site_status WHERE url = $1",
        Some(site),
        "the fold did not store the site down",
    )
    .await;
    let after = site_on_page(port, site).await;
    assert_eq!(
        after["up"], false,
        "the page still shows the verdict from before a fold that committed: {after}"
    );
    common::stop(child, Duration::from_secs(15)).await;
}
