//! The report page: one maud template over `ReportData`, section by section.
//!
//! maud escapes every spliced value, so text from the manifest, the API or a file name can only
//! ever be text; links and media sources go through `links::SafeUrl`. The only markup not
//! written by the template is the constant stylesheet. No script: the page works the same in
//! any browser, offline, and its Content-Security-Policy forbids scripts outright as a second
//! line of defence.

use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::data::{OutputLocation, ReportData, ReportFace, ReportJob};
use super::format::{self, bytes, count, duration, shell_word, timestamp};
use super::links::SafeUrl;
use super::timeline;
use crate::job::JobState;

const STYLE: &str = include_str!("style.css");

/// No script, no frames, no plugins; styles only inline; images and videos from the web or
/// local files (the report's own folder, or wherever the outputs are).
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'; \
     img-src http: https: file:; media-src http: https: file:; base-uri 'none'; form-action 'none'";

/// A group of jobs needing attention is shown open up to this many jobs, collapsed beyond.
const OPEN_UP_TO: usize = 20;

/// The states that need a person, in the order the page lists them.
const ATTENTION: [JobState; 4] = [
    JobState::Failed,
    JobState::Invalid,
    JobState::Expired,
    JobState::Held,
];

/// The whole page.
pub fn page(data: &ReportData) -> Markup {
    let total = data.jobs.len();
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta http-equiv="Content-Security-Policy" content=(CONTENT_SECURITY_POLICY);
                meta name="referrer" content="no-referrer";
                title { "Batch report · " (count(total)) " jobs · headswap-batch" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header.top {
                    div.wrap {
                        h1 { span.tool { "headswap-batch" } " · batch report" }
                        p.meta {
                            (count(total)) " jobs · generated " (timestamp(data.generated_ms))
                            " · database " code { (data.database) }
                            @if let Some(folder) = &data.output_folder {
                                " · files in " code { (folder) "/" }
                            }
                        }
                    }
                }
                main.wrap {
                    (overview(data))
                    (attention(data))
                    (renders(data))
                    section.card #timeline {
                        h2 { "Timeline" span.count { "where the time went" } }
                        (timeline::figure(data))
                    }
                    (every_job(data))
                }
                footer.wrap {
                    "Made by " code { "headswap-batch report" } ". "
                    code { (base_command(data)) " export" } " lists every job as CSV, "
                    code { (base_command(data)) " status" } " shows the batch in the terminal."
                }
            }
        }
    }
}

/// Counts per state as tiles, and one bar of the whole batch.
fn overview(data: &ReportData) -> Markup {
    let total = data.jobs.len();
    let present: Vec<(JobState, usize)> = data
        .counts
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(state, n)| (*state, *n))
        .collect();
    let in_state = |wanted: fn(JobState) -> bool| -> usize {
        present
            .iter()
            .filter(|(state, _)| wanted(*state))
            .map(|(_, n)| n)
            .sum()
    };
    let done = in_state(|state| state == JobState::Done);
    let at_work = in_state(|state| !state.is_final());
    let attention = in_state(|state| state.is_final() && state != JobState::Done);
    html! {
        section.card #overview {
            h2 {
                "Overview"
                span.count {
                    (count(done)) " of " (count(total)) " done"
                    @if at_work > 0 { " · " (count(at_work)) " at work" }
                    @if attention > 0 { " · " (count(attention)) " need attention" }
                }
            }
            div.tiles {
                div.tile.total { span.num { (count(total)) } span.label { "jobs" } }
                @for (state, n) in &present {
                    div class={ "tile s-" (state.as_str()) } {
                        span.num { (count(*n)) }
                        span.label { (state_label(*state)) }
                    }
                }
            }
            @if total > 0 {
                div.bar role="img" aria-label="Jobs per state" {
                    @for (state, n) in &present {
                        span class={ "s-" (state.as_str()) } style={ "flex-grow:" (n) }
                            title={ (state_label(*state)) ": " (count(*n)) } {}
                    }
                }
            }
        }
    }
}

/// Every job that needs a person: `needs_mapping` with its previews and paste lines, then the
/// failed, invalid, expired and held jobs with their reasons and the command that fixes them.
fn attention(data: &ReportData) -> Markup {
    let waiting: usize = ATTENTION
        .iter()
        .chain(&[JobState::NeedsMapping])
        .map(|state| data.counts.get(state).copied().unwrap_or(0))
        .sum();
    if waiting == 0 {
        return html! {};
    }
    html! {
        section.card #attention {
            h2 { "Needs attention" span.count { (count(waiting)) " jobs" } }
            (mapping_group(data))
            @for state in ATTENTION {
                (attention_group(data, state))
            }
        }
    }
}

fn mapping_group(data: &ReportData) -> Markup {
    let jobs: Vec<&ReportJob> = jobs_in(data, JobState::NeedsMapping).collect();
    if jobs.is_empty() {
        return html! {};
    }
    let shown = jobs.len().min(data.limits.mapping_cards);
    html! {
        details.group #needs-mapping open[jobs.len() <= OPEN_UP_TO / 2] {
            summary {
                span.badge.s-needs_mapping { (state_label(JobState::NeedsMapping)) " · " (count(jobs.len())) }
                span.fix { "Several people were detected: choose who gets the face, fill "
                    code { "obj_id" } " in the manifest, then run it again." }
            }
            @for job in &jobs[..shown] {
                (mapping_card(job))
            }
            (more(jobs.len() - shown, "needs_mapping jobs", data))
        }
    }
}

/// One `needs_mapping` job: the detected subjects side by side, and the manifest lines that
/// would give the face to each of them.
fn mapping_card(job: &ReportJob) -> Markup {
    let face = job
        .faces
        .iter()
        .find(|face| face.obj_id.is_none())
        .or(job.faces.first());
    let header = paste_header(job);
    html! {
        article.mapping {
            h3 { code { (job.id) } span.muted { "line " (job.line) } }
            p.source { "video " (link_or_text(&job.video_url)) }
            (chips(job))
            div.subjects {
                @for subject in &job.subjects {
                    figure.subject {
                        @match SafeUrl::web(&subject.img_url) {
                            Some(url) => { img src=(url) alt={ "subject " (subject.obj_id) } loading="lazy"; }
                            None => { div.noimg { "no preview: " (subject.img_url) } }
                        }
                        figcaption { "obj_id " b { (subject.obj_id) } }
                    }
                }
            }
            @if let Some(face) = face {
                p.paste-help {
                    "Fill obj_id in line " (job.line) ": replace it with the line of each subject "
                    "who should get " (link_or_text(&face.face_url)) " (keep one line per person):"
                }
                pre.paste {
                    span.hd { (header) } "\n"
                    @for subject in &job.subjects {
                        (paste_line(job, face, subject.obj_id)) "\n"
                    }
                }
            }
        }
    }
}

/// The columns of the paste lines: what a manifest row of this job needs.
fn paste_header(job: &ReportJob) -> String {
    let fixed = ["id", "video_url", "face_url", "obj_id"];
    format::csv_line(
        fixed
            .into_iter()
            .chain(job.extra.iter().map(|(name, _)| name.as_str())),
    )
}

fn paste_line(job: &ReportJob, face: &ReportFace, obj_id: u32) -> String {
    let obj_id = obj_id.to_string();
    let fixed = [
        job.id.as_str(),
        job.video_url.as_str(),
        face.face_url.as_str(),
        obj_id.as_str(),
    ];
    format::csv_line(
        fixed
            .into_iter()
            .chain(job.extra.iter().map(|(_, value)| value.as_str())),
    )
}

/// A table of the jobs in one attention state, with the command that fixes them.
fn attention_group(data: &ReportData, state: JobState) -> Markup {
    let jobs: Vec<&ReportJob> = jobs_in(data, state).collect();
    if jobs.is_empty() {
        return html! {};
    }
    let shown = jobs.len().min(data.limits.table_rows);
    let base = base_command(data);
    html! {
        details.group #(state.as_str()) open[jobs.len() <= OPEN_UP_TO] {
            summary {
                span class={ "badge s-" (state.as_str()) } { (state_label(state)) " · " (count(jobs.len())) }
                span.fix {
                    @match state {
                        JobState::Failed => { "Fix the cause, then " code { (base) " retry --failed" } " and run again." }
                        JobState::Invalid => { "Fix each line in the manifest, then run it again." }
                        JobState::Expired => { code { (base) " retry --expired" } " asks for fresh download links; then run again." }
                        _ => { "A create may have reached the service: check it did not render, then "
                               code { (base) " retry --ids …" } " and run again." }
                    }
                }
            }
            div.scroll {
                table {
                    thead { tr {
                        th { "id" } th.num { "line" } th { "reason" }
                        @for column in &data.extra_columns { th { (column) } }
                        th { "fix" }
                    } }
                    tbody {
                        @for job in &jobs[..shown] {
                            tr {
                                td.id { (job.id) }
                                td.num { (job.line) }
                                td.reason {
                                    @match (&job.error, job.state) {
                                        (Some(error), _) => { (error) }
                                        (None, JobState::Held) => { "the create's outcome is unknown: the run stopped while sending it" }
                                        (None, _) => { "no reason recorded" }
                                    }
                                    @if let Some(code) = job.error_code { span.muted { " (code " (code) ")" } }
                                    @if job.possible_duplicate { " " span.flag { "possible duplicate" } }
                                    @if job.row_changed { " " (row_changed(data)) }
                                }
                                (extra_cells(data, job))
                                td { (fix(data, job)) }
                            }
                        }
                    }
                }
            }
            (more(jobs.len() - shown, &format!("{} jobs", state.as_str()), data))
        }
    }
}

/// What fixes one job, as a sentence or a command.
fn fix(data: &ReportData, job: &ReportJob) -> Markup {
    let base = base_command(data);
    let ids = format!("{base} retry --ids {}", shell_word(&job.id));
    html! {
        @match job.state {
            JobState::Invalid => { "fix line " (job.line) ": " (job.error.as_deref().unwrap_or("see the reason")) }
            JobState::NeedsMapping => { "fill obj_id in line " (job.line) }
            JobState::Expired => { code.cmd { (base) " retry --expired" } }
            JobState::Failed if job.render_failed => { code.cmd { (ids) } " (renders again)" }
            _ => { code.cmd { (ids) } }
        }
    }
}

/// A player for each finished render, up to the limit.
fn renders(data: &ReportData) -> Markup {
    let done: Vec<&ReportJob> = jobs_in(data, JobState::Done).collect();
    let shown = done.len().min(data.limits.players);
    html! {
        section.card #renders {
            h2 { "Finished renders" span.count { (count(done.len())) } }
            @if done.is_empty() {
                p.muted { "No render has finished yet." }
            }
            div.renders {
                @for job in &done[..shown] {
                    article.render {
                        (player(job))
                        div.info {
                            div.title {
                                b { (job.id) }
                                @if let Some(size) = job.bytes { span.size { (bytes(size)) } }
                            }
                            @if let (Some(start), Some(end)) = (job.times.submitted_ms, job.times.rendered_ms) {
                                p.took { "rendered in " (duration(end.saturating_sub(start))) }
                            }
                            @if job.possible_duplicate { span.flag { "possible duplicate" } }
                            @if job.row_changed { (row_changed(data)) }
                            (chips(job))
                        }
                    }
                }
            }
            @if done.len() > shown {
                p.more {
                    (count(done.len() - shown)) " more finished renders are not shown here"
                    @if let Some(folder) = &data.output_folder { " (they are in " code { (folder) "/" } ")" }
                    "; " code { (base_command(data)) " export" } " lists every file."
                }
            }
        }
    }
}

/// A `<video>` for a finished job: its file relative to the report's folder, or its URL.
fn player(job: &ReportJob) -> Markup {
    let source = match &job.output {
        Some(OutputLocation::File(path)) => SafeUrl::relative_path(path),
        Some(OutputLocation::Url(url)) => SafeUrl::web(url),
        None => None,
    };
    html! {
        @match source {
            Some(url) => { video preload="metadata" controls src=(url) title=(job.id) {} }
            None => {
                div.novideo {
                    @match &job.output {
                        Some(OutputLocation::File(path)) => { "file " (path) }
                        Some(OutputLocation::Url(url)) => { "stored at " (url) }
                        None => { "no file recorded" }
                    }
                }
            }
        }
    }
}

/// Every job in one table (collapsed), up to the limit.
fn every_job(data: &ReportData) -> Markup {
    let shown = data.jobs.len().min(data.limits.table_rows);
    html! {
        details.card #jobs {
            summary { "Every job" span.count { (count(data.jobs.len())) } }
            div.scroll {
                table {
                    thead { tr {
                        th { "id" } th { "state" } th.num { "line" }
                        @for column in &data.extra_columns { th { (column) } }
                        th { "output or reason" } th { "remote ids" }
                    } }
                    tbody {
                        @for job in &data.jobs[..shown] {
                            tr {
                                td.id { (job.id) }
                                td { span class={ "badge s-" (job.state.as_str()) } { (state_label(job.state)) } }
                                td.num { (job.line) }
                                (extra_cells(data, job))
                                td.reason {
                                    @match (&job.output, &job.error) {
                                        (Some(OutputLocation::File(path)), _) => {
                                            @match SafeUrl::relative_path(path) {
                                                Some(url) => { a href=(url) { (path) } }
                                                None => { (path) }
                                            }
                                        }
                                        (Some(OutputLocation::Url(url)), _) => { (link_or_text(url)) }
                                        (None, Some(error)) => { (error) }
                                        (None, None) => { span.muted { "—" } }
                                    }
                                }
                                td.ids {
                                    @if let Some(id) = &job.analysis_id { span { "analysis " code { (id) } } }
                                    @if let Some(id) = &job.task_id { span { "task " code { (id) } } }
                                }
                            }
                        }
                    }
                }
            }
            (more(data.jobs.len() - shown, "jobs", data))
        }
    }
}

/// The `row_changed` flag and what to do about it.
fn row_changed(data: &ReportData) -> Markup {
    html! {
        span.flag { "row changed" }
        span.muted {
            " the manifest row was edited after this job was submitted; this is the render of the row as it was. "
            code { (base_command(data)) " run MANIFEST --replace-changed" }
            " renders the edited row (paid again)."
        }
    }
}

/// The manifest's extra columns of a job, as chips.
fn chips(job: &ReportJob) -> Markup {
    html! {
        @if !job.extra.is_empty() {
            ul.chips {
                @for (name, value) in &job.extra {
                    @if !value.is_empty() { li { (name) ": " b { (value) } } }
                }
            }
        }
    }
}

/// One cell per extra column of the batch, empty when the job has no such column.
fn extra_cells(data: &ReportData, job: &ReportJob) -> Markup {
    html! {
        @for column in &data.extra_columns {
            td.extra { (job.extra.iter().find(|(name, _)| name == column).map_or("", |(_, value)| value.as_str())) }
        }
    }
}

/// "N more …" and how to see them.
fn more(hidden: usize, what: &str, data: &ReportData) -> Markup {
    html! {
        @if hidden > 0 {
            p.more {
                "… and " (count(hidden)) " more " (what) " not shown; "
                code { (base_command(data)) " export" } " lists every job."
            }
        }
    }
}

/// A link when the URL is http(s), otherwise the text itself.
fn link_or_text(url: &str) -> Markup {
    html! {
        @match SafeUrl::web(url) {
            Some(safe) => { a href=(safe) rel="noreferrer" { (url) } }
            None => { code { (url) } }
        }
    }
}

fn jobs_in(data: &ReportData, state: JobState) -> impl Iterator<Item = &ReportJob> {
    data.jobs.iter().filter(move |job| job.state == state)
}

/// `headswap-batch`, with `--db` when the database is not the default one.
fn base_command(data: &ReportData) -> String {
    if data.database == "headswap.db" {
        "headswap-batch".to_string()
    } else {
        format!("headswap-batch --db {}", shell_word(&data.database))
    }
}

fn state_label(state: JobState) -> &'static str {
    match state {
        JobState::NeedsMapping => "needs mapping",
        other => other.as_str(),
    }
}
