//! Standby replicas: warm copies of other workers' task checkpoints, so a
//! task that moves here after its worker died restores from local files
//! and reads only what its owner wrote since, not its whole partition.
//!
//! # Placement
//! Every few seconds the worker reads the group's description (its
//! members and what each is assigned) and sorts the members by member id.
//! With `n` standby replicas, a worker keeps a replica of every task of
//! the `n` members before it in that ring (never of a task it runs
//! itself). Every worker computes the same placement from the same
//! description, with no coordinator; a description read during a
//! rebalance (the group not `Stable`) changes nothing.
//!
//! The assignor is librdkafka's `cooperative-sticky`, which knows nothing
//! of replicas (librdkafka has no custom assignors): a dead worker's tasks
//! go to whichever members the assignor picks. With `n` = workers − 1
//! every member holds a replica of every task it does not run, so every
//! move is warm; with fewer, only the moves that land on a holder are.
//!
//! # Invariants
//! - A replica is only ever read on from its own position, and only if it
//!   caught up within [`MAX_STANDBY_LAG`](super::MAX_STANDBY_LAG)
//!   ([`CheckpointReplica`] says why); opening the task's store fences
//!   the earlier owner *before* it reads on, so nothing is missed.
//! - A replica is taken out of the worker's set, under its lock, when a
//!   task here opens its store: records the followers read for it later
//!   are dropped, never applied to files the task now owns.
//!
//! # Failure analysis
//! - **The group cannot be described** (broker unreachable): the
//!   replicas stay as they are and are not marked fresh; the followers go
//!   on reading.
//! - **A replica cannot be applied to** (a foreign record, a full disk):
//!   it is dropped, and made anew at the next placement.
//! - **This worker dies:** its replicas are scratch in its staging
//!   directory; nothing depends on them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::groups::GroupList;
use rdkafka::message::Message;
use rdkafka::topic_partition_list::TopicPartitionList;
use tideline_engine::Result;

use super::replica::{replica_reader_config, CheckpointReplica};
use super::topics::checkpoint_topic;
use crate::client::{ClientSettings, REQUEST_TIMEOUT};

/// How often the group's description is read again.
const PLACEMENT_EVERY: Duration = Duration::from_secs(2);

/// The most records one reader applies before the loop looks around.
const READ_BATCH: usize = 256;

/// A task: (stage, task index).
pub(crate) type Task = (usize, usize);

/// The standby replicas this worker keeps, and the followers that keep
/// them up to date (see the module docs).
#[derive(Debug)]
pub(crate) struct Standbys {
    settings: ClientSettings,
    application_id: String,
    /// Where the replicas' files are: scratch in the worker's staging
    /// directory.
    root: PathBuf,
    replicas: Mutex<BTreeMap<Task, CheckpointReplica>>,
}

/// What placement needs to know of the application.
#[derive(Debug)]
pub(crate) struct StandbyPlan {
    /// How many replicas of each task the workers keep.
    pub(crate) replicas: usize,
    /// Per stage, its task topic (the group's assignment names them).
    pub(crate) task_topics: Vec<String>,
    /// This worker's `client.id` in the group: how it finds itself in
    /// the description.
    pub(crate) client_id: String,
}

/// A member of the group as its description shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Member {
    pub(crate) id: String,
    pub(crate) client_id: String,
    /// Its assigned partitions of the task topics.
    pub(crate) partitions: Vec<(String, i32)>,
}

impl Standbys {
    /// No replicas yet; their files will go under `root`.
    pub(crate) fn new(settings: ClientSettings, application_id: &str, root: PathBuf) -> Self {
        Self {
            settings,
            application_id: application_id.to_string(),
            root,
            replicas: Mutex::new(BTreeMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Task, CheckpointReplica>> {
        self.replicas.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the replica of `task`, if this worker keeps one: the task is
    /// about to run here.
    pub(crate) fn take(&self, task: Task) -> Option<CheckpointReplica> {
        self.lock().remove(&task)
    }

    /// Keeps replicas where the placement says, up to date, until `stop`.
    /// Runs on a thread of its own.
    ///
    /// # Errors
    /// Only when its consumers cannot be made (a bad property).
    pub(crate) fn follow(&self, plan: &StandbyPlan, stop: &AtomicBool) -> Result<()> {
        // One reader per stage: an end-of-partition event names only the
        // partition, and each stage's checkpoint topic numbers them anew.
        let group = format!("{}-standby", self.application_id);
        let readers: Vec<BaseConsumer> = plan
            .task_topics
            .iter()
            .map(|_| {
                self.settings
                    .config(&replica_reader_config(&group))
                    .create()
                    .map_err(|e| crate::client::invalid_property(&self.settings, e))
            })
            .collect::<Result<_>>()?;
        let Some(describer) = readers.first() else {
            return Ok(());
        };
        let mut following: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); readers.len()];
        let mut at_end: BTreeSet<Task> = BTreeSet::new();
        let mut placed_at: Option<Instant> = None;
        while !stop.load(Ordering::SeqCst) {
            if placed_at.is_none_or(|at| at.elapsed() >= PLACEMENT_EVERY) {
                placed_at = Some(Instant::now());
                match describer.fetch_group_list(Some(&self.application_id), REQUEST_TIMEOUT) {
                    Ok(groups) => {
                        if let Some(wanted) = self.placement(&groups, plan) {
                            self.place(&wanted);
                        }
                        // The cluster answered: replicas at their end are
                        // current as of now.
                        let mut replicas = self.lock();
                        for task in &at_end {
                            if let Some(replica) = replicas.get_mut(task) {
                                replica.reached_end();
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot describe the group"),
                }
            }
            for (stage, reader) in readers.iter().enumerate() {
                self.reassign(stage, reader, &mut following[stage], &mut at_end);
                self.read(stage, reader, &mut at_end);
            }
        }
        Ok(())
    }

    /// The tasks this worker should keep replicas of, from the group's
    /// description; `None` while the group is rebalancing or this worker
    /// is not (yet) in it.
    fn placement(&self, groups: &GroupList, plan: &StandbyPlan) -> Option<BTreeSet<Task>> {
        let group = groups
            .groups()
            .iter()
            .find(|g| g.name() == self.application_id)?;
        if group.state() != "Stable" {
            return None;
        }
        let members: Vec<Member> = group
            .members()
            .iter()
            .map(|m| Member {
                id: m.id().to_string(),
                client_id: m.client_id().to_string(),
                partitions: m
                    .assignment()
                    .and_then(parse_assignment)
                    .unwrap_or_default(),
            })
            .collect();
        let tasks = standby_partitions(&members, &plan.client_id, plan.replicas)?;
        Some(
            tasks
                .into_iter()
                .filter_map(|(topic, partition)| {
                    let stage = plan.task_topics.iter().position(|t| *t == topic)?;
                    Some((stage, usize::try_from(partition).ok()?))
                })
                .collect(),
        )
    }

    /// Drops the replicas no longer wanted, makes the missing ones.
    fn place(&self, wanted: &BTreeSet<Task>) {
        let mut replicas = self.lock();
        let dropped: Vec<Task> = replicas
            .keys()
            .filter(|t| !wanted.contains(*t))
            .copied()
            .collect();
        for task in dropped {
            if let Some(replica) = replicas.remove(&task) {
                tracing::info!(stage = task.0, task = task.1, "dropping a standby replica");
                replica.discard();
            }
        }
        for &task in wanted {
            if replicas.contains_key(&task) {
                continue;
            }
            let topic = checkpoint_topic(&self.application_id, task.0);
            let partition = i32::try_from(task.1).unwrap_or(i32::MAX);
            match CheckpointReplica::new(&topic, partition, &self.dir(task)) {
                Ok(replica) => {
                    tracing::info!(stage = task.0, task = task.1, "keeping a standby replica");
                    replicas.insert(task, replica);
                }
                Err(e) => tracing::warn!(error = %e, "cannot make a standby replica"),
            }
        }
    }

    fn dir(&self, (stage, task): Task) -> PathBuf {
        self.root.join(format!("stage-{stage}-task-{task}"))
    }

    /// Points `reader` at the partitions of `stage`'s replicas, each from
    /// its position, when that set changed.
    fn reassign(
        &self,
        stage: usize,
        reader: &BaseConsumer,
        following: &mut BTreeSet<usize>,
        at_end: &mut BTreeSet<Task>,
    ) {
        let replicas = self.lock();
        let now: BTreeSet<usize> = replicas
            .keys()
            .filter(|(s, _)| *s == stage)
            .map(|(_, t)| *t)
            .collect();
        if now == *following {
            return;
        }
        let mut list = TopicPartitionList::new();
        for task in &now {
            let Some(replica) = replicas.get(&(stage, *task)) else {
                continue;
            };
            let (topic, partition) = replica.source();
            if let Err(e) = list.add_partition_offset(topic, partition, replica.start_offset()) {
                tracing::warn!(error = %e, "cannot follow a checkpoint partition");
            }
        }
        match reader.assign(&list) {
            Ok(()) => {
                at_end.retain(|(s, t)| *s != stage || now.contains(t));
                *following = now;
            }
            Err(e) => tracing::warn!(error = %e, "cannot follow the checkpoint partitions"),
        }
    }

    /// Applies what `reader` has for `stage`'s replicas (waiting briefly),
    /// a bounded batch: the loop goes back to the stop flag and the
    /// placement between batches.
    fn read(&self, stage: usize, reader: &BaseConsumer, at_end: &mut BTreeSet<Task>) {
        let mut wait = Duration::from_millis(50);
        for _ in 0..READ_BATCH {
            let Some(polled) = reader.poll(wait) else {
                return;
            };
            wait = Duration::ZERO;
            match polled {
                Ok(message) => {
                    let task = (
                        stage,
                        usize::try_from(message.partition()).unwrap_or(usize::MAX),
                    );
                    at_end.remove(&task);
                    let mut replicas = self.lock();
                    let Some(replica) = replicas.get_mut(&task) else {
                        // Taken by a task that runs here now.
                        continue;
                    };
                    if let Err(e) =
                        replica.apply(message.offset(), message.key(), message.payload())
                    {
                        tracing::warn!(error = %e, "dropping a standby replica that cannot be applied to");
                        if let Some(replica) = replicas.remove(&task) {
                            replica.discard();
                        }
                    }
                }
                Err(KafkaError::PartitionEOF(partition)) => {
                    let task = (stage, usize::try_from(partition).unwrap_or(usize::MAX));
                    if let Some(replica) = self.lock().get_mut(&task) {
                        replica.reached_end();
                        at_end.insert(task);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "standby replica reader");
                    return;
                }
            }
        }
    }
}

/// The task-topic partitions a member whose `client.id` is `me` keeps
/// replicas of: every partition of the `replicas` members before it, in
/// member-id order, except its own. `None` if `me` is not a member.
pub(crate) fn standby_partitions(
    members: &[Member],
    me: &str,
    replicas: usize,
) -> Option<BTreeSet<(String, i32)>> {
    let mut ring: Vec<&Member> = members.iter().collect();
    ring.sort_by(|a, b| a.id.cmp(&b.id));
    let at = ring.iter().position(|m| m.client_id == me)?;
    let own: BTreeSet<&(String, i32)> = ring[at].partitions.iter().collect();
    let n = ring.len();
    Some(
        (1..=replicas.min(n - 1))
            .flat_map(|back| ring[(at + n - back) % n].partitions.iter())
            .filter(|p| !own.contains(p))
            .cloned()
            .collect(),
    )
}

/// Decodes a member's assignment in the consumer protocol's format
/// (versions 0 to 3: version, then per topic its name and partitions,
/// then user data, which is ignored). `None` if it is not one.
pub(crate) fn parse_assignment(bytes: &[u8]) -> Option<Vec<(String, i32)>> {
    let mut at = Reader(bytes);
    let version = at.i16()?;
    if !(0..=3).contains(&version) {
        return None;
    }
    let topics = at.i32()?;
    let mut partitions = Vec::new();
    for _ in 0..topics.max(0) {
        let len = usize::try_from(at.i16()?).ok()?;
        let topic = String::from_utf8(at.take(len)?.to_vec()).ok()?;
        let count = at.i32()?;
        for _ in 0..count.max(0) {
            partitions.push((topic.clone(), at.i32()?));
        }
    }
    Some(partitions)
}

/// Big-endian reads off the front of a byte slice.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn i16(&mut self) -> Option<i16> {
        Some(i16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }

    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
}

/// Makes `client.id`s unique per worker process, so a worker finds itself
/// in the group's description.
pub(crate) fn worker_client_id(application_id: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{application_id}-worker-{}-{nanos:09}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An assignment as the consumer protocol encodes it.
    fn encode(version: i16, topics: &[(&str, &[i32])]) -> Vec<u8> {
        let mut out = version.to_be_bytes().to_vec();
        out.extend_from_slice(&(topics.len() as i32).to_be_bytes());
        for (topic, partitions) in topics {
            out.extend_from_slice(&(topic.len() as i16).to_be_bytes());
            out.extend_from_slice(topic.as_bytes());
            out.extend_from_slice(&(partitions.len() as i32).to_be_bytes());
            for p in *partitions {
                out.extend_from_slice(&p.to_be_bytes());
            }
        }
        out.extend_from_slice(&(-1i32).to_be_bytes());
        out
    }

    #[test]
    fn assignments_decode_and_garbage_does_not() {
        let bytes = encode(
            1,
            &[("app-stage-0-tasks", &[0, 2]), ("app-stage-1-tasks", &[1])],
        );
        assert_eq!(
            parse_assignment(&bytes),
            Some(vec![
                ("app-stage-0-tasks".to_string(), 0),
                ("app-stage-0-tasks".to_string(), 2),
                ("app-stage-1-tasks".to_string(), 1),
            ])
        );
        assert_eq!(parse_assignment(&encode(0, &[])), Some(vec![]));
        assert_eq!(parse_assignment(&bytes[..bytes.len() - 9]), None);
        assert_eq!(parse_assignment(&encode(7, &[])), None);
    }

    fn member(id: &str, partitions: &[i32]) -> Member {
        Member {
            id: id.to_string(),
            client_id: format!("client-{id}"),
            partitions: partitions.iter().map(|p| ("t".to_string(), *p)).collect(),
        }
    }

    fn partitions(set: Option<BTreeSet<(String, i32)>>) -> Option<Vec<i32>> {
        set.map(|s| s.into_iter().map(|(_, p)| p).collect())
    }

    #[test]
    fn each_member_keeps_the_tasks_of_the_members_before_it_in_the_ring() {
        // Listed out of order: the ring is by member id.
        let members = [
            member("c", &[4, 5]),
            member("a", &[0, 1]),
            member("b", &[2, 3]),
        ];
        let of = |me: &str, n| partitions(standby_partitions(&members, &format!("client-{me}"), n));
        assert_eq!(of("a", 1), Some(vec![4, 5]));
        assert_eq!(of("b", 1), Some(vec![0, 1]));
        assert_eq!(of("c", 1), Some(vec![2, 3]));
        assert_eq!(of("a", 2), Some(vec![2, 3, 4, 5]));
        // More replicas than other members: each other member once.
        assert_eq!(of("a", 5), Some(vec![2, 3, 4, 5]));
        assert_eq!(of("a", 0), Some(vec![]));
        assert_eq!(of("z", 1), None, "not a member");
        // Alone: nothing to keep.
        assert_eq!(
            partitions(standby_partitions(&members[..1], "client-c", 1)),
            Some(vec![])
        );
        // A partition listed for two members (mid-move) is never kept by
        // the member that runs it.
        let overlap = [member("a", &[0]), member("b", &[0, 1])];
        assert_eq!(
            partitions(standby_partitions(&overlap, "client-b", 1)),
            Some(vec![])
        );
    }
}
