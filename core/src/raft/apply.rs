//! The application cursor: turns committed log entries into deliveries, in index order and
//! exactly once, resolves two-phase proposals by their markers (the first marker for a ticket
//! wins), and answers the clients waiting on indexes.

use super::ready::{ClientReply, Delivery, ProposalCommitted};
use crate::entry::{EntryKind, LogEntry};
use crate::error::{ProposeError, TicketOutcome};
use crate::hlc::Ticket;
use crate::ids::{LogIndex, Term};
use crate::snapshot::SnapshotMeta;
use std::collections::{BTreeMap, HashMap};

/// What a client waits for at an index.
#[derive(Clone, Debug)]
pub(crate) enum WaitFor {
    /// A proposal whose last entry is at this index.
    Proposal { first_index: LogIndex },
    /// A commit or rollback marker at this index.
    Resolution { requested: TicketOutcome },
}

#[derive(Clone, Debug)]
pub(crate) struct Waiter {
    pub(crate) ticket: Ticket,
    pub(crate) term: Term,
    pub(crate) wait: WaitFor,
}

/// Delivery state that survives across turns (rebuilt by replay on restore).
#[derive(Clone, Debug, Default)]
pub(crate) struct Applier {
    /// Raft-committed two-phase entries awaiting their marker, by ticket.
    pub(crate) held: BTreeMap<Ticket, Vec<LogEntry>>,
    /// Tickets resolved by a committed marker, with the marker's index (dropped once a snapshot
    /// covers it).
    pub(crate) resolved: HashMap<Ticket, (TicketOutcome, LogIndex)>,
    /// Newest ticket issued by an applied entry.
    pub(crate) last_ticket: Ticket,
    /// Tickets at or below this were compacted: not held and not resolved means forgotten.
    pub(crate) compacted_tickets: Ticket,
    /// Clients waiting for the entry at an index to be applied.
    pub(crate) waiters: BTreeMap<LogIndex, Vec<Waiter>>,
    /// The partition generation: the highest applied [`EntryKind::Fence`].
    pub(crate) generation: u64,
}

impl Applier {
    /// Apply one committed entry.
    pub(crate) fn apply(
        &mut self,
        entry: &LogEntry,
        restored: bool,
        deliveries: &mut Vec<Delivery>,
        replies: &mut Vec<ClientReply>,
    ) {
        let mut moved = None;
        if entry.issues_ticket() {
            self.last_ticket = self.last_ticket.max(entry.ticket);
        }
        match entry.kind {
            EntryKind::Application { auto_commit: true } => {
                deliveries.push(Delivery { entry: entry.clone(), released_at: entry.index, restored })
            }
            EntryKind::Guarded { generation } if generation >= self.generation => {
                deliveries.push(Delivery { entry: entry.clone(), released_at: entry.index, restored })
            }
            EntryKind::Guarded { generation } => {
                moved = Some(ProposeError::PartitionMoved { expected: generation, current: self.generation })
            }
            EntryKind::Fence { generation } => self.generation = self.generation.max(generation),
            EntryKind::Application { auto_commit: false } => {
                if !self.resolved.contains_key(&entry.ticket) {
                    self.held.entry(entry.ticket).or_default().push(entry.clone());
                }
            }
            EntryKind::Barrier | EntryKind::Config => {}
            EntryKind::CommitMarker | EntryKind::RollbackMarker => {
                let outcome = if entry.kind == EntryKind::CommitMarker {
                    TicketOutcome::Committed
                } else {
                    TicketOutcome::RolledBack
                };
                // A marker for a ticket that holds nothing and was never resolved resolves nothing:
                // its waiter is told the ticket is unknown (a decision backed by the committed log).
                let known = self.held.contains_key(&entry.ticket);
                if let (true, std::collections::hash_map::Entry::Vacant(slot)) =
                    (known, self.resolved.entry(entry.ticket))
                {
                    slot.insert((outcome, entry.index));
                    let held = self.held.remove(&entry.ticket).unwrap_or_default();
                    if outcome == TicketOutcome::Committed {
                        deliveries.extend(held.into_iter().map(|held_entry| Delivery {
                            entry: held_entry,
                            released_at: entry.index,
                            restored,
                        }));
                    }
                }
            }
        }
        self.answer_waiters(entry, moved, replies);
    }

    fn answer_waiters(&mut self, entry: &LogEntry, moved: Option<ProposeError>, replies: &mut Vec<ClientReply>) {
        let Some(waiters) = self.waiters.remove(&entry.index) else { return };
        for waiter in waiters {
            let same = waiter.term == entry.term && waiter.ticket == entry.ticket;
            replies.push(match waiter.wait {
                WaitFor::Proposal { first_index } => ClientReply::Proposal {
                    ticket: waiter.ticket,
                    result: if let (true, Some(moved)) = (same, &moved) {
                        Err(moved.clone())
                    } else if same {
                        Ok(ProposalCommitted { ticket: waiter.ticket, first_index, last_index: entry.index })
                    } else {
                        Err(ProposeError::Superseded { index: entry.index })
                    },
                },
                WaitFor::Resolution { requested } => ClientReply::Resolution {
                    ticket: waiter.ticket,
                    requested,
                    result: self.resolution_result(waiter.ticket, requested, entry.index, same),
                },
            });
        }
    }

    fn resolution_result(
        &self,
        ticket: Ticket,
        requested: TicketOutcome,
        index: LogIndex,
        same: bool,
    ) -> Result<TicketOutcome, ProposeError> {
        // A marker that applied for a known ticket recorded its outcome; a waiter whose own marker
        // applied (same term and ticket) without an outcome asked about an unknown ticket; anything
        // else was superseded.
        match self.resolved.get(&ticket) {
            Some(&(outcome, _)) if outcome == requested => Ok(outcome),
            Some(&(outcome, _)) => Err(ProposeError::AlreadyResolved { ticket, outcome }),
            None if same && self.is_compacted(ticket) => Err(ProposeError::TicketCompacted(ticket)),
            None if same => Err(ProposeError::UnknownTicket(ticket)),
            None => Err(ProposeError::Superseded { index }),
        }
    }

    /// The log was truncated from `from`: waiters at or above it will never see their entry.
    pub(crate) fn truncated(&mut self, from: LogIndex, replies: &mut Vec<ClientReply>) {
        let doomed = self.waiters.split_off(&from);
        supersede(doomed, replies);
    }

    /// Is `ticket` old enough that a snapshot may have dropped what was known about it?
    pub(crate) fn is_compacted(&self, ticket: Ticket) -> bool {
        !self.compacted_tickets.is_zero() && ticket <= self.compacted_tickets
    }

    /// Two-phase entries still held, in ticket order (what a snapshot must carry).
    pub(crate) fn held_entries(&self) -> Vec<LogEntry> {
        self.held.values().flatten().cloned().collect()
    }

    /// A snapshot through `index` was taken: resolutions at or below it are forgotten (asking
    /// again answers `TicketCompacted`).
    pub(crate) fn compacted(&mut self, index: LogIndex, last_ticket: Ticket) {
        self.resolved.retain(|_, (_, at)| *at > index);
        self.compacted_tickets = self.compacted_tickets.max(last_ticket);
    }

    /// The state is replaced by a snapshot's: its held entries, generation and ticket horizon.
    /// Waiters at or below its index never see their entry applied here: they are told
    /// `Superseded` (retryable; the outcome is in the snapshot).
    pub(crate) fn install(&mut self, meta: &SnapshotMeta, replies: &mut Vec<ClientReply>) {
        self.held.clear();
        for entry in &meta.held {
            self.held.entry(entry.ticket).or_default().push(entry.clone());
        }
        self.resolved.clear();
        self.generation = meta.generation;
        self.last_ticket = meta.last_ticket;
        self.compacted_tickets = meta.last_ticket;
        let later = self.waiters.split_off(&(meta.index + 1));
        let covered = std::mem::replace(&mut self.waiters, later);
        supersede(covered, replies);
    }

    pub(crate) fn wait(&mut self, index: LogIndex, waiter: Waiter) {
        self.waiters.entry(index).or_default().push(waiter);
    }
}

/// Answer every waiter of `waiters` with `Superseded` at its index: its entry will never apply
/// here (truncated, or replaced by a snapshot).
fn supersede(waiters: BTreeMap<LogIndex, Vec<Waiter>>, replies: &mut Vec<ClientReply>) {
    for (index, waiters) in waiters {
        for waiter in waiters {
            let superseded = ProposeError::Superseded { index };
            replies.push(match waiter.wait {
                WaitFor::Proposal { .. } => ClientReply::Proposal { ticket: waiter.ticket, result: Err(superseded) },
                WaitFor::Resolution { requested } => {
                    ClientReply::Resolution { ticket: waiter.ticket, requested, result: Err(superseded) }
                }
            });
        }
    }
}
