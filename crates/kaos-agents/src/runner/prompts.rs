//! The typed signatures a turn uses (intent classification, respond) and the keyword
//! heuristic that stands in when the classifier's output is unusable.

use std::sync::LazyLock;

use kaos_llm::structured::Signature;
use serde::Deserialize;
use serde_json::json;

use crate::events::Intent;

/// What the classifier answers.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
pub(crate) struct IntentOutput {
    /// The category of the request: respond, tool_use, research, plan or clarify.
    pub intent: Intent,
    /// How sure you are, from 0.0 to 1.0.
    #[serde(default = "default_confidence")]
    pub confidence: f64,
    /// One short sentence on why this category fits.
    #[serde(default)]
    pub reasoning: String,
}

fn default_confidence() -> f64 {
    0.5
}

/// What the respond call answers.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
pub(crate) struct RespondOutput {
    /// Your reply to the user.
    pub response: String,
}

const CLASSIFY_INSTRUCTIONS: &str = "\
Decide how an assistant should handle the user's latest message. Pick exactly one category:
- respond: small talk, questions about this conversation itself, or anything answerable from general knowledge without tools.
- tool_use: the request needs one of the available tools (looking something up, reading or changing data, current facts).
- research: a question about the content of attached documents.
- plan: a task with several dependent steps that should be worked through in order.
- clarify: the request is too ambiguous to act on; a question back is needed.
When tools are listed and one plausibly helps, prefer tool_use. When no tools are listed, prefer respond unless the task is clearly multi-step.";

/// The intent classifier, built once per process.
pub(crate) static CLASSIFIER: LazyLock<Signature<IntentOutput>> = LazyLock::new(|| {
    Signature::new(CLASSIFY_INSTRUCTIONS)
        .input("message", "The user's latest message.")
        .input("conversation_context", "Recent conversation, oldest first.")
        .input("available_tools", "Tools the assistant can call, one per line (may be empty).")
        .example(
            &[("message", "hi there!"), ("conversation_context", "(no prior messages)"), ("available_tools", "")],
            json!({"intent": "respond", "confidence": 0.95, "reasoning": "A greeting needs no tools."}),
        )
        .example(
            &[
                ("message", "How many words are in 'the quick brown fox'?"),
                ("conversation_context", "(no prior messages)"),
                ("available_tools", "wordcount: Counts the words in a text."),
            ],
            json!({"intent": "tool_use", "confidence": 0.9, "reasoning": "The wordcount tool answers this directly."}),
        )
        .example(
            &[
                ("message", "First collect the filings, then compare them and draft a memo."),
                ("conversation_context", "(no prior messages)"),
                ("available_tools", "search: Searches filings."),
            ],
            json!({"intent": "plan", "confidence": 0.85, "reasoning": "Several dependent steps."}),
        )
        .example(
            &[("message", "do the thing"), ("conversation_context", "(no prior messages)"), ("available_tools", "")],
            json!({"intent": "clarify", "confidence": 0.8, "reasoning": "It is unclear what is wanted."}),
        )
});

/// The respond call for an agent's instructions. Plain text is accepted when the model
/// ignores the JSON format (no corrective retry is spent on prose); an answer that attempts
/// JSON and breaks it gets one corrective retry, announced in the stream.
pub(crate) fn respond_signature(instructions: &str) -> Signature<RespondOutput> {
    Signature::new(instructions)
        .input("message", "The user's message.")
        .input(
            "conversation_history",
            "The conversation so far, oldest first.",
        )
        .max_retries(1)
        .plain_text_fallback(true)
}

/// The note added to a clarify intent's respond call.
pub(crate) const CLARIFY_NOTE: &str =
    "The request is ambiguous: ask one short clarifying question instead of guessing.";

/// The discipline appended to an agent's instructions in the tool loop.
pub(crate) const REACT_NOTE: &str = "\
You can call tools. Call a tool when it helps answer; read each result before deciding the next step. \
If a tool fails or is denied, say so instead of inventing its result. \
When you have what you need, answer the user in plain text without calling more tools.";

/// The keyword heuristic used when the classifier's output cannot be used: returns the
/// intent, a confidence and a reasoning ending in "(heuristic)".
pub fn heuristic_intent(message: &str, has_documents: bool) -> (Intent, f64, String) {
    let lower = message.to_lowercase();
    let words: std::collections::HashSet<&str> = lower
        .split(|c: char| !c.is_alphanumeric() && c != '\'')
        .filter(|w| !w.is_empty())
        .collect();
    let any = |set: &[&str]| set.iter().any(|w| words.contains(w));
    if words.len() <= 3 && any(&["hello", "hi", "thanks", "ok", "yes", "no", "bye"]) {
        return (
            Intent::Respond,
            0.8,
            "short conversational message (heuristic)".into(),
        );
    }
    if has_documents && any(&["what", "how", "why", "when", "where", "who"]) {
        return (
            Intent::Research,
            0.6,
            "question while documents are attached (heuristic)".into(),
        );
    }
    if ["then", "after that", "first", "step by step", "steps to"]
        .iter()
        .any(|p| lower.contains(p))
    {
        return (
            Intent::Plan,
            0.5,
            "the message describes several steps (heuristic)".into(),
        );
    }
    if any(&[
        "extract", "search", "find", "get", "fetch", "download", "parse", "analyze",
    ]) {
        return (
            Intent::ToolUse,
            0.6,
            "the message asks for an action a tool performs (heuristic)".into(),
        );
    }
    (
        Intent::ToolUse,
        0.4,
        "no clear signal; defaulting to tools (heuristic)".into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heuristic_matches_the_reference_rules() {
        assert_eq!(heuristic_intent("hi", false).0, Intent::Respond);
        assert_eq!(heuristic_intent("what is in it", true).0, Intent::Research);
        assert_eq!(
            heuristic_intent("collect them and then compare", false),
            (
                Intent::Plan,
                0.5,
                "the message describes several steps (heuristic)".into()
            )
        );
        assert_eq!(heuristic_intent("search the web for rust", false).1, 0.6);
        assert_eq!(heuristic_intent("lorem ipsum dolor sit", false).1, 0.4);
    }

    #[test]
    fn classifier_prompt_names_its_output_fields() {
        let prompt = CLASSIFIER.system_prompt().to_lowercase();
        assert!(
            prompt.contains("intent")
                && prompt.contains("reasoning")
                && prompt.contains("confidence")
        );
        let respond = respond_signature("You are a helpful assistant.");
        assert!(respond.system_prompt().contains("response"));
        assert!(!respond.system_prompt().to_lowercase().contains("reasoning"));
    }
}
