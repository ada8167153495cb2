//! The observability workloads: `OTelHook` on one task (with the SDK's own floor for the same
//! spans, measured in the same run), `OTelHook` under 64 concurrent tasks, and `MetricsHook`.
//! Content capture is forced off whatever `KAOS_CAPTURE_CONTENT` or
//! `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT` say.

use crate::workloads::Ratio;
#[cfg(not(feature = "otel"))]
use crate::{BoxError, Sizes};

/// What the single-task OTel workload measured.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OtelFigures {
    /// Throughput with `OTelHook` ÷ without.
    pub ratio: Ratio,
    /// Throughput with the same spans made straight through the SDK ÷ without.
    pub floor_ratio: f64,
    /// Mean turn time plus the SDK-made spans (µs).
    pub floor_us: f64,
    /// Throughput with [`crate::minimal_hook::MinimalHook`] ÷ without.
    pub minimal_ratio: f64,
    /// Mean turn time with it (µs).
    pub minimal_us: f64,
    /// OTel spans one respond turn produces.
    pub spans_per_turn: u64,
    /// Spans the traced sides produced while measuring (warm-up included).
    pub spans_expected: u64,
    /// Spans that reached the exporter.
    pub spans_exported: u64,
}

impl OtelFigures {
    /// µs per turn the hook adds over the SDK's own cost for the same spans.
    pub(crate) fn hook_us_over_floor(&self) -> f64 {
        self.ratio.on_us - self.floor_us
    }

    /// µs per turn the minimal hook adds over the same floor: the event model's share.
    pub(crate) fn minimal_us_over_floor(&self) -> f64 {
        self.minimal_us - self.floor_us
    }
}

/// What the 64-task OTel workload measured.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TasksFigures {
    /// Throughput with `OTelHook` ÷ without.
    pub ratio: f64,
    /// Turns per second without the hook.
    pub off_per_s: f64,
    /// Turns per second with it.
    pub on_per_s: f64,
    /// Concurrent tasks.
    pub tasks: usize,
}

/// Concurrent tasks of the 64-task workload.
pub(crate) const TASKS: usize = 64;

#[cfg(feature = "otel")]
pub(crate) use sdk::{TemplateSpan, metrics_ratio, otel_ratio, otel_ratio_64_tasks, otel_sides};

/// Without the `otel` feature there is no OTel hook to measure.
#[cfg(not(feature = "otel"))]
pub(crate) async fn otel_ratio(_sizes: Sizes) -> Result<Option<OtelFigures>, BoxError> {
    Ok(None)
}

/// Without the `otel` feature there is no OTel hook to measure.
#[cfg(not(feature = "otel"))]
pub(crate) fn otel_ratio_64_tasks(_sizes: Sizes) -> Result<Option<TasksFigures>, BoxError> {
    Ok(None)
}

/// Without the `otel` feature there is no OTel hook to measure.
#[cfg(not(feature = "otel"))]
pub(crate) async fn otel_sides(_sizes: Sizes) -> Result<Option<usize>, BoxError> {
    Ok(None)
}

/// Without the `otel` feature there is no metrics hook to measure.
#[cfg(not(feature = "otel"))]
pub(crate) async fn metrics_ratio(_sizes: Sizes) -> Result<Option<Ratio>, BoxError> {
    Ok(None)
}

#[cfg(feature = "otel")]
mod sdk {
    use std::borrow::Cow;
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant, SystemTime};

    use kaos_agents::otel::{CaptureContent, MetricsHook, OTelHook};
    use kaos_agents::{FunctionClient, Runner};
    use opentelemetry::metrics::MeterProvider as _;
    use opentelemetry::trace::{
        SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _,
    };
    use opentelemetry::{Context, KeyValue};
    use opentelemetry_sdk::error::OTelSdkResult;
    use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
    use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
    use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider, Temporality};
    use opentelemetry_sdk::trace::{
        BatchSpanProcessor, SdkTracer, SdkTracerProvider, SpanData, SpanExporter,
    };

    use super::{OtelFigures, TASKS, TasksFigures};
    use crate::minimal_hook::MinimalHook;
    use crate::workloads::{Batches, Ratio, chat_model, chat_runner, check_turn, drain};
    use crate::{BoxError, Sizes};

    /// A `SpanExporter` that counts the spans it is given and drops them (export returns `Ok`
    /// at once), so the figure is the hot path alone: span building in the hook and the SDK,
    /// and the batch processor's enqueue.
    #[derive(Debug, Clone, Default)]
    struct NoopExporter {
        spans: Arc<AtomicU64>,
    }

    impl SpanExporter for NoopExporter {
        fn export(
            &self,
            batch: Vec<SpanData>,
        ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
            self.spans.fetch_add(batch.len() as u64, Ordering::Relaxed);
            std::future::ready(Ok(()))
        }
    }

    /// Keeps every span (for the floor's template).
    #[derive(Debug, Clone, Default)]
    struct KeepExporter {
        spans: Arc<Mutex<Vec<SpanData>>>,
    }

    impl SpanExporter for KeepExporter {
        fn export(
            &self,
            batch: Vec<SpanData>,
        ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
            self.spans
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .extend(batch);
            std::future::ready(Ok(()))
        }
    }

    /// The SDK with a `BatchSpanProcessor` (default config: queue 2,048, batches of 512, its own
    /// worker thread) feeding a [`NoopExporter`]; returns the provider and its span counter.
    fn batch_provider() -> (SdkTracerProvider, Arc<AtomicU64>) {
        let exporter = NoopExporter::default();
        let exported = exporter.spans.clone();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(BatchSpanProcessor::builder(exporter).build())
            .build();
        (provider, exported)
    }

    /// An `OTelHook` on `provider`, content capture off whatever the environment says.
    fn hook(provider: &SdkTracerProvider) -> OTelHook {
        OTelHook::new(provider.tracer("kaos-bench")).with_capture_content(CaptureContent::None)
    }

    fn flush(provider: &SdkTracerProvider) -> Result<(), BoxError> {
        provider
            .force_flush()
            .map_err(|e| format!("OTel force_flush: {e}").into())
    }

    /// One span of a respond turn as `OTelHook` exports it: what the floor re-creates.
    pub(crate) struct TemplateSpan {
        pub(crate) name: Cow<'static, str>,
        pub(crate) kind: SpanKind,
        pub(crate) attributes: Vec<KeyValue>,
        pub(crate) events: Vec<(Cow<'static, str>, Vec<KeyValue>)>,
        pub(crate) status: Status,
        /// Index of the parent in the template (spans are in start order).
        pub(crate) parent: Option<usize>,
    }

    /// The spans `OTelHook` exports for one respond turn (names, kinds, every attribute, span
    /// events, statuses and the tree), recorded once.
    async fn record_template() -> Result<Vec<TemplateSpan>, BoxError> {
        let keep = KeepExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(keep.clone())
            .build();
        let runner = chat_runner(FunctionClient::new(chat_model).without_recording())?
            .with_hook(hook(&provider));
        check_turn(&runner, "Hello from the agent.", 0).await?;
        flush(&provider)?;
        let spans = std::mem::take(
            &mut *keep
                .spans
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        // In start order, a parent before a child that started at the same instant (the
        // intent-classification wrapper and its model call share a timestamp).
        let depth = |span: &SpanData| {
            let mut depth = 0;
            let mut parent = span.parent_span_id;
            while let Some(p) = spans.iter().find(|s| s.span_context.span_id() == parent) {
                depth += 1;
                parent = p.parent_span_id;
            }
            depth
        };
        let keys: Vec<_> = spans.iter().map(|s| (s.start_time, depth(s))).collect();
        let mut keyed: Vec<_> = keys.into_iter().zip(spans).collect();
        keyed.sort_by_key(|(key, _)| *key);
        let spans: Vec<SpanData> = keyed.into_iter().map(|(_, span)| span).collect();
        let ids: Vec<_> = spans.iter().map(|s| s.span_context.span_id()).collect();
        let template: Vec<TemplateSpan> = spans
            .into_iter()
            .map(|s| TemplateSpan {
                parent: ids.iter().position(|id| *id == s.parent_span_id),
                name: s.name,
                kind: s.span_kind,
                attributes: s.attributes,
                events: s
                    .events
                    .events
                    .into_iter()
                    .map(|e| (e.name, e.attributes))
                    .collect(),
                status: s.status,
            })
            .collect();
        if template.is_empty() {
            return Err("OTelHook exported no span for a respond turn".into());
        }
        Ok(template)
    }

    /// The template's spans created straight through the SDK, no kaos hook: each started with
    /// its attributes under its parent's context, then ended children first with its events and
    /// status.
    fn sdk_floor_turn(tracer: &SdkTracer, template: &[TemplateSpan]) {
        let root = Context::new();
        let mut cxs: Vec<Context> = Vec::with_capacity(template.len());
        for t in template {
            let parent = t.parent.and_then(|i| cxs.get(i)).unwrap_or(&root);
            let span = tracer
                .span_builder(t.name.clone())
                .with_kind(t.kind.clone())
                .with_start_time(SystemTime::now())
                .with_attributes(t.attributes.clone())
                .start_with_context(tracer, parent);
            cxs.push(parent.with_span(span));
        }
        for (cx, t) in cxs.iter().zip(template).rev() {
            let span = cx.span();
            for (name, attrs) in &t.events {
                span.add_event(name.clone(), attrs.clone());
            }
            span.set_status(t.status.clone());
            span.end_with_timestamp(SystemTime::now());
        }
    }

    /// The single-task workload's four sides: no tracing; the turn plus its spans made
    /// straight through the SDK ([`sdk_floor_turn`]); the turn with `OTelHook`; the turn with
    /// [`MinimalHook`]. One tracer provider (batch processor, no-op exporter) serves the
    /// three traced sides.
    struct Sides {
        off: Runner,
        hooked: Runner,
        minimal: Runner,
        tracer: SdkTracer,
        template: Arc<Vec<TemplateSpan>>,
    }

    /// The sides' count, in [`Sides::run`]'s numbering.
    const SIDES: usize = 4;

    impl Sides {
        async fn new(provider: &SdkTracerProvider) -> Result<Self, BoxError> {
            let template = Arc::new(record_template().await?);
            let tracer = provider.tracer("kaos-bench-floor");
            let runner = || chat_runner(FunctionClient::new(chat_model).without_recording());
            Ok(Self {
                off: runner()?,
                hooked: runner()?.with_hook(hook(provider)),
                minimal: runner()?.with_hook(MinimalHook::new(tracer.clone(), template.clone())?),
                tracer,
                template,
            })
        }

        /// One turn of side 0 (no tracing), 1 (SDK floor), 2 (`OTelHook`) or 3
        /// ([`MinimalHook`]).
        async fn run(&self, side: usize, id: String) {
            match side {
                0 => drop(drain(&self.off, "Hello there!", id).await),
                1 => {
                    drain(&self.off, "Hello there!", id).await;
                    sdk_floor_turn(&self.tracer, &self.template);
                }
                2 => drop(drain(&self.hooked, "Hello there!", id).await),
                _ => drop(drain(&self.minimal, "Hello there!", id).await),
            }
        }

        async fn warm_up(&self, b: &Batches) {
            for warm in 0..b.warmup {
                for side in 0..SIDES {
                    self.run(side, format!("w{side}-{warm}")).await;
                }
            }
        }
    }

    /// Respond turns on one task, the four [`Sides`] interleaved in the same run (the side
    /// that goes first rotates per batch).
    pub(crate) async fn otel_ratio(sizes: Sizes) -> Result<Option<OtelFigures>, BoxError> {
        let (provider, exported) = batch_provider();
        let sides = Sides::new(&provider).await?;
        let b = Batches::of(sizes);
        sides.warm_up(&b).await;
        let mut totals = [Duration::ZERO; SIDES];
        for batch in 0..b.batches {
            for k in 0..SIDES {
                let side = (batch + k) % SIDES;
                let ids: Vec<String> = (0..b.turns)
                    .map(|i| format!("r{side}-{batch}-{i}"))
                    .collect();
                let t = Instant::now();
                for id in ids {
                    sides.run(side, id).await;
                }
                totals[side] += t.elapsed();
            }
        }
        flush(&provider)?;
        provider
            .shutdown()
            .map_err(|e| format!("OTel shutdown: {e}"))?;
        let turns = (b.batches * b.turns).max(1) as f64;
        let us = |d: Duration| d.as_secs_f64() * 1e6 / turns;
        let ratio = |d: Duration| totals[0].as_secs_f64() / d.as_secs_f64().max(1e-12);
        let spans_per_turn = sides.template.len() as u64;
        Ok(Some(OtelFigures {
            ratio: Ratio {
                ratio: ratio(totals[2]),
                off_us: us(totals[0]),
                on_us: us(totals[2]),
            },
            floor_ratio: ratio(totals[1]),
            floor_us: us(totals[1]),
            minimal_ratio: ratio(totals[3]),
            minimal_us: us(totals[3]),
            spans_per_turn,
            spans_expected: 3 * spans_per_turn * b.turns_per_side() as u64,
            spans_exported: exported.load(Ordering::Relaxed),
        }))
    }

    /// The single-task workload's [`Sides`] run apart (same setup, same warm-up), each
    /// timed turn inside a function of its own, for an instruction counter: under
    /// `valgrind --tool=callgrind`, the inclusive counts of [`sides_off`], [`sides_floor`],
    /// [`sides_hooked`] and [`sides_minimal`] divided by the turns returned are one turn's
    /// instructions on each side, whatever the machine is doing (hooked − floor is what the
    /// hook adds over the SDK for the same spans, everything it causes included: dispatch,
    /// the contexts it makes current; minimal − floor is the part of it any hook pays).
    pub(crate) async fn otel_sides(sizes: Sizes) -> Result<Option<usize>, BoxError> {
        let (provider, _) = batch_provider();
        let sides = Sides::new(&provider).await?;
        let b = Batches::of(sizes);
        sides.warm_up(&b).await;
        let turns = b.batches * b.turns;
        // Boxed, so each side's `poll` stays a function of its own (not inlined here).
        let runs: [Pin<Box<dyn Future<Output = ()> + '_>>; SIDES] = [
            Box::pin(sides_off(&sides, turns)),
            Box::pin(sides_floor(&sides, turns)),
            Box::pin(sides_hooked(&sides, turns)),
            Box::pin(sides_minimal(&sides, turns)),
        ];
        for run in runs {
            run.await;
        }
        flush(&provider)?;
        provider
            .shutdown()
            .map_err(|e| format!("OTel shutdown: {e}"))?;
        Ok(Some(turns))
    }

    /// `turns` respond turns, no tracing.
    async fn sides_off(sides: &Sides, turns: usize) {
        for i in 0..turns {
            sides.run(0, format!("s0-{i}")).await;
        }
    }

    /// `turns` respond turns, each followed by its spans made straight through the SDK.
    async fn sides_floor(sides: &Sides, turns: usize) {
        for i in 0..turns {
            sides.run(1, format!("s1-{i}")).await;
        }
    }

    /// `turns` respond turns with `OTelHook`.
    async fn sides_hooked(sides: &Sides, turns: usize) {
        for i in 0..turns {
            sides.run(2, format!("s2-{i}")).await;
        }
    }

    /// `turns` respond turns with [`MinimalHook`].
    async fn sides_minimal(sides: &Sides, turns: usize) {
        for i in 0..turns {
            sides.run(3, format!("s3-{i}")).await;
        }
    }

    /// [`TASKS`] tasks on a multi-thread runtime (one worker per core), each running
    /// `tasks_turns` respond turns back to back; batches alternate between the runner with
    /// `OTelHook` and the one without (which goes first alternates), same run, same provider
    /// setup as [`otel_ratio`].
    pub(crate) fn otel_ratio_64_tasks(sizes: Sizes) -> Result<Option<TasksFigures>, BoxError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        let (provider, exported) = batch_provider();
        let off = chat_runner(FunctionClient::new(chat_model).without_recording())?;
        let on = chat_runner(FunctionClient::new(chat_model).without_recording())?
            .with_hook(hook(&provider));
        let (t_off, t_on) = rt.block_on(async {
            check_turn(&on, "Hello from the agent.", 0).await?;
            let (mut t_off, mut t_on) = (Duration::ZERO, Duration::ZERO);
            // Batch 0 warms both sides up and is not counted.
            for batch in 0..=sizes.tasks_batches {
                let order = if batch % 2 == 0 {
                    [false, true]
                } else {
                    [true, false]
                };
                for hooked in order {
                    let runner = if hooked { &on } else { &off };
                    let t = Instant::now();
                    let handles: Vec<_> = (0..TASKS)
                        .map(|task| {
                            let runner = runner.clone();
                            let turns = sizes.tasks_turns;
                            tokio::spawn(async move {
                                let mut events = 0;
                                for i in 0..turns {
                                    let id = format!("t{}-{batch}-{task}-{i}", u8::from(hooked));
                                    events += drain(&runner, "Hello there!", id).await;
                                }
                                events
                            })
                        })
                        .collect();
                    for h in handles {
                        if h.await? == 0 {
                            return Err::<_, BoxError>("a 64-task turn produced no events".into());
                        }
                    }
                    if batch > 0 {
                        *(if hooked { &mut t_on } else { &mut t_off }) += t.elapsed();
                    }
                }
            }
            Ok((t_off, t_on))
        })?;
        flush(&provider)?;
        provider
            .shutdown()
            .map_err(|e| format!("OTel shutdown: {e}"))?;
        if exported.load(Ordering::Relaxed) == 0 {
            return Err("the 64-task workload exported no span".into());
        }
        let turns = (TASKS * sizes.tasks_turns * sizes.tasks_batches).max(1) as f64;
        Ok(Some(TasksFigures {
            ratio: t_off.as_secs_f64() / t_on.as_secs_f64().max(1e-12),
            off_per_s: turns / t_off.as_secs_f64().max(1e-12),
            on_per_s: turns / t_on.as_secs_f64().max(1e-12),
            tasks: TASKS,
        }))
    }

    /// A metrics exporter that counts the data points it is given and drops them.
    #[derive(Debug, Clone, Default)]
    struct NoopMetrics {
        points: Arc<AtomicU64>,
    }

    impl PushMetricExporter for NoopMetrics {
        async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
            let mut n = 0u64;
            for scope in metrics.scope_metrics() {
                for metric in scope.metrics() {
                    n += match metric.data() {
                        AggregatedMetrics::F64(MetricData::Histogram(h)) => h.data_points().count(),
                        AggregatedMetrics::U64(MetricData::Histogram(h)) => h.data_points().count(),
                        _ => 1,
                    } as u64;
                }
            }
            self.points.fetch_add(n, Ordering::Relaxed);
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

    /// Respond-turn throughput with `MetricsHook` ÷ without, interleaved, on the metrics SDK
    /// with a `PeriodicReader` (default interval, its own thread) feeding [`NoopMetrics`].
    pub(crate) async fn metrics_ratio(sizes: Sizes) -> Result<Option<Ratio>, BoxError> {
        let exporter = NoopMetrics::default();
        let points = exporter.points.clone();
        let provider = SdkMeterProvider::builder()
            .with_reader(PeriodicReader::builder(exporter).build())
            .build();
        let off = chat_runner(FunctionClient::new(chat_model).without_recording())?;
        let on = chat_runner(FunctionClient::new(chat_model).without_recording())?
            .with_hook(MetricsHook::new(provider.meter("kaos-bench")));
        check_turn(&on, "Hello from the agent.", 0).await?;
        provider
            .force_flush()
            .map_err(|e| format!("metrics force_flush: {e}"))?;
        if points.load(Ordering::Relaxed) == 0 {
            return Err("MetricsHook recorded no data point for a respond turn".into());
        }
        let ratio = crate::workloads::interleaved_ratio(&off, &on, Batches::of(sizes)).await?;
        provider
            .shutdown()
            .map_err(|e| format!("metrics shutdown: {e}"))?;
        Ok(Some(ratio))
    }
}
