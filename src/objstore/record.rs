//! The record of one output's upload, as the run loop stores it with the job, and the events
//! that move it. `UploadRecord::apply` is a flat transition table that does no I/O and refuses
//! illegal moves, leaving the record unchanged (the same shape as `Job::apply`).
//!
//! A record says what is true at the store: after a crash it is enough to resume the upload
//! (`Uploading`: the upload id and every stored part), to know that nothing was created yet
//! (`Pending`, `Planned`), or that the object is complete (`Complete`).

use serde::{Deserialize, Serialize};

/// One output's upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadRecord {
    /// The object key written: `PREFIX<id>.mp4`.
    pub key: String,
    pub phase: UploadPhase,
}

/// Where an upload stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UploadPhase {
    /// Nothing exists at the store for this upload.
    Pending,
    /// The output was read once and measured; no multipart upload exists yet.
    Planned { plan: UploadPlan },
    /// A multipart upload exists at the store; `parts` are stored there.
    Uploading {
        plan: UploadPlan,
        upload_id: String,
        parts: Vec<PartRecord>,
    },
    /// The object is visible under `key`, complete.
    Complete { object: StoredObject },
}

/// What the first read of an output measured. Parts have `part_size` bytes (the last one the
/// rest); `part_sha256[i]` is the SHA-256 of part `i + 1`, so a part read again after a crash
/// or a refreshed link is checked to be the same bytes before it is sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadPlan {
    pub bytes: u64,
    /// SHA-256 of the whole output, lowercase hex: the object's `x-amz-meta-sha256`.
    pub sha256: String,
    pub part_size: u64,
    pub part_sha256: Vec<String>,
    /// The output link's ETag, sent back as `If-Range` when the output is read again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_etag: Option<String>,
}

/// One part stored in a multipart upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartRecord {
    /// S3's part number, from 1.
    pub number: u32,
    /// The ETag the store answered for the part (needed to complete the upload).
    pub etag: String,
    /// The part's bytes of the output: `start..end`.
    pub start: u64,
    pub end: u64,
}

/// A complete object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredObject {
    pub key: String,
    /// `s3://BUCKET/KEY`, for `export` and `report`.
    pub url: String,
    pub bytes: u64,
    /// SHA-256 of the object's bytes, lowercase hex (also in its `x-amz-meta-sha256`).
    pub sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
}

/// A fact about an upload, reported as soon as it is true at the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadEvent {
    Planned(UploadPlan),
    Created {
        upload_id: String,
    },
    PartStored(PartRecord),
    Completed(StoredObject),
    /// The upload was given up (its multipart upload aborted, at best effort) and starts over.
    Restarted {
        reason: String,
    },
}

/// An event that does not apply to the record's phase.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("upload of {key}: {event} does not apply in phase {phase}")]
pub struct IllegalUploadEvent {
    pub key: String,
    pub phase: &'static str,
    pub event: String,
}

impl UploadRecord {
    /// A fresh record for `key`.
    pub fn new(key: impl Into<String>) -> UploadRecord {
        UploadRecord {
            key: key.into(),
            phase: UploadPhase::Pending,
        }
    }

    /// The multipart upload this record refers to, if any.
    pub fn upload_id(&self) -> Option<&str> {
        match &self.phase {
            UploadPhase::Uploading { upload_id, .. } => Some(upload_id),
            _ => None,
        }
    }

    pub fn is_complete(&self) -> bool {
        matches!(self.phase, UploadPhase::Complete { .. })
    }

    /// Apply `event`, or refuse it and leave the record unchanged.
    pub fn apply(&mut self, event: &UploadEvent) -> Result<(), IllegalUploadEvent> {
        use UploadEvent as E;
        use UploadPhase as P;
        let illegal = |record: &UploadRecord| IllegalUploadEvent {
            key: record.key.clone(),
            phase: record.phase.name(),
            event: event.name().to_string(),
        };
        let next = match (&self.phase, event) {
            (P::Pending, E::Planned(plan)) if plan.is_consistent() => {
                P::Planned { plan: plan.clone() }
            }
            (P::Planned { plan }, E::Created { upload_id }) => P::Uploading {
                plan: plan.clone(),
                upload_id: upload_id.clone(),
                parts: Vec::new(),
            },
            (
                P::Uploading {
                    plan,
                    upload_id,
                    parts,
                },
                E::PartStored(part),
            ) if plan.part_range(part.number) == Some((part.start, part.end)) => {
                let mut parts: Vec<PartRecord> = parts
                    .iter()
                    .filter(|p| p.number != part.number)
                    .cloned()
                    .collect();
                parts.push(part.clone());
                parts.sort_by_key(|p| p.number);
                P::Uploading {
                    plan: plan.clone(),
                    upload_id: upload_id.clone(),
                    parts,
                }
            }
            (P::Pending, E::Completed(object)) if object.key == self.key => P::Complete {
                object: object.clone(),
            },
            // Not every part need be recorded: a completion found at the store after a crash
            // (the record stored before the last parts were) is checked against the plan.
            (P::Uploading { plan, .. }, E::Completed(object))
                if object.key == self.key
                    && object.sha256 == plan.sha256
                    && object.bytes == plan.bytes =>
            {
                P::Complete {
                    object: object.clone(),
                }
            }
            (P::Pending | P::Planned { .. } | P::Uploading { .. }, E::Restarted { .. }) => {
                P::Pending
            }
            _ => return Err(illegal(self)),
        };
        self.phase = next;
        Ok(())
    }
}

impl UploadPhase {
    pub fn name(&self) -> &'static str {
        match self {
            UploadPhase::Pending => "pending",
            UploadPhase::Planned { .. } => "planned",
            UploadPhase::Uploading { .. } => "uploading",
            UploadPhase::Complete { .. } => "complete",
        }
    }
}

impl UploadEvent {
    pub fn name(&self) -> &'static str {
        match self {
            UploadEvent::Planned(_) => "planned",
            UploadEvent::Created { .. } => "created",
            UploadEvent::PartStored(_) => "part stored",
            UploadEvent::Completed(_) => "completed",
            UploadEvent::Restarted { .. } => "restarted",
        }
    }
}

impl UploadPlan {
    /// How many parts the output has.
    pub fn part_count(&self) -> usize {
        self.part_sha256.len()
    }

    /// Bytes `start..end` of part `number` (from 1), if the output has that part.
    pub fn part_range(&self, number: u32) -> Option<(u64, u64)> {
        if number == 0 || number as usize > self.part_count() {
            return None;
        }
        let start = (number as u64 - 1) * self.part_size;
        Some((start, (start + self.part_size).min(self.bytes)))
    }

    /// The part count matches the length and the part size.
    pub fn is_consistent(&self) -> bool {
        self.part_size > 0
            && self.bytes > 0
            && self.part_count() as u64 == self.bytes.div_ceil(self.part_size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> UploadPlan {
        UploadPlan {
            bytes: 25,
            sha256: "aa".into(),
            part_size: 10,
            part_sha256: vec!["p1".into(), "p2".into(), "p3".into()],
            link_etag: None,
        }
    }

    fn part(number: u32) -> PartRecord {
        let (start, end) = plan().part_range(number).unwrap_or((0, 1));
        PartRecord {
            number,
            etag: format!("\"e{number}\""),
            start,
            end,
        }
    }

    fn object(key: &str, sha256: &str, bytes: u64) -> StoredObject {
        StoredObject {
            key: key.into(),
            url: format!("s3://b/{key}"),
            bytes,
            sha256: sha256.into(),
            etag: None,
        }
    }

    fn record(phase: UploadPhase) -> UploadRecord {
        UploadRecord {
            key: "p/a.mp4".into(),
            phase,
        }
    }

    fn phases() -> Vec<UploadPhase> {
        vec![
            UploadPhase::Pending,
            UploadPhase::Planned { plan: plan() },
            UploadPhase::Uploading {
                plan: plan(),
                upload_id: "u1".into(),
                parts: vec![part(1)],
            },
            UploadPhase::Uploading {
                plan: plan(),
                upload_id: "u1".into(),
                parts: vec![part(1), part(2), part(3)],
            },
            UploadPhase::Complete {
                object: object("p/a.mp4", "aa", 25),
            },
        ]
    }

    fn events() -> Vec<UploadEvent> {
        vec![
            UploadEvent::Planned(plan()),
            UploadEvent::Created {
                upload_id: "u2".into(),
            },
            UploadEvent::PartStored(part(2)),
            UploadEvent::PartStored(part(4)),
            UploadEvent::Completed(object("p/a.mp4", "aa", 25)),
            UploadEvent::Completed(object("p/other.mp4", "aa", 25)),
            UploadEvent::Restarted { reason: "x".into() },
        ]
    }

    /// Every phase × event: the expected next phase, or a refusal that leaves the record as it
    /// was.
    #[test]
    fn transition_matrix() {
        use UploadPhase as P;
        // Rows: phases(); columns: events(). The name of the phase after, or "-" for refused.
        let expected = [
            ["planned", "-", "-", "-", "complete", "-", "pending"],
            ["-", "uploading", "-", "-", "-", "-", "pending"],
            ["-", "-", "uploading", "-", "complete", "-", "pending"],
            ["-", "-", "uploading", "-", "complete", "-", "pending"],
            ["-", "-", "-", "-", "-", "-", "-"],
        ];
        for (row, phase) in phases().into_iter().enumerate() {
            for (column, event) in events().into_iter().enumerate() {
                let before = record(phase.clone());
                let mut after = before.clone();
                let outcome = after.apply(&event);
                let want = expected[row][column];
                if want == "-" {
                    assert!(outcome.is_err(), "{} + {}", phase.name(), event.name());
                    assert_eq!(after, before, "a refused event changes nothing");
                } else {
                    outcome.unwrap_or_else(|e| panic!("{e}"));
                    assert_eq!(
                        after.phase.name(),
                        want,
                        "{} + {}",
                        phase.name(),
                        event.name()
                    );
                }
            }
        }
        // Part records are kept once each, in order.
        let mut r = record(phases()[2].clone());
        r.apply(&UploadEvent::PartStored(part(3))).unwrap();
        r.apply(&UploadEvent::PartStored(part(1))).unwrap();
        match &r.phase {
            P::Uploading { parts, .. } => {
                assert_eq!(parts.iter().map(|p| p.number).collect::<Vec<_>>(), [1, 3]);
            }
            other => panic!("{other:?}"),
        }
        // A completion must match the plan.
        let mut r = record(phases()[3].clone());
        assert!(
            r.apply(&UploadEvent::Completed(object("p/a.mp4", "bb", 25)))
                .is_err()
        );
        assert!(
            r.apply(&UploadEvent::Completed(object("p/a.mp4", "aa", 24)))
                .is_err()
        );
        // An inconsistent plan is refused.
        let mut bad = plan();
        bad.part_sha256.pop();
        assert!(
            record(P::Pending)
                .apply(&UploadEvent::Planned(bad))
                .is_err()
        );
    }

    #[test]
    fn part_ranges() {
        let plan = plan();
        assert_eq!(plan.part_range(0), None);
        assert_eq!(plan.part_range(1), Some((0, 10)));
        assert_eq!(plan.part_range(3), Some((20, 25)));
        assert_eq!(plan.part_range(4), None);
    }

    #[test]
    fn records_round_trip_through_json() {
        for phase in phases() {
            let record = record(phase);
            let json = serde_json::to_string(&record).unwrap();
            let back: UploadRecord = serde_json::from_str(&json).unwrap();
            assert_eq!(back, record);
        }
        let json = serde_json::to_string(&record(UploadPhase::Pending)).unwrap();
        assert_eq!(json, r#"{"key":"p/a.mp4","phase":"pending"}"#);
    }
}
