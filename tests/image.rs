//! The FROM scratch image, as users run it with podman: producer and consumer from the
//! image against the test bed (mutual TLS to Kafka, verified TLS to PostgreSQL), rows arrive.
//!
//! Needs podman and the static binaries (`just build-static`); CI has both. The flags that
//! podman needs on these build machines (runc, cgroupfs, no default ulimits) live here,
//! not in the user's instructions.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::sites;

const STATIC: &str = "target/x86_64-unknown-linux-musl/release";

fn podman(conf: &Path, args: &[&str]) -> std::process::Output {
    Command::new("podman")
        .env("CONTAINERS_CONF", conf)
        .args(args)
        .output()
        .expect("run podman")
}

fn podman_ok(conf: &Path, args: &[&str]) -> String {
    let out = podman(conf, args);
    assert!(
        out.status.success(),
        "podman {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test]
async fn image_runs_producer_and_consumer_against_the_test_bed() {
    let tb = testbed_or_skip!();
    let ready = Command::new("podman")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
        && Path::new(STATIC).join("checksite-consumer").exists();
    if !ready {
        assert!(
            !common::strict(),
            "strict mode (CI=true or `just test`): podman and `just build-static` must be there"
        );
        eprintln!("SKIPPED: needs podman and `just build-static`");
        return;
    }
    let work =
        std::env::temp_dir().join(format!("checksite-image-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(work.join("certs")).unwrap();
    let conf = work.join("containers.conf");
    std::fs::write(&conf, "[containers]\ndefault_ulimits = []\n").unwrap();
    // The container runs as uid 10001: give it copies it may read.
    for f in ["ca.pem", "service.cert", "service.key"] {
        let dest = work.join("certs").join(f);
        std::fs::copy(tb.certs.join(f), &dest).unwrap();
        std::process::Command::new("chmod")
            .arg("0644")
            .arg(&dest)
            .status()
            .unwrap();
    }
    std::process::Command::new("chmod")
        .arg("0755")
        .arg(work.join("certs"))
        .status()
        .unwrap();

    let out = Command::new("scripts/image.sh")
        .env("CONTAINERS_CONF", &conf)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let size: u64 = podman_ok(
        &conf,
        &[
            "image",
            "inspect",
            "checksite:latest",
            "--format",
            "{{.Size}}",
        ],
    )
    .parse()
    .unwrap();
    assert!(size <= 10_000_000, "image is {size} bytes, over 10 MB");
    assert_eq!(
        podman_ok(
            &conf,
            &[
                "image",
                "inspect",
                "checksite:latest",
                "--format",
                "{{.Config.User}}"
            ]
        ),
        "10001:10001"
    );

    let topic = common::unique("image");
    let (pg, url) = tb.fresh_database("image").await;
    let url = url.replace(&tb.cert("ca.pem"), "/certs/ca.pem");
    let site = sites::http_site().replace("localhost", "127.0.0.1");
    let certs = format!("{}:/certs:ro", work.join("certs").display());
    let ssl = "CK_KAFKA_SSL=/certs/ca.pem /certs/service.cert /certs/service.key".to_string();
    let common_args = |name: &str| -> Vec<String> {
        [
            "run",
            "-d",
            "--rm",
            "--name",
            name,
            "--runtime",
            "runc",
            "--cgroup-manager=cgroupfs",
            "--network",
            "host",
            "-v",
            &certs,
            "-e",
            &format!("CK_KAFKA_SERVERS={}", tb.kafka_ssl),
            "-e",
            &ssl,
            "-e",
            &format!("CK_KAFKA_TOPIC={topic}"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let producer_name = format!("checksite-producer-{}", &topic[topic.len() - 8..]);
    let consumer_name = format!("checksite-consumer-{}", &topic[topic.len() - 8..]);
    let mut p = common_args(&producer_name);
    p.extend([
        "-e".into(),
        format!("CK_SITE_URL={site}/ok"),
        "-e".into(),
        "CK_CHECK_DELAY=0.5".into(),
        "checksite:latest".into(),
    ]);
    podman_ok(&conf, &p.iter().map(String::as_str).collect::<Vec<_>>());
    let mut c = common_args(&consumer_name);
    c.extend([
        "-e".into(),
        format!("CK_POSTGRESQL_URL={url}"),
        "checksite:latest".into(),
        "/checksite-consumer".into(),
    ]);
    podman_ok(&conf, &c.iter().map(String::as_str).collect::<Vec<_>>());

    let db = pg.connect(Duration::from_secs(10)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut rows = 0i64;
    while rows < 5 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        rows = db
            .query_one("SELECT count(*) FROM events", &[])
            .await
            .map(|r| r.get(0))
            .unwrap_or(0);
    }
    let logs =
        |name: &str| String::from_utf8_lossy(&podman(&conf, &["logs", name]).stderr).into_owned();
    let (plog, clog) = (logs(&producer_name), logs(&consumer_name));
    podman(&conf, &["stop", "-t", "15", &producer_name, &consumer_name]);
    let _ = std::fs::remove_dir_all(&work);
    assert!(
        rows >= 5,
        "only {rows} rows from the containers\nproducer: {plog}\nconsumer: {clog}"
    );
    let status: i32 = db
        .query_one("SELECT max(status) FROM events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(status, 200);
}
