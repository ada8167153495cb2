//! Redaction at the library's sinks: OTLP content capture in `redacted` mode as a local
//! collector receives it, and a 1 MB tool result with a secret at its very end.

use std::borrow::Cow;

use kaos_agents::redact::{RedactionStats, Redactor};

const GITLAB: &str = "glpat-Canary1234567890abcd";
#[cfg(feature = "otel")]
const PASSWORD: &str = "hunter2CanaryPw";
#[cfg(feature = "otel")]
const ANTHROPIC: &str = "sk-ant-api03-CanaryKey0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJ-AAAA";

#[cfg(feature = "otel")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_content_capture_is_redacted_on_the_wire() {
    use std::sync::Arc;
    use std::time::Duration;

    use kaos_agents::otel::{CaptureContent, Telemetry};
    use kaos_agents::{Agent, FnTool, KaosRuntime, Runner};
    use kaos_llm::FunctionClient;
    use opentelemetry_proto::tonic::common::v1::any_value;
    use serde_json::json;

    use crate::otel_export::{receiver, wire_spans};
    use crate::util::routing_model;

    #[derive(serde::Deserialize, schemars::JsonSchema)]
    struct Args {
        /// The text.
        text: String,
    }
    let tool = FnTool::new("echo", "Echoes its text.", |a: Args| async move {
        format!("echoed {} and DB_PASSWORD={PASSWORD}", a.text)
    })
    .read_only();
    let args = json!({"text": format!("token {GITLAB}"), "api_key": ANTHROPIC});
    let runtime = KaosRuntime::test_mode()
        .with_client("fake", FunctionClient::new(routing_model("echo", args)))
        .with_tool(tool);
    let agent = Agent::builder()
        .name("capture")
        .model("fake")
        .build()
        .unwrap();
    let (url, rx) = receiver();
    let telemetry = Telemetry::builder()
        .traces_endpoint(url)
        .service_name("kaos-redact-test")
        .build()
        .unwrap();
    let hook = Arc::new(
        telemetry
            .hook()
            .with_capture_content(CaptureContent::Redacted),
    );
    let runner = Runner::new(agent, runtime).with_shared_hook(hook);
    runner
        .turn(format!("use the tool; key {ANTHROPIC}"), "capture")
        .await
        .unwrap();
    let stats = tokio::task::spawn_blocking(move || {
        telemetry.shutdown_with_deadline(Duration::from_secs(30))
    })
    .await
    .unwrap();
    assert_eq!(stats.failed, 0);
    let spans = wire_spans(&rx.try_iter().collect::<Vec<_>>());
    let strings: Vec<(String, String)> = spans
        .iter()
        .flat_map(|s| &s.attributes)
        .filter_map(|kv| match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(v) => Some((kv.key.clone(), v.clone())),
            _ => None,
        })
        .collect();
    let captured: Vec<&(String, String)> = strings
        .iter()
        .filter(|(k, _)| k == "gen_ai.tool.call.arguments" || k == "gen_ai.tool.call.result")
        .collect();
    assert_eq!(captured.len(), 2, "{strings:?}");
    for (key, value) in &strings {
        assert!(!value.contains("Canary"), "{key} = {value}");
    }
    let all: String = captured.iter().map(|(_, v)| v.as_str()).collect();
    assert!(all.contains("[REDACTED:gitlab_token]"), "{all}");
    assert!(all.contains("[REDACTED:sensitive_key]"), "{all}");
    assert!(all.contains("[REDACTED:password]"), "{all}");
}

#[test]
fn a_secret_at_the_end_of_a_1_mb_tool_result_is_found() {
    let mut result = String::with_capacity(1 << 20);
    while result.len() < (1 << 20) {
        result.push_str("row 42: the tenant paid 1850.25 on 2026-01-01; status ok, id 3f0c9a1e-5b7d-4c2e-9f1a-0b6d8e2c4a71\n");
    }
    let clean = result.clone();
    result.push_str("GITLAB_TOKEN=");
    result.push_str(GITLAB);
    // Found, whole text kept.
    let whole = Redactor::default().with_max_string_len(usize::MAX);
    let out = whole.redact_str(&result);
    assert!(
        out.ends_with("GITLAB_TOKEN=[REDACTED:gitlab_token]"),
        "{}",
        &out[out.len() - 80..]
    );
    assert_eq!(
        out.len(),
        clean.len() + "GITLAB_TOKEN=[REDACTED:gitlab_token]".len()
    );
    // The default redactor also truncates: the secret is counted before the cut.
    let mut stats = RedactionStats::default();
    let out = Redactor::default().redact_str_counted(&result, &mut stats);
    assert_eq!(stats.get("gitlab_token"), 1);
    assert!(!out.contains("Canary"));
    // The clean megabyte comes back borrowed (the fast path; its speed is in kaos-bench).
    assert!(matches!(whole.redact_str(&clean), Cow::Borrowed(_)));
}
