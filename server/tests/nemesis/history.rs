//! The recorded history of a nemesis run: what every client asked (a write of a unique value or a
//! read at some consistency level), when it asked and when it heard back, and what it heard.
//!
//! This module owns the data model the checker reads ([`Op`], [`OpKind`], [`Outcome`]), the
//! thread-safe recorder the clients write into while a run goes on ([`History`]), and the JSON
//! lines format a failing run is saved in so that it can be checked again later
//! ([`write_jsonl`], [`read_jsonl`], [`load_jsonl`]).
//!
//! Times are nanoseconds since the recorder's start (one shared [`Instant`]), so that the
//! invocations and completions of every client are on one clock.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// The index of an operation in its history (its position in [`History::ops`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OpId(pub usize);

/// The consistency level a read asked for (`GET /kv/{key}?consistency=...`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    /// A read the leader confirms with a quorum before answering.
    Linearizable,
    /// A read the leader answers under its lease (linearizable while the lease holds).
    Lease,
    /// A read any replica answers from its own state: may be stale by design.
    Local,
}

impl Consistency {
    /// Every level, in the order the server documents them.
    pub const ALL: [Consistency; 3] = [Consistency::Linearizable, Consistency::Lease, Consistency::Local];

    /// The value of the `consistency` query parameter for this level.
    pub fn as_query(self) -> &'static str {
        match self {
            Consistency::Linearizable => "linearizable",
            Consistency::Lease => "lease",
            Consistency::Local => "local",
        }
    }
}

/// What an operation asked for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum OpKind {
    /// `PUT /kv/{key}` with `value` as the body. Values are unique per key within a run.
    Write {
        /// The value written.
        value: String,
    },
    /// `GET /kv/{key}` at a consistency level.
    Read {
        /// The level asked for.
        consistency: Consistency,
    },
}

/// What an acknowledged operation answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ack {
    /// The write was acknowledged.
    Written,
    /// The read answered this value; `None` when the key was absent (404).
    Read(Option<String>),
}

/// How an operation ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The server acknowledged it.
    Ok(Ack),
    /// The server refused it and it definitely took no effect (a 4xx answer).
    Failed,
    /// Nobody knows: a timeout, a connection error, a 5xx answer, or no answer before the run
    /// ended. A write may or may not have taken effect, at any time after its invocation.
    Unknown,
}

impl Outcome {
    /// An acknowledged write.
    pub fn written() -> Outcome {
        Outcome::Ok(Ack::Written)
    }

    /// An answered read of `value` (`None`: the key was absent).
    pub fn read(value: Option<&str>) -> Outcome {
        Outcome::Ok(Ack::Read(value.map(str::to_owned)))
    }
}

/// One operation of a history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// Its index in the history.
    pub id: OpId,
    /// The client that issued it. A client issues one operation at a time.
    pub client: u64,
    /// The key it is about.
    pub key: String,
    /// What it asked for.
    pub kind: OpKind,
    /// When it was invoked, in nanoseconds since the history's start.
    pub invoked: u64,
    /// When its outcome was known, in nanoseconds since the history's start; `None` if it never
    /// completed (it then counts as completing after every other operation).
    pub completed: Option<u64>,
    /// How it ended; [`Outcome::Unknown`] while it is still in flight.
    pub outcome: Outcome,
    /// The node the request was sent to (for reading the nodes' logs; the checker ignores it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<u64>,
}

impl Op {
    /// Whether this operation is a write.
    pub fn is_write(&self) -> bool {
        matches!(self.kind, OpKind::Write { .. })
    }

    /// The value this operation wrote, if it is a write.
    pub fn written_value(&self) -> Option<&str> {
        match &self.kind {
            OpKind::Write { value } => Some(value),
            OpKind::Read { .. } => None,
        }
    }

    /// The value this operation read, if it is an answered read (`Some(None)`: absent).
    pub fn read_value(&self) -> Option<Option<&str>> {
        match (&self.kind, &self.outcome) {
            (OpKind::Read { .. }, Outcome::Ok(Ack::Read(value))) => Some(value.as_deref()),
            _ => None,
        }
    }
}

/// A thread-safe recorder of a history. Clones share the same record and the same start.
#[derive(Clone, Debug)]
pub struct History {
    start: Instant,
    ops: Arc<Mutex<Vec<Op>>>,
}

impl Default for History {
    fn default() -> Self {
        History::new()
    }
}

impl History {
    /// An empty history whose clock starts now.
    pub fn new() -> History {
        History::starting_at(Instant::now())
    }

    /// An empty history whose clock starts at `start`.
    pub fn starting_at(start: Instant) -> History {
        History { start, ops: Arc::new(Mutex::new(Vec::new())) }
    }

    /// The instant times are measured from.
    pub fn start(&self) -> Instant {
        self.start
    }

    /// Nanoseconds since the start.
    pub fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Records that `client` invokes `kind` on `key` now; the operation is in flight (its
    /// outcome [`Outcome::Unknown`]) until [`History::complete`].
    pub fn invoke(&self, client: u64, key: impl Into<String>, kind: OpKind) -> OpId {
        let invoked = self.now();
        let mut ops = self.lock();
        let id = OpId(ops.len());
        ops.push(Op {
            id,
            client,
            key: key.into(),
            kind,
            invoked,
            completed: None,
            outcome: Outcome::Unknown,
            node: None,
        });
        id
    }

    /// Records that operation `id` was sent to `node`.
    pub fn sent_to(&self, id: OpId, node: u64) {
        self.lock()[id.0].node = Some(node);
    }

    /// Records that operation `id` ended now with `outcome`.
    ///
    /// Panics if `id` was not returned by [`History::invoke`] on this history, or if the
    /// operation was already completed.
    pub fn complete(&self, id: OpId, outcome: Outcome) {
        let completed = self.now();
        let mut ops = self.lock();
        let op = &mut ops[id.0];
        assert!(op.completed.is_none(), "operation {} completed twice", id.0);
        op.completed = Some(completed);
        op.outcome = outcome;
    }

    /// A copy of every operation recorded so far, in invocation order.
    pub fn ops(&self) -> Vec<Op> {
        self.lock().clone()
    }

    /// The number of operations recorded so far.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing was recorded yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Saves the history so far to `path` as JSON lines (one operation per line).
    pub fn save(&self, path: &Path) -> io::Result<()> {
        let ops = self.ops();
        let mut file = BufWriter::new(File::create(path)?);
        write_jsonl(&ops, &mut file)?;
        file.flush()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Op>> {
        // A client that panicked while holding the lock left the record consistent: every
        // mutation above is a single push or field update.
        self.ops.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Writes `ops` to `out` as JSON lines, one operation per line.
pub fn write_jsonl(ops: &[Op], out: &mut impl Write) -> io::Result<()> {
    for op in ops {
        serde_json::to_writer(&mut *out, op)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// Reads operations written by [`write_jsonl`]; blank lines are skipped.
pub fn read_jsonl(input: impl BufRead) -> io::Result<Vec<Op>> {
    let mut ops = Vec::new();
    for (number, line) in input.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let op = serde_json::from_str(&line)
            .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, format!("line {}: {error}", number + 1)))?;
        ops.push(op);
    }
    Ok(ops)
}

/// Loads a history saved by [`History::save`] (or [`write_jsonl`]) from `path`.
pub fn load_jsonl(path: &Path) -> io::Result<Vec<Op>> {
    read_jsonl(BufReader::new(File::open(path)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(value: &str) -> OpKind {
        OpKind::Write { value: value.to_owned() }
    }

    fn read(consistency: Consistency) -> OpKind {
        OpKind::Read { consistency }
    }

    #[test]
    fn invoke_and_complete_record_times_and_outcomes() {
        let start = Instant::now();
        let history = History::starting_at(start);
        assert_eq!(history.start(), start);
        assert!(history.is_empty());
        let w = history.invoke(1, "k", write("a"));
        let r = history.invoke(2, "k", read(Consistency::Lease));
        history.complete(r, Outcome::read(Some("a")));
        history.complete(w, Outcome::written());
        let pending = history.invoke(3, "k", write("b"));

        let ops = history.ops();
        assert_eq!((ops.len(), history.len()), (3, 3));
        assert_eq!(ops[w.0].outcome, Outcome::written());
        assert_eq!(ops[r.0].read_value(), Some(Some("a")));
        assert_eq!(ops[pending.0].outcome, Outcome::Unknown);
        assert_eq!(ops[pending.0].completed, None);
        for op in &ops[..2] {
            assert!(op.completed.unwrap() >= op.invoked);
        }
        assert!(ops[w.0].invoked <= ops[r.0].invoked);
    }

    #[test]
    #[should_panic(expected = "completed twice")]
    fn completing_twice_panics() {
        let history = History::new();
        let id = history.invoke(1, "k", write("a"));
        history.complete(id, Outcome::written());
        history.complete(id, Outcome::Failed);
    }

    #[test]
    fn recorder_is_shared_across_threads() {
        let history = History::new();
        let threads: Vec<_> = (0..4)
            .map(|client| {
                let history = history.clone();
                std::thread::spawn(move || {
                    for i in 0..50 {
                        let id = history.invoke(client, "k", write(&format!("{client}-{i}")));
                        history.complete(id, Outcome::written());
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let ops = history.ops();
        assert_eq!(ops.len(), 200);
        assert!(ops.iter().enumerate().all(|(i, op)| op.id == OpId(i) && op.completed.is_some()));
    }

    #[test]
    fn jsonl_round_trips_every_kind_of_operation() {
        let history = History::new();
        let outcomes = [
            Outcome::written(),
            Outcome::Failed,
            Outcome::Unknown,
            Outcome::read(None),
            Outcome::read(Some("x \"quoted\"\nline")),
        ];
        for (i, outcome) in outcomes.into_iter().enumerate() {
            let kind = if i < 3 { write(&format!("v{i}")) } else { read(Consistency::ALL[i % 3]) };
            let id = history.invoke(i as u64, format!("key/{i}"), kind);
            history.complete(id, outcome);
        }
        history.invoke(9, "k", read(Consistency::Local));
        let ops = history.ops();

        let mut buffer = Vec::new();
        write_jsonl(&ops, &mut buffer).unwrap();
        assert_eq!(buffer.iter().filter(|&&b| b == b'\n').count(), ops.len());
        assert_eq!(read_jsonl(&buffer[..]).unwrap(), ops);

        let dir = std::env::temp_dir().join(format!("nemesis-history-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("history.jsonl");
        history.save(&path).unwrap();
        assert_eq!(load_jsonl(&path).unwrap(), ops);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn jsonl_reports_the_bad_line() {
        let error = read_jsonl(&b"\n{\"not\": \"an op\"}\n"[..]).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        assert!(error.to_string().starts_with("line 2:"), "{error}");
    }
}
