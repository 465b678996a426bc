//! Fetching one partition from its leader over a connection of our own, the answer read
//! by [`super::record_batch`] without a copy per record, and asking the same leader over
//! the same connection where the partition's log starts and ends (ListOffsets). rskafka's
//! `PartitionClient` stays for everything else (producing, reading one record again).
//!
//! It owns finding the partition's leader (a Metadata request), the connection to it, the
//! Fetch request (v4, as rskafka sends it) and the reading of its answer. It never waits
//! without a bound of the caller's: what a reconnection may fix (the leader moved, the
//! broker restarted) is retried here, silently, with backoff, until the caller's timeout,
//! as rskafka's own fetch does; anything else is returned.

use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rskafka::client::partition::OffsetAt;
use rskafka::protocol::api_key::ApiKey;
use rskafka::protocol::api_version::{ApiVersion, ApiVersionRange};
use rskafka::protocol::error::Error as ProtocolError;
use rskafka::protocol::messages::{
    FetchRequest, FetchRequestPartition, FetchRequestTopic, IsolationLevel, ListOffsetsRequest,
    ListOffsetsRequestPartition, ListOffsetsRequestTopic, ListOffsetsResponse, MetadataRequest,
    MetadataRequestTopic, ReadVersionedError, ReadVersionedType, RequestBody, WriteVersionedError,
    WriteVersionedType,
};
use rskafka::protocol::primitives::{Int16, Int32, Int64, String_};
use rskafka::protocol::traits::ReadError;

use super::KafkaSettings;
use super::broker::{Broker, broker};
use super::record_batch::{self, AbortedTransaction, FetchedRecord};

/// What one fetch brought.
pub(crate) struct Fetched {
    /// The records at or after the position asked for, in offset order.
    pub(crate) records: Vec<FetchedRecord>,
    /// The partition's end for a read of committed records, as the leader saw it: its
    /// last stable offset (the first record of a transaction still open), which is its
    /// high watermark (the offset after its last record) when none is open. Kafka's own
    /// read-committed consumer counts its lag to it too.
    pub(crate) readable_end: i64,
    /// Where the next fetch starts: past the last whole batch of the answer, records or
    /// not (a transaction's marker, an aborted transaction's batches).
    pub(crate) next_offset: i64,
}

/// Longest wait for one bootstrap server (and the leader it names) to be connected.
const SERVER_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a fetch failed.
#[derive(Debug)]
pub(crate) enum FetchError {
    /// The position is outside the partition's log.
    OffsetOutOfRange,
    /// Anything else, said as it is.
    Failed(String),
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchError::OffsetOutOfRange => f.write_str("offset out of range"),
            FetchError::Failed(why) => f.write_str(why),
        }
    }
}

/// One attempt's failure: worth a new connection and another try, or not.
enum Attempt {
    Retry(String),
    Final(FetchError),
}

/// The fetching of one partition, with its connection to the leader once made.
pub(crate) struct LeaderFetch {
    settings: Arc<KafkaSettings>,
    topic: String,
    partition: i32,
    leader: Option<Broker>,
}

impl LeaderFetch {
    /// Fetching of `partition` of `topic`; nothing is connected before the first fetch.
    pub(crate) fn new(settings: Arc<KafkaSettings>, topic: &str, partition: i32) -> Self {
        LeaderFetch {
            settings,
            topic: topic.to_string(),
            partition,
            leader: None,
        }
    }

    /// Records at or after `offset`, about `max_bytes` of them (a first batch larger than
    /// that comes whole), the leader waiting up to `wait_ms` for some to come.
    pub(crate) async fn fetch(
        &mut self,
        offset: i64,
        max_bytes: i32,
        wait_ms: i32,
    ) -> Result<Fetched, FetchError> {
        let mut backoff = Duration::from_millis(100);
        loop {
            let attempt = self.fetch_once(offset, max_bytes, wait_ms).await;
            if let Some(done) = self.retried("fetch", attempt, &mut backoff).await {
                return done;
            }
        }
    }

    /// Where the partition's log starts (`Earliest`) or ends (`Latest`: the offset the
    /// next record will have), as its leader says. Retried as a fetch is, `within` a bound.
    pub(crate) async fn offset(
        &mut self,
        at: OffsetAt,
        within: Duration,
    ) -> Result<i64, FetchError> {
        let asking = async {
            let mut backoff = Duration::from_millis(100);
            loop {
                let attempt = self.offset_once(at).await;
                if let Some(done) = self.retried("list offsets", attempt, &mut backoff).await {
                    return done;
                }
            }
        };
        match tokio::time::timeout(within, asking).await {
            Ok(answer) => answer,
            Err(_) => Err(FetchError::Failed(format!(
                "list offsets: no answer within {} s",
                within.as_secs()
            ))),
        }
    }

    /// An attempt's outcome, or None after the pause before the next one.
    async fn retried<T>(
        &self,
        what: &str,
        attempt: Result<T, Attempt>,
        backoff: &mut Duration,
    ) -> Option<Result<T, FetchError>> {
        match attempt {
            Ok(answer) => Some(Ok(answer)),
            Err(Attempt::Final(e)) => Some(Err(e)),
            Err(Attempt::Retry(why)) => {
                log::debug!("partition {}: {what}: {why}; reconnecting", self.partition);
                tokio::time::sleep(*backoff).await;
                *backoff = (*backoff * 2).min(Duration::from_secs(2));
                None
            }
        }
    }

    /// One request to the leader, connected first if need be. The connection is taken
    /// while the request is under way: a request given up half-way (the caller's timeout)
    /// takes it along, and the next attempt starts clean.
    async fn ask<R>(&mut self, request: R) -> Result<R::ResponseBody, Attempt>
    where
        R: RequestBody + Send + WriteVersionedType<Vec<u8>>,
        R::ResponseBody: ReadVersionedType<Cursor<Vec<u8>>>,
    {
        let leader = match self.leader.take() {
            Some(leader) => leader,
            None => self.connect_leader().await.map_err(Attempt::Retry)?,
        };
        let answer = leader
            .request(request)
            .await
            .map_err(|e| Attempt::Retry(crate::error_chain(&e)))?;
        self.leader = Some(leader);
        Ok(answer)
    }

    /// A partition error: the connection dropped (the leader may have moved), and whether
    /// to try again.
    fn partition_error(&mut self, code: i16) -> Attempt {
        let why = ProtocolError::new(code).map_or(format!("error {code}"), |e| e.to_string());
        self.leader = None;
        match retriable(code) {
            true => Attempt::Retry(why),
            false => Attempt::Final(FetchError::Failed(why)),
        }
    }

    async fn offset_once(&mut self, at: OffsetAt) -> Result<i64, Attempt> {
        let timestamp = match at {
            OffsetAt::Earliest => -2,
            OffsetAt::Latest => -1,
            OffsetAt::Timestamp(t) => t.timestamp_millis(),
        };
        let request = ListOffsetsRequest {
            replica_id: Int32(-1),
            isolation_level: Some(IsolationLevel::ReadCommitted),
            topics: vec![ListOffsetsRequestTopic {
                name: String_(self.topic.clone()),
                partitions: vec![ListOffsetsRequestPartition {
                    partition_index: Int32(self.partition),
                    timestamp: Int64(timestamp),
                    max_num_offsets: Some(Int32(1)),
                }],
            }],
        };
        let answer = self.ask(request).await?;
        match listed_offset(&answer, &self.topic, self.partition) {
            Ok(offset) => Ok(offset),
            Err(Listed::Error(code)) => Err(self.partition_error(code)),
            Err(Listed::Malformed(why)) => Err(Attempt::Final(FetchError::Failed(why))),
        }
    }

    async fn fetch_once(
        &mut self,
        offset: i64,
        max_bytes: i32,
        wait_ms: i32,
    ) -> Result<Fetched, Attempt> {
        let request = RawFetch(FetchRequest {
            replica_id: Int32(-1),
            max_wait_ms: Int32(wait_ms),
            min_bytes: Int32(1),
            max_bytes: Some(Int32(max_bytes)),
            isolation_level: Some(IsolationLevel::ReadCommitted),
            topics: vec![FetchRequestTopic {
                topic: String_(self.topic.clone()),
                partitions: vec![FetchRequestPartition {
                    partition: Int32(self.partition),
                    fetch_offset: Int64(offset),
                    partition_max_bytes: Int32(max_bytes),
                }],
            }],
        });
        let answer = self.ask(request).await?;
        let answer = partition_answer(&answer.0, &self.topic, self.partition)
            .map_err(|e| Attempt::Final(FetchError::Failed(e)))?;
        match answer.error {
            0 => {}
            1 => return Err(Attempt::Final(FetchError::OffsetOutOfRange)),
            code => return Err(self.partition_error(code)),
        }
        let mut records = Vec::new();
        let next_offset =
            record_batch::read_records(&answer.records, (offset, &answer.aborted), &mut records)
                .map_err(|e| Attempt::Final(FetchError::Failed(e.0)))?;
        Ok(Fetched {
            records,
            readable_end: answer.readable_end(),
            next_offset,
        })
    }

    /// A connection to the partition's leader, found through the first bootstrap server
    /// that answers (kept when it is the leader itself).
    async fn connect_leader(&self) -> Result<Broker, String> {
        let mut last = String::from("no bootstrap server");
        for server in &self.settings.servers {
            // Bounded per server, so that one that hangs leaves time for the next.
            match tokio::time::timeout(SERVER_TIMEOUT, self.leader_via(server)).await {
                Ok(Ok(leader)) => return Ok(leader),
                Ok(Err(e)) => last = e,
                Err(_) => {
                    last = format!("{server}: no answer within {} s", SERVER_TIMEOUT.as_secs())
                }
            }
        }
        Err(last)
    }

    async fn leader_via(&self, server: &str) -> Result<Broker, String> {
        let bootstrap = broker(&self.settings, server).await?;
        let metadata = bootstrap
            .request(MetadataRequest {
                topics: Some(vec![MetadataRequestTopic {
                    name: String_(self.topic.clone()),
                }]),
                allow_auto_topic_creation: None,
            })
            .await
            .map_err(|e| format!("{server}: metadata: {}", crate::error_chain(&e)))?;
        let leader = metadata
            .topics
            .iter()
            .filter(|t| t.name.0 == self.topic)
            .flat_map(|t| &t.partitions)
            .find(|p| p.partition_index.0 == self.partition)
            .map(|p| p.leader_id.0);
        let address = metadata
            .brokers
            .iter()
            .find(|b| Some(b.node_id.0) == leader)
            .map(|b| format!("{}:{}", b.host.0, b.port.0))
            .ok_or_else(|| format!("{server}: partition {} has no leader now", self.partition))?;
        if address == server {
            return Ok(bootstrap);
        }
        broker(&self.settings, &address).await
    }
}

/// Why a ListOffsets answer gave no offset.
#[derive(Debug, PartialEq)]
enum Listed {
    /// The partition's error code.
    Error(i16),
    /// Not the answer asked for.
    Malformed(String),
}

/// The offset for `partition` of `topic` in a ListOffsets answer (v0's one-offset list,
/// or v1's offset).
fn listed_offset(answer: &ListOffsetsResponse, topic: &str, partition: i32) -> Result<i64, Listed> {
    let found = answer
        .topics
        .iter()
        .filter(|t| t.name.0 == topic)
        .flat_map(|t| &t.partitions)
        .find(|p| p.partition_index.0 == partition)
        .ok_or_else(|| {
            Listed::Malformed(format!(
                "the offsets answer holds no partition {partition} of {topic:?}"
            ))
        })?;
    if let Some(e) = found.error_code {
        return Err(Listed::Error(Int16::from(Some(e)).0));
    }
    let old_style = found
        .old_style_offsets
        .as_ref()
        .and_then(|o| o.0.as_deref());
    match (found.offset, old_style) {
        (Some(offset), _) => Ok(offset.0),
        (None, Some([offset])) => Ok(offset.0),
        _ => Err(Listed::Malformed(
            "the offsets answer holds no offset".into(),
        )),
    }
}

/// Errors that go away with a new leader or a new connection.
fn retriable(code: i16) -> bool {
    // UNKNOWN_TOPIC_OR_PARTITION, LEADER_NOT_AVAILABLE, NOT_LEADER_OR_FOLLOWER,
    // REQUEST_TIMED_OUT, BROKER_NOT_AVAILABLE, REPLICA_NOT_AVAILABLE, NETWORK_EXCEPTION,
    // KAFKA_STORAGE_ERROR, FENCED_LEADER_EPOCH, UNKNOWN_LEADER_EPOCH, OFFSET_NOT_AVAILABLE.
    matches!(code, 3 | 5 | 6 | 7 | 8 | 9 | 13 | 56 | 74 | 75 | 78)
}

/// rskafka's Fetch request, its answer kept as bytes (rskafka's own answer type would
/// copy every record).
struct RawFetch(FetchRequest);

impl RequestBody for RawFetch {
    type ResponseBody = RawFetchAnswer;
    const API_KEY: ApiKey = ApiKey::Fetch;
    const API_VERSION_RANGE: ApiVersionRange = <FetchRequest as RequestBody>::API_VERSION_RANGE;
    const FIRST_TAGGED_FIELD_IN_REQUEST_VERSION: ApiVersion =
        <FetchRequest as RequestBody>::FIRST_TAGGED_FIELD_IN_REQUEST_VERSION;
}

impl WriteVersionedType<Vec<u8>> for RawFetch {
    fn write_versioned(
        &self,
        writer: &mut Vec<u8>,
        version: ApiVersion,
    ) -> Result<(), WriteVersionedError> {
        self.0.write_versioned(writer, version)
    }
}

/// A Fetch answer's body (after its header), as it came.
struct RawFetchAnswer(Bytes);

impl ReadVersionedType<Cursor<Vec<u8>>> for RawFetchAnswer {
    fn read_versioned(
        reader: &mut Cursor<Vec<u8>>,
        _version: ApiVersion,
    ) -> Result<Self, ReadVersionedError> {
        // The frame is taken, not copied (it can be megabytes). The messenger then checks
        // that the whole frame was read, position against length: an empty cursor at 0.
        let start = usize::try_from(reader.position()).unwrap_or(usize::MAX);
        let frame = Bytes::from(std::mem::take(reader.get_mut()));
        reader.set_position(0);
        if start > frame.len() {
            let cut = "a fetch answer shorter than its header".into();
            return Err(ReadVersionedError::ReadError(ReadError::Malformed(cut)));
        }
        Ok(RawFetchAnswer(frame.slice(start..)))
    }
}

/// One partition's part of a Fetch answer.
#[derive(Debug, PartialEq)]
struct PartitionAnswer {
    error: i16,
    high_watermark: i64,
    last_stable: i64,
    aborted: Vec<AbortedTransaction>,
    records: Bytes,
}

impl PartitionAnswer {
    /// See [`Fetched::readable_end`]; the high watermark from a broker that does not
    /// know the last stable offset (-1).
    fn readable_end(&self) -> i64 {
        if self.last_stable < 0 {
            self.high_watermark
        } else {
            self.last_stable.min(self.high_watermark)
        }
    }
}

/// `partition` of `topic` in a Fetch v4 answer's body.
fn partition_answer(body: &Bytes, topic: &str, partition: i32) -> Result<PartitionAnswer, String> {
    let mut r = AnswerReader { body, at: 0 };
    r.take(4)?; // throttle time
    for _ in 0..r.i32()?.max(0) {
        let name_length = r.i16()?.max(0) as usize;
        let name = &body[r.take(name_length)?];
        for _ in 0..r.i32()?.max(0) {
            let index = r.i32()?;
            let error = r.i16()?;
            let high_watermark = r.i64()?;
            let last_stable = r.i64()?;
            let mut aborted = Vec::new();
            for _ in 0..r.i32()?.max(0) {
                let producer_id = r.i64()?;
                let first_offset = r.i64()?;
                aborted.push(AbortedTransaction {
                    producer_id,
                    first_offset,
                });
            }
            let length = r.i32()?;
            let records = r.take(length.max(0) as usize)?;
            if name == topic.as_bytes() && index == partition {
                return Ok(PartitionAnswer {
                    error,
                    high_watermark,
                    last_stable,
                    aborted,
                    records: body.slice(records),
                });
            }
        }
    }
    Err(format!(
        "the fetch answer holds no partition {partition} of {topic:?}"
    ))
}

/// Reads a Fetch answer's fields, every length checked against what is there.
struct AnswerReader<'a> {
    body: &'a Bytes,
    at: usize,
}

impl AnswerReader<'_> {
    /// The next `n` bytes' range (into the body).
    fn take(&mut self, n: usize) -> Result<std::ops::Range<usize>, String> {
        if self.body.len() - self.at < n {
            return Err("a fetch answer cut short".into());
        }
        self.at += n;
        Ok(self.at - n..self.at)
    }
    fn i16(&mut self) -> Result<i16, String> {
        let r = self.take(2)?;
        Ok(i16::from_be_bytes([
            self.body[r.start],
            self.body[r.start + 1],
        ]))
    }
    fn i32(&mut self) -> Result<i32, String> {
        let r = self.take(4)?;
        let b = &self.body[r];
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn i64(&mut self) -> Result<i64, String> {
        Ok((i64::from(self.i32()?) << 32) | i64::from(self.i32()? as u32))
    }
}

#[cfg(test)]
mod tests;
