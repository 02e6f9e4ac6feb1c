//! The dispatcher's agenda: what waits for what. API calls wait in one priority queue for the
//! rate limiter; polls and backoffs wait in one timer heap; work that needs a slot at the
//! service waits in line (ready jobs before videos to analyze); finished renders wait for a
//! download slot.
//!
//! Slots are values, not a counter: a [`Ticket`] is taken when a stage starts at the service,
//! travels with its calls, timers and outcomes, and frees its slot when it is dropped, so a
//! slot is released exactly once whatever path the stage takes (finished, failed, abandoned
//! at a stop). Owns no job records and does no I/O.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::time::Duration;

use tokio::time::Instant;

use crate::job::{JobId, VideoUrl};

/// A bounded number of places (stages at the service, or downloads).
#[derive(Debug)]
pub struct Slots {
    capacity: usize,
    taken: Arc<AtomicUsize>,
}

/// One taken place of [`Slots`]. Not `Clone`: dropping it frees the place, once.
#[derive(Debug)]
pub struct Ticket {
    taken: Arc<AtomicUsize>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.taken.fetch_sub(1, AtomicOrdering::SeqCst);
    }
}

impl Slots {
    pub fn new(capacity: usize) -> Slots {
        Slots {
            capacity,
            taken: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// A place, if one is free.
    pub fn try_take(&self) -> Option<Ticket> {
        (self.taken() < self.capacity).then(|| self.take_anyway())
    }

    /// A place for work that is already under way (a render re-attached at start), even
    /// beyond the capacity: it occupies the service whether counted or not.
    pub fn take_anyway(&self) -> Ticket {
        self.taken.fetch_add(1, AtomicOrdering::SeqCst);
        Ticket {
            taken: Arc::clone(&self.taken),
        }
    }

    pub fn taken(&self) -> usize {
        self.taken.load(AtomicOrdering::SeqCst)
    }

    pub fn is_full(&self) -> bool {
        self.taken() >= self.capacity
    }
}

/// An API call waiting for the rate limiter.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Call {
    /// Task detail for a finished render whose output link expired or is unknown.
    RefreshOutput(JobId),
    TaskDetail(JobId),
    AnalysisDetail(VideoUrl),
    Create(JobId),
    Analyze(VideoUrl),
}

impl Call {
    /// Lower goes first. A queued create or analyze holds a slot at the service that stays
    /// idle until the request leaves, while a poll may or may not find its stage finished:
    /// submissions go before polls. Only free slots queue submissions, so polls cannot starve;
    /// when requests are scarce, polls wait, and the later they go the likelier they find
    /// their stage finished. A link refresh goes first: the output link is expiring.
    pub fn priority(&self) -> u8 {
        match self {
            Call::RefreshOutput(_) => 0,
            Call::Create(_) | Call::Analyze(_) => 1,
            Call::TaskDetail(_) | Call::AnalysisDetail(_) => 2,
        }
    }

    /// A create or an analyze: starts a stage at the service.
    pub fn is_submission(&self) -> bool {
        matches!(self, Call::Create(_) | Call::Analyze(_))
    }
}

/// A call and the slot its stage holds, if any.
#[derive(Debug)]
pub struct Queued {
    pub call: Call,
    pub ticket: Option<Ticket>,
    priority: u8,
    seq: u64,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        (self.priority, self.seq) == (other.priority, other.seq)
    }
}
impl Eq for Queued {}
impl Ord for Queued {
    fn cmp(&self, other: &Self) -> Ordering {
        // BinaryHeap is a max-heap: the smallest (priority, seq) must compare greatest.
        (other.priority, other.seq).cmp(&(self.priority, self.seq))
    }
}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Something that happens later: a poll, or a retry after a backoff.
#[derive(Debug)]
pub enum Wakeup {
    Call(Call, Option<Ticket>),
    Download(JobId),
    /// A job whose create failed before it ran goes back in line for a slot.
    Ready(JobId),
}

#[derive(Debug)]
struct Timer {
    due: Instant,
    seq: u64,
    wakeup: Wakeup,
}

impl PartialEq for Timer {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}
impl Eq for Timer {}
impl Ord for Timer {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}
impl PartialOrd for Timer {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Every queue of the dispatcher.
#[derive(Debug)]
pub struct Agenda {
    /// Places at the service: analyses + renders (`--concurrency`).
    pub service: Slots,
    /// Parallel downloads (`--downloads`).
    pub downloads: Slots,
    /// Jobs whose subjects are chosen, waiting for a slot to be created.
    pub ready: VecDeque<JobId>,
    /// Videos waiting for a slot to be analysed.
    pub videos_to_analyze: VecDeque<VideoUrl>,
    /// Finished renders waiting for a download slot.
    pub downloads_waiting: VecDeque<JobId>,
    calls: BinaryHeap<Queued>,
    timers: BinaryHeap<Reverse<Timer>>,
    seq: u64,
}

impl Agenda {
    pub fn new(concurrency: usize, downloads: usize) -> Agenda {
        Agenda {
            service: Slots::new(concurrency),
            downloads: Slots::new(downloads),
            ready: VecDeque::new(),
            videos_to_analyze: VecDeque::new(),
            downloads_waiting: VecDeque::new(),
            calls: BinaryHeap::new(),
            timers: BinaryHeap::new(),
            seq: 0,
        }
    }

    /// Put a call in line for the rate limiter.
    pub fn push_call(&mut self, call: Call, ticket: Option<Ticket>) {
        self.seq += 1;
        self.calls.push(Queued {
            priority: call.priority(),
            seq: self.seq,
            call,
            ticket,
        });
    }

    /// The next call in priority order.
    pub fn pop_call(&mut self) -> Option<Queued> {
        self.calls.pop()
    }

    /// The call to probe a service that is down with: the first poll or refresh in line if
    /// there is one (a create could be billed if the probe's answer is lost), else the first
    /// call.
    pub fn pop_probe(&mut self) -> Option<Queued> {
        let mut skipped = Vec::new();
        let mut probe = None;
        while let Some(queued) = self.calls.pop() {
            if queued.call.is_submission() {
                skipped.push(queued);
            } else {
                probe = Some(queued);
                break;
            }
        }
        self.calls.extend(skipped);
        probe.or_else(|| self.calls.pop())
    }

    pub fn has_calls(&self) -> bool {
        !self.calls.is_empty()
    }

    /// Something to happen `delay` from `now`.
    pub fn push_timer(&mut self, now: Instant, delay: Duration, wakeup: Wakeup) {
        self.seq += 1;
        self.timers.push(Reverse(Timer {
            due: now + delay,
            seq: self.seq,
            wakeup,
        }));
    }

    /// When the next timer is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse(timer)| timer.due)
    }

    /// The timers due at `now`, in due order.
    pub fn take_due(&mut self, now: Instant) -> Vec<Wakeup> {
        let mut due = Vec::new();
        while self
            .timers
            .peek()
            .is_some_and(|Reverse(timer)| timer.due <= now)
        {
            let Reverse(timer) = self.timers.pop().expect("peeked");
            due.push(timer.wakeup);
        }
        due
    }

    /// Calls, timers or downloads are waiting.
    pub fn is_waiting(&self) -> bool {
        !self.calls.is_empty() || !self.timers.is_empty() || !self.downloads_waiting.is_empty()
    }

    /// Jobs or videos wait for a slot at the service.
    pub fn has_submissions(&self) -> bool {
        !self.ready.is_empty() || !self.videos_to_analyze.is_empty()
    }

    /// A hard stop: nothing queued or timed will happen in this run (every job stays
    /// resumable from the store; dropping the tickets frees their slots).
    pub fn clear(&mut self) {
        self.calls.clear();
        self.timers.clear();
        self.downloads_waiting.clear();
    }

    /// A soft stop: queued submissions are dropped (their jobs stay resumable), polls and
    /// downloads stay.
    pub fn drop_submissions(&mut self) {
        let calls = std::mem::take(&mut self.calls);
        self.calls = calls
            .into_vec()
            .into_iter()
            .filter(|queued| !queued.call.is_submission())
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_frees_its_slot_once_when_dropped() {
        let slots = Slots::new(2);
        let first = slots.try_take().expect("free");
        let second = slots.try_take().expect("free");
        assert!(slots.try_take().is_none(), "full at capacity");
        drop(first);
        assert_eq!(slots.taken(), 1);
        let third = slots.try_take().expect("freed by the drop");
        let beyond = slots.take_anyway();
        assert_eq!(slots.taken(), 3, "re-attached work counts beyond capacity");
        drop((second, third, beyond));
        assert_eq!(slots.taken(), 0);
    }

    #[test]
    fn refreshes_go_before_submissions_before_polls_and_order_holds_within_a_class() {
        let mut agenda = Agenda::new(4, 4);
        agenda.push_call(Call::TaskDetail("poll-1".into()), None);
        agenda.push_call(Call::Create("create-1".into()), None);
        agenda.push_call(Call::AnalysisDetail("v-poll".into()), None);
        agenda.push_call(Call::Analyze("v-new".into()), None);
        agenda.push_call(Call::RefreshOutput("link".into()), None);
        agenda.push_call(Call::TaskDetail("poll-2".into()), None);
        let order: Vec<Call> = std::iter::from_fn(|| agenda.pop_call().map(|q| q.call)).collect();
        assert_eq!(
            order,
            vec![
                Call::RefreshOutput("link".into()),
                Call::Create("create-1".into()),
                Call::Analyze("v-new".into()),
                Call::TaskDetail("poll-1".into()),
                Call::AnalysisDetail("v-poll".into()),
                Call::TaskDetail("poll-2".into()),
            ]
        );
    }

    #[test]
    fn a_soft_stop_drops_submissions_and_frees_their_slots() {
        let mut agenda = Agenda::new(2, 1);
        let ticket = agenda.service.try_take();
        agenda.push_call(Call::Create("a".into()), ticket);
        let ticket = agenda.service.try_take();
        agenda.push_call(Call::TaskDetail("b".into()), ticket);
        agenda.drop_submissions();
        assert_eq!(agenda.service.taken(), 1, "the create's slot is free again");
        let left = agenda.pop_call().expect("the poll stays");
        assert_eq!(left.call, Call::TaskDetail("b".into()));
    }

    #[test]
    fn timers_fire_in_due_order() {
        let mut agenda = Agenda::new(1, 1);
        let now = Instant::now();
        agenda.push_timer(now, Duration::from_secs(2), Wakeup::Ready("late".into()));
        agenda.push_timer(now, Duration::from_secs(1), Wakeup::Ready("early".into()));
        assert_eq!(agenda.next_due(), Some(now + Duration::from_secs(1)));
        assert!(agenda.take_due(now).is_empty());
        let due = agenda.take_due(now + Duration::from_secs(5));
        let ids: Vec<String> = due
            .into_iter()
            .map(|wakeup| match wakeup {
                Wakeup::Ready(id) => id.into_string(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(ids, ["early", "late"]);
    }
}
