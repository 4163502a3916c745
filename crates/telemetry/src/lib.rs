//! Tracing for Orderflow: the process's subscriber (the log, and OpenTelemetry export over OTLP when
//! configured) and the W3C trace context that follows an order across Kafka hops.
//!
//! # How a trace crosses Kafka
//! The HTTP request's span takes its parent from the caller's `traceparent` (when it sent one). Events the
//! request writes carry the request span's `traceparent` in their record headers; the outbox relay's publish
//! span is its child and replaces the header with its own context; each consumer's per-record span is a
//! child of the record's context, and outputs derived from a record carry that record span's context. So one
//! order's HTTP request, relay hop and every consumer's work form one trace, each hop the parent of the next.
//!
//! Parent, not span links: one record is one causal step of one order, so the trace of an order reads as a
//! tree from its request to its last effect, and a tracing UI shows it whole. Links would leave each hop in
//! a trace of its own (links suit a span with many causes; a consumer's batch span would be one, which is
//! why batches get no span of their own here: the per-record spans are the unit of work).

mod chain;
mod context;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, SpanExporter};
use serde::Deserialize;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer};

pub use chain::ErrorChain;
pub use context::{consumer_span, is_traceparent, publish_span, set_parent, spans_enabled, traceparent};

/// The target of the spans made for export (a relay publish, a consumed record): the log leaves them out,
/// so when nothing exports traces they are never even built (one per record would cost the hot path).
pub const SPANS: &str = "orderflow::spans";

/// The W3C trace context header, on HTTP requests and on Kafka records.
pub const TRACEPARENT: &str = "traceparent";

/// Trace export over OTLP (off by default: spans then only feed the log).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TracingSettings {
    /// OTLP/HTTP endpoint of a collector, e.g. `http://127.0.0.1:4318`; absent means no export.
    pub otlp_endpoint: Option<String>,
    /// The `service.name` spans are exported under.
    pub service_name: String,
    /// Fraction of new traces sampled (0.0 to 1.0); traces started upstream follow their parent's choice.
    pub sample_ratio: f64,
}

impl Default for TracingSettings {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            service_name: "orderflow".to_owned(),
            sample_ratio: 1.0,
        }
    }
}

/// Why tracing could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The OTLP exporter could not be built (a malformed endpoint, say).
    #[error("building the OTLP exporter for {endpoint}")]
    Exporter {
        /// The configured endpoint.
        endpoint: String,
        /// Why the exporter could not be built.
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
    /// A sample ratio outside 0..=1.
    #[error("tracing.sample_ratio must be between 0 and 1, not {0}")]
    SampleRatio(f64),
    /// A global subscriber was already installed.
    #[error("installing the tracing subscriber")]
    Install(#[source] tracing_subscriber::util::TryInitError),
}

/// Keeps the exporter running; dropping it flushes and stops the export (bounded by the SDK's timeout).
#[must_use = "dropping the guard stops trace export"]
pub struct TracingGuard(Option<SdkTracerProvider>);

impl Drop for TracingGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.0.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("warning: flushing traces failed: {}", ErrorChain(&e));
        }
    }
}

/// A tracer provider exporting to `exporter` in batches, sampling new traces at `ratio` (and following the
/// parent's decision for traces started upstream).
pub fn provider<E: SpanExporter + 'static>(exporter: E, service_name: &str, ratio: f64) -> SdkTracerProvider {
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service_name.to_owned())
        .build();
    SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio))))
        .with_resource(resource)
        .build()
}

/// The layer that turns `tracing` spans into OpenTelemetry spans of `provider`.
pub fn otel_layer<S>(provider: &SdkTracerProvider) -> impl Layer<S> + use<S>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    tracing_opentelemetry::layer().with_tracer(provider.tracer("orderflow"))
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One human-readable line per event, coloured only when stderr is a terminal.
    #[default]
    Text,
    /// One JSON object per event (timestamp, level, target, fields, the current span and its parents), for
    /// log collectors.
    Json,
}

/// Installs the process's subscriber: the log on stderr in `format`, filtered by `filter` (`info`,
/// `orderflow=debug`, ...) and, when `settings` name an endpoint, OTLP/HTTP export of every `info` span.
pub fn init(
    filter: &str,
    format: LogFormat,
    settings: &TracingSettings,
) -> Result<TracingGuard, TelemetryError> {
    use std::io::IsTerminal as _;
    use tracing_subscriber::filter::FilterExt as _;
    let log_filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let not_exported_only = tracing_subscriber::filter::filter_fn(|meta| meta.target() != SPANS);
    let lines = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let log = match format {
        // Escape codes only for a terminal: a file or a log collector would store them verbatim.
        LogFormat::Text => lines.with_ansi(std::io::stderr().is_terminal()).boxed(),
        LogFormat::Json => lines.json().with_current_span(true).with_span_list(true).boxed(),
    }
    .with_filter(log_filter.and(not_exported_only));
    let endpoint = settings
        .otlp_endpoint
        .as_deref()
        .map(str::trim)
        .filter(|e| !e.is_empty());
    let Some(endpoint) = endpoint else {
        tracing_subscriber::registry()
            .with(log)
            .try_init()
            .map_err(TelemetryError::Install)?;
        return Ok(TracingGuard(None));
    };
    if !(0.0..=1.0).contains(&settings.sample_ratio) {
        return Err(TelemetryError::SampleRatio(settings.sample_ratio));
    }
    use opentelemetry_otlp::WithExportConfig as _;
    let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(url)
        .build()
        .map_err(|source| TelemetryError::Exporter {
            endpoint: endpoint.to_owned(),
            source,
        })?;
    let provider = provider(exporter, &settings.service_name, settings.sample_ratio);
    tracing_subscriber::registry()
        .with(log)
        .with(otel_layer(&provider).with_filter(EnvFilter::new("info,h2=off,hyper=off,reqwest=off")))
        .try_init()
        .map_err(TelemetryError::Install)?;
    Ok(TracingGuard(Some(provider)))
}
