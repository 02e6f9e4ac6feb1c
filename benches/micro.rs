//! Micro benchmarks (criterion): manifest rows parsed per second, job transitions written to
//! the store per second, and the journal's cost: one group commit's append + sync, and the
//! replay + audit a run would do at start.

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use headswap_batch::akool::Mapping;
use headswap_batch::job::{Event, Job, JobSpec, Output};
use headswap_batch::journal::{Fact, Journal};
use headswap_batch::manifest;
use headswap_batch::store::Store;

const ROWS: usize = 10_000;

fn manifest_bytes(rows: usize) -> Vec<u8> {
    let mut text = String::from("id,video_url,face_url,obj_id,resolution,sku,campaign\n");
    for row in 0..rows {
        let video = row % 1000;
        text.push_str(&format!(
            "job-{row:06},https://cdn.example.com/videos/v{video:04}.mp4?duration=12,https://cdn.example.com/faces/f{row:06}.jpg,,720p,SKU-{row},\"spring, {video}\"\n"
        ));
    }
    text.into_bytes()
}

fn manifest_rows(c: &mut Criterion) {
    let bytes = manifest_bytes(ROWS);
    let mut group = c.benchmark_group("manifest");
    group.throughput(Throughput::Elements(ROWS as u64));
    group.bench_function("parse_and_validate_10k_rows", |b| {
        b.iter(|| {
            let parsed =
                manifest::parse_bytes(Path::new("jobs.csv"), black_box(&bytes)).expect("parses");
            assert_eq!(parsed.jobs.len(), ROWS);
            parsed
        })
    });
    group.finish();
}

fn job(id: usize) -> Job {
    let spec = JobSpec {
        video_url: "https://cdn.example.com/videos/v0001.mp4".into(),
        faces: vec![headswap_batch::job::Face {
            obj_id: None,
            face_url: format!("https://cdn.example.com/faces/f{id:06}.jpg"),
        }],
        resolution: headswap_batch::akool::Resolution::P720,
        model_name: "akool-premium".into(),
        keep_original_sound: true,
        template_id: None,
        extra: vec![("sku".into(), format!("SKU-{id}"))],
    };
    Job::new(format!("job-{id:06}").into(), id as u64 + 2, spec, 1)
}

/// The six transitions of a job's successful life, each written to the store (not flushed:
/// flushes are grouped by the dispatcher and measured end to end in the system bench).
fn store_transitions(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(&dir.path().join("db")).expect("store");
    let mut next = 0usize;
    let mut group = c.benchmark_group("store");
    group.throughput(Throughput::Elements(6));
    group.bench_function("job_life_6_transitions_put", |b| {
        b.iter(|| {
            next += 1;
            let mut job = job(next);
            let events = successful_life(
                &job,
                format!("task-{next}"),
                format!("out/job-{next:06}.mp4"),
                "0".repeat(64),
            );
            for event in events {
                job.apply(event, 2).expect("legal");
                store.put_job(&job).expect("put");
            }
        })
    });
    group.finish();
}

/// The events of a job's successful life, from its analysis to its file.
fn successful_life(job: &Job, task_id: String, path: String, sha256: String) -> [Event; 6] {
    [
        Event::AnalysisStarted {
            analysis_id: Some("analysis-1".into()),
        },
        Event::Mapped {
            mappings: vec![Mapping {
                obj_id: 0,
                img_url: job.spec.faces[0].face_url.clone(),
            }],
        },
        Event::SubmitIntent,
        Event::Created { task_id },
        Event::Rendered {
            output_url: Some("https://files.example.com/out.mp4?sig=x".into()),
        },
        Event::Downloaded {
            output: Output {
                path,
                bytes: 262_144,
                sha256,
            },
        },
    ]
}

/// The facts of one job's successful life, as the run journals them (intent, task, output),
/// and the job in `done`.
fn journalled_life(id: usize) -> (Job, Vec<Fact>) {
    let mut job = job(id);
    let mut facts = Vec::new();
    let events = successful_life(
        &job,
        format!("{id:024x}"),
        format!("output/job-{id:06}.mp4"),
        format!("{id:064x}"),
    );
    for event in events {
        let before = job.clone();
        job.apply(event, 1_700_000_000_000).expect("legal");
        facts.extend(Fact::changes(&before, &job, 1_700_000_000_000));
    }
    (job, facts)
}

/// One group commit's journal work: append the facts that turn produced, write, fdatasync.
/// The dispatcher runs it beside the store's flush (`tokio::join!`), so what it adds to a
/// turn is the longer of the two fsyncs, not their sum.
fn journal_commit(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut journal = Journal::open(&dir.path().join("db")).expect("journal");
    let (_, facts) = journalled_life(1);
    let mut group = c.benchmark_group("journal");
    for per_commit in [1usize, 64] {
        group.throughput(Throughput::Elements(per_commit as u64));
        group.bench_function(format!("append_and_sync_{per_commit}_facts"), |b| {
            b.iter(|| {
                for n in 0..per_commit {
                    journal.append(&facts[n % facts.len()]);
                }
                journal.sync().expect("sync")
            })
        });
    }
    // For comparison: the store's flush after as many record writes.
    let store = Store::open(&dir.path().join("store")).expect("store");
    let (done, _) = journalled_life(2);
    group.throughput(Throughput::Elements(64));
    group.bench_function("store_put_and_flush_64_records", |b| {
        b.iter(|| {
            for _ in 0..64 {
                store.put_job(&done).expect("put");
            }
            store.flush().expect("flush")
        })
    });
    group.finish();
}

/// What a run would do at start: read the journal of 10,000 finished jobs and check the
/// database holds every fact (`recover::audit`). Also prints the journal's size per 1,000
/// jobs.
fn journal_replay(c: &mut Criterion) {
    const JOBS: usize = 10_000;
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("db");
    let store = Store::open(&db).expect("store");
    let mut journal = Journal::open(&db).expect("journal");
    for id in 0..JOBS {
        let (job, facts) = journalled_life(id);
        store.put_job(&job).expect("put");
        for fact in &facts {
            journal.append(fact);
        }
    }
    store.flush().expect("flush");
    journal.sync().expect("sync");
    println!(
        "journal: {} bytes per 1,000 finished jobs (3 facts each)",
        journal.len() * 1000 / JOBS as u64
    );
    let mut group = c.benchmark_group("journal");
    group.throughput(Throughput::Elements(JOBS as u64));
    group.sample_size(10);
    group.bench_function("replay_and_audit_10k_jobs", |b| {
        b.iter(|| {
            let replay = journal.replay().expect("replay");
            let missing = headswap_batch::recover::audit(&store, &journal, &replay).expect("audit");
            assert!(missing.is_empty());
            replay.jobs.len()
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    manifest_rows,
    store_transitions,
    journal_commit,
    journal_replay
);
criterion_main!(benches);
