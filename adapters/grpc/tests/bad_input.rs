//! Hostile and malformed frames sent with the raw generated client to a running transport. Every
//! row must get its exact gRPC status code and leave the node untouched (nothing delivered); a
//! final valid frame proves the harness can succeed.

mod common;

use common::{RecordingSink, CLUSTER, SECRET};
use kommander_core::hlc::MAX_PHYSICAL_MS;
use kommander_core::transport::Transport;
use kommander_core::{
    AppendResult, EntryKind, Envelope, LogEntry, MessageBatch, MessageLimits, NodeId, PartitionId, RaftMessage, Ticket,
};
use kommander_net::{ClusterAuth, FrameHeader, NetStats, NonceSource};
use kommander_transport_grpc::proto::raft_transport_client::RaftTransportClient;
use kommander_transport_grpc::proto::{self, Frame};
use kommander_transport_grpc::{encode_batch, GrpcConfig, GrpcTransport};
use prost::Message;
use std::time::Duration;
use tonic::Code;

const LOCAL: NodeId = NodeId(2);
const PEER: NodeId = NodeId(1);
const MAX_BODY: usize = 64 * 1024;
const WINDOW: Duration = Duration::from_secs(5);

/// What the rows build frames with.
struct Harness {
    auth: ClusterAuth,
    nonces: NonceSource,
    previous: Option<Frame>,
}

impl Harness {
    fn header(&self, from: NodeId, to: NodeId) -> FrameHeader {
        FrameHeader {
            cluster_id: CLUSTER.into(),
            from,
            to,
            timestamp_ms: kommander_net::unix_millis(),
            nonce: self.nonces.next(),
        }
    }

    /// `body` under `header`, signed with the cluster secret.
    fn signed(&self, header: FrameHeader, body: Vec<u8>) -> Frame {
        let signature = self.auth.sign(&header, &body).to_vec();
        frame(header, signature, body)
    }

    /// `body` from the peer to this node, correctly signed.
    fn body(&self, body: Vec<u8>) -> Frame {
        self.signed(self.header(PEER, LOCAL), body)
    }

    /// `batch` encoded, under a header from the peer to this node.
    fn batch(&self, batch: &MessageBatch) -> Frame {
        self.body(encode_batch(batch))
    }

    /// A valid batch edited at the protobuf level.
    fn edited(&self, edit: impl FnOnce(&mut proto::Batch)) -> Frame {
        let mut batch = proto::Batch::from(&valid_batch());
        edit(&mut batch);
        self.body(batch.encode_to_vec())
    }

    /// A valid batch edited at the core level.
    fn mutated(&self, edit: impl FnOnce(&mut MessageBatch)) -> Frame {
        let mut batch = valid_batch();
        edit(&mut batch);
        self.batch(&batch)
    }
}

fn frame(header: FrameHeader, signature: Vec<u8>, batch: Vec<u8>) -> Frame {
    Frame {
        cluster_id: header.cluster_id,
        from: header.from.0,
        to: header.to.0,
        timestamp_ms: header.timestamp_ms,
        nonce: header.nonce,
        signature,
        batch,
    }
}

fn entry(index: u64, term: u64) -> LogEntry {
    LogEntry {
        index,
        term,
        kind: EntryKind::Application { auto_commit: true },
        log_type: "t".into(),
        payload: vec![7; 8].into(),
        ticket: Ticket { physical_ms: 1, logical: 2, node: 1 },
    }
}

fn append(prev_log_index: u64, prev_log_term: u64, entries: Vec<LogEntry>) -> RaftMessage {
    RaftMessage::AppendRequest { term: 3, prev_log_index, prev_log_term, entries, leader_commit: 4 }
}

/// An append on partition 1 and a vote request on partition 2, both valid.
fn valid_batch() -> MessageBatch {
    let envelope = |partition, message| Envelope { partition: PartitionId(partition), from: PEER, to: LOCAL, message };
    MessageBatch {
        cluster_id: CLUSTER.into(),
        from: PEER,
        to: LOCAL,
        messages: vec![
            envelope(1, append(4, 2, vec![entry(5, 2), entry(6, 3)])),
            envelope(
                2,
                RaftMessage::VoteRequest {
                    term: 3,
                    last_log_index: 6,
                    last_log_term: 3,
                    pre_vote: false,
                    transfer: false,
                },
            ),
        ],
    }
}

/// Replace the first envelope's message.
fn with_message(batch: &mut MessageBatch, message: RaftMessage) {
    batch.messages[0].message = message;
}

/// The entries of the first envelope's append request at the protobuf level.
fn proto_entries(batch: &mut proto::Batch) -> &mut Vec<proto::LogEntry> {
    match &mut batch.messages[0].message {
        Some(proto::envelope::Message::AppendRequest(append)) => &mut append.entries,
        other => panic!("the first envelope is an append request, not {other:?}"),
    }
}

type Row = (&'static str, Code, fn(&Harness) -> Frame);

fn rows() -> Vec<Row> {
    vec![
        ("missing signature", Code::Unauthenticated, |h| {
            let mut f = h.batch(&valid_batch());
            f.signature.clear();
            f
        }),
        ("signature of the wrong length", Code::Unauthenticated, |h| {
            let mut f = h.batch(&valid_batch());
            f.signature.truncate(16);
            f
        }),
        ("signature with a trailing byte", Code::Unauthenticated, |h| {
            let mut f = h.batch(&valid_batch());
            f.signature.push(0);
            f
        }),
        ("signature with one bit flipped", Code::Unauthenticated, |h| {
            let mut f = h.batch(&valid_batch());
            f.signature[5] ^= 0x01;
            f
        }),
        ("signed with another secret", Code::Unauthenticated, |h| {
            let header = h.header(PEER, LOCAL);
            let body = encode_batch(&valid_batch());
            let signature = ClusterAuth::new(CLUSTER, b"guessed", WINDOW).sign(&header, &body).to_vec();
            frame(header, signature, body)
        }),
        ("body changed after signing", Code::Unauthenticated, |h| {
            let mut f = h.batch(&valid_batch());
            let last = f.batch.len() - 1;
            f.batch[last] ^= 0x01;
            f
        }),
        ("header changed after signing (from)", Code::Unauthenticated, |h| {
            let mut f = h.batch(&valid_batch());
            f.from = 3;
            f
        }),
        ("wrong cluster id", Code::Unauthenticated, |h| {
            let mut header = h.header(PEER, LOCAL);
            header.cluster_id = "other-cluster".into();
            let mut batch = valid_batch();
            batch.cluster_id = "other-cluster".into();
            h.signed(header, encode_batch(&batch))
        }),
        ("empty cluster id", Code::Unauthenticated, |h| {
            let mut header = h.header(PEER, LOCAL);
            header.cluster_id.clear();
            let mut batch = valid_batch();
            batch.cluster_id.clear();
            h.signed(header, encode_batch(&batch))
        }),
        ("timestamp older than the window", Code::Unauthenticated, |h| {
            let mut header = h.header(PEER, LOCAL);
            header.timestamp_ms -= WINDOW.as_millis() as u64 + 10_000;
            h.signed(header, encode_batch(&valid_batch()))
        }),
        ("timestamp beyond the window in the future", Code::Unauthenticated, |h| {
            let mut header = h.header(PEER, LOCAL);
            header.timestamp_ms += WINDOW.as_millis() as u64 + 10_000;
            h.signed(header, encode_batch(&valid_batch()))
        }),
        ("nonce zero", Code::Unauthenticated, |h| {
            let mut header = h.header(PEER, LOCAL);
            header.nonce = 0;
            h.signed(header, encode_batch(&valid_batch()))
        }),
        ("addressed to another node", Code::FailedPrecondition, |h| {
            let mut batch = valid_batch();
            batch.to = NodeId(9);
            batch.messages.iter_mut().for_each(|e| e.to = NodeId(9));
            h.signed(h.header(PEER, NodeId(9)), encode_batch(&batch))
        }),
        ("batch bytes that are not protobuf", Code::InvalidArgument, |h| h.body(vec![0xff; 64])),
        ("replay of the previous frame", Code::Unauthenticated, |h| h.previous.clone().expect("a previous row")),
        ("truncated batch", Code::InvalidArgument, |h| {
            let mut body = encode_batch(&valid_batch());
            body.truncate(body.len() / 2);
            h.body(body)
        }),
        ("empty batch bytes (cluster id missing)", Code::InvalidArgument, |h| h.body(Vec::new())),
        ("envelope without its message", Code::InvalidArgument, |h| h.edited(|b| b.messages[1].message = None)),
        ("append response without its result", Code::InvalidArgument, |h| {
            h.edited(|b| {
                let response = proto::AppendResponse { term: 3, prev_log_index: 1, result: None };
                b.messages[1].message = Some(proto::envelope::Message::AppendResponse(response));
            })
        }),
        ("unspecified entry kind", Code::InvalidArgument, |h| h.edited(|b| proto_entries(b)[0].kind = 0)),
        ("unknown entry kind", Code::InvalidArgument, |h| h.edited(|b| proto_entries(b)[1].kind = 42)),
        ("entry without ticket", Code::InvalidArgument, |h| h.edited(|b| proto_entries(b)[0].ticket = None)),
        ("ticket logical counter above u32", Code::InvalidArgument, |h| {
            h.edited(|b| proto_entries(b)[0].ticket = Some(proto::Ticket { physical_ms: 1, logical: 1 << 32, node: 1 }))
        }),
        ("partition id above u32", Code::InvalidArgument, |h| {
            h.edited(|b| b.messages[1].partition = u64::from(u32::MAX) + 2)
        }),
        ("partition id above max_partition_id", Code::InvalidArgument, |h| {
            h.mutated(|b| b.messages[1].partition = PartitionId(1_001))
        }),
        ("batch.from differs from frame.from", Code::InvalidArgument, |h| {
            h.mutated(|b| {
                b.from = NodeId(3);
                b.messages.iter_mut().for_each(|e| e.from = NodeId(3));
            })
        }),
        ("batch.cluster_id differs from frame.cluster_id", Code::InvalidArgument, |h| {
            h.mutated(|b| b.cluster_id = "other-cluster".into())
        }),
        ("batch.to differs from frame.to", Code::InvalidArgument, |h| {
            h.mutated(|b| {
                b.to = NodeId(5);
                b.messages.iter_mut().for_each(|e| e.to = NodeId(5));
            })
        }),
        ("envelope from differs from batch from", Code::InvalidArgument, |h| {
            h.mutated(|b| b.messages[1].from = NodeId(3))
        }),
        ("envelope to differs from batch to", Code::InvalidArgument, |h| h.mutated(|b| b.messages[1].to = NodeId(3))),
        ("batch addressed to its own sender", Code::InvalidArgument, |h| {
            let mut batch = valid_batch();
            batch.from = LOCAL;
            batch.messages.iter_mut().for_each(|e| e.from = LOCAL);
            h.signed(h.header(LOCAL, LOCAL), encode_batch(&batch))
        }),
        ("non-consecutive entry indexes", Code::InvalidArgument, |h| {
            h.mutated(|b| with_message(b, append(4, 2, vec![entry(5, 2), entry(7, 3)])))
        }),
        ("entries not starting after prev_log_index", Code::InvalidArgument, |h| {
            h.mutated(|b| with_message(b, append(4, 2, vec![entry(6, 2)])))
        }),
        ("log index overflow", Code::InvalidArgument, |h| {
            h.mutated(|b| with_message(b, append(u64::MAX - 1, 2, vec![entry(u64::MAX, 2)])))
        }),
        ("entry term above message term", Code::InvalidArgument, |h| {
            h.mutated(|b| with_message(b, append(4, 2, vec![entry(5, 9)])))
        }),
        ("entry term zero", Code::InvalidArgument, |h| h.mutated(|b| with_message(b, append(0, 0, vec![entry(1, 0)])))),
        ("message term zero", Code::InvalidArgument, |h| {
            h.mutated(|b| {
                let vote = RaftMessage::VoteRequest {
                    term: 0,
                    last_log_index: 0,
                    last_log_term: 0,
                    pre_vote: true,
                    transfer: false,
                };
                with_message(b, vote)
            })
        }),
        ("too many entries", Code::InvalidArgument, |h| {
            h.mutated(|b| with_message(b, append(0, 0, (1..=17).map(|i| entry(i, 1)).collect())))
        }),
        ("entry payload above the limit", Code::InvalidArgument, |h| {
            h.mutated(|b| {
                let mut big = entry(5, 3);
                big.payload = vec![0; 2_000].into();
                with_message(b, append(4, 2, vec![big]))
            })
        }),
        ("append success with match_index u64::MAX", Code::InvalidArgument, |h| {
            h.mutated(|b| {
                let result = AppendResult::Success { match_index: u64::MAX };
                with_message(b, RaftMessage::AppendResponse { term: 3, prev_log_index: 4, result })
            })
        }),
        ("message term above max_term", Code::InvalidArgument, |h| {
            h.mutated(|b| {
                let vote = RaftMessage::VoteRequest {
                    term: u64::MAX,
                    last_log_index: 0,
                    last_log_term: 0,
                    pre_vote: false,
                    transfer: false,
                };
                with_message(b, vote)
            })
        }),
        ("entry and anchor terms above max_term", Code::InvalidArgument, |h| {
            h.mutated(|b| {
                let append = RaftMessage::AppendRequest {
                    term: u64::MAX,
                    prev_log_index: 4,
                    prev_log_term: u64::MAX - 1,
                    entries: vec![entry(5, u64::MAX)],
                    leader_commit: 4,
                };
                with_message(b, append)
            })
        }),
        ("append conflict anchored at u64::MAX", Code::InvalidArgument, |h| {
            h.mutated(|b| {
                let result = AppendResult::Conflict { hint_index: 1, hint_term: None };
                with_message(b, RaftMessage::AppendResponse { term: 3, prev_log_index: u64::MAX, result })
            })
        }),
        ("append conflict with an absurd hint term", Code::InvalidArgument, |h| {
            h.mutated(|b| {
                let result = AppendResult::Conflict { hint_index: 2, hint_term: Some(u64::MAX) };
                with_message(b, RaftMessage::AppendResponse { term: 3, prev_log_index: 4, result })
            })
        }),
        ("entry ticket beyond the year 3000", Code::InvalidArgument, |h| {
            h.mutated(|b| {
                let mut late = entry(5, 3);
                late.ticket.physical_ms = MAX_PHYSICAL_MS + 1;
                with_message(b, append(4, 2, vec![late]))
            })
        }),
        ("batch bytes above max_body_bytes", Code::ResourceExhausted, |h| h.body(vec![0; MAX_BODY + 1])),
        ("frame far above the decoding limit", Code::ResourceExhausted, |h| h.body(vec![0; 4 * MAX_BODY + 100_000])),
        // Envelopes of unknown partitions are dropped without holding back the others (see
        // `known_partitions_of_a_batch_are_delivered_despite_unknown_ones`); a batch of which nothing
        // can be delivered is refused so the sender hears about it.
        ("only unknown partitions", Code::NotFound, |h| {
            h.mutated(|b| {
                b.messages[0].partition = PartitionId(7);
                b.messages[1].partition = PartitionId(8);
            })
        }),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_frames_get_their_code_and_change_nothing() {
    let mut config = GrpcConfig::new(LOCAL, CLUSTER, SECRET.to_vec());
    config.max_body_bytes = MAX_BODY;
    config.replay_window = WINDOW;
    let transport = GrpcTransport::bind(config).unwrap();
    let limits = MessageLimits {
        max_entries_per_message: 16,
        max_payload_bytes: 1_024,
        max_partition_id: 1_000,
        ..MessageLimits::default()
    };
    let sink = RecordingSink::with_limits(LOCAL, [1, 2, 3], limits);
    transport.start(sink.clone()).unwrap();
    let mut client = RaftTransportClient::connect(format!("http://{}", transport.local_addr())).await.unwrap();
    let stats = transport.stats();

    let rows = rows();
    assert!(rows.len() >= 20, "{} rows", rows.len());
    let mut harness =
        Harness { auth: ClusterAuth::new(CLUSTER, SECRET, WINDOW), nonces: NonceSource::new(), previous: None };
    let mut failures = Vec::new();
    for (name, expected, build) in &rows {
        let frame = build(&harness);
        harness.previous = Some(frame.clone());
        match client.deliver(frame).await {
            Ok(ack) => failures.push(format!("{name}: accepted ({:?}), expected {expected:?}", ack.into_inner())),
            Err(status) if status.code() != *expected => {
                failures.push(format!("{name}: got {:?} ({}), expected {expected:?}", status.code(), status.message()))
            }
            Err(_) => {}
        }
        if sink.message_count() != 0 {
            failures.push(format!("{name}: the sink received {:?}", sink.batches()));
            break;
        }
    }
    assert!(failures.is_empty(), "{} rows failed:\n{}", failures.len(), failures.join("\n"));
    assert_eq!(NetStats::get(&stats.frames_accepted), 0);
    let unauthenticated = rows.iter().filter(|(_, code, _)| *code == Code::Unauthenticated).count() as u64;
    assert_eq!(NetStats::get(&stats.rejected_auth), unauthenticated);
    // Every other row went through the gate, except the one tonic refused before decoding it.
    assert_eq!(NetStats::get(&stats.rejected_invalid), rows.len() as u64 - unauthenticated - 1);

    let ack = client.deliver(harness.batch(&valid_batch())).await.expect("a valid frame is accepted");
    assert_eq!(ack.into_inner().messages, 2);
    assert_eq!(sink.batches(), vec![valid_batch()]);
    assert_eq!(NetStats::get(&stats.frames_accepted), 1);
    transport.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_partitions_of_a_batch_are_delivered_despite_unknown_ones() {
    let transport = GrpcTransport::bind(GrpcConfig::new(LOCAL, CLUSTER, SECRET.to_vec())).unwrap();
    let sink = RecordingSink::new(LOCAL, [1, 2, 3]);
    transport.start(sink.clone()).unwrap();
    let mut client = RaftTransportClient::connect(format!("http://{}", transport.local_addr())).await.unwrap();
    let harness =
        Harness { auth: ClusterAuth::new(CLUSTER, SECRET, WINDOW), nonces: NonceSource::new(), previous: None };
    let mut batch = valid_batch();
    batch.messages[1].partition = PartitionId(7);
    client.deliver(harness.batch(&batch)).await.expect("the known part is accepted");
    let delivered = sink.batches();
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].messages, valid_batch().messages[..1].to_vec());
    transport.stop();
}
