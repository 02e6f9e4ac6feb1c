//! Reading an output link for an upload: one GET (from a byte offset with `Range`/`If-Range`
//! when a part is read again), its length checked against the answer's, each chunk awaited at
//! most a stall timeout. The request and the judgement of its answer are the download's own
//! (`download::open`), so the run loop handles both alike. Owns no storage and no hashing.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;

use crate::download::{self, DownloadError, output_url, transient};

/// The output link of a finished job and the limits of reading it.
#[derive(Clone)]
pub struct OutputSource {
    /// The signed output URL (its query is a credential: `Debug` leaves it out).
    pub url: String,
    /// Largest output accepted (`--max-download-bytes`).
    pub max_bytes: u64,
    /// Longest wait for the next chunk before the transfer counts as stalled.
    pub stall_timeout: Duration,
}

impl fmt::Debug for OutputSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = match self.url.split_once('?') {
            Some((base, _)) => format!("{base}?[query redacted]"),
            None => self.url.clone(),
        };
        f.debug_struct("OutputSource")
            .field("url", &shown)
            .field("max_bytes", &self.max_bytes)
            .field("stall_timeout", &self.stall_timeout)
            .finish()
    }
}

/// An answer whose body is being read.
pub(crate) struct Body {
    response: reqwest::Response,
    stall_timeout: Duration,
    /// The offset of the body's first byte in the output.
    pub start: u64,
    /// The output's whole length.
    pub total: u64,
    pub etag: Option<String>,
    received: u64,
}

/// What opening the link gave.
pub(crate) enum Opened {
    Body(Body),
    /// The output is shorter than the offset asked for: it is not the output planned.
    RangeNotSatisfiable,
}

/// GET the link from byte `from` (0: the whole output). A server that ignores the range answers
/// the whole output: `Body::start` says which.
pub(crate) async fn open(
    http: &reqwest::Client,
    source: &OutputSource,
    from: u64,
    if_range: Option<&str>,
) -> Result<Opened, DownloadError> {
    let url = output_url(&source.url)?;
    let answer = match download::open(http, url, from, if_range, source.max_bytes).await? {
        download::Opened::Answer(answer) => answer,
        download::Opened::ResumedElsewhere { start } => {
            return Err(DownloadError::Transient {
                detail: format!("server resumed at byte {start}, expected {from}"),
            });
        }
        download::Opened::RangeNotSatisfiable => return Ok(Opened::RangeNotSatisfiable),
    };
    let total = answer.total;
    if total == 0 {
        return Err(DownloadError::Refused {
            detail: "the output is empty".into(),
        });
    }
    Ok(Opened::Body(Body {
        response: answer.response,
        stall_timeout: source.stall_timeout,
        start: answer.start,
        total,
        etag: answer.etag,
        received: answer.start,
    }))
}

impl Body {
    /// The next chunk, or `None` once the whole output has arrived. A body that ends early,
    /// stalls, or sends more than announced is a transient error.
    pub(crate) async fn chunk(&mut self) -> Result<Option<Bytes>, DownloadError> {
        let next = tokio::time::timeout(self.stall_timeout, self.response.chunk()).await;
        match next {
            Ok(Ok(Some(chunk))) => {
                self.received += chunk.len() as u64;
                if self.received > self.total {
                    return Err(DownloadError::Transient {
                        detail: format!("server sent more than the announced {} bytes", self.total),
                    });
                }
                Ok(Some(chunk))
            }
            Ok(Ok(None)) if self.received == self.total => Ok(None),
            Ok(Ok(None)) => Err(DownloadError::Transient {
                detail: format!(
                    "connection closed after {} of {} bytes",
                    self.received, self.total
                ),
            }),
            Ok(Err(e)) => Err(transient(&e)),
            Err(_) => Err(DownloadError::Transient {
                detail: "download stalled".into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_leaves_the_signature_out() {
        let source = OutputSource {
            url: "https://cdn.example/o.mp4?expires=1&sig=deadbeefsecret".into(),
            max_bytes: 1,
            stall_timeout: Duration::from_secs(1),
        };
        let debug = format!("{source:?}");
        assert!(!debug.contains("deadbeefsecret"), "{debug}");
        assert!(debug.contains("https://cdn.example/o.mp4?[query redacted]"));
    }
}
