//! What a response is, judged by its first bytes: an MP4/MOV file for the box walker, one of
//! the three face formats the service takes, another video container, or something else named
//! well enough for a user to see what their link points at ("an HTML page", "a PDF document").
//!
//! The face formats are recognised here by their fixed signatures (JPEG `FF D8 FF`, the
//! 8-byte PNG signature, `RIFF` + `WEBP`), strictly, since they decide validity. Naming
//! everything else uses the `infer` crate (no default features: no dependencies of its own):
//! three magic numbers would have been ten lines, but a useful reason must also tell an HTML
//! or XML error page, a PDF, a GIF, an HEIC photo, a ZIP or a Matroska video apart, and
//! `infer` keeps that table of a hundred-odd signatures maintained. Plain text it does not
//! name is recognised here (a "Not Found" body answered with status 200).

/// What the first bytes of a response are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Sniffed {
    /// Nothing at all: an empty body.
    Empty,
    /// An ISO base media file (MP4, MOV, M4V, 3GP) whose brand is not an image or audio one.
    IsoMedia,
    /// A JPEG, PNG or WebP image, the formats the service takes as a face.
    FaceImage(&'static str),
    /// A video in another container (Matroska, AVI, ...): its name with an article.
    OtherVideo(String),
    /// Anything else recognised: its name with an article ("an HTML page").
    Other(String),
    /// Bytes nothing recognises.
    Unknown,
}

/// Judge a response by its first bytes (a few hundred are plenty).
pub(crate) fn sniff(prefix: &[u8]) -> Sniffed {
    if prefix.is_empty() {
        return Sniffed::Empty;
    }
    if let Some(name) = face_image(prefix) {
        return Sniffed::FaceImage(name);
    }
    let iso_brand = iso_media_brand(prefix);
    if let Some(brand) = iso_brand {
        if !is_image_or_audio_brand(&brand) {
            return Sniffed::IsoMedia;
        }
    }
    let text = strip_utf8_bom(prefix);
    match infer::get(text) {
        Some(kind) if is_iso_video_mime(kind.mime_type()) => Sniffed::IsoMedia,
        Some(kind) if kind.matcher_type() == infer::MatcherType::Video => {
            Sniffed::OtherVideo(describe(kind))
        }
        Some(kind) => Sniffed::Other(describe(kind)),
        None if iso_brand.is_some() => {
            Sniffed::Other("an ISO media file that is not a video".into())
        }
        None if looks_like_text(text) => Sniffed::Other(text_kind(text).into()),
        None => Sniffed::Unknown,
    }
}

/// "ff d8 ff e0": the first few bytes in hex, to name what nothing recognised.
pub(crate) fn first_bytes_hex(prefix: &[u8]) -> String {
    prefix
        .iter()
        .take(8)
        .map(|byte| format!("{byte:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The top-level box types an MP4 or QuickTime file may start with.
const LEADING_BOXES: [&[u8; 4]; 10] = [
    b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"styp", b"uuid", b"sidx",
];

/// The major brand when the bytes start like an ISO base media file (`[0; 4]` when its first
/// box is not `ftyp`), `None` when they do not.
fn iso_media_brand(prefix: &[u8]) -> Option<[u8; 4]> {
    let header: [u8; 8] = prefix.get(..8)?.try_into().ok()?;
    let size = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    let kind: [u8; 4] = [header[4], header[5], header[6], header[7]];
    if !LEADING_BOXES.contains(&&kind) || (size != 0 && size != 1 && size < 8) {
        return None;
    }
    if &kind == b"ftyp" {
        Some(
            prefix
                .get(8..12)
                .and_then(|b| b.try_into().ok())
                .unwrap_or([0; 4]),
        )
    } else {
        Some([0; 4])
    }
}

/// Brands of still images (HEIF, AVIF) and of audio-only files (iTunes audio, audiobooks).
fn is_image_or_audio_brand(brand: &[u8; 4]) -> bool {
    matches!(
        brand,
        b"heic"
            | b"heix"
            | b"heim"
            | b"heis"
            | b"mif1"
            | b"msf1"
            | b"avif"
            | b"avis"
            | b"M4A "
            | b"M4B "
            | b"M4P "
    )
}

fn is_iso_video_mime(mime: &str) -> bool {
    matches!(
        mime,
        "video/mp4" | "video/quicktime" | "video/x-m4v" | "video/3gpp"
    )
}

fn face_image(prefix: &[u8]) -> Option<&'static str> {
    if prefix.starts_with(&[0xff, 0xd8, 0xff]) {
        Some("JPEG image")
    } else if prefix.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("PNG image")
    } else if prefix.len() >= 12 && &prefix[..4] == b"RIFF" && &prefix[8..12] == b"WEBP" {
        Some("WebP image")
    } else {
        None
    }
}

fn describe(kind: infer::Type) -> String {
    match kind.mime_type() {
        "text/html" => "an HTML page".into(),
        "text/xml" => "an XML document".into(),
        "application/pdf" => "a PDF document".into(),
        "image/svg+xml" => "an SVG image".into(),
        _ => {
            use infer::MatcherType::*;
            let name = kind.extension().to_ascii_uppercase();
            let what = match kind.matcher_type() {
                Image => "image",
                Video => "video",
                Audio => "audio file",
                Font => "font",
                Doc | Book => "document",
                Archive => "archive",
                Text => "text file",
                App | Custom => "file",
            };
            format!("{} {name} {what}", article(&name))
        }
    }
}

/// "a" or "an" before a format's name spelled in capitals ("an MP3", "a GIF").
fn article(name: &str) -> &'static str {
    match name.chars().next() {
        Some('A' | 'E' | 'F' | 'H' | 'I' | 'L' | 'M' | 'N' | 'O' | 'R' | 'S' | 'X') => "an",
        _ => "a",
    }
}

fn strip_utf8_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes)
}

/// UTF-8 text without control characters other than white space. The prefix may end in the
/// middle of a character, which is allowed.
fn looks_like_text(bytes: &[u8]) -> bool {
    let valid = match std::str::from_utf8(bytes) {
        Ok(text) => text,
        Err(error) if error.error_len().is_none() => {
            // Cut inside a character at the end of the prefix: the rest is valid.
            std::str::from_utf8(&bytes[..error.valid_up_to()]).unwrap_or("")
        }
        Err(_) => return false,
    };
    !valid.is_empty()
        && valid
            .chars()
            .all(|c| !c.is_control() || matches!(c, '\n' | '\r' | '\t'))
}

/// HTML pages that `infer` misses (a leading comment, an unusual first tag), JSON, or text.
fn text_kind(text: &[u8]) -> &'static str {
    let start: Vec<u8> = text
        .iter()
        .skip_while(|byte| byte.is_ascii_whitespace())
        .take(512)
        .map(u8::to_ascii_lowercase)
        .collect();
    let contains = |needle: &[u8]| start.windows(needle.len()).any(|w| w == needle);
    if contains(b"<html") || contains(b"<!doctype html") || contains(b"<body") {
        "an HTML page"
    } else if start.starts_with(b"<?xml") {
        "an XML document"
    } else if start.starts_with(b"{") || start.starts_with(b"[") {
        "a JSON document"
    } else {
        "a text file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(bytes: &[u8], expected: Sniffed) {
        assert_eq!(sniff(bytes), expected);
    }

    fn other(name: &str) -> Sniffed {
        Sniffed::Other(name.to_string())
    }

    #[test]
    fn face_formats_by_signature() {
        check(
            b"\xff\xd8\xff\xe0\x00\x10JFIF",
            Sniffed::FaceImage("JPEG image"),
        );
        check(
            b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR",
            Sniffed::FaceImage("PNG image"),
        );
        check(b"RIFF\x24\0\0\0WEBPVP8 ", Sniffed::FaceImage("WebP image"));
        // A RIFF that is not WebP is not a face.
        assert_ne!(
            sniff(b"RIFF\x24\0\0\0AVI LIST"),
            Sniffed::FaceImage("WebP image")
        );
    }

    #[test]
    fn iso_media_by_its_first_box() {
        check(b"\0\0\0\x20ftypisom\0\0\x02\0isomiso2", Sniffed::IsoMedia);
        check(b"\0\0\0\x14ftypqt  \0\0\x02\0qt  ", Sniffed::IsoMedia);
        check(b"\0\0\0\x08wide\0\0\x10\0mdat", Sniffed::IsoMedia);
        check(b"\0\0\x01\0moov\0\0\0\x6cmvhd", Sniffed::IsoMedia);
        // An HEIC photo and an M4A song are ISO files but not videos.
        check(
            b"\0\0\0\x18ftypheic\0\0\0\0mif1heic",
            other("an HEIF image"),
        );
        assert!(matches!(
            sniff(b"\0\0\0\x18ftypM4A \0\0\0\0M4A isom"),
            Sniffed::Other(name) if name.contains("audio")
        ));
    }

    #[test]
    fn pages_and_documents_are_named() {
        check(b"<!DOCTYPE html><html><head>", other("an HTML page"));
        check(b"\xef\xbb\xbf  \n<html lang=\"en\">", other("an HTML page"));
        check(b"<!-- generated --> <html>", other("an HTML page"));
        check(
            b"<?xml version=\"1.0\"?><Error><Code>NoSuchKey</Code>",
            other("an XML document"),
        );
        check(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3", other("a PDF document"));
        check(b"GIF89a\x01\0\x01\0", other("a GIF image"));
        check(b"{\"error\":\"not found\"}", other("a JSON document"));
        check(b"Not Found", other("a text file"));
        let mut webm = b"\x1aE\xdf\xa3\x9fB\x86\x81\x01B\x82\x84webm".to_vec();
        webm.resize(300, 0);
        check(&webm, Sniffed::OtherVideo("a WEBM video".into()));
    }

    #[test]
    fn nothing_and_noise() {
        check(b"", Sniffed::Empty);
        check(&[0, 1, 2, 3, 0xfe, 0xfd, 0, 7], Sniffed::Unknown);
        assert_eq!(first_bytes_hex(&[0, 1, 0xab]), "00 01 ab");
    }
}
