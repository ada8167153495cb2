//! The hook's tracer. The SDK's own [`SdkTracer`] is kept as it is: behind a
//! [`BoxedTracer`] every span would be boxed twice (once by the boxed tracer, once more by
//! the [`Context`] that holds it), an extra allocation, a move of the whole span and a
//! second dynamic call per span operation. Any other tracer goes behind a `BoxedTracer`
//! (a `BoxedTracer` itself, e.g. the global one, is not boxed again). Also here: the span
//! builder the hook fills in place, and the caller's context a root span starts from.

use std::any::Any;
use std::borrow::Cow;
use std::time::SystemTime;

use opentelemetry::Context;
use opentelemetry::global::BoxedTracer;
use opentelemetry::trace::noop::NoopTracer;
use opentelemetry::trace::{SpanBuilder, SpanKind, TraceContextExt, Tracer};
use opentelemetry_sdk::trace::SdkTracer;

/// The tracer [`super::OTelHook`] starts its spans with.
pub(super) enum HookTracer {
    /// The SDK's tracer, called directly.
    Sdk(SdkTracer),
    /// Any other tracer.
    Boxed(BoxedTracer),
}

impl HookTracer {
    /// `tracer` as it is when it is an [`SdkTracer`] or a [`BoxedTracer`], else boxed.
    pub(super) fn new<T>(tracer: T) -> Self
    where
        T: Tracer + Send + Sync + 'static,
        T::Span: Send + Sync + 'static,
    {
        let mut slot = Some(tracer);
        let any: &mut dyn Any = &mut slot;
        let known = if let Some(sdk) = any.downcast_mut::<Option<SdkTracer>>() {
            sdk.take().map(Self::Sdk)
        } else if let Some(boxed) = any.downcast_mut::<Option<BoxedTracer>>() {
            boxed.take().map(Self::Boxed)
        } else {
            None
        };
        match (known, slot) {
            (Some(known), _) => known,
            (None, Some(other)) => Self::Boxed(BoxedTracer::new(Box::new(other))),
            // Only a matched downcast empties the slot, and that one returned above.
            (None, None) => Self::Boxed(BoxedTracer::new(Box::new(NoopTracer::new()))),
        }
    }

    /// Starts `builder`'s span under `parent`; returns `parent` with the span in it.
    pub(super) fn start(&self, builder: SpanBuilder, parent: &Context) -> Context {
        match self {
            Self::Sdk(t) => parent.with_span(builder.start_with_context(t, parent)),
            Self::Boxed(t) => parent.with_span(builder.start_with_context(t, parent)),
        }
    }
}

/// A span builder with its name, kind and start time, filled in place (each `with_*` call
/// moves the whole builder, a few hundred bytes).
pub(super) fn builder(
    name: impl Into<Cow<'static, str>>,
    kind: SpanKind,
    start: SystemTime,
) -> SpanBuilder {
    let mut b = SpanBuilder::from_name(name);
    b.span_kind = Some(kind);
    b.start_time = Some(start);
    b
}

/// The caller's current OTel context: the attached [`Context::current`] when it holds a span,
/// else (feature `tracing`) the OTel context of the current `tracing` span, as bridged by
/// `tracing-opentelemetry`.
pub fn ambient_context() -> Context {
    let cx = Context::current();
    #[cfg(feature = "tracing")]
    if !cx.span().span_context().is_valid() {
        use tracing_opentelemetry::OpenTelemetrySpanExt as _;
        let from_tracing = tracing::Span::current().context();
        if from_tracing.span().span_context().is_valid() {
            return from_tracing;
        }
    }
    cx
}
