//! The OpenAPI 3.1 document, generated from the handlers' annotations and the wire types.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::{api, error, routes};

/// The API's OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "kaos serve",
        description = "kaos agents over HTTP: turns streamed as SSE (or one JSON object), approvals of paused runs, sessions per tenant (bearer token), health and readiness."
    ),
    paths(
        routes::post_message,
        routes::approve_run,
        routes::create_session,
        routes::get_session,
        routes::delete_session,
        routes::healthz,
        routes::readyz,
        openapi_json,
    ),
    components(schemas(
        api::MessageRequest,
        api::ApproveRequest,
        api::TurnResponse,
        api::ToolCallResult,
        api::CreateSessionRequest,
        api::SessionInfo,
        api::PendingRunInfo,
        api::Health,
        error::ErrorBody,
        error::ErrorDetail,
    )),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI document of this API.
#[utoipa::path(get, path = "/openapi.json", responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json")))]
pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
