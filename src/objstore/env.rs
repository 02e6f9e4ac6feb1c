//! The standard AWS environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_SESSION_TOKEN`, `AWS_REGION`, `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`, …), read once and
//! checked before anything is sent. Every value is held as a [`Secret`]; `Debug` shows the
//! variable names only. Owns nothing else: the store is built in `storage.rs`.
//!
//! The variables are handed to `object_store` exactly as its `AmazonS3Builder::from_env` would,
//! so every `AWS_*` setting it knows keeps its meaning. Tests pass their own variables instead
//! of changing the process environment.

use std::fmt;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use reqwest::Url;

use super::error::{Scrubber, StorageError};
use crate::secret::Secret;

/// The `AWS_*` variables of an environment.
#[derive(Clone)]
pub struct S3Env {
    vars: Vec<(String, Secret)>,
}

impl fmt::Debug for S3Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Env")
            .field(
                "vars",
                &self.vars.iter().map(|(name, _)| name).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// What the rest of the module needs to know besides the builder.
pub(crate) struct Resolved {
    pub builder: AmazonS3Builder,
    pub region: String,
    /// `https://s3.REGION.amazonaws.com/BUCKET`, `ENDPOINT/BUCKET`, … as object_store builds it.
    pub bucket_url: Url,
    pub sign_payload: bool,
    pub request_payer: bool,
    /// Server-side encryption headers a CreateMultipartUpload must carry.
    pub encryption_headers: Vec<(&'static str, String)>,
    pub scrubber: Scrubber,
}

impl fmt::Debug for Resolved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The builder's own Debug prints the credentials it holds: leave it out.
        f.debug_struct("Resolved")
            .field("region", &self.region)
            .field("bucket_url", &self.bucket_url.as_str())
            .field("sign_payload", &self.sign_payload)
            .field("request_payer", &self.request_payer)
            .finish_non_exhaustive()
    }
}

const SECRET_VARIABLES: [&str; 3] = [
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
];

impl S3Env {
    /// The `AWS_*` variables of this process.
    pub fn from_env() -> S3Env {
        S3Env::from_vars(std::env::vars_os().filter_map(|(name, value)| {
            Some((name.into_string().ok()?, value.into_string().ok()?))
        }))
    }

    /// The `AWS_*` variables among `vars` (others are ignored).
    pub fn from_vars<K: Into<String>, V: Into<String>>(
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> S3Env {
        let vars = vars
            .into_iter()
            .map(|(name, value)| (name.into(), value.into()))
            .filter(|(name, _): &(String, String)| name.starts_with("AWS_"))
            .map(|(name, value)| (name, Secret::new(value)))
            .collect();
        S3Env { vars }
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, value)| value.expose())
            .filter(|value| !value.is_empty())
    }

    fn flag(&self, name: &str) -> bool {
        self.get(name).is_some_and(|value| {
            matches!(value.to_ascii_lowercase().as_str(), "true" | "1" | "yes")
        })
    }

    /// Check the variables and prepare a builder for `bucket`.
    pub(crate) fn resolve(&self, bucket: &str) -> Result<Resolved, StorageError> {
        let config = |message: String, hint: &str| StorageError::Config {
            message,
            hint: hint.to_string(),
        };
        for name in SECRET_VARIABLES {
            // object_store puts these in headers and panics on a value that cannot be one.
            if let Some(value) = self.get(name) {
                if !value.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(config(
                        format!(
                            "{name} contains a space or a character that is not printable ASCII"
                        ),
                        "copy the value again, without quotes or line breaks",
                    ));
                }
            }
        }
        let has_key_id = self.get("AWS_ACCESS_KEY_ID").is_some();
        let has_secret = self.get("AWS_SECRET_ACCESS_KEY").is_some();
        match (has_key_id, has_secret) {
            (true, false) => {
                return Err(config(
                    "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not".into(),
                    "export AWS_SECRET_ACCESS_KEY with the key's secret",
                ));
            }
            (false, true) => {
                return Err(config(
                    "AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not".into(),
                    "export AWS_ACCESS_KEY_ID with the key's id",
                ));
            }
            (false, false) => {
                let other_source = [
                    "AWS_WEB_IDENTITY_TOKEN_FILE",
                    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                    "AWS_METADATA_ENDPOINT",
                ]
                .iter()
                .any(|name| self.get(name).is_some());
                if !other_source && !self.flag("AWS_SKIP_SIGNATURE") {
                    return Err(config(
                        "no AWS credentials in the environment".into(),
                        "export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN \
                         for temporary credentials); profiles and ~/.aws files are not read",
                    ));
                }
            }
            (true, true) => {}
        }
        if self.get("AWS_SSE_CUSTOMER_KEY_BASE64").is_some() {
            return Err(config(
                "AWS_SSE_CUSTOMER_KEY_BASE64 (SSE-C) is not supported for outputs".into(),
                "use the bucket's default encryption or AWS_SERVER_SIDE_ENCRYPTION=aws:kms",
            ));
        }
        if self.flag("AWS_S3_EXPRESS") {
            return Err(config(
                "S3 Express One Zone buckets (AWS_S3_EXPRESS) are not supported for outputs".into(),
                "use a general-purpose bucket",
            ));
        }
        let allow_http = self.flag("AWS_ALLOW_HTTP");
        let endpoint = match self
            .get("AWS_ENDPOINT_URL_S3")
            .or_else(|| self.get("AWS_ENDPOINT_URL"))
        {
            Some(text) => Some(check_endpoint(text, allow_http)?),
            None => None,
        };

        let mut builder = AmazonS3Builder::new()
            .with_client_options(
                object_store::ClientOptions::new()
                    .with_timeout(std::time::Duration::from_secs(120))
                    .with_connect_timeout(std::time::Duration::from_secs(10)),
            )
            // The run loop retries across attempts with its own backoff; within one call a few
            // quick retries are enough.
            .with_retry(object_store::RetryConfig {
                backoff: object_store::BackoffConfig::default(),
                max_retries: 3,
                retry_timeout: std::time::Duration::from_secs(60),
            });
        for (name, value) in &self.vars {
            if let Ok(key) = name.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() {
                builder = builder.with_config(key, value.expose());
            }
        }
        let builder = builder.with_bucket_name(bucket);
        let region = builder
            .get_config_value(&AmazonS3ConfigKey::Region)
            .filter(|region| !region.is_empty())
            .unwrap_or_else(|| "us-east-1".to_string());
        if !region
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(config(
                format!("AWS_REGION {region:?} is not a region name"),
                "set AWS_REGION to a region such as eu-west-1",
            ));
        }
        let virtual_hosted = self.flag("AWS_VIRTUAL_HOSTED_STYLE_REQUEST");
        // The same rule as object_store's builder, so both address the same bucket.
        let bucket_url = match (&endpoint, virtual_hosted) {
            (Some(endpoint), true) => endpoint.as_str().trim_end_matches('/').to_string(),
            (Some(endpoint), false) => {
                format!("{}/{bucket}", endpoint.as_str().trim_end_matches('/'))
            }
            (None, true) => format!("https://{bucket}.s3.{region}.amazonaws.com"),
            (None, false) => format!("https://s3.{region}.amazonaws.com/{bucket}"),
        };
        let bucket_url = Url::parse(&bucket_url).map_err(|e| {
            config(
                format!("the bucket's address cannot be built: {e}"),
                "check AWS_ENDPOINT_URL and AWS_REGION",
            )
        })?;
        let mut encryption_headers = Vec::new();
        if let Some(kind) = self.get("AWS_SERVER_SIDE_ENCRYPTION") {
            encryption_headers.push(("x-amz-server-side-encryption", kind.to_string()));
            if let Some(key) = self.get("AWS_SSE_KMS_KEY_ID") {
                encryption_headers.push((
                    "x-amz-server-side-encryption-aws-kms-key-id",
                    key.to_string(),
                ));
            }
            if let Some(enabled) = self.get("AWS_SSE_BUCKET_KEY_ENABLED") {
                encryption_headers.push((
                    "x-amz-server-side-encryption-bucket-key-enabled",
                    enabled.to_string(),
                ));
            }
        }
        let scrubber = Scrubber::new(
            SECRET_VARIABLES
                .iter()
                .filter_map(|name| self.get(name).map(str::to_string)),
        );
        Ok(Resolved {
            builder,
            region,
            bucket_url,
            sign_payload: !self.flag("AWS_UNSIGNED_PAYLOAD"),
            request_payer: self.flag("AWS_REQUEST_PAYER"),
            encryption_headers,
            scrubber,
        })
    }
}

/// An http(s) endpoint without credentials, path or query; plain http only when allowed.
fn check_endpoint(text: &str, allow_http: bool) -> Result<Url, StorageError> {
    let config = |message: String, hint: &str| StorageError::Config {
        message,
        hint: hint.to_string(),
    };
    let url = Url::parse(text).map_err(|e| {
        config(
            format!("AWS_ENDPOINT_URL is not a URL ({e})"),
            "set it to the store's address, e.g. http://127.0.0.1:9000",
        )
    })?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(config(
            "AWS_ENDPOINT_URL contains credentials".into(),
            "remove the part before '@' and use AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
        ));
    }
    match url.scheme() {
        "https" => {}
        "http" if allow_http => {}
        "http" => {
            return Err(config(
                format!(
                    "AWS_ENDPOINT_URL is plain http ({}) and AWS_ALLOW_HTTP is not true",
                    url.host_str().unwrap_or_default()
                ),
                "set AWS_ALLOW_HTTP=true to send to a plain-http endpoint, or use https",
            ));
        }
        other => {
            return Err(config(
                format!("AWS_ENDPOINT_URL has the scheme {other:?}, not http(s)"),
                "set it to the store's address, e.g. https://s3.example.com",
            ));
        }
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(config(
            "AWS_ENDPOINT_URL has a query or a fragment".into(),
            "set it to the store's address only, e.g. https://s3.example.com",
        ));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

    fn env(extra: &[(&str, &str)]) -> S3Env {
        let mut vars = vec![
            ("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", SECRET),
            ("HOME", "/root"),
        ];
        vars.extend_from_slice(extra);
        S3Env::from_vars(vars)
    }

    #[track_caller]
    fn config_error(env: &S3Env, expected: &str) {
        match env.resolve("bucket") {
            Err(StorageError::Config { message, hint }) => {
                assert!(message.contains(expected), "{message}");
                assert!(!format!("{message}{hint}").contains(SECRET));
            }
            other => panic!("expected a configuration error, got {other:?}"),
        }
    }

    #[test]
    fn debug_shows_names_only() {
        let env = env(&[("AWS_SESSION_TOKEN", "FQoGZXIvYXdzTOKEN")]);
        let debug = format!("{env:?}");
        assert!(debug.contains("AWS_SECRET_ACCESS_KEY"), "{debug}");
        assert!(!debug.contains(SECRET) && !debug.contains("FQoGZXIvYXdzTOKEN"));
        assert!(!debug.contains("HOME"), "only AWS_* variables are kept");
        let resolved = env.resolve("bucket").unwrap();
        let debug = format!("{resolved:?}");
        assert!(
            !debug.contains(SECRET) && !debug.contains("FQoGZXIvYXdzTOKEN"),
            "{debug}"
        );
    }

    #[test]
    fn addresses_follow_object_store() {
        let url = |extra: &[(&str, &str)]| env(extra).resolve("b1").unwrap().bucket_url.to_string();
        assert_eq!(url(&[]), "https://s3.us-east-1.amazonaws.com/b1");
        assert_eq!(
            url(&[("AWS_REGION", "eu-west-3")]),
            "https://s3.eu-west-3.amazonaws.com/b1"
        );
        assert_eq!(
            url(&[
                ("AWS_ENDPOINT_URL", "http://127.0.0.1:9000/"),
                ("AWS_ALLOW_HTTP", "true")
            ]),
            "http://127.0.0.1:9000/b1"
        );
        assert_eq!(
            url(&[("AWS_VIRTUAL_HOSTED_STYLE_REQUEST", "true")]),
            "https://b1.s3.us-east-1.amazonaws.com/"
        );
    }

    #[test]
    fn bad_environments_are_named() {
        config_error(
            &S3Env::from_vars([("AWS_REGION", "x")]),
            "no AWS credentials",
        );
        config_error(
            &S3Env::from_vars([("AWS_ACCESS_KEY_ID", "AKIA")]),
            "AWS_SECRET_ACCESS_KEY is not",
        );
        config_error(
            &S3Env::from_vars([("AWS_SECRET_ACCESS_KEY", SECRET)]),
            "AWS_ACCESS_KEY_ID is not",
        );
        config_error(
            &env(&[("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")]),
            "AWS_ALLOW_HTTP is not true",
        );
        config_error(&env(&[("AWS_ENDPOINT_URL", "ftp://x")]), "scheme \"ftp\"");
        config_error(&env(&[("AWS_ENDPOINT_URL", "not a url")]), "not a URL");
        config_error(
            &env(&[("AWS_ENDPOINT_URL", "https://user:pw@host")]),
            "contains credentials",
        );
        config_error(
            &env(&[("AWS_SESSION_TOKEN", "two words")]),
            "AWS_SESSION_TOKEN contains a space",
        );
        config_error(&env(&[("AWS_REGION", "eu west")]), "not a region name");
        config_error(&env(&[("AWS_SSE_CUSTOMER_KEY_BASE64", "a2V5")]), "SSE-C");
        let secret_with_newline = format!("{SECRET}\n");
        let broken = S3Env::from_vars([
            ("AWS_ACCESS_KEY_ID", "AKIA"),
            ("AWS_SECRET_ACCESS_KEY", secret_with_newline.as_str()),
        ]);
        config_error(&broken, "AWS_SECRET_ACCESS_KEY contains");
    }
}
