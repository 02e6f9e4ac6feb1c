//! Resuming: go through every job once at the start of a run and re-attach to whatever is at
//! the service. Jobs caught in the ambiguous window are resolved (flagged for resubmission,
//! or held) before anything is sent; only ids and states stay in memory.
//!
//! Writes through the store; the caller flushes before the loop starts.

use std::collections::HashSet;

use crate::job::{AnalysisEvent, AnalysisState, Event, JobError, JobState, VideoUrl};
use crate::now_ms;
use crate::preflight::{Checker, Target};
use crate::run::dispatch::agenda::Call;
use crate::run::dispatch::{Dispatcher, RunError};
use crate::run::policy::OnAmbiguous;

impl Dispatcher<'_> {
    /// `preflight`: the URL checker, when preflight is on.
    pub fn resume(&mut self, preflight: Option<&Checker>) -> Result<(), RunError> {
        let now = now_ms();
        // The URLs the waiting jobs need checked, in job order (the first jobs first).
        let mut targets = Vec::new();
        for record in self.store.analyses() {
            self.videos.insert(record?);
        }
        let mut videos_redone = HashSet::new();
        for job in self.store.jobs() {
            let mut job = job?;
            if matches!(
                job.state,
                JobState::Pending | JobState::Analyzing | JobState::Ready
            ) {
                targets.push(Target::video(job.spec.video_url.as_str()));
                targets.extend(
                    job.spec
                        .faces
                        .iter()
                        .map(|face| Target::face(face.face_url.as_str())),
                );
            }
            if job.task_id.is_some()
                && !job.render_failed
                && matches!(
                    job.state,
                    JobState::Rendering | JobState::Downloading | JobState::Done
                )
            {
                self.reuse.lead(&job);
            }
            match job.state {
                JobState::Pending | JobState::Analyzing => self.videos.wait_on(&job),
                JobState::Ready => {
                    if self.videos.analysis_in_progress(&job.spec.video_url) {
                        videos_redone.insert(job.spec.video_url.clone());
                    }
                    self.agenda.ready.push_back(job.id.clone());
                }
                JobState::Submitting => {
                    // Died between the intent and storing the answer: the create may have been
                    // sent. There is no way to ask the service, so flag (or hold) it.
                    let hold = self.settings.on_ambiguous == OnAmbiguous::Hold;
                    tracing::warn!(
                        job = %job.id,
                        "a create for this job may have been sent before the last run stopped; {}",
                        if hold { "holding it (state held)" } else { "submitting again, flagged possible_duplicate" }
                    );
                    job.apply(Event::Ambiguous { hold, error: None }, now)?;
                    self.jobs.save(&job)?;
                    if !hold {
                        self.agenda.ready.push_back(job.id.clone());
                    }
                }
                JobState::Rendering => {
                    // At the service whether counted or not: it takes a slot.
                    let ticket = self.agenda.service.take_anyway();
                    self.agenda
                        .push_call(Call::TaskDetail(job.id.clone()), Some(ticket));
                }
                JobState::Downloading => {
                    if job.output_url.is_some() {
                        self.agenda.downloads_waiting.push_back(job.id.clone());
                    } else {
                        self.agenda
                            .push_call(Call::RefreshOutput(job.id.clone()), None);
                    }
                }
                JobState::Done
                | JobState::Failed
                | JobState::Invalid
                | JobState::NeedsMapping
                | JobState::Expired
                | JobState::Held => {}
            }
            self.jobs.note(&job);
        }
        self.start_checks(preflight, targets)?;
        let mut videos_needed: Vec<VideoUrl> = self.videos.waited_on().cloned().collect();
        videos_needed.extend(videos_redone);
        videos_needed.sort_unstable();
        videos_needed.dedup();
        for video_url in videos_needed {
            self.resume_video(video_url, now)?;
        }
        Ok(())
    }

    /// Re-attach a video's analysis, or queue it.
    fn resume_video(&mut self, video_url: VideoUrl, now: u64) -> Result<(), RunError> {
        let record = self.videos.entry(&video_url, now);
        match record.state {
            AnalysisState::Pending => {
                if self.video_cleared(&video_url)? {
                    self.agenda.videos_to_analyze.push_back(video_url);
                }
            }
            AnalysisState::Submitting => {
                // An analysis costs nothing: one lost in the window is simply asked again.
                record.apply(AnalysisEvent::SubmitAborted, now)?;
                self.store.put_analysis(record)?;
                if self.video_cleared(&video_url)? {
                    self.agenda.videos_to_analyze.push_back(video_url);
                }
            }
            AnalysisState::Running => {
                let ticket = self.agenda.service.take_anyway();
                self.show_analyzing(&video_url);
                self.agenda
                    .push_call(Call::AnalysisDetail(video_url), Some(ticket));
            }
            AnalysisState::Completed => {
                let subjects = record.subjects.clone();
                self.map_jobs(&video_url, &subjects)?;
            }
            AnalysisState::Failed => {
                let error = record
                    .last_error
                    .clone()
                    .unwrap_or_else(|| JobError::new(None, "the analysis of this video failed"));
                self.fail_video_jobs(&video_url, error)?;
            }
        }
        Ok(())
    }
}
