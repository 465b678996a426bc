//! Start-up: Kafka and PostgreSQL opened (and waited for), the alert senders, the targets
//! list and the upkeep tasks (rollup folding, retention) started. Nothing here consumes.

use super::*;

/// With alerting on: the receivers' routing kept for every consumer's writer, and a
/// sender per receiver.
pub(super) async fn start_alerts(
    config: &ConsumerConfig,
    db: &mut tokio_postgres::Client,
    metrics: &Arc<ConsumerMetrics>,
) -> Result<Option<AlertSender>, ConsumeError> {
    let Some(alerts) = &config.alerts else {
        return Ok(None);
    };
    let routes: Vec<_> = alerts
        .receivers
        .iter()
        .map(|r| (r.name.clone(), r.matches.clone(), r.kinds.clone()))
        .collect();
    store::set_receivers(db, &routes)
        .await
        .map_err(ConsumeError::Alerts)?;
    AlertSender::start(config.postgres.clone(), alerts, metrics.clone())
        .map(Some)
        .map_err(ConsumeError::Alerts)
}

/// With `CK_TARGETS_TOPIC` (and not `--drain`): the list followed, its removals loaded.
pub(super) async fn start_listing(
    config: &ConsumerConfig,
    db: &tokio_postgres::Client,
    shutdown: &Shutdown,
    metrics: &Arc<ConsumerMetrics>,
) -> Result<Option<Listing>, ConsumeError> {
    let Some(topic) = config.targets_topic.clone().filter(|_| !config.drain) else {
        return Ok(None);
    };
    let mut listing = Listing::start(
        config.kafka.clone(),
        topic,
        metrics.list.clone(),
        shutdown.clone(),
    );
    listing.load(db).await.map_err(ConsumeError::Store)?;
    Ok(Some(listing))
}

/// The work beside the writer, each on a PostgreSQL connection of its own: folding the
/// rollups and pruning old events (the alert sender lives with the loop, which wakes it).
pub(super) struct Upkeep {
    pub(super) folder: Option<RollupFolder>,
    pub(super) pruner: Option<EventPruner>,
}

impl Upkeep {
    pub(super) fn start(
        config: &ConsumerConfig,
        metrics: &Arc<ConsumerMetrics>,
    ) -> Result<Upkeep, ConsumeError> {
        let (watched, timed) = (metrics.clone(), metrics.clone());
        // A drain is behind until its end, which folds: a fold when its last records are
        // near would only delay that last fold.
        let drain = config.drain;
        let lag = Box::new(move || if drain { i64::MAX } else { watched.lag() });
        let timer = Box::new(move |took| timed.folded(took));
        let folder = match config.rollups {
            true => Some(
                RollupFolder::start(config.postgres.clone(), (lag, timer))
                    .map_err(ConsumeError::Thread)?,
            ),
            false => None,
        };
        Ok(Upkeep {
            folder,
            pruner: config
                .retention_days
                .map(|days| EventPruner::start(config.postgres.clone(), days)),
        })
    }

    /// Prune no more; fold what is left and deliver what is due, side by side, each bounded.
    pub(super) async fn finish(self, sender: Option<AlertSender>) {
        if let Some(pruner) = self.pruner {
            pruner.finish().await;
        }
        let folder = self.folder;
        tokio::join!(
            async {
                if let Some(folder) = folder {
                    folder.finish(FOLD_AT_EXIT).await;
                }
            },
            async {
                if let Some(sender) = sender {
                    sender.finish(SEND_AT_EXIT).await;
                }
            }
        );
    }
}

/// The partitions' fetches made at start, and with `--drain` where each partition ends.
type Warmed = (HashMap<i32, WarmPartition>, Option<HashMap<i32, i64>>);

/// Kafka from the Kafka thread (so that its connections' tasks run there): the client, the
/// topic's partitions if it exists, their fetches (`warm_partitions`), and with `--drain`
/// where each partition ends.
pub(super) async fn open_kafka(
    config: &ConsumerConfig,
    kafka_thread: &KafkaThread,
) -> Result<(Arc<KafkaClient>, Option<Vec<i32>>, Warmed), ConsumeError> {
    let settings = config.kafka.clone();
    let connecting = kafka_thread
        .runtime
        .spawn(async move { kafka::connect(&settings, Duration::from_secs(10)).await });
    let client = match connecting.await {
        Ok(connected) => Arc::new(connected.map_err(ConsumeError::Kafka)?),
        Err(e) => return Err(ConsumeError::Thread(std::io::Error::other(e))),
    };
    let topic = &config.kafka.topic;
    let partitions = match kafka::topic_partitions(&client, topic).await {
        Ok(Some(p)) if !p.is_empty() => Some(p),
        _ => None,
    };
    let warmed = match &partitions {
        Some(p) => {
            let settings = Arc::new(config.kafka.clone());
            let kafka = (&settings, topic.as_str());
            warm_partitions(kafka, p, config.drain, &kafka_thread.runtime).await?
        }
        None => (HashMap::new(), None),
    };
    Ok((client, partitions, warmed))
}

/// Per partition, its fetch's connection to the leader, and over it the partition's
/// earliest offset (and with `--drain` its end), made before the leases: so they overlap
/// PostgreSQL's connection and migrations instead of following them (25-120 ms before a
/// fresh drain's first fetch on the test bed). One connection a partition: the offsets
/// once came over an rskafka client of their own, a second TLS handshake per partition.
/// A drain fails on a partition it cannot look up; a consumer leaves it to the fetcher,
/// which retries it.
async fn warm_partitions(
    (settings, topic): (&Arc<kafka::KafkaSettings>, &str),
    partitions: &[i32],
    drain: bool,
    runtime: &tokio::runtime::Handle,
) -> Result<Warmed, ConsumeError> {
    let mut lookups = tokio::task::JoinSet::new();
    for &p in partitions {
        let leader = LeaderFetch::new(settings.clone(), topic, p);
        lookups.spawn_on(
            async move { (p, warm_partition(leader, drain).await) },
            runtime,
        );
    }
    let (mut warm, mut ends) = (HashMap::new(), HashMap::new());
    while let Some(joined) = lookups.join_next().await {
        let (p, looked_up) = joined.map_err(|e| ConsumeError::Thread(std::io::Error::other(e)))?;
        match looked_up {
            Ok((partition, end)) => {
                warm.insert(p, partition);
                ends.extend(end.map(|end| (p, end)));
            }
            Err(e) if drain => {
                return Err(ConsumeError::Kafka(KafkaError::Request {
                    what: format!("list offsets of partition {p}"),
                    detail: e.to_string(),
                }));
            }
            Err(e) => log::debug!("partition {p}: {e}; its fetcher looks it up again"),
        }
    }
    Ok((warm, drain.then_some(ends)))
}

async fn warm_partition(
    mut leader: LeaderFetch,
    drain: bool,
) -> Result<(WarmPartition, Option<i64>), FetchError> {
    let earliest = leader
        .offset(OffsetAt::Earliest, kafka::REQUEST_TIMEOUT)
        .await?;
    let end = match drain {
        true => Some(
            leader
                .offset(OffsetAt::Latest, kafka::REQUEST_TIMEOUT)
                .await?,
        ),
        false => None,
    };
    Ok((WarmPartition { leader, earliest }, end))
}

/// PostgreSQL connected and migrated, and the time of the Python consumer's last row.
pub(super) async fn open_postgres(
    config: &ConsumerConfig,
) -> Result<(tokio_postgres::Client, Option<DateTime<Utc>>), ConsumeError> {
    let mut db = config
        .postgres
        .connect(Duration::from_secs(10))
        .await
        .map_err(ConsumeError::Store)?;
    let before = store::migrate(&mut db).await.map_err(ConsumeError::Store)?;
    if before != store::SCHEMA_VERSION {
        log::info!(
            "database schema upgraded from version {before} to {}",
            store::SCHEMA_VERSION
        );
    }
    let python_until = store::python_rows_until(&db)
        .await
        .map_err(ConsumeError::Store)?;
    if let Some(until) = python_until {
        log::info!(
            "rows of the Python checksite's consumer found (the last at {}): Python-format records up to then are stored only if it had not stored them",
            event::format_time(&until)
        );
        if let Some(zone) = store::non_utc_timezone(&db)
            .await
            .map_err(ConsumeError::Store)?
        {
            log::warn!(
                "the server's TimeZone is {zone}: the Python checksite wrote events.ts in that zone's wall time, checksite writes UTC"
            );
        }
    }
    Ok((db, python_until))
}

/// The topic's partitions: as found at start (`found`, with whether this is a drain), or
/// once the topic exists; None at shutdown. A drain reads what is there now: a topic that
/// does not exist is its error, as waiting for it would hang a batch job.
pub(super) async fn topic_partitions(
    (found, drain): (Option<Vec<i32>>, bool),
    client: &KafkaClient,
    topic: &str,
    shutdown: &mut Shutdown,
    metrics: &ConsumerMetrics,
) -> Result<Option<Vec<i32>>, ConsumeError> {
    match found {
        Some(p) => Ok(Some(p)),
        None if drain => Err(ConsumeError::NoTopicToDrain(topic.to_string())),
        None => wait_for_topic(client, topic, shutdown, metrics).await,
    }
}

/// The topic's partitions once it exists (said once while it does not); None at shutdown.
async fn wait_for_topic(
    client: &KafkaClient,
    topic: &str,
    shutdown: &mut Shutdown,
    metrics: &ConsumerMetrics,
) -> Result<Option<Vec<i32>>, ConsumeError> {
    metrics.starting(&format!("topic {topic:?} does not exist yet"));
    let mut said = None::<Instant>;
    loop {
        match kafka::topic_partitions(client, topic).await {
            Ok(Some(p)) if !p.is_empty() => return Ok(Some(p)),
            Ok(_) => {
                if said.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                    log::info!(
                        "topic {topic:?} does not exist yet: waiting for the producer to create it"
                    );
                    said = Some(Instant::now());
                }
            }
            Err(e) => log::warn!("{e}; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = shutdown.requested() => return Ok(None),
        }
    }
}
