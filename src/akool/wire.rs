//! Wire format of Akool responses: the envelope, the tolerant record decoders, and the one
//! function that classifies every outcome of an exchange into success or [`ApiError`].
//!
//! Akool documents fields loosely ("Number", "String | null") and promises forward-compatible
//! additions, so every decoder here accepts absent, null and unexpected-but-convertible values
//! (an integer sent as a float or a string, say) and ignores unknown keys. The only things that
//! are required are the ones a caller cannot work without: the envelope's `code`, and a
//! record's `_id`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::Value;

use super::{Analysis, ApiError, RemoteStatus, Subject, Task};

/// The business code of success.
pub(crate) const CODE_OK: i64 = 1000;

/// The most of a non-envelope body quoted in an error message.
const EXCERPT_CHARS: usize = 200;

/// What came back for one request, before classification.
pub(crate) enum Exchange {
    /// The server sent a status line and headers.
    Answered {
        status: u16,
        retry_after: Option<Duration>,
        /// The whole body, or why it could not be read to the end.
        body: Result<Vec<u8>, reqwest::Error>,
    },
    /// The request could not be sent, or no answer came back.
    Failed(reqwest::Error),
}

/// A well-formed envelope whose code is 1000.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Success {
    pub msg: String,
    /// `data`, or `Value::Null` when absent.
    pub data: Value,
    /// The top-level `token` of a getToken answer.
    pub token: Option<String>,
}

/// Classify one exchange: `Ok` only for a well-formed envelope with code 1000. This is the only
/// place that maps HTTP statuses, transport failures and business codes to [`ApiError`].
pub(crate) fn classify(exchange: Exchange) -> Result<Success, ApiError> {
    let (status, retry_after, body) = match exchange {
        Exchange::Failed(error) => return Err(transport_error(error)),
        Exchange::Answered {
            status,
            retry_after,
            body,
        } => (status, retry_after, body),
    };
    // A 429 is throttling whatever its body says (proxies answer it with HTML or nothing).
    if status == 429 {
        return Err(ApiError::Throttled { retry_after });
    }
    let body = body.map_err(transport_error)?;
    let Some(envelope) = parse_envelope(&body) else {
        // The request reached something, and what came back is not an answer from the API.
        // Whether it may have been processed depends on who answered: a 503 says the service
        // refused it (overloaded, down for maintenance) before doing anything; a gateway's
        // 502/504, a 500 or any other page may come after the API acted on it.
        let what = if (500..600).contains(&status) {
            "server error page"
        } else {
            "response is not an Akool envelope"
        };
        return Err(ApiError::Transient {
            detail: format!("HTTP {status}: {what}: {}", excerpt(&body)),
            outcome_unknown: status != 503,
        });
    };
    let message = envelope.msg.clone().unwrap_or_default();
    match envelope.code {
        CODE_OK => Ok(Success {
            msg: message,
            data: envelope.data.unwrap_or(Value::Null),
            token: envelope.token,
        }),
        1005 => Err(ApiError::Throttled { retry_after }),
        // A well-formed 2001 is the API saying it did not do the work.
        2001 => Err(ApiError::Transient {
            detail: format!("HTTP {status}: code 2001: {message}"),
            outcome_unknown: false,
        }),
        1014 => Err(ApiError::NotFound { message }),
        1104 => Err(ApiError::OutOfCredits { message }),
        code @ (1101 | 1102 | 1200) => Err(ApiError::Unauthorized { code, message }),
        code => Err(ApiError::Rejected { code, message }),
    }
}

/// A transport failure. The request is known not to have been processed only when no
/// connection could be established; any failure after that may have come after the server
/// acted on it.
fn transport_error(error: reqwest::Error) -> ApiError {
    let error = error.without_url();
    if error.is_builder() {
        return ApiError::Rejected {
            code: 0,
            message: format!("could not build the request: {}", error_chain(&error)),
        };
    }
    let outcome_unknown = !error.is_connect();
    let kind = if error.is_connect() {
        "could not connect"
    } else if error.is_timeout() {
        "timed out"
    } else if error.is_body() || error.is_decode() {
        "the response body broke off"
    } else {
        "the connection failed"
    };
    ApiError::Transient {
        detail: format!("{kind}: {}", error_chain(&error)),
        outcome_unknown,
    }
}

/// The error and its causes on one line, without repeats (reqwest and hyper often wrap an
/// error in another with the same text).
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = vec![error.to_string()];
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        source = cause.source();
    }
    parts.join(": ")
}

#[derive(Deserialize)]
struct Envelope {
    code: i64,
    #[serde(default, deserialize_with = "lenient_string")]
    msg: Option<String>,
    #[serde(default)]
    data: Option<Value>,
    #[serde(default, deserialize_with = "lenient_string")]
    token: Option<String>,
}

/// The envelope, if the body is one: a JSON object with an integer `code`.
fn parse_envelope(body: &[u8]) -> Option<Envelope> {
    let value: Value = serde_json::from_slice(body).ok()?;
    if !value.is_object() {
        return None;
    }
    serde_json::from_value(value).ok()
}

/// A short, single-line, printable excerpt of a body for error messages.
pub(crate) fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if collapsed.is_empty() {
        return "(empty body)".to_owned();
    }
    let mut chars = collapsed.chars();
    let mut short: String = chars.by_ref().take(EXCERPT_CHARS).collect();
    if chars.next().is_some() {
        short.push('…');
    }
    short
}

/// Parse a `Retry-After` header: delay-seconds, or an IMF-fixdate
/// (`Sun, 06 Nov 1994 08:49:37 GMT`) turned into the time left from now.
pub(crate) fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    if let Ok(seconds) = value.parse::<f64>() {
        return (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds));
    }
    let at = parse_imf_fixdate(value)?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?;
    Some(at.saturating_sub(now))
}

/// An IMF-fixdate (RFC 9110 §5.6.7) as a time since the Unix epoch.
fn parse_imf_fixdate(value: &str) -> Option<Duration> {
    // "Sun, 06 Nov 1994 08:49:37 GMT"
    let (_weekday, rest) = value.split_once(", ")?;
    let parts: Vec<&str> = rest.split(' ').collect();
    let [day, month, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    let day: u64 = day.parse().ok()?;
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|name| name == month)? as u64
        + 1;
    let year: u64 = year.parse().ok()?;
    let clock: Vec<u64> = time
        .split(':')
        .map(|part| part.parse().ok())
        .collect::<Option<_>>()?;
    let [hour, minute, second] = clock.as_slice() else {
        return None;
    };
    if !(1..=31).contains(&day) || year < 1970 || *hour > 23 || *minute > 59 || *second > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some(Duration::from_secs(
        days * 86_400 + hour * 3_600 + minute * 60 + second,
    ))
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year / 400;
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The analysis record of the submit and detail answers.
#[derive(Deserialize)]
struct AnalysisRecord {
    #[serde(rename = "_id", default, deserialize_with = "lenient_string")]
    id: Option<String>,
    #[serde(default, deserialize_with = "lenient_i64")]
    status: Option<i64>,
    #[serde(default, deserialize_with = "lenient_f64")]
    progress: Option<f64>,
    #[serde(default)]
    analysis_result: Option<AnalysisResult>,
    #[serde(default, deserialize_with = "lenient_i64")]
    error_code: Option<i64>,
    #[serde(default, deserialize_with = "lenient_string")]
    error_reason: Option<String>,
}

#[derive(Deserialize)]
struct AnalysisResult {
    /// Kept as a list of loose values so one odd item cannot sink the whole record.
    #[serde(default, deserialize_with = "lenient_list")]
    media: Vec<Value>,
}

#[derive(Deserialize)]
struct MediaItem {
    #[serde(default, deserialize_with = "lenient_i64")]
    obj_id: Option<i64>,
    #[serde(default, deserialize_with = "lenient_string")]
    img_url: Option<String>,
}

/// The task record of the create and detail answers.
#[derive(Deserialize)]
struct TaskRecord {
    #[serde(rename = "_id", default, deserialize_with = "lenient_string")]
    id: Option<String>,
    #[serde(default, deserialize_with = "lenient_i64")]
    status: Option<i64>,
    #[serde(default, deserialize_with = "lenient_f64")]
    progress: Option<f64>,
    #[serde(default, deserialize_with = "lenient_string")]
    video_url: Option<String>,
    #[serde(default, deserialize_with = "lenient_f64")]
    video_duration: Option<f64>,
    #[serde(default, deserialize_with = "lenient_i64")]
    error_code: Option<i64>,
    #[serde(default, deserialize_with = "lenient_string")]
    error_reason: Option<String>,
}

/// Decode the analysis record of a successful analyze or analysis-detail answer.
pub(crate) fn decode_analysis(data: Value) -> Result<Analysis, ApiError> {
    let record: AnalysisRecord = decode_record(data, "analysis")?;
    let id = required_id(record.id, "analysis")?;
    // Subjects come from `media` only: `detected_objects` may disagree with it.
    let subjects = record
        .analysis_result
        .map(|result| result.media)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|item| {
            let item: MediaItem = serde_json::from_value(item).ok()?;
            let obj_id = u32::try_from(item.obj_id?).ok()?;
            Some(Subject {
                obj_id,
                img_url: item.img_url.unwrap_or_default(),
            })
        })
        .collect();
    Ok(Analysis {
        id,
        status: status_of(record.status),
        progress: record.progress.unwrap_or(0.0),
        subjects,
        error_code: record.error_code,
        error_reason: record.error_reason,
    })
}

/// Decode the task record of a successful create or task-detail answer.
pub(crate) fn decode_task(data: Value) -> Result<Task, ApiError> {
    let record: TaskRecord = decode_record(data, "task")?;
    let id = required_id(record.id, "task")?;
    let output_url = record
        .video_url
        .filter(|url| !url.trim().is_empty())
        .map(|url| url.trim().to_owned());
    Ok(Task {
        id,
        status: status_of(record.status),
        progress: record.progress.unwrap_or(0.0),
        output_url,
        video_duration: record.video_duration,
        error_code: record.error_code,
        error_reason: record.error_reason,
    })
}

/// A status the answer left out is treated like an undocumented one: still running.
fn status_of(code: Option<i64>) -> RemoteStatus {
    RemoteStatus::from_code(code.unwrap_or(0))
}

fn decode_record<T: for<'de> Deserialize<'de>>(data: Value, what: &str) -> Result<T, ApiError> {
    if !data.is_object() {
        return Err(malformed_success(format!(
            "the {what} record is missing from a successful answer"
        )));
    }
    serde_json::from_value(data)
        .map_err(|error| malformed_success(format!("the {what} record is unreadable: {error}")))
}

fn required_id(id: Option<String>, what: &str) -> Result<String, ApiError> {
    id.filter(|id| !id.trim().is_empty())
        .ok_or_else(|| malformed_success(format!("a successful answer has no {what} _id")))
}

/// A code-1000 answer we cannot use. The request was processed (for a create, the task may
/// exist and be billed) but its result is lost, which is exactly the ambiguous case.
fn malformed_success(detail: String) -> ApiError {
    ApiError::Transient {
        detail,
        outcome_unknown: true,
    }
}

/// A string, a number or a boolean as text; null and other shapes as `None`.
fn lenient_string<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    Ok(match Value::deserialize(deserializer)? {
        Value::String(text) => Some(text),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    })
}

/// A number (integer or float), or a numeric string; anything else as `None`.
fn lenient_f64<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<f64>, D::Error> {
    Ok(match Value::deserialize(deserializer)? {
        Value::Number(number) => number.as_f64(),
        Value::String(text) => text.trim().parse::<f64>().ok(),
        _ => None,
    }
    .filter(|number| number.is_finite()))
}

/// An integer, an integral float (`3.0`) or an integer string; anything else as `None`.
fn lenient_i64<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    let value = Value::deserialize(deserializer)?;
    if let Some(integer) = value.as_i64() {
        return Ok(Some(integer));
    }
    let float = match &value {
        Value::Number(number) => number.as_f64(),
        Value::String(text) => text.trim().parse::<f64>().ok(),
        _ => None,
    };
    Ok(float
        .filter(|float| float.fract() == 0.0 && float.abs() < 9.0e15)
        .map(|float| float as i64))
}

/// An array; null or any other shape as empty.
fn lenient_list<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<Value>, D::Error> {
    Ok(match Value::deserialize(deserializer)? {
        Value::Array(items) => items,
        _ => Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(status: u16, body: &str) -> Exchange {
        Exchange::Answered {
            status,
            retry_after: None,
            body: Ok(body.as_bytes().to_vec()),
        }
    }

    #[track_caller]
    fn check_error(status: u16, body: &str, expected: ApiError) {
        assert_eq!(classify(answered(status, body)), Err(expected));
    }

    #[test]
    fn business_codes_are_classified_once() {
        check_error(
            200,
            r#"{"code":1005,"msg":"Frequent operation"}"#,
            ApiError::Throttled { retry_after: None },
        );
        check_error(
            200,
            r#"{"code":2001,"msg":"server error"}"#,
            ApiError::Transient {
                detail: "HTTP 200: code 2001: server error".into(),
                outcome_unknown: false,
            },
        );
        check_error(
            200,
            r#"{"code":1014,"msg":"not found","data":null}"#,
            ApiError::NotFound {
                message: "not found".into(),
            },
        );
        check_error(
            200,
            r#"{"code":1104,"msg":"Insufficient credits"}"#,
            ApiError::OutOfCredits {
                message: "Insufficient credits".into(),
            },
        );
        for code in [1101, 1102, 1200] {
            check_error(
                200,
                &format!(r#"{{"code":{code},"msg":"no"}}"#),
                ApiError::Unauthorized {
                    code,
                    message: "no".into(),
                },
            );
        }
        for code in [1003, 1, 9999] {
            check_error(
                200,
                &format!(r#"{{"code":{code},"msg":null}}"#),
                ApiError::Rejected {
                    code,
                    message: String::new(),
                },
            );
        }
    }

    #[test]
    fn http_429_is_throttled_whatever_the_body() {
        let exchange = Exchange::Answered {
            status: 429,
            retry_after: Some(Duration::from_secs(3)),
            body: Ok(b"Too Many Requests".to_vec()),
        };
        assert_eq!(
            classify(exchange),
            Err(ApiError::Throttled {
                retry_after: Some(Duration::from_secs(3))
            })
        );
    }

    #[test]
    fn a_503_page_was_refused_before_processing_other_error_pages_may_not_have_been() {
        for (status, unknown) in [(503, false), (502, true), (504, true), (500, true)] {
            let page = format!("<html><title>{status}</title></html>");
            let Err(ApiError::Transient {
                outcome_unknown, ..
            }) = classify(answered(status, &page))
            else {
                panic!("expected a transient error for {status}");
            };
            assert_eq!(outcome_unknown, unknown, "HTTP {status}");
        }
    }

    #[test]
    fn non_envelope_bodies_are_transient_with_unknown_outcome() {
        let page = format!(
            "<html><head><title>502 Bad Gateway</title></head><body>{}</body></html>",
            "x".repeat(1000)
        );
        let Err(ApiError::Transient {
            detail,
            outcome_unknown,
        }) = classify(answered(502, &page))
        else {
            panic!("expected a transient error");
        };
        assert!(outcome_unknown);
        assert!(
            detail.starts_with("HTTP 502: server error page: <html>"),
            "{detail}"
        );
        assert!(detail.chars().count() <= 250, "{detail}");
        for body in [
            r#"{"code":1000,"msg":"OK","data":{"_id":"ab"#,
            "",
            "[1,2]",
            r#"{"msg":"no code"}"#,
            r#"{"code":"1000"}"#,
        ] {
            assert!(
                matches!(
                    classify(answered(200, body)),
                    Err(ApiError::Transient {
                        outcome_unknown: true,
                        ..
                    })
                ),
                "{body}"
            );
        }
    }

    #[test]
    fn the_envelope_decides_not_the_http_status() {
        let success = classify(answered(500, r#"{"code":1000,"msg":"OK","data":{"a":1}}"#));
        assert_eq!(
            success,
            Ok(Success {
                msg: "OK".into(),
                data: serde_json::json!({"a": 1}),
                token: None
            })
        );
        check_error(
            404,
            r#"{"code":1003,"msg":"bad"}"#,
            ApiError::Rejected {
                code: 1003,
                message: "bad".into(),
            },
        );
    }

    #[test]
    fn get_token_answer_has_the_token_at_the_top_level() {
        let success = classify(answered(200, r#"{"code":1000,"token":"tok"}"#)).unwrap();
        assert_eq!(success.token.as_deref(), Some("tok"));
        assert_eq!(success.data, Value::Null);
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        assert_eq!(parse_retry_after("1"), Some(Duration::from_secs(1)));
        assert_eq!(parse_retry_after(" 120 "), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("soon"), None);
        // A date in the past means "now".
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_imf_fixdate("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::from_secs(784_111_777))
        );
        assert_eq!(
            parse_imf_fixdate("Thu, 01 Jan 1970 00:00:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_imf_fixdate("Tue, 29 Feb 2028 12:00:00 GMT"),
            Some(Duration::from_secs(1_835_438_400))
        );
        let in_a_minute = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 90;
        let date = format_imf_fixdate(in_a_minute);
        let left = parse_retry_after(&date).unwrap();
        assert!(left > Duration::from_secs(30) && left <= Duration::from_secs(90));
    }

    /// The inverse of `parse_imf_fixdate`, for the test above (weekday not checked).
    fn format_imf_fixdate(unix_seconds: u64) -> String {
        let mut days = unix_seconds / 86_400;
        let seconds = unix_seconds % 86_400;
        let mut year = 1970;
        loop {
            let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
            let length = if leap { 366 } else { 365 };
            if days < length {
                break;
            }
            days -= length;
            year += 1;
        }
        let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
        let lengths = [
            31,
            if leap { 29 } else { 28 },
            31,
            30,
            31,
            30,
            31,
            31,
            30,
            31,
            30,
            31,
        ];
        let names = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        let mut month = 0;
        while days >= lengths[month] {
            days -= lengths[month];
            month += 1;
        }
        format!(
            "Mon, {:02} {} {} {:02}:{:02}:{:02} GMT",
            days + 1,
            names[month],
            year,
            seconds / 3600,
            seconds / 60 % 60,
            seconds % 60
        )
    }

    #[test]
    fn analysis_fields_are_tolerant() {
        let analysis = decode_analysis(serde_json::json!({
            "_id": "a1",
            "status": 3.0,
            "progress": "99.5",
            "analysis_result": {
                "detected_objects": 3,
                "media": [
                    {"obj_id": 0, "img_url": "https://i/0.jpg", "media_type": "images"},
                    {"obj_id": "2", "img_url": "https://i/2.jpg"},
                    {"obj_id": 1.0},
                    {"obj_id": -1, "img_url": "https://i/neg.jpg"},
                    {"img_url": "https://i/none.jpg"},
                    "garbage"
                ],
                "new_key": {"nested": true}
            },
            "error_code": null,
            "error_reason": "success",
            "unknown": [1, 2, 3]
        }))
        .unwrap();
        assert_eq!(analysis.id, "a1");
        assert_eq!(analysis.status, RemoteStatus::Completed);
        assert_eq!(analysis.progress, 99.5);
        assert_eq!(
            analysis.subjects,
            vec![
                Subject {
                    obj_id: 0,
                    img_url: "https://i/0.jpg".into()
                },
                Subject {
                    obj_id: 2,
                    img_url: "https://i/2.jpg".into()
                },
                Subject {
                    obj_id: 1,
                    img_url: String::new()
                },
            ]
        );
        assert_eq!(analysis.error_code, None);
        assert_eq!(analysis.error_reason.as_deref(), Some("success"));
    }

    #[test]
    fn missing_pieces_get_safe_defaults() {
        let analysis =
            decode_analysis(serde_json::json!({"_id": "a", "analysis_result": null})).unwrap();
        assert_eq!(analysis.status, RemoteStatus::Unknown(0));
        assert!(analysis.status.is_running());
        assert_eq!(analysis.progress, 0.0);
        assert!(analysis.subjects.is_empty());
        let analysis =
            decode_analysis(serde_json::json!({"_id": "a", "analysis_result": {"media": null}}))
                .unwrap();
        assert!(analysis.subjects.is_empty());
    }

    #[test]
    fn task_output_url_is_none_while_null_empty_or_absent() {
        for video_url in [
            serde_json::json!(null),
            serde_json::json!(""),
            serde_json::json!("  "),
        ] {
            let task =
                decode_task(serde_json::json!({"_id": "t", "status": 2, "video_url": video_url}))
                    .unwrap();
            assert_eq!(task.output_url, None);
        }
        let task = decode_task(serde_json::json!({"_id": "t", "status": 7})).unwrap();
        assert_eq!(task.output_url, None);
        assert_eq!(task.status, RemoteStatus::Unknown(7));
        let task = decode_task(serde_json::json!({
            "_id": "t", "status": 4, "progress": 12.75, "video_url": "https://o/x.mp4",
            "error_code": "3001", "error_reason": "face not detected", "video_duration": 10
        }))
        .unwrap();
        assert_eq!(task.output_url.as_deref(), Some("https://o/x.mp4"));
        assert_eq!(task.progress, 12.75);
        assert_eq!(task.error_code, Some(3001));
        assert_eq!(task.video_duration, Some(10.0));
    }

    #[test]
    fn a_success_without_an_id_is_an_ambiguous_outcome() {
        for data in [
            serde_json::json!(null),
            serde_json::json!({}),
            serde_json::json!({"_id": ""}),
            serde_json::json!({"_id": null, "status": 1}),
            serde_json::json!([1]),
        ] {
            assert!(matches!(
                decode_task(data.clone()),
                Err(ApiError::Transient {
                    outcome_unknown: true,
                    ..
                })
            ));
            assert!(decode_analysis(data).is_err());
        }
    }

    #[test]
    fn excerpts_are_short_and_single_line() {
        assert_eq!(excerpt(b""), "(empty body)");
        assert_eq!(excerpt(b"a\n\n  b\tc"), "a b c");
        let long = "é".repeat(500);
        let short = excerpt(long.as_bytes());
        assert_eq!(short.chars().count(), EXCERPT_CHARS + 1);
        assert!(short.ends_with('…'));
        assert_eq!(excerpt(&[0xff, 0x41]), "\u{fffd}A");
    }
}

/// Hostile answers: arbitrary bytes under any status, and arbitrary JSON as the envelope or as
/// a record, never panic the decoders; every outcome is a success or a classified error. A
/// fixed seed and a few hundred cases keep this in CI; `PROPTEST_CASES=100000` runs it long.
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, RngSeed};
    use serde_json::Value;

    use super::*;

    fn config() -> Config {
        Config {
            cases: Config::default().cases.max(256),
            rng_seed: RngSeed::Fixed(0x5eed),
            failure_persistence: None,
            ..Config::default()
        }
    }

    /// Any JSON value, nested a few levels, with the keys the decoders look for mixed in.
    fn json() -> impl Strategy<Value = Value> {
        let key = prop_oneof![
            Just("code".to_string()),
            Just("msg".to_string()),
            Just("data".to_string()),
            Just("token".to_string()),
            Just("_id".to_string()),
            Just("status".to_string()),
            Just("progress".to_string()),
            Just("video_url".to_string()),
            Just("media".to_string()),
            Just("error_code".to_string()),
            ".{0,8}",
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            ".{0,20}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 64, 8, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec((key.clone(), inner), 0..8)
                    .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn arbitrary_bytes_never_panic(status in 100u16..600, body in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = classify(Exchange::Answered { status, retry_after: None, body: Ok(body) });
        }

        #[test]
        fn arbitrary_json_envelopes_never_panic(status in prop_oneof![Just(200u16), 100u16..600], value in json()) {
            let body = serde_json::to_vec(&value).unwrap();
            if let Ok(success) = classify(Exchange::Answered { status, retry_after: None, body: Ok(body) }) {
                let _ = decode_analysis(success.data.clone());
                let _ = decode_task(success.data);
            }
        }

        #[test]
        fn arbitrary_records_never_panic(value in json()) {
            let _ = decode_analysis(value.clone());
            let _ = decode_task(value);
        }

        #[test]
        fn retry_after_never_panics(value in ".{0,40}") {
            let _ = parse_retry_after(&value);
        }
    }
}
