//! [`FallbackClient`]: tries clients in order, failing over on provider errors.

use std::sync::Arc;

use futures::stream::{self, BoxStream, StreamExt};

use crate::client::{LlmClient, StreamEvent};
use crate::error::LlmError;
use crate::types::{LlmRequest, ProviderResponse};

/// Tries its clients in order: on an error that [warrants failover](LlmError::is_failover)
/// (provider, auth, transport, timeout, exhausted retries) the next client gets the request;
/// other errors (configuration, bad output) are returned at once. When every client fails,
/// the last error is returned. A stream fails over only if it has yielded nothing yet.
///
/// Its `provider()` and `model()` are those of the first client; each response names the
/// client that actually answered.
#[derive(Clone)]
pub struct FallbackClient {
    clients: Vec<Arc<dyn LlmClient>>,
}

impl std::fmt::Debug for FallbackClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self
            .clients
            .iter()
            .map(|c| format!("{}:{}", c.provider(), c.model()))
            .collect();
        f.debug_struct("FallbackClient")
            .field("clients", &names)
            .finish()
    }
}

impl FallbackClient {
    /// A client that tries `clients` in this order.
    pub fn new(clients: Vec<Arc<dyn LlmClient>>) -> Self {
        Self { clients }
    }

    /// The clients, in order.
    pub fn clients(&self) -> &[Arc<dyn LlmClient>] {
        &self.clients
    }

    fn no_clients() -> LlmError {
        LlmError::Config("FallbackClient has no clients".into())
    }
}

#[async_trait::async_trait]
impl LlmClient for FallbackClient {
    async fn complete(&self, request: &LlmRequest) -> Result<ProviderResponse, LlmError> {
        let mut last = None;
        for (i, client) in self.clients.iter().enumerate() {
            match client.complete(request).await {
                Ok(response) => return Ok(response),
                Err(error) if error.is_failover() => {
                    if i + 1 < self.clients.len() {
                        tracing::warn!(
                            provider = client.provider(),
                            model = client.model(),
                            error = %error,
                            "model call failed; failing over to the next client"
                        );
                    }
                    last = Some(error);
                }
                Err(error) => return Err(error),
            }
        }
        Err(last.unwrap_or_else(Self::no_clients))
    }

    fn provider(&self) -> &str {
        self.clients.first().map_or("fallback", |c| c.provider())
    }

    fn model(&self) -> &str {
        self.clients.first().map_or("fallback", |c| c.model())
    }

    /// The first client's, as for [`LlmClient::provider`] and [`LlmClient::model`] (a span
    /// starts before it is known which client answers).
    fn server_address(&self) -> Option<crate::client::ServerAddress> {
        self.clients.first()?.server_address()
    }

    fn stream<'a>(
        &'a self,
        request: &'a LlmRequest,
    ) -> BoxStream<'a, Result<StreamEvent, LlmError>> {
        struct State<'a> {
            next: usize,
            current: Option<BoxStream<'a, Result<StreamEvent, LlmError>>>,
            yielded: bool,
            done: bool,
        }
        let state = State {
            next: 0,
            current: None,
            yielded: false,
            done: false,
        };
        stream::unfold(state, move |mut st| async move {
            loop {
                if st.done {
                    return None;
                }
                let Some(current) = st.current.as_mut() else {
                    let Some(client) = self.clients.get(st.next) else {
                        st.done = true;
                        return Some((Err(Self::no_clients()), st));
                    };
                    st.next += 1;
                    st.yielded = false;
                    st.current = Some(client.stream(request));
                    continue;
                };
                match current.next().await {
                    None => return None,
                    Some(Ok(event)) => {
                        st.yielded = true;
                        return Some((Ok(event), st));
                    }
                    Some(Err(error)) => {
                        let more = st.next < self.clients.len();
                        if !st.yielded && more && error.is_failover() {
                            tracing::warn!(error = %error, "model stream failed before its first event; failing over");
                            st.current = None;
                            continue;
                        }
                        st.done = true;
                        return Some((Err(error), st));
                    }
                }
            }
        })
        .boxed()
    }
}
