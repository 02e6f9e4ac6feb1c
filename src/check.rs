//! `headswap-batch check MANIFEST [--json]`: validate a manifest without touching the
//! database or the network.
//!
//! Text output: a summary line (`N jobs on M distinct videos, K invalid`), then one line per
//! invalid job: `line N (id X): reason`. `--json` prints one line:
//! `{"jobs": <valid jobs>, "videos": <distinct videos among them>, "invalid": [{"line": N,
//! "id": "...", "reason": "..."}]}`. Exit 0 when every row is valid, 3 when some are invalid,
//! 1 when the file cannot be used at all.

use std::io::{self, Write};
use std::path::Path;

use serde::Serialize;

use crate::exit::{Exit, Fatal};
use crate::manifest::{self, Manifest};

pub fn run(path: &Path, json: bool) -> Result<Exit, Fatal> {
    let manifest = manifest::parse_file(path)?;
    let exit = if manifest.invalid().next().is_some() {
        Exit::Incomplete
    } else {
        Exit::Success
    };
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let written = if json {
        write_json(&mut out, &manifest)
    } else {
        write_text(&mut out, &manifest)
    };
    match written.and_then(|()| out.flush()) {
        Ok(()) => Ok(exit),
        // The reader went away (`check ... | head`): nothing left to tell anyone.
        Err(error) if error.kind() == io::ErrorKind::BrokenPipe => Ok(exit),
        Err(error) => Err(Fatal::new("cannot write to stdout").cause(error)),
    }
}

/// The `--json` document.
#[derive(Debug, Serialize)]
pub struct CheckReport<'a> {
    pub jobs: usize,
    pub videos: usize,
    pub invalid: Vec<InvalidRow<'a>>,
}

#[derive(Debug, Serialize)]
pub struct InvalidRow<'a> {
    pub line: u64,
    pub id: &'a str,
    pub reason: &'a str,
}

impl<'a> CheckReport<'a> {
    pub fn new(manifest: &'a Manifest) -> CheckReport<'a> {
        CheckReport {
            jobs: manifest.valid_jobs(),
            videos: manifest.distinct_videos(),
            invalid: manifest
                .invalid()
                .map(|job| InvalidRow {
                    line: job.line,
                    id: job.id.as_str(),
                    reason: job.reason().unwrap_or_default(),
                })
                .collect(),
        }
    }
}

fn write_json(out: &mut impl Write, manifest: &Manifest) -> io::Result<()> {
    serde_json::to_writer(&mut *out, &CheckReport::new(manifest))?;
    writeln!(out)
}

fn write_text(out: &mut impl Write, manifest: &Manifest) -> io::Result<()> {
    let invalid = manifest.invalid().count();
    let plural = |count: usize, word: &str| {
        if count == 1 {
            format!("{count} {word}")
        } else {
            format!("{count} {word}s")
        }
    };
    writeln!(
        out,
        "{}: {} on {}, {} invalid",
        manifest.path.display(),
        plural(manifest.valid_jobs(), "job"),
        plural(manifest.distinct_videos(), "distinct video"),
        invalid
    )?;
    for job in manifest.invalid() {
        writeln!(
            out,
            "line {} (id {}): {}",
            job.line,
            job.id,
            job.reason().unwrap_or_default()
        )?;
    }
    Ok(())
}
