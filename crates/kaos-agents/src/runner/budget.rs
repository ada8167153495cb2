//! Cost caps when a price is unknown. A cost cap (`chat_max_cost_usd`, `max_cost_usd`) is
//! never silently unlimited:
//!
//! * the turn's model has no known price (local and `openai-compatible:` models) and the
//!   agent has no `max_tokens`: the turn refuses to start (`budget_unenforceable`);
//! * with `max_tokens` set, that token cap stands in for the cost cap whenever the turn's
//!   cost is unknown;
//! * a turn whose cost becomes unknown on the way (a response from an unpriced model, e.g.
//!   a sub-agent's) with no `max_tokens` stops at the next check (`cost_unknown`).

use kaos_llm::pricing;

use crate::agent::Budget;

/// The cost cap a budget sets for a pattern's turns, with its field's name.
fn cost_cap(budget: &Budget) -> Option<(&'static str, f64)> {
    match (budget.chat_max_cost_usd, budget.max_cost_usd) {
        (Some(chat), _) => Some(("chat_max_cost_usd", chat)),
        (None, Some(plan)) => Some(("max_cost_usd", plan)),
        (None, None) => None,
    }
}

/// The recovery hint of a turn refused by [`unenforceable`].
pub(crate) const UNENFORCEABLE_HINT: &str = "Set budget.max_tokens (it caps turns whose cost is unknown), remove the cost cap, or use a model with a known price.";

/// Why a turn on `model` cannot start under `budget` (error type `budget_unenforceable`): a
/// cost cap over a model without a known price, with no token cap to fall back on.
pub(crate) fn unenforceable(budget: &Budget, model: &str) -> Option<String> {
    let (field, cap) = cost_cap(budget)?;
    if budget.max_tokens.is_some() || pricing::lookup(model).is_some() {
        return None;
    }
    Some(format!(
        "budget.{field} = ${cap} cannot be enforced: model {model:?} has no known price \
         (local and openai-compatible models are unpriced)"
    ))
}

/// The reason a turn whose cost became unknown stops, when it has no token cap.
pub(crate) fn unknown_cost_reason(cap: f64) -> String {
    format!(
        "the turn's cost is unknown (a model without a known price answered), so its ${cap:.4} \
         cap cannot be enforced; set budget.max_tokens to cap such turns by tokens"
    )
}
