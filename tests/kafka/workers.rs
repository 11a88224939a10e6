//! Worker mode's internal topics against the real broker: repartition
//! topics made once and refused with another partition count, and workers
//! of another stage layout refused.

use std::time::Duration;

use tideline::kafka::workers::InternalTopics;
use tideline::prelude::*;
use tideline::window::Tumbling;
use tideline::StageLayout;

use super::{brokers, create_topic, unique_topic};
use crate::error_text;

/// A keyed window job whose window has `uid`.
fn layout(uid: &str) -> StageLayout {
    let job = Job::new();
    job.source(VecSource::new(vec![1u32]), WatermarkStrategy::none())
        .key_by(|x: &u32| *x)
        .window(Tumbling::of(Duration::from_millis(10)))
        .aggregate(Count)
        .uid(uid)
        .map(|r| r.value)
        .sink(CollectSink::new());
    job.stage_layout()
}

#[test]
fn repartition_topics_are_made_once_and_refused_with_another_count() -> Result<()> {
    let Some(brokers) = brokers() else {
        return Ok(());
    };
    let app = unique_topic("app");
    let layout = layout("counts");
    let topics = InternalTopics::new(&brokers, &app, 3).ensure_repartition_topics(&layout)?;
    assert_eq!(topics, vec![format!("{app}-key_by-repartition")]);
    // A second worker with the same settings finds it as it should be.
    assert_eq!(
        InternalTopics::new(&brokers, &app, 3).ensure_repartition_topics(&layout)?,
        topics
    );
    let err = error_text(InternalTopics::new(&brokers, &app, 4).ensure_repartition_topics(&layout));
    assert!(
        err.contains(&topics[0]) && err.contains("exists with 3 partitions, this job asks for 4"),
        "{err}"
    );
    Ok(())
}

#[test]
fn a_topic_made_by_hand_with_another_count_is_refused() -> Result<()> {
    let Some(brokers) = brokers() else {
        return Ok(());
    };
    let app = unique_topic("app");
    create_topic(&brokers, &format!("{app}-key_by-repartition"), 2);
    let err = error_text(
        InternalTopics::new(&brokers, &app, 6).ensure_repartition_topics(&layout("counts")),
    );
    assert!(
        err.contains("exists with 2 partitions, this job asks for 6"),
        "{err}"
    );
    Ok(())
}

#[test]
fn a_worker_of_another_layout_is_refused() -> Result<()> {
    let Some(brokers) = brokers() else {
        return Ok(());
    };
    let app = unique_topic("app");
    let topics = InternalTopics::new(&brokers, &app, 2);
    topics.check_layout(&layout("counts"))?;
    // The same job again (another worker, or a restart): accepted.
    topics.check_layout(&layout("counts"))?;
    let err = error_text(topics.check_layout(&layout("counts-v2")));
    assert!(err.contains("runs another stage layout"), "{err}");
    assert!(
        err.contains("counts-v2"),
        "the message shows the layouts: {err}"
    );
    // The first layout stays the application's.
    topics.check_layout(&layout("counts"))?;
    // The same layout routing keys with other counts would split keys.
    let err = error_text(
        InternalTopics::new(&brokers, &app, 2)
            .key_groups(64)
            .check_layout(&layout("counts")),
    );
    assert!(
        err.contains("runs with 128 key groups and 2 partitions"),
        "{err}"
    );
    let err = error_text(InternalTopics::new(&brokers, &app, 3).check_layout(&layout("counts")));
    assert!(err.contains("this worker with 128 and 3"), "{err}");
    Ok(())
}
