//! What a targets file (`CK_TARGETS`) says about a check, through `checksite-producer
//! --once`: the method, extra headers, the statuses expected; and the exit code of a run
//! where one of several sites is down.

mod common;

use common::raw_site::{self, Request, Step, whole};

const BIN: &str = env!("CARGO_BIN_EXE_checksite-producer");

/// 200 only when the request is what the path asks for: `/head` a HEAD, `/post` a POST
/// with an empty body, `/token` the header `X-Token: t0k3n`; `/missing` is a 404.
fn strict_site(r: &Request, _: u16) -> Vec<Step> {
    let ok = match r.path.as_str() {
        "/head" => r.method == "HEAD",
        "/post" => r.method == "POST" && r.header("content-length").is_none_or(|l| l == "0"),
        "/token" => r.header("x-token") == Some("t0k3n"),
        "/ok" => true,
        _ => false,
    };
    if ok {
        whole("200 OK", "", b"fine")
    } else if r.path == "/missing" {
        whole("404 Not Found", "", b"gone, as expected")
    } else {
        whole("400 Bad Request", "", b"not what I asked for")
    }
}

/// `--once` over `targets`: (exit code, each target's `up` and status, in order).
fn once(targets: serde_json::Value) -> (i32, Vec<(bool, Option<u64>)>) {
    let file = std::env::temp_dir().join(common::unique("targets"));
    std::fs::write(&file, targets.to_string()).unwrap();
    let out = std::process::Command::new(BIN)
        .arg("--once")
        .env_clear()
        .env("CK_TARGETS", &file)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&file);
    let verdicts = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let ev: serde_json::Value = serde_json::from_str(l).unwrap();
            (ev["up"].as_bool().unwrap(), ev["status"].as_u64())
        })
        .collect();
    (out.status.code().unwrap_or(-1), verdicts)
}

#[test]
fn method_headers_and_expected_statuses_decide_the_verdict() {
    let site = format!("http://127.0.0.1:{}", raw_site::serve(None, strict_site));
    let (code, verdicts) = once(serde_json::json!([
        {"url": format!("{site}/head"), "method": "HEAD"},
        {"url": format!("{site}/post"), "method": "POST"},
        {"url": format!("{site}/token"), "headers": {"X-Token": "t0k3n"}},
        {"url": format!("{site}/missing"), "expect_status": [404]},
        {"url": format!("{site}/ok"), "expect_status": 204},
    ]));
    assert_eq!(
        verdicts,
        [
            (true, Some(200)),
            (true, Some(200)),
            (true, Some(200)),
            (true, Some(404)),
            (false, Some(200)),
        ]
    );
    // One down among five: exit 1.
    assert_eq!(code, 1);
    // The same without what the site insists on: down, each of them.
    let (code, verdicts) = once(serde_json::json!([
        {"url": format!("{site}/head")},
        {"url": format!("{site}/post")},
        {"url": format!("{site}/token"), "headers": {"X-Token": "wrong"}},
        {"url": format!("{site}/missing")},
    ]));
    assert!(verdicts.iter().all(|(up, _)| !up), "{verdicts:?}");
    assert_eq!(code, 1);
    // All up: exit 0.
    let (code, verdicts) = once(serde_json::json!([
        {"url": format!("{site}/ok")},
        {"url": format!("{site}/missing"), "expect_status": [200, 404]},
    ]));
    assert_eq!(verdicts, [(true, Some(200)), (true, Some(404))]);
    assert_eq!(code, 0);
}
