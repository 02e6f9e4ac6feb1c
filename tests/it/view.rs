//! `status` and `export`: from a store, through the real binary, and while another process
//! holds the database (the running process's snapshot file).

use std::path::Path;

use headswap_batch::akool::{Mapping, Subject};
use headswap_batch::job::{Event, Face, Job, JobError, JobSpec, JobState, Output};
use headswap_batch::store::Store;
use headswap_batch::view::{
    MAX_FAILURES_LISTED, MAX_IN_FLIGHT_LISTED, Snapshot, snapshot_path, write_snapshot,
};

use crate::support::{ChildProcess, headswap, stderr, stdout, temp_dir};

fn spec(video: &str, faces: &[(Option<u32>, &str)], extra: &[(&str, &str)]) -> JobSpec {
    JobSpec {
        video_url: video.into(),
        faces: faces
            .iter()
            .map(|(obj_id, url)| Face {
                obj_id: *obj_id,
                face_url: url.to_string(),
            })
            .collect(),
        resolution: headswap_batch::akool::Resolution::P720,
        model_name: "akool-premium".to_string(),
        keep_original_sound: true,
        template_id: None,
        extra: extra
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect(),
    }
}

fn mapped() -> Event {
    Event::Mapped {
        mappings: vec![Mapping {
            obj_id: 1,
            img_url: "https://f/a.jpg".to_string(),
        }],
    }
}

fn job(id: &str, spec: JobSpec, events: Vec<Event>) -> Job {
    let mut job = Job::new(id.into(), 2, spec, 10);
    for event in events {
        job.apply(event, 20).unwrap();
    }
    job
}

/// A store with one job in each interesting situation.
fn sample_jobs() -> Vec<Job> {
    let started = || Event::AnalysisStarted {
        analysis_id: Some("an-1".to_string()),
    };
    vec![
        job(
            "done",
            spec(
                "https://v/1.mp4",
                &[(None, "https://f/a.jpg")],
                &[("sku", "1"), ("title", "One, \"first\"")],
            ),
            vec![
                started(),
                mapped(),
                Event::SubmitIntent,
                Event::Created {
                    task_id: "task-1".to_string(),
                },
                Event::Rendered {
                    output_url: Some("https://out/1.mp4".to_string()),
                },
                Event::Downloaded {
                    output: Output {
                        path: "output/done.mp4".to_string(),
                        bytes: 1234,
                        sha256: "ab".repeat(32),
                    },
                },
            ],
        ),
        job(
            "dup",
            spec(
                "https://v/1.mp4",
                &[(Some(0), "https://f/b.jpg"), (Some(2), "https://f/c.jpg")],
                &[("campaign", "spring")],
            ),
            vec![
                started(),
                mapped(),
                Event::SubmitIntent,
                Event::Ambiguous {
                    hold: false,
                    error: None,
                },
            ],
        ),
        job(
            "failed",
            spec("https://v/2.mp4", &[(None, "https://f/a.jpg")], &[]),
            vec![
                started(),
                Event::Failed {
                    error: JobError::new(Some(1003), "video too long"),
                },
            ],
        ),
        job(
            "mapping",
            spec(
                "https://v/3.mp4",
                &[(None, "https://f/a.jpg")],
                &[("sku", "4")],
            ),
            vec![
                started(),
                Event::NeedsMapping {
                    subjects: vec![
                        Subject {
                            obj_id: 0,
                            img_url: "https://s/0.jpg".to_string(),
                        },
                        Subject {
                            obj_id: 1,
                            img_url: "https://s/1.jpg".to_string(),
                        },
                    ],
                },
            ],
        ),
        job(
            "rendering",
            spec("https://v/1.mp4", &[(None, "https://f/d.jpg")], &[]),
            vec![
                started(),
                mapped(),
                Event::SubmitIntent,
                Event::Created {
                    task_id: "task-9".to_string(),
                },
                Event::AttemptFailed {
                    error: JobError::new(None, "timeout"),
                },
            ],
        ),
        job(
            "waiting",
            spec("https://v/4.mp4", &[(None, "https://f/e.jpg")], &[]),
            vec![],
        ),
    ]
}

fn store_with(path: &Path, jobs: &[Job]) {
    let store = Store::open(path).unwrap();
    for job in jobs {
        store.put_job(job).unwrap();
    }
    store.flush().unwrap();
}

#[test]
fn snapshot_counts_every_state() {
    let jobs = sample_jobs();
    let snapshot = Snapshot::from_jobs(jobs.iter(), 42);
    assert_eq!(snapshot.jobs, 6);
    assert_eq!(snapshot.states.len(), 12, "zeros included");
    let count = |state| snapshot.states[&state];
    assert_eq!(
        [
            count(JobState::Pending),
            count(JobState::Ready),
            count(JobState::Rendering),
            count(JobState::Done),
            count(JobState::Failed),
            count(JobState::NeedsMapping),
            count(JobState::Held),
        ],
        [1, 1, 1, 1, 1, 1, 0]
    );
    let in_flight: Vec<(&str, JobState, Option<&str>, u32)> = snapshot
        .in_flight
        .iter()
        .map(|job| {
            (
                job.id.as_str(),
                job.state,
                job.task_id.as_deref(),
                job.attempts,
            )
        })
        .collect();
    assert_eq!(
        in_flight,
        [("rendering", JobState::Rendering, Some("task-9"), 1)]
    );
    let failures: Vec<(&str, JobState, Option<i64>, &str)> = snapshot
        .failures
        .iter()
        .map(|job| {
            (
                job.id.as_str(),
                job.state,
                job.error_code,
                job.error.as_str(),
            )
        })
        .collect();
    assert_eq!(
        failures,
        [
            ("failed", JobState::Failed, Some(1003), "video too long"),
            (
                "mapping",
                JobState::NeedsMapping,
                None,
                "choose obj_id: 0=https://s/0.jpg|1=https://s/1.jpg"
            ),
        ]
    );
    assert_eq!(
        (
            snapshot.possible_duplicates,
            snapshot.live,
            snapshot.written_ms,
            snapshot.pid
        ),
        (1, false, 42, None)
    );

    // The JSON names every state, and reads back.
    let json = serde_json::to_value(&snapshot).unwrap();
    assert_eq!(json["states"]["needs_mapping"], 1);
    assert_eq!(json["states"]["expired"], 0);
    assert_eq!(json["jobs"], 6);
    let back: Snapshot = serde_json::from_value(json).unwrap();
    assert_eq!(back, snapshot);
}

#[test]
fn snapshot_lists_are_bounded() {
    let jobs: Vec<Job> = (0..300)
        .map(|index| {
            let events = if index % 2 == 0 {
                vec![Event::Failed {
                    error: JobError::new(None, "x"),
                }]
            } else {
                vec![Event::AnalysisStarted { analysis_id: None }]
            };
            job(
                &format!("j{index:03}"),
                spec("https://v/1.mp4", &[(None, "https://f/a.jpg")], &[]),
                events,
            )
        })
        .collect();
    let snapshot = Snapshot::from_jobs(jobs.iter(), 1);
    assert_eq!(
        (snapshot.failures.len(), snapshot.more_failures),
        (MAX_FAILURES_LISTED, 150 - MAX_FAILURES_LISTED)
    );
    assert_eq!(
        (snapshot.in_flight.len(), snapshot.more_in_flight),
        (MAX_IN_FLIGHT_LISTED, 150 - MAX_IN_FLIGHT_LISTED)
    );
    assert_eq!(snapshot.failures[0].id, "j000");
}

#[test]
fn snapshot_file_sits_next_to_the_database() {
    assert_eq!(
        snapshot_path(Path::new("headswap.db")),
        Path::new("headswap.db.view.json")
    );
    assert_eq!(
        snapshot_path(Path::new("/var/lib/x/state")),
        Path::new("/var/lib/x/state.view.json")
    );
    assert_eq!(
        snapshot_path(Path::new("dir/db/")),
        Path::new("dir/db.view.json")
    );

    let dir = temp_dir();
    let db = dir.path().join("headswap.db");
    let mut snapshot = Snapshot::from_jobs(sample_jobs().iter(), 7);
    write_snapshot(&db, &snapshot).unwrap();
    snapshot.jobs = 99;
    write_snapshot(&db, &snapshot).unwrap();
    let read: Snapshot =
        serde_json::from_slice(&std::fs::read(snapshot_path(&db)).unwrap()).unwrap();
    assert_eq!(read, snapshot);
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        ["headswap.db.view.json"],
        "no temporary file left behind"
    );
}

#[test]
fn status_from_the_store() {
    let dir = temp_dir();
    let db = dir.path().join("headswap.db");
    store_with(&db, &sample_jobs());
    let db_arg = db.to_str().unwrap();

    let output = headswap(&["--db", db_arg, "status"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    let expected = format!(
        "{}\n\
         6 jobs\n\
         \x20 pending              1\n\
         \x20 ready                1\n\
         \x20 rendering            1\n\
         \x20 done                 1\n\
         \x20 failed               1\n\
         \x20 needs_mapping        1\n\
         in flight (1):\n\
         \x20 rendering  rendering  task task-9  attempts 1\n\
         needing attention (2):\n\
         \x20 failed  failed  [1003] video too long\n\
         \x20 mapping  needs_mapping  choose obj_id: 0=https://s/0.jpg|1=https://s/1.jpg\n\
         possible duplicates: 1 (a create may have been sent twice; flagged in `export`)\n",
        db.display()
    );
    assert_eq!(text, expected);

    let output = headswap(&["--db", db_arg, "status", "--json"]);
    assert_eq!(output.status.code(), Some(0));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["jobs"], 6);
    assert_eq!(json["states"]["done"], 1);
    assert_eq!(json["states"].as_object().unwrap().len(), 12);
    assert_eq!(json["live"], false);
    assert_eq!(json["possible_duplicates"], 1);
    assert_eq!(json["in_flight"][0]["task_id"], "task-9");
    assert_eq!(json["failures"][0]["error_code"], 1003);
}

#[test]
fn status_and_export_need_an_existing_database() {
    let dir = temp_dir();
    let db = dir.path().join("never-ran.db");
    for command in ["status", "export"] {
        let output = headswap(&["--db", db.to_str().unwrap(), command]);
        assert_eq!(output.status.code(), Some(1), "{command}");
        let message = stderr(&output);
        assert!(
            message.contains(&format!("no database at {}", db.display())),
            "{message}"
        );
        assert!(
            message.contains("hint: run `headswap-batch run MANIFEST` first"),
            "{message}"
        );
        assert!(!db.exists(), "{command} must not create the database");
    }
}

#[test]
fn status_while_another_process_holds_the_database() {
    let dir = temp_dir();
    let db = dir.path().join("headswap.db");
    store_with(&db, &sample_jobs());
    let holder = ChildProcess::spawn_holder(&db);
    let db_arg = db.to_str().unwrap();

    // The holder has not written a view yet.
    let output = headswap(&["--db", db_arg, "status"]);
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(
        message.contains("is in use by a running headswap-batch process"),
        "{message}"
    );
    assert!(
        message.contains("not written a status view yet"),
        "{message}"
    );

    // Once it has, status shows it.
    let mut snapshot = Snapshot::from_jobs(sample_jobs().iter(), now_ms() - 3_000);
    snapshot.pid = Some(holder.pid());
    write_snapshot(&db, &snapshot).unwrap();
    let output = headswap(&["--db", db_arg, "status", "--json"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let live: Snapshot = serde_json::from_slice(&output.stdout).unwrap();
    assert!(live.live);
    assert_eq!(live.pid, Some(holder.pid()));
    assert_eq!(
        Snapshot {
            live: false,
            ..live
        },
        snapshot
    );

    let output = headswap(&["--db", db_arg, "status"]);
    assert_eq!(output.status.code(), Some(0));
    let text = stdout(&output);
    let first_line = text.lines().next().unwrap();
    assert!(
        first_line.starts_with(&format!(
            "{}: live view from the running process (pid {}), written ",
            db.display(),
            holder.pid()
        )),
        "{first_line}"
    );
    assert!(first_line.ends_with(" ago"), "{first_line}");
    assert!(text.contains("\n6 jobs\n"), "{text}");

    // export needs the database itself.
    let output = headswap(&["--db", db_arg, "export"]);
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(
        message.contains("is in use by another headswap-batch process"),
        "{message}"
    );
    assert!(message.contains("`headswap-batch status`"), "{message}");

    holder.finish();
}

#[test]
fn export_writes_one_row_per_job() {
    let dir = temp_dir();
    let db = dir.path().join("headswap.db");
    store_with(&db, &sample_jobs());
    let db_arg = db.to_str().unwrap();

    let output = headswap(&["--db", db_arg, "export"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    let sha = "ab".repeat(32);
    let expected = format!(
        "id,state,video_url,mappings,analysis_id,task_id,output,bytes,sha256,error_code,error,attempts,flags,creates,sku,title,campaign\n\
         done,done,https://v/1.mp4,1=https://f/a.jpg,an-1,task-1,output/done.mp4,1234,{sha},,,0,,1,1,\"One, \"\"first\"\"\",\n\
         dup,ready,https://v/1.mp4,1=https://f/a.jpg,an-1,,,,,,,0,possible_duplicate,1,,,spring\n\
         failed,failed,https://v/2.mp4,?=https://f/a.jpg,an-1,,,,,1003,video too long,0,,0,,,\n\
         mapping,needs_mapping,https://v/3.mp4,?=https://f/a.jpg,an-1,,,,,,choose obj_id: 0=https://s/0.jpg|1=https://s/1.jpg,0,,0,4,,\n\
         rendering,rendering,https://v/1.mp4,1=https://f/a.jpg,an-1,task-9,,,,,timeout,1,,1,,,\n\
         waiting,pending,https://v/4.mp4,?=https://f/e.jpg,,,,,,,,0,,0,,,\n"
    );
    assert_eq!(text, expected);

    // Faces of a job not yet mapped show their obj_ids.
    let mut unmapped = sample_jobs();
    unmapped.retain(|job| job.id == "dup");
    unmapped[0].mappings.clear();
    assert_eq!(
        headswap_batch::view::mappings_text(&unmapped[0]),
        "0=https://f/b.jpg|2=https://f/c.jpg"
    );

    // --out writes the same bytes to a file, atomically.
    let out = dir.path().join("results.csv");
    std::fs::write(&out, "old").unwrap();
    let output = headswap(&["--db", db_arg, "export", "--out", out.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(stdout(&output), "");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), expected);
    let leftovers: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn export_of_a_damaged_database_fails_cleanly() {
    let dir = temp_dir();
    let db = dir.path().join("headswap.db");
    store_with(&db, &sample_jobs());
    std::fs::write(db.join("db"), vec![0x5a; 8192]).unwrap();
    for command in ["export", "status"] {
        let output = headswap(&["--db", db.to_str().unwrap(), command]);
        assert_eq!(output.status.code(), Some(1), "{command}");
        let message = stderr(&output);
        assert!(message.contains("is damaged"), "{message}");
        assert!(!message.contains("panicked"), "{message}");
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}
