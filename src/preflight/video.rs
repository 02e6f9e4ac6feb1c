//! The video check: one URL, a few small Range requests, a verdict.
//!
//! The first request reads the file's first [`PreflightConfig::read_bytes`]. If they are an
//! MP4/MOV file, the top-level boxes are walked (`boxes.rs`); when the `moov` box is not in
//! what was read, the next request starts exactly at the next box header the walk needs (the
//! end of an `mdat`, typically), and once the `moov` header is found the `moov` is fetched
//! from there, exactly, until its `mvhd` is in hand (at most
//! [`PreflightConfig::max_moov_bytes`]). The file's length comes from
//! `Content-Range`. A server that ignores Range and sends the whole file is read only up to
//! the first limit; then the connection is dropped.

use super::PreflightConfig;
use super::boxes::{self, BoxHeader, Walk};
use super::fetch::{self, Answer, Piece};
use super::sniff::{self, Sniffed};
use super::verdict::{MediaKind, Spent, Verdict};

/// Check one video URL.
pub(crate) async fn check_video(
    client: &reqwest::Client,
    config: &PreflightConfig,
    url: &str,
) -> (Verdict, Spent) {
    let mut spent = Spent::default();
    let verdict = VideoCheck {
        client,
        config,
        url,
        spent: &mut spent,
    }
    .run()
    .await;
    (verdict, spent)
}

struct VideoCheck<'a> {
    client: &'a reqwest::Client,
    config: &'a PreflightConfig,
    url: &'a str,
    spent: &'a mut Spent,
}

/// Why reading stopped before a verdict on the content.
type Stop = Verdict;

impl VideoCheck<'_> {
    async fn run(mut self) -> Verdict {
        let first = match self.fetch(0, self.config.read_bytes).await {
            Ok(piece) => piece,
            Err(verdict) => return verdict,
        };
        match sniff::sniff(&first.body) {
            Sniffed::IsoMedia => {}
            Sniffed::Empty => return Verdict::invalid("video link is an empty file"),
            Sniffed::FaceImage(name) => {
                return Verdict::invalid(format!("video link is a {name}, not a video"));
            }
            Sniffed::Other(name) => {
                return Verdict::invalid(format!("video link is {name}, not a video"));
            }
            Sniffed::OtherVideo(name) => {
                return Verdict::undecided(format!(
                    "video is {name}; only the duration of MP4 and MOV files is checked"
                ));
            }
            Sniffed::Unknown => {
                return Verdict::undecided(format!(
                    "video link's content is not a recognised video format (it starts with {})",
                    sniff::first_bytes_hex(&first.body)
                ));
            }
        }
        let total = first.total.or_else(|| {
            first
                .complete
                .then_some(first.start + first.body.len() as u64)
        });
        let whole = first.whole;
        let mut window = first;
        let mut offset = 0;
        loop {
            match boxes::walk(&window.body, window.start, offset, total) {
                Walk::Moov(header) => return self.read_moov(header, window, total).await,
                Walk::NoMoov => return unreadable("the file has no moov box"),
                Walk::Malformed(reason) => return unreadable(&reason),
                Walk::NeedAt(at) => {
                    if whole {
                        return self.range_ignored();
                    }
                    let len = total.map_or(self.config.read_bytes, |total| {
                        total.saturating_sub(at).min(self.config.read_bytes)
                    });
                    window = match self.fetch_more(at, len).await {
                        Ok(piece) => piece,
                        Err(stop) => return stop,
                    };
                    if window.body.is_empty() {
                        return unreadable(&format!("the server sent nothing from offset {at}"));
                    }
                    offset = at;
                }
            }
        }
    }

    /// Read the moov box, part of which may be in `window`, and judge its duration. The
    /// `mvhd` comes first in every muxer's output, so a long `moov` (an hour of video has
    /// megabytes of sample tables) is read in two steps: up to `read_bytes` of it, and the
    /// rest only if the `mvhd` was not in that.
    async fn read_moov(&mut self, header: BoxHeader, window: Piece, total: Option<u64>) -> Verdict {
        let moov_len = header
            .end(total)
            .map_or(u64::MAX, |end| end - header.offset);
        let want = moov_len.min(self.config.max_moov_bytes);
        let from = (header.offset - window.start) as usize;
        let mut moov = window.body[from..].to_vec();
        moov.truncate(usize::try_from(want).unwrap_or(usize::MAX));
        let mut reads = 0;
        while (moov.len() as u64) < want {
            if let Ok(duration) = boxes::movie_duration(&moov, &header) {
                return self.judge(duration.seconds());
            }
            if window.whole {
                return self.range_ignored();
            }
            let at = header.offset + moov.len() as u64;
            let rest = want - moov.len() as u64;
            let len = if reads == 0 {
                rest.min(self.config.read_bytes)
            } else {
                rest
            };
            let piece = match self.fetch_more(at, len).await {
                Ok(piece) => piece,
                Err(stop) => return stop,
            };
            if piece.body.is_empty() {
                break;
            }
            moov.extend_from_slice(&piece.body);
            reads += 1;
        }
        match boxes::movie_duration(&moov, &header) {
            Ok(duration) => self.judge(duration.seconds()),
            Err(reason) => unreadable(&reason),
        }
    }

    fn judge(&self, seconds: f64) -> Verdict {
        let accepted = &self.config.video_seconds;
        let (min, max) = (*accepted.start(), *accepted.end());
        if seconds < min - DURATION_TOLERANCE || seconds > max + DURATION_TOLERANCE {
            Verdict::invalid(format!(
                "video is {seconds:.1} s long; the service accepts {min}–{max} s"
            ))
        } else {
            Verdict::valid(format!("MP4/MOV video, {seconds:.1} s"))
        }
    }

    fn range_ignored(&self) -> Verdict {
        Verdict::undecided(format!(
            "video link's server ignores Range requests and the moov box is not in the first {} KiB, so its duration was not read",
            self.config.read_bytes / 1024
        ))
    }

    /// A request after the first: refused once the request budget is spent.
    async fn fetch_more(&mut self, start: u64, len: u64) -> Result<Piece, Stop> {
        if self.spent.requests >= self.config.max_requests_per_video {
            return Err(unreadable(&format!(
                "the moov box was not reached within {} requests",
                self.config.max_requests_per_video
            )));
        }
        let piece = self.fetch(start, len).await?;
        if piece.whole {
            return Err(self.range_ignored());
        }
        Ok(piece)
    }

    async fn fetch(&mut self, start: u64, len: u64) -> Result<Piece, Stop> {
        match fetch::get_range(self.client, self.url, start, len, self.spent).await {
            Ok(Answer::Piece(piece)) => Ok(piece),
            Ok(Answer::Status(status)) => Err(fetch::status_verdict(MediaKind::Video, status)),
            Ok(Answer::WrongRange(what)) => Err(Verdict::undecided(format!(
                "video link's server answered a range request oddly ({what}), so its duration was not read"
            ))),
            Err(failure) => Err(Verdict::undecided(format!(
                "video link could not be checked: {failure}"
            ))),
        }
    }
}

/// How far outside the accepted range a duration must be to condemn a video. Containers often
/// record a few tens of milliseconds more than the nominal length (encoder delay, audio
/// priming), and the service's bounds are described as approximate: preflight only stops what
/// is clearly out.
pub const DURATION_TOLERANCE: f64 = 0.05;

fn unreadable(reason: &str) -> Verdict {
    Verdict::undecided(format!("video container could not be read: {reason}"))
}
