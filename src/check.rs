//! `headswap-batch check MANIFEST [--json] [--preflight]`: validate a manifest without
//! touching the database; with `--preflight`, also check every video and face URL over the
//! network (no API call, nothing bought), and list the rows a definitive check dooms.
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
use crate::manifest::{self, Manifest, Shard};
use crate::preflight::{self, Checker, ManifestPreflight, PreflightConfig};

pub fn run(path: &Path, json: bool, preflight: bool, shards: Option<u32>) -> Result<Exit, Fatal> {
    let manifest = manifest::parse_file(path)?;
    manifest.warn_if_decoded();
    let checked = if preflight {
        Some(run_preflight(&manifest)?)
    } else {
        None
    };
    let doomed = checked
        .as_ref()
        .is_some_and(|checked| !checked.invalid.is_empty());
    let exit = if manifest.invalid().next().is_some() || doomed {
        Exit::Incomplete
    } else {
        Exit::Success
    };
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let written = match (&checked, json) {
        (None, true) => write_json(&mut out, &manifest),
        (None, false) => write_text(&mut out, &manifest),
        (Some(checked), true) => write_preflight_json(&mut out, &manifest, checked),
        (Some(checked), false) => {
            write_text(&mut out, &manifest).and_then(|()| write_preflight_text(&mut out, checked))
        }
    };
    let written = match (written, shards) {
        (Ok(()), Some(count)) if !json => write_shards(&mut out, &manifest, count),
        (written, _) => written,
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

/// Check every URL of the manifest's valid jobs.
fn run_preflight(manifest: &Manifest) -> Result<ManifestPreflight, Fatal> {
    let runtime = tokio::runtime::Runtime::new()
        .map_err(|error| Fatal::new("cannot start the async runtime").cause(error))?;
    runtime.block_on(async {
        let checker = Checker::new(PreflightConfig::default())
            .map_err(|error| Fatal::new("cannot build the HTTP client").cause(error))?;
        Ok(preflight::check_manifest(&checker, manifest).await)
    })
}

/// `--preflight --json`: the `check` document, with the rows preflight dooms among `invalid`
/// (in line order), and `warnings` for the URLs that could not be checked.
fn write_preflight_json(
    out: &mut impl Write,
    manifest: &Manifest,
    checked: &ManifestPreflight,
) -> io::Result<()> {
    let mut report = CheckReport::new(manifest);
    let doomed: std::collections::HashSet<&str> =
        checked.invalid.iter().map(|job| job.id.as_str()).collect();
    report.jobs -= doomed.len();
    report
        .invalid
        .extend(checked.invalid.iter().map(|job| InvalidRow {
            line: job.line,
            id: &job.id,
            reason: &job.reason,
        }));
    report.invalid.sort_by_key(|row| row.line);
    let document = serde_json::json!({
        "jobs": report.jobs,
        "videos": report.videos,
        "invalid": report.invalid,
        "warnings": checked.warnings,
        "spent": checked.spent,
    });
    serde_json::to_writer(&mut *out, &document)?;
    writeln!(out)
}

/// `--shards N`: how many valid jobs each shard of N gets (`run --shard K/N`).
fn write_shards(out: &mut impl Write, manifest: &Manifest, count: u32) -> io::Result<()> {
    let mut sizes = vec![0usize; count as usize];
    for job in manifest.jobs.iter().filter(|job| job.row.is_ok()) {
        sizes[Shard::of(job.id.as_str(), count) as usize - 1] += 1;
    }
    for (index, size) in sizes.iter().enumerate() {
        writeln!(out, "shard {}/{count}: {size} jobs", index + 1)?;
    }
    Ok(())
}

fn write_preflight_text(out: &mut impl Write, checked: &ManifestPreflight) -> io::Result<()> {
    writeln!(
        out,
        "preflight: {} video(s) and {} face(s) checked with {} request(s); {} job(s) cannot succeed",
        checked.videos,
        checked.faces,
        checked.spent.requests,
        checked.invalid.len()
    )?;
    for job in &checked.invalid {
        writeln!(out, "line {} (id {}): {}", job.line, job.id, job.reason)?;
    }
    for warning in &checked.warnings {
        writeln!(
            out,
            "warning: {} {} could not be checked ({}); its {} job(s) proceed",
            warning.kind.noun(),
            warning.url,
            warning.warning,
            warning.jobs
        )?;
    }
    Ok(())
}

fn write_json(out: &mut impl Write, manifest: &Manifest) -> io::Result<()> {
    serde_json::to_writer(&mut *out, &CheckReport::new(manifest))?;
    writeln!(out)
}

/// Valid jobs that ask for the very same render (the same video, faces and options with the
/// default resolution and model), as groups of (line, id) in line order.
fn same_renders(manifest: &Manifest) -> Vec<Vec<(u64, &str)>> {
    let defaults = manifest::Defaults::default();
    let mut groups: std::collections::BTreeMap<String, Vec<(u64, &str)>> = Default::default();
    for job in &manifest.jobs {
        if let Ok(raw) = &job.row {
            let fingerprint = raw.to_spec(&defaults).fingerprint();
            groups
                .entry(fingerprint)
                .or_default()
                .push((job.line, job.id.as_str()));
        }
    }
    let mut groups: Vec<Vec<(u64, &str)>> = groups
        .into_values()
        .filter(|group| group.len() > 1)
        .collect();
    groups.sort();
    groups
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
    for group in same_renders(manifest) {
        let listed: Vec<String> = group
            .iter()
            .map(|(line, id)| format!("line {line} ({id})"))
            .collect();
        writeln!(
            out,
            "warning: {} ask for the same render (video, faces and options); run buys it once and writes it under each id (--no-reuse-renders buys each)",
            listed.join(", ")
        )?;
    }
    Ok(())
}
