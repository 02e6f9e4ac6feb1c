//! The database through the real binary: held by another process, damaged, or written by a
//! newer schema version, `run`, `status` and `export` end with exit 1 and a message that names
//! the database; a held or newer database is left as it was (never rewritten, nothing lost).

use std::process::Output;

use headswap_batch::store::Store;

use crate::support::{Batch, binary, finish, simulator, text};

const MANIFEST: &str = "\
id,video_url,face_url
one,http://v.example/a.mp4,http://f.example/1.jpg
two,http://v.example/b.mp4,http://f.example/2.jpg
";

/// A batch that ran to completion against a simulator; returns the creates it cost.
async fn finished_batch() -> (Batch, u64) {
    let sim = simulator(|_| {}).await;
    let batch = Batch::new(MANIFEST);
    let output = finish(batch.run_command(&sim.base_url(), &[])).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let creates = sim.stats().billed_creates;
    sim.shutdown().await;
    (batch, creates)
}

/// `run` (against a closed port: it must stop before any request), `status` and `export`.
async fn every_command(batch: &Batch) -> Vec<(&'static str, Output)> {
    let mut outputs = vec![(
        "run",
        finish(batch.run_command("http://127.0.0.1:9", &[])).await,
    )];
    for command in ["status", "export"] {
        let output = finish({
            let mut status = binary();
            status.arg("--db").arg(batch.db()).arg(command);
            status
        })
        .await;
        outputs.push((command, output));
    }
    outputs
}

#[track_caller]
fn assert_fatal(case: &str, command: &str, output: &Output, batch: &Batch, words: &str) {
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{case}, {command}: {stderr}");
    assert!(
        stderr.starts_with("error: ") && stderr.contains("hint: "),
        "{case}, {command}: {stderr}"
    );
    assert!(
        stderr.contains(&batch.db().display().to_string()),
        "{case}, {command}: the message names the database: {stderr}"
    );
    assert!(stderr.contains(words), "{case}, {command}: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_held_by_another_process_is_refused_and_left_intact() {
    let (batch, creates) = finished_batch().await;
    let held = Store::open(&batch.db()).expect("the test holds the database");
    for (command, output) in every_command(&batch).await {
        if command == "status" {
            // `status` reads the live view the holder keeps instead.
            assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
            assert!(text(&output.stdout).contains("done"), "{output:?}");
        } else {
            assert_fatal("held", command, &output, &batch, "in use by another");
        }
    }
    drop(held);
    let rows = batch.export();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|row| row["state"] == "done"), "{rows:?}");
    assert_eq!(creates, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_database_is_refused_by_name() {
    let (batch, _) = finished_batch().await;
    let data = batch.db().join("db");
    let length = std::fs::metadata(&data).unwrap().len() as usize;
    let garbage: Vec<u8> = (0..length.max(4096)).map(|n| (n * 7 + 13) as u8).collect();
    std::fs::write(&data, &garbage).unwrap();
    // The status view of the last run must not stand in for a damaged database, and an
    // empty database must not be started in its place.
    for (command, output) in every_command(&batch).await {
        assert_fatal("damaged", command, &output, &batch, "damaged");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_from_a_newer_version_is_refused_never_rewritten() {
    let (batch, _) = finished_batch().await;
    {
        let db = crate::support::open_raw_sled(&batch.db());
        let meta = db.open_tree("meta").unwrap();
        meta.insert("schema_version", "999").unwrap();
        db.flush().unwrap();
    }
    for (command, output) in every_command(&batch).await {
        assert_fatal("newer", command, &output, &batch, "newer headswap-batch");
        assert!(
            text(&output.stderr).contains("999"),
            "the version found is named"
        );
    }
    let db = crate::support::open_raw_sled(&batch.db());
    let version = db.open_tree("meta").unwrap().get("schema_version").unwrap();
    assert_eq!(version.as_deref(), Some(&b"999"[..]));
    assert_eq!(db.open_tree("jobs").unwrap().len(), 2, "no job lost");
}
