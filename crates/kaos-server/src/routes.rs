//! The handlers: turns (SSE or JSON), approvals, sessions, health.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures::StreamExt;
use kaos_agents::{
    Approval, EventKind, EventStream, RunOptions, RunState, Session, SpanPhase, SpanSubject,
};
use serde::de::DeserializeOwned;

use crate::api::{
    ApproveRequest, CreateSessionRequest, Health, MessageRequest, PendingRunInfo, SessionInfo,
    TurnResponse,
};
use crate::auth::Tenant;
use crate::error::{ApiError, ErrorBody};
use crate::narrow;
use crate::state::AppState;
use crate::trace::ServerContext;
use crate::turn::{Held, TurnStream, fold};

/// A JSON body whose errors are API errors (413 past the body cap, 400 when malformed).
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    "the request body is larger than the server accepts",
                )
            } else {
                ApiError::bad_request(format!("cannot read the request body: {e}"))
            }
        })?;
        if bytes.is_empty() {
            return serde_json::from_slice(b"{}")
                .map(ApiJson)
                .map_err(|e| ApiError::bad_request(format!("a JSON body is required: {e}")));
        }
        serde_json::from_slice(&bytes)
            .map(ApiJson)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
    }
}

/// Session ids: 1-128 letters, digits, `-`, `_`, `.`.
fn check_session_id(id: &str) -> Result<(), ApiError> {
    if id.is_empty()
        || id.len() > 128
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(ApiError::bad_request(format!(
            "session id {id:?}: use 1-128 letters, digits, `-`, `_` or `.`"
        )));
    }
    Ok(())
}

/// Whether the client asked for one JSON object rather than SSE.
fn wants_json(headers: &HeaderMap) -> bool {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    accept.contains("application/json") && !accept.contains("text/event-stream")
}

fn draining(state: &AppState) -> Result<(), ApiError> {
    if state.is_draining() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "draining",
            "the server is shutting down; send the request to another replica",
        )
        .retry_after(state.limits.retry_after_secs));
    }
    Ok(())
}

/// A concurrency permit (503 beyond the limit) and the session's lock (409 after waiting).
async fn hold(state: &AppState, scoped: &str) -> Result<Held, ApiError> {
    let permit = state.turns.clone().try_acquire_owned().map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_turns",
            format!(
                "{} turns are in flight, the most this server runs at once",
                state.limits.max_concurrent_turns
            ),
        )
        .retry_after(state.limits.retry_after_secs)
    })?;
    let lock = state.session_lock(scoped);
    let session = match lock.clone().try_lock_owned() {
        Ok(g) => g,
        Err(_) if state.limits.busy_wait.is_zero() => return Err(busy(state.limits.busy_wait)),
        Err(_) => tokio::time::timeout(state.limits.busy_wait, lock.lock_owned())
            .await
            .map_err(|_| busy(state.limits.busy_wait))?,
    };
    Ok(Held {
        _permit: permit,
        _session: session,
    })
}

fn busy(waited: Duration) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "session_busy",
        format!(
            "another turn is running on this session (waited {:.1}s); retry when it ends",
            waited.as_secs_f64()
        ),
    )
}

/// Streams (SSE) or collects (JSON) a started run.
async fn respond(
    state: &AppState,
    events: EventStream,
    server: ServerContext,
    session_id: &str,
    json: bool,
    held: Held,
) -> Response {
    let mut stream = TurnStream::new(
        events,
        server,
        Arc::from(session_id),
        state.limits.turn_timeout,
        state.cancel.subscribe(),
        held,
    );
    // A session held by another process or replica (the store's lease) is only known once
    // the runner has tried to take it, which the event after the turn's start says. Hold the
    // response until then, so that case is a 409 like the in-process lock, not a 200 whose
    // stream carries a run_error.
    let mut head = Vec::new();
    while let Some(e) = stream.next().await {
        if let EventKind::RunError {
            error_type,
            message,
            ..
        } = &e.kind
            && error_type == "session_busy"
        {
            let message = message.clone();
            while stream.next().await.is_some() {}
            return ApiError::new(StatusCode::CONFLICT, "session_busy", message).into_response();
        }
        let decided = !matches!(
            &e.kind,
            EventKind::Span(s) if s.subject == SpanSubject::Turn && s.phase == SpanPhase::Start
        );
        head.push(e);
        if decided {
            break;
        }
    }
    if json {
        let mut events = head;
        while let Some(e) = stream.next().await {
            events.push(e);
        }
        let body: TurnResponse = fold(&events, session_id, stream.cut());
        return Json(body).into_response();
    }
    let mut position: u64 = 0;
    let sse = futures::stream::iter(head).chain(stream).map(move |e| {
        let id = position;
        position += 1;
        let event = SseEvent::default()
            .event(e.kind.type_name())
            .id(id.to_string())
            .data(e.to_json());
        Ok::<_, std::convert::Infallible>(event)
    });
    Sse::new(sse)
        .keep_alive(KeepAlive::new().interval(state.limits.keep_alive))
        .into_response()
}

/// Run one turn on a session.
#[utoipa::path(
    post,
    path = "/v1/sessions/{session_id}/messages",
    params(("session_id" = String, Path, description = "The session (created on first use)")),
    request_body = MessageRequest,
    responses(
        (status = 200, description = "The turn: an SSE stream (`event: <type>`, `data: <event JSON>`, `id: <position>`; keep-alive comments while idle) by default, or one JSON object with `Accept: application/json`", content((String = "text/event-stream"), (TurnResponse = "application/json"))),
        (status = 400, description = "Bad request", body = ErrorBody),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorBody),
        (status = 403, description = "The request asks for more than the agent allows", body = ErrorBody),
        (status = 404, description = "Unknown agent", body = ErrorBody),
        (status = 409, description = "`session_busy`: another turn runs on the session", body = ErrorBody),
        (status = 413, description = "`body_too_large`", body = ErrorBody),
        (status = 422, description = "`message_too_long`", body = ErrorBody),
        (status = 503, description = "`too_many_turns` or `draining` (with `Retry-After`)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn post_message(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(session_id): Path<String>,
    Extension(server): Extension<ServerContext>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<MessageRequest>,
) -> Result<Response, ApiError> {
    check_session_id(&session_id)?;
    if req.message.trim().is_empty() {
        return Err(ApiError::bad_request("field `message`: must not be empty"));
    }
    if req.message.chars().count() > state.limits.max_message_chars {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "message_too_long",
            format!(
                "field `message`: longer than {} characters",
                state.limits.max_message_chars
            ),
        ));
    }
    draining(&state)?;
    let slot = state.agent(req.agent.as_deref()).ok_or_else(|| {
        let names: Vec<&str> = state.agents.iter().map(|a| a.agent.name.as_str()).collect();
        ApiError::new(
            StatusCode::NOT_FOUND,
            "agent_not_found",
            format!(
                "field `agent`: no agent {:?} (agents: {names:?})",
                req.agent
            ),
        )
    })?;
    let runner = if narrow::wants_narrowing(&req, &slot.agent) {
        let agent = narrow::narrow(
            &slot.agent,
            &slot.runtime,
            &req,
            &state.allowed_models,
            state.limits.max_message_chars,
        )?;
        state.runner_for(agent, slot.runtime.clone())
    } else {
        slot.runner.clone()
    };
    let scoped = tenant.scoped(&session_id);
    let held = hold(&state, &scoped).await?;
    let events = runner.run_with(req.message, scoped, RunOptions::default());
    Ok(respond(
        &state,
        events,
        server,
        &session_id,
        wants_json(&headers),
        held,
    )
    .await)
}

/// Approve (or deny) a paused run's tool call and continue the run.
#[utoipa::path(
    post,
    path = "/v1/runs/{run_id}/approve",
    params(("run_id" = String, Path, description = "The paused run")),
    request_body = ApproveRequest,
    responses(
        (status = 200, description = "The resumed run, streamed (SSE) or as JSON, like a turn", content((String = "text/event-stream"), (TurnResponse = "application/json"))),
        (status = 400, description = "Bad request", body = ErrorBody),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorBody),
        (status = 404, description = "`run_not_found`: no such paused run in the session", body = ErrorBody),
        (status = 409, description = "`session_busy`", body = ErrorBody),
        (status = 503, description = "`too_many_turns` or `draining`", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn approve_run(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(run_id): Path<String>,
    Extension(server): Extension<ServerContext>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<ApproveRequest>,
) -> Result<Response, ApiError> {
    check_session_id(&req.session_id)?;
    draining(&state)?;
    let scoped = tenant.scoped(&req.session_id);
    let run = load_session(&state, &scoped)
        .await?
        .and_then(|s| s.pending_runs.get(&run_id).cloned())
        .and_then(|v| serde_json::from_value::<RunState>(v).ok())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "run_not_found",
                format!(
                    "no paused run {run_id:?} in session {:?} (already resumed, or never paused)",
                    req.session_id
                ),
            )
        })?;
    // Continue under the agent as it paused (with the request's narrowing), on the runtime
    // of the served agent of that name.
    let slot = state
        .agent(Some(&run.agent.name))
        .or_else(|| state.agent(None))
        .ok_or_else(|| ApiError::internal("no agent"))?;
    let runner = state.runner_for(run.agent.clone(), slot.runtime.clone());
    let approval = if req.approved {
        Approval::Approve
    } else {
        Approval::Deny {
            reason: req
                .reason
                .filter(|r| !r.trim().is_empty())
                .unwrap_or_else(|| "denied by the user".into()),
        }
    };
    let held = hold(&state, &scoped).await?;
    let events = runner.resume(run_id, scoped, approval);
    Ok(respond(
        &state,
        events,
        server,
        &req.session_id,
        wants_json(&headers),
        held,
    )
    .await)
}

async fn load_session(state: &AppState, scoped: &str) -> Result<Option<Session>, ApiError> {
    let store = state
        .store()
        .ok_or_else(|| ApiError::internal("no session store"))?;
    store.load(scoped).await.map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            e.message,
        )
        .retry_after(state.limits.retry_after_secs)
    })
}

fn info(session_id: &str, s: &Session) -> SessionInfo {
    let mut pending: Vec<PendingRunInfo> = s
        .pending_runs
        .iter()
        .map(|(run_id, v)| {
            let run = serde_json::from_value::<RunState>(v.clone()).ok();
            PendingRunInfo {
                run_id: run_id.clone(),
                tool_name: run
                    .as_ref()
                    .map(|r| r.pending_call.name.clone())
                    .unwrap_or_default(),
                created_at_unix_secs: run.map_or(0, |r| r.created_at_unix_secs),
            }
        })
        .collect();
    pending.sort_by(|a, b| {
        (a.created_at_unix_secs, &a.run_id).cmp(&(b.created_at_unix_secs, &b.run_id))
    });
    SessionInfo {
        session_id: session_id.to_string(),
        turn_count: s.turn_count,
        message_count: s.messages.len() as u64,
        pending_runs: pending,
    }
}

/// Create a session (optionally with a chosen id).
#[utoipa::path(
    post,
    path = "/v1/sessions",
    request_body(content = CreateSessionRequest, description = "Optional; `{}` or no body for a new id"),
    responses(
        (status = 201, description = "Created", body = SessionInfo),
        (status = 400, description = "Bad id", body = ErrorBody),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorBody),
        (status = 409, description = "`session_exists`", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn create_session(
    State(state): State<AppState>,
    tenant: Tenant,
    ApiJson(req): ApiJson<CreateSessionRequest>,
) -> Result<Response, ApiError> {
    let id = req
        .session_id
        .unwrap_or_else(|| format!("s-{}", uuid::Uuid::new_v4().simple()));
    check_session_id(&id)?;
    let scoped = tenant.scoped(&id);
    let lock = state.session_lock(&scoped);
    let _guard = lock.lock().await;
    if load_session(&state, &scoped).await?.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "session_exists",
            format!("session {id:?} already exists"),
        ));
    }
    let session = Session::new(scoped);
    let store = state
        .store()
        .ok_or_else(|| ApiError::internal("no session store"))?;
    store.save(&session).await.map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            e.message,
        )
    })?;
    Ok((StatusCode::CREATED, Json(info(&id, &session))).into_response())
}

/// Read a session: turns, messages, paused runs.
#[utoipa::path(
    get,
    path = "/v1/sessions/{session_id}",
    params(("session_id" = String, Path, description = "The session")),
    responses(
        (status = 200, description = "The session", body = SessionInfo),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorBody),
        (status = 404, description = "No such session (for this token)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get_session(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(session_id): Path<String>,
) -> Result<Json<SessionInfo>, ApiError> {
    check_session_id(&session_id)?;
    let session = load_session(&state, &tenant.scoped(&session_id))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no session {session_id:?}")))?;
    Ok(Json(info(&session_id, &session)))
}

/// Delete a session and its paused runs.
#[utoipa::path(
    delete,
    path = "/v1/sessions/{session_id}",
    params(("session_id" = String, Path, description = "The session")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorBody),
        (status = 404, description = "No such session (for this token)", body = ErrorBody),
        (status = 409, description = "`session_busy`: a turn is running on it", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn delete_session(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(session_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    check_session_id(&session_id)?;
    let scoped = tenant.scoped(&session_id);
    let lock = state.session_lock(&scoped);
    let _guard = lock.try_lock().map_err(|_| busy(Duration::ZERO))?;
    let store = state
        .store()
        .ok_or_else(|| ApiError::internal("no session store"))?;
    match store.delete(&scoped).await {
        Ok(true) => Ok(StatusCode::NO_CONTENT),
        Ok(false) => Err(ApiError::not_found(format!("no session {session_id:?}"))),
        Err(e) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            e.message,
        )),
    }
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "Alive", body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// Readiness: not draining and the session store answers.
#[utoipa::path(
    get,
    path = "/readyz",
    responses(
        (status = 200, description = "Ready", body = Health),
        (status = 503, description = "`draining` or `store_unreachable`", body = Health),
    )
)]
pub async fn readyz(State(state): State<AppState>) -> Response {
    let unready = |status: &str| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Health {
                status: status.into(),
            }),
        )
            .into_response()
    };
    if state.is_draining() {
        return unready("draining");
    }
    let Some(store) = state.store() else {
        return unready("store_unreachable");
    };
    match tokio::time::timeout(Duration::from_secs(2), store.load("kaos.readyz-probe")).await {
        Ok(Ok(_)) => Json(Health {
            status: "ok".into(),
        })
        .into_response(),
        _ => unready("store_unreachable"),
    }
}
