//! Small web sites on 127.0.0.1 for the producer's tests: each behaviour a real site can
//! have, good or hostile. Plain threads and std sockets: nothing here is under test.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

/// Answers by path:
/// `/ok` 200 with a known body, `/404`, `/500`, `/redirect/N` (N hops, then /ok),
/// `/loop` (redirects to itself), `/endless` (200, a body that never ends),
/// `/slow/MS` (200 after MS milliseconds), `/up-after/T` (500 until Unix ms T),
/// `/down-between/T1/T2` (503 from Unix ms T1 to T2, 200 otherwise), `/chunked` and
/// `/gzip` (the `/ok` body in chunks, gzipped or not), `/moved` (a relative redirect to
/// /ok), `/big-head` (a 70 KiB response head).
pub fn http_site() -> String {
    serve(None)
}

/// The same site over TLS with the test bed's server certificate (signed by its test CA).
pub fn https_site(cert: &std::path::Path, key: &std::path::Path) -> String {
    serve(Some(tls_server_config(cert, key)))
}

/// A TLS server configuration with this certificate chain and key (the test bed's).
pub fn tls_server_config(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Arc<rustls::ServerConfig> {
    let chain = checksite::tls::load_certs(cert).unwrap();
    let key = checksite::tls::load_key(key).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(checksite::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    Arc::new(config)
}

/// Accepts connections and never answers.
pub fn silent_site() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().flatten() {
            held.push(s);
        }
    });
    format!("http://{addr}")
}

pub const OK_BODY: &str = "<html><body>hello checksite\nstatus: all good</body></html>";

fn serve(tls: Option<Arc<rustls::ServerConfig>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let scheme = if tls.is_some() { "https" } else { "http" };
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let tls = tls.clone();
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                match tls {
                    None => handle(stream),
                    Some(config) => {
                        let Ok(conn) = rustls::ServerConnection::new(config) else {
                            return;
                        };
                        handle(rustls::StreamOwned::new(conn, stream));
                    }
                }
            });
        }
    });
    // "localhost" so that the certificate's name matches for https.
    format!("{scheme}://localhost:{port}")
}

fn handle<S: Read + Write>(stream: S) {
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) if line == "\r\n" => break,
            Ok(_) => {}
        }
    }
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_string();
    let mut s = reader.into_inner();
    let respond = |s: &mut S, status: &str, extra: &str, body: &str| {
        let _ = write!(
            s,
            "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n{extra}\r\n{body}",
            body.len()
        );
        let _ = s.flush();
    };
    if path == "/ok" {
        respond(&mut s, "200 OK", "", OK_BODY);
    } else if let Some(ms) = path.strip_prefix("/slow/") {
        std::thread::sleep(Duration::from_millis(ms.parse().unwrap_or(1000)));
        respond(&mut s, "200 OK", "", OK_BODY);
    } else if let Some(at) = path.strip_prefix("/up-after/") {
        // 500 until the given time (Unix ms), 200 from then on: a site that comes back.
        let at: u128 = at.parse().unwrap_or(0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        if now >= at {
            respond(&mut s, "200 OK", "", OK_BODY);
        } else {
            respond(&mut s, "500 Internal Server Error", "", "not yet");
        }
    } else if let Some(window) = path.strip_prefix("/down-between/") {
        // 200, then 503 from the first time to the second (Unix ms), 200 again after: a
        // site that goes down and recovers.
        let (from, to) = window.split_once('/').unwrap_or(("0", "0"));
        let (from, to): (u128, u128) = (from.parse().unwrap_or(0), to.parse().unwrap_or(0));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        if (from..to).contains(&now) {
            respond(&mut s, "503 Service Unavailable", "", "down for a while");
        } else {
            respond(&mut s, "200 OK", "", OK_BODY);
        }
    } else if path == "/404" {
        respond(
            &mut s,
            "404 Not Found",
            "",
            &format!("not here: {}", "x".repeat(600)),
        );
    } else if path == "/500" {
        respond(&mut s, "500 Internal Server Error", "", "boom");
    } else if path == "/loop" {
        respond(&mut s, "302 Found", "location: /loop\r\n", "");
    } else if let Some(n) = path.strip_prefix("/redirect/") {
        let n: u32 = n.parse().unwrap_or(0);
        let next = if n == 0 {
            "/ok".to_string()
        } else {
            format!("/redirect/{}", n - 1)
        };
        respond(&mut s, "302 Found", &format!("location: {next}\r\n"), "");
    } else if path == "/chunked" || path == "/gzip" {
        let gzip = path == "/gzip";
        let body = if gzip {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            let _ = encoder.write_all(OK_BODY.as_bytes());
            encoder.finish().unwrap()
        } else {
            OK_BODY.as_bytes().to_vec()
        };
        let encoding = if gzip {
            "content-encoding: gzip\r\n"
        } else {
            ""
        };
        let _ = write!(
            s,
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n{encoding}connection: close\r\n\r\n"
        );
        for chunk in body.chunks(body.len() / 3 + 1) {
            let _ = write!(s, "{:x}\r\n", chunk.len());
            let _ = s.write_all(chunk);
            let _ = s.write_all(b"\r\n");
            let _ = s.flush();
        }
        let _ = s.write_all(b"0\r\n\r\n");
    } else if path == "/moved" {
        respond(&mut s, "301 Moved Permanently", "location: ok\r\n", "");
    } else if path == "/big-head" {
        let big = format!("x-big: {}\r\n", "b".repeat(70 * 1024));
        respond(&mut s, "200 OK", &big, OK_BODY);
    } else if path == "/endless" {
        let _ = write!(s, "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n");
        let chunk = [b'z'; 8192];
        // Until the client hangs up; a little slow, but endless.
        while s.write_all(&chunk).is_ok() {
            std::thread::sleep(Duration::from_millis(1));
        }
    } else {
        respond(&mut s, "404 Not Found", "", "no such path");
    }
}

/// A connection that is refused at once: a port that was just free.
pub fn refused_site() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let _ = TcpStream::connect_timeout(&addr, Duration::from_millis(10));
    format!("http://{addr}")
}

/// Requests a site answered: (path, when).
pub type Answered = Arc<std::sync::Mutex<Vec<(String, chrono::DateTime<chrono::Utc>)>>>;

/// A site answering 200 to everything, recording each request's path and time.
pub fn recording_site() -> (u16, Answered) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Answered = Arc::default();
    let kept = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let kept = kept.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream);
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    return;
                }
                let path = line.split(' ').nth(1).unwrap_or("").to_string();
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                }
                let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok";
                if reader.get_mut().write_all(answer).is_ok() {
                    kept.lock().unwrap().push((path, chrono::Utc::now()));
                }
            });
        }
    });
    (port, seen)
}
