//! The face check: one small Range request for the first bytes, and whether they are a JPEG,
//! PNG or WebP image. Anything else that answers is named in the reason.

use super::PreflightConfig;
use super::fetch::{self, Answer};
use super::sniff::{self, Sniffed};
use super::verdict::{MediaKind, Spent, Verdict};

/// Check one face URL.
pub(crate) async fn check_face(
    client: &reqwest::Client,
    config: &PreflightConfig,
    url: &str,
) -> (Verdict, Spent) {
    let mut spent = Spent::default();
    let answer = fetch::get_range(client, url, 0, config.face_bytes, &mut spent).await;
    let verdict = match answer {
        Ok(Answer::Piece(piece)) => judge(&piece.body),
        Ok(Answer::Status(status)) => fetch::status_verdict(MediaKind::Face, status),
        Ok(Answer::WrongRange(what)) => Verdict::undecided(format!(
            "face link's server answered a range request oddly ({what})"
        )),
        Err(failure) => Verdict::undecided(format!("face link could not be checked: {failure}")),
    };
    (verdict, spent)
}

/// The verdict on a face's first bytes.
pub(crate) fn judge(first_bytes: &[u8]) -> Verdict {
    match sniff::sniff(first_bytes) {
        Sniffed::FaceImage(name) => Verdict::valid(name),
        Sniffed::Empty => Verdict::invalid("face link is an empty file"),
        Sniffed::IsoMedia => Verdict::invalid("face link is an MP4/MOV video, not an image"),
        Sniffed::Other(name) | Sniffed::OtherVideo(name) if name.ends_with(" image") => {
            Verdict::invalid(format!(
                "face link is {name}; the service takes JPEG, PNG or WebP"
            ))
        }
        Sniffed::Other(name) | Sniffed::OtherVideo(name) => {
            Verdict::invalid(format!("face link is {name}, not an image"))
        }
        Sniffed::Unknown => Verdict::invalid(format!(
            "face link is not a JPEG, PNG or WebP image (it starts with {})",
            sniff::first_bytes_hex(first_bytes)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_on_first_bytes() {
        assert_eq!(judge(b"\xff\xd8\xff\xdb"), Verdict::valid("JPEG image"));
        assert_eq!(
            judge(b"<!doctype html><title>Not found</title>"),
            Verdict::invalid("face link is an HTML page, not an image")
        );
        assert_eq!(
            judge(b"%PDF-1.4\n"),
            Verdict::invalid("face link is a PDF document, not an image")
        );
        assert_eq!(
            judge(b"GIF87a\x01\0\x01\0"),
            Verdict::invalid("face link is a GIF image; the service takes JPEG, PNG or WebP")
        );
        assert!(judge(&[0, 0xfe, 3, 4]).is_invalid());
        assert!(judge(b"").is_invalid());
    }
}
