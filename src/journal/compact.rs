//! Compaction: rewrite a journal to the facts still needed, atomically.
//!
//! Two passes over the file, holding only a few numbers per line and per job: the first
//! reads every line and finds, for each job, where its current row's facts start and where
//! its latest request starts; the second copies the lines to keep, byte for byte (their
//! checksums stay valid), into a new file that replaces the old one by rename.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::Path;

use super::fact::{self, Fact, Header, JOURNAL_VERSION};
use super::replay::{Line, PositionalReader, for_each_line};
use super::{JournalError, io_error, lock, parent_folder};
use crate::store::Store;

/// What a compaction did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactReport {
    pub lines_before: u64,
    pub lines_kept: u64,
    /// Damaged or unknown lines dropped.
    pub damaged_dropped: u64,
    /// Jobs whose facts were dropped because the database replaced their row.
    pub jobs_dropped: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// Bytes of facts kept (without the header).
    pub kept_bytes: u64,
}

/// What a line is, for the keep decision.
#[derive(Clone, Copy)]
enum Kind {
    /// Damaged, unknown, or a header (a new one is written).
    Drop,
    Ingest,
    Analysis(u32),
    /// A job's fact; `ambiguous` facts of the current row are kept even before its last intent.
    Job {
        job: u32,
        ambiguous: bool,
    },
}

/// Per job: where its current row starts, where its latest request starts, the row's
/// fingerprint.
struct Marks {
    id: String,
    row_start: u64,
    last_intent: u64,
    fingerprint: Option<String>,
}

/// Write the compacted journal next to `path`, rename it over `path`, and return it opened
/// for appending (and locked).
pub(super) fn rewrite(
    path: &Path,
    current: &File,
    end: u64,
    store: &Store,
) -> Result<(File, CompactReport), JournalError> {
    let io = |error: std::io::Error| io_error(path, error);
    let mut kinds: Vec<(Kind, u32)> = Vec::new();
    let mut jobs: Vec<Marks> = Vec::new();
    let mut job_index: HashMap<String, u32> = HashMap::new();
    let mut video_index: HashMap<String, u32> = HashMap::new();
    let mut last_analysis: Vec<u64> = Vec::new();
    let mut last_ingest = None;
    let mut report = CompactReport::default();
    for_each_line(
        PositionalReader {
            file: current,
            offset: 0,
            end,
        },
        |line: Line<'_>| {
            report.lines_before += 1;
            report.bytes_before += line.bytes.len() as u64 + u64::from(line.terminated);
            let kind = match fact::decode_line(line.bytes) {
                Err(_) => {
                    report.damaged_dropped += 1;
                    Kind::Drop
                }
                Ok(Fact::Header(_)) => Kind::Drop,
                Ok(Fact::Ingest(_)) => {
                    last_ingest = Some(line.index);
                    Kind::Ingest
                }
                Ok(Fact::Analysis(analysis)) => {
                    let next = video_index.len() as u32;
                    let video = *video_index
                        .entry(analysis.video_url.to_string())
                        .or_insert(next);
                    if video as usize == last_analysis.len() {
                        last_analysis.push(line.index);
                    } else {
                        last_analysis[video as usize] = line.index;
                    }
                    Kind::Analysis(video)
                }
                Ok(fact) => {
                    let id = fact.job().expect("the other facts name a job");
                    let job = match job_index.get(id) {
                        Some(job) => *job,
                        None => {
                            let job = jobs.len() as u32;
                            job_index.insert(id.to_string(), job);
                            jobs.push(Marks {
                                id: id.to_string(),
                                row_start: line.index,
                                last_intent: line.index,
                                fingerprint: None,
                            });
                            job
                        }
                    };
                    let marks = &mut jobs[job as usize];
                    let row = match &fact {
                        Fact::Intent(intent) => Some(&intent.fingerprint),
                        Fact::Task(task) => Some(&task.fingerprint),
                        _ => None,
                    };
                    if let Some(fingerprint) = row {
                        if marks.fingerprint.as_ref() != Some(fingerprint) {
                            marks.row_start = line.index;
                            marks.fingerprint = Some(fingerprint.clone());
                        }
                    }
                    if matches!(fact, Fact::Intent(_)) {
                        marks.last_intent = line.index;
                    }
                    Kind::Job {
                        job,
                        ambiguous: matches!(fact, Fact::Ambiguous(_)),
                    }
                }
            };
            kinds.push((kind, line.bytes.len() as u32));
        },
    )
    .map_err(io)?;

    // Jobs the database replaced with a row it never submitted: their facts describe a
    // request nobody will resume.
    let mut dropped_jobs = vec![false; jobs.len()];
    for (index, marks) in jobs.iter().enumerate() {
        let Some(fingerprint) = &marks.fingerprint else {
            continue;
        };
        if let Some(job) = store.job(&marks.id)? {
            let submitted =
                job.state.may_have_submitted() || job.task_id.is_some() || job.possible_duplicate;
            if &job.fingerprint != fingerprint && !submitted {
                dropped_jobs[index] = true;
                report.jobs_dropped += 1;
            }
        }
    }
    let keep = |index: u64, kind: Kind| match kind {
        Kind::Drop => false,
        Kind::Ingest => Some(index) == last_ingest,
        Kind::Analysis(video) => last_analysis[video as usize] == index,
        Kind::Job { job, ambiguous } => {
            let marks = &jobs[job as usize];
            !dropped_jobs[job as usize]
                && index >= marks.row_start
                && (ambiguous || index >= marks.last_intent)
        }
    };
    report.kept_bytes = kinds
        .iter()
        .enumerate()
        .filter(|(index, (kind, _))| keep(*index as u64, *kind))
        .map(|(_, (_, len))| u64::from(*len) + 1)
        .sum();

    let folder = parent_folder(path);
    let temporary = folder.join(format!(
        ".{}.compact-{}",
        path.file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&temporary)
        .map_err(|error| io_error(&temporary, error))?;
    let written = (|| -> Result<u64, JournalError> {
        lock(&file, &temporary)?;
        file.set_len(0).map_err(io)?;
        let mut out = BufWriter::with_capacity(1 << 16, &file);
        let mut header = Vec::new();
        fact::encode_line(
            &Fact::Header(Header {
                v: JOURNAL_VERSION,
                ms: crate::now_ms(),
                base: report.kept_bytes,
            }),
            &mut header,
        );
        out.write_all(&header).map_err(io)?;
        let mut write_error = None;
        for_each_line(
            PositionalReader {
                file: current,
                offset: 0,
                end,
            },
            |line: Line<'_>| {
                let (kind, _) = kinds[line.index as usize];
                if write_error.is_none() && keep(line.index, kind) {
                    report.lines_kept += 1;
                    if let Err(error) = out
                        .write_all(line.bytes)
                        .and_then(|()| out.write_all(b"\n"))
                    {
                        write_error = Some(error);
                    }
                }
            },
        )
        .map_err(io)?;
        if let Some(error) = write_error {
            return Err(io(error));
        }
        out.flush().map_err(io)?;
        drop(out);
        file.sync_all().map_err(io)?;
        Ok(header.len() as u64 + report.kept_bytes)
    })();
    let written = match written {
        Ok(written) => written,
        Err(error) => {
            // Our own unfinished file; the journal itself was not touched.
            let _ = std::fs::remove_file(&temporary);
            return Err(error);
        }
    };
    std::fs::rename(&temporary, path).map_err(io)?;
    File::open(&folder)
        .and_then(|folder| folder.sync_all())
        .map_err(io)?;
    report.bytes_after = written;
    Ok((file, report))
}
