//! The `demo` command: the example manifest end to end against an in-process simulator, in a
//! temporary database, writing real files to `demo-output/`. No key, no network.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::akool::{ClientConfig, Credentials};
use crate::exit::{Exit, Fatal};
use crate::job::MultiSubject;
use crate::manifest::Defaults;
use crate::run::policy::{OnAmbiguous, RetryPolicy};
use crate::run::poll::PollPolicy;
use crate::run::{self, RunConfig, Settings};
use crate::secret::Secret;
use crate::simulator::{SimKnobs, Simulator};
use crate::store::Store;

/// The example manifest shipped with the project (also `jobs.example.csv` in the repository).
pub const EXAMPLE_MANIFEST: &str = include_str!("../jobs.example.csv");

const DEMO_KEY: &str = "demo-key";

/// `headswap-batch demo`: write the rendered files to `out`; run `manifest` instead of the
/// embedded example when given. Exits 0 when the run went to its end (the example has a row
/// that preflight refuses on purpose).
pub fn command(out: &Path, manifest: Option<&Path>) -> Result<Exit, Fatal> {
    let runtime = tokio::runtime::Runtime::new()
        .map_err(|e| Fatal::new("cannot start the async runtime").cause(e))?;
    let scratch = Scratch::new()?;
    runtime.block_on(async {
        let knobs = SimKnobs {
            api_keys: vec![DEMO_KEY.to_string()],
            analysis_time: Duration::from_millis(400),
            render_time: Duration::from_millis(1500),
            ..SimKnobs::default()
        };
        let listen: SocketAddr = "127.0.0.1:0".parse().expect("a valid address");
        let simulator = Simulator::start(listen, knobs)
            .await
            .map_err(|e| Fatal::new("cannot start the simulator").cause(e))?;
        eprintln!(
            "demo: simulator at {}, database in {}",
            simulator.base_url(),
            scratch.path.display()
        );
        let manifest = match manifest {
            Some(path) => path.to_path_buf(),
            None => {
                // The example's videos and faces, served by the simulator, so that preflight
                // checks them for real (and catches the one that is too long).
                let path = scratch.path.join("jobs.example.csv");
                let text = served_by(EXAMPLE_MANIFEST, &simulator.base_url());
                std::fs::write(&path, text).map_err(|e| {
                    Fatal::new(format!("cannot write {}", path.display())).cause(e)
                })?;
                path
            }
        };
        let config = simulator_run_config(
            manifest,
            scratch.path.join("headswap.db"),
            out,
            simulator.base_url(),
            DEMO_KEY,
        );
        let report = run::run_batch(&config, CancellationToken::new()).await;
        simulator.shutdown().await;
        let report = report?;
        print_jobs(&config.db)?;
        run::print_summary(&report, &config.db);
        if report.stop.is_some() {
            return Ok(run::exit_for(&report, None));
        }
        if report.refused_by_preflight > 0 {
            eprintln!(
                "demo: the example's too-long teaser is there on purpose: it was checked and refused before anything was bought"
            );
        }
        // A demonstration that ran to its end succeeded, whatever its example rows became.
        Ok(Exit::Success)
    })
}

/// The example manifest with its media links pointing at the simulator's `/media/`: a video
/// keeps its query (the duration and subjects the simulator steers by) and is told apart by
/// its name; every face is the simulator's test image.
fn served_by(manifest: &str, base_url: &str) -> String {
    let mut text = String::with_capacity(manifest.len() * 2);
    for line in manifest.lines() {
        let mut line = line.to_string();
        while let Some(start) = line.find("https://cdn.example.com/videos/") {
            let rest = &line[start + "https://cdn.example.com/videos/".len()..];
            let name_end = rest.find(".mp4").unwrap_or(rest.len());
            let name = rest[..name_end].to_string();
            let query_end = rest[name_end..]
                .find(',')
                .map_or(rest.len(), |at| name_end + at);
            let query = rest[name_end..query_end]
                .trim_start_matches(".mp4")
                .trim_start_matches('?')
                .to_string();
            let end = start + "https://cdn.example.com/videos/".len() + query_end;
            let mut served = format!("{base_url}/media/video.mp4?name={name}");
            if !query.is_empty() {
                served.push('&');
                served.push_str(&query);
            }
            line.replace_range(start..end, &served);
        }
        while let Some(start) = line.find("https://cdn.example.com/faces/") {
            let rest = &line[start + "https://cdn.example.com/faces/".len()..];
            let end = rest.find(',').unwrap_or(rest.len());
            let name = rest[..end].trim_end_matches(".jpg").to_string();
            let served = format!("{base_url}/media/face.jpg?name={name}");
            line.replace_range(
                start..start + "https://cdn.example.com/faces/".len() + end,
                &served,
            );
        }
        text.push_str(&line);
        text.push('\n');
    }
    text
}

/// A run configuration with timings scaled to the simulator's seconds instead of minutes
/// (the demo's, and a starting point for tests and benchmarks).
pub fn simulator_run_config(
    manifest: PathBuf,
    db: PathBuf,
    out: &Path,
    base_url: String,
    api_key: &str,
) -> RunConfig {
    // Polls as often as every 100 ms (the simulator's stages take about a second); when to
    // poll is learned as the run goes, as in production.
    let poll = PollPolicy {
        min: Duration::from_millis(100),
        max: Duration::from_secs(5),
        hint: None,
    };
    RunConfig {
        manifest,
        db: db.clone(),
        client: ClientConfig {
            base_url,
            credentials: Credentials::ApiKey(Secret::new(api_key)),
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
        },
        defaults: Defaults::default(),
        strict: false,
        replace_changed: false,
        preflight: true,
        recheck: false,
        destination: None,
        shard: None,
        journal: true,
        settings: Settings {
            out_dir: out.to_path_buf(),
            bucket: None,
            db_path: db,
            concurrency: 4,
            downloads: 4,
            rate: 20.0,
            burst: 5,
            retry: RetryPolicy {
                give_up_after: Duration::from_secs(2 * 3600),
                max_attempts: None,
                backoff_base: Duration::from_millis(100),
                backoff_cap: Duration::from_secs(2),
            },
            multi_subject: MultiSubject::Skip,
            on_ambiguous: OnAmbiguous::Resubmit,
            reuse_renders: true,
            max_download_bytes: 1 << 30,
            analysis_poll: poll,
            render_poll: poll,
            cooldown_cap: Duration::from_secs(5),
            stall_timeout: Duration::from_secs(10),
            tick: Duration::from_secs(2),
            max_runtime: None,
            interactive: false,
            summary_every: Duration::from_secs(5),
            grace: Duration::from_secs(5),
        },
    }
}

/// One line per job: what happened and where the file is.
fn print_jobs(db: &Path) -> Result<(), Fatal> {
    let store = Store::open(db)?;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{:<22} {:<14} {:>9}  output", "job", "state", "bytes");
    for job in store.jobs() {
        let job = job?;
        let (bytes, path) = match &job.output {
            Some(output) => (output.bytes.to_string(), output.path.clone()),
            None => (
                String::new(),
                job.last_error.map(|e| e.message).unwrap_or_default(),
            ),
        };
        let _ = writeln!(
            out,
            "{:<22} {:<14} {bytes:>9}  {path}",
            job.id,
            job.state.as_str()
        );
    }
    let _ = writeln!(out);
    Ok(())
}

/// A temporary folder removed when dropped.
struct Scratch {
    path: PathBuf,
}

impl Scratch {
    fn new() -> Result<Scratch, Fatal> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path =
            std::env::temp_dir().join(format!("headswap-demo-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path)
            .map_err(|e| Fatal::new(format!("cannot create {}", path.display())).cause(e))?;
        Ok(Scratch { path })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
        let _ = std::fs::remove_file(crate::view::snapshot_path(&self.path.join("headswap.db")));
    }
}
