//! The yardsticks of the efficiency section: the lower bound of a batch's makespan, the
//! minimum number of API calls, and the makespan a client blind to the stage times could
//! expect at best. Pure arithmetic over a [`Workload`]; nothing here runs a batch.

use std::time::Duration;

use rand::{Rng, SeedableRng};

/// What a batch asks of the service, and the limits it runs under.
pub struct Workload {
    pub jobs: usize,
    pub videos: usize,
    /// `--concurrency`: analyses and renders at the service at once.
    pub concurrency: usize,
    /// `--rate` (requests per second) and the limiter's `--burst`.
    pub rate: f64,
    pub burst: f64,
    /// Nominal stage times; each drawn uniformly within ± `jitter` of them.
    pub analysis: Duration,
    pub render: Duration,
    pub jitter: f64,
}

impl Workload {
    /// The fewest API calls that can do the work: per video one analyze and one analysis
    /// detail (the analysis is shared by the video's jobs), per job one create and one task
    /// detail (the one that finds the render finished). Downloads are not API calls.
    pub fn minimum_calls(&self) -> f64 {
        2.0 * self.videos as f64 + 2.0 * self.jobs as f64
    }
}

/// The lower bound of a batch's makespan, given the stage times the service actually took.
///
/// No schedule, even one that knew every stage's time in advance, can beat any of:
/// - **rate**: the minimum calls leave at `--rate` after the limiter's burst;
/// - **slots**: every analysis and every render holds one of the `C` slots for its processing
///   time (analyses count in `--concurrency`), so the slots' total work over `C`;
/// - **chain**: no render starts before some analysis has finished, and the renders' work
///   still has to pass through the `C` slots: the shortest analysis plus the renders' work
///   over `C`. The shortest analysis is known exactly for one video; for several it is at
///   least the nominal time less the jitter (the only term not taken from the true times).
///
/// Downloads (4 KiB over loopback, milliseconds each) and the requests' own latency are left
/// out: the bound is lower than any real schedule, never higher.
pub struct Bound {
    pub seconds: f64,
    /// Which term is the largest.
    pub binds: &'static str,
}

impl Bound {
    /// `analyses_secs`, `renders_secs`: the stages' true processing times, summed.
    pub fn new(workload: &Workload, analyses_secs: f64, renders_secs: f64) -> Bound {
        let c = workload.concurrency as f64;
        let rate = rate_term(workload);
        let slots = (analyses_secs + renders_secs) / c;
        let shortest_analysis = if workload.videos == 1 {
            analyses_secs
        } else {
            workload.analysis.as_secs_f64() * (1.0 - workload.jitter)
        };
        let chain = shortest_analysis + renders_secs / c;
        let mut bound = Bound {
            seconds: rate,
            binds: "rate",
        };
        for (seconds, binds) in [(slots, "slots"), (chain, "chain")] {
            if seconds > bound.seconds {
                bound = Bound { seconds, binds };
            }
        }
        bound
    }
}

fn rate_term(workload: &Workload) -> f64 {
    ((workload.minimum_calls() - workload.burst) / workload.rate).max(0.0)
}

/// The mean of makespan / bound for a client that cannot see stage times in advance but
/// notices every completion the instant it happens, with free requests: the greedy schedule
/// the dispatcher follows (a free slot takes the first job whose video is analysed, jobs
/// ready in the order their analyses finished; else the next video's analysis), over stage
/// times drawn like the simulator's, each draw against its own [`Bound`]. The rate term
/// still applies.
///
/// Not a bound: a reference that separates what blindness to the stage times costs (which
/// slot gets the long renders is luck; a clairvoyant would pair long with short) from what
/// polling costs (the measured ratio over this one).
pub fn blind_ratio(workload: &Workload) -> f64 {
    schedule(workload, |_, took| (took, 1)).ratio
}

/// The two kinds of stage.
#[derive(Clone, Copy)]
enum Kind {
    Analysis,
    Render,
}

/// What [`schedule`] found, averaged over the draws.
pub struct Scheduled {
    /// Makespan / bound.
    pub ratio: f64,
    /// API calls / the minimum.
    pub calls: f64,
}

/// The greedy schedule over `DRAWS` draws of stage times, each stage noticed when `notice`
/// says: given its kind and processing time, how long after its start it is noticed, and
/// how many detail calls that took. The draws are the same for every `notice` (one seed).
fn schedule(workload: &Workload, mut notice: impl FnMut(Kind, f64) -> (f64, u32)) -> Scheduled {
    const DRAWS: usize = 2000;
    let mut rng = rand::rngs::StdRng::seed_from_u64(13);
    let jitter = workload.jitter;
    let mut draw =
        |nominal: Duration| nominal.as_secs_f64() * (1.0 + jitter * rng.random_range(-1.0..=1.0));
    // Jobs per video (job `i` is of video `i % U`).
    let per_video: Vec<usize> = (0..workload.videos)
        .map(|video| (workload.jobs + workload.videos - 1 - video) / workload.videos)
        .collect();
    let (mut total, mut details) = (0.0, 0u64);
    for _ in 0..DRAWS {
        // When each slot frees up next; when each video's analysis is noticed; its jobs left.
        let mut slots = vec![0.0_f64; workload.concurrency];
        let mut analysed: Vec<Option<f64>> = vec![None; workload.videos];
        let mut left = per_video.clone();
        let (mut next_video, mut started) = (0, 0);
        let (mut analyses_secs, mut renders_secs, mut makespan) = (0.0, 0.0, 0.0_f64);
        while started < workload.jobs {
            let (slot, free_at) = slots
                .iter()
                .copied()
                .enumerate()
                .min_by(|a, b| a.1.total_cmp(&b.1))
                .expect("a slot");
            // The video whose analysis was noticed first among those with jobs left, noticed
            // by `free_at` (`ready`) or still under way.
            let first_analysed = |ready: bool| {
                (0..workload.videos)
                    .filter(|video| left[*video] > 0)
                    .filter_map(|video| analysed[video].map(|done| (video, done)))
                    .filter(move |(_, done)| (*done <= free_at) == ready)
                    .min_by(|a, b| a.1.total_cmp(&b.1))
            };
            if let Some((video, _)) = first_analysed(true) {
                let took = draw(workload.render);
                let (noticed, calls) = notice(Kind::Render, took);
                renders_secs += took;
                details += u64::from(calls);
                slots[slot] = free_at + noticed;
                makespan = makespan.max(slots[slot]);
                left[video] -= 1;
                started += 1;
            } else if next_video < workload.videos {
                let took = draw(workload.analysis);
                let (noticed, calls) = notice(Kind::Analysis, took);
                analyses_secs += took;
                details += u64::from(calls);
                analysed[next_video] = Some(free_at + noticed);
                slots[slot] = free_at + noticed;
                next_video += 1;
            } else {
                // Every analysis is under way: the slot idles until the next one is noticed.
                let (_, done) = first_analysed(false).expect("an analysis under way");
                slots[slot] = done;
            }
        }
        let bound = Bound::new(workload, analyses_secs, renders_secs);
        total += makespan.max(rate_term(workload)) / bound.seconds;
    }
    let submissions = (workload.videos + workload.jobs) as f64;
    Scheduled {
        ratio: total / DRAWS as f64,
        calls: (submissions + details as f64 / DRAWS as f64) / workload.minimum_calls(),
    }
}

/// How an idealised client polls one kind of stage.
#[derive(Clone, Copy, Debug)]
enum Polling {
    /// Once at this share of the nominal time; a stage still running is polled again exactly
    /// at its completion, but not sooner than `--poll-min` after.
    Once(f64),
    /// Early (half the nominal time, not before `--poll-min`), then exactly at its completion
    /// (not sooner than `--poll-min` after the first).
    Early,
}

impl std::fmt::Display for Polling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Polling::Once(share) => write!(f, "once at {share:.2} x nominal"),
            Polling::Early => write!(f, "early, then at completion"),
        }
    }
}

impl Polling {
    fn notice(self, nominal: f64, poll_min: f64, took: f64) -> (f64, u32) {
        let first = match self {
            Polling::Once(share) => share * nominal,
            Polling::Early => (0.5 * nominal).max(poll_min),
        };
        if took <= first {
            (first, 1)
        } else {
            (took.max(first + poll_min), 2)
        }
    }
}

/// ORACLE, a comparison only: the best mean makespan/bound a client can reach with at most
/// `budget` × the minimum calls if it knows the distribution of stage times exactly (the
/// nominal times and the jitter, not the draws) and aims every second poll at a stage's
/// exact completion, with no margin and no spacing between requests. Each stage is polled
/// once at a fixed delay (stages are independent: nothing seen of one says when another
/// ends) or early and then exactly; the best delays per kind are searched. No client that
/// learns the distribution can do better within this family, so the measured ratio is to
/// be read against this rather than against the bound.
pub fn polling_reference(workload: &Workload, poll_min: f64, budget: f64) -> Option<Reference> {
    // A single poll somewhere from the shortest to the longest stage time.
    let jitter = workload.jitter;
    let shares = (0..=10).map(|step| 1.0 - jitter + 2.0 * jitter * f64::from(step) / 10.0);
    let options: Vec<Polling> = shares
        .map(Polling::Once)
        .chain(std::iter::once(Polling::Early))
        .collect();
    let (analysis, render) = (
        workload.analysis.as_secs_f64(),
        workload.render.as_secs_f64(),
    );
    let mut best: Option<Reference> = None;
    for &analyses in &options {
        for &renders in &options {
            let scheduled = schedule(workload, |kind, took| match kind {
                Kind::Analysis => analyses.notice(analysis, poll_min, took),
                Kind::Render => renders.notice(render, poll_min, took),
            });
            let better = best.as_ref().is_none_or(|b| scheduled.ratio < b.ratio);
            if scheduled.calls <= budget && better {
                best = Some(Reference {
                    ratio: scheduled.ratio,
                    calls: scheduled.calls,
                    polling: format!("analyses {analyses}, renders {renders}"),
                });
            }
        }
    }
    best
}

/// The best an idealised client reaches (see [`polling_reference`]).
pub struct Reference {
    pub ratio: f64,
    pub calls: f64,
    /// How it polls each kind of stage.
    pub polling: String,
}
