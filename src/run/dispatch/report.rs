//! How a run ended: why it stopped early (`StopReason`), the final counts (`RunReport`), and
//! the jobs that need a person as the log and the summary name them (`Attention`).

use std::collections::BTreeMap;

use crate::job::{JobId, JobState};

/// Why a run stopped before every job reached a final state.
#[derive(Debug, Clone, PartialEq)]
pub enum StopReason {
    /// 1104: nothing new is submitted; in-flight work was finished.
    OutOfCredits { message: String },
    /// 1101/1102/1200: the credentials were rejected.
    Unauthorized { code: i64, message: String },
    /// The local disk refused a download (read-only, full).
    LocalDisk { path: String, detail: String },
    /// Object storage refused an output (credentials, bucket, permissions).
    Destination { message: String, hint: String },
    /// A first SIGINT or SIGTERM (or the caller's stop).
    Interrupted,
    /// `--max-runtime`: no new work could finish in time, or the time is up.
    Deadline,
    /// Several creates in a row were rejected with the same message: the account or the
    /// configuration is wrong, not the jobs.
    SystemicRejection { code: i64, message: String },
}

/// How the run ended, with the final counts.
#[derive(Debug, Clone, PartialEq)]
pub struct RunReport {
    pub stop: Option<StopReason>,
    pub states: BTreeMap<JobState, usize>,
    pub possible_duplicates: usize,
    pub api_calls: u64,
    pub throttled: u64,
    /// Jobs a check of their video or a face found could not succeed, before anything was
    /// bought for them (in this run).
    pub refused_by_preflight: usize,
    /// The first [`MAX_ATTENTION_LISTED`] jobs (by id) that need a person at the end of the
    /// run, with their reasons; `attention_total` counts them all.
    pub attention: Vec<Attention>,
    pub attention_total: usize,
    /// Failed jobs whose failure the service gave about their request (not retried by a
    /// plain `retry --failed`).
    pub permanent_failures: usize,
    /// Jobs kept as submitted although their manifest row changed (`row_changed`), by id;
    /// filled in by the caller, which ingested the manifest.
    pub row_changed: Vec<JobId>,
}

/// Jobs named one by one in the end-of-run summary; the rest are counted.
pub const MAX_ATTENTION_LISTED: usize = 20;

/// A job that needs a person, as the log and the summary name it.
#[derive(Debug, Clone, PartialEq)]
pub struct Attention {
    pub id: JobId,
    pub state: JobState,
    /// First manifest line of the job.
    pub line: u64,
    /// Why, in one line: the service's code and message, or what the job waits for.
    pub reason: String,
    /// Failed for a reason the service gave about the request (see `Job::permanent_failure`).
    pub permanent: bool,
}

impl Attention {
    pub fn of(job: &crate::job::Job) -> Attention {
        let error = job.last_error.as_ref();
        let reason = match (job.state, error) {
            (JobState::NeedsMapping, _) if !job.subjects.is_empty() => {
                let ids: Vec<String> = job
                    .subjects
                    .iter()
                    .map(|subject| subject.obj_id.to_string())
                    .collect();
                format!(
                    "{} people detected and no obj_id given (detected obj_id: {})",
                    job.subjects.len(),
                    ids.join(", ")
                )
            }
            (_, Some(error)) => match error.code {
                Some(code) => format!("[{code}] {}", error.message),
                None => error.message.clone(),
            },
            (JobState::Held, None) => {
                "a create may have been sent before the run stopped; its outcome is unknown"
                    .to_string()
            }
            (JobState::NeedsMapping, None) => "no obj_id given and no subject chosen".to_string(),
            (_, None) => "no reason recorded".to_string(),
        };
        Attention {
            id: job.id.clone(),
            state: job.state,
            line: job.line,
            reason,
            permanent: job.failed_permanently(),
        }
    }
}
