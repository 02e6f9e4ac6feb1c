//! When to poll: the planners of each kind of stage, the stages whose first poll is still
//! ahead or not yet known (deferred while a cold planner probes), and what a poll's answer
//! teaches them. The timings learned are written to the store for the next run.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tokio::time::Instant;

use crate::akool::RemoteStatus;
use crate::job::{JobId, VideoUrl};
use crate::run::dispatch::agenda::{Call, Ticket, Wakeup};
use crate::run::dispatch::{Dispatcher, RunError, draw, since_ms};
use crate::run::poll::{FirstPoll, PollPlanner};
use crate::timings::{self, Timings};

/// Below this load of the request rate, analyses are polled early (see
/// [`Dispatcher::schedule_first_poll`]).
const EARLY_ANALYSIS_LOAD: f64 = 0.5;

/// When to poll: one planner per kind of stage, and the stages whose first poll is still
/// ahead (what it finds tunes the planner).
pub(super) struct Polls {
    pub(super) analysis: PollPlanner,
    pub(super) render: PollPlanner,
    pub(super) first_analysis_polls: HashSet<VideoUrl>,
    pub(super) first_render_polls: HashSet<JobId>,
    /// Stages submitted while their planner was cold and had handed out its probes: polled
    /// once it learns when such stages finish.
    deferred: Vec<Deferred>,
    /// Running stages whose next poll is aimed at the completion their progress predicted.
    aims: HashMap<Call, Aim>,
    /// The planners learned something not yet written to the store.
    learned: bool,
    /// Undocumented status values already reported (each is logged once).
    unknown_statuses: HashSet<i64>,
}

/// A stage waiting for its planner to know when to poll it first.
struct Deferred {
    /// Its poll (an analysis or task detail).
    call: Call,
    submitted: Instant,
    ticket: Option<Ticket>,
}

/// The completion a running stage's progress predicted, which its next poll is aimed at.
struct Aim {
    /// The stage's submission (a stage submitted again is another stage).
    submitted_ms: Option<u64>,
    /// From the submission.
    at: Duration,
    /// A poll found the stage running past it: it is overdue, by the time since `at`.
    outlived: bool,
}

impl Polls {
    pub(super) fn new(
        timings: Timings,
        concurrency: usize,
        settings: &crate::run::Settings,
    ) -> Polls {
        Polls {
            analysis: PollPlanner::new(settings.analysis_poll, concurrency, timings.analysis),
            render: PollPlanner::new(settings.render_poll, concurrency, timings.render),
            first_analysis_polls: HashSet::new(),
            first_render_polls: HashSet::new(),
            deferred: Vec::new(),
            aims: HashMap::new(),
            learned: false,
            unknown_statuses: HashSet::new(),
        }
    }

    /// Stages wait for their first poll to be planned.
    pub(super) fn has_deferred(&self) -> bool {
        !self.deferred.is_empty()
    }

    /// A planner learned from an answer.
    pub(super) fn learned(&mut self) {
        self.learned = true;
    }

    /// The next poll of this stage is its first at the planner's delay: its finding tunes it.
    fn mark_first_poll(&mut self, call: &Call) {
        match call {
            Call::AnalysisDetail(video_url) => {
                self.first_analysis_polls.insert(video_url.clone());
            }
            Call::TaskDetail(job_id) => {
                self.first_render_polls.insert(job_id.clone());
            }
            _ => {}
        }
    }

    fn planner(&self, call: &Call) -> &PollPlanner {
        match call {
            Call::AnalysisDetail(_) | Call::Analyze(_) => &self.analysis,
            _ => &self.render,
        }
    }

    fn planner_mut(&mut self, call: &Call) -> &mut PollPlanner {
        match call {
            Call::AnalysisDetail(_) | Call::Analyze(_) => &mut self.analysis,
            _ => &mut self.render,
        }
    }

    /// A poll of `call`'s stage answered, `elapsed` after its submission: if it is the first
    /// poll past the completion its progress predicted, what it found tunes the planner's
    /// margin. Returns how long the stage has outlived that completion, if it is still running.
    fn aim_answered(
        &mut self,
        call: &Call,
        submitted_ms: Option<u64>,
        elapsed: Duration,
        finished: bool,
    ) -> Option<Duration> {
        let aim = self.aims.get_mut(call)?;
        if aim.submitted_ms != submitted_ms {
            self.aims.remove(call);
            return None;
        }
        if elapsed < aim.at {
            // Polled before the aim (`--poll-max` pulled the poll earlier).
            if finished {
                self.aims.remove(call);
            }
            return None;
        }
        let first_past = !aim.outlived;
        let overdue = elapsed - aim.at;
        if finished {
            self.aims.remove(call);
        } else {
            aim.outlived = true;
        }
        if first_past {
            self.planner_mut(call).aimed_poll_found(finished);
        }
        (!finished).then_some(overdue)
    }
}

impl Dispatcher<'_> {
    /// A stage was accepted by the service: plan its first poll (`call`), or defer it until
    /// its planner knows when.
    pub(super) fn schedule_first_poll(&mut self, call: Call, ticket: Option<Ticket>) {
        let now = Instant::now();
        let first_poll = self.polls.planner_mut(&call).first_poll();
        // An analysis gates every job on its video: its lateness idles the slots they wait
        // for. With requests to spare, it is polled early and its progress aims the next poll
        // at its completion, one request more per video.
        let early =
            matches!(call, Call::AnalysisDetail(_)) && self.pacer.load(now) < EARLY_ANALYSIS_LOAD;
        match first_poll {
            FirstPoll::After(_) if early => {
                let delay = self.polls.analysis.early_poll().unwrap_or_default();
                self.agenda
                    .push_timer(now, delay, Wakeup::Call(call, ticket));
            }
            FirstPoll::After(delay) => {
                self.polls.mark_first_poll(&call);
                self.agenda
                    .push_timer(now, delay, Wakeup::Call(call, ticket));
            }
            FirstPoll::Probe(delay) => {
                tracing::debug!(?call, "probing a stage early to learn the service's timing");
                self.agenda
                    .push_timer(now, delay, Wakeup::Call(call, ticket));
            }
            FirstPoll::Defer => self.polls.deferred.push(Deferred {
                call,
                submitted: now,
                ticket,
            }),
        }
    }

    /// A poll found `call`'s stage (submitted at `submitted_ms`) finished, or failed.
    pub(super) fn poll_found_finished(&mut self, call: &Call, submitted_ms: Option<u64>) {
        self.polls
            .aim_answered(call, submitted_ms, since_ms(submitted_ms), true);
    }

    /// A poll found `call`'s stage (submitted at `submitted_ms`) still running, `progress`
    /// percent done: plan its next poll, aimed at the completion its progress predicts.
    pub(super) fn poll_again(
        &mut self,
        call: Call,
        submitted_ms: Option<u64>,
        progress: f64,
        ticket: Option<Ticket>,
    ) {
        let elapsed = since_ms(submitted_ms);
        let overdue = self.polls.aim_answered(&call, submitted_ms, elapsed, false);
        let next = self
            .polls
            .planner(&call)
            .next_poll(elapsed, progress, overdue, draw());
        // An overdue stage keeps the completion it outlived: how long it is overdue sets how
        // far apart its polls are.
        if let (Some(at), None) = (next.aim, overdue) {
            let aim = Aim {
                submitted_ms,
                at,
                outlived: false,
            };
            self.polls.aims.insert(call.clone(), aim);
        }
        self.agenda
            .push_timer(Instant::now(), next.delay, Wakeup::Call(call, ticket));
    }

    /// Plan the first poll of every deferred stage whose planner now knows when.
    pub(super) fn release_deferred(&mut self) {
        if self.polls.deferred.is_empty() {
            return;
        }
        let now = Instant::now();
        for deferred in std::mem::take(&mut self.polls.deferred) {
            let age = now.saturating_duration_since(deferred.submitted);
            let planner = self.polls.planner(&deferred.call);
            let calibrated = planner.is_calibrated();
            match planner.deferred_due(age) {
                Some(delay) => {
                    // Released by what the planner learned before the stage outgrew the
                    // first-poll delay, the poll lands at that delay: what it finds tunes the
                    // delay like any first poll's. (Released late, or by the cold horizon, it
                    // says nothing about the delay.)
                    if calibrated && !delay.is_zero() {
                        self.polls.mark_first_poll(&deferred.call);
                    }
                    self.agenda
                        .push_timer(now, delay, Wakeup::Call(deferred.call, deferred.ticket))
                }
                None => self.polls.deferred.push(deferred),
            }
        }
    }

    /// When a deferred stage becomes due even if nothing is learned meanwhile (it outgrew the
    /// probes' horizon), so the loop wakes for it.
    pub(super) fn deferred_wake(&self) -> Option<Instant> {
        self.polls
            .deferred
            .iter()
            .map(|deferred| {
                let horizon = self.polls.planner(&deferred.call).cold_horizon();
                deferred.submitted + horizon.unwrap_or_default()
            })
            .min()
    }

    /// Write what the planners learned to the store (durable with the next flush), for the
    /// next run or resume on this database.
    pub(super) fn save_timings(&mut self) -> Result<(), RunError> {
        if !self.polls.learned {
            return Ok(());
        }
        self.polls.learned = false;
        timings::save(self.store, &self.learned_timings())?;
        self.flush_soon();
        Ok(())
    }

    /// What the planners know of the service's stages.
    pub(super) fn learned_timings(&self) -> Timings {
        Timings {
            analysis: self.polls.analysis.learned(),
            render: self.polls.render.learned(),
        }
    }

    /// How long one wave of renders (`--concurrency` jobs) is expected to take, once known:
    /// the progress display's ETA before any job of this run finished.
    pub(super) fn wave_estimate(&self) -> Option<(std::time::Duration, usize)> {
        self.polls
            .render
            .is_calibrated()
            .then(|| (self.polls.render.typical(), self.settings.concurrency))
    }

    /// Log an undocumented status value once; it counts as still running.
    pub(super) fn note_unknown_status(&mut self, status: RemoteStatus) {
        if let RemoteStatus::Unknown(code) = status {
            if self.polls.unknown_statuses.insert(code) {
                tracing::warn!(
                    status = code,
                    "the API reported an undocumented status; treating it as still running"
                );
            }
        }
    }

    /// The share of first polls that should find their stage finished. With requests to
    /// spare, polling early (about the 70th percentile) costs a request for each stage still
    /// running and saves the idle time of every early finisher; as requests get scarce, every
    /// extra poll delays other work, so polls move towards waiting until nearly all stages
    /// are done.
    pub(super) fn first_poll_hits_wanted(&self) -> f64 {
        let load = self.pacer.load(Instant::now());
        0.7 + 0.25 * ((load - 0.5) / 0.4).clamp(0.0, 1.0)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::run::dispatch::service::AnswerFuture;
    use crate::run::dispatch::{Request, Service};
    use crate::store::Store;

    /// A service that never answers: these tests only plan polls.
    struct Silent;

    impl Service for Silent {
        fn execute(&self, _request: Request) -> AnswerFuture {
            Box::pin(std::future::pending())
        }
    }

    fn render_poll(id: &str) -> Call {
        Call::TaskDetail(JobId::from(id))
    }

    #[tokio::test(start_paused = true)]
    async fn a_deferred_stage_released_before_the_first_poll_delay_tunes_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        // `--poll-min 100ms`, nothing learned, no hint.
        let settings = crate::demo::simulator_run_config(
            dir.path().join("jobs.csv"),
            dir.path().join("db"),
            &dir.path().join("out"),
            "http://127.0.0.1:9".into(),
            "key",
        )
        .settings;
        let mut dispatcher =
            Dispatcher::new(&store, Arc::new(Silent), settings, CancellationToken::new());
        // Two probes, then a stage deferred 3 s before the next one.
        for id in ["probe-1", "probe-2", "early"] {
            dispatcher.schedule_first_poll(render_poll(id), None);
        }
        tokio::time::advance(Duration::from_secs(3)).await;
        dispatcher.schedule_first_poll(render_poll("late"), None);
        assert!(dispatcher.polls.first_render_polls.is_empty());
        // The probes 50 % and 60 % done after 1 s: renders take up to about 2 s. "late" is
        // polled at 2 s, a first poll at the planner's delay; "early", 3 s old, is polled at
        // once, which says nothing about the delay. Probes are no first polls.
        for progress in [50.0, 60.0] {
            dispatcher
                .polls
                .render
                .observe_running(Duration::from_secs(1), progress);
        }
        dispatcher.release_deferred();
        assert!(!dispatcher.polls.has_deferred());
        let marked: Vec<&str> = dispatcher
            .polls
            .first_render_polls
            .iter()
            .map(|id| id.as_str())
            .collect();
        assert_eq!(marked, ["late"]);
    }
}
