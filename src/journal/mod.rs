//! The journal: an append-only file of the facts that cost money, beside the database, so a
//! damaged database can be rebuilt without buying anything twice (see `src/recover/`).
//!
//! `<db>.journal` sits next to the database folder, not inside it: whatever happens to the
//! folder — sled's files garbled or truncated, the folder emptied, deleted, or moved aside by
//! recovery — the journal is not part of it, and sled never opens, truncates or rewrites it.
//!
//! One fact per line, each line checked by its own CRC-32 (`fact.rs`), so a torn or garbled
//! line is detected and skipped, never misread. Appends are buffered; [`Journal::sync`] (or
//! [`Journal::sync_async`]) writes them and fdatasyncs the file (and its folder when the file
//! is new). It belongs in the same group commit as the database flush, before any request
//! that depends on what was appended leaves. The file grows ahead of its lines (zeros written
//! in chunks), so that a sync overwrites space the file already has, which costs a quarter of
//! an fdatasync that also grows it. The file is compacted once it has grown well past what its
//! facts need (`compact.rs`), by writing a new file and renaming it over the old one.
//! [`replay`] folds a journal into per-job and per-video summaries (`replay.rs`).
//!
//! This module owns the journal file and nothing else: it never writes the database (only
//! compaction reads it, to drop facts of jobs the database has since replaced).

mod compact;
pub mod fact;
mod replay;
mod writer;

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use compact::CompactReport;
pub use fact::{Fact, JOURNAL_VERSION};
pub use replay::{Details, JobFacts, Replay, ReplayStats, Stage, TaskRef, read_facts, replay};

use crate::store::StoreError;
use writer::{Completion, Write, lock as lock_state};

/// A journal is compacted once its facts take more than this many bytes beyond twice what
/// the last compaction kept (so compaction work stays proportional to what is appended).
const COMPACT_SLACK: u64 = 1 << 20;

/// The journal file is grown by writing zeros ahead of its facts, at least this much at a
/// time: an fdatasync of bytes written over space the file already has costs a quarter of one
/// that also grows the file (measured on ext4: 0.16 ms against 0.68 ms), and it is paid once
/// per group commit. Replay takes the zeros after the last line as free space.
const MIN_GROWTH: u64 = 256 << 10;
/// ... and at most this much: a quarter of the journal's size in between.
const MAX_GROWTH: u64 = 16 << 20;

/// Why the journal cannot be used.
#[derive(thiserror::Error, Debug)]
pub enum JournalError {
    #[error("journal {path} is in use by another headswap-batch process", path = .path.display())]
    Locked { path: PathBuf },
    #[error(
        "journal {path} was written by a newer headswap-batch (journal version {found}; this version reads up to {supported})",
        path = .path.display()
    )]
    NewerVersion {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("no journal at {path}", path = .path.display())]
    Missing { path: PathBuf },
    #[error("cannot use journal {path}: {cause}", path = .path.display())]
    Io { path: PathBuf, cause: String },
    /// Compaction reads the database to find jobs it has replaced.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<JournalError> for crate::exit::Fatal {
    fn from(error: JournalError) -> crate::exit::Fatal {
        let hint = match &error {
            JournalError::Locked { .. } => {
                "wait for the other run to finish (or stop it); `headswap-batch status` shows its progress meanwhile"
            }
            JournalError::NewerVersion { .. } => {
                "use the newer headswap-batch with this database, or give another --db"
            }
            JournalError::Missing { .. } => {
                "the journal is written by `run` beside the database; without it nothing can be recovered"
            }
            JournalError::Io { .. } => {
                "check the folder that holds the database: the journal lives beside it"
            }
            JournalError::Store(_) => "check the database with `headswap-batch status`",
        };
        crate::exit::Fatal::new(error.to_string()).hint(hint)
    }
}

/// Where the journal of a database lives: `headswap.db` → `headswap.db.journal`.
pub fn journal_path(db: &Path) -> PathBuf {
    sibling(db, ".journal")
}

/// An open journal, held exclusively by this process (a file lock, like sled's).
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: Arc<File>,
    /// Lines appended and not yet written.
    pending: Vec<u8>,
    /// Where the next line goes: the end of the last line written (the zeros after it are
    /// room made ahead).
    end: u64,
    /// The file's size, zeros included.
    allocated: u64,
    /// Bytes of facts the last compaction kept (from the header).
    base: u64,
    /// The file is new (or was just replaced): its folder must be fsynced once.
    folder_unsynced: bool,
    /// Lines were written without an fdatasync since the last one.
    unsynced: bool,
    /// Set when a write failed part-way: the file may end in a partial line that the next
    /// write would run into, so nothing more is written through this handle.
    poison: Arc<Mutex<Option<String>>>,
    /// The write started last (writes run one after the other, in the order started).
    last: Option<Arc<Completion>>,
}

/// A sync started with [`Journal::start_sync`]: resolves once the facts appended before it
/// are durable (or the write failed).
#[derive(Debug, Clone)]
pub struct Durable {
    completion: Arc<Completion>,
    path: PathBuf,
}

impl Durable {
    /// Wait until the facts are durable.
    pub async fn wait(&self) -> Result<(), JournalError> {
        self.completion
            .wait()
            .await
            .map_err(|cause| JournalError::Io {
                path: self.path.clone(),
                cause,
            })
    }

    /// True once the write has finished, well or not.
    pub fn is_done(&self) -> bool {
        self.completion.is_done()
    }
}

impl Journal {
    /// Open (or create) the journal of the database at `db`.
    ///
    /// A journal written by a newer version is refused. A last line without its newline (a
    /// write torn by a crash) is ended with one before anything else is written, so the next
    /// fact starts on a line of its own; replay counts the torn line as damaged.
    pub fn open(db: &Path) -> Result<Journal, JournalError> {
        Journal::open_inner(&journal_path(db), true)
    }

    /// Open the journal of the database at `db` only if it exists ([`JournalError::Missing`]
    /// otherwise): recovery must not leave an empty journal behind.
    pub fn open_existing(db: &Path) -> Result<Journal, JournalError> {
        Journal::open_inner(&journal_path(db), false)
    }

    fn open_inner(path: &Path, create: bool) -> Result<Journal, JournalError> {
        let io = |error: std::io::Error| io_error(path, error);
        let open = |new: bool| {
            let mut options = OpenOptions::new();
            options.read(true).write(true);
            if new {
                options.create_new(true);
            }
            options.open(path)
        };
        let (file, created) = match open(false) {
            Ok(file) => (file, false),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound && create => {
                match open(true) {
                    Ok(file) => (file, true),
                    // Another process created it meanwhile: use theirs (the lock decides).
                    Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                        (open(false).map_err(io)?, false)
                    }
                    Err(error) => return Err(io(error)),
                }
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Err(JournalError::Missing {
                    path: path.to_path_buf(),
                });
            }
            Err(error) => return Err(io(error)),
        };
        lock(&file, path)?;
        let allocated = file.metadata().map_err(io)?.len();
        let end = end_of_lines(&file, allocated).map_err(io)?;
        let mut journal = Journal {
            path: path.to_path_buf(),
            file: Arc::new(file),
            pending: Vec::new(),
            end,
            allocated,
            base: 0,
            folder_unsynced: created,
            unsynced: false,
            poison: Arc::default(),
            last: None,
        };
        if end == 0 {
            journal.append(&Fact::Header(fact::Header {
                v: JOURNAL_VERSION,
                ms: crate::now_ms(),
                base: 0,
            }));
        } else {
            if let Some(header) = read_header(&journal.file).map_err(io)? {
                if header.v > JOURNAL_VERSION {
                    return Err(JournalError::NewerVersion {
                        path: path.to_path_buf(),
                        found: header.v,
                        supported: JOURNAL_VERSION,
                    });
                }
                journal.base = header.base;
            }
            let mut last = [0u8];
            journal.file.read_exact_at(&mut last, end - 1).map_err(io)?;
            if last[0] != b'\n' {
                journal.pending.push(b'\n');
            }
        }
        Ok(journal)
    }

    /// The journal file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Buffer one fact. Nothing reaches the file before the next [`Journal::sync`].
    pub fn append(&mut self, fact: &Fact) {
        fact::encode_line(fact, &mut self.pending);
    }

    /// Bytes appended and not yet synced.
    pub fn pending_bytes(&self) -> usize {
        self.pending.len()
    }

    /// The journal's lines, in bytes, once everything appended is written (the room made
    /// ahead is not counted).
    pub fn len(&self) -> u64 {
        self.end + self.pending.len() as u64
    }

    /// True when the journal holds nothing, not even its header.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Make everything appended so far durable: write it, fdatasync the file, and fsync its
    /// folder if the file is new (after any write still under way). Free when nothing was
    /// appended since the last call.
    pub fn sync(&mut self) -> Result<(), JournalError> {
        match self.next_write(true)? {
            Some(write) => write.execute(&self.file),
            None => self.wait_for_last(),
        }
        .map_err(|cause| self.io(cause))
    }

    /// [`Journal::sync`] off the async runtime's threads, so it can run beside
    /// `Store::flush_async` in one group commit (`tokio::join!`).
    pub async fn sync_async(&mut self) -> Result<(), JournalError> {
        self.start(true).wait().await
    }

    /// Write what was appended without waiting for the disk: it survives the process being
    /// killed, not a power cut, until the next sync. For a group commit that lets no create
    /// leave.
    pub async fn write_async(&mut self) -> Result<(), JournalError> {
        self.start(false).wait().await
    }

    /// Start making everything appended so far durable, off the async runtime's threads, and
    /// return at once: appends may go on while it runs. Hold each request that depends on
    /// those facts until the returned [`Durable::wait`] succeeds. Syncs run one after the
    /// other in the order started. Must be called within a tokio runtime.
    pub fn start_sync(&mut self) -> Durable {
        self.start(true)
    }

    fn start(&mut self, durable: bool) -> Durable {
        let completion = match self.next_write(durable) {
            Err(error) => Completion::done(Err(error.to_string())),
            Ok(None) => self
                .last
                .clone()
                .unwrap_or_else(|| Completion::done(Ok(()))),
            Ok(Some(write)) => {
                let completion = Arc::clone(&write.done);
                let file = Arc::clone(&self.file);
                tokio::task::spawn_blocking(move || write.execute(&file));
                completion
            }
        };
        Durable {
            completion,
            path: self.path.clone(),
        }
    }

    /// Wait for the write started last, if any.
    fn wait_for_last(&self) -> Result<(), String> {
        match &self.last {
            Some(last) => last.wait_blocking(),
            None => Ok(()),
        }
    }

    /// The next write, its place in the file reserved (so appends can go on while it runs),
    /// or `None` when there is nothing to do.
    fn next_write(&mut self, durable: bool) -> Result<Option<Write>, JournalError> {
        if let Some(cause) = lock_state(&self.poison).clone() {
            return Err(self.io(cause));
        }
        let to_sync = durable && (self.unsynced || self.folder_unsynced);
        if self.pending.is_empty() && !to_sync {
            return Ok(None);
        }
        let bytes = std::mem::take(&mut self.pending);
        let at = self.end;
        self.end += bytes.len() as u64;
        // Grow ahead: zeros after the lines, so the next syncs overwrite space the file has.
        let grow_to = (self.end > self.allocated).then(|| {
            let growth = (self.end / 4).clamp(MIN_GROWTH, MAX_GROWTH);
            self.end + growth
        });
        self.allocated = self.allocated.max(grow_to.unwrap_or(0));
        let folder = (durable && self.folder_unsynced).then(|| parent_folder(&self.path));
        if durable {
            self.unsynced = false;
            self.folder_unsynced = false;
        } else if !bytes.is_empty() {
            self.unsynced = true;
        }
        let done = Arc::new(Completion::default());
        let previous = self.last.replace(Arc::clone(&done));
        Ok(Some(Write {
            at,
            bytes,
            grow_to,
            durable,
            folder,
            previous,
            done,
            poison: Arc::clone(&self.poison),
        }))
    }

    fn io(&self, cause: String) -> JournalError {
        JournalError::Io {
            path: self.path.clone(),
            cause,
        }
    }

    /// Whether the journal has grown enough past its last compaction to be worth compacting.
    pub fn compaction_due(&self) -> bool {
        self.len() > self.base.saturating_mul(2) + COMPACT_SLACK
    }

    /// Compact if [`Journal::compaction_due`] says so (see [`Journal::compact`]).
    pub fn compact_if_due(
        &mut self,
        store: &crate::store::Store,
    ) -> Result<Option<CompactReport>, JournalError> {
        if !self.compaction_due() {
            return Ok(None);
        }
        self.compact(store).map(Some)
    }

    /// Rewrite the journal to the facts still needed, atomically (a new file, fsynced,
    /// renamed over this one, the folder fsynced). Syncs what is pending first.
    ///
    /// Kept: every job's facts since its last intent (its latest request, task id, output,
    /// failure), every ambiguity of its current request, the last analysis id of each video
    /// and the last ingest. Dropped: superseded intents and tasks, damaged lines, and the
    /// facts of a job the database has replaced with a new row that was never submitted.
    /// Finished jobs keep their facts: a database damaged later must still know their task
    /// ids and their files' SHA-256, or it would buy their renders again.
    pub fn compact(&mut self, store: &crate::store::Store) -> Result<CompactReport, JournalError> {
        self.sync()?;
        self.last = None;
        let (file, report) = compact::rewrite(&self.path, &self.file, self.end, store)?;
        self.file = Arc::new(file);
        self.end = report.bytes_after;
        self.allocated = report.bytes_after;
        self.base = report.kept_bytes;
        self.folder_unsynced = false;
        self.unsynced = false;
        Ok(report)
    }

    /// The facts of a job [`Journal::replay`] folded, read back from their lines: its
    /// request (the intent, and the mappings from the intent or, when that line is damaged,
    /// from the task's fact), its render failure, its output. The offsets are those of the
    /// last replay: the journal must not have been compacted since.
    pub fn details(&self, facts: &JobFacts) -> Result<Details, JournalError> {
        let read = |offset: Option<u64>| -> Result<Option<Fact>, JournalError> {
            let Some(offset) = offset else {
                return Ok(None);
            };
            let line =
                read_line_at(&self.file, offset).map_err(|error| io_error(&self.path, error))?;
            let fact = fact::decode_line(&line)
                .ok()
                .filter(|fact| fact.job() == Some(facts.id.as_str()));
            match fact {
                Some(fact) => Ok(Some(fact)),
                None => Err(self.io(format!(
                    "the line at byte {offset} is not a fact of job {} (was the journal compacted since it was read?)",
                    facts.id
                ))),
            }
        };
        let intent = match read(facts.intent_at)? {
            Some(Fact::Intent(intent)) => Some(intent),
            _ => None,
        };
        let mappings = match (&intent, read(facts.task_at)?) {
            (Some(intent), _) => intent.mappings.clone(),
            (None, Some(Fact::Task(task))) => task.mappings,
            (None, _) => Vec::new(),
        };
        let render_failed = match read(facts.render_failed_at)? {
            Some(Fact::RenderFailed(failed)) => Some(failed),
            _ => None,
        };
        let output = match read(facts.output_at)? {
            Some(Fact::Output(output)) => Some(output),
            _ => None,
        };
        Ok(Details {
            intent,
            mappings,
            render_failed,
            output,
        })
    }

    /// Read the journal back: everything written so far (after any write under way), not
    /// what is appended and not yet handed to a write.
    pub fn replay(&self) -> Result<Replay, JournalError> {
        self.wait_for_last().map_err(|cause| self.io(cause))?;
        replay::replay_file(&self.file, &self.path, self.end)
    }
}

/// The header of a journal file, if its first line is one (read from the first 4 KiB).
fn read_header(file: &File) -> std::io::Result<Option<fact::Header>> {
    let mut first = vec![0u8; 4096];
    let mut filled = 0;
    while filled < first.len() {
        let read = file.read_at(&mut first[filled..], filled as u64)?;
        if read == 0 {
            break;
        }
        filled += read;
    }
    let line = first[..filled]
        .split(|byte| *byte == b'\n')
        .next()
        .unwrap_or(&[]);
    Ok(match fact::decode_line(line) {
        Ok(Fact::Header(header)) => Some(header),
        _ => None,
    })
}

/// The line that starts at `offset`, without its newline.
fn read_line_at(file: &File, offset: u64) -> std::io::Result<Vec<u8>> {
    let mut line = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut at = offset;
    loop {
        let read = file.read_at(&mut chunk, at)?;
        if read == 0 {
            return Ok(line);
        }
        if let Some(end) = chunk[..read].iter().position(|byte| *byte == b'\n') {
            line.extend_from_slice(&chunk[..end]);
            return Ok(line);
        }
        line.extend_from_slice(&chunk[..read]);
        at += read as u64;
    }
}

/// Where the lines of a journal file end: after its last byte that is not zero (the zeros
/// after it are room made ahead, or data a crash did not let reach the disk).
fn end_of_lines(file: &File, size: u64) -> std::io::Result<u64> {
    let mut block = vec![0u8; 64 << 10];
    let mut end = size;
    while end > 0 {
        let start = end.saturating_sub(block.len() as u64);
        let chunk = &mut block[..(end - start) as usize];
        file.read_exact_at(chunk, start)?;
        if let Some(last) = chunk.iter().rposition(|byte| *byte != 0) {
            return Ok(start + last as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

/// Take the journal's exclusive lock (flock, released when the file is closed).
fn lock(file: &File, path: &Path) -> Result<(), JournalError> {
    // SAFETY: flock(2) on a descriptor this function's caller owns.
    let result = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if result == 0 {
        return Ok(());
    }
    let error = std::io::Error::last_os_error();
    if error.kind() == std::io::ErrorKind::WouldBlock {
        return Err(JournalError::Locked {
            path: path.to_path_buf(),
        });
    }
    Err(io_error(path, error))
}

fn io_error(path: &Path, error: std::io::Error) -> JournalError {
    JournalError::Io {
        path: path.to_path_buf(),
        cause: error.to_string(),
    }
}

/// The folder a file is in (`.` for a bare file name).
fn parent_folder(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// `<db><suffix>` beside the database folder.
pub(crate) fn sibling(db: &Path, suffix: &str) -> PathBuf {
    match (db.parent(), db.file_name()) {
        (Some(parent), Some(name)) => {
            let mut file_name = name.to_os_string();
            file_name.push(suffix);
            parent.join(file_name)
        }
        _ => {
            let mut path = db.as_os_str().to_os_string();
            path.push(suffix);
            PathBuf::from(path)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn analysis(n: usize) -> Fact {
        Fact::analysis(
            &format!("https://v.example/{n}.mp4"),
            &format!("a-{n}"),
            n as u64,
        )
    }

    fn db(dir: &tempfile::TempDir) -> PathBuf {
        dir.path().join("state.db")
    }

    #[test]
    fn the_journal_sits_beside_the_database_folder() {
        assert_eq!(
            journal_path(Path::new("/data/headswap.db")),
            Path::new("/data/headswap.db.journal")
        );
        assert_eq!(
            journal_path(Path::new("headswap.db")),
            Path::new("headswap.db.journal")
        );
    }

    #[test]
    fn appends_reach_the_file_only_when_synced() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::open(&db(&dir)).unwrap();
        journal.sync().unwrap();
        let facts_on_disk = |journal: &Journal| {
            let (facts, stats) = read_facts(&std::fs::read(journal.path()).unwrap());
            assert_eq!(stats.skipped(), 0, "the room made ahead is not a line");
            facts.len()
        };
        assert_eq!(facts_on_disk(&journal), 1, "the header");
        journal.append(&analysis(1));
        assert_eq!(facts_on_disk(&journal), 1, "buffered, not written");
        journal.sync().unwrap();
        journal.sync().unwrap();
        assert_eq!(facts_on_disk(&journal), 2);
        let replay = journal.replay().unwrap();
        assert_eq!(replay.stats.facts, 2);
        assert_eq!(replay.header.as_ref().map(|header| header.v), Some(1));
        assert_eq!(
            replay.analyses["https://v.example/1.mp4"].analysis_id,
            "a-1"
        );
    }

    #[test]
    fn the_file_grows_ahead_of_its_lines_and_reopens_at_their_end() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::open(&db(&dir)).unwrap();
        journal.append(&analysis(1));
        journal.sync().unwrap();
        let size = std::fs::metadata(journal.path()).unwrap().len();
        assert!(size >= MIN_GROWTH, "room was made ahead: {size}");
        let end = journal.len();
        for n in 2..50 {
            journal.append(&analysis(n));
            journal.sync().unwrap();
        }
        assert_eq!(
            std::fs::metadata(journal.path()).unwrap().len(),
            size,
            "the lines went into that room"
        );
        assert!(journal.len() > end);
        let length = journal.len();
        drop(journal);
        let mut journal = Journal::open(&db(&dir)).unwrap();
        assert_eq!(journal.len(), length, "reopened where the lines end");
        journal.append(&analysis(50));
        journal.sync().unwrap();
        let (facts, stats) = read_facts(&std::fs::read(journal.path()).unwrap());
        assert_eq!(facts[1..], (1..=50).map(analysis).collect::<Vec<_>>());
        assert_eq!(stats.skipped(), 0);
        // Growing past the room makes more.
        for n in 0..5000 {
            journal.append(&analysis(n));
        }
        journal.sync().unwrap();
        assert!(std::fs::metadata(journal.path()).unwrap().len() > journal.len());
        assert_eq!(journal.replay().unwrap().stats.facts, 5051);
    }

    #[test]
    fn a_second_writer_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Journal::open(&db(&dir)).unwrap();
        assert!(matches!(
            Journal::open(&db(&dir)),
            Err(JournalError::Locked { .. })
        ));
    }

    #[test]
    fn a_missing_journal_is_not_created_by_open_existing() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            Journal::open_existing(&db(&dir)),
            Err(JournalError::Missing { .. })
        ));
        assert!(!journal_path(&db(&dir)).exists());
    }

    #[test]
    fn a_torn_last_line_is_ended_before_the_next_fact() {
        let dir = tempfile::tempdir().unwrap();
        let path = journal_path(&db(&dir));
        {
            let mut journal = Journal::open(&db(&dir)).unwrap();
            journal.append(&analysis(1));
            journal.append(&analysis(2));
            journal.sync().unwrap();
        }
        // Cut the last line short, as a crash inside a write leaves it (the rest zeros).
        let end = {
            let journal = Journal::open(&db(&dir)).unwrap();
            journal.len()
        };
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[end as usize - 7..].fill(0);
        std::fs::write(&path, &bytes).unwrap();
        let (facts, stats) = read_facts(&std::fs::read(&path).unwrap());
        assert_eq!(facts.len(), 2, "header and the first fact");
        assert!(stats.torn_tail);

        let mut journal = Journal::open(&db(&dir)).unwrap();
        journal.append(&analysis(3));
        journal.sync().unwrap();
        let (facts, stats) = read_facts(&std::fs::read(&path).unwrap());
        assert_eq!(facts[1..], [analysis(1), analysis(3)]);
        assert!(!stats.torn_tail);
        assert_eq!(stats.damaged, 1, "the torn line, now ended, is counted");
    }

    #[test]
    fn a_journal_from_a_newer_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut line = Vec::new();
        fact::encode_line(
            &Fact::Header(fact::Header {
                v: JOURNAL_VERSION + 1,
                ms: 1,
                base: 0,
            }),
            &mut line,
        );
        std::fs::write(journal_path(&db(&dir)), &line).unwrap();
        match Journal::open(&db(&dir)) {
            Err(JournalError::NewerVersion { found, .. }) => assert_eq!(found, 2),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn write_async_hands_lines_to_the_file_without_waiting_for_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::open(&db(&dir)).unwrap();
        journal.append(&analysis(1));
        journal.write_async().await.unwrap();
        assert!(journal.unsynced, "written, not yet synced");
        let (facts, _) = read_facts(&std::fs::read(journal.path()).unwrap());
        assert_eq!(facts[1..], [analysis(1)]);
        // The next sync has work even with nothing new appended: the fdatasync.
        journal.sync_async().await.unwrap();
        assert!(!journal.unsynced);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn background_syncs_keep_their_order_while_appends_go_on() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::open(&db(&dir)).unwrap();
        let mut started = Vec::new();
        for n in 0..2000 {
            journal.append(&analysis(n));
            if n % 37 == 0 {
                started.push((n, journal.start_sync()));
            }
        }
        // Waiting for any sync means every fact appended before it is durable.
        let (last_started, durable) = started.last().unwrap().clone();
        durable.wait().await.unwrap();
        assert!(started.iter().all(|(_, durable)| durable.is_done()));
        let (facts, stats) = read_facts(&std::fs::read(journal.path()).unwrap());
        assert_eq!(stats.skipped(), 0);
        assert_eq!(
            facts[1..],
            (0..=last_started).map(analysis).collect::<Vec<_>>()
        );
        // A blocking sync after background ones takes the rest.
        journal.sync().unwrap();
        let replay = journal.replay().unwrap();
        assert_eq!(replay.stats.facts, 2001);
        // Nothing appended: the last sync's outcome, at once.
        journal.start_sync().wait().await.unwrap();
    }

    #[tokio::test]
    async fn sync_async_makes_appends_durable_like_sync() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::open(&db(&dir)).unwrap();
        for n in 0..100 {
            journal.append(&analysis(n));
            if n % 10 == 9 {
                journal.sync_async().await.unwrap();
            }
        }
        assert_eq!(journal.pending_bytes(), 0);
        let (facts, stats) = read_facts(&std::fs::read(journal.path()).unwrap());
        assert_eq!(facts.len(), 101);
        assert_eq!(facts[1..], (0..100).map(analysis).collect::<Vec<_>>());
        assert_eq!(stats.skipped(), 0);
    }
}
