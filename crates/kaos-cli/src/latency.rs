//! `--model-latency-ms N`: the offline and `script:` models wait N ms per call (a timer, not
//! a blocked thread), so a server can be load-tested offline with a realistic model latency.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use kaos_agents::{LlmClient, LlmError, LlmRequest, ProviderResponse};
use kaos_llm::StreamEvent;

/// A client whose every call (complete or stream) first waits `latency`.
pub struct Delayed {
    inner: Arc<dyn LlmClient>,
    latency: Duration,
}

impl Delayed {
    /// Wraps `inner`; a zero latency returns `inner` unchanged.
    pub fn wrap(inner: Arc<dyn LlmClient>, latency: Duration) -> Arc<dyn LlmClient> {
        if latency.is_zero() {
            return inner;
        }
        Arc::new(Self { inner, latency })
    }
}

#[async_trait::async_trait]
impl LlmClient for Delayed {
    async fn complete(&self, request: &LlmRequest) -> Result<ProviderResponse, LlmError> {
        tokio::time::sleep(self.latency).await;
        self.inner.complete(request).await
    }

    fn provider(&self) -> &str {
        self.inner.provider()
    }

    fn model(&self) -> &str {
        self.inner.model()
    }

    fn server_address(&self) -> Option<kaos_llm::client::ServerAddress> {
        self.inner.server_address()
    }

    fn stream<'a>(
        &'a self,
        request: &'a LlmRequest,
    ) -> BoxStream<'a, Result<StreamEvent, LlmError>> {
        futures::stream::once(tokio::time::sleep(self.latency))
            .flat_map(move |()| self.inner.stream(request))
            .boxed()
    }
}
