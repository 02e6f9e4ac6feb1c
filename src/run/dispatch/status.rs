//! What a person sees of a running batch: the status view file that `status` reads while the
//! run holds the database, and the progress display.
//!
//! The loop collects ids and counts (cheap, in memory); loading the listed jobs' details from
//! the store and writing the file happen on a blocking thread, off the loop, one write at a
//! time. Reads the store, never writes it.

use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::job::{JobId, JobState};
use crate::now_ms;
use crate::run::dispatch::Dispatcher;
use crate::run::dispatch::jobs::Jobs;
use crate::run::progress::{Progress, ProgressFigures};
use crate::run::settings::Settings;
use crate::store::Store;
use crate::view::{self, ServiceOutage};

pub struct StatusWriter {
    progress: Progress,
    db_path: std::path::PathBuf,
    /// The view being written, if a write is under way.
    writing: Option<JoinHandle<()>>,
}

/// What the loop hands to the writer: everything but the listed jobs' records.
struct ViewRequest {
    in_flight: Vec<(JobId, JobState)>,
    in_flight_total: usize,
    failures: Vec<(JobId, JobState)>,
    failures_total: usize,
    total: usize,
    states: std::collections::BTreeMap<JobState, usize>,
    flagged: usize,
    row_changed: (usize, Vec<String>),
    live: bool,
    outage: Option<ServiceOutage>,
    timings: Vec<String>,
}

impl StatusWriter {
    pub fn new(settings: &Settings) -> StatusWriter {
        StatusWriter {
            progress: Progress::new(settings.interactive, settings.summary_every),
            db_path: settings.db_path.clone(),
            writing: None,
        }
    }

    /// Start writing the view unless the previous write is still under way (the next tick
    /// catches up).
    fn write(
        &mut self,
        jobs: &Jobs,
        store: &Store,
        live: bool,
        outage: Option<ServiceOutage>,
        timings: Vec<String>,
    ) {
        if self
            .writing
            .as_ref()
            .is_some_and(|task| !task.is_finished())
        {
            return;
        }
        let mut request = view_request(jobs, live);
        request.outage = outage;
        request.timings = timings;
        let store = store.clone();
        let db_path = self.db_path.clone();
        self.writing = Some(tokio::task::spawn_blocking(move || {
            write_view(&store, &db_path, request);
        }));
    }

    /// The run is over: the final view (not live) replaces whatever a last background write
    /// may still put there, so `status` never takes a finished run for a running one.
    pub async fn finish(&mut self, jobs: &Jobs<'_>, store: &Store) {
        self.progress.finish();
        if let Some(task) = self.writing.take() {
            let _ = task.await;
        }
        write_view(store, &self.db_path, view_request(jobs, false));
    }
}

impl Dispatcher<'_> {
    /// The outage under way, as `status` shows it.
    fn outage(&self) -> Option<ServiceOutage> {
        self.breaker.outage().map(|outage| ServiceOutage {
            since_ms: outage.since_ms,
            probing_every_s: outage.probing_every.as_secs(),
        })
    }

    pub(super) fn on_tick(&mut self) {
        let outage = self.outage();
        let timings = self.learned_timings().describe();
        self.status
            .write(&self.jobs, self.store, true, outage, timings);
        let now = Instant::now();
        let states = self.jobs.counts();
        // Every slot at the service is an analysis or a render (rendering, or a create on its
        // way); what is not a render is an analysis.
        let renders = states.get(&JobState::Rendering).copied().unwrap_or(0)
            + states.get(&JobState::Submitting).copied().unwrap_or(0);
        let next_due = self
            .agenda
            .next_due()
            .into_iter()
            .chain(self.deferred_wake())
            .min();
        let figures = ProgressFigures {
            analyses_at_service: self.agenda.service.taken().saturating_sub(renders),
            next_poll_in: next_due.map(|due| due.saturating_duration_since(now)),
            states,
            api_calls: self.run.api_calls,
            throttled: self.run.throttled,
            effective_rate: self.pacer.effective_rate(),
            cooling_for: self.pacer.cooling_until(now).map(|until| until - now),
            outage: self.outage(),
            wave: self.wave_estimate(),
        };
        self.status.progress.update(&figures);
    }
}

/// The first in-flight and failed jobs in id order, and the counts.
fn view_request(jobs: &Jobs, live: bool) -> ViewRequest {
    let listed = |wanted: fn(JobState) -> bool, max: usize| {
        let mut ids = jobs.ids_where(wanted);
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
    ViewRequest {
        in_flight,
        in_flight_total,
        failures,
        failures_total,
        total: jobs.total(),
        states: jobs.counts(),
        flagged: jobs.flagged(),
        row_changed: {
            let ids = jobs.row_changed();
            let count = ids.len();
            let listed = ids
                .take(view::MAX_ROW_CHANGED_LISTED)
                .map(|id| id.to_string())
                .collect();
            (count, listed)
        },
        live,
        outage: None,
        timings: Vec::new(),
    }
}

/// Load the listed jobs' details and write the snapshot file.
fn write_view(store: &Store, db_path: &std::path::Path, request: ViewRequest) {
    let mut details = Vec::with_capacity(request.in_flight.len() + request.failures.len());
    for (id, state) in request.in_flight.into_iter().chain(request.failures) {
        match store.job(id.as_str()) {
            Ok(Some(mut job)) => {
                // The loop's view of a waiting job's state is newer than its record.
                job.state = state;
                details.push(job);
            }
            Ok(None) => tracing::debug!("status view: job {id} is gone"),
            Err(error) => tracing::debug!("status view: {error}"),
        }
    }
    let mut snapshot = view::Snapshot::from_jobs(details.iter(), now_ms());
    snapshot.jobs = request.total;
    snapshot.states = request.states;
    snapshot.more_in_flight = request.in_flight_total - snapshot.in_flight.len();
    snapshot.more_failures = request.failures_total - snapshot.failures.len();
    snapshot.possible_duplicates = request.flagged;
    (snapshot.row_changed, snapshot.row_changed_ids) = request.row_changed;
    snapshot.pid = request.live.then(std::process::id);
    snapshot.service_unavailable = request.outage;
    snapshot.timings = request.timings;
    if let Err(error) = view::write_snapshot(db_path, &snapshot) {
        tracing::debug!("could not write the status view: {error}");
    }
}
