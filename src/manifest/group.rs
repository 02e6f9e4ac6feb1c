//! Rows into jobs: rows sharing an `id` form one multi-subject job, ids are settled (derived
//! for blank ones, made unique), and each group is checked for agreement.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};

use crate::akool::Resolution;
use crate::job::Face;
use crate::manifest::cells::{check_id, derived_id, validate_fields};
use crate::manifest::header::Header;
use crate::manifest::{MAX_SUBJECTS_PER_JOB, ManifestJob, RawJob};

/// One non-blank data row, validated on its own.
struct Row {
    line: u64,
    video_url: String,
    extra: Vec<(String, String)>,
    /// The row's own problems (field count, fields), joined with "; ".
    fields: Result<RowFields, String>,
}

pub(super) struct RowFields {
    pub(super) face: Face,
    pub(super) resolution: Option<Resolution>,
    pub(super) model_name: Option<String>,
    pub(super) keep_original_sound: Option<bool>,
    pub(super) template_id: Option<String>,
}

/// How a job candidate is keyed before ids are final.
enum Key {
    /// A valid non-blank id: rows with it are grouped.
    Given(String),
    /// A blank id: derived from the row's content.
    Derived(String),
    /// The id cell is unusable; the reason.
    Unusable(String),
}

struct Candidate {
    key: Key,
    rows: Vec<Row>,
}

/// Collects rows into job candidates, then validates groups and settles ids.
pub(super) struct Builder<'h> {
    header: &'h Header,
    candidates: Vec<Candidate>,
    /// Given id → index into `candidates`.
    groups: HashMap<String, usize>,
}

impl<'h> Builder<'h> {
    pub(super) fn new(header: &'h Header) -> Builder<'h> {
        Builder {
            header,
            candidates: Vec::new(),
            groups: HashMap::new(),
        }
    }

    pub(super) fn add_row(&mut self, line: u64, record: &csv::StringRecord) {
        let header = self.header;
        let cell = |index: Option<usize>| -> &str {
            index
                .and_then(|index| record.get(index))
                .map_or("", str::trim)
        };
        let id = cell(header.id);
        let video_url = cell(Some(header.video_url)).to_string();
        let face_url = cell(Some(header.face_url));
        let obj_id_text = cell(header.obj_id);
        let extra = header
            .extra
            .iter()
            .map(|(index, name)| (name.clone(), cell(Some(*index)).to_string()))
            .collect();

        let fields = if record.len() != header.width {
            Err(format!(
                "row has {} fields, the header has {}",
                record.len(),
                header.width
            ))
        } else {
            validate_fields(
                &video_url,
                face_url,
                obj_id_text,
                cell(header.resolution),
                cell(header.model_name),
                cell(header.keep_original_sound),
                cell(header.template_id),
            )
        };

        let key = if id.is_empty() {
            let obj_id = match &fields {
                Ok(fields) => fields.face.obj_id.map(|obj_id| obj_id.to_string()),
                Err(_) => None,
            };
            let obj_id = obj_id.as_deref().unwrap_or(obj_id_text);
            Key::Derived(derived_id(&video_url, obj_id, face_url))
        } else {
            match check_id(id) {
                Ok(()) => Key::Given(id.to_string()),
                Err(reason) => Key::Unusable(reason),
            }
        };
        let row = Row {
            line,
            video_url,
            extra,
            fields,
        };
        if let Key::Given(given) = &key {
            if let Some(&index) = self.groups.get(given) {
                self.candidates[index].rows.push(row);
                return;
            }
            self.groups.insert(given.clone(), self.candidates.len());
        }
        self.candidates.push(Candidate {
            key,
            rows: vec![row],
        });
    }

    pub(super) fn finish(self) -> Vec<ManifestJob> {
        let mut jobs = Vec::with_capacity(self.candidates.len());
        let mut kinds = Vec::with_capacity(self.candidates.len());
        for Candidate { key, rows } in self.candidates {
            let first = &rows[0];
            let line = first.line;
            let lines = rows.iter().map(|row| row.line).collect();
            // Kept for an invalid job only: a valid one has its video and extra columns in
            // `row`, and copies would double the memory a large manifest takes. A single row
            // whose fields are valid always makes a valid job.
            let may_be_invalid =
                rows.len() > 1 || first.fields.is_err() || matches!(key, Key::Unusable(_));
            let (video_url, extra) = if may_be_invalid {
                (first.video_url.clone(), first.extra.clone())
            } else {
                (String::new(), Vec::new())
            };
            let (id, row, kind) = match key {
                Key::Given(id) => {
                    let row = assemble(&id, rows);
                    (id, row, Kind::Given)
                }
                Key::Derived(id) => {
                    let row = assemble(&id, rows);
                    (id, row, Kind::Derived)
                }
                Key::Unusable(reason) => {
                    let reason = match &first.fields {
                        Ok(_) => reason,
                        Err(field_reason) => format!("{reason}; {field_reason}"),
                    };
                    (format!("line-{line}"), Err(reason), Kind::Unusable)
                }
            };
            let (video_url, extra) = match row {
                Ok(_) => (String::new(), Vec::new()),
                Err(_) => (video_url, extra),
            };
            jobs.push(ManifestJob {
                id: id.into(),
                line,
                lines,
                row,
                video_url,
                extra,
            });
            kinds.push(kind);
        }
        settle_ids(&mut jobs, &kinds);
        jobs
    }
}

/// Make ids unique. Given ids are unique among themselves (their rows were grouped), but a
/// derived id can repeat (identical blank-id rows) or equal a given one, and a `line-N` id
/// can equal a given one. The later job gets the problem (or keeps its own, for an unusable
/// id) and a fresh `line-N` id.
fn settle_ids(jobs: &mut [ManifestJob], kinds: &[Kind]) {
    // (index of the later job, line of the first job with its id, its new id)
    let renames: Vec<(usize, u64, String)> = {
        let mut first_use: HashMap<&str, u64> = HashMap::with_capacity(jobs.len());
        let mut clashes = Vec::new();
        for (index, job) in jobs.iter().enumerate() {
            match first_use.entry(job.id.as_str()) {
                Entry::Vacant(slot) => {
                    slot.insert(job.line);
                }
                Entry::Occupied(slot) => clashes.push((index, *slot.get())),
            }
        }
        let mut fresh = HashSet::new();
        clashes
            .into_iter()
            .map(|(index, earlier)| {
                let line = jobs[index].line;
                let mut id = format!("line-{line}");
                let mut suffix = 2;
                while first_use.contains_key(id.as_str()) || fresh.contains(&id) {
                    id = format!("line-{line}-{suffix}");
                    suffix += 1;
                }
                fresh.insert(id.clone());
                (index, earlier, id)
            })
            .collect()
    };
    for (index, earlier, id) in renames {
        let job = &mut jobs[index];
        if let Ok(raw) = &job.row {
            job.video_url = raw.video_url.to_string();
            job.extra = raw.extra.clone();
        }
        match kinds[index] {
            Kind::Derived => job.row = Err(format!("duplicate of line {earlier}")),
            Kind::Given => {
                job.row = Err(format!("id {:?} is also used by line {earlier}", job.id));
            }
            // Only the replacement id clashed: the row's own reason stands.
            Kind::Unusable => {}
        }
        job.id = id.into();
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Given,
    Derived,
    Unusable,
}

/// Check a job's rows (one, or a group sharing `id`) and build the job.
fn assemble(id: &str, mut rows: Vec<Row>) -> Result<RawJob, String> {
    if rows.len() == 1 {
        // The common case: move the row's values instead of copying them.
        let row = rows.pop().expect("one row");
        let fields = row.fields?;
        return Ok(RawJob {
            video_url: row.video_url.into(),
            faces: vec![fields.face],
            resolution: fields.resolution,
            model_name: fields.model_name,
            keep_original_sound: fields.keep_original_sound,
            template_id: fields.template_id,
            extra: row.extra,
        });
    }
    let rows = &rows[..];

    // A group: first each row on its own, then the rows against each other.
    let row_problems: Vec<String> = rows
        .iter()
        .filter_map(|row| match &row.fields {
            Ok(_) => None,
            Err(reason) => Some(format!("line {}: {reason}", row.line)),
        })
        .collect();
    if !row_problems.is_empty() {
        return Err(format!("id {id:?}: {}", row_problems.join("; ")));
    }
    let fields: Vec<&RowFields> = rows
        .iter()
        .filter_map(|row| row.fields.as_ref().ok())
        .collect();
    let lines = |rows: &mut dyn Iterator<Item = u64>| {
        rows.map(|line| line.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };

    let mut problems = Vec::new();
    if rows.len() > MAX_SUBJECTS_PER_JOB {
        problems.push(format!(
            "{} rows, at most {MAX_SUBJECTS_PER_JOB} subjects per job (lines {})",
            rows.len(),
            lines(&mut rows.iter().map(|row| row.line))
        ));
    }
    let blank: Vec<u64> = rows
        .iter()
        .zip(&fields)
        .filter(|(_, fields)| fields.face.obj_id.is_none())
        .map(|(row, _)| row.line)
        .collect();
    if !blank.is_empty() {
        problems.push(format!(
            "obj_id is blank on line{} {}, required when an id has several rows",
            if blank.len() > 1 { "s" } else { "" },
            lines(&mut blank.iter().copied())
        ));
    }
    let mut by_obj_id: Vec<(u32, u64)> = rows
        .iter()
        .zip(&fields)
        .filter_map(|(row, fields)| fields.face.obj_id.map(|obj_id| (obj_id, row.line)))
        .collect();
    by_obj_id.sort();
    for same in by_obj_id.chunk_by(|a, b| a.0 == b.0) {
        if same.len() > 1 {
            let times = match same.len() {
                2 => "twice".to_string(),
                n => format!("{n} times"),
            };
            problems.push(format!(
                "obj_id {} appears {times} (lines {})",
                same[0].0,
                lines(&mut same.iter().map(|(_, line)| *line))
            ));
        }
    }
    let first = &rows[0];
    let agree = |name: &str, differs: &dyn Fn(&Row, &RowFields) -> bool| {
        rows.iter()
            .zip(&fields)
            .find(|(row, fields)| differs(row, fields))
            .map(|(row, _)| {
                format!(
                    "{name} differs between lines {} and {}",
                    first.line, row.line
                )
            })
    };
    let first_fields = fields[0];
    problems.extend(
        [
            agree("video_url", &|row, _| row.video_url != first.video_url),
            agree("resolution", &|_, f| {
                f.resolution != first_fields.resolution
            }),
            agree("model_name", &|_, f| {
                f.model_name != first_fields.model_name
            }),
            agree("keep_original_sound", &|_, f| {
                f.keep_original_sound != first_fields.keep_original_sound
            }),
            agree("template_id", &|_, f| {
                f.template_id != first_fields.template_id
            }),
        ]
        .into_iter()
        .flatten(),
    );
    if !problems.is_empty() {
        return Err(format!("id {id:?}: {}", problems.join("; ")));
    }

    let mut faces: Vec<Face> = fields.iter().map(|fields| fields.face.clone()).collect();
    faces.sort_by_key(|face| face.obj_id);
    Ok(RawJob {
        video_url: first.video_url.as_str().into(),
        faces,
        resolution: first_fields.resolution,
        model_name: first_fields.model_name.clone(),
        keep_original_sound: first_fields.keep_original_sound,
        template_id: first_fields.template_id.clone(),
        extra: first.extra.clone(),
    })
}
