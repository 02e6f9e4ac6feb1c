//! How long the service's stages take, as learned by earlier runs on the same database: a
//! sample of recent durations per kind of stage and the first-poll delay the polling feedback
//! settled on. A resume or the next nightly run starts from them instead of guessing, and
//! `status` shows them ("renders take about 52s, 90 % within 1m 11s").
//!
//! Kept in the store's `meta` tree as one JSON value; this module only reads and writes that
//! value, it decides nothing about polling.

use std::collections::VecDeque;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::store::{Store, StoreError};

/// The `meta` key of the learned timings.
const META_TIMINGS: &str = "stage_timings";

/// Durations kept per kind of stage: the most recent ones, so a service that got slower is
/// followed within a batch.
const SAMPLES: usize = 64;

/// What is known of one kind of stage.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageTimings {
    /// Recent durations in ms, from submission to the poll that saw the stage finished (an
    /// upper bound of the true duration, within one poll interval).
    #[serde(default)]
    pub samples_ms: VecDeque<u64>,
    /// The first-poll delay the polling feedback settled on, in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_poll_ms: Option<u64>,
    /// How far past a stage's predicted completion its aimed poll lands, in basis points of
    /// the predicted duration, as the polling feedback left it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aim_margin_bp: Option<u32>,
}

/// What is known of the service's stages.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timings {
    #[serde(default)]
    pub analysis: StageTimings,
    #[serde(default)]
    pub render: StageTimings,
}

impl StageTimings {
    /// Remember one observed duration.
    pub fn record(&mut self, took: Duration) {
        if self.samples_ms.len() == SAMPLES {
            self.samples_ms.pop_front();
        }
        self.samples_ms
            .push_back(u64::try_from(took.as_millis()).unwrap_or(u64::MAX));
    }

    /// The `q` quantile (0–1) of the recent durations, if any were observed.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        if self.samples_ms.is_empty() {
            return None;
        }
        let mut sorted: Vec<u64> = self.samples_ms.iter().copied().collect();
        sorted.sort_unstable();
        let index = ((sorted.len() - 1) as f64 * q.clamp(0.0, 1.0)).round() as usize;
        Some(Duration::from_millis(sorted[index]))
    }

    /// "renders take about 52s, 90 % within 1m 11s (64 seen)", or nothing before any was seen.
    pub fn describe(&self, plural: &str) -> Option<String> {
        let median = self.quantile(0.5)?;
        let p90 = self.quantile(0.9)?;
        let round = |duration: Duration| {
            let shown = if duration < Duration::from_secs(10) {
                Duration::from_millis(duration.as_millis() as u64 / 100 * 100)
            } else {
                Duration::from_secs(duration.as_secs())
            };
            humantime::format_duration(shown).to_string()
        };
        Some(format!(
            "{plural} take about {}, 90 % within {} ({} seen)",
            round(median),
            round(p90),
            self.samples_ms.len()
        ))
    }
}

impl Timings {
    /// The lines `status` shows, one per kind of stage seen.
    pub fn describe(&self) -> Vec<String> {
        [
            self.analysis.describe("analyses"),
            self.render.describe("renders"),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

/// The timings learned on this database (none for a new one, or an unreadable value: they are
/// only a head start).
pub fn load(store: &Store) -> Result<Timings, StoreError> {
    Ok(store
        .meta(META_TIMINGS)?
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default())
}

/// Remember the timings (durable with the next flush).
pub fn save(store: &Store, timings: &Timings) -> Result<(), StoreError> {
    let text = serde_json::to_string(timings).expect("timings serialize");
    store.put_meta(META_TIMINGS, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_follow_the_recent_samples() {
        let mut timings = StageTimings::default();
        assert_eq!(timings.describe("renders"), None);
        for secs in 1..=100 {
            timings.record(Duration::from_secs(secs));
        }
        assert_eq!(timings.samples_ms.len(), SAMPLES, "only the recent ones");
        assert_eq!(timings.quantile(0.0), Some(Duration::from_secs(37)));
        assert_eq!(timings.quantile(0.5), Some(Duration::from_secs(69)));
        assert_eq!(
            timings.describe("renders").unwrap(),
            "renders take about 1m 9s, 90 % within 1m 34s (64 seen)"
        );
    }

    #[test]
    fn short_stages_are_shown_to_the_tenth_of_a_second() {
        let mut timings = StageTimings::default();
        timings.record(Duration::from_millis(1234));
        assert_eq!(
            timings.describe("analyses").unwrap(),
            "analyses take about 1s 200ms, 90 % within 1s 200ms (1 seen)"
        );
    }
}
