//! `export [--out FILE]`: one CSV row per job, and the text of its cells.

use std::io::{self, Write};
use std::path::Path;

use crate::exit::{Exit, Fatal};
use crate::job::{Job, JobState};
use crate::view::{Records, write_atomically, write_stdout};

/// `export [--out FILE]`: one CSV row per job, in id order.
///
/// Columns: `id,state,video_url,mappings,analysis_id,task_id,output,bytes,sha256,
/// error_code,error,attempts,flags,creates` (`creates`: how many creates may have been billed
/// for the job), then the union of the jobs' extra manifest columns in
/// first-seen order (a job without one gets an empty cell). See [`mappings_text`],
/// [`error_text`] and [`flags_text`] for the formats of those cells.
pub fn export(db: &Path, out: Option<&Path>) -> Result<Exit, Fatal> {
    let jobs = Records::load(db)?.jobs;
    match out {
        Some(path) => {
            write_atomically(path, |file| write_export(file, &jobs)).map_err(|error| {
                Fatal::new(format!("cannot write the export to {}", path.display())).cause(error)
            })?;
        }
        None => {
            let mut bytes = Vec::new();
            write_export(&mut bytes, &jobs)
                .map_err(|error| Fatal::new("cannot format the export").cause(error))?;
            write_stdout(&bytes)?;
        }
    }
    Ok(Exit::Success)
}

/// The export's columns before the extra manifest columns.
pub const EXPORT_COLUMNS: [&str; 14] = [
    "id",
    "state",
    "video_url",
    "mappings",
    "analysis_id",
    "task_id",
    "output",
    "bytes",
    "sha256",
    "error_code",
    "error",
    "attempts",
    "flags",
    "creates",
];

/// Write the export CSV of `jobs`.
pub fn write_export(out: impl Write, jobs: &[Job]) -> io::Result<()> {
    let mut extra_columns: Vec<&str> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for job in jobs {
        for (name, _) in &job.spec.extra {
            if seen.insert(name.as_str()) {
                extra_columns.push(name);
            }
        }
    }
    let mut writer = csv::Writer::from_writer(out);
    let header = EXPORT_COLUMNS
        .iter()
        .copied()
        .chain(extra_columns.iter().copied());
    writer.write_record(header)?;
    for job in jobs {
        let output = job.output.as_ref();
        let fixed = [
            job.id.to_string(),
            job.state.to_string(),
            job.spec.video_url.to_string(),
            mappings_text(job),
            job.analysis_id.clone().unwrap_or_default(),
            job.task_id.clone().unwrap_or_default(),
            output.map(|output| output.path.clone()).unwrap_or_default(),
            output
                .map(|output| output.bytes.to_string())
                .unwrap_or_default(),
            output
                .map(|output| output.sha256.clone())
                .unwrap_or_default(),
            job.last_error
                .as_ref()
                .and_then(|error| error.code)
                .map(|code| code.to_string())
                .unwrap_or_default(),
            error_text(job),
            job.attempts.to_string(),
            flags_text(job),
            job.creates.to_string(),
        ];
        let extra = extra_columns.iter().map(|column| {
            job.spec
                .extra
                .iter()
                .find(|(name, _)| name == column)
                .map_or("", |(_, value)| value.as_str())
        });
        writer.write_record(fixed.iter().map(String::as_str).chain(extra))?;
    }
    writer.flush()
}

/// The `mappings` cell: the resolved mappings once subjects are chosen, otherwise the
/// manifest's faces, as `obj_id=url` joined by `|`; a blank obj_id shows as `?`
/// (`?=https://.../face.jpg`).
pub fn mappings_text(job: &Job) -> String {
    if job.mappings.is_empty() {
        job.spec
            .faces
            .iter()
            .map(|face| match face.obj_id {
                Some(obj_id) => format!("{obj_id}={}", face.face_url),
                None => format!("?={}", face.face_url),
            })
            .collect::<Vec<_>>()
            .join("|")
    } else {
        job.mappings
            .iter()
            .map(|mapping| format!("{}={}", mapping.obj_id, mapping.img_url))
            .collect::<Vec<_>>()
            .join("|")
    }
}

/// The `error` cell: the job's last error message. For a `needs_mapping` job it lists the
/// detected subjects instead, so a person can fill in `obj_id`:
/// `choose obj_id: 0=<preview image url>|1=<preview image url>` (obj_id, `=`, the subject's
/// preview image URL; subjects joined by `|`).
pub fn error_text(job: &Job) -> String {
    if job.state == JobState::NeedsMapping && !job.subjects.is_empty() {
        let subjects = job
            .subjects
            .iter()
            .map(|subject| format!("{}={}", subject.obj_id, subject.img_url))
            .collect::<Vec<_>>()
            .join("|");
        return format!("choose obj_id: {subjects}");
    }
    job.last_error
        .as_ref()
        .map(|error| error.message.clone())
        .unwrap_or_default()
}

/// The `flags` cell, joined by `|`: `possible_duplicate` when a create may have been sent
/// twice; `reuses=<id>` when the job took the render of job `<id>`, which asked for the very
/// same one (nothing was bought for this job); `row_changed` when the manifest row changed
/// after submission and the job was kept as submitted (`run --replace-changed` renders the
/// new row).
pub fn flags_text(job: &Job) -> String {
    let mut flags = Vec::new();
    if job.possible_duplicate {
        flags.push("possible_duplicate".to_string());
    }
    if let Some(leader) = &job.reused_from {
        flags.push(format!("reuses={leader}"));
    }
    if job.row_changed {
        flags.push("row_changed".to_string());
    }
    flags.join("|")
}
