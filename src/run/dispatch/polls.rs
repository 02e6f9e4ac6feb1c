//! When to poll: the planners of each kind of stage, the stages whose first poll is still
//! ahead, and what a poll's answer teaches them.

use std::collections::HashSet;

use tokio::time::Instant;

use crate::akool::RemoteStatus;
use crate::job::{JobId, VideoUrl};
use crate::run::dispatch::Dispatcher;
use crate::run::poll::PollPlanner;

/// When to poll: one planner per kind of stage, and the stages whose first poll is still
/// ahead (what it finds tunes the planner).
pub(super) struct Polls {
    pub(super) analysis: PollPlanner,
    pub(super) render: PollPlanner,
    pub(super) first_analysis_polls: HashSet<VideoUrl>,
    pub(super) first_render_polls: HashSet<JobId>,
    /// Undocumented status values already reported (each is logged once).
    pub(super) unknown_statuses: HashSet<i64>,
}

impl Dispatcher<'_> {
    /// Log an undocumented status value once; it counts as still running.
    pub(super) fn note_unknown_status(&mut self, status: RemoteStatus) {
        if let RemoteStatus::Unknown(code) = status {
            if self.polls.unknown_statuses.insert(code) {
                tracing::warn!(
                    status = code,
                    "the API reported an undocumented status; treating it as still running"
                );
            }
        }
    }

    /// The share of first polls that should find their stage finished. With requests to
    /// spare, polling early (about the 70th percentile) costs a request for each stage still
    /// running and saves the idle time of every early finisher; as requests get scarce, every
    /// extra poll delays other work, so polls move towards waiting until nearly all stages
    /// are done.
    pub(super) fn first_poll_hits_wanted(&self) -> f64 {
        let load = self.pacer.load(Instant::now());
        0.7 + 0.25 * ((load - 0.5) / 0.4).clamp(0.0, 1.0)
    }
}
