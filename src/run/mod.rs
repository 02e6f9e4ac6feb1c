//! The `run` command: validate the configuration, ingest the manifest, and hand every job to
//! the dispatcher until it is in a final state or the run has to stop.

pub mod download;
pub mod pace;
pub mod poll;
pub mod progress;
pub mod scheduler;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::akool::{Client, ClientConfig, Credentials};
use crate::cli::{ApiArgs, RunArgs};
use crate::exit::{Exit, Fatal};
use crate::job::JobState;
use crate::manifest::{self, Defaults};
use crate::now_ms;
use crate::run::poll::PollPolicy;
use crate::run::scheduler::{RunReport, Settings, StopReason};
use crate::store::{Store, StoreError};

/// A checked configuration for one run: everything is validated before any side effect.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub manifest: PathBuf,
    pub db: PathBuf,
    pub client: ClientConfig,
    pub defaults: Defaults,
    pub strict: bool,
    pub replace_changed: bool,
    pub settings: Settings,
}

impl RunConfig {
    /// Turn the command line into a checked configuration.
    pub fn from_args(args: &RunArgs, db: PathBuf, interactive: bool) -> Result<RunConfig, Fatal> {
        let client = client_config(&args.api)?;
        let limits = &args.limits;
        if !(limits.rate.is_finite() && limits.rate > 0.0) {
            return Err(Fatal::new(format!(
                "--rate must be a positive number, not {}",
                limits.rate
            )));
        }
        let settings = Settings {
            out_dir: args.out.clone(),
            db_path: db.clone(),
            concurrency: limits.concurrency as usize,
            downloads: limits.downloads as usize,
            rate: limits.rate,
            burst: limits.burst,
            max_attempts: limits.max_attempts,
            multi_subject: args.jobs.multi_subject,
            on_ambiguous: args.on_ambiguous,
            max_download_bytes: limits.max_download_bytes,
            analysis_poll: PollPolicy {
                min: args.polling.poll_min,
                max: args.polling.poll_max,
                initial_guess: args.polling.analysis_guess,
            },
            render_poll: PollPolicy {
                min: args.polling.poll_min,
                max: args.polling.poll_max,
                initial_guess: args.polling.render_guess,
            },
            backoff_base: args.polling.backoff_base,
            backoff_cap: args.polling.backoff_cap,
            cooldown_cap: Duration::from_secs(120),
            stall_timeout: Duration::from_secs(60),
            tick: Duration::from_secs(2),
            max_runtime: args.max_runtime,
            interactive: interactive && !args.no_progress,
            summary_every: Duration::from_secs(10),
            grace: Duration::from_secs(10),
        };
        if settings.analysis_poll.min > settings.analysis_poll.max {
            return Err(Fatal::new("--poll-min must not be larger than --poll-max"));
        }
        Ok(RunConfig {
            manifest: args.manifest.clone(),
            db,
            client,
            defaults: Defaults {
                resolution: args.jobs.resolution.clone(),
                model_name: args.jobs.model.clone(),
            },
            strict: args.strict,
            replace_changed: args.replace_changed,
            settings,
        })
    }
}

/// The client configuration from the API flags: an API key, or client id + secret.
pub fn client_config(api: &ApiArgs) -> Result<ClientConfig, Fatal> {
    let base = reqwest::Url::parse(&api.base_url)
        .map_err(|e| Fatal::new(format!("--base-url {:?} is not a URL", api.base_url)).cause(e))?;
    if !matches!(base.scheme(), "http" | "https") {
        return Err(Fatal::new(format!(
            "--base-url {:?} must be http or https",
            api.base_url
        )));
    }
    let credentials = match (&api.api_key, &api.client_id, &api.client_secret) {
        (Some(key), _, _) => Credentials::ApiKey(key.clone()),
        (None, Some(client_id), Some(secret)) => Credentials::ClientCredentials {
            client_id: client_id.clone(),
            client_secret: secret.clone(),
        },
        (None, Some(_), None) => {
            return Err(Fatal::new(
                "--client-id needs --client-secret (or AKOOL_CLIENT_SECRET)",
            ));
        }
        _ => {
            return Err(Fatal::new("no API credentials").hint(
                "set AKOOL_API_KEY (or pass --api-key), or use --client-id with --client-secret",
            ));
        }
    };
    Ok(ClientConfig {
        base_url: api.base_url.trim_end_matches('/').to_string(),
        credentials,
        request_timeout: api.request_timeout,
        connect_timeout: Duration::from_secs(10),
    })
}

/// `headswap-batch run`: a runtime, the signal handlers, the batch, the exit code.
pub fn command(args: &RunArgs, db: PathBuf, quiet: bool) -> Result<Exit, Fatal> {
    let interactive = !quiet && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let config = RunConfig::from_args(args, db, interactive)?;
    let runtime = tokio::runtime::Runtime::new()
        .map_err(|e| Fatal::new("cannot start the async runtime").cause(e))?;
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let signal = tokio::spawn(watch_signals(shutdown.clone()));
        let report = run_batch(&config, shutdown.clone()).await;
        signal.abort();
        let report = report?;
        let received = signal_received();
        print_summary(&report);
        Ok(exit_for(&report, received))
    })
}

/// Ingest and process one batch. Callable more than once per process (the demo and tests do).
pub async fn run_batch(
    config: &RunConfig,
    shutdown: CancellationToken,
) -> Result<RunReport, Fatal> {
    let mut bytes = manifest::read_file(&config.manifest)?;
    let sha256 = manifest::content_sha256(&bytes);
    // An existing database that already holds exactly this file needs no parse and no ingest
    // (the common case: the same command, rerun to resume). A new database is only created
    // once the manifest is known to be usable.
    let existing = match Store::open_existing(&config.db) {
        Ok(store) => Some(store),
        Err(StoreError::Missing { .. }) => None,
        Err(error) => return Err(error.into()),
    };
    let settled = match &existing {
        Some(store) => store.settled(&sha256, &config.defaults)?,
        None => None,
    };
    let (store, invalid) = match settled {
        Some(invalid) if !(config.strict && invalid > 0) => {
            (existing.expect("settled implies a database"), invalid)
        }
        _ => {
            // The file's bytes are not needed once parsed.
            let manifest = manifest::parse_bytes(&config.manifest, &std::mem::take(&mut bytes))?;
            let invalid = manifest.invalid().count();
            if config.strict && invalid > 0 {
                return Err(strict_refusal(config, &manifest, invalid));
            }
            let store = match existing {
                Some(store) => store,
                None => Store::open(&config.db)?,
            };
            let report =
                store.ingest(manifest, &config.defaults, config.replace_changed, now_ms())?;
            for id in &report.changed_submitted {
                tracing::warn!(job = %id, "row changed after the job was submitted; keeping the submitted version (use --replace-changed to render it again)");
            }
            if report.removed > 0 {
                tracing::info!(
                    "{} job(s) whose rows left the manifest before submission were cancelled",
                    report.removed
                );
            }
            (store, invalid)
        }
    };
    drop(bytes);
    if invalid > 0 {
        tracing::warn!(
            "{invalid} manifest row(s) are invalid; see `headswap-batch status` or `check`"
        );
    }
    let client = Client::new(config.client.clone())
        .map_err(|e| Fatal::new("cannot build the HTTP client").cause(e))?;
    let outcome = scheduler::run(&store, client, config.settings.clone(), shutdown).await;
    let flushed = store.flush();
    let report =
        outcome.map_err(|e| Fatal::new("the run stopped on an internal error").cause(e))?;
    flushed?;
    Ok(report)
}

static SIGNAL: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

fn signal_received() -> i32 {
    SIGNAL.load(std::sync::atomic::Ordering::SeqCst)
}

/// First SIGINT/SIGTERM: a graceful stop. Second: exit at once (every durable write is
/// already flushed; the next run resumes from there).
async fn watch_signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut interrupt), Ok(mut terminate)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return;
    };
    let mut seen = 0;
    loop {
        let code = tokio::select! {
            _ = interrupt.recv() => 2,
            _ = terminate.recv() => 15,
        };
        seen += 1;
        SIGNAL.store(code, std::sync::atomic::Ordering::SeqCst);
        if seen == 1 {
            tracing::warn!("stopping: finishing requests in flight (signal again to stop at once)");
            shutdown.cancel();
        } else {
            eprintln!("stopped at once; run the same command again to continue");
            std::process::exit(128 + code);
        }
    }
}

/// `--strict`: the whole manifest is refused, with the first reasons.
fn strict_refusal(config: &RunConfig, manifest: &manifest::Manifest, invalid: usize) -> Fatal {
    let mut fatal = Fatal::new(format!(
        "{}: {invalid} invalid row(s); --strict refuses the whole manifest",
        config.manifest.display()
    ));
    for job in manifest.invalid().take(20) {
        if let Err(reason) = &job.row {
            fatal = fatal.cause(format!("line {}: {reason}", job.line));
        }
    }
    fatal.hint(format!(
        "run `headswap-batch check {}` for every reason",
        config.manifest.display()
    ))
}

/// The exit code for a finished or stopped run.
pub fn exit_for(report: &RunReport, signal: i32) -> Exit {
    match &report.stop {
        Some(StopReason::Interrupted { .. }) => {
            if signal == 15 {
                Exit::Terminated
            } else {
                Exit::Interrupted
            }
        }
        Some(StopReason::OutOfCredits { .. }) => Exit::OutOfCredits,
        Some(StopReason::Deadline) => Exit::Deadline,
        Some(
            StopReason::Unauthorized { .. }
            | StopReason::LocalDisk { .. }
            | StopReason::SystemicRejection { .. },
        ) => Exit::Fatal,
        None => {
            let unfinished: usize = report
                .states
                .iter()
                .filter(|(state, _)| **state != JobState::Done)
                .map(|(_, count)| count)
                .sum();
            if unfinished == 0 {
                Exit::Success
            } else {
                Exit::Incomplete
            }
        }
    }
}

/// The end-of-run table on stdout, and what to do next on stderr.
pub fn print_summary(report: &RunReport) {
    let mut out = std::io::stdout().lock();
    let total: usize = report.states.values().sum();
    let _ = writeln!(out, "{:<14} {:>7}", "state", "jobs");
    for (state, count) in report.states.iter().filter(|(_, count)| **count > 0) {
        let _ = writeln!(out, "{:<14} {count:>7}", state.as_str());
    }
    let _ = writeln!(out, "{:<14} {total:>7}", "total");
    if report.possible_duplicates > 0 {
        let _ = writeln!(out, "{:<14} {:>7}", "flagged", report.possible_duplicates);
    }
    drop(out);
    match &report.stop {
        Some(StopReason::OutOfCredits { message }) => {
            let waiting = waiting_jobs(&report.states);
            eprintln!(
                "error: out of credits (1104: {message}); nothing new was submitted after it\nhint: {waiting} job(s) wait; top up the account and run the same command again to continue"
            );
        }
        Some(StopReason::Unauthorized { code, message }) => {
            eprintln!(
                "error: the API rejected the credentials ({code}: {message})\nhint: check AKOOL_API_KEY (or --client-id/--client-secret); no job was marked failed, run again once fixed"
            );
        }
        Some(StopReason::LocalDisk { path, detail }) => {
            eprintln!(
                "error: cannot write the output {path}: {detail}\nhint: free space or fix permissions on the output folder, then run the same command again"
            );
        }
        Some(StopReason::Interrupted { .. }) => {
            eprintln!("stopped; run the same command again to continue");
        }
        Some(StopReason::Deadline) => {
            let waiting = waiting_jobs(&report.states);
            eprintln!(
                "stopped at --max-runtime with {waiting} job(s) left; run the same command again to continue"
            );
        }
        Some(StopReason::SystemicRejection { code, message }) => {
            eprintln!(
                "error: the API rejected several creates in a row with the same answer ({code}: {message})\nhint: this is about the account or the options (model, resolution), not the jobs; nothing was marked failed for it, fix and run again"
            );
        }
        None => {}
    }
}

fn waiting_jobs(states: &BTreeMap<JobState, usize>) -> usize {
    states
        .iter()
        .filter(|(state, _)| !state.is_final())
        .map(|(_, count)| count)
        .sum()
}
