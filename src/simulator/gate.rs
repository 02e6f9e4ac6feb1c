//! The gate every API call passes first — counting, latency, injected faults, authentication
//! and rate limiting, in that order — and the ways a request ends without a successful
//! answer.

use axum::body::Body;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use rand::Rng;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::files::dropped_connection;
use super::state::{Bucket, Shared};
use super::{CallCounts, ThrottleMode};

/// The endpoints the gate guards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Endpoint {
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
pub(super) struct Admitted {
    /// The API key (team) the request acts for.
    pub(super) team: String,
    /// Process the request, then drop the connection instead of answering (the half of
    /// `--reset-rate` on creates that happens after the task exists and is billed).
    pub(super) drop_after_processing: bool,
    /// Of those, a reset (as opposed to `--create-lost-rate`), for the counters.
    pub(super) reset: bool,
}

/// Faults injected before any processing.
enum Fault {
    None,
    Reset {
        after_processing: bool,
    },
    HttpError,
    ServerError,
    /// A create made and billed whose answer is never sent.
    CreateLost,
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
            Fault::HttpError => "http error page",
            Fault::ServerError => "code 2001",
            Fault::CreateLost => "create answer lost",
        }
    }
}

/// The answer, or a dropped connection for a request that was processed and then lost.
pub(super) fn finish(admitted: Admitted, answer: Result<Response, Refusal>) -> Response {
    if admitted.drop_after_processing {
        return Refusal::Dropped.into_response();
    }
    answer.unwrap_or_else(IntoResponse::into_response)
}

/// The whole gate of an authenticated endpoint.
pub(super) async fn admit(
    sim: &Shared,
    endpoint: Endpoint,
    headers: &HeaderMap,
) -> Result<Admitted, Refusal> {
    let dropped = before_processing(sim, endpoint).await?;
    let drop_after_processing = dropped.is_some();
    let checked = authenticate(sim, headers).and_then(|team| throttle(sim, &team).map(|()| team));
    match checked {
        Ok(team) => Ok(Admitted {
            team,
            drop_after_processing,
            reset: dropped == Some(Dropped::Reset),
        }),
        // The connection was going to be dropped whatever the answer.
        Err(_) if drop_after_processing => Err(Refusal::Dropped),
        Err(refusal) => Err(refusal),
    }
}

/// How a request that is processed ends without its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dropped {
    Reset,
    Lost,
}

/// Count the call, wait `--latency`, answer it from an outage or throttling window if one is
/// under way, and decide this request's injected fault. `Ok(Some(_))` means "process it,
/// then drop the connection".
pub(super) async fn before_processing(
    sim: &Shared,
    endpoint: Endpoint,
) -> Result<Option<Dropped>, Refusal> {
    *endpoint.counter(&mut sim.lock().stats.calls) += 1;
    if !sim.knobs.latency.is_zero() {
        tokio::time::sleep(sim.knobs.latency).await;
    }
    let elapsed = sim.started.elapsed();
    if sim
        .knobs
        .outages
        .iter()
        .any(|window| window.covers(elapsed))
    {
        sim.lock().stats.faults.outage += 1;
        return Err(Refusal::ErrorPage(503));
    }
    if sim
        .knobs
        .throttle_windows
        .iter()
        .any(|window| window.covers(elapsed))
    {
        sim.lock().stats.throttled += 1;
        return Err(throttled(sim));
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
        } else if endpoint == Endpoint::Create
            && draw
                < knobs.reset_rate
                    + knobs.http_error_rate
                    + knobs.error_rate
                    + knobs.create_lost_rate
        {
            Fault::CreateLost
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
            Fault::CreateLost => faults.create_lost += 1,
            Fault::None => {}
        }
        fault
    };
    match fault {
        Fault::None => Ok(None),
        Fault::Reset {
            after_processing: true,
        } => Ok(Some(Dropped::Reset)),
        Fault::CreateLost => Ok(Some(Dropped::Lost)),
        Fault::Reset {
            after_processing: false,
        } => Err(Refusal::Dropped),
        Fault::HttpError => Err(Refusal::ErrorPage(sim.knobs.http_error_status)),
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
pub(super) fn throttle(sim: &Shared, key: &str) -> Result<(), Refusal> {
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
    Err(throttled(sim))
}

/// A throttled request's answer, as `--throttle` says.
fn throttled(sim: &Shared) -> Refusal {
    match sim.knobs.throttle {
        ThrottleMode::Code => Refusal::code(1005, "Frequent operation"),
        ThrottleMode::Http => Refusal::TooManyRequests,
    }
}

/// An Akool envelope with HTTP 200. `data` is left out when `None`, as Akool does on errors.
pub(super) fn envelope(code: i64, msg: &str, data: Option<Value>) -> Response {
    let mut body = json!({"code": code, "msg": msg});
    if let Some(data) = data {
        body["data"] = data;
    }
    Json200(body).into_response()
}

pub(super) fn invalid(message: &str) -> Refusal {
    Refusal::code(1003, message)
}

pub(super) fn not_found() -> Refusal {
    Refusal::code(1014, "Resource not found")
}

/// Every way a request ends without a successful answer.
pub(super) enum Refusal {
    /// An envelope with a business code other than 1000, HTTP 200.
    Code { code: i64, message: String },
    /// The connection is dropped without an answer.
    Dropped,
    /// An HTML error page with this 5xx status, as a load balancer in front of the API sends.
    ErrorPage(u16),
    /// HTTP 429 with `Retry-After: 1`.
    TooManyRequests,
}

impl Refusal {
    pub(super) fn code(code: i64, message: &str) -> Refusal {
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
            Refusal::ErrorPage(status) => {
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
                let title = format!(
                    "{} {}",
                    status.as_u16(),
                    status.canonical_reason().unwrap_or("Error")
                );
                let page = format!(
                    "<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n\
                     <center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n\
                     </body>\r\n</html>\r\n"
                );
                (status, [(CONTENT_TYPE, "text/html")], page).into_response()
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
pub(super) struct Json200(pub(super) Value);

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
