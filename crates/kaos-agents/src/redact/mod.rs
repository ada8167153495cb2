//! Redaction of secrets and personal data wherever data leaves the process (audit files,
//! OpenTelemetry content capture, the CLI's JSON events, tree and log lines).
//!
//! A [`Redactor`] rewrites **string values**, never serialized text, so the JSON structure of
//! what it redacts stays intact. Each replacement names what it replaced:
//! `[REDACTED:anthropic_key]`, `[REDACTED:card_number]`, `[REDACTED:sensitive_key]`, ... and
//! is counted per kind in a [`RedactionStats`].
//!
//! What [`Redactor::default`] catches ([`rule_names`] lists every rule):
//!
//! | rules | what |
//! |------|------|
//! | provider tokens, by their documented shapes | `anthropic_key`, `openai_key`, `huggingface_token`, `groq_key`, `xai_key`, `replicate_token`, `aws_access_key_id`, `aws_session_token`, `google_api_key`, `google_oauth_secret`, `google_oauth_token`, `azure_storage_key`, `azure_shared_access_key`, `azure_sas_signature`, `azure_client_secret`, `digitalocean_token`, `terraform_token`, `vault_token`, `databricks_token`, `supabase_token`, `github_pat`, `github_oauth_token`, `github_app_token`, `github_refresh_token`, `gitlab_token`, `npm_token`, `pypi_token`, `docker_pat`, `atlassian_token`, `linear_api_key`, `notion_token`, `figma_token`, `postman_key`, `sentry_token`, `grafana_token`, `newrelic_key`, `doppler_token`, `slack_token`, `slack_webhook`, `discord_webhook`, `discord_bot_token`, `telegram_bot_token`, `stripe_key`, `stripe_webhook_secret`, `twilio_api_key`, `sendgrid_key`, `mailgun_key`, `mailchimp_key`, `shopify_token`, `square_token`, `jwt` |
//! | key material | `private_key` (PEM and OpenSSH private key blocks, also JSON-escaped and unterminated ones), `age_secret_key` |
//! | URLs and headers | `url_password` (`scheme://user:[REDACTED]@host`), `url_query_secret` (the value of a `key`, `sig`, `signature`, `x-amz-signature` or `x-goog-signature` query parameter right after `?` or `&`: Google API keys, Azure SAS and presigned URL signatures; a bare `key=value` elsewhere is kept), `basic_auth` (base64 that decodes to `user:password`), `bearer_token` (`Authorization: Bearer/Token/Bot x`, a bare `Bearer x` with a digit), `authorization` (other `Authorization:` values), `session_cookie` (session-like cookies in `Cookie:`/`Set-Cookie:`) |
//! | assignments of sensitive names | `password`, `aws_secret_key`, `aws_session_token`, `credential`: the value in `DB_PASSWORD=x`, `export API_KEY="x"`, `password: x`, `"client_secret": "x"`, `api_key = 'x'`, `--password x`, `<password>x</password>`, where the name *contains* a sensitive word; names such as `max_tokens`, `token_count`, `secret_name`, `secret_santa_date` and values such as `${DB_PASSWORD}`, `<token>`, `***`, `str`, `config.api_key` are kept |
//! | `sensitive_key` | any JSON value under such a name, or under `authorization`, `cookie`, `x-api-key` and the keys added with [`Redactor::with_sensitive_key`] (`null`, booleans, empty strings, placeholders and counts kept) |
//! | `card_number` | 13–19 digit numbers with a card network's prefix and length, Luhn-valid (spaces/dashes allowed), also JSON numbers |
//! | `ssn` | US social security numbers `ddd-dd-dddd` (plausible areas only) |
//! | `truncated` | strings longer than [`DEFAULT_MAX_STRING_LEN`] chars (see below) |
//!
//! Off by default, on with [`Redactor::with_pii`]: `email`, `phone`, `iban` (mod-97 checked).
//! User patterns are added with [`Redactor::with_pattern`].
//!
//! **Speed.** One Aho-Corasick pass finds every rule's literal keywords (token prefixes such
//! as `ghp_`, `AKIA`, `sk-ant-`; words such as `pass`, `secret`, `token`, `key`); only the rules
//! whose keyword occurs run, anchored at it. Card numbers and SSNs come from one byte scan
//! for digit runs. Overlapping finds are merged and named after the most specific rule, and
//! the text is rebuilt once; clean text is returned borrowed.
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
use regex::RegexBuilder;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::events::{Event, EventKind};

mod assign;
mod rules;
mod scan;

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

/// A user pattern: every match (minus its `keep` group) is replaced.
#[derive(Debug, Clone)]
struct UserRule {
    kind: Arc<str>,
    regex: Regex,
}

/// A personal-data rule (on with [`Redactor::with_pii`]).
#[derive(Debug, Clone)]
struct PiiRule {
    kind: &'static str,
    regex: Regex,
    check: fn(&str) -> bool,
}

static PII_RULES: LazyLock<Vec<PiiRule>> =
    LazyLock::new(|| {
        let always: fn(&str) -> bool = |_| true;
        [
        (
            "email",
            r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b",
            always,
        ),
        (
            "phone",
            r"(?:\+\d{1,3}[ .-]?)?(?:\(\d{3}\)|\b\d{3})[ .-]?\d{3}[ .-]?\d{4}\b",
            always,
        ),
        ("iban", r"\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b", iban_valid),
    ]
    .into_iter()
    .filter_map(|(kind, pattern, check)| match RegexBuilder::new(pattern).build() {
        Ok(regex) => Some(PiiRule { kind, regex, check }),
        Err(e) => {
            tracing::error!(kind, error = %e, "built-in redaction pattern does not compile");
            None
        }
    })
    .collect()
    });

/// ISO 13616 check: the rearranged number is 1 mod 97.
fn iban_valid(text: &str) -> bool {
    let compact: Vec<u8> = text.bytes().filter(|b| *b != b' ').collect();
    if !(15..=34).contains(&compact.len()) {
        return false;
    }
    let (head, tail) = compact.split_at(4);
    let mut rem = 0u32;
    for &c in tail.iter().chain(head) {
        let v = match c {
            b'0'..=b'9' => u32::from(c - b'0'),
            b'A'..=b'Z' => u32::from(c - b'A') + 10,
            _ => return false,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

/// The names of the built-in rules, in the order they win when matches overlap (the
/// personal-data rules `email`, `phone`, `iban` are off by default).
pub fn rule_names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = Vec::new();
    for rule in rules::TOKEN_RULES {
        if !names.contains(&rule.name) {
            names.push(rule.name);
        }
    }
    names.extend([
        "password",
        "aws_secret_key",
        "credential",
        "session_cookie",
        "card_number",
        "ssn",
        SENSITIVE_KEY_KIND,
    ]);
    names
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
    user_rules: Vec<UserRule>,
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
        self.user_rules.push(UserRule {
            kind: Arc::from(name.as_ref()),
            regex,
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

    /// Whether values under `key` are redacted whole: a key added with
    /// [`Redactor::with_sensitive_key`] or a default one (`authorization`, `cookie`, ...), or,
    /// with secrets on, a name that holds a secret (`password`, `db_password`,
    /// `openai_api_key`, `client_secret`, `x-auth-token`, ... but not `max_tokens`,
    /// `token_count`, `secret_name`).
    pub fn is_sensitive_key(&self, key: &str) -> bool {
        (!self.sensitive_keys.is_empty() && self.sensitive_keys.contains(&normalize_key(key)))
            || (self.secrets && assign::classify_name(key).is_some())
    }

    /// Whether `value`, under the sensitive key `key`, is replaced: not `null`, a boolean,
    /// an empty string or a placeholder (`${DB_PASSWORD}`, `***`), and not a plain count
    /// under a token-like name.
    fn sensitive_value(&self, key: &str, value: &Value) -> bool {
        match value {
            Value::Null | Value::Bool(_) => false,
            Value::String(s) => rules::not_placeholder(s),
            Value::Number(_) => {
                matches!(
                    assign::classify_name(key),
                    Some(assign::NameClass::Password)
                ) || self.sensitive_keys.contains(&normalize_key(key))
            }
            Value::Array(_) | Value::Object(_) => true,
        }
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
        let mut found = Vec::new();
        if self.secrets {
            scan::ENGINE.find_secrets(text, &mut found);
        }
        if self.cards || self.ssn {
            scan::find_digits(text, self.cards, self.ssn, &mut found);
        }
        for (index, rule) in self.user_rules.iter().enumerate() {
            for caps in rule.regex.captures_iter(text) {
                let Some(whole) = caps.get(0) else { continue };
                let start = caps
                    .name("keep")
                    .filter(|k| k.start() == whole.start())
                    .map_or(whole.start(), |k| k.end());
                if whole.end() > start {
                    found.push(scan::Found {
                        start,
                        end: whole.end(),
                        priority: scan::PRIORITY_USER + index,
                        rule: scan::Name::User(index),
                    });
                }
            }
        }
        if self.pii {
            for rule in PII_RULES.iter() {
                for m in rule.regex.find_iter(text) {
                    if (rule.check)(m.as_str()) {
                        found.push(scan::Found {
                            start: m.start(),
                            end: m.end(),
                            priority: scan::PRIORITY_PII,
                            rule: scan::Name::Builtin(rule.kind),
                        });
                    }
                }
            }
        }
        let mut out = if found.is_empty() {
            Cow::Borrowed(text)
        } else {
            Cow::Owned(self.replace(text, found, stats))
        };
        if let Some(truncated) = truncate(&out, self.max_string_len) {
            stats.add(TRUNCATED_KIND);
            out = Cow::Owned(truncated);
        }
        out
    }

    /// Rebuilds `text` with every (merged) find replaced by its marker.
    fn replace(
        &self,
        text: &str,
        mut found: Vec<scan::Found>,
        stats: &mut RedactionStats,
    ) -> String {
        scan::merge(&mut found);
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for f in &found {
            let kind = match f.rule {
                scan::Name::Builtin(name) => name,
                scan::Name::User(i) => self.user_rules.get(i).map_or("pattern", |r| &*r.kind),
            };
            out.push_str(&text[at..f.start]);
            out.push_str("[REDACTED:");
            out.push_str(kind);
            out.push(']');
            stats.add(kind);
            at = f.end;
        }
        out.push_str(&text[at..]);
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
                    if self.is_sensitive_key(key) && self.sensitive_value(key, item) {
                        stats.add(SENSITIVE_KEY_KIND);
                        *item = Value::String(marker(SENSITIVE_KEY_KIND));
                    } else {
                        self.redact_value_counted(item, stats);
                    }
                }
            }
            Value::Number(n) => {
                if self.cards
                    && let Some(u) = n.as_u64()
                {
                    let digits: Vec<u8> = u.to_string().bytes().map(|b| b - b'0').collect();
                    if scan::is_card(&digits) {
                        stats.add("card_number");
                        *value = Value::String(marker("card_number"));
                    }
                }
            }
            Value::Null | Value::Bool(_) => {}
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
            EventKind::TextDelta { content, .. } | EventKind::ThinkingDelta { content, .. } => {
                s(content, stats)
            }
            EventKind::TextRetracted { reason, .. } => s(reason, stats),
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
        assert_eq!(scan::ENGINE.token_rules(), rules::TOKEN_RULES.len());
        assert_eq!(PII_RULES.len(), 3);
    }

    #[test]
    fn luhn_and_brands() {
        let d = |s: &str| -> Vec<u8> { s.bytes().map(|b| b - b'0').collect() };
        assert!(scan::is_card(&d("4111111111111111")));
        assert!(scan::is_card(&d("4242424242424242")));
        assert!(!scan::is_card(&d("4111111111111112")));
        assert!(!scan::is_card(&d("0000000000000")));
        // A nanosecond timestamp: no card network starts with 1.
        assert!(!scan::is_card(&d("1796248500360045298")));
    }

    #[test]
    fn iban_check() {
        assert!(iban_valid("GB82 WEST 1234 5698 7654 32"));
        assert!(!iban_valid("GB82 WEST 1234 5698 7654 33"));
    }
}
