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
    /// How far past a predicted completion an aimed poll lands (a share of the duration).
    margin: f64,
    /// Recent durations, remembered in the database for the next run.
    learned: StageTimings,
}

/// A running stage's next poll.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NextPoll {
    /// From now.
    pub delay: Duration,
    /// The completion the stage's progress predicts (from its submission), when the poll is
    /// aimed at one: what that poll finds tunes the margin.
    pub aim: Option<Duration>,
}

/// How fast the first-poll delay follows the feedback (log-scale step per wave of polls whose
/// share of finished stages is off by one) before the spread of durations is known.
const FIRST_POLL_STEP: f64 = 0.15;

/// Once it is known, the step follows the spread: durations within ±s of their mean (a
/// coefficient of variation of about s/√3) put a share Δ of the stages within 2·s·Δ of each
/// other on a log scale, so a wave whose share is off by Δ moves the delay by about
/// 3·cv·Δ: most of the way to the wanted share in one wave, and no further than the spread
/// allows. Within these bounds (durations alike to the millisecond would stall it, wildly
/// spread ones swing it).
const FIRST_POLL_GAIN: f64 = 3.0;
const FIRST_POLL_STEP_MIN: f64 = 0.05;
const FIRST_POLL_STEP_MAX: f64 = 0.6;

/// Stages polled early to learn a cold service's timing.
const PROBES: usize = 2;

/// Growth of a probe's (and the deferred stages') wait while no progress is reported.
const PROBE_BACKOFF: f64 = 1.5;

/// Below this many percent, reported progress is too coarse to extrapolate from.
const USABLE_PROGRESS: f64 = 2.0;

/// The aim margin: how far past the completion a stage's progress predicts its next poll
/// lands, as a share of the predicted duration. It starts cautious and follows what the aimed
/// polls find (see [`PollPlanner::aimed_poll_found`]), between these bounds.
const MARGIN_START: f64 = 0.03;
const MARGIN_MIN: f64 = 0.005;
const MARGIN_MAX: f64 = 0.25;

/// Each aimed poll that finds its stage finished narrows the margin by this factor, each that
/// finds it running widens it by the other: about one aimed poll in twenty may miss
/// (`ln WIDEN = 19 × ln (1 / NARROW)`), since a miss costs a request and a floor's wait.
const MARGIN_NARROW: f64 = 0.97;
const MARGIN_WIDEN: f64 = 1.785;

/// A stage that outlived the completion its progress predicted (progress that is not linear,
/// or stalls near the end) waits at least this share of how long it is overdue: its polls
/// back off geometrically instead of coming at every `--poll-min`.
const OVERDUE_BACKOFF: f64 = 0.5;

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
            margin: learned
                .aim_margin_bp
                .map_or(MARGIN_START, |bp| f64::from(bp) / 10_000.0)
                .clamp(MARGIN_MIN, MARGIN_MAX),
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

    /// For a calibrated planner: an early first poll, halfway to the first-poll delay (and
    /// not before `--poll-min`), whose answer's progress aims the next poll at the stage's own
    /// completion: one request more for a stage whose lateness is costly.
    pub fn early_poll(&self) -> Option<Duration> {
        let first = self.first_poll_secs?;
        Some(Duration::from_secs_f64(first * 0.5).max(self.policy.min))
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
            // Deferred stages (younger than the probes) wait for the probes' next answer and
            // one backoff step more: polled at the probes' pace, they would race them and pay
            // the same calls for what the probes are about to learn.
            let probes_next =
                (elapsed_secs * PROBE_BACKOFF).max(elapsed_secs + self.policy.min.as_secs_f64());
            self.horizon_secs = self.horizon_secs.max(probes_next * PROBE_BACKOFF);
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
        let step = self.first_poll_step() / self.wave as f64;
        self.first_poll_secs = Some(self.clamped(first * (step * (wanted - hit)).exp()));
    }

    /// The 90th percentile of the durations seen, once a few were seen.
    fn tail_secs(&self) -> Option<f64> {
        if self.learned.samples_ms.len() < 3 {
            return None;
        }
        self.learned.quantile(0.9).map(|took| took.as_secs_f64())
    }

    /// The first-poll feedback's step per wave (see [`FIRST_POLL_GAIN`]).
    fn first_poll_step(&self) -> f64 {
        if self.count < 2 || self.mean_secs <= 0.0 {
            return FIRST_POLL_STEP;
        }
        let cv = (self.m2 / f64::from(self.count - 1)).sqrt() / self.mean_secs;
        (FIRST_POLL_GAIN * cv).clamp(FIRST_POLL_STEP_MIN, FIRST_POLL_STEP_MAX)
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
        learned.aim_margin_bp = Some((self.margin * 10_000.0).round() as u32);
        learned
    }

    /// An aimed poll (see [`NextPoll::aim`]) found its stage finished, or still running: the
    /// margin narrows a little, or widens.
    pub fn aimed_poll_found(&mut self, finished: bool) {
        let factor = if finished {
            MARGIN_NARROW
        } else {
            MARGIN_WIDEN
        };
        self.margin = (self.margin * factor).clamp(MARGIN_MIN, MARGIN_MAX);
    }

    /// The aim margin, as a share of a stage's predicted duration.
    pub fn margin(&self) -> f64 {
        self.margin
    }

    /// The next poll of a stage submitted `elapsed` ago that last reported `progress` (0–100)
    /// and has outlived the completion its progress first predicted by `overdue`, if it has.
    /// `jitter` in [0, 1) spreads polls of simultaneous stages.
    pub fn next_poll(
        &self,
        elapsed: Duration,
        progress: f64,
        overdue: Option<Duration>,
        jitter: f64,
    ) -> NextPoll {
        let elapsed_secs = elapsed.as_secs_f64();
        let first = self.first_poll_secs;
        let usable = progress > USABLE_PROGRESS && progress < 100.0 && elapsed_secs > 0.0;
        let (expected_total, aimed) = match first {
            // Linear extrapolation from the stage's own progress, the only evidence about this
            // stage. It is not tempered by the first-poll delay: that delay is a quantile aimed
            // at a share of finishers, not an estimate of this stage, and a stage still running
            // has usually outlived it, so blending the two pulled the estimate towards "about
            // to finish". The next poll then came early, found the stage running and the one
            // after it waited `--poll-min`: a third call and up to `--poll-min` of lateness on
            // the slowest stages, those that end a batch.
            _ if usable => (elapsed_secs * 100.0 / progress, true),
            Some(first) if elapsed_secs < first => (first, false),
            // Past the first poll with no usable progress (a service that reports none): most
            // stages seen ended by the 90th percentile of their durations; poll there once
            // before backing off, rather than half as late again as the first poll.
            // Past that too, or cold: back off geometrically. (The percentile sorts the
            // samples: taken only here, once.)
            _ => match self.tail_secs().filter(|tail| elapsed_secs < *tail) {
                Some(tail) => (tail, false),
                None => (
                    (elapsed_secs * PROBE_BACKOFF)
                        .max(elapsed_secs + self.policy.min.as_secs_f64()),
                    false,
                ),
            },
        };
        let remaining = (expected_total - elapsed_secs).max(0.0);
        // After the first poll, land slightly after the predicted completion rather than
        // slightly before it, by the margin the aimed polls tuned. (The first poll's delay is
        // tuned by feedback as it is.)
        let margin = if elapsed_secs > 0.0 {
            self.margin * expected_total
        } else {
            0.0
        };
        // The jitter only spreads polls of stages that started together; the rate limiter
        // spaces the requests anyway, so it stays small (every percent is idle slot time).
        let mut wait = (remaining + margin) * (1.0 + 0.02 * jitter.clamp(0.0, 1.0));
        if let Some(overdue) = overdue {
            wait = wait.max(overdue.as_secs_f64() * OVERDUE_BACKOFF);
        }
        let delay = Duration::from_secs_f64(wait).clamp(self.policy.min, self.policy.max);
        // A poll the upper bound pulls before the predicted completion is not aimed at it.
        let aim = (aimed && elapsed_secs + delay.as_secs_f64() >= expected_total)
            .then(|| Duration::from_secs_f64(expected_total));
        NextPoll { delay, aim }
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

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
            elapsed += planner.next_poll(elapsed, 0.0, None, 0.0).delay;
            polls.push(elapsed);
        }
        let ratios: Vec<f64> = polls
            .windows(2)
            .map(|pair| pair[1].as_secs_f64() / pair[0].as_secs_f64())
            .collect();
        assert!(ratios.iter().all(|ratio| *ratio >= 1.5), "{polls:?}");
        // A deferred stage waits for the probes' next answer, and one backoff step more.
        let probes_next = *polls.last().unwrap();
        assert_eq!(planner.deferred_due(probes_next), None);
        let old_enough = probes_next.mul_f64(PROBE_BACKOFF);
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
        let delay = planner
            .next_poll(Duration::from_secs(4), 40.0, None, 0.0)
            .delay;
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
        let delay = planner
            .next_poll(Duration::from_millis(9600), 80.0, None, 0.0)
            .delay;
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
    fn a_delay_far_off_the_wanted_share_moves_most_of_the_way_in_one_wave() {
        // Renders of 8–12 s, evenly spread. An earlier run left 20 of them and a first poll
        // at 11.6 s, where about 90 % are finished against the 70 % wanted (10.8 s).
        let spread = |n: usize| -> Vec<f64> {
            (0..n)
                .map(|i| 8.0 + 4.0 * (i as f64 + 0.5) / n as f64)
                .collect()
        };
        let mut learned = StageTimings::default();
        for took in spread(20) {
            learned.record(Duration::from_secs_f64(took));
        }
        learned.first_poll_ms = Some(11_600);
        let mut planner = PollPlanner::new(policy(None), 8, learned);
        // One wave of eight renders polled at the delay: seven are found finished.
        let delay = planner.first_poll_delay().as_secs_f64();
        for took in spread(8) {
            planner.first_poll_found(took <= delay, 0.7);
        }
        // Scaled by the spread, the step takes it most of the way (a fixed step of 0.15
        // would have reached 11.3 s).
        let delay = planner.first_poll_delay().as_secs_f64();
        assert!((10.6..=11.0).contains(&delay), "{delay}");
    }

    #[test]
    fn without_progress_a_stage_past_its_first_poll_is_polled_where_most_stages_ended() {
        // Renders of 8–12 s seen; the first poll at 10.5 s finds one running with no progress.
        let mut planner = cold();
        for n in 0..20 {
            planner.record(Duration::from_secs_f64(
                8.0 + 4.0 * (f64::from(n) + 0.5) / 20.0,
            ));
        }
        let elapsed = Duration::from_millis(10_500);
        let delay = planner.next_poll(elapsed, 0.0, None, 0.0).delay;
        // At the 90th percentile (about 11.7 s, plus the margin), not half as late again
        // (15.75 s).
        let at = (elapsed + delay).as_secs_f64();
        assert!((11.5..=12.3).contains(&at), "{at}");
        // Still running past that: geometric backoff.
        let later = planner
            .next_poll(Duration::from_secs(13), 0.0, None, 0.0)
            .delay;
        assert!(later >= Duration::from_millis(6500), "{later:?}");
    }

    #[test]
    fn overdue_stages_back_off_and_bounds_hold() {
        let planner = PollPlanner::new(
            policy(Some(Duration::from_secs(10))),
            16,
            StageTimings::default(),
        );
        let overdue = planner
            .next_poll(Duration::from_secs(30), 0.0, None, 0.0)
            .delay;
        assert!(overdue >= Duration::from_secs(15), "{overdue:?}");
        let capped = planner
            .next_poll(Duration::from_secs(600), 0.0, None, 0.0)
            .delay;
        assert_eq!(capped, Duration::from_secs(60));
        let done_soon = planner
            .next_poll(Duration::from_secs(10), 99.9, None, 0.0)
            .delay;
        assert!(done_soon >= Duration::from_millis(100), "{done_soon:?}");
    }

    #[test]
    fn the_aim_margin_follows_what_aimed_polls_find_and_is_remembered() {
        let mut planner = cold();
        for _ in 0..3 {
            planner.record(Duration::from_secs(10));
        }
        // 50 % after 5 s: aimed at 10 s, landing the start margin (3 %) after it.
        let next = planner.next_poll(Duration::from_secs(5), 50.0, None, 0.0);
        assert_eq!(next.aim, Some(Duration::from_secs(10)));
        assert_eq!(next.delay, Duration::from_millis(5300));
        // Aimed polls that keep finding their stage finished bring the margin to its floor.
        for _ in 0..200 {
            planner.aimed_poll_found(true);
        }
        assert!((planner.margin() - MARGIN_MIN).abs() < 1e-9);
        let next = planner.next_poll(Duration::from_secs(5), 50.0, None, 0.0);
        assert_eq!(next.delay, Duration::from_millis(5050));
        // One miss widens it more than many hits narrow it.
        planner.aimed_poll_found(false);
        let widened = planner.margin();
        assert!(widened > 1.7 * MARGIN_MIN, "{widened}");
        let warm = PollPlanner::new(policy(None), 16, planner.learned());
        assert!((warm.margin() - widened).abs() < 1e-4, "remembered");
    }

    #[test]
    fn the_margin_settles_where_about_one_aimed_poll_in_twenty_misses() {
        // Progress that runs ahead of time: the last part of the work is slower than the rest,
        // so extrapolating predicts about 90 % of the true duration, give or take 4 %. The
        // margin must settle where about one aimed poll in twenty misses (about 15 %).
        let mut planner = cold();
        planner.record(Duration::from_secs(10));
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let (mut misses, mut aimed) = (0, 0);
        for stage in 0..4000 {
            let took = 10.0;
            let predicted = took * 0.9 * (1.0 + 0.04 * rng.random_range(-1.0..=1.0));
            let finished = predicted * (1.0 + planner.margin()) >= took;
            planner.aimed_poll_found(finished);
            if stage >= 2000 {
                aimed += 1;
                misses += usize::from(!finished);
            }
        }
        let miss_share = misses as f64 / aimed as f64;
        assert!((0.02..=0.1).contains(&miss_share), "{miss_share}");
        assert!(
            (0.1..=0.2).contains(&planner.margin()),
            "{}",
            planner.margin()
        );
    }

    #[test]
    fn a_stage_stalled_near_the_end_is_polled_less_and_less_often() {
        let mut planner = PollPlanner::new(
            PollPolicy {
                min: Duration::from_millis(500),
                max: Duration::from_secs(60),
                hint: None,
            },
            16,
            StageTimings::default(),
        );
        planner.record(Duration::from_secs(10));
        // Reported 99 % after 10 s, and 99 % at every poll after that for a minute.
        let predicted = Duration::from_secs_f64(10.0 / 0.99);
        let mut elapsed = Duration::from_secs(10);
        let mut polls = 0;
        while elapsed < Duration::from_secs(70) {
            let overdue = elapsed.checked_sub(predicted).filter(|o| !o.is_zero());
            elapsed += planner.next_poll(elapsed, 99.0, overdue, 0.0).delay;
            polls += 1;
        }
        // At every --poll-min it would be 120 polls; backing off by half the time overdue,
        // the gaps grow by half each time.
        assert!(polls <= 16, "{polls} polls");
    }
}
