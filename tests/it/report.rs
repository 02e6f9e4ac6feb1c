//! The HTML report: pages rendered from real jobs (a run against the simulator, or jobs driven
//! through the state machine) and opened in headless Chromium; the DOM it builds and the
//! picture it paints are checked, hostile text in every field stays text, and a 10,000-job
//! batch stays a small page.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use headswap_batch::akool::{Mapping, Subject};
use headswap_batch::job::{
    AnalysisRecord, AnalysisState, Event, Face, Job, JobError, JobSpec, JobState, Output,
};
use headswap_batch::report::{ReportContext, ReportData, render};
use headswap_batch::store::Store;

use crate::browser::{self, Dom, LoopbackServer, Picture};
use crate::support::{Batch, assert_exit, finish, simulator};

/// Every element the report may contain. Anything else in a DOM came from the data.
const ALLOWED_ELEMENTS: &[&str] = &[
    "html",
    "head",
    "meta",
    "title",
    "style",
    "body",
    "header",
    "main",
    "footer",
    "section",
    "article",
    "div",
    "span",
    "p",
    "h1",
    "h2",
    "h3",
    "code",
    "pre",
    "b",
    "a",
    "ul",
    "li",
    "figure",
    "figcaption",
    "img",
    "video",
    "table",
    "thead",
    "tbody",
    "tr",
    "th",
    "td",
    "details",
    "summary",
    "svg",
    "g",
    "line",
    "text",
    "rect",
    "circle",
    "path",
];

/// The batch of the acceptance test: finished jobs, a two-person video left in
/// `needs_mapping`, a failed render, and an extra column holding a script.
const ACCEPTANCE: &str = "\
id,video_url,face_url,obj_id,sku,campaign
hero-anna,http://v.example/hero.mp4,http://f.example/anna.jpg,,SKU-1,<script>alert(1)</script>
hero-ben,http://v.example/hero.mp4,http://f.example/ben.jpg,,SKU-2,spring
kitchen-duo,http://v.example/duo.mp4?subjects=2,http://f.example/chloe.jpg,,SKU-3,spring
broken,http://v.example/bad.mp4?fail=render,http://f.example/dev.jpg,,SKU-4,spring
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_batch_gives_a_page_that_names_every_job_plays_every_render_and_escapes_the_manifest()
 {
    let sim = simulator(|_| {}).await;
    let batch = Batch::new(ACCEPTANCE);
    let output = finish(batch.run_command(&sim.base_url(), &[])).await;
    assert_exit(&output, 3);

    // The page as the `report` command writes it.
    let report = batch.dir.path().join("report.html");
    let written = headswap_batch_in(batch.dir.path())
        .arg("--db")
        .arg(batch.db())
        .args(["report", "--out"])
        .arg(&report)
        .output()
        .unwrap();
    assert_exit(&written, 0);
    let html = std::fs::read_to_string(&report).unwrap();
    let (_, jobs) = report_from_store(&batch.db(), &report, batch.dir.path());
    assert!(
        !html.contains("<script>alert(1)"),
        "the manifest's script reached the page as markup"
    );
    let dom = browser::parse(
        &tokio::task::spawn_blocking({
            let report = report.clone();
            move || browser::dump_dom(&browser::file_url(&report))
        })
        .await
        .unwrap(),
    );

    assert_only_report_markup(&dom);
    for job in &jobs {
        assert!(
            dom.text.contains(job.id.as_str()),
            "{} is not named",
            job.id
        );
    }
    let state = |id: &str| jobs.iter().find(|job| job.id == id).unwrap();
    assert_eq!(state("kitchen-duo").state, JobState::NeedsMapping);
    assert_eq!(state("broken").state, JobState::Failed);

    // Both subjects of the two-person video, side by side with their obj_id.
    let duo = state("kitchen-duo");
    assert_eq!(duo.subjects.len(), 2);
    let images: HashSet<&str> = dom.named("img").filter_map(|img| img.attr("src")).collect();
    for subject in &duo.subjects {
        assert!(
            images.contains(subject.img_url.as_str()),
            "no preview {} in {images:?}",
            subject.img_url
        );
    }
    // The lines to paste, obj_id filled in, one per subject.
    for obj_id in 0..2 {
        let line = format!(
            "kitchen-duo,http://v.example/duo.mp4?subjects=2,http://f.example/chloe.jpg,{obj_id},SKU-3,spring"
        );
        assert!(dom.text.contains(&line), "no paste line {line}");
    }

    // A player per finished job, with a path relative to the report's folder.
    let done: Vec<&Job> = jobs
        .iter()
        .filter(|job| job.state == JobState::Done)
        .collect();
    assert_eq!(done.len(), 2, "{jobs:?}");
    let players: Vec<&str> = dom
        .named("video")
        .map(|video| video.attr("src").expect("a video has a source"))
        .collect();
    assert_eq!(players.len(), done.len(), "{players:?}");
    for job in &done {
        let expected = format!("out/{}.mp4", job.id);
        assert!(
            players.contains(&expected.as_str()),
            "{expected} in {players:?}"
        );
        assert!(batch.dir.path().join(&expected).is_file());
    }
    for video in dom.named("video") {
        assert_eq!(video.attr("preload"), Some("metadata"));
        assert!(video.attr("controls").is_some());
    }

    // The failure's reason and the command that fixes it.
    let reason = &state("broken").last_error.as_ref().unwrap().message;
    assert!(
        dom.text.contains(reason.as_str()),
        "reason {reason:?} not stated"
    );
    assert!(dom.text.contains("headswap-batch --db"));
    assert!(dom.text.contains("retry --failed"));

    // The extra column is shown, as text.
    assert!(dom.text.contains("<script>alert(1)</script>"));
    assert!(dom.text.contains("SKU-4"));
    sim.shutdown().await;
}

/// A one-second H.264 video of one frame (320×180): a person on a lime field under a blue
/// sky, 3 KB. Made with `ffmpeg -f lavfi -i color=s=320x180,format=rgb24,geq=...` and
/// `-c:v libx264 -profile:v baseline -movflags +faststart`.
const FRAME_MP4: &[u8] = include_bytes!("fixtures/frame.mp4");

/// A string that tries every way out of text and attributes.
const HOSTILE: &str = "\"'><script>alert(1)</script></video><img src=x onerror=alert(2)>&amp;";

#[test]
fn hostile_text_in_every_field_stays_text_in_a_browser() {
    let dir = tempfile::tempdir().unwrap();
    // The page is served over loopback HTTP with its folder, so what the browser fetched is
    // seen: the page's load event waits for every video's metadata.
    let server = LoopbackServer::start(Some(dir.path().to_path_buf()));
    let (jobs, analyses, files) = hostile_jobs(&server, dir.path());
    let report = dir.path().join("report.html");
    let context = ReportContext {
        generated_ms: T0 + 600_000,
        database: dir.path().join(format!("db{HOSTILE}")),
        report_file: report.clone(),
        working_dir: dir.path().to_path_buf(),
    };
    let data = ReportData::from_jobs(&jobs, &analyses, &context);
    std::fs::write(&report, render(&data)).unwrap();
    let dom = browser::parse(&browser::dump_dom(&server.url("/report.html")));

    assert_only_report_markup(&dom);
    // Every field's hostile text is on the page, literally.
    for job in &jobs {
        assert!(dom.text.contains(job.id.as_str()), "id {:?}", job.id);
    }
    for needle in [
        format!("sku{HOSTILE}"),
        format!("campaign{HOSTILE}"),
        format!("failed{HOSTILE}"),
        format!("bad row{HOSTILE}"),
        format!("an{HOSTILE}"),
        "javascript:alert(document.domain)".to_string(),
        "data:text/html,<script>alert(3)</script>".to_string(),
        "javascript://%0aalert(6)".to_string(),
        "data:image/svg+xml,<svg onload=alert(5)>".to_string(),
        format!("db{HOSTILE}"),
    ] {
        assert!(
            dom.text.contains(&needle),
            "{needle:?} is not shown as text"
        );
    }
    // Players only for the finished jobs whose output is a file or an http(s) URL: the file in
    // a folder with a hostile name, and the object URL with hostile text.
    let players: Vec<&str> = dom
        .named("video")
        .map(|video| video.attr("src").unwrap())
        .collect();
    assert_eq!(players.len(), files.len(), "{players:?}");
    let decoded = |path: &str| {
        percent_encoding::percent_decode_str(path)
            .decode_utf8_lossy()
            .into_owned()
    };
    let fetched: Vec<String> = server.requests().iter().map(|path| decoded(path)).collect();
    for file in &files {
        let relative = file.strip_prefix(dir.path()).unwrap().to_str().unwrap();
        assert!(
            fetched.iter().any(|path| path == &format!("/{relative}")),
            "the browser did not fetch {relative}: {fetched:?}"
        );
    }
    // The preview with hostile text in its URL was fetched (the page's Content-Security-Policy
    // lets images through); the data: one is text.
    assert!(
        fetched
            .iter()
            .any(|path| path.starts_with("/previews/hostile/0.svg")),
        "previews fetched: {fetched:?}"
    );
    // Nothing but the page, its files and the preview was asked for (and the browser's icon).
    assert!(
        fetched.iter().all(|path| path == "/report.html"
            || path == "/favicon.ico"
            || path.starts_with("/previews/hostile/0.svg")
            || files
                .iter()
                .any(|file| path
                    == &format!("/{}", file.strip_prefix(dir.path()).unwrap().display()))),
        "unexpected fetches: {fetched:?}"
    );
}

#[test]
fn the_realistic_report_paints_a_picture_with_its_previews() {
    let previews = LoopbackServer::start(None);
    let dir = tempfile::tempdir().unwrap();
    let (jobs, analyses) = realistic_jobs(&previews, dir.path());
    let report = dir.path().join("report.html");
    let context = ReportContext {
        generated_ms: T0 + 15 * 60_000,
        database: PathBuf::from("catalog.db"),
        report_file: report.clone(),
        working_dir: dir.path().to_path_buf(),
    };
    // The finished renders are real videos (whether a player has painted its first frame
    // when the screenshot is taken is up to the browser's timing, so it is not asserted).
    for job in jobs.iter().filter(|job| job.state == JobState::Done) {
        let path = PathBuf::from(&job.output.as_ref().unwrap().path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, FRAME_MP4).unwrap();
    }
    let data = ReportData::from_jobs(&jobs, &analyses, &context);
    for state in JobState::ALL {
        assert!(data.counts[&state] > 0, "no job in {state}");
    }
    std::fs::write(&report, render(&data)).unwrap();
    let png = dir.path().join("report.png");
    browser::screenshot(&browser::file_url(&report), &png, 1280, 2470);
    // For the README's picture: HEADSWAP_REPORT_SCREENSHOT=docs/report.png keeps this one.
    if let Some(keep) = std::env::var_os("HEADSWAP_REPORT_SCREENSHOT") {
        std::fs::copy(&png, &keep).unwrap();
    }

    let picture = Picture::read(&png);
    assert_eq!((picture.width, picture.height), (1280, 2470));
    assert!(
        picture.luma_spread() > 20.0,
        "a blank page: spread {}",
        picture.luma_spread()
    );
    assert!(
        picture.distinct_colours() > 200,
        "{} colours",
        picture.distinct_colours()
    );
    // The page's own colours were painted: the header, the done tile, the failed badge.
    for (what, rgb) in [
        ("the header", [0x10, 0x18, 0x28]),
        ("done green", [0x16, 0xa3, 0x4a]),
        ("failed red", [0xdc, 0x26, 0x26]),
        ("rendering blue", [0x3b, 0x82, 0xf6]),
    ] {
        assert!(
            picture.count_near(rgb, 6) > 40,
            "{what} is not on the screenshot"
        );
    }
    // The previews of the needs_mapping jobs were loaded for the screenshot.
    let fetched = previews.requests();
    assert!(
        fetched.iter().any(|path| path.starts_with("/previews/")),
        "previews fetched: {fetched:?}"
    );
}

#[test]
fn a_10000_job_report_stays_small_and_says_how_to_see_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let mut jobs = Vec::new();
    let states = [
        JobState::Done,
        JobState::Done,
        JobState::Done,
        JobState::Done,
        JobState::Failed,
        JobState::NeedsMapping,
        JobState::Invalid,
        JobState::Rendering,
    ];
    for index in 0..10_000u64 {
        let extra = vec![
            ("sku".to_string(), format!("SKU-{index:05}")),
            ("campaign".to_string(), "spring-2027 catalogue".to_string()),
        ];
        let id = format!("catalog-item-{index:05}");
        let state = states[index as usize % states.len()];
        jobs.push(drive(
            &id,
            index + 2,
            state,
            (T0, 5_000 + index * 300),
            extra,
            "http://127.0.0.1:9/previews",
            dir.path(),
        ));
    }
    let context = ReportContext {
        generated_ms: T0 + 8 * 3_600_000,
        database: PathBuf::from("headswap.db"),
        report_file: dir.path().join("report.html"),
        working_dir: dir.path().to_path_buf(),
    };
    let data = ReportData::from_jobs(&jobs, &[], &context);
    let html = render(&data);
    let size = html.len();
    eprintln!("a 10,000-job report is {size} bytes");
    assert!(size < 1_000_000, "a 10,000-job report is {size} bytes");

    let dom = browser::parse(&html);
    assert_only_report_markup(&dom);
    assert_eq!(dom.named("video").count(), data.limits.players);
    assert!(
        dom.text
            .contains("more finished renders are not shown here")
    );
    assert!(dom.text.contains("headswap-batch export"));
    // Invalid jobs never ran: one in eight.
    assert!(
        dom.text.contains("8,750 jobs ran"),
        "aggregated timeline lanes"
    );
    // The timeline is a fixed number of lanes, not a row per job.
    assert!(dom.named("rect").count() < 50);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig {
        cases: 48, rng_seed: proptest::test_runner::RngSeed::Fixed(15), ..Default::default()
    })]

    /// Whatever the text in the fields, the page has only the report's own elements, every
    /// link and source is http(s) or relative, and the text is shown as it is.
    #[test]
    fn generated_text_never_becomes_markup(
        id in ".{1,20}",
        url in "(javascript:|data:|http://h.example/|https://|/|)[^\\x00]{0,20}",
        extra in "[^\\x00]{0,30}",
        message in "[^\\x00]{0,30}",
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut jobs = Vec::new();
        for (index, state) in JobState::ALL.into_iter().enumerate() {
            let mut job = drive(&format!("{id}{index}"), index as u64 + 2, state, (T0, 5_000),
                vec![(extra.clone(), extra.clone())], &url, dir.path());
            job.spec.video_url = url.clone().into();
            if let Some(error) = job.last_error.as_mut() {
                error.message = message.clone();
            }
            if let Some(output) = job.output.as_mut() {
                output.path = format!("{url}{id}.mp4");
            }
            jobs.push(job);
        }
        let context = ReportContext {
            generated_ms: T0 + 60_000,
            database: PathBuf::from(&message),
            report_file: dir.path().join("report.html"),
            working_dir: dir.path().to_path_buf(),
        };
        let html = render(&ReportData::from_jobs(&jobs, &[], &context));
        let dom = browser::parse(&html);
        assert_only_report_markup(&dom);
        for job in &jobs {
            proptest::prop_assert!(dom.text.contains(job.id.as_str()));
        }
        proptest::prop_assert!(dom.text.contains(&extra));
    }
}

/// The DOM holds only the report's own elements: no script, no handler attribute, no link or
/// source that is not http(s) or a relative path.
#[track_caller]
fn assert_only_report_markup(dom: &Dom) {
    for element in &dom.elements {
        assert!(
            ALLOWED_ELEMENTS.contains(&element.name.as_str()),
            "an element the report does not write: <{}> {:?}",
            element.name,
            element.attrs
        );
        for (name, value) in &element.attrs {
            assert!(
                !name.starts_with("on"),
                "a handler attribute {name}={value:?}"
            );
            if matches!(name.as_str(), "href" | "src") {
                let lower = value.to_ascii_lowercase();
                let web = lower.starts_with("http://") || lower.starts_with("https://");
                let first_segment = value.split('/').next().unwrap_or("");
                let relative =
                    !value.is_empty() && !value.starts_with('/') && !first_segment.contains(':');
                assert!(web || relative, "a dangerous {name}={value:?}");
                assert!(!value.contains(['"', '<', '>', ' ']), "{name}={value:?}");
            }
        }
    }
    assert_eq!(dom.named("script").count(), 0);
}

/// The real binary, run in `dir`.
fn headswap_batch_in(dir: &Path) -> std::process::Command {
    let mut command = crate::support::binary();
    command.current_dir(dir);
    command
}

/// Report data from a database the real binary wrote, and the jobs it holds.
fn report_from_store(db: &Path, report: &Path, working_dir: &Path) -> (ReportData, Vec<Job>) {
    let store = Store::open_existing(db).expect("open the database");
    let jobs: Vec<Job> = store.jobs().collect::<Result<_, _>>().unwrap();
    let analyses: Vec<AnalysisRecord> = store.analyses().collect::<Result<_, _>>().unwrap();
    drop(store);
    let context = ReportContext {
        generated_ms: headswap_batch::now_ms(),
        database: db.to_path_buf(),
        report_file: report.to_path_buf(),
        working_dir: working_dir.to_path_buf(),
    };
    (ReportData::from_jobs(&jobs, &analyses, &context), jobs)
}

/// A fixed moment: 2027-03-01 09:00 UTC.
const T0: u64 = 1_803_891_600_000;

fn spec(video_url: &str, face_url: &str, extra: Vec<(String, String)>) -> JobSpec {
    JobSpec {
        video_url: video_url.into(),
        faces: vec![Face {
            obj_id: None,
            face_url: face_url.to_string(),
        }],
        resolution: headswap_batch::akool::Resolution::P720,
        model_name: "akool-premium".into(),
        keep_original_sound: true,
        template_id: None,
        extra,
    }
}

/// A job driven through the state machine to `state`: ingested at `start`, its video sent for
/// analysis `wait` ms later, then analysis 40 s, queue 20 s, render about 3 min, download 5 s. A finished job's output is
/// `<out_dir>/output/<id>.mp4` (not written); `preview_base` serves its subjects' previews.
fn drive(
    id: &str,
    line: u64,
    state: JobState,
    (start, wait): (u64, u64),
    extra: Vec<(String, String)>,
    preview_base: &str,
    out_dir: &Path,
) -> Job {
    let video = format!("https://cdn.example.com/videos/{id}.mp4");
    let face = format!("https://cdn.example.com/faces/{id}.jpg");
    if state == JobState::Invalid {
        let reason = "face_url must be an http(s) URL, not \"ftp://old-server/face.jpg\"";
        return Job::invalid(
            id.into(),
            line,
            spec(&video, &face, extra),
            reason.into(),
            start,
        );
    }
    let mut job = Job::new(id.into(), line, spec(&video, &face, extra), start);
    let mut at = start;
    let mut step = |job: &mut Job, event: Event, after: u64| {
        at += after;
        job.apply(event, at).expect("a legal transition");
    };
    if state == JobState::Pending {
        return job;
    }
    step(
        &mut job,
        Event::AnalysisStarted {
            analysis_id: Some(format!("an-{id}")),
        },
        wait,
    );
    match state {
        JobState::Analyzing => return job,
        JobState::NeedsMapping => {
            let subjects = (0..2)
                .map(|obj_id| Subject {
                    obj_id,
                    img_url: format!("{preview_base}/{id}/{obj_id}.svg"),
                })
                .collect();
            step(&mut job, Event::NeedsMapping { subjects }, 40_000);
            return job;
        }
        JobState::Failed if line % 2 == 1 => {
            let error = JobError::new(
                Some(1016),
                "analysis failed: video is 31.5 s long, the limit is 20 s",
            );
            step(&mut job, Event::Failed { error }, 40_000);
            return job;
        }
        _ => {}
    }
    let mappings = vec![Mapping {
        obj_id: 0,
        img_url: face.clone(),
    }];
    step(&mut job, Event::Mapped { mappings }, 40_000);
    if state == JobState::Ready {
        return job;
    }
    step(&mut job, Event::SubmitIntent, 20_000);
    match state {
        JobState::Submitting => return job,
        JobState::Held => {
            step(
                &mut job,
                Event::Ambiguous {
                    hold: true,
                    error: None,
                },
                1_000,
            );
            return job;
        }
        _ => {}
    }
    step(
        &mut job,
        Event::Created {
            task_id: format!("task-{id}"),
        },
        1_000,
    );
    match state {
        JobState::Rendering => return job,
        JobState::Failed => {
            let error = JobError::new(
                None,
                "render failed: the service could not track the face in frames 120-180",
            );
            step(&mut job, Event::RenderFailed { error }, 150_000);
            return job;
        }
        _ => {}
    }
    let url = Some(format!(
        "https://files.example.com/{id}.mp4?expires=1&sig=ab"
    ));
    step(
        &mut job,
        Event::Rendered { output_url: url },
        180_000 + (line % 7) * 9_000,
    );
    match state {
        JobState::Downloading => return job,
        JobState::Expired => {
            let error = JobError::new(
                Some(1003),
                "output link expired and task detail gave no fresh one",
            );
            step(&mut job, Event::Expired { error }, 5_000);
            return job;
        }
        _ => {}
    }
    let path = out_dir.join("output").join(format!("{id}.mp4"));
    let output = Output {
        path: path.display().to_string(),
        bytes: 14_200_000 + line * 131_000,
        sha256: "0".repeat(64),
    };
    step(&mut job, Event::Downloaded { output }, 5_000);
    job
}

/// A dozen-odd jobs of a spring campaign in every state, with previews from `previews`.
fn realistic_jobs(previews: &LoopbackServer, dir: &Path) -> (Vec<Job>, Vec<AnalysisRecord>) {
    // Ingested together; each waits for one of four slots (seconds before its analysis).
    let rows: [(&str, JobState, u64, &str, &str); 16] = [
        (
            "spring-hero-anna",
            JobState::Done,
            0,
            "SKU-1001",
            "spring-2027",
        ),
        (
            "spring-hero-ben",
            JobState::Done,
            2,
            "SKU-1001",
            "spring-2027",
        ),
        (
            "spring-hero-chloe",
            JobState::Done,
            4,
            "SKU-1001",
            "spring-2027",
        ),
        (
            "kitchen-duo",
            JobState::NeedsMapping,
            6,
            "SKU-2040",
            "kitchen, summer",
        ),
        (
            "outdoor-run-dev",
            JobState::Done,
            60,
            "SKU-3100",
            "the \"run\" spot",
        ),
        ("gym-duo-kai", JobState::Failed, 250, "SKU-6000", "fitness"),
        ("gym-lena", JobState::Failed, 270, "SKU-6001", "fitness"),
        ("promo-nora", JobState::Expired, 300, "SKU-7000", "promo"),
        ("promo-omar", JobState::Held, 330, "SKU-7001", "promo"),
        (
            "beach-walk-emma",
            JobState::Downloading,
            520,
            "SKU-3200",
            "summer-2027",
        ),
        (
            "beach-walk-finn",
            JobState::Rendering,
            560,
            "SKU-3200",
            "summer-2027",
        ),
        (
            "studio-grace",
            JobState::Submitting,
            640,
            "SKU-4100",
            "studio",
        ),
        ("studio-hugo", JobState::Ready, 700, "SKU-4100", "studio"),
        (
            "city-night-ines",
            JobState::Analyzing,
            760,
            "SKU-5000",
            "city",
        ),
        ("city-night-jon", JobState::Pending, 0, "SKU-5000", "city"),
        ("legacy-max", JobState::Invalid, 0, "SKU-0007", "archive"),
    ];
    let mut jobs = Vec::new();
    let mut analyses = Vec::new();
    for (index, (id, state, wait_s, sku, campaign)) in rows.into_iter().enumerate() {
        let extra = vec![
            ("sku".to_string(), sku.to_string()),
            ("campaign".to_string(), campaign.to_string()),
        ];
        let wait = wait_s * 1000;
        let job = drive(
            id,
            index as u64 + 2,
            state,
            (T0, wait),
            extra,
            &previews.url("/previews"),
            dir,
        );
        if job.analysis_id.is_some() {
            analyses.push(AnalysisRecord {
                video_url: job.spec.video_url.clone(),
                state: if state == JobState::Analyzing {
                    AnalysisState::Running
                } else {
                    AnalysisState::Completed
                },
                analysis_id: job.analysis_id.clone(),
                subjects: Vec::new(),
                attempts: 0,
                last_error: None,
                submitted_ms: Some(T0 + wait),
                updated_ms: T0 + wait + 40_000,
            });
        }
        jobs.push(job);
    }
    jobs.sort_by(|a, b| a.id.cmp(&b.id));
    (jobs, analyses)
}

/// Jobs with hostile text in every field that reaches the page, in every state; the finished
/// ones have files in folders with hostile names. Returns the jobs, their analyses and the
/// output files.
fn hostile_jobs(
    server: &LoopbackServer,
    dir: &Path,
) -> (Vec<Job>, Vec<AnalysisRecord>, Vec<PathBuf>) {
    let mut jobs = Vec::new();
    let mut files = Vec::new();
    for (index, state) in JobState::ALL.into_iter().enumerate() {
        let extra = vec![
            (format!("sku{HOSTILE}"), format!("sku{HOSTILE}")),
            ("campaign".to_string(), format!("campaign{HOSTILE}")),
        ];
        let id = format!("{index}{HOSTILE}");
        let mut job = drive(
            &id,
            index as u64 + 2,
            state,
            (T0, 5_000),
            extra,
            "javascript:alert(4)//",
            dir,
        );
        job.spec.video_url = "javascript:alert(document.domain)".into();
        job.spec.faces[0].face_url = "data:text/html,<script>alert(3)</script>".to_string();
        if let Some(error) = job.last_error.as_mut() {
            error.message = if state == JobState::Invalid {
                format!("bad row{HOSTILE}")
            } else {
                format!("failed{HOSTILE}")
            };
        }
        if job.analysis_id.is_some() {
            job.analysis_id = Some(format!("an{HOSTILE}"));
        }
        if job.task_id.is_some() {
            job.task_id = Some(format!("task{HOSTILE}"));
        }
        if state == JobState::NeedsMapping {
            job.subjects[0].img_url = server.url(&format!("/previews/hostile/0.svg?q={HOSTILE}"));
            job.subjects[1].img_url = "data:image/svg+xml,<svg onload=alert(5)>".to_string();
        }
        jobs.push(job);
    }
    // Three finished jobs: a file in a folder with a hostile name, a javascript: "URL", and an
    // object URL with hostile text (on the loopback server: no browser leaves this machine).
    let done = jobs
        .iter()
        .position(|job| job.state == JobState::Done)
        .unwrap();
    let mut url_job = jobs[done].clone();
    url_job.id = format!("url{HOSTILE}").into();
    url_job.output.as_mut().unwrap().path = "javascript://%0aalert(6)".to_string();
    let mut web_job = jobs[done].clone();
    web_job.id = format!("web{HOSTILE}").into();
    // The slashes in the hostile text make folders.
    let object = dir.join(format!("o{HOSTILE}.mp4"));
    std::fs::create_dir_all(object.parent().unwrap()).unwrap();
    std::fs::write(&object, b"x").unwrap();
    web_job.output.as_mut().unwrap().path = server.url(&format!("/o{HOSTILE}.mp4"));
    let folder = dir.join(format!("out{HOSTILE}"));
    std::fs::create_dir_all(&folder).unwrap();
    let file = folder.join("done <video> \"1\".mp4");
    std::fs::write(&file, b"x").unwrap();
    jobs[done].output.as_mut().unwrap().path = file.display().to_string();
    files.push(file);
    files.push(object);
    jobs.push(url_job);
    jobs.push(web_job);
    let analyses = jobs
        .iter()
        .map(|job| {
            let mut record = AnalysisRecord::new(job.spec.video_url.clone(), T0 + 5_000);
            record.state = AnalysisState::Completed;
            record.submitted_ms = Some(T0 + 5_000);
            record.updated_ms = T0 + 45_000;
            record
        })
        .collect();
    (jobs, analyses, files)
}
