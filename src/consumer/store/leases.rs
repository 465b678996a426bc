//! Partition leases: PostgreSQL advisory locks held by a consumer's session, so that
//! several consumers share a topic's partitions and a dead one's are taken over.

use std::collections::BTreeSet;

use tokio_postgres::Client;

use super::{StoreError, bounded, sql_error};

/// This consumer's share of a topic's partitions, held as PostgreSQL advisory locks on its
/// session: a consumer that dies (or loses its connection) releases them with its session.
///
/// Each consumer also holds one "member" lock, so that every consumer can count the
/// live members in `pg_locks` and take its fair share: ceil(partitions / members).
pub(crate) struct PartitionLeases {
    topic: String,
    member_key: i32,
    partition_key: i32,
    member_slot: Option<i32>,
    held: BTreeSet<i32>,
}

impl PartitionLeases {
    pub(crate) fn new(topic: &str) -> PartitionLeases {
        // FNV-1a of the topic: a stable lock space per topic, positive so that pg_locks'
        // unsigned classid compares equal.
        let mut h: u32 = 0x811c_9dc5;
        for b in topic.bytes() {
            h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
        }
        let base = (h & 0x3fff_ffff) as i32;
        PartitionLeases {
            topic: topic.to_string(),
            member_key: base,
            partition_key: base | 0x4000_0000,
            member_slot: None,
            held: BTreeSet::new(),
        }
    }

    /// The partitions held now.
    pub(crate) fn held(&self) -> impl Iterator<Item = i32> + '_ {
        self.held.iter().copied()
    }

    /// Forget every lease (the session that held them is gone).
    pub(crate) fn lost(&mut self) {
        self.member_slot = None;
        self.held.clear();
    }

    /// Give one partition back.
    pub(crate) async fn release(
        &mut self,
        client: &Client,
        partition: i32,
    ) -> Result<(), StoreError> {
        if self.held.remove(&partition) {
            let key = self.partition_key;
            bounded("lease release", async {
                client
                    .execute("SELECT pg_advisory_unlock($1, $2)", &[&key, &partition])
                    .await
                    .map_err(|e| sql_error("lease release", &e))
            })
            .await?;
        }
        Ok(())
    }

    /// Take free partitions up to the fair share (all free ones when `greedy`), give back
    /// those above it. Returns the partitions gained and lost.
    pub(crate) async fn rebalance(
        &mut self,
        client: &Client,
        partitions: &[i32],
        greedy: bool,
    ) -> Result<(Vec<i32>, Vec<i32>), StoreError> {
        bounded(
            "lease round",
            self.rebalance_unbounded(client, partitions, greedy),
        )
        .await
    }

    async fn rebalance_unbounded(
        &mut self,
        client: &Client,
        partitions: &[i32],
        greedy: bool,
    ) -> Result<(Vec<i32>, Vec<i32>), StoreError> {
        if self.member_slot.is_none() {
            for slot in 0..4096 {
                if try_lock(client, self.member_key, slot).await? {
                    self.member_slot = Some(slot);
                    break;
                }
            }
        }
        let members: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 2 \
                 AND classid::bigint = $1 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                &[&i64::from(self.member_key)],
            )
            .await
            .map_err(|e| sql_error("lease count", &e))?
            .get(0);
        let members = members.max(1) as usize;
        let share = if greedy {
            partitions.len()
        } else {
            partitions.len().div_ceil(members)
        };
        let mut lost = Vec::new();
        while self.held.len() > share {
            let Some(&p) = self.held.last() else { break };
            self.release(client, p).await?;
            lost.push(p);
        }
        let mut gained = Vec::new();
        for &p in partitions {
            if self.held.len() >= share {
                break;
            }
            if !self.held.contains(&p) && try_lock(client, self.partition_key, p).await? {
                self.held.insert(p);
                gained.push(p);
            }
        }
        if !gained.is_empty() || !lost.is_empty() {
            log::info!(
                "topic {:?}: {members} consumer(s); this one now holds partitions {:?}",
                self.topic,
                self.held
            );
        }
        Ok((gained, lost))
    }
}

async fn try_lock(client: &Client, key: i32, sub: i32) -> Result<bool, StoreError> {
    let row = client
        .query_one("SELECT pg_try_advisory_lock($1, $2)", &[&key, &sub])
        .await
        .map_err(|e| sql_error("lease", &e))?;
    Ok(row.get(0))
}
