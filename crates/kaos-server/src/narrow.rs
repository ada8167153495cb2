//! Request fields narrow what an agent allows (tools, approval rules, budget, model), never
//! widen it. The narrowed agent is a plain [`Agent`], so a paused run stores it in its run
//! state and the approval (on any replica) continues under the same limits.

use std::collections::HashSet;

use globset::{Glob, GlobSet, GlobSetBuilder};
use kaos_agents::agent::RuleConfig;
use kaos_agents::{Agent, KaosRuntime, PermissionDecision, ToolAnnotations};

use crate::api::MessageRequest;
use crate::error::ApiError;

/// A tool list that matches no tool (an empty list would mean "every tool").
const NO_TOOLS: &str = "\u{0}no-tools";

fn globs(field: &str, patterns: &[String]) -> Result<GlobSet, ApiError> {
    let mut builder = GlobSetBuilder::new();
    for p in patterns {
        let glob = Glob::new(p)
            .map_err(|e| ApiError::bad_request(format!("field `{field}`: glob {p:?}: {e}")))?;
        builder.add(glob);
    }
    builder
        .build()
        .map_err(|e| ApiError::bad_request(format!("field `{field}`: {e}")))
}

/// The tools `agent` may call on `runtime` (its globs over the runtime's tools), with their
/// annotations, in registry order.
pub fn agent_tools(agent: &Agent, runtime: &KaosRuntime) -> Vec<(String, ToolAnnotations)> {
    let all = runtime.tools().all();
    let set = if agent.tools.is_empty() {
        None
    } else {
        let mut builder = GlobSetBuilder::new();
        for g in &agent.tools {
            if let Ok(g) = Glob::new(g) {
                builder.add(g);
            }
        }
        match builder.build() {
            Ok(s) => Some(s),
            Err(_) => return Vec::new(),
        }
    };
    all.iter()
        .filter(|t| set.as_ref().is_none_or(|s| s.is_match(t.name())))
        .map(|t| (t.name().to_string(), t.annotations()))
        .collect()
}

/// Whether the request asks to narrow anything (else the agent's own runner serves it).
pub fn wants_narrowing(req: &MessageRequest, agent: &Agent) -> bool {
    req.tools.is_some()
        || req.require_approval_for_tools.is_some()
        || req.max_cost_usd.is_some()
        || req
            .instructions
            .as_deref()
            .is_some_and(|i| !i.trim().is_empty())
        || req.model.as_deref().is_some_and(|m| m != agent.model)
}

/// `agent` narrowed by the request's fields. `allowed_models` are the model specs the
/// server's agents use: a request may switch among them and nowhere else (403).
pub fn narrow(
    agent: &Agent,
    runtime: &KaosRuntime,
    req: &MessageRequest,
    allowed_models: &HashSet<String>,
    max_instruction_chars: usize,
) -> Result<Agent, ApiError> {
    let mut out = agent.clone();
    let tools = agent_tools(agent, runtime);

    // Tools: the agent's tools that match one of the request's globs.
    let offered: Vec<&(String, ToolAnnotations)> = match &req.tools {
        Some(patterns) => {
            let set = globs("tools", patterns)?;
            tools.iter().filter(|(n, _)| set.is_match(n)).collect()
        }
        None => tools.iter().collect(),
    };
    if req.tools.is_some() {
        out.tools = offered.iter().map(|(n, _)| globset::escape(n)).collect();
        if out.tools.is_empty() {
            out.tools = vec![NO_TOOLS.to_string()];
        }
    }

    // Approvals: a tool the agent would allow becomes `ask`; `deny` and `ask` stay.
    if let Some(patterns) = &req.require_approval_for_tools {
        let set = globs("require_approval_for_tools", patterns)?;
        let policy = agent
            .permission_policy()
            .map_err(|e| ApiError::internal(format!("agent {:?}: {e}", agent.name)))?;
        let mut extra = Vec::new();
        for (name, annotations) in &offered {
            if set.is_match(name)
                && policy.evaluate(name, annotations).decision == PermissionDecision::Allow
            {
                extra.push(RuleConfig {
                    pattern: globset::escape(name),
                    action: PermissionDecision::Ask,
                    reason: format!("the request requires approval for {name}"),
                });
            }
        }
        extra.append(&mut out.permissions);
        out.permissions = extra;
    }

    // Budget: the smaller of the agent's and the request's.
    if let Some(usd) = req.max_cost_usd {
        if !usd.is_finite() || usd < 0.0 {
            return Err(ApiError::bad_request(
                "field `max_cost_usd`: must be a non-negative number",
            ));
        }
        let min = |cur: Option<f64>| Some(cur.map_or(usd, |c| c.min(usd)));
        out.budget.chat_max_cost_usd = min(out.budget.chat_max_cost_usd);
        out.budget.max_cost_usd = min(out.budget.max_cost_usd);
    }

    // Model: only one the server already serves.
    if let Some(model) = req.model.as_deref().map(str::trim)
        && model != agent.model
    {
        if !allowed_models.contains(model) {
            let mut known: Vec<&String> = allowed_models.iter().collect();
            known.sort();
            return Err(ApiError::forbidden(format!(
                "field `model`: {model:?} is not served here (models: {known:?})"
            )));
        }
        out.model = model.to_string();
    }

    // Instructions: appended, so the agent's own stay in force.
    if let Some(extra) = req.instructions.as_deref().map(str::trim)
        && !extra.is_empty()
    {
        if extra.chars().count() > max_instruction_chars {
            return Err(ApiError::new(
                axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                "instructions_too_long",
                format!("field `instructions`: longer than {max_instruction_chars} characters"),
            ));
        }
        if !out.instructions.is_empty() {
            out.instructions.push_str("\n\n");
        }
        out.instructions.push_str(extra);
    }
    Ok(out)
}
