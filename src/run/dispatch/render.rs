//! The render stage: creating a job's task (the one call that spends credits) and polling it
//! until the service has rendered it.
//!
//! Owns nothing of its own; changes jobs only through `Job::apply`. **A create leaves only
//! after its `submitting` intent is flushed**, and its task id is flushed in the turn it
//! arrives.

use tokio::time::Instant;

use crate::akool::{ApiError, CreateTask, RemoteStatus, Task};
use crate::crash;
use crate::job::{Event, JobError, JobId, JobState};
use crate::now_ms;
use crate::run::dispatch::agenda::{Call, Ticket, Wakeup};
use crate::run::dispatch::{
    Dispatcher, Key, Request, RunError, SYSTEMIC_REJECTIONS, StopReason, since_ms,
};
use crate::run::policy::{Decision, Stage, ambiguous_text, attempt_error};

impl Dispatcher<'_> {
    /// Create a job's render: the intent is written, the request leaves after the flush.
    pub(super) fn start_create(
        &mut self,
        job_id: JobId,
        ticket: Option<Ticket>,
    ) -> Result<(), RunError> {
        let mut job = self.jobs.load(&job_id)?;
        if job.state == JobState::Ready {
            job.apply(Event::SubmitIntent, now_ms())?;
            self.jobs.save(&job)?;
        }
        let body = CreateTask {
            video_url: job.spec.video_url.into_string(),
            mappings: job.mappings,
            model_name: job.spec.model_name,
            resolution: job.spec.resolution,
            template_id: job.spec.template_id,
            keep_original_sound: job.spec.keep_original_sound,
        };
        self.send_after_commit(
            crash::CREATE_INTENT_FLUSHED,
            Request::Create { job_id, body },
            ticket,
        );
        Ok(())
    }

    /// Poll a render, or ask a finished one for a fresh output link.
    pub(super) fn start_task_detail(
        &mut self,
        job_id: JobId,
        ticket: Option<Ticket>,
        refresh: bool,
    ) -> Result<(), RunError> {
        let job = self.jobs.load(&job_id)?;
        let refresh = refresh || job.state == JobState::Downloading;
        let task_id = job.task_id.unwrap_or_default();
        self.send(
            Request::TaskDetail {
                job_id,
                task_id,
                refresh,
            },
            ticket,
        );
        Ok(())
    }

    pub(super) fn on_create(
        &mut self,
        job_id: JobId,
        result: Result<Task, ApiError>,
        ticket: Option<Ticket>,
    ) -> Result<(), RunError> {
        let now = now_ms();
        let mut job = self.jobs.load(&job_id)?;
        let error = match result {
            Ok(task) => {
                crash::point(crash::CREATE_ANSWERED);
                self.succeeded(&Key::Job(job_id.clone()));
                self.failures.rejections = None;
                let created = Event::Created { task_id: task.id };
                job.apply(created.clone(), now)?;
                self.jobs.save(&job)?;
                self.leader_moved(&job, Some(&created))?;
                // The task id is the only handle on what was paid for: durable in this
                // turn's flush, before anything else is started.
                self.flush_soon();
                self.commit.after_flush.push(crash::CREATE_STORED);
                self.schedule_first_poll(Call::TaskDetail(job_id), ticket);
                return Ok(());
            }
            Err(error) => error,
        };
        if let ApiError::Rejected {
            code: 1003,
            message,
        } = &error
        {
            if self.videos.analysis_in_progress(&job.spec.video_url) {
                // Refused because the service forgot the video's analysis, which is being
                // redone: not the job's fault, and nothing was created. Wait for the analysis.
                tracing::warn!(job = %job_id, "create refused while the video is analysed again ({message}); waiting for the analysis");
                drop(ticket);
                job.apply(Event::SubmitAborted, now)?;
                self.jobs.save(&job)?;
                self.agenda.ready.push_back(job_id);
                return Ok(());
            }
        }
        let key = Key::Job(job_id.clone());
        match self.judge(Stage::Create, key, &error) {
            Decision::Ambiguous {
                hold,
                after,
                give_up,
            } => {
                // The request left and no answer came back: it may have been created and
                // billed. There is no way to ask the service, so the job is flagged.
                drop(ticket);
                let lost = JobError::new(None, ambiguous_text(&error));
                tracing::warn!(job = %job_id, "{}; {}", lost.message,
                    if hold { "holding the job" } else { "submitting again, flagged possible_duplicate" });
                job.apply(
                    Event::Ambiguous {
                        hold,
                        error: Some(lost.clone()),
                    },
                    now,
                )?;
                if !hold {
                    job.apply(Event::AttemptFailed { error: lost }, now)?;
                    match give_up {
                        Some(error) => {
                            job.apply(Event::Failed { error }, now)?;
                            self.leader_moved(&job, None)?;
                        }
                        None if after.is_zero() => self.agenda.ready.push_front(job_id),
                        None => {
                            self.agenda
                                .push_timer(Instant::now(), after, Wakeup::Ready(job_id))
                        }
                    }
                }
                self.jobs.save(&job)?;
                self.flush_soon();
            }
            Decision::Requeue | Decision::Wait => {
                // Throttled, or refused by a service that is down, so not carried out: back
                // to `ready` until the create leaves again (with a fresh, flushed intent). A
                // stop before then must not find the job in `submitting` and flag it.
                job.apply(Event::SubmitAborted, now)?;
                self.jobs.save(&job)?;
                self.agenda.push_call(Call::Create(job_id), ticket);
            }
            Decision::Retry { after, counted } => {
                // Certainly not processed (the connection never opened, or the service
                // answered 2001): back to `ready`, and in line again after a backoff.
                drop(ticket);
                job.apply(Event::SubmitAborted, now)?;
                if counted {
                    let error = attempt_error(&error);
                    job.apply(Event::AttemptFailed { error }, now)?;
                }
                self.jobs.save(&job)?;
                self.agenda
                    .push_timer(Instant::now(), after, Wakeup::Ready(job_id));
            }
            Decision::Fail {
                error: failure,
                permanent,
            } => {
                drop(ticket);
                if !permanent {
                    job.apply(Event::SubmitAborted, now)?;
                    let error = attempt_error(&error);
                    job.apply(Event::AttemptFailed { error }, now)?;
                }
                job.apply(Event::Failed { error: failure }, now)?;
                self.jobs.save(&job)?;
                self.leader_moved(&job, None)?;
                if let ApiError::Rejected { code, message } = &error {
                    self.note_rejection(job_id, *code, message)?;
                }
            }
            // Refused before it ran (credits, authorization), or not a create's outcome.
            Decision::Abandon | Decision::Restart => {
                drop(ticket);
                job.apply(Event::SubmitAborted, now)?;
                self.jobs.save(&job)?;
            }
        }
        Ok(())
    }

    pub(super) fn on_task_detail(
        &mut self,
        job_id: JobId,
        result: Result<Task, ApiError>,
        ticket: Option<Ticket>,
    ) -> Result<(), RunError> {
        let now = now_ms();
        let mut job = self.jobs.load(&job_id)?;
        let first_poll = self.polls.first_render_polls.remove(&job_id);
        let task = match result {
            Ok(task) => task,
            Err(error) => return self.render_poll_failed(job_id, error, ticket),
        };
        self.succeeded(&Key::Job(job_id.clone()));
        if first_poll {
            let wanted = self.first_poll_hits_wanted();
            self.polls
                .render
                .first_poll_found(!task.status.is_running(), wanted);
        }
        let submitted_ms = job.times.submitted_ms;
        let elapsed = since_ms(submitted_ms);
        let call = Call::TaskDetail(job_id.clone());
        if !task.status.is_running() {
            self.poll_found_finished(&call, submitted_ms);
        }
        match (task.status, task.output_url) {
            (RemoteStatus::Completed, Some(url)) => {
                drop(ticket);
                self.polls.render.record(elapsed);
                self.polls.learned();
                self.release_deferred();
                let rendered = Event::Rendered {
                    output_url: Some(url),
                };
                job.apply(rendered.clone(), now)?;
                self.jobs.save(&job)?;
                self.leader_moved(&job, Some(&rendered))?;
                // The download is a side effect on disk: its state goes first (the download
                // starts after this turn's flush).
                self.flush_soon();
                self.commit.after_flush.push(crash::RENDER_STORED);
                self.agenda.downloads_waiting.push_back(job_id);
            }
            (RemoteStatus::Failed, _) => {
                drop(ticket);
                let reason = task
                    .error_reason
                    .filter(|reason| !reason.is_empty())
                    .unwrap_or_else(|| "no reason given".into());
                let error = JobError::new(task.error_code, format!("render failed: {reason}"));
                let failed = Event::RenderFailed { error };
                job.apply(failed.clone(), now)?;
                self.jobs.save(&job)?;
                self.leader_moved(&job, Some(&failed))?;
            }
            (status, _) => {
                self.note_unknown_status(status);
                if status.is_running() {
                    self.polls.render.observe_running(elapsed, task.progress);
                    self.release_deferred();
                }
                self.poll_again(call, submitted_ms, task.progress, ticket);
            }
        }
        Ok(())
    }

    fn render_poll_failed(
        &mut self,
        job_id: JobId,
        error: ApiError,
        ticket: Option<Ticket>,
    ) -> Result<(), RunError> {
        let mut job = self.jobs.load(&job_id)?;
        let key = Key::Job(job_id.clone());
        match self.judge(Stage::RenderPoll, key, &error) {
            Decision::Restart => {
                drop(ticket);
                self.render_again(job_id, &error)?;
            }
            Decision::Retry { after, counted } => {
                if counted {
                    let error = attempt_error(&error);
                    job.apply(Event::AttemptFailed { error }, now_ms())?;
                    self.jobs.save(&job)?;
                }
                self.agenda.push_timer(
                    Instant::now(),
                    after,
                    Wakeup::Call(Call::TaskDetail(job_id), ticket),
                );
            }
            Decision::Fail { error: failure, .. } => {
                drop(ticket);
                let now = now_ms();
                let error = attempt_error(&error);
                job.apply(Event::AttemptFailed { error }, now)?;
                job.apply(Event::Failed { error: failure }, now)?;
                self.jobs.save(&job)?;
            }
            Decision::Abandon => drop(ticket),
            Decision::Requeue | Decision::Wait | Decision::Ambiguous { .. } => {
                self.agenda.push_call(Call::TaskDetail(job_id), ticket);
            }
        }
        Ok(())
    }

    /// The task is gone at the service (1014): its render cannot be fetched. Render again,
    /// after the video is analysed again (the service most likely forgot that too).
    pub(super) fn render_again(&mut self, job_id: JobId, error: &ApiError) -> Result<(), RunError> {
        let message = match error {
            ApiError::NotFound { message } => message.clone(),
            other => other.to_string(),
        };
        tracing::warn!(job = %job_id, "task no longer known to the service ({message}); rendering again");
        let mut job = self.jobs.load(&job_id)?;
        let error = JobError::new(Some(1014), format!("task not found: {message}"));
        let lost = Event::RemoteLost { error };
        job.apply(lost.clone(), now_ms())?;
        self.jobs.save(&job)?;
        self.leader_moved(&job, Some(&lost))?;
        self.analyze_again(&job.spec.video_url)?;
        self.agenda.ready.push_back(job_id);
        Ok(())
    }

    /// A create was rejected. The same answer on several creates in a row is about the account
    /// or the options, not the jobs: undo those failures and stop submitting.
    fn note_rejection(&mut self, job_id: JobId, code: i64, message: &str) -> Result<(), RunError> {
        let mut streak = match self.failures.rejections.take() {
            Some((previous, ids)) if previous == message => ids,
            _ => Vec::new(),
        };
        streak.push(job_id);
        if streak.len() < SYSTEMIC_REJECTIONS {
            self.failures.rejections = Some((message.to_string(), streak));
            return Ok(());
        }
        tracing::error!(
            code,
            "{} creates in a row were rejected with: {message}",
            streak.len()
        );
        let now = now_ms();
        for id in streak {
            let mut job = self.jobs.load(&id)?;
            job.apply(Event::Retry, now)?;
            self.jobs.save(&job)?;
        }
        let reason = StopReason::SystemicRejection {
            code,
            message: message.to_string(),
        };
        self.stop(reason, false);
        Ok(())
    }
}
