//! Choosing subjects: which detected person in a video gets which face, once the video's
//! analysis has listed them. Pure code.

use crate::akool::{Mapping, Subject};
use crate::job::Job;

/// What to do when a blank `obj_id` meets a video with several subjects (`--multi-subject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MultiSubject {
    /// The job goes to `needs_mapping`; the export lists the subjects.
    Skip,
    /// The lowest obj_id.
    First,
    /// The same face on every subject (up to 5).
    All,
}

/// The outcome of subject choice for one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    Mapped(Vec<Mapping>),
    NeedsMapping,
    Fail(String),
}

/// Map a job's faces onto the subjects its video's analysis detected.
pub fn choose_mappings(job: &Job, subjects: &[Subject], policy: MultiSubject) -> Choice {
    if subjects.is_empty() {
        return Choice::Fail("no person was detected in the video".into());
    }
    let mut detected: Vec<u32> = subjects.iter().map(|subject| subject.obj_id).collect();
    detected.sort_unstable();
    detected.dedup();
    let listed = || {
        detected
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut mappings = Vec::new();
    for face in &job.spec.faces {
        let mapped = |obj_id: u32| Mapping {
            obj_id,
            img_url: face.face_url.clone(),
        };
        match face.obj_id {
            Some(obj_id) if detected.contains(&obj_id) => mappings.push(mapped(obj_id)),
            Some(obj_id) => {
                return Choice::Fail(format!(
                    "obj_id {obj_id} is not among the detected subjects ({})",
                    listed()
                ));
            }
            None if detected.len() == 1 => mappings.push(mapped(detected[0])),
            None => match policy {
                MultiSubject::Skip => return Choice::NeedsMapping,
                MultiSubject::First => mappings.push(mapped(detected[0])),
                MultiSubject::All => mappings.extend(detected.iter().take(5).map(|id| mapped(*id))),
            },
        }
    }
    Choice::Mapped(mappings)
}
