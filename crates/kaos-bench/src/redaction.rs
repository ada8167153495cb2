//! Redaction throughput (`redact_clean_mb_per_s`, `redact_dense_mb_per_s`) against two
//! baselines measured in the same run: a plain byte scan (the floor: one pass that looks at
//! every byte) and the previous redactor (its ten secret regexes, card and SSN regexes,
//! applied one after the other, copied here as it was).

use std::borrow::Cow;
use std::hint::black_box;
use std::time::Instant;

use kaos_agents::redact::Redactor;
use regex::{Captures, Regex};
use serde_json::{Value, json};

use crate::BoxError;

/// Agent traffic without a secret: tool arguments and results, code, logs, prose, ids,
/// token counts, paths, hashes.
const CLEAN: &[&str] = &[
    r#"{"role":"tool","tool_call_id":"call_8f2a","content":"{\"status\":\"ok\",\"rows\":[{\"id\":\"3f0c9a1e-5b7d-4c2e-9f1a-0b6d8e2c4a71\",\"name\":\"Lease 2024-11\",\"amount\":1850.25,\"due\":\"2026-01-01\"}]}"}"#,
    "The lease runs for twelve months starting January 1st. Rent is due on the first of each month; a late fee of 5% applies after the 5th. The tenant may not sublet without written consent.",
    "fn summarize(doc: &Document, max_tokens: usize) -> Result<Summary, Error> {\n    let chunks = doc.split(512);\n    let parts: Vec<_> = chunks.iter().map(|c| c.text.trim()).collect();\n    Ok(Summary::new(parts.join(\"\\n\"), max_tokens))\n}",
    "2026-12-02T21:53:56.123Z INFO kaos::runner turn started session_id=lease-review run_id=run_4b1f6c2d8e9a0b3c5d7e9f1a2b4c6d8e turn=3",
    r#"{"usage":{"input_tokens":1234,"output_tokens":567,"total_tokens":1801},"model":"claude-haiku-4-5","stop_reason":"end_turn"}"#,
    "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01 span=agent.tool_call.search duration_ms=184",
    "commit 9fceb02d0ae598e95dc970b74767f19372d61af8\nAuthor: Dev <dev@example.com>\nDate:   Wed Dec 2 21:00:00 2026 +0000\n\n    Fix the pagination of search results",
    "checksum = \"a3f5c2d1e4b6978812ab34cd56ef7890a1b2c3d4e5f60718293a4b5c6d7e8f90\"\nversion = \"1.13.2\"\nsource = \"registry+https://github.com/rust-lang/crates.io-index\"",
    "Search results for 'tenant rights': 1. Security deposits must be returned within 30 days. 2. Landlords must give 24 hours notice before entry. 3. Repairs affecting habitability are the landlord's duty.",
    "/home/dev/projects/kaos/crates/kaos-agents/src/runner/tool_loop.rs:214:9: warning: unused variable `attempt`",
    r##"{"name":"read_file","arguments":{"path":"docs/lease.md","offset":0,"limit":4096},"result_summary":"# Lease agreement\n\nThis agreement is made between the landlord and the tenant"}"##,
    "Please reset your password from the settings page if you forgot it; the session expires after 30 minutes of inactivity. Your order 1234567 shipped on 2026-01-15.",
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAABAAAAAQCAYAAAAf8/9hAAAABHNCSVQICAgIfAhkiAAAAAlwSFlzAAAOxAAAdbwAAKEAb3BlbkFJbG9hZGVk",
    "Step 2 of 3: compare the clauses. The notice period is 60 days for the landlord and 30 days for the tenant; both must be in writing and delivered to the addresses in section 14.",
];

/// One secret of each common kind (the issue's eleven and more), none real.
const SECRETS: &[&str] = &[
    "DB_PASSWORD=hunter2CanaryPw",
    "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYCANARYKEY",
    "sk_live_51CanaryQ8vXo2LmN4pRtYw6Zb",
    "AIzaSyCanary0123456789abcdefghijklmnopq",
    "postgres://admin:S3cretCanary@db.internal:5432/app",
    "hf_CanaryAbCdEfGhIjKlMnOpQrStUvWxYzAb",
    "glpat-Canary1234567890abcd",
    "Authorization: Basic YWRtaW46Q2FuYXJ5UGFzc3dvcmQ=",
    "sk-ant-api03-CanaryKey0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJ-AAAA",
    "card 4111 1111 1111 1111",
    "ssn 123-45-6789",
    "ghp_Canary0123456789abcdefghijklmnopqrst",
    "\"client_secret\": \"Canary0123456789abcdef\"",
];

/// About `bytes` of clean traffic.
pub(crate) fn clean_text(bytes: usize) -> String {
    let mut out = String::with_capacity(bytes + 512);
    let mut i = 0usize;
    while out.len() < bytes {
        out.push_str(CLEAN[i % CLEAN.len()]);
        out.push('\n');
        i += 1;
    }
    out
}

/// About `bytes` of traffic with one secret per 200 bytes; returns it and how many secrets.
pub(crate) fn dense_text(bytes: usize) -> (String, usize) {
    let clean = clean_text(bytes);
    let mut out = String::with_capacity(bytes + 1024);
    let mut planted = 0;
    let mut at = 0;
    while out.len() < bytes && at < clean.len() {
        let secret = SECRETS[planted % SECRETS.len()];
        let mut cut = (at + 200 - secret.len() - 2).min(clean.len());
        while !clean.is_char_boundary(cut) {
            cut -= 1;
        }
        // Whole words only, so the filler never glues itself to a secret.
        let piece = &clean[at..cut];
        let piece = piece.rfind([' ', '\n']).map_or(piece, |n| &piece[..n]);
        out.push_str(piece);
        out.push('\n');
        out.push_str(secret);
        out.push('\n');
        at += piece.len().max(1);
        planted += 1;
    }
    (out, planted)
}

/// The figures.
pub(crate) struct RedactionFigures {
    pub(crate) clean_mb_per_s: f64,
    pub(crate) dense_mb_per_s: f64,
    pub(crate) scan_mb_per_s: f64,
    pub(crate) legacy_clean_mb_per_s: f64,
    pub(crate) legacy_dense_mb_per_s: f64,
    pub(crate) dense_secrets: usize,
    pub(crate) text_bytes: usize,
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// The report entries.
pub(crate) fn figures(r: &RedactionFigures) -> Vec<(String, Value)> {
    let ratio = |a: f64, b: f64| (a / b.max(1e-9) * 100.0).round() / 100.0;
    vec![
        (
            "redact_clean_mb_per_s".into(),
            json!(round1(r.clean_mb_per_s)),
        ),
        (
            "redact_dense_mb_per_s".into(),
            json!(round1(r.dense_mb_per_s)),
        ),
        (
            "redact_scan_floor_mb_per_s".into(),
            json!(round1(r.scan_mb_per_s)),
        ),
        (
            "redact_previous_clean_dense_mb_per_s".into(),
            json!([
                round1(r.legacy_clean_mb_per_s),
                round1(r.legacy_dense_mb_per_s)
            ]),
        ),
        (
            "redact_clean_over_previous".into(),
            json!(ratio(r.clean_mb_per_s, r.legacy_clean_mb_per_s)),
        ),
        (
            "redact_dense_over_previous".into(),
            json!(ratio(r.dense_mb_per_s, r.legacy_dense_mb_per_s)),
        ),
    ]
}

fn mb_per_s(text: &str, iters: usize, mut f: impl FnMut(&str) -> usize) -> f64 {
    black_box(f(text));
    let started = Instant::now();
    for _ in 0..iters {
        black_box(f(black_box(text)));
    }
    (text.len() * iters) as f64 / 1e6 / started.elapsed().as_secs_f64().max(1e-12)
}

/// Measures the current redactor (no truncation: the scan alone), the byte-scan floor and the
/// previous redactor on `mb` MB of clean and of dense text, `iters` times each.
pub(crate) fn redaction(mb: usize, iters: usize) -> Result<RedactionFigures, BoxError> {
    let bytes = mb * 1_000_000;
    let clean = clean_text(bytes);
    let (dense, planted) = dense_text(bytes);
    let redactor = Redactor::default().with_max_string_len(usize::MAX);
    let legacy = Legacy::new()?;
    // Checks first: clean text comes back borrowed, every planted secret is found.
    if !matches!(redactor.redact_str(&clean), Cow::Borrowed(_)) {
        return Err("redaction workload: the clean text was changed".into());
    }
    let found = redactor.redact_str(&dense).matches("[REDACTED:").count();
    if found < planted || dense.contains("Canary") && redactor.redact_str(&dense).contains("Canary")
    {
        return Err(
            format!("redaction workload: {found} of {planted} planted secrets redacted").into(),
        );
    }
    let new = |t: &str| redactor.redact_str(t).len();
    let old = |t: &str| legacy.redact(t).len();
    let scan = |t: &str| t.bytes().filter(|b| *b == b'\x01').count();
    let dense_iters = iters.div_ceil(4).max(1);
    Ok(RedactionFigures {
        clean_mb_per_s: mb_per_s(&clean, iters, new),
        dense_mb_per_s: mb_per_s(&dense, dense_iters, new),
        scan_mb_per_s: mb_per_s(&clean, iters, scan),
        legacy_clean_mb_per_s: mb_per_s(&clean, iters.div_ceil(4).max(1), old),
        legacy_dense_mb_per_s: mb_per_s(&dense, dense_iters, old),
        dense_secrets: planted,
        text_bytes: bytes,
    })
}

/// The previous redactor's string path, as it was: each rule's regex over the whole text,
/// one rule after the other.
struct Legacy {
    rules: Vec<(Regex, u8)>,
}

impl Legacy {
    fn new() -> Result<Self, BoxError> {
        let patterns: &[(&str, u8)] = &[
            (
                r"(?s)-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----(?:.*?-----END [A-Z0-9 ]*PRIVATE KEY-----|[A-Za-z0-9+/=\s\\]*)",
                0,
            ),
            (
                r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*",
                0,
            ),
            (r"(?i)(?P<keep>\bbearer\s+)[A-Za-z0-9\-._~+/]{8,}=*", 0),
            (r"\bsk-ant-[A-Za-z0-9_-]{8,}", 0),
            (
                r"\bsk-(?:proj|svcacct|admin)-[A-Za-z0-9_-]{8,}|\bsk-[A-Za-z0-9_-]{16,}",
                0,
            ),
            (r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b", 0),
            (
                r"\bgh[pousr]_[A-Za-z0-9]{30,}|\bgithub_pat_[A-Za-z0-9_]{30,}",
                0,
            ),
            (r"\bxox[abposr]-[A-Za-z0-9-]{10,}", 0),
            (
                r#"(?i)(?P<keep>\b(?:password|passwd|pwd)["']?\s*[:=]\s*["']?)[^\s"',;&}]+"#,
                0,
            ),
            (
                r#"(?i)(?P<keep>\b(?:api[_-]?key|secret|client[_-]?secret|access[_-]?token|auth[_-]?token|refresh[_-]?token)["']?\s*[:=]\s*["']?)[^\s"',;&}]{4,}"#,
                0,
            ),
            (r"\b\d(?:[ -]?\d){12,18}\b", 1),
            (r"\b\d{3}-\d{2}-\d{4}\b", 2),
        ];
        let mut rules = Vec::new();
        for (p, check) in patterns {
            rules.push((
                regex::RegexBuilder::new(p).size_limit(1 << 24).build()?,
                *check,
            ));
        }
        Ok(Self { rules })
    }

    fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        for (regex, check) in &self.rules {
            if !regex.is_match(&out) {
                continue;
            }
            let replaced = regex.replace_all(&out, |caps: &Captures<'_>| {
                let whole = caps.get(0).map_or("", |m| m.as_str());
                let pass = match check {
                    1 => luhn(whole),
                    2 => {
                        !whole.starts_with("000")
                            && !whole.starts_with("666")
                            && !whole.starts_with('9')
                    }
                    _ => true,
                };
                if !pass {
                    return whole.to_string();
                }
                let keep = caps.name("keep").map_or("", |m| m.as_str());
                format!("{keep}[REDACTED:x]")
            });
            if let Cow::Owned(s) = replaced {
                out = Cow::Owned(s);
            }
        }
        out
    }
}

fn luhn(text: &str) -> bool {
    let digits: Vec<u32> = text.chars().filter_map(|c| c.to_digit(10)).collect();
    if !(13..=19).contains(&digits.len()) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| {
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                *d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}
