//! Price table and cost.

use kaos_llm::pricing::{self, PRICING_LAST_UPDATED};
use kaos_llm::{ProviderResponse, Usage};

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn exact_names_are_found() {
    let p = pricing::lookup("claude-sonnet-4-6").unwrap();
    assert_eq!(
        (p.input, p.output, p.cache_read, p.cache_write),
        (3.0, 15.0, 0.30, 3.75)
    );
    let p = pricing::lookup("gpt-4o-mini").unwrap();
    assert_eq!((p.input, p.output), (0.15, 0.60));
    assert!(!PRICING_LAST_UPDATED.is_empty());
}

#[test]
fn dated_names_find_the_longest_prefix() {
    assert_eq!(
        pricing::lookup("claude-haiku-4-5-20251001"),
        pricing::lookup("claude-haiku-4-5")
    );
    // Longest prefix wins: gpt-4o-mini, not gpt-4o.
    assert_eq!(
        pricing::lookup("gpt-4o-mini-2024-07-18").unwrap().input,
        0.15
    );
    assert_eq!(pricing::lookup("gpt-4o-2024-08-06").unwrap().input, 2.50);
    // claude-opus-4-1-..., not claude-opus-4.
    assert_eq!(
        pricing::lookup("claude-opus-4-1-20250805"),
        pricing::lookup("claude-opus-4-1")
    );
    assert_eq!(
        pricing::lookup("claude-opus-4-5-20251101").unwrap().input,
        5.0
    );
    // Vertex-style version suffix.
    assert!(pricing::lookup("claude-sonnet-4-5@20250929").is_some());
}

#[test]
fn provider_prefixed_names_are_found() {
    assert_eq!(
        pricing::lookup("anthropic:claude-sonnet-4-6"),
        pricing::lookup("claude-sonnet-4-6")
    );
    assert_eq!(
        pricing::lookup("openai:gpt-4.1-mini-2025-04-14"),
        pricing::lookup("gpt-4.1-mini")
    );
}

#[test]
fn unknown_models_have_no_price() {
    assert!(pricing::lookup("function-test").is_none());
    assert!(pricing::lookup("llama3").is_none());
    assert!(pricing::lookup("openai-compatible:llama3@http://127.0.0.1:11434/v1").is_none());
    // A new version is not priced like an old one just because the name starts alike.
    assert!(pricing::lookup("gpt-5.9").is_none());
    assert!(pricing::lookup("o1x").is_none());
    assert_eq!(pricing::cost_usd("llama3", &Usage::new(1000, 1000)), None);
    // The fake model reports unknown, not a silent zero.
    let fake = ProviderResponse::from_text("hi").with_usage(10, 10);
    assert_eq!(fake.cost_usd(), None);
}

#[test]
fn cost_of_plain_usage() {
    // 1M in at 3.00 + 1M out at 15.00.
    let cost = pricing::cost_usd("claude-sonnet-4-6", &Usage::new(1_000_000, 1_000_000)).unwrap();
    assert!(close(cost, 18.0), "{cost}");
    // 1234 in + 567 out on gpt-4o-mini: 0.0001851 + 0.0003402.
    let cost = pricing::cost_usd("gpt-4o-mini", &Usage::new(1234, 567)).unwrap();
    assert!(close(cost, 0.0005253), "{cost}");
    assert_eq!(pricing::cost_usd("gpt-4o", &Usage::default()), Some(0.0));
}

#[test]
fn cache_tokens_are_priced_at_their_own_rates() {
    let usage = Usage {
        input_tokens: 1_000_000,
        output_tokens: 100_000,
        total_tokens: 1_100_000,
        cache_read_tokens: 600_000,
        cache_write_tokens: 200_000,
    };
    // fresh 200k × 3.00 + out 100k × 15.00 + read 600k × 0.30 + write 200k × 3.75
    // = 0.60 + 1.50 + 0.18 + 0.75 = 3.03
    let cost = pricing::cost_usd("claude-sonnet-4-6", &usage).unwrap();
    assert!(close(cost, 3.03), "{cost}");
}

#[test]
fn fresh_input_saturates_when_cache_counts_exceed_input() {
    let usage = Usage {
        input_tokens: 100,
        output_tokens: 0,
        total_tokens: 100,
        cache_read_tokens: 1_000_000,
        cache_write_tokens: 0,
    };
    // Only the cache read is charged: 1M × 0.30.
    let cost = pricing::cost_usd("claude-sonnet-4-6", &usage).unwrap();
    assert!(close(cost, 0.30), "{cost}");
}

#[test]
fn costs_are_rounded_to_eight_decimals() {
    // One output token on gpt-5-nano: 0.40 / 1M = 0.0000004.
    let cost = pricing::cost_usd("gpt-5-nano", &Usage::new(0, 1)).unwrap();
    assert_eq!(cost, 0.0000004);
    // One input token on gpt-4.1-nano: 0.10 / 1M = 1e-7; a cached one: 0.025 / 1M = 2.5e-8.
    let usage = Usage {
        input_tokens: 1,
        cache_read_tokens: 1,
        ..Usage::default()
    };
    assert_eq!(pricing::cost_usd("gpt-4.1-nano", &usage), Some(0.00000003));
}

#[test]
fn provider_response_cost_uses_its_model() {
    let mut response = ProviderResponse::from_text("hi").with_usage(1_000_000, 0);
    response.provider = "anthropic".into();
    response.model = "claude-haiku-4-5-20251001".into();
    let expected = pricing::lookup("claude-haiku-4-5").unwrap().input;
    assert!(close(response.cost_usd().unwrap(), expected));
}

#[test]
fn every_table_entry_is_sane() {
    for (name, price) in pricing::MODEL_PRICES {
        assert!(price.input > 0.0 && price.output >= price.input, "{name}");
        assert!(price.cache_read <= price.input, "{name}");
        assert_eq!(pricing::lookup(name), Some(price), "{name}");
    }
}
