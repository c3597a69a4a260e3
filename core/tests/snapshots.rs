//! Snapshots driven directly on [`PartitionStateMachine`]s (Raft §7): a leader compacts after the
//! application's snapshot and streams it in chunks to a follower behind the floor; the follower
//! stages, installs and then replicates normally; bad chunks (checksum, term, order, partition)
//! change nothing; restores start from the snapshot; resolved tickets are dropped once covered.

use kommander_core::codec::crc32c;
use kommander_core::raft::{ClientReply, Proposal, RestoreError, RestoreState};
use kommander_core::snapshot::{SnapshotChunkError, SnapshotMeta};
use kommander_core::{
    AppendResult, Bytes, Envelope, HardState, LogEntry, LogIndex, NodeId, PartitionConfig, PartitionId,
    PartitionStateMachine, ProposeError, RaftMessage, Ready, Role, StepError, Term,
};

const P: PartitionId = PartitionId(1);

fn config(node: u64, voters: &[u64]) -> PartitionConfig {
    let mut c = PartitionConfig::new(NodeId(node), P, voters.iter().copied().map(NodeId).collect());
    c.seed = 7;
    c.snapshot_interval_entries = 0;
    c.snapshot_interval_bytes = 0;
    c.snapshot_tail_entries = 2;
    c.snapshot_chunk_bytes = 4;
    c.log_cache_entries = 0;
    c
}

fn entries(from: LogIndex, to: LogIndex, term: Term) -> Vec<LogEntry> {
    (from..=to).map(|i| kommander_core::conformance::wal::entry(i, term)).collect()
}

fn restored(node: u64, voters: &[u64], state: RestoreState) -> PartitionStateMachine {
    PartitionStateMachine::restore(config(node, voters), state).expect("restore")
}

/// Take the outputs and make their write durable at once.
fn drain(sm: &mut PartitionStateMachine) -> Ready {
    let ready = sm.ready();
    if let Some(write) = &ready.write {
        sm.on_write_complete(write.id);
    }
    ready
}

fn envelope(from: u64, to: u64, message: RaftMessage) -> Envelope {
    Envelope { partition: P, from: NodeId(from), to: NodeId(to), message }
}

/// Node 1 of [1, 2], restored with `n` committed entries of term 1, elected in term 2, with every
/// applied entry evicted from memory (so a follower behind is served from the WAL or a snapshot).
fn leader(n: LogIndex) -> PartitionStateMachine {
    let hard_state = HardState { term: 1, voted_for: Some(NodeId(1)), commit: n };
    let state = RestoreState { hard_state: Some(hard_state), entries: entries(1, n, 1), ..Default::default() };
    let mut sm = restored(1, &[1, 2], state);
    drain(&mut sm);
    while sm.role() != Role::PreCandidate {
        sm.tick();
    }
    sm.step(envelope(2, 1, RaftMessage::VoteResponse { term: 2, granted: true, pre_vote: true })).unwrap();
    drain(&mut sm);
    sm.step(envelope(2, 1, RaftMessage::VoteResponse { term: 2, granted: true, pre_vote: false })).unwrap();
    assert_eq!(sm.role(), Role::Leader);
    drain(&mut sm);
    sm
}

/// A single-voter partition on node 1 (configured by `tune`), ticked until it leads.
fn lone_leader(tune: impl FnOnce(&mut PartitionConfig)) -> PartitionStateMachine {
    let mut c = config(1, &[1]);
    tune(&mut c);
    let mut sm = PartitionStateMachine::new(c).unwrap();
    while !sm.is_leader() {
        sm.tick();
        drain(&mut sm);
    }
    sm
}

/// The leader's snapshot at its applied index: the application's bytes are `data`.
fn take_snapshot(leader: &mut PartitionStateMachine, data: &[u8]) -> SnapshotMeta {
    assert!(leader.request_snapshot());
    let ready = drain(leader);
    let mut meta = ready.snapshot_request.expect("snapshot requested").meta;
    assert_eq!(meta.index, leader.applied_index());
    meta.size = data.len() as u64;
    meta.checksum = crc32c(data);
    leader.on_snapshot_taken(meta.clone());
    let ready = drain(leader);
    let write = ready.write.expect("the snapshot is stored by a write").write;
    assert_eq!(write.snapshot.as_ref(), Some(&meta));
    assert_eq!(write.compact_through, Some(meta.index - 2), "compaction keeps the configured tail");
    meta
}

/// Move messages between the leader (node 1) and the follower (node 2) until both are quiet,
/// serving the leader's chunk reads from `data` and staging the follower's chunk writes. Returns
/// the follower's installs and every message the follower sent.
fn exchange(
    leader: &mut PartitionStateMachine,
    follower: &mut PartitionStateMachine,
    data: &[u8],
    mut first: Vec<Envelope>,
) -> (Vec<SnapshotMeta>, Vec<RaftMessage>) {
    let (mut installs, mut sent) = (Vec::new(), Vec::new());
    for _ in 0..200 {
        let mut to_follower = std::mem::take(&mut first);
        let ready = drain(leader);
        for read in ready.snapshot_reads {
            let end = (read.offset + read.len).min(data.len() as u64) as usize;
            leader.on_snapshot_chunk_read(read.id, Ok(Bytes::copy_from_slice(&data[read.offset as usize..end])));
        }
        to_follower.extend(ready.messages);
        to_follower.extend(drain(leader).messages);
        let mut to_leader = Vec::new();
        for message in to_follower.into_iter().filter(|m| m.to == NodeId(2)) {
            follower.step(message).expect("valid message");
            let ready = drain(follower);
            installs.extend(ready.install);
            for chunk in &ready.snapshot_writes {
                follower.on_snapshot_chunk_written(chunk.meta.index, chunk.meta.term, chunk.offset, Ok(()));
            }
            to_leader.extend(ready.messages);
            let ready = drain(follower);
            installs.extend(ready.install);
            to_leader.extend(ready.messages);
            to_leader.extend(drain(follower).messages);
        }
        if to_leader.is_empty() {
            return (installs, sent);
        }
        for message in to_leader {
            sent.push(message.message.clone());
            leader.step(message).expect("valid answer");
        }
    }
    panic!("the exchange did not settle");
}

#[test]
fn a_follower_behind_the_floor_gets_the_snapshot_in_chunks_and_then_the_log() {
    let mut leader = leader(20);
    let data: Vec<u8> = (0..10u8).collect();
    let meta = take_snapshot(&mut leader, &data);
    assert_eq!((meta.index, meta.term, leader.compacted_through()), (20, 1, 18));
    let mut follower = PartitionStateMachine::new(config(2, &[1, 2])).unwrap();
    // The follower's log is empty: its answer to the leader's probe sends it below the floor.
    let conflict = AppendResult::Conflict { hint_index: 1, hint_term: None };
    let answer = envelope(2, 1, RaftMessage::AppendResponse { term: 2, prev_log_index: 20, result: conflict });
    follower
        .step(envelope(
            1,
            2,
            RaftMessage::AppendRequest {
                term: 2,
                prev_log_index: 0,
                prev_log_term: 0,
                entries: vec![],
                leader_commit: 0,
            },
        ))
        .unwrap();
    drain(&mut follower);
    leader.step(answer).unwrap();
    let (installs, sent) = exchange(&mut leader, &mut follower, &data, Vec::new());
    assert_eq!(installs, vec![meta.clone()], "installed once, with the leader's meta");
    let acks: Vec<u64> = sent
        .iter()
        .filter_map(|m| match m {
            RaftMessage::SnapshotResponse { next_offset, installed: false, .. } => Some(*next_offset),
            _ => None,
        })
        .collect();
    assert_eq!(acks, vec![4, 8], "chunks of 4 bytes acknowledged in order");
    assert!(sent.iter().any(|m| matches!(m, RaftMessage::SnapshotResponse { installed: true, index: 20, .. })));
    assert_eq!(follower.snapshot(), Some(&meta));
    assert_eq!((follower.applied_index(), follower.compacted_through()), (20, 20));
    // Replication goes on from the snapshot: the barrier and a new entry commit on both.
    let proposal = Proposal { log_type: "t".into(), payloads: vec![Bytes::from_static(b"after")], auto_commit: true };
    leader.propose(proposal, 5).unwrap();
    let (_, _) = exchange(&mut leader, &mut follower, &data, Vec::new());
    let (_, _) = exchange(&mut leader, &mut follower, &data, Vec::new());
    assert_eq!(leader.commit_index(), 22);
    assert!(follower.commit_index() >= 21 && follower.last_index() == 22, "follower at {}", follower.last_index());
}

#[test]
fn bad_chunks_are_refused_with_a_typed_error_and_change_nothing() {
    let hard_state = HardState { term: 5, voted_for: None, commit: 3 };
    let state = RestoreState { hard_state: Some(hard_state), entries: entries(1, 3, 1), ..Default::default() };
    let mut follower = restored(2, &[1, 2], state);
    drain(&mut follower);
    let meta = SnapshotMeta { partition: P, index: 10, term: 5, size: 8, checksum: 0, ..Default::default() };
    let chunk = |term: Term, meta: &SnapshotMeta, offset: u64, data: &'static [u8], checksum: u32| {
        envelope(
            1,
            2,
            RaftMessage::InstallSnapshot {
                term,
                meta: meta.clone(),
                offset,
                data: Bytes::from_static(data),
                done: offset + data.len() as u64 == meta.size,
                chunk_checksum: checksum,
            },
        )
    };
    let before = (follower.term(), follower.commit_index(), follower.leader());
    // A flipped checksum.
    let bad = follower.step(chunk(5, &meta, 0, b"abcd", crc32c(b"abcd") ^ 1));
    assert_eq!(bad, Err(StepError::SnapshotChunk(SnapshotChunkError::BadChecksum { offset: 0 })));
    // A chunk naming another partition.
    let other = SnapshotMeta { partition: PartitionId(9), ..meta.clone() };
    assert!(matches!(
        follower.step(chunk(5, &other, 0, b"abcd", crc32c(b"abcd"))),
        Err(StepError::WrongPartition { .. })
    ));
    // A chunk past the snapshot's size.
    assert!(matches!(
        follower.step(chunk(5, &meta, 6, b"abcd", crc32c(b"abcd"))),
        Err(StepError::SnapshotChunk(SnapshotChunkError::Malformed(_)))
    ));
    assert_eq!((follower.term(), follower.commit_index(), follower.leader()), before);
    assert!(drain(&mut follower).is_empty(), "refused chunks produce nothing");

    // A stale term: answered with the newer term, nothing staged.
    let old = SnapshotMeta { term: 3, ..meta.clone() };
    follower.step(chunk(4, &old, 0, b"abcd", crc32c(b"abcd"))).unwrap();
    let ready = drain(&mut follower);
    assert!(ready.snapshot_writes.is_empty());
    assert!(matches!(
        ready.messages[..],
        [Envelope { message: RaftMessage::SnapshotResponse { term: 5, installed: false, .. }, .. }]
    ));
    // Out of order (nothing received yet): the follower asks for offset 0 and stages nothing.
    follower.step(chunk(5, &meta, 4, b"efgh", crc32c(b"efgh"))).unwrap();
    let ready = drain(&mut follower);
    assert!(ready.snapshot_writes.is_empty());
    assert!(matches!(
        ready.messages[..],
        [Envelope { message: RaftMessage::SnapshotResponse { next_offset: 0, .. }, .. }]
    ));
    assert_eq!(follower.commit_index(), 3);
    // In order: the first chunk is staged, its duplicate while staging is ignored.
    follower.step(chunk(5, &meta, 0, b"abcd", crc32c(b"abcd"))).unwrap();
    assert_eq!(drain(&mut follower).snapshot_writes.len(), 1);
    follower.step(chunk(5, &meta, 0, b"abcd", crc32c(b"abcd"))).unwrap();
    assert!(drain(&mut follower).snapshot_writes.is_empty());
    // A failed staging drops the partial snapshot; the install never happened.
    follower.on_snapshot_chunk_written(10, 5, 0, Err("disk full".into()));
    assert!(drain(&mut follower).install.is_none());
    assert_eq!((follower.commit_index(), follower.snapshot()), (3, None));
}

#[test]
fn a_restore_starts_from_the_snapshot_and_replays_only_the_suffix() {
    let meta = SnapshotMeta { partition: P, index: 10, term: 1, ..Default::default() };
    let hard_state = HardState { term: 2, voted_for: None, commit: 13 };
    let state = RestoreState {
        hard_state: Some(hard_state),
        snapshot: Some(meta.clone()),
        compacted_through: 8,
        entries: entries(11, 15, 2),
        snapshot_missing: false,
    };
    let mut sm = restored(1, &[1, 2], state);
    assert_eq!(sm.term_at(10), Some(1), "the snapshot's boundary term is known");
    let ready = sm.ready();
    let delivered: Vec<LogIndex> = ready.deliveries.iter().map(|d| d.entry.index).collect();
    assert_eq!(delivered, vec![11, 12, 13], "only committed entries after the snapshot are replayed");
    assert!(ready.deliveries.iter().all(|d| d.restored));
    assert_eq!((sm.applied_index(), sm.last_index(), sm.snapshot()), (13, 15, Some(&meta)));

    let corrupt = |snapshot: Option<SnapshotMeta>, compacted_through: LogIndex, entries: Vec<LogEntry>| {
        let state = RestoreState {
            hard_state: Some(hard_state),
            snapshot,
            compacted_through,
            entries,
            snapshot_missing: false,
        };
        PartitionStateMachine::restore(config(1, &[1, 2]), state).map(|_| ())
    };
    assert!(
        matches!(corrupt(Some(meta.clone()), 11, entries(11, 12, 2)), Err(RestoreError::Fatal(_))),
        "floor past the snapshot"
    );
    assert!(
        matches!(corrupt(Some(meta.clone()), 8, entries(12, 13, 2)), Err(RestoreError::Fatal(_))),
        "a gap after the snapshot"
    );
    assert!(matches!(corrupt(None, 5, entries(6, 7, 1)), Err(RestoreError::Fatal(_))), "compacted without a snapshot");
    let newer = SnapshotMeta { term: 3, ..meta };
    assert!(
        matches!(corrupt(Some(newer), 8, vec![]), Err(RestoreError::Fatal(_))),
        "snapshot term above the hard state"
    );
}

#[test]
fn resolved_tickets_are_forgotten_once_a_snapshot_covers_them() {
    let mut sm = lone_leader(|c| c.snapshot_tail_entries = 0);
    let proposal = Proposal { log_type: "t".into(), payloads: vec![Bytes::from_static(b"x")], auto_commit: false };
    let ticket = sm.propose(proposal, 10).unwrap().ticket;
    drain(&mut sm);
    sm.commit(ticket).unwrap();
    let replies: Vec<_> = (0..3).flat_map(|_| drain(&mut sm).replies).collect();
    assert!(replies.iter().any(|r| matches!(r, ClientReply::Resolution { result: Ok(_), .. })), "{replies:?}");
    assert_eq!(sm.remembered_resolutions(), 1);
    sm.request_snapshot();
    let mut meta = drain(&mut sm).snapshot_request.expect("requested").meta;
    assert!(meta.held.is_empty());
    meta.size = 0;
    meta.checksum = crc32c(b"");
    sm.on_snapshot_taken(meta.clone());
    let write = drain(&mut sm).write.expect("write").write;
    assert_eq!(write.compact_through, Some(meta.index));
    assert_eq!(sm.remembered_resolutions(), 0, "bounded: the resolution went with the compacted log");
    // Asking again is answered from the log: the ticket is older than the snapshot.
    sm.commit(ticket).unwrap();
    let replies: Vec<_> = (0..3).flat_map(|_| drain(&mut sm).replies).collect();
    assert!(
        replies.iter().any(|r| matches!(r, ClientReply::Resolution { result: Err(ProposeError::TicketCompacted(t)), .. } if *t == ticket)),
        "{replies:?}"
    );
}

#[test]
fn the_byte_trigger_asks_for_a_snapshot_once_enough_payload_bytes_were_applied() {
    let mut sm = lone_leader(|c| c.snapshot_interval_bytes = 100);
    let mut requests = Vec::new();
    for _ in 0..10 {
        let proposal = Proposal { log_type: "t".into(), payloads: vec![Bytes::from(vec![7u8; 30])], auto_commit: true };
        sm.propose(proposal, 10).unwrap();
        for _ in 0..3 {
            if let Some(request) = drain(&mut sm).snapshot_request {
                requests.push(request.meta.index);
                let mut meta = request.meta;
                meta.checksum = crc32c(b"");
                sm.on_snapshot_taken(meta);
            }
        }
    }
    // 30 payload bytes an entry: the 4th entry crosses 100 bytes, the counter restarts, and the
    // 8th crosses again (the entry-count trigger is off).
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert!(requests[0] < requests[1], "{requests:?}");
}
