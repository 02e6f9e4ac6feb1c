//! The real binary killed (SIGKILL) at every named boundary of a job's life, then run again:
//! nothing lost, no duplicate create except in the ambiguous window (and then flagged), no part
//! file left behind, every output exactly what the service served.

use std::os::unix::process::ExitStatusExt;

use headswap_batch::crash::{self, POINTS};
use headswap_batch::simulator::output_content;

use crate::support::{Batch, assert_no_part_files, finish, simulator, text};

const MANIFEST: &str = "\
id,video_url,face_url,obj_id
one,http://v.example/a.mp4,http://f.example/1.jpg,
two,http://v.example/a.mp4,http://f.example/2.jpg,
pair,http://v.example/b.mp4?subjects=2,http://f.example/3.jpg,0
pair,http://v.example/b.mp4?subjects=2,http://f.example/4.jpg,1
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_at_every_named_point_loses_nothing() {
    for point in POINTS {
        for nth in [1, 2] {
            check_point(point, nth).await;
        }
    }
}

async fn check_point(point: &str, nth: u32) {
    let sim = simulator(|knobs| knobs.output_bytes = 300_000).await;
    let batch = Batch::new(MANIFEST);
    let mut command = batch.run_command(&sim.base_url(), &[]);
    command.env("HEADSWAP_CRASH_AT", format!("{point}:{nth}"));
    let output = finish(command).await;
    assert_eq!(
        output.status.signal(),
        Some(libc::SIGKILL),
        "{point}:{nth} was reached and killed the run; stderr: {}",
        text(&output.stderr)
    );

    let output = finish(batch.run_command(&sim.base_url(), &[])).await;
    assert_eq!(
        output.status.code(),
        Some(0),
        "{point}:{nth}: {}",
        text(&output.stderr)
    );
    let rows = batch.export();
    assert_eq!(rows.len(), 3, "{point}:{nth}");
    let stats = sim.stats();
    for row in &rows {
        assert_eq!(row["state"], "done", "{point}:{nth}: {row:?}");
        let file = std::fs::read(batch.out().join(format!("{}.mp4", row["id"]))).unwrap();
        assert_eq!(
            file,
            output_content(&row["task_id"], 300_000),
            "{point}:{nth}: {row:?}"
        );
        let creates = stats
            .creates
            .iter()
            .find(|entry| entry.video_url == row["video_url"] && entry.mappings == row["mappings"])
            .map(|entry| entry.count);
        let flagged = row["flags"].contains("possible_duplicate");
        match creates {
            Some(1) => {}
            Some(2) => assert!(
                flagged,
                "{point}:{nth}: a duplicate that is not flagged: {row:?}"
            ),
            other => panic!("{point}:{nth}: {other:?} creates for {row:?}"),
        }
    }
    if point == crash::CREATE_ANSWERED {
        // The create was answered and the answer lost with the process: the job was
        // resubmitted, and is flagged (checked above).
        assert!(stats.duplicate_creates >= 1, "{point}:{nth}: {stats:?}");
    }
    assert_no_part_files(&batch.out());
    sim.shutdown().await;
}
