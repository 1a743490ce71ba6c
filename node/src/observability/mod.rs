//! Logs, traces and metrics: set up once at start, used everywhere through `tracing`
//! and the `metrics` facade.

pub mod http;

use crate::config::{Config, LogFormat};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use opentelemetry::trace::TracerProvider as _;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Keeps the trace exporter alive; dropping it flushes pending spans.
pub struct Telemetry {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            let _ = p.shutdown();
        }
    }
}

/// Installs the log subscriber (text on a terminal, JSON when configured) and, when an
/// OTLP endpoint is configured, the trace exporter.
pub fn init_tracing(config: &Config) -> anyhow::Result<Telemetry> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log_level));
    let fmt = match config.log_format {
        LogFormat::Text => tracing_subscriber::fmt::layer().with_target(false).boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer().json().flatten_event(true).boxed(),
    };
    let (otel, provider) = match config.otlp_endpoint.as_deref() {
        Some(endpoint) => {
            use opentelemetry_otlp::WithExportConfig;
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .build()?;
            let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(
                    opentelemetry_sdk::Resource::builder()
                        .with_service_name("meridian")
                        .with_attribute(opentelemetry::KeyValue::new("meridian.region", config.region.clone()))
                        .build(),
                )
                .build();
            let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("meridian"));
            (Some(layer), Some(provider))
        }
        None => (None, None),
    };
    tracing_subscriber::registry().with(filter).with(fmt).with(otel).try_init()?;
    Ok(Telemetry { provider })
}

/// Installs the Prometheus recorder; the handle renders `/metrics`.
pub fn init_metrics() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("duration_seconds".to_string()),
            &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0],
        )?
        // Appends to a follower not answered yet when one more is sent (pipelining).
        .set_buckets_for_metric(
            Matcher::Full("meridian_raft_appends_in_flight".to_string()),
            &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0],
        )?
        .install_recorder()?;
    Ok(handle)
}

pub fn record_raft_applied(index: u64) {
    metrics::gauge!("meridian_raft_applied_index").set(index as f64);
}

/// What a region's verified copies take (every node reports every region: the figures
/// are cluster state). Labelled by region only: a label per repository would grow without
/// bound; `meridian admin usage` has the per-repository view.
pub fn record_region_storage(region: &str, bytes: u64, blobs: u64) {
    metrics::gauge!("meridian_storage_bytes", "region" => region.to_string()).set(bytes as f64);
    metrics::gauge!("meridian_storage_blobs", "region" => region.to_string()).set(blobs as f64);
}
