//! The scanning engine: one Aho-Corasick pass over the text finds every rule keyword; only
//! rules whose keyword occurs run, anchored where it occurs. Card numbers and SSNs are found
//! by a byte scan for digit runs. Matches of all rules are merged (overlaps become one
//! replacement, named after the most specific rule) and the text is rebuilt once.

use std::sync::LazyLock;

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};
use regex_automata::meta::Regex as MetaRegex;
use regex_automata::{Anchored, Input};

use super::assign::{assignment_at, cookies_at};
use super::rules::{Back, TOKEN_RULES, TokenRule};

/// Keywords of the assignment rule (the sensitive words a name contains).
const ASSIGNMENT_KEYWORDS: &[&str] = &[
    "pass",
    "pwd",
    "secret",
    "token",
    "key",
    "credential",
    "auth",
];

/// What a keyword hit triggers.
#[derive(Debug, Clone, Copy)]
enum Target {
    Token(usize),
    Assignment,
    Cookie,
}

struct CompiledRule {
    rule: &'static TokenRule,
    regex: MetaRegex,
    /// The capture index of the replaced part (`s`), if any.
    group: Option<usize>,
}

/// The compiled built-in rules.
pub(super) struct Engine {
    keywords: Option<AhoCorasick>,
    /// For each keyword, what it triggers.
    targets: Vec<Vec<Target>>,
    rules: Vec<CompiledRule>,
}

/// A found secret: bytes `start..end` of the text, replaced by the marker of `rule`
/// (`priority` orders rules when matches overlap: lower wins).
#[derive(Debug, Clone, Copy)]
pub(super) struct Found {
    pub(super) start: usize,
    pub(super) end: usize,
    pub(super) priority: usize,
    pub(super) rule: Name,
}

/// The name a find is replaced with.
#[derive(Debug, Clone, Copy)]
pub(super) enum Name {
    /// A built-in rule.
    Builtin(&'static str),
    /// The user pattern at this index.
    User(usize),
}

/// Priorities after the token rules.
pub(super) const PRIORITY_ASSIGNMENT: usize = 10_000;
pub(super) const PRIORITY_DIGITS: usize = 20_000;
pub(super) const PRIORITY_USER: usize = 30_000;
pub(super) const PRIORITY_PII: usize = 40_000;

pub(super) static ENGINE: LazyLock<Engine> = LazyLock::new(Engine::build);

impl Engine {
    fn build() -> Self {
        let mut keywords: Vec<String> = Vec::new();
        let mut targets: Vec<Vec<Target>> = Vec::new();
        let mut add = |kw: &str, target: Target| {
            let kw = kw.to_ascii_lowercase();
            match keywords.iter().position(|k| *k == kw) {
                Some(i) => targets[i].push(target),
                None => {
                    keywords.push(kw);
                    targets.push(vec![target]);
                }
            }
        };
        let mut rules = Vec::new();
        for rule in TOKEN_RULES {
            let built = MetaRegex::builder()
                .configure(MetaRegex::config().nfa_size_limit(Some(1 << 24)))
                .build(rule.pattern);
            match built {
                Ok(regex) => {
                    let group = regex
                        .group_info()
                        .to_index(regex_automata::PatternID::ZERO, "s");
                    let index = rules.len();
                    rules.push(CompiledRule { rule, regex, group });
                    for kw in rule.keywords {
                        add(kw, Target::Token(index));
                    }
                }
                // Built-in patterns are constants covered by tests; one that failed to
                // compile is dropped (and the tests notice), never a panic at runtime.
                Err(e) => {
                    tracing::error!(rule = rule.name, error = %e, "built-in redaction pattern does not compile");
                }
            }
        }
        for kw in ASSIGNMENT_KEYWORDS {
            add(kw, Target::Assignment);
        }
        add("cookie", Target::Cookie);
        let keywords = AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .kind(Some(AhoCorasickKind::DFA))
            .build(&keywords)
            .or_else(|_| {
                AhoCorasick::builder()
                    .ascii_case_insensitive(true)
                    .build(&keywords)
            });
        let keywords = match keywords {
            Ok(ac) => Some(ac),
            Err(e) => {
                tracing::error!(error = %e, "redaction keyword automaton does not build");
                None
            }
        };
        Self {
            keywords,
            targets,
            rules,
        }
    }

    /// How many token rules compiled.
    #[cfg(test)]
    pub(super) fn token_rules(&self) -> usize {
        if self.keywords.is_none() {
            return 0;
        }
        self.rules.len()
    }

    /// Appends every secret the built-in token, assignment and cookie rules find in `text`.
    pub(super) fn find_secrets(&self, text: &str, out: &mut Vec<Found>) {
        let Some(keywords) = &self.keywords else {
            return;
        };
        let mut cookies = Vec::new();
        for hit in keywords.find_overlapping_iter(text) {
            let Some(targets) = self.targets.get(hit.pattern().as_usize()) else {
                continue;
            };
            for target in targets {
                match *target {
                    Target::Token(i) => self.token_at(i, text, hit.start(), hit.end(), out),
                    Target::Assignment => {
                        if let Some((start, end, rule)) = assignment_at(text, hit.start()) {
                            out.push(Found {
                                start,
                                end,
                                priority: PRIORITY_ASSIGNMENT,
                                rule: Name::Builtin(rule),
                            });
                        }
                    }
                    Target::Cookie => {
                        cookies.clear();
                        cookies_at(text, hit.start(), &mut cookies);
                        out.extend(cookies.iter().map(|&(start, end)| Found {
                            start,
                            end,
                            priority: PRIORITY_ASSIGNMENT,
                            rule: Name::Builtin("session_cookie"),
                        }));
                    }
                }
            }
        }
    }

    fn token_at(&self, index: usize, text: &str, hit: usize, hit_end: usize, out: &mut Vec<Found>) {
        let Some(compiled) = self.rules.get(index) else {
            return;
        };
        let bytes = text.as_bytes();
        let (input, window) = match compiled.rule.back {
            Back::None => (Input::new(text).range(hit..).anchored(Anchored::Yes), false),
            Back::Fixed(n) => {
                let Some(start) = hit.checked_sub(n) else {
                    return;
                };
                if !text.is_char_boundary(start) {
                    return;
                }
                (
                    Input::new(text).range(start..).anchored(Anchored::Yes),
                    false,
                )
            }
            Back::Digits(max) => {
                let mut start = hit;
                while start > 0 && bytes[start - 1].is_ascii_digit() && hit - start < max {
                    start -= 1;
                }
                (
                    Input::new(text).range(start..).anchored(Anchored::Yes),
                    false,
                )
            }
            Back::Window(n) => {
                let mut start = hit.saturating_sub(n);
                while !text.is_char_boundary(start) {
                    start -= 1;
                }
                let mut end = (hit_end + n).min(text.len());
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                (Input::new(text).range(start..end), true)
            }
        };
        let mut caps = compiled.regex.create_captures();
        let mut input = input;
        loop {
            compiled.regex.search_captures(&input, &mut caps);
            let Some(m) = caps.get_match() else {
                return;
            };
            let next = m.end().max(m.start() + 1);
            let standalone = (m.start() == 0
                || !bytes[m.start()].is_ascii_alphanumeric()
                || !bytes[m.start() - 1].is_ascii_alphanumeric()
                // Telegram's documented API URLs: `https://api.telegram.org/bot<token>/`.
                || (compiled.rule.back == Back::Digits(10) && text[..m.start()].ends_with("/bot")))
                && (m.end() == bytes.len()
                    || !bytes[m.end() - 1].is_ascii_alphanumeric()
                    || !bytes[m.end()].is_ascii_alphanumeric());
            let (start, end) = compiled
                .group
                .and_then(|g| caps.get_group(g))
                .map_or((m.start(), m.end()), |s| (s.start, s.end));
            let valid = compiled
                .rule
                .validate
                .is_none_or(|check| check(&text[start..end]));
            if standalone && valid && end > start {
                out.push(Found {
                    start,
                    end,
                    priority: index,
                    rule: Name::Builtin(compiled.rule.name),
                });
            }
            if !window || next >= input.end() {
                return;
            }
            input.set_start(next);
        }
    }
}

/// Card networks' number prefixes and lengths (Visa, Mastercard, Amex, Discover, Diners,
/// JCB, UnionPay, Maestro).
fn card_brand_ok(digits: &[u8]) -> bool {
    let n = digits.len();
    let prefix = |k: usize| -> u32 {
        digits[..k.min(n)]
            .iter()
            .fold(0u32, |acc, d| acc * 10 + u32::from(*d))
    };
    let p2 = prefix(2);
    let p3 = prefix(3);
    let p4 = prefix(4);
    let p6 = prefix(6);
    match digits[0] {
        4 => matches!(n, 13 | 16 | 19),
        2 => n == 16 && (222_100..=272_099).contains(&p6),
        5 => {
            ((51..=55).contains(&p2) && n == 16)
                || (matches!(p2, 50 | 56..=59) && (12..=19).contains(&n))
        }
        3 => {
            (matches!(p2, 34 | 37) && n == 15)
                || ((300..=305).contains(&p3) || matches!(p2, 36 | 38 | 39))
                    && (14..=19).contains(&n)
                || (3528..=3589).contains(&p4) && (16..=19).contains(&n)
        }
        6 => (16..=19).contains(&n) || (12..=19).contains(&n) && matches!(p2, 63 | 67),
        _ => false,
    }
}

/// Whether `digits` (0–9 values) is Luhn-valid and not one repeated digit.
pub(super) fn luhn_ok(digits: &[u8]) -> bool {
    if digits.iter().all(|d| *d == digits[0]) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Whether `digits` is a card number: 13–19 digits, a network's prefix, Luhn-valid.
pub(super) fn is_card(digits: &[u8]) -> bool {
    (13..=19).contains(&digits.len()) && card_brand_ok(digits) && luhn_ok(digits)
}

/// Whether `ddd-dd-dddd` is a plausible SSN (area not 000/666/9xx, group and serial non-zero).
fn ssn_plausible(area: &[u8], group: &[u8], serial: &[u8]) -> bool {
    area != b"000" && area != b"666" && area[0] != b'9' && group != b"00" && serial != b"0000"
}

/// Appends card numbers (when `cards`) and SSNs (when `ssn`) found in `text`.
pub(super) fn find_digits(text: &str, cards: bool, ssn: bool, out: &mut Vec<Found>) {
    let b = text.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut i = 0;
    let mut groups: Vec<(usize, usize, u8)> = Vec::new();
    while i < b.len() {
        if !b[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        if i > 0 && word(b[i - 1]) {
            // Inside a word (`a1b2`, `v1.2`): skip to its end.
            while i < b.len() && word(b[i]) {
                i += 1;
            }
            continue;
        }
        // A run of digit groups separated by single spaces or dashes.
        groups.clear();
        let mut j = i;
        let mut sep = 0u8;
        loop {
            let start = j;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            groups.push((start, j, sep));
            if j + 1 < b.len()
                && matches!(b[j], b' ' | b'-')
                && b[j + 1].is_ascii_digit()
                && groups.len() < 8
            {
                sep = b[j];
                j += 1;
            } else {
                break;
            }
        }
        let run_end = j;
        if run_end < b.len() && word(b[run_end]) {
            i = run_end;
            while i < b.len() && word(b[i]) {
                i += 1;
            }
            continue;
        }
        if ssn
            && groups.len() == 3
            && groups[1].2 == b'-'
            && groups[2].2 == b'-'
            && groups.iter().map(|g| g.1 - g.0).eq([3, 2, 4])
            && ssn_plausible(
                &b[groups[0].0..groups[0].1],
                &b[groups[1].0..groups[1].1],
                &b[groups[2].0..groups[2].1],
            )
        {
            out.push(Found {
                start: groups[0].0,
                end: run_end,
                priority: PRIORITY_DIGITS,
                rule: Name::Builtin("ssn"),
            });
        } else if cards {
            find_cards_in_run(b, &groups, out);
        }
        i = run_end;
    }
}

fn find_cards_in_run(b: &[u8], groups: &[(usize, usize, u8)], out: &mut Vec<Found>) {
    let mut first = 0;
    let mut digits = Vec::with_capacity(19);
    'outer: while first < groups.len() {
        // Longest candidate first, starting at `first`.
        for last in (first..groups.len()).rev() {
            let span = &groups[first..=last];
            let count: usize = span.iter().map(|g| g.1 - g.0).sum();
            if !(13..=19).contains(&count) {
                continue;
            }
            let seps_ok = span.len() == 1
                || (span[1..].iter().all(|g| g.2 == span[1].2)
                    && span.iter().all(|g| g.1 - g.0 >= 3));
            if !seps_ok {
                continue;
            }
            digits.clear();
            for g in span {
                digits.extend(b[g.0..g.1].iter().map(|c| c - b'0'));
            }
            if is_card(&digits) {
                out.push(Found {
                    start: span[0].0,
                    end: span[span.len() - 1].1,
                    priority: PRIORITY_DIGITS,
                    rule: Name::Builtin("card_number"),
                });
                first = last + 1;
                continue 'outer;
            }
        }
        first += 1;
    }
}

/// Merges overlapping finds (their union, named after the lowest priority) in place, sorted.
pub(super) fn merge(found: &mut Vec<Found>) {
    if found.len() < 2 {
        return;
    }
    found.sort_by_key(|f| (f.start, f.priority));
    let mut merged: Vec<Found> = Vec::with_capacity(found.len());
    for f in found.drain(..) {
        match merged.last_mut() {
            Some(last) if f.start < last.end => {
                last.end = last.end.max(f.end);
                if f.priority < last.priority {
                    last.priority = f.priority;
                    last.rule = f.rule;
                }
            }
            _ => merged.push(f),
        }
    }
    *found = merged;
}
