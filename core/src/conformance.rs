//! Conformance suites: executable versions of the written contracts of the pluggable layers.
//!
//! Every adapter must pass its suite unchanged. The suites are ordinary (non-`cfg(test)`) code so
//! that adapter crates can call them from their own tests.
//!
//! * [`wal`]: the [`Wal`](crate::wal::Wal) contract (in-memory, SQLite, RocksDB adapters).
//! * [`WriteHookWal`]: test support that wraps any WAL and intercepts its writes (slow or
//!   failing storage on demand).
//! * [`disk_faults`]: the faults of a real disk on command over any WAL, built on it: write
//!   errors, fsync errors, writes that hang.

pub mod disk_faults;
pub use disk_faults::{DiskFault, DiskFaults};

pub mod wal {
    //! The WAL conformance suite: the [`Wal`] contract of [`crate::wal`], case by case.
    //!
    //! An adapter implements [`WalFactory`] for its storage (how to open fresh, empty storage and
    //! how to close and reopen it) and calls [`run_all`] from a test. [`run_all`] runs every case
    //! in a fixed order and panics with ``wal conformance case `<name>` failed: <detail>`` on the
    //! first failure (a panic inside a case is reported the same way). [`cases`] gives the cases
    //! themselves, for adapters that want one test per case or to collect every failure.
    //!
    //! Each case calls [`WalFactory::create`] once for fresh storage, so cases do not see each
    //! other's data; the factory must hand out storages that do not share state.
    //!
    //! ```
    //! use kommander_core::conformance::wal::{self, WalFactory};
    //! use kommander_core::MemoryWal;
    //!
    //! // A durable adapter opens a new file in `create` and closes + reopens it in `reopen`.
    //! struct MemoryFactory;
    //!
    //! impl WalFactory for MemoryFactory {
    //!     type Wal = MemoryWal;
    //!
    //!     fn create(&mut self) -> MemoryWal {
    //!         MemoryWal::new()
    //!     }
    //!
    //!     fn reopen(&mut self, wal: MemoryWal) -> MemoryWal {
    //!         let same_storage = wal.clone();
    //!         drop(wal);
    //!         same_storage
    //!     }
    //! }
    //!
    //! wal::run_all(&mut MemoryFactory);
    //! ```
    //!
    //! Entries built by the suite come from [`entry`] unless a case needs specific field values;
    //! all reads are compared field by field with what was written.

    use crate::entry::{EntryKind, LogEntry};
    use crate::hlc::HlcTimestamp;
    use crate::ids::{LogIndex, NodeId, PartitionId, Term};
    use crate::wal::{HardState, PartitionWrite, Wal, WalBatch, WalError};
    use std::any::Any;
    use std::fmt::Debug;
    use std::panic::{self, AssertUnwindSafe};
    use std::sync::atomic::{AtomicBool, Ordering};

    mod compaction;
    use compaction::{
        compaction_past_the_last_entry_moves_the_floor, compaction_past_the_snapshot_is_refused,
        compaction_removes_the_prefix_atomically_with_the_snapshot,
    };

    /// Opens storages for the suite.
    pub trait WalFactory {
        /// The implementation under test.
        type Wal: Wal;

        /// Open a WAL on fresh, empty storage that shares nothing with earlier calls.
        fn create(&mut self) -> Self::Wal;

        /// Close `wal` (drop it, releasing files and locks) and open the same storage again, as a
        /// restarted process would. Implementations without persistence may return `wal` itself.
        fn reopen(&mut self, wal: Self::Wal) -> Self::Wal;
    }

    /// What a case returns: `Err` carries a description of the first violated expectation.
    pub type CaseResult = Result<(), String>;

    /// One named case of the suite.
    pub struct WalCase<F: WalFactory> {
        /// Name of the case (a snake_case identifier, unique within the suite).
        pub name: &'static str,
        /// Runs the case against fresh storage from the factory.
        pub run: fn(&mut F) -> CaseResult,
    }

    macro_rules! wal_cases {
        ($($name:ident),* $(,)?) => {
            /// Every case of the suite, in the order [`run_all`] runs them.
            pub fn cases<F: WalFactory>() -> Vec<WalCase<F>> {
                vec![$(WalCase { name: stringify!($name), run: $name::<F> }),*]
            }

            /// Names of every case of the suite, in the order [`run_all`] runs them.
            pub fn case_names() -> Vec<&'static str> {
                vec![$(stringify!($name)),*]
            }
        };
    }

    wal_cases![
        empty_wal,
        append_and_read_back_every_field,
        large_payload_round_trip,
        read_range_bounds,
        term_at_every_index,
        consecutive_batches,
        same_partition_writes_in_one_batch_apply_in_order,
        many_partitions_in_one_batch,
        partitions_are_independent,
        overwrite_replaces_longer_suffix,
        overwrite_at_first_and_last_index,
        truncate_from_then_append_in_one_write,
        truncate_from_without_entries,
        truncate_suffix_past_end_is_noop,
        truncate_suffix_from_one_empties,
        truncate_suffix_then_append,
        gap_rejects_whole_batch,
        gap_after_earlier_write_in_batch_rejected,
        non_consecutive_entries_rejected,
        index_zero_rejected,
        empty_batch_and_empty_writes_change_nothing,
        hard_state_save_load_last_wins,
        hard_state_per_partition,
        hard_state_only_write,
        hard_state_with_entries_in_one_write,
        reopen_preserves_entries,
        reopen_preserves_hard_state,
        reopen_preserves_truncations,
        reopen_in_place_keeps_everything_and_writes_on,
        partitions_listed_ascending,
        partitions_omit_emptied,
        concurrent_readers_see_consecutive_prefix,
        large_volume,
        compaction_removes_the_prefix_atomically_with_the_snapshot,
        compaction_past_the_last_entry_moves_the_floor,
        compaction_past_the_snapshot_is_refused,
    ];

    /// Run every case against storages from `factory`, in order.
    ///
    /// # Panics
    ///
    /// On the first failing case, with ``wal conformance case `<name>` failed: <detail>``.
    pub fn run_all<F: WalFactory>(factory: &mut F) {
        for case in cases::<F>() {
            run_one(factory, &case);
        }
    }

    /// Run the case called `name` against storage from `factory`.
    ///
    /// # Panics
    ///
    /// When the case fails (same message as [`run_all`]) or no case has that name.
    pub fn run_case<F: WalFactory>(factory: &mut F, name: &str) {
        match cases::<F>().into_iter().find(|case| case.name == name) {
            Some(case) => run_one(factory, &case),
            None => panic!("no wal conformance case named `{name}`; cases: {:?}", case_names()),
        }
    }

    /// Run one case, catching a panic inside it, and report its outcome without panicking.
    pub fn check_case<F: WalFactory>(factory: &mut F, case: &WalCase<F>) -> CaseResult {
        match panic::catch_unwind(AssertUnwindSafe(|| (case.run)(factory))) {
            Ok(result) => result,
            Err(payload) => Err(format!("panicked: {}", panic_message(&*payload))),
        }
    }

    fn run_one<F: WalFactory>(factory: &mut F, case: &WalCase<F>) {
        if let Err(detail) = check_case(factory, case) {
            panic!("wal conformance case `{}` failed: {detail}", case.name);
        }
    }

    fn panic_message(payload: &(dyn Any + Send)) -> String {
        if let Some(message) = payload.downcast_ref::<&str>() {
            (*message).to_owned()
        } else if let Some(message) = payload.downcast_ref::<String>() {
            message.clone()
        } else {
            "non-string panic payload".to_owned()
        }
    }

    /// The entry the suite writes at `index` in `term`: an auto-commit application entry of type
    /// `"t"` whose payload and ticket are derived from the index.
    pub fn entry(index: LogIndex, term: Term) -> LogEntry {
        LogEntry {
            index,
            term,
            kind: EntryKind::Application { auto_commit: true },
            log_type: "t".into(),
            payload: format!("payload-{index}").into_bytes().into(),
            ticket: HlcTimestamp { physical_ms: index, logical: 0, node: 1 },
        }
    }

    // ---------------------------------------------------------------------------------------
    // Helpers
    // ---------------------------------------------------------------------------------------

    const P: PartitionId = PartitionId(1);
    const Q: PartitionId = PartitionId(2);
    const R: PartitionId = PartitionId(3);

    /// Turns storage errors into case failures with context.
    trait Ctx<T> {
        fn ctx(self, what: &str) -> Result<T, String>;
    }

    impl<T> Ctx<T> for Result<T, WalError> {
        fn ctx(self, what: &str) -> Result<T, String> {
            self.map_err(|e| format!("{what}: unexpected error: {e} ({e:?})"))
        }
    }

    fn expect_eq<T: PartialEq + Debug>(got: T, expected: T, what: &str) -> CaseResult {
        if got == expected {
            Ok(())
        } else {
            Err(format!("{what}: expected {expected:?}, got {got:?}"))
        }
    }

    /// Entries `from..=to`, all in `term`.
    fn run(from: LogIndex, to: LogIndex, term: Term) -> Vec<LogEntry> {
        (from..=to).map(|index| entry(index, term)).collect()
    }

    fn append(partition: PartitionId, entries: Vec<LogEntry>) -> PartitionWrite {
        PartitionWrite { partition, entries, ..PartitionWrite::default() }
    }

    fn hard_state_write(partition: PartitionId, state: HardState) -> PartitionWrite {
        PartitionWrite { partition, hard_state: Some(state), ..PartitionWrite::default() }
    }

    fn hs(term: Term, voted_for: Option<u64>, commit: LogIndex) -> HardState {
        HardState { term, voted_for: voted_for.map(NodeId), commit }
    }

    fn write<W: Wal>(wal: &W, writes: Vec<PartitionWrite>, what: &str) -> CaseResult {
        wal.write(&WalBatch { writes }).ctx(&format!("{what}: write"))
    }

    fn describe(e: &LogEntry) -> String {
        let head = &e.payload[..e.payload.len().min(16)];
        format!(
            "LogEntry {{ index: {}, term: {}, kind: {:?}, log_type: {:?}, payload: {} bytes \
             starting {:?}, ticket: {:?} }}",
            e.index,
            e.term,
            e.kind,
            e.log_type,
            e.payload.len(),
            head,
            e.ticket
        )
    }

    fn span(entries: &[LogEntry]) -> String {
        match (entries.first(), entries.last()) {
            (Some(first), Some(last)) => format!("indexes {}..={}", first.index, last.index),
            _ => "none".to_owned(),
        }
    }

    fn expect_entries(got: &[LogEntry], expected: &[LogEntry], what: &str) -> CaseResult {
        if got.len() != expected.len() {
            return Err(format!(
                "{what}: expected {} entries ({}), got {} ({})",
                expected.len(),
                span(expected),
                got.len(),
                span(got)
            ));
        }
        for (got, expected) in got.iter().zip(expected) {
            if got != expected {
                return Err(format!("{what}: entry differs: expected {}, got {}", describe(expected), describe(got)));
            }
        }
        Ok(())
    }

    /// Check that `partition` holds exactly `expected` (which must be indexes `1..=n`), through
    /// every read method.
    fn check_log<W: Wal>(wal: &W, partition: PartitionId, expected: &[LogEntry], what: &str) -> CaseResult {
        let last = expected.last().map_or(0, |e| e.index);
        expect_eq(wal.last_index(partition).ctx(what)?, last, &format!("{what}: last_index({partition})"))?;
        let all = wal.read_range(partition, 1, LogIndex::MAX).ctx(what)?;
        expect_entries(&all, expected, &format!("{what}: read_range({partition}, 1, MAX)"))?;
        expect_eq(wal.term_at(partition, 0).ctx(what)?, Some(0), &format!("{what}: term_at(0)"))?;
        for e in expected {
            expect_eq(
                wal.term_at(partition, e.index).ctx(what)?,
                Some(e.term),
                &format!("{what}: term_at({partition}, {})", e.index),
            )?;
        }
        expect_eq(
            wal.term_at(partition, last + 1).ctx(what)?,
            None,
            &format!("{what}: term_at({partition}, {}) past the end", last + 1),
        )
    }

    fn expect_non_contiguous(
        result: Result<(), WalError>,
        partition: PartitionId,
        expected: LogIndex,
        got: LogIndex,
        what: &str,
    ) -> CaseResult {
        let wanted = WalError::NonContiguous { partition, expected, got };
        match result {
            Err(error) if error == wanted => Ok(()),
            Err(error) => Err(format!("{what}: expected Err({wanted:?}), got Err({error:?})")),
            Ok(()) => Err(format!("{what}: expected Err({wanted:?}), but the write was accepted")),
        }
    }

    /// Everything observable about some partitions, to prove a rejected batch changed nothing.
    #[derive(Debug, PartialEq)]
    struct Snapshot {
        partitions: Vec<PartitionId>,
        logs: Vec<(PartitionId, LogIndex, Vec<LogEntry>, Option<HardState>)>,
    }

    fn snapshot<W: Wal>(wal: &W, partitions: &[PartitionId]) -> Result<Snapshot, String> {
        let mut logs = Vec::new();
        for &p in partitions {
            logs.push((
                p,
                wal.last_index(p).ctx("snapshot: last_index")?,
                wal.read_range(p, 1, LogIndex::MAX).ctx("snapshot: read_range")?,
                wal.load_hard_state(p).ctx("snapshot: load_hard_state")?,
            ));
        }
        Ok(Snapshot { partitions: wal.partitions().ctx("snapshot: partitions")?, logs })
    }

    fn expect_unchanged<W: Wal>(wal: &W, before: &Snapshot, what: &str) -> CaseResult {
        let ids: Vec<PartitionId> = before.logs.iter().map(|log| log.0).collect();
        let after = snapshot(wal, &ids)?;
        if after == *before {
            Ok(())
        } else {
            Err(format!("{what}: the rejected batch changed the wal: before {before:?}, after {after:?}"))
        }
    }

    /// An entry of every kind, with unusual but valid field values.
    fn assorted_entries() -> Vec<LogEntry> {
        let ticket = HlcTimestamp { physical_ms: 1_700_000_000_123, logical: 7, node: 42 };
        vec![
            LogEntry {
                index: 1,
                term: 1,
                kind: EntryKind::Barrier,
                log_type: crate::LogType::EMPTY,
                payload: bytes::Bytes::new(),
                ticket: HlcTimestamp::ZERO,
            },
            LogEntry {
                index: 2,
                term: 1,
                kind: EntryKind::Application { auto_commit: true },
                log_type: "orders".into(),
                payload: b"hello".to_vec().into(),
                ticket: HlcTimestamp { physical_ms: 1_700_000_000_000, logical: 0, node: 1 },
            },
            LogEntry {
                index: 3,
                term: 2,
                kind: EntryKind::Application { auto_commit: false },
                log_type: "ünïcødé type / with spaces".into(),
                payload: (0..=255u8).collect(),
                ticket,
            },
            LogEntry {
                index: 4,
                term: 2,
                kind: EntryKind::CommitMarker,
                log_type: crate::LogType::EMPTY,
                payload: bytes::Bytes::new(),
                ticket,
            },
            LogEntry {
                index: 5,
                term: 2,
                kind: EntryKind::Application { auto_commit: false },
                log_type: "empty-payload".into(),
                payload: bytes::Bytes::new(),
                ticket: HlcTimestamp { physical_ms: 1_700_000_000_124, logical: 0, node: 42 },
            },
            LogEntry {
                index: 6,
                term: 3,
                kind: EntryKind::RollbackMarker,
                log_type: crate::LogType::EMPTY,
                payload: bytes::Bytes::new(),
                ticket: HlcTimestamp { physical_ms: 1_700_000_000_124, logical: 0, node: 42 },
            },
            LogEntry {
                index: 7,
                term: 3,
                kind: EntryKind::Application { auto_commit: true },
                log_type: crate::LogType::EMPTY,
                payload: vec![0; 64].into(),
                ticket: HlcTimestamp { physical_ms: 0, logical: 1, node: 0 },
            },
            LogEntry {
                index: 8,
                term: u64::MAX,
                kind: EntryKind::Application { auto_commit: true },
                log_type: "max".into(),
                payload: vec![0xff; 3].into(),
                ticket: HlcTimestamp { physical_ms: u64::MAX, logical: u32::MAX, node: u64::MAX },
            },
        ]
    }

    /// Sets the flag when dropped, so readers stop even if the writer fails or panics.
    struct SetOnDrop<'a>(&'a AtomicBool);

    impl Drop for SetOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Release);
        }
    }

    // ---------------------------------------------------------------------------------------
    // Cases
    // ---------------------------------------------------------------------------------------

    fn empty_wal<F: WalFactory>(f: &mut F) -> CaseResult {
        let wal = f.create();
        for p in [PartitionId::SYSTEM, P, PartitionId(u32::MAX)] {
            expect_eq(wal.last_index(p).ctx("last_index")?, 0, &format!("last_index({p})"))?;
            expect_eq(wal.load_hard_state(p).ctx("load_hard_state")?, None, "load_hard_state")?;
            expect_entries(&wal.read_range(p, 1, 100).ctx("read_range")?, &[], "read_range(1, 100)")?;
            expect_entries(&wal.read_range(p, 0, 0).ctx("read_range")?, &[], "read_range(0, 0)")?;
            expect_entries(&wal.read_range(p, 0, LogIndex::MAX).ctx("read_range")?, &[], "read_range(0, MAX)")?;
            expect_eq(wal.term_at(p, 0).ctx("term_at")?, Some(0), &format!("term_at({p}, 0)"))?;
            expect_eq(wal.term_at(p, 1).ctx("term_at")?, None, &format!("term_at({p}, 1)"))?;
        }
        expect_eq(wal.partitions().ctx("partitions")?, vec![], "partitions()")
    }

    fn append_and_read_back_every_field<F: WalFactory>(f: &mut F) -> CaseResult {
        let wal = f.create();
        let entries = assorted_entries();
        write(&wal, vec![append(P, entries.clone())], "append assorted entries")?;
        check_log(&wal, P, &entries, "after append")?;
        for e in &entries {
            let one = wal.read_range(P, e.index, e.index).ctx("read one")?;
            expect_entries(&one, std::slice::from_ref(e), &format!("read_range({0}, {0})", e.index))?;
        }
        Ok(())
    }

    fn large_payload_round_trip<F: WalFactory>(f: &mut F) -> CaseResult {
        let mut wal = f.create();
        let mut big = entry(2, 1);
        big.payload = (0..(1usize << 20)).map(|i| (i.wrapping_mul(31) + 7) as u8).collect();
        let expected = vec![entry(1, 1), big, entry(3, 1)];
        write(&wal, vec![append(P, expected[..2].to_vec())], "append 1 MiB payload")?;
        write(&wal, vec![append(P, expected[2..].to_vec())], "append after it")?;
        check_log(&wal, P, &expected, "after append")?;
        wal = f.reopen(wal);
        check_log(&wal, P, &expected, "after reopen")
    }

    fn read_range_bounds<F: WalFactory>(f: &mut F) -> CaseResult {
        let wal = f.create();
        let all = run(1, 10, 1);
        write(&wal, vec![append(P, all.clone())], "append 1..=10")?;
        let cases: [(LogIndex, LogIndex, &[LogEntry]); 12] = [
            (3, 7, &all[2..7]),
            (5, 5, &all[4..5]),
            (1, 1, &all[0..1]),
            (10, 10, &all[9..10]),
            (1, 10, &all[..]),
            (8, 100, &all[7..]),
            (1, LogIndex::MAX, &all[..]),
            (0, 4, &all[..4]),
            (0, 0, &[]),
            (11, 20, &[]),
            (7, 3, &[]),
            (LogIndex::MAX, LogIndex::MAX, &[]),
        ];
        for (from, to, expected) in cases {
            let got = wal.read_range(P, from, to).ctx("read_range")?;
            expect_entries(&got, expected, &format!("read_range({P}, {from}, {to})"))?;
        }
        let other = wal.read_range(Q, 1, 10).ctx("read_range")?;
        expect_entries(&other, &[], "read_range of a partition without entries")
    }

    fn term_at_every_index<F: WalFactory>(f: &mut F) -> CaseResult {
        let wal = f.create();
        let mut expected = run(1, 3, 1);
        expected.extend(run(4, 7, 2));
        expected.extend(run(8, 8, 5));
        expected.extend(run(9, 12, 6));
        write(&wal, vec![append(P, expected.clone())], "append terms 1, 2, 5, 6")?;
        check_log(&wal, P, &expected, "after append")?;
        for index in [13, 1000, LogIndex::MAX] {
            expect_eq(wal.term_at(P, index).ctx("term_at")?, None, &format!("term_at({index})"))?;
        }
        expect_eq(wal.term_at(Q, 0).ctx("term_at")?, Some(0), "term_at of another partition, 0")?;
        expect_eq(wal.term_at(Q, 1).ctx("term_at")?, None, "term_at of another partition, 1")
    }

    fn consecutive_batches<F: WalFactory>(f: &mut F) -> CaseResult {
        let wal = f.create();
        let mut expected = Vec::new();
        for batch in 0..10u64 {
            let from = expected.len() as LogIndex + 1;
            let entries = run(from, from + batch, batch / 3 + 1);
            expected.extend(entries.clone());
            write(&wal, vec![append(P, entries)], &format!("batch {batch}"))?;
            expect_eq(
                wal.last_index(P).ctx("last_index")?,
                expected.len() as LogIndex,
                &format!("last_index after batch {batch}"),
            )?;
        }
        check_log(&wal, P, &expected, "after 10 batches")
    }

    fn same_partition_writes_in_one_batch_apply_in_order<F: WalFactory>(f: &mut F) -> CaseResult {
        let wal = f.create();
        let state = hs(2, Some(3), 2);
        write(
            &wal,
            vec![
                append(P, run(1, 3, 1)),
                append(Q, run(1, 1, 1)),
                append(P, run(4, 5, 1)),
                // Replaces 3..=5 with 3..=4 of term 2.
                append(P, run(3, 4, 2)),
                append(Q, run(2, 2, 1)),
                hard_state_write(P, state),
                append(P, run(5, 5, 2)),
            ],
            "one batch with several writes per partition",
        )?;
        let mut expected = run(1, 2, 1);
        expected.extend(run(3, 5, 2));
        check_log(&wal, P, &expected, "P")?;
        check_log(&wal, Q, &run(1, 2, 1), "Q")?;
        expect_eq(wal.load_hard_state(P).ctx("load_hard_state")?, Some(state), "hard state of P")?;
        expect_eq(wal.load_hard_state(Q).ctx("load_hard_state")?, None, "hard state of Q")
    }

    fn many_partitions_in_one_batch<F: WalFactory>(f: &mut F) -> CaseResult {
        let wal = f.create();
        let ids: Vec<PartitionId> = (0..50u32).map(|i| PartitionId(i * 7 + 1)).collect();
        let first: Vec<PartitionWrite> =
            ids.iter().enumerate().map(|(i, &p)| append(p, run(1, i as LogIndex + 1, i as Term + 1))).collect();
        write(&wal, first, "batch for 50 partitions")?;
        let second: Vec<PartitionWrite> = ids
            .iter()
            .enumerate()
            .map(|(i, &p)| PartitionWrite {
                partition: p,
                truncate_from: None,
                entries: run(i as LogIndex + 2, i as LogIndex + 3, i as Term + 2),
                hard_state: Some(hs(i as Term + 2, Some(i as u64), i as LogIndex + 1)),
                ..Default::default()
            })
            .collect();
        write(&wal, second, "second batch for 50 partitions")?;
        for (i, &p) in ids.iter().enumerate() {
            let mut expected = run(1, i as LogIndex + 1, i as Term + 1);
            expected.extend(run(i as LogIndex + 2, i as LogIndex + 3, i as Term + 2));
            check_log(&wal, p, &expected, &format!("partition {p}"))?;
            expect_eq(
                wal.load_hard_state(p).ctx("load_hard_state")?,
                Some(hs(i as Term + 2, Some(i as u64), i as LogIndex + 1)),
                &format!("hard state of {p}"),
            )?;
        }
        expect_eq(wal.partitions().ctx("partitions")?, ids, "partitions()")
    }

    fn partitions_are_independent<F: WalFactory>(f: &mut F) -> CaseResult {
        let wal = f.create();
        write(
            &wal,
            vec![append(P, run(1, 10, 1)), append(Q, run(1, 10, 1)), append(R, run(1, 10, 1))],
            "fill three partitions",
        )?;
        wal.truncate_suffix(Q, 4).ctx("truncate_suffix(Q, 4)")?;
        check_log(&wal, P, &run(1, 10, 1), "P after truncating Q")?;
        check_log(&wal, Q, &run(1, 3, 1), "Q after truncating Q")?;
        check_log(&wal, R, &run(1, 10, 1), "R after truncating Q")?;

        write(&wal, vec![append(R, run(5, 6, 9))], "overwrite R from 5")?;
        let mut r = run(1, 4, 1);
        r.extend(run(5, 6, 9));
        check_log(&wal, P, &run(1, 10, 1), "P after overwriting R")?;
        check_log(&wal, Q, &run(1, 3, 1), "Q after overwriting R")?;
        check_log(&wal, R, &r, "R after overwriting R")?;

        write(
            &wal,
            vec![PartitionWrite {
                partition: P,
                truncate_from: Some(2),
                entries: Vec::new(),
                hard_state: Some(hs(3, Some(1), 1)),
                ..Default::default()
            }],
            "truncate P from 2 with a hard state",
        )?;
        check_log(&wal, P, &run(1, 1, 1), "P after truncating P")?;
        check_log(&wal, Q, &run(1, 3, 1), "Q after truncating P")?;
        check_log(&wal, R, &r, "R after truncating P")?;
        expect_eq(wal.load_hard_state(Q).ctx("load_hard_state")?, None, "hard state of Q")?;
        expect_eq(wal.load_hard_state(R).ctx("load_hard_state")?, None, "hard state of R")
    }

    fn overwrite_replaces_longer_suffix<F: WalFactory>(f: &mut F) -> CaseResult {
        let wal = f.create();
        write(&wal, vec![append(P, run(1, 10, 1))], "append 1..=10")?;
        write(&wal, vec![append(P, run(5, 6, 2))], "overwrite with 5..=6")?;
        let mut expected = run(1, 4, 1);
        expected.extend(run(5, 6, 2));
        check_log(&wal, P, &expected, "after overwrite")?;
        let tail = wal.read_range(P, 7, 10).ctx("read_range")?;
        expect_entries(&tail, &[], "read_range(7, 10): the old suffix must be gone")?;
        write(&wal, vec![append(P, run(7, 7, 2))], "append after the overwrite")?;
        expected.push(entry(7, 2));
        check_log(&wal, P, &expected, "after appending 7")
    }

    fn overwrite_at_first_and_last_index<F: WalFactory>(f: &mut F) -> CaseResult {
        let wal = f.create();
        write(&wal, vec![append(P, run(1, 5, 1))], "append 1..=5")?;
        write(&wal, vec![append(P, run(5, 8, 2))], "overwrite from the last index")?;
        let mut expected = run(1, 4, 1);
        expected.extend(run(5, 8, 2));
        check_log(&wal, P, &expected, "after overwriting from the last index")?;

        write(&wal, vec![append(P, expected[2..6].to_vec())], "re-append identical entries")?;
        check_log(&wal, P, &expected[..6], "after re-appending identical entries 3..=6")?;

        write(&wal, vec![append(P, run(1, 3, 3))], "overwrite from index 1")?;
        check_log(&wal, P, &run(1, 3, 3), "after overwriting from index 1")
    }

    fn truncate_from_then_append_in_one_write<F: WalFactory>(f: &mut F) -> CaseResult {
        let wal = f.create();
        write(&wal, vec![append(P, run(1, 10, 1))], "append 1..=10")?;
        write(
            &wal,
            vec![PartitionWrite {
                partition: P,
                truncate_from: Some(4),
                entries: run(4, 5, 2),
                hard_state: None,
                ..Default::default()
            }],
            "truncate from 4 and append 4..=5",
        )?;
        let mut expected = run(1, 3, 1);
        expected.extend(run(4, 5, 2));
        check_log(&wal, P, &expected, "after truncate 4 + append 4..=5")?;

        // Entries starting below the truncation point: the lower of the two wins.
        write(
            &wal,
            vec![PartitionWrite {
                partition: P,
                truncate_from: Some(3),
                entries: run(2, 3, 3),
                hard_state: None,
                ..Default::default()
            }],
            "truncate from 3 and append 2..=3",
        )?;
        let mut expected = run(1, 1, 1);
        expected.extend(run(2, 3, 3));
        check_log(&wal, P, &expected, "after truncate 3 + append 2..=3")?;

        // A truncation point past the end is a no-op; the entries still append.
        write(
            &wal,
            vec![PartitionWrite {
                partition: P,
                truncate_from: Some(100),
                entries: run(4, 4, 3),
                hard_state: None,
                ..Default::default()
            }],
            "truncate from 100 and append 4",
        )?;
        expected.push(entry(4, 3));
        check_log(&wal, P, &expected, "after truncate 100 + append 4")
    }

    fn truncate_from_without_entries<F: WalFactory>(f: &mut F) -> CaseResult {
        let wal = f.create();
        let truncate = |from| PartitionWrite { partition: P, truncate_from: Some(from), ..PartitionWrite::default() };
        write(&wal, vec![append(P, run(1, 10, 1))], "append 1..=10")?;
        write(&wal, vec![truncate(6)], "truncate from 6")?;
        check_log(&wal, P, &run(1, 5, 1), "after truncate from 6")?;
        write(&wal, vec![truncate(50)], "truncate from 50")?;
        check_log(&wal, P, &run(1, 5, 1), "after truncate from 50 (past the end)")?;
        write(&wal, vec![truncate(1)], "truncate from 1")?;
        check_log(&wal, P, &[], "after truncate from 1")?;
        write(&wal, vec![append(P, run(1, 2, 4))], "append 1..=2 after emptying")?;
        check_log(&wal, P, &run(1, 2, 4), "after appending to the emptied log")
    }

    fn truncate_suffix_past_end_is_noop<F: WalFactory>(f: &mut F) -> CaseResult {
        let wal = f.create();
        write(&wal, vec![append(P, run(1, 5, 1))], "append 1..=5")?;
        wal.truncate_suffix(P, 6).ctx("truncate_suffix(P, 6)")?;
        check_log(&wal, P, &run(1, 5, 1), "after truncate_suffix(P, 6)")?;
        wal.truncate_suffix(P, 1000).ctx("truncate_suffix(P, 1000)")?;
        check_log(&wal, P, &run(1, 5, 1), "after truncate_suffix(P, 1000)")?;
        wal.truncate_suffix(P, LogIndex::MAX).ctx("truncate_suffix(P, MAX)")?;
        check_log(&wal, P, &run(1, 5, 1), "after truncate_suffix(P, MAX)")?;
        wal.truncate_suffix(Q, 1).ctx("truncate_suffix of a partition without entries")?;
        check_log(&wal, Q, &[], "Q after truncate_suffix(Q, 1)")?;
        expect_eq(wal.partitions().ctx("partitions")?, vec![P], "partitions()")
    }

    fn truncate_suffix_from_one_empties<F: WalFactory>(f: &mut F) -> CaseResult {
        let wal = f.create();
        let state = hs(1, Some(1), 3);
        write(
            &wal,
            vec![PartitionWrite {
                partition: P,
                truncate_from: None,
                entries: run(1, 5, 1),
                hard_state: Some(state),
                ..Default::default()
            }],
            "append 1..=5 with a hard state",
        )?;
        wal.truncate_suffix(P, 1).ctx("truncate_suffix(P, 1)")?;
        check_log(&wal, P, &[], "after truncate_suffix(P, 1)")?;
        expect_eq(
            wal.load_hard_state(P).ctx("load_hard_state")?,
            Some(state),
            "hard state after truncating every entry",
        )?;
        let gap = wal.write(&WalBatch { writes: vec![append(P, run(4, 4, 2))] });
        expect_non_contiguous(gap, P, 1, 4, "append at the old end after emptying")?;
        write(&wal, vec![append(P, run(1, 3, 2))], "append 1..=3 after emptying")?;
        check_log(&wal, P, &run(1, 3, 2), "after appending to the emptied log")
    }

    fn truncate_suffix_then_append<F: WalFactory>(f: &mut F) -> CaseResult {
        let wal = f.create();
        write(&wal, vec![append(P, run(1, 10, 1))], "append 1..=10")?;
        wal.truncate_suffix(P, 6).ctx("truncate_suffix(P, 6)")?;
        check_log(&wal, P, &run(1, 5, 1), "after truncate_suffix(P, 6)")?;
        let gap = wal.write(&WalBatch { writes: vec![append(P, run(8, 8, 2))] });
        expect_non_contiguous(gap, P, 6, 8, "append at 8 after truncating from 6")?;
        write(&wal, vec![append(P, run(6, 8, 2))], "append 6..=8")?;
        let mut expected = run(1, 5, 1);
        expected.extend(run(6, 8, 2));
        check_log(&wal, P, &expected, "after appending 6..=8")
    }

    fn gap_rejects_whole_batch<F: WalFactory>(f: &mut F) -> CaseResult {
        let wal = f.create();
        write(
            &wal,
            vec![
                PartitionWrite {
                    partition: P,
                    truncate_from: None,
                    entries: run(1, 5, 1),
                    hard_state: Some(hs(1, Some(1), 2)),
                    ..Default::default()
                },
                append(Q, run(1, 3, 1)),
            ],
            "setup",
        )?;
        let before = snapshot(&wal, &[P, Q, R])?;
        let result = wal.write(&WalBatch {
            writes: vec![
                PartitionWrite {
                    partition: Q,
                    truncate_from: None,
                    entries: run(4, 6, 1),
                    hard_state: Some(hs(2, None, 4)),
                    ..Default::default()
                },
                append(R, run(1, 2, 1)),
                hard_state_write(P, hs(5, Some(3), 5)),
                append(P, run(6, 6, 2)),
                append(P, run(8, 9, 2)),
            ],
        });
        expect_non_contiguous(result, P, 7, 8, "batch whose last write leaves a gap")?;
        expect_unchanged(&wal, &before, "after the rejected batch")?;

        // The order of writes matters: 7 before 6 is a gap even though 6 follows in the batch.
        let result = wal.write(&WalBatch { writes: vec![append(P, run(7, 7, 1)), append(P, run(6, 6, 1))] });
        expect_non_contiguous(result, P, 6, 7, "7 written before 6 in one batch")?;
        expect_unchanged(&wal, &before, "after the second rejected batch")?;

        // The wal stays usable.
        write(&wal, vec![append(P, run(6, 7, 2)), append(R, run(1, 1, 1))], "valid batch")?;
        let mut expected = run(1, 5, 1);
        expected.extend(run(6, 7, 2));
        check_log(&wal, P, &expected, "P after the valid batch")?;
        check_log(&wal, Q, &run(1, 3, 1), "Q after the valid batch")?;
        check_log(&wal, R, &run(1, 1, 1), "R after the valid batch")?;
        expect_eq(wal.load_hard_state(P).ctx("load_hard_state")?, Some(hs(1, Some(1), 2)), "hard state of P")
    }

    fn gap_after_earlier_write_in_batch_rejected<F: WalFactory>(f: &mut F) -> CaseResult {
        let wal = f.create();
        write(&wal, vec![append(P, run(1, 5, 1))], "append 1..=5")?;
        let before = snapshot(&wal, &[P])?;

        // After the first write the log ends at 3, so 5 is a gap although the stored log ends at 5.
        let result = wal.write(&WalBatch { writes: vec![append(P, run(3, 3, 2)), append(P, run(5, 5, 2))] });
        expect_non_contiguous(result, P, 4, 5, "append at 5 after an overwrite at 3")?;
        expect_unchanged(&wal, &before, "after overwrite-then-gap")?;

        let truncate = PartitionWrite { partition: P, truncate_from: Some(2), ..PartitionWrite::default() };
        let result = wal.write(&WalBatch { writes: vec![truncate, append(P, run(3, 3, 2))] });
        expect_non_contiguous(result, P, 2, 3, "append at 3 after truncating from 2")?;
        expect_unchanged(&wal, &before, "after truncate-then-gap")?;

        let result = wal.write(&WalBatch { writes: vec![append(P, run(6, 8, 1)), append(P, run(10, 10, 1))] });
        expect_non_contiguous(result, P, 9, 10, "append at 10 after appending 6..=8")?;
        expect_unchanged(&wal, &before, "after append-then-gap")?;

        let result = wal.write(&WalBatch {
            writes: vec![
                PartitionWrite {
                    partition: P,
                    truncate_from: Some(3),
                    entries: run(3, 3, 2),
                    hard_state: None,
                    ..Default::default()
                },
                append(P, run(4, 4, 2)),
            ],
        });
        result.ctx("truncate 3 + append 3, then append 4")?;
        let mut expected = run(1, 2, 1);
        expected.extend(run(3, 4, 2));
        check_log(&wal, P, &expected, "after the valid batch")
    }

    fn non_consecutive_entries_rejected<F: WalFactory>(f: &mut F) -> CaseResult {
        let wal = f.create();
        write(&wal, vec![append(P, run(1, 3, 1))], "append 1..=3")?;
        let before = snapshot(&wal, &[P, Q])?;
        let bad: [(Vec<LogIndex>, LogIndex, LogIndex); 4] =
            [(vec![4, 5, 7], 6, 7), (vec![4, 4], 5, 4), (vec![3, 2], 4, 2), (vec![2, 3, 5], 4, 5)];
        for (indexes, expected, got) in bad {
            let entries = indexes.iter().map(|&i| entry(i, 2)).collect();
            let result = wal.write(&WalBatch { writes: vec![append(Q, run(1, 2, 1)), append(P, entries)] });
            expect_non_contiguous(result, P, expected, got, &format!("entries {indexes:?}"))?;
            expect_unchanged(&wal, &before, &format!("after rejecting entries {indexes:?}"))?;
        }
        Ok(())
    }

    fn index_zero_rejected<F: WalFactory>(f: &mut F) -> CaseResult {
        let wal = f.create();
        let before = snapshot(&wal, &[P, Q])?;
        let result = wal.write(&WalBatch { writes: vec![append(Q, run(0, 1, 1))] });
        expect_non_contiguous(result, Q, 1, 0, "entries from 0 on an empty partition")?;
        expect_unchanged(&wal, &before, "after rejecting index 0 on an empty partition")?;

        write(&wal, vec![append(P, run(1, 3, 1))], "append 1..=3")?;
        let before = snapshot(&wal, &[P, Q])?;
        let result = wal.write(&WalBatch { writes: vec![append(P, run(0, 2, 2))] });
        expect_non_contiguous(result, P, 4, 0, "entries from 0")?;
        expect_unchanged(&wal, &before, "after rejecting entries from 0")?;

        let result = wal.write(&WalBatch {
            writes: vec![
                append(Q, run(1, 1, 1)),
                PartitionWrite { partition: P, truncate_from: Some(0), ..PartitionWrite::default() },
            ],
        });
        expect_non_contiguous(result, P, 1, 0, "truncate_from 0")?;
        expect_unchanged(&wal, &before, "after rejecting truncate_from 0")
    }

    fn empty_batch_and_empty_writes_change_nothing<F: WalFactory>(f: &mut F) -> CaseResult {
        let wal = f.create();
        wal.write(&WalBatch::default()).ctx("empty batch on an empty wal")?;
        expect_eq(wal.partitions().ctx("partitions")?, vec![], "partitions() after an empty batch")?;
        write(&wal, vec![append(P, run(1, 3, 1))], "append 1..=3")?;
        let before = snapshot(&wal, &[P, Q])?;
        wal.write(&WalBatch::default()).ctx("empty batch")?;
        write(
            &wal,
            vec![
                PartitionWrite { partition: Q, ..PartitionWrite::default() },
                PartitionWrite { partition: P, ..PartitionWrite::default() },
            ],
            "empty partition writes",
        )?;
        expect_unchanged(&wal, &before, "after empty writes")
    }

    fn hard_state_save_load_last_wins<F: WalFactory>(f: &mut F) -> CaseResult {
        let mut wal = f.create();
        let first = hs(3, Some(2), 0);
        wal.save_hard_state(P, &first).ctx("save_hard_state")?;
        expect_eq(wal.load_hard_state(P).ctx("load")?, Some(first), "after the first save")?;
        let second = hs(4, None, 0);
        wal.save_hard_state(P, &second).ctx("save_hard_state")?;
        expect_eq(wal.load_hard_state(P).ctx("load")?, Some(second), "after a save clearing the vote")?;
        let extreme = hs(u64::MAX, Some(u64::MAX), 0);
        wal.save_hard_state(P, &extreme).ctx("save_hard_state")?;
        expect_eq(wal.load_hard_state(P).ctx("load")?, Some(extreme), "after saving extreme values")?;
        let through_write = hs(5, Some(0), 0);
        write(&wal, vec![hard_state_write(P, through_write)], "hard state through write")?;
        expect_eq(wal.load_hard_state(P).ctx("load")?, Some(through_write), "after write")?;
        let last = hs(6, Some(9), 0);
        wal.save_hard_state(P, &last).ctx("save_hard_state")?;
        expect_eq(wal.load_hard_state(P).ctx("load")?, Some(last), "save after write")?;
        wal = f.reopen(wal);
        expect_eq(wal.load_hard_state(P).ctx("load")?, Some(last), "after reopen")?;
        check_log(&wal, P, &[], "a hard state adds no entries")
    }

    fn hard_state_per_partition<F: WalFactory>(f: &mut F) -> CaseResult {
        let wal = f.create();
        let states = [(PartitionId::SYSTEM, hs(1, Some(1), 0)), (P, hs(2, Some(2), 0)), (Q, hs(3, None, 0))];
        for (p, state) in states {
            wal.save_hard_state(p, &state).ctx("save_hard_state")?;
        }
        for (p, state) in states {
            expect_eq(wal.load_hard_state(p).ctx("load")?, Some(state), &format!("hard state of {p}"))?;
        }
        expect_eq(wal.load_hard_state(R).ctx("load")?, None, "hard state of a partition never saved")?;
        wal.save_hard_state(P, &hs(7, Some(4), 0)).ctx("save_hard_state")?;
        expect_eq(wal.load_hard_state(P).ctx("load")?, Some(hs(7, Some(4), 0)), "P after overwrite")?;
        for (p, state) in [states[0], states[2]] {
            expect_eq(
                wal.load_hard_state(p).ctx("load")?,
                Some(state),
                &format!("hard state of {p} after overwriting P"),
            )?;
        }
        Ok(())
    }

    fn hard_state_only_write<F: WalFactory>(f: &mut F) -> CaseResult {
        let wal = f.create();
        write(&wal, vec![append(P, run(1, 4, 1))], "append 1..=4")?;
        let state = hs(1, Some(2), 3);
        write(&wal, vec![hard_state_write(P, state)], "hard-state-only write to P")?;
        check_log(&wal, P, &run(1, 4, 1), "entries after a hard-state-only write")?;
        expect_eq(wal.load_hard_state(P).ctx("load")?, Some(state), "hard state of P")?;

        let fresh = hs(2, None, 0);
        write(&wal, vec![hard_state_write(Q, fresh)], "hard-state-only write to a new partition")?;
        check_log(&wal, Q, &[], "Q after a hard-state-only write")?;
        expect_eq(wal.load_hard_state(Q).ctx("load")?, Some(fresh), "hard state of Q")?;
        expect_eq(wal.partitions().ctx("partitions")?, vec![P, Q], "partitions()")
    }

    fn hard_state_with_entries_in_one_write<F: WalFactory>(f: &mut F) -> CaseResult {
        let wal = f.create();
        let first = hs(1, Some(1), 3);
        write(
            &wal,
            vec![PartitionWrite {
                partition: P,
                truncate_from: None,
                entries: run(1, 5, 1),
                hard_state: Some(first),
                ..Default::default()
            }],
            "entries and hard state",
        )?;
        check_log(&wal, P, &run(1, 5, 1), "after entries + hard state")?;
        expect_eq(wal.load_hard_state(P).ctx("load")?, Some(first), "hard state")?;

        let second = hs(2, Some(3), 4);
        write(
            &wal,
            vec![PartitionWrite {
                partition: P,
                truncate_from: Some(5),
                entries: run(5, 6, 2),
                hard_state: Some(second),
                ..Default::default()
            }],
            "truncate + entries + hard state",
        )?;
        let mut expected = run(1, 4, 1);
        expected.extend(run(5, 6, 2));
        check_log(&wal, P, &expected, "after truncate + entries + hard state")?;
        expect_eq(wal.load_hard_state(P).ctx("load")?, Some(second), "hard state after second")?;

        write(&wal, vec![append(P, run(7, 7, 2))], "entries without a hard state")?;
        expected.push(entry(7, 2));
        check_log(&wal, P, &expected, "after entries without a hard state")?;
        expect_eq(
            wal.load_hard_state(P).ctx("load")?,
            Some(second),
            "a write without a hard state keeps the stored one",
        )?;
        wal.truncate_suffix(P, 3).ctx("truncate_suffix")?;
        expect_eq(wal.load_hard_state(P).ctx("load")?, Some(second), "truncate_suffix keeps the hard state")
    }

    fn reopen_preserves_entries<F: WalFactory>(f: &mut F) -> CaseResult {
        let mut wal = f.create();
        let assorted = assorted_entries();
        write(&wal, vec![append(P, assorted.clone())], "append assorted entries to P")?;
        for batch in 0..5u64 {
            write(&wal, vec![append(Q, run(batch * 2 + 1, batch * 2 + 2, 1))], &format!("append batch {batch} to Q"))?;
        }
        wal = f.reopen(wal);
        check_log(&wal, P, &assorted, "P after reopen")?;
        check_log(&wal, Q, &run(1, 10, 1), "Q after reopen")?;

        write(&wal, vec![append(Q, run(11, 12, 2))], "append after reopen")?;
        wal = f.reopen(wal);
        let mut expected = run(1, 10, 1);
        expected.extend(run(11, 12, 2));
        check_log(&wal, Q, &expected, "Q after the second reopen")?;
        check_log(&wal, P, &assorted, "P after the second reopen")?;
        expect_eq(wal.partitions().ctx("partitions")?, vec![P, Q], "partitions() after reopen")
    }

    fn reopen_preserves_hard_state<F: WalFactory>(f: &mut F) -> CaseResult {
        let mut wal = f.create();
        wal.save_hard_state(P, &hs(1, Some(1), 0)).ctx("save P")?;
        wal.save_hard_state(P, &hs(2, None, 0)).ctx("save P again")?;
        write(
            &wal,
            vec![PartitionWrite {
                partition: Q,
                truncate_from: None,
                entries: run(1, 2, 4),
                hard_state: Some(hs(4, Some(2), 2)),
                ..Default::default()
            }],
            "entries + hard state for Q",
        )?;
        write(&wal, vec![hard_state_write(R, hs(9, Some(9), 0))], "hard state only for R")?;
        wal = f.reopen(wal);
        expect_eq(wal.load_hard_state(P).ctx("load")?, Some(hs(2, None, 0)), "P after reopen")?;
        expect_eq(wal.load_hard_state(Q).ctx("load")?, Some(hs(4, Some(2), 2)), "Q after reopen")?;
        expect_eq(wal.load_hard_state(R).ctx("load")?, Some(hs(9, Some(9), 0)), "R after reopen")?;
        check_log(&wal, Q, &run(1, 2, 4), "Q entries after reopen")?;
        expect_eq(wal.partitions().ctx("partitions")?, vec![P, Q, R], "partitions() after reopen")?;

        wal.save_hard_state(P, &hs(3, Some(3), 0)).ctx("save after reopen")?;
        wal = f.reopen(wal);
        expect_eq(wal.load_hard_state(P).ctx("load")?, Some(hs(3, Some(3), 0)), "P after the second reopen")
    }

    fn reopen_preserves_truncations<F: WalFactory>(f: &mut F) -> CaseResult {
        let mut wal = f.create();
        write(
            &wal,
            vec![append(P, run(1, 10, 1)), append(Q, run(1, 5, 1)), append(R, run(1, 3, 1))],
            "fill three partitions",
        )?;
        wal.truncate_suffix(P, 8).ctx("truncate_suffix(P, 8)")?;
        write(&wal, vec![append(P, run(5, 6, 2))], "overwrite P from 5")?;
        write(
            &wal,
            vec![PartitionWrite { partition: Q, truncate_from: Some(3), ..PartitionWrite::default() }],
            "truncate Q from 3 in a write",
        )?;
        wal.truncate_suffix(R, 1).ctx("truncate_suffix(R, 1)")?;
        wal = f.reopen(wal);

        let mut p = run(1, 4, 1);
        p.extend(run(5, 6, 2));
        check_log(&wal, P, &p, "P after reopen")?;
        check_log(&wal, Q, &run(1, 2, 1), "Q after reopen")?;
        check_log(&wal, R, &[], "R after reopen")?;
        expect_eq(wal.partitions().ctx("partitions")?, vec![P, Q], "partitions() after reopen")?;

        let gap = wal.write(&WalBatch { writes: vec![append(P, run(8, 8, 2))] });
        expect_non_contiguous(gap, P, 7, 8, "append past the truncated end after reopen")?;
        write(&wal, vec![append(P, run(7, 7, 2))], "append at the truncated end after reopen")?;
        p.push(entry(7, 2));
        wal = f.reopen(wal);
        check_log(&wal, P, &p, "P after the second reopen")
    }

    /// [`Wal::reopen`] on the open instance (what the runtime does after a failed write): every
    /// entry, truncation and hard state stays, and writes go on, twice in a row.
    fn reopen_in_place_keeps_everything_and_writes_on<F: WalFactory>(f: &mut F) -> CaseResult {
        let wal = f.create();
        write(&wal, vec![append(P, run(1, 6, 1)), append(Q, run(1, 3, 1))], "fill two partitions")?;
        wal.truncate_suffix(P, 5).ctx("truncate_suffix(P, 5)")?;
        write(&wal, vec![hard_state_write(P, hs(2, Some(2), 3))], "hard state of P")?;
        wal.reopen().ctx("reopen in place")?;
        check_log(&wal, P, &run(1, 4, 1), "P after reopening in place")?;
        check_log(&wal, Q, &run(1, 3, 1), "Q after reopening in place")?;
        expect_eq(wal.load_hard_state(P).ctx("load")?, Some(hs(2, Some(2), 3)), "hard state after reopening")?;
        write(&wal, vec![append(P, run(5, 6, 2))], "append after reopening in place")?;
        wal.reopen().ctx("second reopen in place")?;
        let mut p = run(1, 4, 1);
        p.extend(run(5, 6, 2));
        check_log(&wal, P, &p, "P after the second reopen in place")?;
        let wal = f.reopen(wal);
        check_log(&wal, P, &p, "P after closing and opening again")?;
        expect_eq(wal.partitions().ctx("partitions")?, vec![P, Q], "partitions() after every reopen")
    }

    fn partitions_listed_ascending<F: WalFactory>(f: &mut F) -> CaseResult {
        let wal = f.create();
        let order = [65_536, 7, 256, 1, u32::MAX, 255, 2];
        for (i, &id) in order.iter().enumerate() {
            write(&wal, vec![append(PartitionId(id), run(1, i as LogIndex + 1, 1))], &format!("append to p{id}"))?;
        }
        write(&wal, vec![hard_state_write(PartitionId::SYSTEM, hs(1, None, 0))], "system hs")?;
        wal.save_hard_state(PartitionId(300), &hs(1, None, 0)).ctx("save p300")?;
        let expected: Vec<PartitionId> =
            [0, 1, 2, 7, 255, 256, 300, 65_536, u32::MAX].into_iter().map(PartitionId).collect();
        expect_eq(wal.partitions().ctx("partitions")?, expected, "partitions()")
    }

    fn partitions_omit_emptied<F: WalFactory>(f: &mut F) -> CaseResult {
        let wal = f.create();
        write(
            &wal,
            vec![
                append(P, run(1, 3, 1)),
                PartitionWrite {
                    partition: Q,
                    truncate_from: None,
                    entries: run(1, 3, 1),
                    hard_state: Some(hs(1, None, 0)),
                    ..Default::default()
                },
                append(R, run(1, 3, 1)),
            ],
            "fill three partitions",
        )?;
        wal.truncate_suffix(P, 1).ctx("truncate_suffix(P, 1)")?;
        wal.truncate_suffix(Q, 1).ctx("truncate_suffix(Q, 1)")?;
        write(
            &wal,
            vec![PartitionWrite { partition: R, truncate_from: Some(1), ..PartitionWrite::default() }],
            "truncate R from 1 in a write",
        )?;
        expect_eq(
            wal.partitions().ctx("partitions")?,
            vec![Q],
            "partitions() lists only partitions with entries or a hard state",
        )
    }

    fn concurrent_readers_see_consecutive_prefix<F: WalFactory>(f: &mut F) -> CaseResult {
        const BATCHES: u64 = 200;
        const PER_BATCH: u64 = 5;
        const READERS: usize = 4;
        const TOTAL: u64 = BATCHES * PER_BATCH;

        fn term_of(index: LogIndex) -> Term {
            index / 64 + 1
        }

        fn writer<W: Wal>(wal: &W) -> CaseResult {
            for batch in 0..BATCHES {
                let from = batch * PER_BATCH + 1;
                let to = from + PER_BATCH - 1;
                let entries: Vec<LogEntry> = (from..=to).map(|i| entry(i, term_of(i))).collect();
                let hard_state = (batch % 10 == 9).then(|| hs(term_of(to), Some(1), to));
                write(
                    wal,
                    vec![
                        PartitionWrite {
                            partition: P,
                            truncate_from: None,
                            entries: entries.clone(),
                            hard_state,
                            ..Default::default()
                        },
                        append(Q, entries),
                    ],
                    &format!("writer batch {batch}"),
                )?;
            }
            Ok(())
        }

        fn reader<W: Wal>(wal: &W, done: &AtomicBool) -> Result<u64, String> {
            let mut previous_last = 0;
            let mut reads = 0;
            loop {
                let finished = done.load(Ordering::Acquire);
                reads += 1;
                let state = wal.load_hard_state(P).ctx("reader: load_hard_state")?;
                let last = wal.last_index(P).ctx("reader: last_index")?;
                if last < previous_last {
                    return Err(format!("last_index went back from {previous_last} to {last}"));
                }
                if let Some(state) = state {
                    if state.commit > last {
                        return Err(format!(
                            "hard state commit {} visible before its entries (last_index {last})",
                            state.commit
                        ));
                    }
                }
                if last > 0 {
                    expect_eq(
                        wal.term_at(P, last).ctx("reader: term_at")?,
                        Some(term_of(last)),
                        &format!("reader: term_at({last})"),
                    )?;
                }
                let entries = wal.read_range(P, 1, LogIndex::MAX).ctx("reader: read_range")?;
                if (entries.len() as u64) < last {
                    return Err(format!(
                        "read_range returned {} entries after last_index returned {last}",
                        entries.len()
                    ));
                }
                for (position, got) in entries.iter().enumerate() {
                    let index = position as LogIndex + 1;
                    let expected = entry(index, term_of(index));
                    if *got != expected {
                        return Err(format!(
                            "read_range(1, MAX) is not a consecutive prefix: at position \
                             {position} expected {}, got {}",
                            describe(&expected),
                            describe(got)
                        ));
                    }
                }
                previous_last = last;
                if finished {
                    // This iteration started after the writer returned: it must see everything.
                    expect_eq(last, TOTAL, "reader: last_index after the writer finished")?;
                    return Ok(reads);
                }
                std::thread::yield_now();
            }
        }

        let wal = f.create();
        let done = AtomicBool::new(false);
        let (writer_result, reader_results) = std::thread::scope(|scope| {
            let readers: Vec<_> = (0..READERS)
                .map(|_| {
                    let (wal, done) = (&wal, &done);
                    scope.spawn(move || reader(wal, done))
                })
                .collect();
            let writer_result = {
                let _stop_readers = SetOnDrop(&done);
                writer(&wal)
            };
            let reader_results: Vec<Result<u64, String>> = readers
                .into_iter()
                .map(|handle| {
                    handle.join().unwrap_or_else(|payload| Err(format!("panicked: {}", panic_message(&*payload))))
                })
                .collect();
            (writer_result, reader_results)
        });
        writer_result?;
        for (i, result) in reader_results.into_iter().enumerate() {
            result.map_err(|e| format!("reader {i}: {e}"))?;
        }
        let all: Vec<LogEntry> = (1..=TOTAL).map(|i| entry(i, term_of(i))).collect();
        check_log(&wal, P, &all, "P after the concurrent run")?;
        check_log(&wal, Q, &all, "Q after the concurrent run")
    }

    fn large_volume<F: WalFactory>(f: &mut F) -> CaseResult {
        const TOTAL: u64 = 10_000;
        const BATCH: u64 = 100;
        let term_of = |index: LogIndex| index / 1_000 + 1;
        let mut wal = f.create();
        for start in (1..=TOTAL).step_by(BATCH as usize) {
            let entries = (start..start + BATCH).map(|i| entry(i, term_of(i))).collect();
            write(&wal, vec![append(P, entries)], &format!("batch starting at {start}"))?;
        }
        let expected: Vec<LogEntry> = (1..=TOTAL).map(|i| entry(i, term_of(i))).collect();
        expect_eq(wal.last_index(P).ctx("last_index")?, TOTAL, "last_index")?;
        let all = wal.read_range(P, 1, TOTAL).ctx("read_range all")?;
        expect_entries(&all, &expected, "read_range(1, 10000)")?;
        for from in (1..=TOTAL).step_by(1_000) {
            let page = wal.read_range(P, from, from + 999).ctx("read_range page")?;
            let want = &expected[(from - 1) as usize..(from + 999) as usize];
            expect_entries(&page, want, &format!("read_range({from}, {})", from + 999))?;
        }
        for index in (1..=TOTAL).step_by(97).chain([999, 1_000, 1_001, TOTAL]) {
            expect_eq(wal.term_at(P, index).ctx("term_at")?, Some(term_of(index)), &format!("term_at({index})"))?;
        }
        expect_eq(wal.term_at(P, TOTAL + 1).ctx("term_at")?, None, "term_at past the end")?;
        wal = f.reopen(wal);
        expect_eq(wal.last_index(P).ctx("last_index")?, TOTAL, "last_index after reopen")?;
        let all = wal.read_range(P, 0, LogIndex::MAX).ctx("read_range after reopen")?;
        expect_entries(&all, &expected, "read_range(0, MAX) after reopen")
    }
}

/// Test support: a [`Wal`](crate::wal::Wal) that delegates everything to `inner` but first runs a
/// hook on every [`write`](crate::wal::Wal::write). The hook may sleep (slow storage) or return an
/// error, which fails the write without storing anything (failing storage). An optional second
/// hook runs after a successful inner write and may fail it anyway (a failed fsync: the data may
/// or may not be durable).
pub struct WriteHookWal<W> {
    inner: W,
    hook: Box<WriteHook>,
    after: Option<Box<WriteHook>>,
    reopen: Option<Box<ReopenHook>>,
}

/// The reopen hook of a [`WriteHookWal`].
pub type ReopenHook = dyn Fn() -> Result<(), crate::wal::WalError> + Send + Sync;

/// The hook of a [`WriteHookWal`].
pub type WriteHook = dyn Fn(&crate::wal::WalBatch) -> Result<(), crate::wal::WalError> + Send + Sync;

impl<W> WriteHookWal<W> {
    /// Wrap `inner`, running `hook` before each write.
    pub fn new(
        inner: W,
        hook: impl Fn(&crate::wal::WalBatch) -> Result<(), crate::wal::WalError> + Send + Sync + 'static,
    ) -> Self {
        WriteHookWal { inner, hook: Box::new(hook), after: None, reopen: None }
    }

    /// Also run `after` once the inner write succeeded; its error fails the write (whose data
    /// stays stored).
    pub fn with_after(
        mut self,
        after: impl Fn(&crate::wal::WalBatch) -> Result<(), crate::wal::WalError> + Send + Sync + 'static,
    ) -> Self {
        self.after = Some(Box::new(after));
        self
    }

    /// Also run `hook` before each [`reopen`](crate::wal::Wal::reopen); its error fails the
    /// reopen (storage that cannot be opened again yet).
    pub fn with_reopen(mut self, hook: impl Fn() -> Result<(), crate::wal::WalError> + Send + Sync + 'static) -> Self {
        self.reopen = Some(Box::new(hook));
        self
    }

    /// The wrapped WAL.
    pub fn inner(&self) -> &W {
        &self.inner
    }
}

impl<W: crate::wal::Wal> crate::wal::Wal for WriteHookWal<W> {
    fn write(&self, batch: &crate::wal::WalBatch) -> Result<(), crate::wal::WalError> {
        (self.hook)(batch)?;
        self.inner.write(batch)?;
        self.after.as_ref().map_or(Ok(()), |after| after(batch))
    }
    fn truncate_suffix(&self, p: crate::PartitionId, from: crate::LogIndex) -> Result<(), crate::wal::WalError> {
        self.inner.truncate_suffix(p, from)
    }
    fn read_range(
        &self,
        p: crate::PartitionId,
        from: crate::LogIndex,
        to: crate::LogIndex,
    ) -> Result<Vec<crate::LogEntry>, crate::wal::WalError> {
        self.inner.read_range(p, from, to)
    }
    fn term_at(
        &self,
        p: crate::PartitionId,
        index: crate::LogIndex,
    ) -> Result<Option<crate::Term>, crate::wal::WalError> {
        self.inner.term_at(p, index)
    }
    fn last_index(&self, p: crate::PartitionId) -> Result<crate::LogIndex, crate::wal::WalError> {
        self.inner.last_index(p)
    }
    fn compacted_through(&self, p: crate::PartitionId) -> Result<crate::LogIndex, crate::wal::WalError> {
        self.inner.compacted_through(p)
    }
    fn load_snapshot(&self, p: crate::PartitionId) -> Result<Option<crate::SnapshotMeta>, crate::wal::WalError> {
        self.inner.load_snapshot(p)
    }
    fn save_hard_state(&self, p: crate::PartitionId, state: &crate::HardState) -> Result<(), crate::wal::WalError> {
        self.inner.save_hard_state(p, state)
    }
    fn load_hard_state(&self, p: crate::PartitionId) -> Result<Option<crate::HardState>, crate::wal::WalError> {
        self.inner.load_hard_state(p)
    }
    fn partitions(&self) -> Result<Vec<crate::PartitionId>, crate::wal::WalError> {
        self.inner.partitions()
    }
    fn reopen(&self) -> Result<(), crate::wal::WalError> {
        self.reopen.as_ref().map_or(Ok(()), |hook| hook())?;
        self.inner.reopen()
    }
}
