//! The client side: signs and POSTs merged batches to peers with reqwest (keep-alive connection
//! reuse, connect and request timeouts). Used by `kommander-net`'s per-peer outbox workers.

use crate::wire::{self, H_CLUSTER, H_FROM, H_NONCE, H_SIGNATURE, H_TIMESTAMP, H_TO};
use crate::{RestConfig, BATCH_PATH};
use kommander_core::{MessageBatch, NodeId};
use kommander_net::auth::to_hex;
use kommander_net::{ClusterAuth, FrameHeader, NonceSource, PeerSender};
use std::collections::BTreeMap;

/// Sends frames to peers over HTTP.
#[derive(Debug)]
pub struct RestPeerSender {
    client: reqwest::Client,
    urls: BTreeMap<NodeId, String>,
    auth: ClusterAuth,
    nonces: NonceSource,
}

impl RestPeerSender {
    /// A sender for the peers of `config`.
    pub fn new(config: &RestConfig) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .pool_max_idle_per_host(2)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| e.to_string())?;
        let urls = config
            .peers
            .iter()
            .map(|(node, base)| (*node, format!("{}{}", base.trim_end_matches('/'), BATCH_PATH)))
            .collect();
        let auth = ClusterAuth::try_new(config.cluster_id.clone(), &config.secret, config.replay_window)
            .map_err(|e| e.to_string())?;
        Ok(RestPeerSender { client, urls, auth, nonces: NonceSource::new() })
    }
}

impl PeerSender for RestPeerSender {
    async fn send_frame(&self, peer: NodeId, batch: MessageBatch) -> Result<(), String> {
        let url = self.urls.get(&peer).ok_or_else(|| format!("no address for {peer}"))?;
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
            .post(url)
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
