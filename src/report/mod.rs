//! `report`: one self-contained HTML page that shows a batch to a person.
//!
//! The page is rendered from [`ReportData`], plain owned data built from the store's records by
//! [`ReportData::from_jobs`]; [`render`] turns it into HTML with no I/O. What the page holds:
//! counts per state, a timeline of where the time went, every `needs_mapping` job's subjects
//! with the manifest lines to paste, a player per finished render, and every job that needs a
//! person with its reason and the command that fixes it. Long batches are capped per section
//! ([`Limits`]) with a pointer to `export`, so 10,000 jobs stay a page a browser opens at once.
//!
//! Safety is by construction: the template (maud) escapes every spliced value, links and media
//! sources are only ever a `links::SafeUrl` (http(s) or a percent-encoded relative path), the
//! page has no script and a Content-Security-Policy that forbids one. This module reads nothing
//! and writes nothing: the `report` command opens the store, builds the data and writes the file.
//!
//! - `data.rs` — the data model and the conversion from jobs (paths made relative here);
//! - `page.rs` — the page template, section by section; `style.css` its stylesheet;
//! - `timeline.rs` — the timeline SVG and the per-stage durations;
//! - `links.rs` — which strings may become a link or a source;
//! - `format.rs` — durations, sizes, shell words and CSV lines as text.

mod data;
mod format;
mod links;
mod page;
mod timeline;

pub use data::{
    Limits, OutputLocation, ReportContext, ReportData, ReportFace, ReportJob, ReportSubject,
    ReportTimes,
};
pub use links::SafeUrl;
pub use timeline::{Span, Stage, spans};

/// The report page for `data`: a complete HTML document.
pub fn render(data: &ReportData) -> String {
    page::page(data).into_string()
}
