//! The streamable-HTTP client: rmcp's reqwest client, wrapped to remember the session id
//! the server assigned (`Mcp-Session-Id`), which rmcp keeps to itself, for `mcp.session.id`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::stream::BoxStream;
use http::{HeaderName, HeaderValue};
use rmcp::model::ClientJsonRpcMessage;
use rmcp::transport::streamable_http_client::{
    StreamableHttpClient, StreamableHttpError, StreamableHttpPostResponse,
    StreamableHttpResponseLimits,
};

/// Where the session id of an HTTP connection is written once known.
pub(crate) type SessionSlot = Arc<Mutex<Option<String>>>;

/// `reqwest::Client` speaking streamable HTTP, recording the session id.
#[derive(Clone)]
pub(crate) struct RecordingClient {
    inner: reqwest::Client,
    session: SessionSlot,
}

impl RecordingClient {
    pub(crate) fn new(inner: reqwest::Client, session: SessionSlot) -> Self {
        Self { inner, session }
    }

    fn record(&self, id: Option<&str>) {
        if let Some(id) = id {
            let mut slot = self
                .session
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if slot.as_deref() != Some(id) {
                *slot = Some(id.to_string());
            }
        }
    }

    fn record_response(&self, response: &StreamableHttpPostResponse) {
        match response {
            StreamableHttpPostResponse::Json(_, id) | StreamableHttpPostResponse::Sse(_, id) => {
                self.record(id.as_deref())
            }
            _ => {}
        }
    }
}

type PostResult = Result<StreamableHttpPostResponse, StreamableHttpError<reqwest::Error>>;

impl StreamableHttpClient for RecordingClient {
    type Error = reqwest::Error;

    async fn post_message(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> PostResult {
        self.record(session_id.as_deref());
        let r = self
            .inner
            .post_message(uri, message, session_id, auth_header, custom_headers)
            .await;
        if let Ok(resp) = &r {
            self.record_response(resp);
        }
        r
    }

    async fn post_message_with_response_limits(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        limits: StreamableHttpResponseLimits,
    ) -> PostResult {
        self.record(session_id.as_deref());
        let r = self
            .inner
            .post_message_with_response_limits(
                uri,
                message,
                session_id,
                auth_header,
                custom_headers,
                limits,
            )
            .await;
        if let Ok(resp) = &r {
            self.record_response(resp);
        }
        r
    }

    async fn delete_session(
        &self,
        uri: Arc<str>,
        session_id: Arc<str>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<(), StreamableHttpError<Self::Error>> {
        self.inner
            .delete_session(uri, session_id, auth_header, custom_headers)
            .await
    }

    async fn get_stream(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<
        BoxStream<'static, Result<sse_stream::Sse, sse_stream::Error>>,
        StreamableHttpError<Self::Error>,
    > {
        self.inner
            .get_stream(uri, session_id, last_event_id, auth_header, custom_headers)
            .await
    }

    async fn get_stream_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> Result<
        BoxStream<'static, Result<sse_stream::Sse, sse_stream::Error>>,
        StreamableHttpError<Self::Error>,
    > {
        self.inner
            .get_stream_with_max_sse_event_size(
                uri,
                session_id,
                last_event_id,
                auth_header,
                custom_headers,
                max_sse_event_size,
            )
            .await
    }
}
