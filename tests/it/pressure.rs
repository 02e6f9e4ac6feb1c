//! `run` under pressure: throttling, faults of every kind at once, credits, authorization,
//! systemic rejection, deadlines, signals and `retry`, through the real binary where the exit
//! code or a signal is the behaviour.

use std::collections::HashMap;
use std::time::Duration;

use headswap_batch::simulator::ThrottleMode;

use crate::support::{Batch, assert_exit, assert_finished_correctly, finish, simulator, text};

fn manifest(jobs: usize, videos: usize) -> String {
    let mut csv = String::from("id,video_url,face_url\n");
    for n in 0..jobs {
        csv.push_str(&format!(
            "job-{n:03},http://v.example/video-{}.mp4,http://f.example/face-{n}.jpg\n",
            n % videos
        ));
    }
    csv
}

fn states(batch: &Batch) -> HashMap<String, String> {
    batch
        .export()
        .into_iter()
        .map(|row| (row["id"].clone(), row["state"].clone()))
        .collect()
}

#[track_caller]
fn assert_all(batch: &Batch, expected: &str) {
    let states = states(batch);
    let odd: Vec<_> = states
        .iter()
        .filter(|(_, state)| *state != expected)
        .collect();
    assert!(odd.is_empty(), "jobs not {expected}: {odd:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_at_a_fifth_of_the_rate_costs_no_job_and_the_rate_adapts() {
    for mode in [ThrottleMode::Code, ThrottleMode::Http] {
        let sim = simulator(|knobs| {
            knobs.rate_limit = Some(8.0);
            knobs.throttle = mode;
        })
        .await;
        let batch = Batch::new(&manifest(12, 3));
        let output = finish(batch.run_command(
            &sim.base_url(),
            &["--rate", "40", "--burst", "4", "--max-attempts", "2"],
        ))
        .await;
        assert_eq!(
            output.status.code(),
            Some(0),
            "{mode:?}: {}",
            text(&output.stderr)
        );
        assert_all(&batch, "done");
        let stats = sim.stats();
        assert!(
            stats.throttled > 0,
            "{mode:?}: the limit was reached: {stats:?}"
        );
        let api_calls = stats.calls.analyze
            + stats.calls.analysis_detail
            + stats.calls.create
            + stats.calls.task_detail;
        assert!(
            stats.throttled * 2 < api_calls,
            "{mode:?}: the rate adapted instead of hammering: {} throttled of {api_calls}",
            stats.throttled
        );
        assert_eq!(stats.duplicate_creates, 0);
        sim.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_at_once_still_finishes_with_correct_files() {
    let sim = simulator(|knobs| {
        knobs.rate_limit = Some(40.0);
        knobs.error_rate = 0.1;
        knobs.http_error_rate = 0.1;
        knobs.reset_rate = 0.1;
        knobs.truncate_rate = 0.3;
        knobs.url_ttl = Duration::from_millis(400);
        knobs.output_bytes = 256 * 1024;
        knobs.seed = 11;
    })
    .await;
    let batch = Batch::new(&manifest(20, 4));
    let output = finish(batch.run_command(
        &sim.base_url(),
        &[
            "--rate",
            "200",
            "--max-attempts",
            "30",
            "--request-timeout",
            "5s",
        ],
    ))
    .await;
    assert_exit(&output, 0);
    let stats = sim.stats();
    assert!(
        stats.faults.error + stats.faults.http_error + stats.faults.reset > 0,
        "{stats:?}"
    );
    assert!(stats.faults.truncate > 0, "{stats:?}");
    assert_finished_correctly("every fault", &batch, &stats, 256 * 1024);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_credits_exits_5_and_a_top_up_continues_without_duplicates() {
    let sim = simulator(|knobs| knobs.credits = Some(3)).await;
    let batch = Batch::new(&manifest(8, 2));
    let output = finish(batch.run_command(&sim.base_url(), &["--concurrency", "2"])).await;
    assert_exit(&output, 5);
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("out of credits") && stderr.contains("5 job(s) wait"),
        "{stderr}"
    );
    let states = states(&batch);
    assert_eq!(
        states.values().filter(|state| *state == "done").count(),
        3,
        "{states:?}"
    );
    assert!(
        !states.values().any(|state| state == "failed"),
        "{states:?}"
    );
    let creates_before = sim.stats().billed_creates;
    assert_eq!(creates_before, 3);

    sim.add_credits(100);
    let output = finish(batch.run_command(&sim.base_url(), &[])).await;
    assert_exit(&output, 0);
    assert_all(&batch, "done");
    let stats = sim.stats();
    assert_eq!(stats.billed_creates, 8);
    assert_eq!(stats.duplicate_creates, 0);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_key_exits_1_at_once_and_fails_no_job() {
    let sim = simulator(|_| {}).await;
    let batch = Batch::new(&manifest(5, 2));
    let mut command = batch.run_command(&sim.base_url(), &[]);
    command.args(["--api-key", "wrong-key-123"]);
    let output = finish(command).await;
    assert_exit(&output, 1);
    let stderr = text(&output.stderr);
    assert!(stderr.contains("rejected the credentials"), "{stderr}");
    assert!(
        !stderr.contains("wrong-key-123"),
        "the key is never printed: {stderr}"
    );
    let states = states(&batch);
    assert!(
        !states.values().any(|state| state == "failed"),
        "{states:?}"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_rejection_on_several_creates_stops_the_run_without_failing_jobs() {
    let sim = simulator(|_| {}).await;
    let batch = Batch::new(&manifest(10, 1));
    let output = finish(batch.run_command(
        &sim.base_url(),
        &["--model", "not-enabled", "--concurrency", "1"],
    ))
    .await;
    assert_exit(&output, 1);
    let stderr = text(&output.stderr);
    assert!(stderr.contains("does not support this feature"), "{stderr}");
    let states = states(&batch);
    assert!(
        !states.values().any(|state| state == "failed"),
        "{states:?}"
    );
    assert_eq!(
        sim.stats().calls.create,
        3,
        "stopped after three identical rejections"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_runtime_exits_4_and_the_rerun_finishes() {
    let sim = simulator(|knobs| knobs.render_time = Duration::from_secs(3)).await;
    let batch = Batch::new(&manifest(4, 1));
    let output = finish(batch.run_command(
        &sim.base_url(),
        &["--max-runtime", "1s", "--concurrency", "2"],
    ))
    .await;
    assert_exit(&output, 4);
    let output = finish(batch.run_command(&sim.base_url(), &[])).await;
    assert_exit(&output, 0);
    assert_all(&batch, "done");
    assert_eq!(sim.stats().duplicate_creates, 0);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_and_sigint_stop_gracefully_and_the_rerun_finishes() {
    for (signal, code) in [(libc::SIGTERM, 143), (libc::SIGINT, 130)] {
        let sim = simulator(|knobs| knobs.render_time = Duration::from_secs(2)).await;
        let batch = Batch::new(&manifest(6, 2));
        let mut child = batch.run_command(&sim.base_url(), &[]).spawn().unwrap();
        // Wait until renders are under way, then signal.
        crate::support::until("a create", || sim.stats().calls.create > 0).await;
        // Meanwhile `status` from another process shows the running batch.
        let status = crate::support::binary()
            .arg("--db")
            .arg(batch.db())
            .args(["status", "--json"])
            .output()
            .unwrap();
        assert!(status.status.success(), "{}", text(&status.stderr));
        let view: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
        assert_eq!(view["live"], true, "{view}");
        assert_eq!(view["jobs"], 6, "{view}");
        // SAFETY: kill(2) on our own child's pid, which has not been reaped yet.
        unsafe { libc::kill(child.id() as i32, signal) };
        let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
            .await
            .unwrap();
        assert_eq!(status.code(), Some(code), "signal {signal}");
        let output = finish(batch.run_command(&sim.base_url(), &[])).await;
        assert_exit(&output, 0);
        assert_all(&batch, "done");
        assert_eq!(sim.stats().duplicate_creates, 0, "signal {signal}");
        sim.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_while_creates_are_throttled_leaves_them_ready_not_flagged() {
    // Two requests a second at the service, a hundred asked for: creates are refused by
    // throttling and wait in line for the cool-down when the signal comes.
    let sim = simulator(|knobs| knobs.rate_limit = Some(2.0)).await;
    let batch = Batch::new(&manifest(2, 1));
    let mut child = batch
        .run_command(&sim.base_url(), &["--rate", "100"])
        .spawn()
        .unwrap();
    crate::support::until("a throttled create", || {
        let stats = sim.stats();
        stats.calls.create > stats.billed_creates
    })
    .await;
    // SAFETY: kill(2) on our own child's pid, which has not been reaped yet.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(143));
    for row in batch.export() {
        // A throttled create was refused before it ran: nothing to flag.
        assert_ne!(row["state"], "submitting", "{row:?}");
        assert!(!row["flags"].contains("possible_duplicate"), "{row:?}");
    }
    let output = finish(batch.run_command(&sim.base_url(), &["--rate", "2"])).await;
    assert_exit(&output, 0);
    assert_all(&batch, "done");
    for row in batch.export() {
        assert!(!row["flags"].contains("possible_duplicate"), "{row:?}");
    }
    assert_eq!(sim.stats().duplicate_creates, 0);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_sends_failed_renders_back_and_reports_what_it_did() {
    let sim = simulator(|_| {}).await;
    let batch = Batch::new(
        "id,video_url,face_url\nbad,http://v.example/x.mp4?fail=render,http://f.example/a.jpg\n",
    );
    let output = finish(batch.run_command(&sim.base_url(), &[])).await;
    assert_exit(&output, 3);
    assert_eq!(states(&batch)["bad"], "failed");

    retry_failed(&batch, "bad: failed -> ready");
    assert_eq!(states(&batch)["bad"], "ready");

    let output = finish(batch.run_command(&sim.base_url(), &[])).await;
    assert_exit(&output, 3);
    assert_eq!(
        sim.stats().calls.create,
        2,
        "the failed render was rendered again"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_of_a_job_whose_video_analysis_was_lost_analyses_it_again_first() {
    use headswap_batch::akool::Mapping;
    use headswap_batch::job::{AnalysisRecord, AnalysisState, Event, JobError};
    use headswap_batch::store::Store;

    let sim = simulator(|_| {}).await;
    let batch =
        Batch::new("id,video_url,face_url\nj,http://v.example/x.mp4,http://f.example/a.jpg\n");
    // The state a run leaves when a render was forgotten by the service (1014), the video's
    // analysis was redone and failed: the job failed with subjects chosen from the first
    // analysis, the analysis record failed.
    {
        let store = Store::open(&batch.db()).unwrap();
        let parsed = headswap_batch::manifest::parse_file(&batch.manifest()).unwrap();
        headswap_batch::ingest::ingest(&store, parsed, &Default::default(), false, 1).unwrap();
        let mut job = store.job("j").unwrap().unwrap();
        for event in [
            Event::AnalysisStarted {
                analysis_id: Some("gone".into()),
            },
            Event::Mapped {
                mappings: vec![Mapping {
                    obj_id: 0,
                    img_url: "http://f.example/a.jpg".into(),
                }],
            },
            Event::Failed {
                error: JobError::new(None, "analysis failed: video not found"),
            },
        ] {
            job.apply(event, 2).unwrap();
        }
        store.put_job(&job).unwrap();
        let mut record = AnalysisRecord::new("http://v.example/x.mp4".into(), 2);
        record.state = AnalysisState::Failed;
        store.put_analysis(&record).unwrap();
        store.flush().unwrap();
    }
    retry_failed(&batch, "j: failed -> ready");

    let output = finish(batch.run_command(&sim.base_url(), &[])).await;
    assert_exit(&output, 0);
    let stats = sim.stats();
    assert_eq!(
        stats.calls.analyze, 1,
        "the video was analysed again before the create"
    );
    assert_eq!(stats.calls.create, 1);
    assert_eq!(stats.duplicate_creates, 0);
    sim.shutdown().await;
}

/// `retry --failed --permanent` succeeds and reports `expected` among what it did. (These
/// failures are the service's answers about the request, which a plain `retry --failed`
/// leaves alone; see `operator.rs`.)
fn retry_failed(batch: &Batch, expected: &str) {
    let output = crate::support::binary()
        .arg("--db")
        .arg(batch.db())
        .args(["retry", "--failed", "--permanent"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        text(&output.stdout).contains(expected),
        "{}",
        text(&output.stdout)
    );
}
