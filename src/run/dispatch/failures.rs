//! What the loop remembers of failures and how it applies the failure policy: failure
//! streaks (shifted by the time the service was down, so an outage is never charged), the
//! circuit breaker's view of the API, and the streak of rejected creates.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use crate::akool::ApiError;
use crate::job::{JobId, VideoUrl};
use crate::run::dispatch::{Dispatcher, StopReason, draw};
use crate::run::policy::{self, Decision, Failure, RunStop, Stage};

/// What a failure streak is about: a job's API calls, its download, or a video's analysis.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Key {
    Job(JobId),
    Download(JobId),
    Video(VideoUrl),
}

/// Failures in a row of one stage, in this run.
#[derive(Debug, Clone, Copy)]
pub(super) struct Streak {
    /// When the first of them happened (shifted by the time the service was down: an outage
    /// is not charged).
    since: Instant,
    /// How many there were.
    failures: u32,
}

/// What the loop remembers of failures across events.
#[derive(Default)]
pub(super) struct Failures {
    /// The failure streak of each stage that is failing.
    streaks: HashMap<Key, Streak>,
    /// Consecutive creates rejected with the same message: (message, job ids).
    pub(super) rejections: Option<(String, Vec<JobId>)>,
    /// The youngest age at which an output link was refused: links older than half of it are
    /// refreshed before their download starts.
    pub(super) link_refused_at_age: Option<Duration>,
}

impl Failures {
    /// How many times in a row `key` has failed, and for how long.
    pub(super) fn streak(&self, key: &Key, now: Instant) -> (u32, Duration) {
        self.streaks.get(key).map_or((0, Duration::ZERO), |streak| {
            (streak.failures, now.saturating_duration_since(streak.since))
        })
    }

    /// One more failure of `key` in a row.
    pub(super) fn count(&mut self, key: &Key, now: Instant) {
        let streak = self.streaks.entry(key.clone()).or_insert(Streak {
            since: now,
            failures: 0,
        });
        streak.failures += 1;
    }

    /// `key` succeeded, made progress, or gave up: its streak is over.
    pub(super) fn end(&mut self, key: &Key) {
        self.streaks.remove(key);
    }
}

impl Dispatcher<'_> {
    /// A call of `stage` about `key` failed: apply the failure policy's run-level part
    /// (throttling cool-down, stopping the run) and return its decision for the call.
    pub(super) fn judge(&mut self, stage: Stage, key: Key, error: &ApiError) -> Decision {
        let now = Instant::now();
        match error {
            ApiError::Throttled { retry_after } => {
                self.run.throttled += 1;
                self.breaker.throttled(now);
                if !(self.run.no_new_work && stage.is_submission()) {
                    let delay = self.pacer.throttled(*retry_after, now);
                    tracing::debug!(
                        ?delay,
                        rate = self.pacer.effective_rate(),
                        "throttled; cooling down and slowing down"
                    );
                }
            }
            ApiError::Transient { .. } => {
                if self.breaker.failed(now, crate::now_ms()) {
                    tracing::warn!(
                        "most API calls are failing: the service is unavailable; waiting, probing it with one request at growing pauses (no job is charged meanwhile)"
                    );
                }
            }
            // Any other error is an answer: the service is up.
            _ => self.service_answered(now),
        }
        let (attempts, failing_for) = self.failures.streak(&key, now);
        let (decision, stop) = policy::decide(
            &self.settings.retry,
            Failure {
                stage,
                error,
                attempts,
                failing_for,
                service_down: self.breaker.is_open(),
                no_new_work: self.run.no_new_work,
                on_ambiguous: self.settings.on_ambiguous,
                draw: draw(),
            },
        );
        match stop {
            Some(RunStop::OutOfCredits { message }) => {
                tracing::error!("out of credits: {message}");
                self.stop(StopReason::OutOfCredits { message }, false);
            }
            Some(RunStop::Unauthorized { code, message }) => {
                self.stop(StopReason::Unauthorized { code, message }, true);
            }
            None => {}
        }
        match decision {
            Decision::Retry { counted: true, .. } | Decision::Ambiguous { .. } => {
                self.failures.count(&key, now);
            }
            Decision::Fail { .. } => self.failures.end(&key),
            _ => {}
        }
        decision
    }

    /// A call about `key` succeeded: its failure streak ends, and the pacer recovers a little.
    pub(super) fn succeeded(&mut self, key: &Key) {
        self.service_answered(Instant::now());
        self.pacer.succeeded();
        self.failures.end(key);
    }

    /// The service answered: if it was down, it is back, and the time it was down is not
    /// charged to any failure streak.
    pub(super) fn service_answered(&mut self, now: Instant) {
        let Some(down_for) = self.breaker.answered(now) else {
            return;
        };
        tracing::warn!(
            "the service answers again after {}; resuming",
            humantime::format_duration(Duration::from_secs(down_for.as_secs()))
        );
        for streak in self.failures.streaks.values_mut() {
            streak.since = (streak.since + down_for).min(now);
        }
    }
}
