//! Helpers shared by the test modules: temporary folders, the real binary, and child
//! processes made from this test binary (to hold a database or be killed mid-write).

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Lines};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Output, Stdio};

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
