//! Storage of one node: an in-memory Raft log (`RaftLogStorage` + `RaftLogReader`, no fsync: an
//! append is flushed the moment it is stored) and a state machine that only counts the application
//! writes it applied (`RaftStateMachine` + `RaftSnapshotBuilder`; the snapshot is that count).

use crate::cluster::{Response, TypeConfig};
use futures_util::TryStreamExt;
use openraft::entry::RaftEntry;
use openraft::storage::{
    EntryResponder, IOFlushed, LogState, RaftLogReader, RaftLogStorage, RaftSnapshotBuilder, RaftStateMachine,
    Snapshot, SnapshotMeta,
};
use openraft::type_config::alias::{EntryOf, LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf, VoteOf};
use openraft::{EntryPayload, OptionalSend, StoredMembership};
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::RangeBounds;
use std::sync::{Arc, Mutex, MutexGuard};

/// A snapshot's data: the number of application writes applied up to its last log id.
pub type SnapshotData = u64;

#[derive(Default)]
struct Log {
    vote: Option<VoteOf<TypeConfig>>,
    last_purged: Option<LogIdOf<TypeConfig>>,
    entries: BTreeMap<u64, EntryOf<TypeConfig>>,
}

/// The log of one node. Clones share it: the log reader handed to replication is a clone.
#[derive(Clone, Default)]
pub struct LogStore(Arc<Mutex<Log>>);

impl LogStore {
    fn log(&self) -> MutexGuard<'_, Log> {
        self.0.lock().expect("log mutex poisoned")
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> io::Result<Vec<EntryOf<TypeConfig>>> {
        Ok(self.log().entries.range(range).map(|(_, entry)| entry.clone()).collect())
    }

    async fn read_vote(&mut self) -> io::Result<Option<VoteOf<TypeConfig>>> {
        Ok(self.log().vote)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> io::Result<LogState<TypeConfig>> {
        let log = self.log();
        let last = log.entries.values().next_back().map(|entry| entry.log_id()).or(log.last_purged);
        Ok(LogState { last_purged_log_id: log.last_purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &VoteOf<TypeConfig>) -> io::Result<()> {
        self.log().vote = Some(*vote);
        Ok(())
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> io::Result<()>
    where
        I: IntoIterator<Item = EntryOf<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        self.log().entries.extend(entries.into_iter().map(|entry| (entry.index(), entry)));
        callback.io_completed(Ok(()));
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogIdOf<TypeConfig>>) -> io::Result<()> {
        let first_removed = last_log_id.map_or(0, |log_id| log_id.index + 1);
        self.log().entries.split_off(&first_removed);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogIdOf<TypeConfig>) -> io::Result<()> {
        let mut log = self.log();
        log.entries = log.entries.split_off(&(log_id.index + 1));
        log.last_purged = Some(log_id);
        Ok(())
    }
}

type CurrentSnapshot = Arc<Mutex<Option<SnapshotOf<TypeConfig, SnapshotData>>>>;

/// The state machine of one node: it counts the application writes and answers each with
/// [`Response`].
#[derive(Default)]
pub struct StateMachine {
    applied: Option<LogIdOf<TypeConfig>>,
    membership: StoredMembershipOf<TypeConfig>,
    writes: u64,
    /// The last snapshot built or installed, shared with the snapshot builders.
    current: CurrentSnapshot,
}

/// Builds a snapshot of the state the state machine had when the builder was made.
pub struct SnapshotBuilder {
    snapshot: SnapshotOf<TypeConfig, SnapshotData>,
    current: CurrentSnapshot,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> io::Result<SnapshotOf<TypeConfig, SnapshotData>> {
        *self.current.lock().expect("snapshot mutex poisoned") = Some(self.snapshot.clone());
        Ok(self.snapshot.clone())
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> io::Result<(Option<LogIdOf<TypeConfig>>, StoredMembershipOf<TypeConfig>)> {
        Ok((self.applied, self.membership.clone()))
    }

    async fn apply<S>(&mut self, mut entries: S) -> io::Result<()>
    where
        S: futures_util::Stream<Item = io::Result<EntryResponder<TypeConfig>>> + Unpin + OptionalSend,
    {
        while let Some((entry, responder)) = entries.try_next().await? {
            self.applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(_) => self.writes += 1,
                EntryPayload::Membership(membership) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), membership)
                }
            }
            if let Some(responder) = responder {
                responder.send(Response);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        let meta = SnapshotMeta { last_log_id: self.applied, last_membership: self.membership.clone() };
        SnapshotBuilder { snapshot: Snapshot { meta, snapshot: self.writes }, current: self.current.clone() }
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMetaOf<TypeConfig>, snapshot: SnapshotData) -> io::Result<()> {
        self.applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.writes = snapshot;
        *self.current.lock().expect("snapshot mutex poisoned") = Some(Snapshot { meta: meta.clone(), snapshot });
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> io::Result<Option<SnapshotOf<TypeConfig, SnapshotData>>> {
        Ok(self.current.lock().expect("snapshot mutex poisoned").clone())
    }
}
