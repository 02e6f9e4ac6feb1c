//! The exit-code registry and the fatal-error type: the one place that says how a command ends.
//!
//! Scripts and cron jobs depend on these numbers (see README "Exit codes"); a job that fails
//! never aborts a batch, it only moves the run's outcome from [`Exit::Success`] to
//! [`Exit::Incomplete`].

use std::fmt;

use crate::manifest::ManifestError;
use crate::store::StoreError;

/// How a command ended. The discriminants are the process exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Every job is `done` (or, for `check`, every row is valid).
    Success = 0,
    /// Bad configuration, rejected credentials, database locked or unreadable, unusable manifest.
    Fatal = 1,
    /// Bad flags (clap's own exit code).
    Usage = 2,
    /// The run finished, but some jobs are `failed`, `invalid`, `needs_mapping`, `expired` or `held`.
    Incomplete = 3,
    /// Stopped early with work left (`--max-runtime`).
    Deadline = 4,
    /// Out of credits (1104): nothing new was submitted after it.
    OutOfCredits = 5,
    /// Interrupted by SIGINT after a graceful stop.
    Interrupted = 130,
    /// Interrupted by SIGTERM after a graceful stop.
    Terminated = 143,
}

impl Exit {
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// A signal that stops a run gracefully (the first one) or at once (a second one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Interrupt,
    Terminate,
}

impl From<Signal> for Exit {
    fn from(signal: Signal) -> Exit {
        match signal {
            Signal::Interrupt => Exit::Interrupted,
            Signal::Terminate => Exit::Terminated,
        }
    }
}

/// A fatal error: what happened, why, and what to do about it.
///
/// Rendered as `error: ...`, one `Caused by: ...` line per cause, then an optional `hint: ...`.
#[derive(Debug)]
pub struct Fatal {
    pub message: String,
    pub causes: Vec<String>,
    pub hint: Option<String>,
}

impl Fatal {
    pub fn new(message: impl Into<String>) -> Fatal {
        Fatal {
            message: message.into(),
            causes: Vec::new(),
            hint: None,
        }
    }

    pub fn cause(mut self, cause: impl fmt::Display) -> Fatal {
        self.causes.push(cause.to_string());
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Fatal {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for Fatal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error: {}", self.message)?;
        for cause in &self.causes {
            write!(f, "\n  Caused by: {cause}")?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "\nhint: {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Fatal {}

// What to do about each way the database or the manifest can be unusable.

impl From<StoreError> for Fatal {
    fn from(error: StoreError) -> Fatal {
        let hint = match &error {
            StoreError::Locked { .. } => {
                "wait for the other run to finish (or stop it); `headswap-batch status` shows its progress meanwhile"
            }
            StoreError::Damaged { .. } => {
                "restore the database folder from a backup, or move it aside to start over (jobs already submitted would then be submitted and paid again)"
            }
            StoreError::NewerSchema { .. } => {
                "use the newer headswap-batch with this database, or give another --db"
            }
            StoreError::Io { .. } => "check the --db path and its permissions",
            StoreError::Missing { .. } => {
                "run `headswap-batch run MANIFEST` first, or point --db (HEADSWAP_DB) at the database"
            }
            StoreError::Encode { .. } => "this is a bug in headswap-batch; please report it",
        };
        Fatal::new(error.to_string()).hint(hint)
    }
}

impl From<ManifestError> for Fatal {
    fn from(error: ManifestError) -> Fatal {
        let hint = match &error {
            ManifestError::Missing { .. } | ManifestError::Unreadable { .. } => {
                "check the path given on the command line"
            }
            ManifestError::NotUtf8 { .. } | ManifestError::NotText { .. } => {
                "this does not look like a CSV file; save the sheet as \"CSV UTF-8 (comma delimited)\""
            }
            ManifestError::Empty { .. } | ManifestError::MissingColumns { .. } => {
                "the first line must be a header such as: id,video_url,face_url,obj_id,resolution"
            }
            ManifestError::DuplicateColumn { .. } => "rename or delete one of the columns",
            ManifestError::Csv { .. } => "save the sheet as \"CSV UTF-8 (comma delimited)\"",
        };
        Fatal::new(error.to_string()).hint(hint)
    }
}
