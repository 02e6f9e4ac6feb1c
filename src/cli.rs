//! The command line as clap sees it: derived structs for every command and flag, and nothing
//! else. `config` turns these into checked configurations and `app` dispatches them; no other
//! module knows these types (see ARCHITECTURE.md, "Entry points").

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::akool::Resolution;
use crate::flags;
use crate::job::MultiSubject;
use crate::logging::LogFormat;
use crate::manifest::Shard;
use crate::run::OnAmbiguous;
use crate::secret::Secret;

#[derive(Debug, Parser)]
#[command(
    name = "headswap-batch",
    version,
    about = "Render a CSV manifest of videos and faces through Akool's head-swap API, durably and exactly once."
)]
pub struct Cli {
    /// `--db` before the command (`headswap-batch --db PATH status`), as scripts write it. Not
    /// shown here: each command that reads a database offers `--db` itself, and `config`
    /// refuses this one before a command that uses none (`check`, `simulate`, `demo`...).
    #[arg(long = "db", value_name = "PATH", hide = true)]
    pub db_before_command: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, global = true, env = "HEADSWAP_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Only warnings and errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// More detail: -v every API call, -vv also the bodies of requests and answers (secrets
    /// redacted).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Ingest a manifest and process every job until it is in a final state.
    ///
    /// A flag given twice takes its last value, so wrappers can append overrides.
    #[command(args_override_self = true)]
    Run(RunArgs),
    /// Validate a manifest without touching the database or the network.
    Check(CheckArgs),
    /// Counts per state, what is in flight, failures with reasons (works during a run).
    Status(StatusArgs),
    /// One CSV row per job.
    Export(ExportArgs),
    /// Put failed, expired or held jobs back to be processed by the next run, and say how many
    /// may be billed again.
    Retry(RetryArgs),
    /// Run the local Akool simulator.
    Simulate(SimulateArgs),
    /// Run jobs.example.csv end to end against an in-process simulator.
    Demo(DemoArgs),
    /// Write one self-contained HTML page showing the batch (works during a run).
    Report(ReportArgs),
    /// Rebuild a damaged database from the manifest and the journal beside it, so nothing
    /// already paid for is bought again (refuses a database that opens cleanly).
    Recover(RecoverArgs),
    /// Print shell completions (bash, zsh or fish) on stdout.
    Completions(CompletionsArgs),
    /// Print the man page on stdout.
    Man,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The CSV manifest.
    pub manifest: PathBuf,
    #[command(flatten)]
    pub db: DbArgs,
    /// Where finished jobs go: a folder (each job is DIR/<id>.mp4), or object storage as
    /// s3://BUCKET/PREFIX/ (each job is PREFIX/<id>.mp4; credentials and endpoint from the
    /// usual AWS_* environment).
    #[arg(long, default_value = "output", value_name = "DIR|s3://BUCKET/PREFIX/")]
    pub out: PathBuf,
    /// Process only the jobs of shard K of N (a stable hash of the id), to split one
    /// manifest over N machines or accounts, each with its own --db.
    #[arg(long, value_name = "K/N", value_parser = str::parse::<Shard>, help_heading = "Scaling")]
    pub shard: Option<Shard>,
    #[command(flatten)]
    pub api: ApiArgs,
    #[command(flatten)]
    pub limits: LimitArgs,
    #[command(flatten)]
    pub jobs: JobDefaults,
    #[command(flatten)]
    pub polling: PollingArgs,
    /// Refuse the whole manifest if any row is invalid.
    #[arg(long, help_heading = "Manifest")]
    pub strict: bool,
    /// Restart jobs whose row changed after they were submitted (renders them again).
    #[arg(long, help_heading = "Manifest")]
    pub replace_changed: bool,
    /// Create a render for every job, even when several ask for the very same one (by
    /// default such jobs share one create and each gets its own copy of the result).
    #[arg(long, help_heading = "Manifest")]
    pub no_reuse_renders: bool,
    /// Stop taking new work when it would not finish within this time (e.g. 7h30m), then exit 4.
    #[arg(long, value_parser = flags::duration_at_least(flags::MIN_MAX_RUNTIME, "a shorter run would stop before anything started"), allow_hyphen_values = true, help_heading = "Run")]
    pub max_runtime: Option<Duration>,
    /// What to do with a job whose create may have been sent but whose answer was lost.
    #[arg(long, value_enum, default_value_t = OnAmbiguous::Resubmit, help_heading = "Run")]
    pub on_ambiguous: OnAmbiguous,
    /// No progress display, only log lines.
    #[arg(long, help_heading = "Run")]
    pub no_progress: bool,
    /// Skip the checks of every video and face URL before anything is bought.
    #[arg(long, help_heading = "Preflight")]
    pub no_preflight: bool,
    /// Check again the URLs an earlier run checked (their results are kept in the database).
    #[arg(long, help_heading = "Preflight", conflicts_with = "no_preflight")]
    pub recheck: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ApiArgs {
    /// API root.
    #[arg(
        long,
        env = "AKOOL_BASE_URL",
        default_value = "https://openapi.akool.com",
        help_heading = "API"
    )]
    pub base_url: String,
    /// API key (sent as x-api-key).
    #[arg(
        long,
        env = "AKOOL_API_KEY",
        hide_env_values = true,
        help_heading = "API"
    )]
    pub api_key: Option<Secret>,
    /// Client id for the bearer-token flow (with --client-secret).
    #[arg(long, env = "AKOOL_CLIENT_ID", help_heading = "API")]
    pub client_id: Option<String>,
    /// Client secret for the bearer-token flow.
    #[arg(
        long,
        env = "AKOOL_CLIENT_SECRET",
        hide_env_values = true,
        help_heading = "API"
    )]
    pub client_secret: Option<Secret>,
    /// Timeout of one API request (at least 1s: a create cut off by it may have been billed).
    #[arg(long, value_parser = flags::duration_at_least(flags::MIN_REQUEST_TIMEOUT, "a create cut off by the timeout may have been billed, and is sent again as a possible duplicate"), allow_hyphen_values = true, default_value = "30s", help_heading = "API")]
    pub request_timeout: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct LimitArgs {
    /// Jobs at the service at once (analyses + renders).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1000), help_heading = "Limits")]
    pub concurrency: u32,
    /// API requests per second, all endpoints together.
    #[arg(long, default_value_t = 2.0, value_parser = flags::rate, allow_negative_numbers = true, help_heading = "Limits")]
    pub rate: f64,
    /// Requests that may go out at once above the steady rate.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=1000), help_heading = "Limits")]
    pub burst: u32,
    /// Parallel downloads.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256), help_heading = "Limits")]
    pub downloads: u32,
    /// How long a job may keep meeting transient failures (5xx, 2001, resets, timeouts,
    /// unusable links) before it is failed. Throttling and outages of the whole service do not
    /// count. At least 1m.
    #[arg(long, value_parser = flags::duration_at_least(flags::MIN_GIVE_UP_AFTER, "a few seconds of failures are ordinary, and would fail jobs the next request finishes"), allow_hyphen_values = true, default_value = "2h", help_heading = "Retries")]
    pub give_up_after: Duration,
    /// Also fail a stage after this many transient failures in a row (by default only
    /// --give-up-after counts).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1_000_000), help_heading = "Retries")]
    pub max_attempts: Option<u32>,
    /// Largest output file accepted, in bytes.
    #[arg(long, default_value_t = 4 << 30, value_parser = clap::value_parser!(u64).range(1..), help_heading = "Limits")]
    pub max_download_bytes: u64,
}

/// Tuning of polls and retries. The defaults suit Akool's minutes-long renders; tests and the
/// demo shorten them.
#[derive(Debug, Clone, Args)]
pub struct PollingArgs {
    /// Shortest interval between two polls of the same analysis or render (at least 10ms).
    #[arg(long, value_parser = flags::duration_at_least(flags::MIN_POLL_INTERVAL, "polling paces itself by --rate; this only keeps it from spinning"), allow_hyphen_values = true, default_value = "500ms", help_heading = "Polling")]
    pub poll_min: Duration,
    /// Longest interval between two polls of the same analysis or render (not below --poll-min).
    #[arg(long, value_parser = flags::duration_at_least(flags::MIN_POLL_INTERVAL, "polling paces itself by --rate; this only keeps it from spinning"), allow_hyphen_values = true, default_value = "60s", help_heading = "Polling")]
    pub poll_max: Duration,
    /// A hint of how long an analysis takes, used only until the service's timing is learned
    /// (by default the first analyses are probed early and their progress extrapolated).
    #[arg(long, value_parser = flags::duration_at_least(flags::MIN_PAUSE, "a zero hint would poll at once"), allow_hyphen_values = true, help_heading = "Polling")]
    pub analysis_guess: Option<Duration>,
    /// A hint of how long a render takes, used only until the service's timing is learned.
    #[arg(long, value_parser = flags::duration_at_least(flags::MIN_PAUSE, "a zero hint would poll at once"), allow_hyphen_values = true, help_heading = "Polling")]
    pub render_guess: Option<Duration>,
    /// First retry delay after a transient failure (doubles each attempt, full jitter).
    #[arg(long, value_parser = flags::duration_at_least(flags::MIN_PAUSE, "a zero pause would retry in a busy loop"), allow_hyphen_values = true, default_value = "1s", help_heading = "Retries")]
    pub backoff_base: Duration,
    /// Longest retry delay (not below --backoff-base).
    #[arg(long, value_parser = flags::duration_at_least(flags::MIN_PAUSE, "a zero pause would retry in a busy loop"), allow_hyphen_values = true, default_value = "60s", help_heading = "Retries")]
    pub backoff_cap: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct JobDefaults {
    /// Resolution for rows that leave it blank: 480p or 720p.
    #[arg(long, default_value = "720p", value_parser = str::parse::<Resolution>, help_heading = "Jobs")]
    pub resolution: Resolution,
    /// Model for rows that leave it blank.
    #[arg(long, default_value = "akool-premium", help_heading = "Jobs")]
    pub model: String,
    /// What to do when a blank obj_id meets a video with several subjects.
    #[arg(long, value_enum, default_value_t = MultiSubject::Skip, help_heading = "Jobs")]
    pub multi_subject: MultiSubject,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    pub manifest: PathBuf,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
    /// Also check over the network that every video and face can be used (reachable, the
    /// right kind, a video's duration); still no database and no API call.
    #[arg(long)]
    pub preflight: bool,
    /// Also print how many jobs each of N shards gets (see `run --shard`).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub shards: Option<u32>,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    #[command(flatten)]
    pub db: DbArgs,
    /// The HTML file to write.
    #[arg(long, default_value = "report.html")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct RecoverArgs {
    /// The CSV manifest the runs used.
    pub manifest: PathBuf,
    #[command(flatten)]
    pub db: DbArgs,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub db: DbArgs,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub db: DbArgs,
    /// Write to this file instead of stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RetryArgs {
    #[command(flatten)]
    pub db: DbArgs,
    /// Every job that failed for a transient reason (it kept meeting errors until
    /// --give-up-after); add --permanent for those the service judged.
    #[arg(long)]
    pub failed: bool,
    /// With --failed: also the jobs whose input the service judged (a render failed with a
    /// reason, a create rejected, no person detected). Retrying them usually pays again for
    /// the same answer; fixing their rows is the better way.
    #[arg(long, requires = "failed")]
    pub permanent: bool,
    /// Every expired job (a fresh download link is asked for; nothing is rendered again).
    #[arg(long)]
    pub expired: bool,
    /// These jobs (comma-separated ids), if failed, expired or held, whatever the reason. An
    /// unknown id is an error, and then nothing is retried.
    #[arg(long, value_delimiter = ',')]
    pub ids: Vec<String>,
}

/// The database option of the commands that read or write one.
#[derive(Debug, Clone, Args)]
pub struct DbArgs {
    /// State directory (the sled database).
    #[arg(
        long,
        value_name = "PATH",
        env = "HEADSWAP_DB",
        default_value = "headswap.db"
    )]
    pub db: PathBuf,
}

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    #[command(flatten)]
    pub knobs: crate::simulator::SimKnobs,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Output folder.
    #[arg(long, default_value = "demo-output")]
    pub out: PathBuf,
    /// The manifest to run (the embedded example by default).
    #[arg(long)]
    pub manifest: Option<PathBuf>,
}
