//! [`McpTool`]: one tool of an MCP server as a kaos [`Tool`], and the conversion of
//! `tools/call` results into [`ToolOutput`]s.

use std::sync::{Arc, Weak};

use kaos_agents::{Tool, ToolAnnotations, ToolContext, ToolOutput};
use rmcp::model::{CallToolResult, ContentBlock, RequestMetaObject, ResourceContents};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::link::ServerLink;
use crate::toolset::Inner;
use crate::trace::inject;

/// A tool of an MCP server, named `{server}.{tool}` (or with the server's configured
/// prefix). Calls go to the server's shared connection.
pub struct McpTool {
    name: String,
    remote: String,
    description: String,
    parameters: Value,
    annotations: ToolAnnotations,
    link: Arc<ServerLink>,
    set: Weak<Inner>,
}

impl std::fmt::Debug for McpTool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpTool")
            .field("name", &self.name)
            .field("server", &self.link.config.name)
            .field("annotations", &self.annotations)
            .finish_non_exhaustive()
    }
}

/// MCP hints → kaos annotations. Only hints the server states count: `readOnlyHint: true`
/// → read-only (allowed unless a rule says otherwise); `destructiveHint: true` on a tool
/// that is not read-only → destructive (the default policy asks).
pub fn annotations_of(tool: &rmcp::model::Tool) -> ToolAnnotations {
    let Some(a) = &tool.annotations else {
        return ToolAnnotations::default();
    };
    let read_only = a.read_only_hint == Some(true);
    ToolAnnotations {
        read_only,
        destructive: !read_only && a.destructive_hint == Some(true),
        idempotent: read_only || a.idempotent_hint == Some(true),
        open_world: a.open_world_hint == Some(true),
        requires_confirmation: false,
    }
}

impl McpTool {
    pub(crate) fn new(link: Arc<ServerLink>, tool: &rmcp::model::Tool, set: Weak<Inner>) -> Self {
        let mut parameters = Value::Object((*tool.input_schema).clone());
        if let Some(obj) = parameters.as_object_mut() {
            obj.remove("$schema");
            obj.entry("type")
                .or_insert_with(|| Value::String("object".into()));
        }
        Self {
            name: link.config.tool_name(&tool.name),
            remote: tool.name.to_string(),
            description: tool
                .description
                .as_deref()
                .or(tool.title.as_deref())
                .unwrap_or("")
                .to_string(),
            parameters,
            annotations: annotations_of(tool),
            link,
            set,
        }
    }

    /// The server's own name for the tool.
    pub fn remote_name(&self) -> &str {
        &self.remote
    }

    /// The server's name.
    pub fn server(&self) -> &str {
        &self.link.config.name
    }
}

#[async_trait::async_trait]
impl Tool for McpTool {
    fn name(&self) -> &str {
        &self.name
    }
    fn description(&self) -> &str {
        &self.description
    }
    fn parameters(&self) -> &Value {
        &self.parameters
    }
    fn annotations(&self) -> ToolAnnotations {
        self.annotations
    }

    async fn call(&self, arguments: Value, ctx: &ToolContext) -> ToolOutput {
        let arguments = match arguments {
            Value::Object(map) => Some(map),
            Value::Null => None,
            other => {
                return ToolOutput::error(format!(
                    "invalid arguments for tool {}: expected a JSON object, got {other}",
                    self.name
                ));
            }
        };
        let set = self.set.upgrade();
        let mut meta = RequestMetaObject::default();
        if let Some(cx) = set.as_ref().and_then(|s| s.trace_context(ctx)) {
            inject(&cx, &mut meta);
        }
        let (outcome, started) = self.link.call(&self.remote, arguments, meta).await;
        if started
            && self.link.starts() > 1
            && let Some(set) = &set
        {
            // A restarted server may offer other tools now.
            set.refresh_later(&self.link);
        }
        let mut output = match outcome.result {
            Ok(result) => to_output(result),
            Err(failure) => {
                let mut out = ToolOutput::error(failure.message);
                if let Some(code) = failure.code {
                    out = out.with_span_attribute("rpc.response.status_code", code.to_string());
                }
                out
            }
        };
        output = output
            .with_span_attribute("mcp.method.name", "tools/call")
            .with_span_attribute("network.transport", outcome.transport)
            .with_span_attribute("jsonrpc.protocol.version", "2.0");
        if let Some(id) = outcome.request_id {
            output = output.with_span_attribute("jsonrpc.request.id", id);
        }
        if let Some(v) = outcome.protocol_version {
            output = output.with_span_attribute("mcp.protocol.version", v);
        }
        if let Some(s) = outcome.session_id {
            output = output.with_span_attribute("mcp.session.id", s);
        }
        output
    }
}

/// A `tools/call` result as a tool output: text blocks joined; images, audio and binary
/// resources as references (type, size, sha256), never inlined; structured content kept;
/// `isError` kept.
pub fn to_output(result: CallToolResult) -> ToolOutput {
    let mut parts = Vec::with_capacity(result.content.len());
    for block in &result.content {
        match block {
            ContentBlock::Text(t) => parts.push(t.text.clone()),
            ContentBlock::Image(i) => parts.push(reference("image", &i.mime_type, &i.data)),
            ContentBlock::Audio(a) => parts.push(reference("audio", &a.mime_type, &a.data)),
            ContentBlock::Resource(r) => match &r.resource {
                ResourceContents::TextResourceContents { uri, text, .. } => {
                    parts.push(format!("[resource {uri}]\n{text}"))
                }
                ResourceContents::BlobResourceContents {
                    uri,
                    mime_type,
                    blob,
                    ..
                } => parts.push(format!(
                    "{} {uri}",
                    reference(
                        "resource",
                        mime_type.as_deref().unwrap_or("application/octet-stream"),
                        blob
                    )
                )),
                #[allow(unreachable_patterns)]
                _ => parts.push("[resource]".into()),
            },
            ContentBlock::ResourceLink(r) => parts.push(format!("[resource link {}]", r.uri)),
            #[allow(unreachable_patterns)]
            _ => parts.push("[unsupported content]".into()),
        }
    }
    let mut output = ToolOutput::text(parts.join("\n"));
    output.is_error = result.is_error == Some(true);
    if let Some(s) = result.structured_content {
        output = output.with_structured(s);
    }
    output
}

/// `[image image/png, 1234 bytes, sha256:0123abcd…]` for base64 `data`.
fn reference(kind: &str, mime: &str, data: &str) -> String {
    let bytes = data.len() / 4 * 3;
    let digest = Sha256::digest(data.as_bytes());
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("[{kind} {mime}, ~{bytes} bytes, sha256:{hex}]")
}
