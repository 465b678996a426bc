//! Differential test of the HTTP verdict: the same URLs through Debian's curl
//! (`-L --max-redirs 5 --compressed -b ''`), python-requests (the Python checksite's
//! client; `max_redirects` 5) and `checksite-producer --once`. Wherever curl and requests
//! agree, checksite must say the same: up or down, and the final status when up. Where
//! they disagree, checksite follows the one named in [`DISAGREEMENTS`] (the README says
//! why). The site answers byte for byte (tests/common/raw_site.rs), so that it can be wrong
//! the way real servers are.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use common::raw_site::{self, Request, Step, gzip, raw, raw_deflate, whole, zlib};

const BODY: &[u8] = b"<html><body>hello checksite\nall good</body></html>";
const REGEX: &str = "hello checksite";
const TIMEOUT_S: u64 = 2;

/// Where the two references disagree, the one checksite follows, and why (the README
/// has the same table).
const DISAGREEMENTS: &[(&str, Reference, &str)] = &[
    (
        "short-body",
        Reference::Curl,
        "a body shorter than its Content-Length is cut short: urllib3 1.26 does not check",
    ),
    (
        "slow-body",
        Reference::Curl,
        "the timeout bounds the whole check; requests' bounds each read",
    ),
    (
        "103-early-hints",
        Reference::Curl,
        "a 1xx answer is interim (RFC 9110): http.client takes a 103 for the final answer",
    ),
    (
        "cookie-secure-over-http",
        Reference::Requests,
        "a Secure cookie set over plain http is dropped (RFC 6265bis); curl keeps it for localhost only",
    ),
];

#[derive(Clone, Copy, Debug, PartialEq)]
enum Reference {
    Curl,
    Requests,
}

/// The plain site: one behaviour per path.
fn answer(r: &Request, port: u16) -> Vec<Step> {
    let path = r.path.split('?').next().unwrap_or("");
    let redirect =
        |code: &str, location: &str| whole(code, &format!("Location: {location}\r\n"), b"");
    match path {
        "/ok" | "/dots/ok" | "/r/noslash/ok" | "/login" => whole("200 OK", "", BODY),
        // Redirects.
        "/r/abs" => redirect("302 Found", &format!("http://127.0.0.1:{port}/ok")),
        "/dots/a/b/x" => redirect("302 Found", "../../ok"),
        "/r/scheme-relative" => redirect("302 Found", &format!("//127.0.0.1:{port}/ok")),
        "/r/query-holds-url" => redirect("302 Found", "/login?next=https://app.example/"),
        "/r/fragment" => redirect("302 Found", "/ok#section"),
        "/r/301" => redirect("301 Moved Permanently", "/ok"),
        "/r/303" => redirect("303 See Other", "/ok"),
        "/r/307" => redirect("307 Temporary Redirect", "/ok"),
        "/r/308" => redirect("308 Permanent Redirect", "/ok"),
        "/r/noslash/x" => redirect("302 Found", "ok"),
        "/r/space" => redirect("302 Found", "/ok?a=b c"),
        "/r/utf8" => {
            // Connection: close, as every other redirect here: without it requests reuses
            // the connection the site is closing, and its verdict races the close.
            let mut head =
                b"HTTP/1.1 302 Found\r\nContent-Length: 0\r\nConnection: close\r\nLocation: /ok?q="
                    .to_vec();
            head.extend_from_slice("caf\u{e9}".as_bytes());
            head.extend_from_slice(b"\r\n\r\n");
            raw(&head)
        }
        "/r/loop" => redirect("302 Found", "/r/loop"),
        "/r/no-location" => whole("302 Found", "", b"moved, but where?"),
        "/r/ftp" => redirect("302 Found", "ftp://127.0.0.1:1/file"),
        "/r/auth-same" => redirect("302 Found", "/auth"),
        "/r/auth-other" => redirect("302 Found", &format!("http://localhost:{port}/auth")),
        p if p.starts_with("/r/chain/") => {
            let n: u32 = p["/r/chain/".len()..].parse().unwrap_or(0);
            match n {
                0 => redirect("302 Found", "/ok"),
                n => redirect("302 Found", &format!("/r/chain/{}", n - 1)),
            }
        }
        // User information: Basic auth.
        "/auth" => basic(r, "user:pass"),
        "/auth-odd" => basic(r, "us@er:p:ss"),
        // Cookies over redirects.
        "/cookie/set" => set_cookie(&["sid=abc123; Path=/"], "/cookie/need"),
        "/cookie/two" => set_cookie(&["a=1; Path=/", "b=2; Path=/"], "/cookie/need-two"),
        "/cookie/path" => set_cookie(&["sid=abc123; Path=/elsewhere"], "/cookie/need"),
        "/cookie/domain" => set_cookie(&["sid=abc123; Domain=other.example"], "/cookie/need"),
        "/cookie/expired" => set_cookie(&["sid=abc123; Max-Age=0"], "/cookie/need"),
        "/cookie/secure" => set_cookie(&["sid=abc123; Secure"], "/cookie/need"),
        "/cookie/other-host" => set_cookie(
            &["sid=abc123; Path=/"],
            &format!("http://localhost:{port}/cookie/need"),
        ),
        "/cookie/need" => needs_cookies(r, &["sid=abc123"]),
        "/cookie/need-two" => needs_cookies(r, &["a=1", "b=2"]),
        // Bodies without a body, and encodings.
        "/head-gzip" => raw(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 40\r\nContent-Type: text/html\r\n\r\n"),
        "/204-gzip" => raw(b"HTTP/1.1 204 No Content\r\nContent-Encoding: gzip\r\n\r\n"),
        "/304" => raw(b"HTTP/1.1 304 Not Modified\r\nContent-Encoding: gzip\r\nContent-Length: 40\r\n\r\n"),
        "/empty-gzip" => whole("200 OK", "Content-Encoding: gzip\r\n", b""),
        "/gzip" => whole("200 OK", "Content-Encoding: gzip\r\n", &gzip(BODY)),
        "/gzip-corrupt" => whole("200 OK", "Content-Encoding: gzip\r\n", b"this is not gzip at all"),
        "/deflate" => whole("200 OK", "Content-Encoding: deflate\r\n", &zlib(BODY)),
        "/deflate-raw" => whole("200 OK", "Content-Encoding: deflate\r\n", &raw_deflate(BODY)),
        "/deflate-corrupt" => whole("200 OK", "Content-Encoding: deflate\r\n", b"\xff\xfe not deflate"),
        "/identity" => whole("200 OK", "Content-Encoding: identity\r\n", BODY),
        // Framing.
        "/chunked-trailers" => {
            let mut b = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n".to_vec();
            for part in BODY.chunks(20) {
                b.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
                b.extend_from_slice(part);
                b.extend_from_slice(b"\r\n");
            }
            b.extend_from_slice(b"0\r\nX-Sum: 42\r\n\r\n");
            raw(&b)
        }
        "/chunked-bad-size" => raw(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"),
        "/chunked-cut" => raw(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"),
        "/http10" => {
            let mut b = b"HTTP/1.0 200 OK\r\nContent-Type: text/html\r\n\r\n".to_vec();
            b.extend_from_slice(BODY);
            raw(&b)
        }
        "/until-close" => {
            let mut b = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".to_vec();
            b.extend_from_slice(BODY);
            raw(&b)
        }
        "/short-body" => raw(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten.."),
        "/100-continue" => {
            let mut b = b"HTTP/1.1 100 Continue\r\n\r\n".to_vec();
            b.extend(whole_bytes("200 OK", "", BODY));
            raw(&b)
        }
        "/103-early-hints" => {
            let mut b = b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n".to_vec();
            b.extend(whole_bytes("200 OK", "", BODY));
            raw(&b)
        }
        // Odd status lines and header bytes.
        "/no-reason" => raw(b"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok"),
        "/latin1-reason" => raw(b"HTTP/1.1 200 Tr\xe8s bien\r\nContent-Length: 2\r\n\r\nok"),
        "/latin1-header" => raw(b"HTTP/1.1 200 OK\r\nX-Name: caf\xe9\r\nContent-Length: 2\r\n\r\nok"),
        "/no-space-header" => raw(b"HTTP/1.1 200 OK\r\nContent-Type:text/html\r\nContent-Length:2\r\n\r\nok"),
        "/lf-only" => raw(b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok"),
        "/status-999" => raw(b"HTTP/1.1 999 Strange\r\nContent-Length: 2\r\n\r\nok"),
        "/status-503" => whole("503 Service Unavailable", "", b"down"),
        "/status-404" => whole("404 Not Found", "", b"nothing here"),
        "/garbage" => raw(b"hello, I am not HTTP\r\n\r\n"),
        "/empty-reply" => Vec::new(),
        // Time.
        "/slow-head" => vec![Step::Pause(Duration::from_secs(4)), Step::Send(whole_bytes("200 OK", "", BODY))],
        "/slow-ok" => vec![Step::Pause(Duration::from_millis(300)), Step::Send(whole_bytes("200 OK", "", BODY))],
        "/slow-body" => {
            let mut steps = vec![Step::Send(b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n".to_vec())];
            for _ in 0..20 {
                steps.push(Step::Pause(Duration::from_millis(250)));
                steps.push(Step::Send(b"x".to_vec()));
            }
            steps
        }
        _ => whole("404 Not Found", "", b"no such path"),
    }
}

fn whole_bytes(status: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    match whole(status, headers, body).pop() {
        Some(Step::Send(b)) => b,
        _ => Vec::new(),
    }
}

fn basic(r: &Request, pair: &str) -> Vec<Step> {
    use base64::Engine;
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    );
    if r.header("authorization") == Some(expected.as_str()) {
        whole("200 OK", "", BODY)
    } else {
        whole(
            "401 Unauthorized",
            "WWW-Authenticate: Basic realm=\"test\"\r\n",
            b"who are you?",
        )
    }
}

fn set_cookie(cookies: &[&str], to: &str) -> Vec<Step> {
    let mut headers: String = cookies
        .iter()
        .map(|c| format!("Set-Cookie: {c}\r\n"))
        .collect();
    headers.push_str(&format!("Location: {to}\r\n"));
    whole("302 Found", &headers, b"")
}

fn needs_cookies(r: &Request, needed: &[&str]) -> Vec<Step> {
    let sent: Vec<&str> = r
        .header("cookie")
        .unwrap_or("")
        .split(';')
        .map(str::trim)
        .collect();
    if needed.iter().all(|n| sent.contains(n)) {
        whole("200 OK", "", BODY)
    } else {
        whole("403 Forbidden", "", b"no cookie, no page")
    }
}

/// Every TLS site answers 200.
fn tls_answer(_: &Request, _: u16) -> Vec<Step> {
    whole("200 OK", "", BODY)
}

struct Case {
    name: &'static str,
    url: String,
    method: &'static str,
    regex: Option<&'static str>,
}

fn case(name: &'static str, url: String) -> Case {
    Case {
        name,
        url,
        method: "GET",
        regex: None,
    }
}

fn cases(plain: u16, tls: &BTreeMap<&str, u16>) -> Vec<Case> {
    let at = |path: &str| format!("http://127.0.0.1:{plain}{path}");
    let mut cases = vec![
        case("ok", at("/ok")),
        case("redirect-absolute", at("/r/abs")),
        case("redirect-dot-dot", at("/dots/a/b/x")),
        case("redirect-scheme-relative", at("/r/scheme-relative")),
        case("redirect-query-holds-url", at("/r/query-holds-url")),
        case("redirect-fragment", at("/r/fragment")),
        case("redirect-301", at("/r/301")),
        case("redirect-303", at("/r/303")),
        case("redirect-307", at("/r/307")),
        case("redirect-308", at("/r/308")),
        case("redirect-relative-no-slash", at("/r/noslash/x")),
        case("redirect-space", at("/r/space")),
        case("redirect-utf8-bytes", at("/r/utf8")),
        case("redirect-loop", at("/r/loop")),
        case("redirect-chain-at-limit", at("/r/chain/4")),
        case("redirect-chain-over-limit", at("/r/chain/5")),
        case("redirect-no-location", at("/r/no-location")),
        case("redirect-to-ftp", at("/r/ftp")),
        case(
            "redirect-to-https",
            format!("http://localhost:{plain}/r/https-placeholder"),
        ),
        case(
            "auth-user-info",
            format!("http://user:pass@127.0.0.1:{plain}/auth"),
        ),
        case(
            "auth-percent-encoded",
            format!("http://us%40er:p%3Ass@127.0.0.1:{plain}/auth-odd"),
        ),
        case("auth-missing", at("/auth")),
        case(
            "auth-redirect-same-origin",
            format!("http://user:pass@127.0.0.1:{plain}/r/auth-same"),
        ),
        case(
            "auth-not-sent-to-other-origin",
            format!("http://user:pass@127.0.0.1:{plain}/r/auth-other"),
        ),
        case("cookie-over-redirect", at("/cookie/set")),
        case("cookie-two-over-redirect", at("/cookie/two")),
        case("cookie-other-path", at("/cookie/path")),
        case("cookie-other-domain", at("/cookie/domain")),
        case("cookie-expired", at("/cookie/expired")),
        case("cookie-secure-over-http", at("/cookie/secure")),
        case("cookie-not-sent-to-other-host", at("/cookie/other-host")),
        Case {
            method: "HEAD",
            ..case("head-gzip-no-body", at("/head-gzip"))
        },
        case("204-gzip-no-body", at("/204-gzip")),
        case("304-no-body", at("/304")),
        case("empty-gzip-body", at("/empty-gzip")),
        Case {
            regex: Some(REGEX),
            ..case("gzip", at("/gzip"))
        },
        case("gzip-corrupt", at("/gzip-corrupt")),
        Case {
            regex: Some(REGEX),
            ..case("deflate-zlib", at("/deflate"))
        },
        Case {
            regex: Some(REGEX),
            ..case("deflate-raw", at("/deflate-raw"))
        },
        case("deflate-corrupt", at("/deflate-corrupt")),
        Case {
            regex: Some(REGEX),
            ..case("identity", at("/identity"))
        },
        Case {
            regex: Some(REGEX),
            ..case("chunked-trailers", at("/chunked-trailers"))
        },
        case("chunked-bad-size", at("/chunked-bad-size")),
        case("chunked-cut", at("/chunked-cut")),
        Case {
            regex: Some(REGEX),
            ..case("http-1.0-until-close", at("/http10"))
        },
        Case {
            regex: Some(REGEX),
            ..case("http-1.1-until-close", at("/until-close"))
        },
        case("short-body", at("/short-body")),
        Case {
            regex: Some(REGEX),
            ..case("100-continue", at("/100-continue"))
        },
        Case {
            regex: Some(REGEX),
            ..case("103-early-hints", at("/103-early-hints"))
        },
        case("status-without-reason", at("/no-reason")),
        case("status-latin1-reason", at("/latin1-reason")),
        case("header-latin1-value", at("/latin1-header")),
        case("header-without-space", at("/no-space-header")),
        case("lf-line-ends", at("/lf-only")),
        case("status-999", at("/status-999")),
        case("status-503", at("/status-503")),
        case("status-404", at("/status-404")),
        case("not-http", at("/garbage")),
        case("empty-reply", at("/empty-reply")),
        case("slow-head", at("/slow-head")),
        case("slow-but-in-time", at("/slow-ok")),
        case("slow-body", at("/slow-body")),
        case(
            "refused",
            format!("http://127.0.0.1:{}/", raw_site::refused_port()),
        ),
        case(
            "http-to-tls-port",
            format!("http://localhost:{}/ok", tls["ok"]),
        ),
        case("tls-to-plain-port", format!("https://localhost:{plain}/ok")),
        case("tls-ok", format!("https://localhost:{}/ok", tls["ok"])),
        case(
            "tls-ip-in-san",
            format!("https://127.0.0.1:{}/ok", tls["ok"]),
        ),
        case(
            "tls-wrong-name",
            format!("https://localhost:{}/ok", tls["wrong-name"]),
        ),
        case(
            "tls-expired",
            format!("https://localhost:{}/ok", tls["expired"]),
        ),
        case(
            "tls-self-signed",
            format!("https://localhost:{}/ok", tls["self-signed"]),
        ),
    ];
    // A redirect from http to the https site (its port known only now).
    for c in &mut cases {
        if c.name == "redirect-to-https" {
            c.url = at(&format!("/r/to/{}", tls["ok"]));
        }
    }
    cases
}

#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
struct Verdict {
    up: bool,
    status: Option<u16>,
    error: Option<String>,
}

#[derive(Debug, serde::Deserialize)]
struct References {
    curl: Verdict,
    requests: Verdict,
}

fn references(cases: &[Case], ca: &str) -> BTreeMap<String, References> {
    let input: Vec<serde_json::Value> = cases
        .iter()
        .map(|c| {
            serde_json::json!({
                "name": c.name, "url": c.url, "method": c.method, "regex": c.regex,
                "max_redirects": 5, "timeout_s": TIMEOUT_S, "ca": ca,
            })
        })
        .collect();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/reference_clients.py");
    let mut child = std::process::Command::new("/usr/bin/python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tests/reference_clients.py with Debian's python3");
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(&serde_json::to_vec(&input).unwrap())
        .unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "reference clients failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the reference clients' JSON")
}

fn checksite(cases: &[Case], ca: &str) -> BTreeMap<String, Verdict> {
    let targets: Vec<serde_json::Value> = cases
        .iter()
        .map(|c| {
            let mut t = serde_json::json!({"url": c.url, "method": c.method});
            if let Some(r) = c.regex {
                t["regex"] = r.into();
            }
            t
        })
        .collect();
    let dir = std::env::temp_dir().join(common::unique("verdict-targets"));
    std::fs::write(&dir, serde_json::to_vec(&targets).unwrap()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_checksite-producer"))
        .arg("--once")
        .env_clear()
        .env("CK_TARGETS", &dir)
        .env("CK_SITE_CA", ca)
        .env("CK_MAX_REDIRECTS", "5")
        .env("CK_TIMEOUT_MS", (TIMEOUT_S * 1000).to_string())
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        cases.len(),
        "one event per target: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    cases
        .iter()
        .zip(lines)
        .map(|(c, line)| {
            let ev: serde_json::Value = serde_json::from_str(line).unwrap();
            let verdict = Verdict {
                up: ev["up"].as_bool().unwrap(),
                status: ev["status"].as_u64().map(|s| s as u16),
                error: ev["error"].as_str().map(str::to_string),
            };
            (c.name.to_string(), verdict)
        })
        .collect()
}

#[test]
fn checksite_judges_http_as_curl_and_requests_do() {
    let tb = testbed_or_skip!();
    for program in ["curl", "python3"] {
        if common::debian_program(program).is_none() {
            return;
        }
    }
    let plain = raw_site::serve(None, |r, port| {
        // The https site's port rides in the path: /r/to/PORT.
        match r.path.strip_prefix("/r/to/") {
            Some(tls_port) => whole(
                "302 Found",
                &format!("Location: https://localhost:{tls_port}/ok\r\n"),
                b"",
            ),
            None => answer(r, port),
        }
    });
    let mut tls = BTreeMap::new();
    for (name, cert) in [
        ("ok", "server"),
        ("wrong-name", "site-wrong-name"),
        ("expired", "site-expired"),
        ("self-signed", "site-self-signed"),
    ] {
        let config = common::sites::tls_server_config(
            &tb.certs.join(format!("{cert}.cert")),
            &tb.certs.join(format!("{cert}.key")),
        );
        tls.insert(name, raw_site::serve(Some(config), tls_answer));
    }
    let cases = cases(plain, &tls);
    assert!(cases.len() >= 40, "{} cases", cases.len());
    let ca = tb.cert("ca.pem");
    let (refs, ours) = std::thread::scope(|s| {
        let refs = s.spawn(|| references(&cases, &ca));
        let ours = checksite(&cases, &ca);
        (refs.join().unwrap(), ours)
    });
    let mut wrong = Vec::new();
    let mut table = String::new();
    for c in &cases {
        let (r, us) = (&refs[c.name], &ours[c.name]);
        table.push_str(&format!(
            "{:32} curl {:5} {:?} | requests {:5} {:?} | checksite {:5} {:?} {}\n",
            c.name,
            r.curl.up,
            r.curl.status,
            r.requests.up,
            r.requests.status,
            us.up,
            us.status,
            us.error.as_deref().unwrap_or("")
        ));
        let expected = if r.curl.up == r.requests.up {
            let status = (r.curl.status == r.requests.status).then_some(r.curl.status);
            (r.curl.up, status.flatten())
        } else {
            match DISAGREEMENTS.iter().find(|(n, _, _)| *n == c.name) {
                Some((_, Reference::Curl, _)) => (r.curl.up, r.curl.status),
                Some((_, Reference::Requests, _)) => (r.requests.up, r.requests.status),
                None => {
                    wrong.push(format!("{}: curl and requests disagree, and DISAGREEMENTS does not say whom to follow", c.name));
                    continue;
                }
            }
        };
        if us.up != expected.0 || (us.up && expected.1.is_some() && us.status != expected.1) {
            wrong.push(format!(
                "{}: checksite says up={} status={:?} ({}), the reference up={} status={:?}",
                c.name,
                us.up,
                us.status,
                us.error.as_deref().unwrap_or("no error"),
                expected.0,
                expected.1
            ));
        }
    }
    eprintln!("{table}");
    assert!(
        wrong.is_empty(),
        "{} case(s) judged otherwise:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    // The disagreements listed still are disagreements (else the list is stale).
    for (name, _, _) in DISAGREEMENTS {
        let r = &refs[*name];
        assert_ne!(
            r.curl.up, r.requests.up,
            "{name}: curl and requests agree now: drop it from DISAGREEMENTS"
        );
    }
}
