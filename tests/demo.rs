//! `just demo` as the README promises it: `scripts/demo.sh` run as it is (on its own ports
//! and database), against the test bed, with the static binaries. Two vantage points see
//! one site; the status page it leaves running judges them as one (the regional page is
//! degraded: up from eu-west, down from us-east), shows named targets by name only, and
//! never the target marked `"public": false`, which is stored all the same.
//!
//! Needs the static binaries (`just build-static`; `just test` builds them).

mod common;

use std::path::Path;
use std::process::Command;

const STATIC: &str = "target/x86_64-unknown-linux-musl/release";

/// A port `p` with `p + 1` and `p + 2` free as well (the demo's site, producer and page).
fn three_free_ports() -> u16 {
    loop {
        let p = common::free_port();
        let free = |q: u16| std::net::TcpListener::bind(("127.0.0.1", q)).is_ok();
        if p < u16::MAX - 2 && free(p + 1) && free(p + 2) {
            return p;
        }
    }
}

/// Stops the page the demo leaves running, however the test ends.
struct DemoPage(std::path::PathBuf);

impl Drop for DemoPage {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(&self.0) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
        let _ = std::fs::remove_file(&self.0);
    }
}

#[tokio::test]
async fn the_demo_shows_one_site_from_two_vantage_points_and_hides_the_private_target() {
    let tb = testbed_or_skip!();
    if !Path::new(STATIC).join("checksite-consumer").exists() {
        assert!(
            !common::strict(),
            "strict mode (CI=true or `just test`): `just build-static` must have run"
        );
        eprintln!("SKIPPED: needs `just build-static`");
        return;
    }
    let port = three_free_ports();
    let database = common::unique("demo").replace('-', "_");
    let state = std::env::var("CHECKSITE_TESTBED_DIR")
        .unwrap_or_else(|_| "/tmp/checksite-testbed".to_string());
    let page = DemoPage(Path::new(&state).join(format!("demo-page-{port}.pid")));
    let out = Command::new("scripts/demo.sh")
        .env("CHECKSITE_DEMO_SECONDS", "6")
        .env("CHECKSITE_DEMO_PORT", port.to_string())
        .env("CHECKSITE_DEMO_DB", &database)
        .output()
        .expect("run scripts/demo.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // What reached PostgreSQL: each URL from both vantage points, the regional page's
    // verdicts apart, and the private target stored like any other.
    let regional = format!("http://127.0.0.1:{port}/regional");
    for (vantage, status) in [("eu-west", "200"), ("us-east", "503")] {
        let row = stdout
            .lines()
            .find(|l| l.contains(" | ") && l.contains(&regional) && l.contains(vantage))
            .unwrap_or_else(|| panic!("no row for {regional} from {vantage}:\n{stdout}"));
        assert!(row.contains(status), "{row}");
    }
    assert!(stdout.contains("http://127.0.0.1:1/"), "{stdout}");

    // The page it leaves running, read as a visitor would.
    let (status, body) = common::http_get_when_up(port + 2, "/api/status").await;
    assert_eq!(status, 200, "{body}");
    let api: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let targets = api["targets"].as_array().expect("targets");
    let named = |name: &str| {
        targets
            .iter()
            .find(|t| t["name"] == name)
            .unwrap_or_else(|| panic!("no target named {name}: {body}"))
    };
    let edge = named("Regional edge");
    assert_eq!(edge["state"], "degraded", "{edge}");
    assert_eq!(edge["group"], "Demo shop", "{edge}");
    let seen: Vec<(String, bool)> = edge["vantage"]
        .as_array()
        .expect("vantage points")
        .iter()
        .map(|v| {
            (
                v["producer"].as_str().unwrap_or("").to_string(),
                v["up"] == true,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("eu-west".to_string(), true),
            ("us-east".to_string(), false)
        ],
        "{edge}"
    );
    assert_eq!(named("Shop")["state"], "up");
    // Named targets by name only; the private one not at all, in the JSON and the HTML.
    let (_, html) = common::http_get_when_up(port + 2, "/").await;
    for public in [&body, &html] {
        for hidden in [&regional, "127.0.0.1:1/", "Admin console"] {
            assert!(!public.contains(hidden), "{hidden} is public:\n{public}");
        }
    }
    assert_eq!(targets.len(), 4, "{body}");
    assert!(
        stdout.contains("on the page: no"),
        "the demo says otherwise:\n{stdout}"
    );

    drop(page);
    // Made of [a-z0-9_] only: a database name cannot be a bind parameter.
    common::open(&tb.postgres())
        .await
        .batch_execute(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
        .await
        .expect("drop the demo's database");
}
