//! The durable job store: the only module that touches sled.
//!
//! Three trees: `jobs` (job id → job record), `analyses` (video_url → analysis record, one per
//! distinct video) and `meta` (schema version, the last ingested manifest's fingerprint).
//!
//! Records are JSON inside a versioned envelope (`{"v":2,"job":{...}}`), decoded strictly: a
//! record this version cannot read is reported as damaged (naming the database and the key),
//! and a record or database written by a newer version is refused, never rewritten.
//!
//! Durability follows sled 0.34's contract: a write is crash-safe only after [`Store::flush`]
//! (or [`Store::flush_async`]) returns. [`Store::put_job`] and [`Store::put_analysis`] do not
//! flush, so the caller chooses the durable points — **before any request that spends credits,
//! its intent must be flushed**. [`Store::ingest`] flushes before it returns.
//!
//! sled holds an exclusive file lock while the database is open, which is how a second run on
//! the same database is refused ([`StoreError::Locked`]).

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::exit::Fatal;
use crate::job::{AnalysisRecord, Event, Job, JobState, hex};
use crate::manifest::{Defaults, Manifest, ManifestJob};

/// The version of the record format and tree layout this build writes.
///
/// 2: empty and absent fields of a job are left out of its record. Version 1 records read as
/// they are; the first record this build writes into a version 1 database marks it version 2
/// (reading alone leaves it as it was), so that an older build refuses it instead of
/// misreading the shorter records.
pub const SCHEMA_VERSION: u32 = 2;

/// Keys of the `meta` tree.
const META_SCHEMA_VERSION: &str = "schema_version";
const META_MANIFEST_PATH: &str = "manifest_path";
const META_MANIFEST_SHA256: &str = "manifest_sha256";
/// The defaults (resolution, model) the last ingest applied to blank cells.
const META_DEFAULTS: &str = "ingest_defaults";
/// How many rows the last ingest found changed after submission (and left alone).
const META_CHANGED_SUBMITTED: &str = "ingest_changed_submitted";
/// How many of the last ingested manifest's jobs were invalid.
const META_INVALID: &str = "ingest_invalid";

/// sled's page cache.
const CACHE_BYTES: u64 = 32 << 20;

/// How long a lock refusal is retried on open (see [`Store::open`]).
const LOCK_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

const META_INGESTED_MS: &str = "manifest_ingested_ms";

/// An open job database. Cheap to clone: clones share the same open database.
#[derive(Clone)]
pub struct Store {
    path: PathBuf,
    db: sled::Db,
    jobs: sled::Tree,
    analyses: sled::Tree,
    meta: sled::Tree,
    /// `meta` holds this build's schema version (see [`SCHEMA_VERSION`]); until it does, the
    /// first write records it.
    current_schema: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

/// Why the database cannot be used.
#[derive(thiserror::Error, Debug)]
pub enum StoreError {
    #[error("database {path} is in use by another headswap-batch process", path = .path.display())]
    Locked { path: PathBuf },
    #[error("database {path} is damaged: {cause}", path = .path.display())]
    Damaged { path: PathBuf, cause: String },
    #[error(
        "database {path} was written by a newer headswap-batch (schema version {found}; this version reads up to {supported})",
        path = .path.display()
    )]
    NewerSchema {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("cannot use database {path}: {cause}", path = .path.display())]
    Io { path: PathBuf, cause: String },
    /// [`Store::open_existing`] found no database.
    #[error("no database at {path}", path = .path.display())]
    Missing { path: PathBuf },
    /// A record could not be encoded (a bug, not a state of the disk).
    #[error("database {path}: cannot encode {what}: {cause}", path = .path.display())]
    Encode {
        path: PathBuf,
        what: String,
        cause: String,
    },
}

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

/// What an ingest did. Every manifest job lands in exactly one of `added`, `unchanged`,
/// `updated`, `changed_submitted` or `replaced`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestReport {
    /// New ids (valid or invalid).
    pub added: usize,
    /// Same id, same content: the job keeps its state.
    pub unchanged: usize,
    /// The row changed and the job had not been submitted: back to `pending` with the new
    /// row (or to `invalid` when the new row is invalid).
    pub updated: usize,
    /// The row changed after the job may have been submitted: NOT replaced (it would be
    /// paid again); `--replace-changed` restarts them.
    pub changed_submitted: Vec<String>,
    /// The row changed after submission and `replace_changed` restarted the job.
    pub replaced: Vec<String>,
    /// Manifest jobs that are invalid (new or not).
    pub invalid: usize,
    /// Jobs whose rows are gone from the manifest and that never reached the service, removed.
    pub removed: usize,
}

impl Store {
    /// Open the database at `path`, creating it if absent.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Store::open_inner(path, true)
    }

    /// Open an existing database; [`StoreError::Missing`] instead of creating one (for
    /// `status` and `export`, which must not leave an empty database behind).
    pub fn open_existing(path: &Path) -> Result<Store, StoreError> {
        Store::open_inner(path, false)
    }

    fn open_inner(path: &Path, create: bool) -> Result<Store, StoreError> {
        // sled keeps its data in `<path>/db`. Whether it held data before opening tells a
        // new database from one whose contents sled could not recognise: sled silently
        // starts empty when that file is garbage, which must not pass for a fresh start.
        let data_file = path.join("db");
        let had_data = std::fs::metadata(&data_file).is_ok_and(|meta| meta.len() > 0);
        if !create && !data_file.is_file() {
            return Err(StoreError::Missing {
                path: path.to_path_buf(),
            });
        }
        // sled's default page cache is 1 GiB. A small cap is asked for, but sled 0.34 keeps
        // the records it has read or written resident whatever the cap (measured: 100,000
        // records, 68 MB, stay about 72 MB resident with a 1 MB or a 1 GB cap); which is why
        // records are kept short.
        let config = sled::Config::new().path(path).cache_capacity(CACHE_BYTES);
        // sled releases its file lock from a background thread some moments after the last
        // handle is dropped, so a database this process just closed can look held by another
        // process for a short while: retry a lock refusal briefly before reporting it.
        let lock_grace = std::time::Instant::now() + LOCK_GRACE;
        let db = loop {
            // sled may panic on some kinds of garbage instead of returning an error.
            match catch_unwind(AssertUnwindSafe(|| config.open())) {
                Ok(Ok(db)) => break db,
                Ok(Err(error)) => match open_error(path, error) {
                    StoreError::Locked { .. } if std::time::Instant::now() < lock_grace => {
                        std::thread::sleep(std::time::Duration::from_millis(20));
                    }
                    error => return Err(error),
                },
                Err(panic) => {
                    return Err(StoreError::Damaged {
                        path: path.to_path_buf(),
                        cause: format!("sled failed while opening it: {}", panic_text(&panic)),
                    });
                }
            }
        };
        let tree = |name: &str| {
            db.open_tree(name)
                .map_err(|error| sled_error(path, &format!("open tree {name}"), error))
        };
        let store = Store {
            path: path.to_path_buf(),
            jobs: tree("jobs")?,
            analyses: tree("analyses")?,
            meta: tree("meta")?,
            db,
            current_schema: Default::default(),
        };
        store.check_schema(had_data)?;
        Ok(store)
    }

    /// Check the schema version in `meta`, or write it into a new database.
    fn check_schema(&self, had_data: bool) -> Result<(), StoreError> {
        let stored = self
            .meta
            .get(META_SCHEMA_VERSION)
            .map_err(|error| self.sled_error("read the schema version", error))?;
        match stored {
            Some(bytes) => {
                let found = std::str::from_utf8(&bytes)
                    .ok()
                    .and_then(|text| text.parse::<u32>().ok())
                    .ok_or_else(|| self.damaged(format!("meta/{META_SCHEMA_VERSION} is {bytes:?}, not a number")))?;
                if found > SCHEMA_VERSION {
                    return Err(StoreError::NewerSchema {
                        path: self.path.clone(),
                        found,
                        supported: SCHEMA_VERSION,
                    });
                }
                self.current_schema.store(
                    found == SCHEMA_VERSION,
                    std::sync::atomic::Ordering::Relaxed,
                );
                Ok(())
            }
            None if had_data || !self.jobs.is_empty() || !self.analyses.is_empty() => {
                Err(self.damaged(format!(
                    "it has no {META_SCHEMA_VERSION} record: its files are unreadable, or it is not a headswap-batch database"
                )))
            }
            None => {
                self.write_schema_version()?;
                self.flush()
            }
        }
    }

    fn write_schema_version(&self) -> Result<(), StoreError> {
        self.meta
            .insert(META_SCHEMA_VERSION, SCHEMA_VERSION.to_string().as_bytes())
            .map_err(|error| self.sled_error("write the schema version", error))?;
        self.current_schema
            .store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Before a record in this build's format is written: make sure `meta` says so. Written
    /// ahead of the record, it is durable no later than the record (sled recovers writes in
    /// order).
    fn before_write(&self) -> Result<(), StoreError> {
        if self
            .current_schema
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return Ok(());
        }
        self.write_schema_version()
    }

    /// Whether the last ingest was of this very file with these defaults and left nothing to
    /// report (no row changed after submission): then ingesting it again would change nothing,
    /// and the answer is the number of invalid rows it had. Rerunning the same command skips
    /// parsing and ingest this way, which is what makes resuming a large batch start at once.
    pub fn settled(
        &self,
        manifest_sha256: &str,
        defaults: &Defaults,
    ) -> Result<Option<usize>, StoreError> {
        let meta = |key: &str| -> Result<Option<sled::IVec>, StoreError> {
            self.meta
                .get(key)
                .map_err(|error| self.sled_error("read meta", error))
        };
        let is = |value: Option<sled::IVec>, expected: &[u8]| {
            value.is_some_and(|stored| stored.as_ref() == expected)
        };
        if !is(meta(META_MANIFEST_SHA256)?, manifest_sha256.as_bytes())
            || !is(meta(META_DEFAULTS)?, defaults_text(defaults).as_bytes())
            || !is(meta(META_CHANGED_SUBMITTED)?, b"0")
        {
            return Ok(None);
        }
        Ok(meta(META_INVALID)?.and_then(|value| std::str::from_utf8(&value).ok()?.parse().ok()))
    }

    /// The database folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bring the store in line with a manifest, idempotently by job id (see
    /// [`IngestReport`] for what happens to each job). Jobs absent from the manifest are left
    /// untouched. Durable before it returns.
    ///
    /// A changed row is only applied to a job that cannot have been submitted: not in a state
    /// that may have sent a create, no task id, and not flagged `possible_duplicate` (a held
    /// job, or one whose create may have reached the service). Otherwise rendering the new
    /// row would be paid a second time, so it is reported in `changed_submitted` unless
    /// `replace_changed` says to restart it anyway.
    pub fn ingest(
        &self,
        manifest: Manifest,
        defaults: &Defaults,
        replace_changed: bool,
        now_ms: u64,
    ) -> Result<IngestReport, StoreError> {
        let mut report = IngestReport::default();
        let defaults_text = defaults_text(defaults);
        let Manifest {
            path: manifest_path,
            jobs,
            sha256,
            ..
        } = manifest;
        if self.settled(&sha256, defaults)?.is_some() {
            report.unchanged = jobs.len();
            report.invalid = jobs.iter().filter(|entry| entry.row.is_err()).count();
            return Ok(report);
        }
        // Each job's memory is released as soon as it is written, which the store's own
        // growth reuses: a large manifest is not held whole next to its records. Written
        // record by record, not in sled batches: a batch holds far more memory than its
        // records (measured at 100,000 jobs: batches of 1,000 peak 30 MB above single writes,
        // one batch of all near 1 GB). The ingest is idempotent and its manifest fingerprint is
        // written last, so a crash part-way only means the next run ingests again.
        let mut listed = std::collections::HashSet::with_capacity(jobs.len());
        for entry in jobs {
            self.ingest_one(&entry, defaults, replace_changed, now_ms, &mut report)?;
            listed.insert(entry.id);
        }
        // The manifest is the list of what to render. A job whose row is gone and that never
        // reached the service (invalid, waiting, needs_mapping) is dropped: rendering a removed
        // row would spend credits nobody asked for, and a fixed row's old invalid job would make
        // every later run end "incomplete". Jobs that may have been submitted stay and finish.
        let mut cancelled = Vec::new();
        for key in self.jobs.iter().keys() {
            let key = key.map_err(|error| self.sled_error("list the jobs", error))?;
            if listed.contains(String::from_utf8_lossy(&key).as_ref()) {
                continue;
            }
            let id = String::from_utf8_lossy(&key).into_owned();
            if self.job(&id)?.is_some_and(|job| is_cancellable(&job)) {
                cancelled.push(key);
            }
        }
        for key in cancelled {
            self.jobs
                .remove(key)
                .map_err(|error| self.sled_error("remove a job", error))?;
            report.removed += 1;
        }
        let meta = [
            (
                META_MANIFEST_PATH,
                manifest_path.to_string_lossy().into_owned(),
            ),
            (META_MANIFEST_SHA256, sha256),
            (META_DEFAULTS, defaults_text),
            (
                META_CHANGED_SUBMITTED,
                report.changed_submitted.len().to_string(),
            ),
            (META_INVALID, report.invalid.to_string()),
            (META_INGESTED_MS, now_ms.to_string()),
        ];
        for (key, value) in meta {
            self.meta
                .insert(key, value.as_bytes())
                .map_err(|error| self.sled_error("write meta", error))?;
        }
        self.flush()?;
        Ok(report)
    }

    /// Bring one job in line with its manifest entry (see [`Store::ingest`]).
    fn ingest_one(
        &self,
        entry: &ManifestJob,
        defaults: &Defaults,
        replace_changed: bool,
        now_ms: u64,
        report: &mut IngestReport,
    ) -> Result<(), StoreError> {
        if entry.row.is_err() {
            report.invalid += 1;
        }
        let wanted = wanted_job(entry, defaults, now_ms);
        let Some(mut existing) = self.job(&entry.id)? else {
            self.put_job(&wanted)?;
            report.added += 1;
            return Ok(());
        };
        if existing.fingerprint == wanted.fingerprint {
            // Same request: keep the state, refresh what does not affect the render.
            let before = existing.clone();
            existing.line = entry.line;
            existing.spec.extra = wanted.spec.extra;
            if existing != before {
                self.put_job(&existing)?;
            }
            report.unchanged += 1;
            return Ok(());
        }
        let submitted = may_have_been_submitted(&existing);
        if submitted && !replace_changed {
            report.changed_submitted.push(entry.id.clone());
            return Ok(());
        }
        let replacement = replace(existing, wanted, now_ms);
        self.put_job(&replacement)?;
        if submitted {
            report.replaced.push(entry.id.clone());
        } else {
            report.updated += 1;
        }
        Ok(())
    }

    /// The SHA-256 of the last ingested manifest file, if any.
    pub fn manifest_sha256(&self) -> Result<Option<String>, StoreError> {
        let value = self
            .meta
            .get(META_MANIFEST_SHA256)
            .map_err(|error| self.sled_error("read meta", error))?;
        Ok(value.map(|bytes| String::from_utf8_lossy(&bytes).into_owned()))
    }

    /// One job by id.
    pub fn job(&self, id: &str) -> Result<Option<Job>, StoreError> {
        let value = self
            .jobs
            .get(id.as_bytes())
            .map_err(|error| self.sled_error("read a job", error))?;
        value
            .map(|bytes| self.decode_job(id.as_bytes(), &bytes))
            .transpose()
    }

    /// Every job, in id order (byte order of the ids).
    pub fn jobs(&self) -> impl Iterator<Item = Result<Job, StoreError>> + '_ {
        self.jobs.iter().map(move |entry| {
            let (key, value) = entry.map_err(|error| self.sled_error("read jobs", error))?;
            self.decode_job(&key, &value)
        })
    }

    /// Write a job. Not durable until the next [`Store::flush`].
    pub fn put_job(&self, job: &Job) -> Result<(), StoreError> {
        self.before_write()?;
        let bytes = self.encode_job(job)?;
        self.jobs
            .insert(job.id.as_bytes(), bytes)
            .map_err(|error| self.sled_error("write a job", error))?;
        Ok(())
    }

    /// The analysis record of one video.
    pub fn analysis(&self, video_url: &str) -> Result<Option<AnalysisRecord>, StoreError> {
        let value = self
            .analyses
            .get(video_url.as_bytes())
            .map_err(|error| self.sled_error("read an analysis", error))?;
        value
            .map(|bytes| self.decode_analysis(video_url.as_bytes(), &bytes))
            .transpose()
    }

    /// Every analysis record, in video_url order.
    pub fn analyses(&self) -> impl Iterator<Item = Result<AnalysisRecord, StoreError>> + '_ {
        self.analyses.iter().map(move |entry| {
            let (key, value) = entry.map_err(|error| self.sled_error("read analyses", error))?;
            self.decode_analysis(&key, &value)
        })
    }

    /// Write an analysis record. Not durable until the next [`Store::flush`].
    pub fn put_analysis(&self, record: &AnalysisRecord) -> Result<(), StoreError> {
        self.before_write()?;
        let envelope = Envelope {
            v: SCHEMA_VERSION,
            analysis: Some(record),
            job: None,
        };
        let bytes = serde_json::to_vec(&envelope).map_err(|error| StoreError::Encode {
            path: self.path.clone(),
            what: format!("the analysis of {}", record.video_url),
            cause: error.to_string(),
        })?;
        self.analyses
            .insert(record.video_url.as_bytes(), bytes)
            .map_err(|error| self.sled_error("write an analysis", error))?;
        Ok(())
    }

    /// Make every write so far durable (fsync). The durable point before side effects.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db
            .flush()
            .map_err(|error| self.sled_error("flush", error))?;
        Ok(())
    }

    /// [`Store::flush`] without blocking the async runtime's thread.
    pub async fn flush_async(&self) -> Result<(), StoreError> {
        self.db
            .flush_async()
            .await
            .map_err(|error| self.sled_error("flush", error))?;
        Ok(())
    }

    /// How many jobs are in each state (states without jobs are absent).
    pub fn counts(&self) -> Result<BTreeMap<JobState, usize>, StoreError> {
        let mut counts = BTreeMap::new();
        for job in self.jobs() {
            *counts.entry(job?.state).or_insert(0) += 1;
        }
        Ok(counts)
    }

    fn encode_job(&self, job: &Job) -> Result<Vec<u8>, StoreError> {
        serde_json::to_vec(&Envelope {
            v: SCHEMA_VERSION,
            job: Some(job),
            analysis: None,
        })
        .map_err(|error| StoreError::Encode {
            path: self.path.clone(),
            what: format!("job {}", job.id),
            cause: error.to_string(),
        })
    }

    fn decode_job(&self, key: &[u8], bytes: &[u8]) -> Result<Job, StoreError> {
        let envelope: JobEnvelope = self.decode("jobs", key, bytes)?;
        Ok(envelope.job)
    }

    fn decode_analysis(&self, key: &[u8], bytes: &[u8]) -> Result<AnalysisRecord, StoreError> {
        let envelope: AnalysisEnvelope = self.decode("analyses", key, bytes)?;
        Ok(envelope.analysis)
    }

    /// Decode an envelope; a newer `v` is [`StoreError::NewerSchema`], anything unreadable
    /// is [`StoreError::Damaged`] naming the record.
    fn decode<T: Versioned>(&self, tree: &str, key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
        let newer = |found: u32| StoreError::NewerSchema {
            path: self.path.clone(),
            found,
            supported: SCHEMA_VERSION,
        };
        match serde_json::from_slice::<T>(bytes) {
            Ok(envelope) if envelope.version() > SCHEMA_VERSION => Err(newer(envelope.version())),
            Ok(envelope) => Ok(envelope),
            Err(error) => {
                // A newer version may have changed the record itself: say so rather than
                // calling it damaged.
                match serde_json::from_slice::<VersionOnly>(bytes) {
                    Ok(version) if version.v > SCHEMA_VERSION => return Err(newer(version.v)),
                    _ => {}
                }
                Err(self.damaged(format!(
                    "record {tree}/{} cannot be read: {error}",
                    String::from_utf8_lossy(key)
                )))
            }
        }
    }

    fn damaged(&self, cause: String) -> StoreError {
        StoreError::Damaged {
            path: self.path.clone(),
            cause,
        }
    }

    fn sled_error(&self, doing: &str, error: sled::Error) -> StoreError {
        sled_error(&self.path, doing, error)
    }
}

/// What is written: `{"v":2,"job":{...}}` or `{"v":2,"analysis":{...}}`, borrowing the record.
#[derive(Serialize)]
struct Envelope<'a> {
    v: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    job: Option<&'a Job>,
    #[serde(skip_serializing_if = "Option::is_none")]
    analysis: Option<&'a AnalysisRecord>,
}

/// `{"v":2,"job":{...}}`
#[derive(Deserialize)]
struct JobEnvelope {
    v: u32,
    job: Job,
}

/// `{"v":2,"analysis":{...}}`
#[derive(Deserialize)]
struct AnalysisEnvelope {
    v: u32,
    analysis: AnalysisRecord,
}

#[derive(Deserialize)]
struct VersionOnly {
    v: u32,
}

trait Versioned: serde::de::DeserializeOwned {
    fn version(&self) -> u32;
}

impl Versioned for JobEnvelope {
    fn version(&self) -> u32 {
        self.v
    }
}

impl Versioned for AnalysisEnvelope {
    fn version(&self) -> u32 {
        self.v
    }
}

/// True when a create for this job may have reached the service, so that rendering a
/// changed row would be paid a second time.
fn may_have_been_submitted(job: &Job) -> bool {
    job.state.may_have_submitted() || job.task_id.is_some() || job.possible_duplicate
}

/// A job that can disappear with its manifest row: nothing of it reached the service.
fn is_cancellable(job: &Job) -> bool {
    !may_have_been_submitted(job)
        && matches!(
            job.state,
            JobState::Pending
                | JobState::Analyzing
                | JobState::Ready
                | JobState::Invalid
                | JobState::NeedsMapping
        )
}

/// The job a manifest entry asks for, as a new job.
fn wanted_job(entry: &ManifestJob, defaults: &Defaults, now_ms: u64) -> Job {
    match &entry.row {
        Ok(raw) => Job::new(entry.id.clone(), entry.line, raw.to_spec(defaults), now_ms),
        Err(reason) => {
            // Invalid rows keep what can be echoed (the video, the extra columns); their
            // fingerprint is the reason, so editing the row into another problem updates it.
            let spec = crate::job::JobSpec {
                video_url: entry.video_url.clone(),
                faces: Vec::new(),
                resolution: defaults.resolution.clone(),
                model_name: defaults.model_name.clone(),
                keep_original_sound: true,
                template_id: None,
                extra: entry.extra.clone(),
            };
            let mut job = Job::invalid(entry.id.clone(), entry.line, spec, reason.clone(), now_ms);
            job.fingerprint = invalid_fingerprint(reason, &entry.video_url);
            job
        }
    }
}

fn invalid_fingerprint(reason: &str, video_url: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"invalid\n");
    hasher.update(reason.as_bytes());
    hasher.update(b"\n");
    hasher.update(video_url.as_bytes());
    format!("invalid-{}", hex(&hasher.finalize()[..16]))
}

/// Restart `existing` as `wanted` (pending with the new spec, or invalid), keeping its
/// creation time.
fn replace(mut existing: Job, wanted: Job, now_ms: u64) -> Job {
    if wanted.state == JobState::Invalid {
        let mut job = wanted;
        job.times.created_ms = existing.times.created_ms;
        return job;
    }
    let line = wanted.line;
    let event = Event::Replace {
        spec: wanted.spec,
        fingerprint: wanted.fingerprint,
    };
    match existing.apply(event, now_ms) {
        Ok(()) => {
            existing.line = line;
            existing
        }
        // Replace is legal in every state; should that ever change, a fresh job is the
        // meaning of "restart with the new row".
        Err(_) => existing,
    }
}

/// Map an error from `sled::open`: a held lock, damage, or plain I/O.
fn open_error(path: &Path, error: sled::Error) -> StoreError {
    if let sled::Error::Io(io) = &error {
        let text = io.to_string();
        if io.kind() == std::io::ErrorKind::WouldBlock
            || text.contains("could not acquire lock")
            || text.contains("WouldBlock")
        {
            return StoreError::Locked {
                path: path.to_path_buf(),
            };
        }
    }
    match error {
        sled::Error::Io(io) => StoreError::Io {
            path: path.to_path_buf(),
            cause: io.to_string(),
        },
        // Garbage in sled's own files shows up as "unsupported" (an unreadable config) or a
        // corruption report.
        other => StoreError::Damaged {
            path: path.to_path_buf(),
            cause: format!("sled cannot open it: {other}"),
        },
    }
}

fn sled_error(path: &Path, doing: &str, error: sled::Error) -> StoreError {
    match error {
        sled::Error::Io(io) => StoreError::Io {
            path: path.to_path_buf(),
            cause: format!("{doing}: {io}"),
        },
        other => StoreError::Damaged {
            path: path.to_path_buf(),
            cause: format!("{doing}: {other}"),
        },
    }
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_string()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "panic".to_string()
    }
}

/// How the defaults applied to blank cells are remembered in `meta`.
fn defaults_text(defaults: &Defaults) -> String {
    format!("{}|{}", defaults.resolution, defaults.model_name)
}
