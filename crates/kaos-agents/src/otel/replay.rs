//! Replay: recorded events (e.g. read back from an audit file) → OpenTelemetry spans with
//! their original timestamps, parent links and ids, exported through any exporter.
//!
//! The events go through the same mapping as the live [`OTelHook`]; then ids are made
//! stable: each span's OTel span id is our span id (the synthetic intent span gets one
//! derived from its classifier call's id), and each trace id is derived from the root run
//! id (`run_` + 32 hex → those 128 bits), so sub-runs nested under a parent share the
//! parent's trace. A turn that continued a remote `traceparent` keeps that trace id.
//! Spans left open in the record (a crash mid-turn) end at the last recorded timestamp,
//! marked `kaos.cancelled=true`, `kaos.cancel_reason=incomplete_record`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use opentelemetry::Context;
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TracerProvider as _,
};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};

use super::OTelHook;
use super::content::CaptureContent;
use super::telemetry::MemoryExporter;
use crate::events::Event;
use crate::hooks::Hook;

/// OTel span id → our `(run_id, span_id)`, for replay.
pub(crate) type IdLog = HashMap<SpanId, (Arc<str>, Arc<str>)>;

/// What a replaying hook records.
impl OTelHook {
    /// Records which OTel span id each of our spans got (for replay's id rewrite). Such a
    /// hook replays a record: it has no caller, so its roots ignore the ambient context.
    pub(crate) fn recording_ids(mut self) -> Self {
        self.id_log = Some(Mutex::new(HashMap::new()));
        self
    }

    /// The recorded OTel span id → `(run_id, span_id)` table.
    pub(crate) fn take_id_log(&self) -> IdLog {
        self.id_log
            .as_ref()
            .map(|m| {
                std::mem::take(&mut *m.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
            })
            .unwrap_or_default()
    }

    pub(super) fn log_id(&self, cx: &Context, run: &Arc<str>, span: &Arc<str>) {
        if let Some(log) = &self.id_log {
            let mut log = log
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            log.insert(
                cx.span().span_context().span_id(),
                (run.clone(), span.clone()),
            );
        }
    }
}

/// A replay failure.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The exporter refused the batch.
    #[error("exporting replayed spans failed: {0}")]
    Export(String),
}

/// The spans `events` map to, with original times, our span ids and run-derived trace ids.
/// Content capture follows `capture` (as for the live hook).
pub fn replay_spans(events: &[Event], capture: CaptureContent) -> Vec<SpanData> {
    let memory = MemoryExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(memory.clone())
        .build();
    let hook = OTelHook::new(provider.tracer("kaos.agents.replay"))
        .with_capture_content(capture)
        .recording_ids();
    for event in events {
        hook.on_event(event);
    }
    if hook.open_span_count() > 0 {
        let last = events.iter().map(|e| e.timestamp).max().unwrap_or(0);
        hook.close_all_at("incomplete_record", last);
    }
    let ids = hook.take_id_log();
    let _ = provider.force_flush();
    let mut spans = memory.spans();
    let _ = provider.shutdown();
    rewrite_ids(&mut spans, &ids);
    spans
}

/// Replays `events` into spans ([`replay_spans`]) and exports them with `resource` through
/// `exporter` (e.g. an OTLP exporter). Returns how many spans were exported. Blocks the
/// calling thread while exporting: call it from a plain thread or `spawn_blocking`.
pub fn export_recorded<E: SpanExporter>(
    events: &[Event],
    mut exporter: E,
    resource: &Resource,
    capture: CaptureContent,
) -> Result<usize, ReplayError> {
    let spans = replay_spans(events, capture);
    let n = spans.len();
    exporter.set_resource(resource);
    let result = futures::executor::block_on(exporter.export(spans));
    let _ = exporter.shutdown();
    result.map_err(|e| ReplayError::Export(e.to_string()))?;
    Ok(n)
}

/// The trace id of a run: the 32 hex digits of `run_{hex}`, else a stable hash of the id.
pub fn trace_id_for_run(run_id: &str) -> TraceId {
    let hex = run_id.strip_prefix("run_").unwrap_or(run_id);
    if hex.len() == 32
        && let Ok(n) = u128::from_str_radix(hex, 16)
        && n != 0
    {
        return TraceId::from_bytes(n.to_be_bytes());
    }
    let hi = fnv64(run_id.as_bytes(), 0xcbf2_9ce4_8422_2325);
    let lo = fnv64(run_id.as_bytes(), 0x8422_2325_cbf2_9ce4);
    TraceId::from_bytes(((u128::from(hi) << 64) | u128::from(lo.max(1))).to_be_bytes())
}

/// Our 16-hex span id as an OTel span id (hashed when it is not 16 hex digits, and for the
/// synthetic `{llm id}#intent` span).
pub fn span_id_for(span_id: &str) -> SpanId {
    if span_id.len() == 16
        && let Ok(n) = u64::from_str_radix(span_id, 16)
        && n != 0
    {
        return SpanId::from_bytes(n.to_be_bytes());
    }
    SpanId::from_bytes(
        fnv64(span_id.as_bytes(), 0xcbf2_9ce4_8422_2325)
            .max(1)
            .to_be_bytes(),
    )
}

fn fnv64(bytes: &[u8], seed: u64) -> u64 {
    bytes.iter().fold(seed, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn rewrite_ids(spans: &mut [SpanData], ids: &HashMap<SpanId, (Arc<str>, Arc<str>)>) {
    let new_span = |old: SpanId| ids.get(&old).map(|(_, s)| span_id_for(s));
    // Each OTel trace takes the id of its root run (the run of its root span).
    let mut trace_of: HashMap<TraceId, TraceId> = HashMap::new();
    for s in spans.iter() {
        if s.parent_span_id == SpanId::INVALID
            && let Some((run, _)) = ids.get(&s.span_context.span_id())
        {
            trace_of.insert(s.span_context.trace_id(), trace_id_for_run(run));
        }
    }
    for s in spans.iter_mut() {
        let old = &s.span_context;
        let trace = trace_of
            .get(&old.trace_id())
            .copied()
            .unwrap_or(old.trace_id());
        let span = new_span(old.span_id()).unwrap_or(old.span_id());
        s.span_context = SpanContext::new(
            trace,
            span,
            TraceFlags::SAMPLED,
            false,
            old.trace_state().clone(),
        );
        if !s.parent_span_is_remote
            && let Some(p) = new_span(s.parent_span_id)
        {
            s.parent_span_id = p;
        }
    }
}
