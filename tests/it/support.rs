//! Shared helpers of the integration suite: a simulator per test, manifests in temporary
//! folders, and the real binary with fast timings.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use headswap_batch::simulator::{SimKnobs, Simulator};

pub const KEY: &str = "test-key";

/// The real binary.
pub fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_headswap-batch"))
}

/// A simulator with fast timings and the test key; `tweak` adjusts the knobs.
pub async fn simulator(tweak: impl FnOnce(&mut SimKnobs)) -> Simulator {
    let mut knobs = SimKnobs {
        api_keys: vec![KEY.to_string()],
        analysis_time: std::time::Duration::from_millis(100),
        render_time: std::time::Duration::from_millis(300),
        output_bytes: 64 * 1024,
        ..SimKnobs::default()
    };
    tweak(&mut knobs);
    Simulator::start("127.0.0.1:0".parse().unwrap(), knobs)
        .await
        .expect("simulator starts")
}

/// A scratch folder with a manifest, a database path and an output folder.
pub struct Batch {
    pub dir: tempfile::TempDir,
}

impl Batch {
    pub fn new(manifest: &str) -> Batch {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("jobs.csv"), manifest).unwrap();
        Batch { dir }
    }
    pub fn manifest(&self) -> PathBuf {
        self.dir.path().join("jobs.csv")
    }
    pub fn db(&self) -> PathBuf {
        self.dir.path().join("state.db")
    }
    pub fn out(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    /// `run` through the real binary with timings scaled to the simulator.
    pub fn run_command(&self, base_url: &str, extra: &[&str]) -> Command {
        let mut command = binary();
        command
            .env("AKOOL_API_KEY", KEY)
            .env_remove("RUST_LOG")
            .arg("--db")
            .arg(self.db())
            .arg("-q")
            .arg("run")
            .arg(self.manifest())
            .arg("--out")
            .arg(self.out())
            .args(["--base-url", base_url])
            .args(["--rate", "200", "--burst", "20", "--concurrency", "8"])
            .args(["--poll-min", "20ms", "--poll-max", "500ms"])
            .args(["--analysis-guess", "100ms", "--render-guess", "300ms"])
            .args([
                "--backoff-base",
                "10ms",
                "--backoff-cap",
                "200ms",
                "--no-progress",
            ])
            .args(extra)
            .stdin(Stdio::null());
        command
    }

    /// `export` through the real binary, parsed into rows keyed by column name.
    pub fn export(&self) -> Vec<std::collections::HashMap<String, String>> {
        let output = binary()
            .arg("--db")
            .arg(self.db())
            .arg("export")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "export failed: {}",
            text(&output.stderr)
        );
        let mut reader = csv::Reader::from_reader(output.stdout.as_slice());
        let headers = reader.headers().unwrap().clone();
        reader
            .records()
            .map(|record| {
                let record = record.unwrap();
                headers
                    .iter()
                    .map(str::to_string)
                    .zip(record.iter().map(str::to_string))
                    .collect()
            })
            .collect()
    }
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Run a command to completion off the async runtime's threads. A run that hangs is killed
/// after two minutes (and the test fails) rather than left behind.
pub async fn finish(mut command: Command) -> Output {
    tokio::task::spawn_blocking(move || {
        let child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary runs");
        let pid = child.id() as i32;
        let (finished, watchdog_sees) = std::sync::mpsc::channel::<()>();
        let watchdog = std::thread::spawn(move || {
            let timed_out = watchdog_sees
                .recv_timeout(std::time::Duration::from_secs(120))
                .is_err();
            if timed_out {
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            timed_out
        });
        let output = child.wait_with_output().expect("the binary runs");
        let _ = finished.send(());
        assert!(
            !watchdog.join().unwrap(),
            "the command hung and was killed: {command:?}"
        );
        output
    })
    .await
    .unwrap()
}

/// No `.part` file is left in the folder.
#[track_caller]
pub fn assert_no_part_files(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        let parts: Vec<_> = entries
            .filter_map(|entry| entry.ok())
            .filter(|entry| entry.file_name().to_string_lossy().ends_with(".part"))
            .map(|entry| entry.file_name())
            .collect();
        assert!(parts.is_empty(), "part files left behind: {parts:?}");
    }
}

/// Spawn a command with its output captured, for tests that act while it runs.
pub fn spawn(mut command: Command) -> std::process::Child {
    command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs")
}

/// Wait for a spawned command off the async runtime's threads; like [`finish`], a run that
/// hangs is killed after two minutes and the test fails.
pub async fn wait(child: std::process::Child) -> Output {
    tokio::task::spawn_blocking(move || {
        let pid = child.id() as i32;
        let (finished, watchdog_sees) = std::sync::mpsc::channel::<()>();
        let watchdog = std::thread::spawn(move || {
            let timed_out = watchdog_sees
                .recv_timeout(std::time::Duration::from_secs(120))
                .is_err();
            if timed_out {
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            timed_out
        });
        let output = child.wait_with_output().expect("the binary runs");
        let _ = finished.send(());
        assert!(!watchdog.join().unwrap(), "the command hung and was killed");
        output
    })
    .await
    .unwrap()
}

/// Wait (at most a minute) until `condition` holds, checking every few milliseconds.
pub async fn until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !condition() {
        assert!(
            std::time::Instant::now() < deadline,
            "gave up waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
