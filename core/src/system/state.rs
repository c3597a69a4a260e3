//! [`SystemState`]: the partition map, the roster and the operation in progress, changed only by
//! [`SystemState::apply`].

use super::command::{SystemCommand, SystemError, SystemEvent};
use super::map::{PartitionInfo, PartitionMap, PartitionState};
use super::roster::{Member, MemberRole, Roster};
use crate::ids::{NodeId, PartitionId};
use serde::{Deserialize, Serialize};

/// The split or merge in progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Operation {
    /// `source` is being split at `boundary` into `target`.
    Split {
        /// Split partition.
        source: PartitionId,
        /// New partition.
        target: PartitionId,
        /// First hash that moves.
        boundary: u64,
    },
    /// `source` is being merged into `survivor`.
    Merge {
        /// Remaining partition.
        survivor: PartitionId,
        /// Absorbed partition.
        source: PartitionId,
    },
}

/// Everything partition 0 replicates.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemState {
    /// The partition map.
    pub map: PartitionMap,
    /// The members.
    pub roster: Roster,
    /// The split or merge in progress.
    pub pending: Option<Operation>,
}

impl SystemState {
    /// The state every node starts from: `partitions` user partitions and `voters` as members.
    pub fn genesis(partitions: u32, voters: impl IntoIterator<Item = (NodeId, String)>) -> Self {
        SystemState { map: PartitionMap::genesis(partitions), roster: Roster::genesis(voters), pending: None }
    }

    /// Apply one committed command. An error means nothing changed.
    pub fn apply(&mut self, command: &SystemCommand) -> Result<SystemEvent, SystemError> {
        let mut next = self.clone();
        let event = next.apply_in_place(command)?;
        match event {
            SystemEvent::RosterChanged => next.roster.version += 1,
            _ => next.map.version += 1,
        }
        *self = next;
        Ok(event)
    }

    fn live(&self, id: PartitionId) -> Result<&PartitionInfo, SystemError> {
        self.map.get(id).filter(|p| p.is_live()).ok_or(SystemError::UnknownPartition(id))
    }

    fn active(&self, id: PartitionId) -> Result<&PartitionInfo, SystemError> {
        let info = self.live(id)?;
        if info.state == PartitionState::Active {
            Ok(info)
        } else {
            Err(SystemError::NotActive(id))
        }
    }

    /// The one way a partition changes state: set it and bump its generation (the fence every
    /// guarded write and every executor restart compares against). Returns the entry so the
    /// caller can change its range in the same transition.
    fn transition(&mut self, id: PartitionId, state: PartitionState) -> &mut PartitionInfo {
        let info = self.map.get_mut(id).expect("partition checked before mutation");
        info.state = state;
        info.generation += 1;
        info
    }

    fn new_partition(&mut self, state: PartitionState) -> Result<PartitionId, SystemError> {
        let id = PartitionId(self.map.next_id);
        self.map.next_id = self.map.next_id.checked_add(1).ok_or(SystemError::IdsExhausted)?;
        self.map.partitions.insert(id, PartitionInfo { id, range: None, state, generation: 1 });
        Ok(id)
    }

    /// Dispatch by concern: the partition lifecycle, splits and merges, the roster.
    fn apply_in_place(&mut self, command: &SystemCommand) -> Result<SystemEvent, SystemError> {
        match command {
            SystemCommand::CreatePartition | SystemCommand::RemovePartition { .. } => self.apply_lifecycle(command),
            SystemCommand::Bootstrap { .. }
            | SystemCommand::AddLearner { .. }
            | SystemCommand::PromoteLearner { .. }
            | SystemCommand::RemoveNode { .. }
            | SystemCommand::SetApplicationAddress { .. } => self.apply_roster(command),
            _ => self.apply_operation(command),
        }
    }

    /// Creating and removing partitions.
    fn apply_lifecycle(&mut self, command: &SystemCommand) -> Result<SystemEvent, SystemError> {
        match *command {
            SystemCommand::CreatePartition => {
                Ok(SystemEvent::PartitionCreated(self.new_partition(PartitionState::Active)?))
            }
            SystemCommand::RemovePartition { id } => {
                if self.active(id)?.range.is_some() {
                    return Err(SystemError::RangeMismatch(id));
                }
                self.transition(id, PartitionState::Removed);
                Ok(SystemEvent::PartitionRemoved(id))
            }
            _ => unreachable!("dispatched by apply_in_place"),
        }
    }

    /// Splits and merges: begin, complete, abort (one operation at a time).
    fn apply_operation(&mut self, command: &SystemCommand) -> Result<SystemEvent, SystemError> {
        match *command {
            SystemCommand::BeginSplit { source, boundary } => {
                if self.pending.is_some() {
                    return Err(SystemError::OperationPending);
                }
                let range = self.active(source)?.range.ok_or(SystemError::RangeMismatch(source))?;
                let (_, moving) = range.split_at(boundary).ok_or(SystemError::BoundaryOutsideRange(boundary))?;
                let target = self.new_partition(PartitionState::Importing { source })?;
                self.transition(source, PartitionState::Splitting { target, boundary });
                self.pending = Some(Operation::Split { source, target, boundary });
                Ok(SystemEvent::SplitStarted { source, target, moving })
            }
            SystemCommand::CompleteSplit { source, target } => {
                let Some(Operation::Split { source: s, target: t, boundary }) = self.pending else {
                    return Err(SystemError::NoMatchingOperation);
                };
                if (s, t) != (source, target) {
                    return Err(SystemError::NoMatchingOperation);
                }
                let range = self.live(source)?.range.expect("a splitting partition owns a range");
                let (keep, moving) = range.split_at(boundary).expect("boundary checked when the split began");
                self.transition(source, PartitionState::Active).range = Some(keep);
                self.transition(target, PartitionState::Active).range = Some(moving);
                self.pending = None;
                Ok(SystemEvent::SplitCompleted { source, target })
            }
            SystemCommand::BeginMerge { survivor, source } => {
                if self.pending.is_some() {
                    return Err(SystemError::OperationPending);
                }
                if survivor == source {
                    return Err(SystemError::SamePartition);
                }
                let a = self.active(survivor)?.range.ok_or(SystemError::RangeMismatch(survivor))?;
                let b = self.active(source)?.range.ok_or(SystemError::RangeMismatch(source))?;
                a.join(&b).ok_or(SystemError::NotAdjacent(survivor, source))?;
                self.transition(survivor, PartitionState::Absorbing { source });
                self.transition(source, PartitionState::Merging { survivor });
                self.pending = Some(Operation::Merge { survivor, source });
                Ok(SystemEvent::MergeStarted { survivor, source })
            }
            SystemCommand::CompleteMerge { survivor, source } => {
                if self.pending != Some(Operation::Merge { survivor, source }) {
                    return Err(SystemError::NoMatchingOperation);
                }
                let a = self.live(survivor)?.range.expect("merging partitions own ranges");
                let b = self.live(source)?.range.expect("merging partitions own ranges");
                let joined = a.join(&b).expect("adjacency checked when the merge began");
                self.transition(survivor, PartitionState::Active).range = Some(joined);
                self.transition(source, PartitionState::Removed).range = None;
                self.pending = None;
                Ok(SystemEvent::MergeCompleted { survivor, source })
            }
            SystemCommand::AbortOperation => {
                match self.pending.take().ok_or(SystemError::NoMatchingOperation)? {
                    Operation::Split { source, target, .. } => {
                        self.transition(source, PartitionState::Active);
                        self.transition(target, PartitionState::Removed);
                    }
                    Operation::Merge { survivor, source } => {
                        for id in [survivor, source] {
                            self.transition(id, PartitionState::Active);
                        }
                    }
                }
                Ok(SystemEvent::OperationAborted)
            }
            _ => unreachable!("dispatched by apply_in_place"),
        }
    }

    /// The members of the cluster.
    fn apply_roster(&mut self, command: &SystemCommand) -> Result<SystemEvent, SystemError> {
        match *command {
            SystemCommand::Bootstrap { ref members } => {
                if !self.roster.members.is_empty() {
                    return Err(SystemError::AlreadyBootstrapped);
                }
                if members.is_empty() {
                    return Err(SystemError::NotBootstrapped);
                }
                let version = self.roster.version;
                self.roster = Roster::genesis(members.iter().cloned());
                self.roster.version = version;
                Ok(SystemEvent::RosterChanged)
            }
            SystemCommand::AddLearner { node, ref address } => {
                if self.roster.members.is_empty() {
                    return Err(SystemError::NotBootstrapped);
                }
                if self.roster.members.contains_key(&node) {
                    return Err(SystemError::AlreadyMember(node));
                }
                let member = Member { address: address.clone(), role: MemberRole::Learner, application_address: None };
                self.roster.members.insert(node, member);
                Ok(SystemEvent::RosterChanged)
            }
            SystemCommand::PromoteLearner { node } => {
                let member = self.roster.members.get_mut(&node).ok_or(SystemError::NotMember(node))?;
                if member.role != MemberRole::Learner {
                    return Err(SystemError::NotLearner(node));
                }
                member.role = MemberRole::Voter;
                Ok(SystemEvent::RosterChanged)
            }
            SystemCommand::RemoveNode { node } => {
                let member = self.roster.members.get(&node).ok_or(SystemError::NotMember(node))?;
                if member.role == MemberRole::Voter && self.roster.voters().len() == 1 {
                    return Err(SystemError::LastVoter(node));
                }
                self.roster.members.remove(&node);
                Ok(SystemEvent::RosterChanged)
            }
            SystemCommand::SetApplicationAddress { node, ref address } => {
                let member = self.roster.members.get_mut(&node).ok_or(SystemError::NotMember(node))?;
                member.application_address = address.clone();
                Ok(SystemEvent::RosterChanged)
            }
            _ => unreachable!("dispatched by apply_in_place"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::system::map::HashRange;

    fn state() -> SystemState {
        SystemState::genesis(2, [(NodeId(1), "a".into()), (NodeId(2), "b".into()), (NodeId(3), "c".into())])
    }

    fn p(n: u32) -> PartitionId {
        PartitionId(n)
    }

    #[test]
    fn a_split_moves_the_upper_range_to_a_new_partition() {
        let mut s = state();
        let range = s.map.get(p(1)).unwrap().range.unwrap();
        let boundary = range.start + (range.end - range.start) / 2;
        let started = s.apply(&SystemCommand::BeginSplit { source: p(1), boundary }).unwrap();
        assert_eq!(
            started,
            SystemEvent::SplitStarted {
                source: p(1),
                target: p(3),
                moving: HashRange { start: boundary, end: range.end }
            }
        );
        assert_eq!(s.map.get(p(1)).unwrap().generation, 2);
        assert_eq!(
            s.apply(&SystemCommand::BeginMerge { survivor: p(1), source: p(2) }),
            Err(SystemError::OperationPending)
        );
        assert_eq!(
            s.apply(&SystemCommand::CompleteSplit { source: p(1), target: p(4) }),
            Err(SystemError::NoMatchingOperation)
        );
        s.apply(&SystemCommand::CompleteSplit { source: p(1), target: p(3) }).unwrap();
        assert_eq!(s.map.get(p(1)).unwrap().range, Some(HashRange { start: range.start, end: boundary - 1 }));
        assert_eq!(s.map.get(p(3)).unwrap().range, Some(HashRange { start: boundary, end: range.end }));
        assert_eq!(s.map.route_hash(boundary).unwrap().id, p(3));
        assert_eq!(s.map.route_hash(boundary - 1).unwrap().id, p(1));
        assert_eq!(s.pending, None);
        assert_eq!(s.map.get(p(1)).unwrap().generation, 3);
    }

    #[test]
    fn members_record_their_application_address() {
        let mut s = state();
        let set = |node, address: Option<&str>| SystemCommand::SetApplicationAddress {
            node: NodeId(node),
            address: address.map(str::to_string),
        };
        assert_eq!(s.apply(&set(9, Some("http://x"))), Err(SystemError::NotMember(NodeId(9))));
        let version = s.roster.version;
        assert_eq!(s.apply(&set(2, Some("http://b"))), Ok(SystemEvent::RosterChanged));
        assert_eq!(s.roster.members[&NodeId(2)].application_address.as_deref(), Some("http://b"));
        assert_eq!(s.roster.version, version + 1);
        s.apply(&set(2, None)).unwrap();
        assert_eq!(s.roster.members[&NodeId(2)].application_address, None);
    }

    /// Every state change of a partition bumps its generation by exactly one; nothing else does.
    #[test]
    fn each_transition_bumps_the_generation_by_one() {
        let mut s = state();
        let half = |s: &SystemState, id| {
            let r = s.map.get(id).unwrap().range.unwrap();
            r.start + (r.end - r.start) / 2
        };
        type Step<'a> = Box<dyn Fn(&SystemState) -> SystemCommand + 'a>;
        let steps: Vec<Step<'_>> = vec![
            Box::new(|s| SystemCommand::BeginSplit { source: p(1), boundary: half(s, p(1)) }),
            Box::new(|_| SystemCommand::AbortOperation),
            Box::new(|s| SystemCommand::BeginSplit { source: p(1), boundary: half(s, p(1)) }),
            Box::new(|_| SystemCommand::CompleteSplit { source: p(1), target: p(4) }),
            Box::new(|_| SystemCommand::BeginMerge { survivor: p(1), source: p(4) }),
            Box::new(|_| SystemCommand::AbortOperation),
            Box::new(|_| SystemCommand::BeginMerge { survivor: p(4), source: p(2) }),
            Box::new(|_| SystemCommand::CompleteMerge { survivor: p(4), source: p(2) }),
            Box::new(|_| SystemCommand::CreatePartition),
            Box::new(|_| SystemCommand::RemovePartition { id: p(5) }),
        ];
        for step in steps {
            let before = s.clone();
            let command = step(&s);
            s.apply(&command).unwrap_or_else(|e| panic!("{command:?}: {e}"));
            for (id, info) in &s.map.partitions {
                match before.map.get(*id) {
                    Some(old) if old.state != info.state => {
                        assert_eq!(info.generation, old.generation + 1, "{command:?} on {id}")
                    }
                    Some(old) => assert_eq!(info.generation, old.generation, "{command:?} left {id} alone"),
                    None => assert_eq!(info.generation, 1, "{command:?} created {id}"),
                }
            }
        }
    }

    #[test]
    fn a_merge_joins_ranges_and_tombstones_the_source() {
        let mut s = state();
        let version = s.map.version;
        s.apply(&SystemCommand::BeginMerge { survivor: p(2), source: p(1) }).unwrap();
        s.apply(&SystemCommand::CompleteMerge { survivor: p(2), source: p(1) }).unwrap();
        assert_eq!(s.map.get(p(2)).unwrap().range, Some(HashRange::FULL));
        assert_eq!(s.map.get(p(1)).unwrap().state, PartitionState::Removed);
        assert_eq!(s.map.version, version + 2);
        assert_eq!(
            s.apply(&SystemCommand::BeginSplit { source: p(1), boundary: 5 }),
            Err(SystemError::UnknownPartition(p(1)))
        );
        let created = s.apply(&SystemCommand::CreatePartition).unwrap();
        assert_eq!(created, SystemEvent::PartitionCreated(p(3)), "ids are never reused");
    }

    #[test]
    fn aborting_restores_the_map_but_never_reuses_the_id() {
        let mut s = state();
        let before = s.map.get(p(1)).unwrap().range;
        s.apply(&SystemCommand::BeginSplit { source: p(1), boundary: 1 << 20 }).unwrap();
        s.apply(&SystemCommand::AbortOperation).unwrap();
        assert_eq!(s.map.get(p(1)).unwrap().range, before);
        assert_eq!(s.map.get(p(1)).unwrap().state, PartitionState::Active);
        assert_eq!(s.map.get(p(3)).unwrap().state, PartitionState::Removed);
        assert_eq!(s.apply(&SystemCommand::AbortOperation), Err(SystemError::NoMatchingOperation));
        assert_eq!(s.apply(&SystemCommand::CreatePartition).unwrap(), SystemEvent::PartitionCreated(p(4)));
    }

    #[test]
    fn refused_commands_change_nothing() {
        let mut s = state();
        let before = s.clone();
        let refused = [
            SystemCommand::BeginSplit { source: p(1), boundary: 0 },
            SystemCommand::BeginSplit { source: p(9), boundary: 5 },
            SystemCommand::BeginMerge { survivor: p(1), source: p(1) },
            SystemCommand::RemovePartition { id: p(1) },
            SystemCommand::CompleteMerge { survivor: p(1), source: p(2) },
            SystemCommand::PromoteLearner { node: NodeId(1) },
            SystemCommand::RemoveNode { node: NodeId(7) },
            SystemCommand::AddLearner { node: NodeId(2), address: "x".into() },
        ];
        for command in &refused {
            assert!(s.apply(command).is_err(), "{command:?} should be refused");
            assert_eq!(s, before, "{command:?} changed the state");
        }
    }

    #[test]
    fn the_roster_is_bootstrapped_once() {
        let mut s = SystemState::genesis(1, []);
        let add = SystemCommand::AddLearner { node: NodeId(4), address: "d".into() };
        assert_eq!(s.apply(&add), Err(SystemError::NotBootstrapped));
        let members = vec![(NodeId(1), "a".to_string()), (NodeId(2), "b".to_string())];
        s.apply(&SystemCommand::Bootstrap { members: members.clone() }).unwrap();
        assert_eq!(s.roster.voters(), vec![NodeId(1), NodeId(2)]);
        assert_eq!(s.apply(&SystemCommand::Bootstrap { members }), Err(SystemError::AlreadyBootstrapped));
        s.apply(&add).unwrap();
        assert_eq!(s.roster.learners(), vec![NodeId(4)]);
    }

    #[test]
    fn roster_changes_add_promote_and_remove() {
        let mut s = state();
        s.apply(&SystemCommand::AddLearner { node: NodeId(4), address: "d".into() }).unwrap();
        assert_eq!(s.roster.learners(), vec![NodeId(4)]);
        s.apply(&SystemCommand::PromoteLearner { node: NodeId(4) }).unwrap();
        assert_eq!(s.roster.voters().len(), 4);
        for n in [1, 2, 3] {
            s.apply(&SystemCommand::RemoveNode { node: NodeId(n) }).unwrap();
        }
        assert_eq!(s.apply(&SystemCommand::RemoveNode { node: NodeId(4) }), Err(SystemError::LastVoter(NodeId(4))));
        assert_eq!(s.roster.version, 6);
    }
}
