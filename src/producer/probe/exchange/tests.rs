//! Unit tests of `exchange`.

use super::*;

#[test]
fn the_reading_stops_at_the_cap_and_hashes_what_it_took() {
    let mut reading = BodyReading::new(5, true);
    let _ = reading.write(b"abc");
    let _ = reading.write(b"defgh");
    assert!(reading.full());
    assert_eq!((reading.total, reading.kept.as_slice()), (5, &b"abcde"[..]));
    let expected = hex(ring::digest::digest(&ring::digest::SHA256, b"abcde").as_ref());
    assert_eq!(reading.sha256_hex(), expected);
}

fn credentials(same_origin: bool) -> Credentials<'static> {
    Credentials {
        same_origin,
        basic: None,
        cookie: None,
    }
}

#[test]
fn the_target_headers_replace_the_defaults_and_the_host_keeps_its_port() {
    let url = url::Url::parse("http://user:pw@example.com:8080/a?b=1").unwrap();
    let extra = [
        ("User-Agent".to_string(), "mine".to_string()),
        ("Authorization".to_string(), "Bearer t".to_string()),
    ];
    let request = request(&hyper::Method::GET, &url, &extra, &credentials(true)).unwrap();
    assert_eq!(request.uri(), "/a?b=1");
    assert_eq!(request.headers()[header::HOST], "example.com:8080");
    assert_eq!(request.headers()[header::USER_AGENT], "mine");
    assert_eq!(
        request.headers().get_all(header::USER_AGENT).iter().count(),
        1
    );
    assert_eq!(request.headers()[header::AUTHORIZATION], "Bearer t");
    let redirected =
        super::request(&hyper::Method::GET, &url, &extra, &credentials(false)).unwrap();
    assert!(!redirected.headers().contains_key(header::AUTHORIZATION));
    assert_eq!(redirected.headers()[header::USER_AGENT], "mine");
    let bad = [("bad name".to_string(), "x".to_string())];
    let e = super::request(&hyper::Method::GET, &url, &bad, &credentials(true)).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Http);
}

#[test]
fn user_information_is_basic_auth_percent_decoded() {
    let url = url::Url::parse("http://us%40er:p%3Ass@h.example/").unwrap();
    let basic = basic_auth(&url).unwrap();
    // base64("us@er:p:ss")
    assert_eq!(basic, "Basic dXNAZXI6cDpzcw==");
    assert!(basic_auth(&url::Url::parse("http://h.example/").unwrap()).is_none());
    let with = Credentials {
        same_origin: true,
        basic: Some(&basic),
        cookie: Some("sid=1".into()),
    };
    let request = request(&hyper::Method::GET, &url, &[], &with).unwrap();
    assert_eq!(request.headers()[header::AUTHORIZATION], basic);
    assert_eq!(request.headers()[header::COOKIE], "sid=1");
    // The target's own Authorization header wins over the URL's.
    let own = [("Authorization".to_string(), "Bearer t".to_string())];
    let request = super::request(&hyper::Method::GET, &url, &own, &with).unwrap();
    assert_eq!(request.headers()[header::AUTHORIZATION], "Bearer t");
}

#[test]
fn the_request_target_carries_no_byte_a_request_line_cannot() {
    let url = url::Url::parse("http://h/a{b}|c?q=x y^`").unwrap();
    assert_eq!(request_target(&url), "/a%7Bb%7D%7Cc?q=x%20y%5E%60");
}

fn decoded(encoding: Option<&str>, chunks: &[&[u8]]) -> Result<Vec<u8>, String> {
    let mut reading = BodyReading::new(1 << 20, true);
    let mut decoder = Decoder::new(encoding, &mut reading);
    for c in chunks {
        decoder.take(c).map_err(|f| f.message)?;
    }
    decoder.finish().map_err(|f| f.message)?;
    Ok(reading.kept)
}

#[test]
fn bodies_are_decoded_by_their_encoding_and_an_empty_one_by_none() {
    use flate2::Compression;
    let text = b"hello checksite hello checksite";
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(text).unwrap();
    let gz = gz.finish().unwrap();
    let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), Compression::default());
    zlib.write_all(text).unwrap();
    let zlib = zlib.finish().unwrap();
    let mut raw = flate2::write::DeflateEncoder::new(Vec::new(), Compression::default());
    raw.write_all(text).unwrap();
    let raw = raw.finish().unwrap();
    assert_eq!(decoded(Some("gzip"), &[&gz]).unwrap(), text);
    // One byte at a time: the deflate kind is told from the first two.
    let bytes: Vec<&[u8]> = zlib.chunks(1).collect();
    assert_eq!(decoded(Some("deflate"), &bytes).unwrap(), text);
    assert_eq!(decoded(Some("deflate"), &[&raw]).unwrap(), text);
    assert_eq!(decoded(Some("identity"), &[text]).unwrap(), text);
    for encoding in ["gzip", "deflate"] {
        assert_eq!(decoded(Some(encoding), &[]).unwrap(), b"");
        assert!(decoded(Some(encoding), &[b"not compressed at all"]).is_err());
    }
    assert!(decoded(Some("gzip"), &[&gz[..gz.len() / 2]]).is_err());
}
