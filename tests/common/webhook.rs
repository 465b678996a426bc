//! A webhook receiver on 127.0.0.1 for the alert tests: it records every POST it gets
//! (when, and the JSON body) and answers as told: 200, an error status, or slowly.
//! Plain threads and std sockets: nothing here is under test.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How the receiver answers the next requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// 200 at once.
    Ok,
    /// This HTTP status at once.
    Status(u16),
    /// 200 after this long (a receiver that hangs).
    After(Duration),
}

/// One request received.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: chrono::DateTime<chrono::Utc>,
    pub body: serde_json::Value,
    /// The status it was answered with.
    pub answered: u16,
    /// The request line's path (the token part of a webhook URL).
    pub path: String,
    /// Its Content-Type header.
    pub content_type: String,
    /// Every header, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body as text.
    pub text: String,
}

#[derive(Clone)]
pub struct Receiver {
    pub port: u16,
    answer: Arc<Mutex<Answer>>,
    received: Arc<Mutex<Vec<Received>>>,
    /// Requests read, answered or not yet.
    arrived: Arc<AtomicUsize>,
    /// Whether the port is open: closed, connections are refused (a receiver that is down).
    listening: Arc<AtomicBool>,
    /// HTTPS with this configuration; plain HTTP when None.
    tls: Option<Arc<rustls::ServerConfig>>,
}

impl Receiver {
    /// A receiver listening on `port` (e.g. [`super::free_port`], reserved before).
    pub fn start_on(port: u16, answer: Answer) -> Receiver {
        Receiver::start(port, answer, None)
    }

    /// The same over HTTPS, with the test bed's server certificate (signed by its CA).
    pub fn start_tls_on(port: u16, cert: &std::path::Path, key: &std::path::Path) -> Receiver {
        let config = super::sites::tls_server_config(cert, key);
        Receiver::start(port, Answer::Ok, Some(config))
    }

    fn start(port: u16, answer: Answer, tls: Option<Arc<rustls::ServerConfig>>) -> Receiver {
        let r = Receiver {
            port,
            answer: Arc::new(Mutex::new(answer)),
            received: Arc::default(),
            arrived: Arc::default(),
            listening: Arc::new(AtomicBool::new(true)),
            tls,
        };
        let mut listener = Some(r.bind());
        let shared = r.clone();
        std::thread::spawn(move || {
            loop {
                let open = shared.listening.load(Ordering::SeqCst);
                match (&listener, open) {
                    (None, true) => listener = Some(shared.bind()),
                    (Some(_), false) => listener = None,
                    _ => {}
                }
                match listener.as_ref().map(|l| l.accept()) {
                    Some(Ok((stream, _))) => {
                        let _ = stream.set_nonblocking(false);
                        let shared = shared.clone();
                        std::thread::spawn(move || {
                            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                            match shared.tls.clone() {
                                None => shared.handle(stream),
                                Some(config) => {
                                    if let Ok(conn) = rustls::ServerConnection::new(config) {
                                        shared.handle(rustls::StreamOwned::new(conn, stream));
                                    }
                                }
                            }
                        });
                    }
                    _ => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        r
    }

    fn bind(&self) -> TcpListener {
        let l = TcpListener::bind(("127.0.0.1", self.port)).unwrap();
        l.set_nonblocking(true).unwrap();
        l
    }

    /// Close the port (connections refused) or open it again.
    pub fn listen(&self, open: bool) {
        self.listening.store(open, Ordering::SeqCst);
        // The accepting thread notices within a few milliseconds.
        std::thread::sleep(Duration::from_millis(50));
    }

    /// Requests read so far, answered or not yet.
    pub fn arrived(&self) -> usize {
        self.arrived.load(Ordering::SeqCst)
    }

    /// The URL to give as CK_ALERT_WEBHOOK_URL for a receiver (to be) on `port`.
    pub fn url(port: u16) -> String {
        format!("http://127.0.0.1:{port}/hooks/sEcReT-token")
    }

    pub fn answer(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }

    /// Every request so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// A header of a request.
    pub fn header<'a>(r: &'a Received, name: &str) -> Option<&'a str> {
        r.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The bodies answered 200, in the order received.
    pub fn delivered(&self) -> Vec<serde_json::Value> {
        self.received()
            .into_iter()
            .filter(|r| r.answered == 200)
            .map(|r| r.body)
            .collect()
    }

    /// Wait until `n` distinct notification ids were delivered; panics after `within`.
    pub async fn wait_for_ids(&self, n: usize, within: Duration) -> Vec<serde_json::Value> {
        let start = Instant::now();
        loop {
            let delivered = self.delivered();
            let mut ids: Vec<&str> = delivered.iter().filter_map(|b| b["id"].as_str()).collect();
            ids.sort_unstable();
            ids.dedup();
            if ids.len() >= n {
                return delivered;
            }
            assert!(
                start.elapsed() < within,
                "{} of {n} notification(s) delivered within {within:?}: {delivered:#?}",
                ids.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn handle<S: Read + Write>(&self, stream: S) {
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        if reader.read_line(&mut line).is_err() {
            return;
        }
        let path = line.split(' ').nth(1).unwrap_or("").to_string();
        let mut length = 0;
        let mut content_type = String::new();
        let mut headers = Vec::new();
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                headers.push((name.trim().to_lowercase(), value.trim().to_string()));
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
                if name.eq_ignore_ascii_case("content-type") {
                    content_type = value.trim().to_string();
                }
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        self.arrived.fetch_add(1, Ordering::SeqCst);
        let answer = *self.answer.lock().unwrap();
        let status = match answer {
            Answer::Ok => 200,
            Answer::Status(s) => s,
            Answer::After(wait) => {
                std::thread::sleep(wait);
                200
            }
        };
        self.received.lock().unwrap().push(Received {
            at: chrono::Utc::now(),
            body: serde_json::from_slice(&body).unwrap_or_default(),
            answered: status,
            path,
            content_type,
            headers,
            text: String::from_utf8_lossy(&body).into_owned(),
        });
        let s = reader.get_mut();
        let _ = write!(
            s,
            "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        );
        let _ = s.flush();
    }
}
