//! The linearizability checker of a recorded history: each key is a register, and the question is
//! whether some order of the operations on it, consistent with their real-time order, explains
//! every value read.
//!
//! This module owns the search (Wing & Gong's, with Lowe's memoisation of (linearized set, state)
//! pairs, as Porcupine does it), the treatment of failed and indeterminate operations, the weaker
//! check of local reads, the shrinking of a failing key to a small set of operations that is by
//! itself non-linearizable, and the [`Report`] the suite prints.
//!
//! The rules, per key (keys are independent registers; a key starts absent):
//! - an acknowledged write took effect once, between its invocation and its completion;
//! - a failed operation took no effect and is left out; so is a read whose outcome is unknown;
//! - an indeterminate write (unknown outcome, or never completed) took effect once at any time
//!   after its invocation, or never;
//! - linearizable and lease reads returned the value of the latest write in that order;
//! - local reads may be stale by design: each must return `None` or the value of a write, not
//!   failed, invoked before the read completed.
//!
//! Values are assumed unique per key (the clients write unique values); the shrinking relies on it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use super::history::{Consistency, Op, OpKind, Outcome};

/// The default [`Options::state_budget`].
pub const DEFAULT_STATE_BUDGET: u64 = 2_000_000;

/// How much work the checker may do.
#[derive(Clone, Debug)]
pub struct Options {
    /// The most search states (distinct (linearized set, value) pairs) one key may visit before
    /// its verdict is [`Verdict::TimedOut`]. Shrinking an anomaly gets ten times this in total.
    pub state_budget: u64,
    /// Whether to shrink a non-linearizable key to a small set of operations that is by itself
    /// non-linearizable (otherwise every operation of the key is reported).
    pub shrink: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options { state_budget: DEFAULT_STATE_BUDGET, shrink: true }
    }
}

/// The verdict on the linearizable and lease operations of one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// An order exists.
    Linearizable,
    /// No order exists: an anomaly is reported.
    NotLinearizable,
    /// The search exceeded its budget: the key is unchecked (not an anomaly, but not a pass).
    TimedOut,
}

/// What was checked on one key.
#[derive(Clone, Debug)]
pub struct KeyReport {
    /// The key.
    pub key: String,
    /// Writes and linearizable or lease reads the search took into account.
    pub ops_checked: usize,
    /// Answered local reads checked by the weaker rule.
    pub local_reads_checked: usize,
    /// Operations left out: failed ones and reads with an unknown outcome.
    pub ops_dropped: usize,
    /// The verdict of the search.
    pub verdict: Verdict,
    /// Search states visited (the budget's unit).
    pub states: u64,
}

/// Which rule an anomaly breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnomalyKind {
    /// No order of the key's operations explains the values read.
    NotLinearizable,
    /// A local read returned a value no eligible write wrote.
    LocalRead,
}

/// A violation, with the operations that show it.
#[derive(Clone, Debug)]
pub struct Anomaly {
    /// The key.
    pub key: String,
    /// The rule broken.
    pub kind: AnomalyKind,
    /// The operations involved, in invocation order: for [`AnomalyKind::NotLinearizable`], a
    /// subset of the key's operations that is non-linearizable by itself, shrunk until removing
    /// any one of them (with the reads of a removed write) makes it linearizable.
    pub ops: Vec<Op>,
    /// What is wrong, for a human, with the operations and their real-time order.
    pub explanation: String,
}

/// The result of checking a history.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Per key, in key order.
    pub keys: Vec<KeyReport>,
    /// Every anomaly found, in key order.
    pub anomalies: Vec<Anomaly>,
}

impl Report {
    /// Whether no anomaly was found. Keys whose search timed out are not anomalies: see
    /// [`Report::timed_out`] for whether everything was checked.
    pub fn is_ok(&self) -> bool {
        self.anomalies.is_empty()
    }

    /// The number of keys.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// Operations checked: by the search, and local reads by the weaker rule.
    pub fn ops_checked(&self) -> usize {
        self.keys.iter().map(|k| k.ops_checked + k.local_reads_checked).sum()
    }

    /// Operations left out (failed ones, reads with unknown outcomes).
    pub fn ops_dropped(&self) -> usize {
        self.keys.iter().map(|k| k.ops_dropped).sum()
    }

    /// The number of anomalies.
    pub fn anomaly_count(&self) -> usize {
        self.anomalies.len()
    }

    /// Keys whose search exceeded its budget (unchecked).
    pub fn timed_out(&self) -> impl Iterator<Item = &KeyReport> + '_ {
        self.keys.iter().filter(|k| k.verdict == Verdict::TimedOut)
    }

    /// Search states visited over every key.
    pub fn states(&self) -> u64 {
        self.keys.iter().map(|k| k.states).sum()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "linearizability: {} keys, {} operations checked ({} dropped), {} anomalies, {} keys timed out",
            self.key_count(),
            self.ops_checked(),
            self.ops_dropped(),
            self.anomaly_count(),
            self.timed_out().count(),
        )?;
        for key in self.timed_out() {
            writeln!(
                f,
                "key {:?}: search gave up after {} states ({} operations): NOT CHECKED",
                key.key, key.states, key.ops_checked
            )?;
        }
        for anomaly in &self.anomalies {
            write!(f, "{anomaly}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            AnomalyKind::NotLinearizable => "not linearizable",
            AnomalyKind::LocalRead => "local read",
        };
        writeln!(f, "ANOMALY on key {:?} ({kind}): {}", self.key, self.explanation)
    }
}

/// Checks `history` with the default [`Options`].
pub fn check(history: &[Op]) -> Report {
    check_with(history, &Options::default())
}

/// Checks `history`, key by key.
pub fn check_with(history: &[Op], options: &Options) -> Report {
    let mut by_key: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in history {
        by_key.entry(op.key.as_str()).or_default().push(op);
    }
    let mut report = Report::default();
    for (key, mut ops) in by_key {
        ops.sort_by_key(|op| (op.invoked, op.id));
        let (key_report, anomalies) = check_key(key, &ops, options);
        report.keys.push(key_report);
        report.anomalies.extend(anomalies);
    }
    report
}

/// "Not yet": the completion time of an operation that never completed.
const NEVER: u64 = u64::MAX;
/// The register's value when the key is absent.
const ABSENT: u32 = 0;
/// A value read that no write in the search wrote.
const UNWRITTEN: u32 = u32::MAX;

/// What an operation does to the register, values interned as numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Write(u32),
    Read(u32),
}

/// An operation the search takes into account.
#[derive(Clone, Copy, Debug)]
struct Candidate<'a> {
    op: &'a Op,
    action: Action,
    invoked: u64,
    completed: u64,
    /// A write that may have taken effect at any time after its invocation, or never.
    indeterminate: bool,
}

/// An operation as the search sees it: a window and an action.
#[derive(Clone, Copy, Debug)]
struct Window {
    invoked: u64,
    completed: u64,
    action: Action,
}

/// The result of one search.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Search {
    Linearizable,
    NotLinearizable,
    TimedOut,
}

fn check_key(key: &str, ops: &[&Op], options: &Options) -> (KeyReport, Vec<Anomaly>) {
    let mut anomalies = Vec::new();
    let mut dropped = 0;
    let mut local_reads = Vec::new();
    let mut values: HashMap<&str, u32> = HashMap::new();
    for op in ops {
        if let (Some(value), false) = (op.written_value(), op.outcome == Outcome::Failed) {
            let next = u32::try_from(values.len() + 1).expect("fewer than 2^32 values");
            values.entry(value).or_insert(next);
        }
    }
    let mut candidates = Vec::new();
    for &op in ops {
        let completed = op.completed.unwrap_or(NEVER).max(op.invoked);
        match (&op.kind, &op.outcome) {
            (_, Outcome::Failed) | (OpKind::Read { .. }, Outcome::Unknown) => dropped += 1,
            (OpKind::Write { value }, outcome) => candidates.push(Candidate {
                op,
                action: Action::Write(values[value.as_str()]),
                invoked: op.invoked,
                completed,
                indeterminate: *outcome == Outcome::Unknown || completed == NEVER,
            }),
            (OpKind::Read { consistency: Consistency::Local }, Outcome::Ok(_)) => local_reads.push(op),
            (OpKind::Read { .. }, Outcome::Ok(_)) => {
                let value = match op.read_value().flatten() {
                    None => ABSENT,
                    Some(value) => values.get(value).copied().unwrap_or(UNWRITTEN),
                };
                candidates.push(Candidate {
                    op,
                    action: Action::Read(value),
                    invoked: op.invoked,
                    completed,
                    indeterminate: false,
                });
            }
        }
    }

    let all: Vec<usize> = (0..candidates.len()).collect();
    let (search, states) = linearizable(&windows(&candidates, &all), options.state_budget);
    let verdict = match search {
        Search::Linearizable => Verdict::Linearizable,
        Search::TimedOut => Verdict::TimedOut,
        Search::NotLinearizable => {
            let witness = if options.shrink { shrink(&candidates, all, options.state_budget) } else { all };
            anomalies.push(explain(key, &candidates, &witness, ops));
            Verdict::NotLinearizable
        }
    };
    let mut writes_of: HashMap<&str, Vec<&Op>> = HashMap::new();
    for op in ops {
        if let Some(value) = op.written_value() {
            writes_of.entry(value).or_default().push(op);
        }
    }
    for read in &local_reads {
        if let Some(anomaly) = check_local_read(key, read, &writes_of) {
            anomalies.push(anomaly);
        }
    }

    let report = KeyReport {
        key: key.to_owned(),
        ops_checked: candidates.len(),
        local_reads_checked: local_reads.len(),
        ops_dropped: dropped,
        verdict,
        states,
    };
    (report, anomalies)
}

/// The weak rule of a local read: `None`, or the value of a write, not failed, invoked before the
/// read completed. `writes_of` has the key's writes by value.
fn check_local_read(key: &str, read: &Op, writes_of: &HashMap<&str, Vec<&Op>>) -> Option<Anomaly> {
    let value = read.read_value().flatten()?;
    let writes = writes_of.get(value).cloned().unwrap_or_default();
    let completed = read.completed.unwrap_or(NEVER);
    if writes.iter().any(|w| w.outcome != Outcome::Failed && w.invoked <= completed) {
        return None;
    }
    let why = if writes.is_empty() {
        format!("local read #{} returned {value:?}, which no write to this key wrote", read.id.0)
    } else if writes.iter().all(|w| w.outcome == Outcome::Failed) {
        format!("local read #{} returned {value:?}, written only by a write that failed", read.id.0)
    } else {
        format!("local read #{} returned {value:?} before any write of it was invoked", read.id.0)
    };
    let mut involved = vec![read.clone()];
    involved.extend(writes.into_iter().cloned());
    involved.sort_by_key(|op| (op.invoked, op.id));
    Some(Anomaly {
        key: key.to_owned(),
        kind: AnomalyKind::LocalRead,
        explanation: format!("{why}\n{}", describe(&involved)),
        ops: involved,
    })
}

/// The windows the search uses for the candidates at `subset`.
///
/// An indeterminate write that no read in the subset observed is left out (it can always take
/// effect last, or never). One that was observed must take effect before each read observing
/// it, so its window ends at the latest completion among those reads. Both are exact.
fn windows(candidates: &[Candidate], subset: &[usize]) -> Vec<Window> {
    let mut observed_until: HashMap<u32, u64> = HashMap::new();
    for &i in subset {
        if let Action::Read(value) = candidates[i].action {
            let until = observed_until.entry(value).or_insert(0);
            *until = (*until).max(candidates[i].completed);
        }
    }
    let mut writes_per_value: HashMap<u32, usize> = HashMap::new();
    for &i in subset {
        if let Action::Write(value) = candidates[i].action {
            *writes_per_value.entry(value).or_insert(0) += 1;
        }
    }
    let mut out = Vec::with_capacity(subset.len());
    for &i in subset {
        let c = candidates[i];
        let mut completed = c.completed;
        if let (Action::Write(value), true) = (c.action, c.indeterminate) {
            // With duplicate values a read may have observed the other write: keep it all.
            if writes_per_value[&value] == 1 {
                match observed_until.get(&value) {
                    None => continue,
                    Some(&until) => completed = until.max(c.invoked),
                }
            }
        }
        out.push(Window { invoked: c.invoked, completed, action: c.action });
    }
    out
}

/// The search: whether some order of `ops`, each placed within its window, is a legal history of
/// a register that starts absent; and how many states it visited.
///
/// The events (invocations and completions) are kept in a doubly linked list in time order, an
/// invocation before a completion at the same time (so that touching windows count as
/// overlapping). The search linearizes an operation whose invocation comes before the first
/// pending completion, removing its two events, and backtracks when it meets a completion of an
/// operation not yet linearized. A set of linearized operations with the same register value is
/// explored once.
fn linearizable(ops: &[Window], budget: u64) -> (Search, u64) {
    let n = ops.len();
    if n == 0 {
        return (Search::Linearizable, 0);
    }
    let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * n);
    for (i, op) in ops.iter().enumerate() {
        events.push((op.invoked, false, i));
        events.push((op.completed.max(op.invoked), true, i));
    }
    events.sort_unstable();

    // Node 0 is the head, nodes 1..=2n the events, node 2n + 1 the tail.
    let tail = 2 * n + 1;
    let mut next: Vec<usize> = (1..=tail + 1).collect();
    let mut prev: Vec<usize> = (0..=tail).map(|i| i.saturating_sub(1)).collect();
    let mut node_op = vec![0; tail + 1];
    let mut is_call = vec![false; tail + 1];
    let mut call_node = vec![0; n];
    let mut return_node = vec![0; n];
    for (index, &(_, is_return, op)) in events.iter().enumerate() {
        let node = index + 1;
        node_op[node] = op;
        is_call[node] = !is_return;
        if is_return {
            return_node[op] = node;
        } else {
            call_node[op] = node;
        }
    }
    let unlink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, node: usize| {
        next[prev[node]] = next[node];
        prev[next[node]] = prev[node];
    };
    let relink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, node: usize| {
        next[prev[node]] = node;
        prev[next[node]] = node;
    };

    // The set of linearized operations is known by its Zobrist hash: the XOR of a random 128-bit
    // key per operation. A collision (odds around 2^-128 per pair of states) could only hide a
    // linearization, never invent one.
    let keys: Vec<u128> = (0..n as u64).map(|i| u128::from(mix(2 * i)) << 64 | u128::from(mix(2 * i + 1))).collect();
    let mut linearized = 0u128;
    let mut state = ABSENT;
    let mut seen: HashSet<(u128, u32)> = HashSet::new();
    let mut stack: Vec<(usize, u32)> = Vec::new();
    let mut states = 0;
    let mut entry = next[0];
    while next[0] != tail {
        if is_call[entry] {
            let op = node_op[entry];
            let after = match ops[op].action {
                Action::Write(value) => Some(value),
                Action::Read(value) => (value == state).then_some(state),
            };
            if let Some(after) = after {
                if seen.insert((linearized ^ keys[op], after)) {
                    linearized ^= keys[op];
                    states += 1;
                    if states > budget {
                        return (Search::TimedOut, states);
                    }
                    stack.push((op, state));
                    state = after;
                    unlink(&mut next, &mut prev, call_node[op]);
                    unlink(&mut next, &mut prev, return_node[op]);
                    entry = next[0];
                    continue;
                }
            }
            entry = next[entry];
        } else {
            // The completion of an operation not linearized yet: undo the latest choice.
            let Some((op, before)) = stack.pop() else {
                return (Search::NotLinearizable, states);
            };
            linearized ^= keys[op];
            state = before;
            relink(&mut next, &mut prev, return_node[op]);
            relink(&mut next, &mut prev, call_node[op]);
            entry = next[call_node[op]];
        }
    }
    (Search::Linearizable, states)
}

/// splitmix64's output function: a well-mixed 64-bit value for each input.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Shrinks the non-linearizable `subset` of the candidates: removes runs of operations (halves,
/// then quarters, ... then single ones) while what is left stays non-linearizable. Removing a
/// write removes the reads of its value, so that what is left only reads values it writes: with
/// unique values, a linearizable history has every such subset linearizable, so what is left
/// is non-linearizable only if the whole is. Searches that time out count as linearizable.
fn shrink(candidates: &[Candidate], mut subset: Vec<usize>, per_search: u64) -> Vec<usize> {
    let mut budget = per_search.saturating_mul(10);
    let mut run = (subset.len() / 2).max(1);
    loop {
        let mut removed_any = false;
        let mut start = 0;
        while start < subset.len() {
            let end = (start + run).min(subset.len());
            let removed: HashSet<u32> = subset[start..end]
                .iter()
                .filter_map(|&i| match candidates[i].action {
                    Action::Write(value) => Some(value),
                    Action::Read(_) => None,
                })
                .collect();
            let smaller: Vec<usize> = subset
                .iter()
                .enumerate()
                .filter(|&(position, &i)| {
                    let in_run = (start..end).contains(&position);
                    let reads_removed = matches!(candidates[i].action, Action::Read(v) if removed.contains(&v));
                    !in_run && !reads_removed
                })
                .map(|(_, &i)| i)
                .collect();
            let (search, states) = linearizable(&windows(candidates, &smaller), per_search.min(budget));
            // Charge at least the size of the search, so that quick failures are not free.
            budget = budget.saturating_sub(states.max(smaller.len() as u64));
            if search == Search::NotLinearizable {
                subset = smaller;
                removed_any = true;
            } else {
                start = end;
            }
            if budget == 0 {
                return subset;
            }
        }
        if !removed_any {
            if run == 1 {
                return subset;
            }
            run = (run / 2).max(1);
        }
        run = run.min((subset.len() / 2).max(1));
    }
}

/// The anomaly for the non-linearizable `witness`, with a headline for the usual shapes.
fn explain(key: &str, candidates: &[Candidate], witness: &[usize], all: &[&Op]) -> Anomaly {
    let mut involved: Vec<&Candidate> = witness.iter().map(|&i| &candidates[i]).collect();
    involved.sort_by_key(|c| (c.invoked, c.op.id));
    let writes: Vec<&Op> = involved.iter().filter(|c| c.op.is_write()).map(|c| c.op).collect();
    let reads: Vec<&Op> = involved.iter().filter(|c| !c.op.is_write()).map(|c| c.op).collect();
    let shown = |read: &Op| match read.read_value().flatten() {
        Some(value) => format!("{value:?}"),
        None => "absent".to_owned(),
    };
    let headline = match (reads.as_slice(), writes.as_slice()) {
        ([read], []) => {
            let value = read.read_value().flatten().unwrap_or_default();
            let failed = all.iter().any(|op| op.written_value() == Some(value) && op.outcome == Outcome::Failed);
            if failed {
                format!("read #{} returned {value:?}, written only by a write that failed", read.id.0)
            } else {
                format!("read #{} returned {value:?}, which no write to this key wrote", read.id.0)
            }
        }
        ([read], [write]) if read.read_value().flatten().is_some() => {
            format!("read #{} returned {} before write #{} of it was invoked", read.id.0, shown(read), write.id.0)
        }
        ([read], [write]) => format!(
            "read #{} found the key absent after write #{} had been acknowledged: a lost or stale write",
            read.id.0, write.id.0
        ),
        ([read], [old, new]) | ([read], [new, old])
            if old.written_value() == read.read_value().flatten() && new.written_value().is_some() =>
        {
            format!(
                "stale read: read #{} returned {} (written by #{}) although write #{} of {:?} had to take effect \
                 after it and before the read",
                read.id.0,
                shown(read),
                old.id.0,
                new.id.0,
                new.written_value().unwrap_or_default()
            )
        }
        ([first, second], _) if first.completed.is_some_and(|done| done < second.invoked) => format!(
            "reads went back in time: read #{} returned {}, then read #{}, invoked after it completed, returned {}",
            first.id.0,
            shown(first),
            second.id.0,
            shown(second)
        ),
        _ => format!(
            "no order of these {} operations agrees with both a register and their real-time order",
            involved.len()
        ),
    };
    let ops: Vec<Op> = involved.iter().map(|c| c.op.clone()).collect();
    Anomaly {
        key: key.to_owned(),
        kind: AnomalyKind::NotLinearizable,
        explanation: format!("{headline}\n{}", describe(&ops)),
        ops,
    }
}

/// The operations, one a line, then which of them completed before which others were invoked.
fn describe(ops: &[Op]) -> String {
    const SHOWN: usize = 16;
    let mut lines: Vec<String> = ops.iter().take(SHOWN).map(|op| format!("  {}", describe_op(op))).collect();
    if ops.len() > SHOWN {
        lines.push(format!("  ... and {} more operations", ops.len() - SHOWN));
        return lines.join("\n");
    }
    for a in ops {
        let Some(done) = a.completed else { continue };
        let after: Vec<String> = ops.iter().filter(|b| b.invoked > done).map(|b| format!("#{}", b.id.0)).collect();
        if !after.is_empty() {
            lines.push(format!("  #{} completed before {} invoked", a.id.0, after.join(", ")));
        }
    }
    lines.join("\n")
}

fn describe_op(op: &Op) -> String {
    let what = match &op.kind {
        OpKind::Write { value } => format!("write {value:?}"),
        OpKind::Read { consistency } => format!("read ({})", consistency.as_query()),
    };
    let outcome = match (&op.outcome, op.read_value()) {
        (_, Some(Some(value))) => format!("-> {value:?}"),
        (_, Some(None)) => "-> absent".to_owned(),
        (Outcome::Ok(_), None) => "ok".to_owned(),
        (Outcome::Failed, None) => "failed".to_owned(),
        (Outcome::Unknown, None) => "indeterminate".to_owned(),
    };
    let completed = match op.completed {
        Some(t) => millis(t),
        None => "never".to_owned(),
    };
    format!("#{} client {} {what} {outcome} [{} .. {completed}]", op.id.0, op.client, millis(op.invoked))
}

fn millis(nanos: u64) -> String {
    format!("{}.{:06}ms", nanos / 1_000_000, nanos % 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::super::history::{Ack, OpId};
    use super::*;
    use std::time::{Duration, Instant};

    /// Assigns ids in the order given.
    fn history(mut ops: Vec<Op>) -> Vec<Op> {
        for (i, op) in ops.iter_mut().enumerate() {
            op.id = OpId(i);
            op.client = i as u64;
        }
        ops
    }

    fn op(key: &str, kind: OpKind, invoked: u64, completed: Option<u64>, outcome: Outcome) -> Op {
        Op { id: OpId(0), client: 0, key: key.to_owned(), kind, invoked, completed, outcome, node: None }
    }

    fn write_op(value: &str, invoked: u64, completed: Option<u64>, outcome: Outcome) -> Op {
        op("k", OpKind::Write { value: value.to_owned() }, invoked, completed, outcome)
    }

    /// An acknowledged write to "k".
    fn w(value: &str, invoked: u64, completed: u64) -> Op {
        write_op(value, invoked, Some(completed), Outcome::written())
    }

    /// An indeterminate write to "k".
    fn w_unknown(value: &str, invoked: u64, completed: Option<u64>) -> Op {
        write_op(value, invoked, completed, Outcome::Unknown)
    }

    fn read_at(consistency: Consistency, value: Option<&str>, invoked: u64, completed: u64) -> Op {
        op("k", OpKind::Read { consistency }, invoked, Some(completed), Outcome::read(value))
    }

    /// An answered linearizable read of "k".
    fn r(value: Option<&str>, invoked: u64, completed: u64) -> Op {
        read_at(Consistency::Linearizable, value, invoked, completed)
    }

    fn ids(anomaly: &Anomaly) -> Vec<usize> {
        anomaly.ops.iter().map(|op| op.id.0).collect()
    }

    #[track_caller]
    fn assert_linearizable(ops: Vec<Op>) -> Report {
        let report = check(&history(ops));
        assert!(report.is_ok(), "{report}");
        assert_eq!(report.timed_out().count(), 0, "{report}");
        report
    }

    #[track_caller]
    fn assert_anomaly(ops: Vec<Op>) -> Anomaly {
        let report = check(&history(ops));
        assert_eq!(report.anomaly_count(), 1, "{report}");
        report.anomalies[0].clone()
    }

    #[test]
    fn empty_history_passes() {
        let report = check(&[]);
        assert!(report.is_ok());
        assert_eq!(report.key_count(), 0);
    }

    #[test]
    fn sequential_history_passes() {
        assert_linearizable(vec![
            r(None, 0, 5),
            w("a", 10, 20),
            r(Some("a"), 30, 40),
            w("b", 50, 60),
            r(Some("b"), 70, 80),
        ]);
    }

    #[test]
    fn concurrent_writes_may_take_effect_in_either_order() {
        for last in ["a", "b"] {
            assert_linearizable(vec![w("a", 0, 10), w("b", 5, 15), r(Some(last), 20, 30), r(Some(last), 40, 50)]);
        }
    }

    #[test]
    fn reads_overlapping_a_write_may_see_the_old_or_the_new_value() {
        for (first, second) in [("a", "a"), ("a", "b"), ("b", "b")] {
            assert_linearizable(vec![
                w("a", 0, 10),
                w("b", 20, 100),
                r(Some(first), 30, 40),
                r(Some(second), 50, 60),
                r(Some("b"), 110, 120),
            ]);
        }
        assert_linearizable(vec![r(None, 0, 10), w("a", 5, 15), r(Some("a"), 8, 20)]);
    }

    #[test]
    fn touching_windows_count_as_overlapping() {
        assert_linearizable(vec![w("a", 0, 10), r(None, 10, 20)]);
    }

    #[test]
    fn indeterminate_write_may_show_up_later() {
        assert_linearizable(vec![
            w("a", 0, 10),
            w_unknown("b", 20, Some(30)),
            r(Some("a"), 40, 50),
            r(Some("b"), 100, 110),
            r(Some("b"), 120, 130),
        ]);
        assert_linearizable(vec![w_unknown("a", 0, None), r(None, 5, 10), r(Some("a"), 1_000, 1_010)]);
    }

    #[test]
    fn indeterminate_write_may_never_take_effect() {
        let report = assert_linearizable(vec![
            w("a", 0, 10),
            w_unknown("b", 20, Some(30)),
            w_unknown("c", 25, None),
            r(Some("a"), 40, 50),
            r(Some("a"), 100, 110),
        ]);
        assert_eq!(report.ops_checked(), 5);
    }

    #[test]
    fn failed_ops_and_unknown_reads_are_dropped() {
        let mut failed_read = r(Some("zzz"), 30, 35);
        failed_read.outcome = Outcome::Failed;
        let mut unknown_read = r(Some("zzz"), 36, 37);
        unknown_read.outcome = Outcome::Unknown;
        let report = assert_linearizable(vec![
            w("a", 0, 10),
            write_op("b", 20, Some(25), Outcome::Failed),
            failed_read,
            unknown_read,
            r(Some("a"), 40, 50),
        ]);
        assert_eq!(report.ops_dropped(), 3);
        assert_eq!(report.ops_checked(), 2);
    }

    #[test]
    fn lease_reads_are_checked_as_linearizable() {
        assert_linearizable(vec![w("a", 0, 10), read_at(Consistency::Lease, Some("a"), 20, 30)]);
        assert_anomaly(vec![w("a", 0, 10), w("b", 20, 30), read_at(Consistency::Lease, Some("a"), 40, 50)]);
    }

    #[test]
    fn stale_local_reads_pass() {
        let report = assert_linearizable(vec![
            w("a", 0, 10),
            w("b", 20, 30),
            read_at(Consistency::Local, Some("a"), 40, 50),
            read_at(Consistency::Local, None, 60, 70),
            read_at(Consistency::Local, Some("b"), 80, 90),
            read_at(Consistency::Local, Some("c"), 95, 100),
            w_unknown("c", 92, None),
        ]);
        assert_eq!(report.keys[0].local_reads_checked, 4);
    }

    #[test]
    fn local_reads_of_values_never_written_are_anomalies() {
        let never = assert_anomaly(vec![w("a", 0, 10), read_at(Consistency::Local, Some("x"), 20, 30)]);
        assert_eq!(never.kind, AnomalyKind::LocalRead);
        assert_eq!(ids(&never), vec![1]);
        assert!(never.explanation.contains("no write"), "{}", never.explanation);

        let failed = assert_anomaly(vec![
            write_op("a", 0, Some(10), Outcome::Failed),
            read_at(Consistency::Local, Some("a"), 20, 30),
        ]);
        assert!(failed.explanation.contains("failed"), "{}", failed.explanation);

        let future = assert_anomaly(vec![read_at(Consistency::Local, Some("a"), 0, 10), w("a", 20, 30)]);
        assert_eq!(ids(&future), vec![0, 1]);
    }

    #[test]
    fn keys_are_independent() {
        let mut ops = vec![w("a", 0, 10), r(Some("a"), 20, 30)];
        let mut other = r(None, 40, 50);
        other.key = "other".to_owned();
        ops.push(other);
        let report = assert_linearizable(ops);
        assert_eq!(report.key_count(), 2);
        assert_eq!(report.ops_checked(), 3);
    }

    #[test]
    fn stale_read_after_an_acknowledged_write_is_caught() {
        let anomaly = assert_anomaly(vec![
            w("a", 0, 10),
            r(Some("a"), 12, 14),
            w("b", 20, 30),
            r(Some("b"), 32, 34),
            r(Some("a"), 40, 50),
            r(Some("a"), 60, 70),
        ]);
        assert_eq!(anomaly.kind, AnomalyKind::NotLinearizable);
        // Shrunk to the writes and one stale read.
        assert_eq!(anomaly.ops.len(), 3, "{}", anomaly.explanation);
        assert_eq!(&ids(&anomaly)[..2], &[0, 2]);
        assert!(anomaly.explanation.starts_with("stale read"), "{}", anomaly.explanation);
    }

    #[test]
    fn read_of_a_value_never_written_is_caught() {
        let anomaly = assert_anomaly(vec![w("a", 0, 10), r(Some("a"), 20, 30), r(Some("zzz"), 40, 50)]);
        assert_eq!(ids(&anomaly), vec![2]);
        assert!(anomaly.explanation.contains("no write"), "{}", anomaly.explanation);

        let failed = assert_anomaly(vec![write_op("a", 0, Some(10), Outcome::Failed), r(Some("a"), 20, 30)]);
        assert_eq!(ids(&failed), vec![1]);
        assert!(failed.explanation.contains("failed"), "{}", failed.explanation);
    }

    #[test]
    fn read_before_the_write_was_invoked_is_caught() {
        let anomaly = assert_anomaly(vec![r(Some("a"), 0, 10), w("a", 20, 30)]);
        assert_eq!(ids(&anomaly), vec![0, 1]);
        assert!(anomaly.explanation.contains("before write #1"), "{}", anomaly.explanation);
    }

    #[test]
    fn sequential_reads_going_back_in_time_are_caught() {
        // The second write overlaps both reads, so each read alone is fine.
        let anomaly = assert_anomaly(vec![w("a", 0, 10), w("b", 20, 100), r(Some("b"), 30, 40), r(Some("a"), 50, 60)]);
        assert_eq!(ids(&anomaly), vec![0, 1, 2, 3]);
        assert!(anomaly.explanation.starts_with("reads went back in time"), "{}", anomaly.explanation);

        // Back to absent.
        let absent = assert_anomaly(vec![w("a", 0, 100), r(Some("a"), 10, 20), r(None, 30, 40)]);
        assert_eq!(ids(&absent), vec![0, 1, 2]);
    }

    #[test]
    fn lost_acknowledged_write_is_caught_by_a_final_read() {
        let absent = assert_anomaly(vec![w("a", 0, 10), r(None, 1_000, 1_010)]);
        assert!(absent.explanation.contains("found the key absent"), "{}", absent.explanation);

        let lost =
            assert_anomaly(vec![w("a", 0, 10), w("b", 20, 30), w_unknown("c", 40, None), r(Some("a"), 1_000, 1_010)]);
        assert_eq!(ids(&lost), vec![0, 1, 3]);
    }

    #[test]
    fn observing_a_value_then_an_older_one_is_caught() {
        // The indeterminate write showed up, then the value before it came back.
        let anomaly = assert_anomaly(vec![
            w("a", 0, 10),
            w_unknown("b", 20, Some(30)),
            r(Some("b"), 40, 50),
            r(Some("a"), 60, 70),
        ]);
        assert_eq!(ids(&anomaly), vec![0, 1, 2, 3]);
        // Two concurrent writes cannot be observed in one order, then the other.
        assert_anomaly(vec![
            w("a", 0, 10),
            w("b", 5, 15),
            r(Some("a"), 20, 25),
            r(Some("b"), 30, 35),
            r(Some("a"), 40, 45),
        ]);
    }

    #[test]
    fn report_counts_and_prints() {
        let mut ops =
            vec![w("a", 0, 10), w("b", 20, 30), r(Some("a"), 40, 50), write_op("x", 1, Some(2), Outcome::Failed)];
        let mut other = r(None, 0, 1);
        other.key = "other".to_owned();
        ops.push(other);
        let report = check(&history(ops));
        assert_eq!((report.key_count(), report.ops_checked(), report.ops_dropped()), (2, 4, 1));
        assert_eq!(report.anomaly_count(), 1);
        assert_eq!(report.keys[0].verdict, Verdict::NotLinearizable);
        assert_eq!(report.keys[1].verdict, Verdict::Linearizable);
        let text = report.to_string();
        assert!(text.contains("2 keys, 4 operations checked (1 dropped), 1 anomalies"), "{text}");
        assert!(text.contains("ANOMALY on key \"k\""), "{text}");
        assert!(text.contains("#0 completed before #1, #2 invoked"), "{text}");
    }

    #[test]
    fn search_budget_gives_up_without_an_anomaly() {
        // Thirty concurrent writes and a read of a value none wrote: every subset is a state.
        let mut ops: Vec<Op> = (0..30).map(|i| w(&format!("v{i}"), i, 100 + i)).collect();
        ops.push(r(Some("v0"), 50, 1_000));
        ops.push(r(Some("nobody"), 2_000, 2_010));
        let history = history(ops);
        let report = check_with(&history, &Options { state_budget: 10_000, shrink: true });
        assert!(report.is_ok(), "{report}");
        assert_eq!(report.timed_out().count(), 1);
        assert_eq!(report.keys[0].verdict, Verdict::TimedOut);
        assert_eq!(report.states(), 10_001);
        assert!(report.to_string().contains("NOT CHECKED"));
    }

    /// splitmix64: a small deterministic generator for the randomized tests.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            mix(self.0)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// A history of `clients` clients running `per_client` operations each on `keys` keys of a
    /// real atomic register: each operation takes effect at a random instant within its window
    /// (an indeterminate write possibly later, or never); local reads see a random older version.
    fn simulate(seed: u64, clients: u64, keys: u64, per_client: u64) -> Vec<Op> {
        let mut rng = Rng(seed);
        // (op, instant it takes effect, or None)
        let mut ops: Vec<(Op, Option<u64>)> = Vec::new();
        for client in 0..clients {
            let mut t = rng.below(50);
            for i in 0..per_client {
                let invoked = t + rng.below(30);
                let duration = 1 + rng.below(150);
                let end = invoked + duration;
                let effect = invoked + rng.below(duration + 1);
                let key = format!("k{}", rng.below(keys));
                let roll = rng.below(100);
                let (kind, outcome, completed, effect) = if roll < 40 {
                    let kind = OpKind::Write { value: format!("c{client}-{i}") };
                    match rng.below(100) {
                        0..=79 => (kind, Outcome::written(), Some(end), Some(effect)),
                        80..=86 => (kind, Outcome::Failed, Some(end), None),
                        87..=92 => (kind, Outcome::Unknown, Some(end), Some(invoked + rng.below(4 * duration))),
                        93..=96 => (kind, Outcome::Unknown, None, Some(invoked + rng.below(4 * duration))),
                        _ => (kind, Outcome::Unknown, Some(end), None),
                    }
                } else {
                    let consistency = Consistency::ALL[(roll % 3) as usize];
                    let outcome = match rng.below(20) {
                        0 => Outcome::Failed,
                        1 => Outcome::Unknown,
                        _ => Outcome::read(None),
                    };
                    let effect = matches!(outcome, Outcome::Ok(_)).then_some(effect);
                    (OpKind::Read { consistency }, outcome, Some(end), effect)
                };
                let op = Op { id: OpId(0), client, key, kind, invoked, completed, outcome, node: None };
                ops.push((op, effect));
                t = end;
            }
        }
        let mut order: Vec<usize> = (0..ops.len()).filter(|&i| ops[i].1.is_some()).collect();
        order.sort_by_key(|&i| (ops[i].1, i));
        let mut versions: HashMap<String, Vec<String>> = HashMap::new();
        for i in order {
            let (op, _) = &mut ops[i];
            let versions = versions.entry(op.key.clone()).or_default();
            match &op.kind {
                OpKind::Write { value } => versions.push(value.clone()),
                OpKind::Read { consistency: Consistency::Local } => {
                    let seen = rng.below(versions.len() as u64 + 1) as usize;
                    let value = seen.checked_sub(1).map(|v| versions[v].clone());
                    op.outcome = Outcome::Ok(Ack::Read(value));
                }
                OpKind::Read { .. } => op.outcome = Outcome::Ok(Ack::Read(versions.last().cloned())),
            }
        }
        let mut ops: Vec<Op> = ops.into_iter().map(|(op, _)| op).collect();
        ops.sort_by_key(|op| (op.invoked, op.client));
        for (i, op) in ops.iter_mut().enumerate() {
            op.id = OpId(i);
        }
        ops
    }

    /// Makes a linearizable or lease read return the value of an acknowledged write that was
    /// overwritten by another acknowledged write before the read was invoked. Returns the read.
    fn make_stale(ops: &mut [Op], rng: &mut Rng) -> Option<usize> {
        let acked: Vec<&Op> = ops.iter().filter(|op| op.is_write() && op.outcome == Outcome::written()).collect();
        let reads: Vec<&Op> = ops
            .iter()
            .filter(|op| {
                matches!(op.kind, OpKind::Read { consistency } if consistency != Consistency::Local)
                    && matches!(op.outcome, Outcome::Ok(_))
            })
            .collect();
        let offset = rng.below(reads.len().max(1) as u64) as usize;
        let mutation = (0..reads.len()).find_map(|k| {
            let read = reads[(offset + k) % reads.len()];
            let done_before = |w: &&&Op, t: u64| w.key == read.key && w.completed.unwrap() < t;
            // Every acknowledged write completed before the latest one invoked is older.
            let new = acked.iter().filter(|w| done_before(w, read.invoked)).max_by_key(|w| w.invoked)?;
            let old = acked
                .iter()
                .filter(|w| done_before(w, new.invoked) && w.written_value() != read.read_value().flatten())
                .max_by_key(|w| w.invoked)?;
            Some((read.id.0, old.written_value().unwrap().to_owned()))
        });
        let (read, value) = mutation?;
        ops[read].outcome = Outcome::Ok(Ack::Read(Some(value)));
        Some(read)
    }

    #[test]
    fn randomized_register_histories_pass_and_stale_mutations_fail() {
        let mut mutated = 0;
        for seed in 0..300 {
            let ops = simulate(seed, 4, 1 + seed % 3, 12);
            let report = check(&ops);
            assert!(report.is_ok(), "seed {seed}: {report}");
            assert_eq!(report.timed_out().count(), 0, "seed {seed}: {report}");

            let mut stale = ops.clone();
            let mut rng = Rng(seed ^ 0xdead_beef);
            let Some(read) = make_stale(&mut stale, &mut rng) else { continue };
            mutated += 1;
            let report = check(&stale);
            assert_eq!(report.anomaly_count(), 1, "seed {seed}: mutated read #{read} not caught\n{report}");
            let anomaly = &report.anomalies[0];
            assert_eq!(anomaly.kind, AnomalyKind::NotLinearizable);
            assert!(anomaly.ops.iter().any(|op| op.id.0 == read), "seed {seed}: witness without the read\n{report}");
            assert!(anomaly.ops.len() <= 6, "seed {seed}: witness not shrunk\n{report}");
        }
        assert!(mutated > 150, "only {mutated} histories could be mutated");
    }

    #[test]
    fn long_histories_of_one_key_stay_linear() {
        let ops = simulate(11, 5, 1, 4_000);
        let started = Instant::now();
        let report = check(&ops);
        let elapsed = started.elapsed();
        assert!(report.is_ok(), "{report}");
        assert_eq!(report.timed_out().count(), 0);
        assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");

        let mut stale = ops;
        assert!(make_stale(&mut stale, &mut Rng(3)).is_some());
        let report = check(&stale);
        assert_eq!(report.anomaly_count(), 1, "{report}");
        assert!(report.anomalies[0].ops.len() <= 6, "{report}");
    }

    #[test]
    fn two_thousand_operations_check_well_under_a_second() {
        let ops = simulate(7, 5, 20, 400);
        assert_eq!(ops.len(), 2_000);
        let started = Instant::now();
        let report = check(&ops);
        let elapsed = started.elapsed();
        assert!(report.is_ok(), "{report}");
        assert_eq!(report.key_count(), 20);
        assert_eq!(report.timed_out().count(), 0);
        assert!(elapsed < Duration::from_millis(500), "took {elapsed:?}");
    }

    /// The reference: whether some order of `ops` (one key, no local reads), dropping any
    /// indeterminate writes, respects real time and a register. Plain backtracking, no pruning
    /// beyond real time: for small histories only.
    fn brute_force(ops: &[&Op]) -> bool {
        fn last(op: &Op) -> u64 {
            if op.outcome == Outcome::Unknown {
                NEVER
            } else {
                op.completed.unwrap_or(NEVER)
            }
        }
        fn search(ops: &[&Op], left: &mut Vec<bool>, value: Option<&str>) -> bool {
            if !left.iter().any(|&l| l) {
                return true;
            }
            for i in 0..ops.len() {
                if !left[i] {
                    continue;
                }
                left[i] = false;
                // Dropping an indeterminate write.
                if ops[i].is_write() && ops[i].outcome == Outcome::Unknown && search(ops, left, value) {
                    return true;
                }
                let first = (0..ops.len()).all(|j| !left[j] || last(ops[j]) >= ops[i].invoked);
                let next = match ops[i].read_value() {
                    Some(read) => (read == value).then_some(value),
                    None => Some(ops[i].written_value()),
                };
                if let (true, Some(next)) = (first, next) {
                    if search(ops, left, next) {
                        return true;
                    }
                }
                left[i] = true;
            }
            false
        }
        let ops: Vec<&Op> = ops
            .iter()
            .copied()
            .filter(|op| op.outcome != Outcome::Failed && (op.is_write() || matches!(op.outcome, Outcome::Ok(_))))
            .collect();
        search(&ops, &mut vec![true; ops.len()], None)
    }

    /// Small random histories of one key: any values read, any outcomes, any times.
    fn small_history(rng: &mut Rng, len: u64) -> Vec<Op> {
        let mut ops = Vec::new();
        for i in 0..len {
            let invoked = rng.below(40);
            let completed = (rng.below(8) != 0).then(|| invoked + rng.below(30));
            let (kind, outcome) = if rng.below(2) == 0 {
                let outcome = match rng.below(6) {
                    0 => Outcome::Failed,
                    1 | 2 => Outcome::Unknown,
                    _ => Outcome::written(),
                };
                (OpKind::Write { value: format!("v{i}") }, outcome)
            } else {
                let consistency = if rng.below(2) == 0 { Consistency::Linearizable } else { Consistency::Lease };
                let value = match rng.below(len + 2) {
                    0 => None,
                    v => Some(format!("v{}", v - 1)),
                };
                let outcome = if rng.below(10) == 0 { Outcome::Unknown } else { Outcome::Ok(Ack::Read(value)) };
                (OpKind::Read { consistency }, outcome)
            };
            let outcome = if completed.is_none() && outcome != Outcome::Failed { Outcome::Unknown } else { outcome };
            ops.push(op("k", kind, invoked, completed, outcome));
        }
        history(ops)
    }

    #[test]
    fn agrees_with_brute_force_and_shrinks_to_minimal_witnesses() {
        let mut rng = Rng(17);
        let (mut passed, mut failed) = (0, 0);
        for case in 0..1_500 {
            let ops = small_history(&mut rng, 3 + case % 5);
            let refs: Vec<&Op> = ops.iter().collect();
            let expected = brute_force(&refs);
            let report = check(&ops);
            assert_eq!(report.is_ok(), expected, "case {case}: {ops:#?}\n{report}");
            if expected {
                passed += 1;
                continue;
            }
            failed += 1;
            // The witness is non-linearizable, and removing any one of its operations (with the
            // reads of a removed write) leaves a linearizable history.
            let witness: Vec<&Op> = report.anomalies[0].ops.iter().collect();
            assert!(!brute_force(&witness), "case {case}: {report}");
            for removed in &witness {
                let rest: Vec<&Op> = witness
                    .iter()
                    .copied()
                    .filter(|op| {
                        op.id != removed.id
                            && !(removed.written_value().is_some()
                                && op.read_value().flatten() == removed.written_value())
                    })
                    .collect();
                assert!(brute_force(&rest), "case {case}: witness not minimal without #{}\n{report}", removed.id.0);
            }
        }
        assert!(passed > 300 && failed > 300, "{passed} passed, {failed} failed");
    }
}
