//! Preflight cost: requests and bytes per video in both box layouts (read from the
//! simulator's own counters, not the checker's), the time one check takes on loopback, and
//! how fast a batch of distinct URLs is checked at the default concurrency. Plain `main`, one
//! table per section.
//!
//! `BENCH_QUICK=1` shrinks the workloads for a smoke run.

use std::time::{Duration, Instant};

use headswap_batch::preflight::{Checker, PreflightConfig, Target, Verdict};
use headswap_batch::simulator::{SimKnobs, Simulator};

fn main() {
    let quick = std::env::var_os("BENCH_QUICK").is_some_and(|v| v != "0" && !v.is_empty());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let sim = Simulator::start("127.0.0.1:0".parse().unwrap(), SimKnobs::default())
            .await
            .expect("simulator");
        per_video(&sim, quick).await;
        batch(&sim, quick).await;
        sim.shutdown().await;
        first_analysis(quick).await;
    });
}

/// One video at a time: what one check costs the video's host.
async fn per_video(sim: &Simulator, quick: bool) {
    let checker = Checker::new(PreflightConfig::default()).expect("client");
    let repeats = if quick { 5 } else { 50 };
    println!("## Preflight cost per video (simulator counters; median of {repeats} checks)\n");
    println!("| layout | file size | requests | bytes read | share of file | time per check |");
    println!("|---|---|---|---|---|---|");
    for (layout, name) in [("start", "moov first"), ("end", "moov last")] {
        for size in [1u64 << 20, 64 << 20, 1 << 30] {
            let url = format!(
                "{}/media/video.mp4?duration=12&layout={layout}&size={size}",
                sim.base_url()
            );
            let mut times = Vec::with_capacity(repeats);
            let mut per_check = (0, 0);
            for _ in 0..repeats {
                let before = sim.stats().media;
                let started = Instant::now();
                let check = checker.check(Target::video(url.clone())).await;
                times.push(started.elapsed());
                let after = sim.stats().media;
                assert!(
                    matches!(check.verdict, Verdict::Valid { .. }),
                    "{:?}",
                    check.verdict
                );
                per_check = (after.requests - before.requests, after.bytes - before.bytes);
            }
            times.sort();
            let (requests, bytes) = per_check;
            println!(
                "| {name} | {} | {requests} | {bytes} | {:.4} % | {} |",
                human_bytes(size),
                bytes as f64 * 100.0 / size as f64,
                millis(times[times.len() / 2]),
            );
        }
    }
    println!();
}

/// Many distinct videos and faces through `check_all`: when the first result is there, and
/// the rate over the whole set.
async fn batch(sim: &Simulator, quick: bool) {
    let videos = if quick { 200 } else { 5_000 };
    let checker = Checker::new(PreflightConfig::default()).expect("client");
    let base = sim.base_url();
    let targets: Vec<Target> = (0..videos)
        .flat_map(|i| {
            let layout = if i % 2 == 0 { "start" } else { "end" };
            [
                Target::video(format!(
                    "{base}/media/video.mp4?duration=12&layout={layout}&size=4194304&n={i}"
                )),
                Target::face(format!("{base}/media/face.jpg?n={i}")),
            ]
        })
        .collect();
    let total = targets.len();
    let before = sim.stats().media;
    let started = Instant::now();
    let mut results = checker.check_all(targets);
    let mut first = None;
    let mut count = 0;
    while let Some(check) = results.recv().await {
        assert!(!check.verdict.is_invalid(), "{:?}", check.verdict);
        first.get_or_insert_with(|| started.elapsed());
        count += 1;
    }
    let elapsed = started.elapsed();
    let after = sim.stats().media;
    assert_eq!(count, total);
    println!("## A batch through check_all (concurrency 8, loopback)\n");
    println!("| URLs | first result | all done | URLs/s | requests | bytes |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| {total} ({videos} videos of 4 MiB, half of each layout, {videos} faces) | {} | {} | {:.0} | {} | {} |",
        millis(first.unwrap_or_default()),
        millis(elapsed),
        total as f64 / elapsed.as_secs_f64(),
        after.requests - before.requests,
        human_bytes(after.bytes - before.bytes),
    );
    println!();
}

/// A whole batch through `run` with preflight on and off: how long until the first analysis
/// is asked for. Every row has its own video and face, all served by the simulator, so
/// preflight has 2 URLs per row to check; the first analysis needs only its own.
async fn first_analysis(quick: bool) {
    let rows = if quick { 1_000 } else { 10_000 };
    println!(
        "\n## Time to the first analysis, {rows} rows ({} URLs to check)\n",
        rows * 2
    );
    println!("| preflight | first analysis after | URLs checked by then |");
    println!("|---|---|---|");
    for preflight in [true, false] {
        let sim = Simulator::start(
            "127.0.0.1:0".parse().unwrap(),
            SimKnobs {
                api_keys: vec!["bench-key".into()],
                render_time: Duration::from_secs(3600),
                analysis_time: Duration::from_secs(3600),
                ..SimKnobs::default()
            },
        )
        .await
        .expect("simulator");
        let dir = tempfile::tempdir().unwrap();
        let manifest = dir.path().join("jobs.csv");
        let mut csv = String::from("id,video_url,face_url\n");
        for n in 0..rows {
            csv.push_str(&format!(
                "j{n},{base}/media/video.mp4?duration=12&n={n},{base}/media/face.jpg?n={n}\n",
                base = sim.base_url()
            ));
        }
        std::fs::write(&manifest, csv).unwrap();
        let mut config = headswap_batch::demo::simulator_run_config(
            manifest,
            dir.path().join("db"),
            &dir.path().join("out"),
            sim.base_url(),
            "bench-key",
        );
        config.preflight = preflight;
        config.settings.tick = Duration::from_secs(3600);
        let shutdown = tokio_util::sync::CancellationToken::new();
        let started = Instant::now();
        let run = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { headswap_batch::run::run_batch(&config, shutdown).await }
        });
        while sim.stats().calls.analyze == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let first = started.elapsed();
        let checked = sim.stats().media.requests;
        shutdown.cancel();
        let _ = run.await;
        sim.shutdown().await;
        println!(
            "| {} | {} (parse and ingest included) | {checked} requests |",
            if preflight { "on" } else { "off" },
            millis(first)
        );
    }
}

fn millis(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1000.0)
}

fn human_bytes(bytes: u64) -> String {
    if bytes >= 1 << 30 {
        format!("{:.1} GiB", bytes as f64 / f64::from(1u32 << 30))
    } else if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / f64::from(1u32 << 20))
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}
