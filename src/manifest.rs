//! The CSV manifest: reading it the way Excel writes it, validating every row, and grouping
//! rows that share an `id` into one multi-subject job.
//!
//! A file that cannot be used at all (missing, empty, not UTF-8 text, a required column
//! absent) is refused with a [`ManifestError`]. Everything else becomes a [`ManifestJob`]:
//! either a [`RawJob`] ready to run or a one-line reason why it cannot, with the physical line
//! numbers of its rows, so one bad row never stops the rest of the batch.
//!
//! Rules worth knowing when reading the code:
//! - Header names are matched case-insensitively after trimming; other columns are "extra"
//!   columns, kept in header order (with their names as written) and echoed into the export.
//!   Columns with a blank header name are ignored (Excel leaves trailing empty columns).
//! - The delimiter is `,`; a header that only makes sense split on `;` or a tab (Excel in
//!   some locales) selects that delimiter instead. A first line `sep=X` (another Excel habit)
//!   is skipped.
//! - Values are trimmed. Fully blank rows are skipped. `video_url` is kept exactly as written
//!   after trimming: it is sent to the API byte for byte and is the key of the shared analysis.
//! - Rows with the same non-blank `id` form one job. Per-task columns must agree across them;
//!   agreement is decided on the normalized values (`TRUE` and `true` agree, blank and `true`
//!   do not). Faces are ordered by `obj_id`, so reordering rows does not change the job.
//! - A blank `id` is derived from the row's content (`j-` + 12 hex digits), so re-running the
//!   same file is idempotent; two such identical rows are a duplicate, not two jobs.
//! - A row that cannot be given its own id (a bad id, a duplicate) gets the id `line-<N>`.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::exit::Fatal;
use crate::job::{Face, JobSpec, hex};

/// Most subjects one job may map (Akool's limit on mappings per task).
pub const MAX_SUBJECTS_PER_JOB: usize = 5;

/// Longest accepted `id` (it becomes a file name).
pub const MAX_ID_LEN: usize = 128;

/// A parsed manifest: every job, valid or not, in the order of its first line.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub path: PathBuf,
    /// Names of the columns that are not manifest columns, in header order, as written.
    pub extra_columns: Vec<String>,
    pub jobs: Vec<ManifestJob>,
    /// SHA-256 (hex) of the file's bytes: tells whether a re-ingested file changed at all.
    pub sha256: String,
}

/// One job of the manifest: one row, or several rows sharing an `id`.
#[derive(Debug, Clone, PartialEq)]
pub struct ManifestJob {
    pub id: String,
    /// The 1-based physical line where the job's first row starts (the header is line 1).
    pub line: u64,
    /// The lines of all the job's rows, ascending.
    pub lines: Vec<u64>,
    /// The job, or the one-line reason it is invalid.
    pub row: Result<RawJob, String>,
    /// For an invalid job: the first row's `video_url` as written (trimmed), so the export can
    /// show which video a bad row was about. Empty for a valid job (it is in `row`).
    pub video_url: String,
    /// For an invalid job: the first row's extra columns. Empty for a valid job.
    pub extra: Vec<(String, String)>,
}

/// A valid job as the manifest wrote it; blanks are `None` until [`RawJob::to_spec`] applies
/// the defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawJob {
    pub video_url: String,
    /// 1–5 faces, ordered by `obj_id`; a blank `obj_id` only on a single-row job.
    pub faces: Vec<Face>,
    /// `480p` or `720p` (normalized to lower case).
    pub resolution: Option<String>,
    pub model_name: Option<String>,
    pub keep_original_sound: Option<bool>,
    pub template_id: Option<String>,
    /// The first row's extra columns, in header order.
    pub extra: Vec<(String, String)>,
}

/// Values for the columns a row leaves blank (`--resolution`, `--model`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Defaults {
    pub resolution: String,
    pub model_name: String,
}

impl Default for Defaults {
    /// The command-line defaults: `720p`, `akool-premium`.
    fn default() -> Defaults {
        Defaults {
            resolution: "720p".to_string(),
            model_name: "akool-premium".to_string(),
        }
    }
}

impl From<&crate::cli::JobDefaults> for Defaults {
    fn from(options: &crate::cli::JobDefaults) -> Defaults {
        Defaults {
            resolution: options.resolution.clone(),
            model_name: options.model.clone(),
        }
    }
}

impl RawJob {
    /// The job's spec with the defaults applied: blank resolution and model take the
    /// defaults, a blank `keep_original_sound` means true.
    pub fn to_spec(&self, defaults: &Defaults) -> JobSpec {
        JobSpec {
            video_url: self.video_url.clone(),
            faces: self.faces.clone(),
            resolution: self
                .resolution
                .clone()
                .unwrap_or_else(|| defaults.resolution.clone()),
            model_name: self
                .model_name
                .clone()
                .unwrap_or_else(|| defaults.model_name.clone()),
            keep_original_sound: self.keep_original_sound.unwrap_or(true),
            template_id: self.template_id.clone(),
            extra: self.extra.clone(),
        }
    }
}

impl Manifest {
    /// How many jobs can run.
    pub fn valid_jobs(&self) -> usize {
        self.jobs.iter().filter(|job| job.row.is_ok()).count()
    }

    /// How many distinct `video_url`s the valid jobs use (= analyses needed).
    pub fn distinct_videos(&self) -> usize {
        let mut videos = HashSet::new();
        for job in &self.jobs {
            if let Ok(raw) = &job.row {
                videos.insert(raw.video_url.as_str());
            }
        }
        videos.len()
    }

    /// The jobs that cannot run, in line order.
    pub fn invalid(&self) -> impl Iterator<Item = &ManifestJob> {
        self.jobs.iter().filter(|job| job.row.is_err())
    }
}

impl ManifestJob {
    /// The reason the job is invalid, if it is.
    pub fn reason(&self) -> Option<&str> {
        self.row.as_ref().err().map(String::as_str)
    }
}

/// A manifest file that cannot be used at all. Nothing of it is ingested.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest {path}: no such file", path = .path.display())]
    Missing { path: PathBuf },
    #[error("cannot read manifest {path}: {cause}", path = .path.display())]
    Unreadable { path: PathBuf, cause: String },
    #[error("manifest {path} is empty: it needs a header row naming at least video_url and face_url", path = .path.display())]
    Empty { path: PathBuf },
    #[error("manifest {path} is not UTF-8 text (invalid byte on line {line})", path = .path.display())]
    NotUtf8 { path: PathBuf, line: u64 },
    #[error("manifest {path} is not a CSV text file (NUL byte on line {line})", path = .path.display())]
    NotText { path: PathBuf, line: u64 },
    #[error("manifest {path} has no {} (header: {})", missing_columns(.missing), found_columns(.found), path = .path.display())]
    MissingColumns {
        path: PathBuf,
        missing: Vec<&'static str>,
        found: Vec<String>,
    },
    #[error("manifest {path}: column {column:?} appears more than once in the header", path = .path.display())]
    DuplicateColumn { path: PathBuf, column: String },
    #[error("manifest {path} is not valid CSV: {cause}", path = .path.display())]
    Csv { path: PathBuf, cause: String },
}

fn missing_columns(missing: &[&'static str]) -> String {
    match missing {
        [one] => format!("{one} column"),
        many => format!("{} columns", many.join(" and ")),
    }
}

fn found_columns(found: &[String]) -> String {
    if found.iter().all(|name| name.is_empty()) {
        "no column names".to_string()
    } else {
        found.join(", ")
    }
}

impl From<ManifestError> for Fatal {
    fn from(error: ManifestError) -> Fatal {
        let hint = match &error {
            ManifestError::Missing { .. } | ManifestError::Unreadable { .. } => {
                "check the path given on the command line"
            }
            ManifestError::NotUtf8 { .. } | ManifestError::NotText { .. } => {
                "save the sheet as \"CSV UTF-8 (comma delimited)\""
            }
            ManifestError::Empty { .. } | ManifestError::MissingColumns { .. } => {
                "the first line must be a header such as: id,video_url,face_url,obj_id,resolution"
            }
            ManifestError::DuplicateColumn { .. } => "rename or delete one of the columns",
            ManifestError::Csv { .. } => "save the sheet as \"CSV UTF-8 (comma delimited)\"",
        };
        Fatal::new(error.to_string()).hint(hint)
    }
}

/// Read and parse a manifest file.
pub fn parse_file(path: &Path) -> Result<Manifest, ManifestError> {
    parse_bytes(path, &read_file(path)?)
}

/// A manifest file's bytes, or the error naming it.
pub fn read_file(path: &Path) -> Result<Vec<u8>, ManifestError> {
    std::fs::read(path).map_err(|error| match error.kind() {
        std::io::ErrorKind::NotFound => ManifestError::Missing {
            path: path.to_path_buf(),
        },
        _ => ManifestError::Unreadable {
            path: path.to_path_buf(),
            cause: error.to_string(),
        },
    })
}

/// The fingerprint of a manifest file's bytes ([`Manifest::sha256`]).
pub fn content_sha256(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Parse a manifest's bytes; `name` is only used to name the file in errors.
pub fn parse_bytes(name: &Path, bytes: &[u8]) -> Result<Manifest, ManifestError> {
    let path = name.to_path_buf();
    let sha256 = content_sha256(bytes);
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => text,
        Err(error) => {
            let line = line_of_offset(bytes, error.valid_up_to());
            return Err(ManifestError::NotUtf8 { path, line });
        }
    };
    if let Some(offset) = text.bytes().position(|byte| byte == 0) {
        let line = line_of_offset(bytes, offset);
        return Err(ManifestError::NotText { path, line });
    }
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.trim().is_empty() {
        return Err(ManifestError::Empty { path });
    }

    // Excel's "sep=;" line names the delimiter and is not part of the table.
    let (text, skipped_lines, declared_delimiter) = match excel_separator_line(text) {
        Some((delimiter, rest)) => (rest, 1, Some(delimiter)),
        None => (text, 0, None),
    };
    let delimiter = match declared_delimiter {
        Some(delimiter) => delimiter,
        None => sniff_delimiter(text),
    };

    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(delimiter)
        .from_reader(text.as_bytes());
    let mut record = csv::StringRecord::new();
    let read = |reader: &mut csv::Reader<&[u8]>, record: &mut csv::StringRecord| {
        reader
            .read_record(record)
            .map_err(|error| ManifestError::Csv {
                path: path.clone(),
                cause: error.to_string(),
            })
    };
    if !read(&mut reader, &mut record)? {
        return Err(ManifestError::Empty { path });
    }
    let header = Header::parse(&path, &record)?;
    let mut builder = Builder::new(&header);
    let mut lines = LineCounter::new(text.as_bytes(), 1 + skipped_lines);
    while read(&mut reader, &mut record)? {
        if record.iter().all(|field| field.trim().is_empty()) {
            continue;
        }
        let offset = record.position().map_or(0, |position| position.byte());
        builder.add_row(lines.line_of_record_at(offset as usize), &record);
    }
    Ok(Manifest {
        path,
        extra_columns: header.extra.iter().map(|(_, name)| name.clone()).collect(),
        jobs: builder.finish(),
        sha256,
    })
}

/// The 1-based line holding byte `offset`.
fn line_of_offset(bytes: &[u8], offset: usize) -> u64 {
    1 + bytes[..offset]
        .iter()
        .filter(|&&byte| byte == b'\n')
        .count() as u64
}

/// Physical line numbers of records, counted incrementally over the text.
///
/// csv's own `Position::line()` is where the reader *started* looking for the record: before
/// the `\n` of a CRLF and before skipped blank lines, so it can be a line or more too early.
struct LineCounter<'t> {
    text: &'t [u8],
    offset: usize,
    line: u64,
}

impl<'t> LineCounter<'t> {
    fn new(text: &'t [u8], first_line: u64) -> LineCounter<'t> {
        LineCounter {
            text,
            offset: 0,
            line: first_line,
        }
    }

    /// The line of the record whose read started at byte `offset`: its first byte is the
    /// first one that does not end a line.
    fn line_of_record_at(&mut self, offset: usize) -> u64 {
        let mut start = offset.min(self.text.len());
        while start < self.text.len() && matches!(self.text[start], b'\r' | b'\n') {
            start += 1;
        }
        if start >= self.offset {
            let newlines = self.text[self.offset..start]
                .iter()
                .filter(|&&byte| byte == b'\n')
                .count();
            self.line += newlines as u64;
            self.offset = start;
        }
        self.line
    }
}

/// `sep=X` on the first line (Excel's delimiter hint): the delimiter and the text after it.
fn excel_separator_line(text: &str) -> Option<(u8, &str)> {
    let (first, rest) = text.split_once('\n').unwrap_or((text, ""));
    let first = first.trim_end_matches('\r');
    let value = first.strip_prefix("sep=").or(first.strip_prefix("SEP="))?;
    match value.as_bytes() {
        [delimiter] if matches!(delimiter, b',' | b';' | b'\t' | b'|') => Some((*delimiter, rest)),
        _ => None,
    }
}

/// `,` unless the header only names the required columns when split on `;` or a tab.
fn sniff_delimiter(text: &str) -> u8 {
    let first_line = text
        .lines()
        .find(|line| !line.trim().is_empty())
        .unwrap_or("");
    let names_required = |delimiter: char| {
        let names: Vec<String> = first_line
            .split(delimiter)
            .map(|name| name.trim().trim_matches('"').trim().to_ascii_lowercase())
            .collect();
        names.iter().any(|name| name == "video_url") && names.iter().any(|name| name == "face_url")
    };
    if names_required(',') {
        b','
    } else if names_required(';') {
        b';'
    } else if names_required('\t') {
        b'\t'
    } else {
        b','
    }
}

/// Where each manifest column sits in a record.
struct Header {
    width: usize,
    id: Option<usize>,
    video_url: usize,
    face_url: usize,
    obj_id: Option<usize>,
    resolution: Option<usize>,
    model_name: Option<usize>,
    keep_original_sound: Option<usize>,
    template_id: Option<usize>,
    /// (index, name as written) of every other named column.
    extra: Vec<(usize, String)>,
}

impl Header {
    fn parse(path: &Path, record: &csv::StringRecord) -> Result<Header, ManifestError> {
        const KNOWN: [&str; 8] = [
            "id",
            "video_url",
            "face_url",
            "obj_id",
            "resolution",
            "model_name",
            "keep_original_sound",
            "template_id",
        ];
        let mut known: [Option<usize>; 8] = [None; 8];
        let mut extra = Vec::new();
        let mut seen = HashSet::new();
        for (index, name) in record.iter().enumerate() {
            let name = name.trim();
            if name.is_empty() {
                continue;
            }
            let folded = name.to_lowercase();
            if !seen.insert(folded.clone()) {
                return Err(ManifestError::DuplicateColumn {
                    path: path.to_path_buf(),
                    column: name.to_string(),
                });
            }
            match KNOWN.iter().position(|known_name| *known_name == folded) {
                Some(slot) => known[slot] = Some(index),
                None => extra.push((index, name.to_string())),
            }
        }
        let (video_url, face_url) = match (known[1], known[2]) {
            (Some(video_url), Some(face_url)) => (video_url, face_url),
            (video_url, face_url) => {
                let mut missing = Vec::new();
                if video_url.is_none() {
                    missing.push("video_url");
                }
                if face_url.is_none() {
                    missing.push("face_url");
                }
                return Err(ManifestError::MissingColumns {
                    path: path.to_path_buf(),
                    missing,
                    found: record.iter().map(|name| name.trim().to_string()).collect(),
                });
            }
        };
        Ok(Header {
            width: record.len(),
            id: known[0],
            video_url,
            face_url,
            obj_id: known[3],
            resolution: known[4],
            model_name: known[5],
            keep_original_sound: known[6],
            template_id: known[7],
            extra,
        })
    }
}

/// One non-blank data row, validated on its own.
struct Row {
    line: u64,
    video_url: String,
    extra: Vec<(String, String)>,
    /// The row's own problems (field count, fields), joined with "; ".
    fields: Result<RowFields, String>,
}

struct RowFields {
    face: Face,
    resolution: Option<String>,
    model_name: Option<String>,
    keep_original_sound: Option<bool>,
    template_id: Option<String>,
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
struct Builder<'h> {
    header: &'h Header,
    candidates: Vec<Candidate>,
    /// Given id → index into `candidates`.
    groups: HashMap<String, usize>,
}

impl<'h> Builder<'h> {
    fn new(header: &'h Header) -> Builder<'h> {
        Builder {
            header,
            candidates: Vec::new(),
            groups: HashMap::new(),
        }
    }

    fn add_row(&mut self, line: u64, record: &csv::StringRecord) {
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

    fn finish(self) -> Vec<ManifestJob> {
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
                id,
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
            job.video_url = raw.video_url.clone();
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
        job.id = id;
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
            video_url: row.video_url,
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
        video_url: first.video_url.clone(),
        faces,
        resolution: first_fields.resolution.clone(),
        model_name: first_fields.model_name.clone(),
        keep_original_sound: first_fields.keep_original_sound,
        template_id: first_fields.template_id.clone(),
        extra: first.extra.clone(),
    })
}

/// Validate one row's cells (already trimmed); every problem, joined with "; ".
fn validate_fields(
    video_url: &str,
    face_url: &str,
    obj_id: &str,
    resolution: &str,
    model_name: &str,
    keep_original_sound: &str,
    template_id: &str,
) -> Result<RowFields, String> {
    let mut problems = Vec::new();
    if let Err(problem) = check_url("video_url", video_url) {
        problems.push(problem);
    }
    if let Err(problem) = check_url("face_url", face_url) {
        problems.push(problem);
    }
    let obj_id = parse_obj_id(obj_id).unwrap_or_else(|problem| {
        problems.push(problem);
        None
    });
    let resolution = parse_resolution(resolution).unwrap_or_else(|problem| {
        problems.push(problem);
        None
    });
    let keep_original_sound = parse_bool(keep_original_sound).unwrap_or_else(|problem| {
        problems.push(problem);
        None
    });
    if !problems.is_empty() {
        return Err(problems.join("; "));
    }
    let optional = |value: &str| (!value.is_empty()).then(|| value.to_string());
    Ok(RowFields {
        face: Face {
            obj_id,
            face_url: face_url.to_string(),
        },
        resolution,
        model_name: optional(model_name),
        keep_original_sound,
        template_id: optional(template_id),
    })
}

/// The id of a blank-id row: stable across runs for the same video, subject and face.
pub fn derived_id(video_url: &str, obj_id: &str, face_url: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(video_url.as_bytes());
    hasher.update(b"\n");
    hasher.update(obj_id.as_bytes());
    hasher.update(b"\n");
    hasher.update(face_url.as_bytes());
    let digest = hasher.finalize();
    format!("j-{}", &hex(&digest[..6]))
}

/// An id becomes a file name: `[A-Za-z0-9._-]`, 1–128 characters, not `.` or `..`.
pub fn check_id(id: &str) -> Result<(), String> {
    if id == "." || id == ".." {
        return Err(format!("id {id:?} is not allowed (it names a folder)"));
    }
    let length = id.chars().count();
    if length > MAX_ID_LEN {
        return Err(format!(
            "id is {length} characters long, at most {MAX_ID_LEN} allowed"
        ));
    }
    if id.is_empty()
        || !id
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'))
    {
        return Err(format!(
            "id {:?} may only contain letters, digits, '.', '_' and '-'",
            Shown(id)
        ));
    }
    Ok(())
}

/// The longest URL accepted: far beyond any real video or image link, and short enough that a
/// runaway cell (a pasted file, a broken export) is not sent to the service nor stored in
/// every job record.
pub const MAX_URL_BYTES: usize = 8192;

/// An http(s) URL with a host, written without spaces or control characters.
fn check_url(column: &str, value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("{column} is blank"));
    }
    if value.len() > MAX_URL_BYTES {
        return Err(format!(
            "{column} is {} bytes long; URLs are limited to {MAX_URL_BYTES}",
            value.len()
        ));
    }
    let shown = Shown(value);
    // Most URLs are ASCII: test bytes rather than decode characters.
    let any_char = |test: fn(char) -> bool| {
        if value.is_ascii() {
            value.bytes().any(|byte| test(char::from(byte)))
        } else {
            value.chars().any(test)
        }
    };
    if any_char(char::is_control) {
        return Err(format!(
            "{column}: {shown:?} contains a control character (a line break?)"
        ));
    }
    if any_char(char::is_whitespace) {
        return Err(format!(
            "{column}: {shown:?} contains a space (write it as %20)"
        ));
    }
    let url = match reqwest::Url::parse(value) {
        Ok(url) => url,
        // Without a scheme it is not a URL at all ("example.com/a.mp4", "n/a").
        Err(_) if !value.contains("://") => {
            return Err(format!("{column}: {shown:?} is not an http(s) URL"));
        }
        Err(error) => return Err(format!("{column}: {shown:?} is not a valid URL ({error})")),
    };
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{column}: {shown:?} is not an http(s) URL"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{column}: {shown:?} has no host"));
    }
    Ok(())
}

fn parse_obj_id(value: &str) -> Result<Option<u32>, String> {
    if value.is_empty() {
        return Ok(None);
    }
    if !value.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(format!(
            "obj_id: {:?} is not a non-negative integer",
            Shown(value)
        ));
    }
    value
        .parse::<u32>()
        .map(Some)
        .map_err(|_| format!("obj_id: {:?} is too large", Shown(value)))
}

fn parse_resolution(value: &str) -> Result<Option<String>, String> {
    if value.is_empty() {
        return Ok(None);
    }
    let lower = value.to_ascii_lowercase();
    match lower.as_str() {
        "480p" | "720p" => Ok(Some(lower)),
        _ => Err(format!(
            "resolution: {:?} must be 480p or 720p",
            Shown(value)
        )),
    }
}

fn parse_bool(value: &str) -> Result<Option<bool>, String> {
    if value.is_empty() {
        return Ok(None);
    }
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(Some(true)),
        "false" | "0" | "no" => Ok(Some(false)),
        _ => Err(format!(
            "keep_original_sound: {:?} must be true or false",
            Shown(value)
        )),
    }
}

/// A cell value quoted in a reason: escaped like a Rust string (so a reason stays on one
/// line) and shortened when very long.
struct Shown<'a>(&'a str);

impl fmt::Debug for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const LIMIT: usize = 100;
        match self.0.char_indices().nth(LIMIT) {
            None => write!(f, "{:?}", self.0),
            Some((cut, _)) => {
                let shown = format!("{:?}", &self.0[..cut]);
                write!(f, "{}...\"", &shown[..shown.len() - 1])
            }
        }
    }
}
