//! Shared by the REST transport's peer tests: a recording inbound sink, a vote batch builder,
//! a transport config with short back-off, and a bounded poll.

#![allow(dead_code)]

use kommander_core::transport::{InboundRejection, InboundSink};
use kommander_core::{Envelope, MessageBatch, NodeId, PartitionId, RaftMessage};
use kommander_transport_rest::RestConfig;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const CLUSTER: &str = "rest-peers";
pub const SECRET: &[u8] = b"rest peers test secret";

#[derive(Default)]
pub struct Recorder(pub Mutex<Vec<MessageBatch>>);

impl Recorder {
    pub fn terms(&self) -> Vec<u64> {
        self.0.lock().unwrap().iter().flat_map(|b| b.messages.iter().map(|e| e.message.term())).collect()
    }
}

impl InboundSink for Recorder {
    fn deliver(&self, batch: MessageBatch) -> Result<(), InboundRejection> {
        self.0.lock().unwrap().push(batch);
        Ok(())
    }
}

pub fn vote(from: u64, to: u64, term: u64) -> MessageBatch {
    let (from, to) = (NodeId(from), NodeId(to));
    let message =
        RaftMessage::VoteRequest { term, last_log_index: 0, last_log_term: 0, pre_vote: false, transfer: false };
    let envelope = Envelope { partition: PartitionId(1), from, to, message };
    MessageBatch { cluster_id: CLUSTER.into(), from, to, messages: vec![envelope] }
}

pub fn config(node: u64) -> RestConfig {
    let mut config = RestConfig::new(NodeId(node), CLUSTER, SECRET.to_vec());
    config.outbox.backoff_min = Duration::from_millis(10);
    config.outbox.backoff_max = Duration::from_millis(50);
    config
}

pub async fn until(what: &str, mut probe: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !probe() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
