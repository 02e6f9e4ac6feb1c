//! The durable job store: the only module that touches sled.
//!
//! Trees: `jobs` (job id → job record), `checks` (URL checks, see [`Store::check`]),
//! `uploads` (uploads to object storage under way), `analyses` (video_url → analysis record,
//! one per
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

use crate::job::{AnalysisRecord, Job, JobState};

/// The version of the record format and tree layout this build writes.
///
/// 2: empty and absent fields of a job are left out of its record. Version 1 records read as
/// they are; the first record this build writes into a version 1 database marks it version 2
/// (reading alone leaves it as it was), so that an older build refuses it instead of
/// misreading the shorter records.
pub const SCHEMA_VERSION: u32 = 2;

/// Keys of the `meta` tree.
const META_SCHEMA_VERSION: &str = "schema_version";

/// The tree of URL checks (see [`Store::check`]).
const CHECKS_TREE: &str = "checks";
/// The tree of uploads to object storage under way (see [`Store::upload`]).
const UPLOADS_TREE: &str = "uploads";

/// sled's page cache.
const CACHE_BYTES: u64 = 32 << 20;

/// How long a lock refusal is retried on open (see [`Store::open`]).
const LOCK_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

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

    /// The database folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A value of the `meta` tree (ingest bookkeeping, learned timings), if set.
    pub fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        let value = self
            .meta
            .get(key)
            .map_err(|error| self.sled_error("read meta", error))?;
        Ok(value.map(|bytes| String::from_utf8_lossy(&bytes).into_owned()))
    }

    /// Set a value of the `meta` tree. Not durable until the next [`Store::flush`].
    pub fn put_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.before_write()?;
        self.meta
            .insert(key, value.as_bytes())
            .map_err(|error| self.sled_error("write meta", error))?;
        Ok(())
    }

    /// A URL check's result, as its owner wrote it (`key` names the kind of check and the URL).
    pub fn check(&self, key: &str) -> Result<Option<String>, StoreError> {
        let Some(checks) = self.lazy_tree(CHECKS_TREE, false)? else {
            return Ok(None);
        };
        let value = checks
            .get(key.as_bytes())
            .map_err(|error| self.sled_error("read a check", error))?;
        Ok(value.map(|bytes| String::from_utf8_lossy(&bytes).into_owned()))
    }

    /// Remember a URL check's result. Not durable until the next [`Store::flush`].
    pub fn put_check(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.before_write()?;
        let checks = self.lazy_tree(CHECKS_TREE, true)?.expect("created");
        checks
            .insert(key.as_bytes(), value.as_bytes())
            .map_err(|error| self.sled_error("write a check", error))?;
        Ok(())
    }

    /// Forget every URL check (`--recheck`).
    pub fn clear_checks(&self) -> Result<(), StoreError> {
        match self.lazy_tree(CHECKS_TREE, false)? {
            Some(checks) => checks
                .clear()
                .map_err(|error| self.sled_error("clear the checks", error)),
            None => Ok(()),
        }
    }

    /// An output's upload to object storage as its owner wrote it, by job id.
    pub fn upload(&self, job_id: &str) -> Result<Option<String>, StoreError> {
        let Some(uploads) = self.lazy_tree(UPLOADS_TREE, false)? else {
            return Ok(None);
        };
        let value = uploads
            .get(job_id.as_bytes())
            .map_err(|error| self.sled_error("read an upload", error))?;
        Ok(value.map(|bytes| String::from_utf8_lossy(&bytes).into_owned()))
    }

    /// Every upload record: (job id, record).
    pub fn uploads(&self) -> Result<Vec<(String, String)>, StoreError> {
        let Some(uploads) = self.lazy_tree(UPLOADS_TREE, false)? else {
            return Ok(Vec::new());
        };
        uploads
            .iter()
            .map(|entry| {
                let (key, value) =
                    entry.map_err(|error| self.sled_error("read the uploads", error))?;
                Ok((
                    String::from_utf8_lossy(&key).into_owned(),
                    String::from_utf8_lossy(&value).into_owned(),
                ))
            })
            .collect()
    }

    /// Write (or with `None`, remove) a job's upload record. Not durable until the next
    /// [`Store::flush`].
    pub fn put_upload(&self, job_id: &str, value: Option<&str>) -> Result<(), StoreError> {
        self.before_write()?;
        let uploads = self.lazy_tree(UPLOADS_TREE, true)?.expect("created");
        match value {
            Some(value) => uploads
                .insert(job_id.as_bytes(), value.as_bytes())
                .map(drop),
            None => uploads.remove(job_id.as_bytes()).map(drop),
        }
        .map_err(|error| self.sled_error("write an upload", error))
    }

    /// A tree opened when first written (`checks`, `uploads`), so that reading a database
    /// that has none (an older one) writes nothing.
    fn lazy_tree(&self, name: &str, create: bool) -> Result<Option<sled::Tree>, StoreError> {
        let exists = self
            .db
            .tree_names()
            .iter()
            .any(|tree| tree.as_ref() == name.as_bytes());
        if !exists && !create {
            return Ok(None);
        }
        self.db
            .open_tree(name)
            .map(Some)
            .map_err(|error| self.sled_error(&format!("open the {name}"), error))
    }

    /// Every job id, in id order, without decoding the records.
    pub fn job_ids(&self) -> impl Iterator<Item = Result<String, StoreError>> + '_ {
        self.jobs.iter().keys().map(move |key| {
            let key = key.map_err(|error| self.sled_error("list the jobs", error))?;
            Ok(String::from_utf8_lossy(&key).into_owned())
        })
    }

    /// Remove a job. Not durable until the next [`Store::flush`].
    pub fn remove_job(&self, id: &str) -> Result<(), StoreError> {
        self.jobs
            .remove(id.as_bytes())
            .map_err(|error| self.sled_error("remove a job", error))?;
        Ok(())
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
            .insert(job.id.as_str().as_bytes(), bytes)
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
            .insert(record.video_url.as_str().as_bytes(), bytes)
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
