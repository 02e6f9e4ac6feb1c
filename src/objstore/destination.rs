//! `s3://BUCKET/PREFIX/`: parsing the destination a user names, and the object keys and URLs of
//! the outputs under it. Pure code: no I/O, no credentials.
//!
//! Keys are kept to characters that read the same in every encoding S3 involves (the request
//! path, the signature's canonical request, listing answers): bucket names follow S3's naming
//! rules, prefixes use only unreserved URL characters (`A-Z a-z 0-9 - _ . ~`) and `/`, and job ids
//! are already file names of the same alphabet. No client or server can then disagree about
//! which object a key names.

use std::fmt;
use std::str::FromStr;

/// Where outputs go: a bucket and a key prefix that is empty or ends with `/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Destination {
    bucket: String,
    prefix: String,
}

/// Why a destination was refused. The text names what is wrong and never repeats credentials
/// that were typed into the URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DestinationError {
    #[error("{0:?} has no scheme: write the destination as s3://BUCKET/PREFIX/")]
    MissingScheme(String),
    #[error("scheme {0:?} is not supported: write the destination as s3://BUCKET/PREFIX/")]
    WrongScheme(String),
    #[error(
        "credentials do not belong in the destination: remove the part before '@' and set \
         AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY instead"
    )]
    CredentialsInUrl,
    #[error("the bucket name is empty: write the destination as s3://BUCKET/PREFIX/")]
    EmptyBucket,
    #[error("bucket name {bucket:?}: {reason}")]
    BadBucket { bucket: String, reason: String },
    #[error("prefix {prefix:?}: {reason}")]
    BadPrefix { prefix: String, reason: String },
}

/// The longest object key S3 accepts, in bytes.
const MAX_KEY_BYTES: usize = 1024;

/// Room kept in the prefix for `<id>.mp4` (ids are at most this long in practice; a longer one
/// is refused when its key is made).
const KEY_ROOM: usize = 200;

impl Destination {
    /// Parse `s3://BUCKET`, `s3://BUCKET/` or `s3://BUCKET/PREFIX[/]`.
    pub fn parse(text: &str) -> Result<Destination, DestinationError> {
        let text = text.trim();
        if text.contains('@') {
            // `s3://KEY:SECRET@bucket/` (the secret may hold '/'): never echo any of it. No
            // valid destination has an '@'.
            return Err(DestinationError::CredentialsInUrl);
        }
        let Some((scheme, rest)) = text.split_once("://") else {
            return Err(DestinationError::MissingScheme(shorten(text)));
        };
        if !scheme.eq_ignore_ascii_case("s3") {
            return Err(DestinationError::WrongScheme(shorten(scheme)));
        }
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        check_bucket(bucket)?;
        let prefix = check_prefix(prefix)?;
        Ok(Destination {
            bucket: bucket.to_string(),
            prefix,
        })
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The key prefix: empty, or ending with `/`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The object key of a job's output: `PREFIX<id>.mp4`.
    pub fn key_for(&self, job_id: &str) -> Result<String, DestinationError> {
        let key = format!("{}{job_id}.mp4", self.prefix);
        let bad = |reason: String| DestinationError::BadPrefix {
            prefix: self.prefix.clone(),
            reason,
        };
        if job_id.is_empty() || job_id == "." || job_id == ".." {
            return Err(bad(format!("job id {job_id:?} cannot name an object")));
        }
        if let Some(c) = job_id.chars().find(|c| !is_key_char(*c) || *c == '/') {
            return Err(bad(format!("job id {job_id:?} has the character {c:?}")));
        }
        if key.len() > MAX_KEY_BYTES {
            return Err(bad(format!(
                "the key for job {job_id:?} would be {} bytes, more than S3's {MAX_KEY_BYTES}",
                key.len()
            )));
        }
        Ok(key)
    }

    /// The job id whose output `key` is, if `key` is `PREFIX<id>.mp4` for a valid id.
    pub fn job_id_of<'k>(&self, key: &'k str) -> Option<&'k str> {
        let id = key.strip_prefix(&self.prefix)?.strip_suffix(".mp4")?;
        let valid = !id.is_empty()
            && id != "."
            && id != ".."
            && id.chars().all(|c| is_key_char(c) && c != '/');
        valid.then_some(id)
    }

    /// `s3://BUCKET/KEY`: how reports and exports name an object.
    pub fn url_of(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.prefix)
    }
}

impl FromStr for Destination {
    type Err = DestinationError;
    fn from_str(text: &str) -> Result<Destination, DestinationError> {
        Destination::parse(text)
    }
}

/// S3's bucket naming rules: 3–63 characters of `a-z 0-9 . -`, starting and ending with a
/// letter or digit, no `..`, not shaped like an IP address.
fn check_bucket(bucket: &str) -> Result<(), DestinationError> {
    if bucket.is_empty() {
        return Err(DestinationError::EmptyBucket);
    }
    let bad = |reason: &str| DestinationError::BadBucket {
        bucket: shorten(bucket),
        reason: reason.to_string(),
    };
    if let Some(c) = bucket
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '.' || *c == '-'))
    {
        return Err(bad(&format!(
            "the character {c:?} is not allowed (only a-z, 0-9, '.' and '-')"
        )));
    }
    if !(3..=63).contains(&bucket.len()) {
        return Err(bad("must be 3 to 63 characters long"));
    }
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !edge_ok(bucket.chars().next()) || !edge_ok(bucket.chars().last()) {
        return Err(bad("must start and end with a letter or a digit"));
    }
    if bucket.contains("..") {
        return Err(bad("must not contain two adjacent periods"));
    }
    if bucket.parse::<std::net::Ipv4Addr>().is_ok() {
        return Err(bad("must not be formatted as an IP address"));
    }
    Ok(())
}

/// A prefix of `/`-separated segments of unreserved characters; a trailing `/` is added.
fn check_prefix(prefix: &str) -> Result<String, DestinationError> {
    if prefix.is_empty() {
        return Ok(String::new());
    }
    let bad = |reason: String| DestinationError::BadPrefix {
        prefix: shorten(prefix),
        reason,
    };
    if let Some(c) = prefix.chars().find(|c| !is_key_char(*c)) {
        let why = match c {
            '?' | '#' => "a destination has no query or fragment".to_string(),
            _ => "only A-Z, a-z, 0-9, '-', '_', '.', '~' and '/' are allowed".to_string(),
        };
        return Err(bad(format!("the character {c:?} is not allowed: {why}")));
    }
    let trimmed = prefix.strip_suffix('/').unwrap_or(prefix);
    for segment in trimmed.split('/') {
        match segment {
            "" => return Err(bad("has an empty segment ('//' or a leading '/')".into())),
            "." | ".." => return Err(bad(format!("has a {segment:?} segment"))),
            _ => {}
        }
    }
    let prefix = format!("{trimmed}/");
    if prefix.len() + KEY_ROOM > MAX_KEY_BYTES {
        return Err(bad(format!(
            "is {} bytes long; keys are limited to {MAX_KEY_BYTES} bytes",
            prefix.len()
        )));
    }
    Ok(prefix)
}

fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~' | '/')
}

/// At most 80 characters of user input in an error message.
fn shorten(text: &str) -> String {
    match text.char_indices().nth(80) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[track_caller]
    fn check(text: &str, bucket: &str, prefix: &str) {
        let destination = Destination::parse(text).unwrap();
        assert_eq!(
            (destination.bucket(), destination.prefix()),
            (bucket, prefix)
        );
    }

    #[track_caller]
    fn refused(text: &str, expected: &str) {
        let error = Destination::parse(text).unwrap_err().to_string();
        assert!(error.contains(expected), "{text:?}: {error}");
    }

    #[test]
    fn accepted_forms() {
        check("s3://renders", "renders", "");
        check("s3://renders/", "renders", "");
        check("s3://renders/night", "renders", "night/");
        check("s3://renders/night/", "renders", "night/");
        check(
            "S3://my.bucket-1/a/b_c/d~e.f/",
            "my.bucket-1",
            "a/b_c/d~e.f/",
        );
        check("  s3://abc/x  ", "abc", "x/");
    }

    #[test]
    fn refusals_name_what_is_wrong() {
        refused("renders/night/", "has no scheme");
        refused(
            "https://renders/night/",
            "scheme \"https\" is not supported",
        );
        refused("s3:///night/", "the bucket name is empty");
        refused("s3://", "the bucket name is empty");
        refused("s3://Renders/", "the character 'R' is not allowed");
        refused("s3://ren_ders/", "the character '_' is not allowed");
        refused("s3://ab/", "3 to 63 characters");
        refused(&format!("s3://{}/", "a".repeat(64)), "3 to 63 characters");
        refused("s3://-abc/", "start and end with a letter or a digit");
        refused("s3://abc./", "start and end with a letter or a digit");
        refused("s3://a..b/", "two adjacent periods");
        refused("s3://192.168.1.1/", "IP address");
        refused("s3://abc/a//b/", "empty segment");
        refused("s3://abc//b/", "empty segment");
        refused("s3://abc/a/../b/", "\"..\" segment");
        refused("s3://abc/a b/", "the character ' ' is not allowed");
        refused("s3://abc/a?x=1", "no query or fragment");
        refused("s3://abc/a#frag", "no query or fragment");
        refused("s3://abc/é/", "the character 'é' is not allowed");
        refused(
            &format!("s3://abc/{}/", "a".repeat(900)),
            "keys are limited",
        );
    }

    #[test]
    fn credentials_in_the_url_are_refused_without_being_echoed() {
        for text in [
            "s3://AKIDEXAMPLE:hunter2secret@bucket/p/",
            "s3://AKIDEXAMPLE:hunter2/secret@bucket/p/",
            "AKIDEXAMPLE:hunter2secret@bucket",
        ] {
            let error = Destination::parse(text).unwrap_err();
            assert_eq!(error, DestinationError::CredentialsInUrl);
            assert!(!error.to_string().contains("hunter2"));
            assert!(!format!("{error:?}").contains("hunter2"));
        }
    }

    #[test]
    fn keys_urls_and_ids() {
        let destination = Destination::parse("s3://renders/night/").unwrap();
        assert_eq!(destination.key_for("job-1").unwrap(), "night/job-1.mp4");
        assert_eq!(
            destination.url_of("night/job-1.mp4"),
            "s3://renders/night/job-1.mp4"
        );
        assert_eq!(destination.to_string(), "s3://renders/night/");
        assert_eq!(destination.job_id_of("night/job-1.mp4"), Some("job-1"));
        assert_eq!(destination.job_id_of("night/sub/job-1.mp4"), None);
        assert_eq!(destination.job_id_of("other/job-1.mp4"), None);
        assert_eq!(destination.job_id_of("night/.mp4"), None);
        assert_eq!(destination.job_id_of("night/job-1.mp4.part"), None);
        assert!(destination.key_for("a/b").is_err());
        assert!(destination.key_for("..").is_err());
        assert!(destination.key_for("").is_err());
        let root = Destination::parse("s3://renders").unwrap();
        assert_eq!(root.key_for("x").unwrap(), "x.mp4");
        assert_eq!(root.to_string(), "s3://renders/");
    }

    fn segment() -> impl Strategy<Value = String> {
        "[A-Za-z0-9_~-][A-Za-z0-9._~-]{0,11}"
            .prop_filter("not a dot segment", |s| s != "." && s != "..")
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, rng_seed: proptest::test_runner::RngSeed::Fixed(16), ..ProptestConfig::default() })]

        /// A well-formed destination parses, prints back to its normal form, and every job id
        /// maps to a key that maps back to the id.
        #[test]
        fn well_formed_destinations_round_trip(
            bucket in "[a-z0-9][a-z0-9-]{1,20}[a-z0-9]",
            segments in proptest::collection::vec(segment(), 0..4),
            slash in any::<bool>(),
            id in "[A-Za-z0-9_-][A-Za-z0-9._-]{0,20}",
        ) {
            let mut text = format!("s3://{bucket}/{}", segments.join("/"));
            if slash && !segments.is_empty() {
                text.push('/');
            }
            let destination = Destination::parse(&text).unwrap();
            prop_assert_eq!(destination.bucket(), bucket.as_str());
            prop_assert!(destination.prefix().is_empty() || destination.prefix().ends_with('/'));
            let again = Destination::parse(&destination.to_string()).unwrap();
            prop_assert_eq!(&again, &destination);
            let key = destination.key_for(&id).unwrap();
            prop_assert_eq!(destination.job_id_of(&key), Some(id.as_str()));
        }

        /// Any text either parses into a destination whose parts obey the rules, or is refused
        /// with a message; it never panics, and what is after an '@' is never echoed.
        #[test]
        fn any_text_is_parsed_or_refused(text in "(s3://)?[ -~é]{0,40}(@[a-z]{6,10}/)?[ -~]{0,20}") {
            match Destination::parse(&text) {
                Ok(destination) => {
                    prop_assert!(destination.bucket().len() >= 3);
                    prop_assert!(destination.prefix().chars().all(is_key_char));
                    prop_assert!(!destination.prefix().contains("//"));
                }
                Err(error) => {
                    let message = error.to_string();
                    prop_assert!(!message.is_empty());
                    if text.contains('@') {
                        prop_assert_eq!(&error, &DestinationError::CredentialsInUrl);
                    }
                }
            }
        }
    }
}
