//! A [`Delta`]'s stored form in `rollup_deltas.body`: a compact binary encoding written by
//! every transaction and read back by every fold. It replaced JSON there because
//! serde_json's writing and reading of the deltas was a fifth of the writer thread's CPU
//! (perf, 200,000-event drain). Deltas committed by an older build (JSON, starting with
//! `{`) are still read. Pure: it never does I/O, and a malformed body is an error, never
//! a panic (the table can be written by hand).
//!
//! Layout: the byte [`MAGIC`] ([`MAGIC_WITH_HISTORY`] when a series has no state), then
//! the series. Integers are LEB128 varints (signed ones zigzagged), a string is its length
//! and its UTF-8 bytes, an optional is a flag bit.

use chrono::{DateTime, Utc};

use super::{Delta, DeltaHour, DeltaSeries};
use crate::consumer::rollup::{
    Bucket, KindCounts, RECENT_ERROR_CHARS, RecentCheck, RollupInput, Rollups, SeriesState,
};

/// First byte of a binary delta; never the first byte of JSON.
const MAGIC: u8 = 0xD1;

/// First byte of a binary delta holding a series with history only (the checks of a
/// removed target: hours, no state; flag bit 7). Written only then, so that an older
/// build, which cannot read it, leaves it in place rather than fold it wrong.
const MAGIC_WITH_HISTORY: u8 = 0xD2;

/// A series' flag: history only, no state follows.
const HISTORY_ONLY: u32 = 7;

/// Why a stored delta cannot be read.
#[derive(Debug, PartialEq)]
pub(crate) struct UnreadableDelta(String);

impl std::fmt::Display for UnreadableDelta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Rollups<'_> {
    /// The bytes of their delta, stored in `rollup_deltas.body` (read back as the
    /// [`Delta`] they make), written straight from the transaction's rollups.
    pub(crate) fn to_stored(&self) -> Vec<u8> {
        let mut w = Writer(Vec::with_capacity(64 + 320 * self.series.len()));
        let history = self.series.values().any(|s| s.state.is_none());
        w.0.push(if history { MAGIC_WITH_HISTORY } else { MAGIC });
        w.u(self.series.len() as u64);
        for (key, s) in &self.series {
            w.series(*key, s.state.as_ref(), &s.hours, &s.newest);
        }
        w.0
    }
}

impl Delta {
    /// A delta read back from `rollup_deltas.body`: binary, or JSON of an older build.
    pub(crate) fn from_stored(body: &[u8]) -> Result<Delta, UnreadableDelta> {
        match body.first() {
            Some(&(MAGIC | MAGIC_WITH_HISTORY)) => {
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

    fn series(
        &mut self,
        (url, producer): (&str, &str),
        state: Option<&SeriesState>,
        hours: &[(DateTime<Utc>, Bucket)],
        newest: &[Option<&RollupInput>],
    ) {
        self.text(url);
        self.text(producer);
        match state {
            Some(s) => self.state(s),
            None => self.u(1 << HISTORY_ONLY),
        }
        self.u(hours.len() as u64);
        for (start, b) in hours {
            self.hour(*start, b);
        }
        self.u(newest.iter().flatten().count() as u64);
        for e in newest.iter().flatten() {
            self.recent(e);
        }
    }

    /// A series' state: its flags, then its fields.
    fn state(&mut self, s: &SeriesState) {
        let flags = bits(&[
            s.up,
            s.changed,
            s.last_status.is_some(),
            s.last_error.is_some(),
            s.last_error_kind.is_some(),
            s.last_elapsed_ms.is_some(),
            s.cert_expires_at.is_some(),
        ]);
        self.u(flags);
        self.i(s.since.timestamp_millis());
        self.i(s.last_checked_at.timestamp_millis());
        self.opt_i(s.last_status.map(i64::from));
        self.opt_text(s.last_error.as_deref());
        self.opt_text(s.last_error_kind);
        self.opt_i(s.last_elapsed_ms.map(i64::from));
        self.opt_i(s.cert_expires_at.map(|t| t.timestamp_millis()));
    }

    fn hour(&mut self, start: DateTime<Utc>, b: &Bucket) {
        self.i(start.timestamp_millis());
        self.i(b.checks);
        self.i(b.up_checks);
        for n in b.error_kinds {
            self.i(n);
        }
        let hist = b.latency_hist.iter().enumerate().filter(|(_, n)| **n != 0);
        self.u(hist.clone().count() as u64);
        for (bucket, n) in hist {
            self.u(bucket as u64);
            self.i(*n);
        }
        self.u(bits(&[
            b.latency_min_ms.is_some(),
            b.latency_max_ms.is_some(),
            b.last_status.is_some(),
        ]));
        self.opt_i(b.latency_min_ms.map(i64::from));
        self.opt_i(b.latency_max_ms.map(i64::from));
        self.opt_i(b.last_status.map(i64::from));
        self.i(b.latency_sum_ms);
        self.i(b.last_checked_at.timestamp_millis());
        self.i(b.maint_checks);
    }

    /// A check as [`RecentCheck::of`] makes it (its error cut to its first characters).
    fn recent(&mut self, e: &RollupInput) {
        let phases = e.phases.iter().any(Option::is_some);
        let flags = bits(&[
            e.up,
            e.status.is_some(),
            e.elapsed.is_some(),
            e.error_kind.is_some(),
            e.error.is_some(),
            phases,
        ]);
        self.u(flags);
        self.i(e.ts.timestamp_millis());
        self.opt_i(e.status.map(i64::from));
        self.opt_i(e.elapsed.map(i64::from));
        self.opt_text(e.error_kind);
        self.opt_text(e.error.as_deref().map(|t| {
            let end = t
                .char_indices()
                .nth(RECENT_ERROR_CHARS)
                .map_or(t.len(), |(i, _)| i);
            &t[..end]
        }));
        if phases {
            for phase in e.phases {
                // 0: not timed; else the time (zigzagged) + 1.
                self.u(phase.map_or(0, |ms| zigzag(ms.into()) + 1));
            }
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
    /// A number; most are one byte, read without the loop (9 % of a fold's CPU was here).
    #[inline]
    fn u(&mut self) -> Result<u64, UnreadableDelta> {
        match self.rest.split_first() {
            Some((&b, rest)) if b < 0x80 => {
                self.rest = rest;
                Ok(u64::from(b))
            }
            _ => self.u_long(),
        }
    }

    fn u_long(&mut self) -> Result<u64, UnreadableDelta> {
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
        let history_only = bit(f, HISTORY_ONLY);
        let (since_ms, last_ms) = match history_only {
            true => (0, 0),
            false => (self.i()?, self.i()?),
        };
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
            history_only,
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
mod tests;
