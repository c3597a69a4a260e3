//! Stable replay of the `decode_batch` fuzz target: valid encodings of every message kind in both
//! wire formats as seeds, then deterministic mutations of them — bit flips, byte overwrites with
//! boundary values, truncations, duplications, splices between seeds — and pure noise. Every input
//! goes through `kommander::fuzzing::decode_untrusted`, which must never panic (and must round-trip
//! whatever it decodes). `FUZZ_ITERATIONS` raises the count.

use kommander::core::rng::SplitMix64;
use kommander::core::{
    AppendResult, EntryKind, Envelope, LogEntry, MessageBatch, NodeId, PartitionId, RaftMessage, Ticket,
};
use kommander::fuzzing::decode_untrusted;

fn seeds() -> Vec<Vec<u8>> {
    let entry = |index, kind| LogEntry {
        index,
        term: 3,
        kind,
        log_type: "kv.put".into(),
        payload: vec![0, 1, 2, 255].into(),
        ticket: Ticket { physical_ms: 1_700_000_000_000, logical: 7, node: 2 },
    };
    let messages = vec![
        RaftMessage::VoteRequest { term: 4, last_log_index: 9, last_log_term: 3, pre_vote: true, transfer: false },
        RaftMessage::VoteResponse { term: 4, granted: true, pre_vote: false },
        RaftMessage::AppendRequest {
            term: 3,
            prev_log_index: 4,
            prev_log_term: 2,
            entries: vec![
                entry(5, EntryKind::Application { auto_commit: true }),
                entry(6, EntryKind::Application { auto_commit: false }),
                entry(7, EntryKind::Barrier),
                entry(8, EntryKind::CommitMarker),
                entry(9, EntryKind::RollbackMarker),
            ],
            leader_commit: 4,
        },
        RaftMessage::AppendResponse { term: 3, prev_log_index: 4, result: AppendResult::Success { match_index: 9 } },
        RaftMessage::AppendResponse {
            term: 3,
            prev_log_index: 4,
            result: AppendResult::Conflict { hint_index: 2, hint_term: Some(1) },
        },
        RaftMessage::AppendResponse { term: 3, prev_log_index: 4, result: AppendResult::StaleTerm },
    ];
    let batch = MessageBatch {
        cluster_id: "fuzz".into(),
        from: NodeId(2),
        to: NodeId(1),
        messages: messages
            .into_iter()
            .enumerate()
            .map(|(i, message)| Envelope { partition: PartitionId(i as u32), from: NodeId(2), to: NodeId(1), message })
            .collect(),
    };
    let mut seeds = Vec::new();
    for batch in [batch.clone(), MessageBatch { messages: vec![], ..batch }] {
        seeds.push(kommander::transport::rest::wire::encode_batch(&batch));
        seeds.push(kommander::transport::grpc::encode_batch(&batch));
    }
    seeds
}

fn mutate(rng: &mut SplitMix64, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut data = seeds[rng.below(seeds.len() as u64) as usize].clone();
    for _ in 0..=rng.below(4) {
        if data.is_empty() {
            data.push(rng.next_u64() as u8);
        }
        let at = rng.below(data.len() as u64) as usize;
        match rng.below(6) {
            0 => data[at] ^= 1 << rng.below(8),
            1 => data[at] = [0x00, 0x7f, 0x80, 0xff, 0xc1, 0xdd, 0xdf][rng.below(7) as usize],
            2 => data.truncate(at),
            3 => {
                let end = (at + 1 + rng.below(16) as usize).min(data.len());
                let chunk = data[at..end].to_vec();
                data.splice(at..at, chunk);
            }
            4 => {
                let other = &seeds[rng.below(seeds.len() as u64) as usize];
                let from = rng.below(other.len() as u64) as usize;
                data.splice(at.., other[from..].iter().copied());
            }
            _ => data.insert(at, rng.next_u64() as u8),
        }
    }
    data
}

#[test]
fn decoders_survive_seeds_mutations_and_noise() {
    let iterations: u64 = std::env::var("FUZZ_ITERATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let seeds = seeds();
    for seed in &seeds {
        decode_untrusted(seed);
    }
    let mut rng = SplitMix64::new(0x00f0_22ed);
    for _ in 0..iterations {
        let input = if rng.below(10) == 0 {
            (0..rng.below(64)).map(|_| rng.next_u64() as u8).collect()
        } else {
            mutate(&mut rng, &seeds)
        };
        decode_untrusted(&input);
    }
    println!("{} inputs decoded without a panic", iterations + seeds.len() as u64);
}

#[test]
fn seeds_decode_to_the_batch_they_encode() {
    let seeds = seeds();
    let rest = kommander::transport::rest::wire::decode_batch(&seeds[0]).expect("MessagePack seed decodes");
    let grpc = kommander::transport::grpc::decode_batch(&seeds[1]).expect("protobuf seed decodes");
    assert_eq!(rest, grpc);
    assert_eq!(rest.messages.len(), 6);
}
