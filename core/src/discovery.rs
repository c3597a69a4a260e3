//! The discovery contract: where to find other nodes at startup. Discovery only provides contacts;
//! who votes is decided by the committed roster, never by discovery.

use crate::ids::NodeId;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// How to reach one node.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeContact {
    /// The node's identity.
    pub node: NodeId,
    /// Transport address, for example `127.0.0.1:7001` or `https://node-2:7001`.
    pub address: String,
}

/// Errors of discovery implementations.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum DiscoveryError {
    /// The source of contacts could not be read.
    #[error("discovery unavailable: {0}")]
    Unavailable(String),
}

/// Supplies the initial contacts of a cluster.
#[cfg_attr(feature = "mocks", mockall::automock)]
pub trait Discovery: Send + Sync {
    /// Contacts known now (may include this node; callers filter it out).
    fn contacts(&self) -> Result<Vec<NodeContact>, DiscoveryError>;
}

/// A fixed list of contacts.
#[derive(Clone, Debug, Default)]
pub struct StaticDiscovery {
    contacts: Vec<NodeContact>,
}

impl StaticDiscovery {
    /// Discovery that always answers `contacts`.
    pub fn new(contacts: Vec<NodeContact>) -> Self {
        Self { contacts }
    }
}

impl Discovery for StaticDiscovery {
    fn contacts(&self) -> Result<Vec<NodeContact>, DiscoveryError> {
        Ok(self.contacts.clone())
    }
}

/// Contacts that can be added and removed at run time (e.g. from a service registry watcher).
/// Cheap to clone; clones share the list.
#[derive(Clone, Debug, Default)]
pub struct DynamicDiscovery {
    contacts: std::sync::Arc<std::sync::RwLock<Vec<NodeContact>>>,
}

impl DynamicDiscovery {
    /// Discovery starting with `contacts`.
    pub fn new(contacts: Vec<NodeContact>) -> Self {
        Self { contacts: std::sync::Arc::new(std::sync::RwLock::new(contacts)) }
    }

    /// Add `contact`, replacing the address of a node already listed.
    pub fn add(&self, contact: NodeContact) {
        let mut contacts = self.contacts.write().unwrap_or_else(|p| p.into_inner());
        contacts.retain(|c| c.node != contact.node);
        contacts.push(contact);
    }

    /// Remove `node`'s contact. Returns true if it was listed.
    pub fn remove(&self, node: NodeId) -> bool {
        let mut contacts = self.contacts.write().unwrap_or_else(|p| p.into_inner());
        let before = contacts.len();
        contacts.retain(|c| c.node != node);
        contacts.len() != before
    }
}

impl Discovery for DynamicDiscovery {
    fn contacts(&self) -> Result<Vec<NodeContact>, DiscoveryError> {
        Ok(self.contacts.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_contacts_change_at_run_time_and_clones_share_them() {
        let contact = |n: u64, a: &str| NodeContact { node: NodeId(n), address: a.into() };
        let discovery = DynamicDiscovery::new(vec![contact(1, "a")]);
        let view = discovery.clone();
        discovery.add(contact(2, "b"));
        discovery.add(contact(1, "a2"));
        let mut contacts = view.contacts().unwrap();
        contacts.sort_by_key(|c| c.node);
        assert_eq!(contacts, vec![contact(1, "a2"), contact(2, "b")]);
        assert!(discovery.remove(NodeId(1)));
        assert!(!discovery.remove(NodeId(1)));
        assert_eq!(view.contacts().unwrap(), vec![contact(2, "b")]);
    }
}
