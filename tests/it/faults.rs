//! The fault matrix against the simulator: every fault knob on its own, a throttling storm,
//! output links that expire, truncated downloads, and the simulator killed and restarted in
//! the middle of a run (every remote id it handed out is forgotten and answers 1014). Each
//! run must finish with every file exactly what the service rendered, and no create repeated
//! unless flagged.

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use headswap_batch::simulator::{SimKnobs, Simulator, Stats, ThrottleMode};

use crate::support::{
    Batch, KEY, assert_finished_correctly, finish, simulator, spawn, text, until, wait,
};

const OUTPUT_BYTES: u64 = 128 * 1024;

fn manifest(jobs: usize, videos: usize) -> String {
    let mut csv = String::from("id,video_url,face_url\n");
    for n in 0..jobs {
        csv.push_str(&format!(
            "job-{n:02},http://v.example/video-{}.mp4,http://f.example/face-{n}.jpg\n",
            n % videos
        ));
    }
    csv
}

/// One knob at a time, each with a check that the fault really happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_fault_alone_still_finishes_with_correct_files() {
    type Tweak = fn(&mut SimKnobs);
    type Happened = fn(&Stats) -> bool;
    let cases: [(&str, Tweak, Happened); 6] = [
        (
            "error_rate",
            |knobs| knobs.error_rate = 0.3,
            |stats| stats.faults.error > 0,
        ),
        (
            "http_error_rate",
            |knobs| knobs.http_error_rate = 0.3,
            |stats| stats.faults.http_error > 0,
        ),
        (
            "reset_rate",
            |knobs| knobs.reset_rate = 0.3,
            |stats| stats.faults.reset > 0,
        ),
        (
            "truncate_rate",
            |knobs| knobs.truncate_rate = 0.6,
            |stats| stats.faults.truncate > 0,
        ),
        (
            "latency",
            |knobs| knobs.latency = Duration::from_millis(40),
            |stats| stats.calls.task_detail > 0,
        ),
        (
            // A storm: the service admits 4 requests a second, the client starts at 200.
            "rate_limit",
            |knobs| {
                knobs.rate_limit = Some(4.0);
                knobs.throttle = ThrottleMode::Http;
            },
            |stats| stats.throttled > 0,
        ),
    ];
    for (case, tweak, happened) in cases {
        let sim = simulator(|knobs| {
            knobs.output_bytes = OUTPUT_BYTES;
            knobs.seed = 5;
            tweak(knobs);
        })
        .await;
        let batch = Batch::new(&manifest(6, 2));
        let output = finish(batch.run_command(
            &sim.base_url(),
            &["--max-attempts", "40", "--request-timeout", "5s"],
        ))
        .await;
        assert_eq!(
            output.status.code(),
            Some(0),
            "{case}: {}",
            text(&output.stderr)
        );
        let stats = sim.stats();
        assert!(
            happened(&stats),
            "{case}: the fault never happened: {stats:?}"
        );
        assert_finished_correctly(case, &batch, &stats, OUTPUT_BYTES);
        if case == "rate_limit" {
            // Throttling never costs an attempt, so it never fails a job: shown above with
            // the default attempts; nothing was created twice either.
            assert_eq!(stats.duplicate_creates, 0, "{stats:?}");
        }
        sim.shutdown().await;
    }
}

/// The output links of a stopped run expire before the next run downloads them: the next run
/// asks for fresh ones and finishes, without rendering again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_that_expired_between_runs_are_refreshed_not_rerendered() {
    let sim = simulator(|knobs| {
        knobs.output_bytes = OUTPUT_BYTES;
        knobs.url_ttl = Duration::from_millis(300);
    })
    .await;
    let batch = Batch::new(&manifest(3, 3));
    let mut command = batch.run_command(&sim.base_url(), &["--downloads", "1"]);
    // Killed once the first output link is stored and before it is used.
    command.env("HEADSWAP_CRASH_AT", headswap_batch::crash::RENDER_STORED);
    let output = finish(command).await;
    assert_eq!(output.status.signal(), Some(libc::SIGKILL));
    // Outlive the stored link (this waits for the link's lifetime, not for a race).
    tokio::time::sleep(Duration::from_millis(400)).await;
    let output = finish(batch.run_command(&sim.base_url(), &["--max-attempts", "40"])).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let stats = sim.stats();
    assert!(
        stats.downloads.denied >= 1,
        "an expired link was refused: {stats:?}"
    );
    assert_eq!(stats.billed_creates, 3, "nothing rendered twice: {stats:?}");
    assert_finished_correctly("expired links", &batch, &stats, OUTPUT_BYTES);
    sim.shutdown().await;
}

/// The simulator is stopped and a fresh one started on the same port while the run waits on
/// it: every analysis or task id the run holds now answers 1014. The stage restarts for each
/// job (a lost render also needs its video analysed again, since the fresh service refuses a
/// create for a video it never analysed) and the batch finishes with correct files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_service_that_forgot_every_id_still_finishes() {
    for stage in ["analysis", "render"] {
        let slow = Duration::from_secs(60);
        let sim = simulator(|knobs| {
            knobs.output_bytes = OUTPUT_BYTES;
            match stage {
                "analysis" => knobs.analysis_time = slow,
                _ => knobs.render_time = slow,
            }
        })
        .await;
        let jobs = 6;
        let videos = 3;
        let batch = Batch::new(&manifest(jobs, videos));
        let child = spawn(batch.run_command(&sim.base_url(), &["--max-attempts", "1000"]));
        match stage {
            "analysis" => {
                until("every analysis submitted", || {
                    sim.stats().analyses == videos as u64
                })
                .await
            }
            _ => {
                until("every render submitted", || {
                    sim.stats().tasks == jobs as u64
                })
                .await
            }
        }
        let addr = sim.addr();
        sim.shutdown().await;
        let fresh = Simulator::start(
            addr,
            SimKnobs {
                api_keys: vec![KEY.to_string()],
                analysis_time: Duration::from_millis(100),
                render_time: Duration::from_millis(300),
                output_bytes: OUTPUT_BYTES,
                ..SimKnobs::default()
            },
        )
        .await
        .expect("the port can be bound again");
        let output = wait(child).await;
        assert_eq!(
            output.status.code(),
            Some(0),
            "{stage}: {}",
            text(&output.stderr)
        );
        let stats = fresh.stats();
        assert!(
            stats.calls.analysis_detail + stats.calls.task_detail > 0,
            "{stage}: {stats:?}"
        );
        assert_eq!(
            stats.tasks, jobs as u64,
            "{stage}: one render per job: {stats:?}"
        );
        assert_eq!(stats.duplicate_creates, 0, "{stage}: {stats:?}");
        assert_finished_correctly(stage, &batch, &stats, OUTPUT_BYTES);
        fresh.shutdown().await;
    }
}
