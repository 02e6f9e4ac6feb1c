//! Downloading a rendered video to `<out>/<id>.mp4`, resumably and without ever writing an
//! error body into a video.
//!
//! The bytes go to `<id>.mp4.part`; an interrupted transfer resumes from the part file's length
//! with `Range` (and `If-Range` when the ETag is known). The total is checked against the
//! server's length, the file is fsynced, renamed into place, and the folder fsynced, so a
//! `<id>.mp4` that exists is complete.
//!
//! The network task only receives: the chunks go through a short channel to a blocking thread
//! that hashes and appends them, so hashing and disk writes overlap the network instead of
//! pausing it.

use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, ETAG, IF_RANGE, RANGE};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::job::{JobId, Output, hex};

/// What a download needs to know.
#[derive(Debug, Clone)]
pub struct DownloadRequest {
    pub job_id: JobId,
    pub url: String,
    pub out_dir: PathBuf,
    /// Largest file accepted.
    pub max_bytes: u64,
    /// Longest wait for the next chunk before the transfer counts as stalled.
    pub stall_timeout: Duration,
}

/// Why a download did not finish.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DownloadError {
    /// 403/404/410: the signed URL expired or was revoked; ask task detail for a fresh one.
    #[error("output link expired or refused (HTTP {status})")]
    LinkExpired { status: u16 },
    /// Asked for a fresh link, the service offered none (a status other than completed, an
    /// empty URL): ask again later.
    #[error("{detail}")]
    NoLink { detail: String },
    /// Network trouble, a truncated body, a 5xx, before any byte of this attempt arrived: try
    /// again after a pause (the part file is kept).
    #[error("download interrupted: {detail}")]
    Transient { detail: String },
    /// The transfer made progress, then broke: resume from the part file at once. Not a
    /// failure of the job: every such attempt leaves more of the file on disk.
    #[error("download cut short: {detail}")]
    Cut { detail: String },
    /// The local disk refused (read-only folder, disk full, ...): the job cannot progress until
    /// a person fixes it.
    #[error("cannot write {path}: {detail}")]
    Local { path: String, detail: String },
    /// The server's answer can never become a valid video (too large, not a video URL, ...).
    #[error("{detail}")]
    Refused { detail: String },
}

/// Chunks received but not yet written. Each is one read from the connection (hyper reads a few
/// hundred KiB at most), so this bounds the memory a download holds, whatever the file's size.
const QUEUED_CHUNKS: usize = 4;

/// Small chunks are gathered up to this size before a write; larger ones are written as they
/// are, without a copy.
const WRITE_BUFFER: usize = 64 * 1024;

/// The part file's writeback is started every this many bytes, so that the fsync before the
/// rename finds little left to write.
const WRITEBACK_EVERY: u64 = 8 << 20;

/// The final file's path for a job id (ids are validated by the manifest: no separators).
pub fn output_path(out_dir: &Path, job_id: &str) -> PathBuf {
    out_dir.join(format!("{job_id}.mp4"))
}

/// The part file's path for a job id.
pub fn part_path(out_dir: &Path, job_id: &str) -> PathBuf {
    out_dir.join(format!("{job_id}.mp4.part"))
}

/// Download `request.url` into `<out_dir>/<job_id>.mp4`, resuming a part file if one exists.
/// `etag` is the validator of the part file's bytes, if known; it is updated from the answer so
/// that a later resume can send `If-Range`.
pub async fn download(
    http: &reqwest::Client,
    request: &DownloadRequest,
    etag: &mut Option<String>,
) -> Result<Output, DownloadError> {
    let url = output_url(&request.url)?;
    let part = part_path(&request.out_dir, request.job_id.as_str());
    let final_path = output_path(&request.out_dir, request.job_id.as_str());
    let local = |e: std::io::Error, path: &Path| DownloadError::Local {
        path: path.display().to_string(),
        detail: e.to_string(),
    };
    tokio::fs::create_dir_all(&request.out_dir)
        .await
        .map_err(|e| local(e, &request.out_dir))?;

    let mut offset = match tokio::fs::metadata(&part).await {
        Ok(meta) => meta.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(local(e, &part)),
    };

    let answer = match open(http, url, offset, etag.as_deref(), request.max_bytes).await? {
        Opened::Answer(answer) => answer,
        Opened::ResumedElsewhere { start } => {
            // Not the bytes we asked for: start over rather than splice.
            tokio::fs::remove_file(&part).await.ok();
            return Err(DownloadError::Transient {
                detail: format!("server resumed at byte {start}, expected {offset}"),
            });
        }
        Opened::RangeNotSatisfiable => {
            // The part file is longer than the resource: it is not this file. Start over.
            tokio::fs::remove_file(&part)
                .await
                .map_err(|e| local(e, &part))?;
            return Err(DownloadError::Transient {
                detail: "range not satisfiable; restarting the download".into(),
            });
        }
    };
    if answer.etag.is_some() {
        *etag = answer.etag;
    }
    // The server sends the whole file when there is no part, or when it ignored the range.
    offset = answer.start;
    let total = answer.total;
    let mut response = answer.response;

    // Receive here; hash and append on a blocking thread (`write_part`).
    let (sender, chunks) = mpsc::channel(QUEUED_CHUNKS);
    let writer = {
        let part = part.clone();
        tokio::task::spawn_blocking(move || write_part(&part, offset, total, chunks))
    };
    let mut received = offset;
    let network = loop {
        let chunk = match tokio::time::timeout(request.stall_timeout, response.chunk()).await {
            Ok(Ok(Some(chunk))) => chunk,
            Ok(Ok(None)) => break Ok(()),
            Ok(Err(e)) => break Err(transient(&e)),
            Err(_) => {
                break Err(DownloadError::Transient {
                    detail: "download stalled".into(),
                });
            }
        };
        received += chunk.len() as u64;
        if received > total {
            break Err(DownloadError::Transient {
                detail: format!("server sent more than the announced {total} bytes"),
            });
        }
        if sender.send(chunk).await.is_err() {
            // The writer stopped on a disk error, which its result reports.
            break Ok(());
        }
    };
    // Closing the channel lets the writer finish what is queued: what arrived stays in the part
    // file for the next attempt to resume from.
    drop(sender);
    let written = match writer.await {
        Ok(written) => written.map_err(|e| local(e, &part)),
        Err(e) => Err(local(std::io::Error::other(e), &part)),
    };
    if received > total {
        // Not the file that was announced: start over rather than resume.
        tokio::fs::remove_file(&part).await.ok();
    }
    let written = written?;
    // Bytes kept in the part file for the next attempt (not when it was removed above).
    let progressed = written.bytes > offset && received <= total;
    network.map_err(|error| match error {
        DownloadError::Transient { detail } if progressed => DownloadError::Cut { detail },
        other => other,
    })?;
    if written.bytes != total {
        let detail = format!("connection closed after {} of {total} bytes", written.bytes);
        return Err(if progressed {
            DownloadError::Cut { detail }
        } else {
            DownloadError::Transient { detail }
        });
    }
    tokio::fs::rename(&part, &final_path)
        .await
        .map_err(|e| local(e, &final_path))?;
    sync_dir(&request.out_dir)
        .await
        .map_err(|e| local(e, &request.out_dir))?;
    crate::crash::point(crate::crash::DOWNLOAD_RENAMED);
    let output = Output {
        path: final_path.display().to_string(),
        bytes: total,
        sha256: hex(&written.sha256.finalize()),
    };
    Ok(output)
}

/// An output link, checked: a URL, and http(s) only.
pub(crate) fn output_url(text: &str) -> Result<reqwest::Url, DownloadError> {
    let url = reqwest::Url::parse(text).map_err(|e| DownloadError::Refused {
        detail: format!("output URL is not a URL: {e}"),
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(DownloadError::Refused {
            detail: format!("output URL scheme {:?} is not http(s)", url.scheme()),
        });
    }
    Ok(url)
}

/// An output link's answer, its body not read yet.
pub(crate) struct OutputAnswer {
    pub response: reqwest::Response,
    /// The offset of the body's first byte in the output (0 when the server sent it whole).
    pub start: u64,
    /// The output's whole length, within the limit.
    pub total: u64,
    pub etag: Option<String>,
}

/// What asking for an output from a byte offset gave.
pub(crate) enum Opened {
    Answer(OutputAnswer),
    /// A 206 from another offset than the one asked for: not the bytes planned.
    ResumedElsewhere {
        start: u64,
    },
    /// The output is shorter than the offset asked for: it is not the output planned.
    RangeNotSatisfiable,
}

/// GET an output link from byte `from` (0: the whole output; `Range` and `If-Range` else) and
/// judge the answer's status and length, as both a download to a folder and an upload read
/// it. A server that ignores the range answers the whole output: `OutputAnswer::start` says
/// which.
pub(crate) async fn open(
    http: &reqwest::Client,
    url: reqwest::Url,
    from: u64,
    if_range: Option<&str>,
    max_bytes: u64,
) -> Result<Opened, DownloadError> {
    let mut request = http.get(url).timeout(Duration::from_secs(24 * 3600));
    if from > 0 {
        request = request.header(RANGE, format!("bytes={from}-"));
        if let Some(etag) = if_range {
            request = request.header(IF_RANGE, etag);
        }
    }
    let response = request.send().await.map_err(|e| {
        if e.is_redirect() {
            // A redirect the client refuses (another scheme, too many) will not change.
            DownloadError::Refused {
                detail: format!("output download: {}", e.without_url_string()),
            }
        } else {
            transient(&e)
        }
    })?;
    let etag = response
        .headers()
        .get(ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (start, total) = match response.status() {
        StatusCode::OK => (0, header_u64(&response, CONTENT_LENGTH)),
        StatusCode::PARTIAL_CONTENT if from > 0 => {
            let (start, total) =
                content_range(&response).ok_or_else(|| DownloadError::Transient {
                    detail: "206 without a usable Content-Range".into(),
                })?;
            if start != from {
                return Ok(Opened::ResumedElsewhere { start });
            }
            (start, total)
        }
        StatusCode::RANGE_NOT_SATISFIABLE => return Ok(Opened::RangeNotSatisfiable),
        other => return Err(unusable_status(other)),
    };
    let Some(total) = total else {
        return Err(DownloadError::Transient {
            detail: "the server did not say how long the file is".into(),
        });
    };
    if total > max_bytes {
        return Err(DownloadError::Refused {
            detail: format!(
                "output is {total} bytes, more than the limit of {max_bytes} (--max-download-bytes)"
            ),
        });
    }
    Ok(Opened::Answer(OutputAnswer {
        response,
        start,
        total,
        etag,
    }))
}

/// What the writer hands back once the channel closes.
struct Written {
    /// The part file's length.
    bytes: u64,
    /// SHA-256 of the part file's bytes, from the first.
    sha256: Sha256,
}

/// The disk side of a download, on a blocking thread: hash the `offset` bytes already in the
/// part file (or create it), then hash and append each chunk until the channel closes. A
/// complete file (`total` bytes) is fsynced and a failed fsync is an error; an incomplete one
/// is fsynced at best effort, for the next attempt to resume from.
fn write_part(
    part: &Path,
    offset: u64,
    total: u64,
    mut chunks: mpsc::Receiver<Bytes>,
) -> std::io::Result<Written> {
    let mut sha256 = Sha256::new();
    let file = if offset > 0 {
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .open(part)?;
        let mut buffer = vec![0u8; 256 * 1024];
        loop {
            let n = file.read(&mut buffer)?;
            if n == 0 {
                break;
            }
            sha256.update(&buffer[..n]);
        }
        file
    } else {
        std::fs::File::create(part)?
    };
    let mut file = BufWriter::with_capacity(WRITE_BUFFER, file);
    let mut written = offset;
    let mut writeback_from = offset;
    while let Some(chunk) = chunks.blocking_recv() {
        sha256.update(&chunk);
        file.write_all(&chunk)?;
        let before = written;
        written += chunk.len() as u64;
        if written * 2 >= total && before * 2 < total {
            file.flush()?;
            crate::crash::point(crate::crash::DOWNLOAD_MIDWAY);
        }
        if written - writeback_from >= WRITEBACK_EVERY {
            start_writeback(file.get_ref(), writeback_from);
            writeback_from = written;
        }
    }
    let file = file.into_inner().map_err(|e| e.into_error())?;
    if written == total {
        file.sync_all()?;
    } else {
        file.sync_data().ok();
    }
    Ok(Written {
        bytes: written,
        sha256,
    })
}

/// Ask the kernel to start writing the file's dirty pages from `from` on, without waiting.
/// Only a hint: the fsync before the rename still writes and checks everything, and reports
/// any writeback error.
fn start_writeback(file: &std::fs::File, from: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: a plain syscall on a descriptor this function borrows; no memory is passed.
        unsafe {
            libc::sync_file_range(
                file.as_raw_fd(),
                from as libc::off64_t,
                0,
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, from);
}

/// What an answer other than 200, 206 or 416 to an output link means. Shared with the upload
/// of outputs to object storage, which reads the same links.
pub(crate) fn unusable_status(status: StatusCode) -> DownloadError {
    match status {
        StatusCode::FORBIDDEN | StatusCode::NOT_FOUND | StatusCode::GONE => {
            DownloadError::LinkExpired {
                status: status.as_u16(),
            }
        }
        other if other.is_server_error() || other == StatusCode::TOO_MANY_REQUESTS => {
            DownloadError::Transient {
                detail: format!("HTTP {}", other.as_u16()),
            }
        }
        other => DownloadError::Refused {
            detail: format!("output download answered HTTP {}", other.as_u16()),
        },
    }
}

pub(crate) fn transient(error: &reqwest::Error) -> DownloadError {
    // reqwest's Display includes the URL, whose query carries the signature: strip it.
    DownloadError::Transient {
        detail: error.without_url_string(),
    }
}

pub(crate) trait WithoutUrl {
    fn without_url_string(&self) -> String;
}

impl WithoutUrl for reqwest::Error {
    fn without_url_string(&self) -> String {
        let mut error = std::error::Error::source(self)
            .map(|source| source.to_string())
            .unwrap_or_default();
        let kind = if self.is_timeout() {
            "timed out"
        } else if self.is_connect() {
            "could not connect"
        } else if self.is_body() || self.is_decode() {
            "body interrupted"
        } else {
            "request failed"
        };
        if error.is_empty() {
            error = kind.to_string();
        } else {
            error = format!("{kind}: {error}");
        }
        error
    }
}

pub(crate) fn header_u64(
    response: &reqwest::Response,
    name: reqwest::header::HeaderName,
) -> Option<u64> {
    response
        .headers()
        .get(name)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// `Content-Range: bytes START-END/TOTAL` → (START, TOTAL).
pub(crate) fn content_range(response: &reqwest::Response) -> Option<(u64, Option<u64>)> {
    let value = response.headers().get(CONTENT_RANGE)?.to_str().ok()?;
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, _end) = range.split_once('-')?;
    Some((start.trim().parse().ok()?, total.trim().parse().ok()))
}

/// Make a rename durable: fsync the folder that holds it.
async fn sync_dir(dir: &Path) -> std::io::Result<()> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || std::fs::File::open(&dir)?.sync_all())
        .await
        .map_err(std::io::Error::other)?
}
