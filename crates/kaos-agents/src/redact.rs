//! Redaction of secrets and personal data before anything is written down (audit files,
//! OpenTelemetry content capture).
//!
//! A [`Redactor`] rewrites **string values**, never serialized text, so the JSON structure of
//! what it redacts stays intact. Each replacement names what it replaced:
//! `[REDACTED:anthropic_key]`, `[REDACTED:card_number]`, `[REDACTED:sensitive_key]`, ... and
//! is counted per kind in a [`RedactionStats`].
//!
//! What [`Redactor::default`] catches:
//!
//! | kind | what |
//! |------|------|
//! | `private_key` | PEM `-----BEGIN … PRIVATE KEY-----` blocks (also unterminated ones) |
//! | `jwt` | JSON Web Tokens (`eyJ….….…`) |
//! | `bearer_token` | the token after `Bearer ` (the word `Bearer` is kept) |
//! | `anthropic_key` | `sk-ant-…` |
//! | `openai_key` | `sk-proj-…`, `sk-svcacct-…`, `sk-admin-…`, `sk-…` (16+ chars) |
//! | `aws_access_key` | `AKIA…` / `ASIA…` access key ids |
//! | `github_token` | `ghp_…`, `gho_…`, `ghu_…`, `ghs_…`, `ghr_…`, `github_pat_…` |
//! | `slack_token` | `xoxb-…`, `xoxp-…`, ... |
//! | `password` | the value in `password=…`, `"password": "…"`, `passwd: …`, `pwd=…` |
//! | `credential` | the value in `api_key=…`, `secret: …`, `access_token=…`, `client_secret=…` |
//! | `sensitive_key` | any JSON value under a key such as `authorization`, `api_key`, `apikey`, `x-api-key`, `password`, `secret`, `token`, `access_token` (case-insensitive, `-`/`_` ignored, exact key match) |
//! | `card_number` | Luhn-valid 13–19 digit card numbers (spaces/dashes allowed) |
//! | `ssn` | US social security numbers `ddd-dd-dddd` |
//! | `truncated` | strings longer than [`DEFAULT_MAX_STRING_LEN`] chars (see below) |
//!
//! Off by default, on with [`Redactor::with_pii`]: `email`, `phone`. User patterns are added
//! with [`Redactor::with_pattern`].
//!
//! Long strings (after pattern redaction) keep their first `max_string_len` characters and end
//! with `…[TRUNCATED n chars; sha256=<16 hex>]`, where `n` is how many characters were cut and
//! the hash is over the whole (already redacted) string, so equal values can be correlated
//! without being stored.
//!
//! Object keys are not redacted, only values. Event envelopes (ids, sequence, timestamps) and
//! span ids/names are never touched by [`Redactor::redact_event`].
//!
//! ```
//! use kaos_agents::redact::Redactor;
//! let r = Redactor::default();
//! assert_eq!(
//!     r.redact_str("key sk-ant-api03-abcdefghijklmnop in text"),
//!     "key [REDACTED:anthropic_key] in text"
//! );
//! ```

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, LazyLock, Mutex};

pub use regex::Regex;
use regex::{Captures, RegexBuilder};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::events::{Event, EventKind};

/// Strings longer than this many characters are truncated by [`Redactor::default`].
pub const DEFAULT_MAX_STRING_LEN: usize = 4096;

/// The kind counted for a value replaced because of its JSON key.
pub const SENSITIVE_KEY_KIND: &str = "sensitive_key";

/// The kind counted for a truncated string.
pub const TRUNCATED_KIND: &str = "truncated";

/// JSON keys whose values are always redacted (normalized: lowercase, `-` and `_` removed).
const DEFAULT_SENSITIVE_KEYS: &[&str] = &[
    "authorization",
    "proxyauthorization",
    "apikey",
    "xapikey",
    "password",
    "passwd",
    "secret",
    "clientsecret",
    "token",
    "accesstoken",
    "refreshtoken",
    "idtoken",
    "authtoken",
    "sessiontoken",
    "privatekey",
    "cookie",
    "setcookie",
];

/// Counts of replacements, by kind (`anthropic_key`, `card_number`, `truncated`, ...).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RedactionStats {
    /// Replacements per kind.
    pub counts: BTreeMap<String, u64>,
}

impl RedactionStats {
    /// Counts one replacement of `kind`.
    pub fn add(&mut self, kind: &str) {
        self.add_n(kind, 1);
    }

    /// Counts `n` replacements of `kind`.
    pub fn add_n(&mut self, kind: &str, n: u64) {
        if n == 0 {
            return;
        }
        match self.counts.get_mut(kind) {
            Some(c) => *c += n,
            None => {
                self.counts.insert(kind.to_string(), n);
            }
        }
    }

    /// Replacements of `kind` so far.
    pub fn get(&self, kind: &str) -> u64 {
        self.counts.get(kind).copied().unwrap_or(0)
    }

    /// All replacements.
    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    /// Whether nothing was replaced.
    pub fn is_empty(&self) -> bool {
        self.total() == 0
    }

    /// Adds `other`'s counts to these.
    pub fn merge(&mut self, other: &RedactionStats) {
        for (kind, n) in &other.counts {
            self.add_n(kind, *n);
        }
    }
}

/// A pattern could not be compiled.
#[derive(Debug, thiserror::Error)]
#[error("redaction pattern {name:?}: {source}")]
pub struct RedactError {
    /// The pattern's name.
    pub name: String,
    /// The compile error.
    #[source]
    pub source: regex::Error,
}

/// A post-match check: the match is replaced only if it passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    Always,
    Luhn,
    Ssn,
}

#[derive(Debug, Clone)]
struct Rule {
    kind: Arc<str>,
    regex: Regex,
    check: Check,
}

fn rule(kind: &str, pattern: &str, check: Check) -> Option<Rule> {
    // Built-in patterns are constants covered by tests; a pattern that failed to compile
    // would be dropped (and the tests would notice), never panic at runtime.
    match RegexBuilder::new(pattern).size_limit(1 << 24).build() {
        Ok(regex) => Some(Rule {
            kind: Arc::from(kind),
            regex,
            check,
        }),
        Err(e) => {
            tracing::error!(kind, error = %e, "built-in redaction pattern does not compile");
            None
        }
    }
}

static SECRET_RULES: LazyLock<Vec<Rule>> = LazyLock::new(|| {
    [
        (
            "private_key",
            r"(?s)-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----(?:.*?-----END [A-Z0-9 ]*PRIVATE KEY-----|[A-Za-z0-9+/=\s\\]*)",
        ),
        (
            "jwt",
            r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*",
        ),
        (
            "bearer_token",
            r"(?i)(?P<keep>\bbearer\s+)[A-Za-z0-9\-._~+/]{8,}=*",
        ),
        ("anthropic_key", r"\bsk-ant-[A-Za-z0-9_-]{8,}"),
        (
            "openai_key",
            r"\bsk-(?:proj|svcacct|admin)-[A-Za-z0-9_-]{8,}|\bsk-[A-Za-z0-9_-]{16,}",
        ),
        ("aws_access_key", r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
        (
            "github_token",
            r"\bgh[pousr]_[A-Za-z0-9]{30,}|\bgithub_pat_[A-Za-z0-9_]{30,}",
        ),
        ("slack_token", r"\bxox[abposr]-[A-Za-z0-9-]{10,}"),
        (
            "password",
            r#"(?i)(?P<keep>\b(?:password|passwd|pwd)["']?\s*[:=]\s*["']?)[^\s"',;&}]+"#,
        ),
        (
            "credential",
            r#"(?i)(?P<keep>\b(?:api[_-]?key|secret|client[_-]?secret|access[_-]?token|auth[_-]?token|refresh[_-]?token)["']?\s*[:=]\s*["']?)[^\s"',;&}]{4,}"#,
        ),
    ]
    .into_iter()
    .filter_map(|(kind, pattern)| rule(kind, pattern, Check::Always))
    .collect()
});

static CARD_RULE: LazyLock<Option<Rule>> =
    LazyLock::new(|| rule("card_number", r"\b\d(?:[ -]?\d){12,18}\b", Check::Luhn));

static SSN_RULE: LazyLock<Option<Rule>> =
    LazyLock::new(|| rule("ssn", r"\b\d{3}-\d{2}-\d{4}\b", Check::Ssn));

static PII_RULES: LazyLock<Vec<Rule>> = LazyLock::new(|| {
    [
        (
            "email",
            r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b",
        ),
        (
            "phone",
            r"(?:\+\d{1,3}[ .-]?)?(?:\(\d{3}\)|\b\d{3})[ .-]?\d{3}[ .-]?\d{4}\b",
        ),
    ]
    .into_iter()
    .filter_map(|(kind, pattern)| rule(kind, pattern, Check::Always))
    .collect()
});

/// Whether `digits` (with spaces/dashes) is a 13–19 digit Luhn-valid number.
fn luhn_valid(text: &str) -> bool {
    let digits: Vec<u32> = text.chars().filter_map(|c| c.to_digit(10)).collect();
    if !(13..=19).contains(&digits.len()) || digits.iter().all(|d| *d == digits[0]) {
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

/// Whether `ddd-dd-dddd` is a plausible SSN (area not 000/666/9xx, group and serial non-zero).
fn ssn_plausible(text: &str) -> bool {
    let mut parts = text.split('-');
    let (Some(area), Some(group), Some(serial)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    area != "000" && area != "666" && !area.starts_with('9') && group != "00" && serial != "0000"
}

fn normalize_key(key: &str) -> String {
    key.chars()
        .filter(|c| *c != '-' && *c != '_')
        .flat_map(char::to_lowercase)
        .collect()
}

fn marker(kind: &str) -> String {
    format!("[REDACTED:{kind}]")
}

/// Redacts secrets and personal data from strings, JSON values and events.
///
/// Cheap to clone (compiled patterns are shared); clones share the cumulative
/// [`Redactor::stats`] counters.
#[derive(Debug, Clone)]
pub struct Redactor {
    secrets: bool,
    cards: bool,
    ssn: bool,
    pii: bool,
    max_string_len: usize,
    user_rules: Vec<Rule>,
    sensitive_keys: BTreeSet<String>,
    totals: Arc<Mutex<RedactionStats>>,
}

impl Default for Redactor {
    /// Secrets, sensitive keys, card numbers and SSNs on; PII off; strings over 4096 chars
    /// truncated.
    fn default() -> Self {
        Self {
            secrets: true,
            cards: true,
            ssn: true,
            pii: false,
            max_string_len: DEFAULT_MAX_STRING_LEN,
            user_rules: Vec::new(),
            sensitive_keys: DEFAULT_SENSITIVE_KEYS
                .iter()
                .map(|k| (*k).to_string())
                .collect(),
            totals: Arc::default(),
        }
    }
}

impl Redactor {
    /// A redactor that changes nothing (every rule off, no truncation, no sensitive keys).
    /// Add rules with the builder methods.
    pub fn none() -> Self {
        Self {
            secrets: false,
            cards: false,
            ssn: false,
            pii: false,
            max_string_len: usize::MAX,
            user_rules: Vec::new(),
            sensitive_keys: BTreeSet::new(),
            totals: Arc::default(),
        }
    }

    /// Adds a pattern: every match is replaced by `[REDACTED:{name}]`. A named group `keep`
    /// (`(?P<keep>…)`) is kept in front of the marker, e.g. `(?P<keep>user=)\w+`.
    pub fn with_pattern(mut self, name: impl AsRef<str>, regex: Regex) -> Self {
        self.user_rules.push(Rule {
            kind: Arc::from(name.as_ref()),
            regex,
            check: Check::Always,
        });
        self
    }

    /// Like [`Redactor::with_pattern`], compiling `pattern`.
    pub fn try_with_pattern(
        self,
        name: impl AsRef<str>,
        pattern: &str,
    ) -> Result<Self, RedactError> {
        let regex = RegexBuilder::new(pattern)
            .size_limit(1 << 24)
            .build()
            .map_err(|source| RedactError {
                name: name.as_ref().to_string(),
                source,
            })?;
        Ok(self.with_pattern(name, regex))
    }

    /// Turns the built-in secret patterns (keys, tokens, passwords, private keys) and the
    /// sensitive-key rule on or off (default on).
    pub fn with_secrets(mut self, on: bool) -> Self {
        self.secrets = on;
        self
    }

    /// Turns Luhn-valid card number redaction on or off (default on).
    pub fn with_card_numbers(mut self, on: bool) -> Self {
        self.cards = on;
        self
    }

    /// Turns SSN redaction on or off (default on).
    pub fn with_ssn(mut self, on: bool) -> Self {
        self.ssn = on;
        self
    }

    /// Turns PII redaction (emails, phone numbers) on or off (default off).
    pub fn with_pii(mut self, on: bool) -> Self {
        self.pii = on;
        self
    }

    /// Truncates strings longer than `n` characters (default 4096; `usize::MAX` never
    /// truncates).
    pub fn with_max_string_len(mut self, n: usize) -> Self {
        self.max_string_len = n;
        self
    }

    /// Redacts every JSON value under the key `key` (case-insensitive; `-` and `_` ignored).
    pub fn with_sensitive_key(mut self, key: impl AsRef<str>) -> Self {
        self.sensitive_keys.insert(normalize_key(key.as_ref()));
        self
    }

    /// Whether values under `key` are redacted whole.
    pub fn is_sensitive_key(&self, key: &str) -> bool {
        !self.sensitive_keys.is_empty() && self.sensitive_keys.contains(&normalize_key(key))
    }

    /// The cumulative counts of every `redact_str`/`redact_value`/`redact_event` call on this
    /// redactor and its clones (the `_counted` variants report to their caller instead).
    pub fn stats(&self) -> RedactionStats {
        self.totals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn record(&self, stats: &RedactionStats) {
        if !stats.is_empty() {
            self.totals
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .merge(stats);
        }
    }

    /// Redacts one string. Borrowed when nothing was replaced.
    pub fn redact_str<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut stats = RedactionStats::default();
        let out = self.redact_str_counted(text, &mut stats);
        self.record(&stats);
        out
    }

    /// Redacts one string, counting replacements into `stats`.
    pub fn redact_str_counted<'a>(
        &self,
        text: &'a str,
        stats: &mut RedactionStats,
    ) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        let secrets = if self.secrets {
            SECRET_RULES.as_slice()
        } else {
            &[]
        };
        let cards = if self.cards { CARD_RULE.as_ref() } else { None };
        let ssn = if self.ssn { SSN_RULE.as_ref() } else { None };
        let pii = if self.pii { PII_RULES.as_slice() } else { &[] };
        let rules = secrets
            .iter()
            .chain(self.user_rules.iter())
            .chain(cards)
            .chain(ssn)
            .chain(pii.iter());
        for rule in rules {
            if let Some(replaced) = apply_rule(rule, &out, stats) {
                out = Cow::Owned(replaced);
            }
        }
        if let Some(truncated) = truncate(&out, self.max_string_len) {
            stats.add(TRUNCATED_KIND);
            out = Cow::Owned(truncated);
        }
        out
    }

    /// Redacts every string in `value`, in place; values under sensitive keys are replaced
    /// whole (`null` stays `null`).
    pub fn redact_value(&self, value: &mut Value) {
        let mut stats = RedactionStats::default();
        self.redact_value_counted(value, &mut stats);
        self.record(&stats);
    }

    /// [`Redactor::redact_value`], counting replacements into `stats`.
    pub fn redact_value_counted(&self, value: &mut Value, stats: &mut RedactionStats) {
        match value {
            Value::String(s) => {
                if let Cow::Owned(new) = self.redact_str_counted(s, stats) {
                    *s = new;
                }
            }
            Value::Array(items) => {
                for item in items {
                    self.redact_value_counted(item, stats);
                }
            }
            Value::Object(map) => {
                for (key, item) in map.iter_mut() {
                    if self.secrets && !item.is_null() && self.is_sensitive_key(key) {
                        *item = Value::String(marker(SENSITIVE_KEY_KIND));
                        stats.add(SENSITIVE_KEY_KIND);
                    } else {
                        self.redact_value_counted(item, stats);
                    }
                }
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }

    /// A redacted copy of `event`: its content (attributes, arguments, texts, messages,
    /// reasons) is redacted; the envelope, span ids and names are kept as they are.
    pub fn redact_event(&self, event: &Event) -> Event {
        let mut stats = RedactionStats::default();
        let out = self.redact_event_counted(event, &mut stats);
        self.record(&stats);
        out
    }

    /// [`Redactor::redact_event`], counting replacements into `stats`.
    pub fn redact_event_counted(&self, event: &Event, stats: &mut RedactionStats) -> Event {
        let mut event = event.clone();
        let s = |text: &mut String, stats: &mut RedactionStats| {
            if let Cow::Owned(new) = self.redact_str_counted(text, stats) {
                *text = new;
            }
        };
        match &mut event.kind {
            EventKind::Span(span) => {
                if let Some(error) = &mut span.error {
                    s(&mut error.message, stats);
                }
                let mut attributes = Value::Object(std::mem::take(&mut span.attributes));
                self.redact_value_counted(&mut attributes, stats);
                if let Value::Object(map) = attributes {
                    span.attributes = map;
                }
            }
            EventKind::IntentClassified { reasoning, .. } => s(reasoning, stats),
            EventKind::PlanProposed { steps, .. } => {
                for step in steps {
                    s(&mut step.description, stats);
                }
            }
            EventKind::UsageObserved { .. } | EventKind::PatternMismatch { .. } => {}
            EventKind::TextDelta { content } => s(content, stats),
            EventKind::ToolCallApprovalRequired {
                arguments, reason, ..
            } => {
                s(reason, stats);
                self.redact_value_counted(arguments, stats);
            }
            EventKind::BudgetExceeded { reason, .. } => s(reason, stats),
            EventKind::RunError {
                message,
                recovery_hint,
                ..
            } => {
                s(message, stats);
                s(recovery_hint, stats);
            }
            EventKind::TurnSummary(summary) => s(&mut summary.text, stats),
        }
        event
    }
}

/// Applies one rule; `None` when nothing was replaced.
fn apply_rule(rule: &Rule, text: &str, stats: &mut RedactionStats) -> Option<String> {
    if !rule.regex.is_match(text) {
        return None;
    }
    let mut replaced = 0u64;
    let out = rule.regex.replace_all(text, |caps: &Captures<'_>| {
        let whole = caps.get(0).map_or("", |m| m.as_str());
        let pass = match rule.check {
            Check::Always => true,
            Check::Luhn => luhn_valid(whole),
            Check::Ssn => ssn_plausible(whole),
        };
        if !pass {
            return whole.to_string();
        }
        replaced += 1;
        let keep = caps.name("keep").map_or("", |m| m.as_str());
        format!("{keep}{}", marker(&rule.kind))
    });
    if replaced == 0 {
        return None;
    }
    stats.add_n(&rule.kind, replaced);
    Some(out.into_owned())
}

/// `Some(truncated)` when `text` has more than `max` characters.
fn truncate(text: &str, max: usize) -> Option<String> {
    let (cut, _) = text.char_indices().nth(max)?;
    let dropped = text[cut..].chars().count();
    let digest = Sha256::digest(text.as_bytes());
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    Some(format!(
        "{}…[TRUNCATED {dropped} chars; sha256={hex}]",
        &text[..cut]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_pattern_compiles() {
        assert_eq!(SECRET_RULES.len(), 10);
        assert!(CARD_RULE.is_some());
        assert!(SSN_RULE.is_some());
        assert_eq!(PII_RULES.len(), 2);
    }

    #[test]
    fn luhn() {
        assert!(luhn_valid("4111 1111 1111 1111"));
        assert!(luhn_valid("4242-4242-4242-4242"));
        assert!(!luhn_valid("4111 1111 1111 1112"));
        assert!(!luhn_valid("0000000000000"));
    }
}
