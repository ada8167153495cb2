//! The HTTP server span of every request and its access log line.
//!
//! The caller's `traceparent`/`tracestate` parent a SERVER span named `{METHOD} {route}` with
//! HTTP semantic-convention attributes; handlers find its context in the request and run
//! the turn under it, so `agent.turn` is its child. The span (and the access log line:
//! method, route, status, duration; never bodies or tokens) ends when the response body
//! ends — for SSE, when the stream ends or the client hangs up. The response carries
//! `traceparent` and `traceresponse` naming the server span. The access log line is written
//! with the server span's context current, so the process's subscriber can put that span's
//! `trace_id`/`span_id` at the top of the line (the CLI's does), where log backends look
//! for them; without a span or a caller's `traceparent` there are no ids at all.

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use futures::Stream;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;

use crate::state::AppState;

/// The context a request's work runs under: the server span (or, without a tracer, the
/// caller's remote span, if any).
#[derive(Clone, Debug)]
pub struct ServerContext(pub Context);

impl ServerContext {
    /// Records why the request's work ended early (on the server span).
    pub(crate) fn note_cancel(&self, reason: &str, error: bool) {
        let span = self.0.span();
        span.set_attribute(KeyValue::new("kaos.cancel_reason", reason.to_string()));
        if error {
            span.set_status(Status::error(reason.to_string()));
        }
    }
}

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Middleware: the server span, the response's trace headers, the access log line.
pub async fn trace_requests(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    // A `traceparent` the W3C spec rejects is ignored (and its `tracestate` with it); the
    // SDK's own parser would pad or accept it.
    let malformed = request.headers().get("traceparent").is_some_and(|v| {
        v.to_str()
            .map_or(true, |t| !kaos_agents::otel::valid_traceparent(t))
    });
    let parent = if malformed {
        opentelemetry::Context::new()
    } else {
        TraceContextPropagator::new().extract(&Headers(request.headers()))
    };
    let cx = match &state.tracer {
        Some(tracer) => {
            let mut attributes = vec![
                KeyValue::new("http.request.method", method.clone()),
                KeyValue::new("http.route", route.clone()),
                KeyValue::new("url.path", request.uri().path().to_string()),
                KeyValue::new("url.scheme", "http"),
                KeyValue::new("network.protocol.name", "http"),
            ];
            if let Some(host) = request
                .headers()
                .get(axum::http::header::HOST)
                .and_then(|h| h.to_str().ok())
            {
                let (name, port) = match host.rsplit_once(':') {
                    Some((n, p)) if !n.ends_with(']') || n.starts_with('[') => {
                        (n, p.parse::<i64>().ok())
                    }
                    _ => (host, None),
                };
                attributes.push(KeyValue::new("server.address", name.to_string()));
                if let Some(p) = port {
                    attributes.push(KeyValue::new("server.port", p));
                }
            }
            if let Some(ConnectInfo(addr)) = request.extensions().get::<ConnectInfo<SocketAddr>>() {
                attributes.push(KeyValue::new("client.address", addr.ip().to_string()));
                attributes.push(KeyValue::new("client.port", i64::from(addr.port())));
            }
            if let Some(ua) = request
                .headers()
                .get(axum::http::header::USER_AGENT)
                .and_then(|h| h.to_str().ok())
            {
                attributes.push(KeyValue::new("user_agent.original", ua.to_string()));
            }
            let span = tracer
                .span_builder(format!("{method} {route}"))
                .with_kind(SpanKind::Server)
                .with_attributes(attributes)
                .start_with_context(tracer, &parent);
            parent.with_span(span)
        }
        None => parent,
    };
    let has_span = state.tracer.is_some();
    request.extensions_mut().insert(ServerContext(cx.clone()));
    let mut response = next.run(request).await;
    let status = response.status();
    if has_span {
        let span = cx.span();
        span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status.as_u16()),
        ));
        if status.is_server_error() {
            span.set_attribute(KeyValue::new("error.type", status.as_u16().to_string()));
            span.set_status(Status::error(format!("HTTP {}", status.as_u16())));
        }
    }
    // Only a span of ours is named back: without a tracer the caller's own span id would
    // claim a child that does not exist.
    if has_span
        && cx.span().span_context().is_valid()
        && let Some(tp) = kaos_agents::otel::format_traceparent(&cx)
        && let Ok(v) = HeaderValue::from_str(&tp)
    {
        response.headers_mut().insert("traceparent", v.clone());
        response.headers_mut().insert("traceresponse", v);
    }
    let finish = Finish {
        cx,
        has_span,
        started,
        method,
        route,
        status: status.as_u16(),
    };
    let (parts, body) = response.into_parts();
    let body = Body::from_stream(Guarded {
        inner: body.into_data_stream(),
        _finish: finish,
    });
    Response::from_parts(parts, body)
}

/// Ends the server span and writes the access log line when the response body is done
/// (or dropped: the client hung up).
struct Finish {
    cx: Context,
    has_span: bool,
    started: Instant,
    method: String,
    route: String,
    status: u16,
}

impl Drop for Finish {
    fn drop(&mut self) {
        // The line is written under the server span's context (the caller's, without a
        // tracer) so the subscriber takes the line's top-level `trace_id`/`span_id` from it:
        // log backends correlate on those, not on ids nested among the event's fields. The
        // body may end on any task, whose own context is not the request's.
        {
            let _current = self.cx.clone().attach();
            tracing::info!(
                target: "kaos_server::access",
                method = %self.method,
                route = %self.route,
                status = self.status,
                duration_ms = self.started.elapsed().as_secs_f64() * 1000.0,
                "request"
            );
        }
        if self.has_span {
            self.cx.span().end();
        }
    }
}

struct Guarded<S> {
    inner: S,
    _finish: Finish,
}

impl<S> Stream for Guarded<S>
where
    S: Stream<Item = Result<Bytes, axum::Error>> + Unpin,
{
    type Item = Result<Bytes, axum::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.inner).poll_next(cx)
    }
}
