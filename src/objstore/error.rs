//! Every failure of the object store, classified once: a refusal that retrying cannot fix
//! (credentials, permissions, a missing bucket, a wrong region), a transient failure (5xx,
//! throttling, timeouts, resets), or a multipart upload the store no longer knows. The output
//! link's side keeps `DownloadError`'s classification. Owns the scrubbing of error texts: no
//! credential, and no raw server body, ever reaches a message.

use std::fmt;

use crate::download::DownloadError;
use crate::exit::Fatal;

/// Why an object-store request did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    /// The environment cannot work as it is (a variable missing or malformed).
    #[error("{message}")]
    Config { message: String, hint: String },
    /// The store refused, and will refuse again until a person changes something.
    #[error("{}: {detail}", refusal.message())]
    Refused { refusal: Refusal, detail: String },
    /// Try again later: 5xx, throttling (SlowDown), timeouts, resets, an unreachable endpoint.
    #[error("object storage unavailable: {detail}")]
    Transient { detail: String },
    /// The multipart upload is gone (completed, aborted, or expired by a lifecycle rule).
    #[error("the multipart upload is no longer known to the store: {detail}")]
    UploadGone { detail: String },
}

/// The refusals a person can act on, each with its own message and hint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    NoSuchBucket,
    SignatureMismatch,
    UnknownAccessKey,
    TokenRefused,
    AccessDenied,
    WrongRegion,
    ClockSkew,
    /// Any other refusal, with the store's error code (or HTTP status).
    Rejected {
        code: String,
    },
}

/// Why uploading one output did not finish.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UploadError {
    /// Reading the output link failed: the same classification as a download to a folder
    /// (`LinkExpired` → refresh the link; `Transient` → retry; `Refused` → the job fails).
    #[error("{0}")]
    Download(DownloadError),
    /// Writing to the store failed.
    #[error("{0}")]
    Storage(StorageError),
    /// A bug: an event that does not fit the record, a task that panicked.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Refusal {
    /// What happened, in words a user can act on.
    pub fn message(&self) -> String {
        match self {
            Refusal::NoSuchBucket => "the bucket does not exist".into(),
            Refusal::SignatureMismatch => {
                "the credentials were refused (signature does not match)".into()
            }
            Refusal::UnknownAccessKey => {
                "the credentials were refused (the access key id is unknown)".into()
            }
            Refusal::TokenRefused => {
                "the credentials were refused (the session token is invalid or expired)".into()
            }
            Refusal::AccessDenied => "access denied".into(),
            Refusal::WrongRegion => "the bucket is in another region".into(),
            Refusal::ClockSkew => "the store refused this machine's clock".into(),
            Refusal::Rejected { code } => format!("the store refused the request ({code})"),
        }
    }

    /// What to do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            Refusal::NoSuchBucket => {
                "create the bucket, or check its name in --out and AWS_ENDPOINT_URL / AWS_REGION"
            }
            Refusal::SignatureMismatch => {
                "check AWS_SECRET_ACCESS_KEY (and that it belongs to AWS_ACCESS_KEY_ID)"
            }
            Refusal::UnknownAccessKey => {
                "check AWS_ACCESS_KEY_ID, and AWS_ENDPOINT_URL if the bucket is not on AWS"
            }
            Refusal::TokenRefused => {
                "refresh the temporary credentials (AWS_SESSION_TOKEN with its key pair), or unset \
                 AWS_SESSION_TOKEN for long-term keys"
            }
            Refusal::AccessDenied => {
                "the credentials need s3:PutObject, s3:DeleteObject, s3:AbortMultipartUpload and \
                 s3:ListBucketMultipartUploads on the bucket and prefix"
            }
            Refusal::WrongRegion => "set AWS_REGION to the bucket's region",
            Refusal::ClockSkew => "set this machine's clock right (NTP)",
            Refusal::Rejected { .. } => "check the destination and the AWS_* environment",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())
    }
}

impl StorageError {
    /// Worth trying again later without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StorageError::Transient { .. } | StorageError::UploadGone { .. }
        )
    }

    /// What a person can do about it.
    pub fn hint(&self) -> String {
        match self {
            StorageError::Config { hint, .. } => hint.clone(),
            StorageError::Refused { refusal, .. } => refusal.hint().to_string(),
            StorageError::Transient { .. } | StorageError::UploadGone { .. } => {
                "check AWS_ENDPOINT_URL and the network, then run again".to_string()
            }
        }
    }

    /// The fatal error a command prints for this (`error:` / `Caused by:` / `hint:`).
    pub fn to_fatal(&self, context: &str) -> Fatal {
        match self {
            StorageError::Config { message, hint } => {
                Fatal::new(format!("{context}: {message}")).hint(hint.clone())
            }
            StorageError::Refused { refusal, detail } => {
                Fatal::new(format!("{context}: {}", refusal.message()))
                    .cause(detail)
                    .hint(refusal.hint())
            }
            StorageError::Transient { detail } | StorageError::UploadGone { detail } => Fatal::new(
                format!("{context}: the object store did not answer usefully"),
            )
            .cause(detail)
            .hint("check AWS_ENDPOINT_URL and the network, then run again"),
        }
    }
}

impl UploadError {
    /// Worth trying again later (after refreshing the link for `LinkExpired`).
    pub fn is_transient(&self) -> bool {
        match self {
            UploadError::Download(DownloadError::Transient { .. }) => true,
            UploadError::Download(_) | UploadError::Internal(_) => false,
            UploadError::Storage(error) => error.is_transient(),
        }
    }
}

impl From<StorageError> for UploadError {
    fn from(error: StorageError) -> UploadError {
        UploadError::Storage(error)
    }
}

impl From<DownloadError> for UploadError {
    fn from(error: DownloadError) -> UploadError {
        UploadError::Download(error)
    }
}

/// Replaces known secret values in a text with `[redacted]`.
#[derive(Clone, Default)]
pub(crate) struct Scrubber {
    secrets: Vec<String>,
}

impl fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Scrubber({} values)", self.secrets.len())
    }
}

impl Scrubber {
    pub(crate) fn new(secrets: impl IntoIterator<Item = String>) -> Scrubber {
        // Very short values would redact ordinary words; real keys are long.
        let mut secrets: Vec<String> = secrets.into_iter().filter(|s| s.len() >= 4).collect();
        // Longest first, so a value that contains another is replaced whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Scrubber { secrets }
    }

    pub(crate) fn scrub(&self, text: &str) -> String {
        let mut text = text.to_string();
        for secret in &self.secrets {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), "[redacted]");
            }
        }
        text
    }
}

/// What an S3 error answer says, reduced to the parts that carry no secret: the `<Code>` and
/// the `<Message>` (S3 puts echoed credentials, string-to-sign and tokens in other elements).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct S3ErrorBody {
    pub code: Option<String>,
    pub message: Option<String>,
}

impl S3ErrorBody {
    pub(crate) fn parse(body: &str) -> S3ErrorBody {
        S3ErrorBody {
            code: element(body, "Code"),
            message: element(body, "Message"),
        }
    }
}

/// The text of the first `<name>…</name>` in `xml`, unescaped (bounded only after scrubbing,
/// so that a secret is never cut into a piece the scrubber would not recognise).
fn element(xml: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&close)?;
    let raw = &xml[start..end];
    let text = quick_xml::escape::unescape(raw)
        .map(|t| t.into_owned())
        .unwrap_or_else(|_| raw.to_string());
    (!text.trim().is_empty()).then(|| text.trim().to_string())
}

/// Classify an answer of the store by its HTTP status and S3 error code.
pub(crate) fn classify_answer(
    status: Option<u16>,
    body: &S3ErrorBody,
    scrubber: &Scrubber,
) -> StorageError {
    let detail = {
        let mut parts = Vec::new();
        if let Some(status) = status {
            parts.push(format!("HTTP {status}"));
        }
        if let Some(code) = &body.code {
            parts.push(bounded(&scrubber.scrub(code), 60));
        }
        if let Some(message) = &body.message {
            parts.push(format!("\"{}\"", bounded(&scrubber.scrub(message), 200)));
        }
        if parts.is_empty() {
            parts.push("no answer".into());
        }
        parts.join(" ")
    };
    let refused = |refusal: Refusal| StorageError::Refused {
        refusal,
        detail: detail.clone(),
    };
    let code = body
        .code
        .as_deref()
        .map(|code| bounded(&scrubber.scrub(code), 60));
    match code.as_deref() {
        Some("NoSuchBucket") => return refused(Refusal::NoSuchBucket),
        Some("SignatureDoesNotMatch") => return refused(Refusal::SignatureMismatch),
        Some("InvalidAccessKeyId") => return refused(Refusal::UnknownAccessKey),
        Some("ExpiredToken" | "InvalidToken" | "TokenRefreshRequired") => {
            return refused(Refusal::TokenRefused);
        }
        Some("AccessDenied" | "AllAccessDisabled" | "AccountProblem") => {
            return refused(Refusal::AccessDenied);
        }
        Some(
            "PermanentRedirect"
            | "AuthorizationHeaderMalformed"
            | "IllegalLocationConstraintException",
        ) => return refused(Refusal::WrongRegion),
        Some("RequestTimeTooSkewed") => return refused(Refusal::ClockSkew),
        Some("NoSuchUpload") => return StorageError::UploadGone { detail },
        Some(
            "SlowDown"
            | "InternalError"
            | "ServiceUnavailable"
            | "RequestTimeout"
            | "OperationAborted"
            | "Busy"
            | "XMinioServerNotInitialized",
        ) => return StorageError::Transient { detail },
        _ => {}
    }
    match status {
        Some(status) if status >= 500 || status == 429 || status == 408 => {
            StorageError::Transient { detail }
        }
        Some(301 | 307) => refused(Refusal::WrongRegion),
        Some(401 | 403) => refused(Refusal::AccessDenied),
        Some(status) => refused(Refusal::Rejected {
            code: code.unwrap_or_else(|| format!("HTTP {status}")),
        }),
        None => StorageError::Transient { detail },
    }
}

/// Classify an error of the `object_store` crate. Its texts carry the request URL and the
/// server's whole body, so none of them is passed on: the status, the S3 code and message are
/// read out of it, or the kind of transport failure.
pub(crate) fn classify_object_store(
    error: &object_store::Error,
    scrubber: &Scrubber,
) -> StorageError {
    use object_store::client::{HttpError, HttpErrorKind};
    let mut chain = String::new();
    let mut transport = None;
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = source {
        chain.push_str(&current.to_string());
        chain.push('\n');
        if let Some(http) = current.downcast_ref::<HttpError>() {
            transport.get_or_insert(http.kind());
        }
        source = current.source();
    }
    let body = S3ErrorBody::parse(&chain);
    let status = status_in(&chain).or(match error {
        object_store::Error::NotFound { .. } => Some(404),
        object_store::Error::PermissionDenied { .. } => Some(403),
        object_store::Error::Unauthenticated { .. } => Some(401),
        object_store::Error::Precondition { .. } => Some(412),
        _ => None,
    });
    if status.is_none() && body.code.is_none() {
        let what = match transport {
            Some(HttpErrorKind::Connect) => "could not connect to the endpoint",
            Some(HttpErrorKind::Timeout) => "timed out",
            Some(HttpErrorKind::Interrupted) => "connection interrupted",
            Some(HttpErrorKind::Decode) => "could not read the answer",
            Some(_) => "request failed",
            None => match error {
                object_store::Error::NotImplemented { .. }
                | object_store::Error::NotSupported { .. }
                | object_store::Error::InvalidPath { .. }
                | object_store::Error::UnknownConfigurationKey { .. } => {
                    return StorageError::Config {
                        message: first_line(&scrubber.scrub(&error.to_string())),
                        hint: "check the AWS_* environment".into(),
                    };
                }
                _ => "request failed",
            },
        };
        return StorageError::Transient {
            detail: what.to_string(),
        };
    }
    classify_answer(status, &body, scrubber)
}

/// The HTTP status in object_store's "status code: 403 Forbidden" text.
fn status_in(text: &str) -> Option<u16> {
    let at = text.find("status code: ")? + "status code: ".len();
    text.get(at..at + 3)?.parse().ok()
}

fn first_line(text: &str) -> String {
    bounded(text.lines().next().unwrap_or_default(), 200)
}

/// At most `max` characters of `text`.
fn bounded(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn answer(status: u16, code: &str) -> StorageError {
        let body = format!(
            "<?xml version=\"1.0\"?><Error><Code>{code}</Code><Message>m</Message></Error>"
        );
        classify_answer(
            Some(status),
            &S3ErrorBody::parse(&body),
            &Scrubber::default(),
        )
    }

    #[test]
    fn codes_become_refusals_with_messages() {
        let refusal = |status, code| match answer(status, code) {
            StorageError::Refused { refusal, .. } => refusal,
            other => panic!("{code}: {other:?}"),
        };
        assert_eq!(refusal(404, "NoSuchBucket"), Refusal::NoSuchBucket);
        assert_eq!(
            refusal(403, "SignatureDoesNotMatch"),
            Refusal::SignatureMismatch
        );
        assert_eq!(
            refusal(403, "InvalidAccessKeyId"),
            Refusal::UnknownAccessKey
        );
        assert_eq!(refusal(400, "ExpiredToken"), Refusal::TokenRefused);
        assert_eq!(refusal(403, "AccessDenied"), Refusal::AccessDenied);
        assert_eq!(refusal(301, "PermanentRedirect"), Refusal::WrongRegion);
        assert_eq!(refusal(403, "RequestTimeTooSkewed"), Refusal::ClockSkew);
        assert_eq!(
            refusal(400, "EntityTooSmall"),
            Refusal::Rejected {
                code: "EntityTooSmall".into()
            }
        );
        assert!(answer(503, "SlowDown").is_transient());
        assert!(answer(500, "InternalError").is_transient());
        assert!(answer(502, "").is_transient());
        assert!(matches!(
            answer(404, "NoSuchUpload"),
            StorageError::UploadGone { .. }
        ));
        assert_eq!(
            answer(403, "SignatureDoesNotMatch").to_string(),
            "the credentials were refused (signature does not match): HTTP 403 \
             SignatureDoesNotMatch \"m\""
        );
    }

    #[test]
    fn echoed_credentials_are_not_passed_on() {
        // S3 echoes the key id, the string to sign and tokens in their own elements.
        let body = "<Error><Code>InvalidToken</Code><Message>The provided token is malformed \
                    AKIDSECRETLOOKING</Message><Token-0>FQoGZXIvYXdzEXAMPLETOKEN</Token-0>\
                    <AWSAccessKeyId>AKIDSECRETLOOKING</AWSAccessKeyId></Error>";
        let scrubber = Scrubber::new(["AKIDSECRETLOOKING".to_string()]);
        let error = classify_answer(Some(400), &S3ErrorBody::parse(body), &scrubber);
        let text = format!("{error} {error:?}");
        assert!(!text.contains("FQoGZXIvYXdzEXAMPLETOKEN"), "{text}");
        assert!(!text.contains("AKIDSECRETLOOKING"), "{text}");
        assert!(text.contains("session token"), "{text}");
    }

    #[test]
    fn statuses_without_a_body() {
        let none = S3ErrorBody::default();
        let scrubber = Scrubber::default();
        assert!(classify_answer(Some(503), &none, &scrubber).is_transient());
        assert!(classify_answer(Some(429), &none, &scrubber).is_transient());
        assert!(classify_answer(None, &none, &scrubber).is_transient());
        assert!(matches!(
            classify_answer(Some(403), &none, &scrubber),
            StorageError::Refused {
                refusal: Refusal::AccessDenied,
                ..
            }
        ));
    }

    #[test]
    fn scrubbing_replaces_longest_values_first() {
        let scrubber = Scrubber::new(["abcd".to_string(), "abcdefgh".to_string(), "x".into()]);
        assert_eq!(
            scrubber.scrub("k=abcdefgh y=abcd x"),
            "k=[redacted] y=[redacted] x"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, rng_seed: proptest::test_runner::RngSeed::Fixed(16), ..ProptestConfig::default() })]

        /// Whatever a server answers, classification never panics, never passes on more than a
        /// bounded text, and never contains a registered secret.
        #[test]
        fn any_answer_is_classified_safely(
            status in proptest::option::of(100u16..600),
            code in "[A-Za-z<>&/]{0,30}",
            message in "[ -~]{0,300}",
            junk in "[ -~]{0,100}",
        ) {
            let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
            let body = format!("{junk}<Error><Code>{code}</Code><Message>{message}{secret}</Message><StringToSign>{secret}</StringToSign></Error>");
            let scrubber = Scrubber::new([secret.to_string()]);
            let error = classify_answer(status, &S3ErrorBody::parse(&body), &scrubber);
            let text = format!("{error} {error:?}");
            prop_assert!(!text.contains(secret));
            prop_assert!(text.len() < 1200);
        }
    }
}
