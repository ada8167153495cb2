//! OTelHook span trees from realistic event streams (TurnScope) into the in-memory exporter.

use kaos_agents::testing::ScopeDriver;
use std::collections::HashSet;
use std::sync::Arc;

use kaos_agents::attrs;
use kaos_agents::events::{
    EventKind, Intent, SpanError, SpanPhase, SpanSubject, ToolCallSummary, TurnOutcome, TurnSummary,
};
use kaos_agents::hooks::HookSet;
use kaos_agents::otel::{CaptureContent, OTelHook, SpanNaming};
use kaos_agents::scope::{TurnScope, new_run_id};
use opentelemetry::Value;
use opentelemetry::trace::{SpanId, SpanKind, Status, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use serde_json::json;

pub struct Harness {
    pub exporter: InMemorySpanExporter,
    pub provider: SdkTracerProvider,
    pub hook: Arc<OTelHook>,
    pub hooks: HookSet,
}

impl Harness {
    pub fn new() -> Self {
        Self::with(|h| h)
    }

    pub fn with(f: impl FnOnce(OTelHook) -> OTelHook) -> Self {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let hook =
            Arc::new(f(OTelHook::new(provider.tracer("kaos-test"))
                .with_capture_content(CaptureContent::None)));
        let mut hooks = HookSet::default();
        hooks.push(hook.clone());
        Self {
            exporter,
            provider,
            hook,
            hooks,
        }
    }

    pub fn scope(&self, session: &str, agent: &str) -> TurnScope {
        TurnScope::new(
            session.into(),
            new_run_id(),
            agent.into(),
            self.hooks.clone(),
        )
    }

    pub fn spans(&self) -> Vec<SpanData> {
        self.provider.force_flush().unwrap();
        self.exporter.get_finished_spans().unwrap()
    }

    pub fn assert_state_empty(&self) {
        assert_eq!(self.hook.open_span_count(), 0, "open spans left");
        assert_eq!(self.hook.tracked_runs(), 0, "run state left");
    }
}

pub fn named<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
    let found: Vec<_> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(
        found.len(),
        1,
        "expected exactly one {name:?} in {:?}",
        names(spans)
    );
    found[0]
}

pub fn names(spans: &[SpanData]) -> Vec<String> {
    let mut n: Vec<String> = spans.iter().map(|s| s.name.to_string()).collect();
    n.sort();
    n
}

pub fn attr(span: &SpanData, key: &str) -> Option<Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.clone())
}

pub fn attr_s(span: &SpanData, key: &str) -> String {
    attr(span, key)
        .unwrap_or_else(|| panic!("{} has no {key}", span.name))
        .as_str()
        .to_string()
}

pub fn parent<'a>(spans: &'a [SpanData], span: &SpanData) -> Option<&'a SpanData> {
    if span.parent_span_id == SpanId::INVALID {
        return None;
    }
    spans
        .iter()
        .find(|s| s.span_context.span_id() == span.parent_span_id)
}

pub fn parent_name(spans: &[SpanData], span: &SpanData) -> Option<String> {
    parent(spans, span).map(|p| p.name.to_string())
}

/// Every span exported once, every parent exported in the same trace, children within
/// their parents' time range.
pub fn assert_well_formed(spans: &[SpanData]) {
    let ids: HashSet<_> = spans.iter().map(|s| s.span_context.span_id()).collect();
    assert_eq!(ids.len(), spans.len(), "a span was exported twice");
    for s in spans {
        let mut keys = HashSet::new();
        for kv in &s.attributes {
            assert!(
                keys.insert(kv.key.as_str()),
                "{}: attribute {} set twice",
                s.name,
                kv.key
            );
        }
        assert!(
            s.start_time <= s.end_time,
            "{} ends before it starts",
            s.name
        );
        if let Some(p) = parent(spans, s) {
            assert_eq!(p.span_context.trace_id(), s.span_context.trace_id());
            assert!(
                p.start_time <= s.start_time,
                "{} starts before {}",
                s.name,
                p.name
            );
            assert!(s.end_time <= p.end_time, "{} ends after {}", s.name, p.name);
        }
    }
}

fn llm(scope: &TurnScope, purpose: &str, input: u64, output: u64) {
    let (id, _) = scope.start_span(
        SpanSubject::LlmCall,
        format!("llm_call.{purpose}"),
        attrs! {"purpose" => purpose, "provider" => "function", "model" => "function-test"},
    );
    scope.end_span(
        &id,
        SpanPhase::Complete,
        attrs! {"input_tokens" => input, "output_tokens" => output, "total_tokens" => input + output,
        "cache_read_tokens" => 0, "cost_usd" => 0.0, "attempts" => 1, "response_model" => "function-test",
        "stop_reason" => "end_turn"},
        None,
    );
    scope.emit(EventKind::UsageObserved {
        input_tokens: input,
        output_tokens: output,
        total_tokens: input + output,
        cost_usd: Some(0.0),
        model: "function-test".into(),
        source: purpose.into(),
    });
}

fn classify(scope: &TurnScope, intent: Intent) {
    llm(scope, "intent_classification", 100, 10);
    scope.emit(EventKind::IntentClassified {
        intent,
        confidence: 0.95,
        reasoning: "x".into(),
    });
}

pub fn summary(
    text: &str,
    intent: Option<Intent>,
    tools: Vec<ToolCallSummary>,
    outcome: TurnOutcome,
) -> EventKind {
    EventKind::TurnSummary(TurnSummary {
        text: text.into(),
        intent,
        tool_calls: tools,
        tokens_used: 330,
        input_tokens: 300,
        output_tokens: 30,
        cost_usd: Some(0.0),
        outcome,
    })
}

pub fn start_turn(scope: &TurnScope, n: u64) -> Arc<str> {
    scope
        .start_span(
            SpanSubject::Turn,
            format!("turn.{n}"),
            attrs! {"turn_number" => n, "model" => "function-test"},
        )
        .0
}

pub fn end_turn(scope: &TurnScope, turn: &str, outcome: &str) {
    scope.end_span(
        turn,
        SpanPhase::Complete,
        attrs! {"turn_number" => 1, "outcome" => outcome},
        None,
    );
}

/// The seed's respond turn: classifier call, respond call, summary.
pub fn respond_turn(scope: &TurnScope) {
    let turn = start_turn(scope, 1);
    classify(scope, Intent::Respond);
    llm(scope, "respond", 200, 20);
    scope.emit(EventKind::TextDelta {
        content: "Hello from the agent.".into(),
        span_id: None,
    });
    end_turn(scope, &turn, "completed");
    scope.emit(summary(
        "Hello from the agent.",
        Some(Intent::Respond),
        vec![],
        TurnOutcome::Completed,
    ));
}

fn tool(scope: &TurnScope, name: &str, call_id: &str, result: &str) {
    let (id, _) = scope.start_span(
        SpanSubject::ToolCall,
        format!("tool.{name}"),
        attrs! {"tool_name" => name, "call_id" => call_id, "arguments" => json!({"text": "a b c"}), "permission" => "allow"},
    );
    scope.end_span(
        &id,
        SpanPhase::Complete,
        attrs! {"tool_name" => name, "call_id" => call_id, "is_error" => false, "result_summary" => result},
        None,
    );
}

/// A scripted tool turn: the classifier's call, one `wordcount` call (call id `tc_1`), the
/// summary.
pub fn tool_turn(scope: &TurnScope) {
    let turn = start_turn(scope, 1);
    classify(scope, Intent::ToolUse);
    tool(scope, "wordcount", "tc_1", "3");
    end_turn(scope, &turn, "completed");
    scope.emit(summary(
        "3",
        Some(Intent::ToolUse),
        vec![],
        TurnOutcome::Completed,
    ));
}

#[test]
fn respond_turn_tree() {
    let h = Harness::new();
    let scope = h.scope("otel-demo", "assistant");
    respond_turn(&scope);
    let spans = h.spans();
    assert_eq!(
        names(&spans),
        [
            "agent.intent_classification",
            "agent.turn",
            "chat function-test",
            "chat function-test"
        ]
    );
    assert_well_formed(&spans);
    let turn = named(&spans, "agent.turn");
    assert_eq!(turn.span_kind, SpanKind::Internal);
    assert_eq!(turn.status, Status::Ok);
    assert!(parent(&spans, turn).is_none());
    assert_eq!(attr_s(turn, "kaos.session_id"), "otel-demo");
    assert_eq!(attr_s(turn, "gen_ai.conversation.id"), "otel-demo");
    assert_eq!(attr_s(turn, "kaos.run_id"), scope.run_id().to_string());
    assert_eq!(attr_s(turn, "gen_ai.operation.name"), "invoke_agent");
    assert_eq!(attr_s(turn, "gen_ai.agent.name"), "assistant");
    assert_eq!(attr(turn, "kaos.turn_number"), Some(Value::I64(1)));
    assert_eq!(attr_s(turn, "kaos.intent"), "respond");
    assert_eq!(attr(turn, "kaos.tokens_used"), Some(Value::I64(330)));
    assert_eq!(attr(turn, "kaos.cost_usd"), Some(Value::F64(0.0)));
    assert_eq!(attr(turn, "kaos.tool_call_count"), Some(Value::I64(0)));
    assert!(
        attr(turn, "gen_ai.output.messages").is_none(),
        "content is off by default"
    );

    let intent = named(&spans, "agent.intent_classification");
    assert_eq!(parent_name(&spans, intent).as_deref(), Some("agent.turn"));
    assert_eq!(intent.span_kind, SpanKind::Internal);
    assert_eq!(attr_s(intent, "kaos.intent"), "respond");
    assert_eq!(attr(intent, "kaos.confidence"), Some(Value::F64(0.95)));
    assert_eq!(attr_s(intent, "kaos.reasoning"), "x");

    let chats: Vec<_> = spans
        .iter()
        .filter(|s| s.name == "chat function-test")
        .collect();
    let classifier = chats
        .iter()
        .find(|s| attr_s(s, "kaos.purpose") == "intent_classification")
        .unwrap();
    let respond = chats
        .iter()
        .find(|s| attr_s(s, "kaos.purpose") == "respond")
        .unwrap();
    assert_eq!(
        parent_name(&spans, classifier).as_deref(),
        Some("agent.intent_classification")
    );
    assert_eq!(parent_name(&spans, respond).as_deref(), Some("agent.turn"));
    for chat in [classifier, respond] {
        assert_eq!(chat.span_kind, SpanKind::Client);
        assert_eq!(chat.status, Status::Ok);
        assert_eq!(attr_s(chat, "gen_ai.operation.name"), "chat");
        assert_eq!(attr_s(chat, "gen_ai.provider.name"), "function");
        assert_eq!(attr_s(chat, "gen_ai.request.model"), "function-test");
        assert_eq!(attr_s(chat, "gen_ai.response.model"), "function-test");
        assert!(attr(chat, "kaos.cost_usd").is_some());
        assert!(
            attr(chat, "gen_ai.usage.cache_read.input_tokens").is_none(),
            "no cache read reported, none recorded"
        );
    }
    assert_eq!(
        attr(classifier, "gen_ai.usage.input_tokens"),
        Some(Value::I64(100))
    );
    assert_eq!(
        attr(respond, "gen_ai.usage.output_tokens"),
        Some(Value::I64(20))
    );

    // The intent span contains its classifier call and ends when that call ends.
    assert!(intent.start_time <= classifier.start_time);
    assert_eq!(intent.end_time, classifier.end_time);
    assert!(intent.end_time <= respond.start_time);
    h.assert_state_empty();
}

#[test]
fn a_cache_read_is_recorded_when_the_provider_reported_one() {
    let h = Harness::new();
    let scope = h.scope("cached", "assistant");
    let turn = start_turn(&scope, 1);
    let (id, _) = scope.start_span(
        SpanSubject::LlmCall,
        "llm_call.respond",
        attrs! {"purpose" => "respond", "provider" => "anthropic", "model" => "m"},
    );
    scope.end_span(
        &id,
        SpanPhase::Complete,
        attrs! {"input_tokens" => 500, "output_tokens" => 20, "cache_read_tokens" => 400},
        None,
    );
    end_turn(&scope, &turn, "completed");
    scope.emit(summary("ok", None, vec![], TurnOutcome::Completed));
    let spans = h.spans();
    let chat = named(&spans, "chat m");
    assert_eq!(
        attr(chat, "gen_ai.usage.cache_read.input_tokens"),
        Some(Value::I64(400))
    );
}

#[test]
fn tool_turn_tree() {
    let h = Harness::with(|hook| hook.with_capture_content(CaptureContent::Full));
    let scope = h.scope("s-tool", "assistant");
    let turn = start_turn(&scope, 1);
    classify(&scope, Intent::ToolUse);
    tool(&scope, "kaos-learn-wordcount", "tc_1", "3");
    llm(&scope, "react", 200, 20);
    end_turn(&scope, &turn, "completed");
    scope.emit(summary(
        "There are 3 words.",
        Some(Intent::ToolUse),
        vec![ToolCallSummary {
            tool_name: "kaos-learn-wordcount".into(),
            call_id: "tc_1".into(),
            is_error: false,
            duration_ms: 0.4,
            step_id: None,
        }],
        TurnOutcome::Completed,
    ));
    let spans = h.spans();
    assert_well_formed(&spans);
    let t = named(&spans, "agent.tool_call.kaos-learn-wordcount");
    assert_eq!(parent_name(&spans, t).as_deref(), Some("agent.turn"));
    assert_eq!(t.span_kind, SpanKind::Internal);
    assert_eq!(t.status, Status::Ok);
    assert_eq!(attr_s(t, "gen_ai.operation.name"), "execute_tool");
    assert_eq!(attr_s(t, "gen_ai.tool.name"), "kaos-learn-wordcount");
    assert_eq!(attr_s(t, "gen_ai.tool.call.id"), "tc_1");
    assert_eq!(attr_s(t, "kaos.call_id"), "tc_1");
    assert_eq!(attr(t, "kaos.is_error"), Some(Value::Bool(false)));
    assert!(matches!(attr(t, "kaos.duration_ms"), Some(Value::F64(_))));
    // Content capture (Full): arguments, result and the answer as GenAI JSON.
    let args: serde_json::Value =
        serde_json::from_str(&attr_s(t, "gen_ai.tool.call.arguments")).unwrap();
    assert_eq!(args, json!({"text": "a b c"}));
    // A text result is the text (an `any` value that is a string), not JSON with quotes.
    assert_eq!(attr_s(t, "gen_ai.tool.call.result"), "3");
    let turn = named(&spans, "agent.turn");
    assert_eq!(attr(turn, "kaos.tool_call_count"), Some(Value::I64(1)));
    let out: serde_json::Value =
        serde_json::from_str(&attr_s(turn, "gen_ai.output.messages")).unwrap();
    assert_eq!(out[0]["role"], "assistant");
    assert_eq!(out[0]["parts"][0]["content"], "There are 3 words.");
    h.assert_state_empty();
}

#[test]
fn classifier_auth_failure_is_an_error_turn() {
    let h = Harness::new();
    let scope = h.scope("s-err", "assistant");
    let turn = start_turn(&scope, 1);
    let (call, _) = scope.start_span(
        SpanSubject::LlmCall,
        "llm_call.intent_classification",
        attrs! {"purpose" => "intent_classification", "provider" => "function", "model" => "function-test"},
    );
    let auth = SpanError {
        error_type: "auth_failure".into(),
        message: "no key".into(),
    };
    scope.end_span(
        &call,
        SpanPhase::Error,
        attrs! {"attempts" => 1},
        Some(auth.clone()),
    );
    scope.emit(EventKind::RunError {
        error_type: "auth_failure".into(),
        message: "Call failed: no key.".into(),
        recovery_hint: "Check the API key.".into(),
    });
    scope.end_span(
        &turn,
        SpanPhase::Error,
        attrs! {"turn_number" => 1, "outcome" => "failed"},
        Some(auth),
    );
    scope.emit(summary("", None, vec![], TurnOutcome::Failed));
    let spans = h.spans();
    assert_well_formed(&spans);
    let turn = named(&spans, "agent.turn");
    assert!(matches!(&turn.status, Status::Error { description } if !description.is_empty()));
    assert_eq!(attr_s(turn, "kaos.error_type"), "auth_failure");
    assert_eq!(attr_s(turn, "kaos.recovery_hint"), "Check the API key.");
    let chat = named(&spans, "chat function-test");
    assert!(matches!(&chat.status, Status::Error { description } if description == "no key"));
    assert_eq!(attr_s(chat, "error.type"), "auth_failure");
    let intent = named(&spans, "agent.intent_classification");
    assert!(matches!(intent.status, Status::Error { .. }));
    assert!(attr(intent, "kaos.intent").is_none());
    h.assert_state_empty();
}

/// Cut short while the classifier runs (Ctrl-C, a dropped stream): the intent span is
/// marked cancelled with its call, as the tree shows it (it used to end UNSET, unmarked).
#[test]
fn a_classification_cut_short_marks_its_intent_span_cancelled() {
    let h = Harness::new();
    let scope = h.scope("s-cut", "assistant");
    start_turn(&scope, 1);
    scope.start_span(
        SpanSubject::LlmCall,
        "llm_call.intent_classification",
        attrs! {"purpose" => "intent_classification", "provider" => "function", "model" => "function-test"},
    );
    scope.cancel_open("interrupted");
    let spans = h.spans();
    assert_well_formed(&spans);
    for name in ["agent.intent_classification", "chat function-test"] {
        let span = named(&spans, name);
        assert_eq!(span.status, Status::Unset, "{name}");
        assert_eq!(
            attr(span, "kaos.cancelled"),
            Some(Value::Bool(true)),
            "{name}"
        );
        assert_eq!(attr_s(span, "kaos.cancel_reason"), "interrupted", "{name}");
    }
    h.assert_state_empty();
}

#[test]
fn cancelled_turn_ends_every_span_once() {
    let h = Harness::new();
    let scope = h.scope("s-cancel", "assistant");
    start_turn(&scope, 1);
    classify(&scope, Intent::ToolUse);
    let (_tool, _) = scope.start_span(
        SpanSubject::ToolCall,
        "tool.slow",
        attrs! {"tool_name" => "slow", "call_id" => "tc_9", "arguments" => json!({}), "permission" => "allow"},
    );
    assert_eq!(h.hook.open_span_count(), 2);
    // The consumer drops the stream: the runtime cancels what is open.
    assert_eq!(scope.cancel_open("stream dropped"), 2);
    let spans = h.spans();
    assert_eq!(
        names(&spans),
        [
            "agent.intent_classification",
            "agent.tool_call.slow",
            "agent.turn",
            "chat function-test"
        ]
    );
    assert_well_formed(&spans);
    for name in ["agent.tool_call.slow", "agent.turn"] {
        let s = named(&spans, name);
        assert_eq!(s.status, Status::Unset, "{name}");
        assert_eq!(attr(s, "kaos.cancelled"), Some(Value::Bool(true)), "{name}");
        assert_eq!(attr_s(s, "kaos.cancel_reason"), "stream dropped");
    }
    h.assert_state_empty();
}

#[test]
fn turn_end_without_summary_closes_open_children() {
    let h = Harness::new();
    let scope = h.scope("s-abrupt", "assistant");
    let turn = start_turn(&scope, 1);
    // A hand-built tool START the scope does not know about never gets its end.
    scope.emit(EventKind::Span(kaos_agents::SpanEvent {
        subject: SpanSubject::ToolCall,
        phase: SpanPhase::Start,
        span_id: "00000000000000aa".into(),
        parent_span_id: Some(turn.clone()),
        name: "tool.orphan".into(),
        duration_ms: None,
        attributes: attrs! {"tool_name" => "orphan", "call_id" => "c1"},
        error: None,
    }));
    end_turn(&scope, &turn, "completed");
    // Streamed text passes the hook by: the turn still waits for its summary.
    scope.emit(EventKind::TextDelta {
        content: String::new(),
        span_id: None,
    });
    assert_eq!(names(&h.spans()), ["agent.tool_call.orphan"]);
    // No TurnSummary: the next event of the run that the hook handles (here a hand-built
    // one) ends the turn, at the time its END said.
    scope.emit(EventKind::BudgetExceeded {
        kind: "steps".into(),
        limit: 1.0,
        actual: 2.0,
        reason: "hand-built".into(),
    });
    let spans = h.spans();
    assert_eq!(names(&spans), ["agent.tool_call.orphan", "agent.turn"]);
    assert_well_formed(&spans);
    assert_eq!(
        named(&spans, "agent.turn").end_time,
        named(&spans, "agent.tool_call.orphan").end_time,
        "the turn ends when its END said, not when the next event came"
    );
    let orphan = named(&spans, "agent.tool_call.orphan");
    assert_eq!(attr_s(orphan, "kaos.cancel_reason"), "parent_ended");
    assert_eq!(named(&spans, "agent.turn").status, Status::Ok);
    h.assert_state_empty();
}

#[test]
fn shutdown_closes_a_turn_waiting_for_its_summary() {
    let h = Harness::new();
    let scope = h.scope("s-wait", "assistant");
    let turn = start_turn(&scope, 1);
    end_turn(&scope, &turn, "completed");
    assert_eq!(h.hook.open_span_count(), 1);
    kaos_agents::Hook::shutdown(&*h.hook).unwrap();
    let spans = h.spans();
    assert_eq!(names(&spans), ["agent.turn"]);
    h.assert_state_empty();
}

#[test]
fn paused_turn() {
    let h = Harness::new();
    let scope = h.scope("s-pause", "assistant");
    let turn = start_turn(&scope, 1);
    classify(&scope, Intent::ToolUse);
    let (tool, _) = scope.start_span(
        SpanSubject::ToolCall,
        "tool.kaos-learn-delete",
        attrs! {"tool_name" => "kaos-learn-delete", "call_id" => "tc_1", "arguments" => json!({"path": "/x.docx"}), "permission" => "ask"},
    );
    scope.emit(EventKind::ToolCallApprovalRequired {
        call_id: "tc_1".into(),
        tool_name: "kaos-learn-delete".into(),
        arguments: json!({"path": "/x.docx"}),
        reason: "policy".into(),
        run_state_ref: None,
    });
    scope.end_span(
        &tool,
        SpanPhase::Cancelled,
        attrs! {"tool_name" => "kaos-learn-delete", "call_id" => "tc_1"},
        Some(SpanError {
            error_type: "awaiting_approval".into(),
            message: "waits for approval".into(),
        }),
    );
    end_turn(&scope, &turn, "paused");
    scope.emit(summary(
        "",
        Some(Intent::ToolUse),
        vec![],
        TurnOutcome::Paused,
    ));
    let spans = h.spans();
    assert_well_formed(&spans);
    let t = named(&spans, "agent.tool_call.kaos-learn-delete");
    assert_eq!(t.status, Status::Unset);
    assert_eq!(attr(t, "kaos.approval_required"), Some(Value::Bool(true)));
    assert_eq!(attr(t, "kaos.cancelled"), Some(Value::Bool(true)));
    assert_eq!(attr_s(t, "kaos.cancel_reason"), "awaiting_approval");
    assert_eq!(attr_s(t, "kaos.permission"), "ask");
    let turn = named(&spans, "agent.turn");
    assert_eq!(turn.status, Status::Unset);
    assert_eq!(attr_s(turn, "kaos.outcome"), "paused");
    h.assert_state_empty();
}

#[test]
fn plan_steps_contain_their_tool_calls() {
    let h = Harness::new();
    let scope = h.scope("s-plan", "planner");
    let turn = start_turn(&scope, 1);
    classify(&scope, Intent::Plan);
    for (i, step) in ["step-1-aa", "step-2-bb"].iter().enumerate() {
        let (sid, _) = scope.start_span(
            SpanSubject::Step,
            format!("step.{step}"),
            attrs! {"step_id" => *step, "description" => "count words"},
        );
        let (tid, _) = scope.start_span(
            SpanSubject::ToolCall,
            "tool.wordcount",
            attrs! {"tool_name" => "wordcount", "call_id" => format!("c{i}"), "arguments" => json!({}), "permission" => "allow", "step_id" => *step},
        );
        if i == 0 {
            scope.end_span(
                &tid,
                SpanPhase::Complete,
                attrs! {"is_error" => false, "result_summary" => "3"},
                None,
            );
            scope.end_span(&sid, SpanPhase::Complete, attrs! {}, None);
        } else {
            scope.end_span(
                &tid,
                SpanPhase::Error,
                attrs! {"is_error" => true, "result_summary" => "boom"},
                Some(SpanError {
                    error_type: "tool_error".into(),
                    message: "boom".into(),
                }),
            );
            scope.end_span(
                &sid,
                SpanPhase::Error,
                attrs! {},
                Some(SpanError {
                    error_type: "step_failed".into(),
                    message: "tool failed".into(),
                }),
            );
        }
    }
    end_turn(&scope, &turn, "completed");
    scope.emit(summary(
        "done",
        Some(Intent::Plan),
        vec![],
        TurnOutcome::Completed,
    ));
    let spans = h.spans();
    assert_well_formed(&spans);
    let s1 = named(&spans, "agent.step.step-1-aa");
    let s2 = named(&spans, "agent.step.step-2-bb");
    assert_eq!(parent_name(&spans, s1).as_deref(), Some("agent.turn"));
    assert_eq!(attr_s(s1, "kaos.description"), "count words");
    assert_eq!(s1.status, Status::Ok);
    assert!(matches!(s2.status, Status::Error { .. }));
    let tools: Vec<_> = spans
        .iter()
        .filter(|s| s.name == "agent.tool_call.wordcount")
        .collect();
    assert_eq!(tools.len(), 2);
    for t in tools {
        let p = parent(&spans, t).unwrap();
        assert!(
            p.name.starts_with("agent.step."),
            "tool parent is {}",
            p.name
        );
        assert_eq!(attr_s(t, "kaos.step_id"), attr_s(p, "kaos.step_id"));
        if p.name == s2.name {
            assert!(matches!(&t.status, Status::Error { description } if description == "boom"));
            assert_eq!(attr_s(t, "kaos.error_type"), "tool_error");
        }
    }
    h.assert_state_empty();
}

#[test]
fn subagent_turn_nests_under_the_delegating_tool_call() {
    let h = Harness::new();
    let scope = h.scope("s-sub", "lead");
    let turn = start_turn(&scope, 1);
    classify(&scope, Intent::ToolUse);
    let (tool, _) = scope.start_span(
        SpanSubject::ToolCall,
        "tool.researcher",
        attrs! {"tool_name" => "researcher", "call_id" => "tc_1", "arguments" => json!({"task": "dig"}), "permission" => "allow"},
    );
    let (sub, _) = scope.start_span(
        SpanSubject::Subagent,
        "subagent.researcher",
        attrs! {"subagent_name" => "researcher", "task" => "dig"},
    );
    let nested = TurnScope::nested(&scope, sub.clone(), "s-sub".into(), "researcher".into());
    assert_ne!(nested.run_id(), scope.run_id());
    respond_turn(&nested);
    scope.end_span(&sub, SpanPhase::Complete, attrs! {}, None);
    scope.end_span(
        &tool,
        SpanPhase::Complete,
        attrs! {"is_error" => false, "result_summary" => "found"},
        None,
    );
    end_turn(&scope, &turn, "completed");
    scope.emit(summary(
        "ok",
        Some(Intent::ToolUse),
        vec![],
        TurnOutcome::Completed,
    ));

    let spans = h.spans();
    assert_well_formed(&spans);
    let turns: Vec<_> = spans.iter().filter(|s| s.name == "agent.turn").collect();
    assert_eq!(turns.len(), 2);
    let outer = turns
        .iter()
        .find(|t| attr_s(t, "gen_ai.agent.name") == "lead")
        .unwrap();
    let inner = turns
        .iter()
        .find(|t| attr_s(t, "gen_ai.agent.name") == "researcher")
        .unwrap();
    let sub = named(&spans, "agent.subagent.researcher");
    assert_eq!(attr_s(sub, "gen_ai.operation.name"), "invoke_agent");
    assert_eq!(
        parent_name(&spans, sub).as_deref(),
        Some("agent.tool_call.researcher")
    );
    assert_eq!(
        parent(&spans, inner).unwrap().span_context.span_id(),
        sub.span_context.span_id()
    );
    assert_eq!(inner.span_context.trace_id(), outer.span_context.trace_id());
    assert_ne!(attr_s(inner, "kaos.run_id"), attr_s(outer, "kaos.run_id"));
    assert_eq!(
        spans
            .iter()
            .filter(|s| s.name == "agent.intent_classification")
            .count(),
        2
    );
    h.assert_state_empty();
}

#[test]
fn handoff_contains_the_target_turn() {
    let h = Harness::new();
    let scope = h.scope("s-hand", "triage");
    let turn = start_turn(&scope, 1);
    classify(&scope, Intent::Respond);
    let (hand, _) = scope.start_span(
        SpanSubject::Handoff,
        "handoff.billing",
        attrs! {"from_agent" => "triage", "to_agent" => "billing", "reason" => "invoice question"},
    );
    let target = TurnScope::nested(&scope, hand.clone(), "s-hand".into(), "billing".into());
    respond_turn(&target);
    scope.end_span(&hand, SpanPhase::Complete, attrs! {}, None);
    end_turn(&scope, &turn, "completed");
    scope.emit(summary(
        "ok",
        Some(Intent::Respond),
        vec![],
        TurnOutcome::Completed,
    ));
    let spans = h.spans();
    assert_well_formed(&spans);
    let hand = named(&spans, "agent.handoff.billing");
    assert_eq!(attr_s(hand, "kaos.from_agent"), "triage");
    assert_eq!(attr_s(hand, "kaos.to_agent"), "billing");
    assert_eq!(attr_s(hand, "kaos.reason"), "invoice question");
    assert_eq!(parent_name(&spans, hand).as_deref(), Some("agent.turn"));
    let billing = spans
        .iter()
        .find(|s| s.name == "agent.turn" && attr_s(s, "gen_ai.agent.name") == "billing")
        .unwrap();
    assert_eq!(
        parent_name(&spans, billing).as_deref(),
        Some("agent.handoff.billing")
    );
    h.assert_state_empty();
}

#[test]
fn genai_naming() {
    let h = Harness::with(|hook| hook.with_naming(SpanNaming::GenAi));
    tool_turn(&h.scope("s-names", "assistant"));
    assert_eq!(
        names(&h.spans()),
        [
            "agent.intent_classification",
            "chat function-test",
            "execute_tool wordcount",
            "invoke_agent assistant"
        ]
    );
}
