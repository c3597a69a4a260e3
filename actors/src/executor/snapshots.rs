//! The executor's side of snapshots: it asks the application for one when the core says so, reads
//! chunks of stored snapshots for followers and stages received ones (off the executor, on the
//! blocking pool), tells the application to install a snapshot before the entries that follow it,
//! and removes older snapshot files once a newer meta is durable.

use super::PartitionExecutor;
use crate::application::TakeSnapshot;
use crate::events::RaftEvent;
use actix::prelude::*;
use kommander_core::snapshot::{SnapshotChunkRead, SnapshotChunkWrite, SnapshotMeta, SnapshotRequest};
use kommander_core::LogIndex;

/// Ask the application's actor to snapshot.
#[derive(Message)]
#[rtype(result = "Option<LogIndex>")]
pub(crate) struct RequestSnapshot;

impl Handler<RequestSnapshot> for PartitionExecutor {
    type Result = Option<LogIndex>;

    /// Returns the index the snapshot will cover (the applied index now), or the latest
    /// snapshot's when nothing new was applied since.
    fn handle(&mut self, _: RequestSnapshot, ctx: &mut Context<Self>) -> Option<LogIndex> {
        let sm = self.sm.as_mut()?;
        self.shared.snapshot_recipient(self.config.partition)?;
        let covered = sm.snapshot().map_or(0, |m| m.index);
        let target = if sm.request_snapshot() { sm.applied_index() } else { covered.max(sm.applied_index()) };
        self.schedule_flush(ctx);
        Some(target)
    }
}

impl PartitionExecutor {
    /// The application installs `meta`'s snapshot (before any entry after it).
    pub(super) fn emit_install(&mut self, meta: &SnapshotMeta) {
        // The snapshot holds every import up to its index; chunks after it start anew.
        self.import_assembly.reset();
        let snapshot = self.shared.snapshots.source(meta.partition, meta.index, meta.term);
        self.emit(RaftEvent::SnapshotInstalled { partition: meta.partition, index: meta.index, snapshot });
    }

    /// The core asks for a snapshot: the application writes it (after the deliveries already
    /// sent, in its mailbox order), then the core stores the meta and compacts.
    pub(super) fn take_snapshot(&mut self, request: SnapshotRequest, ctx: &mut Context<Self>) {
        let mut meta = request.meta;
        let (partition, index, incarnation) = (meta.partition, meta.index, self.incarnation);
        if self.import_assembly.is_pending() {
            // Half an import is applied here but not in the application's state: not a point
            // a restore could continue from. Taken later.
            if let Some(sm) = self.sm.as_mut() {
                sm.on_snapshot_failed(index);
            }
            return;
        }
        let sink = self.shared.snapshots.sink(partition, index, meta.term);
        let (Some(recipient), Ok(sink)) = (self.shared.snapshot_recipient(partition), sink) else {
            tracing::warn!(%partition, index, "no snapshot taken (no application actor, or the store failed)");
            if let Some(sm) = self.sm.as_mut() {
                sm.on_snapshot_failed(index);
            }
            return;
        };
        let asked = recipient.send(TakeSnapshot { partition, index, sink });
        ctx.spawn(asked.into_actor(self).map(move |result, act, ctx| {
            if act.incarnation != incarnation {
                return;
            }
            let Some(sm) = act.sm.as_mut() else { return };
            match result {
                Ok(Ok((size, checksum))) => {
                    meta.size = size;
                    meta.checksum = checksum;
                    tracing::debug!(%partition, index, size, "snapshot written");
                    sm.on_snapshot_taken(meta);
                }
                Ok(Err(error)) => {
                    tracing::warn!(%partition, index, %error, "the application failed to snapshot");
                    sm.on_snapshot_failed(index);
                }
                Err(error) => {
                    tracing::warn!(%partition, index, %error, "the application actor did not answer the snapshot request");
                    sm.on_snapshot_failed(index);
                }
            }
            act.schedule_flush(ctx);
        }));
    }

    /// Read a chunk of a stored snapshot for a follower.
    pub(super) fn read_snapshot_chunk(&mut self, read: SnapshotChunkRead, ctx: &mut Context<Self>) {
        let store = self.shared.snapshots.clone();
        let incarnation = self.incarnation;
        let work = tokio::task::spawn_blocking(move || {
            store.read_chunk(read.partition, read.index, read.term, read.offset, read.len).map_err(|e| e.to_string())
        });
        ctx.spawn(work.into_actor(self).map(move |result, act, ctx| {
            if act.incarnation != incarnation {
                return;
            }
            let result = result.unwrap_or_else(|e| Err(format!("chunk read panicked: {e}")));
            if let Some(sm) = act.sm.as_mut() {
                sm.on_snapshot_chunk_read(read.id, result);
                act.schedule_flush(ctx);
            }
        }));
    }

    /// Stage a chunk received from the leader (the last one is checked and published).
    pub(super) fn stage_snapshot_chunk(&mut self, chunk: SnapshotChunkWrite, ctx: &mut Context<Self>) {
        let store = self.shared.snapshots.clone();
        let incarnation = self.incarnation;
        let (index, term, offset) = (chunk.meta.index, chunk.meta.term, chunk.offset);
        let work = tokio::task::spawn_blocking(move || {
            store.stage_chunk(&chunk.meta, chunk.offset, &chunk.data, chunk.done).map_err(|e| e.to_string())
        });
        ctx.spawn(work.into_actor(self).map(move |result, act, ctx| {
            if act.incarnation != incarnation {
                return;
            }
            let result = result.unwrap_or_else(|e| Err(format!("staging panicked: {e}")));
            if let Err(error) = &result {
                tracing::warn!(partition = %act.config.partition, index, offset, %error, "a snapshot chunk was not staged");
            }
            if let Some(sm) = act.sm.as_mut() {
                sm.on_snapshot_chunk_written(index, term, offset, result);
                act.schedule_flush(ctx);
            }
        }));
    }

    /// A write carrying a snapshot meta is durable: older snapshot files go.
    pub(super) fn snapshot_durable(&mut self, write_id: u64) {
        let (durable, pending): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.snapshot_writes).into_iter().partition(|&(id, _)| id <= write_id);
        self.snapshot_writes = pending;
        let Some(index) = durable.into_iter().map(|(_, index)| index).max() else { return };
        self.durable_snapshot = self.durable_snapshot.max(index);
        self.shared.metrics.snapshots.increment(1);
        let (store, partition) = (self.shared.snapshots.clone(), self.config.partition);
        tokio::task::spawn_blocking(move || {
            if let Err(error) = store.retain_from(partition, index) {
                tracing::warn!(%partition, index, %error, "removing older snapshots failed");
            }
        });
    }
}
