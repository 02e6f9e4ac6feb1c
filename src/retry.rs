//! The `retry` command: put failed, expired or held jobs back to be processed by the next run,
//! at the cheapest stage that can still succeed (a finished render whose link expired asks for
//! a fresh link before anything is rendered again).

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;

use crate::exit::{Exit, Fatal};
use crate::job::{AnalysisEvent, AnalysisState, Event, JobState};
use crate::journal::{Fact, Journal};
use crate::now_ms;
use crate::store::Store;

/// Which jobs to put back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetryRequest {
    /// Every job that failed for a transient reason.
    pub failed: bool,
    /// With `failed`: also the jobs whose failure was the service's answer about their
    /// request (retrying them most likely pays again for the same answer).
    pub permanent: bool,
    /// Every expired job.
    pub expired: bool,
    /// These jobs, whatever their reason, if failed, expired or held. Every id must exist.
    pub ids: Vec<String>,
}

/// `retry`: put the asked-for jobs back, say how many creates the next run may pay for, and
/// name what was left alone. An unknown id is an error (exit 1) and nothing is changed.
pub fn command(db: &Path, args: &RetryRequest) -> Result<Exit, Fatal> {
    let store = Store::open_existing(db)?;
    let wanted_ids: BTreeSet<&str> = args.ids.iter().map(String::as_str).collect();
    let missing: Vec<&str> = wanted_ids
        .iter()
        .copied()
        .filter(|id| matches!(store.job(id), Ok(None)))
        .collect();
    if !missing.is_empty() {
        return Err(
            Fatal::new(format!("no such job: {}", missing.join(", "))).hint(format!(
                "nothing was retried; `headswap-batch --db {} export` lists every job id",
                db.display()
            )),
        );
    }
    // What retry gives up (a failed render's task) goes to the journal too, or the next
    // run's heal would take the journal's older word for it and undo the retry.
    let mut journal = Journal::open(db)?;
    let mut retried = Vec::new();
    let mut refused = Vec::new();
    let mut permanent_left = Vec::new();
    let mut may_be_billed = 0;
    let now = now_ms();
    for job in store.jobs() {
        let mut job = job?;
        let by_id = wanted_ids.contains(job.id.as_str());
        let failed = args.failed && job.state == JobState::Failed;
        if failed && !by_id && !args.permanent && job.failed_permanently() {
            permanent_left.push(job);
            continue;
        }
        let by_state = failed || (args.expired && job.state == JobState::Expired);
        if !by_id && !by_state {
            continue;
        }
        let before = job.state;
        let record = job.clone();
        match job.apply(Event::Retry, now) {
            Ok(()) => {
                if matches!(job.state, JobState::Pending | JobState::Ready) {
                    reset_failed_analysis(&store, job.spec.video_url.as_str())?;
                    // From here the next run creates the render again: a paid call. A job
                    // sent back to its task (rendering, downloading) is only re-attached.
                    may_be_billed += 1;
                }
                for fact in Fact::changes(&record, &job, now) {
                    journal.append(&fact);
                }
                store.put_job(&job)?;
                retried.push((job.id.clone(), before, job.state));
            }
            Err(_) => refused.push((job.id.clone(), before)),
        }
    }
    journal.sync()?;
    store.flush()?;

    let mut out = std::io::stdout().lock();
    for (id, before, after) in &retried {
        let _ = writeln!(out, "{id}: {before} -> {after}");
    }
    let _ = writeln!(
        out,
        "{} job(s) will be processed by the next run; up to {may_be_billed} of them may be created (billed) again",
        retried.len()
    );
    drop(out);
    if !permanent_left.is_empty() {
        let shown: Vec<String> = permanent_left
            .iter()
            .take(MAX_NAMED)
            .map(|job| {
                let reason = job
                    .last_error
                    .as_ref()
                    .map_or("", |error| error.message.as_str());
                format!("  {} (line {}): {reason}", job.id, job.line)
            })
            .collect();
        let more = permanent_left.len().saturating_sub(MAX_NAMED);
        eprintln!(
            "warning: {} failed job(s) not retried: the service judged their input, so the same request would most likely fail again and be paid again:\n{}{}\nhint: fix their rows in the manifest and run again (a job that was rendered needs `run --replace-changed` for its edited row), or add --permanent to retry them as they are",
            permanent_left.len(),
            shown.join("\n"),
            if more > 0 {
                format!("\n  ... and {more} more (see `export`)")
            } else {
                String::new()
            }
        );
    }
    for (id, state) in &refused {
        let why = match state {
            JobState::NeedsMapping => "fill in obj_id for it in the manifest and run again",
            JobState::Invalid => "fix its row in the manifest and run again",
            JobState::Done => "it is done",
            _ => "it is still being processed",
        };
        eprintln!("warning: {id} is {state}, not retried: {why}");
    }
    Ok(Exit::Success)
}

/// Jobs named one by one in a warning; the rest are counted.
const MAX_NAMED: usize = 20;

/// A job sent back to the start needs its video analysed again if that analysis failed. So
/// does a job sent back to `ready` with subjects chosen from an earlier analysis, when the
/// video's analysis was redone since and failed (the service had forgotten it): the next run
/// analyses the video before that job is created.
fn reset_failed_analysis(store: &Store, video_url: &str) -> Result<(), Fatal> {
    if let Some(mut record) = store.analysis(video_url)? {
        if record.state == AnalysisState::Failed {
            record
                .apply(AnalysisEvent::Retry, now_ms())
                .map_err(|error| Fatal::new("cannot reset the analysis").cause(error))?;
            store.put_analysis(&record)?;
        }
    }
    Ok(())
}
