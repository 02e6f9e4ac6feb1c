//! Section 1 of the system benchmark: efficiency against the physical lower bound, with the
//! polling flags a user has by default (`--poll-min 2s --poll-max 60s`, no hints, default
//! backoff and burst), at three time scales of the service's stage times. Every scenario runs
//! on one database twice: cold (a new database: nothing known of the service's timing) and
//! warm (a second batch of new jobs of new videos, which starts from the timings the first
//! batch left in the database).
//!
//! The batch goes through `run::run_batch` against the in-process simulator; its
//! configuration is built from a real command line (`headswap-batch run ...` parsed by clap and
//! checked by `RunConfig::from_args`), so a default that changes there changes here. Only
//! `--concurrency` and `--rate` are given, and, in rows labelled as comparisons, the hints or a
//! shorter `--poll-min`.
//!
//! Everything measured but the wall time comes from the simulator (`Stats`): the calls that
//! reached it, the true stage times it drew (from which the bound is computed, see `bound.rs`)
//! and how long finished work went unnoticed (the part polling adds).

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use clap::Parser;
use headswap_batch::cli::{Cli, Command};
use headswap_batch::job::JobState;
use headswap_batch::run::{RunConfig, run_batch};
use headswap_batch::simulator::{SimKnobs, Simulator, Stats};
use tokio_util::sync::CancellationToken;

#[path = "bound.rs"]
mod bound;

use bound::{Bound, Workload, blind_ratio, polling_reference};

const KEY: &str = "bench-key";

/// Spread of every stage time: uniform within ±20 % of the nominal time.
const JITTER: f64 = 0.2;

/// `--burst`'s default: the bound's rate term counts it.
const DEFAULT_BURST: f64 = 2.0;

/// The scenario the targets are about, and its targets: (makespan / bound, calls /
/// minimum) cold and warm.
const TARGET_SCENARIO: &str = "10 s: two waves of 10 s renders";
const COLD_TARGET: (f64, f64) = (1.30, 1.5);
const WARM_TARGET: (f64, f64) = (1.15, 1.2);

pub fn efficiency(quick: bool) {
    println!("## 1. Efficiency against the lower bound (default polling flags)");
    // `BENCH_SCENARIO=faces` runs only the scenarios whose name contains it.
    let only = std::env::var("BENCH_SCENARIO").unwrap_or_default();
    let scenarios: Vec<Scenario> = scenarios(quick)
        .into_iter()
        .filter(|s| s.name().contains(only.as_str()))
        .collect();
    println!(
        "{:<48} {:>4} {:>3} {:>3} {:>4} {:<5} {:>7} {:>5} {:>8} {:>6} {:>6} {:>7} {:>6} {:>6} {:>8} {:>8} {:>6} {:>6}",
        "scenario",
        "N",
        "U",
        "C",
        "R/s",
        "db",
        "bound_s",
        "binds",
        "makespan",
        "/bound",
        "blind",
        "calls/j",
        "min/j",
        "ratio",
        "rend_unn",
        "anal_unn",
        "thrtl",
        "target"
    );
    // `BENCH_REPEAT=5` runs each scenario five times (each on a new database), to show how
    // much a figure varies from run to run.
    let repeat: usize = std::env::var("BENCH_REPEAT")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(1);
    let started = Instant::now();
    let mut rows = Vec::new();
    for scenario in &scenarios {
        let blind = blind_ratio(&scenario.workload());
        for _ in 0..repeat {
            for (batch, measured) in run_scenario(scenario) {
                let row = Row::new(scenario, batch, &measured, blind);
                row.print();
                rows.push(row);
            }
        }
    }
    println!(
        "bound: max(rate (2U+2N-burst)/R, slots (sum Ta + sum T)/C, chain min Ta + sum T/C), from \
         the simulator's true stage times; blind: expected makespan/bound of the same greedy \
         schedule if every completion were noticed at once (stage times unknown in advance, \
         Monte Carlo); min/j: (2U+2N)/N calls (analyze + analysis detail per video, create + task \
         detail per job); unnoticed: mean wait from a stage finishing to the detail call that \
         reported it; thrtl: throttled share of calls"
    );
    println!(
        "targets ({TARGET_SCENARIO}): cold makespan/bound <= {:.2}, calls/minimum <= {:.2}; warm <= {:.2}, <= {:.2}",
        COLD_TARGET.0, COLD_TARGET.1, WARM_TARGET.0, WARM_TARGET.1
    );
    for scenario in scenarios.iter().filter(|s| s.name() == TARGET_SCENARIO) {
        let poll_min = user_config(
            scenario,
            Path::new("m"),
            Path::new("db"),
            Path::new("o"),
            "http://127.0.0.1:1",
        )
        .settings
        .render_poll
        .min
        .as_secs_f64();
        // The default floor, and the 2 s it replaced.
        let cases = [
            (poll_min, WARM_TARGET.1),
            (poll_min, COLD_TARGET.1),
            (2.0, WARM_TARGET.1),
        ];
        for (poll_min, budget) in cases {
            match polling_reference(&scenario.workload(), poll_min, budget) {
                Some(reference) => println!(
                    "ORACLE polling reference ({TARGET_SCENARIO}, --poll-min {poll_min} s, calls <= {budget:.2} x minimum): \
                     makespan/bound {:.3} at {:.3} x the calls ({})",
                    reference.ratio, reference.calls, reference.polling
                ),
                None => {
                    println!("ORACLE polling reference: nothing within {budget:.2} x the calls")
                }
            }
        }
    }
    let incomplete: Vec<String> = rows
        .iter()
        .filter(|row| row.done != row.jobs)
        .map(|row| format!("{} {}: {}/{} done", row.name, row.batch, row.done, row.jobs))
        .collect();
    if incomplete.is_empty() {
        println!("every batch finished all its jobs");
    } else {
        println!("NOT ALL JOBS DONE: {}", incomplete.join("; "));
    }
    println!(
        "section wall time: {:.0} s ({} batches)",
        started.elapsed().as_secs_f64(),
        rows.len()
    );
    println!();
}

/// One workload at one time scale.
struct Scenario {
    /// "0.8 s", "5 s", "10 s", "30 s": the nominal render time, the scale's name.
    scale: &'static str,
    shape: &'static str,
    analysis: Duration,
    render: Duration,
    jobs: usize,
    videos: usize,
    concurrency: usize,
    /// `--rate` and the simulator's limit (requests per second).
    rate: f64,
    /// Default flags, or a labelled comparison.
    variant: Variant,
}

/// What differs from a user's default flags.
#[derive(Clone, Copy, PartialEq)]
enum Variant {
    /// `--concurrency` and `--rate` only: the headline figures.
    Defaults,
    /// Also `--analysis-guess`/`--render-guess` set to the true nominal times: what a user
    /// who knew the service's timing would get on a new database (cold only: learned timings
    /// win over hints, so a warm batch is the default one). A comparison, never a headline.
    Oracle,
    /// Also a shorter `--poll-min`: what the default floor costs.
    PollMin(Duration),
}

impl Scenario {
    fn name(&self) -> String {
        let variant = match self.variant {
            Variant::Defaults => String::new(),
            Variant::Oracle => "ORACLE hints, ".into(),
            Variant::PollMin(min) => {
                format!("--poll-min {}, ", humantime::format_duration(min))
            }
        };
        format!("{}: {variant}{}", self.scale, self.shape)
    }

    /// The batches run on the scenario's database, in order.
    fn batches(&self) -> &'static [&'static str] {
        match self.variant {
            Variant::Oracle => &["cold"],
            Variant::Defaults | Variant::PollMin(_) => &["cold", "warm"],
        }
    }

    fn workload(&self) -> Workload {
        Workload {
            jobs: self.jobs,
            videos: self.videos,
            concurrency: self.concurrency,
            rate: self.rate,
            burst: DEFAULT_BURST,
            analysis: self.analysis,
            render: self.render,
            jitter: JITTER,
        }
    }
}

/// The scenarios, in the order they run. Job counts are small where stages are long: two or
/// three waves show the cold start and the steady state, and keep the section near ten
/// minutes on two cores.
fn scenarios(quick: bool) -> Vec<Scenario> {
    let ms = Duration::from_millis;
    let s = Duration::from_secs;
    let scenario = |scale, shape, (analysis, render), jobs: usize, videos: usize, c, rate| {
        // Quick mode quarters the workloads, keeping at least one wave.
        let jobs = if quick { (jobs / 4).max(c) } else { jobs };
        Scenario {
            scale,
            shape,
            analysis,
            render,
            jobs,
            videos: videos.min(jobs),
            concurrency: c,
            rate,
            variant: Variant::Defaults,
        }
    };
    let sub_second = (ms(300), ms(800));
    let five = (s(2), s(5));
    let ten = (s(4), s(10));
    let thirty = (s(10), s(30));
    let mut list = vec![
        scenario("0.8 s", "rate-bound", sub_second, 240, 80, 64, 40.0),
        scenario("0.8 s", "concurrency-bound", sub_second, 48, 4, 8, 100.0),
        scenario(
            "0.8 s",
            "1 video x many faces",
            sub_second,
            96,
            1,
            16,
            100.0,
        ),
        scenario(
            "0.8 s",
            "many videos x 1 face",
            sub_second,
            48,
            48,
            16,
            100.0,
        ),
        scenario("5 s", "rate-bound", five, 60, 20, 64, 10.0),
        scenario("5 s", "concurrency-bound", five, 24, 4, 8, 100.0),
        scenario("5 s", "1 video x many faces", five, 32, 1, 16, 100.0),
        scenario("5 s", "many videos x 1 face", five, 16, 16, 8, 100.0),
        scenario("10 s", "two waves of 10 s renders", ten, 16, 4, 8, 20.0),
        scenario("30 s", "two waves", thirty, 16, 4, 8, 20.0),
    ];
    // Comparisons, labelled as such: what the default floor costs at the sub-second scale,
    // and what seeding the hints with the truth would buy on a new database.
    let mut floor = scenario("0.8 s", "concurrency-bound", sub_second, 48, 4, 8, 100.0);
    floor.variant = Variant::PollMin(ms(100));
    list.push(floor);
    let mut oracle = scenario("10 s", "two waves of 10 s renders", ten, 16, 4, 8, 20.0);
    oracle.variant = Variant::Oracle;
    list.push(oracle);
    list
}

/// What one batch measured.
struct Measured {
    makespan: Duration,
    done: usize,
    stats: Stats,
}

/// Run the cold batch on a new database, then (but for the oracle) the warm batch: new jobs of
/// new videos on the same database. Each batch gets a simulator of its own, so its counters
/// are that batch's alone.
fn run_scenario(scenario: &Scenario) -> Vec<(&'static str, Measured)> {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("db");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let mut done_before = 0;
    let mut measured = Vec::new();
    for (seed, batch) in scenario.batches().iter().enumerate() {
        let manifest = dir.path().join(format!("{batch}.csv"));
        write_manifest(&manifest, batch, scenario.jobs, scenario.videos);
        let knobs = SimKnobs {
            api_keys: vec![KEY.into()],
            analysis_time: scenario.analysis,
            render_time: scenario.render,
            jitter: JITTER,
            rate_limit: Some(scenario.rate),
            output_bytes: 4096,
            seed: seed as u64,
            ..SimKnobs::default()
        };
        let mut batch_measured = rt.block_on(run_one(scenario, knobs, &manifest, &db, dir.path()));
        // The report counts the database's jobs: the earlier batches' are done too.
        let done = batch_measured.done;
        batch_measured.done -= done_before;
        done_before = done;
        measured.push((*batch, batch_measured));
    }
    measured
}

async fn run_one(
    scenario: &Scenario,
    knobs: SimKnobs,
    manifest: &Path,
    db: &Path,
    dir: &Path,
) -> Measured {
    let sim = Simulator::start(loopback(), knobs)
        .await
        .expect("simulator");
    let config = user_config(scenario, manifest, db, &dir.join("out"), &sim.base_url());
    let started = Instant::now();
    let report = run_batch(&config, CancellationToken::new())
        .await
        .expect("the run finishes");
    let makespan = started.elapsed();
    let stats = sim.stats();
    sim.shutdown().await;
    Measured {
        makespan,
        done: report.states.get(&JobState::Done).copied().unwrap_or(0),
        stats,
    }
}

/// The configuration `headswap-batch run` builds from a user's command line: every default
/// but the scenario's concurrency and rate (and a comparison's own flags).
fn user_config(
    scenario: &Scenario,
    manifest: &Path,
    db: &Path,
    out: &Path,
    base_url: &str,
) -> RunConfig {
    let text = |d: Duration| humantime::format_duration(d).to_string();
    let mut args: Vec<String> = vec!["headswap-batch".into(), "run".into()];
    args.extend(["--db".into(), db.display().to_string()]);
    args.push(manifest.display().to_string());
    args.extend(["--out".into(), out.display().to_string()]);
    args.extend(["--base-url".into(), base_url.to_string()]);
    args.extend(["--api-key".into(), KEY.into()]);
    args.extend(["--concurrency".into(), scenario.concurrency.to_string()]);
    args.extend(["--rate".into(), scenario.rate.to_string()]);
    match scenario.variant {
        Variant::Defaults => {}
        Variant::Oracle => {
            args.extend(["--analysis-guess".into(), text(scenario.analysis)]);
            args.extend(["--render-guess".into(), text(scenario.render)]);
        }
        Variant::PollMin(min) => args.extend(["--poll-min".into(), text(min)]),
    }
    let cli = Cli::try_parse_from(&args).expect("the command line parses");
    let Command::Run(run) = cli.command else {
        unreachable!("a run command line")
    };
    let db = headswap_batch::config::database(&cli.db_before_command, &run.db);
    RunConfig::from_args(&run, db, false).expect("the configuration is valid")
}

/// `jobs` rows over `videos` distinct videos, one distinct face per row; `batch` keeps ids,
/// videos and faces apart between the batches of one database.
fn write_manifest(path: &Path, batch: &str, jobs: usize, videos: usize) {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).expect("manifest"));
    writeln!(out, "id,video_url,face_url").unwrap();
    for job in 0..jobs {
        let video = job % videos;
        writeln!(
            out,
            "{batch}-{job:04},https://cdn.example/videos/{batch}-v{video:04}.mp4,https://cdn.example/faces/{batch}-f{job:04}.jpg"
        )
        .unwrap();
    }
    out.flush().unwrap();
}

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().expect("an address")
}

/// One printed line: a batch of a scenario against its bound and minimum.
struct Row {
    name: String,
    jobs: usize,
    videos: usize,
    concurrency: usize,
    rate: f64,
    batch: &'static str,
    done: usize,
    bound: Bound,
    makespan: f64,
    /// Expected makespan / bound of a client blind to stage times that notices at once.
    blind: f64,
    calls_per_job: f64,
    minimum_per_job: f64,
    /// Mean unnoticed time of renders and of analyses, in seconds.
    render_unnoticed: f64,
    analysis_unnoticed: f64,
    /// Share of the calls that were throttled.
    throttled: f64,
    /// The targets, for the one scenario they are about.
    target: Option<(f64, f64)>,
}

impl Row {
    fn new(scenario: &Scenario, batch: &'static str, measured: &Measured, blind: f64) -> Row {
        let timing = &measured.stats.timing;
        let seconds = |ms: u64| ms as f64 / 1000.0;
        let workload = scenario.workload();
        let bound = Bound::new(
            &workload,
            seconds(timing.analysis_processing_ms),
            seconds(timing.render_processing_ms),
        );
        let calls = &measured.stats.calls;
        let api_calls = calls.analyze + calls.analysis_detail + calls.create + calls.task_detail;
        let mean = |ms: u64, count: u64| seconds(ms) / count.max(1) as f64;
        let target = (scenario.name() == TARGET_SCENARIO).then_some(if batch == "cold" {
            COLD_TARGET
        } else {
            WARM_TARGET
        });
        Row {
            name: scenario.name(),
            jobs: scenario.jobs,
            videos: scenario.videos,
            concurrency: scenario.concurrency,
            rate: scenario.rate,
            batch,
            done: measured.done,
            bound,
            makespan: measured.makespan.as_secs_f64(),
            blind,
            calls_per_job: api_calls as f64 / scenario.jobs as f64,
            minimum_per_job: workload.minimum_calls() / scenario.jobs as f64,
            render_unnoticed: mean(timing.render_unnoticed_ms, timing.renders_noticed),
            analysis_unnoticed: mean(timing.analysis_unnoticed_ms, timing.analyses_noticed),
            throttled: measured.stats.throttled as f64 / api_calls.max(1) as f64,
            target,
        }
    }

    fn makespan_ratio(&self) -> f64 {
        self.makespan / self.bound.seconds
    }

    fn calls_ratio(&self) -> f64 {
        self.calls_per_job / self.minimum_per_job
    }

    fn print(&self) {
        let target = match self.target {
            None => "-",
            Some((makespan, calls))
                if self.makespan_ratio() <= makespan
                    && self.calls_ratio() <= calls
                    && self.done == self.jobs =>
            {
                "met"
            }
            Some(_) => "MISSED",
        };
        println!(
            "{:<48} {:>4} {:>3} {:>3} {:>4} {:<5} {:>7.2} {:>5} {:>8.2} {:>6.3} {:>6.3} {:>7.3} {:>6.3} {:>6.3} {:>7.2}s {:>7.2}s {:>5.1}% {:>6}",
            self.name,
            self.jobs,
            self.videos,
            self.concurrency,
            self.rate,
            self.batch,
            self.bound.seconds,
            self.bound.binds,
            self.makespan,
            self.makespan_ratio(),
            self.blind,
            self.calls_per_job,
            self.minimum_per_job,
            self.calls_ratio(),
            self.render_unnoticed,
            self.analysis_unnoticed,
            self.throttled * 100.0,
            target
        );
    }
}
