//! A web site that answers byte for byte, so that it can be wrong the way real servers
//! are: each path is one behaviour (a redirect form, a cookie, an encoding, a framing, an
//! odd status line, a slow or empty answer). The HTTP verdict test asks curl,
//! python-requests and checksite the same URLs. Plain threads and std sockets: nothing
//! here is under test.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

/// What a request said.
pub struct Request {
    pub method: String,
    pub path: String,
    /// Lower-case names.
    pub headers: Vec<(String, String)>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One step of an answer.
pub enum Step {
    Send(Vec<u8>),
    Pause(Duration),
}

/// A listener on 127.0.0.1 answering every connection with `answer(request, port)`,
/// over TLS when `tls` is given. Returns its port.
pub fn serve(
    tls: Option<Arc<rustls::ServerConfig>>,
    answer: fn(&Request, u16) -> Vec<Step>,
) -> u16 {
    serve_in_turn(tls.into_iter().collect(), answer)
}

/// [`serve`] over TLS with each configuration in turn, one per connection (two backends
/// behind one name serving two certificates); plain HTTP when `tls` is empty.
pub fn serve_in_turn(
    tls: Vec<Arc<rustls::ServerConfig>>,
    answer: fn(&Request, u16) -> Vec<Step>,
) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().flatten().enumerate() {
            let tls = (!tls.is_empty()).then(|| tls[n % tls.len()].clone());
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                let _ = stream.set_nodelay(true);
                match tls {
                    None => handle(stream, port, answer),
                    Some(config) => {
                        let Ok(conn) = rustls::ServerConnection::new(config) else {
                            return;
                        };
                        handle(rustls::StreamOwned::new(conn, stream), port, answer);
                    }
                }
            });
        }
    });
    port
}

fn handle<S: Read + Write>(mut s: S, port: u16, answer: fn(&Request, u16) -> Vec<Step>) {
    let Some(request) = read_request(&mut s) else {
        return;
    };
    for step in answer(&request, port) {
        match step {
            Step::Send(bytes) => {
                if s.write_all(&bytes).and_then(|_| s.flush()).is_err() {
                    return;
                }
            }
            Step::Pause(d) => std::thread::sleep(d),
        }
    }
    // Let the client read what was sent before the connection goes.
    std::thread::sleep(Duration::from_millis(20));
}

fn read_request<S: Read>(s: &mut S) -> Option<Request> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && !head.ends_with(b"\n\n") {
        if s.read(&mut byte).ok()? == 0 || head.len() > 65_536 {
            return None;
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head);
    let mut lines = text.lines();
    let mut first = lines.next()?.split_whitespace();
    let method = first.next()?.to_string();
    let path = first.next()?.to_string();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Some(Request {
        method,
        path,
        headers,
    })
}

/// A whole answer with a Content-Length, sent at once.
pub fn whole(status: &str, headers: &str, body: &[u8]) -> Vec<Step> {
    let mut bytes = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n{headers}\r\n",
        body.len()
    )
    .into_bytes();
    bytes.extend_from_slice(body);
    vec![Step::Send(bytes)]
}

/// Bytes sent as they are, then the connection closes.
pub fn raw(bytes: &[u8]) -> Vec<Step> {
    vec![Step::Send(bytes.to_vec())]
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub fn zlib(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub fn raw_deflate(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Accepts a connection, then closes it without a word.
pub fn close_at_once(_: &Request, _: u16) -> Vec<Step> {
    Vec::new()
}

/// A connection to a port that was just free: refused at once.
pub fn refused_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    let _ = TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(10),
    );
    port
}
