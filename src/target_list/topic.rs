//! The targets topic itself: open (creating it compacted when asked), read to the end,
//! wait for what comes next, write changes. Every request is bounded.
//!
//! Read as the consumer reads the events (`kafka::fetch`, read-committed): a list written
//! in Kafka transactions is read as committed, its markers passed.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rskafka::client::Client;
use rskafka::client::partition::{Compression, OffsetAt, PartitionClient};
use rskafka::record::Record;

use super::{Entries, Listed};
use crate::kafka::fetch::{FetchError, LeaderFetch};
use crate::kafka::record_batch::FetchedRecord;
use crate::kafka::{self, KafkaError, KafkaSettings};

/// Time allowed to connect to the cluster.
const CONNECT_WITHIN: Duration = Duration::from_secs(20);
/// Most bytes a fetch brings.
const FETCH_BYTES: i32 = 4 << 20;
/// Most bytes of records in one produce request (brokers refuse over 1 MB by default).
const PRODUCE_BYTES: usize = 512 << 10;

/// One partition of the topic and where reading it is.
struct Partition {
    /// Writes go through rskafka.
    client: PartitionClient,
    /// Reads, over a connection of their own to the partition's leader.
    reader: LeaderFetch,
    /// The next offset to read.
    next: i64,
    /// The partition's end at the last answer.
    end: i64,
}

/// The targets topic, open.
pub struct ListTopic {
    name: String,
    partitions: Vec<Partition>,
}

impl ListTopic {
    /// Connect and open `topic`. With `create` (writers), a missing topic is created
    /// compacted (with `replication` replicas, -1: the broker's default); without, it is
    /// [`KafkaError::NoTopic`].
    pub async fn open(
        settings: &KafkaSettings,
        topic: &str,
        create: Option<i16>,
    ) -> Result<ListTopic, KafkaError> {
        let client = kafka::connect(settings, CONNECT_WITHIN).await?;
        let count = match create {
            Some(replication) => {
                kafka::ensure_compacted_topic(&client, settings, topic, replication).await?
            }
            None => match kafka::topic_partitions(&client, topic).await? {
                Some(p) if !p.is_empty() => p.len() as i32,
                _ => {
                    return Err(KafkaError::NoTopic {
                        topic: topic.to_string(),
                    });
                }
            },
        };
        Self::with_partitions(&client, (settings, topic), count).await
    }

    async fn with_partitions(
        client: &Client,
        (settings, topic): (&KafkaSettings, &str),
        count: i32,
    ) -> Result<ListTopic, KafkaError> {
        let settings = Arc::new(settings.clone());
        let mut partitions = Vec::with_capacity(count as usize);
        for p in 0..count {
            let client = kafka::partition_client(client, topic, p).await?;
            let mut reader = LeaderFetch::new(settings.clone(), topic, p);
            let next = offset(&mut reader, OffsetAt::Earliest).await?;
            partitions.push(Partition {
                client,
                reader,
                next,
                end: next,
            });
        }
        Ok(ListTopic {
            name: topic.to_string(),
            partitions,
        })
    }

    /// Read every partition up to its end as of now into `list`; the URLs that changed.
    pub async fn read_to_end(&mut self, list: &mut Entries) -> Result<Vec<String>, KafkaError> {
        let mut changed = Vec::new();
        for p in &mut self.partitions {
            p.end = offset(&mut p.reader, OffsetAt::Latest).await?;
            while p.next < p.end {
                let before = p.next;
                changed.extend(p.fetch(list, 0).await?);
                if p.next == before {
                    break;
                }
            }
        }
        Ok(changed)
    }

    /// Wait up to `wait` for records after those read, and apply them to `list`; the URLs
    /// that changed (none when nothing came).
    pub async fn poll(
        &mut self,
        list: &mut Entries,
        wait: Duration,
    ) -> Result<Vec<String>, KafkaError> {
        let each = (wait.as_millis() as i32 / self.partitions.len().max(1) as i32).max(10);
        let mut changed = Vec::new();
        for p in &mut self.partitions {
            changed.extend(p.fetch(list, each).await?);
        }
        Ok(changed)
    }

    /// Records written and not read yet, as of the last answers.
    pub fn lag(&self) -> i64 {
        self.partitions
            .iter()
            .map(|p| (p.end - p.next).max(0))
            .sum()
    }

    /// Write `changes` (URL, entry JSON or None to remove), each to its key's partition.
    pub async fn write(&self, changes: &[(String, Option<Vec<u8>>)]) -> Result<(), KafkaError> {
        let count = self.partitions.len() as i32;
        for (index, p) in self.partitions.iter().enumerate() {
            let mut batch = Vec::new();
            let mut bytes = 0;
            let mine = changes
                .iter()
                .filter(|(url, _)| kafka::partition_for(url.as_bytes(), count) == index as i32);
            for (url, entry) in mine {
                bytes += url.len() + entry.as_ref().map_or(0, Vec::len) + 64;
                batch.push(Record {
                    key: Some(url.as_bytes().to_vec()),
                    value: entry.clone(),
                    headers: Default::default(),
                    timestamp: Utc::now(),
                });
                if bytes >= PRODUCE_BYTES {
                    kafka::produce(
                        &p.client,
                        std::mem::take(&mut batch),
                        Compression::NoCompression,
                    )
                    .await?;
                    bytes = 0;
                }
            }
            if !batch.is_empty() {
                kafka::produce(&p.client, batch, Compression::NoCompression).await?;
            }
        }
        Ok(())
    }

    /// The topic's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Partition {
    /// One fetch from `next`, waiting up to `wait_ms` for a record; applied to `list`.
    async fn fetch(&mut self, list: &mut Entries, wait_ms: i32) -> Result<Vec<String>, KafkaError> {
        let fetch = self.reader.fetch(self.next, FETCH_BYTES, wait_ms);
        let bound = Duration::from_millis(wait_ms as u64) + kafka::REQUEST_TIMEOUT;
        let fetched = match tokio::time::timeout(bound, fetch).await {
            Err(_) => {
                return Err(KafkaError::Request {
                    what: "fetch of the targets topic".into(),
                    detail: format!("no answer within {} s", bound.as_secs()),
                });
            }
            // Compaction or retention removed what was to be read next: go on from the start.
            Ok(Err(FetchError::OffsetOutOfRange)) => {
                self.next = offset(&mut self.reader, OffsetAt::Earliest).await?;
                return Ok(Vec::new());
            }
            Ok(Err(FetchError::Failed(detail))) => {
                return Err(KafkaError::Request {
                    what: "fetch of the targets topic".into(),
                    detail,
                });
            }
            Ok(Ok(fetched)) => fetched,
        };
        self.end = fetched.readable_end;
        let mut changed = Vec::new();
        for r in fetched.records {
            if r.offset < self.next {
                continue;
            }
            self.next = r.offset + 1;
            if let Some(url) = apply(list, r) {
                changed.push(url);
            }
        }
        // Past markers and aborted transactions too: they hold no entry.
        self.next = self.next.max(fetched.next_offset);
        Ok(changed)
    }
}

/// One record into `list`: its URL when it changed something. A record without a
/// UTF-8 key is no target (said once per record).
fn apply(list: &mut Entries, r: FetchedRecord) -> Option<String> {
    let key = r.key.unwrap_or_default();
    let Ok(url) = String::from_utf8(key.to_vec()) else {
        log::error!(
            "targets topic: the record at offset {} has no UTF-8 key (a URL): skipped",
            r.offset
        );
        return None;
    };
    let listed = Listed {
        entry: r.value.filter(|v| !v.is_empty()).map(|v| v.to_vec()),
        at: DateTime::from_timestamp_millis(r.timestamp_ms).unwrap_or(DateTime::UNIX_EPOCH),
    };
    if list.get(&url).map(|l| &l.entry) == Some(&listed.entry) {
        return None;
    }
    list.insert(url.clone(), listed);
    Some(url)
}

/// The partition's first offset, or its end for a committed read, bounded.
async fn offset(reader: &mut LeaderFetch, at: OffsetAt) -> Result<i64, KafkaError> {
    reader
        .offset(at, kafka::REQUEST_TIMEOUT)
        .await
        .map_err(|e| KafkaError::Request {
            what: "offsets of the targets topic".into(),
            detail: e.to_string(),
        })
}
