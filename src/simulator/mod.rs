//! A faithful local stand-in for the Akool head-swap API, for tests, benchmarks, the `demo`
//! command and dry runs (`headswap-batch simulate`).
//!
//! It speaks getToken and the four head-swap endpoints as akool-api.md describes them and
//! serves the rendered files itself from signed, expiring URLs. Outcomes are steered by knobs
//! ([`SimKnobs`]) and by query parameters of the source video URL: `subjects=N` people are
//! detected (default 1), `duration=S` seconds long (outside 3–20 the analysis fails),
//! `fail=analysis` / `fail=render` make that stage fail. All randomness (jitter, faults,
//! ids) comes from one generator seeded by `--seed`, so a run is reproducible for a given
//! order of requests.
//!
//! Layout: `state` holds the records and counters, `knobs` the flags, `gate` what every API
//! call passes first (counting, faults, auth, throttling), `api` the five endpoints with
//! `analyses` and `tasks` behind them, `files` the file host, `media` the source videos and
//! faces preflight checks read.

mod analyses;
mod api;
mod files;
mod gate;
mod knobs;
mod media;
mod state;
mod tasks;

pub use knobs::{OutageWindow, ProgressCurve, SimKnobs, ThrottleMode};

pub use media::{Content as MediaContent, Layout as MediaLayout, mp4_video};

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::exit::{Exit, Fatal};
use state::Shared;

/// The counters of `GET /_sim/stats`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Requests that reached each endpoint, faulted and throttled ones included.
    pub calls: CallCounts,
    /// Requests answered 1005 or 429.
    pub throttled: u64,
    pub faults: FaultCounts,
    /// One entry per distinct (video_url, mappings) that was created, so duplicates show.
    pub creates: Vec<CreateCount>,
    /// Sum over `creates` of `count - 1`.
    pub duplicate_creates: u64,
    /// Tasks created, each billed.
    pub billed_creates: u64,
    /// `None` when unlimited.
    pub credits_left: Option<u64>,
    /// Analysis records.
    pub analyses: u64,
    /// Task records.
    pub tasks: u64,
    pub downloads: DownloadCounts,
    /// Processing time of the work, and how long finished work went unnoticed.
    #[serde(default)]
    pub timing: Timing,
    /// Source media served under `/media/` (preflight's reads).
    #[serde(default)]
    pub media: MediaCounts,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MediaCounts {
    /// Requests under `/media/`, HEAD and 404 included.
    pub requests: u64,
    /// Of those, answered 206 (a Range honoured).
    pub partial: u64,
    /// Body bytes handed to connections.
    pub bytes: u64,
}

/// Where the time of remote work went, summed in milliseconds: processing (the part no
/// client can shorten), and the wait from finishing to the first detail call that reported
/// it finished (the part a client's polling adds).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    pub analysis_processing_ms: u64,
    /// Analyses reported finished, and their unnoticed waits.
    pub analyses_noticed: u64,
    pub analysis_unnoticed_ms: u64,
    pub render_processing_ms: u64,
    /// Renders reported finished, and their unnoticed waits.
    pub renders_noticed: u64,
    pub render_unnoticed_ms: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CallCounts {
    pub token: u64,
    pub analyze: u64,
    pub analysis_detail: u64,
    pub create: u64,
    pub task_detail: u64,
    pub download: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FaultCounts {
    /// Answered code 2001.
    pub error: u64,
    /// Answered with an HTML error page (`--http-error-status`).
    pub http_error: u64,
    /// Answered HTML 503 during an outage window.
    #[serde(default)]
    pub outage: u64,
    /// Creates made and billed whose answer was never sent (`--create-lost-rate`).
    #[serde(default)]
    pub create_lost: u64,
    /// Detail answers that reported an undocumented status.
    #[serde(default)]
    pub unknown_status: u64,
    /// Connections dropped without an answer, `reset_after_create` included.
    pub reset: u64,
    /// Of `reset`: creates whose task was made and billed before the connection was dropped.
    pub reset_after_create: u64,
    /// Downloads cut short.
    pub truncate: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateCount {
    pub video_url: String,
    /// `obj_id=img_url` joined by `|`, in request order.
    pub mappings: String,
    pub count: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DownloadCounts {
    /// 200 and 206 answers started (truncated ones included).
    pub served: u64,
    /// 403 answers (bad signature or expired URL).
    pub denied: u64,
    /// Body bytes sent.
    pub bytes: u64,
}

/// A running simulator. Dropping it stops the server too; [`Simulator::shutdown`] also waits
/// until the port is released.
pub struct Simulator {
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<()>,
}

/// How long a graceful stop waits for open connections before cutting them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

impl Simulator {
    /// Bind `listen` (port 0 picks a free port) and serve in a background task.
    pub async fn start(listen: SocketAddr, knobs: SimKnobs) -> std::io::Result<Simulator> {
        knobs::check_knobs(&knobs)?;
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(knobs, addr));
        let app = router(shared.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let serving = axum::serve(listener, app).with_graceful_shutdown(async move {
                // A dropped sender (the Simulator dropped) stops the server as well.
                let _ = stopped.await;
            });
            if let Err(error) = serving.await {
                tracing::warn!(%error, "simulator stopped with an error");
            }
        });
        tracing::debug!(%addr, "simulator listening");
        Ok(Simulator {
            shared,
            stop: Some(stop),
            server,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// `http://IP:PORT`; an unspecified listen address (0.0.0.0) shows as 127.0.0.1.
    pub fn base_url(&self) -> String {
        base_url_of(self.shared.addr)
    }

    /// The same data as `GET /_sim/stats`.
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// Top up the credits (no effect when they are unlimited).
    pub fn add_credits(&self, n: u64) {
        self.shared.add_credits(n);
    }

    /// Stop accepting, let open requests finish (for at most a few seconds), release the port.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let server = &mut self.server;
        if tokio::time::timeout(SHUTDOWN_GRACE, &mut *server)
            .await
            .is_err()
        {
            server.abort();
            let _ = server.await;
        }
    }
}

/// `headswap-batch simulate`: serve until SIGINT or SIGTERM. The first line on stdout is
/// `listening on http://IP:PORT`, so scripts can start it on port 0 and read the address.
pub fn run_cli(listen: SocketAddr, knobs: SimKnobs) -> Result<Exit, Fatal> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|error| Fatal::new("could not start the async runtime").cause(error))?;
    runtime.block_on(async move {
        let simulator = Simulator::start(listen, knobs).await.map_err(|error| {
            Fatal::new(format!("the simulator cannot listen on {listen}"))
                .cause(error)
                .hint("choose another address with --listen, e.g. --listen 127.0.0.1:0 for a free port")
        })?;
        let mut stdout = std::io::stdout().lock();
        // A closed stdout (the script stopped reading) must not stop the simulator.
        let _ = writeln!(stdout, "listening on {}", simulator.base_url());
        let _ = stdout.flush();
        drop(stdout);
        tracing::info!(base_url = %simulator.base_url(), "simulator running; stop with Ctrl-C");
        wait_for_stop_signal().await?;
        simulator.shutdown().await;
        Ok(Exit::Success)
    })
}

/// The bytes the simulator serves for a task's output: a deterministic function of the task
/// id (`_id` of the create answer) and the length, starting with an MP4 `ftyp` box.
pub fn output_content(task_id: &str, len: u64) -> Vec<u8> {
    const FTYP: [u8; 24] = [
        0, 0, 0, 24, b'f', b't', b'y', b'p', b'i', b's', b'o', b'm', 0, 0, 2, 0, b'i', b's', b'o',
        b'm', b'm', b'p', b'4', b'2',
    ];
    let len = len as usize;
    let mut content = Vec::with_capacity(len);
    content.extend_from_slice(&FTYP[..FTYP.len().min(len)]);
    let mut block: u64 = 0;
    while content.len() < len {
        let mut hasher = Sha256::new();
        hasher.update(task_id.as_bytes());
        hasher.update(block.to_le_bytes());
        let digest = hasher.finalize();
        let take = digest.len().min(len - content.len());
        content.extend_from_slice(&digest[..take]);
        block += 1;
    }
    content
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/api/open/v3/getToken", post(api::get_token))
        .route("/api/open/v4/headswap/analyze", post(api::analyze))
        .route(
            "/api/open/v4/headswap/analyze/detail",
            get(api::analysis_detail),
        )
        .route("/api/open/v4/headswap/task/create", post(api::create_task))
        .route("/api/open/v4/headswap/task/detail", get(api::task_detail))
        .route("/_sim/files/{file}", get(files::download))
        .route("/_sim/previews/{analysis}/{file}", get(files::preview))
        .route("/media/{*name}", get(media::serve))
        .route("/_sim/stats", get(stats))
        .route("/_sim/credits", post(add_credits))
        .with_state(shared)
}

async fn stats(
    axum::extract::State(shared): axum::extract::State<Arc<Shared>>,
) -> axum::Json<Stats> {
    axum::Json(shared.stats())
}

#[derive(Deserialize)]
struct TopUp {
    add: u64,
}

/// `POST /_sim/credits {"add": N}` → `{"credits_left": ...}`.
async fn add_credits(
    axum::extract::State(shared): axum::extract::State<Arc<Shared>>,
    axum::Json(top_up): axum::Json<TopUp>,
) -> axum::Json<serde_json::Value> {
    let left = shared.add_credits(top_up.add);
    axum::Json(serde_json::json!({ "credits_left": left }))
}

fn base_url_of(addr: SocketAddr) -> String {
    let ip = if addr.ip().is_unspecified() {
        match addr {
            SocketAddr::V4(_) => std::net::IpAddr::from([127, 0, 0, 1]),
            SocketAddr::V6(_) => std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
        }
    } else {
        addr.ip()
    };
    format!("http://{}", SocketAddr::new(ip, addr.port()))
}

/// Knob values clap would refuse, refused for in-process use too.
async fn wait_for_stop_signal() -> Result<(), Fatal> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate())
            .map_err(|error| Fatal::new("could not listen for SIGTERM").cause(error))?;
        let mut interrupt = signal(SignalKind::interrupt())
            .map_err(|error| Fatal::new("could not listen for SIGINT").cause(error))?;
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        Ok(())
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c()
            .await
            .map_err(|error| Fatal::new("could not listen for Ctrl-C").cause(error))
    }
}

#[cfg(test)]
mod tests {
    use clap::{Args, FromArgMatches};

    use super::*;

    fn parse(args: &[&str]) -> Result<SimKnobs, clap::Error> {
        let command = SimKnobs::augment_args(clap::Command::new("simulate"));
        let matches = command
            .try_get_matches_from(std::iter::once("simulate").chain(args.iter().copied()))?;
        SimKnobs::from_arg_matches(&matches)
    }

    #[test]
    fn command_line_defaults_are_a_realistic_service() {
        let knobs = parse(&[]).unwrap();
        assert_eq!(
            knobs,
            SimKnobs {
                analysis_time: Duration::from_secs(2),
                render_time: Duration::from_secs(5),
                jitter: 0.2,
                ..SimKnobs::default()
            }
        );
    }

    #[test]
    fn flags_parse() {
        let knobs = parse(&[
            "--api-key",
            "a",
            "--api-key",
            "b",
            "--client-id",
            "c",
            "--analysis-time",
            "300ms",
            "--credits",
            "3",
            "--rate-limit",
            "2.5",
            "--throttle",
            "http",
            "--error-rate",
            "0.1",
            "--reset-rate",
            "1",
            "--latency",
            "5ms",
            "--url-ttl",
            "2s",
            "--seed",
            "7",
        ])
        .unwrap();
        assert_eq!(knobs.api_keys, ["a", "b"]);
        assert_eq!(knobs.client_ids, ["c"]);
        assert_eq!(knobs.analysis_time, Duration::from_millis(300));
        assert_eq!(knobs.credits, Some(3));
        assert_eq!(knobs.rate_limit, Some(2.5));
        assert_eq!(knobs.throttle, ThrottleMode::Http);
        assert_eq!(knobs.error_rate, 0.1);
        assert_eq!(knobs.reset_rate, 1.0);
        assert_eq!(knobs.latency, Duration::from_millis(5));
        assert_eq!(knobs.url_ttl, Duration::from_secs(2));
        assert_eq!(knobs.seed, 7);
        assert!(parse(&["--error-rate", "1.5"]).is_err());
        assert!(parse(&["--rate-limit", "0"]).is_err());
        assert!(parse(&["--analysis-time", "soon"]).is_err());
    }

    #[test]
    fn output_content_is_deterministic_and_sized() {
        let content = output_content("task-a", 1000);
        assert_eq!(content.len(), 1000);
        assert_eq!(&content[4..8], b"ftyp");
        assert_eq!(content, output_content("task-a", 1000));
        assert_ne!(content, output_content("task-b", 1000));
        // A shorter file is a prefix of a longer one.
        assert_eq!(output_content("task-a", 10), content[..10]);
        assert!(output_content("task-a", 0).is_empty());
    }

    #[test]
    fn base_url_shows_a_reachable_address() {
        assert_eq!(
            base_url_of("0.0.0.0:8080".parse().unwrap()),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            base_url_of("127.0.0.1:9".parse().unwrap()),
            "http://127.0.0.1:9"
        );
        assert_eq!(base_url_of("[::]:9".parse().unwrap()), "http://[::1]:9");
    }

    #[tokio::test]
    async fn start_refuses_impossible_knobs() {
        let knobs = SimKnobs {
            reset_rate: 2.0,
            ..SimKnobs::default()
        };
        let error = Simulator::start("127.0.0.1:0".parse().unwrap(), knobs)
            .await
            .err()
            .unwrap();
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
    }
}
