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
