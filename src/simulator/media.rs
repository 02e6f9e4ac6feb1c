//! Source media for preflight checks, tests, benchmarks and the demo, under `/media/`:
//!
//! - `video.mp4?duration=S&layout=start|end&size=BYTES`: an MP4 file whose `mvhd` says S
//!   seconds (default 10), its `moov` box before (`start`, the default) or after (`end`) an
//!   `mdat` of zeros that pads the file to BYTES (default 256 KiB; at most 1 GiB). The boxes
//!   are written by the `mp4-atom` crate, the one preflight reads them with. The `mdat` is
//!   padding, not frames: a player would not play this file, a box reader sees a real layout.
//! - `face.jpg`, `face.png`, `face.webp`: real 16×16 images (made with ffmpeg, see
//!   tests/fixtures/README.md);
//! - `page.html` (an HTML page answered 200), `doc.pdf` (a one-page PDF);
//! - anything under `missing/`, and any other name: 404 with an HTML body.
//!
//! Every answer honours a single `Range` (206 + `Content-Range`, 416 past the end) and HEAD.
//! Requests and the body bytes actually handed to the connection are counted in
//! `/_sim/stats` (`media`), so tests and benchmarks can prove preflight reads little. Large
//! files are never held in memory: the padding is produced as it is sent.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::header::{ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, RANGE};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use mp4_atom::{Encode, FourCC, Ftyp, Header, Moov, Mvhd};
use tokio::io::{AsyncRead, ReadBuf};
use tokio_util::io::ReaderStream;

use super::files::parse_range;
use super::state::Shared;

/// Default length of `video.mp4`.
pub const DEFAULT_VIDEO_BYTES: u64 = 256 * 1024;
/// Longest `video.mp4` served (`size=`).
pub const MAX_VIDEO_BYTES: u64 = 1 << 30;

const FACE_JPG: &[u8] = include_bytes!("assets/face.jpg");
const FACE_PNG: &[u8] = include_bytes!("assets/face.png");
const FACE_WEBP: &[u8] = include_bytes!("assets/face.webp");
const PAGE_HTML: &[u8] = b"<!DOCTYPE html>\n<html><head><title>Photo gallery</title></head>\n\
<body><h1>Photo gallery</h1><p>This is a web page about a picture, not the picture.</p></body></html>\n";
const DOC_PDF: &[u8] = b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n\
2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n\
3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 200 200]>>endobj\n\
trailer<</Root 1 0 R>>\n%%EOF\n";
const NOT_FOUND_HTML: &[u8] =
    b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head><body><h1>Not Found</h1></body></html>\n";

/// `GET|HEAD /media/<name>`.
pub(super) async fn serve(
    State(sim): State<Arc<Shared>>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    sim.lock().stats.media.requests += 1;
    let (content, content_type) = match name.as_str() {
        "video.mp4" => match video_content(&query) {
            Ok(content) => (content, "video/mp4"),
            Err(message) => {
                return (
                    StatusCode::BAD_REQUEST,
                    [(CONTENT_TYPE, "text/plain")],
                    message,
                )
                    .into_response();
            }
        },
        "face.jpg" => (Content::bytes(FACE_JPG), "image/jpeg"),
        "face.png" => (Content::bytes(FACE_PNG), "image/png"),
        "face.webp" => (Content::bytes(FACE_WEBP), "image/webp"),
        "page.html" => (Content::bytes(PAGE_HTML), "text/html; charset=utf-8"),
        "doc.pdf" => (Content::bytes(DOC_PDF), "application/pdf"),
        _ => {
            let mut response = respond(
                &sim,
                &method,
                Arc::new(Content::bytes(NOT_FOUND_HTML)),
                0,
                None,
            );
            *response.status_mut() = StatusCode::NOT_FOUND;
            set(&mut response, CONTENT_TYPE, "text/html; charset=utf-8");
            return response;
        }
    };
    let length = content.len();
    let range = headers
        .get(RANGE)
        .and_then(|value| value.to_str().ok())
        .and_then(parse_range);
    let (start, end, partial) = match range {
        None => (0, length, false),
        Some((first, last)) => {
            let last = last.map_or(length.saturating_sub(1), |last| {
                last.min(length.saturating_sub(1))
            });
            if first >= length || last < first {
                let mut response = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
                set(&mut response, CONTENT_RANGE, &format!("bytes */{length}"));
                return response;
            }
            (first, last + 1, true)
        }
    };
    let mut response = respond(&sim, &method, Arc::new(content), start, Some(end));
    set(&mut response, CONTENT_TYPE, content_type);
    set(&mut response, ACCEPT_RANGES, "bytes");
    if partial {
        sim.lock().stats.media.partial += 1;
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        set(
            &mut response,
            CONTENT_RANGE,
            &format!("bytes {start}-{}/{length}", end - 1),
        );
    }
    response
}

/// A 200 with `content[start..end]` (to its end when `end` is `None`), the body empty for HEAD.
fn respond(
    sim: &Arc<Shared>,
    method: &Method,
    content: Arc<Content>,
    start: u64,
    end: Option<u64>,
) -> Response {
    let end = end.unwrap_or(content.len());
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        let reader = ContentReader {
            content,
            position: start,
            end,
            sim: sim.clone(),
        };
        Body::from_stream(ReaderStream::with_capacity(reader, 16 * 1024))
    };
    let mut response = Response::new(body);
    set(&mut response, CONTENT_LENGTH, &(end - start).to_string());
    response
}

/// The bytes of a served file: `head`, then `zeros` zero bytes, then `tail`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content {
    head: Vec<u8>,
    zeros: u64,
    tail: Vec<u8>,
}

impl Content {
    fn bytes(bytes: &[u8]) -> Content {
        Content {
            head: bytes.to_vec(),
            zeros: 0,
            tail: Vec::new(),
        }
    }

    pub fn len(&self) -> u64 {
        self.head.len() as u64 + self.zeros + self.tail.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copy the bytes from `position` into `out` (as many as fit and exist); how many.
    pub fn read_at(&self, position: u64, out: &mut [u8]) -> usize {
        let head = self.head.len() as u64;
        let tail_start = head + self.zeros;
        let mut written = 0;
        let mut position = position;
        while written < out.len() && position < self.len() {
            let rest = &mut out[written..];
            let n = if position < head {
                let from = &self.head[position as usize..];
                let n = from.len().min(rest.len());
                rest[..n].copy_from_slice(&from[..n]);
                n
            } else if position < tail_start {
                let n = ((tail_start - position) as usize).min(rest.len());
                rest[..n].fill(0);
                n
            } else {
                let from = &self.tail[(position - tail_start) as usize..];
                let n = from.len().min(rest.len());
                rest[..n].copy_from_slice(&from[..n]);
                n
            };
            written += n;
            position += n as u64;
        }
        written
    }

    /// The whole file in memory (for tests of small files).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut bytes = vec![0; usize::try_from(self.len()).unwrap_or(usize::MAX)];
        self.read_at(0, &mut bytes);
        bytes
    }
}

/// Where the `moov` box sits in a generated video.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `ftyp`, `moov`, `mdat` ("fast start").
    MoovFirst,
    /// `ftyp`, `mdat`, `moov` (what a camera or a plain encode writes).
    MoovLast,
}

/// An MP4 file whose `mvhd` says `seconds`, padded by its `mdat` to `size` bytes (or as small
/// as the boxes allow).
pub fn mp4_video(seconds: f64, layout: Layout, size: u64) -> Content {
    let mut ftyp = Vec::new();
    Ftyp {
        major_brand: FourCC::new(b"isom"),
        minor_version: 512,
        compatible_brands: vec![
            FourCC::new(b"isom"),
            FourCC::new(b"iso2"),
            FourCC::new(b"mp41"),
        ],
    }
    .encode(&mut ftyp)
    .expect("an ftyp box encodes");
    let mut moov = Vec::new();
    Moov {
        mvhd: Mvhd {
            timescale: 1000,
            duration: (seconds * 1000.0).round() as u64,
            ..Mvhd::default()
        },
        ..Moov::default()
    }
    .encode(&mut moov)
    .expect("a moov box encodes");
    let boxes = (ftyp.len() + moov.len()) as u64;
    // The mdat header is 8 bytes, or 16 when its size needs 64 bits.
    let small_padding = size.saturating_sub(boxes + 8);
    let padding = if small_padding + 8 > u64::from(u32::MAX) {
        size.saturating_sub(boxes + 16)
    } else {
        small_padding
    };
    let mut mdat_header = Vec::new();
    Header {
        kind: FourCC::new(b"mdat"),
        size: Some(padding as usize),
    }
    .encode(&mut mdat_header)
    .expect("an mdat header encodes");
    match layout {
        Layout::MoovFirst => {
            let mut head = ftyp;
            head.extend(moov);
            head.extend(mdat_header);
            Content {
                head,
                zeros: padding,
                tail: Vec::new(),
            }
        }
        Layout::MoovLast => {
            let mut head = ftyp;
            head.extend(mdat_header);
            Content {
                head,
                zeros: padding,
                tail: moov,
            }
        }
    }
}

fn video_content(query: &HashMap<String, String>) -> Result<Content, String> {
    let seconds = match query.get("duration") {
        None => 10.0,
        Some(text) => text
            .parse::<f64>()
            .ok()
            .filter(|seconds| seconds.is_finite() && (0.0..=1e6).contains(seconds))
            .ok_or_else(|| {
                format!("duration={text} is not a number of seconds between 0 and 1000000")
            })?,
    };
    let layout = match query.get("layout").map(String::as_str) {
        None | Some("start") => Layout::MoovFirst,
        Some("end") => Layout::MoovLast,
        Some(other) => return Err(format!("layout={other} is not start or end")),
    };
    let size = match query.get("size") {
        None => DEFAULT_VIDEO_BYTES,
        Some(text) => text
            .parse::<u64>()
            .ok()
            .filter(|size| *size <= MAX_VIDEO_BYTES)
            .ok_or_else(|| {
                format!("size={text} is not a number of bytes up to {MAX_VIDEO_BYTES}")
            })?,
    };
    Ok(mp4_video(seconds, layout, size))
}

/// Streams `content[position..end]`, counting what it hands to the connection.
struct ContentReader {
    content: Arc<Content>,
    position: u64,
    end: u64,
    sim: Arc<Shared>,
}

impl AsyncRead for ContentReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let want = (self.end - self.position).min(buffer.remaining() as u64) as usize;
        if want == 0 {
            return Poll::Ready(Ok(()));
        }
        let out = buffer.initialize_unfilled_to(want);
        let n = self.content.read_at(self.position, out);
        buffer.advance(n);
        self.position += n as u64;
        self.sim.lock().stats.media.bytes += n as u64;
        Poll::Ready(Ok(()))
    }
}

fn set(response: &mut Response, name: axum::http::HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().insert(name, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_reads_across_its_parts() {
        let content = Content {
            head: vec![1, 2],
            zeros: 3,
            tail: vec![9],
        };
        assert_eq!(content.to_vec(), [1, 2, 0, 0, 0, 9]);
        let mut out = [7; 4];
        assert_eq!(content.read_at(1, &mut out), 4);
        assert_eq!(out, [2, 0, 0, 0]);
        assert_eq!(content.read_at(5, &mut out), 1);
        assert_eq!(content.read_at(6, &mut out), 0);
    }

    #[test]
    fn videos_have_the_asked_size_and_layout() {
        for layout in [Layout::MoovFirst, Layout::MoovLast] {
            let video = mp4_video(12.5, layout, 100_000);
            assert_eq!(video.len(), 100_000);
            let bytes = video.to_vec();
            assert_eq!(&bytes[4..8], b"ftyp");
            let moov_at = bytes.windows(4).position(|w| w == b"moov").unwrap() - 4;
            match layout {
                Layout::MoovFirst => assert!(moov_at < 100),
                Layout::MoovLast => assert!(moov_at > 99_000),
            }
        }
        // Smaller than its boxes: as small as they allow, still well formed.
        let tiny = mp4_video(5.0, Layout::MoovLast, 0);
        assert!(tiny.len() > 16 && tiny.len() < 200);
        // Over 4 GiB of padding takes a 64-bit mdat size.
        let huge = mp4_video(5.0, Layout::MoovFirst, 5 << 30);
        assert_eq!(huge.len(), 5 << 30);
    }
}
