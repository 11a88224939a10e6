//! [`InternalTopics`]: the topics an application of workers keeps in Kafka,
//! made when missing and checked when present, before any worker runs.
//!
//! # Invariants
//! - A repartition topic is used only with the partition count the job
//!   asks for: the count decides which task owns which key groups, so a
//!   topic that exists with another count is refused, never used.
//! - Every worker of an application runs the same stage layout: the first
//!   layout recorded in `<application-id>-layout` decides, and a worker
//!   whose layout's fingerprint differs is refused.
//!
//! # Failure analysis
//! - **Two workers start at once:** both may try to create a topic; the
//!   one that loses gets "already exists" and checks the topic like any
//!   existing one. Both may write their layout; the log orders them, both
//!   read the first record back, and only a worker whose layout differs
//!   from it is refused.
//! - **Broker unreachable:** the metadata request fails with an error
//!   naming the brokers; nothing is created.
//! - **A topic half made** (created, partitions not yet led): metadata is
//!   asked again until every partition has a leader, or the request
//!   timeout passes (an error naming the topic).

use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaErrorCode;
use tideline_engine::{Error, Result, StageLayout};

use crate::client::{invalid_property, topic_metadata, ClientSettings, REQUEST_TIMEOUT};

/// The internal topics of one application of workers.
#[derive(Clone, Debug)]
pub struct InternalTopics {
    settings: ClientSettings,
    application_id: String,
    partitions: usize,
    key_groups: u16,
    replication: i32,
}

/// The layout record: what a worker compares. Key groups and partitions
/// are in it too: with other counts a key would go to another task.
#[derive(serde::Serialize, serde::Deserialize)]
struct LayoutRecord {
    fingerprint: u64,
    key_groups: u16,
    partitions: usize,
    layout: serde_json::Value,
}

impl InternalTopics {
    /// The topics of `application_id` on the cluster at `brokers`, with
    /// `partitions` partitions per repartition topic and replication
    /// factor 1 (see [`InternalTopics::replication`]).
    pub fn new(
        brokers: impl Into<String>,
        application_id: impl Into<String>,
        partitions: usize,
    ) -> Self {
        Self {
            settings: ClientSettings::new(brokers),
            application_id: application_id.into(),
            partitions,
            key_groups: tideline_state::key_group::DEFAULT_KEY_GROUPS,
            replication: 1,
        }
    }

    /// The job's key groups (`Job::key_groups`; the engine's default
    /// unless set): every worker must route keys with the same count.
    pub fn key_groups(mut self, key_groups: u16) -> Self {
        self.key_groups = key_groups;
        self
    }

    /// The replication factor of topics it creates (3 on a production
    /// cluster; 1, the default, on a one-broker test cluster).
    pub fn replication(mut self, factor: i32) -> Self {
        self.replication = factor;
        self
    }

    /// The name of the layout topic: `<application-id>-layout`.
    pub fn layout_topic(&self) -> String {
        format!("{}-layout", self.application_id)
    }

    /// Makes sure every repartition topic of `layout` exists with the
    /// configured partition count, creating the missing ones. Returns
    /// their names, stage by stage.
    ///
    /// # Errors
    /// A topic that exists with another partition count (naming it and
    /// both counts), an application id Kafka cannot take, a partition
    /// count of 0, or a cluster that cannot be reached or refuses to
    /// create a topic.
    pub fn ensure_repartition_topics(&self, layout: &StageLayout) -> Result<Vec<String>> {
        if self.partitions == 0 {
            return Err(Error::config(
                "workers.partitions",
                "repartition topics need at least one partition",
            ));
        }
        let mut topics: Vec<String> = Vec::new();
        let mut exchanges: Vec<&str> = Vec::new();
        for stage in &layout.stages {
            for input in &stage.keyed_inputs {
                let topic = layout.repartition_topic(&self.application_id, input)?;
                if let Some(other) = topics.iter().position(|t| *t == topic) {
                    // Uids that differ only in characters a topic name cannot hold.
                    return Err(Error::config(
                        "workers.exchange_uid",
                        format!(
                            "the keyed exchanges '{}' and '{}' would share the topic '{topic}': \
                             give one of them another uid",
                            exchanges[other], input.exchange
                        ),
                    ));
                }
                topics.push(topic);
                exchanges.push(&input.exchange);
            }
        }
        for topic in &topics {
            self.ensure_topic(topic, self.partitions, &[], "workers.partitions")?;
        }
        Ok(topics)
    }

    /// The task topic of stage `stage`: `<application-id>-stage-<stage>-tasks`.
    pub fn task_topic(&self, stage: usize) -> String {
        format!("{}-stage-{stage}-tasks", self.application_id)
    }

    /// Makes sure every stage's task topic exists with one partition per
    /// task (`tasks`, per stage, from `Job::stage_tasks`): the partitions
    /// the group assigns (see [`KafkaWorkers`](super::KafkaWorkers)).
    /// Returns their names and the task counts the application runs with,
    /// stage by stage: the task topic of a stage that reads only sources
    /// (in `layout`) and has fewer partitions than the stage now asks for
    /// is kept as it is (the stage's source topics gained partitions: its
    /// tasks read them, see `JobPart::stage_tasks`).
    ///
    /// # Errors
    /// A task topic with another partition count (more than a source stage
    /// has tasks: its source topics were made again with fewer
    /// partitions; or any other for a stage behind a keyed exchange), or
    /// a cluster that cannot be reached or refuses to create a topic.
    pub fn ensure_task_topics(
        &self,
        layout: &StageLayout,
        tasks: &[usize],
    ) -> Result<Vec<(String, usize)>> {
        let consumer = self.settings.metadata_consumer(None)?;
        tasks
            .iter()
            .enumerate()
            .map(|(stage, &wanted)| {
                let topic = self.task_topic(stage);
                let reads_only_sources = layout
                    .stages
                    .get(stage)
                    .is_some_and(|s| !s.sources.is_empty() && s.keyed_inputs.is_empty());
                let count = match self.partition_count(&consumer, &topic)? {
                    Some(has) if reads_only_sources && has > 0 && has < wanted => {
                        tracing::info!(
                            stage,
                            tasks = has,
                            partitions = wanted,
                            "the stage's sources have more partitions than it has tasks: \
                             each task reads several"
                        );
                        has
                    }
                    _ => wanted,
                };
                self.ensure_topic(&topic, count, &[], "workers.tasks")?;
                Ok((topic, count))
            })
            .collect()
    }

    /// The checkpoint topic of stage `stage`:
    /// `<application-id>-stage-<stage>-checkpoints`.
    pub fn checkpoint_topic(&self, stage: usize) -> String {
        checkpoint_topic(&self.application_id, stage)
    }

    /// Makes sure every stage's checkpoint topic exists, compacted, with
    /// one partition per task (`tasks`, per stage, from `Job::stage_tasks`):
    /// where [`KafkaTaskStores`](super::KafkaTaskStores) keeps each task's
    /// checkpoint files. Returns their names, stage by stage.
    ///
    /// # Errors
    /// A checkpoint topic with another partition count, or one that
    /// exists without compaction (its retention would delete files the
    /// checkpoints need), or a cluster that cannot be reached or refuses
    /// to create a topic.
    pub fn ensure_checkpoint_topics(&self, tasks: &[usize]) -> Result<Vec<String>> {
        tasks
            .iter()
            .enumerate()
            .map(|(stage, &count)| {
                let topic = self.checkpoint_topic(stage);
                self.ensure_topic(
                    &topic,
                    count,
                    &[
                        ("cleanup.policy", "compact"),
                        // Superseded files leave the log within minutes, so
                        // a restore reads little more than the live ones.
                        ("segment.ms", "600000"),
                        ("min.cleanable.dirty.ratio", "0.1"),
                    ],
                    "workers.tasks",
                )?;
                self.check_compacted(&topic)?;
                Ok(topic)
            })
            .collect()
    }

    /// An admin client of the cluster.
    fn admin(&self) -> Result<AdminClient<DefaultClientContext>> {
        self.settings
            .config(&[])
            .create()
            .map_err(|e| invalid_property(&self.settings, e))
    }

    /// Refuses `topic` unless its cleanup policy is `compact` (alone).
    fn check_compacted(&self, topic: &str) -> Result<()> {
        let admin = self.admin()?;
        let options = AdminOptions::new().request_timeout(Some(REQUEST_TIMEOUT));
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        let action = || format!("describe the configuration of topic '{topic}'");
        let config = loop {
            let described = futures_executor::block_on(
                admin.describe_configs([&ResourceSpecifier::Topic(topic)], &options),
            )
            .map_err(|e| self.settings.error(action(), e))?;
            match described.into_iter().next() {
                Some(Ok(config)) => break config,
                // Just made: the broker answering may not know it yet.
                Some(Err(RDKafkaErrorCode::UnknownTopicOrPartition))
                    if Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Some(Err(code)) => {
                    return Err(Error::external(self.settings.system(), action(), code))
                }
                None => {
                    return Err(Error::external(
                        self.settings.system(),
                        action(),
                        "the broker described nothing",
                    ))
                }
            }
        };
        match config
            .get("cleanup.policy")
            .and_then(|e| e.value.as_deref())
        {
            Some("compact") => Ok(()),
            other => Err(Error::config(
                "workers.application_id",
                format!(
                    "the checkpoint topic '{topic}' has cleanup.policy {}, not compact: its \
                     retention would delete checkpoint files; set cleanup.policy=compact, or \
                     use a new application id",
                    other.unwrap_or("(none)")
                ),
            )),
        }
    }

    /// Records `layout` (with the key groups and partition count) as the
    /// application's if none is yet, and checks that the recorded one (the
    /// first ever written) is the same. Call it before
    /// [`InternalTopics::ensure_repartition_topics`], so a refused worker
    /// creates nothing.
    ///
    /// # Errors
    /// A recorded layout with another fingerprint (a worker of another
    /// version of the job) or other key groups or partition counts, or a
    /// cluster that cannot be reached.
    pub fn check_layout(&self, layout: &StageLayout) -> Result<()> {
        let topic = self.layout_topic();
        // Kept forever and never compacted: its first record decides.
        self.ensure_topic(
            &topic,
            1,
            &[
                ("cleanup.policy", "delete"),
                ("retention.ms", "-1"),
                ("retention.bytes", "-1"),
            ],
            "workers.application_id",
        )?;
        let mine = LayoutRecord {
            fingerprint: layout.fingerprint(),
            key_groups: self.key_groups,
            partitions: self.partitions,
            layout: serde_json::to_value(layout)
                .map_err(|e| Error::Internal(format!("the stage layout as JSON: {e}")))?,
        };
        let recorded = match self.first_record(&topic)? {
            Some(bytes) => bytes,
            None => {
                self.write_layout(&topic, &mine)?;
                self.first_record(&topic)?.ok_or_else(|| {
                    Error::external(
                        self.settings.system(),
                        format!("read back the layout written to '{topic}'"),
                        "the topic is still empty",
                    )
                })?
            }
        };
        let first: LayoutRecord = serde_json::from_slice(&recorded).map_err(|e| {
            Error::config(
                "workers.application_id",
                format!("'{topic}' does not hold a Tideline stage layout ({e}): is the application id another program's?"),
            )
        })?;
        if (first.key_groups, first.partitions) != (mine.key_groups, mine.partitions) {
            return Err(Error::config(
                "workers.partitions",
                format!(
                    "application '{}' runs with {} key groups and {} partitions per repartition \
                     topic, this worker with {} and {}: keys would go to other tasks; use the \
                     same settings or a new application id",
                    self.application_id,
                    first.key_groups,
                    first.partitions,
                    mine.key_groups,
                    mine.partitions
                ),
            ));
        }
        if first.fingerprint != mine.fingerprint {
            return Err(Error::config(
                "workers.application_id",
                format!(
                    "application '{}' runs another stage layout (fingerprint {:016x}, this worker's \
                     is {:016x}): a worker of another version of the job cannot join it; use a new \
                     application id for the new version. Recorded: {}; this worker's: {}",
                    self.application_id,
                    first.fingerprint,
                    mine.fingerprint,
                    first.layout,
                    mine.layout
                ),
            ));
        }
        Ok(())
    }

    /// Creates `topic` with `partitions` if missing; refuses it if it has
    /// another count; waits until its partitions have leaders.
    fn ensure_topic(
        &self,
        topic: &str,
        partitions: usize,
        configs: &[(&str, &str)],
        field: &str,
    ) -> Result<()> {
        let consumer = self.settings.metadata_consumer(None)?;
        if self.partition_count(&consumer, topic)?.is_some() {
            // There: checked (and waited for) as a new one is.
            return self.wait_for_leaders(&consumer, topic, partitions, field);
        }
        let admin = self.admin()?;
        let count = i32::try_from(partitions).map_err(|_| {
            Error::config(
                field,
                format!("{partitions} partitions is more than Kafka allows"),
            )
        })?;
        let new = configs.iter().fold(
            NewTopic::new(topic, count, TopicReplication::Fixed(self.replication)),
            |new, (key, value)| new.set(key, value),
        );
        let options = AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT));
        let results = futures_executor::block_on(admin.create_topics([&new], &options))
            .map_err(|e| self.settings.error(format!("create topic '{topic}'"), e))?;
        for result in results {
            match result {
                Ok(_) => {}
                // Another worker made it first: check it as an existing one.
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => {
                    return Err(Error::external(
                        self.settings.system(),
                        format!("create topic '{topic}'"),
                        code,
                    ))
                }
            }
        }
        self.wait_for_leaders(&consumer, topic, partitions, field)
    }

    /// Waits until `topic` shows `partitions` partitions, all led.
    fn wait_for_leaders(
        &self,
        consumer: &BaseConsumer,
        topic: &str,
        partitions: usize,
        field: &str,
    ) -> Result<()> {
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        loop {
            match self.partition_count(consumer, topic)? {
                Some(n) if n == partitions => return Ok(()),
                Some(n) if n > 0 => return Err(self.count_mismatch(topic, n, partitions, field)),
                _ if Instant::now() >= deadline => {
                    return Err(Error::external(
                        self.settings.system(),
                        format!("wait for the partitions of the new topic '{topic}'"),
                        "they have no leader yet",
                    ))
                }
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// The partition count of `topic` if it exists and all its partitions
    /// have a leader (0 if some do not yet).
    fn partition_count(&self, consumer: &BaseConsumer, topic: &str) -> Result<Option<usize>> {
        let metadata = self.settings.metadata(consumer)?;
        Ok(topic_metadata(&metadata, topic)
            .filter(|t| !t.partitions().is_empty())
            .map(|t| {
                let led = t.partitions().iter().all(|p| p.leader() >= 0);
                if led {
                    t.partitions().len()
                } else {
                    0
                }
            }))
    }

    fn count_mismatch(&self, topic: &str, has: usize, wanted: usize, field: &str) -> Error {
        Error::config(
            field,
            format!(
                "internal topic '{topic}' of application '{}' exists with {has} partitions, this job \
                 asks for {wanted}: the count decides which worker owns which keys, so it cannot \
                 change under a running application; use a new application id (or delete the \
                 application's internal topics to start over)",
                self.application_id
            ),
        )
    }

    /// The value of the first record of partition 0 of `topic`, if any.
    fn first_record(&self, topic: &str) -> Result<Option<Vec<u8>>> {
        // librdkafka's consumer wants a group even for an assigned read;
        // this one never commits.
        let group = format!("{}-layout-reader", self.application_id);
        let consumer = self.settings.metadata_consumer(Some(&group))?;
        let (low, high) = consumer
            .fetch_watermarks(topic, 0, REQUEST_TIMEOUT)
            .map_err(|e| {
                self.settings
                    .error(format!("read the offsets of '{topic}'"), e)
            })?;
        if high <= low {
            return Ok(None);
        }
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(topic, 0, Offset::Offset(low))
            .map_err(|e| self.settings.error(format!("read '{topic}'"), e))?;
        consumer
            .assign(&assignment)
            .map_err(|e| self.settings.error(format!("read '{topic}'"), e))?;
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        while Instant::now() < deadline {
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(message)) => {
                    return Ok(Some(message.payload().unwrap_or_default().to_vec()))
                }
                Some(Err(e)) => return Err(self.settings.error(format!("read '{topic}'"), e)),
                None => {}
            }
        }
        Err(Error::external(
            self.settings.system(),
            format!("read the first record of '{topic}'"),
            "no record arrived in time",
        ))
    }

    fn write_layout(&self, topic: &str, record: &LayoutRecord) -> Result<()> {
        let producer: BaseProducer = self
            .settings
            .config(&[("enable.idempotence", "true")])
            .create()
            .map_err(|e| invalid_property(&self.settings, e))?;
        let value = serde_json::to_vec(record)
            .map_err(|e| Error::Internal(format!("the stage layout as JSON: {e}")))?;
        producer
            .send(
                BaseRecord::<str, [u8]>::to(topic)
                    .key("layout")
                    .payload(&value)
                    .partition(0),
            )
            .map_err(|(e, _)| {
                self.settings
                    .error(format!("write the layout to '{topic}'"), e)
            })?;
        producer.flush(REQUEST_TIMEOUT).map_err(|e| {
            self.settings
                .error(format!("write the layout to '{topic}'"), e)
        })
    }
}

/// `<application-id>-stage-<stage>-checkpoints`.
pub(crate) fn checkpoint_topic(application_id: &str, stage: usize) -> String {
    format!("{application_id}-stage-{stage}-checkpoints")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tideline_engine::{KeyedInput, Stage};

    /// Two exchanges whose uids differ only where topic names cannot: refused
    /// before anything is asked of a cluster (none listens at this address).
    #[test]
    fn exchanges_that_would_share_a_topic_are_refused() {
        let stage = |exchange: &str| Stage {
            id: exchange.to_string(),
            sources: Vec::new(),
            operators: Vec::new(),
            keyed_inputs: vec![KeyedInput {
                exchange: exchange.to_string(),
                from_stage: 0,
            }],
        };
        let layout = StageLayout {
            stages: vec![stage("a b"), stage("a-b")],
        };
        let err = InternalTopics::new("127.0.0.1:1", "app", 2)
            .ensure_repartition_topics(&layout)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("'a b' and 'a-b' would share the topic 'app-a-b-repartition'"),
            "{err}"
        );
    }
}
