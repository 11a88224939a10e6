use std::cell::RefCell;
use std::fmt;
use std::hash::Hash;
use std::rc::Rc;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tideline_state::key_group::key_hash;

use crate::error::Result;
use crate::graph::build::{exchange_writer, open_sink_push, InputFactory};
use crate::graph::port::{AnyPort, Port, SideRegistry};
use crate::graph::remote::RecordCodec;
use crate::graph::{Edge, EdgeKind, Graph, Node, NodeId, OpId, OpKind};
use crate::operator::{DeadLetter, Operator, OperatorContext, OperatorPush, Output, OutputTag};
use crate::record::Data;
use crate::runtime::exchange::KeyHashFn;
use crate::runtime::push::BoxPush;
use crate::sink::{Sink, SubtaskInfo};

/// A stream of records of type `T`: the output of a source or an operator.
///
/// Streams are cheap handles into the job being built; consuming one twice
/// (two `map`s, a `map` and a `sink`...) sends every record to both.
pub struct Stream<T> {
    pub(crate) graph: Rc<RefCell<Graph>>,
    pub(crate) node: NodeId,
    pub(crate) op: OpId,
    pub(crate) port: Rc<Port<T>>,
    pub(crate) sides: Rc<SideRegistry>,
}

impl<T> Clone for Stream<T> {
    fn clone(&self) -> Self {
        Self {
            graph: Rc::clone(&self.graph),
            node: self.node,
            op: self.op,
            port: Rc::clone(&self.port),
            sides: Rc::clone(&self.sides),
        }
    }
}

impl<T> fmt::Debug for Stream<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.graph.borrow().ops.get(self.op).map(|o| o.name.clone());
        f.debug_struct("Stream").field("operator", &name).finish()
    }
}

/// One input of an exchange: the stream, how it is routed, and (for keyed
/// routing) its key hash.
pub(crate) type ExchangeInput<'a, T> = (&'a Stream<T>, EdgeKind, Option<KeyHashFn<T>>);

/// Extracts a record's key.
pub type KeySelector<K, T> = Arc<dyn Fn(&T) -> K + Send + Sync>;

impl<T: Data> Stream<T> {
    /// The stream on `port`, the output of operator `op` in node `node`.
    pub(crate) fn from_parts(
        graph: &Rc<RefCell<Graph>>,
        node: NodeId,
        op: OpId,
        port: Rc<Port<T>>,
    ) -> Self {
        Self::with_sides(graph, node, op, port, Rc::new(SideRegistry::default()))
    }

    /// Like [`Stream::from_parts`], with the operator's side-output registry.
    pub(crate) fn with_sides(
        graph: &Rc<RefCell<Graph>>,
        node: NodeId,
        op: OpId,
        port: Rc<Port<T>>,
        sides: Rc<SideRegistry>,
    ) -> Self {
        Self {
            graph: Rc::clone(graph),
            node,
            op,
            port,
            sides,
        }
    }

    /// Adds a chained one-input operator. `factory` makes one instance per
    /// subtask. This is the building block of `map`, `filter`, `process` and
    /// the window operators.
    pub fn transform<O, Op, F>(&self, name: &str, factory: F) -> Stream<O>
    where
        O: Data,
        Op: Operator<T, O>,
        F: Fn(&OperatorContext) -> Result<Op> + 'static,
    {
        let out = Rc::new(Port::<O>::new());
        let op = self.graph.borrow_mut().add_op_with_port(
            name,
            self.node,
            OpKind::Operator,
            Rc::clone(&out) as Rc<dyn AnyPort>,
        );
        self.graph.borrow_mut().ops[op].inputs = vec![(self.op, None)];
        let stream = Stream::from_parts(&self.graph, self.node, op, out);
        let (next_port, side_ports) = (Rc::clone(&stream.port), Rc::clone(&stream.sides));
        self.port.add(Box::new(move |ctx| {
            let next = next_port.build(ctx)?;
            let side_channels = side_ports.build(ctx)?;
            let op_ctx = ctx.operator_context(op);
            let mut operator = factory(&op_ctx).map_err(|e| e.in_operator(&op_ctx.name))?;
            if let Some(restored) = ctx.restored {
                let restore = restored.operator(
                    &op_ctx.uid,
                    crate::checkpoint::snapshot::operator_kind::<Op>(),
                    op_ctx.subtask,
                    op_ctx.parallelism,
                    ctx.config.key_groups,
                )?;
                if let Some(restore) = restore {
                    operator
                        .restore_state(&restore)
                        .map_err(|e| e.in_operator(&op_ctx.name))?;
                }
            }
            let output = Output::new(
                Arc::clone(&op_ctx.name),
                side_channels,
                Arc::clone(ctx.job_counters),
                ctx.op_counters(op),
                ctx.config.failure_policy,
            );
            Ok(Box::new(OperatorPush::new(
                operator,
                &op_ctx,
                output,
                next,
                ctx.op_counters(op),
            )) as BoxPush<T>)
        }));
        stream
    }

    /// Attaches a check run when the job is validated (before it starts);
    /// operators use it to reject bad configuration with a named field.
    pub fn validate_with(self, check: impl Fn() -> Result<()> + 'static) -> Self {
        self.graph.borrow_mut().ops[self.op].validate = Some(Box::new(check));
        self
    }

    /// Renames the operator that produces this stream (names appear in errors
    /// and the job summary, and must be unique). Unless [`Stream::uid`] is
    /// given too, the name is also its uid.
    pub fn named(self, name: &str) -> Self {
        self.graph.borrow_mut().ops[self.op].name = name.to_string();
        self
    }

    /// Gives the operator (or source) that produces this stream a stable
    /// uid: checkpoints store its state, offsets and watermarks under it,
    /// and a restore matches them by uid, so the job can change around it
    /// (operators added or removed elsewhere, names changed) and still
    /// resume. Without one, the uid is the operator's name: `.named(...)`
    /// it, or give it a uid, before its first checkpoint whenever the job
    /// may change (generated names like `map#2` depend on the order
    /// operators were added). Uids must be unique.
    pub fn uid(self, uid: &str) -> Self {
        self.graph.borrow_mut().ops[self.op].uid = Some(uid.to_string());
        self
    }

    /// How many subtasks the producing operator will run as, given the job's
    /// current configuration.
    pub fn parallelism(&self) -> usize {
        let g = self.graph.borrow();
        let default = g.config.parallelism;
        g.nodes[self.node]
            .source
            .as_ref()
            .map_or(default, |s| s.partitions.min(default))
    }

    /// Partitions the stream by key: records with equal keys go to the same
    /// subtask of the next operator (through key groups, so state can be
    /// redistributed). A key's group is hashed from its serde (postcard)
    /// encoding, which stays the same across builds, so keys must be
    /// `Serialize`; `Hash` serves in-memory lookups of keyed state. The
    /// records must be serde too: in worker mode they cross workers, in
    /// postcard (as Kafka Streams needs a serde at every repartition).
    pub fn key_by<K, F>(&self, key: F) -> KeyedStream<K, T>
    where
        K: Hash + Serialize + Eq + Clone + Send + 'static,
        F: Fn(&T) -> K + Send + Sync + 'static,
        T: Serialize + DeserializeOwned,
    {
        KeyedStream {
            input: self.clone(),
            key: Arc::new(key),
            codec: Some(RecordCodec::postcard()),
        }
    }

    /// [`key_by`](Stream::key_by) for records that are not serde: the same
    /// in one process, but such an exchange cannot cross workers, so worker
    /// mode refuses a job that has one (operators use it for their
    /// internal exchanges when worker mode is off).
    pub fn key_by_local<K, F>(&self, key: F) -> KeyedStream<K, T>
    where
        K: Hash + Serialize + Eq + Clone + Send + 'static,
        F: Fn(&T) -> K + Send + Sync + 'static,
    {
        KeyedStream {
            input: self.clone(),
            key: Arc::new(key),
            codec: None,
        }
    }

    /// Whether the job runs on several workers ([`JobConfig::worker_mode`](crate::JobConfig::worker_mode)):
    /// operators then build only exchanges that can cross workers.
    pub fn worker_mode(&self) -> bool {
        self.graph.borrow().config.worker_mode
    }

    /// Merges this stream with `other` (same type) into one stream.
    pub fn union(&self, other: &Stream<T>) -> Stream<T> {
        self.exchange(
            "union",
            vec![
                (self, EdgeKind::Forward, None),
                (other, EdgeKind::Forward, None),
            ],
            None,
        )
    }

    /// Redistributes batches round-robin over the next operator's subtasks.
    pub fn rebalance(&self) -> Stream<T> {
        self.exchange("rebalance", vec![(self, EdgeKind::Rebalance, None)], None)
    }

    /// Sends every record to every subtask of the next operator.
    pub fn broadcast(&self) -> Stream<T> {
        self.exchange("broadcast", vec![(self, EdgeKind::Broadcast, None)], None)
    }

    /// Starts a new node fed by `inputs` over channels; `codec` lets a
    /// keyed exchange cross workers.
    pub(crate) fn exchange(
        &self,
        name: &str,
        inputs: Vec<ExchangeInput<'_, T>>,
        codec: Option<RecordCodec<T>>,
    ) -> Stream<T> {
        let head = Rc::new(Port::<T>::new());
        let (node, op) = {
            let mut g = self.graph.borrow_mut();
            let op_id = g.ops.len();
            let node = g.add_node(Node {
                source: None,
                inputs: inputs
                    .iter()
                    .map(|(s, kind, _)| Edge {
                        from: s.node,
                        kind: *kind,
                    })
                    .collect(),
                factory: Box::new(InputFactory {
                    head: Rc::clone(&head),
                    op: op_id,
                    codec,
                }),
            });
            let port = Rc::clone(&head) as Rc<dyn AnyPort>;
            let op = g.add_op_with_port(name, node, OpKind::Exchange, port);
            g.ops[op].inputs = inputs
                .iter()
                .map(|(s, kind, _)| (s.op, Some(*kind)))
                .collect();
            (node, op)
        };
        for (edge, (stream, kind, hash)) in inputs.into_iter().enumerate() {
            stream
                .port
                .add(exchange_writer(node, edge, kind, hash, codec));
        }
        Stream::from_parts(&self.graph, node, op, head)
    }

    /// Sends the stream to `sink`; each subtask gets its own clone.
    pub fn sink<S: Sink<T> + Clone>(&self, sink: S) -> SinkHandle {
        let name = sink.name().to_string();
        self.sink_with(&name, move |_| Ok(sink.clone()))
    }

    /// Sends the stream to sinks made by `factory`, one per subtask.
    pub fn sink_with<S, F>(&self, name: &str, factory: F) -> SinkHandle
    where
        S: Sink<T>,
        F: Fn(SubtaskInfo) -> Result<S> + 'static,
    {
        let op = self
            .graph
            .borrow_mut()
            .add_op(name, self.node, OpKind::Sink);
        self.graph.borrow_mut().ops[op].inputs = vec![(self.op, None)];
        self.port.add(Box::new(move |ctx| {
            let sink = factory(ctx.subtask_info()).map_err(|e| e.in_operator(&ctx.op_name(op)))?;
            let counters = ctx.op_counters(op);
            Ok(Box::new(open_sink_push(ctx, op, sink, counters)?) as BoxPush<T>)
        }));
        SinkHandle {
            graph: Rc::clone(&self.graph),
            op,
        }
    }

    /// The side output `tag` of the operator that produced this stream.
    pub fn side_output<U: Data>(&self, tag: &OutputTag<U>) -> Stream<U> {
        let port = match self.sides.port(tag) {
            Ok((port, created)) => {
                if created {
                    self.graph.borrow_mut().ops[self.op]
                        .ports
                        .push(Rc::clone(&port) as Rc<dyn AnyPort>);
                }
                port
            }
            // A tag id bound to two types cannot happen through the typed
            // API; fall back to a detached port, which validation reports.
            Err(_) => Rc::new(Port::new()),
        };
        Stream {
            graph: Rc::clone(&self.graph),
            node: self.node,
            op: self.op,
            port,
            sides: Rc::clone(&self.sides),
        }
    }

    /// Records the producing operator rejected, with the reason.
    pub fn dead_letters(&self) -> Stream<DeadLetter> {
        self.side_output(&OutputTag::dead_letters())
    }
}

/// A sink added to the job ([`Stream::sink`]): name it and give it a uid.
pub struct SinkHandle {
    graph: Rc<RefCell<Graph>>,
    op: OpId,
}

impl fmt::Debug for SinkHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.graph.borrow().ops.get(self.op).map(|o| o.name.clone());
        f.debug_struct("SinkHandle").field("sink", &name).finish()
    }
}

impl SinkHandle {
    /// Renames the sink (errors, the job summary; and its uid unless
    /// [`SinkHandle::uid`] is given).
    pub fn named(self, name: &str) -> Self {
        self.graph.borrow_mut().ops[self.op].name = name.to_string();
        self
    }

    /// Gives the sink a stable uid: checkpoints store its transactions
    /// under it (see [`Stream::uid`]).
    pub fn uid(self, uid: &str) -> Self {
        self.graph.borrow_mut().ops[self.op].uid = Some(uid.to_string());
        self
    }
}

/// A stream partitioned by key; see [`Stream::key_by`].
pub struct KeyedStream<K, T> {
    input: Stream<T>,
    key: KeySelector<K, T>,
    /// How its records cross workers (`None`: they cannot).
    codec: Option<RecordCodec<T>>,
}

impl<K, T> Clone for KeyedStream<K, T> {
    fn clone(&self) -> Self {
        Self {
            input: self.input.clone(),
            key: Arc::clone(&self.key),
            codec: self.codec,
        }
    }
}

impl<K, T> fmt::Debug for KeyedStream<K, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedStream")
            .field("input", &self.input)
            .finish()
    }
}

impl<K: Hash + Serialize + Eq + Clone + Send + 'static, T: Data> KeyedStream<K, T> {
    /// The key selector.
    pub fn key_selector(&self) -> KeySelector<K, T> {
        Arc::clone(&self.key)
    }

    /// The stream before partitioning.
    pub fn input(&self) -> &Stream<T> {
        &self.input
    }

    /// The records, exchanged by key group to the subtasks of a new node.
    pub fn partitioned(&self) -> Stream<T> {
        let key = Arc::clone(&self.key);
        let hash: KeyHashFn<T> = Arc::new(move |t| Ok(key_hash(&key(t))?));
        self.input.exchange(
            "key_by",
            vec![(&self.input, EdgeKind::Keyed, Some(hash))],
            self.codec,
        )
    }

    /// Adds a keyed operator after the exchange; `factory` gets the key
    /// selector so the operator can find each record's key.
    pub fn transform<O, Op, F>(&self, name: &str, factory: F) -> Stream<O>
    where
        O: Data,
        Op: Operator<T, O>,
        F: Fn(&OperatorContext, KeySelector<K, T>) -> Result<Op> + 'static,
    {
        let key = Arc::clone(&self.key);
        self.partitioned()
            .transform(name, move |ctx| factory(ctx, Arc::clone(&key)))
    }
}

/// Stamps records and generates watermarks per subtask (see
/// [`Stream::assign_timestamps`]).
struct TimestampAssigner<T> {
    timestamps: Option<crate::time::TimestampFn<T>>,
    generator: crate::time::WatermarkGenerator,
    /// The operator's parallelism (a restore at another one merges states).
    parallelism: usize,
}

impl<T: Data> Operator<T, T> for TimestampAssigner<T> {
    fn process_batch(
        &mut self,
        mut batch: Vec<crate::Record<T>>,
        out: &mut Output<T>,
    ) -> Result<()> {
        self.generator.stamp(&mut batch, self.timestamps.as_ref());
        out.push_batch(batch);
        let wm = self.generator.current();
        if wm.is_set() {
            out.emit_watermark(wm);
        }
        Ok(())
    }

    fn forwards_watermarks(&self) -> bool {
        false
    }

    fn snapshot_state(&mut self, snapshot: &mut crate::SnapshotWriter<'_>) -> Result<()> {
        let (max_timestamp, explicit) = self.generator.state();
        snapshot.put(GENERATOR, &(max_timestamp.millis(), explicit.millis()))
    }

    /// At the same parallelism each subtask continues with its own
    /// generator. At another one the records are spread differently, so a
    /// subtask starts from the most conservative old state (the smallest),
    /// which never judges a record late that an old subtask would not have.
    fn restore_state(&mut self, restore: &crate::RestoreContext) -> Result<()> {
        let states: Vec<(i64, i64)> = restore.read_all(GENERATOR)?;
        let state = if restore.same_parallelism(self.parallelism) {
            states.get(restore.subtask()).copied()
        } else {
            // Each component on its own: the watermark never ends up above
            // any old subtask's.
            let max_timestamp = states.iter().map(|s| s.0).min();
            let explicit = states.iter().map(|s| s.1).min();
            max_timestamp.zip(explicit)
        };
        if let Some((max_timestamp, explicit)) = state {
            self.generator.restore(
                crate::EventTime::from_millis(max_timestamp),
                crate::EventTime::from_millis(explicit),
            );
        }
        Ok(())
    }
}

/// The snapshot file of a timestamp assigner's watermark generator.
const GENERATOR: &str = "watermark-generator";

impl<T: Data> Stream<T> {
    /// Re-stamps records with `strategy`'s timestamps and replaces upstream
    /// watermarks with ones generated here, per subtask, after every batch
    /// (only `+inf` at the end of input passes through). Checkpoints keep
    /// each subtask's generator, so lateness after a restore is what it was.
    /// Prefer giving the strategy to the source, which generates watermarks
    /// per partition.
    pub fn assign_timestamps(&self, strategy: crate::time::WatermarkStrategy<T>) -> Stream<T> {
        let check = strategy.clone();
        self.transform("assign_timestamps", move |ctx| {
            Ok(TimestampAssigner {
                timestamps: strategy.timestamps.clone(),
                generator: strategy.generator(),
                parallelism: ctx.parallelism,
            })
        })
        .validate_with(move || check.validate("assign_timestamps"))
    }
}
