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

/// What the loop remembers of failures across events.
#[derive(Default)]
pub(super) struct Failures {
    /// When each failing stage first failed in a row, in this run (shifted by the time the
    /// service was down: an outage is not charged).
    pub(super) since: HashMap<Key, Instant>,
    /// Consecutive creates rejected with the same message: (message, job ids).
    pub(super) rejections: Option<(String, Vec<JobId>)>,
    /// The youngest age at which an output link was refused: links older than half of it are
    /// refreshed before their download starts.
    pub(super) link_refused_at_age: Option<Duration>,
}

impl Dispatcher<'_> {
    /// A call of `stage` about `key` failed: apply the failure policy's run-level part
    /// (throttling cool-down, stopping the run) and return its decision for the call.
    pub(super) fn judge(
        &mut self,
        stage: Stage,
        key: Key,
        error: &ApiError,
        attempts: u32,
    ) -> Decision {
        let now = Instant::now();
        match error {
            ApiError::Throttled { retry_after } => {
                self.run.throttled += 1;
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
                if !self.breaker.is_open() {
                    self.failures.since.entry(key.clone()).or_insert(now);
                }
            }
            // Any other error is an answer: the service is up.
            _ => self.service_answered(now),
        }
        let failing_for = self
            .failures
            .since
            .get(&key)
            .map(|since| now.saturating_duration_since(*since))
            .unwrap_or_default();
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
        if matches!(decision, Decision::Fail { .. }) {
            self.failures.since.remove(&key);
        }
        decision
    }

    /// A call about `key` succeeded: its failure streak ends, and the pacer recovers a little.
    pub(super) fn succeeded(&mut self, key: &Key) {
        self.service_answered(Instant::now());
        self.pacer.succeeded();
        self.failures.since.remove(key);
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
        for since in self.failures.since.values_mut() {
            *since = (*since + down_for).min(now);
        }
    }
}
