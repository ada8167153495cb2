//! A meter provider configured from the standard `OTEL_*` variables: the same OTLP endpoint
//! and headers as the traces, a periodic reader on its own thread (no async runtime), and a
//! bounded flush at exit.
//!
//! | variable | meaning |
//! |---|---|
//! | `OTEL_SDK_DISABLED` | `true` → no metrics |
//! | `OTEL_METRICS_EXPORTER` | `otlp` (default), `console`, `none` |
//! | `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` | the metrics URL, used verbatim |
//! | `OTEL_EXPORTER_OTLP_ENDPOINT` | a base URL; `/v1/metrics` is appended |
//! | `OTEL_EXPORTER_OTLP_HEADERS` | `k=v,k2=v2` |
//! | `OTEL_METRIC_EXPORT_INTERVAL` | milliseconds between exports (default 60000) |
//! | `OTEL_METRIC_EXPORT_TIMEOUT` | milliseconds one export may take (default 10000) |
//! | `OTEL_SEMCONV_STABILITY_OPT_IN` | `gen_ai_latest_experimental` adds unreleased GenAI names |

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider, Temporality};

use super::metrics::{MetricsHook, SEMCONV_OPT_IN_ENV, experimental_opt_in};
use super::telemetry::{TelemetryError, run_with_deadline};

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
    /// Parses `otlp`, `console`, `none`.
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
    endpoint: Option<String>,
    metrics_endpoint: Option<String>,
    headers: Vec<(String, String)>,
    interval: Duration,
    timeout: Duration,
    service_name: String,
    experimental: bool,
    disabled: bool,
}

impl Default for MetricsBuilder {
    fn default() -> Self {
        Self {
            exporter: MetricsExporter::Otlp,
            endpoint: None,
            metrics_endpoint: None,
            headers: Vec::new(),
            interval: Duration::from_secs(60),
            timeout: Duration::from_secs(10),
            service_name: "kaos".to_string(),
            experimental: false,
            disabled: false,
        }
    }
}

fn invalid(name: &str, value: &str, reason: &str) -> TelemetryError {
    TelemetryError::Invalid {
        name: name.to_string(),
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

fn millis(name: &str, value: &str) -> Result<Duration, TelemetryError> {
    value
        .trim()
        .parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|_| invalid(name, value, "expected milliseconds"))
}

impl MetricsBuilder {
    /// From the process environment.
    pub fn from_env() -> Result<Self, TelemetryError> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// From a variable lookup (tests pass a map).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, TelemetryError> {
        let mut b = Self::default();
        if let Some(v) = var("OTEL_METRICS_EXPORTER") {
            b.exporter = MetricsExporter::parse(&v).ok_or_else(|| {
                invalid(
                    "OTEL_METRICS_EXPORTER",
                    &v,
                    "expected otlp, console or none",
                )
            })?;
        }
        b.disabled =
            var("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
        b.endpoint = var("OTEL_EXPORTER_OTLP_ENDPOINT").filter(|v| !v.trim().is_empty());
        b.metrics_endpoint =
            var("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT").filter(|v| !v.trim().is_empty());
        if let Some(h) = var("OTEL_EXPORTER_OTLP_HEADERS") {
            for pair in h.split(',').filter(|p| !p.trim().is_empty()) {
                let (k, v) = pair.split_once('=').ok_or_else(|| {
                    invalid("OTEL_EXPORTER_OTLP_HEADERS", &h, "expected k=v pairs")
                })?;
                b.headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        if let Some(v) = var("OTEL_METRIC_EXPORT_INTERVAL") {
            b.interval = millis("OTEL_METRIC_EXPORT_INTERVAL", &v)?;
        }
        if let Some(v) = var("OTEL_METRIC_EXPORT_TIMEOUT") {
            b.timeout = millis("OTEL_METRIC_EXPORT_TIMEOUT", &v)?;
        }
        if let Some(v) = var("OTEL_SERVICE_NAME").filter(|v| !v.trim().is_empty()) {
            b.service_name = v;
        }
        b.experimental = experimental_opt_in(var(SEMCONV_OPT_IN_ENV).as_deref());
        Ok(b)
    }

    /// Chooses the exporter.
    pub fn exporter(mut self, exporter: MetricsExporter) -> Self {
        self.exporter = exporter;
        self
    }

    /// The OTLP base URL (`/v1/metrics` is appended).
    pub fn endpoint(mut self, base: impl Into<String>) -> Self {
        self.endpoint = Some(base.into());
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
        let base = self
            .endpoint
            .clone()
            .unwrap_or_else(|| "http://localhost:4318".to_string());
        format!("{}/v1/metrics", base.trim_end_matches('/'))
    }

    /// Builds the provider (none when disabled or `none`).
    pub fn build(self) -> Result<Metrics, TelemetryError> {
        let exporter = if self.disabled {
            MetricsExporter::None
        } else {
            self.exporter
        };
        let resource = Resource::builder()
            .with_service_name(self.service_name.clone())
            .build();
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
                let otlp = opentelemetry_otlp::MetricExporter::builder()
                    .with_http()
                    .with_endpoint(self.resolved_endpoint())
                    .with_timeout(self.timeout)
                    .with_headers(self.headers.iter().cloned().collect())
                    .build()
                    .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
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
        })
    }
}

/// A meter provider built from [`MetricsBuilder`] (or none), with a bounded shutdown.
#[derive(Clone)]
pub struct Metrics {
    provider: Option<SdkMeterProvider>,
    exporter: MetricsExporter,
    endpoint: Option<String>,
    experimental: bool,
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

    /// Exports what was recorded and stops, waiting at most `deadline`. Returns whether it
    /// finished in time (`true` when metrics are off).
    pub fn shutdown_with_deadline(&self, deadline: Duration) -> bool {
        let Some(provider) = self.provider.clone() else {
            return true;
        };
        run_with_deadline(deadline, move || provider.shutdown())
            .is_some_and(|r: OTelSdkResult| r.is_ok())
    }
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
        assert!(MetricsBuilder::from_vars(vars(&[("OTEL_METRICS_EXPORTER", "bogus")])).is_err());
        assert!(MetricsBuilder::from_vars(vars(&[("OTEL_METRIC_EXPORT_INTERVAL", "x")])).is_err());
        let off = MetricsBuilder::from_vars(vars(&[("OTEL_SDK_DISABLED", "true")]))
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(off.exporter(), MetricsExporter::None);
        assert!(off.hook().is_none());
        assert!(off.shutdown_with_deadline(Duration::from_millis(1)));
    }
}
