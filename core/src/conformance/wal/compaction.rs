//! Conformance cases of prefix compaction and snapshot metadata (the `compact_through` and
//! `snapshot` fields of a [`PartitionWrite`]).

use super::{append, entry, expect_eq, run, write, CaseResult, Ctx, WalFactory, P, Q};
use crate::ids::{LogIndex, PartitionId};
use crate::snapshot::SnapshotMeta;
use crate::wal::{PartitionWrite, Wal, WalError};

fn meta(partition: PartitionId, index: LogIndex, term: u64) -> SnapshotMeta {
    SnapshotMeta { partition, index, term, size: index * 10, checksum: index as u32, ..Default::default() }
}

fn snapshot_write(partition: PartitionId, index: LogIndex, term: u64, through: LogIndex) -> PartitionWrite {
    PartitionWrite {
        partition,
        compact_through: Some(through),
        snapshot: Some(meta(partition, index, term)),
        ..PartitionWrite::default()
    }
}

/// Bounds, stored range and snapshot of `partition`, checked in one go.
fn check_compacted<W: Wal>(
    wal: &W,
    partition: PartitionId,
    floor: LogIndex,
    last: LogIndex,
    snapshot: Option<SnapshotMeta>,
    what: &str,
) -> CaseResult {
    expect_eq(wal.compacted_through(partition).ctx(what)?, floor, &format!("{what}: compacted_through"))?;
    expect_eq(wal.last_index(partition).ctx(what)?, last, &format!("{what}: last_index"))?;
    expect_eq(wal.load_snapshot(partition).ctx(what)?, snapshot, &format!("{what}: load_snapshot"))?;
    let stored = wal.read_range(partition, 0, LogIndex::MAX).ctx(what)?;
    let indexes: Vec<LogIndex> = stored.iter().map(|e| e.index).collect();
    expect_eq(indexes, (floor + 1..=last).collect::<Vec<_>>(), &format!("{what}: stored indexes"))?;
    if floor > 0 {
        expect_eq(wal.term_at(partition, floor).ctx(what)?, None, &format!("{what}: term_at(floor)"))?;
    }
    Ok(())
}

pub(super) fn compaction_removes_the_prefix_atomically_with_the_snapshot<F: WalFactory>(f: &mut F) -> CaseResult {
    let mut wal = f.create();
    write(&wal, vec![append(P, run(1, 10, 1)), append(Q, run(1, 3, 1))], "append")?;
    write(&wal, vec![snapshot_write(P, 8, 1, 6), append(Q, run(4, 4, 1))], "snapshot P at 8, compact through 6")?;
    check_compacted(&wal, P, 6, 10, Some(meta(P, 8, 1)), "after compaction")?;
    expect_eq(wal.read_range(P, 1, 7).ctx("read")?, run(7, 7, 1), "a range across the floor starts above it")?;
    expect_eq(wal.term_at(P, 7).ctx("term_at")?, Some(1), "term above the floor")?;
    expect_eq(wal.last_index(Q).ctx("Q")?, 4, "the other partition's write of the batch applied")?;
    write(&wal, vec![append(P, run(11, 12, 2))], "append after compaction")?;
    wal = f.reopen(wal);
    check_compacted(&wal, P, 6, 12, Some(meta(P, 8, 1)), "after reopen")?;
    wal.compact(P, 8).ctx("compact() through the snapshot index")?;
    check_compacted(&wal, P, 8, 12, Some(meta(P, 8, 1)), "after compact()")?;
    wal.compact(P, 3).ctx("compact() below the floor")?;
    check_compacted(&wal, P, 8, 12, Some(meta(P, 8, 1)), "compacting below the floor changes nothing")
}

pub(super) fn compaction_past_the_last_entry_moves_the_floor<F: WalFactory>(f: &mut F) -> CaseResult {
    let mut wal = f.create();
    write(&wal, vec![append(P, run(1, 5, 1))], "append")?;
    // An installed snapshot ahead of the log: the whole log goes, the next entry is 21.
    let install = PartitionWrite { truncate_from: Some(3), ..snapshot_write(P, 20, 4, 20) };
    write(&wal, vec![install], "install a snapshot at 20")?;
    check_compacted(&wal, P, 20, 20, Some(meta(P, 20, 4)), "after the install")?;
    wal = f.reopen(wal);
    check_compacted(&wal, P, 20, 20, Some(meta(P, 20, 4)), "after reopen")?;
    let early = wal.write(&crate::wal::WalBatch { writes: vec![append(P, run(20, 20, 4))] });
    if !matches!(early, Err(WalError::Compacted { .. })) {
        return Err(format!("an entry at the floor must be refused as Compacted, got {early:?}"));
    }
    write(&wal, vec![append(P, run(21, 22, 4))], "append after the floor")?;
    check_compacted(&wal, P, 20, 22, Some(meta(P, 20, 4)), "after appending")?;
    expect_eq(wal.partitions().ctx("partitions")?, vec![P], "a compacted partition is listed")
}

pub(super) fn compaction_past_the_snapshot_is_refused<F: WalFactory>(f: &mut F) -> CaseResult {
    let wal = f.create();
    write(&wal, vec![append(P, run(1, 10, 1)), append(Q, run(1, 2, 1))], "append")?;
    let cases = [
        ("no snapshot at all", PartitionWrite { partition: P, compact_through: Some(3), ..Default::default() }),
        ("past the snapshot in the same write", snapshot_write(P, 4, 1, 5)),
    ];
    for (what, bad) in cases {
        let result = wal.write(&crate::wal::WalBatch { writes: vec![append(Q, run(3, 3, 1)), bad] });
        if !matches!(result, Err(WalError::Compacted { .. })) {
            return Err(format!("{what}: expected Compacted, got {result:?}"));
        }
        check_compacted(&wal, P, 0, 10, None, what)?;
        expect_eq(wal.last_index(Q).ctx(what)?, 2, &format!("{what}: the batch changed nothing"))?;
    }
    write(&wal, vec![snapshot_write(P, 4, 1, 4)], "a valid compaction")?;
    let below = [
        (
            "rewriting a compacted entry",
            PartitionWrite { partition: P, entries: vec![entry(4, 1)], ..Default::default() },
        ),
        ("truncating below the floor", PartitionWrite { partition: P, truncate_from: Some(3), ..Default::default() }),
    ];
    for (what, bad) in below {
        let result = wal.write(&crate::wal::WalBatch { writes: vec![bad] });
        if !matches!(result, Err(WalError::Compacted { .. })) {
            return Err(format!("{what}: expected Compacted, got {result:?}"));
        }
    }
    check_compacted(&wal, P, 4, 10, Some(meta(P, 4, 1)), "after the refusals")
}
