//! Partition generations: `Fence` entries raise a partition's generation and `Guarded` writes that
//! expect an older generation are rejected **at apply time**, as a function of the log alone, so
//! every replica decides the same way (the guard a split or merge relies on).

use kommander_core::raft::{ClientReply, Proposal, RestoreState};
use kommander_core::{
    EntryKind, HardState, HlcTimestamp, LogEntry, NodeId, PartitionConfig, PartitionId, PartitionStateMachine,
    ProposeError,
};

const P: PartitionId = PartitionId(1);

fn config() -> PartitionConfig {
    PartitionConfig::new(NodeId(1), P, vec![NodeId(1)])
}

fn entry(index: u64, kind: EntryKind) -> LogEntry {
    LogEntry {
        index,
        term: 1,
        kind,
        log_type: "t".into(),
        payload: vec![index as u8].into(),
        ticket: HlcTimestamp { physical_ms: 100 + index, logical: 0, node: 1 },
    }
}

#[test]
fn replay_delivers_only_guarded_writes_at_or_above_the_fenced_generation() {
    let log = vec![
        entry(1, EntryKind::Application { auto_commit: true }),
        entry(2, EntryKind::Guarded { generation: 0 }),
        entry(3, EntryKind::Fence { generation: 5 }),
        entry(4, EntryKind::Guarded { generation: 4 }),
        entry(5, EntryKind::Guarded { generation: 5 }),
        entry(6, EntryKind::Guarded { generation: 6 }),
        entry(7, EntryKind::Fence { generation: 2 }),
        entry(8, EntryKind::Guarded { generation: 4 }),
    ];
    let state = RestoreState {
        hard_state: Some(HardState { term: 1, voted_for: Some(NodeId(1)), commit: 8 }),
        entries: log,
        ..Default::default()
    };
    let mut sm = PartitionStateMachine::restore(config(), state).expect("restore");
    let delivered: Vec<u64> = sm.ready().deliveries.iter().map(|d| d.entry.index).collect();
    assert_eq!(delivered, vec![1, 2, 5, 6], "fences never lower the generation; stale guards are dropped");
    assert_eq!(sm.generation(), 5);
}

/// Run the machine until it has nothing left to do, completing every write at once.
fn settle(sm: &mut PartitionStateMachine) -> Vec<ClientReply> {
    let mut replies = Vec::new();
    for _ in 0..100 {
        let ready = sm.ready();
        replies.extend(ready.replies);
        match ready.write {
            Some(write) => sm.on_write_complete(write.id),
            None => return replies,
        }
    }
    replies
}

fn proposal(payload: &[u8]) -> Proposal {
    Proposal { log_type: "t".into(), payloads: vec![payload.to_vec().into()], auto_commit: true }
}

#[test]
fn a_live_leader_answers_stale_guarded_writes_with_partition_moved() {
    let mut sm = PartitionStateMachine::new(config()).expect("config");
    for _ in 0..100 {
        sm.tick();
        settle(&mut sm);
        if sm.is_leader() {
            break;
        }
    }
    assert!(sm.is_leader(), "a single voter elects itself");
    sm.propose_fence(3, 1_000).expect("fence");
    settle(&mut sm);
    assert_eq!(sm.generation(), 3);
    let stale = sm.propose_guarded(proposal(b"stale"), 2, 1_001).expect("accepted into the log");
    let current = sm.propose_guarded(proposal(b"current"), 3, 1_002).expect("accepted into the log");
    let replies = settle(&mut sm);
    let result_of = |ticket| {
        replies.iter().find_map(|r| match r {
            ClientReply::Proposal { ticket: t, result } if *t == ticket => Some(result.clone()),
            _ => None,
        })
    };
    assert_eq!(result_of(stale.ticket), Some(Err(ProposeError::PartitionMoved { expected: 2, current: 3 })));
    assert!(matches!(result_of(current.ticket), Some(Ok(_))));
    // The ticket was an applied guarded write: no two-phase proposal holds it. The answer is
    // backed by the log (a marker that applies and resolves nothing), not by this leader's view.
    sm.commit(stale.ticket).expect("the request is confirmed through the log");
    let replies = settle(&mut sm);
    let unknown = replies.iter().any(|r| {
        matches!(r, ClientReply::Resolution { ticket, result: Err(ProposeError::UnknownTicket(_)), .. }
            if *ticket == stale.ticket)
    });
    assert!(unknown, "{replies:?}");
}
