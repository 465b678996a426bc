//! What checksite needs of the PostgreSQL server itself, checked at start: a version new
//! enough for its SQL, and its `TimeZone` where the Python program's rows depend on it.
//!
//! This module only reads the server's settings; it never changes them or the schema.

use tokio_postgres::Client;

use super::{StoreError, bounded, sql_error};

/// The oldest PostgreSQL this build runs on (as `server_version_num`): a fold slices each
/// series' newest checks with a jsonpath (`jsonb_path_query_array`), new in 12.
const OLDEST_SERVER: i32 = 120_000;

/// Refuse an older server than [`OLDEST_SERVER`] before touching its schema: said at start,
/// with what to do, rather than as a function missing at the first fold.
pub(crate) async fn require_supported_server(client: &Client) -> Result<(), StoreError> {
    let what = "reading the server's version";
    let (number, shown) = bounded(what, async {
        let row = client
            .query_one(
                "SELECT current_setting('server_version_num'), current_setting('server_version')",
                &[],
            )
            .await
            .map_err(|e| sql_error(what, &e))?;
        Ok((row.get::<_, String>(0), row.get::<_, String>(1)))
    })
    .await?;
    // Said as the URL's problem: it points at a server this build cannot use.
    match too_old(&number, &shown) {
        Some(why) => Err(StoreError::Url(format!("CK_POSTGRESQL_URL: {why}"))),
        None => Ok(()),
    }
}

/// Why the server of `server_version_num` `number` cannot be used; None when it can. A
/// number that does not parse is let through (a fork's own scheme: the first fold says).
fn too_old(number: &str, shown: &str) -> Option<String> {
    let number: i32 = number.trim().parse().ok()?;
    (number < OLDEST_SERVER).then(|| {
        format!(
            "PostgreSQL {shown} is too old: checksite needs PostgreSQL 12 or later; upgrade the server or point CK_POSTGRESQL_URL at a newer one"
        )
    })
}

/// The server's `TimeZone`, when it is not UTC: `events.ts` is a `timestamp` (the Python
/// program's type) that checksite fills in UTC, and the Python program filled in this zone.
pub(crate) async fn non_utc_timezone(client: &Client) -> Result<Option<String>, StoreError> {
    bounded("reading TimeZone", async {
        let row = client
            .query_one(
                // Winter and summer both: a zone can equal UTC half of the year.
                "SELECT current_setting('TimeZone'), \
                 '2000-01-15 12:00+00'::timestamptz::timestamp = '2000-01-15 12:00' \
                 AND '2000-07-15 12:00+00'::timestamptz::timestamp = '2000-07-15 12:00'",
                &[],
            )
            .await
            .map_err(|e| sql_error("reading TimeZone", &e))?;
        let zone: String = row.get(0);
        let utc: bool = row.get(1);
        Ok((!utc).then_some(zone))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::too_old;

    #[test]
    fn servers_before_12_are_refused_with_what_to_do() {
        let refused = too_old("110022", "11.22").unwrap();
        assert!(
            refused
                .starts_with("PostgreSQL 11.22 is too old: checksite needs PostgreSQL 12 or later"),
            "{refused}"
        );
        assert!(too_old("90624", "9.6.24").is_some());
        for (number, shown) in [("120000", "12.0"), ("150010", "15.10"), ("180001", "18.1")] {
            assert_eq!(too_old(number, shown), None, "{shown}");
        }
        // A number that does not parse is not a reason to refuse.
        assert_eq!(too_old("", "?"), None);
    }
}
