//! A job and its state machine: pure code, no I/O.
//!
//! A job is one manifest `id`: one source video and 1–5 faces. Its life is
//! `pending → analyzing → ready → submitting → rendering → downloading → done`, with the final
//! states `failed`, `invalid`, `needs_mapping`, `expired` and `held` beside `done`.
//! [`Job::apply`] is the only way a job changes state; it refuses illegal moves, so a
//! scheduler bug shows up as an error instead of a silently corrupted record.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::akool::{Mapping, Resolution, Subject};

mod analysis;
mod ids;
mod subjects;

pub use analysis::{AnalysisEvent, AnalysisRecord, AnalysisState, IllegalAnalysisTransition};
pub use ids::{JobId, VideoUrl};
pub use subjects::{Choice, MultiSubject, choose_mappings};

/// The states of product.md, in pipeline order, then the other final states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Pending,
    Analyzing,
    Ready,
    Submitting,
    Rendering,
    Downloading,
    Done,
    Failed,
    Invalid,
    NeedsMapping,
    Expired,
    Held,
}

impl JobState {
    pub const ALL: [JobState; 12] = [
        JobState::Pending,
        JobState::Analyzing,
        JobState::Ready,
        JobState::Submitting,
        JobState::Rendering,
        JobState::Downloading,
        JobState::Done,
        JobState::Failed,
        JobState::Invalid,
        JobState::NeedsMapping,
        JobState::Expired,
        JobState::Held,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Analyzing => "analyzing",
            JobState::Ready => "ready",
            JobState::Submitting => "submitting",
            JobState::Rendering => "rendering",
            JobState::Downloading => "downloading",
            JobState::Done => "done",
            JobState::Failed => "failed",
            JobState::Invalid => "invalid",
            JobState::NeedsMapping => "needs_mapping",
            JobState::Expired => "expired",
            JobState::Held => "held",
        }
    }

    /// A final state needs a person (or `retry`, or an edited manifest) before anything
    /// happens to the job again.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Done
                | JobState::Failed
                | JobState::Invalid
                | JobState::NeedsMapping
                | JobState::Expired
                | JobState::Held
        )
    }

    /// True once a create may have reached the service: from here on, re-creating the job
    /// could pay for it twice.
    pub fn may_have_submitted(self) -> bool {
        matches!(
            self,
            JobState::Submitting | JobState::Rendering | JobState::Downloading | JobState::Done
        )
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for JobState {
    type Err = String;
    fn from_str(s: &str) -> Result<JobState, String> {
        JobState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| format!("unknown state {s:?}"))
    }
}

/// One face of a job as the manifest gave it: `obj_id` blank means "choose automatically".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Face {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub obj_id: Option<u32>,
    pub face_url: String,
}

/// What the manifest asks for, with defaults already applied. Its fingerprint decides whether
/// a re-ingested row "changed".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    pub video_url: VideoUrl,
    pub faces: Vec<Face>,
    pub resolution: Resolution,
    pub model_name: String,
    pub keep_original_sound: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_id: Option<String>,
    /// The manifest's extra columns, in header order, echoed into the export.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra: Vec<(String, String)>,
}

/// The last error a job met: Akool's business code when there was one, and a one-line message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobError {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i64>,
    pub message: String,
    /// The stage gave up after transient failures (5xx, resets, timeouts for longer than
    /// `--give-up-after`): the service never judged the request, so trying again may work.
    /// False for an answer about the request itself (a rejection, a failed render).
    #[serde(default, skip_serializing_if = "is_false")]
    pub transient: bool,
}

impl JobError {
    pub fn new(code: Option<i64>, message: impl Into<String>) -> JobError {
        JobError {
            code,
            message: message.into(),
            transient: false,
        }
    }

    /// The error of a stage that kept failing transiently until it gave up.
    pub fn gave_up(message: impl Into<String>) -> JobError {
        JobError {
            transient: true,
            ..JobError::new(None, message)
        }
    }
}

/// A finished download.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Output {
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
}

/// Milliseconds since the Unix epoch of the job's milestones.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timestamps {
    pub created_ms: u64,
    pub updated_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitted_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rendered_ms: Option<u64>,
    /// When the current output link was handed out (links expire).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<u64>,
}

/// A job: everything needed to resume it after a crash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: JobId,
    /// First manifest line (1-based, header is line 1) of the job's rows.
    pub line: u64,
    pub spec: JobSpec,
    /// Hash of the spec's request-relevant fields; see [`JobSpec::fingerprint`].
    pub fingerprint: String,
    pub state: JobState,
    // Empty and absent fields are left out of the stored record (half its size for a waiting
    // job): every record of every job is read at the start of a run and kept in sled's cache.
    /// The mappings the create request uses, fixed once subjects are chosen.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mappings: Vec<Mapping>,
    /// Subjects the analysis detected, kept for a job in `needs_mapping` (a person chooses).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subjects: Vec<Subject>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// The latest output URL from task detail; `None` in `downloading` means "ask for one".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Output>,
    /// Attempts at the current stage (transient failures); reset when a stage completes.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<JobError>,
    /// A create for this job may have been sent twice (the ambiguous window).
    #[serde(default, skip_serializing_if = "is_false")]
    pub possible_duplicate: bool,
    /// The render ended in status 4 (as opposed to the service being unreachable about it).
    #[serde(default, skip_serializing_if = "is_false")]
    pub render_failed: bool,
    /// A check of its video or a face before anything was bought found it cannot succeed
    /// (the job is `invalid`; `--recheck` checks again).
    #[serde(default, skip_serializing_if = "is_false")]
    pub preflight_failed: bool,
    /// The job whose render this job reuses (the same video, faces and options): no create
    /// was bought for this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reused_from: Option<JobId>,
    /// Creates that may have been billed for this job: every create answered with a task id,
    /// and every create whose answer was lost.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub creates: u32,
    /// The job `failed` because the service judged its request (a render failed with a
    /// reason, a create rejected, no person or not that obj_id detected): the same request
    /// would most likely fail again, and be paid again. `retry --failed` leaves such jobs
    /// alone unless `--permanent` is given. (Records written before this field existed read
    /// as false; `render_failed` still marks theirs.)
    #[serde(default, skip_serializing_if = "is_false")]
    pub permanent_failure: bool,
    /// The manifest row changed after the job may have been submitted, and the job was kept
    /// as submitted (`run --replace-changed` renders the new row). Cleared when the row is
    /// restored or the job replaced.
    #[serde(default, skip_serializing_if = "is_false")]
    pub row_changed: bool,
    pub times: Timestamps,
}

/// Everything that can happen to a job. The scheduler turns outcomes into these.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// `pending → analyzing`: the job waits for its video's analysis (shared per video).
    AnalysisStarted { analysis_id: Option<String> },
    /// `analyzing → ready`: subjects are chosen; these are the create's mappings.
    Mapped { mappings: Vec<Mapping> },
    /// `analyzing → needs_mapping`: several subjects and no rule to choose.
    NeedsMapping { subjects: Vec<Subject> },
    /// `ready → submitting`: the intent to create, made durable before the request is sent.
    SubmitIntent,
    /// `submitting → rendering`: the create answered with this task id.
    Created { task_id: String },
    /// `ready → rendering` without a create: another job asked for the very same render, and
    /// this one takes its task.
    Follows { leader: JobId, task_id: String },
    /// `submitting → ready` (resubmit, flagged) or `→ held`: the create's fate is unknown.
    /// `error` says why, when known (a lost answer; not a crash found at start).
    Ambiguous { hold: bool, error: Option<JobError> },
    /// `submitting → ready`: the create was certainly not processed (refused before it ran:
    /// throttled, out of credits, authorization, the connection never opened).
    SubmitAborted,
    /// `rendering → downloading` (or a fresh URL while downloading).
    Rendered { output_url: Option<String> },
    /// `downloading → done`.
    Downloaded { output: Output },
    /// `downloading → expired`: no fresh output URL could be had.
    Expired { error: JobError },
    /// A transient failure that will be retried: counts an attempt, state unchanged.
    AttemptFailed { error: JobError },
    /// `downloading`: the output link was refused; a fresh one is needed (counts an attempt).
    LinkRefused { error: JobError },
    /// The remote record is gone (1014): go back to the start of that stage.
    RemoteLost { error: JobError },
    /// `rendering → failed`: the render ended in status 4 (a retry renders again).
    RenderFailed { error: JobError },
    /// Any active state `→ failed`.
    Failed { error: JobError },
    /// `failed`/`expired`/`held` back to work, cheapest stage first (the `retry` command).
    Retry,
    /// `pending`/`analyzing`/`ready → invalid`: a check of the video or a face before anything
    /// was bought found the job cannot succeed.
    PreflightFailed { error: JobError },
    /// `invalid` (by preflight) `→ pending`: `--recheck` checks its URLs again.
    Recheck,
    /// Back to `pending` with a new spec: an unsubmitted job whose row changed, or
    /// `--replace-changed`.
    Replace { spec: JobSpec, fingerprint: String },
}

impl Event {
    fn name(&self) -> &'static str {
        match self {
            Event::AnalysisStarted { .. } => "analysis_started",
            Event::Mapped { .. } => "mapped",
            Event::NeedsMapping { .. } => "needs_mapping",
            Event::SubmitIntent => "submit_intent",
            Event::Created { .. } => "created",
            Event::Follows { .. } => "follows",
            Event::Ambiguous { .. } => "ambiguous",
            Event::SubmitAborted => "submit_aborted",
            Event::Rendered { .. } => "rendered",
            Event::Downloaded { .. } => "downloaded",
            Event::Expired { .. } => "expired",
            Event::AttemptFailed { .. } => "attempt_failed",
            Event::LinkRefused { .. } => "link_refused",
            Event::RemoteLost { .. } => "remote_lost",
            Event::RenderFailed { .. } => "render_failed",
            Event::Failed { .. } => "failed",
            Event::Retry => "retry",
            Event::PreflightFailed { .. } => "preflight_failed",
            Event::Recheck => "recheck",
            Event::Replace { .. } => "replace",
        }
    }
}

/// An event that is not legal in the job's current state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("job {id}: event {event} is not allowed in state {state}")]
pub struct IllegalTransition {
    pub id: String,
    pub state: JobState,
    pub event: &'static str,
}

impl JobSpec {
    /// A stable hash of what would be sent to the API (not the extra columns): two rows with
    /// the same fingerprint would render the same video.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        // Spelled out, not `self.faces`: the stored form of `Face` may leave out a blank
        // obj_id, but the fingerprint must stay what version 1 computed.
        let faces: Vec<serde_json::Value> = self
            .faces
            .iter()
            .map(|face| serde_json::json!({"obj_id": face.obj_id, "face_url": face.face_url}))
            .collect();
        let canonical = serde_json::json!({
            "video_url": self.video_url.as_str(),
            "faces": faces,
            "resolution": self.resolution.as_str(),
            "model_name": self.model_name,
            "keep_original_sound": self.keep_original_sound,
            "template_id": self.template_id,
        });
        let digest = Sha256::digest(canonical.to_string().as_bytes());
        hex(&digest[..16])
    }
}

fn is_zero(value: &u32) -> bool {
    *value == 0
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// Lower-case hex of some bytes.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, byte| {
            let _ = write!(out, "{byte:02x}");
            out
        })
}

impl Job {
    /// A new job in `pending`.
    pub fn new(id: JobId, line: u64, spec: JobSpec, now_ms: u64) -> Job {
        let fingerprint = spec.fingerprint();
        Job {
            id,
            line,
            spec,
            fingerprint,
            state: JobState::Pending,
            mappings: Vec::new(),
            subjects: Vec::new(),
            analysis_id: None,
            task_id: None,
            output_url: None,
            output: None,
            attempts: 0,
            last_error: None,
            possible_duplicate: false,
            render_failed: false,
            preflight_failed: false,
            reused_from: None,
            creates: 0,
            permanent_failure: false,
            row_changed: false,
            times: Timestamps {
                created_ms: now_ms,
                updated_ms: now_ms,
                ..Timestamps::default()
            },
        }
    }

    /// A job for a manifest row that cannot run, born in `invalid` with its reason.
    pub fn invalid(id: JobId, line: u64, spec: JobSpec, reason: String, now_ms: u64) -> Job {
        let mut job = Job::new(id, line, spec, now_ms);
        job.state = JobState::Invalid;
        job.last_error = Some(JobError::new(None, reason));
        job
    }

    /// The job failed for a reason the service gave about its request (see
    /// [`Job::permanent_failure`]), so retrying it would most likely pay for the same answer.
    pub fn failed_permanently(&self) -> bool {
        self.state == JobState::Failed && (self.permanent_failure || self.render_failed)
    }

    /// Apply one event. On error the job is unchanged.
    pub fn apply(&mut self, event: Event, now_ms: u64) -> Result<(), IllegalTransition> {
        use JobState as S;
        let illegal = |job: &Job, event: &Event| IllegalTransition {
            id: job.id.to_string(),
            state: job.state,
            event: event.name(),
        };
        match (self.state, event) {
            (S::Pending, Event::AnalysisStarted { analysis_id }) => {
                self.analysis_id = analysis_id;
                self.state = S::Analyzing;
            }
            (S::Analyzing, Event::AnalysisStarted { analysis_id }) => {
                // The shared analysis was (re)submitted: remember its id.
                self.analysis_id = analysis_id;
            }
            (S::Analyzing, Event::Mapped { mappings }) if !mappings.is_empty() => {
                self.mappings = mappings;
                self.subjects = Vec::new();
                self.stage_done(S::Ready);
            }
            (S::Analyzing, Event::NeedsMapping { subjects }) => {
                self.subjects = subjects;
                self.stage_done(S::NeedsMapping);
            }
            (S::Ready, Event::SubmitIntent) => {
                self.state = S::Submitting;
            }
            (S::Submitting, Event::Created { task_id }) => {
                self.task_id = Some(task_id);
                self.creates += 1;
                self.times.submitted_ms = Some(now_ms);
                self.stage_done(S::Rendering);
            }
            (S::Ready, Event::Follows { leader, task_id }) => {
                self.task_id = Some(task_id);
                self.reused_from = Some(leader);
                self.times.submitted_ms = Some(now_ms);
                self.stage_done(S::Rendering);
            }
            (S::Submitting, Event::Ambiguous { hold, error }) => {
                self.possible_duplicate = true;
                self.creates += 1;
                if error.is_some() {
                    self.last_error = error;
                }
                self.state = if hold { S::Held } else { S::Ready };
            }
            (S::Submitting, Event::SubmitAborted) => {
                self.state = S::Ready;
            }
            (S::Rendering, Event::Rendered { output_url }) => {
                self.output_url = output_url;
                self.times.link_ms = Some(now_ms);
                self.times.rendered_ms = Some(now_ms);
                self.stage_done(S::Downloading);
            }
            (S::Downloading, Event::Rendered { output_url }) => {
                self.output_url = output_url;
                self.times.link_ms = Some(now_ms);
            }
            (S::Downloading, Event::Downloaded { output }) => {
                self.output = Some(output);
                self.times.finished_ms = Some(now_ms);
                self.stage_done(S::Done);
            }
            (S::Downloading, Event::LinkRefused { error }) => {
                self.output_url = None;
                self.attempts += 1;
                self.last_error = Some(error);
            }
            (S::Downloading, Event::Expired { error }) => {
                self.output_url = None;
                self.last_error = Some(error);
                self.times.finished_ms = Some(now_ms);
                self.state = S::Expired;
            }
            (state, Event::AttemptFailed { error }) if !state.is_final() => {
                self.attempts += 1;
                self.last_error = Some(error);
            }
            (S::Analyzing, Event::RemoteLost { error }) => {
                self.analysis_id = None;
                self.last_error = Some(error);
                self.state = S::Pending;
            }
            (S::Rendering | S::Downloading, Event::RemoteLost { error }) => {
                // The task is gone: its output can no longer be fetched. Rendering again is
                // the only way forward; the old task id is kept in the error for support.
                self.task_id = None;
                self.reused_from = None;
                self.output_url = None;
                self.times.submitted_ms = None;
                self.times.rendered_ms = None;
                self.last_error = Some(error);
                self.attempts = 0;
                self.state = S::Ready;
            }
            (S::Rendering, Event::RenderFailed { error }) => {
                self.render_failed = true;
                self.permanent_failure = true;
                self.last_error = Some(error);
                self.times.finished_ms = Some(now_ms);
                self.state = S::Failed;
            }
            (state, Event::Failed { error }) if !state.is_final() => {
                self.permanent_failure = !error.transient;
                self.last_error = Some(error);
                self.times.finished_ms = Some(now_ms);
                self.state = S::Failed;
            }
            (S::Expired, Event::Retry) => {
                // The render exists; only its URL expired. Ask task detail for a fresh one.
                self.output_url = None;
                self.reopen(if self.task_id.is_some() {
                    S::Downloading
                } else {
                    S::Pending
                });
            }
            (S::Failed, Event::Retry) => {
                let state = match &self.task_id {
                    // The render itself failed: only a new render helps.
                    Some(_) if self.render_failed => {
                        self.task_id = None;
                        self.reused_from = None;
                        self.times.submitted_ms = None;
                        S::Ready
                    }
                    // The task exists and may have finished since: re-attach, never re-create.
                    Some(_) if self.times.rendered_ms.is_some() => {
                        self.output_url = None;
                        S::Downloading
                    }
                    Some(_) => S::Rendering,
                    None if !self.mappings.is_empty() => S::Ready,
                    None => {
                        self.analysis_id = None;
                        S::Pending
                    }
                };
                self.render_failed = false;
                self.permanent_failure = false;
                self.reopen(state);
            }
            (S::Pending | S::Analyzing | S::Ready, Event::PreflightFailed { error }) => {
                self.preflight_failed = true;
                self.last_error = Some(error);
                self.times.finished_ms = Some(now_ms);
                self.state = S::Invalid;
            }
            (S::Invalid, Event::Recheck) if self.preflight_failed => {
                self.preflight_failed = false;
                self.last_error = None;
                self.mappings = Vec::new();
                self.analysis_id = None;
                self.reopen(S::Pending);
            }
            (S::Held, Event::Retry) => {
                // A person looked at the held job and asks to submit it again (flag stays).
                self.reopen(S::Ready);
            }
            (_, Event::Replace { spec, fingerprint }) => {
                // A fresh job: `row_changed` and every other flag start over.
                let line = self.line;
                let created_ms = self.times.created_ms;
                *self = Job::new(self.id.clone(), line, spec, now_ms);
                self.fingerprint = fingerprint;
                self.times.created_ms = created_ms;
            }
            (_, event) => return Err(illegal(self, &event)),
        }
        self.times.updated_ms = now_ms;
        Ok(())
    }

    fn stage_done(&mut self, next: JobState) {
        self.attempts = 0;
        self.state = next;
    }

    fn reopen(&mut self, state: JobState) {
        self.attempts = 0;
        self.times.finished_ms = None;
        self.state = state;
    }
}
