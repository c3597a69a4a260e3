//! `GET /metrics`: the node's metrics in the Prometheus text format. The process installs a
//! `metrics-exporter-prometheus` recorder before the runtime is built (the runtime registers its
//! hot-path handles then); each scrape first records the state read at scrape time
//! ([`kommander::observe`]), then renders. Histograms have buckets (seconds, entries), so they
//! aggregate across nodes; gauges not updated for five minutes (partitions that left the top-N of
//! `--metrics-partitions`) are dropped.

use crate::api::ApiState;
use crate::auth::ClientAccess;
use actix_web::{web, HttpResponse};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;
use std::time::Duration;

/// Buckets of the latency histograms, in seconds (50 µs to 5 s).
const SECONDS_BUCKETS: &[f64] =
    &[0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
/// Buckets of the entries-per-sync histogram.
const ENTRIES_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0];
/// How often the recorder drains its histogram samples into buckets between scrapes.
const UPKEEP: Duration = Duration::from_secs(5);

/// Install the process-wide recorder (call once, before building the `RaftManager`) and describe
/// the runtime's metrics. Spawns the recorder's upkeep on the current actix system.
pub fn install() -> Result<PrometheusHandle, BuildError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)?
        .set_buckets_for_metric(
            Matcher::Full(kommander::actors::metrics::WAL_ENTRIES_PER_SYNC.into()),
            ENTRIES_BUCKETS,
        )?
        .idle_timeout(MetricKindMask::GAUGE, Some(Duration::from_secs(300)))
        .install_recorder()?;
    kommander::actors::metrics::describe();
    let upkeep = handle.clone();
    actix_rt::spawn(async move {
        let mut interval = actix_rt::time::interval(UPKEEP);
        loop {
            interval.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

/// `GET /metrics` (client scope, like `/status`).
pub async fn scrape(_: ClientAccess, state: web::Data<ApiState>) -> HttpResponse {
    let Some(handle) = &state.metrics else {
        return HttpResponse::NotFound().body("metrics are not enabled on this node");
    };
    kommander::observe::record_node_metrics(&state.manager, state.metrics_partitions);
    kommander::observe::record_transport_metrics(&state.net);
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(handle.render())
}
