use std::cell::RefCell;
use std::fmt;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use std::path::PathBuf;

use tideline_state::StateBackend;

use crate::checkpoint::{CheckpointConfig, RestoreFrom};
use crate::config::{ExecutionMode, FailurePolicy, JobConfig};
use crate::error::Result;
use crate::graph::build::SourceFactory;
use crate::graph::port::{AnyPort, Port, SideRegistry};
use crate::graph::{Graph, Node, OpKind, SourceInfo, Stream};
use crate::record::Data;
use crate::runtime::executor::{report_end, JobHandle, LocalRun};
use crate::runtime::metrics::JobSummary;
use crate::source::Source;
use crate::time::{Clock, WatermarkStrategy};

/// A job under construction: configure it, add sources, build streams from
/// them, then [`Job::run`] it.
///
/// ```
/// use tideline_engine::{Job, ExecutionMode};
/// let job = Job::new().parallelism(2).mode(ExecutionMode::Bounded);
/// assert_eq!(job.config().parallelism, 2);
/// ```
pub struct Job {
    graph: Rc<RefCell<Graph>>,
}

impl Default for Job {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = self.graph.borrow();
        f.debug_struct("Job")
            .field("config", &g.config)
            .field(
                "operators",
                &g.ops.iter().map(|o| o.name.clone()).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Job {
    /// A job with the default configuration ([`JobConfig::default`]).
    pub fn new() -> Self {
        Self::with_config(JobConfig::default())
    }

    /// A job with `config`.
    pub fn with_config(config: JobConfig) -> Self {
        Self {
            graph: Rc::new(RefCell::new(Graph {
                config,
                ..Graph::default()
            })),
        }
    }

    fn configure(self, f: impl FnOnce(&mut JobConfig)) -> Self {
        f(&mut self.graph.borrow_mut().config);
        self
    }

    /// Subtasks per operator (default 1).
    pub fn parallelism(self, parallelism: usize) -> Self {
        self.configure(|c| c.parallelism = parallelism)
    }

    /// Streaming (default) or bounded execution.
    pub fn mode(self, mode: ExecutionMode) -> Self {
        self.configure(|c| c.mode = mode)
    }

    /// Records per batch (default 1024).
    pub fn batch_size(self, batch_size: usize) -> Self {
        self.configure(|c| c.batch_size = batch_size)
    }

    /// Longest a partial batch waits before it is sent (default 50 ms).
    pub fn flush_interval(self, interval: Duration) -> Self {
        self.configure(|c| c.flush_interval = interval)
    }

    /// Batches each input channel (one upstream subtask into one downstream
    /// subtask) holds before its sender blocks (default 16).
    pub fn channel_capacity(self, batches: usize) -> Self {
        self.configure(|c| c.channel_capacity = batches)
    }

    /// Number of key groups, the maximum keyed parallelism (default 128).
    pub fn key_groups(self, key_groups: u16) -> Self {
        self.configure(|c| c.key_groups = key_groups)
    }

    /// The processing-time clock (default: the system clock).
    pub fn clock(self, clock: Arc<dyn Clock>) -> Self {
        self.configure(|c| c.clock = clock)
    }

    /// How operators decide that a record is late (default:
    /// [`LatenessRule::PartitionLocal`](crate::time::LatenessRule::PartitionLocal), by the watermark of the record's own
    /// source partition, which makes late data deterministic; see
    /// [`crate::time::LatenessRule`]).
    pub fn lateness_rule(self, rule: crate::time::LatenessRule) -> Self {
        self.configure(|c| c.lateness_rule = rule)
    }

    /// What happens to records user code rejects (default: dead letters).
    pub fn failure_policy(self, policy: FailurePolicy) -> Self {
        self.configure(|c| c.failure_policy = policy)
    }

    /// Where keyed state lives: in memory (default) or in RocksDB on local
    /// disk, for state larger than memory.
    pub fn state_backend(self, backend: StateBackend) -> Self {
        self.configure(|c| c.state_backend = backend)
    }

    /// Takes a checkpoint every `interval` (of the job's clock) into `dir`,
    /// keeping the newest 3 (see [`Job::checkpoint_retention`]). Every
    /// source must report offsets and every exactly-once sink commits when
    /// a checkpoint completes.
    pub fn checkpointing(self, interval: Duration, dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        self.configure(|c| {
            // Called again, it keeps the store `checkpoint_store` set.
            let store = c.checkpointing.take().and_then(|cp| cp.store);
            c.checkpointing = Some(CheckpointConfig {
                interval,
                dir,
                store,
                retain: 3,
                alignment_timeout: None,
            })
        })
    }

    /// Keeps checkpoint files in `store` (an object store, a Kafka topic)
    /// instead of the directory given to [`Job::checkpointing`], which then
    /// only stages them: tasks write snapshots there (RocksDB needs local
    /// files) and restores lay them out there. Call it after
    /// `checkpointing` (without checkpoints it has nothing to keep).
    pub fn checkpoint_store(self, store: Arc<dyn crate::CheckpointStore>) -> Self {
        self.configure(|c| {
            if let Some(cp) = &mut c.checkpointing {
                cp.store = Some(store);
            }
        })
    }

    /// Gives up a checkpoint when a task has waited longer than `timeout`
    /// (of the job's clock) for its barriers to arrive on every input: the
    /// task stops holding its inputs back, takes no snapshot for it, and the
    /// summary lists the checkpoint as aborted; the next one is triggered
    /// after the interval. Without it, alignment waits as long as it takes.
    pub fn checkpoint_alignment_timeout(self, timeout: Duration) -> Self {
        self.configure(|c| {
            if let Some(cp) = &mut c.checkpointing {
                cp.alignment_timeout = Some(timeout);
            }
        })
    }

    /// How many complete checkpoints to keep (default 3); older ones, and
    /// shared files only they reference, are deleted.
    pub fn checkpoint_retention(self, retain: usize) -> Self {
        self.configure(|c| {
            if let Some(cp) = &mut c.checkpointing {
                cp.retain = retain;
            }
        })
    }

    /// Restarts from a checkpoint: keyed state and timers restored (also at
    /// another parallelism: key groups are redistributed), sources resume
    /// at their offsets, every task at its watermark, and exactly-once sinks
    /// drop what the failed run never committed. State, offsets and
    /// transactions are matched by uid (see [`Stream::uid`]): the job may
    /// change between the runs, as long as every uid the checkpoint holds
    /// state for is still there (or [`Job::allow_non_restored_state`]).
    pub fn restore(self, from: RestoreFrom) -> Self {
        self.configure(|c| c.restore = Some(from))
    }

    /// A handle that stops the job once it runs, from any thread (a signal
    /// handler, say): with a savepoint, with a drain, or by aborting it. See
    /// [`StopHandle`](crate::StopHandle).
    pub fn stop_handle(&self) -> crate::runtime::stop::StopHandle {
        self.graph.borrow().stop.clone()
    }

    /// Lets a restore drop the state a checkpoint holds for operators (by
    /// uid) that the job no longer has; by default such a restore is refused.
    pub fn allow_non_restored_state(self, allow: bool) -> Self {
        self.configure(|c| c.allow_non_restored_state = allow)
    }

    /// The job's metrics registry: read it from any thread while the job
    /// runs (and after), see [`crate::metrics`]. One per job, kept across
    /// restarts.
    pub fn metrics(&self) -> Arc<crate::metrics::JobMetrics> {
        Arc::clone(&self.graph.borrow().metrics)
    }

    /// The job cut into stages at its keyed exchanges, as built so far:
    /// what worker mode distributes, and what workers of one application
    /// must agree on (compare [`StageLayout::fingerprint`](crate::StageLayout::fingerprint)).
    pub fn stage_layout(&self) -> crate::StageLayout {
        self.graph.borrow().stage_layout()
    }

    /// Keeps `value` alive until the job's run ends (a web UI serving the
    /// job's metrics, say: dropping it stops the server).
    pub fn attach(self, value: impl std::any::Any + Send) -> Self {
        self.graph.borrow_mut().attachments.push(Box::new(value));
        self
    }

    /// The configuration as it stands.
    pub fn config(&self) -> JobConfig {
        self.graph.borrow().config.clone()
    }

    /// Adds a source. Each partition gets its own watermark generator from
    /// `strategy`; the source runs as `min(partitions, parallelism)` subtasks.
    pub fn source<T: Data, S: Source<T>>(
        &self,
        source: S,
        strategy: WatermarkStrategy<T>,
    ) -> Stream<T> {
        let name = source.name().to_string();
        let info = SourceInfo {
            name: name.clone(),
            partitions: source.partitions(),
            bounded: source.is_bounded(),
        };
        let head = Rc::new(Port::<T>::new());
        let sides = Rc::new(SideRegistry::default());
        let mut g = self.graph.borrow_mut();
        let op_id = g.ops.len();
        let node = g.add_node(Node {
            source: Some(info),
            inputs: Vec::new(),
            factory: Box::new(SourceFactory {
                source: Arc::new(source),
                strategy: strategy.clone(),
                head: Rc::clone(&head),
                sides: Rc::clone(&sides),
                op: op_id,
            }),
        });
        let op = g.add_op_with_port(
            &name,
            node,
            OpKind::Source,
            Rc::clone(&head) as Rc<dyn AnyPort>,
        );
        g.ops[op].validate = Some(Box::new(move || strategy.validate(&name)));
        Stream::with_sides(&self.graph, node, op, head, sides)
    }

    fn take_graph(self) -> Graph {
        std::mem::take(&mut *self.graph.borrow_mut())
    }

    /// What to do when the job fails while running (default: fail); see
    /// [`RestartStrategy`](crate::RestartStrategy). Applies to [`Job::run`].
    pub fn restart_strategy(self, strategy: crate::RestartStrategy) -> Self {
        self.configure(|c| c.restart_strategy = strategy)
    }

    /// Marks the job as one that runs on several workers (set before its
    /// operators are added; see [`JobConfig::worker_mode`]). Worker runners
    /// hand the job code a job made with it.
    pub fn worker_mode(self) -> Self {
        self.configure(|c| c.worker_mode = true)
    }

    /// Validates the job, runs it on its own threads and waits for the end.
    /// On a failure, the [restart strategy](Job::restart_strategy) may
    /// rebuild it and restore it from its latest checkpoint; the summary
    /// lists the failures it recovered from ([`JobSummary::restarts`]).
    ///
    /// # Errors
    /// A validation error before anything runs, or the failure of any
    /// operator, source or sink (naming it) that was not restarted.
    pub fn run(self) -> Result<JobSummary> {
        let graph = self.take_graph();
        let metrics = Arc::clone(&graph.metrics);
        let result = run_restarting(graph, &metrics);
        report_end(&metrics, result.as_ref());
        result
    }

    /// Validates the job and starts it on its own threads (one per subtask).
    ///
    /// # Errors
    /// A validation error; nothing has started then.
    pub fn spawn(self) -> Result<JobHandle> {
        let capacity = self.graph.borrow().config.channel_capacity;
        let (tasks, shared, report) = self.build_once(Some(capacity))?;
        JobHandle::spawn(tasks, shared, report)
    }

    /// Validates the job and prepares it to be stepped in the calling thread
    /// (what `tideline::testing` uses).
    ///
    /// # Errors
    /// A validation error.
    pub fn start_local(self) -> Result<LocalRun> {
        let (tasks, shared, report) = self.build_once(None)?;
        Ok(LocalRun::new(tasks, shared, report))
    }

    /// The task count of each stage of [`Job::stage_layout`] in worker
    /// mode, with repartition topics of `repartition_partitions`
    /// partitions: a source stage has one task per source partition, a
    /// stage behind a keyed exchange one per repartition partition.
    ///
    /// # Errors
    /// A graph worker mode cannot split (a rebalance or broadcast edge, a
    /// union of inputs with different partition counts), or no partitions.
    pub fn stage_tasks(&self, repartition_partitions: usize) -> Result<Vec<usize>> {
        self.graph
            .borrow()
            .stage_tasks(repartition_partitions, None)
    }

    /// Starts one task of the job on its own threads: worker mode's unit
    /// of work (see [`JobPart`](crate::JobPart) and
    /// `tideline_kafka::workers`). Of the graph, only the nodes of stage
    /// `part.stage` are built, and of those only subtask `part.task`; keyed
    /// exchanges to and from other stages go through `part.exchange`.
    /// With checkpointing, the task checkpoints into
    /// `<dir>/stage-<s>-task-<t>` (or into the store
    /// `part.checkpoint_stores` opens for it, staged there) and resumes
    /// from its latest checkpoint there. The job stays as it was, so any number of its tasks can be
    /// started, one after another; each has its own stop handle and
    /// metrics.
    ///
    /// # Errors
    /// A graph worker mode cannot split (a rebalance or broadcast edge, an
    /// exchange whose records are not serde), a stage or task that does not
    /// exist, or any error starting the job would give.
    pub fn spawn_part(&self, part: &crate::JobPart) -> Result<JobHandle> {
        let mut graph = self.graph.borrow_mut();
        let plan = graph.part_plan(part)?;
        let mut config = graph.config.clone();
        if let Some(cp) = &mut config.checkpointing {
            cp.dir = crate::graph::remote::part_checkpoint_dir(&cp.dir, part);
            if let Some(stores) = &part.checkpoint_stores {
                cp.store = Some(stores.open(part.stage, part.task, &cp.dir)?);
            }
            config.restore = Some(RestoreFrom::Latest);
        }
        let capacity = config.channel_capacity;
        let saved = (
            std::mem::replace(&mut graph.config, config),
            std::mem::take(&mut graph.stop),
            std::mem::take(&mut graph.metrics),
        );
        let built = graph.build_part(Some(capacity), Some(&plan));
        (graph.config, graph.stop, graph.metrics) = saved;
        let (tasks, shared, report) = built?;
        JobHandle::spawn(tasks, shared, report)
    }

    /// Builds the job's only run: what it keeps alive moves into the run,
    /// since the graph goes now.
    fn build_once(self, capacity: Option<usize>) -> Result<crate::graph::build::BuiltJob> {
        let mut graph = self.take_graph();
        let (tasks, shared, mut report) = graph.build(capacity)?;
        report.attachments = std::mem::take(&mut graph.attachments);
        Ok((tasks, shared, report))
    }
}

/// Runs `graph`, restarting it from its latest checkpoint as its restart
/// strategy allows; the caller reports the end (`metrics` here only hear
/// of the restarts).
fn run_restarting(mut graph: Graph, metrics: &crate::metrics::JobMetrics) -> Result<JobSummary> {
    let capacity = graph.config.channel_capacity;
    let strategy = graph.config.restart_strategy;
    let mut restarts: Vec<String> = Vec::new();
    loop {
        let (tasks, shared, report) = graph.build(Some(capacity))?;
        let error = match JobHandle::spawn(tasks, shared, report).and_then(JobHandle::join_run) {
            Ok(mut summary) => {
                summary.restarts = restarts;
                return Ok(summary);
            }
            Err(e) => e,
        };
        let restart = u32::try_from(restarts.len()).unwrap_or(u32::MAX);
        let delay = strategy.delay(restart).filter(|_| {
            !graph.stop.is_stopping()
                && !matches!(error, crate::Error::Aborted | crate::Error::Config { .. })
        });
        let Some(delay) = delay else {
            return Err(error);
        };
        tracing::warn!(
            error = %error,
            restart = restarts.len() + 1,
            delay_ms = delay.as_millis() as u64,
            "job failed; restarting from its latest checkpoint"
        );
        metrics.failed(&error, true);
        restarts.push(error.to_string());
        if graph.stop.wait_unless_stopped(delay) {
            return Err(error);
        }
        graph.config.restore = Some(restart_from(&graph.config)?);
    }
}

/// Where a restart restores from: the latest checkpoint of the job's own
/// directory once it holds one at least as new as what the job started
/// from; until then, what it started from (a savepoint elsewhere, or the
/// beginning), so a failure before the first checkpoint never replays
/// from scratch into sinks that already hold the savepoint's output.
fn restart_from(config: &crate::JobConfig) -> Result<RestoreFrom> {
    let Some(cp) = &config.checkpointing else {
        return Ok(RestoreFrom::Latest);
    };
    let started_from = match &config.restore {
        // Its id is in its name; the restore itself verifies its files.
        Some(RestoreFrom::Path(path)) => {
            Some((path, crate::checkpoint::storage::checkpoint_dir_id(path)?))
        }
        _ => None,
    };
    let newest = cp.storage()?.complete_ids()?.first().copied();
    Ok(match started_from {
        Some((path, id)) if newest.is_none_or(|n| n < id) => RestoreFrom::Path(path.clone()),
        _ => RestoreFrom::Latest,
    })
}

impl ExecutionMode {
    /// Whether this mode requires bounded sources.
    pub fn is_bounded(self) -> bool {
        self == ExecutionMode::Bounded
    }
}
