//! The journal through the real binary: a batch killed with SIGKILL at random moments, its
//! database then damaged on disk the ways sled's reports describe, `recover`, `run` again.
//! Every job must finish with the exact bytes its task rendered, no render bought twice
//! without the `possible_duplicate` flag, and no create repeated for a job whose task id was
//! in the journal (its task is re-attached by polling: the same task id at the end).
//!
//! The runs use the default flags but for `--rate`/`--concurrency` (the simulator's account
//! allows more than the default 2 requests per second; a 200-job batch at 2/s is minutes of
//! waiting that prove nothing more).

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use headswap_batch::journal;
use rand::{Rng, SeedableRng};

use crate::recover::{empty_folder, garbage, truncate, write_at};
use crate::support::{
    Batch, HEADER, assert_exit, assert_finished_correctly, finish, simulator, spawn, text,
};

/// How the database is damaged after the kills.
#[derive(Debug, Clone, Copy)]
enum Damage {
    /// Random bytes over the middle of sled's log.
    GarbageInTheLog,
    /// The log cut to half its length.
    TruncatedLog,
    /// Zeros from a third of the log to its end (unsynced data after a power cut).
    ZerosOverTheEnd,
    /// Every file of the database folder gone.
    EmptiedFolder,
}

const OUTPUT_BYTES: u64 = 32 * 1024;

fn manifest(jobs: usize, videos: usize) -> String {
    let mut text = format!("{HEADER}\n");
    for n in 0..jobs {
        text.push_str(&format!(
            "job-{n:03},https://videos.test/v{}.mp4,https://faces.test/f{n}.jpg,,,\n",
            n % videos
        ));
    }
    text
}

fn damage(db: &Path, how: Damage, seed: u64) {
    let log = db.join("db");
    let len = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    match how {
        Damage::GarbageInTheLog => write_at(&log, len / 2, &garbage(8192, seed)),
        Damage::TruncatedLog => truncate(&log, len / 2),
        Damage::ZerosOverTheEnd => write_at(&log, len / 3, &vec![0; (len - len / 3) as usize]),
        Damage::EmptiedFolder => empty_folder(db),
    }
}

/// `recover` through the real binary: rebuilt (exit 0), or refused because the damage left
/// a database that opens with every paid fact (exit 1, "cleanly"): then `run` resumes it.
fn recover(batch: &Batch, case: &str) -> bool {
    let output = crate::support::binary()
        .arg("recover")
        .arg(batch.manifest())
        .arg("--db")
        .arg(batch.db())
        .output()
        .unwrap();
    let stderr = text(&output.stderr);
    match output.status.code() {
        Some(0) => true,
        Some(1) if stderr.contains("cleanly") => false,
        other => panic!("{case}: recover exited {other:?}: {stderr}"),
    }
}

/// Kill a batch at random moments, damage its database, recover, finish; check everything.
async fn killed_damaged_recovered(jobs: usize, videos: usize, how: Damage, seed: u64) {
    let case = format!("{jobs} jobs, {how:?}, seed {seed}");
    let sim = simulator(|knobs| {
        knobs.analysis_time = Duration::from_millis(400);
        knobs.render_time = Duration::from_millis(1500);
        knobs.output_bytes = OUTPUT_BYTES;
    })
    .await;
    let batch = Batch::new(&manifest(jobs, videos));
    let flags = ["--rate", "40", "--concurrency", "16"];
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    // Three kills at random moments: the first once some renders are paid for.
    for kill in 0..3 {
        let mut child = spawn(batch.run_with_defaults(&sim.base_url(), &flags));
        let wait = if kill == 0 {
            rng.random_range(3000..6000)
        } else {
            rng.random_range(500..3000)
        };
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let _ = child.kill();
        let _ = child.wait();
    }
    let replay = journal::replay(&batch.db()).expect("the journal exists");
    let journalled: HashMap<String, String> = replay
        .jobs
        .values()
        .filter_map(|facts| Some((facts.id.clone(), facts.task_id()?.to_string())))
        .collect();
    assert!(
        !journalled.is_empty(),
        "{case}: some task ids were journalled before the damage"
    );
    damage(&batch.db(), how, seed);
    let rebuilt = recover(&batch, &case);
    let output = finish(batch.run_with_defaults(&sim.base_url(), &flags)).await;
    assert_exit(&output, 0);
    let stats = sim.stats();
    assert_finished_correctly(&case, &batch, &stats, OUTPUT_BYTES);
    let rows = batch.export();
    assert_eq!(rows.len(), jobs, "{case}");
    let creates: HashMap<(String, String), u64> = stats
        .creates
        .iter()
        .map(|entry| {
            (
                (entry.video_url.clone(), entry.mappings.clone()),
                entry.count,
            )
        })
        .collect();
    for row in &rows {
        let Some(task_id) = journalled.get(&row["id"]) else {
            continue;
        };
        let key = (row["video_url"].clone(), row["mappings"].clone());
        assert_eq!(
            creates.get(&key),
            Some(&1),
            "{case}: job {} had its task id {task_id} journalled, yet was created again",
            row["id"]
        );
        assert_eq!(
            &row["task_id"], task_id,
            "{case}: job {} was not re-attached to its journalled task",
            row["id"]
        );
    }
    println!(
        "{case}: {} task ids journalled before the damage, database {}, {} creates for {jobs} jobs",
        journalled.len(),
        if rebuilt {
            "rebuilt by recover"
        } else {
            "opened cleanly (healed by run)"
        },
        stats.creates.iter().map(|entry| entry.count).sum::<u64>()
    );
}

/// The acceptance case: 200 jobs, killed three times, the log overwritten with garbage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_jobs_killed_then_damaged_are_recovered_and_finished_once() {
    killed_damaged_recovered(200, 20, Damage::GarbageInTheLog, 17).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_log_after_kills_is_recovered() {
    killed_damaged_recovered(40, 8, Damage::TruncatedLog, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zeros_over_the_log_after_kills_are_recovered() {
    killed_damaged_recovered(40, 8, Damage::ZerosOverTheEnd, 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emptied_database_after_kills_is_recovered() {
    killed_damaged_recovered(40, 8, Damage::EmptiedFolder, 7).await;
}

/// `run` on a database sled cannot open names `recover` with the exact command; on a
/// deleted database whose journal holds paid work it refuses to start over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_on_a_damaged_or_deleted_database_names_recover() {
    let sim = simulator(|knobs| {
        knobs.render_time = Duration::from_millis(300);
        knobs.output_bytes = OUTPUT_BYTES;
    })
    .await;
    let batch = Batch::new(&manifest(6, 2));
    let flags = ["--rate", "40"];
    let output = finish(batch.run_with_defaults(&sim.base_url(), &flags)).await;
    assert_exit(&output, 0);
    let creates_before = sim.stats().billed_creates;
    // Garbage over the whole log: sled refuses to open it.
    let log = batch.db().join("db");
    let len = std::fs::metadata(&log).unwrap().len() as usize;
    std::fs::write(&log, garbage(len, 9)).unwrap();
    let output = finish(batch.run_with_defaults(&sim.base_url(), &flags)).await;
    assert_exit(&output, 1);
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "headswap-batch recover {} --db {}",
            batch.manifest().display(),
            batch.db().display()
        )),
        "{stderr}"
    );
    // The folder deleted: starting over would buy every render again.
    std::fs::remove_dir_all(batch.db()).unwrap();
    let output = finish(batch.run_with_defaults(&sim.base_url(), &flags)).await;
    assert_exit(&output, 1);
    let stderr = text(&output.stderr);
    assert!(stderr.contains("recover"), "{stderr}");
    assert_eq!(sim.stats().billed_creates, creates_before, "nothing bought");
    // Recovered, the batch is whole again without a create.
    assert!(recover(&batch, "deleted folder"));
    let output = finish(batch.run_with_defaults(&sim.base_url(), &flags)).await;
    assert_exit(&output, 0);
    assert_eq!(
        sim.stats().billed_creates,
        creates_before,
        "nothing bought again"
    );
    assert_finished_correctly("deleted folder", &batch, &sim.stats(), OUTPUT_BYTES);
}

/// A job flagged `possible_duplicate` when a run resumes it (its create may have left before
/// the last run died) keeps the flag through the journal: submitted again, answered, then
/// the database lost, `recover` rebuilds it flagged. (The resume once saved the flag without
/// journalling it, so a database rebuilt or healed from the journal after the second create
/// had two creates for the job and no flag.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flag_set_when_a_run_resumes_survives_the_database() {
    let sim = simulator(|knobs| {
        knobs.render_time = Duration::from_millis(300);
        knobs.output_bytes = OUTPUT_BYTES;
    })
    .await;
    let batch = Batch::new(&manifest(1, 1));
    let flags = ["--rate", "40"];
    // Dies with the create's intent flushed: the job is `submitting`.
    let mut first = batch.run_with_defaults(&sim.base_url(), &flags);
    first.env(
        "HEADSWAP_CRASH_AT",
        headswap_batch::crash::CREATE_INTENT_FLUSHED,
    );
    finish(first).await;
    // Resumed: flagged and submitted again; dies once the answer is stored.
    let mut second = batch.run_with_defaults(&sim.base_url(), &flags);
    second.env("HEADSWAP_CRASH_AT", headswap_batch::crash::CREATE_STORED);
    finish(second).await;
    let flags_of = |batch: &Batch| -> Vec<String> {
        batch
            .export()
            .into_iter()
            .map(|row| row["flags"].clone())
            .collect()
    };
    assert_eq!(
        flags_of(&batch),
        ["possible_duplicate"],
        "flagged by the resume"
    );
    // The database lost: rebuilt from the journal alone.
    std::fs::remove_dir_all(batch.db()).unwrap();
    assert!(recover(&batch, "deleted after a flagged resubmission"));
    assert_eq!(
        flags_of(&batch),
        ["possible_duplicate"],
        "the flag is a journalled fact"
    );
    let output = finish(batch.run_with_defaults(&sim.base_url(), &flags)).await;
    assert_exit(&output, 0);
    assert_eq!(flags_of(&batch), ["possible_duplicate"]);
    assert_finished_correctly("flag survives", &batch, &sim.stats(), OUTPUT_BYTES);
}
