//! The checksummed binary record format shared by the durable WAL adapters (SQLite, RocksDB).
//!
//! Every record carries a CRC32C over its content **and its position** (partition and index), so a
//! torn, flipped or misplaced record is detected on read and reported as [`WalError::Corrupt`] —
//! never silently dropped or turned into a different entry.
//!
//! Entry record: `version u8 | crc32c u32 | term u64 | kind u8 | ticket (u64, u32, u64) |
//! log_type (u32 len + bytes) | payload (u32 len + bytes)`, little endian (kinds 6 `Fence` and 7
//! `Guarded` carry their generation as a u64 right after the kind byte); the CRC covers
//! `partition u32 | index u64 | everything after the crc`.
//! Hard-state record: `version u8 | crc32c u32 | term u64 | has_vote u8 | vote u64 | commit u64`;
//! the CRC covers `partition u32 | everything after the crc`.

use crate::entry::{EntryKind, LogEntry};
use crate::hlc::HlcTimestamp;
use crate::ids::{LogIndex, NodeId, PartitionId};
use crate::wal::{HardState, WalError};

const VERSION: u8 = 1;
const HEADER: usize = 5;

/// CRC32C (Castagnoli), from the `crc32c` crate: the SSE 4.2 instruction where the CPU has it
/// (detected at run time), a software fallback elsewhere. `examples/bench_checksum.rs` compares it
/// with the table-driven loop this replaced.
pub fn crc32c(data: &[u8]) -> u32 {
    ::crc32c::crc32c(data)
}

/// Continue a CRC32C over more data: `crc32c_extend(crc32c(a), b) == crc32c(a ++ b)`.
pub fn crc32c_extend(crc: u32, data: &[u8]) -> u32 {
    ::crc32c::crc32c_append(crc, data)
}

fn kind_code(kind: EntryKind) -> u8 {
    match kind {
        EntryKind::Application { auto_commit: true } => 1,
        EntryKind::Application { auto_commit: false } => 2,
        EntryKind::Barrier => 3,
        EntryKind::CommitMarker => 4,
        EntryKind::RollbackMarker => 5,
        EntryKind::Fence { .. } => 6,
        EntryKind::Guarded { .. } => 7,
        EntryKind::Config => 8,
    }
}

fn kind_generation(kind: EntryKind) -> Option<u64> {
    match kind {
        EntryKind::Fence { generation } | EntryKind::Guarded { generation } => Some(generation),
        _ => None,
    }
}

fn kind_of(code: u8, r: &mut Reader<'_>) -> Option<EntryKind> {
    Some(match code {
        1 => EntryKind::Application { auto_commit: true },
        2 => EntryKind::Application { auto_commit: false },
        3 => EntryKind::Barrier,
        4 => EntryKind::CommitMarker,
        5 => EntryKind::RollbackMarker,
        6 => EntryKind::Fence { generation: r.u64()? },
        7 => EntryKind::Guarded { generation: r.u64()? },
        8 => EntryKind::Config,
        _ => return None,
    })
}

fn seal(mut out: Vec<u8>, position: &[u8]) -> Vec<u8> {
    let crc = crc32c_extend(crc32c(position), &out[HEADER..]);
    out[1..HEADER].copy_from_slice(&crc.to_le_bytes());
    out
}

fn entry_position(partition: PartitionId, index: LogIndex) -> [u8; 12] {
    let mut p = [0u8; 12];
    p[..4].copy_from_slice(&partition.0.to_le_bytes());
    p[4..].copy_from_slice(&index.to_le_bytes());
    p
}

/// Encode `entry` of `partition` as a checksummed record.
pub fn encode_entry(partition: PartitionId, entry: &LogEntry) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + 38 + entry.log_type.len() + entry.payload.len());
    out.push(VERSION);
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&entry.term.to_le_bytes());
    out.push(kind_code(entry.kind));
    if let Some(generation) = kind_generation(entry.kind) {
        out.extend_from_slice(&generation.to_le_bytes());
    }
    out.extend_from_slice(&entry.ticket.physical_ms.to_le_bytes());
    out.extend_from_slice(&entry.ticket.logical.to_le_bytes());
    out.extend_from_slice(&entry.ticket.node.to_le_bytes());
    out.extend_from_slice(&(entry.log_type.len() as u32).to_le_bytes());
    out.extend_from_slice(entry.log_type.as_bytes());
    out.extend_from_slice(&(entry.payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&entry.payload);
    seal(out, &entry_position(partition, entry.index))
}

struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let slice = self.data.get(self.at..end)?;
        self.at = end;
        Some(slice)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }
}

fn check_header(record: &[u8], position: &[u8]) -> Result<(), String> {
    if record.len() < HEADER {
        return Err(format!("record of {} bytes is shorter than its header", record.len()));
    }
    if record[0] != VERSION {
        return Err(format!("unknown record version {}", record[0]));
    }
    let stored = u32::from_le_bytes(record[1..HEADER].try_into().expect("4 bytes"));
    let actual = crc32c_extend(crc32c(position), &record[HEADER..]);
    if stored != actual {
        return Err(format!("checksum mismatch (stored {stored:08x}, computed {actual:08x})"));
    }
    Ok(())
}

/// Decode the record stored for `partition` at `index`, verifying its checksum and position.
pub fn decode_entry(partition: PartitionId, index: LogIndex, record: &[u8]) -> Result<LogEntry, WalError> {
    let corrupt = |reason: String| WalError::Corrupt { partition, index, reason };
    check_header(record, &entry_position(partition, index)).map_err(corrupt)?;
    let mut r = Reader { data: record, at: HEADER };
    let parsed = (|| {
        let term = r.u64()?;
        let code = r.u8()?;
        let kind = kind_of(code, &mut r)?;
        let ticket = HlcTimestamp { physical_ms: r.u64()?, logical: r.u32()?, node: r.u64()? };
        let type_len = r.u32()? as usize;
        let log_type = crate::LogType::from(std::str::from_utf8(r.take(type_len)?).ok()?);
        let payload_len = r.u32()? as usize;
        let payload = bytes::Bytes::copy_from_slice(r.take(payload_len)?);
        (r.at == record.len()).then_some(LogEntry { index, term, kind, log_type, payload, ticket })
    })();
    parsed.ok_or_else(|| corrupt("malformed record body".into()))
}

/// What a WAL stores about a partition's compaction: its floor and its latest snapshot meta.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotRecord {
    /// Entries at or below this are compacted.
    pub compacted_through: LogIndex,
    /// The latest snapshot's meta, if any.
    pub meta: Option<crate::snapshot::SnapshotMeta>,
}

/// Where a snapshot record sits: its partition and a tag no entry or hard-state position has.
fn snapshot_position(partition: PartitionId) -> [u8; 5] {
    let mut p = [0u8; 5];
    p[..4].copy_from_slice(&partition.0.to_le_bytes());
    p[4] = b's';
    p
}

/// Encode the compaction record of `partition` as a checksummed record.
pub fn encode_snapshot_record(partition: PartitionId, record: &SnapshotRecord) -> Vec<u8> {
    let meta = record.meta.as_ref().map(crate::snapshot::SnapshotMeta::encode).unwrap_or_default();
    let mut out = Vec::with_capacity(HEADER + 9 + meta.len());
    out.push(VERSION);
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&record.compacted_through.to_le_bytes());
    out.push(u8::from(record.meta.is_some()));
    out.extend_from_slice(&meta);
    seal(out, &snapshot_position(partition))
}

/// Decode the compaction record of `partition`, verifying its checksum.
pub fn decode_snapshot_record(partition: PartitionId, record: &[u8]) -> Result<SnapshotRecord, WalError> {
    let corrupt = |reason: String| WalError::Corrupt { partition, index: 0, reason };
    check_header(record, &snapshot_position(partition)).map_err(corrupt)?;
    let mut r = Reader { data: record, at: HEADER };
    let (compacted_through, has_meta) =
        (|| Some((r.u64()?, r.u8()?)))().ok_or_else(|| corrupt("malformed snapshot record".into()))?;
    let meta = match has_meta {
        0 if r.at == record.len() => None,
        1 => Some(
            crate::snapshot::SnapshotMeta::decode(&record[r.at..])
                .map_err(|e| corrupt(format!("snapshot meta: {e}")))?,
        ),
        _ => return Err(corrupt("malformed snapshot record".into())),
    };
    if meta.as_ref().is_some_and(|m| m.partition != partition || m.index < compacted_through) {
        return Err(corrupt("snapshot meta does not fit its record".into()));
    }
    Ok(SnapshotRecord { compacted_through, meta })
}

/// Encode the hard state of `partition` as a checksummed record.
pub fn encode_hard_state(partition: PartitionId, state: &HardState) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + 25);
    out.push(VERSION);
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&state.term.to_le_bytes());
    out.push(u8::from(state.voted_for.is_some()));
    out.extend_from_slice(&state.voted_for.map_or(0, |n| n.0).to_le_bytes());
    out.extend_from_slice(&state.commit.to_le_bytes());
    seal(out, &partition.0.to_le_bytes())
}

/// Decode the hard-state record of `partition`, verifying its checksum.
pub fn decode_hard_state(partition: PartitionId, record: &[u8]) -> Result<HardState, WalError> {
    let corrupt = |reason: String| WalError::Corrupt { partition, index: 0, reason };
    check_header(record, &partition.0.to_le_bytes()).map_err(corrupt)?;
    let mut r = Reader { data: record, at: HEADER };
    let parsed = (|| {
        let term = r.u64()?;
        let has_vote = r.u8()?;
        let vote = r.u64()?;
        let commit = r.u64()?;
        let voted_for = match has_vote {
            0 => None,
            1 => Some(NodeId(vote)),
            _ => return None,
        };
        (r.at == record.len()).then_some(HardState { term, voted_for, commit })
    })();
    parsed.ok_or_else(|| corrupt("malformed hard state".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::wal::entry;

    #[test]
    fn snapshot_records_round_trip_and_reject_damage_and_misplacement() {
        let p = PartitionId(3);
        let meta = crate::snapshot::SnapshotMeta {
            partition: p,
            index: 9,
            term: 2,
            size: 5,
            checksum: 7,
            ..Default::default()
        };
        for record in [SnapshotRecord { compacted_through: 4, meta: Some(meta) }, SnapshotRecord::default()] {
            let bytes = encode_snapshot_record(p, &record);
            assert_eq!(decode_snapshot_record(p, &bytes), Ok(record.clone()));
            assert!(decode_snapshot_record(PartitionId(4), &bytes).is_err(), "another partition's record");
            assert!(decode_hard_state(p, &bytes).is_err(), "not a hard state");
            for at in 0..bytes.len() {
                let mut flipped = bytes.clone();
                flipped[at] ^= 0x40;
                assert!(decode_snapshot_record(p, &flipped).is_err(), "flip at {at}");
            }
        }
    }

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(crc32c(b""), 0);
        // Extending continues the checksum: records checksum their position, then their bytes.
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 31 + 7) as u8).collect();
        for split in [0, 1, 7, 64, 4_096, 9_999, 10_000] {
            assert_eq!(crc32c_extend(crc32c(&data[..split]), &data[split..]), crc32c(&data));
        }
    }

    #[test]
    fn entries_and_hard_states_round_trip() {
        let p = PartitionId(7);
        let mut e = entry(42, 3);
        e.kind = EntryKind::Application { auto_commit: false };
        e.ticket = HlcTimestamp { physical_ms: u64::MAX, logical: u32::MAX, node: u64::MAX };
        assert_eq!(decode_entry(p, 42, &encode_entry(p, &e)), Ok(e));
        let hs = HardState { term: 9, voted_for: Some(NodeId(2)), commit: 40 };
        assert_eq!(decode_hard_state(p, &encode_hard_state(p, &hs)), Ok(hs));
        let hs = HardState { term: 1, voted_for: None, commit: 0 };
        assert_eq!(decode_hard_state(p, &encode_hard_state(p, &hs)), Ok(hs));
    }

    #[test]
    fn fence_and_guarded_kinds_keep_their_generation() {
        let p = PartitionId(2);
        for kind in [EntryKind::Fence { generation: u64::MAX }, EntryKind::Guarded { generation: 7 }] {
            let mut e = entry(9, 2);
            e.kind = kind;
            let record = encode_entry(p, &e);
            assert_eq!(decode_entry(p, 9, &record), Ok(e));
            assert!(decode_entry(p, 9, &record[..record.len() - 1]).is_err());
        }
    }

    #[test]
    fn every_flipped_bit_and_truncation_is_detected() {
        let p = PartitionId(1);
        let record = encode_entry(p, &entry(5, 2));
        for byte in 0..record.len() {
            for bit in 0..8 {
                let mut bad = record.clone();
                bad[byte] ^= 1 << bit;
                assert!(matches!(decode_entry(p, 5, &bad), Err(WalError::Corrupt { .. })), "byte {byte} bit {bit}");
            }
        }
        for len in 0..record.len() {
            assert!(decode_entry(p, 5, &record[..len]).is_err(), "torn at {len}");
        }
    }

    #[test]
    fn a_record_read_at_the_wrong_position_is_rejected() {
        let record = encode_entry(PartitionId(1), &entry(5, 2));
        assert!(decode_entry(PartitionId(1), 6, &record).is_err(), "wrong index");
        assert!(decode_entry(PartitionId(2), 5, &record).is_err(), "wrong partition");
    }
}
