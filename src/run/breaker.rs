//! Outage detection: a circuit breaker over the API's answers. When most recent calls fail
//! transiently (HTML error pages, resets, timeouts, 2001), the service is down, not the jobs:
//! the breaker opens, no call leaves except one probe at growing pauses, and the first answer
//! closes it again. While it is open no job is charged time or attempts (the policy's
//! `service_down`), and `status` says "service unavailable since HH:MM, probing every Ns".
//!
//! Pure state taking `now` as a parameter, like the pacer; the dispatcher feeds it every API
//! answer and asks it before every call. Throttling is the pacer's business and counts as
//! neither an answer nor a failure here; a throttled probe only lets the next probe go.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// How far back the failure share is measured.
const WINDOW: Duration = Duration::from_secs(30);
/// Fewer calls than this in the window never open the breaker (a few unlucky jobs are not an
/// outage).
const MIN_CALLS: usize = 8;
/// The share of failed calls in the window that opens the breaker.
const FAILING_SHARE: f64 = 0.8;
/// The first pause before a probe, doubled after each failed probe up to [`LONGEST_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_secs(1);
const LONGEST_PAUSE: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
pub struct Breaker {
    /// Recent calls: when, and whether the service answered.
    recent: VecDeque<(Instant, bool)>,
    open: Option<Open>,
}

#[derive(Debug, Clone, Copy)]
struct Open {
    since: Instant,
    /// The same instant on the wall clock, for people (ms since the Unix epoch).
    since_ms: u64,
    pause: Duration,
    next_probe: Instant,
    probing: bool,
}

/// Whether calls may leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// The service is up: calls leave as the rate allows.
    Closed,
    /// The service is down and a probe is due: one call may leave.
    Probe,
    /// The service is down: nothing leaves before this instant (or before the probe in flight
    /// is answered, when `None`).
    Shut(Option<Instant>),
}

/// The outage, as `status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outage {
    pub since_ms: u64,
    pub probing_every: Duration,
}

impl Breaker {
    pub fn gate(&self, now: Instant) -> Gate {
        match self.open {
            None => Gate::Closed,
            Some(open) if open.probing => Gate::Shut(None),
            Some(open) if now >= open.next_probe => Gate::Probe,
            Some(open) => Gate::Shut(Some(open.next_probe)),
        }
    }

    pub fn is_open(&self) -> bool {
        self.open.is_some()
    }

    /// A probe is leaving.
    pub fn probe_started(&mut self) {
        if let Some(open) = &mut self.open {
            open.probing = true;
        }
    }

    /// A call was throttled. If it was the probe, the service said nothing of whether it is
    /// back: the next probe goes after the same pause. (Without this, a throttled probe
    /// left the breaker waiting for an answer that had come: no call ever left again.)
    pub fn throttled(&mut self, now: Instant) {
        if let Some(open) = &mut self.open {
            if open.probing {
                open.probing = false;
                open.next_probe = now + open.pause;
            }
        }
    }

    /// The service answered a call (any well-formed answer, errors included). Returns how long
    /// it had been down, if the breaker was open.
    pub fn answered(&mut self, now: Instant) -> Option<Duration> {
        self.push(now, true);
        let open = self.open.take()?;
        self.recent.clear();
        Some(now.saturating_duration_since(open.since))
    }

    /// A call failed transiently. Returns true when this failure opened the breaker.
    pub fn failed(&mut self, now: Instant, now_ms: u64) -> bool {
        if let Some(open) = &mut self.open {
            if open.probing {
                // The probe failed: wait longer before the next one.
                open.probing = false;
                open.pause = (open.pause * 2).min(LONGEST_PAUSE);
                open.next_probe = now + open.pause;
            }
            return false;
        }
        self.push(now, false);
        let calls = self.recent.len();
        let failed = self.recent.iter().filter(|(_, ok)| !ok).count();
        if calls < MIN_CALLS || (failed as f64) < FAILING_SHARE * calls as f64 {
            return false;
        }
        self.open = Some(Open {
            since: now,
            since_ms: now_ms,
            pause: FIRST_PAUSE,
            next_probe: now + FIRST_PAUSE,
            probing: false,
        });
        true
    }

    /// The outage under way, if any.
    pub fn outage(&self) -> Option<Outage> {
        self.open.map(|open| Outage {
            since_ms: open.since_ms,
            probing_every: open.pause,
        })
    }

    fn push(&mut self, now: Instant, ok: bool) {
        self.recent.push_back((now, ok));
        while self
            .recent
            .front()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) > WINDOW)
        {
            self.recent.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_few_failures_among_answers_do_not_open_it() {
        let mut breaker = Breaker::default();
        let now = Instant::now();
        for n in 0..100 {
            let at = now + Duration::from_millis(n * 100);
            if n % 3 == 0 {
                assert!(!breaker.failed(at, 0));
            } else {
                breaker.answered(at);
            }
        }
        assert_eq!(breaker.gate(now + Duration::from_secs(10)), Gate::Closed);
    }

    #[test]
    fn most_calls_failing_opens_it_and_probes_back_off_until_an_answer_closes_it() {
        let mut breaker = Breaker::default();
        let start = Instant::now();
        breaker.answered(start);
        let mut opened_at = None;
        for n in 1..=20 {
            let at = start + Duration::from_millis(n * 10);
            if breaker.failed(at, 1_000) {
                opened_at = Some(at);
                break;
            }
        }
        let opened_at = opened_at.expect("opens once failures dominate");
        assert_eq!(
            breaker.outage(),
            Some(Outage {
                since_ms: 1_000,
                probing_every: FIRST_PAUSE
            })
        );
        assert_eq!(
            breaker.gate(opened_at),
            Gate::Shut(Some(opened_at + FIRST_PAUSE))
        );
        let mut now = opened_at + FIRST_PAUSE;
        let mut pauses = Vec::new();
        for _ in 0..7 {
            assert_eq!(breaker.gate(now), Gate::Probe);
            breaker.probe_started();
            assert_eq!(breaker.gate(now), Gate::Shut(None), "one probe at a time");
            breaker.failed(now, 0);
            let Gate::Shut(Some(next)) = breaker.gate(now) else {
                panic!("shut until the next probe");
            };
            pauses.push((next - now).as_secs());
            now = next;
        }
        assert_eq!(pauses, [2, 4, 8, 16, 30, 30, 30]);
        breaker.probe_started();
        let down_for = breaker.answered(now).expect("it was open");
        assert_eq!(down_for, now - opened_at);
        assert_eq!(breaker.gate(now), Gate::Closed);
        assert!(breaker.outage().is_none());
    }

    #[test]
    fn a_throttled_probe_lets_the_next_one_go_after_the_same_pause() {
        let mut breaker = Breaker::default();
        let start = Instant::now();
        while !breaker.failed(start, 0) {}
        let probe_at = start + FIRST_PAUSE;
        assert_eq!(breaker.gate(probe_at), Gate::Probe);
        breaker.probe_started();
        breaker.throttled(probe_at);
        assert_eq!(
            breaker.gate(probe_at),
            Gate::Shut(Some(probe_at + FIRST_PAUSE)),
            "not waiting for an answer that came"
        );
        assert_eq!(breaker.gate(probe_at + FIRST_PAUSE), Gate::Probe);
        assert!(
            breaker.is_open(),
            "throttling says nothing of an outage's end"
        );
    }

    #[test]
    fn old_failures_leave_the_window() {
        let mut breaker = Breaker::default();
        let start = Instant::now();
        for n in 0..7 {
            breaker.failed(start + Duration::from_secs(n), 0);
        }
        // Long after, a single failure among no other recent call does not open it.
        assert!(!breaker.failed(start + Duration::from_secs(120), 0));
        assert!(!breaker.is_open());
    }
}
