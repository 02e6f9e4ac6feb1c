//! Render tasks in the simulator: validating a create as the service does, creating (and
//! billing) the task, and reading it back with a signed output URL once rendered.

use axum::http::HeaderMap;
use rand::Rng;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::api::{
    json_object, millis, parse_http_url, public_base, running_output, steering_value,
};
use super::gate::{Refusal, invalid, not_found};
use super::state::{
    AnalysisRecord, Outcome, Progress, Shared, Stage, TaskRecord, UNKNOWN_STATUS, team_id, user_id,
};

/// A create request that passed validation.
pub(super) struct ValidCreate {
    video_url: String,
    mappings: Vec<(u32, String)>,
    model_name: String,
    resolution: String,
    video_seconds: f64,
}

/// Validate a create request as Akool does, in Akool's words where they are known.
pub(super) fn validate_create(
    sim: &Shared,
    team: &str,
    body: &[u8],
) -> Result<ValidCreate, Refusal> {
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
pub(super) fn completed_analysis(
    sim: &Shared,
    team: &str,
    video_url: &str,
) -> Result<(u32, f64), Refusal> {
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
pub(super) fn create_valid_task(
    sim: &Shared,
    team: &str,
    request: ValidCreate,
) -> Result<Value, Refusal> {
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
        progress: Progress::starting(processing_time, sim.knobs.progress),
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

pub(super) fn read_task(
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
    let unknown = state.rng.random::<f64>() < sim.knobs.unknown_status_rate;
    let now = Instant::now();
    if unknown {
        state.stats.faults.unknown_status += 1;
    } else if let Some(unnoticed) = record.progress.first_seen_finished(now) {
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
    let stage = if unknown {
        Stage::Queued
    } else {
        record.progress.stage(now)
    };
    let (status, progress, video_url) = match stage {
        Stage::Queued if unknown => (UNKNOWN_STATUS, 0.0, running_output(odd_read)),
        Stage::Queued => (1, 0.0, running_output(odd_read)),
        Stage::Processing(progress) => (
            2,
            (progress * 10.0).floor() / 10.0,
            running_output(odd_read),
        ),
        Stage::Finished => match &record.outcome {
            Outcome::Succeeds(()) => {
                let mut expires = now_ms + sim.knobs.url_ttl.as_millis() as u64;
                let rounding = sim.knobs.url_expiry_rounding.as_millis() as u64;
                if rounding > 0 {
                    // A signer working in whole units: the link may be born expired.
                    expires -= expires % rounding;
                }
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
