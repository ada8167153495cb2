//! A tracer provider configured from the standard `OTEL_*` variables (or explicitly, for
//! the CLI), with export counted and a bounded shutdown.
//!
//! | variable | meaning |
//! |---|---|
//! | `OTEL_SDK_DISABLED` | `true` → no export at all |
//! | `OTEL_TRACES_EXPORTER` | `otlp` (default), `console`, `none` |
//! | `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` | the traces URL, used verbatim |
//! | `OTEL_EXPORTER_OTLP_ENDPOINT` | a base URL; `/v1/traces` is appended for HTTP |
//! | `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`, `OTEL_EXPORTER_OTLP_PROTOCOL` | `http/protobuf` (default) or `grpc` (feature `otel-grpc`) |
//! | `OTEL_EXPORTER_OTLP_HEADERS` | `k=v,k2=v2` (values percent-decoded) |
//! | `OTEL_SERVICE_NAME` | the resource's `service.name` (else `service.name` in `OTEL_RESOURCE_ATTRIBUTES`, else `kaos`) |
//! | `OTEL_RESOURCE_ATTRIBUTES` | `k=v,k2=v2` resource attributes; a `service.instance.id` is added per process unless given |
//! | `OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG` | `always_on`, `always_off`, `traceidratio`, `parentbased_*` |
//!
//! A blank value counts as unset; a value kaos does not understand is warned about and
//! ignored (the default applies), as the SDK specification asks: settings meant for another
//! SDK in a shared environment do not stop a turn.
//!
//! Export never blocks a turn: spans go through the SDK's batch processor (its own thread;
//! OTLP/HTTP uses the blocking reqwest client there), which drops rather than blocks when
//! its queue is full. Because the SDK's `shutdown()` returns `Ok` even when every export
//! failed, exports are counted ([`TelemetryStats`]).

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use opentelemetry::Context;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{
    BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider, SimpleSpanProcessor, Span, SpanData,
    SpanExporter, SpanProcessor,
};

use super::OTelHook;
use super::env::{Vars, ignored, pick, resource, signal_url};

/// Where spans go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Exporter {
    /// OTLP to a collector (default).
    #[default]
    Otlp,
    /// One line per span on stdout.
    Console,
    /// Kept in memory ([`Telemetry::memory_spans`]); for tests and the example.
    Memory,
    /// Nowhere.
    None,
}

/// The OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// OTLP/HTTP with protobuf bodies (default).
    #[default]
    HttpProtobuf,
    /// OTLP/gRPC (feature `otel-grpc`; needs a Tokio runtime).
    Grpc,
}

impl Exporter {
    /// Parses an `OTEL_TRACES_EXPORTER` item: `otlp`, `console` (or `stdout`, `logging`),
    /// `none`.
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "otlp" => Some(Self::Otlp),
            "console" | "stdout" | "logging" => Some(Self::Console),
            "none" => Some(Self::None),
            _ => None,
        }
    }
}

impl Protocol {
    /// The protocol variable `name`'s value `text`; `http/json` (which kaos does not send)
    /// and unknown values are warned about and give the default, `http/protobuf`.
    pub(super) fn from_var(name: &str, text: &str) -> Self {
        Self::parse(text).unwrap_or_else(|| {
            ignored(
                name,
                text,
                "kaos sends OTLP as http/protobuf or grpc (http/json is not supported)",
            );
            Self::default()
        })
    }

    /// Parses `http/protobuf` or `grpc`.
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "http/protobuf" | "http" => Some(Self::HttpProtobuf),
            "grpc" => Some(Self::Grpc),
            _ => None,
        }
    }
}

/// A telemetry setup error.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// A variable or option has a value we do not understand.
    #[error("invalid telemetry setting {name}={value:?}: {reason}")]
    Invalid {
        /// The variable or option.
        name: String,
        /// Its value.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// The exporter could not be built.
    #[error("cannot build the span exporter: {0}")]
    Exporter(String),
}

/// Export counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TelemetryStats {
    /// Spans that ended and were handed to the processor.
    pub ended: u64,
    /// Spans the exporter accepted.
    pub exported: u64,
    /// Spans in batches the exporter failed to send.
    pub failed: u64,
    /// Spans neither exported nor failed: dropped by a full queue, or still queued.
    pub pending_or_dropped: u64,
    /// Whether a shutdown ran to completion (then `pending_or_dropped` were dropped).
    pub shut_down: bool,
}

#[derive(Debug, Default)]
struct Counters {
    ended: AtomicU64,
    exported: AtomicU64,
    failed: AtomicU64,
    shut_down: std::sync::atomic::AtomicBool,
}

impl Counters {
    fn snapshot(&self) -> TelemetryStats {
        let ended = self.ended.load(Ordering::SeqCst);
        let exported = self.exported.load(Ordering::SeqCst);
        let failed = self.failed.load(Ordering::SeqCst);
        TelemetryStats {
            ended,
            exported,
            failed,
            pending_or_dropped: ended.saturating_sub(exported + failed),
            shut_down: self.shut_down.load(Ordering::SeqCst),
        }
    }
}

/// Wraps an exporter to count exported and failed spans.
#[derive(Debug)]
pub struct CountingExporter<E> {
    inner: E,
    counters: Arc<Counters>,
}

impl<E: SpanExporter> SpanExporter for CountingExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len() as u64;
        let result = self.inner.export(batch).await;
        match &result {
            Ok(()) => self.counters.exported.fetch_add(n, Ordering::SeqCst),
            Err(_) => self.counters.failed.fetch_add(n, Ordering::SeqCst),
        };
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// Counts spans as they end, then hands them to the real processor.
#[derive(Debug)]
struct CountingProcessor<P> {
    inner: P,
    counters: Arc<Counters>,
}

impl<P: SpanProcessor> SpanProcessor for CountingProcessor<P> {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        self.counters.ended.fetch_add(1, Ordering::SeqCst);
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// Keeps exported spans in memory.
#[derive(Debug, Clone, Default)]
pub struct MemoryExporter {
    spans: Arc<Mutex<Vec<SpanData>>>,
}

impl MemoryExporter {
    /// The spans exported so far.
    pub fn spans(&self) -> Vec<SpanData> {
        self.spans
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl SpanExporter for MemoryExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.spans
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend(batch);
        Ok(())
    }
}

/// Prints one line per span on stdout.
#[derive(Debug, Clone, Default)]
pub struct ConsoleExporter;

impl SpanExporter for ConsoleExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        for s in batch {
            let ms = s
                .end_time
                .duration_since(s.start_time)
                .map(|d| d.as_secs_f64() * 1000.0)
                .unwrap_or(0.0);
            let attrs: Vec<String> = s
                .attributes
                .iter()
                .map(|kv| format!("{}={}", kv.key, kv.value))
                .collect();
            writeln!(
                out,
                "span {} trace={} id={} parent={} {:.3}ms status={:?} {}",
                s.name,
                s.span_context.trace_id(),
                s.span_context.span_id(),
                s.parent_span_id,
                ms,
                s.status,
                attrs.join(" ")
            )
            .map_err(|e| OTelSdkError::InternalFailure(e.to_string()))?;
        }
        Ok(())
    }
}

/// Builds a [`Telemetry`]. Start from [`TelemetryBuilder::from_env`] (or `default()`),
/// then override with explicit options.
#[derive(Debug, Clone)]
pub struct TelemetryBuilder {
    disabled: bool,
    exporter: Exporter,
    protocol: Protocol,
    base_endpoint: Option<String>,
    traces_endpoint: Option<String>,
    headers: HashMap<String, String>,
    /// `service.name`, when set explicitly or by `OTEL_SERVICE_NAME` (see [`resource`]).
    service_name: Option<String>,
    sampler: Option<(String, Option<String>)>,
    timeout: Duration,
    max_retries: Option<usize>,
    batch: bool,
}

impl Default for TelemetryBuilder {
    fn default() -> Self {
        Self {
            disabled: false,
            exporter: Exporter::Otlp,
            protocol: Protocol::HttpProtobuf,
            base_endpoint: None,
            traces_endpoint: None,
            headers: HashMap::new(),
            service_name: None,
            sampler: None,
            timeout: Duration::from_secs(10),
            max_retries: None,
            batch: true,
        }
    }
}

/// A setting's value kaos cannot use, and why.
pub(super) fn invalid(name: &str, value: &str, reason: &str) -> TelemetryError {
    TelemetryError::Invalid {
        name: name.to_string(),
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

impl TelemetryBuilder {
    /// Settings from the process environment.
    pub fn from_env() -> Result<Self, TelemetryError> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// Settings from a variable lookup (testable without touching the environment). As the
    /// SDK specification asks, a blank value counts as unset and a value kaos does not
    /// understand is warned about (a `tracing` warning, once) and ignored: the default stays.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, TelemetryError> {
        let mut b = Self::default();
        let vars = Vars(var);
        if let Some(v) = vars.get("OTEL_SDK_DISABLED") {
            b.disabled = v.eq_ignore_ascii_case("true");
        }
        if let Some(v) = vars.get("OTEL_TRACES_EXPORTER") {
            let known = pick(
                "OTEL_TRACES_EXPORTER",
                &v,
                "kaos exports traces with otlp, console or none",
                Exporter::parse,
            );
            b.exporter = known.unwrap_or_default();
        }
        if let Some((name, v)) = vars.first(&[
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ]) {
            b.protocol = Protocol::from_var(&name, &v);
        }
        b.base_endpoint = vars.get("OTEL_EXPORTER_OTLP_ENDPOINT");
        b.traces_endpoint = vars.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
        if let Some(v) = vars.get("OTEL_EXPORTER_OTLP_HEADERS") {
            b.headers = parse_headers("OTEL_EXPORTER_OTLP_HEADERS", &v);
        }
        b.service_name = vars.get("OTEL_SERVICE_NAME");
        if let Some(v) = vars.get("OTEL_TRACES_SAMPLER") {
            b.sampler = Some((v, vars.get("OTEL_TRACES_SAMPLER_ARG")));
        }
        Ok(b)
    }

    /// Chooses the exporter.
    pub fn exporter(mut self, exporter: Exporter) -> Self {
        self.exporter = exporter;
        self
    }

    /// A base OTLP endpoint (`/v1/traces` is appended for HTTP).
    pub fn endpoint(mut self, base: impl Into<String>) -> Self {
        self.base_endpoint = Some(base.into());
        self.traces_endpoint = None;
        self
    }

    /// The exact traces URL (used verbatim).
    pub fn traces_endpoint(mut self, url: impl Into<String>) -> Self {
        self.traces_endpoint = Some(url.into());
        self
    }

    /// Chooses the OTLP transport.
    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = protocol;
        self
    }

    /// Adds an OTLP request header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// The resource's `service.name`.
    pub fn service_name(mut self, name: impl Into<String>) -> Self {
        self.service_name = Some(name.into());
        self
    }

    /// The OTLP request timeout (default 10 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How often a failed OTLP export is retried (the exporter's default when unset).
    pub fn max_retries(mut self, n: usize) -> Self {
        self.max_retries = Some(n);
        self
    }

    /// Export each span as it ends, synchronously, instead of in batches (tests only:
    /// this blocks the turn on the exporter).
    pub fn synchronous(mut self, yes: bool) -> Self {
        self.batch = !yes;
        self
    }

    /// Turns export off entirely.
    pub fn disabled(mut self, yes: bool) -> Self {
        self.disabled = yes;
        self
    }

    /// The traces URL the OTLP exporter will use.
    pub fn resolved_endpoint(&self) -> String {
        if let Some(url) = &self.traces_endpoint {
            return url.clone();
        }
        signal_url(self.protocol, self.base_endpoint.as_deref(), "v1/traces")
    }

    /// The sampler `OTEL_TRACES_SAMPLER` names (none: the SDK's default, parent-based
    /// always-on). An unknown sampler is ignored, and so is a ratio that is not a number in
    /// [0, 1] (the ratio is then 1), each with a warning.
    fn build_sampler(&self) -> Option<Sampler> {
        let (name, arg) = self.sampler.as_ref()?;
        let ratio = || -> f64 {
            let Some(a) = arg else {
                return 1.0;
            };
            match a.trim().parse::<f64>() {
                Ok(r) if (0.0..=1.0).contains(&r) => r,
                _ => {
                    ignored("OTEL_TRACES_SAMPLER_ARG", a, "expected a number in [0, 1]");
                    1.0
                }
            }
        };
        let s = match name.trim().to_ascii_lowercase().as_str() {
            "always_on" => Sampler::AlwaysOn,
            "always_off" => Sampler::AlwaysOff,
            "traceidratio" => Sampler::TraceIdRatioBased(ratio()),
            "parentbased_always_on" => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
            "parentbased_always_off" => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
            "parentbased_traceidratio" => {
                Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio())))
            }
            _ => {
                ignored(
                    "OTEL_TRACES_SAMPLER",
                    name,
                    "kaos knows always_on, always_off, traceidratio and their parentbased_ forms",
                );
                return None;
            }
        };
        Some(s)
    }

    /// Builds the provider. OTLP exporters connect lazily: a collector that is down only
    /// shows up in [`TelemetryStats::failed`].
    pub fn build(self) -> Result<Telemetry, TelemetryError> {
        let counters = Arc::new(Counters::default());
        let resource = self.resource();
        let mut provider = SdkTracerProvider::builder().with_resource(resource);
        if let Some(sampler) = self.build_sampler() {
            provider = provider.with_sampler(sampler);
        }
        let mut memory = None;
        let exporter = if self.disabled {
            Exporter::None
        } else {
            self.exporter
        };
        provider = match exporter {
            Exporter::None => provider,
            Exporter::Memory => {
                let m = MemoryExporter::default();
                memory = Some(m.clone());
                self.attach(provider, m, &counters)
            }
            Exporter::Console => self.attach(provider, ConsoleExporter, &counters),
            Exporter::Otlp => {
                let otlp = self.otlp_exporter()?;
                self.attach(provider, otlp, &counters)
            }
        };
        Ok(Telemetry {
            provider: provider.build(),
            counters,
            memory,
            exporter,
            endpoint: (exporter == Exporter::Otlp).then(|| self.resolved_endpoint()),
        })
    }

    fn attach<E: SpanExporter + 'static>(
        &self,
        provider: opentelemetry_sdk::trace::TracerProviderBuilder,
        exporter: E,
        counters: &Arc<Counters>,
    ) -> opentelemetry_sdk::trace::TracerProviderBuilder {
        let exporter = CountingExporter {
            inner: exporter,
            counters: counters.clone(),
        };
        if self.batch {
            provider.with_span_processor(CountingProcessor {
                inner: BatchSpanProcessor::builder(exporter).build(),
                counters: counters.clone(),
            })
        } else {
            provider.with_span_processor(CountingProcessor {
                inner: SimpleSpanProcessor::new(exporter),
                counters: counters.clone(),
            })
        }
    }

    /// The resource spans are exported with: `service.name` from [`Self::service_name`],
    /// else `OTEL_SERVICE_NAME`, else `service.name` in `OTEL_RESOURCE_ATTRIBUTES`, else
    /// `kaos`; the rest of `OTEL_RESOURCE_ATTRIBUTES`; a `service.instance.id` per process.
    pub fn resource(&self) -> Resource {
        resource(self.service_name.as_deref())
    }

    /// A bare OTLP exporter with these settings (e.g. to replay recorded spans with
    /// [`export_recorded`](super::export_recorded)).
    pub fn otlp_exporter(&self) -> Result<opentelemetry_otlp::SpanExporter, TelemetryError> {
        use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
        let endpoint = self.resolved_endpoint();
        let retry = self
            .max_retries
            .map(|n| opentelemetry_otlp::RetryPolicy::default().with_max_retries(n));
        match self.protocol {
            Protocol::HttpProtobuf => {
                let mut b = opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                    .with_endpoint(endpoint)
                    .with_timeout(self.timeout)
                    .with_headers(self.headers.clone());
                if let Some(r) = retry {
                    b = b.with_retry_policy(r);
                }
                b.build()
                    .map_err(|e| TelemetryError::Exporter(e.to_string()))
            }
            #[cfg(feature = "otel-grpc")]
            Protocol::Grpc => {
                use opentelemetry_otlp::WithTonicConfig;
                let meta = grpc_metadata(&self.headers)?;
                let mut b = opentelemetry_otlp::SpanExporter::builder()
                    .with_tonic()
                    .with_endpoint(endpoint)
                    .with_timeout(self.timeout)
                    .with_metadata(meta);
                if let Some(r) = retry {
                    b = b.with_retry_policy(r);
                }
                b.build()
                    .map_err(|e| TelemetryError::Exporter(e.to_string()))
            }
            #[cfg(not(feature = "otel-grpc"))]
            Protocol::Grpc => Err(invalid(
                "OTEL_EXPORTER_OTLP_PROTOCOL",
                "grpc",
                "this build has no gRPC transport (cargo feature otel-grpc)",
            )),
        }
    }
}

/// OTLP headers as gRPC metadata.
#[cfg(feature = "otel-grpc")]
pub(super) fn grpc_metadata(
    headers: &HashMap<String, String>,
) -> Result<opentelemetry_otlp::tonic_types::metadata::MetadataMap, TelemetryError> {
    let mut map = http::HeaderMap::new();
    for (k, v) in headers {
        let name = http::header::HeaderName::from_bytes(k.as_bytes())
            .map_err(|e| invalid("OTEL_EXPORTER_OTLP_HEADERS", k, &e.to_string()))?;
        let value = http::header::HeaderValue::from_str(v)
            .map_err(|e| invalid("OTEL_EXPORTER_OTLP_HEADERS", k, &e.to_string()))?;
        map.insert(name, value);
    }
    Ok(opentelemetry_otlp::tonic_types::metadata::MetadataMap::from_headers(map))
}

/// Parses `k=v,k2=v2` with percent-encoded values (variable `name`); a pair without `=` is
/// warned about and skipped.
pub(super) fn parse_headers(name: &str, text: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for pair in text.split(',').filter(|p| !p.trim().is_empty()) {
        match pair.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                out.insert(percent_decode(k.trim()), percent_decode(v.trim()));
            }
            _ => ignored(name, pair.trim(), "expected key=value"),
        }
    }
    out
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(hex) = std::str::from_utf8(&bytes[i + 1..i + 3])
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A configured tracer provider with export counters.
pub struct Telemetry {
    provider: SdkTracerProvider,
    counters: Arc<Counters>,
    memory: Option<MemoryExporter>,
    exporter: Exporter,
    endpoint: Option<String>,
}

impl fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Telemetry")
            .field("exporter", &self.exporter)
            .field("endpoint", &self.endpoint)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Telemetry {
    /// [`TelemetryBuilder::from_env`] then `build()`.
    pub fn from_env() -> Result<Self, TelemetryError> {
        TelemetryBuilder::from_env()?.build()
    }

    /// A builder with defaults (OTLP/HTTP to localhost, batch export).
    pub fn builder() -> TelemetryBuilder {
        TelemetryBuilder::default()
    }

    /// The exporter in use.
    pub fn exporter(&self) -> Exporter {
        self.exporter
    }

    /// The OTLP traces URL, when exporting over OTLP.
    pub fn endpoint(&self) -> Option<&str> {
        self.endpoint.as_deref()
    }

    /// The provider (e.g. to install it globally).
    pub fn provider(&self) -> &SdkTracerProvider {
        &self.provider
    }

    /// The `kaos.agents` tracer.
    pub fn tracer(&self) -> SdkTracer {
        self.provider.tracer("kaos.agents")
    }

    /// An [`OTelHook`] over [`Telemetry::tracer`].
    pub fn hook(&self) -> OTelHook {
        OTelHook::new(self.tracer())
    }

    /// Makes this provider the global one (for [`OTelHook::global`]).
    pub fn install_global(&self) {
        opentelemetry::global::set_tracer_provider(self.provider.clone());
    }

    /// The spans of the [`Exporter::Memory`] exporter (empty for other exporters).
    pub fn memory_spans(&self) -> Vec<SpanData> {
        self.memory
            .as_ref()
            .map(MemoryExporter::spans)
            .unwrap_or_default()
    }

    /// The export counters now.
    pub fn stats(&self) -> TelemetryStats {
        self.counters.snapshot()
    }

    /// A reader of the export counters that outlives this value (for metrics callbacks).
    pub fn stats_source(&self) -> impl Fn() -> TelemetryStats + Send + Sync + 'static {
        let counters = self.counters.clone();
        move || counters.snapshot()
    }

    /// Exports what is queued; waits at most `deadline` (the flush goes on in the background
    /// if it is slower). Returns whether it finished in time.
    pub fn flush_with_deadline(&self, deadline: Duration) -> bool {
        let provider = self.provider.clone();
        run_with_deadline(deadline, move || provider.force_flush()).is_some()
    }

    /// Flushes and shuts the provider down on a separate thread, returning within
    /// `deadline` even when the collector is down or hangs (the SDK's own shutdown can block
    /// for the exporter's whole timeout). The stats say what was exported and what failed;
    /// `shut_down` is false if the deadline passed first.
    pub fn shutdown_with_deadline(&self, deadline: Duration) -> TelemetryStats {
        let provider = self.provider.clone();
        let counters = self.counters.clone();
        let done = run_with_deadline(deadline, move || {
            let result = provider.shutdown_with_timeout(deadline);
            counters.shut_down.store(true, Ordering::SeqCst);
            result
        });
        if let Some(Err(e)) = &done {
            tracing::warn!(error = %e, "telemetry shutdown reported an error");
        }
        self.stats()
    }
}

/// Runs `f` on its own thread; its result if it finished within `deadline`.
pub(super) fn run_with_deadline<T: Send + 'static>(
    deadline: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("kaos-otel-shutdown".into())
        .spawn(move || {
            let _ = tx.send(f());
        });
    if spawned.is_err() {
        return None;
    }
    rx.recv_timeout(deadline).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn endpoints_follow_the_spec() {
        let b = TelemetryBuilder::from_vars(vars(&[(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "http://collector:4318/",
        )]))
        .unwrap();
        assert_eq!(b.resolved_endpoint(), "http://collector:4318/v1/traces");
        let b = TelemetryBuilder::from_vars(vars(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://x:1/custom"),
        ]))
        .unwrap();
        assert_eq!(b.resolved_endpoint(), "http://x:1/custom");
        assert_eq!(
            TelemetryBuilder::default().resolved_endpoint(),
            "http://localhost:4318/v1/traces"
        );
    }

    #[test]
    fn env_parsing() {
        let b = TelemetryBuilder::from_vars(vars(&[
            ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=a%20b,x=1"),
            ("OTEL_SERVICE_NAME", "svc"),
            ("OTEL_TRACES_EXPORTER", "console"),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.5"),
        ]))
        .unwrap();
        assert_eq!(b.headers["api-key"], "a b");
        assert_eq!(b.service_name.as_deref(), Some("svc"));
        assert_eq!(b.exporter, Exporter::Console);
        assert!(matches!(b.build_sampler(), Some(Sampler::ParentBased(_))));
    }

    #[test]
    fn values_it_does_not_understand_are_ignored_not_fatal() {
        // The SDK specification: blank means unset; unknown enum values are warned about and
        // ignored. A shared environment's setting for another SDK must not stop a turn.
        let b = TelemetryBuilder::from_vars(vars(&[
            ("OTEL_TRACES_EXPORTER", "zipkin"),
            ("OTEL_TRACES_SAMPLER", "bogus"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "novalue,k=v"),
            ("OTEL_SERVICE_NAME", " "),
        ]))
        .unwrap();
        assert_eq!(b.exporter, Exporter::Otlp);
        assert!(b.build_sampler().is_none());
        assert_eq!(b.protocol, Protocol::HttpProtobuf);
        assert_eq!(b.headers.len(), 1);
        assert_eq!(b.service_name, None);
        let b = TelemetryBuilder::from_vars(vars(&[
            ("OTEL_TRACES_EXPORTER", "zipkin, console ,otlp"),
            ("OTEL_TRACES_SAMPLER", "traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "7"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"),
        ]))
        .unwrap();
        assert_eq!(b.exporter, Exporter::Console);
        assert!(matches!(
            b.build_sampler(),
            Some(Sampler::TraceIdRatioBased(r)) if r == 1.0
        ));
        assert_eq!(b.protocol, Protocol::Grpc);
        let b = TelemetryBuilder::from_vars(vars(&[("OTEL_TRACES_EXPORTER", "")])).unwrap();
        assert_eq!(b.exporter, Exporter::Otlp);
        let off = TelemetryBuilder::from_vars(vars(&[("OTEL_SDK_DISABLED", "true")]))
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(off.exporter(), Exporter::None);
    }
}
