//! The shared analysis of one source video and its state machine: pure code, no I/O.
//!
//! One record per distinct `video_url`, shared by every job on that video (a template video
//! with 500 faces is analysed once). [`AnalysisRecord::apply`] is the only way a record changes
//! state, like [`crate::job::Job::apply`] for jobs.

use serde::{Deserialize, Serialize};

use crate::akool::Subject;
use crate::job::{JobError, VideoUrl};

/// Where the analysis of one video stands. One record per distinct `video_url`, shared by
/// every job on that video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnalysisState {
    /// Not yet requested.
    Pending,
    /// The intent to analyze is durable; the request may or may not have been sent.
    Submitting,
    /// The service accepted it; poll `analysis_id`.
    Running,
    Completed,
    Failed,
}

/// The shared analysis of one source video.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalysisRecord {
    /// The exact URL string, byte for byte as in the manifest (it is the key).
    pub video_url: VideoUrl,
    pub state: AnalysisState,
    pub analysis_id: Option<String>,
    /// Detected subjects, once completed.
    pub subjects: Vec<Subject>,
    pub attempts: u32,
    pub last_error: Option<JobError>,
    pub submitted_ms: Option<u64>,
    pub updated_ms: u64,
}

impl AnalysisRecord {
    pub fn new(video_url: VideoUrl, now_ms: u64) -> AnalysisRecord {
        AnalysisRecord {
            video_url,
            state: AnalysisState::Pending,
            analysis_id: None,
            subjects: Vec::new(),
            attempts: 0,
            last_error: None,
            submitted_ms: None,
            updated_ms: now_ms,
        }
    }
}

/// Everything that can happen to a video's analysis.
#[derive(Debug, Clone, PartialEq)]
pub enum AnalysisEvent {
    /// `pending → submitting`: the intent to analyze, made durable before the request leaves.
    SubmitIntent,
    /// `submitting → running`: the service accepted it under this id.
    Accepted { analysis_id: String },
    /// `submitting → pending`: refused before it ran (throttled while stopping, out of
    /// credits, authorization); asked again by a later turn or run.
    SubmitAborted,
    /// A transient failure that will be retried: counts an attempt, state unchanged.
    AttemptFailed { error: JobError },
    /// `running`: the service answered a poll (the failure streak, if any, ends).
    Answered,
    /// `running → completed` with the detected subjects.
    Completed { subjects: Vec<Subject> },
    /// Any state but `completed` `→ failed`.
    Failed { error: JobError },
    /// `running`/`completed → pending`: the service no longer knows the analysis (1014, or a
    /// forgotten task suggests it forgot the video too): analyze again.
    Lost,
    /// `failed → pending`: the `retry` command, or a job sent back to the start.
    Retry,
}

impl AnalysisEvent {
    fn name(&self) -> &'static str {
        match self {
            AnalysisEvent::SubmitIntent => "submit_intent",
            AnalysisEvent::Accepted { .. } => "accepted",
            AnalysisEvent::SubmitAborted => "submit_aborted",
            AnalysisEvent::AttemptFailed { .. } => "attempt_failed",
            AnalysisEvent::Answered => "answered",
            AnalysisEvent::Completed { .. } => "completed",
            AnalysisEvent::Failed { .. } => "failed",
            AnalysisEvent::Lost => "lost",
            AnalysisEvent::Retry => "retry",
        }
    }
}

/// An event that is not legal in the analysis's current state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("analysis of {video_url}: event {event} is not allowed in state {state:?}")]
pub struct IllegalAnalysisTransition {
    pub video_url: String,
    pub state: AnalysisState,
    pub event: &'static str,
}

impl AnalysisRecord {
    /// Whether the analysis is (being) done again, so a `ready` job on the video must wait
    /// for it before its create.
    pub fn in_progress(&self) -> bool {
        matches!(
            self.state,
            AnalysisState::Pending | AnalysisState::Submitting | AnalysisState::Running
        )
    }

    /// Apply one event. On error the record is unchanged.
    pub fn apply(
        &mut self,
        event: AnalysisEvent,
        now_ms: u64,
    ) -> Result<(), IllegalAnalysisTransition> {
        use AnalysisState as S;
        match (self.state, event) {
            (S::Pending, AnalysisEvent::SubmitIntent) => self.state = S::Submitting,
            (S::Submitting, AnalysisEvent::Accepted { analysis_id }) => {
                self.analysis_id = Some(analysis_id);
                self.submitted_ms = Some(now_ms);
                self.attempts = 0;
                self.state = S::Running;
            }
            (S::Submitting, AnalysisEvent::SubmitAborted) => self.state = S::Pending,
            (S::Pending | S::Submitting | S::Running, AnalysisEvent::AttemptFailed { error }) => {
                self.attempts += 1;
                self.last_error = Some(error);
            }
            (S::Running, AnalysisEvent::Answered) => self.attempts = 0,
            (S::Running, AnalysisEvent::Completed { subjects }) => {
                self.subjects = subjects;
                self.attempts = 0;
                self.state = S::Completed;
            }
            (S::Pending | S::Submitting | S::Running, AnalysisEvent::Failed { error }) => {
                self.last_error = Some(error);
                self.state = S::Failed;
            }
            (S::Running | S::Completed, AnalysisEvent::Lost) => {
                self.analysis_id = None;
                self.state = S::Pending;
            }
            (S::Failed, AnalysisEvent::Retry) => {
                self.analysis_id = None;
                self.attempts = 0;
                self.state = S::Pending;
            }
            (state, event) => {
                return Err(IllegalAnalysisTransition {
                    video_url: self.video_url.to_string(),
                    state,
                    event: event.name(),
                });
            }
        }
        self.updated_ms = now_ms;
        Ok(())
    }
}
