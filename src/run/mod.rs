//! The `run` command: ingest the manifest, hand every job to the dispatcher until it is in a
//! final state or the run has to stop, then print the summary and choose the exit code.
//!
//! Layout: `dispatch/` is the loop and its stage handlers; `policy` decides what a failure
//! means; `pace` paces API requests; `poll` plans polls; `download` fetches outputs;
//! `progress` shows the run on a terminal or in a log; `settings` is the dispatcher's
//! checked configuration.

pub mod breaker;
mod destination;
pub mod dispatch;
pub mod pace;
pub mod policy;
pub mod poll;
pub mod progress;
pub mod settings;
mod summary;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use tokio_util::sync::CancellationToken;

use crate::akool::{Client, ClientConfig};
use crate::exit::{Exit, Fatal, Signal};
use crate::ingest;
use crate::job::JobState;
use crate::journal::{Fact, Journal};
use crate::manifest::Shard;
use crate::manifest::{self, Defaults};
use crate::now_ms;
use crate::objstore::{Destination, ObjectStorage, S3Env, UploadOptions, UploadRecord};
use crate::preflight::{Checker, PreflightConfig};
use crate::recover;
use crate::store::{Store, StoreError};

pub use dispatch::{RunReport, StopReason};
pub use policy::OnAmbiguous;
pub use settings::Settings;
pub use summary::print_summary;

/// A checked configuration for one run: everything is validated before any side effect
/// (`config` builds it from the command line).
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub manifest: PathBuf,
    pub db: PathBuf,
    pub client: ClientConfig,
    pub defaults: Defaults,
    pub strict: bool,
    pub replace_changed: bool,
    /// Check every video and face URL before anything is bought for it.
    pub preflight: bool,
    /// Forget what earlier runs found of the URLs and check them again.
    pub recheck: bool,
    /// Object storage for the outputs, instead of `settings.out_dir` (checked at start).
    pub destination: Option<Destination>,
    /// Only this shard's jobs.
    pub shard: Option<Shard>,
    /// Keep the journal of paid facts beside the database. Always on from the command line;
    /// the overhead benchmark turns it off to measure what it costs.
    pub journal: bool,
    pub settings: Settings,
}

/// `headswap-batch run`: a runtime, the signal handlers, the batch, the exit code.
pub fn command(config: &RunConfig) -> Result<Exit, Fatal> {
    let runtime = tokio::runtime::Runtime::new()
        .map_err(|e| Fatal::new("cannot start the async runtime").cause(e))?;
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let received = Arc::new(OnceLock::new());
        let watcher = tokio::spawn(watch_signals(shutdown.clone(), Arc::clone(&received)));
        let report = run_batch(config, shutdown.clone()).await;
        watcher.abort();
        let report = report?;
        print_summary(&report, &config.db);
        Ok(exit_for(&report, received.get().copied()))
    })
}

/// Ingest and process one batch. Callable more than once per process (the demo and tests do).
pub async fn run_batch(
    config: &RunConfig,
    shutdown: CancellationToken,
) -> Result<RunReport, Fatal> {
    let mut bytes = manifest::read_file(&config.manifest)?;
    let mut sha256 = manifest::content_sha256(&bytes);
    if let Some(shard) = config.shard {
        sha256 = format!("{sha256}#{shard}");
    }
    // Where the outputs go must take a file before anything is bought (or even ingested);
    // object storage has its own probe once the store is open.
    if config.destination.is_none() {
        destination::check_local_folder(&config.settings.out_dir)?;
    }
    // An existing database that already holds exactly this file needs no parse and no ingest
    // (the common case: the same command, rerun to resume). A new database is only created
    // once the manifest is known to be usable.
    let existing = match Store::open_existing(&config.db) {
        Ok(store) => Some(store),
        Err(StoreError::Missing { .. }) => None,
        // A damaged database: its journal can rebuild it (`recover`), named in the hint.
        Err(error) => {
            return Err(recover::damaged_database(
                error,
                &config.db,
                &config.manifest,
            ));
        }
    };
    if existing.is_none() && config.journal {
        // No database but a journal of paid jobs: starting over would buy them again.
        recover::check_fresh_database(&config.db)
            .map_err(|error| recover::fatal(error, &config.db, &config.manifest))?;
    }
    // The journal of paid facts beside the database, locked like it.
    let mut journal = if config.journal {
        Some(Journal::open(&config.db)?)
    } else {
        None
    };
    let settled = match &existing {
        Some(store) => ingest::settled(store, &sha256, &config.defaults)?,
        None => None,
    };
    // Rows changed after submission, kept as submitted: named again in the summary.
    let mut row_changed = Vec::new();
    let (store, invalid) = match settled {
        Some(invalid) if !(config.strict && invalid > 0) => {
            (existing.expect("settled implies a database"), invalid)
        }
        _ => {
            // The file's bytes are not needed once parsed.
            let mut manifest =
                manifest::parse_bytes(&config.manifest, &std::mem::take(&mut bytes))?;
            manifest.warn_if_decoded();
            if let Some(shard) = config.shard {
                manifest.keep_shard(shard);
            }
            let invalid = manifest.invalid().count();
            if config.strict && invalid > 0 {
                return Err(strict_refusal(config, &manifest, invalid));
            }
            let store = match existing {
                Some(store) => store,
                None => Store::open(&config.db)?,
            };
            let ingested = ingest::ingest(
                &store,
                manifest,
                &config.defaults,
                config.replace_changed,
                now_ms(),
            )?;
            if let Some(journal) = &mut journal {
                journal.append(&Fact::ingest(&sha256, &config.defaults, now_ms()));
            }
            for id in &ingested.changed_submitted {
                tracing::warn!(job = %id, "row changed after the job was submitted; kept as submitted and flagged row_changed (run with --replace-changed to render the new row, paid again)");
            }
            if ingested.removed > 0 {
                tracing::info!(
                    "{} job(s) whose rows left the manifest before submission were cancelled",
                    ingested.removed
                );
            }
            row_changed = ingested.changed_submitted;
            (store, invalid)
        }
    };
    drop(bytes);
    if let Some(journal) = &mut journal {
        heal_from_journal(&store, journal, config)?;
    }
    if invalid > 0 {
        tracing::warn!(
            "{invalid} manifest row(s) are invalid; see `headswap-batch status` or `check`"
        );
    }
    let client = Client::new(config.client.clone())
        .map_err(|e| Fatal::new("cannot build the HTTP client").cause(e))?;
    let checker = if config.preflight {
        if config.recheck {
            recheck(&store)?;
        }
        let checker = Checker::new(PreflightConfig::default())
            .map_err(|e| Fatal::new("cannot build the HTTP client for preflight").cause(e))?;
        Some(checker)
    } else {
        None
    };
    let mut settings = config.settings.clone();
    let mut service = dispatch::Live::new(client);
    if let Some(destination) = &config.destination {
        let storage = Arc::new(object_storage(destination, &store).await?);
        service = service.with_bucket(Arc::clone(&storage), store.clone());
        settings.bucket = Some(storage);
    }
    // `export` and `report` ask this process for its records while it holds the database.
    let _live = crate::view::live::serve(store.clone(), &config.db);
    let outcome = dispatch::run(
        &store,
        Arc::new(service),
        settings,
        checker,
        journal,
        shutdown,
    )
    .await;
    let flushed = store.flush();
    let mut report =
        outcome.map_err(|e| Fatal::new("the run stopped on an internal error").cause(e))?;
    flushed?;
    report.row_changed = row_changed;
    Ok(report)
}

/// Bring the database level with its journal before anything is sent: after a crash the
/// journal may be one group commit ahead, after a power cut more (sled's flush is not an
/// fsync), and a database that silently lost records gets them back (`recover::heal`).
/// Then, once the database holds every fact, the journal is compacted if it has outgrown them:
/// here, before the run holds anything in memory, rather than at its end, where the replay
/// compaction makes would add to the run's peak (and a run that is killed never gets there).
fn heal_from_journal(
    store: &Store,
    journal: &mut Journal,
    config: &RunConfig,
) -> Result<(), Fatal> {
    let fatal = |error| recover::fatal(error, &config.db, &config.manifest);
    let replay = journal.replay()?;
    if replay.stats.skipped() > 0 {
        tracing::warn!(
            "the journal {} has {} damaged line(s), skipped",
            journal.path().display(),
            replay.stats.skipped()
        );
    }
    let healed = recover::heal(store, journal, &replay).map_err(fatal)?;
    if healed.jobs() > 0 {
        tracing::warn!(
            "the database was behind its journal: {} job(s) brought level from it",
            healed.jobs()
        );
        store.flush()?;
    }
    drop(replay);
    if journal.compaction_due() {
        match journal.compact(store) {
            Ok(report) => tracing::debug!(?report, "journal compacted"),
            Err(error) => tracing::warn!("the journal was not compacted: {error}"),
        }
    }
    Ok(())
}

/// The object storage of `--out s3://...`, checked before anything is bought: a probe object
/// is written and removed (bad credentials, a missing bucket: exit 1), and the multipart
/// uploads a killed run left for this database's jobs are aborted, except those its records
/// will resume.
async fn object_storage(destination: &Destination, store: &Store) -> Result<ObjectStorage, Fatal> {
    let context = format!("--out {destination}");
    let storage = ObjectStorage::new(
        destination.clone(),
        &S3Env::from_env(),
        UploadOptions::default(),
    )
    .map_err(|error| error.to_fatal(&context))?;
    storage
        .probe()
        .await
        .map_err(|error| error.to_fatal(&context))?;
    let mut keep = HashSet::new();
    for (_, text) in store.uploads()? {
        if let Ok(record) = serde_json::from_str::<UploadRecord>(&text) {
            keep.extend(record.upload_id().map(str::to_string));
        }
    }
    let ours: HashSet<String> = store.job_ids().collect::<Result<_, _>>()?;
    let aborted = storage
        .abort_abandoned(|job_id| ours.contains(job_id), &keep)
        .await
        .map_err(|error| error.to_fatal(&context))?;
    if !aborted.is_empty() {
        tracing::info!(
            "aborted {} multipart upload(s) a stopped run left unfinished",
            aborted.len()
        );
    }
    Ok(storage)
}

/// `--recheck`: forget what earlier runs found of the URLs, and give the jobs preflight
/// refused another chance.
fn recheck(store: &Store) -> Result<(), Fatal> {
    store.clear_checks()?;
    let now = now_ms();
    let mut reopened = Vec::new();
    for job in store.jobs() {
        let mut job = job?;
        if job.preflight_failed && job.apply(crate::job::Event::Recheck, now).is_ok() {
            reopened.push(job);
        }
    }
    for job in &reopened {
        store.put_job(job)?;
    }
    store.flush()?;
    if !reopened.is_empty() {
        tracing::info!(
            "{} job(s) refused by an earlier check are checked again",
            reopened.len()
        );
    }
    Ok(())
}

/// First SIGINT/SIGTERM: a graceful stop (`received` records which). Second: exit at once
/// (every durable write is already flushed; the next run resumes from there).
async fn watch_signals(shutdown: CancellationToken, received: Arc<OnceLock<Signal>>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut interrupt), Ok(mut terminate)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return;
    };
    loop {
        let signal = tokio::select! {
            _ = interrupt.recv() => Signal::Interrupt,
            _ = terminate.recv() => Signal::Terminate,
        };
        if received.set(signal).is_ok() {
            tracing::warn!("stopping: finishing requests in flight (signal again to stop at once)");
            shutdown.cancel();
        } else {
            eprintln!("stopped at once; run the same command again to continue");
            std::process::exit(i32::from(Exit::from(signal).code()));
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

/// The exit code for a finished or stopped run; `signal` is the one that stopped it, if any.
pub fn exit_for(report: &RunReport, signal: Option<Signal>) -> Exit {
    match &report.stop {
        Some(StopReason::Interrupted) => signal.map_or(Exit::Interrupted, Exit::from),
        Some(StopReason::OutOfCredits { .. }) => Exit::OutOfCredits,
        Some(StopReason::Deadline) => Exit::Deadline,
        Some(
            StopReason::Unauthorized { .. }
            | StopReason::LocalDisk { .. }
            | StopReason::Destination { .. }
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
