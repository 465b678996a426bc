//! The fastest path: a v1 event exactly as checksite-producer writes it (its fields in
//! `CheckEvent`'s order, no whitespace, no escapes), read by a scanner that knows that
//! shape, where serde_json matches every key by name and calls a visitor per value (a
//! third of the fetch thread's CPU, perf, 200,000-event drain). Anything else (another
//! writer's order or spacing, an escape, a number serde would read as a float) is left to
//! the serde path, so it decides every record this does not. Where this reads a record,
//! its answer is serde's: a test holds the two to the same rows over many generated
//! events and their mutations. Pure: no I/O.

use std::borrow::Cow;

use uuid::Uuid;

use super::v1::V1Event;
use crate::event::{ErrorKind, parse_rfc3339};

/// `text` read as checksite-producer writes a v1 event, or None: let serde read it.
pub(super) fn scan(text: &str) -> Option<V1Event<'_>> {
    let mut s = Scanner {
        rest: text.as_bytes(),
        text,
        at: 0,
    };
    s.expect(b"{")?;
    let ev = V1Event {
        v: u32::try_from(s.field(b"\"v\":", Scanner::unsigned)?).ok()?,
        id: check_id(s.field(b",\"id\":", Scanner::string)?)?,
        url: Cow::Borrowed(s.field(b",\"url\":", Scanner::string)?),
        checked_at: parse_rfc3339(s.field(b",\"checked_at\":", Scanner::string)?).ok()?,
        elapsed_ms: s.field(b",\"elapsed_ms\":", Scanner::unsigned)?,
        status: opt_u16(s.field(b",\"status\":", |s| s.or_null(Scanner::unsigned))?)?,
        error: s.text_field(b",\"error\":")?,
        error_kind: match s.field(b",\"error_kind\":", |s| s.or_null(Scanner::string))? {
            Some(name) => Some(ErrorKind::from_name(name)?),
            None => None,
        },
        content_match: s.text_field(b",\"content_match\":")?,
        body_prefix: s.text_field(b",\"body_prefix\":")?,
        dns_ms: s.field(b",\"dns_ms\":", |s| s.or_null(Scanner::unsigned))?,
        connect_ms: s.field(b",\"connect_ms\":", |s| s.or_null(Scanner::unsigned))?,
        tls_ms: s.field(b",\"tls_ms\":", |s| s.or_null(Scanner::unsigned))?,
        ttfb_ms: s.field(b",\"ttfb_ms\":", |s| s.or_null(Scanner::unsigned))?,
        bytes: s.field(b",\"bytes\":", |s| s.or_null(Scanner::unsigned))?,
        cert_expires_at: match s.field(b",\"cert_expires_at\":", |s| s.or_null(Scanner::string))? {
            Some(t) => Some(parse_rfc3339(t).ok()?),
            None => None,
        },
        ip: s.text_field(b",\"ip\":")?,
        body_sha256: s.text_field(b",\"body_sha256\":")?,
        schedule_lag_ms: s.field(b",\"schedule_lag_ms\":", Scanner::signed)?,
        producer: Cow::Borrowed(s.field(b",\"producer\":", Scanner::string)?),
        up: s.field(b",\"up\":", |s| s.or_null(Scanner::boolean))?,
        name: s.optional_text(b",\"name\":")?,
        group: s.optional_text(b",\"group\":")?,
        public: match s.rest.starts_with(b",\"public\":") {
            true => s.field(b",\"public\":", |s| s.or_null(Scanner::boolean))?,
            false => None,
        },
    };
    s.expect(b"}")?;
    s.rest.is_empty().then_some(ev)
}

/// A check id as the producer writes it (hyphenated, 36 characters), read by position;
/// any other form is the uuid crate's to read. Its parser, which tries every form, was
/// 2.1-2.3 % of the consumer's CPU (perf, 200,000-event drain); by position, 200,000 ids
/// take ~8.4 ms instead of ~15 (release test build). A test holds the two to the same
/// answers.
fn check_id(text: &str) -> Option<Uuid> {
    match hyphenated(text.as_bytes()) {
        Some(n) => Some(Uuid::from_u128(n)),
        None => Uuid::try_parse(text).ok(),
    }
}

fn hyphenated(b: &[u8]) -> Option<u128> {
    let b: &[u8; 36] = b.try_into().ok()?;
    if (b[8], b[13], b[18], b[23]) != (b'-', b'-', b'-', b'-') {
        return None;
    }
    // The digits' values or'ed together: 0xFF once any byte is not one (one test at the end).
    let (mut n, mut bad) = (0u128, 0u8);
    for at in ID_DIGITS {
        let d = HEX_DIGITS[usize::from(b[at])];
        bad |= d;
        n = n << 4 | u128::from(d & 0xF);
    }
    (bad != 0xFF).then_some(n)
}

/// Where a hyphenated id's 32 digits are: around the hyphens at 8, 13, 18 and 23.
const ID_DIGITS: [usize; 32] = {
    let mut at = [0; 32];
    let (mut i, mut next) = (0, 0);
    while i < 32 {
        if matches!(next, 8 | 13 | 18 | 23) {
            next += 1;
        }
        at[i] = next;
        (i, next) = (i + 1, next + 1);
    }
    at
};

/// Each byte's value as a hexadecimal digit; 0xFF when it is not one.
const HEX_DIGITS: [u8; 256] = {
    let mut t = [0xFF; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        t[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

fn opt_u16(n: Option<u64>) -> Option<Option<u16>> {
    match n {
        Some(n) => u16::try_from(n).ok().map(Some),
        None => Some(None),
    }
}

struct Scanner<'a> {
    text: &'a str,
    rest: &'a [u8],
    /// Where `rest` starts in `text`.
    at: usize,
}

// The small steps are always inlined: at opt-level "s" each was a call, and each key's
// comparison a call to memcmp; inlined into `scan`, the constant keys compare as words
// (decoding 100,000 events took 20-30 % less time, four A/B pairs of a release test build).
impl<'a> Scanner<'a> {
    #[inline(always)]
    fn advance(&mut self, n: usize) {
        self.rest = &self.rest[n..];
        self.at += n;
    }

    #[inline(always)]
    fn expect(&mut self, bytes: &[u8]) -> Option<()> {
        if !self.rest.starts_with(bytes) {
            return None;
        }
        self.advance(bytes.len());
        Some(())
    }

    /// `key` (with its comma and colon), then its value.
    #[inline(always)]
    fn field<T>(&mut self, key: &[u8], value: impl FnOnce(&mut Self) -> Option<T>) -> Option<T> {
        self.expect(key)?;
        value(self)
    }

    #[inline(always)]
    fn text_field(&mut self, key: &[u8]) -> Option<Option<Cow<'a, str>>> {
        self.field(key, |s| s.or_null(Scanner::string))
            .map(|t| t.map(Cow::Borrowed))
    }

    /// A text field the producer leaves out when it has none.
    fn optional_text(&mut self, key: &[u8]) -> Option<Option<Cow<'a, str>>> {
        match self.rest.starts_with(key) {
            true => self.text_field(key),
            false => Some(None),
        }
    }

    #[inline(always)]
    fn or_null<T>(&mut self, value: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
        match self.rest.starts_with(b"null") {
            true => {
                self.advance(4);
                Some(None)
            }
            false => value(self).map(Some),
        }
    }

    /// A string without escapes or control characters (those are serde's to read).
    fn string(&mut self) -> Option<&'a str> {
        self.expect(b"\"")?;
        let len = self
            .rest
            .iter()
            .position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
        if self.rest[len] != b'"' {
            return None;
        }
        let start = self.at;
        self.advance(len + 1);
        // On character boundaries: `"` is ASCII and the text is UTF-8.
        self.text.get(start..start + len)
    }

    /// An integer as JSON writes one (no leading zero, no fraction, no exponent).
    fn unsigned(&mut self) -> Option<u64> {
        let len = self
            .rest
            .iter()
            .position(|b| !b.is_ascii_digit())
            .unwrap_or(self.rest.len());
        let digits = &self.rest[..len];
        if len == 0 || (len > 1 && digits[0] == b'0') {
            return None;
        }
        if matches!(self.rest.get(len), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        let mut n: u64 = 0;
        for d in digits {
            n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
        }
        self.advance(len);
        Some(n)
    }

    fn signed(&mut self) -> Option<i64> {
        if self.rest.starts_with(b"-") {
            self.advance(1);
            let n = self.unsigned()?;
            // -0 is 0 for serde too; -2^63 fits.
            return 0i64.checked_sub_unsigned(n);
        }
        i64::try_from(self.unsigned()?).ok()
    }

    fn boolean(&mut self) -> Option<bool> {
        for (word, value) in [(&b"true"[..], true), (&b"false"[..], false)] {
            if self.rest.starts_with(word) {
                self.advance(word.len());
                return Some(value);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::super::{from_borrowed, from_v1};
    use super::*;
    use crate::event::CheckEvent;

    /// A small deterministic generator: the same events on every run.
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self, below: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) % below
        }

        fn maybe<T>(&mut self, value: impl FnOnce(&mut Self) -> T) -> Option<T> {
            (self.next(3) > 0).then(|| value(self))
        }

        fn number(&mut self) -> u64 {
            [
                0,
                1,
                9,
                10,
                65_535,
                65_536,
                u64::from(u32::MAX),
                i64::MAX as u64,
                u64::MAX,
            ][self.next(9) as usize]
        }

        /// Mostly plain texts; now and then one that JSON must escape.
        fn text(&mut self) -> String {
            let plain = ["", "a", "é ü", "null", "https://x/?a=1&b=2"];
            let escaped = ["quote \" here", "back\\slash", "tab\tnl\n", "\u{1}"];
            match self.next(16) {
                0 => escaped[self.next(4) as usize].to_string(),
                _ => plain[self.next(5) as usize].to_string(),
            }
        }
    }

    fn event(g: &mut Lcg) -> CheckEvent {
        let mut ev = crate::event::tests::sample();
        ev.id = Uuid::from_u128(u128::from(g.next(u64::MAX)) << 64 | u128::from(g.next(7)));
        ev.url = format!("https://site-{}.example/{}", g.next(1000), g.text());
        ev.checked_at = chrono::DateTime::from_timestamp_millis(
            g.next(4_000_000_000_000) as i64 - 1_000_000_000_000,
        )
        .unwrap();
        ev.elapsed_ms = g.number();
        ev.status = g.maybe(|g| g.next(70_000) as u16);
        ev.error = g.maybe(|g| g.text());
        ev.error_kind = g.maybe(|g| ErrorKind::ALL[g.next(8) as usize]);
        ev.content_match = g.maybe(|g| g.text());
        ev.body_prefix = g.maybe(|g| g.text());
        (ev.dns_ms, ev.connect_ms, ev.tls_ms) = (
            g.maybe(|g| g.number()),
            g.maybe(|g| g.number()),
            g.maybe(|g| g.number()),
        );
        (ev.ttfb_ms, ev.bytes) = (g.maybe(|g| g.number()), g.maybe(|g| g.number()));
        ev.cert_expires_at = g.maybe(|_| ev.checked_at + chrono::TimeDelta::days(90));
        ev.ip = g.maybe(|g| g.text());
        ev.body_sha256 = g.maybe(|_| "ab".repeat(32));
        ev.schedule_lag_ms = g.next(2_000_001) as i64 - 1_000_000;
        ev.producer = g.text();
        ev.up = g.maybe(|g| g.next(2) == 0);
        ev.name = g.maybe(|g| g.text());
        ev.group = g.maybe(|g| g.text());
        ev.public = g.maybe(|g| g.next(2) == 0);
        ev
    }

    /// `text` changed in one place: a byte dropped, doubled or replaced.
    fn mutate(g: &mut Lcg, text: &str) -> Option<String> {
        let mut bytes = text.as_bytes().to_vec();
        let at = g.next(bytes.len() as u64) as usize;
        match g.next(3) {
            0 => drop(bytes.remove(at)),
            1 => bytes.insert(at, bytes[at]),
            _ => bytes[at] = b" 0-.e\\\"{}:,n1"[g.next(13) as usize],
        }
        String::from_utf8(bytes).ok()
    }

    #[test]
    fn where_the_scanner_reads_a_record_its_row_is_serdes() {
        let mut g = Lcg(29);
        let (mut scanned, mut producer_written) = (0, 0);
        for _ in 0..3_000 {
            let ev = event(&mut g);
            let text = String::from_utf8(ev.to_json()).unwrap();
            // The producer's own events go the fast way unless they hold an escape (the
            // texts above with a quote, backslash, tab or \u{1}): zeros, extremes, nulls.
            assert!(
                text.contains('\\') || scan(&text).is_some(),
                "not scanned: {text}"
            );
            let mutated: Vec<String> = (0..20).filter_map(|_| mutate(&mut g, &text)).collect();
            for (i, text) in std::iter::once(&text).chain(&mutated).enumerate() {
                let Some(fast) = scan(text) else { continue };
                scanned += 1;
                producer_written += usize::from(i == 0);
                let reference = serde_json::from_str::<CheckEvent>(text)
                    .unwrap_or_else(|e| panic!("scanned, refused by serde ({e}): {text}"));
                assert_eq!(from_borrowed(fast), from_v1(reference), "{text}");
            }
        }
        // Most of the producer's events hold no escape.
        assert!(
            producer_written > 600,
            "{producer_written} of 3,000 events scanned"
        );
        assert!(scanned > producer_written, "no mutation was scanned");
    }

    /// The by-position reading of a check id gives the uuid crate's answer: over ids as
    /// written, in capitals, and one character off (a digit out of range, a hyphen moved,
    /// one too many or too few), and the other forms the crate reads (simple, braced, urn).
    #[test]
    fn check_ids_read_as_the_uuid_crate_reads_them() {
        let mut g = Lcg(7);
        let chars = b"09afAFgG-{}: ";
        let (mut read, mut left) = (0, 0);
        for _ in 0..100_000 {
            let id =
                Uuid::from_u128(u128::from(g.next(u64::MAX)) << 64 | u128::from(g.next(u64::MAX)));
            let mut text = match g.next(6) {
                0 => id.hyphenated().to_string().to_uppercase(),
                1 => id.simple().to_string(),
                2 => id.braced().to_string(),
                3 => id.urn().to_string(),
                _ => id.hyphenated().to_string(),
            }
            .into_bytes();
            let at = g.next(text.len() as u64) as usize;
            match g.next(4) {
                0 => text[at] = chars[g.next(chars.len() as u64) as usize],
                1 => drop(text.remove(at)),
                2 => text.insert(at, chars[g.next(chars.len() as u64) as usize]),
                _ => {}
            }
            let text = String::from_utf8(text).unwrap();
            let hyphenated = text.len() == 36 && text.as_bytes()[8] == b'-';
            (read, left) = if hyphenated {
                (read + 1, left)
            } else {
                (read, left + 1)
            };
            assert_eq!(check_id(&text), Uuid::try_parse(&text).ok(), "{text}");
        }
        assert!(
            read > 20_000 && left > 20_000,
            "{read} hyphenated, {left} not"
        );
    }
}
