//! Creating a topic with settings, which rskafka's client does not offer: its
//! `create_topic` sends CreateTopics with no `configs`, and the targets list needs
//! `cleanup.policy=compact`. This sends that request itself, over rskafka's own protocol
//! types and connection (its `unstable-fuzzing` feature makes them public; rskafka is
//! pinned to the version this was written against).
//!
//! It never retries: the caller decides. Every wait is bounded by [`super::REQUEST_TIMEOUT`].

use rskafka::client::error::ProtocolError;
use rskafka::protocol::messages::{
    CreateTopicConfig, CreateTopicRequest, CreateTopicsRequest, MetadataRequest,
};
use rskafka::protocol::primitives::{Int16, Int32, NullableString, String_};

use super::broker::broker;
use super::{KafkaError, KafkaSettings, REQUEST_TIMEOUT};

/// Create `topic` with `configs` (e.g. `cleanup.policy=compact`) unless it exists.
/// True when this call created it.
pub async fn create_topic_with_configs(
    settings: &KafkaSettings,
    topic: &str,
    partitions: i32,
    replication: i16,
    configs: &[(&str, &str)],
) -> Result<bool, KafkaError> {
    let request = CreateTopicsRequest {
        topics: vec![CreateTopicRequest {
            name: String_(topic.to_string()),
            num_partitions: Int32(partitions),
            replication_factor: Int16(replication),
            assignments: vec![],
            configs: configs
                .iter()
                .map(|(k, v)| CreateTopicConfig {
                    name: String_(k.to_string()),
                    value: NullableString(Some(v.to_string())),
                    tagged_fields: None,
                })
                .collect(),
            tagged_fields: None,
        }],
        timeout_ms: Int32(10_000),
        validate_only: None,
        tagged_fields: None,
    };
    let what = format!("create topic {topic:?}");
    let failed = |detail: String| KafkaError::Request {
        what: what.clone(),
        detail,
    };
    let send = async {
        // Brokers of ZooKeeper-era clusters take CreateTopics only at the controller.
        let controller = controller_address(settings).await?;
        let broker = broker(settings, &controller).await?;
        broker.request(request).await.map_err(|e| e.to_string())
    };
    let response = match tokio::time::timeout(REQUEST_TIMEOUT, send).await {
        Err(_) => {
            return Err(failed(format!(
                "no answer within {} s",
                REQUEST_TIMEOUT.as_secs()
            )));
        }
        Ok(Err(detail)) => return Err(failed(detail)),
        Ok(Ok(r)) => r,
    };
    let Some(created) = response.topics.first() else {
        return Err(failed("the broker answered for no topic".into()));
    };
    match created.error {
        None => Ok(true),
        Some(ProtocolError::TopicAlreadyExists) => Ok(false),
        Some(e) => {
            let message = created
                .error_message
                .as_ref()
                .and_then(|m| m.0.clone())
                .unwrap_or_default();
            Err(failed(format!("{e:?} {message}").trim().to_string()))
        }
    }
}

/// `host:port` of the cluster's controller, asked of the first bootstrap server that answers.
async fn controller_address(settings: &KafkaSettings) -> Result<String, String> {
    let mut last = String::from("no bootstrap server");
    for server in &settings.servers {
        let asked = async {
            let metadata = broker(settings, server)
                .await?
                .request(MetadataRequest {
                    topics: Some(vec![]),
                    allow_auto_topic_creation: None,
                })
                .await
                .map_err(|e| format!("{server}: {e}"))?;
            let id = metadata.controller_id.map(|c| c.0);
            Ok::<_, String>(
                metadata
                    .brokers
                    .iter()
                    .find(|b| Some(b.node_id.0) == id)
                    .map(|b| format!("{}:{}", b.host.0, b.port.0)),
            )
        }
        .await;
        match asked {
            Ok(Some(controller)) => return Ok(controller),
            // A cluster that names no controller forwards to it (KRaft): any broker will do.
            Ok(None) => return Ok(server.clone()),
            Err(e) => last = e,
        }
    }
    Err(last)
}
