//! The failure policy: one pure function decides, for any stage and any failure, what happens
//! next — go back in line, wait for the service, retry after a pause, restart the stage, fail
//! the job, or stop the run. No I/O, no clock: the caller passes what it knows (attempts so
//! far, how long the stage has been failing, whether the service as a whole is down, a random
//! draw for the jitter), so every rule is unit-tested as a table.
//!
//! Transient failures are retried **by time, not by count**: a stage fails only once it has
//! kept failing for `--give-up-after` (2 h by default: a flaky hour overnight must not cost a
//! job), with full-jitter backoff capped at about a minute. `--max-attempts`, when given, is a
//! second guard. Throttling and an outage of the whole service cost nothing.
//!
//! The loop applies the decision (it owns the jobs, the queues and the stop); this module never
//! touches them.

use std::time::Duration;

use crate::akool::ApiError;
use crate::download::DownloadError;
use crate::job::JobError;

/// What to do with a job whose create may have been sent but whose answer was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnAmbiguous {
    /// Create again and flag the job `possible_duplicate`.
    Resubmit,
    /// Park the job in `held` for a person.
    Hold,
}

/// How transient failures are retried.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// A stage fails once it has kept failing this long.
    pub give_up_after: Duration,
    /// A stage also fails after this many attempts in a row, when given.
    pub max_attempts: Option<u32>,
    /// First retry delay (doubles each attempt, full jitter).
    pub backoff_base: Duration,
    /// Longest retry delay.
    pub backoff_cap: Duration,
}

impl RetryPolicy {
    /// Full-jitter exponential backoff before retry number `attempt` (1-based); `draw` is a
    /// uniform random number in [0, 1).
    pub fn backoff(&self, attempt: u32, draw: f64) -> Duration {
        let ceiling = self
            .backoff_base
            .saturating_mul(1u32 << attempt.min(20))
            .min(self.backoff_cap);
        ceiling.mul_f64(draw.clamp(0.0, 1.0))
    }

    /// Whether a stage that has failed `attempt` times in a row over `failing_for` gives up.
    pub fn exhausted(&self, attempt: u32, failing_for: Duration) -> bool {
        failing_for >= self.give_up_after || self.max_attempts.is_some_and(|max| attempt >= max)
    }
}

/// The stage a failed request belonged to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Submitting a video's analysis (free of charge).
    Analyze,
    /// Polling an analysis.
    AnalysisPoll,
    /// Creating a render (spends credits).
    Create,
    /// Polling a render.
    RenderPoll,
    /// Asking a finished render for a fresh output link.
    LinkRefresh,
}

impl Stage {
    /// Starts work at the service (as opposed to asking about it).
    pub fn is_submission(self) -> bool {
        matches!(self, Stage::Analyze | Stage::Create)
    }
}

/// What the loop knows about a failure.
#[derive(Debug, Clone, Copy)]
pub struct Failure<'a> {
    pub stage: Stage,
    pub error: &'a ApiError,
    /// Attempts the stage had used before this failure.
    pub attempts: u32,
    /// How long the stage has been failing (since its first failure in a row, not counting
    /// time the service was down).
    pub failing_for: Duration,
    /// The whole service is failing (the circuit breaker is open): an outage, not the job.
    pub service_down: bool,
    /// Submitting is over for this run (out of credits, a signal, the deadline).
    pub no_new_work: bool,
    /// What to do with a create whose answer was lost.
    pub on_ambiguous: OnAmbiguous,
    /// A uniform random number in [0, 1) for the backoff's jitter.
    pub draw: f64,
}

/// What happens next to the call that failed.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Throttled: the same call goes back in line; nothing is counted.
    Requeue,
    /// The service is down: the call waits for it to come back; nothing is counted.
    Wait,
    /// Try again after a pause. `counted`: the failure counts as an attempt of the stage.
    Retry { after: Duration, counted: bool },
    /// The remote record is gone (1014): start the stage again.
    Restart,
    /// The create may have been processed without an answer: the job is flagged
    /// `possible_duplicate` and held for a person (`hold`), or created again after `after`,
    /// or — when it has kept failing too long — failed with `give_up`.
    Ambiguous {
        hold: bool,
        after: Duration,
        give_up: Option<JobError>,
    },
    /// The stage fails. `permanent`: the service judged the request itself (retrying the
    /// same request cannot help); otherwise it kept failing transiently for too long.
    Fail { error: JobError, permanent: bool },
    /// The request was not carried out and will not be this run: the stage goes back to
    /// waiting. Comes with a [`RunStop`] or during one.
    Abandon,
}

/// A failure that is about the run, not the job.
#[derive(Debug, Clone, PartialEq)]
pub enum RunStop {
    /// 1104: no new work; what is at the service is finished.
    OutOfCredits { message: String },
    /// 1101/1102/1200: stop everything.
    Unauthorized { code: i64, message: String },
}

/// Decide what an API failure means for its call, and whether it stops the run.
pub fn decide(policy: &RetryPolicy, failure: Failure<'_>) -> (Decision, Option<RunStop>) {
    let attempt = failure.attempts + 1;
    let exhausted = policy.exhausted(attempt, failure.failing_for);
    let backoff = policy.backoff(attempt, failure.draw);
    let retry = || {
        if exhausted {
            Decision::Fail {
                error: gave_up(failure.error, attempt, failure.failing_for),
                permanent: false,
            }
        } else {
            Decision::Retry {
                after: backoff,
                counted: true,
            }
        }
    };
    let decision = match failure.error {
        ApiError::Throttled { .. } if failure.no_new_work && failure.stage.is_submission() => {
            Decision::Abandon
        }
        ApiError::Throttled { .. } => Decision::Requeue,
        // A create whose answer was lost may have been billed: flagged even in an outage.
        ApiError::Transient {
            outcome_unknown: true,
            ..
        } if failure.stage == Stage::Create => {
            let hold = failure.on_ambiguous == OnAmbiguous::Hold;
            let give_up =
                (!hold && exhausted).then(|| gave_up(failure.error, attempt, failure.failing_for));
            Decision::Ambiguous {
                hold,
                after: backoff,
                give_up,
            }
        }
        ApiError::Transient { .. } if failure.service_down => Decision::Wait,
        ApiError::Transient { .. } => retry(),
        ApiError::NotFound { .. } if !failure.stage.is_submission() => Decision::Restart,
        ApiError::NotFound { .. } | ApiError::Rejected { .. } if failure.stage.is_submission() => {
            Decision::Fail {
                error: attempt_error(failure.error),
                permanent: true,
            }
        }
        // A poll the service refused: not the job's fault as far as we can tell; retried
        // like a transient failure.
        ApiError::NotFound { .. } | ApiError::Rejected { .. } => retry(),
        ApiError::OutOfCredits { message } => {
            let stop = Some(RunStop::OutOfCredits {
                message: message.clone(),
            });
            if failure.stage.is_submission() {
                return (Decision::Abandon, stop);
            }
            // A poll answered 1104: keep the record, poll again later, uncounted.
            let after = policy.backoff(1, failure.draw);
            return (
                Decision::Retry {
                    after,
                    counted: false,
                },
                stop,
            );
        }
        ApiError::Unauthorized { code, message } => {
            let stop = RunStop::Unauthorized {
                code: *code,
                message: message.clone(),
            };
            return (Decision::Abandon, Some(stop));
        }
    };
    (decision, None)
}

/// What the loop knows about a failed download.
#[derive(Debug, Clone, Copy)]
pub struct DownloadFailure<'a> {
    pub error: &'a DownloadError,
    /// Attempts the download stage had used before this failure.
    pub attempts: u32,
    /// How long the download stage has been failing.
    pub failing_for: Duration,
    pub draw: f64,
}

/// What to do after a download failed.
#[derive(Debug, Clone, PartialEq)]
pub enum DownloadDecision {
    /// Ask task detail for a fresh link after `after` (the old one was refused).
    Refresh { after: Duration },
    /// Try the download again after a pause, resuming the part file. `counted`: as an attempt.
    Retry { after: Duration, counted: bool },
    /// The service kept handing out links that could not be used: the job ends `expired`.
    Expire(JobError),
    /// The job fails: the answer can never become a video (`permanent`), or the transfer kept
    /// breaking.
    Fail { error: JobError, permanent: bool },
    /// The local disk refused: stop the run, the job stays resumable.
    StopRun,
}

/// The longest pause before asking again for an output link.
const LINK_RETRY_CAP: Duration = Duration::from_secs(10);

/// Decide what a download failure means.
pub fn decide_download(policy: &RetryPolicy, failure: DownloadFailure<'_>) -> DownloadDecision {
    let attempt = failure.attempts + 1;
    let exhausted = policy.exhausted(attempt, failure.failing_for);
    let over = humantime::format_duration(Duration::from_secs(failure.failing_for.as_secs()));
    match failure.error {
        DownloadError::LinkExpired { .. } | DownloadError::NoLink { .. } if exhausted => {
            DownloadDecision::Expire(JobError::gave_up(format!(
                "no usable output link for {over} ({})",
                counted(attempt, "try", "tries")
            )))
        }
        // A link refused at the first try most likely aged while the job waited: a fresh one
        // at once. Refused again, the service is handing out unusable links (a short lifetime,
        // clocks apart): back off, though not far — asking costs two cheap requests, and a
        // job waiting for its link is a finished render not yet delivered.
        DownloadError::LinkExpired { .. } | DownloadError::NoLink { .. } => {
            DownloadDecision::Refresh {
                after: if failure.attempts == 0 {
                    Duration::ZERO
                } else {
                    RetryPolicy {
                        backoff_cap: policy.backoff_cap.min(LINK_RETRY_CAP),
                        ..*policy
                    }
                    .backoff(attempt, failure.draw)
                },
            }
        }
        DownloadError::Transient { detail } if exhausted => DownloadDecision::Fail {
            error: JobError::gave_up(format!(
                "download failed after {} over {over}: {detail}",
                counted(attempt, "attempt", "attempts")
            )),
            permanent: false,
        },
        DownloadError::Transient { .. } => DownloadDecision::Retry {
            after: policy.backoff(attempt, failure.draw),
            counted: true,
        },
        // Progress was made: resume at once, uncounted.
        DownloadError::Cut { .. } => DownloadDecision::Retry {
            after: Duration::ZERO,
            counted: false,
        },
        DownloadError::Refused { detail } => DownloadDecision::Fail {
            error: JobError::new(None, detail),
            permanent: true,
        },
        DownloadError::Local { .. } => DownloadDecision::StopRun,
    }
}

/// The error a failed attempt leaves on its job.
pub fn attempt_error(error: &ApiError) -> JobError {
    JobError::new(error.code(), error.to_string())
}

/// The error of a create whose answer was lost.
pub fn ambiguous_text(error: &ApiError) -> String {
    match error {
        ApiError::Transient { detail, .. } => format!("create answer lost: {detail}"),
        other => format!("create answer lost: {other}"),
    }
}

/// The error of a stage that kept failing: "failed after N attempts over T: ...".
fn gave_up(error: &ApiError, attempts: u32, failing_for: Duration) -> JobError {
    let over = Duration::from_secs(failing_for.as_secs());
    let error = match error {
        ApiError::Transient {
            outcome_unknown: true,
            ..
        } => ambiguous_text(error),
        other => other.to_string(),
    };
    JobError::gave_up(format!(
        "failed after {} over {}: {error}",
        counted(attempts, "attempt", "attempts"),
        humantime::format_duration(over)
    ))
}

/// "1 attempt", "3 attempts".
fn counted(count: u32, one: &str, many: &str) -> String {
    match count {
        1 => format!("1 {one}"),
        n => format!("{n} {many}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: RetryPolicy = RetryPolicy {
        give_up_after: Duration::from_secs(7200),
        max_attempts: None,
        backoff_base: Duration::from_secs(1),
        backoff_cap: Duration::from_secs(60),
    };

    fn failure(stage: Stage, error: &ApiError, attempts: u32) -> Failure<'_> {
        Failure {
            stage,
            error,
            attempts,
            failing_for: Duration::from_secs(42),
            service_down: false,
            no_new_work: false,
            on_ambiguous: OnAmbiguous::Resubmit,
            draw: 0.5,
        }
    }

    fn transient(outcome_unknown: bool) -> ApiError {
        ApiError::Transient {
            detail: "reset".into(),
            outcome_unknown,
        }
    }

    const ALL_STAGES: [Stage; 5] = [
        Stage::Analyze,
        Stage::AnalysisPoll,
        Stage::Create,
        Stage::RenderPoll,
        Stage::LinkRefresh,
    ];

    #[test]
    fn throttling_never_counts_and_requeues_unless_submitting_is_over() {
        let error = ApiError::Throttled { retry_after: None };
        for stage in ALL_STAGES {
            assert_eq!(
                decide(&POLICY, failure(stage, &error, 99)).0,
                Decision::Requeue
            );
            let stopping = Failure {
                no_new_work: true,
                ..failure(stage, &error, 0)
            };
            let expected = if stage.is_submission() {
                Decision::Abandon
            } else {
                Decision::Requeue
            };
            assert_eq!(decide(&POLICY, stopping).0, expected, "{stage:?}");
        }
    }

    #[test]
    fn transient_failures_are_retried_by_time_not_by_count() {
        let error = transient(false);
        for stage in ALL_STAGES {
            let (decision, stop) = decide(&POLICY, failure(stage, &error, 500));
            assert_eq!(
                decision,
                Decision::Retry {
                    after: Duration::from_secs(30),
                    counted: true
                },
                "{stage:?}: 500 attempts in 42 s is no reason to give up; the pause is capped"
            );
            assert!(stop.is_none());
            let long = Failure {
                failing_for: Duration::from_secs(7200),
                ..failure(stage, &error, 2)
            };
            assert_eq!(
                decide(&POLICY, long).0,
                Decision::Fail {
                    error: JobError::gave_up(
                        "failed after 3 attempts over 2h: transient API failure: reset"
                    ),
                    permanent: false
                },
                "{stage:?}"
            );
        }
    }

    #[test]
    fn max_attempts_is_a_second_guard_when_given() {
        let policy = RetryPolicy {
            max_attempts: Some(3),
            ..POLICY
        };
        let error = transient(false);
        assert!(matches!(
            decide(&policy, failure(Stage::RenderPoll, &error, 1)).0,
            Decision::Retry { .. }
        ));
        assert!(matches!(
            decide(&policy, failure(Stage::RenderPoll, &error, 2)).0,
            Decision::Fail {
                permanent: false,
                ..
            }
        ));
    }

    #[test]
    fn an_outage_costs_nothing_but_a_lost_create_answer_is_still_flagged() {
        let refused = transient(false);
        for stage in ALL_STAGES {
            let down = Failure {
                service_down: true,
                failing_for: Duration::from_secs(9000),
                ..failure(stage, &refused, 40)
            };
            assert_eq!(decide(&POLICY, down).0, Decision::Wait, "{stage:?}");
        }
        let lost = transient(true);
        let down = Failure {
            service_down: true,
            ..failure(Stage::Create, &lost, 0)
        };
        assert!(matches!(
            decide(&POLICY, down).0,
            Decision::Ambiguous { hold: false, .. }
        ));
    }

    #[test]
    fn a_lost_create_answer_is_resubmitted_after_a_pause_never_at_once() {
        let error = transient(true);
        assert_eq!(
            decide(&POLICY, failure(Stage::Create, &error, 0)).0,
            Decision::Ambiguous {
                hold: false,
                after: Duration::from_secs(1),
                give_up: None
            }
        );
        assert!(matches!(
            decide(&POLICY, failure(Stage::RenderPoll, &error, 0)).0,
            Decision::Retry { counted: true, .. }
        ));
        let long = Failure {
            failing_for: Duration::from_secs(7200),
            ..failure(Stage::Create, &error, 2)
        };
        assert!(matches!(
            decide(&POLICY, long).0,
            Decision::Ambiguous {
                hold: false,
                give_up: Some(_),
                ..
            }
        ));
        let held = Failure {
            on_ambiguous: OnAmbiguous::Hold,
            ..long
        };
        assert!(
            matches!(
                decide(&POLICY, held).0,
                Decision::Ambiguous {
                    hold: true,
                    give_up: None,
                    ..
                }
            ),
            "a held job is never failed: a person decides"
        );
    }

    #[test]
    fn not_found_restarts_a_polled_stage_and_fails_a_submission() {
        let error = ApiError::NotFound {
            message: "gone".into(),
        };
        for stage in [Stage::AnalysisPoll, Stage::RenderPoll, Stage::LinkRefresh] {
            assert_eq!(
                decide(&POLICY, failure(stage, &error, 0)).0,
                Decision::Restart
            );
        }
        for stage in [Stage::Analyze, Stage::Create] {
            assert!(matches!(
                decide(&POLICY, failure(stage, &error, 0)).0,
                Decision::Fail {
                    error: JobError {
                        code: Some(1014),
                        ..
                    },
                    permanent: true
                }
            ));
        }
    }

    #[test]
    fn a_rejected_submission_fails_at_once_a_rejected_poll_is_retried() {
        let error = ApiError::Rejected {
            code: 1003,
            message: "bad".into(),
        };
        assert!(matches!(
            decide(&POLICY, failure(Stage::Create, &error, 0)).0,
            Decision::Fail {
                error: JobError {
                    code: Some(1003),
                    ..
                },
                permanent: true
            }
        ));
        assert!(matches!(
            decide(&POLICY, failure(Stage::RenderPoll, &error, 0)).0,
            Decision::Retry { counted: true, .. }
        ));
    }

    #[test]
    fn credits_and_authorization_stop_the_run() {
        let credits = ApiError::OutOfCredits {
            message: "short".into(),
        };
        let (decision, stop) = decide(&POLICY, failure(Stage::Create, &credits, 0));
        assert_eq!(decision, Decision::Abandon);
        assert!(matches!(stop, Some(RunStop::OutOfCredits { .. })));
        let (decision, stop) = decide(&POLICY, failure(Stage::RenderPoll, &credits, 7));
        assert!(matches!(decision, Decision::Retry { counted: false, .. }));
        assert!(stop.is_some());
        let auth = ApiError::Unauthorized {
            code: 1101,
            message: "no".into(),
        };
        for stage in ALL_STAGES {
            let (decision, stop) = decide(&POLICY, failure(stage, &auth, 0));
            assert_eq!(decision, Decision::Abandon);
            assert!(matches!(
                stop,
                Some(RunStop::Unauthorized { code: 1101, .. })
            ));
        }
    }

    fn download(error: &DownloadError, attempts: u32) -> DownloadFailure<'_> {
        DownloadFailure {
            error,
            attempts,
            failing_for: Duration::from_secs(10),
            draw: 0.5,
        }
    }

    #[test]
    fn refused_links_are_refreshed_at_once_then_with_pauses_and_expire_only_after_the_window() {
        let expired = DownloadError::LinkExpired { status: 403 };
        assert_eq!(
            decide_download(&POLICY, download(&expired, 0)),
            DownloadDecision::Refresh {
                after: Duration::ZERO
            }
        );
        assert_eq!(
            decide_download(&POLICY, download(&expired, 2)),
            DownloadDecision::Refresh {
                after: Duration::from_secs(4)
            }
        );
        assert_eq!(
            decide_download(&POLICY, download(&expired, 9)),
            DownloadDecision::Refresh {
                after: Duration::from_secs(5)
            },
            "capped lower than other retries"
        );
        let long = DownloadFailure {
            failing_for: Duration::from_secs(7200),
            ..download(&expired, 40)
        };
        assert!(matches!(
            decide_download(&POLICY, long),
            DownloadDecision::Expire(_)
        ));
    }

    #[test]
    fn a_download_that_made_progress_resumes_at_once_uncounted() {
        let cut = DownloadError::Cut {
            detail: "closed after 10 of 20 bytes".into(),
        };
        assert_eq!(
            decide_download(&POLICY, download(&cut, 30)),
            DownloadDecision::Retry {
                after: Duration::ZERO,
                counted: false
            }
        );
        let broken = DownloadError::Transient {
            detail: "connection refused".into(),
        };
        assert_eq!(
            decide_download(&POLICY, download(&broken, 0)),
            DownloadDecision::Retry {
                after: Duration::from_secs(1),
                counted: true
            }
        );
        let local = DownloadError::Local {
            path: "x".into(),
            detail: "read-only".into(),
        };
        assert_eq!(
            decide_download(&POLICY, download(&local, 0)),
            DownloadDecision::StopRun
        );
    }

    #[test]
    fn giving_up_counts_in_words_and_marks_the_error_transient() {
        let policy = RetryPolicy {
            max_attempts: Some(1),
            ..POLICY
        };
        let broken = DownloadError::Transient {
            detail: "connection refused".into(),
        };
        let DownloadDecision::Fail { error, permanent } =
            decide_download(&policy, download(&broken, 0))
        else {
            panic!("the one allowed attempt is used up");
        };
        assert_eq!(
            error.message,
            "download failed after 1 attempt over 10s: connection refused"
        );
        assert!(error.transient && !permanent);
        let expired = DownloadError::LinkExpired { status: 403 };
        let DownloadDecision::Expire(error) = decide_download(&policy, download(&expired, 0))
        else {
            panic!("expired");
        };
        assert_eq!(error.message, "no usable output link for 10s (1 try)");
        let (decision, _) = decide(&policy, failure(Stage::RenderPoll, &transient(false), 0));
        assert!(
            matches!(decision, Decision::Fail { error, .. } if error.transient
            && error.message.starts_with("failed after 1 attempt over"))
        );
        let rejected = ApiError::Rejected {
            code: 1003,
            message: "bad".into(),
        };
        let (decision, _) = decide(&policy, failure(Stage::Create, &rejected, 0));
        assert!(matches!(decision, Decision::Fail { error, permanent: true } if !error.transient));
    }

    #[test]
    fn backoff_is_full_jitter_under_a_cap() {
        assert_eq!(POLICY.backoff(1, 0.0), Duration::ZERO);
        assert_eq!(POLICY.backoff(3, 0.5), Duration::from_secs(4));
        assert_eq!(
            POLICY.backoff(30, 0.999_999),
            Duration::from_secs(60).mul_f64(0.999_999)
        );
    }
}
