//! `kaos-bench`: offline benchmark of the kaos runtime (DESIGN §9).
//!
//! Every workload runs through the public API against a zero-latency `FunctionClient`
//! (no network), so the figures are pure runtime overhead. Usage:
//!
//! ```text
//! cargo run --release -p kaos-bench -- [--json] [--quick] [--only NAME]
//! ```
//!
//! `--quick` runs tiny iteration counts (a CI smoke test; nothing is asserted about speed):
//! the JSON says `"quick": true` and the table marks every figure `(quick)`.
//! `--json` prints one JSON object instead of the table. `--only NAME` runs one workload
//! and prints nothing, except `--only otel`, `--only otel_sides`, `--only metrics`, `--only
//! audit` and `--only audit_fsync`, which print their keys as one JSON object (with
//! `"quick"`). `--only otel_sides` is for an instruction counter (see `otel::otel_sides`).

#![recursion_limit = "256"]

mod alloc;
#[cfg(feature = "otel")]
mod minimal_hook;
mod otel;
mod redaction;
mod serve;
mod store;
mod streaming;
mod workloads;

use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The workloads `--only` accepts.
const ONLY_NAMES: &str = "chat|tool|same|plan|otel|otel_sides|metrics|audit|audit_fsync|idle|concurrent|stream|serve|redact|store";

/// Iteration counts of one run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sizes {
    warmup: usize,
    chat_turns: usize,
    tool_turns: usize,
    plan_turns: usize,
    ratio_batches: usize,
    ratio_batch_turns: usize,
    fsync_batches: usize,
    fsync_batch_turns: usize,
    same_session_turns: usize,
    same_session_repeats: usize,
    concurrent_sessions: usize,
    concurrent_rounds: usize,
    idle_sessions: usize,
    dispatch_events: usize,
    baseline_iters: usize,
    stream_turns: usize,
    stream_delta_chars: usize,
    stream_delta_turns: usize,
    redact_mb: usize,
    redact_iters: usize,
    /// Batches of the 64-task OTel workload, per side.
    tasks_batches: usize,
    /// Turns each of the 64 tasks runs per batch.
    tasks_turns: usize,
}

impl Sizes {
    fn full() -> Self {
        Self {
            warmup: 2_000,
            chat_turns: 20_000,
            tool_turns: 10_000,
            plan_turns: 5_000,
            ratio_batches: 20,
            ratio_batch_turns: 2_000,
            fsync_batches: 10,
            fsync_batch_turns: 100,
            same_session_turns: 500,
            same_session_repeats: 5,
            concurrent_sessions: 1_000,
            concurrent_rounds: 3,
            idle_sessions: 5_000,
            dispatch_events: 1_000_000,
            baseline_iters: 50_000,
            stream_turns: 3,
            stream_delta_chars: 2_000,
            stream_delta_turns: 50,
            redact_mb: 1,
            redact_iters: 40,
            tasks_batches: 10,
            tasks_turns: 100,
        }
    }

    fn quick() -> Self {
        Self {
            warmup: 20,
            chat_turns: 100,
            tool_turns: 50,
            plan_turns: 50,
            ratio_batches: 2,
            ratio_batch_turns: 20,
            fsync_batches: 2,
            fsync_batch_turns: 5,
            same_session_turns: 100,
            same_session_repeats: 1,
            concurrent_sessions: 100,
            concurrent_rounds: 1,
            idle_sessions: 100,
            dispatch_events: 10_000,
            baseline_iters: 200,
            stream_turns: 1,
            stream_delta_chars: 200,
            stream_delta_turns: 5,
            redact_mb: 1,
            redact_iters: 1,
            tasks_batches: 2,
            tasks_turns: 3,
        }
    }
}

/// Latency figures of a set of samples.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stats {
    per_s: f64,
    mean_us: f64,
    p50_us: f64,
    p99_us: f64,
}

impl Stats {
    /// From per-item durations and the wall time the whole set took.
    pub(crate) fn from_samples(mut samples: Vec<Duration>, wall: Duration) -> Self {
        samples.sort_unstable();
        let n = samples.len().max(1);
        let pick = |q: f64| {
            let i = ((n as f64 - 1.0) * q).round() as usize;
            samples.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e6)
        };
        let total: f64 = samples.iter().map(Duration::as_secs_f64).sum();
        Self {
            per_s: samples.len() as f64 / wall.as_secs_f64().max(1e-12),
            mean_us: total / n as f64 * 1e6,
            p50_us: pick(0.50),
            p99_us: pick(0.99),
        }
    }
}

fn round(x: f64, digits: i32) -> f64 {
    let m = 10f64.powi(digits);
    (x * m).round() / m
}

fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    json!({"cpu": cpu, "nproc": cores, "os": std::env::consts::OS, "allocator": alloc::ALLOCATOR})
}

fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let as_json = args.iter().any(|a| a == "--json");
    let quick = args.iter().any(|a| a == "--quick");
    // `--only NAME` (for profiling): run one workload, print nothing.
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .cloned();
    if let Some(bad) = args
        .iter()
        .filter(|a| Some(*a) != only.as_ref())
        .find(|a| !matches!(a.as_str(), "--json" | "--quick" | "--only"))
    {
        return Err(format!(
            "unknown argument {bad:?}; usage: kaos-bench [--json] [--quick] [--only {ONLY_NAMES}]"
        )
        .into());
    }
    let sizes = if quick { Sizes::quick() } else { Sizes::full() };
    let started = Instant::now();
    if let Some(name) = only {
        return run_only(&name, sizes, quick);
    }

    let single = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;

    let baseline_chat = single.block_on(workloads::baseline_chat(sizes))?;
    let baseline_tool = single.block_on(workloads::baseline_tool(sizes))?;
    // First, on a fresh heap: after the big workloads drop their stores, the allocator's
    // clean-up lands on the next turns and would inflate this workload's first-turn window.
    let same = single.block_on(workloads::same_session(sizes))?;
    let chat = single.block_on(workloads::chat_turns(sizes))?;
    let tool = single.block_on(workloads::tool_turns(sizes))?;
    let baseline_plan = single.block_on(workloads::baseline_plan(sizes))?;
    let plan = single.block_on(workloads::plan_turns(sizes))?;
    let noop_hooks_ratio = single.block_on(workloads::noop_hooks_ratio(sizes))?;
    let otel = single.block_on(otel::otel_ratio(sizes))?;
    let metrics = single.block_on(otel::metrics_ratio(sizes))?;
    let audit = single.block_on(workloads::audit_ratio(sizes))?;
    let audit_fsync = single.block_on(workloads::audit_fsync_turn_ratio(sizes))?;
    let idle = single.block_on(workloads::idle_session_bytes(sizes))?;
    let dispatch_ns = workloads::hook_dispatch_ns(sizes);
    let redact = redaction::redaction(sizes.redact_mb, sizes.redact_iters)?;
    drop(single);
    let concurrent = workloads::concurrent(sizes)?;
    let otel64 = otel::otel_ratio_64_tasks(sizes)?;
    let stream = streaming::streaming(sizes)?;
    let served = serve::serve(quick)?;
    let (store_keys, store_note) = store::run(sizes)?;

    let mut notes = Map::new();
    notes.insert(
        "plan_turns_per_s".into(),
        "AgentPattern::Plan, 6 model calls: classifier (plan), plan expansion (2 steps), step 1 argument synthesis + read-only FnTool `lookup` (tool span nested in the step span, checked once before timing), step 2 reasoning call, synthesis; a fresh session each turn".into(),
    );
    otel_notes(
        &mut notes,
        otel.as_ref(),
        otel64.as_ref(),
        metrics.is_some(),
    );
    let audit_fs = workloads::fs_type(&std::env::temp_dir()).unwrap_or_else(|| "unknown".into());
    notes.insert(
        "audit_ratio".into(),
        format!("respond turns with AuditHook (default redactor, FsyncPolicy::Never) ÷ without, interleaved; a fresh session (so a new JSONL file) each turn, in a temp dir under {} ({audit_fs}), removed afterwards", std::env::temp_dir().display()).into(),
    );
    notes.insert(
        "audit_fsync_turn_ratio".into(),
        format!("as audit_ratio with FsyncPolicy::EveryTurn (one sync_data per turn, at the TurnSummary) on {audit_fs}, over {} batches of {} turns: bounded by the disk's sync latency", sizes.fsync_batches, sizes.fsync_batch_turns).into(),
    );
    notes.insert(
        "stream_first_delta_ms".into(),
        "a local fake provider (Anthropic SSE over 127.0.0.1) streams a respond answer in 100 chunks 20 ms apart: server wrote the chunk → the turn's consumer got its TextDelta (first chunk; lag p50/max over all chunks); stream_cli_json_*: the same read from `kaos run --json` stdout (the kaos binary next to kaos-bench; null when it is not built)".into(),
    );
    notes.insert(
        "stream_delta_event_ns".into(),
        format!("respond turn streaming a {}-char answer one char per chunk minus the same answer in one chunk, ÷ chunks: the JSON field extractor, one TextDelta event, a counting hook and the coalescing AuditHook (FsyncPolicy::Never)", sizes.stream_delta_chars).into(),
    );
    notes.insert(
        "redact_clean_mb_per_s".into(),
        format!("Redactor::default (truncation off: the scan alone) over {} MB of agent traffic with no secret (tool JSON, code, logs, prose, ids, hashes, token counts) on one core; redact_dense: one secret per 200 bytes ({} secrets); baselines in the same run: a plain byte scan (redact_scan_floor_mb_per_s) and the previous redactor (its regexes one after the other)", redact.text_bytes / 1_000_000, redact.dense_secrets).into(),
    );
    notes.insert(
        "idle_session_bytes".into(),
        "live heap bytes after N one-turn sessions in InMemoryStore minus before, / N (includes the store's map slot; the runner's session-lock map is bounded at ~1024 entries)".into(),
    );

    serve::notes(&mut notes, &served);
    notes.insert("store".into(), store_note.into());
    let mut report = json!({
        "chat_turns_per_s": round(chat.per_s, 0),
        "chat_turn_us_p50": round(chat.p50_us, 2),
        "chat_turn_us_p99": round(chat.p99_us, 2),
        "chat_turn_us_mean": round(chat.mean_us, 2),
        "baseline_chat_calls_us": round(baseline_chat, 3),
        "chat_turn_over_baseline": round(chat.mean_us / baseline_chat.max(1e-9), 1),
        "tool_turns_per_s": round(tool.per_s, 0),
        "tool_turn_us_p50": round(tool.p50_us, 2),
        "tool_turn_us_p99": round(tool.p99_us, 2),
        "baseline_tool_calls_us": round(baseline_tool, 3),
        "tool_turn_over_baseline": round(tool.mean_us / baseline_tool.max(1e-9), 1),
        "plan_turns_per_s": round(plan.per_s, 0),
        "plan_turn_us_p50": round(plan.p50_us, 2),
        "plan_turn_us_p99": round(plan.p99_us, 2),
        "baseline_plan_calls_us": round(baseline_plan, 3),
        "plan_turn_over_baseline": round(plan.mean_us / baseline_plan.max(1e-9), 1),
        "audit_ratio": round(audit.ratio, 3),
        "audit_turn_us_off_on": [round(audit.off_us, 2), round(audit.on_us, 2)],
        "audit_fsync_turn_ratio": round(audit_fsync.ratio, 4),
        "audit_fsync_turn_us_off_on": [round(audit_fsync.off_us, 2), round(audit_fsync.on_us, 2)],
        "noop_hooks4_ratio": round(noop_hooks_ratio.ratio, 3),
        "same_session_turn500_over_turn1": round(same.ratio, 2),
        "same_session_turn1_us": round(same.first_us, 2),
        "same_session_turn500_us": round(same.last_us, 2),
        "concurrent_1000_20ms_turns_per_s": round(concurrent.per_s, 0),
        "concurrent_1000_20ms_p50_ms": round(concurrent.p50_ms, 2),
        "concurrent_1000_20ms_p99_ms": round(concurrent.p99_ms, 2),
        "concurrent_sessions": sizes.concurrent_sessions,
        "idle_session_bytes": idle.round(),
        "hook_dispatch_ns_per_event": round(dispatch_ns, 1),
        "stream_first_delta_ms": round(stream.first_delta_ms, 3),
        "stream_delta_lag_ms_p50_max": [round(stream.delta_lag_p50_ms, 3), round(stream.delta_lag_max_ms, 3)],
        "stream_delta_event_ns": round(stream.delta_event_ns, 0),
        "stream_cli_json_first_delta_ms": stream.cli.map(|c| round(c.0, 3)),
        "stream_cli_json_lag_ms_p50_max": stream.cli.map(|c| [round(c.1, 3), round(c.2, 3)]),
        "serve": serve::report(&served),
        "peak_rss_mb": peak_rss_mb().map(|m| round(m, 1)),
        "quick": quick,
        "elapsed_s": round(started.elapsed().as_secs_f64(), 1),
        "machine": machine(),
        "notes": notes,
    });

    if let Value::Object(map) = &mut report {
        map.extend(otel_figures(
            otel.as_ref(),
            otel64.as_ref(),
            metrics.as_ref(),
        ));
        map.extend(redaction::figures(&redact));
        for (k, v) in store_keys {
            map.insert(k.into(), v);
        }
    }
    if as_json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

/// The OTel and metrics keys (`null` without the `otel` feature).
fn otel_figures(
    otel: Option<&otel::OtelFigures>,
    otel64: Option<&otel::TasksFigures>,
    metrics: Option<&workloads::Ratio>,
) -> Map<String, Value> {
    let figures = json!({
        "otel_ratio": otel.map(|o| round(o.ratio.ratio, 3)),
        "otel_turn_us_off_on": otel.map(|o| [round(o.ratio.off_us, 2), round(o.ratio.on_us, 2)]),
        "otel_sdk_floor_ratio": otel.map(|o| round(o.floor_ratio, 3)),
        "otel_sdk_floor_turn_us": otel.map(|o| round(o.floor_us, 2)),
        "otel_hook_us_over_floor": otel.map(|o| round(o.hook_us_over_floor(), 2)),
        "otel_minimal_hook_ratio": otel.map(|o| round(o.minimal_ratio, 3)),
        "otel_minimal_hook_us_over_floor": otel.map(|o| round(o.minimal_us_over_floor(), 2)),
        "otel_spans_dropped": otel.map(|o| o.spans_expected.saturating_sub(o.spans_exported)),
        "otel_ratio_64_tasks": otel64.map(|t| round(t.ratio, 3)),
        "otel_64_tasks_turns_per_s_off_on": otel64.map(|t| [round(t.off_per_s, 0), round(t.on_per_s, 0)]),
        "metrics_ratio": metrics.map(|m| round(m.ratio, 3)),
        "metrics_turn_us_off_on": metrics.map(|m| [round(m.off_us, 2), round(m.on_us, 2)]),
    });
    match figures {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// What the OTel and metrics keys measure.
fn otel_notes(
    notes: &mut Map<String, Value>,
    otel: Option<&otel::OtelFigures>,
    otel64: Option<&otel::TasksFigures>,
    metrics: bool,
) {
    let Some(o) = otel else {
        notes.insert(
            "otel_ratio".into(),
            "built without the `otel` feature".into(),
        );
        return;
    };
    let dropped = o.spans_expected.saturating_sub(o.spans_exported);
    let drops = if dropped == 0 {
        "none dropped".to_string()
    } else {
        format!("{dropped} dropped because the queue was full (the SDK drops rather than blocks)")
    };
    notes.insert("otel_ratio".into(), format!(
        "respond turns on one task with OTelHook (content capture forced off) over an SdkTracerProvider with a BatchSpanProcessor (default config: queue 2048, batches of 512, its own thread) feeding a no-op exporter, ÷ without; four sides interleaved in the same run (off, SDK floor, OTelHook, minimal hook); the hot path (span building + batch enqueue), no serialization or I/O; {} spans per turn; {} of {} spans (the three traced sides) reached the exporter, {drops}",
        o.spans_per_turn, o.spans_exported, o.spans_expected
    ).into());
    notes.insert("otel_sdk_floor_ratio".into(), "the same turn with no hook, plus the spans OTelHook exports for it (recorded once: names, kinds, every attribute, span events, statuses, the tree) made straight through the SDK tracer on the same provider, ÷ the turn alone: the SDK's own cost for those spans; otel_hook_us_over_floor = hooked turn µs − floor turn µs".into());
    notes.insert("otel_minimal_hook_ratio".into(), "the same turn with a hook that maps nothing (src/minimal_hook.rs): for each span START it opens the recorded template's spans under the START's parent, keeps them in one list under one lock, ends them with the template's events and status at the END and gives the runner their contexts to make current, ÷ the turn alone; otel_minimal_hook_us_over_floor = its turn µs − floor turn µs: what the event model costs any hook (dispatch, delivery, contexts made current, parent lookup) before it reads an attribute".into());
    if let Some(t) = otel64 {
        notes.insert("otel_ratio_64_tasks".into(), format!(
            "{} tasks on a multi-thread Tokio runtime (one worker per core), each running respond turns back to back, batches alternating with and without OTelHook (one hook and provider shared by all tasks, as above), turns/s with ÷ without",
            t.tasks
        ).into());
    }
    if metrics {
        notes.insert("metrics_ratio".into(), "respond turns with MetricsHook over an SdkMeterProvider with a PeriodicReader (default interval) feeding a no-op exporter ÷ without, interleaved; no tracer".into());
    }
}

/// Runs one workload alone (for a profiler).
fn run_only(name: &str, sizes: Sizes, quick: bool) -> Result<(), BoxError> {
    let single = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match name {
        "chat" => drop(single.block_on(workloads::chat_turns(sizes))?),
        "tool" => drop(single.block_on(workloads::tool_turns(sizes))?),
        "same" => drop(single.block_on(workloads::same_session(sizes))?),
        "plan" => drop(single.block_on(workloads::plan_turns(sizes))?),
        // These print their keys: the figures of the issue's OTel overhead target.
        "otel" => {
            let o = single.block_on(otel::otel_ratio(sizes))?;
            drop(single);
            let t = otel::otel_ratio_64_tasks(sizes)?;
            let mut keys = otel_figures(o.as_ref(), t.as_ref(), None);
            keys.remove("metrics_ratio");
            keys.remove("metrics_turn_us_off_on");
            print_only(keys, quick);
        }
        // For an instruction counter: prints how many turns each side ran.
        "otel_sides" => {
            let turns = single.block_on(otel::otel_sides(sizes))?;
            let mut keys = Map::new();
            keys.insert("otel_sides_turns".into(), json!(turns));
            print_only(keys, quick);
        }
        "metrics" => {
            let m = single.block_on(otel::metrics_ratio(sizes))?;
            let keys = otel_figures(None, None, m.as_ref())
                .into_iter()
                .filter(|(k, _)| k.starts_with("metrics_"))
                .collect();
            print_only(keys, quick);
        }
        // These print their keys too: a before/after of the audit hook in one command.
        "audit" => {
            let r = single.block_on(workloads::audit_ratio(sizes))?;
            print_only(
                ratio_keys("audit_ratio", "audit_turn_us_off_on", &r, 3),
                quick,
            );
        }
        "audit_fsync" => {
            let r = single.block_on(workloads::audit_fsync_turn_ratio(sizes))?;
            let keys = ratio_keys(
                "audit_fsync_turn_ratio",
                "audit_fsync_turn_us_off_on",
                &r,
                4,
            );
            print_only(keys, quick);
        }
        "idle" => drop(single.block_on(workloads::idle_session_bytes(sizes))?),
        "concurrent" => drop(workloads::concurrent(sizes)?),
        "stream" => {
            streaming::streaming(sizes)?;
        }
        // Prints its figures: the serve phases take seconds, not a profiler's loop.
        "serve" => println!("{}", serve::report(&serve::serve(quick)?)),
        "redact" => {
            redaction::redaction(sizes.redact_mb, sizes.redact_iters)?;
        }
        // Prints its figures: a store run takes seconds, and its ratios are the point.
        "store" => {
            let (keys, note) = store::run(sizes)?;
            for (key, value) in keys {
                println!("{key:<42} {value}");
            }
            println!("{note}");
        }
        other => return Err(format!("unknown workload {other:?}").into()),
    }
    Ok(())
}

/// Prints the keys of an `--only` run as one JSON object, saying whether it was quick.
/// `{ratio_key: ratio, us_key: [off µs, on µs]}` of one hook-on ÷ hook-off measurement.
fn ratio_keys(
    ratio_key: &str,
    us_key: &str,
    r: &workloads::Ratio,
    digits: i32,
) -> Map<String, Value> {
    let mut keys = Map::new();
    keys.insert(ratio_key.into(), json!(round(r.ratio, digits)));
    keys.insert(
        us_key.into(),
        json!([round(r.off_us, 2), round(r.on_us, 2)]),
    );
    keys
}

fn print_only(mut keys: Map<String, Value>, quick: bool) {
    keys.insert("quick".into(), quick.into());
    println!("{}", Value::Object(keys));
}

fn print_table(report: &Value) {
    let Some(map) = report.as_object() else {
        return;
    };
    let build = if cfg!(debug_assertions) {
        "DEBUG build: figures are not meaningful, use --release"
    } else {
        "release build"
    };
    let quick = map.get("quick") == Some(&Value::Bool(true));
    println!("kaos-bench (offline, FunctionClient, {build})");
    if quick {
        println!(
            "QUICK run (--quick): smoke-test iteration counts; every figure is marked (quick) and none is a measurement"
        );
    }
    println!("{:<38} {:>16}", "figure", "value");
    println!("{}", "-".repeat(55));
    let mark = if quick { " (quick)" } else { "" };
    for (key, value) in map {
        if matches!(key.as_str(), "notes" | "machine" | "quick") {
            continue;
        }
        let shown = match value {
            Value::Null => "n/a".to_string(),
            other => other.to_string(),
        };
        println!("{key:<38} {shown:>16}{mark}");
    }
    if let Some(m) = map.get("machine") {
        println!("\nmachine: {m}");
    }
    if let Some(Value::Object(notes)) = map.get("notes") {
        println!("notes:");
        for (k, v) in notes {
            println!("  {k}: {}", v.as_str().unwrap_or_default());
        }
    }
}
