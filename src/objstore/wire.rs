//! The two S3 requests `object_store` 0.13 does not offer, signed with its own SigV4 signer and
//! credentials: CreateMultipartUpload *with* user metadata (its `MultipartStore` creates
//! uploads without any, and its `put_multipart_opts` keeps the upload id private, so an upload
//! could not be resumed after a crash), and ListMultipartUploads (to abort what a killed run
//! left). Everything else goes through `object_store`. Owns the XML of those two answers.

use std::fmt;

use object_store::aws::{AwsAuthorizer, AwsCredentialProvider};
use object_store::client::{HttpRequest, HttpRequestBody};
use reqwest::header::{HeaderName, HeaderValue};
use reqwest::{Method, Url};
use serde::Deserialize;

use super::error::{S3ErrorBody, Scrubber, StorageError, classify_answer, classify_object_store};

/// A multipart upload the store reports as not completed nor aborted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingUpload {
    pub key: String,
    pub upload_id: String,
    /// When it was created, as the store wrote it (ISO 8601), if it said.
    pub initiated: Option<String>,
}

/// Signs and sends the requests above.
pub(crate) struct Wire {
    pub http: reqwest::Client,
    pub credentials: AwsCredentialProvider,
    pub region: String,
    pub bucket_url: Url,
    pub sign_payload: bool,
    pub request_payer: bool,
    pub encryption_headers: Vec<(&'static str, String)>,
    pub scrubber: Scrubber,
}

impl fmt::Debug for Wire {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wire")
            .field("region", &self.region)
            .field("bucket_url", &self.bucket_url.as_str())
            .finish_non_exhaustive()
    }
}

/// Longest XML answer read (a ListMultipartUploads page of 1,000 uploads is about 400 KB).
const MAX_ANSWER_BYTES: usize = 8 << 20;

/// Most pages of uploads listed before giving up on a store that never ends its listing.
const MAX_PAGES: usize = 10_000;

impl Wire {
    /// Start a multipart upload of `key` whose object will carry `x-amz-meta-sha256`.
    pub(crate) async fn create_multipart(
        &self,
        key: &str,
        sha256: &str,
    ) -> Result<String, StorageError> {
        let mut url = self.object_url(key);
        url.query_pairs_mut().append_pair("uploads", "");
        let mut headers = vec![
            ("content-type", "video/mp4".to_string()),
            ("x-amz-meta-sha256", sha256.to_string()),
        ];
        headers.extend(self.encryption_headers.iter().cloned());
        let body = self.send(Method::POST, url, &headers).await?;
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Initiated {
            upload_id: String,
        }
        let initiated: Initiated =
            quick_xml::de::from_str(&body).map_err(|e| StorageError::Transient {
                detail: format!("unreadable CreateMultipartUpload answer: {e}"),
            })?;
        if initiated.upload_id.is_empty() {
            return Err(StorageError::Transient {
                detail: "CreateMultipartUpload answered an empty upload id".into(),
            });
        }
        Ok(initiated.upload_id)
    }

    /// Every multipart upload in progress under `prefix`, all pages.
    pub(crate) async fn list_multipart_uploads(
        &self,
        prefix: &str,
    ) -> Result<Vec<PendingUpload>, StorageError> {
        let mut uploads = Vec::new();
        let mut markers: Option<(String, String)> = None;
        for _ in 0..MAX_PAGES {
            let mut url = self.bucket_url.clone();
            {
                let mut query = url.query_pairs_mut();
                query.append_pair("uploads", "");
                query.append_pair("prefix", prefix);
                if let Some((key, upload_id)) = &markers {
                    query.append_pair("key-marker", key);
                    query.append_pair("upload-id-marker", upload_id);
                }
            }
            let body = self.send(Method::GET, url, &[]).await?;
            let page = parse_uploads_page(&body)?;
            uploads.extend(page.uploads);
            match page.next {
                Some(next) if markers.as_ref() != Some(&next) => markers = Some(next),
                Some(_) => {
                    return Err(StorageError::Transient {
                        detail: "ListMultipartUploads repeated the same page".into(),
                    });
                }
                None => return Ok(uploads),
            }
        }
        Err(StorageError::Transient {
            detail: format!("ListMultipartUploads did not end after {MAX_PAGES} pages"),
        })
    }

    fn object_url(&self, key: &str) -> Url {
        // Keys are made of unreserved characters and '/' (see destination.rs): no escaping.
        let mut url = self.bucket_url.clone();
        let path = format!("{}/{key}", url.path().trim_end_matches('/'));
        url.set_path(&path);
        url
    }

    /// Sign and send a request without a body; the answer's body on success.
    async fn send(
        &self,
        method: Method,
        url: Url,
        headers: &[(&'static str, String)],
    ) -> Result<String, StorageError> {
        let credential = self
            .credentials
            .get_credential()
            .await
            .map_err(|e| classify_object_store(&e, &self.scrubber))?;
        let mut request = HttpRequest::new(HttpRequestBody::empty());
        *request.method_mut() = method.clone();
        *request.uri_mut() = url.as_str().parse().map_err(|e| StorageError::Config {
            message: format!("the bucket's address is not a valid URI: {e}"),
            hint: "check AWS_ENDPOINT_URL".into(),
        })?;
        for (name, value) in headers {
            let value = HeaderValue::from_str(value).map_err(|_| StorageError::Config {
                message: format!("the value for header {name} cannot be sent"),
                hint: "check the AWS_* environment".into(),
            })?;
            request
                .headers_mut()
                .insert(HeaderName::from_static(name), value);
        }
        AwsAuthorizer::new(&credential, "s3", &self.region)
            .with_sign_payload(self.sign_payload)
            .with_request_payer(self.request_payer)
            .authorize(&mut request, None);
        let (parts, _) = request.into_parts();
        let response = self
            .http
            .request(method, url)
            .headers(parts.headers)
            .send()
            .await
            .map_err(|e| transport(&e, &self.scrubber))?;
        let status = response.status();
        let body = read_bounded(response)
            .await
            .map_err(|e| transport(&e, &self.scrubber))?;
        if status.is_success() {
            return Ok(body);
        }
        Err(classify_answer(
            Some(status.as_u16()),
            &S3ErrorBody::parse(&body),
            &self.scrubber,
        ))
    }
}

/// One page of a ListMultipartUploads answer.
#[derive(Debug, PartialEq)]
pub(crate) struct UploadsPage {
    pub uploads: Vec<PendingUpload>,
    /// The markers of the next page, when the listing is truncated.
    pub next: Option<(String, String)>,
}

pub(crate) fn parse_uploads_page(body: &str) -> Result<UploadsPage, StorageError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Page {
        #[serde(default)]
        upload: Vec<Entry>,
        #[serde(default)]
        is_truncated: Option<String>,
        #[serde(default)]
        next_key_marker: Option<String>,
        #[serde(default)]
        next_upload_id_marker: Option<String>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Entry {
        key: String,
        upload_id: String,
        #[serde(default)]
        initiated: Option<String>,
    }
    let page: Page = quick_xml::de::from_str(body).map_err(|e| StorageError::Transient {
        detail: format!("unreadable ListMultipartUploads answer: {e}"),
    })?;
    let truncated = page
        .is_truncated
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("true"));
    let next = match (truncated, page.next_key_marker, page.next_upload_id_marker) {
        (false, _, _) => None,
        (true, Some(key), Some(upload_id)) => Some((key, upload_id)),
        (true, _, _) => {
            return Err(StorageError::Transient {
                detail: "ListMultipartUploads is truncated without next markers".into(),
            });
        }
    };
    Ok(UploadsPage {
        uploads: page
            .upload
            .into_iter()
            .map(|entry| PendingUpload {
                key: entry.key,
                upload_id: entry.upload_id,
                initiated: entry.initiated,
            })
            .collect(),
        next,
    })
}

fn transport(error: &reqwest::Error, scrubber: &Scrubber) -> StorageError {
    use crate::download::WithoutUrl;
    let what = if error.is_connect() {
        "could not connect to the endpoint".to_string()
    } else {
        error.without_url_string()
    };
    StorageError::Transient {
        detail: scrubber.scrub(&what),
    }
}

/// The answer's body, at most [`MAX_ANSWER_BYTES`] of it.
async fn read_bounded(mut response: reqwest::Response) -> Result<String, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = MAX_ANSWER_BYTES.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if room <= chunk.len() {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn pages_of_uploads() {
        let body = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Bucket>b</Bucket><KeyMarker></KeyMarker><UploadIdMarker></UploadIdMarker>
  <NextKeyMarker>p/b.mp4</NextKeyMarker><NextUploadIdMarker>u2</NextUploadIdMarker>
  <MaxUploads>2</MaxUploads><IsTruncated>true</IsTruncated>
  <Upload><Key>p/a.mp4</Key><UploadId>u1</UploadId><Initiated>2024-01-01T00:00:00.000Z</Initiated></Upload>
  <Upload><Key>p/b.mp4</Key><UploadId>u2</UploadId></Upload>
</ListMultipartUploadsResult>"#;
        let page = parse_uploads_page(body).unwrap();
        assert_eq!(page.uploads.len(), 2);
        assert_eq!(page.uploads[0].key, "p/a.mp4");
        assert_eq!(
            page.uploads[0].initiated.as_deref(),
            Some("2024-01-01T00:00:00.000Z")
        );
        assert_eq!(page.next, Some(("p/b.mp4".into(), "u2".into())));

        let last = "<ListMultipartUploadsResult><IsTruncated>false</IsTruncated>\
                    </ListMultipartUploadsResult>";
        assert_eq!(
            parse_uploads_page(last).unwrap(),
            UploadsPage {
                uploads: vec![],
                next: None
            }
        );
        let broken = "<ListMultipartUploadsResult><IsTruncated>true</IsTruncated>\
                      </ListMultipartUploadsResult>";
        assert!(parse_uploads_page(broken).is_err());
        assert!(parse_uploads_page("not xml <<<").is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, rng_seed: proptest::test_runner::RngSeed::Fixed(16), ..ProptestConfig::default() })]

        /// Any answer is parsed or refused; uploads listed are exactly those in the answer.
        #[test]
        fn any_listing_answer_is_parsed_or_refused(
            keys in proptest::collection::vec("[a-z0-9/._-]{1,20}", 0..5),
            truncated in any::<bool>(),
            junk in "[ -~]{0,60}",
        ) {
            let uploads: String = keys
                .iter()
                .enumerate()
                .map(|(i, key)| format!("<Upload><Key>{key}</Key><UploadId>id{i}</UploadId></Upload>"))
                .collect();
            let body = format!(
                "<ListMultipartUploadsResult><IsTruncated>{truncated}</IsTruncated>\
                 <NextKeyMarker>k</NextKeyMarker><NextUploadIdMarker>u</NextUploadIdMarker>\
                 {uploads}</ListMultipartUploadsResult>"
            );
            let page = parse_uploads_page(&body).unwrap();
            prop_assert_eq!(page.uploads.iter().map(|u| u.key.clone()).collect::<Vec<_>>(), keys);
            prop_assert_eq!(page.next.is_some(), truncated);
            let _ = parse_uploads_page(&format!("{junk}{body}"));
            let _ = parse_uploads_page(&junk);
        }
    }
}
