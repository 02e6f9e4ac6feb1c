//! The run's jobs as the loop sees them: an in-memory index of ids, states and flags, with the
//! records themselves in the store.
//!
//! [`Jobs::load`] reads a record when an event needs it and [`Jobs::save`] writes it back
//! (durable at the next group commit) and updates the index, so the store is never behind
//! memory. What stays in memory per open job is a few dozen bytes, whatever the catalog's
//! size. Owns no queue and decides nothing.

use std::collections::{BTreeMap, HashMap};

use crate::job::{Job, JobId, JobState};
use crate::run::dispatch::RunError;
use crate::store::Store;

pub struct Jobs<'a> {
    store: &'a Store,
    open: HashMap<JobId, Brief>,
    done: usize,
    done_flagged: usize,
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
        }
    }

    /// A job's record, as the store has it.
    pub fn load(&self, id: &JobId) -> Result<Job, RunError> {
        self.store
            .job(id.as_str())?
            .ok_or_else(|| RunError::MissingJob(id.clone()))
    }

    /// Write a changed job through to the store (durable at the next flush).
    pub fn save(&mut self, job: &Job) -> Result<(), RunError> {
        self.store.put_job(job)?;
        self.note(job);
        Ok(())
    }

    /// Take note of a job's state as it is now.
    pub fn note(&mut self, job: &Job) {
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

    /// The ids (with states) of the open jobs whose state is `wanted`, unordered.
    pub fn ids_where(&self, wanted: fn(JobState) -> bool) -> Vec<(JobId, JobState)> {
        self.open
            .iter()
            .filter(|(_, brief)| wanted(brief.state))
            .map(|(id, brief)| (id.clone(), brief.state))
            .collect()
    }
}
