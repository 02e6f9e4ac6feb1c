//! Outputs in object storage against a real S3 server that checks signatures (`s3s` over
//! `s3s-fs`, see `s3_server.rs`), fed from the simulator's output links: byte-exact objects
//! with their SHA-256, small and multipart outputs, interrupted uploads that leave nothing
//! visible and are aborted or resumed, truncated downloads, changed outputs, the probe's
//! refusals, and secrets that never reach an error text or a `Debug` output.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use headswap_batch::download::DownloadError;
use headswap_batch::job::hex;
use headswap_batch::objstore::{
    Destination, ObjectStorage, OutputSource, Refusal, S3Env, StorageError, StoredObject,
    UploadError, UploadEvent, UploadOptions, UploadPhase, UploadRecord,
};
use headswap_batch::simulator::{SimKnobs, Simulator, output_content};
use sha2::{Digest, Sha256};

use crate::akool::{analysed, client, create_request, finished_task, start};
use crate::s3_server::{ACCESS_KEY, S3Server, SECRET_KEY};

const BUCKET: &str = "renders";
const VIDEO: &str = "https://videos.example/source.mp4";
const MIB: u64 = 1 << 20;
/// The outputs of the acceptance test: 12 MB, three parts of 5 MiB.
const TWELVE_MB: u64 = 12_000_000;
/// The smallest output of two parts, for the other multipart tests (the simulator makes
/// every output anew for each read, which is what costs time here).
const TWO_PARTS: u64 = 6_000_000;

fn options(parts_in_flight: usize) -> UploadOptions {
    UploadOptions {
        part_size: 5 * MIB,
        parts_in_flight,
    }
}

fn storage(server: &S3Server, destination: &str, options: UploadOptions) -> ObjectStorage {
    storage_with(server.env(), destination, options)
}

fn storage_with(env: S3Env, destination: &str, options: UploadOptions) -> ObjectStorage {
    ObjectStorage::new(Destination::parse(destination).unwrap(), &env, options).unwrap()
}

/// A simulator whose outputs are `bytes` long, with fault knobs from `tweak`.
async fn simulator(bytes: u64, tweak: impl FnOnce(&mut SimKnobs)) -> Simulator {
    let mut knobs = SimKnobs {
        analysis_time: Duration::ZERO,
        render_time: Duration::ZERO,
        output_bytes: bytes,
        ..SimKnobs::default()
    };
    tweak(&mut knobs);
    start(knobs).await
}

/// `count` rendered tasks: (task id, output link).
async fn rendered(sim: &Simulator, count: usize) -> Vec<(String, String)> {
    let client = client(&sim.base_url(), "demo-key");
    analysed(&client, VIDEO).await;
    let mut outputs = Vec::new();
    for _ in 0..count {
        let task = client
            .create_task(&create_request(VIDEO, &[0]))
            .await
            .unwrap();
        let task = finished_task(&client, &task.id).await;
        outputs.push((task.id.clone(), task.output_url.expect("an output link")));
    }
    outputs
}

fn source(url: &str) -> OutputSource {
    OutputSource {
        url: url.to_string(),
        max_bytes: 1 << 30,
        stall_timeout: Duration::from_secs(30),
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// The object's bytes as the server stores them.
fn stored_bytes(server: &S3Server, key: &str) -> Option<Vec<u8>> {
    std::fs::read(server.root().join(BUCKET).join(key)).ok()
}

/// Events reported by an upload, in order.
type Events = Arc<Mutex<Vec<UploadEvent>>>;

fn recorder() -> (
    Events,
    impl FnMut(&UploadEvent, &UploadRecord) + Send + 'static,
) {
    let events: Events = Arc::default();
    let sink = events.clone();
    (
        events,
        move |event: &UploadEvent, _record: &UploadRecord| {
            sink.lock().unwrap().push(event.clone());
        },
    )
}

fn names(events: &Events) -> Vec<&'static str> {
    events
        .lock()
        .unwrap()
        .iter()
        .map(UploadEvent::name)
        .collect()
}

/// The object under `key` is complete: the bytes the simulator rendered for `task_id`, its
/// metadata and the returned record carry their SHA-256.
#[track_caller]
fn assert_stored(server: &S3Server, object: &StoredObject, task_id: &str, bytes: u64) {
    let expected = output_content(task_id, bytes);
    let stored = stored_bytes(server, &object.key).expect("the object exists");
    assert!(stored == expected, "{} is not byte-exact", object.key);
    assert_eq!(object.sha256, sha256_hex(&expected));
    assert_eq!(object.bytes, bytes);
    assert_eq!(object.url, format!("s3://{BUCKET}/{}", object.key));
}

async fn assert_metadata(storage: &ObjectStorage, object: &StoredObject) {
    let info = storage.object_info(&object.key).await.unwrap().unwrap();
    assert_eq!(info.bytes, object.bytes);
    assert_eq!(info.sha256.as_deref(), Some(object.sha256.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_outputs_of_12_mb_are_stored_byte_exact_with_their_sha256() {
    let server = S3Server::start(&[BUCKET], 1000).await;
    let sim = simulator(TWELVE_MB, |_| {}).await;
    let storage = Arc::new(storage(&server, "s3://renders/night/", options(2)));
    storage.probe().await.unwrap();
    let http = reqwest::Client::new();
    let mut uploads = tokio::task::JoinSet::new();
    for (index, (task_id, url)) in rendered(&sim, 10).await.into_iter().enumerate() {
        let storage = storage.clone();
        let http = http.clone();
        uploads.spawn(async move {
            let key = storage
                .destination()
                .key_for(&format!("job-{index}"))
                .unwrap();
            let mut record = UploadRecord::new(key);
            let (events, progress) = recorder();
            let object = storage
                .upload(&http, &source(&url), &mut record, progress)
                .await
                .unwrap();
            (task_id, object, record, events)
        });
    }
    let mut count = 0;
    while let Some(done) = uploads.join_next().await {
        let (task_id, object, record, events) = done.unwrap();
        assert_stored(&server, &object, &task_id, TWELVE_MB);
        assert_metadata(&storage, &object).await;
        assert!(record.is_complete());
        assert_eq!(
            names(&events),
            [
                "planned",
                "created",
                "part stored",
                "part stored",
                "part stored",
                "completed"
            ]
        );
        count += 1;
    }
    assert_eq!(count, 10);
    assert!(storage.pending_uploads().await.unwrap().is_empty());
    // Nothing else under the prefix: no probe object, no part.
    let mut names: Vec<_> = std::fs::read_dir(server.root().join(BUCKET).join("night"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let expected: Vec<_> = (0..10).map(|i| format!("job-{i}.mp4")).collect();
    let mut expected_sorted = expected.clone();
    expected_sorted.sort();
    assert_eq!(names, expected_sorted);
}

#[tokio::test]
async fn an_output_of_one_part_is_one_put_with_its_sha256() {
    let server = S3Server::start(&[BUCKET], 1000).await;
    let sim = simulator(300_000, |_| {}).await;
    let storage = storage(&server, "s3://renders/", options(2));
    let (task_id, url) = rendered(&sim, 1).await.remove(0);
    let mut record = UploadRecord::new("a.mp4");
    let (events, progress) = recorder();
    let object = storage
        .upload(
            &reqwest::Client::new(),
            &source(&url),
            &mut record,
            progress,
        )
        .await
        .unwrap();
    assert_stored(&server, &object, &task_id, 300_000);
    assert_metadata(&storage, &object).await;
    assert_eq!(names(&events), ["completed"]);
    assert_eq!(sim.stats().downloads.served, 1, "read once");
    // Calling again with the complete record does nothing.
    let again = storage
        .upload(
            &reqwest::Client::new(),
            &source(&url),
            &mut record,
            |_, _| {},
        )
        .await
        .unwrap();
    assert_eq!(again, object);
    assert_eq!(sim.stats().downloads.served, 1);
}

/// Run an upload until `stop_after` events of the name `stop_at` were reported, then drop it.
async fn interrupted(
    storage: &ObjectStorage,
    url: &str,
    key: &str,
    stop_at: &'static str,
    stop_after: usize,
) -> UploadRecord {
    let mut record = UploadRecord::new(key);
    let stop = Arc::new(tokio::sync::Notify::new());
    let mut seen = 0;
    let notify = stop.clone();
    let http = reqwest::Client::new();
    let output = source(url);
    let upload = storage.upload(
        &http,
        &output,
        &mut record,
        move |event: &UploadEvent, _: &UploadRecord| {
            if event.name() == stop_at {
                seen += 1;
                if seen == stop_after {
                    notify.notify_one();
                }
            }
        },
    );
    tokio::select! {
        outcome = upload => panic!("the upload finished before it was interrupted: {outcome:?}"),
        _ = stop.notified() => {}
    }
    // The upload future is dropped here, parts in flight with it.
    record
}

#[tokio::test]
async fn an_interrupted_upload_leaves_no_object_and_its_upload_is_listed_and_aborted() {
    let server = S3Server::start(&[BUCKET], 2).await;
    let sim = simulator(TWO_PARTS, |_| {}).await;
    let storage = storage(&server, "s3://renders/night/", options(1));
    let outputs = rendered(&sim, 5).await;
    // Five uploads dropped: one after its first part, four as soon as they were created.
    let mut records = Vec::new();
    for (index, (_, url)) in outputs.iter().enumerate() {
        let key = format!("night/job-{index}.mp4");
        let (stop_at, after) = if index == 0 {
            ("part stored", 1)
        } else {
            ("created", 1)
        };
        records.push(interrupted(&storage, url, &key, stop_at, after).await);
    }
    match &records[0].phase {
        UploadPhase::Uploading { parts, .. } => {
            assert!(!parts.is_empty() && parts.len() < 2, "{parts:?}")
        }
        other => panic!("expected an upload in progress, got {other:?}"),
    }
    for record in &records {
        assert!(record.upload_id().is_some());
        assert_eq!(storage.object_info(&record.key).await.unwrap(), None);
        assert_eq!(stored_bytes(&server, &record.key), None, "nothing visible");
    }
    // Listed over several pages (the server answers two per page).
    let listed = storage.pending_uploads().await.unwrap();
    let listed_ids: HashSet<_> = listed.iter().map(|u| u.upload_id.clone()).collect();
    let record_ids: HashSet<_> = records
        .iter()
        .map(|r| r.upload_id().unwrap().to_string())
        .collect();
    assert_eq!(listed_ids, record_ids);

    // job-4 belongs to another shard, job-3's record will be resumed: both stay.
    let keep: HashSet<String> = [records[3].upload_id().unwrap().to_string()].into();
    let aborted = storage
        .abort_abandoned(|id| id != "job-4", &keep)
        .await
        .unwrap();
    let mut aborted_keys: Vec<_> = aborted.iter().map(|u| u.key.as_str()).collect();
    aborted_keys.sort();
    assert_eq!(
        aborted_keys,
        ["night/job-0.mp4", "night/job-1.mp4", "night/job-2.mp4"]
    );
    let mut left: Vec<_> = storage
        .pending_uploads()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.key)
        .collect();
    left.sort();
    assert_eq!(left, ["night/job-3.mp4", "night/job-4.mp4"]);
    // Giving a job up aborts its upload too.
    let mut record = records[4].clone();
    storage.abort(&mut record, "given up").await.unwrap();
    assert_eq!(record.phase, UploadPhase::Pending);
    assert_eq!(storage.pending_uploads().await.unwrap().len(), 1);
    for record in &records {
        assert_eq!(stored_bytes(&server, &record.key), None);
    }
}

#[tokio::test]
async fn an_interrupted_upload_resumes_with_the_missing_parts_only() {
    let server = S3Server::start(&[BUCKET], 1000).await;
    let sim = simulator(TWO_PARTS, |_| {}).await;
    let storage = storage(&server, "s3://renders/", options(1));
    let (task_id, url) = rendered(&sim, 1).await.remove(0);
    let mut record = interrupted(&storage, &url, "job.mp4", "part stored", 1).await;
    let UploadPhase::Uploading { parts, .. } = &record.phase else {
        panic!("expected an upload in progress: {record:?}");
    };
    let done = parts.len();
    let served_before = sim.stats().downloads.served;
    let (events, progress) = recorder();
    let object = storage
        .upload(
            &reqwest::Client::new(),
            &source(&url),
            &mut record,
            progress,
        )
        .await
        .unwrap();
    assert_stored(&server, &object, &task_id, TWO_PARTS);
    assert_metadata(&storage, &object).await;
    let names = names(&events);
    assert_eq!(
        names.iter().filter(|n| **n == "part stored").count(),
        2 - done
    );
    assert_eq!(names.last(), Some(&"completed"));
    assert!(!names.contains(&"planned"), "the plan is reused: {names:?}");
    assert_eq!(
        sim.stats().downloads.served,
        served_before + 1,
        "one ranged read"
    );
    assert!(storage.pending_uploads().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_completion_that_was_not_recorded_is_recognised() {
    let server = S3Server::start(&[BUCKET], 1000).await;
    let sim = simulator(TWO_PARTS, |_| {}).await;
    let storage = storage(&server, "s3://renders/", options(1));
    let (task_id, url) = rendered(&sim, 1).await.remove(0);
    // Every record the caller was handed, as a database may have stored it.
    let snapshots = Arc::new(Mutex::new(Vec::new()));
    let keep = snapshots.clone();
    let mut record = UploadRecord::new("job.mp4");
    storage
        .upload(
            &reqwest::Client::new(),
            &source(&url),
            &mut record,
            move |_: &UploadEvent, now: &UploadRecord| keep.lock().unwrap().push(now.clone()),
        )
        .await
        .unwrap();
    let snapshots = snapshots.lock().unwrap().clone();
    let uploading: Vec<_> = snapshots
        .iter()
        .filter(|r| r.phase.name() == "uploading")
        .collect();
    // The last record before the completion: every part recorded, the object already there.
    let mut all_parts = uploading.last().unwrap().to_owned().clone();
    let served = sim.stats().downloads.served;
    let object = storage
        .upload(
            &reqwest::Client::new(),
            &source(&url),
            &mut all_parts,
            |_, _| {},
        )
        .await
        .unwrap();
    assert_stored(&server, &object, &task_id, TWO_PARTS);
    assert_eq!(sim.stats().downloads.served, served, "nothing read again");
    // A record stored before the last part was: the part is read again, its upload is gone,
    // and the object is found complete.
    let mut one_part = uploading
        .iter()
        .find(|r| matches!(&r.phase, UploadPhase::Uploading { parts, .. } if parts.len() == 1))
        .unwrap()
        .to_owned()
        .clone();
    let again = storage
        .upload(
            &reqwest::Client::new(),
            &source(&url),
            &mut one_part,
            |_, _| {},
        )
        .await
        .unwrap();
    assert_eq!(again.sha256, object.sha256);
    assert!(one_part.is_complete());
    assert_stored(&server, &again, &task_id, TWO_PARTS);
    assert!(storage.pending_uploads().await.unwrap().is_empty());
}

#[tokio::test]
async fn an_upload_aborted_elsewhere_starts_over() {
    let server = S3Server::start(&[BUCKET], 1000).await;
    let sim = simulator(TWO_PARTS, |_| {}).await;
    let storage = storage(&server, "s3://renders/", options(1));
    let (task_id, url) = rendered(&sim, 1).await.remove(0);
    let mut record = interrupted(&storage, &url, "job.mp4", "part stored", 1).await;
    storage
        .abort_abandoned(|_| true, &HashSet::new())
        .await
        .unwrap();
    let (events, progress) = recorder();
    let object = storage
        .upload(
            &reqwest::Client::new(),
            &source(&url),
            &mut record,
            progress,
        )
        .await
        .unwrap();
    assert_stored(&server, &object, &task_id, TWO_PARTS);
    let names = names(&events);
    assert!(
        names.starts_with(&["restarted", "planned", "created"]),
        "{names:?}"
    );
    assert!(storage.pending_uploads().await.unwrap().is_empty());
}

#[tokio::test]
async fn an_output_that_changed_between_reads_is_not_stored_and_starts_over() {
    let server = S3Server::start(&[BUCKET], 1000).await;
    let sim = simulator(TWO_PARTS, |_| {}).await;
    let storage = storage(&server, "s3://renders/", options(1));
    let outputs = rendered(&sim, 2).await;
    let (_, first_url) = &outputs[0];
    let (other_task, other_url) = &outputs[1];
    // Planned and partly sent from the first output, resumed from another of the same length.
    let mut record = interrupted(&storage, first_url, "job.mp4", "part stored", 1).await;
    let error = storage
        .upload(
            &reqwest::Client::new(),
            &source(other_url),
            &mut record,
            |_, _| {},
        )
        .await
        .unwrap_err();
    assert!(error.is_transient(), "{error}");
    assert!(
        error
            .to_string()
            .contains("differs from the output first read"),
        "{error}"
    );
    assert_eq!(record.phase, UploadPhase::Pending);
    assert!(
        storage.pending_uploads().await.unwrap().is_empty(),
        "aborted"
    );
    assert_eq!(stored_bytes(&server, "job.mp4"), None);
    // The next attempt plans the output as it now is.
    let object = storage
        .upload(
            &reqwest::Client::new(),
            &source(other_url),
            &mut record,
            |_, _| {},
        )
        .await
        .unwrap();
    assert_stored(&server, &object, other_task, TWO_PARTS);
}

#[tokio::test]
async fn a_download_cut_short_is_never_stored_as_complete() {
    let server = S3Server::start(&[BUCKET], 1000).await;
    for bytes in [300_000, TWO_PARTS] {
        let sim = simulator(bytes, |knobs| knobs.truncate_rate = 1.0).await;
        let storage = storage(&server, "s3://renders/", options(2));
        let (_, url) = rendered(&sim, 1).await.remove(0);
        let key = format!("cut-{bytes}.mp4");
        let mut record = UploadRecord::new(key.clone());
        for _ in 0..3 {
            let error = storage
                .upload(
                    &reqwest::Client::new(),
                    &source(&url),
                    &mut record,
                    |_, _| {},
                )
                .await
                .unwrap_err();
            assert!(
                matches!(
                    error,
                    UploadError::Download(DownloadError::Transient { .. })
                ),
                "{error:?}"
            );
            assert_eq!(
                record.phase,
                UploadPhase::Pending,
                "nothing planned from a cut read"
            );
        }
        assert_eq!(storage.object_info(&key).await.unwrap(), None);
        assert_eq!(stored_bytes(&server, &key), None);
        assert!(storage.pending_uploads().await.unwrap().is_empty());
        assert!(sim.stats().faults.truncate >= 3);
    }
}

#[tokio::test]
async fn downloads_cut_at_random_are_resumed_until_the_object_is_complete() {
    let server = S3Server::start(&[BUCKET], 1000).await;
    let sim = simulator(TWO_PARTS, |knobs| {
        knobs.truncate_rate = 0.6;
        // This seed cuts several reads (checked below against the simulator's count).
        knobs.seed = 5;
    })
    .await;
    let storage = storage(&server, "s3://renders/", options(1));
    let (task_id, url) = rendered(&sim, 1).await.remove(0);
    let mut record = UploadRecord::new("job.mp4");
    let mut failures = 0;
    let object = loop {
        match storage
            .upload(
                &reqwest::Client::new(),
                &source(&url),
                &mut record,
                |_, _| {},
            )
            .await
        {
            Ok(object) => break object,
            Err(error) => {
                assert!(error.is_transient(), "{error}");
                assert_eq!(
                    stored_bytes(&server, "job.mp4"),
                    None,
                    "nothing partial visible"
                );
                failures += 1;
                assert!(failures < 40, "never finished: {error}");
            }
        }
    };
    assert!(failures > 0, "the seed cuts some reads");
    assert_eq!(
        failures,
        sim.stats().faults.truncate,
        "every cut read failed an attempt"
    );
    assert_stored(&server, &object, &task_id, TWO_PARTS);
    assert_metadata(&storage, &object).await;
}

#[tokio::test]
async fn a_refused_output_link_is_classified_as_a_download_is() {
    let server = S3Server::start(&[BUCKET], 1000).await;
    let sim = simulator(300_000, |_| {}).await;
    let storage = storage(&server, "s3://renders/", options(2));
    let (_, url) = rendered(&sim, 1).await.remove(0);
    let forged = url.replace("sig=", "sig=00");
    let mut record = UploadRecord::new("job.mp4");
    let error = storage
        .upload(
            &reqwest::Client::new(),
            &source(&forged),
            &mut record,
            |_, _| {},
        )
        .await
        .unwrap_err();
    assert_eq!(
        error,
        UploadError::Download(DownloadError::LinkExpired { status: 403 })
    );
    let mut small = source(&url);
    small.max_bytes = 1000;
    let error = storage
        .upload(&reqwest::Client::new(), &small, &mut record, |_, _| {})
        .await
        .unwrap_err();
    assert!(matches!(
        error,
        UploadError::Download(DownloadError::Refused { .. })
    ));
    assert!(!error.is_transient());
}

#[track_caller]
fn refusal_of(error: StorageError) -> (Refusal, String) {
    match error {
        StorageError::Refused { refusal, .. } => {
            let text = error_text(&StorageError::Refused {
                refusal: refusal.clone(),
                detail: String::new(),
            });
            (refusal, text)
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn error_text(error: &StorageError) -> String {
    error.to_fatal("--out").to_string()
}

#[tokio::test]
async fn the_probe_writes_and_removes_an_object_and_names_each_refusal() {
    let server = S3Server::start(&[BUCKET], 1000).await;
    storage(&server, "s3://renders/night/", options(2))
        .probe()
        .await
        .unwrap();
    let left: Vec<_> = std::fs::read_dir(server.root().join(BUCKET))
        .unwrap()
        .flat_map(|entry| {
            let path = entry.unwrap().path();
            if path.is_dir() {
                std::fs::read_dir(path)
                    .unwrap()
                    .map(|e| e.unwrap().path())
                    .collect()
            } else {
                vec![path]
            }
        })
        .collect();
    assert!(left.is_empty(), "the probe object is removed: {left:?}");

    let wrong = "wrong/secret/key+0123456789abcdefghijklmn";
    let error = storage_with(server.env_with_secret(wrong), "s3://renders/", options(2))
        .probe()
        .await
        .unwrap_err();
    let (refusal, text) = refusal_of(error.clone());
    assert_eq!(refusal, Refusal::SignatureMismatch);
    let full = error_text(&error);
    assert!(
        full.contains("the credentials were refused (signature does not match)"),
        "{full}"
    );
    assert!(full.contains("hint: check AWS_SECRET_ACCESS_KEY"), "{full}");
    assert!(
        full.contains("writing the probe object s3://renders/.headswap-probe-"),
        "{full}"
    );
    assert!(!text.is_empty());

    let missing = storage(&server, "s3://no-such-bucket/x/", options(2))
        .probe()
        .await
        .unwrap_err();
    let full = error_text(&missing);
    assert_eq!(refusal_of(missing).0, Refusal::NoSuchBucket);
    assert!(full.contains("the bucket does not exist"), "{full}");
    assert!(full.contains("hint: create the bucket"), "{full}");

    let unknown_key = S3Env::from_vars([
        ("AWS_ACCESS_KEY_ID", "AKIAUNKNOWNKEY000000"),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
        ("AWS_ENDPOINT_URL", server.endpoint().as_str()),
        ("AWS_ALLOW_HTTP", "true"),
    ]);
    let error = storage_with(unknown_key, "s3://renders/", options(2))
        .probe()
        .await
        .unwrap_err();
    assert!(
        matches!(
            &error,
            StorageError::Refused {
                refusal: Refusal::UnknownAccessKey | Refusal::AccessDenied,
                ..
            }
        ),
        "{error:?}"
    );

    // An endpoint nobody listens on: transient, with a hint about the endpoint.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let nobody = S3Env::from_vars([
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_string()),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_string()),
        ("AWS_ENDPOINT_URL", format!("http://{addr}")),
        ("AWS_ALLOW_HTTP", "true".to_string()),
    ]);
    let error = storage_with(nobody, "s3://renders/", options(2))
        .probe()
        .await
        .unwrap_err();
    assert!(error.is_transient(), "{error:?}");
    assert!(
        error_text(&error).contains("AWS_ENDPOINT_URL"),
        "{}",
        error_text(&error)
    );
}

#[tokio::test]
async fn secrets_never_appear_in_errors_or_debug_output() {
    let server = S3Server::start(&[BUCKET], 1000).await;
    let sim = simulator(TWO_PARTS, |_| {}).await;
    let (_, url) = rendered(&sim, 1).await.remove(0);
    let wrong = "wrong/secret/key+0123456789abcdefghijklmn";
    let token = "FQoGZXIvYXdzEXAMPLESESSIONTOKEN0123456789";
    let mut texts = Vec::new();
    for env in [
        server.env_with_secret(wrong),
        S3Env::from_vars([
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_string()),
            ("AWS_SECRET_ACCESS_KEY", wrong.to_string()),
            ("AWS_SESSION_TOKEN", token.to_string()),
            ("AWS_ENDPOINT_URL", server.endpoint()),
            ("AWS_ALLOW_HTTP", "true".to_string()),
        ]),
    ] {
        texts.push(format!("{env:?}"));
        let storage = storage_with(env, "s3://renders/night/", options(1));
        texts.push(format!("{storage:?}"));
        let error = storage.probe().await.unwrap_err();
        texts.push(format!("{error} {error:?} {}", error_text(&error)));
        let error = storage.pending_uploads().await.unwrap_err();
        texts.push(format!("{error} {error:?}"));
        let error = storage
            .abort_abandoned(|_| true, &HashSet::new())
            .await
            .unwrap_err();
        texts.push(format!("{error} {error:?}"));
        let mut record = UploadRecord::new("night/job.mp4");
        let error = storage
            .upload(
                &reqwest::Client::new(),
                &source(&url),
                &mut record,
                |_, _| {},
            )
            .await
            .unwrap_err();
        texts.push(format!("{error} {error:?} {record:?}"));
        let mut small = UploadRecord::new("night/small.mp4");
        let small_sim_error = storage
            .object_info(&small.key)
            .await
            .map(|_| String::new())
            .unwrap_or_else(|e| format!("{e} {e:?}"));
        texts.push(small_sim_error);
        storage.abort(&mut small, "x").await.unwrap();
    }
    // The right secret in errors of the right client, too.
    let good = storage(&server, "s3://no-such-bucket/", options(1));
    texts.push(format!("{good:?}"));
    let error = good.probe().await.unwrap_err();
    texts.push(format!("{error} {error:?} {}", error_text(&error)));
    let all = texts.join("\n");
    for secret in [SECRET_KEY, wrong, token] {
        assert!(!all.contains(secret), "a secret leaked:\n{all}");
    }
    // The texts are about something: the refusals are named.
    assert!(
        all.contains("signature does not match") || all.contains("session token"),
        "{all}"
    );
}
