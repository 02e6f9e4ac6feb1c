//! The HTTP side of preflight: the client it uses (its own, not the API's: rustls, http(s)
//! only, at most five redirects, short timeouts), one ranged GET that reads at most a given
//! number of body bytes, and the translation of statuses and transport failures into
//! verdicts. Nothing here knows about MP4 or images.
//!
//! URLs may be signed and carry credentials in their query, so a URL is only ever logged at
//! debug level, and errors are stripped of it before they become warnings.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, RANGE};

use super::verdict::{MediaKind, Spent, Verdict};

/// Most redirects followed for one check request.
pub const MAX_REDIRECTS: usize = 5;

/// Timeouts of the preflight client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Establishing a connection (TCP and TLS).
    pub connect: Duration,
    /// Waiting for the next bytes of an answer.
    pub read: Duration,
    /// One whole request, answer body included.
    pub request: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            connect: Duration::from_secs(5),
            read: Duration::from_secs(10),
            request: Duration::from_secs(20),
        }
    }
}

/// A client builder with the preflight policy: rustls, only http(s), at most
/// [`MAX_REDIRECTS`] redirects, the given timeouts, no compression (byte ranges must be the
/// file's own bytes). Tests may add to it (a resolver) before building.
pub fn client_builder(timeouts: Timeouts) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .use_rustls_tls()
        .user_agent(concat!(
            "headswap-batch/",
            env!("CARGO_PKG_VERSION"),
            " preflight"
        ))
        .connect_timeout(timeouts.connect)
        .read_timeout(timeouts.read)
        .timeout(timeouts.request)
        .redirect(reqwest::redirect::Policy::custom(|attempt| {
            let scheme = attempt.url().scheme().to_owned();
            if !matches!(scheme.as_str(), "http" | "https") {
                attempt.error(format!("refused a redirect to a {scheme}: URL"))
            } else if attempt.previous().len() > MAX_REDIRECTS {
                attempt.error(format!("more than {MAX_REDIRECTS} redirects"))
            } else {
                attempt.follow()
            }
        }))
}

/// Bytes of a file as one request delivered them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Piece {
    /// Where `body` starts in the file.
    pub start: u64,
    pub body: Vec<u8>,
    /// The file's length, when the server said it.
    pub total: Option<u64>,
    /// The server ignored the Range and sent the file from its start (status 200).
    pub whole: bool,
    /// The answer ended before the read limit: `body` runs to the end of what was sent.
    pub complete: bool,
}

/// The answer to one ranged GET.
#[derive(Debug)]
pub(crate) enum Answer {
    Piece(Piece),
    /// A status that is not a success; the body is not read.
    Status(StatusCode),
    /// A 206 for another range than asked, or a 200 to a range not starting at 0.
    WrongRange(String),
}

/// GET `url` asking for bytes `start..start + len`, reading at most `len` body bytes.
/// Counts the request and the body bytes received in `spent`. An `Err` is a transport
/// failure, already worded for a warning.
pub(crate) async fn get_range(
    client: &reqwest::Client,
    url: &str,
    start: u64,
    len: u64,
    spent: &mut Spent,
) -> Result<Answer, String> {
    let last = start.saturating_add(len.max(1)) - 1;
    tracing::debug!(url, start, last, "preflight range request");
    spent.requests += 1;
    let mut response = client
        .get(url)
        .header(RANGE, format!("bytes={start}-{last}"))
        .send()
        .await
        .map_err(describe_error)?;
    let status = response.status();
    let (piece_start, total, whole) = match status {
        StatusCode::PARTIAL_CONTENT => {
            let Some((first, _, total)) = header_text(&response, CONTENT_RANGE)
                .as_deref()
                .and_then(parse_content_range)
            else {
                return Ok(Answer::WrongRange(
                    "a partial answer without a usable Content-Range".into(),
                ));
            };
            if first != start {
                return Ok(Answer::WrongRange(format!(
                    "asked for bytes from {start}, answered from {first}"
                )));
            }
            (first, total, false)
        }
        StatusCode::OK if start == 0 => {
            let total = header_text(&response, CONTENT_LENGTH).and_then(|text| text.parse().ok());
            (0, total, true)
        }
        StatusCode::OK => {
            return Ok(Answer::WrongRange(format!(
                "asked for bytes from {start}, answered with the whole file"
            )));
        }
        StatusCode::RANGE_NOT_SATISFIABLE => {
            // `bytes */0`: the file is empty.
            let empty = header_text(&response, CONTENT_RANGE).as_deref() == Some("bytes */0");
            if empty {
                return Ok(Answer::Piece(Piece {
                    start,
                    body: Vec::new(),
                    total: Some(0),
                    whole: false,
                    complete: true,
                }));
            }
            return Ok(Answer::Status(status));
        }
        _ => return Ok(Answer::Status(status)),
    };
    let limit = usize::try_from(len).unwrap_or(usize::MAX);
    let mut body = Vec::new();
    let mut ended = false;
    while body.len() < limit {
        let chunk = match response.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => {
                ended = true;
                break;
            }
            Err(error) => return Err(describe_error(error)),
        };
        spent.bytes += chunk.len() as u64;
        let room = limit - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }
    // Past the limit nothing is wanted: dropping the response drops the connection.
    let complete = ended || total.is_some_and(|total| piece_start + body.len() as u64 >= total);
    Ok(Answer::Piece(Piece {
        start: piece_start,
        body,
        total,
        whole,
        complete,
    }))
}

/// The verdict on a status that is not a success. Only "gone" is definitive.
pub(crate) fn status_verdict(kind: MediaKind, status: StatusCode) -> Verdict {
    let noun = kind.noun();
    let code = status.as_u16();
    match code {
        404 | 410 => Verdict::invalid(format!("{noun} link answers HTTP {code}")),
        401 | 403 => Verdict::undecided(format!(
            "{noun} link answers HTTP {code}: this machine is refused access (the service may not be)"
        )),
        429 => Verdict::undecided(format!(
            "{noun} link answers HTTP 429: its host asks for fewer requests"
        )),
        500..=599 => Verdict::undecided(format!(
            "{noun} link answers HTTP {code}: its server failed"
        )),
        _ => Verdict::undecided(format!("{noun} link answers HTTP {code}")),
    }
}

/// A transport failure in words, without the URL (it may carry a signature).
fn describe_error(error: reqwest::Error) -> String {
    let error = error.without_url();
    let chain = error_chain(&error);
    let lower = chain.to_ascii_lowercase();
    if error.is_timeout() || lower.contains("timed out") {
        format!("no answer in time ({chain})")
    } else if lower.contains("dns error") || lower.contains("failed to lookup address") {
        format!("its host name does not resolve ({chain})")
    } else if lower.contains("connection refused") {
        "the connection was refused".to_string()
    } else if error.is_connect() {
        format!("could not connect ({chain})")
    } else if error.is_redirect() {
        format!("redirects refused ({chain})")
    } else {
        chain
    }
}

/// An error and its sources, joined by `: `, with repeats left out.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = Some(error);
    while let Some(error) = current {
        let text = error.to_string();
        if !parts.iter().any(|part| part.contains(&text)) {
            parts.push(text);
        }
        current = error.source();
    }
    parts.join(": ")
}

fn header_text(response: &reqwest::Response, name: reqwest::header::HeaderName) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(|value| value.trim().to_string())
}

/// `bytes FIRST-LAST/TOTAL` or `bytes FIRST-LAST/*` as (first, last, total).
pub(crate) fn parse_content_range(value: &str) -> Option<(u64, u64, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let (first, last) = range.split_once('-')?;
    let first: u64 = first.trim().parse().ok()?;
    let last: u64 = last.trim().parse().ok()?;
    let total = match total.trim() {
        "*" => None,
        total => Some(total.parse::<u64>().ok()?),
    };
    if last < first || total.is_some_and(|total| last >= total) {
        return None;
    }
    Some((first, last, total))
}

/// A URL as it may be shown at info level: scheme, host and path, no user info or query.
pub fn display_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(parsed) => {
            let host = parsed.host_str().unwrap_or("");
            let port = parsed
                .port()
                .map(|port| format!(":{port}"))
                .unwrap_or_default();
            let query = if parsed.query().is_some() { "?…" } else { "" };
            format!("{}://{host}{port}{}{query}", parsed.scheme(), parsed.path())
        }
        Err(_) => "(not a URL)".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges() {
        assert_eq!(
            parse_content_range("bytes 0-99/1000"),
            Some((0, 99, Some(1000)))
        );
        assert_eq!(parse_content_range("bytes 10-19/*"), Some((10, 19, None)));
        assert_eq!(parse_content_range("bytes 10-9/100"), None);
        assert_eq!(parse_content_range("bytes 0-100/100"), None);
        assert_eq!(parse_content_range("bytes */100"), None);
        assert_eq!(parse_content_range("items 0-1/2"), None);
    }

    #[test]
    fn statuses() {
        let video = MediaKind::Video;
        assert_eq!(
            status_verdict(video, StatusCode::NOT_FOUND),
            Verdict::invalid("video link answers HTTP 404")
        );
        assert!(status_verdict(MediaKind::Face, StatusCode::GONE).is_invalid());
        for code in [401, 403, 429, 500, 502, 503, 400, 405] {
            let status = StatusCode::from_u16(code).unwrap();
            assert!(status_verdict(video, status).warning().is_some(), "{code}");
        }
    }

    #[test]
    fn displayed_urls_hide_credentials() {
        assert_eq!(
            display_url("https://user:pw@cdn.example.com:8443/a/b.mp4?X-Amz-Signature=abc"),
            "https://cdn.example.com:8443/a/b.mp4?…"
        );
        assert_eq!(display_url("http://h/x.jpg"), "http://h/x.jpg");
        assert_eq!(display_url("nonsense"), "(not a URL)");
    }
}
