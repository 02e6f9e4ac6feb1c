//! Turning journalled facts back into jobs, and comparing a database with its journal.
//!
//! A job is rebuilt by replaying, through [`Job::apply`], the events its facts stand for —
//! never by setting a state — so the state machine stays the only way a state changes.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Read;

use sha2::{Digest, Sha256};

use super::RecoverError;
use crate::job::{Event, Job, JobError, JobId, JobState, Output};
use crate::journal::fact::{self, OutputFact};
use crate::journal::{Details, JobFacts, Journal, JournalError, Replay, Stage};
use crate::manifest::{Defaults, ManifestJob};
use crate::store::Store;

/// How the rebuilt jobs were left.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rebuilt {
    /// `rendering` with their journalled task id: polled, never created again.
    pub reattached: usize,
    /// `submitting`: a create may have been sent and its answer was lost; the next run flags
    /// them `possible_duplicate` (or holds them), as after any crash.
    pub ambiguous: usize,
    /// Already flagged `possible_duplicate` by the journal, waiting to be submitted again
    /// (`ready`) or for a person (`held`).
    pub flagged: usize,
    /// `done`: the file is there and its SHA-256 matches the journal.
    pub done_verified: usize,
    /// Finished, but the file is missing or differs: `downloading` without a link.
    pub redownload: usize,
    /// `failed` after a failed render, as before (`retry --failed` renders them again).
    pub render_failed: usize,
    /// Paid facts that could not be turned back into a job: listed for a person.
    pub orphaned: Vec<Orphan>,
}

impl Rebuilt {
    /// Jobs rebuilt (orphans excluded).
    pub fn jobs(&self) -> usize {
        self.reattached
            + self.ambiguous
            + self.flagged
            + self.done_verified
            + self.redownload
            + self.render_failed
    }
}

/// A journalled job that could not be rebuilt: neither its intent nor a manifest row with
/// its fingerprint says what was requested.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orphan {
    pub job: String,
    pub task_id: Option<String>,
    pub reason: String,
}

/// A paid fact the journal holds and the database does not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingFact {
    pub job: String,
    pub what: String,
}

/// Compare a readable database with its journal: every job the journal shows as paid must be
/// in the database with what was paid for. Empty when the database holds every fact.
/// `replay` must be this journal's, read since its last compaction.
///
/// The database may legitimately be ahead (a task id stored but not yet journalled when the
/// process died) or have moved on (a row replaced since): neither is reported.
pub fn audit(
    store: &Store,
    journal: &Journal,
    replay: &Replay,
) -> Result<Vec<MissingFact>, RecoverError> {
    let mut missing = Vec::new();
    for facts in replay.paid_jobs() {
        let job = store.job(&facts.id)?;
        if let Some(what) = missing_fact(facts, job.as_ref(), journal)? {
            missing.push(MissingFact {
                job: facts.id.clone(),
                what,
            });
        }
    }
    Ok(missing)
}

/// What of a job's journalled facts the database's record of it lacks, if anything (the
/// check [`audit`] makes for each journalled job, for a caller that already reads every job,
/// such as the run's resume).
pub fn missing_fact(
    facts: &JobFacts,
    job: Option<&Job>,
    journal: &Journal,
) -> Result<Option<String>, JournalError> {
    let Some(job) = job else {
        return Ok(Some("the job is missing".into()));
    };
    if facts.fingerprint.as_deref() != Some(job.fingerprint.as_str()) {
        // The database holds a newer row of this job (replaced since).
        return Ok(None);
    }
    let flag = (facts.possible_duplicate && !job.possible_duplicate)
        .then(|| "its possible_duplicate flag is missing".to_string());
    let missing = match facts.stage {
        Stage::Ready | Stage::Ambiguous { .. } => None,
        Stage::Submitting => {
            let known = job.state == JobState::Submitting
                || job.task_id.is_some()
                || job.possible_duplicate;
            (!known).then(|| {
                format!(
                    "a create may have been sent, but the database has the job {}",
                    job.state
                )
            })
        }
        Stage::Rendering | Stage::RenderFailed | Stage::Finished => match facts.task_id() {
            None => None,
            Some(task_id) => match job.task_id.as_deref() {
                // The render is known; a finished output not recorded costs a download, or
                // the file itself if its link has expired: missing only while the file is
                // there to keep.
                Some(stored) if stored == task_id => {
                    let unrecorded = facts.stage == Stage::Finished
                        && job.state != JobState::Done
                        && journal
                            .details(facts)?
                            .output
                            .is_some_and(|output| verify_output(&output));
                    unrecorded.then(|| {
                        format!(
                            "its output is finished and on disk, but the database has the job {}",
                            job.state
                        )
                    })
                }
                // Another task: whichever was created last is the live one.
                Some(stored) => {
                    let journalled_ms = facts.task.as_ref().map_or(0, |task| task.ms);
                    (job.times.submitted_ms.unwrap_or(0) < journalled_ms).then(|| {
                        format!("task id {task_id} is missing (it has the older {stored})")
                    })
                }
                None => Some(format!("task id {task_id} is missing")),
            },
        },
    };
    Ok(missing.or(flag))
}

/// Bring a readable database up to its journal, in place: every job [`audit`] finds behind
/// is rebuilt from its facts (keeping the database's line and extra columns). For `run` at
/// start: after a crash the journal may be one group commit ahead of the database, after a
/// power cut more (sled's flush is not an fsync), and a database that silently lost records
/// (sled drops the tail of a damaged log) gets them back. `replay` must be this journal's,
/// read since its last compaction. Not durable until the store's next flush.
pub fn heal(store: &Store, journal: &Journal, replay: &Replay) -> Result<Rebuilt, RecoverError> {
    let mut rebuilt = Rebuilt::default();
    let behind: BTreeSet<String> = audit(store, journal, replay)?
        .into_iter()
        .map(|missing| missing.job)
        .collect();
    for id in behind {
        let facts = &replay.jobs[&id];
        let details = journal.details(facts)?;
        let existing = store.job(&id)?;
        let analysis_id = existing
            .as_ref()
            .and_then(|job| job.analysis_id.clone())
            .or_else(|| video_analysis(&details, None, replay));
        let Some(mut job) = rebuild(
            facts,
            &details,
            None,
            &Defaults::default(),
            analysis_id,
            &mut rebuilt,
        )?
        else {
            continue;
        };
        if let Some(existing) = existing {
            job.line = existing.line;
            job.spec.extra = existing.spec.extra;
        }
        store.put_job(&job)?;
    }
    Ok(rebuilt)
}

/// The journalled analysis id of a job's video.
pub(super) fn video_analysis(
    details: &Details,
    row: Option<&ManifestJob>,
    replay: &Replay,
) -> Option<String> {
    let video = details
        .intent
        .as_ref()
        .map(|intent| intent.video_url.as_str())
        .or_else(|| {
            row.and_then(|row| row.row.as_ref().ok())
                .map(|raw| raw.video_url.as_str())
        })?;
    replay
        .analyses
        .get(video)
        .map(|analysis| analysis.analysis_id.clone())
}

/// One journalled job, rebuilt by replaying its events; `None` (and an orphan) when its
/// request cannot be known. `row` (with `defaults`) stands in for an unreadable intent when
/// its fingerprint matches.
pub(super) fn rebuild(
    facts: &JobFacts,
    details: &Details,
    row: Option<&ManifestJob>,
    defaults: &Defaults,
    analysis_id: Option<String>,
    rebuilt: &mut Rebuilt,
) -> Result<Option<Job>, RecoverError> {
    let orphan = |reason: &str, rebuilt: &mut Rebuilt| {
        rebuilt.orphaned.push(Orphan {
            job: facts.id.clone(),
            task_id: facts.task_id().map(str::to_string),
            reason: reason.to_string(),
        });
        Ok(None)
    };
    let Some(fingerprint) = facts.fingerprint.clone() else {
        return orphan("neither its intent nor its task id is readable", rebuilt);
    };
    if details.mappings.is_empty() {
        return orphan("its request's mappings are not readable", rebuilt);
    }
    let (spec, born_ms) = match &details.intent {
        Some(intent) => (intent.spec(), intent.ms),
        None => {
            let spec = row
                .and_then(|row| row.row.as_ref().ok())
                .map(|raw| raw.to_spec(defaults))
                .filter(|spec| spec.fingerprint() == fingerprint);
            match spec {
                Some(spec) => (spec, facts.task.as_ref().map_or(0, |task| task.ms)),
                None => {
                    return orphan(
                        "its intent is not readable and the manifest has no row with its fingerprint",
                        rebuilt,
                    );
                }
            }
        }
    };
    let mut job = Job::new(
        JobId::from(facts.id.clone()),
        row.map_or(0, |row| row.line),
        spec,
        born_ms,
    );
    job.fingerprint = fingerprint;
    job.apply(Event::AnalysisStarted { analysis_id }, born_ms)?;
    let mappings = fact::mappings(&details.mappings);
    job.apply(Event::Mapped { mappings }, born_ms)?;
    if facts.possible_duplicate {
        job.apply(Event::SubmitIntent, born_ms)?;
        job.apply(
            Event::Ambiguous {
                hold: false,
                error: None,
            },
            born_ms,
        )?;
    }
    let task_ms = facts.task.as_ref().map_or(born_ms, |task| task.ms);
    let created = |job: &mut Job| -> Result<(), RecoverError> {
        let task_id = facts.task_id().unwrap_or_default().to_string();
        job.apply(Event::SubmitIntent, born_ms)?;
        job.apply(Event::Created { task_id }, task_ms)?;
        Ok(())
    };
    match facts.stage {
        Stage::Submitting => {
            job.apply(Event::SubmitIntent, born_ms)?;
            rebuilt.ambiguous += 1;
        }
        // Flagged (the only way a job in these stages is rebuilt): submitted again next.
        Stage::Ready | Stage::Ambiguous { held: false } => rebuilt.flagged += 1,
        Stage::Ambiguous { held: true } => {
            job.apply(Event::SubmitIntent, born_ms)?;
            job.apply(
                Event::Ambiguous {
                    hold: true,
                    error: None,
                },
                born_ms,
            )?;
            rebuilt.flagged += 1;
        }
        Stage::Rendering => {
            created(&mut job)?;
            rebuilt.reattached += 1;
        }
        Stage::RenderFailed => {
            let failed = details.render_failed.as_ref().expect("the stage says so");
            created(&mut job)?;
            let error = JobError::new(failed.code, failed.message.clone());
            job.apply(Event::RenderFailed { error }, failed.ms)?;
            rebuilt.render_failed += 1;
        }
        Stage::Finished => {
            let output = details.output.as_ref().expect("the stage says so");
            created(&mut job)?;
            job.apply(Event::Rendered { output_url: None }, output.ms)?;
            if verify_output(output) {
                let record = Output {
                    path: output.path.clone(),
                    bytes: output.bytes,
                    sha256: output.sha256.clone(),
                };
                job.apply(Event::Downloaded { output: record }, output.ms)?;
                rebuilt.done_verified += 1;
            } else {
                rebuilt.redownload += 1;
            }
        }
    }
    Ok(Some(job))
}

/// The journalled output is a local file of that size and SHA-256 (a relative path is taken
/// from the current folder, as the run wrote it). Object URLs cannot be checked here; they
/// are downloaded again, which costs no credits.
pub fn verify_output(output: &OutputFact) -> bool {
    if output.path.contains("://") {
        return false;
    }
    let Ok(mut file) = File::open(&output.path) else {
        return false;
    };
    if file.metadata().map(|meta| meta.len()).ok() != Some(output.bytes) {
        return false;
    }
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => hasher.update(&buffer[..read]),
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    crate::job::hex(&hasher.finalize()) == output.sha256
}
