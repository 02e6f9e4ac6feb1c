//! The output stage: downloading a finished render to `<out>/<id>.mp4`, and asking the
//! service for a fresh output link when the one we have is refused, unknown, or old enough to
//! be refused.
//!
//! Output links expire after a lifetime nobody documents. A link is therefore refreshed when
//! it is used: right before its download starts when it is older than half the youngest age
//! at which a link was refused so far, and at once when the download is refused (it most
//! likely aged while the job waited for a slot). A job ends `expired` only when the service
//! keeps handing out unusable links for the whole give-up window. A download cut short after
//! making progress resumes from its part file at once, uncounted.
//!
//! Owns nothing of its own; changes jobs only through `Job::apply`. A download starts only
//! after the job's `downloading` state is durable (group commit).

use std::time::Duration;

use tokio::time::Instant;

use crate::akool::{ApiError, RemoteStatus, Task};
use crate::crash;
use crate::download::{DownloadError, DownloadRequest};
use crate::job::{Event, JobError, JobId, Output};
use crate::now_ms;
use crate::objstore::{OutputSource, StoredObject, UploadError, UploadRecord};
use crate::run::dispatch::agenda::{Call, Ticket, Wakeup};
use crate::run::dispatch::{Dispatcher, Key, Request, RunError, StopReason, draw, since_ms};
use crate::run::policy::{self, Decision, DownloadDecision, DownloadFailure, Stage, attempt_error};

/// Links younger than this are never refreshed before use.
const FRESH_ENOUGH: Duration = Duration::from_secs(1);

impl Dispatcher<'_> {
    /// Start a job's download in the download slot `ticket` (or ask for a link first).
    pub(super) fn start_download(&mut self, job_id: JobId, ticket: Ticket) -> Result<(), RunError> {
        let job = self.jobs.load(&job_id)?;
        // A link that waited (for a slot, for a retry) longer than half the youngest age at
        // which one was refused is refreshed first. A link younger than a second is used as
        // it is: refreshing cannot make it younger, and a service whose links live less than
        // that is met by refreshing when refused.
        let link_age = since_ms(job.times.link_ms);
        let stale = link_age >= FRESH_ENOUGH
            && self
                .failures
                .link_refused_at_age
                .is_some_and(|refused| link_age >= refused / 2);
        let url = match job.output_url {
            Some(url) if !stale => url,
            _ => {
                drop(ticket);
                self.agenda.push_call(Call::RefreshOutput(job_id), None);
                return Ok(());
            }
        };
        if let Some(bucket) = &self.settings.bucket {
            // To object storage, from where an earlier attempt (or a killed run) left it.
            let record = match self.store.upload(job_id.as_str())? {
                Some(text) => serde_json::from_str(&text).ok(),
                None => None,
            };
            let record = match record {
                Some(record) => record,
                None => {
                    let key = bucket
                        .destination()
                        .key_for(job_id.as_str())
                        .map_err(|error| {
                            RunError::Output(format!("job {job_id} has no object key: {error}"))
                        })?;
                    UploadRecord::new(key)
                }
            };
            let source = OutputSource {
                url,
                max_bytes: self.settings.max_download_bytes,
                stall_timeout: self.settings.stall_timeout,
            };
            let request = Request::Upload {
                job_id: job_id.clone(),
                source,
                record,
            };
            let task = self.send(request, Some(ticket));
            self.workers.downloads.insert(job_id, task);
            return Ok(());
        }
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
        let job = self.jobs.load(&job_id)?;
        match result {
            Ok(output) => self.output_done(job, output),
            Err(error) => self.output_failed(job, error),
        }
    }

    /// An upload to object storage ended.
    pub(super) fn on_upload(
        &mut self,
        job_id: JobId,
        result: Result<StoredObject, UploadError>,
    ) -> Result<(), RunError> {
        let job = self.jobs.load(&job_id)?;
        let error = match result {
            Ok(object) => {
                // The object's URL is the job's output; its upload record is done with.
                self.store.put_upload(job_id.as_str(), None)?;
                let output = Output {
                    path: object.url,
                    bytes: object.bytes,
                    sha256: object.sha256,
                };
                return self.output_done(job, output);
            }
            Err(UploadError::Download(error)) => error,
            Err(UploadError::Storage(error)) if !error.is_transient() => {
                // The store refuses (credentials, bucket, permissions): not the job's fault;
                // stop, keep the job resumable.
                let message = error.to_string();
                tracing::error!(job = %job_id, "object storage refused the output: {message}");
                let hint = error.hint();
                self.stop(StopReason::Destination { message, hint }, true);
                return Ok(());
            }
            Err(other) => DownloadError::Transient {
                detail: other.to_string(),
            },
        };
        self.output_failed(job, error)
    }

    /// The output is stored (a file renamed into place, or an object completed).
    fn output_done(&mut self, mut job: crate::job::Job, output: Output) -> Result<(), RunError> {
        let job_id = job.id.clone();
        tracing::debug!(job = %job_id, bytes = output.bytes, "done");
        job.apply(Event::Downloaded { output }, now_ms())?;
        self.jobs.save(&job)?;
        self.flush_soon();
        self.commit.after_flush.push(crash::DONE_STORED);
        self.workers.etags.remove(&job_id);
        self.failures.end(&Key::Download(job_id));
        Ok(())
    }

    /// The output stage failed (a download, or a refresh that offered no link): apply the
    /// failure policy.
    fn output_failed(
        &mut self,
        mut job: crate::job::Job,
        error: DownloadError,
    ) -> Result<(), RunError> {
        let now = now_ms();
        let job_id = job.id.clone();
        let key = Key::Download(job_id.clone());
        if let DownloadError::LinkExpired { .. } = error {
            let age = since_ms(job.times.link_ms).max(Duration::from_millis(1));
            let known = self.failures.link_refused_at_age.get_or_insert(age);
            *known = (*known).min(age);
        }
        tracing::debug!(job = %job_id, link_age_ms = since_ms(job.times.link_ms).as_millis() as u64, "output stage failed: {error}");
        let started = Instant::now();
        if let DownloadError::Cut { .. } = error {
            // Progress was made: whatever failed before is behind.
            self.failures.end(&key);
        }
        let (attempts, failing_for) = self.failures.streak(&key, started);
        let failed = match &error {
            DownloadError::LinkExpired { status } => {
                JobError::new(None, format!("output link refused (HTTP {status})"))
            }
            other => JobError::new(None, other.to_string()),
        };
        let failure = DownloadFailure {
            error: &error,
            attempts,
            failing_for,
            draw: draw(),
        };
        let decision = policy::decide_download(&self.settings.retry, failure);
        match decision {
            DownloadDecision::Refresh { .. } | DownloadDecision::Retry { counted: true, .. } => {
                self.failures.count(&key, started);
            }
            _ => {}
        }
        match decision {
            DownloadDecision::Refresh { after } => {
                job.apply(Event::LinkRefused { error: failed }, now)?;
                self.jobs.save(&job)?;
                let refresh = Wakeup::Call(Call::RefreshOutput(job_id), None);
                self.agenda.push_timer(started, after, refresh);
            }
            DownloadDecision::Retry { after, counted } => {
                if counted {
                    job.apply(Event::AttemptFailed { error: failed }, now)?;
                    self.jobs.save(&job)?;
                }
                self.agenda
                    .push_timer(started, after, Wakeup::Download(job_id));
            }
            DownloadDecision::Expire(error) => {
                self.failures.end(&key);
                job.apply(Event::AttemptFailed { error: failed }, now)?;
                job.apply(Event::Expired { error }, now)?;
                self.jobs.save(&job)?;
            }
            DownloadDecision::Fail { error, permanent } => {
                self.failures.end(&key);
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
                        // The job is durably `downloading` already; a fresh link needs no
                        // flush (a crash only means asking for one again), so the download
                        // starts in this turn, while the link is young.
                        job.apply(
                            Event::Rendered {
                                output_url: Some(url),
                            },
                            now,
                        )?;
                        self.jobs.save(&job)?;
                        self.agenda.downloads_waiting.push_front(job_id);
                    }
                    (status, _) => {
                        // A finished render that offers no output now: an unknown status, an
                        // empty link. Asked again later, until the give-up window is spent.
                        let detail = format!("task detail offers no output (status {status:?})");
                        return self.output_failed(job, DownloadError::NoLink { detail });
                    }
                }
                return Ok(());
            }
            Err(error) => error,
        };
        let key = Key::Job(job_id.clone());
        match self.judge(Stage::LinkRefresh, key, &error) {
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
            Decision::Requeue | Decision::Wait | Decision::Ambiguous { .. } => {
                self.agenda.push_call(Call::RefreshOutput(job_id), None);
            }
        }
        Ok(())
    }
}
