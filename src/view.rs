//! What users see of the store: `status` (counts, work in flight, failures) and `export` (one
//! CSV row per job), plus the status snapshot a running process writes next to its database.
//!
//! sled allows one process per database, so while a run holds it, `status` cannot open it.
//! The run therefore writes a [`Snapshot`] every few seconds to `<db>.view.json`
//! ([`snapshot_path`], written atomically by [`write_snapshot`]), and `status` shows that
//! file when the database is locked.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::exit::{Exit, Fatal};
use crate::job::{Job, JobState};
use crate::store::{Store, StoreError};

/// In-flight jobs listed in a snapshot (the count is always complete).
pub const MAX_IN_FLIGHT_LISTED: usize = 50;

/// Failed jobs listed in a snapshot; the rest are counted in `more_failures`.
pub const MAX_FAILURES_LISTED: usize = 100;

/// A live view older than this is probably not from the process holding the database.
const STALE_VIEW: Duration = Duration::from_secs(60);

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

/// `status [--json]`.
pub fn status(db: &Path, json: bool) -> Result<Exit, Fatal> {
    let now = now_ms();
    let snapshot = match Store::open_existing(db) {
        Ok(store) => {
            // One job at a time: a large database is summarized without holding its jobs.
            let mut failure = None;
            let jobs = store
                .jobs()
                .map_while(|job| job.map_err(|error| failure = Some(error)).ok());
            let mut snapshot = Snapshot::from_jobs(jobs, now);
            if let Some(error) = failure {
                return Err(error.into());
            }
            snapshot.timings = crate::timings::load(&store)?.describe();
            // Release the database before printing: a run may be waiting to start.
            drop(store);
            snapshot
        }
        Err(StoreError::Locked { .. }) => read_live_snapshot(db)?,
        Err(error) => return Err(error.into()),
    };
    let mut text = Vec::new();
    if json {
        serde_json::to_writer(&mut text, &snapshot).map_err(io::Error::other)
    } else {
        write_status_text(&mut text, db, &snapshot, now)
    }
    .map_err(|error| Fatal::new("cannot format the status").cause(error))?;
    if json {
        text.push(b'\n');
    }
    write_stdout(&text)?;
    Ok(Exit::Success)
}

/// `export [--out FILE]`: one CSV row per job, in id order.
///
/// Columns: `id,state,video_url,mappings,analysis_id,task_id,output,bytes,sha256,
/// error_code,error,attempts,flags,creates` (`creates`: how many creates may have been billed
/// for the job), then the union of the jobs' extra manifest columns in
/// first-seen order (a job without one gets an empty cell). See [`mappings_text`],
/// [`error_text`] and [`flags_text`] for the formats of those cells.
pub fn export(db: &Path, out: Option<&Path>) -> Result<Exit, Fatal> {
    let store = Store::open_existing(db)?;
    let jobs = collect_jobs(&store)?;
    drop(store);
    match out {
        Some(path) => {
            write_atomically(path, |file| write_export(file, &jobs)).map_err(|error| {
                Fatal::new(format!("cannot write the export to {}", path.display())).cause(error)
            })?;
        }
        None => {
            let mut bytes = Vec::new();
            write_export(&mut bytes, &jobs)
                .map_err(|error| Fatal::new("cannot format the export").cause(error))?;
            write_stdout(&bytes)?;
        }
    }
    Ok(Exit::Success)
}

/// The export's columns before the extra manifest columns.
pub const EXPORT_COLUMNS: [&str; 14] = [
    "id",
    "state",
    "video_url",
    "mappings",
    "analysis_id",
    "task_id",
    "output",
    "bytes",
    "sha256",
    "error_code",
    "error",
    "attempts",
    "flags",
    "creates",
];

/// Write the export CSV of `jobs`.
pub fn write_export(out: impl Write, jobs: &[Job]) -> io::Result<()> {
    let mut extra_columns: Vec<&str> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for job in jobs {
        for (name, _) in &job.spec.extra {
            if seen.insert(name.as_str()) {
                extra_columns.push(name);
            }
        }
    }
    let mut writer = csv::Writer::from_writer(out);
    let header = EXPORT_COLUMNS
        .iter()
        .copied()
        .chain(extra_columns.iter().copied());
    writer.write_record(header)?;
    for job in jobs {
        let output = job.output.as_ref();
        let fixed = [
            job.id.to_string(),
            job.state.to_string(),
            job.spec.video_url.to_string(),
            mappings_text(job),
            job.analysis_id.clone().unwrap_or_default(),
            job.task_id.clone().unwrap_or_default(),
            output.map(|output| output.path.clone()).unwrap_or_default(),
            output
                .map(|output| output.bytes.to_string())
                .unwrap_or_default(),
            output
                .map(|output| output.sha256.clone())
                .unwrap_or_default(),
            job.last_error
                .as_ref()
                .and_then(|error| error.code)
                .map(|code| code.to_string())
                .unwrap_or_default(),
            error_text(job),
            job.attempts.to_string(),
            flags_text(job),
            job.creates.to_string(),
        ];
        let extra = extra_columns.iter().map(|column| {
            job.spec
                .extra
                .iter()
                .find(|(name, _)| name == column)
                .map_or("", |(_, value)| value.as_str())
        });
        writer.write_record(fixed.iter().map(String::as_str).chain(extra))?;
    }
    writer.flush()
}

/// The `mappings` cell: the resolved mappings once subjects are chosen, otherwise the
/// manifest's faces, as `obj_id=url` joined by `|`; a blank obj_id shows as `?`
/// (`?=https://.../face.jpg`).
pub fn mappings_text(job: &Job) -> String {
    if job.mappings.is_empty() {
        job.spec
            .faces
            .iter()
            .map(|face| match face.obj_id {
                Some(obj_id) => format!("{obj_id}={}", face.face_url),
                None => format!("?={}", face.face_url),
            })
            .collect::<Vec<_>>()
            .join("|")
    } else {
        job.mappings
            .iter()
            .map(|mapping| format!("{}={}", mapping.obj_id, mapping.img_url))
            .collect::<Vec<_>>()
            .join("|")
    }
}

/// The `error` cell: the job's last error message. For a `needs_mapping` job it lists the
/// detected subjects instead, so a person can fill in `obj_id`:
/// `choose obj_id: 0=<preview image url>|1=<preview image url>` (obj_id, `=`, the subject's
/// preview image URL; subjects joined by `|`).
pub fn error_text(job: &Job) -> String {
    if job.state == JobState::NeedsMapping && !job.subjects.is_empty() {
        let subjects = job
            .subjects
            .iter()
            .map(|subject| format!("{}={}", subject.obj_id, subject.img_url))
            .collect::<Vec<_>>()
            .join("|");
        return format!("choose obj_id: {subjects}");
    }
    job.last_error
        .as_ref()
        .map(|error| error.message.clone())
        .unwrap_or_default()
}

/// The `flags` cell: `possible_duplicate` when a create may have been sent twice (more flags
/// would be joined by `|`).
pub fn flags_text(job: &Job) -> String {
    let mut flags = Vec::new();
    if job.possible_duplicate {
        flags.push("possible_duplicate");
    }
    flags.join("|")
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

fn collect_jobs(store: &Store) -> Result<Vec<Job>, Fatal> {
    store
        .jobs()
        .collect::<Result<Vec<Job>, StoreError>>()
        .map_err(Fatal::from)
}

/// The running process's view, for `status` while the database is locked.
fn read_live_snapshot(db: &Path) -> Result<Snapshot, Fatal> {
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

fn write_status_text(
    out: &mut impl Write,
    db: &Path,
    snapshot: &Snapshot,
    now_ms: u64,
) -> io::Result<()> {
    if snapshot.live {
        let age = Duration::from_secs(now_ms.saturating_sub(snapshot.written_ms) / 1000);
        let pid = snapshot
            .pid
            .map(|pid| format!(" (pid {pid})"))
            .unwrap_or_default();
        writeln!(
            out,
            "{}: live view from the running process{pid}, written {} ago",
            db.display(),
            humantime::format_duration(age)
        )?;
        if age > STALE_VIEW {
            // The process holding the database refreshes the view every few seconds; an old
            // one was probably left by an earlier run, and this one has not written yet.
            writeln!(
                out,
                "note: this view may be stale; the process holding the database has not refreshed it"
            )?;
        }
    } else {
        writeln!(out, "{}", db.display())?;
    }
    if let Some(outage) = &snapshot.service_unavailable {
        writeln!(out, "{}", outage.describe())?;
    }
    for line in &snapshot.timings {
        writeln!(out, "{line}")?;
    }
    writeln!(out, "{} jobs", snapshot.jobs)?;
    for (state, count) in &snapshot.states {
        if *count > 0 {
            writeln!(out, "  {:<14}{count:>8}", state.as_str())?;
        }
    }
    let in_flight = snapshot.in_flight.len() + snapshot.more_in_flight;
    if in_flight > 0 {
        writeln!(out, "in flight ({in_flight}):")?;
        for job in &snapshot.in_flight {
            write!(out, "  {}  {}", job.id, job.state)?;
            if let Some(task_id) = &job.task_id {
                write!(out, "  task {task_id}")?;
            } else if let Some(analysis_id) = &job.analysis_id {
                write!(out, "  analysis {analysis_id}")?;
            }
            if job.attempts > 0 {
                write!(out, "  attempts {}", job.attempts)?;
            }
            writeln!(out)?;
        }
        if snapshot.more_in_flight > 0 {
            writeln!(out, "  ... and {} more", snapshot.more_in_flight)?;
        }
    }
    let failures = snapshot.failures.len() + snapshot.more_failures;
    if failures > 0 {
        writeln!(out, "needing attention ({failures}):")?;
        for job in &snapshot.failures {
            write!(out, "  {}  {}", job.id, job.state)?;
            match job.error_code {
                Some(code) => writeln!(out, "  [{code}] {}", job.error)?,
                None => writeln!(out, "  {}", job.error)?,
            }
        }
        if snapshot.more_failures > 0 {
            writeln!(
                out,
                "  ... and {} more (see `export`)",
                snapshot.more_failures
            )?;
        }
    }
    if snapshot.possible_duplicates > 0 {
        writeln!(
            out,
            "possible duplicates: {} (a create may have been sent twice; flagged in `export`)",
            snapshot.possible_duplicates
        )?;
    }
    Ok(())
}

/// Write to stdout; a closed pipe (`status | head`) ends quietly.
fn write_stdout(bytes: &[u8]) -> Result<(), Fatal> {
    let stdout = io::stdout();
    let mut out = stdout.lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(error) => Err(Fatal::new("cannot write to stdout").cause(error)),
    }
}

/// Write `path` through a temporary file in the same folder: fsync, then rename over it.
fn write_atomically(
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

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}
