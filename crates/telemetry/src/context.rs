//! W3C `traceparent` values to and from `tracing` spans.

use opentelemetry::Context;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// Parses `00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`; anything else (or all-zero ids) is `None`.
pub(crate) fn parse(traceparent: &str) -> Option<SpanContext> {
    let mut parts = traceparent.trim().split('-');
    let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version != "00" || parts.next().is_some() || trace.len() != 32 || span.len() != 16 || flags.len() != 2
    {
        return None;
    }
    let trace_id = TraceId::from_hex(trace).ok()?;
    let span_id = SpanId::from_hex(span).ok()?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    let context = SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(flags),
        true,
        TraceState::default(),
    );
    context.is_valid().then_some(context)
}

/// Whether `value` is a well-formed `traceparent` (version 00, non-zero ids).
pub fn is_traceparent(value: &str) -> bool {
    parse(value).is_some()
}

/// Makes the remote context in `traceparent` the parent of `span` (ignored when malformed, or when no
/// OpenTelemetry layer is installed).
pub fn set_parent(span: &tracing::Span, traceparent: &str) {
    if let Some(remote) = parse(traceparent) {
        let _ = span.set_parent(Context::new().with_remote_span_context(remote));
    }
}

/// The `traceparent` of `span`, when OpenTelemetry tracks it (else `None`: the caller then passes on what it
/// received).
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    let span_ref = context.span();
    let current = span_ref.span_context();
    current.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            current.trace_id(),
            current.span_id(),
            current.trace_flags().to_u8()
        )
    })
}

/// `span`, made a child of `traceparent` when there is one.
fn child_of(span: tracing::Span, traceparent: Option<&str>) -> tracing::Span {
    if let Some(parent) = traceparent {
        set_parent(&span, parent);
    }
    span
}

/// Whether the spans made for export ([`crate::SPANS`]) are built at all: false unless a layer exports them.
pub fn spans_enabled() -> bool {
    tracing::span_enabled!(target: crate::SPANS, tracing::Level::INFO)
}

/// The span of publishing one record: a child of the write that produced it (`traceparent`), with the
/// OpenTelemetry messaging attributes; consumers continue from it.
pub fn publish_span(topic: &str, message_id: &str, traceparent: Option<&str>) -> tracing::Span {
    let span = tracing::info_span!(
        target: crate::SPANS,
        "publish",
        otel.name = %format!("{topic} publish"),
        otel.kind = "producer",
        messaging.system = "kafka",
        messaging.operation.type = "send",
        messaging.destination.name = %topic,
        messaging.message.id = %message_id,
    );
    child_of(span, traceparent)
}

/// The span of one consumed record: a child of the record's `traceparent`, named after what consumes it,
/// with the OpenTelemetry messaging attributes.
pub fn consumer_span(
    group: &str,
    topic: &str,
    partition: i32,
    offset: i64,
    traceparent: Option<&str>,
) -> tracing::Span {
    let span = tracing::info_span!(
        target: crate::SPANS,
        "process",
        otel.name = %format!("{topic} process"),
        otel.kind = "consumer",
        messaging.system = "kafka",
        messaging.operation.type = "process",
        messaging.destination.name = %topic,
        messaging.consumer.group.name = %group,
        messaging.destination.partition.id = partition,
        messaging.kafka.offset = offset,
    );
    child_of(span, traceparent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_valid_traceparents_only() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let context = parse(good).map(|c| (c.trace_id().to_string(), c.span_id().to_string()));
        assert_eq!(
            context,
            Some((
                "4bf92f3577b34da6a3ce929d0e0e4736".into(),
                "00f067aa0ba902b7".into()
            ))
        );
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-xyz92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert!(parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn a_child_span_continues_the_remote_trace() {
        use tracing_subscriber::layer::SubscriberExt as _;
        let exporter = opentelemetry_sdk::trace::InMemorySpanExporter::default();
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let subscriber = tracing_subscriber::registry().with(crate::otel_layer(&provider));
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let propagated = tracing::subscriber::with_default(subscriber, || {
            let span = consumer_span("g", "order.created", 0, 7, Some(parent));
            traceparent(&span)
        });
        let propagated = propagated.unwrap_or_default();
        assert!(
            propagated.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{propagated}"
        );
        assert!(
            !propagated.contains("00f067aa0ba902b7"),
            "a new span id: {propagated}"
        );
        let _ = provider.force_flush();
        let spans = exporter.get_finished_spans().unwrap_or_default();
        assert_eq!(spans.len(), 1);
        assert_eq!(spans[0].parent_span_id.to_string(), "00f067aa0ba902b7");
        assert_eq!(spans[0].name, "order.created process");
    }
}
