//! MCP servers as tool sources: listing, annotations, results, errors, crash and restart,
//! timeouts, list_changed, HTTP.

use kaos_agents::{McpServerConfig, PermissionDecision, Tool, TurnOutcome};
use kaos_mcp::McpToolset;

use crate::support::{CallLog, runner};

fn find(toolset: &McpToolset, name: &str) -> std::sync::Arc<dyn Tool> {
    toolset
        .tools()
        .into_iter()
        .find(|t| t.name() == name)
        .unwrap_or_else(|| panic!("no tool {name}"))
}

#[tokio::test]
async fn stdio_tools_are_listed_with_annotations_and_called() {
    let log = CallLog::new();
    let toolset = McpToolset::connect(vec![log.stdio("srv")]).await.unwrap();
    let names: Vec<String> = toolset
        .tools()
        .iter()
        .map(|t| t.name().to_string())
        .collect();
    assert!(names.contains(&"srv.echo".to_string()), "{names:?}");
    assert!(!names.contains(&"srv.late".to_string()));
    let echo = find(&toolset, "srv.echo");
    assert!(echo.annotations().read_only);
    assert_eq!(echo.description(), "Echoes its text.");
    assert_eq!(echo.parameters()["properties"]["text"]["type"], "string");
    let delete = find(&toolset, "srv.delete_file");
    assert!(delete.annotations().destructive && !delete.annotations().read_only);
    assert_eq!(toolset.starts("srv"), Some(1));

    let r = runner(&toolset, &[])
        .turn(r#"call srv.echo {"text":"hi there"}"#, "s1")
        .await
        .unwrap();
    assert!(r.text.contains("echo: hi there"), "{}", r.text);
    // Structured content reaches the model too.
    assert!(r.text.contains(r#"{"echo":"hi there"}"#), "{}", r.text);
    assert!(!r.tool_calls[0].is_error);
    // Reused across turns: still one server process.
    runner(&toolset, &[])
        .turn(r#"call srv.echo {"text":"again"}"#, "s1")
        .await
        .unwrap();
    assert_eq!(toolset.starts("srv"), Some(1));
    assert_eq!(log.calls().len(), 2);
}

#[tokio::test]
async fn annotations_feed_permissions_unless_a_rule_says_otherwise() {
    let log = CallLog::new();
    let toolset = McpToolset::connect(vec![log.stdio("srv")]).await.unwrap();
    // destructiveHint → ask: the turn pauses and the server never sees the call.
    let r = runner(&toolset, &[])
        .turn(r#"call srv.delete_file {"path":"/tmp/x"}"#, "s1")
        .await
        .unwrap();
    assert_eq!(r.outcome, TurnOutcome::Paused);
    assert_eq!(r.pending_approval.unwrap().tool_name, "srv.delete_file");
    assert!(log.calls().is_empty());
    // A rule wins over the hint.
    let r = runner(&toolset, &[("srv.delete_*", PermissionDecision::Allow)])
        .turn(r#"call srv.delete_file {"path":"/tmp/x"}"#, "s2")
        .await
        .unwrap();
    assert!(r.text.contains("deleted /tmp/x"), "{}", r.text);
    // readOnlyHint → allow, but a deny rule still denies.
    let r = runner(&toolset, &[("srv.echo", PermissionDecision::Deny)])
        .turn(r#"call srv.echo {"text":"x"}"#, "s3")
        .await
        .unwrap();
    assert!(r.tool_calls[0].is_error);
    assert!(r.text.contains("denied"), "{}", r.text);
    assert_eq!(log.calls().len(), 1);
}

#[tokio::test]
async fn is_error_json_rpc_errors_and_images_become_tool_results() {
    let log = CallLog::new();
    let toolset = McpToolset::connect(vec![log.stdio("srv")]).await.unwrap();
    let run = runner(&toolset, &[]);
    let r = run.turn("call srv.fail {}", "s1").await.unwrap();
    assert!(r.tool_calls[0].is_error);
    assert!(r.text.contains("the disk is on fire"), "{}", r.text);
    assert_eq!(r.outcome, TurnOutcome::Completed, "the loop continues");

    let r = run.turn("call srv.reject {}", "s1").await.unwrap();
    assert!(r.tool_calls[0].is_error);
    assert!(
        r.text
            .contains("rejected tools/call reject: reject always says no (JSON-RPC error -32602)"),
        "{}",
        r.text
    );

    let r = run.turn("call srv.image {}", "s1").await.unwrap();
    assert!(!r.tool_calls[0].is_error);
    assert!(r.text.contains("here is the picture"), "{}", r.text);
    assert!(r.text.contains("[image image/png, ~"), "{}", r.text);
    assert!(r.text.contains("sha256:"), "{}", r.text);
    assert!(
        !r.text.contains("iVBOR"),
        "images are references, not inlined: {}",
        r.text
    );
}

#[tokio::test]
async fn a_server_that_crashes_mid_call_is_restarted_on_next_use() {
    let log = CallLog::new();
    let toolset = McpToolset::connect(vec![log.stdio("srv")]).await.unwrap();
    let run = runner(&toolset, &[]);
    let r = run.turn("call srv.crash {}", "s1").await.unwrap();
    assert!(r.tool_calls[0].is_error);
    assert!(
        r.text
            .contains("MCP server srv exited during tools/call crash"),
        "{}",
        r.text
    );
    assert!(r.text.contains("restarted on its next use"), "{}", r.text);
    assert_eq!(r.outcome, TurnOutcome::Completed);
    let r = run
        .turn(r#"call srv.echo {"text":"back"}"#, "s1")
        .await
        .unwrap();
    assert!(!r.tool_calls[0].is_error, "{}", r.text);
    assert!(r.text.contains("echo: back"), "{}", r.text);
    assert_eq!(toolset.starts("srv"), Some(2));
}

#[tokio::test]
async fn a_server_that_never_answers_times_out_and_stays_usable() {
    let log = CallLog::new();
    let toolset = McpToolset::connect(vec![log.stdio("srv").timeout_ms(300)])
        .await
        .unwrap();
    let run = runner(&toolset, &[]);
    let r = run.turn("call srv.hang {}", "s1").await.unwrap();
    assert!(r.tool_calls[0].is_error);
    assert!(
        r.text
            .contains("did not answer tools/call hang within 300 ms"),
        "{}",
        r.text
    );
    let r = run
        .turn(r#"call srv.echo {"text":"ok"}"#, "s1")
        .await
        .unwrap();
    assert!(r.text.contains("echo: ok"), "{}", r.text);
    assert_eq!(toolset.starts("srv"), Some(1));
}

#[tokio::test]
async fn list_changed_refreshes_the_tools_of_later_turns() {
    let log = CallLog::new();
    let toolset = McpToolset::connect(vec![log.stdio("srv")]).await.unwrap();
    let mut changes = toolset.subscribe();
    changes.borrow_and_update();
    let run = runner(&toolset, &[]);
    let r = run.turn("call srv.late {}", "s1").await.unwrap();
    assert!(r.text.contains("There is no tool named"), "{}", r.text);
    run.turn("call srv.add_tool {}", "s1").await.unwrap();
    // Wait for the refresh the notification triggers.
    while !toolset.tools().iter().any(|t| t.name() == "srv.late") {
        changes.changed().await.unwrap();
    }
    let r = run.turn("call srv.late {}", "s1").await.unwrap();
    assert!(!r.tool_calls[0].is_error, "{}", r.text);
    assert!(r.text.contains("late tool ran"), "{}", r.text);
}

#[tokio::test]
async fn an_allow_list_and_a_prefix_shape_the_tool_names() {
    let log = CallLog::new();
    let toolset = McpToolset::connect(vec![log.stdio("files").allow("ec*").prefix("files_")])
        .await
        .unwrap();
    let names: Vec<String> = toolset
        .tools()
        .iter()
        .map(|t| t.name().to_string())
        .collect();
    assert_eq!(names, ["files_echo"]);
}

#[tokio::test]
async fn bad_entries_and_unreachable_servers_are_errors_naming_the_server() {
    let err = McpToolset::connect(vec![
        McpServerConfig::http("web", "http://127.0.0.1:9/mcp")
            .header("Authorization", "Bearer ${KAOS_TEST_SURELY_UNSET}"),
    ])
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("web") && err.contains("KAOS_TEST_SURELY_UNSET"),
        "{err}"
    );
    let err = McpToolset::connect(vec![McpServerConfig::stdio(
        "gone",
        ["/nonexistent/kaos-mcp-server"],
    )])
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("MCP server gone: cannot start"), "{err}");
    let err = McpToolset::connect(vec![McpServerConfig::default()])
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("name"), "{err}");
}

#[tokio::test]
async fn streamable_http_servers_work_the_same() {
    let log = CallLog::new();
    let (_child, url) = log.http().await;
    let toolset = McpToolset::connect(vec![McpServerConfig::http("web", &url)])
        .await
        .unwrap();
    assert!(find(&toolset, "web.echo").annotations().read_only);
    let run = runner(&toolset, &[]);
    let r = run
        .turn(r#"call web.echo {"text":"over http"}"#, "s1")
        .await
        .unwrap();
    assert!(r.text.contains("echo: over http"), "{}", r.text);
    let r = run.turn("call web.fail {}", "s1").await.unwrap();
    assert!(r.tool_calls[0].is_error);
    run.turn("call web.add_tool {}", "s1").await.unwrap();
    let mut changes = toolset.subscribe();
    while !toolset.tools().iter().any(|t| t.name() == "web.late") {
        changes.changed().await.unwrap();
    }
}
