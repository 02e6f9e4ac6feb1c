//! What a person sees while a run works: on a terminal an indicatif line (per-state counts,
//! done/total, ETA, request rate, cool-downs); off a terminal (cron) a one-line log summary
//! every few seconds. When no request went out since the last look, the line says what the
//! run waits for (renders at the service and the next poll, an outage) instead of a rate of
//! zero that looks hung.
//!
//! The total leaves out invalid rows: they never enter the pipeline, and counting them would
//! keep the bar short of its end.

use std::collections::{BTreeMap, VecDeque};
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
    /// Analyses at the service (a video's analysis, shared by its jobs).
    pub analyses_at_service: usize,
    /// When the next poll (or any other timed call) is due, if one is planned.
    pub next_poll_in: Option<Duration>,
}

/// The request rate is measured over this long: over a few seconds the `--burst` allowance
/// shows as a rate above the limit, which the limiter keeps over any longer span.
const RATE_WINDOW: Duration = Duration::from_secs(60);

/// The progress display of one run.
pub struct Progress {
    bar: Option<ProgressBar>,
    started: Instant,
    done_at_start: Option<usize>,
    /// (when, API calls so far), oldest first, over the last [`RATE_WINDOW`].
    calls: VecDeque<(Instant, u64)>,
    /// API calls when the previous line was shown: none since means the run is waiting.
    calls_before: u64,
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
            calls: VecDeque::from([(Instant::now(), 0)]),
            calls_before: 0,
            last_line: None,
            line_every,
        }
    }

    pub fn update(&mut self, figures: &ProgressFigures) {
        let invalid = figures.states.get(&JobState::Invalid).copied().unwrap_or(0);
        let total: usize = figures.states.values().sum::<usize>() - invalid;
        let done = figures.states.get(&JobState::Done).copied().unwrap_or(0);
        let done_at_start = *self.done_at_start.get_or_insert(done);
        let now = Instant::now();
        let request_rate = self.request_rate(now, figures.api_calls, figures.effective_rate);
        // No request since the line before this one (a log line every few seconds, or the
        // bar's previous refresh).
        let waiting = figures.api_calls == self.calls_before;

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
        match (waiting, waiting_for(figures), request_rate) {
            (true, Some(what), _) => message.push_str(&format!(" | {what}")),
            (_, _, Some(request_rate)) => {
                message.push_str(&format!(" | {request_rate:.1} req/s"));
                if figures.effective_rate.is_finite() {
                    message.push_str(&format!(" (limit {:.1})", figures.effective_rate));
                }
            }
            // Too early for a rate to mean anything.
            (_, _, None) => {}
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
                self.calls_before = figures.api_calls;
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
                    self.calls_before = figures.api_calls;
                    tracing::info!("{done}/{total} done | {message}");
                }
            }
        }
    }

    /// API requests per second over the last [`RATE_WINDOW`] (or since the start), never shown
    /// above `limit`: the limiter lets `--burst` requests out at once, which over a short
    /// span reads as a rate above the limit although the pace over any longer span is not.
    /// `None` during the first second, when a rate would mean nothing.
    fn request_rate(&mut self, now: Instant, calls: u64, limit: f64) -> Option<f64> {
        self.calls.push_back((now, calls));
        while self.calls.len() > 2
            && self
                .calls
                .get(1)
                .is_some_and(|(at, _)| now.duration_since(*at) >= RATE_WINDOW)
        {
            self.calls.pop_front();
        }
        let (since, calls_then) = self.calls.front().copied().unwrap_or((now, calls));
        let window = now.duration_since(since).as_secs_f64();
        if window < 1.0 {
            return None;
        }
        let rate = calls.saturating_sub(calls_then) as f64 / window;
        Some(if limit.is_finite() {
            rate.min(limit)
        } else {
            rate
        })
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
            crate::logging::set_progress_bar(None);
        }
    }
}

/// What a run that sent no request since the last look is waiting for: "waiting for 12
/// renders at the service, next poll in 41s"; `None` when nothing is at the service.
fn waiting_for(figures: &ProgressFigures) -> Option<String> {
    let count = |state: JobState| figures.states.get(&state).copied().unwrap_or(0);
    let plural = |n: usize, one: &str, many: &str| {
        if n == 1 {
            format!("1 {one}")
        } else {
            format!("{n} {many}")
        }
    };
    let mut parts = Vec::new();
    let renders = count(JobState::Rendering) + count(JobState::Submitting);
    if renders > 0 {
        parts.push(plural(renders, "render", "renders"));
    }
    if figures.analyses_at_service > 0 {
        parts.push(plural(figures.analyses_at_service, "analysis", "analyses"));
    }
    let downloads = count(JobState::Downloading);
    let mut text = if parts.is_empty() {
        if downloads == 0 {
            return None;
        }
        format!("waiting for {}", plural(downloads, "download", "downloads"))
    } else {
        format!("waiting for {} at the service", parts.join(" and "))
    };
    if let Some(next) = figures.next_poll_in.filter(|_| !parts.is_empty()) {
        text.push_str(&format!(
            ", next poll in {}",
            humantime::format_duration(Duration::from_secs(next.as_secs().max(1)))
        ));
    }
    Some(text)
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_is_taken_over_a_minute_and_never_shown_above_the_limit() {
        let mut progress = Progress::new(false, Duration::from_secs(10));
        let start = progress.calls[0].0;
        let at = |seconds: f64| start + Duration::from_secs_f64(seconds);
        assert_eq!(progress.request_rate(at(0.5), 3, 2.0), None, "too early");
        assert_eq!(
            progress.request_rate(at(2.0), 5, 2.0),
            Some(2.0),
            "a burst of 5 in 2 s is shown at the limit, not as 2.5"
        );
        assert_eq!(progress.request_rate(at(30.0), 50, 2.0), Some(50.0 / 30.0));
        assert_eq!(
            progress.request_rate(at(90.0), 140, 2.0),
            Some(1.5),
            "over the last minute"
        );
        assert_eq!(
            progress.request_rate(at(91.0), 150, f64::INFINITY),
            Some(100.0 / 61.0)
        );
    }

    #[test]
    fn a_run_that_sends_nothing_says_what_it_waits_for() {
        let figures = |rendering: usize, downloading: usize, analyses: usize| ProgressFigures {
            states: [
                (JobState::Rendering, rendering),
                (JobState::Downloading, downloading),
                (JobState::Pending, 3),
            ]
            .into_iter()
            .collect(),
            api_calls: 10,
            throttled: 0,
            effective_rate: 2.0,
            cooling_for: None,
            outage: None,
            wave: None,
            analyses_at_service: analyses,
            next_poll_in: Some(Duration::from_millis(41_300)),
        };
        assert_eq!(
            waiting_for(&figures(12, 0, 0)).as_deref(),
            Some("waiting for 12 renders at the service, next poll in 41s")
        );
        assert_eq!(
            waiting_for(&figures(1, 0, 2)).as_deref(),
            Some("waiting for 1 render and 2 analyses at the service, next poll in 41s")
        );
        assert_eq!(
            waiting_for(&figures(0, 2, 0)).as_deref(),
            Some("waiting for 2 downloads")
        );
        assert_eq!(waiting_for(&figures(0, 0, 0)), None);
    }
}
