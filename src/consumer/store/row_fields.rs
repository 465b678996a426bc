//! The fields of an `events` row in PostgreSQL's binary COPY format, written by hand: each
//! is its length (-1 for NULL) and its bytes, big-endian. postgres-types' `ToSql` wrote
//! them before, through a type check and a dynamic call per field: 8.5 % of the fetch
//! thread's CPU (perf, 200,000-event drain). The encodings are PostgreSQL's `*send`
//! functions'; a test holds every one to `ToSql`'s bytes. Pure: no I/O.

use bytes::{BufMut, BytesMut};
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// Why a field cannot be written.
pub(super) type FieldError = String;

/// PostgreSQL's epoch for timestamps (2000-01-01 00:00:00 UTC), in seconds since the
/// Unix epoch.
const PG_EPOCH_SECS: i64 = 946_684_800;

/// Appends fields to a row being written.
pub(super) struct FieldWriter<'a>(pub(super) &'a mut BytesMut);

impl FieldWriter<'_> {
    fn null(&mut self) {
        self.0.put_i32(-1);
    }

    pub(super) fn text(&mut self, v: Option<&str>) -> Result<(), FieldError> {
        let Some(v) = v else {
            self.null();
            return Ok(());
        };
        let len = i32::try_from(v.len())
            .map_err(|_| format!("a field of {} bytes is too large to store", v.len()))?;
        self.0.put_i32(len);
        self.0.put_slice(v.as_bytes());
        Ok(())
    }

    pub(super) fn int4(&mut self, v: Option<i32>) {
        match v {
            Some(v) => {
                self.0.put_i32(4);
                self.0.put_i32(v);
            }
            None => self.null(),
        }
    }

    pub(super) fn int8(&mut self, v: Option<i64>) {
        match v {
            Some(v) => {
                self.0.put_i32(8);
                self.0.put_i64(v);
            }
            None => self.null(),
        }
    }

    pub(super) fn boolean(&mut self, v: bool) {
        self.0.put_i32(1);
        self.0.put_u8(u8::from(v));
    }

    pub(super) fn uuid(&mut self, v: Option<&Uuid>) {
        match v {
            Some(v) => {
                self.0.put_i32(16);
                self.0.put_slice(v.as_bytes());
            }
            None => self.null(),
        }
    }

    /// `timestamp` (UTC wall time) and `timestamptz` alike: microseconds since 2000.
    pub(super) fn time(&mut self, v: Option<&DateTime<Utc>>) -> Result<(), FieldError> {
        let Some(v) = v else {
            self.null();
            return Ok(());
        };
        // Integer arithmetic, rounded toward zero as `ToSql`'s chrono duration is: that
        // duration between two dates was 2 % of the fetch thread's CPU (two per event).
        let nanos = i128::from(v.timestamp() - PG_EPOCH_SECS) * 1_000_000_000
            + i128::from(v.timestamp_subsec_nanos());
        let micros = i64::try_from(nanos / 1000)
            .map_err(|_| format!("the time {v} is out of PostgreSQL's range"))?;
        self.0.put_i32(8);
        self.0.put_i64(micros);
        Ok(())
    }
}
