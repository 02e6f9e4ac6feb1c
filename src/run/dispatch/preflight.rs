//! The preflight stage: nothing is bought for a job that cannot succeed. A video's analysis is
//! submitted only once its URL checked out (reachable, a video, a duration the service
//! accepts) and at least one job on it has usable faces (reachable, an image); a job's create
//! only once all of its URLs did. The checks run on
//! the user's hosts with their own small concurrency (`crate::preflight::Checker`), never
//! through the API's rate limiter, all started at once in manifest order, so the first videos
//! are analysed while later ones are still being checked. Results are kept per URL in the
//! store: a rerun does not check again (`--recheck` does).
//!
//! A definitive finding makes the job `invalid` with the reason; a check that cannot decide
//! (DNS, timeouts, 401/403, 5xx, an unreadable container) is a warning and the job proceeds:
//! the service may reach what this machine cannot.

use std::collections::HashMap;

use tokio::sync::mpsc;

use crate::job::{Event, Job, JobError, JobId, JobState, VideoUrl};
use crate::now_ms;
use crate::preflight::{Checker, Target, UrlCheck, Verdict, display_url};
use crate::run::dispatch::{Dispatcher, RunError};
use crate::store::Store;

/// What the loop knows of the URL checks.
#[derive(Default)]
pub(super) struct Checks {
    /// Checks under way; `None` once all have answered (or preflight is off).
    results: Option<mpsc::UnboundedReceiver<UrlCheck>>,
    /// Verdicts known, from the store or from this run's checks.
    verdicts: HashMap<Target, Verdict>,
    /// Videos whose analysis waits for a check (of the video, or of a face of a job on it), by
    /// the URL they wait for.
    videos: HashMap<Target, Vec<VideoUrl>>,
    /// `ready` jobs whose create waits for a face's check, by that face.
    jobs: HashMap<Target, Vec<JobId>>,
    /// Jobs refused by preflight in this run.
    pub(super) refused: usize,
}

/// Whether a job may be bought, as far as its checked URLs tell.
enum Clearance {
    Clear,
    Refused(String),
    Unknown(Target),
}

impl Checks {
    /// Checks are on and have not all answered.
    pub(super) fn running(&self) -> bool {
        self.results.is_some()
    }

    /// The next check's result (pending forever when none are running).
    pub(super) async fn next(&mut self) -> Option<UrlCheck> {
        match &mut self.results {
            Some(results) => results.recv().await,
            None => std::future::pending().await,
        }
    }

    /// A check's result if one is already there (`Some(None)`: every check has answered).
    pub(super) fn try_next(&mut self) -> Option<Option<UrlCheck>> {
        let results = self.results.as_mut()?;
        match results.try_recv() {
            Ok(check) => Some(Some(check)),
            Err(mpsc::error::TryRecvError::Empty) => None,
            Err(mpsc::error::TryRecvError::Disconnected) => Some(None),
        }
    }

    fn clearance(&self, target: &Target) -> Option<Clearance> {
        match self.verdicts.get(target)? {
            Verdict::Invalid { reason } => Some(Clearance::Refused(reason.clone())),
            Verdict::Valid { .. } | Verdict::Undecided { .. } => Some(Clearance::Clear),
        }
    }

    /// Whether every URL of a job is cleared (its video first, then its faces).
    fn job_clearance(&self, job: &Job) -> Clearance {
        let video = Target::video(job.spec.video_url.as_str());
        let faces = job
            .spec
            .faces
            .iter()
            .map(|face| Target::face(face.face_url.as_str()));
        for target in std::iter::once(video).chain(faces) {
            match self.clearance(&target) {
                None => return Clearance::Unknown(target),
                Some(Clearance::Clear) => {}
                Some(refused) => return refused,
            }
        }
        Clearance::Clear
    }
}

/// The store key of a URL's check.
fn key(target: &Target) -> String {
    format!("{}\n{}", target.kind.noun(), target.url)
}

/// The verdict the store kept for a URL, if any (an unreadable one is checked again).
fn cached(store: &Store, target: &Target) -> Result<Option<Verdict>, RunError> {
    Ok(store
        .check(&key(target))?
        .and_then(|text| serde_json::from_str(&text).ok()))
}

impl Dispatcher<'_> {
    /// At the start of a run: load what earlier runs found and start checking every other URL
    /// the waiting jobs need, in their order. Without a checker, preflight is off.
    pub(super) fn start_checks(
        &mut self,
        checker: Option<&Checker>,
        targets: Vec<Target>,
    ) -> Result<(), RunError> {
        let Some(checker) = checker else {
            return Ok(());
        };
        let mut unchecked = Vec::new();
        for target in targets {
            match cached(self.store, &target)? {
                Some(verdict) => {
                    self.checks.verdicts.insert(target, verdict);
                }
                None => unchecked.push(target),
            }
        }
        if !unchecked.is_empty() {
            tracing::info!(
                "checking {} video and face URL(s) before anything is bought",
                unchecked.len()
            );
            self.checks.results = Some(checker.check_all(unchecked));
        }
        Ok(())
    }

    /// A video is about to be queued for analysis: `false` when it must wait for a check, or
    /// when no job on it can succeed (those jobs are refused).
    pub(super) fn video_cleared(&mut self, video_url: &VideoUrl) -> Result<bool, RunError> {
        if !self.checks.running() && self.checks.verdicts.is_empty() {
            return Ok(true);
        }
        let target = Target::video(video_url.as_str());
        match self.checks.clearance(&target) {
            Some(Clearance::Clear) => {}
            Some(Clearance::Refused(reason)) => {
                self.refuse_video_jobs(video_url, &reason)?;
                return Ok(false);
            }
            _ if self.checks.running() => {
                self.checks
                    .videos
                    .entry(target)
                    .or_default()
                    .push(video_url.clone());
                return Ok(false);
            }
            // Never checked (a URL that appeared after the checks started): go ahead.
            None | Some(Clearance::Unknown(_)) => return Ok(true),
        }
        // The video is fine: is any job on it? Jobs whose faces are refused are refused now;
        // the analysis is bought once one job can be created.
        let mut unknown = None;
        let mut waiting = 0;
        for job_id in self.videos.waiting_on(video_url) {
            let mut job = self.jobs.load(&job_id)?;
            if !matches!(job.state, JobState::Pending | JobState::Analyzing) {
                continue;
            }
            waiting += 1;
            match self.checks.job_clearance(&job) {
                Clearance::Clear => return Ok(true),
                Clearance::Refused(reason) => {
                    self.videos.stop_waiting(video_url, &job_id);
                    self.refuse(&mut job, &reason)?;
                }
                Clearance::Unknown(target) => unknown = unknown.or(Some(target)),
            }
        }
        match unknown {
            Some(target) if self.checks.running() => {
                self.checks
                    .videos
                    .entry(target)
                    .or_default()
                    .push(video_url.clone());
                Ok(false)
            }
            Some(_) => Ok(true),
            // Analysed again for jobs already past it (the service forgot it): go ahead.
            None if waiting == 0 => Ok(true),
            // Every job on it was refused: nothing to analyse it for.
            None => Ok(false),
        }
    }

    /// A `ready` job is about to be created: `false` when it must wait for a check of one of
    /// its URLs, or was refused (then it is `invalid`).
    pub(super) fn job_cleared(&mut self, job: &mut Job) -> Result<bool, RunError> {
        if !self.checks.running() && self.checks.verdicts.is_empty() {
            return Ok(true);
        }
        match self.checks.job_clearance(job) {
            Clearance::Clear => Ok(true),
            Clearance::Refused(reason) => {
                self.refuse(job, &reason)?;
                Ok(false)
            }
            Clearance::Unknown(target) if self.checks.running() => {
                self.checks
                    .jobs
                    .entry(target)
                    .or_default()
                    .push(job.id.clone());
                Ok(false)
            }
            Clearance::Unknown(_) => Ok(true),
        }
    }

    /// A check answered: remember it, and let go what waited for it.
    pub(super) fn on_checked(&mut self, check: Option<UrlCheck>) -> Result<(), RunError> {
        let Some(check) = check else {
            // Every check answered: nothing waits for one any more.
            self.checks.results = None;
            for (_, videos) in std::mem::take(&mut self.checks.videos) {
                self.agenda.videos_to_analyze.extend(videos);
            }
            for (_, jobs) in std::mem::take(&mut self.checks.jobs) {
                self.agenda.ready.extend(jobs);
            }
            return Ok(());
        };
        let UrlCheck {
            target, verdict, ..
        } = check;
        if let Verdict::Undecided { warning } = &verdict {
            tracing::warn!(
                "could not check the {} {} ({warning}); its jobs proceed",
                target.kind.noun(),
                display_url(&target.url)
            );
        }
        // A cache, not a fact anything depends on: durable with the next flush that happens
        // anyway (losing it costs a check again).
        let text = serde_json::to_string(&verdict).expect("verdicts serialize");
        self.store.put_check(&key(&target), &text)?;
        self.checks.verdicts.insert(target.clone(), verdict);
        for video_url in self.checks.videos.remove(&target).unwrap_or_default() {
            if self.video_cleared(&video_url)? {
                self.agenda.videos_to_analyze.push_back(video_url);
            }
        }
        // Jobs waiting on this URL are looked at again when their turn comes.
        if let Some(jobs) = self.checks.jobs.remove(&target) {
            self.agenda.ready.extend(jobs);
        }
        Ok(())
    }

    /// Every job waiting on a refused video is refused with it.
    fn refuse_video_jobs(&mut self, video_url: &VideoUrl, reason: &str) -> Result<(), RunError> {
        for job_id in self.videos.take_waiting(video_url) {
            let mut job = self.jobs.load(&job_id)?;
            if matches!(job.state, JobState::Pending | JobState::Analyzing) {
                self.refuse(&mut job, reason)?;
            }
        }
        Ok(())
    }

    fn refuse(&mut self, job: &mut Job, reason: &str) -> Result<(), RunError> {
        tracing::warn!(job = %job.id, "not bought: {reason}");
        let error = JobError::new(None, reason.to_string());
        job.apply(Event::PreflightFailed { error }, now_ms())?;
        self.jobs.save(job)?;
        self.checks.refused += 1;
        Ok(())
    }
}
