//! Analyses in the simulator: submitting one (its outcome steered by the video URL) and reading
//! it back as the detail endpoint shows it.

use axum::http::HeaderMap;
use rand::Rng;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::api::{json_object, millis, parse_http_url, public_base, steering_value};
use super::gate::{Refusal, invalid, not_found};
use super::state::{
    AnalysisRecord, Outcome, Progress, Shared, Stage, UNKNOWN_STATUS, team_id, user_id,
};

pub(super) fn submit_analysis(sim: &Shared, team: &str, body: &[u8]) -> Result<Value, Refusal> {
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
            progress: Progress::starting(processing_time, sim.knobs.progress),
            outcome,
        };
        let data = analysis_json(&record, Stage::Queued, "");
        state.analyses.insert(record.id.clone(), record);
        data
    };
    Ok(data)
}

pub(super) fn read_analysis(
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
    if state.rng.random::<f64>() < sim.knobs.unknown_status_rate {
        // A status the documentation does not list, whatever the analysis's real stage.
        state.stats.faults.unknown_status += 1;
        let mut data = analysis_json(record, Stage::Queued, &base);
        data["status"] = json!(UNKNOWN_STATUS);
        return Ok(data);
    }
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
pub(super) fn analysis_json(record: &AnalysisRecord, stage: Stage, base: &str) -> Value {
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
