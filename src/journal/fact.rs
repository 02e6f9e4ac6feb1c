//! The facts a journal holds and their line format: `<crc32 as 8 hex digits> <json>\n`.
//!
//! A line counts only if its checksum matches its JSON and the JSON decodes into a [`Fact`];
//! anything else (a torn write, a flipped bit, zeros a file system left after a power cut) is
//! reported as damaged and never read as a fact. The JSON of every fact kind is spelled out
//! here, field by field, so that the format does not change when the job record's does.
//!
//! A fact holds ids, the manifest's own URLs, file paths and hashes — never a credential: no
//! constructor takes one, and no field could carry one.

use serde::{Deserialize, Serialize};

use crate::akool::{Mapping, Resolution};
use crate::job::{Face, Job, JobId, JobSpec, VideoUrl};
use crate::manifest::Defaults;

/// The version of the journal format this build writes and reads.
pub const JOURNAL_VERSION: u32 = 1;

/// The longest service message kept in a render failure fact.
const MESSAGE_LIMIT: usize = 300;

/// One line of the journal.
///
/// Externally tagged (`{"task":{...}}`), no `untagged`/`flatten`: a line of an unknown kind
/// fails to decode and is counted, never guessed at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fact {
    /// The first line of every journal file.
    Header(Header),
    /// A manifest was ingested with these defaults (recovery ingests with the same ones).
    Ingest(IngestFact),
    /// A create is about to be sent for this request (written before it leaves).
    Intent(IntentFact),
    /// The create was certainly not processed (refused before it ran): no create is in flight.
    Aborted(JobRef),
    /// A create's fate is unknown: the job is flagged `possible_duplicate` (and held if asked).
    Ambiguous(AmbiguousFact),
    /// The create answered with this task id: the render is paid for.
    Task(TaskFact),
    /// The service no longer knows the job's task (1014): the next render is a new one.
    TaskLost(JobRef),
    /// The render ended in failure (status 4).
    RenderFailed(RenderFailedFact),
    /// The output is complete on disk (or in object storage).
    Output(OutputFact),
    /// The shared analysis of a video answered with this id.
    Analysis(AnalysisFact),
}

/// `{"header":{"v":1,"ms":...,"base":...}}`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    pub v: u32,
    pub ms: u64,
    /// Bytes of facts the last compaction kept (0 for a new journal): the journal is compacted
    /// again once it has grown well past this.
    #[serde(default)]
    pub base: u64,
}

/// `{"ingest":{"ms":...,"manifest_sha256":"...","resolution":"720p","model_name":"..."}}`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IngestFact {
    pub ms: u64,
    pub manifest_sha256: String,
    pub resolution: Resolution,
    pub model_name: String,
}

/// Everything a create request carries, and the job's fingerprint, so a recovered job can be
/// matched with its manifest row, or rebuilt as it was submitted when the row changed since.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntentFact {
    pub job: JobId,
    pub ms: u64,
    pub fingerprint: String,
    pub video_url: VideoUrl,
    /// The job's faces as the manifest gave them: `[obj_id or null, face_url]`.
    pub faces: Vec<(Option<u32>, String)>,
    /// The create's mappings: `[obj_id, img_url]`.
    pub mappings: Vec<(u32, String)>,
    pub resolution: Resolution,
    pub model_name: String,
    pub keep_original_sound: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_id: Option<String>,
}

/// `{"aborted":{"job":"...","ms":...}}` and `{"task_lost":{...}}`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRef {
    pub job: JobId,
    pub ms: u64,
}

/// `{"ambiguous":{"job":"...","held":false,"ms":...}}`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AmbiguousFact {
    pub job: JobId,
    pub held: bool,
    pub ms: u64,
}

/// The task id, with the fingerprint and mappings again: the one fact money depends on can
/// rebuild its job from the manifest row even if its intent's line was damaged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskFact {
    pub job: JobId,
    pub task_id: String,
    pub ms: u64,
    pub fingerprint: String,
    pub mappings: Vec<(u32, String)>,
}

/// `{"render_failed":{"job":"...","task_id":"...","code":...,"message":"...","ms":...}}`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RenderFailedFact {
    pub job: JobId,
    pub task_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i64>,
    pub message: String,
    pub ms: u64,
}

/// A finished output: where it is (a path, or an object URL), its size and SHA-256.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputFact {
    pub job: JobId,
    pub task_id: String,
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
    pub ms: u64,
}

/// `{"analysis":{"video_url":"...","analysis_id":"...","ms":...}}`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalysisFact {
    pub video_url: VideoUrl,
    pub analysis_id: String,
    pub ms: u64,
}

impl Fact {
    /// The intent of a job about to be created: call after `Event::SubmitIntent`.
    pub fn intent(job: &Job, ms: u64) -> Fact {
        let spec = &job.spec;
        Fact::Intent(IntentFact {
            job: job.id.clone(),
            ms,
            fingerprint: job.fingerprint.clone(),
            video_url: spec.video_url.clone(),
            faces: spec
                .faces
                .iter()
                .map(|face| (face.obj_id, face.face_url.clone()))
                .collect(),
            mappings: mapping_pairs(&job.mappings),
            resolution: spec.resolution,
            model_name: spec.model_name.clone(),
            keep_original_sound: spec.keep_original_sound,
            template_id: spec.template_id.clone(),
        })
    }

    /// A create certainly not processed: call after `Event::SubmitAborted`.
    pub fn aborted(job: &Job, ms: u64) -> Fact {
        Fact::Aborted(JobRef {
            job: job.id.clone(),
            ms,
        })
    }

    /// A create whose fate is unknown: call after `Event::Ambiguous`.
    pub fn ambiguous(job: &Job, held: bool, ms: u64) -> Fact {
        Fact::Ambiguous(AmbiguousFact {
            job: job.id.clone(),
            held,
            ms,
        })
    }

    /// The task id of a job just created: call after `Event::Created`. `None` when the job
    /// has no task id (not after `Created`).
    pub fn task(job: &Job, ms: u64) -> Option<Fact> {
        Some(Fact::Task(TaskFact {
            job: job.id.clone(),
            task_id: job.task_id.clone()?,
            ms,
            fingerprint: job.fingerprint.clone(),
            mappings: mapping_pairs(&job.mappings),
        }))
    }

    /// The service forgot the job's task: call after `Event::RemoteLost` on a render.
    pub fn task_lost(job: &Job, ms: u64) -> Fact {
        Fact::TaskLost(JobRef {
            job: job.id.clone(),
            ms,
        })
    }

    /// A failed render: call after `Event::RenderFailed` (the job still has its task id).
    pub fn render_failed(job: &Job, ms: u64) -> Option<Fact> {
        let error = job.last_error.as_ref();
        Some(Fact::RenderFailed(RenderFailedFact {
            job: job.id.clone(),
            task_id: job.task_id.clone()?,
            code: error.and_then(|error| error.code),
            message: error
                .map(|error| error.message.chars().take(MESSAGE_LIMIT).collect())
                .unwrap_or_default(),
            ms,
        }))
    }

    /// A finished output: call after `Event::Downloaded`.
    pub fn output(job: &Job, ms: u64) -> Option<Fact> {
        let output = job.output.as_ref()?;
        Some(Fact::Output(OutputFact {
            job: job.id.clone(),
            task_id: job.task_id.clone()?,
            path: output.path.clone(),
            bytes: output.bytes,
            sha256: output.sha256.clone(),
            ms,
        }))
    }

    /// The id of a video's shared analysis, as it arrives.
    pub fn analysis(video_url: &str, analysis_id: &str, ms: u64) -> Fact {
        Fact::Analysis(AnalysisFact {
            video_url: VideoUrl::from(video_url),
            analysis_id: analysis_id.to_string(),
            ms,
        })
    }

    /// A manifest ingested with these defaults.
    pub fn ingest(manifest_sha256: &str, defaults: &Defaults, ms: u64) -> Fact {
        Fact::Ingest(IngestFact {
            ms,
            manifest_sha256: manifest_sha256.to_string(),
            resolution: defaults.resolution,
            model_name: defaults.model_name.clone(),
        })
    }

    /// The facts one change of a job record implies, from the record before and after it.
    ///
    /// An alternative to calling the constructors beside each event: a single call where the
    /// changed job is written catches every path that sets a task id or an output.
    pub fn changes(before: &Job, after: &Job, ms: u64) -> Vec<Fact> {
        use crate::job::JobState as S;
        let mut facts = Vec::new();
        if before.fingerprint != after.fingerprint && after.state != S::Submitting {
            // Replaced with a new row: nothing to journal until it is submitted.
            return facts;
        }
        if before.state == S::Submitting && after.state != S::Rendering {
            // A flagged job leaving `submitting` without a task id is journalled as ambiguous
            // even when it was only refused: the flag stays, which is the safe reading.
            if after.possible_duplicate {
                facts.push(Fact::ambiguous(after, after.state == S::Held, ms));
            } else {
                facts.push(Fact::aborted(after, ms));
            }
        }
        if after.state == S::Submitting && before.state != S::Submitting {
            facts.push(Fact::intent(after, ms));
        }
        if after.task_id.is_some() && after.task_id != before.task_id {
            facts.extend(Fact::task(after, ms));
        }
        if before.task_id.is_some()
            && after.task_id.is_none()
            && matches!(after.state, S::Pending | S::Ready)
        {
            // Forgotten by the service, or given up on by `retry` (a failed render).
            facts.push(Fact::task_lost(after, ms));
        }
        if after.render_failed && !before.render_failed {
            facts.extend(Fact::render_failed(after, ms));
        }
        if after.output.is_some() && after.output != before.output {
            facts.extend(Fact::output(after, ms));
        }
        facts
    }

    /// The job this fact is about, if it is about one.
    pub fn job(&self) -> Option<&str> {
        match self {
            Fact::Intent(fact) => Some(fact.job.as_str()),
            Fact::Aborted(fact) | Fact::TaskLost(fact) => Some(fact.job.as_str()),
            Fact::Ambiguous(fact) => Some(fact.job.as_str()),
            Fact::Task(fact) => Some(fact.job.as_str()),
            Fact::RenderFailed(fact) => Some(fact.job.as_str()),
            Fact::Output(fact) => Some(fact.job.as_str()),
            Fact::Header(_) | Fact::Ingest(_) | Fact::Analysis(_) => None,
        }
    }
}

impl IntentFact {
    /// The job's spec as it was submitted (the manifest's extra columns are not journalled).
    pub fn spec(&self) -> JobSpec {
        JobSpec {
            video_url: self.video_url.clone(),
            faces: self
                .faces
                .iter()
                .map(|(obj_id, face_url)| Face {
                    obj_id: *obj_id,
                    face_url: face_url.clone(),
                })
                .collect(),
            resolution: self.resolution,
            model_name: self.model_name.clone(),
            keep_original_sound: self.keep_original_sound,
            template_id: self.template_id.clone(),
            extra: Vec::new(),
        }
    }
}

/// Journalled `[obj_id, img_url]` pairs back into the create's mappings.
pub fn mappings(pairs: &[(u32, String)]) -> Vec<Mapping> {
    pairs
        .iter()
        .map(|(obj_id, img_url)| Mapping {
            obj_id: *obj_id,
            img_url: img_url.clone(),
        })
        .collect()
}

fn mapping_pairs(mappings: &[Mapping]) -> Vec<(u32, String)> {
    mappings
        .iter()
        .map(|mapping| (mapping.obj_id, mapping.img_url.clone()))
        .collect()
}

/// Why a line was not read as a fact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineDamage {
    /// Too short, no separator, or the checksum is not 8 hex digits.
    Malformed,
    /// The checksum does not match the JSON.
    Checksum,
    /// The checksum matches but the JSON is not a fact this version knows.
    Unknown,
}

/// Append one fact as a line to `out`.
pub fn encode_line(fact: &Fact, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(b"00000000 ");
    // Strings, numbers, booleans and vectors of them: encoding cannot fail.
    serde_json::to_writer(&mut *out, fact).expect("a fact always encodes as JSON");
    let crc = crc32fast::hash(&out[start + 9..]);
    out[start..start + 8].copy_from_slice(format!("{crc:08x}").as_bytes());
    out.push(b'\n');
}

/// Read one line (without its newline) as a fact.
pub fn decode_line(line: &[u8]) -> Result<Fact, LineDamage> {
    if line.len() < 10 || line[8] != b' ' {
        return Err(LineDamage::Malformed);
    }
    let crc = std::str::from_utf8(&line[..8])
        .ok()
        // Lower case only, as written: any change to a line's bytes makes it unreadable.
        .filter(|digits| {
            digits
                .bytes()
                .all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'))
        })
        .and_then(|digits| u32::from_str_radix(digits, 16).ok())
        .ok_or(LineDamage::Malformed)?;
    let json = &line[9..];
    if crc32fast::hash(json) != crc {
        return Err(LineDamage::Checksum);
    }
    serde_json::from_slice(json).map_err(|_| LineDamage::Unknown)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{Event, JobError, Output};

    pub(crate) fn job() -> Job {
        let spec = JobSpec {
            video_url: "https://cdn.example/v.mp4?sig=a\nb".into(),
            faces: vec![
                Face {
                    obj_id: None,
                    face_url: "https://cdn.example/f.jpg".into(),
                },
                Face {
                    obj_id: Some(2),
                    face_url: "https://cdn.example/g.jpg".into(),
                },
            ],
            resolution: crate::akool::Resolution::P720,
            model_name: "akool-premium".into(),
            keep_original_sound: false,
            template_id: Some("t-1".into()),
            extra: vec![("sku".into(), "A1".into())],
        };
        Job::new("job-1".into(), 2, spec, 1)
    }

    #[test]
    fn a_line_reads_back_as_the_fact_written() {
        let job = job();
        let mut out = Vec::new();
        let fact = Fact::intent(&job, 5);
        encode_line(&fact, &mut out);
        assert_eq!(out.iter().filter(|byte| **byte == b'\n').count(), 1);
        assert_eq!(out.last(), Some(&b'\n'));
        assert_eq!(decode_line(&out[..out.len() - 1]), Ok(fact));
    }

    #[test]
    fn damaged_lines_are_told_apart() {
        let mut out = Vec::new();
        encode_line(&Fact::analysis("v", "a", 1), &mut out);
        let line = &out[..out.len() - 1];
        let mut flipped = line.to_vec();
        let last = flipped.len() - 2;
        flipped[last] ^= 0x01;
        assert_eq!(decode_line(&flipped), Err(LineDamage::Checksum));
        assert_eq!(decode_line(&line[..5]), Err(LineDamage::Malformed));
        assert_eq!(decode_line(b"zzzzzzzz {}"), Err(LineDamage::Malformed));
        let unknown = br#"{"newer_kind":{"x":1}}"#;
        let mut newer = format!("{:08x} ", crc32fast::hash(unknown)).into_bytes();
        newer.extend_from_slice(unknown);
        assert_eq!(decode_line(&newer), Err(LineDamage::Unknown));
    }

    #[test]
    fn the_intent_keeps_the_request_and_the_spec_it_came_from() {
        let mut job = job();
        job.apply(Event::AnalysisStarted { analysis_id: None }, 2)
            .unwrap();
        let mappings = vec![
            Mapping {
                obj_id: 0,
                img_url: "https://cdn.example/f.jpg".into(),
            },
            Mapping {
                obj_id: 2,
                img_url: "https://cdn.example/g.jpg".into(),
            },
        ];
        job.apply(
            Event::Mapped {
                mappings: mappings.clone(),
            },
            3,
        )
        .unwrap();
        job.apply(Event::SubmitIntent, 4).unwrap();
        let Fact::Intent(intent) = Fact::intent(&job, 4) else {
            unreachable!()
        };
        let mut spec = job.spec.clone();
        spec.extra.clear();
        assert_eq!(intent.spec(), spec);
        assert_eq!(intent.spec().fingerprint(), job.fingerprint);
        assert_eq!(super::mappings(&intent.mappings), mappings);
    }

    /// Walks a job through its life and collects the facts [`Fact::changes`] derives.
    #[test]
    fn changes_journal_every_paid_fact_once() {
        let mut job = job();
        let mut facts = Vec::new();
        let mut step = |job: &mut Job, event: Event| {
            let before = job.clone();
            job.apply(event, 9).unwrap();
            facts.extend(Fact::changes(&before, job, 9));
        };
        step(&mut job, Event::AnalysisStarted { analysis_id: None });
        let mappings = vec![Mapping {
            obj_id: 0,
            img_url: "https://cdn.example/f.jpg".into(),
        }];
        step(&mut job, Event::Mapped { mappings });
        step(&mut job, Event::SubmitIntent);
        step(&mut job, Event::SubmitAborted);
        step(&mut job, Event::SubmitIntent);
        step(
            &mut job,
            Event::Ambiguous {
                hold: false,
                error: None,
            },
        );
        step(&mut job, Event::SubmitIntent);
        step(
            &mut job,
            Event::Ambiguous {
                hold: false,
                error: None,
            },
        );
        step(&mut job, Event::SubmitIntent);
        step(
            &mut job,
            Event::Created {
                task_id: "t1".into(),
            },
        );
        let error = JobError::new(Some(1014), "gone");
        step(&mut job, Event::RemoteLost { error });
        step(&mut job, Event::SubmitIntent);
        step(
            &mut job,
            Event::Created {
                task_id: "t2".into(),
            },
        );
        let error = JobError::new(Some(7), "bad face");
        step(&mut job, Event::RenderFailed { error });
        step(&mut job, Event::Retry);
        step(&mut job, Event::SubmitIntent);
        step(
            &mut job,
            Event::Created {
                task_id: "t3".into(),
            },
        );
        step(&mut job, Event::Rendered { output_url: None });
        let output = Output {
            path: "out/job-1.mp4".into(),
            bytes: 3,
            sha256: "ab".into(),
        };
        step(&mut job, Event::Downloaded { output });
        let kinds: Vec<String> = facts
            .iter()
            .map(|fact| {
                let json = serde_json::to_value(fact).unwrap();
                json.as_object().unwrap().keys().next().unwrap().clone()
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "intent",
                "aborted",
                "intent",
                "ambiguous",
                "intent",
                "ambiguous",
                "intent",
                "task",
                "task_lost",
                "intent",
                "task",
                "render_failed",
                "task_lost",
                "intent",
                "task",
                "output",
            ]
        );
    }

    #[test]
    fn no_fact_holds_more_than_the_job_record() {
        // A fact is built from a job record only; the record never holds a credential, so
        // neither can a fact. Pin the field names so a new field is a decision, not a slip.
        let mut job = job();
        job.state = crate::job::JobState::Submitting;
        let mut out = Vec::new();
        encode_line(&Fact::intent(&job, 1), &mut out);
        let line = String::from_utf8(out).unwrap();
        let json: serde_json::Value = serde_json::from_str(&line[9..]).unwrap();
        let mut keys: Vec<&str> = json["intent"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "faces",
                "fingerprint",
                "job",
                "keep_original_sound",
                "mappings",
                "model_name",
                "ms",
                "resolution",
                "template_id",
                "video_url"
            ]
        );
    }
}
