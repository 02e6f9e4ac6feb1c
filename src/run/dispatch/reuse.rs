//! Renders bought once: two jobs that ask for the very same render (the same video, faces and
//! options: the same fingerprint) are created once. The first to be created leads; the others
//! follow it (`Job::reused_from`), take its task and write the result under their own id,
//! without a create of their own. `--no-reuse-renders` opts out (two different takes).
//!
//! While the leader's create is on its way, followers wait in `ready`; once it has a task id
//! they move to `rendering` on it and wait for the leader's outcome, which is applied to them
//! too (a fresh link, a failed render, a forgotten task). A follower found at start polls its
//! task like any render.

use std::collections::HashMap;

use crate::job::{Event, Job, JobId, JobState};
use crate::now_ms;
use crate::run::dispatch::agenda::Call;
use crate::run::dispatch::{Dispatcher, RunError};

#[derive(Default)]
pub(super) struct Reuse {
    /// The job that leads each render, by fingerprint: its create is on its way or done.
    leaders: HashMap<String, JobId>,
    /// Jobs waiting for their leader: in `ready` until it has a task id, then in `rendering`
    /// until its render ends.
    followers: HashMap<JobId, Vec<JobId>>,
}

impl Reuse {
    /// A job that may lead its render (it has a task, or its create is about to leave).
    pub(super) fn lead(&mut self, job: &Job) {
        self.leaders
            .entry(job.fingerprint.clone())
            .or_insert_with(|| job.id.clone());
    }
}

impl Dispatcher<'_> {
    /// A `ready` job about to be created: `true` when it follows another job's render instead
    /// (it is then waiting or rendering, and nothing is bought for it).
    pub(super) fn follows(&mut self, job: &mut Job) -> Result<bool, RunError> {
        if !self.settings.reuse_renders {
            return Ok(false);
        }
        let Some(leader_id) = self.reuse.leaders.get(&job.fingerprint).cloned() else {
            self.reuse.lead(job);
            return Ok(false);
        };
        if leader_id == job.id {
            return Ok(false);
        }
        let leader = self.jobs.load(&leader_id)?;
        let usable = leader.fingerprint == job.fingerprint && !leader.render_failed;
        match (leader.state, &leader.task_id) {
            (JobState::Rendering | JobState::Downloading | JobState::Done, Some(task_id))
                if usable =>
            {
                tracing::info!(job = %job.id, leader = %leader_id, "the same render as {leader_id}: reusing it, nothing bought");
                job.apply(
                    Event::Follows {
                        leader: leader_id.clone(),
                        task_id: task_id.clone(),
                    },
                    now_ms(),
                )?;
                self.jobs.save(job)?;
                self.flush_soon();
                if leader.state == JobState::Rendering {
                    self.reuse
                        .followers
                        .entry(leader_id)
                        .or_default()
                        .push(job.id.clone());
                } else {
                    // The leader's render is finished: ask for its output.
                    self.agenda
                        .push_call(Call::TaskDetail(job.id.clone()), None);
                }
                Ok(true)
            }
            (JobState::Ready | JobState::Submitting, _) if usable => {
                // Its create is on its way: wait for the task id.
                self.reuse
                    .followers
                    .entry(leader_id)
                    .or_default()
                    .push(job.id.clone());
                Ok(true)
            }
            _ => {
                // The leader cannot lead any more (failed, expired, held): this job leads.
                self.reuse
                    .leaders
                    .insert(job.fingerprint.clone(), job.id.clone());
                Ok(false)
            }
        }
    }

    /// Something happened to a leader's render: apply it to its followers. `event` is what
    /// the leader got (`Created`, `Rendered`, `RenderFailed`, `RemoteLost`); `None` means the
    /// leader can no longer lead (failed before it was created): its followers go back in line.
    pub(super) fn leader_moved(
        &mut self,
        leader: &Job,
        event: Option<&Event>,
    ) -> Result<(), RunError> {
        let Some(followers) = self.reuse.followers.remove(&leader.id) else {
            return Ok(());
        };
        let now = now_ms();
        let mut still = Vec::new();
        for follower_id in followers {
            let mut follower = self.jobs.load(&follower_id)?;
            match (event, follower.state) {
                (Some(Event::Created { task_id }), JobState::Ready) => {
                    follower.apply(
                        Event::Follows {
                            leader: leader.id.clone(),
                            task_id: task_id.clone(),
                        },
                        now,
                    )?;
                    still.push(follower_id);
                }
                (Some(Event::Rendered { output_url }), JobState::Rendering) => {
                    follower.apply(
                        Event::Rendered {
                            output_url: output_url.clone(),
                        },
                        now,
                    )?;
                    self.agenda.downloads_waiting.push_back(follower_id);
                }
                (Some(Event::RenderFailed { error }), JobState::Rendering) => {
                    follower.apply(
                        Event::RenderFailed {
                            error: error.clone(),
                        },
                        now,
                    )?;
                }
                (Some(Event::RemoteLost { error }), JobState::Rendering) => {
                    follower.apply(
                        Event::RemoteLost {
                            error: error.clone(),
                        },
                        now,
                    )?;
                    self.agenda.ready.push_back(follower_id);
                }
                (None, JobState::Ready) => self.agenda.ready.push_back(follower_id),
                // Anything else: the follower already moved on its own.
                _ => continue,
            }
            self.jobs.save(&follower)?;
        }
        if !still.is_empty() {
            self.reuse.followers.insert(leader.id.clone(), still);
        }
        if event.is_none() {
            self.reuse.leaders.remove(&leader.fingerprint);
        }
        self.flush_soon();
        Ok(())
    }
}
