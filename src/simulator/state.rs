//! The simulator's memory: analyses, tasks, credits, tokens, rate buckets, counters and the one
//! seeded random generator, all behind one lock that is never held across an `.await`.
//!
//! Remote progress is not driven by timers: a record keeps when it was created and how long
//! its processing takes, and its status is computed from `tokio::time::Instant::now()` whenever
//! it is read. That keeps the simulator passive, deterministic for a given seed and call order,
//! and usable under tokio's paused test clock.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::{CreateCount, ProgressCurve, SimKnobs, Stats};

/// Everything the handlers share.
pub(super) struct Shared {
    pub knobs: SimKnobs,
    pub addr: SocketAddr,
    /// Signs output URLs; drawn from the seeded generator so runs with one seed agree.
    pub signing_key: [u8; 32],
    /// The simulator's clock: `tokio` time since start, shown to clients as Unix milliseconds.
    pub started: Instant,
    started_unix_ms: u64,
    state: Mutex<State>,
}

/// The mutable part.
pub(super) struct State {
    pub rng: StdRng,
    pub analyses: HashMap<String, AnalysisRecord>,
    pub tasks: HashMap<String, TaskRecord>,
    pub credits: Option<u64>,
    /// Bearer token → the API key it stands for.
    pub tokens: HashMap<String, String>,
    /// Per API key: the token bucket of `--rate-limit`.
    pub buckets: HashMap<String, Bucket>,
    /// Counters; the derived fields are filled in by [`Shared::stats`].
    pub stats: Stats,
    /// (video_url, mappings) → index into `stats.creates`.
    create_index: HashMap<(String, String), usize>,
    next_serial: u64,
}

/// How a finished analysis or render ends.
#[derive(Debug, Clone)]
pub(super) enum Outcome<T> {
    Succeeds(T),
    Fails { code: i64, reason: String },
}

pub(super) struct AnalysisRecord {
    pub id: String,
    pub task_id: String,
    /// The API key (team) that owns the record.
    pub team: String,
    pub video_url: String,
    pub create_time_ms: u64,
    pub video_seconds: f64,
    pub progress: Progress,
    /// The number of subjects detected, or why the analysis fails.
    pub outcome: Outcome<u32>,
}

pub(super) struct TaskRecord {
    pub id: String,
    pub task_id: String,
    pub team: String,
    pub source_video_url: String,
    pub create_time_ms: u64,
    pub video_seconds: f64,
    pub resolution: String,
    pub model_name: String,
    pub file_name: String,
    pub progress: Progress,
    pub outcome: Outcome<()>,
    /// Detail reads so far: running tasks alternate `video_url: ""` and `null` between reads.
    pub reads: u64,
}

/// Where a piece of remote work stands at some instant.
#[derive(Debug, Clone, Copy)]
pub(super) struct Progress {
    pub created: Instant,
    pub processing_time: Duration,
    /// How it reports its progress.
    pub curve: ProgressCurve,
    /// A detail call has reported it finished (see [`super::Timing`]).
    pub seen_finished: bool,
}

/// Status 1 (queued), 2 (processing) or finished, with a 0–100 progress.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Stage {
    Queued,
    Processing(f64),
    Finished,
}

impl Progress {
    #[cfg(test)]
    fn at(created: Instant, processing_time: Duration, curve: ProgressCurve) -> Progress {
        Progress {
            created,
            processing_time,
            curve,
            seen_finished: false,
        }
    }

    /// Work starting now.
    pub fn starting(processing_time: Duration, curve: ProgressCurve) -> Progress {
        Progress {
            created: Instant::now(),
            processing_time,
            curve,
            seen_finished: false,
        }
    }

    /// A detail call at `now` reports the work: the first time it is finished, how long it
    /// had been finished unnoticed.
    pub fn first_seen_finished(&mut self, now: Instant) -> Option<Duration> {
        let finished_at = self.created + self.processing_time;
        if self.seen_finished || now < finished_at {
            return None;
        }
        self.seen_finished = true;
        Some(now - finished_at)
    }

    /// The first fifth of the processing time is spent queued.
    pub fn stage(&self, now: Instant) -> Stage {
        let elapsed = now.saturating_duration_since(self.created);
        if elapsed >= self.processing_time {
            return Stage::Finished;
        }
        let fraction = elapsed.as_secs_f64() / self.processing_time.as_secs_f64();
        if fraction < 0.2 {
            return Stage::Queued;
        }
        let reported = match self.curve {
            ProgressCurve::Linear => fraction,
            ProgressCurve::None => 0.0,
            ProgressCurve::Stalls => fraction / 0.6,
            ProgressCurve::Steps => (fraction * 4.0).floor() / 4.0,
        };
        Stage::Processing((reported * 100.0).min(99.0))
    }
}

/// A token bucket holding up to `max(rate, 1)` requests, refilled at `rate` per second.
pub(super) struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    pub fn new(rate: f64, now: Instant) -> Bucket {
        Bucket {
            tokens: rate.max(1.0),
            updated: now,
        }
    }

    /// Take one request from the bucket, or say it is empty.
    pub fn admit(&mut self, rate: f64, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(rate.max(1.0));
        self.updated = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The status `--unknown-status-rate` answers with: not one Akool documents.
pub const UNKNOWN_STATUS: i64 = 7;

impl Shared {
    pub fn new(knobs: SimKnobs, addr: SocketAddr) -> Shared {
        let mut rng = StdRng::seed_from_u64(knobs.seed);
        let signing_key: [u8; 32] = rng.random();
        let started_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|since| since.as_millis() as u64)
            .unwrap_or(0);
        let state = State {
            rng,
            analyses: HashMap::new(),
            tasks: HashMap::new(),
            credits: knobs.credits,
            tokens: HashMap::new(),
            buckets: HashMap::new(),
            stats: Stats::default(),
            create_index: HashMap::new(),
            next_serial: 0,
        };
        Shared {
            knobs,
            addr,
            signing_key,
            started: Instant::now(),
            started_unix_ms,
            state: Mutex::new(state),
        }
    }

    /// The state. A panic in another handler must not take the whole simulator down, so a
    /// poisoned lock is used as is.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The simulator's clock as Unix milliseconds.
    pub fn now_unix_ms(&self) -> u64 {
        self.started_unix_ms + self.started.elapsed().as_millis() as u64
    }

    /// A snapshot of the counters with the derived fields filled in.
    pub fn stats(&self) -> Stats {
        let state = self.lock();
        let mut stats = state.stats.clone();
        stats.duplicate_creates = stats.creates.iter().map(|entry| entry.count - 1).sum();
        stats.credits_left = state.credits;
        stats.analyses = state.analyses.len() as u64;
        stats.tasks = state.tasks.len() as u64;
        stats
    }

    pub fn add_credits(&self, amount: u64) -> Option<u64> {
        let mut state = self.lock();
        if let Some(credits) = &mut state.credits {
            *credits = credits.saturating_add(amount);
        }
        state.credits
    }

    /// `base` stretched or shrunk by up to `--jitter` of itself.
    pub fn jittered(&self, state: &mut State, base: Duration) -> Duration {
        let jitter = self.knobs.jitter;
        let mut time = base;
        if jitter > 0.0 && !base.is_zero() {
            let factor = 1.0 + jitter * state.rng.random_range(-1.0..=1.0);
            time = base.mul_f64(factor.max(0.0));
        }
        if self.knobs.heavy_tail > 0.0 && state.rng.random::<f64>() < self.knobs.heavy_tail {
            // Pareto with α = 1.5 (infinite variance: the rare stage that takes ten times as
            // long), capped so a test run stays bounded.
            let draw: f64 = state.rng.random_range(0.0..1.0);
            let stretch = (1.0 - draw).powf(-1.0 / 1.5).min(20.0);
            time = time.mul_f64(stretch);
        }
        time
    }

    /// The bearer token getToken hands out for a client id and secret: the same one on
    /// every call, as Akool's tokens are long-lived.
    pub fn token_for(&self, client_id: &str, client_secret: &str) -> String {
        let mut hasher = Sha256::new();
        hasher.update(self.signing_key);
        hasher.update(format!("token:{client_id}:{client_secret}").as_bytes());
        hex(&hasher.finalize())
    }

    /// The signature of an output URL.
    pub fn sign(&self, task_id: &str, expires_ms: u64) -> String {
        let mut hasher = Sha256::new();
        hasher.update(self.signing_key);
        hasher.update(task_id.as_bytes());
        hasher.update(b":");
        hasher.update(expires_ms.to_string().as_bytes());
        hex(&hasher.finalize()[..16])
    }
}

impl State {
    /// A new 24-hex-digit id in the shape of a Mongo ObjectId: seconds, random, serial.
    pub fn new_id(&mut self, unix_ms: u64) -> String {
        self.next_serial += 1;
        let random: u32 = self.rng.random::<u32>() & 0x00ff_ffff;
        format!(
            "{:08x}{:06x}{:010x}",
            (unix_ms / 1000) as u32,
            random,
            self.next_serial & 0xff_ffff_ffff
        )
    }

    /// Count a created (and billed) task under its (video_url, mappings) pair.
    pub fn record_create(&mut self, video_url: &str, mappings: String) {
        self.stats.billed_creates += 1;
        let key = (video_url.to_owned(), mappings);
        if let Some(index) = self.create_index.get(&key) {
            self.stats.creates[*index].count += 1;
            return;
        }
        self.create_index
            .insert(key.clone(), self.stats.creates.len());
        self.stats.creates.push(CreateCount {
            video_url: key.0,
            mappings: key.1,
            count: 1,
        });
    }
}

/// The team id Akool would show for an API key: stable, and not the key itself.
pub(super) fn team_id(key: &str) -> String {
    hex(&Sha256::digest(format!("team:{key}").as_bytes())[..12])
}

/// The user id Akool would show for an API key.
pub(super) fn user_id(key: &str) -> u64 {
    let digest = Sha256::digest(format!("uid:{key}").as_bytes());
    100_000 + u64::from(u16::from_be_bytes([digest[0], digest[1]]))
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_moves_from_queued_to_finished() {
        let created = Instant::now();
        let progress = Progress::at(created, Duration::from_secs(10), ProgressCurve::Linear);
        assert_eq!(progress.stage(created), Stage::Queued);
        assert_eq!(
            progress.stage(created + Duration::from_secs(5)),
            Stage::Processing(50.0)
        );
        assert_eq!(
            progress.stage(created + Duration::from_secs(10)),
            Stage::Finished
        );
        let instant = Progress::at(created, Duration::ZERO, ProgressCurve::Linear);
        assert_eq!(instant.stage(created), Stage::Finished);
    }

    #[test]
    fn progress_curves_report_what_they_say() {
        let created = Instant::now();
        // The reported percentage, or -1 while queued, 101 once finished.
        let at = |curve, secs: f64| match Progress::at(created, Duration::from_secs(10), curve)
            .stage(created + Duration::from_secs_f64(secs))
        {
            Stage::Queued => -1.0,
            Stage::Processing(percent) => percent,
            Stage::Finished => 101.0,
        };
        let near = |got: f64, want: f64| assert!((got - want).abs() < 1e-6, "{got} != {want}");
        near(at(ProgressCurve::Linear, 5.0), 50.0);
        near(at(ProgressCurve::None, 5.0), 0.0);
        near(at(ProgressCurve::Stalls, 3.0), 50.0);
        near(at(ProgressCurve::Stalls, 7.0), 99.0);
        near(at(ProgressCurve::Stalls, 9.9), 99.0);
        near(at(ProgressCurve::Steps, 4.9), 25.0);
        near(at(ProgressCurve::Steps, 5.1), 50.0);
        for curve in [
            ProgressCurve::None,
            ProgressCurve::Stalls,
            ProgressCurve::Steps,
        ] {
            near(at(curve, 1.0), -1.0);
            near(at(curve, 10.0), 101.0);
        }
    }

    #[test]
    fn bucket_refills_at_the_rate() {
        let start = Instant::now();
        let mut bucket = Bucket::new(2.0, start);
        assert!(bucket.admit(2.0, start));
        assert!(bucket.admit(2.0, start));
        assert!(!bucket.admit(2.0, start));
        assert!(bucket.admit(2.0, start + Duration::from_millis(500)));
        assert!(!bucket.admit(2.0, start + Duration::from_millis(500)));
        // A slow rate still lets one request through at first.
        let mut slow = Bucket::new(0.1, start);
        assert!(slow.admit(0.1, start));
        assert!(!slow.admit(0.1, start + Duration::from_secs(5)));
        assert!(slow.admit(0.1, start + Duration::from_secs(10)));
    }

    #[test]
    fn ids_look_like_object_ids_and_are_unique() {
        let shared = Shared::new(SimKnobs::default(), "127.0.0.1:1".parse().unwrap());
        let mut state = shared.lock();
        let first = state.new_id(1_700_000_000_000);
        let second = state.new_id(1_700_000_000_000);
        assert_eq!(first.len(), 24);
        assert!(first.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(first, second);
        assert_eq!(team_id("k").len(), 24);
        assert_ne!(team_id("k"), team_id("other"));
    }

    #[test]
    fn duplicate_creates_are_counted_per_pair() {
        let shared = Shared::new(SimKnobs::default(), "127.0.0.1:1".parse().unwrap());
        {
            let mut state = shared.lock();
            state.record_create("v1", "0=a".into());
            state.record_create("v1", "0=a".into());
            state.record_create("v1", "0=b".into());
            state.record_create("v2", "0=a".into());
            state.record_create("v1", "0=a".into());
        }
        let stats = shared.stats();
        assert_eq!(stats.billed_creates, 5);
        assert_eq!(stats.duplicate_creates, 2);
        assert_eq!(stats.creates.len(), 3);
        assert_eq!(stats.creates[0].count, 3);
    }
}
