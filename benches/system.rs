//! End-to-end benchmarks: efficiency against the physical lower bound with default polling
//! flags (`system/efficiency.rs`), per-job overhead, scale (100,000 jobs), downloads against
//! curl and uploads to object storage. Plain `main`, one table per section; the figures and the
//! commands are copied into BENCHMARKS.md.
//!
//! `BENCH_QUICK=1` shrinks every workload (for a smoke run); `BENCH_ONLY=efficiency,overhead,
//! scale,downloads,upload` picks sections; `BENCH_SCENARIO=faces` picks efficiency scenarios by
//! name.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use headswap_batch::demo::simulator_run_config;
use headswap_batch::download::{self, DownloadRequest};
use headswap_batch::objstore::{
    Destination, ObjectStorage, OutputSource, S3Env, UploadOptions, UploadRecord,
};
use headswap_batch::run::run_batch;
use headswap_batch::simulator::{SimKnobs, Simulator};
use tokio_util::sync::CancellationToken;

#[path = "system/efficiency.rs"]
mod efficiency;
#[path = "../tests/it/s3_server.rs"]
mod s3_server;

const KEY: &str = "bench-key";
const BINARY: &str = env!("CARGO_BIN_EXE_headswap-batch");

fn main() {
    if std::env::var_os(S3_SERVER_ROLE).is_some() {
        serve_s3_until_stdin_closes();
        return;
    }
    let quick = std::env::var_os("BENCH_QUICK").is_some_and(|v| v != "0" && !v.is_empty());
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let wanted = |section: &str| only.is_empty() || only.split(',').any(|s| s.trim() == section);
    // `cargo bench -- <filter>` passes arguments; a filter naming a section selects it.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let selected = |section: &str| {
        wanted(section) && (args.is_empty() || args.iter().any(|a| section.contains(a.as_str())))
    };
    print_machine(quick);
    if selected("efficiency") {
        efficiency::efficiency(quick);
    }
    if selected("overhead") {
        overhead(quick);
    }
    if selected("scale") {
        scale(quick);
    }
    if selected("downloads") {
        downloads(quick);
    }
    if selected("upload") {
        upload(quick);
    }
}

fn print_machine(quick: bool) {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|line| line.starts_with("model name"))
        .and_then(|line| line.split(':').nth(1))
        .unwrap_or("unknown")
        .trim()
        .to_string();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "machine: {cores} cores, {model}; mode: {}",
        if quick { "quick" } else { "full" }
    );
    println!();
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

/// A manifest of `jobs` rows over `videos` distinct videos, one distinct face per row.
fn write_manifest(path: &Path, jobs: usize, videos: usize) {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).expect("manifest"));
    writeln!(out, "id,video_url,face_url,sku").unwrap();
    for job in 0..jobs {
        let video = job % videos;
        writeln!(
            out,
            "job-{job:06},https://cdn.example/videos/v{video:06}.mp4,https://cdn.example/faces/f{job:06}.jpg,SKU-{job}"
        )
        .unwrap();
    }
    out.flush().unwrap();
}

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().expect("an address")
}

// ---------------------------------------------------------------------------------------------
// 2. Overhead.

fn overhead(quick: bool) {
    let jobs = if quick { 1000 } else { 5000 };
    let videos = jobs / 10;
    println!("## 2. Overhead (zero-latency simulator, no limits, durable flushes on)");
    println!(
        "{:<44} {:>8} {:>10} {:>10} {:>8} {:>6}",
        "workload", "jobs", "seconds", "jobs/s", "target", "met"
    );
    // Alternated, three of each, so that a noisy moment of the machine falls on both; the
    // best of each is compared (fsync times on a shared machine vary by a factor of two).
    let mut with = Vec::new();
    let mut without = Vec::new();
    for round in 0..3 {
        for journal in [true, false] {
            let (elapsed, done) = overhead_run(jobs, videos, journal);
            let per_second = done as f64 / elapsed.as_secs_f64();
            let label = if journal {
                "journal"
            } else {
                "no journal (comparison)"
            };
            println!(
                "{:<44} {:>8} {:>10.2} {:>10.0} {:>8} {:>6}",
                format!(
                    "{jobs} jobs / {videos} videos, C=64, {label} #{}",
                    round + 1
                ),
                done,
                elapsed.as_secs_f64(),
                per_second,
                ">= 500",
                if per_second >= 500.0 && done == jobs {
                    "yes"
                } else {
                    "NO"
                }
            );
            if journal {
                with.push(elapsed.as_secs_f64());
            } else {
                without.push(elapsed.as_secs_f64());
            }
        }
    }
    let best = |times: &[f64]| times.iter().copied().fold(f64::INFINITY, f64::min);
    let cost = best(&with) / best(&without) - 1.0;
    println!(
        "the journal's cost (best of each): {:+.1} % of the run's time (target: within 10 %): {}",
        cost * 100.0,
        if cost <= 0.10 { "met" } else { "MISSED" }
    );
    println!();
}

/// One end-to-end run of the overhead workload; `journal` false leaves the journal out.
fn overhead_run(jobs: usize, videos: usize, journal: bool) -> (Duration, usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let manifest = dir.path().join("jobs.csv");
    write_manifest(&manifest, jobs, videos);
    let rt = runtime();
    rt.block_on(async {
        let knobs = SimKnobs {
            api_keys: vec![KEY.into()],
            analysis_time: Duration::ZERO,
            render_time: Duration::ZERO,
            output_bytes: 4096,
            ..SimKnobs::default()
        };
        let sim = Simulator::start(loopback(), knobs)
            .await
            .expect("simulator");
        let mut config = simulator_run_config(
            manifest,
            dir.path().join("db"),
            &dir.path().join("out"),
            sim.base_url(),
            KEY,
        );
        config.journal = journal;
        let settings = &mut config.settings;
        settings.rate = 1_000_000.0;
        settings.burst = 1000;
        settings.concurrency = 64;
        settings.downloads = 16;
        for poll in [&mut settings.analysis_poll, &mut settings.render_poll] {
            poll.min = Duration::from_millis(1);
            poll.hint = Some(Duration::from_millis(1));
        }
        settings.tick = Duration::from_secs(60);
        let started = Instant::now();
        let report = run_batch(&config, CancellationToken::new())
            .await
            .expect("the run finishes");
        let elapsed = started.elapsed();
        sim.shutdown().await;
        let done = report
            .states
            .get(&headswap_batch::job::JobState::Done)
            .copied()
            .unwrap_or(0);
        (elapsed, done)
    })
}

// ---------------------------------------------------------------------------------------------
// 3. Scale.

fn scale(quick: bool) {
    let jobs = if quick { 20_000 } else { 100_000 };
    let videos = jobs / 10;
    println!("## 3. Scale ({jobs}-row manifest, {videos} videos)");
    let dir = tempfile::tempdir().expect("temp dir");
    let manifest = dir.path().join("jobs.csv");
    write_manifest(&manifest, jobs, videos);
    println!(
        "{:<44} {:>12} {:>10} {:>6}",
        "measure", "measured", "target", "met"
    );
    let row = |name: &str, value: String, target: &str, met: bool| {
        println!(
            "{:<44} {:>12} {:>10} {:>6}",
            name,
            value,
            target,
            if met { "yes" } else { "NO" }
        );
    };

    // `check`: the whole process, as a user runs it.
    let started = Instant::now();
    let status = Command::new(BINARY)
        .arg("check")
        .arg(&manifest)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("check runs");
    let check = started.elapsed();
    row(
        "check (process, wall)",
        format!("{:.2} s", check.as_secs_f64()),
        "<= 1 s",
        status.success() && check <= Duration::from_secs(1),
    );

    // Ingest: parse + write every job + flush, into a new database.
    let db = dir.path().join("db");
    let started = Instant::now();
    {
        let parsed = headswap_batch::manifest::parse_file(&manifest).expect("manifest parses");
        let store = headswap_batch::store::Store::open(&db).expect("store opens");
        let defaults = headswap_batch::manifest::Defaults::default();
        headswap_batch::ingest::ingest(&store, parsed, &defaults, false, headswap_batch::now_ms())
            .expect("ingest");
    }
    let ingest = started.elapsed();
    row(
        "ingest (parse + store + flush)",
        format!("{:.2} s", ingest.as_secs_f64()),
        "<= 3 s",
        ingest <= Duration::from_secs(3),
    );

    // Time to the first request when resuming the ingested database.
    let first = time_to_first_request(&manifest, &db, dir.path());
    row(
        "resume: start to first request",
        format!("{:.2} s", first.as_secs_f64()),
        "<= 1 s",
        first <= Duration::from_secs(1),
    );

    // Peak RSS of a whole run, simulator in its own process.
    let (peak_kib, done, elapsed) = whole_run_peak_rss(&manifest, dir.path());
    row(
        "whole run: peak RSS (VmHWM via wait4)",
        format!("{:.1} MB", peak_kib as f64 / 1024.0),
        "<= 150 MB",
        peak_kib as f64 / 1024.0 <= 150.0,
    );
    row(
        "whole run: jobs done / wall time",
        format!("{done} / {:.0} s", elapsed.as_secs_f64()),
        "-",
        done == jobs,
    );
    println!();
}

/// Start `run` on an existing database against a listener that only notes when the first
/// connection arrives, then stop the process.
fn time_to_first_request(manifest: &Path, db: &Path, dir: &Path) -> Duration {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    let port = listener.local_addr().unwrap().port();
    let started = Instant::now();
    let mut child = Command::new(BINARY)
        .env("AKOOL_API_KEY", KEY)
        .env_remove("RUST_LOG")
        .arg("--db")
        .arg(db)
        .arg("-q")
        .args(["run", "--no-progress"])
        .arg(manifest)
        .arg("--out")
        .arg(dir.join("out-first"))
        .args(["--base-url", &format!("http://127.0.0.1:{port}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run starts");
    let accepted = listener.accept();
    let elapsed = started.elapsed();
    drop(accepted);
    let _ = child.kill();
    let _ = child.wait();
    elapsed
}

/// Run `headswap-batch run` over the whole manifest against `headswap-batch simulate`;
/// returns (peak RSS in KiB of the run process, jobs done, wall time).
fn whole_run_peak_rss(manifest: &Path, dir: &Path) -> (u64, usize, Duration) {
    let mut simulator = Command::new(BINARY)
        .args(["simulate", "--listen", "127.0.0.1:0", "--api-key", KEY])
        .args([
            "--analysis-time",
            "0s",
            "--render-time",
            "0s",
            "--jitter",
            "0",
        ])
        .args(["--output-bytes", "1024", "--url-ttl", "1h"])
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("simulate starts");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(simulator.stdout.take().unwrap()),
        &mut line,
    )
    .expect("simulator address");
    let base_url = line.trim().trim_start_matches("listening on ").to_string();
    let db: PathBuf = dir.join("db-whole");
    let out = dir.join("out-whole");
    let started = Instant::now();
    let child = Command::new(BINARY)
        .env("AKOOL_API_KEY", KEY)
        .env_remove("RUST_LOG")
        .arg("--db")
        .arg(&db)
        .arg("-q")
        .args(["run", "--no-progress"])
        .arg(manifest)
        .arg("--out")
        .arg(&out)
        .args(["--base-url", &base_url])
        .args([
            "--rate",
            "100000",
            "--burst",
            "1000",
            "--concurrency",
            "64",
            "--downloads",
            "16",
        ])
        .args([
            "--poll-min",
            "10ms",
            "--analysis-guess",
            "1ms",
            "--render-guess",
            "1ms",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run starts");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is a plain C struct of integers, for which all zero bytes is valid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // wait4 reports the peak resident set (ru_maxrss, KiB on Linux) of the finished child.
    // SAFETY: wait4(2) on our own child's pid, with pointers to two live locals.
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid, "wait4");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the whole run failed (status {status})"
    );
    let elapsed = started.elapsed();
    std::mem::forget(child);
    let _ = simulator.kill();
    let _ = simulator.wait();
    let done = std::fs::read_dir(&out)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".mp4"))
                .count()
        })
        .unwrap_or(0);
    (usage.ru_maxrss as u64, done, elapsed)
}

// ---------------------------------------------------------------------------------------------
// 4. Downloads.

fn downloads(quick: bool) {
    println!("## 4. Downloads (loopback, files streamed from disk by a minimal HTTP server)");
    let dir = tempfile::tempdir().expect("temp dir");
    let throughput_size: u64 = if quick { 64 << 20 } else { 512 << 20 };
    let big_size: u64 = if quick { 256 << 20 } else { 1 << 30 };
    write_file(&dir.path().join("medium.mp4"), throughput_size);
    write_file(&dir.path().join("big.mp4"), big_size);
    let rt = runtime();
    let base = rt.block_on(serve_files(dir.path().to_path_buf()));
    let curl = which("curl");
    println!(
        "{:<44} {:>14} {:>12} {:>6}",
        "measure", "measured", "target", "met"
    );

    let medium_url = format!("{base}/medium.mp4");
    // Warm the page cache so neither side pays for the first read from disk.
    let _ = rt.block_on(fetch_with_download(
        &medium_url,
        &dir.path().join("warm"),
        "warm",
    ));
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for round in 0..3 {
        let (elapsed, _) = rt.block_on(fetch_with_download(
            &medium_url,
            &dir.path().join("ours"),
            &format!("r{round}"),
        ));
        ours.push(elapsed);
        if curl {
            theirs.push(curl_fetch(
                &medium_url,
                &dir.path().join(format!("curl-{round}.mp4")),
            ));
        }
    }
    let best = |times: &[Duration]| times.iter().min().copied().unwrap_or_default();
    let mib = throughput_size as f64 / (1024.0 * 1024.0);
    let ours_rate = mib / best(&ours).as_secs_f64();
    println!(
        "{:<44} {:>14} {:>12} {:>6}",
        format!("headswap download, {mib:.0} MiB (best of 3)"),
        format!("{ours_rate:.0} MiB/s"),
        "-",
        "-"
    );
    if curl {
        let curl_rate = mib / best(&theirs).as_secs_f64();
        println!(
            "{:<44} {:>14} {:>12} {:>6}",
            format!("curl -o, {mib:.0} MiB (best of 3)"),
            format!("{curl_rate:.0} MiB/s"),
            "-",
            "-"
        );
        let share = ours_rate / curl_rate;
        println!(
            "{:<44} {:>14} {:>12} {:>6}",
            "headswap / curl",
            format!("{:.0} %", share * 100.0),
            ">= 80 %",
            if share >= 0.8 { "yes" } else { "NO" }
        );
    } else {
        println!("curl not found: no comparison");
    }

    // Memory: RSS growth of this process while one large file downloads.
    let before = proc_status_kib("VmRSS");
    // Reset the peak (VmHWM) to the current RSS (Linux: clear_refs 5).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let (elapsed, bytes) = rt.block_on(fetch_with_download(
        &format!("{base}/big.mp4"),
        &dir.path().join("big-out"),
        "big",
    ));
    let peak = proc_status_kib("VmHWM");
    let growth_mb = peak.saturating_sub(before) as f64 / 1024.0;
    println!(
        "{:<44} {:>14} {:>12} {:>6}",
        format!(
            "RSS growth, {:.0} MiB file ({:.1} s)",
            bytes as f64 / (1024.0 * 1024.0),
            elapsed.as_secs_f64()
        ),
        format!("{growth_mb:.1} MB"),
        "< 32 MB",
        if growth_mb < 32.0 && bytes == big_size {
            "yes"
        } else {
            "NO"
        }
    );
    println!();
}

fn write_file(path: &Path, size: u64) {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).expect("file"));
    let block: Vec<u8> = (0..1024 * 1024)
        .map(|i: u32| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    let mut left = size;
    while left > 0 {
        let take = left.min(block.len() as u64) as usize;
        out.write_all(&block[..take]).unwrap();
        left -= take as u64;
    }
    out.flush().unwrap();
}

/// Serve the files of `dir` at `/NAME` with their length, streamed in chunks.
async fn serve_files(dir: PathBuf) -> String {
    use axum::body::Body;
    use axum::extract::{Path as UrlPath, State};
    use axum::http::{StatusCode, header};
    use axum::response::{IntoResponse, Response};

    async fn file(State(dir): State<PathBuf>, UrlPath(name): UrlPath<String>) -> Response {
        let path = dir.join(name);
        let Ok(file) = tokio::fs::File::open(&path).await else {
            return StatusCode::NOT_FOUND.into_response();
        };
        let len = file.metadata().await.map(|m| m.len()).unwrap_or(0);
        let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024);
        Response::builder()
            .header(header::CONTENT_LENGTH, len)
            .header(header::CONTENT_TYPE, "video/mp4")
            .body(Body::from_stream(stream))
            .unwrap()
    }

    let app = axum::Router::new()
        .route("/{name}", axum::routing::get(file))
        .with_state(dir);
    let listener = tokio::net::TcpListener::bind(loopback())
        .await
        .expect("bind");
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

async fn fetch_with_download(url: &str, out_dir: &Path, job_id: &str) -> (Duration, u64) {
    let http = reqwest::Client::builder().build().expect("client");
    let request = DownloadRequest {
        job_id: job_id.into(),
        url: url.to_string(),
        out_dir: out_dir.to_path_buf(),
        max_bytes: u64::MAX,
        stall_timeout: Duration::from_secs(30),
    };
    let started = Instant::now();
    let output = download::download(&http, &request, &mut None)
        .await
        .expect("download");
    let elapsed = started.elapsed();
    let _ = std::fs::remove_file(&output.path);
    (elapsed, output.bytes)
}

fn curl_fetch(url: &str, out: &Path) -> Duration {
    let started = Instant::now();
    let status = Command::new("curl")
        .args(["-sS", "-o"])
        .arg(out)
        .arg(url)
        .status()
        .expect("curl runs");
    let elapsed = started.elapsed();
    assert!(status.success(), "curl failed");
    let _ = std::fs::remove_file(out);
    elapsed
}

fn which(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn proc_status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|line| line.starts_with(field))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// 5. Uploads to object storage.

fn upload(quick: bool) {
    println!(
        "## 5. Uploads to object storage (s3s over s3s-fs on loopback in a child process; outputs \
         streamed from disk by a minimal HTTP server)"
    );
    let count = 8;
    let size: u64 = if quick { 24 << 20 } else { 100 << 20 };
    let dir = tempfile::tempdir().expect("temp dir");
    let sources = dir.path().join("sources");
    std::fs::create_dir(&sources).unwrap();
    for index in 0..count {
        write_file(&sources.join(format!("out-{index}.mp4")), size);
    }
    let rt = runtime();
    let base = rt.block_on(serve_files(sources.clone()));
    // The server runs in its own process, so that this process's memory and CPU are the
    // client's alone.
    let server = S3ServerProcess::spawn();
    let env = S3Env::from_vars([
        ("AWS_ACCESS_KEY_ID", s3_server::ACCESS_KEY.to_string()),
        ("AWS_SECRET_ACCESS_KEY", s3_server::SECRET_KEY.to_string()),
        ("AWS_REGION", s3_server::REGION.to_string()),
        ("AWS_ENDPOINT_URL", server.endpoint.clone()),
        ("AWS_ALLOW_HTTP", "true".to_string()),
    ]);
    let options = UploadOptions::default();
    let storage = std::sync::Arc::new(
        ObjectStorage::new(
            Destination::parse("s3://bench/outputs/").unwrap(),
            &env,
            options,
        )
        .expect("storage"),
    );
    rt.block_on(storage.probe()).expect("the probe passes");
    let urls: Vec<String> = (0..count)
        .map(|index| format!("{base}/out-{index}.mp4"))
        .collect();
    println!(
        "{:<50} {:>8} {:>9} {:>15} {:>12}",
        "measure", "MiB/s", "elapsed", "client CPU/GiB", "RSS growth"
    );
    let total = size * count as u64;
    let total_mib = total as f64 / (1024.0 * 1024.0);
    // Warm the page cache so neither side pays for the first read from disk.
    let _ = rt.block_on(local_folder(&urls, &dir.path().join("warm")));
    let _ = std::fs::remove_dir_all(dir.path().join("warm"));

    let measure = |name: &str, run: &dyn Fn() -> Duration| {
        let before = proc_status_kib("VmRSS");
        let _ = std::fs::write("/proc/self/clear_refs", "5");
        let cpu_before = cpu_seconds();
        let elapsed = run();
        let cpu = cpu_seconds() - cpu_before;
        let growth = proc_status_kib("VmHWM").saturating_sub(before) as f64 / 1024.0;
        println!(
            "{:<50} {:>8.0} {:>8.2}s {:>14.2}s {:>9.1} MB",
            name,
            total_mib / elapsed.as_secs_f64(),
            elapsed.as_secs_f64(),
            cpu / (total as f64 / (1u64 << 30) as f64),
            growth
        );
        growth
    };
    let label = |what: &str| format!("{what}, {count} x {} MiB at once", size >> 20);
    let overhead = measure(&label("local folder (download path)"), &|| {
        let out = dir.path().join("local");
        let elapsed = rt.block_on(local_folder(&urls, &out));
        let _ = std::fs::remove_dir_all(&out);
        elapsed
    });
    let growth = measure(&label("s3s-fs (hashing read + multipart)"), &|| {
        rt.block_on(to_object_storage(&storage, &urls, size))
    });
    let bound_mib = ((options.parts_in_flight as u64 + 1) * options.part_size * count as u64) >> 20;
    // The runtime, the connections and hyper's buffers cost what the local path's run shows.
    println!(
        "bound: {count} outputs x ({} parts in flight + 1) x {} MiB = {bound_mib} MiB of part \
         buffers whatever the file size ({} MiB here), + {overhead:.0} MB as on the local path; \
         client RSS growth within it: {}",
        options.parts_in_flight,
        options.part_size >> 20,
        size >> 20,
        if growth <= bound_mib as f64 + overhead {
            "yes"
        } else {
            "NO"
        }
    );
    println!(
        "server process (s3s + s3s-fs): peak RSS {:.0} MB, {:.2} s CPU per GiB uploaded \
         (signature checks, MD5 of every part and of the whole object, writes and a copy)",
        server.peak_rss_kib() as f64 / 1024.0,
        server.cpu_seconds() / (total as f64 / (1u64 << 30) as f64)
    );
    println!();
}

/// Set in the child process that serves S3 for the upload section.
const S3_SERVER_ROLE: &str = "HEADSWAP_BENCH_S3_SERVER";

/// The child's side: serve on a free loopback port, print the endpoint, stop when stdin closes.
fn serve_s3_until_stdin_closes() {
    use std::io::Read;
    let rt = runtime();
    let server = rt.block_on(s3_server::S3Server::start(&["bench"], 1000));
    println!("{}", server.endpoint());
    std::io::stdout().flush().unwrap();
    let mut rest = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut rest);
    drop(server);
}

/// This bench binary run as an S3 server; killed when dropped.
struct S3ServerProcess {
    child: std::process::Child,
    endpoint: String,
}

impl S3ServerProcess {
    fn spawn() -> S3ServerProcess {
        use std::io::BufRead;
        let mut child = Command::new(std::env::current_exe().expect("this bench"))
            .env(S3_SERVER_ROLE, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the S3 server process starts");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("the server prints its endpoint");
        S3ServerProcess {
            child,
            endpoint: line.trim().to_string(),
        }
    }

    /// User + system CPU seconds the server used so far (`/proc/PID/stat`, clock ticks).
    fn cpu_seconds(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // Fields after the command's closing parenthesis; utime and stime are the 12th and 13th.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        // SAFETY: sysconf reads a constant.
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        (ticks(11) + ticks(12)) / per_second.max(1.0)
    }

    fn peak_rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default()
            .lines()
            .find(|line| line.starts_with("VmHWM"))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for S3ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// User + system CPU seconds of this process so far.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the struct it is given and nothing else.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// Download every URL into `out` in parallel through the existing download path.
async fn local_folder(urls: &[String], out: &Path) -> Duration {
    let http = reqwest::Client::new();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (index, url) in urls.iter().enumerate() {
        let http = http.clone();
        let request = DownloadRequest {
            job_id: format!("job-{index}").into(),
            url: url.clone(),
            out_dir: out.to_path_buf(),
            max_bytes: u64::MAX,
            stall_timeout: Duration::from_secs(60),
        };
        tasks.spawn(async move { download::download(&http, &request, &mut None).await });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap().expect("download");
    }
    started.elapsed()
}

/// Upload every URL to the store in parallel; check each object's length.
async fn to_object_storage(
    storage: &std::sync::Arc<ObjectStorage>,
    urls: &[String],
    size: u64,
) -> Duration {
    let http = reqwest::Client::new();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (index, url) in urls.iter().enumerate() {
        let http = http.clone();
        let storage = storage.clone();
        let source = OutputSource {
            url: url.clone(),
            max_bytes: u64::MAX,
            stall_timeout: Duration::from_secs(60),
        };
        tasks.spawn(async move {
            let key = storage
                .destination()
                .key_for(&format!("job-{index}"))
                .unwrap();
            let mut record = UploadRecord::new(key);
            storage.upload(&http, &source, &mut record, |_, _| {}).await
        });
    }
    while let Some(done) = tasks.join_next().await {
        let object = done.unwrap().expect("upload");
        assert_eq!(object.bytes, size);
    }
    started.elapsed()
}
