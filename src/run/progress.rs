//! What a person sees while a run works: on a terminal an indicatif line (per-state counts,
//! done/total, ETA, request rate, cool-downs); off a terminal (cron) a one-line log summary
//! every few seconds.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::job::JobState;

/// The numbers shown, gathered by the dispatcher at each tick.
#[derive(Debug, Clone)]
pub struct ProgressFigures {
    pub states: BTreeMap<JobState, usize>,
    pub api_calls: u64,
    pub throttled: u64,
    pub effective_rate: f64,
    pub cooling_for: Option<Duration>,
    /// The API is down: the run waits and probes it.
    pub outage: Option<crate::view::ServiceOutage>,
    /// How long a wave of renders takes and how many jobs make a wave, once learned.
    pub wave: Option<(Duration, usize)>,
}

/// The progress display of one run.
pub struct Progress {
    bar: Option<ProgressBar>,
    started: Instant,
    done_at_start: Option<usize>,
    last_calls: (Instant, u64),
    request_rate: f64,
    last_line: Option<Instant>,
    line_every: Duration,
}

impl Progress {
    /// A bar when `interactive` (stderr is a terminal and the user did not opt out), log lines
    /// otherwise.
    pub fn new(interactive: bool, line_every: Duration) -> Progress {
        let bar = interactive.then(|| {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("{bar:30} {pos}/{len} done  {msg}")
                    .expect("a valid template")
                    .progress_chars("=> "),
            );
            crate::logging::set_progress_bar(Some(bar.clone()));
            bar
        });
        Progress {
            bar,
            started: Instant::now(),
            done_at_start: None,
            last_calls: (Instant::now(), 0),
            request_rate: 0.0,
            last_line: None,
            line_every,
        }
    }

    pub fn update(&mut self, figures: &ProgressFigures) {
        let total: usize = figures.states.values().sum();
        let done = figures.states.get(&JobState::Done).copied().unwrap_or(0);
        let done_at_start = *self.done_at_start.get_or_insert(done);
        let now = Instant::now();
        let (since, calls_then) = self.last_calls;
        let window = now.duration_since(since).as_secs_f64();
        // A rate over a very short window is noise; keep the previous one until a second passed.
        if window >= 1.0 {
            self.request_rate = (figures.api_calls - calls_then) as f64 / window;
            self.last_calls = (now, figures.api_calls);
        }
        let request_rate = self.request_rate;

        let active: Vec<String> = figures
            .states
            .iter()
            .filter(|(state, count)| **count > 0 && **state != JobState::Done)
            .map(|(state, count)| format!("{state} {count}"))
            .collect();
        let finished_here = done.saturating_sub(done_at_start);
        let remaining = figures
            .states
            .iter()
            .filter(|(state, _)| !state.is_final())
            .map(|(_, count)| *count)
            .sum::<usize>();
        let eta = if remaining == 0 {
            None
        } else if finished_here > 0 {
            let per_job = self.started.elapsed().as_secs_f64() / finished_here as f64;
            Some(Duration::from_secs((per_job * remaining as f64) as u64))
        } else {
            // Nothing finished yet in this run: waves of renders of the learned duration.
            figures.wave.map(|(per_wave, jobs)| {
                let waves = remaining.div_ceil(jobs.max(1)) as u32;
                Duration::from_secs(per_wave.saturating_mul(waves).as_secs())
            })
        };
        let mut message = active.join(", ");
        if let Some(outage) = &figures.outage {
            message = format!("{} | {message}", outage.describe());
        }
        message.push_str(&format!(" | {request_rate:.1} req/s"));
        if figures.effective_rate.is_finite() {
            message.push_str(&format!(" (limit {:.1})", figures.effective_rate));
        }
        if figures.throttled > 0 {
            message.push_str(&format!(", {} throttled", figures.throttled));
        }
        if let Some(cooling) = figures.cooling_for {
            message.push_str(&format!(", cooling down {}s", cooling.as_secs() + 1));
        }
        if let Some(eta) = eta {
            message.push_str(&format!(" | ETA {}", humantime::format_duration(eta)));
        }
        match &self.bar {
            Some(bar) => {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
                bar.set_message(message);
            }
            None => {
                let due = self
                    .last_line
                    .is_none_or(|at| at.elapsed() >= self.line_every);
                if due {
                    self.last_line = Some(now);
                    tracing::info!("{done}/{total} done | {message}");
                }
            }
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
            crate::logging::set_progress_bar(None);
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}
