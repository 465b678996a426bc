//! A [`Delta`]'s stored form in `rollup_deltas.body`: a compact binary encoding written by
//! every transaction and read back by every fold. It replaced JSON there because
//! serde_json's writing and reading of the deltas was a fifth of the writer thread's CPU
//! (perf, 200,000-event drain). Deltas committed by an older build (JSON, starting with
//! `{`) are still read. Pure: it never does I/O, and a malformed body is an error, never
//! a panic (the table can be written by hand).
//!
//! Layout: the byte [`MAGIC`], then the series. Integers are LEB128 varints (signed ones
//! zigzagged), a string is its length and its UTF-8 bytes, an optional is a flag bit.

use super::{Delta, DeltaHour, DeltaSeries};
use crate::consumer::rollup::{KindCounts, RecentCheck};

/// First byte of a binary delta; never the first byte of JSON.
const MAGIC: u8 = 0xD1;

/// Why a stored delta cannot be read.
#[derive(Debug, PartialEq)]
pub(crate) struct UnreadableDelta(String);

impl std::fmt::Display for UnreadableDelta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Delta {
    /// The bytes stored in `rollup_deltas.body`.
    pub(crate) fn to_stored(&self) -> Vec<u8> {
        let mut w = Writer(Vec::with_capacity(64 + 320 * self.series.len()));
        w.0.push(MAGIC);
        w.u(self.series.len() as u64);
        for s in &self.series {
            w.series(s);
        }
        w.0
    }

    /// A delta read back from `rollup_deltas.body`: binary, or JSON of an older build.
    pub(crate) fn from_stored(body: &[u8]) -> Result<Delta, UnreadableDelta> {
        match body.first() {
            Some(&MAGIC) => {
                let mut r = Reader { rest: &body[1..] };
                let n = r.len()?;
                let mut series = Vec::with_capacity(n);
                for _ in 0..n {
                    series.push(r.series()?);
                }
                match r.rest.is_empty() {
                    true => Ok(Delta { series }),
                    false => Err(UnreadableDelta("bytes after the last series".into())),
                }
            }
            _ => serde_json::from_slice(body).map_err(|e| UnreadableDelta(e.to_string())),
        }
    }
}

struct Writer(Vec<u8>);

impl Writer {
    fn u(&mut self, mut n: u64) {
        while n >= 0x80 {
            self.0.push((n as u8) | 0x80);
            n >>= 7;
        }
        self.0.push(n as u8);
    }

    fn i(&mut self, n: i64) {
        self.u(zigzag(n));
    }

    fn text(&mut self, s: &str) {
        self.u(s.len() as u64);
        self.0.extend_from_slice(s.as_bytes());
    }

    /// An optional's value, when there is one (its flag says whether).
    fn opt_i(&mut self, n: Option<i64>) {
        if let Some(n) = n {
            self.i(n);
        }
    }

    fn opt_text(&mut self, s: Option<&str>) {
        if let Some(s) = s {
            self.text(s);
        }
    }

    fn series(&mut self, s: &DeltaSeries) {
        self.text(&s.url);
        self.text(&s.producer);
        let flags = bits(&[
            s.up,
            s.changed,
            s.last_status.is_some(),
            s.last_error.is_some(),
            s.last_error_kind.is_some(),
            s.last_elapsed_ms.is_some(),
            s.cert_ms.is_some(),
        ]);
        self.u(flags);
        self.i(s.since_ms);
        self.i(s.last_ms);
        self.opt_i(s.last_status.map(i64::from));
        self.opt_text(s.last_error.as_deref());
        self.opt_text(s.last_error_kind.as_deref());
        self.opt_i(s.last_elapsed_ms.map(i64::from));
        self.opt_i(s.cert_ms);
        self.u(s.hours.len() as u64);
        for h in &s.hours {
            self.hour(h);
        }
        self.u(s.recent.len() as u64);
        for c in &s.recent {
            self.recent(c);
        }
    }

    fn hour(&mut self, h: &DeltaHour) {
        self.i(h.start_ms);
        self.i(h.checks);
        self.i(h.up_checks);
        for n in h.error_kinds {
            self.i(n);
        }
        self.u(h.hist.len() as u64);
        for (bucket, n) in &h.hist {
            self.u((*bucket).into());
            self.i(*n);
        }
        self.u(bits(&[
            h.min.is_some(),
            h.max.is_some(),
            h.last_status.is_some(),
        ]));
        self.opt_i(h.min.map(i64::from));
        self.opt_i(h.max.map(i64::from));
        self.opt_i(h.last_status.map(i64::from));
        self.i(h.sum);
        self.i(h.last_ms);
        self.i(h.maint_checks);
    }

    fn recent(&mut self, c: &RecentCheck) {
        let flags = bits(&[
            c.up,
            c.status.is_some(),
            c.elapsed_ms.is_some(),
            c.error_kind.is_some(),
            c.error.is_some(),
            c.phases.is_some(),
        ]);
        self.u(flags);
        self.i(c.at_ms);
        self.opt_i(c.status.map(i64::from));
        self.opt_i(c.elapsed_ms.map(i64::from));
        self.opt_text(c.error_kind.as_deref());
        self.opt_text(c.error.as_deref());
        for phase in c.phases.iter().flatten() {
            // 0: not timed; else the time (zigzagged) + 1.
            self.u(phase.map_or(0, |ms| zigzag(ms.into()) + 1));
        }
    }
}

/// A signed number as an unsigned one, small either side of zero staying small.
fn zigzag(n: i64) -> u64 {
    ((n << 1) ^ (n >> 63)) as u64
}

fn unzigzag(z: u64) -> i64 {
    (z >> 1) as i64 ^ -((z & 1) as i64)
}

/// Flags as bits, the first the lowest.
fn bits(flags: &[bool]) -> u64 {
    flags
        .iter()
        .enumerate()
        .map(|(i, f)| u64::from(*f) << i)
        .sum()
}

fn bit(flags: u64, i: u32) -> bool {
    flags >> i & 1 == 1
}

struct Reader<'a> {
    rest: &'a [u8],
}

fn cut(what: &str) -> UnreadableDelta {
    UnreadableDelta(format!("cut short or malformed at {what}"))
}

impl Reader<'_> {
    fn u(&mut self) -> Result<u64, UnreadableDelta> {
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self.rest.split_first().ok_or_else(|| cut("a number"))?;
            self.rest = rest;
            n |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err(cut("a number"))
    }

    fn i(&mut self) -> Result<i64, UnreadableDelta> {
        Ok(unzigzag(self.u()?))
    }

    fn i32(&mut self) -> Result<i32, UnreadableDelta> {
        i32::try_from(self.i()?).map_err(|_| cut("a 32-bit number"))
    }

    /// A count of items, each at least one byte: never more than the bytes left.
    fn len(&mut self) -> Result<usize, UnreadableDelta> {
        let n = self.u()?;
        match usize::try_from(n) {
            Ok(n) if n <= self.rest.len() => Ok(n),
            _ => Err(cut("a count")),
        }
    }

    fn text(&mut self) -> Result<String, UnreadableDelta> {
        let n = self.len()?;
        let (s, rest) = self.rest.split_at(n);
        self.rest = rest;
        String::from_utf8(s.to_vec()).map_err(|_| cut("a string"))
    }

    fn opt<T>(
        &mut self,
        present: bool,
        read: impl FnOnce(&mut Self) -> Result<T, UnreadableDelta>,
    ) -> Result<Option<T>, UnreadableDelta> {
        if present {
            read(self).map(Some)
        } else {
            Ok(None)
        }
    }

    fn series(&mut self) -> Result<DeltaSeries, UnreadableDelta> {
        let (url, producer) = (self.text()?, self.text()?);
        let f = self.u()?;
        let (since_ms, last_ms) = (self.i()?, self.i()?);
        let last_status = self.opt(bit(f, 2), Self::i32)?;
        let last_error = self.opt(bit(f, 3), Self::text)?;
        let last_error_kind = self.opt(bit(f, 4), Self::text)?;
        let last_elapsed_ms = self.opt(bit(f, 5), Self::i32)?;
        let cert_ms = self.opt(bit(f, 6), Self::i)?;
        let hours = (0..self.len()?)
            .map(|_| self.hour())
            .collect::<Result<_, _>>()?;
        let recent = (0..self.len()?)
            .map(|_| self.recent())
            .collect::<Result<_, _>>()?;
        Ok(DeltaSeries {
            url,
            producer,
            up: bit(f, 0),
            since_ms,
            changed: bit(f, 1),
            last_ms,
            last_status,
            last_error,
            last_error_kind,
            last_elapsed_ms,
            cert_ms,
            hours,
            recent,
        })
    }

    fn hour(&mut self) -> Result<DeltaHour, UnreadableDelta> {
        let (start_ms, checks, up_checks) = (self.i()?, self.i()?, self.i()?);
        let mut error_kinds: KindCounts = Default::default();
        for n in &mut error_kinds {
            *n = self.i()?;
        }
        let hist = (0..self.len()?)
            .map(|_| {
                let bucket = u8::try_from(self.u()?).map_err(|_| cut("a bucket"))?;
                Ok((bucket, self.i()?))
            })
            .collect::<Result<_, _>>()?;
        let f = self.u()?;
        Ok(DeltaHour {
            start_ms,
            checks,
            up_checks,
            error_kinds,
            hist,
            min: self.opt(bit(f, 0), Self::i32)?,
            max: self.opt(bit(f, 1), Self::i32)?,
            last_status: self.opt(bit(f, 2), Self::i32)?,
            sum: self.i()?,
            last_ms: self.i()?,
            maint_checks: self.i()?,
        })
    }

    fn recent(&mut self) -> Result<RecentCheck, UnreadableDelta> {
        let f = self.u()?;
        let at_ms = self.i()?;
        let status = self.opt(bit(f, 1), Self::i32)?;
        let elapsed_ms = self.opt(bit(f, 2), Self::i32)?;
        let error_kind = self.opt(bit(f, 3), Self::text)?;
        let error = self.opt(bit(f, 4), Self::text)?;
        let phases = self.opt(bit(f, 5), |r| {
            let mut phases = [None; 4];
            for p in &mut phases {
                *p = match r.u()? {
                    0 => None,
                    z => Some(i32::try_from(unzigzag(z - 1)).map_err(|_| cut("a phase"))?),
                };
            }
            Ok(phases)
        })?;
        Ok(RecentCheck {
            at_ms,
            up: bit(f, 0),
            status,
            elapsed_ms,
            error_kind,
            error,
            phases,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::tests::input;
    use super::*;
    use crate::consumer::rollup::Rollups;

    /// Deltas with every optional field both set and unset, negative and large numbers.
    fn varied() -> Delta {
        let mut inputs = vec![
            input(1, 0, true, 12),
            input(2, 10, false, 900),
            input(3, 20, false, 40),
        ];
        inputs[1].error = Some("connection refused: ü".into());
        inputs[1].error_kind = Some("connect");
        inputs[1].status = None;
        inputs[1].phases = [Some(3), None, Some(0), Some(-70_000)];
        inputs[2].url = "https://b.example/".into();
        inputs[2].producer = String::new();
        inputs[2].cert_expires_at = chrono::DateTime::from_timestamp_millis(-1);
        inputs[2].elapsed = Some(i32::MAX);
        inputs[2].maintenance = true;
        Rollups::of(&inputs).to_delta()
    }

    #[test]
    fn a_delta_reads_back_as_it_was_written() {
        let delta = varied();
        assert_eq!(Delta::from_stored(&delta.to_stored()), Ok(delta));
        let empty = Delta { series: Vec::new() };
        assert_eq!(Delta::from_stored(&empty.to_stored()), Ok(empty));
    }

    #[test]
    fn a_json_delta_of_an_older_build_still_reads() {
        let delta = varied();
        let json = serde_json::to_vec(&delta).unwrap();
        assert_eq!(json[0], b'{');
        assert_eq!(Delta::from_stored(&json), Ok(delta));
    }

    #[test]
    fn every_cut_or_damaged_body_is_an_error_not_a_panic() {
        let body = varied().to_stored();
        for n in 0..body.len() {
            assert!(Delta::from_stored(&body[..n]).is_err(), "cut at {n} read");
        }
        let mut longer = body.clone();
        longer.push(0);
        assert!(Delta::from_stored(&longer).is_err());
        for i in 1..body.len() {
            let mut damaged = body.clone();
            damaged[i] = 0xff;
            let _ = Delta::from_stored(&damaged);
        }
    }
}
