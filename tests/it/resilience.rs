//! The service at its worst, with the default flags (only concurrency and rate set, as a user
//! would): every fault at once, an outage of the whole API, stages much shorter than anything
//! guessed. The real binary against the simulator over loopback.

use std::collections::HashMap;
use std::time::Duration;

use headswap_batch::simulator::{OutageWindow, ProgressCurve};

use crate::support::{
    Batch, assert_exit, assert_finished_correctly, binary, simulator, spawn, text, until,
    wait_at_most,
};

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

/// The stand-in that cost 12 jobs of 40: 8 % of calls answered 2001, 5 % an HTML 502 page,
/// 5 % reset, 10 % of creates made but their answer never sent, 30 % of downloads cut short,
/// 10 % of polls with an unknown status, and output links that live 0.5 s from the detail
/// call that signed them, their expiry rounded down to the second (some born expired).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_at_once_costs_no_job() {
    let output_bytes = 128 * 1024;
    let sim = simulator(|knobs| {
        knobs.analysis_time = Duration::from_millis(500);
        knobs.render_time = Duration::from_millis(1200);
        knobs.jitter = 0.2;
        knobs.error_rate = 0.08;
        knobs.http_error_rate = 0.05;
        knobs.reset_rate = 0.05;
        knobs.create_lost_rate = 0.10;
        knobs.truncate_rate = 0.30;
        knobs.unknown_status_rate = 0.10;
        knobs.url_ttl = Duration::from_millis(500);
        knobs.url_expiry_rounding = Duration::from_secs(1);
        knobs.output_bytes = output_bytes;
        knobs.seed = 12;
    })
    .await;
    let batch = Batch::new(&manifest(40, 10));
    let child =
        spawn(batch.run_with_defaults(&sim.base_url(), &["--concurrency", "12", "--rate", "40"]));
    let output = wait_at_most(child, Duration::from_secs(300)).await;
    assert_exit(&output, 0);
    let stats = sim.stats();
    let faults = &stats.faults;
    for (name, count) in [
        ("2001", faults.error),
        ("502 page", faults.http_error),
        ("reset", faults.reset),
        ("lost create answer", faults.create_lost),
        ("cut download", faults.truncate),
        ("unknown status", faults.unknown_status),
        ("refused link", stats.downloads.denied),
    ] {
        assert!(count > 0, "no {name} was injected: {stats:?}");
    }
    assert_finished_correctly("every fault at once", &batch, &stats, output_bytes);
    // Every create that may have been billed twice is flagged and counted.
    let rows = batch.export();
    for row in &rows {
        let creates: u32 = row["creates"].parse().unwrap();
        let flagged = row["flags"].contains("possible_duplicate");
        assert!(creates >= 1, "{row:?}");
        assert_eq!(creates > 1, flagged, "creates and the flag agree: {row:?}");
    }
    assert!(
        rows.iter()
            .any(|row| row["flags"].contains("possible_duplicate")),
        "lost create answers flag their jobs"
    );
}

/// Every call an HTML 503 for 90 s in the middle of a batch: no job fails, none is flagged
/// (a 503 is a refusal, not a lost answer), `status` says the service is down, and the service
/// is probed, not hammered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_90_second_outage_fails_no_job() {
    let sim = simulator(|knobs| {
        knobs.analysis_time = Duration::from_millis(500);
        knobs.render_time = Duration::from_secs(2);
        knobs.jitter = 0.2;
        knobs.outages = vec![OutageWindow {
            at: Duration::from_secs(4),
            length: Duration::from_secs(90),
        }];
        knobs.seed = 90;
    })
    .await;
    let batch = Batch::new(&manifest(30, 10));
    let child = spawn(batch.run_with_defaults(&sim.base_url(), &["--concurrency", "8"]));
    // While the service is down, `status` from another process says so.
    until("the outage to begin", || sim.stats().faults.outage >= 12).await;
    let mut seen = None;
    for _ in 0..100 {
        let status = binary()
            .arg("--db")
            .arg(batch.db())
            .args(["status", "--json"])
            .output()
            .unwrap();
        let view: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
        if view["service_unavailable"].is_object() {
            seen = Some(view);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let view = seen.expect("status shows the outage while it lasts");
    assert!(
        view["service_unavailable"]["probing_every_s"]
            .as_u64()
            .unwrap()
            >= 1
    );
    let text_status = binary()
        .arg("--db")
        .arg(batch.db())
        .arg("status")
        .output()
        .unwrap();
    let shown = text(&text_status.stdout);
    assert!(
        shown.contains("service unavailable since") && shown.contains("probing every"),
        "{shown}"
    );
    let output = wait_at_most(child, Duration::from_secs(300)).await;
    assert_exit(&output, 0);
    let stats = sim.stats();
    let rows = batch.export();
    assert_eq!(rows.len(), 30);
    for row in &rows {
        assert_eq!(row["state"], "done", "{row:?}");
        assert_eq!(row["flags"], "", "a 503 is no lost answer: {row:?}");
        assert_eq!(row["creates"], "1", "{row:?}");
    }
    assert_eq!(stats.duplicate_creates, 0);
    // Probes at growing pauses (1, 2, 4 … 30 s) over 90 s, plus what was in flight when it
    // began: a few dozen calls, where eight slots retrying on their own would send hundreds.
    assert!(
        stats.faults.outage <= 60,
        "the service was hammered during the outage: {} calls",
        stats.faults.outage
    );
}

/// Stages far shorter than anything a person would guess: analyses of 0.5 s, renders of
/// 1.2 s. With the default polling flags, the first stages are probed early and the rest
/// learn from them, so finished renders are noticed within about the shortest poll interval
/// (a blind first guess of 90 s left each render unnoticed for 90 s). A second batch on the
/// same database starts from what the first learned, and `status` shows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sub_second_stages_are_noticed_at_once_and_learned_timings_are_kept() {
    let sim = simulator(|knobs| {
        knobs.analysis_time = Duration::from_millis(500);
        knobs.render_time = Duration::from_millis(1200);
        knobs.jitter = 0.2;
        knobs.seed = 41;
    })
    .await;
    let batch = Batch::new(&manifest(41, 6));
    let child =
        spawn(batch.run_with_defaults(&sim.base_url(), &["--concurrency", "16", "--rate", "40"]));
    let output = wait_at_most(child, Duration::from_secs(300)).await;
    assert_exit(&output, 0);
    let stats = sim.stats();
    let timing = &stats.timing;
    assert_eq!(timing.renders_noticed, 41);
    let unnoticed = Duration::from_millis(timing.render_unnoticed_ms / timing.renders_noticed);
    assert!(
        unnoticed < Duration::from_secs(5),
        "renders went unnoticed for {unnoticed:?} on average"
    );
    let polls_per_render = stats.calls.task_detail as f64 / 41.0;
    assert!(
        polls_per_render < 2.5,
        "{polls_per_render} polls per render"
    );

    let status = binary()
        .arg("--db")
        .arg(batch.db())
        .arg("status")
        .output()
        .unwrap();
    let shown = text(&status.stdout);
    assert!(
        shown.contains("renders take about") && shown.contains("analyses take about"),
        "{shown}"
    );

    // A second batch on the same database: no probing, the first poll is already tuned.
    std::fs::write(batch.manifest(), manifest(82, 12)).unwrap();
    let before = sim.stats();
    let child =
        spawn(batch.run_with_defaults(&sim.base_url(), &["--concurrency", "16", "--rate", "40"]));
    let output = wait_at_most(child, Duration::from_secs(300)).await;
    assert_exit(&output, 0);
    let after = sim.stats();
    let renders = after.timing.renders_noticed - before.timing.renders_noticed;
    assert_eq!(renders, 41);
    let polls = after.calls.task_detail - before.calls.task_detail;
    assert!(
        (polls as f64) / (renders as f64) < 2.0,
        "warm: {polls} polls for {renders} renders"
    );
    let states: HashMap<String, String> = batch
        .export()
        .into_iter()
        .map(|row| (row["id"].clone(), row["state"].clone()))
        .collect();
    assert!(states.values().all(|state| state == "done"), "{states:?}");
}

/// Progress the planner cannot take at its word: none at all, coarse quarters, or progress
/// that runs ahead and then stalls at 99 % for the last 40 % of a 15 s render. With the
/// default polling flags (and requests to spare: `--rate 20`) every job is done, and a render
/// costs a few polls: aimed polls that miss widen the margin, and a stage that outlives the
/// completion its progress predicted is polled less and less often. Polled at every
/// `--poll-min` instead, the stalled renders cost about 14 polls each (measured with both
/// mechanisms switched off).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_that_is_absent_coarse_or_stalled_costs_few_polls() {
    let run = |curve: ProgressCurve| async move {
        let sim = simulator(|knobs| {
            knobs.analysis_time = Duration::from_secs(1);
            knobs.render_time = Duration::from_secs(15);
            knobs.jitter = 0.2;
            knobs.progress = curve;
            knobs.seed = 7;
        })
        .await;
        let batch = Batch::new(&manifest(8, 2));
        let child = spawn(
            batch.run_with_defaults(&sim.base_url(), &["--concurrency", "8", "--rate", "20"]),
        );
        let output = wait_at_most(child, Duration::from_secs(300)).await;
        (curve, output, sim.stats(), batch)
    };
    let (none, steps, stalls) = tokio::join!(
        run(ProgressCurve::None),
        run(ProgressCurve::Steps),
        run(ProgressCurve::Stalls)
    );
    for (curve, output, stats, batch) in [none, steps, stalls] {
        assert_exit(&output, 0);
        let states: Vec<String> = batch
            .export()
            .into_iter()
            .map(|row| row["state"].clone())
            .collect();
        assert!(
            states.len() == 8 && states.iter().all(|state| state == "done"),
            "{curve:?}: {states:?}"
        );
        assert_eq!(stats.calls.create, 8, "{curve:?}: one create per job");
        let polls_per_render = stats.calls.task_detail as f64 / 8.0;
        assert!(
            polls_per_render <= 9.0,
            "{curve:?}: {polls_per_render} polls per render"
        );
    }
}
