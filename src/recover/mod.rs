//! `recover`: rebuild a damaged database from the manifest and the journal, so that nothing
//! already paid for is bought again.
//!
//! A database counts as damaged when sled cannot open it, a record cannot be read, the folder
//! or its data file is gone, or it lacks a paid fact the journal holds (a job, a task id, a
//! finished output, a `possible_duplicate` flag, a create that may be on the wire). Anything
//! else is refused ([`RecoverError::Clean`]): a healthy database is never rebuilt.
//!
//! The damaged database is only ever read through a private copy, then moved aside
//! (`<db>.damaged-<timestamp>`), never deleted or written. The new one is built in a folder of
//! its own beside it and renamed into place once flushed, so a crash part-way leaves the old
//! database in place, or (between the two renames) no database and the journal, from which
//! `recover` simply builds again. While it works,
//! `recover` holds the database's and the journal's locks, so no run can start meanwhile.
//!
//! Jobs are rebuilt through [`crate::job::Job::apply`], replaying the events their facts stand for, so the
//! state machine stays the only way a state changes: a journalled task id puts the job in
//! `rendering` (the next run polls it, never creates it again), an intent without an answer in
//! `submitting` (the next run flags it `possible_duplicate` or holds it, as after a crash), a
//! finished output in `done` if the file is there with its SHA-256, else back in `downloading`
//! without a link (the next run asks task detail for a fresh one). Then the manifest is
//! ingested as `run` does, which adds the jobs the journal never saw and reconciles the rest.

mod rebuild;

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::fs::File;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use crate::exit::Fatal;
use crate::ingest::IngestReport;
use crate::job::{AnalysisRecord, AnalysisState, IllegalTransition};
use crate::journal::{self, Journal, JournalError, Replay, ReplayStats, Stage};
use crate::manifest::{self, Defaults, ManifestError, ManifestJob};
use crate::store::{Store, StoreError};

pub use rebuild::{MissingFact, Orphan, Rebuilt, audit, heal, missing_fact, verify_output};

/// How to rebuild.
#[derive(Debug, Clone, Default)]
pub struct RecoverOptions {
    /// Defaults for blank manifest cells. `None`: the ones of the last ingest the journal
    /// recorded, else the command line's defaults. They must match the runs' for the
    /// manifest's rows to match the journalled requests.
    pub defaults: Option<Defaults>,
}

/// What recovery did, for the summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoverReport {
    /// Why the database was judged damaged.
    pub damage: String,
    /// Where the damaged database was moved (`None` when there was no folder to move).
    pub moved_to: Option<PathBuf>,
    /// What the journal held and what of it was unreadable.
    pub journal: ReplayStats,
    /// The journalled jobs, and how each was left.
    pub rebuilt: Rebuilt,
    /// Manifest jobs the journal knows nothing paid for: started from the manifest.
    pub fresh: usize,
    /// Videos whose journalled analysis is polled again rather than requested anew.
    pub analyses_reattached: usize,
    /// The manifest's ingest into the rebuilt database.
    pub ingest: IngestReport,
}

/// Why `recover` did nothing.
#[derive(thiserror::Error, Debug)]
pub enum RecoverError {
    #[error("database {path} opens cleanly and holds every fact of its journal: there is nothing to recover", path = .path.display())]
    Clean { path: PathBuf },
    #[error("database {path} is in use by another headswap-batch process", path = .path.display())]
    InUse { path: PathBuf },
    #[error("no journal at {path}: there is nothing to recover the database from", path = .path.display())]
    NoJournal { path: PathBuf },
    #[error(
        "database {path} is missing, but its journal holds {paid} job(s) already sent to the service",
        path = .path.display()
    )]
    JournalWithoutDatabase { path: PathBuf, paid: usize },
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot {doing} {path}: {cause}", path = .path.display())]
    Io {
        doing: &'static str,
        path: PathBuf,
        cause: String,
    },
    /// The journal's facts did not replay through the state machine: a bug.
    #[error("cannot rebuild job {job}: {cause}")]
    Rebuild { job: String, cause: String },
}

impl From<IllegalTransition> for RecoverError {
    fn from(error: IllegalTransition) -> RecoverError {
        RecoverError::Rebuild {
            job: error.id.clone(),
            cause: error.to_string(),
        }
    }
}

/// How to put the error to the user; `manifest` goes into the suggested commands.
pub fn fatal(error: RecoverError, db: &Path, manifest: &Path) -> Fatal {
    match error {
        RecoverError::Clean { .. } => Fatal::new(error.to_string()).hint(
            "`headswap-batch run` resumes it as it is; recover only rebuilds a database that cannot be read",
        ),
        RecoverError::InUse { .. } => Fatal::new(error.to_string())
            .hint("wait for the other run to finish (or stop it), then recover"),
        RecoverError::NoJournal { .. } => Fatal::new(error.to_string()).hint(
            "restore the database folder from a backup, or move it aside to start over (jobs already submitted would then be submitted and paid again)",
        ),
        RecoverError::JournalWithoutDatabase { .. } => {
            Fatal::new(error.to_string()).hint(recover_hint(db, manifest))
        }
        RecoverError::Manifest(error) => error.into(),
        RecoverError::Journal(error) => error.into(),
        RecoverError::Store(error) => error.into(),
        RecoverError::Io { .. } => Fatal::new(error.to_string())
            .hint("check the folder that holds the database and its permissions"),
        RecoverError::Rebuild { .. } => Fatal::new(error.to_string())
            .hint("this is a bug in headswap-batch; please report it (the database was left as it was)"),
    }
}

/// The hint `run` (and `status`, `export`) should give on a damaged database whose journal
/// exists: the exact command that rebuilds it.
pub fn recover_hint(db: &Path, manifest: &Path) -> String {
    format!(
        "its journal ({}) keeps every paid fact: run `headswap-batch recover {}{}` to rebuild the database (nothing already paid for is bought again; the damaged one is kept aside)",
        journal::journal_path(db).display(),
        shell_word(manifest),
        if db == Path::new("headswap.db") {
            String::new()
        } else {
            format!(" --db {}", shell_word(db))
        }
    )
}

/// A damaged-database error as `run` should report it: with [`recover_hint`] when a journal
/// exists beside the database, with the store's own hint otherwise.
pub fn damaged_database(error: StoreError, db: &Path, manifest: &Path) -> Fatal {
    let damaged = matches!(error, StoreError::Damaged { .. });
    let fatal: Fatal = error.into();
    if damaged && journal::journal_path(db).is_file() {
        fatal.hint(recover_hint(db, manifest))
    } else {
        fatal
    }
}

/// Before `run` creates a new database: refuse when the journal beside it holds jobs already
/// sent to the service (the database was deleted or emptied), since starting over would buy
/// them again. A missing journal, or one with nothing paid in it, is fine.
pub fn check_fresh_database(db: &Path) -> Result<(), RecoverError> {
    let replay = match journal::replay(db) {
        Ok(replay) => replay,
        Err(JournalError::Missing { .. }) => return Ok(()),
        Err(error) => return Err(error.into()),
    };
    let paid = replay.paid_jobs().count();
    if paid == 0 {
        return Ok(());
    }
    Err(RecoverError::JournalWithoutDatabase {
        path: db.to_path_buf(),
        paid,
    })
}

/// Rebuild the database at `db` from `manifest` and the journal beside it, if the database is
/// damaged; refuse otherwise. See the module documentation.
pub fn recover(
    manifest: &Path,
    db: &Path,
    options: &RecoverOptions,
) -> Result<RecoverReport, RecoverError> {
    let journal = match Journal::open_existing(db) {
        Ok(journal) => journal,
        Err(JournalError::Missing { path }) => return Err(RecoverError::NoJournal { path }),
        Err(JournalError::Locked { .. }) => {
            return Err(RecoverError::InUse {
                path: db.to_path_buf(),
            });
        }
        Err(error) => return Err(error.into()),
    };
    // The manifest first: a bad one stops everything before the database is touched.
    let bytes = manifest::read_file(manifest)?;
    let manifest = manifest::parse_bytes(manifest, &bytes)?;
    drop(bytes);
    let replay = journal.replay()?;
    let _database_lock = DatabaseLock::take(db)?;
    let damage = diagnose(db, &journal, &replay)?;

    let defaults = options.defaults.clone().unwrap_or_else(|| {
        replay
            .ingest
            .as_ref()
            .map(|ingest| Defaults {
                resolution: ingest.resolution,
                model_name: ingest.model_name.clone(),
            })
            .unwrap_or_default()
    });
    let building = journal::sibling(db, &format!(".recovering-{}", std::process::id()));
    remove_own_folder(&building)?;
    let mut report = RecoverReport {
        damage,
        journal: replay.stats.clone(),
        ..RecoverReport::default()
    };
    let built = build(
        &building,
        manifest,
        &journal,
        &replay,
        &defaults,
        &mut report,
    );
    if let Err(error) = built {
        let _ = remove_own_folder(&building);
        return Err(error);
    }
    report.moved_to = swap_in(db, &building)?;
    Ok(report)
}

/// Why the database needs recovering, or [`RecoverError::Clean`].
fn diagnose(db: &Path, journal: &Journal, replay: &Replay) -> Result<String, RecoverError> {
    if !db.exists() {
        return Ok("the database folder is missing".into());
    }
    if !db.is_dir() {
        return Ok("the database path is not a folder".into());
    }
    if !db.join("db").is_file() {
        return Ok("the database folder holds no data file".into());
    }
    // sled may rewrite parts of a damaged database while opening it: open a private copy, so
    // the damaged one stays exactly as it was found.
    let copy = journal::sibling(db, &format!(".recover-check-{}", std::process::id()));
    remove_own_folder(&copy)?;
    let result = (|| {
        if let Err(error) = copy_folder(db, &copy) {
            return Ok(format!("its files cannot be read: {error}"));
        }
        let store = match Store::open_existing(&copy) {
            Ok(store) => store,
            Err(error @ StoreError::NewerSchema { .. }) => {
                return Err(RecoverError::Store(rename_path(error, db)));
            }
            Err(error) => return Ok(describe(&rename_path(error, db))),
        };
        for job in store.jobs() {
            if let Err(error) = job {
                return Ok(describe(&rename_path(error, db)));
            }
        }
        for analysis in store.analyses() {
            if let Err(error) = analysis {
                return Ok(describe(&rename_path(error, db)));
            }
        }
        let missing = match audit(&store, journal, replay) {
            Ok(missing) => missing,
            Err(RecoverError::Store(error)) => return Ok(describe(&rename_path(error, db))),
            Err(error) => return Err(error),
        };
        match missing.first() {
            None => Err(RecoverError::Clean {
                path: db.to_path_buf(),
            }),
            Some(first) => Ok(format!(
                "it is missing records the journal holds ({} job(s); job {}: {})",
                missing.len(),
                first.job,
                first.what
            )),
        }
    })();
    let _ = remove_own_folder(&copy);
    result
}

/// Build the new database in `folder`: journalled jobs first, then the manifest's ingest
/// (which adds the rest and reconciles changed rows as `run` would), then analyses.
fn build(
    folder: &Path,
    manifest: manifest::Manifest,
    journal: &Journal,
    replay: &Replay,
    defaults: &Defaults,
    report: &mut RecoverReport,
) -> Result<(), RecoverError> {
    let store = Store::open(folder)?;
    let rows: HashMap<&str, &ManifestJob> = manifest
        .jobs
        .iter()
        .map(|job| (job.id.as_str(), job))
        .collect();
    let mut journalled = BTreeSet::new();
    for facts in replay.jobs.values() {
        if facts.stage == Stage::Ready && !facts.possible_duplicate {
            // Nothing was paid: the manifest alone describes it.
            continue;
        }
        let row = rows.get(facts.id.as_str()).copied();
        let details = journal.details(facts)?;
        let analysis_id = rebuild::video_analysis(&details, row, replay);
        let rebuilt = &mut report.rebuilt;
        match rebuild::rebuild(facts, &details, row, defaults, analysis_id, rebuilt)? {
            Some(job) => {
                store.put_job(&job)?;
                journalled.insert(job.id.clone());
            }
            None => continue,
        }
    }
    let listed = manifest.jobs.len();
    let known = manifest
        .jobs
        .iter()
        .filter(|job| journalled.contains(&job.id))
        .count();
    report.fresh = listed - known;
    report.ingest = crate::ingest::ingest(&store, manifest, defaults, false, crate::now_ms())?;
    // Videos whose jobs still wait for their analysis: poll the journalled one.
    let mut waiting = BTreeSet::new();
    for job in store.jobs() {
        let job = job?;
        if job.state == crate::job::JobState::Pending {
            waiting.insert(job.spec.video_url);
        }
    }
    for video_url in waiting {
        if let Some(analysis) = replay.analyses.get(video_url.as_str()) {
            let mut record = AnalysisRecord::new(video_url, analysis.ms);
            record.state = AnalysisState::Running;
            record.analysis_id = Some(analysis.analysis_id.clone());
            record.submitted_ms = Some(analysis.ms);
            store.put_analysis(&record)?;
            report.analyses_reattached += 1;
        }
    }
    store.flush()?;
    Ok(())
}

/// Move the damaged database aside and the rebuilt one into its place, durably.
fn swap_in(db: &Path, building: &Path) -> Result<Option<PathBuf>, RecoverError> {
    let io = |doing: &'static str, path: &Path, error: std::io::Error| RecoverError::Io {
        doing,
        path: path.to_path_buf(),
        cause: error.to_string(),
    };
    let moved_to = if db.symlink_metadata().is_ok() {
        let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
            .to_string()
            .replace(['-', ':'], "");
        let mut aside = journal::sibling(db, &format!(".damaged-{stamp}"));
        let mut attempt = 1;
        while aside.symlink_metadata().is_ok() {
            attempt += 1;
            aside = journal::sibling(db, &format!(".damaged-{stamp}-{attempt}"));
        }
        std::fs::rename(db, &aside).map_err(|error| io("move aside", db, error))?;
        Some(aside)
    } else {
        None
    };
    std::fs::rename(building, db).map_err(|error| io("move into place", building, error))?;
    let folder = match db.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    File::open(&folder)
        .and_then(|folder| folder.sync_all())
        .map_err(|error| io("sync", &folder, error))?;
    Ok(moved_to)
}

/// sled's lock on the database's data file, held while recovery works (and never taken by
/// sled here: the damaged database is only opened through a copy).
struct DatabaseLock {
    _file: Option<File>,
}

impl DatabaseLock {
    /// sled releases its lock from a background thread some moments after its last handle
    /// is dropped, so a refusal is retried briefly (as `Store::open` does) before it counts.
    const GRACE: std::time::Duration = std::time::Duration::from_millis(500);

    fn take(db: &Path) -> Result<DatabaseLock, RecoverError> {
        let data = db.join("db");
        let file = match File::open(&data) {
            Ok(file) => file,
            // No data file: nothing for another process to hold either.
            Err(_) => return Ok(DatabaseLock { _file: None }),
        };
        let deadline = std::time::Instant::now() + DatabaseLock::GRACE;
        loop {
            // SAFETY: flock(2) on a descriptor owned here.
            let result = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if result == 0 {
                return Ok(DatabaseLock { _file: Some(file) });
            }
            let error = std::io::Error::last_os_error();
            if error.kind() != std::io::ErrorKind::WouldBlock {
                return Err(RecoverError::Io {
                    doing: "lock",
                    path: data,
                    cause: error.to_string(),
                });
            }
            if std::time::Instant::now() >= deadline {
                return Err(RecoverError::InUse {
                    path: db.to_path_buf(),
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

/// Copy a database folder (sled's files and its `blobs` folder) for inspection.
fn copy_folder(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        let kind = entry.file_type()?;
        if kind.is_dir() {
            copy_folder(&entry.path(), &target)?;
        } else if kind.is_file() {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// Remove a folder recovery itself made (named with this process's id), if it is there.
fn remove_own_folder(folder: &Path) -> Result<(), RecoverError> {
    match std::fs::remove_dir_all(folder) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(RecoverError::Io {
            doing: "remove",
            path: folder.to_path_buf(),
            cause: error.to_string(),
        }),
    }
}

/// A store error about the private copy, told about the database itself.
fn rename_path(error: StoreError, db: &Path) -> StoreError {
    let path = db.to_path_buf();
    match error {
        StoreError::Damaged { cause, .. } => StoreError::Damaged { path, cause },
        StoreError::Io { cause, .. } => StoreError::Io { path, cause },
        StoreError::NewerSchema {
            found, supported, ..
        } => StoreError::NewerSchema {
            path,
            found,
            supported,
        },
        other => other,
    }
}

fn describe(error: &StoreError) -> String {
    match error {
        StoreError::Damaged { cause, .. } | StoreError::Io { cause, .. } => cause.clone(),
        other => other.to_string(),
    }
}

/// A path as one shell word: bare when it is plain, single-quoted otherwise.
fn shell_word(path: &Path) -> String {
    let text = path.display().to_string();
    let plain = !text.is_empty()
        && text
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"/._-+:@%,=".contains(&byte));
    if plain {
        text
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

impl fmt::Display for RecoverReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "database damaged: {}", self.damage)?;
        if let Some(moved_to) = &self.moved_to {
            writeln!(f, "damaged database kept at {}", moved_to.display())?;
        }
        writeln!(
            f,
            "journal: {} fact(s) read, {} line(s) skipped{}",
            self.journal.facts,
            self.journal.skipped(),
            if self.journal.torn_tail {
                " (a last line torn by a crash)"
            } else {
                ""
            }
        )?;
        writeln!(
            f,
            "re-attached {} render(s) by task id; {} job(s) done, their files verified; {} to download again",
            self.rebuilt.reattached, self.rebuilt.done_verified, self.rebuilt.redownload
        )?;
        writeln!(
            f,
            "{} job(s) whose create may have been sent (flagged possible_duplicate by the next run); {} already flagged; {} failed renders",
            self.rebuilt.ambiguous, self.rebuilt.flagged, self.rebuilt.render_failed
        )?;
        writeln!(
            f,
            "{} job(s) started from the manifest; {} analyses re-attached",
            self.fresh, self.analyses_reattached
        )?;
        for orphan in &self.rebuilt.orphaned {
            writeln!(
                f,
                "warning: job {} (task {}) could not be rebuilt: {}",
                orphan.job,
                orphan.task_id.as_deref().unwrap_or("unknown"),
                orphan.reason
            )?;
        }
        Ok(())
    }
}
