//! What the README promises of delivery, through the consumer: the Slack format as a
//! receiver gets it (body and Content-Type), and a notification given up once it is older
//! than `CK_ALERT_GIVE_UP_HOURS`.

mod common;

use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use common::query_i64;
use common::webhook::{Answer, Receiver};

/// Three failed checks of `url` from `eu`, a minute ago: one `down`.
async fn publish_down(tb: &common::Testbed, topic: &str, url: &str) {
    let start = Utc::now() - TimeDelta::seconds(60);
    let records = (0..3)
        .map(|i| {
            let mut ev = common::sample_event(url, i);
            ev.producer = "eu".into();
            ev.checked_at = start + TimeDelta::seconds(i as i64);
            ev.up = Some(false);
            ev.status = Some(503);
            (url.as_bytes().to_vec(), Some(ev.to_json()), ev.checked_at)
        })
        .collect();
    common::produce_timed(tb, topic, 3, records).await;
}

#[tokio::test]
async fn slack_format_reaches_the_receiver_as_slack_reads_it() {
    let tb = testbed_or_skip!();
    let topic = common::unique("alerts-slack");
    let (_pg, db_url) = tb.fresh_database("alerts_slack").await;
    let port = common::free_port();
    let receiver = Receiver::start_on(port, Answer::Ok);
    publish_down(&tb, &topic, "https://shop.example/").await;
    let consumer = common::consumer(&tb, &topic, &db_url, &[])
        .env("CK_ALERT_WEBHOOK_URL", Receiver::url(port))
        .env("CK_ALERT_FORMAT", "slack")
        .spawn()
        .unwrap();
    let started = Instant::now();
    while receiver.received().is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "nothing received"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    common::stop(consumer, Duration::from_secs(30)).await;
    let got = &receiver.received()[0];
    assert_eq!(got.content_type, "application/json");
    // Slack's incoming webhooks take {"text": ...} and nothing else is needed.
    let object = got.body.as_object().unwrap();
    assert_eq!(
        object.keys().collect::<Vec<_>>(),
        ["text"],
        "{:?}",
        got.body
    );
    let text = got.body["text"].as_str().unwrap();
    assert!(
        text.starts_with(":red_circle: DOWN https://shop.example/ since "),
        "{text}"
    );
    assert!(
        text.contains("seen by eu") && text.contains("HTTP 503"),
        "{text}"
    );
}

#[tokio::test]
async fn a_notification_older_than_the_give_up_bound_is_given_up_and_said() {
    let tb = testbed_or_skip!();
    let topic = common::unique("alerts-give-up");
    let (pg, db_url) = tb.fresh_database("alerts_give_up").await;
    // Nobody listens there: every attempt fails.
    let port = common::free_port();
    publish_down(&tb, &topic, "https://gone.example/").await;
    let consumer = common::consumer(&tb, &topic, &db_url, &[])
        .env("CK_ALERT_WEBHOOK_URL", Receiver::url(port))
        .env("CK_ALERT_GIVE_UP_HOURS", "1")
        .spawn()
        .unwrap();
    let db = common::open(&pg).await;
    let started = Instant::now();
    loop {
        let tried = db
            .query_one("SELECT count(*) FROM alert_outbox WHERE attempts > 0", &[])
            .await
            .map_or(0, |r| r.get::<_, i64>(0));
        if tried > 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "never attempted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        query_i64(
            &db,
            "SELECT count(*) FROM alert_outbox WHERE gave_up_at IS NOT NULL"
        )
        .await,
        0,
        "given up within the hour"
    );
    // As if it had been decided two hours ago: the next attempt fails and gives up.
    db.batch_execute(
        "UPDATE alert_outbox SET decided_at = now() - interval '2 hours', next_attempt_at = now()",
    )
    .await
    .unwrap();
    let started = Instant::now();
    while query_i64(
        &db,
        "SELECT count(*) FROM alert_outbox WHERE gave_up_at IS NOT NULL",
    )
    .await
        == 0
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "never given up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = common::stop(consumer, Duration::from_secs(30)).await;
    assert!(
        log.contains("alerts, default: gave up on down https://gone.example/"),
        "{log}"
    );
    assert_eq!(
        query_i64(
            &db,
            "SELECT count(*) FROM alert_outbox WHERE delivered_at IS NULL AND gave_up_at IS NULL"
        )
        .await,
        0,
        "nothing left to retry"
    );
}
