//! What users see of the store: `status` (counts, work in flight, failures), `export` (one CSV
//! row per job) and `report` (an HTML page of the batch), plus the views a running process
//! keeps for them.
//!
//! sled allows one process per database. While a run holds it, `status` reads the snapshot the
//! run writes every few seconds to `<db>.view.json` (`snapshot`), and `export` and `report`
//! ask the running process for its records over a socket beside the database (`live`).
//! Reading writes nothing to the database.

mod export;
pub mod live;
mod report;
mod snapshot;
mod status;

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::exit::Fatal;
use crate::job::{AnalysisRecord, Job, JobState};
use crate::store::{Store, StoreError};

pub use export::{EXPORT_COLUMNS, error_text, export, flags_text, mappings_text, write_export};
pub use report::report;
pub use snapshot::{
    Failure, InFlight, MAX_FAILURES_LISTED, MAX_IN_FLIGHT_LISTED, MAX_ROW_CHANGED_LISTED,
    ServiceOutage, Snapshot, snapshot_path, write_snapshot,
};
pub use status::status;

/// Every record of a database: from the store, or from the process running on it.
pub(crate) struct Records {
    pub jobs: Vec<Job>,
    pub analyses: Vec<AnalysisRecord>,
}

impl Records {
    /// Read every job and analysis of `db`, asking the running process while a run holds it.
    pub(crate) fn load(db: &Path) -> Result<Records, Fatal> {
        match Store::open_existing(db) {
            Ok(store) => {
                let jobs = store.jobs().collect::<Result<Vec<_>, StoreError>>()?;
                let analyses = store.analyses().collect::<Result<Vec<_>, StoreError>>()?;
                Ok(Records { jobs, analyses })
            }
            Err(StoreError::Locked { .. }) => {
                let (jobs, analyses) = live::fetch(db)?;
                Ok(Records { jobs, analyses })
            }
            Err(error) => Err(error.into()),
        }
    }
}

pub(crate) fn is_in_flight(state: JobState) -> bool {
    matches!(
        state,
        JobState::Analyzing | JobState::Submitting | JobState::Rendering | JobState::Downloading
    )
}

pub(crate) fn needs_attention(state: JobState) -> bool {
    state.is_final() && state != JobState::Done
}

/// Write to stdout; a closed pipe (`status | head`) ends quietly.
pub fn write_stdout(bytes: &[u8]) -> Result<(), Fatal> {
    let stdout = io::stdout();
    let mut out = stdout.lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(error) => Err(Fatal::new("cannot write to stdout").cause(error)),
    }
}

/// Write `path` through a temporary file in the same folder: fsync, then rename over it.
pub(crate) fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<()> {
    let folder = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file name"))?;
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(name);
    temp_name.push(format!(".tmp-{}", std::process::id()));
    let temp = folder.join(temp_name);
    let result = (|| {
        let mut file = File::create(&temp)?;
        write(&mut file)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&temp, path)?;
        // Make the rename itself durable; not every platform lets a folder be fsynced.
        if let Ok(folder) = File::open(folder) {
            let _ = folder.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}
