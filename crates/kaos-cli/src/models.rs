//! Model specs the CLI accepts, and the two offline models: `offline` (a deterministic demo
//! model) and `script:FILE.json` (replies read from a file, one per model call).
//!
//! Both stream their answers in chunks like a live model: the offline model in pieces of
//! [`OFFLINE_CHUNK_CHARS`] characters (with `KAOS_OFFLINE_CHUNK_DELAY_MS` milliseconds between
//! pieces, 0 by default), a script reply in pieces of its `chunk_chars` (default
//! [`SCRIPT_CHUNK_CHARS`]) with its `chunk_delay_ms` between them.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use futures::StreamExt;
use kaos_agents::{KaosRuntime, LlmClient, LlmError};
use kaos_llm::{
    Chunking, FunctionClient, LlmRequest, Message, ModelSpec, ProviderResponse, Role,
    chunked_events,
};
use serde::Deserialize;
use serde_json::{Value, json};

/// Builds a model client (deferred so each spec's client is made once).
type MakeClient = Box<dyn FnOnce() -> anyhow::Result<Arc<dyn LlmClient>>>;

/// The built-in offline model's spec.
pub const OFFLINE: &str = "offline";

/// Characters per streamed piece of the offline model.
pub const OFFLINE_CHUNK_CHARS: usize = 12;

/// The environment variable that sets the offline model's pause between pieces (ms).
pub const OFFLINE_CHUNK_DELAY_ENV: &str = "KAOS_OFFLINE_CHUNK_DELAY_MS";

/// Characters per streamed piece of a script reply that does not set `chunk_chars`.
pub const SCRIPT_CHUNK_CHARS: usize = 16;

/// Every model client of one process, by the spec agents name. Agents naming the same
/// script file share one client, so replies are consumed in call order across them.
#[derive(Default)]
pub struct ModelRegistry {
    clients: Mutex<BTreeMap<String, Arc<dyn LlmClient>>>,
    /// `--model-latency-ms`: what each call of the offline and `script:` models waits.
    latency: std::time::Duration,
}

impl std::fmt::Debug for ModelRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let specs: Vec<String> = self
            .clients
            .lock()
            .map(|c| c.keys().cloned().collect())
            .unwrap_or_default();
        f.debug_struct("ModelRegistry")
            .field("specs", &specs)
            .finish()
    }
}

impl ModelRegistry {
    /// A registry whose offline and `script:` models wait `latency` per call.
    pub fn with_latency(latency: std::time::Duration) -> Self {
        Self {
            latency,
            ..Self::default()
        }
    }

    /// Validates `spec` (relative script paths resolve against `base_dir`), creates its
    /// client once, and returns the spec the agent should name.
    pub fn resolve(&self, spec: &str, base_dir: &Path) -> anyhow::Result<String> {
        let spec = spec.trim();
        let (key, make): (String, MakeClient) = if spec == OFFLINE {
            (
                OFFLINE.to_string(),
                Box::new(|| Ok(Arc::new(offline_client()) as Arc<dyn LlmClient>)),
            )
        } else if let Some(file) = spec.strip_prefix("script:") {
            let file = file.trim();
            if file.is_empty() {
                bail!("model spec `script:` needs a file: `script:FILE.json`");
            }
            let path = base_dir.join(file);
            let canonical = std::fs::canonicalize(&path)
                .with_context(|| format!("script file {}", path.display()))?;
            let key = format!("script:{}", canonical.display());
            (
                key,
                Box::new(move || Ok(Arc::new(script_client(&canonical)?) as Arc<dyn LlmClient>)),
            )
        } else {
            match ModelSpec::parse(spec) {
                Ok(ModelSpec::Function { .. }) | Err(_) => {
                    bail!(
                        "unknown model spec {spec:?}. Accepted forms: `offline` (the built-in demo model), \
                             `script:FILE.json` (scripted replies), `anthropic:<model>`, `openai:<model>`, \
                             `openai-compatible:<model>@<base-url>` (e.g. `openai-compatible:llama3@http://127.0.0.1:11434/v1`), \
                             or a bare model name starting with `claude-`, `gpt-`, `chatgpt-`, `o1`, `o3`, `o4`"
                    )
                }
                Ok(_) => {
                    let owned = spec.to_string();
                    (
                        owned.clone(),
                        Box::new(move || {
                            kaos_llm::create_client(&owned)
                                .map_err(|e| anyhow!("model {owned:?}: {e}"))
                        }),
                    )
                }
            }
        };
        let mut clients = self
            .clients
            .lock()
            .map_err(|_| anyhow!("model registry lock poisoned"))?;
        if !clients.contains_key(&key) {
            let mut client = make()?;
            if key == OFFLINE || key.starts_with("script:") {
                client = crate::latency::Delayed::wrap(client, self.latency);
            }
            clients.insert(key.clone(), client);
        }
        Ok(key)
    }

    /// A [`FallbackClient`](kaos_llm::FallbackClient) over already resolved specs, tried in
    /// this order; returns the spec the agent should name (`fallback:a|b|...`).
    pub fn fallback(&self, keys: &[String]) -> anyhow::Result<String> {
        let mut clients = self
            .clients
            .lock()
            .map_err(|_| anyhow!("model registry lock poisoned"))?;
        let chain = keys
            .iter()
            .map(|k| {
                clients
                    .get(k)
                    .cloned()
                    .ok_or_else(|| anyhow!("model {k:?} was not resolved"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let key = format!("fallback:{}", keys.join("|"));
        clients
            .entry(key.clone())
            .or_insert_with(|| Arc::new(kaos_llm::FallbackClient::new(chain)));
        Ok(key)
    }

    /// Registers every client on `runtime`.
    pub fn register_all(&self, mut runtime: KaosRuntime) -> KaosRuntime {
        if let Ok(clients) = self.clients.lock() {
            for (spec, client) in clients.iter() {
                runtime = runtime.with_shared_client(spec.clone(), client.clone());
            }
        }
        runtime
    }
}

// ---------------------------------------------------------------------------------------
// script:FILE.json

/// One scripted reply: a string (the text) or an object.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ScriptReply {
    Text(String),
    Full(FullReply),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FullReply {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    tool_calls: Vec<ScriptToolCall>,
    #[serde(default)]
    usage: Option<ScriptUsage>,
    /// Characters per streamed piece.
    #[serde(default)]
    chunk_chars: Option<usize>,
    /// Pause before each streamed piece after the first, in milliseconds.
    #[serde(default)]
    chunk_delay_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScriptToolCall {
    #[serde(default)]
    id: Option<String>,
    name: String,
    #[serde(default = "empty_object")]
    arguments: Value,
}

fn empty_object() -> Value {
    json!({})
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScriptUsage {
    input_tokens: u64,
    output_tokens: u64,
}

/// Parses a script file; errors name the file and line.
fn load_script(path: &Path) -> anyhow::Result<Vec<(ProviderResponse, Chunking)>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read script file {}", path.display()))?;
    let values: Vec<Value> = serde_json::from_str(&text).map_err(|e| {
        anyhow!(
            "{}:{}:{}: bad script JSON (expected an array of replies): {e}",
            path.display(),
            e.line(),
            e.column()
        )
    })?;
    let mut replies = Vec::with_capacity(values.len());
    for (i, value) in values.into_iter().enumerate() {
        let reply: ScriptReply = serde_json::from_value(value).map_err(|e| {
            anyhow!(
                "{}: reply #{} is neither a string nor an object {{\"text\"?, \"tool_calls\"?, \"usage\"?, \"chunk_chars\"?, \"chunk_delay_ms\"?}}: {e}",
                path.display(),
                i + 1
            )
        })?;
        let default_chunking = Chunking::chars(SCRIPT_CHUNK_CHARS);
        replies.push(match reply {
            ScriptReply::Text(text) => (ProviderResponse::from_text(text), default_chunking),
            ScriptReply::Full(full) => {
                let chunking = Chunking::chars(full.chunk_chars.unwrap_or(SCRIPT_CHUNK_CHARS))
                    .with_delay(Duration::from_millis(full.chunk_delay_ms.unwrap_or(0)));
                let mut r = ProviderResponse::from_text(full.text.unwrap_or_default());
                for (j, call) in full.tool_calls.into_iter().enumerate() {
                    let id = call
                        .id
                        .unwrap_or_else(|| format!("call_{}_{}", i + 1, j + 1));
                    r = r.with_tool_call(id, call.name, call.arguments);
                }
                if let Some(u) = full.usage {
                    r = r.with_usage(u.input_tokens, u.output_tokens);
                }
                (r, chunking)
            }
        });
    }
    Ok(replies)
}

fn script_client(path: &Path) -> anyhow::Result<FunctionClient> {
    let replies = load_script(path)?;
    let total = replies.len();
    let state = Mutex::new((VecDeque::from(replies), 0usize));
    let file = path.display().to_string();
    let next = move || -> Result<(ProviderResponse, Chunking), LlmError> {
        let mut guard = state
            .lock()
            .map_err(|_| LlmError::Function("script lock poisoned".into()))?;
        guard.1 += 1;
        let call = guard.1;
        match guard.0.pop_front() {
            Some((reply, chunking)) => Ok((reply.with_model("script", "script"), chunking)),
            None => Err(LlmError::Function(format!(
                "script {file} has no reply for model call #{call} (it holds {total} replies; \
                 every model call, the intent classifier included, consumes one)"
            ))),
        }
    };
    let client = FunctionClient::streaming(move |_request: LlmRequest| match next() {
        Ok((reply, chunking)) => chunked_events(reply, chunking),
        Err(e) => futures::stream::iter([Err(e)]).boxed(),
    })
    .with_model("script")
    .without_recording();
    Ok(client)
}

// ---------------------------------------------------------------------------------------
// offline

fn offline_client() -> FunctionClient {
    let delay = std::env::var(OFFLINE_CHUNK_DELAY_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    FunctionClient::new(|messages: &[Message], request: &LlmRequest| {
        offline_reply(messages, request)
    })
    .with_model(OFFLINE)
    .with_chunking(Chunking::chars(OFFLINE_CHUNK_CHARS).with_delay(Duration::from_millis(delay)))
    .without_recording()
}

/// The offline demo model: deterministic answers shaped like a real model's for each call
/// the runner makes (intent classification, respond, tool loop).
fn offline_reply(messages: &[Message], request: &LlmRequest) -> ProviderResponse {
    let system = request.system_text().unwrap_or_default();
    let last_user = messages
        .iter()
        .rev()
        .find(|m| m.role == Role::User)
        .map(|m| m.content.as_str())
        .unwrap_or_default();
    let input_tokens = messages
        .iter()
        .map(|m| m.content.len() as u64 / 4)
        .sum::<u64>();
    let reply = if system.contains("Decide how an assistant should handle") {
        let message = field(last_user, "message").unwrap_or(last_user);
        let tools = field(last_user, "available_tools").unwrap_or_default();
        classify(message, tools).to_string()
    } else if !request.tools.is_empty() {
        return react(messages, request, last_user).with_usage(input_tokens, 30);
    } else if system.contains("**response**") {
        let message = field(last_user, "message").unwrap_or(last_user);
        let history = field(last_user, "conversation_history").unwrap_or_default();
        let earlier = history
            .lines()
            .filter(|l| l.starts_with("user: "))
            .count()
            .saturating_sub(1);
        let mut answer = canned_answer(message);
        if earlier > 0 {
            let _ = write!(
                answer,
                " (This session holds {earlier} earlier user message(s); a live model would use them.)"
            );
        }
        json!({ "response": answer }).to_string()
    } else {
        canned_answer(last_user)
    };
    let output_tokens = reply.len() as u64 / 4 + 1;
    ProviderResponse::from_text(reply)
        .with_model("offline", OFFLINE)
        .with_usage(input_tokens, output_tokens)
}

/// The classifier's JSON: `tool_use` when a listed tool is mentioned, else `respond`.
fn classify(message: &str, tools: &str) -> Value {
    let names: Vec<&str> = tools
        .lines()
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .collect();
    match mentioned_tool(message, &names) {
        Some(tool) => json!({
            "intent": "tool_use",
            "confidence": 0.9,
            "reasoning": format!("The message mentions the {tool} tool (offline demo model)."),
        }),
        None => json!({
            "intent": "respond",
            "confidence": 0.9,
            "reasoning": "A plain request that needs no tools (offline demo model).",
        }),
    }
}

/// The first tool whose name (or the words of its name) the message mentions.
fn mentioned_tool<'a>(message: &str, names: &[&'a str]) -> Option<&'a str> {
    let lower = message.to_lowercase();
    names.iter().copied().find(|name| {
        let name = name.to_lowercase();
        lower.contains(&name)
            || name
                .split(['-', '_', '.'])
                .filter(|w| w.len() > 2)
                .any(|w| lower.contains(w))
    })
}

/// One round of the tool loop: call the mentioned tool once, then report its result.
fn react(messages: &[Message], request: &LlmRequest, last_user: &str) -> ProviderResponse {
    if let Some(result) = messages.iter().rev().find(|m| m.role == Role::Tool) {
        let tool = messages
            .iter()
            .flat_map(|m| m.tool_calls.iter())
            .find(|c| Some(&c.id) == result.tool_call_id.as_ref())
            .map_or("the tool", |c| c.name.as_str());
        let verb = if result.is_error {
            "failed with"
        } else {
            "returned"
        };
        return ProviderResponse::from_text(format!(
            "(offline demo model) I called `{tool}` and it {verb}: {}",
            result.content.trim()
        ))
        .with_model("offline", OFFLINE);
    }
    let names: Vec<&str> = request.tools.iter().map(|t| t.name.as_str()).collect();
    let Some(name) = mentioned_tool(last_user, &names) else {
        return ProviderResponse::from_text(canned_answer(last_user))
            .with_model("offline", OFFLINE);
    };
    let schema = request
        .tools
        .iter()
        .find(|t| t.name == name)
        .map(|t| t.parameters.clone())
        .unwrap_or_default();
    ProviderResponse::from_tool_call("offline_call_1", name, arguments_for(&schema, last_user))
        .with_model("offline", OFFLINE)
}

/// Arguments for a tool call: every string property gets the user's message.
fn arguments_for(schema: &Value, message: &str) -> Value {
    let mut args = serde_json::Map::new();
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (name, prop) in props {
            if prop.get("type").and_then(Value::as_str) == Some("string") {
                args.insert(name.clone(), Value::String(message.to_string()));
            }
        }
    }
    Value::Object(args)
}

/// The demo answer: says what it is and what a live model would do.
fn canned_answer(message: &str) -> String {
    let message = message.trim();
    let lower = message.to_lowercase();
    let would = if let Some(rest) = lower.strip_prefix("summarize") {
        format!(
            "read{} and reply with a short summary of its key points",
            rest.trim_end_matches(['.', '!', '?'])
        )
    } else if message.ends_with('?') {
        "answer your question".to_string()
    } else {
        "carry out your request".to_string()
    };
    format!(
        "This is kaos's offline demo model, so no real model read your request (\"{message}\"). \
         A live model would {would}. Try `--model anthropic:claude-haiku-4-5` with ANTHROPIC_API_KEY set, \
         or `--model script:FILE.json` for scripted replies. The span tree on stderr shows what this turn did."
    )
}

/// The value of `**name** (description): value` in a rendered structured-call input.
fn field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let marker = format!("**{name}**");
    let start = text.find(&marker)? + marker.len();
    let mut rest = &text[start..];
    if let Some(after) = rest.strip_prefix(" (") {
        let mut depth = 1usize;
        let mut end = None;
        for (i, c) in after.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        end = Some(i + 1);
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &after[end?..];
    }
    let rest = rest.strip_prefix(':')?;
    let rest = rest.strip_prefix([' ', '\n']).unwrap_or(rest);
    let end = rest.find("\n\n**").unwrap_or(rest.len());
    Some(rest[..end].trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_reads_rendered_inputs() {
        let text = "**message** (The user's latest message.): Summarize the lease.\n\n**available_tools** (Tools, one per line (may be empty).):\nwc: counts\nls: lists";
        assert_eq!(field(text, "message"), Some("Summarize the lease."));
        assert_eq!(
            field(text, "available_tools"),
            Some("wc: counts\nls: lists")
        );
    }

    #[test]
    fn classify_routes_tool_mentions() {
        assert_eq!(classify("Summarize the lease.", "")["intent"], "respond");
        assert_eq!(
            classify("run the wordcount", "wordcount: counts")["intent"],
            "tool_use"
        );
    }
}
