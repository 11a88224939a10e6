//! The job cut into stages at its keyed exchanges: the unit worker mode
//! distributes (its design is in `tideline_kafka::workers`).
//!
//! A **stage** is the set of nodes joined by forward, rebalance and
//! broadcast edges; a keyed edge always starts a new one, and is where a
//! job on several workers writes to a repartition topic.
//!
//! # Invariants
//! - The layout is a function of the job code alone: operator names are
//!   given in the order the code adds operators (`map`, `map#2`, …) and
//!   uids where set, so every worker running the same binary computes the
//!   same layout. Parallelism, batch sizes, partition counts and other
//!   configuration are left out: they may differ between workers, or grow
//!   (partitions added to a source topic), without making it another job.
//! - Stages are numbered in the order of their first node, which is the
//!   order the code creates them; [`StageLayout::fingerprint`] hashes the
//!   whole layout, so two workers agree on it exactly when their layouts
//!   are equal.

use serde::Serialize;

use super::{EdgeKind, Graph, OpKind};
use crate::error::{Error, Result};

/// The job's stages (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StageLayout {
    /// In the order the job creates them.
    pub stages: Vec<Stage>,
}

/// One stage of a [`StageLayout`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Stage {
    /// Its sources' uids, else its keyed exchanges', joined by `+`.
    pub id: String,
    /// The uids of its sources.
    pub sources: Vec<String>,
    /// The uids of its operators and sinks (not exchanges), in the order
    /// the job added them.
    pub operators: Vec<String>,
    /// The keyed exchanges it reads, in the order of its inputs.
    pub keyed_inputs: Vec<KeyedInput>,
}

/// A keyed exchange into a [`Stage`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KeyedInput {
    /// The exchange's uid (`key_by`, `key_by#2`, … unless set).
    pub exchange: String,
    /// The index of the stage it reads from.
    pub from_stage: usize,
}

/// Kafka's longest topic name.
const MAX_TOPIC_NAME: usize = 249;

impl StageLayout {
    /// A hash of the whole layout (XXH3 of its JSON form): equal for equal
    /// layouts, on every machine and build.
    pub fn fingerprint(&self) -> u64 {
        // Serializing plain strings and numbers cannot fail; an empty
        // body would still hash to a fixed value.
        let json = serde_json::to_vec(self).unwrap_or_default();
        xxhash_rust::xxh3::xxh3_64(&json)
    }

    /// The repartition topic of `input` for the job `application_id`:
    /// `<application-id>-<exchange uid>-repartition`, characters Kafka does
    /// not allow in a topic name (anything but ASCII letters, digits, `.`,
    /// `_` and `-`) in the uid replaced by `-`.
    ///
    /// # Errors
    /// An application id that is empty or holds such characters, or a
    /// name longer than Kafka allows (249 characters).
    pub fn repartition_topic(&self, application_id: &str, input: &KeyedInput) -> Result<String> {
        Self::repartition_topic_of(application_id, &input.exchange)
    }

    /// [`StageLayout::repartition_topic`] of the exchange whose uid is
    /// `exchange`.
    ///
    /// # Errors
    /// As [`StageLayout::repartition_topic`].
    pub fn repartition_topic_of(application_id: &str, exchange: &str) -> Result<String> {
        let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if application_id.is_empty() || !application_id.chars().all(legal) {
            return Err(Error::config(
                "workers.application_id",
                format!(
                    "'{application_id}' cannot name Kafka topics: use ASCII letters, digits, \
                     '.', '_' and '-' only"
                ),
            ));
        }
        let uid: String = exchange
            .chars()
            .map(|c| if legal(c) { c } else { '-' })
            .collect();
        let topic = format!("{application_id}-{uid}-repartition");
        if topic.len() > MAX_TOPIC_NAME {
            return Err(Error::config(
                "workers.application_id",
                format!(
                    "the repartition topic '{topic}' is {} characters long; Kafka allows \
                     {MAX_TOPIC_NAME}: use a shorter application id or exchange uid",
                    topic.len()
                ),
            ));
        }
        Ok(topic)
    }
}

impl Graph {
    /// Per node, the index of its stage: union-find over every edge but
    /// keyed ones, stages numbered in the order of their first node.
    pub(crate) fn node_stages(&self) -> Vec<usize> {
        let mut parent: Vec<usize> = (0..self.nodes.len()).collect();
        fn root(parent: &mut [usize], mut n: usize) -> usize {
            while parent[n] != n {
                parent[n] = parent[parent[n]];
                n = parent[n];
            }
            n
        }
        for (node, info) in self.nodes.iter().enumerate() {
            for edge in info.inputs.iter().filter(|e| e.kind != EdgeKind::Keyed) {
                let (a, b) = (root(&mut parent, node), root(&mut parent, edge.from));
                // The older node is the root, so a stage is named by its first.
                parent[a.max(b)] = a.min(b);
            }
        }
        let mut stage_of_root = vec![None; self.nodes.len()];
        let mut stages = 0;
        (0..self.nodes.len())
            .map(|node| {
                let r = root(&mut parent, node);
                *stage_of_root[r].get_or_insert_with(|| {
                    stages += 1;
                    stages - 1
                })
            })
            .collect()
    }

    /// The graph cut at its keyed exchanges (see the module docs).
    pub(crate) fn stage_layout(&self) -> StageLayout {
        let stage_of = self.node_stages();
        let count = stage_of.iter().max().map_or(0, |m| m + 1);
        let mut stages: Vec<Stage> = vec![Stage::default(); count];
        for op in &self.ops {
            let stage = &mut stages[stage_of[op.node]];
            match op.kind {
                OpKind::Source => stage.sources.push(op.uid().to_string()),
                OpKind::Operator | OpKind::Sink => stage.operators.push(op.uid().to_string()),
                OpKind::Exchange => {}
            }
        }
        for (node, info) in self.nodes.iter().enumerate() {
            let exchange = self.exchange_uid(node);
            for edge in info.inputs.iter().filter(|e| e.kind == EdgeKind::Keyed) {
                stages[stage_of[node]].keyed_inputs.push(KeyedInput {
                    exchange: exchange.clone(),
                    from_stage: stage_of[edge.from],
                });
            }
        }
        for stage in &mut stages {
            let names: Vec<&str> = if stage.sources.is_empty() {
                stage
                    .keyed_inputs
                    .iter()
                    .map(|i| i.exchange.as_str())
                    .collect()
            } else {
                stage.sources.iter().map(String::as_str).collect()
            };
            stage.id = names.join("+");
        }
        StageLayout { stages }
    }
}
