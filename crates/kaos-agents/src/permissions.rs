//! Which tool calls may run: glob rules plus the tools' own annotations.
//!
//! [`PermissionPolicy::evaluate`] decides, in order:
//! 1. a tool that requires confirmation → `ask` (no rule overrides it);
//! 2. the first rule whose glob matches the tool's name → its action;
//! 3. a read-only tool → `allow`;
//! 4. a destructive tool → `ask`;
//! 5. otherwise → `allow`.

use globset::{Glob, GlobMatcher};
use serde::{Deserialize, Serialize};

use crate::tools::ToolAnnotations;

/// What the policy says about a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PermissionDecision {
    /// Run it.
    Allow,
    /// Do not run it; the model gets an error result.
    Deny,
    /// Pause until a human approves.
    Ask,
}

impl PermissionDecision {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            PermissionDecision::Allow => "allow",
            PermissionDecision::Deny => "deny",
            PermissionDecision::Ask => "ask",
        }
    }
}

/// A bad permission rule.
#[derive(Debug, thiserror::Error)]
#[error("invalid permission pattern {pattern:?}: {message}")]
pub struct PermissionError {
    /// The pattern as given.
    pub pattern: String,
    /// What is wrong with it.
    pub message: String,
}

/// One rule: tools whose names match `pattern` get `action`.
#[derive(Debug, Clone)]
pub struct PermissionRule {
    pattern: String,
    action: PermissionDecision,
    reason: String,
    matcher: GlobMatcher,
}

impl PermissionRule {
    /// A rule; fails if the glob is invalid.
    pub fn new(pattern: &str, action: PermissionDecision) -> Result<Self, PermissionError> {
        let matcher = Glob::new(pattern)
            .map_err(|e| PermissionError {
                pattern: pattern.to_string(),
                message: e.kind().to_string(),
            })?
            .compile_matcher();
        Ok(Self {
            pattern: pattern.to_string(),
            action,
            reason: String::new(),
            matcher,
        })
    }

    /// Adds a reason shown to the model or the approver.
    pub fn with_reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = reason.into();
        self
    }

    /// The glob.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// The action.
    pub fn action(&self) -> PermissionDecision {
        self.action
    }

    /// Whether the rule matches this tool name.
    pub fn matches(&self, tool_name: &str) -> bool {
        self.matcher.is_match(tool_name)
    }
}

/// A policy's verdict with the reason behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The decision.
    pub decision: PermissionDecision,
    /// Why.
    pub reason: String,
}

/// Ordered glob rules plus annotation defaults. `PermissionPolicy::default()` has no rules
/// (the annotation arms alone: read-only allowed, destructive asked).
#[derive(Debug, Clone, Default)]
pub struct PermissionPolicy {
    rules: Vec<PermissionRule>,
}

impl PermissionPolicy {
    /// A policy with these rules (first match wins).
    pub fn new(rules: Vec<PermissionRule>) -> Self {
        Self { rules }
    }

    /// The default, safe policy: no rules, annotation arms only.
    pub fn default_safe() -> Self {
        Self::default()
    }

    /// Adds a rule at the end.
    pub fn rule(
        mut self,
        pattern: &str,
        action: PermissionDecision,
    ) -> Result<Self, PermissionError> {
        self.rules.push(PermissionRule::new(pattern, action)?);
        Ok(self)
    }

    /// The rules, in order.
    pub fn rules(&self) -> &[PermissionRule] {
        &self.rules
    }

    /// Decides about a call to `tool_name` with these annotations.
    pub fn evaluate(&self, tool_name: &str, annotations: &ToolAnnotations) -> Verdict {
        if annotations.requires_confirmation {
            return Verdict {
                decision: PermissionDecision::Ask,
                reason: format!("{tool_name} always requires confirmation"),
            };
        }
        if let Some(rule) = self.rules.iter().find(|r| r.matches(tool_name)) {
            let reason = if rule.reason.is_empty() {
                format!("rule {:?} says {}", rule.pattern, rule.action.as_str())
            } else {
                rule.reason.clone()
            };
            return Verdict {
                decision: rule.action,
                reason,
            };
        }
        if annotations.read_only {
            return Verdict {
                decision: PermissionDecision::Allow,
                reason: format!("{tool_name} is read-only"),
            };
        }
        if annotations.destructive {
            return Verdict {
                decision: PermissionDecision::Ask,
                reason: format!(
                    "the permission policy requires approval for {tool_name} (destructive)"
                ),
            };
        }
        Verdict {
            decision: PermissionDecision::Allow,
            reason: "allowed by default".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ro() -> ToolAnnotations {
        ToolAnnotations {
            read_only: true,
            ..Default::default()
        }
    }
    fn destructive() -> ToolAnnotations {
        ToolAnnotations {
            destructive: true,
            ..Default::default()
        }
    }

    #[test]
    fn reference_vectors_hold() {
        let safe = PermissionPolicy::default_safe();
        assert_eq!(
            safe.evaluate("kaos-learn-wordcount", &ro()).decision,
            PermissionDecision::Allow
        );
        assert_eq!(
            safe.evaluate("kaos-learn-delete", &destructive()).decision,
            PermissionDecision::Ask
        );
        let policy = PermissionPolicy::default()
            .rule("*-delete*", PermissionDecision::Deny)
            .unwrap()
            .rule("kaos-web-*", PermissionDecision::Allow)
            .unwrap();
        let none = ToolAnnotations::default();
        assert_eq!(
            policy.evaluate("kaos-source-delete", &none).decision,
            PermissionDecision::Deny
        );
        assert_eq!(
            policy.evaluate("kaos-web-fetch", &none).decision,
            PermissionDecision::Allow
        );
    }

    #[test]
    fn first_match_wins_and_confirmation_overrides_rules() {
        let policy = PermissionPolicy::default()
            .rule("kaos-*", PermissionDecision::Allow)
            .unwrap()
            .rule("kaos-x", PermissionDecision::Deny)
            .unwrap();
        assert_eq!(
            policy.evaluate("kaos-x", &destructive()).decision,
            PermissionDecision::Allow
        );
        let confirm = ToolAnnotations {
            requires_confirmation: true,
            ..Default::default()
        };
        assert_eq!(
            policy.evaluate("kaos-x", &confirm).decision,
            PermissionDecision::Ask
        );
        assert_eq!(
            PermissionPolicy::default()
                .evaluate("anything", &Default::default())
                .decision,
            PermissionDecision::Allow
        );
    }

    #[test]
    fn a_bad_glob_is_an_error_naming_the_pattern() {
        let err = PermissionRule::new("a[", PermissionDecision::Deny).unwrap_err();
        assert!(err.to_string().contains("a["));
    }
}
