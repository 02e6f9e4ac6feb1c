//! `export` and `report` while a run holds the database: the running process answers them
//! with its records over the socket beside the database.

use std::time::Duration;

use crate::support::{Batch, assert_exit, binary, simulator, spawn, text, until, wait};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_and_report_work_while_a_run_holds_the_database() {
    let sim = simulator(|knobs| knobs.render_time = Duration::from_secs(4)).await;
    let mut csv = String::from("id,video_url,face_url,sku\n");
    for n in 0..6 {
        csv.push_str(&format!(
            "job-{n},http://v.example/v{}.mp4,http://f.example/{n}.jpg,SKU-{n}\n",
            n % 2
        ));
    }
    let batch = Batch::new(&csv);
    let child = spawn(batch.run_with_defaults(&sim.base_url(), &["--concurrency", "6"]));
    until("renders to be under way", || sim.stats().calls.create >= 6).await;

    let export = binary()
        .arg("--db")
        .arg(batch.db())
        .arg("export")
        .output()
        .unwrap();
    assert_exit(&export, 0);
    let csv = text(&export.stdout);
    assert_eq!(csv.lines().count(), 7, "a header and every job: {csv}");
    assert!(csv.contains("rendering"), "{csv}");
    assert!(csv.contains("SKU-5"), "{csv}");

    let page = batch.dir.path().join("live.html");
    let report = binary()
        .arg("--db")
        .arg(batch.db())
        .args(["report", "--out"])
        .arg(&page)
        .output()
        .unwrap();
    assert_exit(&report, 0);
    let html = std::fs::read_to_string(&page).unwrap();
    for n in 0..6 {
        assert!(html.contains(&format!("job-{n}")), "job-{n} is on the page");
    }

    let output = wait(child).await;
    assert_exit(&output, 0);
    assert!(
        !headswap_batch::view::live::socket_path(&batch.db()).exists(),
        "the socket goes with the run"
    );
}

#[test]
fn completions_and_the_man_page_come_from_the_flags() {
    for shell in ["bash", "zsh", "fish"] {
        let output = binary().args(["completions", shell]).output().unwrap();
        assert_exit(&output, 0);
        let script = text(&output.stdout);
        assert!(
            script.contains("headswap-batch") && script.contains("--give-up-after"),
            "{shell}: {script}"
        );
    }
    let output = binary().arg("man").output().unwrap();
    assert_exit(&output, 0);
    let page = text(&output.stdout);
    assert!(page.starts_with(".ie") || page.contains(".TH"), "{page}");
    assert!(page.contains("headswap\\-batch"), "{page}");
}
