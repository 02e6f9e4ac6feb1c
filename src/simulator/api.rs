//! The five API endpoints of the simulator (getToken, analyze, analysis detail, task create,
//! task detail) and the gate every call passes first: counting, latency, injected faults,
//! authentication and rate limiting, in that order.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, HOST, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use rand::Rng;
use reqwest::Url;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use super::files::dropped_connection;
use super::state::{
    AnalysisRecord, Bucket, Outcome, Progress, Shared, Stage, TaskRecord, team_id, user_id,
};
use super::{CallCounts, ThrottleMode};

type Sim = State<Arc<Shared>>;

/// The `_id` query parameter of the detail endpoints.
#[derive(Deserialize)]
pub(super) struct IdQuery {
    #[serde(rename = "_id")]
    id: Option<String>,
}

/// The endpoints the gate guards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Token,
    Analyze,
    AnalysisDetail,
    Create,
    TaskDetail,
}

impl Endpoint {
    fn counter(self, calls: &mut CallCounts) -> &mut u64 {
        match self {
            Endpoint::Token => &mut calls.token,
            Endpoint::Analyze => &mut calls.analyze,
            Endpoint::AnalysisDetail => &mut calls.analysis_detail,
            Endpoint::Create => &mut calls.create,
            Endpoint::TaskDetail => &mut calls.task_detail,
        }
    }
}

/// A request the gate let through.
struct Admitted {
    /// The API key (team) the request acts for.
    team: String,
    /// Process the request, then drop the connection instead of answering (the half of
    /// `--reset-rate` on creates that happens after the task exists and is billed).
    drop_after_processing: bool,
}

/// Faults injected before any processing.
enum Fault {
    None,
    Reset { after_processing: bool },
    HttpError,
    ServerError,
}

impl Fault {
    fn name(&self) -> &'static str {
        match self {
            Fault::None => "none",
            Fault::Reset {
                after_processing: false,
            } => "reset",
            Fault::Reset {
                after_processing: true,
            } => "reset after processing",
            Fault::HttpError => "http 502",
            Fault::ServerError => "code 2001",
        }
    }
}

pub(super) async fn get_token(State(sim): Sim, body: Bytes) -> Response {
    // Only creates are dropped after processing, so a token request is never.
    if let Err(refusal) = before_processing(&sim, Endpoint::Token).await {
        return refusal.into_response();
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let client_id = body.get("clientId").and_then(Value::as_str);
    let client_secret = body.get("clientSecret").and_then(Value::as_str);
    let (Some(client_id), Some(client_secret)) = (client_id, client_secret) else {
        return Refusal::code(1102, "clientId and clientSecret are required").into_response();
    };
    let known_client = sim.knobs.client_ids.iter().any(|id| id == client_id);
    let known_secret = sim.knobs.api_keys.iter().any(|key| key == client_secret);
    if !known_client || !known_secret {
        return Refusal::code(1101, "Invalid clientId or clientSecret").into_response();
    }
    if let Err(refusal) = throttle(&sim, client_secret) {
        return refusal.into_response();
    }
    let token = sim.token_for(client_id, client_secret);
    sim.lock()
        .tokens
        .insert(token.clone(), client_secret.to_owned());
    Json200(json!({"code": 1000, "msg": "OK", "token": token})).into_response()
}

pub(super) async fn analyze(State(sim): Sim, headers: HeaderMap, body: Bytes) -> Response {
    let admitted = match admit(&sim, Endpoint::Analyze, &headers).await {
        Ok(admitted) => admitted,
        Err(refusal) => return refusal.into_response(),
    };
    let answer = submit_analysis(&sim, &admitted.team, &body)
        .map(|data| envelope(1000, "Analyze success", Some(data)));
    finish(admitted, answer)
}

pub(super) async fn analysis_detail(
    State(sim): Sim,
    headers: HeaderMap,
    Query(query): Query<IdQuery>,
) -> Response {
    let admitted = match admit(&sim, Endpoint::AnalysisDetail, &headers).await {
        Ok(admitted) => admitted,
        Err(refusal) => return refusal.into_response(),
    };
    let answer = read_analysis(&sim, &admitted.team, query.id.as_deref(), &headers)
        .map(|data| envelope(1000, "OK", Some(data)));
    finish(admitted, answer)
}

pub(super) async fn create_task(State(sim): Sim, headers: HeaderMap, body: Bytes) -> Response {
    let admitted = match admit(&sim, Endpoint::Create, &headers).await {
        Ok(admitted) => admitted,
        Err(refusal) => return refusal.into_response(),
    };
    let answer = validate_create(&sim, &admitted.team, &body)
        .and_then(|request| create_valid_task(&sim, &admitted.team, request));
    if admitted.drop_after_processing && answer.is_ok() {
        sim.lock().stats.faults.reset_after_create += 1;
    }
    finish(
        admitted,
        answer.map(|data| envelope(1000, "OK", Some(data))),
    )
}

pub(super) async fn task_detail(
    State(sim): Sim,
    headers: HeaderMap,
    Query(query): Query<IdQuery>,
) -> Response {
    let admitted = match admit(&sim, Endpoint::TaskDetail, &headers).await {
        Ok(admitted) => admitted,
        Err(refusal) => return refusal.into_response(),
    };
    let answer = read_task(&sim, &admitted.team, query.id.as_deref(), &headers)
        .map(|data| envelope(1000, "OK", Some(data)));
    finish(admitted, answer)
}

/// The answer, or a dropped connection for a request that was processed and then lost.
fn finish(admitted: Admitted, answer: Result<Response, Refusal>) -> Response {
    if admitted.drop_after_processing {
        return Refusal::Dropped.into_response();
    }
    answer.unwrap_or_else(IntoResponse::into_response)
}

/// The whole gate of an authenticated endpoint.
async fn admit(sim: &Shared, endpoint: Endpoint, headers: &HeaderMap) -> Result<Admitted, Refusal> {
    let drop_after_processing = before_processing(sim, endpoint).await?;
    let checked = authenticate(sim, headers).and_then(|team| throttle(sim, &team).map(|()| team));
    match checked {
        Ok(team) => Ok(Admitted {
            team,
            drop_after_processing,
        }),
        // The connection was going to be dropped whatever the answer.
        Err(_) if drop_after_processing => Err(Refusal::Dropped),
        Err(refusal) => Err(refusal),
    }
}

/// Count the call, wait `--latency`, and decide this request's injected fault. `Ok(true)`
/// means "process it, then drop the connection".
async fn before_processing(sim: &Shared, endpoint: Endpoint) -> Result<bool, Refusal> {
    *endpoint.counter(&mut sim.lock().stats.calls) += 1;
    if !sim.knobs.latency.is_zero() {
        tokio::time::sleep(sim.knobs.latency).await;
    }
    let fault = {
        let mut state = sim.lock();
        let knobs = &sim.knobs;
        // One draw per request against the cumulative fractions keeps each knob's rate exact
        // (as long as they sum to at most 1) and the sequence reproducible for a seed.
        let draw: f64 = state.rng.random();
        let fault = if draw < knobs.reset_rate {
            // Half of the dropped creates lose the answer after the task was made and billed:
            // the window a client cannot tell apart from a create that never arrived.
            let after_processing = endpoint == Endpoint::Create && state.rng.random_bool(0.5);
            Fault::Reset { after_processing }
        } else if draw < knobs.reset_rate + knobs.http_error_rate {
            Fault::HttpError
        } else if draw < knobs.reset_rate + knobs.http_error_rate + knobs.error_rate {
            Fault::ServerError
        } else {
            Fault::None
        };
        if !matches!(fault, Fault::None) {
            tracing::debug!(?endpoint, fault = fault.name(), "simulator injects a fault");
        }
        let faults = &mut state.stats.faults;
        match fault {
            Fault::Reset { .. } => faults.reset += 1,
            Fault::HttpError => faults.http_error += 1,
            Fault::ServerError => faults.error += 1,
            Fault::None => {}
        }
        fault
    };
    match fault {
        Fault::None => Ok(false),
        Fault::Reset {
            after_processing: true,
        } => Ok(true),
        Fault::Reset {
            after_processing: false,
        } => Err(Refusal::Dropped),
        Fault::HttpError => Err(Refusal::BadGateway),
        Fault::ServerError => Err(Refusal::code(2001, "server error")),
    }
}

/// The API key a request acts for. `Authorization: Bearer` wins over `x-api-key`.
fn authenticate(sim: &Shared, headers: &HeaderMap) -> Result<String, Refusal> {
    if let Some(authorization) = headers.get(AUTHORIZATION) {
        let token = authorization
            .to_str()
            .ok()
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim);
        let key = token.and_then(|token| sim.lock().tokens.get(token).cloned());
        return key.ok_or_else(|| Refusal::code(1101, "Invalid authorization or token expired"));
    }
    let Some(key) = headers.get("x-api-key") else {
        return Err(Refusal::code(1102, "authorization missing"));
    };
    let key = key.to_str().unwrap_or_default();
    if key.is_empty() {
        return Err(Refusal::code(1102, "authorization missing"));
    }
    if sim.knobs.api_keys.iter().any(|known| known == key) {
        Ok(key.to_owned())
    } else {
        Err(Refusal::code(
            1101,
            "Invalid authorization or token expired",
        ))
    }
}

/// `--rate-limit`: requests per second per API key, over all API endpoints together.
fn throttle(sim: &Shared, key: &str) -> Result<(), Refusal> {
    let Some(rate) = sim.knobs.rate_limit else {
        return Ok(());
    };
    let now = Instant::now();
    {
        let mut state = sim.lock();
        let bucket = state
            .buckets
            .entry(key.to_owned())
            .or_insert_with(|| Bucket::new(rate, now));
        if bucket.admit(rate, now) {
            return Ok(());
        }
        state.stats.throttled += 1;
    }
    Err(match sim.knobs.throttle {
        ThrottleMode::Code => Refusal::code(1005, "Frequent operation"),
        ThrottleMode::Http => Refusal::TooManyRequests,
    })
}

fn submit_analysis(sim: &Shared, team: &str, body: &[u8]) -> Result<Value, Refusal> {
    let Some(body) = json_object(body) else {
        return Err(invalid("Invalid request body: expected a JSON object"));
    };
    let video_url = match body.get("video_url") {
        Some(Value::String(url)) if !url.is_empty() => url.clone(),
        _ => return Err(invalid("video_url is required")),
    };
    let Some(steering) = parse_http_url(&video_url) else {
        return Err(invalid("video_url must be a public http(s) URL"));
    };
    if body.get("type").and_then(Value::as_str) != Some("head") {
        return Err(invalid("type is invalid: it must be head"));
    }
    let subjects = steering_value(&steering, "subjects")
        .and_then(|value| value.parse::<u32>().ok())
        .unwrap_or(1)
        .min(20);
    let video_seconds = steering_value(&steering, "duration")
        .and_then(|value| value.parse::<f64>().ok())
        .filter(|seconds| seconds.is_finite())
        .unwrap_or(10.0);
    let outcome = if steering_value(&steering, "fail").as_deref() == Some("analysis") {
        Outcome::Fails {
            code: 3003,
            reason: "no person could be analysed in the video".to_owned(),
        }
    } else if !(3.0..=20.0).contains(&video_seconds) {
        Outcome::Fails {
            code: 3002,
            reason: format!(
                "video duration {video_seconds}s is outside the supported range of 3 to 20 seconds"
            ),
        }
    } else {
        Outcome::Succeeds(subjects)
    };
    let now_ms = sim.now_unix_ms();
    let data = {
        let mut state = sim.lock();
        let processing_time = sim.jittered(&mut state, sim.knobs.analysis_time);
        state.stats.timing.analysis_processing_ms += millis(processing_time);
        let record = AnalysisRecord {
            id: state.new_id(now_ms),
            task_id: state.new_id(now_ms),
            team: team.to_owned(),
            video_url,
            create_time_ms: now_ms,
            video_seconds,
            progress: Progress::starting(processing_time),
            outcome,
        };
        let data = analysis_json(&record, Stage::Queued, "");
        state.analyses.insert(record.id.clone(), record);
        data
    };
    Ok(data)
}

fn read_analysis(
    sim: &Shared,
    team: &str,
    id: Option<&str>,
    headers: &HeaderMap,
) -> Result<Value, Refusal> {
    let Some(id) = id.filter(|id| !id.is_empty()) else {
        return Err(invalid("_id is required"));
    };
    let base = public_base(sim, headers);
    let mut state = sim.lock();
    let state = &mut *state;
    let Some(record) = state
        .analyses
        .get_mut(id)
        .filter(|record| record.team == team)
    else {
        return Err(not_found());
    };
    let now = Instant::now();
    let stage = record.progress.stage(now);
    if let Some(unnoticed) = record.progress.first_seen_finished(now) {
        let timing = &mut state.stats.timing;
        timing.analyses_noticed += 1;
        timing.analysis_unnoticed_ms += millis(unnoticed);
    }
    Ok(analysis_json(record, stage, &base))
}

/// An analysis record as Akool shows it at `stage`.
fn analysis_json(record: &AnalysisRecord, stage: Stage, base: &str) -> Value {
    let mut data = json!({
        "_id": record.id,
        "create_time": record.create_time_ms,
        "uid": user_id(&record.team),
        "team_id": team_id(&record.team),
        "video_url": record.video_url,
        "type": "head",
        "task_id": record.task_id,
    });
    let (status, progress) = match stage {
        Stage::Queued => (1, 0.0),
        Stage::Processing(progress) => (2, progress.floor()),
        Stage::Finished => match record.outcome {
            Outcome::Succeeds(_) => (3, 100.0),
            Outcome::Fails { .. } => (4, 100.0),
        },
    };
    data["status"] = json!(status);
    data["progress"] = json!(progress as u64);
    match (&record.outcome, stage) {
        (Outcome::Succeeds(subjects), Stage::Finished) => {
            let media: Vec<Value> = (0..*subjects)
                .map(|obj_id| {
                    json!({
                        "obj_id": obj_id,
                        "img_url": format!("{base}/_sim/previews/{}/{obj_id}.svg", record.id),
                        "media_type": "images",
                    })
                })
                .collect();
            data["analysis_result"] = json!({
                "detected_objects": subjects,
                "media": media,
                "video_info": {
                    "width": 1280,
                    "height": 720,
                    "fps": 25,
                    "frame_count": (record.video_seconds * 25.0).round() as u64,
                },
            });
            data["error_reason"] = json!("success");
            data["error_code"] = json!(0);
        }
        (Outcome::Fails { code, reason }, Stage::Finished) => {
            data["analysis_result"] = Value::Null;
            data["error_reason"] = json!(reason);
            data["error_code"] = json!(code);
        }
        _ => data["analysis_result"] = Value::Null,
    }
    data
}

/// A create request that passed validation.
struct ValidCreate {
    video_url: String,
    mappings: Vec<(u32, String)>,
    model_name: String,
    resolution: String,
    video_seconds: f64,
}

/// Validate a create request as Akool does, in Akool's words where they are known.
fn validate_create(sim: &Shared, team: &str, body: &[u8]) -> Result<ValidCreate, Refusal> {
    let Some(body) = json_object(body) else {
        return Err(invalid("Invalid request body: expected a JSON object"));
    };
    let video_url = match body.get("video_url") {
        Some(Value::String(url)) if !url.is_empty() => url.clone(),
        _ => return Err(invalid("video_url is required")),
    };
    if parse_http_url(&video_url).is_none() {
        return Err(invalid("video_url must be a public http(s) URL"));
    }
    let mappings = match body.get("mappings") {
        Some(Value::Array(items)) if !items.is_empty() => items,
        _ => return Err(invalid("mappings is required: at least one mapping")),
    };
    if mappings.len() > 5 {
        return Err(invalid("Up to 5 characters can be replaced at one time."));
    }
    let model_name = match body.get("model_name") {
        Some(Value::String(name)) if !name.is_empty() => name.clone(),
        _ => return Err(invalid("model_name is required")),
    };
    if model_name != "akool-premium" {
        return Err(invalid(
            "Your current account does not support this feature.",
        ));
    }
    let resolution = match body.get("resolution").and_then(Value::as_str) {
        Some(resolution @ ("480p" | "720p")) => resolution.to_owned(),
        _ => return Err(invalid("resolution must be 480p or 720p")),
    };
    if !matches!(
        body.get("keep_original_sound"),
        None | Some(Value::Null | Value::Bool(_))
    ) {
        return Err(invalid("keep_original_sound must be a boolean"));
    }
    if !matches!(
        body.get("template_id"),
        None | Some(Value::Null | Value::String(_))
    ) {
        return Err(invalid("template_id must be a string"));
    }
    let (subjects, video_seconds) = completed_analysis(sim, team, &video_url)?;
    let mut checked: Vec<(u32, String)> = Vec::with_capacity(mappings.len());
    for (index, mapping) in mappings.iter().enumerate() {
        let obj_id = mapping
            .get("obj_id")
            .and_then(Value::as_u64)
            .and_then(|obj_id| u32::try_from(obj_id).ok());
        let Some(obj_id) = obj_id else {
            return Err(invalid(&format!(
                "mappings[{index}].obj_id is required: a number"
            )));
        };
        if obj_id >= subjects {
            return Err(invalid(&format!(
                "obj_id {obj_id} was not detected in this video"
            )));
        }
        if checked.iter().any(|(seen, _)| *seen == obj_id) {
            return Err(invalid(&format!(
                "obj_id {obj_id} is mapped more than once"
            )));
        }
        let img_url = mapping.get("img_url").and_then(Value::as_str);
        let Some(img_url) = img_url.filter(|url| parse_http_url(url).is_some()) else {
            return Err(invalid(&format!(
                "mappings[{index}].img_url must be an http(s) image URL"
            )));
        };
        checked.push((obj_id, img_url.to_owned()));
    }
    Ok(ValidCreate {
        video_url,
        mappings: checked,
        model_name,
        resolution,
        video_seconds,
    })
}

/// The subject count and video length of the newest completed analysis of exactly this URL
/// by this team.
fn completed_analysis(sim: &Shared, team: &str, video_url: &str) -> Result<(u32, f64), Refusal> {
    let now = Instant::now();
    let state = sim.lock();
    let mut analyses: Vec<&AnalysisRecord> = state
        .analyses
        .values()
        .filter(|record| record.team == team && record.video_url == video_url)
        .collect();
    analyses.sort_by_key(|record| std::cmp::Reverse(record.progress.created));
    let finished = analyses
        .iter()
        .find(|record| record.progress.stage(now) == Stage::Finished);
    match finished.map(|record| (&record.outcome, record.video_seconds)) {
        Some((Outcome::Succeeds(subjects), seconds)) => Ok((*subjects, seconds)),
        Some((Outcome::Fails { .. }, _)) => Err(invalid(
            "The analysis of this video_url failed; it cannot be used to create a task",
        )),
        None if analyses.is_empty() => Err(invalid(
            "video_url has not been analysed: submit it to person analysis first, with the identical URL",
        )),
        None => Err(invalid(
            "The analysis of this video_url is not complete yet",
        )),
    }
}

/// Spend a credit and make the task.
fn create_valid_task(sim: &Shared, team: &str, request: ValidCreate) -> Result<Value, Refusal> {
    let now_ms = sim.now_unix_ms();
    let fails = parse_http_url(&request.video_url)
        .and_then(|url| steering_value(&url, "fail"))
        .as_deref()
        == Some("render");
    let mut state = sim.lock();
    if state.credits == Some(0) {
        return Err(Refusal::code(1104, "Insufficient credits"));
    }
    if let Some(credits) = &mut state.credits {
        *credits -= 1;
    }
    let mappings_key = request
        .mappings
        .iter()
        .map(|(obj_id, img_url)| format!("{obj_id}={img_url}"))
        .collect::<Vec<_>>()
        .join("|");
    state.record_create(&request.video_url, mappings_key);
    let processing_time = sim.jittered(&mut state, sim.knobs.render_time);
    state.stats.timing.render_processing_ms += millis(processing_time);
    let record = TaskRecord {
        id: state.new_id(now_ms),
        task_id: state.new_id(now_ms),
        team: team.to_owned(),
        source_video_url: request.video_url,
        create_time_ms: now_ms,
        video_seconds: request.video_seconds,
        resolution: request.resolution,
        model_name: request.model_name,
        file_name: format!("Headswap_{now_ms}.mp4"),
        progress: Progress::starting(processing_time),
        outcome: if fails {
            Outcome::Fails {
                code: 3001,
                reason: "face not detected in reference image".to_owned(),
            }
        } else {
            Outcome::Succeeds(())
        },
        reads: 0,
    };
    let data = json!({
        "_id": record.id,
        "create_time": record.create_time_ms,
        "uid": user_id(team),
        "team_id": team_id(team),
        "video_duration": record.video_seconds,
        "task_id": record.task_id,
        "resolution": record.resolution,
        "status": 1,
        "deduction_lock_duration": record.video_seconds.ceil() as u64 * 10,
        "model_name": record.model_name,
        "file_name": record.file_name,
        "video_url": null,
    });
    state.tasks.insert(record.id.clone(), record);
    Ok(data)
}

fn read_task(
    sim: &Shared,
    team: &str,
    id: Option<&str>,
    headers: &HeaderMap,
) -> Result<Value, Refusal> {
    let Some(id) = id.filter(|id| !id.is_empty()) else {
        return Err(invalid("_id is required"));
    };
    let base = public_base(sim, headers);
    let now_ms = sim.now_unix_ms();
    let mut state = sim.lock();
    let state = &mut *state;
    let Some(record) = state.tasks.get_mut(id).filter(|record| record.team == team) else {
        return Err(not_found());
    };
    record.reads += 1;
    let now = Instant::now();
    if let Some(unnoticed) = record.progress.first_seen_finished(now) {
        let timing = &mut state.stats.timing;
        timing.renders_noticed += 1;
        timing.render_unnoticed_ms += millis(unnoticed);
    }
    let mut data = json!({
        "_id": record.id,
        "uid": user_id(team),
        "team_id": team_id(team),
        "source_video_url": record.source_video_url,
        "create_time": record.create_time_ms,
        "video_duration": record.video_seconds,
        "resolution": record.resolution,
        "deduction_duration": record.video_seconds.ceil() as u64 * 10,
        "priority": 9,
        "task_id": record.task_id,
        "file_name": record.file_name,
        "model_name": record.model_name,
    });
    // While running, the output is sometimes "" and sometimes null, and the error fields
    // sometimes null and sometimes absent, as the documentation allows both.
    let odd_read = record.reads % 2 == 1;
    let (status, progress, video_url) = match record.progress.stage(now) {
        Stage::Queued => (1, 0.0, running_output(odd_read)),
        Stage::Processing(progress) => (
            2,
            (progress * 10.0).floor() / 10.0,
            running_output(odd_read),
        ),
        Stage::Finished => match &record.outcome {
            Outcome::Succeeds(()) => {
                let expires = now_ms + sim.knobs.url_ttl.as_millis() as u64;
                let signature = sim.sign(&record.id, expires);
                let url = format!(
                    "{base}/_sim/files/{}.mp4?expires={expires}&sig={signature}",
                    record.id
                );
                (3, 100.0, json!(url))
            }
            Outcome::Fails { code, reason } => {
                data["error_code"] = json!(code);
                data["error_reason"] = json!(reason);
                (4, 100.0, json!(""))
            }
        },
    };
    if status < 3 && odd_read {
        data["error_code"] = Value::Null;
        data["error_reason"] = Value::Null;
    }
    data["status"] = json!(status);
    data["progress"] = json!(progress);
    data["video_url"] = video_url;
    Ok(data)
}

fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn running_output(odd_read: bool) -> Value {
    if odd_read { json!("") } else { Value::Null }
}

/// The root clients reached us under (the Host header), for URLs we hand out.
fn public_base(sim: &Shared, headers: &HeaderMap) -> String {
    let host = headers
        .get(HOST)
        .and_then(|host| host.to_str().ok())
        .filter(|host| {
            !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c))
        });
    match host {
        Some(host) => format!("http://{host}"),
        None => super::base_url_of(sim.addr),
    }
}

fn json_object(body: &[u8]) -> Option<Map<String, Value>> {
    match serde_json::from_slice(body) {
        Ok(Value::Object(map)) => Some(map),
        _ => None,
    }
}

fn parse_http_url(text: &str) -> Option<Url> {
    let url = Url::parse(text).ok()?;
    (matches!(url.scheme(), "http" | "https") && url.host_str().is_some()).then_some(url)
}

/// A query parameter of the source video URL that steers the simulated outcome.
fn steering_value(url: &Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

/// An Akool envelope with HTTP 200. `data` is left out when `None`, as Akool does on errors.
pub(super) fn envelope(code: i64, msg: &str, data: Option<Value>) -> Response {
    let mut body = json!({"code": code, "msg": msg});
    if let Some(data) = data {
        body["data"] = data;
    }
    Json200(body).into_response()
}

fn invalid(message: &str) -> Refusal {
    Refusal::code(1003, message)
}

fn not_found() -> Refusal {
    Refusal::code(1014, "Resource not found")
}

/// Every way a request ends without a successful answer.
enum Refusal {
    /// An envelope with a business code other than 1000, HTTP 200.
    Code { code: i64, message: String },
    /// The connection is dropped without an answer.
    Dropped,
    /// An HTML 502 page, as a load balancer in front of the API would send.
    BadGateway,
    /// HTTP 429 with `Retry-After: 1`.
    TooManyRequests,
}

impl Refusal {
    fn code(code: i64, message: &str) -> Refusal {
        Refusal::Code {
            code,
            message: message.to_owned(),
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Code { code, message } => envelope(code, &message, None),
            Refusal::Dropped => dropped_connection(),
            Refusal::BadGateway => {
                let page = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n\
                            <center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n\
                            </body>\r\n</html>\r\n";
                (StatusCode::BAD_GATEWAY, [(CONTENT_TYPE, "text/html")], page).into_response()
            }
            Refusal::TooManyRequests => (
                StatusCode::TOO_MANY_REQUESTS,
                [(RETRY_AFTER, "1")],
                "Too Many Requests",
            )
                .into_response(),
        }
    }
}

/// A JSON body with HTTP 200 and the content type Akool uses.
struct Json200(Value);

impl IntoResponse for Json200 {
    fn into_response(self) -> Response {
        let mut response = Response::new(Body::from(self.0.to_string()));
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        response
    }
}
