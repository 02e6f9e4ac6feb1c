//! Reading a database that a run holds. sled lets one process open a database, so while a run
//! works, `export` and `report` ask the running process instead: it answers on a Unix socket
//! beside the database (`<db>.live.sock`, readable by its owner only) with every job and
//! analysis record, read from its own open store off its loop. The socket lives as long as
//! the run; a stale one (the process died) is replaced by the next run.
//!
//! The protocol is one request line (`records`) and JSON lines back, ended by `{"end":true}`,
//! so a reader knows an answer cut short from a complete one.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::exit::Fatal;
use crate::job::{AnalysisRecord, Job};
use crate::store::Store;

/// Where the running process answers: `<db>.live.sock` next to the database folder.
pub fn socket_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_os_string();
    name.push(".live.sock");
    PathBuf::from(name)
}

/// One line of an answer.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Line {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    job: Option<Job>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    analysis: Option<AnalysisRecord>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    end: bool,
}

/// The running process's side: answers until dropped, then removes the socket.
pub struct LiveServer {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for LiveServer {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Answer record requests for `store` (the run's own) on the database's socket. `None` when
/// the socket cannot be made (a path too long for a socket, a read-only folder): `export`
/// and `report` then say the database is in use, as before.
pub fn serve(store: Store, db: &Path) -> Option<LiveServer> {
    let path = socket_path(db);
    // This process holds the database, so a socket there is a dead run's.
    let _ = std::fs::remove_file(&path);
    let listener = match tokio::net::UnixListener::bind(&path) {
        Ok(listener) => listener,
        Err(error) => {
            tracing::debug!("no live record socket at {}: {error}", path.display());
            return None;
        }
    };
    let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let Ok(stream) = stream.into_std() else {
                continue;
            };
            let store = store.clone();
            tokio::task::spawn_blocking(move || {
                if let Err(error) = answer(&store, stream) {
                    tracing::debug!("live record request: {error}");
                }
            });
        }
    });
    Some(LiveServer { path, task })
}

fn answer(store: &Store, stream: std::os::unix::net::UnixStream) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut request = String::new();
    BufReader::new(&stream).read_line(&mut request)?;
    if request.trim() != "records" {
        return Ok(());
    }
    let mut out = std::io::BufWriter::new(&stream);
    let mut write = |line: &Line| -> std::io::Result<()> {
        serde_json::to_writer(&mut out, line)?;
        out.write_all(b"\n")
    };
    for job in store.jobs() {
        let job = job.map_err(std::io::Error::other)?;
        write(&Line {
            job: Some(job),
            ..Line::default()
        })?;
    }
    for analysis in store.analyses() {
        let analysis = analysis.map_err(std::io::Error::other)?;
        write(&Line {
            analysis: Some(analysis),
            ..Line::default()
        })?;
    }
    write(&Line {
        end: true,
        ..Line::default()
    })?;
    out.flush()
}

/// Ask the process running on `db` for its records.
pub fn fetch(db: &Path) -> Result<(Vec<Job>, Vec<AnalysisRecord>), Fatal> {
    let path = socket_path(db);
    let busy = || {
        Fatal::new(format!(
            "database {} is in use by another headswap-batch process, which does not answer record requests on {}",
            db.display(),
            path.display()
        ))
        .hint("a run answers them while it works; if it is starting or stopping, try again in a few seconds (`headswap-batch status` shows its progress meanwhile)")
    };
    let stream =
        std::os::unix::net::UnixStream::connect(&path).map_err(|error| busy().cause(error))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|error| busy().cause(error))?;
    (&stream)
        .write_all(b"records\n")
        .map_err(|error| busy().cause(error))?;
    let (mut jobs, mut analyses) = (Vec::new(), Vec::new());
    for line in BufReader::new(&stream).lines() {
        let line = line.map_err(|error| busy().cause(error))?;
        let line: Line = serde_json::from_str(&line).map_err(|error| busy().cause(error))?;
        if line.end {
            return Ok((jobs, analyses));
        }
        jobs.extend(line.job);
        analyses.extend(line.analysis);
    }
    Err(busy().cause("its answer was cut short"))
}
