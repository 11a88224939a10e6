//! [`KafkaWorkers`]: runs the tasks of a job that Kafka's group protocol
//! assigns to this worker.
//!
//! # How tasks are assigned
//! Every stage `s` of the job has a **task topic**
//! `<application-id>-stage-<s>-tasks`, with one partition per task of the
//! stage and never a record in it. Every worker subscribes to all of them
//! in the consumer group `<application-id>`; the partitions it is assigned
//! are the tasks it runs: partition `p` of stage `s`'s topic is task
//! `(s, p)`, a [`JobPart`] started with [`Job::spawn_part`] on a job the
//! worker builds afresh from the job code, on a thread of its own (opening
//! its checkpoint store and restoring may take a while; the group's loop
//! keeps serving heartbeats and rebalances meanwhile). Assignment is the classic
//! protocol's `cooperative-sticky` assignor: a member joining or leaving
//! moves only the tasks that must move, and the others never stop.
//!
//! # Invariants
//! - A task runs on at most one live worker of the group: it is started
//!   after its partition is assigned, and stopped (aborted: its open
//!   transaction is never committed) before a revocation is acknowledged.
//! - A task started anywhere resumes from its latest complete checkpoint,
//!   so moving a task loses and repeats nothing its sinks committed.
//!
//! # Failure analysis
//! - **A worker is killed:** the group notices after `session.timeout.ms`
//!   (10 s by default here) and assigns its tasks to the others, which
//!   restore them from their checkpoints; the dead worker's open
//!   transactions are aborted when the new owners fence their ids.
//! - **A worker leaves** ([`WorkerHandle::leave`]): it aborts its tasks and
//!   leaves the group at once, so the others take over without waiting for
//!   the session timeout.
//! - **A task fails:** the worker stops all its tasks, leaves the group and
//!   returns the error, as a one-process job does.
//! - **A zombie** (a worker paused past the session timeout while its
//!   tasks run): the new owner of a task opens its checkpoint store
//!   ([`KafkaTaskStores`]) before it restores, which fences the zombie's
//!   store producer, and restores its sinks' and exchanges' transactional
//!   ids, which fences those: the zombie can neither commit output nor
//!   complete a checkpoint, and fails at its next attempt.
//! - Checkpoints are in Kafka (one compacted partition per task), so no
//!   worker needs a directory another one reaches: the job's checkpoint
//!   directory is the worker's local staging area.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::ClientContext;
use tideline_engine::{
    Error, Job, JobHandle, JobPart, RemoteExchange, Result, TaskCheckpointStores,
};

use super::replica::remove_dir;
use super::standby::{worker_client_id, StandbyPlan, Standbys};
use super::{InternalTopics, KafkaExchange, KafkaTaskStores};
use crate::client::{invalid_property, ClientSettings};

/// Runs a job's tasks on this worker, as the group assigns them.
///
/// ```no_run
/// use tideline_engine::Job;
/// use tideline_kafka::workers::KafkaWorkers;
/// # fn clicks(job: Job) -> tideline_engine::Result<Job> { Ok(job) }
/// // The same job code as for one process: `clicks(Job::new())?.run()`.
/// KafkaWorkers::new("kafka:9092", "clicks-per-user").run(clicks)?;
/// # Ok::<(), tideline_engine::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct KafkaWorkers {
    settings: ClientSettings,
    application_id: String,
    partitions: usize,
    replication: i32,
    session_timeout: Duration,
    standby_replicas: usize,
    stop: Arc<AtomicBool>,
}

/// Asks a running [`KafkaWorkers::run`] to leave the group and return.
#[derive(Clone, Debug)]
pub struct WorkerHandle {
    stop: Arc<AtomicBool>,
}

impl WorkerHandle {
    /// Leaves: the worker aborts its tasks (they resume elsewhere from
    /// their checkpoints), leaves the group and `run` returns.
    pub fn leave(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// What every task this worker starts shares.
struct TaskPlan {
    /// Per stage, its task topic.
    topics: Vec<String>,
    /// Per stage, its task count (its task topic's partition count).
    tasks: Vec<usize>,
    exchange: Arc<dyn RemoteExchange>,
    stores: Arc<dyn TaskCheckpointStores>,
}

/// What the group told the worker, for its loop to act on.
#[derive(Default)]
struct Assignment {
    /// Task topics' partitions assigned and not yet started.
    assigned: BTreeSet<(String, i32)>,
}

/// A task topic's partition: which task.
type TaskKey = (String, i32);

/// A task this worker runs.
enum TaskSlot {
    /// Being built and restored on a thread of its own (opening its
    /// checkpoint store, fencing, replaying), so the group's loop goes on
    /// meanwhile; the thread sends the running task, or why it failed.
    Starting(mpsc::Receiver<Result<JobHandle>>),
    Running(JobHandle),
}

/// The worker's tasks, shared by the loop and the rebalance callbacks.
type Tasks = Arc<Mutex<BTreeMap<TaskKey, TaskSlot>>>;

struct GroupContext {
    assignment: Mutex<Assignment>,
    /// The first error of a task stopped at a revocation (it had failed
    /// before it was stopped): the loop returns it.
    failure: Mutex<Option<Error>>,
    /// The tasks by (topic, partition); shared with the loop, so a
    /// revocation stops them (waiting for one still starting) before it
    /// is acknowledged.
    tasks: Tasks,
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let revoked: Vec<TaskKey> = match rebalance {
            Rebalance::Revoke(tpl) => tpl
                .elements()
                .iter()
                .map(|e| (e.topic().to_string(), e.partition()))
                .collect(),
            // The assignment is unknown now (rdkafka drops it): stop every
            // task, as if all were revoked; the group hands them out again.
            Rebalance::Error(e) => {
                tracing::warn!(error = %e, "rebalance failed: stopping every task");
                self.tasks
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .keys()
                    .cloned()
                    .collect()
            }
            Rebalance::Assign(_) => Vec::new(),
        };
        let mut assignment = self
            .assignment
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
        if matches!(rebalance, Rebalance::Error(_)) {
            assignment.assigned.clear();
        }
        for key in revoked {
            assignment.assigned.remove(&key);
            if let Some(failed) = tasks.remove(&key).and_then(|slot| stop_slot(slot, &key)) {
                self.failure
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get_or_insert(failed);
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            // Task topics hold no records; pausing them keeps the consumer
            // from even asking.
            if let Err(e) = consumer.pause(tpl) {
                tracing::warn!(error = %e, "cannot pause the task topics");
            }
            let mut assignment = self
                .assignment
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            for element in tpl.elements() {
                assignment
                    .assigned
                    .insert((element.topic().to_string(), element.partition()));
            }
        }
    }
}

/// Stops a task, waiting first for one still starting; returns its error
/// if it had failed (or failed to start).
fn stop_slot(slot: TaskSlot, key: &TaskKey) -> Option<Error> {
    match slot {
        TaskSlot::Running(task) => stop_task(task, key),
        TaskSlot::Starting(started) => match started.recv() {
            Ok(Ok(task)) => stop_task(task, key),
            Ok(Err(e)) => Some(e),
            Err(_) => Some(start_lost(key)),
        },
    }
}

/// The error of a start thread that ended without sending its task (it
/// catches panics, so this is not expected).
fn start_lost(key: &TaskKey) -> Error {
    Error::Internal(format!(
        "the thread starting task {key:?} ended without a word"
    ))
}

/// Aborts a task and waits for it: nothing after its last checkpoint is
/// committed, so its next owner repeats exactly that. Returns its error
/// if it had ended with one before it was stopped (what fails after the
/// abort, as its sinks lose their pending commits, is the abort's doing).
fn stop_task(task: JobHandle, key: &TaskKey) -> Option<Error> {
    let ended_before = task.is_finished();
    task.stop_handle().abort();
    match task.join() {
        Ok(_) | Err(Error::Aborted) => None,
        Err(e) if ended_before => Some(e),
        Err(e) => {
            tracing::info!(task = ?key, error = %e, "a stopped task ended with an error");
            None
        }
    }
}

impl KafkaWorkers {
    /// The workers of `application_id` on the cluster at `brokers`, with
    /// repartition topics of 6 partitions and a 10 s session timeout.
    pub fn new(brokers: impl Into<String>, application_id: impl Into<String>) -> Self {
        Self {
            settings: ClientSettings::new(brokers),
            application_id: application_id.into(),
            partitions: 6,
            replication: 1,
            session_timeout: Duration::from_secs(10),
            standby_replicas: 0,
            stop: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The partition count of every repartition topic: the task count of
    /// every stage behind a keyed exchange (default 6). Every worker of
    /// the application must use the same.
    pub fn partitions(mut self, partitions: usize) -> Self {
        self.partitions = partitions;
        self
    }

    /// The replication factor of the internal topics it creates (default
    /// 1, for a one-broker test cluster; 3 on a production cluster: the
    /// checkpoint topics are the only copy of the tasks' state).
    pub fn replication(mut self, factor: i32) -> Self {
        self.replication = factor;
        self
    }

    /// How long the group waits for a silent worker before moving its
    /// tasks (default 10 s; the broker allows 6 s to 30 min by default).
    pub fn session_timeout(mut self, timeout: Duration) -> Self {
        self.session_timeout = timeout;
        self
    }

    /// How many other workers keep a warm copy of each task's checkpoints
    /// (default 0): a task that moves to one of them after its worker
    /// died restores from local files, reading only what was written
    /// since. Each replica reads its task's checkpoint partition as it is
    /// written, so the cost is that traffic and disk, per replica. The
    /// assignor does not know where replicas are: with `workers - 1`
    /// replicas every move is warm, with fewer only some (the `standby`
    /// module's docs tell the placement).
    pub fn standby_replicas(mut self, replicas: usize) -> Self {
        self.standby_replicas = replicas;
        self
    }

    /// A handle that makes [`KafkaWorkers::run`] leave and return.
    pub fn handle(&self) -> WorkerHandle {
        WorkerHandle {
            stop: Arc::clone(&self.stop),
        }
    }

    /// Joins the application's group and runs the tasks it is assigned,
    /// until [`WorkerHandle::leave`] or a task fails. `job` is the job
    /// code: it gets a job in worker mode and adds the sources, operators
    /// and sinks it would add in one process; it is called once to learn
    /// the layout, then once per task started.
    ///
    /// # Errors
    /// A layout another worker of the application does not share, internal
    /// topics with other partition counts, a job worker mode cannot split,
    /// a cluster that cannot be reached, or the first task failure.
    pub fn run<F>(&self, job: F) -> Result<()>
    where
        F: Fn(Job) -> Result<Job> + Sync,
    {
        let probe = job(Job::new().worker_mode())?;
        let layout = probe.stage_layout();
        let tasks = probe.stage_tasks(self.partitions)?;
        let key_groups = probe.config().key_groups;
        let Some(staging) = probe.config().checkpointing.as_ref().map(|c| c.dir.clone()) else {
            // Exchanges commit with checkpoints: without them nothing would
            // ever reach a downstream task, and a moved task would restart
            // from nothing.
            return Err(Error::config(
                "workers.checkpointing",
                "worker mode needs checkpoints: call job.checkpointing(interval, dir) in \
                 the job code, with a local directory of this worker's own",
            ));
        };
        drop(probe);
        let _staging_lock = lock_staging(&staging)?;
        let topics = InternalTopics::new(
            self.settings.brokers.clone(),
            &self.application_id,
            self.partitions,
        )
        .key_groups(key_groups)
        .replication(self.replication);
        topics.check_layout(&layout)?;
        topics.ensure_repartition_topics(&layout)?;
        let (task_topics, tasks): (Vec<String>, Vec<usize>) = topics
            .ensure_task_topics(&layout, &tasks)?
            .into_iter()
            .unzip();
        topics.ensure_checkpoint_topics(&tasks)?;
        let exchange: Arc<dyn RemoteExchange> = Arc::new(KafkaExchange::new(
            self.settings.brokers.clone(),
            &self.application_id,
            key_groups,
        ));
        let tasks_here: Tasks = Arc::new(Mutex::new(BTreeMap::new()));
        let client_id = worker_client_id(&self.application_id);
        let consumer = self.join_group(&task_topics, &client_id, Arc::clone(&tasks_here))?;
        let mut stores = KafkaTaskStores::new(self.settings.brokers.clone(), &self.application_id);
        let standbys = if self.standby_replicas > 0 {
            // Scratch: what a previous run of this worker left is stale.
            let root = staging.join(".standby");
            remove_dir(&root)?;
            let standbys = Arc::new(Standbys::new(
                self.settings.clone(),
                &self.application_id,
                root,
            ));
            stores = stores.with_standbys(Arc::clone(&standbys));
            Some(standbys)
        } else {
            None
        };
        let standby_plan = StandbyPlan {
            replicas: self.standby_replicas,
            task_topics: task_topics.clone(),
            client_id,
        };
        let plan = TaskPlan {
            topics: task_topics,
            tasks,
            exchange,
            stores: Arc::new(stores),
        };
        let following = AtomicBool::new(false);
        let result = std::thread::scope(|scope| {
            let follower = standbys
                .as_ref()
                .map(|standbys| scope.spawn(|| standbys.follow(&standby_plan, &following)));
            let result = self.serve(scope, &consumer, &job, &plan, &tasks_here);
            following.store(true, Ordering::SeqCst);
            let result = match follower.map(std::thread::ScopedJoinHandle::join) {
                Some(Ok(Err(e))) => result.and(Err(e)),
                Some(Err(panic)) => result.and(Err(Error::from_panic(panic))),
                Some(Ok(Ok(()))) | None => result,
            };
            // Leaving: stop every task first, then the group hears at once.
            let stopping =
                std::mem::take(&mut *tasks_here.lock().unwrap_or_else(PoisonError::into_inner));
            let mut failed = None;
            for (key, slot) in stopping {
                if let Some(e) = stop_slot(slot, &key) {
                    failed.get_or_insert(e);
                }
            }
            result.and(failed.map_or(Ok(()), Err))
        });
        consumer.unsubscribe();
        drop(consumer);
        result
    }

    fn join_group(
        &self,
        task_topics: &[String],
        client_id: &str,
        tasks: Tasks,
    ) -> Result<BaseConsumer<GroupContext>> {
        let session = self.session_timeout.as_millis().to_string();
        let heartbeat = (self.session_timeout.as_millis() / 10).max(100).to_string();
        let consumer: BaseConsumer<GroupContext> = self
            .settings
            .config(&[
                ("group.id", &self.application_id),
                ("client.id", client_id),
                ("partition.assignment.strategy", "cooperative-sticky"),
                ("session.timeout.ms", &session),
                ("heartbeat.interval.ms", &heartbeat),
                ("enable.auto.commit", "false"),
            ])
            .create_with_context(GroupContext {
                assignment: Mutex::new(Assignment::default()),
                failure: Mutex::new(None),
                tasks,
            })
            .map_err(|e| invalid_property(&self.settings, e))?;
        let names: Vec<&str> = task_topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&names)
            .map_err(|e| self.settings.error("join the group", e))?;
        Ok(consumer)
    }

    /// The worker's loop: serves the group, starts assigned tasks (each
    /// on a thread of `scope`), reaps finished ones, until asked to leave
    /// or a task fails.
    fn serve<'scope, 'env, F>(
        &self,
        scope: &'scope std::thread::Scope<'scope, 'env>,
        consumer: &BaseConsumer<GroupContext>,
        job: &'env F,
        plan: &TaskPlan,
        tasks: &Mutex<BTreeMap<TaskKey, TaskSlot>>,
    ) -> Result<()>
    where
        F: Fn(Job) -> Result<Job> + Sync,
    {
        let lock = || tasks.lock().unwrap_or_else(PoisonError::into_inner);
        let mut finished: BTreeSet<TaskKey> = BTreeSet::new();
        while !self.stop.load(Ordering::SeqCst) {
            // Rebalance callbacks run inside this poll.
            match consumer.poll(Duration::from_millis(100)) {
                // librdkafka gives up on a fatal error (this member was
                // fenced): the group no longer counts on this worker.
                Some(Err(e)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal) => {
                    return Err(self.settings.error("stay in the group", e));
                }
                // Retrying would only repeat it, once a poll, forever.
                Some(Err(e))
                    if e.rdkafka_error_code() == Some(RDKafkaErrorCode::InvalidSessionTimeout) =>
                {
                    return Err(Error::config(
                        "workers.session_timeout",
                        format!(
                            "the brokers refuse a session timeout of {:?} (their \
                             group.min.session.timeout.ms and group.max.session.timeout.ms \
                             bound it, 6 s to 30 min by default): {e}",
                            self.session_timeout
                        ),
                    ));
                }
                Some(Err(e)) => tracing::warn!(error = %e, "group consumer"),
                _ => {}
            }
            let failed = consumer
                .context()
                .failure
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some(e) = failed {
                return Err(e);
            }
            {
                let assignment = consumer
                    .context()
                    .assignment
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                let mut tasks = lock();
                let start: Vec<TaskKey> = assignment
                    .assigned
                    .iter()
                    .filter(|k| !tasks.contains_key(*k) && !finished.contains(*k))
                    .cloned()
                    .collect();
                for key in start {
                    let Some(stage) = plan.topics.iter().position(|t| *t == key.0) else {
                        continue;
                    };
                    let part = JobPart {
                        stage,
                        task: usize::try_from(key.1).unwrap_or(usize::MAX),
                        repartition_partitions: self.partitions,
                        exchange: Arc::clone(&plan.exchange),
                        checkpoint_stores: Some(Arc::clone(&plan.stores)),
                        stage_tasks: Some(plan.tasks.clone()),
                    };
                    tracing::info!(stage, task = part.task, "starting a task");
                    let (started, slot) = mpsc::channel();
                    scope.spawn(move || {
                        // A panic in the job code is the task's error, not
                        // the worker's (the scope would panic at its end).
                        let task = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            job(Job::new().worker_mode()).and_then(|j| j.spawn_part(&part))
                        }))
                        .unwrap_or_else(|panic| Err(Error::from_panic(panic)));
                        // The receiver is gone only if the worker stopped.
                        let _ = started.send(task);
                    });
                    tasks.insert(key, TaskSlot::Starting(slot));
                }
            }
            let mut tasks = lock();
            let mut done = Vec::new();
            for (key, slot) in tasks.iter_mut() {
                match slot {
                    TaskSlot::Starting(started) => match started.try_recv() {
                        Ok(Ok(task)) => *slot = TaskSlot::Running(task),
                        Ok(Err(e)) => return Err(e),
                        Err(mpsc::TryRecvError::Empty) => {}
                        Err(mpsc::TryRecvError::Disconnected) => return Err(start_lost(key)),
                    },
                    TaskSlot::Running(task) if task.is_finished() => done.push(key.clone()),
                    TaskSlot::Running(_) => {}
                }
            }
            for key in done {
                if let Some(TaskSlot::Running(task)) = tasks.remove(&key) {
                    task.join()?;
                    tracing::info!(task = ?key, "a task finished");
                    finished.insert(key);
                }
            }
        }
        Ok(())
    }
}

/// Locks the job's checkpoint directory for this worker until the lock
/// is dropped: tasks stage their files there, so a second worker on the
/// same directory (a zombie's task and its new owner) could mix them up.
/// The lock goes with the process, however it ends.
fn lock_staging(dir: &std::path::Path) -> Result<std::fs::File> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
    let path = dir.join(".worker.lock");
    let file = std::fs::File::create(&path).map_err(|e| Error::io("create", &path, e))?;
    #[cfg(unix)]
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
            return Err(Error::config(
                "workers.checkpointing",
                format!(
                    "the checkpoint directory '{}' is in use by another worker process: give \
                     each worker a local directory of its own (checkpoints are kept in Kafka)",
                    dir.display()
                ),
            ))
        }
        Err(e) => return Err(Error::io("lock", &path, std::io::Error::from(e))),
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_worker_on_the_same_directory_is_refused_until_the_first_ends() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("create", "tempdir", e))?;
        let first = lock_staging(dir.path())?;
        let err = lock_staging(dir.path())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("is in use by another worker process"), "{err}");
        drop(first);
        lock_staging(dir.path()).map(drop)
    }
}
