//! One served turn as a stream of events: the runner's [`EventStream`] under the server
//! span's context, with the server's limits around it.
//!
//! The turn advances only as the stream is polled, i.e. as the client reads. It ends early
//! when the wall-clock limit passes (outcome `timeout`), when a drain runs out of time
//! (`cancelled`), or when the stream is dropped (the client hung up). In every case the open
//! spans end `cancelled` through the hooks (OTel, audit), the running tool futures are
//! dropped (command tools kill their processes) and the session is left as before the turn.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use futures::{Future, Stream, StreamExt};
use kaos_agents::{Event, EventKind, EventStream, SpanPhase, SpanSubject, TurnOutcome};
use tokio::sync::{OwnedMutexGuard, OwnedSemaphorePermit, watch};

use crate::api::{ToolCallResult, TurnResponse};
use crate::error::ErrorDetail;
use crate::trace::ServerContext;

/// Why a turn was cut short by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cut {
    /// The wall-clock limit passed.
    Timeout,
    /// The server drained past its deadline.
    Shutdown,
}

/// What the turn holds while it runs: its concurrency permit and its session's lock.
pub(crate) struct Held {
    pub _permit: OwnedSemaphorePermit,
    pub _session: OwnedMutexGuard<()>,
}

/// A running turn.
pub(crate) struct TurnStream {
    events: Option<EventStream>,
    server: ServerContext,
    external_session: Arc<str>,
    deadline: Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
    shutdown: Pin<Box<dyn Future<Output = ()> + Send>>,
    tail: VecDeque<Event>,
    cut: Option<Cut>,
    _held: Held,
}

async fn shutdown_signal(mut rx: watch::Receiver<bool>) {
    // An error means the server state is gone: nothing will cancel this turn any more.
    if rx.wait_for(|cancel| *cancel).await.is_err() {
        futures::future::pending::<()>().await;
    }
}

impl TurnStream {
    pub(crate) fn new(
        events: EventStream,
        server: ServerContext,
        external_session: Arc<str>,
        timeout: Duration,
        cancel: watch::Receiver<bool>,
        held: Held,
    ) -> Self {
        Self {
            events: Some(events),
            server,
            external_session,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            timeout,
            shutdown: Box::pin(shutdown_signal(cancel)),
            tail: VecDeque::new(),
            cut: None,
            _held: held,
        }
    }

    /// Why the server cut the turn short, if it did.
    pub(crate) fn cut(&self) -> Option<Cut> {
        self.cut
    }

    fn cut_short(&mut self, cut: Cut) {
        let Some(events) = self.events.take() else {
            return;
        };
        let (error_type, message, hint) = match cut {
            Cut::Timeout => (
                "timeout",
                format!(
                    "the turn exceeded the server's wall-clock limit of {:.1}s",
                    self.timeout.as_secs_f64()
                ),
                "Ask for less per turn, or raise the server's --turn-timeout.",
            ),
            Cut::Shutdown => (
                "shutdown",
                "the server is shutting down and the turn did not finish within the drain timeout"
                    .to_string(),
                "Send the message again; another replica (or this one, restarted) will run it.",
            ),
        };
        // Aborting drops the run's tool futures (command tools kill their processes).
        self.tail.extend(events.abort(error_type, &message, hint));
        self.server.note_cancel(error_type, true);
        self.cut = Some(cut);
    }

    fn outward(&self, mut event: Event) -> Event {
        event.session_id = self.external_session.clone();
        event
    }
}

impl Stream for TurnStream {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Event>> {
        let this = &mut *self;
        if let Some(e) = this.tail.pop_front() {
            return Poll::Ready(Some(this.outward(e)));
        }
        if this.events.is_none() {
            return Poll::Ready(None);
        }
        if this.shutdown.as_mut().poll(cx).is_ready() {
            this.cut_short(Cut::Shutdown);
        } else if this.deadline.as_mut().poll(cx).is_ready() {
            this.cut_short(Cut::Timeout);
        }
        if let Some(events) = this.events.as_mut() {
            // The server span is the current context while the turn runs, so the OTel
            // hook parents `agent.turn` on it.
            let polled = {
                let _guard = this.server.0.clone().attach();
                events.poll_next_unpin(cx)
            };
            return match polled {
                Poll::Ready(Some(e)) => Poll::Ready(Some(this.outward(e))),
                Poll::Ready(None) => {
                    this.events = None;
                    Poll::Ready(None)
                }
                Poll::Pending => Poll::Pending,
            };
        }
        match this.tail.pop_front() {
            Some(e) => Poll::Ready(Some(this.outward(e))),
            None => Poll::Ready(None),
        }
    }
}

impl Drop for TurnStream {
    fn drop(&mut self) {
        if let Some(mut events) = self.events.take() {
            // The client went away mid-turn.
            events.cancel("the client disconnected before the turn ended");
            drop(events);
            self.server.note_cancel("client_disconnected", false);
        }
    }
}

/// Folds a turn's events (as sent to the client) into the JSON answer.
pub(crate) fn fold(events: &[Event], session_id: &str, cut: Option<Cut>) -> TurnResponse {
    let root = events
        .iter()
        .find(|e| e.is_span(SpanSubject::Turn, SpanPhase::Start))
        .or(events.first())
        .map(|e| e.run_id.clone());
    let mut r = TurnResponse {
        session_id: session_id.to_string(),
        run_id: root.as_deref().unwrap_or_default().to_string(),
        text: String::new(),
        intent: None,
        turn_number: 0,
        tokens_used: 0,
        cost_usd: None,
        tool_calls: Vec::new(),
        budget_exceeded: false,
        paused_for_approval: false,
        pending_tool_name: None,
        outcome: "cancelled".into(),
        error: None,
    };
    let mut deltas = String::new();
    let mut summary = false;
    for e in events {
        if let EventKind::BudgetExceeded { .. } = e.kind {
            r.budget_exceeded = true;
        }
        if Some(&e.run_id) != root.as_ref() {
            continue;
        }
        match &e.kind {
            EventKind::Span(s) if s.subject == SpanSubject::Turn => {
                if let Some(n) = s.attributes.get("turn_number").and_then(|v| v.as_u64()) {
                    r.turn_number = n;
                }
            }
            EventKind::Span(s) if s.subject == SpanSubject::ToolCall && s.phase.is_terminal() => {
                r.tool_calls.push(ToolCallResult {
                    tool_name: s.attr_str("tool_name").unwrap_or(&s.name).to_string(),
                    result_summary: s.attr_str("result_summary").unwrap_or_default().to_string(),
                    is_error: s.phase != SpanPhase::Complete
                        || s.attributes
                            .get("is_error")
                            .and_then(|v| v.as_bool())
                            .unwrap_or(false),
                });
            }
            EventKind::IntentClassified { intent, .. } => r.intent = Some(intent.to_string()),
            EventKind::TextDelta { content, .. } => deltas.push_str(content),
            EventKind::ToolCallApprovalRequired { tool_name, .. } => {
                r.paused_for_approval = true;
                r.pending_tool_name = Some(tool_name.clone());
            }
            EventKind::RunError {
                error_type,
                message,
                ..
            } => {
                r.error = Some(ErrorDetail {
                    code: error_type.clone(),
                    message: message.clone(),
                });
            }
            EventKind::TurnSummary(s) => {
                summary = true;
                r.text = if s.text.is_empty() {
                    deltas.clone()
                } else {
                    s.text.clone()
                };
                r.tokens_used = s.tokens_used;
                r.cost_usd = s.cost_usd;
                r.outcome = match s.outcome {
                    TurnOutcome::Completed => "completed",
                    TurnOutcome::Paused => "paused",
                    TurnOutcome::Failed => "failed",
                }
                .into();
            }
            _ => {}
        }
    }
    if !summary {
        r.text = deltas;
    }
    match cut {
        Some(Cut::Timeout) => r.outcome = "timeout".into(),
        Some(Cut::Shutdown) => r.outcome = "cancelled".into(),
        None => {}
    }
    r
}
