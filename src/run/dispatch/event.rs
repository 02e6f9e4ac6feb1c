//! What the dispatcher's loop reacts to: one closed [`Event`] enum, and the requests and
//! answers that travel between the loop and its workers.
//!
//! Owns no state. The loop's `next_event` produces events; `handle` is the only consumer.

use crate::akool::{Analysis, ApiError, CreateTask, Task};
use crate::download::{DownloadError, DownloadRequest};
use crate::job::{JobId, Output, VideoUrl};
use crate::objstore::{OutputSource, StoredObject, UploadError, UploadRecord};
use crate::run::dispatch::agenda::Ticket;

/// Everything the loop reacts to.
#[derive(Debug)]
pub enum Event {
    /// A worker finished a request (an API call or a download).
    Finished(Outcome),
    /// A worker was abandoned (aborted at a hard stop); its job resumes next run.
    Abandoned,
    /// A URL check answered (`None`: every check has).
    Checked(Option<crate::preflight::UrlCheck>),
    /// A poll or a backoff is due.
    TimerDue,
    /// The rate limiter admits the next API call.
    Permit,
    /// A cool-down or pacing gate opened: queued calls may go again.
    GateOpen,
    /// The first SIGINT/SIGTERM (or the caller's stop): stop taking new work.
    Shutdown,
    /// `--max-runtime` is reached.
    Deadline,
    /// After a hard stop: requests still in flight are abandoned now.
    GraceOver,
    /// Refresh the status view and the progress display.
    Tick,
}

/// A request the loop hands to a worker. It carries copies of what the worker needs; the
/// worker never sees a job record.
#[derive(Debug, Clone)]
pub enum Request {
    Analyze {
        video_url: VideoUrl,
    },
    AnalysisDetail {
        video_url: VideoUrl,
        analysis_id: String,
    },
    Create {
        job_id: JobId,
        body: CreateTask,
    },
    TaskDetail {
        job_id: JobId,
        task_id: String,
        /// Asked for a fresh output link of a finished render, not a progress poll.
        refresh: bool,
    },
    Download {
        request: DownloadRequest,
        /// The part file's validator, for `If-Range` when the download resumes.
        etag: Option<String>,
    },
    /// Stream a finished render from its link to object storage, from where `record` stands.
    Upload {
        job_id: JobId,
        source: OutputSource,
        record: UploadRecord,
    },
}

/// A finished request: the slot it held at the service (if any) comes back with it.
#[derive(Debug)]
pub struct Outcome {
    pub ticket: Option<Ticket>,
    pub answer: Answer,
}

/// What a worker reports back: the closed set of results the loop acts on.
#[derive(Debug)]
pub enum Answer {
    Analyze {
        video_url: VideoUrl,
        result: Result<Analysis, ApiError>,
    },
    AnalysisDetail {
        video_url: VideoUrl,
        result: Result<Analysis, ApiError>,
    },
    Create {
        job_id: JobId,
        result: Result<Task, ApiError>,
    },
    TaskDetail {
        job_id: JobId,
        refresh: bool,
        result: Result<Task, ApiError>,
    },
    Download {
        job_id: JobId,
        result: Result<Output, DownloadError>,
        /// The file's validator, for `If-Range` when this download is resumed.
        etag: Option<String>,
    },
    Upload {
        job_id: JobId,
        result: Result<StoredObject, UploadError>,
    },
}
