//! The five API endpoints of the simulator (getToken, analyze, analysis detail, task create,
//! task detail): each passes the gate (`gate`), then does its work (`analyses`, `tasks`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::http::header::HOST;
use axum::response::{IntoResponse, Response};
use reqwest::Url;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::analyses::{read_analysis, submit_analysis};
use super::gate::{
    Endpoint, Json200, Refusal, admit, before_processing, envelope, finish, throttle,
};
use super::state::Shared;
use super::tasks::{create_valid_task, read_task, validate_create};

type Sim = State<Arc<Shared>>;

/// The `_id` query parameter of the detail endpoints.
#[derive(Deserialize)]
pub(super) struct IdQuery {
    #[serde(rename = "_id")]
    id: Option<String>,
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
    if admitted.reset && answer.is_ok() {
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

pub(super) fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

pub(super) fn running_output(odd_read: bool) -> Value {
    if odd_read { json!("") } else { Value::Null }
}

/// The root clients reached us under (the Host header), for URLs we hand out.
pub(super) fn public_base(sim: &Shared, headers: &HeaderMap) -> String {
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

pub(super) fn json_object(body: &[u8]) -> Option<Map<String, Value>> {
    match serde_json::from_slice(body) {
        Ok(Value::Object(map)) => Some(map),
        _ => None,
    }
}

pub(super) fn parse_http_url(text: &str) -> Option<Url> {
    let url = Url::parse(text).ok()?;
    (matches!(url.scheme(), "http" | "https") && url.host_str().is_some()).then_some(url)
}

/// A query parameter of the source video URL that steers the simulated outcome.
pub(super) fn steering_value(url: &Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}
