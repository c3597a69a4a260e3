//! Table-driven hostile input against a running node's REST transport: every row is a request a
//! broken or malicious peer could send; each must get its specific 4xx status and leave the node's
//! state (every partition's term, commit and last index, leadership, and the count of accepted
//! batches) unchanged. The last request is valid and must change the state, proving the harness can
//! see a change.

mod support;

use kommander_core::hlc::MAX_PHYSICAL_MS;
use kommander_core::{
    AppendResult, EntryKind, Envelope, LogEntry, MessageBatch, NodeId, PartitionId, RaftMessage, Ticket,
};
use kommander_transport_rest::wire::{H_CLUSTER, H_FROM, H_NONCE, H_SIGNATURE, H_TIMESTAMP, H_TO};
use serde::Serialize;
use std::time::Duration;
use support::{eventually, Node, RawRequest, Signer, CLUSTER, LOCAL, MAX_BODY, PEER, SECRET};

fn envelope(partition: u32, message: RaftMessage) -> Envelope {
    Envelope { partition: PartitionId(partition), from: PEER, to: LOCAL, message }
}

fn batch_of(messages: Vec<Envelope>) -> MessageBatch {
    MessageBatch { cluster_id: CLUSTER.into(), from: PEER, to: LOCAL, messages }
}

fn one(partition: u32, message: RaftMessage) -> MessageBatch {
    batch_of(vec![envelope(partition, message)])
}

fn entry(index: u64, term: u64) -> LogEntry {
    LogEntry {
        index,
        term,
        kind: EntryKind::Application { auto_commit: true },
        log_type: "kv".into(),
        payload: b"x".to_vec().into(),
        ticket: Ticket::default(),
    }
}

fn append(term: u64, prev_log_index: u64, prev_log_term: u64, entries: Vec<LogEntry>) -> RaftMessage {
    RaftMessage::AppendRequest { term, prev_log_index, prev_log_term, entries, leader_commit: 0 }
}

fn vote(term: u64) -> RaftMessage {
    RaftMessage::VoteRequest { term, last_log_index: 0, last_log_term: 0, pre_vote: false, transfer: false }
}

/// A batch whose `from` is negative: not representable by the real type.
#[derive(Serialize)]
struct NegativeSender {
    cluster_id: String,
    from: i64,
    to: u64,
    messages: Vec<()>,
}

fn table(s: &Signer) -> Vec<(&'static str, RawRequest, u16)> {
    let hb = one(1, append(1_000, 0, 0, vec![]));
    let valid = s.valid(&hb);
    let mut rows = vec![
        (
            "no auth headers at all",
            RawRequest { headers: vec![("content-type", "application/msgpack".into())], ..valid.clone() },
            401,
        ),
        ("missing signature", s.valid(&hb).without(H_SIGNATURE), 401),
        ("signature is not hex", s.valid(&hb).set(H_SIGNATURE, "zz-not-hex"), 401),
        ("signature too short", s.valid(&hb).set(H_SIGNATURE, "abcd"), 401),
        (
            "signed with the wrong secret",
            s.request(&s.header(&hb), kommander_transport_rest::wire::encode_batch(&hb), b"wrong secret"),
            401,
        ),
        ("node id is not a number", s.valid(&hb).set(H_FROM, "two"), 401),
        ("nonce missing", s.valid(&hb).without(H_NONCE), 401),
        ("header tampered after signing (to)", s.valid(&hb).set(H_TO, "3"), 401),
        (
            "body tampered after signing",
            RawRequest { body: kommander_transport_rest::wire::encode_batch(&one(2, vote(1))), ..s.valid(&hb) },
            401,
        ),
    ];
    let other_cluster = MessageBatch { cluster_id: "another-cluster".into(), ..hb.clone() };
    rows.push(("another cluster, its own valid signature", s.valid(&other_cluster), 401));
    let mut old = s.header(&hb);
    old.timestamp_ms -= 120_000;
    rows.push((
        "timestamp outside the window (old)",
        s.request(&old, kommander_transport_rest::wire::encode_batch(&hb), SECRET),
        401,
    ));
    let mut future = s.header(&hb);
    future.timestamp_ms += 120_000;
    rows.push((
        "timestamp outside the window (future)",
        s.request(&future, kommander_transport_rest::wire::encode_batch(&hb), SECRET),
        401,
    ));
    rows.push(("wrong content type", s.valid(&hb).set("content-type", "application/json"), 415));
    rows.push(("GET instead of POST", RawRequest { method: reqwest::Method::GET, ..s.valid(&hb) }, 405));
    let raw = |body: Vec<u8>| s.request(&s.header(&hb), body, SECRET);
    rows.push(("body is not MessagePack", raw(b"{\"hello\": \"json\"}".to_vec()), 400));
    rows.push(("empty body", raw(vec![]), 400));
    let encoded = kommander_transport_rest::wire::encode_batch(&hb);
    rows.push(("truncated body", raw(encoded[..encoded.len() / 2].to_vec()), 400));
    let mut huge = vec![0x94, 0xaa];
    huge.extend_from_slice(CLUSTER.as_bytes());
    huge.extend_from_slice(&[0x02, 0x01, 0xdd, 0xff, 0xff, 0xff, 0xff]);
    rows.push(("array length of 4 billion", raw(huge), 400));
    let negative = NegativeSender { cluster_id: CLUSTER.into(), from: -2, to: 1, messages: vec![] };
    rows.push(("negative node id", raw(rmp_serde::to_vec(&negative).unwrap()), 400));
    rows.push(("oversized body", raw(vec![0x90; MAX_BODY + 1]), 413));
    let mut header_from_3 = s.header(&hb);
    header_from_3.from = NodeId(3);
    rows.push(("body sender differs from signed header", s.request(&header_from_3, encoded.clone(), SECRET), 400));
    let elsewhere = MessageBatch { to: NodeId(9), messages: vec![], ..hb.clone() };
    rows.push(("addressed to another node", s.valid(&elsewhere), 421));
    rows.push(("unknown partition", s.valid(&one(99, vote(1_000))), 404));
    rows.push(("partition id out of range", s.valid(&one(u32::MAX, vote(1_000))), 400));
    let mut spoofed = one(1, vote(1_000));
    spoofed.messages[0].from = NodeId(3);
    rows.push(("envelope sender differs from batch", s.valid(&spoofed), 400));
    rows.push(("entries not consecutive", s.valid(&one(1, append(1_000, 0, 0, vec![entry(1, 1), entry(3, 1)]))), 400));
    rows.push(("index overflow", s.valid(&one(1, append(1_000, u64::MAX - 1, 1, vec![entry(u64::MAX, 1)]))), 400));
    rows.push(("entry term above message term", s.valid(&one(1, append(5, 0, 0, vec![entry(1, 6)]))), 400));
    rows.push(("term zero", s.valid(&one(1, vote(0))), 400));
    let bad_response = RaftMessage::AppendResponse {
        term: 1_000,
        prev_log_index: 0,
        result: AppendResult::Success { match_index: u64::MAX },
    };
    rows.push(("append response matching u64::MAX", s.valid(&one(1, bad_response)), 400));
    let response = |prev_log_index, result| RaftMessage::AppendResponse { term: 1_000, prev_log_index, result };
    let conflict_at_max = response(u64::MAX, AppendResult::Conflict { hint_index: 1, hint_term: None });
    rows.push(("append conflict anchored at u64::MAX", s.valid(&one(1, conflict_at_max)), 400));
    let absurd_hint = response(4, AppendResult::Conflict { hint_index: 2, hint_term: Some(u64::MAX) });
    rows.push(("append conflict with an absurd hint term", s.valid(&one(1, absurd_hint)), 400));
    rows.push(("message term above max_term", s.valid(&one(1, vote(u64::MAX))), 400));
    let absurd_entries = RaftMessage::AppendRequest {
        term: u64::MAX,
        prev_log_index: 0,
        prev_log_term: 0,
        entries: vec![entry(1, u64::MAX)],
        leader_commit: 0,
    };
    rows.push(("entry term above max_term", s.valid(&one(1, absurd_entries)), 400));
    let mut late = entry(1, 1);
    late.ticket.physical_ms = MAX_PHYSICAL_MS + 1;
    rows.push(("entry ticket beyond the year 3000", s.valid(&one(1, append(1_000, 0, 0, vec![late]))), 400));
    // A batch of which nothing can be delivered is refused; known partitions are never held back
    // by unknown ones (`known_partitions_are_delivered_despite_unknown_ones`).
    let mut only_unknown = one(41, vote(1_000));
    only_unknown.messages.push(envelope(42, vote(1_000)));
    rows.push(("two unknown partitions", s.valid(&only_unknown), 404));
    rows
}

#[actix_rt::test]
async fn hostile_requests_get_typed_errors_and_change_nothing() {
    let node = Node::start().await;
    let client = reqwest::Client::new();
    let signer = Signer::new();

    // A replay row needs a request that was accepted once.
    let empty = batch_of(vec![]);
    let replayed = signer.valid(&empty);
    assert_eq!(replayed.send(&client, &node.url).await.0, 200, "priming request");

    let mut rows = table(&signer);
    rows.push(("replayed request", replayed, 401));
    assert!(rows.len() >= 20, "the table must hold at least 20 kinds, has {}", rows.len());
    let before = node.state();
    let mut failures = Vec::new();
    for (name, request, expected) in &rows {
        let (status, body) = request.send(&client, &node.url).await;
        let after = node.state();
        if status != *expected || after != before {
            failures.push(format!(
                "{name}: got {status} ({body}), expected {expected}; state changed: {}",
                after != before
            ));
        }
    }
    assert!(failures.is_empty(), "rows failed:\n{}", failures.join("\n"));
    let stats = node.transport.stats();
    assert!(stats.rejected_auth.load(std::sync::atomic::Ordering::Relaxed) >= 12);
    println!("{} hostile requests rejected with their status; state unchanged", rows.len());

    // Control: a valid heartbeat of node 2 at a higher term does change the node (it adopts the
    // term and follows node 2).
    let (status, body) = signer.valid(&one(1, append(1_000, 0, 0, vec![]))).send(&client, &node.url).await;
    assert_eq!(status, 200, "{body}");
    eventually("p1 to adopt term 1000", Duration::from_secs(5), || {
        node.manager.status(PartitionId(1)).map(|s| s.term) == Ok(1_000)
    })
    .await;
    assert_ne!(node.state(), before);
    node.stop().await;
}

#[actix_rt::test]
async fn unknown_headers_do_not_matter_but_the_cluster_header_does() {
    let node = Node::start().await;
    let client = reqwest::Client::new();
    let signer = Signer::new();
    let batch = batch_of(vec![]);
    let (status, _) = signer.valid(&batch).set("x-unrelated", "1").send(&client, &node.url).await;
    assert_eq!(status, 200);
    let (status, _) = signer.valid(&batch).set(H_CLUSTER, "other").send(&client, &node.url).await;
    assert_eq!(status, 401);
    let (status, _) = signer.valid(&batch).set(H_TIMESTAMP, "-5").send(&client, &node.url).await;
    assert_eq!(status, 401);
    node.stop().await;
}

#[actix_rt::test]
async fn known_partitions_are_delivered_despite_unknown_ones() {
    let node = Node::start().await;
    let client = reqwest::Client::new();
    let signer = Signer::new();
    let router = node.manager.inbound_router().expect("router");
    let before = node.state();

    // A heartbeat of node 2 for partition 1 at term 1000, next to a message for partition 42,
    // which this node does not host.
    let mut mixed = one(1, append(1_000, 0, 0, vec![]));
    mixed.messages.push(envelope(42, vote(1_000)));
    let (status, body) = signer.valid(&mixed).send(&client, &node.url).await;
    assert_eq!(status, 200, "{body}");
    eventually("p1 to adopt term 1000", Duration::from_secs(5), || {
        node.manager.status(PartitionId(1)).map(|s| s.term) == Ok(1_000)
    })
    .await;
    assert_eq!(router.dropped_messages.load(std::sync::atomic::Ordering::Relaxed), 1);
    let (partitions, accepted) = node.state();
    assert_eq!(accepted, before.1 + 1);
    assert_eq!(partitions[2], before.0[2], "partition 2 untouched");
    node.stop().await;
}

#[actix_rt::test]
async fn a_declared_body_above_the_limit_is_refused_before_it_is_read() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let node = Node::start().await;
    let signer = Signer::new();
    let request = signer.valid(&batch_of(vec![]));
    let mut head = format!("POST {} HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n", node.path(), 1u64 << 40);
    for (name, value) in &request.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    // Headers only: the 1 TiB body never comes, and the answer must not wait for it.
    let mut stream = tokio::net::TcpStream::connect(node.addr()).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0; 1024];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer)).await.expect("answered");
    let answer = String::from_utf8_lossy(&answer[..read.unwrap()]).to_string();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    node.stop().await;
}

#[actix_rt::test]
async fn bodies_beyond_the_inflight_budget_get_503_until_room_frees_up() {
    use tokio::io::AsyncWriteExt;
    // Room for exactly one largest body in flight.
    let node = Node::start_with(|config| config.max_inflight_bytes = MAX_BODY).await;
    let client = reqwest::Client::new();
    let signer = Signer::new();

    // A request that declares a largest body and then stalls holds the whole budget.
    let stalled = signer.valid(&batch_of(vec![]));
    let mut head = format!("POST {} HTTP/1.1\r\nhost: x\r\ncontent-length: {MAX_BODY}\r\n", node.path());
    for (name, value) in &stalled.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut stream = tokio::net::TcpStream::connect(node.addr()).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&[0x90; 16]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let (status, body) = signer.valid(&batch_of(vec![])).send(&client, &node.url).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(node.transport.stats().rejected_overloaded.load(std::sync::atomic::Ordering::Relaxed), 1);

    // The stalled client goes away: its reservation is released and requests pass again.
    drop(stream);
    eventually_async(Duration::from_secs(5), || async {
        signer.valid(&batch_of(vec![])).send(&client, &node.url).await.0 == 200
    })
    .await;
    node.stop().await;
}

async fn eventually_async<F: std::future::Future<Output = bool>>(timeout: Duration, mut probe: impl FnMut() -> F) {
    let deadline = std::time::Instant::now() + timeout;
    while !probe().await {
        assert!(std::time::Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
