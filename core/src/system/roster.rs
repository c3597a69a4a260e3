//! The cluster roster: which nodes are members, at which address, and whether each votes.
//! Learners receive every partition's log but never vote or campaign.

use crate::ids::NodeId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Whether a member counts toward quorums.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberRole {
    /// Votes and may lead.
    Voter,
    /// Replicates only, until promoted.
    Learner,
}

/// One member of the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Where peers reach it.
    pub address: String,
    /// Voter or learner.
    pub role: MemberRole,
    /// Where its application serves clients (`RuntimeConfig::application_address`), once the
    /// node told the cluster.
    pub application_address: Option<String>,
}

/// The versioned set of members.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Roster {
    /// Bumped on every change.
    pub version: u64,
    /// Members by node id.
    pub members: BTreeMap<NodeId, Member>,
}

impl Roster {
    /// The roster as a partition membership (voters and learners).
    pub fn membership(&self) -> crate::raft::Membership {
        crate::raft::Membership {
            voters: self.voters().into_iter().collect(),
            learners: self.learners().into_iter().collect(),
        }
    }

    /// The bootstrap roster: every given node a voter.
    pub fn genesis(voters: impl IntoIterator<Item = (NodeId, String)>) -> Self {
        let members = voters
            .into_iter()
            .map(|(node, address)| (node, Member { address, role: MemberRole::Voter, application_address: None }))
            .collect();
        Roster { version: 1, members }
    }

    /// Voting members.
    pub fn voters(&self) -> Vec<NodeId> {
        self.with_role(MemberRole::Voter)
    }

    /// Learners.
    pub fn learners(&self) -> Vec<NodeId> {
        self.with_role(MemberRole::Learner)
    }

    fn with_role(&self, role: MemberRole) -> Vec<NodeId> {
        self.members.iter().filter(|(_, m)| m.role == role).map(|(n, _)| *n).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_membership_of_a_roster_keeps_voters_and_learners_apart() {
        let mut roster = Roster::genesis([(NodeId(1), "a".into()), (NodeId(2), "b".into())]);
        roster
            .members
            .insert(NodeId(3), Member { address: "c".into(), role: MemberRole::Learner, application_address: None });
        let membership = roster.membership();
        assert_eq!(membership.voters.iter().copied().collect::<Vec<_>>(), vec![NodeId(1), NodeId(2)]);
        assert_eq!(membership.learners.iter().copied().collect::<Vec<_>>(), vec![NodeId(3)]);
    }
}
