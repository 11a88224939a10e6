//! The checkpoint coordinator: decides when checkpoint `n` starts, collects
//! every task's acknowledgement, and completes it on a background thread.
//!
//! Protocol (asynchronous barrier snapshots, as in Flink):
//! 1. when the interval has passed and no checkpoint is in progress, the
//!    next id is published; each source task, at its next step, records its
//!    partitions' offsets, snapshots its chain and sends barrier `n` down;
//! 2. a task with several input channels aligns: it holds back a channel
//!    that delivered barrier `n` until every unfinished channel has, then
//!    snapshots its chain, forwards the barrier and acknowledges;
//! 3. once every task has acknowledged `n` — or finished, in which case its
//!    final snapshot stands in — the background thread makes the staged
//!    files durable (shared files moved once, checksums, fsync), writes the
//!    metadata last, prunes old checkpoints and commits the sinks'
//!    transactions. Tasks never wait for any of that.
//!
//! A task that waits longer than the alignment timeout for barrier `n`
//! gives `n` up ([`Coordinator::abort`]): `n` never completes (late
//! acknowledgements are ignored), and the next checkpoint is triggered one
//! interval later with a new id.
//!
//! When every task has finished, a final checkpoint is completed from their
//! final snapshots, so a bounded job's last output is committed too.

use std::collections::{BTreeMap, HashMap};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::checkpoint::hooks::Hooks;
use crate::checkpoint::snapshot::{BarrierCtx, TaskSnapshot};
use crate::checkpoint::storage::{
    checkpoint_dir_name, CheckpointStorage, FileSum, Metadata, FORMAT,
};
use crate::checkpoint::{AbortedCheckpoint, CheckpointStats};
use crate::error::{Error, Result};
use crate::runtime::shared::Shared;
use crate::time::Clock;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

struct Progress {
    /// The largest id used so far.
    last_id: u64,
    in_progress: Option<(u64, Instant)>,
    acks: Vec<Option<Arc<TaskSnapshot>>>,
    finished: Vec<Option<Arc<TaskSnapshot>>>,
    /// Transactions pre-committed for a checkpoint that will never complete
    /// (acknowledged too late, or aborted): the next checkpoint holds them,
    /// so they are committed, not lost.
    carried: Vec<(String, usize, Vec<u8>)>,
    all_done: bool,
}

/// Work for the checkpoint thread, in checkpoint order.
enum IoWork {
    Complete(Completion),
    /// Checkpoint `id` was given up; tell the hooks.
    Abort(u64),
}

struct Completion {
    id: u64,
    is_final: bool,
    started: Instant,
    parts: Vec<Arc<TaskSnapshot>>,
    /// Transactions of checkpoints that never completed, older than `parts`'.
    carried: Vec<(String, usize, Vec<u8>)>,
    /// The last checkpoint of a job stopped by a drain.
    drained: bool,
}

/// Coordinates the checkpoints of one running job.
pub(crate) struct Coordinator {
    storage: CheckpointStorage,
    retain: usize,
    interval: i64,
    clock: Arc<dyn Clock>,
    /// Directory (root-relative) of this run's final snapshots.
    run_dir: String,
    /// The id sources should emit a barrier for (0: none yet).
    trigger: AtomicU64,
    next_due: AtomicI64,
    progress: Mutex<Progress>,
    hooks: Mutex<Arc<Hooks>>,
    io: Mutex<Option<Sender<IoWork>>>,
    io_thread: Mutex<Option<JoinHandle<()>>>,
    stats: Arc<Mutex<Vec<CheckpointStats>>>,
    aborted: Mutex<Vec<AbortedCheckpoint>>,
    /// Where a requested stop with a savepoint exports it.
    savepoint_dir: Mutex<Option<PathBuf>>,
    /// The id of the stop-with-savepoint barrier; 0 while none is triggered
    /// (a requested one is then still waiting for its barrier).
    stop_id: AtomicU64,
    /// The exported savepoint, once complete.
    savepoint: Mutex<Option<PathBuf>>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator")
            .field("root", &self.storage.root())
            .finish()
    }
}

impl Coordinator {
    /// A coordinator for `tasks` tasks over `storage`, first checkpoint after
    /// `interval` of `clock` time; ids continue after every id in `storage`
    /// and after `restored` (the checkpoint restored from, which may live
    /// elsewhere, a savepoint): checkpoint ids only grow across restores,
    /// which exactly-once sinks rely on to tell newer output from older.
    pub(crate) fn start(
        storage: CheckpointStorage,
        retain: usize,
        interval: Duration,
        clock: Arc<dyn Clock>,
        tasks: usize,
        shared: Arc<Shared>,
        restored: Option<u64>,
    ) -> Result<Arc<Self>> {
        storage.remove_incomplete()?;
        let last_id = storage.max_id()?.max(restored.unwrap_or(0));
        let interval = i64::try_from(interval.as_millis())
            .unwrap_or(i64::MAX)
            .max(1);
        let nonce = format!(
            "final-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        );
        let (sender, receiver) = crossbeam_channel::unbounded();
        let coordinator = Arc::new(Self {
            storage,
            retain,
            interval,
            next_due: AtomicI64::new(clock.now_millis().saturating_add(interval)),
            clock,
            run_dir: nonce,
            trigger: AtomicU64::new(0),
            progress: Mutex::new(Progress {
                last_id,
                in_progress: None,
                acks: vec![None; tasks],
                finished: vec![None; tasks],
                carried: Vec::new(),
                all_done: tasks == 0,
            }),
            hooks: Mutex::default(),
            io: Mutex::new(Some(sender)),
            io_thread: Mutex::new(None),
            stats: Arc::default(),
            aborted: Mutex::default(),
            savepoint_dir: Mutex::default(),
            stop_id: AtomicU64::new(0),
            savepoint: Mutex::default(),
            shared,
        });
        let worker = Arc::clone(&coordinator);
        let thread = std::thread::Builder::new()
            .name("tideline:checkpoints".into())
            .spawn(move || worker.io_loop(&receiver))
            .map_err(|e| Error::Internal(format!("cannot start the checkpoint thread: {e}")))?;
        *lock(&coordinator.io_thread) = Some(thread);
        Ok(coordinator)
    }

    pub(crate) fn root(&self) -> PathBuf {
        self.storage.root().to_path_buf()
    }

    /// Sets the completion hooks of the job's sources and sinks (once, before
    /// any task runs).
    pub(crate) fn set_hooks(&self, hooks: Hooks) {
        *lock(&self.hooks) = Arc::new(hooks);
    }

    /// Asks the job to stop with a savepoint exported into `dir`: the next
    /// barrier (right away, or after the checkpoint in progress) is the last
    /// one; every task stops after it, without draining.
    ///
    /// # Errors
    /// When `dir` is the checkpoint directory itself or a stop is already
    /// under way.
    pub(crate) fn request_savepoint(&self, dir: PathBuf) -> Result<()> {
        let canonical =
            |p: &std::path::Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        if canonical(&dir) == canonical(self.storage.root()) {
            return Err(Error::config(
                "savepoint directory",
                "must not be the checkpoint directory (pruning would delete it); give another one",
            ));
        }
        let mut request = lock(&self.savepoint_dir);
        if request.is_some() {
            return Err(Error::config(
                "stop_with_savepoint",
                "a stop with a savepoint is already under way",
            ));
        }
        *request = Some(dir);
        self.next_due.store(i64::MIN, Ordering::SeqCst);
        Ok(())
    }

    /// Whether barrier `id` is the stop-with-savepoint barrier.
    pub(crate) fn is_stop(&self, id: u64) -> bool {
        id != 0 && self.stop_id.load(Ordering::SeqCst) == id
    }

    /// The savepoint the job stopped with, once it is complete.
    pub(crate) fn savepoint(&self) -> Option<PathBuf> {
        lock(&self.savepoint).clone()
    }

    /// Called by source tasks at every step: the id of the checkpoint they
    /// should emit a barrier for, if it is newer than `emitted`.
    pub(crate) fn poll_barrier(&self, emitted: u64) -> Option<u64> {
        if self.clock.now_millis() >= self.next_due.load(Ordering::Relaxed) {
            let mut progress = lock(&self.progress);
            let stopping = self.stop_id.load(Ordering::SeqCst) != 0;
            if progress.in_progress.is_none() && !progress.all_done && !stopping {
                progress.last_id += 1;
                progress.in_progress = Some((progress.last_id, Instant::now()));
                progress.acks.iter_mut().for_each(|a| *a = None);
                if lock(&self.savepoint_dir).is_some() {
                    self.stop_id.store(progress.last_id, Ordering::SeqCst);
                }
                self.trigger.store(progress.last_id, Ordering::SeqCst);
            }
            // Not due again until this one completes.
            self.next_due.store(i64::MAX, Ordering::Relaxed);
        }
        let id = self.trigger.load(Ordering::SeqCst);
        (id > emitted).then_some(id)
    }

    /// A context to collect task `task`'s snapshot for checkpoint `id`.
    pub(crate) fn barrier_ctx(&self, id: u64, node: &str, subtask: usize) -> BarrierCtx {
        BarrierCtx {
            id,
            root: self.root(),
            stage: checkpoint_dir_name(id),
            snapshot: TaskSnapshot {
                node: node.to_string(),
                subtask,
                ..TaskSnapshot::default()
            },
        }
    }

    /// A context for a task's final snapshot (its input ended). Its id is
    /// the id of the checkpoint the snapshot will first stand in for: the
    /// one in progress if this task has not acknowledged it, else the next.
    pub(crate) fn final_ctx(&self, task: usize, node: &str, subtask: usize) -> BarrierCtx {
        let id = {
            let progress = lock(&self.progress);
            match progress.in_progress {
                Some((id, _)) if progress.acks.get(task).is_some_and(Option::is_none) => id,
                _ => progress.last_id + 1,
            }
        };
        BarrierCtx {
            id,
            root: self.root(),
            stage: format!("{}/task-{task}", self.run_dir),
            snapshot: TaskSnapshot {
                node: node.to_string(),
                subtask,
                ..TaskSnapshot::default()
            },
        }
    }

    /// Task `task` has snapshotted checkpoint `id`.
    pub(crate) fn acknowledge(&self, id: u64, task: usize, snapshot: TaskSnapshot) {
        let mut progress = lock(&self.progress);
        if progress.in_progress.map(|(i, _)| i) != Some(id) {
            progress.carried.extend(snapshot.transactions);
            return;
        }
        if let Some(slot) = progress.acks.get_mut(task) {
            *slot = Some(Arc::new(snapshot));
        }
        self.check_complete(&mut progress);
    }

    /// Task `task` has finished; `snapshot` stands in for it from now on.
    pub(crate) fn finished(&self, task: usize, snapshot: TaskSnapshot) {
        let mut progress = lock(&self.progress);
        if let Some(slot) = progress.finished.get_mut(task) {
            *slot = Some(Arc::new(snapshot));
        }
        self.check_complete(&mut progress);
        if !progress.all_done && progress.finished.iter().all(Option::is_some) {
            progress.all_done = true;
            progress.last_id += 1;
            let parts = progress.finished.iter().flatten().cloned().collect();
            let completion = Completion {
                id: progress.last_id,
                is_final: true,
                started: Instant::now(),
                parts,
                carried: std::mem::take(&mut progress.carried),
                drained: self.shared.stop.load(Ordering::SeqCst),
            };
            self.send(IoWork::Complete(completion));
        }
    }

    fn check_complete(&self, progress: &mut Progress) {
        let Some((id, started)) = progress.in_progress else {
            return;
        };
        let parts: Option<Vec<Arc<TaskSnapshot>>> = progress
            .acks
            .iter()
            .zip(&progress.finished)
            .map(|(ack, fin)| ack.clone().or_else(|| fin.clone()))
            .collect();
        if let Some(parts) = parts {
            progress.in_progress = None;
            self.schedule_next();
            self.send(IoWork::Complete(Completion {
                id,
                is_final: false,
                started,
                parts,
                carried: std::mem::take(&mut progress.carried),
                // Completed during a drain, it may hold snapshots of
                // subtasks that fired everything: not resumable either.
                drained: self.shared.stop.load(Ordering::SeqCst),
            }));
        }
    }

    /// Hands `completion` to the I/O thread. If that thread is gone it has
    /// failed the job already; say so again rather than drop the commit.
    fn send(&self, work: IoWork) {
        let sent = match lock(&self.io).as_ref() {
            Some(sender) => sender.send(work).is_ok(),
            None => false,
        };
        if !sent {
            self.shared.fail(Error::Internal(
                "a checkpoint completed after the checkpoint thread had stopped; \
                 its commits cannot be made"
                    .into(),
            ));
        }
    }

    /// Waits for every completed checkpoint to be written and committed. A
    /// checkpoint thread that died fails the job.
    pub(crate) fn shutdown(&self) {
        lock(&self.io).take();
        if let Some(thread) = lock(&self.io_thread).take() {
            if let Err(payload) = thread.join() {
                self.shared.fail(Error::Internal(format!(
                    "the checkpoint thread panicked: {}",
                    Error::from_panic(payload)
                )));
            }
        }
    }

    /// Statistics of the checkpoints completed so far.
    pub(crate) fn stats(&self) -> Vec<CheckpointStats> {
        lock(&self.stats).clone()
    }

    /// Completes checkpoints in id order. The first one that fails (an I/O
    /// error, a committer's error or panic) fails the job: its commits never
    /// happened, so the job must not end `Ok`; later ones are not attempted
    /// (a restore commits the restored checkpoint's transactions again).
    fn io_loop(&self, receiver: &Receiver<IoWork>) {
        let mut sums: HashMap<String, FileSum> = HashMap::new();
        for work in receiver {
            let (id, outcome) = match work {
                IoWork::Complete(completion) => {
                    let id = completion.id;
                    let run = || self.complete(completion, &mut sums);
                    (id, catch_unwind(AssertUnwindSafe(run)))
                }
                IoWork::Abort(id) => {
                    let hooks = Arc::clone(&lock(&self.hooks));
                    (id, catch_unwind(AssertUnwindSafe(|| hooks.aborted(id))))
                }
            };
            let error = match outcome {
                Ok(Ok(())) => continue,
                Ok(Err(e)) => e,
                Err(payload) => Error::Internal(format!(
                    "completing checkpoint {id} panicked: {}",
                    Error::from_panic(payload)
                )),
            };
            self.shared.fail(error);
            return;
        }
    }

    /// The checkpoint in progress ended (completed or given up): the next is
    /// due an interval from now, or at once when a stop with a savepoint
    /// waits for it.
    fn schedule_next(&self) {
        let waiting =
            lock(&self.savepoint_dir).is_some() && self.stop_id.load(Ordering::SeqCst) == 0;
        let next = if waiting {
            i64::MIN
        } else {
            self.clock.now_millis().saturating_add(self.interval)
        };
        self.next_due.store(next, Ordering::Relaxed);
    }

    /// Gives up checkpoint `id` if it is still in progress (a task could not
    /// align in time): the transactions already pre-committed for it are
    /// carried into the next checkpoint, the hooks hear of it, and the next
    /// checkpoint is due after the interval. Returns whether it was aborted.
    pub(crate) fn abort(&self, id: u64, reason: String) -> bool {
        if self.is_stop(id) {
            // The stop is not given up: the job would stop without a
            // savepoint. Alignment goes on until the barrier arrives.
            return false;
        }
        let mut progress = lock(&self.progress);
        if progress.in_progress.map(|(i, _)| i) != Some(id) {
            return false;
        }
        progress.in_progress = None;
        let acked: Vec<Arc<TaskSnapshot>> =
            progress.acks.iter_mut().filter_map(Option::take).collect();
        for snapshot in acked {
            progress
                .carried
                .extend(snapshot.transactions.iter().cloned());
        }
        self.schedule_next();
        tracing::warn!(checkpoint = id, %reason, "checkpoint given up");
        lock(&self.aborted).push(AbortedCheckpoint { id, reason });
        self.send(IoWork::Abort(id));
        true
    }

    /// Checkpoints given up so far.
    pub(crate) fn aborted(&self) -> Vec<AbortedCheckpoint> {
        lock(&self.aborted).clone()
    }

    /// The slow half of a checkpoint, off the tasks' threads.
    fn complete(&self, c: Completion, sums: &mut HashMap<String, FileSum>) -> Result<()> {
        let root = self.storage.root().to_path_buf();
        let mut meta = Metadata {
            format: FORMAT,
            id: c.id,
            is_final: c.is_final,
            drained: c.drained,
            savepoint: self.is_stop(c.id),
            ..Metadata::default()
        };
        let mut new_bytes = 0u64;
        let mut transactions: BTreeMap<String, Vec<(usize, Vec<u8>)>> = BTreeMap::new();
        for (sink, subtask, txn) in c.carried {
            transactions.entry(sink).or_default().push((subtask, txn));
        }
        for part in &c.parts {
            meta.watermarks
                .entry(part.node.clone())
                .or_default()
                .insert(part.subtask, part.watermark);
            for (source, partition, state) in &part.sources {
                meta.sources
                    .entry(source.clone())
                    .or_default()
                    .insert(*partition, state.clone());
            }
            for (sink, subtask, txn) in &part.transactions {
                transactions
                    .entry(sink.clone())
                    .or_default()
                    .push((*subtask, txn.clone()));
            }
            for op in &part.operators {
                meta.operator_types
                    .insert(op.operator.clone(), op.kind.clone());
                let entry = meta.operators.entry(op.operator.clone()).or_default();
                entry.parallelism = op.parallelism;
                let files = entry.subtasks.entry(op.subtask).or_default();
                for (stored, staged) in &op.files {
                    let sum = match sums.get(&staged.stored) {
                        Some(sum) => *sum,
                        None => {
                            let (sum, written) =
                                self.storage.store_staged(&staged.staged, &staged.stored)?;
                            if written {
                                new_bytes += sum.len;
                            }
                            sums.insert(staged.stored.clone(), sum);
                            sum
                        }
                    };
                    if staged.staged != staged.stored {
                        // Stored by an earlier checkpoint; the staged copy is spare.
                        let _ = std::fs::remove_file(self.storage.root().join(&staged.staged));
                    }
                    meta.files.insert(staged.stored.clone(), sum);
                    files.push(stored.clone());
                }
            }
        }
        for (sink, mut txns) in transactions {
            txns.sort_by_key(|(subtask, _)| *subtask);
            meta.transactions
                .insert(sink, txns.into_iter().map(|(_, t)| t).collect());
        }
        self.storage.write_metadata(&meta)?;
        // Private files of checkpoints still referenced stay in `sums`; drop
        // the ones pruning may delete so a reused path is checksummed anew.
        self.storage.prune(self.retain, &self.run_dir)?;
        sums.retain(|path, _| root.join(path).exists());
        let hooks = Arc::clone(&lock(&self.hooks));
        hooks.completed(&meta)?;
        if self.is_stop(c.id) {
            if let Some(dir) = lock(&self.savepoint_dir).clone() {
                let exported = self.storage.export(&meta, &dir)?;
                *lock(&self.savepoint) = Some(exported);
            }
        }
        lock(&self.stats).push(CheckpointStats {
            id: c.id,
            is_final: c.is_final,
            duration: c.started.elapsed(),
            size_bytes: meta.files.values().map(|f| f.len).sum(),
            new_bytes,
            alignment: c
                .parts
                .iter()
                .map(|p| p.alignment)
                .max()
                .unwrap_or_default(),
            completed_at_ms: self.clock.now_millis(),
        });
        tracing::info!(
            checkpoint = c.id,
            duration_ms = c.started.elapsed().as_millis() as u64,
            new_bytes,
            "checkpoint completed"
        );
        Ok(())
    }
}
