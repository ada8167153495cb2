//! Model specs: which provider and model a string such as `anthropic:claude-haiku-4-5`
//! names.
//!
//! Accepted forms:
//! - `anthropic:<model>`, `openai:<model>`, `openai-compatible:<model>@<base-url>`,
//!   `function:<name>`;
//! - a bare model name whose provider is inferred: `claude-*` → anthropic; `gpt-*`,
//!   `chatgpt-*`, `o1*`, `o3*`, `o4*` → openai.

use std::fmt;
use std::str::FromStr;

use crate::error::LlmError;

/// The accepted forms, quoted in every [`LlmError::InvalidModelSpec`].
pub const ACCEPTED_FORMS: &str = "expected one of `anthropic:<model>`, `openai:<model>`, \
`openai-compatible:<model>@<base-url>` (e.g. `openai-compatible:llama3@http://127.0.0.1:11434/v1`), \
`function:<name>`, or a bare model name starting with `claude-` (anthropic) or \
`gpt-`, `chatgpt-`, `o1`, `o3`, `o4` (openai)";

/// A parsed model spec. `Display` gives back the canonical `provider:model` form.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ModelSpec {
    /// An Anthropic model (`anthropic:claude-haiku-4-5`).
    Anthropic {
        /// The model name.
        model: String,
    },
    /// An OpenAI model (`openai:gpt-4o-mini`).
    OpenAi {
        /// The model name.
        model: String,
    },
    /// A model on an OpenAI-compatible server (`openai-compatible:llama3@http://host/v1`).
    OpenAiCompatible {
        /// The model name.
        model: String,
        /// The server's base URL (with `/v1`).
        base_url: String,
    },
    /// A function model registered on the runtime (`function:<name>`).
    Function {
        /// The registered name.
        name: String,
    },
}

impl ModelSpec {
    /// Parses a spec (surrounding whitespace ignored).
    pub fn parse(spec: &str) -> Result<Self, LlmError> {
        let trimmed = spec.trim();
        let invalid = |why: &str| LlmError::InvalidModelSpec {
            spec: spec.to_owned(),
            message: format!("{why}; {ACCEPTED_FORMS}"),
        };
        if trimmed.is_empty() {
            return Err(invalid("the spec is empty"));
        }
        let Some((provider, rest)) = trimmed.split_once(':') else {
            return infer(trimmed)
                .ok_or_else(|| invalid("cannot infer the provider from this model name"));
        };
        let rest = rest.trim();
        if rest.is_empty() {
            return Err(invalid("the model name is missing"));
        }
        match provider.trim().to_ascii_lowercase().as_str() {
            "anthropic" => Ok(ModelSpec::Anthropic {
                model: rest.to_owned(),
            }),
            "openai" => Ok(ModelSpec::OpenAi {
                model: rest.to_owned(),
            }),
            "openai-compatible" => {
                let Some((model, base_url)) = rest.split_once('@') else {
                    return Err(invalid("openai-compatible specs need `<model>@<base-url>`"));
                };
                let (model, base_url) = (model.trim(), base_url.trim());
                if model.is_empty() {
                    return Err(invalid("the model name is missing"));
                }
                let Some(after_scheme) = base_url
                    .strip_prefix("http://")
                    .or_else(|| base_url.strip_prefix("https://"))
                else {
                    return Err(invalid("the base URL must start with http:// or https://"));
                };
                // `http://` alone (or `http:///v1`) names no server; trimming its slashes would
                // also leave `http:`, which no longer parses.
                if after_scheme.split('/').next().is_none_or(str::is_empty) {
                    return Err(invalid(&format!(
                        "the base URL {base_url:?} has no host after its scheme"
                    )));
                }
                if base_url.contains(char::is_whitespace) {
                    return Err(invalid(&format!(
                        "the base URL {base_url:?} contains whitespace"
                    )));
                }
                Ok(ModelSpec::OpenAiCompatible {
                    model: model.to_owned(),
                    base_url: base_url.trim_end_matches('/').to_owned(),
                })
            }
            "function" => Ok(ModelSpec::Function {
                name: rest.to_owned(),
            }),
            _ => Err(invalid(&format!("unknown provider {provider:?}"))),
        }
    }

    /// The provider name (`anthropic`, `openai`, `openai-compatible`, `function`).
    pub fn provider(&self) -> &str {
        match self {
            ModelSpec::Anthropic { .. } => "anthropic",
            ModelSpec::OpenAi { .. } => "openai",
            ModelSpec::OpenAiCompatible { .. } => "openai-compatible",
            ModelSpec::Function { .. } => "function",
        }
    }

    /// The model name (for `function:` specs, the registered name).
    pub fn model(&self) -> &str {
        match self {
            ModelSpec::Anthropic { model }
            | ModelSpec::OpenAi { model }
            | ModelSpec::OpenAiCompatible { model, .. } => model,
            ModelSpec::Function { name } => name,
        }
    }
}

/// The provider of a bare model name.
fn infer(model: &str) -> Option<ModelSpec> {
    let lower = model.to_ascii_lowercase();
    let model = model.to_owned();
    if lower.starts_with("claude-") {
        return Some(ModelSpec::Anthropic { model });
    }
    let openai = ["gpt-", "chatgpt-", "o1", "o3", "o4"];
    openai
        .iter()
        .any(|prefix| lower.starts_with(prefix))
        .then_some(ModelSpec::OpenAi { model })
}

impl fmt::Display for ModelSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelSpec::OpenAiCompatible { model, base_url } => {
                write!(f, "openai-compatible:{model}@{base_url}")
            }
            other => write!(f, "{}:{}", other.provider(), other.model()),
        }
    }
}

impl FromStr for ModelSpec {
    type Err = LlmError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}
