//! `status [--json]`: counts per state, what is in flight, failures with their reasons — from
//! the database, or from the running process's view while a run holds it.

use std::io::{self, Write};
use std::path::Path;
use std::time::Duration;

use crate::exit::{Exit, Fatal};
use crate::store::{Store, StoreError};
use crate::view::snapshot::{STALE_VIEW, Snapshot, read_live_snapshot};
use crate::view::{now_ms, write_stdout};

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
    if snapshot.row_changed > 0 {
        let more = snapshot.row_changed - snapshot.row_changed_ids.len();
        writeln!(
            out,
            "row changed after submission: {} (kept as submitted, flagged row_changed in `export`; `run --replace-changed` renders the new rows, paid again): {}{}",
            snapshot.row_changed,
            snapshot.row_changed_ids.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        )?;
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
