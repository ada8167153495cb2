//! Running the server: the bind check (no tokens only on loopback) and the graceful drain.

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::Server;
use crate::auth::TokenSet;

/// How long cancelled turns get to end their responses after the drain timeout.
const AFTER_CANCEL: Duration = Duration::from_secs(5);

/// Why the server refuses to start.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// No token and no `--insecure-localhost`.
    #[error(
        "no API token: set KAOS_API_TOKENS (comma-separated `tenant=token` or `token`) or --tokens-file FILE; \
         for local experiments only, --insecure-localhost serves without auth on a loopback address"
    )]
    NoTokens,
    /// `--insecure-localhost` with an address that is not loopback.
    #[error(
        "--insecure-localhost serves without auth and only on a loopback address (127.0.0.1, ::1), not {0}"
    )]
    NotLoopback(SocketAddr),
}

/// Checks that serving on `addr` with `tokens` is allowed: tokens are required unless
/// `insecure_localhost` is set and `addr` is a loopback address.
pub fn check_bind(
    addr: &SocketAddr,
    tokens: &TokenSet,
    insecure_localhost: bool,
) -> Result<(), BindError> {
    if !tokens.is_empty() {
        return Ok(());
    }
    if !insecure_localhost {
        return Err(BindError::NoTokens);
    }
    if !addr.ip().is_loopback() {
        return Err(BindError::NotLoopback(*addr));
    }
    Ok(())
}

/// What a drain did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DrainReport {
    /// Whether a shutdown signal started the drain (else the listener failed).
    pub signalled: bool,
    /// Turns in flight when the signal came.
    pub turns_at_signal: usize,
    /// Turns still running at the drain timeout, then cancelled.
    pub cancelled_turns: usize,
    /// Whether every connection closed in time.
    pub clean: bool,
}

impl Server {
    /// Serves on `listener` until `shutdown` resolves, then drains: new turns are refused
    /// (503 `draining`) and `/readyz` answers 503 while the listener stays open for the
    /// turns in flight, which run to completion for up to `drain_timeout`; the rest are
    /// cancelled (spans end `cancelled`, sessions unchanged). Then the listener closes and
    /// open connections get a bounded time to finish. Flushing hooks and exporters is the
    /// caller's next step (see [`Server::flush_hooks`]).
    pub async fn serve(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
        drain_timeout: Duration,
    ) -> std::io::Result<DrainReport> {
        let (stop_tx, mut stop_rx) = watch::channel(false);
        let app = self
            .router()
            .into_make_service_with_connect_info::<SocketAddr>();
        let serving = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop_rx.wait_for(|s| *s).await;
            })
            .into_future();
        tokio::pin!(serving);
        tokio::pin!(shutdown);
        tokio::select! {
            result = &mut serving => {
                result?;
                return Ok(DrainReport { clean: true, ..DrainReport::default() });
            }
            () = &mut shutdown => {}
        }
        self.begin_drain();
        let mut report = DrainReport {
            signalled: true,
            turns_at_signal: self.turns_in_flight(),
            ..DrainReport::default()
        };
        tracing::info!(
            target: "kaos_server",
            turns_in_flight = report.turns_at_signal,
            drain_timeout_s = drain_timeout.as_secs_f64(),
            "draining"
        );
        // Keep serving (the listener stays open: /readyz says 503, new turns are refused)
        // while the turns in flight finish; then stop and give connections a bounded time.
        let mut turns_clean = true;
        let served_out = tokio::select! {
            result = &mut serving => Some(result),
            () = self.drain_turns(drain_timeout, &mut report, &mut turns_clean, &stop_tx) => None,
        };
        report.clean = match served_out {
            Some(result) => {
                result?;
                turns_clean
            }
            None => false,
        };
        Ok(report)
    }

    /// Waits for the turns in flight (up to `drain_timeout`), cancels the rest, tells the
    /// listener to stop, then waits [`AFTER_CANCEL`] (the caller races this against the
    /// server's own end).
    async fn drain_turns(
        &self,
        drain_timeout: Duration,
        report: &mut DrainReport,
        turns_clean: &mut bool,
        stop: &watch::Sender<bool>,
    ) {
        let all = u32::try_from(self.state.limits.max_concurrent_turns).unwrap_or(u32::MAX);
        let turns = self.state.turns.clone();
        let idle = tokio::time::timeout(drain_timeout, turns.acquire_many(all)).await;
        if idle.is_err() {
            report.cancelled_turns = self.turns_in_flight();
            tracing::warn!(
                target: "kaos_server",
                cancelled = report.cancelled_turns,
                "drain timeout: cancelling the turns still running"
            );
            self.cancel_turns();
            *turns_clean = tokio::time::timeout(AFTER_CANCEL, turns.acquire_many(all))
                .await
                .is_ok();
        }
        drop(idle);
        stop.send_replace(true);
        tokio::time::sleep(AFTER_CANCEL).await;
    }
}
