//! What a preflight check concluded about one URL ([`Verdict`]) and what it cost to find out
//! ([`Spent`]). Plain data, no I/O: these are the records a run keeps per URL and the lines
//! `check --preflight --json` prints, so they stay small and their serialized form stable.

use serde::{Deserialize, Serialize};

/// The outcome of checking one URL.
///
/// Serialized with an internal `verdict` tag:
/// `{"verdict":"invalid","reason":"video link answers HTTP 404"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// The URL answers with what the service needs; `detail` says what was found
    /// ("MP4, 10.0 s", "JPEG image").
    Valid { detail: String },
    /// A definitive check shows the job cannot succeed; `reason` is what the user is told.
    Invalid { reason: String },
    /// The check could not decide (the network, the host's access rules, an unreadable
    /// container). Never a reason to stop a job: the service may reach what this machine cannot.
    Undecided { warning: String },
}

impl Verdict {
    pub fn is_invalid(&self) -> bool {
        matches!(self, Verdict::Invalid { .. })
    }

    /// The reason, for an invalid verdict.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Verdict::Invalid { reason } => Some(reason),
            _ => None,
        }
    }

    /// The warning, for an undecided verdict.
    pub fn warning(&self) -> Option<&str> {
        match self {
            Verdict::Undecided { warning } => Some(warning),
            _ => None,
        }
    }

    pub(crate) fn valid(detail: impl Into<String>) -> Verdict {
        Verdict::Valid {
            detail: detail.into(),
        }
    }

    pub(crate) fn invalid(reason: impl Into<String>) -> Verdict {
        Verdict::Invalid {
            reason: reason.into(),
        }
    }

    pub(crate) fn undecided(warning: impl Into<String>) -> Verdict {
        Verdict::Undecided {
            warning: warning.into(),
        }
    }
}

/// What checks cost the user's hosts: requests sent and response body bytes read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spent {
    pub requests: u64,
    pub bytes: u64,
}

impl Spent {
    pub fn add(&mut self, other: Spent) {
        self.requests += other.requests;
        self.bytes += other.bytes;
    }
}

/// Which check a URL gets: the same address is a different question as a video and as a face.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaKind {
    Video,
    Face,
}

impl MediaKind {
    /// "video" or "face", as the reasons and warnings say it.
    pub fn noun(self) -> &'static str {
        match self {
            MediaKind::Video => "video",
            MediaKind::Face => "face",
        }
    }
}

/// One URL to check, as a video or as a face.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Target {
    pub kind: MediaKind,
    pub url: String,
}

impl Target {
    pub fn video(url: impl Into<String>) -> Target {
        Target {
            kind: MediaKind::Video,
            url: url.into(),
        }
    }

    pub fn face(url: impl Into<String>) -> Target {
        Target {
            kind: MediaKind::Face,
            url: url.into(),
        }
    }
}

/// The result of checking one [`Target`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlCheck {
    pub target: Target,
    pub verdict: Verdict,
    pub spent: Spent,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_serialize_with_a_tag() {
        let invalid = Verdict::invalid("video link answers HTTP 404");
        let json = serde_json::to_string(&invalid).unwrap();
        assert_eq!(
            json,
            r#"{"verdict":"invalid","reason":"video link answers HTTP 404"}"#
        );
        assert_eq!(serde_json::from_str::<Verdict>(&json).unwrap(), invalid);
        let undecided = Verdict::undecided("timed out");
        assert_eq!(
            serde_json::to_string(&undecided).unwrap(),
            r#"{"verdict":"undecided","warning":"timed out"}"#
        );
        assert_eq!(undecided.warning(), Some("timed out"));
        assert_eq!(undecided.reason(), None);
        assert!(!Verdict::valid("MP4, 10.0 s").is_invalid());
    }
}
