//! Helpers shared by the test modules: temporary folders, a simulator per test, the real binary
//! (with timings scaled to the simulator), and child processes made from this test binary (to
//! hold a database or be killed mid-write).

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Lines};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Output, Stdio};

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

    /// `run` through the real binary with the default flags: only the database, the output
    /// folder, the service and `extra`.
    pub fn run_with_defaults(&self, base_url: &str, extra: &[&str]) -> Command {
        let mut command = binary();
        command
            .env("AKOOL_API_KEY", KEY)
            .env_remove("RUST_LOG")
            .arg("--db")
            .arg(self.db())
            .arg("run")
            .arg(self.manifest())
            .arg("--out")
            .arg(self.out())
            .args(["--base-url", base_url, "--no-progress"])
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
pub async fn finish(command: Command) -> Output {
    wait(spawn(command)).await
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

/// Set in a child process: names the role a `child_*` test function plays there.
pub const CHILD_ROLE_ENV: &str = "HEADSWAP_TEST_CHILD_ROLE";
/// Set in a child process: the database the child works on.
pub const CHILD_DB_ENV: &str = "HEADSWAP_TEST_CHILD_DB";

/// The header every manifest in these tests uses unless it says otherwise.
pub const HEADER: &str = "id,video_url,face_url,obj_id,resolution,keep_original_sound";

pub fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("create a temporary folder")
}

/// Write `text` as a manifest file in `dir`.
pub fn write_manifest(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write the manifest");
    path
}

/// The real `headswap-batch` binary with `args`.
pub fn headswap(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_headswap-batch"))
        .args(args)
        .env_remove("HEADSWAP_DB")
        .env("NO_COLOR", "1")
        .output()
        .expect("run headswap-batch")
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The role this process plays, when it is a child started by [`ChildProcess::spawn`].
pub fn child_role() -> Option<(String, PathBuf)> {
    let role = std::env::var(CHILD_ROLE_ENV).ok()?;
    let db = std::env::var_os(CHILD_DB_ENV)?;
    Some((role, PathBuf::from(db)))
}

/// This test binary re-run as a child that executes only the test `test_name` (which acts
/// as the child when [`child_role`] says so). Killed when dropped.
pub struct ChildProcess {
    child: Child,
    pub stdin: Option<ChildStdin>,
    lines: Lines<BufReader<ChildStdout>>,
}

impl ChildProcess {
    pub fn spawn(test_name: &str, role: &str, db: &Path) -> ChildProcess {
        let mut child = Command::new(std::env::current_exe().expect("the test binary"))
            .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ROLE_ENV, role)
            .env(CHILD_DB_ENV, db)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the child process");
        let stdout = child.stdout.take().expect("child stdout");
        ChildProcess {
            stdin: child.stdin.take(),
            child,
            lines: BufReader::new(stdout).lines(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The child's next message starting with `prefix`, from there to the end of its line.
    /// Other lines are the test harness's own, and the harness's `test name ... ` may
    /// precede the first message on its line. Panics if the child ends first.
    pub fn next_line_starting(&mut self, prefix: &str) -> String {
        for line in self.lines.by_ref() {
            let line = line.expect("read the child's output");
            if let Some(start) = line.find(prefix) {
                return line[start..].to_string();
            }
        }
        panic!("the child ended before printing a line starting with {prefix:?}");
    }

    /// Send one line to the child.
    pub fn send(&mut self, line: &str) {
        use std::io::Write;
        let stdin = self.stdin.as_mut().expect("child stdin");
        writeln!(stdin, "{line}").expect("write to the child");
        stdin.flush().expect("flush to the child");
    }

    /// SIGKILL the child and reap it.
    pub fn kill_hard(&mut self) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) on our own child's pid, which has not been reaped yet.
        let result = unsafe { libc::kill(pid, libc::SIGKILL) };
        assert_eq!(result, 0, "SIGKILL the child");
        let status = self.child.wait().expect("reap the child");
        assert!(!status.success(), "the child was killed");
    }

    /// Close the child's stdin (its cue to exit) and wait for it.
    pub fn finish(mut self) {
        drop(self.stdin.take());
        let status = self.child.wait().expect("wait for the child");
        assert!(status.success(), "the child failed: {status}");
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
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
    wait_at_most(child, std::time::Duration::from_secs(120)).await
}

/// [`wait`], for a run that is expected to take long: killed (and the test failed) after
/// `limit`.
pub async fn wait_at_most(child: std::process::Child, limit: std::time::Duration) -> Output {
    wait_or_kill(child, limit)
        .await
        .expect("the command hung and was killed")
}

/// Wait for a run off the async threads; a run that outlives `limit` is killed and `None`
/// comes back (for a caller that reports it instead of panicking).
pub async fn wait_or_kill(
    child: std::process::Child,
    limit: std::time::Duration,
) -> Option<Output> {
    tokio::task::spawn_blocking(move || {
        let pid = child.id() as i32;
        let (finished, watchdog_sees) = std::sync::mpsc::channel::<()>();
        let watchdog = std::thread::spawn(move || {
            let timed_out = watchdog_sees.recv_timeout(limit).is_err();
            if timed_out {
                // SAFETY: kill(2) on our own child's pid; the child has not been reaped,
                // since its waiter is the thread that timed out waiting.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            timed_out
        });
        let output = child.wait_with_output().expect("the binary runs");
        let _ = finished.send(());
        let hung = watchdog.join().unwrap();
        (!hung).then_some(output)
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

/// The command ended with this exit code (the message shows its stderr).
#[track_caller]
pub fn assert_exit(output: &Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "stderr: {}",
        text(&output.stderr)
    );
}

/// Every job is `done` with the exact bytes its task rendered, no part file is left, and
/// every create the service saw twice belongs to a job flagged `possible_duplicate`.
#[track_caller]
pub fn assert_finished_correctly(
    case: &str,
    batch: &Batch,
    stats: &headswap_batch::simulator::Stats,
    output_bytes: u64,
) {
    let rows = batch.export();
    let mut flagged = std::collections::HashMap::new();
    for row in &rows {
        assert_eq!(row["state"], "done", "{case}: {row:?}");
        let file = std::fs::read(batch.out().join(format!("{}.mp4", row["id"]))).unwrap();
        assert!(
            file == headswap_batch::simulator::output_content(&row["task_id"], output_bytes),
            "{case}: {}'s file is not what its task rendered",
            row["id"]
        );
        let key = (row["video_url"].clone(), row["mappings"].clone());
        flagged.insert(key, row["flags"].contains("possible_duplicate"));
    }
    for entry in &stats.creates {
        let key = (entry.video_url.clone(), entry.mappings.clone());
        assert!(
            flagged.contains_key(&key),
            "{case}: a create for no job: {entry:?}"
        );
        if entry.count > 1 {
            assert_eq!(
                flagged.get(&key),
                Some(&true),
                "{case}: unflagged duplicate create {entry:?}"
            );
        }
    }
    assert_no_part_files(&batch.out());
}

/// Open a database with sled directly (to plant what the store must refuse). sled releases a
/// dropped handle's file lock from a background thread, so a database this process just
/// closed may still look locked for a moment: retry briefly.
pub fn open_raw_sled(path: &Path) -> sled::Db {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match sled::open(path) {
            Ok(db) => return db,
            Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(error) => panic!("open {}: {error}", path.display()),
        }
    }
}
