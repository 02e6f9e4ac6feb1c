//! Which strings may become a link or a media source in the report.
//!
//! A URL from the manifest, the API or a file name reaches an `href` or `src` attribute only as
//! a [`SafeUrl`], and a `SafeUrl` can only be made two ways: an absolute `http(s)` URL that
//! parses (re-serialized by the URL parser, so quotes and spaces come out percent-encoded), or a
//! relative path whose every segment is percent-encoded here. Anything else (`javascript:`,
//! `data:`, `file:`, `s3://`, garbage) is shown as text by the page, never followed. This module
//! owns that rule and nothing else: it knows no markup and no job.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// A URL that is allowed in an `href` or `src` attribute. The page still escapes it as an
/// attribute value; this type decides only *whether* a string may be a link at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafeUrl(String);

/// Everything but the unreserved characters of RFC 3986 is encoded in a path segment: a `:`
/// in a first segment would otherwise read as a scheme (`javascript:x.mp4`), a `?` or `#`
/// would cut the path, and `%` must not be taken for an escape already made.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

impl SafeUrl {
    /// An absolute `http` or `https` URL with a host; `None` for anything else.
    pub fn web(url: &str) -> Option<SafeUrl> {
        let parsed = reqwest::Url::parse(url.trim()).ok()?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return None;
        }
        Some(SafeUrl(parsed.into()))
    }

    /// A relative reference to a file, from its `/`-separated path relative to the report's
    /// folder. Every segment is percent-encoded, so the result never has a scheme, query or
    /// fragment; `..` segments stay (an output folder beside the report's). `None` for an
    /// empty or absolute path, which is not relative to anything a shared folder holds.
    pub fn relative_path(path: &str) -> Option<SafeUrl> {
        if path.is_empty() || path.starts_with('/') {
            return None;
        }
        let encoded: Vec<String> = path
            .split('/')
            .map(|segment| utf8_percent_encode(segment, SEGMENT).to_string())
            .collect();
        Some(SafeUrl(encoded.join("/")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl maud::Render for SafeUrl {
    fn render_to(&self, buffer: &mut String) {
        // Attribute values are escaped like any other text.
        self.0.as_str().render_to(buffer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_and_https_urls_are_links() {
        for url in [
            "javascript:alert(1)",
            " JavaScript:alert(1)",
            "java\tscript:alert(1)",
            "data:text/html,<script>alert(1)</script>",
            "file:///etc/passwd",
            "s3://bucket/key.mp4",
            "//evil.example/x",
            "http://",
            "vbscript:msgbox",
            "",
        ] {
            assert_eq!(SafeUrl::web(url), None, "{url:?}");
        }
        assert_eq!(
            SafeUrl::web("https://cdn.example.com/a b\".mp4?x=<y>")
                .unwrap()
                .as_str(),
            "https://cdn.example.com/a%20b%22.mp4?x=%3Cy%3E"
        );
        assert_eq!(
            SafeUrl::web("http://127.0.0.1:8080/p.svg")
                .unwrap()
                .as_str(),
            "http://127.0.0.1:8080/p.svg"
        );
    }

    #[test]
    fn relative_paths_are_encoded_segment_by_segment() {
        let check = |path: &str, expected: &str| {
            assert_eq!(SafeUrl::relative_path(path).unwrap().as_str(), expected);
        };
        check("output/a1.mp4", "output/a1.mp4");
        check("../renders/a b.mp4", "../renders/a%20b.mp4");
        check("javascript:alert(1).mp4", "javascript%3Aalert%281%29.mp4");
        check("x/<\"'>?#%.mp4", "x/%3C%22%27%3E%3F%23%25.mp4");
        assert_eq!(SafeUrl::relative_path("/abs/x.mp4"), None);
        assert_eq!(SafeUrl::relative_path(""), None);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 256, rng_seed: proptest::test_runner::RngSeed::Fixed(15), ..Default::default()
        })]

        /// Whatever the string, a link made from it is http(s) or has no scheme at all, and
        /// holds no character that could end an attribute or start markup.
        #[test]
        fn no_string_makes_a_dangerous_link(text in ".{0,40}", scheme in "(http|https|javascript|data|JaVaScRiPt|)(:|://)?") {
            let url = format!("{scheme}{text}");
            if let Some(safe) = SafeUrl::web(&url) {
                let lower = safe.as_str().to_ascii_lowercase();
                proptest::prop_assert!(lower.starts_with("http://") || lower.starts_with("https://"));
                proptest::prop_assert!(!safe.as_str().contains(['"', '<', '>', ' ']));
            }
            if let Some(safe) = SafeUrl::relative_path(&url) {
                let first = safe.as_str().split('/').next().unwrap_or("");
                proptest::prop_assert!(!first.contains(':'));
                proptest::prop_assert!(!safe.as_str().contains(['"', '<', '>', ' ', '\'', '?', '#']));
            }
        }
    }
}
