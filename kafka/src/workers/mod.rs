//! Worker mode: one job on several processes and machines, distributed by
//! Kafka. **Status: design, not built yet** (issue 16): of what follows,
//! only the stage layout (`Job::stage_layout`, with its fingerprint and
//! repartition topic names), [`InternalTopics`] (repartition topics
//! made or checked, the layout recorded and compared) and
//! [`RepartitionCodec`] (records and control records as Kafka records)
//! exist; no worker runs yet. It is written down first so the pieces can be built and
//! tested one at a time against it, and so its failure analysis can be
//! argued before any code depends on it.
//!
//! # What a user does
//! The job code is the one-process job. One builder call switches it to
//! worker mode, and every worker runs the same binary with the same
//! application id:
//!
//! ```text
//! Job::new().workers(KafkaWorkers::new(bootstrap, "clicks-per-user"))
//!
//! clicks-job --bootstrap kafka:9092 --application-id clicks-per-user   # any number of times
//! ```
//!
//! There is no coordinator process and no shared file system: Kafka's group
//! protocol assigns the work, internal topics carry keyed data, watermarks
//! and state, and Kafka transactions make each step atomic.
//!
//! # Stages and tasks
//! The job graph is cut at every keyed exchange (`key_by`) into **stages**:
//! the runtime's nodes joined by forward and rebalance edges, which stay
//! inside a worker, on the existing threads and channels. (A broadcast
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
//! # Assignment
//! Each worker runs one consumer in the group `<application-id>`, with
//! KIP-848's consumer protocol (`group.protocol=consumer`; Kafka 4.0+ and
//! librdkafka 2.12, the versions this project uses) and the broker-side
//! `range` assignor, subscribed to every source and repartition topic of
//! the job:
//! - the range assignor gives partition `p` of topics with equal partition
//!   counts to the same member, which is the co-partitioning a stage with
//!   several inputs needs, and is sticky: only what must move moves;
//! - the protocol is incremental: a member joining or leaving revokes only
//!   the partitions that move, and the others never stop (no stop-the-world
//!   rebalance, so adding a worker does not pause the ones running);
//! - a worker's tasks are exactly the `(stage, p)` whose input partitions
//!   it holds; tasks run on the existing runtime (threads, chaining,
//!   in-process channels for edges inside a stage);
//! - `group.instance.id` (static membership) keeps a worker's partitions
//!   through a restart shorter than the session timeout, so a rolling
//!   restart moves nothing.
//!
//! (The classic protocol's cooperative-sticky assignor does not promise
//! co-partitioning, and librdkafka has no custom client-side assignors;
//! Kafka 4.1's streams groups, KIP-1071, would assign tasks on the broker
//! but librdkafka does not speak them yet.)
//!
//! # Keyed exchange across workers
//! A record crossing a keyed exchange is produced to the repartition topic:
//! - partition: the record's key group (the stable key hash of the
//!   robustness work, `key_group_of_hash`) mapped to a partition as key
//!   groups map to subtasks today. Every worker routes a key the same
//!   way, and a downstream task's state is exactly some key groups;
//! - Kafka key: the key's bytes (postcard); value: the record's bytes;
//! - headers: `tl-ts` (event time), `tl-lw` (the record's lateness
//!   watermark, the partition-local rule), `tl-from` (upstream task).
//!
//! # Event time across workers
//! Each upstream task writes its watermark as a **control record**
//! (header `tl-ctl`, value `(task, watermark)`, or `(task, idle)`) to every
//! partition of the repartition topic, in the same transaction as its data
//! and after it. A downstream task keeps, per upstream task, the last
//! watermark it read (`-inf` before the first, so nothing fires before
//! every upstream task has spoken; the number of upstream tasks is the
//! upstream stage's partition count), and its watermark is the minimum
//! over the non-idle ones, exactly as channels are combined in one process.
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
//! # Exactly once
//! Each task has its own transactional producer, `transactional.id =
//! <application-id>-<stage>-<p>`. Every commit interval (default 100 ms)
//! a task commits one transaction holding:
//! - its output records: sinks, repartition topics, control records;
//! - its state changes, appended to its **changelog** partition
//!   (`<application-id>-<uid>-changelog`, compacted, one partition per
//!   task, keyed by key group, state name, key and namespace; a deletion
//!   is a tombstone). The write-back cache flushes at commit, so a key
//!   written many times in an interval is written once. Timers and window
//!   state are keyed state like any other, so they move with the task;
//! - its consumed offsets, through `send_offsets_to_transaction` with the
//!   consumer's group metadata (KIP-447), so a consumer fenced out of the
//!   group cannot commit.
//!
//! Downstream consumers and restores read with `isolation.level =
//! read_committed`. This is Kafka Streams' model with one deliberate
//! difference: a transactional id per task (EOS "v1" style) instead of per
//! thread (v2). When a task moves, the new owner's `init_transactions`
//! aborts the dead owner's open transaction at once, instead of every
//! read_committed consumer of its partitions waiting `transaction.timeout.ms`
//! for the coordinator to abort it: recovery time is then bounded by
//! failure detection and restore, which the issue's 10 s target needs. The
//! cost, a producer per task, is counted below.
//!
//! Only Kafka sinks are exactly once in worker mode (their records are in
//! the task's transaction); a job with another sink is refused unless it
//! opts into at-least-once for that sink.
//!
//! # Rebalance
//! - **Partitions revoked** (graceful: a worker leaves or a new one takes
//!   over): the task commits its current transaction (so its offsets,
//!   state and output are durable together), closes, and only then does
//!   the worker acknowledge the revocation. Its local RocksDB stays on
//!   disk with the changelog offset it reflects, for a possible return.
//! - **Partitions assigned**: the task restores its state from the
//!   changelog, from its local copy's offset if there is one, or from the
//!   start, up to the partition's last stable offset; then it seeks its
//!   inputs to the group's committed offsets and runs.
//! - **Partitions lost** (session timeout, fenced): the task aborts its
//!   transaction and closes without committing; the new owner restores
//!   from the last commit.
//! - **Standby replicas** (optional, `standbys(n)`): a worker that does not
//!   own a task may keep a warm copy by reading its changelog; when it gets
//!   the task it restores only the tail. Restore times are to be reported
//!   with and without.
//!
//! # Failure analysis
//! | failure | what happens | lost | duplicated |
//! |---|---|---|---|
//! | worker killed mid-interval | its open transactions are aborted when each task's new owner initializes the same transactional id; the new owner restores state and offsets as of the last commit and reprocesses from there | nothing: offsets, state and output of the interval were never committed | nothing: the aborted output is invisible to read_committed readers |
//! | killed after `commit_transaction` returned | the commit is durable; the new owner starts after it | nothing | nothing |
//! | killed during the commit | the coordinator either completes it (then as above) or aborts it (then as mid-interval): the transaction is atomic | nothing | nothing |
//! | zombie (a paused worker whose partitions moved) | its producer is fenced by the new owner's `init_transactions` and its offset commit by the group generation; its next commit fails and it closes the task | nothing | nothing |
//! | broker unreachable | librdkafka retries; a commit that cannot complete in `transaction.timeout.ms` aborts and the task restarts from its last commit | nothing | nothing |
//! | repartition or changelog topic deleted or truncated by retention | detected at restore (offsets out of range): the task fails loudly rather than restore partial state | — | — |
//!
//! Time from a SIGKILL to the dead worker's partitions producing output
//! elsewhere: the broker's `group.consumer.session.timeout.ms` (45 s by
//! default in Kafka 4; the test broker lowers it) to notice, then the
//! changelog restore (state size / restore rate), then one commit interval.
//! A graceful leave skips the session timeout.
//!
//! # Scaling, on paper: 100 workers, 1,000 partitions
//! - **Per partition:** a task, its RocksDB, one transactional producer,
//!   one changelog partition, and one partition of each repartition topic
//!   it reads. A thousand producers over 100 workers is ten per worker
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
//! - **Restore:** the changelog is read at roughly the network and RocksDB
//!   ingest rate, some hundred MB/s per task, so several seconds per GB of
//!   state; standby replicas make failover cost only their lag.
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

mod exchange;
mod topics;

pub use exchange::{Control, Incoming, Outgoing, RepartitionCodec};
pub use topics::InternalTopics;
