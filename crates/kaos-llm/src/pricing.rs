//! USD cost of model calls, from a table of list prices.
//!
//! Prices are USD per million tokens: fresh input, output, prompt-cache reads and
//! prompt-cache writes. [`lookup`] finds a model's price (exact name, then without a
//! `provider:` prefix, then the longest table entry the name starts with, so dated names like
//! `claude-haiku-4-5-20251001` resolve). [`cost_usd`] prices a [`Usage`]; a model missing from
//! the table costs `None` (unknown), never a silent zero.
//!
//! The numbers are the providers' public list prices as known when the table was last edited
//! ([`PRICING_LAST_UPDATED`]); batch, priority and regional pricing are not modelled.

use crate::types::{ProviderResponse, Usage};

/// When the price table was last edited (year-month).
pub const PRICING_LAST_UPDATED: &str = "2026-11";

/// A model's list price in USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelPrice {
    /// Fresh (uncached) input tokens.
    pub input: f64,
    /// Output tokens (reasoning tokens included).
    pub output: f64,
    /// Input tokens read from the prompt cache.
    pub cache_read: f64,
    /// Input tokens written to the prompt cache (0 where the provider does not charge).
    pub cache_write: f64,
}

const fn price(input: f64, output: f64, cache_read: f64, cache_write: f64) -> ModelPrice {
    ModelPrice {
        input,
        output,
        cache_read,
        cache_write,
    }
}

/// The price table: model name (or name prefix) → price.
///
/// Anthropic cache writes are the 5-minute-TTL rate (1.25 × input). OpenAI does not charge
/// for cache writes.
pub static MODEL_PRICES: &[(&str, ModelPrice)] = &[
    // Anthropic
    ("claude-opus-4-6", price(5.00, 25.00, 0.50, 6.25)),
    ("claude-opus-4-5", price(5.00, 25.00, 0.50, 6.25)),
    ("claude-opus-4-1", price(15.00, 75.00, 1.50, 18.75)),
    ("claude-opus-4-0", price(15.00, 75.00, 1.50, 18.75)),
    ("claude-opus-4", price(15.00, 75.00, 1.50, 18.75)),
    ("claude-sonnet-4-6", price(3.00, 15.00, 0.30, 3.75)),
    ("claude-sonnet-4-5", price(3.00, 15.00, 0.30, 3.75)),
    ("claude-sonnet-4-0", price(3.00, 15.00, 0.30, 3.75)),
    ("claude-sonnet-4", price(3.00, 15.00, 0.30, 3.75)),
    // Current list price of Haiku 4.5. (The reference table's 0.80/4.00/0.08/1.00 is the
    // Claude 3.5 Haiku price.)
    ("claude-haiku-4-5", price(1.00, 5.00, 0.10, 1.25)),
    ("claude-3-7-sonnet", price(3.00, 15.00, 0.30, 3.75)),
    ("claude-3-5-sonnet", price(3.00, 15.00, 0.30, 3.75)),
    ("claude-3-5-haiku", price(0.80, 4.00, 0.08, 1.00)),
    ("claude-3-opus", price(15.00, 75.00, 1.50, 18.75)),
    ("claude-3-haiku", price(0.25, 1.25, 0.03, 0.30)),
    // OpenAI
    ("gpt-5.2", price(1.75, 14.00, 0.175, 0.0)),
    ("gpt-5.1", price(1.25, 10.00, 0.125, 0.0)),
    // From the reference table (kaos_llm_client/cost.py, 2026-05); cache price unknown.
    ("gpt-5.4-mini", price(0.40, 1.60, 0.40, 0.0)),
    ("gpt-5", price(1.25, 10.00, 0.125, 0.0)),
    ("gpt-5-mini", price(0.25, 2.00, 0.025, 0.0)),
    ("gpt-5-nano", price(0.05, 0.40, 0.005, 0.0)),
    ("gpt-4.1", price(2.00, 8.00, 0.50, 0.0)),
    ("gpt-4.1-mini", price(0.40, 1.60, 0.10, 0.0)),
    ("gpt-4.1-nano", price(0.10, 0.40, 0.025, 0.0)),
    ("gpt-4o", price(2.50, 10.00, 1.25, 0.0)),
    ("gpt-4o-mini", price(0.15, 0.60, 0.075, 0.0)),
    ("gpt-4-turbo", price(10.00, 30.00, 10.00, 0.0)),
    ("gpt-3.5-turbo", price(0.50, 1.50, 0.50, 0.0)),
    ("o1", price(15.00, 60.00, 7.50, 0.0)),
    ("o1-mini", price(1.10, 4.40, 0.55, 0.0)),
    ("o3", price(2.00, 8.00, 0.50, 0.0)),
    ("o3-mini", price(1.10, 4.40, 0.55, 0.0)),
    ("o4-mini", price(1.10, 4.40, 0.275, 0.0)),
];

/// The price of `model`: exact name, then the name without a `provider:` prefix, then the
/// longest table entry that `model` starts with, followed by `-`, `_` or `@` (so
/// `claude-haiku-4-5-20251001` finds `claude-haiku-4-5`, but `gpt-5.5` does not take the
/// price of `gpt-5`). `None` if the model is unknown.
pub fn lookup(model: &str) -> Option<&'static ModelPrice> {
    if let Some(p) = exact(model) {
        return Some(p);
    }
    let bare = match model.split_once(':') {
        Some((_, rest)) => rest,
        None => model,
    };
    if let Some(p) = exact(bare) {
        return Some(p);
    }
    MODEL_PRICES
        .iter()
        .filter(|(name, _)| {
            bare.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(['-', '_', '@']))
        })
        .max_by_key(|(name, _)| name.len())
        .map(|(_, p)| p)
}

fn exact(model: &str) -> Option<&'static ModelPrice> {
    MODEL_PRICES
        .iter()
        .find(|(name, _)| *name == model)
        .map(|(_, p)| p)
}

/// The USD cost of `usage` on `model`, rounded to 8 decimals; `None` if the model's price is
/// unknown.
///
/// Fresh input = input − cache reads − cache writes (saturating); each of the four token
/// kinds is priced at its own rate.
pub fn cost_usd(model: &str, usage: &Usage) -> Option<f64> {
    lookup(model).map(|p| price_usage(p, usage))
}

/// The USD cost of `usage` at `price`, rounded to 8 decimals.
pub fn price_usage(price: &ModelPrice, usage: &Usage) -> f64 {
    let fresh_input = usage
        .input_tokens
        .saturating_sub(usage.cache_read_tokens)
        .saturating_sub(usage.cache_write_tokens);
    let per_token = |tokens: u64, per_million: f64| tokens as f64 * per_million / 1_000_000.0;
    round_usd(
        per_token(fresh_input, price.input)
            + per_token(usage.output_tokens, price.output)
            + per_token(usage.cache_read_tokens, price.cache_read)
            + per_token(usage.cache_write_tokens, price.cache_write),
    )
}

/// Rounds a USD amount to 8 decimals.
pub fn round_usd(usd: f64) -> f64 {
    (usd * 1e8).round() / 1e8
}

impl ProviderResponse {
    /// The USD cost of this response by its model's list price; `None` if the model is
    /// unknown (e.g. the `function-test` model of fakes).
    pub fn cost_usd(&self) -> Option<f64> {
        cost_usd(&self.model, &self.usage)
    }
}
