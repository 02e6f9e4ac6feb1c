//! The dispatcher: one loop over a closed set of [`Event`]s that decides everything that
//! happens next during a run.
//!
//! The loop is three steps: [`Dispatcher::commit`] makes every write of the last turn durable
//! (then the requests that waited for their intents leave), `next_event` waits for one event,
//! and `handle` turns it into job transitions written through the store and new work on the
//! agenda. Workers (API calls and downloads, through a [`Service`]) own no state: they get a
//! [`Request`] with copies of what they need and report one [`Outcome`].
//!
//! Layout: `event` (the events, requests and answers), `agenda` (queues, timers, slots),
//! `jobs` (the in-memory index of the store's jobs), one file of handlers per stage —
//! `analysis`, `render`, `output` — `resume` (re-attaching at start), `report` (how the run ended), `status` (the status
//! view and the progress display), `service` (the live workers).
//!
//! Invariants kept here:
//! - **No create (the only credit-spending call) is sent before its `submitting` intent is
//!   flushed**, and every remote id is flushed the moment it arrives.
//! - **Only this loop changes jobs during a run**, always through `Job::apply` and
//!   `AnalysisRecord::apply`; the failure policy (`run::policy`) decides, the loop applies.
//! - **Memory holds ids and states, not jobs**: a record is loaded from the store when an
//!   event needs it and written back before the loop moves on.
//! - **A slot is a [`Ticket`]** that travels with its stage's calls and frees the slot when
//!   dropped: released exactly once, whatever path the stage takes.

mod agenda;
mod analysis;
mod event;
mod failures;
mod jobs;
mod output;
mod polls;
mod preflight;
mod render;
mod report;
mod resume;
mod reuse;
mod service;
mod status;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::{Instant, Interval};
use tokio_util::sync::CancellationToken;

use crate::crash;
use crate::job::{IllegalAnalysisTransition, IllegalTransition, JobId};
use crate::journal::Journal;
use crate::run::breaker::{Breaker, Gate};
use crate::run::pace::Pacer;
use crate::run::settings::Settings;
use crate::store::{Store, StoreError};

pub use agenda::{Call, Slots, Ticket};
pub use event::{Answer, Event, Outcome, Request};
pub use report::{Attention, MAX_ATTENTION_LISTED, RunReport, StopReason};
pub use service::{Live, Service};

use agenda::{Agenda, Queued, Wakeup};
use analysis::Videos;
use failures::{Failures, Key};
use jobs::Jobs;
use polls::Polls;
use preflight::Checks;
use reuse::Reuse;
use status::StatusWriter;

/// What can stop the dispatcher itself (as opposed to a job): the store failing, or a bug
/// caught by a state machine.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Transition(#[from] IllegalTransition),
    #[error(transparent)]
    AnalysisTransition(#[from] IllegalAnalysisTransition),
    #[error("job {0} is missing from the database")]
    MissingJob(JobId),
    #[error("{0}")]
    Output(String),
    #[error("{0}")]
    Journal(String),
}

/// Run every job in the store to a final state, or until the run has to stop (`shutdown`
/// cancelled: a graceful stop).
/// `preflight`: the checker of video and face URLs, or `None` when preflight is off.
pub async fn run(
    store: &Store,
    service: Arc<dyn Service>,
    settings: Settings,
    preflight: Option<crate::preflight::Checker>,
    journal: Option<Journal>,
    shutdown: CancellationToken,
) -> Result<RunReport, RunError> {
    let mut dispatcher = Dispatcher::new(store, service, settings, shutdown);
    dispatcher.jobs.journal = journal;
    dispatcher.resume(preflight.as_ref())?;
    dispatcher.flush_soon();
    dispatcher.commit().await?;
    while dispatcher.turn().await? {}
    dispatcher.finish().await?;
    Ok(dispatcher.report())
}

/// At most this many calls start, or outcomes are handled, per turn of the loop before the
/// loop looks at its other events again.
const BATCH: usize = 256;

/// This many creates in a row rejected with the same message stop the run.
const SYSTEMIC_REJECTIONS: usize = 3;

pub struct Dispatcher<'a> {
    store: &'a Store,
    service: Arc<dyn Service>,
    settings: Settings,
    /// The jobs: ids and states in memory, records in the store.
    jobs: Jobs<'a>,
    /// The videos' shared analyses and the jobs waiting on them.
    videos: Videos,
    agenda: Agenda,
    /// The checks of video and face URLs before anything is bought.
    checks: Checks,
    /// Renders asked for by several jobs, bought once.
    reuse: Reuse,
    pacer: Pacer,
    /// Outage detection over the API's answers.
    breaker: Breaker,
    polls: Polls,
    failures: Failures,
    run: RunState,
    workers: Workers,
    commit: Commit,
    status: StatusWriter,
}

/// Whether and how the run is stopping.
struct RunState {
    shutdown: CancellationToken,
    shutdown_seen: bool,
    deadline: Option<Instant>,
    stop: Option<StopReason>,
    /// Submitting (create/analyze) is over for this run: out of credits, signal, fatal.
    no_new_work: bool,
    /// Nothing at all is started any more; requests in flight get a grace period.
    hard_stop: bool,
    /// Set by a hard stop: in-flight work is abandoned at this instant.
    grace_until: Option<Instant>,
    tick: Interval,
    api_calls: u64,
    throttled: u64,
}

/// Requests in flight.
struct Workers {
    set: JoinSet<Outcome>,
    /// Downloads, by job, so a hard stop can abort them at once.
    downloads: HashMap<JobId, AbortHandle>,
    /// The validator of each part file, for `If-Range` when its download resumes.
    etags: HashMap<JobId, String>,
}

/// Group commit: writes since the last flush, and what waits for them to be durable.
#[derive(Default)]
struct Commit {
    unflushed: bool,
    /// Crash points that mark a write as durable, reached right after that flush.
    after_flush: Vec<&'static str>,
    /// Creates and analyzes whose intents wait for that flush; they leave right after it.
    held: Vec<(&'static str, Request, Option<Ticket>)>,
}

impl<'a> Dispatcher<'a> {
    pub fn new(
        store: &'a Store,
        service: Arc<dyn Service>,
        settings: Settings,
        shutdown: CancellationToken,
    ) -> Self {
        let pacer = Pacer::new(
            settings.rate,
            settings.burst,
            settings.cooldown_cap,
            settings.retry.backoff_base,
        );
        // Timings learned by earlier runs on this database: only a head start, so a value
        // that cannot be read is ignored.
        let learned = crate::timings::load(store).unwrap_or_default();
        let mut tick = tokio::time::interval(settings.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Dispatcher {
            store,
            service,
            jobs: Jobs::new(store),
            videos: Videos::default(),
            agenda: Agenda::new(settings.concurrency, settings.downloads),
            checks: Checks::default(),
            reuse: Reuse::default(),
            pacer,
            breaker: Breaker::default(),
            polls: Polls::new(learned, settings.concurrency, &settings),
            failures: Failures::default(),
            run: RunState {
                shutdown,
                shutdown_seen: false,
                deadline: settings.max_runtime.map(|limit| Instant::now() + limit),
                stop: None,
                no_new_work: false,
                hard_stop: false,
                grace_until: None,
                tick,
                api_calls: 0,
                throttled: 0,
            },
            workers: Workers {
                set: JoinSet::new(),
                downloads: HashMap::new(),
                etags: HashMap::new(),
            },
            commit: Commit::default(),
            status: StatusWriter::new(&settings),
            settings,
        }
    }

    /// One turn of the loop: commit, start what may start, wait for one event and handle it.
    /// False once nothing is left to do.
    pub async fn turn(&mut self) -> Result<bool, RunError> {
        self.commit().await?;
        self.start_work()?;
        if self.workers.set.is_empty() && self.nothing_left_to_start() {
            return Ok(false);
        }
        let event = self.next_event().await;
        self.handle(event)?;
        Ok(true)
    }

    /// After the last turn: every write durable, the final status view written.
    async fn finish(&mut self) -> Result<(), RunError> {
        self.save_timings()?;
        self.flush_soon();
        self.commit().await?;
        self.status.finish(&self.jobs, self.store).await;
        Ok(())
    }

    /// Group commit: one flush makes every write since the last one durable; then the
    /// requests that waited for their intents leave. Called before anything else can start
    /// (downloads, requests), so no side effect overtakes the write that announces it.
    pub async fn commit(&mut self) -> Result<(), RunError> {
        if self.commit.unflushed {
            // The journal's fdatasync and the store's flush, together: the requests held
            // below leave only once both hold what announces them.
            match &mut self.jobs.journal {
                Some(journal) => {
                    let (flushed, synced) =
                        tokio::join!(self.store.flush_async(), journal.sync_async());
                    flushed?;
                    synced.map_err(|error| RunError::Journal(error.to_string()))?;
                }
                None => self.store.flush_async().await?,
            }
            self.commit.unflushed = false;
        }
        for point in self.commit.after_flush.drain(..) {
            crash::point(point);
        }
        for (point, request, ticket) in std::mem::take(&mut self.commit.held) {
            crash::point(point);
            self.send(request, ticket);
        }
        Ok(())
    }

    /// A write that must be durable before the next side effect (see [`Self::commit`]).
    fn flush_soon(&mut self) {
        self.commit.unflushed = true;
    }

    /// Wait for the next event.
    pub async fn next_event(&mut self) -> Event {
        loop {
            let now = Instant::now();
            let next_timer = self
                .agenda
                .next_due()
                .into_iter()
                .chain(self.deferred_wake())
                .min();
            let pacing = self.pacer.gate(now);
            let breaker = self.breaker.gate(now);
            let shut = matches!(breaker, Gate::Shut(_));
            let may_call = self.agenda.has_calls() && pacing.is_none() && !shut;
            // Queued calls wait for the later of the pacing gate and the next probe (a probe in
            // flight is waited for through its worker).
            let probe_at = match breaker {
                Gate::Shut(at) => at,
                Gate::Closed | Gate::Probe => None,
            };
            let gate_wait = pacing.max(probe_at).filter(|_| self.agenda.has_calls());
            let shutdown_pending = !self.run.shutdown_seen;
            tokio::select! {
                biased;
                joined = self.workers.set.join_next(), if !self.workers.set.is_empty() => {
                    match joined {
                        Some(Ok(outcome)) => return Event::Finished(outcome),
                        Some(Err(error)) if error.is_panic() => {
                            std::panic::resume_unwind(error.into_panic())
                        }
                        Some(Err(_)) => return Event::Abandoned,
                        None => continue,
                    }
                }
                _ = self.run.shutdown.cancelled(), if shutdown_pending => return Event::Shutdown,
                _ = self.pacer.until_ready(), if may_call => return Event::Permit,
                _ = sleep_until(next_timer), if next_timer.is_some() => return Event::TimerDue,
                // After the API's permits: a stream of checks must not hold up the calls the
                // first checks already cleared.
                check = self.checks.next(), if self.checks.running() => {
                    return Event::Checked(check)
                }
                _ = sleep_until(gate_wait), if gate_wait.is_some() => return Event::GateOpen,
                _ = sleep_until(self.run.deadline), if self.run.deadline.is_some() => {
                    return Event::Deadline
                }
                _ = sleep_until(self.run.grace_until), if self.run.grace_until.is_some() => {
                    return Event::GraceOver
                }
                _ = self.run.tick.tick() => return Event::Tick,
            }
        }
    }

    /// React to one event.
    pub fn handle(&mut self, event: Event) -> Result<(), RunError> {
        match event {
            Event::Finished(outcome) => {
                self.on_outcome(outcome)?;
                // Every outcome already there is handled in this turn, so that their writes
                // share one flush.
                for _ in 1..BATCH {
                    match self.workers.set.try_join_next() {
                        Some(Ok(outcome)) => self.on_outcome(outcome)?,
                        Some(Err(error)) if error.is_panic() => {
                            std::panic::resume_unwind(error.into_panic())
                        }
                        Some(Err(_)) => {}
                        None => break,
                    }
                }
            }
            Event::Permit if self.breaker.gate(Instant::now()) == Gate::Probe => {
                // The service is down: one call goes out to see whether it is back.
                if let Some(queued) = self.agenda.pop_probe() {
                    tracing::debug!(call = ?queued.call, "probing the service");
                    self.breaker.probe_started();
                    self.pacer.started(Instant::now());
                    self.start_call(queued)?;
                }
            }
            Event::Permit => {
                // The limiter's permit was taken by `until_ready`.
                if let Some(queued) = self.agenda.pop_call() {
                    self.pacer.started(Instant::now());
                    self.start_call(queued)?;
                }
                // Calls the limiter admits right now start in the same turn: their intents
                // share one flush.
                for _ in 1..BATCH {
                    if !self.agenda.has_calls() || !self.pacer.try_start(Instant::now()) {
                        break;
                    }
                    let queued = self.agenda.pop_call().expect("has calls");
                    self.start_call(queued)?;
                }
            }
            Event::Checked(check) => {
                self.on_checked(check)?;
                // Every answer already there is taken in this turn.
                for _ in 1..BATCH {
                    match self.checks.try_next() {
                        Some(check) => self.on_checked(check)?,
                        None => break,
                    }
                }
            }
            Event::TimerDue => self.fire_timers(),
            Event::GateOpen | Event::Abandoned => {}
            Event::Shutdown => {
                self.run.shutdown_seen = true;
                self.stop(StopReason::Interrupted, true);
            }
            Event::Deadline => {
                tracing::warn!("--max-runtime reached; stopping with work left");
                self.run.deadline = None;
                self.stop(StopReason::Deadline, true);
            }
            Event::GraceOver => {
                tracing::warn!("abandoning requests still in flight; their jobs resume next run");
                self.run.grace_until = None;
                self.workers.set.abort_all();
            }
            Event::Tick => {
                self.release_deferred();
                self.save_timings()?;
                self.on_tick();
            }
        }
        Ok(())
    }

    fn on_outcome(&mut self, outcome: Outcome) -> Result<(), RunError> {
        let Outcome { ticket, answer } = outcome;
        match answer {
            Answer::Analyze { video_url, result } => self.on_analyze(video_url, result, ticket),
            Answer::AnalysisDetail { video_url, result } => {
                self.on_analysis_detail(video_url, result, ticket)
            }
            Answer::Create { job_id, result } => self.on_create(job_id, result, ticket),
            Answer::TaskDetail {
                job_id,
                refresh: false,
                result,
            } => self.on_task_detail(job_id, result, ticket),
            Answer::TaskDetail {
                job_id,
                refresh: true,
                result,
            } => self.on_link_refresh(job_id, result),
            Answer::Download {
                job_id,
                result,
                etag,
            } => {
                drop(ticket);
                self.workers.downloads.remove(&job_id);
                if let Some(etag) = etag {
                    self.workers.etags.insert(job_id.clone(), etag);
                }
                self.on_download(job_id, result)
            }
            Answer::Upload { job_id, result } => {
                drop(ticket);
                self.workers.downloads.remove(&job_id);
                self.on_upload(job_id, result)
            }
        }
    }

    /// Nothing queued, nothing waiting, nothing that could be started.
    fn nothing_left_to_start(&self) -> bool {
        if self.run.hard_stop {
            return true;
        }
        // Once submitting is over, what is at the service is still finished (polled and
        // downloaded); ready jobs wait for the next run.
        let startable = !self.run.no_new_work && self.agenda.has_submissions();
        let checking = !self.run.no_new_work && self.checks.running();
        !self.agenda.is_waiting() && !self.polls.has_deferred() && !startable && !checking
    }

    /// Move work into the queues while there is room: downloads first, then slots at the
    /// service (ready jobs before new analyses).
    fn start_work(&mut self) -> Result<(), RunError> {
        while !self.run.hard_stop && !self.agenda.downloads_waiting.is_empty() {
            let Some(ticket) = self.agenda.downloads.try_take() else {
                break;
            };
            let job_id = self
                .agenda
                .downloads_waiting
                .pop_front()
                .expect("not empty");
            self.start_download(job_id, ticket)?;
        }
        while !self.run.no_new_work && self.agenda.has_submissions() {
            if self.agenda.service.is_full() {
                break;
            }
            if !self.can_finish_in_time() {
                tracing::warn!(
                    "--max-runtime: new work would not finish in time; finishing what is in flight"
                );
                self.stop(StopReason::Deadline, false);
                break;
            }
            if let Some(job_id) = self.agenda.ready.pop_front() {
                let job = self.jobs.load(&job_id)?;
                let mut job = job;
                if self.videos.analysis_in_progress(&job.spec.video_url) {
                    self.videos.park(job.spec.video_url, job_id);
                    continue;
                }
                if !self.job_cleared(&mut job)? || self.follows(&mut job)? {
                    continue;
                }
                let ticket = self.agenda.service.try_take();
                self.agenda.push_call(Call::Create(job_id), ticket);
            } else if let Some(video_url) = self.agenda.videos_to_analyze.pop_front() {
                let ticket = self.agenda.service.try_take();
                self.agenda.push_call(Call::Analyze(video_url), ticket);
            }
        }
        Ok(())
    }

    /// Whether a render started now (after an analysis, if one is still needed) is expected
    /// to finish before `--max-runtime`, judged by the durations observed so far.
    fn can_finish_in_time(&self) -> bool {
        let Some(deadline) = self.run.deadline else {
            return true;
        };
        let mut needed = self.polls.render.typical();
        if self.agenda.ready.is_empty() {
            needed += self.polls.analysis.typical();
        }
        Instant::now() + needed <= deadline
    }

    /// Stop submitting for this run. A hard stop also stops polling and downloading: requests
    /// in flight get a bounded grace, partial downloads stay as part files, and everything
    /// resumes next run. A soft stop finishes what is at the service.
    fn stop(&mut self, reason: StopReason, hard: bool) {
        if self.run.stop.is_none() || hard {
            self.run.stop = Some(reason);
        }
        self.run.no_new_work = true;
        if hard {
            self.run.hard_stop = true;
            self.agenda.clear();
            for (_, task) in self.workers.downloads.drain() {
                task.abort();
            }
            if self.run.grace_until.is_none() {
                self.run.grace_until = Some(Instant::now() + self.settings.grace);
            }
        } else {
            // Keep polls and downloads; queued submissions go (their jobs stay resumable).
            self.agenda.drop_submissions();
        }
    }

    fn fire_timers(&mut self) {
        self.release_deferred();
        for wakeup in self.agenda.take_due(Instant::now()) {
            match wakeup {
                Wakeup::Call(call, ticket) if call.is_submission() && self.run.no_new_work => {
                    // Submitting is over for this run; the job or video stays waiting in the
                    // store and the next run takes it up. Its slot is freed.
                    drop(ticket);
                }
                Wakeup::Call(call, ticket) => self.agenda.push_call(call, ticket),
                Wakeup::Download(job_id) => self.agenda.downloads_waiting.push_back(job_id),
                Wakeup::Ready(job_id) => self.agenda.ready.push_back(job_id),
            }
        }
    }

    /// Start one API call.
    fn start_call(&mut self, queued: Queued) -> Result<(), RunError> {
        self.run.api_calls += 1;
        let Queued { call, ticket, .. } = queued;
        match call {
            Call::Analyze(video_url) => self.start_analyze(video_url, ticket),
            Call::AnalysisDetail(video_url) => self.start_analysis_poll(video_url, ticket),
            Call::Create(job_id) => self.start_create(job_id, ticket),
            Call::TaskDetail(job_id) => self.start_task_detail(job_id, ticket, false),
            Call::RefreshOutput(job_id) => self.start_task_detail(job_id, ticket, true),
        }
    }

    /// Hand a request to a worker now.
    fn send(&mut self, request: Request, ticket: Option<Ticket>) -> AbortHandle {
        let answer = self.service.execute(request);
        self.workers.set.spawn(async move {
            let answer = answer.await;
            Outcome { ticket, answer }
        })
    }

    /// Hand a request to a worker once this turn's writes are durable (group commit).
    fn send_after_commit(&mut self, point: &'static str, request: Request, ticket: Option<Ticket>) {
        self.flush_soon();
        self.commit.held.push((point, request, ticket));
    }

    fn report(&self) -> RunReport {
        let (attention, attention_total, permanent_failures) =
            self.jobs.attention(MAX_ATTENTION_LISTED);
        RunReport {
            stop: self.run.stop.clone(),
            states: self.jobs.counts(),
            possible_duplicates: self.jobs.flagged(),
            api_calls: self.run.api_calls,
            throttled: self.run.throttled,
            refused_by_preflight: self.checks.refused,
            attention,
            attention_total,
            permanent_failures,
            row_changed: Vec::new(),
        }
    }
}

/// A uniform random number in [0, 1): the jitter of backoffs and polls.
fn draw() -> f64 {
    rand::rng().random::<f64>()
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Elapsed time since a wall-clock timestamp in ms (zero if in the future).
fn since_ms(then_ms: Option<u64>) -> Duration {
    then_ms
        .map(|then| Duration::from_millis(crate::now_ms().saturating_sub(then)))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
