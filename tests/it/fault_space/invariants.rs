//! What must hold after every world, checked from the outside: the exit code, each job's
//! final state and reason, the creates the simulator counted against the export's flags and
//! `creates` column, the files in the output folder, and the calls the simulator counted
//! against the bound derived in `fault_space.rs`.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::Duration;

use headswap_batch::simulator::{Stats, output_content};

use super::world::{Expected, Family, World};

/// `--poll-min`'s default: no stage is polled again sooner unless its last call failed.
pub const POLL_MIN: Duration = Duration::from_millis(500);

/// The API calls the simulator counted (token calls included; with an API key there are
/// none).
pub fn api_calls(stats: &Stats) -> u64 {
    let calls = &stats.calls;
    calls.token + calls.analyze + calls.analysis_detail + calls.create + calls.task_detail
}

/// API calls answered with a failure the world injected or the tool caused by going too
/// fast: 2001, HTML error pages, resets, lost create answers, outage pages, throttling.
pub fn failed_calls(stats: &Stats) -> u64 {
    let faults = &stats.faults;
    faults.error
        + faults.http_error
        + faults.reset
        + faults.create_lost
        + faults.outage
        + stats.throttled
}

/// The most API calls a world may cost (see the module documentation of `fault_space.rs`
/// for the derivation):
/// `3·F + 2·U + 3·(A + T) + (ΣPa + ΣPr) / poll_min + D + N`.
pub fn call_bound(stats: &Stats) -> f64 {
    let failed = failed_calls(stats) as f64;
    let unknown = stats.faults.unknown_status as f64;
    let records = (stats.analyses + stats.tasks) as f64;
    let processing_ms =
        (stats.timing.analysis_processing_ms + stats.timing.render_processing_ms) as f64;
    let polls = processing_ms / POLL_MIN.as_millis() as f64;
    let links = (stats.downloads.denied + stats.calls.download) as f64;
    3.0 * failed + 2.0 * unknown + 3.0 * records + polls + links
}

/// The most calls a world's outages may meet. Each job and each video has at most one call
/// failing and being retried at a time (its stage's), and retries wait a full-jitter backoff
/// whose ceiling doubles from 2 s: over an outage of L seconds such a chain makes about
/// log2(L) + 1 calls, and log2(L) + 1 + k only with a probability under 2^(-k(k+1)/2) (each
/// further retry must draw a wait under L from a ceiling twice the last); k = 5 here. The
/// circuit breaker only lowers that (one probe at growing pauses once it has opened).
pub fn outage_bound(world: &World) -> f64 {
    let chains = (world.jobs.len() + world.videos.len()) as f64;
    world
        .knobs
        .outages
        .iter()
        .map(|window| chains * ((1.0 + window.length.as_secs_f64()).log2() + 6.0))
        .sum()
}

/// Everything wrong with a finished world, one line each (empty when it passed).
pub fn violations(
    world: &World,
    exit: Option<i32>,
    stats: &Stats,
    rows: &[HashMap<String, String>],
    out_dir: &Path,
) -> Vec<String> {
    let mut wrong = Vec::new();
    match exit {
        Some(code) if code == world.expected_exit() => {}
        Some(code) => wrong.push(format!(
            "exit {code}, expected {} (every job done: 0; some failed for a reason of their own: 3)",
            world.expected_exit()
        )),
        None => wrong.push("the run hung (killed) or died of a signal".to_string()),
    }
    check_states(world, rows, &mut wrong);
    check_creates(world, stats, rows, &mut wrong);
    check_files(world, rows, out_dir, &mut wrong);
    check_calls(world, stats, rows, &mut wrong);
    wrong
}

/// Every job ended as its video steers it, for that reason: `done`, `needs_mapping`, or
/// `failed` because the render or the analysis failed — never `failed` or `expired` for a
/// transient cause.
fn check_states(world: &World, rows: &[HashMap<String, String>], wrong: &mut Vec<String>) {
    if rows.len() != world.jobs.len() {
        wrong.push(format!(
            "the export has {} rows for {} jobs",
            rows.len(),
            world.jobs.len()
        ));
    }
    for (n, _) in world.jobs.iter().enumerate() {
        let id = format!("job-{n:02}");
        let Some(row) = rows.iter().find(|row| row["id"] == id) else {
            wrong.push(format!("{id} is missing from the export"));
            continue;
        };
        let (state, error) = (row["state"].as_str(), row["error"].as_str());
        let right = match world.expected(n) {
            Expected::Done => state == "done",
            Expected::NeedsMapping => state == "needs_mapping",
            Expected::Failed(reason) => state == "failed" && error.starts_with(reason),
        };
        if !right {
            wrong.push(format!(
                "{id} should end {:?} but is {state} (error: {error:?}, attempts {})",
                world.expected(n),
                row["attempts"]
            ));
        }
    }
}

/// Every create the simulator saw twice belongs to a job flagged `possible_duplicate`, whose
/// `creates` column counts at least as many; the flag and `creates > 1` agree.
fn check_creates(
    world: &World,
    stats: &Stats,
    rows: &[HashMap<String, String>],
    wrong: &mut Vec<String>,
) {
    let by_request: HashMap<(&str, &str), &HashMap<String, String>> = rows
        .iter()
        .map(|row| ((row["video_url"].as_str(), row["mappings"].as_str()), row))
        .collect();
    for entry in &stats.creates {
        let Some(row) = by_request.get(&(entry.video_url.as_str(), entry.mappings.as_str())) else {
            wrong.push(format!("a create for no job: {entry:?}"));
            continue;
        };
        let flagged = row["flags"].contains("possible_duplicate");
        let counted: u64 = row["creates"].parse().unwrap_or(0);
        if entry.count > 1 && !flagged {
            wrong.push(format!(
                "{} was created {} times and is not flagged possible_duplicate",
                row["id"], entry.count
            ));
        }
        if counted < entry.count {
            wrong.push(format!(
                "{} was created {} times, its creates column says {counted}",
                row["id"], entry.count
            ));
        }
    }
    for row in rows {
        let flagged = row["flags"].contains("possible_duplicate");
        let counted: u64 = row["creates"].parse().unwrap_or(0);
        if flagged != (counted > 1) {
            wrong.push(format!(
                "{}: flags {:?} and creates {counted} disagree",
                row["id"], row["flags"]
            ));
        }
        let reached_the_service =
            matches!(row["state"].as_str(), "done") || row["error"].starts_with("render failed");
        if reached_the_service && counted == 0 {
            wrong.push(format!("{} was rendered but counts no create", row["id"]));
        }
    }
    if world.family == Family::GiveUpWindow {
        // The only API fault is an outage of HTML 503 pages: refusals, never lost answers.
        for row in rows.iter().filter(|row| !row["flags"].is_empty()) {
            wrong.push(format!(
                "{} is flagged {:?} although every failed create was a 503",
                row["id"], row["flags"]
            ));
        }
        if stats.duplicate_creates > 0 {
            wrong.push(format!(
                "{} duplicate creates with no lost answer",
                stats.duplicate_creates
            ));
        }
    }
}

/// The output folder holds exactly the done jobs' files, each byte for byte what its task
/// rendered, and no `.part` file.
fn check_files(
    world: &World,
    rows: &[HashMap<String, String>],
    out_dir: &Path,
    wrong: &mut Vec<String>,
) {
    let present: BTreeSet<String> = std::fs::read_dir(out_dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let expected: BTreeSet<String> = rows
        .iter()
        .filter(|row| row["state"] == "done")
        .map(|row| format!("{}.mp4", row["id"]))
        .collect();
    if present != expected {
        wrong.push(format!(
            "the output folder holds {present:?}, the done jobs are {expected:?}"
        ));
    }
    for row in rows.iter().filter(|row| row["state"] == "done") {
        let path = out_dir.join(format!("{}.mp4", row["id"]));
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        if bytes != output_content(&row["task_id"], world.knobs.output_bytes) {
            wrong.push(format!(
                "{}'s file ({} bytes) is not what task {} rendered",
                row["id"],
                bytes.len(),
                row["task_id"]
            ));
        }
        if row["bytes"] != world.knobs.output_bytes.to_string() {
            wrong.push(format!("{} exports {} bytes", row["id"], row["bytes"]));
        }
    }
}

/// API calls within [`call_bound`], calls meeting an outage within [`outage_bound`], and no
/// file downloaded more often than it was cut.
fn check_calls(
    world: &World,
    stats: &Stats,
    rows: &[HashMap<String, String>],
    wrong: &mut Vec<String>,
) {
    let calls = api_calls(stats) as f64;
    let bound = call_bound(stats);
    let jobs = world.jobs.len() as f64;
    if calls > bound {
        wrong.push(format!(
            "{calls} API calls ({:.1} per job) exceed the bound {bound:.0} ({:.1} per job)",
            calls / jobs,
            bound / jobs
        ));
    }
    let done = rows.iter().filter(|row| row["state"] == "done").count() as u64;
    if stats.downloads.served > done + stats.faults.truncate {
        wrong.push(format!(
            "{} downloads served for {done} files and {} cut short",
            stats.downloads.served, stats.faults.truncate
        ));
    }
    let outage_bound = outage_bound(world);
    if stats.faults.outage as f64 > outage_bound {
        wrong.push(format!(
            "{} calls met an outage, more than {outage_bound:.0}: the service was hammered",
            stats.faults.outage
        ));
    }
    if world.family == Family::GiveUpWindow && stats.faults.outage == 0 {
        wrong.push("no call met the outage: the world tested nothing".to_string());
    }
}
