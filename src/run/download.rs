//! Downloading a rendered video to `<out>/<id>.mp4`, resumably and without ever writing an
//! error body into a video.
//!
//! The bytes go to `<id>.mp4.part`; an interrupted transfer resumes from the part file's length
//! with `Range` (and `If-Range` when the ETag is known). The total is checked against the
//! server's length, the file is fsynced, renamed into place, and the folder fsynced, so a
//! `<id>.mp4` that exists is complete.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, ETAG, IF_RANGE, RANGE};
use sha2::{Digest, Sha256};
use tokio::fs::{File, OpenOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};

use crate::job::{Output, hex};

/// What a download needs to know.
#[derive(Debug, Clone)]
pub struct DownloadRequest {
    pub job_id: String,
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
    /// Network trouble, a truncated body, a 5xx: try again (the part file is kept).
    #[error("download interrupted: {detail}")]
    Transient { detail: String },
    /// The local disk refused (read-only folder, disk full, ...): the job cannot progress until
    /// a person fixes it.
    #[error("cannot write {path}: {detail}")]
    Local { path: String, detail: String },
    /// The server's answer can never become a valid video (too large, not a video URL, ...).
    #[error("{detail}")]
    Refused { detail: String },
}

/// Bytes gathered before a write to the part file.
const WRITE_BUFFER: usize = 1 << 20;

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
    let url = reqwest::Url::parse(&request.url).map_err(|e| DownloadError::Refused {
        detail: format!("output URL is not a URL: {e}"),
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(DownloadError::Refused {
            detail: format!("output URL scheme {:?} is not http(s)", url.scheme()),
        });
    }
    let part = part_path(&request.out_dir, &request.job_id);
    let final_path = output_path(&request.out_dir, &request.job_id);
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

    let mut builder = http.get(url).timeout(Duration::from_secs(24 * 3600));
    if offset > 0 {
        builder = builder.header(RANGE, format!("bytes={offset}-"));
        if let Some(etag) = etag.as_deref() {
            builder = builder.header(IF_RANGE, etag);
        }
    }
    let mut response = builder.send().await.map_err(|e| {
        if e.is_redirect() {
            // A redirect the client refuses (another scheme, too many) will not change.
            DownloadError::Refused {
                detail: format!("output download: {}", e.without_url_string()),
            }
        } else {
            transient(&e)
        }
    })?;
    let status = response.status();
    if let Some(value) = response.headers().get(ETAG).and_then(|v| v.to_str().ok()) {
        *etag = Some(value.to_owned());
    }
    let total = match status {
        StatusCode::OK => {
            // The server sends the whole file (no part, or it ignored / refused the range).
            offset = 0;
            header_u64(&response, CONTENT_LENGTH)
        }
        StatusCode::PARTIAL_CONTENT if offset > 0 => {
            let (start, total) =
                content_range(&response).ok_or_else(|| DownloadError::Transient {
                    detail: "206 without a usable Content-Range".into(),
                })?;
            if start != offset {
                // Not the bytes we asked for: start over rather than splice.
                tokio::fs::remove_file(&part).await.ok();
                return Err(DownloadError::Transient {
                    detail: format!("server resumed at byte {start}, expected {offset}"),
                });
            }
            total
        }
        StatusCode::RANGE_NOT_SATISFIABLE => {
            // The part file is longer than the resource: it is not this file. Start over.
            tokio::fs::remove_file(&part)
                .await
                .map_err(|e| local(e, &part))?;
            return Err(DownloadError::Transient {
                detail: "range not satisfiable; restarting the download".into(),
            });
        }
        StatusCode::FORBIDDEN | StatusCode::NOT_FOUND | StatusCode::GONE => {
            return Err(DownloadError::LinkExpired {
                status: status.as_u16(),
            });
        }
        other if other.is_server_error() || other == StatusCode::TOO_MANY_REQUESTS => {
            return Err(DownloadError::Transient {
                detail: format!("HTTP {}", other.as_u16()),
            });
        }
        other => {
            return Err(DownloadError::Refused {
                detail: format!("output download answered HTTP {}", other.as_u16()),
            });
        }
    };
    let Some(total) = total else {
        return Err(DownloadError::Transient {
            detail: "the server did not say how long the file is".into(),
        });
    };
    if total > request.max_bytes {
        return Err(DownloadError::Refused {
            detail: format!(
                "output is {total} bytes, more than the limit of {} (--max-download-bytes)",
                request.max_bytes
            ),
        });
    }

    // Hash what is already on disk, then append the rest.
    let mut hasher = Sha256::new();
    let file = if offset > 0 {
        let mut existing = File::open(&part).await.map_err(|e| local(e, &part))?;
        let mut buffer = vec![0u8; 256 * 1024];
        loop {
            let n = existing
                .read(&mut buffer)
                .await
                .map_err(|e| local(e, &part))?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
        }
        OpenOptions::new()
            .append(true)
            .open(&part)
            .await
            .map_err(|e| local(e, &part))?
    } else {
        File::create(&part).await.map_err(|e| local(e, &part))?
    };
    // Large writes: each write of a tokio file is a trip to the blocking pool.
    let mut file = BufWriter::with_capacity(WRITE_BUFFER, file);

    let mut written = offset;
    loop {
        let chunk = match tokio::time::timeout(request.stall_timeout, response.chunk()).await {
            Ok(Ok(chunk)) => chunk,
            failed => {
                // Keep what arrived: the next attempt resumes from the part file's length.
                file.flush().await.ok();
                return Err(match failed {
                    Err(_) => DownloadError::Transient {
                        detail: "download stalled".into(),
                    },
                    Ok(Err(e)) => transient(&e),
                    Ok(Ok(_)) => unreachable!("handled above"),
                });
            }
        };
        let Some(chunk) = chunk else { break };
        written += chunk.len() as u64;
        if written > total {
            drop(file);
            tokio::fs::remove_file(&part).await.ok();
            return Err(DownloadError::Transient {
                detail: format!("server sent more than the announced {total} bytes"),
            });
        }
        hasher.update(&chunk);
        file.write_all(&chunk).await.map_err(|e| local(e, &part))?;
        if written * 2 >= total && (written - chunk.len() as u64) * 2 < total {
            file.flush().await.map_err(|e| local(e, &part))?;
            crate::crash::point(crate::crash::DOWNLOAD_MIDWAY);
        }
    }
    file.flush().await.map_err(|e| local(e, &part))?;
    if written != total {
        file.get_ref().sync_data().await.ok();
        return Err(DownloadError::Transient {
            detail: format!("connection closed after {written} of {total} bytes"),
        });
    }
    file.get_ref()
        .sync_all()
        .await
        .map_err(|e| local(e, &part))?;
    drop(file);
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
        sha256: hex(&hasher.finalize()),
    };
    Ok(output)
}

fn transient(error: &reqwest::Error) -> DownloadError {
    // reqwest's Display includes the URL, whose query carries the signature: strip it.
    DownloadError::Transient {
        detail: error.without_url_string(),
    }
}

trait WithoutUrl {
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

fn header_u64(response: &reqwest::Response, name: reqwest::header::HeaderName) -> Option<u64> {
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
fn content_range(response: &reqwest::Response) -> Option<(u64, Option<u64>)> {
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
