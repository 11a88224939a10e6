//! Worker mode: one job on several processes and machines, distributed by
//! Kafka (issue 16). **Status:** built and tested end to end for jobs
//! whose stages are joined by keyed exchanges: [`KafkaWorkers`] runs the
//! tasks the group assigns to a worker, [`KafkaExchange`] carries keyed
//! exchanges through repartition topics exactly once, [`InternalTopics`]
//! makes and checks the application's topics. Where the built design
//! differs from the first one below, the section says so and why.
//! Checkpoints are kept in Kafka ([`KafkaTaskStores`]), so no worker needs
//! a directory another one reaches. A source topic that gains partitions
//! is read by the tasks the application has (see "Stages and tasks").
//! Standby replicas ([`KafkaWorkers::standby_replicas`]) keep warm copies
//! of tasks' checkpoints on other workers. Not built yet: rebalance and
//! broadcast edges across workers, and more tasks for a grown source.
//!
//! # What a user does
//! The job code is the one-process job. One builder call switches it to
//! worker mode, and every worker runs the same binary with the same
//! application id:
//!
//! ```text
//! fn clicks(job: Job) -> Result<Job> { … sources, key_by, windows, sinks … }
//!
//! clicks(Job::new())?.run()                                       // one process
//! KafkaWorkers::new(bootstrap, "clicks-per-user").run(clicks)     // a worker
//!
//! clicks-job --bootstrap kafka:9092 --application-id clicks-per-user   # any number of times
//! ```
//!
//! The job code is a function that adds to the job it is given: a worker
//! calls it once per task it starts, so every task has its own sources,
//! operators and sinks (a job graph is not `Send`, and sinks keep
//! per-run state such as transaction lineages).
//!
//! There is no coordinator process: Kafka's group protocol assigns the
//! work, internal topics carry keyed data and watermarks, and Kafka
//! transactions make each step atomic. Each task's checkpoints are in a
//! compacted partition of their own (see "Exactly once").
//!
//! # Stages and tasks
//! The job graph is cut at every keyed exchange (`key_by`) into **stages**:
//! the runtime's nodes joined by forward edges, which stay inside a
//! worker, on the existing threads and channels (worker mode refuses
//! rebalance edges for now). (A broadcast
//! edge must reach every task, so it cannot stay local: it goes through a
//! topic that every downstream task reads whole, outside the group's
//! assignment; not designed in detail yet.) A **task** is
//! `(stage, partition)`:
//! - a source stage has one task per partition of its source topics (a
//!   stage reading several topics needs them co-partitioned: the same
//!   partition count, partition `p` of each read by task `p`);
//! - every other stage has one task per partition of its **repartition
//!   topic** `<application-id>-<uid>-repartition` (`uid` the keyed
//!   exchange's), with a configured partition count (default: the largest
//!   source partition count).
//!
//! **A source topic that gains partitions** (built): a source stage keeps
//! the task count its task topic was made with, `n`, and task `t` reads
//! partitions `t, t + n, …`, as subtask `t` of a one-process job at
//! parallelism `n` does (a running unbounded task finds the new ones by
//! partition discovery; a task started later has them from the start).
//! Nothing is renumbered: a task's state, its transactional ids and the
//! downstream tasks' count of upstream tasks stay as they were, so the
//! results are those of one process over the grown topic. What it does
//! not do is add tasks: more partitions bring no more parallelism to a
//! running application (a new application id does). The first design
//! grew the stage instead, but every downstream task would have had to
//! learn of new upstream tasks mid-run, and a new task's windows could
//! miss firings the others had already made.
//!
//! The stage layout (`Job::stage_layout`: stages, their sources, inputs and
//! operator uids; not parallelism or partition counts, which may differ or
//! grow) has a fingerprint. The first
//! worker writes the layout, with the key-group count and the repartition
//! partition count (with other counts a key would go to another task), to
//! the one-partition topic
//! `<application-id>-layout` (kept forever, not compacted: its first record
//! decides); every worker reads that topic's *first* record at start and
//! refuses to run, naming the difference, if its own layout differs (a
//! worker of another job version). First-record-wins needs no
//! coordinator: the log orders concurrent first writers. A repartition or changelog topic that
//! exists with another partition count is refused the same way, with the
//! topic, both counts, and the advice to use a new application id or
//! reset the old one.
//!
//! # Assignment (built: task topics, cooperative-sticky)
//! Every stage `s` has a **task topic** `<application-id>-stage-<s>-tasks`
//! with one partition per task and no records. Each worker runs one
//! consumer in the group `<application-id>`, subscribed to all task
//! topics, with the classic protocol's `cooperative-sticky` assignor;
//! partition `p` of stage `s`'s topic assigned to a worker means it runs
//! task `(s, p)` (see [`KafkaWorkers`]):
//! - the assignor is incremental and sticky: a member joining or leaving
//!   revokes only the partitions that move, and the others never stop;
//! - a task is started after its partition is assigned and aborted before
//!   its revocation is acknowledged, so no two live workers run it;
//! - a task reads its own source partition or repartition partition by
//!   explicit assignment, so the group never needs to co-partition topics.
//!
//! The first design used KIP-848's consumer protocol with the range
//! assignor over the source and repartition topics themselves, for its
//! co-partitioning. Task topics make co-partitioning unnecessary, and the
//! classic protocol lets the client choose its session timeout (10 s by
//! default here; brokers allow 6 s and up by default), where KIP-848's is
//! the broker's, 45 s unless the cluster is reconfigured: the 10 s
//! recovery target needs the former.
//!
//! # Keyed exchange across workers
//! A record crossing a keyed exchange is produced to the repartition topic:
//! - partition: the record's key group (the stable key hash of the
//!   robustness work, `key_group_of_hash`) mapped to a partition as key
//!   groups map to subtasks today. Every worker routes a key the same
//!   way, and a downstream task's state is exactly some key groups;
//! - Kafka key: the key group (2 bytes); value: the record's bytes;
//! - headers: `tl-ts` (event time), `tl-lw` (the record's lateness
//!   watermark, the partition-local rule), `tl-from` (upstream task).
//!
//! # Event time across workers
//! Each upstream task writes its watermark as a **control record**
//! (headers `tl-ctl`, `tl-from` and `tl-ts`: a watermark, `idle` when
//! every input of the task went idle, or the end) to every
//! partition of the repartition topic, in the same transaction as its data
//! and after it. A downstream task keeps, per upstream task, the last
//! watermark it read (`-inf` before the first, so nothing fires before
//! every upstream task has spoken; the number of upstream tasks is the
//! upstream stage's partition count), and its watermark is the minimum
//! over the non-idle ones, exactly as channels are combined in one process.
//! A task that writes data after saying it was idle says it is active
//! first (its watermark again), as data wakes an in-process channel.
//! Limit: a downstream task whose upstream tasks are all idle does not
//! go idle itself, so idleness crosses one exchange, not two in a row (a
//! stage behind two keyed exchanges waits for its slowest input's
//! watermark as long as that input is silent).
//!
//! Why the results equal a one-process run's: within one partition, Kafka
//! keeps one idempotent producer's records in order, so each upstream
//! task's records and control records reach a downstream task as a FIFO
//! channel would; records carry their lateness watermark, so every late
//! decision is the one the one-process run makes; firing follows the
//! minimum watermark, so with zero allowed lateness each window fires once
//! with exactly its non-late records (the argument of the lateness rule,
//! `tideline_engine::time`, holds unchanged). The same caveats apply:
//! idleness is a processing-time decision.
//!
//! # Exactly once (built: a checkpoint per task)
//! Each task is a job of its own ([`Job::spawn_part`](tideline_engine::Job::spawn_part))
//! with the engine's aligned checkpoints: every checkpoint interval, its
//! state, its input offsets (source or repartition partition, with the
//! upstream watermarks it has heard) and its pre-committed output
//! transactions (sinks and repartition topics, control records included)
//! go into one checkpoint of the task's own; the transactions
//! are committed when the checkpoint is complete, and a crash between the
//! two is repaired from the checkpoint's copy of the records (the Kafka
//! sink's protocol). Output is visible exactly when the checkpoint that
//! covers its input and state is, which is the guarantee of Kafka
//! Streams' transaction holding output, offsets and changelog together:
//! - **transactional ids per task** (`<application-id>-<exchange>-<task>-<slot>`
//!   for repartition topics, the sink's prefix and the task for sinks). A
//!   task's sinks run isolated: a restore fences and checks only its own
//!   ids, never those of tasks running elsewhere. When a task moves, its
//!   new owner's fencing aborts the dead owner's open transaction at once,
//!   so read_committed readers are not held for `transaction.timeout.ms`;
//! - **timers and window state** are the task's state like any other, in
//!   its checkpoint, so they move with it;
//! - **downstream tasks** read with read_committed, so they see an
//!   upstream checkpoint's records exactly when it commits.
//!
//! Why not Kafka Streams' changelog: the engine already has a
//! checkpoint-and-two-phase-commit protocol that is tested against
//! SIGKILLs, restores at another parallelism and keeps RocksDB snapshots
//! incremental; a changelog would be a second, untested way to make state
//! durable. Checkpoints must be readable by every worker, so they are
//! kept in Kafka (built: [`KafkaCheckpointStore`]): the files of task `t`
//! of stage `s` are chunk records in partition `t` of the compacted topic
//! `<application-id>-stage-<s>-checkpoints`, each write one transaction of
//! the transactional id `<application-id>-checkpoints-<s>-<t>`. A new
//! owner opens the store before restoring, which fences that id, so a
//! zombie's late checkpoint is refused as its output is; then it replays
//! the partition into a local cache and restores from it. The job's
//! checkpoint directory is local scratch (staging and that cache).
//!
//! What this costs against a changelog: a checkpoint writes a task's
//! whole state, not the changes since the last commit, for the memory
//! backend (RocksDB checkpoints are incremental: only new SST files are
//! written); and a restore reads the task's retained checkpoints rather
//! than a compacted table. Both are per task and bounded by the state size;
//! the changelog's advantage grows with state that changes little between
//! checkpoints.
//!
//! The first design, kept for that step: each task has its own
//! transactional producer, `transactional.id =
//! <application-id>-<stage>-<p>`, and every commit interval (default 100 ms)
//! commits one transaction holding:
//! - its output records: sinks, repartition topics, control records;
//! - its state changes, appended to its **changelog** partition
//!   (`<application-id>-<uid>-changelog`, compacted, one partition per
//!   task, keyed by key group, state name, key and namespace; a deletion
//!   is a tombstone). The write-back cache flushes at commit, so a key
//!   written many times in an interval is written once;
//! - its consumed offsets, through `send_offsets_to_transaction` with the
//!   consumer's group metadata (KIP-447), so a consumer fenced out of the
//!   group cannot commit.
//!
//! Only Kafka sinks are exactly once in worker mode (their records are in
//! the task's transaction); a file sink of a task writes on whichever
//! worker runs it, so its files would need a shared directory.
//!
//! # Rebalance (built)
//! - **Partitions revoked** (a worker leaves or a new one takes over): the
//!   task is aborted, and only then is the revocation acknowledged. Its
//!   new owner restores it from its latest checkpoint and repeats what
//!   came after (at most one checkpoint interval): nothing is committed
//!   twice, because the aborted run committed nothing after that
//!   checkpoint. (Committing at revocation instead, with a checkpoint
//!   taken then, would save the repeat; not built.)
//! - **Partitions assigned**: the task is built from the job code and
//!   restores from its latest checkpoint, or starts fresh.
//! - **Partitions lost** (session timeout): as revoked, by the new owner.
//! - **Standby replicas** (optional, [`KafkaWorkers::standby_replicas`]):
//!   a worker that does not run a task keeps a copy of its checkpoint
//!   partition ([`CheckpointReplica`]), read as it is written; when it gets
//!   the task, opening the store fences the old owner and reads only the
//!   records past the replica's position. **Differs from the first
//!   design:** Kafka Streams' assignor places tasks where their standbys
//!   are; librdkafka has no custom assignors, so placement is computed by
//!   every worker from the group's description instead (each keeps the
//!   tasks of the `n` members before it, by member id; the `standby`
//!   module), and a dead worker's tasks land where cooperative-sticky puts
//!   them: with `n` = workers − 1 every move is warm. Restore times with
//!   and without are in `benches/README.md` (`benches/restore.rs`).
//!
//! # Failure analysis (as built)
//! | failure | what happens | lost | duplicated |
//! |---|---|---|---|
//! | worker killed mid-interval | after the session timeout its tasks are assigned to others; each new owner restores the task's latest checkpoint (state, offsets, upstream watermarks), fences the task's transactional ids (aborting the dead owner's open transactions) and reprocesses from there | nothing: what came after the checkpoint was never committed | nothing: the aborted output is invisible to read_committed readers |
//! | killed after a checkpoint completed, before its commit | the new owner restores that checkpoint and commits its transactions from the checkpoint's copy of their records, unless their commit markers say they committed | nothing | nothing |
//! | killed during the commit | the coordinator completes or aborts it (atomic); the marker tells which, and the restore repairs an aborted one as above | nothing | nothing |
//! | a worker leaves | it aborts its tasks before acknowledging their revocation; the others restore them at once (no session timeout) | nothing | nothing |
//! | zombie (a paused worker whose tasks moved) | its transactions are fenced by the new owner's, its checkpoint store's producer too (the new owner opens the store before it restores): its next commit or checkpoint fails, and its worker with it | nothing | nothing |
//! | broker unreachable | librdkafka retries; a commit that cannot complete fails the task, and the worker with it | nothing | nothing |
//! | repartition topic truncated by retention | the restored offset is out of range: the task fails loudly rather than skip data | — | — |
//!
//! Time from a SIGKILL to the dead worker's partitions producing output
//! elsewhere: the session timeout (10 s by default here) to notice, then
//! the restore of the task's checkpoint (reading its partition of the
//! checkpoint topic: state size / read rate), then
//! one checkpoint interval for the output to commit. A graceful leave
//! skips the session timeout.
//!
//! # Scaling, on paper: 100 workers, 1,000 partitions
//! - **Per partition:** a task, its RocksDB, its transactional producers
//!   (one per sink and exchange, one for its checkpoint store), one
//!   partition of its stage's checkpoint topic, and one partition of each
//!   repartition topic it reads. A thousand producers over 100 workers is ten per worker
//!   (librdkafka producers cost a thread and buffers each: acceptable; at
//!   tens of thousands of tasks per-thread ids, Kafka Streams' v2, would
//!   be needed, with slower recovery).
//! - **Per worker:** one consumer, one group member, its threads.
//! - **Group size:** 100 members is well within what KIP-848 groups handle;
//!   assignment is computed on the broker, incrementally.
//! - **Transaction coordinators:** 1,000 tasks committing every 100 ms is
//!   10,000 transactions a second, each a handful of RPCs plus a marker per
//!   partition touched; spread over the cluster's coordinators this is
//!   heavy, so at that size the commit interval should be about 1 s (the
//!   output latency then is about 1 s).
//! - **Control records** are the real limit: every upstream task writes to
//!   every downstream partition, `P_up × P_down` records per watermark
//!   step, a million for 1,000 × 1,000. Writing them once per commit and
//!   only when the watermark moved bounds it per interval; beyond that, a
//!   watermark topic per stage (each upstream task writes one record with
//!   its watermark and, per downstream partition, the offset of its last
//!   data record before it; a downstream task applies it once it has read
//!   that far) makes it `P_up` writes per interval, with the ordering
//!   argument above kept by the offsets.
//! - **Restore:** a task's checkpoint partition is read at roughly the
//!   network and disk rate (measured on this machine's loopback: see
//!   `benches/README.md`, "Restoring a task"), so seconds per GB of
//!   state; with standby replicas a failover costs only their lag (one
//!   checkpoint's new files). Each replica is a reader of the partition:
//!   `n` replicas multiply the checkpoint topics' read traffic by `n + 1`.
//!
//! # Tests this design will be held to (issue 16)
//! Three worker processes of the same test binary over a 6-partition input
//! topic, `key_by` → tumbling windows with late data → an output topic:
//! kill one with SIGKILL mid-run and start another later, and a graceful
//! leave; the read_committed output equals, row for row, the one-process
//! run's (windows and late records). A rolling restart of all workers
//! loses and duplicates nothing. Partitions added to the input topic are
//! picked up. A topic with another partition count and a worker of
//! another layout are refused with clear messages.

pub use tideline_engine::{JobPart, RemoteExchange};

mod checkpoint_store;
mod exchange;
mod repartition;
mod replica;
mod runner;
mod standby;
mod topics;

pub use checkpoint_store::{KafkaCheckpointStore, KafkaTaskStores, ReplayStats};
pub use exchange::{Control, Incoming, Outgoing, RepartitionCodec};
pub use repartition::KafkaExchange;
pub use replica::{CheckpointReplica, MAX_STANDBY_LAG};
pub use runner::{KafkaWorkers, WorkerHandle};
pub use topics::InternalTopics;
