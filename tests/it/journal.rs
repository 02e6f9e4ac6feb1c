//! The journal on disk: damaged lines are skipped and never misread (every byte of the last
//! line, and random truncations, bit flips and garbage anywhere), compaction keeps every fact
//! still needed within a bounded size, and a writer killed with SIGKILL leaves a prefix of
//! what it appended, with everything it synced.

use std::path::{Path, PathBuf};

use headswap_batch::akool::Mapping;
use headswap_batch::job::{Event, Job, Output};
use headswap_batch::journal::{self, Fact, Journal, Replay, read_facts};
use headswap_batch::manifest::{Defaults, parse_bytes};
use headswap_batch::store::Store;
use proptest::prelude::*;
use rand::{Rng, SeedableRng};

use crate::support::{ChildProcess, child_role, temp_dir};

/// A database and its journal written the way the run writes them: every change of a job
/// goes through the store and its facts into the journal; `commit` flushes both.
pub struct History {
    pub store: Store,
    pub journal: Journal,
    pub db: PathBuf,
    now: u64,
}

impl History {
    pub fn open(db: &Path) -> History {
        History {
            store: Store::open(db).unwrap(),
            journal: Journal::open(db).unwrap(),
            db: db.to_path_buf(),
            now: 1_700_000_000_000,
        }
    }

    /// Ingest a manifest's text (header included), as `run` does, and journal the ingest.
    pub fn ingest(&mut self, manifest: &str) {
        let manifest = parse_bytes(Path::new("jobs.csv"), manifest.as_bytes()).unwrap();
        let sha256 = manifest.sha256.clone();
        headswap_batch::ingest::ingest(
            &self.store,
            manifest,
            &Defaults::default(),
            false,
            self.now,
        )
        .unwrap();
        self.journal
            .append(&Fact::ingest(&sha256, &Defaults::default(), self.now));
    }

    pub fn job(&self, id: &str) -> Job {
        self.store.job(id).unwrap().expect("the job exists")
    }

    /// Apply events to a job, write it, and journal what they imply.
    pub fn step(&mut self, id: &str, events: Vec<Event>) {
        for event in events {
            self.now += 1;
            let before = self.job(id);
            let mut job = before.clone();
            job.apply(event, self.now).unwrap();
            self.store.put_job(&job).unwrap();
            for fact in Fact::changes(&before, &job, self.now) {
                self.journal.append(&fact);
            }
        }
    }

    /// A video's analysis id arrived.
    pub fn analysis(&mut self, video_url: &str, analysis_id: &str) {
        self.now += 1;
        let mut record = headswap_batch::job::AnalysisRecord::new(video_url.into(), self.now);
        record.state = headswap_batch::job::AnalysisState::Running;
        record.analysis_id = Some(analysis_id.into());
        self.store.put_analysis(&record).unwrap();
        self.journal
            .append(&Fact::analysis(video_url, analysis_id, self.now));
    }

    /// The group commit: the database flush and the journal sync.
    pub fn commit(&mut self) {
        self.store.flush().unwrap();
        self.journal.sync().unwrap();
    }

    /// Flush, sync and close both.
    pub fn close(mut self) -> PathBuf {
        self.commit();
        self.db
    }
}

/// `pending → ready` with the face on subject 0.
pub fn mapped(job: &Job) -> Vec<Event> {
    vec![
        Event::AnalysisStarted { analysis_id: None },
        Event::Mapped {
            mappings: vec![Mapping {
                obj_id: 0,
                img_url: job.spec.faces[0].face_url.clone(),
            }],
        },
    ]
}

/// `ready → rendering` with this task id.
pub fn created(task_id: &str) -> Vec<Event> {
    vec![
        Event::SubmitIntent,
        Event::Created {
            task_id: task_id.into(),
        },
    ]
}

pub fn downloaded(path: &str, bytes: u64, sha256: &str) -> Vec<Event> {
    vec![
        Event::Rendered { output_url: None },
        Event::Downloaded {
            output: Output {
                path: path.into(),
                bytes,
                sha256: sha256.into(),
            },
        },
    ]
}

/// Every fact kind, with strings a manifest may hold (quotes, newlines, non-ASCII), numbered
/// so that no two facts are equal.
fn sample_fact(n: u64) -> Fact {
    let job = format!("job-{n}");
    let url = format!(
        "https://cdn.example/vidéo \"{n}\"\n.mp4?sig={}",
        "x".repeat((n % 97) as usize)
    );
    match n % 8 {
        0 => Fact::analysis(&url, &format!("analysis-{n}"), n),
        1 => Fact::ingest(&format!("{n:064}"), &Defaults::default(), n),
        2 => Fact::Intent(journal::fact::IntentFact {
            job: job.into(),
            ms: n,
            fingerprint: format!("{n:032x}"),
            video_url: url.clone().into(),
            faces: vec![
                (None, url.clone()),
                (Some(3), "https://f.example/ü.jpg".into()),
            ],
            mappings: vec![(0, url), (3, "https://f.example/ü.jpg".into())],
            resolution: headswap_batch::akool::Resolution::P720,
            model_name: "akool-premium".into(),
            keep_original_sound: n % 3 == 0,
            template_id: (n % 5 == 0).then(|| "t".into()),
        }),
        3 => Fact::Task(journal::fact::TaskFact {
            job: job.into(),
            task_id: format!("task-{n}"),
            ms: n,
            fingerprint: format!("{n:032x}"),
            mappings: vec![(1, url)],
        }),
        4 => Fact::Output(journal::fact::OutputFact {
            job: job.into(),
            task_id: format!("task-{n}"),
            path: format!("out/job-{n}.mp4"),
            bytes: n * 1000,
            sha256: format!("{n:064x}"),
            ms: n,
        }),
        5 => Fact::Ambiguous(journal::fact::AmbiguousFact {
            job: job.into(),
            held: n % 3 == 0,
            ms: n,
        }),
        6 => Fact::RenderFailed(journal::fact::RenderFailedFact {
            job: job.into(),
            task_id: format!("task-{n}"),
            code: Some(n as i64),
            message: format!("render failed: {url}"),
            ms: n,
        }),
        _ => Fact::Aborted(journal::fact::JobRef {
            job: job.into(),
            ms: n,
        }),
    }
}

/// A journal written through [`Journal`] with `count` facts, synced in batches of `batch`:
/// its bytes and each line's byte range (newline included) with the fact on it.
fn written_journal(count: u64, batch: u64) -> (Vec<u8>, Vec<(std::ops::Range<usize>, Fact)>) {
    let dir = temp_dir();
    let db = dir.path().join("state.db");
    let mut journal = Journal::open(&db).unwrap();
    for n in 0..count {
        journal.append(&sample_fact(n));
        if (n + 1) % batch == 0 {
            journal.sync().unwrap();
        }
    }
    journal.sync().unwrap();
    let mut bytes = std::fs::read(journal.path()).unwrap();
    // The lines; the zeros after them are room the writer made ahead.
    bytes.truncate(journal.len() as usize);
    let mut lines = Vec::new();
    let mut start = 0;
    for (offset, byte) in bytes.iter().enumerate() {
        if *byte == b'\n' {
            lines.push(start..offset + 1);
            start = offset + 1;
        }
    }
    assert_eq!(start, bytes.len(), "the journal ends with a full line");
    let (facts, stats) = read_facts(&bytes);
    assert_eq!(stats.skipped(), 0);
    assert_eq!(facts.len(), lines.len());
    assert_eq!(facts[1..], (0..count).map(sample_fact).collect::<Vec<_>>());
    (bytes, lines.into_iter().zip(facts).collect())
}

/// After damage to `damaged` (the byte range that changed), replay yields only facts that
/// were written, in order, and every fact whose line — and the newline before it — the
/// damage did not touch.
#[track_caller]
fn check_damage(
    bytes: &[u8],
    lines: &[(std::ops::Range<usize>, Fact)],
    damaged: std::ops::Range<usize>,
) {
    let (facts, stats) = read_facts(bytes);
    let mut read = facts.iter().peekable();
    let mut required_missing = Vec::new();
    for (range, fact) in lines {
        let reach = range.start.saturating_sub(1)..range.end;
        let touched = reach.start < damaged.end && damaged.start < reach.end;
        if read.peek() == Some(&fact) {
            read.next();
        } else if !touched {
            required_missing.push(fact.clone());
        }
    }
    assert!(
        read.next().is_none(),
        "replay yielded a fact that was not written (or out of order); damage at {damaged:?}"
    );
    assert!(
        required_missing.is_empty(),
        "facts untouched by damage at {damaged:?} were not read: {required_missing:?}"
    );
    assert_eq!(
        stats.facts as usize,
        facts.len(),
        "every fact read is counted"
    );
}

#[test]
fn every_byte_of_the_last_line_torn_or_flipped_is_never_misread() {
    let (bytes, lines) = written_journal(40, 7);
    let last = lines.last().unwrap().0.clone();
    for cut in last.start..last.end {
        let torn = &bytes[..cut];
        check_damage(torn, &lines, cut..bytes.len());
        let (facts, stats) = read_facts(torn);
        if cut == last.end - 1 {
            // Only the newline is missing: the line is whole, its checksum says so.
            assert_eq!(facts.len(), lines.len());
        } else {
            assert_eq!(facts.len(), lines.len() - 1, "cut at {cut}");
            assert_eq!(stats.torn_tail, cut > last.start, "cut at {cut}");
        }
        for bit in 0..8 {
            let mut flipped = bytes.clone();
            flipped[cut] ^= 1 << bit;
            check_damage(&flipped, &lines, cut..cut + 1);
            let (facts, _) = read_facts(&flipped);
            assert_eq!(facts.len(), lines.len() - 1, "bit {bit} of byte {cut}");
        }
        for garbage in [0u8, 0xff, b'\n', b' ', b'0'] {
            let mut overwritten = bytes.clone();
            if overwritten[cut] == garbage {
                continue;
            }
            overwritten[cut] = garbage;
            check_damage(&overwritten, &lines, cut..cut + 1);
        }
    }
}

/// How a generated journal is damaged.
#[derive(Debug, Clone)]
enum Damage {
    Truncate {
        at: f64,
    },
    FlipBits {
        at: f64,
        mask: u8,
    },
    Garbage {
        at: f64,
        bytes: Vec<u8>,
    },
    /// What a file system may leave after a power cut: zeros where unsynced data was.
    ZeroTail {
        from: f64,
    },
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (0.0..1.0f64).prop_map(|at| Damage::Truncate { at }),
        (0.0..1.0f64, 1..=255u8).prop_map(|(at, mask)| Damage::FlipBits { at, mask }),
        (0.0..1.0f64, proptest::collection::vec(any::<u8>(), 1..300))
            .prop_map(|(at, bytes)| Damage::Garbage { at, bytes }),
        (0.0..1.0f64).prop_map(|from| Damage::ZeroTail { from }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 96,
        rng_seed: proptest::test_runner::RngSeed::Fixed(20_250_217),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn damage_anywhere_never_yields_a_fact_not_written(
        count in 1u64..60,
        batch in 1u64..20,
        damages in proptest::collection::vec(damage(), 1..3),
    ) {
        let (mut bytes, lines) = written_journal(count, batch);
        let mut first = bytes.len();
        let mut last = 0;
        for damage in damages {
            let position = |at: f64, len: usize| ((at * len as f64) as usize).min(len.saturating_sub(1));
            let range = match damage {
                Damage::Truncate { at } => {
                    let at = position(at, bytes.len());
                    let end = bytes.len();
                    bytes.truncate(at);
                    at..end.max(at + 1)
                }
                Damage::FlipBits { at, mask } => {
                    if bytes.is_empty() { continue; }
                    let at = position(at, bytes.len());
                    bytes[at] ^= mask;
                    at..at + 1
                }
                Damage::Garbage { at, bytes: garbage } => {
                    if bytes.is_empty() { continue; }
                    let at = position(at, bytes.len());
                    let end = (at + garbage.len()).min(bytes.len());
                    bytes[at..end].copy_from_slice(&garbage[..end - at]);
                    at..end
                }
                Damage::ZeroTail { from } => {
                    if bytes.is_empty() { continue; }
                    let at = position(from, bytes.len());
                    let end = bytes.len();
                    bytes[at..].fill(0);
                    at..end
                }
            };
            first = first.min(range.start);
            last = last.max(range.end);
        }
        // The union of the damaged ranges (conservative: one span).
        check_damage(&bytes, &lines, first..last.max(first + 1));
    }
}

/// A manifest of `count` jobs over `count / 4` videos.
pub fn manifest_text(count: usize) -> String {
    let mut text = String::from("id,video_url,face_url,sku\n");
    for n in 0..count {
        text.push_str(&format!(
            "job-{n:04},https://v.example/video-{}.mp4,https://f.example/face-{n}.jpg,SKU-{n}\n",
            n % (count / 4).max(1)
        ));
    }
    text
}

/// What a journal says: its fold, and every job's request read back from its lines.
struct Said {
    replay: Replay,
    details: std::collections::BTreeMap<String, journal::Details>,
}

fn said(journal: &Journal) -> Said {
    let replay = journal.replay().unwrap();
    let details = replay
        .jobs
        .values()
        .map(|facts| (facts.id.clone(), journal.details(facts).unwrap()))
        .collect();
    Said { replay, details }
}

/// Compaction kept what the journal says about every job and video (only where the lines
/// are in the file changed).
#[track_caller]
fn assert_same_said(after: &Said, before: &Said, case: &str) {
    let (after_jobs, before_jobs) = (&after.replay.jobs, &before.replay.jobs);
    assert_eq!(
        after_jobs.keys().collect::<Vec<_>>(),
        before_jobs.keys().collect::<Vec<_>>(),
        "{case}"
    );
    let placeless = |facts: &journal::JobFacts| {
        let mut facts = facts.clone();
        for place in [
            &mut facts.intent_at,
            &mut facts.task_at,
            &mut facts.render_failed_at,
            &mut facts.output_at,
        ] {
            *place = place.map(|_| 0);
        }
        facts
    };
    for (id, facts) in before_jobs {
        assert_eq!(
            placeless(&after_jobs[id]),
            placeless(facts),
            "{case}: job {id}"
        );
    }
    assert_eq!(after.details, before.details, "{case}");
    assert_eq!(after.replay.analyses, before.replay.analyses, "{case}");
    assert_eq!(after.replay.ingest, before.replay.ingest, "{case}");
}

#[test]
fn compaction_keeps_every_fact_still_needed_and_bounds_the_size() {
    let dir = temp_dir();
    let db = dir.path().join("state.db");
    let jobs = 200;
    let mut history = History::open(&db);
    history.ingest(&manifest_text(jobs));
    let mut sizes = Vec::new();
    // Every job is finished; then, round after round, a tenth of them goes through the kind
    // of churn a long life brings (creates refused and retried, answers lost, forgotten
    // tasks, failed renders retried, analyses redone). Compaction must keep the size flat.
    for n in 0..jobs {
        let id = format!("job-{n:04}");
        let job = history.job(&id);
        history.analysis(job.spec.video_url.as_str(), &format!("analysis-{n}"));
        history.step(&id, mapped(&job));
        history.step(&id, created(&format!("task-{n}")));
        history.step(
            &id,
            downloaded(
                &format!("out/{id}.mp4"),
                1000 + n as u64,
                &format!("{n:064x}"),
            ),
        );
    }
    history.commit();
    let finished = said(&history.journal);
    let report = history.journal.compact(&history.store).unwrap();
    assert_eq!(report.jobs_dropped, 0);
    let after_first = history.journal.len();
    assert_same_said(&said(&history.journal), &finished, "finished");

    let churned: Vec<usize> = (0..jobs).step_by(10).collect();
    for round in 0..6 {
        for &n in &churned {
            let id = format!("job-{n:04}");
            // A finished job is replaced by a new row (`--replace-changed`), then rendered
            // with churn on the way.
            let mut job = history.job(&id);
            let mut spec = job.spec.clone();
            spec.faces[0].face_url = format!("https://f.example/face-{n}-round-{round}.jpg");
            let fingerprint = spec.fingerprint();
            history.step(&id, vec![Event::Replace { spec, fingerprint }]);
            job = history.job(&id);
            history.analysis(
                job.spec.video_url.as_str(),
                &format!("analysis-{n}-{round}"),
            );
            history.step(&id, mapped(&job));
            history.step(&id, vec![Event::SubmitIntent, Event::SubmitAborted]);
            history.step(
                &id,
                vec![
                    Event::SubmitIntent,
                    Event::Ambiguous {
                        hold: false,
                        error: None,
                    },
                ],
            );
            history.step(&id, created(&format!("task-{n}-{round}-a")));
            history.step(
                &id,
                vec![Event::RemoteLost {
                    error: headswap_batch::job::JobError::new(Some(1014), "gone"),
                }],
            );
            history.step(&id, created(&format!("task-{n}-{round}-b")));
            history.step(
                &id,
                downloaded(&format!("out/{id}.mp4"), 7, &format!("{round:064x}")),
            );
        }
        history.commit();
        let before = said(&history.journal);
        let grown = history.journal.len();
        let report = history.journal.compact(&history.store).unwrap();
        let after = said(&history.journal);
        assert_same_said(&after, &before, &format!("round {round}"));
        assert_eq!(after.replay.stats.skipped(), 0);
        assert!(report.lines_kept < report.lines_before, "{report:?}");
        sizes.push((grown, history.journal.len()));
    }
    let (_, last) = *sizes.last().unwrap();
    // Churned jobs keep their flag, their latest request, task and output: a little more
    // than a plain finished job, and the same every round.
    assert!(
        last < after_first + after_first / 4,
        "compacted size grows with churn: {after_first} then {sizes:?}"
    );
    assert_eq!(sizes[sizes.len() - 2].1, last, "{sizes:?}");

    // The database itself still agrees with every fact the journal kept.
    let replay = history.journal.replay().unwrap();
    assert!(
        headswap_batch::recover::audit(&history.store, &history.journal, &replay)
            .unwrap()
            .is_empty()
    );
    println!(
        "journal: {} bytes per 1,000 finished jobs after compaction",
        after_first * 1000 / jobs as u64
    );
}

#[test]
fn compaction_drops_a_replaced_row_that_was_never_submitted() {
    let dir = temp_dir();
    let db = dir.path().join("state.db");
    let mut history = History::open(&db);
    history.ingest(&manifest_text(4));
    let job = history.job("job-0001");
    history.step("job-0001", mapped(&job));
    history.step("job-0001", created("task-1"));
    // Replaced (as `--replace-changed` does) and not submitted since.
    let mut spec = job.spec.clone();
    spec.resolution = headswap_batch::akool::Resolution::P480;
    let fingerprint = spec.fingerprint();
    history.step("job-0001", vec![Event::Replace { spec, fingerprint }]);
    let other = history.job("job-0002");
    history.step("job-0002", mapped(&other));
    history.step("job-0002", created("task-2"));
    history.commit();
    let report = history.journal.compact(&history.store).unwrap();
    assert_eq!(report.jobs_dropped, 1);
    let replay = history.journal.replay().unwrap();
    assert!(!replay.jobs.contains_key("job-0001"));
    assert_eq!(replay.jobs["job-0002"].task_id(), Some("task-2"));
    // The compacted journal is appended to as before, under the same lock.
    history.step("job-0002", downloaded("out/job-0002.mp4", 1, "ab"));
    history.commit();
    assert!(matches!(
        Journal::open(&db),
        Err(journal::JournalError::Locked { .. })
    ));
    let replay = history.journal.replay().unwrap();
    assert_eq!(replay.jobs["job-0002"].stage, journal::Stage::Finished);
    assert_eq!(replay.stats.skipped(), 0);
}

#[test]
fn compaction_is_due_only_once_the_journal_outgrows_what_it_keeps() {
    let dir = temp_dir();
    let db = dir.path().join("state.db");
    let mut history = History::open(&db);
    history.ingest(&manifest_text(4));
    history.commit();
    assert!(!history.journal.compaction_due());
    assert!(
        history
            .journal
            .compact_if_due(&history.store)
            .unwrap()
            .is_none()
    );
    for n in 0..20_000 {
        history.analysis("https://v.example/video-0.mp4", &format!("analysis-{n}"));
    }
    history.commit();
    assert!(history.journal.compaction_due());
    let report = history
        .journal
        .compact_if_due(&history.store)
        .unwrap()
        .expect("due");
    assert_eq!(
        report.lines_kept, 2,
        "the last ingest and the last analysis"
    );
    assert!(!history.journal.compaction_due());
    // The base survives a reopen (it is in the header).
    drop(history);
    let journal = Journal::open(&db).unwrap();
    assert!(!journal.compaction_due());
}

/// Set in a writer child: how many bytes beyond the journal's current size it may write
/// (RLIMIT_FSIZE), so that it dies inside a write at an exact, chosen byte.
const FILE_LIMIT_ENV: &str = "HEADSWAP_TEST_JOURNAL_FILE_LIMIT";

/// Child side of the kill loop: append numbered facts in batches of random size, sync after
/// each batch, and report how many facts are durable.
#[test]
fn child_journal_writer() {
    let Some((role, db)) = child_role() else {
        return;
    };
    assert_eq!(role, "journal-writer");
    let mut journal = Journal::open(&db).unwrap();
    let replay = journal.replay().unwrap();
    // Continue the sequence after the facts the file holds.
    let mut next = replay.stats.facts.saturating_sub(1);
    let mut rng = rand::rngs::StdRng::seed_from_u64(next);
    if let Some(extra) = std::env::var_os(FILE_LIMIT_ENV) {
        let extra: u64 = extra.to_str().unwrap().parse().unwrap();
        // The limit counts from where the next line goes (the file has room ahead of it).
        let limit = libc::rlimit {
            rlim_cur: journal.len() + extra,
            rlim_max: libc::RLIM_INFINITY,
        };
        // SAFETY: setrlimit(2) with a valid struct; it only lowers this process's limit.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_FSIZE, &limit) }, 0);
    }
    println!("ready {next}");
    loop {
        let batch = rng.random_range(1..400);
        for _ in 0..batch {
            journal.append(&numbered_fact(next));
            next += 1;
        }
        journal.sync().unwrap();
        println!("synced {next}");
    }
}

/// The n-th fact the writer appends: 150 to 550 bytes, so lines end at varied offsets.
fn numbered_fact(n: u64) -> Fact {
    Fact::analysis(
        &format!(
            "https://v.example/{n}.mp4?{}",
            "p".repeat(100 + (n as usize * 37) % 400)
        ),
        &format!("analysis-{n}"),
        n,
    )
}

/// What replay finds after a writer died: a prefix of the numbered facts, never a misread
/// one; returns how many and whether the last line was torn.
#[track_caller]
fn check_prefix(path: &Path, synced: u64, ended_torn_lines: u64, round: u32) -> (u64, bool) {
    let bytes = std::fs::read(path).unwrap();
    let (facts, stats) = read_facts(&bytes);
    let numbered = &facts[1..];
    for (n, fact) in numbered.iter().enumerate() {
        assert_eq!(
            fact,
            &numbered_fact(n as u64),
            "round {round}: fact {n} misread"
        );
    }
    assert!(
        numbered.len() as u64 >= synced,
        "round {round}: {synced} facts were synced, only {} read",
        numbered.len()
    );
    assert_eq!(
        stats.damaged, ended_torn_lines,
        "round {round}: only torn lines, ended by the next writer, are damaged"
    );
    let last = bytes.iter().rev().find(|byte| **byte != 0);
    assert_eq!(
        stats.torn_tail,
        last.is_some_and(|byte| *byte != b'\n'),
        "round {round}: a partial last line is reported torn, and only then"
    );
    (numbered.len() as u64, stats.torn_tail)
}

#[test]
fn a_writer_killed_at_random_moments_leaves_a_prefix_with_everything_synced() {
    let dir = temp_dir();
    let db = dir.path().join("state.db");
    let path = journal::journal_path(&db);
    let mut rng = rand::rngs::StdRng::seed_from_u64(17);
    let mut torn = 0;
    let mut read = 0;
    for round in 0..16 {
        if round % 2 == 0 {
            // SIGKILL at a random moment after a few syncs.
            let mut child =
                ChildProcess::spawn("journal::child_journal_writer", "journal-writer", &db);
            let mut synced = child.next_line_starting("ready ")["ready ".len()..]
                .parse()
                .unwrap();
            for _ in 0..rng.random_range(1..4) {
                synced = child.next_line_starting("synced ")["synced ".len()..]
                    .parse()
                    .unwrap();
            }
            // The kill moment is the experiment's random variable, not a wait for a result.
            std::thread::sleep(std::time::Duration::from_micros(rng.random_range(0..5_000)));
            child.kill_hard();
            assert!(
                synced >= read,
                "round {round}: the writer went on from the end"
            );
            let (count, was_torn) = check_prefix(&path, synced, torn, round);
            read = count;
            torn += u64::from(was_torn);
        } else {
            // Killed inside a write at a random byte: the file may grow only so far, and the
            // write that crosses the limit ends the process (SIGXFSZ) after a partial write,
            // as a power cut would.
            let limit = rng.random_range(1..60_000u64);
            let output = std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "journal::child_journal_writer",
                    "--exact",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(crate::support::CHILD_ROLE_ENV, "journal-writer")
                .env(crate::support::CHILD_DB_ENV, &db)
                .env(FILE_LIMIT_ENV, limit.to_string())
                .stdin(std::process::Stdio::null())
                .output()
                .unwrap();
            assert!(
                !output.status.success(),
                "the writer died at its file limit"
            );
            let stdout = String::from_utf8_lossy(&output.stdout);
            let synced = stdout
                .lines()
                .rev()
                .find_map(|line| Some(line[line.find("synced ")? + 7..].parse::<u64>().unwrap()))
                .unwrap_or(read);
            let (count, was_torn) = check_prefix(&path, synced, torn, round);
            read = count;
            torn += u64::from(was_torn);
        }
    }
    println!("{torn} of 16 deaths tore the last line");
    assert!(
        torn > 0,
        "no writer died inside a line; the partial-line case was not exercised"
    );
    // After the last death, a writer that opens the journal ends the torn line and appends.
    let mut journal = Journal::open(&db).unwrap();
    journal.append(&numbered_fact(read));
    journal.sync().unwrap();
    let (count, was_torn) = check_prefix(&path, read + 1, torn, 16);
    assert_eq!((count, was_torn), (read + 1, false));
}
