//! Retries with full-jitter exponential backoff, honouring `Retry-After`.
//!
//! [`RetryPolicy::run`] retries an operation while its error is
//! [retryable](LlmError::is_retryable) (429, 500, 502, 503, 504, transport errors and
//! timeouts; never 401/403). Attempt `n` (0-based) waits `uniform(0, min(max_backoff,
//! base * 2^n))`, or at least the provider's `Retry-After` clamped to `max_backoff`. When the
//! retries run out the error becomes [`LlmError::RetryExhausted`].
//!
//! [`RetryPolicy::run_until`] also knows the request's deadline: when the provider asks for a
//! longer wait than the deadline leaves, the call fails at once with
//! [`LlmError::RetryAfterExceedsDeadline`] (naming the wait asked for) instead of sleeping;
//! when the policy's own wait would use up the deadline, it fails with
//! [`LlmError::RetryExhausted`].

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;

use crate::error::LlmError;

/// How a policy waits between attempts (injectable so tests never really sleep).
pub type Sleeper = Arc<dyn Fn(Duration) -> BoxFuture<'static, ()> + Send + Sync>;

/// When and how often to retry a failed model call.
#[derive(Clone)]
pub struct RetryPolicy {
    /// Retries after the first attempt (default 3).
    pub max_retries: u32,
    /// Backoff base (default 1 s).
    pub base: Duration,
    /// Upper bound of the jittered backoff (default 60 s).
    pub max_backoff: Duration,
    sleeper: Option<Sleeper>,
}

impl fmt::Debug for RetryPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("max_retries", &self.max_retries)
            .field("base", &self.base)
            .field("max_backoff", &self.max_backoff)
            .field("custom_sleeper", &self.sleeper.is_some())
            .finish()
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::new(3, Duration::from_secs(1), Duration::from_secs(60))
    }
}

impl RetryPolicy {
    /// A policy with these limits.
    pub fn new(max_retries: u32, base: Duration, max_backoff: Duration) -> Self {
        Self {
            max_retries,
            base,
            max_backoff,
            sleeper: None,
        }
    }

    /// A policy that never retries.
    pub fn none() -> Self {
        Self::new(0, Duration::ZERO, Duration::ZERO)
    }

    /// Replaces `tokio::time::sleep` between attempts (tests record the delays instead of
    /// waiting).
    pub fn with_sleeper<F, Fut>(mut self, sleeper: F) -> Self
    where
        F: Fn(Duration) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.sleeper = Some(Arc::new(move |d| Box::pin(sleeper(d))));
        self
    }

    /// The upper bound of the jittered wait before retry number `attempt` (0-based):
    /// `min(max_backoff, base * 2^attempt)`.
    pub fn backoff_cap(&self, attempt: u32) -> Duration {
        2u32.checked_pow(attempt)
            .and_then(|factor| self.base.checked_mul(factor))
            .unwrap_or(self.max_backoff)
            .min(self.max_backoff)
    }

    /// The wait before retry number `attempt`: full jitter in `[0, backoff_cap]`, but never
    /// less than the provider's `Retry-After` clamped to `max_backoff`.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let cap = u64::try_from(self.backoff_cap(attempt).as_nanos()).unwrap_or(u64::MAX);
        let jitter = if cap == 0 {
            Duration::ZERO
        } else {
            Duration::from_nanos(rand::random_range(0..=cap))
        };
        match retry_after {
            Some(at_least) => jitter.max(at_least.min(self.max_backoff)),
            None => jitter,
        }
    }

    async fn sleep(&self, delay: Duration) {
        match &self.sleeper {
            Some(sleeper) => sleeper(delay).await,
            None => tokio::time::sleep(delay).await,
        }
    }

    /// Runs `op` (given the 0-based attempt number) until it succeeds, fails with an error
    /// that is not retryable, or the retries run out ([`LlmError::RetryExhausted`]).
    pub async fn run<T, F, Fut>(&self, op: F) -> Result<T, LlmError>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, LlmError>>,
    {
        self.run_until(None, op).await
    }

    /// Like [`run`](Self::run), within a deadline: a retry whose wait would reach past
    /// `deadline` is not attempted. If the provider's `Retry-After` alone is longer than what
    /// is left, the error is [`LlmError::RetryAfterExceedsDeadline`]; if the policy's wait is,
    /// [`LlmError::RetryExhausted`]. Either way the call fails at once, without sleeping.
    pub async fn run_until<T, F, Fut>(
        &self,
        deadline: Option<Instant>,
        mut op: F,
    ) -> Result<T, LlmError>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, LlmError>>,
    {
        let mut attempt: u32 = 0;
        loop {
            match op(attempt).await {
                Ok(value) => return Ok(value),
                Err(error) if error.is_retryable() && attempt < self.max_retries => {
                    let asked = error.retry_after();
                    let delay = self.delay(attempt, asked);
                    if let Some(deadline) = deadline {
                        let remaining = deadline.saturating_duration_since(Instant::now());
                        if let Some(requested) = asked.filter(|asked| *asked > remaining) {
                            return Err(LlmError::RetryAfterExceedsDeadline {
                                requested,
                                remaining,
                                last: Box::new(error),
                            });
                        }
                        if delay >= remaining {
                            return Err(LlmError::RetryExhausted {
                                attempts: attempt + 1,
                                last: Box::new(error),
                            });
                        }
                    }
                    tracing::warn!(
                        attempt = attempt + 1,
                        max_retries = self.max_retries,
                        delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                        error = %error,
                        "model call failed; retrying"
                    );
                    self.sleep(delay).await;
                    attempt += 1;
                }
                Err(error) if error.is_retryable() && attempt > 0 => {
                    return Err(LlmError::RetryExhausted {
                        attempts: attempt + 1,
                        last: Box::new(error),
                    });
                }
                Err(error) => return Err(error),
            }
        }
    }
}

/// Parses a `Retry-After` value: delay-seconds (`"120"`, fractions and exponents accepted)
/// or an HTTP date (`"Wed, 21 Oct 2015 07:28:00 GMT"`, measured from `now`; past dates give
/// zero). A number too large for a [`Duration`] (`"1e30"`) saturates to [`Duration::MAX`];
/// negative, NaN or unparsable values give `None`.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<f64>() {
        return seconds_to_duration(seconds);
    }
    let at = parse_http_date(value)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// A non-negative number of seconds as a [`Duration`], saturating at [`Duration::MAX`]
/// (`None` for negative or NaN values).
pub(crate) fn seconds_to_duration(seconds: f64) -> Option<Duration> {
    if seconds.is_nan() || seconds < 0.0 {
        return None;
    }
    Some(Duration::try_from_secs_f64(seconds).unwrap_or(Duration::MAX))
}

/// Parses an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
fn parse_http_date(value: &str) -> Option<SystemTime> {
    let fields: Vec<&str> = value.split_whitespace().collect();
    let [_weekday, day, month, year, time, zone] = fields.as_slice() else {
        return None;
    };
    if !zone.eq_ignore_ascii_case("GMT") && !zone.eq_ignore_ascii_case("UTC") {
        return None;
    }
    let day: u32 = day.parse().ok()?;
    let year: i64 = year.parse().ok().filter(|y| (1..=9999).contains(y))?;
    const MONTHS: [&str; 12] = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    let month = MONTHS.iter().position(|m| m.eq_ignore_ascii_case(month))?;
    let mut hms = time.split(':').map(|p| p.parse::<u64>().ok());
    let (h, m, s) = (hms.next()??, hms.next()??, hms.next()??);
    if hms.next().is_some() || !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    let days = days_from_civil(year, u32::try_from(month).ok()? + 1, day);
    let secs = days
        .checked_mul(86_400)?
        .checked_add(i64::try_from(h * 3600 + m * 60 + s).ok()?)?;
    let secs = u64::try_from(secs).ok()?;
    UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(month) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = UNIX_EPOCH + Duration::from_secs(1_445_412_470); // 2015-10-21 07:27:50 GMT
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-3", now), None);
        assert_eq!(parse_retry_after("NaN", now), None);
        assert_eq!(parse_retry_after("1e30", now), Some(Duration::MAX));
        assert_eq!(parse_retry_after("inf", now), Some(Duration::MAX));
        assert_eq!(
            parse_retry_after("0.25", now),
            Some(Duration::from_millis(250))
        );
    }

    #[test]
    fn backoff_is_capped_and_jittered() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.backoff_cap(0), Duration::from_secs(1));
        assert_eq!(policy.backoff_cap(3), Duration::from_secs(8));
        assert_eq!(policy.backoff_cap(10), Duration::from_secs(60));
        assert_eq!(policy.backoff_cap(100), Duration::from_secs(60));
        for attempt in 0..8 {
            assert!(policy.delay(attempt, None) <= policy.backoff_cap(attempt));
        }
        assert!(policy.delay(0, Some(Duration::from_secs(5))) >= Duration::from_secs(5));
        assert_eq!(
            policy.delay(0, Some(Duration::MAX)),
            Duration::from_secs(60),
            "Retry-After is clamped to max_backoff"
        );
    }
}
