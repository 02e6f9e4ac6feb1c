//! The status view: what `status` shows, and the snapshot file a running process keeps fresh
//! next to its database so `status` works while sled's lock is held.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::exit::Fatal;
use crate::job::{Job, JobState};
use crate::view::{error_text, is_in_flight, needs_attention, write_atomically};

/// In-flight jobs listed in a snapshot (the count is always complete).
pub const MAX_IN_FLIGHT_LISTED: usize = 50;

/// Failed jobs listed in a snapshot; the rest are counted in `more_failures`.
pub const MAX_FAILURES_LISTED: usize = 100;

/// Jobs flagged `row_changed` named in a snapshot (the count is always complete).
pub const MAX_ROW_CHANGED_LISTED: usize = 20;

/// A live view older than this is probably not from the process holding the database.
pub(crate) const STALE_VIEW: Duration = Duration::from_secs(60);

/// What `status` shows; also the JSON of `status --json` and of the snapshot file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Total jobs.
    pub jobs: usize,
    /// Jobs per state, every state present (zeros included), in pipeline order.
    pub states: BTreeMap<JobState, usize>,
    /// Jobs at the service (analyzing, submitting, rendering, downloading): the first
    /// [`MAX_IN_FLIGHT_LISTED`] in id order.
    pub in_flight: Vec<InFlight>,
    /// In-flight jobs beyond the listed ones.
    #[serde(default)]
    pub more_in_flight: usize,
    /// Jobs that need attention (failed, expired, held, invalid, needs_mapping): the first
    /// [`MAX_FAILURES_LISTED`] in id order.
    pub failures: Vec<Failure>,
    /// Failures beyond the listed ones.
    #[serde(default)]
    pub more_failures: usize,
    /// Jobs whose create may have been sent twice.
    pub possible_duplicates: usize,
    /// Jobs kept as submitted although their manifest row changed (`row_changed`).
    #[serde(default)]
    pub row_changed: usize,
    /// The first [`MAX_ROW_CHANGED_LISTED`] of them, in id order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub row_changed_ids: Vec<String>,
    /// True when this view comes from the running process's snapshot file.
    pub live: bool,
    /// When the view was taken (ms since the Unix epoch).
    pub written_ms: u64,
    /// The process that wrote the snapshot file (set by the running process).
    pub pid: Option<u32>,
    /// The API is failing most calls: the run waits and probes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_unavailable: Option<ServiceOutage>,
    /// What the service's stages took, as learned on this database ("renders take about
    /// 52s, 90 % within 1m 11s").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timings: Vec<String>,
}

/// An outage of the API as the running process sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceOutage {
    /// When it began (ms since the Unix epoch).
    pub since_ms: u64,
    /// The pause between two probes, in seconds.
    pub probing_every_s: u64,
}

impl ServiceOutage {
    /// "service unavailable since 14:05 UTC, probing every 8s".
    pub fn describe(&self) -> String {
        let minutes = (self.since_ms / 60_000) % (24 * 60);
        format!(
            "service unavailable since {:02}:{:02} UTC, probing every {}s",
            minutes / 60,
            minutes % 60,
            self.probing_every_s
        )
    }
}

/// A job at the service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InFlight {
    pub id: String,
    pub state: JobState,
    pub task_id: Option<String>,
    pub analysis_id: Option<String>,
    pub attempts: u32,
}

/// A job that needs attention, with its reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub id: String,
    pub state: JobState,
    pub error_code: Option<i64>,
    /// The same text as the export's `error` column (see [`error_text`]).
    pub error: String,
}

impl Snapshot {
    /// Summarize jobs (in id order) as of `now_ms`. `live` is false and `pid` is `None`: the
    /// running process sets `pid` before [`write_snapshot`]; `status` sets `live` when it
    /// reads the file.
    pub fn from_jobs<J: std::borrow::Borrow<Job>>(
        jobs: impl IntoIterator<Item = J>,
        now_ms: u64,
    ) -> Snapshot {
        let mut snapshot = Snapshot {
            jobs: 0,
            states: JobState::ALL.into_iter().map(|state| (state, 0)).collect(),
            in_flight: Vec::new(),
            more_in_flight: 0,
            failures: Vec::new(),
            more_failures: 0,
            possible_duplicates: 0,
            row_changed: 0,
            row_changed_ids: Vec::new(),
            live: false,
            written_ms: now_ms,
            pid: None,
            service_unavailable: None,
            timings: Vec::new(),
        };
        for job in jobs {
            let job = job.borrow();
            snapshot.jobs += 1;
            *snapshot.states.entry(job.state).or_insert(0) += 1;
            if job.possible_duplicate {
                snapshot.possible_duplicates += 1;
            }
            if job.row_changed {
                snapshot.row_changed += 1;
                if snapshot.row_changed_ids.len() < MAX_ROW_CHANGED_LISTED {
                    snapshot.row_changed_ids.push(job.id.to_string());
                }
            }
            if is_in_flight(job.state) {
                if snapshot.in_flight.len() < MAX_IN_FLIGHT_LISTED {
                    snapshot.in_flight.push(InFlight {
                        id: job.id.to_string(),
                        state: job.state,
                        task_id: job.task_id.clone(),
                        analysis_id: job.analysis_id.clone(),
                        attempts: job.attempts,
                    });
                } else {
                    snapshot.more_in_flight += 1;
                }
            }
            if needs_attention(job.state) {
                if snapshot.failures.len() < MAX_FAILURES_LISTED {
                    snapshot.failures.push(Failure {
                        id: job.id.to_string(),
                        state: job.state,
                        error_code: job.last_error.as_ref().and_then(|error| error.code),
                        error: error_text(job),
                    });
                } else {
                    snapshot.more_failures += 1;
                }
            }
        }
        snapshot
    }
}

/// Where the running process keeps its status view: a file next to the database folder,
/// `<db>.view.json` (`headswap.db` → `headswap.db.view.json`).
pub fn snapshot_path(db: &Path) -> PathBuf {
    match (db.parent(), db.file_name()) {
        (Some(parent), Some(name)) => {
            let mut file_name = name.to_os_string();
            file_name.push(".view.json");
            parent.join(file_name)
        }
        _ => {
            let mut path = db.as_os_str().to_os_string();
            path.push(".view.json");
            PathBuf::from(path)
        }
    }
}

/// Write the snapshot file atomically: a temporary file in the same folder, fsynced, then
/// renamed over the old one, so a reader sees the old view or the new one, never half.
pub fn write_snapshot(db: &Path, snapshot: &Snapshot) -> io::Result<()> {
    let path = snapshot_path(db);
    let bytes = serde_json::to_vec(snapshot).map_err(io::Error::other)?;
    write_atomically(&path, |file| file.write_all(&bytes))
}

/// The running process's view, for `status` while the database is locked.
pub(crate) fn read_live_snapshot(db: &Path) -> Result<Snapshot, Fatal> {
    let path = snapshot_path(db);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            return Err(Fatal::new(format!(
                "database {} is in use by a running headswap-batch process, and it has not written a status view yet",
                db.display()
            ))
            .hint("try again in a few seconds"));
        }
        Err(error) => {
            return Err(Fatal::new(format!(
                "database {} is in use by a running headswap-batch process, and its status view {} cannot be read",
                db.display(),
                path.display()
            ))
            .cause(error));
        }
    };
    let mut snapshot: Snapshot = serde_json::from_slice(&bytes).map_err(|error| {
        Fatal::new(format!("the status view {} is unreadable", path.display()))
            .cause(error)
            .hint("try again in a few seconds; the running process rewrites it regularly")
    })?;
    snapshot.live = true;
    Ok(snapshot)
}
