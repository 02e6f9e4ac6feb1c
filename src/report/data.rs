//! What the report shows, as plain owned data, and the one conversion from the store's records.
//!
//! [`ReportData`] is everything the page needs and nothing it could fetch: the page renders it
//! without touching the store, the disk or the network. [`ReportData::from_jobs`] is the only
//! place that knows the shape of [`Job`] and [`AnalysisRecord`], so a field added to a job is
//! taken into the report here and nowhere else. Paths are resolved here too (an output file
//! becomes a path relative to the report's folder); URLs are kept as text and judged by the
//! page through `links`.

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Component, Path, PathBuf};

use crate::job::{AnalysisRecord, AnalysisState, Job, JobState};

/// Everything one report page shows.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportData {
    /// When the report was made (ms since the Unix epoch); the timeline of unfinished jobs
    /// ends here.
    pub generated_ms: u64,
    /// The database the report was made from, as the user named it (for the fix commands).
    pub database: String,
    /// The folder holding the finished files, relative to the report's folder, `/`-separated
    /// (`output`, `../renders`); `None` when outputs are not in one local folder.
    pub output_folder: Option<String>,
    /// Jobs per state, every state present (zeros included).
    pub counts: BTreeMap<JobState, usize>,
    /// The manifest's extra columns (sku, campaign...), union over the jobs in first-seen order.
    pub extra_columns: Vec<String>,
    /// Every job, in the order given (the store's: by id).
    pub jobs: Vec<ReportJob>,
    /// How much of a long batch the page shows.
    pub limits: Limits,
}

/// How many items each part of the page shows before it says how many more there are. A
/// 10,000-job batch stays a page a browser opens at once (see the size test).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Video players in the finished section (each one a file the browser may probe).
    pub players: usize,
    /// Jobs with their own row in the timeline; more jobs are drawn as aggregated lanes.
    pub timeline_rows: usize,
    /// `needs_mapping` jobs shown with their previews and paste lines.
    pub mapping_cards: usize,
    /// Rows per attention table (failed, invalid, expired, held) and in the list of every job.
    pub table_rows: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            players: 24,
            timeline_rows: 60,
            mapping_cards: 40,
            table_rows: 200,
        }
    }
}

/// One job as the report shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportJob {
    pub id: String,
    pub state: JobState,
    /// First manifest line of the job's rows (the header is line 1).
    pub line: u64,
    pub video_url: String,
    /// The create's mappings once subjects are chosen, otherwise the manifest's faces
    /// (`obj_id` `None` = to be chosen).
    pub faces: Vec<ReportFace>,
    /// The manifest's extra columns of this job, in header order.
    pub extra: Vec<(String, String)>,
    /// Subjects the analysis detected (kept for `needs_mapping` jobs).
    pub subjects: Vec<ReportSubject>,
    pub analysis_id: Option<String>,
    pub task_id: Option<String>,
    pub output: Option<OutputLocation>,
    pub bytes: Option<u64>,
    pub error_code: Option<i64>,
    pub error: Option<String>,
    /// A create for this job may have been sent twice.
    pub possible_duplicate: bool,
    /// The render itself failed (status 4), as opposed to the service being unreachable.
    pub render_failed: bool,
    /// The manifest row changed after submission; the job was kept as submitted.
    pub row_changed: bool,
    /// Attempts at the current stage.
    pub attempts: u32,
    pub times: ReportTimes,
}

/// One face of a job: which subject gets which picture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportFace {
    pub obj_id: Option<u32>,
    pub face_url: String,
}

/// A detected subject: its `obj_id` and a preview image of that person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportSubject {
    pub obj_id: u32,
    pub img_url: String,
}

/// Where a finished render is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputLocation {
    /// A local file, `/`-separated and relative to the report's folder (not yet encoded).
    File(String),
    /// A URL (object storage); the page links it only if it is http(s).
    Url(String),
}

/// A job's milestones (ms since the Unix epoch); `None` when not reached or not known.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReportTimes {
    /// Ingested from the manifest.
    pub created_ms: u64,
    /// The job's video was sent for analysis (shared by every job on that video).
    pub analysis_submitted_ms: Option<u64>,
    /// That analysis finished (completed or failed).
    pub analysis_finished_ms: Option<u64>,
    /// The create answered with a task id: the render started.
    pub submitted_ms: Option<u64>,
    /// The service said the render is finished.
    pub rendered_ms: Option<u64>,
    /// The job reached `done`, `failed` or `expired`.
    pub finished_ms: Option<u64>,
    /// The last change to the job.
    pub updated_ms: u64,
}

/// Where the report will be written and how to read the paths stored in the jobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportContext {
    pub generated_ms: u64,
    /// The database, as the user named it.
    pub database: PathBuf,
    /// The report file; relative paths are taken from `working_dir`.
    pub report_file: PathBuf,
    /// The folder relative output paths in the store are relative to (the folder `run` was
    /// started in; the current folder when `report` runs in the same place).
    pub working_dir: PathBuf,
}

impl ReportData {
    /// The report's data from the store's jobs (in the order to show them) and the per-video
    /// analysis records (for when each video's analysis ran; an empty slice leaves those
    /// times unknown).
    pub fn from_jobs<J: Borrow<Job>>(
        jobs: impl IntoIterator<Item = J>,
        analyses: &[AnalysisRecord],
        context: &ReportContext,
    ) -> ReportData {
        let analysis_times: HashMap<&str, (Option<u64>, Option<u64>)> = analyses
            .iter()
            .map(|record| {
                let finished = matches!(
                    record.state,
                    AnalysisState::Completed | AnalysisState::Failed
                )
                .then_some(record.updated_ms);
                (record.video_url.as_str(), (record.submitted_ms, finished))
            })
            .collect();
        let report_dir = absolute(&context.working_dir, &context.report_file)
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("/"));

        let mut counts: BTreeMap<JobState, usize> =
            JobState::ALL.into_iter().map(|state| (state, 0)).collect();
        let mut extra_columns = Vec::new();
        let mut seen_columns = HashSet::new();
        let mut output_dirs = HashSet::new();
        let mut report_jobs = Vec::new();
        for job in jobs {
            let job = job.borrow();
            *counts.entry(job.state).or_insert(0) += 1;
            for (name, _) in &job.spec.extra {
                if seen_columns.insert(name.clone()) {
                    extra_columns.push(name.clone());
                }
            }
            let output = job.output.as_ref().map(|output| {
                let location = output_location(&output.path, &context.working_dir, &report_dir);
                if let OutputLocation::File(path) = &location {
                    let folder = path.rsplit_once('/').map_or(".", |(folder, _)| folder);
                    output_dirs.insert(folder.to_string());
                }
                location
            });
            let (analysis_submitted_ms, analysis_finished_ms) = analysis_times
                .get(job.spec.video_url.as_str())
                .copied()
                .unwrap_or((None, None));
            report_jobs.push(ReportJob {
                id: job.id.to_string(),
                state: job.state,
                line: job.line,
                video_url: job.spec.video_url.to_string(),
                faces: if job.mappings.is_empty() {
                    job.spec
                        .faces
                        .iter()
                        .map(|face| ReportFace {
                            obj_id: face.obj_id,
                            face_url: face.face_url.clone(),
                        })
                        .collect()
                } else {
                    job.mappings
                        .iter()
                        .map(|mapping| ReportFace {
                            obj_id: Some(mapping.obj_id),
                            face_url: mapping.img_url.clone(),
                        })
                        .collect()
                },
                extra: job.spec.extra.clone(),
                subjects: job
                    .subjects
                    .iter()
                    .map(|subject| ReportSubject {
                        obj_id: subject.obj_id,
                        img_url: subject.img_url.clone(),
                    })
                    .collect(),
                analysis_id: job.analysis_id.clone(),
                task_id: job.task_id.clone(),
                output,
                bytes: job.output.as_ref().map(|output| output.bytes),
                error_code: job.last_error.as_ref().and_then(|error| error.code),
                error: job.last_error.as_ref().map(|error| error.message.clone()),
                possible_duplicate: job.possible_duplicate,
                render_failed: job.render_failed,
                row_changed: job.row_changed,
                attempts: job.attempts,
                times: ReportTimes {
                    created_ms: job.times.created_ms,
                    analysis_submitted_ms,
                    analysis_finished_ms,
                    submitted_ms: job.times.submitted_ms,
                    rendered_ms: job.times.rendered_ms,
                    finished_ms: job.times.finished_ms,
                    updated_ms: job.times.updated_ms,
                },
            });
        }
        let output_folder = match output_dirs.len() {
            1 => output_dirs.into_iter().next(),
            _ => None,
        };
        ReportData {
            generated_ms: context.generated_ms,
            database: context.database.display().to_string(),
            output_folder,
            counts,
            extra_columns,
            jobs: report_jobs,
            limits: Limits::default(),
        }
    }
}

/// Where a stored output is, seen from the report's folder. An output that names a URL scheme
/// is kept as a URL; anything else is a file path, relative ones taken from `working_dir`.
fn output_location(stored: &str, working_dir: &Path, report_dir: &Path) -> OutputLocation {
    if stored.contains("://") {
        return OutputLocation::Url(stored.to_string());
    }
    let file = absolute(working_dir, Path::new(stored));
    OutputLocation::File(relative_path(&file, report_dir))
}

/// `path` made absolute against `base`, with `.` and `..` resolved by name (the files may not
/// exist where the report is made, so the disk is not asked).
fn absolute(base: &Path, path: &Path) -> PathBuf {
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    };
    let mut normal = PathBuf::new();
    for component in joined.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                normal.pop();
            }
            other => normal.push(other.as_os_str()),
        }
    }
    normal
}

/// The `/`-separated path from the folder `from` to `file` (both absolute and normal).
fn relative_path(file: &Path, from: &Path) -> String {
    let file_parts: Vec<_> = file.components().collect();
    let from_parts: Vec<_> = from.components().collect();
    let common = file_parts
        .iter()
        .zip(&from_parts)
        .take_while(|(a, b)| a == b)
        .count();
    let ups = std::iter::repeat_n("..".to_string(), from_parts.len() - common);
    let downs = file_parts[common..]
        .iter()
        .map(|part| part.as_os_str().to_string_lossy().into_owned());
    ups.chain(downs).collect::<Vec<_>>().join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_are_located_from_the_report_folder() {
        let check = |stored: &str, working: &str, report_dir: &str, expected: OutputLocation| {
            assert_eq!(
                output_location(stored, Path::new(working), Path::new(report_dir)),
                expected,
                "{stored} from {report_dir}"
            );
        };
        use OutputLocation::{File, Url};
        check("/w/output/a.mp4", "/w", "/w", File("output/a.mp4".into()));
        check("output/a.mp4", "/w", "/w", File("output/a.mp4".into()));
        check(
            "./output/../out/a.mp4",
            "/w",
            "/w",
            File("out/a.mp4".into()),
        );
        check(
            "/data/renders/a.mp4",
            "/w",
            "/w/reports",
            File("../../data/renders/a.mp4".into()),
        );
        check("out/a.mp4", "/w", "/w/out", File("a.mp4".into()));
        check(
            "https://bucket.example/p/a.mp4",
            "/w",
            "/w",
            Url("https://bucket.example/p/a.mp4".into()),
        );
        check(
            "s3://bucket/p/a.mp4",
            "/w",
            "/w",
            Url("s3://bucket/p/a.mp4".into()),
        );
    }
}
