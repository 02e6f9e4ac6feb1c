//! The CSV manifest: reading it the way Excel writes it, validating every row, and grouping
//! rows that share an `id` into one multi-subject job.
//!
//! A file that cannot be used at all (missing, empty, not text, a required column absent) is
//! refused with a [`ManifestError`]. Text that is not UTF-8 is decoded rather than refused
//! (see [`Decoded`]): Excel's "CSV" is Windows-1252, its "Unicode text" UTF-16. Everything else becomes a [`ManifestJob`]:
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

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::akool::Resolution;
use crate::job::{Face, JobId, JobSpec, VideoUrl, hex};

mod cells;
mod group;
mod header;
mod shard;
mod text;

pub use cells::{check_id, derived_id};
use group::Builder;
use header::Header;
pub use shard::Shard;
use text::{LineCounter, excel_separator_line, line_of_offset, sniff_delimiter};

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
    /// Always of the bytes as read, whatever their encoding.
    pub sha256: String,
    /// The file was not UTF-8 and was decoded from another encoding.
    pub decoded: Option<Decoded>,
}

/// How a manifest that is not UTF-8 was read: a file with a UTF-16 byte-order mark as UTF-16
/// (Excel's "Unicode text"), any other text as Windows-1252 (Excel's "CSV" on Windows, and a
/// superset of Latin-1 in which every byte is a character). A file holding NUL bytes is not
/// text in any of these and is still refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded {
    /// The encoding's name (`windows-1252`, `UTF-16LE`, `UTF-16BE`).
    pub encoding: &'static str,
    /// The first line holding a byte that is not UTF-8.
    pub line: u64,
}

/// One job of the manifest: one row, or several rows sharing an `id`.
#[derive(Debug, Clone, PartialEq)]
pub struct ManifestJob {
    pub id: JobId,
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
    pub video_url: VideoUrl,
    /// 1–5 faces, ordered by `obj_id`; a blank `obj_id` only on a single-row job.
    pub faces: Vec<Face>,
    pub resolution: Option<Resolution>,
    pub model_name: Option<String>,
    pub keep_original_sound: Option<bool>,
    pub template_id: Option<String>,
    /// The first row's extra columns, in header order.
    pub extra: Vec<(String, String)>,
}

/// Values for the columns a row leaves blank (`--resolution`, `--model`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Defaults {
    pub resolution: Resolution,
    pub model_name: String,
}

impl Default for Defaults {
    /// The command-line defaults: `720p`, `akool-premium`.
    fn default() -> Defaults {
        Defaults {
            resolution: Resolution::P720,
            model_name: "akool-premium".to_string(),
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
            resolution: self.resolution.unwrap_or(defaults.resolution),
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
    /// Keep only the jobs of `shard`; the manifest's fingerprint then names the shard too, so
    /// a database is never taken as holding another shard's jobs.
    pub fn keep_shard(&mut self, shard: Shard) {
        self.jobs.retain(|job| shard.contains(job.id.as_str()));
        self.sha256 = format!("{}#{shard}", self.sha256);
    }

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
    #[error("manifest {path} is not UTF-8 text (invalid byte on line {line}), nor text in another encoding (it holds NUL bytes)", path = .path.display())]
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
    let (text, decoded) = decode(&path, bytes)?;
    let text: &str = &text;
    if let Some(offset) = text.bytes().position(|byte| byte == 0) {
        let line = line_of_offset(text.as_bytes(), offset);
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
        decoded,
    })
}

/// The file's text: as it is when it is UTF-8, otherwise decoded (see [`Decoded`]).
fn decode<'b>(
    path: &Path,
    bytes: &'b [u8],
) -> Result<(std::borrow::Cow<'b, str>, Option<Decoded>), ManifestError> {
    let error = match std::str::from_utf8(bytes) {
        Ok(text) => return Ok((text.into(), None)),
        Err(error) => error,
    };
    let line = line_of_offset(bytes, error.valid_up_to());
    let (body, utf16) = match encoding_rs::Encoding::for_bom(bytes) {
        Some((encoding, bom)) if encoding != encoding_rs::UTF_8 => (&bytes[bom..], Some(encoding)),
        // A UTF-8 byte-order mark on a file that is not UTF-8 after all: the mark goes.
        Some((_, bom)) => (&bytes[bom..], None),
        None => (bytes, None),
    };
    if let Some(encoding) = utf16 {
        let (text, _) = encoding.decode_without_bom_handling(body);
        let encoding = encoding.name();
        return Ok((text, Some(Decoded { encoding, line: 1 })));
    }
    if bytes.contains(&0) {
        return Err(ManifestError::NotUtf8 {
            path: path.to_path_buf(),
            line,
        });
    }
    let (text, _) = encoding_rs::WINDOWS_1252.decode_without_bom_handling(body);
    let encoding = encoding_rs::WINDOWS_1252.name();
    Ok((text, Some(Decoded { encoding, line })))
}

impl Manifest {
    /// Say once, as a warning, that the file was not UTF-8 and how it was read.
    pub fn warn_if_decoded(&self) {
        if let Some(decoded) = &self.decoded {
            tracing::warn!(
                manifest = %self.path.display(),
                encoding = decoded.encoding,
                line = decoded.line,
                "manifest {} is not UTF-8 (first on line {}): read as {}; check the accented text of that line in `export`, or save the sheet as \"CSV UTF-8\" to be sure",
                self.path.display(),
                decoded.line,
                decoded.encoding
            );
        }
    }
}
