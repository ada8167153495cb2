//! Streamable HTTP: rmcp's tower service at `/mcp`, behind bearer-token auth.

use std::net::SocketAddr;

use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};

use super::AgentServer;
use super::auth::{TokenSet, tenant_of_header};

/// Why `kaos mcp serve --http` did not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpServeError {
    /// No token and no explicit opt-out on a loopback address.
    #[error(
        "refusing to serve MCP over HTTP on {addr} without a bearer token: set KAOS_API_TOKENS (comma-separated, 16+ characters each), or pass --insecure-localhost with a loopback address (127.0.0.1 or ::1)"
    )]
    NoToken {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// The socket could not be bound or served.
    #[error("MCP HTTP server on {addr}: {source}")]
    Io {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
}

/// An axum router serving `server` at `/mcp`. With tokens, every request needs
/// `Authorization: Bearer <token>` (401 otherwise) and its tenant scopes the session ids;
/// with none, requests must come with a loopback `Host` (rmcp's DNS-rebinding guard).
pub fn http_router(server: AgentServer, tokens: TokenSet) -> axum::Router {
    let mut config = StreamableHttpServerConfig::default();
    if !tokens.is_empty() {
        // Tokens authenticate the caller; any Host may reach a deliberately exposed server.
        config = config.disable_allowed_hosts();
    }
    let service = StreamableHttpService::new(
        move || Ok(server.clone()),
        LocalSessionManager::default().into(),
        config,
    );
    let router = axum::Router::new().nest_service("/mcp", service);
    if tokens.is_empty() {
        return router;
    }
    router.layer(axum::middleware::from_fn(
        move |mut req: Request, next: Next| {
            let tokens = tokens.clone();
            async move {
                let header = req
                    .headers()
                    .get(axum::http::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok());
                match tenant_of_header(&tokens, header) {
                    Some(tenant) => {
                        // rmcp hands the request parts (and so the tenant) to the handler.
                        req.extensions_mut().insert(tenant);
                        next.run(req).await
                    }
                    None => unauthorized(),
                }
            }
        },
    ))
}

/// The JSON-RPC error code of a refused bearer token (implementation-defined server range).
pub const UNAUTHORIZED_CODE: i32 = -32001;

/// 401 with `WWW-Authenticate: Bearer` and, as the body, a JSON-RPC error saying what is
/// missing: MCP clients such as the Python SDK show a JSON-RPC error body of a non-2xx
/// response to their caller, and only a generic "error response" for any other body.
fn unauthorized() -> Response {
    let body = serde_json::json!({
        "jsonrpc": "2.0",
        "id": null,
        "error": {
            "code": UNAUTHORIZED_CODE,
            "message": "Unauthorized: a valid bearer token is required (Authorization: Bearer <token>)",
        },
    });
    (
        StatusCode::UNAUTHORIZED,
        [(axum::http::header::WWW_AUTHENTICATE, "Bearer")],
        axum::Json(body),
    )
        .into_response()
}

/// Serves `server` over streamable HTTP at `http://{addr}/mcp` until `shutdown` resolves.
/// Refuses to start without tokens unless `insecure_localhost` is set and `addr` is a
/// loopback address. `on_bound` gets the bound address (useful with port 0).
pub async fn serve_http(
    server: AgentServer,
    addr: SocketAddr,
    tokens: TokenSet,
    insecure_localhost: bool,
    on_bound: impl FnOnce(SocketAddr),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), HttpServeError> {
    if tokens.is_empty() && !(insecure_localhost && addr.ip().is_loopback()) {
        return Err(HttpServeError::NoToken { addr });
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| HttpServeError::Io { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| HttpServeError::Io { addr, source })?;
    on_bound(bound);
    axum::serve(listener, http_router(server, tokens))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|source| HttpServeError::Io {
            addr: bound,
            source,
        })
}
