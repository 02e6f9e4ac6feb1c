//! `run` end to end against the simulator: shared analyses, subject choice, failures,
//! expired links, idempotent reruns.

use std::collections::HashMap;

use headswap_batch::simulator::output_content;

use crate::support::{Batch, assert_exit, assert_no_part_files, finish, simulator, text};

const MIXED: &str = "\
id,video_url,face_url,obj_id,sku
a1,http://v.example/one.mp4,http://f.example/a1.jpg,,S1
a2,http://v.example/one.mp4,http://f.example/a2.jpg,,S2
a3,http://v.example/one.mp4,http://f.example/a3.jpg,,S3
duo,http://v.example/two.mp4?subjects=2,http://f.example/x.jpg,0,S4
duo,http://v.example/two.mp4?subjects=2,http://f.example/y.jpg,1,S4
pick,http://v.example/two.mp4?subjects=2,http://f.example/z.jpg,,S5
broken,http://v.example/three.mp4?fail=render,http://f.example/b.jpg,,S6
long,http://v.example/four.mp4?duration=30,http://f.example/c.jpg,,S7
bad,ftp://nope,http://f.example/d.jpg,,S8
";

fn by_id(rows: Vec<HashMap<String, String>>) -> HashMap<String, HashMap<String, String>> {
    rows.into_iter()
        .map(|row| (row["id"].clone(), row))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_batch_ends_in_the_right_states_with_one_analysis_per_video() {
    let sim = simulator(|_| {}).await;
    let batch = Batch::new(MIXED);
    let output = finish(batch.run_command(&sim.base_url(), &[])).await;
    assert_exit(&output, 3);

    let jobs = by_id(batch.export());
    let state = |id: &str| jobs[id]["state"].as_str();
    for id in ["a1", "a2", "a3", "duo"] {
        assert_eq!(state(id), "done", "{id}: {:?}", jobs[id]);
    }
    assert_eq!(state("pick"), "needs_mapping");
    assert_eq!(state("broken"), "failed");
    assert!(
        jobs["broken"]["error"].contains("render failed"),
        "{:?}",
        jobs["broken"]
    );
    assert_eq!(state("long"), "failed");
    assert!(
        jobs["long"]["error"].contains("analysis failed"),
        "{:?}",
        jobs["long"]
    );
    assert_eq!(state("bad"), "invalid");
    assert_eq!(jobs["a2"]["sku"], "S2", "extra columns are echoed");
    assert_eq!(
        jobs["duo"]["mappings"],
        "0=http://f.example/x.jpg|1=http://f.example/y.jpg"
    );
    // The subjects of a needs_mapping job are listed with their preview images.
    let pick = &jobs["pick"];
    let listed = format!("{} {}", pick["error"], pick["mappings"]);
    assert!(
        listed.contains("0=") && listed.contains("1="),
        "subjects listed: {pick:?}"
    );

    let stats = sim.stats();
    assert_eq!(
        stats.calls.analyze, 4,
        "one analysis per distinct valid video"
    );
    assert_eq!(stats.calls.create, 5, "a1, a2, a3, duo, broken");
    assert_eq!(stats.duplicate_creates, 0);

    for id in ["a1", "a2", "a3", "duo"] {
        let row = &jobs[id];
        let bytes = std::fs::read(batch.out().join(format!("{id}.mp4"))).unwrap();
        assert_eq!(
            bytes,
            output_content(&row["task_id"], 64 * 1024),
            "{id}'s file"
        );
        assert_eq!(row["bytes"], bytes.len().to_string());
        assert_eq!(row["sha256"].len(), 64);
    }
    assert_no_part_files(&batch.out());

    // A rerun of the same manifest makes no API call at all.
    let before = sim.stats();
    let output = finish(batch.run_command(&sim.base_url(), &[])).await;
    assert_exit(&output, 3);
    let after = sim.stats();
    assert_eq!(
        before.calls, after.calls,
        "a finished batch is not sent again"
    );

    // Filling in obj_id for the needs_mapping row renders it, reusing the analysis.
    std::fs::write(
        batch.manifest(),
        MIXED.replace("http://f.example/z.jpg,,S5", "http://f.example/z.jpg,1,S5"),
    )
    .unwrap();
    let output = finish(batch.run_command(&sim.base_url(), &[])).await;
    assert_exit(&output, 3);
    let jobs = by_id(batch.export());
    assert_eq!(jobs["pick"]["state"], "done", "{:?}", jobs["pick"]);
    let last = sim.stats();
    assert_eq!(
        last.calls.analyze, after.calls.analyze,
        "the shared analysis is reused"
    );
    assert_eq!(last.calls.create, after.calls.create + 1);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_subject_first_and_all_choose_subjects() {
    let sim = simulator(|_| {}).await;
    let manifest =
        "id,video_url,face_url\ng,http://v.example/group.mp4?subjects=3,http://f.example/a.jpg\n";
    for (policy, expected) in [
        ("first", "0=http://f.example/a.jpg"),
        (
            "all",
            "0=http://f.example/a.jpg|1=http://f.example/a.jpg|2=http://f.example/a.jpg",
        ),
    ] {
        let batch = Batch::new(manifest);
        let output = finish(batch.run_command(&sim.base_url(), &["--multi-subject", policy])).await;
        assert_eq!(
            output.status.code(),
            Some(0),
            "{policy}: {}",
            text(&output.stderr)
        );
        let jobs = by_id(batch.export());
        assert_eq!(jobs["g"]["state"], "done");
        assert_eq!(jobs["g"]["mappings"], expected, "{policy}");
    }
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_that_always_expire_end_in_expired_after_fresh_links_were_tried() {
    let sim = simulator(|knobs| knobs.url_ttl = std::time::Duration::ZERO).await;
    let batch =
        Batch::new("id,video_url,face_url\nx,http://v.example/one.mp4,http://f.example/a.jpg\n");
    let output = finish(batch.run_command(&sim.base_url(), &["--max-attempts", "3"])).await;
    assert_exit(&output, 3);
    let jobs = by_id(batch.export());
    assert_eq!(jobs["x"]["state"], "expired", "{:?}", jobs["x"]);
    let stats = sim.stats();
    assert_eq!(stats.calls.create, 1, "an expired link never re-renders");
    assert!(
        stats.calls.download >= 3,
        "each fresh link was tried: {stats:?}"
    );
    assert!(!batch.out().join("x.mp4").exists());
    assert_no_part_files(&batch.out());
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_job_done_exits_zero() {
    let sim = simulator(|_| {}).await;
    let batch = Batch::new(
        "id,video_url,face_url\nx,http://v.example/one.mp4,http://f.example/a.jpg\ny,http://v.example/two.mp4,http://f.example/b.jpg\n",
    );
    let output = finish(batch.run_command(&sim.base_url(), &[])).await;
    assert_exit(&output, 0);
    let summary = text(&output.stdout);
    assert!(
        summary.contains("done") && summary.contains('2'),
        "summary: {summary}"
    );
    sim.shutdown().await;
}
