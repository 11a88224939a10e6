//! The stream–table join: exact outputs in event time (whatever the
//! arrival order), late records, and processing order.

use tideline::prelude::*;
use tideline::testing::TestJob;

/// `(user, name)` rows of a `users` table.
type User = (u32, String);
/// `(user, page)` clicks.
type Click = (u32, String);
/// `(page, the user's name when clicked)`.
type Enriched = (String, Option<String>);

fn user(id: u32, name: &str) -> User {
    (id, name.to_string())
}

fn click(id: u32, page: &str) -> Click {
    (id, page.to_string())
}

fn enrich(c: &Click, u: Option<&User>) -> Enriched {
    (c.1.clone(), u.map(|u| u.1.clone()))
}

fn seen(ts: i64, page: &str, name: Option<&str>) -> (i64, Enriched) {
    (ts, (page.to_string(), name.map(str::to_string)))
}

fn timed<T: Clone>(records: &[Record<T>]) -> Vec<(i64, T)> {
    records
        .iter()
        .map(|r| (r.timestamp.millis(), r.value.clone()))
        .collect()
}

#[test]
fn each_click_sees_the_row_as_of_its_timestamp() -> Result<()> {
    let t = TestJob::new();
    let (users_in, users) = t.push_source::<ChangelogRow<User>>(WatermarkStrategy::none());
    let (clicks_in, clicks) = t.push_source::<Click>(WatermarkStrategy::none());
    let late: OutputTag<Click> = OutputTag::new("late-clicks");
    let joined = clicks
        .key_by(|c: &Click| c.0)
        .join_table(&users.key_by(|r: &ChangelogRow<User>| r.row.0))
        .side_output_late_data(&late)
        .left(enrich);
    let (out, late_out) = (t.collect(&joined), t.collect(&joined.side_output(&late)));
    let mut run = t.start()?;

    // The clicks arrive before the table changes they must see.
    for (ts, c) in [
        (5, click(1, "/a")),
        (10, click(1, "/b")),
        (12, click(2, "/x")),
        (19, click(1, "/c")),
        (20, click(1, "/d")),
        (25, click(2, "/w")),
        (35, click(1, "/e")),
        (36, click(2, "/z")),
    ] {
        clicks_in.send_at(ts, c)?;
    }
    clicks_in.watermark(40)?;
    run.step()?;
    assert!(out.is_empty(), "nothing before the table's watermark");
    users_in.send_at(10, ChangelogRow::insert(user(1, "ada")))?;
    users_in.send_at(20, ChangelogRow::update_before(user(1, "ada")))?;
    users_in.send_at(20, ChangelogRow::update_after(user(1, "ada l.")))?;
    users_in.send_at(30, ChangelogRow::delete(user(1, "ada l.")))?;
    users_in.watermark(30)?;
    run.step()?;
    assert_eq!(
        timed(&out.records()),
        vec![
            seen(5, "/a", None),
            // A change at the click's timestamp is seen.
            seen(10, "/b", Some("ada")),
            seen(12, "/x", None),
            seen(19, "/c", Some("ada")),
            seen(20, "/d", Some("ada l.")),
            seen(25, "/w", None),
        ]
    );
    // Behind the table partition's watermark (30): takes effect at 31, so
    // the click of user 2 at 25 (already joined) never sees it, the one at
    // 36 does.
    users_in.send_at(15, ChangelogRow::insert(user(2, "bob")))?;
    // Behind the click partition's watermark (40): late.
    clicks_in.send_at(38, click(1, "/late"))?;
    users_in.watermark(50)?;
    clicks_in.watermark(50)?;
    run.step()?;
    assert_eq!(
        timed(&out.records())[6..],
        [seen(35, "/e", None), seen(36, "/z", Some("bob"))]
    );
    assert_eq!(timed(&late_out.records()), vec![(38, click(1, "/late"))]);
    let summary = run.finish()?;
    assert_eq!(summary.late_records, 1);
    assert_eq!(out.len(), 8);
    Ok(())
}

#[test]
fn an_inner_join_drops_clicks_without_a_row() -> Result<()> {
    let t = TestJob::new();
    let (users_in, users) = t.push_source::<ChangelogRow<User>>(WatermarkStrategy::none());
    let (clicks_in, clicks) = t.push_source::<Click>(WatermarkStrategy::none());
    let joined = clicks
        .key_by(|c: &Click| c.0)
        .join_table(&users.key_by(|r: &ChangelogRow<User>| r.row.0))
        .inner(|c: &Click, u: &User| format!("{} by {}", c.1, u.1));
    let out = t.collect(&joined);
    let run = t.start()?;
    users_in.send_at(10, ChangelogRow::insert(user(1, "ada")))?;
    users_in.send_at(30, ChangelogRow::delete(user(1, "ada")))?;
    for (ts, c) in [
        (5, click(1, "/a")),
        (10, click(1, "/b")),
        (29, click(1, "/c")),
        (30, click(1, "/d")),
    ] {
        clicks_in.send_at(ts, c)?;
    }
    run.finish()?;
    assert_eq!(
        timed(&out.records()),
        vec![(10, "/b by ada".to_string()), (29, "/c by ada".to_string())]
    );
    Ok(())
}

/// Timestamped table changes.
type Changes = Vec<(i64, ChangelogRow<User>)>;

/// Users 0..8 renamed every 7 ms; clicks of all users every 3 ms.
fn history() -> (Changes, Vec<(i64, Click)>) {
    let mut changes = Vec::new();
    let mut names: Vec<Option<String>> = vec![None; 8];
    for step in 0..60i64 {
        let id = (step * 5 % 8) as u32;
        let ts = step * 7;
        let new = format!("u{id}-v{step}");
        match names[id as usize].replace(new.clone()) {
            None => changes.push((ts, ChangelogRow::insert(user(id, &new)))),
            Some(old) if step % 9 == 4 => {
                changes.push((ts, ChangelogRow::delete(user(id, &old))));
                names[id as usize] = None;
            }
            Some(old) => {
                changes.push((ts, ChangelogRow::update_before(user(id, &old))));
                changes.push((ts, ChangelogRow::update_after(user(id, &new))));
            }
        }
    }
    let clicks = (0..140i64)
        .map(|i| (i * 3, click((i * 3 % 8) as u32, &format!("/p{i}"))))
        .collect();
    (changes, clicks)
}

/// The event-time join over `history`, the two inputs pushed in the order
/// `schedule` gives (`true`: next table change, `false`: next click), with
/// monotonous watermarks, at `parallelism`.
fn joined_in(schedule: &[bool], parallelism: usize) -> Result<Vec<(i64, Enriched)>> {
    let t = TestJob::from_job(Job::new().parallelism(parallelism));
    let (users_in, users) = t.push_source::<ChangelogRow<User>>(WatermarkStrategy::monotonous());
    let (clicks_in, clicks) = t.push_source::<Click>(WatermarkStrategy::monotonous());
    let joined = clicks
        .key_by(|c: &Click| c.0)
        .join_table(&users.key_by(|r: &ChangelogRow<User>| r.row.0))
        .left(enrich);
    let out = t.collect(&joined);
    let mut run = t.start()?;
    let (changes, clicks) = history();
    let (mut changes, mut clicks) = (
        changes.into_iter().peekable(),
        clicks.into_iter().peekable(),
    );
    for &table_next in schedule.iter().cycle() {
        // The scheduled side, or the other one once it is exhausted.
        if (table_next || clicks.peek().is_none()) && changes.peek().is_some() {
            if let Some((ts, c)) = changes.next() {
                users_in.send_at(ts, c)?;
            }
        } else if let Some((ts, c)) = clicks.next() {
            clicks_in.send_at(ts, c)?;
        } else {
            break;
        }
        run.step()?;
    }
    users_in.close()?;
    clicks_in.close()?;
    run.finish()?;
    let mut rows = timed(&out.records());
    rows.sort();
    Ok(rows)
}

#[test]
fn event_time_results_do_not_depend_on_arrival_order_or_parallelism() -> Result<()> {
    let reference = joined_in(&[true, false], 1)?;
    assert_eq!(reference.len(), 140);
    assert!(reference.iter().any(|(_, (_, name))| name.is_none()));
    assert!(
        reference
            .iter()
            .filter(|(_, (_, name))| name.is_some())
            .count()
            > 100
    );
    // The table far ahead, the clicks far ahead, and mixed; more subtasks.
    for (schedule, parallelism) in [
        (vec![true; 1], 1),
        (vec![false; 1], 2),
        (vec![true, false, false, false, false, true], 3),
    ] {
        assert_eq!(
            joined_in(&schedule, parallelism)?,
            reference,
            "{schedule:?} at {parallelism}"
        );
    }
    // Each click sees the version of its user as of its timestamp.
    let (changes, _) = history();
    for (ts, (page, name)) in &reference {
        let id = (ts % 8) as u32;
        let mut current = None;
        for (at, change) in changes.iter().filter(|(at, c)| *at <= *ts && c.row.0 == id) {
            let _ = at;
            current = change.is_addition().then(|| change.row.1.clone());
        }
        assert_eq!(name, &current, "{page} at {ts}");
    }
    Ok(())
}

#[test]
fn processing_order_sees_the_row_at_arrival() -> Result<()> {
    let t = TestJob::new();
    let (users_in, users) = t.push_source::<ChangelogRow<User>>(WatermarkStrategy::none());
    let (clicks_in, clicks) = t.push_source::<Click>(WatermarkStrategy::none());
    let joined = clicks
        .key_by(|c: &Click| c.0)
        .join_table(&users.key_by(|r: &ChangelogRow<User>| r.row.0))
        .processing_order()
        .left(enrich);
    let out = t.collect(&joined);
    let mut run = t.start()?;
    // No timestamps, no watermarks: joined at once.
    clicks_in.send(click(1, "/a"))?;
    run.step()?;
    users_in.send(ChangelogRow::insert(user(1, "ada")))?;
    run.step()?;
    clicks_in.send(click(1, "/b"))?;
    run.step()?;
    assert_eq!(
        out.values(),
        vec![
            ("/a".to_string(), None),
            ("/b".to_string(), Some("ada".to_string()))
        ]
    );
    users_in.send(ChangelogRow::update_before(user(1, "ada")))?;
    users_in.send(ChangelogRow::update_after(user(1, "ada l.")))?;
    run.step()?;
    clicks_in.send(click(1, "/c"))?;
    run.step()?;
    users_in.send(ChangelogRow::delete(user(1, "ada l.")))?;
    run.step()?;
    clicks_in.send(click(1, "/d"))?;
    run.finish()?;
    assert_eq!(
        out.values()[2..],
        [
            ("/c".to_string(), Some("ada l.".to_string())),
            ("/d".to_string(), None)
        ]
    );
    Ok(())
}
