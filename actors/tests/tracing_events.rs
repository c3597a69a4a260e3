//! Debug-level tracing follows one proposal through the runtime: appended on the leader (with its
//! ticket and index), the partition turn that persists and sends it, the WAL group commit, and
//! the answer — all carrying the partition, so a slow commit can be followed in the logs.

use kommander_actors::testing::TestCluster;
use kommander_actors::StateMachine;
use kommander_core::{LogEntry, PartitionId};
use std::io::Write;
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Nothing;

impl StateMachine for Nothing {
    fn apply(&mut self, _: PartitionId, _: &[LogEntry]) {}
    fn reset(&mut self, _: PartitionId) {}
}

/// Collects everything the subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[actix::test]
async fn a_proposal_can_be_followed_at_debug_level() {
    let captured = Captured::default();
    let writer = captured.clone();
    // Global: the nodes' actors run on their own arbiter threads.
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();
    let cluster = TestCluster::<Nothing>::start(3, 1).await.unwrap();
    let committed = cluster.replicate(PartitionId(1), "traced", vec![b"x".to_vec()]).await.unwrap();
    cluster.shutdown().await;

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    if std::env::var("SHOW_TRACE").is_ok() {
        println!(
            "{}",
            logs.lines().filter(|l| l.contains("persist") || l.contains("proposal")).collect::<Vec<_>>().join("\n")
        );
    }
    let ticket = format!("{:?}", committed.ticket);
    let lines_with = |needle: &str| logs.lines().filter(|l| l.contains(needle)).map(str::to_owned).collect::<Vec<_>>();
    for event in ["proposal appended", "proposal committed"] {
        let lines = lines_with(event);
        assert!(
            lines.iter().any(|l| l.contains(&ticket) && l.contains("partition=p1")),
            "no {event:?} line with ticket {ticket}:\n{}",
            lines.join("\n")
        );
    }
    let index = committed.last_index;
    assert!(
        lines_with("persist").iter().any(|l| l.contains(&format!("through={index}")) && l.contains("partition_turn")),
        "the write of index {index} was not traced as persisted in a partition turn"
    );
    assert!(!lines_with("wal group commit").is_empty(), "WAL group commits are traced");
    assert!(lines_with("messages sent").iter().any(|l| l.contains("partition_turn")), "sends are traced in turns");
}
