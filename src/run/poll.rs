//! When to poll next: predict a remote stage's completion from its reported progress and from
//! what the service's stages took so far, and poll just after it, within bounds. Nothing about
//! the service's timing has to be configured.
//!
//! The aim is one or two detail calls per stage: a call before completion is wasted quota, a
//! call long after it is wasted wall time (and, for renders, output-URL lifetime).
//!
//! **Cold** (a new database, no hint): the first stages of a kind are *probes*, polled early
//! (at `--poll-min`); a probe that reports progress is extrapolated, one that does not backs
//! off geometrically. Stages submitted meanwhile are *deferred*: they take their first poll
//! from what the probes learn, so only a handful of stages pay for the learning.
//! **Calibrated** (a completion seen, progress extrapolated, timings learned by an earlier run
//! on the same database, or a hint): every stage's first poll comes from a delay tuned by
//! feedback (see [`PollPlanner::first_poll_found`]).

use std::time::Duration;

use crate::timings::StageTimings;

/// Bounds of the polling schedule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PollPolicy {
    /// Never poll the same record more often than this; also the probes' first poll.
    pub min: Duration,
    /// Never leave a record unpolled longer than this.
    pub max: Duration,
    /// A user's idea of the stage's duration, used only while nothing was learned.
    pub hint: Option<Duration>,
}

/// When a newly submitted stage is first polled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstPoll {
    /// After this delay.
    After(Duration),
    /// A probe while cold: after this (short) delay.
    Probe(Duration),
    /// Not yet known: ask [`PollPlanner::deferred_due`] as the planner learns.
    Defer,
}

/// Plans the polls of one kind of stage (analyses, or renders).
///
/// The first poll of a stage is the one that matters: most stages are finished by then, and
/// the rest report progress, so the second poll lands on their extrapolated completion. Its
/// delay is tuned by feedback rather than from observed durations, which a poll can only
/// bound from above (a stage found finished finished some time before): each first poll that
/// finds the stage finished shortens the delay a little, each that finds it running
/// lengthens it, so that about the wanted share of first polls find it finished (a running
/// quantile estimate). The share is the caller's trade: finding more stages still running
/// costs a request each; finding them finished late leaves the service's slot idle.
#[derive(Debug, Clone)]
pub struct PollPlanner {
    policy: PollPolicy,
    count: u32,
    mean_secs: f64,
    m2: f64,
    /// Delay from submission to the first poll, in seconds; `None` while cold.
    first_poll_secs: Option<f64>,
    /// How many stages can be under way together (the concurrency): a wave of first polls
    /// that report together shares one feedback step.
    wave: usize,
    /// Probes handed out while cold.
    probes: usize,
    /// While cold: answers of stages seen running, and the latest completion their progress
    /// extrapolates to (see [`PollPlanner::observe_running`]).
    probe_answers: usize,
    probe_estimate_secs: Option<f64>,
    /// While cold: how old a deferred stage may get before it is polled anyway (follows the
    /// probes' geometric backoff).
    horizon_secs: f64,
    /// Recent durations, remembered in the database for the next run.
    learned: StageTimings,
}

/// How fast the first-poll delay follows the feedback (log-scale step per wave of polls).
const FIRST_POLL_STEP: f64 = 0.15;

/// Stages polled early to learn a cold service's timing.
const PROBES: usize = 2;

/// Growth of a probe's (and the deferred stages') wait while no progress is reported.
const PROBE_BACKOFF: f64 = 1.5;

/// Below this many percent, reported progress is too coarse to extrapolate from.
const USABLE_PROGRESS: f64 = 2.0;

impl PollPlanner {
    /// `wave`: how many stages can be under way at once (the concurrency). `learned`: what an
    /// earlier run on the same database observed.
    pub fn new(policy: PollPolicy, wave: usize, learned: StageTimings) -> PollPlanner {
        let mut planner = PollPlanner {
            policy,
            count: 0,
            mean_secs: 0.0,
            m2: 0.0,
            first_poll_secs: None,
            wave: wave.max(1),
            probes: 0,
            probe_answers: 0,
            probe_estimate_secs: None,
            horizon_secs: policy.min.as_secs_f64(),
            learned: StageTimings::default(),
        };
        for took in learned
            .samples_ms
            .iter()
            .map(|ms| Duration::from_millis(*ms))
        {
            planner.add_sample(took);
        }
        planner.first_poll_secs = learned
            .first_poll_ms
            .map(|ms| ms as f64 / 1000.0)
            .or_else(|| learned.quantile(0.7).map(|took| took.as_secs_f64()))
            .or_else(|| policy.hint.map(|hint| hint.as_secs_f64()))
            .map(|secs| planner.clamped(secs));
        planner.learned = learned;
        planner
    }

    /// Whether the planner knows when this kind of stage tends to finish.
    pub fn is_calibrated(&self) -> bool {
        self.first_poll_secs.is_some()
    }

    /// When a stage submitted now is first polled.
    pub fn first_poll(&mut self) -> FirstPoll {
        match self.first_poll_secs {
            Some(secs) => FirstPoll::After(Duration::from_secs_f64(secs)),
            None if self.probes < PROBES => {
                self.probes += 1;
                FirstPoll::Probe(self.policy.min)
            }
            None => FirstPoll::Defer,
        }
    }

    /// For a deferred stage submitted `age` ago: the delay before its first poll, once the
    /// planner knows (or once the stage is older than the probes' horizon).
    pub fn deferred_due(&self, age: Duration) -> Option<Duration> {
        let age_secs = age.as_secs_f64();
        match self.first_poll_secs {
            Some(first) => Some(Duration::from_secs_f64((first - age_secs).max(0.0))),
            None if age_secs >= self.horizon_secs => Some(Duration::ZERO),
            None => None,
        }
    }

    /// While cold: the age at which a deferred stage is polled even if nothing is learned.
    pub fn cold_horizon(&self) -> Option<Duration> {
        self.first_poll_secs
            .is_none()
            .then(|| Duration::from_secs_f64(self.horizon_secs))
    }

    /// A stage was seen finished `took` after its submission (an upper bound of its
    /// duration: it finished at some point before the poll that saw it).
    pub fn record(&mut self, took: Duration) {
        self.add_sample(took);
        self.learned.record(took);
        if self.first_poll_secs.is_none() {
            // The first duration seen calibrates a cold planner, or the later completion a
            // probe still running extrapolates to.
            let secs = took
                .as_secs_f64()
                .max(self.probe_estimate_secs.unwrap_or(0.0));
            self.first_poll_secs = Some(self.clamped(secs));
        }
    }

    /// A stage was seen running `elapsed` after its submission, `progress` percent done. A
    /// cold planner calibrates on the extrapolated duration once every probe handed out has
    /// answered, on the latest of their extrapolations: one probe is one draw of the stage
    /// time, a random quantile (the first to answer with progress may well be the shortest),
    /// while the first poll aims above most stages; the later of two draws sits near the
    /// two-thirds quantile, close to the share the feedback then aims at. Probes polled
    /// together answer together, so waiting for the other costs nothing. Without usable
    /// progress, the probes' horizon grows.
    pub fn observe_running(&mut self, elapsed: Duration, progress: f64) {
        if self.first_poll_secs.is_some() {
            return;
        }
        self.probe_answers += 1;
        let elapsed_secs = elapsed.as_secs_f64();
        if progress > USABLE_PROGRESS && progress < 100.0 && elapsed_secs > 0.0 {
            let extrapolated = elapsed_secs * 100.0 / progress;
            let latest = self.probe_estimate_secs.unwrap_or(0.0).max(extrapolated);
            self.probe_estimate_secs = Some(latest);
        } else {
            self.horizon_secs = self.horizon_secs.max(elapsed_secs * PROBE_BACKOFF);
        }
        if self.probe_answers >= self.probes {
            self.first_poll_secs = self.probe_estimate_secs.map(|secs| self.clamped(secs));
        }
    }

    fn add_sample(&mut self, took: Duration) {
        let x = took.as_secs_f64();
        self.count += 1;
        let delta = x - self.mean_secs;
        self.mean_secs += delta / f64::from(self.count);
        self.m2 += delta * (x - self.mean_secs);
    }

    fn clamped(&self, secs: f64) -> f64 {
        secs.clamp(self.policy.min.as_secs_f64(), self.policy.max.as_secs_f64())
    }

    /// The first poll of a stage found it finished, or not. `wanted` is the share of first
    /// polls that should find it finished (0.5–0.95). Stages submitted together report
    /// together, before any of them could try a new delay: a wave shares one step, or 16
    /// stages would move the delay 16 steps at once and it would swing from far too early to
    /// far too late.
    pub fn first_poll_found(&mut self, finished: bool, wanted: f64) {
        let Some(first) = self.first_poll_secs else {
            return;
        };
        let hit = if finished { 1.0 } else { 0.0 };
        let step = FIRST_POLL_STEP / self.wave as f64;
        self.first_poll_secs = Some(self.clamped(first * (step * (wanted - hit)).exp()));
    }

    /// Mean observed duration, if any was observed.
    pub fn mean(&self) -> Option<Duration> {
        (self.count > 0).then(|| Duration::from_secs_f64(self.mean_secs))
    }

    /// A duration that most stages finish within: mean plus one standard deviation, the
    /// first-poll delay before two were observed, `--poll-min` when nothing is known.
    pub fn typical(&self) -> Duration {
        match self.count {
            0 => Duration::from_secs_f64(
                self.first_poll_secs
                    .unwrap_or(self.policy.min.as_secs_f64()),
            ),
            1 => Duration::from_secs_f64(self.mean_secs * 1.1),
            n => {
                let std = (self.m2 / f64::from(n - 1)).sqrt();
                Duration::from_secs_f64(self.mean_secs + std)
            }
        }
    }

    /// When to poll a stage for the first time, counted from its submission (`--poll-min`
    /// while cold).
    pub fn first_poll_delay(&self) -> Duration {
        Duration::from_secs_f64(
            self.first_poll_secs
                .unwrap_or(self.policy.min.as_secs_f64()),
        )
    }

    /// What this planner learned, for the next run on the same database.
    pub fn learned(&self) -> StageTimings {
        let mut learned = self.learned.clone();
        learned.first_poll_ms = self.first_poll_secs.map(|secs| (secs * 1000.0) as u64);
        learned
    }

    /// How long to wait before the next poll of a stage submitted `elapsed` ago that last
    /// reported `progress` (0–100). `jitter` in [0, 1) spreads polls of simultaneous stages.
    pub fn next_delay(&self, elapsed: Duration, progress: f64, jitter: f64) -> Duration {
        let elapsed_secs = elapsed.as_secs_f64();
        let first = self.first_poll_secs;
        let usable = progress > USABLE_PROGRESS && progress < 100.0 && elapsed_secs > 0.0;
        let expected_total = match first {
            // Linear extrapolation from the stage's own progress, the only evidence about this
            // stage. It is not tempered by the first-poll delay: that delay is a quantile aimed
            // at a share of finishers, not an estimate of this stage, and a stage still running
            // has usually outlived it, so blending the two pulled the estimate towards "about
            // to finish". The next poll then came early, found the stage running and the one
            // after it waited `--poll-min`: a third call and up to `--poll-min` of lateness on
            // the slowest stages, those that end a batch.
            _ if usable => elapsed_secs * 100.0 / progress,
            Some(first) if elapsed_secs < first => first,
            // Overdue (or cold) and no usable progress: back off geometrically.
            _ => (elapsed_secs * PROBE_BACKOFF).max(elapsed_secs + self.policy.min.as_secs_f64()),
        };
        let remaining = (expected_total - elapsed_secs).max(0.0);
        // After the first poll, land slightly after the predicted completion rather than
        // slightly before it. (The first poll's delay is tuned by feedback as it is.)
        let margin = if elapsed_secs > 0.0 {
            0.03 * expected_total
        } else {
            0.0
        };
        // The jitter only spreads polls of stages that started together; the rate limiter
        // spaces the requests anyway, so it stays small (every percent is idle slot time).
        let wait = (remaining + margin) * (1.0 + 0.02 * jitter.clamp(0.0, 1.0));
        Duration::from_secs_f64(wait).clamp(self.policy.min, self.policy.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(hint: Option<Duration>) -> PollPolicy {
        PollPolicy {
            min: Duration::from_millis(100),
            max: Duration::from_secs(60),
            hint,
        }
    }

    fn cold() -> PollPlanner {
        PollPlanner::new(policy(None), 16, StageTimings::default())
    }

    #[test]
    fn a_cold_planner_probes_a_few_stages_early_and_defers_the_rest() {
        let mut planner = cold();
        assert_eq!(
            planner.first_poll(),
            FirstPoll::Probe(Duration::from_millis(100))
        );
        assert_eq!(
            planner.first_poll(),
            FirstPoll::Probe(Duration::from_millis(100))
        );
        assert_eq!(planner.first_poll(), FirstPoll::Defer);
        assert_eq!(planner.deferred_due(Duration::from_millis(50)), None);
        // Probes at 0.1 s report 12.5 % and 10 %: stages take 0.8 s and 1 s. The planner
        // waits for both and takes the later one; deferred stages now know.
        planner.observe_running(Duration::from_millis(100), 12.5);
        assert!(!planner.is_calibrated());
        assert_eq!(planner.deferred_due(Duration::from_millis(50)), None);
        planner.observe_running(Duration::from_millis(100), 10.0);
        assert!(planner.is_calibrated());
        let due = planner.deferred_due(Duration::from_millis(300)).unwrap();
        assert!(
            (due.as_secs_f64() - 0.7).abs() < 1e-6,
            "{due:?}: at 1 s after submission"
        );
        assert_eq!(
            planner.first_poll(),
            FirstPoll::After(Duration::from_secs(1))
        );
    }

    #[test]
    fn a_probe_seen_finished_calibrates_on_the_later_of_it_and_a_running_probe() {
        let mut planner = cold();
        planner.first_poll();
        planner.first_poll();
        // One probe is half done after 1 s (about 2 s in all), the other finished by 1.5 s.
        planner.observe_running(Duration::from_secs(1), 50.0);
        assert!(!planner.is_calibrated());
        planner.record(Duration::from_millis(1500));
        assert_eq!(planner.first_poll_delay(), Duration::from_secs(2));
    }

    #[test]
    fn without_progress_probes_and_deferred_stages_back_off_geometrically() {
        let mut planner = cold();
        planner.first_poll();
        let mut elapsed = Duration::from_millis(100);
        let mut polls = vec![elapsed];
        for _ in 0..5 {
            planner.observe_running(elapsed, 0.0);
            elapsed += planner.next_delay(elapsed, 0.0, 0.0);
            polls.push(elapsed);
        }
        let ratios: Vec<f64> = polls
            .windows(2)
            .map(|pair| pair[1].as_secs_f64() / pair[0].as_secs_f64())
            .collect();
        assert!(ratios.iter().all(|ratio| *ratio >= 1.5), "{polls:?}");
        // A deferred stage is polled once older than the probes' horizon.
        assert_eq!(planner.deferred_due(Duration::from_millis(200)), None);
        let old_enough = polls[polls.len() - 2].mul_f64(PROBE_BACKOFF);
        assert_eq!(planner.deferred_due(old_enough), Some(Duration::ZERO));
    }

    #[test]
    fn a_completion_calibrates_and_learned_timings_start_the_next_run_calibrated() {
        let mut planner = cold();
        planner.first_poll();
        planner.record(Duration::from_millis(700));
        assert_eq!(
            planner.first_poll(),
            FirstPoll::After(Duration::from_millis(700))
        );
        let learned = planner.learned();
        assert_eq!(learned.first_poll_ms, Some(700));
        assert_eq!(learned.samples_ms, [700]);
        let mut warm = PollPlanner::new(policy(None), 16, learned);
        assert!(warm.is_calibrated());
        assert_eq!(
            warm.first_poll(),
            FirstPoll::After(Duration::from_millis(700))
        );
        assert_eq!(warm.mean(), Some(Duration::from_millis(700)));
    }

    #[test]
    fn a_hint_calibrates_only_what_nothing_was_learned_for() {
        let hinted = PollPlanner::new(
            policy(Some(Duration::from_secs(10))),
            16,
            StageTimings::default(),
        );
        assert_eq!(hinted.first_poll_delay(), Duration::from_secs(10));
        let mut learned = StageTimings::default();
        learned.record(Duration::from_secs(3));
        let warm = PollPlanner::new(policy(Some(Duration::from_secs(10))), 16, learned);
        assert_eq!(
            warm.first_poll_delay(),
            Duration::from_secs(3),
            "measured wins"
        );
    }

    #[test]
    fn progress_extrapolates_to_completion() {
        let planner = PollPlanner::new(
            policy(Some(Duration::from_secs(10))),
            16,
            StageTimings::default(),
        );
        // 40 % after 4 s: done at about 10 s, so wait about 6 s.
        let delay = planner.next_delay(Duration::from_secs(4), 40.0, 0.0);
        assert!(
            delay >= Duration::from_secs(6) && delay <= Duration::from_millis(6500),
            "{delay:?}"
        );
    }

    #[test]
    fn a_stage_running_past_its_first_poll_is_polled_again_at_its_own_completion() {
        let mut planner = cold();
        for _ in 0..3 {
            planner.record(Duration::from_secs(9));
        }
        assert_eq!(planner.first_poll_delay(), Duration::from_secs(9));
        // Found running at its first poll, 80 % done after 9.6 s: it ends at 12 s. The next
        // poll comes after that (plus the margin), not pulled towards the 9 s delay it outlived.
        let delay = planner.next_delay(Duration::from_millis(9600), 80.0, 0.0);
        assert!(
            delay >= Duration::from_millis(2400) && delay <= Duration::from_millis(2900),
            "{delay:?}"
        );
    }

    #[test]
    fn the_first_poll_settles_near_the_wanted_share_of_finished_stages() {
        let mut planner = PollPlanner::new(
            PollPolicy {
                min: Duration::from_millis(10),
                max: Duration::from_secs(60),
                hint: None,
            },
            16,
            StageTimings::default(),
        );
        planner.record(Duration::from_millis(700));
        assert_eq!(planner.first_poll_delay(), Duration::from_millis(700));
        // Waves of 16 stages lasting 0.4–0.6 s (evenly spread), each wave polled once at the
        // planner's delay and reporting together.
        let durations: Vec<f64> = (0..16)
            .map(|i| 0.4 + 0.2 * (i as f64 + 0.5) / 16.0)
            .collect();
        let (mut hits, mut polls) = (0, 0);
        for wave in 0..120 {
            let delay = planner.first_poll_delay().as_secs_f64();
            for took in &durations {
                let finished = *took <= delay;
                planner.first_poll_found(finished, 0.7);
                if wave >= 60 {
                    hits += usize::from(finished);
                    polls += 1;
                }
            }
        }
        let share = hits as f64 / polls as f64;
        assert!((0.6..=0.8).contains(&share), "{share}");
        let delay = planner.first_poll_delay().as_secs_f64();
        assert!((0.5..=0.58).contains(&delay), "{delay}");
    }

    #[test]
    fn overdue_stages_back_off_and_bounds_hold() {
        let planner = PollPlanner::new(
            policy(Some(Duration::from_secs(10))),
            16,
            StageTimings::default(),
        );
        let overdue = planner.next_delay(Duration::from_secs(30), 0.0, 0.0);
        assert!(overdue >= Duration::from_secs(15), "{overdue:?}");
        let capped = planner.next_delay(Duration::from_secs(600), 0.0, 0.0);
        assert_eq!(capped, Duration::from_secs(60));
        let done_soon = planner.next_delay(Duration::from_secs(10), 99.9, 0.0);
        assert!(done_soon >= Duration::from_millis(100), "{done_soon:?}");
    }
}
