//! A meter provider configured from the standard `OTEL_*` variables: the same OTLP endpoint
//! and headers as the traces, a periodic reader on its own thread (no async runtime), and a
//! bounded flush at exit.
//!
//! | variable | meaning |
//! |---|---|
//! | `OTEL_SDK_DISABLED` | `true` → no metrics |
//! | `OTEL_METRICS_EXPORTER` | `otlp` (default), `console`, `none` |
//! | `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` | the metrics URL, used verbatim |
//! | `OTEL_EXPORTER_OTLP_ENDPOINT` | a base URL; `/v1/metrics` is appended for HTTP |
//! | `OTEL_EXPORTER_OTLP_METRICS_PROTOCOL`, `OTEL_EXPORTER_OTLP_PROTOCOL` | `http/protobuf` (default) or `grpc` (feature `otel-grpc`) |
//! | `OTEL_EXPORTER_OTLP_METRICS_HEADERS`, `OTEL_EXPORTER_OTLP_HEADERS` | `k=v,k2=v2` (values percent-decoded) |
//! | `OTEL_METRIC_EXPORT_INTERVAL` | milliseconds between exports (default 60000) |
//! | `OTEL_METRIC_EXPORT_TIMEOUT` | milliseconds one export may take (else the exporter's own: `OTEL_EXPORTER_OTLP_METRICS_TIMEOUT`, `OTEL_EXPORTER_OTLP_TIMEOUT`, 10000) |
//! | `OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE` | `cumulative` (default), `delta` (what Datadog's OTLP intake wants), `lowmemory`; read by the exporter |
//! | `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES` | the resource, as for traces (a `service.instance.id` per process unless given) |
//! | `OTEL_SEMCONV_STABILITY_OPT_IN` | `gen_ai_latest_experimental` adds unreleased GenAI names |
//!
//! A blank value counts as unset; a value kaos does not understand (`prometheus`, a
//! negative interval) is warned about and ignored, as the SDK specification asks.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider, Temporality};

use super::env::{Vars, pick, resource, signal_url};
use super::metrics::{MetricsHook, SEMCONV_OPT_IN_ENV, experimental_opt_in};
#[cfg(feature = "otel-grpc")]
use super::telemetry::grpc_metadata;
#[cfg(not(feature = "otel-grpc"))]
use super::telemetry::invalid;
use super::telemetry::{Protocol, TelemetryError, parse_headers, run_with_deadline};

/// Where metrics go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MetricsExporter {
    /// OTLP/HTTP to a collector (default).
    #[default]
    Otlp,
    /// One line per data point on stdout, at each export.
    Console,
    /// Nowhere (no provider is built).
    None,
}

impl MetricsExporter {
    /// Parses an `OTEL_METRICS_EXPORTER` item: `otlp`, `console` (or `stdout`), `none`.
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "otlp" => Some(Self::Otlp),
            "console" | "stdout" => Some(Self::Console),
            "none" => Some(Self::None),
            _ => None,
        }
    }
}

/// Metrics settings (see the module table).
#[derive(Debug, Clone)]
pub struct MetricsBuilder {
    exporter: MetricsExporter,
    protocol: Protocol,
    endpoint: Option<String>,
    metrics_endpoint: Option<String>,
    headers: HashMap<String, String>,
    interval: Duration,
    /// One export's time limit, when set (else the exporter's own, from its variables).
    timeout: Option<Duration>,
    /// `service.name`, when set explicitly or by `OTEL_SERVICE_NAME`.
    service_name: Option<String>,
    experimental: bool,
    disabled: bool,
}

impl Default for MetricsBuilder {
    fn default() -> Self {
        Self {
            exporter: MetricsExporter::Otlp,
            protocol: Protocol::HttpProtobuf,
            endpoint: None,
            metrics_endpoint: None,
            headers: HashMap::new(),
            interval: Duration::from_secs(60),
            timeout: None,
            service_name: None,
            experimental: false,
            disabled: false,
        }
    }
}

impl MetricsBuilder {
    /// From the process environment.
    pub fn from_env() -> Result<Self, TelemetryError> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// From a variable lookup (tests pass a map). Never fails on a value it does not
    /// understand: that one is warned about and ignored (see the module table).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, TelemetryError> {
        let mut b = Self::default();
        let vars = Vars(var);
        if let Some(v) = vars.get("OTEL_METRICS_EXPORTER") {
            let known = pick(
                "OTEL_METRICS_EXPORTER",
                &v,
                "kaos exports metrics with otlp, console or none",
                MetricsExporter::parse,
            );
            b.exporter = known.unwrap_or_default();
        }
        b.disabled = vars
            .get("OTEL_SDK_DISABLED")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        if let Some((name, v)) = vars.first(&[
            "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ]) {
            b.protocol = Protocol::from_var(&name, &v);
        }
        b.endpoint = vars.get("OTEL_EXPORTER_OTLP_ENDPOINT");
        b.metrics_endpoint = vars.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT");
        if let Some((name, v)) = vars.first(&[
            "OTEL_EXPORTER_OTLP_METRICS_HEADERS",
            "OTEL_EXPORTER_OTLP_HEADERS",
        ]) {
            b.headers = parse_headers(&name, &v);
        }
        if let Some(interval) = vars.millis("OTEL_METRIC_EXPORT_INTERVAL") {
            b.interval = interval;
        }
        b.timeout = vars.millis("OTEL_METRIC_EXPORT_TIMEOUT");
        b.service_name = vars.get("OTEL_SERVICE_NAME");
        b.experimental = experimental_opt_in(vars.get(SEMCONV_OPT_IN_ENV).as_deref());
        Ok(b)
    }

    /// Chooses the exporter.
    pub fn exporter(mut self, exporter: MetricsExporter) -> Self {
        self.exporter = exporter;
        self
    }

    /// The OTLP base URL (`/v1/metrics` is appended for HTTP); replaces the endpoints the
    /// variables named (`OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` included), as for traces.
    pub fn endpoint(mut self, base: impl Into<String>) -> Self {
        self.endpoint = Some(base.into());
        self.metrics_endpoint = None;
        self
    }

    /// Chooses the OTLP transport.
    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = protocol;
        self
    }

    /// The resource's `service.name`.
    pub fn service_name(mut self, name: impl Into<String>) -> Self {
        self.service_name = Some(name.into());
        self
    }

    /// Time between periodic exports.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Whether the unreleased GenAI names are on.
    pub fn experimental(mut self, yes: bool) -> Self {
        self.experimental = yes;
        self
    }

    /// The URL metrics are sent to.
    pub fn resolved_endpoint(&self) -> String {
        if let Some(url) = &self.metrics_endpoint {
            return url.clone();
        }
        signal_url(self.protocol, self.endpoint.as_deref(), "v1/metrics")
    }

    /// Builds the provider (none when disabled or `none`).
    pub fn build(self) -> Result<Metrics, TelemetryError> {
        let exporter = if self.disabled {
            MetricsExporter::None
        } else {
            self.exporter
        };
        let resource = resource(self.service_name.as_deref());
        let last_error = Arc::new(Mutex::new(None));
        let provider = match exporter {
            MetricsExporter::None => None,
            MetricsExporter::Console => Some(
                SdkMeterProvider::builder()
                    .with_resource(resource)
                    .with_reader(
                        PeriodicReader::builder(ConsoleMetrics)
                            .with_interval(self.interval)
                            .build(),
                    )
                    .build(),
            ),
            MetricsExporter::Otlp => {
                let otlp = Reported {
                    inner: self.otlp_exporter()?,
                    last_error: last_error.clone(),
                };
                Some(
                    SdkMeterProvider::builder()
                        .with_resource(resource)
                        .with_reader(
                            PeriodicReader::builder(otlp)
                                .with_interval(self.interval)
                                .build(),
                        )
                        .build(),
                )
            }
        };
        Ok(Metrics {
            provider,
            exporter,
            endpoint: (exporter == MetricsExporter::Otlp).then(|| self.resolved_endpoint()),
            experimental: self.experimental,
            last_error,
        })
    }

    /// The OTLP metrics exporter these settings describe.
    fn otlp_exporter(&self) -> Result<opentelemetry_otlp::MetricExporter, TelemetryError> {
        let endpoint = self.resolved_endpoint();
        match self.protocol {
            Protocol::HttpProtobuf => {
                let mut b = opentelemetry_otlp::MetricExporter::builder()
                    .with_http()
                    .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                    .with_endpoint(endpoint)
                    .with_headers(self.headers.clone());
                if let Some(t) = self.timeout {
                    b = b.with_timeout(t);
                }
                b.build()
                    .map_err(|e| TelemetryError::Exporter(e.to_string()))
            }
            #[cfg(feature = "otel-grpc")]
            Protocol::Grpc => {
                use opentelemetry_otlp::WithTonicConfig;
                let meta = grpc_metadata(&self.headers)?;
                let mut b = opentelemetry_otlp::MetricExporter::builder()
                    .with_tonic()
                    .with_endpoint(endpoint)
                    .with_metadata(meta);
                if let Some(t) = self.timeout {
                    b = b.with_timeout(t);
                }
                b.build()
                    .map_err(|e| TelemetryError::Exporter(e.to_string()))
            }
            #[cfg(not(feature = "otel-grpc"))]
            Protocol::Grpc => Err(invalid(
                "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
                "grpc",
                "this build has no gRPC transport (cargo feature otel-grpc)",
            )),
        }
    }
}

/// A meter provider built from [`MetricsBuilder`] (or none), with a bounded shutdown.
#[derive(Clone)]
pub struct Metrics {
    provider: Option<SdkMeterProvider>,
    exporter: MetricsExporter,
    endpoint: Option<String>,
    experimental: bool,
    /// The OTLP exporter's last failure, in its words (the SDK's shutdown error drops them).
    last_error: Arc<Mutex<Option<String>>>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics")
            .field("exporter", &self.exporter)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl Metrics {
    /// From the `OTEL_*` variables.
    pub fn from_env() -> Result<Self, TelemetryError> {
        MetricsBuilder::from_env()?.build()
    }

    /// Metrics settings to refine.
    pub fn builder() -> MetricsBuilder {
        MetricsBuilder::default()
    }

    /// Where metrics go.
    pub fn exporter(&self) -> MetricsExporter {
        self.exporter
    }

    /// The OTLP URL, when exporting over OTLP.
    pub fn endpoint(&self) -> Option<&str> {
        self.endpoint.as_deref()
    }

    /// The provider (none when metrics are off).
    pub fn provider(&self) -> Option<&SdkMeterProvider> {
        self.provider.as_ref()
    }

    /// A [`MetricsHook`] on this provider's `kaos.agents` meter (none when metrics are off).
    pub fn hook(&self) -> Option<Arc<MetricsHook>> {
        let provider = self.provider.as_ref()?;
        Some(Arc::new(MetricsHook::with_experimental(
            provider.meter("kaos.agents"),
            self.experimental,
        )))
    }

    /// Exports what was recorded and stops, waiting at most `deadline` (`Ok` at once when
    /// metrics are off). The error says whether the export failed (with the exporter's
    /// reason: a collector's HTTP status, a network error) or ran out of time (ours, or the
    /// SDK's own shutdown wait, whichever came first).
    pub fn shutdown_with_deadline(&self, deadline: Duration) -> Result<(), MetricsShutdownError> {
        let Some(provider) = self.provider.clone() else {
            return Ok(());
        };
        match run_with_deadline(deadline, move || provider.shutdown()) {
            Some(Ok(())) => Ok(()),
            // The SDK's own shutdown wait (5 s) ran out before ours.
            Some(Err(OTelSdkError::Timeout(waited))) => {
                Err(MetricsShutdownError::TimedOut(waited.min(deadline)))
            }
            Some(Err(e)) => {
                let reported = self
                    .last_error
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take();
                Err(MetricsShutdownError::Failed(
                    reported.unwrap_or_else(|| e.to_string()),
                ))
            }
            None => Err(MetricsShutdownError::TimedOut(deadline)),
        }
    }
}

/// An exporter that keeps its last export's failure message, if it failed, for
/// [`Metrics::shutdown_with_deadline`] (a collector's HTTP status, a network error).
#[derive(Debug)]
struct Reported<E> {
    inner: E,
    last_error: Arc<Mutex<Option<String>>>,
}

impl<E: PushMetricExporter> PushMetricExporter for Reported<E> {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let result = self.inner.export(metrics).await;
        // The last export's outcome only: a failure an export since has recovered from is
        // not the reason a later shutdown fails.
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = result.as_ref().err().map(|e| e.to_string());
        result
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn temporality(&self) -> Temporality {
        self.inner.temporality()
    }
}

/// Why [`Metrics::shutdown_with_deadline`] did not export everything.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetricsShutdownError {
    /// The last export failed; the exporter's words.
    #[error("the export failed: {0}")]
    Failed(String),
    /// The export had not finished when the deadline passed.
    #[error("the export did not finish within {0:?}")]
    TimedOut(Duration),
}

/// Prints each data point on stdout at every export.
#[derive(Debug, Clone, Copy)]
struct ConsoleMetrics;

impl PushMetricExporter for ConsoleMetrics {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        for scope in metrics.scope_metrics() {
            for metric in scope.metrics() {
                let line = |attrs: String, value: String| {
                    println!("[metric] {} {attrs} {value}", metric.name());
                };
                let attrs = |it: &mut dyn Iterator<Item = &opentelemetry::KeyValue>| {
                    it.map(|kv| format!("{}={}", kv.key, kv.value))
                        .collect::<Vec<_>>()
                        .join(",")
                };
                match metric.data() {
                    AggregatedMetrics::F64(MetricData::Histogram(h)) => {
                        for p in h.data_points() {
                            line(
                                attrs(&mut p.attributes()),
                                format!("count={} sum={:.6}", p.count(), p.sum()),
                            );
                        }
                    }
                    AggregatedMetrics::U64(MetricData::Histogram(h)) => {
                        for p in h.data_points() {
                            line(
                                attrs(&mut p.attributes()),
                                format!("count={} sum={}", p.count(), p.sum()),
                            );
                        }
                    }
                    AggregatedMetrics::U64(MetricData::Sum(s)) => {
                        for p in s.data_points() {
                            line(attrs(&mut p.attributes()), format!("value={}", p.value()));
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }

    fn temporality(&self) -> Temporality {
        Temporality::Cumulative
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fails its first export, then succeeds.
    #[derive(Debug, Default)]
    struct FailsOnce {
        calls: std::sync::atomic::AtomicUsize,
    }

    impl PushMetricExporter for FailsOnce {
        async fn export(&self, _metrics: &ResourceMetrics) -> OTelSdkResult {
            match self
                .calls
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            {
                0 => Err(OTelSdkError::InternalFailure("status code: 503".into())),
                _ => Ok(()),
            }
        }
        fn force_flush(&self) -> OTelSdkResult {
            Ok(())
        }
        fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
            Ok(())
        }
        fn temporality(&self) -> Temporality {
            Temporality::Cumulative
        }
    }

    #[test]
    fn only_the_last_exports_failure_is_kept() {
        let reported = Reported {
            inner: FailsOnce::default(),
            last_error: Arc::new(Mutex::new(None)),
        };
        let metrics = ResourceMetrics::default();
        let last = || reported.last_error.lock().unwrap().clone();
        assert!(futures::executor::block_on(reported.export(&metrics)).is_err());
        assert!(last().is_some_and(|e| e.contains("503")), "{:?}", last());
        assert!(futures::executor::block_on(reported.export(&metrics)).is_ok());
        assert_eq!(last(), None, "a recovered failure is not kept");
    }

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: std::collections::HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn env_follows_the_spec() {
        let b = MetricsBuilder::from_vars(vars(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "500"),
            (
                "OTEL_SEMCONV_STABILITY_OPT_IN",
                "gen_ai_latest_experimental",
            ),
        ]))
        .unwrap();
        assert_eq!(b.resolved_endpoint(), "http://c:4318/v1/metrics");
        assert_eq!(b.interval, Duration::from_millis(500));
        assert!(b.experimental);
        let b = MetricsBuilder::from_vars(vars(&[(
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
            "http://m/x",
        )]))
        .unwrap();
        assert_eq!(b.resolved_endpoint(), "http://m/x");
        // An explicit base endpoint (the CLI's --otlp) wins over the variables, as for traces.
        assert_eq!(
            b.endpoint("http://flag:4318").resolved_endpoint(),
            "http://flag:4318/v1/metrics"
        );
        let grpc = MetricsBuilder::from_vars(vars(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "grpc"),
        ]))
        .unwrap();
        assert_eq!(grpc.protocol, Protocol::Grpc);
        assert_eq!(grpc.resolved_endpoint(), "http://c:4317");
        let off = MetricsBuilder::from_vars(vars(&[("OTEL_SDK_DISABLED", "true")]))
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(off.exporter(), MetricsExporter::None);
        assert!(off.hook().is_none());
        assert_eq!(off.shutdown_with_deadline(Duration::from_millis(1)), Ok(()));
    }

    #[test]
    fn values_it_does_not_understand_are_ignored_not_fatal() {
        for (name, value) in [
            ("OTEL_METRICS_EXPORTER", ""),
            ("OTEL_METRICS_EXPORTER", "prometheus"),
            ("OTEL_METRIC_EXPORT_INTERVAL", ""),
            ("OTEL_METRIC_EXPORT_INTERVAL", "-5"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "soon"),
            ("OTEL_METRIC_EXPORT_TIMEOUT", "0"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ] {
            let b = MetricsBuilder::from_vars(vars(&[(name, value)]))
                .unwrap_or_else(|e| panic!("{name}={value:?}: {e}"));
            assert_eq!(b.exporter, MetricsExporter::Otlp, "{name}={value:?}");
            assert_eq!(b.interval, Duration::from_secs(60), "{name}={value:?}");
            assert_eq!(b.timeout, None, "{name}={value:?}");
            assert_eq!(b.protocol, Protocol::HttpProtobuf, "{name}={value:?}");
        }
        let b = MetricsBuilder::from_vars(vars(&[("OTEL_METRICS_EXPORTER", "prometheus,console")]))
            .unwrap();
        assert_eq!(b.exporter, MetricsExporter::Console);
    }

    /// The metrics exporter speaks gRPC when asked (it used to build an HTTP exporter that
    /// refused the protocol, and the run stopped).
    #[cfg(feature = "otel-grpc")]
    #[test]
    fn grpc_metrics_build() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = rt.enter();
        let metrics = MetricsBuilder::from_vars(vars(&[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "3600000"),
        ]))
        .unwrap()
        .build()
        .unwrap();
        assert_eq!(metrics.endpoint(), Some("http://localhost:4317"));
        assert!(metrics.hook().is_some());
    }
}
