//! Logs and traces. Logs go to stderr as text or JSON (`[telemetry] log_format`); spans go to
//! an OTLP/HTTP endpoint when one is configured (`[telemetry] otlp_endpoint` or the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT`), through a batch processor on a thread of its own: exporting
//! never blocks a pipeline, and a backend that is down costs the spans, nothing else (the queue
//! is bounded and drops when full). Service name and sampling follow the standard
//! `OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG` unless the config sets
//! them. W3C trace context travels in Kafka headers and HTTP headers (see [`inject`],
//! [`extract`]).

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider,
};
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::layer::{Layer as _, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

use anyhow::Context as _;

use crate::config::{LogFormat, TelemetryConfig, TlsConfig};

/// Spans awaiting export, at most; beyond that new spans are dropped.
const MAX_QUEUED_SPANS: usize = 4096;

/// What must be flushed before the process exits.
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Exports the spans queued so far, now.
    pub fn flush(&self) {
        if let Err(error) = self.provider.force_flush() {
            tracing::warn!(%error, "flushing spans");
        }
    }

    /// Exports the spans still queued (bounded by the exporter's timeout).
    pub fn shutdown(&self) {
        if let Err(error) = self.provider.shutdown() {
            eprintln!("mot: flushing spans: {error}");
        }
    }
}

/// Installs the global subscriber (logs + spans) and the W3C propagator. Call once, outside
/// any async runtime (the exporter's blocking HTTP client is built here). An `https://`
/// collector is trusted through `tls.ca_file` too, as every other `https://` call mot makes.
pub fn init(config: &TelemetryConfig, tls: &TlsConfig) -> anyhow::Result<Telemetry> {
    let mut builder = SdkTracerProvider::builder();
    let endpoint = config
        .otlp_endpoint
        .clone()
        .or_else(|| std::env::var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").ok())
        .or_else(|| std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok());
    if let Some(endpoint) = &endpoint {
        use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
        let traces = if endpoint.ends_with("/v1/traces") {
            endpoint.clone()
        } else {
            format!("{}/v1/traces", endpoint.trim_end_matches('/'))
        };
        let mut client =
            reqwest_otlp::blocking::Client::builder().timeout(std::time::Duration::from_secs(5));
        if let Some(ca) = &tls.ca_file {
            let pem = std::fs::read(ca)
                .with_context(|| format!("tls.ca_file {}: cannot read", ca.display()))?;
            for cert in reqwest_otlp::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("tls.ca_file {}: not PEM certificates", ca.display()))?
            {
                client = client.add_root_certificate(cert);
            }
        }
        let client = client.build()?;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_endpoint(traces)
            .build()?;
        let batch = BatchSpanProcessor::builder(exporter)
            .with_batch_config(
                BatchConfigBuilder::default()
                    .with_max_queue_size(MAX_QUEUED_SPANS)
                    .with_scheduled_delay(std::time::Duration::from_millis(500))
                    .build(),
            )
            .build();
        builder = builder.with_span_processor(batch);
    }
    if let Some(ratio) = config.sample_ratio {
        builder = builder.with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            ratio,
        ))));
    }
    let mut resource = opentelemetry_sdk::Resource::builder();
    if let Some(name) = &config.service_name {
        resource = resource.with_service_name(name.clone());
    } else if std::env::var("OTEL_SERVICE_NAME").is_err() {
        resource = resource.with_service_name("mot");
    }
    let provider = builder.with_resource(resource.build()).build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    opentelemetry::global::set_tracer_provider(provider.clone());

    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,scylla=warn,actix_server=warn".into());
    // RUST_LOG filters the logs only: quieter logs must not break the traces.
    let otel = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("mot"))
        .with_filter(tracing_subscriber::filter::LevelFilter::INFO);
    let registry = tracing_subscriber::registry().with(otel);
    match config.log_format {
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .event_format(WithTraceIds {
                        inner: tracing_subscriber::fmt::format(),
                        json: false,
                    })
                    .with_writer(std::io::stderr)
                    .with_filter(filter),
            )
            .try_init()?,
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .event_format(WithTraceIds {
                        inner: tracing_subscriber::fmt::format()
                            .json()
                            .with_current_span(true)
                            .with_span_list(false),
                        json: true,
                    })
                    .with_writer(std::io::stderr)
                    .with_filter(filter),
            )
            .try_init()?,
    }
    if let Some(endpoint) = endpoint {
        tracing::info!(%endpoint, "exporting spans over OTLP/HTTP");
    }
    Ok(Telemetry { provider })
}

/// A log line formatter that adds the trace and span ids of the span the event happened in
/// (when it is traced): `trace_id` and `span_id` fields in JSON, `trace_id=… span_id=…` at
/// the end of a text line. A log line and its trace find each other by these ids.
struct WithTraceIds<F> {
    inner: F,
    json: bool,
}

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N> + Send + Sync + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let ids = ctx.lookup_current().and_then(|span| {
            use opentelemetry::trace::TraceContextExt;
            let dispatch = tracing::dispatcher::get_default(|d| d.clone());
            let cx = tracing_opentelemetry::get_otel_context(&span.id(), &dispatch)?;
            let span = cx.span();
            let context = span.span_context();
            context.is_valid().then(|| {
                (
                    context.trace_id().to_string(),
                    context.span_id().to_string(),
                )
            })
        });
        let Some((trace_id, span_id)) = ids else {
            return self.inner.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        let line = line.trim_end_matches('\n');
        if self.json {
            match serde_json::from_str::<serde_json::Value>(line) {
                Ok(serde_json::Value::Object(mut fields)) => {
                    fields.insert("trace_id".into(), trace_id.into());
                    fields.insert("span_id".into(), span_id.into());
                    writeln!(writer, "{}", serde_json::Value::Object(fields))
                }
                _ => writeln!(writer, "{line}"),
            }
        } else {
            writeln!(writer, "{line} trace_id={trace_id} span_id={span_id}")
        }
    }
}

struct HeaderInjector<'a>(&'a mut Vec<(String, Vec<u8>)>);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.retain(|(k, _)| k != key);
        self.0.push((key.to_owned(), value.into_bytes()));
    }
}

struct HeaderExtractor<'a>(&'a [(String, Vec<u8>)]);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_str()).collect()
    }
}

/// Writes `span`'s context into `headers` (`traceparent`, `tracestate`), replacing any there.
pub fn inject(span: &tracing::Span, headers: &mut Vec<(String, Vec<u8>)>) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let cx = span.context();
    TraceContextPropagator::new().inject_context(&cx, &mut HeaderInjector(headers));
}

/// The trace context `headers` carry (an empty context when none).
pub fn extract(headers: &[(String, Vec<u8>)]) -> opentelemetry::Context {
    TraceContextPropagator::new().extract(&HeaderExtractor(headers))
}

/// The trace id of `span`, as 32 hex digits (all zeros when it is not traced).
pub fn trace_id(span: &tracing::Span) -> String {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    span.context().span().span_context().trace_id().to_string()
}
