//! The run's jobs as the loop sees them: an in-memory index of ids, states and flags, with the
//! records themselves in the store.
//!
//! [`Jobs::load`] reads a record when an event needs it and [`Jobs::save`] writes it back
//! (durable at the next group commit) and updates the index, so the store is never behind
//! memory. What stays in memory per open job is a few dozen bytes, whatever the catalog's
//! size. Owns no queue and decides nothing.
//!
//! Every change of state passes through [`Jobs::save`], so this is also where a job that ends
//! needing a person (failed, expired, held, needs_mapping, invalid by preflight) is named in
//! the log: one WARN line with its id, state and reason, as fields (`job`, `state`, `reason`)
//! that a JSON log keeps apart. It is also where the facts that cost money (an intent, a task
//! id, a finished output, ...) are appended to the journal, when the run keeps one: derived
//! from the record before and after the change (`Fact::changes`), so no path that sets a task
//! id or an output can forget to journal it. The journal is synced in the same group commit
//! as the store (`Dispatcher::commit`).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::job::{Job, JobId, JobState};
use crate::journal::{Fact, Journal};
use crate::run::dispatch::{Attention, RunError};
use crate::store::Store;

pub struct Jobs<'a> {
    store: &'a Store,
    open: HashMap<JobId, Brief>,
    done: usize,
    done_flagged: usize,
    /// Jobs kept as submitted although their manifest row changed (few: kept by id).
    row_changed: BTreeSet<JobId>,
    /// The journal of paid facts beside the database (`None` in unit tests).
    pub journal: Option<Journal>,
}

/// What memory keeps of a job that is not done.
#[derive(Debug, Clone, Copy)]
struct Brief {
    state: JobState,
    flagged: bool,
}

impl<'a> Jobs<'a> {
    pub fn new(store: &'a Store) -> Self {
        Jobs {
            store,
            open: HashMap::new(),
            done: 0,
            done_flagged: 0,
            row_changed: BTreeSet::new(),
            journal: None,
        }
    }

    /// A job's record, as the store has it.
    pub fn load(&self, id: &JobId) -> Result<Job, RunError> {
        self.store
            .job(id.as_str())?
            .ok_or_else(|| RunError::MissingJob(id.clone()))
    }

    /// Write a changed job through to the store (durable at the next flush). A job that has
    /// just ended in a state that needs a person is named in the log.
    pub fn save(&mut self, job: &Job) -> Result<(), RunError> {
        let before = self.open.get(&job.id).map(|brief| brief.state);
        self.journal_changes(before, job)?;
        self.store.put_job(job)?;
        if needs_attention(job.state) && before != Some(job.state) {
            let attention = Attention::of(job);
            let (id, state, reason, line) = (
                &attention.id,
                attention.state,
                attention.reason.as_str(),
                attention.line,
            );
            if state == JobState::Failed {
                // Whether the service judged the request decides what `retry` does with it.
                let permanent = attention.permanent;
                tracing::warn!(job = %id, state = %state, reason, line, permanent, "job {id} ended {state}");
            } else {
                tracing::warn!(job = %id, state = %state, reason, line, "job {id} ended {state}");
            }
        }
        self.note(job);
        Ok(())
    }

    /// Append the facts a change of `job` implies to the journal. The record before the change
    /// is read back only when a fact is possible: a job that was or is `submitting`, or that
    /// has a task id, a failed render or an output, or one not indexed yet (the resume saves
    /// a job before it notes it: a job flagged there was `submitting`, and its flag is a fact).
    fn journal_changes(&mut self, before: Option<JobState>, job: &Job) -> Result<(), RunError> {
        let Some(journal) = &mut self.journal else {
            return Ok(());
        };
        let possible = matches!(
            before,
            None | Some(JobState::Submitting | JobState::Rendering | JobState::Downloading)
        ) || job.state == JobState::Submitting
            || job.task_id.is_some()
            || job.render_failed
            || job.output.is_some();
        if !possible {
            return Ok(());
        }
        if let Some(stored) = self.store.job(job.id.as_str())? {
            for fact in Fact::changes(&stored, job, crate::now_ms()) {
                journal.append(&fact);
            }
        }
        Ok(())
    }

    /// Take note of a job's state as it is now.
    pub fn note(&mut self, job: &Job) {
        if job.row_changed {
            self.row_changed.insert(job.id.clone());
        } else if !self.row_changed.is_empty() {
            self.row_changed.remove(&job.id);
        }
        if job.state == JobState::Done {
            self.open.remove(&job.id);
            self.done += 1;
            self.done_flagged += usize::from(job.possible_duplicate);
            return;
        }
        let brief = Brief {
            state: job.state,
            flagged: job.possible_duplicate,
        };
        match self.open.get_mut(&job.id) {
            Some(known) => *known = brief,
            None => {
                self.open.insert(job.id.clone(), brief);
            }
        }
    }

    /// A change of state the store does not need to know: a waiting job is shown as
    /// `analyzing` once its video's analysis is submitted, while its record stays `pending`
    /// (one write saved per job; both resume the same way).
    pub fn show_as(&mut self, id: &JobId, state: JobState) {
        if let Some(brief) = self.open.get_mut(id) {
            brief.state = state;
        }
    }

    pub fn total(&self) -> usize {
        self.open.len() + self.done
    }

    /// Jobs flagged `possible_duplicate`.
    pub fn flagged(&self) -> usize {
        self.done_flagged + self.open.values().filter(|brief| brief.flagged).count()
    }

    /// Jobs flagged `row_changed`, in id order.
    pub fn row_changed(&self) -> impl ExactSizeIterator<Item = &JobId> {
        self.row_changed.iter()
    }

    /// Jobs per state (every state listed, zeros included).
    pub fn counts(&self) -> BTreeMap<JobState, usize> {
        let mut counts: BTreeMap<JobState, usize> =
            JobState::ALL.into_iter().map(|state| (state, 0)).collect();
        for brief in self.open.values() {
            *counts.entry(brief.state).or_default() += 1;
        }
        *counts.entry(JobState::Done).or_default() += self.done;
        counts
    }

    /// The first `max` jobs (by id) that need a person, loaded from the store with their
    /// reasons; how many there are in all; and how many of them failed permanently (every
    /// failed record is read for that, once, at the end of a run). A record that cannot be
    /// read is left out: this is a summary, the store's damage is reported where it is used.
    pub fn attention(&self, max: usize) -> (Vec<Attention>, usize, usize) {
        let mut ids = self.ids_where(needs_attention);
        let total = ids.len();
        ids.sort_unstable();
        let mut listed = Vec::with_capacity(max.min(total));
        let mut permanent = 0;
        for (id, state) in ids {
            if listed.len() >= max && state != JobState::Failed {
                continue;
            }
            let Ok(job) = self.load(&id) else { continue };
            permanent += usize::from(job.failed_permanently());
            if listed.len() < max {
                listed.push(Attention::of(&job));
            }
        }
        (listed, total, permanent)
    }

    /// The ids (with states) of the open jobs whose state is `wanted`, unordered.
    pub fn ids_where(&self, wanted: fn(JobState) -> bool) -> Vec<(JobId, JobState)> {
        self.open
            .iter()
            .filter(|(_, brief)| wanted(brief.state))
            .map(|(id, brief)| (id.clone(), brief.state))
            .collect()
    }
}

/// A final state other than `done`: the job waits for a person (or `retry`, or an edit).
fn needs_attention(state: JobState) -> bool {
    state.is_final() && state != JobState::Done
}
