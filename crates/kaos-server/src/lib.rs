//! kaos agents as an HTTP service: an axum [`Router`] a user can mount in their own app, and
//! [`Server::serve`], which runs it with a graceful drain (what `kaos serve` does).
//!
//! Routes (errors are `{"error": {"code", "message"}}`):
//!
//! | route | what |
//! |---|---|
//! | `POST /v1/sessions/{session_id}/messages` | one turn; SSE by default, one JSON object with `Accept: application/json` |
//! | `POST /v1/runs/{run_id}/approve` | approve or deny a paused run's tool call and continue it |
//! | `POST /v1/sessions`, `GET`/`DELETE /v1/sessions/{id}` | sessions |
//! | `GET /healthz`, `GET /readyz` | liveness, readiness (store reachable, not draining) |
//! | `GET /openapi.json` | the OpenAPI 3.1 document, generated from the code |
//!
//! Each bearer token is a tenant; session ids are scoped per tenant. The caller's
//! `traceparent` parents an HTTP server span, which parents `agent.turn`. A client that hangs
//! up cancels its turn. See [`Limits`] for the body, message, concurrency, wall-clock and
//! busy-session limits.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use kaos_agents::{Agent, KaosRuntime};
//! use kaos_server::{Server, ServerConfig, ServedAgent, TokenSet};
//! let agent = Agent::builder().name("assistant").model("offline").build().map_err(std::io::Error::other)?;
//! let config = ServerConfig {
//!     agents: vec![ServedAgent { agent, runtime: KaosRuntime::test_mode() }],
//!     tokens: TokenSet::from_list("alice=a-long-secret-token").map_err(std::io::Error::other)?,
//!     ..ServerConfig::default()
//! };
//! let server = Server::new(config).map_err(std::io::Error::other)?;
//! let app = axum::Router::new().nest("/agents", server.router()); // mount it in your app
//! # let _ = app; Ok(()) }
//! ```
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod api;
mod auth;
mod error;
mod narrow;
mod openapi;
mod routes;
mod serve;
mod state;
mod trace;
mod turn;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{get, post};

pub use api::{
    ApproveRequest, CreateSessionRequest, Health, MessageRequest, PendingRunInfo, SessionInfo,
    ToolCallResult, TurnResponse,
};
pub use auth::{LOCAL_TENANT, Tenant, TokenError, TokenSet};
pub use error::{ApiError, ErrorBody, ErrorDetail};
pub use narrow::agent_tools;
pub use openapi::ApiDoc;
pub use serve::{BindError, DrainReport, check_bind};
pub use state::{Limits, ServedAgent, ServerConfig, ServerError};
pub use trace::ServerContext;

use state::AppState;

/// A configured server: build its [`Router`], or run it with [`Server::serve`].
#[derive(Clone)]
pub struct Server {
    state: AppState,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("agents", &self.state.agents.len())
            .field("draining", &self.state.is_draining())
            .finish_non_exhaustive()
    }
}

impl Server {
    /// A server for `config` (checked: at least one agent, unique names, non-zero limits).
    pub fn new(config: ServerConfig) -> Result<Self, ServerError> {
        Ok(Self {
            state: AppState::new(config)?,
        })
    }

    /// The API as a router, with its server spans, access log, auth and body limit.
    pub fn router(&self) -> Router {
        let state = self.state.clone();
        let v1 = Router::new()
            .route("/v1/sessions", post(routes::create_session))
            .route(
                "/v1/sessions/{session_id}",
                get(routes::get_session).delete(routes::delete_session),
            )
            .route(
                "/v1/sessions/{session_id}/messages",
                post(routes::post_message),
            )
            .route("/v1/runs/{run_id}/approve", post(routes::approve_run))
            .route_layer(middleware::from_fn_with_state(
                state.clone(),
                auth::require_tenant,
            ));
        Router::new()
            .merge(v1)
            .route("/healthz", get(routes::healthz))
            .route("/readyz", get(routes::readyz))
            .route("/openapi.json", get(openapi::openapi_json))
            .layer(DefaultBodyLimit::max(state.limits.max_body_bytes))
            .layer(middleware::from_fn_with_state(
                state.clone(),
                trace::trace_requests,
            ))
            .with_state(state)
    }

    /// Starts draining: `/readyz` answers 503 and new turns are refused (503 `draining`);
    /// turns in flight go on.
    pub fn begin_drain(&self) {
        self.state
            .draining
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Cancels every turn in flight (each ends `cancelled`, its spans closed, its session
    /// unchanged).
    pub fn cancel_turns(&self) {
        self.state.cancel.send_replace(true);
    }

    /// Turns in flight now.
    pub fn turns_in_flight(&self) -> usize {
        self.state.turns_in_flight()
    }

    /// Flushes every hook (OTel, audit), returning the failures as text.
    pub fn flush_hooks(&self) -> Vec<String> {
        self.state
            .agents
            .first()
            .map(|a| {
                a.runner
                    .hooks()
                    .flush()
                    .into_iter()
                    .map(|e| format!("hook {}: {}", e.hook, e.message))
                    .collect()
            })
            .unwrap_or_default()
    }
}
