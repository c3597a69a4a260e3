//! The node-side load generator behind `POST /bench/load`, used by `server/examples/bench_cluster.rs` to
//! measure a cluster of real processes without an HTTP hop per proposal.
//!
//! This module owns the request/report types and the closed-loop clients: one client per entry of
//! `clients` (a partition id; repeat an id for several clients on it), each calling
//! `manager.replicate(partition, "bench", vec![payload], true)` in a loop on the current actix
//! worker until the deadline and recording every commit latency. Errors (e.g. `NotLeader` after a
//! leader change) are counted, never fatal. The route is for benchmarks only: it writes `bench`
//! entries (which the demo KV store ignores) into the listed partitions, so it is mounted only
//! when the server runs with `--enable-bench`, and needs the admin token when tokens are set.

use crate::api::ApiState;
use crate::auth::AdminAccess;
use actix_web::{web, HttpResponse};
use kommander::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Log type of the benchmark's entries (not applied by the KV store).
pub const BENCH: &str = "bench";

/// At most this many latency samples are returned per request; above it the sorted samples are
/// thinned to evenly spaced ranks (quantiles are preserved, `ops` stays exact).
pub const MAX_SAMPLES: usize = 200_000;

/// Longest accepted load (warm-up plus window), so a typo cannot pin a node for hours.
const MAX_SECONDS: f64 = 600.0;

/// Pause after a failed proposal so a client without a leader does not spin.
const ERROR_PAUSE: Duration = Duration::from_millis(1);

/// Body of `POST /bench/load`.
#[derive(Debug, Deserialize)]
pub struct LoadRequest {
    /// Length of the measured window in seconds.
    pub seconds: f64,
    /// Bytes of each entry's payload.
    pub payload_bytes: usize,
    /// One client per entry: the partition it proposes to.
    pub clients: Vec<u32>,
    /// Seconds the clients run before the window opens (results discarded); 0 by default.
    #[serde(default)]
    pub warmup_seconds: f64,
}

/// Answer of `POST /bench/load`.
#[derive(Debug, Default, Serialize)]
pub struct LoadReport {
    /// Proposals committed inside the window.
    pub ops: u64,
    /// Proposals that failed inside the window.
    pub errors: u64,
    /// Errors inside the window by kind (`not-leader`, `timeout`, ...).
    pub error_kinds: BTreeMap<&'static str, u64>,
    /// Errors during the warm-up.
    pub warmup_errors: u64,
    /// Commit latency in µs of the window's proposals, sorted; thinned to at most [`MAX_SAMPLES`].
    pub latencies_us: Vec<u32>,
    /// Length of the window as measured on this node, in seconds.
    pub window_seconds: f64,
    /// CPU time (user + system, in clock ticks) of the HTTP worker thread that ran the clients,
    /// over the window; `None` off Linux.
    pub worker_cpu_ticks: Option<u64>,
}

#[derive(Default)]
struct ClientReport {
    latencies_us: Vec<u32>,
    error_kinds: BTreeMap<&'static str, u64>,
    warmup_errors: u64,
}

/// Mount `POST /bench/load` (the `ApiState` is registered by [`crate::api::configure`]).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/bench/load", web::post().to(load));
}

async fn load(_: AdminAccess, state: web::Data<ApiState>, request: web::Json<LoadRequest>) -> HttpResponse {
    let request = request.into_inner();
    let valid = |s: f64| s.is_finite() && s >= 0.0;
    if !valid(request.seconds) || !valid(request.warmup_seconds) || request.seconds == 0.0 {
        return HttpResponse::BadRequest().body("seconds must be positive and warmup_seconds not negative");
    }
    if request.seconds + request.warmup_seconds > MAX_SECONDS {
        return HttpResponse::BadRequest().body(format!("warm-up plus window must not exceed {MAX_SECONDS} s"));
    }
    let live = state.manager.partitions();
    if let Some(bad) = request.clients.iter().find(|&&p| !live.contains(&PartitionId(p))) {
        return HttpResponse::BadRequest().body(format!("partition {bad} is not a live user partition ({live:?})"));
    }
    HttpResponse::Ok().json(run(&state.manager, &request).await)
}

/// Run the request's clients to completion and merge their results.
async fn run(manager: &RaftManager, request: &LoadRequest) -> LoadReport {
    let started = Instant::now();
    let window_start = started + Duration::from_secs_f64(request.warmup_seconds);
    let deadline = window_start + Duration::from_secs_f64(request.seconds);
    let payload = vec![0x5a; request.payload_bytes];
    let tasks: Vec<_> = request
        .clients
        .iter()
        .map(|&p| actix_rt::spawn(client(manager.clone(), PartitionId(p), payload.clone(), window_start, deadline)))
        .collect();
    // The clients run on this worker thread: sample its CPU time when the window opens and closes.
    actix_rt::time::sleep_until(window_start.into()).await;
    let worker_start = thread_cpu_ticks();
    actix_rt::time::sleep_until(deadline.into()).await;
    let worker_end = thread_cpu_ticks();
    let mut report = LoadReport {
        worker_cpu_ticks: worker_start.zip(worker_end).map(|(a, b)| b.saturating_sub(a)),
        ..LoadReport::default()
    };
    for task in tasks {
        // A client task only fails if it panicked; its results are then lost, not the whole load.
        let Ok(client) = task.await else {
            *report.error_kinds.entry("client-panicked").or_default() += 1;
            continue;
        };
        report.latencies_us.extend(client.latencies_us);
        for (kind, n) in client.error_kinds {
            *report.error_kinds.entry(kind).or_default() += n;
        }
        report.warmup_errors += client.warmup_errors;
    }
    report.window_seconds = deadline.saturating_duration_since(window_start).as_secs_f64();
    report.ops = report.latencies_us.len() as u64;
    report.errors = report.error_kinds.values().sum();
    report.latencies_us.sort_unstable();
    report.latencies_us = thin(std::mem::take(&mut report.latencies_us), MAX_SAMPLES);
    report
}

/// One closed-loop client: propose, wait for the commit, repeat until `deadline`. A proposal
/// counts if it completes inside `[window_start, deadline]`.
async fn client(
    manager: RaftManager,
    partition: PartitionId,
    payload: Vec<u8>,
    window_start: Instant,
    deadline: Instant,
) -> ClientReport {
    let mut report = ClientReport::default();
    while Instant::now() < deadline {
        let sent = Instant::now();
        let outcome = manager.replicate(partition, BENCH, vec![payload.clone()], true).await;
        let done = Instant::now();
        let in_window = done >= window_start && done <= deadline;
        match outcome {
            Ok(_) if in_window => {
                report.latencies_us.push(u32::try_from((done - sent).as_micros()).unwrap_or(u32::MAX));
            }
            Ok(_) => {}
            Err(error) => {
                if in_window {
                    *report.error_kinds.entry(error.kind()).or_default() += 1;
                } else if done < window_start {
                    report.warmup_errors += 1;
                }
                actix_rt::time::sleep(ERROR_PAUSE).await;
            }
        }
    }
    report
}

/// CPU time (user + system, clock ticks) of the calling thread, from `/proc/thread-self/stat`.
fn thread_cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // Fields after the command name (which may contain spaces) start at field 3 (state).
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Keep at most `max` of the sorted `samples`, at evenly spaced ranks (first and last kept).
fn thin(samples: Vec<u32>, max: usize) -> Vec<u32> {
    if samples.len() <= max || max < 2 {
        return samples;
    }
    let last = samples.len() - 1;
    (0..max).map(|i| samples[i * last / (max - 1)]).collect()
}

#[cfg(test)]
mod tests {
    use super::thin;

    #[test]
    fn thinning_keeps_the_extremes_and_the_median() {
        let samples: Vec<u32> = (0..1_001).collect();
        let thinned = thin(samples, 101);
        assert_eq!(thinned.len(), 101);
        assert_eq!((thinned[0], thinned[50], thinned[100]), (0, 500, 1_000));
        assert_eq!(thin(vec![3, 4], 10), vec![3, 4]);
    }
}
