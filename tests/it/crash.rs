//! The real binary SIGKILLed at random moments, then run to completion: nothing lost, nothing
//! paid twice except where flagged, every file exactly what the service served.

use std::time::Duration;

use rand::{Rng, SeedableRng};

use crate::support::{Batch, assert_exit, assert_finished_correctly, finish, simulator};

fn manifest() -> String {
    let mut csv = String::from("id,video_url,face_url,obj_id\n");
    for n in 0..24 {
        let video = n % 5;
        csv.push_str(&format!(
            "job-{n:02},http://v.example/video-{video}.mp4,http://f.example/face-{n}.jpg,\n"
        ));
    }
    csv.push_str("pair,http://v.example/pair.mp4?subjects=2,http://f.example/p0.jpg,0\n");
    csv.push_str("pair,http://v.example/pair.mp4?subjects=2,http://f.example/p1.jpg,1\n");
    csv
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_nothing_and_pays_once() {
    let sim = simulator(|knobs| {
        knobs.analysis_time = Duration::from_millis(150);
        knobs.render_time = Duration::from_millis(400);
        knobs.output_bytes = 1 << 20;
        knobs.seed = 7;
    })
    .await;
    let batch = Batch::new(&manifest());
    let mut rng = rand::rngs::StdRng::seed_from_u64(20261122);
    let mut killed = 0;
    for _ in 0..40 {
        let mut child = batch
            .run_command(&sim.base_url(), &["--concurrency", "2"])
            .spawn()
            .unwrap();
        // The kill moment is the experiment's random variable, not a wait for a result.
        tokio::time::sleep(Duration::from_millis(rng.random_range(20..400))).await;
        if child.try_wait().unwrap().is_some() {
            break;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        killed += 1;
    }
    assert!(
        killed >= 20,
        "the batch finished after only {killed} kills; make it longer"
    );

    let output = finish(batch.run_command(&sim.base_url(), &[])).await;
    assert_exit(&output, 0);

    let rows = batch.export();
    assert_eq!(rows.len(), 25);
    let stats = sim.stats();
    assert_finished_correctly("random kills", &batch, &stats, 1 << 20);
    assert_eq!(stats.creates.len(), 25, "every job was created");
    sim.shutdown().await;
}
