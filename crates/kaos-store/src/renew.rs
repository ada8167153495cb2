//! Lease renewal shared by the stores: a task that extends a held lease every third of its
//! TTL until the lease ends, the store is dropped, or the store says the lease is gone.

use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::Duration;

use kaos_agents::session::SessionLease;

/// What one renewal attempt found.
pub(crate) enum Renewal {
    /// The lease is still ours, a third of its TTL further on.
    Held,
    /// The lease is gone (taken over, released or expired): stop renewing.
    Lost,
    /// The store could not be asked this time (e.g. no pooled connection): try again later.
    Unreachable,
}

/// Arms `lease` with a renewal task: every `ttl / 3`, `renew` runs against the store (held
/// weakly, so renewal never keeps a dropped store alive). Without a Tokio runtime, or with a
/// zero TTL, there is nothing to renew and the lease is returned as it is.
pub(crate) fn keep_alive<S, F, Fut>(
    lease: SessionLease,
    ttl: Duration,
    store: Weak<S>,
    renew: F,
) -> SessionLease
where
    S: Send + Sync + 'static,
    F: Fn(Arc<S>) -> Fut + Send + 'static,
    Fut: Future<Output = Renewal> + Send,
{
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return lease;
    };
    if ttl.is_zero() {
        return lease; // nothing to renew: the lease is over at once
    }
    let task = handle.spawn(async move {
        loop {
            tokio::time::sleep(ttl / 3).await;
            let Some(store) = store.upgrade() else { return };
            match renew(store).await {
                Renewal::Held | Renewal::Unreachable => {}
                Renewal::Lost => return,
            }
        }
    });
    lease.with_keepalive(task.abort_handle())
}
