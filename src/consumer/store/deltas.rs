//! The rollup deltas as stored in `rollup_deltas`: each written by the transaction whose
//! events it counts ([`add_delta`]), read back in commit order by the folds
//! (`super::rollups`), and read ahead of them while the writer is behind ([`read_ahead`]).
//! Nothing here updates the rollup tables or deletes a delta: that is the fold's, in its
//! one transaction.

use futures_util::StreamExt;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, GenericClient, Transaction};

use super::{StoreError, bounded, sql_error};
use crate::consumer::rollup::{Delta, Folded, Rollups};

/// Store `rollups` as this transaction's delta.
pub(crate) async fn add_delta(
    tx: &Transaction<'_>,
    rollups: &Rollups<'_>,
) -> Result<(), StoreError> {
    if rollups.is_empty() {
        return Ok(());
    }
    let body = rollups.to_stored();
    tx.execute_typed(
        "INSERT INTO rollup_deltas (body) VALUES ($1)",
        &[(&body, Type::BYTEA)],
    )
    .await
    .map(|_| ())
    .map_err(|e| sql_error("rollup delta insert", &e))
}

/// Committed deltas read and merged ahead of their fold (while the writer is behind), so
/// that the fold at the end of a backlog (the last thing a `--drain` waits for) has only
/// the last few left to read: their ids and their merge, in the order they were read.
#[derive(Default)]
pub(crate) struct ReadAhead {
    pub(super) ids: Vec<i64>,
    pub(super) folded: Folded,
}

/// Read and merge into `ahead` the committed deltas it does not hold yet, up to `most`
/// held. Outside a transaction: a committed delta never changes, and one that another
/// consumer folds meanwhile is found gone by the fold, which then reads the table again.
pub(crate) async fn read_ahead(
    client: &Client,
    ahead: &mut ReadAhead,
    most: i64,
) -> Result<(), StoreError> {
    let room = most - ahead.ids.len() as i64;
    if room <= 0 {
        return Ok(());
    }
    let folded = &mut ahead.folded;
    let read = bounded(
        "rollup read-ahead",
        read_deltas(client, (&ahead.ids, room), false, |d| folded.add(d)),
    )
    .await;
    match read {
        Ok(ids) => {
            ahead.ids.extend(ids);
            Ok(())
        }
        // Cut short, the merge holds deltas whose ids were not returned: a fold would add
        // them again. Dropped; the fold reads them from the table.
        Err(e) => {
            *ahead = ReadAhead::default();
            Err(e)
        }
    }
}

/// The oldest `most` deltas but the `held` ones, handed to `take` in order as they arrive,
/// one at a time (a fold's memory is its merge and one delta, however many it folds);
/// returns their ids. A row that is not one of ours (written by hand?) is left in place,
/// said at every fold (`say`; not at every read-ahead).
pub(super) async fn read_deltas(
    client: &impl GenericClient,
    (held, most): (&[i64], i64),
    say: bool,
    mut take: impl FnMut(Delta),
) -> Result<Vec<i64>, StoreError> {
    let fail = |e: tokio_postgres::Error| sql_error("rollup fold", &e);
    let params: [&(dyn ToSql + Sync); 2] = [&held, &most];
    let rows = client
        .query_raw(
            "SELECT id, body FROM rollup_deltas WHERE id <> ALL($1) ORDER BY id LIMIT $2",
            params,
        )
        .await
        .map_err(fail)?;
    let mut rows = std::pin::pin!(rows);
    let mut ids = Vec::new();
    while let Some(row) = rows.next().await {
        let row = row.map_err(fail)?;
        let id: i64 = row.try_get(0).map_err(fail)?;
        match Delta::from_stored(row.try_get(1).map_err(fail)?) {
            Ok(delta) => {
                ids.push(id);
                take(delta);
            }
            Err(e) if say => {
                log::error!("rollup_deltas row {id} cannot be read ({e}): left in place")
            }
            Err(_) => {}
        }
    }
    Ok(ids)
}
