//! The exit-code registry and the fatal-error type: the one place that says how a command ends.
//!
//! Scripts and cron jobs depend on these numbers (see README "Exit codes"); a job that fails
//! never aborts a batch, it only moves the run's outcome from [`Exit::Success`] to
//! [`Exit::Incomplete`].

use std::fmt;

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
