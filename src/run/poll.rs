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

/// Predicts stage durations from the ones observed (Welford's running mean and variance).
#[derive(Debug, Clone)]
pub struct PollPlanner {
    policy: PollPolicy,
    count: u32,
    mean_secs: f64,
    m2: f64,
}

impl PollPlanner {
    pub fn new(policy: PollPolicy) -> PollPlanner {
        PollPlanner {
            policy,
            count: 0,
            mean_secs: 0.0,
            m2: 0.0,
        }
    }

    /// A stage took `took` from submission to completion.
    pub fn record(&mut self, took: Duration) {
        let x = took.as_secs_f64();
        self.count += 1;
        let delta = x - self.mean_secs;
        self.mean_secs += delta / f64::from(self.count);
        self.m2 += delta * (x - self.mean_secs);
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

    /// When to poll a stage that has not reported usable progress yet: a little after the
    /// mean (mean + half a standard deviation, about the 70th percentile). Most stages are
    /// then finished at the first poll; the rest report progress, and the second poll lands
    /// on their extrapolated completion. Waiting for nearly all of them (mean + one standard
    /// deviation) would idle every early finisher at the service's slot for longer.
    pub fn first_poll_target(&self) -> Duration {
        match self.count {
            0 => self.policy.initial_guess,
            1 => Duration::from_secs_f64(self.mean_secs * 1.05),
            n => {
                let std = (self.m2 / f64::from(n - 1)).sqrt();
                Duration::from_secs_f64(self.mean_secs + 0.5 * std)
            }
        }
    }

    /// How long to wait before the next poll of a stage submitted `elapsed` ago that last
    /// reported `progress` (0–100). `jitter` in [0, 1) spreads polls of simultaneous stages.
    pub fn next_delay(&self, elapsed: Duration, progress: f64, jitter: f64) -> Duration {
        let elapsed_secs = elapsed.as_secs_f64();
        let typical = self.first_poll_target().as_secs_f64();
        let expected_total = if progress > 2.0 && progress < 100.0 && elapsed_secs > 0.0 {
            // Linear extrapolation from progress, tempered by what was observed; the further
            // along the stage is, the more its own progress is trusted.
            let extrapolated = elapsed_secs * 100.0 / progress;
            if self.count >= 3 {
                let trust = progress / 100.0;
                trust * extrapolated + (1.0 - trust) * typical.max(elapsed_secs)
            } else {
                extrapolated
            }
        } else if elapsed_secs < typical {
            typical
        } else {
            // Overdue and no usable progress: back off geometrically.
            elapsed_secs * 1.5
        };
        let remaining = (expected_total - elapsed_secs).max(0.0);
        // Land slightly after the predicted completion rather than slightly before it.
        let margin = 0.03 * expected_total;
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
        let planner = PollPlanner::new(policy());
        let delay = planner.next_delay(Duration::ZERO, 0.0, 0.0);
        assert!(
            delay >= Duration::from_secs(10) && delay <= Duration::from_secs(11),
            "{delay:?}"
        );
    }

    #[test]
    fn progress_extrapolates_to_completion() {
        let planner = PollPlanner::new(policy());
        // 40 % after 4 s: done at about 10 s, so wait about 6 s.
        let delay = planner.next_delay(Duration::from_secs(4), 40.0, 0.0);
        assert!(
            delay >= Duration::from_secs(6) && delay <= Duration::from_millis(6500),
            "{delay:?}"
        );
    }

    #[test]
    fn observed_durations_replace_the_guess() {
        let mut planner = PollPlanner::new(policy());
        for secs in [20, 22, 18, 20] {
            planner.record(Duration::from_secs(secs));
        }
        assert_eq!(planner.mean(), Some(Duration::from_secs(20)));
        let delay = planner.next_delay(Duration::ZERO, 0.0, 0.0);
        assert!(
            delay > Duration::from_secs(20) && delay < Duration::from_secs(24),
            "{delay:?}"
        );
    }

    #[test]
    fn overdue_stages_back_off_and_bounds_hold() {
        let planner = PollPlanner::new(policy());
        let overdue = planner.next_delay(Duration::from_secs(30), 0.0, 0.0);
        assert!(overdue >= Duration::from_secs(15), "{overdue:?}");
        let capped = planner.next_delay(Duration::from_secs(600), 0.0, 0.0);
        assert_eq!(capped, Duration::from_secs(60));
        let done_soon = planner.next_delay(Duration::from_secs(10), 99.9, 0.0);
        assert!(done_soon >= Duration::from_millis(100), "{done_soon:?}");
    }
}
