//! The Akool client over real loopback HTTP: against the in-process simulator for the whole
//! workflow and every failure class, and against a tiny fixed-answer server for Akool's own
//! documented example responses.

use std::time::Duration;

use axum::http::StatusCode;
use headswap_batch::akool::{
    Analysis, ApiError, Client, ClientConfig, CreateTask, Credentials, Mapping, RemoteStatus,
    Subject, Task,
};
use headswap_batch::secret::Secret;
use headswap_batch::simulator::{SimKnobs, Simulator, ThrottleMode, output_content};
use serde_json::{Value, json};

pub(crate) async fn start(knobs: SimKnobs) -> Simulator {
    Simulator::start("127.0.0.1:0".parse().unwrap(), knobs)
        .await
        .expect("the simulator starts")
}

fn config(base_url: &str, credentials: Credentials) -> ClientConfig {
    ClientConfig {
        base_url: base_url.to_owned(),
        credentials,
        request_timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(2),
    }
}

pub(crate) fn client(base_url: &str, key: &str) -> Client {
    Client::new(config(base_url, Credentials::ApiKey(Secret::new(key)))).unwrap()
}

fn token_client(base_url: &str, client_id: &str, secret: &str) -> Client {
    let credentials = Credentials::ClientCredentials {
        client_id: client_id.to_owned(),
        client_secret: Secret::new(secret),
    };
    Client::new(config(base_url, credentials)).unwrap()
}

/// How often a test polls before it gives up on a record that never finishes.
const MAX_POLLS: u32 = 1000;

/// Poll an analysis until it is completed or failed.
pub(crate) async fn finished_analysis(client: &Client, id: &str) -> Analysis {
    for _ in 0..MAX_POLLS {
        let analysis = client.analysis_detail(id).await.unwrap();
        if !analysis.status.is_running() {
            return analysis;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("analysis {id} never finished");
}

/// Poll a task until it is completed or failed.
pub(crate) async fn finished_task(client: &Client, id: &str) -> Task {
    for _ in 0..MAX_POLLS {
        let task = client.task_detail(id).await.unwrap();
        if !task.status.is_running() {
            return task;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("task {id} never finished");
}

/// Submit an analysis and wait for it to finish.
pub(crate) async fn analysed(client: &Client, video_url: &str) -> Analysis {
    let submitted = client.analyze(video_url).await.unwrap();
    finished_analysis(client, &submitted.id).await
}

pub(crate) fn create_request(video_url: &str, obj_ids: &[u32]) -> CreateTask {
    CreateTask {
        video_url: video_url.to_owned(),
        mappings: obj_ids
            .iter()
            .map(|obj_id| Mapping {
                obj_id: *obj_id,
                img_url: format!("https://faces.example/{obj_id}.jpg"),
            })
            .collect(),
        model_name: "akool-premium".to_owned(),
        resolution: headswap_batch::akool::Resolution::P720,
        template_id: None,
        keep_original_sound: true,
    }
}

const VIDEO: &str = "https://videos.example/source.mp4?campaign=spring";

#[tokio::test]
async fn full_workflow_with_an_api_key() {
    let knobs = SimKnobs {
        output_bytes: 100_000,
        ..SimKnobs::default()
    };
    let sim = start(knobs).await;
    let client = client(&sim.base_url(), "demo-key");

    let submitted = client.analyze(VIDEO).await.unwrap();
    assert_eq!(submitted.id.len(), 24);
    assert_eq!(submitted.status, RemoteStatus::Queued);
    assert_eq!(submitted.progress, 0.0);
    assert!(submitted.subjects.is_empty());

    let analysis = finished_analysis(&client, &submitted.id).await;
    assert_eq!(analysis.status, RemoteStatus::Completed);
    assert_eq!(analysis.progress, 100.0);
    assert_eq!(analysis.error_code, Some(0));
    assert_eq!(analysis.error_reason.as_deref(), Some("success"));
    assert_eq!(analysis.subjects.len(), 1);
    assert_eq!(analysis.subjects[0].obj_id, 0);
    assert!(analysis.subjects[0].img_url.starts_with("http://"));

    let created = client
        .create_task(&create_request(VIDEO, &[0]))
        .await
        .unwrap();
    assert_eq!(created.status, RemoteStatus::Queued);
    assert_eq!(created.output_url, None);
    assert_eq!(created.video_duration, Some(10.0));

    let task = finished_task(&client, &created.id).await;
    assert_eq!(task.status, RemoteStatus::Completed);
    assert_eq!(task.error_code, None);
    let output_url = task.output_url.expect("a completed task has an output URL");
    assert!(output_url.starts_with(&format!("{}/_sim/files/", sim.base_url())));

    let response = client.http().get(&output_url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = response.bytes().await.unwrap();
    assert_eq!(
        bytes.as_ref(),
        output_content(&created.id, 100_000).as_slice()
    );

    let stats = sim.stats();
    assert_eq!(stats.calls.analyze, 1);
    assert_eq!(stats.calls.create, 1);
    assert_eq!(stats.calls.download, 1);
    assert_eq!(stats.billed_creates, 1);
    assert_eq!(stats.downloads.bytes, 100_000);
    sim.shutdown().await;
}

#[tokio::test]
async fn throttling_by_code_1005() {
    let knobs = SimKnobs {
        rate_limit: Some(0.001),
        ..SimKnobs::default()
    };
    let sim = start(knobs).await;
    let client = client(&sim.base_url(), "demo-key");
    client.analyze(VIDEO).await.unwrap();
    assert_eq!(
        client.analyze(VIDEO).await,
        Err(ApiError::Throttled { retry_after: None })
    );
    assert_eq!(sim.stats().throttled, 1);
}

#[tokio::test]
async fn throttling_by_http_429_reads_retry_after() {
    let knobs = SimKnobs {
        rate_limit: Some(0.001),
        throttle: ThrottleMode::Http,
        ..SimKnobs::default()
    };
    let sim = start(knobs).await;
    let client = client(&sim.base_url(), "demo-key");
    client.analyze(VIDEO).await.unwrap();
    assert_eq!(
        client.analyze(VIDEO).await,
        Err(ApiError::Throttled {
            retry_after: Some(Duration::from_secs(1))
        })
    );
}

#[tokio::test]
async fn code_2001_is_transient_and_known_not_processed() {
    let sim = start(SimKnobs {
        error_rate: 1.0,
        ..SimKnobs::default()
    })
    .await;
    let error = client(&sim.base_url(), "demo-key")
        .analyze(VIDEO)
        .await
        .unwrap_err();
    let ApiError::Transient {
        detail,
        outcome_unknown,
    } = error
    else {
        panic!("expected a transient error, got {error:?}");
    };
    assert!(!outcome_unknown);
    assert!(detail.contains("2001"), "{detail}");
    assert_eq!(sim.stats().faults.error, 1);
    assert_eq!(sim.stats().analyses, 0);
}

#[tokio::test]
async fn html_502_page_is_transient_with_unknown_outcome() {
    let sim = start(SimKnobs {
        http_error_rate: 1.0,
        ..SimKnobs::default()
    })
    .await;
    let error = client(&sim.base_url(), "demo-key")
        .task_detail("0123456789abcdef01234567")
        .await
        .unwrap_err();
    let ApiError::Transient {
        detail,
        outcome_unknown,
    } = error
    else {
        panic!("expected a transient error, got {error:?}");
    };
    assert!(outcome_unknown);
    assert!(detail.contains("HTTP 502"), "{detail}");
    assert!(detail.contains("502 Bad Gateway"), "{detail}");
    assert!(!detail.contains('\n'), "{detail}");
    assert!(detail.chars().count() <= 260, "{detail}");
    assert_eq!(sim.stats().faults.http_error, 1);
}

#[tokio::test]
async fn dropped_connection_is_transient_with_unknown_outcome() {
    let sim = start(SimKnobs {
        reset_rate: 1.0,
        ..SimKnobs::default()
    })
    .await;
    let error = client(&sim.base_url(), "demo-key")
        .analyze(VIDEO)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            ApiError::Transient {
                outcome_unknown: true,
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(sim.stats().faults.reset, 1);
    assert_eq!(sim.stats().analyses, 0);
}

/// The ambiguous create: some dropped creates were processed and billed. Every billed task
/// is either one the client saw succeed or one the stats record as reset after the create.
#[tokio::test]
async fn dropped_creates_may_have_been_billed() {
    let sim = start(SimKnobs {
        reset_rate: 0.5,
        analysis_time: Duration::ZERO,
        seed: 7,
        ..SimKnobs::default()
    })
    .await;
    let client = client(&sim.base_url(), "demo-key");
    // The analysis calls are dropped half of the time too.
    let mut analysis_id = None;
    for _ in 0..100 {
        if let Ok(analysis) = client.analyze(VIDEO).await {
            analysis_id = Some(analysis.id);
            break;
        }
    }
    let analysis_id = analysis_id.expect("an analysis got through");
    let mut completed = false;
    for _ in 0..100 {
        if let Ok(analysis) = client.analysis_detail(&analysis_id).await {
            assert_eq!(analysis.status, RemoteStatus::Completed);
            completed = true;
            break;
        }
    }
    assert!(completed);

    let (mut succeeded, mut unknown) = (0, 0);
    for _ in 0..40 {
        match client.create_task(&create_request(VIDEO, &[0])).await {
            Ok(_) => succeeded += 1,
            Err(ApiError::Transient {
                outcome_unknown: true,
                ..
            }) => unknown += 1,
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    let stats = sim.stats();
    assert!(stats.faults.reset_after_create > 0, "{stats:?}");
    assert!(unknown > stats.faults.reset_after_create, "{stats:?}");
    assert_eq!(succeeded + unknown, 40);
    assert_eq!(
        stats.billed_creates,
        succeeded + stats.faults.reset_after_create
    );
    assert_eq!(stats.creates.len(), 1);
    assert_eq!(stats.duplicate_creates, stats.billed_creates - 1);
}

#[tokio::test]
async fn refused_connection_is_transient_and_known_not_processed() {
    let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base_url = format!("http://{}", unused.local_addr().unwrap());
    drop(unused);
    let error = client(&base_url, "demo-key")
        .create_task(&create_request(VIDEO, &[0]))
        .await
        .unwrap_err();
    let ApiError::Transient {
        detail,
        outcome_unknown,
    } = error
    else {
        panic!("expected a transient error, got {error:?}");
    };
    assert!(!outcome_unknown, "{detail}");
    assert!(detail.starts_with("could not connect"), "{detail}");
}

#[tokio::test]
async fn timeout_after_sending_is_transient_with_unknown_outcome() {
    let sim = start(SimKnobs {
        latency: Duration::from_secs(3),
        ..SimKnobs::default()
    })
    .await;
    let mut config = config(
        &sim.base_url(),
        Credentials::ApiKey(Secret::new("demo-key")),
    );
    config.request_timeout = Duration::from_millis(200);
    let error = Client::new(config)
        .unwrap()
        .analyze(VIDEO)
        .await
        .unwrap_err();
    let ApiError::Transient {
        detail,
        outcome_unknown,
    } = error
    else {
        panic!("expected a transient error, got {error:?}");
    };
    assert!(outcome_unknown);
    assert!(detail.starts_with("timed out"), "{detail}");
}

#[tokio::test]
async fn unknown_and_foreign_ids_are_not_found() {
    let sim = start(SimKnobs {
        api_keys: vec!["team-a".into(), "team-b".into()],
        ..SimKnobs::default()
    })
    .await;
    let team_a = client(&sim.base_url(), "team-a");
    let team_b = client(&sim.base_url(), "team-b");
    let unknown = "0123456789abcdef01234567";
    assert!(matches!(
        team_a.analysis_detail(unknown).await,
        Err(ApiError::NotFound { .. })
    ));
    assert!(matches!(
        team_a.task_detail(unknown).await,
        Err(ApiError::NotFound { .. })
    ));
    analysed(&team_a, VIDEO).await;
    let task = team_a
        .create_task(&create_request(VIDEO, &[0]))
        .await
        .unwrap();
    let analysis = team_a.analyze(VIDEO).await.unwrap();
    assert!(matches!(
        team_b.analysis_detail(&analysis.id).await,
        Err(ApiError::NotFound { .. })
    ));
    assert!(matches!(
        team_b.task_detail(&task.id).await,
        Err(ApiError::NotFound { .. })
    ));
    // Team b has no analysis of its own, so it cannot create on team a's.
    assert!(matches!(
        team_b.create_task(&create_request(VIDEO, &[0])).await,
        Err(ApiError::Rejected { code: 1003, .. })
    ));
}

#[tokio::test]
async fn out_of_credits_until_topped_up() {
    let sim = start(SimKnobs {
        credits: Some(1),
        ..SimKnobs::default()
    })
    .await;
    let client = client(&sim.base_url(), "demo-key");
    analysed(&client, VIDEO).await;
    client
        .create_task(&create_request(VIDEO, &[0]))
        .await
        .unwrap();
    assert_eq!(
        client.create_task(&create_request(VIDEO, &[0])).await,
        Err(ApiError::OutOfCredits {
            message: "Insufficient credits".into()
        })
    );
    assert_eq!(sim.stats().credits_left, Some(0));
    assert_eq!(sim.stats().billed_creates, 1);
    sim.add_credits(2);
    client
        .create_task(&create_request(VIDEO, &[0]))
        .await
        .unwrap();
    assert_eq!(sim.stats().credits_left, Some(1));
}

#[tokio::test]
async fn wrong_and_missing_credentials_are_unauthorized() {
    let sim = start(SimKnobs::default()).await;
    let error = client(&sim.base_url(), "not-a-key")
        .analyze(VIDEO)
        .await
        .unwrap_err();
    assert!(
        matches!(error, ApiError::Unauthorized { code: 1101, .. }),
        "{error:?}"
    );
    assert!(!error.to_string().contains("not-a-key"));

    // The client always sends credentials, so "missing" is checked with a bare request.
    let answer: Value = reqwest::Client::new()
        .post(format!("{}/api/open/v4/headswap/analyze", sim.base_url()))
        .json(&json!({"video_url": VIDEO, "type": "head"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["code"], 1102);

    let wrong_secret = token_client(&sim.base_url(), "demo-client", "not-a-key");
    assert!(matches!(
        wrong_secret.analyze(VIDEO).await,
        Err(ApiError::Unauthorized { code: 1101, .. })
    ));
    let wrong_client = token_client(&sim.base_url(), "someone", "demo-key");
    assert!(matches!(
        wrong_client.analyze(VIDEO).await,
        Err(ApiError::Unauthorized { code: 1101, .. })
    ));
    assert_eq!(sim.stats().calls.token, 2);
    assert_eq!(sim.stats().calls.analyze, 2);
}

#[tokio::test]
async fn invalid_requests_are_rejected() {
    let sim = start(SimKnobs {
        analysis_time: Duration::ZERO,
        ..SimKnobs::default()
    })
    .await;
    let client = client(&sim.base_url(), "demo-key");
    let answer: Value = reqwest::Client::new()
        .post(format!("{}/api/open/v4/headswap/analyze", sim.base_url()))
        .header("x-api-key", "demo-key")
        .json(&json!({"video_url": VIDEO, "type": "face"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["code"], 1003);

    assert!(matches!(
        client.analyze("ftp://videos.example/a.mp4").await,
        Err(ApiError::Rejected { code: 1003, .. })
    ));

    let video = format!("{VIDEO}&subjects=6");
    analysed(&client, &video).await;
    assert_eq!(
        client
            .create_task(&create_request(&video, &[0, 1, 2, 3, 4, 5]))
            .await,
        Err(ApiError::Rejected {
            code: 1003,
            message: "Up to 5 characters can be replaced at one time.".into()
        })
    );
    let Err(ApiError::Rejected { code, message }) =
        client.create_task(&create_request(&video, &[6])).await
    else {
        panic!("an undetected obj_id must be rejected");
    };
    assert_eq!(code, 1003);
    assert!(message.contains("not detected"), "{message}");
    let mut unknown_model = create_request(&video, &[0]);
    unknown_model.model_name = "akool-ultra".into();
    assert_eq!(
        client.create_task(&unknown_model).await,
        Err(ApiError::Rejected {
            code: 1003,
            message: "Your current account does not support this feature.".into()
        })
    );
    assert_eq!(sim.stats().billed_creates, 0);
}

#[tokio::test]
async fn client_credentials_fetch_the_token_once_for_all_clones() {
    let sim = start(SimKnobs::default()).await;
    let client = token_client(&sim.base_url(), "demo-client", "demo-key");
    let mut calls = tokio::task::JoinSet::new();
    for index in 0..8 {
        let clone = client.clone();
        calls.spawn(async move {
            clone
                .analyze(&format!("https://videos.example/{index}.mp4"))
                .await
        });
    }
    while let Some(outcome) = calls.join_next().await {
        outcome.unwrap().unwrap();
    }
    let analysis = analysed(&client.clone(), VIDEO).await;
    assert_eq!(analysis.status, RemoteStatus::Completed);
    assert_eq!(sim.stats().calls.token, 1);
    assert_eq!(sim.stats().analyses, 9);

    // The token acts for the team of its client secret: the API key sees the same records.
    let by_key = self::client(&sim.base_url(), "demo-key");
    assert_eq!(
        by_key.analysis_detail(&analysis.id).await.unwrap().id,
        analysis.id
    );
}

#[tokio::test]
async fn errors_and_debug_output_never_show_credentials() {
    let sim = start(SimKnobs {
        http_error_rate: 1.0,
        ..SimKnobs::default()
    })
    .await;
    let client = token_client(&sim.base_url(), "demo-client", "demo-key");
    let error = client.analyze(VIDEO).await.unwrap_err();
    for printed in [
        format!("{error}"),
        format!("{error:?}"),
        format!("{client:?}"),
    ] {
        assert!(!printed.contains("demo-key"), "{printed}");
    }
}

/// A server that answers every request with one fixed response.
async fn fixed_server(status: u16, body: &'static str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().fallback(move || async move {
        (
            StatusCode::from_u16(status).unwrap(),
            [("content-type", "application/json")],
            body,
        )
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base_url
}

async fn fixed_client(body: &'static str) -> Client {
    client(&fixed_server(200, body).await, "fixed-server-key")
}

// Akool's documented examples, verbatim (Submit Person Analysis, Create Head Swap Task,
// Get Head Swap Task Detail).

const ANALYZE_SUBMIT_EXAMPLE: &str = r#"{
  "code": 1000,
  "msg": "Analyze success",
  "data": {
    "_id": "6a066d03625746c797390f55",
    "create_time": 1778806019014,
    "uid": 101400,
    "team_id": "6805fb69e92d9edc7ca0b409",
    "video_url": "https://example.com/videos/source.mp4",
    "type": "head",
    "status": 1,
    "task_id": "6a066d022872921bde86b72f",
    "progress": 0
  }
}"#;

const TASK_CREATE_EXAMPLE: &str = r#"{
"code": 1000,
"msg": "OK",
"data": {
"_id": "6a066dc58570ecbf64f761a5",
"create_time": 1778806213962,
"uid": 101400,
"team_id": "6805fb69e92d9edc7ca0b409",
"video_duration": 10,
"task_id": "6a066dc52872921bde86b745",
"resolution": "720p",
"status": 1,
"deduction_lock_duration": 100,
"model_name": "akool-premium",
"file_name": "Headswap_1778806213962.mp4",
"video_url": null
}
}"#;

const TASK_DETAIL_COMPLETED_EXAMPLE: &str = r#"{
"code": 1000,
"msg": "OK",
"data": {
"_id": "6a066dc58570ecbf64f761a5",
"uid": 101400,
"team_id": "6805fb69e92d9edc7ca0b409",
"source_video_url": "https://example.com/videos/source.mp4",
"create_time": 1778806213962,
"status": 3,
"video_duration": 10,
"resolution": "720p",
"deduction_duration": 15,
"video_url": "https://example.com/output/result.mp4",
"progress": 100,
"priority": 9,
"task_id": "6a066dc52872921bde86b745",
"file_name": "Headswap_1778806213962.mp4",
"model_name": "akool-premium"
}
}"#;

/// The documented shape of Get Analysis Result, with Akool's own disagreement between
/// `detected_objects` (3) and `media` (1 item).
const ANALYSIS_DETAIL_EXAMPLE: &str = r#"{
  "code": 1000,
  "msg": "OK",
  "data": {
    "_id": "6a066d03625746c797390f55",
    "create_time": 1778806019014,
    "uid": 101400,
    "team_id": "6805fb69e92d9edc7ca0b409",
    "video_url": "https://example.com/videos/source.mp4",
    "type": "head",
    "status": 3,
    "task_id": "6a066d022872921bde86b72f",
    "progress": 100,
    "analysis_result": {
      "detected_objects": 3,
      "media": [
        {
          "obj_id": 0,
          "img_url": "https://example.com/analysis/person_0.jpg",
          "media_type": "images"
        }
      ],
      "video_info": { "width": 1280, "height": 720, "fps": 25, "frame_count": 250 }
    },
    "error_reason": "success",
    "error_code": 0
  }
}"#;

#[tokio::test]
async fn decodes_the_documented_analyze_submit_answer() {
    let analysis = fixed_client(ANALYZE_SUBMIT_EXAMPLE)
        .await
        .analyze("https://example.com/videos/source.mp4")
        .await
        .unwrap();
    assert_eq!(
        analysis,
        Analysis {
            id: "6a066d03625746c797390f55".into(),
            status: RemoteStatus::Queued,
            progress: 0.0,
            subjects: vec![],
            error_code: None,
            error_reason: None,
        }
    );
}

#[tokio::test]
async fn decodes_the_documented_analysis_result_trusting_media() {
    let analysis = fixed_client(ANALYSIS_DETAIL_EXAMPLE)
        .await
        .analysis_detail("6a066d03625746c797390f55")
        .await
        .unwrap();
    assert_eq!(analysis.status, RemoteStatus::Completed);
    assert_eq!(
        analysis.subjects,
        vec![Subject {
            obj_id: 0,
            img_url: "https://example.com/analysis/person_0.jpg".into()
        }]
    );
    assert_eq!(analysis.error_code, Some(0));
}

#[tokio::test]
async fn decodes_the_documented_create_answer() {
    let task = fixed_client(TASK_CREATE_EXAMPLE)
        .await
        .create_task(&create_request(
            "https://example.com/videos/source.mp4",
            &[0],
        ))
        .await
        .unwrap();
    assert_eq!(
        task,
        Task {
            id: "6a066dc58570ecbf64f761a5".into(),
            status: RemoteStatus::Queued,
            progress: 0.0,
            output_url: None,
            video_duration: Some(10.0),
            error_code: None,
            error_reason: None,
        }
    );
}

#[tokio::test]
async fn decodes_the_documented_completed_task() {
    let task = fixed_client(TASK_DETAIL_COMPLETED_EXAMPLE)
        .await
        .task_detail("6a066dc58570ecbf64f761a5")
        .await
        .unwrap();
    assert_eq!(task.status, RemoteStatus::Completed);
    assert_eq!(task.progress, 100.0);
    assert_eq!(
        task.output_url.as_deref(),
        Some("https://example.com/output/result.mp4")
    );
}

#[tokio::test]
async fn tolerates_float_progress_empty_or_null_output_unknown_status_and_extra_fields() {
    let running_empty = r#"{"code":1000,"msg":"OK","data":{"_id":"t1","status":2,
        "progress":42.5,"video_url":"","error_reason":null,"error_code":null}}"#;
    let task = fixed_client(running_empty)
        .await
        .task_detail("t1")
        .await
        .unwrap();
    assert_eq!(task.status, RemoteStatus::Processing);
    assert_eq!(task.progress, 42.5);
    assert_eq!(task.output_url, None);
    assert_eq!(task.error_code, None);

    let running_null = r#"{"code":1000,"msg":"OK","data":{"_id":"t1","status":1,
        "progress":null,"video_url":null}}"#;
    let task = fixed_client(running_null)
        .await
        .task_detail("t1")
        .await
        .unwrap();
    assert_eq!(task.status, RemoteStatus::Queued);
    assert_eq!(task.progress, 0.0);
    assert_eq!(task.output_url, None);

    let unknown_status = r#"{"code":1000,"msg":"OK","extra_top":{"a":[1]},
        "data":{"_id":"t1","status":7,"progress":3,"new_field":"x","nested":{"deep":true},
        "priority":null}}"#;
    let task = fixed_client(unknown_status)
        .await
        .task_detail("t1")
        .await
        .unwrap();
    assert_eq!(task.status, RemoteStatus::Unknown(7));
    assert!(task.status.is_running());
    assert_eq!(task.progress, 3.0);

    let float_progress_analysis = r#"{"code":1000,"msg":"OK","data":{"_id":"a1","status":2,
        "progress":12.5,"analysis_result":null,"something_new":1}}"#;
    let analysis = fixed_client(float_progress_analysis)
        .await
        .analysis_detail("a1")
        .await
        .unwrap();
    assert_eq!(analysis.status, RemoteStatus::Processing);
    assert_eq!(analysis.progress, 12.5);

    let failed = r#"{"code":1000,"msg":"OK","data":{"_id":"t1","status":4,"video_url":"",
        "error_code":3001,"error_reason":"face not detected in reference image"}}"#;
    let task = fixed_client(failed).await.task_detail("t1").await.unwrap();
    assert_eq!(task.status, RemoteStatus::Failed);
    assert_eq!(task.error_code, Some(3001));
    assert_eq!(
        task.error_reason.as_deref(),
        Some("face not detected in reference image")
    );
}

#[tokio::test]
async fn truncated_json_and_error_envelopes_from_a_plain_server() {
    let truncated = r#"{"code":1000,"msg":"OK","data":{"_id":"6a066dc5"#;
    assert!(matches!(
        fixed_client(truncated).await.task_detail("x").await,
        Err(ApiError::Transient {
            outcome_unknown: true,
            ..
        })
    ));
    let blocked = r#"{"code":1200,"msg":"account blocked"}"#;
    assert_eq!(
        fixed_client(blocked).await.task_detail("x").await,
        Err(ApiError::Unauthorized {
            code: 1200,
            message: "account blocked".into()
        })
    );
    let base_url = fixed_server(503, r#"{"code":2001,"msg":"server error"}"#).await;
    assert!(matches!(
        client(&base_url, "fixed-server-key").task_detail("x").await,
        Err(ApiError::Transient {
            outcome_unknown: false,
            ..
        })
    ));
}

#[tokio::test]
async fn requests_carry_the_user_agent_and_the_credentials() {
    use std::sync::{Arc, Mutex};

    let seen: Arc<Mutex<Vec<(String, axum::http::HeaderMap)>>> = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}", listener.local_addr().unwrap());
    let recorder = seen.clone();
    let app = axum::Router::new().fallback(
        move |uri: axum::http::Uri, headers: axum::http::HeaderMap| {
            recorder.lock().unwrap().push((uri.to_string(), headers));
            async { r#"{"code":1000,"msg":"OK","token":"tok-123","data":{"_id":"a1","status":1}}"# }
        },
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    client(&base_url, "key-123")
        .analysis_detail("a1")
        .await
        .unwrap();
    let token = token_client(&base_url, "id-1", "secret-1");
    token.analyze(VIDEO).await.unwrap();
    token.analysis_detail("a1").await.unwrap();

    let seen = seen.lock().unwrap();
    let user_agent = format!("headswap-batch/{}", env!("CARGO_PKG_VERSION"));
    for (_, headers) in seen.iter() {
        assert_eq!(headers["user-agent"], user_agent.as_str());
    }
    let paths: Vec<&str> = seen.iter().map(|(uri, _)| uri.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/api/open/v4/headswap/analyze/detail?_id=a1",
            "/api/open/v3/getToken",
            "/api/open/v4/headswap/analyze",
            "/api/open/v4/headswap/analyze/detail?_id=a1",
        ]
    );
    assert_eq!(seen[0].1["x-api-key"], "key-123");
    assert!(seen[0].1.get("authorization").is_none());
    assert!(seen[1].1.get("x-api-key").is_none());
    for (_, headers) in &seen[2..] {
        assert_eq!(headers["authorization"], "Bearer tok-123");
        assert!(headers.get("x-api-key").is_none());
    }
}
