//! Kafka: connect (plaintext, mutual TLS, SASL over TLS), make sure the topic exists,
//! and per-partition clients for producing and offsets; a record's partition, as the
//! Java client chooses it, is `partitioner`'s. The consumer's fetch goes over connections
//! of our own (`fetch`), its answers read by `record_batch`.
//!
//! This module owns every call into rskafka. It never waits without a bound: rskafka
//! retries forever by default, so every client here carries a backoff deadline and
//! connecting carries a timeout.

use std::sync::Arc;
use std::time::Duration;

use rskafka::BackoffConfig;
use rskafka::client::error::{Error as ClientError, ProtocolError};
use rskafka::client::partition::{PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder, Credentials, SaslConfig};

mod admin;
mod broker;
pub(crate) mod fetch;
mod partitioner;
pub(crate) mod record_batch;
pub mod settings;

pub use admin::create_topic_with_configs;
pub use partitioner::partition_for;
pub use settings::{DEFAULT_TOPIC, KafkaSettings, KafkaTls, SaslMechanism, SaslSettings};

#[derive(Debug)]
/// Why Kafka cannot be used; rendered as one line that says what to check.
pub enum KafkaError {
    /// Could not connect, or the broker refused us; `hint` says what to check.
    Connect {
        /// The bootstrap servers tried.
        servers: String,
        /// What the client library said.
        detail: String,
        /// What to check, when we know it.
        hint: &'static str,
    },
    /// The topic is not there (the consumer waits for it).
    NoTopic {
        /// The topic.
        topic: String,
    },
    /// A request failed after its retries.
    Request {
        /// The request (fetch, produce, list offsets, ...).
        what: String,
        /// What went wrong.
        detail: String,
    },
    /// Settings that cannot be used (a PEM file, ...).
    Config(String),
}

impl std::fmt::Display for KafkaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KafkaError::Connect {
                servers,
                detail,
                hint,
            } => crate::write_cannot_use(f, "Kafka", servers, detail, hint),
            KafkaError::NoTopic { topic } => write!(f, "Kafka topic {topic:?} does not exist"),
            KafkaError::Request { what, detail } => write!(f, "Kafka {what} failed: {detail}"),
            KafkaError::Config(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for KafkaError {}

/// rskafka's errors nest their cause several levels deep and the useful words are at the
/// bottom; this flattens them into one line and guesses the fix.
fn describe(e: &(dyn std::error::Error + 'static)) -> (String, &'static str) {
    let detail = crate::error_chain(e);
    let lower = detail.to_lowercase();
    let hint = if lower.contains("unknownissuer") || lower.contains("invalid peer certificate") {
        "the broker's certificate is not signed by the CA given: use the ca.pem of this Kafka service"
    } else if lower.contains("notvalidforname") {
        "the broker's certificate does not name this host: connect to the host name the console shows"
    } else if lower.contains("sasl") || lower.contains("authentication") {
        "check CK_KAFKA_SASL_MECHANISM, CK_KAFKA_SASL_USERNAME and CK_KAFKA_SASL_PASSWORD"
    } else if lower.contains("badcertificate")
        || lower.contains("certificaterequired")
        || lower.contains("certificate required")
    {
        "the broker wants a client certificate: set CK_KAFKA_SSL='ca.pem service.cert service.key'"
    } else if lower.contains("handshake") || lower.contains("eof") {
        "is this the right port for this security setting? mutual TLS needs CK_KAFKA_SSL='ca.pem service.cert service.key'"
    } else if lower.contains("refused") {
        "is the broker running, and is CK_KAFKA_SERVERS right?"
    } else {
        ""
    };
    (detail, hint)
}

/// Longest wait for one request to the cluster: rskafka has no timeout of its own.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// `request`, bounded by `REQUEST_TIMEOUT` (30 s); `what` names it in the error.
async fn bounded<T>(
    what: &str,
    request: impl std::future::Future<Output = Result<T, ClientError>>,
) -> Result<T, KafkaError> {
    match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(request_error(what, &e)),
        Err(_) => Err(KafkaError::Request {
            what: what.to_string(),
            detail: format!("no answer within {} s", REQUEST_TIMEOUT.as_secs()),
        }),
    }
}

/// A failed request as a [`KafkaError`], with a hint where the cause is known.
pub(crate) fn request_error(what: &str, e: &ClientError) -> KafkaError {
    KafkaError::Request {
        what: what.to_string(),
        detail: describe(e).0,
    }
}

/// Connect to the cluster. Fails within about `within` when the brokers cannot be used.
///
/// rskafka retries every request until its backoff deadline, which counts only the time
/// slept between attempts (not the attempts): a quarter of `within` keeps the whole under
/// `within` and lets the real cause (e.g. a refused password) surface instead of our
/// timeout. Later requests on this client give up as soon; callers retry on their own terms.
pub async fn connect(settings: &KafkaSettings, within: Duration) -> Result<Client, KafkaError> {
    let servers = settings.servers.join(",");
    let mut builder = ClientBuilder::new(settings.servers.clone())
        .client_id("checksite")
        .max_message_size(100 * 1024 * 1024)
        .backoff_config(BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            base: 2.0,
            deadline: Some(within / 4),
        });
    if let Some(tls) = settings.tls_config().map_err(|e| KafkaError::Config(e.0))? {
        builder = builder.tls_config(Arc::new(tls));
    }
    if let Some(sasl) = sasl_config(settings) {
        builder = builder.sasl_config(sasl);
    }
    let client = match tokio::time::timeout(within, builder.build()).await {
        Err(_) => {
            return Err(KafkaError::Connect {
                servers,
                detail: format!("no answer within {} s", within.as_secs()),
                hint: "is the broker running, and is CK_KAFKA_SERVERS right?",
            });
        }
        Ok(Err(e)) => {
            let (detail, hint) = describe(&e);
            return Err(KafkaError::Connect {
                servers,
                detail,
                hint,
            });
        }
        Ok(Ok(c)) => c,
    };
    // build() only reaches one broker; a metadata request proves the security setting works.
    match tokio::time::timeout(within, client.list_topics()).await {
        Err(_) => Err(KafkaError::Connect {
            servers,
            detail: format!("no metadata answer within {} s", within.as_secs()),
            hint: "is this the right port for this security setting?",
        }),
        Ok(Err(e)) => {
            let (detail, hint) = describe(&e);
            Err(KafkaError::Connect {
                servers,
                detail,
                hint,
            })
        }
        Ok(Ok(_)) => Ok(client),
    }
}

/// rskafka's SASL settings for ours, when SASL is on.
fn sasl_config(settings: &KafkaSettings) -> Option<SaslConfig> {
    let sasl = settings.sasl.as_ref()?;
    let creds = Credentials::new(sasl.username.clone(), sasl.password.expose().to_string());
    Some(match sasl.mechanism {
        SaslMechanism::Plain => SaslConfig::Plain(creds),
        SaslMechanism::ScramSha256 => SaslConfig::ScramSha256(creds),
        SaslMechanism::ScramSha512 => SaslConfig::ScramSha512(creds),
    })
}

/// The topic's partition ids, or None when it does not exist.
pub async fn topic_partitions(
    client: &Client,
    topic: &str,
) -> Result<Option<Vec<i32>>, KafkaError> {
    let topics = bounded("metadata", client.list_topics()).await?;
    Ok(topics
        .into_iter()
        .find(|t| t.name == topic)
        .map(|t| t.partitions.into_iter().collect()))
}

/// Create the topic when missing; returns its partition count.
pub async fn ensure_topic(
    client: &Client,
    topic: &str,
    partitions: i32,
    replication: i16,
) -> Result<i32, KafkaError> {
    if let Some(p) = topic_partitions(client, topic).await? {
        return Ok(p.len() as i32);
    }
    let controller = client
        .controller_client()
        .map_err(|e| request_error("controller lookup", &e))?;
    let create = controller.create_topic(topic, partitions, replication, 10_000);
    let created = bounded(&format!("create topic {topic:?}"), async {
        match create.await {
            // Created meanwhile by another producer: as good.
            Err(ClientError::ServerError {
                protocol_error: ProtocolError::TopicAlreadyExists,
                ..
            }) => Ok(false),
            other => other.map(|()| true),
        }
    })
    .await?;
    if created {
        log::info!("created Kafka topic {topic:?} ({partitions} partitions)");
    }
    wait_for_topic(client, topic).await
}

/// The topic's partition count once metadata shows it (it can lag a creation by a moment).
async fn wait_for_topic(client: &Client, topic: &str) -> Result<i32, KafkaError> {
    for _ in 0..50 {
        if let Some(p) = topic_partitions(client, topic).await?
            && !p.is_empty()
        {
            return Ok(p.len() as i32);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(KafkaError::NoTopic {
        topic: topic.to_string(),
    })
}

/// Create the compacted topic `topic` (one partition) when missing; returns its partition
/// count. A topic made by hand is used as it is (its `cleanup.policy` is the maker's).
pub async fn ensure_compacted_topic(
    client: &Client,
    settings: &KafkaSettings,
    topic: &str,
    replication: i16,
) -> Result<i32, KafkaError> {
    if let Some(p) = topic_partitions(client, topic).await? {
        return Ok(p.len() as i32);
    }
    let configs = [("cleanup.policy", "compact")];
    if admin::create_topic_with_configs(settings, topic, 1, replication, &configs).await? {
        log::info!("created Kafka topic {topic:?} (compacted, 1 partition)");
    }
    wait_for_topic(client, topic).await
}

/// The client of one partition of `topic`, bounded by `REQUEST_TIMEOUT` (30 s).
pub async fn partition_client(
    client: &Client,
    topic: &str,
    partition: i32,
) -> Result<PartitionClient, KafkaError> {
    bounded(
        &format!("partition {partition} lookup"),
        client.partition_client(topic, partition, UnknownTopicHandling::Error),
    )
    .await
}

/// Append `records` to the partition, bounded by `REQUEST_TIMEOUT` (30 s). A timed-out produce
/// may still have landed: the consumer stores an event once whatever the topic holds.
pub async fn produce(
    partition: &PartitionClient,
    records: Vec<rskafka::record::Record>,
    compression: rskafka::client::partition::Compression,
) -> Result<(), KafkaError> {
    let what = format!("produce to partition {}", partition.partition());
    bounded(&what, partition.produce(records, compression))
        .await
        .map(|_| ())
}
