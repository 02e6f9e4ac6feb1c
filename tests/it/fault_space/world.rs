//! The worlds of the fault-space test: what the service does (the simulator's knobs), what the
//! batch asks (a small manifest whose videos steer their own outcomes), and the few flags a
//! user would set (concurrency, rate, `--multi-subject first`), drawn by proptest strategies.
//! A world prints as the commands that reproduce it.

use std::fmt;
use std::time::Duration;

use clap::ValueEnum;
use headswap_batch::simulator::{OutageWindow, ProgressCurve, SimKnobs, ThrottleMode};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

use crate::support::KEY;

/// The give-up window of the worlds that are about it (see [`Family::GiveUpWindow`]).
pub const SHORT_GIVE_UP: Duration = Duration::from_secs(10);

/// What a world is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Any mix of faults, with the default give-up window (2 h): nothing transient may cost a
    /// job.
    Faults,
    /// An outage of the whole API from the first call on, longer than a shortened
    /// `--give-up-after` ([`SHORT_GIVE_UP`]), and no other API fault (throttling, also as a
    /// window right after the outage, and cut downloads allowed: neither counts). A job
    /// charged for the outage fails; none may.
    GiveUpWindow,
}

/// How a video steers the outcome of the jobs on it (query parameters the simulator reads).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Steer {
    /// One person; every job on it must end `done`.
    Plain,
    /// `?subjects=2`: `done` with `--multi-subject first`, `needs_mapping` without.
    TwoSubjects,
    /// `?fail=render`: the render ends in status 4; its jobs end `failed` ("render failed").
    FailRender,
    /// `?duration=25`: too long, the analysis fails; its jobs end `failed` ("analysis failed").
    TooLong,
    /// `?fail=analysis`: the analysis fails; its jobs end `failed` ("analysis failed").
    FailAnalysis,
}

impl Steer {
    fn query(self) -> &'static str {
        match self {
            Steer::Plain => "",
            Steer::TwoSubjects => "?subjects=2",
            Steer::FailRender => "?fail=render",
            Steer::TooLong => "?duration=25",
            Steer::FailAnalysis => "?fail=analysis",
        }
    }
}

/// What a job must end as, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    Done,
    NeedsMapping,
    /// `failed`, with an error starting with this.
    Failed(&'static str),
}

/// One world: the service, the batch and the run's flags.
#[derive(Debug, Clone)]
pub struct World {
    pub family: Family,
    /// The seed this world was drawn from (reproduces it with `FAULT_SPACE_ONLY`).
    pub seed: u64,
    pub knobs: SimKnobs,
    /// One entry per video.
    pub videos: Vec<Steer>,
    /// The video of each job (every video has at least one).
    pub jobs: Vec<usize>,
    pub concurrency: u32,
    /// `--rate`; `None` keeps the default (2 requests per second).
    pub rate: Option<f64>,
    /// `--multi-subject first`.
    pub multi_subject_first: bool,
    /// `--give-up-after`, only in [`Family::GiveUpWindow`] worlds.
    pub give_up_after: Option<Duration>,
}

impl World {
    /// Draw the world of `seed`: the same seed always gives the same world.
    pub fn from_seed(family: Family, seed: u64) -> World {
        let mut bytes = [0u8; 32];
        for (n, chunk) in bytes.chunks_mut(8).enumerate() {
            chunk.copy_from_slice(&splitmix(seed.wrapping_add(n as u64)).to_le_bytes());
        }
        let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &bytes);
        let mut runner = TestRunner::new_with_rng(Config::default(), rng);
        let tree = match family {
            Family::Faults => fault_world().boxed(),
            Family::GiveUpWindow => window_world().boxed(),
        }
        .new_tree(&mut runner)
        .expect("a world can always be drawn");
        World {
            seed,
            ..tree.current()
        }
    }

    pub fn manifest(&self) -> String {
        let mut csv = String::from("id,video_url,face_url\n");
        for (n, video) in self.jobs.iter().enumerate() {
            csv.push_str(&format!(
                "job-{n:02},{},http://f.example/face-{n}.jpg\n",
                self.video_url(*video)
            ));
        }
        csv
    }

    pub fn video_url(&self, video: usize) -> String {
        format!(
            "http://v.example/video-{video}.mp4{}",
            self.videos[video].query()
        )
    }

    /// The flags of `run` besides the database, output folder and service.
    pub fn run_args(&self) -> Vec<String> {
        let mut args = vec!["--concurrency".to_string(), self.concurrency.to_string()];
        if let Some(rate) = self.rate {
            args.extend(["--rate".to_string(), rate.to_string()]);
        }
        if self.multi_subject_first {
            args.extend(["--multi-subject".to_string(), "first".to_string()]);
        }
        if let Some(window) = self.give_up_after {
            args.extend(["--give-up-after".to_string(), format_duration(window)]);
        }
        args
    }

    /// What job `n` must end as.
    pub fn expected(&self, n: usize) -> Expected {
        match self.videos[self.jobs[n]] {
            Steer::Plain => Expected::Done,
            Steer::TwoSubjects if self.multi_subject_first => Expected::Done,
            Steer::TwoSubjects => Expected::NeedsMapping,
            Steer::FailRender => Expected::Failed("render failed"),
            Steer::TooLong | Steer::FailAnalysis => Expected::Failed("analysis failed"),
        }
    }

    /// The exit code the run must end with.
    pub fn expected_exit(&self) -> i32 {
        let all_done = (0..self.jobs.len()).all(|n| self.expected(n) == Expected::Done);
        if all_done { 0 } else { 3 }
    }

    /// The simulator's flags for this world (`headswap-batch simulate ...`).
    pub fn simulate_args(&self) -> String {
        let knobs = &self.knobs;
        let mut args = vec![
            format!("--analysis-time {}", format_duration(knobs.analysis_time)),
            format!("--render-time {}", format_duration(knobs.render_time)),
            format!("--jitter {}", knobs.jitter),
            format!("--heavy-tail {}", knobs.heavy_tail),
            format!("--error-rate {}", knobs.error_rate),
            format!("--http-error-rate {}", knobs.http_error_rate),
            format!("--http-error-status {}", knobs.http_error_status),
            format!("--reset-rate {}", knobs.reset_rate),
            format!("--create-lost-rate {}", knobs.create_lost_rate),
            format!("--truncate-rate {}", knobs.truncate_rate),
            format!("--unknown-status-rate {}", knobs.unknown_status_rate),
            format!("--latency {}", format_duration(knobs.latency)),
            format!("--url-ttl {}", format_duration(knobs.url_ttl)),
            format!(
                "--url-expiry-rounding {}",
                format_duration(knobs.url_expiry_rounding)
            ),
            format!(
                "--cdn-clock-ahead {}",
                format_duration(knobs.cdn_clock_ahead)
            ),
            format!("--output-bytes {}", knobs.output_bytes),
            format!(
                "--progress {}",
                knobs
                    .progress
                    .to_possible_value()
                    .expect("every curve has a name")
                    .get_name()
            ),
            format!("--seed {}", knobs.seed),
        ];
        args.push(format!(
            "--throttle {}",
            match knobs.throttle {
                ThrottleMode::Code => "code",
                ThrottleMode::Http => "http",
            }
        ));
        if let Some(rate) = knobs.rate_limit {
            args.push(format!("--rate-limit {rate}"));
        }
        let windows = knobs.outages.iter().map(|window| ("outage", window)).chain(
            knobs
                .throttle_windows
                .iter()
                .map(|window| ("throttle-window", window)),
        );
        for (flag, window) in windows {
            args.push(format!(
                "--{flag} {}+{}",
                format_duration(window.at),
                format_duration(window.length)
            ));
        }
        args.join(" ")
    }
}

impl fmt::Display for World {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "world {:#x} ({:?})", self.seed, self.family)?;
        writeln!(
            f,
            "  headswap-batch simulate --listen 127.0.0.1:0 --api-key {KEY} {}",
            self.simulate_args()
        )?;
        writeln!(
            f,
            "  AKOOL_API_KEY={KEY} headswap-batch --db state.db run jobs.csv --out out --base-url http://127.0.0.1:PORT --no-progress {}",
            self.run_args().join(" ")
        )?;
        writeln!(
            f,
            "  (outages count from the simulator's start; the run starts right after it)"
        )?;
        writeln!(f, "  jobs.csv:")?;
        for line in self.manifest().lines() {
            writeln!(f, "    {line}")?;
        }
        Ok(())
    }
}

/// The seed of world `index` in the sequence drawn from `base`.
pub fn world_seed(base: u64, index: u64) -> u64 {
    splitmix(base ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// How the service reports progress: as the time elapsed half the time, else no progress at
/// all, progress that stalls at 99 %, or in quarters.
fn progress_curve() -> impl Strategy<Value = ProgressCurve> {
    prop_oneof![
        3 => Just(ProgressCurve::Linear),
        1 => Just(ProgressCurve::None),
        1 => Just(ProgressCurve::Stalls),
        1 => Just(ProgressCurve::Steps),
    ]
}

/// Worlds of any fault mix.
fn fault_world() -> impl Strategy<Value = World> {
    let times = (
        log_ms(50.0, 3000.0),
        log_ms(50.0, 5000.0),
        0.0..0.5f64,
        maybe_rate(),
        log_ms(1.0, 80.0),
        any::<bool>(),
    );
    let faults = (
        maybe_rate(),
        maybe_rate(),
        prop_oneof![Just(502u16), Just(503), Just(504)],
        maybe_rate(),
        maybe_rate(),
        maybe_rate(),
        maybe_rate(),
    );
    let links = (
        log_ms(300.0, 60_000.0),
        any::<bool>(),
        prop_oneof![Just(0.0), 0.0..500.0f64],
        log_ms(8.0 * 1024.0, 512.0 * 1024.0),
        progress_curve(),
    );
    let throttling = (
        proptest::option::weighted(0.4, service_rate()),
        throttle_mode(),
        proptest::option::weighted(0.3, (any::<bool>(), 500u64..25_000, 2_000u64..12_000)),
    );
    let outages = proptest::collection::vec((500u64..25_000, 2_000u64..20_000), 0..=2);
    let run = (
        2u32..=8,
        proptest::option::weighted(0.85, log_ms(3.0, 40.0).prop_map(round3)),
        any::<bool>(),
        any::<u64>(),
    );
    (times, faults, links, throttling, outages, run, batch(1..=4)).prop_map(
        |(times, faults, links, throttling, outages, run, (videos, jobs))| {
            let (analysis_ms, render_ms, jitter, heavy_tail, latency_ms, latency_on) = times;
            let (error, http_error, status, reset, lost, truncate, unknown) = faults;
            let (ttl_ms, rounding, cdn_ms, output_bytes, progress) = links;
            let (concurrency, rate, first, seed) = run;
            let (rate_limit, throttle, throttle_window) = throttling;
            let outages = outage_windows(&outages);
            // A throttling window, half the time right after the first outage (a service
            // shedding load as it comes back).
            let throttle_windows = throttle_window
                .map(|(after_outage, at, length)| {
                    let at = match outages.first() {
                        Some(outage) if after_outage => outage.at + outage.length,
                        _ => Duration::from_millis(at),
                    };
                    OutageWindow {
                        at,
                        length: Duration::from_millis(length),
                    }
                })
                .into_iter()
                .collect();
            // Each API fault spans 0–30 %; together they are kept to at most 35 % of calls,
            // so a world is a bad hour, not an outage of its own (outages have their windows).
            let (error, http_error, reset) = cap_sum(error, http_error, reset, 0.35);
            let ttl = Duration::from_millis(ttl_ms as u64);
            // A link must be usable for some part of its life: at least 300 ms after the file
            // host's clock is through with it (with 1 s rounding, about a third of the links
            // are then born usable, the rest expired).
            let cdn = Duration::from_millis(cdn_ms.min(ttl_ms - 300.0).max(0.0) as u64);
            let knobs = SimKnobs {
                api_keys: vec![KEY.to_string()],
                analysis_time: Duration::from_millis(analysis_ms as u64),
                render_time: Duration::from_millis(render_ms as u64),
                jitter: round3(jitter),
                heavy_tail,
                error_rate: error,
                http_error_rate: http_error,
                http_error_status: status,
                reset_rate: reset,
                create_lost_rate: lost,
                truncate_rate: truncate,
                unknown_status_rate: unknown,
                latency: if latency_on {
                    Duration::from_millis(latency_ms as u64)
                } else {
                    Duration::ZERO
                },
                url_ttl: ttl,
                url_expiry_rounding: if rounding {
                    Duration::from_secs(1)
                } else {
                    Duration::ZERO
                },
                cdn_clock_ahead: cdn,
                output_bytes: output_bytes as u64,
                progress,
                rate_limit,
                throttle,
                outages,
                throttle_windows,
                seed,
                ..SimKnobs::default()
            };
            World {
                family: Family::Faults,
                seed: 0,
                knobs,
                videos,
                jobs,
                concurrency,
                rate,
                multi_subject_first: first,
                give_up_after: None,
            }
        },
    )
}

/// Worlds about the give-up window: the API is down from its first call for 15–25 s, longer
/// than [`SHORT_GIVE_UP`]. Four videos and at least four slots, so that at least four stages
/// fail together at the start and the outage is recognised within a few seconds (the circuit
/// breaker wants eight failed calls, 80 % of those in its window): the time charged before
/// that stays well inside the window, the outage itself may not be charged at all.
fn window_world() -> impl Strategy<Value = World> {
    let throttling = (
        proptest::option::weighted(0.5, service_rate()),
        throttle_mode(),
        proptest::option::weighted(0.5, 2_000u64..12_000),
    );
    (
        (log_ms(50.0, 2000.0), log_ms(50.0, 3000.0), 0.0..0.5f64),
        maybe_rate(),
        15_000u64..25_000,
        throttling,
        (4u32..=8, log_ms(4.0, 40.0).prop_map(round3), any::<bool>()),
        any::<u64>(),
        batch(4..=4),
    )
        .prop_map(
            |(times, truncate, outage_ms, throttling, run, seed, (videos, jobs))| {
                let (analysis_ms, render_ms, jitter) = times;
                let (concurrency, rate, first) = run;
                let (rate_limit, throttle, throttle_window) = throttling;
                let outage = Duration::from_millis(outage_ms);
                let knobs = SimKnobs {
                    api_keys: vec![KEY.to_string()],
                    analysis_time: Duration::from_millis(analysis_ms as u64),
                    render_time: Duration::from_millis(render_ms as u64),
                    jitter: round3(jitter),
                    truncate_rate: truncate,
                    output_bytes: 64 * 1024,
                    rate_limit,
                    throttle,
                    outages: vec![OutageWindow {
                        at: Duration::ZERO,
                        length: outage,
                    }],
                    // Half the time the service throttles every call for a while as it comes
                    // back: throttling never counts, so this costs no job either.
                    throttle_windows: throttle_window
                        .map(|length| OutageWindow {
                            at: outage,
                            length: Duration::from_millis(length),
                        })
                        .into_iter()
                        .collect(),
                    seed,
                    ..SimKnobs::default()
                };
                World {
                    family: Family::GiveUpWindow,
                    seed: 0,
                    knobs,
                    videos,
                    jobs,
                    concurrency,
                    rate: Some(rate),
                    multi_subject_first: first,
                    give_up_after: Some(SHORT_GIVE_UP),
                }
            },
        )
}

/// A small batch: `videos` videos (the first plain, the others steered now and then), 4–12
/// jobs spread over them, each video with at least one job.
fn batch(
    videos: std::ops::RangeInclusive<usize>,
) -> impl Strategy<Value = (Vec<Steer>, Vec<usize>)> {
    let steer = prop_oneof![
        6 => Just(Steer::Plain),
        2 => Just(Steer::TwoSubjects),
        1 => Just(Steer::FailRender),
        1 => Just(Steer::TooLong),
        1 => Just(Steer::FailAnalysis),
    ];
    (proptest::collection::vec(steer, videos), 4usize..=12)
        .prop_flat_map(|(mut steers, jobs)| {
            steers[0] = Steer::Plain;
            let count = steers.len();
            let extra = proptest::collection::vec(0..count, jobs - count);
            (Just(steers), extra)
        })
        .prop_map(|(steers, extra)| {
            let jobs = (0..steers.len()).chain(extra).collect();
            (steers, jobs)
        })
}

/// The service's own limit, in requests per second: a small batch polls at one or two
/// requests per second, so only a limit below a few per second throttles it.
fn service_rate() -> impl Strategy<Value = f64> {
    (0.5f64.ln()..5.0f64.ln()).prop_map(|log| round3(log.exp()))
}

fn throttle_mode() -> impl Strategy<Value = ThrottleMode> {
    prop_oneof![Just(ThrottleMode::Code), Just(ThrottleMode::Http)]
}

/// A fault rate: zero in two worlds of five, otherwise 0–30 %, to three decimals.
fn maybe_rate() -> impl Strategy<Value = f64> {
    prop_oneof![2 => Just(0.0), 3 => (0.0..0.3f64).prop_map(round3)]
}

/// A value spread evenly on a log scale between `low` and `high`, rounded to a whole number.
fn log_ms(low: f64, high: f64) -> impl Strategy<Value = f64> {
    (low.ln()..high.ln()).prop_map(|log| log.exp().round())
}

/// Scale `a + b + c` down to `cap` when above it (to three decimals, rounded down).
fn cap_sum(a: f64, b: f64, c: f64, cap: f64) -> (f64, f64, f64) {
    let sum = a + b + c;
    if sum <= cap {
        return (a, b, c);
    }
    let scale = |x: f64| (x * cap / sum * 1000.0).floor() / 1000.0;
    (scale(a), scale(b), scale(c))
}

/// Outage windows from (start, length) in ms, made disjoint (each starts at least a second
/// after the previous one ends).
fn outage_windows(drawn: &[(u64, u64)]) -> Vec<OutageWindow> {
    let mut drawn = drawn.to_vec();
    drawn.sort();
    let mut windows: Vec<OutageWindow> = Vec::new();
    for (at, length) in drawn {
        let earliest = windows
            .last()
            .map_or(0, |last| (last.at + last.length).as_millis() as u64 + 1000);
        windows.push(OutageWindow {
            at: Duration::from_millis(at.max(earliest)),
            length: Duration::from_millis(length),
        });
    }
    windows
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// A duration as the command line takes it, exactly (whole milliseconds are all a world uses).
fn format_duration(duration: Duration) -> String {
    format!("{}ms", duration.as_millis())
}

fn splitmix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
