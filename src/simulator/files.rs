//! The simulator's file host: signed, expiring output URLs with `Range`/`If-Range` support and
//! injected truncation, subject preview images, and the dropped-connection response.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::header::{
    ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, IF_RANGE, RANGE,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use rand::Rng;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use tokio_util::io::ReaderStream;

use super::output_content;
use super::state::{Outcome, Shared, Stage, hex};

#[derive(Deserialize)]
pub(super) struct Signature {
    expires: Option<String>,
    sig: Option<String>,
}

/// `GET /_sim/files/<task id>.mp4?expires=<unix ms>&sig=<hex>`.
pub(super) async fn download(
    State(sim): State<Arc<Shared>>,
    Path(file): Path<String>,
    Query(signature): Query<Signature>,
    headers: HeaderMap,
) -> Response {
    sim.lock().stats.calls.download += 1;
    let Some(task_id) = file.strip_suffix(".mp4") else {
        return no_such_key();
    };
    let finished = {
        let state = sim.lock();
        state.tasks.get(task_id).is_some_and(|task| {
            matches!(task.outcome, Outcome::Succeeds(()))
                && task.progress.stage(tokio::time::Instant::now()) == Stage::Finished
        })
    };
    if !finished {
        return no_such_key();
    }
    let expires = signature
        .expires
        .as_deref()
        .and_then(|expires| expires.parse::<u64>().ok());
    let valid = match (expires, signature.sig.as_deref()) {
        (Some(expires), Some(sig)) => sim.sign(task_id, expires) == sig,
        _ => false,
    };
    if !valid {
        sim.lock().stats.downloads.denied += 1;
        return access_denied(
            "The request signature we calculated does not match the signature you provided.",
        );
    }
    // The file host judges expiry by its own clock, which may run ahead of the signer's.
    let host_now = sim.now_unix_ms() + sim.knobs.cdn_clock_ahead.as_millis() as u64;
    if expires.is_some_and(|expires| host_now >= expires) {
        sim.lock().stats.downloads.denied += 1;
        return access_denied("Request has expired");
    }
    serve_content(&sim, task_id, &headers)
}

/// The content of a finished task, whole or from a range, possibly cut short on purpose.
fn serve_content(sim: &Shared, task_id: &str, headers: &HeaderMap) -> Response {
    let length = sim.knobs.output_bytes;
    let etag = etag_of(task_id, length);
    // A Range is honoured only if the client's copy is the one we have (If-Range, RFC 9110
    // §13.1.5); an unparsable or multi-part Range is ignored and the whole file is sent.
    let range_applies = headers
        .get(IF_RANGE)
        .is_none_or(|if_range| if_range.as_bytes() == etag.as_bytes());
    let range = headers
        .get(RANGE)
        .filter(|_| range_applies)
        .and_then(|range| range.to_str().ok())
        .and_then(parse_range);
    let (status, start, end) = match range {
        None => (StatusCode::OK, 0, length),
        Some((first, _)) if first >= length => {
            let mut response = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
            insert(&mut response, CONTENT_RANGE, &format!("bytes */{length}"));
            return response;
        }
        Some((first, last)) => {
            let last = last.map_or(length - 1, |last| last.min(length - 1));
            if last < first {
                let mut response = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
                insert(&mut response, CONTENT_RANGE, &format!("bytes */{length}"));
                return response;
            }
            (StatusCode::PARTIAL_CONTENT, first, last + 1)
        }
    };
    let content = output_content(task_id, length);
    let part = content[start as usize..end as usize].to_vec();
    let truncate = {
        let mut state = sim.lock();
        let truncate = !part.is_empty() && state.rng.random::<f64>() < sim.knobs.truncate_rate;
        let sent = if truncate { part.len() / 2 } else { part.len() };
        state.stats.downloads.served += 1;
        state.stats.downloads.bytes += sent as u64;
        if truncate {
            state.stats.faults.truncate += 1;
        }
        truncate
    };
    let declared = part.len();
    let body = if truncate {
        let prefix = part[..declared / 2].to_vec();
        broken_body(prefix)
    } else {
        Body::from(part)
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    insert(&mut response, CONTENT_TYPE, "video/mp4");
    insert(&mut response, CONTENT_LENGTH, &declared.to_string());
    insert(&mut response, ETAG, &etag);
    insert(&mut response, ACCEPT_RANGES, "bytes");
    if status == StatusCode::PARTIAL_CONTENT {
        insert(
            &mut response,
            CONTENT_RANGE,
            &format!("bytes {start}-{}/{length}", end - 1),
        );
    }
    response
}

/// `GET /_sim/previews/<analysis id>/<obj_id>.svg`: a placeholder picture of a subject.
pub(super) async fn preview(Path((analysis_id, file)): Path<(String, String)>) -> Response {
    let Some(obj_id) = file
        .strip_suffix(".svg")
        .and_then(|obj_id| obj_id.parse::<u32>().ok())
    else {
        return no_such_key();
    };
    let svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"320\" height=\"180\">\
         <rect width=\"100%\" height=\"100%\" fill=\"#ddd\"/>\
         <text x=\"16\" y=\"96\" font-family=\"sans-serif\" font-size=\"20\">subject {obj_id} of {}</text></svg>",
        alphanumeric_only(&analysis_id)
    );
    ([(CONTENT_TYPE, "image/svg+xml")], svg).into_response()
}

/// A response whose connection is dropped before an answer is complete: the body fails at
/// once, so hyper aborts the connection and the client sees a transport error.
pub(super) fn dropped_connection() -> Response {
    Response::new(broken_body(Vec::new()))
}

/// A body that sends `prefix` and then fails, which makes hyper drop the connection.
fn broken_body(prefix: Vec<u8>) -> Body {
    let reader = io::Cursor::new(prefix).chain(BrokenReader);
    Body::from_stream(ReaderStream::new(reader))
}

/// A reader that always fails.
struct BrokenReader;

impl AsyncRead for BrokenReader {
    fn poll_read(
        self: Pin<&mut Self>,
        _context: &mut Context<'_>,
        _buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::ConnectionReset,
            "simulated connection drop",
        )))
    }
}

/// The quoted ETag of a task's output.
pub(super) fn etag_of(task_id: &str, length: u64) -> String {
    let digest = Sha256::digest(format!("etag:{task_id}:{length}").as_bytes());
    format!("\"{}\"", hex(&digest[..8]))
}

/// A single `bytes=N-` or `bytes=N-M` range as (first, last inclusive).
pub(super) fn parse_range(value: &str) -> Option<(u64, Option<u64>)> {
    let spec = value.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    let first = first.trim().parse::<u64>().ok()?;
    let last = match last.trim() {
        "" => None,
        last => Some(last.parse::<u64>().ok()?),
    };
    Some((first, last))
}

/// The S3-style refusal an expired or forged URL gets; a client must never save it as video.
fn access_denied(message: &str) -> Response {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AccessDenied</Code>\
         <Message>{message}</Message></Error>\n"
    );
    (
        StatusCode::FORBIDDEN,
        [(CONTENT_TYPE, "application/xml")],
        body,
    )
        .into_response()
}

fn no_such_key() -> Response {
    let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>NoSuchKey</Code>\
                <Message>The specified key does not exist.</Message></Error>\n";
    (
        StatusCode::NOT_FOUND,
        [(CONTENT_TYPE, "application/xml")],
        body,
    )
        .into_response()
}

fn insert(response: &mut Response, name: axum::http::HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().insert(name, value);
    }
}

/// Only the characters an id can have, so nothing from the path lands in the SVG as markup.
fn alphanumeric_only(text: &str) -> String {
    text.chars().filter(|c| c.is_ascii_alphanumeric()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=10-"), Some((10, None)));
        assert_eq!(parse_range("bytes=0-99"), Some((0, Some(99))));
        assert_eq!(parse_range("bytes=-5"), None);
        assert_eq!(parse_range("bytes=1-2,4-5"), None);
        assert_eq!(parse_range("items=1-2"), None);
    }

    #[test]
    fn etags_are_quoted_and_per_task() {
        let etag = etag_of("t1", 10);
        assert!(etag.starts_with('"') && etag.ends_with('"'));
        assert_ne!(etag, etag_of("t2", 10));
    }
}
