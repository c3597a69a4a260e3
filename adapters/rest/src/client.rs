//! The client side: signs and POSTs merged batches to peers with reqwest (keep-alive connection
//! reuse, connect and request timeouts). Used by `kommander-net`'s per-peer outbox workers.

use crate::wire::{self, H_CLUSTER, H_FROM, H_NONCE, H_SIGNATURE, H_TIMESTAMP, H_TO};
use crate::{RestConfig, BATCH_PATH};
use kommander_core::{MessageBatch, NodeId};
use kommander_net::auth::to_hex;
use kommander_net::{ClusterAuth, FrameHeader, NonceSource, PeerSender};
use std::collections::BTreeMap;
use std::sync::{PoisonError, RwLock};

/// Sends frames to peers over HTTP.
#[derive(Debug)]
pub struct RestPeerSender {
    client: reqwest::Client,
    /// The batch endpoint URL of every peer; changes when peers are added or removed.
    urls: RwLock<BTreeMap<NodeId, String>>,
    auth: ClusterAuth,
    nonces: NonceSource,
}

impl RestPeerSender {
    /// A sender for the peers of `config`, with its [`RestConfig::http_client`] (or the default
    /// one of [`RestConfig::client_builder`]).
    pub fn new(config: &RestConfig) -> Result<Self, String> {
        let client = match &config.http_client {
            Some(client) => client.clone(),
            None => config.client_builder().build().map_err(|e| e.to_string())?,
        };
        let urls = config
            .peers
            .iter()
            .filter(|(&node, _)| node != config.node)
            .map(|(&node, base)| (node, batch_url(base)))
            .collect();
        let auth = ClusterAuth::try_new(config.cluster_id.clone(), &config.secret, config.replay_window)
            .map_err(|e| e.to_string())?;
        Ok(RestPeerSender { client, urls: RwLock::new(urls), auth, nonces: NonceSource::new() })
    }

    /// Send to `peer` at `base_url` from now on (the next frame uses it). Returns false if `peer`
    /// was known at exactly that address already.
    pub fn set_peer(&self, peer: NodeId, base_url: &str) -> bool {
        let url = batch_url(base_url);
        let mut urls = self.urls.write().unwrap_or_else(PoisonError::into_inner);
        urls.insert(peer, url.clone()).as_ref() != Some(&url)
    }

    /// Forget `peer`'s address. Returns false if it was not known.
    pub fn remove_peer(&self, peer: NodeId) -> bool {
        self.urls.write().unwrap_or_else(PoisonError::into_inner).remove(&peer).is_some()
    }

    /// The peers with an address, in ascending order.
    pub fn peers(&self) -> Vec<NodeId> {
        self.urls.read().unwrap_or_else(PoisonError::into_inner).keys().copied().collect()
    }

    /// The batch endpoint URL of `peer`, if known.
    pub fn url(&self, peer: NodeId) -> Option<String> {
        self.urls.read().unwrap_or_else(PoisonError::into_inner).get(&peer).cloned()
    }
}

/// The batch endpoint under a peer's base URL.
fn batch_url(base_url: &str) -> String {
    format!("{}{}", base_url.trim_end_matches('/'), BATCH_PATH)
}

impl PeerSender for RestPeerSender {
    async fn send_frame(&self, peer: NodeId, batch: MessageBatch) -> Result<(), String> {
        let url = self.url(peer).ok_or_else(|| format!("no address for {peer}"))?;
        let body = wire::encode_batch(&batch);
        let header = FrameHeader {
            cluster_id: batch.cluster_id.clone(),
            from: batch.from,
            to: batch.to,
            timestamp_ms: kommander_net::unix_millis(),
            nonce: self.nonces.next(),
        };
        let signature = self.auth.sign(&header, &body);
        let response = self
            .client
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, wire::CONTENT_TYPE)
            .header(H_CLUSTER, &header.cluster_id)
            .header(H_FROM, header.from.0.to_string())
            .header(H_TO, header.to.0.to_string())
            .header(H_TIMESTAMP, header.timestamp_ms.to_string())
            .header(H_NONCE, header.nonce.to_string())
            .header(H_SIGNATURE, to_hex(&signature))
            .body(body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if response.status().is_success() {
            Ok(())
        } else {
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            Err(format!("{status}: {text}"))
        }
    }
}
