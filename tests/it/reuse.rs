//! Jobs that ask for the very same render (same video, faces and options) are bought once:
//! `check` warns, `run` creates one render and writes it under every id, `export` says which
//! job's render was reused; `--no-reuse-renders` buys each.

use headswap_batch::simulator::output_content;

use crate::support::{Batch, assert_exit, binary, finish, simulator, text};

const MANIFEST: &str = "id,video_url,face_url,sku\n\
    hero-a,http://v.example/hero.mp4,http://f.example/anna.jpg,SKU-1\n\
    hero-b,http://v.example/hero.mp4,http://f.example/anna.jpg,SKU-2\n\
    hero-c,http://v.example/hero.mp4,http://f.example/anna.jpg,SKU-3\n\
    hero-ben,http://v.example/hero.mp4,http://f.example/ben.jpg,SKU-4\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_render_asked_three_times_is_bought_once_and_written_three_times() {
    let sim = simulator(|_| {}).await;
    let batch = Batch::new(MANIFEST);

    let check = binary()
        .arg("check")
        .arg(batch.manifest())
        .output()
        .unwrap();
    let shown = text(&check.stdout);
    assert!(
        shown.contains("line 2 (hero-a), line 3 (hero-b), line 4 (hero-c) ask for the same render"),
        "{shown}"
    );

    let output = finish(batch.run_with_defaults(&sim.base_url(), &["--concurrency", "4"])).await;
    assert_exit(&output, 0);
    let stats = sim.stats();
    assert_eq!(
        stats.calls.create, 2,
        "one create per distinct render: {stats:?}"
    );
    let rows = batch.export();
    let row = |id: &str| rows.iter().find(|row| row["id"] == id).unwrap();
    let leaders: Vec<&str> = ["hero-a", "hero-b", "hero-c"]
        .into_iter()
        .filter(|id| row(id)["creates"] == "1")
        .collect();
    assert_eq!(leaders.len(), 1, "one of the three was created: {rows:?}");
    let leader = leaders[0];
    for id in ["hero-a", "hero-b", "hero-c"] {
        let row = row(id);
        assert_eq!(row["state"], "done", "{row:?}");
        assert_eq!(
            row["task_id"],
            self::row_task(&rows, leader),
            "{id} shares the task"
        );
        if id != leader {
            assert_eq!(row["flags"], format!("reuses={leader}"), "{row:?}");
            assert_eq!(row["creates"], "0");
        }
        let file = std::fs::read(batch.out().join(format!("{id}.mp4"))).unwrap();
        assert!(
            file == output_content(&row["task_id"], 64 * 1024),
            "{id} holds the render"
        );
    }
    assert_eq!(row("hero-ben")["creates"], "1");
}

fn row_task(rows: &[std::collections::HashMap<String, String>], id: &str) -> String {
    rows.iter().find(|row| row["id"] == id).unwrap()["task_id"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_reuse_renders_buys_each_take() {
    let sim = simulator(|_| {}).await;
    let batch = Batch::new(MANIFEST);
    let output = finish(batch.run_with_defaults(
        &sim.base_url(),
        &["--concurrency", "4", "--no-reuse-renders"],
    ))
    .await;
    assert_exit(&output, 0);
    assert_eq!(sim.stats().calls.create, 4);
}
