//! A page that shows only what is meant to be shown, through the binaries: targets with
//! a token in their query string, a display name, groups and `"public": false` in a
//! `CK_TARGETS` file, checked by a producer and shown by a consumer. The token and the
//! hidden target appear nowhere public (HTML, site page, badge, JSON, Chromium's DOM),
//! while the operator's alert carries the full URL; `CK_STATUS_URLS=full` shows it whole.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::Listener;
use common::raw_site::{self, Request, Step, whole};
use common::webhook::{Answer, Receiver};

const PRODUCER: &str = env!("CARGO_BIN_EXE_checksite-producer");
const TOKEN: &str = "3f9aSECRETTOKEN";

/// 200 on `/ok` whatever the query, 500 elsewhere.
fn site(r: &Request, _: u16) -> Vec<Step> {
    if r.path.starts_with("/ok") {
        whole("200 OK", "", b"fine")
    } else {
        whole("500 Internal Server Error", "", b"broken")
    }
}

/// `/api/status` once it shows `n` targets.
async fn api_with(port: u16, n: usize) -> (String, serde_json::Value) {
    let start = Instant::now();
    loop {
        if let Some((200, body)) = common::http_get(port, "/api/status") {
            let api: serde_json::Value = serde_json::from_str(&body).unwrap();
            if api["targets"].as_array().is_some_and(|t| t.len() == n) {
                return (body, api);
            }
        }
        assert!(start.elapsed() < Duration::from_secs(60), "not {n} targets");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn tokens_names_groups_and_hidden_targets() {
    let tb = testbed_or_skip!();
    let topic = common::unique("status-public");
    let (_pg, db_url) = tb.fresh_database("status_public").await;
    let port = raw_site::serve(None, site);
    let site = format!("http://127.0.0.1:{port}");
    let with_token = format!("{site}/ok?token={TOKEN}");
    // Its host (an internal name, say) is never shown: only its name is.
    let named = format!("http://localhost:{port}/ok?tenant=internal-7");
    let hidden = format!("{site}/500?only-for=ops");
    let plain = format!("{site}/ok");
    let file = std::env::temp_dir().join(common::unique("targets"));
    let targets = serde_json::json!([
        {"url": with_token, "interval_s": 1, "group": "API"},
        {"url": named, "interval_s": 1, "name": "Checkout", "group": "Shop"},
        {"url": hidden, "interval_s": 1, "public": false},
        {"url": plain, "interval_s": 1},
    ]);
    std::fs::write(&file, targets.to_string()).unwrap();
    let producer = tokio::process::Command::new(PRODUCER)
        .envs(tb.kafka_env(Listener::MutualTls, &topic))
        .env("CK_TARGETS", &file)
        .env("CK_PRODUCER_ID", "eu")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let (receiver_port, page) = (common::free_port(), common::free_port());
    let receiver = Receiver::start_on(receiver_port, Answer::Ok);
    let consumer = common::consumer(&tb, &topic, &db_url, &[])
        .env("CK_HTTP_ADDR", format!("127.0.0.1:{page}"))
        .env("CK_ALERT_WEBHOOK_URL", Receiver::url(receiver_port))
        .env("CK_ALERT_AFTER", "1")
        .spawn()
        .unwrap();
    // Three targets on the page: the hidden one is checked, and alerts with its full URL.
    let alert = receiver.wait_for_ids(1, Duration::from_secs(40)).await;
    assert_eq!(
        (&alert[0]["kind"], &alert[0]["url"]),
        (&"down".into(), &hidden.clone().into())
    );
    let (json, api) = api_with(page, 3).await;
    let by_id = |url: &str| {
        api["targets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == common::target_id(url))
            .cloned()
    };
    let token = by_id(&with_token).expect("the target with a token");
    assert_eq!(token["url"], format!("{site}/ok?token=…"));
    assert_eq!(token["group"], "API");
    let checkout = by_id(&named).expect("the named target");
    assert_eq!(
        (&checkout["name"], &checkout["url"], &checkout["group"]),
        (&"Checkout".into(), &serde_json::Value::Null, &"Shop".into())
    );
    assert!(by_id(&hidden).is_none(), "{json}");
    // Nothing public says the token, the name's URL or the hidden target.
    let ids = [&with_token, &named, &plain].map(|u| common::target_id(u));
    let mut public = vec![json.clone()];
    let mut paths = vec![
        "/".to_string(),
        "/?q=token".into(),
        format!("/badge/status.svg?id={}", ids[0]),
        format!("/badge/uptime-24h.svg?id={}", ids[1]),
    ];
    for id in &ids {
        paths.push(format!("/site?id={id}"));
        paths.push(format!("/api/site?id={id}"));
    }
    for path in &paths {
        let (status, body) = common::http_get_when_up(page, path).await;
        assert_eq!(status, 200, "{path}: {body}");
        public.push(body);
    }
    let dom = common::chromium_dom(&format!("http://127.0.0.1:{page}/"));
    public.extend(dom.clone());
    for text in &public {
        for secret in [TOKEN, "internal-7", "only-for", "/500", "localhost"] {
            assert!(!text.contains(secret), "{secret:?} shown: {text}");
        }
    }
    // The named target's page is titled by its name; the badge of the hidden one is unknown.
    let (_, site_page) = common::http_get_when_up(page, &format!("/site?id={}", ids[1])).await;
    assert!(
        site_page.contains("<title>checksite: Checkout</title>"),
        "{site_page}"
    );
    let hidden_badge = format!("/badge/status.svg?id={}", common::target_id(&hidden));
    let (_, svg) = common::http_get_when_up(page, &hidden_badge).await;
    assert!(svg.contains(">unknown<"), "{svg}");
    // A search finds what is shown, and nothing of what is not.
    let rows = |html: &str| html.matches("<tr class=\"t ").count();
    let (_, found) = common::http_get_when_up(page, "/?q=checkout").await;
    assert_eq!(rows(&found), 1);
    for probe in ["SECRET", "tenant", "only-for"] {
        let (_, none) = common::http_get_when_up(page, &format!("/?q={probe}")).await;
        assert_eq!(rows(&none), 0, "?q={probe} finds something");
    }
    // Groups, sorted, ungrouped last, each with its state; in the browser too.
    let (_, home) = common::http_get_when_up(page, "/").await;
    let groups: Vec<&str> = home
        .split("<tr class=\"group ")
        .skip(1)
        .map(|r| {
            r.split("data-group=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap()
        })
        .collect();
    assert_eq!(groups, ["API", "Shop", "Other"]);
    // A group's state is its targets' worst: API has the token's target alone.
    let state = token["state"].as_str().unwrap();
    let heading = format!("<tr class=\"group {state}\" data-group=\"API\">");
    assert!(home.contains(&heading), "{home}");
    if let Some(dom) = dom {
        assert_eq!(dom.matches("<tr class=\"group ").count(), 3, "{dom}");
        assert!(dom.contains("Checkout"));
    }
    // CK_STATUS_URLS=full: the same database, shown whole (a password would still be masked).
    let full_page = common::free_port();
    let full = common::consumer(&tb, &topic, &db_url, &[])
        .env("CK_HTTP_ADDR", format!("127.0.0.1:{full_page}"))
        .env("CK_STATUS_URLS", "full")
        .spawn()
        .unwrap();
    let (json, _) = api_with(full_page, 3).await;
    assert!(
        json.contains(TOKEN) && json.contains("internal-7"),
        "{json}"
    );
    assert!(
        !json.contains("only-for"),
        "a hidden target is hidden whatever is shown of URLs"
    );
    common::stop(full, Duration::from_secs(20)).await;
    common::stop(consumer, Duration::from_secs(20)).await;
    common::stop(producer, Duration::from_secs(20)).await;
    let _ = std::fs::remove_file(&file);
}
