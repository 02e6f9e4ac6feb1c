//! The durable store: ingest semantics, records, and what happens to the database when a
//! process is killed, holds the lock, or left garbage behind.

use std::collections::BTreeMap;
use std::path::Path;

use headswap_batch::akool::Mapping;
use headswap_batch::exit::Fatal;
use headswap_batch::ingest::{self, IngestReport};
use headswap_batch::job::{AnalysisRecord, AnalysisState, Event, Job, JobError, JobState};
use headswap_batch::manifest::{Defaults, Manifest, parse_bytes};
use headswap_batch::store::{SCHEMA_VERSION, Store, StoreError};

use crate::support::{ChildProcess, HEADER, child_role, temp_dir};

fn manifest(body: &str) -> Manifest {
    parse_bytes(
        Path::new("jobs.csv"),
        format!("{HEADER},sku\n{body}").as_bytes(),
    )
    .unwrap()
}

fn ingest(store: &Store, body: &str, replace_changed: bool) -> IngestReport {
    ingest::ingest(
        store,
        manifest(body),
        &Defaults::default(),
        replace_changed,
        100,
    )
    .unwrap()
}

fn job(store: &Store, id: &str) -> Job {
    store
        .job(id)
        .unwrap()
        .unwrap_or_else(|| panic!("no job {id}"))
}

fn all_jobs(store: &Store) -> Vec<Job> {
    store.jobs().collect::<Result<_, _>>().unwrap()
}

/// Move a stored job along with events.
fn advance(store: &Store, id: &str, events: Vec<Event>) {
    let mut stored = job(store, id);
    for event in events {
        stored.apply(event, 200).unwrap();
    }
    store.put_job(&stored).unwrap();
    store.flush().unwrap();
}

fn to_rendering() -> Vec<Event> {
    vec![
        Event::AnalysisStarted {
            analysis_id: Some("an".to_string()),
        },
        Event::Mapped {
            mappings: vec![Mapping {
                obj_id: 0,
                img_url: "https://f/1.jpg".to_string(),
            }],
        },
        Event::SubmitIntent,
        Event::Created {
            task_id: "task-1".to_string(),
        },
    ]
}

const TWO_JOBS: &str = "a,https://v/1.mp4,https://f/1.jpg,0,,,s1\n\
                        b,https://v/2.mp4,https://f/2.jpg,,,,s2\n\
                        bad,ftp://v,https://f/3.jpg,,,,s3\n";

#[test]
fn ingest_adds_jobs_once() {
    let dir = temp_dir();
    let store = Store::open(&dir.path().join("db")).unwrap();
    let report = ingest(&store, TWO_JOBS, false);
    assert_eq!(
        report,
        IngestReport {
            added: 3,
            invalid: 1,
            ..IngestReport::default()
        }
    );
    let a = job(&store, "a");
    assert_eq!(
        (a.state, a.line, a.times.created_ms),
        (JobState::Pending, 2, 100)
    );
    assert_eq!(a.spec.resolution, "720p");
    assert_eq!(a.spec.extra, [("sku".to_string(), "s1".to_string())]);
    assert_eq!(a.fingerprint, a.spec.fingerprint());
    let bad = job(&store, "bad");
    assert_eq!(bad.state, JobState::Invalid);
    assert_eq!(
        bad.last_error,
        Some(JobError::new(
            None,
            r#"video_url: "ftp://v" is not an http(s) URL"#
        ))
    );
    assert_eq!(
        (bad.spec.video_url.as_str(), bad.spec.extra.clone()),
        ("ftp://v", vec![("sku".to_string(), "s3".to_string())])
    );

    // The same manifest again changes nothing.
    let before = all_jobs(&store);
    let report = ingest(&store, TWO_JOBS, false);
    assert_eq!(
        report,
        IngestReport {
            unchanged: 3,
            invalid: 1,
            ..IngestReport::default()
        }
    );
    assert_eq!(all_jobs(&store), before);
    assert_eq!(
        store.counts().unwrap(),
        BTreeMap::from([(JobState::Pending, 2), (JobState::Invalid, 1)])
    );
    assert_eq!(
        ingest::manifest_sha256(&store).unwrap(),
        Some(manifest(TWO_JOBS).sha256)
    );
}

#[test]
fn unchanged_jobs_keep_their_state_and_refresh_echoes() {
    let dir = temp_dir();
    let store = Store::open(&dir.path().join("db")).unwrap();
    ingest(&store, TWO_JOBS, false);
    advance(&store, "a", to_rendering());
    // Moved down a line, another sku: the render is the same.
    let moved = format!("\n{}", TWO_JOBS.replace("s1", "s1-new"));
    let report = ingest(&store, &moved, false);
    assert_eq!(report.unchanged, 3);
    let a = job(&store, "a");
    assert_eq!(
        (a.state, a.task_id.as_deref(), a.line),
        (JobState::Rendering, Some("task-1"), 3)
    );
    assert_eq!(a.spec.extra, [("sku".to_string(), "s1-new".to_string())]);
}

#[test]
fn changed_rows_restart_unsubmitted_jobs_only() {
    let dir = temp_dir();
    let store = Store::open(&dir.path().join("db")).unwrap();
    ingest(&store, TWO_JOBS, false);
    advance(&store, "a", to_rendering());
    // b waits for a person to choose a subject.
    advance(
        &store,
        "b",
        vec![
            Event::AnalysisStarted { analysis_id: None },
            Event::NeedsMapping {
                subjects: Vec::new(),
            },
        ],
    );
    let edited = "a,https://v/1.mp4,https://f/1-new.jpg,0,,,s1\n\
                  b,https://v/2.mp4,https://f/2.jpg,1,,,s2\n\
                  bad,https://v/3.mp4,https://f/3.jpg,,,,s3\n";
    let report = ingest(&store, edited, false);
    assert_eq!(
        report,
        IngestReport {
            updated: 2,
            changed_submitted: vec!["a".into()],
            ..IngestReport::default()
        }
    );
    // a was submitted: left alone, still the old face.
    let a = job(&store, "a");
    assert_eq!(
        (a.state, a.spec.faces[0].face_url.as_str()),
        (JobState::Rendering, "https://f/1.jpg")
    );
    // b and bad start over with the edited rows.
    let b = job(&store, "b");
    assert_eq!(
        (b.state, b.spec.faces[0].obj_id, b.times.created_ms),
        (JobState::Pending, Some(1), 100)
    );
    assert_eq!(job(&store, "bad").state, JobState::Pending);

    // --replace-changed restarts a, and says so.
    let report = ingest(&store, edited, true);
    assert_eq!(report.replaced, ["a"]);
    assert_eq!(report.unchanged, 2);
    let a = job(&store, "a");
    assert_eq!((a.state, a.task_id.clone()), (JobState::Pending, None));
    assert_eq!(a.spec.faces[0].face_url, "https://f/1-new.jpg");
}

#[test]
fn possibly_submitted_jobs_are_not_restarted_silently() {
    let dir = temp_dir();
    let store = Store::open(&dir.path().join("db")).unwrap();
    ingest(&store, TWO_JOBS, false);
    // a: the create's answer was lost and the job was parked; b: resubmittable, flagged.
    let mut events = to_rendering();
    events.truncate(3);
    let mut held = events.clone();
    held.push(Event::Ambiguous {
        hold: true,
        error: None,
    });
    advance(&store, "a", held);
    let mut flagged = events;
    flagged.push(Event::Ambiguous {
        hold: false,
        error: None,
    });
    advance(&store, "b", flagged);
    let edited = TWO_JOBS.replace(".jpg,", "-new.jpg,");
    let report = ingest(&store, &edited, false);
    assert_eq!(report.changed_submitted, ["a", "b"]);
    assert_eq!(job(&store, "a").state, JobState::Held);
    assert_eq!(job(&store, "b").state, JobState::Ready);
}

#[test]
fn rows_turning_invalid_and_jobs_left_out() {
    let dir = temp_dir();
    let store = Store::open(&dir.path().join("db")).unwrap();
    ingest(&store, TWO_JOBS, false);
    advance(&store, "b", to_rendering());
    // a's row breaks, b's row breaks after submission, the rest of the file is gone.
    let broken = "a,https://v/1.mp4,https://f/1.jpg,zero,,,s1\n\
                  b,https://v/2.mp4,https://f/2.jpg,nine,,,s2\n";
    let report = ingest(&store, broken, false);
    assert_eq!((report.updated, report.invalid), (1, 2));
    assert_eq!(report.changed_submitted, ["b"]);
    let a = job(&store, "a");
    assert_eq!(a.state, JobState::Invalid);
    assert_eq!(
        a.last_error.unwrap().message,
        r#"obj_id: "zero" is not a non-negative integer"#
    );
    assert_eq!(job(&store, "b").state, JobState::Rendering);
    assert_eq!(
        store.job("bad").unwrap(),
        None,
        "an invalid job whose row is gone is dropped (it never reached the service)"
    );
    assert_eq!(report.removed, 1);

    // Editing an invalid row into another problem updates its reason.
    let report = ingest(&store, &broken.replace("zero", "0,x"), false);
    assert_eq!(report.updated, 1);
    assert_eq!(
        job(&store, "a").last_error.unwrap().message,
        "row has 8 fields, the header has 7"
    );
    // A submitted job stays when its row goes; an unsubmitted one is cancelled.
    let report = ingest(&store, "", false);
    assert_eq!(report.removed, 1, "a (invalid) dropped");
    assert_eq!(job(&store, "b").state, JobState::Rendering);
    assert_eq!(store.job("a").unwrap(), None);
}

#[test]
fn records_round_trip_and_reopen() {
    let dir = temp_dir();
    let path = dir.path().join("db");
    let store = Store::open(&path).unwrap();
    assert_eq!(store.path(), path);
    ingest(&store, TWO_JOBS, false);
    let mut record = AnalysisRecord::new("https://v/1.mp4?a=1&b=%2F".into(), 5);
    record.state = AnalysisState::Running;
    record.analysis_id = Some("an-1".to_string());
    store.put_analysis(&record).unwrap();
    let other = AnalysisRecord::new("https://v/0.mp4".into(), 6);
    store.put_analysis(&other).unwrap();
    store.flush().unwrap();
    let jobs = all_jobs(&store);
    drop(store);

    let store = Store::open(&path).unwrap();
    assert_eq!(all_jobs(&store), jobs);
    let ids: Vec<&str> = jobs.iter().map(|job| job.id.as_str()).collect();
    assert_eq!(ids, ["a", "b", "bad"], "in id order");
    assert_eq!(
        store.analysis(record.video_url.as_str()).unwrap(),
        Some(record.clone())
    );
    assert_eq!(store.analysis("https://v/9.mp4").unwrap(), None);
    let analyses: Vec<AnalysisRecord> = store.analyses().collect::<Result<_, _>>().unwrap();
    assert_eq!(analyses, [other, record]);
    assert_eq!(store.job("nope").unwrap(), None);
}

#[tokio::test]
async fn flush_async_makes_writes_durable() {
    let dir = temp_dir();
    let path = dir.path().join("db");
    let store = Store::open(&path).unwrap();
    ingest(&store, TWO_JOBS, false);
    let mut a = job(&store, "a");
    a.apply(Event::AnalysisStarted { analysis_id: None }, 300)
        .unwrap();
    store.put_job(&a).unwrap();
    store.flush_async().await.unwrap();
    drop(store);
    assert_eq!(job(&Store::open(&path).unwrap(), "a"), a);
}

#[test]
fn a_hundred_thousand_rows_ingest() {
    let dir = temp_dir();
    let store = Store::open(&dir.path().join("db")).unwrap();
    let text = crate::manifest::big_manifest(100_000);
    let manifest = parse_bytes(Path::new("big.csv"), text.as_bytes()).unwrap();
    let report = ingest::ingest(&store, manifest.clone(), &Defaults::default(), false, 1).unwrap();
    assert_eq!((report.added, report.invalid), (100_000, 0));
    assert_eq!(
        store.counts().unwrap(),
        BTreeMap::from([(JobState::Pending, 100_000)])
    );
    let job = job(&store, "job-054321");
    assert_eq!(job.line, 54_323);
    assert_eq!(job.spec.video_url, "https://cdn.example.com/video-321.mp4");
    assert_eq!(
        job.spec.faces[0].face_url,
        "https://faces.example.com/54321.jpg"
    );
    assert_eq!(
        job.spec.extra,
        [("sku".to_string(), "sku-54321".to_string())]
    );
    let report = ingest::ingest(&store, manifest, &Defaults::default(), false, 2).unwrap();
    assert_eq!(report.unchanged, 100_000);
}

// ---- the database on disk ----

#[test]
fn a_locked_database_is_refused_clearly() {
    let dir = temp_dir();
    let path = dir.path().join("db");
    drop(Store::open(&path).unwrap());
    let holder = ChildProcess::spawn_holder(&path);

    let error = Store::open(&path).unwrap_err();
    assert!(
        matches!(&error, StoreError::Locked { path: locked } if *locked == path),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(
        message.contains("is in use by another headswap-batch process"),
        "{message}"
    );
    let fatal = Fatal::from(error);
    assert!(fatal.hint.unwrap().contains("status"));
    assert!(matches!(
        Store::open_existing(&path),
        Err(StoreError::Locked { .. })
    ));

    holder.finish();
    Store::open(&path).expect("free again once the holder exits");
}

#[test]
fn a_garbage_database_is_damaged_not_a_panic() {
    for victims in [&["db"][..], &["conf"], &["db", "conf"]] {
        let dir = temp_dir();
        let path = dir.path().join("db");
        let store = Store::open(&path).unwrap();
        ingest(&store, TWO_JOBS, false);
        drop(store);
        for victim in victims {
            let file = path.join(victim);
            let length = std::fs::metadata(&file).unwrap().len().max(64) as usize;
            let garbage: Vec<u8> = (0..length)
                .map(|index| (index * 7919 % 251) as u8)
                .collect();
            std::fs::write(&file, garbage).unwrap();
        }
        let error = Store::open(&path).unwrap_err();
        assert!(
            matches!(error, StoreError::Damaged { .. }),
            "{victims:?}: {error:?}"
        );
        let message = error.to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains("is damaged"), "{message}");
    }
}

#[test]
fn an_undecodable_record_names_its_key() {
    let dir = temp_dir();
    let path = dir.path().join("db");
    let store = Store::open(&path).unwrap();
    ingest(&store, TWO_JOBS, false);
    drop(store);
    with_raw_sled(&path, |db| {
        let jobs = db.open_tree("jobs").unwrap();
        jobs.insert("b", &b"{\"v\":1,\"job\":{\"id\":"[..]).unwrap();
    });
    let store = Store::open(&path).unwrap();
    let error = store.job("b").unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, StoreError::Damaged { .. }), "{error:?}");
    assert!(
        message.contains("jobs/b") && message.contains(&path.display().to_string()),
        "{message}"
    );
    assert!(
        store.job("a").unwrap().is_some(),
        "other records still read"
    );
    assert!(store.jobs().any(|job| job.is_err()));
    assert!(store.counts().is_err());
}

#[test]
fn a_newer_schema_is_refused_and_left_alone() {
    let dir = temp_dir();
    let path = dir.path().join("db");
    let store = Store::open(&path).unwrap();
    ingest(&store, TWO_JOBS, false);
    drop(store);
    let newer = (SCHEMA_VERSION + 1).to_string();
    with_raw_sled(&path, |db| {
        db.open_tree("meta")
            .unwrap()
            .insert("schema_version", newer.as_bytes())
            .unwrap();
    });
    let raw_state = |path: &Path| {
        let mut state = Vec::new();
        with_raw_sled(path, |db| {
            for tree in ["meta", "jobs"] {
                for entry in db.open_tree(tree).unwrap().iter() {
                    let (key, value) = entry.unwrap();
                    state.push((tree, key.to_vec(), value.to_vec()));
                }
            }
        });
        state
    };
    let before = raw_state(&path);
    for _ in 0..2 {
        match Store::open(&path) {
            Err(StoreError::NewerSchema {
                found, supported, ..
            }) => {
                assert_eq!((found, supported), (SCHEMA_VERSION + 1, SCHEMA_VERSION));
            }
            other => panic!("expected NewerSchema, got {other:?}"),
        }
    }
    assert_eq!(raw_state(&path), before, "nothing was rewritten");
    let message = Store::open(&path).unwrap_err().to_string();
    assert!(message.contains("newer headswap-batch"), "{message}");
}

#[test]
fn a_newer_record_is_refused() {
    let dir = temp_dir();
    let path = dir.path().join("db");
    let store = Store::open(&path).unwrap();
    ingest(&store, TWO_JOBS, false);
    drop(store);
    let newer = SCHEMA_VERSION + 1;
    with_raw_sled(&path, |db| {
        let jobs = db.open_tree("jobs").unwrap();
        // Same shape, newer version; and a shape this version cannot read at all.
        let a = String::from_utf8(jobs.get("a").unwrap().unwrap().to_vec()).unwrap();
        jobs.insert(
            "a",
            a.replacen(
                &format!("{{\"v\":{SCHEMA_VERSION},"),
                &format!("{{\"v\":{newer},"),
                1,
            )
            .as_bytes(),
        )
        .unwrap();
        jobs.insert("b", format!("{{\"v\":{newer},\"job2\":{{}}}}").as_bytes())
            .unwrap();
    });
    let store = Store::open(&path).unwrap();
    for id in ["a", "b"] {
        match store.job(id) {
            Err(StoreError::NewerSchema { found, .. }) => assert_eq!(found, newer),
            other => panic!("{id}: expected NewerSchema, got {other:?}"),
        }
    }
}

#[test]
fn a_version_1_database_reads_and_is_marked_current() {
    let dir = temp_dir();
    let path = dir.path().join("db");
    drop(Store::open(&path).unwrap());
    // A record as version 1 wrote it: every field present, empty ones as null or [].
    let v1 = r#"{"v":1,"job":{"id":"old","line":2,"spec":{"video_url":"https://v/1.mp4","faces":[{"obj_id":null,"face_url":"https://f/1.jpg"}],"resolution":"720p","model_name":"akool-premium","keep_original_sound":true,"template_id":null,"extra":[]},"fingerprint":"f","state":"rendering","mappings":[{"obj_id":0,"img_url":"https://f/1.jpg"}],"subjects":[],"analysis_id":"an-1","task_id":"task-1","output_url":null,"output":null,"attempts":2,"last_error":null,"possible_duplicate":true,"render_failed":false,"times":{"created_ms":1,"updated_ms":2,"submitted_ms":3,"rendered_ms":null,"finished_ms":null}}}"#;
    with_raw_sled(&path, |db| {
        db.open_tree("meta")
            .unwrap()
            .insert("schema_version", "1")
            .unwrap();
        db.open_tree("jobs").unwrap().insert("old", v1).unwrap();
    });
    let store = Store::open(&path).unwrap();
    let job = store
        .job("old")
        .unwrap()
        .expect("the version 1 record reads");
    assert_eq!(job.state, JobState::Rendering);
    assert_eq!(job.task_id.as_deref(), Some("task-1"));
    assert_eq!(job.spec.faces[0].obj_id, None);
    assert_eq!(job.attempts, 2);
    assert!(job.possible_duplicate);
    assert_eq!(job.times.submitted_ms, Some(3));
    // Written back, the record is the shorter current form, and reads the same.
    store.put_job(&job).unwrap();
    assert_eq!(store.job("old").unwrap().unwrap(), job);
    drop(store);
    with_raw_sled(&path, |db| {
        let meta = db.open_tree("meta").unwrap();
        let version = meta.get("schema_version").unwrap().unwrap();
        assert_eq!(version.as_ref(), SCHEMA_VERSION.to_string().as_bytes());
        let record = db.open_tree("jobs").unwrap().get("old").unwrap().unwrap();
        let text = String::from_utf8(record.to_vec()).unwrap();
        assert!(!text.contains("null"), "{text}");
        assert!(text.len() < v1.len(), "{text}");
    });
}

#[test]
fn a_missing_database_is_not_created_by_open_existing() {
    let dir = temp_dir();
    let path = dir.path().join("nothing-here");
    let error = Store::open_existing(&path).unwrap_err();
    assert!(matches!(error, StoreError::Missing { .. }), "{error:?}");
    assert!(!path.exists());
    let fatal = Fatal::from(error);
    assert!(
        fatal.message.contains("no database at"),
        "{}",
        fatal.message
    );
}

/// Open the database with sled directly (what a future version, or damage, would leave).
fn with_raw_sled(path: &Path, work: impl FnOnce(&sled::Db)) {
    let db = crate::support::open_raw_sled(path);
    work(&db);
    db.flush().unwrap();
}

// ---- killed between transitions ----

/// The writer child's script: the same for parent and child, so the parent knows what every
/// prefix of it looks like.
fn script() -> Vec<(&'static str, Event)> {
    let mut steps = Vec::new();
    let mut rendering = to_rendering();
    let b_first = rendering.remove(0);
    steps.push(("b", b_first));
    for event in to_rendering() {
        steps.push(("a", event));
    }
    steps.push((
        "a",
        Event::Rendered {
            output_url: Some("https://out/a.mp4".to_string()),
        },
    ));
    steps.push((
        "b",
        Event::AttemptFailed {
            error: JobError::new(None, "timeout"),
        },
    ));
    for event in rendering {
        steps.push(("b", event));
    }
    steps.push((
        "a",
        Event::Downloaded {
            output: headswap_batch::job::Output {
                path: "out/a.mp4".to_string(),
                bytes: 1,
                sha256: "00".to_string(),
            },
        },
    ));
    steps
}

/// The jobs after the first `steps` steps of the script, from `initial`.
fn after_steps(initial: &[Job], steps: usize) -> Vec<Job> {
    let mut jobs = initial.to_vec();
    for (index, (id, event)) in script().into_iter().take(steps).enumerate() {
        let job = jobs.iter_mut().find(|job| job.id == id).unwrap();
        job.apply(event, 1_000 + index as u64).unwrap();
    }
    jobs
}

/// Child side: apply the script, flushing after each step; print `flushed N` once step N is
/// durable, write step N+1 without flushing, then wait for the parent's go-ahead.
#[test]
fn child_writer() {
    let Some((role, path)) = child_role() else {
        return;
    };
    assert_eq!(role, "writer");
    let store = Store::open(&path).unwrap();
    let steps = script();
    let mut stdin = std::io::stdin().lines();
    let apply = |index: usize| {
        let (id, event) = steps[index].clone();
        let mut job = store.job(id).unwrap().unwrap();
        job.apply(event, 1_000 + index as u64).unwrap();
        store.put_job(&job).unwrap();
    };
    apply(0);
    for index in 0..steps.len() {
        store.flush().unwrap();
        println!("flushed {index}");
        if index + 1 < steps.len() {
            apply(index + 1);
        }
        println!("wrote {}", index + 1);
        if stdin.next().is_none() {
            return;
        }
    }
}

#[test]
fn killed_between_transitions_keeps_every_flushed_one() {
    let steps = script().len();
    for kill_after in [0, 2, 5, steps - 1] {
        let dir = temp_dir();
        let path = dir.path().join("db");
        let store = Store::open(&path).unwrap();
        ingest(&store, TWO_JOBS, false);
        let initial = all_jobs(&store);
        drop(store);

        let mut child = ChildProcess::spawn("store::child_writer", "writer", &path);
        for index in 0..=kill_after {
            assert_eq!(
                child.next_line_starting("flushed "),
                format!("flushed {index}")
            );
            assert_eq!(
                child.next_line_starting("wrote "),
                format!("wrote {}", index + 1)
            );
            if index < kill_after {
                child.send("go");
            }
        }
        child.kill_hard();

        let store = Store::open(&path).expect("reopen after SIGKILL");
        let found = all_jobs(&store);
        let flushed = after_steps(&initial, kill_after + 1);
        let written = after_steps(&initial, (kill_after + 2).min(steps));
        assert!(
            found == flushed || found == written,
            "after a kill following step {kill_after}: every flushed step is kept and nothing else changed\nfound: {found:#?}\nflushed: {flushed:#?}"
        );
    }
}

/// Child side of the lock tests: hold the database open until stdin closes.
#[test]
fn child_holder() {
    let Some((role, path)) = child_role() else {
        return;
    };
    assert_eq!(role, "holder");
    let _store = Store::open(&path).unwrap();
    println!("holding");
    for _ in std::io::stdin().lines() {}
}

impl ChildProcess {
    /// A child process that holds the database at `path` open, once this returns.
    pub fn spawn_holder(path: &Path) -> ChildProcess {
        let mut child = ChildProcess::spawn("store::child_holder", "holder", path);
        child.next_line_starting("holding");
        child
    }
}

#[test]
fn the_store_can_be_shared_across_tasks() {
    fn shareable<T: Send + Sync + Clone + 'static>(_: &T) {}
    fn sendable<T: Send>(_: T) {}
    let dir = temp_dir();
    let store = Store::open(&dir.path().join("db")).unwrap();
    shareable(&store);
    // The flush future can be awaited inside a spawned task.
    sendable(store.flush_async());
}

#[test]
fn fingerprints_are_the_ones_earlier_versions_stored() {
    // Pinned values: a change here makes every stored job look changed on the next ingest
    // (reported as changed after submission, or with --replace-changed, rendered again).
    let dir = temp_dir();
    let store = Store::open(&dir.path().join("db")).unwrap();
    ingest(&store, TWO_JOBS, false);
    assert_eq!(
        job(&store, "a").fingerprint,
        "fa1de7157030c7603183617d1bc03766"
    );
    // A blank obj_id: stored records leave it out, the fingerprint does not.
    assert_eq!(
        job(&store, "b").fingerprint,
        "21533133c340274219f50296bf27d71f"
    );
}

#[test]
fn a_job_finished_by_an_earlier_version_stays_done_when_the_manifest_grows() {
    let dir = temp_dir();
    let store = Store::open(&dir.path().join("db")).unwrap();
    ingest(&store, TWO_JOBS, false);
    let mut events = to_rendering();
    events.push(Event::Rendered {
        output_url: Some("https://o/b.mp4".into()),
    });
    events.push(Event::Downloaded {
        output: headswap_batch::job::Output {
            path: "output/b.mp4".into(),
            bytes: 1,
            sha256: "00".into(),
        },
    });
    advance(&store, "b", events);
    store.flush().unwrap();
    // A new file (one more row), so the ingest runs; `b`'s row is untouched.
    let grown = format!("{TWO_JOBS}c,https://v/3.mp4,https://f/3.jpg,0,,,s4\n");
    for replace_changed in [false, true] {
        let report = ingest(&store, &grown, replace_changed);
        assert!(report.changed_submitted.is_empty(), "{report:?}");
        assert!(report.replaced.is_empty(), "{report:?}");
        let b = job(&store, "b");
        assert_eq!(b.state, JobState::Done);
        assert_eq!(b.output.as_ref().map(|o| o.bytes), Some(1));
    }
}

#[test]
fn reading_a_version_1_database_leaves_it_version_1() {
    let dir = temp_dir();
    let path = dir.path().join("db");
    {
        let store = Store::open(&path).unwrap();
        ingest(&store, TWO_JOBS, false);
    }
    with_raw_sled(&path, |db| {
        db.open_tree("meta")
            .unwrap()
            .insert("schema_version", "1")
            .unwrap();
    });
    // `status` and `export` only read: a version 1 build can still use the database after.
    headswap_batch::view::status(&path, true).unwrap();
    let export = dir.path().join("export.csv");
    headswap_batch::view::export(&path, Some(&export)).unwrap();
    with_raw_sled(&path, |db| {
        let meta = db.open_tree("meta").unwrap();
        let version = meta.get("schema_version").unwrap().unwrap();
        assert_eq!(version.as_ref(), b"1");
    });
}
