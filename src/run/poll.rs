//! When to poll next: predict a remote stage's completion from its reported progress and from
//! the durations observed so far, and poll just after it, within bounds.
//!
//! The aim is one or two detail calls per stage: a call before completion is wasted quota, a
//! call long after it is wasted wall time (and, for renders, output-URL lifetime).

use std::time::Duration;

/// Bounds and first guesses of the polling schedule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PollPolicy {
    /// Never poll the same record more often than this.
    pub min: Duration,
    /// Never leave a record unpolled longer than this.
    pub max: Duration,
    /// Expected stage duration before any has been observed.
    pub initial_guess: Duration,
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
    /// Delay from submission to the first poll, in seconds.
    first_poll_secs: f64,
    /// How many stages can be under way together (the concurrency): a wave of first polls
    /// that report together shares one feedback step.
    wave: usize,
}

/// How fast the first-poll delay follows the feedback (log-scale step per wave of polls).
const FIRST_POLL_STEP: f64 = 0.15;

impl PollPlanner {
    /// `wave`: how many stages can be under way at once (the concurrency).
    pub fn new(policy: PollPolicy, wave: usize) -> PollPlanner {
        PollPlanner {
            policy,
            count: 0,
            mean_secs: 0.0,
            m2: 0.0,
            first_poll_secs: policy.initial_guess.as_secs_f64(),
            wave: wave.max(1),
        }
    }

    /// A stage was seen finished `took` after its submission (an upper bound of its
    /// duration: it finished at some point before the poll that saw it).
    pub fn record(&mut self, took: Duration) {
        let x = took.as_secs_f64();
        self.count += 1;
        let delta = x - self.mean_secs;
        self.mean_secs += delta / f64::from(self.count);
        self.m2 += delta * (x - self.mean_secs);
        if self.count == 1 {
            // The first duration seen replaces the initial guess, however far off it was.
            self.first_poll_secs = x;
        }
    }

    /// The first poll of a stage found it finished, or not. `wanted` is the share of first
    /// polls that should find it finished (0.5–0.95). Stages submitted together report
    /// together, before any of them could try a new delay: a wave shares one step, or 16
    /// stages would move the delay 16 steps at once and it would swing from far too early to
    /// far too late.
    pub fn first_poll_found(&mut self, finished: bool, wanted: f64) {
        let hit = if finished { 1.0 } else { 0.0 };
        let step = FIRST_POLL_STEP / self.wave as f64;
        self.first_poll_secs *= (step * (wanted - hit)).exp();
        self.first_poll_secs = self
            .first_poll_secs
            .clamp(self.policy.min.as_secs_f64(), self.policy.max.as_secs_f64());
    }

    /// Mean observed duration, if any was observed.
    pub fn mean(&self) -> Option<Duration> {
        (self.count > 0).then(|| Duration::from_secs_f64(self.mean_secs))
    }

    /// A duration that most stages finish within: mean plus one standard deviation, or the
    /// initial guess before anything was observed.
    pub fn typical(&self) -> Duration {
        match self.count {
            0 => self.policy.initial_guess,
            1 => Duration::from_secs_f64(self.mean_secs * 1.1),
            n => {
                let std = (self.m2 / f64::from(n - 1)).sqrt();
                Duration::from_secs_f64(self.mean_secs + std)
            }
        }
    }

    /// When to poll a stage for the first time, counted from its submission.
    pub fn first_poll(&self) -> Duration {
        Duration::from_secs_f64(self.first_poll_secs)
    }

    /// How long to wait before the next poll of a stage submitted `elapsed` ago that last
    /// reported `progress` (0–100). `jitter` in [0, 1) spreads polls of simultaneous stages.
    pub fn next_delay(&self, elapsed: Duration, progress: f64, jitter: f64) -> Duration {
        let elapsed_secs = elapsed.as_secs_f64();
        let first = self.first_poll_secs;
        let expected_total = if progress > 2.0 && progress < 100.0 && elapsed_secs > 0.0 {
            // Linear extrapolation from progress, tempered by what was observed; the further
            // along the stage is, the more its own progress is trusted.
            let extrapolated = elapsed_secs * 100.0 / progress;
            if self.count >= 3 {
                let trust = progress / 100.0;
                trust * extrapolated + (1.0 - trust) * first.max(elapsed_secs)
            } else {
                extrapolated
            }
        } else if elapsed_secs < first {
            first
        } else {
            // Overdue and no usable progress: back off geometrically.
            elapsed_secs * 1.5
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

    fn policy() -> PollPolicy {
        PollPolicy {
            min: Duration::from_millis(100),
            max: Duration::from_secs(60),
            initial_guess: Duration::from_secs(10),
        }
    }

    #[test]
    fn first_poll_uses_the_initial_guess() {
        let planner = PollPlanner::new(policy(), 16);
        let delay = planner.next_delay(Duration::ZERO, 0.0, 0.0);
        assert!(
            delay >= Duration::from_secs(10) && delay <= Duration::from_secs(11),
            "{delay:?}"
        );
    }

    #[test]
    fn progress_extrapolates_to_completion() {
        let planner = PollPlanner::new(policy(), 16);
        // 40 % after 4 s: done at about 10 s, so wait about 6 s.
        let delay = planner.next_delay(Duration::from_secs(4), 40.0, 0.0);
        assert!(
            delay >= Duration::from_secs(6) && delay <= Duration::from_millis(6500),
            "{delay:?}"
        );
    }

    #[test]
    fn observed_durations_replace_the_guess() {
        let mut planner = PollPlanner::new(policy(), 16);
        for secs in [20, 22, 18, 20] {
            planner.record(Duration::from_secs(secs));
        }
        assert_eq!(planner.mean(), Some(Duration::from_secs(20)));
        // The first duration seen replaced the initial guess of 10 s.
        let delay = planner.next_delay(Duration::ZERO, 0.0, 0.0);
        assert_eq!(delay, Duration::from_secs(20));
    }

    #[test]
    fn the_first_poll_settles_near_the_wanted_share_of_finished_stages() {
        let mut planner = PollPlanner::new(
            PollPolicy {
                min: Duration::from_millis(10),
                max: Duration::from_secs(60),
                initial_guess: Duration::from_secs(2),
            },
            16,
        );
        planner.record(Duration::from_millis(700));
        assert_eq!(planner.first_poll(), Duration::from_millis(700));
        // Waves of 16 stages lasting 0.4–0.6 s (evenly spread), each wave polled once at the
        // planner's delay and reporting together.
        let durations: Vec<f64> = (0..16)
            .map(|i| 0.4 + 0.2 * (i as f64 + 0.5) / 16.0)
            .collect();
        let (mut hits, mut polls) = (0, 0);
        for wave in 0..120 {
            let delay = planner.first_poll().as_secs_f64();
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
        let delay = planner.first_poll().as_secs_f64();
        assert!((0.5..=0.58).contains(&delay), "{delay}");
    }

    #[test]
    fn overdue_stages_back_off_and_bounds_hold() {
        let planner = PollPlanner::new(policy(), 16);
        let overdue = planner.next_delay(Duration::from_secs(30), 0.0, 0.0);
        assert!(overdue >= Duration::from_secs(15), "{overdue:?}");
        let capped = planner.next_delay(Duration::from_secs(600), 0.0, 0.0);
        assert_eq!(capped, Duration::from_secs(60));
        let done_soon = planner.next_delay(Duration::from_secs(10), 99.9, 0.0);
        assert!(done_soon >= Duration::from_millis(100), "{done_soon:?}");
    }
}
