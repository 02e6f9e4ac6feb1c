//! The simulator over real loopback HTTP: Akool's field names and validation rules, the
//! steering parameters, authentication, signed expiring downloads with ranges, injected
//! faults, stats, and the `simulate` command.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use headswap_batch::akool::RemoteStatus;
use headswap_batch::simulator::{SimKnobs, Simulator, Stats, output_content};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::akool::{analysed, client, create_request, finished_analysis, finished_task, start};

const VIDEO: &str = "https://videos.example/clip.mp4";
const ANALYZE: &str = "/api/open/v4/headswap/analyze";
const ANALYSIS_DETAIL: &str = "/api/open/v4/headswap/analyze/detail";
const CREATE: &str = "/api/open/v4/headswap/task/create";
const TASK_DETAIL: &str = "/api/open/v4/headswap/task/detail";
const GET_TOKEN: &str = "/api/open/v3/getToken";

/// A bare HTTP client speaking to one simulator as one API key.
struct Raw {
    http: reqwest::Client,
    base_url: String,
    key: Option<String>,
}

impl Raw {
    fn new(sim: &Simulator, key: Option<&str>) -> Raw {
        Raw {
            http: reqwest::Client::new(),
            base_url: sim.base_url(),
            key: key.map(str::to_owned),
        }
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let mut request = self
            .http
            .post(format!("{}{path}", self.base_url))
            .json(&body);
        if let Some(key) = &self.key {
            request = request.header("x-api-key", key);
        }
        request.send().await.unwrap().json().await.unwrap()
    }

    async fn get(&self, path: &str, id: &str) -> Value {
        let mut request = self
            .http
            .get(format!("{}{path}", self.base_url))
            .query(&[("_id", id)]);
        if let Some(key) = &self.key {
            request = request.header("x-api-key", key);
        }
        request.send().await.unwrap().json().await.unwrap()
    }

    async fn create(&self, body: Value) -> Value {
        self.post(CREATE, body).await
    }
}

fn mapping(obj_id: u32) -> Value {
    json!({"obj_id": obj_id, "img_url": format!("https://faces.example/{obj_id}.jpg")})
}

fn create_body(video_url: &str, mappings: Vec<Value>) -> Value {
    json!({
        "video_url": video_url,
        "mappings": mappings,
        "model_name": "akool-premium",
        "resolution": "720p",
        "keep_original_sound": true
    })
}

#[track_caller]
fn check_rejected(answer: &Value, message: &str) {
    assert_eq!(answer["code"], 1003, "{answer}");
    assert!(
        answer["msg"].as_str().unwrap().contains(message),
        "expected {message:?} in {answer}"
    );
}

fn quick() -> SimKnobs {
    SimKnobs {
        analysis_time: Duration::ZERO,
        render_time: Duration::ZERO,
        ..SimKnobs::default()
    }
}

/// A completed task's output URL, fetched with a fresh task-detail call.
async fn output_url(sim: &Simulator, task_id: &str) -> String {
    let task = finished_task(&client(&sim.base_url(), "demo-key"), task_id).await;
    task.output_url.expect("completed with an output")
}

/// Analyse VIDEO, create one task on it and wait until it is rendered. Returns its id.
async fn rendered_task(sim: &Simulator) -> String {
    let client = client(&sim.base_url(), "demo-key");
    analysed(&client, VIDEO).await;
    let task = client
        .create_task(&create_request(VIDEO, &[0]))
        .await
        .unwrap();
    finished_task(&client, &task.id).await;
    task.id
}

#[tokio::test]
async fn analysis_answers_use_akool_field_names() {
    let sim = start(SimKnobs {
        analysis_time: Duration::from_secs(60),
        ..SimKnobs::default()
    })
    .await;
    let raw = Raw::new(&sim, Some("demo-key"));
    let answer = raw
        .post(ANALYZE, json!({"video_url": VIDEO, "type": "head"}))
        .await;
    assert_eq!(answer["code"], 1000);
    assert_eq!(answer["msg"], "Analyze success");
    let data = &answer["data"];
    let id = data["_id"].as_str().unwrap();
    assert_eq!(id.len(), 24);
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
    assert!(data["create_time"].as_u64().unwrap() > 1_600_000_000_000);
    assert!(data["uid"].is_u64());
    assert_eq!(data["team_id"].as_str().unwrap().len(), 24);
    assert_eq!(data["video_url"], VIDEO);
    assert_eq!(data["type"], "head");
    assert_eq!(data["status"], 1);
    assert_eq!(data["progress"], 0);
    assert!(data["task_id"].is_string());

    // Still running a minute-long analysis: no result, no error yet.
    let detail = raw.get(ANALYSIS_DETAIL, id).await;
    assert_eq!(detail["code"], 1000);
    assert!(matches!(detail["data"]["status"].as_i64(), Some(1 | 2)));
    assert!(detail["data"]["analysis_result"].is_null());
    assert!(detail["data"].get("error_code").is_none());
}

#[tokio::test]
async fn completed_analysis_lists_the_subjects() {
    let sim = start(quick()).await;
    let raw = Raw::new(&sim, Some("demo-key"));
    let video = format!("{VIDEO}?subjects=3&duration=12");
    let answer = raw
        .post(ANALYZE, json!({"video_url": video, "type": "head"}))
        .await;
    let id = answer["data"]["_id"].as_str().unwrap();
    let detail = raw.get(ANALYSIS_DETAIL, id).await;
    let data = &detail["data"];
    assert_eq!(data["status"], 3, "{detail}");
    assert_eq!(data["progress"], 100);
    assert_eq!(data["error_reason"], "success");
    assert_eq!(data["error_code"], 0);
    let result = &data["analysis_result"];
    assert_eq!(result["detected_objects"], 3);
    let media = result["media"].as_array().unwrap();
    assert_eq!(media.len(), 3);
    for (index, item) in media.iter().enumerate() {
        assert_eq!(item["obj_id"], index);
        assert_eq!(item["media_type"], "images");
        let preview = item["img_url"].as_str().unwrap();
        let image = reqwest::get(preview).await.unwrap();
        assert_eq!(image.status(), StatusCode::OK);
    }
    assert_eq!(result["video_info"]["frame_count"], 300);
}

#[tokio::test]
async fn video_url_parameters_steer_the_analysis() {
    let sim = start(quick()).await;
    let client = client(&sim.base_url(), "demo-key");
    let none = analysed(&client, &format!("{VIDEO}?subjects=0")).await;
    assert_eq!(none.status, RemoteStatus::Completed);
    assert!(none.subjects.is_empty());

    let too_long = analysed(&client, &format!("{VIDEO}?duration=25")).await;
    assert_eq!(too_long.status, RemoteStatus::Failed);
    assert!(too_long.error_reason.unwrap().contains("3 to 20 seconds"));
    let too_short = analysed(&client, &format!("{VIDEO}?duration=2")).await;
    assert_eq!(too_short.status, RemoteStatus::Failed);

    let failing = analysed(&client, &format!("{VIDEO}?fail=analysis")).await;
    assert_eq!(failing.status, RemoteStatus::Failed);
    assert!(failing.error_code.is_some());
    assert!(failing.error_reason.is_some());
    assert!(failing.subjects.is_empty());
}

#[tokio::test]
async fn analysis_moves_through_the_statuses() {
    let sim = start(SimKnobs {
        analysis_time: Duration::from_millis(300),
        ..SimKnobs::default()
    })
    .await;
    let client = client(&sim.base_url(), "demo-key");
    let submitted = client.analyze(VIDEO).await.unwrap();
    let mut seen = vec![submitted.status];
    let mut progress = vec![submitted.progress];
    loop {
        let analysis = client.analysis_detail(&submitted.id).await.unwrap();
        if seen.last() != Some(&analysis.status) {
            seen.push(analysis.status);
        }
        progress.push(analysis.progress);
        if !analysis.status.is_running() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(seen.first(), Some(&RemoteStatus::Queued));
    assert_eq!(seen.last(), Some(&RemoteStatus::Completed));
    assert!(seen.len() <= 3, "{seen:?}");
    assert!(
        progress.windows(2).all(|pair| pair[0] <= pair[1]),
        "{progress:?}"
    );
    assert_eq!(progress.last(), Some(&100.0));
}

#[tokio::test]
async fn create_validation_follows_akool() {
    let sim = start(SimKnobs {
        analysis_time: Duration::ZERO,
        ..SimKnobs::default()
    })
    .await;
    let raw = Raw::new(&sim, Some("demo-key"));
    let video = format!("{VIDEO}?subjects=2");

    check_rejected(
        &raw.create(create_body(&video, vec![mapping(0)])).await,
        "has not been analysed",
    );
    analysed(&client(&sim.base_url(), "demo-key"), &video).await;

    check_rejected(&raw.create(create_body(&video, vec![])).await, "mappings");
    check_rejected(
        &raw.create(create_body(&video, (0..6).map(mapping).collect()))
            .await,
        "Up to 5 characters can be replaced at one time.",
    );
    check_rejected(
        &raw.create(create_body(&video, vec![mapping(2)])).await,
        "obj_id 2 was not detected",
    );
    check_rejected(
        &raw.create(create_body(&video, vec![mapping(1), mapping(1)]))
            .await,
        "obj_id 1 is mapped more than once",
    );
    check_rejected(
        &raw.create(create_body(
            &video,
            vec![json!({"obj_id": 0, "img_url": "ftp://faces.example/0.jpg"})],
        ))
        .await,
        "img_url",
    );
    check_rejected(
        &raw.create(create_body(
            &video,
            vec![json!({"img_url": "https://f/0.jpg"})],
        ))
        .await,
        "obj_id",
    );
    let mut body = create_body(&video, vec![mapping(0)]);
    body["model_name"] = json!("other-model");
    check_rejected(
        &raw.create(body).await,
        "Your current account does not support this feature.",
    );
    let mut body = create_body(&video, vec![mapping(0)]);
    body["resolution"] = json!("1080p");
    check_rejected(&raw.create(body).await, "480p or 720p");
    let mut body = create_body(&video, vec![mapping(0)]);
    body["keep_original_sound"] = json!("yes");
    check_rejected(&raw.create(body).await, "keep_original_sound");
    // The URL must be the analysed one byte for byte.
    check_rejected(
        &raw.create(create_body(&format!("{video}&"), vec![mapping(0)]))
            .await,
        "has not been analysed",
    );
    check_rejected(&raw.post(CREATE, json!("not an object")).await, "body");
    assert_eq!(sim.stats().billed_creates, 0);

    let mut body = create_body(&video, vec![mapping(1), mapping(0)]);
    body["resolution"] = json!("480p");
    body["template_id"] = json!("t-1");
    let answer = raw.create(body).await;
    assert_eq!(answer["code"], 1000, "{answer}");
    let data = &answer["data"];
    assert_eq!(data["_id"].as_str().unwrap().len(), 24);
    assert_eq!(data["status"], 1);
    assert_eq!(data["resolution"], "480p");
    assert_eq!(data["model_name"], "akool-premium");
    assert!(data["video_url"].is_null());
    assert_eq!(data["video_duration"], 10.0);
    assert!(data["deduction_lock_duration"].is_u64());
    assert!(data["file_name"].as_str().unwrap().ends_with(".mp4"));
    assert!(data["task_id"].is_string());
    assert_eq!(sim.stats().billed_creates, 1);
}

#[tokio::test]
async fn create_needs_a_completed_successful_analysis() {
    let sim = start(SimKnobs {
        analysis_time: Duration::from_secs(60),
        ..SimKnobs::default()
    })
    .await;
    let raw = Raw::new(&sim, Some("demo-key"));
    raw.post(ANALYZE, json!({"video_url": VIDEO, "type": "head"}))
        .await;
    check_rejected(
        &raw.create(create_body(VIDEO, vec![mapping(0)])).await,
        "not complete",
    );

    let sim = start(quick()).await;
    let raw = Raw::new(&sim, Some("demo-key"));
    let failing = format!("{VIDEO}?fail=analysis");
    raw.post(ANALYZE, json!({"video_url": failing, "type": "head"}))
        .await;
    check_rejected(
        &raw.create(create_body(&failing, vec![mapping(0)])).await,
        "failed",
    );
}

#[tokio::test]
async fn task_detail_while_running_and_when_failed() {
    let sim = start(SimKnobs {
        analysis_time: Duration::ZERO,
        render_time: Duration::from_secs(60),
        ..SimKnobs::default()
    })
    .await;
    let client = client(&sim.base_url(), "demo-key");
    analysed(&client, VIDEO).await;
    let task = client
        .create_task(&create_request(VIDEO, &[0]))
        .await
        .unwrap();
    let raw = Raw::new(&sim, Some("demo-key"));
    let first = raw.get(TASK_DETAIL, &task.id).await;
    let second = raw.get(TASK_DETAIL, &task.id).await;
    let mut outputs = Vec::new();
    for answer in [&first, &second] {
        let data = &answer["data"];
        assert_eq!(data["_id"], task.id.as_str());
        assert_eq!(data["source_video_url"], VIDEO);
        assert!(matches!(data["status"].as_i64(), Some(1 | 2)), "{answer}");
        assert!(data["progress"].as_f64().unwrap() < 100.0);
        for field in ["error_code", "error_reason"] {
            assert!(data.get(field).is_none_or(Value::is_null), "{answer}");
        }
        outputs.push(data["video_url"].clone());
    }
    // The output is "" on one read and null on the next, as the documentation allows both.
    outputs.sort_by_key(Value::is_null);
    assert_eq!(outputs, vec![json!(""), Value::Null]);

    let sim = start(quick()).await;
    let client = self::client(&sim.base_url(), "demo-key");
    let video = format!("{VIDEO}?fail=render");
    analysed(&client, &video).await;
    let task = client
        .create_task(&create_request(&video, &[0]))
        .await
        .unwrap();
    let failed = finished_task(&client, &task.id).await;
    assert_eq!(failed.status, RemoteStatus::Failed);
    assert_eq!(failed.error_code, Some(3001));
    assert_eq!(
        failed.error_reason.as_deref(),
        Some("face not detected in reference image")
    );
    assert_eq!(failed.output_url, None);
}

#[tokio::test]
async fn authorization_header_wins_over_api_key() {
    let sim = start(SimKnobs::default()).await;
    let http = reqwest::Client::new();
    let token_answer: Value = http
        .post(format!("{}{GET_TOKEN}", sim.base_url()))
        .json(&json!({"clientId": "demo-client", "clientSecret": "demo-key"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(token_answer["code"], 1000);
    assert!(token_answer.get("data").is_none());
    let token = token_answer["token"].as_str().unwrap();

    let analyze = |authorization: Option<String>, key: Option<&'static str>| {
        let mut request = http
            .post(format!("{}{ANALYZE}", sim.base_url()))
            .json(&json!({"video_url": VIDEO, "type": "head"}));
        if let Some(authorization) = authorization {
            request = request.header("authorization", authorization);
        }
        if let Some(key) = key {
            request = request.header("x-api-key", key);
        }
        async move {
            let answer: Value = request.send().await.unwrap().json().await.unwrap();
            answer["code"].as_i64().unwrap()
        }
    };
    assert_eq!(analyze(Some(format!("Bearer {token}")), None).await, 1000);
    assert_eq!(
        analyze(Some(format!("Bearer {token}")), Some("wrong")).await,
        1000
    );
    assert_eq!(
        analyze(Some("Bearer wrong".into()), Some("demo-key")).await,
        1101
    );
    assert_eq!(analyze(Some(token.to_owned()), None).await, 1101);
    assert_eq!(analyze(None, Some("wrong")).await, 1101);
    assert_eq!(analyze(None, None).await, 1102);

    let missing: Value = http
        .post(format!("{}{GET_TOKEN}", sim.base_url()))
        .json(&json!({"clientId": "demo-client"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(missing["code"], 1102);
}

#[tokio::test]
async fn download_serves_the_output_with_ranges() {
    let sim = start(SimKnobs {
        output_bytes: 5000,
        ..quick()
    })
    .await;
    let task_id = rendered_task(&sim).await;
    let url = output_url(&sim, &task_id).await;
    let content = output_content(&task_id, 5000);
    let http = reqwest::Client::new();

    let whole = http.get(&url).send().await.unwrap();
    assert_eq!(whole.status(), StatusCode::OK);
    let headers = whole.headers().clone();
    assert_eq!(headers["content-length"], "5000");
    assert_eq!(headers["accept-ranges"], "bytes");
    assert_eq!(headers["content-type"], "video/mp4");
    let etag = headers["etag"].to_str().unwrap().to_owned();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    assert_eq!(whole.bytes().await.unwrap().as_ref(), content.as_slice());

    let tail = http
        .get(&url)
        .header("range", "bytes=1000-")
        .header("if-range", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(tail.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(tail.headers()["content-range"], "bytes 1000-4999/5000");
    assert_eq!(tail.headers()["content-length"], "4000");
    assert_eq!(tail.bytes().await.unwrap().as_ref(), &content[1000..]);

    let middle = http
        .get(&url)
        .header("range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(middle.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(middle.headers()["content-range"], "bytes 10-19/5000");
    assert_eq!(middle.bytes().await.unwrap().as_ref(), &content[10..20]);

    // A client holding another version of the file gets the whole new one.
    let changed = http
        .get(&url)
        .header("range", "bytes=1000-")
        .header("if-range", "\"some-other-version\"")
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), StatusCode::OK);
    assert_eq!(changed.bytes().await.unwrap().as_ref(), content.as_slice());

    let beyond = http
        .get(&url)
        .header("range", "bytes=5000-")
        .send()
        .await
        .unwrap();
    assert_eq!(beyond.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(beyond.headers()["content-range"], "bytes */5000");

    let stats = sim.stats();
    assert_eq!(stats.calls.download, 5);
    assert_eq!(stats.downloads.served, 4);
    assert_eq!(stats.downloads.bytes, 5000 + 4000 + 10 + 5000);
}

#[tokio::test]
async fn output_urls_are_signed_and_expire() {
    let sim = start(SimKnobs {
        url_ttl: Duration::from_millis(100),
        ..quick()
    })
    .await;
    let task_id = rendered_task(&sim).await;
    let url = output_url(&sim, &task_id).await;
    let http = reqwest::Client::new();

    let forged = url.replace("sig=", "sig=00");
    let denied = http.get(&forged).send().await.unwrap();
    assert_eq!(denied.status(), StatusCode::FORBIDDEN);
    assert!(denied.text().await.unwrap().contains("AccessDenied"));
    let unsigned = url.split('?').next().unwrap();
    assert_eq!(
        http.get(unsigned).send().await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    let unknown = format!("{}/_sim/files/0123456789abcdef01234567.mp4", sim.base_url());
    assert_eq!(
        http.get(&unknown).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );

    // Let the URL's lifetime pass: the same URL is refused; task detail signs a later one.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let expired = http.get(&url).send().await.unwrap();
    assert_eq!(expired.status(), StatusCode::FORBIDDEN);
    let body = expired.text().await.unwrap();
    assert!(
        body.contains("AccessDenied") && body.contains("expired"),
        "{body}"
    );
    let fresh = output_url(&sim, &task_id).await;
    assert!(expires_of(&fresh) > expires_of(&url), "{fresh} {url}");
    assert_eq!(sim.stats().downloads.denied, 3);
    assert_eq!(sim.stats().downloads.served, 0);
}

fn expires_of(url: &str) -> u64 {
    let url = reqwest::Url::parse(url).unwrap();
    let (_, expires) = url.query_pairs().find(|(key, _)| key == "expires").unwrap();
    expires.parse().unwrap()
}

#[tokio::test]
async fn truncated_downloads_send_less_than_announced() {
    let sim = start(SimKnobs {
        truncate_rate: 1.0,
        output_bytes: 200_000,
        ..quick()
    })
    .await;
    let task_id = rendered_task(&sim).await;
    let url = output_url(&sim, &task_id).await;
    let mut response = reqwest::get(&url).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.content_length(), Some(200_000));
    let mut received = Vec::new();
    let error = loop {
        match response.chunk().await {
            Ok(Some(chunk)) => received.extend_from_slice(&chunk),
            Ok(None) => panic!("the body ended normally after {} bytes", received.len()),
            Err(error) => break error,
        }
    };
    assert!(error.is_body() || error.is_decode(), "{error:?}");
    assert!(received.len() < 200_000);
    assert_eq!(
        received,
        output_content(&task_id, 200_000)[..received.len()]
    );
    assert_eq!(sim.stats().faults.truncate, 1);
}

#[tokio::test]
async fn dropped_connections_are_errors_not_answers() {
    let sim = start(SimKnobs {
        reset_rate: 1.0,
        ..SimKnobs::default()
    })
    .await;
    let outcome = async {
        reqwest::Client::new()
            .post(format!("{}{ANALYZE}", sim.base_url()))
            .header("x-api-key", "demo-key")
            .json(&json!({"video_url": VIDEO, "type": "head"}))
            .send()
            .await?
            .bytes()
            .await
    }
    .await;
    assert!(outcome.is_err(), "{outcome:?}");
    let stats = sim.stats();
    assert_eq!(stats.calls.analyze, 1);
    assert_eq!(stats.faults.reset, 1);
}

#[tokio::test]
async fn faulty_answers_look_like_the_real_ones() {
    let sim = start(SimKnobs {
        error_rate: 1.0,
        ..SimKnobs::default()
    })
    .await;
    let answer = Raw::new(&sim, Some("demo-key"))
        .post(ANALYZE, json!({"video_url": VIDEO, "type": "head"}))
        .await;
    assert_eq!(answer, json!({"code": 2001, "msg": "server error"}));

    let sim = start(SimKnobs {
        http_error_rate: 1.0,
        ..SimKnobs::default()
    })
    .await;
    let response = reqwest::Client::new()
        .get(format!("{}{TASK_DETAIL}?_id=x", sim.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert!(response.text().await.unwrap().contains("<html>"));
}

#[tokio::test]
async fn the_seed_makes_faults_reproducible() {
    async fn pattern(seed: u64) -> Vec<i64> {
        let sim = start(SimKnobs {
            error_rate: 0.5,
            seed,
            ..SimKnobs::default()
        })
        .await;
        let raw = Raw::new(&sim, Some("demo-key"));
        let mut codes = Vec::new();
        for _ in 0..24 {
            let answer = raw.get(ANALYSIS_DETAIL, "0123456789abcdef01234567").await;
            codes.push(answer["code"].as_i64().unwrap());
        }
        codes
    }
    let first = pattern(3).await;
    assert_eq!(first, pattern(3).await);
    assert!(first.contains(&2001) && first.contains(&1014), "{first:?}");
    assert_ne!(first, pattern(4).await);
}

#[tokio::test]
async fn rate_limit_is_per_key_and_counted() {
    let sim = start(SimKnobs {
        api_keys: vec!["a".into(), "b".into()],
        rate_limit: Some(0.001),
        ..SimKnobs::default()
    })
    .await;
    let a = Raw::new(&sim, Some("a"));
    let b = Raw::new(&sim, Some("b"));
    let id = "0123456789abcdef01234567";
    assert_eq!(a.get(TASK_DETAIL, id).await["code"], 1014);
    assert_eq!(a.get(ANALYSIS_DETAIL, id).await["code"], 1005);
    assert_eq!(
        a.get(TASK_DETAIL, id).await,
        json!({"code": 1005, "msg": "Frequent operation"})
    );
    assert_eq!(b.get(TASK_DETAIL, id).await["code"], 1014);
    let stats = sim.stats();
    assert_eq!(stats.throttled, 2);
    assert_eq!(stats.calls.task_detail, 3);
    assert_eq!(stats.calls.analysis_detail, 1);
}

#[tokio::test]
async fn stats_show_duplicate_creates_and_credits() {
    let sim = start(SimKnobs {
        credits: Some(3),
        ..quick()
    })
    .await;
    let client = client(&sim.base_url(), "demo-key");
    let video = format!("{VIDEO}?subjects=2");
    analysed(&client, &video).await;
    client
        .create_task(&create_request(&video, &[0, 1]))
        .await
        .unwrap();
    client
        .create_task(&create_request(&video, &[0, 1]))
        .await
        .unwrap();
    client
        .create_task(&create_request(&video, &[1]))
        .await
        .unwrap();
    let raw = Raw::new(&sim, Some("demo-key"));
    assert_eq!(
        raw.create(create_body(&video, vec![mapping(0)])).await,
        json!({"code": 1104, "msg": "Insufficient credits"})
    );

    let stats = sim.stats();
    let served: Stats = reqwest::get(format!("{}/_sim/stats", sim.base_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(served, stats);
    assert_eq!(stats.creates.len(), 2);
    assert_eq!(stats.creates[0].video_url, video);
    assert_eq!(
        stats.creates[0].mappings,
        "0=https://faces.example/0.jpg|1=https://faces.example/1.jpg"
    );
    assert_eq!(stats.creates[0].count, 2);
    assert_eq!(stats.creates[1].mappings, "1=https://faces.example/1.jpg");
    assert_eq!(stats.creates[1].count, 1);
    assert_eq!(stats.duplicate_creates, 1);
    assert_eq!(stats.billed_creates, 3);
    assert_eq!(stats.tasks, 3);
    assert_eq!(stats.analyses, 1);
    assert_eq!(stats.credits_left, Some(0));
    assert_eq!(stats.calls.create, 4);

    let topped: Value = reqwest::Client::new()
        .post(format!("{}/_sim/credits", sim.base_url()))
        .json(&json!({"add": 2}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(topped, json!({"credits_left": 2}));
    assert_eq!(
        raw.create(create_body(&video, vec![mapping(0)])).await["code"],
        1000
    );
    assert_eq!(sim.stats().credits_left, Some(1));
}

#[tokio::test]
async fn shutdown_releases_the_port() {
    let sim = start(SimKnobs::default()).await;
    let addr = sim.addr();
    let client = client(&sim.base_url(), "demo-key");
    client.analyze(VIDEO).await.unwrap();
    // The client keeps an idle connection open; shutdown must not wait for it forever.
    sim.shutdown().await;
    tokio::net::TcpListener::bind(addr)
        .await
        .expect("the port is free again");
}

#[tokio::test]
async fn analysis_time_and_jitter_shape_the_wait() {
    let sim = start(SimKnobs {
        analysis_time: Duration::from_millis(100),
        jitter: 0.5,
        ..SimKnobs::default()
    })
    .await;
    let client = client(&sim.base_url(), "demo-key");
    let submitted = client.analyze(VIDEO).await.unwrap();
    let analysis = finished_analysis(&client, &submitted.id).await;
    assert_eq!(analysis.status, RemoteStatus::Completed);
}

/// The real binary: the first stdout line names the address, the API answers, SIGTERM stops it.
#[test]
fn simulate_command_prints_its_address_and_serves() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_headswap-batch"))
        .args(["simulate", "--listen", "127.0.0.1:0", "--api-key", "k"])
        .args(["--analysis-time", "0s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first_line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first_line)
        .unwrap();
    let base_url = first_line
        .trim_end()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {first_line:?}"))
        .to_owned();
    assert!(base_url.starts_with("http://127.0.0.1:"), "{base_url}");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (code, stats) = runtime.block_on(async {
        let answer: Value = reqwest::Client::new()
            .post(format!("{base_url}{ANALYZE}"))
            .header("x-api-key", "k")
            .json(&json!({"video_url": VIDEO, "type": "head"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let stats: Stats = reqwest::get(format!("{base_url}/_sim/stats"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (answer["code"].clone(), stats)
    });
    assert_eq!(code, 1000);
    assert_eq!(stats.calls.analyze, 1);
    assert_eq!(stats.analyses, 1);

    // SAFETY: kill(2) on the id of a child we spawned and have not yet waited for.
    let sent = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(sent, 0);
    let status = wait_with_deadline(&mut child, Duration::from_secs(20));
    assert!(status.success(), "{status:?}");
}

fn wait_with_deadline(
    child: &mut std::process::Child,
    deadline: Duration,
) -> std::process::ExitStatus {
    let started = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            panic!("the simulator did not stop after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
