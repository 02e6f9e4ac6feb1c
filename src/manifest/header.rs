//! The header row: where each manifest column sits, and which columns are extra.

use std::collections::HashSet;
use std::path::Path;

use crate::manifest::ManifestError;

/// Where each manifest column sits in a record.
pub(super) struct Header {
    pub(super) width: usize,
    pub(super) id: Option<usize>,
    pub(super) video_url: usize,
    pub(super) face_url: usize,
    pub(super) obj_id: Option<usize>,
    pub(super) resolution: Option<usize>,
    pub(super) model_name: Option<usize>,
    pub(super) keep_original_sound: Option<usize>,
    pub(super) template_id: Option<usize>,
    /// (index, name as written) of every other named column.
    pub(super) extra: Vec<(usize, String)>,
}

impl Header {
    pub(super) fn parse(path: &Path, record: &csv::StringRecord) -> Result<Header, ManifestError> {
        const KNOWN: [&str; 8] = [
            "id",
            "video_url",
            "face_url",
            "obj_id",
            "resolution",
            "model_name",
            "keep_original_sound",
            "template_id",
        ];
        let mut known: [Option<usize>; 8] = [None; 8];
        let mut extra = Vec::new();
        let mut seen = HashSet::new();
        for (index, name) in record.iter().enumerate() {
            let name = name.trim();
            if name.is_empty() {
                continue;
            }
            let folded = name.to_lowercase();
            if !seen.insert(folded.clone()) {
                return Err(ManifestError::DuplicateColumn {
                    path: path.to_path_buf(),
                    column: name.to_string(),
                });
            }
            match KNOWN.iter().position(|known_name| *known_name == folded) {
                Some(slot) => known[slot] = Some(index),
                None => extra.push((index, name.to_string())),
            }
        }
        let (video_url, face_url) = match (known[1], known[2]) {
            (Some(video_url), Some(face_url)) => (video_url, face_url),
            (video_url, face_url) => {
                let mut missing = Vec::new();
                if video_url.is_none() {
                    missing.push("video_url");
                }
                if face_url.is_none() {
                    missing.push("face_url");
                }
                return Err(ManifestError::MissingColumns {
                    path: path.to_path_buf(),
                    missing,
                    found: record.iter().map(|name| name.trim().to_string()).collect(),
                });
            }
        };
        Ok(Header {
            width: record.len(),
            id: known[0],
            video_url,
            face_url,
            obj_id: known[3],
            resolution: known[4],
            model_name: known[5],
            keep_original_sound: known[6],
            template_id: known[7],
            extra,
        })
    }
}
