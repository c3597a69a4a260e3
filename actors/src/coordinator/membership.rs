//! Membership driving, on every node, from the committed roster:
//! * the first partition-0 leader of a new cluster commits the founding voters (`Bootstrap`);
//! * a joining node asks the contacts from discovery, over the transport, to add it; the
//!   partition-0 leader commits it to the roster as a learner; a leaving node asks for removal;
//! * every partition's leader moves its partition's membership one step at a time toward the
//!   roster (adding learners, promoting caught-up learners the roster lists as voters, removing
//!   nodes the roster dropped) through config entries in the partition's own log;
//! * the partition-0 leader promotes a learner in the roster once it stayed within
//!   `promotion_lag` entries of partition 0's log for `promotion_window`.
//!
//! Learners never count toward a quorum, so the quorum is never weakened while a node catches up.
//!
//! Reachability follows the roster: every round, each other member with an address the transport
//! was not told yet (or was told a different one) is handed to [`Transport::add_peer`], so a
//! transport that only knew its configured peers reaches a node that joined later. A node the
//! transport was told about is removed with [`Transport::remove_peer`] once it is neither in the
//! roster nor in any local partition's membership, and stayed so for [`REMOVE_PEER_AFTER`] (so a
//! removed node that still leads a partition can finish taking itself out of it).

use super::SystemCoordinator;
use crate::executor::{LearnerLag, MembershipReport, ReconcileMembership, ReportTo};
use crate::node_clock::{NodeClock, WatchPeers};
use crate::router::MembershipAsk;
use actix::prelude::*;
use kommander_core::system::{MemberRole, Roster, SystemCommand};
use kommander_core::{Discovery, Envelope, MessageBatch, NodeId, PartitionId, RaftMessage, Transport};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const REQUEST_EVERY: Duration = Duration::from_millis(300);
const RECONCILE_EVERY: Duration = Duration::from_millis(100);
/// How often the transport's peers and the failure detector's watch list follow the roster.
const SYNC_PEERS_EVERY: Duration = Duration::from_millis(100);
/// How often partitions already in sync with the roster are checked for a term change.
const TERM_SCAN_EVERY: Duration = Duration::from_secs(1);
/// How long a node must be out of the roster and of every local partition membership before the
/// transport forgets it.
pub(crate) const REMOVE_PEER_AFTER: Duration = Duration::from_secs(3);

/// What membership driving needs from the manager.
pub(crate) struct MembershipSettings {
    pub(crate) node: NodeId,
    /// The founding voters (founding nodes only).
    pub(crate) founders: Option<Vec<(NodeId, String)>>,
    pub(crate) advertise_address: String,
    /// Where this node's application serves clients (recorded in the roster).
    pub(crate) application_address: Option<String>,
    pub(crate) cluster_id: String,
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) discovery: Arc<dyn Discovery>,
    pub(crate) promotion_lag: u64,
    pub(crate) promotion_window: Duration,
    /// Set by `leave_cluster`.
    pub(crate) leaving: Arc<AtomicBool>,
    /// The node clock, whose failure detector watches the roster and every local membership.
    pub(crate) clock: Addr<NodeClock>,
    /// Peers the failure detector reports down (never handed a leadership).
    pub(crate) down_peers: crate::node_clock::DownPeers,
    /// Hand partitions led beyond this node's share to other voters (`super::balance`).
    pub(crate) balance_leaders: bool,
}

pub(crate) struct MembershipDriver {
    pub(super) settings: MembershipSettings,
    caught_up_since: BTreeMap<NodeId, Instant>,
    last_request: Option<Instant>,
    last_reconcile: Option<Instant>,
    in_flight: bool,
    /// The address the transport was told for each node (by this driver).
    told: BTreeMap<NodeId, String>,
    /// Addresses the transport refused (logged once per address).
    refused: BTreeMap<NodeId, String>,
    /// Told nodes out of the roster and of every local membership, since when.
    absent_since: BTreeMap<NodeId, Instant>,
    /// The members (voters and learners) of each running partition, as its replica last reported.
    pub(super) memberships: BTreeMap<PartitionId, BTreeSet<NodeId>>,
    /// Every node in `memberships` (recomputed only after `memberships` changed: a union over ten
    /// thousand partitions is not taken every round).
    in_use: Option<BTreeSet<NodeId>>,
    /// Version of the roster the transport's peers were last synchronised with.
    synced_version: u64,
    /// Partitions whose replica here reported the roster's membership, and in which term: they
    /// are not asked again until the roster or their term changes.
    in_sync: BTreeMap<PartitionId, kommander_core::Term>,
    /// Roster version `in_sync` refers to.
    in_sync_version: u64,
    /// The last scan of `in_sync` partitions' terms.
    last_term_scan: Option<Instant>,
    /// The last `sync_peers` round.
    last_sync: Option<Instant>,
    /// Partitions with a `ReconcileMembership` unanswered (never two at once: a busy executor
    /// must not collect a request per round).
    asking: BTreeSet<PartitionId>,
    /// The last scan found every running partition in sync and none asking: the next rounds skip
    /// the scan until the roster changes or the term scan is due.
    settled: bool,
    /// The status-change version (`Changes::version`) the last term scan saw.
    scanned_changes: u64,
}

impl MembershipDriver {
    pub(crate) fn new(settings: MembershipSettings) -> Self {
        MembershipDriver {
            settings,
            caught_up_since: BTreeMap::new(),
            last_request: None,
            last_reconcile: None,
            in_flight: false,
            told: BTreeMap::new(),
            refused: BTreeMap::new(),
            absent_since: BTreeMap::new(),
            memberships: BTreeMap::new(),
            in_use: None,
            synced_version: 0,
            in_sync: BTreeMap::new(),
            in_sync_version: 0,
            last_term_scan: None,
            asking: BTreeSet::new(),
            settled: false,
            scanned_changes: u64::MAX,
            last_sync: None,
        }
    }

    /// Tell the transport about every other member's address, and make it forget nodes that left
    /// (see the module docs).
    fn sync_peers(&mut self, roster: &Roster) {
        // An older version means partition 0 is being replayed after a restore: wait for it.
        if roster.version < self.synced_version {
            return;
        }
        self.synced_version = roster.version;
        let (me, transport) = (self.settings.node, self.settings.transport.clone());
        for (&node, member) in &roster.members {
            let address = member.address.as_str();
            if node == me || address.is_empty() || self.told.get(&node).is_some_and(|told| told == address) {
                continue;
            }
            match transport.add_peer(node, address) {
                Ok(()) => {
                    tracing::debug!(%node, %address, "transport told the member's address");
                    self.told.insert(node, address.to_owned());
                    self.refused.remove(&node);
                }
                Err(error) => {
                    if self.refused.get(&node).is_none_or(|refused| refused != address) {
                        tracing::warn!(%node, %address, %error, "the transport refused a member's address");
                        self.refused.insert(node, address.to_owned());
                    }
                }
            }
        }
        let memberships = &self.memberships;
        let in_use = self.in_use.get_or_insert_with(|| memberships.values().flatten().copied().collect()).clone();
        let watched = roster.members.keys().chain(&in_use).copied().filter(|&n| n != me).collect();
        self.settings.clock.do_send(WatchPeers(watched));
        let gone: Vec<NodeId> =
            self.told.keys().copied().filter(|n| !roster.members.contains_key(n) && !in_use.contains(n)).collect();
        self.absent_since.retain(|node, _| gone.contains(node));
        for node in gone {
            let since = *self.absent_since.entry(node).or_insert_with(Instant::now);
            if since.elapsed() >= REMOVE_PEER_AFTER {
                tracing::info!(%node, "node left the cluster; transport forgets it");
                transport.remove_peer(node);
                self.told.remove(&node);
                self.absent_since.remove(&node);
            }
        }
    }

    fn due(last: &mut Option<Instant>, every: Duration) -> bool {
        if last.is_some_and(|t| t.elapsed() < every) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }

    /// Send a join or leave request to `targets` over the transport (partition 0 envelopes).
    fn request(&self, join: bool, targets: impl IntoIterator<Item = NodeId>) {
        let s = &self.settings;
        for to in targets.into_iter().filter(|&n| n != s.node) {
            let message = RaftMessage::MembershipRequest {
                join,
                address: s.advertise_address.clone(),
                application_address: s.application_address.clone(),
            };
            let envelope = Envelope { partition: PartitionId::SYSTEM, from: s.node, to, message };
            let batch = MessageBatch { cluster_id: s.cluster_id.clone(), from: s.node, to, messages: vec![envelope] };
            if let Err(error) = s.transport.send(batch) {
                tracing::debug!(%to, %error, "membership request not sent");
            }
        }
    }
}

impl SystemCoordinator {
    /// One round of membership driving (see the module docs).
    pub(super) fn drive_membership(&mut self, ctx: &mut Context<Self>) {
        if !self.restored {
            return;
        }
        // The roster only: cloning the whole state (a map of thousands of partitions) every round
        // would cost more than everything else an idle node does.
        let roster = self.roster();
        let registry = self.registry().clone();
        let p0_leader = registry.leads(PartitionId::SYSTEM);
        let me = self.members.settings.node;
        if MembershipDriver::due(&mut self.members.last_sync, SYNC_PEERS_EVERY) {
            self.members.sync_peers(&roster);
        }
        if roster.members.is_empty() {
            if let Some(founders) = self.members.settings.founders.clone() {
                if p0_leader {
                    self.propose_membership_command(ctx, SystemCommand::Bootstrap { members: founders });
                }
                return;
            }
        }
        let leaving = self.members.settings.leaving.load(Ordering::SeqCst);
        let listed = roster.members.contains_key(&me);
        let wants_in = self.members.settings.founders.is_none() && !leaving && !listed;
        // A member whose roster entry does not carry its application address (yet) asks again:
        // the partition-0 leader records it.
        let application = self.members.settings.application_address.clone();
        let recorded = roster.members.get(&me).map(|m| m.application_address.clone());
        let stale_address = !leaving && application.is_some() && recorded.is_some_and(|r| r != application);
        let asking = (leaving && listed) || wants_in || stale_address;
        if asking && MembershipDriver::due(&mut self.members.last_request, REQUEST_EVERY) {
            if p0_leader {
                // The leader answers its own request the way it answers everybody's.
                let s = &self.members.settings;
                let ask = MembershipAsk {
                    node: me,
                    join: !leaving,
                    address: s.advertise_address.clone(),
                    application_address: application,
                };
                if let Some(command) = membership_command(&roster, ask) {
                    self.propose_membership_command(ctx, command);
                }
            } else {
                let contacts = self.members.settings.discovery.contacts().unwrap_or_default();
                let targets: Vec<NodeId> =
                    contacts.iter().map(|c| c.node).chain(roster.members.keys().copied()).collect();
                self.members.request(!leaving, targets);
            }
        }
        if MembershipDriver::due(&mut self.members.last_reconcile, RECONCILE_EVERY) {
            if p0_leader && !roster.learners().is_empty() {
                self.check_promotions(ctx);
            }
            // A settled node (every partition reported the roster's membership last round) scans
            // its partitions only when the roster changed or the term scan is due: ten thousand
            // idle partitions must not cost a scan every round.
            let roster_changed = self.members.in_sync_version != roster.version;
            // The term scan is needed only when some status changed (a term change signals).
            let changes = registry.changes().version();
            let scan_terms = changes != self.members.scanned_changes
                && MembershipDriver::due(&mut self.members.last_term_scan, TERM_SCAN_EVERY);
            if self.members.settled && !roster_changed && !scan_terms {
                return;
            }
            let desired = roster.membership();
            let max_lag = self.members.settings.promotion_lag;
            let running: BTreeSet<PartitionId> = registry.running().into_iter().collect();
            let known = self.members.memberships.len();
            self.members.memberships.retain(|partition, _| running.contains(partition));
            if self.members.memberships.len() != known {
                self.members.in_use = None;
            }
            // Only partitions that may need a step are asked: ten thousand idle partitions must
            // not cost ten thousand requests per round. A partition in sync is asked again when
            // the roster changes, or when its term changed (a new leader, whose log may differ).
            if roster_changed {
                self.members.in_sync.clear();
                self.members.in_sync_version = roster.version;
            }
            self.members.in_sync.retain(|partition, _| running.contains(partition));
            let reports = ctx.address().recipient();
            self.members.settled = self.members.asking.is_empty();
            if scan_terms {
                self.members.scanned_changes = changes;
            }
            for partition in running {
                let Some((executor, status)) = registry.get(partition) else { continue };
                if self.members.asking.contains(&partition) {
                    continue;
                }
                if let Some(&term) = self.members.in_sync.get(&partition) {
                    if !scan_terms || status.get().term == term {
                        continue;
                    }
                    self.members.in_sync.remove(&partition);
                }
                let report = ReportTo::new(partition, desired.clone(), roster.version, reports.clone());
                executor.do_send(ReconcileMembership { max_lag, report });
                self.members.asking.insert(partition);
                self.members.settled = false;
            }
        }
    }

    /// The committed roster (a clone of it only: cloning the whole state, a map of thousands of
    /// partitions, every round would cost more than everything else an idle node does).
    pub(super) fn roster(&self) -> Roster {
        self.state.read().unwrap_or_else(|p| p.into_inner()).roster.clone()
    }

    /// A partition answered a membership request.
    fn on_membership_report(&mut self, report: MembershipReport) {
        let MembershipReport { partition, desired, version, reply } = report;
        self.members.asking.remove(&partition);
        if let Some((membership, term)) = reply {
            let members: BTreeSet<NodeId> = membership.members().collect();
            if self.members.memberships.get(&partition) != Some(&members) {
                self.members.memberships.insert(partition, members);
                self.members.in_use = None;
            }
            if membership == desired && self.members.in_sync_version == version {
                self.members.in_sync.insert(partition, term);
            }
        }
    }

    /// On the partition-0 leader: promote the first learner that stayed caught up long enough.
    fn check_promotions(&mut self, ctx: &mut Context<Self>) {
        let Some((p0, _)) = self.registry().get(PartitionId::SYSTEM) else { return };
        let request = p0.send(LearnerLag);
        ctx.spawn(request.into_actor(self).map(|lags, act, ctx| {
            let Ok(lags) = lags else { return };
            let (lag_limit, window) = (act.members.settings.promotion_lag, act.members.settings.promotion_window);
            act.members.caught_up_since.retain(|node, _| lags.get(node).is_some_and(|&lag| lag <= lag_limit));
            for (&node, &lag) in &lags {
                if lag <= lag_limit {
                    act.members.caught_up_since.entry(node).or_insert_with(Instant::now);
                }
            }
            let roster = act.roster();
            let ready = act.members.caught_up_since.iter().find(|(node, since)| {
                since.elapsed() >= window && roster.members.get(node).is_some_and(|m| m.role == MemberRole::Learner)
            });
            if let Some((&node, _)) = ready {
                act.propose_membership_command(ctx, SystemCommand::PromoteLearner { node });
            }
        }));
    }

    fn propose_membership_command(&mut self, ctx: &mut Context<Self>, command: SystemCommand) {
        if self.members.in_flight {
            return;
        }
        self.members.in_flight = true;
        let client = self.client.clone();
        let work = async move { (client.propose(&command).await, command) };
        ctx.spawn(work.into_actor(self).map(|(result, command), act, _| {
            act.members.in_flight = false;
            match result {
                Ok(_) => tracing::info!(?command, "membership command committed"),
                Err(error) => tracing::debug!(?command, %error, "membership command not applied"),
            }
        }));
    }
}

impl Handler<MembershipAsk> for SystemCoordinator {
    type Result = ();

    fn handle(&mut self, ask: MembershipAsk, ctx: &mut Context<Self>) {
        if !self.registry().leads(PartitionId::SYSTEM) {
            return;
        }
        let roster = self.roster();
        let (node, join) = (ask.node, ask.join);
        if let Some(command) = membership_command(&roster, ask) {
            tracing::info!(%node, join, "membership request");
            self.propose_membership_command(ctx, command);
        }
    }
}

/// What the partition-0 leader commits for a membership request, if anything: add an unknown
/// node as a learner, record a member's new application address, remove a member that leaves.
fn membership_command(roster: &Roster, ask: MembershipAsk) -> Option<SystemCommand> {
    let member = roster.members.get(&ask.node);
    match (ask.join, member) {
        (true, None) => Some(SystemCommand::AddLearner { node: ask.node, address: ask.address }),
        (true, Some(member))
            if ask.application_address.is_some() && member.application_address != ask.application_address =>
        {
            Some(SystemCommand::SetApplicationAddress { node: ask.node, address: ask.application_address })
        }
        (false, Some(_)) => Some(SystemCommand::RemoveNode { node: ask.node }),
        _ => None,
    }
}

impl Handler<MembershipReport> for SystemCoordinator {
    type Result = ();
    fn handle(&mut self, msg: MembershipReport, _: &mut Context<Self>) {
        self.on_membership_report(msg);
    }
}
