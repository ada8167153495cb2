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
//! 4. A typed synthesis call writes the answer.
//!
//! Budgets (`steps`, `replans`, `tokens`, `cost`, `wall_clock`) are checked before every
//! step; crossing one emits `BudgetExceeded` and the answer says the plan stopped and why.

use std::time::Instant;

use kaos_llm::ToolCall;
use kaos_llm::structured::Signature;
use serde::Deserialize;
use serde_json::Value;

use super::tool_loop::{CallResult, RESULT_SUMMARY_CHARS, truncate_chars};
use super::turn::{Dispatch, Turn};
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

impl Turn {
    /// Runs the PLAN pattern for `goal`.
    pub(crate) async fn plan(&mut self, goal: &str) -> Dispatch {
        let started = Instant::now();
        let budget = self.shared.agent.budget.clone();
        let tools = self.shared.tool_catalog.clone();
        let mut results: Vec<String> = Vec::new();
        let mut failures: Vec<String> = Vec::new();
        let mut executed = 0usize;
        let mut replans = 0u32;
        let stop = 'plan: loop {
            let failures_text = failures.join("\n");
            let inputs = [
                ("goal", goal),
                ("available_tools", tools.as_str()),
                ("prior_failures", failures_text.as_str()),
            ];
            let plan = match self
                .typed_call("plan_expansion", &expand_signature(), &inputs)
                .await
            {
                Ok(out) => {
                    self.emit_usage(&out.usage, out.cost_usd, &out.model, "plan_expansion");
                    out.value
                }
                Err(e) => {
                    self.fail_llm(&e);
                    return Dispatch::Failed;
                }
            };
            let steps: Vec<(PlanStepSummary, PlanStepSpec)> = plan
                .steps
                .into_iter()
                .enumerate()
                .map(|(i, spec)| {
                    let tool = spec.tool.clone().filter(|t| self.shared.tool(t).is_some());
                    (
                        PlanStepSummary {
                            step_id: step_id(executed + i + 1),
                            description: spec.description.clone(),
                            tool_name: tool,
                        },
                        spec,
                    )
                })
                .collect();
            self.scope.emit(EventKind::PlanProposed {
                steps: steps.iter().map(|(s, _)| s.clone()).collect(),
                strategy: "adaptive".into(),
            });
            let mut failed = false;
            for (summary, spec) in &steps {
                if let Some(stop) = self.check_plan_budget(executed, started) {
                    break 'plan Some(stop);
                }
                let mut start = attrs! {"step_id" => summary.step_id.as_str(), "description" => spec.description.as_str()};
                if let Some(t) = &summary.tool_name {
                    start.insert("tool_name".into(), t.as_str().into());
                }
                let (span, _) = self.scope.start_span(
                    SpanSubject::Step,
                    format!("step.{}", summary.step_id),
                    start,
                );
                let previous = results.join("\n");
                let outcome = match &summary.tool_name {
                    Some(tool) => {
                        self.tool_step(&summary.step_id, tool, spec, &previous)
                            .await
                    }
                    None => self.reasoning_step(goal, spec, &previous).await,
                };
                let (text, is_error) = match outcome {
                    StepResult::Done { text, is_error } => (text, is_error),
                    StepResult::Paused => return Dispatch::Paused,
                    StepResult::Failed => return Dispatch::Failed,
                };
                let result_summary = truncate_chars(&text, RESULT_SUMMARY_CHARS);
                let end = attrs! {
                    "step_id" => summary.step_id.as_str(),
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
                self.scope.end_span(&span, phase, end, error);
                executed += 1;
                if self.halted() {
                    return Dispatch::Failed;
                }
                if is_error {
                    failures.push(format!("{}: {}", spec.description, result_summary));
                    failed = true;
                    break;
                }
                results.push(format!("{}: {}", spec.description, text));
            }
            if !failed {
                break None;
            }
            if replans >= budget.max_replans {
                break Some(Stop {
                    kind: "replans",
                    limit: f64::from(budget.max_replans),
                    actual: f64::from(replans + 1),
                });
            }
            replans += 1;
        };
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
                "cost" => format!(
                    "the plan spent ${:.4}, over its ${:.4} limit",
                    stop.actual, stop.limit
                ),
                _ => format!(
                    "the plan ran {:.3}s, over its {}s limit",
                    stop.actual, stop.limit
                ),
            };
            self.scope.emit(EventKind::BudgetExceeded {
                kind: stop.kind.into(),
                limit: stop.limit,
                actual: stop.actual,
                reason: reason.clone(),
            });
            return Dispatch::Answer(format!(
                "Plan execution stopped: {} ({reason}). Completed {executed} step(s).",
                stop.kind
            ));
        }
        let step_results = results.join("\n");
        let inputs = [("goal", goal), ("step_results", step_results.as_str())];
        match self
            .typed_call("plan_synthesis", &synthesis_signature(), &inputs)
            .await
        {
            Ok(out) => {
                self.emit_usage(&out.usage, out.cost_usd, &out.model, "plan_synthesis");
                Dispatch::Answer(out.value.answer)
            }
            Err(e) => {
                self.fail_llm(&e);
                Dispatch::Failed
            }
        }
    }

    fn check_plan_budget(&self, executed: usize, started: Instant) -> Option<Stop> {
        let b = &self.shared.agent.budget;
        if executed >= b.max_steps as usize {
            return Some(Stop {
                kind: "steps",
                limit: f64::from(b.max_steps),
                actual: executed as f64 + 1.0,
            });
        }
        if let Some(max) = b.max_tokens
            && self.usage.total_tokens >= max
        {
            return Some(Stop {
                kind: "tokens",
                limit: max as f64,
                actual: self.usage.total_tokens as f64,
            });
        }
        if let (Some(max), Some(spent)) = (b.max_cost_usd, self.cost)
            && spent >= max
        {
            return Some(Stop {
                kind: "cost",
                limit: max,
                actual: spent,
            });
        }
        if let Some(max) = b.max_wall_clock_secs {
            let elapsed = started.elapsed().as_secs_f64();
            if elapsed >= max {
                return Some(Stop {
                    kind: "wall_clock",
                    limit: max,
                    actual: elapsed,
                });
            }
        }
        None
    }

    async fn tool_step(
        &mut self,
        step_id: &str,
        tool: &str,
        spec: &PlanStepSpec,
        previous: &str,
    ) -> StepResult {
        let tool_text = self
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
        let step = format!("{} (expected: {})", spec.description, spec.expected_output);
        let inputs = [
            ("step", step.as_str()),
            ("tool", tool_text.as_str()),
            ("previous_results", previous),
        ];
        let arguments = match self
            .typed_call("tool_arguments", &args_signature(), &inputs)
            .await
        {
            Ok(out) => {
                self.emit_usage(&out.usage, out.cost_usd, &out.model, "tool_arguments");
                out.value.arguments
            }
            Err(e) => {
                return StepResult::Done {
                    text: format!("could not choose the tool's arguments: {e}"),
                    is_error: true,
                };
            }
        };
        let call = ToolCall::new(format!("{step_id}-call"), tool, arguments);
        match self.call_tool(&call, Some(step_id)).await {
            CallResult::Done { text, is_error } => StepResult::Done { text, is_error },
            CallResult::Paused => StepResult::Paused,
        }
    }

    async fn reasoning_step(
        &mut self,
        goal: &str,
        spec: &PlanStepSpec,
        previous: &str,
    ) -> StepResult {
        let step = format!("{} (expected: {})", spec.description, spec.expected_output);
        let inputs = [
            ("goal", goal),
            ("step", step.as_str()),
            ("previous_results", previous),
        ];
        match self
            .typed_call("plan_step", &step_signature(), &inputs)
            .await
        {
            Ok(out) => {
                self.emit_usage(&out.usage, out.cost_usd, &out.model, "plan_step");
                StepResult::Done {
                    text: out.value.result,
                    is_error: false,
                }
            }
            Err(kaos_llm::LlmError::InvalidOutput { .. }) => StepResult::Done {
                text: "the reasoning step produced no usable result".into(),
                is_error: true,
            },
            Err(e) => {
                self.fail_llm(&e);
                StepResult::Failed
            }
        }
    }
}

enum StepResult {
    Done { text: String, is_error: bool },
    Paused,
    Failed,
}
