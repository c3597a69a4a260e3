//! [`StateMachine`]: what an application implements to be replicated — apply committed entries,
//! rebuild on restore, export and import a key range during splits and merges — and
//! [`StateMachineActor`], the ready-made actor that turns the runtime's [`RaftEvent`]s and
//! [`ExportState`] requests into calls of it. Register the actor with
//! [`crate::RaftManagerBuilder::state_machine`]; read the state with [`Read`].
//!
//! Per partition, calls come in log order, exactly once per partition incarnation: after a restart
//! the runtime calls [`StateMachine::reset`] and replays the partition's committed entries through
//! [`StateMachine::apply`] before any new one. Applications that want the raw events can still
//! register their own `Recipient<RaftEvent>` with [`crate::RaftManagerBuilder::events`].

use crate::events::RaftEvent;
use crate::snapshot_store::SnapshotSink;
use crate::transfer::ExportState;
use actix::prelude::*;
use kommander_core::system::{HashRange, PartitionMap};
use kommander_core::{LogEntry, NodeId, PartitionId, Term};
use std::io::{self, Read as IoRead, Write};

/// A replicated state machine with one independent state per partition.
pub trait StateMachine: Unpin + 'static {
    /// Apply committed entries of `partition`, in log order (replayed ones after a restart too).
    fn apply(&mut self, partition: PartitionId, entries: &[LogEntry]);

    /// `partition` starts replaying its log: forget its state (the replay rebuilds it).
    fn reset(&mut self, partition: PartitionId);

    /// The state of the keys of `partition` whose hash lies in `range`, serialized as the
    /// application likes (a split or merge moves it). The default exports nothing.
    fn export(&self, partition: PartitionId, range: HashRange) -> Result<Vec<u8>, String> {
        let _ = (partition, range);
        Ok(Vec::new())
    }

    /// Replace the state of the keys of `partition` whose hash lies in `range` with `data` (an
    /// [`StateMachine::export`] of `source`). In log order with the partition's entries.
    fn import(&mut self, partition: PartitionId, source: PartitionId, range: HashRange, data: &[u8]) {
        let _ = (partition, source, range, data);
    }

    /// Write the whole state of `partition` into `out` (streamed: write it in pieces, never
    /// build one buffer of the whole state). Called on the actor when the runtime takes a
    /// snapshot, with every entry up to the snapshot's index applied and none after. The runtime
    /// stores the bytes (synced, checksummed) and compacts the log behind them. The default
    /// writes the export of the full key range.
    fn snapshot(&self, partition: PartitionId, out: &mut dyn Write) -> io::Result<()> {
        let data = self.export(partition, HashRange::FULL).map_err(io::Error::other)?;
        out.write_all(&data)
    }

    /// Replace the whole state of `partition` with what [`StateMachine::snapshot`] wrote (on
    /// restore, or when a far-behind replica installs the leader's snapshot); entries after the
    /// snapshot follow. The default resets the partition and imports the bytes as the full key
    /// range.
    fn restore_snapshot(&mut self, partition: PartitionId, input: &mut dyn IoRead) -> io::Result<()> {
        let mut data = Vec::new();
        input.read_to_end(&mut data)?;
        self.reset(partition);
        self.import(partition, partition, HashRange::FULL, &data);
        Ok(())
    }

    /// The partition map changed (a split or merge completed, a partition was created or
    /// removed): a partition keeps only the keys of its new range. The default does nothing.
    fn map_changed(&mut self, map: &PartitionMap) {
        let _ = map;
    }

    /// `partition`'s replay after a (re)start finished: every entry this replica had committed
    /// before it stopped is applied (a snapshot's state included). Until then the state is being
    /// rebuilt, and a key missing from it may only not be replayed yet: an application that
    /// serves reads should wait for this (the server's `GET /kv` does). The default does nothing.
    fn restore_finished(&mut self, partition: PartitionId) {
        let _ = partition;
    }

    /// The leader of `partition` changed. The default does nothing.
    fn leader_changed(&mut self, partition: PartitionId, term: Term, leader: Option<NodeId>) {
        let _ = (partition, term, leader);
    }
}

/// The actor adapting a [`StateMachine`] to the runtime's events.
pub struct StateMachineActor<S: StateMachine> {
    state: S,
}

impl<S: StateMachine> StateMachineActor<S> {
    /// An actor over `state` (start it with `Actor::start`).
    pub fn new(state: S) -> Self {
        StateMachineActor { state }
    }
}

impl<S: StateMachine> Actor for StateMachineActor<S> {
    type Context = Context<Self>;
}

impl<S: StateMachine> Handler<RaftEvent> for StateMachineActor<S> {
    type Result = ();

    fn handle(&mut self, event: RaftEvent, _: &mut Context<Self>) {
        match event {
            RaftEvent::RestoreStarted { partition } => self.state.reset(partition),
            RaftEvent::SnapshotInstalled { partition, index, snapshot } => {
                let restored = snapshot
                    .open()
                    .map_err(io::Error::other)
                    .and_then(|mut input| self.state.restore_snapshot(partition, &mut input));
                if let Err(error) = restored {
                    tracing::error!(%partition, index, %error, "the application could not restore a snapshot");
                }
            }
            RaftEvent::Restored { partition, entries } | RaftEvent::Replicated { partition, entries } => {
                self.state.apply(partition, &entries)
            }
            RaftEvent::Imported { partition, source, range, data, .. } => {
                self.state.import(partition, source, range, &data)
            }
            RaftEvent::PartitionMapChanged { map, .. } => self.state.map_changed(&map),
            RaftEvent::LeaderChanged { partition, term, leader } => self.state.leader_changed(partition, term, leader),
            RaftEvent::RestoreFinished { partition } => self.state.restore_finished(partition),
            RaftEvent::RosterChanged { .. } => {}
        }
    }
}

impl<S: StateMachine> Handler<TakeSnapshot> for StateMachineActor<S> {
    type Result = Result<(u64, u32), String>;

    fn handle(&mut self, request: TakeSnapshot, _: &mut Context<Self>) -> Self::Result {
        let TakeSnapshot { partition, mut sink, .. } = request;
        self.state.snapshot(partition, &mut sink).map_err(|e| e.to_string())?;
        sink.finish().map_err(|e| e.to_string())
    }
}

impl<S: StateMachine> Handler<ExportState> for StateMachineActor<S> {
    type Result = Result<Vec<u8>, String>;

    fn handle(&mut self, request: ExportState, _: &mut Context<Self>) -> Self::Result {
        self.state.export(request.partition, request.range)
    }
}

/// The runtime asks the application's actor for a snapshot of `partition` at `index`: write the
/// state into `sink` and [`SnapshotSink::finish`] it; answer its size and CRC32C. Ordered after
/// the events of every entry up to `index` (the same mailbox), before any later one.
#[derive(Debug, Message)]
#[rtype(result = "Result<(u64, u32), String>")]
pub struct TakeSnapshot {
    /// The partition.
    pub partition: PartitionId,
    /// The last applied index the snapshot covers.
    pub index: kommander_core::LogIndex,
    /// Where the bytes go.
    pub sink: SnapshotSink,
}

/// Read the state machine's state on its actor: `addr.send(Read::new(|s: &MyState| s.get(k)))`.
pub struct Read<S, R> {
    read: Box<dyn FnOnce(&S) -> R + Send>,
}

impl<S, R> Read<S, R> {
    /// A read running `read` on the state.
    pub fn new(read: impl FnOnce(&S) -> R + Send + 'static) -> Self {
        Read { read: Box::new(read) }
    }
}

impl<S, R: 'static> Message for Read<S, R> {
    type Result = R;
}

impl<S: StateMachine, R: 'static> Handler<Read<S, R>> for StateMachineActor<S> {
    type Result = MessageResult<Read<S, R>>;

    fn handle(&mut self, read: Read<S, R>, _: &mut Context<Self>) -> Self::Result {
        MessageResult((read.read)(&self.state))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kommander_core::{EntryKind, HlcTimestamp};
    use std::collections::BTreeMap;

    /// Payloads per partition; exports everything, imports by appending.
    #[derive(Default)]
    struct Log(BTreeMap<PartitionId, Vec<Vec<u8>>>);

    impl StateMachine for Log {
        fn apply(&mut self, partition: PartitionId, entries: &[LogEntry]) {
            self.0.entry(partition).or_default().extend(entries.iter().map(|e| e.payload.to_vec()));
        }
        fn reset(&mut self, partition: PartitionId) {
            self.0.remove(&partition);
        }
        fn export(&self, partition: PartitionId, _: HashRange) -> Result<Vec<u8>, String> {
            Ok(self.0.get(&partition).map(|p| p.concat()).unwrap_or_default())
        }
        fn import(&mut self, partition: PartitionId, _: PartitionId, _: HashRange, data: &[u8]) {
            self.0.entry(partition).or_default().push(data.to_vec());
        }
    }

    fn entry(index: u64, payload: &[u8]) -> LogEntry {
        LogEntry {
            index,
            term: 1,
            kind: EntryKind::Application { auto_commit: true },
            log_type: "t".into(),
            payload: payload.to_vec().into(),
            ticket: HlcTimestamp { physical_ms: index, logical: 0, node: 1 },
        }
    }

    #[actix::test]
    async fn events_become_calls_in_order_and_a_restore_starts_over() {
        let p = PartitionId(1);
        let actor = StateMachineActor::new(Log::default()).start();
        actor.do_send(RaftEvent::Replicated { partition: p, entries: vec![entry(1, b"a"), entry(2, b"b")] });
        actor.do_send(RaftEvent::RestoreStarted { partition: p });
        actor.do_send(RaftEvent::Restored { partition: p, entries: vec![entry(1, b"a")] });
        actor.do_send(RaftEvent::Imported {
            partition: p,
            source: PartitionId(2),
            range: HashRange::FULL,
            data: b"moved".to_vec(),
            index: 2,
        });
        let seen = actor.send(Read::new(move |s: &Log| s.0.get(&p).cloned().unwrap_or_default())).await.unwrap();
        assert_eq!(seen, vec![b"a".to_vec(), b"moved".to_vec()]);
        let exported = actor.send(ExportState { partition: p, range: HashRange::FULL }).await.unwrap();
        assert_eq!(exported, Ok(b"amoved".to_vec()));
        // The snapshot hooks default to a full-range export and a reset + import.
        let snapshot = actor
            .send(Read::new(move |s: &Log| {
                let mut out = Vec::new();
                s.snapshot(p, &mut out).map(|()| out).map_err(|e| e.to_string())
            }))
            .await
            .unwrap();
        assert_eq!(snapshot, Ok(b"amoved".to_vec()));
        let mut log = Log::default();
        log.apply(p, &[entry(1, b"stale")]);
        log.restore_snapshot(p, &mut &b"amoved"[..]).unwrap();
        assert_eq!(log.0[&p], vec![b"amoved".to_vec()]);
    }
}
