//! `ChangelogTableSink`: the files' exact contents, the commit protocol,
//! and restores.

use std::path::Path;

use tideline::prelude::*;
use tideline::{Committer, SubtaskInfo};

use super::{delete, insert, order, orders_table, tempdir, update, Order};

fn read_parquet(path: &Path) -> Result<Vec<Order>> {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let file = std::fs::File::open(path).map_err(Error::user)?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.build())
        .map_err(Error::user)?;
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.map_err(Error::user)?;
        rows.extend(serde_arrow::from_record_batch::<Vec<Order>>(&batch).map_err(Error::user)?);
    }
    Ok(rows)
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(Error::user)
}

fn orders_sink(dir: &Path) -> ChangelogTableSink<u32, Order> {
    ChangelogTableSink::new(|o: &Order| o.id)
        .csv(dir.join("orders.csv"))
        .parquet(dir.join("snapshots").join("orders.parquet"))
}

#[test]
fn a_bounded_job_writes_the_final_table_once() -> Result<()> {
    let dir = tempdir()?;
    let sink = orders_sink(dir.path());
    let job = Job::new().parallelism(2);
    let changes = vec![
        insert(order(3, "pending", 30)),
        insert(order(1, "pending", 10)),
        insert(order(2, "pending", 20)),
        update(order(1, "paid", 10)),
        delete(2),
        update(order(3, "paid, \"express\"", 31)),
    ];
    orders_table(&job.source(VecSource::new(changes), WatermarkStrategy::none()))
        .sink(sink.clone());
    job.run()?;
    let expected = vec![order(1, "paid", 10), order(3, "paid, \"express\"", 31)];
    assert_eq!(sink.values(), expected);
    assert_eq!(sink.get(&3), Some(order(3, "paid, \"express\"", 31)));
    assert_eq!(sink.received(), 8);
    assert_eq!(
        read(&dir.path().join("orders.csv"))?,
        "id,status,amount\n1,paid,10\n3,\"paid, \"\"express\"\"\",31\n"
    );
    assert_eq!(
        read_parquet(&dir.path().join("snapshots").join("orders.parquet"))?,
        expected
    );
    // Only the snapshots and the hidden state file: no temporary file left.
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .map_err(Error::user)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    assert_eq!(names, vec![".orders.csv.state", "orders.csv", "snapshots"]);
    Ok(())
}

#[test]
fn an_empty_table_is_an_empty_csv_and_a_parquet_file_without_rows() -> Result<()> {
    let dir = tempdir()?;
    let sink = orders_sink(dir.path());
    let job = Job::new().parallelism(1);
    orders_table(&job.source(
        VecSource::new(vec![insert(order(1, "pending", 1)), delete(1)]),
        WatermarkStrategy::none(),
    ))
    .sink(sink.clone());
    job.run()?;
    assert!(sink.is_empty());
    assert_eq!(read(&dir.path().join("orders.csv"))?, "");
    assert_eq!(
        read_parquet(&dir.path().join("snapshots").join("orders.parquet"))?,
        vec![]
    );
    Ok(())
}

fn rows(values: &[(i64, ChangelogRow<Order>)]) -> Vec<Record<ChangelogRow<Order>>> {
    values
        .iter()
        .map(|(t, r)| Record::new(*t, r.clone()))
        .collect()
}

fn committer_of(sink: &ChangelogTableSink<u32, Order>) -> Result<std::sync::Arc<dyn Committer>> {
    sink.committer()
        .ok_or_else(|| Error::user("the table sink has a committer"))
}

/// The protocol by hand: two subtasks, checkpoints 1 and 2, a crash after
/// 2 was pre-committed but never completed, and a restore from 1.
#[test]
fn files_show_completed_checkpoints_only_and_a_restore_continues_from_one() -> Result<()> {
    let dir = tempdir()?;
    let csv = dir.path().join("orders.csv");
    let sink = orders_sink(dir.path());
    let committer = committer_of(&sink)?;
    let (mut a, mut b) = (sink.clone(), sink.clone());
    a.open(SubtaskInfo {
        subtask: 0,
        parallelism: 2,
        isolated: false,
    })?;
    b.open(SubtaskInfo {
        subtask: 1,
        parallelism: 2,
        isolated: false,
    })?;
    a.write_batch(rows(&[
        (1, ChangelogRow::insert(order(1, "pending", 10))),
        (2, ChangelogRow::update_before(order(1, "pending", 10))),
        (2, ChangelogRow::update_after(order(1, "paid", 10))),
    ]))?;
    b.write_batch(rows(&[(1, ChangelogRow::insert(order(2, "pending", 20)))]))?;
    let t1 = [a.pre_commit(1)?, b.pre_commit(1)?];
    // Pre-committed, not complete: nothing visible.
    assert!(!csv.exists());
    assert!(sink.is_empty());
    for t in t1.iter().flatten() {
        committer.commit(t)?;
    }
    committer.checkpoint_committed(1)?;
    let after_1 = "id,status,amount\n1,paid,10\n2,pending,20\n";
    assert_eq!(read(&csv)?, after_1);
    assert_eq!(sink.committed_checkpoint(), 1);

    // Checkpoint 2 is pre-committed, more changes follow, then the crash.
    a.write_batch(rows(&[(3, ChangelogRow::delete(order(1, "paid", 10)))]))?;
    let t2 = a.pre_commit(2)?;
    assert!(t2.is_some());
    b.write_batch(rows(&[(4, ChangelogRow::insert(order(4, "pending", 40)))]))?;
    assert_eq!(read(&csv)?, after_1, "never completed: never visible");
    drop((a, b, sink, committer));

    // A new process: a new sink object restores checkpoint 1, committing
    // its transactions again (already in the state file: not twice).
    let restored = orders_sink(dir.path());
    let committer = committer_of(&restored)?;
    let keep: Vec<Vec<u8>> = t1.iter().flatten().cloned().collect();
    committer.abort_uncommitted(1, &keep)?;
    for t in &keep {
        committer.commit(t)?;
    }
    committer.checkpoint_committed(1)?;
    assert_eq!(
        restored.values(),
        vec![order(1, "paid", 10), order(2, "pending", 20)]
    );
    assert_eq!(read(&csv)?, after_1);

    // The replay delivers what came after checkpoint 1 again.
    let mut a = restored.clone();
    a.open(SubtaskInfo {
        subtask: 0,
        parallelism: 1,
        isolated: false,
    })?;
    a.write_batch(rows(&[
        (3, ChangelogRow::delete(order(1, "paid", 10))),
        (4, ChangelogRow::insert(order(4, "pending", 40))),
    ]))?;
    if let Some(t) = a.pre_commit(3)? {
        committer.commit(&t)?;
    }
    committer.checkpoint_committed(3)?;
    assert_eq!(
        read(&csv)?,
        "id,status,amount\n2,pending,20\n4,pending,40\n"
    );
    a.finish()
}

#[test]
fn a_restore_without_the_state_file_is_refused() -> Result<()> {
    let dir = tempdir()?;
    let sink = orders_sink(dir.path());
    let committer = committer_of(&sink)?;
    let mut a = sink.clone();
    a.write_batch(rows(&[(1, ChangelogRow::insert(order(1, "pending", 10)))]))?;
    let t1 = a
        .pre_commit(1)?
        .ok_or_else(|| Error::user("no transaction"))?;
    committer.commit(&t1)?;
    committer.checkpoint_committed(1)?;
    a.write_batch(rows(&[(2, ChangelogRow::insert(order(2, "pending", 20)))]))?;
    let t2 = a
        .pre_commit(2)?
        .ok_or_else(|| Error::user("no transaction"))?;
    std::fs::remove_file(dir.path().join(".orders.csv.state")).map_err(Error::user)?;

    let restored = orders_sink(dir.path());
    let committer = committer_of(&restored)?;
    committer.abort_uncommitted(2, std::slice::from_ref(&t2))?;
    let err = committer.commit(&t2).err().map(|e| e.to_string());
    assert!(
        err.as_deref()
            .is_some_and(|e| e.contains("as of checkpoint 1")
                && e.contains(".orders.csv.state does not exist")),
        "{err:?}"
    );
    // Without files, a new sink object cannot restore a table either.
    let memory = ChangelogTableSink::new(|o: &Order| o.id);
    let committer = committer_of(&memory)?;
    committer.abort_uncommitted(2, std::slice::from_ref(&t2))?;
    let err = committer.commit(&t2).err().map(|e| e.to_string());
    assert!(
        err.as_deref().is_some_and(|e| e.contains("has no file")),
        "{err:?}"
    );
    Ok(())
}

#[test]
fn a_new_job_starts_from_an_empty_table_whatever_an_earlier_one_left() -> Result<()> {
    let dir = tempdir()?;
    for (changes, expected) in [
        (
            vec![insert(order(1, "pending", 10))],
            "id,status,amount\n1,pending,10\n",
        ),
        (
            vec![insert(order(2, "paid", 20))],
            "id,status,amount\n2,paid,20\n",
        ),
    ] {
        let sink = orders_sink(dir.path());
        let job = Job::new().parallelism(1);
        orders_table(&job.source(VecSource::new(changes), WatermarkStrategy::none()))
            .sink(sink.clone());
        job.run()?;
        assert_eq!(read(&dir.path().join("orders.csv"))?, expected);
    }
    Ok(())
}

#[test]
fn the_same_file_twice_is_a_configuration_error() {
    let job = Job::new().parallelism(1);
    let sink = ChangelogTableSink::new(|o: &Order| o.id)
        .csv("out/orders.csv")
        .csv("out/orders.csv");
    orders_table(&job.source(
        VecSource::new(vec![insert(order(1, "a", 1))]),
        WatermarkStrategy::none(),
    ))
    .sink(sink);
    let err = job.run().err().map(|e| e.to_string());
    assert!(
        err.as_deref()
            .is_some_and(|e| e.contains("changelog_table_sink.csv") && e.contains("given twice")),
        "{err:?}"
    );
}
