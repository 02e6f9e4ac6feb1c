//! What an operator reads and types, through the real binary: an output folder that cannot
//! take a file is refused before anything is bought; every job that ends needing a person is
//! named in the log (text and JSON) and in the summary with what to do; `retry` keeps
//! permanent failures out unless asked and says what it may cost; a row edited after
//! submission is flagged `row_changed` everywhere; bad flags are usage errors naming the flag;
//! a Windows-1252 manifest is read; the progress line leaves invalid rows out of its total
//! and says what the run waits for.

use std::process::Command;

use headswap_batch::job::{Event, Job, JobError, JobSpec};
use headswap_batch::store::Store;

use crate::support::{Batch, KEY, assert_exit, binary, finish, simulator, text};

/// `run` with fast timings (as `Batch::run_command`), at the default verbosity.
fn run(batch: &Batch, base_url: &str, extra: &[&str]) -> Command {
    let mut command = binary();
    command
        .env("AKOOL_API_KEY", KEY)
        .env_remove("RUST_LOG")
        .env_remove("HEADSWAP_DB")
        .env("NO_COLOR", "1")
        .arg("--db")
        .arg(batch.db())
        .arg("run")
        .arg(batch.manifest())
        .arg("--out")
        .arg(batch.out())
        .args(["--base-url", base_url, "--no-preflight", "--no-progress"])
        .args(["--rate", "200", "--burst", "20", "--concurrency", "8"])
        .args(["--poll-min", "20ms", "--poll-max", "500ms"])
        .args(["--analysis-guess", "100ms", "--render-guess", "300ms"])
        .args(["--backoff-base", "10ms", "--backoff-cap", "200ms"])
        .args(extra)
        .stdin(std::process::Stdio::null());
    command
}

/// A command of the binary on the batch's database (`--db` before the command, as scripts
/// write it).
fn on_db(batch: &Batch, args: &[&str]) -> std::process::Output {
    binary()
        .env_remove("HEADSWAP_DB")
        .env("NO_COLOR", "1")
        .arg("--db")
        .arg(batch.db())
        .args(args)
        .output()
        .unwrap()
}

/// Runs the command as an unprivileged user when the tests run as root (root writes into a
/// read-only folder regardless of its mode); the batch folder is opened up for it.
fn unprivileged(mut command: Command, batch: &Batch) -> Command {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        let open = std::fs::Permissions::from_mode(0o777);
        std::fs::set_permissions(batch.dir.path(), open).unwrap();
        command.uid(65534).gid(65534);
    }
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_output_folder_is_refused_before_anything_is_bought() {
    use std::os::unix::fs::PermissionsExt;
    let sim = simulator(|_| {}).await;
    let media = format!("{}/media", sim.base_url());
    let batch = Batch::new(&format!(
        "id,video_url,face_url\na,{media}/video.mp4?duration=5,{media}/face.jpg\n"
    ));
    let in_the_way = batch.dir.path().join("renders");
    std::fs::write(&in_the_way, b"a file where the folder should be").unwrap();
    let read_only = batch.dir.path().join("locked");
    std::fs::create_dir(&read_only).unwrap();
    std::fs::set_permissions(&read_only, std::fs::Permissions::from_mode(0o555)).unwrap();

    let cases = [
        (in_the_way.clone(), "is a file, not a folder"),
        (in_the_way.join("sub"), "renders is a file"),
        (read_only.clone(), "permission denied"),
    ];
    for (out, problem) in cases {
        let mut command = run(&batch, &sim.base_url(), &[]);
        command.arg("--out").arg(&out);
        let output = finish(unprivileged(command, &batch)).await;
        let stderr = text(&output.stderr);
        assert_exit(&output, 1);
        assert!(
            stderr.contains("error: ") && stderr.contains(problem) && stderr.contains("hint: "),
            "{out:?}: {stderr}"
        );
        assert!(!stderr.contains("os error"), "said in words: {stderr}");
        assert!(!stderr.contains("free space"), "{stderr}");
        let stats = sim.stats();
        assert_eq!(
            (
                stats.calls.analyze,
                stats.calls.create,
                stats.billed_creates
            ),
            (0, 0, 0),
            "{out:?}: nothing was asked of the service"
        );
    }
    assert_eq!(
        std::fs::read_dir(&read_only).unwrap().count(),
        0,
        "no probe file left behind"
    );
    sim.shutdown().await;
}

/// Four jobs end needing a person (a failed render, two people without an obj_id, no person,
/// an invalid row) and one is done.
fn troubled_manifest(media: &str) -> String {
    let face = format!("{media}/face.jpg");
    format!(
        "id,video_url,face_url\n\
         fine,{media}/video.mp4?duration=5&n=1,{face}\n\
         badrender,{media}/video.mp4?duration=5&n=2&fail=render,{face}\n\
         two,{media}/video.mp4?duration=5&n=3&subjects=2,{face}\n\
         nobody,{media}/video.mp4?duration=5&n=4&subjects=0,{face}\n\
         broken,ftp://nowhere/clip.mp4,{face}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_job_needing_a_person_is_named_in_the_log_and_the_summary() {
    let sim = simulator(|_| {}).await;
    let media = format!("{}/media", sim.base_url());
    let batch = Batch::new(&troubled_manifest(&media));
    let output = finish(run(&batch, &sim.base_url(), &[])).await;
    let stderr = text(&output.stderr);
    assert_exit(&output, 3);
    for (job, state, reason) in [
        ("badrender", "failed", "face not detected"),
        ("two", "needs_mapping", "2 people detected"),
        ("nobody", "failed", ""),
    ] {
        let line = stderr
            .lines()
            .find(|line| line.contains("WARN") && line.contains(&format!("job={job} ")))
            .unwrap_or_else(|| panic!("no WARN line names {job}: {stderr}"));
        assert!(
            line.contains(&format!("state={state}")) && line.contains(reason),
            "{line}"
        );
    }
    // The summary: every job needing a person with its reason, then what to do.
    let summary = &stderr[stderr.find("needing attention (4 job(s)):").expect(&stderr)..];
    for (job, words) in [
        ("badrender", "face not detected"),
        ("broken", "not an http(s) URL"),
        ("nobody", "failed"),
        ("two", "2 people detected"),
    ] {
        assert!(
            summary
                .lines()
                .any(|line| line.contains(&format!("  {job}  ")) && line.contains(words)),
            "{job}: {summary}"
        );
    }
    assert!(summary.contains("what to do:"), "{summary}");
    assert!(summary.contains("retry --failed --permanent"), "{summary}");
    assert!(summary.contains("fill in obj_id"), "{summary}");
    assert!(summary.contains("invalid (1)"), "{summary}");

    // The same run logged as JSON: the jobs and the counts as fields.
    let json_batch = Batch::new(&troubled_manifest(&media));
    let mut command = run(&json_batch, &sim.base_url(), &[]);
    command.args(["--log-format", "json"]);
    let output = finish(command).await;
    assert_exit(&output, 3);
    let events: Vec<serde_json::Value> = text(&output.stderr)
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    let named = events
        .iter()
        .find(|event| event["fields"]["job"] == "badrender" && event["fields"]["state"] == "failed")
        .unwrap_or_else(|| panic!("no JSON event names badrender: {events:?}"));
    assert_eq!(named["level"], "WARN");
    assert!(
        named["fields"]["reason"]
            .as_str()
            .unwrap()
            .contains("face not detected")
    );
    let counts = events
        .iter()
        .find(|event| event["fields"]["done"].is_u64())
        .unwrap_or_else(|| panic!("no event carries the counts: {events:?}"));
    let fields = &counts["fields"];
    assert_eq!(
        (
            &fields["done"],
            &fields["failed"],
            &fields["needs_mapping"],
            &fields["invalid"]
        ),
        (
            &serde_json::json!(1),
            &serde_json::json!(2),
            &serde_json::json!(1),
            &serde_json::json!(1)
        ),
        "{counts}"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_list_of_failures_is_bounded_in_the_summary() {
    let mut manifest = String::from("id,video_url,face_url\n");
    for n in 0..25 {
        manifest.push_str(&format!(
            "bad{n:02},ftp://nowhere/{n}.mp4,http://f/{n}.jpg\n"
        ));
    }
    let batch = Batch::new(&manifest);
    let output = finish(run(&batch, "http://127.0.0.1:9", &[])).await;
    let stderr = text(&output.stderr);
    assert_exit(&output, 3);
    assert!(
        stderr.contains("needing attention (25 job(s)):"),
        "{stderr}"
    );
    assert!(stderr.contains("  bad19  invalid  line 21"), "{stderr}");
    assert!(!stderr.contains("  bad20  "), "only the first 20: {stderr}");
    assert!(stderr.contains("and 5 more; see `"), "{stderr}");
}

/// A job put in the store as failed, for `retry` to find.
fn failed_job(id: &str, error: JobError) -> Job {
    let spec = JobSpec {
        video_url: format!("https://v.example/{id}.mp4").as_str().into(),
        faces: vec![headswap_batch::job::Face {
            obj_id: None,
            face_url: "https://f.example/1.jpg".into(),
        }],
        resolution: headswap_batch::akool::Resolution::P720,
        model_name: "akool-premium".into(),
        keep_original_sound: true,
        template_id: None,
        extra: Vec::new(),
    };
    let mut job = Job::new(id.into(), 9, spec, 1);
    job.apply(Event::AnalysisStarted { analysis_id: None }, 2)
        .unwrap();
    job.apply(Event::Failed { error }, 3).unwrap();
    job
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_leaves_permanent_failures_alone_unless_asked_and_says_what_it_may_cost() {
    let sim = simulator(|_| {}).await;
    let media = format!("{}/media", sim.base_url());
    let batch = Batch::new(&troubled_manifest(&media));
    let output = finish(run(&batch, &sim.base_url(), &[])).await;
    assert_exit(&output, 3);
    let billed = sim.stats().billed_creates;
    // A job that gave up after transient failures, beside the run's permanent ones.
    {
        let store = Store::open_existing(&batch.db()).unwrap();
        let flaky = failed_job(
            "flaky",
            JobError::gave_up("failed after 12 attempts over 2h: transient API failure: reset"),
        );
        store.put_job(&flaky).unwrap();
        store.flush().unwrap();
    }
    let state = |id: &str| {
        let rows = batch.export();
        rows.iter().find(|row| row["id"] == id).unwrap()["state"].clone()
    };

    let output = on_db(&batch, &["retry", "--failed"]);
    assert_exit(&output, 0);
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert!(
        stdout.contains(
            "1 job(s) will be processed by the next run; up to 1 of them may be created (billed) again"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("flaky: failed -> pending"), "{stdout}");
    assert!(
        stderr.contains("2 failed job(s) not retried") && stderr.contains("badrender (line 3)"),
        "{stderr}"
    );
    assert!(stderr.contains("--permanent"), "{stderr}");
    assert_eq!(state("badrender"), "failed");
    assert_eq!(state("nobody"), "failed");

    // Asked explicitly: by id, or with --permanent.
    let output = on_db(&batch, &["retry", "--ids", "badrender"]);
    assert_exit(&output, 0);
    assert!(
        text(&output.stdout).contains("1 job(s) will be processed by the next run; up to 1 of them may be created (billed) again"),
        "{}",
        text(&output.stdout)
    );
    assert_eq!(state("badrender"), "ready");
    let output = on_db(&batch, &["retry", "--failed", "--permanent"]);
    assert_exit(&output, 0);
    assert!(text(&output.stdout).contains("nobody: failed -> pending"));
    assert_eq!(
        sim.stats().billed_creates,
        billed,
        "retry itself buys nothing"
    );

    // An unknown id is an error, and nothing is retried.
    let output = on_db(&batch, &["retry", "--expired", "--ids", "fine,nosuch"]);
    assert_exit(&output, 1);
    assert!(
        text(&output.stderr).contains("error: no such job: nosuch"),
        "{}",
        text(&output.stderr)
    );
    let help = text(&on_db(&batch, &["retry", "--help"]).stdout);
    assert!(
        help.contains("--permanent") && help.contains("An unknown id is an error"),
        "{help}"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_edited_after_submission_is_flagged_everywhere_until_restored_or_replaced() {
    let sim = simulator(|_| {}).await;
    let media = format!("{}/media", sim.base_url());
    let original =
        format!("id,video_url,face_url\nhero,{media}/video.mp4?duration=5,{media}/face.jpg\n");
    let batch = Batch::new(&original);
    assert_exit(&finish(run(&batch, &sim.base_url(), &[])).await, 0);

    let edited = original.replace("face.jpg", "face.png");
    std::fs::write(batch.manifest(), &edited).unwrap();
    let output = finish(run(&batch, &sim.base_url(), &[])).await;
    assert_exit(&output, 0);
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("row_changed (1): hero: edited") && stderr.contains("--replace-changed"),
        "the summary names it: {stderr}"
    );
    let flags = |batch: &Batch| batch.export()[0]["flags"].clone();
    assert_eq!(flags(&batch), "row_changed");
    let status = text(&on_db(&batch, &["status"]).stdout);
    assert!(
        status.contains("row changed after submission: 1") && status.contains("hero"),
        "{status}"
    );
    assert!(status.contains("--replace-changed"), "{status}");
    let json: serde_json::Value =
        serde_json::from_slice(&on_db(&batch, &["status", "--json"]).stdout).unwrap();
    assert_eq!(json["row_changed"], 1);
    let page = batch.dir.path().join("report.html");
    let output = on_db(&batch, &["report", "--out", page.to_str().unwrap()]);
    assert_exit(&output, 0);
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(
        html.contains("row changed") && html.contains("--replace-changed"),
        "the report flags it"
    );

    // Restored: the flag goes.
    std::fs::write(batch.manifest(), &original).unwrap();
    assert_exit(&finish(run(&batch, &sim.base_url(), &[])).await, 0);
    assert_eq!(flags(&batch), "");
    // Edited again and replaced: rendered again, no flag.
    std::fs::write(batch.manifest(), &edited).unwrap();
    let output = finish(run(&batch, &sim.base_url(), &["--replace-changed"])).await;
    assert_exit(&output, 0);
    assert_eq!(flags(&batch), "");
    assert_eq!(sim.stats().billed_creates, 2);
    sim.shutdown().await;
}

#[test]
fn every_bad_flag_value_is_a_usage_error_naming_the_flag() {
    let batch = Batch::new("id,video_url,face_url\n");
    let manifest = batch.manifest();
    let manifest = manifest.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["--rate", "0"], "--rate"),
        (&["--rate", "-1"], "--rate"),
        (&["--rate", "NaN"], "positive number"),
        (&["--poll-min", "5s", "--poll-max", "1s"], "--poll-min"),
        (
            &["--backoff-base", "2m", "--backoff-cap", "1m"],
            "--backoff-base",
        ),
        (
            &["--max-runtime", "banana"],
            "expected a duration such as 90s, 15m or 7h30m",
        ),
        (&["--max-runtime", "-5m"], "--max-runtime"),
        (&["--request-timeout", "0s"], "at least 1s"),
        (&["--give-up-after", "9s"], "--give-up-after"),
        (&["--poll-min", "0s"], "--poll-min"),
        (&["--max-download-bytes", "0"], "--max-download-bytes"),
    ];
    for (flags, expected) in cases {
        let output = binary()
            .env("AKOOL_API_KEY", KEY)
            .env_remove("HEADSWAP_DB")
            .args(["run", manifest])
            .args(*flags)
            .output()
            .unwrap();
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{flags:?}: {stderr}");
        assert!(stderr.contains(expected), "{flags:?}: {stderr}");
    }
    assert!(!batch.db().exists());

    // --db only where a database is used.
    for command in [
        vec!["check", manifest],
        vec!["demo"],
        vec!["completions", "bash"],
        vec!["man"],
    ] {
        let output = binary()
            .args(["--db", "x.db"])
            .args(&command)
            .output()
            .unwrap();
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{command:?}: {stderr}");
        assert!(
            stderr.contains("--db is not used by"),
            "{command:?}: {stderr}"
        );
        let help = binary().args(&command[..1]).arg("--help").output().unwrap();
        assert!(
            !text(&help.stdout).contains("--db"),
            "{command:?} does not offer --db"
        );
    }
    for command in ["run", "status", "export", "retry", "report"] {
        let help = binary().args([command, "--help"]).output().unwrap();
        assert!(text(&help.stdout).contains("--db <PATH>"), "{command}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_v_shows_the_bodies_that_one_v_does_not_and_no_secret() {
    let sim = simulator(|_| {}).await;
    let media = format!("{}/media", sim.base_url());
    let manifest =
        format!("id,video_url,face_url\nhero,{media}/video.mp4?duration=5,{media}/face.jpg\n");
    let mut logs = Vec::new();
    for verbosity in ["-v", "-vv"] {
        let batch = Batch::new(&manifest);
        let mut command = run(&batch, &sim.base_url(), &[]);
        command.arg(verbosity);
        let output = finish(command).await;
        assert_exit(&output, 0);
        logs.push(text(&output.stderr));
    }
    let (one, two) = (&logs[0], &logs[1]);
    assert!(one.contains("api call"), "-v shows the calls: {one}");
    assert!(!one.contains("api answer body"), "{one}");
    assert!(two.contains("api request body") && two.contains("\"video_url\""));
    assert!(two.contains("api answer body"), "{two}");
    for log in [one, two] {
        assert!(!log.contains(KEY), "the key never shows");
    }
    sim.shutdown().await;
}

/// Text in Windows-1252 (é = 0xE9, è = 0xE8, ë = 0xEB), as Excel saves a "CSV".
fn windows_1252(text: &str) -> Vec<u8> {
    text.chars()
        .map(|c| match c {
            'é' => 0xE9,
            'è' => 0xE8,
            'ë' => 0xEB,
            c if c.is_ascii() => c as u8,
            other => panic!("not in this test's table: {other}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_windows_1252_manifest_is_read_with_one_warning() {
    let sim = simulator(|_| {}).await;
    let media = format!("{}/media", sim.base_url());
    let bytes = windows_1252(&format!(
        "id,video_url,face_url,title\n\
         plain,{media}/video.mp4?duration=5&n=1,{media}/face.jpg,Café Crème\n\
         accent,{media}/video.mp4?duration=5&n=2,{media}/face.jpg?who=André,Noël\n"
    ));
    let batch = Batch::new("");
    std::fs::write(batch.manifest(), &bytes).unwrap();

    let output = binary()
        .arg("check")
        .arg(batch.manifest())
        .output()
        .unwrap();
    let stderr = text(&output.stderr);
    assert_exit(&output, 0);
    assert_eq!(
        stderr.matches("not UTF-8").count(),
        1,
        "warned once: {stderr}"
    );
    assert!(
        stderr.contains("first on line 2") && stderr.contains("windows-1252"),
        "{stderr}"
    );

    let output = finish(run(&batch, &sim.base_url(), &[])).await;
    assert_exit(&output, 0);
    let stderr = text(&output.stderr);
    assert_eq!(stderr.matches("not UTF-8").count(), 1, "{stderr}");
    let rows = batch.export();
    let row = |id: &str| rows.iter().find(|row| row["id"] == id).unwrap().clone();
    assert_eq!(row("plain")["title"], "Café Crème");
    assert_eq!(row("accent")["title"], "Noël");
    assert!(
        row("accent")["mappings"].ends_with("face.jpg?who=André"),
        "{:?}",
        row("accent")
    );
    assert!(
        sim.stats()
            .creates
            .iter()
            .any(|create| create.mappings.contains("who=André")),
        "the service got the URL as written"
    );
    // The fingerprint is of the bytes as read: the same file is not ingested again.
    let sha256 = headswap_batch::manifest::content_sha256(&bytes);
    {
        let store = Store::open_existing(&batch.db()).unwrap();
        let stored = headswap_batch::ingest::manifest_sha256(&store).unwrap();
        assert_eq!(stored.as_deref(), Some(sha256.as_str()));
    }
    let output = finish(run(&batch, &sim.base_url(), &[])).await;
    assert_exit(&output, 0);
    sim.shutdown().await;
}

/// With the default flags: a 3-line catalog with one invalid row counts 2 jobs in its
/// progress lines, and while the renders take their time the line says so instead of a rate
/// of zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_progress_line_counts_valid_jobs_and_says_what_it_waits_for() {
    let sim = simulator(|knobs| {
        knobs.analysis_time = std::time::Duration::from_secs(1);
        knobs.render_time = std::time::Duration::from_secs(24);
    })
    .await;
    let media = format!("{}/media", sim.base_url());
    let batch = Batch::new(&format!(
        "id,video_url,face_url\n\
         a,{media}/video.mp4?duration=5&n=1,{media}/face.jpg\n\
         b,{media}/video.mp4?duration=5&n=2,{media}/face.jpg\n\
         broken,ftp://nowhere/clip.mp4,{media}/face.jpg\n"
    ));
    let output = finish(batch.run_with_defaults(&sim.base_url(), &[])).await;
    let stderr = text(&output.stderr);
    assert_exit(&output, 3);
    let progress: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains(" done | "))
        .collect();
    assert!(progress.len() >= 2, "{stderr}");
    for line in &progress {
        assert!(
            line.contains("/2 done"),
            "invalid rows are not counted: {line}"
        );
        if let Some((rate, limit)) = rate_and_limit(line) {
            assert!(rate <= limit, "{line}");
        }
    }
    assert!(
        progress
            .iter()
            .any(|line| { line.contains("waiting for 2 renders at the service, next poll in") }),
        "{stderr}"
    );
    assert!(!stderr.contains("0.0 req/s"), "{stderr}");
    sim.shutdown().await;
}

/// "1.9 req/s (limit 2.0)" → (1.9, 2.0).
fn rate_and_limit(line: &str) -> Option<(f64, f64)> {
    let (before, after) = line.split_once(" req/s (limit ")?;
    let rate = before.rsplit(' ').next()?.parse().ok()?;
    let limit = after.split(')').next()?.parse().ok()?;
    Some((rate, limit))
}
