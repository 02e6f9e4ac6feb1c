//! The output stage: downloading a finished render to `<out>/<id>.mp4`, and asking the
//! service for a fresh output link when the one we have is refused or unknown.
//!
//! Owns nothing of its own; changes jobs only through `Job::apply`. A download starts only
//! after the job's `downloading` state is durable (group commit).

use tokio::time::Instant;

use crate::akool::{ApiError, RemoteStatus, Task};
use crate::crash;
use crate::job::{Event, JobError, JobId, Output};
use crate::now_ms;
use crate::run::dispatch::agenda::{Call, Ticket, Wakeup};
use crate::run::dispatch::{Dispatcher, Key, Request, RunError, StopReason, draw};
use crate::run::download::{DownloadError, DownloadRequest};
use crate::run::policy::{self, Decision, DownloadDecision, Stage, attempt_error};

impl Dispatcher<'_> {
    /// Start a job's download in the download slot `ticket` (or ask for a link first).
    pub(super) fn start_download(&mut self, job_id: JobId, ticket: Ticket) -> Result<(), RunError> {
        let job = self.jobs.load(&job_id)?;
        let Some(url) = job.output_url else {
            drop(ticket);
            self.agenda.push_call(Call::RefreshOutput(job_id), None);
            return Ok(());
        };
        let request = DownloadRequest {
            job_id: job_id.clone(),
            url,
            out_dir: self.settings.out_dir.clone(),
            max_bytes: self.settings.max_download_bytes,
            stall_timeout: self.settings.stall_timeout,
        };
        let etag = self.workers.etags.get(&job_id).cloned();
        let task = self.send(Request::Download { request, etag }, Some(ticket));
        self.workers.downloads.insert(job_id, task);
        Ok(())
    }

    pub(super) fn on_download(
        &mut self,
        job_id: JobId,
        result: Result<Output, DownloadError>,
    ) -> Result<(), RunError> {
        let now = now_ms();
        let mut job = self.jobs.load(&job_id)?;
        let error = match result {
            Ok(output) => {
                tracing::debug!(job = %job_id, bytes = output.bytes, "done");
                job.apply(Event::Downloaded { output }, now)?;
                self.jobs.save(&job)?;
                self.flush_soon();
                self.commit.after_flush.push(crash::DONE_STORED);
                self.workers.etags.remove(&job_id);
                return Ok(());
            }
            Err(error) => error,
        };
        let failed = match &error {
            DownloadError::LinkExpired { status } => {
                JobError::new(None, format!("output link refused (HTTP {status})"))
            }
            other => JobError::new(None, other.to_string()),
        };
        match policy::decide_download(&self.settings.retry, &error, job.attempts, draw()) {
            DownloadDecision::Refresh => {
                job.apply(Event::LinkRefused { error: failed }, now)?;
                self.jobs.save(&job)?;
                self.agenda.push_call(Call::RefreshOutput(job_id), None);
            }
            DownloadDecision::Retry { after } => {
                job.apply(Event::AttemptFailed { error: failed }, now)?;
                self.jobs.save(&job)?;
                self.agenda
                    .push_timer(Instant::now(), after, Wakeup::Download(job_id));
            }
            DownloadDecision::Expire(error) => {
                job.apply(Event::AttemptFailed { error: failed }, now)?;
                job.apply(Event::Expired { error }, now)?;
                self.jobs.save(&job)?;
            }
            DownloadDecision::Fail { error, permanent } => {
                if !permanent {
                    job.apply(Event::AttemptFailed { error: failed }, now)?;
                }
                job.apply(Event::Failed { error }, now)?;
                self.jobs.save(&job)?;
            }
            DownloadDecision::StopRun => {
                // The disk, not the job, is the problem: stop, keep the job resumable.
                let DownloadError::Local { path, detail } = error else {
                    unreachable!("only a local error stops the run")
                };
                tracing::error!(job = %job_id, "cannot write {path}: {detail}");
                self.stop(StopReason::LocalDisk { path, detail }, true);
            }
        }
        Ok(())
    }

    /// The answer to a request for a fresh output link.
    pub(super) fn on_link_refresh(
        &mut self,
        job_id: JobId,
        result: Result<Task, ApiError>,
    ) -> Result<(), RunError> {
        let now = now_ms();
        let mut job = self.jobs.load(&job_id)?;
        let error = match result {
            Ok(task) => {
                self.succeeded(&Key::Job(job_id.clone()));
                match (task.status, task.output_url) {
                    (RemoteStatus::Completed, Some(url)) => {
                        job.apply(
                            Event::Rendered {
                                output_url: Some(url),
                            },
                            now,
                        )?;
                        self.jobs.save(&job)?;
                        self.flush_soon();
                        self.commit.after_flush.push(crash::RENDER_STORED);
                        self.agenda.downloads_waiting.push_back(job_id);
                    }
                    (status, _) => {
                        // A finished render that no longer offers its output.
                        let error = JobError::new(
                            None,
                            format!("task detail offers no output (status {status:?})"),
                        );
                        job.apply(Event::Expired { error }, now)?;
                        self.jobs.save(&job)?;
                    }
                }
                return Ok(());
            }
            Err(error) => error,
        };
        let key = Key::Job(job_id.clone());
        match self.judge(Stage::LinkRefresh, key, &error, job.attempts) {
            Decision::Restart => self.render_again(job_id, &error)?,
            Decision::Retry { after, counted } => {
                if counted {
                    let error = attempt_error(&error);
                    job.apply(Event::AttemptFailed { error }, now)?;
                    self.jobs.save(&job)?;
                }
                self.agenda.push_timer(
                    Instant::now(),
                    after,
                    Wakeup::Call(Call::RefreshOutput(job_id), None),
                );
            }
            Decision::Fail { error: failure, .. } => {
                job.apply(
                    Event::AttemptFailed {
                        error: attempt_error(&error),
                    },
                    now,
                )?;
                job.apply(Event::Failed { error: failure }, now)?;
                self.jobs.save(&job)?;
            }
            Decision::Abandon => {}
            Decision::Requeue | Decision::Ambiguous { .. } => {
                self.agenda.push_call(Call::RefreshOutput(job_id), None);
            }
        }
        Ok(())
    }
}
