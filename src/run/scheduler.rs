//! The dispatcher: one loop over a closed set of events that decides everything that happens
//! next. Workers (API calls and downloads) run as tasks in a `JoinSet` and report one
//! [`Outcome`] each; the loop turns outcomes, timers and signals into job transitions, writes
//! them through the store, and starts new work.
//!
//! Invariants kept here:
//! - **No create (the only credit-spending call) is sent before its `submitting` intent is
//!   flushed**, and every remote id is flushed the moment it arrives.
//! - **Only this loop changes jobs**; workers get copies of what they need and return results.
//! - **Memory holds ids and states, not jobs.** A job's record is loaded from the store when an
//!   event needs it and written back before the loop moves on, so a catalog of any size costs a
//!   few dozen bytes per job (see [`Jobs`]).
//! - **Downloads come before new submissions** and have their own bound; API calls wait for the
//!   one rate limiter in priority order (URL refresh, submissions, polls).

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::akool::{Analysis, ApiError, Client, CreateTask, Mapping, RemoteStatus, Subject, Task};
use crate::cli::{MultiSubject, OnAmbiguous};
use crate::crash;
use crate::job::{
    AnalysisRecord, AnalysisState, Event, IllegalTransition, Job, JobError, JobState, Output,
};
use crate::now_ms;
use crate::run::download::{self, DownloadError, DownloadRequest};
use crate::run::pace::Pacer;
use crate::run::poll::{PollPlanner, PollPolicy};
use crate::run::progress::{Progress, ProgressFigures};
use crate::store::{Store, StoreError};
use crate::view;

/// Everything the dispatcher needs to know, already validated.
#[derive(Debug, Clone)]
pub struct Settings {
    pub out_dir: PathBuf,
    pub db_path: PathBuf,
    /// Analyses + renders at the service at once.
    pub concurrency: usize,
    pub downloads: usize,
    /// API requests per second, all endpoints together, and the burst above it.
    pub rate: f64,
    pub burst: u32,
    /// Attempts per stage on transient failures before the job fails.
    pub max_attempts: u32,
    pub multi_subject: MultiSubject,
    pub on_ambiguous: OnAmbiguous,
    pub max_download_bytes: u64,
    pub analysis_poll: PollPolicy,
    pub render_poll: PollPolicy,
    /// Base and cap of the exponential backoff (full jitter) after transient failures.
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    /// Longest honoured Retry-After / throttling cool-down.
    pub cooldown_cap: Duration,
    pub stall_timeout: Duration,
    /// How often the status view and the progress display are refreshed.
    pub tick: Duration,
    /// A progress bar on stderr (a terminal, not opted out); log lines otherwise.
    pub interactive: bool,
    /// Off a terminal: how often the one-line summary is logged.
    pub summary_every: Duration,
    /// `--max-runtime`: no new work starts unless it can finish by then; at the end, stop.
    pub max_runtime: Option<Duration>,
    /// After a signal: how long requests in flight may take to finish before they are
    /// abandoned (their jobs stay resumable).
    pub grace: Duration,
}

/// Why a run stopped before every job reached a final state.
#[derive(Debug, Clone, PartialEq)]
pub enum StopReason {
    /// 1104: nothing new is submitted; in-flight work was finished.
    OutOfCredits { message: String },
    /// 1101/1102/1200: the credentials were rejected.
    Unauthorized { code: i64, message: String },
    /// The local disk refused a download (read-only, full).
    LocalDisk { path: String, detail: String },
    /// A first SIGINT or SIGTERM.
    Interrupted { signal: i32 },
    /// `--max-runtime`: no new work could finish in time, or the time is up.
    Deadline,
    /// Several creates in a row were rejected with the same message: the account or the
    /// configuration is wrong, not the jobs.
    SystemicRejection { code: i64, message: String },
}

/// How the run ended, with the final counts.
#[derive(Debug, Clone, PartialEq)]
pub struct RunReport {
    pub stop: Option<StopReason>,
    pub states: std::collections::BTreeMap<JobState, usize>,
    pub possible_duplicates: usize,
    pub api_calls: u64,
    pub throttled: u64,
}

/// What can stop the dispatcher itself (as opposed to a job): the store failing, or a bug
/// caught by the state machine.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Transition(#[from] IllegalTransition),
    #[error("job {0} is missing from the database")]
    MissingJob(String),
}

/// Run every job in the store to a final state, or until the run has to stop.
pub async fn run(
    store: &Store,
    client: Client,
    settings: Settings,
    shutdown: CancellationToken,
) -> Result<RunReport, RunError> {
    let mut dispatcher = Dispatcher::new(store, client, settings);
    dispatcher.resume().await?;
    dispatcher.main_loop(shutdown).await?;
    Ok(dispatcher.report())
}

/// An API call waiting for the rate limiter.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ApiCall {
    /// Task detail for a job whose output link expired or is unknown.
    RefreshOutput(String),
    TaskDetail(String),
    AnalysisDetail(String),
    Create(String),
    Analyze(String),
}

impl ApiCall {
    /// The job id or video URL the call is about.
    fn key(&self) -> &str {
        match self {
            ApiCall::RefreshOutput(key)
            | ApiCall::TaskDetail(key)
            | ApiCall::AnalysisDetail(key)
            | ApiCall::Create(key)
            | ApiCall::Analyze(key) => key,
        }
    }

    /// Lower goes first. A queued create or analyze holds a slot at the service that stays
    /// idle until the request leaves, while a poll may or may not find its stage finished:
    /// submissions go before polls. Only free slots queue submissions, so polls cannot starve;
    /// when requests are scarce, polls wait, and the later they go the likelier they find
    /// their stage finished. A link refresh goes first: the output link is expiring.
    fn priority(&self) -> u8 {
        match self {
            ApiCall::RefreshOutput(_) => 0,
            ApiCall::Create(_) | ApiCall::Analyze(_) => 1,
            ApiCall::TaskDetail(_) | ApiCall::AnalysisDetail(_) => 2,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Queued {
    priority: u8,
    seq: u64,
    call: ApiCall,
}

impl Ord for Queued {
    fn cmp(&self, other: &Self) -> Ordering {
        // BinaryHeap is a max-heap: the smallest (priority, seq) must compare greatest.
        (other.priority, other.seq).cmp(&(self.priority, self.seq))
    }
}

impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Something that happens later: a poll, or a retry after a backoff.
#[derive(Debug, PartialEq, Eq)]
enum Wakeup {
    Call(ApiCall),
    Download(String),
    /// A job whose create failed before it ran goes back in line for a slot.
    Ready(String),
}

#[derive(Debug, PartialEq, Eq)]
struct Timer {
    due: Instant,
    seq: u64,
    wakeup: Wakeup,
}

impl Ord for Timer {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}

impl PartialOrd for Timer {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// What a worker reports back: the closed set of results the loop acts on.
#[derive(Debug)]
enum Outcome {
    Analyze {
        video_url: String,
        result: Result<Analysis, ApiError>,
    },
    AnalysisDetail {
        video_url: String,
        result: Result<Analysis, ApiError>,
    },
    Create {
        job_id: String,
        result: Result<Task, ApiError>,
    },
    TaskDetail {
        job_id: String,
        refresh: bool,
        result: Result<Task, ApiError>,
    },
    Download {
        job_id: String,
        result: Result<Output, DownloadError>,
        /// The file's validator, for `If-Range` when this download is resumed.
        etag: Option<String>,
    },
}

struct Dispatcher<'a> {
    store: &'a Store,
    client: Client,
    settings: Settings,
    pacer: Pacer,

    jobs: Jobs<'a>,
    /// Analyses of the videos that jobs in this run wait on, by video_url.
    analyses: HashMap<String, AnalysisRecord>,
    /// Jobs in `pending` or `analyzing`, by the video they wait on.
    waiting_on_video: HashMap<String, Vec<String>>,
    /// `ready` jobs whose video is being analysed again (the service forgot it), by video:
    /// their create waits for that analysis.
    parked_for_analysis: HashMap<String, Vec<String>>,

    /// Work that needs a slot at the service: ready jobs first, then videos to analyze.
    ready: VecDeque<String>,
    videos_to_analyze: VecDeque<String>,
    at_service: usize,

    api_queue: BinaryHeap<Queued>,
    timers: BinaryHeap<Reverse<Timer>>,
    downloads_waiting: VecDeque<String>,
    downloads_running: usize,
    etags: HashMap<String, String>,
    workers: JoinSet<Outcome>,
    download_tasks: HashMap<String, tokio::task::AbortHandle>,
    /// Set by a hard stop: in-flight work is abandoned at this instant.
    grace_until: Option<Instant>,
    seq: u64,

    /// When each failing stage (by job id or video URL) first failed in this run.
    failing_since: HashMap<String, Instant>,
    /// Consecutive creates rejected with the same message: (message, job ids).
    rejections: Option<(String, Vec<String>)>,
    deadline: Option<Instant>,
    stop: Option<StopReason>,
    /// Submitting (create/analyze) is over for this run: out of credits, signal, fatal.
    no_new_work: bool,
    /// Nothing at all is started any more; requests in flight get a grace period.
    hard_stop: bool,

    progress: Progress,
    analysis_planner: PollPlanner,
    render_planner: PollPlanner,
    /// Stages (job ids of renders, video URLs of analyses) whose first poll is still ahead:
    /// what it finds tunes the planner.
    first_polls: HashSet<String>,
    unknown_statuses: HashSet<i64>,
    api_calls: u64,
    throttled: u64,

    /// Group commit: records written since the last flush that must be durable before the
    /// next side effect. One flush at the top of the loop covers all of them.
    unflushed: bool,
    /// Crash points that mark a write as durable, reached right after that flush.
    after_flush: Vec<&'static str>,
    /// Creates and analyzes whose intents wait for that flush; they leave right after it.
    held_requests: Vec<(&'static str, HeldRequest)>,
}

/// An API request that may only leave once its intent is durable.
type HeldRequest = std::pin::Pin<Box<dyn std::future::Future<Output = Outcome> + Send>>;

/// At most this many calls start, or outcomes are handled, per turn of the loop before the
/// loop looks at its other events again.
const BATCH: usize = 256;

/// Elapsed time since a wall-clock timestamp in ms (zero if in the future).
fn since_ms(then_ms: Option<u64>) -> Duration {
    then_ms
        .map(|then| Duration::from_millis(now_ms().saturating_sub(then)))
        .unwrap_or_default()
}

impl<'a> Dispatcher<'a> {
    fn new(store: &'a Store, client: Client, settings: Settings) -> Self {
        let pacer = Pacer::new(
            settings.rate,
            settings.burst,
            settings.cooldown_cap,
            settings.backoff_base,
        );
        Dispatcher {
            store,
            client,
            pacer,
            jobs: Jobs::new(store),
            analyses: HashMap::new(),
            waiting_on_video: HashMap::new(),
            parked_for_analysis: HashMap::new(),
            ready: VecDeque::new(),
            videos_to_analyze: VecDeque::new(),
            at_service: 0,
            api_queue: BinaryHeap::new(),
            timers: BinaryHeap::new(),
            downloads_waiting: VecDeque::new(),
            downloads_running: 0,
            etags: HashMap::new(),
            workers: JoinSet::new(),
            download_tasks: HashMap::new(),
            grace_until: None,
            seq: 0,
            failing_since: HashMap::new(),
            rejections: None,
            deadline: settings.max_runtime.map(|limit| Instant::now() + limit),
            stop: None,
            no_new_work: false,
            hard_stop: false,
            progress: Progress::new(settings.interactive, settings.summary_every),
            analysis_planner: PollPlanner::new(settings.analysis_poll, settings.concurrency),
            render_planner: PollPlanner::new(settings.render_poll, settings.concurrency),
            first_polls: HashSet::new(),
            unknown_statuses: HashSet::new(),
            api_calls: 0,
            throttled: 0,
            unflushed: false,
            after_flush: Vec::new(),
            held_requests: Vec::new(),
            settings,
        }
    }

    /// Go through every job once and re-attach to whatever is at the service. Jobs caught in
    /// the ambiguous window are resolved (flagged for resubmission, or held) and flushed
    /// before anything is sent. Only ids and states stay in memory.
    async fn resume(&mut self) -> Result<(), RunError> {
        let now = now_ms();
        for record in self.store.analyses() {
            let record = record?;
            self.analyses.insert(record.video_url.clone(), record);
        }
        let mut videos_redone = HashSet::new();
        for job in self.store.jobs() {
            let mut job = job?;
            match job.state {
                JobState::Pending | JobState::Analyzing => self.wait_on_video(&job),
                JobState::Ready => {
                    if self.analysis_redone(&job.spec.video_url) {
                        videos_redone.insert(job.spec.video_url.clone());
                    }
                    self.ready.push_back(job.id.clone());
                }
                JobState::Submitting => {
                    // Died between the intent and storing the answer: the create may have been
                    // sent. There is no way to ask the service, so flag (or hold) it.
                    let hold = self.settings.on_ambiguous == OnAmbiguous::Hold;
                    tracing::warn!(
                        job = %job.id,
                        "a create for this job may have been sent before the last run stopped; {}",
                        if hold { "holding it (state held)" } else { "submitting again, flagged possible_duplicate" }
                    );
                    job.apply(Event::Ambiguous { hold }, now)?;
                    self.store.put_job(&job)?;
                    if !hold {
                        self.ready.push_back(job.id.clone());
                    }
                }
                JobState::Rendering => {
                    self.at_service += 1;
                    self.push_call(ApiCall::TaskDetail(job.id.clone()));
                }
                JobState::Downloading => {
                    if job.output_url.is_some() {
                        self.downloads_waiting.push_back(job.id.clone());
                    } else {
                        self.push_call(ApiCall::RefreshOutput(job.id.clone()));
                    }
                }
                JobState::Done
                | JobState::Failed
                | JobState::Invalid
                | JobState::NeedsMapping
                | JobState::Expired
                | JobState::Held => {}
            }
            self.jobs.note(&job);
        }
        let mut videos_needed: Vec<String> = self.waiting_on_video.keys().cloned().collect();
        videos_needed.extend(videos_redone);
        videos_needed.sort_unstable();
        videos_needed.dedup();
        for video_url in videos_needed {
            let record = self
                .analyses
                .entry(video_url.clone())
                .or_insert_with(|| AnalysisRecord::new(video_url.clone(), now));
            match record.state {
                AnalysisState::Pending | AnalysisState::Submitting => {
                    // An analysis costs nothing: one lost in the window is simply asked again.
                    self.videos_to_analyze.push_back(video_url);
                }
                AnalysisState::Running => {
                    self.at_service += 1;
                    self.analysis_started(&video_url);
                    self.push_call(ApiCall::AnalysisDetail(video_url));
                }
                AnalysisState::Completed => {
                    let subjects = record.subjects.clone();
                    self.map_jobs(&video_url, &subjects)?;
                }
                AnalysisState::Failed => {
                    let error = record.last_error.clone().unwrap_or_else(|| {
                        JobError::new(None, "the analysis of this video failed")
                    });
                    self.fail_video_jobs(&video_url, error)?;
                }
            }
        }
        self.store.flush_async().await?;
        Ok(())
    }

    async fn main_loop(&mut self, shutdown: CancellationToken) -> Result<(), RunError> {
        let mut tick = tokio::time::interval(self.settings.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut shutdown_seen = false;
        loop {
            self.commit().await?;
            self.start_work().await?;
            if self.workers.is_empty() && self.nothing_left_to_start() {
                break;
            }
            let next_timer = self.timers.peek().map(|Reverse(timer)| timer.due);
            let gate = self.pacer.gate(Instant::now());
            let may_call = !self.api_queue.is_empty() && gate.is_none();
            tokio::select! {
                biased;
                joined = self.workers.join_next(), if !self.workers.is_empty() => {
                    self.joined(joined).await?;
                    // Every outcome already there is handled in this turn, so that their
                    // writes share one flush.
                    for _ in 1..BATCH {
                        let Some(joined) = self.workers.try_join_next() else { break };
                        self.joined(Some(joined)).await?;
                    }
                }
                _ = shutdown.cancelled(), if !shutdown_seen => {
                    shutdown_seen = true;
                    self.stop_new_work(StopReason::Interrupted { signal: 0 }, true);
                }
                _ = self.pacer.until_ready(), if may_call => {
                    if let Some(queued) = self.api_queue.pop() {
                        self.pacer.started(Instant::now());
                        self.start_call(queued.call).await?;
                    }
                    // Calls the limiter admits right now start in the same turn: their
                    // intents share one flush.
                    for _ in 1..BATCH {
                        if self.api_queue.is_empty() || !self.pacer.try_start(Instant::now()) {
                            break;
                        }
                        let queued = self.api_queue.pop().expect("not empty");
                        self.start_call(queued.call).await?;
                    }
                }
                _ = sleep_until(next_timer), if next_timer.is_some() => self.fire_timers(),
                // Wakes the loop when the gate opens, so queued calls go out.
                _ = sleep_until(gate), if gate.is_some() && !self.api_queue.is_empty() => {}
                _ = sleep_until(self.deadline), if self.deadline.is_some() => {
                    tracing::warn!("--max-runtime reached; stopping with work left");
                    self.deadline = None;
                    self.stop_new_work(StopReason::Deadline, true);
                }
                _ = sleep_until(self.grace_until), if self.grace_until.is_some() => {
                    tracing::warn!("abandoning requests still in flight; their jobs resume next run");
                    self.grace_until = None;
                    self.workers.abort_all();
                }
                _ = tick.tick() => self.on_tick(),
            }
        }
        self.commit().await?;
        self.store.flush_async().await?;
        self.progress.finish();
        self.write_view(false);
        Ok(())
    }

    /// Group commit: one flush makes every write since the last one durable; then the
    /// requests that waited for their intents leave. Called before anything else can start
    /// (downloads, requests), so no side effect overtakes the write that announces it.
    async fn commit(&mut self) -> Result<(), RunError> {
        if self.unflushed {
            self.store.flush_async().await?;
            self.unflushed = false;
        }
        for point in self.after_flush.drain(..) {
            crash::point(point);
        }
        for (point, request) in std::mem::take(&mut self.held_requests) {
            crash::point(point);
            self.workers.spawn(request);
        }
        Ok(())
    }

    /// A write that must be durable before the next side effect (see [`Self::commit`]).
    fn flush_soon(&mut self) {
        self.unflushed = true;
    }

    async fn joined(
        &mut self,
        joined: Option<Result<Outcome, tokio::task::JoinError>>,
    ) -> Result<(), RunError> {
        match joined {
            Some(Ok(outcome)) => self.handle(outcome).await,
            Some(Err(error)) if error.is_panic() => {
                std::panic::resume_unwind(error.into_panic());
            }
            _ => Ok(()),
        }
    }

    /// Nothing queued, nothing waiting, nothing that could be started.
    fn nothing_left_to_start(&self) -> bool {
        if self.hard_stop {
            return true;
        }
        let waiting = !self.api_queue.is_empty()
            || !self.timers.is_empty()
            || !self.downloads_waiting.is_empty();
        // Once submitting is over, what is at the service is still finished (polled and
        // downloaded); ready jobs wait for the next run.
        let startable =
            !self.no_new_work && (!self.ready.is_empty() || !self.videos_to_analyze.is_empty());
        !waiting && !startable
    }

    /// Move work into the queues while there is room: downloads first, then slots at the
    /// service (ready jobs before new analyses).
    async fn start_work(&mut self) -> Result<(), RunError> {
        while self.downloads_running < self.settings.downloads && !self.hard_stop {
            let Some(job_id) = self.downloads_waiting.pop_front() else {
                break;
            };
            self.spawn_download(job_id)?;
        }
        while !self.no_new_work && self.at_service < self.settings.concurrency {
            if !self.can_finish_in_time() {
                tracing::warn!(
                    "--max-runtime: new work would not finish in time; finishing what is in flight"
                );
                self.stop_new_work(StopReason::Deadline, false);
                break;
            }
            if let Some(job_id) = self.ready.pop_front() {
                let job = self.jobs.load(&job_id)?;
                if self.analysis_redone(&job.spec.video_url) {
                    self.parked_for_analysis
                        .entry(job.spec.video_url)
                        .or_default()
                        .push(job_id);
                    continue;
                }
                self.at_service += 1;
                self.push_call(ApiCall::Create(job_id));
            } else if let Some(video_url) = self.videos_to_analyze.pop_front() {
                self.at_service += 1;
                self.push_call(ApiCall::Analyze(video_url));
            } else {
                break;
            }
        }
        Ok(())
    }

    /// Whether a render started now (after an analysis, if one is still needed) is expected
    /// to finish before `--max-runtime`, judged by the durations observed so far.
    fn can_finish_in_time(&self) -> bool {
        let Some(deadline) = self.deadline else {
            return true;
        };
        let mut needed = self.render_planner.typical();
        if self.ready.is_empty() {
            needed += self.analysis_planner.typical();
        }
        Instant::now() + needed <= deadline
    }

    /// Stop submitting for this run. A hard stop also stops polling and downloading: requests
    /// in flight get a bounded grace, partial downloads stay as part files, and everything
    /// resumes next run. A soft stop finishes what is at the service.
    fn stop_new_work(&mut self, reason: StopReason, hard: bool) {
        if self.stop.is_none() || hard {
            self.stop = Some(reason);
        }
        self.no_new_work = true;
        if hard {
            self.hard_stop = true;
            self.api_queue.clear();
            self.timers.clear();
            self.downloads_waiting.clear();
            for (_, task) in self.download_tasks.drain() {
                task.abort();
            }
            if self.grace_until.is_none() {
                self.grace_until = Some(Instant::now() + self.settings.grace);
            }
        } else {
            // Keep polls and downloads; drop queued submissions (their jobs stay resumable).
            let queued = std::mem::take(&mut self.api_queue);
            for item in queued.into_vec() {
                match item.call {
                    ApiCall::Create(_) | ApiCall::Analyze(_) => self.at_service -= 1,
                    _ => self.api_queue.push(item),
                }
            }
        }
    }

    fn push_call(&mut self, call: ApiCall) {
        self.seq += 1;
        self.api_queue.push(Queued {
            priority: call.priority(),
            seq: self.seq,
            call,
        });
    }

    fn push_timer(&mut self, delay: Duration, wakeup: Wakeup) {
        self.seq += 1;
        self.timers.push(Reverse(Timer {
            due: Instant::now() + delay,
            seq: self.seq,
            wakeup,
        }));
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(Reverse(timer)) = self.timers.peek() {
            if timer.due > now {
                break;
            }
            let Reverse(timer) = self.timers.pop().expect("peeked");
            match timer.wakeup {
                Wakeup::Call(ApiCall::Analyze(_)) if self.no_new_work => {
                    // Submitting is over for this run; the next run analyzes this video.
                    self.at_service -= 1;
                }
                Wakeup::Call(call) => self.push_call(call),
                Wakeup::Download(job_id) => self.downloads_waiting.push_back(job_id),
                Wakeup::Ready(job_id) => self.ready.push_back(job_id),
            }
        }
    }

    /// Start one API call: make its intent durable first when it spends or creates something.
    async fn start_call(&mut self, call: ApiCall) -> Result<(), RunError> {
        let client = self.client.clone();
        self.api_calls += 1;
        match call {
            ApiCall::Analyze(video_url) => {
                let record = self
                    .analyses
                    .get_mut(&video_url)
                    .expect("queued analyses exist");
                record.state = AnalysisState::Submitting;
                record.updated_ms = now_ms();
                self.store.put_analysis(record)?;
                self.analysis_started(&video_url);
                // The request leaves once the intent is durable (group commit).
                self.flush_soon();
                self.held_requests.push((
                    crash::ANALYZE_INTENT_FLUSHED,
                    Box::pin(async move {
                        let result = client.analyze(&video_url).await;
                        Outcome::Analyze { video_url, result }
                    }),
                ));
            }
            ApiCall::AnalysisDetail(video_url) => {
                let id = self.analyses[&video_url]
                    .analysis_id
                    .clone()
                    .unwrap_or_default();
                self.workers.spawn(async move {
                    let result = client.analysis_detail(&id).await;
                    Outcome::AnalysisDetail { video_url, result }
                });
            }
            ApiCall::Create(job_id) => {
                let mut job = self.jobs.load(&job_id)?;
                if job.state == JobState::Ready {
                    job.apply(Event::SubmitIntent, now_ms())?;
                    self.jobs.save(&job)?;
                    // The intent must be on disk before the request can leave: the request
                    // is held until the next flush (group commit).
                    self.unflushed = true;
                }
                let request = CreateTask {
                    video_url: job.spec.video_url,
                    mappings: job.mappings,
                    model_name: job.spec.model_name,
                    resolution: job.spec.resolution,
                    template_id: job.spec.template_id,
                    keep_original_sound: job.spec.keep_original_sound,
                };
                self.held_requests.push((
                    crash::CREATE_INTENT_FLUSHED,
                    Box::pin(async move {
                        let result = client.create_task(&request).await;
                        Outcome::Create { job_id, result }
                    }),
                ));
            }
            ApiCall::TaskDetail(job_id) | ApiCall::RefreshOutput(job_id) => {
                let job = self.jobs.load(&job_id)?;
                let refresh = job.state == JobState::Downloading;
                let task_id = job.task_id.unwrap_or_default();
                self.workers.spawn(async move {
                    let result = client.task_detail(&task_id).await;
                    Outcome::TaskDetail {
                        job_id,
                        refresh,
                        result,
                    }
                });
            }
        }
        Ok(())
    }

    fn spawn_download(&mut self, job_id: String) -> Result<(), RunError> {
        let job = self.jobs.load(&job_id)?;
        let Some(url) = job.output_url else {
            self.push_call(ApiCall::RefreshOutput(job_id));
            return Ok(());
        };
        self.downloads_running += 1;
        let request_id = job_id.clone();
        let request = DownloadRequest {
            job_id: job_id.clone(),
            url,
            out_dir: self.settings.out_dir.clone(),
            max_bytes: self.settings.max_download_bytes,
            stall_timeout: self.settings.stall_timeout,
        };
        let mut etag = self.etags.get(&job_id).cloned();
        let http = self.client.http().clone();
        let task = self.workers.spawn(async move {
            let result = download::download(&http, &request, &mut etag).await;
            Outcome::Download {
                job_id,
                result,
                etag,
            }
        });
        self.download_tasks.insert(request_id, task);
        Ok(())
    }

    async fn handle(&mut self, outcome: Outcome) -> Result<(), RunError> {
        match outcome {
            Outcome::Analyze { video_url, result } => self.on_analyze(video_url, result).await,
            Outcome::AnalysisDetail { video_url, result } => {
                self.on_analysis_detail(video_url, result).await
            }
            Outcome::Create { job_id, result } => self.on_create(job_id, result).await,
            Outcome::TaskDetail {
                job_id,
                refresh,
                result,
            } => self.on_task_detail(job_id, refresh, result).await,
            Outcome::Download {
                job_id,
                result,
                etag,
            } => {
                self.downloads_running -= 1;
                self.download_tasks.remove(&job_id);
                if let Some(etag) = etag {
                    self.etags.insert(job_id.clone(), etag);
                }
                self.on_download(job_id, result).await
            }
        }
    }

    async fn on_analyze(
        &mut self,
        video_url: String,
        result: Result<Analysis, ApiError>,
    ) -> Result<(), RunError> {
        match result {
            Ok(analysis) => {
                crash::point(crash::ANALYZE_ANSWERED);
                self.stage_succeeded(&video_url);
                let now = now_ms();
                let record = self.analyses.get_mut(&video_url).expect("analysis exists");
                record.analysis_id = Some(analysis.id.clone());
                record.state = AnalysisState::Running;
                record.submitted_ms = Some(now);
                record.attempts = 0;
                record.updated_ms = now;
                self.store.put_analysis(record)?;
                self.flush_soon();
                let delay = self
                    .analysis_planner
                    .next_delay(Duration::ZERO, 0.0, jitter());
                self.first_polls.insert(video_url.clone());
                self.push_timer(delay, Wakeup::Call(ApiCall::AnalysisDetail(video_url)));
                Ok(())
            }
            Err(error) => {
                let call = ApiCall::Analyze(video_url.clone());
                match self.api_failure(&error, call) {
                    Disposition::Retried => Ok(()),
                    Disposition::Attempt => {
                        let record = self.analyses.get_mut(&video_url).expect("analysis exists");
                        record.attempts += 1;
                        record.last_error = Some(job_error(&error));
                        let attempts = record.attempts;
                        if attempts >= self.settings.max_attempts {
                            self.at_service -= 1;
                            let error = self.exhausted(&video_url, &error, attempts);
                            self.fail_analysis(&video_url, error)
                        } else {
                            let delay = self.backoff(attempts);
                            self.push_timer(delay, Wakeup::Call(ApiCall::Analyze(video_url)));
                            Ok(())
                        }
                    }
                    Disposition::Final => {
                        self.at_service -= 1;
                        self.fail_analysis(&video_url, job_error(&error))
                    }
                    Disposition::Stop => {
                        self.at_service -= 1;
                        let record = self.analyses.get_mut(&video_url).expect("analysis exists");
                        record.state = AnalysisState::Pending;
                        self.store.put_analysis(record)?;
                        Ok(())
                    }
                }
            }
        }
    }

    async fn on_analysis_detail(
        &mut self,
        video_url: String,
        result: Result<Analysis, ApiError>,
    ) -> Result<(), RunError> {
        let first_poll = self.first_polls.remove(&video_url);
        match result {
            Ok(analysis) => {
                self.stage_succeeded(&video_url);
                if first_poll {
                    let wanted = self.first_poll_hits_wanted();
                    self.analysis_planner
                        .first_poll_found(!analysis.status.is_running(), wanted);
                }
                let record = self.analyses.get_mut(&video_url).expect("analysis exists");
                let elapsed = since_ms(record.submitted_ms);
                record.attempts = 0;
                match analysis.status {
                    RemoteStatus::Completed => {
                        self.at_service -= 1;
                        self.analysis_planner.record(elapsed);
                        record.state = AnalysisState::Completed;
                        record.subjects = analysis.subjects.clone();
                        record.updated_ms = now_ms();
                        self.store.put_analysis(record)?;
                        self.map_jobs(&video_url, &analysis.subjects)?;
                        let parked = self.parked_for_analysis.remove(&video_url);
                        self.ready.extend(parked.unwrap_or_default());
                        self.flush_soon();
                        Ok(())
                    }
                    RemoteStatus::Failed => {
                        self.at_service -= 1;
                        let reason = analysis
                            .error_reason
                            .filter(|reason| !reason.is_empty())
                            .unwrap_or_else(|| "no reason given".into());
                        let error = JobError::new(
                            analysis.error_code.filter(|code| *code != 0),
                            format!("analysis failed: {reason}"),
                        );
                        self.fail_analysis(&video_url, error)
                    }
                    status => {
                        self.note_unknown_status(status);
                        let delay =
                            self.analysis_planner
                                .next_delay(elapsed, analysis.progress, jitter());
                        self.push_timer(delay, Wakeup::Call(ApiCall::AnalysisDetail(video_url)));
                        Ok(())
                    }
                }
            }
            Err(ApiError::NotFound { message }) => {
                // The analysis record is gone at the service: analyze again.
                tracing::warn!(video = %video_url, "analysis no longer known to the service ({message}); analyzing again");
                self.at_service -= 1;
                let record = self.analyses.get_mut(&video_url).expect("analysis exists");
                record.state = AnalysisState::Pending;
                record.analysis_id = None;
                self.store.put_analysis(record)?;
                self.videos_to_analyze.push_front(video_url);
                Ok(())
            }
            Err(error) => {
                let call = ApiCall::AnalysisDetail(video_url.clone());
                match self.api_failure(&error, call) {
                    Disposition::Retried | Disposition::Stop => Ok(()),
                    Disposition::Attempt | Disposition::Final => {
                        let record = self.analyses.get_mut(&video_url).expect("analysis exists");
                        record.attempts += 1;
                        record.last_error = Some(job_error(&error));
                        let attempts = record.attempts;
                        if attempts >= self.settings.max_attempts {
                            self.at_service -= 1;
                            let error = self.exhausted(&video_url, &error, attempts);
                            self.fail_analysis(&video_url, error)
                        } else {
                            let delay = self.backoff(attempts);
                            self.push_timer(
                                delay,
                                Wakeup::Call(ApiCall::AnalysisDetail(video_url)),
                            );
                            Ok(())
                        }
                    }
                }
            }
        }
    }

    async fn on_create(
        &mut self,
        job_id: String,
        result: Result<Task, ApiError>,
    ) -> Result<(), RunError> {
        let now = now_ms();
        let mut job = self.jobs.load(&job_id)?;
        match result {
            Ok(task) => {
                crash::point(crash::CREATE_ANSWERED);
                self.stage_succeeded(&job_id);
                self.rejections = None;
                job.apply(Event::Created { task_id: task.id }, now)?;
                self.jobs.save(&job)?;
                // The task id is the only handle on what was paid for: durable in this
                // turn's flush, before anything else is started.
                self.flush_soon();
                self.after_flush.push(crash::CREATE_STORED);
                let delay = self
                    .render_planner
                    .next_delay(Duration::ZERO, 0.0, jitter());
                self.first_polls.insert(job_id.clone());
                self.push_timer(delay, Wakeup::Call(ApiCall::TaskDetail(job_id)));
                Ok(())
            }
            Err(ApiError::Transient {
                detail,
                outcome_unknown: true,
            }) => {
                // The request left and no answer came back: it may have been created and billed.
                self.at_service -= 1;
                let hold = self.settings.on_ambiguous == OnAmbiguous::Hold;
                tracing::warn!(job = %job_id, "create answer lost ({detail}); {}",
                    if hold { "holding the job" } else { "submitting again, flagged possible_duplicate" });
                job.apply(Event::Ambiguous { hold }, now)?;
                let error = JobError::new(None, format!("create answer lost: {detail}"));
                if hold {
                    job.last_error = Some(error);
                } else {
                    job.apply(
                        Event::AttemptFailed {
                            error: error.clone(),
                        },
                        now,
                    )?;
                    if job.attempts >= self.settings.max_attempts {
                        let error = JobError::new(
                            None,
                            format!("failed after {} attempts: {}", job.attempts, error.message),
                        );
                        job.apply(Event::Failed { error }, now)?;
                    } else {
                        self.ready.push_front(job_id);
                    }
                }
                self.jobs.save(&job)?;
                self.flush_soon();
                Ok(())
            }
            Err(ApiError::Rejected {
                code: 1003,
                message,
            }) if self.analysis_redone(&job.spec.video_url) => {
                // Refused because the service forgot the video's analysis, which is being
                // redone: not the job's fault, and nothing was created. Wait for the analysis.
                tracing::warn!(job = %job_id, "create refused while the video is analysed again ({message}); waiting for the analysis");
                self.at_service -= 1;
                job.apply(Event::SubmitAborted, now)?;
                self.jobs.save(&job)?;
                self.ready.push_back(job_id);
                Ok(())
            }
            Err(error) => {
                let call = ApiCall::Create(job_id.clone());
                match self.api_failure(&error, call) {
                    Disposition::Retried => {
                        // Throttled, so refused before it ran: back to `ready` until the
                        // create leaves again (with a fresh, flushed intent). A stop before
                        // then must not find the job in `submitting` and flag it.
                        job.apply(Event::SubmitAborted, now)?;
                        self.jobs.save(&job)?;
                        Ok(())
                    }
                    Disposition::Attempt => {
                        // Certainly not processed (the connection never opened, or the service
                        // answered 2001): back to `ready`, and in line again after a backoff.
                        self.at_service -= 1;
                        job.apply(Event::SubmitAborted, now)?;
                        job.apply(
                            Event::AttemptFailed {
                                error: job_error(&error),
                            },
                            now,
                        )?;
                        if job.attempts >= self.settings.max_attempts {
                            let error = self.exhausted(&job_id, &error, job.attempts);
                            job.apply(Event::Failed { error }, now)?;
                            self.jobs.save(&job)?;
                        } else {
                            self.jobs.save(&job)?;
                            let delay = self.backoff(job.attempts);
                            self.push_timer(delay, Wakeup::Ready(job_id));
                        }
                        Ok(())
                    }
                    Disposition::Final => {
                        self.at_service -= 1;
                        job.apply(
                            Event::Failed {
                                error: job_error(&error),
                            },
                            now,
                        )?;
                        self.jobs.save(&job)?;
                        if let ApiError::Rejected { code, message } = &error {
                            self.note_rejection(job_id, *code, message)?;
                        }
                        Ok(())
                    }
                    Disposition::Stop => {
                        // Refused before it ran (credits, authorization): not submitted.
                        self.at_service -= 1;
                        job.apply(Event::SubmitAborted, now)?;
                        self.jobs.save(&job)?;
                        Ok(())
                    }
                }
            }
        }
    }

    async fn on_task_detail(
        &mut self,
        job_id: String,
        refresh: bool,
        result: Result<Task, ApiError>,
    ) -> Result<(), RunError> {
        let now = now_ms();
        let mut job = self.jobs.load(&job_id)?;
        let first_poll = self.first_polls.remove(&job_id) && !refresh;
        match result {
            Ok(task) => {
                self.stage_succeeded(&job_id);
                if first_poll {
                    let wanted = self.first_poll_hits_wanted();
                    self.render_planner
                        .first_poll_found(!task.status.is_running(), wanted);
                }
                let elapsed = since_ms(job.times.submitted_ms);
                match (task.status, task.output_url) {
                    (RemoteStatus::Completed, Some(url)) => {
                        if !refresh {
                            // Refreshes keep counting: a link that keeps expiring must end.
                            self.at_service -= 1;
                            self.render_planner.record(elapsed);
                            job.attempts = 0;
                        }
                        job.apply(
                            Event::Rendered {
                                output_url: Some(url),
                            },
                            now,
                        )?;
                        self.jobs.save(&job)?;
                        // The download is a side effect on disk: its state goes first (the
                        // download starts after this turn's flush).
                        self.flush_soon();
                        self.after_flush.push(crash::RENDER_STORED);
                        self.downloads_waiting.push_back(job_id);
                    }
                    (RemoteStatus::Failed, _) if !refresh => {
                        self.at_service -= 1;
                        let reason = task
                            .error_reason
                            .filter(|reason| !reason.is_empty())
                            .unwrap_or_else(|| "no reason given".into());
                        let error =
                            JobError::new(task.error_code, format!("render failed: {reason}"));
                        job.apply(Event::RenderFailed { error }, now)?;
                        self.jobs.save(&job)?;
                    }
                    (status, _) if refresh => {
                        // A finished render that no longer offers its output.
                        let error = JobError::new(
                            None,
                            format!("task detail offers no output (status {status:?})"),
                        );
                        job.apply(Event::Expired { error }, now)?;
                        self.jobs.save(&job)?;
                    }
                    (status, _) => {
                        self.note_unknown_status(status);
                        let delay =
                            self.render_planner
                                .next_delay(elapsed, task.progress, jitter());
                        self.push_timer(delay, Wakeup::Call(ApiCall::TaskDetail(job_id)));
                    }
                }
                Ok(())
            }
            Err(ApiError::NotFound { message }) => {
                // The task is gone: its render cannot be fetched. Render again.
                tracing::warn!(job = %job_id, "task no longer known to the service ({message}); rendering again");
                if !refresh {
                    self.at_service -= 1;
                }
                let error = JobError::new(Some(1014), format!("task not found: {message}"));
                job.apply(Event::RemoteLost { error }, now)?;
                self.jobs.save(&job)?;
                self.analyze_again(&job.spec.video_url)?;
                self.ready.push_back(job_id);
                Ok(())
            }
            Err(error) => {
                let call = if refresh {
                    ApiCall::RefreshOutput(job_id.clone())
                } else {
                    ApiCall::TaskDetail(job_id.clone())
                };
                match self.api_failure(&error, call.clone()) {
                    Disposition::Retried | Disposition::Stop => Ok(()),
                    Disposition::Attempt | Disposition::Final => {
                        job.apply(
                            Event::AttemptFailed {
                                error: job_error(&error),
                            },
                            now,
                        )?;
                        if job.attempts >= self.settings.max_attempts {
                            if !refresh {
                                self.at_service -= 1;
                            }
                            let error = self.exhausted(&job_id, &error, job.attempts);
                            job.apply(Event::Failed { error }, now)?;
                            self.jobs.save(&job)?;
                        } else {
                            self.jobs.save(&job)?;
                            let delay = self.backoff(job.attempts);
                            self.push_timer(delay, Wakeup::Call(call));
                        }
                        Ok(())
                    }
                }
            }
        }
    }

    async fn on_download(
        &mut self,
        job_id: String,
        result: Result<Output, DownloadError>,
    ) -> Result<(), RunError> {
        let now = now_ms();
        let mut job = self.jobs.load(&job_id)?;
        match result {
            Ok(output) => {
                tracing::debug!(job = %job_id, bytes = output.bytes, "done");
                job.apply(Event::Downloaded { output }, now)?;
                self.jobs.save(&job)?;
                self.flush_soon();
                self.after_flush.push(crash::DONE_STORED);
                self.etags.remove(&job_id);
            }
            Err(DownloadError::LinkExpired { status }) => {
                let error = JobError::new(None, format!("output link refused (HTTP {status})"));
                job.apply(
                    Event::AttemptFailed {
                        error: error.clone(),
                    },
                    now,
                )?;
                if job.attempts >= self.settings.max_attempts {
                    let error = JobError::new(
                        None,
                        format!(
                            "output link kept expiring after {} fresh links",
                            job.attempts
                        ),
                    );
                    job.apply(Event::Expired { error }, now)?;
                    self.jobs.save(&job)?;
                } else {
                    job.output_url = None;
                    self.jobs.save(&job)?;
                    self.push_call(ApiCall::RefreshOutput(job_id.clone()));
                }
            }
            Err(DownloadError::Transient { detail }) => {
                let error = JobError::new(None, format!("download interrupted: {detail}"));
                job.apply(
                    Event::AttemptFailed {
                        error: error.clone(),
                    },
                    now,
                )?;
                if job.attempts >= self.settings.max_attempts {
                    let error = JobError::new(
                        None,
                        format!("download failed after {} attempts: {detail}", job.attempts),
                    );
                    job.apply(Event::Failed { error }, now)?;
                    self.jobs.save(&job)?;
                } else {
                    self.jobs.save(&job)?;
                    let delay = self.backoff(job.attempts);
                    self.push_timer(delay, Wakeup::Download(job_id));
                }
            }
            Err(DownloadError::Refused { detail }) => {
                job.apply(
                    Event::Failed {
                        error: JobError::new(None, detail),
                    },
                    now,
                )?;
                self.jobs.save(&job)?;
            }
            Err(DownloadError::Local { path, detail }) => {
                // The disk, not the job, is the problem: stop, keep the job resumable.
                tracing::error!(job = %job_id, "cannot write {path}: {detail}");
                self.stop_new_work(StopReason::LocalDisk { path, detail }, true);
            }
        }
        Ok(())
    }

    /// After an analysis completes: choose each waiting job's subjects.
    fn map_jobs(&mut self, video_url: &str, subjects: &[Subject]) -> Result<(), RunError> {
        let now = now_ms();
        let analysis_id = self
            .analyses
            .get(video_url)
            .and_then(|record| record.analysis_id.clone());
        for job_id in self.waiting_on_video.remove(video_url).unwrap_or_default() {
            let mut job = self.jobs.load(&job_id)?;
            if !matches!(job.state, JobState::Pending | JobState::Analyzing) {
                continue;
            }
            if job.state == JobState::Pending || job.analysis_id.is_none() {
                // Which analysis the job's subjects come from, for the export and support.
                job.apply(
                    Event::AnalysisStarted {
                        analysis_id: analysis_id.clone(),
                    },
                    now,
                )?;
            }
            let event = match choose_mappings(&job, subjects, self.settings.multi_subject) {
                Choice::Mapped(mappings) => {
                    self.ready.push_back(job_id.clone());
                    Event::Mapped { mappings }
                }
                Choice::NeedsMapping => Event::NeedsMapping {
                    subjects: subjects.to_vec(),
                },
                Choice::Fail(message) => Event::Failed {
                    error: JobError::new(None, message),
                },
            };
            job.apply(event, now)?;
            self.jobs.save(&job)?;
        }
        Ok(())
    }

    fn fail_analysis(&mut self, video_url: &str, error: JobError) -> Result<(), RunError> {
        let record = self.analyses.get_mut(video_url).expect("analysis exists");
        record.state = AnalysisState::Failed;
        record.last_error = Some(error.clone());
        record.updated_ms = now_ms();
        self.store.put_analysis(record)?;
        self.fail_video_jobs(video_url, error)
    }

    fn fail_video_jobs(&mut self, video_url: &str, error: JobError) -> Result<(), RunError> {
        let now = now_ms();
        for job_id in self.waiting_on_video.remove(video_url).unwrap_or_default() {
            let mut job = self.jobs.load(&job_id)?;
            if matches!(job.state, JobState::Pending | JobState::Analyzing) {
                job.apply(
                    Event::Failed {
                        error: error.clone(),
                    },
                    now,
                )?;
                self.jobs.save(&job)?;
            }
        }
        for job_id in self
            .parked_for_analysis
            .remove(video_url)
            .unwrap_or_default()
        {
            let mut job = self.jobs.load(&job_id)?;
            if !job.state.is_final() {
                job.apply(
                    Event::Failed {
                        error: error.clone(),
                    },
                    now,
                )?;
                self.jobs.save(&job)?;
            }
        }
        Ok(())
    }

    /// A service that forgot a task (1014) has most likely forgotten the video's analysis as
    /// well (a restart, a purge), and refuses a create for an unanalysed video (1003): analyse
    /// it again, once, before the job is created again. An analysis costs no credits.
    fn analyze_again(&mut self, video_url: &str) -> Result<(), RunError> {
        let Some(record) = self.analyses.get_mut(video_url) else {
            return Ok(());
        };
        if record.state != AnalysisState::Completed {
            // Already being redone for another job on this video.
            return Ok(());
        }
        record.state = AnalysisState::Pending;
        record.analysis_id = None;
        record.updated_ms = now_ms();
        self.store.put_analysis(record)?;
        self.videos_to_analyze.push_front(video_url.to_string());
        Ok(())
    }

    /// Whether the video's analysis is under way again, so a `ready` job on it must wait.
    fn analysis_redone(&self, video_url: &str) -> bool {
        self.analyses.get(video_url).is_some_and(|record| {
            matches!(
                record.state,
                AnalysisState::Pending | AnalysisState::Submitting | AnalysisState::Running
            )
        })
    }

    fn wait_on_video(&mut self, job: &Job) {
        match self.waiting_on_video.get_mut(&job.spec.video_url) {
            Some(waiting) => waiting.push(job.id.clone()),
            None => {
                let waiting = vec![job.id.clone()];
                self.waiting_on_video
                    .insert(job.spec.video_url.clone(), waiting);
            }
        }
    }

    /// The video's analysis was submitted: the jobs waiting on it are `analyzing` now. Kept
    /// in memory only; the store keeps them `pending` (one write per job saved), and both
    /// resume the same way.
    fn analysis_started(&mut self, video_url: &str) {
        for job_id in self.waiting_on_video.get(video_url).into_iter().flatten() {
            self.jobs.set_state(job_id, JobState::Analyzing);
        }
    }

    /// Decide what an API failure means for the run; re-queue throttled calls.
    fn api_failure(&mut self, error: &ApiError, call: ApiCall) -> Disposition {
        match error {
            ApiError::Throttled { .. }
                if self.no_new_work && matches!(call, ApiCall::Create(_) | ApiCall::Analyze(_)) =>
            {
                self.throttled += 1;
                Disposition::Stop
            }
            ApiError::Throttled { retry_after } => {
                self.throttled += 1;
                let delay = self.pacer.throttled(*retry_after, Instant::now());
                tracing::debug!(
                    ?delay,
                    rate = self.pacer.effective_rate(),
                    "throttled; cooling down and slowing down"
                );
                // Throttling never costs an attempt: the same call goes back in line.
                self.push_call(call);
                Disposition::Retried
            }
            ApiError::Transient { .. } => {
                self.failing_since
                    .entry(call.key().to_string())
                    .or_insert_with(Instant::now);
                Disposition::Attempt
            }
            ApiError::OutOfCredits { message } => {
                tracing::error!("out of credits: {message}");
                self.stop_new_work(
                    StopReason::OutOfCredits {
                        message: message.clone(),
                    },
                    false,
                );
                match call {
                    ApiCall::Create(_) | ApiCall::Analyze(_) => Disposition::Stop,
                    // A poll answered 1104: keep the record, poll it again later.
                    other => {
                        let delay = self.backoff(1);
                        self.push_timer(delay, Wakeup::Call(other));
                        Disposition::Retried
                    }
                }
            }
            ApiError::Unauthorized { code, message } => {
                let reason = StopReason::Unauthorized {
                    code: *code,
                    message: message.clone(),
                };
                self.stop_new_work(reason, true);
                Disposition::Stop
            }
            ApiError::NotFound { .. } | ApiError::Rejected { .. } => Disposition::Final,
        }
    }

    /// The share of first polls that should find their stage finished. With requests to
    /// spare, polling early (about the 70th percentile) costs a request for each stage still
    /// running and saves the idle time of every early finisher; as requests get scarce, every
    /// extra poll delays other work, so polls move towards waiting until nearly all stages
    /// are done.
    fn first_poll_hits_wanted(&self) -> f64 {
        let load = self.pacer.load(Instant::now());
        0.7 + 0.25 * ((load - 0.5) / 0.4).clamp(0.0, 1.0)
    }

    /// Full-jitter exponential backoff before retry number `attempt`.
    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .settings
            .backoff_base
            .saturating_mul(1u32 << attempt.min(20));
        let cap = exp.min(self.settings.backoff_cap);
        cap.mul_f64(rand::rng().random::<f64>())
    }

    /// A create was rejected. The same answer on several creates in a row is about the account
    /// or the options, not the jobs: undo those failures and stop submitting.
    fn note_rejection(&mut self, job_id: String, code: i64, message: &str) -> Result<(), RunError> {
        let mut streak = match self.rejections.take() {
            Some((previous, ids)) if previous == message => ids,
            _ => Vec::new(),
        };
        streak.push(job_id);
        if streak.len() < SYSTEMIC_REJECTIONS {
            self.rejections = Some((message.to_string(), streak));
            return Ok(());
        }
        tracing::error!(
            code,
            "{} creates in a row were rejected with: {message}",
            streak.len()
        );
        let now = now_ms();
        for id in streak {
            let mut job = self.jobs.load(&id)?;
            job.apply(Event::Retry, now)?;
            self.jobs.save(&job)?;
        }
        let reason = StopReason::SystemicRejection {
            code,
            message: message.to_string(),
        };
        self.stop_new_work(reason, false);
        Ok(())
    }

    /// A call about `key` succeeded: its failure streak ends, and the pacer recovers a little.
    fn stage_succeeded(&mut self, key: &str) {
        self.pacer.succeeded();
        self.failing_since.remove(key);
    }

    /// The error of a stage that used up its attempts: "failed after N attempts over T: ...".
    fn exhausted(&mut self, key: &str, error: &ApiError, attempts: u32) -> JobError {
        let over = self
            .failing_since
            .remove(key)
            .map(|since| since.elapsed())
            .unwrap_or_default();
        let over = Duration::from_secs(over.as_secs());
        JobError::new(
            error.code(),
            format!(
                "failed after {attempts} attempts over {}: {error}",
                humantime::format_duration(over)
            ),
        )
    }

    fn note_unknown_status(&mut self, status: RemoteStatus) {
        if let RemoteStatus::Unknown(code) = status {
            if self.unknown_statuses.insert(code) {
                tracing::warn!(
                    status = code,
                    "the API reported an undocumented status; treating it as still running"
                );
            }
        }
    }

    fn on_tick(&mut self) {
        self.write_view(true);
        let now = Instant::now();
        let figures = ProgressFigures {
            states: self.state_counts(),
            api_calls: self.api_calls,
            throttled: self.throttled,
            effective_rate: self.pacer.effective_rate(),
            cooling_for: self.pacer.cooling_until(now).map(|until| until - now),
        };
        self.progress.update(&figures);
    }

    fn state_counts(&self) -> std::collections::BTreeMap<JobState, usize> {
        self.jobs.counts()
    }

    /// The status view: counts of every job, and the first in-flight and failed jobs in id
    /// order (loaded from the store for their details).
    fn write_view(&self, live: bool) {
        let listed = |wanted: fn(JobState) -> bool, max: usize| {
            let mut ids = self.jobs.ids_where(wanted);
            let total = ids.len();
            if total > max {
                ids.select_nth_unstable(max);
                ids.truncate(max);
            }
            ids.sort_unstable();
            (ids, total)
        };
        let (in_flight, in_flight_total) = listed(view::is_in_flight, view::MAX_IN_FLIGHT_LISTED);
        let (failures, failures_total) = listed(view::needs_attention, view::MAX_FAILURES_LISTED);
        let mut details = Vec::with_capacity(in_flight.len() + failures.len());
        for (id, state) in in_flight.into_iter().chain(failures) {
            match self.jobs.load(id) {
                Ok(mut job) => {
                    // The loop's view of a waiting job's state is newer than its record.
                    job.state = state;
                    details.push(job);
                }
                Err(error) => tracing::debug!("status view: {error}"),
            }
        }
        let mut snapshot = view::Snapshot::from_jobs(details.iter(), now_ms());
        snapshot.jobs = self.jobs.total();
        snapshot.states = self.jobs.counts();
        snapshot.more_in_flight = in_flight_total - snapshot.in_flight.len();
        snapshot.more_failures = failures_total - snapshot.failures.len();
        snapshot.possible_duplicates = self.jobs.flagged();
        snapshot.pid = live.then(std::process::id);
        if let Err(error) = view::write_snapshot(&self.settings.db_path, &snapshot) {
            tracing::debug!("could not write the status view: {error}");
        }
    }

    fn report(&self) -> RunReport {
        RunReport {
            stop: self.stop.clone(),
            states: self.state_counts(),
            possible_duplicates: self.jobs.flagged(),
            api_calls: self.api_calls,
            throttled: self.throttled,
        }
    }
}

/// The run's jobs as the loop sees them. Records live in the store: [`Jobs::load`] reads one
/// when an event needs it and [`Jobs::save`] writes it back. Memory keeps only the state and
/// flag of each job not yet done (a few dozen bytes a job), for counts and the status view.
struct Jobs<'a> {
    store: &'a Store,
    open: HashMap<String, Brief>,
    done: usize,
    done_flagged: usize,
}

/// What memory keeps of a job that is not done.
#[derive(Debug, Clone, Copy)]
struct Brief {
    state: JobState,
    flagged: bool,
}

impl<'a> Jobs<'a> {
    fn new(store: &'a Store) -> Self {
        Jobs {
            store,
            open: HashMap::new(),
            done: 0,
            done_flagged: 0,
        }
    }

    fn load(&self, id: &str) -> Result<Job, RunError> {
        self.store
            .job(id)?
            .ok_or_else(|| RunError::MissingJob(id.to_string()))
    }

    /// Write a changed job through to the store (durable at the next flush).
    fn save(&mut self, job: &Job) -> Result<(), RunError> {
        self.store.put_job(job)?;
        self.note(job);
        Ok(())
    }

    /// Take note of a job's state as it is now.
    fn note(&mut self, job: &Job) {
        if job.state == JobState::Done {
            self.open.remove(&job.id);
            self.done += 1;
            self.done_flagged += usize::from(job.possible_duplicate);
            return;
        }
        let brief = Brief {
            state: job.state,
            flagged: job.possible_duplicate,
        };
        match self.open.get_mut(&job.id) {
            Some(known) => *known = brief,
            None => {
                self.open.insert(job.id.clone(), brief);
            }
        }
    }

    /// A change of state the store does not need to know (see
    /// [`Dispatcher::analysis_started`]).
    fn set_state(&mut self, id: &str, state: JobState) {
        if let Some(brief) = self.open.get_mut(id) {
            brief.state = state;
        }
    }

    fn total(&self) -> usize {
        self.open.len() + self.done
    }

    fn flagged(&self) -> usize {
        self.done_flagged + self.open.values().filter(|brief| brief.flagged).count()
    }

    fn counts(&self) -> std::collections::BTreeMap<JobState, usize> {
        let mut counts: std::collections::BTreeMap<JobState, usize> =
            JobState::ALL.into_iter().map(|state| (state, 0)).collect();
        for brief in self.open.values() {
            *counts.entry(brief.state).or_default() += 1;
        }
        *counts.entry(JobState::Done).or_default() += self.done;
        counts
    }

    /// The ids (with states) of the jobs whose state is `wanted`, unordered.
    fn ids_where(&self, wanted: fn(JobState) -> bool) -> Vec<(&str, JobState)> {
        self.open
            .iter()
            .filter(|(_, brief)| wanted(brief.state))
            .map(|(id, brief)| (id.as_str(), brief.state))
            .collect()
    }
}

/// This many creates in a row rejected with the same message stop the run.
const SYSTEMIC_REJECTIONS: usize = 3;

/// What an API failure means for the call that met it.
enum Disposition {
    /// Put back in line (throttling); nothing to record.
    Retried,
    /// A transient failure: counts an attempt, retried after a backoff.
    Attempt,
    /// The request is wrong; retrying cannot help.
    Final,
    /// The run stops submitting; the call was not carried out.
    Stop,
}

fn job_error(error: &ApiError) -> JobError {
    JobError::new(error.code(), error.to_string())
}

fn jitter() -> f64 {
    rand::rng().random::<f64>()
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

/// The outcome of subject choice for one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    Mapped(Vec<Mapping>),
    NeedsMapping,
    Fail(String),
}

/// Map a job's faces onto the subjects its video's analysis detected.
pub fn choose_mappings(job: &Job, subjects: &[Subject], policy: MultiSubject) -> Choice {
    if subjects.is_empty() {
        return Choice::Fail("no person was detected in the video".into());
    }
    let mut detected: Vec<u32> = subjects.iter().map(|subject| subject.obj_id).collect();
    detected.sort_unstable();
    detected.dedup();
    let listed = || {
        detected
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut mappings = Vec::new();
    for face in &job.spec.faces {
        match face.obj_id {
            Some(obj_id) if detected.contains(&obj_id) => {
                mappings.push(Mapping {
                    obj_id,
                    img_url: face.face_url.clone(),
                });
            }
            Some(obj_id) => {
                return Choice::Fail(format!(
                    "obj_id {obj_id} is not among the detected subjects ({})",
                    listed()
                ));
            }
            None if detected.len() == 1 => {
                mappings.push(Mapping {
                    obj_id: detected[0],
                    img_url: face.face_url.clone(),
                });
            }
            None => match policy {
                MultiSubject::Skip => return Choice::NeedsMapping,
                MultiSubject::First => {
                    mappings.push(Mapping {
                        obj_id: detected[0],
                        img_url: face.face_url.clone(),
                    });
                }
                MultiSubject::All => {
                    for obj_id in detected.iter().take(5) {
                        mappings.push(Mapping {
                            obj_id: *obj_id,
                            img_url: face.face_url.clone(),
                        });
                    }
                }
            },
        }
    }
    Choice::Mapped(mappings)
}
