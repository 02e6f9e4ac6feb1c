//! Bringing the store in line with a manifest, idempotently by job id.
//!
//! The policy is a pure function, [`plan`]: for one manifest job and the stored job of the
//! same id (if any), what happens — add it, keep it, refresh what does not affect the render,
//! restart it with the new row, or report a row changed after submission. [`ingest`] applies
//! the plans through the store and drops jobs whose rows left the manifest before they reached
//! the service. The store only stores; this module decides.

use std::collections::HashSet;

use sha2::{Digest, Sha256};

use crate::job::{Event, Job, JobId, JobSpec, JobState, hex};
use crate::manifest::{Defaults, Manifest, ManifestJob};
use crate::store::{Store, StoreError};

/// Keys of the store's `meta` tree that remember the last ingest.
const META_MANIFEST_PATH: &str = "manifest_path";
const META_MANIFEST_SHA256: &str = "manifest_sha256";
/// The defaults (resolution, model) the last ingest applied to blank cells.
const META_DEFAULTS: &str = "ingest_defaults";
/// How many rows the last ingest found changed after submission (and left alone).
const META_CHANGED_SUBMITTED: &str = "ingest_changed_submitted";
/// How many of the last ingested manifest's jobs were invalid.
const META_INVALID: &str = "ingest_invalid";
const META_INGESTED_MS: &str = "manifest_ingested_ms";

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
    pub changed_submitted: Vec<JobId>,
    /// The row changed after submission and `replace_changed` restarted the job.
    pub replaced: Vec<JobId>,
    /// Manifest jobs that are invalid (new or not).
    pub invalid: usize,
    /// Jobs whose rows are gone from the manifest and that never reached the service, removed.
    pub removed: usize,
}

/// What happens to one stored job when its manifest row is ingested.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// A new id: the job as the row asks for it.
    Add(Job),
    /// Same request, nothing to write.
    Keep,
    /// Same request: the job keeps its state; its line and extra columns are refreshed.
    Refresh(Job),
    /// The row changed and the job was never submitted: restarted with the new row.
    Update(Job),
    /// The row changed after submission and `--replace-changed` restarts it (rendered again).
    Replace(Job),
    /// The row changed after submission: kept as it is, flagged `row_changed`, and
    /// reported. Carries the job to write when the flag is new (`None`: already flagged).
    ChangedSubmitted(Option<Job>),
}

/// Decide what ingesting `entry` does to `existing`, the stored job with the same id.
///
/// A changed row is only applied to a job that cannot have been submitted: not in a state
/// that may have sent a create, no task id, and not flagged `possible_duplicate` (a held job,
/// or one whose create may have reached the service). Otherwise rendering the new row would
/// be paid a second time, so it is reported unless `replace_changed` says to restart it anyway.
pub fn plan(
    existing: Option<Job>,
    entry: &ManifestJob,
    defaults: &Defaults,
    replace_changed: bool,
    now_ms: u64,
) -> Plan {
    let wanted = wanted_job(entry, defaults, now_ms);
    let Some(mut existing) = existing else {
        return Plan::Add(wanted);
    };
    if existing.fingerprint == wanted.fingerprint {
        // Same request: keep the state, refresh what does not affect the render. A row that
        // had changed after submission and is back as it was is no longer flagged.
        let before = existing.clone();
        existing.line = entry.line;
        existing.spec.extra = wanted.spec.extra;
        existing.row_changed = false;
        return if existing == before {
            Plan::Keep
        } else {
            Plan::Refresh(existing)
        };
    }
    let submitted = may_have_been_submitted(&existing);
    match (submitted, replace_changed) {
        (true, false) if existing.row_changed => Plan::ChangedSubmitted(None),
        (true, false) => {
            existing.row_changed = true;
            Plan::ChangedSubmitted(Some(existing))
        }
        (true, true) => Plan::Replace(replace(existing, wanted, now_ms)),
        (false, _) => Plan::Update(replace(existing, wanted, now_ms)),
    }
}

/// A job that can disappear with its manifest row: nothing of it reached the service.
pub fn is_cancellable(job: &Job) -> bool {
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

/// Whether the last ingest was of this very file with these defaults and left nothing to
/// report (no row changed after submission): then ingesting it again would change nothing,
/// and the answer is the number of invalid rows it had. Rerunning the same command skips
/// parsing and ingest this way, which is what makes resuming a large batch start at once.
pub fn settled(
    store: &Store,
    manifest_sha256: &str,
    defaults: &Defaults,
) -> Result<Option<usize>, StoreError> {
    let is = |key: &str, expected: &str| -> Result<bool, StoreError> {
        Ok(store.meta(key)?.is_some_and(|stored| stored == expected))
    };
    if !is(META_MANIFEST_SHA256, manifest_sha256)?
        || !is(META_DEFAULTS, &defaults_text(defaults))?
        || !is(META_CHANGED_SUBMITTED, "0")?
    {
        return Ok(None);
    }
    Ok(store
        .meta(META_INVALID)?
        .and_then(|value| value.parse().ok()))
}

/// The SHA-256 of the last ingested manifest file, if any.
pub fn manifest_sha256(store: &Store) -> Result<Option<String>, StoreError> {
    store.meta(META_MANIFEST_SHA256)
}

/// Bring the store in line with a manifest (see [`plan`] for each job, [`IngestReport`] for
/// the counts). Durable before it returns.
pub fn ingest(
    store: &Store,
    manifest: Manifest,
    defaults: &Defaults,
    replace_changed: bool,
    now_ms: u64,
) -> Result<IngestReport, StoreError> {
    let mut report = IngestReport::default();
    let Manifest {
        path: manifest_path,
        jobs,
        sha256,
        ..
    } = manifest;
    if settled(store, &sha256, defaults)?.is_some() {
        report.unchanged = jobs.len();
        report.invalid = jobs.iter().filter(|entry| entry.row.is_err()).count();
        return Ok(report);
    }
    // Each job's memory is released as soon as it is written, which the store's own growth
    // reuses: a large manifest is not held whole next to its records. Written record by
    // record, not in sled batches: a batch holds far more memory than its records (measured
    // at 100,000 jobs: batches of 1,000 peak 30 MB above single writes, one batch of all near
    // 1 GB). The ingest is idempotent and its manifest fingerprint is written last, so a crash
    // part-way only means the next run ingests again.
    let mut listed = HashSet::with_capacity(jobs.len());
    for entry in jobs {
        if entry.row.is_err() {
            report.invalid += 1;
        }
        let existing = store.job(entry.id.as_str())?;
        match plan(existing, &entry, defaults, replace_changed, now_ms) {
            Plan::Add(job) => {
                store.put_job(&job)?;
                report.added += 1;
            }
            Plan::Keep => report.unchanged += 1,
            Plan::Refresh(job) => {
                store.put_job(&job)?;
                report.unchanged += 1;
            }
            Plan::Update(job) => {
                store.put_job(&job)?;
                report.updated += 1;
            }
            Plan::Replace(job) => {
                store.put_job(&job)?;
                report.replaced.push(entry.id.clone());
            }
            Plan::ChangedSubmitted(flagged) => {
                if let Some(job) = flagged {
                    store.put_job(&job)?;
                }
                report.changed_submitted.push(entry.id.clone());
            }
        }
        listed.insert(entry.id);
    }
    // The manifest is the list of what to render. A job whose row is gone and that never
    // reached the service (invalid, waiting, needs_mapping) is dropped: rendering a removed
    // row would spend credits nobody asked for, and a fixed row's old invalid job would make
    // every later run end "incomplete". Jobs that may have been submitted stay and finish.
    let mut cancelled = Vec::new();
    for id in store.job_ids() {
        let id = id?;
        if listed.contains(id.as_str()) {
            continue;
        }
        if store.job(&id)?.is_some_and(|job| is_cancellable(&job)) {
            cancelled.push(id);
        }
    }
    for id in cancelled {
        store.remove_job(&id)?;
        report.removed += 1;
    }
    let meta = [
        (
            META_MANIFEST_PATH,
            manifest_path.to_string_lossy().into_owned(),
        ),
        (META_MANIFEST_SHA256, sha256),
        (META_DEFAULTS, defaults_text(defaults)),
        (
            META_CHANGED_SUBMITTED,
            report.changed_submitted.len().to_string(),
        ),
        (META_INVALID, report.invalid.to_string()),
        (META_INGESTED_MS, now_ms.to_string()),
    ];
    for (key, value) in meta {
        store.put_meta(key, &value)?;
    }
    store.flush()?;
    Ok(report)
}

/// True when a create for this job may have reached the service, so that rendering a
/// changed row would be paid a second time.
fn may_have_been_submitted(job: &Job) -> bool {
    job.state.may_have_submitted() || job.task_id.is_some() || job.possible_duplicate
}

/// The job a manifest entry asks for, as a new job.
fn wanted_job(entry: &ManifestJob, defaults: &Defaults, now_ms: u64) -> Job {
    match &entry.row {
        Ok(raw) => Job::new(entry.id.clone(), entry.line, raw.to_spec(defaults), now_ms),
        Err(reason) => {
            // Invalid rows keep what can be echoed (the video, the extra columns); their
            // fingerprint is the reason, so editing the row into another problem updates it.
            let spec = JobSpec {
                video_url: entry.video_url.as_str().into(),
                faces: Vec::new(),
                resolution: defaults.resolution,
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

/// How the defaults applied to blank cells are remembered in `meta`.
fn defaults_text(defaults: &Defaults) -> String {
    format!("{}|{}", defaults.resolution, defaults.model_name)
}
