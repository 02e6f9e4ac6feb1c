//! `recover` on databases damaged the ways sled's reports describe — random bytes over the
//! log, a truncated log, a deleted or half-written snapshot, an emptied or deleted folder —
//! built for real (written through the store, flushed, closed, reopened so sled writes a
//! snapshot, written again, closed, then damaged on disk). Every case must end in a database
//! where every journalled task id is re-attached and every verified file kept; a healthy
//! database is refused and left as it was.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use headswap_batch::job::{Event, JobError, JobState};
use headswap_batch::journal::{self, Journal};
use headswap_batch::recover::{self, RecoverError, RecoverOptions, RecoverReport};
use headswap_batch::store::Store;
use sha2::{Digest, Sha256};

use crate::journal::{History, created, downloaded, manifest_text, mapped};
use crate::support::temp_dir;

/// How many jobs the batch has: 13 kinds of life, several of each.
const JOBS: usize = 52;

/// What a job went through before the damage, by `n % 13`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Life {
    /// Never touched.
    Fresh,
    /// Analysed and mapped, never submitted.
    Ready,
    /// Intent written, create on the wire.
    Submitting,
    Rendering,
    /// Rendered, download under way (no journal fact for it: polled again).
    Downloading,
    /// Done, file intact.
    Done,
    /// Done, file deleted since.
    DoneFileGone,
    /// Done, file changed since.
    DoneFileChanged,
    /// Answer lost once, submitted again, rendering.
    FlaggedRendering,
    /// Answer lost with `--on-ambiguous hold`.
    Held,
    RenderFailed,
    /// Task forgotten by the service, submitted again: intent on the wire.
    LostThenSubmitting,
    /// Create refused before it ran (throttled): nothing paid.
    Aborted,
}

const LIVES: [Life; 13] = [
    Life::Fresh,
    Life::Ready,
    Life::Submitting,
    Life::Rendering,
    Life::Downloading,
    Life::Done,
    Life::DoneFileGone,
    Life::DoneFileChanged,
    Life::FlaggedRendering,
    Life::Held,
    Life::RenderFailed,
    Life::LostThenSubmitting,
    Life::Aborted,
];

fn id(n: usize) -> String {
    format!("job-{n:04}")
}

fn life(n: usize) -> Life {
    LIVES[n % LIVES.len()]
}

/// A batch in a temporary folder: manifest, database, journal, output files.
struct Scene {
    dir: tempfile::TempDir,
}

impl Scene {
    fn manifest(&self) -> PathBuf {
        self.dir.path().join("jobs.csv")
    }
    fn db(&self) -> PathBuf {
        self.dir.path().join("state.db")
    }
    fn out(&self, n: usize) -> PathBuf {
        self.dir.path().join("out").join(format!("{}.mp4", id(n)))
    }
}

/// Take every job through its life, half before sled's snapshot and half after.
fn scene() -> Scene {
    let scene = Scene { dir: temp_dir() };
    let text = manifest_text(JOBS);
    std::fs::write(scene.manifest(), &text).unwrap();
    std::fs::create_dir_all(scene.dir.path().join("out")).unwrap();
    let mut history = History::open(&scene.db());
    history.ingest(&text);
    history.commit();
    for n in 0..JOBS / 2 {
        live(&scene, &mut history, n);
    }
    drop(history.close());
    // Reopening makes sled write a snapshot; the second half lands after it.
    let mut history = History::open(&scene.db());
    for n in JOBS / 2..JOBS {
        live(&scene, &mut history, n);
    }
    drop(history.close());
    scene
}

fn live(scene: &Scene, history: &mut History, n: usize) {
    let id = id(n);
    let job = history.job(&id);
    let lost = || JobError::new(None, "create answer lost");
    if life(n) != Life::Fresh {
        history.analysis(job.spec.video_url.as_str(), &format!("analysis-{n}"));
        history.step(&id, mapped(&job));
    }
    let task = format!("task-{n}");
    match life(n) {
        Life::Fresh | Life::Ready => {}
        Life::Submitting => history.step(&id, vec![Event::SubmitIntent]),
        Life::Rendering => history.step(&id, created(&task)),
        Life::Downloading => {
            history.step(&id, created(&task));
            history.step(
                &id,
                vec![Event::Rendered {
                    output_url: Some("https://files.example/out.mp4?sig=1".into()),
                }],
            );
        }
        Life::Done | Life::DoneFileGone | Life::DoneFileChanged => {
            history.step(&id, created(&task));
            let content = format!("rendered video of {id}").repeat(100);
            std::fs::write(scene.out(n), &content).unwrap();
            let sha256 = headswap_batch::job::hex(&Sha256::digest(content.as_bytes()));
            let path = scene.out(n).display().to_string();
            history.step(&id, downloaded(&path, content.len() as u64, &sha256));
            match life(n) {
                Life::DoneFileGone => std::fs::remove_file(scene.out(n)).unwrap(),
                Life::DoneFileChanged => {
                    std::fs::write(scene.out(n), content.replace("video", "VIDEO")).unwrap()
                }
                _ => {}
            }
        }
        Life::FlaggedRendering => {
            history.step(
                &id,
                vec![
                    Event::SubmitIntent,
                    Event::Ambiguous {
                        hold: false,
                        error: None,
                    },
                    Event::AttemptFailed { error: lost() },
                ],
            );
            history.step(&id, created(&task));
        }
        Life::Held => history.step(
            &id,
            vec![
                Event::SubmitIntent,
                Event::Ambiguous {
                    hold: true,
                    error: None,
                },
            ],
        ),
        Life::RenderFailed => {
            history.step(&id, created(&task));
            let error = JobError::new(Some(1007), "the face could not be used");
            history.step(&id, vec![Event::RenderFailed { error }]);
        }
        Life::LostThenSubmitting => {
            history.step(&id, created(&format!("task-{n}-old")));
            let error = JobError::new(Some(1014), "task not found");
            history.step(&id, vec![Event::RemoteLost { error }, Event::SubmitIntent]);
        }
        Life::Aborted => history.step(&id, vec![Event::SubmitIntent, Event::SubmitAborted]),
    }
    history.commit();
}

/// Every job of the recovered database is where its journalled facts put it.
#[track_caller]
fn assert_recovered(scene: &Scene, report: &RecoverReport, case: &str) {
    let store = Store::open_existing(&scene.db()).unwrap();
    let jobs: BTreeMap<String, headswap_batch::job::Job> = store
        .jobs()
        .map(|job| job.map(|job| (job.id.to_string(), job)))
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(jobs.len(), JOBS, "{case}: every manifest job is there");
    for n in 0..JOBS {
        let job = &jobs[&id(n)];
        let task = format!("task-{n}");
        let what = format!("{case}: {} ({:?}): {job:?}", id(n), life(n));
        assert_eq!(
            job.spec.extra,
            [("sku".to_string(), format!("SKU-{n}"))],
            "{what}"
        );
        let expected = match life(n) {
            Life::Fresh | Life::Ready | Life::Aborted => (JobState::Pending, None, false),
            Life::Submitting | Life::LostThenSubmitting => (JobState::Submitting, None, false),
            Life::Rendering | Life::Downloading => (JobState::Rendering, Some(task), false),
            Life::FlaggedRendering => (JobState::Rendering, Some(task), true),
            Life::Done => (JobState::Done, Some(task), false),
            Life::DoneFileGone | Life::DoneFileChanged => {
                (JobState::Downloading, Some(task), false)
            }
            Life::Held => (JobState::Held, None, true),
            Life::RenderFailed => (JobState::Failed, Some(task), false),
        };
        assert_eq!(
            (job.state, job.task_id.clone(), job.possible_duplicate),
            expected,
            "{what}"
        );
        match life(n) {
            Life::Done => {
                let output = job.output.as_ref().expect("done has its output");
                assert_eq!(output.path, scene.out(n).display().to_string(), "{what}");
                assert!(scene.out(n).is_file(), "{what}: the file is kept");
            }
            Life::DoneFileGone | Life::DoneFileChanged => {
                assert_eq!(job.output_url, None, "{what}: a fresh link is asked for");
            }
            Life::RenderFailed => assert!(job.render_failed, "{what}"),
            _ => {}
        }
    }
    let per_kind = JOBS / LIVES.len();
    let rebuilt = &report.rebuilt;
    assert_eq!(rebuilt.reattached, 3 * per_kind, "{case}: {report:?}");
    assert_eq!(rebuilt.done_verified, per_kind, "{case}");
    assert_eq!(rebuilt.redownload, 2 * per_kind, "{case}");
    assert_eq!(rebuilt.ambiguous, 2 * per_kind, "{case}");
    assert_eq!(rebuilt.flagged, per_kind, "{case}");
    assert_eq!(rebuilt.render_failed, per_kind, "{case}");
    assert!(rebuilt.orphaned.is_empty(), "{case}");
    assert_eq!(report.fresh, 3 * per_kind, "{case}");
    // The videos of the fresh, ready and aborted jobs were analysed: polled, not redone.
    assert!(report.analyses_reattached > 0, "{case}");
    let analyses: Vec<_> = store.analyses().collect::<Result<_, _>>().unwrap();
    assert!(
        analyses.iter().all(|record| record.analysis_id.is_some()),
        "{case}"
    );
    let journal = Journal::open(&scene.db()).unwrap();
    let replay = journal.replay().unwrap();
    assert!(
        recover::audit(&store, &journal, &replay)
            .unwrap()
            .is_empty(),
        "{case}: the rebuilt database holds every journalled fact"
    );
}

/// SHA-256 of every file under a folder, by relative path.
fn fingerprint_folder(folder: &Path) -> BTreeMap<PathBuf, String> {
    let mut files = BTreeMap::new();
    let mut stack = vec![folder.to_path_buf()];
    while let Some(current) = stack.pop() {
        for entry in std::fs::read_dir(&current).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let digest = Sha256::digest(std::fs::read(&path).unwrap());
                files.insert(
                    path.strip_prefix(folder).unwrap().to_path_buf(),
                    headswap_batch::job::hex(&digest),
                );
            }
        }
    }
    files
}

fn snapshots(db: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(db)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("snap.")
        })
        .collect()
}

/// Bytes that are not a database: a fixed pseudo-random sequence.
pub(crate) fn garbage(len: usize, seed: u64) -> Vec<u8> {
    use rand::{RngCore, SeedableRng};
    let mut bytes = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut bytes);
    bytes
}

pub(crate) fn write_at(file: &Path, offset: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let handle = std::fs::OpenOptions::new().write(true).open(file).unwrap();
    handle.write_at(bytes, offset).unwrap();
    handle.sync_all().unwrap();
}

pub(crate) fn truncate(file: &Path, len: u64) {
    let handle = std::fs::OpenOptions::new().write(true).open(file).unwrap();
    handle.set_len(len).unwrap();
}

/// Remove everything in a database folder, leaving the folder.
pub(crate) fn empty_folder(db: &Path) {
    for entry in std::fs::read_dir(db).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            std::fs::remove_dir_all(path).unwrap();
        } else {
            std::fs::remove_file(path).unwrap();
        }
    }
}

/// Damage the database, recover, and check the result.
fn damage_and_recover(case: &str, damage: impl FnOnce(&Path)) {
    let scene = scene();
    let db = scene.db();
    assert!(!snapshots(&db).is_empty(), "sled wrote a snapshot");
    damage(&db);
    let damaged = db.exists().then(|| fingerprint_folder(&db));
    let report = recover::recover(&scene.manifest(), &db, &RecoverOptions::default())
        .unwrap_or_else(|error| panic!("{case}: {error}"));
    assert!(!report.damage.is_empty(), "{case}: the damage is named");
    match (&damaged, &report.moved_to) {
        (Some(damaged), Some(aside)) => {
            assert!(
                aside
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("state.db.damaged-"),
                "{case}: {aside:?}"
            );
            assert_eq!(
                &fingerprint_folder(aside),
                damaged,
                "{case}: the damaged database is kept exactly as it was"
            );
        }
        (None, None) => {}
        other => panic!("{case}: {other:?}"),
    }
    println!("{case}: {}", report.damage);
    assert_recovered(&scene, &report, case);
    // No working folder of recovery is left behind.
    let leftovers: Vec<_> = std::fs::read_dir(scene.dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains(".recover"))
        .collect();
    assert!(leftovers.is_empty(), "{case}: {leftovers:?}");
}

#[test]
fn random_bytes_over_the_whole_log() {
    damage_and_recover("random bytes over the log", |db| {
        let log = db.join("db");
        let len = std::fs::metadata(&log).unwrap().len() as usize;
        std::fs::write(&log, garbage(len, 1)).unwrap();
    });
}

#[test]
fn random_bytes_in_the_middle_of_the_log() {
    damage_and_recover("random bytes in the middle of the log", |db| {
        let log = db.join("db");
        let len = std::fs::metadata(&log).unwrap().len();
        write_at(&log, len / 2, &garbage(4096, 2));
    });
}

#[test]
fn a_truncated_log() {
    damage_and_recover("a truncated log", |db| {
        let log = db.join("db");
        truncate(&log, std::fs::metadata(&log).unwrap().len() / 2);
    });
}

#[test]
fn zeros_over_the_end_of_the_log() {
    // What a file system can leave after a power cut where unsynced data was.
    damage_and_recover("zeros over the end of the log", |db| {
        let log = db.join("db");
        let len = std::fs::metadata(&log).unwrap().len();
        write_at(&log, len / 3, &vec![0; (len - len / 3) as usize]);
    });
}

#[test]
fn a_half_written_snapshot() {
    damage_and_recover("a half-written snapshot", |db| {
        for snapshot in snapshots(db) {
            truncate(&snapshot, std::fs::metadata(&snapshot).unwrap().len() / 2);
        }
    });
}

#[test]
fn an_emptied_database_folder() {
    damage_and_recover("an emptied database folder", empty_folder);
}

#[test]
fn a_deleted_database_folder() {
    damage_and_recover("a deleted database folder", |db| {
        std::fs::remove_dir_all(db).unwrap();
    });
}

#[test]
fn a_deleted_snapshot_loses_nothing_and_is_refused() {
    // sled rebuilds its state from the log alone: the database opens with every record, so
    // there is nothing to recover and `recover` leaves it alone.
    let scene = scene();
    let db = scene.db();
    for snapshot in snapshots(&db) {
        std::fs::remove_file(snapshot).unwrap();
    }
    let before = fingerprint_folder(&db);
    let error = recover::recover(&scene.manifest(), &db, &RecoverOptions::default())
        .expect_err("nothing to recover");
    assert!(matches!(error, RecoverError::Clean { .. }), "{error}");
    assert_eq!(fingerprint_folder(&db), before, "left exactly as it was");
    let store = Store::open_existing(&db).unwrap();
    let journal = Journal::open(&db).unwrap();
    let replay = journal.replay().unwrap();
    assert!(
        recover::audit(&store, &journal, &replay)
            .unwrap()
            .is_empty()
    );
    for n in 0..JOBS {
        let job = store.job(&id(n)).unwrap().unwrap();
        if let Some(task_id) = replay.jobs.get(&id(n)).and_then(|facts| facts.task_id()) {
            assert_eq!(job.task_id.as_deref(), Some(task_id));
        }
    }
}

#[test]
fn a_healthy_database_is_refused_and_untouched() {
    let scene = scene();
    let db = scene.db();
    let before = fingerprint_folder(&db);
    let journal_before = std::fs::read(journal::journal_path(&db)).unwrap();
    let error = recover::recover(&scene.manifest(), &db, &RecoverOptions::default())
        .expect_err("a healthy database is refused");
    assert!(matches!(error, RecoverError::Clean { .. }), "{error}");
    let fatal = recover::fatal(error, &db, &scene.manifest()).to_string();
    assert!(fatal.contains("nothing to recover"), "{fatal}");
    assert_eq!(fingerprint_folder(&db), before);
    assert_eq!(
        std::fs::read(journal::journal_path(&db)).unwrap(),
        journal_before
    );
    let siblings = std::fs::read_dir(scene.dir.path()).unwrap().count();
    assert_eq!(
        siblings, 4,
        "manifest, database, journal, out: nothing added"
    );
}

#[test]
fn a_database_in_use_is_refused() {
    let scene = scene();
    let db = scene.db();
    let store = Store::open(&db).unwrap();
    let error =
        recover::recover(&scene.manifest(), &db, &RecoverOptions::default()).expect_err("in use");
    assert!(matches!(error, RecoverError::InUse { .. }), "{error}");
    drop(store);
    // A run holds the journal too.
    let _journal = Journal::open(&db).unwrap();
    let error =
        recover::recover(&scene.manifest(), &db, &RecoverOptions::default()).expect_err("in use");
    assert!(matches!(error, RecoverError::InUse { .. }), "{error}");
}

#[test]
fn without_a_journal_or_a_usable_manifest_nothing_is_touched() {
    let scene = scene();
    let db = scene.db();
    std::fs::write(db.join("db"), garbage(4096, 3)).unwrap();
    let before = fingerprint_folder(&db);
    std::fs::write(scene.manifest(), "not,a\nmanifest").unwrap();
    let error = recover::recover(&scene.manifest(), &db, &RecoverOptions::default())
        .expect_err("the manifest is refused");
    assert!(matches!(error, RecoverError::Manifest(_)), "{error}");
    std::fs::remove_file(journal::journal_path(&db)).unwrap();
    let error = recover::recover(&scene.manifest(), &db, &RecoverOptions::default())
        .expect_err("no journal");
    assert!(matches!(error, RecoverError::NoJournal { .. }), "{error}");
    assert_eq!(fingerprint_folder(&db), before);
}

#[test]
fn a_database_that_silently_lost_records_is_healed_in_place() {
    // Without a snapshot, sled drops everything after garbage in its log and opens cleanly
    // with the rest: only the journal can tell.
    let scene = Scene { dir: temp_dir() };
    let text = manifest_text(JOBS);
    std::fs::write(scene.manifest(), &text).unwrap();
    std::fs::create_dir_all(scene.dir.path().join("out")).unwrap();
    let mut history = History::open(&scene.db());
    history.ingest(&text);
    for n in 0..JOBS {
        live(&scene, &mut history, n);
    }
    drop(history.close());
    let db = scene.db();
    assert!(snapshots(&db).is_empty());
    let log = db.join("db");
    let len = std::fs::metadata(&log).unwrap().len();
    write_at(&log, len / 2, &garbage(4096, 4));

    // What a run would do at start: open both, replay, heal.
    let store = Store::open_existing(&db).expect("sled opens it as if nothing happened");
    let journal = Journal::open(&db).unwrap();
    let replay = journal.replay().unwrap();
    let missing = recover::audit(&store, &journal, &replay).unwrap();
    assert!(!missing.is_empty(), "the lost records are noticed");
    let healed = recover::heal(&store, &journal, &replay).unwrap();
    store.flush().unwrap();
    assert_eq!(healed.jobs(), missing.len(), "{healed:?}");
    assert!(
        recover::audit(&store, &journal, &replay)
            .unwrap()
            .is_empty()
    );
    for (id, facts) in &replay.jobs {
        if let Some(task_id) = facts.task_id() {
            let job = store.job(id).unwrap().expect("healed back");
            assert_eq!(job.task_id.as_deref(), Some(task_id), "{id}");
        }
    }
}

#[test]
fn a_run_is_pointed_at_recover() {
    let scene = scene();
    let db = scene.db();
    // A database folder deleted under a journal with paid work: starting over is refused.
    std::fs::rename(&db, scene.dir.path().join("elsewhere")).unwrap();
    let error = recover::check_fresh_database(&db).expect_err("paid work in the journal");
    let fatal = recover::fatal(error, &db, &scene.manifest()).to_string();
    assert!(fatal.contains("recover"), "{fatal}");
    assert!(
        fatal.contains(&scene.manifest().display().to_string()),
        "{fatal}"
    );
    // A journal with nothing paid in it is no reason to refuse.
    let other = temp_dir();
    let fresh = other.path().join("fresh.db");
    let mut journal = Journal::open(&fresh).unwrap();
    journal.sync().unwrap();
    drop(journal);
    recover::check_fresh_database(&fresh).unwrap();
    // A damaged database's error names the command that rebuilds it.
    let damaged = headswap_batch::store::StoreError::Damaged {
        path: db.clone(),
        cause: "Read corrupted data".into(),
    };
    let fatal = recover::damaged_database(damaged, &db, &scene.manifest()).to_string();
    assert!(
        fatal.contains(&format!(
            "headswap-batch recover {} --db {}",
            scene.manifest().display(),
            db.display()
        )),
        "{fatal}"
    );
}

#[test]
fn recovering_twice_builds_the_same_database() {
    let scene = scene();
    let db = scene.db();
    std::fs::write(db.join("db"), garbage(8192, 5)).unwrap();
    let first = recover::recover(&scene.manifest(), &db, &RecoverOptions::default()).unwrap();
    // The rebuilt database is healthy: recovering it again is refused...
    assert!(matches!(
        recover::recover(&scene.manifest(), &db, &RecoverOptions::default()),
        Err(RecoverError::Clean { .. })
    ));
    // ...and after damaging it too, the same jobs come back.
    std::fs::remove_dir_all(&db).unwrap();
    let second = recover::recover(&scene.manifest(), &db, &RecoverOptions::default()).unwrap();
    assert_eq!(first.rebuilt, second.rebuilt);
    assert_recovered(&scene, &second, "recovered twice");
}
