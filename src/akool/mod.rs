//! The Akool head-swap API client: the only code that speaks the API's wire format.
//!
//! Every failure is classified exactly once, here, into [`ApiError`]; the scheduler acts on
//! the variant and never looks at HTTP statuses or business codes itself.

mod client;
mod wire;

pub use client::{Client, ClientConfig, Credentials};

use std::fmt;
use std::time::Duration;

/// Remote processing status shared by analyses and render tasks (1 queued, 2 processing,
/// 3 completed, 4 failed). Any other value is kept and treated as still running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteStatus {
    Queued,
    Processing,
    Completed,
    Failed,
    /// A status value the documentation does not list; counts as still running.
    Unknown(i64),
}

impl RemoteStatus {
    pub fn from_code(code: i64) -> RemoteStatus {
        match code {
            1 => RemoteStatus::Queued,
            2 => RemoteStatus::Processing,
            3 => RemoteStatus::Completed,
            4 => RemoteStatus::Failed,
            other => RemoteStatus::Unknown(other),
        }
    }

    pub fn is_running(self) -> bool {
        !matches!(self, RemoteStatus::Completed | RemoteStatus::Failed)
    }
}

/// A subject (person) detected by an analysis.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Subject {
    pub obj_id: u32,
    /// Preview image of that person in the video.
    pub img_url: String,
}

/// An analysis record, from submit or detail.
#[derive(Debug, Clone, PartialEq)]
pub struct Analysis {
    pub id: String,
    pub status: RemoteStatus,
    /// 0–100, approximate; 0 when absent.
    pub progress: f64,
    /// Detected subjects (from `analysis_result.media`; empty until completed).
    pub subjects: Vec<Subject>,
    pub error_code: Option<i64>,
    pub error_reason: Option<String>,
}

/// A render task, from create or detail.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    pub id: String,
    pub status: RemoteStatus,
    /// 0–100, approximate; 0 when absent.
    pub progress: f64,
    /// The output video URL; `None` while it is null, empty or absent.
    pub output_url: Option<String>,
    pub video_duration: Option<f64>,
    pub error_code: Option<i64>,
    pub error_reason: Option<String>,
}

/// One face-to-subject mapping of a create request.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Mapping {
    pub obj_id: u32,
    pub img_url: String,
}

/// The output resolution of a render: the only two values the API accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Resolution {
    #[serde(rename = "480p")]
    P480,
    #[serde(rename = "720p")]
    P720,
}

impl Resolution {
    pub fn as_str(self) -> &'static str {
        match self {
            Resolution::P480 => "480p",
            Resolution::P720 => "720p",
        }
    }
}

impl fmt::Display for Resolution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for Resolution {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl std::str::FromStr for Resolution {
    type Err = String;

    /// `480p` or `720p`, in any case.
    fn from_str(value: &str) -> Result<Resolution, String> {
        match value.to_ascii_lowercase().as_str() {
            "480p" => Ok(Resolution::P480),
            "720p" => Ok(Resolution::P720),
            _ => Err(format!("{value:?} must be 480p or 720p")),
        }
    }
}

/// The body of a create-task request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateTask {
    /// Exactly the analysed URL string.
    pub video_url: String,
    pub mappings: Vec<Mapping>,
    pub model_name: String,
    pub resolution: Resolution,
    pub template_id: Option<String>,
    pub keep_original_sound: bool,
}

/// Every way an API call can fail, classified once. The scheduler acts on the variant.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiError {
    /// 1005 or HTTP 429. Never counts against a job.
    Throttled { retry_after: Option<Duration> },
    /// 2001, HTTP 5xx, timeouts, connection resets, a body that is not the envelope.
    /// `outcome_unknown` is true when the request may have been processed (the request was
    /// sent and no well-formed answer came back): for a create that is the ambiguous window.
    Transient {
        detail: String,
        outcome_unknown: bool,
    },
    /// 1014: the remote record does not exist (for this team).
    NotFound { message: String },
    /// 1104: the account has not enough credits.
    OutOfCredits { message: String },
    /// 1101, 1102, 1200: the credentials were rejected. Stops the whole run.
    Unauthorized { code: i64, message: String },
    /// 1003 and every other business code: the request itself is wrong. Not retried.
    Rejected { code: i64, message: String },
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::Throttled {
                retry_after: Some(after),
            } => {
                write!(
                    f,
                    "throttled by the API (retry after {})",
                    humantime::format_duration(*after)
                )
            }
            ApiError::Throttled { retry_after: None } => write!(f, "throttled by the API"),
            ApiError::Transient { detail, .. } => write!(f, "transient API failure: {detail}"),
            ApiError::NotFound { message } => write!(f, "not found (1014): {message}"),
            ApiError::OutOfCredits { message } => write!(f, "out of credits (1104): {message}"),
            ApiError::Unauthorized { code, message } => {
                write!(f, "authorization rejected ({code}): {message}")
            }
            ApiError::Rejected { code, message } => write!(f, "rejected ({code}): {message}"),
        }
    }
}

impl std::error::Error for ApiError {}

impl ApiError {
    /// The Akool business code behind this error, if there is one.
    pub fn code(&self) -> Option<i64> {
        match self {
            ApiError::Throttled { .. } => Some(1005),
            ApiError::Transient { .. } => None,
            ApiError::NotFound { .. } => Some(1014),
            ApiError::OutOfCredits { .. } => Some(1104),
            ApiError::Unauthorized { code, .. } | ApiError::Rejected { code, .. } => Some(*code),
        }
    }
}
