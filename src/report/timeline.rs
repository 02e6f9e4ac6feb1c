//! The batch's timeline as an inline SVG, and where the time went.
//!
//! Each job's life is cut into stages from its milestones: waiting (ingested, its video not yet
//! sent for analysis), analysing, queued (analysed, waiting for a render slot), rendering and
//! downloading. A small batch gets one row per job; a large one a cumulative-flow chart (how
//! many jobs were in each stage at each moment), so the SVG's size does not grow with the
//! batch. Pure computation and markup from `ReportData`: no I/O. Every text in the SVG goes
//! through maud and is escaped like the rest of the page.

use maud::{Markup, html};

use super::data::{ReportData, ReportJob};
use super::format::{count, duration};
use crate::job::JobState;

/// The stages a job's time is cut into, in pipeline order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Waiting,
    Analysing,
    Queued,
    Rendering,
    Downloading,
}

impl Stage {
    pub const ALL: [Stage; 5] = [
        Stage::Waiting,
        Stage::Analysing,
        Stage::Queued,
        Stage::Rendering,
        Stage::Downloading,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Waiting => "waiting",
            Stage::Analysing => "analysing",
            Stage::Queued => "queued",
            Stage::Rendering => "rendering",
            Stage::Downloading => "downloading",
        }
    }

    /// What the stage means, for the legend.
    pub fn meaning(self) -> &'static str {
        match self {
            Stage::Waiting => "ingested, video not yet sent for analysis",
            Stage::Analysing => "the service detects the people in the video",
            Stage::Queued => "analysed, waiting for a render slot",
            Stage::Rendering => "the service renders the swap",
            Stage::Downloading => "fetching the finished file",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One stretch of a job's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub stage: Stage,
    pub start_ms: u64,
    pub end_ms: u64,
}

/// A job's stages in order, from its milestones. A job still at work ends at `now_ms`; one
/// that never ran (invalid) has none. Milestones out of order (an analysis shared with a job
/// ingested later) are clamped, never drawn backwards.
pub fn spans(job: &ReportJob, now_ms: u64) -> Vec<Span> {
    let times = &job.times;
    let end = if job.state.is_final() {
        times.finished_ms.unwrap_or(times.updated_ms)
    } else {
        now_ms.max(times.updated_ms)
    };
    let starts = [
        (Stage::Waiting, Some(times.created_ms)),
        (Stage::Analysing, times.analysis_submitted_ms),
        (Stage::Queued, times.analysis_finished_ms),
        (Stage::Rendering, times.submitted_ms),
        (Stage::Downloading, times.rendered_ms),
    ];
    let mut known: Vec<(Stage, u64)> = Vec::new();
    let mut floor = times.created_ms;
    for (stage, start) in starts {
        if let Some(start) = start {
            // A later stage reached means every earlier one ended; an analysis that finished
            // after this job's render began (impossible in order) is dropped, not drawn.
            let start = start.max(floor).min(end);
            known.retain(|(_, earlier)| *earlier <= start);
            known.push((stage, start));
            floor = start;
        }
    }
    let mut result = Vec::new();
    for (index, (stage, start)) in known.iter().enumerate() {
        let stop = known.get(index + 1).map_or(end, |(_, next)| *next);
        if stop > *start {
            result.push(Span {
                stage: *stage,
                start_ms: *start,
                end_ms: stop,
            });
        }
    }
    result
}

/// The timeline section's figure: per-job rows or aggregated lanes, then the legend.
pub fn figure(data: &ReportData) -> Markup {
    let mut lives: Vec<(&ReportJob, Vec<Span>)> = data
        .jobs
        .iter()
        .map(|job| (job, spans(job, data.generated_ms)))
        .filter(|(_, spans)| !spans.is_empty())
        .collect();
    // In the order work began on them: a batch is ingested at once, so by when each job left
    // its first stage.
    lives.sort_by_key(|(job, spans)| {
        let began = spans
            .iter()
            .find(|span| span.stage != Stage::Waiting)
            .map_or(spans[spans.len() - 1].end_ms, |span| span.start_ms);
        (spans[0].start_ms, began, job.id.clone())
    });
    if lives.is_empty() {
        return html! { p.muted { "No job has started yet." } };
    }
    let start = lives
        .iter()
        .map(|(_, spans)| spans[0].start_ms)
        .min()
        .unwrap_or(0);
    let end = lives
        .iter()
        .filter_map(|(_, spans)| spans.last().map(|span| span.end_ms))
        .max()
        .unwrap_or(start);
    let axis = Axis::new(start, end);
    let aggregated = lives.len() > data.limits.timeline_rows;
    html! {
        @if !aggregated {
            (rows(&lives, &axis))
        } @else {
            p.muted {
                (count(lives.len())) " jobs ran: each band shows how many were in a stage at each moment "
                "(one row per job up to " (count(data.limits.timeline_rows)) " jobs)."
            }
            (lanes(&lives, &axis))
        }
        (legend(aggregated))
        (stage_table(&lives))
    }
}

/// The horizontal scale shared by both charts.
struct Axis {
    start_ms: u64,
    span_ms: u64,
}

/// Width of the SVG's coordinate system; the plot starts after the labels.
const WIDTH: f64 = 1000.0;
const LABEL_WIDTH: f64 = 180.0;
const PLOT_RIGHT: f64 = 985.0;

impl Axis {
    fn new(start_ms: u64, end_ms: u64) -> Axis {
        Axis {
            start_ms,
            span_ms: end_ms.saturating_sub(start_ms).max(1000),
        }
    }

    fn x(&self, at_ms: u64) -> f64 {
        let fraction = at_ms.saturating_sub(self.start_ms) as f64 / self.span_ms as f64;
        LABEL_WIDTH + fraction.min(1.0) * (PLOT_RIGHT - LABEL_WIDTH)
    }

    /// Round tick steps giving five to ten ticks.
    fn ticks(&self) -> Vec<u64> {
        const STEPS_MS: [u64; 20] = [
            100, 200, 500, 1_000, 2_000, 5_000, 10_000, 15_000, 30_000, 60_000, 120_000, 300_000,
            600_000, 900_000, 1_800_000, 3_600_000, 7_200_000, 10_800_000, 21_600_000, 43_200_000,
        ];
        let step = STEPS_MS
            .into_iter()
            .find(|step| self.span_ms / step <= 8)
            .unwrap_or(86_400_000);
        (0..=self.span_ms / step)
            .map(|index| index * step)
            .collect()
    }

    fn grid(&self, top: f64, bottom: f64) -> Markup {
        html! {
            @for offset in self.ticks() {
                @let x = self.x(self.start_ms + offset);
                line.grid x1=(px(x)) x2=(px(x)) y1=(px(top)) y2=(px(bottom)) {}
                text.tick x=(px(x)) y=(px(top - 6.0)) text-anchor="middle" { (duration(offset)) }
            }
        }
    }
}

const ROW_HEIGHT: f64 = 18.0;
const TOP: f64 = 24.0;

/// One row per job: its stages as coloured bars, its outcome as a dot at the end.
fn rows(lives: &[(&ReportJob, Vec<Span>)], axis: &Axis) -> Markup {
    let height = TOP + ROW_HEIGHT * lives.len() as f64 + 6.0;
    html! {
        svg.timeline viewBox={ "0 0 " (WIDTH) " " (px(height)) } role="img"
            aria-label="Timeline: one row per job" preserveAspectRatio="xMinYMin meet" {
            (axis.grid(TOP, height - 4.0))
            @for (index, (job, spans)) in lives.iter().enumerate() {
                @let y = TOP + ROW_HEIGHT * index as f64;
                g {
                    title { (row_title(job, spans)) }
                    text.label x=(px(LABEL_WIDTH - 8.0)) y=(px(y + 12.5)) text-anchor="end" {
                        (shorten(&job.id, 24))
                    }
                    @for span in spans {
                        @let x = axis.x(span.start_ms);
                        rect class={ "st-" (span.stage.name()) } x=(px(x)) y=(px(y + 4.0))
                            width=(px((axis.x(span.end_ms) - x).max(1.5))) height="11" rx="2" {}
                    }
                    @if job.state.is_final() {
                        @if let Some(last) = spans.last() {
                            circle class={ "end s-" (job.state.as_str()) }
                                cx=(px(axis.x(last.end_ms))) cy=(px(y + 9.5)) r="4" {}
                        }
                    }
                }
            }
        }
    }
}

/// Where a job's time went, as the row's tooltip.
fn row_title(job: &ReportJob, spans: &[Span]) -> String {
    let stages: Vec<String> = spans
        .iter()
        .map(|span| {
            format!(
                "{} {}",
                span.stage.name(),
                duration(span.end_ms - span.start_ms)
            )
        })
        .collect();
    format!("{} ({}): {}", job.id, job.state, stages.join(", "))
}

/// The bands of the cumulative-flow chart, bottom to top.
#[derive(Clone, Copy)]
enum Band {
    Done,
    Ended,
    Stage(Stage),
}

const BUCKETS: usize = 120;
const LANES_HEIGHT: f64 = 220.0;

/// How many jobs were in each stage at each of [`BUCKETS`] moments, stacked: finished jobs at
/// the bottom, then the other final states, then each stage.
fn lanes(lives: &[(&ReportJob, Vec<Span>)], axis: &Axis) -> Markup {
    let bands: Vec<Band> = [Band::Done, Band::Ended]
        .into_iter()
        .chain(Stage::ALL.into_iter().rev().map(Band::Stage))
        .collect();
    // counts[bucket][band]
    let mut counts = vec![[0usize; 7]; BUCKETS + 1];
    for (bucket, row) in counts.iter_mut().enumerate() {
        let at = axis.start_ms + (axis.span_ms as f64 * bucket as f64 / BUCKETS as f64) as u64;
        for (job, spans) in lives {
            if let Some(band) = band_at(job, spans, at) {
                let index = match band {
                    Band::Done => 0,
                    Band::Ended => 1,
                    Band::Stage(stage) => 6 - stage.index(),
                };
                row[index] += 1;
            }
        }
    }
    let total = lives.len().max(1) as f64;
    let plot_top = TOP;
    let plot_bottom = TOP + LANES_HEIGHT;
    let y = |jobs: usize| plot_bottom - (jobs as f64 / total) * LANES_HEIGHT;
    let x =
        |bucket: usize| LABEL_WIDTH + (PLOT_RIGHT - LABEL_WIDTH) * bucket as f64 / BUCKETS as f64;
    let mut below = vec![0usize; BUCKETS + 1];
    let mut paths = Vec::new();
    for (index, band) in bands.iter().enumerate() {
        let above: Vec<usize> = below
            .iter()
            .zip(&counts)
            .map(|(low, row)| low + row[index])
            .collect();
        let mut path = String::new();
        // Along the top edge left to right, back along the bottom edge.
        for (bucket, jobs) in above.iter().enumerate() {
            let command = if bucket == 0 { 'M' } else { 'L' };
            path.push_str(&format!("{command}{} {} ", px(x(bucket)), px(y(*jobs))));
        }
        for (bucket, jobs) in below.iter().enumerate().rev() {
            path.push_str(&format!("L{} {} ", px(x(bucket)), px(y(*jobs))));
        }
        path.push('Z');
        let class = match band {
            Band::Done => "end-band s-done".to_string(),
            Band::Ended => "end-band s-failed".to_string(),
            Band::Stage(stage) => format!("st-{}", stage.name()),
        };
        paths.push((class, path));
        below = above;
    }
    let height = plot_bottom + 8.0;
    html! {
        svg.timeline viewBox={ "0 0 " (WIDTH) " " (px(height)) } role="img"
            aria-label="Timeline: jobs per stage over time" preserveAspectRatio="xMinYMin meet" {
            (axis.grid(plot_top, plot_bottom))
            text.label x=(px(LABEL_WIDTH - 8.0)) y=(px(plot_top + 10.0)) text-anchor="end" {
                (count(lives.len())) " jobs"
            }
            text.label x=(px(LABEL_WIDTH - 8.0)) y=(px(plot_bottom)) text-anchor="end" { "0" }
            @for (class, path) in &paths {
                path class=(class) d=(path) {}
            }
        }
    }
}

/// Which band a job is in at `at_ms`: `None` before it was ingested.
fn band_at(job: &ReportJob, spans: &[Span], at_ms: u64) -> Option<Band> {
    if at_ms < spans.first()?.start_ms {
        return None;
    }
    if let Some(span) = spans.iter().find(|span| at_ms < span.end_ms) {
        return Some(Band::Stage(span.stage));
    }
    Some(match job.state {
        JobState::Done => Band::Done,
        state if state.is_final() => Band::Ended,
        // Still at work: its last stage runs on to the end of the chart.
        _ => Band::Stage(spans.last()?.stage),
    })
}

/// The stages' colours, then the outcomes': one dot per final state on rows, two bands in
/// the aggregated chart.
fn legend(aggregated: bool) -> Markup {
    const OUTCOMES: [JobState; 5] = [
        JobState::Done,
        JobState::Failed,
        JobState::NeedsMapping,
        JobState::Expired,
        JobState::Held,
    ];
    html! {
        ul.legend {
            @for stage in Stage::ALL {
                li title=(stage.meaning()) {
                    span class={ "swatch st-" (stage.name()) } {}
                    (stage.name())
                }
            }
            @if aggregated {
                li { span.swatch.end-band.s-done {} "done" }
                li { span.swatch.end-band.s-failed {} "ended otherwise (failed, needs mapping, expired, held)" }
            } @else {
                @for state in OUTCOMES {
                    li { span class={ "dot s-" (state.as_str()) } {} (state.as_str().replace('_', " ")) }
                }
            }
        }
    }
}

/// Per stage: how many jobs went through it, the median and 90th percentile of its duration,
/// and its share of all the time jobs spent.
fn stage_table(lives: &[(&ReportJob, Vec<Span>)]) -> Markup {
    let mut durations: Vec<Vec<u64>> = vec![Vec::new(); Stage::ALL.len()];
    for (_, spans) in lives {
        for span in spans {
            durations[span.stage.index()].push(span.end_ms - span.start_ms);
        }
    }
    for list in &mut durations {
        list.sort_unstable();
    }
    let grand_total: u64 = durations.iter().flatten().sum::<u64>().max(1);
    html! {
        table.stages {
            thead { tr { th { "stage" } th.num { "jobs" } th.num { "median" } th.num { "90th percentile" } th { "share of the time" } } }
            tbody {
                @for stage in Stage::ALL {
                    @let list = &durations[stage.index()];
                    @if !list.is_empty() {
                        @let share = list.iter().sum::<u64>() as f64 / grand_total as f64;
                        tr {
                            td { span class={ "swatch st-" (stage.name()) } {} (stage.name()) }
                            td.num { (count(list.len())) }
                            td.num { (duration(percentile(list, 50))) }
                            td.num { (duration(percentile(list, 90))) }
                            td {
                                span.share {
                                    span class={ "fill st-" (stage.name()) }
                                        style={ "width:" (format!("{:.1}", share * 100.0)) "%" } {}
                                }
                                (format!("{:.0} %", share * 100.0))
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The `pct`th percentile of sorted values (nearest rank).
fn percentile(sorted: &[u64], pct: usize) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (sorted.len() * pct).div_ceil(100).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// A coordinate with one decimal: enough for a 1000-unit-wide chart, and short.
fn px(value: f64) -> String {
    let rounded = (value * 10.0).round() / 10.0;
    if rounded.fract() == 0.0 {
        format!("{}", rounded as i64)
    } else {
        format!("{rounded:.1}")
    }
}

/// At most `max` characters, with an ellipsis when cut (SVG text does not wrap or clip).
fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut short: String = text.chars().take(max - 1).collect();
    short.push('…');
    short
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::data::ReportTimes;

    fn job(state: JobState, times: ReportTimes) -> ReportJob {
        ReportJob {
            id: "j".into(),
            state,
            line: 2,
            video_url: String::new(),
            faces: Vec::new(),
            extra: Vec::new(),
            subjects: Vec::new(),
            analysis_id: None,
            task_id: None,
            output: None,
            bytes: None,
            error_code: None,
            error: None,
            possible_duplicate: false,
            render_failed: false,
            row_changed: false,
            attempts: 0,
            times,
        }
    }

    fn stages(spans: &[Span]) -> Vec<(Stage, u64, u64)> {
        spans
            .iter()
            .map(|span| (span.stage, span.start_ms, span.end_ms))
            .collect()
    }

    #[test]
    fn a_finished_job_goes_through_every_stage() {
        let times = ReportTimes {
            created_ms: 1_000,
            analysis_submitted_ms: Some(2_000),
            analysis_finished_ms: Some(5_000),
            submitted_ms: Some(6_000),
            rendered_ms: Some(16_000),
            finished_ms: Some(17_000),
            updated_ms: 17_000,
        };
        assert_eq!(
            stages(&spans(&job(JobState::Done, times), 99_000)),
            [
                (Stage::Waiting, 1_000, 2_000),
                (Stage::Analysing, 2_000, 5_000),
                (Stage::Queued, 5_000, 6_000),
                (Stage::Rendering, 6_000, 16_000),
                (Stage::Downloading, 16_000, 17_000),
            ]
        );
    }

    #[test]
    fn shared_analyses_unknown_times_and_running_jobs_are_clamped() {
        // The video was analysed before this job was ingested: no waiting, no analysing.
        let times = ReportTimes {
            created_ms: 10_000,
            analysis_submitted_ms: Some(2_000),
            analysis_finished_ms: Some(5_000),
            submitted_ms: Some(12_000),
            updated_ms: 12_000,
            ..ReportTimes::default()
        };
        assert_eq!(
            stages(&spans(&job(JobState::Rendering, times), 20_000)),
            [
                (Stage::Queued, 10_000, 12_000),
                (Stage::Rendering, 12_000, 20_000)
            ]
        );
        // An invalid job never ran.
        let times = ReportTimes {
            created_ms: 10_000,
            updated_ms: 10_000,
            ..ReportTimes::default()
        };
        assert!(spans(&job(JobState::Invalid, times), 20_000).is_empty());
    }

    #[test]
    fn percentiles_and_ticks() {
        assert_eq!(percentile(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 50), 5);
        assert_eq!(percentile(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 90), 9);
        assert_eq!(percentile(&[7], 90), 7);
        let axis = Axis::new(0, 95_000);
        assert_eq!(
            axis.ticks(),
            [0, 15_000, 30_000, 45_000, 60_000, 75_000, 90_000]
        );
        assert_eq!(shorten("abcdef", 4), "abc…");
    }
}
