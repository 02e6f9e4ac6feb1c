//! The `retry` command: put failed, expired or held jobs back to be processed by the next run,
//! at the cheapest stage that can still succeed (a finished render whose link expired asks for
//! a fresh link before anything is rendered again).

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;

use crate::exit::{Exit, Fatal};
use crate::job::{AnalysisEvent, AnalysisState, Event, JobState};
use crate::now_ms;
use crate::store::Store;

/// Which jobs to put back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetryRequest {
    /// Every failed job.
    pub failed: bool,
    /// Every expired job.
    pub expired: bool,
    /// These jobs, whatever their final state.
    pub ids: Vec<String>,
}

pub fn command(db: &Path, args: &RetryRequest) -> Result<Exit, Fatal> {
    let store = Store::open_existing(db)?;
    let wanted_ids: BTreeSet<&str> = args.ids.iter().map(String::as_str).collect();
    let mut found_ids = BTreeSet::new();
    let mut retried = Vec::new();
    let mut refused = Vec::new();
    let now = now_ms();
    for job in store.jobs() {
        let mut job = job?;
        let by_id = wanted_ids.contains(job.id.as_str());
        if by_id {
            found_ids.insert(job.id.to_string());
        }
        let by_state = (args.failed && job.state == JobState::Failed)
            || (args.expired && job.state == JobState::Expired);
        if !by_id && !by_state {
            continue;
        }
        let before = job.state;
        match job.apply(Event::Retry, now) {
            Ok(()) => {
                if matches!(job.state, JobState::Pending | JobState::Ready) {
                    reset_failed_analysis(&store, job.spec.video_url.as_str())?;
                }
                store.put_job(&job)?;
                retried.push((job.id.clone(), before, job.state));
            }
            Err(_) => refused.push((job.id.clone(), before)),
        }
    }
    store.flush()?;

    let mut out = std::io::stdout().lock();
    for (id, before, after) in &retried {
        let _ = writeln!(out, "{id}: {before} -> {after}");
    }
    let _ = writeln!(
        out,
        "{} job(s) will be processed by the next run",
        retried.len()
    );
    drop(out);
    for (id, state) in &refused {
        let why = match state {
            JobState::NeedsMapping => "fill in obj_id for it in the manifest and run again",
            JobState::Invalid => "fix its row in the manifest and run again",
            JobState::Done => "it is done",
            _ => "it is still being processed",
        };
        eprintln!("warning: {id} is {state}, not retried: {why}");
    }
    let missing: Vec<&str> = wanted_ids
        .iter()
        .copied()
        .filter(|id| !found_ids.contains(*id))
        .collect();
    if !missing.is_empty() {
        eprintln!("warning: no such job: {}", missing.join(", "));
    }
    Ok(Exit::Success)
}

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
