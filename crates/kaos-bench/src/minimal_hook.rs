//! The least a hook on the event stream can do to export a respond turn's spans: the
//! yardstick `OTelHook`'s own cost is read against.
//!
//! [`MinimalHook`] maps nothing. It opens, for each span START it sees, the spans recorded
//! in the turn's template (names, kinds and attributes cloned, as the SDK floor does) under
//! the START's parent, keeps them in one list under one lock, ends them with the template's
//! events and status at the span's END, and hands the runner their contexts
//! ([`Hook::otel_context`]) so they are current while a model call runs. What it costs over
//! the SDK floor is what the event model costs any hook (dispatch, the runner's delivery,
//! contexts made current, finding a span's parent) before it reads a single attribute.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use kaos_agents::events::{Event, EventKind, SpanPhase};
use kaos_agents::hooks::{Hook, HookAction};
use opentelemetry::Context;
use opentelemetry::trace::{TraceContextExt, Tracer as _};
use opentelemetry_sdk::trace::SdkTracer;

use crate::BoxError;
use crate::otel::TemplateSpan;

/// The template spans each START of a respond turn opens, in START order: the turn; the
/// intent-classification wrapper and the classifier's chat span inside it; the answer's
/// chat span.
const OPENED_BY_START: [&[usize]; 3] = [&[0], &[1, 2], &[3]];

/// The template's parent indices [`OPENED_BY_START`] is written for.
const TEMPLATE_PARENTS: [Option<usize>; 4] = [None, Some(0), Some(1), Some(0)];

/// One event span's OTel spans (the template indices and their contexts, outermost first).
struct Open {
    run: Arc<str>,
    span: Arc<str>,
    spans: Vec<(usize, Context)>,
}

#[derive(Default)]
struct State {
    open: Vec<Open>,
    /// STARTs seen per run (dropped at the turn's END).
    starts: Vec<(Arc<str>, usize)>,
}

/// See the module docs.
pub(crate) struct MinimalHook {
    tracer: SdkTracer,
    template: Arc<Vec<TemplateSpan>>,
    state: Mutex<State>,
}

impl MinimalHook {
    /// A hook replaying `template` (a respond turn's spans as `OTelHook` exports them).
    pub(crate) fn new(
        tracer: SdkTracer,
        template: Arc<Vec<TemplateSpan>>,
    ) -> Result<Self, BoxError> {
        let parents: Vec<Option<usize>> = template.iter().map(|t| t.parent).collect();
        if parents != TEMPLATE_PARENTS {
            return Err(format!(
                "the minimal hook replays a respond turn's 4 spans (parents {TEMPLATE_PARENTS:?}); OTelHook exported parents {parents:?}"
            )
            .into());
        }
        Ok(Self {
            tracer,
            template,
            state: Mutex::new(State::default()),
        })
    }

    fn start(&self, index: usize, parent: &Context) -> Context {
        let t = &self.template[index];
        let span = self
            .tracer
            .span_builder(t.name.clone())
            .with_kind(t.kind.clone())
            .with_start_time(SystemTime::now())
            .with_attributes(t.attributes.clone())
            .start_with_context(&self.tracer, parent);
        parent.with_span(span)
    }

    fn end(&self, index: usize, cx: &Context) {
        let t = &self.template[index];
        let span = cx.span();
        for (name, attrs) in &t.events {
            span.add_event(name.clone(), attrs.clone());
        }
        span.set_status(t.status.clone());
        span.end_with_timestamp(SystemTime::now());
    }
}

impl Hook for MinimalHook {
    fn name(&self) -> &str {
        "minimal"
    }

    fn on_event(&self, event: &Event) -> HookAction {
        let EventKind::Span(span) = &event.kind else {
            return HookAction::Continue;
        };
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if span.phase == SpanPhase::Start {
            let nth = match state
                .starts
                .iter_mut()
                .find(|(run, _)| *run == event.run_id)
            {
                Some((_, n)) => {
                    *n += 1;
                    *n - 1
                }
                None => {
                    state.starts.push((event.run_id.clone(), 1));
                    0
                }
            };
            let Some(opened) = OPENED_BY_START.get(nth) else {
                return HookAction::Continue;
            };
            let mut parent = span
                .parent_span_id
                .as_ref()
                .and_then(|p| state.open.iter().find(|o| o.span == *p))
                .and_then(|o| o.spans.last())
                .map_or_else(Context::current, |(_, cx)| cx.clone());
            let mut spans = Vec::with_capacity(opened.len());
            for &index in opened.iter() {
                let cx = self.start(index, &parent);
                parent = cx.clone();
                spans.push((index, cx));
            }
            state.open.push(Open {
                run: event.run_id.clone(),
                span: span.span_id.clone(),
                spans,
            });
        } else if let Some(i) = state.open.iter().position(|o| o.span == span.span_id) {
            let open = state.open.swap_remove(i);
            for (index, cx) in open.spans.iter().rev() {
                self.end(*index, cx);
            }
            if !state.open.iter().any(|o| o.run == open.run) {
                state.starts.retain(|(run, _)| *run != open.run);
            }
        }
        HookAction::Continue
    }

    fn otel_context(&self, _run_id: &str, span_id: &str) -> Option<Context> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state
            .open
            .iter()
            .find(|o| &*o.span == span_id)
            .and_then(|o| o.spans.last())
            .map(|(_, cx)| cx.clone())
    }
}
