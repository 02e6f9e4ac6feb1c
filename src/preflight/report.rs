//! From URL verdicts to job verdicts: which URLs a manifest needs checked (each once), whether
//! a job is doomed once its URLs are known ([`judge_job`], for the run pipeline as verdicts
//! arrive), and the whole check of a manifest without a database ([`check_manifest`], what
//! `check --preflight` prints).

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use super::Checker;
use super::fetch::display_url;
use super::verdict::{MediaKind, Spent, Target, UrlCheck, Verdict};
use crate::manifest::{Manifest, RawJob};

/// A job's standing given the verdicts known so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobCheck {
    /// Every URL is checked and none is invalid (some may be undecided): buy it.
    Proceed,
    /// A definitive check dooms it; `reason` is the first invalid URL's, in the job's order
    /// (video, then faces by `obj_id`).
    Invalid { reason: String },
    /// A URL before any invalid one is not checked yet.
    Waiting,
}

/// The URLs of one job, in the order their verdicts are consulted: the video, then the faces.
pub fn job_targets(job: &RawJob) -> impl Iterator<Item = Target> + '_ {
    std::iter::once(Target::video(job.video_url.as_str()))
        .chain(job.faces.iter().map(|face| Target::face(&face.face_url)))
}

/// Every distinct URL of a manifest's valid jobs, job by job in manifest order, so the first
/// jobs can be decided first.
pub fn manifest_targets(manifest: &Manifest) -> Vec<Target> {
    let mut seen = HashSet::new();
    manifest
        .jobs
        .iter()
        .filter_map(|job| job.row.as_ref().ok())
        .flat_map(job_targets)
        .filter(|target| seen.insert(target.clone()))
        .collect()
}

/// Judge a job from the verdicts known so far (`verdict_of` answers `None` for a URL not
/// checked yet). For a job with several faces the reason names the face's `obj_id`.
pub fn judge_job<'v>(
    job: &RawJob,
    verdict_of: impl Fn(&Target) -> Option<&'v Verdict>,
) -> JobCheck {
    let several_faces = job.faces.len() > 1;
    let video = std::iter::once((Target::video(job.video_url.as_str()), None));
    let faces = job
        .faces
        .iter()
        .map(|face| (Target::face(&face.face_url), face.obj_id));
    for (target, obj_id) in video.chain(faces) {
        match verdict_of(&target) {
            None => return JobCheck::Waiting,
            Some(Verdict::Invalid { reason }) => {
                let reason = match obj_id {
                    Some(obj_id) if several_faces => format!("{reason} (obj_id {obj_id})"),
                    _ => reason.clone(),
                };
                return JobCheck::Invalid { reason };
            }
            Some(_) => {}
        }
    }
    JobCheck::Proceed
}

/// The preflight check of a whole manifest. Serialized as `check --preflight --json` prints it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ManifestPreflight {
    /// Valid jobs of the manifest (the ones checked).
    pub jobs: usize,
    /// Distinct video URLs checked.
    pub videos: usize,
    /// Distinct face URLs checked.
    pub faces: usize,
    /// Jobs a definitive check dooms, in manifest order.
    pub invalid: Vec<DoomedJob>,
    /// URLs that could not be checked, in the order checks were started; their jobs proceed.
    pub warnings: Vec<UrlWarning>,
    /// Requests and bytes all checks cost.
    pub spent: Spent,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DoomedJob {
    pub line: u64,
    pub id: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UrlWarning {
    pub kind: MediaKind,
    /// The URL without its query or user info ([`display_url`]).
    pub url: String,
    pub warning: String,
    /// Valid jobs using the URL.
    pub jobs: usize,
}

/// Check every URL of a manifest's valid jobs (rows the manifest already refused are not
/// checked) and judge each job.
pub async fn check_manifest(checker: &Checker, manifest: &Manifest) -> ManifestPreflight {
    let targets = manifest_targets(manifest);
    let mut results = checker.check_all(targets.clone());
    let mut checks: HashMap<Target, UrlCheck> = HashMap::with_capacity(targets.len());
    while let Some(check) = results.recv().await {
        checks.insert(check.target.clone(), check);
    }
    let mut spent = Spent::default();
    for check in checks.values() {
        spent.add(check.spent);
    }
    let mut invalid = Vec::new();
    let mut uses: HashMap<&Target, usize> = HashMap::new();
    let mut jobs = 0;
    for job in &manifest.jobs {
        let Ok(raw) = &job.row else { continue };
        jobs += 1;
        let mut distinct = HashSet::new();
        for target in job_targets(raw) {
            if let Some((target, _)) = checks.get_key_value(&target) {
                if distinct.insert(target) {
                    *uses.entry(target).or_default() += 1;
                }
            }
        }
        let check = judge_job(raw, |target| checks.get(target).map(|check| &check.verdict));
        if let JobCheck::Invalid { reason } = check {
            invalid.push(DoomedJob {
                line: job.line,
                id: job.id.to_string(),
                reason,
            });
        }
    }
    let warnings = targets
        .iter()
        .filter_map(|target| {
            let check = checks.get(target)?;
            let warning = check.verdict.warning()?;
            Some(UrlWarning {
                kind: target.kind,
                url: display_url(&target.url),
                warning: warning.to_string(),
                jobs: uses.get(target).copied().unwrap_or(0),
            })
        })
        .collect();
    let count = |kind| targets.iter().filter(|target| target.kind == kind).count();
    ManifestPreflight {
        jobs,
        videos: count(MediaKind::Video),
        faces: count(MediaKind::Face),
        invalid,
        warnings,
        spent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::Face;

    fn job(video: &str, faces: &[(Option<u32>, &str)]) -> RawJob {
        RawJob {
            video_url: video.into(),
            faces: faces
                .iter()
                .map(|(obj_id, url)| Face {
                    obj_id: *obj_id,
                    face_url: url.to_string(),
                })
                .collect(),
            resolution: None,
            model_name: None,
            keep_original_sound: None,
            template_id: None,
            extra: Vec::new(),
        }
    }

    #[test]
    fn the_first_invalid_url_in_job_order_decides() {
        let job = job("v", &[(Some(1), "f1"), (Some(2), "f2")]);
        let ok = Verdict::valid("fine");
        let warn = Verdict::undecided("timed out");
        let html = Verdict::invalid("face link is an HTML page, not an image");
        let gone = Verdict::invalid("video link answers HTTP 404");
        let judge = |known: &[(Target, &Verdict)]| {
            let known: HashMap<Target, Verdict> = known
                .iter()
                .map(|(target, verdict)| (target.clone(), (*verdict).clone()))
                .collect();
            judge_job(&job, |target| known.get(target))
        };
        assert_eq!(judge(&[]), JobCheck::Waiting);
        assert_eq!(
            judge(&[(Target::video("v"), &gone)]),
            JobCheck::Invalid {
                reason: "video link answers HTTP 404".into()
            }
        );
        // A later face's reason waits until the URLs before it are known.
        assert_eq!(judge(&[(Target::face("f2"), &html)]), JobCheck::Waiting);
        assert_eq!(
            judge(&[
                (Target::video("v"), &warn),
                (Target::face("f1"), &ok),
                (Target::face("f2"), &html)
            ]),
            JobCheck::Invalid {
                reason: "face link is an HTML page, not an image (obj_id 2)".into()
            }
        );
        assert_eq!(
            judge(&[
                (Target::video("v"), &warn),
                (Target::face("f1"), &ok),
                (Target::face("f2"), &ok)
            ]),
            JobCheck::Proceed
        );
    }
}
