//! How fast API requests may go: one governor limiter (GCRA) for the configured rate and burst,
//! a global cool-down after throttling, and an adaptive rate that halves on throttling and
//! recovers additively, so a `--rate` far above the service's real limit converges instead of
//! hammering it.

use std::num::NonZeroU32;
use std::time::Duration;

use tokio::time::Instant;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use rand::Rng;

/// The pacing of all API requests of a run.
pub struct Pacer {
    limiter: DefaultDirectRateLimiter,
    configured_rate: f64,
    /// The rate actually used: at most the configured one, lowered by throttling.
    effective_rate: f64,
    /// No request starts before this instant (throttling cool-down).
    cooldown_until: Option<Instant>,
    /// No request starts before this instant (adaptive pacing below the configured rate).
    paced_until: Option<Instant>,
    last_decrease: Option<Instant>,
    throttle_streak: u32,
    cooldown_cap: Duration,
    backoff_base: Duration,
    /// Requests started, decayed with time constant [`LOAD_WINDOW`], and when last updated:
    /// the recent request rate, for [`Pacer::load`].
    recent_starts: f64,
    recent_at: Option<Instant>,
}

/// The time constant of the recent request rate.
const LOAD_WINDOW: Duration = Duration::from_secs(1);

/// The lowest rate the adaptation goes down to, in requests per second.
const FLOOR_RATE: f64 = 0.05;

impl Pacer {
    pub fn new(rate: f64, burst: u32, cooldown_cap: Duration, backoff_base: Duration) -> Pacer {
        let period = Duration::from_secs_f64(1.0 / rate.max(FLOOR_RATE));
        let burst = NonZeroU32::new(burst.max(1)).expect("burst is at least 1");
        let quota = Quota::with_period(period)
            .expect("period is positive")
            .allow_burst(burst);
        Pacer {
            limiter: RateLimiter::direct(quota),
            configured_rate: rate,
            effective_rate: rate,
            cooldown_until: None,
            paced_until: None,
            last_decrease: None,
            throttle_streak: 0,
            cooldown_cap,
            backoff_base,
            recent_starts: 0.0,
            recent_at: None,
        }
    }

    /// The instant before which no request may start, if there is one in the future.
    pub fn gate(&self, now: Instant) -> Option<Instant> {
        [self.cooldown_until, self.paced_until]
            .into_iter()
            .flatten()
            .filter(|at| *at > now)
            .max()
    }

    /// Wait for the configured rate's next permit (cancel-safe: nothing is consumed until it
    /// resolves).
    pub async fn until_ready(&self) {
        self.limiter.until_ready().await;
    }

    /// Take a permit if one is free right now (no cool-down, no pacing gate, the limiter
    /// admits it) and count the request as started. Lets calls that are due together leave
    /// together, so their intents share one flush.
    pub fn try_start(&mut self, now: Instant) -> bool {
        if self.gate(now).is_some() || self.limiter.check().is_err() {
            return false;
        }
        self.started(now);
        true
    }

    /// A request is starting now.
    pub fn started(&mut self, now: Instant) {
        self.recent_starts = self.decayed_starts(now) + 1.0;
        self.recent_at = Some(now);
        if self.effective_rate < self.configured_rate {
            self.paced_until = Some(now + Duration::from_secs_f64(1.0 / self.effective_rate));
        }
    }

    /// A request was answered without throttling: recover slowly (additive increase).
    pub fn succeeded(&mut self) {
        self.throttle_streak = 0;
        if self.effective_rate < self.configured_rate {
            let step = (self.configured_rate * 0.02).max(0.01);
            self.effective_rate = (self.effective_rate + step).min(self.configured_rate);
        }
    }

    /// The service throttled a request: cool down (honouring Retry-After up to the cap, else
    /// full-jitter exponential backoff) and halve the rate (once per cool-down).
    pub fn throttled(&mut self, retry_after: Option<Duration>, now: Instant) -> Duration {
        self.throttle_streak += 1;
        let delay = match retry_after {
            Some(after) => after.min(self.cooldown_cap),
            None => {
                let ceiling = self
                    .backoff_base
                    .saturating_mul(1u32 << self.throttle_streak.min(16))
                    .min(self.cooldown_cap);
                ceiling.mul_f64(rand::rng().random::<f64>())
            }
        };
        let until = now + delay;
        self.cooldown_until = Some(
            self.cooldown_until
                .map_or(until, |current| current.max(until)),
        );
        // Answers to requests sent before the first throttle arrive together: one decrease
        // per cool-down window, not one per answer.
        let recently = self
            .last_decrease
            .is_some_and(|at| now < at + delay.max(Duration::from_secs(1)));
        if !recently {
            self.effective_rate = (self.effective_rate / 2.0).max(FLOOR_RATE);
            self.last_decrease = Some(now);
        }
        delay
    }

    /// `recent_starts` as of `now`.
    fn decayed_starts(&self, now: Instant) -> f64 {
        let Some(at) = self.recent_at else {
            return 0.0;
        };
        let age = now.saturating_duration_since(at).as_secs_f64();
        self.recent_starts * (-age / LOAD_WINDOW.as_secs_f64()).exp()
    }

    /// The recent request rate as a share of the rate allowed now (0 idle, 1 saturated).
    pub fn load(&self, now: Instant) -> f64 {
        let rate = self.decayed_starts(now) / LOAD_WINDOW.as_secs_f64();
        rate / self.effective_rate
    }

    /// The request rate currently aimed at.
    pub fn effective_rate(&self) -> f64 {
        self.effective_rate
    }

    /// The end of the current throttling cool-down, if one is running.
    pub fn cooling_until(&self, now: Instant) -> Option<Instant> {
        self.cooldown_until.filter(|until| *until > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_halves_the_rate_once_per_window_and_recovery_is_additive() {
        let mut pacer = Pacer::new(10.0, 2, Duration::from_secs(30), Duration::from_millis(100));
        let now = Instant::now();
        let delay = pacer.throttled(Some(Duration::from_secs(2)), now);
        assert_eq!(delay, Duration::from_secs(2));
        assert_eq!(pacer.effective_rate(), 5.0);
        // More throttled answers from the same burst do not halve again.
        pacer.throttled(
            Some(Duration::from_secs(2)),
            now + Duration::from_millis(10),
        );
        assert_eq!(pacer.effective_rate(), 5.0);
        // A later throttle does.
        pacer.throttled(None, now + Duration::from_secs(5));
        assert_eq!(pacer.effective_rate(), 2.5);
        for _ in 0..10 {
            pacer.succeeded();
        }
        assert!(
            (pacer.effective_rate() - 4.5).abs() < 1e-9,
            "{}",
            pacer.effective_rate()
        );
        for _ in 0..1000 {
            pacer.succeeded();
        }
        assert_eq!(
            pacer.effective_rate(),
            10.0,
            "recovers up to the configured rate, no further"
        );
    }

    #[test]
    fn retry_after_is_capped_and_gates_requests() {
        let mut pacer = Pacer::new(2.0, 1, Duration::from_secs(30), Duration::from_millis(100));
        let now = Instant::now();
        assert_eq!(
            pacer.throttled(Some(Duration::from_secs(3600)), now),
            Duration::from_secs(30)
        );
        assert_eq!(pacer.gate(now), Some(now + Duration::from_secs(30)));
        assert_eq!(pacer.gate(now + Duration::from_secs(31)), None);
    }

    #[test]
    fn below_the_configured_rate_requests_are_spaced() {
        let mut pacer = Pacer::new(4.0, 4, Duration::from_secs(1), Duration::from_millis(100));
        let now = Instant::now();
        pacer.started(now);
        assert_eq!(
            pacer.gate(now),
            None,
            "at the configured rate governor alone paces"
        );
        pacer.throttled(Some(Duration::ZERO), now);
        pacer.started(now);
        assert_eq!(
            pacer.gate(now),
            Some(now + Duration::from_millis(500)),
            "2 requests/s"
        );
    }

    #[test]
    fn backoff_without_retry_after_is_bounded_by_the_cap() {
        let mut pacer = Pacer::new(2.0, 1, Duration::from_secs(5), Duration::from_millis(100));
        let now = Instant::now();
        for _ in 0..40 {
            assert!(pacer.throttled(None, now) <= Duration::from_secs(5));
        }
    }
}
