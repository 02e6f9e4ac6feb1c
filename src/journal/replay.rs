//! Reading a journal back: every line checked, damaged ones counted and skipped, the facts
//! folded into one summary per job ([`JobFacts`]) and the last analysis id per video.
//!
//! The fold follows a job's life as the run journals it: an intent opens a request, a task id
//! answers it, an output finishes it; a new intent means the previous request is over (its
//! task was lost or failed, or the create was refused). A new fingerprint starts the job over
//! (the row was replaced), so flags of the old row do not carry to the new one.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::JournalError;
use super::fact::{
    self, AnalysisFact, Fact, Header, IngestFact, IntentFact, LineDamage, OutputFact,
    RenderFailedFact,
};

/// Everything a journal says, folded.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Replay {
    /// The first header line, if it was readable.
    pub header: Option<Header>,
    /// Per job id.
    pub jobs: BTreeMap<String, JobFacts>,
    /// The last analysis id of each video, by video_url.
    pub analyses: BTreeMap<String, AnalysisFact>,
    /// The last ingest (its defaults are the ones recovery applies).
    pub ingest: Option<IngestFact>,
    pub stats: ReplayStats,
}

/// What replay read and what it skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayStats {
    /// Lines seen (a last line without its newline included).
    pub lines: u64,
    /// Lines read as facts (the header included).
    pub facts: u64,
    /// Lines that failed their check (malformed or checksum), the torn last line excluded.
    pub damaged: u64,
    /// Lines whose checksum matched but whose fact this version does not know.
    pub unknown: u64,
    /// The last line has no newline and did not check out: a write torn by a crash.
    pub torn_tail: bool,
    /// Byte offset of the first line that was not read as a fact, if any.
    pub first_damage_at: Option<u64>,
}

impl ReplayStats {
    /// Lines skipped for any reason.
    pub fn skipped(&self) -> u64 {
        self.damaged + self.unknown + u64::from(self.torn_tail)
    }
}

/// Where a job stands according to the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// A create may be on the wire: intent journalled, no answer.
    Submitting,
    /// No create in flight and no live task: refused before it ran, or the task was lost.
    Ready,
    /// The create's fate is unknown: flagged, and held if `held`.
    Ambiguous { held: bool },
    /// A task id is known: the render is paid for.
    Rendering,
    /// The render failed (status 4).
    RenderFailed,
    /// The output is complete.
    Finished,
}

/// One job's facts, folded: where it stands, and where in the file the lines with the rest
/// are (read with [`super::Journal::details`] when a job must be rebuilt or a file checked),
/// so that a replay of a large journal holds a few hundred bytes per job.
#[derive(Debug, Clone, PartialEq)]
pub struct JobFacts {
    pub id: String,
    pub stage: Stage,
    /// The fingerprint of the current request (from its intent, or its task id's fact).
    pub fingerprint: Option<String>,
    /// The live task (cleared by a new intent or a lost task).
    pub task: Option<TaskRef>,
    /// Some create of the current row may have been paid twice.
    pub possible_duplicate: bool,
    /// Where the current row's latest intent starts in the journal.
    pub intent_at: Option<u64>,
    /// Where the live task's fact starts (it repeats the request's mappings).
    pub task_at: Option<u64>,
    /// Where the live task's failure starts (stage `RenderFailed`).
    pub render_failed_at: Option<u64>,
    /// Where the finished output's fact starts (stage `Finished`).
    pub output_at: Option<u64>,
}

/// A task id and when it was created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRef {
    pub task_id: String,
    pub ms: u64,
}

impl JobFacts {
    fn new(id: &str) -> JobFacts {
        JobFacts {
            id: id.to_string(),
            stage: Stage::Ready,
            fingerprint: None,
            task: None,
            possible_duplicate: false,
            intent_at: None,
            task_at: None,
            render_failed_at: None,
            output_at: None,
        }
    }

    /// The live task's id (from its own fact or, if that line was damaged, from the failure
    /// or the output that names it).
    pub fn task_id(&self) -> Option<&str> {
        self.task.as_ref().map(|task| task.task_id.as_str())
    }

    /// A different fingerprint than the current one: the row was replaced, start over. (A
    /// compacted journal may open with the row's flags, before any fingerprint is known.)
    fn start_row(&mut self, fingerprint: &str) {
        match self.fingerprint.as_deref() {
            Some(current) if current == fingerprint => {}
            Some(_) => {
                *self = JobFacts::new(&self.id);
                self.fingerprint = Some(fingerprint.to_string());
            }
            None => self.fingerprint = Some(fingerprint.to_string()),
        }
    }

    /// A task named by a later fact when its own line was damaged.
    fn name_task(&mut self, task_id: &str, ms: u64) {
        if self.task.as_ref().map(|task| task.task_id.as_str()) != Some(task_id) {
            self.task = Some(TaskRef {
                task_id: task_id.to_string(),
                ms,
            });
            self.task_at = None;
        }
    }

    fn apply(&mut self, offset: u64, fact: &Fact) {
        match fact {
            Fact::Intent(intent) => {
                self.start_row(&intent.fingerprint);
                self.intent_at = Some(offset);
                self.task = None;
                self.task_at = None;
                self.render_failed_at = None;
                self.output_at = None;
                self.stage = Stage::Submitting;
            }
            Fact::Aborted(_) => {
                if self.stage == Stage::Submitting {
                    self.stage = Stage::Ready;
                }
            }
            Fact::Ambiguous(ambiguous) => {
                self.possible_duplicate = true;
                if matches!(
                    self.stage,
                    Stage::Submitting | Stage::Ready | Stage::Ambiguous { .. }
                ) {
                    self.stage = Stage::Ambiguous {
                        held: ambiguous.held,
                    };
                }
            }
            Fact::Task(task) => {
                if self.fingerprint.as_deref() != Some(&task.fingerprint) {
                    // Its intent's line is damaged and the row changed since the last one read.
                    self.start_row(&task.fingerprint);
                    self.intent_at = None;
                }
                self.task = Some(TaskRef {
                    task_id: task.task_id.clone(),
                    ms: task.ms,
                });
                self.task_at = Some(offset);
                self.render_failed_at = None;
                self.output_at = None;
                self.stage = Stage::Rendering;
            }
            Fact::TaskLost(_) => {
                // Forgotten by the service, or given up on by `retry` after a failed render.
                if matches!(self.stage, Stage::Rendering | Stage::RenderFailed) {
                    self.task = None;
                    self.task_at = None;
                    self.stage = Stage::Ready;
                }
            }
            Fact::RenderFailed(failed) => {
                self.name_task(&failed.task_id, failed.ms);
                self.render_failed_at = Some(offset);
                self.stage = Stage::RenderFailed;
            }
            Fact::Output(output) => {
                self.name_task(&output.task_id, output.ms);
                self.output_at = Some(offset);
                self.stage = Stage::Finished;
            }
            Fact::Header(_) | Fact::Ingest(_) | Fact::Analysis(_) => {}
        }
    }
}

/// A job's facts read back from their lines (see [`super::Journal::details`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Details {
    /// The current row's latest intent, if its line is readable.
    pub intent: Option<IntentFact>,
    /// The request's mappings (from the intent, or from the task's fact); empty when neither
    /// line is readable.
    pub mappings: Vec<(u32, String)>,
    pub render_failed: Option<RenderFailedFact>,
    pub output: Option<OutputFact>,
}

impl Replay {
    /// Fold one more fact in; `offset` is where its line starts in the journal.
    pub fn apply(&mut self, offset: u64, fact: Fact) {
        match fact {
            Fact::Header(header) => {
                if self.header.is_none() {
                    self.header = Some(header);
                }
            }
            Fact::Ingest(ingest) => self.ingest = Some(ingest),
            Fact::Analysis(analysis) => {
                self.analyses
                    .insert(analysis.video_url.to_string(), analysis);
            }
            fact => {
                let id = fact.job().expect("every other fact names a job");
                match self.jobs.get_mut(id) {
                    Some(job) => job.apply(offset, &fact),
                    None => {
                        let mut job = JobFacts::new(id);
                        job.apply(offset, &fact);
                        self.jobs.insert(id.to_string(), job);
                    }
                }
            }
        }
    }

    /// Jobs whose journal shows a request that reached (or may have reached) the service.
    pub fn paid_jobs(&self) -> impl Iterator<Item = &JobFacts> {
        self.jobs
            .values()
            .filter(|job| job.stage != Stage::Ready || job.possible_duplicate)
    }
}

/// Read and fold the journal of the database at `db` ([`JournalError::Missing`] if absent).
pub fn replay(db: &Path) -> Result<Replay, JournalError> {
    let path = super::journal_path(db);
    let file = File::open(&path).map_err(|error| match error.kind() {
        std::io::ErrorKind::NotFound => JournalError::Missing { path: path.clone() },
        _ => super::io_error(&path, error),
    })?;
    replay_file(&file, &path, u64::MAX)
}

/// Read and fold an open journal file from its start.
pub(super) fn replay_file(file: &File, path: &Path, end: u64) -> Result<Replay, JournalError> {
    let mut replay = Replay::default();
    let reader = PositionalReader {
        file,
        offset: 0,
        end,
    };
    let stats = for_each_fact(reader, |line, fact| replay.apply(line.offset, fact))
        .map_err(|error| super::io_error(path, error))?;
    replay.stats = stats;
    Ok(replay)
}

/// Every fact in `bytes`, in order, and what was skipped (for tests and tools).
pub fn read_facts(bytes: &[u8]) -> (Vec<Fact>, ReplayStats) {
    let mut facts = Vec::new();
    let stats = for_each_fact(bytes, |_, fact| facts.push(fact)).expect("reading memory");
    (facts, stats)
}

/// One line of a journal as read: where it starts, its bytes without the newline, and
/// whether the newline was there.
pub(super) struct Line<'a> {
    pub index: u64,
    pub offset: u64,
    pub bytes: &'a [u8],
    pub terminated: bool,
}

/// Call `each` for every line, in order. Zeros after the last line are room the writer made
/// ahead (or data a crash kept from the disk), not a line.
pub(super) fn for_each_line(
    reader: impl Read,
    mut each: impl FnMut(Line<'_>),
) -> std::io::Result<()> {
    let mut reader = BufReader::with_capacity(1 << 16, reader);
    let mut buffer = Vec::with_capacity(1024);
    let mut offset = 0u64;
    let mut index = 0u64;
    loop {
        buffer.clear();
        let read = reader.read_until(b'\n', &mut buffer)?;
        if read == 0 {
            return Ok(());
        }
        let terminated = buffer.last() == Some(&b'\n');
        let bytes = if terminated {
            &buffer[..buffer.len() - 1]
        } else {
            &buffer[..]
        };
        if !terminated && bytes.iter().all(|byte| *byte == 0) {
            return Ok(());
        }
        each(Line {
            index,
            offset,
            bytes,
            terminated,
        });
        offset += read as u64;
        index += 1;
    }
}

/// Call `each` for every line that checks out as a fact; count the others.
fn for_each_fact(
    reader: impl Read,
    mut each: impl FnMut(&Line<'_>, Fact),
) -> std::io::Result<ReplayStats> {
    let mut stats = ReplayStats::default();
    for_each_line(reader, |line| {
        stats.lines += 1;
        match fact::decode_line(line.bytes) {
            Ok(fact) => {
                stats.facts += 1;
                each(&line, fact);
                return;
            }
            Err(_) if !line.terminated => stats.torn_tail = true,
            Err(LineDamage::Unknown) => stats.unknown += 1,
            Err(LineDamage::Malformed | LineDamage::Checksum) => stats.damaged += 1,
        }
        stats.first_damage_at.get_or_insert(line.offset);
    })?;
    Ok(stats)
}

/// `Read` over positional reads from `offset` up to `end`, sharing the file with its writer.
pub(super) struct PositionalReader<'a> {
    pub file: &'a File,
    pub offset: u64,
    pub end: u64,
}

impl Read for PositionalReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let room = self.end.saturating_sub(self.offset).min(buf.len() as u64) as usize;
        let read = self.file.read_at(&mut buf[..room], self.offset)?;
        self.offset += read as u64;
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::fact::{AmbiguousFact, JobRef, TaskFact};

    fn intent(fingerprint: &str, ms: u64) -> Fact {
        Fact::Intent(IntentFact {
            job: "j".into(),
            ms,
            fingerprint: fingerprint.into(),
            video_url: "v".into(),
            faces: vec![(None, "f".into())],
            mappings: vec![(0, "f".into())],
            resolution: crate::akool::Resolution::P720,
            model_name: "m".into(),
            keep_original_sound: true,
            template_id: None,
        })
    }

    fn task(id: &str, fingerprint: &str) -> Fact {
        Fact::Task(TaskFact {
            job: "j".into(),
            task_id: id.into(),
            ms: 5,
            fingerprint: fingerprint.into(),
            mappings: vec![(1, "g".into())],
        })
    }

    fn reference() -> JobRef {
        JobRef {
            job: "j".into(),
            ms: 1,
        }
    }

    fn ambiguous(held: bool) -> Fact {
        Fact::Ambiguous(AmbiguousFact {
            job: "j".into(),
            held,
            ms: 1,
        })
    }

    fn output(task_id: &str) -> Fact {
        Fact::Output(OutputFact {
            job: "j".into(),
            task_id: task_id.into(),
            path: "out/j.mp4".into(),
            bytes: 1,
            sha256: "00".into(),
            ms: 9,
        })
    }

    fn fold(facts: Vec<Fact>) -> JobFacts {
        let mut replay = Replay::default();
        for (line, fact) in facts.into_iter().enumerate() {
            replay.apply(line as u64 * 100, fact);
        }
        replay.jobs["j"].clone()
    }

    #[track_caller]
    fn check(facts: Vec<Fact>, stage: Stage, task: Option<&str>, flagged: bool) {
        let job = fold(facts);
        assert_eq!(
            (job.stage, job.task_id(), job.possible_duplicate),
            (stage, task, flagged)
        );
    }

    #[test]
    fn a_job_stands_where_its_last_facts_put_it() {
        check(vec![intent("a", 1)], Stage::Submitting, None, false);
        check(
            vec![intent("a", 1), Fact::Aborted(reference())],
            Stage::Ready,
            None,
            false,
        );
        check(
            vec![intent("a", 1), ambiguous(true)],
            Stage::Ambiguous { held: true },
            None,
            true,
        );
        check(
            vec![intent("a", 1), ambiguous(false), intent("a", 2)],
            Stage::Submitting,
            None,
            true,
        );
        check(
            vec![intent("a", 1), task("t1", "a")],
            Stage::Rendering,
            Some("t1"),
            false,
        );
        check(
            vec![intent("a", 1), task("t1", "a"), Fact::TaskLost(reference())],
            Stage::Ready,
            None,
            false,
        );
        check(
            vec![
                intent("a", 1),
                task("t1", "a"),
                Fact::TaskLost(reference()),
                intent("a", 2),
            ],
            Stage::Submitting,
            None,
            false,
        );
        // `retry` of a failed render gives its task up: the job is ready to be created again.
        check(
            vec![
                intent("a", 1),
                task("t1", "a"),
                Fact::RenderFailed(RenderFailedFact {
                    job: "j".into(),
                    task_id: "t1".into(),
                    code: Some(3001),
                    message: "face not detected".into(),
                    ms: 2,
                }),
                Fact::TaskLost(reference()),
            ],
            Stage::Ready,
            None,
            false,
        );
        check(
            vec![intent("a", 1), task("t1", "a"), output("t1")],
            Stage::Finished,
            Some("t1"),
            false,
        );
    }

    #[test]
    fn a_new_row_starts_the_job_over() {
        check(
            vec![intent("a", 1), ambiguous(false), intent("b", 2)],
            Stage::Submitting,
            None,
            false,
        );
    }

    #[test]
    fn the_lines_of_the_current_request_are_remembered() {
        let job = fold(vec![intent("a", 1), task("t1", "a")]);
        assert_eq!((job.intent_at, job.task_at), (Some(0), Some(100)));
        let job = fold(vec![
            intent("a", 1),
            task("t1", "a"),
            Fact::TaskLost(reference()),
            intent("a", 2),
        ]);
        assert_eq!((job.intent_at, job.task_at), (Some(300), None));
    }

    #[test]
    fn a_task_whose_intent_was_lost_carries_its_own_request() {
        let job = fold(vec![intent("a", 1), task("t1", "b")]);
        assert_eq!(job.stage, Stage::Rendering);
        assert_eq!(job.fingerprint.as_deref(), Some("b"));
        assert_eq!((job.intent_at, job.task_at), (None, Some(100)));
        // An output whose task line was lost still names the task.
        let job = fold(vec![intent("a", 1), output("t9")]);
        assert_eq!(job.task_id(), Some("t9"));
        assert_eq!((job.task_at, job.output_at), (None, Some(100)));
    }

    #[test]
    fn only_jobs_that_reached_the_service_count_as_paid() {
        let mut replay = Replay::default();
        replay.apply(0, intent("a", 1));
        replay.apply(1, Fact::Aborted(reference()));
        assert_eq!(replay.paid_jobs().count(), 0);
        replay.apply(2, intent("a", 2));
        assert_eq!(replay.paid_jobs().count(), 1);
    }
}
