//! The job cut into stages at its keyed exchanges (`Job::stage_layout`),
//! what workers of one application must agree on.

use std::time::Duration;

use tideline::prelude::*;
use tideline::window::Tumbling;
use tideline::{KeyedInput, StageLayout};

use crate::error_text;

/// A source, a map, a keyed window, a rebalance and a sink; the window's
/// uid and the parallelism as given.
fn layout(window_uid: &str, parallelism: usize) -> StageLayout {
    let job = Job::new().parallelism(parallelism);
    let counts = job
        .source(VecSource::new(vec![1u32, 2, 3]), WatermarkStrategy::none())
        .map(|x: u32| x * 2)
        .key_by(|x: &u32| x % 2)
        .window(Tumbling::of(Duration::from_millis(10)))
        .aggregate(Count)
        .uid(window_uid);
    counts.map(|r| r.value).rebalance().sink(CollectSink::new());
    job.stage_layout()
}

#[test]
fn a_keyed_exchange_starts_a_stage_and_other_exchanges_do_not() -> Result<()> {
    let layout = layout("counts", 2);
    assert_eq!(layout.stages.len(), 2, "{layout:#?}");
    let (first, second) = (&layout.stages[0], &layout.stages[1]);
    assert_eq!(first.sources.len(), 1);
    assert_eq!(first.id, first.sources[0]);
    assert!(first.keyed_inputs.is_empty());
    assert!(first.operators.iter().any(|o| o == "map"));
    assert_eq!(
        second.keyed_inputs,
        vec![KeyedInput {
            exchange: "key_by".into(),
            from_stage: 0
        }]
    );
    assert_eq!(second.id, "key_by");
    assert!(second.sources.is_empty());
    // The window, the map after it and the sink behind the rebalance.
    assert!(second.operators.iter().any(|o| o == "counts"));
    assert!(second.operators.iter().any(|o| o == "map#2"));
    assert!(
        second.operators.iter().any(|o| o.contains("collect")),
        "{second:?}"
    );
    assert_eq!(
        layout.repartition_topic("clicks-per-user", &second.keyed_inputs[0])?,
        "clicks-per-user-key_by-repartition"
    );
    Ok(())
}

#[test]
fn the_fingerprint_follows_the_layout_not_the_configuration() {
    let base = layout("counts", 2);
    assert_eq!(base.fingerprint(), layout("counts", 2).fingerprint());
    assert_eq!(base.fingerprint(), layout("counts", 4).fingerprint());
    assert_ne!(base.fingerprint(), layout("counts-v2", 2).fingerprint());
}

#[test]
fn topic_names_are_checked_and_uids_made_legal() {
    let layout = layout("counts", 1);
    let input = KeyedInput {
        exchange: "key_by#2".into(),
        from_stage: 0,
    };
    assert_eq!(
        layout.repartition_topic("app", &input).ok().as_deref(),
        Some("app-key_by-2-repartition")
    );
    for bad in ["", "clicks per user", "ünïcode"] {
        let err = error_text(layout.repartition_topic(bad, &input));
        assert!(err.contains("cannot name Kafka topics"), "{bad:?}: {err}");
    }
    let long = "a".repeat(240);
    let err = error_text(layout.repartition_topic(&long, &input));
    assert!(err.contains("Kafka allows 249"), "{err}");
}

#[test]
fn unioned_sources_share_a_stage_and_name_it_together() {
    let job = Job::new();
    let a = job.source(VecSource::new(vec![1u32]), WatermarkStrategy::none());
    let b = job.source(VecSource::new(vec![2u32]), WatermarkStrategy::none());
    a.union(&b)
        .key_by(|x: &u32| *x)
        .partitioned()
        .sink(CollectSink::new());
    let layout = job.stage_layout();
    assert_eq!(layout.stages.len(), 2, "{layout:#?}");
    let sources = &layout.stages[0].sources;
    assert_eq!(sources.len(), 2);
    assert_eq!(
        layout.stages[0].id,
        format!("{}+{}", sources[0], sources[1])
    );
    assert_eq!(layout.stages[1].keyed_inputs[0].from_stage, 0);
}
