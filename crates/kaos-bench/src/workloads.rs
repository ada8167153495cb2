//! The workloads: each drives turns through the public API and returns its figures.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kaos_agents::hooks::Hook;
use kaos_agents::kaos_llm::Role;
use kaos_agents::{
    Agent, AgentPattern, Event, EventKind, FnTool, FunctionClient, HookSet, KaosRuntime, LlmClient,
    LlmRequest, Message, ProviderResponse, Runner, SpanEvent, SpanPhase, SpanSubject,
};
use serde_json::{Value, json};

use crate::{BoxError, Sizes, Stats, alloc};

pub(crate) const MODEL: &str = "function-test";
const CLASSIFY_RESPOND: &str =
    r#"{"intent":"respond","confidence":0.95,"reasoning":"small talk needs no tools"}"#;
const CLASSIFY_TOOL: &str =
    r#"{"intent":"tool_use","confidence":0.9,"reasoning":"the lookup tool answers this"}"#;
const RESPOND: &str = r#"{"response":"Hello from the agent."}"#;

/// Whether this is the intent classifier's prompt (the seed's rule: it mentions "intent"
/// and "reasoning"). Only the system prompt is searched, without lowercasing, to keep the
/// fake model's own cost out of the figures.
fn is_classifier(messages: &[Message]) -> bool {
    messages
        .first()
        .is_some_and(|m| m.content.contains("intent") && m.content.contains("reasoning"))
}

/// The seed's respond turn: classifier says respond, the respond call answers in JSON.
pub(crate) fn chat_model(messages: &[Message], _request: &LlmRequest) -> ProviderResponse {
    if is_classifier(messages) {
        ProviderResponse::from_text(CLASSIFY_RESPOND).with_usage(100, 10)
    } else {
        ProviderResponse::from_text(RESPOND).with_usage(200, 20)
    }
}

/// The one-tool turn: classifier says tool_use, the model calls `lookup` once, then answers.
fn tool_model(messages: &[Message], request: &LlmRequest) -> ProviderResponse {
    if is_classifier(messages) {
        return ProviderResponse::from_text(CLASSIFY_TOOL).with_usage(100, 10);
    }
    let after_tool = messages.last().is_some_and(|m| m.role == Role::Tool);
    if request.tools.is_empty() || after_tool {
        ProviderResponse::from_text("The answer is 42.").with_usage(300, 10)
    } else {
        ProviderResponse::from_tool_call("call_1", "lookup", json!({"key": "answer"}))
            .with_usage(250, 15)
    }
}

fn lookup_tool() -> FnTool {
    FnTool::from_json(
        "lookup",
        "Looks a key up in a small read-only table.",
        json!({"type": "object", "properties": {"key": {"type": "string"}}, "required": ["key"]}),
        |args: Value, _ctx| async move {
            match args.get("key").and_then(Value::as_str) {
                Some("answer") => "42".to_string(),
                Some(other) => format!("no entry for {other}"),
                None => "missing key".to_string(),
            }
        },
    )
    .read_only()
}

pub(crate) fn agent(name: &str, pattern: AgentPattern) -> Result<Agent, BoxError> {
    Ok(Agent::builder()
        .name(name)
        .instructions("You are a helpful assistant.")
        .model(MODEL)
        .pattern(pattern)
        .build()?)
}

pub(crate) fn chat_runner(client: FunctionClient) -> Result<Runner, BoxError> {
    let runtime = KaosRuntime::test_mode().with_client(MODEL, client);
    Ok(Runner::new(
        agent("bench-chat", AgentPattern::Chat)?,
        runtime,
    ))
}

fn tool_runner(client: FunctionClient) -> Result<Runner, BoxError> {
    let runtime = KaosRuntime::test_mode()
        .with_client(MODEL, client)
        .with_tool(lookup_tool());
    Ok(Runner::new(
        agent("bench-tool", AgentPattern::Chat)?,
        runtime,
    ))
}

/// Drives one turn to its end; returns the events.
async fn drive(runner: &Runner, message: &str, session: String) -> Vec<Event> {
    runner.run(message, session).collect().await
}

/// Drives one turn to its end, dropping events as they come; returns how many there were.
pub(crate) async fn drain(runner: &Runner, message: &str, session: String) -> usize {
    let mut stream = runner.run(message, session);
    let mut n = 0;
    while let Some(event) = stream.next().await {
        black_box(&event);
        n += 1;
    }
    n
}

fn summary_text(events: &[Event]) -> Option<(String, usize)> {
    events.iter().find_map(|e| match &e.kind {
        EventKind::TurnSummary(s) => Some((s.text.clone(), s.tool_calls.len())),
        _ => None,
    })
}

/// Checks that a workload does what it claims (a bench of a failing turn measures nothing).
pub(crate) async fn check_turn(
    runner: &Runner,
    want_text: &str,
    want_tools: usize,
) -> Result<(), BoxError> {
    let events = drive(runner, "Hello there, what is the answer?", "check".into()).await;
    match summary_text(&events) {
        Some((text, tools)) if text == want_text && tools == want_tools => Ok(()),
        other => Err(format!(
            "workload check failed: want ({want_text:?}, {want_tools} tool calls), got {other:?}; events: {}",
            events.iter().map(Event::label).collect::<Vec<_>>().join(", ")
        )
        .into()),
    }
}

/// The requests one real turn sends to the model (recorded), for the baselines.
async fn recorded_requests(
    model: fn(&[Message], &LlmRequest) -> ProviderResponse,
    with_tool: bool,
    pattern: AgentPattern,
) -> Result<Vec<LlmRequest>, BoxError> {
    let client = Arc::new(FunctionClient::new(model));
    let mut runtime =
        KaosRuntime::test_mode().with_shared_client(MODEL, client.clone() as Arc<dyn LlmClient>);
    if with_tool {
        runtime = runtime.with_tool(lookup_tool());
    }
    let runner = Runner::new(agent("bench-baseline", pattern)?, runtime);
    drain(&runner, "Hello there, what is the answer?", "rec".into()).await;
    Ok(client.requests())
}

/// The raw cost (µs) of a turn's model calls alone: the same requests through the same
/// `FunctionClient`, plus parsing each text answer as JSON (when it is JSON).
async fn baseline(
    model: fn(&[Message], &LlmRequest) -> ProviderResponse,
    with_tool: bool,
    pattern: AgentPattern,
    iters: usize,
) -> Result<f64, BoxError> {
    let requests = recorded_requests(model, with_tool, pattern).await?;
    let client = FunctionClient::new(model).without_recording();
    let run = || async {
        for request in &requests {
            let response = client.complete(request).await?;
            let text = response.text();
            if text.starts_with('{') {
                black_box(serde_json::from_str::<Value>(&text)?);
            }
            black_box(&response);
        }
        Ok::<(), BoxError>(())
    };
    for _ in 0..iters / 10 {
        run().await?;
    }
    let t = Instant::now();
    for _ in 0..iters {
        run().await?;
    }
    Ok(t.elapsed().as_secs_f64() * 1e6 / iters as f64)
}

/// Baseline of the respond turn's two calls.
pub(crate) async fn baseline_chat(sizes: Sizes) -> Result<f64, BoxError> {
    baseline(chat_model, false, AgentPattern::Chat, sizes.baseline_iters).await
}

/// Baseline of the one-tool turn's three calls.
pub(crate) async fn baseline_tool(sizes: Sizes) -> Result<f64, BoxError> {
    baseline(tool_model, true, AgentPattern::Chat, sizes.baseline_iters).await
}

async fn timed_turns(
    runner: &Runner,
    prefix: &str,
    warmup: usize,
    n: usize,
) -> Result<Stats, BoxError> {
    for i in 0..warmup {
        drain(runner, "Hello there!", format!("{prefix}-w{i}")).await;
    }
    let mut samples = Vec::with_capacity(n);
    let ids: Vec<String> = (0..n).map(|i| format!("{prefix}-{i}")).collect();
    let wall = Instant::now();
    for id in ids {
        let t = Instant::now();
        drain(runner, "Hello there!", id).await;
        samples.push(t.elapsed());
    }
    Ok(Stats::from_samples(samples, wall.elapsed()))
}

/// The respond turn: a fresh session each turn, no hooks.
pub(crate) async fn chat_turns(sizes: Sizes) -> Result<Stats, BoxError> {
    let runner = chat_runner(FunctionClient::new(chat_model).without_recording())?;
    check_turn(&runner, "Hello from the agent.", 0).await?;
    timed_turns(&runner, "chat", sizes.warmup, sizes.chat_turns).await
}

/// Baseline of the two-step plan turn's six calls.
pub(crate) async fn baseline_plan(sizes: Sizes) -> Result<f64, BoxError> {
    baseline(plan_model, true, AgentPattern::Plan, sizes.baseline_iters).await
}

/// The one-tool turn: classifier, a tool call, a final text answer.
pub(crate) async fn tool_turns(sizes: Sizes) -> Result<Stats, BoxError> {
    let runner = tool_runner(FunctionClient::new(tool_model).without_recording())?;
    check_turn(&runner, "The answer is 42.", 1).await?;
    timed_turns(&runner, "tool", sizes.warmup, sizes.tool_turns).await
}

/// A hook that does nothing (every method is the default).
struct NoopHook;

impl Hook for NoopHook {
    fn name(&self) -> &str {
        "noop"
    }
}

/// How many alternating batches of how many turns a ratio is measured over.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Batches {
    pub(crate) warmup: usize,
    pub(crate) batches: usize,
    pub(crate) turns: usize,
}

impl Batches {
    pub(crate) fn of(sizes: Sizes) -> Self {
        Self {
            warmup: sizes.warmup / 2,
            batches: sizes.ratio_batches,
            turns: sizes.ratio_batch_turns,
        }
    }

    /// Turns each side runs, warm-up included (the OTel workload's span count).
    #[cfg_attr(not(feature = "otel"), allow(dead_code))]
    pub(crate) fn turns_per_side(self) -> usize {
        self.warmup + self.batches * self.turns
    }
}

/// A hook-on ÷ hook-off throughput ratio and the mean turn time of each side.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ratio {
    /// Throughput with the hook ÷ without.
    pub ratio: f64,
    /// Mean turn time without the hook (µs).
    pub off_us: f64,
    /// Mean turn time with the hook (µs).
    pub on_us: f64,
}

/// Throughput with `on` ÷ throughput with `off`, from alternating batches of respond turns
/// (a fresh session each turn).
pub(crate) async fn interleaved_ratio(
    off: &Runner,
    on: &Runner,
    b: Batches,
) -> Result<Ratio, BoxError> {
    let (mut t_off, mut t_on) = (Duration::ZERO, Duration::ZERO);
    for warm in 0..b.warmup {
        drain(off, "Hello there!", format!("w-off-{warm}")).await;
        drain(on, "Hello there!", format!("w-on-{warm}")).await;
    }
    for batch in 0..b.batches {
        // Alternate which side goes first so drift hits both equally.
        let order = if batch % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for hooked in order {
            let runner = if hooked { on } else { off };
            let ids: Vec<String> = (0..b.turns)
                .map(|i| format!("r{}-{batch}-{i}", u8::from(hooked)))
                .collect();
            let t = Instant::now();
            for id in ids {
                drain(runner, "Hello there!", id).await;
            }
            if hooked {
                t_on += t.elapsed();
            } else {
                t_off += t.elapsed();
            }
        }
    }
    let turns = (b.batches * b.turns).max(1) as f64;
    Ok(Ratio {
        ratio: t_off.as_secs_f64() / t_on.as_secs_f64().max(1e-12),
        off_us: t_off.as_secs_f64() * 1e6 / turns,
        on_us: t_on.as_secs_f64() * 1e6 / turns,
    })
}

/// Respond-turn throughput with 4 no-op hooks ÷ without (interleaved).
pub(crate) async fn noop_hooks_ratio(sizes: Sizes) -> Result<Ratio, BoxError> {
    let off = chat_runner(FunctionClient::new(chat_model).without_recording())?;
    let mut on = chat_runner(FunctionClient::new(chat_model).without_recording())?;
    for _ in 0..4 {
        on = on.with_hook(NoopHook);
    }
    interleaved_ratio(&off, &on, Batches::of(sizes)).await
}

/// Turn time growth over one long session.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SameSession {
    pub ratio: f64,
    pub first_us: f64,
    pub last_us: f64,
}

/// Mean turn time over the last 50 turns ÷ the first 50 of one session (of
/// `same_session_turns`, averaged over repeats).
pub(crate) async fn same_session(sizes: Sizes) -> Result<SameSession, BoxError> {
    let n = sizes.same_session_turns;
    let window = 50.min(n / 2).max(1);
    let mut per_turn = vec![0f64; n];
    for rep in 0..sizes.same_session_repeats {
        let runner = chat_runner(FunctionClient::new(chat_model).without_recording())?;
        for warm in 0..sizes.warmup.min(200) {
            drain(&runner, "Hello there!", format!("warm-{warm}")).await;
        }
        let session = format!("same-{rep}");
        for slot in per_turn.iter_mut() {
            let t = Instant::now();
            drain(&runner, "Hello there, how are you today?", session.clone()).await;
            *slot += t.elapsed().as_secs_f64() * 1e6;
        }
    }
    let reps = sizes.same_session_repeats.max(1) as f64;
    let first = per_turn.iter().take(window).sum::<f64>() / window as f64 / reps;
    let last = per_turn.iter().rev().take(window).sum::<f64>() / window as f64 / reps;
    Ok(SameSession {
        ratio: last / first.max(1e-12),
        first_us: first,
        last_us: last,
    })
}

/// Live heap bytes per persisted one-turn session in the in-memory store.
pub(crate) async fn idle_session_bytes(sizes: Sizes) -> Result<f64, BoxError> {
    let runner = chat_runner(FunctionClient::new(chat_model).without_recording())?;
    for warm in 0..sizes.warmup.min(2_000) {
        drain(&runner, "Hello there!", format!("warm-{warm}")).await;
    }
    let ids: Vec<String> = (0..sizes.idle_sessions)
        .map(|i| format!("idle-{i:08}"))
        .collect();
    let id_bytes: usize = ids.iter().map(String::capacity).sum();
    let window = alloc::Window::open();
    for id in ids {
        drain(&runner, "Hello there!", id).await;
    }
    // The ids were allocated before the window and moved into the sessions: count them.
    let grown = window.grown() as f64 + id_bytes as f64;
    drop(window);
    black_box(&runner);
    Ok(grown / sizes.idle_sessions.max(1) as f64)
}

/// Nanoseconds to pass one event through `HookSet::dispatch` with 4 no-op hooks
/// (alternating a span START and a text delta).
pub(crate) fn hook_dispatch_ns(sizes: Sizes) -> f64 {
    let mut hooks = HookSet::default();
    for _ in 0..4 {
        hooks.push(Arc::new(NoopHook));
    }
    let base = |kind| Event {
        timestamp: 1,
        sequence: 0,
        session_id: Arc::from("s"),
        run_id: Arc::from("run_0"),
        agent: Arc::from("a"),
        kind,
    };
    let events = [
        base(EventKind::Span(SpanEvent {
            subject: SpanSubject::LlmCall,
            phase: SpanPhase::Start,
            span_id: Arc::from("0000000000000001"),
            parent_span_id: None,
            name: "llm_call.respond".into(),
            duration_ms: None,
            attributes: serde_json::Map::new(),
            error: None,
        })),
        base(EventKind::TextDelta {
            content: "Hello from the agent.".into(),
            span_id: None,
        }),
    ];
    for event in &events {
        black_box(hooks.dispatch(black_box(event)));
    }
    let n = sizes.dispatch_events;
    let t = Instant::now();
    for i in 0..n {
        black_box(hooks.dispatch(black_box(&events[i & 1])));
    }
    t.elapsed().as_nanos() as f64 / n.max(1) as f64
}

/// Figures of the concurrent workload.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Concurrent {
    pub per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// `concurrent_sessions` respond turns at once on a multi-thread runtime, each model call
/// taking 20 ms (an async `FunctionClient` sleeping).
pub(crate) fn concurrent(sizes: Sizes) -> Result<Concurrent, BoxError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let client = FunctionClient::new_async(|request: LlmRequest| async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        chat_model(&request.messages, &request)
    })
    .without_recording();
    let runner = chat_runner(client)?;
    let mut samples = Vec::new();
    let mut wall = Duration::ZERO;
    rt.block_on(async {
        // One warm-up round (not counted), then the measured ones.
        for round in 0..=sizes.concurrent_rounds {
            let t = Instant::now();
            let handles: Vec<_> = (0..sizes.concurrent_sessions)
                .map(|i| {
                    let runner = runner.clone();
                    tokio::spawn(async move {
                        let t = Instant::now();
                        let n = drain(&runner, "Hello there!", format!("c{round}-{i}")).await;
                        (t.elapsed(), n)
                    })
                })
                .collect();
            let mut round_samples = Vec::with_capacity(handles.len());
            for h in handles {
                let (elapsed, events) = h.await?;
                if events == 0 {
                    return Err::<(), BoxError>("a concurrent turn produced no events".into());
                }
                round_samples.push(elapsed);
            }
            if round > 0 {
                wall += t.elapsed();
                samples.extend(round_samples);
            }
        }
        Ok(())
    })?;
    let stats = Stats::from_samples(samples, wall);
    Ok(Concurrent {
        per_s: stats.per_s,
        p50_ms: stats.p50_us / 1000.0,
        p99_ms: stats.p99_us / 1000.0,
    })
}

/// A fresh directory under `std::env::temp_dir()`, removed (with its files) when dropped.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(label: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Self(
            std::env::temp_dir().join(format!("kaos-bench-{label}-{}-{nanos}", std::process::id())),
        )
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // Best effort: a leftover temp dir is not worth failing the bench for.
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The filesystem type `path` is on (from `/proc/mounts`, longest matching mount point).
pub(crate) fn fs_type(path: &std::path::Path) -> Option<String> {
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_dev, point, kind) = (f.next()?, f.next()?, f.next()?);
            path.starts_with(point)
                .then(|| (point.len(), kind.to_string()))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, kind)| kind)
}

/// Respond-turn throughput with an `AuditHook` (default redactor, `policy`) ÷ without,
/// interleaved, writing into a temp dir that is removed afterwards. Each turn is a fresh
/// session, so each hooked turn creates its own JSONL file.
async fn audit_ratio_with(
    policy: kaos_agents::audit::FsyncPolicy,
    b: Batches,
) -> Result<Ratio, BoxError> {
    let dir = TempDir::new("audit");
    let hook = Arc::new(kaos_agents::audit::AuditHook::new(&dir.0)?.with_fsync(policy));
    let off = chat_runner(FunctionClient::new(chat_model).without_recording())?;
    let on = chat_runner(FunctionClient::new(chat_model).without_recording())?
        .with_shared_hook(hook.clone());
    check_turn(&on, "Hello from the agent.", 0).await?;
    let ratio = interleaved_ratio(&off, &on, b).await?;
    let stats = hook.stats();
    if stats.failures > 0 || stats.events_written == 0 {
        return Err(format!(
            "audit workload: {} events written, {} write failures",
            stats.events_written, stats.failures
        )
        .into());
    }
    drop(dir);
    Ok(ratio)
}

/// `AuditHook` with `FsyncPolicy::Never` ÷ without.
pub(crate) async fn audit_ratio(sizes: Sizes) -> Result<Ratio, BoxError> {
    audit_ratio_with(kaos_agents::audit::FsyncPolicy::Never, Batches::of(sizes)).await
}

/// `AuditHook` with `FsyncPolicy::EveryTurn` ÷ without (fewer, smaller batches: every
/// hooked turn waits for the disk).
pub(crate) async fn audit_fsync_turn_ratio(sizes: Sizes) -> Result<Ratio, BoxError> {
    let b = Batches {
        warmup: sizes.fsync_batch_turns,
        batches: sizes.fsync_batches,
        turns: sizes.fsync_batch_turns,
    };
    audit_ratio_with(kaos_agents::audit::FsyncPolicy::EveryTurn, b).await
}

const CLASSIFY_PLAN: &str =
    r#"{"intent":"plan","confidence":0.9,"reasoning":"a lookup, then an explanation"}"#;
const PLAN_STEPS: &str = r#"{"steps":[{"description":"Look the answer up","tool":"lookup","expected_output":"the stored value"},{"description":"Explain the value","tool":null,"expected_output":"one sentence"}]}"#;
const PLAN_ARGS: &str = r#"{"arguments":{"key":"answer"}}"#;
const PLAN_STEP_RESULT: &str = r#"{"result":"The stored value 42 is the answer."}"#;
const PLAN_ANSWER: &str = r#"{"answer":"The answer is 42."}"#;

/// The two-step plan turn. Every typed call's system prompt starts with its signature's
/// instructions (see `kaos_agents::runner::plan`), so a prefix picks the answer.
fn plan_model(messages: &[Message], _request: &LlmRequest) -> ProviderResponse {
    let system = messages.first().map_or("", |m| m.content.as_str());
    let text = if system.starts_with("Decide how an assistant") {
        CLASSIFY_PLAN
    } else if system.starts_with("Break the user's goal") {
        PLAN_STEPS
    } else if system.starts_with("Choose the arguments") {
        PLAN_ARGS
    } else if system.starts_with("Carry out one reasoning step") {
        PLAN_STEP_RESULT
    } else {
        PLAN_ANSWER
    };
    ProviderResponse::from_text(text).with_usage(150, 15)
}

fn plan_runner(client: FunctionClient) -> Result<Runner, BoxError> {
    let runtime = KaosRuntime::test_mode()
        .with_client(MODEL, client)
        .with_tool(lookup_tool());
    Ok(Runner::new(
        agent("bench-plan", AgentPattern::Plan)?,
        runtime,
    ))
}

/// Checks the plan turn's shape: the answer, exactly two step spans, and the `lookup`
/// tool-call span nested in the first one.
async fn check_plan_turn(runner: &Runner) -> Result<(), BoxError> {
    let events = drive(
        runner,
        "Look the answer up, then explain it.",
        "check".into(),
    )
    .await;
    let starts: Vec<&SpanEvent> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Span(s) if s.phase == SpanPhase::Start => Some(s),
            _ => None,
        })
        .collect();
    let steps: Vec<&SpanEvent> = starts
        .iter()
        .copied()
        .filter(|s| s.subject == SpanSubject::Step)
        .collect();
    let tools: Vec<&SpanEvent> = starts
        .iter()
        .copied()
        .filter(|s| s.subject == SpanSubject::ToolCall)
        .collect();
    let nested = match (steps.first(), tools.as_slice()) {
        (Some(first), [tool]) => tool.parent_span_id.as_deref() == Some(&*first.span_id),
        _ => false,
    };
    let summary = summary_text(&events);
    let answer_ok = summary
        .as_ref()
        .is_some_and(|(text, calls)| text == "The answer is 42." && *calls == 1);
    if steps.len() == 2 && nested && answer_ok {
        return Ok(());
    }
    Err(format!(
        "plan workload check failed: {} step spans, {} tool spans (nested in step 1: {nested}), summary {summary:?}; events: {}",
        steps.len(),
        tools.len(),
        events.iter().map(Event::label).collect::<Vec<_>>().join(", ")
    )
    .into())
}

/// The two-step plan turn (classifier → plan expansion → a tool step: argument synthesis +
/// `lookup` → a reasoning step → synthesis; 6 model calls), a fresh session each turn.
pub(crate) async fn plan_turns(sizes: Sizes) -> Result<Stats, BoxError> {
    let runner = plan_runner(FunctionClient::new(plan_model).without_recording())?;
    check_plan_turn(&runner).await?;
    timed_turns(&runner, "plan", sizes.warmup / 2, sizes.plan_turns).await
}
