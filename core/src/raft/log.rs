//! The in-memory view of one partition's log: a window of entries, the commit / apply / stable
//! frontiers, and what still has to be handed to the WAL.
//!
//! Rules kept here: entries at or below `commit` are never removed or replaced; only durable,
//! applied entries are evicted from memory (older ones are read back from the WAL on demand).

use super::membership::MembershipLog;
use crate::entry::LogEntry;
use crate::ids::{LogIndex, Term};
use crate::wal::PartitionWrite;
use std::collections::VecDeque;

/// A write handed to the WAL and not yet acknowledged.
#[derive(Clone, Copy, Debug)]
struct InFlightWrite {
    id: u64,
    last_index: LogIndex,
    last_term: Term,
}

#[derive(Clone, Debug)]
pub(crate) struct RaftLog {
    /// Entries `offset + 1 ..= offset + entries.len()`.
    entries: VecDeque<LogEntry>,
    /// Index just before the first in-memory entry (all entries ≤ offset are durable and applied).
    offset: LogIndex,
    /// Term of the entry at `offset` (0 when `offset` is 0).
    offset_term: Term,
    /// Highest index known committed.
    pub(crate) commit: LogIndex,
    /// Highest index handed to the application cursor.
    pub(crate) applied: LogIndex,
    /// Highest index known durable *and* matching the current in-memory log.
    pub(crate) stable: LogIndex,
    /// First index not yet included in any WAL write.
    unpersisted_from: LogIndex,
    /// Pending explicit truncation for the next write.
    truncate_from: Option<LogIndex>,
    in_flight: VecDeque<InFlightWrite>,
    /// Configurations carried by the log's config entries (and the base before them).
    pub(crate) membership: MembershipLog,
}

impl Default for RaftLog {
    fn default() -> Self {
        RaftLog::restored(Vec::new(), 0)
    }
}

impl RaftLog {
    /// A log restored from durable entries (consecutive from 1).
    pub(crate) fn restored(entries: Vec<LogEntry>, commit: LogIndex) -> Self {
        Self::restored_after(0, 0, entries, commit)
    }

    /// A log restored from a snapshot at (`base`, `base_term`) and the durable entries after it
    /// (consecutive from `base + 1`). Everything through `base` counts as committed and applied.
    pub(crate) fn restored_after(base: LogIndex, base_term: Term, entries: Vec<LogEntry>, commit: LogIndex) -> Self {
        let last = entries.last().map_or(base, |e| e.index);
        let mut membership = MembershipLog::default();
        for entry in &entries {
            membership.appended(entry);
        }
        RaftLog {
            membership,
            entries: entries.into(),
            offset: base,
            offset_term: base_term,
            commit: commit.min(last).max(base),
            applied: base,
            stable: last,
            unpersisted_from: last + 1,
            truncate_from: None,
            in_flight: VecDeque::new(),
        }
    }

    /// A snapshot at (`index`, `term`) replaces everything through `index` (Raft §7): a suffix
    /// that matches it is kept, anything else is discarded. The next write must carry the
    /// snapshot and compact the WAL through `index`; entries above it not yet written are
    /// written then.
    pub(crate) fn install(&mut self, index: LogIndex, term: Term) {
        let matches = index >= self.offset && self.term_at(index) == Some(term);
        if matches {
            while self.offset < index {
                let Some(front) = self.entries.pop_front() else { break };
                self.offset = front.index;
                self.offset_term = front.term;
            }
            self.stable = self.stable.max(index);
            self.unpersisted_from = self.unpersisted_from.max(index + 1);
        } else {
            // Everything above `index` differs from the leader's log: the WAL drops it too, and
            // whatever comes next is written anew.
            let from = index + 1;
            if self.last_index() >= from && from < self.unpersisted_from {
                self.truncate_from = Some(self.truncate_from.map_or(from, |t| t.min(from)));
            }
            self.entries.clear();
            self.membership.truncated(from);
            self.stable = index;
            self.unpersisted_from = from;
        }
        self.offset = index;
        self.offset_term = term;
        self.commit = self.commit.max(index);
        self.applied = self.applied.max(index);
    }

    pub(crate) fn last_index(&self) -> LogIndex {
        self.offset + self.entries.len() as LogIndex
    }

    pub(crate) fn last_term(&self) -> Term {
        self.entries.back().map_or(self.offset_term, |e| e.term)
    }

    /// First index still held in memory.
    #[cfg(test)]
    pub(crate) fn first_in_memory(&self) -> LogIndex {
        self.offset + 1
    }

    /// Index just before the first in-memory entry.
    pub(crate) fn offset(&self) -> LogIndex {
        self.offset
    }

    /// Term at `index` if known in memory (`Some(0)` for index 0).
    pub(crate) fn term_at(&self, index: LogIndex) -> Option<Term> {
        if index == self.offset {
            return Some(self.offset_term);
        }
        self.get(index).map(|e| e.term)
    }

    pub(crate) fn get(&self, index: LogIndex) -> Option<&LogEntry> {
        if index <= self.offset {
            return None;
        }
        self.entries.get((index - self.offset - 1) as usize)
    }

    /// Clones of the in-memory entries `from ..= to`, at most `max` of them.
    pub(crate) fn slice(&self, from: LogIndex, to: LogIndex, max: usize) -> Vec<LogEntry> {
        if from > to || from <= self.offset {
            return Vec::new();
        }
        let start = (from - self.offset - 1) as usize;
        let end = ((to.min(self.last_index()) - self.offset) as usize).min(start.saturating_add(max));
        self.entries.range(start..end).cloned().collect()
    }

    /// Append an entry at `last_index() + 1`.
    pub(crate) fn push(&mut self, entry: LogEntry) {
        debug_assert_eq!(entry.index, self.last_index() + 1);
        self.membership.appended(&entry);
        self.entries.push_back(entry);
    }

    /// Remove the suffix from `from`. Callers check `from > commit`.
    pub(crate) fn truncate_from(&mut self, from: LogIndex) {
        debug_assert!(from > self.offset, "never truncate evicted entries");
        if from > self.last_index() {
            return;
        }
        self.entries.truncate((from - self.offset - 1) as usize);
        self.membership.truncated(from);
        self.stable = self.stable.min(from - 1);
        if from < self.unpersisted_from {
            self.unpersisted_from = from;
            self.truncate_from = Some(self.truncate_from.map_or(from, |t| t.min(from)));
        }
    }

    /// Replace the entry at `index` in place (test-only canary bug path; never used by the
    /// correct protocol).
    #[cfg(feature = "canary-bugs")]
    pub(crate) fn overwrite_in_place(&mut self, entry: LogEntry) {
        let index = entry.index;
        let pos = (index - self.offset - 1) as usize;
        self.entries[pos] = entry;
        self.stable = self.stable.min(index - 1);
        if index < self.unpersisted_from {
            self.unpersisted_from = index;
        }
    }

    /// Is there anything not yet handed to the WAL?
    pub(crate) fn has_unpersisted(&self) -> bool {
        self.truncate_from.is_some() || self.unpersisted_from <= self.last_index()
    }

    /// Move every not-yet-persisted entry into `write` and remember the write as in flight.
    pub(crate) fn take_unpersisted(&mut self, id: u64, write: &mut PartitionWrite) {
        write.truncate_from = self.truncate_from.take();
        let last = self.last_index();
        if self.unpersisted_from <= last {
            write.entries = self.slice(self.unpersisted_from, last, usize::MAX);
            self.unpersisted_from = last + 1;
        }
        self.in_flight.push_back(InFlightWrite { id, last_index: last, last_term: self.last_term() });
    }

    /// The WAL finished write `id` (writes finish in order). Advances `stable` when the written
    /// prefix still matches the in-memory log.
    pub(crate) fn write_completed(&mut self, id: u64) {
        while let Some(front) = self.in_flight.front().copied() {
            if front.id > id {
                break;
            }
            self.in_flight.pop_front();
            if self.term_at(front.last_index) == Some(front.last_term) {
                self.stable = self.stable.max(front.last_index.min(self.last_index()));
            }
        }
    }

    /// Drop applied, durable entries beyond the `keep` most recent ones.
    pub(crate) fn evict(&mut self, keep: usize) {
        let evictable_to = self.applied.min(self.stable).min(self.commit);
        while self.offset < evictable_to && self.entries.len() > keep {
            let Some(front) = self.entries.pop_front() else { break };
            self.offset = front.index;
            self.offset_term = front.term;
        }
    }

    /// Drop in-memory entries through `index` (compacted in the WAL too), as far as they are
    /// applied and durable.
    pub(crate) fn evict_through(&mut self, index: LogIndex) {
        let evictable_to = index.min(self.applied).min(self.stable).min(self.commit);
        while self.offset < evictable_to {
            let Some(front) = self.entries.pop_front() else { break };
            self.offset = front.index;
            self.offset_term = front.term;
        }
    }

    /// Last index in memory with term `term` at or below `at_most`, searching down to the window start.
    pub(crate) fn last_index_of_term(&self, term: Term, at_most: LogIndex) -> Option<LogIndex> {
        let mut i = at_most.min(self.last_index());
        while i > self.offset {
            match self.term_at(i) {
                Some(t) if t == term => return Some(i),
                Some(t) if t < term => return None,
                _ => i -= 1,
            }
        }
        None
    }

    /// First index of the run of `term` that contains `index`, not going below `floor`.
    pub(crate) fn first_index_of_term_run(&self, index: LogIndex, floor: LogIndex) -> LogIndex {
        let term = self.term_at(index);
        let mut i = index;
        while i > floor.max(self.offset + 1) && self.term_at(i - 1) == term {
            i -= 1;
        }
        i
    }

    /// Iterate the in-memory entries above `after`.
    pub(crate) fn iter_after(&self, after: LogIndex) -> impl Iterator<Item = &LogEntry> {
        let skip = after.saturating_sub(self.offset) as usize;
        self.entries.iter().skip(skip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::EntryKind;
    use crate::hlc::HlcTimestamp;

    fn e(index: LogIndex, term: Term) -> LogEntry {
        LogEntry {
            index,
            term,
            kind: EntryKind::Barrier,
            log_type: crate::LogType::EMPTY,
            payload: bytes::Bytes::new(),
            ticket: HlcTimestamp::ZERO,
        }
    }

    #[test]
    fn stable_advances_only_when_the_written_prefix_still_matches() {
        let mut log = RaftLog::default();
        log.push(e(1, 1));
        log.push(e(2, 1));
        let mut w = PartitionWrite::default();
        log.take_unpersisted(1, &mut w);
        assert_eq!(w.entries.len(), 2);
        // A conflicting leader replaces index 2 before the first write completes.
        log.truncate_from(2);
        log.push(e(2, 2));
        log.write_completed(1);
        assert_eq!(log.stable, 0, "old index 2 was durable but no longer matches");
        let mut w2 = PartitionWrite::default();
        log.take_unpersisted(2, &mut w2);
        assert_eq!(w2.truncate_from, Some(2));
        assert_eq!(w2.entries, vec![e(2, 2)]);
        log.write_completed(2);
        assert_eq!(log.stable, 2);
    }

    #[test]
    fn eviction_keeps_unapplied_entries_and_the_offset_term() {
        let mut log = RaftLog::restored((1..=10).map(|i| e(i, 1 + i / 5)).collect(), 8);
        log.applied = 8;
        log.evict(3);
        assert_eq!(log.first_in_memory(), 8, "keep 3 newest: 8, 9, 10");
        assert_eq!(log.term_at(7), Some(2));
        assert_eq!(log.term_at(6), None);
        assert_eq!(log.slice(8, 10, 10).len(), 3);
        log.evict(0);
        assert_eq!(log.first_in_memory(), 9, "never evicts past applied");
    }

    #[test]
    fn term_search_helpers() {
        let log = RaftLog::restored(vec![e(1, 1), e(2, 1), e(3, 3), e(4, 3), e(5, 5)], 0);
        assert_eq!(log.last_index_of_term(3, 5), Some(4));
        assert_eq!(log.last_index_of_term(2, 5), None);
        assert_eq!(log.first_index_of_term_run(4, 0), 3);
        assert_eq!(log.first_index_of_term_run(2, 2), 2);
    }

    #[test]
    fn term_search_stays_inside_the_window() {
        // Terms 2 at 5..=9, 3 at 10; entries up to 7 evicted (the offset keeps 7's term).
        let mut log = RaftLog::restored((1..=10).map(|i| e(i, 1 + i / 5 + i / 10)).collect(), 10);
        log.applied = 10;
        log.evict(3);
        assert_eq!(log.first_in_memory(), 8);
        assert_eq!(log.first_index_of_term_run(9, 0), 8, "a hint never points below the window");
        assert_eq!(log.last_index_of_term(2, 10), Some(9));
    }
}
