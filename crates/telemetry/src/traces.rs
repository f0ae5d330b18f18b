//! Traces: W3C trace context in and out through the OpenTelemetry propagator, and span export
//! over OTLP/HTTP when a collector is configured.
//!
//! The `tracing` spans Keel already writes (request, job, mail) become OpenTelemetry spans
//! through `tracing-opentelemetry`; database statements become spans from sea-orm's metric
//! callback ([`record_db_statement`]). Without a collector, spans are still given W3C ids (so
//! logs carry `trace_id` and jobs continue their request's trace) but nothing is recorded.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use keel_config::{OtlpProtocol, Settings};
use opentelemetry::trace::{
    Span as _, SpanKind, Status, TraceContextExt as _, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue, global};
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::TelemetryError;

/// The standard variables that switch export on when `telemetry.otlp.endpoint` is unset.
const ENDPOINT_VARIABLES: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

/// Flushes and stops span export when dropped: keep it alive until the process exits.
#[derive(Debug, Default)]
#[must_use = "dropping the guard stops span export"]
pub struct TraceGuard {
    provider: Option<SdkTracerProvider>,
}

impl TraceGuard {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }
}

impl Drop for TraceGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown()
        {
            tracing::warn!(%error, "flushing spans at exit failed");
        }
    }
}

fn variable(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The collector's traces URL: Keel's key (a base URL), else the standard variables, the
/// traces-specific one (a full URL) first, as the OpenTelemetry specification orders them.
fn traces_url(settings: &Settings) -> Option<String> {
    if variable("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return None;
    }
    let with_path = |base: String| {
        let base = base.trim_end_matches('/');
        if base.ends_with("/v1/traces") {
            base.to_owned()
        } else {
            format!("{base}/v1/traces")
        }
    };
    settings
        .telemetry
        .otlp
        .endpoint
        .clone()
        .map(with_path)
        .or_else(|| variable(ENDPOINT_VARIABLES[0]))
        .or_else(|| variable(ENDPOINT_VARIABLES[1]).map(with_path))
}

fn resource(settings: &Settings, process: &str) -> Resource {
    let otlp = &settings.telemetry.otlp;
    let service = otlp
        .service_name
        .clone()
        .or_else(|| variable("OTEL_SERVICE_NAME"))
        .unwrap_or_else(|| format!("{}-{process}", settings.app.name));
    let (version, git_sha) = crate::build_info();
    let mut attributes = vec![
        KeyValue::new("service.version", version),
        KeyValue::new("deployment.environment.name", settings.environment.as_str()),
        KeyValue::new("vcs.ref.head.revision", git_sha),
    ];
    attributes.extend(
        otlp.resource_attributes
            .iter()
            .map(|(key, value)| KeyValue::new(key.clone(), value.clone())),
    );
    // The builder also reads OTEL_RESOURCE_ATTRIBUTES; explicit settings win.
    Resource::builder()
        .with_service_name(service)
        .with_attributes(attributes)
        .build()
}

/// Sets up trace context propagation and, when a collector is configured, span export; returns
/// the `tracing` layer that turns spans into OpenTelemetry spans.
pub(crate) fn init<S>(
    settings: &Settings,
    process: &str,
    export: bool,
) -> Result<
    (
        TraceGuard,
        tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>,
    ),
    TelemetryError,
>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    global::set_text_map_propagator(TraceContextPropagator::new());
    let url = if export { traces_url(settings) } else { None };
    let (provider, guard) = match url {
        Some(url) => {
            let protocol = match settings.telemetry.otlp.protocol {
                OtlpProtocol::HttpProtobuf => Protocol::HttpBinary,
                OtlpProtocol::HttpJson => Protocol::HttpJson,
            };
            let timeout = settings.telemetry.otlp.timeout;
            // The blocking HTTP client runs a runtime of its own, which must not be created
            // inside the caller's async context: build it on a plain thread. It then lives on
            // the batch processor's thread, where it is also dropped.
            let exporter = std::thread::scope(|scope| {
                scope
                    .spawn(|| {
                        opentelemetry_otlp::SpanExporter::builder()
                            .with_http()
                            .with_protocol(protocol)
                            .with_endpoint(url)
                            .with_timeout(timeout)
                            .build()
                    })
                    .join()
            })
            .map_err(|_| TelemetryError::Traces("building the exporter panicked".to_owned()))?
            .map_err(|e| TelemetryError::Traces(e.to_string()))?;
            let mut builder = SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(resource(settings, process));
            // Keel's key, when set, wins; otherwise the SDK reads OTEL_TRACES_SAMPLER and
            // OTEL_TRACES_SAMPLER_ARG itself (default: parent-based, always on).
            if let Some(ratio) = settings.telemetry.otlp.sample_ratio {
                builder = builder.with_sampler(Sampler::ParentBased(Box::new(
                    Sampler::TraceIdRatioBased(ratio),
                )));
            }
            let provider = builder.build();
            (
                provider.clone(),
                TraceGuard {
                    provider: Some(provider),
                },
            )
        }
        // Ids for logs and propagation, nothing recorded: the cheapest way to keep one code
        // path whether or not a collector listens.
        None => (
            SdkTracerProvider::builder()
                // A caller's sampling decision still travels on (to jobs, whose worker may
                // export); nothing is recorded here.
                .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOff)))
                .build(),
            TraceGuard::default(),
        ),
    };
    global::set_tracer_provider(provider.clone());
    let recording = guard.provider.is_some();
    // Without a collector nothing is recorded: skip the per-span attributes only an exported
    // span would carry (busy and idle time take two clock reads per poll of every span).
    let layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("keel"))
        .with_tracked_inactivity(recording)
        .with_threads(recording)
        .with_location(recording);
    Ok((guard, layer))
}

/// Makes `span` continue the trace of a W3C `traceparent` (and `tracestate`) written by a
/// caller or stored with a job. Invalid values are ignored: the span starts a new trace.
pub fn continue_trace(span: &tracing::Span, traceparent: Option<&str>, tracestate: Option<&str>) {
    let Some(traceparent) = traceparent else {
        return;
    };
    let mut carrier = HashMap::with_capacity(2);
    carrier.insert("traceparent".to_owned(), traceparent.to_owned());
    if let Some(state) = tracestate {
        carrier.insert("tracestate".to_owned(), state.to_owned());
    }
    let parent = global::get_text_map_propagator(|p| p.extract(&carrier));
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
}

/// The W3C `traceparent` naming the current span as parent, for work that continues this
/// trace elsewhere (a job, an outbound request); `None` outside any trace.
pub fn current_traceparent() -> Option<String> {
    let context = tracing::Span::current().context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier: HashMap<String, String> = HashMap::with_capacity(2);
    global::get_text_map_propagator(|p| p.inject_context(&context, &mut carrier));
    carrier.remove("traceparent")
}

/// The trace and span ids of `span` (lowercase hex), when it has them.
pub fn ids(span: &tracing::Span) -> Option<(String, String)> {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then(|| {
        (
            span_context.trace_id().to_string(),
            span_context.span_id().to_string(),
        )
    })
}

/// Records one finished database statement as a span under the current span (sea-orm's
/// metric callback calls this after each statement). The SQL carries placeholders, never the
/// bound values. Costs nothing unless the current trace is being recorded.
pub fn record_db_statement(system: &'static str, sql: &str, elapsed: Duration, failed: bool) {
    let parent: Context = tracing::Span::current().context();
    if !parent.span().span_context().is_sampled() {
        return;
    }
    let end = SystemTime::now();
    let start = end.checked_sub(elapsed).unwrap_or(end);
    let operation = sql
        .split_whitespace()
        .next()
        .unwrap_or("QUERY")
        .to_ascii_uppercase();
    let tracer = global::tracer("keel.db");
    let mut span = tracer
        .span_builder(format!("{operation} {system}"))
        .with_kind(SpanKind::Client)
        .with_start_time(start)
        .with_attributes([
            KeyValue::new("db.system.name", system),
            KeyValue::new("db.operation.name", operation),
            KeyValue::new("db.query.text", sql.chars().take(2048).collect::<String>()),
        ])
        .start_with_context(&tracer, &parent);
    if failed {
        span.set_status(Status::error("statement failed"));
    }
    span.end_with_timestamp(end);
}
