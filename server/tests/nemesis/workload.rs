//! The clients of a nemesis run: concurrent tasks that write unique values to a few keys and read
//! them back at every consistency level the server offers, through random nodes, recording each
//! operation's invocation, completion and outcome in the [`History`].

use super::history::{Consistency, History, OpKind, Outcome};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The keys the clients contend on (few, so reads often meet concurrent writes).
pub const KEYS: usize = 6;
/// A client gives up on a request after this long (the outcome is then unknown).
pub const REQUEST_TIMEOUT: Duration = Duration::from_millis(1_500);

/// The runs' seeded generator: the project's SplitMix64 (the simulator's), so a seed replays.
pub use kommander::core::rng::SplitMix64 as Rng;

/// The HTTP client the workload uses.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder().timeout(REQUEST_TIMEOUT).pool_max_idle_per_host(4).build().unwrap()
}

/// A node the clients talk to: its id and client URL.
pub type Endpoint = (u64, String);

/// `PUT /kv/{key}` on `node`, recorded.
pub async fn write(http: &reqwest::Client, history: &History, client: u64, node: &Endpoint, key: &str, value: String) {
    let (node, url) = node;
    let id = history.invoke(client, key, OpKind::Write { value: value.clone() });
    history.sent_to(id, *node);
    let outcome = match http.put(format!("{url}/kv/{key}")).body(value).send().await {
        Ok(response) if response.status().is_success() => Outcome::written(),
        // Anything else may still have been proposed (a forwarded write that timed out, say).
        _ => Outcome::Unknown,
    };
    history.complete(id, outcome);
}

/// `GET /kv/{key}?consistency=…` on `node`, recorded.
pub async fn read(
    http: &reqwest::Client,
    history: &History,
    client: u64,
    node: &Endpoint,
    key: &str,
    level: Consistency,
) {
    let (node, url) = node;
    let id = history.invoke(client, key, OpKind::Read { consistency: level });
    history.sent_to(id, *node);
    let request = http.get(format!("{url}/kv/{key}?consistency={}", level.as_query()));
    let outcome = match request.send().await {
        Ok(response) if response.status() == reqwest::StatusCode::NOT_FOUND => Outcome::read(None),
        Ok(response) if response.status().is_success() => match response.text().await {
            Ok(body) => Outcome::read(Some(&body)),
            Err(_) => Outcome::Unknown,
        },
        _ => Outcome::Unknown,
    };
    history.complete(id, outcome);
}

/// Run client `client` against `nodes` until `stop`: half writes of unique values, half reads at a
/// random level, on random keys through random nodes.
pub async fn client_loop(client: u64, seed: u64, nodes: Vec<Endpoint>, history: History, stop: Arc<AtomicBool>) {
    let http = http_client();
    let mut rng = Rng::new(seed ^ client.wrapping_mul(0x2545_f491_4f6c_dd1d));
    let mut written = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let node = &nodes[rng.below(nodes.len() as u64) as usize];
        let key = format!("k{}", rng.below(KEYS as u64));
        if rng.below(2) == 0 {
            written += 1;
            write(&http, &history, client, node, &key, format!("c{client}-{written}")).await;
        } else {
            let level = Consistency::ALL[rng.below(3) as usize];
            read(&http, &history, client, node, &key, level).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.below(20))).await;
    }
}
