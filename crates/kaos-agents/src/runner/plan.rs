//! The PLAN pattern: live plan-execute.
//!
//! 1. A typed plan-expansion call proposes steps (`{description, tool | null,
//!    expected_output}`); `PlanProposed` is emitted **before** anything runs.
//! 2. Each step runs live inside `Span(step)` (id `step-{n}-{6 hex}`): a tool step gets its
//!    arguments from a typed argument-synthesis call and runs through the guarded
//!    `call_tool` (its tool_call span is a child of the step span); a reasoning step (no
//!    tool, or a tool the agent does not have) is a typed call.
//! 3. A failed step triggers a replan (with the failures as context), up to
//!    `budget.max_replans`.
//! 4. A typed synthesis call writes the answer; its `answer` field streams as it arrives.
//!
//! Budgets (`steps`, `replans`, `tokens`, `cost`, `wall_clock`) are checked before every
//! step; crossing one emits `BudgetExceeded` and the answer says the plan stopped and why.
//!
//! A step whose tool call needs approval pauses the turn with a [`PlanProgress`] in its
//! `RunState`; resuming reopens that step (a new step span in the new run), runs exactly
//! the paused call (its arguments are not re-synthesized) and continues the plan.

use std::time::Instant;

use kaos_llm::ToolCall;
use kaos_llm::structured::Signature;
use serde::Deserialize;
use serde_json::Value;

use super::budget;
use super::run_state::{Approval, Pause, PlanProgress, PlanStepRecord};
use super::state::{Failure, Outcome, Turn};
use super::tool_call::{CallResult, RESULT_SUMMARY_CHARS, call_tool, truncate_chars};
use crate::attrs;
use crate::events::{EventKind, PlanStepSummary, SpanError, SpanPhase, SpanSubject};

/// One proposed step.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
pub(crate) struct PlanStepSpec {
    /// What this step does, in one sentence.
    pub description: String,
    /// The exact name of the tool this step calls, or null for a reasoning step.
    #[serde(default)]
    pub tool: Option<String>,
    /// What a successful result looks like.
    #[serde(default)]
    pub expected_output: String,
}

/// The plan-expansion output.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
pub(crate) struct PlanOutput {
    /// The steps, in execution order.
    pub steps: Vec<PlanStepSpec>,
}

/// The argument-synthesis output.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
pub(crate) struct ArgsOutput {
    /// The tool's arguments as a JSON object matching its parameter schema.
    pub arguments: Value,
}

/// A reasoning step's output.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
pub(crate) struct StepOutput {
    /// The step's result.
    pub result: String,
}

/// The synthesis output.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
pub(crate) struct AnswerOutput {
    /// The final answer to the user.
    pub answer: String,
}

fn expand_signature() -> Signature<PlanOutput> {
    Signature::new(
        "Break the user's goal into a short plan of concrete steps. Each step either calls \
         one of the available tools (give its exact name in `tool`) or is a reasoning step \
         (`tool` null). Use as few steps as the goal needs. If earlier attempts failed, plan \
         around those failures.",
    )
    .input("goal", "What the user wants.")
    .input("available_tools", "Tools you may use, one per line.")
    .input(
        "prior_failures",
        "Steps that failed before and why (may be empty).",
    )
}

fn args_signature() -> Signature<ArgsOutput> {
    Signature::new(
        "Choose the arguments for one tool call of a plan step. Answer with the arguments \
         object only, matching the tool's parameter schema.",
    )
    .input("step", "The step to carry out.")
    .input("tool", "The tool's name, description and parameter schema.")
    .input("previous_results", "Results of the steps done so far.")
}

fn step_signature() -> Signature<StepOutput> {
    Signature::new("Carry out one reasoning step of a plan and give its result.")
        .input("goal", "The user's goal.")
        .input("step", "The step to carry out and its expected output.")
        .input("previous_results", "Results of the steps done so far.")
}

fn synthesis_signature() -> Signature<AnswerOutput> {
    Signature::new(
        "Write the final answer to the user's goal from the results of the plan's steps: a \
         clear, fluent answer, not a list of steps.",
    )
    .input("goal", "The user's goal.")
    .input("step_results", "Each step and its result.")
}

/// Why a plan stopped early.
struct Stop {
    kind: &'static str,
    limit: f64,
    actual: f64,
}

fn step_id(n: usize) -> String {
    let hex: u32 = rand::random::<u32>() & 0x00ff_ffff;
    format!("step-{n}-{hex:06x}")
}

/// Runs the PLAN pattern for `goal`.
pub(crate) async fn run(turn: &mut Turn, goal: &str) -> Outcome {
    let progress = PlanProgress {
        goal: goal.to_string(),
        ..PlanProgress::default()
    };
    run_from(turn, progress, None).await
}

/// Runs (or, with `resume_call`, continues) a plan: `resume_call` is the paused tool call
/// of the step at `progress.next_step` with the human's decision about it, run without a new
/// argument call.
pub(crate) async fn run_from(
    turn: &mut Turn,
    mut p: PlanProgress,
    mut resume_call: Option<(ToolCall, Approval)>,
) -> Outcome {
    let started = Instant::now();
    let budget = turn.shared.agent.budget.clone();
    let tools = turn.shared.tool_catalog.clone();
    let goal = p.goal.clone();
    let goal = goal.as_str();
    let stop = loop {
        if p.steps.is_empty() {
            let failures_text = p.failures.join("\n");
            let inputs = [
                ("goal", goal),
                ("available_tools", tools.as_str()),
                ("prior_failures", failures_text.as_str()),
            ];
            let plan = match turn
                .typed_call("plan_expansion", &expand_signature(), &inputs)
                .await
            {
                Ok(out) => {
                    turn.emit_usage(&out.usage, out.cost_usd, &out.model, "plan_expansion");
                    out.value
                }
                Err(e) => return Outcome::Failed(Failure::llm(&e)),
            };
            p.steps = plan
                .steps
                .into_iter()
                .enumerate()
                .map(|(i, spec)| PlanStepRecord {
                    step_id: step_id(p.executed + i + 1),
                    tool_name: spec.tool.filter(|t| turn.shared.tool(t).is_some()),
                    description: spec.description,
                    expected_output: spec.expected_output,
                })
                .collect();
            p.next_step = 0;
            turn.scope.emit(EventKind::PlanProposed {
                steps: p
                    .steps
                    .iter()
                    .map(|s| PlanStepSummary {
                        step_id: s.step_id.clone(),
                        description: s.description.clone(),
                        tool_name: s.tool_name.clone(),
                    })
                    .collect(),
                strategy: "adaptive".into(),
            });
        }
        let mut failed = false;
        let mut stopped = None;
        while let Some(step) = p.steps.get(p.next_step).cloned() {
            if resume_call.is_none() {
                let elapsed = p.elapsed_secs + started.elapsed().as_secs_f64();
                if let Some(stop) = check_plan_budget(turn, p.executed, elapsed) {
                    stopped = Some(stop);
                    break;
                }
            }
            let mut start = attrs! {"step_id" => step.step_id.as_str(), "description" => step.description.as_str()};
            if let Some(t) = &step.tool_name {
                start.insert("tool_name".into(), t.as_str().into());
            }
            let (span, _) =
                turn.scope
                    .start_span(SpanSubject::Step, format!("step.{}", step.step_id), start);
            let previous = p.results.join("\n");
            let outcome = match (resume_call.take(), &step.tool_name) {
                (Some((call, decision)), _) => {
                    step_call(turn, &call, &step.step_id, Some(decision)).await
                }
                (None, Some(tool)) => tool_step(turn, &step, tool, &previous).await,
                (None, None) => reasoning_step(turn, goal, &step, &previous).await,
            };
            let (text, is_error) = match outcome {
                StepResult::Done { text, is_error } => (text, is_error),
                StepResult::Paused(call) => {
                    p.elapsed_secs += started.elapsed().as_secs_f64();
                    return Outcome::Paused(Pause {
                        messages: Vec::new(),
                        pending_call: call,
                        remaining_calls: Vec::new(),
                        round: 0,
                        plan: Some(p),
                    });
                }
                StepResult::Failed(failure) => return Outcome::Failed(failure),
            };
            let result_summary = truncate_chars(&text, RESULT_SUMMARY_CHARS);
            let end = attrs! {
                "step_id" => step.step_id.as_str(),
                "result_summary" => result_summary.clone(),
                "is_error" => is_error,
            };
            let error = is_error.then(|| SpanError {
                error_type: "step_failed".into(),
                message: result_summary.clone(),
            });
            let phase = if is_error {
                SpanPhase::Error
            } else {
                SpanPhase::Complete
            };
            turn.scope.end_span(&span, phase, end, error);
            p.executed += 1;
            p.next_step += 1;
            if let Some(failure) = turn.halt() {
                return Outcome::Failed(failure);
            }
            if is_error {
                p.failures
                    .push(format!("{}: {}", step.description, result_summary));
                failed = true;
                break;
            }
            p.results.push(format!("{}: {}", step.description, text));
        }
        if stopped.is_some() {
            break stopped;
        }
        if !failed {
            break None;
        }
        if p.replans >= budget.max_replans {
            break Some(Stop {
                kind: "replans",
                limit: f64::from(budget.max_replans),
                actual: f64::from(p.replans + 1),
            });
        }
        p.replans += 1;
        p.steps.clear();
    };
    let executed = p.executed;
    let results = p.results;
    if let Some(stop) = stop {
        let reason = match stop.kind {
            "steps" => format!("the plan reached its limit of {} steps", stop.limit),
            "replans" => format!(
                "a step failed again after {} replan(s), the limit",
                stop.limit
            ),
            "tokens" => format!(
                "the plan used {} tokens, over its {} limit",
                stop.actual, stop.limit
            ),
            "cost_unknown" => budget::unknown_cost_reason(stop.limit),
            "cost" => format!(
                "the plan spent ${:.4}, over its ${:.4} limit",
                stop.actual, stop.limit
            ),
            _ => format!(
                "the plan ran {:.3}s, over its {}s limit",
                stop.actual, stop.limit
            ),
        };
        turn.scope.emit(EventKind::BudgetExceeded {
            kind: stop.kind.into(),
            limit: stop.limit,
            actual: stop.actual,
            reason: reason.clone(),
        });
        return Outcome::Answer(format!(
            "Plan execution stopped: {} ({reason}). Completed {executed} step(s).",
            stop.kind
        ));
    }
    let step_results = results.join("\n");
    let inputs = [("goal", goal), ("step_results", step_results.as_str())];
    // The answer streams to the user as the model writes it (the `answer` field).
    match turn
        .streamed_typed_call(
            "plan_synthesis",
            &synthesis_signature(),
            &inputs,
            "answer",
            |out| out.answer.as_str(),
            false,
        )
        .await
    {
        Ok(out) => {
            turn.emit_usage(&out.usage, out.cost_usd, &out.model, "plan_synthesis");
            Outcome::Answer(out.value.answer)
        }
        Err(e) => Outcome::Failed(Failure::llm(&e)),
    }
}

fn check_plan_budget(turn: &Turn, executed: usize, elapsed: f64) -> Option<Stop> {
    let b = &turn.shared.agent.budget;
    if executed >= b.max_steps as usize {
        return Some(Stop {
            kind: "steps",
            limit: f64::from(b.max_steps),
            actual: executed as f64 + 1.0,
        });
    }
    if let Some(max) = b.max_tokens
        && turn.usage().total_tokens >= max
    {
        return Some(Stop {
            kind: "tokens",
            limit: max as f64,
            actual: turn.usage().total_tokens as f64,
        });
    }
    if let (Some(max), Some(spent)) = (b.max_cost_usd, turn.cost())
        && spent >= max
    {
        return Some(Stop {
            kind: "cost",
            limit: max,
            actual: spent,
        });
    }
    // An unknown cost with no token cap to stand in: never silently unlimited.
    if let (Some(max), None, None) = (b.max_cost_usd, turn.cost(), b.max_tokens) {
        return Some(Stop {
            kind: "cost_unknown",
            limit: max,
            actual: 0.0,
        });
    }
    if let Some(max) = b.max_wall_clock_secs
        && elapsed >= max
    {
        return Some(Stop {
            kind: "wall_clock",
            limit: max,
            actual: elapsed,
        });
    }
    None
}

async fn tool_step(
    turn: &mut Turn,
    step: &PlanStepRecord,
    tool: &str,
    previous: &str,
) -> StepResult {
    let tool_text = turn
        .shared
        .tool(tool)
        .map(|t| {
            format!(
                "{}: {}\nparameters: {}",
                t.name(),
                t.description(),
                t.parameters()
            )
        })
        .unwrap_or_default();
    let step_text = format!("{} (expected: {})", step.description, step.expected_output);
    let inputs = [
        ("step", step_text.as_str()),
        ("tool", tool_text.as_str()),
        ("previous_results", previous),
    ];
    let arguments = match turn
        .typed_call("tool_arguments", &args_signature(), &inputs)
        .await
    {
        Ok(out) => {
            turn.emit_usage(&out.usage, out.cost_usd, &out.model, "tool_arguments");
            out.value.arguments
        }
        Err(e) => {
            return StepResult::Done {
                text: format!("could not choose the tool's arguments: {e}"),
                is_error: true,
            };
        }
    };
    let call = ToolCall::new(format!("{}-call", step.step_id), tool, arguments);
    step_call(turn, &call, &step.step_id, None).await
}

/// The guarded tool call of a step (its span is a child of the step span).
async fn step_call(
    turn: &mut Turn,
    call: &ToolCall,
    step_id: &str,
    decision: Option<Approval>,
) -> StepResult {
    match call_tool(turn, call, Some(step_id), decision).await {
        CallResult::Done { text, is_error } => StepResult::Done { text, is_error },
        CallResult::Paused => StepResult::Paused(call.clone()),
    }
}

async fn reasoning_step(
    turn: &mut Turn,
    goal: &str,
    spec: &PlanStepRecord,
    previous: &str,
) -> StepResult {
    let step = format!("{} (expected: {})", spec.description, spec.expected_output);
    let inputs = [
        ("goal", goal),
        ("step", step.as_str()),
        ("previous_results", previous),
    ];
    match turn
        .typed_call("plan_step", &step_signature(), &inputs)
        .await
    {
        Ok(out) => {
            turn.emit_usage(&out.usage, out.cost_usd, &out.model, "plan_step");
            StepResult::Done {
                text: out.value.result,
                is_error: false,
            }
        }
        Err(kaos_llm::LlmError::InvalidOutput { .. }) => StepResult::Done {
            text: "the reasoning step produced no usable result".into(),
            is_error: true,
        },
        Err(e) => StepResult::Failed(Failure::llm(&e)),
    }
}

/// How one step ended.
enum StepResult {
    Done { text: String, is_error: bool },
    Paused(ToolCall),
    Failed(Failure),
}
