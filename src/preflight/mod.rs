//! Preflight: check every video and face URL cheaply before anything is bought, so a job that
//! cannot succeed (a 25 s video, a dead link, an HTML page given as a face) is never paid for.
//!
//! - videos: reachable (404/410 → invalid) and, for MP4/MOV, the container's own duration read
//!   from the `moov` box with a few small Range requests wherever the box sits; outside the
//!   accepted 3–20 s → invalid, the reason naming the measured duration (`video.rs`,
//!   `boxes.rs`);
//! - faces: reachable and a JPEG, PNG or WebP image by their first bytes (`face.rs`,
//!   `sniff.rs`);
//! - anything that cannot be decided here (DNS, timeouts, 401/403, 429, 5xx, an unreadable
//!   container, a server ignoring Range) is [`Verdict::Undecided`]: a warning, never a reason
//!   to stop a job, since the service may reach what this machine cannot.
//!
//! A [`Checker`] owns its HTTP client (`fetch.rs`) and its own small concurrency; it never
//! talks to the Akool API and never goes through the API's rate limiter. [`Checker::check_all`]
//! yields results as they complete, so a run can start on the first checked video while the
//! rest are still being checked. [`check_manifest`] is the whole check of a parsed manifest,
//! without a database (`report.rs`).
//!
//! This module does not store verdicts, does not change jobs and does not print: the run
//! pipeline and the `check` command own those. URLs may carry credentials in their query, so
//! they are logged at debug level only and shown elsewhere through [`display_url`].

mod boxes;
mod face;
mod fetch;
mod report;
mod sniff;
mod verdict;
mod video;

use std::collections::HashSet;
use std::ops::RangeInclusive;
use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

pub use fetch::{MAX_REDIRECTS, Timeouts, client_builder, display_url};
pub use report::{
    DoomedJob, JobCheck, ManifestPreflight, UrlWarning, check_manifest, job_targets, judge_job,
    manifest_targets,
};
pub use verdict::{MediaKind, Spent, Target, UrlCheck, Verdict};
pub use video::DURATION_TOLERANCE;

/// How preflight checks run. [`PreflightConfig::default`] is what a run uses; tests shorten
/// the timeouts and the read sizes.
#[derive(Debug, Clone, PartialEq)]
pub struct PreflightConfig {
    /// URLs checked at once.
    pub concurrency: usize,
    pub timeouts: Timeouts,
    /// Bytes read by a video's first request, and by each later one looking for the `moov`
    /// box; a server that ignores Range is read this far and no further.
    pub read_bytes: u64,
    /// Most bytes of a `moov` box read (its `mvhd` comes first; a longer `moov` is read this
    /// far and searched for it).
    pub max_moov_bytes: u64,
    /// Most requests for one video, the first one included.
    pub max_requests_per_video: u64,
    /// Bytes read from a face (its first bytes are enough to know what it is).
    pub face_bytes: u64,
    /// Video durations the service accepts, in seconds.
    pub video_seconds: RangeInclusive<f64>,
}

impl Default for PreflightConfig {
    fn default() -> PreflightConfig {
        PreflightConfig {
            concurrency: 8,
            timeouts: Timeouts::default(),
            read_bytes: 64 * 1024,
            max_moov_bytes: 4 * 1024 * 1024,
            max_requests_per_video: 6,
            face_bytes: 512,
            video_seconds: 3.0..=20.0,
        }
    }
}

impl PreflightConfig {
    /// The most body bytes one video check asks for: every request at `read_bytes`, plus the
    /// `moov`. (A server that ignores Range may push up to one network chunk more before the
    /// connection is dropped.)
    pub fn max_video_bytes(&self) -> u64 {
        self.read_bytes * self.max_requests_per_video + self.max_moov_bytes
    }
}

/// The HTTP client could not be set up (the TLS backend failed to initialise).
#[derive(Debug, thiserror::Error)]
#[error("could not set up the HTTP client for preflight checks: {0}")]
pub struct ClientError(String);

/// Checks URLs with its own client and at most [`PreflightConfig::concurrency`] at once.
/// Cloning shares the client and the limit.
#[derive(Clone)]
pub struct Checker {
    inner: Arc<Inner>,
}

struct Inner {
    client: reqwest::Client,
    config: PreflightConfig,
    slots: Arc<Semaphore>,
}

impl Checker {
    /// A checker with the preflight client ([`client_builder`]).
    pub fn new(config: PreflightConfig) -> Result<Checker, ClientError> {
        let client = client_builder(config.timeouts)
            .build()
            .map_err(|error| ClientError(error.to_string()))?;
        Ok(Checker::with_client(config, client))
    }

    /// A checker on a client built from [`client_builder`] with additions (a resolver).
    pub fn with_client(config: PreflightConfig, client: reqwest::Client) -> Checker {
        let slots = Arc::new(Semaphore::new(config.concurrency.max(1)));
        Checker {
            inner: Arc::new(Inner {
                client,
                config,
                slots,
            }),
        }
    }

    pub fn config(&self) -> &PreflightConfig {
        &self.inner.config
    }

    /// Check one target once a slot is free.
    pub async fn check(&self, target: Target) -> UrlCheck {
        let _slot = self.inner.slots.acquire().await;
        self.inner.check_now(target).await
    }

    /// Check every distinct target once, in the given order as slots free up, and send each
    /// result as soon as it is known (so completion order, not input order). The channel
    /// closes after the last result. Dropping the receiver stops the checks: none is started
    /// after it, and those under way are cancelled. Needs a tokio runtime.
    pub fn check_all(
        &self,
        targets: impl IntoIterator<Item = Target>,
    ) -> mpsc::UnboundedReceiver<UrlCheck> {
        let mut seen = HashSet::new();
        let targets: Vec<Target> = targets
            .into_iter()
            .filter(|target| seen.insert(target.clone()))
            .collect();
        let (sender, receiver) = mpsc::unbounded_channel();
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let mut running = JoinSet::new();
            for target in targets {
                let slot = tokio::select! {
                    slot = inner.slots.clone().acquire_owned() => slot,
                    () = sender.closed() => return,
                };
                let Ok(slot) = slot else { return };
                let inner = inner.clone();
                let sender = sender.clone();
                running.spawn(async move {
                    let result = inner.check_now(target).await;
                    drop(slot);
                    let _ = sender.send(result);
                });
                while running.try_join_next().is_some() {}
            }
            // Wait for the last checks, or stop them if nobody listens any more.
            loop {
                tokio::select! {
                    next = running.join_next() => if next.is_none() { return },
                    () = sender.closed() => return,
                }
            }
        });
        receiver
    }
}

/// The host of `url` when it is under a top-level name reserved for examples and tests
/// (`.example`, `.invalid`, `.test`, RFC 6761).
fn reserved_host(url: &str) -> Option<String> {
    let host = reqwest::Url::parse(url)
        .ok()?
        .host_str()?
        .to_ascii_lowercase();
    let top = host.trim_end_matches('.').rsplit('.').next()?;
    matches!(top, "example" | "invalid" | "test").then_some(host)
}

impl Inner {
    async fn check_now(&self, target: Target) -> UrlCheck {
        if let Some(host) = reserved_host(&target.url) {
            // RFC 6761 reserves these names for documentation and tests: no resolver has them,
            // and asking one is a pointless wait.
            return UrlCheck {
                target,
                verdict: Verdict::undecided(format!(
                    "{host} is a reserved example name (RFC 6761), not a host that can be reached"
                )),
                spent: Spent::default(),
            };
        }
        let (verdict, spent) = match target.kind {
            MediaKind::Video => video::check_video(&self.client, &self.config, &target.url).await,
            MediaKind::Face => face::check_face(&self.client, &self.config, &target.url).await,
        };
        tracing::debug!(
            kind = target.kind.noun(),
            url = %target.url,
            ?verdict,
            requests = spent.requests,
            bytes = spent.bytes,
            "preflight check"
        );
        UrlCheck {
            target,
            verdict,
            spent,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_example_names_are_never_looked_up() {
        for url in [
            "http://v.example/one.mp4",
            "https://cdn.shop.test/a.jpg",
            "http://nothing.invalid./x",
            "https://FACES.EXAMPLE/b.png",
        ] {
            assert!(reserved_host(url).is_some(), "{url}");
        }
        for url in [
            "https://example.com/a.mp4",
            "http://127.0.0.1:8080/media/video.mp4",
            "https://cdn.examples.net/x",
        ] {
            assert_eq!(reserved_host(url), None, "{url}");
        }
    }
}
