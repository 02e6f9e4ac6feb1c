//! Micro benchmarks (criterion): manifest rows parsed per second, and job transitions written
//! to the store per second.

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use headswap_batch::akool::Mapping;
use headswap_batch::job::{Event, Job, JobSpec, Output};
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
            let events = [
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
                Event::Created {
                    task_id: format!("task-{next}"),
                },
                Event::Rendered {
                    output_url: Some("https://files.example.com/out.mp4?sig=x".into()),
                },
                Event::Downloaded {
                    output: Output {
                        path: format!("out/job-{next:06}.mp4"),
                        bytes: 262_144,
                        sha256: "0".repeat(64),
                    },
                },
            ];
            for event in events {
                job.apply(event, 2).expect("legal");
                store.put_job(&job).expect("put");
            }
        })
    });
    group.finish();
}

criterion_group!(benches, manifest_rows, store_transitions);
criterion_main!(benches);
