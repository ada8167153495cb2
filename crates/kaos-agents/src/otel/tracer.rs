//! The hook's tracer. The SDK's own [`SdkTracer`] is kept as it is: behind a
//! [`BoxedTracer`] every span would be boxed twice (once by the boxed tracer, once more by
//! the [`Context`] that holds it), an extra allocation, a move of the whole span and a
//! second dynamic call per span operation. Any other tracer goes behind a `BoxedTracer`
//! (a `BoxedTracer` itself, e.g. the global one, is not boxed again).

use std::any::Any;

use opentelemetry::Context;
use opentelemetry::global::BoxedTracer;
use opentelemetry::trace::noop::NoopTracer;
use opentelemetry::trace::{SpanBuilder, TraceContextExt, Tracer};
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
