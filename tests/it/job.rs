//! The job state machine: every state × every event, legal or not, and the details of the
//! moves whose outcome depends on what the job already knows.

use headswap_batch::akool::{Mapping, Subject};
use headswap_batch::job::{Event, Face, Job, JobError, JobSpec, JobState, Output};

use JobState as S;

fn spec() -> JobSpec {
    JobSpec {
        video_url: "https://v/1.mp4".into(),
        faces: vec![Face {
            obj_id: None,
            face_url: "https://f/1.jpg".to_string(),
        }],
        resolution: headswap_batch::akool::Resolution::P720,
        model_name: "akool-premium".to_string(),
        keep_original_sound: true,
        template_id: None,
        extra: vec![("sku".to_string(), "1".to_string())],
    }
}

fn mapping() -> Vec<Mapping> {
    vec![Mapping {
        obj_id: 0,
        img_url: "https://f/1.jpg".to_string(),
    }]
}

fn subjects() -> Vec<Subject> {
    vec![
        Subject {
            obj_id: 0,
            img_url: "https://s/0.jpg".to_string(),
        },
        Subject {
            obj_id: 1,
            img_url: "https://s/1.jpg".to_string(),
        },
    ]
}

fn error() -> JobError {
    JobError::new(Some(2001), "boom")
}

/// A job as it would look in `state`: the fields earlier stages would have filled.
fn job_in(state: JobState) -> Job {
    let mut job = Job::new("a".into(), 2, spec(), 1_000);
    job.state = state;
    let stage = |reached: &[JobState]| reached.contains(&state);
    if stage(&[
        S::Analyzing,
        S::Ready,
        S::Submitting,
        S::Rendering,
        S::Downloading,
        S::Done,
        S::Expired,
    ]) {
        job.analysis_id = Some("an-1".to_string());
    }
    if stage(&[
        S::Ready,
        S::Submitting,
        S::Rendering,
        S::Downloading,
        S::Done,
        S::Expired,
    ]) {
        job.mappings = mapping();
    }
    if stage(&[S::Rendering, S::Downloading, S::Done, S::Expired]) {
        job.task_id = Some("task-1".to_string());
        job.times.submitted_ms = Some(1_500);
    }
    if stage(&[S::Downloading, S::Done, S::Expired]) {
        job.times.rendered_ms = Some(1_700);
    }
    if state == S::Downloading {
        job.output_url = Some("https://out/1.mp4".to_string());
    }
    if state == S::NeedsMapping {
        job.subjects = subjects();
    }
    if state == S::Held {
        job.possible_duplicate = true;
    }
    if matches!(state, S::Failed | S::Expired | S::Invalid) {
        job.last_error = Some(error());
    }
    job
}

/// One representative of every event, with where it may go: `(from, to)` pairs; every
/// other state must refuse it.
/// An event's name, the event, and its legal `(from, to)` moves.
type Transitions = (&'static str, Event, Vec<(JobState, JobState)>);

fn transitions() -> Vec<Transitions> {
    let active = [
        S::Pending,
        S::Analyzing,
        S::Ready,
        S::Submitting,
        S::Rendering,
        S::Downloading,
    ];
    vec![
        (
            "analysis_started",
            Event::AnalysisStarted {
                analysis_id: Some("an-2".to_string()),
            },
            vec![(S::Pending, S::Analyzing), (S::Analyzing, S::Analyzing)],
        ),
        (
            "mapped",
            Event::Mapped {
                mappings: mapping(),
            },
            vec![(S::Analyzing, S::Ready)],
        ),
        (
            "mapped",
            Event::Mapped {
                mappings: Vec::new(),
            },
            vec![],
        ),
        (
            "needs_mapping",
            Event::NeedsMapping {
                subjects: subjects(),
            },
            vec![(S::Analyzing, S::NeedsMapping)],
        ),
        (
            "submit_intent",
            Event::SubmitIntent,
            vec![(S::Ready, S::Submitting)],
        ),
        (
            "created",
            Event::Created {
                task_id: "task-2".to_string(),
            },
            vec![(S::Submitting, S::Rendering)],
        ),
        (
            "ambiguous",
            Event::Ambiguous {
                hold: false,
                error: None,
            },
            vec![(S::Submitting, S::Ready)],
        ),
        (
            "ambiguous",
            Event::Ambiguous {
                hold: true,
                error: None,
            },
            vec![(S::Submitting, S::Held)],
        ),
        (
            "rendered",
            Event::Rendered {
                output_url: Some("https://out/2.mp4".to_string()),
            },
            vec![
                (S::Rendering, S::Downloading),
                (S::Downloading, S::Downloading),
            ],
        ),
        (
            "downloaded",
            Event::Downloaded {
                output: Output {
                    path: "output/a.mp4".to_string(),
                    bytes: 10,
                    sha256: "00".to_string(),
                },
            },
            vec![(S::Downloading, S::Done)],
        ),
        (
            "expired",
            Event::Expired { error: error() },
            vec![(S::Downloading, S::Expired)],
        ),
        (
            "attempt_failed",
            Event::AttemptFailed { error: error() },
            active.iter().map(|state| (*state, *state)).collect(),
        ),
        (
            "remote_lost",
            Event::RemoteLost { error: error() },
            vec![
                (S::Analyzing, S::Pending),
                (S::Rendering, S::Ready),
                (S::Downloading, S::Ready),
            ],
        ),
        (
            "render_failed",
            Event::RenderFailed { error: error() },
            vec![(S::Rendering, S::Failed)],
        ),
        (
            "failed",
            Event::Failed { error: error() },
            active.iter().map(|state| (*state, S::Failed)).collect(),
        ),
        (
            "retry",
            Event::Retry,
            vec![
                // job_in(Failed) has no task and no mappings: back to the start.
                (S::Failed, S::Pending),
                // job_in(Expired) has its task: only a fresh URL is needed.
                (S::Expired, S::Downloading),
                (S::Held, S::Ready),
            ],
        ),
        (
            "replace",
            Event::Replace {
                spec: spec(),
                fingerprint: "new".to_string(),
            },
            JobState::ALL
                .iter()
                .map(|state| (*state, S::Pending))
                .collect(),
        ),
    ]
}

#[test]
fn every_state_and_event() {
    let mut checked = 0;
    for (name, event, legal) in transitions() {
        for from in JobState::ALL {
            let before = job_in(from);
            let mut job = before.clone();
            let outcome = job.apply(event.clone(), 9_000);
            match legal.iter().find(|(legal_from, _)| *legal_from == from) {
                Some((_, to)) => {
                    assert_eq!(outcome, Ok(()), "{name} from {from}");
                    assert_eq!(job.state, *to, "{name} from {from}");
                    assert_eq!(job.times.updated_ms, 9_000, "{name} from {from}");
                }
                None => {
                    let refusal =
                        outcome.expect_err(&format!("{name} from {from} must be refused"));
                    assert_eq!(
                        (refusal.state, refusal.event, refusal.id.as_str()),
                        (from, name, "a")
                    );
                    assert_eq!(
                        refusal.to_string(),
                        format!("job a: event {name} is not allowed in state {from}")
                    );
                    assert_eq!(job, before, "a refused {name} leaves the job unchanged");
                }
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 17 * JobState::ALL.len());
}

#[test]
fn stage_fields() {
    let mut job = job_in(S::Pending);
    job.apply(
        Event::AnalysisStarted {
            analysis_id: Some("an-9".to_string()),
        },
        2,
    )
    .unwrap();
    assert_eq!(job.analysis_id.as_deref(), Some("an-9"));

    job.apply(Event::AttemptFailed { error: error() }, 3)
        .unwrap();
    job.apply(Event::AttemptFailed { error: error() }, 4)
        .unwrap();
    assert_eq!((job.attempts, job.last_error.clone()), (2, Some(error())));

    job.apply(
        Event::Mapped {
            mappings: mapping(),
        },
        5,
    )
    .unwrap();
    assert_eq!(
        (job.state, job.attempts, job.mappings.clone()),
        (S::Ready, 0, mapping())
    );

    job.apply(Event::SubmitIntent, 6).unwrap();
    job.apply(
        Event::Created {
            task_id: "t-1".to_string(),
        },
        7,
    )
    .unwrap();
    assert_eq!(
        (job.task_id.as_deref(), job.times.submitted_ms),
        (Some("t-1"), Some(7))
    );

    job.apply(Event::Rendered { output_url: None }, 8).unwrap();
    assert_eq!(
        (job.state, job.output_url.clone(), job.times.rendered_ms),
        (S::Downloading, None, Some(8))
    );
    job.apply(
        Event::Rendered {
            output_url: Some("https://o/1".to_string()),
        },
        9,
    )
    .unwrap();
    assert_eq!(job.output_url.as_deref(), Some("https://o/1"));

    let output = Output {
        path: "out/a.mp4".to_string(),
        bytes: 3,
        sha256: "ab".to_string(),
    };
    job.apply(
        Event::Downloaded {
            output: output.clone(),
        },
        10,
    )
    .unwrap();
    assert_eq!(
        (job.state, job.output.clone(), job.times.finished_ms),
        (S::Done, Some(output), Some(10))
    );
    assert_eq!(job.times.created_ms, 1_000);
}

#[test]
fn ambiguous_creates_are_flagged() {
    for (hold, state) in [(false, S::Ready), (true, S::Held)] {
        let mut job = job_in(S::Submitting);
        job.apply(Event::Ambiguous { hold, error: None }, 5)
            .unwrap();
        assert_eq!((job.state, job.possible_duplicate), (state, true));
    }
    // A held job retried keeps its flag.
    let mut job = job_in(S::Held);
    job.apply(Event::Retry, 6).unwrap();
    assert_eq!((job.state, job.possible_duplicate), (S::Ready, true));
}

#[test]
fn remote_lost_goes_back_to_the_start_of_the_stage() {
    let mut job = job_in(S::Analyzing);
    job.apply(Event::RemoteLost { error: error() }, 5).unwrap();
    assert_eq!((job.state, job.analysis_id.clone()), (S::Pending, None));

    for state in [S::Rendering, S::Downloading] {
        let mut job = job_in(state);
        job.attempts = 3;
        job.apply(Event::RemoteLost { error: error() }, 5).unwrap();
        assert_eq!(job.state, S::Ready);
        assert_eq!(
            (job.task_id.clone(), job.output_url.clone(), job.attempts),
            (None, None, 0)
        );
        assert_eq!(
            (job.times.submitted_ms, job.times.rendered_ms),
            (None, None)
        );
        assert_eq!(job.mappings, mapping(), "the chosen subjects stay");
    }
}

#[test]
fn retry_takes_the_cheapest_way_back() {
    // The render itself failed: render again.
    let mut job = job_in(S::Rendering);
    job.apply(Event::RenderFailed { error: error() }, 5)
        .unwrap();
    assert!(job.render_failed);
    job.apply(Event::Retry, 6).unwrap();
    assert_eq!(
        (job.state, job.task_id.clone(), job.render_failed),
        (S::Ready, None, false)
    );

    // Failed while downloading (rendered): fetch again, never re-create.
    let mut job = job_in(S::Downloading);
    job.apply(Event::Failed { error: error() }, 5).unwrap();
    job.apply(Event::Retry, 6).unwrap();
    assert_eq!(
        (job.state, job.task_id.as_deref(), job.output_url.clone()),
        (S::Downloading, Some("task-1"), None)
    );
    assert_eq!(job.times.finished_ms, None);

    // Failed while rendering (not by the render): poll the same task again.
    let mut job = job_in(S::Rendering);
    job.apply(Event::Failed { error: error() }, 5).unwrap();
    job.apply(Event::Retry, 6).unwrap();
    assert_eq!(
        (job.state, job.task_id.as_deref()),
        (S::Rendering, Some("task-1"))
    );

    // Failed before a create but after mapping: submit again.
    let mut job = job_in(S::Ready);
    job.apply(Event::Failed { error: error() }, 5).unwrap();
    job.apply(Event::Retry, 6).unwrap();
    assert_eq!(job.state, S::Ready);

    // Failed during analysis: analyse again.
    let mut job = job_in(S::Analyzing);
    job.attempts = 8;
    job.apply(Event::Failed { error: error() }, 5).unwrap();
    job.apply(Event::Retry, 6).unwrap();
    assert_eq!(
        (job.state, job.analysis_id.clone(), job.attempts),
        (S::Pending, None, 0)
    );

    // Expired without a task (should not happen, but must not get stuck).
    let mut job = job_in(S::Expired);
    job.task_id = None;
    job.apply(Event::Retry, 6).unwrap();
    assert_eq!(job.state, S::Pending);
}

#[test]
fn replace_keeps_identity() {
    let mut job = job_in(S::Done);
    let mut new_spec = spec();
    new_spec.resolution = headswap_batch::akool::Resolution::P480;
    job.apply(
        Event::Replace {
            spec: new_spec.clone(),
            fingerprint: "fp".to_string(),
        },
        77,
    )
    .unwrap();
    assert_eq!((job.id.as_str(), job.line, job.state), ("a", 2, S::Pending));
    assert_eq!(
        (job.spec.clone(), job.fingerprint.as_str()),
        (new_spec, "fp")
    );
    assert_eq!(
        (job.task_id.clone(), job.output.clone(), job.mappings.len()),
        (None, None, 0)
    );
    assert_eq!((job.times.created_ms, job.times.updated_ms), (1_000, 77));
}

#[test]
fn state_names_round_trip() {
    for state in JobState::ALL {
        assert_eq!(state.as_str().parse::<JobState>(), Ok(state));
        assert_eq!(
            serde_json::to_string(&state).unwrap(),
            format!("\"{state}\"")
        );
    }
    assert!("ambiguous".parse::<JobState>().is_err());
    let finals: Vec<JobState> = JobState::ALL
        .into_iter()
        .filter(|state| state.is_final())
        .collect();
    assert_eq!(
        finals,
        [
            S::Done,
            S::Failed,
            S::Invalid,
            S::NeedsMapping,
            S::Expired,
            S::Held
        ]
    );
    let submitted: Vec<JobState> = JobState::ALL
        .into_iter()
        .filter(|state| state.may_have_submitted())
        .collect();
    assert_eq!(
        submitted,
        [S::Submitting, S::Rendering, S::Downloading, S::Done]
    );
}

#[test]
fn fingerprint_ignores_extra_columns() {
    let a = spec();
    let mut b = spec();
    b.extra.push(("campaign".to_string(), "x".to_string()));
    assert_eq!(a.fingerprint(), b.fingerprint());
    b.keep_original_sound = false;
    assert_ne!(a.fingerprint(), b.fingerprint());
}
