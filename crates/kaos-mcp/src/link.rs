//! [`ServerLink`]: the connection to one MCP server — started on first need, reused across
//! turns, restarted on the next use after it died.

use std::collections::{HashMap, VecDeque};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use kaos_agents::McpServerConfig;
use kaos_agents::mcp_config::expand_env;
use rmcp::model::{
    CallToolRequest, CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig,
    ClientRequest, Implementation, JsonObject, RequestMetaObject, ServerResult,
};
use rmcp::service::{NotificationContext, PeerRequestOptions, RunningService};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{ClientHandler, Peer, RoleClient, ServiceError, ServiceExt};
use tokio::io::AsyncBufReadExt;

use crate::McpError;
use crate::http_client::{RecordingClient, SessionSlot};

/// Most stderr lines of a stdio server kept for error messages.
const STDERR_LINES: usize = 8;

/// Called when a server sends `notifications/tools/list_changed`.
pub(crate) type ListChanged = Arc<dyn Fn() + Send + Sync>;

/// Our side of the MCP session: it only listens for `tools/list_changed`.
struct Handler {
    on_list_changed: ListChanged,
}

impl ClientHandler for Handler {
    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        (self.on_list_changed)();
    }

    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("kaos", env!("CARGO_PKG_VERSION")),
        )
    }
}

/// A live connection.
pub(crate) struct Conn {
    service: RunningService<RoleClient, Handler>,
    /// `pipe` (stdio) or `tcp` (HTTP), for `network.transport`.
    pub transport: &'static str,
    /// The negotiated protocol version.
    pub protocol_version: Option<String>,
    session: SessionSlot,
    stderr: Arc<Mutex<VecDeque<String>>>,
}

impl Conn {
    fn peer(&self) -> &Peer<RoleClient> {
        self.service.peer()
    }

    fn is_alive(&self) -> bool {
        !self.service.is_closed() && !self.peer().is_transport_closed()
    }

    /// The session id the server assigned (streamable HTTP), if any.
    pub fn session_id(&self) -> Option<String> {
        self.session
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The last lines the (stdio) server wrote to stderr, joined.
    fn stderr_tail(&self) -> String {
        let lines = self
            .stderr
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        lines.iter().cloned().collect::<Vec<_>>().join(" | ")
    }
}

/// What one `tools/call` came to.
pub(crate) struct CallOutcome {
    /// The result, or a message saying why there is none.
    pub result: Result<CallToolResult, CallFailure>,
    /// The JSON-RPC id of the request, once sent.
    pub request_id: Option<String>,
    /// The connection's transport, protocol version and session id.
    pub transport: &'static str,
    pub protocol_version: Option<String>,
    pub session_id: Option<String>,
}

/// Why a call has no result.
pub(crate) struct CallFailure {
    /// Message for the model.
    pub message: String,
    /// The JSON-RPC error code, when the server answered with an error.
    pub code: Option<i64>,
}

/// One configured server and its connection.
pub(crate) struct ServerLink {
    pub config: McpServerConfig,
    conn: tokio::sync::Mutex<Option<Arc<Conn>>>,
    on_list_changed: ListChanged,
    starts: AtomicU64,
}

impl std::fmt::Debug for ServerLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerLink")
            .field("name", &self.config.name)
            .finish_non_exhaustive()
    }
}

impl ServerLink {
    pub(crate) fn new(config: McpServerConfig, on_list_changed: ListChanged) -> Self {
        Self {
            config,
            conn: tokio::sync::Mutex::new(None),
            on_list_changed,
            starts: AtomicU64::new(0),
        }
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.config.timeout_ms)
    }

    /// How many times the server was started (1 after the first connection; more after
    /// restarts).
    pub(crate) fn starts(&self) -> u64 {
        self.starts.load(Ordering::Relaxed)
    }

    /// The live connection, starting (or restarting) the server if needed. Returns whether
    /// this call (re)started it.
    pub(crate) async fn conn(&self) -> Result<(Arc<Conn>, bool), McpError> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref()
            && c.is_alive()
        {
            return Ok((c.clone(), false));
        }
        *slot = None;
        let conn = Arc::new(self.connect().await?);
        self.starts.fetch_add(1, Ordering::Relaxed);
        *slot = Some(conn.clone());
        Ok((conn, true))
    }

    /// Forgets `conn` if it is still the current one (it died); the next use restarts.
    async fn drop_conn(&self, conn: &Arc<Conn>) {
        let mut slot = self.conn.lock().await;
        if slot.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
            *slot = None;
        }
    }

    async fn connect(&self) -> Result<Conn, McpError> {
        let name = &self.config.name;
        let handler = Handler {
            on_list_changed: self.on_list_changed.clone(),
        };
        let fail = |message: String| McpError::Connect {
            server: name.clone(),
            message,
        };
        let session: SessionSlot = Arc::default();
        let stderr: Arc<Mutex<VecDeque<String>>> = Arc::default();
        let (service, transport) = if let Some(url) = &self.config.url {
            let mut headers = HashMap::new();
            for (k, v) in &self.config.headers {
                let value = expand_env(v).map_err(|e| McpError::Config {
                    server: name.clone(),
                    message: format!("header {k}: {e}"),
                })?;
                let key = HeaderName::try_from(k.as_str()).map_err(|e| McpError::Config {
                    server: name.clone(),
                    message: format!("header name {k:?}: {e}"),
                })?;
                let value = HeaderValue::try_from(value).map_err(|e| McpError::Config {
                    server: name.clone(),
                    message: format!("header {k}: invalid value: {e}"),
                })?;
                headers.insert(key, value);
            }
            let http = reqwest::Client::builder()
                .build()
                .map_err(|e| fail(format!("cannot build the HTTP client: {e}")))?;
            let config =
                StreamableHttpClientTransportConfig::with_uri(url.as_str()).custom_headers(headers);
            let transport = StreamableHttpClientTransport::with_client(
                RecordingClient::new(http, session.clone()),
                config,
            );
            let service = tokio::time::timeout(self.timeout(), handler.serve(transport))
                .await
                .map_err(|_| {
                    fail(format!(
                        "no answer to initialize from {url} within {} ms",
                        self.config.timeout_ms
                    ))
                })?
                .map_err(|e| fail(format!("cannot initialize a session with {url}: {e}")))?;
            (service, "tcp")
        } else {
            let argv = &self.config.command;
            let Some(program) = argv.first() else {
                return Err(McpError::Config {
                    server: name.clone(),
                    message: "neither `command` nor `url` is set".into(),
                });
            };
            let mut cmd = tokio::process::Command::new(program);
            cmd.args(&argv[1..]);
            for (k, v) in &self.config.env {
                let value = expand_env(v).map_err(|e| McpError::Config {
                    server: name.clone(),
                    message: format!("env {k}: {e}"),
                })?;
                cmd.env(k, value);
            }
            let (transport, child_stderr) = TokioChildProcess::builder(cmd)
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| fail(format!("cannot start {program:?}: {e}")))?;
            if let Some(err) = child_stderr {
                let sink = stderr.clone();
                tokio::spawn(async move {
                    let mut lines = tokio::io::BufReader::new(err).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        let mut buf = sink
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        if buf.len() == STDERR_LINES {
                            buf.pop_front();
                        }
                        buf.push_back(line);
                    }
                });
            }
            let service = tokio::time::timeout(self.timeout(), handler.serve(transport))
                .await
                .map_err(|_| {
                    fail(format!(
                        "{program:?} did not answer initialize within {} ms",
                        self.config.timeout_ms
                    ))
                })?
                .map_err(|e| fail(format!("{program:?} failed to initialize: {e}")))?;
            (service, "pipe")
        };
        let protocol_version = service
            .peer()
            .peer_info()
            .map(|i| i.protocol_version.to_string());
        Ok(Conn {
            service,
            transport,
            protocol_version,
            session,
            stderr,
        })
    }

    /// Every tool the server lists (all pages).
    pub(crate) async fn list_tools(&self) -> Result<Vec<rmcp::model::Tool>, McpError> {
        let (conn, _) = self.conn().await?;
        let listed = tokio::time::timeout(self.timeout(), conn.peer().list_all_tools()).await;
        match listed {
            Ok(Ok(tools)) => Ok(tools),
            Ok(Err(e)) => {
                if matches!(
                    e,
                    ServiceError::TransportClosed | ServiceError::TransportSend(_)
                ) {
                    self.drop_conn(&conn).await;
                }
                Err(McpError::Request {
                    server: self.config.name.clone(),
                    message: format!("tools/list failed: {e}"),
                })
            }
            Err(_) => Err(McpError::Request {
                server: self.config.name.clone(),
                message: format!(
                    "no answer to tools/list within {} ms",
                    self.config.timeout_ms
                ),
            }),
        }
    }

    /// One `tools/call` of the server's tool `tool`, with `meta` as `params._meta`.
    /// `(re)started` tells the caller to refresh the tool list.
    pub(crate) async fn call(
        &self,
        tool: &str,
        arguments: Option<JsonObject>,
        meta: RequestMetaObject,
    ) -> (CallOutcome, bool) {
        let name = &self.config.name;
        let (conn, started) = match self.conn().await {
            Ok(c) => c,
            Err(e) => {
                let transport = if self.config.url.is_some() {
                    "tcp"
                } else {
                    "pipe"
                };
                let outcome = CallOutcome {
                    result: Err(CallFailure {
                        message: format!("{e}. The call to {tool} did not run."),
                        code: None,
                    }),
                    request_id: None,
                    transport,
                    protocol_version: None,
                    session_id: None,
                };
                return (outcome, false);
            }
        };
        let mut params = CallToolRequestParams::new(tool.to_string());
        params.arguments = arguments;
        let request = ClientRequest::CallToolRequest(CallToolRequest::new(params));
        let options = PeerRequestOptions::with_timeout(self.timeout()).with_meta(meta);
        let mut request_id = None;
        let result = match conn.peer().send_request_with_option(request, options).await {
            Ok(handle) => {
                request_id = Some(handle.id.to_string());
                handle.await_response().await
            }
            Err(e) => Err(e),
        };
        let result = match result {
            Ok(ServerResult::CallToolResult(r)) => Ok(r),
            Ok(other) => Err(CallFailure {
                message: format!(
                    "MCP server {name} answered tools/call {tool} with an unexpected result ({})",
                    result_kind(&other)
                ),
                code: None,
            }),
            Err(ServiceError::McpError(e)) => Err(CallFailure {
                message: format!(
                    "MCP server {name} rejected tools/call {tool}: {} (JSON-RPC error {})",
                    e.message, e.code.0
                ),
                code: Some(i64::from(e.code.0)),
            }),
            Err(ServiceError::Timeout { .. }) => Err(CallFailure {
                message: format!(
                    "MCP server {name} did not answer tools/call {tool} within {} ms; the request was cancelled.",
                    self.config.timeout_ms
                ),
                code: None,
            }),
            Err(e @ (ServiceError::TransportClosed | ServiceError::TransportSend(_))) => {
                self.drop_conn(&conn).await;
                let tail = conn.stderr_tail();
                let what = if conn.transport == "pipe" {
                    "exited"
                } else {
                    "became unreachable"
                };
                let stderr = if tail.is_empty() {
                    String::new()
                } else {
                    format!(" Its last stderr: {tail}")
                };
                Err(CallFailure {
                    message: format!(
                        "MCP server {name} {what} during tools/call {tool} ({e}); the call did not complete and the server will be restarted on its next use.{stderr}"
                    ),
                    code: None,
                })
            }
            Err(e) => Err(CallFailure {
                message: format!("MCP server {name}: tools/call {tool} failed: {e}"),
                code: None,
            }),
        };
        let outcome = CallOutcome {
            result,
            request_id,
            transport: conn.transport,
            protocol_version: conn.protocol_version.clone(),
            session_id: conn.session_id(),
        };
        (outcome, started)
    }
}

fn result_kind(result: &ServerResult) -> String {
    serde_json::to_value(result)
        .ok()
        .and_then(|v| {
            v.as_object()
                .map(|o| o.keys().cloned().collect::<Vec<_>>().join(","))
        })
        .unwrap_or_else(|| "unknown".into())
}
