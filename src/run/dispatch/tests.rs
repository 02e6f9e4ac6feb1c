//! The loop driven by hand: a scripted [`Service`] holds every request until the test answers
//! it, time is tokio's paused clock, and the store is a real sled database in a temporary
//! folder. These pin the rules the end-to-end tests only see from outside: slots, the order of
//! requests, retries and their pauses, intents before creates, what a stop does.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::akool::{Analysis, ApiError, RemoteStatus, Subject, Task};
use crate::job::{Job, JobState, MultiSubject};
use crate::manifest::Defaults;
use crate::run::policy::{OnAmbiguous, RetryPolicy};
use crate::run::poll::PollPolicy;

/// A request waiting for the test to answer it.
type Waiting = (Request, oneshot::Sender<Answer>);

/// Holds each request with the sender that answers it.
#[derive(Clone, Default)]
struct Scripted {
    pending: Arc<Mutex<VecDeque<Waiting>>>,
}

impl Service for Scripted {
    fn execute(&self, request: Request) -> service::AnswerFuture {
        let (answer, answered) = oneshot::channel();
        self.pending.lock().unwrap().push_back((request, answer));
        Box::pin(async move {
            match answered.await {
                Ok(answer) => answer,
                // Never answered: the request stays in flight.
                Err(_) => std::future::pending().await,
            }
        })
    }
}

impl Scripted {
    fn len(&self) -> usize {
        self.pending.lock().unwrap().len()
    }

    /// The oldest unanswered request.
    fn take(&self) -> Waiting {
        self.pending
            .lock()
            .unwrap()
            .pop_front()
            .expect("a request is waiting")
    }

    /// Describe the waiting requests, oldest first.
    fn names(&self) -> Vec<String> {
        self.pending
            .lock()
            .unwrap()
            .iter()
            .map(|(request, _)| name(request))
            .collect()
    }
}

fn name(request: &Request) -> String {
    match request {
        Request::Analyze { video_url } => format!("analyze {video_url}"),
        Request::AnalysisDetail { video_url, .. } => format!("analysis-detail {video_url}"),
        Request::Create { job_id, .. } => format!("create {job_id}"),
        Request::TaskDetail {
            job_id,
            refresh: false,
            ..
        } => format!("task-detail {job_id}"),
        Request::TaskDetail { job_id, .. } => format!("refresh {job_id}"),
        Request::Download { request, .. } => format!("download {}", request.job_id),
        Request::Upload { job_id, .. } => format!("upload {job_id}"),
    }
}

fn settings(dir: &Path, concurrency: usize) -> Settings {
    let poll = PollPolicy {
        min: Duration::from_millis(100),
        max: Duration::from_secs(5),
        hint: Some(Duration::from_secs(1)),
    };
    Settings {
        out_dir: dir.join("out"),
        bucket: None,
        db_path: dir.join("db"),
        concurrency,
        downloads: 2,
        rate: 1000.0,
        burst: 1000,
        retry: RetryPolicy {
            give_up_after: Duration::from_secs(3600),
            max_attempts: None,
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(8),
        },
        multi_subject: MultiSubject::Skip,
        on_ambiguous: OnAmbiguous::Resubmit,
        reuse_renders: true,
        max_download_bytes: 1 << 20,
        analysis_poll: poll,
        render_poll: poll,
        cooldown_cap: Duration::from_secs(5),
        stall_timeout: Duration::from_secs(5),
        tick: Duration::from_secs(3600),
        interactive: false,
        summary_every: Duration::from_secs(3600),
        max_runtime: None,
        grace: Duration::from_secs(2),
    }
}

/// A store holding `jobs` jobs on one video.
/// A test's world: a database of `jobs` waiting jobs, a scripted service, a stop signal.
struct Rig {
    dir: tempfile::TempDir,
    store: Store,
    service: Scripted,
    shutdown: CancellationToken,
}

impl Rig {
    fn new(jobs: usize) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with(dir.path(), jobs);
        Rig {
            dir,
            store,
            service: Scripted::default(),
            shutdown: CancellationToken::new(),
        }
    }

    /// The loop over this world, with `concurrency` slots at the service.
    fn dispatcher(&self, concurrency: usize) -> Dispatcher<'_> {
        Dispatcher::new(
            &self.store,
            Arc::new(self.service.clone()),
            settings(self.dir.path(), concurrency),
            self.shutdown.clone(),
        )
    }
}

fn store_with(dir: &Path, jobs: usize) -> Store {
    let mut csv = String::from("id,video_url,face_url\n");
    for n in 0..jobs {
        csv.push_str(&format!("j{n},https://v/one.mp4,https://f/{n}.jpg\n"));
    }
    let manifest = crate::manifest::parse_bytes(Path::new("jobs.csv"), csv.as_bytes()).unwrap();
    let store = Store::open(&dir.join("db")).unwrap();
    crate::ingest::ingest(&store, manifest, &Defaults::default(), false, 1).unwrap();
    store
}

fn analysis(status: RemoteStatus, subjects: usize) -> Analysis {
    Analysis {
        id: "an-1".into(),
        status,
        progress: 0.0,
        subjects: (0..subjects as u32)
            .map(|obj_id| Subject {
                obj_id,
                img_url: format!("https://s/{obj_id}.jpg"),
            })
            .collect(),
        error_code: None,
        error_reason: None,
    }
}

fn task(id: &str, status: RemoteStatus) -> Task {
    Task {
        id: id.into(),
        status,
        progress: 0.0,
        output_url: None,
        video_duration: None,
        error_code: None,
        error_reason: None,
    }
}

/// Turn the loop until `done` holds (at most `turns` turns; time advances by itself when the
/// loop has nothing to do but wait for a timer).
async fn drive_until(
    dispatcher: &mut Dispatcher<'_>,
    turns: usize,
    mut done: impl FnMut(&Dispatcher<'_>) -> bool,
) {
    for _ in 0..turns {
        if done(dispatcher) {
            return;
        }
        assert!(dispatcher.turn().await.unwrap(), "the loop ended early");
    }
    assert!(done(dispatcher), "not reached in {turns} turns");
}

/// Take the oldest request, check what it is, and answer it.
fn answer(service: &Scripted, expected: &str, answer: Answer) {
    let (request, sender) = service.take();
    assert_eq!(name(&request), expected);
    let _ = sender.send(answer);
}

fn job(store: &Store, id: &str) -> Job {
    store.job(id).unwrap().unwrap()
}

/// Resume, then analyse the one video (one subject) through the loop.
async fn analysed(dispatcher: &mut Dispatcher<'_>, service: &Scripted) {
    dispatcher.resume(None).unwrap();
    drive_until(dispatcher, 10, |_| service.len() == 1).await;
    answer(
        service,
        "analyze https://v/one.mp4",
        Answer::Analyze {
            video_url: "https://v/one.mp4".into(),
            result: Ok(analysis(RemoteStatus::Queued, 0)),
        },
    );
    drive_until(dispatcher, 10, |_| service.len() == 1).await;
    answer(
        service,
        "analysis-detail https://v/one.mp4",
        Answer::AnalysisDetail {
            video_url: "https://v/one.mp4".into(),
            result: Ok(analysis(RemoteStatus::Completed, 1)),
        },
    );
}

#[tokio::test(start_paused = true)]
async fn the_concurrency_bounds_creates_and_a_finished_render_frees_its_slot() {
    let rig = Rig::new(5);
    let service = rig.service.clone();
    let mut dispatcher = rig.dispatcher(2);
    analysed(&mut dispatcher, &service).await;
    drive_until(&mut dispatcher, 20, |_| service.len() == 2).await;
    for _ in 0..5 {
        dispatcher.turn().await.unwrap();
    }
    assert_eq!(service.names(), ["create j0", "create j1"], "two slots");
    assert_eq!(dispatcher.agenda.service.taken(), 2);
    answer(
        &service,
        "create j0",
        Answer::Create {
            job_id: "j0".into(),
            result: Ok(task("t0", RemoteStatus::Queued)),
        },
    );
    // The render holds its slot while it is polled.
    drive_until(&mut dispatcher, 20, |_| service.len() == 2).await;
    assert_eq!(service.names(), ["create j1", "task-detail j0"]);
    assert_eq!(dispatcher.agenda.service.taken(), 2);
    let (_, create_j1) = service.take();
    answer(
        &service,
        "task-detail j0",
        Answer::TaskDetail {
            job_id: "j0".into(),
            refresh: false,
            result: Ok(Task {
                output_url: Some("http://127.0.0.1:9/out.mp4".into()),
                ..task("t0", RemoteStatus::Completed)
            }),
        },
    );
    // Its slot goes to the next job; the download has a slot of its own.
    drive_until(&mut dispatcher, 20, |_| service.len() == 2).await;
    assert_eq!(service.names(), ["download j0", "create j2"]);
    assert_eq!(dispatcher.agenda.service.taken(), 2);
    assert_eq!(dispatcher.agenda.downloads.taken(), 1);
    drop(create_j1);
}

#[tokio::test(start_paused = true)]
async fn a_create_leaves_only_after_its_intent_is_stored_and_its_task_id_is_kept() {
    let rig = Rig::new(1);
    let (store, service) = (&rig.store, rig.service.clone());
    let mut dispatcher = rig.dispatcher(1);
    analysed(&mut dispatcher, &service).await;
    drive_until(&mut dispatcher, 20, |_| service.len() == 1).await;
    assert_eq!(service.names(), ["create j0"]);
    assert_eq!(job(store, "j0").state, JobState::Submitting);
    answer(
        &service,
        "create j0",
        Answer::Create {
            job_id: "j0".into(),
            result: Ok(task("t0", RemoteStatus::Queued)),
        },
    );
    dispatcher.turn().await.unwrap();
    dispatcher.commit().await.unwrap();
    let stored = job(store, "j0");
    assert_eq!(
        (stored.state, stored.task_id.as_deref()),
        (JobState::Rendering, Some("t0"))
    );
}

#[tokio::test(start_paused = true)]
async fn a_transient_poll_failure_waits_a_backoff_and_counts_an_attempt() {
    let rig = Rig::new(1);
    let (store, service) = (&rig.store, rig.service.clone());
    let mut dispatcher = rig.dispatcher(1);
    analysed(&mut dispatcher, &service).await;
    drive_until(&mut dispatcher, 20, |_| service.len() == 1).await;
    answer(
        &service,
        "create j0",
        Answer::Create {
            job_id: "j0".into(),
            result: Ok(task("t0", RemoteStatus::Queued)),
        },
    );
    drive_until(&mut dispatcher, 20, |_| service.len() == 1).await;
    let failed_at = Instant::now();
    answer(
        &service,
        "task-detail j0",
        Answer::TaskDetail {
            job_id: "j0".into(),
            refresh: false,
            result: Err(ApiError::Transient {
                detail: "HTTP 502".into(),
                outcome_unknown: true,
            }),
        },
    );
    drive_until(&mut dispatcher, 20, |_| service.len() == 1).await;
    let waited = Instant::now() - failed_at;
    // Full jitter under base × 2 = 2 s.
    assert!(waited <= Duration::from_secs(2), "{waited:?}");
    assert_eq!(service.names(), ["task-detail j0"]);
    let stored = job(store, "j0");
    assert_eq!((stored.state, stored.attempts), (JobState::Rendering, 1));
    assert_eq!(
        dispatcher.agenda.service.taken(),
        1,
        "the render keeps its slot"
    );
}

#[tokio::test(start_paused = true)]
async fn throttling_puts_a_create_back_in_line_without_an_attempt_and_cools_down() {
    let rig = Rig::new(1);
    let (store, service) = (&rig.store, rig.service.clone());
    let mut dispatcher = rig.dispatcher(1);
    analysed(&mut dispatcher, &service).await;
    drive_until(&mut dispatcher, 20, |_| service.len() == 1).await;
    let throttled_at = Instant::now();
    answer(
        &service,
        "create j0",
        Answer::Create {
            job_id: "j0".into(),
            result: Err(ApiError::Throttled {
                retry_after: Some(Duration::from_secs(3)),
            }),
        },
    );
    drive_until(&mut dispatcher, 20, |_| service.len() == 1).await;
    assert!(
        Instant::now() - throttled_at >= Duration::from_secs(3),
        "Retry-After is honoured"
    );
    assert_eq!(service.names(), ["create j0"]);
    let stored = job(store, "j0");
    assert_eq!((stored.state, stored.attempts), (JobState::Submitting, 0));
    assert_eq!(dispatcher.run.throttled, 1);
    assert_eq!(dispatcher.agenda.service.taken(), 1, "it kept its slot");
}

#[tokio::test(start_paused = true)]
async fn a_lost_create_answer_flags_the_job_and_creates_it_again() {
    let rig = Rig::new(1);
    let (store, service) = (&rig.store, rig.service.clone());
    let mut dispatcher = rig.dispatcher(1);
    analysed(&mut dispatcher, &service).await;
    drive_until(&mut dispatcher, 20, |_| service.len() == 1).await;
    answer(
        &service,
        "create j0",
        Answer::Create {
            job_id: "j0".into(),
            result: Err(ApiError::Transient {
                detail: "connection reset".into(),
                outcome_unknown: true,
            }),
        },
    );
    drive_until(&mut dispatcher, 20, |_| service.len() == 1).await;
    assert_eq!(service.names(), ["create j0"]);
    let stored = job(store, "j0");
    assert!(stored.possible_duplicate);
    assert_eq!(stored.state, JobState::Submitting, "a fresh intent");
}

#[tokio::test(start_paused = true)]
async fn a_forgotten_task_gets_its_video_analysed_again_before_it_is_created_again() {
    let rig = Rig::new(2);
    let (store, service) = (&rig.store, rig.service.clone());
    let mut dispatcher = rig.dispatcher(2);
    analysed(&mut dispatcher, &service).await;
    drive_until(&mut dispatcher, 20, |_| service.len() == 2).await;
    answer(
        &service,
        "create j0",
        Answer::Create {
            job_id: "j0".into(),
            result: Ok(task("t0", RemoteStatus::Queued)),
        },
    );
    drive_until(&mut dispatcher, 20, |_| service.len() == 2).await;
    let (_, create_j1) = service.take();
    answer(
        &service,
        "task-detail j0",
        Answer::TaskDetail {
            job_id: "j0".into(),
            refresh: false,
            result: Err(ApiError::NotFound {
                message: "no such task".into(),
            }),
        },
    );
    // The video's analysis is asked again before j0 is created again.
    drive_until(&mut dispatcher, 20, |_| service.len() == 1).await;
    assert_eq!(service.names(), ["analyze https://v/one.mp4"]);
    assert_eq!(job(store, "j0").state, JobState::Ready);
    drop(create_j1);
}

#[tokio::test(start_paused = true)]
async fn out_of_credits_stops_new_creates_and_the_run_ends_with_the_reason() {
    let rig = Rig::new(3);
    let (store, service) = (&rig.store, rig.service.clone());
    let mut dispatcher = rig.dispatcher(1);
    analysed(&mut dispatcher, &service).await;
    drive_until(&mut dispatcher, 20, |_| service.len() == 1).await;
    answer(
        &service,
        "create j0",
        Answer::Create {
            job_id: "j0".into(),
            result: Err(ApiError::OutOfCredits {
                message: "balance".into(),
            }),
        },
    );
    let mut turns = 0;
    while dispatcher.turn().await.unwrap() {
        turns += 1;
        assert!(turns < 50, "the run ends");
    }
    assert_eq!(service.len(), 0, "nothing else was sent");
    assert!(matches!(
        dispatcher.report().stop,
        Some(StopReason::OutOfCredits { .. })
    ));
    assert_eq!(job(store, "j0").state, JobState::Ready, "not failed");
    assert_eq!(dispatcher.agenda.service.taken(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_shutdown_abandons_requests_in_flight_after_the_grace() {
    let rig = Rig::new(1);
    let (store, service) = (&rig.store, rig.service.clone());
    let shutdown = rig.shutdown.clone();
    let mut dispatcher = rig.dispatcher(1);
    analysed(&mut dispatcher, &service).await;
    drive_until(&mut dispatcher, 20, |_| service.len() == 1).await;
    let (_, unanswered) = service.take();
    shutdown.cancel();
    let stopped_at = Instant::now();
    let mut turns = 0;
    while dispatcher.turn().await.unwrap() {
        turns += 1;
        assert!(turns < 50, "the run ends");
    }
    let waited = Instant::now() - stopped_at;
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(3),
        "ends after the grace: {waited:?}"
    );
    assert_eq!(dispatcher.report().stop, Some(StopReason::Interrupted));
    // The create may have left: the next run finds the job in `submitting` and flags it.
    assert_eq!(job(store, "j0").state, JobState::Submitting);
    drop(unanswered);
}
