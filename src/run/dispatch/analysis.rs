//! The analysis stage: one analysis per distinct video, shared by every job on it; submitting
//! it, polling it, and choosing each waiting job's subjects when it completes.
//!
//! Owns the per-video records of this run ([`Videos`]) and the jobs waiting on them. Changes
//! records only through `AnalysisRecord::apply` and jobs only through `Job::apply`.

use std::collections::HashMap;

use tokio::time::Instant;

use crate::akool::{Analysis, ApiError, RemoteStatus, Subject};
use crate::crash;
use crate::job::{
    AnalysisEvent, AnalysisRecord, Choice, Event, Job, JobError, JobId, JobState, VideoUrl,
    choose_mappings,
};
use crate::journal::Fact;
use crate::now_ms;
use crate::run::dispatch::agenda::{Call, Ticket, Wakeup};
use crate::run::dispatch::{Dispatcher, Key, Request, RunError, since_ms};
use crate::run::policy::{Decision, Stage, attempt_error};
use crate::store::Store;

/// The videos of this run: their analyses, and the jobs that wait on them.
#[derive(Debug, Default)]
pub struct Videos {
    /// Analyses of the videos that jobs in this run wait on.
    records: HashMap<VideoUrl, AnalysisRecord>,
    /// Jobs in `pending` or `analyzing`, by the video they wait on.
    waiting: HashMap<VideoUrl, Vec<JobId>>,
    /// `ready` jobs whose video is being analysed again (the service forgot it): their create
    /// waits for that analysis.
    parked: HashMap<VideoUrl, Vec<JobId>>,
}

impl Videos {
    /// Whether the video's analysis is under way again, so a `ready` job on it must wait.
    pub fn analysis_in_progress(&self, video_url: &VideoUrl) -> bool {
        self.records
            .get(video_url)
            .is_some_and(AnalysisRecord::in_progress)
    }

    /// A `ready` job waits for its video's analysis before its create.
    pub fn park(&mut self, video_url: VideoUrl, job_id: JobId) {
        self.parked.entry(video_url).or_default().push(job_id);
    }

    /// A `pending` or `analyzing` job waits for its video's analysis.
    pub fn wait_on(&mut self, job: &Job) {
        self.waiting
            .entry(job.spec.video_url.clone())
            .or_default()
            .push(job.id.clone());
    }

    pub fn insert(&mut self, record: AnalysisRecord) {
        self.records.insert(record.video_url.clone(), record);
    }

    /// The record of a video, created `pending` if this run has none.
    pub fn entry(&mut self, video_url: &VideoUrl, now_ms: u64) -> &mut AnalysisRecord {
        self.records
            .entry(video_url.clone())
            .or_insert_with(|| AnalysisRecord::new(video_url.clone(), now_ms))
    }

    /// The videos jobs wait on.
    pub fn waited_on(&self) -> impl Iterator<Item = &VideoUrl> {
        self.waiting.keys()
    }

    /// The jobs waiting on a video.
    pub fn waiting_on(&self, video_url: &VideoUrl) -> Vec<JobId> {
        self.waiting.get(video_url).cloned().unwrap_or_default()
    }

    /// A job no longer waits on its video.
    pub fn stop_waiting(&mut self, video_url: &VideoUrl, job_id: &JobId) {
        if let Some(waiting) = self.waiting.get_mut(video_url) {
            waiting.retain(|waiting| waiting != job_id);
        }
    }

    /// The jobs waiting on a video, which stop waiting.
    pub fn take_waiting(&mut self, video_url: &VideoUrl) -> Vec<JobId> {
        self.waiting.remove(video_url).unwrap_or_default()
    }

    fn record(&self, video_url: &VideoUrl) -> &AnalysisRecord {
        self.records
            .get(video_url)
            .expect("a video in the pipeline has an analysis record")
    }

    /// Apply an event to a video's analysis and write the record through the store.
    fn apply(
        &mut self,
        store: &Store,
        video_url: &VideoUrl,
        event: AnalysisEvent,
    ) -> Result<&AnalysisRecord, RunError> {
        let record = self
            .records
            .get_mut(video_url)
            .expect("a video in the pipeline has an analysis record");
        record.apply(event, now_ms())?;
        store.put_analysis(record)?;
        Ok(record)
    }
}

impl Dispatcher<'_> {
    /// Submit a video's analysis: the intent is written, the request leaves after the flush.
    pub(super) fn start_analyze(
        &mut self,
        video_url: VideoUrl,
        ticket: Option<Ticket>,
    ) -> Result<(), RunError> {
        self.videos
            .apply(self.store, &video_url, AnalysisEvent::SubmitIntent)?;
        self.show_analyzing(&video_url);
        self.send_after_commit(
            crash::ANALYZE_INTENT_FLUSHED,
            Request::Analyze { video_url },
            ticket,
        );
        Ok(())
    }

    pub(super) fn start_analysis_poll(
        &mut self,
        video_url: VideoUrl,
        ticket: Option<Ticket>,
    ) -> Result<(), RunError> {
        let analysis_id = self
            .videos
            .record(&video_url)
            .analysis_id
            .clone()
            .unwrap_or_default();
        self.send(
            Request::AnalysisDetail {
                video_url,
                analysis_id,
            },
            ticket,
        );
        Ok(())
    }

    pub(super) fn on_analyze(
        &mut self,
        video_url: VideoUrl,
        result: Result<Analysis, ApiError>,
        ticket: Option<Ticket>,
    ) -> Result<(), RunError> {
        let error = match result {
            Ok(analysis) => {
                crash::point(crash::ANALYZE_ANSWERED);
                self.succeeded(&Key::Video(video_url.clone()));
                if let Some(journal) = &mut self.jobs.journal {
                    journal.append(&Fact::analysis(video_url.as_str(), &analysis.id, now_ms()));
                }
                self.videos.apply(
                    self.store,
                    &video_url,
                    AnalysisEvent::Accepted {
                        analysis_id: analysis.id,
                    },
                )?;
                self.flush_soon();
                self.schedule_first_poll(Call::AnalysisDetail(video_url), ticket);
                return Ok(());
            }
            Err(error) => error,
        };
        let key = Key::Video(video_url.clone());
        match self.judge(Stage::Analyze, key, &error) {
            Decision::Fail { error, .. } => {
                drop(ticket);
                self.fail_analysis(&video_url, error)?;
            }
            Decision::Retry { after, counted } => {
                self.videos
                    .apply(self.store, &video_url, AnalysisEvent::SubmitAborted)?;
                if counted {
                    let event = AnalysisEvent::AttemptFailed {
                        error: attempt_error(&error),
                    };
                    self.videos.apply(self.store, &video_url, event)?;
                }
                self.agenda.push_timer(
                    Instant::now(),
                    after,
                    Wakeup::Call(Call::Analyze(video_url), ticket),
                );
            }
            Decision::Abandon => {
                drop(ticket);
                self.videos
                    .apply(self.store, &video_url, AnalysisEvent::SubmitAborted)?;
            }
            // Throttled, or the service is down (restarts and ambiguity are about polls and
            // creates): in line again, with a fresh intent when it leaves.
            Decision::Requeue | Decision::Wait | Decision::Restart | Decision::Ambiguous { .. } => {
                self.videos
                    .apply(self.store, &video_url, AnalysisEvent::SubmitAborted)?;
                self.agenda.push_call(Call::Analyze(video_url), ticket);
            }
        }
        Ok(())
    }

    pub(super) fn on_analysis_detail(
        &mut self,
        video_url: VideoUrl,
        result: Result<Analysis, ApiError>,
        ticket: Option<Ticket>,
    ) -> Result<(), RunError> {
        let first_poll = self.polls.first_analysis_polls.remove(&video_url);
        let analysis = match result {
            Ok(analysis) => analysis,
            Err(error) => return self.analysis_poll_failed(video_url, error, ticket),
        };
        self.succeeded(&Key::Video(video_url.clone()));
        if first_poll {
            let wanted = self.first_poll_hits_wanted();
            self.polls
                .analysis
                .first_poll_found(!analysis.status.is_running(), wanted);
        }
        let submitted_ms = self.videos.record(&video_url).submitted_ms;
        let elapsed = since_ms(submitted_ms);
        let call = Call::AnalysisDetail(video_url.clone());
        if !analysis.status.is_running() {
            self.poll_found_finished(&call, submitted_ms);
        }
        match analysis.status {
            RemoteStatus::Completed => {
                drop(ticket);
                self.polls.analysis.record(elapsed);
                self.polls.learned();
                self.release_deferred();
                let event = AnalysisEvent::Completed {
                    subjects: analysis.subjects.clone(),
                };
                self.videos.apply(self.store, &video_url, event)?;
                self.map_jobs(&video_url, &analysis.subjects)?;
                let parked = self.videos.parked.remove(&video_url);
                self.agenda.ready.extend(parked.unwrap_or_default());
                self.flush_soon();
            }
            RemoteStatus::Failed => {
                drop(ticket);
                let reason = analysis
                    .error_reason
                    .filter(|reason| !reason.is_empty())
                    .unwrap_or_else(|| "no reason given".into());
                let error = JobError::new(
                    analysis.error_code.filter(|code| *code != 0),
                    format!("analysis failed: {reason}"),
                );
                self.fail_analysis(&video_url, error)?;
            }
            status => {
                self.note_unknown_status(status);
                self.videos
                    .apply(self.store, &video_url, AnalysisEvent::Answered)?;
                self.polls
                    .analysis
                    .observe_running(elapsed, analysis.progress);
                self.release_deferred();
                self.poll_again(call, submitted_ms, analysis.progress, ticket);
            }
        }
        Ok(())
    }

    fn analysis_poll_failed(
        &mut self,
        video_url: VideoUrl,
        error: ApiError,
        ticket: Option<Ticket>,
    ) -> Result<(), RunError> {
        let key = Key::Video(video_url.clone());
        match self.judge(Stage::AnalysisPoll, key, &error) {
            Decision::Restart => {
                // The analysis record is gone at the service: analyze again.
                tracing::warn!(video = %video_url, "analysis no longer known to the service ({error}); analyzing again");
                drop(ticket);
                self.videos
                    .apply(self.store, &video_url, AnalysisEvent::Lost)?;
                self.agenda.videos_to_analyze.push_front(video_url);
            }
            Decision::Retry { after, counted } => {
                if counted {
                    let event = AnalysisEvent::AttemptFailed {
                        error: attempt_error(&error),
                    };
                    self.videos.apply(self.store, &video_url, event)?;
                }
                self.agenda.push_timer(
                    Instant::now(),
                    after,
                    Wakeup::Call(Call::AnalysisDetail(video_url), ticket),
                );
            }
            Decision::Fail { error: failure, .. } => {
                drop(ticket);
                let event = AnalysisEvent::AttemptFailed {
                    error: attempt_error(&error),
                };
                self.videos.apply(self.store, &video_url, event)?;
                self.fail_analysis(&video_url, failure)?;
            }
            Decision::Abandon => drop(ticket),
            Decision::Requeue | Decision::Wait | Decision::Ambiguous { .. } => {
                self.agenda
                    .push_call(Call::AnalysisDetail(video_url), ticket);
            }
        }
        Ok(())
    }

    /// The video's analysis was submitted: the jobs waiting on it are shown `analyzing`.
    pub(super) fn show_analyzing(&mut self, video_url: &VideoUrl) {
        for job_id in self.videos.waiting.get(video_url).into_iter().flatten() {
            self.jobs.show_as(job_id, JobState::Analyzing);
        }
    }

    /// After an analysis completes: choose each waiting job's subjects.
    pub(super) fn map_jobs(
        &mut self,
        video_url: &VideoUrl,
        subjects: &[Subject],
    ) -> Result<(), RunError> {
        let now = now_ms();
        let analysis_id = self.videos.record(video_url).analysis_id.clone();
        for job_id in self.videos.waiting.remove(video_url).unwrap_or_default() {
            let mut job = self.jobs.load(&job_id)?;
            if !matches!(job.state, JobState::Pending | JobState::Analyzing) {
                continue;
            }
            if job.state == JobState::Pending || job.analysis_id.is_none() {
                // Which analysis the job's subjects come from, for the export and support.
                job.apply(
                    Event::AnalysisStarted {
                        analysis_id: analysis_id.clone(),
                    },
                    now,
                )?;
            }
            let event = match choose_mappings(&job, subjects, self.settings.multi_subject) {
                Choice::Mapped(mappings) => {
                    self.agenda.ready.push_back(job_id.clone());
                    Event::Mapped { mappings }
                }
                Choice::NeedsMapping => Event::NeedsMapping {
                    subjects: subjects.to_vec(),
                },
                Choice::Fail(message) => Event::Failed {
                    error: JobError::new(None, message),
                },
            };
            job.apply(event, now)?;
            self.jobs.save(&job)?;
        }
        Ok(())
    }

    fn fail_analysis(&mut self, video_url: &VideoUrl, error: JobError) -> Result<(), RunError> {
        let event = AnalysisEvent::Failed {
            error: error.clone(),
        };
        self.videos.apply(self.store, video_url, event)?;
        self.fail_video_jobs(video_url, error)
    }

    /// Every job waiting on a video whose analysis failed fails with it.
    pub(super) fn fail_video_jobs(
        &mut self,
        video_url: &VideoUrl,
        error: JobError,
    ) -> Result<(), RunError> {
        let now = now_ms();
        let waiting = self.videos.waiting.remove(video_url).unwrap_or_default();
        let parked = self.videos.parked.remove(video_url).unwrap_or_default();
        for job_id in waiting.into_iter().chain(parked) {
            let mut job = self.jobs.load(&job_id)?;
            if !job.state.is_final() {
                job.apply(
                    Event::Failed {
                        error: error.clone(),
                    },
                    now,
                )?;
                self.jobs.save(&job)?;
            }
        }
        Ok(())
    }

    /// A service that forgot a task (1014) has most likely forgotten the video's analysis as
    /// well (a restart, a purge), and refuses a create for an unanalysed video (1003): analyse
    /// it again, once, before the job is created again. An analysis costs no credits.
    pub(super) fn analyze_again(&mut self, video_url: &VideoUrl) -> Result<(), RunError> {
        let completed = self
            .videos
            .records
            .get(video_url)
            .is_some_and(|record| record.state == crate::job::AnalysisState::Completed);
        if !completed {
            // Unknown to this run, or already being redone for another job on this video.
            return Ok(());
        }
        self.videos
            .apply(self.store, video_url, AnalysisEvent::Lost)?;
        self.agenda.videos_to_analyze.push_front(video_url.clone());
        Ok(())
    }
}
