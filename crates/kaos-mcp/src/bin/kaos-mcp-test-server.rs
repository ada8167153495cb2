//! A small MCP server built on rmcp's server side, for kaos-mcp's tests and for trying MCP
//! tools offline: `kaos-mcp-test-server` speaks stdio; `kaos-mcp-test-server --http
//! 127.0.0.1:0` serves streamable HTTP at `/mcp` and prints `listening on ADDR`.
//!
//! Tools: `echo` (read-only), `delete_file` (destructive), `fail` (`isError`), `image`,
//! `reject` (a JSON-RPC error), `crash` (the process exits mid-call), `hang` (never
//! answers), `add_tool` (adds `late` and sends `tools/list_changed`). Every call appends
//! `{"tool", "traceparent", "tracestate", "request_id"}` as a JSON line to the file named by
//! `KAOS_MCP_TEST_LOG`, so tests can read what the server received.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ErrorData,
    Implementation, ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig,
    Tool, ToolAnnotations,
};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ServerHandler, ServiceExt};
use serde_json::{Map, Value, json};

#[derive(Clone, Default)]
struct TestServer {
    late: Arc<AtomicBool>,
}

fn schema(props: Value) -> Arc<Map<String, Value>> {
    let Value::Object(m) = json!({"type": "object", "properties": props}) else {
        unreachable!()
    };
    Arc::new(m)
}

fn tool(name: &'static str, description: &'static str, props: Value) -> Tool {
    Tool::new(name, description, schema(props))
}

impl TestServer {
    fn tools(&self) -> Vec<Tool> {
        let mut tools = vec![
            tool(
                "echo",
                "Echoes its text.",
                json!({"text": {"type": "string"}}),
            )
            .with_annotations(ToolAnnotations::new().read_only(true)),
            tool(
                "delete_file",
                "Deletes a file.",
                json!({"path": {"type": "string"}}),
            )
            .with_annotations(ToolAnnotations::new().read_only(false).destructive(true)),
            tool("fail", "Always reports an error.", json!({})),
            tool("image", "Returns a tiny PNG.", json!({})),
            tool("reject", "Answers with a JSON-RPC error.", json!({})),
            tool("crash", "Exits the server mid-call.", json!({})),
            tool("hang", "Never answers.", json!({})),
            tool(
                "add_tool",
                "Adds the tool `late` and announces it.",
                json!({}),
            ),
        ];
        if self.late.load(Ordering::SeqCst) {
            tools.push(tool("late", "Added at run time.", json!({})));
        }
        tools
    }
}

fn log_call(name: &str, request: &CallToolRequestParams, context: &RequestContext<RoleServer>) {
    let Ok(path) = std::env::var("KAOS_MCP_TEST_LOG") else {
        return;
    };
    let meta = request.meta.as_ref();
    let tp = meta
        .and_then(|m| m.get_traceparent())
        .or_else(|| context.meta.get_traceparent());
    let ts = meta
        .and_then(|m| m.get_tracestate())
        .or_else(|| context.meta.get_tracestate());
    let line = json!({
        "tool": name,
        "traceparent": tp,
        "tracestate": ts,
        "request_id": context.id.to_string(),
        "arguments": request.arguments,
    });
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(f, "{line}");
    }
}

impl ServerHandler for TestServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tool_list_changed()
                .build(),
        )
        .with_server_info(Implementation::new("kaos-mcp-test-server", "1.0.0"))
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(self.tools()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let name = request.name.to_string();
        log_call(&name, &request, &context);
        let args = request.arguments.clone().unwrap_or_default();
        let result = match name.as_str() {
            "echo" => {
                let text = args.get("text").and_then(Value::as_str).unwrap_or("");
                let mut r =
                    CallToolResult::success(vec![ContentBlock::text(format!("echo: {text}"))]);
                r.structured_content = Some(json!({"echo": text}));
                r
            }
            "delete_file" => {
                let path = args.get("path").and_then(Value::as_str).unwrap_or("");
                CallToolResult::success(vec![ContentBlock::text(format!("deleted {path}"))])
            }
            "fail" => CallToolResult::error(vec![ContentBlock::text("the disk is on fire")]),
            "image" => CallToolResult::success(vec![
                ContentBlock::text("here is the picture"),
                ContentBlock::image(
                    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==",
                    "image/png",
                ),
            ]),
            "reject" => {
                return Err(ErrorData::invalid_params("reject always says no", None));
            }
            "crash" => std::process::exit(3),
            "hang" => {
                context.ct.cancelled().await;
                CallToolResult::error(vec![ContentBlock::text("cancelled")])
            }
            "add_tool" => {
                self.late.store(true, Ordering::SeqCst);
                let _ = context.peer.notify_tool_list_changed().await;
                CallToolResult::success(vec![ContentBlock::text("added late")])
            }
            "late" => CallToolResult::success(vec![ContentBlock::text("late tool ran")]),
            other => {
                return Err(ErrorData::invalid_params(format!("no tool {other}"), None));
            }
        };
        Ok(result.into())
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--http") {
        let addr = args.get(i + 1).map(String::as_str).unwrap_or("127.0.0.1:0");
        let server = TestServer::default();
        let service = StreamableHttpService::new(
            move || Ok(server.clone()),
            LocalSessionManager::default().into(),
            StreamableHttpServerConfig::default(),
        );
        let router = axum::Router::new().nest_service("/mcp", service);
        let listener = tokio::net::TcpListener::bind(addr).await?;
        println!("listening on {}", listener.local_addr()?);
        std::io::stdout().flush()?;
        axum::serve(listener, router).await?;
        return Ok(());
    }
    let running = TestServer::default()
        .serve(rmcp::transport::stdio())
        .await?;
    running.waiting().await?;
    Ok(())
}
