//! One cell at a time: URLs, obj_id, resolution, booleans, ids, and how a bad value is quoted
//! in a reason.

use std::fmt;

use sha2::{Digest, Sha256};

use crate::akool::Resolution;
use crate::job::{Face, hex};
use crate::manifest::MAX_ID_LEN;
use crate::manifest::group::RowFields;

/// Validate one row's cells (already trimmed); every problem, joined with "; ".
pub(super) fn validate_fields(
    video_url: &str,
    face_url: &str,
    obj_id: &str,
    resolution: &str,
    model_name: &str,
    keep_original_sound: &str,
    template_id: &str,
) -> Result<RowFields, String> {
    let mut problems = Vec::new();
    if let Err(problem) = check_url("video_url", video_url) {
        problems.push(problem);
    }
    if let Err(problem) = check_url("face_url", face_url) {
        problems.push(problem);
    }
    let obj_id = parse_obj_id(obj_id).unwrap_or_else(|problem| {
        problems.push(problem);
        None
    });
    let resolution = parse_resolution(resolution).unwrap_or_else(|problem| {
        problems.push(problem);
        None
    });
    let keep_original_sound = parse_bool(keep_original_sound).unwrap_or_else(|problem| {
        problems.push(problem);
        None
    });
    if !problems.is_empty() {
        return Err(problems.join("; "));
    }
    let optional = |value: &str| (!value.is_empty()).then(|| value.to_string());
    Ok(RowFields {
        face: Face {
            obj_id,
            face_url: face_url.to_string(),
        },
        resolution,
        model_name: optional(model_name),
        keep_original_sound,
        template_id: optional(template_id),
    })
}

/// The id of a blank-id row: stable across runs for the same video, subject and face.
pub fn derived_id(video_url: &str, obj_id: &str, face_url: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(video_url.as_bytes());
    hasher.update(b"\n");
    hasher.update(obj_id.as_bytes());
    hasher.update(b"\n");
    hasher.update(face_url.as_bytes());
    let digest = hasher.finalize();
    format!("j-{}", &hex(&digest[..6]))
}

/// An id becomes a file name: `[A-Za-z0-9._-]`, 1–128 characters, not `.` or `..`.
pub fn check_id(id: &str) -> Result<(), String> {
    if id == "." || id == ".." {
        return Err(format!("id {id:?} is not allowed (it names a folder)"));
    }
    let length = id.chars().count();
    if length > MAX_ID_LEN {
        return Err(format!(
            "id is {length} characters long, at most {MAX_ID_LEN} allowed"
        ));
    }
    if id.is_empty()
        || !id
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'))
    {
        return Err(format!(
            "id {:?} may only contain letters, digits, '.', '_' and '-'",
            Shown(id)
        ));
    }
    Ok(())
}

/// The longest URL accepted: far beyond any real video or image link, and short enough that a
/// runaway cell (a pasted file, a broken export) is not sent to the service nor stored in
/// every job record.
pub const MAX_URL_BYTES: usize = 8192;

/// An http(s) URL with a host, written without spaces or control characters.
fn check_url(column: &str, value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("{column} is blank"));
    }
    if value.len() > MAX_URL_BYTES {
        return Err(format!(
            "{column} is {} bytes long; URLs are limited to {MAX_URL_BYTES}",
            value.len()
        ));
    }
    let shown = Shown(value);
    // Most URLs are ASCII: test bytes rather than decode characters.
    let any_char = |test: fn(char) -> bool| {
        if value.is_ascii() {
            value.bytes().any(|byte| test(char::from(byte)))
        } else {
            value.chars().any(test)
        }
    };
    if any_char(char::is_control) {
        return Err(format!(
            "{column}: {shown:?} contains a control character (a line break?)"
        ));
    }
    if any_char(char::is_whitespace) {
        return Err(format!(
            "{column}: {shown:?} contains a space (write it as %20)"
        ));
    }
    let url = match reqwest::Url::parse(value) {
        Ok(url) => url,
        // Without a scheme it is not a URL at all ("example.com/a.mp4", "n/a").
        Err(_) if !value.contains("://") => {
            return Err(format!("{column}: {shown:?} is not an http(s) URL"));
        }
        Err(error) => return Err(format!("{column}: {shown:?} is not a valid URL ({error})")),
    };
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{column}: {shown:?} is not an http(s) URL"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{column}: {shown:?} has no host"));
    }
    Ok(())
}

fn parse_obj_id(value: &str) -> Result<Option<u32>, String> {
    if value.is_empty() {
        return Ok(None);
    }
    if !value.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(format!(
            "obj_id: {:?} is not a non-negative integer",
            Shown(value)
        ));
    }
    value
        .parse::<u32>()
        .map(Some)
        .map_err(|_| format!("obj_id: {:?} is too large", Shown(value)))
}

fn parse_resolution(value: &str) -> Result<Option<Resolution>, String> {
    if value.is_empty() {
        return Ok(None);
    }
    value
        .parse()
        .map(Some)
        .map_err(|_| format!("resolution: {:?} must be 480p or 720p", Shown(value)))
}

fn parse_bool(value: &str) -> Result<Option<bool>, String> {
    if value.is_empty() {
        return Ok(None);
    }
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(Some(true)),
        "false" | "0" | "no" => Ok(Some(false)),
        _ => Err(format!(
            "keep_original_sound: {:?} must be true or false",
            Shown(value)
        )),
    }
}

/// A cell value quoted in a reason: escaped like a Rust string (so a reason stays on one
/// line) and shortened when very long.
pub(super) struct Shown<'a>(&'a str);

impl fmt::Debug for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const LIMIT: usize = 100;
        match self.0.char_indices().nth(LIMIT) {
            None => write!(f, "{:?}", self.0),
            Some((cut, _)) => {
                let shown = format!("{:?}", &self.0[..cut]);
                write!(f, "{}...\"", &shown[..shown.len() - 1])
            }
        }
    }
}
