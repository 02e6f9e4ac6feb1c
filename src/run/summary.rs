//! The end of a run as a person (or a cron log) reads it: the table of states on stdout; on
//! stderr, why the run stopped, every job that needs a person (the first
//! [`MAX_ATTENTION_LISTED`], then how many more) with its reason, and what to do about each
//! kind; and one INFO event carrying the final counts as fields, for JSON logs.
//!
//! Prints only; decides nothing about the exit code (`exit_for` does).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use crate::job::JobState;
use crate::run::dispatch::{MAX_ATTENTION_LISTED, RunReport, StopReason};

/// The end-of-run table on stdout, and what to do next on stderr. `db` is the database the
/// run used, named in the commands it suggests.
pub fn print_summary(report: &RunReport, db: &Path) {
    let mut out = std::io::stdout().lock();
    let total: usize = report.states.values().sum();
    let _ = writeln!(out, "{:<14} {:>7}", "state", "jobs");
    for (state, count) in report.states.iter().filter(|(_, count)| **count > 0) {
        let _ = writeln!(out, "{:<14} {count:>7}", state.as_str());
    }
    let _ = writeln!(out, "{:<14} {total:>7}", "total");
    if report.possible_duplicates > 0 {
        let _ = writeln!(out, "{:<14} {:>7}", "flagged", report.possible_duplicates);
    }
    drop(out);
    log_counts(report, total);
    if report.refused_by_preflight > 0 {
        eprintln!(
            "{} job(s) were not bought: a check of their video or face found they cannot succeed (see `status`)",
            report.refused_by_preflight
        );
    }
    let command = base_command(db);
    print_attention(report, &command);
    print_stop(report);
}

/// One event with every count as a field (`done=3 failed=1 ...`), so a JSON log can be read
/// by a program without parsing a message.
fn log_counts(report: &RunReport, total: usize) {
    let count = |state: JobState| report.states.get(&state).copied().unwrap_or(0);
    tracing::info!(
        total,
        done = count(JobState::Done),
        failed = count(JobState::Failed),
        invalid = count(JobState::Invalid),
        needs_mapping = count(JobState::NeedsMapping),
        expired = count(JobState::Expired),
        held = count(JobState::Held),
        pending = count(JobState::Pending),
        analyzing = count(JobState::Analyzing),
        ready = count(JobState::Ready),
        submitting = count(JobState::Submitting),
        rendering = count(JobState::Rendering),
        downloading = count(JobState::Downloading),
        possible_duplicates = report.possible_duplicates,
        row_changed = report.row_changed.len(),
        api_calls = report.api_calls,
        throttled = report.throttled,
        "run finished: {} of {total} job(s) done, {} need attention",
        count(JobState::Done),
        report.attention_total
    );
}

/// Every job that needs a person (bounded), then what to do about each kind.
fn print_attention(report: &RunReport, command: &str) {
    let mut text = String::new();
    if report.attention_total > 0 {
        text.push_str(&format!(
            "needing attention ({} job(s)):\n",
            report.attention_total
        ));
        for job in &report.attention {
            text.push_str(&format!(
                "  {}  {}  line {}  {}\n",
                job.id, job.state, job.line, job.reason
            ));
        }
        let more = report
            .attention_total
            .saturating_sub(report.attention.len());
        if more > 0 {
            text.push_str(&format!(
                "  and {more} more; see `{command} status` (or `export` for every job)\n"
            ));
        }
    }
    let count = |state: JobState| report.states.get(&state).copied().unwrap_or(0);
    let mut todo = Vec::new();
    let permanent = report.permanent_failures;
    let transient = count(JobState::Failed).saturating_sub(permanent);
    if permanent > 0 {
        todo.push(format!(
            "failed, judged by the service ({permanent}): the reason is about the row itself; fix it in the manifest and run again (a job that was rendered needs --replace-changed); `{command} retry --failed --permanent` would try it as it is, and pay again"
        ));
    }
    if transient > 0 {
        todo.push(format!(
            "failed after transient errors ({transient}): `{command} retry --failed`, then run again"
        ));
    }
    if count(JobState::Invalid) > 0 {
        todo.push(format!(
            "invalid ({}): fix those manifest lines (`headswap-batch check MANIFEST` lists every one), then run again",
            count(JobState::Invalid)
        ));
    }
    if count(JobState::NeedsMapping) > 0 {
        todo.push(format!(
            "needs_mapping ({}): fill in obj_id on those lines (`{command} report` shows each person's picture), then run again",
            count(JobState::NeedsMapping)
        ));
    }
    if count(JobState::Expired) > 0 {
        todo.push(format!(
            "expired ({}): `{command} retry --expired` asks for fresh download links (nothing is rendered again), then run again",
            count(JobState::Expired)
        ));
    }
    if count(JobState::Held) > 0 {
        todo.push(format!(
            "held ({}): a create may have been sent; check at the service that it did not render, then `{command} retry --ids ID,...` and run again",
            count(JobState::Held)
        ));
    }
    if !report.row_changed.is_empty() {
        let ids: Vec<&str> = report
            .row_changed
            .iter()
            .take(MAX_ATTENTION_LISTED)
            .map(|id| id.as_str())
            .collect();
        let more = report.row_changed.len().saturating_sub(ids.len());
        todo.push(format!(
            "row_changed ({}): {}{}: edited in the manifest after submission, kept as submitted; run with --replace-changed to render the edited rows (paid again)",
            report.row_changed.len(),
            ids.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        ));
    }
    if report.possible_duplicates > 0 {
        todo.push(format!(
            "possible_duplicate ({}): a create's answer was lost and the create was sent again, so the service may have billed it twice; `{command} export` flags them (column flags), to check against the account",
            report.possible_duplicates
        ));
    }
    if !todo.is_empty() {
        text.push_str("what to do:\n");
        for line in todo {
            text.push_str(&format!("  {line}\n"));
        }
    }
    if !text.is_empty() {
        eprint!("{text}");
    }
}

/// Why the run stopped early, and what to do.
fn print_stop(report: &RunReport) {
    match &report.stop {
        Some(StopReason::OutOfCredits { message }) => {
            let waiting = waiting_jobs(&report.states);
            eprintln!(
                "error: out of credits (1104: {message}); nothing new was submitted after it\nhint: {waiting} job(s) wait; top up the account and run the same command again to continue"
            );
        }
        Some(StopReason::Unauthorized { code, message }) => {
            eprintln!(
                "error: the API rejected the credentials ({code}: {message})\nhint: check AKOOL_API_KEY (or --client-id/--client-secret); no job was marked failed, run again once fixed"
            );
        }
        Some(StopReason::LocalDisk { path, detail }) => {
            eprintln!(
                "error: cannot write the output {path}: {detail}\nhint: free space or fix permissions on the output folder, then run the same command again"
            );
        }
        Some(StopReason::Destination { message, hint }) => {
            eprintln!(
                "error: object storage refused an output: {message}\nhint: {hint}; nothing was lost: run the same command again once fixed"
            );
        }
        Some(StopReason::Interrupted) => {
            eprintln!("stopped; run the same command again to continue");
        }
        Some(StopReason::Deadline) => {
            let waiting = waiting_jobs(&report.states);
            eprintln!(
                "stopped at --max-runtime with {waiting} job(s) left; run the same command again to continue"
            );
        }
        Some(StopReason::SystemicRejection { code, message }) => {
            eprintln!(
                "error: the API rejected several creates in a row with the same answer ({code}: {message})\nhint: this is about the account or the options (model, resolution), not the jobs; nothing was marked failed for it, fix and run again"
            );
        }
        None => {}
    }
}

fn waiting_jobs(states: &BTreeMap<JobState, usize>) -> usize {
    states
        .iter()
        .filter(|(state, _)| !state.is_final())
        .map(|(_, count)| count)
        .sum()
}

/// `headswap-batch`, with `--db PATH` unless the database is the default one.
fn base_command(db: &Path) -> String {
    if db == Path::new("headswap.db") {
        return "headswap-batch".to_string();
    }
    let path = db.display().to_string();
    let plain = path
        .bytes()
        .all(|byte| byte.is_ascii_alphanumeric() || b"/._-+:,=@".contains(&byte));
    if plain {
        format!("headswap-batch --db {path}")
    } else {
        format!("headswap-batch --db '{}'", path.replace('\'', r"'\''"))
    }
}
