//! What PostgreSQL sees of a consumer that exits: each of its sessions closed by the
//! client (a Terminate message), none abandoned. A dropped socket is counted by the server
//! in `pg_stat_database.sessions_abandoned` and logged as an error ("could not receive
//! data from client"), once per connection at every restart: noise in the server's logs
//! that hides real trouble.

mod common;

use std::time::Duration;

use common::Testbed;

/// (sessions, sessions_abandoned) of database `name` once none of its sessions is left
/// (its backends report on exit, a moment after the client is gone); 10 s at most.
async fn sessions_when_all_ended(tb: &Testbed, name: &str) -> (i64, i64) {
    let admin = common::open(&tb.postgres()).await;
    let start = std::time::Instant::now();
    loop {
        let _ = admin.batch_execute("SELECT pg_stat_clear_snapshot()").await;
        let live: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1",
                &[&name],
            )
            .await
            .unwrap()
            .get(0);
        if live == 0 {
            let row = admin
                .query_one(
                    "SELECT sessions, sessions_abandoned FROM pg_stat_database WHERE datname = $1",
                    &[&name],
                )
                .await
                .unwrap();
            return (row.get(0), row.get(1));
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{live} session(s) of {name} still open 10 s after the consumer exited"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The database's name in a test bed URL.
fn db_name(url: &str) -> &str {
    let path = url.split('?').next().unwrap_or(url);
    path.rsplit('/').next().unwrap_or(path)
}

#[tokio::test]
async fn a_drain_and_a_maintenance_command_close_their_sessions() {
    let tb = testbed_or_skip!();
    let topic = common::unique("exit-drain");
    common::produce_events(&tb, &topic, 2, 200, 20).await;
    let (_pg, url) = tb.fresh_database("exit_drain").await;
    // First, on the fresh database: the command migrates it, then lists.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_checksite-consumer"))
        .args(["maintenance", "list"])
        .env("CK_POSTGRESQL_URL", &url)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The writer's connection and the rollup folder's.
    common::drain(&tb, &topic, &url).await;
    let (sessions, abandoned) = sessions_when_all_ended(&tb, db_name(&url)).await;
    assert!(
        sessions >= 3,
        "{sessions} session(s): the command's and the drain's two expected"
    );
    assert_eq!(abandoned, 0, "of {sessions} session(s)");
}

#[tokio::test]
async fn a_consumer_stopped_by_sigterm_closes_its_sessions() {
    let tb = testbed_or_skip!();
    let topic = common::unique("exit-sigterm");
    let n = common::produce_events(&tb, &topic, 2, 200, 20).await as i64;
    let (pg, url) = tb.fresh_database("exit_sigterm").await;
    let port = common::free_port();
    let consumer = common::consumer(&tb, &topic, &url, &[])
        .env("CK_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .spawn()
        .unwrap();
    {
        let db = common::open(&pg).await;
        common::wait_stored_and_folded(&db, n).await;
    } // this test's own session, closed by its driver (the test's runtime goes on)
    // The page's own connection too.
    assert_eq!(common::http_get_when_up(port, "/").await.0, 200);
    common::stop(consumer, Duration::from_secs(30)).await;
    let (sessions, abandoned) = sessions_when_all_ended(&tb, db_name(&url)).await;
    assert!(
        sessions >= 4,
        "{sessions} session(s): the writer's, the folder's, the page's and this test's expected"
    );
    assert_eq!(abandoned, 0, "of {sessions} session(s)");
}
