//! `report [--out FILE]`: the batch as one self-contained HTML page (see `crate::report` for
//! the page itself), from the database or, while a run holds it, from the running process.

use std::io::Write;
use std::path::Path;

use crate::exit::{Exit, Fatal};
use crate::report::{ReportContext, ReportData, render};
use crate::view::{Records, now_ms, write_atomically};

/// Write the report of the database at `db` to `out`.
pub fn report(db: &Path, out: &Path) -> Result<Exit, Fatal> {
    let records = Records::load(db)?;
    let working_dir = std::env::current_dir()
        .map_err(|error| Fatal::new("cannot tell the current folder").cause(error))?;
    let context = ReportContext {
        generated_ms: now_ms(),
        database: db.to_path_buf(),
        report_file: out.to_path_buf(),
        working_dir,
    };
    let html = render(&ReportData::from_jobs(
        &records.jobs,
        &records.analyses,
        &context,
    ));
    write_atomically(out, |file| file.write_all(html.as_bytes())).map_err(|error| {
        Fatal::new(format!("cannot write the report to {}", out.display()))
            .cause(error)
            .hint("check that the folder exists and can be written")
    })?;
    eprintln!(
        "report of {} jobs written to {}",
        records.jobs.len(),
        out.display()
    );
    Ok(Exit::Success)
}
