//! Outputs in object storage through the real binary, against a real S3 server on loopback
//! that checks every signature (`s3s` over `s3s-fs`, see `s3_server.rs`): a run killed in the
//! middle of its multipart uploads resumes with every object exact and none partial; a wrong
//! secret is refused before anything is bought and appears nowhere; shards split a catalog so
//! that N runs render each job once.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use headswap_batch::objstore::{Destination, ObjectStorage, UploadOptions};
use headswap_batch::simulator::output_content;

use crate::s3_server::{ACCESS_KEY, REGION, S3Server, SECRET_KEY};
use crate::support::{Batch, assert_exit, binary, finish, simulator, text};

const BUCKET: &str = "renders";
const PREFIX: &str = "catalog/";

fn manifest(jobs: usize) -> String {
    let mut csv = String::from("id,video_url,face_url\n");
    for n in 0..jobs {
        csv.push_str(&format!(
            "job-{n:02},http://v.example/v{}.mp4,http://f.example/{n}.jpg\n",
            n % 3
        ));
    }
    csv
}

/// `run` to the bucket, with the AWS environment pointing at `server` and `secret`.
fn run_to_bucket(batch: &Batch, base_url: &str, server: &S3Server, secret: &str) -> Command {
    let mut command = batch.run_with_defaults(
        base_url,
        &[
            "--concurrency",
            "10",
            "--out",
            &format!("s3://{BUCKET}/{PREFIX}"),
        ],
    );
    command
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("AWS_REGION", REGION)
        .env("AWS_ENDPOINT_URL", server.endpoint())
        .env("AWS_ALLOW_HTTP", "true")
        .env_remove("AWS_SESSION_TOKEN");
    command
}

/// The objects stored under the prefix, by job id, read from the server's own folder.
fn stored_objects(server: &S3Server) -> HashMap<String, Vec<u8>> {
    let folder = server
        .root()
        .join(BUCKET)
        .join(PREFIX.trim_end_matches('/'));
    let mut objects = HashMap::new();
    for entry in std::fs::read_dir(&folder).into_iter().flatten() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if let Some(id) = name.strip_suffix(".mp4") {
            objects.insert(id.to_string(), std::fs::read(&path).unwrap());
        }
    }
    objects
}

async fn pending_uploads(server: &S3Server) -> usize {
    let destination = Destination::parse(&format!("s3://{BUCKET}/{PREFIX}")).unwrap();
    let storage = ObjectStorage::new(destination, &server.env(), UploadOptions::default()).unwrap();
    storage.pending_uploads().await.unwrap().len()
}

#[track_caller]
fn assert_no_secret(what: &str, text: &str) {
    assert!(!text.contains(SECRET_KEY), "{what} shows the secret key");
}

fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_mid_upload_resumes_and_every_object_is_exact() {
    let output_bytes = 12 * 1024 * 1024;
    let sim = simulator(|knobs| {
        knobs.output_bytes = output_bytes;
        knobs.render_time = Duration::from_millis(500);
    })
    .await;
    let server = S3Server::start(&[BUCKET], 100).await;
    let batch = Batch::new(&manifest(10));

    // Killed (SIGKILL) right after the third part of any upload is stored.
    let mut killed = run_to_bucket(&batch, &sim.base_url(), &server, SECRET_KEY);
    killed.env("HEADSWAP_CRASH_AT", "upload-part-stored:3");
    let output = finish(killed).await;
    assert_eq!(
        output.status.code(),
        None,
        "killed by its signal: {output:?}"
    );
    let partial = stored_objects(&server);
    assert!(
        partial.len() < 10,
        "the kill came before the end: {}",
        partial.len()
    );
    for (id, bytes) in &partial {
        assert_eq!(
            bytes.len() as u64,
            output_bytes,
            "{id} is complete or absent"
        );
    }

    let output = finish(run_to_bucket(&batch, &sim.base_url(), &server, SECRET_KEY)).await;
    assert_exit(&output, 0);
    let objects = stored_objects(&server);
    assert_eq!(objects.len(), 10);
    let rows = batch.export();
    for row in &rows {
        assert_eq!(row["state"], "done", "{row:?}");
        let id = &row["id"];
        assert_eq!(
            row["output"],
            format!("s3://{BUCKET}/{PREFIX}{id}.mp4"),
            "export names the object"
        );
        let expected = output_content(&row["task_id"], output_bytes);
        assert!(objects[id.as_str()] == expected, "{id} is byte-exact");
        let sha = headswap_batch::job::hex(&sha2::Digest::finalize(
            <sha2::Sha256 as sha2::Digest>::new_with_prefix(&expected),
        ));
        assert_eq!(row["sha256"], sha, "{id}");
    }
    assert_eq!(
        pending_uploads(&server).await,
        0,
        "nothing left billed at the store"
    );
    let stats = sim.stats();
    assert_eq!(stats.calls.create, 10, "nothing rendered twice");
    assert_eq!(stats.duplicate_creates, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_is_refused_before_anything_is_bought_and_shown_nowhere() {
    let sim = simulator(|_| {}).await;
    let server = S3Server::start(&[BUCKET], 100).await;
    let batch = Batch::new(&manifest(3));
    let wrong = "hs/Wrong+Secret/Key0123456789abcdefghijklm";
    let mut command = run_to_bucket(&batch, &sim.base_url(), &server, wrong);
    command.arg("-vv");
    let output = finish(command).await;
    assert_exit(&output, 1);
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("credentials were refused") && stderr.contains("hint:"),
        "{stderr}"
    );
    let stats = sim.stats();
    assert_eq!(
        (stats.calls.analyze, stats.calls.create),
        (0, 0),
        "nothing bought before the destination was checked"
    );
    for (what, shown) in [
        ("stderr", stderr.as_str()),
        ("stdout", &text(&output.stdout)),
    ] {
        assert!(!shown.contains(wrong), "{what} shows the secret");
        assert_no_secret(what, shown);
    }
    let export = binary()
        .arg("--db")
        .arg(batch.db())
        .arg("export")
        .output()
        .unwrap();
    assert_no_secret("export", &text(&export.stdout));
    for file in files_under(batch.dir.path()) {
        let bytes = std::fs::read(&file).unwrap();
        let content = String::from_utf8_lossy(&bytes);
        assert!(
            !content.contains(wrong) && !content.contains(SECRET_KEY),
            "{} holds a secret",
            file.display()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_split_a_catalog_so_that_n_runs_render_each_job_once() {
    let keys = ["shard-key-1", "shard-key-2", "shard-key-3"];
    let sim = simulator(|knobs| {
        knobs.api_keys = keys.iter().map(|key| key.to_string()).collect();
    })
    .await;
    let catalog = Batch::new(&manifest(24));
    let output = binary()
        .args(["check", "--shards", "3"])
        .arg(catalog.manifest())
        .output()
        .unwrap();
    assert_exit(&output, 0);
    let shown = text(&output.stdout);
    let sizes: Vec<usize> = shown
        .lines()
        .filter_map(|line| line.strip_prefix("shard "))
        .map(|line| line.split_whitespace().nth(1).unwrap().parse().unwrap())
        .collect();
    assert_eq!(sizes.len(), 3, "{shown}");
    assert_eq!(
        sizes.iter().sum::<usize>(),
        24,
        "every job in one shard: {shown}"
    );

    let out = catalog.dir.path().join("shared-out");
    let mut rendered = HashMap::new();
    for (index, key) in keys.iter().enumerate() {
        let shard = format!("{}/3", index + 1);
        let db = catalog.dir.path().join(format!("shard-{}.db", index + 1));
        let output = finish({
            let mut command = binary();
            command
                .env("AKOOL_API_KEY", key)
                .env_remove("RUST_LOG")
                .arg("--db")
                .arg(&db)
                .arg("run")
                .arg(catalog.manifest())
                .arg("--out")
                .arg(&out)
                .args([
                    "--base-url",
                    &sim.base_url(),
                    "--no-progress",
                    "--shard",
                    &shard,
                ]);
            command
        })
        .await;
        assert_exit(&output, 0);
        let export = binary()
            .arg("--db")
            .arg(&db)
            .arg("export")
            .output()
            .unwrap();
        let mut reader = csv::Reader::from_reader(export.stdout.as_slice());
        for record in reader.records() {
            let record = record.unwrap();
            let id = record[0].to_string();
            assert_eq!(&record[1], "done");
            assert!(
                rendered.insert(id.clone(), shard.clone()).is_none(),
                "{id} rendered by two shards"
            );
        }
        assert_eq!(
            rendered.values().filter(|owner| **owner == shard).count(),
            sizes[index]
        );
    }
    assert_eq!(rendered.len(), 24);
    let stats = sim.stats();
    assert_eq!(stats.calls.create, 24, "each job created once");
    assert_eq!(stats.duplicate_creates, 0);
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 24);
}
